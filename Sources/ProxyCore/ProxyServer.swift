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
/// credentials, limits) sits behind a lock so reload can swap it; each connection takes the runtime
/// current at accept time and keeps it.
public final class ProxyServer: Sendable {
    /// The addresses the listeners actually bound (port 0 resolves to the chosen port).
    public struct BoundAddresses: Sendable {
        public var grpc: SocketAddress
        public var http: SocketAddress
    }

    let group: any EventLoopGroup
    let logger: Logger
    let runtimeBox: NIOLockedValueBox<ProxyRuntime>
    private let pools: UpstreamPools
    let services: ProxyServices
    private let channels = NIOLockedValueBox<[any Channel]>([])
    /// Open client connections, for the drain (Drain.swift).
    let connections = ConnectionRegistry()
    /// Held while a reload builds and swaps a runtime (Reload.swift), so reloads run one at a time.
    let reloadLock = NIOLock()

    public init(
        runtime: ProxyRuntime, group: any EventLoopGroup, logger: Logger, metrics: ProxyMetrics = ProxyMetrics()
    ) throws(StartupError) {
        self.group = group
        self.logger = logger
        self.runtimeBox = NIOLockedValueBox(runtime)
        self.pools = try UpstreamPools(upstream: runtime.configuration.upstream, group: group)
        // Password hashing is slow on purpose: it runs here, never on an event loop.
        let threadPool = NIOThreadPool(numberOfThreads: 2)
        let sources = try Self.keySources(runtime.remoteKeySources, group: group)
        // Always present, even without remote key sources: a reload may add some.
        let jwks = JWKSRefresher(sources: sources, eventLoop: group.next(), logger: logger)
        self.services = ProxyServices(threadPool: threadPool, jwks: jwks, metrics: metrics, limits: LimitState())
    }

    /// The process-wide metrics and access log.
    public var metrics: ProxyMetrics { services.metrics }

    /// The runtime new connections use.
    public var runtime: ProxyRuntime { runtimeBox.withLockedValue { $0 } }

    /// Binds both listeners and starts accepting.
    public func start() async throws -> BoundAddresses {
        services.threadPool.start()
        services.jwks?.start()
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
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
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
        guard connections.register(channel) else { throw DrainingError() }
        let runtime = self.runtime
        try admitConnection(channel, listener: listener, runtime: runtime, services: services, logger: logger)
        services.metrics.connectionOpened(channel, listener: listener)
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(TLSServerHandler(context: runtime.tls))
        try sync.addHandler(HandshakeTimeoutHandler(timeout: runtime.limits.handshakeTimeout, metrics: services.metrics))
        try sync.addHandler(ProtocolSelectionHandler(runtime: runtime, pools: pools, services: services, logger: logger))
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
