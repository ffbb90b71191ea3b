// JWS signature verification on OpenSSL 3 (RFC 7515 / RFC 7518).
//
// Keys are built from JWK fields, never parsed from PEM or DER supplied by a token: RSA from
// n/e and EC from the curve plus x/y, both with OSSL_PARAM_BLD + EVP_PKEY_fromdata and then
// EVP_PKEY_public_check; Ed25519 from its 32-byte raw public key. HMAC "keys" are secrets the
// operator configured; they never come from a JWKS.
//
// Ownership: each JWSKey owns at most one EVP_PKEY, created in a factory below and freed in
// deinit. Verification only reads the key (every call makes its own EVP_MD_CTX), which OpenSSL 3
// allows from many threads at once, so one JWSKey is shared by every event loop.
internal import COpenSSL

/// The JWS `alg` values the proxy can verify (RFC 7518 §3.1 plus RFC 8037 EdDSA).
/// `none` is deliberately absent: it cannot be represented, so it cannot be allow-listed.
public enum JWSAlgorithm: String, Sendable, CaseIterable {
    case RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, HS256, HS384, HS512

    /// True for the HMAC algorithms, whose key is a shared secret rather than a public key.
    public var isHMAC: Bool {
        switch self {
        case .HS256, .HS384, .HS512: return true
        default: return false
        }
    }

    /// The message digest the algorithm signs; nil for EdDSA, which hashes internally.
    fileprivate var messageDigest: OpaquePointer? {
        switch self {
        case .RS256, .PS256, .ES256, .HS256: return EVP_sha256()
        case .RS384, .PS384, .ES384, .HS384: return EVP_sha384()
        case .RS512, .PS512, .ES512, .HS512: return EVP_sha512()
        case .EdDSA: return nil
        }
    }
}

/// A public key (RSA, EC P-256/P-384/P-521, Ed25519) or an HMAC secret that verifies JWS signatures.
///
/// Owns one `EVP_PKEY` (none for HMAC), created by the factory methods and freed in `deinit`.
/// Immutable after construction; `verify` may be called from any thread concurrently.
/// One key verifies only the algorithms of its own type (`supports`), so an RSA public key can never
/// be used as an HMAC secret (the classic HS256-with-a-public-key confusion).
public final class JWSKey: Sendable {
    /// What kind of key this is; decides which algorithms it verifies.
    enum Kind: Equatable {
        case rsa
        case ec(Curve)
        case ed25519
        case hmac
    }

    /// The NIST curves JOSE uses, with the sizes the JWK and the raw r‖s signature need.
    enum Curve: Equatable {
        case p256, p384, p521

        init?(jwkName: String) {
            switch jwkName {
            case "P-256": self = .p256
            case "P-384": self = .p384
            case "P-521": self = .p521
            default: return nil
            }
        }

        /// Bytes in one field element (and in r or s of a JWS signature).
        var coordinateSize: Int {
            switch self {
            case .p256: return 32
            case .p384: return 48
            case .p521: return 66
            }
        }

        var openSSLGroupName: String {
            switch self {
            case .p256: return "prime256v1"
            case .p384: return "secp384r1"
            case .p521: return "secp521r1"
            }
        }

        var nid: Int32 {
            switch self {
            case .p256: return NID_X9_62_prime256v1
            case .p384: return NID_secp384r1
            case .p521: return NID_secp521r1
            }
        }
    }

    /// Shortest HMAC secret accepted (RFC 7518 §3.2 asks for at least the hash size; 32 bytes is the
    /// floor for every HS* algorithm).
    public static let minimumHMACSecretBytes = 32
    /// Smallest RSA modulus accepted (RFC 7518 §3.3 and §3.5).
    public static let minimumRSABits = 2048

    let kind: Kind
    /// The public key; nil only for HMAC. Written once in the factory, freed in deinit.
    nonisolated(unsafe) private let pkey: OpaquePointer?
    /// The HMAC secret; empty for public keys.
    private let secret: [UInt8]
    /// EC only: the group order n as a big-endian number of `coordinateSize` bytes, for the
    /// 1 ≤ r, s < n check on raw signatures.
    private let curveOrder: [UInt8]

    /// Takes ownership of `pkey` (freed in deinit).
    private init(takingOwnershipOf pkey: OpaquePointer?, kind: Kind, secret: [UInt8] = [], curveOrder: [UInt8] = []) {
        self.pkey = pkey
        self.kind = kind
        self.secret = secret
        self.curveOrder = curveOrder
    }

    deinit {
        if let pkey { EVP_PKEY_free(pkey) }
    }

    /// A short description for logs: "RSA 2048", "EC P-256", "Ed25519", "HMAC". Never key material.
    public var summary: String {
        switch kind {
        case .rsa: return "RSA \(pkey.map { EVP_PKEY_get_bits($0) } ?? 0)"
        case .ec(.p256): return "EC P-256"
        case .ec(.p384): return "EC P-384"
        case .ec(.p521): return "EC P-521"
        case .ed25519: return "Ed25519"
        case .hmac: return "HMAC"
        }
    }

    // MARK: - Building keys

    /// An RSA public key from the JWK `n` and `e` (big-endian, leading zeros allowed).
    /// Refuses moduli under 2048 bits and keys OpenSSL's public-key check rejects (even modulus,
    /// exponent out of range).
    public static func rsa(modulus: [UInt8], exponent: [UInt8]) throws(TLSError) -> JWSKey {
        let significant = Array(modulus.drop(while: { $0 == 0 }))
        guard !significant.isEmpty, !exponent.drop(while: { $0 == 0 }).isEmpty else {
            throw TLSError(kind: .invalidKey, description: "RSA key: modulus and exponent must not be zero")
        }
        // Reject short keys before asking OpenSSL to do anything with them.
        let bits = (significant.count - 1) * 8 + (8 - significant[0].leadingZeroBitCount)
        guard bits >= minimumRSABits else {
            throw TLSError(
                kind: .invalidKey,
                description: "RSA key of \(bits) bits refused: at least \(minimumRSABits) bits are required")
        }
        OpenSSLErrorQueue.clear()
        guard let n = bignum(significant), let e = bignum(exponent) else {
            throw TLSError.drainingErrorQueue(.invalidKey, "RSA key: cannot convert modulus or exponent")
        }
        defer {
            BN_free(n)
            BN_free(e)
        }
        let pkey = try fromData(type: "RSA") { builder in
            builder.push(bignum: n, named: "n") && builder.push(bignum: e, named: "e")
        }
        let key = JWSKey(takingOwnershipOf: pkey, kind: .rsa)
        try key.checkPublicKey("RSA key")
        return key
    }

    /// An EC public key on "P-256", "P-384" or "P-521" from the JWK `x` and `y`.
    /// Coordinates shorter than the field size are left-padded; longer ones are refused. The point
    /// must lie on the curve (checked by EVP_PKEY_fromdata and again by EVP_PKEY_public_check).
    public static func ec(curve name: String, x: [UInt8], y: [UInt8]) throws(TLSError) -> JWSKey {
        guard let curve = Curve(jwkName: name) else {
            throw TLSError(kind: .invalidKey, description: "EC key: unsupported curve (use P-256, P-384 or P-521)")
        }
        let size = curve.coordinateSize
        guard x.count <= size, y.count <= size else {
            throw TLSError(kind: .invalidKey, description: "EC key: a coordinate is longer than the \(name) field size")
        }
        // SEC 1 uncompressed point: 04 ‖ x ‖ y, each coordinate exactly `size` bytes.
        var point: [UInt8] = [0x04]
        point += [UInt8](repeating: 0, count: size - x.count) + x
        point += [UInt8](repeating: 0, count: size - y.count) + y
        OpenSSLErrorQueue.clear()
        let pkey = try fromData(type: "EC") { builder in
            builder.push(utf8: curve.openSSLGroupName, named: "group") && builder.push(octets: point, named: "pub")
        }
        let key = JWSKey(takingOwnershipOf: pkey, kind: .ec(curve), curveOrder: try order(of: curve))
        try key.checkPublicKey("EC key")
        return key
    }

    /// An Ed25519 public key from the JWK `x` (exactly 32 bytes).
    public static func ed25519(publicKey: [UInt8]) throws(TLSError) -> JWSKey {
        guard publicKey.count == 32 else {
            throw TLSError(kind: .invalidKey, description: "Ed25519 key: the public key must be 32 bytes, not \(publicKey.count)")
        }
        OpenSSLErrorQueue.clear()
        let pkey = publicKey.withUnsafeBufferPointer {
            EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, $0.baseAddress, $0.count)
        }
        guard let pkey else {
            throw TLSError.drainingErrorQueue(.invalidKey, "Ed25519 key: OpenSSL refused the public key")
        }
        return JWSKey(takingOwnershipOf: pkey, kind: .ed25519)
    }

    /// An HMAC secret for HS256/HS384/HS512. Refuses secrets shorter than 32 bytes.
    public static func hmac(secret: [UInt8]) throws(TLSError) -> JWSKey {
        guard secret.count >= minimumHMACSecretBytes else {
            throw TLSError(
                kind: .invalidKey,
                description: "HMAC secret of \(secret.count) bytes refused: at least \(minimumHMACSecretBytes) bytes are required (`openssl rand -base64 48`)")
        }
        return JWSKey(takingOwnershipOf: nil, kind: .hmac, secret: secret)
    }

    // MARK: - Verifying

    /// Whether this key may verify `algorithm`: RS*/PS* need RSA; ES256, ES384, ES512 need P-256,
    /// P-384, P-521 respectively; EdDSA needs Ed25519; HS* need an HMAC secret.
    public func supports(_ algorithm: JWSAlgorithm) -> Bool {
        switch (algorithm, kind) {
        case (.RS256, .rsa), (.RS384, .rsa), (.RS512, .rsa), (.PS256, .rsa), (.PS384, .rsa), (.PS512, .rsa):
            return true
        case (.ES256, .ec(.p256)), (.ES384, .ec(.p384)), (.ES512, .ec(.p521)):
            return true
        case (.EdDSA, .ed25519):
            return true
        case (.HS256, .hmac), (.HS384, .hmac), (.HS512, .hmac):
            return true
        default:
            return false
        }
    }

    /// Verifies a JWS signature over `signingInput` (ASCII `header.payload`).
    ///
    /// False for an algorithm this key does not support. ES*: the signature must be exactly
    /// 2 × coordinate-size bytes r‖s with 1 ≤ r, s < n (DER signatures are refused); it is converted
    /// to DER for OpenSSL here. HS*: the MAC is recomputed and compared in constant time.
    /// PS*: salt length equal to the digest length, MGF1 with the same digest.
    public func verify(algorithm: JWSAlgorithm, signingInput: [UInt8], signature: [UInt8]) -> Bool {
        guard supports(algorithm) else { return false }
        switch kind {
        case .hmac:
            return verifyHMAC(algorithm: algorithm, signingInput: signingInput, signature: signature)
        case .ec(let curve):
            guard let der = derSignature(rawSignature: signature, curve: curve) else { return false }
            return digestVerify(algorithm: algorithm, signingInput: signingInput, signature: der)
        case .rsa, .ed25519:
            return digestVerify(algorithm: algorithm, signingInput: signingInput, signature: signature)
        }
    }

    private func verifyHMAC(algorithm: JWSAlgorithm, signingInput: [UInt8], signature: [UInt8]) -> Bool {
        var mac = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let produced = secret.withUnsafeBytes { key in
            signingInput.withUnsafeBufferPointer { data in
                mac.withUnsafeMutableBufferPointer { out in
                    HMAC(algorithm.messageDigest, key.baseAddress, Int32(key.count), data.baseAddress, data.count,
                         out.baseAddress, &length)
                }
            }
        }
        guard produced != nil else {
            OpenSSLErrorQueue.clear()
            return false
        }
        // ConstantTime.equals refuses a length mismatch first (the length is public: it is the
        // digest size), then compares every byte with CRYPTO_memcmp.
        return ConstantTime.equals(Array(mac.prefix(Int(length))), signature)
    }

    /// EVP one-shot verification for RSA (PKCS #1 v1.5 or PSS), ECDSA (DER signature) and Ed25519.
    private func digestVerify(algorithm: JWSAlgorithm, signingInput: [UInt8], signature: [UInt8]) -> Bool {
        guard let pkey else { return false }
        OpenSSLErrorQueue.clear()
        // A failed verification leaves reasons on the queue; they are not errors of the proxy.
        defer { OpenSSLErrorQueue.clear() }
        guard let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        // The EVP_PKEY_CTX belongs to `context` and is freed with it.
        var keyContext: OpaquePointer?
        guard EVP_DigestVerifyInit(context, &keyContext, algorithm.messageDigest, nil, pkey) == 1 else {
            return false
        }
        switch algorithm {
        case .PS256, .PS384, .PS512:
            guard let keyContext,
                EVP_PKEY_CTX_set_rsa_padding(keyContext, RSA_PKCS1_PSS_PADDING) == 1,
                EVP_PKEY_CTX_set_rsa_pss_saltlen(keyContext, RSA_PSS_SALTLEN_DIGEST) == 1,
                EVP_PKEY_CTX_set_rsa_mgf1_md(keyContext, algorithm.messageDigest) == 1
            else { return false }
        case .RS256, .RS384, .RS512:
            guard let keyContext, EVP_PKEY_CTX_set_rsa_padding(keyContext, RSA_PKCS1_PADDING) == 1 else { return false }
        default:
            break
        }
        let result = signature.withUnsafeBufferPointer { sig in
            signingInput.withUnsafeBufferPointer { data in
                EVP_DigestVerify(context, sig.baseAddress, sig.count, data.baseAddress, data.count)
            }
        }
        return result == 1
    }

    /// Converts a JWS ECDSA signature (r‖s, fixed width) to the DER `ECDSA-Sig-Value` OpenSSL expects.
    /// nil when the length is wrong or r or s is 0 or not below the group order.
    private func derSignature(rawSignature: [UInt8], curve: Curve) -> [UInt8]? {
        let size = curve.coordinateSize
        guard rawSignature.count == 2 * size, curveOrder.count == size else { return nil }
        let r = Array(rawSignature[0..<size])
        let s = Array(rawSignature[size...])
        // Fixed-width big-endian numbers compare like byte strings.
        for part in [r, s] {
            guard part.contains(where: { $0 != 0 }), part.lexicographicallyPrecedes(curveOrder) else { return nil }
        }
        OpenSSLErrorQueue.clear()
        defer { OpenSSLErrorQueue.clear() }
        guard let sig = ECDSA_SIG_new() else { return nil }
        defer { ECDSA_SIG_free(sig) }
        guard let rNumber = Self.bignum(r) else { return nil }
        guard let sNumber = Self.bignum(s) else {
            BN_free(rNumber)
            return nil
        }
        // ECDSA_SIG_set0 takes ownership of both numbers on success.
        guard ECDSA_SIG_set0(sig, rNumber, sNumber) == 1 else {
            BN_free(rNumber)
            BN_free(sNumber)
            return nil
        }
        let length = i2d_ECDSA_SIG(sig, nil)
        guard length > 0 else { return nil }
        var der = [UInt8](repeating: 0, count: Int(length))
        let written = der.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var cursor = buffer.baseAddress
            return i2d_ECDSA_SIG(sig, &cursor)
        }
        guard written == length else { return nil }
        return der
    }

    // MARK: - OpenSSL helpers

    /// A new BIGNUM from big-endian bytes (caller frees), or nil on allocation failure.
    private static func bignum(_ bytes: [UInt8]) -> OpaquePointer? {
        bytes.withUnsafeBufferPointer { BN_bin2bn($0.baseAddress, Int32($0.count), nil) }
    }

    /// The group order of `curve` as `coordinateSize` big-endian bytes.
    private static func order(of curve: Curve) throws(TLSError) -> [UInt8] {
        guard let group = EC_GROUP_new_by_curve_name(curve.nid) else {
            throw TLSError.drainingErrorQueue(.invalidKey, "EC key: OpenSSL does not know the curve")
        }
        defer { EC_GROUP_free(group) }
        guard let order = EC_GROUP_get0_order(group) else {  // owned by the group
            throw TLSError.drainingErrorQueue(.invalidKey, "EC key: the curve has no order")
        }
        var bytes = [UInt8](repeating: 0, count: curve.coordinateSize)
        let written = bytes.withUnsafeMutableBufferPointer { BN_bn2binpad(order, $0.baseAddress, Int32($0.count)) }
        guard written == Int32(curve.coordinateSize) else {
            throw TLSError.drainingErrorQueue(.invalidKey, "EC key: cannot read the curve order")
        }
        return bytes
    }

    /// Runs EVP_PKEY_public_check on the key; throws naming `what` when OpenSSL rejects it.
    private func checkPublicKey(_ what: String) throws(TLSError) {
        guard let pkey else { return }
        OpenSSLErrorQueue.clear()
        guard let context = EVP_PKEY_CTX_new_from_pkey(nil, pkey, nil) else {
            throw TLSError.drainingErrorQueue(.invalidKey, "\(what): cannot check the public key")
        }
        defer { EVP_PKEY_CTX_free(context) }
        guard EVP_PKEY_public_check(context) == 1 else {
            throw TLSError.drainingErrorQueue(.invalidKey, "\(what): OpenSSL's public key check failed")
        }
    }

    /// Builds a public EVP_PKEY of `type` ("RSA", "EC") from the parameters `build` pushes.
    /// The returned key is owned by the caller.
    private static func fromData(type: String, build: (ParameterBuilder) -> Bool) throws(TLSError) -> OpaquePointer {
        let builder = ParameterBuilder()
        guard builder.isValid, build(builder), let params = builder.makeParameters() else {
            throw TLSError.drainingErrorQueue(.invalidKey, "\(type) key: cannot build the key parameters")
        }
        defer { OSSL_PARAM_free(params) }
        guard let context = EVP_PKEY_CTX_new_from_name(nil, type, nil) else {
            throw TLSError.drainingErrorQueue(.invalidKey, "\(type) key: OpenSSL has no \(type) implementation")
        }
        defer { EVP_PKEY_CTX_free(context) }
        var pkey: OpaquePointer?
        guard EVP_PKEY_fromdata_init(context) == 1,
            EVP_PKEY_fromdata(context, &pkey, otlp_EVP_PKEY_PUBLIC_KEY(), params) == 1,
            let pkey
        else {
            throw TLSError.drainingErrorQueue(.invalidKey, "\(type) key: OpenSSL refused the key fields")
        }
        return pkey
    }
}

/// Owns an `OSSL_PARAM_BLD` and copies of every name and value pushed into it.
///
/// OSSL_PARAM_BLD keeps the pointers it is given (names, strings, octet buffers) until
/// `OSSL_PARAM_BLD_to_param` copies them, so this class keeps its own allocations alive until it is
/// released; `deinit` frees the builder and the copies. The caller frees the OSSL_PARAM array
/// `makeParameters` returns with `OSSL_PARAM_free`. Used on one thread, inside one factory call.
private final class ParameterBuilder {
    private let builder: OpaquePointer?
    private var allocations: [UnsafeMutableRawPointer] = []

    init() {
        builder = OSSL_PARAM_BLD_new()
    }

    deinit {
        if let builder { OSSL_PARAM_BLD_free(builder) }
        for allocation in allocations { free(allocation) }
    }

    var isValid: Bool { builder != nil }

    /// A NUL-terminated copy of `string` that lives as long as this builder.
    private func keep(_ string: String) -> UnsafeMutablePointer<CChar>? {
        guard let copy = strdup(string) else { return nil }
        allocations.append(UnsafeMutableRawPointer(copy))
        return copy
    }

    /// Pushes a BIGNUM; OpenSSL copies the number when the parameters are made, and the caller keeps
    /// `bignum` alive until then.
    func push(bignum: OpaquePointer, named name: String) -> Bool {
        guard let builder, let key = keep(name) else { return false }
        return OSSL_PARAM_BLD_push_BN(builder, key, bignum) == 1
    }

    func push(utf8 value: String, named name: String) -> Bool {
        guard let builder, let key = keep(name), let copy = keep(value) else { return false }
        return OSSL_PARAM_BLD_push_utf8_string(builder, key, copy, 0) == 1
    }

    func push(octets: [UInt8], named name: String) -> Bool {
        guard let builder, let key = keep(name), let buffer = malloc(max(octets.count, 1)) else { return false }
        allocations.append(buffer)
        octets.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return OSSL_PARAM_BLD_push_octet_string(builder, key, buffer, octets.count) == 1
    }

    func makeParameters() -> UnsafeMutablePointer<OSSL_PARAM>? {
        guard let builder else { return nil }
        return OSSL_PARAM_BLD_to_param(builder)
    }
}
