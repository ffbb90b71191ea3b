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
final class HTTP2ServerConnection: ChannelDuplexHandler {
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
    let logger: Logger

    private let session: HTTP2Session
    private var context: ChannelHandlerContext?
    private var exchanges: [Int32: HTTP2StreamExchange] = [:]
    private let queue = HTTP2EventQueue()
    private var closing = false
    private var outputPending = false
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
    }

    /// Set in handlerAdded; outlives `context`, which is released in handlerRemoved.
    private var loop: (any EventLoop)?
    var eventLoop: any EventLoop { loop! }
    var allocator: ByteBufferAllocator { context?.channel.allocator ?? ByteBufferAllocator() }
    var isWritable: Bool { context?.channel.isWritable ?? false }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
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
        self.context = nil
    }

    // MARK: Client bytes in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        do {
            try session.receive(unwrapInboundIn(data), events: &queue.events)
        } catch {
            logger.debug("HTTP/2 connection error", metadata: ["error": "\(error)"])
            handleEvents()
            closeConnection(sendGoaway: false)
            return
        }
        handleEvents()
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

    private func handleEvents() {
        queue.drain { event in
            handle(event)
        }
    }

    private func handle(_ event: HTTP2Event) {
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

    /// Coalesces output: work done for many streams (and upstream events) in one event-loop tick
    /// leaves as one write. A read burst ends with `channelReadComplete`, which flushes at once.
    private var flushScheduled = false

    private func scheduleFlush() {
        guard !flushScheduled, let context else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute { [self] in
            if flushScheduled { flushOutput() }
        }
    }

    /// Drains the session into one write, unless the client is not reading (then on writability).
    func flushOutput(force: Bool = false) {
        guard let context else { return }
        flushScheduled = false
        guard force || context.channel.isWritable else {
            outputPending = true
            return
        }
        outputPending = false
        var buffer = context.channel.allocator.buffer(capacity: 0)
        do {
            try session.drainOutput(into: &buffer, events: &queue.events)
        } catch {
            closing = true
            context.close(promise: nil)
            return
        }
        if buffer.readableBytes > 0 {
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        }
        if !queue.isEmpty { handleEvents() }
        if !closing && !session.wantsRead && !session.wantsWrite {
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

/// One client stream on an HTTP/2 connection: a gRPC call relayed to the gRPC receiver over h2c,
/// or an OTLP/HTTP request translated to HTTP/1.1 for the HTTP receiver, or a local reply.
///
/// Owned by its `HTTP2ServerConnection` until the stream closes; holds the upstream stream or
/// connection it uses. All calls happen on the connection's event loop.
final class HTTP2StreamExchange: UpstreamH2StreamDelegate, UpstreamHTTP1Exchange {
    private enum Target {
        case grpc(OTLPSignal)
        case http(OTLPSignal)
    }

    private enum Phase {
        /// Authenticated, waiting for an upstream; request DATA queues here (bounded by the window,
        /// since it is not consumed yet).
        case connecting(pending: [(ByteBuffer, Bool)])
        case h2c(connection: UpstreamH2Connection, streamID: Int32)
        case h1(connection: UpstreamHTTP1Connection)
        /// A local reply went out, or the exchange ended: request DATA is consumed and dropped.
        case finished
    }

    let streamID: Int32
    /// Unowned: the connection owns its exchanges and ends them (`clientGone`) before it goes away;
    /// callbacks that can outlive it (pool acquisitions) use `pools` and `eventLoop` instead.
    private unowned let connection: HTTP2ServerConnection
    /// The runtime in force when the request arrived: it authenticates, maps, authorizes and limits
    /// this request, whatever runtime the connection was accepted with.
    private let runtime: ProxyRuntime
    private let pools: UpstreamPools
    private let eventLoop: any EventLoop
    private var target: Target = .http(.traces)
    private var phase: Phase = .finished
    private var encoding: OTLPEncoding = .protobuf
    private var requestComplete = false
    private var responseStarted = false
    private var responseComplete = false
    private var bodyBytes = 0
    private var scanner: GRPCMessageScanner?
    /// Follows the gRPC response messages relayed so far, to know whether the client holds only
    /// whole messages when the receiver goes away mid-response.
    private var responseScanner = GRPCMessageScanner(maxMessageSize: .max)
    /// Request bytes written to an HTTP/1.1 receiver that is not writable: consumed when it is.
    private var unconsumed = 0
    /// The OTLP/HTTP request's declared Content-Length. The HTTP/1.1 receiver must not hold a
    /// complete request before the client's stream has ended within it: the last declared byte
    /// (for a declared zero, the head) waits for END_STREAM, so a stream that goes on to carry
    /// more than it declared is reset while the receiver's request is still incomplete.
    private var declaredLength: Int?
    /// Request body bytes written to the HTTP/1.1 receiver.
    private var forwardedBytes = 0
    /// The tail of the body kept back until END_STREAM (at most the last declared byte).
    private var heldBody: ByteBuffer?
    /// The head of a request declared empty whose stream has not ended yet.
    private var heldHead: HTTPRequestHead?
    /// Watches the receiver, through the connection's check (`upstreamDeadline`): no response head within
    /// `upstream.timeout` is DEADLINE_EXCEEDED / 504; once the response has started, silence for as long
    /// ends the stream as an upstream failure. Since when the request has waited; nil while not waiting.
    private var responseWaitSince: NIODeadline?
    /// When the receiver last sent part of the response.
    private var lastUpstreamActivity = NIODeadline.now()
    private var deadlineTimer: Scheduled<Void>?
    /// Set when the authentication outcome arrived (it is acted on once).
    private var authenticatedOnce = false
    /// The tenant of the admitted request, whose byte budget its body is charged to.
    private var ratedTenant: String?
    /// The access log and metrics facts of this request.
    private var requestLog: RequestLog
    private var streamCounted = true

    init(streamID: Int32, connection: HTTP2ServerConnection) {
        self.streamID = streamID
        self.connection = connection
        self.runtime = connection.services.runtime.load()
        self.pools = connection.pools
        self.eventLoop = connection.eventLoop
        self.requestLog = RequestLog(transport: "h2", peer: connection.peerAddress)
        connection.services.metrics.streamOpened()
    }

    private var metrics: ProxyMetrics { connection.services.metrics }

    /// Ends this request's record (once): counts it and writes its access log line.
    private func finishRecord(_ outcome: String) {
        requestLog.finish(outcome: outcome, bytesIn: bodyBytes, metrics: metrics)
    }

    /// The client stream is gone from the connection: count it closed (once).
    private func streamEnded() {
        guard streamCounted else { return }
        streamCounted = false
        metrics.streamClosed()
    }

    // MARK: Request

    func start(fields: [HTTP2HeaderField], endStream: Bool) {
        requestComplete = endStream
        var method = ""
        var path = ""
        var authority: String?
        var contentType: String?
        var authorization: [String] = []
        var contentLength: [String] = []
        var grpcTimeout: String?
        for field in fields {
            switch field.name {
            case ":method": method = field.value
            case ":path": path = field.value
            case ":authority": authority = field.value
            case "content-type": contentType = field.value
            case "authorization": authorization.append(field.value)
            case "content-length": contentLength.append(field.value)
            case "grpc-timeout": grpcTimeout = field.value
            default: break
            }
        }
        let limits = runtime.limits

        if GRPC.isGRPC(contentType: contentType) {
            requestLog.setTransport("grpc")
            guard let signal = OTLPSignal(grpcPath: path), method == "POST" else {
                target = .grpc(.traces)
                reply(.unimplementedMethod, reason: "unknown_method")
                return
            }
            target = .grpc(signal)
            requestLog.setSignal(signal)
            scanner = GRPCMessageScanner(maxMessageSize: limits.maxRecvMsgSize)
        } else {
            // Only an OTLP/HTTP reply has a body whose encoding follows the request's.
            encoding = OTLPEncoding(contentType: contentType)
            guard let signal = OTLPSignal(httpTarget: path) else {
                target = .http(.traces)
                reply(.notFound, reason: "unknown_path")
                return
            }
            target = .http(signal)
            requestLog.setSignal(signal)
            guard method == "POST" else {
                reply(.methodNotAllowed, reason: "method")
                return
            }
            declaredLength = contentLength.first.flatMap(Int.init)
            if let declared = declaredLength, declared > limits.maxRequestBodySize {
                reply(.bodyTooLarge, reason: "body_limit")
                return
            }
        }

        if connection.services.shedsNewRequest(runtime: runtime) {
            reply(.overloaded, reason: "load_shed")
            return
        }
        let signal: OTLPSignal
        switch target {
        case .grpc(let grpcSignal): signal = grpcSignal
        case .http(let httpSignal): signal = httpSignal
        }
        // The deadline covers authentication and the wait for an upstream stream too.
        phase = .connecting(pending: [])
        if let timeout = GRPC.timeout(grpcTimeout), case .grpc = target {
            deadlineTimer = eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
                deadlineExceeded()
            }
        }
        let credentials = RequestCredentials(
            peerCertificate: connection.peerCertificate, authorization: authorization, signal: signal.authSignal)
        AuthFlow.run(credentials, runtime: runtime, services: connection.services, eventLoop: eventLoop) { [self] outcome in
            authenticated(outcome, fields: fields, authority: authority, endStream: endStream)
        }
    }

    /// Continues once the credentials are decided: refuse, or open the upstream side.
    private func authenticated(_ outcome: AuthOutcome, fields: [HTTP2HeaderField], authority: String?, endStream: Bool) {
        guard case .connecting = phase, !authenticatedOnce else { return }
        authenticatedOnce = true
        let decision: AuthDecision
        switch outcome {
        case .allowed(let allowed):
            decision = allowed
            requestLog.authenticated(allowed)
        case .refused(let failure):
            requestLog.authFailed(failure, metrics: metrics)
            connection.logger.info(
                "request refused", metadata: ["auth.result": "failure", "auth.reason": "\(failure.reason)"])
            reply(.authenticationFailed(failure, challenges: runtime.authenticator.challenges), reason: failure.reason)
            return
        case .unavailable(let reason):
            requestLog.authUnavailable(reason: reason)
            connection.logger.warning("request not authenticated", metadata: ["auth.reason": "\(reason)"])
            reply(.authenticationUnavailable, reason: reason)
            return
        }
        if let limited = connection.services.admitTenantRequest(
            tenant: decision.tenant, bodySoFar: bodyBytes, runtime: runtime, logger: connection.logger)
        {
            reply(limited, reason: "rate_limited")
            return
        }
        ratedTenant = decision.tenant
        switch target {
        case .grpc(let signal):
            var upstreamFields = [
                HTTP2HeaderField(name: ":method", value: "POST"),
                HTTP2HeaderField(name: ":scheme", value: "http"),
                HTTP2HeaderField(name: ":authority", value: authority ?? pools.grpcAuthority),
                HTTP2HeaderField(name: ":path", value: signal.grpcPath),
                HTTP2HeaderField(name: "te", value: "trailers"),
            ]
            upstreamFields += runtime.headerPolicy.upstreamRequestFields(
                from: fields, tenant: decision.tenant, extra: decision.headers)
            pools.grpc(on: eventLoop).acquire { [self] result in
                grpcUpstreamAcquired(result, fields: upstreamFields)
            }
        case .http(let signal):
            var headers = HTTPHeaders()
            if let authority { headers.add(name: "host", value: authority) }
            for field in fields where !field.name.hasPrefix(":") { headers.add(name: field.name, value: field.value) }
            var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: signal.httpPath)
            head.headers = runtime.headerPolicy.upstreamRequestHeaders(
                from: headers, tenant: decision.tenant, extra: decision.headers)
            if endStream && head.headers["content-length"].isEmpty {
                head.headers.add(name: "content-length", value: "0")
            }
            pools.http(on: eventLoop).acquire { [self] result in
                httpUpstreamAcquired(result, head: head)
            }
        }
    }

    func clientData(_ data: ByteBuffer, endStream: Bool) {
        if endStream { requestComplete = true }
        let size = data.readableBytes
        bodyBytes += size
        if let ratedTenant { connection.services.chargeTenantBody(tenant: ratedTenant, bytes: size, runtime: runtime) }
        if case .finished = phase {
            connection.consume(streamID, bytes: size)
            return
        }
        if var scanner {
            let outcome = scanner.scan(data)
            self.scanner = scanner
            if case .tooLarge = outcome {
                connection.consume(streamID, bytes: size)
                reply(.messageTooLarge, reason: "message_limit")
                return
            }
        } else if bodyBytes > runtime.limits.maxRequestBodySize {
            connection.consume(streamID, bytes: size)
            reply(.bodyTooLarge, reason: "body_limit")
            return
        }
        switch phase {
        case .connecting(var pending):
            pending.append((data, endStream))
            phase = .connecting(pending: pending)
        case .h2c(let upstream, let upstreamStreamID):
            upstream.sendData(streamID: upstreamStreamID, data, endStream: endStream)
            if endStream { startResponseTimer() }
        case .h1(let upstream):
            writeToHTTP1(upstream, data: data, endStream: endStream)
        case .finished:
            break
        }
    }

    /// The client took `bytes` of response DATA: give the receiver's window back by as much.
    func clientTookResponseBytes(_ bytes: Int) {
        if case .h2c(let upstream, let upstreamStreamID) = phase {
            upstream.consume(streamID: upstreamStreamID, bytes: bytes)
        }
    }

    func clientWritabilityChanged(_ writable: Bool) {
        if case .h1(let upstream) = phase { upstream.holdReads(!writable) }
    }

    /// The client reset the stream or the connection went away: cancel upstream work.
    func clientGone() {
        streamEnded()
        finishRecord("client_gone")
        cancelTimers()
        switch phase {
        case .h2c(let upstream, let upstreamStreamID):
            upstream.resetStream(upstreamStreamID, errorCode: .cancel)
        case .h1(let upstream):
            upstream.exchange = nil
            upstream.abort()
        case .connecting, .finished:
            break
        }
        phase = .finished
    }

    func clientStreamClosed(errorCode: HTTP2ErrorCode) {
        streamEnded()
        if case .finished = phase {
            cancelTimers()
            return
        }
        if requestComplete && responseComplete {
            // Both directions ended; the upstream stream closes on its own.
            cancelTimers()
            phase = .finished
            return
        }
        // Closed while the relay still had work: treat as a cancel.
        clientGone()
    }

    // MARK: gRPC upstream (h2c)

    private func grpcUpstreamAcquired(_ result: Result<UpstreamH2Connection, any Error>, fields: [HTTP2HeaderField]) {
        guard case .connecting(let pending) = phase else { return }
        switch result {
        case .failure(let error):
            connection.logger.warning("gRPC upstream unavailable", metadata: ["error": "\(error)"])
            reply(.upstreamUnavailable, reason: "upstream_connect")
        case .success(let upstream):
            let endStream = requestComplete && pending.allSatisfy { $0.0.readableBytes == 0 }
            let upstreamStreamID: Int32
            do {
                upstreamStreamID = try upstream.openStream(fields: fields, endStream: endStream, delegate: self)
            } catch {
                reply(.upstreamUnavailable, reason: "upstream_stream")
                return
            }
            phase = .h2c(connection: upstream, streamID: upstreamStreamID)
            if !endStream {
                for (data, end) in pending { upstream.sendData(streamID: upstreamStreamID, data, endStream: end) }
            } else {
                for (data, _) in pending { connection.consume(streamID, bytes: data.readableBytes) }
            }
            startResponseTimer()
        }
    }

    func upstreamHeaders(_ fields: [HTTP2HeaderField], kind: HTTP2HeaderKind, endStream: Bool) {
        switch kind {
        case .response:
            lastUpstreamActivity = .now()
            responseStarted = true
            let status = fields.first { $0.name == ":status" }?.value ?? "200"
            requestLog.responseStarted(status: Int(status) ?? 0)
            if endStream { requestLog.grpcStatus(GRPC.status(in: fields.lazy.map { (name: $0.name, value: $0.value) })) }
            var out = [HTTP2HeaderField(name: ":status", value: status)]
            out += runtime.headerPolicy.clientResponseFields(from: fields.lazy.map { (name: $0.name, value: $0.value) })
            if endStream { finishResponse() }
            connection.submitResponse(streamID, fields: out, endStream: endStream)
        case .trailers:
            requestLog.grpcStatus(GRPC.status(in: fields.lazy.map { (name: $0.name, value: $0.value) }))
            finishResponse()
            connection.submitTrailers(
                streamID, fields: runtime.headerPolicy.clientResponseFields(from: fields.lazy.map { (name: $0.name, value: $0.value) }))
        case .informational, .request:
            break
        }
    }

    func upstreamData(_ data: ByteBuffer, endStream: Bool) {
        lastUpstreamActivity = .now()
        requestLog.sent(data.readableBytes)
        _ = responseScanner.scan(data)
        if endStream { finishResponse() }
        connection.submitData(streamID, data, endStream: endStream)
    }

    func upstreamDataSent(bytes: Int) {
        connection.consume(streamID, bytes: bytes)
    }

    func upstreamStreamClosed(errorCode: HTTP2ErrorCode, reset: Bool) {
        guard case .h2c = phase else { return }
        phase = .finished
        if responseComplete { return }
        cancelTimers()
        if !responseStarted {
            connection.logger.warning("gRPC upstream stream closed before responding", metadata: ["code": "\(errorCode)"])
            reply(.upstreamUnavailable, reason: "upstream_reset")
            return
        }
        connection.logger.warning(
            "gRPC upstream stream closed before the response ended", metadata: ["code": "\(errorCode)"])
        endStartedResponse(upstreamError: "reset")
    }

    /// Ends a response the receiver started but did not finish (it reset, closed or went silent).
    private func endStartedResponse(upstreamError kind: String) {
        metrics.upstreamError(kind: kind)
        finishRecord("upstream_error")
        if case .grpc = target, responseScanner.atMessageBoundary {
            // The client has the response headers and only whole messages: end the call with a
            // status it retries (UNAVAILABLE). A relayed reset would read as INTERNAL or CANCELLED.
            requestLog.grpcStatus(LocalReply.upstreamUnavailable.rpcCode)
            connection.submitTrailers(
                streamID,
                fields: [
                    HTTP2HeaderField(name: "grpc-status", value: String(LocalReply.upstreamUnavailable.rpcCode)),
                    HTTP2HeaderField(name: "grpc-message", value: GRPC.percentEncoded(LocalReply.upstreamUnavailable.message)),
                ])
        } else {
            // Part of a message is already with the client: only a reset can say it is incomplete.
            connection.submitReset(streamID, errorCode: .cancel)
        }
    }

    // MARK: OTLP/HTTP upstream (HTTP/1.1)

    private func httpUpstreamAcquired(_ result: Result<UpstreamHTTP1Connection, any Error>, head: HTTPRequestHead) {
        guard case .connecting(let pending) = phase else {
            if case .success(let upstream) = result { pools.http(on: eventLoop).release(upstream) }
            return
        }
        switch result {
        case .failure(let error):
            connection.logger.warning("upstream unavailable", metadata: ["error": "\(error)"])
            reply(.upstreamUnavailable, reason: "upstream_connect")
        case .success(let upstream):
            upstream.exchange = self
            upstream.holdReads(!connection.isWritable)
            phase = .h1(connection: upstream)
            if declaredLength == 0 && !requestComplete {
                heldHead = head
            } else {
                upstream.write(.head(head))
            }
            if requestComplete && pending.isEmpty { upstream.write(.end(nil)) }
            for (data, end) in pending { writeToHTTP1(upstream, data: data, endStream: end, flush: false) }
            upstream.flush()
            if requestComplete { startResponseTimer() }
        }
    }

    private func writeToHTTP1(_ upstream: UpstreamHTTP1Connection, data: ByteBuffer, endStream: Bool, flush: Bool = true) {
        let size = data.readableBytes
        var sendable = data
        if endStream {
            if let head = heldHead {
                upstream.write(.head(head))
                heldHead = nil
            }
            if var held = heldBody {
                held.writeImmutableBuffer(data)
                sendable = held
                heldBody = nil
            }
        } else if heldHead != nil {
            // Declared empty and not ended: any DATA is a length mismatch the session resets.
            sendable.clear()
        } else if let declared = declaredLength, forwardedBytes + size >= declared {
            let now = max(0, declared - 1 - forwardedBytes)
            sendable = data.getSlice(at: data.readerIndex, length: now)!
            let tail = data.getSlice(at: data.readerIndex + now, length: size - now)!
            if var held = heldBody {
                held.writeImmutableBuffer(tail)
                heldBody = held
            } else {
                heldBody = tail
            }
        }
        forwardedBytes += sendable.readableBytes
        if sendable.readableBytes > 0 { upstream.write(.body(.byteBuffer(sendable))) }
        if endStream {
            upstream.write(.end(nil))
            startResponseTimer()
        }
        if flush || endStream { upstream.flush() }
        if upstream.isWritable {
            connection.consume(streamID, bytes: size + unconsumed)
            unconsumed = 0
        } else {
            unconsumed += size
        }
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        if isWritable && unconsumed > 0 {
            connection.consume(streamID, bytes: unconsumed)
            unconsumed = 0
        }
    }

    func upstreamReceived(_ part: HTTPClientResponsePart) {
        guard case .h1(let upstream) = phase else { return }
        switch part {
        case .head(let head):
            guard head.status.code >= 200 else { return }
            lastUpstreamActivity = .now()
            responseStarted = true
            requestLog.responseStarted(status: Int(head.status.code))
            var fields = [HTTP2HeaderField(name: ":status", value: String(head.status.code))]
            fields += runtime.headerPolicy.clientResponseFields(from: head.headers.lazy.map { (name: $0.name, value: $0.value) })
            connection.submitResponse(streamID, fields: fields, endStream: false)
        case .body(let buffer):
            lastUpstreamActivity = .now()
            requestLog.sent(buffer.readableBytes)
            connection.submitData(streamID, buffer, endStream: false)
        case .end:
            // Settle the upstream connection first: ending the client stream can close it at once,
            // and a closed stream must find nothing left to cancel.
            finishResponse()
            phase = .finished
            upstream.exchange = nil
            let requestWasComplete = requestComplete
            if requestWasComplete {
                pools.http(on: eventLoop).release(upstream)
            } else {
                upstream.abort()
            }
            connection.submitData(streamID, connection.allocator.buffer(capacity: 0), endStream: true)
            if !requestWasComplete { connection.submitReset(streamID, errorCode: .noError) }
        }
    }

    func upstreamReadComplete() {}

    func upstreamClosed() {
        guard case .h1 = phase else { return }
        phase = .finished
        cancelTimers()
        if !responseStarted {
            reply(.upstreamUnavailable, reason: "upstream_reset")
        } else if !responseComplete {
            metrics.upstreamError(kind: "reset")
            finishRecord("upstream_error")
            connection.submitReset(streamID, errorCode: .cancel)
        }
    }

    // MARK: Replies and timers

    private func finishResponse() {
        responseComplete = true
        finishRecord("forwarded")
        cancelTimers()
    }

    /// Sends a local reply (trailers-only for gRPC, status + google.rpc.Status body otherwise),
    /// drops whatever upstream work was started, and drains the rest of the request.
    private func reply(_ reply: LocalReply, reason: String) {
        cancelTimers()
        switch phase {
        case .connecting(let pending):
            for (data, _) in pending { connection.consume(streamID, bytes: data.readableBytes) }
        case .h2c(let upstream, let upstreamStreamID):
            upstream.resetStream(upstreamStreamID, errorCode: .cancel)
        case .h1(let upstream):
            upstream.exchange = nil
            upstream.abort()
        case .finished:
            break
        }
        phase = .finished
        let outcome = RequestLog.outcome(forReply: reason, metrics: metrics)
        guard !responseStarted else {
            finishRecord(outcome)
            connection.submitReset(streamID, errorCode: .cancel)
            return
        }
        responseStarted = true
        responseComplete = true
        switch target {
        case .grpc:
            requestLog.responseStarted(status: 200)
            requestLog.grpcStatus(reply.rpcCode)
            finishRecord(outcome)
            connection.submitResponse(streamID, fields: reply.grpcTrailersOnly, endStream: true)
        case .http:
            let body = reply.body(encoding: encoding, allocator: connection.allocator)
            requestLog.responseStarted(status: Int(reply.status.code))
            requestLog.sent(body.readableBytes)
            finishRecord(outcome)
            var fields = [
                HTTP2HeaderField(name: ":status", value: String(reply.status.code)),
                HTTP2HeaderField(name: "content-type", value: encoding == .json ? "application/json" : "application/x-protobuf"),
                HTTP2HeaderField(name: "content-length", value: String(body.readableBytes)),
            ]
            for (name, value) in reply.extraHeaders { fields.append(HTTP2HeaderField(name: name.lowercased(), value: value)) }
            connection.submitResponse(streamID, fields: fields, endStream: false)
            connection.submitData(streamID, body, endStream: true)
        }
        if !requestComplete {
            // The reply is complete; ask the client to stop sending the body (RFC 9113 §8.1).
            connection.submitReset(streamID, errorCode: .noError)
        }
    }

    private func startResponseTimer() {
        guard responseWaitSince == nil, requestComplete else { return }
        let now = NIODeadline.now()
        responseWaitSince = now
        if responseStarted { lastUpstreamActivity = now }
        connection.watchUpstream(until: now + runtime.limits.upstreamTimeout)
    }

    /// When the receiver's time is up (see `responseWaitSince`); nil while nothing is awaited from it.
    var upstreamDeadline: NIODeadline? {
        guard let since = responseWaitSince, !responseComplete else { return nil }
        // Before the response: since the request ended; after it started: since the last part.
        let silentSince = responseStarted ? max(since, lastUpstreamActivity) : since
        return silentSince + runtime.limits.upstreamTimeout
    }

    /// The client's `grpc-timeout` passed. Once the response has started, the receiver is only given
    /// up on after `upstream.timeout` of silence.
    private func deadlineExceeded() {
        deadlineTimer = nil
        guard !responseComplete else { return }
        if responseStarted {
            let timeout = runtime.limits.upstreamTimeout
            if NIODeadline.now() - lastUpstreamActivity < timeout {
                if responseWaitSince == nil { responseWaitSince = lastUpstreamActivity }
                connection.watchUpstream(until: lastUpstreamActivity + timeout)
                return
            }
        }
        upstreamTimedOut()
    }

    /// The receiver is past its deadline (the connection's check, or `deadlineExceeded`).
    func upstreamTimedOut() {
        responseWaitSince = nil
        guard !responseComplete else { return }
        if responseStarted {
            connection.logger.warning("upstream stalled mid-response")
            switch phase {
            case .h2c(let upstream, let upstreamStreamID): upstream.resetStream(upstreamStreamID, errorCode: .cancel)
            case .h1(let upstream):
                upstream.exchange = nil
                upstream.abort()
            case .connecting, .finished: break
            }
            phase = .finished
            cancelTimers()
            endStartedResponse(upstreamError: "timeout")
            return
        }
        connection.logger.warning("upstream timed out")
        reply(.upstreamTimeout, reason: "upstream_timeout")
    }

    private func cancelTimers() {
        responseWaitSince = nil
        deadlineTimer?.cancel()
        deadlineTimer = nil
    }
}
