import Logging
import NIOCore
import NIOHTTP1
import ProxyAuth
import ProxyHTTP2
import ProxyTLS

/// Serves one client connection that negotiated `h2`: owns the server `HTTP2Session` and one
/// `HTTP2StreamExchange` per open stream.
///
/// Routing is per request, not per port: `application/grpc*` goes to the gRPC receiver over pooled
/// h2c, anything else follows the OTLP/HTTP rules and is translated to HTTP/1.1 for the HTTP
/// receiver. Output is drained from the session only while the socket is writable, so a client that
/// stops reading holds at most its own flow-control windows here.
final class HTTP2ServerConnection: ChannelDuplexHandler, HTTP2ChannelDriverDelegate {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The runtime current at accept: the session's header limits and the idle timeout. Each stream
    /// reads the runtime in force when its request arrives (`ProxyServices.runtime`).
    let runtime: ProxyRuntime
    let pools: UpstreamPools
    let services: ProxyServices
    /// The client certificate verified in the TLS handshake, if any; the same for every stream.
    let peerCertificate: PeerCertificate?
    /// The connection's last accepted credential and its decisions, for every stream.
    let credentialMemory = CredentialMemory()
    let logger: Logger

    private let session: HTTP2Session
    private var context: ChannelHandlerContext?
    private var exchanges: [Int32: HTTP2StreamExchange] = [:]
    private var closing = false
    /// Request DATA not yet consumed and response DATA not yet sent, per stream, for load shedding.
    private var held: StreamHeldBytes
    /// The client's address, for the access log.
    private(set) var peerAddress: String?
    /// The server is draining: the shutdown notice went out, the final GOAWAY follows.
    private var draining = false
    /// Streams with response DATA submitted, and when the client last took some of it. A client
    /// that keeps a stream's window shut (or stops reading the socket) would otherwise hold the
    /// stream, its exchange and the response bytes forever, while PINGs keep the connection from
    /// ever being idle: a stream that could send nothing for `http.idle_timeout` is reset (CANCEL).
    private var responseProgress: [Int32: NIODeadline] = [:]
    private var stallCheck: Scheduled<Void>?
    /// Watches the receiver for every stream (`HTTP2StreamExchange.upstreamDeadline`): one timer per
    /// connection, set for the earliest deadline, instead of a timer scheduled and cancelled per stream.
    private var upstreamCheck: Scheduled<Void>?
    private var upstreamCheckAt: NIODeadline?

    init(
        connectionRuntime runtime: ProxyRuntime, pools: UpstreamPools, services: ProxyServices, peerCertificate: PeerCertificate?,
        logger: Logger
    ) throws {
        self.runtime = runtime
        self.pools = pools
        self.services = services
        self.peerCertificate = peerCertificate
        self.logger = logger
        self.held = StreamHeldBytes(gauge: services.limits.buffered)
        var settings = HTTP2SessionSettings()
        settings.maxHeaderListBytes = runtime.limits.maxHeaderBytes
        settings.maxHeaderCount = runtime.limits.maxHeaderCount
        self.session = try HTTP2Session(role: .server, settings: settings)
        self.driver = HTTP2ChannelDriver(session: session, delegate: self)
    }

    /// Moves the session's bytes: set at the end of `init` (it needs `self` as its delegate).
    private var driver: HTTP2ChannelDriver!

    /// Set in handlerAdded; outlives `context`, which is released in handlerRemoved.
    private var loop: (any EventLoop)?
    var eventLoop: any EventLoop { loop! }
    var allocator: ByteBufferAllocator { context?.channel.allocator ?? ByteBufferAllocator() }
    var isWritable: Bool { context?.channel.isWritable ?? false }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        driver.attach(context)
        loop = context.eventLoop
        peerAddress = context.channel.remoteAddress?.hostPort
        flushOutput()  // our SETTINGS
    }

    /// The context holds this handler strongly: keeping it after removal would be a cycle that
    /// leaks the handler and its nghttp2 session (about 25 KiB) with every closed connection.
    func handlerRemoved(context: ChannelHandlerContext) {
        stallCheck?.cancel()
        stallCheck = nil
        upstreamCheck?.cancel()
        upstreamCheck = nil
        driver.detach()
        self.context = nil
    }

    // MARK: Client bytes in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        do {
            try driver.receive(unwrapInboundIn(data))
        } catch {
            logger.debug("HTTP/2 connection error", metadata: ["error": "\(error)"])
            closeConnection(sendGoaway: false)
            return
        }
        if !session.wantsRead && !isWritable {
            // The session is over (nghttp2 ended it) and the client is not reading: nothing can
            // finish, and its bytes would keep the connection from ever being idle.
            closeConnection(sendGoaway: false)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushOutput()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { flushOutput() }
        for exchange in exchanges.values { exchange.clientWritabilityChanged(context.channel.isWritable) }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closing = true
        stallCheck?.cancel()
        stallCheck = nil
        upstreamCheck?.cancel()
        upstreamCheck = nil
        responseProgress.removeAll()
        let open = exchanges
        exchanges.removeAll()
        for exchange in open.values { exchange.clientGone() }
        held.releaseAll()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("client connection error", metadata: ["error": "\(error)"])
        closeConnection(sendGoaway: true)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            if exchanges.isEmpty { closeConnection(sendGoaway: true) }
            return
        }
        if event is ProxyDrainEvent {
            startDraining(context: context)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode == .all && !closing {
            // Closed by us (shutdown, idle, error): tell the client which streams were processed.
            session.submitGoaway(errorCode: .noError)
            flushOutput(force: true)
        }
        closing = true
        context.close(mode: mode, promise: promise)
    }

    /// How long after the shutdown notice the final GOAWAY goes out: streams the client opened before
    /// it saw the notice (about one round trip) are still served.
    static let finalGoawayDelay: TimeAmount = .seconds(1)

    /// Graceful shutdown of this connection (RFC 9113 §6.8): a GOAWAY announcing the shutdown, then,
    /// a round trip later, the final GOAWAY naming the last stream served. Streams in flight finish;
    /// the connection closes when the last one ends (the session then wants neither read nor write).
    private func startDraining(context: ChannelHandlerContext) {
        guard !closing, !draining else { return }
        draining = true
        session.submitShutdownNotice()
        flushOutput(force: true)
        context.eventLoop.assumeIsolated().scheduleTask(in: Self.finalGoawayDelay) { [self] in
            guard !closing else { return }
            session.submitGoaway(errorCode: .noError)
            flushOutput(force: true)
        }
    }

    func handle(_ event: HTTP2Event) {
        switch event {
        case .headers(let streamID, let fields, let kind, let endStream):
            switch kind {
            case .request:
                let exchange = HTTP2StreamExchange(streamID: streamID, connection: self)
                exchanges[streamID] = exchange
                exchange.start(fields: fields, endStream: endStream)
            case .trailers:
                // Request trailers are never forwarded (a tenant header could hide there); they only end the body.
                exchanges[streamID]?.clientData(allocator.buffer(capacity: 0), endStream: true)
            case .response, .informational:
                break
            }
        case .data(let streamID, let data, let endStream):
            if let exchange = exchanges[streamID] {
                held.add(streamID, data.readableBytes)
                exchange.clientData(data, endStream: endStream)
            } else {
                session.consume(streamID: streamID, bytes: data.readableBytes)
            }
        case .dataSent(let streamID, let bytes):
            if !responseProgress.isEmpty, let index = responseProgress.index(forKey: streamID) {
                responseProgress.values[index] = .now()
            }
            held.release(streamID, bytes)
            exchanges[streamID]?.clientTookResponseBytes(bytes)
        case .streamReset(let streamID, _):
            if !responseProgress.isEmpty { responseProgress.removeValue(forKey: streamID) }
            exchanges.removeValue(forKey: streamID)?.clientGone()
            held.releaseStream(streamID)
        case .streamClosed(let streamID, let code):
            if !responseProgress.isEmpty { responseProgress.removeValue(forKey: streamID) }
            exchanges.removeValue(forKey: streamID)?.clientStreamClosed(errorCode: code)
            held.releaseStream(streamID)
        case .goaway, .remoteSettings:
            break
        }
    }

    // MARK: Output, for the exchanges

    func submitResponse(_ streamID: Int32, fields: [HTTP2HeaderField], endStream: Bool) {
        do {
            try session.submitResponse(streamID: streamID, fields: fields, endStream: endStream)
        } catch {
            session.submitReset(streamID: streamID, errorCode: .internalError)
        }
        scheduleFlush()
    }

    func submitData(_ streamID: Int32, _ data: ByteBuffer, endStream: Bool) {
        do {
            try session.submitData(streamID: streamID, data, endStream: endStream)
            if exchanges[streamID] != nil {
                held.add(streamID, data.readableBytes)
                if data.readableBytes > 0 && responseProgress[streamID] == nil { watchResponse(streamID) }
            }
        } catch {
            session.submitReset(streamID: streamID, errorCode: .internalError)
        }
        scheduleFlush()
    }

    func submitTrailers(_ streamID: Int32, fields: [HTTP2HeaderField]) {
        do {
            try session.submitTrailers(streamID: streamID, fields: fields)
        } catch {
            session.submitReset(streamID: streamID, errorCode: .internalError)
        }
        scheduleFlush()
    }

    func submitReset(_ streamID: Int32, errorCode: HTTP2ErrorCode) {
        // nghttp2 drops a stream's unsent frames on reset: send what is queued (a reply) first.
        flushOutput(force: true)
        session.submitReset(streamID: streamID, errorCode: errorCode)
        scheduleFlush()
    }

    // MARK: Stalled responses

    private func watchResponse(_ streamID: Int32) {
        responseProgress[streamID] = .now()
        if stallCheck == nil { scheduleStallCheck(at: .now() + runtime.limits.idleTimeout) }
    }

    private func scheduleStallCheck(at deadline: NIODeadline) {
        guard let context else { return }
        stallCheck = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            stallCheck = nil
            checkStalledResponses()
        }
    }

    /// Resets each stream whose queued response DATA could not move for a whole idle timeout, and
    /// closes the connection when the client is not reading the socket at all (then not even the
    /// RST_STREAM could be written).
    private func checkStalledResponses() {
        guard !closing else { return }
        let now = NIODeadline.now()
        let timeout = runtime.limits.idleTimeout
        var stalled: [Int32] = []
        var next: NIODeadline?
        for (streamID, progress) in responseProgress {
            if session.queuedOutboundBytes(streamID: streamID) == 0 {
                responseProgress.removeValue(forKey: streamID)
            } else if progress + timeout <= now {
                stalled.append(streamID)
            } else {
                next = min(next ?? progress + timeout, progress + timeout)
            }
        }
        guard stalled.isEmpty || isWritable else {
            logger.debug("HTTP/2 client stopped reading", metadata: ["stalled_streams": "\(stalled.count)"])
            closeConnection(sendGoaway: true)
            return
        }
        for streamID in stalled.sorted() {
            logger.debug("HTTP/2 response stalled by the client's flow control", metadata: ["stream": "\(streamID)"])
            responseProgress.removeValue(forKey: streamID)
            exchanges.removeValue(forKey: streamID)?.clientGone()
            held.releaseStream(streamID)
            session.submitReset(streamID: streamID, errorCode: .cancel)
        }
        if !stalled.isEmpty { flushOutput() }
        if let next { scheduleStallCheck(at: next) }
    }

    // MARK: Receiver timeouts

    /// A stream's receiver deadline: the connection's check runs no later than `deadline`.
    func watchUpstream(until deadline: NIODeadline) {
        if let upstreamCheckAt, upstreamCheckAt <= deadline { return }
        guard let context, !closing else { return }
        upstreamCheck?.cancel()
        upstreamCheckAt = deadline
        upstreamCheck = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            upstreamCheck = nil
            upstreamCheckAt = nil
            checkUpstreamDeadlines()
        }
    }

    /// Ends the streams whose receiver is past its deadline and sets the check for the next one.
    private func checkUpstreamDeadlines() {
        guard !closing else { return }
        let now = NIODeadline.now()
        var due: [HTTP2StreamExchange] = []
        var next: NIODeadline?
        for exchange in exchanges.values {
            guard let deadline = exchange.upstreamDeadline else { continue }
            if deadline <= now {
                due.append(exchange)
            } else {
                next = min(next ?? deadline, deadline)
            }
        }
        for exchange in due.sorted(by: { $0.streamID < $1.streamID }) { exchange.upstreamTimedOut() }
        if let next { watchUpstream(until: next) }
    }

    /// Opens the client's window by `bytes` of request DATA that went on towards the receiver.
    func consume(_ streamID: Int32, bytes: Int) {
        guard bytes > 0 else { return }
        held.release(streamID, bytes)
        session.consume(streamID: streamID, bytes: bytes)
        scheduleFlush()
    }

    private func scheduleFlush() {
        driver.scheduleFlush()
    }

    func flushScheduledOutput() {
        flushOutput()
    }

    /// Drains the session into one write, unless the client is not reading (then on writability);
    /// closes once the session is finished both ways.
    func flushOutput(force: Bool = false) {
        guard let context else { return }
        do {
            try driver.flush(whenWritable: !force)
        } catch {
            closing = true
            context.close(promise: nil)
            return
        }
        if !closing && driver.isFinished {
            closing = true
            context.close(promise: nil)
        }
    }

    private func closeConnection(sendGoaway: Bool) {
        guard let context, !closing else { return }
        if sendGoaway { session.submitGoaway(errorCode: .noError) }
        flushOutput(force: true)
        closing = true
        context.close(promise: nil)
    }
}
