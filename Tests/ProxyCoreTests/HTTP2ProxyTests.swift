import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import XCTest

@testable import ProxyCore

/// The HTTP/2 front with curl --http2 as the client: OTLP/HTTP over h2 translated to HTTP/1.1 for a
/// recording receiver, and gRPC local replies that need no receiver.
final class HTTP2ProxyTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var files: TestFiles!

    override func setUp() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        files = try TestFiles()
    }

    override func tearDown() async throws {
        try await group.shutdownGracefully()
    }

    private var auth: [String] { ["-H", "Authorization: Bearer \(TestFiles.token)"] }

    private func start(_ behaviour: RecordingUpstream.Behaviour = .respond(status: .ok, body: "ok")) async throws
        -> (RecordingUpstream, RunningProxy)
    {
        let upstream = RecordingUpstream(group: group, behaviour: behaviour)
        let port = try await upstream.start()
        let proxy = try await RunningProxy(configuration: files.configuration(upstreamPort: port), group: group)
        return (upstream, proxy)
    }

    func testH2ToH1_OTLPHTTP_ForwardsExactBodyAndSetsTenant() async throws {
        let (upstream, proxy) = try await start()
        let body = (0..<300_000).map { _ in UInt8.random(in: 0...255) }
        let bodyFile = files.path("body.bin")
        try Data(body).write(to: URL(fileURLWithPath: bodyFile))
        let result = try curl(
            ["--http2", "-w", "%{http_version}"] + auth + [
                "-H", "Content-Type: application/x-protobuf", "-H", "X-Scope-OrgID: evil",
                "--data-binary", "@\(bodyFile)", "https://127.0.0.1:\(proxy.httpPort)/v1/traces",
            ], caFile: files.caFile)
        XCTAssertEqual(result.status, 200)
        XCTAssertEqual(result.body, "ok2", "the receiver's body, then curl's HTTP version")
        let received = try XCTUnwrap(upstream.requests.first)
        XCTAssertEqual(received.body, body)
        XCTAssertEqual(received.head.version, .http1_1)
        XCTAssertEqual(received.head.uri, "/v1/traces")
        XCTAssertEqual(received.head.headers["x-scope-orgid"], ["team-a"])
        XCTAssertEqual(received.head.headers["authorization"], [])
        XCTAssertEqual(received.head.headers["host"], ["127.0.0.1:\(proxy.httpPort)"])
        await proxy.stop()
        await upstream.stop()
    }

    func testH2ToH1_TwoRequestsOneConnection_UpstreamConnectionReused() async throws {
        let (upstream, proxy) = try await start()
        let url = "https://127.0.0.1:\(proxy.httpPort)/v1/metrics"
        let result = try runProcess(
            "/usr/bin/curl",
            ["-sS", "--http2", "--cacert", files.caFile, "-o", "/dev/null", "-w", "%{http_code} %{num_connects} %{http_version}\n"]
                + auth + ["-d", "a", url, "--next", "--http2", "--cacert", files.caFile, "-o", "/dev/null",
                          "-w", "%{http_code} %{num_connects} %{http_version}\n"]
                + auth + ["-d", "b", url])
        XCTAssertEqual(result.stdout, "200 1 2\n200 0 2\n", "both requests on one HTTP/2 connection")
        XCTAssertEqual(upstream.requests.map { String(decoding: $0.body, as: UTF8.self) }, ["a", "b"])
        XCTAssertEqual(upstream.connections, 1, "the HTTP/1.1 upstream connection is pooled and reused")
        await proxy.stop()
        await upstream.stop()
    }

    func testH2_TooManyHeaders_ConnectionRefusedWithGoaway() async throws {
        let (upstream, proxy) = try await start()
        var arguments = ["--http2"] + auth
        for index in 0..<120 { arguments += ["-H", "X-Filler-\(index): v"] }
        let result = try curl(arguments + ["-d", "x", "https://127.0.0.1:\(proxy.httpPort)/v1/traces"], caFile: files.caFile)
        XCTAssertEqual(result.status, 0, "no response: the connection is closed")
        XCTAssertNotEqual(result.exitCode, 0)
        XCTAssertEqual(upstream.connections, 0)
        await proxy.stop()
        await upstream.stop()
    }

    func testH2_OTLPHTTP_WrongToken_401_NothingForwarded() async throws {
        let (upstream, proxy) = try await start()
        let result = try curl(
            ["--http2", "-H", "Authorization: Bearer wrong-token-0123456789", "-H", "Content-Type: application/json",
             "-d", "{}", "https://127.0.0.1:\(proxy.httpPort)/v1/logs"], caFile: files.caFile)
        XCTAssertEqual(result.status, 401)
        XCTAssertEqual(result.headers["www-authenticate"]?.first?.hasPrefix("Bearer"), true)
        XCTAssertEqual(result.body, #"{"code":16,"message":"authentication required"}"#)
        XCTAssertEqual(upstream.connections, 0)
        await proxy.stop()
        await upstream.stop()
    }

    func testH2_GRPC_MissingToken_TrailersOnlyUnauthenticated() async throws {
        let (upstream, proxy) = try await start()
        let result = try curl(
            ["--http2", "-H", "Content-Type: application/grpc", "-H", "TE: trailers", "--data-binary", "@/dev/null",
             "https://127.0.0.1:\(proxy.grpcPort)/opentelemetry.proto.collector.trace.v1.TraceService/Export"],
            caFile: files.caFile)
        XCTAssertEqual(result.status, 200)
        XCTAssertEqual(result.headers["grpc-status"], ["16"])
        XCTAssertEqual(result.headers["content-type"], ["application/grpc"])
        XCTAssertEqual(result.body, "", "a trailers-only response has no DATA")
        XCTAssertEqual(upstream.connections, 0)
        await proxy.stop()
        await upstream.stop()
    }

    func testH2_GRPC_UnknownMethod_Unimplemented() async throws {
        let (upstream, proxy) = try await start()
        let result = try curl(
            ["--http2", "-H", "Content-Type: application/grpc+proto"] + auth
                + ["--data-binary", "@/dev/null", "https://127.0.0.1:\(proxy.grpcPort)/grpc.health.v1.Health/Check"],
            caFile: files.caFile)
        XCTAssertEqual(result.headers["grpc-status"], ["12"])
        XCTAssertEqual(upstream.connections, 0)
        await proxy.stop()
        await upstream.stop()
    }

    func testH2_GRPC_UpstreamDown_Unavailable() async throws {
        let placeholder = RecordingUpstream(group: group)
        let port = try await placeholder.start()
        await placeholder.stop()
        let proxy = try await RunningProxy(configuration: files.configuration(upstreamPort: port), group: group)
        let result = try curl(
            ["--http2", "-H", "Content-Type: application/grpc"] + auth
                + ["--data-binary", "@/dev/null",
                   "https://127.0.0.1:\(proxy.grpcPort)/opentelemetry.proto.collector.logs.v1.LogsService/Export"],
            caFile: files.caFile)
        XCTAssertEqual(result.headers["grpc-status"], ["14"])
        await proxy.stop()
    }
}
