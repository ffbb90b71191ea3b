import Foundation
import Logging
import NIOCore
import NIOPosix
import ProxyConfig
import XCTest

@testable import ProxyCore

/// The admin listener and the metrics and access log of real exchanges through the proxy on 127.0.0.1.
final class AdminServerTests: XCTestCase {
    private var group: MultiThreadedEventLoopGroup!
    private var files: TestFiles!

    override func setUpWithError() throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        files = try TestFiles()
    }

    override func tearDown() async throws {
        try await group.shutdownGracefully()
        files = nil
    }

    private struct Running {
        var upstream: RecordingUpstream
        var server: ProxyServer
        var admin: AdminServer
        var httpPort: Int
        var adminPort: Int
        var lines: LineCollector

        func stop() async {
            await admin.shutdown()
            await server.shutdown()
            await upstream.stop()
        }
    }

    private func start(draining: @escaping @Sendable () -> Bool = { false }) async throws -> Running {
        let upstream = RecordingUpstream(group: group, behaviour: .respond(status: .ok, body: "fine"))
        let port = try await upstream.start()
        let configuration = try files.configuration(upstreamPort: port)
        let lines = LineCollector()
        let metrics = ProxyMetrics(accessLog: AccessLog(format: .json, sink: lines.sink))
        let server = try ProxyServer(
            runtime: ProxyRuntime(configuration: configuration), group: group, logger: Logger(label: "test"),
            metrics: metrics)
        let bound = try await server.start()
        let admin = AdminServer(
            endpoint: Endpoint(host: "127.0.0.1", port: 0), group: group, metrics: metrics,
            upstreams: [("upstream.grpc", configuration.upstream.grpc), ("upstream.http", configuration.upstream.http)],
            isDraining: draining, probeInterval: .zero, logger: Logger(label: "test"))
        let adminAddress = try await admin.start()
        return Running(
            upstream: upstream, server: server, admin: admin, httpPort: bound.http.port!, adminPort: adminAddress.port!,
            lines: lines)
    }

    private func get(_ path: String, _ running: Running) throws -> CurlResult {
        try curl(["http://127.0.0.1:\(running.adminPort)\(path)"], caFile: files.caFile)
    }

    func testAdmin_HealthzReadyz_UpstreamUpThenDown() async throws {
        let running = try await start()
        XCTAssertEqual(try get("/healthz", running).status, 200)
        let ready = try get("/readyz", running)
        XCTAssertEqual(ready.status, 200, ready.body)
        await running.upstream.stop()
        let notReady = try get("/readyz", running)
        XCTAssertEqual(notReady.status, 503)
        XCTAssertTrue(notReady.body.contains("unreachable: upstream.http 127.0.0.1:"), notReady.body)
        XCTAssertEqual(try get("/nope", running).status, 404)
        await running.stop()
    }

    func testAdmin_Readyz_DrainingIsNotReady() async throws {
        let running = try await start(draining: { true })
        let result = try get("/readyz", running)
        XCTAssertEqual(result.status, 503)
        XCTAssertEqual(result.body, "draining\n")
        XCTAssertEqual(try get("/healthz", running).status, 200)
        await running.stop()
    }

    func testTLSToH1AndH2_Requests_MoveCountersAndWriteAccessLines() async throws {
        let running = try await start()
        let url = "https://127.0.0.1:\(running.httpPort)/v1/traces"
        let body = ["-H", "Content-Type: application/x-protobuf", "--data-binary", "0123456789"]
        let ok = try curl(["-H", "Authorization: Bearer \(TestFiles.token)"] + body + [url], caFile: files.caFile)
        XCTAssertEqual(ok.status, 200)
        let okH2 = try curl(["--http2", "-H", "Authorization: Bearer \(TestFiles.token)"] + body + [url], caFile: files.caFile)
        XCTAssertEqual(okH2.status, 200)
        let wrongToken = "wrong-token-abcdefghijklmnopqrstuvwxyz"
        let refused = try curl(["-H", "Authorization: Bearer \(wrongToken)"] + body + [url], caFile: files.caFile)
        XCTAssertEqual(refused.status, 401)

        let scrape = try get("/metrics", running)
        XCTAssertEqual(scrape.status, 200)
        let text = scrape.body
        XCTAssertEqual(
            sample(text, "otlp_auth_proxy_requests_total",
                   ["signal": "traces", "transport": "http/1.1", "tenant": "team-a", "outcome": "forwarded"]), 1)
        XCTAssertEqual(
            sample(text, "otlp_auth_proxy_requests_total",
                   ["signal": "traces", "transport": "h2", "tenant": "team-a", "outcome": "forwarded"]), 1)
        XCTAssertEqual(
            sample(text, "otlp_auth_proxy_requests_total",
                   ["signal": "traces", "transport": "http/1.1", "tenant": "", "outcome": "refused"]), 1)
        XCTAssertEqual(sample(text, "otlp_auth_proxy_auth_failures_total", ["method": "bearer", "reason": "unknown_token"]), 1)
        // The refused request's body arrives after its reply, so only the forwarded one counts, under its tenant.
        XCTAssertEqual(
            sample(text, "otlp_auth_proxy_received_bytes_total", ["signal": "traces", "transport": "http/1.1", "tenant": "team-a"]), 10)
        XCTAssertEqual(sample(text, "otlp_auth_proxy_sent_bytes_total", ["signal": "traces", "transport": "h2"]), 4)
        XCTAssertNotNil(sample(text, "otlp_auth_proxy_certificate_not_after_timestamp_seconds", ["certificate": "server"]))
        XCTAssertEqual(sample(text, "otlp_auth_proxy_open_streams"), 0)

        let lines = running.lines.lines
        XCTAssertEqual(lines.count, 3, lines.joined(separator: "\n"))
        let records = try lines.map { try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        XCTAssertEqual(records.map { $0["status"] as? Int }, [200, 200, 401])
        XCTAssertEqual(records.map { $0["transport"] as? String }, ["http/1.1", "h2", "http/1.1"])
        XCTAssertEqual(records[0]["principal"] as? String, "token:ci-runner")
        XCTAssertEqual(records[0]["tenant"] as? String, "team-a")
        XCTAssertEqual(records[0]["bytes_in"] as? Int, 10)
        XCTAssertEqual(records[2]["auth_reason"] as? String, "unknown_token")
        XCTAssertTrue((records[0]["peer"] as? String ?? "").hasPrefix("127.0.0.1:"))
        for line in lines {
            XCTAssertFalse(line.contains(TestFiles.token))
            XCTAssertFalse(line.contains(String(wrongToken.prefix(10))))
        }
        await running.stop()
    }
}
