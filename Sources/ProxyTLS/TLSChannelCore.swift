import NIOCore

/// The TLS work shared by `TLSServerHandler` and `TLSClientHandler`: it drives one
/// `SSLConnection` from a channel's ciphertext, passes cleartext on, encrypts writes, and turns
/// OpenSSL failures into `TLSError`s. The public handlers own one core each and forward every
/// channel call to it with their own `ChannelHandlerContext`; the core never stores the context.
///
/// Owns the `SSLConnection` (and through it the `SSL*`). Used only on the channel's event loop.
///
/// Call order and events:
/// - A client core starts the handshake as soon as the channel is active; a server core waits
///   for the first ciphertext.
/// - Writes before the handshake completes are queued, then encrypted and sent together with the
///   handshake's last flight; if the handshake fails their promises fail with its `TLSError`.
/// - Write promises complete when the ciphertext carrying them has been written to the socket.
/// - The role's handshake event is fired before any cleartext is read.
/// - A failed handshake sends OpenSSL's alert, fires `errorCaught(TLSError)` (`.peerVerification`
///   when the peer's certificate was the reason, else `.handshake`) and closes; a TLS error later
///   does the same with `.protocolFailure`.
/// - The peer's close_notify closes the channel (after our own close_notify). A TCP close that cuts
///   a handshake or record short fires `errorCaught(TLSError(.unexpectedEOF))` before
///   `channelInactive`; a TCP close between records is a plain `channelInactive`.
/// - `close(mode: .all)` sends close_notify, then closes without waiting for the peer's.
final class TLSChannelCore {
    private enum State {
        /// Waiting for / in the handshake; writes are queued.
        case handshaking
        /// Application data flows both ways.
        case active
        /// We sent close_notify for `close(mode: .output)`; reads continue, writes fail.
        case outputClosed
        /// Closed, failed, or removed: no more TLS work.
        case closed
    }

    /// Cleartext decrypted per SSL_read (one TLS record holds at most 16 KiB).
    private static let readChunk = 16 * 1024

    private let connection: SSLConnection?
    /// A set-up failure to report once the handler is added (allocation, an unusable server name).
    private let setupError: TLSError?
    private var state: State = .handshaking
    /// Whether the handshake has begun: a server has received ciphertext, a client has sent its
    /// hello. A TCP close before that (a port probe) is not reported as a broken handshake.
    private var handshakeStarted = false
    /// Writes made before the handshake completed, encrypted once it does.
    private var queuedWrites: CircularBuffer<(ByteBuffer, EventLoopPromise<Void>?)> = []
    /// Promises of cleartext already encrypted into the write BIO but not yet sent as ciphertext.
    private var unsentPromises: [EventLoopPromise<Void>] = []

    init(connection: SSLConnection?, setupError: TLSError? = nil) {
        self.connection = connection
        if connection == nil {
            self.setupError = TLSError(kind: .configuration, description: "tls: OpenSSL could not allocate a connection")
        } else {
            self.setupError = setupError
        }
    }

    // MARK: Inbound

    func handlerAdded(context: ChannelHandlerContext) {
        if let setupError {
            state = .closed
            context.fireErrorCaught(setupError)
            context.close(promise: nil)
            return
        }
        if context.channel.isActive { startClientHandshakeIfNeeded(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        state = .closed
        failPendingWrites(ChannelError.ioOnClosedChannel)
    }

    func channelActive(context: ChannelHandlerContext) {
        startClientHandshakeIfNeeded(context: context)
        context.fireChannelActive()
    }

    /// A client speaks first: the ClientHello goes out as soon as there is a connection.
    private func startClientHandshakeIfNeeded(context: ChannelHandlerContext) {
        guard let connection, connection.role == .client, state == .handshaking, !handshakeStarted else { return }
        handshakeStarted = true
        drive(context: context, connection: connection)
    }

    func channelRead(context: ChannelHandlerContext, ciphertext: ByteBuffer) {
        guard let connection, state != .closed else { return }
        if ciphertext.readableBytes > 0 { handshakeStarted = true }
        connection.receive(ciphertext)
        drive(context: context, connection: connection)
        connection.settleInput()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        reportUncleanEOFIfNeeded(context: context)
        state = .closed
        failPendingWrites(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // With half-closure allowed the socket's EOF arrives as an event instead of channelInactive.
        if let channelEvent = event as? ChannelEvent, channelEvent == .inputClosed {
            reportUncleanEOFIfNeeded(context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// The event the role fires when the handshake completes.
    private func handshakeCompletedEvent(_ connection: SSLConnection) -> any Sendable {
        switch connection.role {
        case .server:
            let peer = connection.verifiedPeer
            return TLSServerEvent.handshakeCompleted(
                negotiatedProtocol: connection.negotiatedProtocol,
                peerCertificate: peer?.certificate, peerChain: peer?.chain)
        case .client:
            return TLSClientEvent.handshakeCompleted
        }
    }

    /// Runs the handshake and then reads cleartext until OpenSSL needs more ciphertext, then sends
    /// whatever OpenSSL produced on its own (handshake messages, tickets, alerts, key updates).
    private func drive(context: ChannelHandlerContext, connection: SSLConnection) {
        var protocolOutput = false

        if state == .handshaking {
            let before = connection.pendingCiphertextCount
            let step = connection.handshake()
            protocolOutput = connection.pendingCiphertextCount > before
            switch step {
            case .done:
                state = .active
                context.fireUserInboundEventTriggered(handshakeCompletedEvent(connection))
                encryptQueuedWrites(context: context, connection: connection)
                protocolOutput = true  // send the handshake tail together with any queued data
            case .wantRead:
                if protocolOutput { sendCiphertext(context: context) }
                return
            case .closedByPeer:
                fail(context: context, TLSError(kind: .handshake, description: "TLS handshake failed: peer closed during the handshake"))
                return
            case .failed(let error):
                fail(context: context, error)
                return
            }
        }

        readLoop: while state == .active || state == .outputClosed {
            var cleartext = context.channel.allocator.buffer(capacity: Self.readChunk)
            let before = connection.pendingCiphertextCount
            let step = connection.read(into: &cleartext, chunk: Self.readChunk)
            if connection.pendingCiphertextCount > before { protocolOutput = true }
            switch step {
            case .done:
                // May re-enter write/flush/close; the loop condition re-checks the state.
                context.fireChannelRead(NIOAny(cleartext))
            case .wantRead:
                break readLoop
            case .closedByPeer:
                closeAfterPeerCloseNotify(context: context, connection: connection)
                return
            case .failed(let error):
                fail(context: context, error)
                return
            }
        }

        if protocolOutput && state != .closed {
            sendCiphertext(context: context)
        }
    }

    private func closeAfterPeerCloseNotify(context: ChannelHandlerContext, connection: SSLConnection) {
        if state == .active { connection.shutdown() }  // answer with our close_notify
        state = .closed
        sendCiphertext(context: context)
        failPendingWrites(ChannelError.ioOnClosedChannel)
        context.close(promise: nil)
    }

    /// Sends the alert OpenSSL wrote (if any), reports the error and closes.
    private func fail(context: ChannelHandlerContext, _ error: TLSError) {
        state = .closed
        sendCiphertext(context: context)
        failPendingWrites(error)
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }

    private func reportUncleanEOFIfNeeded(context: ChannelHandlerContext) {
        guard let connection else { return }
        let cutShort: Bool
        switch state {
        case .handshaking: cutShort = handshakeStarted
        case .active, .outputClosed: cutShort = connection.hasUnprocessedInput
        case .closed: cutShort = false
        }
        guard cutShort else { return }
        let stage = state == .handshaking ? "during the handshake" : "in the middle of a TLS record"
        context.fireErrorCaught(
            TLSError(kind: .unexpectedEOF, description: "TLS connection closed by the peer \(stage) without close_notify"))
    }

    // MARK: Outbound

    func write(context: ChannelHandlerContext, cleartext: ByteBuffer, promise: EventLoopPromise<Void>?) {
        switch state {
        case .handshaking:
            queuedWrites.append((cleartext, promise))
        case .active:
            encrypt(cleartext, promise: promise, context: context)
        case .outputClosed, .closed:
            promise?.fail(ChannelError.ioOnClosedChannel)
        }
    }

    func flush(context: ChannelHandlerContext) {
        switch state {
        case .active, .outputClosed:
            sendCiphertext(context: context)
        case .handshaking:
            // Queued writes go out right after the handshake completes.
            break
        case .closed:
            context.flush()
        }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        switch mode {
        case .all:
            if state == .active || state == .outputClosed {
                if state == .active { connection?.shutdown() }
                sendCiphertext(context: context)
            }
            state = .closed
            failPendingWrites(ChannelError.ioOnClosedChannel)
            context.close(mode: .all, promise: promise)
        case .output:
            if state == .active {
                connection?.shutdown()
                sendCiphertext(context: context)
                state = .outputClosed
            }
            context.close(mode: .output, promise: promise)
        case .input:
            context.close(mode: .input, promise: promise)
        }
    }

    /// Encrypts one write; its promise waits for the ciphertext write that carries it.
    private func encrypt(_ cleartext: ByteBuffer, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        guard let connection else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        if let error = connection.write(cleartext) {
            promise?.fail(error)
            fail(context: context, error)
            return
        }
        if let promise { unsentPromises.append(promise) }
    }

    private func encryptQueuedWrites(context: ChannelHandlerContext, connection: SSLConnection) {
        while state == .active, let (cleartext, promise) = queuedWrites.popFirst() {
            encrypt(cleartext, promise: promise, context: context)
        }
    }

    /// Moves all pending ciphertext into one buffer and writes and flushes it; the promises of
    /// every write encrypted so far complete with that socket write.
    private func sendCiphertext(context: ChannelHandlerContext) {
        guard let connection else { return }
        let promises = unsentPromises
        unsentPromises.removeAll(keepingCapacity: true)

        guard let ciphertext = connection.takeCiphertext() else {
            // Only empty writes can be waiting here: nothing to send for them.
            for promise in promises { promise.succeed() }
            context.flush()
            return
        }

        let writePromise: EventLoopPromise<Void>?
        switch promises.count {
        case 0:
            writePromise = nil
        case 1:
            writePromise = promises[0]
        default:
            let combined = context.eventLoop.makePromise(of: Void.self)
            combined.futureResult.whenComplete { result in
                for promise in promises { promise.completeWith(result) }
            }
            writePromise = combined
        }
        context.writeAndFlush(NIOAny(ciphertext), promise: writePromise)
    }

    private func failPendingWrites(_ error: any Error) {
        let promises = unsentPromises
        unsentPromises.removeAll()
        for promise in promises { promise.fail(error) }
        while let (_, promise) = queuedWrites.popFirst() {
            promise?.fail(error)
        }
    }
}
