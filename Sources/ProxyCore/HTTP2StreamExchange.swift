import Logging
import NIOCore
import NIOHTTP1
import ProxyHTTP2

/// One client stream on an HTTP/2 connection: the HTTP/2 front of an `Exchange`. It turns the stream's
/// events into the exchange's inputs and performs what the exchange decides: a gRPC call relayed to
/// the gRPC receiver over h2c, an OTLP/HTTP request relayed to the HTTP receiver over HTTP/1.1
/// (`UpstreamHTTP1Relay`), or a local reply.
///
/// What stays here is HTTP/2 mechanics: the stream's flow-control window (request DATA is consumed
/// only once it went on towards the receiver), request DATA queued while an upstream is acquired, and
/// the call's `grpc-timeout` timer. Owned by its `HTTP2ServerConnection` until the stream closes; holds
/// the upstream stream or relay it uses. All calls happen on the connection's event loop.
final class HTTP2StreamExchange: UpstreamH2StreamDelegate, UpstreamHTTP1RelayClient {
    private enum Upstream {
        /// No upstream: not yet asked for, or the exchange is over.
        case none
        /// Authenticating or acquiring an upstream; request DATA queues here (bounded by the stream's
        /// window, since it is not consumed yet).
        case connecting(pending: [(ByteBuffer, Bool)])
        case h2c(connection: UpstreamH2Connection, streamID: Int32)
        case h1(UpstreamHTTP1Relay)
    }

    let streamID: Int32
    /// Unowned: the connection owns its exchanges and ends them (`clientGone`) before it goes away;
    /// callbacks that can outlive it (pool acquisitions) use `pools` and `eventLoop` instead.
    private unowned let connection: HTTP2ServerConnection
    private let pools: UpstreamPools
    private let services: ProxyServices
    private let eventLoop: any EventLoop
    private var core: Exchange
    private var upstream: Upstream = .none
    private var deadlineTimer: Scheduled<Void>?
    /// Request bytes written to an HTTP/1.1 receiver that is not writable: consumed when it is.
    private var unconsumed = 0
    private var streamCounted = true
    /// Payload bytes the exchange holds (it reads payloads) whose window is not given back yet: they
    /// are, once the request is admitted, so a client can send a body larger than its window.
    private var payloadUnconsumed = 0
    /// Payload bytes the exchange holds past their window, counted towards `limits.max_buffered_bytes`.
    private var payloadHeld: HeldBytes
    /// The payload went upstream whole, its window already given back: sent DATA consumes nothing more.
    private var payloadSent = false

    init(streamID: Int32, connection: HTTP2ServerConnection) {
        self.streamID = streamID
        self.connection = connection
        self.pools = connection.pools
        self.services = connection.services
        self.eventLoop = connection.eventLoop
        // The runtime in force now judges this request, whatever the connection was accepted with.
        self.core = Exchange(
            runtime: connection.services.runtime.load(), client: .http2, peer: connection.peerAddress,
            peerCertificate: connection.peerCertificate,
            defaultAuthority: (grpc: connection.pools.grpcAuthority, http: connection.pools.httpAuthority),
            recorder: connection.services.metrics, logger: connection.logger)
        self.payloadHeld = HeldBytes(gauge: connection.services.limits.buffered)
        services.metrics.streamOpened()
    }

    /// When the receiver's time is up, for the connection's one timer; nil while nothing is awaited.
    var upstreamDeadline: NIODeadline? { core.upstreamDeadline }

    /// The client stream is gone from the connection: count it closed (once).
    private func streamEnded() {
        guard streamCounted else { return }
        streamCounted = false
        services.metrics.streamClosed()
    }

    // MARK: Request

    func start(fields: [HTTP2HeaderField], endStream: Bool) {
        let head = ExchangeRequestHead(http2: fields, endStream: endStream)
        switch core.receivedHead(head, overloaded: services.isOverloaded(runtime: core.runtime)) {
        case .reply(let reply):
            end(.reply(reply))
        case .authenticate(let credentials):
            upstream = .connecting(pending: [])
            // The deadline covers authentication and the wait for an upstream stream too.
            if let timeout = core.grpcTimeout {
                deadlineTimer = eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
                    deadlineTimer = nil
                    perform(core.deadlineExceeded(now: .now()))
                }
            }
            AuthFlow.run(
                credentials, runtime: core.runtime, services: services, eventLoop: eventLoop,
                memory: connection.credentialMemory
            ) { [self] outcome in
                credentialsDecided(outcome)
            }
        }
    }

    private func credentialsDecided(_ outcome: AuthOutcome) {
        switch core.credentialsDecided(outcome) {
        case .ignore:
            return
        case .reply(let reply):
            end(.reply(reply))
        case .admit(let tenant, let bodySoFar):
            let admission = services.admitTenantRequest(
                tenant: tenant, bodySoFar: bodySoFar, runtime: core.runtime, logger: connection.logger)
            switch core.admission(admission) {
            case .ignore:
                return
            case .reply(let reply):
                end(.reply(reply))
            case .acquire(let request):
                acquire(request)
            case .awaitBody:
                consumePayloadWindow()
            case .send(let payload):
                send(payload)
            case .read(let job):
                read(job)
            }
        }
    }

    func clientData(_ data: ByteBuffer, endStream: Bool) {
        let size = data.readableBytes
        if let tenant = core.admittedTenant { services.chargeTenantBody(tenant: tenant, bytes: size, runtime: core.runtime) }
        switch core.requestBody(data, endStream: endStream) {
        case .held:
            payloadUnconsumed += size
            if core.phase == .reading { consumePayloadWindow() }
        case .send(let payload):
            payloadUnconsumed += size
            send(payload)
        case .read(let job):
            payloadUnconsumed += size
            read(job)
        case .drop:
            connection.consume(streamID, bytes: size)
        case .end(let end):
            connection.consume(streamID, bytes: size)
            self.end(end)
        case .forward:
            switch upstream {
            case .connecting(var pending):
                pending.append((data, endStream))
                upstream = .connecting(pending: pending)
            case .h2c(let upstream, let upstreamStreamID):
                upstream.sendData(streamID: upstreamStreamID, data, endStream: endStream)
                if endStream { startResponseTimer() }
            case .h1(let relay):
                writeToHTTP1(relay, data: data, endStream: endStream, flush: true)
            case .none:
                connection.consume(streamID, bytes: size)
            }
        }
    }

    private func acquire(_ request: UpstreamRequest) {
        switch request {
        case .h2c(let fields):
            pools.grpc(on: eventLoop).acquire { [self] result in grpcUpstreamAcquired(result, fields: fields) }
        case .http1(let head):
            pools.http(on: eventLoop).acquire { [self] result in httpUpstreamAcquired(result, head: head) }
        }
    }

    /// Gives the window of the payload held so far back to the client: the request is admitted, and
    /// the body is bounded by the exchange's limits from here on.
    private func consumePayloadWindow() {
        guard payloadUnconsumed > 0 else { return }
        connection.consume(streamID, bytes: payloadUnconsumed)
        payloadHeld.add(payloadUnconsumed)
        payloadUnconsumed = 0
    }

    /// Reads a large payload on the thread pool, then goes on with the exchange's decision here.
    private func read(_ job: Exchange.PayloadJob) {
        consumePayloadWindow()
        services.threadPool.runIfActive(eventLoop: eventLoop) { job.run() }.assumeIsolated().whenComplete { [self] result in
            switch core.payloadRead(try? result.get()) {
            case .send(let payload): send(payload)
            case .reply(let reply): end(.reply(reply))
            case .ignore: break
            }
        }
    }

    /// The exchange read the payload: it goes upstream whole, as one DATA / body write that ends the request.
    private func send(_ payload: Exchange.PayloadSend) {
        consumePayloadWindow()
        payloadSent = true
        services.chargeTenantItems(tenant: payload.tenant, items: payload.items, runtime: core.runtime)
        upstream = .connecting(pending: [(payload.body, true)])
        acquire(payload.request)
    }

    /// The client took `bytes` of response DATA: give the receiver's window back by as much.
    func clientTookResponseBytes(_ bytes: Int) {
        if case .h2c(let upstream, let upstreamStreamID) = upstream {
            upstream.consume(streamID: upstreamStreamID, bytes: bytes)
        }
    }

    func clientWritabilityChanged(_ writable: Bool) {
        if case .h1(let relay) = upstream { relay.holdReads(!writable) }
    }

    /// The client reset the stream or the connection went away: cancel upstream work.
    func clientGone() {
        streamEnded()
        core.clientGone()
        cancelDeadline()
        dropUpstream()
    }

    func clientStreamClosed(errorCode: HTTP2ErrorCode) {
        streamEnded()
        if core.requestComplete && core.responseComplete {
            // Both directions ended; an h2c upstream stream closes on its own.
            cancelDeadline()
            if case .h2c = upstream { upstream = .none }
            return
        }
        if core.phase == .finished, case .none = upstream {
            cancelDeadline()
            return
        }
        // Closed while the relay still had work: treat as a cancel.
        clientGone()
    }

    /// The receiver is past its deadline (the connection's check).
    func upstreamTimedOut() {
        perform(core.upstreamTimerFired(now: .now()))
    }

    // MARK: gRPC upstream (h2c)

    private func grpcUpstreamAcquired(_ result: Result<UpstreamH2Connection, any Error>, fields: [HTTP2HeaderField]) {
        guard case .connecting(let pending) = upstream else { return }
        switch result {
        case .failure(let error):
            connection.logger.warning("gRPC upstream unavailable", metadata: ["error": "\(error)"])
            if let end = core.upstreamFailed(.connect) { self.end(end) }
        case .success(let upstream):
            let endStream = core.requestComplete && pending.allSatisfy { $0.0.readableBytes == 0 }
            let upstreamStreamID: Int32
            do {
                upstreamStreamID = try upstream.openStream(fields: fields, endStream: endStream, delegate: self)
            } catch {
                if let end = core.upstreamFailed(.stream) { self.end(end) }
                return
            }
            self.upstream = .h2c(connection: upstream, streamID: upstreamStreamID)
            core.upstreamAttached()
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
            let status = fields.first { $0.name == ":status" }.flatMap { Int($0.value) } ?? 200
            let head = core.responseHead(
                status: status, fields: fields.lazy.map { (name: $0.name, value: $0.value) }, fromHTTP2: true,
                endStream: endStream, now: .now())
            if endStream { cancelDeadline() }
            if case .http2(let out) = head { connection.submitResponse(streamID, fields: out, endStream: endStream) }
        case .trailers:
            let out = core.responseTrailers(fields.lazy.map { (name: $0.name, value: $0.value) })
            cancelDeadline()
            connection.submitTrailers(streamID, fields: out)
        case .informational, .request:
            break
        }
    }

    func upstreamData(_ data: ByteBuffer, endStream: Bool) {
        core.responseData(data, endStream: endStream, now: .now())
        if endStream { cancelDeadline() }
        connection.submitData(streamID, data, endStream: endStream)
    }

    func upstreamDataSent(bytes: Int) {
        if payloadSent {
            payloadHeld.release(bytes)
            return
        }
        connection.consume(streamID, bytes: bytes)
    }

    func upstreamStreamClosed(errorCode: HTTP2ErrorCode, reset: Bool) {
        guard case .h2c = upstream else { return }
        upstream = .none
        if core.responseComplete { return }
        if let end = core.upstreamBroke(.reset) { self.end(end) }
    }

    // MARK: OTLP/HTTP upstream (HTTP/1.1)

    private func httpUpstreamAcquired(_ result: Result<UpstreamHTTP1Connection, any Error>, head: HTTPRequestHead) {
        guard case .connecting(let pending) = upstream else {
            if case .success(let upstream) = result { pools.http(on: eventLoop).release(upstream) }
            return
        }
        switch result {
        case .failure(let error):
            connection.logger.warning("upstream unavailable", metadata: ["error": "\(error)"])
            if let end = core.upstreamFailed(.connect) { self.end(end) }
        case .success(let upstream):
            let relay = UpstreamHTTP1Relay(
                connection: upstream, pool: pools.http(on: eventLoop), declaredLength: core.declaredLength, client: self)
            relay.holdReads(!connection.isWritable)
            self.upstream = .h1(relay)
            core.upstreamAttached()
            relay.start(head: head, requestComplete: core.requestComplete)
            if core.requestComplete && pending.isEmpty { relay.send(ByteBuffer(), end: true, flush: false) }
            for (data, end) in pending { writeToHTTP1(relay, data: data, endStream: end, flush: false) }
            relay.flush()
            if core.requestComplete { startResponseTimer() }
        }
    }

    private func writeToHTTP1(_ relay: UpstreamHTTP1Relay, data: ByteBuffer, endStream: Bool, flush: Bool) {
        let size = data.readableBytes
        relay.send(data, end: endStream, flush: flush)
        if endStream { startResponseTimer() }
        if payloadSent {
            payloadHeld.releaseAll()
            return
        }
        if relay.isWritable {
            connection.consume(streamID, bytes: size + unconsumed)
            unconsumed = 0
        } else {
            unconsumed += size
        }
    }

    func relayWritabilityChanged(isWritable: Bool) {
        if isWritable && unconsumed > 0 {
            connection.consume(streamID, bytes: unconsumed)
            unconsumed = 0
        }
    }

    func relayResponseHead(_ head: HTTPResponseHead) {
        let out = core.responseHead(
            status: Int(head.status.code), fields: head.headers.lazy.map { (name: $0.name, value: $0.value) },
            endStream: false, now: .now())
        if case .http2(let fields) = out { connection.submitResponse(streamID, fields: fields, endStream: false) }
    }

    func relayResponseBody(_ buffer: ByteBuffer) {
        core.responseData(buffer, endStream: false, now: .now())
        connection.submitData(streamID, buffer, endStream: false)
    }

    func relayResponseEnded(requestWasComplete: Bool) {
        core.responseEnded()
        cancelDeadline()
        upstream = .none
        connection.submitData(streamID, connection.allocator.buffer(capacity: 0), endStream: true)
        // The receiver answered before the request ended: ask the client to stop sending (RFC 9113 §8.1).
        if !requestWasComplete { connection.submitReset(streamID, errorCode: .noError) }
    }

    func relayUpstreamClosed() {
        guard case .h1 = upstream else { return }
        upstream = .none
        if let end = core.upstreamBroke(.reset) { self.end(end) }
    }

    func relayReadComplete() {}

    // MARK: Ending

    /// Performs a timer's outcome.
    private func perform(_ action: Exchange.TimerAction) {
        switch action {
        case .none: break
        case .rearm(let deadline): connection.watchUpstream(until: deadline)
        case .end(let end): self.end(end)
        }
    }

    private func startResponseTimer() {
        core.requestSentUpstream(now: .now())
        if let deadline = core.upstreamDeadline { connection.watchUpstream(until: deadline) }
    }

    /// Ends the stream as the exchange decided: drops the upstream work, then writes the local reply,
    /// the closing trailers, or a reset.
    private func end(_ end: ExchangeEnd) {
        cancelDeadline()
        dropUpstream()
        switch end {
        case .reply(let reply):
            if reply.isGRPC {
                connection.submitResponse(streamID, fields: reply.http2Fields, endStream: true)
            } else {
                connection.submitResponse(streamID, fields: reply.http2Fields, endStream: false)
                connection.submitData(streamID, reply.body, endStream: true)
            }
            if !core.requestComplete {
                // The reply is complete; ask the client to stop sending the body (RFC 9113 §8.1).
                connection.submitReset(streamID, errorCode: .noError)
            }
        case .trailers(let fields):
            connection.submitTrailers(streamID, fields: fields)
        case .abort:
            connection.submitReset(streamID, errorCode: .cancel)
        }
    }

    /// Gives up whatever upstream work was started; queued request DATA is consumed and dropped.
    private func dropUpstream() {
        payloadHeld.releaseAll()
        if payloadUnconsumed > 0 {
            connection.consume(streamID, bytes: payloadUnconsumed)
            payloadUnconsumed = 0
        }
        switch upstream {
        case .connecting(let pending):
            if !payloadSent {
                for (data, _) in pending { connection.consume(streamID, bytes: data.readableBytes) }
            }
        case .h2c(let upstream, let upstreamStreamID):
            upstream.resetStream(upstreamStreamID, errorCode: .cancel)
        case .h1(let relay):
            relay.abort()
        case .none:
            break
        }
        upstream = .none
    }

    private func cancelDeadline() {
        deadlineTimer?.cancel()
        deadlineTimer = nil
    }
}
