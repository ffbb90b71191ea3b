import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import XCTest

@testable import ProxyCore

/// The proxy in this process, a recording receiver on 127.0.0.1 port 0, and curl as the client.
final class HTTP1ProxyTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var files: TestFiles!

    override func setUp() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        files = try TestFiles()
    }

    override func tearDown() async throws {
        try await group.shutdownGracefully()
    }

    private func start(
        _ behaviour: RecordingUpstream.Behaviour = .respond(status: .ok, body: "ok"), extra: String = ""
    ) async throws -> (RecordingUpstream, RunningProxy) {
        let upstream = RecordingUpstream(group: group, behaviour: behaviour)
        let port = try await upstream.start()
        let proxy = try await RunningProxy(configuration: files.configuration(upstreamPort: port, extra: extra), group: group)
        return (upstream, proxy)
    }

    private var auth: [String] { ["-H", "Authorization: Bearer \(TestFiles.token)"] }

    func testTLSToH1_ValidToken_ForwardsExactBodyAndSetsTenant() async throws {
        let (upstream, proxy) = try await start()
        let body = (0..<70_000).map { _ in UInt8.random(in: 0...255) }
        let bodyFile = files.path("body.bin")
        try Data(body).write(to: URL(fileURLWithPath: bodyFile))
        let result = try curl(
            auth + [
                "-H", "Content-Type: application/x-protobuf", "-H", "X-Scope-OrgID: evil", "-H", "x-scope-orgid: evil2",
                "-H", "Connection: X-Scope-OrgID", "--data-binary", "@\(bodyFile)",
                "https://127.0.0.1:\(proxy.httpPort)/v1/traces",
            ], caFile: files.caFile)
        XCTAssertEqual(result.status, 200, result.body)
        XCTAssertEqual(result.body, "ok")
        XCTAssertEqual(result.headers["x-upstream"], ["recording"], "the receiver's response headers are relayed")
        let received = try XCTUnwrap(upstream.requests.first)
        XCTAssertEqual(upstream.requests.count, 1)
        XCTAssertEqual(received.head.uri, "/v1/traces")
        XCTAssertEqual(received.body, body, "the receiver gets the exact bytes")
        XCTAssertEqual(received.head.headers["x-scope-orgid"], ["team-a"])
        XCTAssertEqual(received.head.headers["authorization"], [])
        XCTAssertEqual(received.head.headers["content-type"], ["application/x-protobuf"])
        await proxy.stop()
        await upstream.stop()
    }

    func testTLSToH1_ChunkedBody_StreamsThrough() async throws {
        let (upstream, proxy) = try await start()
        let body = String(repeating: "0123456789abcdef", count: 40_000)  // 640 KB
        let bodyFile = files.path("chunked.txt")
        try body.write(toFile: bodyFile, atomically: true, encoding: .utf8)
        let result = try curl(
            auth + ["-H", "Transfer-Encoding: chunked", "-H", "Content-Type: application/json",
                    "--data-binary", "@\(bodyFile)", "https://127.0.0.1:\(proxy.httpPort)/v1/logs"],
            caFile: files.caFile)
        XCTAssertEqual(result.status, 200)
        XCTAssertEqual(upstream.requests.first.map { String(decoding: $0.body, as: UTF8.self) }, body)
        await proxy.stop()
        await upstream.stop()
    }

    func testTLSToH1_KeepAlive_ReusesBothConnections() async throws {
        let (upstream, proxy) = try await start()
        let url = "https://127.0.0.1:\(proxy.httpPort)/v1/metrics"
        let result = try runProcess(
            "/usr/bin/curl",
            ["-sS", "--http1.1", "--cacert", files.caFile, "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\n"]
                + auth + ["-d", "a", url, "--next", "--http1.1", "--cacert", files.caFile, "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\n"]
                + auth + ["-d", "b", url])
        XCTAssertEqual(result.stdout, "200 1\n200 0\n", "the second request rides the same client connection")
        XCTAssertEqual(upstream.requests.map { String(decoding: $0.body, as: UTF8.self) }, ["a", "b"])
        XCTAssertEqual(upstream.connections, 1, "the upstream connection is pooled and reused")
        await proxy.stop()
        await upstream.stop()
    }

    /// The receiver's chunked response reaches the client whole (the proxy reads and writes the
    /// chunked framing itself), and the upstream connection is reused.
    func testTLSToH1_ChunkedUpstreamResponse_RelayedWholeConnectionReused() async throws {
        let (upstream, proxy) = try await start(.respondChunked(status: .ok, parts: ["par", "tial", String(repeating: "x", count: 9000)]))
        let url = "https://127.0.0.1:\(proxy.httpPort)/v1/traces"
        let first = try curl(auth + ["-H", "Content-Type: application/x-protobuf", "-d", "a", url], caFile: files.caFile)
        XCTAssertEqual(first.status, 200)
        XCTAssertEqual(first.body, "partial" + String(repeating: "x", count: 9000))
        XCTAssertEqual(first.headers["transfer-encoding"], ["chunked"])
        let second = try curl(auth + ["-H", "Content-Type: application/x-protobuf", "-d", "b", url], caFile: files.caFile)
        XCTAssertEqual(second.status, 200)
        XCTAssertEqual(upstream.requests.map { String(decoding: $0.body, as: UTF8.self) }, ["a", "b"])
        XCTAssertEqual(upstream.connections, 1, "a chunked response leaves the connection reusable")
        await proxy.stop()
        await upstream.stop()
    }

    /// A response without a length ends with the receiver's close: the client gets it whole (framed
    /// chunked for HTTP/1.1) and the next request goes on a new upstream connection.
    func testTLSToH1_UpstreamResponseEndedByClose_RelayedWholeConnectionNotReused() async throws {
        let (upstream, proxy) = try await start(.respondUntilClose(status: .accepted, body: "until the close"))
        let url = "https://127.0.0.1:\(proxy.httpPort)/v1/traces"
        for body in ["a", "b"] {
            let result = try curl(auth + ["-H", "Content-Type: application/x-protobuf", "-d", body, url], caFile: files.caFile)
            XCTAssertEqual(result.status, 202)
            XCTAssertEqual(result.body, "until the close")
        }
        XCTAssertEqual(upstream.requests.map { String(decoding: $0.body, as: UTF8.self) }, ["a", "b"])
        XCTAssertEqual(upstream.connections, 2, "a connection whose close ended the response is not reused")
        await proxy.stop()
        await upstream.stop()
    }

    func testTLSToH1_WrongOrMissingToken_401_NothingForwarded() async throws {
        let (upstream, proxy) = try await start()
        let url = "https://127.0.0.1:\(proxy.httpPort)/v1/traces"
        let wrong = try curl(["-H", "Authorization: Bearer wrong-token-0123456789", "-H", "Content-Type: application/json", "-d", "{}", url], caFile: files.caFile)
        XCTAssertEqual(wrong.status, 401)
        XCTAssertEqual(wrong.headers["www-authenticate"]?.first?.hasPrefix("Bearer"), true)
        XCTAssertEqual(wrong.body, #"{"code":16,"message":"authentication required"}"#)
        let missing = try curl(["-H", "Content-Type: application/x-protobuf", "-d", "x", url], caFile: files.caFile)
        XCTAssertEqual(missing.status, 401)
        XCTAssertEqual(missing.headers["content-type"], ["application/x-protobuf"])
        XCTAssertEqual(Array(missing.body.utf8.prefix(2)), [0x08, 0x10], "a protobuf google.rpc.Status with code 16")
        XCTAssertEqual(upstream.requests.count, 0)
        XCTAssertEqual(upstream.connections, 0, "not even a connection reaches the receiver")
        await proxy.stop()
        await upstream.stop()
    }

    func testTLSToH1_PathAndMethod() async throws {
        let (upstream, proxy) = try await start()
        let base = "https://127.0.0.1:\(proxy.httpPort)"
        XCTAssertEqual(try curl(auth + ["-d", "x", "\(base)/v1/other"], caFile: files.caFile).status, 404)
        let get = try curl(auth + ["\(base)/v1/traces"], caFile: files.caFile)
        XCTAssertEqual(get.status, 405)
        XCTAssertEqual(get.headers["allow"], ["POST"])
        XCTAssertEqual(upstream.requests.count, 0)
        await proxy.stop()
        await upstream.stop()
    }

    func testTLSToH1_BodyOverLimit_413_NothingForwarded() async throws {
        let (upstream, proxy) = try await start()
        let bodyFile = files.path("big.bin")
        try Data(count: 1_048_577).write(to: URL(fileURLWithPath: bodyFile))
        let url = "https://127.0.0.1:\(proxy.httpPort)/v1/traces"
        XCTAssertEqual(try curl(auth + ["--data-binary", "@\(bodyFile)", url], caFile: files.caFile).status, 413)
        // Without a declared length the limit is enforced while streaming.
        let chunked = try curl(auth + ["-H", "Transfer-Encoding: chunked", "--data-binary", "@\(bodyFile)", url], caFile: files.caFile)
        XCTAssertTrue(chunked.status == 413 || chunked.exitCode != 0, "status \(chunked.status)")
        XCTAssertEqual(upstream.requests.count, 0, "an over-limit request never completes at the receiver")
        await proxy.stop()
        await upstream.stop()
    }

    func testTLSToH1_TooManyHeaders_431() async throws {
        let (upstream, proxy) = try await start(extra: "")
        var arguments = auth
        for index in 0..<120 { arguments += ["-H", "X-Filler-\(index): v"] }
        let result = try curl(arguments + ["-d", "x", "https://127.0.0.1:\(proxy.httpPort)/v1/traces"], caFile: files.caFile)
        XCTAssertEqual(result.status, 431)
        XCTAssertEqual(upstream.requests.count, 0)
        await proxy.stop()
        await upstream.stop()
    }

    func testTLSToH1_HugeHeader_431() async throws {
        let (upstream, proxy) = try await start()
        let big = String(repeating: "a", count: 100_000)
        let result = try curl(auth + ["-H", "X-Big: \(big)", "-d", "x", "https://127.0.0.1:\(proxy.httpPort)/v1/traces"], caFile: files.caFile)
        XCTAssertEqual(result.status, 431)
        XCTAssertEqual(upstream.requests.count, 0)
        await proxy.stop()
        await upstream.stop()
    }

    func testTLSToH1_UpstreamDown_503WithRetryAfter() async throws {
        // Take a free port, then close it so nothing listens there.
        let placeholder = RecordingUpstream(group: group)
        let port = try await placeholder.start()
        await placeholder.stop()
        let proxy = try await RunningProxy(configuration: files.configuration(upstreamPort: port), group: group)
        let result = try curl(auth + ["-H", "Content-Type: application/json", "-d", "{}", "https://127.0.0.1:\(proxy.httpPort)/v1/traces"], caFile: files.caFile)
        XCTAssertEqual(result.status, 503)
        XCTAssertEqual(result.headers["retry-after"], ["1"])
        XCTAssertEqual(result.body, #"{"code":14,"message":"upstream unavailable, retry later"}"#)
        await proxy.stop()
    }

    func testTLSToH1_UpstreamClosesWithoutResponse_503() async throws {
        let (upstream, proxy) = try await start(.closeWithoutResponse)
        let result = try curl(auth + ["-d", "x", "https://127.0.0.1:\(proxy.httpPort)/v1/traces"], caFile: files.caFile)
        XCTAssertEqual(result.status, 503)
        XCTAssertEqual(upstream.requests.count, 1)
        await proxy.stop()
        await upstream.stop()
    }

    func testTLSToH1_UpstreamStalls_504() async throws {
        let (upstream, proxy) = try await start(.stall)
        let result = try curl(auth + ["-d", "x", "https://127.0.0.1:\(proxy.httpPort)/v1/traces"], caFile: files.caFile)
        XCTAssertEqual(result.status, 504)
        await proxy.stop()
        await upstream.stop()
    }

    func testTLSToH1_UpstreamErrorStatus_RelayedAsIs() async throws {
        let (upstream, proxy) = try await start(.respond(status: .tooManyRequests, body: "slow down"))
        let result = try curl(auth + ["-d", "x", "https://127.0.0.1:\(proxy.httpPort)/v1/traces"], caFile: files.caFile)
        XCTAssertEqual(result.status, 429)
        XCTAssertEqual(result.body, "slow down")
        await proxy.stop()
        await upstream.stop()
    }
}
