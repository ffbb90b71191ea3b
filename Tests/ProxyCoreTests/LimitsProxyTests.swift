import Foundation
import Logging
import NIOCore
import NIOPosix
import ProxySink
import XCTest

@testable import ProxyCore

/// The limits on a running proxy: curl and raw TCP clients against 127.0.0.1 port 0.
final class LimitsProxyTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var files: TestFiles!
    static let otherToken = "other-token-0123456789abcdef01234"

    override func setUp() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        files = try TestFiles()
        // Two tenants: team-a (TestFiles.token) and team-b.
        try """
            tokens:
              - principal: ci-runner
                tenant: team-a
                token: "\(TestFiles.token)"
              - principal: other-runner
                tenant: team-b
                token: "\(Self.otherToken)"
            """.write(toFile: files.path("tokens.yaml"), atomically: true, encoding: .utf8)
    }

    override func tearDown() async throws {
        try await group.shutdownGracefully()
    }

    private func start(extra: String) async throws -> (RecordingUpstream, RunningProxy) {
        let upstream = RecordingUpstream(group: group, behaviour: .respond(status: .ok, body: "ok"))
        let port = try await upstream.start()
        let proxy = try await RunningProxy(configuration: files.configuration(upstreamPort: port, extra: extra), group: group)
        return (upstream, proxy)
    }

    private func post(_ proxy: RunningProxy, token: String = TestFiles.token, body: String = "x", http2: Bool = false) throws -> CurlResult {
        let bodyFile = files.path("body-\(body.count).bin")
        try body.write(toFile: bodyFile, atomically: true, encoding: .utf8)
        return try curl(
            (http2 ? ["--http2"] : []) + [
                "-H", "Authorization: Bearer \(token)", "-H", "Content-Type: application/x-protobuf",
                "--data-binary", "@\(bodyFile)", "https://127.0.0.1:\(proxy.httpPort)/v1/traces",
            ], caFile: files.caFile)
    }

    // MARK: Tenant rates

    func testTLSToH1_TenantOverRequestRate_429RetryAfter_OtherTenantUnaffected() async throws {
        let (upstream, proxy) = try await start(extra: "limits: { tenant_rate: { requests_per_second: 0.5, burst_seconds: 4 } }")
        XCTAssertEqual(try post(proxy).status, 200)
        XCTAssertEqual(try post(proxy).status, 200)
        let limited = try post(proxy)
        XCTAssertEqual(limited.status, 429, limited.body)
        XCTAssertEqual(limited.headers["retry-after"], ["2"], "a token is back within two seconds at 0.5/s")
        XCTAssertEqual(try post(proxy, token: Self.otherToken).status, 200, "another tenant has its own budget")
        XCTAssertEqual(upstream.requests.count, 3, "the limited request never reached the receiver")
        await proxy.stop()
        await upstream.stop()
    }

    func testTLSToH2_OTLPHTTP_TenantOverRequestRate_429RetryAfter() async throws {
        let (upstream, proxy) = try await start(extra: "limits: { tenant_rate: { requests_per_second: 1, burst_seconds: 1 } }")
        XCTAssertEqual(try post(proxy, http2: true).status, 200)
        let limited = try post(proxy, http2: true)
        XCTAssertEqual(limited.status, 429)
        XCTAssertEqual(limited.headers["retry-after"], ["1"])
        await proxy.stop()
        await upstream.stop()
    }

    func testTLSToH1_TenantOverByteRate_NextRequestWaits_OverrideTenantUnaffected() async throws {
        let (upstream, proxy) = try await start(extra: """
            limits:
              tenant_rate:
                bytes_per_second: 1KiB
                burst_seconds: 1
                overrides: { team-b: { bytes_per_second: 1MiB } }
            """)
        let big = String(repeating: "a", count: 4096)
        XCTAssertEqual(try post(proxy, body: big).status, 200, "admitted while the bucket is not in debt")
        let limited = try post(proxy, body: "x")
        XCTAssertEqual(limited.status, 429)
        let wait = try XCTUnwrap(limited.headers["retry-after"]?.first.flatMap { Int($0) })
        XCTAssertTrue((2...4).contains(wait), "about 3 KiB of debt at 1 KiB/s, got \(wait)")
        XCTAssertEqual(try post(proxy, token: Self.otherToken, body: big).status, 200)
        XCTAssertEqual(try post(proxy, token: Self.otherToken, body: big).status, 200)
        await proxy.stop()
        await upstream.stop()
    }

    func testH2ToH2C_GRPCTenantOverRate_ResourceExhaustedWithRetryInfo() async throws {
        let sink = OTLPSink(host: "127.0.0.1", port: 0, grpcPort: 0, eventLoopGroup: group, logger: Logger(label: "sink"))
        let ports = try await sink.start()
        var configuration = try files.configuration(
            upstreamPort: ports.http, extra: "limits: { tenant_rate: { requests_per_second: 1, burst_seconds: 1 } }")
        configuration.upstream.grpc.port = try XCTUnwrap(ports.grpc)
        let proxy = try await RunningProxy(configuration: configuration, group: group)
        let bodyFile = files.path("export.bin")
        // An empty ExportTraceServiceRequest, gRPC-framed.
        try Data([0, 0, 0, 0, 0]).write(to: URL(fileURLWithPath: bodyFile))
        func export() throws -> CurlResult {
            try curl(
                ["--http2", "-H", "Content-Type: application/grpc", "-H", "TE: trailers",
                 "-H", "Authorization: Bearer \(TestFiles.token)", "--data-binary", "@\(bodyFile)",
                 "https://127.0.0.1:\(proxy.grpcPort)/opentelemetry.proto.collector.trace.v1.TraceService/Export"],
                caFile: files.caFile)
        }
        XCTAssertEqual(try export().headers["grpc-status"], ["0"])
        let limited = try export()
        XCTAssertEqual(limited.status, 200)
        XCTAssertEqual(limited.headers["grpc-status"], ["8"])
        let status = try WireMessage(base64Unpadded: XCTUnwrap(limited.headers["grpc-status-details-bin"]?.first))
        XCTAssertEqual(status.varint(1), 8)
        let any = try WireMessage(status.bytes(3))
        XCTAssertEqual(any.string(1), "type.googleapis.com/google.rpc.RetryInfo")
        let delay = try WireMessage(WireMessage(any.bytes(2)).bytes(1))
        let nanoseconds = (delay.varint(1) ?? 0) * 1_000_000_000 + (delay.varint(2) ?? 0)
        XCTAssertTrue((1...1_000_000_000).contains(nanoseconds), "a delay of at most a second, got \(nanoseconds) ns")
        await proxy.stop()
        try await sink.shutdown()
    }

    // MARK: Load shedding

    func testTLSToH1AndH2_OverBufferedBytes_503RetryAfter_ThenServedAgain() async throws {
        let (upstream, proxy) = try await start(extra: "limits: { max_buffered_bytes: 1MiB }")
        let gauge = proxy.server.services.limits.buffered
        gauge.add(2 * 1024 * 1024)  // as if other connections held 2 MiB
        let shed = try post(proxy)
        XCTAssertEqual(shed.status, 503)
        XCTAssertEqual(shed.headers["retry-after"], ["1"])
        XCTAssertEqual(try post(proxy, http2: true).status, 503)
        XCTAssertEqual(upstream.requests.count, 0)
        gauge.subtract(2 * 1024 * 1024)
        XCTAssertEqual(try post(proxy).status, 200)
        XCTAssertEqual(try post(proxy, http2: true).status, 200)
        XCTAssertEqual(gauge.bytes, 0, "every held byte was given back")
        await proxy.stop()
        await upstream.stop()
    }

    func testTLSToH1_BodyQueuedWhileConnecting_CountedThenReleased() async throws {
        // The receiver's port refuses connections: the body waits in the connecting state, then the
        // request fails with 503, and nothing stays counted.
        let (upstream, proxy) = try await start(extra: "")
        await upstream.stop()
        let result = try post(proxy, body: String(repeating: "b", count: 200_000))
        XCTAssertEqual(result.status, 503)
        try await waitUntil("nothing stays counted") { proxy.server.services.limits.buffered.bytes == 0 }
        await proxy.stop()
    }

    // MARK: Connections and handshakes

    private func connect(_ port: Int) async throws -> any Channel {
        try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port).get()
    }

    /// Whether the proxy closed `channel` within `seconds`.
    private func closed(_ channel: any Channel, within seconds: Double) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if !channel.isActive { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return !channel.isActive
    }

    func testTCP_BeyondMaxConnections_ClosedAtAccept_SlotFreedOnClose() async throws {
        let (upstream, proxy) = try await start(extra: "limits: { max_connections: 2, handshake_timeout: 30s }")
        let first = try await connect(proxy.httpPort)
        let second = try await connect(proxy.grpcPort)  // the limit spans both listeners
        try await Task.sleep(for: .milliseconds(200))
        let third = try await connect(proxy.httpPort)
        let thirdClosed = await closed(third, within: 2)
        XCTAssertTrue(thirdClosed, "the connection over the limit is closed")
        let firstClosed = await closed(first, within: 0.2)
        XCTAssertFalse(firstClosed, "connections within the limit stay open")
        XCTAssertEqual(try post(proxy).exitCode != 0, true, "curl cannot get through while the proxy is full")

        try await first.close()
        try await second.close()
        try await Task.sleep(for: .milliseconds(200))
        XCTAssertEqual(try post(proxy).status, 200, "slots are freed when connections close")
        try await waitUntil("every slot is given back once the server side closes") {
            proxy.server.services.limits.connections.count == 0
        }
        await proxy.stop()
        await upstream.stop()
    }

    func testTCP_SilentClient_ClosedAfterHandshakeTimeout_CompletedHandshakeKeepsConnection() async throws {
        let upstream = RecordingUpstream(group: group, behaviour: .stall)
        let port = try await upstream.start()
        var configuration = try files.configuration(upstreamPort: port, extra: "limits: { handshake_timeout: 300ms }")
        configuration.upstream.timeout = .seconds(1)
        let proxy = try await RunningProxy(configuration: configuration, group: group)

        let silent = try await connect(proxy.httpPort)
        let start = Date()
        let silentClosed = await closed(silent, within: 3)
        XCTAssertTrue(silentClosed, "a client that never starts TLS is closed")
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(start), 0.25, "not before the timeout")

        // A client that completed its handshake outlives the timeout: the receiver stalls for a
        // second, and the client still gets the proxy's 504 on the same connection.
        let slow = try post(proxy)
        XCTAssertEqual(slow.status, 504, "exit \(slow.exitCode)")
        await proxy.stop()
        await upstream.stop()
    }
}
