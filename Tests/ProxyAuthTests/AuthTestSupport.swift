import ProxyOTLP
import Foundation
import ProxyTLS
@testable import ProxyAuth
import ProxySystem

/// Test conveniences: build an authenticator from only the parts a test needs, and run one
/// request through it to the end (offloaded hashing inline, a requested key refetch reported).
extension Authenticator {
    static func make(
        methods: [AuthMethod]? = nil, mtls: MTLSPolicy? = nil, bearer: BearerTokenTable? = nil,
        basic: HtpasswdFile? = nil, jwt: JWTAuthenticator? = nil, principals: [PrincipalTable.Entry] = [],
        defaultTenant: String? = nil
    ) -> Authenticator {
        let configured = AuthMethod.allCases.filter { method in
            switch method {
            case .mtls: return mtls != nil
            case .jwt: return jwt != nil
            case .bearer: return bearer != nil
            case .basic: return basic != nil
            }
        }
        return Authenticator(
            methods: methods ?? configured, mtls: mtls, bearer: bearer, basic: basic, jwt: jwt,
            principals: PrincipalTable(entries: principals), defaultTenant: defaultTenant)
    }

    /// The final result; `.refetchKeys` is reported as `invalidJWT(.unknownKeyID)`.
    func authenticate(
        authorization: [String], certificate: PeerCertificate? = nil, signal: OTLPSignal = .traces, now: WallTime = .now()
    ) -> Result<AuthDecision, AuthFailure> {
        let credentials = RequestCredentials(peerCertificate: certificate, authorization: authorization, signal: signal)
        switch authenticate(credentials, now: now) {
        case .decided(let result): return result
        case .offload(let work): return work()
        case .refetchKeys: return .failure(.invalidJWT(.unknownKeyID))
        }
    }
}

extension PeerCertificate {
    static func fixture(cn: String? = nil, dns: [String] = [], uris: [String] = []) -> PeerCertificate {
        PeerCertificate(
            subjectCommonName: cn, dnsNames: dns, uris: uris, notAfter: nil,
            sha256Fingerprint: [UInt8](repeating: 0xAB, count: 32))
    }
}
