// Fuzzes JWKS parsing: the input is the body of a JWKS fetch. A set that parses is installed in a
// provider and used to verify a fixed token, as the refresher and the verifier would.
import Foundation
import FuzzSupport
import ProxyAuth
import ProxyTLS
import ProxySystem

enum Fixture {
    static let now = WallTime(secondsSince1970: 1_750_000_000)
    static let settings = JWTProviderSettings(
        name: "jwks", issuer: "https://issuer.fuzz.test", audiences: ["otlp"],
        algorithms: [.RS256, .RS384, .RS512, .PS256, .PS384, .PS512, .ES256, .ES384, .ES512, .EdDSA])
    /// An ES256 token header and claims with a made-up signature, for the key lookup and signature path.
    static let token =
        "eyJhbGciOiJFUzI1NiIsImtpZCI6ImVjLVAtMjU2IiwidHlwIjoiSldUIn0."
        + "eyJpc3MiOiJodHRwczovL2lzc3Vlci5mdXp6LnRlc3QiLCJhdWQiOiJvdGxwIiwic3ViIjoiZnV6eiIsImV4cCI6NDEwMjQ0NDgwMH0."
        + String(repeating: "A", count: 86)
}

runFuzzer { data, count in
    let bytes = fuzzBytes(data, count)
    guard let keys = try? JWKSet.parse(bytes) else { return 0 }
    _ = keys.keyIDs
    _ = keys.skipped
    guard let provider = try? JWTProvider(settings: Fixture.settings, keys: keys) else {
        fatalError("fixed provider settings refused")
    }
    if case .success = provider.verify(token: Fixture.token, now: Fixture.now) {
        fatalError("a token with a made-up signature verified")
    }
    provider.replaceKeys(keys)
    _ = provider.keyIDs
    return 0
}
