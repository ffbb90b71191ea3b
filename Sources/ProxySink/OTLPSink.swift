// ProxySink: a small OTLP receiver for demos and tests: OTLP/HTTP over plaintext HTTP/1.1 and,
// on a second listener, OTLP/gRPC over h2c (prior-knowledge HTTP/2). It accepts export requests,
// answers with an empty Export*ServiceResponse, and counts items per tenant header so tests can
// see exactly what the proxy forwarded.
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// The sink server. Owns its listening channels (HTTP, and gRPC when asked for) and the accepted
/// connections (closed by `shutdown`). Both listeners share one set of counters. The event loop group belongs to the caller, who shuts it down after
/// `shutdown()` returns. Call `start()` once, then `shutdown()` once.
public final class OTLPSink: Sendable {
    private let host: String
    private let port: Int
    private let grpcPort: Int?
    private let group: any EventLoopGroup
    private let logger: Logger
    private let maxBodyBytes: Int
    private let state = NIOLockedValueBox(SinkState())
    private let channels = NIOLockedValueBox(ChannelRegistry())

    /// - Parameters:
    ///   - port: 0 binds an ephemeral port; `start()` returns the one chosen.
    ///   - grpcPort: the OTLP/gRPC (h2c) listener's port on the same host; nil for none, 0 for an
    ///     ephemeral one.
    ///   - maxBodyBytes: larger request bodies get 413 and the connection is closed; a gRPC message
    ///     declared larger gets RESOURCE_EXHAUSTED. A compressed body or message must also
    ///     decompress to at most this many bytes (else 413 / RESOURCE_EXHAUSTED, and nothing past
    ///     the limit is decompressed).
    public init(host: String, port: Int, grpcPort: Int? = nil, eventLoopGroup: any EventLoopGroup, logger: Logger,
                maxBodyBytes: Int = 64 * 1024 * 1024) {
        self.host = host
        self.port = port
        self.grpcPort = grpcPort
        self.group = eventLoopGroup
        self.logger = logger
        self.maxBodyBytes = maxBodyBytes
    }

    /// Binds and starts accepting; returns the bound ports (`grpc` nil without a gRPC listener).
    public func start() async throws -> (http: Int, grpc: Int?) {
        let http = try await startHTTP()
        guard let grpcPort else { return (http, nil) }
        do {
            return (http, try await startGRPC(port: grpcPort))
        } catch {
            try? await shutdown()
            throw error
        }
    }

    private func startHTTP() async throws -> Int {
        let maxBodyBytes = self.maxBodyBytes
        let logger = self.logger
        return try await listen(port: port, protocolName: "http") { [self] channel in
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
            try channel.pipeline.syncOperations.addHandler(
                SinkHandler(sink: self, maxBodyBytes: maxBodyBytes, logger: logger))
        }
    }

    private func startGRPC(port: Int) async throws -> Int {
        let maxBodyBytes = self.maxBodyBytes
        let logger = self.logger
        return try await listen(port: port, protocolName: "grpc") { [self] channel in
            try channel.pipeline.syncOperations.addHandler(
                SinkGRPCHandler(sink: self, maxMessageBytes: maxBodyBytes, logger: logger))
        }
    }

    /// Binds one listener whose connections get the handlers `install` adds (on their event loop),
    /// registered so `shutdown` can close them; returns the bound port.
    private func listen(
        port: Int, protocolName: String, install: @escaping @Sendable (any Channel) throws -> Void
    ) async throws -> Int {
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                self.register(channel)
                return channel.eventLoop.makeCompletedFuture { try install(channel) }
            }
            .bind(host: host, port: port)
            .get()
        channels.withLockedValue { $0.servers.append(server) }
        let bound = server.localAddress?.port ?? port
        logger.info("sink listening", metadata: ["address": "\(host):\(bound)", "protocol": "\(protocolName)"])
        return bound
    }

    /// Stops accepting, closes open connections, and waits for the listener to close.
    public func shutdown() async throws {
        let (servers, open) = channels.withLockedValue { registry in
            registry.shuttingDown = true
            defer { registry.servers = []; registry.open = [:] }
            return (registry.servers, Array(registry.open.values))
        }
        for channel in open { channel.close(promise: nil) }
        for server in servers { try await server.close() }
    }

    /// The counters as of now.
    public func snapshot() -> SinkStats {
        state.withLockedValue { $0.stats }
    }

    /// Zeroes every counter (as `POST /stats/reset` does).
    public func reset() {
        state.withLockedValue { $0.reset() }
    }

    /// Routes one complete request. Bodies are decompressed and counted outside the lock; only
    /// the bookkeeping takes it.
    func process(_ request: SinkRequest) -> SinkResponse {
        if request.path == "/stats" || request.path == "/stats/reset" {
            return state.withLockedValue { $0.handle(request, maxBodyBytes: maxBodyBytes) }
        }
        let outcome = SinkState.evaluate(request, maxBodyBytes: maxBodyBytes)
        state.withLockedValue { $0.record(request, outcome: outcome) }
        return outcome.response
    }

    /// Counts one gRPC call whose message was read (or failed to be) and returns its reply.
    func processGRPC(_ request: SinkRequest, message: Result<GRPCMessage, GRPCFramingError>) -> GRPCReply {
        let (outcome, reply) = GRPCExport.evaluate(request, message: message, maxMessageBytes: maxBodyBytes)
        state.withLockedValue { $0.record(request, outcome: outcome) }
        return reply
    }

    /// Counts one gRPC call rejected on its headers.
    func recordGRPC(_ request: SinkRequest) {
        state.withLockedValue { $0.record(request, outcome: GRPCExport.recorded(nil)) }
    }

    private func register(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        let accepted = channels.withLockedValue { registry in
            guard !registry.shuttingDown else { return false }
            registry.open[id] = channel
            return true
        }
        guard accepted else {
            channel.close(promise: nil)
            return
        }
        channel.closeFuture.whenComplete { [channels] _ in
            channels.withLockedValue { _ = $0.open.removeValue(forKey: id) }
        }
    }
}

/// The listeners and the connections accepted so far, for shutdown.
private struct ChannelRegistry: Sendable {
    var servers: [any Channel] = []
    var open: [ObjectIdentifier: any Channel] = [:]
    var shuttingDown = false
}

/// Per-connection HTTP/1.1 handler: gathers a request (head + body up to the limit), asks
/// the sink for the response, writes it. Keep-alive follows the request; a body over the
/// limit gets 413 and the connection is closed (the rest of the body is not read).
final class SinkHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case idle
        case receiving(HTTPRequestHead, ByteBuffer)
        case discarding
    }

    private let sink: OTLPSink
    private let maxBodyBytes: Int
    private let logger: Logger
    private var state = State.idle

    init(sink: OTLPSink, maxBodyBytes: Int, logger: Logger) {
        self.sink = sink
        self.maxBodyBytes = maxBodyBytes
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (unwrapInboundIn(data), state) {
        case (.head(let head), _):
            state = .receiving(head, context.channel.allocator.buffer(capacity: 0))
        case (.body(var chunk), .receiving(let head, var body)):
            guard body.readableBytes + chunk.readableBytes <= maxBodyBytes else {
                state = .discarding
                logger.info("sink request body too large", metadata: ["path": "\(head.uri)"])
                write(context: context, version: head.version,
                      response: .text(413, "request body larger than \(maxBodyBytes) bytes"), keepAlive: false)
                return
            }
            state = .idle  // drop the reference so the buffer is not copied on write
            body.writeBuffer(&chunk)
            state = .receiving(head, body)
        case (.end, .receiving(let head, let body)):
            state = .idle
            let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? head.uri
            let request = SinkRequest(
                method: head.method.rawValue, path: path,
                headers: head.headers.map { (name: $0.name, value: $0.value) },
                body: Array(body.readableBytesView))
            let response = sink.process(request)
            logger.debug("sink request", metadata: [
                "method": "\(request.method)", "path": "\(path)", "status": "\(response.status)",
            ])
            write(context: context, version: head.version, response: response, keepAlive: head.isKeepAlive)
        case (.body, _), (.end, _):
            break  // discarding after a 413, or a part that belongs to nothing
        }
    }

    private func write(context: ChannelHandlerContext, version: HTTPVersion, response: SinkResponse, keepAlive: Bool) {
        var headers = HTTPHeaders(response.headers.map { ($0.name, $0.value) })
        headers.add(name: "content-length", value: String(response.body.count))
        if !keepAlive { headers.add(name: "connection", value: "close") }
        let head = HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if !response.body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        }
        if keepAlive {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("sink connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}
