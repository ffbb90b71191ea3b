import Logging
import NIOCore
import NIOHTTP1
import ProxyAuth
import ProxyTLS

/// Serves OTLP/HTTP over HTTP/1.1 on one client connection: the HTTP/1.1 front of the `Exchange`.
/// Each request gets an exchange that decides routing, authentication, admission, the upstream head,
/// relaying and the record; this handler turns NIO's HTTP/1.1 parts into its inputs and performs its
/// decisions, relaying through an `UpstreamHTTP1Relay` on the event loop's pool.
///
/// What stays here is HTTP/1.1 mechanics. It sits last in the client pipeline, right behind TLS, and
/// is the connection's HTTP/1.1 codec: it reads requests with its own strict parser
/// (`HTTP1MessageDecoder`, which owns the bytes read and not yet parsed) and writes responses straight
/// into bytes (`HTTP1ResponseEncoder`), so no request or response part crosses the pipeline. It handles
/// pipelining by parsing one request at a time: bytes of a next request that arrive while the previous
/// response is still going out stay unparsed in the decoder (with client reads held) and are parsed,
/// in order, once that response has ended. Owns at most one upstream relay at a time. Backpressure:
/// client reads are held while no upstream is attached or it cannot take more bytes, or a pipelined
/// request waits, and upstream reads are held while the client cannot, so at most about one read is
/// buffered per direction.
final class HTTP1ExchangeHandler: ChannelDuplexHandler, UpstreamHTTP1RelayClient {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        /// Between requests.
        case idle
        /// A local reply went out; the rest of the request body is read and dropped.
        case discarding
        /// Credentials are checked (possibly off the event loop) and the tenant admitted. Body parts
        /// that arrive meanwhile queue here (bounded: reads are held in this state).
        case authenticating(pending: [ByteBuffer])
        /// Admitted; waiting for an upstream connection. Body parts that arrive meanwhile queue here
        /// (bounded: reads are held in this state).
        case connecting(head: HTTPRequestHead, pending: [ByteBuffer])
        /// Admitted; the exchange collects the payload it reads until the request ends (reads flow:
        /// the exchange bounds the body).
        case reading
        /// Relaying to and from the receiver.
        case forwarding(UpstreamHTTP1Relay)
        /// The connection is closing; everything that arrives is dropped.
        case closing
    }

    /// The runtime current at accept: the connection's idle timeout. Each request is judged by the
    /// runtime in force when its head arrives (read by its `Exchange`).
    private let connectionRuntime: ProxyRuntime
    private let pool: UpstreamHTTP1Pool
    private let pools: UpstreamPools
    private let services: ProxyServices
    /// The client certificate verified in the TLS handshake, if any.
    private let peerCertificate: PeerCertificate?
    /// The connection's last accepted credential and its decisions.
    private let credentialMemory = CredentialMemory()
    private let logger: Logger

    private var context: ChannelHandlerContext?
    private var state: State = .idle {
        didSet {
            if case .idle = state { idleSince = .now() }
        }
    }
    /// The current request's exchange, from its head until the next head (before the first head, an
    /// exchange that has seen none, whose inputs do nothing). Not optional: reading a field through an
    /// optional would copy the whole value.
    private var core: Exchange
    /// When the connection last became idle (no request in flight): `http.idle_timeout` counts from here.
    private var idleSince = NIODeadline.now()
    /// Closes the connection once it has been idle for `http.idle_timeout`. One timer per connection,
    /// rescheduled when it fires, rather than a timer reset (and a write promise) on every read and write.
    private var idleCheck: Scheduled<Void>?

    // Per-request facts of the connection's framing.
    private var requestVersion: HTTPVersion = .http1_1
    private var requestMethod: HTTPMethod = .POST
    private var keepAlive = true
    /// The request parser, holding the bytes read and not yet parsed.
    private var decoder: HTTP1MessageDecoder
    private var encoder = HTTP1ResponseEncoder()
    /// Response bytes not yet handed to the channel: a relayed head waits here for the body and end
    /// that usually follow in the same read from the receiver, so a small response is one write.
    private var output: ByteBuffer?
    /// Watches the receiver through the exchange's deadline: one timer per connection, rescheduled
    /// when it fires while a response is awaited, rather than one per request.
    private var responseTimer: Scheduled<Void>?

    private var readsHeld = false
    private var pendingRead = false
    /// The server is draining: every response says `Connection: close` and the connection closes after it.
    private var draining = false

    /// `decodeRequests` is running: a response that ends meanwhile leaves the parsing to it.
    private var decoding = false

    private var requestComplete: Bool { core.requestComplete }

    /// The current request has ended but its response has not: what arrives now belongs to the next
    /// request and waits, unparsed, in the decoder.
    private var awaitsResponse: Bool {
        switch state {
        case .authenticating, .connecting, .reading: return requestComplete
        case .forwarding: return requestComplete && !core.responseComplete
        case .idle, .discarding, .closing: return false
        }
    }

    /// Request body bytes waiting for an upstream, counted for load shedding (`limits.max_buffered_bytes`).
    private var held: HeldBytes

    init(
        connectionRuntime runtime: ProxyRuntime, pools: UpstreamPools, pool: UpstreamHTTP1Pool,
        services: ProxyServices, peerCertificate: PeerCertificate?, logger: Logger
    ) {
        self.connectionRuntime = runtime
        self.pools = pools
        self.pool = pool
        // The parser enforces the header limits while it buffers, so an oversized head is refused
        // (431) before it is held in memory; the exchange checks the exact limits on the whole head.
        self.decoder = HTTP1MessageDecoder(
            maxHeaderBytes: runtime.limits.maxHeaderBytes, maxHeaderCount: runtime.limits.maxHeaderCount)
        self.services = services
        self.peerCertificate = peerCertificate
        self.logger = logger
        self.held = HeldBytes(gauge: services.limits.buffered)
        self.core = Exchange(
            runtime: runtime, client: .http1(.http1_1), peer: nil, peerCertificate: peerCertificate,
            defaultAuthority: (grpc: pools.grpcAuthority, http: pools.httpAuthority), recorder: services.metrics, logger: logger)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        idleSince = .now()
        scheduleIdleCheck(in: connectionRuntime.limits.idleTimeout, context: context)
    }

    private func scheduleIdleCheck(in delay: TimeAmount, context: ChannelHandlerContext) {
        idleCheck = context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            idleCheckFired(context: context)
        }
    }

    private func idleCheckFired(context: ChannelHandlerContext) {
        idleCheck = nil
        guard context.channel.isActive else { return }
        let timeout = connectionRuntime.limits.idleTimeout
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

    /// A new exchange for a request arriving now, judged by the runtime in force now.
    private func makeExchange(version: HTTPVersion, context: ChannelHandlerContext) -> Exchange {
        Exchange(
            runtime: services.runtime.load(), client: .http1(version), peer: peerAddress(context),
            peerCertificate: peerCertificate, defaultAuthority: (grpc: pools.grpcAuthority, http: pools.httpAuthority),
            recorder: services.metrics, logger: logger)
    }

    // MARK: Client side

    /// True while a client read is being handled: upstream writes made then are flushed once, at the
    /// end of the request or at `channelReadComplete`, instead of once per part.
    private var inClientRead = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .closing = state { return }
        decoder.feed(unwrapInboundIn(data))
        decodeRequests(context: context, inRead: true)
    }

    /// Parses and hands over what the decoder holds, one event at a time, until it needs more bytes, a
    /// request awaits its response (what follows is a pipelined request: it stays unparsed until that
    /// response has ended), or the connection closes. Outside a client read (a response ended) it then
    /// flushes what went upstream; in both cases it resumes or holds client reads.
    private func decodeRequests(context: ChannelHandlerContext, inRead: Bool) {
        guard !decoding else { return }
        decoding = true
        var delivered = false
        while !awaitsResponse {
            if case .closing = state {
                decoder.discardBuffered()
                break
            }
            guard let event = decoder.next() else { break }
            switch event {
            case .head(let head, let keepAlive):
                receivedPart(.head(head, keepAlive: keepAlive), context: context)
            case .body(let buffer):
                receivedPart(.body(buffer), context: context)
            case .end:
                receivedPart(.end, context: context)
            case .error(let cause):
                receivedError(cause, context: context)
            case .responseHead:
                // A request decoder produces no responses.
                closeNow(context: context)
            }
            delivered = true
        }
        decoding = false
        if delivered && !inRead, case .forwarding(let relay) = state { relay.flush() }
        updateReadHold(context: context)
    }

    /// One request event from the decoder.
    private enum RequestPart {
        case head(HTTPRequestHead, keepAlive: Bool)
        case body(ByteBuffer)
        case end
    }

    private func receivedPart(_ part: RequestPart, context: ChannelHandlerContext) {
        inClientRead = true
        defer { inClientRead = false }
        switch part {
        case .head(let head, let keepAlive): receivedHead(head, keepAlive: keepAlive, context: context)
        case .body(let buffer): receivedBody(buffer, end: false, context: context)
        case .end: receivedBody(context.channel.allocator.buffer(capacity: 0), end: true, context: context)
        }
    }

    private func receivedHead(_ head: HTTPRequestHead, keepAlive: Bool, context: ChannelHandlerContext) {
        guard case .idle = state else {
            // Requests are parsed one at a time (`decodeRequests`); anything else is a bug.
            closeNow(context: context)
            return
        }
        requestVersion = head.version
        requestMethod = head.method
        self.keepAlive = keepAlive && !draining
        var exchange = makeExchange(version: head.version, context: context)
        let action = exchange.receivedHead(
            ExchangeRequestHead(http1: head), overloaded: services.isOverloaded(runtime: exchange.runtime))
        core = exchange
        switch action {
        case .reply(let reply):
            send(reply, context: context)
        case .authenticate(let credentials):
            state = .authenticating(pending: [])
            updateReadHold(context: context)
            AuthFlow.run(
                credentials, runtime: exchange.runtime, services: services, eventLoop: context.eventLoop,
                memory: credentialMemory
            ) { [self] outcome in
                credentialsDecided(outcome)
            }
        }
    }

    private func credentialsDecided(_ outcome: AuthOutcome) {
        guard let context, case .authenticating(let pending) = state else { return }
        switch core.credentialsDecided(outcome) {
        case .ignore:
            return
        case .reply(let reply):
            send(reply, context: context)
        case .admit(let tenant, let bodySoFar):
            let admission = services.admitTenantRequest(
                tenant: tenant, bodySoFar: bodySoFar, runtime: core.runtime, logger: logger)
            switch core.admission(admission) {
            case .ignore:
                return
            case .reply(let reply):
                send(reply, context: context)
            case .acquire(.http1(let upstreamHead)):
                sendContinueIfExpected(context: context)
                state = .connecting(head: upstreamHead, pending: pending)
                updateReadHold(context: context)
                pool.acquire { [self] result in
                    upstreamAcquired(result)
                }
            case .awaitBody:
                sendContinueIfExpected(context: context)
                state = .reading
                updateReadHold(context: context)
            case .send(let payload):
                send(payload, context: context)
            case .read(let job):
                state = .reading
                read(job, context: context)
            case .acquire(.h2c):
                // HTTP/1.1 carries no gRPC: the exchange never routes one there.
                closeNow(context: context)
            }
        }
    }

    private func sendContinueIfExpected(context: ChannelHandlerContext) {
        guard core.expectsContinue && !requestComplete else { return }
        var out = context.channel.allocator.buffer(capacity: 32)
        encoder.writeHead(HTTPResponseHead(version: requestVersion, status: .continue), requestMethod: requestMethod, into: &out)
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }

    /// Reads a large payload on the thread pool, then goes on with the exchange's decision here.
    private func read(_ job: Exchange.PayloadJob, context: ChannelHandlerContext) {
        services.threadPool.runIfActive(eventLoop: context.eventLoop) { job.run() }.assumeIsolated().whenComplete { [self] result in
            guard let context = self.context, case .reading = state else { return }
            switch core.payloadRead(try? result.get()) {
            case .send(let payload): send(payload, context: context)
            case .reply(let reply): send(reply, context: context)
            case .ignore: break
            }
        }
    }

    /// The exchange read the payload: it goes upstream whole once a connection is had.
    private func send(_ payload: Exchange.PayloadSend, context: ChannelHandlerContext) {
        guard case .http1(let upstreamHead) = payload.request else {
            // HTTP/1.1 carries no gRPC: the exchange never routes one there.
            closeNow(context: context)
            return
        }
        services.chargeTenantItems(tenant: payload.tenant, items: payload.items, runtime: core.runtime)
        held.releaseAll()
        held.add(payload.body.readableBytes)
        state = .connecting(head: upstreamHead, pending: [payload.body])
        updateReadHold(context: context)
        pool.acquire { [self] result in
            upstreamAcquired(result)
        }
    }

    private func receivedBody(_ buffer: ByteBuffer, end: Bool, context: ChannelHandlerContext) {
        if let tenant = core.admittedTenant {
            services.chargeTenantBody(tenant: tenant, bytes: buffer.readableBytes, runtime: core.runtime)
        }
        switch core.requestBody(buffer, endStream: end) {
        case .drop:
            if case .discarding = state {
                if end {
                    state = .idle
                    if !keepAlive { closeNow(context: context) }
                } else if core.bodyBytes > core.runtime.limits.maxRequestBodySize {
                    // A refused request that keeps sending more than any accepted one could: stop reading it.
                    closeNow(context: context)
                }
            }
        case .end(let ending):
            self.end(ending, context: context)
        case .held:
            held.add(buffer.readableBytes)
        case .send(let payload):
            send(payload, context: context)
        case .read(let job):
            held.add(buffer.readableBytes)
            read(job, context: context)
        case .forward:
            switch state {
            case .authenticating(var pending):
                if !end {
                    pending.append(buffer)
                    held.add(buffer.readableBytes)
                }
                state = .authenticating(pending: pending)
            case .connecting(let upstreamHead, var pending):
                if !end {
                    pending.append(buffer)
                    held.add(buffer.readableBytes)
                }
                state = .connecting(head: upstreamHead, pending: pending)
            case .forwarding(let relay):
                relay.send(buffer, end: end, flush: end)
                if end { startResponseTimer(context: context) }
            case .idle, .discarding, .closing, .reading:
                break
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .forwarding(let relay) = state { relay.flush() }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .forwarding(let relay) = state {
            relay.holdReads(!context.channel.isWritable)
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .forwarding(let relay) = state { relay.abort() }
        responseTimer?.cancel()
        idleCheck?.cancel()
        idleCheck = nil
        held.releaseAll()
        decoder.discardBuffered()
        output = nil
        core.clientGone()
        state = .closing
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // After the connection closed: the request was already recorded as `client_gone` and no
        // reply can be written.
        if case .closing = state { return }
        // Transport or TLS failure: nothing sensible can be written any more.
        logger.debug("client connection error", metadata: ["error": "\(error)"])
        closeNow(context: context)
    }

    /// The parser refused the bytes: the request is answered and the connection closed. It reaches
    /// here in order, once any response before it has ended.
    private func receivedError(_ cause: ReplyCause, context: ChannelHandlerContext) {
        if case .closing = state { return }
        if case .idle = state {
            // Between requests: the error belongs to the next request, so the previous request's
            // exchange must not decide how to answer it.
            core = makeExchange(version: requestVersion, context: context)
        }
        end(core.unreadableRequest(cause), context: context)
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
        if readsHeld {
            pendingRead = true
        } else {
            context.read()
        }
    }

    // MARK: Upstream side

    private func upstreamAcquired(_ result: Result<UpstreamHTTP1Connection, any Error>) {
        guard let context, case .connecting(let upstreamHead, let pending) = state else {
            // The client went away or was refused while we connected: the connection is clean.
            if case .success(let connection) = result { pool.release(connection) }
            return
        }
        switch result {
        case .failure(let error):
            logger.warning("upstream unavailable", metadata: ["upstream": "\(pool.address.hostPort)", "error": "\(error)"])
            if let ending = core.upstreamFailed(.connect) { end(ending, context: context) }
        case .success(let connection):
            let relay = UpstreamHTTP1Relay(connection: connection, pool: pool, declaredLength: core.declaredLength, client: self)
            relay.holdReads(!context.channel.isWritable)
            state = .forwarding(relay)
            core.upstreamAttached()
            held.releaseAll()
            relay.start(head: upstreamHead, requestComplete: requestComplete)
            for buffer in pending { relay.send(buffer, end: false, flush: false) }
            if requestComplete { relay.send(context.channel.allocator.buffer(capacity: 0), end: true, flush: false) }
            if !inClientRead || requestComplete { relay.flush() }
            if requestComplete { startResponseTimer(context: context) }
            updateReadHold(context: context)
        }
    }

    func relayResponseHead(_ head: HTTPResponseHead) {
        guard let context else { return }
        let out = core.responseHead(
            status: Int(head.status.code), fields: head.headers.lazy.map { (name: $0.name, value: $0.value) },
            endStream: false, now: .now())
        guard case .http1(var response) = out else { return }
        response.status = head.status
        if !keepAlive { response.headers.replaceOrAdd(name: "Connection", value: "close") }
        var buffer = output ?? context.channel.allocator.buffer(capacity: 512)
        encoder.writeHead(response, requestMethod: requestMethod, into: &buffer)
        if encoder.closesToEnd && keepAlive {
            // No length for an HTTP/1.0 client: only the close can end this body. The head is
            // written again with `Connection: close`.
            keepAlive = false
            buffer = output ?? context.channel.allocator.buffer(capacity: 512)
            response.headers.replaceOrAdd(name: "Connection", value: "close")
            encoder.writeHead(response, requestMethod: requestMethod, into: &buffer)
        }
        output = buffer
    }

    /// Bodies up to this size are copied behind the head into one write; larger ones are written as
    /// they are, without a copy.
    private static let coalescedBodyBytes = 4096

    func relayResponseBody(_ buffer: ByteBuffer) {
        guard let context else { return }
        core.responseData(buffer, endStream: false, now: .now())
        if encoder.passesBodyThrough && buffer.readableBytes > Self.coalescedBodyBytes {
            writeOutput(context: context)
            context.write(wrapOutboundOut(buffer), promise: nil)
            return
        }
        var out = output ?? context.channel.allocator.buffer(capacity: buffer.readableBytes + 32)
        encoder.writeBody(buffer, into: &out)
        output = out
    }

    /// Hands what `output` holds to the channel (unflushed).
    private func writeOutput(context: ChannelHandlerContext) {
        if let out = output {
            output = nil
            context.write(wrapOutboundOut(out), promise: nil)
        }
    }

    /// Appends the end of the response to `output`, writes it and flushes.
    private func endResponse(context: ChannelHandlerContext) {
        var out = output ?? context.channel.allocator.buffer(capacity: 8)
        encoder.writeEnd(into: &out)
        output = nil
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }

    func relayResponseEnded(requestWasComplete: Bool) {
        guard let context, case .forwarding = state else { return }
        core.responseEnded()
        if !requestWasComplete {
            // The receiver answered before the body ended: the rest is read and dropped.
            state = .discarding
            endResponse(context: context)
            updateReadHold(context: context)
            return
        }
        state = keepAlive ? .idle : .closing
        endResponse(context: context)
        if keepAlive {
            // The next pipelined request, if one waited, now finds the exchange idle.
            decodeRequests(context: context, inRead: false)
        } else {
            decoder.discardBuffered()
            context.close(promise: nil)
        }
    }

    func relayReadComplete() {
        guard let context else { return }
        writeOutput(context: context)
        context.flush()
    }

    func relayWritabilityChanged(isWritable: Bool) {
        guard let context else { return }
        updateReadHold(context: context)
    }

    func relayUpstreamClosed() {
        guard let context, case .forwarding = state else { return }
        state = .idle
        if let ending = core.upstreamBroke(.reset) { end(ending, context: context) }
    }

    // MARK: Helpers

    private func startResponseTimer(context: ChannelHandlerContext) {
        core.requestSentUpstream(now: .now())
        // A timer left from an earlier request fires no later than this one would, and reschedules.
        if responseTimer == nil, let deadline = core.upstreamDeadline {
            scheduleResponseTimer(at: deadline, context: context)
        }
    }

    private func scheduleResponseTimer(at deadline: NIODeadline, context: ChannelHandlerContext) {
        responseTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            responseTimedOut()
        }
    }

    private func responseTimedOut() {
        responseTimer = nil
        guard let context else { return }
        switch core.upstreamTimerFired(now: .now()) {
        case .none:
            break
        case .rearm(let deadline):
            scheduleResponseTimer(at: deadline, context: context)
        case .end(let ending):
            end(ending, context: context)
        }
    }

    /// Ends the request as the exchange decided: a local reply, or a close when part of the response
    /// is with the client already (the only honest signal left on HTTP/1.1).
    private func end(_ ending: ExchangeEnd, context: ChannelHandlerContext) {
        switch ending {
        case .reply(let reply):
            if case .forwarding(let relay) = state { relay.abort() }
            send(reply, context: context)
        case .trailers, .abort:
            closeNow(context: context)
        }
    }

    /// Writes a local reply. When the request body has not been read yet it is dropped as it arrives
    /// (keeping the connection), unless the reply closes the connection.
    private func send(_ reply: ExchangeReply, context: ChannelHandlerContext) {
        let closeAfter = reply.closeConnection || !keepAlive
        held.releaseAll()
        let head = reply.reply.head(
            version: requestVersion, encoding: reply.encoding, bodyLength: reply.body.readableBytes, close: closeAfter)
        // A relayed head not yet written cannot precede a local reply: the exchange replies only
        // before the response started.
        output = nil
        var out = context.channel.allocator.buffer(capacity: 256 + reply.body.readableBytes)
        encoder.writeHead(head, requestMethod: requestMethod, into: &out)
        encoder.writeBody(reply.body, into: &out)
        encoder.writeEnd(into: &out)
        if closeAfter {
            state = .closing
            decoder.discardBuffered()
            context.writeAndFlush(wrapOutboundOut(out)).assumeIsolated().whenComplete { [self] _ in
                lingeringClose(context: context)
            }
        } else {
            state = requestComplete ? .idle : .discarding
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
            // The next pipelined request, if one waited, now finds this one finished.
            decodeRequests(context: context, inRead: false)
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
        core.clientGone()
        if case .forwarding(let relay) = state { relay.abort() }
        held.releaseAll()
        decoder.discardBuffered()
        output = nil
        state = .closing
        context.close(promise: nil)
    }

    /// Holds client reads while waiting for an upstream connection or while it cannot take more, and
    /// while a pipelined request waits unparsed for the response before it.
    private func updateReadHold(context: ChannelHandlerContext) {
        let stateHolds: Bool
        switch state {
        case .authenticating, .connecting: stateHolds = true
        case .forwarding(let relay): stateHolds = !relay.isWritable
        case .idle, .discarding, .closing, .reading: stateHolds = false
        }
        readsHeld = stateHolds || (awaitsResponse && decoder.hasBufferedBytes)
        if !readsHeld && pendingRead {
            pendingRead = false
            context.read()
        }
    }
}
