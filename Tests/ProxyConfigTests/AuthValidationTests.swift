import Foundation
import ProxyOTLP
import XCTest
@testable import ProxyConfig

/// The authentication keys: client certificates under `tls`, `auth.methods`, `auth.mtls`,
/// `auth.basic`, `auth.jwt.providers`, `auth.principals` and `tenant.default`. Each problem names its
/// key (list entries by index) and the fix.
final class AuthValidationTests: XCTestCase {
    private let tlsBase = "tls: { cert_file: s.crt, key_file: s.key }"
    private let bearer = "bearer: { tokens_file: tokens.yaml }"

    private func yaml(tls: String = "", auth: String, extra: String = "") -> String {
        let tlsLine = tls.isEmpty ? tlsBase : "tls: { cert_file: s.crt, key_file: s.key, \(tls) }"
        return tlsLine + "\nauth: { \(auth) }\n" + extra
    }

    private func provider(_ fields: String) -> String {
        "jwt: { providers: [ { name: corp, issuer: \"https://idp.example.com/\", audiences: [otlp-ingest], \(fields) } ] }"
    }

    private func temporaryFile(_ contents: String) throws -> String {
        let path = Paths.absolute(NSTemporaryDirectory() + "/authvalidation-" + UUID().uuidString, relativeTo: "/")
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    // MARK: - tls client certificates

    func testClientCA_ClientAuthDefaultsToRequire_PathsAbsolute() throws {
        let configuration = try XCTUnwrap(parse(yaml(tls: "client_ca_file: ca.crt, crl_file: c.crl, verify_depth: 2", auth: bearer)))
        XCTAssertEqual(configuration.tls.clientCAFile, "/etc/otlp-auth-proxy/ca.crt")
        XCTAssertEqual(configuration.tls.crlFile, "/etc/otlp-auth-proxy/c.crl")
        XCTAssertEqual(configuration.tls.clientAuth, .require)
        XCTAssertEqual(configuration.tls.verifyDepth, 2)
    }

    func testNoClientCA_ClientAuthNone_DepthDefault() throws {
        let configuration = try XCTUnwrap(parse(yaml(auth: bearer)))
        XCTAssertNil(configuration.tls.clientCAFile)
        XCTAssertEqual(configuration.tls.clientAuth, .none)
        XCTAssertEqual(configuration.tls.verifyDepth, 4)
    }

    func testClientAuthRequest_Kept() throws {
        let configuration = try XCTUnwrap(parse(yaml(tls: "client_ca_file: ca.crt, client_auth: request", auth: bearer)))
        XCTAssertEqual(configuration.tls.clientAuth, .request)
    }

    func testClientAuthRequire_WithoutCA_NamesBothKeys() {
        let message = onlyProblem("tls.client_auth", in: yaml(tls: "client_auth: require", auth: bearer))
        assertContains(message, "require needs tls.client_ca_file")
        let request = onlyProblem("tls.client_auth", in: yaml(tls: "client_auth: request", auth: bearer))
        assertContains(request, "request needs tls.client_ca_file")
    }

    func testClientAuth_UnknownValue_ListsChoices() {
        let message = onlyProblem("tls.client_auth", in: yaml(tls: "client_ca_file: ca.crt, client_auth: optional", auth: bearer))
        assertContains(message, "\"optional\"", "none, request, require")
    }

    func testCRL_WithoutCA_Refused() {
        let message = onlyProblem("tls.crl_file", in: yaml(tls: "crl_file: c.crl", auth: bearer))
        assertContains(message, "needs tls.client_ca_file")
    }

    func testVerifyDepth_OutOfRange_Refused() {
        for depth in ["0", "11"] {
            let message = onlyProblem("tls.verify_depth", in: yaml(tls: "client_ca_file: ca.crt, verify_depth: \(depth)", auth: bearer))
            assertContains(message, "1 to 10")
        }
    }

    // MARK: - auth.methods

    func testMethods_Default_EveryConfiguredMethodInFixedOrder() throws {
        let configuration = try XCTUnwrap(parse(yaml(
            tls: "client_ca_file: ca.crt",
            auth: "basic: { htpasswd_file: u.htpasswd }, \(bearer), mtls: {}, \(provider("algorithms: [ES256]"))")))
        XCTAssertEqual(configuration.auth.methods, [.mtls, .jwt, .bearer, .basic])
        XCTAssertEqual(configuration.auth.basic?.htpasswdFile, "/etc/otlp-auth-proxy/u.htpasswd")
    }

    func testMethods_Listed_OrderKept() throws {
        let configuration = try XCTUnwrap(parse(yaml(
            tls: "client_ca_file: ca.crt", auth: "methods: [bearer, mtls], \(bearer), mtls: {}")))
        XCTAssertEqual(configuration.auth.methods, [.bearer, .mtls])
    }

    func testMethods_NotConfigured_NamesMethod() {
        let message = onlyProblem("auth.methods", in: yaml(auth: "methods: [bearer, basic], \(bearer)"))
        assertContains(message, "basic is not configured", "auth.basic")
    }

    func testMethods_ConfiguredButNotListed_Refused() {
        let message = onlyProblem(
            "auth.methods", in: yaml(auth: "methods: [bearer], \(bearer), basic: { htpasswd_file: u }"))
        assertContains(message, "auth.basic is configured but not listed")
    }

    func testMethods_UnknownDuplicateEmpty_Refused() {
        assertContains(onlyProblem("auth.methods", in: yaml(auth: "methods: [bearer, oauth], \(bearer)")),
                       "\"oauth\" is not a method")
        assertContains(onlyProblem("auth.methods", in: yaml(auth: "methods: [bearer, bearer], \(bearer)")),
                       "listed twice")
        assertContains(onlyProblem("auth.methods", in: yaml(auth: "methods: [], \(bearer)")), "must not be empty")
        assertContains(onlyProblem("auth.methods", in: yaml(auth: "methods: bearer, \(bearer)")),
                       "must be a list", "methods: [bearer]")
    }

    func testBasic_WithoutFile_Required() {
        assertContains(onlyProblem("auth.basic.htpasswd_file", in: yaml(auth: "basic: {}")), "required", "htpasswd")
    }

    func testBearerOnlyNoLongerRequired_BasicAlone_Loads() throws {
        let configuration = try XCTUnwrap(parse(yaml(auth: "basic: { htpasswd_file: /a/u.htpasswd }")))
        XCTAssertNil(configuration.auth.bearer)
        XCTAssertEqual(configuration.auth.methods, [.basic])
    }

    // MARK: - auth.mtls

    func testMTLS_WithoutClientCA_NamesSection() {
        let message = onlyProblem("auth.mtls", in: yaml(auth: "\(bearer), mtls: {}"))
        assertContains(message, "needs tls.client_ca_file")
    }

    func testMTLS_ClientAuthNone_Refused() {
        let message = onlyProblem("auth.mtls", in: yaml(tls: "client_ca_file: ca.crt, client_auth: none", auth: "mtls: {}"))
        assertContains(message, "request or require")
    }

    func testMTLS_Defaults_AndValues() throws {
        let defaults = try XCTUnwrap(parse(yaml(tls: "client_ca_file: ca.crt", auth: "mtls: {}")))
        XCTAssertEqual(defaults.auth.mtls, .init(principalFrom: [.uriSAN, .dnsSAN, .subjectCN], allowedPrincipals: []))
        let set = try XCTUnwrap(parse(yaml(
            tls: "client_ca_file: ca.crt",
            auth: "mtls: { principal_from: [subject_cn, uri_san], allowed_principals: [\"spiffe://a/*\", c1] }")))
        XCTAssertEqual(set.auth.mtls, .init(principalFrom: [.subjectCN, .uriSAN], allowedPrincipals: ["spiffe://a/*", "c1"]))
    }

    func testMTLS_BadPrincipalFromAndEmptyAllowList_Refused() {
        guard let error = refuse(yaml(
            tls: "client_ca_file: ca.crt",
            auth: "mtls: { principal_from: [uri_san, email_san], allowed_principals: [] }")) else { return }
        XCTAssertEqual(error.problems.map(\.key), ["auth.mtls.principal_from", "auth.mtls.allowed_principals"])
        assertContains(error.problems[0].message, "\"email_san\"", "uri_san, dns_san or subject_cn")
        assertContains(error.problems[1].message, "must not be empty")
    }

    // MARK: - auth.jwt

    func testJWT_FullProvider_AllValuesRead() throws {
        let configuration = try XCTUnwrap(parse(yaml(auth: """
            jwt: { max_token_bytes: 8KiB, providers: [ { name: corp, issuer: "https://idp.example.com/",
              audiences: [otlp-ingest, other], algorithms: [ES256, rs256], jwks_url: "https://idp.example.com/jwks",
              jwks_ca_file: idp-ca.crt, jwks_refresh_interval: 5m, jwks_min_refetch_interval: 10s, clock_skew: 30s,
              required_claims: [sub, email], principal_claim: client_id, tenant_claim: org.tenant,
              claims_to_headers: { sub: X-OTLP-Subject, org.team: X-OTLP-Team } } ] }
            """)))
        let jwt = try XCTUnwrap(configuration.auth.jwt)
        XCTAssertEqual(jwt.maxTokenBytes, 8192)
        XCTAssertEqual(jwt.providers, [.init(
            name: "corp", issuer: "https://idp.example.com/", audiences: ["otlp-ingest", "other"],
            algorithms: ["ES256", "RS256"], keySource: .jwksURL("https://idp.example.com/jwks"),
            jwksCAFile: "/etc/otlp-auth-proxy/idp-ca.crt", jwksRefreshInterval: .seconds(300),
            jwksMinRefetchInterval: .seconds(10), clockSkew: .seconds(30), requiredClaims: ["sub", "email"],
            principalClaim: "client_id", tenantClaim: "org.tenant",
            claimsToHeaders: [.init(claim: "sub", header: "X-OTLP-Subject"), .init(claim: "org.team", header: "X-OTLP-Team")])])
    }

    func testJWT_Defaults_DiscoveryAndDocumentedValues() throws {
        let configuration = try XCTUnwrap(parse(yaml(auth: provider("algorithms: [EdDSA]"))))
        let jwt = try XCTUnwrap(configuration.auth.jwt)
        XCTAssertEqual(jwt.maxTokenBytes, 16 * 1024)
        let only = try XCTUnwrap(jwt.providers.first)
        XCTAssertEqual(only.keySource, .discovery)
        XCTAssertEqual(only.clockSkew, .seconds(60))
        XCTAssertEqual(only.jwksRefreshInterval, .seconds(600))
        XCTAssertEqual(only.jwksMinRefetchInterval, .seconds(30))
        XCTAssertEqual(only.principalClaim, "sub")
        XCTAssertEqual(only.requiredClaims, [])
        XCTAssertNil(only.tenantClaim)
    }

    func testJWT_HS256WithoutSecret_NamesAlgorithmsKey() {
        let message = onlyProblem("auth.jwt.providers[0].algorithms", in: yaml(auth: provider("algorithms: [HS256]")))
        XCTAssertTrue(message.hasPrefix("HS256 needs hmac_secret_file or hmac_secret_env"), message)
    }

    func testJWT_SecondProviderProblem_NamesIndex() {
        let yamlText = yaml(auth: """
            jwt: { providers: [ { name: a, issuer: "https://a/", audiences: [x], algorithms: [ES256] },
                                { name: b, issuer: "https://b/", audiences: [x], algorithms: [HS256] } ] }
            """)
        assertContains(onlyProblem("auth.jwt.providers[1].algorithms", in: yamlText), "HS256 needs hmac_secret_file")
    }

    func testJWT_HMACSecretFile_ShortRefused_LongAccepted_ContentsNeverShown() throws {
        let short = try temporaryFile("short-secret-value-1234\n")
        let message = onlyProblem(
            "auth.jwt.providers[0].hmac_secret_file",
            in: yaml(auth: provider("algorithms: [HS256], hmac_secret_file: \"\(short)\"")))
        assertContains(message, "23 bytes", "at least 32 bytes")
        XCTAssertFalse(message.contains("short-secret-value"), message)

        // 32 bytes plus the one trailing newline that is trimmed.
        let exact = try temporaryFile(String(repeating: "k", count: 32) + "\n")
        let configuration = try XCTUnwrap(parse(yaml(auth: provider("algorithms: [HS256, HS512], hmac_secret_file: \"\(exact)\""))))
        XCTAssertEqual(configuration.auth.jwt?.providers.first?.keySource, .hmacSecretFile(exact))
    }

    func testJWT_HMACSecretEnv_UnsetOrShortRefused_SetAccepted() throws {
        let name = "OTLP_AUTH_PROXY_TEST_SECRET_\(UInt32.random(in: 0...UInt32.max))"
        let text = yaml(auth: provider("algorithms: [HS384], hmac_secret_env: \(name)"))
        assertContains(onlyProblem("auth.jwt.providers[0].hmac_secret_env", in: text), "is not set")
        setenv(name, "too-short", 1)
        defer { unsetenv(name) }
        assertContains(onlyProblem("auth.jwt.providers[0].hmac_secret_env", in: text), "9 bytes", "at least 32")
        setenv(name, String(repeating: "s", count: 40), 1)
        XCTAssertEqual(parse(text)?.auth.jwt?.providers.first?.keySource, .hmacSecretEnv(name))
    }

    func testJWT_HMACSecretWithPublicKeyAlgorithm_Refused() throws {
        let secret = try temporaryFile(String(repeating: "k", count: 40))
        let message = onlyProblem(
            "auth.jwt.providers[0].algorithms",
            in: yaml(auth: provider("algorithms: [HS256, RS256], hmac_secret_file: \"\(secret)\"")))
        assertContains(message, "RS256 cannot use an HMAC secret")
    }

    func testJWT_TwoKeySources_Refused() {
        let message = onlyProblem(
            "auth.jwt.providers[0]",
            in: yaml(auth: provider("algorithms: [ES256], jwks_file: j.json, jwks_url: \"https://idp/jwks\"")))
        assertContains(message, "only one key source", "jwks_file and jwks_url")
    }

    func testJWT_JWKSURL_PlainHTTPOnlyOnLoopback() throws {
        let remote = onlyProblem(
            "auth.jwt.providers[0].jwks_url",
            in: yaml(auth: provider("algorithms: [ES256], jwks_url: \"http://idp.example.com/jwks.json\"")))
        assertContains(remote, "plain http", "use https")
        for url in ["http://127.0.0.1:8080/jwks", "http://localhost/jwks", "http://[::1]:9/jwks"] {
            XCTAssertNotNil(parse(yaml(auth: provider("algorithms: [ES256], jwks_url: \"\(url)\""))), url)
        }
        assertContains(
            onlyProblem("auth.jwt.providers[0].jwks_url", in: yaml(auth: provider("algorithms: [ES256], jwks_url: jwks.json"))),
            "not a URL")
    }

    /// `validate` refuses what start-up would: user information in a jwks_url, without repeating it.
    func testJWT_JWKSURL_UserInformation_RefusedWithoutShowingIt() {
        let message = onlyProblem(
            "auth.jwt.providers[0].jwks_url",
            in: yaml(auth: provider("algorithms: [ES256], jwks_url: \"http://keys:s3cr3t@idp.example.com/jwks.json\"")))
        assertContains(message, "user information", "not a URL")
        XCTAssertFalse(message.contains("s3cr3t"), message)
    }

    func testJWT_Discovery_IssuerMustBeHTTPS() {
        let text = yaml(auth: "jwt: { providers: [ { name: a, issuer: corp-idp, audiences: [x], algorithms: [ES256] } ] }")
        assertContains(onlyProblem("auth.jwt.providers[0].issuer", in: text), "OIDC discovery")
    }

    func testJWT_ClockSkewOver5m_Refused() {
        let message = onlyProblem(
            "auth.jwt.providers[0].clock_skew", in: yaml(auth: provider("algorithms: [ES256], clock_skew: 10m")))
        assertContains(message, "at most 5m")
        XCTAssertNotNil(parse(yaml(auth: provider("algorithms: [ES256], clock_skew: 5m"))))
    }

    func testJWT_Algorithms_UnknownNoneMissing_Refused() {
        assertContains(onlyProblem("auth.jwt.providers[0].algorithms", in: yaml(auth: provider("algorithms: [ES257]"))),
                       "\"ES257\" is not supported", "EdDSA")
        assertContains(onlyProblem("auth.jwt.providers[0].algorithms", in: yaml(auth: provider("algorithms: [none]"))),
                       "never accepted")
        assertContains(onlyProblem("auth.jwt.providers[0].algorithms", in: yaml(auth: provider(""))), "required")
    }

    func testJWT_RequiredKeys_EachNamed() {
        guard let error = refuse(yaml(auth: "jwt: { providers: [ {} ] }")) else { return }
        XCTAssertEqual(Set(error.problems.map(\.key)), [
            "auth.jwt.providers[0].name", "auth.jwt.providers[0].issuer", "auth.jwt.providers[0].audiences",
            "auth.jwt.providers[0].algorithms",
        ])
        assertContains(onlyProblem("auth.jwt.providers", in: yaml(auth: "jwt: {}")), "required", "at least one provider")
    }

    func testJWT_DuplicateNames_Refused() {
        let text = yaml(auth: """
            jwt: { providers: [ { name: a, issuer: "https://a/", audiences: [x], algorithms: [ES256] },
                                { name: a, issuer: "https://b/", audiences: [x], algorithms: [ES256] } ] }
            """)
        assertContains(onlyProblem("auth.jwt.providers[1].name", in: text), "providers[0]", "unique")
    }

    func testJWT_UnknownProviderKey_Suggested() {
        let message = onlyProblem(
            "auth.jwt.providers[0].audience", in: yaml(auth: provider("algorithms: [ES256], audience: x")))
        assertContains(message, "did you mean `audiences`?")
    }

    func testJWT_ClaimsToHeaders_ReservedHeadersRefused() {
        for header in ["Authorization", "Host", "Connection", "grpc-timeout", ":path", "X Bad"] {
            let message = onlyProblem(
                "auth.jwt.providers[0].claims_to_headers",
                in: yaml(auth: provider("algorithms: [ES256], claims_to_headers: { sub: \"\(header)\" }")))
            assertContains(message, "header \(quote(header))")
        }
        let twice = onlyProblem(
            "auth.jwt.providers[0].claims_to_headers",
            in: yaml(auth: provider("algorithms: [ES256], claims_to_headers: { sub: X-A, email: x-a }")))
        assertContains(twice, "used twice")
    }

    func testJWT_MaxTokenBytes_Bounds() {
        assertContains(
            onlyProblem("auth.jwt.max_token_bytes", in: yaml(auth: "jwt: { max_token_bytes: 100, providers: [ { name: a, issuer: \"https://a/\", audiences: [x], algorithms: [ES256] } ] }")),
            "between 1KiB and 1MiB")
    }

    func testJWT_JWKSCAFileWithFileSource_Refused() {
        let message = onlyProblem(
            "auth.jwt.providers[0].jwks_ca_file",
            in: yaml(auth: provider("algorithms: [ES256], jwks_file: j.json, jwks_ca_file: ca.crt")))
        assertContains(message, "only applies to keys fetched over HTTPS")
    }

    // MARK: - auth.principals and tenant.default

    func testPrincipals_AllFieldsRead() throws {
        let configuration = try XCTUnwrap(parse(yaml(auth: """
            \(bearer), principals: [
              { principal: "cert:spiffe://prod/*", tenant: team-a, allowed_tenants: [team-a, team-b], signals: [traces, metrics] },
              { principal: "token:*" } ]
            """)))
        XCTAssertEqual(configuration.auth.principals, [
            .init(principal: "cert:spiffe://prod/*", tenant: "team-a", allowedTenants: ["team-a", "team-b"],
                  signals: [.traces, .metrics]),
            .init(principal: "token:*"),
        ])
    }

    func testPrincipals_UnknownSignal_NamesEntryAndKey() {
        let message = onlyProblem(
            "auth.principals[0].signals",
            in: yaml(auth: "\(bearer), principals: [ { principal: \"token:x\", signals: [traces, events] } ]"))
        assertContains(message, "\"events\" is not a signal", "traces, metrics, logs or profiles")
    }

    func testPrincipals_ProfilesSignal_Accepted() throws {
        let configuration = try XCTUnwrap(parse(yaml(auth: """
            \(bearer), principals: [ { principal: "token:profiler", signals: [profiles] }, { principal: "token:*", signals: [traces, profiles] } ]
            """)))
        XCTAssertEqual(configuration.auth.principals.map(\.signals), [[.profiles], [.traces, .profiles]])
        XCTAssertEqual(configuration.auth.principals.first?.signals?.first?.grpcPath, OTLPSignal.profiles.grpcPath)
    }

    func testPrincipals_InvalidTenant_Refused() {
        let message = onlyProblem(
            "auth.principals[0].tenant", in: yaml(auth: "\(bearer), principals: [ { principal: \"user:a\", tenant: \"team a\" } ]"))
        assertContains(message, "\"team a\"", "letters, digits")
    }

    func testPrincipals_FixedTenantOutsideAllowed_Refused() {
        let message = onlyProblem(
            "auth.principals[0].allowed_tenants",
            in: yaml(auth: "\(bearer), principals: [ { principal: \"user:a\", tenant: t1, allowed_tenants: [t2] } ]"))
        assertContains(message, "\"t1\"")
    }

    func testPrincipals_MissingOrUnqualifiedPrincipal_Refused() {
        assertContains(
            onlyProblem("auth.principals[0].principal", in: yaml(auth: "\(bearer), principals: [ { tenant: t } ]")),
            "required")
        assertContains(
            onlyProblem("auth.principals[0].principal", in: yaml(auth: "\(bearer), principals: [ { principal: alice } ]")),
            "cert:, user:, token: or jwt:")
        assertContains(onlyProblem("auth.principals", in: yaml(auth: "\(bearer), principals: { a: b }")), "must be a list")
    }

    func testTenantDefault_ReadAndChecked() throws {
        let configuration = try XCTUnwrap(parse(yaml(auth: bearer, extra: "tenant: { default: anonymous }")))
        XCTAssertEqual(configuration.tenant.defaultTenant, "anonymous")
        XCTAssertNil(try XCTUnwrap(parse(yaml(auth: bearer))).tenant.defaultTenant)
        assertContains(onlyProblem("tenant.default", in: yaml(auth: bearer, extra: "tenant: { default: \"a/b\" }")),
                       "letters, digits")
    }
}
