import ProxyTLS
import ProxySystem

/// One `auth.jwt.providers` entry, as the lead builds it from the configuration.
///
/// A provider verifies tokens from exactly one issuer. Its keys come either from a JWKS (given to
/// `JWTProvider` separately, because they are fetched and replaced at run time) or from
/// `hmacSecret` (HS* only; the lead reads `hmac_secret_file` / `hmac_secret_env`).
public struct JWTProviderSettings: Sendable, Equatable {
    /// Unique provider name, for logs and metric labels.
    public var name: String
    /// Compared byte for byte with the token's `iss` (so a trailing slash matters).
    public var issuer: String
    /// The token's `aud` (a string or an array) must contain at least one of these.
    public var audiences: [String]
    /// The allow-list; a token's `alg` must be one of these.
    public var algorithms: [JWSAlgorithm]
    /// Tolerance for `exp`, `nbf` and `iat` (at most 5 minutes).
    public var clockSkew: Duration
    /// Claims that must be present (dotted paths allowed, see `JWTClaimPath`). `exp` is always required.
    public var requiredClaims: [String]
    /// The claim whose value is the principal: `jwt:<issuer>#<value>`.
    public var principalClaim: String
    /// Optional claim (dotted path) holding the tenant; must be a string when present.
    public var tenantClaim: String?
    /// Claims copied to upstream request headers (string and number claims only).
    public var claimsToHeaders: [(claim: String, header: String)]
    /// After an unknown `kid`, the JWKS is refetched at most once per this interval.
    public var minRefetchInterval: Duration
    /// Tokens longer than this are refused before any parsing.
    public var maxTokenBytes: Int
    /// The shared secret for HS256/384/512 providers (at least 32 bytes); nil for JWKS providers.
    public var hmacSecret: [UInt8]?

    public static let defaultClockSkew: Duration = .seconds(60)
    public static let maximumClockSkew: Duration = .seconds(300)
    public static let defaultMinRefetchInterval: Duration = .seconds(30)
    public static let defaultMaxTokenBytes = 16 * 1024

    public init(
        name: String,
        issuer: String,
        audiences: [String],
        algorithms: [JWSAlgorithm],
        clockSkew: Duration = JWTProviderSettings.defaultClockSkew,
        requiredClaims: [String] = [],
        principalClaim: String = "sub",
        tenantClaim: String? = nil,
        claimsToHeaders: [(claim: String, header: String)] = [],
        minRefetchInterval: Duration = JWTProviderSettings.defaultMinRefetchInterval,
        maxTokenBytes: Int = JWTProviderSettings.defaultMaxTokenBytes,
        hmacSecret: [UInt8]? = nil
    ) {
        self.name = name
        self.issuer = issuer
        self.audiences = audiences
        self.algorithms = algorithms
        self.clockSkew = clockSkew
        self.requiredClaims = requiredClaims
        self.principalClaim = principalClaim
        self.tenantClaim = tenantClaim
        self.claimsToHeaders = claimsToHeaders
        self.minRefetchInterval = minRefetchInterval
        self.maxTokenBytes = maxTokenBytes
        self.hmacSecret = hmacSecret
    }

    public static func == (lhs: JWTProviderSettings, rhs: JWTProviderSettings) -> Bool {
        lhs.name == rhs.name && lhs.issuer == rhs.issuer && lhs.audiences == rhs.audiences
            && lhs.algorithms == rhs.algorithms && lhs.clockSkew == rhs.clockSkew
            && lhs.requiredClaims == rhs.requiredClaims && lhs.principalClaim == rhs.principalClaim
            && lhs.tenantClaim == rhs.tenantClaim
            && lhs.claimsToHeaders.count == rhs.claimsToHeaders.count
            && zip(lhs.claimsToHeaders, rhs.claimsToHeaders).allSatisfy { $0.claim == $1.claim && $0.header == $1.header }
            && lhs.minRefetchInterval == rhs.minRefetchInterval && lhs.maxTokenBytes == rhs.maxTokenBytes
            && lhs.hmacSecret == rhs.hmacSecret
    }
}

/// Why a JWT was refused. `reason` is a fixed snake_case word for logs and metric labels; the
/// associated claim names come from the configuration or the JWT specification, never from the token.
public enum JWTFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// Longer than `maxTokenBytes`; refused before parsing.
    case tooLarge
    /// Not three segments, an empty header or payload, header or claims that are not JSON objects,
    /// `alg`/`kid` missing or of the wrong type.
    case malformed
    /// JWE (five segments) or JWS JSON serialization (starts with `{`).
    case unsupportedSerialization
    /// A segment is base64 but not canonical unpadded base64url.
    case nonCanonicalBase64
    /// The header or the claims repeat a member name.
    case duplicateMember
    /// `alg` is `none` in any letter case.
    case algorithmNone
    /// `alg` is unknown or not in the provider's allow-list.
    case algorithmNotAllowed
    /// The header has `crit`: no extension is understood, so every critical one is refused.
    case critHeader
    /// No provider is configured for the token's `iss` (or it has none).
    case unknownIssuer
    /// The provider's issuer differs from `iss` (exact comparison).
    case wrongIssuer
    /// `exp` is past, beyond the clock skew.
    case expired
    /// No `exp`.
    case missingExpiry
    /// `nbf` is in the future, beyond the clock skew.
    case notYetValid
    /// `iat` is in the future, beyond the clock skew.
    case issuedInFuture
    /// `aud` is missing or contains none of the provider's audiences.
    case wrongAudience
    /// A required claim (or the principal claim) is missing.
    case missingClaim(String)
    /// The token's `kid` names no key of the provider (a refetch may help), or there is no `kid`
    /// and several keys could verify the token.
    case unknownKeyID
    /// The selected key cannot verify the token's `alg` (wrong key type, or the JWK's `alg` differs).
    case keyAlgorithmMismatch
    /// The signature does not verify.
    case badSignature
    /// The provider has no keys yet (JWKS not fetched).
    case noKeys
    /// A claim has the wrong type or an unusable value (e.g. a control character in a header value).
    case invalidClaim(String)

    public var reason: String {
        switch self {
        case .tooLarge: return "too_large"
        case .malformed: return "malformed"
        case .unsupportedSerialization: return "unsupported_serialization"
        case .nonCanonicalBase64: return "non_canonical_base64"
        case .duplicateMember: return "duplicate_member"
        case .algorithmNone: return "algorithm_none"
        case .algorithmNotAllowed: return "algorithm_not_allowed"
        case .critHeader: return "crit_header"
        case .unknownIssuer: return "unknown_issuer"
        case .wrongIssuer: return "wrong_issuer"
        case .expired: return "expired"
        case .missingExpiry: return "missing_expiry"
        case .notYetValid: return "not_yet_valid"
        case .issuedInFuture: return "issued_in_future"
        case .wrongAudience: return "wrong_audience"
        case .missingClaim: return "missing_claim"
        case .unknownKeyID: return "unknown_key_id"
        case .keyAlgorithmMismatch: return "key_algorithm_mismatch"
        case .badSignature: return "bad_signature"
        case .noKeys: return "no_keys"
        case .invalidClaim: return "invalid_claim"
        }
    }

    /// The reason, with the claim name for claim failures (`missing_claim(sub)`).
    public var description: String {
        switch self {
        case .missingClaim(let name), .invalidClaim(let name): return "\(reason)(\(name))"
        default: return reason
        }
    }
}

/// What a verified token says about its sender.
public struct JWTIdentity: Sendable, Equatable {
    /// The token's `iss` (equal to the provider's issuer).
    public var issuer: String
    /// The principal claim's value (a number claim is rendered in decimal).
    public var principal: String
    /// The tenant claim's value, when the provider has a tenant claim and the token carries it.
    public var tenant: String?
    /// `claims_to_headers` values, in configuration order; claims that are absent or not a string or
    /// number are left out.
    public var headers: [(name: String, value: String)]
    /// The token's `exp`.
    public var expiresAt: WallTime

    public init(issuer: String, principal: String, tenant: String?, headers: [(name: String, value: String)], expiresAt: WallTime) {
        self.issuer = issuer
        self.principal = principal
        self.tenant = tenant
        self.headers = headers
        self.expiresAt = expiresAt
    }

    /// The qualified principal name used in logs and the principal table: `jwt:<issuer>#<principal>`.
    public var qualifiedName: String { "jwt:\(issuer)#\(principal)" }

    public static func == (lhs: JWTIdentity, rhs: JWTIdentity) -> Bool {
        lhs.issuer == rhs.issuer && lhs.principal == rhs.principal && lhs.tenant == rhs.tenant
            && lhs.expiresAt == rhs.expiresAt && lhs.headers.count == rhs.headers.count
            && zip(lhs.headers, rhs.headers).allSatisfy { $0.name == $1.name && $0.value == $1.value }
    }
}
