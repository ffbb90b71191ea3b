import Foundation
import Logging
import NIOCore
import NIOPosix
import ProxySink
import XCTest

@testable import ProxyCore

/// gRPC through the proxy into the built-in sink's h2c listener, with curl --http2 as the client.
final class GRPCProxyTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var files: TestFiles!

    override func setUp() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        files = try TestFiles()
    }

    override func tearDown() async throws {
        try await group.shutdownGracefully()
    }

    /// An ExportTraceServiceRequest with `spans` spans, gRPC-framed.
    private func exportBody(spans: Int) -> [UInt8] {
        func lengthDelimited(_ field: UInt8, _ payload: [UInt8]) -> [UInt8] {
            var out: [UInt8] = [field << 3 | 2]
            var length = payload.count
            while length >= 0x80 {
                out.append(UInt8(length & 0x7F) | 0x80)
                length >>= 7
            }
            out.append(UInt8(length))
            return out + payload
        }
        let span = lengthDelimited(5, Array("span".utf8))  // Span.name
        var scopeSpans: [UInt8] = []
        for _ in 0..<spans { scopeSpans += lengthDelimited(2, span) }
        let message = lengthDelimited(1, lengthDelimited(2, scopeSpans))
        let length = UInt32(message.count)
        return [0, UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)] + message
    }

    private func export(proxy: RunningProxy, spans: Int, extraHeaders: [String] = []) throws -> CurlResult {
        let bodyFile = files.path("export-\(spans).bin")
        try Data(exportBody(spans: spans)).write(to: URL(fileURLWithPath: bodyFile))
        return try curl(
            ["--http2", "-H", "Content-Type: application/grpc", "-H", "TE: trailers",
             "-H", "Authorization: Bearer \(TestFiles.token)"] + extraHeaders
                + ["--data-binary", "@\(bodyFile)",
                   "https://127.0.0.1:\(proxy.grpcPort)/opentelemetry.proto.collector.trace.v1.TraceService/Export"],
            caFile: files.caFile)
    }

    func testH2ToH2C_GRPCExport_ReachesReceiverWithTenant_AndSurvivesReceiverRestart() async throws {
        let sink = OTLPSink(host: "127.0.0.1", port: 0, grpcPort: 0, eventLoopGroup: group, logger: Logger(label: "sink"))
        let ports = try await sink.start()
        let grpcPort = try XCTUnwrap(ports.grpc)
        var configuration = try files.configuration(upstreamPort: ports.http)
        configuration.upstream.grpc.port = grpcPort
        let proxy = try await RunningProxy(configuration: configuration, group: group)

        let first = try export(proxy: proxy, spans: 3, extraHeaders: ["-H", "X-Scope-OrgID: evil"])
        XCTAssertEqual(first.status, 200)
        XCTAssertEqual(first.headers["grpc-status"], ["0"])
        XCTAssertEqual(sink.snapshot().tenants["team-a"]?.spans, 3)
        XCTAssertEqual(sink.snapshot().lastRequest?.values("x-scope-orgid"), ["team-a"])
        XCTAssertEqual(sink.snapshot().lastRequest?.values("authorization"), [])

        // The receiver goes away: the pooled h2c connection dies and the call fails as retryable.
        try await sink.shutdown()
        let during = try export(proxy: proxy, spans: 1)
        XCTAssertEqual(during.headers["grpc-status"], ["14"])

        // It comes back on the same port: the pool opens a new connection.
        let restarted = OTLPSink(host: "127.0.0.1", port: 0, grpcPort: grpcPort, eventLoopGroup: group, logger: Logger(label: "sink"))
        _ = try await restarted.start()
        let after = try export(proxy: proxy, spans: 2)
        XCTAssertEqual(after.headers["grpc-status"], ["0"])
        XCTAssertEqual(restarted.snapshot().tenants["team-a"]?.spans, 2)
        await proxy.stop()
        try await restarted.shutdown()
    }

    func testH2ToH2C_MessageOverMaxRecvMsgSize_ResourceExhausted_NothingCounted() async throws {
        let sink = OTLPSink(host: "127.0.0.1", port: 0, grpcPort: 0, eventLoopGroup: group, logger: Logger(label: "sink"))
        let ports = try await sink.start()
        var configuration = try files.configuration(upstreamPort: ports.http)
        configuration.upstream.grpc.port = try XCTUnwrap(ports.grpc)
        configuration.grpc.maxRecvMsgSize = 1024
        let proxy = try await RunningProxy(configuration: configuration, group: group)
        let result = try export(proxy: proxy, spans: 200)  // about 1.6 KB
        XCTAssertEqual(result.headers["grpc-status"], ["8"])
        XCTAssertEqual(sink.snapshot().tenants["team-a"]?.spans ?? 0, 0)
        let small = try export(proxy: proxy, spans: 10)
        XCTAssertEqual(small.headers["grpc-status"], ["0"], "the connection and the pool still work")
        await proxy.stop()
        try await sink.shutdown()
    }
}
