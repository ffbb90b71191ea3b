import NIOConcurrencyHelpers
import ProxyJSON
import ProxyTLS
import ProxySystem

/// Verifies JWTs for one issuer: the checks of RFC 7519 / RFC 8725 in a fixed order, with the
/// current keys and a cache of tokens that already passed.
///
/// `verify` is a pure function of (token, now, current keys, settings): no I/O, no clock reads.
/// Order: size → format → strict base64url → header (duplicates, `alg`, allow-list, `crit`) →
/// claims → `iss` → `exp`/`nbf`/`iat` with skew → `aud` → required claims → key by `kid` →
/// key type matches `alg` → signature → principal, tenant and header claims.
/// `jku`, `jwk`, `x5u` and `x5c` header parameters are never read: keys come only from the
/// configured JWKS or secret.
///
/// Thread safety: the keys, the refetch clock and the cache live behind one lock, so one provider
/// is shared by every event loop; `replaceKeys` may run on any thread (the JWKS fetcher's).
public final class JWTProvider: @unchecked Sendable {
    public let settings: JWTProviderSettings

    /// The configured HMAC secret as a key (HS* providers); when set, it is the only key.
    private let hmacKey: JWSKey?
    private let lock = NIOLock()
    // Guarded by `lock`.
    private var keys: JWKSet?
    /// Bumped whenever `keys` is replaced.
    private var keysGeneration: UInt64 = 0
    private var lastRefetchClaim: ContinuousClock.Instant?
    private var cache: VerifiedTokenCache

    /// Verified tokens kept at most (oldest evicted first).
    public static let cacheCapacity = 10_000

    /// Checks the settings once; every problem is reported together, naming the provider.
    /// `keys` is nil for a JWKS provider until its first fetch, and must be nil for an HMAC provider.
    public init(settings: JWTProviderSettings, keys: JWKSet?) throws(AuthConfigurationError) {
        var problems: [String] = []
        if settings.name.isEmpty { problems.append("name: required (used in logs and metrics)") }
        if settings.issuer.isEmpty { problems.append("issuer: required, the exact `iss` of the tokens") }
        if settings.audiences.isEmpty || settings.audiences.contains(where: \.isEmpty) {
            problems.append("audiences: required, a non-empty list of non-empty `aud` values")
        }
        if settings.algorithms.isEmpty { problems.append("algorithms: required, e.g. [ES256, RS256]") }
        if settings.clockSkew < .zero || settings.clockSkew > JWTProviderSettings.maximumClockSkew {
            problems.append("clock_skew: must be between 0s and 5m")
        }
        if settings.principalClaim.isEmpty { problems.append("principal_claim: must not be empty") }
        if settings.tenantClaim?.isEmpty == true { problems.append("tenant_claim: must not be empty when set") }
        if settings.requiredClaims.contains(where: \.isEmpty) { problems.append("required_claims: names must not be empty") }
        if settings.maxTokenBytes <= 0 { problems.append("max_token_bytes: must be positive") }
        if settings.minRefetchInterval < .zero { problems.append("jwks_min_refetch_interval: must not be negative") }
        for (claim, header) in settings.claimsToHeaders {
            if claim.isEmpty { problems.append("claims_to_headers: a claim name is empty") }
            if header.isEmpty || !header.utf8.allSatisfy(AuthorizationHeader.isTchar) {
                problems.append("claims_to_headers.\(claim): `\(header)` is not a valid header name")
            }
        }
        let hmacAlgorithms = settings.algorithms.filter(\.isHMAC)
        let otherAlgorithms = settings.algorithms.filter { !$0.isHMAC }
        var hmacKey: JWSKey?
        if let secret = settings.hmacSecret {
            if !otherAlgorithms.isEmpty {
                problems.append(
                    "algorithms: \(otherAlgorithms.map(\.rawValue).joined(separator: ", ")) cannot be verified with a shared secret; a provider with hmac_secret_file or hmac_secret_env allows HS256, HS384 or HS512 only")
            }
            if keys != nil { problems.append("a provider takes either a JWKS or an HMAC secret, not both") }
            do {
                hmacKey = try JWSKey.hmac(secret: secret)
            } catch {
                problems.append("hmac secret: \(error.description)")
            }
        } else if !hmacAlgorithms.isEmpty {
            problems.append(
                "algorithms: \(hmacAlgorithms.map(\.rawValue).joined(separator: ", ")) need a shared secret (hmac_secret_file or hmac_secret_env); keys from a JWKS never verify HS*")
        }
        if !problems.isEmpty {
            throw AuthConfigurationError(file: "jwt provider `\(settings.name)`", problems: problems)
        }
        self.settings = settings
        self.hmacKey = hmacKey
        self.keys = keys
        self.cache = VerifiedTokenCache(capacity: Self.cacheCapacity)
    }

    /// Installs a freshly fetched key set (the last good set stays when a fetch fails: the fetcher
    /// simply does not call this). Clears the verified-token cache, so a key removed from the JWKS
    /// stops verifying tokens immediately.
    public func replaceKeys(_ keys: JWKSet) {
        lock.withLock {
            self.keys = keys
            keysGeneration &+= 1
            cache.removeAll()
        }
    }

    /// Changes whenever the key set is replaced (a refresh or a refetch): a decision remembered from
    /// before no longer holds.
    public var keysVersion: UInt64 {
        lock.withLock { keysGeneration }
    }

    /// Whether the provider can verify anything yet (an HMAC secret, or a fetched JWKS).
    public var hasKeys: Bool {
        if hmacKey != nil { return true }
        return lock.withLock { keys != nil }
    }

    /// The `kid`s of the current JWKS (empty for HMAC providers or before the first fetch).
    public var keyIDs: [String] {
        lock.withLock { keys?.keyIDs ?? [] }
    }

    /// After an unknown `kid`: may the JWKS be refetched now? True at most once per
    /// `minRefetchInterval`; a true answer records `now` as the last refetch. Monotonic time, so
    /// setting the system clock neither blocks refetches nor lets a flood through.
    public func claimRefetch(now: ContinuousClock.Instant) -> Bool {
        let interval = settings.minRefetchInterval
        return lock.withLock {
            if let last = lastRefetchClaim {
                let elapsed = last.duration(to: now)
                if elapsed >= .zero && elapsed < interval { return false }
            }
            lastRefetchClaim = now
            return true
        }
    }

    /// Tokens currently in the verified-token cache.
    public var cachedTokenCount: Int {
        lock.withLock { cache.count }
    }

    /// Verifications answered from the cache since the provider was made (for metrics).
    public var cacheHits: UInt64 {
        lock.withLock { cache.hits }
    }

    /// Verifies `token` at `now` with the current keys. A token that verified before and whose `exp`
    /// is still ahead of `now` is answered from the cache (keyed by its SHA-256) without repeating
    /// the signature check.
    public func verify(token: String, now: WallTime) -> Result<JWTIdentity, JWTFailure> {
        let bytes = Array(token.utf8)
        guard bytes.count <= settings.maxTokenBytes else { return .failure(.tooLarge) }
        let digest = Digest.sha256(bytes)
        if let identity = cachedIdentity(digest: digest, now: now) { return .success(identity) }
        switch ParsedJWT.parse(bytes) {
        case .failure(let failure):
            return .failure(failure)
        case .success(let parsed):
            return verify(parsed: parsed, digest: digest, now: now)
        }
    }

    // MARK: - Internals shared with JWTAuthenticator

    func cachedIdentity(digest: [UInt8], now: WallTime) -> JWTIdentity? {
        lock.withLock { cache.lookup(digest, now: now) }
    }

    /// Every check after parsing; caches the identity on success.
    func verify(parsed: ParsedJWT, digest: [UInt8], now: WallTime) -> Result<JWTIdentity, JWTFailure> {
        let result = check(parsed, now: now)
        if case .success(let identity) = result, identity.expiresAt > now {
            lock.withLock { cache.insert(digest, identity) }
        }
        return result
    }

    private func check(_ token: ParsedJWT, now: WallTime) -> Result<JWTIdentity, JWTFailure> {
        // Header: the allow-list, then critical extensions (none are understood).
        guard let algorithm = JWSAlgorithm(rawValue: token.algorithmName), settings.algorithms.contains(algorithm) else {
            return .failure(.algorithmNotAllowed)
        }
        if token.header["crit"] != nil { return .failure(.critHeader) }

        let claims = token.claims
        guard let issuer = claims["iss"]?.stringValue, issuer == settings.issuer else { return .failure(.wrongIssuer) }

        // Times, with the configured skew in the client's favour.
        let skew = settings.clockSkew.seconds
        let nowSeconds = now.secondsSince1970
        guard let expValue = claims["exp"], expValue != .null else { return .failure(.missingExpiry) }
        guard let exp = expValue.finiteNumber else { return .failure(.invalidClaim("exp")) }
        guard nowSeconds < exp + skew else { return .failure(.expired) }
        if let nbfValue = claims["nbf"], nbfValue != .null {
            guard let nbf = nbfValue.finiteNumber else { return .failure(.invalidClaim("nbf")) }
            guard nowSeconds >= nbf - skew else { return .failure(.notYetValid) }
        }
        if let iatValue = claims["iat"], iatValue != .null {
            guard let iat = iatValue.finiteNumber else { return .failure(.invalidClaim("iat")) }
            guard iat <= nowSeconds + skew else { return .failure(.issuedInFuture) }
        }

        // Audience: a string or an array of strings containing one configured audience.
        let audiences: [String]
        switch claims["aud"] {
        case .string(let single)?:
            audiences = [single]
        case .array(let list)?:
            let strings = list.compactMap(\.stringValue)
            guard strings.count == list.count else { return .failure(.invalidClaim("aud")) }
            audiences = strings
        case nil, .null?:
            return .failure(.wrongAudience)
        default:
            return .failure(.invalidClaim("aud"))
        }
        guard audiences.contains(where: settings.audiences.contains) else { return .failure(.wrongAudience) }

        for name in settings.requiredClaims {
            guard let value = JWTClaimPath.lookup(name, in: claims), value != .null else {
                return .failure(.missingClaim(name))
            }
        }

        // Key and signature.
        let key: JWSKey
        switch selectKey(keyID: token.keyID, algorithm: algorithm) {
        case .success(let selected): key = selected
        case .failure(let failure): return .failure(failure)
        }
        guard key.supports(algorithm) else { return .failure(.keyAlgorithmMismatch) }
        guard key.verify(algorithm: algorithm, signingInput: token.signingInput, signature: token.signature) else {
            return .failure(.badSignature)
        }

        // What the proxy takes from the verified claims.
        let principalName = settings.principalClaim
        guard let principalValue = JWTClaimPath.lookup(principalName, in: claims), principalValue != .null else {
            return .failure(.missingClaim(principalName))
        }
        guard let principal = principalValue.claimText, !principal.isEmpty, JWTClaimPath.isPrintable(principal) else {
            return .failure(.invalidClaim(principalName))
        }
        var tenant: String?
        if let tenantName = settings.tenantClaim, let value = JWTClaimPath.lookup(tenantName, in: claims), value != .null {
            guard let text = value.stringValue, JWTClaimPath.isPrintable(text) else { return .failure(.invalidClaim(tenantName)) }
            tenant = text
        }
        var headers: [(name: String, value: String)] = []
        for (claim, header) in settings.claimsToHeaders {
            guard let value = JWTClaimPath.lookup(claim, in: claims), let text = value.claimText else { continue }
            // A header value with CR, LF or NUL could split or smuggle headers upstream.
            guard JWTClaimPath.isPrintable(text) else { return .failure(.invalidClaim(claim)) }
            headers.append((name: header, value: text))
        }
        return .success(JWTIdentity(
            issuer: issuer, principal: principal, tenant: tenant, headers: headers,
            expiresAt: WallTime(secondsSince1970: exp)))
    }

    /// The key for a token: the HMAC secret for HS* providers; otherwise the JWKS key whose `kid`
    /// equals the token's (an opaque string compare), or, without a `kid`, the only key usable
    /// with `algorithm`.
    private func selectKey(keyID: String?, algorithm: JWSAlgorithm) -> Result<JWSKey, JWTFailure> {
        if let hmacKey { return .success(hmacKey) }
        guard let keys = lock.withLock({ self.keys }), keys.count > 0 else { return .failure(.noKeys) }
        func usable(_ entry: JWKSet.Entry) -> Bool {
            entry.key.supports(algorithm) && (entry.algorithm == nil || entry.algorithm == algorithm)
        }
        if let keyID {
            let named = keys.entries.filter { $0.keyID == keyID }
            if named.isEmpty { return .failure(.unknownKeyID) }
            guard let entry = named.first(where: usable) else { return .failure(.keyAlgorithmMismatch) }
            return .success(entry.key)
        }
        let candidates = keys.entries.filter(usable)
        switch candidates.count {
        case 1: return .success(candidates[0].key)
        case 0: return .failure(.keyAlgorithmMismatch)
        default: return .failure(.unknownKeyID)
        }
    }
}

/// Verifies a JWT with the provider its `iss` names.
///
/// `iss` is read from the unverified claims only to pick the provider; that provider then runs
/// every check, including `iss` itself. With several providers, the cache of each is consulted
/// before any parsing, so a repeated token costs one SHA-256 and a dictionary lookup.
public struct JWTAuthenticator: Sendable {
    public var providers: [JWTProvider]

    public init(providers: [JWTProvider]) {
        self.providers = providers
    }

    /// The size limit applied before parsing: the largest `maxTokenBytes` of the providers.
    private var maxTokenBytes: Int {
        providers.map(\.settings.maxTokenBytes).max() ?? JWTProviderSettings.defaultMaxTokenBytes
    }

    public func verify(token: String, now: WallTime) -> Result<(provider: JWTProvider, identity: JWTIdentity), JWTFailure> {
        let bytes = Array(token.utf8)
        guard bytes.count <= maxTokenBytes else { return .failure(.tooLarge) }
        let digest = Digest.sha256(bytes)
        for provider in providers {
            if let identity = provider.cachedIdentity(digest: digest, now: now) {
                return .success((provider: provider, identity: identity))
            }
        }
        let parsed: ParsedJWT
        switch ParsedJWT.parse(bytes) {
        case .success(let value): parsed = value
        case .failure(let failure): return .failure(failure)
        }
        guard let provider = provider(forIssuer: parsed.claims["iss"]?.stringValue) else {
            return .failure(.unknownIssuer)
        }
        guard bytes.count <= provider.settings.maxTokenBytes else { return .failure(.tooLarge) }
        return provider.verify(parsed: parsed, digest: digest, now: now).map { (provider: provider, identity: $0) }
    }

    /// The provider the token's (unverified) `iss` selects, or nil when the token does not parse or
    /// no provider has that issuer. For deciding which provider's JWKS to refetch after
    /// `unknownKeyID` or `noKeys`; never a substitute for `verify`.
    public func provider(forToken token: String) -> JWTProvider? {
        let bytes = Array(token.utf8)
        guard bytes.count <= maxTokenBytes, case .success(let parsed) = ParsedJWT.parse(bytes) else { return nil }
        return provider(forIssuer: parsed.claims["iss"]?.stringValue)
    }

    private func provider(forIssuer issuer: String?) -> JWTProvider? {
        guard let issuer else { return nil }
        return providers.first { $0.settings.issuer == issuer }
    }
}

// MARK: - Parsing

/// A compact JWS split, decoded and parsed, but not yet checked against any provider.
/// Parsing already refuses what no provider could accept: other serializations, non-canonical
/// base64url, duplicate members, and `alg: none`.
struct ParsedJWT {
    var header: JSONValue
    var claims: JSONValue
    var algorithmName: String
    /// `kid`, an opaque string compared byte for byte with JWKS `kid`s.
    var keyID: String?
    /// ASCII `base64url(header).base64url(payload)`, exactly as received.
    var signingInput: [UInt8]
    var signature: [UInt8]

    static func parse(_ token: [UInt8]) -> Result<ParsedJWT, JWTFailure> {
        if token.first == UInt8(ascii: "{") { return .failure(.unsupportedSerialization) }
        let segments = token.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        if segments.count == 5 { return .failure(.unsupportedSerialization) }
        // An empty signature segment is well-formed (an unsecured JWS): it reaches the `alg` checks,
        // so `alg: none` tokens are reported as such, and otherwise fails as a bad signature.
        guard segments.count == 3, !segments[0].isEmpty, !segments[1].isEmpty else { return .failure(.malformed) }

        var decoded: [[UInt8]] = []
        for segment in segments {
            switch Base64URL.decode(segment) {
            case .success(let bytes): decoded.append(bytes)
            case .failure(.nonCanonical): return .failure(.nonCanonicalBase64)
            case .failure(.notBase64): return .failure(.malformed)
            }
        }

        let header: JSONValue
        switch parseObject(decoded[0]) {
        case .success(let value): header = value
        case .failure(let failure): return .failure(failure)
        }
        guard let algorithmName = header["alg"]?.stringValue else { return .failure(.malformed) }
        if algorithmName.lowercased() == "none" { return .failure(.algorithmNone) }
        var keyID: String?
        if let kid = header["kid"] {
            guard let text = kid.stringValue else { return .failure(.malformed) }
            keyID = text
        }

        let claims: JSONValue
        switch parseObject(decoded[1]) {
        case .success(let value): claims = value
        case .failure(let failure): return .failure(failure)
        }
        let signingInput = Array(token[..<segments[1].endIndex])
        return .success(ParsedJWT(
            header: header, claims: claims, algorithmName: algorithmName, keyID: keyID,
            signingInput: signingInput, signature: decoded[2]))
    }

    /// A JSON object, strictly parsed; duplicate members are told apart from other malformations.
    private static func parseObject(_ bytes: [UInt8]) -> Result<JSONValue, JWTFailure> {
        do {
            let value = try JSONValue.parse(bytes, maxDepth: 32)
            guard value.objectValue != nil else { return .failure(.malformed) }
            return .success(value)
        } catch {
            return .failure(error.message.contains("duplicate") ? .duplicateMember : .malformed)
        }
    }
}

/// Claim names in settings (`tenant_claim`, `required_claims`, `claims_to_headers`,
/// `principal_claim`) may be dotted paths into nested objects: `org.tenant` is `{"org":{"tenant":…}}`.
/// A top-level claim whose name is literally the whole string (e.g. `https://example.com/tenant`,
/// which contains dots) wins over the path reading.
enum JWTClaimPath {
    static func lookup(_ name: String, in claims: JSONValue) -> JSONValue? {
        if let direct = claims[name] { return direct }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count > 1 else { return nil }
        var current: JSONValue? = claims
        for part in parts {
            current = current?[String(part)]
            if current == nil { return nil }
        }
        return current
    }

    /// No control characters (C0, DEL): the value may end up in a header or a log line.
    static func isPrintable(_ text: String) -> Bool {
        text.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F }
    }
}

extension JSONValue {
    /// A finite number (integer or real), for NumericDate claims.
    fileprivate var finiteNumber: Double? {
        guard let value = doubleValue, value.isFinite else { return nil }
        return value
    }

    /// A string claim, or a number claim in decimal (integral reals without a fraction); nil otherwise.
    fileprivate var claimText: String? {
        switch self {
        case .string(let text): return text
        case .integer(let number): return String(number)
        case .number(let number):
            guard number.isFinite else { return nil }
            if number == number.rounded(), abs(number) < 1e15 { return String(Int64(number)) }
            return String(number)
        default: return nil
        }
    }
}

extension Duration {
    /// The duration in (fractional) seconds.
    fileprivate var seconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }
}

// MARK: - Cache

/// Identities of tokens that verified, keyed by the token's SHA-256, each valid until the token's
/// `exp` (no skew: an entry past `exp` is dropped and the token goes through full verification,
/// where the skew applies). Bounded: inserting into a full cache evicts the oldest entry.
/// Not thread-safe; `JWTProvider` guards it with its lock.
struct VerifiedTokenCache {
    private struct Entry {
        var identity: JWTIdentity
        var sequence: UInt64
    }

    let capacity: Int
    private var entries: [[UInt8]: Entry] = [:]
    /// Insertion order (digest, sequence); stale pairs (replaced or removed entries) are skipped.
    private var order: [(digest: [UInt8], sequence: UInt64)] = []
    private var orderStart = 0
    private var nextSequence: UInt64 = 0
    private(set) var hits: UInt64 = 0

    init(capacity: Int) {
        self.capacity = capacity
    }

    var count: Int { entries.count }

    mutating func lookup(_ digest: [UInt8], now: WallTime) -> JWTIdentity? {
        guard let entry = entries[digest] else { return nil }
        guard now < entry.identity.expiresAt else {
            entries[digest] = nil
            return nil
        }
        hits += 1
        return entry.identity
    }

    mutating func insert(_ digest: [UInt8], _ identity: JWTIdentity) {
        nextSequence += 1
        entries[digest] = Entry(identity: identity, sequence: nextSequence)
        order.append((digest: digest, sequence: nextSequence))
        while entries.count > capacity, orderStart < order.count {
            let oldest = order[orderStart]
            orderStart += 1
            if entries[oldest.digest]?.sequence == oldest.sequence { entries[oldest.digest] = nil }
        }
        // Drop the consumed prefix (and stale pairs) once it dominates the array.
        if orderStart > capacity || order.count > 4 * max(capacity, 1) {
            order = order[orderStart...].filter { entries[$0.digest]?.sequence == $0.sequence }
            orderStart = 0
        }
    }

    mutating func removeAll() {
        entries.removeAll()
        order.removeAll()
        orderStart = 0
    }
}
