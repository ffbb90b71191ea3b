import ProxyOTLP
import Foundation
import XCTest
@testable import ProxyAuth
import ProxyTLS

/// The decision rules of docs/security.md, one group per rule, with certificates, bearer tokens and
/// Basic credentials (JWT cases are in AuthenticatorJWTTests).
final class AuthenticatorTests: XCTestCase {
    static let ciToken = "ci-runner-token-0123456789abcdef"
    static let tracesToken = "traces-only-token-0123456789abcd"

    static let tokens: BearerTokenTable = {
        func entry(_ principal: String, _ tenant: String, _ token: String, _ signals: Set<OTLPSignal>? = nil) -> BearerTokenEntry {
            BearerTokenEntry(principal: principal, tenant: tenant, tokenSHA256: Digest.sha256(Array(token.utf8)), signals: signals)
        }
        return BearerTokenTable(entries: [
            entry("ci-runner", "team-ci", ciToken),
            entry("traces-writer", "team-t", tracesToken, [.traces]),
            entry("bad-tenant", "a/b", "bad-tenant-token-0123456789abcde"),
        ])
    }()

    static let spiffeCert = PeerCertificate.fixture(
        cn: "collector-1", dns: ["c1.clients.example.com"], uris: ["spiffe://prod.example/ns/otel/sa/collector"])

    let ci = "Bearer \(AuthenticatorTests.ciToken)"

    private func basicFile() throws -> HtpasswdFile {
        try HtpasswdFile.parse(HtpasswdTests.fixtureFile, file: "u")
    }

    private func basicHeader(_ user: String, _ password: String) -> String {
        "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
    }

    // MARK: - Rule 1: which credentials are present

    func testNoCredential_MissingCredential401() {
        let authenticator = Authenticator.make(mtls: MTLSPolicy(), bearer: Self.tokens)
        XCTAssertEqual(authenticator.authenticate(authorization: []), .failure(.missingCredential))
        XCTAssertFalse(AuthFailure.missingCredential.isForbidden)
    }

    func testTwoAuthorizationHeaders_Refused_EvenWithACertificate() {
        let authenticator = Authenticator.make(mtls: MTLSPolicy(), bearer: Self.tokens, defaultTenant: "d")
        XCTAssertEqual(authenticator.authenticate(authorization: [ci, ci], certificate: Self.spiffeCert),
                       .failure(.multipleAuthorizationHeaders))
    }

    func testSchemeOfAMethodNotEnabled_UnsupportedScheme() throws {
        let bearerOnly = Authenticator.make(bearer: Self.tokens)
        XCTAssertEqual(bearerOnly.authenticate(authorization: [basicHeader("bob", "secret")]), .failure(.unsupportedScheme))
        XCTAssertEqual(bearerOnly.authenticate(authorization: ["Digest abc"]), .failure(.unsupportedScheme))
        // Configured but left out of `methods` is the same as not configured.
        let basicListedOnly = Authenticator.make(methods: [.basic], bearer: Self.tokens, basic: try basicFile(), defaultTenant: "d")
        XCTAssertEqual(basicListedOnly.authenticate(authorization: [ci]), .failure(.unsupportedScheme))
    }

    func testCertificateWithoutMTLSEnabled_IsIgnored() {
        let authenticator = Authenticator.make(bearer: Self.tokens)
        XCTAssertEqual(authenticator.authenticate(authorization: [], certificate: Self.spiffeCert), .failure(.missingCredential))
        XCTAssertEqual(try authenticator.authenticate(authorization: [ci], certificate: Self.spiffeCert).get().principal.name,
                       "token:ci-runner")
    }

    func testJWTShape_ThreeOrFiveBase64URLSegments() {
        XCTAssertTrue(Authenticator.hasJWTShape(Array("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln".utf8)))
        XCTAssertTrue(Authenticator.hasJWTShape(Array("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.".utf8)))  // alg none: judged as JWT
        XCTAssertTrue(Authenticator.hasJWTShape(Array("a.b.c.d.e".utf8)))  // JWE: judged (and refused) as JWT
        XCTAssertFalse(Authenticator.hasJWTShape(Array(Self.ciToken.utf8)))
        XCTAssertFalse(Authenticator.hasJWTShape(Array("a.b".utf8)))
        XCTAssertFalse(Authenticator.hasJWTShape(Array(".b.c".utf8)))
        XCTAssertFalse(Authenticator.hasJWTShape(Array("a+b.c.d".utf8)))  // standard base64 is not base64url
    }

    // MARK: - Rule 2: every present credential is verified, no fall-through

    func testValidCertificate_InvalidToken_Refused401_NotFallThrough() {
        let authenticator = Authenticator.make(mtls: MTLSPolicy(), bearer: Self.tokens, defaultTenant: "d")
        XCTAssertEqual(
            authenticator.authenticate(authorization: ["Bearer not-a-known-token-0123456789"], certificate: Self.spiffeCert),
            .failure(.unknownToken))
    }

    func testValidCertificate_WrongBasicPassword_Refused401() throws {
        let authenticator = Authenticator.make(mtls: MTLSPolicy(), basic: try basicFile(), defaultTenant: "d")
        XCTAssertEqual(
            authenticator.authenticate(authorization: [basicHeader("bob", "nope")], certificate: Self.spiffeCert),
            .failure(.wrongPassword))
        XCTAssertEqual(
            authenticator.authenticate(authorization: ["Basic !!!"], certificate: Self.spiffeCert),
            .failure(.malformedAuthorization))
    }

    func testValidToken_CertificateWithoutIdentity_Refused401() {
        let authenticator = Authenticator.make(
            methods: [.bearer, .mtls], mtls: MTLSPolicy(principalFrom: [.uriSAN]), bearer: Self.tokens)
        let dnsOnly = PeerCertificate.fixture(cn: "x", dns: ["x.example"])
        XCTAssertEqual(authenticator.authenticate(authorization: [ci], certificate: dnsOnly), .failure(.certificateIdentityMissing))
        XCTAssertFalse(AuthFailure.certificateIdentityMissing.isForbidden)
    }

    // MARK: - Rule 3: principal from the first method in `methods`

    func testCertificateAndToken_MethodsOrderDecidesPrincipalAndTenant() {
        let certFirst = Authenticator.make(
            methods: [.mtls, .bearer], mtls: MTLSPolicy(), bearer: Self.tokens,
            principals: [.init(pattern: "cert:spiffe://prod.example/*", tenant: "team-cert")])
        XCTAssertEqual(
            try certFirst.authenticate(authorization: [ci], certificate: Self.spiffeCert).get(),
            AuthDecision(principal: Principal(name: "cert:spiffe://prod.example/ns/otel/sa/collector", method: .mtls),
                         tenant: "team-cert"))
        let tokenFirst = Authenticator.make(
            methods: [.bearer, .mtls], mtls: MTLSPolicy(), bearer: Self.tokens,
            principals: [.init(pattern: "cert:spiffe://prod.example/*", tenant: "team-cert")])
        XCTAssertEqual(
            try tokenFirst.authenticate(authorization: [ci], certificate: Self.spiffeCert).get(),
            AuthDecision(principal: Principal(name: "token:ci-runner", method: .bearer), tenant: "team-ci"))
    }

    func testCertificateAndBasic_MethodsOrder() throws {
        let basicFirst = Authenticator.make(
            methods: [.basic, .mtls], mtls: MTLSPolicy(), basic: try basicFile(), defaultTenant: "d")
        XCTAssertEqual(
            try basicFirst.authenticate(authorization: [basicHeader("carol", "secret")], certificate: Self.spiffeCert)
                .get().principal, Principal(name: "user:carol", method: .basic))
    }

    func testCertificateIdentity_PrincipalFromOrder() {
        func name(_ sources: [PrincipalSource], _ certificate: PeerCertificate) -> String? {
            let authenticator = Authenticator.make(mtls: MTLSPolicy(principalFrom: sources), defaultTenant: "d")
            return try? authenticator.authenticate(authorization: [], certificate: certificate).get().principal.name
        }
        XCTAssertEqual(name(MTLSPolicy.defaultPrincipalFrom, Self.spiffeCert), "cert:spiffe://prod.example/ns/otel/sa/collector")
        XCTAssertEqual(name([.dnsSAN, .uriSAN], Self.spiffeCert), "cert:c1.clients.example.com")
        XCTAssertEqual(name([.subjectCN], Self.spiffeCert), "cert:collector-1")
        XCTAssertEqual(name(MTLSPolicy.defaultPrincipalFrom, .fixture(cn: "only-cn")), "cert:only-cn")
        XCTAssertEqual(name(MTLSPolicy.defaultPrincipalFrom, .fixture(cn: "cn", dns: ["first.example", "second.example"])),
                       "cert:first.example")
        XCTAssertNil(name([.uriSAN], .fixture(cn: "cn")))
    }

    // MARK: - Rule 4: tenant and permissions

    func testTenant_EntryTenantOverridesCredentialTenant() {
        let authenticator = Authenticator.make(
            bearer: Self.tokens, principals: [.init(pattern: "token:ci-*", tenant: "team-fixed")], defaultTenant: "d")
        XCTAssertEqual(try authenticator.authenticate(authorization: [ci]).get().tenant, "team-fixed")
    }

    func testTenant_EntryWithoutTenant_CredentialTenantThenDefault() throws {
        let authenticator = Authenticator.make(
            mtls: MTLSPolicy(), bearer: Self.tokens, basic: try basicFile(),
            principals: [.init(pattern: "token:*", signals: [.traces, .metrics, .logs])], defaultTenant: "anonymous")
        XCTAssertEqual(try authenticator.authenticate(authorization: [ci]).get().tenant, "team-ci")
        XCTAssertEqual(try authenticator.authenticate(authorization: [basicHeader("bob", "secret")]).get().tenant, "anonymous")
        XCTAssertEqual(try authenticator.authenticate(authorization: [], certificate: Self.spiffeCert).get().tenant, "anonymous")
    }

    func testTenant_NoneAnywhere_Forbidden403() throws {
        let authenticator = Authenticator.make(mtls: MTLSPolicy(), basic: try basicFile())
        XCTAssertEqual(authenticator.authenticate(authorization: [], certificate: Self.spiffeCert), .failure(.noTenant))
        XCTAssertEqual(authenticator.authenticate(authorization: [basicHeader("bob", "secret")]), .failure(.noTenant))
        XCTAssertTrue(AuthFailure.noTenant.isForbidden)
    }

    func testTenant_InvalidFromCredential_Forbidden403() {
        let authenticator = Authenticator.make(bearer: Self.tokens)
        XCTAssertEqual(authenticator.authenticate(authorization: ["Bearer bad-tenant-token-0123456789abcde"]),
                       .failure(.invalidTenant))
        XCTAssertTrue(AuthFailure.invalidTenant.isForbidden)
    }

    func testTenant_FirstMatchingEntryWins() {
        let authenticator = Authenticator.make(
            bearer: Self.tokens,
            principals: [.init(pattern: "token:ci-runner", tenant: "specific"), .init(pattern: "token:*", tenant: "general")])
        XCTAssertEqual(try authenticator.authenticate(authorization: [ci]).get().tenant, "specific")
        XCTAssertEqual(try authenticator.authenticate(authorization: ["Bearer \(Self.tracesToken)"]).get().tenant, "general")
    }

    func testAllowedTenants_OutsideForbidden_InsideAccepted() {
        let outside = Authenticator.make(
            bearer: Self.tokens, principals: [.init(pattern: "token:ci-runner", allowedTenants: ["team-y"])])
        XCTAssertEqual(outside.authenticate(authorization: [ci]), .failure(.tenantNotAllowed))
        XCTAssertTrue(AuthFailure.tenantNotAllowed.isForbidden)
        let inside = Authenticator.make(
            bearer: Self.tokens, principals: [.init(pattern: "token:ci-runner", allowedTenants: ["team-y", "team-ci"])])
        XCTAssertEqual(try inside.authenticate(authorization: [ci]).get().tenant, "team-ci")
        // The default tenant is checked too.
        let defaulted = Authenticator.make(
            mtls: MTLSPolicy(), principals: [.init(pattern: "cert:*", allowedTenants: ["team-a"])], defaultTenant: "anonymous")
        XCTAssertEqual(defaulted.authenticate(authorization: [], certificate: Self.spiffeCert), .failure(.tenantNotAllowed))
    }

    func testSignals_EntrySignalsRestrict() {
        let authenticator = Authenticator.make(
            bearer: Self.tokens, principals: [.init(pattern: "token:ci-runner", signals: [.metrics])])
        XCTAssertEqual(authenticator.authenticate(authorization: [ci], signal: .traces), .failure(.signalNotAllowed))
        XCTAssertEqual(authenticator.authenticate(authorization: [ci], signal: .logs), .failure(.signalNotAllowed))
        XCTAssertNoThrow(try authenticator.authenticate(authorization: [ci], signal: .metrics).get())
        XCTAssertTrue(AuthFailure.signalNotAllowed.isForbidden)
    }

    func testSignals_Profiles_OnlyForPrincipalsThatListIt() {
        let profiler = Authenticator.make(
            bearer: Self.tokens, principals: [.init(pattern: "token:ci-runner", signals: [.profiles])])
        XCTAssertEqual(try profiler.authenticate(authorization: [ci], signal: .profiles).get().tenant, "team-ci")
        XCTAssertEqual(profiler.authenticate(authorization: [ci], signal: .traces), .failure(.signalNotAllowed))
        let threeSignals = Authenticator.make(
            bearer: Self.tokens, principals: [.init(pattern: "token:ci-runner", signals: [.traces, .metrics, .logs])])
        XCTAssertNoThrow(try threeSignals.authenticate(authorization: [ci], signal: .logs).get())
        XCTAssertEqual(threeSignals.authenticate(authorization: [ci], signal: .profiles), .failure(.signalNotAllowed))
        // Without a signals list every signal passes, profiles included.
        XCTAssertNoThrow(try Authenticator.make(bearer: Self.tokens).authenticate(authorization: [ci], signal: .profiles).get())
    }

    func testSignals_TokenEntrySignalsRestrict_EvenWhenTheCertificateNamesThePrincipal() {
        let tokenOnly = Authenticator.make(bearer: Self.tokens)
        let traces = "Bearer \(Self.tracesToken)"
        XCTAssertNoThrow(try tokenOnly.authenticate(authorization: [traces], signal: .traces).get())
        XCTAssertEqual(tokenOnly.authenticate(authorization: [traces], signal: .metrics), .failure(.signalNotAllowed))
        let certFirst = Authenticator.make(mtls: MTLSPolicy(), bearer: Self.tokens, defaultTenant: "d")
        XCTAssertEqual(certFirst.authenticate(authorization: [traces], certificate: Self.spiffeCert, signal: .logs),
                       .failure(.signalNotAllowed))
    }

    func testSignals_EntryAndTokenBothApply() {
        let authenticator = Authenticator.make(
            bearer: Self.tokens, principals: [.init(pattern: "token:traces-writer", signals: [.traces, .metrics])])
        let traces = "Bearer \(Self.tracesToken)"
        XCTAssertNoThrow(try authenticator.authenticate(authorization: [traces], signal: .traces).get())
        XCTAssertEqual(authenticator.authenticate(authorization: [traces], signal: .metrics), .failure(.signalNotAllowed))
    }

    func testAllowedPrincipals_CertificateOutside_Forbidden_EvenWithAValidToken() {
        let policy = MTLSPolicy(allowedPrincipals: ["spiffe://prod.example/ns/otel/*", "collector-9"])
        let authenticator = Authenticator.make(methods: [.bearer, .mtls], mtls: policy, bearer: Self.tokens, defaultTenant: "d")
        XCTAssertEqual(try authenticator.authenticate(authorization: [ci], certificate: Self.spiffeCert).get().principal.name,
                       "token:ci-runner")
        let stranger = PeerCertificate.fixture(cn: "x", uris: ["spiffe://dev.example/ns/otel/sa/collector"])
        XCTAssertEqual(authenticator.authenticate(authorization: [ci], certificate: stranger), .failure(.principalNotAllowed))
        XCTAssertEqual(authenticator.authenticate(authorization: [], certificate: stranger), .failure(.principalNotAllowed))
        XCTAssertTrue(AuthFailure.principalNotAllowed.isForbidden)
        XCTAssertNoThrow(try authenticator.authenticate(authorization: [], certificate: .fixture(cn: "collector-9")).get())
    }

    // MARK: - Rule 5: replies

    func testChallenges_PerEnabledMethods() throws {
        XCTAssertEqual(Authenticator.make(bearer: Self.tokens).challenges, [#"Bearer realm="otlp""#])
        XCTAssertEqual(Authenticator.make(bearer: Self.tokens, basic: try basicFile()).challenges,
                       [#"Bearer realm="otlp""#, #"Basic realm="otlp", charset="UTF-8""#])
        XCTAssertEqual(Authenticator.make(basic: try basicFile()).challenges, [#"Basic realm="otlp", charset="UTF-8""#])
        XCTAssertEqual(Authenticator.make(mtls: MTLSPolicy()).challenges, [])
        XCTAssertEqual(Authenticator.make(bearer: Self.tokens).ownedHeaders, [])
    }

    func testFailureReasons_SnakeCase_AndSplitBetween401And403() {
        let authentication: [AuthFailure] = [
            .missingCredential, .multipleAuthorizationHeaders, .malformedAuthorization, .credentialTooLarge,
            .unsupportedScheme, .unknownToken, .unknownUser, .wrongPassword, .certificateIdentityMissing,
        ]
        let authorization: [AuthFailure] = [.principalNotAllowed, .noTenant, .invalidTenant, .tenantNotAllowed, .signalNotAllowed]
        for failure in authentication { XCTAssertFalse(failure.isForbidden, failure.reason) }
        for failure in authorization { XCTAssertTrue(failure.isForbidden, failure.reason) }
        let reasons = (authentication + authorization).map(\.reason)
        XCTAssertEqual(Set(reasons).count, reasons.count)
        for reason in reasons {
            XCTAssertTrue(reason.allSatisfy { $0.isLowercase || $0 == "_" }, reason)
        }
    }

    // MARK: - Patterns

    func testPrincipalPattern_ExactAndWildcards() {
        let cases: [(String, String, Bool)] = [
            ("collector-1", "collector-1", true),
            ("collector-1", "collector-10", false),
            ("*.clients.example.com", "a.clients.example.com", true),
            ("*.clients.example.com", "a.b.clients.example.com", true),
            ("*.clients.example.com", "clients.example.com", false),
            ("*.clients.example.com", "a.clients.example.com.evil", false),
            ("spiffe://prod.example/ns/otel/*", "spiffe://prod.example/ns/otel/sa/x", true),
            ("spiffe://prod.example/ns/otel/*", "spiffe://prod.example/ns/other/sa/x", false),
            ("*", "", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "acb", false),
            ("a*a", "a", false),
            ("token:*-writer", "token:traces-writer", true),
            ("Token:x", "token:x", false),
        ]
        for (pattern, name, expected) in cases {
            XCTAssertEqual(PrincipalPattern(pattern).matches(name), expected, "\(pattern) vs \(name)")
        }
    }
}
