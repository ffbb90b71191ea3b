import ProxyOTLP
import Logging
import NIOCore
import NIOHTTP1
import ProxyAuth
import ProxyHTTP2
import ProxyTLS

/// Where an exchange reports what it counted: the request record (access log line and request
/// metrics) and the counters of refusals. `ProxyMetrics` in the proxy; a list in the tests.
protocol ExchangeRecorder: AnyObject, Sendable {
    func requestFinished(_ record: RequestRecord)
    func authFailed(method: String, reason: String)
    func upstreamError(kind: String)
    func loadShed()
}

extension ProxyMetrics: ExchangeRecorder {}

/// What a tenant's rates said about an authenticated request.
enum TenantAdmission: Equatable, Sendable {
    case admitted
    case limited(retryAfter: Duration)
}

/// A reply the proxy makes itself, ready for the front to write in its protocol.
struct ExchangeReply {
    var cause: ReplyCause
    var reply: LocalReply
    /// gRPC: a trailers-only response (`reply.grpcTrailersOnly`); otherwise a status with `body`.
    var isGRPC: Bool
    /// The `google.rpc.Status` body in the request's encoding (empty for gRPC).
    var body: ByteBuffer
    var encoding: OTLPEncoding
    /// HTTP/1.1: the connection cannot carry another request after this reply (its framing is in
    /// doubt, or the client may still be sending a body nobody reads).
    var closeConnection: Bool

    /// The response fields of this reply on HTTP/2 (`:status` first; for gRPC the trailers-only form).
    var http2Fields: [HTTP2HeaderField] {
        if isGRPC { return reply.grpcTrailersOnly }
        var fields = [
            HTTP2HeaderField(name: ":status", value: String(reply.status.code)),
            HTTP2HeaderField(name: "content-type", value: encoding == .json ? "application/json" : "application/x-protobuf"),
            HTTP2HeaderField(name: "content-length", value: String(body.readableBytes)),
        ]
        for (name, value) in reply.extraHeaders { fields.append(HTTP2HeaderField(name: name.lowercased(), value: value)) }
        return fields
    }
}

/// How a request that cannot go on ends on the client side.
enum ExchangeEnd {
    /// Nothing was sent to the client yet: this local reply.
    case reply(ExchangeReply)
    /// The gRPC response started and the client holds only whole messages: end the call with these
    /// trailers (UNAVAILABLE, which exporters retry) instead of a reset that reads as INTERNAL.
    case trailers([HTTP2HeaderField])
    /// Part of the response is with the client: only a reset (HTTP/2) or a close (HTTP/1.1) can say
    /// it is incomplete.
    case abort
}

/// The per-request policy, once, for both fronts: route → shed → authenticate → admit → build the
/// upstream request → relay → finish (the access log line and the metrics).
///
/// A value with mutating methods, one per input; each returns what the front must do. It never
/// touches a channel, a timer or a pool: the HTTP/1.1 front (`HTTP1ExchangeHandler`) and the HTTP/2
/// front (`HTTP2StreamExchange`) translate their protocol's events into these calls and perform the
/// results, in order. Tested without channels (`ExchangeTests`).
///
/// Every request is judged by `runtime`, the runtime in force when its head arrived (`RuntimeInForce`),
/// never by the one its connection was accepted with.
struct Exchange {
    enum Phase: Equatable {
        /// Waiting for the request head.
        case head
        /// Credentials are being checked (possibly off the event loop).
        case authenticating
        /// Authenticated; the tenant's rates are asked.
        case admitting
        /// Admitted; the payload the proxy reads is still arriving.
        case reading
        /// Admitted; an upstream connection or stream is being acquired.
        case connecting
        /// The request goes to the receiver and its response comes back.
        case forwarding
        /// A local reply went out, the response ended, or the client went away.
        case finished
    }

    let runtime: ProxyRuntime
    let client: ClientProtocol
    private let peerCertificate: PeerCertificate?
    private let recorder: any ExchangeRecorder
    private let logger: Logger
    /// The receivers' authorities, for a request that names none.
    private let defaultAuthority: (grpc: String, http: String)

    private(set) var phase: Phase = .head
    private(set) var route: ExchangeRoute?
    /// The request's OTLP/HTTP encoding, which a local reply's body follows.
    private(set) var encoding: OTLPEncoding = .protobuf
    private(set) var requestComplete = false
    private(set) var responseStarted = false
    private(set) var responseComplete = false
    /// Request body bytes received from the client.
    private(set) var bodyBytes = 0
    /// The OTLP/HTTP request's declared Content-Length.
    private(set) var declaredLength: Int?
    /// An HTTP/1.1 `Expect: 100-continue`.
    private(set) var expectsContinue = false
    /// The client's `grpc-timeout`: the call's deadline, covering authentication and the wait for an upstream.
    private(set) var grpcTimeout: TimeAmount?
    /// The tenant of the admitted request, whose byte budget its body is charged to.
    private(set) var admittedTenant: String?
    private var head: ExchangeRequestHead?
    private var authority = ""
    private var decision: AuthDecision?
    private var requestScanner: GRPCMessageScanner?
    /// The payload being collected, when the runtime reads payloads.
    private var reader: PayloadReader?
    /// The payload is being read off the event loop.
    private(set) var readingOffloaded = false
    /// Follows the gRPC response messages relayed so far, to know whether the client holds only whole
    /// messages when the receiver goes away mid-response.
    private var responseScanner = GRPCMessageScanner(maxMessageSize: .max)
    private var log: RequestLog
    /// Since when the request has waited for the receiver (the request ended upstream); nil while
    /// nothing is awaited from it.
    private(set) var responseWaitSince: NIODeadline?
    /// When the receiver last sent part of the response.
    private var lastUpstreamActivity = NIODeadline.uptimeNanoseconds(0)

    init(
        runtime: ProxyRuntime, client: ClientProtocol, peer: String?, peerCertificate: PeerCertificate?,
        defaultAuthority: (grpc: String, http: String), recorder: any ExchangeRecorder, logger: Logger
    ) {
        self.runtime = runtime
        self.client = client
        self.peerCertificate = peerCertificate
        self.defaultAuthority = defaultAuthority
        self.recorder = recorder
        self.logger = logger
        let transport: String
        switch client {
        case .http1: transport = "http/1.1"
        case .http2: transport = "h2"
        }
        self.log = RequestLog(transport: transport, peer: peer)
    }

    var isGRPC: Bool {
        if case .grpc = route { return true }
        return false
    }

    private var isHTTP1: Bool {
        if case .http1 = client { return true }
        return false
    }

    // MARK: Request head

    /// What to do with a request head.
    enum HeadAction {
        case reply(ExchangeReply)
        /// Run the authenticator of `runtime` on these credentials, then call `credentialsDecided`.
        case authenticate(RequestCredentials)
    }

    /// Routes and checks the head; `overloaded` is whether the proxy holds more than
    /// `limits.max_buffered_bytes` now (the request is then shed).
    mutating func receivedHead(_ head: ExchangeRequestHead, overloaded: Bool) -> HeadAction {
        precondition(phase == .head, "one head per exchange")
        requestComplete = head.endStream
        let facts = RequestHeadFacts(head)
        let limits = runtime.limits
        let grpc: Bool
        switch client {
        case .http1(let version):
            grpc = false
            if facts.count > limits.maxHeaderCount || facts.bytes > limits.maxHeaderBytes {
                return .reply(localReply(.headersTooLarge, close: true))
            }
            // Framing the proxy does not guess at: a protocol switch (`Upgrade`), and Transfer-Encoding
            // on HTTP/1.0, which RFC 9112 §6.1 makes faulty framing.
            if facts.upgrade || (version.major == 1 && version.minor == 0 && facts.transferEncoding) {
                return .reply(localReply(.malformed(.ambiguousFraming), close: true))
            }
            // Exactly one Host (RFC 9112 §3.2): a receiver may pick either of two.
            if facts.hosts > 1 { return .reply(localReply(.malformed(.conflictingHost), close: true)) }
            if facts.hosts == 0 && (version.major > 1 || version.minor >= 1) {
                return .reply(localReply(.malformed(.missingHost), close: true))
            }
            expectsContinue = facts.expectsContinue
        case .http2:
            grpc = GRPC.isGRPC(contentType: facts.contentType)
            if grpc { log.setTransport("grpc") }
            // `:authority` is the authority; a `host` field may only repeat it (RFC 9113 §8.3.1).
            if facts.hosts > 1 || (facts.hosts == 1 && head.authority != nil && facts.host != head.authority) {
                if grpc { route = .grpc(.traces) }
                return .reply(localReply(.malformed(.conflictingHost), close: false))
            }
        }

        if grpc {
            guard let signal = OTLPSignal(grpcPath: head.target), head.method == "POST" else {
                route = .grpc(.traces)
                return .reply(localReply(.unknownMethod, close: false))
            }
            route = .grpc(signal)
            log.setSignal(signal)
            requestScanner = GRPCMessageScanner(maxMessageSize: limits.maxRecvMsgSize)
            grpcTimeout = GRPC.timeout(facts.grpcTimeout)
            authority = head.authority ?? facts.host ?? defaultAuthority.grpc
        } else {
            encoding = OTLPEncoding(contentType: facts.contentType)
            guard let signal = OTLPSignal(httpTarget: head.target) else {
                return .reply(localReply(.unknownPath, close: false))
            }
            route = .http(signal)
            log.setSignal(signal)
            guard head.method == "POST" else { return .reply(localReply(.methodNotAllowed, close: false)) }
            if facts.contentLengths > 1 {
                return .reply(localReply(.malformed(.duplicateContentLength), close: true))
            }
            declaredLength = facts.contentLength.flatMap { Int($0) }
            if let declared = declaredLength, declared > limits.maxRequestBodySize {
                return .reply(localReply(.bodyTooLarge, close: true))
            }
            authority = head.authority ?? facts.host ?? defaultAuthority.http
        }
        if overloaded { return .reply(localReply(.shed, close: false)) }
        if runtime.payloads.reads, let route {
            switch PayloadReader.make(
                signal: route.signal, isGRPC: grpc, contentType: facts.contentType, contentEncodings: facts.contentEncodings,
                grpcEncoding: facts.grpcEncoding, limit: grpc ? limits.maxRecvMsgSize : limits.maxRequestBodySize)
            {
            case .success(let made): reader = made
            case .failure(let refusal): return .reply(localReply(.payloadRefused(refusal), close: false))
            }
        }
        self.head = head
        phase = .authenticating
        return .authenticate(
            RequestCredentials(
                peerCertificate: peerCertificate, authorization: facts.authorization,
                signal: route!.signal))
    }

    // MARK: Authentication and admission

    enum DecidedAction {
        case reply(ExchangeReply)
        /// Ask the tenant's rates (`bodySoFar` request bytes arrived meanwhile), then call `admission`.
        case admit(tenant: String, bodySoFar: Int)
        /// The exchange ended meanwhile (the client went away, a limit refused the body): nothing to do.
        case ignore
    }

    mutating func credentialsDecided(_ outcome: AuthOutcome) -> DecidedAction {
        guard phase == .authenticating else { return .ignore }
        let signal = route?.signal.rawValue ?? ""
        switch outcome {
        case .allowed(let allowed):
            decision = allowed
            log.authenticated(allowed)
            phase = .admitting
            return .admit(tenant: allowed.tenant, bodySoFar: bodyBytes)
        case .refused(let failure):
            log.authFailed(failure, recorder: recorder)
            logger.info(
                "request refused",
                metadata: ["signal": "\(signal)", "auth.result": "failure", "auth.reason": "\(failure.reason)"])
            return .reply(localReply(.authenticationFailed(failure), close: expectsContinue && !requestComplete))
        case .unavailable(let reason):
            log.authUnavailable(reason: reason)
            logger.warning("request not authenticated", metadata: ["signal": "\(signal)", "auth.reason": "\(reason)"])
            return .reply(
                localReply(.authenticationUnavailable(reason: reason), close: expectsContinue && !requestComplete))
        }
    }

    enum AdmittedAction {
        case reply(ExchangeReply)
        /// Acquire an upstream for this request head, then call `upstreamAttached` or `upstreamFailed`.
        case acquire(UpstreamRequest)
        /// The payload is read: acquire an upstream for this head and send it this whole body.
        case send(PayloadSend)
        /// Admitted; the payload the proxy reads has not all arrived (`requestBody` decides).
        case awaitBody
        /// Run this job off the event loop (a large payload), then call `payloadRead`.
        case read(PayloadJob)
        case ignore
    }

    /// What reading a payload led to.
    enum PayloadOutcome {
        case send(PayloadSend)
        case reply(ExchangeReply)
        /// The exchange ended while the payload was read (the client went away).
        case ignore
    }

    /// Reading a payload that is large enough to be worth a thread hop: the front runs `run()` on the
    /// thread pool and hands the result to `payloadRead` on its event loop, so decompressing and editing
    /// megabytes never stalls the other requests of the event loop.
    struct PayloadJob: Sendable {
        let reader: PayloadReader
        let attributes: [ResourceAttribute]

        func run() -> Result<PayloadReader.Read, PayloadRefusal> { reader.read(setting: attributes) }
    }

    /// Bodies read on the event loop: up to this many bytes collected, or a quarter of it compressed
    /// (for OTLP/JSON, a sixteenth of each).
    static let inlineReadLimit = 256 * 1024

    /// A read payload on its way upstream: the head, the whole body, and the items to charge.
    struct PayloadSend {
        var request: UpstreamRequest
        var body: ByteBuffer
        var tenant: String
        var items: Int
    }

    mutating func admission(_ admission: TenantAdmission) -> AdmittedAction {
        guard phase == .admitting, let decision, let head, let route else { return .ignore }
        if case .limited(let retryAfter) = admission {
            return .reply(localReply(.rateLimited(retryAfter: retryAfter), close: expectsContinue && !requestComplete))
        }
        admittedTenant = decision.tenant
        if reader != nil {
            phase = .reading
            guard requestComplete else { return .awaitBody }
            switch startReading() {
            case .send(let send): return .send(send)
            case .reply(let reply): return .reply(reply)
            case .ignore: return .ignore
            case .offload(let job): return .read(job)
            }
        }
        phase = .connecting
        self.head = nil
        logger.debug(
            "request accepted",
            metadata: ["signal": "\(route.signal.rawValue)", "principal": "\(decision.principal.name)", "tenant": "\(decision.tenant)"])
        return .acquire(
            runtime.headerPolicy.upstreamRequest(
                route, head: head, authority: authority, tenant: decision.tenant, extra: decision.headers,
                declaresLength: declaredLength != nil))
    }

    // MARK: Request body

    enum BodyAction {
        /// Send it on (or keep it for the upstream being acquired).
        case forward
        /// The exchange keeps it (it reads the payload); the front may give flow control back once
        /// the request is admitted (`phase == .reading`).
        case held
        /// The payload is read: acquire an upstream and send it this whole body.
        case send(PayloadSend)
        /// Run this job off the event loop (a large payload), then call `payloadRead`.
        case read(PayloadJob)
        /// The exchange is over: drop it (give the window back).
        case drop
        case end(ExchangeEnd)
    }

    /// A chunk of the request body; `endStream` when it is the last (an empty chunk may only end it).
    mutating func requestBody(_ data: ByteBuffer, endStream: Bool) -> BodyAction {
        if endStream { requestComplete = true }
        bodyBytes += data.readableBytes
        if phase == .finished { return .drop }
        if var scanner = requestScanner {
            let outcome = scanner.scan(data)
            requestScanner = scanner
            if case .tooLarge = outcome { return .end(refuse(.messageTooLarge, close: true)) }
        } else if bodyBytes > runtime.limits.maxRequestBodySize {
            return .end(refuse(.bodyTooLarge, close: true))
        }
        guard reader != nil else { return .forward }
        reader!.append(data)
        guard endStream, phase == .reading else { return .held }
        switch startReading() {
        case .send(let send): return .send(send)
        case .reply(let reply): return .end(.reply(reply))
        case .ignore: return .drop
        case .offload(let job): return .read(job)
        }
    }

    private enum ReadingStart {
        case send(PayloadSend)
        case reply(ExchangeReply)
        case ignore
        case offload(PayloadJob)
    }

    /// Reads the whole payload of an admitted request here, or hands out the job that reads a large one.
    private mutating func startReading() -> ReadingStart {
        guard let reader, let decision else { preconditionFailure("a payload is read once the request is admitted") }
        let attributes = runtime.payloads.attributes(tenant: decision.tenant, principal: decision.principal.name)
        let size = reader.collected.readableBytes
        // Compressed bytes expand, and OTLP/JSON costs far more per byte than protobuf: both leave the
        // event loop sooner.
        let inlineLimit = reader.encoding == .json ? Self.inlineReadLimit / 16 : Self.inlineReadLimit
        if size >= inlineLimit || (reader.coding != .identity && size >= inlineLimit / 4) {
            readingOffloaded = true
            return .offload(PayloadJob(reader: reader, attributes: attributes))
        }
        switch payloadRead(reader.read(setting: attributes)) {
        case .send(let send): return .send(send)
        case .reply(let reply): return .reply(reply)
        case .ignore: return .ignore
        }
    }

    /// What reading the payload found (on the event loop, or a job's result): the payload goes upstream
    /// with the head built for it, or the client gets the refusal. Nil result: the job could not run
    /// (shutting down), answered as retryable.
    mutating func payloadRead(_ result: Result<PayloadReader.Read, PayloadRefusal>?) -> PayloadOutcome {
        guard phase == .reading, let reader, let decision, let head, let route else { return .ignore }
        self.reader = nil
        self.head = nil
        let read: PayloadReader.Read
        switch result {
        case .success(let done): read = done
        case nil:
            return .reply(localReply(.shed, close: false))
        case .failure(let refusal):
            logger.info(
                "payload refused",
                metadata: ["signal": "\(route.signal.rawValue)", "tenant": "\(decision.tenant)", "reason": "\(refusal)"])
            return .reply(localReply(.payloadRefused(refusal), close: false))
        }
        log.payloadRead(items: read.items, decodedBytes: read.decodedBytes)
        phase = .connecting
        let body = read.body ?? reader.collected
        if read.body != nil && !isGRPC { declaredLength = body.readableBytes }
        let request = runtime.headerPolicy.upstreamRequest(
            route, head: head, authority: authority, tenant: decision.tenant, extra: decision.headers,
            declaresLength: declaredLength != nil, rewrittenLength: read.body?.readableBytes)
        return .send(PayloadSend(request: request, body: body, tenant: decision.tenant, items: read.items))
    }

    // MARK: Upstream

    mutating func upstreamAttached() {
        guard phase == .connecting else { return }
        phase = .forwarding
    }

    /// No upstream connection or stream could be had.
    mutating func upstreamFailed(_ failure: UpstreamFailure) -> ExchangeEnd? {
        guard phase == .connecting else { return nil }
        logger.warning("upstream unavailable", metadata: ["kind": "\(failure.rawValue)"])
        return refuse(.upstreamUnavailable(failure), close: !requestComplete)
    }

    /// The whole request went to the receiver: its response is awaited from `now` on.
    mutating func requestSentUpstream(now: NIODeadline) {
        guard requestComplete, responseWaitSince == nil, !responseComplete else { return }
        responseWaitSince = now
        if responseStarted { lastUpstreamActivity = now }
    }

    /// A response head (status 200 and up) in the client's protocol, with the proxy's response rules applied.
    enum ClientResponseHead {
        case http1(HTTPResponseHead)
        case http2([HTTP2HeaderField])
    }

    /// `fromHTTP2`: the receiver speaks HTTP/2 (h2c), whose messages cannot carry `Connection`.
    mutating func responseHead(
        status: Int, fields: some Sequence<(name: String, value: String)>, fromHTTP2: Bool = false, endStream: Bool,
        now: NIODeadline
    ) -> ClientResponseHead {
        lastUpstreamActivity = now
        responseStarted = true
        log.responseStarted(status: status)
        let policy = runtime.headerPolicy
        let out: ClientResponseHead
        switch client {
        case .http1(let version):
            // Pairs made into headers once (`HTTPHeaders.add` would check every name again).
            var pairs: [(String, String)] = []
            pairs.reserveCapacity(12)
            let nominated = fromHTTP2 ? [] : HeaderPolicy.connectionNominated(pairs: fields)
            policy.forEachResponseField(fields, nominated: nominated, namesAreLowercase: fromHTTP2) { name, _, value in pairs.append((name, value)) }
            out = .http1(HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: status), headers: HTTPHeaders(pairs)))
        case .http2:
            var out2 = [HTTP2HeaderField(name: ":status", value: String(status))]
            out2 += policy.clientResponseFields(from: fields, fromHTTP2: fromHTTP2)
            out = .http2(out2)
        }
        if endStream {
            log.grpcStatus(GRPC.status(in: fields))
            finishResponse()
        }
        return out
    }

    mutating func responseData(_ data: ByteBuffer, endStream: Bool, now: NIODeadline) {
        lastUpstreamActivity = now
        log.sent(data.readableBytes)
        if isGRPC { _ = responseScanner.scan(data) }
        if endStream { finishResponse() }
    }

    /// Response trailers for the client (gRPC status); the response ends with them.
    mutating func responseTrailers(_ fields: some Sequence<(name: String, value: String)>) -> [HTTP2HeaderField] {
        log.grpcStatus(GRPC.status(in: fields))
        finishResponse()
        // Trailers come only from the h2c receiver.
        return runtime.headerPolicy.clientResponseFields(from: fields, fromHTTP2: true)
    }

    /// The receiver's HTTP/1.1 response ended.
    mutating func responseEnded() {
        finishResponse()
    }

    private mutating func finishResponse() {
        guard !responseComplete else { return }
        responseComplete = true
        responseWaitSince = nil
        phase = .finished
        finish(.forwarded)
    }

    /// The receiver reset, closed or failed while this request used it.
    mutating func upstreamBroke(_ failure: UpstreamFailure) -> ExchangeEnd? {
        guard phase == .forwarding || phase == .connecting, !responseComplete else { return nil }
        responseWaitSince = nil
        guard responseStarted else {
            if failure == .timeout {
                logger.warning("upstream timed out")
                return refuse(.upstreamTimeout, close: !requestComplete)
            }
            logger.warning(
                isGRPC ? "gRPC upstream stream closed before responding" : "upstream closed before responding",
                metadata: ["kind": "\(failure.rawValue)"])
            return refuse(.upstreamUnavailable(failure), close: !requestComplete)
        }
        if failure == .timeout {
            logger.warning("upstream stalled mid-response")
        } else {
            logger.warning(
                isGRPC ? "gRPC upstream stream closed before the response ended" : "upstream closed before the response ended",
                metadata: ["kind": "\(failure.rawValue)"])
        }
        recorder.upstreamError(kind: failure.rawValue)
        phase = .finished
        if isGRPC, case .http2 = client, responseScanner.atMessageBoundary {
            let unavailable = LocalReply.upstreamUnavailable
            log.grpcStatus(unavailable.rpcCode)
            finish(.upstreamError(failure))
            return .trailers([
                HTTP2HeaderField(name: "grpc-status", value: String(unavailable.rpcCode)),
                HTTP2HeaderField(name: "grpc-message", value: GRPC.percentEncoded(unavailable.message)),
            ])
        }
        finish(.upstreamError(failure))
        return .abort
    }

    // MARK: Timers

    /// When the receiver's time is up; nil while nothing is awaited from it. Before the response:
    /// `upstream.timeout` after the request ended; once it started: after the last part.
    var upstreamDeadline: NIODeadline? {
        guard let since = responseWaitSince, !responseComplete else { return nil }
        let silentSince = responseStarted ? max(since, lastUpstreamActivity) : since
        return silentSince + runtime.limits.upstreamTimeout
    }

    enum TimerAction {
        case none
        /// Check again at this deadline.
        case rearm(NIODeadline)
        /// The receiver is given up on: end the exchange so (and drop its upstream).
        case end(ExchangeEnd)
    }

    /// The front's receiver timer fired at `now`.
    mutating func upstreamTimerFired(now: NIODeadline) -> TimerAction {
        guard let deadline = upstreamDeadline else { return .none }
        if deadline > now { return .rearm(deadline) }
        return upstreamBroke(.timeout).map(TimerAction.end) ?? .none
    }

    /// The client's `grpc-timeout` passed. Once the response has started, the receiver is only given up
    /// on after `upstream.timeout` of silence.
    mutating func deadlineExceeded(now: NIODeadline) -> TimerAction {
        guard !responseComplete, phase != .finished else { return .none }
        if responseStarted {
            let resume = lastUpstreamActivity + runtime.limits.upstreamTimeout
            if now < resume {
                if responseWaitSince == nil { responseWaitSince = lastUpstreamActivity }
                return .rearm(resume)
            }
        }
        if phase == .forwarding || responseStarted {
            return upstreamBroke(.timeout).map(TimerAction.end) ?? .none
        }
        // Still authenticating or waiting for an upstream: the call's deadline is up all the same.
        logger.warning("upstream timed out")
        return .end(refuse(.upstreamTimeout, close: !requestComplete))
    }

    // MARK: Client

    /// The client reset its stream or the connection went away.
    mutating func clientGone() {
        responseWaitSince = nil
        // Without a head there is no request to record.
        guard phase != .finished, phase != .head else { return }
        phase = .finished
        finish(.clientGone)
    }

    /// A reply for a request whose head the front could not read at all (an HTTP/1.1 parser error).
    mutating func unreadableRequest(_ cause: ReplyCause) -> ExchangeEnd {
        refuse(cause, close: true)
    }

    // MARK: Replies and the record

    /// Ends the exchange with a local reply, or with an abort when a response already started.
    private mutating func refuse(_ cause: ReplyCause, close: Bool) -> ExchangeEnd {
        guard !responseStarted else {
            phase = .finished
            responseWaitSince = nil
            if case .upstreamError(let failure) = cause.outcome { recorder.upstreamError(kind: failure.rawValue) }
            finish(cause.outcome)
            return .abort
        }
        return .reply(localReply(cause, close: close))
    }

    private mutating func localReply(_ cause: ReplyCause, close: Bool) -> ExchangeReply {
        phase = .finished
        responseStarted = true
        responseComplete = true
        responseWaitSince = nil
        let reply = cause.reply(challenges: runtime.authenticator.challenges)
        let grpc = isGRPC
        let body = grpc ? ByteBuffer() : reply.body(encoding: encoding, allocator: ByteBufferAllocator())
        if grpc {
            log.responseStarted(status: 200)
            log.grpcStatus(reply.rpcCode)
        } else {
            log.responseStarted(status: Int(reply.status.code))
            log.sent(body.readableBytes)
        }
        switch cause {
        case .shed: recorder.loadShed()
        case .upstreamUnavailable(let failure): recorder.upstreamError(kind: failure.rawValue)
        case .upstreamTimeout: recorder.upstreamError(kind: UpstreamFailure.timeout.rawValue)
        default: break
        }
        finish(cause.outcome)
        return ExchangeReply(cause: cause, reply: reply, isGRPC: grpc, body: body, encoding: encoding, closeConnection: close)
    }

    private mutating func finish(_ outcome: RequestOutcome) {
        log.finish(outcome: outcome, bytesIn: bodyBytes, recorder: recorder)
    }

    /// The record as it stands (for tests).
    var record: RequestRecord { log.record }
}
