import ProxyOTLP
import NIOCore
import ProxyHTTP2
import XCTest

@testable import ProxyCore

final class GRPCTests: XCTestCase {

    func testIsGRPC_ASCIICaseOnly_ExactPrefix() {
        XCTAssertTrue(GRPC.isGRPC(contentType: "APPLICATION/GRPC+json"))
        XCTAssertTrue(GRPC.isGRPC(contentType: "application/grpc;"))
        XCTAssertFalse(GRPC.isGRPC(contentType: "application/grp"))
        XCTAssertFalse(GRPC.isGRPC(contentType: ""))
        XCTAssertFalse(GRPC.isGRPC(contentType: " application/grpc"))
        XCTAssertFalse(GRPC.isGRPC(contentType: "application/grpcx"))
        // Only ASCII letters fold: a dotted capital I is not an "i".
        XCTAssertFalse(GRPC.isGRPC(contentType: "applİcation/grpc"))
        XCTAssertFalse(GRPC.isGRPC(contentType: "application/grpc\u{301}"))
    }
    func testRouting_OnlyTheFourExportMethods() {
        XCTAssertEqual(OTLPSignal(grpcPath: "/opentelemetry.proto.collector.trace.v1.TraceService/Export"), .traces)
        XCTAssertEqual(OTLPSignal(grpcPath: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"), .metrics)
        XCTAssertEqual(OTLPSignal(grpcPath: "/opentelemetry.proto.collector.logs.v1.LogsService/Export"), .logs)
        XCTAssertEqual(
            OTLPSignal(grpcPath: "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export"), .profiles)
        XCTAssertNil(OTLPSignal(grpcPath: "/opentelemetry.proto.collector.profiles.v1.ProfilesService/Export"))
        XCTAssertNil(OTLPSignal(grpcPath: "/opentelemetry.proto.collector.trace.v1.TraceService/Other"))
        XCTAssertNil(OTLPSignal(grpcPath: "/grpc.health.v1.Health/Check"))
        XCTAssertTrue(GRPC.isGRPC(contentType: "application/grpc"))
        XCTAssertTrue(GRPC.isGRPC(contentType: "application/grpc+proto"))
        XCTAssertTrue(GRPC.isGRPC(contentType: "Application/GRPC;charset=x"))
        XCTAssertFalse(GRPC.isGRPC(contentType: "application/grpc-web"))
        XCTAssertFalse(GRPC.isGRPC(contentType: "application/x-protobuf"))
        XCTAssertFalse(GRPC.isGRPC(contentType: nil))
    }

    func testTrailersOnly_Fields() {
        let fields = LocalReply.authenticationFailed(.missingCredential).grpcTrailersOnly
        XCTAssertEqual(fields.map(\.name), [":status", "content-type", "grpc-status", "grpc-message"])
        XCTAssertEqual(fields.map(\.value), ["200", "application/grpc", "16", "authentication required"])
        XCTAssertEqual(LocalReply.upstreamUnavailable.grpcTrailersOnly[2].value, "14")
        XCTAssertEqual(LocalReply.upstreamTimeout.grpcTrailersOnly[2].value, "4")
        XCTAssertEqual(LocalReply.messageTooLarge.grpcTrailersOnly[2].value, "8")
        XCTAssertEqual(LocalReply.unimplementedMethod.grpcTrailersOnly[2].value, "12")
        XCTAssertEqual(GRPC.percentEncoded("50% off\nnow é"), "50%25 off%0Anow %C3%A9")
    }

    func testTimeout_Parsing() {
        XCTAssertEqual(GRPC.timeout("10S"), .seconds(10))
        XCTAssertEqual(GRPC.timeout("250m"), .milliseconds(250))
        XCTAssertEqual(GRPC.timeout("1H"), .hours(1))
        XCTAssertEqual(GRPC.timeout("99999999n"), .nanoseconds(99_999_999))
        XCTAssertNil(GRPC.timeout("123456789S"), "at most 8 digits")
        XCTAssertNil(GRPC.timeout("10"))
        XCTAssertNil(GRPC.timeout("S"))
        XCTAssertNil(GRPC.timeout("-1S"))
        XCTAssertNil(GRPC.timeout(nil))
    }

    private func frame(_ length: Int) -> [UInt8] {
        [0, UInt8(length >> 24 & 0xFF), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
            + [UInt8](repeating: 7, count: length)
    }

    func testScanner_FollowsPrefixesAcrossChunks() {
        var scanner = GRPCMessageScanner(maxMessageSize: 100)
        let stream = frame(100) + frame(3) + frame(0) + frame(50)
        // Feed one byte at a time and in odd chunks: prefixes split across DATA frames are still found.
        for chunkSize in [1, 2, 7, 64, stream.count] {
            scanner = GRPCMessageScanner(maxMessageSize: 100)
            var offset = 0
            while offset < stream.count {
                let end = min(offset + chunkSize, stream.count)
                XCTAssertEqual(scanner.scan(ByteBuffer(bytes: stream[offset..<end])), .ok)
                offset = end
            }
        }
        var over = GRPCMessageScanner(maxMessageSize: 100)
        XCTAssertEqual(over.scan(ByteBuffer(bytes: frame(10) + Array(frame(101).prefix(3)))), .ok)
        XCTAssertEqual(over.scan(ByteBuffer(bytes: Array(frame(101)[3...]))), .tooLarge(101))
        var huge = GRPCMessageScanner(maxMessageSize: 4 * 1024 * 1024)
        XCTAssertEqual(huge.scan(ByteBuffer(bytes: [0, 0xFF, 0xFF, 0xFF, 0xFF])), .tooLarge(0xFFFF_FFFF))
    }

    func testScanner_AtMessageBoundary_OnlyBetweenWholeMessages() {
        var scanner = GRPCMessageScanner(maxMessageSize: .max)
        XCTAssertTrue(scanner.atMessageBoundary)  // nothing relayed yet
        let message = frame(3)
        _ = scanner.scan(ByteBuffer(bytes: message.prefix(2)))
        XCTAssertFalse(scanner.atMessageBoundary)  // inside the prefix
        _ = scanner.scan(ByteBuffer(bytes: message[2..<6]))
        XCTAssertFalse(scanner.atMessageBoundary)  // inside the payload
        _ = scanner.scan(ByteBuffer(bytes: message[6...]))
        XCTAssertTrue(scanner.atMessageBoundary)
        _ = scanner.scan(ByteBuffer(bytes: frame(0)))
        XCTAssertTrue(scanner.atMessageBoundary)  // an empty message is whole once its prefix is
    }

    func testHeaderPolicy_HTTP2Fields() {
        let policy = HeaderPolicy(tenantHeader: "X-Scope-OrgID", forwardAuthorization: false)
        let client = [
            HTTP2HeaderField(name: ":method", value: "POST"), HTTP2HeaderField(name: ":path", value: "/x"),
            HTTP2HeaderField(name: "x-scope-orgid", value: "evil"), HTTP2HeaderField(name: "authorization", value: "Bearer t"),
            HTTP2HeaderField(name: "te", value: "trailers"), HTTP2HeaderField(name: "grpc-timeout", value: "5S"),
            HTTP2HeaderField(name: "content-type", value: "application/grpc"),
        ]
        let out = policy.upstreamRequestFields(from: client, tenant: "team-a")
        XCTAssertEqual(
            out.map(\.name),
            [":method", ":scheme", ":authority", ":path", "te", "grpc-timeout", "content-type", "x-scope-orgid"],
            "the client's te is dropped and the relay's own te: trailers set once")
        XCTAssertEqual(out.last?.value, "team-a")
        let response = policy.clientResponseFields(from: [(name: ":status", value: "200"), (name: "grpc-status", value: "0"), (name: "connection", value: "close")])
        XCTAssertEqual(response.map(\.name), ["grpc-status"])
    }
}
