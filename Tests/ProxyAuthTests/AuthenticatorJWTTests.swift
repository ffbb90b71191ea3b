import Foundation
import XCTest
@testable import ProxyAuth
import ProxyTLS
import ProxySystem

/// The decision rules with JWTs: routing of `Bearer` values, principal and tenant from claims,
/// claims copied to headers, no fall-through, the size limit before parsing and key refetch steps.
/// HS256 tokens are signed by the `openssl` CLI (JWTMint), an ES256 key comes from JWTTestKeys.
final class AuthenticatorJWTTests: XCTestCase {
    static let issuer = "https://idp.example.com/"
    static let now = WallTime(secondsSince1970: 1_800_000_000)
    static let secret = Array("0123456789abcdef0123456789abcdef-test-secret".utf8)

    private func settings(
        tenantClaim: String? = "org.tenant", claimsToHeaders: [(claim: String, header: String)] = [],
        algorithms: [JWSAlgorithm] = [.HS256], hmacSecret: [UInt8]? = secret, maxTokenBytes: Int = 16 * 1024
    ) -> JWTProviderSettings {
        JWTProviderSettings(
            name: "corp", issuer: Self.issuer, audiences: ["otlp-ingest"], algorithms: algorithms,
            tenantClaim: tenantClaim, claimsToHeaders: claimsToHeaders, minRefetchInterval: .seconds(30),
            maxTokenBytes: maxTokenBytes, hmacSecret: hmacSecret)
    }

    private func jwt(_ settings: JWTProviderSettings? = nil, keys: JWKSet? = nil) throws -> JWTAuthenticator {
        JWTAuthenticator(providers: [try JWTProvider(settings: settings ?? self.settings(), keys: keys)])
    }

    private func token(
        sub: String = "svc-otel", tenant: Any? = "team-jwt", extra: [String: Any] = [:],
        secret: [UInt8] = AuthenticatorJWTTests.secret
    ) throws -> String {
        var claims: [String: Any] = [
            "iss": Self.issuer, "aud": "otlp-ingest", "sub": sub,
            "exp": Int(Self.now.secondsSince1970) + 300, "iat": Int(Self.now.secondsSince1970) - 5,
        ]
        if let tenant { claims["org"] = ["tenant": tenant] }
        claims.merge(extra) { $1 }
        return try JWTMint.token(
            header: JWTMint.json(["alg": "HS256", "typ": "JWT"]), claims: JWTMint.json(claims), algorithm: "HS256",
            signer: .secret(secret))
    }

    func testValidJWT_PrincipalQualifiedByIssuer_TenantFromClaim_HeadersCopied() throws {
        let authenticator = Authenticator.make(
            jwt: try jwt(settings(claimsToHeaders: [(claim: "sub", header: "X-OTLP-Subject")])))
        let decision = try authenticator.authenticate(authorization: ["Bearer \(try token())"], now: Self.now).get()
        XCTAssertEqual(decision, AuthDecision(
            principal: Principal(name: "jwt:https://idp.example.com/#svc-otel", method: .jwt), tenant: "team-jwt",
            headers: [(name: "X-OTLP-Subject", value: "svc-otel")]))
        XCTAssertEqual(authenticator.ownedHeaders, ["x-otlp-subject"])
        XCTAssertEqual(authenticator.challenges, [#"Bearer realm="otlp""#])
    }

    func testJWTTenantClaim_Invalid_Forbidden403() throws {
        let authenticator = Authenticator.make(jwt: try jwt())
        XCTAssertEqual(authenticator.authenticate(authorization: ["Bearer \(try token(tenant: "team/../a"))"], now: Self.now),
                       .failure(.invalidTenant))
        XCTAssertEqual(authenticator.authenticate(authorization: ["Bearer \(try token(tenant: "team a"))"], now: Self.now),
                       .failure(.invalidTenant))
    }

    func testJWTWithoutTenant_DefaultThenNoTenant() throws {
        let withDefault = Authenticator.make(jwt: try jwt(), defaultTenant: "anonymous")
        XCTAssertEqual(try withDefault.authenticate(authorization: ["Bearer \(try token(tenant: nil))"], now: Self.now).get().tenant,
                       "anonymous")
        let without = Authenticator.make(jwt: try jwt())
        XCTAssertEqual(without.authenticate(authorization: ["Bearer \(try token(tenant: nil))"], now: Self.now), .failure(.noTenant))
    }

    func testPrincipalsEntry_OverridesClaimTenant_AndAllowedTenantsChecksIt() throws {
        let fixed = Authenticator.make(
            jwt: try jwt(), principals: [.init(pattern: "jwt:https://idp.example.com/#svc-*", tenant: "team-fixed")])
        XCTAssertEqual(try fixed.authenticate(authorization: ["Bearer \(try token())"], now: Self.now).get().tenant, "team-fixed")
        let limited = Authenticator.make(
            jwt: try jwt(), principals: [.init(pattern: "jwt:https://idp.example.com/#*", allowedTenants: ["team-a"])])
        XCTAssertEqual(limited.authenticate(authorization: ["Bearer \(try token())"], now: Self.now), .failure(.tenantNotAllowed))
        XCTAssertNoThrow(try limited.authenticate(authorization: ["Bearer \(try token(tenant: "team-a"))"], now: Self.now).get())
    }

    func testInvalidJWT_WithValidCertificate_Refused401_NoFallThrough() throws {
        let authenticator = Authenticator.make(mtls: MTLSPolicy(), jwt: try jwt(), defaultTenant: "d")
        let forged = try token(secret: Array("another-secret-of-at-least-32-bytes!!".utf8))
        XCTAssertEqual(
            authenticator.authenticate(authorization: ["Bearer \(forged)"], certificate: AuthenticatorTests.spiffeCert, now: Self.now),
            .failure(.invalidJWT(.badSignature)))
        let expired = try token(extra: ["exp": Int(Self.now.secondsSince1970) - 3600])
        XCTAssertEqual(
            authenticator.authenticate(authorization: ["Bearer \(expired)"], certificate: AuthenticatorTests.spiffeCert, now: Self.now),
            .failure(.invalidJWT(.expired)))
        XCTAssertFalse(AuthFailure.invalidJWT(.expired).isForbidden)
        XCTAssertEqual(AuthFailure.invalidJWT(.expired).reason, "jwt_expired")
    }

    func testCertificateAndJWT_MethodsOrderDecides() throws {
        let jwtFirst = Authenticator.make(methods: [.jwt, .mtls], mtls: MTLSPolicy(), jwt: try jwt(), defaultTenant: "d")
        let bearer = "Bearer \(try token())"
        XCTAssertEqual(try jwtFirst.authenticate(authorization: [bearer], certificate: AuthenticatorTests.spiffeCert, now: Self.now)
            .get().tenant, "team-jwt")
        let certFirst = Authenticator.make(methods: [.mtls, .jwt], mtls: MTLSPolicy(), jwt: try jwt(), defaultTenant: "d")
        let decision = try certFirst.authenticate(
            authorization: [bearer], certificate: AuthenticatorTests.spiffeCert, now: Self.now).get()
        XCTAssertEqual(decision.principal.method, .mtls)
        XCTAssertEqual(decision.tenant, "d")  // a certificate has no tenant of its own; the JWT's is not borrowed
    }

    func testJWTShapedBearer_GoesToJWTWhenEnabled_ToTokensOtherwise() throws {
        let jwtValue = try token()
        let digest = Digest.sha256(Array(jwtValue.utf8))
        // The same string also listed as a static token: with JWT on it is judged as a JWT only.
        let tokens = BearerTokenTable(entries: [BearerTokenEntry(principal: "static", tenant: "team-static", tokenSHA256: digest)])
        let both = Authenticator.make(bearer: tokens, jwt: try jwt())
        XCTAssertEqual(try both.authenticate(authorization: ["Bearer \(jwtValue)"], now: Self.now).get().principal.method, .jwt)
        let tokensOnly = Authenticator.make(bearer: tokens)
        XCTAssertEqual(try tokensOnly.authenticate(authorization: ["Bearer \(jwtValue)"], now: Self.now).get().principal.name,
                       "token:static")
        // A non-JWT bearer value still reaches the tokens file when JWT is on.
        let plain = "plain-static-token-0123456789abcdef"
        let mixed = Authenticator.make(
            bearer: BearerTokenTable(entries: [BearerTokenEntry(
                principal: "plain", tenant: "t", tokenSHA256: Digest.sha256(Array(plain.utf8)))]),
            jwt: try jwt())
        XCTAssertEqual(try mixed.authenticate(authorization: ["Bearer \(plain)"], now: Self.now).get().principal.name, "token:plain")
        // JWT only: a non-JWT bearer value has no method to go to.
        XCTAssertEqual(Authenticator.make(jwt: try jwt()).authenticate(authorization: ["Bearer \(plain)"], now: Self.now),
                       .failure(.unsupportedScheme))
    }

    func testOversizedAuthorization_RefusedBeforeParsing() throws {
        let authenticator = Authenticator.make(jwt: try jwt(settings(maxTokenBytes: 1024)))
        let padded = try token(extra: ["pad": String(repeating: "x", count: 1200)])
        XCTAssertEqual(authenticator.authenticate(authorization: ["Bearer \(padded)"], now: Self.now), .failure(.credentialTooLarge))
        XCTAssertEqual(authenticator.authenticate(authorization: [String(repeating: "A", count: 2000)], now: Self.now),
                       .failure(.credentialTooLarge))
    }

    func testUnknownKeyID_AsksForOneRefetch_ThenRefuses() throws {
        let keys = try JWTTestKeys.load()
        var member = keys.ec256.jwk
        member["kid"] = "old"
        let jwks = try JWKSet.parse(Array(JWTMint.json(["keys": [member]]).utf8))
        let provider = try JWTProvider(settings: settings(algorithms: [.ES256], hmacSecret: nil), keys: jwks)
        let authenticator = Authenticator.make(jwt: JWTAuthenticator(providers: [provider]), defaultTenant: "d")
        let claims = JWTMint.json([
            "iss": Self.issuer, "aud": "otlp-ingest", "sub": "svc", "exp": Int(Self.now.secondsSince1970) + 300,
        ])
        let rotated = try JWTMint.token(
            header: JWTMint.json(["alg": "ES256", "kid": "new"]), claims: claims, algorithm: "ES256", signer: .key(keys.ec256))
        let credentials = RequestCredentials(peerCertificate: nil, authorization: ["Bearer \(rotated)"], signal: .traces)
        guard case .refetchKeys(let asked) = authenticator.authenticate(credentials, now: Self.now) else {
            return XCTFail("an unknown kid must ask for a refetch")
        }
        XCTAssertTrue(asked === provider)
        // Within the refetch interval the next unknown kid is refused without another fetch.
        guard case .decided(.failure(.invalidJWT(.unknownKeyID))) = authenticator.authenticate(
            credentials, now: Self.now.adding(seconds: 5)) else {
            return XCTFail("a second refetch within the interval must not be asked for")
        }
        // After the fetch brought the new key, the same token verifies; the key sets' version moved, so
        // decisions remembered before the refetch no longer hold.
        let versionBefore = authenticator.keysVersion
        member["kid"] = "new"
        provider.replaceKeys(try JWKSet.parse(Array(JWTMint.json(["keys": [member]]).utf8)))
        XCTAssertNotEqual(authenticator.keysVersion, versionBefore)
        guard case .decided(.success(let decision)) = authenticator.authenticate(credentials, now: Self.now) else {
            return XCTFail("the token must verify after the refetch")
        }
        XCTAssertEqual(decision.principal.name, "jwt:https://idp.example.com/#svc")
        XCTAssertEqual(decision.validUntil, WallTime(secondsSince1970: Double(Int(Self.now.secondsSince1970) + 300)),
                       "a JWT decision holds until the token's exp")
    }

    func testProviderWithoutKeys_AsksForRefetch() throws {
        let provider = try JWTProvider(settings: settings(algorithms: [.ES256], hmacSecret: nil), keys: nil)
        let authenticator = Authenticator.make(jwt: JWTAuthenticator(providers: [provider]))
        let keys = try JWTTestKeys.load()
        let claims = JWTMint.json([
            "iss": Self.issuer, "aud": "otlp-ingest", "sub": "svc", "exp": Int(Self.now.secondsSince1970) + 300,
        ])
        let signed = try JWTMint.token(
            header: JWTMint.json(["alg": "ES256", "kid": "k"]), claims: claims, algorithm: "ES256", signer: .key(keys.ec256))
        let credentials = RequestCredentials(peerCertificate: nil, authorization: ["Bearer \(signed)"], signal: .traces)
        guard case .refetchKeys(let asked) = authenticator.authenticate(credentials, now: Self.now) else {
            return XCTFail("a provider without keys must ask for a fetch")
        }
        XCTAssertTrue(asked === provider)
    }
}
