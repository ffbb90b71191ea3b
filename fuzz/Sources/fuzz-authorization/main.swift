// Fuzzes Authorization header handling: the input is one header value. It is parsed, Basic
// credentials are decoded, and the full Authenticator classifies it with bearer, basic and JWT
// enabled (password hashing is handed back as `.offload` and deliberately not run here).
import ProxyOTLP
import Foundation
import FuzzSupport
import ProxyAuth
import ProxyTLS
import ProxySystem

enum Fixture {
    static let now = WallTime(secondsSince1970: 1_750_000_000)
    /// Test-only token whose SHA-256 is in the table; also in the seed corpus.
    static let token = "fuzz-bearer-token-0123456789abcdef"
    static let tokens = BearerTokenTable(entries: [
        BearerTokenEntry(principal: "collector", tenant: "team-a", tokenSHA256: sha256(token)),
        BearerTokenEntry(principal: "traces-only", tenant: "team-b", tokenSHA256: sha256("traces-only-token-abcdefghijkl"), signals: [.traces]),
    ])
    static let basic: HtpasswdFile = {
        // sha-crypt at its minimum cost keeps the load cheap; the hash is of "secret".
        do {
            return try HtpasswdFile.parse(
                "alice:$5$rounds=1000$fuzzsalt$qGCc4JvvMNwwgoU2eJ4FMcZ.jSqNaOPBoUN0Jv2w9O2\n", file: "fuzz.htpasswd")
        } catch { fatalError("fixed htpasswd: \(error)") }
    }()
    static let jwt: JWTAuthenticator = {
        let settings = JWTProviderSettings(
            name: "hmac", issuer: "https://hmac.fuzz.test", audiences: ["otlp"], algorithms: [.HS256],
            hmacSecret: Array("fuzz-target-hmac-secret-0123456789abcdef".utf8))
        do { return JWTAuthenticator(providers: [try JWTProvider(settings: settings, keys: nil)]) } catch {
            fatalError("fixed provider: \(error)")
        }
    }()
    static let authenticator = Authenticator(
        methods: [.jwt, .bearer, .basic], mtls: nil, bearer: tokens, basic: basic, jwt: jwt,
        principals: PrincipalTable(), defaultTenant: "default")

    static func sha256(_ text: String) -> [UInt8] {
        // The table stores token digests; the fixture computes them with the proxy's own parser,
        // so a change of hashing shows as a fixture failure rather than silently unmatched seeds.
        guard let table = try? BearerTokenTable.parse(
            yaml: "tokens:\n  - {principal: p, tenant: t, token: \"\(text)\"}\n", file: "fixture")
        else { fatalError("fixture token refused") }
        return table.entries[0].tokenSHA256
    }
}

runFuzzer { data, count in
    let value = fuzzText(data, count)
    if let header = AuthorizationHeader(value) {
        switch header.scheme {
        case .basic:
            if let credentials = BasicCredentials(token68: header.credentials) {
                _ = credentials.user.utf8.count + credentials.password.utf8.count
            }
        case .bearer:
            _ = Fixture.tokens.match(token: header.credentials)
        case .other:
            break
        }
    }
    for signal in OTLPSignal.allCases {
        let credentials = RequestCredentials(peerCertificate: nil, authorization: [value], signal: signal)
        let step = Fixture.authenticator.authenticate(credentials, now: Fixture.now)
        if fuzzTracing { print(signal, step) }
        switch step {
        case .decided(let result):
            _ = try? result.get()
        case .offload, .refetchKeys:
            break
        }
    }
    return 0
}
