import ProxyOTLP
import ProxyTLS
import ProxySystem

/// Everything a request carries that can identify its sender. Built by the protocol layer per request.
public struct RequestCredentials: Sendable {
    /// The client certificate the TLS layer verified for this connection, if any.
    public var peerCertificate: PeerCertificate?
    /// Every `Authorization` header value, in order (more than one is refused, not resolved).
    public var authorization: [String]
    /// The OTLP signal the request is for.
    public var signal: OTLPSignal

    public init(peerCertificate: PeerCertificate?, authorization: [String], signal: OTLPSignal) {
        self.peerCertificate = peerCertificate
        self.authorization = authorization
        self.signal = signal
    }
}

/// A request that may go upstream: who sent it, the tenant to set, and extra headers to add.
public struct AuthDecision: Sendable, Equatable {
    public var principal: Principal
    /// The value of the tenant header; already checked with `TenantID.problem`.
    public var tenant: String
    /// `claims_to_headers` values from a verified JWT, in configuration order. The names are in
    /// `Authenticator.ownedHeaders`, so client-sent copies are dropped before these are added.
    public var headers: [(name: String, value: String)]
    /// When the decision stops holding by itself: the `exp` of a JWT that took part in it; nil for
    /// credentials that do not expire (tokens, passwords, a certificate checked at the handshake).
    /// Not part of the decision's identity (`==`).
    public var validUntil: WallTime?

    public init(
        principal: Principal, tenant: String, headers: [(name: String, value: String)] = [], validUntil: WallTime? = nil
    ) {
        self.principal = principal
        self.tenant = tenant
        self.headers = headers
        self.validUntil = validUntil
    }

    public static func == (lhs: AuthDecision, rhs: AuthDecision) -> Bool {
        lhs.principal == rhs.principal && lhs.tenant == rhs.tenant
            && lhs.headers.elementsEqual(rhs.headers) { $0.name == $1.name && $0.value == $1.value }
    }
}

/// What the protocol layer does next with a request's credentials.
public enum AuthStep: Sendable {
    /// The decision is made.
    case decided(Result<AuthDecision, AuthFailure>)
    /// Password hashing ahead (no cached success for these Basic credentials): run `work` off the event
    /// loop (it is slow on purpose), then use its result.
    case offload(@Sendable () -> Result<AuthDecision, AuthFailure>)
    /// A JWT names a key id its provider does not have and a refetch is allowed now: fetch that
    /// provider's keys, replace them, then call `authenticate` again (once).
    case refetchKeys(provider: JWTProvider)
}

/// Turns a request's credentials into a principal and a tenant, implementing the decision rules of
/// docs/security.md. Pure logic: no channels and no I/O (slow hashing and key fetches are handed back
/// to the caller as `AuthStep`s), so it is tested directly and shared by HTTP/1.1 and HTTP/2.
/// Immutable; reload builds a new one.
///
/// 1. Credentials present: a verified client certificate (only with `mtls` enabled) and at most one
///    `Authorization` header. `Bearer` with a JWT shape goes to `jwt` when jwt is enabled, otherwise
///    to `bearer`; `Basic` goes to `basic`. A scheme whose method is not enabled is refused.
/// 2. Every present credential is verified; any invalid one refuses the request (no fall-through).
/// 3. The principal comes from the present credential whose method is first in `methods`.
/// 4. The tenant and the permissions come from the principal table, the credential and the default.
public final class Authenticator: Sendable {
    public let methods: [AuthMethod]
    public let mtls: MTLSPolicy?
    public let bearer: BearerTokenTable?
    public let basic: HtpasswdFile?
    public let jwt: JWTAuthenticator?
    public let principals: PrincipalTable
    public let defaultTenant: String?

    /// `methods` is the order of precedence; a method is enabled when it is listed and configured
    /// (its argument non-nil). The configuration layer refuses a listed method that is not configured.
    public init(
        methods: [AuthMethod], mtls: MTLSPolicy?, bearer: BearerTokenTable?, basic: HtpasswdFile?,
        jwt: JWTAuthenticator?, principals: PrincipalTable, defaultTenant: String?
    ) {
        self.methods = methods
        self.mtls = methods.contains(.mtls) ? mtls : nil
        self.bearer = methods.contains(.bearer) ? bearer : nil
        self.basic = methods.contains(.basic) ? basic : nil
        self.jwt = methods.contains(.jwt) ? jwt : nil
        self.principals = principals
        self.defaultTenant = defaultTenant
    }

    /// Lower-case names of headers the proxy owns because of claims_to_headers (dropped from client requests).
    public var ownedHeaders: Set<String> {
        var names: Set<String> = []
        for provider in jwt?.providers ?? [] {
            for mapping in provider.settings.claimsToHeaders { names.insert(mapping.header.lowercased()) }
        }
        return names
    }

    /// Changes whenever a JWT provider's keys are replaced: decisions remembered before no longer hold.
    public var keysVersion: UInt64 {
        var version: UInt64 = 0
        for provider in jwt?.providers ?? [] { version &+= provider.keysVersion }
        return version
    }

    /// The WWW-Authenticate challenges to send with a 401 (e.g. `Bearer realm="otlp"`, `Basic realm="otlp"`).
    /// Empty when only client certificates are enabled (no HTTP scheme would help the client).
    public var challenges: [String] {
        var result: [String] = []
        if bearer != nil || jwt != nil { result.append(#"Bearer realm="otlp""#) }
        if basic != nil { result.append(#"Basic realm="otlp", charset="UTF-8""#) }
        return result
    }

    /// The longest `Authorization` value looked at when JWT is enabled (`auth.jwt.max_token_bytes`).
    var maxAuthorizationBytes: Int? {
        jwt?.providers.map(\.settings.maxTokenBytes).max()
    }

    // MARK: - Deciding

    /// One verified credential and what it contributes.
    struct Verified: Sendable {
        var method: AuthMethod
        var principal: String
        /// The credential's own tenant (tokens-file entry, JWT tenant claim).
        var tenant: String?
        /// Signals the credential itself allows (tokens-file entry); nil allows all.
        var signals: Set<OTLPSignal>?
        var headers: [(name: String, value: String)] = []
        /// A JWT's `exp`.
        var validUntil: WallTime?
    }

    /// The header credential, classified but not yet verified (except where verifying is cheap).
    private enum HeaderCredential {
        case verified(Verified)
        case basic(BasicCredentials)
        /// Refused, or keys to fetch first: return this step as it is.
        case stop(AuthStep)
    }

    /// `now` is the wall-clock time that token times (`exp`, `nbf`, `iat`) are compared with; `uptime`
    /// a monotonic instant for intervals (the Basic success cache, the JWKS refetch rate limit), which
    /// a change of the system clock must not stretch or cut short.
    public func authenticate(
        _ credentials: RequestCredentials, now: WallTime, uptime: ContinuousClock.Instant = .now
    ) -> AuthStep {
        var verified: [Verified] = []

        // Rule 1 and 2, client certificate: only when mtls is enabled.
        if let mtls, let certificate = credentials.peerCertificate {
            guard let identity = mtls.identity(of: certificate) else {
                return .decided(.failure(.certificateIdentityMissing))
            }
            verified.append(Verified(method: .mtls, principal: "cert:\(identity)"))
        }

        // Rule 1 and 2, the Authorization header.
        var pendingBasic: BasicCredentials?
        switch credentials.authorization.count {
        case 0:
            if verified.isEmpty { return .decided(.failure(.missingCredential)) }
        case 1:
            switch classify(credentials.authorization[0], now: now, uptime: uptime) {
            case .verified(let credential):
                verified.append(credential)
            case .basic(let basicCredentials):
                pendingBasic = basicCredentials
            case .stop(let step):
                return step
            }
        default:
            return .decided(.failure(.multipleAuthorizationHeaders))
        }

        guard let pendingBasic, let basic else {
            return .decided(decide(verified, signal: credentials.signal))
        }
        let others = verified
        let user = pendingBasic.user
        let password = pendingBasic.password
        let signal = credentials.signal
        let basicVerified = Verified(method: .basic, principal: "user:\(user)")
        if basic.isCached(user: user, password: password, now: uptime) {
            return .decided(decide(verified + [basicVerified], signal: signal))
        }
        return .offload { [self] in
            switch basic.check(user: user, password: password, now: uptime) {
            case .success: return decide(others + [basicVerified], signal: signal)
            case .unknownUser: return .failure(.unknownUser)
            case .wrongPassword: return .failure(.wrongPassword)
            }
        }
    }

    /// Parses and routes one `Authorization` value; verifies bearer tokens and JWTs on the spot.
    private func classify(_ value: String, now: WallTime, uptime: ContinuousClock.Instant) -> HeaderCredential {
        func fail(_ failure: AuthFailure) -> HeaderCredential {
            .stop(.decided(.failure(failure)))
        }
        if let limit = maxAuthorizationBytes, value.utf8.count > limit { return fail(.credentialTooLarge) }
        guard let header = AuthorizationHeader(value) else { return fail(.malformedAuthorization) }
        switch header.scheme {
        case .bearer:
            if let jwt, Self.hasJWTShape(header.credentials) {
                let token = String(decoding: header.credentials, as: UTF8.self)
                return verifyJWT(token, with: jwt, now: now, uptime: uptime)
            }
            guard let bearer else { return fail(.unsupportedScheme) }
            guard let entry = bearer.match(token: header.credentials) else { return fail(.unknownToken) }
            return .verified(Verified(
                method: .bearer, principal: "token:\(entry.principal)", tenant: entry.tenant, signals: entry.signals))
        case .basic:
            guard basic != nil else { return fail(.unsupportedScheme) }
            guard let decoded = BasicCredentials(token68: header.credentials) else {
                return fail(.malformedAuthorization)
            }
            return .basic(decoded)
        case .other:
            return fail(.unsupportedScheme)
        }
    }

    private func verifyJWT(
        _ token: String, with jwt: JWTAuthenticator, now: WallTime, uptime: ContinuousClock.Instant
    ) -> HeaderCredential {
        switch jwt.verify(token: token, now: now) {
        case .success(let verified):
            let identity = verified.identity
            return .verified(Verified(
                method: .jwt, principal: "jwt:\(identity.issuer)#\(identity.principal)", tenant: identity.tenant,
                headers: identity.headers, validUntil: identity.expiresAt))
        case .failure(let failure):
            // A key the provider does not have (yet): ask the caller to refetch that provider's keys,
            // at most once per its min refetch interval; otherwise the token is refused.
            if failure == .unknownKeyID || failure == .noKeys, let provider = jwt.provider(forToken: token),
               provider.claimRefetch(now: uptime) {
                return .stop(.refetchKeys(provider: provider))
            }
            return .stop(.decided(.failure(.invalidJWT(failure))))
        }
    }

    /// Rules 3 and 4, once every present credential is verified.
    func decide(_ verified: [Verified], signal: OTLPSignal) -> Result<AuthDecision, AuthFailure> {
        guard let chosen = verified.min(by: { rank($0.method) < rank($1.method) }) else {
            return .failure(.missingCredential)
        }
        // An mTLS identity outside allowed_principals is refused whichever credential names the principal.
        if let mtls, let certificate = verified.first(where: { $0.method == .mtls }),
           !mtls.allows(identity: String(certificate.principal.dropFirst("cert:".count))) {
            return .failure(.principalNotAllowed)
        }
        let entry = principals.entry(for: chosen.principal)
        guard let tenant = entry?.tenant ?? chosen.tenant ?? defaultTenant else { return .failure(.noTenant) }
        if TenantID.problem(tenant) != nil { return .failure(.invalidTenant) }
        if let allowed = entry?.allowedTenants, !allowed.contains(tenant) { return .failure(.tenantNotAllowed) }
        if let signals = entry?.signals, !signals.contains(signal) { return .failure(.signalNotAllowed) }
        for credential in verified {
            if let signals = credential.signals, !signals.contains(signal) { return .failure(.signalNotAllowed) }
        }
        let headers = verified.flatMap(\.headers)
        let validUntil = verified.compactMap(\.validUntil).min()
        return .success(AuthDecision(
            principal: Principal(name: chosen.principal, method: chosen.method), tenant: tenant, headers: headers,
            validUntil: validUntil))
    }

    private func rank(_ method: AuthMethod) -> Int {
        methods.firstIndex(of: method) ?? Int.max
    }

    /// Compact JWS (three base64url segments) or JWE (five) shape, so JWT-looking bearer values are
    /// judged by the JWT verifier (which refuses JWE with its own reason) and never looked up as
    /// static tokens.
    static func hasJWTShape(_ bytes: some Collection<UInt8>) -> Bool {
        var dots = 0
        var segmentLength = 0
        var firstSegmentLength = -1
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "."):
                if firstSegmentLength < 0 { firstSegmentLength = segmentLength }
                dots += 1
                segmentLength = 0
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"):
                segmentLength += 1
            default:
                return false
            }
        }
        return (dots == 2 || dots == 4) && firstSegmentLength > 0
    }
}
