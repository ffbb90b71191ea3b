import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import XCTest

@testable import ProxyCore

/// Graceful drain in this process: requests in flight finish, idle connections close, new ones are
/// refused, and the deadline closes what is left.
final class DrainTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var files: TestFiles!

    override func setUp() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        files = try TestFiles()
    }

    override func tearDown() async throws {
        try await group.shutdownGracefully()
    }

    /// The proxy waits 2s for a response head (`TestFiles`), so delays stay below that.
    private func start(delay: TimeAmount?) async throws -> (SlowUpstream, RunningProxy) {
        let upstream = SlowUpstream(group: group, delay: delay)
        let port = try await upstream.start()
        let proxy = try await RunningProxy(
            configuration: files.configuration(upstreamPort: port), group: group)
        return (upstream, proxy)
    }

    /// Starts curl on a thread; the result arrives when it exits.
    private func curlInBackground(_ arguments: [String]) -> Task<CurlResult, any Error> {
        let caFile = files.caFile
        return Task.detached { try curl(arguments, caFile: caFile) }
    }

    private func request(_ port: Int, http2: Bool = false) -> [String] {
        (http2 ? ["--http2"] : []) + [
            "-H", "Authorization: Bearer \(TestFiles.token)", "-H", "Content-Type: application/x-protobuf", "-d", "x",
            "https://127.0.0.1:\(port)/v1/traces",
        ]
    }

    func testDrain_H1RequestInFlight_CompletesWithConnectionClose() async throws {
        let (upstream, proxy) = try await start(delay: .milliseconds(1500))
        let inFlight = curlInBackground(request(proxy.httpPort))
        try await waitUntil("the request reached the receiver") { upstream.received >= 1 }

        let clock = ContinuousClock()
        let started = clock.now
        let server = proxy.server
        let drain = Task { await server.drain(timeout: .seconds(20)) }
        try await waitUntil("draining") { server.isDraining }
        let refused = try runProcess(
            "/usr/bin/curl", ["-sS", "--max-time", "5", "--cacert", files.caFile, "https://127.0.0.1:\(proxy.httpPort)/v1/traces"])
        XCTAssertNotEqual(refused.status, 0, "no new connections while draining")

        let result = try await inFlight.value
        XCTAssertEqual(result.status, 200, result.body)
        XCTAssertEqual(result.headers["connection"], ["close"])
        await drain.value
        XCTAssertLessThan(clock.now - started, .seconds(10), "the drain ended with the last request, not the deadline")
        XCTAssertEqual(proxy.server.openConnections, 0)
        await proxy.stop()
        await upstream.stop()
    }

    func testDrain_H2RequestInFlight_CompletesAndConnectionCloses() async throws {
        let (upstream, proxy) = try await start(delay: .milliseconds(1500))
        let inFlight = curlInBackground(request(proxy.httpPort, http2: true))
        try await waitUntil("the request reached the receiver") { upstream.received >= 1 }

        let clock = ContinuousClock()
        let started = clock.now
        await proxy.server.drain(timeout: .seconds(20))
        // Without the final GOAWAY the HTTP/2 connection would stay open until the deadline.
        XCTAssertLessThan(clock.now - started, .seconds(10))
        let result = try await inFlight.value
        XCTAssertEqual(result.status, 200, result.body)
        XCTAssertEqual(result.exitCode, 0)
        await proxy.stop()
        await upstream.stop()
    }

    func testDrain_IdleKeepAliveConnection_ClosedAtOnce() async throws {
        let (upstream, proxy) = try await start(delay: nil)
        // A TLS connection that completed its handshake and sends nothing: an idle HTTP/1.1 connection.
        let client = Process()
        client.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        client.arguments = ["s_client", "-connect", "127.0.0.1:\(proxy.httpPort)", "-quiet"]
        let input = Pipe()
        client.standardInput = input
        client.standardOutput = FileHandle.nullDevice
        client.standardError = FileHandle.nullDevice
        try client.run()
        defer { if client.isRunning { client.terminate() } }
        try await waitUntil("the client connected") { proxy.server.openConnections == 1 }
        try await Task.sleep(for: .milliseconds(300))  // the handshake

        let clock = ContinuousClock()
        let started = clock.now
        await proxy.server.drain(timeout: .seconds(20))
        XCTAssertLessThan(clock.now - started, .seconds(5), "an idle connection does not hold the drain")
        try await waitUntil("the client saw the connection close") { !client.isRunning }
        await proxy.stop()
        await upstream.stop()
    }

    func testDrain_RequestPastDeadline_ClosedAtDeadline() async throws {
        let (upstream, proxy) = try await start(delay: .seconds(30))
        let inFlight = curlInBackground(request(proxy.httpPort))
        try await waitUntil("the request reached the receiver") { upstream.received >= 1 }

        let clock = ContinuousClock()
        let started = clock.now
        await proxy.server.drain(timeout: .milliseconds(700))
        let elapsed = clock.now - started
        XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(650))
        XCTAssertLessThan(elapsed, .seconds(5))
        XCTAssertEqual(proxy.server.openConnections, 0)
        let result = try await inFlight.value
        XCTAssertNotEqual(result.exitCode, 0, "the client saw the connection closed without a response")
        await proxy.stop()
        await upstream.stop()
    }
}

/// A plaintext HTTP/1.1 receiver that answers 200 after `delay` (at once when nil).
final class SlowUpstream: Sendable {
    private let group: any EventLoopGroup
    private let delay: TimeAmount?
    private let count = NIOLockedValueBox(0)
    private let channel = NIOLockedValueBox<(any Channel)?>(nil)

    init(group: any EventLoopGroup, delay: TimeAmount?) {
        self.group = group
        self.delay = delay
    }

    /// Complete requests received so far.
    var received: Int { count.withLockedValue { $0 } }

    func start() async throws -> Int {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(upstream: self))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        self.channel.withLockedValue { $0 = channel }
        return channel.localAddress!.port!
    }

    func stop() async {
        try? await channel.withLockedValue { $0 }?.close()
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let upstream: SlowUpstream

        init(upstream: SlowUpstream) { self.upstream = upstream }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            upstream.count.withLockedValue { $0 += 1 }
            let respond = { [self] in
                let headers = HTTPHeaders([("Content-Type", "application/x-protobuf"), ("Content-Length", "2")])
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "ok")))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
            if let delay = upstream.delay {
                context.eventLoop.assumeIsolated().scheduleTask(in: delay) { respond() }
            } else {
                respond()
            }
        }
    }
}
