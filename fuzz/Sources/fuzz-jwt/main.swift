// Fuzzes JWT parsing and verification: the input is the token text of `Authorization: Bearer …`.
// Two providers, as a configuration with both a JWKS issuer and an HMAC issuer would have them:
// every asymmetric algorithm against the fixed public keys, and HS256/384/512 against a secret.
// The seed corpus (fuzz/corpus/jwt) holds valid tokens of every algorithm signed by those keys.
import Foundation
import FuzzSupport
import ProxyAuth
import ProxyTLS
import ProxySystem

enum Fixture {
    /// After the seed tokens' `iat` and before their `exp`.
    static let now = WallTime(secondsSince1970: 1_750_000_000)
    static let uptime = ContinuousClock.now
    static let keys: JWKSet = {
        do { return try JWKSet.parse(Array(FixedKeys.jwks.utf8)) } catch { fatalError("fixed JWKS: \(error)") }
    }()
    static let jwksSettings = JWTProviderSettings(
        name: "jwks", issuer: FixedKeys.issuer, audiences: [FixedKeys.audience],
        algorithms: [.RS256, .RS384, .RS512, .PS256, .PS384, .PS512, .ES256, .ES384, .ES512, .EdDSA], requiredClaims: ["sub"],
        tenantClaim: "tenant", claimsToHeaders: [(claim: "team", header: "X-Team")])
    static let hmacSettings = JWTProviderSettings(
        name: "hmac", issuer: FixedKeys.hmacIssuer, audiences: [FixedKeys.audience],
        algorithms: [.HS256, .HS384, .HS512], hmacSecret: FixedKeys.hmacSecret)
}

runFuzzer { data, count in
    let token = fuzzText(data, count)
    // Fresh providers per input: the verified-token cache must not make runs depend on each other.
    guard let jwks = try? JWTProvider(settings: Fixture.jwksSettings, keys: Fixture.keys),
          let hmac = try? JWTProvider(settings: Fixture.hmacSettings, keys: nil)
    else { fatalError("fixed provider settings refused") }
    let authenticator = JWTAuthenticator(providers: [jwks, hmac])
    let result = authenticator.verify(token: token, now: Fixture.now)
    if fuzzTracing { print(result.map(\.identity.qualifiedName)) }
    switch result {
    case .success(let verified):
        // A token that verifies must verify again from the cache, with the same identity.
        guard case .success(let again) = authenticator.verify(token: token, now: Fixture.now),
              again.identity == verified.identity
        else { fatalError("a verified token did not verify a second time") }
        _ = verified.identity.qualifiedName
    case .failure(let failure):
        _ = failure.reason
        _ = authenticator.provider(forToken: token)?.claimRefetch(now: Fixture.uptime)
    }
    // Each provider on its own, as a single-issuer configuration uses it.
    _ = jwks.verify(token: token, now: Fixture.now)
    _ = hmac.verify(token: token, now: Fixture.now)
    return 0
}
