import NIOCore
import NIOPosix
import ProxyHTTP2

/// What an upstream HTTP/2 stream reports to the exchange that opened it. Called on the event loop
/// that owns both the client connection and the upstream connection (pools are per event loop).
protocol UpstreamH2StreamDelegate: AnyObject {
    /// Response headers, informational headers or trailers of the stream.
    func upstreamHeaders(_ fields: [HTTP2HeaderField], kind: HTTP2HeaderKind, endStream: Bool)
    func upstreamData(_ data: ByteBuffer, endStream: Bool)
    /// The upstream took `bytes` of the request body into frames: the client's window may reopen by as much.
    func upstreamDataSent(bytes: Int)
    /// The stream ended: normally (after END_STREAM both ways), reset by the receiver, refused after
    /// GOAWAY, or because the connection went away. Always the last call.
    func upstreamStreamClosed(errorCode: HTTP2ErrorCode, reset: Bool)
}

/// One multiplexed h2c (prior-knowledge HTTP/2 over plaintext) connection to the gRPC receiver.
///
/// Owns its `HTTP2Session` (client role) and the map from stream id to the exchange using it. Owned by
/// its channel's pipeline; the pool keeps it while it can take streams. Flow control is end to end:
/// received DATA is consumed only when the exchange reports the client took it.
final class UpstreamH2Connection: ChannelDuplexHandler, HTTP2ChannelDriverDelegate {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Never
    typealias OutboundOut = ByteBuffer

    private let session: HTTP2Session
    private var context: ChannelHandlerContext?
    private var streams: [Int32: any UpstreamH2StreamDelegate] = [:]
    private(set) var isActive = false
    /// The receiver sent GOAWAY or the connection failed: no new streams.
    private(set) var goingAway = false
    /// Called once when the channel goes away or stops taking streams, so the pool can forget it.
    var onUnusable: ((UpstreamH2Connection) -> Void)?
    /// Called when the receiver's SETTINGS arrive or a stream closes: capacity may have changed.
    var onCapacity: ((UpstreamH2Connection) -> Void)?

    /// How long the receiver has to send its SETTINGS once connected before the connection is dropped.
    private let settingsTimeout: TimeAmount
    private var settingsTimer: Scheduled<Void>?

    init(settings: HTTP2SessionSettings, settingsTimeout: TimeAmount) throws {
        session = try HTTP2Session(role: .client, settings: settings)
        self.settingsTimeout = settingsTimeout
        driver = HTTP2ChannelDriver(session: session, delegate: self)
    }

    /// Moves the session's bytes: set at the end of `init` (it needs `self` as its delegate).
    private var driver: HTTP2ChannelDriver!

    /// Whether one more stream may be opened now. Counts the streams handed out (not only those
    /// nghttp2 has opened), so a burst of exchanges never overbooks a connection.
    ///
    /// Until the receiver's SETTINGS arrive its stream limit is unknown, and a receiver may refuse
    /// streams beyond its limit before our acknowledgement (gRPC servers do): so a new connection
    /// carries one stream until then, and the waiting exchanges are served when the SETTINGS come.
    var hasCapacity: Bool {
        guard isActive && !goingAway else { return false }
        let limit = receivedSettings ? session.remoteMaxConcurrentStreams : 1
        return streams.count < limit
    }

    /// Whether the receiver's first SETTINGS frame has arrived.
    private(set) var receivedSettings = false

    var activeStreams: Int { streams.count }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        driver.attach(context)
        if context.channel.isActive { becameActive(context: context) }
    }

    /// The context holds this handler strongly: keeping it after removal would be a cycle that
    /// leaks both with every closed connection.
    func handlerRemoved(context: ChannelHandlerContext) {
        driver.detach()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        becameActive(context: context)
        context.fireChannelActive()
    }

    private func becameActive(context: ChannelHandlerContext) {
        guard !isActive else { return }
        isActive = true
        flushOutput()  // the connection preface and our SETTINGS
        settingsTimer = context.eventLoop.assumeIsolated().scheduleTask(in: settingsTimeout) { [self] in
            guard !receivedSettings else { return }
            // Not an HTTP/2 receiver, or a hung one: fail its stream and let the pool move on.
            markUnusable()
            self.context?.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        isActive = false
        settingsTimer?.cancel()
        settingsTimer = nil
        markUnusable()
        let open = streams
        streams.removeAll()
        for (_, delegate) in open { delegate.upstreamStreamClosed(errorCode: .cancel, reset: true) }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try driver.receive(unwrapInboundIn(data))
        } catch {
            markUnusable()
            flushOutput()
            context.close(promise: nil)
            return
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushOutput()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        markUnusable()
        context.close(promise: nil)
    }

    /// Opens a request stream for `delegate`. The caller checked `hasCapacity`.
    func openStream(fields: [HTTP2HeaderField], endStream: Bool, delegate: any UpstreamH2StreamDelegate) throws -> Int32 {
        let streamID = try session.submitRequest(fields: fields, endStream: endStream)
        streams[streamID] = delegate
        scheduleFlush()
        return streamID
    }

    func sendData(streamID: Int32, _ data: ByteBuffer, endStream: Bool) {
        do {
            try session.submitData(streamID: streamID, data, endStream: endStream)
        } catch {
            resetStream(streamID, errorCode: .internalError)
            return
        }
        scheduleFlush()
    }

    /// Gives `bytes` of response DATA back to the receiver's window once the client took them.
    func consume(streamID: Int32, bytes: Int) {
        guard bytes > 0 else { return }
        session.consume(streamID: streamID, bytes: bytes)
        scheduleFlush()
    }

    /// Cancels a stream; its delegate gets no further calls.
    func resetStream(_ streamID: Int32, errorCode: HTTP2ErrorCode) {
        guard streams.removeValue(forKey: streamID) != nil else { return }
        session.submitReset(streamID: streamID, errorCode: errorCode)
        scheduleFlush()
        onCapacity?(self)
    }

    /// Closes the connection politely (shutdown or idle).
    func close() {
        markUnusable()
        session.submitGoaway(errorCode: .noError)
        flushOutput()
        context?.close(promise: nil)
    }

    private func markUnusable() {
        goingAway = true
        let callback = onUnusable
        onUnusable = nil
        callback?(self)
    }

    func handle(_ event: HTTP2Event) {
        switch event {
        case .headers(let streamID, let fields, let kind, let endStream):
            streams[streamID]?.upstreamHeaders(fields, kind: kind, endStream: endStream)
        case .data(let streamID, let data, let endStream):
            if let delegate = streams[streamID] {
                delegate.upstreamData(data, endStream: endStream)
            } else {
                session.consume(streamID: streamID, bytes: data.readableBytes)
            }
        case .dataSent(let streamID, let bytes):
            streams[streamID]?.upstreamDataSent(bytes: bytes)
        case .streamReset(let streamID, let code):
            if let delegate = streams.removeValue(forKey: streamID) {
                delegate.upstreamStreamClosed(errorCode: code, reset: true)
            }
        case .streamClosed(let streamID, let code):
            if let delegate = streams.removeValue(forKey: streamID) {
                delegate.upstreamStreamClosed(errorCode: code, reset: code != .noError)
            }
            onCapacity?(self)
        case .goaway:
            markUnusable()
        case .remoteSettings:
            receivedSettings = true
            settingsTimer?.cancel()
            settingsTimer = nil
            onCapacity?(self)
        }
    }

    /// Coalesces output: streams opened and data queued in one event-loop tick leave as one write.
    private func scheduleFlush() {
        driver.scheduleFlush()
    }

    func flushScheduledOutput() {
        flushOutput()
    }

    /// Sends whatever the session has to send, as one write.
    func flushOutput() {
        guard let context, isActive else { return }
        do {
            try driver.flush()
        } catch {
            markUnusable()
            context.close(promise: nil)
        }
    }
}
