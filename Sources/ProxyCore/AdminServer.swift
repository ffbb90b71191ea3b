import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import ProxyConfig

/// The plaintext operations listener (`admin.endpoint`): `GET /metrics` (Prometheus text format),
/// `GET /healthz` (the process serves requests) and `GET /readyz` (not draining, and both upstream
/// endpoints accept a TCP connection).
///
/// Owns its listening channel; `start` binds it, `shutdown` closes it. Keep it running through a
/// drain so orchestrators see `/readyz` turn 503 before the process exits.
public final class AdminServer: Sendable {
    private let endpoint: Endpoint
    private let group: any EventLoopGroup
    private let logger: Logger
    private let routes: AdminRoutes
    private let channel = NIOLockedValueBox<(any Channel)?>(nil)

    /// - Parameters:
    ///   - upstreams: the endpoints `/readyz` probes, with the config key that names each.
    ///   - isDraining: read on every `/readyz`; true answers 503 at once.
    public init(
        endpoint: Endpoint, group: any EventLoopGroup, metrics: ProxyMetrics,
        upstreams: [(key: String, endpoint: Endpoint)], isDraining: @escaping @Sendable () -> Bool,
        probeInterval: TimeAmount = .seconds(2), logger: Logger
    ) {
        self.endpoint = endpoint
        self.group = group
        self.logger = logger
        self.routes = AdminRoutes(
            metrics: metrics, isDraining: isDraining,
            probe: UpstreamProbe(targets: upstreams, group: group, interval: probeInterval))
    }

    /// Binds the listener; returns the bound address (port 0 resolves to the chosen port).
    public func start() async throws -> SocketAddress {
        let routes = self.routes
        let bound = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
                    try sync.addHandler(IdleStateHandler(allTimeout: .seconds(60)))
                    try sync.addHandler(AdminHandler(routes: routes))
                }
            }
            .bind(host: endpoint.host, port: endpoint.port)
            .get()
        channel.withLockedValue { $0 = bound }
        guard let address = bound.localAddress else {
            throw StartupError(message: "admin.endpoint: the listener has no local address")
        }
        logger.info("listening", metadata: ["listener": "admin", "address": "\(address.hostPort)"])
        return address
    }

    public func shutdown() async {
        let bound = channel.withLockedValue { channel in
            defer { channel = nil }
            return channel
        }
        try? await bound?.close()
    }
}

/// What each admin path answers. Shared by every admin connection.
struct AdminRoutes: Sendable {
    let metrics: ProxyMetrics
    let isDraining: @Sendable () -> Bool
    let probe: UpstreamProbe

    struct Response: Sendable {
        var status: HTTPResponseStatus
        var contentType: String = "text/plain; charset=utf-8"
        var body: String
    }

    static let prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

    /// The response for `method` and `path`; `/readyz` may wait for an upstream probe.
    func respond(method: HTTPMethod, uri: String, on eventLoop: any EventLoop) -> EventLoopFuture<Response> {
        let path = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        let known = ["/metrics", "/healthz", "/readyz"]
        guard known.contains(path) else {
            return eventLoop.makeSucceededFuture(
                Response(status: .notFound, body: "not found: the admin paths are /metrics, /healthz and /readyz\n"))
        }
        guard method == .GET || method == .HEAD else {
            return eventLoop.makeSucceededFuture(Response(status: .methodNotAllowed, body: "use GET\n"))
        }
        switch path {
        case "/metrics":
            return eventLoop.makeSucceededFuture(
                Response(status: .ok, contentType: Self.prometheusContentType, body: metrics.exposition()))
        case "/healthz":
            return eventLoop.makeSucceededFuture(Response(status: .ok, body: "ok\n"))
        default:
            if isDraining() {
                return eventLoop.makeSucceededFuture(Response(status: .serviceUnavailable, body: "draining\n"))
            }
            return probe.unreachable(on: eventLoop).map { [isDraining] unreachable in
                if isDraining() { return Response(status: .serviceUnavailable, body: "draining\n") }
                if unreachable.isEmpty { return Response(status: .ok, body: "ready\n") }
                return Response(
                    status: .serviceUnavailable,
                    body: unreachable.map { "unreachable: \($0)\n" }.joined())
            }
        }
    }
}

/// Checks that each upstream endpoint accepts a TCP connection, at most once per `interval`: probes
/// in between get the last result, and concurrent callers share one probe in flight.
final class UpstreamProbe: Sendable {
    private struct State {
        var checkedAt: NIODeadline?
        var unreachable: [String] = []
        var inFlight: EventLoopFuture<[String]>?
    }

    private let targets: [(key: String, endpoint: Endpoint)]
    private let group: any EventLoopGroup
    private let interval: TimeAmount
    private let state = NIOLockedValueBox(State())

    init(targets: [(key: String, endpoint: Endpoint)], group: any EventLoopGroup, interval: TimeAmount) {
        self.targets = targets
        self.group = group
        self.interval = interval
    }

    /// `key endpoint` of every target that did not accept a connection, as of the last probe.
    func unreachable(on eventLoop: any EventLoop) -> EventLoopFuture<[String]> {
        let now = NIODeadline.now()
        let action: (cached: [String]?, future: EventLoopFuture<[String]>?, promise: EventLoopPromise<[String]>?) =
            state.withLockedValue { state in
                if let checkedAt = state.checkedAt, now - checkedAt < interval {
                    return (state.unreachable, nil, nil)
                }
                if let inFlight = state.inFlight { return (nil, inFlight, nil) }
                let promise = eventLoop.makePromise(of: [String].self)
                state.inFlight = promise.futureResult
                return (nil, nil, promise)
            }
        if let cached = action.cached { return eventLoop.makeSucceededFuture(cached) }
        if let future = action.future { return future.hop(to: eventLoop) }
        let promise = action.promise!
        let attempts = targets.map { target in
            ClientBootstrap(group: eventLoop)
                .connectTimeout(.seconds(1))
                .connect(host: target.endpoint.host, port: target.endpoint.port)
                .flatMap { channel in channel.close().map { true } }
                .recover { _ in false }
                .map { reachable in reachable ? nil : "\(target.key) \(target.endpoint)" }
        }
        EventLoopFuture.whenAllSucceed(attempts, on: eventLoop).whenComplete { [state] result in
            let unreachable = ((try? result.get()) ?? []).compactMap { $0 }
            state.withLockedValue { state in
                state.checkedAt = .now()
                state.unreachable = unreachable
                state.inFlight = nil
            }
            promise.succeed(unreachable)
        }
        return promise.futureResult
    }
}

/// Serves one admin connection, one request at a time (the pipelining handler in front orders them).
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: AdminRoutes
    private var head: HTTPRequestHead?

    init(routes: AdminRoutes) {
        self.routes = routes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            routes.respond(method: head.method, uri: head.uri, on: context.eventLoop)
                .hop(to: context.eventLoop)
                .assumeIsolated()
                .whenSuccess { [self] response in
                    write(response, for: head, context: context)
                }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func write(_ response: AdminRoutes.Response, for request: HTTPRequestHead, context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        let body = context.channel.allocator.buffer(string: response.body)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        headers.add(name: "Cache-Control", value: "no-store")
        if !request.isKeepAlive { headers.add(name: "Connection", value: "close") }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: response.status, headers: headers))),
            promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !request.isKeepAlive {
            done.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}
