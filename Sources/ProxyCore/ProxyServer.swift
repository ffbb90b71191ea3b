#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ProxyConfig
import ProxyTLS

/// The proxy's listeners: binds the gRPC and HTTP endpoints, terminates TLS on every accepted
/// connection and hands it to the protocol front.
///
/// Owns the listening channels and, per event loop, the upstream pools. The runtime (TLS context,
/// credentials, limits) is swapped by reload (`RuntimeInForce`): a connection keeps the TLS context
/// and protocol settings of the runtime current at accept, and every request is judged against the
/// runtime in force when it arrives.
public final class ProxyServer: Sendable {
    /// The addresses the listeners actually bound (port 0 resolves to the chosen port).
    public struct BoundAddresses: Sendable {
        public var grpc: SocketAddress
        public var http: SocketAddress
    }

    let group: any EventLoopGroup
    let logger: Logger
    private let pools: UpstreamPools
    let services: ProxyServices
    private let channels = NIOLockedValueBox<[any Channel]>([])
    /// Open client connections, for the drain (Drain.swift).
    let connections = ConnectionRegistry()
    /// Open client connections with a client certificate, judged again by reloads and at expiry.
    let certificateConnections: ClientCertificateConnections
    /// Held while a reload builds and swaps a runtime (Reload.swift), so reloads run one at a time.
    let reloadLock = NIOLock()
    /// Logs failing accepts (descriptor limit) without flooding, and their end.
    private let acceptFailures = AcceptFailures()
    /// Returns the heap pages of closed connections to the system (HeapReturn.swift).
    let heapReturn: HeapReturn

    public init(
        runtime: ProxyRuntime, group: any EventLoopGroup, logger: Logger, metrics: ProxyMetrics = ProxyMetrics()
    ) throws(StartupError) {
        self.group = group
        self.logger = logger
        self.pools = try UpstreamPools(upstream: runtime.configuration.upstream, group: group)
        // Password hashing is slow on purpose: it runs here, never on an event loop.
        let threadPool = NIOThreadPool(numberOfThreads: 2)
        let sources = try Self.keySources(runtime.remoteKeySources, group: group)
        // Always present, even without remote key sources: a reload may add some.
        let jwks = JWKSRefresher(sources: sources, eventLoop: group.next(), logger: logger)
        self.services = ProxyServices(
            runtime: RuntimeInForce(runtime), threadPool: threadPool, jwks: jwks, metrics: metrics, limits: LimitState())
        self.heapReturn = HeapReturn(connections: connections, threadPool: threadPool)
        self.certificateConnections = ClientCertificateConnections(
            runtime: services.runtime, metrics: metrics, logger: logger)
    }

    /// The process-wide metrics and access log.
    public var metrics: ProxyMetrics { services.metrics }

    /// The runtime in force: new connections and every new request use it.
    public var runtime: ProxyRuntime { services.runtime.load() }

    /// Binds both listeners and starts accepting.
    public func start() async throws -> BoundAddresses {
        services.threadPool.start()
        services.jwks?.start()
        heapReturn.start(on: group.next())
        services.metrics.certificatesLoaded(runtime.certificateExpiries)
        let configuration = runtime.configuration
        let grpc = try await bind(configuration.grpc.endpoint, name: "grpc")
        let http = try await bind(configuration.http.endpoint, name: "http")
        return BoundAddresses(grpc: grpc, http: http)
    }

    /// Stops accepting, closes the listeners and the idle upstream connections.
    public func shutdown() async {
        await closeListeners()
        services.jwks?.stop()
        heapReturn.stop()
        await pools.closeAll()
        try? await services.threadPool.shutdownGracefully()
    }

    /// Closes the listening sockets; open connections stay.
    func closeListeners() async {
        let listeners = channels.withLockedValue { channels in
            defer { channels.removeAll() }
            return channels
        }
        for channel in listeners {
            try? await channel.close()
        }
    }

    private func bind(_ endpoint: Endpoint, name: String) async throws -> SocketAddress {
        let acceptFailures = self.acceptFailures
        let logger = self.logger
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        AcceptPauseHandler(listener: name, failures: acceptFailures, logger: logger))
                }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try self.initializeConnection(channel, listener: name)
                }
            }
            .bind(host: endpoint.host, port: endpoint.port)
            .get()
        channels.withLockedValue { $0.append(channel) }
        guard let address = channel.localAddress else {
            throw StartupError(message: "\(name).endpoint: the listener has no local address")
        }
        logger.info("listening", metadata: ["listener": "\(name)", "address": "\(address.hostPort)"])
        return address
    }

    /// Runs on the connection's event loop.
    private func initializeConnection(_ channel: any Channel, listener: String) throws {
        acceptFailures.accepted(listener: listener, logger: logger)
        guard connections.register(channel) else { throw DrainingError() }
        let runtime = self.runtime
        try admitConnection(channel, listener: listener, runtime: runtime, services: services, logger: logger)
        services.metrics.connectionOpened(channel, listener: listener)
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(TLSServerHandler(context: runtime.tls))
        try sync.addHandler(HandshakeTimeoutHandler(timeout: runtime.limits.handshakeTimeout, metrics: services.metrics))
        try sync.addHandler(
            ProtocolSelectionHandler(
                connectionRuntime: runtime, pools: pools, services: services,
                certificateConnections: certificateConnections, logger: logger))
        if let age = runtime.limits.maxConnectionAge { limitAge(of: channel, to: age) }
    }

    /// Asks the connection to finish, as in a drain (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close`), once
    /// it is `age` old less up to a tenth at random, so the connections of one burst do not all
    /// reconnect together. Clients then reconnect, and a load balancer can place them on new pods.
    private func limitAge(of channel: any Channel, to age: TimeAmount) {
        let jittered = TimeAmount.nanoseconds(Int64(Double(age.nanoseconds) * Double.random(in: 0.9...1.0)))
        let logger = self.logger
        let timer = channel.eventLoop.assumeIsolated().scheduleTask(in: jittered) {
            guard channel.isActive else { return }
            logger.debug("connection reached limits.max_connection_age; asking the client to reconnect")
            channel.pipeline.fireUserInboundEventTriggered(ProxyDrainEvent())
        }
        channel.closeFuture.assumeIsolated().whenComplete { _ in timer.cancel() }
    }
}

extension SocketAddress {
    /// `127.0.0.1:4318` or `[::1]:4318`, as users write endpoints.
    public var hostPort: String {
        let host = ipAddress ?? "?"
        let port = port ?? 0
        return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

/// Pauses a listener after a failed accept (no descriptors left, no kernel memory) by turning its
/// `autoRead` off for `AcceptFailures.backoff`, then on again. Pending connections wait in the
/// kernel's backlog meanwhile.
///
/// Without it the listener spins: when the first accept of a read already fails, NIO keeps the
/// read pending and the socket registered, and the still-readable listening socket wakes the event
/// loop at once, forever (NIO's `AcceptBackoffHandler` only helps once an accept succeeded in the
/// same read). Sits first in the listening channel's pipeline; lives on its event loop.
final class AcceptPauseHandler: ChannelInboundHandler {
    typealias InboundIn = any Channel

    private let listener: String
    private let failures: AcceptFailures
    private let logger: Logger
    private var resume: Scheduled<Void>?

    init(listener: String, failures: AcceptFailures, logger: Logger) {
        self.listener = listener
        self.failures = failures
        self.logger = logger
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let ioError = error as? IOError, let pause = failures.failed(ioError, listener: listener, logger: logger) else {
            context.fireErrorCaught(error)
            return
        }
        guard resume == nil, let options = context.channel.syncOptions else { return }
        try? options.setOption(.autoRead, value: false)
        resume = context.eventLoop.assumeIsolated().scheduleTask(in: pause) { [self] in
            resume = nil
            try? context.channel.syncOptions?.setOption(.autoRead, value: true)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        resume?.cancel()
        resume = nil
        context.fireChannelInactive()
    }
}

/// What the listeners do when `accept` fails: a pause before the next attempt, and a log line when
/// it starts failing, at most one more per `logInterval` while it keeps failing, and one when a
/// connection is accepted again.
///
/// Shared by both listeners (each on its own event loop), so the state sits behind a lock; the
/// lock is taken on every accepted connection only to read one flag.
final class AcceptFailures: Sendable {
    /// How long a listener waits after a failed accept before it tries again.
    static let backoff: TimeAmount = .milliseconds(250)
    static let logInterval: TimeAmount = .seconds(30)

    private struct Failing {
        var since: NIODeadline
        var lastLogged: NIODeadline
        var suppressed: Int
        var total: Int
    }

    private let state = NIOLockedValueBox<[String: Failing]>([:])

    /// Called by the listener's pause handler; returns how long to pause accepting, or nil when the
    /// error needs no pause.
    func failed(_ error: IOError, listener: String, logger: Logger) -> TimeAmount? {
        // The peer gave up before we accepted: nothing is wrong with the listener.
        if error.errnoCode == ECONNABORTED { return nil }
        let now = NIODeadline.now()
        let report = state.withLockedValue { state -> Int? in
            var failing = state[listener] ?? Failing(since: now, lastLogged: now, suppressed: 0, total: 0)
            failing.total += 1
            defer { state[listener] = failing }
            if failing.total == 1 || now - failing.lastLogged >= Self.logInterval {
                let suppressed = failing.suppressed
                failing.lastLogged = now
                failing.suppressed = 0
                return suppressed
            }
            failing.suppressed += 1
            return nil
        }
        if let suppressed = report {
            logger.warning(
                "accept failed, new connections wait in the backlog",
                metadata: [
                    "listener": "\(listener)", "error": "\(error)",
                    "retry_in_ms": "\(Self.backoff.nanoseconds / 1_000_000)",
                    "failures_not_logged": "\(suppressed)",
                ])
        }
        return Self.backoff
    }

    /// Called for every accepted connection; logs the end of a failing period.
    func accepted(listener: String, logger: Logger) {
        let ended = state.withLockedValue { state -> Failing? in
            guard !state.isEmpty else { return nil }
            return state.removeValue(forKey: listener)
        }
        if let ended {
            logger.info(
                "accepting again",
                metadata: [
                    "listener": "\(listener)", "failed_accepts": "\(ended.total)",
                    "seconds": "\(Double((NIODeadline.now() - ended.since).nanoseconds) / 1e9)",
                ])
        }
    }
}
