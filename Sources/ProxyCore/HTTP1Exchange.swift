import Logging
import NIOCore
import NIOHTTP1
import ProxyAuth
import ProxyTLS

/// Serves OTLP/HTTP over HTTP/1.1 on one client connection: routes, authenticates, rewrites the headers
/// and relays each request to the receiver through the event loop's upstream pool, streaming both ways.
///
/// Sits last in the client pipeline, right behind NIO's HTTP/1.1 codec, and handles pipelining itself:
/// parts of a request that arrive while the previous response is still going out wait in `queue` (with
/// client reads held) and are handed over, in order, once that response has ended. It also counts what
/// the decoder produced for the connection's framing budget (`HTTP1FramingMeter`; the other half is
/// `HTTP1RawByteCounter` before the decoder). Owns at most one leased upstream connection at a time.
/// Backpressure: client reads are held while no upstream connection is attached or it cannot take more
/// bytes, or a pipelined request waits, and upstream reads are held while the client cannot, so at most
/// about one read is buffered per direction.
final class HTTP1ExchangeHandler: ChannelDuplexHandler, UpstreamHTTP1Exchange {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        /// Between requests.
        case idle
        /// A local reply went out; the rest of the request body is read and dropped.
        case discarding
        /// Credentials are being checked off the event loop (password hashing, a JWT key refetch).
        /// Parts that arrive meanwhile queue here (bounded: reads are held in this state).
        case authenticating(pending: [HTTPClientRequestPart])
        /// Authenticated; waiting for an upstream connection. Parts that arrive meanwhile queue here
        /// (bounded: reads are held in this state).
        case connecting(head: HTTPRequestHead, pending: [HTTPClientRequestPart])
        /// Relaying to and from `upstream`.
        case forwarding(upstream: UpstreamHTTP1Connection)
        /// The connection is closing; everything that arrives is dropped.
        case closing
    }

    /// A request part or parser error that arrived while the previous response was still going out.
    private enum Queued {
        case part(HTTPServerRequestPart)
        case error(any Error)
    }

    /// The runtime in force when the current request arrived (read at each request head): it
    /// authenticates, maps, authorizes and limits that request. Until the first request, the one
    /// current at accept.
    private var runtime: ProxyRuntime
    private let pool: UpstreamHTTP1Pool
    /// The framing budget this handler feeds with what the decoder produced.
    private let meter: HTTP1FramingMeter
    private let services: ProxyServices
    /// The client certificate verified in the TLS handshake, if any.
    private let peerCertificate: PeerCertificate?
    private let logger: Logger

    private var context: ChannelHandlerContext?
    private var state: State = .idle {
        didSet {
            if case .idle = state { idleSince = .now() }
        }
    }
    /// When the connection last became idle (no request in flight): `http.idle_timeout` counts from here.
    private var idleSince = NIODeadline.now()
    /// Closes the connection once it has been idle for `http.idle_timeout`. One timer per connection,
    /// rescheduled when it fires, rather than a timer reset (and a write promise) on every read and write.
    private var idleCheck: Scheduled<Void>?

    // Per-request facts.
    private var requestVersion: HTTPVersion = .http1_1
    private var keepAlive = true
    private var encoding: OTLPEncoding = .protobuf
    private var bodyBytes = 0
    private var requestComplete = false
    private var responseStarted = false
    private var responseComplete = false
    /// Watches the receiver: no response head within `upstream.timeout` is a 504; once the response has
    /// started, silence for as long closes the connection (a status is already with the client).
    /// One timer per connection, rescheduled when it fires while a response is awaited (like
    /// `idleCheck`), rather than one scheduled and cancelled for every request.
    private var responseTimer: Scheduled<Void>?
    /// Since when the current request has waited for the receiver; nil while no response is awaited.
    private var responseWaitSince: NIODeadline?
    /// When the receiver last sent part of the response.
    private var lastUpstreamActivity = NIODeadline.now()
    /// The access log and metrics facts of the current request; nil between requests.
    private var requestLog: RequestLog?

    private var readsHeld = false
    private var pendingRead = false
    /// The server is draining: every response says `Connection: close` and the connection closes after it.
    private var draining = false

    /// Parts of the next request(s), and parser errors, that arrived while a response was going out;
    /// client reads are held while it is not empty, so it holds at most what one read decoded to.
    private var queue = CircularBuffer<Queued>()
    /// `deliverQueued` is running: a response that ends meanwhile leaves the queue to it.
    private var delivering = false

    /// The current request has ended but its response has not: what arrives now belongs to the next
    /// request and waits in `queue`.
    private var awaitsResponse: Bool {
        switch state {
        case .authenticating, .connecting: return requestComplete
        case .forwarding: return requestComplete && !responseComplete
        case .idle, .discarding, .closing: return false
        }
    }

    /// Queued request parts, counted for load shedding (`limits.max_buffered_bytes`).
    private var held: HeldBytes
    /// The tenant of the admitted request, whose byte budget its body is charged to.
    private var ratedTenant: String?

    init(
        connectionRuntime runtime: ProxyRuntime, pool: UpstreamHTTP1Pool, meter: HTTP1FramingMeter, services: ProxyServices,
        peerCertificate: PeerCertificate?, logger: Logger
    ) {
        self.runtime = runtime
        self.pool = pool
        self.meter = meter
        self.services = services
        self.peerCertificate = peerCertificate
        self.logger = logger
        self.held = HeldBytes(gauge: services.limits.buffered)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        idleSince = .now()
        scheduleIdleCheck(in: runtime.limits.idleTimeout, context: context)
    }

    private func scheduleIdleCheck(in delay: TimeAmount, context: ChannelHandlerContext) {
        idleCheck = context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            idleCheckFired(context: context)
        }
    }

    private func idleCheckFired(context: ChannelHandlerContext) {
        idleCheck = nil
        guard context.channel.isActive else { return }
        let timeout = runtime.limits.idleTimeout
        guard case .idle = state else {
            scheduleIdleCheck(in: timeout, context: context)
            return
        }
        let idleFor = NIODeadline.now() - idleSince
        if idleFor >= timeout {
            closeNow(context: context)
        } else {
            scheduleIdleCheck(in: timeout - idleFor, context: context)
        }
    }

    /// The client's address for the access log, formatted once per connection.
    private var peer: String??

    private func peerAddress(_ context: ChannelHandlerContext) -> String? {
        if let peer { return peer }
        let formatted = context.channel.remoteAddress?.hostPort
        peer = .some(formatted)
        return formatted
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        idleCheck = nil
        responseTimer?.cancel()
        responseTimer = nil
        held.releaseAll()
        // The context holds this handler strongly: keeping it would be a cycle leaking both.
        self.context = nil
    }

    // MARK: Client side

    /// True while a client read is being handled: upstream writes made then are flushed once, at the
    /// end of the request or at `channelReadComplete`, instead of once per part.
    private var inClientRead = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        // The framing budget counts what the decoder produced as it comes out of the decoder, before
        // any part waits in the queue (`HTTP1RawByteCounter` checks it once the read is decoded).
        switch part {
        case .head(let head): meter.budget.decodedHead(bytes: HTTP1FramingMeter.size(head), fields: head.headers.count)
        case .body(let buffer): meter.budget.decodedBody(buffer.readableBytes)
        case .end: meter.budget.decodedEnd()
        }
        if case .closing = state { return }
        if !queue.isEmpty || awaitsResponse {
            queue.append(.part(part))
            readsHeld = true
            return
        }
        receivedPart(part, context: context)
    }

    private func receivedPart(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        inClientRead = true
        defer { inClientRead = false }
        switch part {
        case .head(let head): receivedHead(head, context: context)
        case .body(let buffer): receivedBody(buffer, context: context)
        case .end(let trailers): receivedEnd(trailers, context: context)
        }
    }

    /// A response ended: hands over what waited for it, in order, until a request again awaits its
    /// response (or the connection closes), then flushes what went upstream and resumes reading.
    private func deliverQueued(context: ChannelHandlerContext) {
        guard !delivering, !queue.isEmpty else { return }
        delivering = true
        var delivered = false
        while !queue.isEmpty, !awaitsResponse {
            if case .closing = state {
                queue.removeAll()
                break
            }
            switch queue.removeFirst() {
            case .part(let part):
                receivedPart(part, context: context)
                delivered = true
            case .error(let error):
                receivedError(error, context: context)
            }
        }
        delivering = false
        if delivered, case .forwarding(let upstream) = state { upstream.flush() }
        updateReadHold(context: context)
    }

    private func receivedHead(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        guard case .idle = state else {
            // Requests are handed over one at a time (`queue`); anything else is a bug.
            closeNow(context: context)
            return
        }
        runtime = services.runtime.load()
        let fields = HeadFields(head)
        requestVersion = head.version
        keepAlive = head.isKeepAlive && !draining
        encoding = OTLPEncoding(contentType: fields.contentType)
        bodyBytes = 0
        responseWaitSince = nil
        ratedTenant = nil
        requestComplete = false
        responseStarted = false
        responseComplete = false
        requestLog = RequestLog(transport: "http/1.1", peer: peerAddress(context))

        let limits = runtime.limits
        if head.headers.count > limits.maxHeaderCount || fields.bytes > limits.maxHeaderBytes {
            refuse(.headersTooLarge, reason: "header_limit", close: true, context: context)
            return
        }
        // Framing the proxy does not guess at (DESIGN.md, HTTP/1.1 defences): a protocol switch
        // (`Upgrade: h2c`, websocket, anything) and Transfer-Encoding on HTTP/1.0, which RFC 9112 §6.1
        // makes faulty framing. Refused, and the connection closed.
        if fields.upgrade || (head.version.major == 1 && head.version.minor == 0 && fields.transferEncoding)
        {
            refuse(.badRequest, reason: "ambiguous_framing", close: true, context: context)
            return
        }
        guard let signal = OTLPSignal(httpTarget: head.uri) else {
            refuse(.notFound, reason: "unknown_path", close: false, context: context)
            return
        }
        requestLog?.setSignal(signal)
        guard head.method == .POST else {
            refuse(.methodNotAllowed, reason: "method", close: false, context: context)
            return
        }
        if fields.contentLengths > 1 {
            refuse(.badRequest, reason: "duplicate_content_length", close: true, context: context)
            return
        }
        if let length = fields.contentLength, let declared = Int(length), declared > limits.maxRequestBodySize {
            refuse(.bodyTooLarge, reason: "body_limit", close: true, context: context)
            return
        }
        if services.shedsNewRequest(runtime: runtime) {
            refuse(.overloaded, reason: "load_shed", close: false, context: context)
            return
        }
        let expectsContinue = fields.expectsContinue
        let credentials = RequestCredentials(
            peerCertificate: peerCertificate, authorization: fields.authorization, signal: signal.authSignal)
        state = .authenticating(pending: [])
        updateReadHold(context: context)
        AuthFlow.run(credentials, runtime: runtime, services: services, eventLoop: context.eventLoop) { [self] outcome in
            authenticated(outcome, head: head, signal: signal, expectsContinue: expectsContinue)
        }
    }

    private func authenticated(_ outcome: AuthOutcome, head: HTTPRequestHead, signal: OTLPSignal, expectsContinue: Bool) {
        guard let context, case .authenticating(let pending) = state else { return }
        let decision: AuthDecision
        switch outcome {
        case .allowed(let allowed):
            decision = allowed
            requestLog?.authenticated(allowed)
        case .refused(let failure):
            requestLog?.authFailed(failure, metrics: services.metrics)
            logger.info(
                "request refused",
                metadata: ["signal": "\(signal.rawValue)", "auth.result": "failure", "auth.reason": "\(failure.reason)"])
            state = .idle
            refuse(
                .authenticationFailed(failure, challenges: runtime.authenticator.challenges), reason: failure.reason,
                close: expectsContinue && !requestComplete, context: context)
            return
        case .unavailable(let reason):
            requestLog?.authUnavailable(reason: reason)
            logger.warning("request not authenticated", metadata: ["signal": "\(signal.rawValue)", "auth.reason": "\(reason)"])
            state = .idle
            refuse(.authenticationUnavailable, reason: reason, close: expectsContinue && !requestComplete, context: context)
            return
        }
        if let limited = services.admitTenantRequest(
            tenant: decision.tenant, bodySoFar: bodyBytes, runtime: runtime, logger: logger)
        {
            state = .idle
            refuse(limited, reason: "rate_limited", close: expectsContinue && !requestComplete, context: context)
            return
        }
        ratedTenant = decision.tenant

        var upstreamHead = HTTPRequestHead(version: .http1_1, method: .POST, uri: head.uri)
        upstreamHead.headers = runtime.headerPolicy.upstreamRequestHeaders(
            from: head.headers, tenant: decision.tenant, extra: decision.headers)
        if expectsContinue && !requestComplete {
            context.writeAndFlush(
                wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
        }
        logger.debug(
            "request accepted",
            metadata: ["signal": "\(signal.rawValue)", "principal": "\(decision.principal.name)", "tenant": "\(decision.tenant)"])

        state = .connecting(head: upstreamHead, pending: pending)
        updateReadHold(context: context)
        pool.acquire { [self] result in
            upstreamAcquired(result)
        }
    }

    private func receivedBody(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        bodyBytes += buffer.readableBytes
        if let ratedTenant { services.chargeTenantBody(tenant: ratedTenant, bytes: buffer.readableBytes, runtime: runtime) }
        let overLimit = bodyBytes > runtime.limits.maxRequestBodySize
        switch state {
        case .authenticating(var pending):
            if overLimit {
                state = .idle
                refuse(.bodyTooLarge, reason: "body_limit", close: true, context: context)
                return
            }
            pending.append(.body(.byteBuffer(buffer)))
            held.add(buffer.readableBytes)
            state = .authenticating(pending: pending)
        case .connecting(let upstreamHead, var pending):
            if overLimit {
                state = .idle
                refuse(.bodyTooLarge, reason: "body_limit", close: true, context: context)
                return
            }
            pending.append(.body(.byteBuffer(buffer)))
            held.add(buffer.readableBytes)
            state = .connecting(head: upstreamHead, pending: pending)
        case .forwarding(let upstream):
            if overLimit {
                // The receiver has a partial request: that connection cannot be reused.
                detachUpstream(abort: true)
                if responseStarted {
                    closeNow(context: context)
                } else {
                    refuse(.bodyTooLarge, reason: "body_limit", close: true, context: context)
                }
                return
            }
            upstream.write(.body(.byteBuffer(buffer)))
        case .discarding:
            if overLimit { closeNow(context: context) }
        case .idle, .closing:
            break
        }
    }

    private func receivedEnd(_ trailers: HTTPHeaders?, context: ChannelHandlerContext) {
        requestComplete = true
        switch state {
        case .authenticating(var pending):
            pending.append(.end(nil))
            state = .authenticating(pending: pending)
        case .connecting(let upstreamHead, var pending):
            pending.append(.end(nil))
            state = .connecting(head: upstreamHead, pending: pending)
        case .forwarding(let upstream):
            upstream.write(.end(nil))
            upstream.flush()
            startResponseTimer(context: context)
            finishIfComplete(context: context)
        case .discarding:
            state = .idle
            if !keepAlive { closeNow(context: context) }
        case .idle, .closing:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .forwarding(let upstream) = state { upstream.flush() }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .forwarding(let upstream) = state {
            upstream.holdReads(!context.channel.isWritable)
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        switch state {
        case .forwarding:
            detachUpstream(abort: !(requestComplete && responseComplete))
        default:
            break
        }
        responseTimer?.cancel()
        idleCheck?.cancel()
        idleCheck = nil
        held.releaseAll()
        queue.removeAll()
        finishRecord("client_gone")
        state = .closing
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // After the connection closed (the decoder reports a body cut short at EOF): the request
        // was already recorded as `client_gone` and no reply can be written.
        if case .closing = state { return }
        // A parser error behind a request whose response is still going out belongs to the next
        // request: it is answered in order, once that response has ended.
        if error is HTTPParserError, !queue.isEmpty || awaitsResponse {
            queue.append(.error(error))
            readsHeld = true
            return
        }
        receivedError(error, context: context)
    }

    private func receivedError(_ error: any Error, context: ChannelHandlerContext) {
        if case .closing = state { return }
        if let parserError = error as? HTTPParserError {
            let reply: LocalReply = parserError == .headerOverflow ? .headersTooLarge : .badRequest
            if case .idle = state {
                // Between requests: the error belongs to the next request (one pipelined behind a
                // request that was in flight reaches us only once that response has ended), so the
                // previous request's facts must not decide how to answer it.
                responseStarted = false
                responseComplete = false
                requestComplete = false
            }
            if case .forwarding = state { detachUpstream(abort: true) }
            if responseStarted {
                closeNow(context: context)
            } else {
                state = .idle
                refuse(reply, reason: "malformed_http", close: true, context: context)
            }
            return
        }
        // Transport or TLS failure: nothing sensible can be written any more.
        logger.debug("client connection error", metadata: ["error": "\(error)"])
        closeNow(context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ProxyDrainEvent {
            // The request in progress (if any) finishes with `Connection: close`; an idle connection goes now.
            draining = true
            keepAlive = false
            if case .idle = state { closeNow(context: context) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func read(context: ChannelHandlerContext) {
        if readsHeld || !queue.isEmpty {
            pendingRead = true
        } else {
            context.read()
        }
    }

    // MARK: Upstream side

    private func upstreamAcquired(_ result: Result<UpstreamHTTP1Connection, any Error>) {
        guard let context else { return }
        guard case .connecting(let upstreamHead, let pending) = state else {
            // The client went away or was refused while we connected: the connection is clean.
            if case .success(let connection) = result { pool.release(connection) }
            return
        }
        switch result {
        case .failure(let error):
            logger.warning("upstream unavailable", metadata: ["upstream": "\(pool.address.hostPort)", "error": "\(error)"])
            state = .idle
            refuse(.upstreamUnavailable, reason: "upstream_connect", close: !requestComplete, context: context)
        case .success(let upstream):
            upstream.exchange = self
            upstream.holdReads(!context.channel.isWritable)
            state = .forwarding(upstream: upstream)
            held.releaseAll()
            upstream.write(.head(upstreamHead))
            for part in pending { upstream.write(part) }
            if !inClientRead || requestComplete { upstream.flush() }
            if requestComplete { startResponseTimer(context: context) }
            updateReadHold(context: context)
        }
    }

    func upstreamReceived(_ part: HTTPClientResponsePart) {
        guard let context, case .forwarding = state else { return }
        switch part {
        case .head(let head):
            if head.status.code < 200 {
                // Informational (e.g. 100 Continue): the proxy answered Expect itself, so drop it.
                return
            }
            lastUpstreamActivity = .now()
            responseStarted = true
            requestLog?.responseStarted(status: Int(head.status.code))
            var headers = runtime.headerPolicy.clientResponseHeaders(from: head.headers)
            if !keepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: requestVersion, status: head.status, headers: headers))),
                promise: nil)
        case .body(let buffer):
            lastUpstreamActivity = .now()
            requestLog?.sent(buffer.readableBytes)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        case .end(let trailers):
            responseComplete = true
            finishRecord("forwarded")
            if !requestComplete {
                // The receiver answered before the body ended: drop the rest, do not reuse the connection.
                detachUpstream(abort: true)
                state = .discarding
                context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
                updateReadHold(context: context)
                return
            }
            detachUpstream(abort: false)
            state = keepAlive ? .idle : .closing
            context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
            if keepAlive {
                // The next pipelined request, if one waited, now finds the exchange idle.
                deliverQueued(context: context)
                updateReadHold(context: context)
            } else {
                queue.removeAll()
                context.close(promise: nil)
            }
        }
    }

    func upstreamReadComplete() {
        context?.flush()
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        guard let context else { return }
        updateReadHold(context: context)
    }

    func upstreamClosed() {
        guard let context, case .forwarding = state else { return }
        responseWaitSince = nil
        state = .idle
        if responseStarted {
            // Part of the response is already with the client: the only honest signal is to close.
            services.metrics.upstreamError(kind: "reset")
            finishRecord("upstream_error")
            closeNow(context: context)
        } else {
            logger.warning("upstream closed before responding", metadata: ["upstream": "\(pool.address.hostPort)"])
            refuse(.upstreamUnavailable, reason: "upstream_reset", close: !requestComplete, context: context)
        }
    }

    // MARK: Helpers

    /// Ends the current request's record (once): counts it and writes its access log line.
    private func finishRecord(_ outcome: String) {
        guard var log = requestLog else { return }
        requestLog = nil
        log.finish(outcome: outcome, bytesIn: bodyBytes, metrics: services.metrics)
    }

    private func finishIfComplete(context: ChannelHandlerContext) {
        guard requestComplete, responseComplete, case .forwarding = state else { return }
        detachUpstream(abort: false)
        state = .idle
        updateReadHold(context: context)
        if !keepAlive {
            closeNow(context: context)
        } else {
            deliverQueued(context: context)
        }
    }

    /// Gives the upstream connection back to the pool, or closes it when the exchange left it mid-message.
    private func detachUpstream(abort: Bool) {
        guard case .forwarding(let upstream) = state else { return }
        responseWaitSince = nil
        upstream.exchange = nil
        if abort {
            upstream.abort()
        } else {
            pool.release(upstream)
        }
        state = .idle
    }

    private func startResponseTimer(context: ChannelHandlerContext) {
        guard responseWaitSince == nil else { return }
        let now = NIODeadline.now()
        responseWaitSince = now
        if responseStarted { lastUpstreamActivity = now }
        // A timer left from an earlier request fires no later than this one would, and reschedules.
        if responseTimer == nil { scheduleResponseTimer(in: runtime.limits.upstreamTimeout, context: context) }
    }

    private func scheduleResponseTimer(in delay: TimeAmount, context: ChannelHandlerContext) {
        responseTimer = context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            responseTimedOut()
        }
    }

    private func responseTimedOut() {
        responseTimer = nil
        guard let context, case .forwarding = state, let waitSince = responseWaitSince else { return }
        let timeout = runtime.limits.upstreamTimeout
        // Before the response: since the request went upstream; after it started: since the last part.
        let silentSince = responseStarted ? max(waitSince, lastUpstreamActivity) : waitSince
        let silent = NIODeadline.now() - silentSince
        if silent < timeout {
            scheduleResponseTimer(in: timeout - silent, context: context)
            return
        }
        if responseStarted {
            // Part of the response is with the client already: closing is the only honest signal.
            logger.warning("upstream stalled mid-response", metadata: ["upstream": "\(pool.address.hostPort)"])
            services.metrics.upstreamError(kind: "timeout")
            finishRecord("upstream_error")
            closeNow(context: context)
            return
        }
        logger.warning("upstream timed out", metadata: ["upstream": "\(pool.address.hostPort)"])
        detachUpstream(abort: true)
        refuse(.upstreamTimeout, reason: "upstream_timeout", close: !requestComplete, context: context)
    }

    /// Sends a local reply. When the request body has not been read yet it is dropped as it arrives
    /// (keeping the connection), unless `close` is set, in which case the connection closes after the reply.
    private func refuse(_ reply: LocalReply, reason: String, close: Bool, context: ChannelHandlerContext) {
        let closeAfter = close || !keepAlive
        held.releaseAll()
        let body = reply.body(encoding: encoding, allocator: context.channel.allocator)
        if requestLog == nil {
            // Refused before a request head was read (a malformed request).
            requestLog = RequestLog(transport: "http/1.1", peer: peerAddress(context))
        }
        requestLog?.responseStarted(status: Int(reply.status.code))
        requestLog?.sent(body.readableBytes)
        finishRecord(RequestLog.outcome(forReply: reason, metrics: services.metrics))
        let head = reply.head(version: requestVersion, encoding: encoding, bodyLength: body.readableBytes, close: closeAfter)
        responseStarted = true
        responseComplete = true
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        if closeAfter {
            state = .closing
            queue.removeAll()
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { [self] _ in
                lingeringClose(context: context)
            }
        } else {
            state = requestComplete ? .idle : .discarding
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            // The next pipelined request, if one waited, now finds this one finished.
            deliverQueued(context: context)
        }
        updateReadHold(context: context)
    }

    /// How long a refused client may keep sending after the reply before the connection is cut.
    static let lingerTime: TimeAmount = .seconds(2)

    /// Closes our side after a reply while the client may still be sending (a request refused
    /// mid-body or mid-header): closing at once with unread bytes makes the kernel send a reset that
    /// can destroy the reply before the client reads it. So the output closes (TLS close_notify,
    /// then FIN), input is read and dropped, and the connection closes when the client does or
    /// after `lingerTime`.
    private func lingeringClose(context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        context.close(mode: .output, promise: nil)
        context.eventLoop.assumeIsolated().scheduleTask(in: Self.lingerTime) {
            context.close(promise: nil)
        }
    }

    private func closeNow(context: ChannelHandlerContext) {
        finishRecord(responseStarted ? "refused" : "client_gone")
        if case .forwarding = state { detachUpstream(abort: true) }
        held.releaseAll()
        queue.removeAll()
        state = .closing
        context.close(promise: nil)
    }

    /// Holds client reads while waiting for an upstream connection or while it cannot take more, and
    /// while a pipelined request waits in the queue.
    private func updateReadHold(context: ChannelHandlerContext) {
        let stateHolds: Bool
        switch state {
        case .authenticating, .connecting: stateHolds = true
        case .forwarding(let upstream): stateHolds = !upstream.isWritable
        case .idle, .discarding, .closing: stateHolds = false
        }
        readsHeld = stateHolds || !queue.isEmpty
        if !readsHeld && pendingRead {
            pendingRead = false
            context.read()
        }
    }
}

/// The fields of a request head the exchange decides on, gathered in one pass instead of a lookup
/// (and an array) per name.
private struct HeadFields {
    /// The first Content-Type.
    var contentType: String?
    var upgrade = false
    var transferEncoding = false
    var contentLengths = 0
    /// The first Content-Length.
    var contentLength: String?
    /// An `Expect: 100-continue` (any case).
    var expectsContinue = false
    /// Every Authorization value (more than one is refused by the authenticator).
    var authorization: [String] = []
    /// The size of the request line and header section as sent (name, ": ", value, CRLF per field).
    var bytes: Int

    /// True when `name` is `lower` in any ASCII case (`lower` is given in lower case).
    static func equalsLowercased(_ name: String, _ lower: StaticString) -> Bool {
        let utf8 = name.utf8
        guard utf8.count == lower.utf8CodeUnitCount else { return false }
        return lower.withUTF8Buffer { expected in
            var index = 0
            for byte in utf8 {
                let folded = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
                guard folded == expected[index] else { return false }
                index += 1
            }
            return true
        }
    }

    init(_ head: HTTPRequestHead) {
        bytes = head.uri.utf8.count + 16
        for (name, value) in head.headers {
            bytes += name.utf8.count + value.utf8.count + 4
            switch name.utf8.count {
            case 12 where Self.equalsLowercased(name, "content-type"):
                if contentType == nil { contentType = value }
            case 7 where Self.equalsLowercased(name, "upgrade"):
                upgrade = true
            case 17 where Self.equalsLowercased(name, "transfer-encoding"):
                transferEncoding = true
            case 14 where Self.equalsLowercased(name, "content-length"):
                contentLengths += 1
                if contentLength == nil { contentLength = value }
            case 6 where Self.equalsLowercased(name, "expect"):
                if Self.equalsLowercased(value, "100-continue") { expectsContinue = true }
            case 13 where Self.equalsLowercased(name, "authorization"):
                authorization.append(value)
            default:
                break
            }
        }
    }
}
