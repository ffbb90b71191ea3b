import ProxyOTLP
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import ProxyAuth
import ProxyConfig
import ProxyHTTP2
import XCTest

@testable import ProxyCore

/// Collects what an exchange counted: its finished record and the refusal counters.
final class RecordingRecorder: ExchangeRecorder, @unchecked Sendable {
    private let lock = NIOLock()
    private var _records: [RequestRecord] = []
    private var _upstreamErrors: [String] = []
    private var _authFailures: [String] = []
    private var _sheds = 0

    var records: [RequestRecord] { lock.withLock { _records } }
    var upstreamErrors: [String] { lock.withLock { _upstreamErrors } }
    var authFailures: [String] { lock.withLock { _authFailures } }
    var sheds: Int { lock.withLock { _sheds } }

    func requestFinished(_ record: RequestRecord) { lock.withLock { _records.append(record) } }
    func authFailed(method: String, reason: String) { lock.withLock { _authFailures.append("\(method)/\(reason)") } }
    func upstreamError(kind: String) { lock.withLock { _upstreamErrors.append(kind) } }
    func loadShed() { lock.withLock { _sheds += 1 } }
}

/// The exchange core without channels: each test feeds inputs and compares what it decides.
final class ExchangeTests: XCTestCase {
    nonisolated(unsafe) private static let files = Result { try TestFiles() }
    private var recorder = RecordingRecorder()

    private func runtime() throws -> ProxyRuntime {
        try ProxyRuntime(configuration: Self.files.get().configuration(upstreamPort: 14318))
    }

    private func exchange(_ client: ClientProtocol = .http2, runtime: ProxyRuntime? = nil) throws -> Exchange {
        Exchange(
            runtime: try runtime ?? self.runtime(), client: client, peer: "192.0.2.1:5000", peerCertificate: nil,
            defaultAuthority: (grpc: "127.0.0.1:14317", http: "127.0.0.1:14318"), recorder: recorder,
            logger: Logger(label: "test"))
    }

    // MARK: Fixtures

    private static func grpcHead(path: String = OTLPSignal.traces.grpcPath, method: String = "POST", extra: [(String, String)] = [], endStream: Bool = false) -> ExchangeRequestHead {
        var fields = [
            HTTP2HeaderField(name: ":method", value: method), HTTP2HeaderField(name: ":scheme", value: "https"),
            HTTP2HeaderField(name: ":authority", value: "otlp.example:4317"), HTTP2HeaderField(name: ":path", value: path),
            HTTP2HeaderField(name: "content-type", value: "application/grpc"),
            HTTP2HeaderField(name: "authorization", value: "Bearer \(TestFiles.token)"),
        ]
        for (name, value) in extra { fields.append(HTTP2HeaderField(name: name, value: value)) }
        return ExchangeRequestHead(http2: fields, endStream: endStream)
    }

    private static func h2HTTPHead(target: String = "/v1/traces", extra: [(String, String)] = [], endStream: Bool = false) -> ExchangeRequestHead {
        var fields = [
            HTTP2HeaderField(name: ":method", value: "POST"), HTTP2HeaderField(name: ":scheme", value: "https"),
            HTTP2HeaderField(name: ":authority", value: "otlp.example:4318"), HTTP2HeaderField(name: ":path", value: target),
            HTTP2HeaderField(name: "content-type", value: "application/x-protobuf"),
        ]
        for (name, value) in extra { fields.append(HTTP2HeaderField(name: name, value: value)) }
        return ExchangeRequestHead(http2: fields, endStream: endStream)
    }

    private static func h1Head(
        target: String = "/v1/traces", method: HTTPMethod = .POST, version: HTTPVersion = .http1_1,
        headers: [(String, String)] = [("Host", "otlp.example:4318"), ("Content-Type", "application/x-protobuf"), ("Content-Length", "3")]
    ) -> ExchangeRequestHead {
        var head = HTTPRequestHead(version: version, method: method, uri: target)
        head.headers = HTTPHeaders(headers)
        return ExchangeRequestHead(http1: head)
    }

    private func reply(_ action: Exchange.HeadAction, file: StaticString = #filePath, line: UInt = #line) -> ExchangeReply? {
        guard case .reply(let reply) = action else {
            XCTFail("expected a local reply, got \(action)", file: file, line: line)
            return nil
        }
        return reply
    }

    /// Runs an exchange from head to the upstream request, with the credentials allowed for `tenant`.
    private func admitted(_ exchange: inout Exchange, _ head: ExchangeRequestHead, tenant: String = "team-a") -> UpstreamRequest? {
        guard case .authenticate = exchange.receivedHead(head, overloaded: false) else {
            XCTFail("expected authentication")
            return nil
        }
        guard case .admit = exchange.credentialsDecided(.allowed(AuthDecision(principal: Principal(name: "token:ci", method: .bearer), tenant: tenant)))
        else {
            XCTFail("expected admission")
            return nil
        }
        guard case .acquire(let request) = exchange.admission(.admitted) else {
            XCTFail("expected an upstream request")
            return nil
        }
        return request
    }

    // MARK: Head

    func testHead_UnknownPath_RepliesNotFound() throws {
        var exchange = try exchange(.http1(.http1_1))
        let reply = try XCTUnwrap(reply(exchange.receivedHead(Self.h1Head(target: "/v2/traces"), overloaded: false)))
        XCTAssertEqual(reply.cause, .unknownPath)
        XCTAssertEqual(reply.reply.status, .notFound)
        XCTAssertFalse(reply.closeConnection)
        XCTAssertEqual(recorder.records.map(\.outcome), ["refused"])
        XCTAssertEqual(recorder.records.first?.status, 404)
    }

    func testHead_GRPCUnknownMethod_RepliesUnimplementedTrailersOnly() throws {
        var exchange = try exchange()
        let reply = try XCTUnwrap(reply(exchange.receivedHead(Self.grpcHead(path: "/pkg.Other/Export"), overloaded: false)))
        XCTAssertEqual(reply.cause, .unknownMethod)
        XCTAssertTrue(reply.isGRPC)
        let fields = Dictionary(uniqueKeysWithValues: reply.http2Fields.map { ($0.name, $0.value) })
        XCTAssertEqual(fields[":status"], "200")
        XCTAssertEqual(fields["grpc-status"], "12")
        XCTAssertEqual(recorder.records.first?.grpcStatus, 12)
        XCTAssertEqual(recorder.records.first?.transport, "grpc")
    }

    func testHead_GetOnOTLPPath_RepliesMethodNotAllowed() throws {
        var exchange = try exchange(.http1(.http1_1))
        let reply = try XCTUnwrap(reply(exchange.receivedHead(Self.h1Head(method: .GET), overloaded: false)))
        XCTAssertEqual(reply.cause, .methodNotAllowed)
        XCTAssertEqual(reply.reply.extraHeaders.first?.1, "POST")
    }

    func testHead_H1TwoHosts_RepliesMalformedAndCloses() throws {
        var exchange = try exchange(.http1(.http1_1))
        let head = Self.h1Head(headers: [("Host", "a.example"), ("Host", "b.example"), ("Content-Length", "1")])
        let reply = try XCTUnwrap(reply(exchange.receivedHead(head, overloaded: false)))
        XCTAssertEqual(reply.cause, .malformed(.conflictingHost))
        XCTAssertEqual(reply.reply.status, .badRequest)
        XCTAssertTrue(reply.closeConnection)
        XCTAssertEqual(recorder.records.first?.status, 400)
    }

    func testHead_H11WithoutHost_RepliesMalformed_H10Accepted() throws {
        var exchange = try exchange(.http1(.http1_1))
        let reply = try XCTUnwrap(reply(exchange.receivedHead(Self.h1Head(headers: [("Content-Length", "1")]), overloaded: false)))
        XCTAssertEqual(reply.cause, .malformed(.missingHost))
        var old = try self.exchange(.http1(.http1_0))
        guard case .http1(let upstream) = admitted(&old, Self.h1Head(version: .http1_0, headers: [("Content-Length", "1")])) else {
            return XCTFail("expected an HTTP/1.1 upstream head")
        }
        XCTAssertEqual(upstream.headers["host"], ["127.0.0.1:14318"], "the receiver always gets one Host")
    }

    func testHead_H2HostDiffersFromAuthority_RepliesMalformed() throws {
        var http = try exchange()
        let httpReply = try XCTUnwrap(reply(http.receivedHead(Self.h2HTTPHead(extra: [("host", "evil.example")]), overloaded: false)))
        XCTAssertEqual(httpReply.cause, .malformed(.conflictingHost))
        XCTAssertEqual(httpReply.reply.status, .badRequest)
        var grpc = try exchange()
        let grpcReply = try XCTUnwrap(reply(grpc.receivedHead(Self.grpcHead(extra: [("host", "evil.example")]), overloaded: false)))
        XCTAssertTrue(grpcReply.isGRPC)
        XCTAssertEqual(grpcReply.reply.rpcCode, 3, "INVALID_ARGUMENT")
    }

    func testHead_H2HostSameAsAuthority_ForwardedWithExactlyOneHost() throws {
        var exchange = try exchange()
        guard case .http1(let upstream) = admitted(&exchange, Self.h2HTTPHead(extra: [("host", "otlp.example:4318")])) else {
            return XCTFail("expected an HTTP/1.1 upstream head")
        }
        XCTAssertEqual(upstream.headers["host"], ["otlp.example:4318"])
    }

    func testHead_H1DuplicateContentLength_RepliesMalformedAndCloses() throws {
        var exchange = try exchange(.http1(.http1_1))
        let head = Self.h1Head(headers: [("Host", "h"), ("Content-Length", "3"), ("Content-Length", "3")])
        let reply = try XCTUnwrap(reply(exchange.receivedHead(head, overloaded: false)))
        XCTAssertEqual(reply.cause, .malformed(.duplicateContentLength))
        XCTAssertTrue(reply.closeConnection)
    }

    func testHead_Upgrade_RepliesMalformedAndCloses() throws {
        var exchange = try exchange(.http1(.http1_1))
        let head = Self.h1Head(headers: [("Host", "h"), ("Upgrade", "h2c"), ("Content-Length", "1")])
        let reply = try XCTUnwrap(reply(exchange.receivedHead(head, overloaded: false)))
        XCTAssertEqual(reply.cause, .malformed(.ambiguousFraming))
        XCTAssertTrue(reply.closeConnection)
    }

    func testHead_DeclaredBodyOverLimit_RepliesTooLargeAndCloses() throws {
        var exchange = try exchange(.http1(.http1_1))
        let head = Self.h1Head(headers: [("Host", "h"), ("Content-Length", "\(2 << 20)")])
        let reply = try XCTUnwrap(reply(exchange.receivedHead(head, overloaded: false)))
        XCTAssertEqual(reply.cause, .bodyTooLarge)
        XCTAssertEqual(reply.reply.status, .payloadTooLarge)
        XCTAssertTrue(reply.closeConnection)
    }

    func testHead_Overloaded_RepliesShedAndRecordsShed() throws {
        var exchange = try exchange()
        let reply = try XCTUnwrap(reply(exchange.receivedHead(Self.grpcHead(), overloaded: true)))
        XCTAssertEqual(reply.cause, .shed)
        XCTAssertEqual(reply.reply.rpcCode, 14, "UNAVAILABLE, which exporters retry")
        XCTAssertEqual(recorder.sheds, 1)
        XCTAssertEqual(recorder.records.map(\.outcome), ["shed"])
    }

    func testHead_Valid_AuthenticatesTheRequestsCredentials() throws {
        var exchange = try exchange()
        guard case .authenticate(let credentials) = exchange.receivedHead(Self.grpcHead(extra: [("grpc-timeout", "5S")]), overloaded: false) else {
            return XCTFail("expected authentication")
        }
        XCTAssertEqual(credentials.authorization, ["Bearer \(TestFiles.token)"])
        XCTAssertEqual(credentials.signal, .traces)
        XCTAssertEqual(exchange.grpcTimeout, .seconds(5))
        XCTAssertEqual(exchange.phase, .authenticating)
        XCTAssertTrue(recorder.records.isEmpty)
    }

    // MARK: Credentials and admission

    func testDecided_Refused_Replies401WithChallengesAndRecordsRefused() throws {
        var exchange = try exchange(.http1(.http1_1))
        _ = exchange.receivedHead(Self.h1Head(), overloaded: false)
        guard case .reply(let reply) = exchange.credentialsDecided(.refused(.unknownToken)) else { return XCTFail("expected a reply") }
        XCTAssertEqual(reply.reply.status, .unauthorized)
        XCTAssertEqual(reply.reply.extraHeaders.map(\.0), ["WWW-Authenticate"])
        XCTAssertFalse(reply.closeConnection, "no Expect: the body is read and dropped, the connection kept")
        XCTAssertEqual(recorder.authFailures, ["bearer/unknown_token"])
        XCTAssertEqual(recorder.records.map(\.outcome), ["refused"])
        XCTAssertEqual(recorder.records.first?.authReason, "unknown_token")
    }

    func testDecided_RefusedWithExpectContinue_ClosesInsteadOfReadingTheBody() throws {
        var exchange = try exchange(.http1(.http1_1))
        _ = exchange.receivedHead(
            Self.h1Head(headers: [("Host", "h"), ("Expect", "100-continue"), ("Content-Length", "3")]), overloaded: false)
        guard case .reply(let reply) = exchange.credentialsDecided(.refused(.unknownToken)) else { return XCTFail("expected a reply") }
        XCTAssertTrue(reply.closeConnection)
    }

    func testDecided_Forbidden_GRPC_PermissionDenied() throws {
        var exchange = try exchange()
        _ = exchange.receivedHead(Self.grpcHead(), overloaded: false)
        guard case .reply(let reply) = exchange.credentialsDecided(.refused(.signalNotAllowed)) else { return XCTFail("expected a reply") }
        XCTAssertEqual(reply.reply.rpcCode, 7)
        XCTAssertEqual(recorder.records.first?.grpcStatus, 7)
    }

    func testDecided_Unavailable_Replies503Retryable() throws {
        var exchange = try exchange()
        _ = exchange.receivedHead(Self.h2HTTPHead(), overloaded: false)
        guard case .reply(let reply) = exchange.credentialsDecided(.unavailable(reason: "jwt_keys_unavailable")) else {
            return XCTFail("expected a reply")
        }
        XCTAssertEqual(reply.reply.status, .serviceUnavailable)
        XCTAssertEqual(recorder.records.first?.authResult, "unavailable")
    }

    func testDecided_RateLimited_RepliesLimitedAndRecordsLimited() throws {
        var exchange = try exchange()
        _ = exchange.receivedHead(Self.grpcHead(), overloaded: false)
        guard case .admit(let tenant, _) = exchange.credentialsDecided(
            .allowed(AuthDecision(principal: Principal(name: "token:ci", method: .bearer), tenant: "team-a")))
        else { return XCTFail("expected admission") }
        XCTAssertEqual(tenant, "team-a")
        guard case .reply(let reply) = exchange.admission(.limited(retryAfter: .milliseconds(1500))) else {
            return XCTFail("expected a reply")
        }
        XCTAssertEqual(reply.reply.rpcCode, 8)
        XCTAssertTrue(reply.http2Fields.contains { $0.name == "grpc-status-details-bin" }, "RetryInfo, so exporters retry")
        XCTAssertEqual(recorder.records.map(\.outcome), ["limited"])
    }

    func testDecided_AfterTheExchangeEnded_Ignored() throws {
        var exchange = try exchange()
        _ = exchange.receivedHead(Self.h2HTTPHead(), overloaded: false)
        exchange.clientGone()
        guard case .ignore = exchange.credentialsDecided(.refused(.unknownToken)) else { return XCTFail("expected nothing to do") }
        XCTAssertEqual(recorder.records.map(\.outcome), ["client_gone"])
    }

    // MARK: The upstream request

    func testAdmitted_H2ToH1_QueryKeptAndOneHostFromAuthority() throws {
        var exchange = try exchange()
        let head = Self.h2HTTPHead(target: "/v1/traces?source=edge", extra: [("x-scope-orgid", "evil"), ("content-length", "3")])
        guard case .http1(let upstream) = admitted(&exchange, head) else { return XCTFail("expected an HTTP/1.1 head") }
        XCTAssertEqual(upstream.uri, "/v1/traces?source=edge")
        XCTAssertEqual(upstream.headers["host"], ["otlp.example:4318"])
        XCTAssertEqual(upstream.headers["x-scope-orgid"], ["team-a"])
        XCTAssertEqual(upstream.headers["content-length"], ["3"])
    }

    func testAdmitted_H1_QueryKeptLikeH2() throws {
        var exchange = try exchange(.http1(.http1_1))
        guard case .http1(let upstream) = admitted(&exchange, Self.h1Head(target: "/v1/traces?source=edge")) else {
            return XCTFail("expected an HTTP/1.1 head")
        }
        XCTAssertEqual(upstream.uri, "/v1/traces?source=edge")
        XCTAssertEqual(upstream.headers["host"], ["otlp.example:4318"])
    }

    func testAdmitted_H2EndedWithHeadAndNoLength_DeclaresEmptyBody() throws {
        var exchange = try exchange()
        guard case .http1(let upstream) = admitted(&exchange, Self.h2HTTPHead(endStream: true)) else {
            return XCTFail("expected an HTTP/1.1 head")
        }
        XCTAssertEqual(upstream.headers["content-length"], ["0"])
    }

    func testAdmitted_GRPC_H2CFieldsWithClientAuthorityAndTenant() throws {
        var exchange = try exchange()
        guard case .h2c(let fields) = admitted(&exchange, Self.grpcHead(extra: [("x-scope-orgid", "evil")])) else {
            return XCTFail("expected an h2c head")
        }
        let pairs = fields.map { "\($0.name)=\($0.value)" }
        XCTAssertEqual(Array(pairs.prefix(5)), [
            ":method=POST", ":scheme=http", ":authority=otlp.example:4317", ":path=\(OTLPSignal.traces.grpcPath)", "te=trailers",
        ])
        XCTAssertEqual(fields.filter { $0.name == "x-scope-orgid" }.map(\.value), ["team-a"])
        XCTAssertFalse(fields.contains { $0.name == "authorization" })
        XCTAssertEqual(exchange.admittedTenant, "team-a")
    }

    func testProfiles_GRPC_RoutedToTheGRPCReceiverWithItsMethod() throws {
        var exchange = try exchange()
        let head = Self.grpcHead(path: "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export")
        guard case .authenticate(let credentials) = exchange.receivedHead(head, overloaded: false) else {
            return XCTFail("expected authentication")
        }
        XCTAssertEqual(credentials.signal, .profiles)
        XCTAssertEqual(exchange.route, .grpc(.profiles))
        var forwarded = try self.exchange()
        guard case .h2c(let fields) = admitted(&forwarded, head) else { return XCTFail("expected an h2c head") }
        XCTAssertEqual(
            fields.first { $0.name == ":path" }?.value,
            "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export")
        XCTAssertEqual(fields.filter { $0.name == "x-scope-orgid" }.map(\.value), ["team-a"])
    }

    func testProfiles_HTTP_RoutedToTheHTTPReceiverFromBothClientProtocols() throws {
        var h1 = try exchange(.http1(.http1_1))
        guard case .http1(let fromH1) = admitted(&h1, Self.h1Head(target: "/v1development/profiles")) else {
            return XCTFail("expected an HTTP/1.1 head")
        }
        XCTAssertEqual(fromH1.uri, "/v1development/profiles")
        XCTAssertEqual(h1.route, .http(.profiles))
        var h2 = try exchange()
        guard case .http1(let fromH2) = admitted(&h2, Self.h2HTTPHead(target: "/v1development/profiles")) else {
            return XCTFail("expected an HTTP/1.1 head")
        }
        XCTAssertEqual(fromH2.uri, "/v1development/profiles")
        XCTAssertEqual(fromH2.headers["x-scope-orgid"], ["team-a"])
        // Only the exact development path: a v1 spelling is not a signal.
        var v1 = try exchange(.http1(.http1_1))
        XCTAssertEqual(try XCTUnwrap(reply(v1.receivedHead(Self.h1Head(target: "/v1/profiles"), overloaded: false))).cause, .unknownPath)
    }

    func testProfiles_SignalNotAllowed_Replies403AndPermissionDenied() throws {
        var http = try exchange(.http1(.http1_1))
        _ = http.receivedHead(Self.h1Head(target: "/v1development/profiles"), overloaded: false)
        guard case .reply(let forbidden) = http.credentialsDecided(.refused(.signalNotAllowed)) else { return XCTFail("expected a reply") }
        XCTAssertEqual(forbidden.reply.status, .forbidden)
        var grpc = try exchange()
        _ = grpc.receivedHead(
            Self.grpcHead(path: OTLPSignal.profiles.grpcPath), overloaded: false)
        guard case .reply(let denied) = grpc.credentialsDecided(.refused(.signalNotAllowed)) else { return XCTFail("expected a reply") }
        XCTAssertEqual(denied.reply.rpcCode, 7)
        XCTAssertEqual(recorder.records.map(\.signal), ["profiles", "profiles"])
        XCTAssertEqual(recorder.authFailures, ["policy/signal_not_allowed", "policy/signal_not_allowed"])
    }

    // MARK: Body

    func testBody_OverLimit_RepliesTooLarge() throws {
        var exchange = try exchange()
        _ = admitted(&exchange, Self.h2HTTPHead())
        exchange.upstreamAttached()
        guard case .forward = exchange.requestBody(ByteBuffer(repeating: 1, count: 1 << 20), endStream: false) else {
            return XCTFail("expected forwarding")
        }
        guard case .end(.reply(let reply)) = exchange.requestBody(ByteBuffer(repeating: 1, count: 1), endStream: false) else {
            return XCTFail("expected a reply")
        }
        XCTAssertEqual(reply.cause, .bodyTooLarge)
    }

    func testBody_GRPCMessageOverLimit_RepliesResourceExhausted() throws {
        var exchange = try exchange()
        _ = exchange.receivedHead(Self.grpcHead(), overloaded: false)
        var prefix = ByteBuffer()
        prefix.writeInteger(UInt8(0))
        prefix.writeInteger(UInt32(5 << 20))
        guard case .end(.reply(let reply)) = exchange.requestBody(prefix, endStream: false) else { return XCTFail("expected a reply") }
        XCTAssertEqual(reply.cause, .messageTooLarge)
        XCTAssertEqual(reply.reply.rpcCode, 8)
    }

    // MARK: Upstream and relay

    func testUpstreamFailed_Connect_Replies503AndRecordsUpstreamError() throws {
        var exchange = try exchange()
        _ = admitted(&exchange, Self.grpcHead(endStream: true))
        guard case .reply(let reply) = exchange.upstreamFailed(.connect) else { return XCTFail("expected a reply") }
        XCTAssertEqual(reply.reply.rpcCode, 14)
        XCTAssertEqual(recorder.upstreamErrors, ["connect"])
        XCTAssertEqual(recorder.records.map(\.outcome), ["upstream_error"])
    }

    func testUpstreamReset_BeforeHead_Replies503() throws {
        var exchange = try exchange()
        _ = admitted(&exchange, Self.h2HTTPHead(endStream: true))
        exchange.upstreamAttached()
        guard case .reply(let reply) = exchange.upstreamBroke(.reset) else { return XCTFail("expected a reply") }
        XCTAssertEqual(reply.reply.status, .serviceUnavailable)
    }

    func testUpstreamReset_AfterHead_GRPC_TrailersUnavailable() throws {
        var exchange = try exchange()
        _ = admitted(&exchange, Self.grpcHead(endStream: true))
        exchange.upstreamAttached()
        _ = exchange.responseHead(status: 200, fields: [(name: "content-type", value: "application/grpc")], endStream: false, now: .now())
        var message = ByteBuffer()
        message.writeBytes([0, 0, 0, 0, 2, 0x0A, 0x00])
        exchange.responseData(message, endStream: false, now: .now())
        guard case .trailers(let fields) = exchange.upstreamBroke(.reset) else { return XCTFail("expected trailers") }
        XCTAssertEqual(fields.first { $0.name == "grpc-status" }?.value, "14")
        XCTAssertEqual(recorder.records.first?.grpcStatus, 14)
        XCTAssertEqual(recorder.records.map(\.outcome), ["upstream_error"])
    }

    func testUpstreamReset_MidMessage_GRPC_Aborts() throws {
        var exchange = try exchange()
        _ = admitted(&exchange, Self.grpcHead(endStream: true))
        exchange.upstreamAttached()
        _ = exchange.responseHead(status: 200, fields: [(name: "content-type", value: "application/grpc")], endStream: false, now: .now())
        exchange.responseData(ByteBuffer(bytes: [0, 0, 0, 0, 9, 1]), endStream: false, now: .now())
        guard case .abort = exchange.upstreamBroke(.reset) else { return XCTFail("expected an abort") }
    }

    func testUpstreamClosed_AfterHead_HTTP_Aborts() throws {
        var exchange = try exchange(.http1(.http1_1))
        _ = admitted(&exchange, Self.h1Head())
        exchange.upstreamAttached()
        _ = exchange.responseHead(status: 200, fields: [(name: "content-length", value: "10")], endStream: false, now: .now())
        guard case .abort = exchange.upstreamBroke(.reset) else { return XCTFail("expected an abort") }
        XCTAssertEqual(recorder.upstreamErrors, ["reset"])
    }

    func testResponseHead_ConnectionNominatedHeadersNeverReachAnHTTP2Client() throws {
        var exchange = try exchange()
        _ = admitted(&exchange, Self.h2HTTPHead(endStream: true))
        exchange.upstreamAttached()
        let head = exchange.responseHead(
            status: 200,
            fields: [(name: "Connection", value: "X-Internal"), (name: "X-Internal", value: "secret"), (name: "Content-Type", value: "application/x-protobuf")],
            endStream: false, now: .now())
        guard case .http2(let fields) = head else { return XCTFail("expected HTTP/2 fields") }
        XCTAssertEqual(fields.map(\.name), [":status", "content-type"])
    }

    func testResponse_EndedForwarded_RecordsForwardedWithStatus() throws {
        var exchange = try exchange(.http1(.http1_1))
        _ = admitted(&exchange, Self.h1Head())
        exchange.upstreamAttached()
        _ = exchange.requestBody(ByteBuffer(bytes: [1, 2, 3]), endStream: true)
        guard case .http1(let head) = exchange.responseHead(status: 200, fields: [], endStream: false, now: .now()) else {
            return XCTFail("expected an HTTP/1.1 head")
        }
        XCTAssertEqual(head.version, .http1_1)
        exchange.responseData(ByteBuffer(bytes: [9, 9]), endStream: false, now: .now())
        exchange.responseEnded()
        let record = try XCTUnwrap(recorder.records.first)
        XCTAssertEqual(record.outcome, "forwarded")
        XCTAssertEqual(record.status, 200)
        XCTAssertEqual(record.bytesIn, 3)
        XCTAssertEqual(record.bytesOut, 2)
        XCTAssertEqual(record.tenant, "team-a")
    }

    // MARK: Timers and the client

    func testUpstreamTimer_BeforeDeadline_Rearms_AfterIt_Replies504() throws {
        var exchange = try exchange(.http1(.http1_1))
        _ = admitted(&exchange, Self.h1Head())
        exchange.upstreamAttached()
        _ = exchange.requestBody(ByteBuffer(bytes: [1, 2, 3]), endStream: true)
        let sent = NIODeadline.now()
        exchange.requestSentUpstream(now: sent)
        guard case .rearm(let deadline) = exchange.upstreamTimerFired(now: sent + .milliseconds(10)) else {
            return XCTFail("expected to check again later")
        }
        XCTAssertEqual(deadline, sent + .seconds(2), "upstream.timeout after the request went upstream")
        guard case .end(.reply(let reply)) = exchange.upstreamTimerFired(now: deadline) else { return XCTFail("expected a reply") }
        XCTAssertEqual(reply.reply.status, .gatewayTimeout)
        XCTAssertTrue(reply.closeConnection == false)
        XCTAssertEqual(recorder.upstreamErrors, ["timeout"])
    }

    func testDeadlineExceeded_WhileAuthenticating_RepliesDeadlineExceeded() throws {
        var exchange = try exchange()
        _ = exchange.receivedHead(Self.grpcHead(extra: [("grpc-timeout", "100m")]), overloaded: false)
        guard case .end(.reply(let reply)) = exchange.deadlineExceeded(now: .now()) else { return XCTFail("expected a reply") }
        XCTAssertEqual(reply.reply.rpcCode, 4)
        guard case .ignore = exchange.credentialsDecided(.refused(.unknownToken)) else { return XCTFail("decided after the end") }
    }

    func testClientGone_MidResponse_RecordsClientGoneOnce() throws {
        var exchange = try exchange()
        _ = admitted(&exchange, Self.grpcHead(endStream: true))
        exchange.upstreamAttached()
        _ = exchange.responseHead(status: 200, fields: [], endStream: false, now: .now())
        exchange.clientGone()
        exchange.clientGone()
        XCTAssertNil(exchange.upstreamBroke(.reset))
        XCTAssertEqual(recorder.records.map(\.outcome), ["client_gone"])
    }
}
