import Foundation
import Logging
import NIOCore
import NIOPosix
import CompressionFixtures
import XCTest
import ProxySink

/// The sink as a real HTTP/1.1 server on 127.0.0.1, port 0.
final class OTLPSinkTests: XCTestCase {
    private var group: MultiThreadedEventLoopGroup!
    private var sink: OTLPSink!
    private var port = 0

    override func setUp() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        try await startSink()
    }

    private func startSink(maxBodyBytes: Int = 64 * 1024 * 1024) async throws {
        sink = OTLPSink(host: "127.0.0.1", port: 0, eventLoopGroup: group, logger: Logger(label: "sink-test"),
                        maxBodyBytes: maxBodyBytes)
        port = try await sink.start().http
    }

    override func tearDown() async throws {
        try await sink.shutdown()
        try await group.shutdownGracefully()
    }

    private func connect() async throws -> RawHTTPClient {
        try await RawHTTPClient.connect(port: port, group: group)
    }

    private let protobuf = ("content-type", "application/x-protobuf")

    func testStart_PortZero_ReturnsEphemeralPort() {
        XCTAssertGreaterThan(port, 0)
    }

    func testHTTP1ProtobufTraces_Accepted_SpansCountedUnderTenant() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let response = try await client.request("POST", "/v1/traces", headers: [protobuf, ("X-Scope-OrgID", "team-a")],
                                                body: Fixtures.traces([[2, 1]]))
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.header("content-type"), "application/x-protobuf")
        XCTAssertEqual(response.body, [])
        let stats = sink.snapshot()
        XCTAssertEqual(stats.requests, 1)
        XCTAssertEqual(stats.tenants["team-a"], TenantCounts(requests: 1, spans: 3))
        XCTAssertEqual(stats.lastRequest?.values("x-scope-orgid"), ["team-a"])
    }

    func testHTTP1ProtobufMetricsAndLogs_PointsAndRecordsCounted() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let metrics = try await client.request("POST", "/v1/metrics", headers: [protobuf, ("x-scope-orgid", "team-b")],
                                               body: Fixtures.metrics([(7, 2), (9, 1)]))
        let logs = try await client.request("POST", "/v1/logs", headers: [protobuf, ("x-scope-orgid", "team-b")],
                                            body: Fixtures.logs(5))
        XCTAssertEqual([metrics.status, logs.status], [200, 200])
        XCTAssertEqual(sink.snapshot().tenants["team-b"], TenantCounts(requests: 2, spans: 0, dataPoints: 3, logRecords: 5))
    }

    func testHTTP1JSONWithCharset_Accepted_RepliesEmptyJSONObject() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let body = Array(#"{"resourceSpans":[{"scopeSpans":[{"spans":[{},{},{},{}]}]}]}"#.utf8)
        let response = try await client.request("POST", "/v1/traces",
                                                headers: [("Content-Type", "Application/JSON; charset=utf-8"), ("x-scope-orgid", "j")],
                                                body: body)
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.header("content-type"), "application/json")
        XCTAssertEqual(response.text, "{}")
        XCTAssertEqual(sink.snapshot().tenants["j"]?.spans, 4)
    }

    func testKeepAlive_SeveralRequestsOnOneConnection_AllCounted() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        for _ in 0..<5 {
            let response = try await client.request("POST", "/v1/traces", headers: [protobuf], body: Fixtures.traces([[1]]))
            XCTAssertEqual(response.status, 200)
            XCTAssertNil(response.header("connection"))
        }
        XCTAssertEqual(sink.snapshot().tenants[""], TenantCounts(requests: 5, spans: 5))
    }

    func testDuplicateTenantHeader_CountedUnderMultiple() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let response = try await client.request("POST", "/v1/traces",
                                                headers: [protobuf, ("X-Scope-OrgID", "evil"), ("x-scope-orgid", "team-a")],
                                                body: Fixtures.traces([[2]]))
        XCTAssertEqual(response.status, 200)
        let stats = sink.snapshot()
        XCTAssertEqual(stats.duplicateTenantHeaders, 1)
        XCTAssertEqual(stats.tenants[SinkStats.multipleTenantsKey], TenantCounts(requests: 1, spans: 2))
        XCTAssertNil(stats.tenants["team-a"])
        XCTAssertEqual(stats.lastRequest?.values("X-Scope-OrgID"), ["evil", "team-a"])
    }

    func testAuthorizationHeader_RedactedInLastRequest_AndCounted() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        _ = try await client.request("POST", "/v1/traces",
                                     headers: [protobuf, ("Authorization", "Bearer s3cr3t-token"), ("X-Custom", "1")],
                                     body: Fixtures.traces([[1]]))
        let stats = sink.snapshot()
        XCTAssertEqual(stats.requestsWithAuthorization, 1)
        let headers = try XCTUnwrap(stats.lastRequest?.headers)
        XCTAssertEqual(headers.map(\.name), ["host", "content-type", "authorization", "x-custom", "content-length"])
        XCTAssertEqual(stats.lastRequest?.values("authorization"), ["<redacted>"])
        XCTAssertFalse(String(decoding: stats.json(), as: UTF8.self).contains("s3cr3t"))
    }

    func testGetStats_ReportsCountsAndLastRequestAsJSON() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        _ = try await client.request("POST", "/v1/logs", headers: [protobuf, ("x-scope-orgid", "team-a")], body: Fixtures.logs(3))
        let response = try await client.request("GET", "/stats")
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.header("content-type"), "application/json")
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any])
        XCTAssertEqual(object["requests"] as? Int, 1)
        XCTAssertEqual(object["duplicate_tenant_headers"] as? Int, 0)
        XCTAssertEqual(object["requests_with_authorization"] as? Int, 0)
        let team = try XCTUnwrap((object["tenants"] as? [String: Any])?["team-a"] as? [String: Int])
        XCTAssertEqual(team, ["requests": 1, "spans": 0, "data_points": 0, "log_records": 3, "profiles": 0])
        let last = try XCTUnwrap(object["last_request"] as? [String: Any])
        XCTAssertEqual(last["method"] as? String, "POST")
        XCTAssertEqual(last["path"] as? String, "/v1/logs")
        let headers = try XCTUnwrap(last["headers"] as? [[String]])
        XCTAssertEqual(headers.first, ["host", "127.0.0.1"])
        XCTAssertTrue(headers.contains(["x-scope-orgid", "team-a"]))
    }

    func testPostStatsReset_ZeroesEverything() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        _ = try await client.request("POST", "/v1/traces", headers: [protobuf, ("authorization", "Basic x")], body: Fixtures.traces([[1]]))
        XCTAssertEqual(sink.snapshot().requests, 1)
        let reset = try await client.request("POST", "/stats/reset")
        XCTAssertEqual(reset.status, 200)
        XCTAssertEqual(sink.snapshot(), SinkStats())
        XCTAssertEqual(String(decoding: sink.snapshot().json(), as: UTF8.self),
                       #"{"requests":0,"tenants":{},"duplicate_tenant_headers":0,"requests_with_authorization":0,"last_request":null}"#)
    }

    func testUnknownPath_404_CountedAsRequestWithoutItems() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let response = try await client.request("POST", "/v1/other", headers: [protobuf], body: Fixtures.traces([[1]]))
        XCTAssertEqual(response.status, 404)
        XCTAssertEqual(sink.snapshot().requests, 1)
        XCTAssertEqual(sink.snapshot().tenants[""], TenantCounts(requests: 1))
    }

    func testGetOnExportPath_405WithAllow() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let response = try await client.request("GET", "/v1/traces")
        XCTAssertEqual(response.status, 405)
        XCTAssertEqual(response.header("allow"), "POST")
        let stats = try await client.request("POST", "/stats", headers: [], body: [])
        XCTAssertEqual(stats.status, 405)
    }

    func testUnsupportedContentType_415() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let text = try await client.request("POST", "/v1/traces", headers: [("content-type", "text/plain")], body: [1])
        let missing = try await client.request("POST", "/v1/traces", headers: [], body: Fixtures.traces([[1]]))
        XCTAssertEqual([text.status, missing.status], [415, 415])
        XCTAssertEqual(sink.snapshot().tenants[""]?.spans, 0)
    }

    func testCompressedBodies_GzipZstdDeflate_AcceptedAndCountedAfterDecompression() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let cases: [(header: String, coding: String)] = [("gzip", "gzip"), ("zstd", "zstd"), ("deflate", "deflate"),
                                                         ("GZIP", "gzip"), ("x-gzip", "gzip"), ("identity, zstd", "zstd")]
        for (index, item) in cases.enumerated() {
            let body = try SystemCompressors.compress(Fixtures.traces([[index + 1]]), item.coding)
            let response = try await client.request("POST", "/v1/traces",
                                                    headers: [protobuf, ("content-encoding", item.header), ("x-scope-orgid", "t\(index)")],
                                                    body: body)
            XCTAssertEqual(response.status, 200, "\(item.header): \(response.text)")
            XCTAssertEqual(sink.snapshot().tenants["t\(index)"], TenantCounts(requests: 1, spans: index + 1), item.header)
        }
        let json = Array(#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{},{},{}]}]}]}"#.utf8)
        let logs = try await client.request("POST", "/v1/logs",
                                            headers: [("content-type", "application/json"), ("content-encoding", "gzip")],
                                            body: try SystemCompressors.compress(json, "gzip"))
        XCTAssertEqual(logs.status, 200, logs.text)
        XCTAssertEqual(logs.text, "{}")
        XCTAssertEqual(sink.snapshot().tenants[""]?.logRecords, 3)
    }

    func testIdentityContentEncoding_Accepted() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let identity = try await client.request("POST", "/v1/traces", headers: [protobuf, ("content-encoding", "identity")],
                                                body: Fixtures.traces([[1]]))
        XCTAssertEqual(identity.status, 200)
    }

    func testUnknownContentEncoding_415NamesItAndListsAcceptEncoding() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        for (value, named) in [("br", "br"), ("gzip, gzip", "gzip, gzip"), ("gzip, zstd", "gzip, zstd")] {
            let response = try await client.request("POST", "/v1/traces", headers: [protobuf, ("content-encoding", value)],
                                                    body: try SystemCompressors.compress(Fixtures.traces([[1]]), "gzip"))
            XCTAssertEqual(response.status, 415, value)
            XCTAssertTrue(response.text.contains("content-encoding \(named) is not supported"), response.text)
            XCTAssertEqual(response.header("accept-encoding"), "gzip, zstd, deflate, identity")
        }
        XCTAssertEqual(sink.snapshot().tenants[""], TenantCounts(requests: 3))
    }

    func testCorruptOrTruncatedCompressedBody_400_NothingCounted() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let body = Fixtures.traces([[3]])
        var damaged = try SystemCompressors.compress(body, "gzip")
        damaged[damaged.count - 6] ^= 0xff  // the CRC-32
        let truncated = Array(try SystemCompressors.compress(body, "deflate").dropLast(2))
        let zlibAsGzip = try SystemCompressors.compress(body, "deflate")
        for (coding, data) in [("gzip", damaged), ("deflate", truncated), ("gzip", zlibAsGzip), ("zstd", body)] {
            let response = try await client.request("POST", "/v1/traces",
                                                    headers: [protobuf, ("content-encoding", coding), ("x-scope-orgid", "t")],
                                                    body: data)
            XCTAssertEqual(response.status, 400, "\(coding): \(response.text)")
            XCTAssertTrue(response.text.hasPrefix("content-encoding \(coding): "), response.text)
            XCTAssertNil(response.header("connection"), "the body was read: the connection stays open")
        }
        XCTAssertEqual(sink.snapshot().tenants["t"], TenantCounts(requests: 4))
    }

    func testCompressedBodyDecompressingPastLimit_413_SmallerOneAccepted() async throws {
        try await sink.shutdown()
        try await startSink(maxBodyBytes: 4096)
        let client = try await connect()
        defer { Task { await client.close() } }
        // Spans with long names: about 60 KiB of protobuf that gzip makes smaller than the limit.
        var big = ProtoWriter()
        big.bytes(15, [UInt8](repeating: 0x61, count: 60 * 1024))
        let body = try SystemCompressors.compress(Fixtures.traces([[2]]) + big.bytes, "gzip")
        XCTAssertLessThan(body.count, 4096)
        let response = try await client.request("POST", "/v1/traces", headers: [protobuf, ("content-encoding", "gzip")], body: body)
        XCTAssertEqual(response.status, 413)
        XCTAssertEqual(response.text, "request body larger than 4096 bytes after content-encoding gzip is decoded\n")
        XCTAssertEqual(sink.snapshot().tenants[""], TenantCounts(requests: 1))
        // The same connection goes on; a body that fits after decompression is counted.
        let small = try await client.request("POST", "/v1/traces", headers: [protobuf, ("content-encoding", "gzip")],
                                             body: try SystemCompressors.compress(Fixtures.traces([[2]]), "gzip"))
        XCTAssertEqual(small.status, 200)
        XCTAssertEqual(sink.snapshot().tenants[""], TenantCounts(requests: 2, spans: 2))
    }

    func testMalformedProtobuf_400_NothingCounted() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        var body = Fixtures.traces([[3]])
        body.removeLast(10)
        let response = try await client.request("POST", "/v1/traces", headers: [protobuf, ("x-scope-orgid", "t")], body: body)
        XCTAssertEqual(response.status, 400)
        XCTAssertEqual(sink.snapshot().tenants["t"], TenantCounts(requests: 1))
    }

    func testBodyOverLimit_413AndConnectionClosed() async throws {
        try await sink.shutdown()
        try await startSink(maxBodyBytes: 1024)
        let client = try await connect()
        defer { Task { await client.close() } }
        let response = try await client.request("POST", "/v1/traces", headers: [protobuf], body: [UInt8](repeating: 0, count: 4096))
        XCTAssertEqual(response.status, 413)
        XCTAssertEqual(response.header("connection"), "close")
        try await client.channel.closeFuture.get()
        XCTAssertEqual(sink.snapshot().requests, 0)
    }

    func testShutdown_ClosesOpenConnections() async throws {
        let client = try await connect()
        _ = try await client.request("GET", "/stats")
        try await sink.shutdown()
        try await client.channel.closeFuture.get()  // returns only if the sink closed it
        try await startSink()  // for tearDown
    }
}
