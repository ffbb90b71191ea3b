import ProxyOTLP
import NIOHTTP1
import ProxyConfig
import ProxyHTTP2
import XCTest

@testable import ProxyCore

final class HeaderPolicyTests: XCTestCase {
    let policy = HeaderPolicy(tenantHeader: "X-Scope-OrgID", forwardAuthorization: false)

    func testHopByHopCheck_MatchesTheListExactly() {
        for name in HopByHopFields.names {
            XCTAssertTrue(HeaderPolicy.isHopByHop(name), name)
        }
        for name in ["t", "tee", "trailers", "upgrades", "connections", "keep-alivE", "expects", "http2-setting",
                     "proxy-connectio", "transfer-encodin", "proxy-authenticat", "proxy-authorizatio",
                     "content-length", "x-scope-orgid", "authorization", ""] {
            XCTAssertFalse(HeaderPolicy.isHopByHop(name), name)
        }
    }

    func testRewrite_ClientTenantCopies_AllDropped_ExactlyOneSet() {
        let client = HTTPHeaders([
            ("Host", "proxy:4318"), ("X-Scope-OrgID", "evil"), ("x-scope-orgid", "evil2"),
            ("X-SCOPE-ORGID", "evil3"), ("Content-Type", "application/x-protobuf"),
        ])
        let out = policy.upstreamRequestHeaders(from: client, tenant: "team-a")
        XCTAssertEqual(out["x-scope-orgid"], ["team-a"])
        XCTAssertEqual(out.filter { $0.name.lowercased() == "x-scope-orgid" }.count, 1)
        XCTAssertEqual(out["content-type"], ["application/x-protobuf"])
        XCTAssertEqual(out["host"], ["proxy:4318"])
    }

    func testRewrite_UnderscoreSpellingsOfOwnedHeaders_Dropped() {
        let client = HTTPHeaders([
            ("X_Scope_OrgID", "evil"), ("x-scope_orgid", "evil2"), ("X_Custom_Header", "kept"),
        ])
        let out = policy.upstreamRequestHeaders(from: client, tenant: "team-a")
        XCTAssertEqual(out.filter { $0.name.lowercased().replacingOccurrences(of: "_", with: "-") == "x-scope-orgid" }.map(\.value), ["team-a"])
        XCTAssertEqual(out["X_Custom_Header"], ["kept"], "other names with underscores pass")
    }

    func testRewrite_UnderscoreSpellingsOfLongOwnedNames_Dropped() {
        // Owned names of 64 bytes and more are matched by length through a list, shorter ones through a mask.
        let long = "X-" + String(repeating: "Claim-", count: 12) + "Subject"
        let policy = HeaderPolicy(tenantHeader: "X-Scope-OrgID", forwardAuthorization: false, ownedHeaders: [long, "X-Sub"])
        let client = HTTPHeaders([
            (long.replacingOccurrences(of: "-", with: "_"), "evil"), (long.uppercased(), "evil2"), ("x_sub", "evil3"),
            ("X_Subx", "kept"), (long + "x", "kept2"),
        ])
        let out = policy.upstreamRequestHeaders(from: client, tenant: "team-a")
        XCTAssertEqual(out.map(\.value).filter { $0.hasPrefix("evil") }, [])
        XCTAssertEqual(out["X_Subx"], ["kept"])
        XCTAssertEqual(out[long + "x"], ["kept2"])
        XCTAssertEqual(out["x-scope-orgid"], ["team-a"])
    }

    func testRewrite_AuthorizationDropped_UnlessForwarded() {
        let client = HTTPHeaders([("Authorization", "Bearer secret-token-value"), ("authorization", "Basic x")])
        XCTAssertEqual(policy.upstreamRequestHeaders(from: client, tenant: "t")["authorization"], [])
        let forwarding = HeaderPolicy(tenantHeader: "X-Scope-OrgID", forwardAuthorization: true)
        XCTAssertEqual(
            forwarding.upstreamRequestHeaders(from: client, tenant: "t")["authorization"],
            ["Bearer secret-token-value", "Basic x"])
    }

    func testRewrite_HopByHopAndConnectionNominated_Dropped_FramingKept() {
        let client = HTTPHeaders([
            ("Connection", "keep-alive, X-Scope-OrgID, X-Custom, Content-Length"),
            ("connection", "Authorization"),
            ("Keep-Alive", "timeout=5"), ("TE", "trailers"), ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"), ("Proxy-Authorization", "Basic abc"), ("Proxy-Connection", "keep-alive"),
            ("Trailer", "x"), ("Expect", "100-continue"),
            ("X-Custom", "dropped"), ("X-Other", "kept"), ("Content-Length", "12"),
        ])
        let forwarding = HeaderPolicy(tenantHeader: "X-Scope-OrgID", forwardAuthorization: true)
        let out = forwarding.upstreamRequestHeaders(from: client, tenant: "team-a")
        let names = Set(out.map { $0.name.lowercased() })
        XCTAssertEqual(names, ["host", "x-other", "content-length", "x-scope-orgid"])
        XCTAssertEqual(out["content-length"], ["12"])
        XCTAssertEqual(out["x-scope-orgid"], ["team-a"], "Connection: must never remove the header the proxy sets")
    }

    func testRewrite_CustomTenantHeader_WrittenInConfiguredSpelling() {
        let custom = HeaderPolicy(tenantHeader: "X-Tenant", forwardAuthorization: false)
        let out = custom.upstreamRequestHeaders(
            from: HTTPHeaders([("x-tenant", "evil"), ("X-Scope-OrgID", "kept-as-ordinary")]), tenant: "team-a")
        XCTAssertEqual(out.filter { $0.name == "X-Tenant" }.map(\.value), ["team-a"])
        XCTAssertEqual(out["x-tenant"], ["team-a"])
        XCTAssertEqual(out["x-scope-orgid"], ["kept-as-ordinary"])
    }

    func testResponseHeaders_HopByHopDropped() {
        let upstream = HTTPHeaders([
            ("Content-Type", "application/x-protobuf"), ("Connection", "close, X-Internal"), ("X-Internal", "1"),
            ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked"), ("Content-Length", "0"),
        ])
        let out = policy.clientResponseHeaders(from: upstream)
        XCTAssertEqual(Set(out.map { $0.name.lowercased() }), ["content-type", "content-length"])
    }
}

final class LocalReplyTests: XCTestCase {
    func testProtobufStatus_WireBytes() {
        // code 16, message "auth": 08 10 12 04 'a' 'u' 't' 'h'
        XCTAssertEqual(LocalReply.protobufStatus(code: 16, message: "auth"), [0x08, 0x10, 0x12, 0x04, 0x61, 0x75, 0x74, 0x68])
        XCTAssertEqual(LocalReply.protobufStatus(code: 300, message: "")[0...2], [0x08, 0xAC, 0x02])
    }

    func testJSONBody_IsGoogleRpcStatus() {
        let body = LocalReply.upstreamUnavailable.body(encoding: .json, allocator: .init())
        XCTAssertEqual(String(buffer: body), #"{"code":14,"message":"upstream unavailable, retry later"}"#)
    }

    func testAuthFailure_Is401WithChallenge_AndUnauthenticated() {
        for failure in [AuthFailureSample.missing, .unknown] {
            let reply = LocalReply.authenticationFailed(failure.value)
            XCTAssertEqual(reply.status, .unauthorized)
            XCTAssertEqual(reply.rpcCode, 16)
            XCTAssertTrue(reply.extraHeaders.contains { $0.0 == "WWW-Authenticate" && $0.1.hasPrefix("Bearer") })
            XCTAssertFalse(reply.message.contains("token"), "the client gets the generic reply, not the reason")
        }
    }

    func testUpstreamFailures_AreRetryableStatuses() {
        XCTAssertEqual(LocalReply.upstreamUnavailable.status, .serviceUnavailable)
        XCTAssertTrue(LocalReply.upstreamUnavailable.extraHeaders.contains { $0.0 == "Retry-After" })
        XCTAssertEqual(LocalReply.upstreamTimeout.status, .gatewayTimeout)
    }

    func testRouting() {
        XCTAssertEqual(OTLPSignal(httpTarget: "/v1/traces"), .traces)
        XCTAssertEqual(OTLPSignal(httpTarget: "/v1/metrics?x=1"), .metrics)
        XCTAssertEqual(OTLPSignal(httpTarget: "/v1/logs"), .logs)
        XCTAssertEqual(OTLPSignal(httpTarget: "/v1development/profiles"), .profiles)
        XCTAssertEqual(OTLPSignal(httpTarget: "/v1development/profiles?x=1"), .profiles)
        XCTAssertNil(OTLPSignal(httpTarget: "/v1/profiles"))
        XCTAssertNil(OTLPSignal(httpTarget: "/v1development/traces"))
        XCTAssertNil(OTLPSignal(httpTarget: "/v1/traces/"))
        XCTAssertNil(OTLPSignal(httpTarget: "/V1/TRACES"))
        XCTAssertNil(OTLPSignal(httpTarget: "//v1/traces"))
        XCTAssertEqual(OTLPEncoding(contentType: "Application/JSON; charset=utf-8"), .json)
        XCTAssertEqual(OTLPEncoding(contentType: "application/x-protobuf"), .protobuf)
        XCTAssertEqual(OTLPEncoding(contentType: nil), .protobuf)
        XCTAssertEqual(OTLPEncoding(contentType: " application/json \t"), .json)
        XCTAssertEqual(OTLPEncoding(contentType: "application/jsonx"), .protobuf)
        XCTAssertEqual(OTLPEncoding(contentType: "application/js"), .protobuf)
        XCTAssertEqual(OTLPEncoding(contentType: "application/ json"), .protobuf)
        XCTAssertEqual(OTLPEncoding(contentType: "text/plain; x=application/json"), .protobuf)
    }
}

import ProxyAuth

enum AuthFailureSample {
    case missing, unknown
    var value: AuthFailure { self == .missing ? .missingCredential : .unknownToken }
}

final class OwnedHeaderTests: XCTestCase {
    func testClaimHeaders_ClientCopiesDropped_ProxyValuesAdded() {
        let policy = HeaderPolicy(tenantHeader: "X-Scope-OrgID", forwardAuthorization: false, ownedHeaders: ["X-OTLP-Subject"])
        let client = HTTPHeaders([("x-otlp-subject", "forged"), ("X-OTLP-SUBJECT", "forged2"), ("X-Other", "kept")])
        let out = policy.upstreamRequestHeaders(from: client, tenant: "team-a", extra: [(name: "X-OTLP-Subject", value: "svc-1")])
        XCTAssertEqual(out["x-otlp-subject"], ["svc-1"])
        XCTAssertEqual(out["x-other"], ["kept"])
        let fields = policy.upstreamRequestFields(
            from: [ProxyHTTP2.HTTP2HeaderField(name: "x-otlp-subject", value: "forged")], tenant: "team-a",
            extra: [(name: "X-OTLP-Subject", value: "svc-1")]
        ).filter { !$0.name.hasPrefix(":") && $0.name != "te" }
        XCTAssertEqual(fields.map(\.name), ["x-scope-orgid", "x-otlp-subject"], "HTTP/2 names are lower case")
        XCTAssertEqual(fields.last?.value, "svc-1")
    }

    func testAuthorizationFailures_401WithEveryChallenge_403WithNone() {
        let challenges = [#"Bearer realm="otlp""#, #"Basic realm="otlp", charset="UTF-8""#]
        let unauthorized = LocalReply.authenticationFailed(.wrongPassword, challenges: challenges)
        XCTAssertEqual(unauthorized.status, .unauthorized)
        XCTAssertEqual(unauthorized.extraHeaders.map(\.1), challenges)
        let forbidden = LocalReply.authenticationFailed(.signalNotAllowed, challenges: challenges)
        XCTAssertEqual(forbidden.status, .forbidden)
        XCTAssertEqual(forbidden.rpcCode, 7)
        XCTAssertTrue(forbidden.extraHeaders.isEmpty)
        XCTAssertEqual(LocalReply.authenticationUnavailable.status, .serviceUnavailable)
        XCTAssertEqual(LocalReply.authenticationUnavailable.rpcCode, 14)
    }
}

extension HeaderPolicy {
    /// The headers the one upstream builder (`upstreamRequest`) gives the HTTP receiver for an HTTP/1.1
    /// client request with these headers, addressed to `proxy:4318`.
    func upstreamRequestHeaders(
        from client: HTTPHeaders, tenant: String, extra: [(name: String, value: String)] = []
    ) -> HTTPHeaders {
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/traces")
        head.headers = client
        guard case .http1(let out) = upstreamRequest(
            .http(.traces), head: ExchangeRequestHead(http1: head), authority: "proxy:4318", tenant: tenant, extra: extra,
            declaresLength: true)
        else { preconditionFailure("an OTLP/HTTP route builds an HTTP/1.1 head") }
        return out.headers
    }

    /// The fields the one upstream builder gives the gRPC receiver for an HTTP/2 client request.
    func upstreamRequestFields(
        from client: [HTTP2HeaderField], tenant: String, extra: [(name: String, value: String)] = []
    ) -> [HTTP2HeaderField] {
        guard case .h2c(let out) = upstreamRequest(
            .grpc(.traces), head: ExchangeRequestHead(http2: client, endStream: false), authority: "proxy:4317",
            tenant: tenant, extra: extra, declaresLength: false)
        else { preconditionFailure("a gRPC route builds an h2c head") }
        return out
    }
}
