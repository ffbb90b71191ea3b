import CompressionFixtures
import Logging
import NIOCore
import NIOHTTP1
import OTLPFixtures
import ProxyAuth
import ProxyConfig
import ProxyHTTP2
import ProxyOTLP
import XCTest

@testable import ProxyCore

/// The exchange when the runtime reads payloads (`usage.count_items`, an item rate, a Resource
/// attribute): the body is collected, decompressed within the limit, counted, and sent whole; what
/// cannot be read is refused with the status the client must see, and nothing goes upstream.
final class PayloadExchangeTests: XCTestCase {
    nonisolated(unsafe) private static let files = Result { try TestFiles() }
    private var recorder = RecordingRecorder()

    private func exchange(_ client: ClientProtocol = .http2, extra: String = "usage: { count_items: true }") throws -> Exchange {
        let runtime = try ProxyRuntime(configuration: Self.files.get().configuration(upstreamPort: 14318, extra: extra))
        return Exchange(
            runtime: runtime, client: client, peer: "192.0.2.1:5000", peerCertificate: nil,
            defaultAuthority: (grpc: "127.0.0.1:14317", http: "127.0.0.1:14318"), recorder: recorder,
            logger: Logger(label: "test"))
    }

    private static let allowed = AuthOutcome.allowed(
        AuthDecision(principal: Principal(name: "token:ci", method: .bearer), tenant: "team-a"))

    private static func grpcHead(_ extra: [(String, String)] = [], signal: OTLPSignal = .traces) -> ExchangeRequestHead {
        var fields = [
            HTTP2HeaderField(name: ":method", value: "POST"), HTTP2HeaderField(name: ":scheme", value: "https"),
            HTTP2HeaderField(name: ":authority", value: "otlp.example:4317"),
            HTTP2HeaderField(name: ":path", value: signal.grpcPath),
            HTTP2HeaderField(name: "content-type", value: "application/grpc"),
            HTTP2HeaderField(name: "authorization", value: "Bearer \(TestFiles.token)"),
        ]
        for (name, value) in extra { fields.append(HTTP2HeaderField(name: name, value: value)) }
        return ExchangeRequestHead(http2: fields, endStream: false)
    }

    private static func h1Head(_ headers: [(String, String)], target: String = "/v1/traces") -> ExchangeRequestHead {
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: target)
        head.headers = HTTPHeaders([("Host", "otlp.example:4318")] + headers)
        return ExchangeRequestHead(http1: head)
    }

    private static func framed(_ message: [UInt8], compressed: Bool = false) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(compressed ? 1 : 0))
        buffer.writeInteger(UInt32(message.count))
        buffer.writeBytes(message)
        return buffer
    }

    /// Head, credentials and admission: the exchange then waits for the payload.
    private func admitAwaitingBody(_ exchange: inout Exchange, _ head: ExchangeRequestHead, file: StaticString = #filePath, line: UInt = #line) {
        guard case .authenticate = exchange.receivedHead(head, overloaded: false) else {
            return XCTFail("expected authentication", file: file, line: line)
        }
        guard case .admit = exchange.credentialsDecided(Self.allowed) else {
            return XCTFail("expected admission", file: file, line: line)
        }
        guard case .awaitBody = exchange.admission(.admitted) else {
            return XCTFail("expected the exchange to await the payload", file: file, line: line)
        }
    }

    private func sent(_ action: Exchange.BodyAction, file: StaticString = #filePath, line: UInt = #line) -> Exchange.PayloadSend? {
        guard case .send(let send) = action else {
            XCTFail("expected the payload to be sent, got \(action)", file: file, line: line)
            return nil
        }
        return send
    }

    private func refusal(_ action: Exchange.BodyAction, file: StaticString = #filePath, line: UInt = #line) -> ExchangeReply? {
        guard case .end(.reply(let reply)) = action else {
            XCTFail("expected a local reply, got \(action)", file: file, line: line)
            return nil
        }
        return reply
    }

    // MARK: Counting

    func testGRPC_GzipMessageInTwoPieces_CountedAndSentAsTheClientSentIt() throws {
        var exchange = try exchange()
        admitAwaitingBody(&exchange, Self.grpcHead([("grpc-encoding", "gzip")]))
        let payload = Fixtures.traces([[2, 3], [1]])
        var body = Self.framed(try SystemCompressors.gzip(payload), compressed: true)
        let first = body.readSlice(length: 7)!
        guard case .held = exchange.requestBody(first, endStream: false) else { return XCTFail("the first piece is held") }
        let send = try XCTUnwrap(sent(exchange.requestBody(body, endStream: true)))
        XCTAssertEqual(send.items, 6)
        XCTAssertEqual(send.tenant, "team-a")
        XCTAssertEqual(Array(send.body.readableBytesView), Array(Self.framed(try SystemCompressors.gzip(payload), compressed: true).readableBytesView))
        guard case .h2c(let fields) = send.request else { return XCTFail("a gRPC request goes to the h2c receiver") }
        XCTAssertEqual(fields.filter { $0.name == "grpc-encoding" }.map(\.value), ["gzip"], "a counted payload keeps its coding")
        XCTAssertEqual(exchange.phase, .connecting)
        exchange.clientGone()
        XCTAssertEqual(recorder.records.first?.items, 6)
        XCTAssertEqual(recorder.records.first?.bytesDecoded, payload.count)
    }

    func testHTTP1_BodyEndsBeforeAdmission_AdmissionSendsIt() throws {
        var exchange = try exchange(.http1(.http1_1))
        let payload = Fixtures.logs(4)
        let head = Self.h1Head([("Content-Type", "application/x-protobuf"), ("Content-Length", String(payload.count))])
        guard case .authenticate = exchange.receivedHead(head, overloaded: false) else { return XCTFail("expected authentication") }
        guard case .held = exchange.requestBody(ByteBuffer(bytes: payload), endStream: true) else { return XCTFail("held while authenticating") }
        guard case .admit = exchange.credentialsDecided(Self.allowed) else { return XCTFail("expected admission") }
        guard case .send(let send) = exchange.admission(.admitted) else { return XCTFail("the whole payload is sent at admission") }
        XCTAssertEqual(send.items, 4)
        guard case .http1(let upstream) = send.request else { return XCTFail("OTLP/HTTP goes to the HTTP receiver") }
        XCTAssertEqual(upstream.headers["Content-Length"], [String(payload.count)])
        XCTAssertEqual(upstream.headers["X-Scope-OrgID"], ["team-a"])
    }

    func testHTTP_JSONPayload_Counted() throws {
        var exchange = try exchange()
        let json = Array(#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{},{},{}]}]}]}"#.utf8)
        var fields = [
            HTTP2HeaderField(name: ":method", value: "POST"), HTTP2HeaderField(name: ":scheme", value: "https"),
            HTTP2HeaderField(name: ":authority", value: "otlp.example:4318"), HTTP2HeaderField(name: ":path", value: "/v1/logs"),
            HTTP2HeaderField(name: "content-type", value: "application/json; charset=utf-8"),
        ]
        fields.append(HTTP2HeaderField(name: "authorization", value: "Bearer \(TestFiles.token)"))
        admitAwaitingBody(&exchange, ExchangeRequestHead(http2: fields, endStream: false))
        XCTAssertEqual(try XCTUnwrap(sent(exchange.requestBody(ByteBuffer(bytes: json), endStream: true))).items, 3)
    }

    func testLargePayload_ReadOffTheEventLoop_ThenSent() throws {
        var exchange = try exchange()
        admitAwaitingBody(&exchange, Self.grpcHead())
        let payload = Fixtures.traces([Array(repeating: 400, count: 20)])
        XCTAssertGreaterThan(payload.count, Exchange.inlineReadLimit)
        guard case .read(let job) = exchange.requestBody(Self.framed(payload), endStream: true) else {
            return XCTFail("a payload over the inline limit is read by a job")
        }
        XCTAssertTrue(exchange.readingOffloaded)
        guard case .send(let send) = exchange.payloadRead(job.run()) else { return XCTFail("the job's result is sent") }
        XCTAssertEqual(send.items, 8000)
        XCTAssertEqual(send.body.readableBytes, payload.count + 5)
    }

    func testLargePayload_ClientGoneWhileRead_ResultIgnored() throws {
        var exchange = try exchange()
        admitAwaitingBody(&exchange, Self.grpcHead())
        guard case .read(let job) = exchange.requestBody(Self.framed(Fixtures.traces([Array(repeating: 400, count: 20)])), endStream: true) else {
            return XCTFail("expected a job")
        }
        exchange.clientGone()
        guard case .ignore = exchange.payloadRead(job.run()) else { return XCTFail("nothing to do for a finished exchange") }
        XCTAssertEqual(recorder.records.map(\.outcome), ["client_gone"])
    }

    func testLargePayload_JobCouldNotRun_RetryableUnavailable() throws {
        var exchange = try exchange()
        admitAwaitingBody(&exchange, Self.grpcHead())
        guard case .read = exchange.requestBody(Self.framed(Fixtures.traces([Array(repeating: 400, count: 20)])), endStream: true) else {
            return XCTFail("expected a job")
        }
        guard case .reply(let reply) = exchange.payloadRead(nil) else { return XCTFail("expected a reply") }
        XCTAssertEqual(reply.reply.rpcCode, 14)
    }

    func testAttributesThatGrowThePayloadPastTheLimit_413() throws {
        var exchange = try exchange(.http1(.http1_1), extra: "tenant: { resource_attribute: tenant.id }")
        // 200,000 empty ResourceSpans (2 bytes each, 400 KB): each gains a Resource with the attribute,
        // about 25 bytes, so the rewritten body would pass the 1 MiB limit.
        var payload: [UInt8] = []
        for _ in 0..<200_000 { payload += [0x0A, 0x00] }
        let head = Self.h1Head([("Content-Type", "application/x-protobuf"), ("Content-Length", String(payload.count))])
        admitAwaitingBody(&exchange, head)
        guard case .read(let job) = exchange.requestBody(ByteBuffer(bytes: payload), endStream: true) else {
            return XCTFail("expected a job")
        }
        guard case .reply(let reply) = exchange.payloadRead(job.run()) else { return XCTFail("expected a refusal") }
        XCTAssertEqual(reply.cause, .payloadRefused(.tooLarge))
        XCTAssertEqual(reply.reply.status, .payloadTooLarge)
    }

    // MARK: Refusals

    func testGRPC_UnknownEncoding_UnimplementedBeforeAnythingIsRead() throws {
        var exchange = try exchange()
        guard case .reply(let reply) = exchange.receivedHead(Self.grpcHead([("grpc-encoding", "snappy")]), overloaded: false) else {
            return XCTFail("expected a local reply")
        }
        XCTAssertEqual(reply.cause, .payloadRefused(.unsupportedCoding("snappy")))
        XCTAssertEqual(reply.reply.rpcCode, 12)
        XCTAssertTrue(reply.isGRPC)
        XCTAssertEqual(recorder.records.first?.grpcStatus, 12)
    }

    func testHTTP_StackedOrUnknownContentEncoding_415() throws {
        for value in ["br", "gzip, zstd"] {
            var exchange = try exchange(.http1(.http1_1))
            let head = Self.h1Head([("Content-Type", "application/x-protobuf"), ("Content-Encoding", value), ("Content-Length", "3")])
            guard case .reply(let reply) = exchange.receivedHead(head, overloaded: false) else { return XCTFail("expected a reply for \(value)") }
            XCTAssertEqual(reply.reply.status, .unsupportedMediaType, value)
            XCTAssertTrue(reply.reply.message.contains(value), "the message names the coding: \(reply.reply.message)")
        }
    }

    func testHTTP_OtherMediaType_415() throws {
        var exchange = try exchange(.http1(.http1_1))
        let head = Self.h1Head([("Content-Type", "text/plain"), ("Content-Length", "3")])
        guard case .reply(let reply) = exchange.receivedHead(head, overloaded: false) else { return XCTFail("expected a reply") }
        XCTAssertEqual(reply.cause, .payloadRefused(.unsupportedMediaType))
        XCTAssertEqual(reply.reply.status, .unsupportedMediaType)
    }

    func testHTTP_GzipThatInflatesPastTheBodyLimit_413() throws {
        // The test configuration's body limit is 1 MiB; 2 MiB of zeros compress to about 2 KiB.
        var exchange = try exchange(.http1(.http1_1))
        let bomb = try SystemCompressors.gzip([UInt8](repeating: 0, count: 2 * 1024 * 1024))
        let head = Self.h1Head([
            ("Content-Type", "application/x-protobuf"), ("Content-Encoding", "gzip"), ("Content-Length", String(bomb.count)),
        ])
        admitAwaitingBody(&exchange, head)
        let reply = try XCTUnwrap(refusal(exchange.requestBody(ByteBuffer(bytes: bomb), endStream: true)))
        XCTAssertEqual(reply.cause, .payloadRefused(.tooLarge))
        XCTAssertEqual(reply.reply.status, .payloadTooLarge)
        XCTAssertEqual(reply.reply.rpcCode, 8)
        XCTAssertEqual(recorder.records.first?.outcome, "refused")
    }

    func testHTTP_CorruptGzip_400WithStatusBody() throws {
        var exchange = try exchange(.http1(.http1_1))
        var corrupt = try SystemCompressors.gzip(Fixtures.traces([[1]]))
        corrupt[corrupt.count / 2] ^= 0xFF
        let head = Self.h1Head([
            ("Content-Type", "application/x-protobuf"), ("Content-Encoding", "gzip"), ("Content-Length", String(corrupt.count)),
        ])
        admitAwaitingBody(&exchange, head)
        let reply = try XCTUnwrap(refusal(exchange.requestBody(ByteBuffer(bytes: corrupt), endStream: true)))
        XCTAssertEqual(reply.reply.status, .badRequest)
        XCTAssertEqual(reply.reply.rpcCode, 3)
        XCTAssertEqual(Array(reply.body.readableBytesView), LocalReply.protobufStatus(code: 3, message: reply.reply.message))
    }

    func testHTTP_NotAnExportRequest_400() throws {
        var exchange = try exchange(.http1(.http1_1))
        let head = Self.h1Head([("Content-Type", "application/x-protobuf"), ("Content-Length", "4")])
        admitAwaitingBody(&exchange, head)
        // Field 1 declared 100 bytes long, with 2 present.
        let reply = try XCTUnwrap(refusal(exchange.requestBody(ByteBuffer(bytes: [0x0A, 100, 1, 2]), endStream: true)))
        XCTAssertEqual(reply.cause.reason, "invalid_payload")
        XCTAssertEqual(reply.reply.status, .badRequest)
    }

    func testGRPC_TwoMessagesInAUnaryCall_InvalidArgument() throws {
        var exchange = try exchange()
        admitAwaitingBody(&exchange, Self.grpcHead())
        var body = Self.framed(Fixtures.traces([[1]]))
        var second = Self.framed(Fixtures.traces([[1]]))
        body.writeBuffer(&second)
        let reply = try XCTUnwrap(refusal(exchange.requestBody(body, endStream: true)))
        XCTAssertEqual(reply.reply.rpcCode, 3)
        XCTAssertTrue(reply.isGRPC)
    }

    func testGRPC_CompressedFlagWithoutEncoding_InvalidArgument() throws {
        var exchange = try exchange()
        admitAwaitingBody(&exchange, Self.grpcHead())
        let reply = try XCTUnwrap(refusal(exchange.requestBody(Self.framed(Fixtures.traces([[1]]), compressed: true), endStream: true)))
        XCTAssertEqual(reply.reply.rpcCode, 3)
    }

    func testWithoutReading_BodyIsForwardedAsItArrives() throws {
        var exchange = try exchange(extra: "")
        guard case .authenticate = exchange.receivedHead(Self.grpcHead([("grpc-encoding", "snappy")]), overloaded: false) else {
            return XCTFail("an unread payload's coding is the receiver's business")
        }
        _ = exchange.credentialsDecided(Self.allowed)
        guard case .acquire = exchange.admission(.admitted) else { return XCTFail("expected an upstream request at once") }
        guard case .forward = exchange.requestBody(Self.framed([1, 2, 3]), endStream: true) else { return XCTFail("expected forwarding") }
    }

    // MARK: Upstream head of a rewritten payload

    func testRewrittenPayload_UpstreamHeadDropsCodingAndCarriesTheNewLength() throws {
        let runtime = try ProxyRuntime(configuration: Self.files.get().configuration(upstreamPort: 14318))
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/traces")
        head.headers = HTTPHeaders([
            ("Host", "otlp.example"), ("Content-Type", "application/x-protobuf"), ("Content-Encoding", "gzip"),
            ("Content-Length", "99"),
        ])
        let request = runtime.headerPolicy.upstreamRequest(
            .http(.traces), head: ExchangeRequestHead(http1: head), authority: "otlp.example", tenant: "team-a", extra: [],
            declaresLength: true, rewrittenLength: 310)
        guard case .http1(let upstream) = request else { return XCTFail("expected an HTTP/1.1 head") }
        XCTAssertEqual(upstream.headers["Content-Length"], ["310"])
        XCTAssertEqual(upstream.headers["Content-Encoding"], [])
        XCTAssertEqual(upstream.headers["Content-Type"], ["application/x-protobuf"])

        let grpc = runtime.headerPolicy.upstreamRequest(
            .grpc(.traces), head: Self.grpcHead([("grpc-encoding", "gzip"), ("grpc-accept-encoding", "gzip")]),
            authority: "otlp.example", tenant: "team-a", extra: [], declaresLength: false, rewrittenLength: 310)
        guard case .h2c(let fields) = grpc else { return XCTFail("expected h2c fields") }
        XCTAssertFalse(fields.contains { $0.name == "grpc-encoding" })
        XCTAssertEqual(fields.filter { $0.name == "grpc-accept-encoding" }.map(\.value), ["gzip"])
    }

    // MARK: Item rate

    func testItemRate_BucketInDebtRefusesTheNextRequest() {
        let limiter = TenantRateLimiter()
        let policy = ProxyConfiguration.Limits.TenantRate(
            defaults: ProxyConfiguration.Limits.TenantRate.Rates(itemsPerSecond: 10), burstSeconds: .seconds(1))
        XCTAssertEqual(limiter.admit(tenant: "team-a", policy: policy, now: 0), .admitted)
        limiter.charge(tenant: "team-a", items: 25, policy: policy, now: 0)
        guard case .limited(.items, let retryAfter) = limiter.admit(tenant: "team-a", policy: policy, now: 1_000_000) else {
            return XCTFail("a tenant 15 items in debt is refused")
        }
        // 15 items of debt at 10 per second: about 1.5 s until the bucket holds one again.
        XCTAssertGreaterThan(retryAfter, .milliseconds(1400))
        XCTAssertLessThan(retryAfter, .milliseconds(1700))
        XCTAssertEqual(limiter.admit(tenant: "team-b", policy: policy, now: 1_000_000), .admitted, "other tenants are unaffected")
        XCTAssertEqual(limiter.admit(tenant: "team-a", policy: policy, now: 1_700_000_000), .admitted, "refilled")
    }
}
