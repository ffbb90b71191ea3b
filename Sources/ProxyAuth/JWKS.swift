import ProxyJSON
import ProxyTLS

/// A parsed JSON Web Key Set (RFC 7517 §5): the usable signature keys, each with its `kid` and
/// optional `alg`, plus a reason for every key that was left out.
///
/// Immutable; a refetch builds a new set and `JWTProvider.replaceKeys` swaps it in. Accepted key
/// types: RSA (≥ 2048 bits), EC P-256/P-384/P-521, OKP Ed25519. `oct` keys (shared secrets) are
/// refused here on purpose: an HMAC secret only comes from the provider's own configuration, so a
/// JWKS endpoint can never turn a provider into one that accepts HS* tokens.
public struct JWKSet: Sendable {
    /// One usable key.
    struct Entry: Sendable {
        /// Opaque identifier, compared byte for byte with a token's `kid`; never used as a path or URL.
        var keyID: String?
        /// The JWK's `alg`, when it had one; a token must then use exactly this algorithm.
        var algorithm: JWSAlgorithm?
        var key: JWSKey
    }

    let entries: [Entry]

    /// Why each unusable key was skipped, e.g. `keys[2]: kty "oct" ...`. For logs; never key material.
    public let skipped: [String]

    /// The `kid` of every usable key, in document order (keys without one are not listed).
    public var keyIDs: [String] { entries.compactMap(\.keyID) }

    /// The number of usable keys.
    public var count: Int { entries.count }

    /// Parses a JWKS document strictly (jansson, duplicate members rejected).
    ///
    /// Unusable keys are skipped with a reason in `skipped`; the set fails as a whole only when the
    /// document is not a JWKS or no key is usable. Errors name the key index and field, never a value.
    public static func parse(_ bytes: [UInt8]) throws(JWKSError) -> JWKSet {
        let document: JSONValue
        do {
            document = try JSONValue.parse(bytes, maxDepth: 16)
        } catch {
            throw JWKSError(problems: ["not valid JSON: \(error.message) at line \(error.line)"])
        }
        guard document.objectValue != nil else {
            throw JWKSError(problems: ["expected a JSON object with a `keys` array"])
        }
        guard let list = document["keys"]?.arrayValue else {
            throw JWKSError(problems: ["`keys`: missing or not an array"])
        }
        var entries: [Entry] = []
        var skipped: [String] = []
        for (index, item) in list.enumerated() {
            switch parseKey(item, at: "keys[\(index)]") {
            case .success(let entry): entries.append(entry)
            case .failure(let reason): skipped.append(reason.message)
            }
        }
        guard !entries.isEmpty else {
            throw JWKSError(problems: ["no usable signature key" + (list.isEmpty ? " (`keys` is empty)" : "")] + skipped)
        }
        return JWKSet(entries: entries, skipped: skipped)
    }

    /// A reason a key was skipped; the message starts with the key's position.
    private struct SkipReason: Error {
        var message: String
    }

    private static func parseKey(_ item: JSONValue, at position: String) -> Result<Entry, SkipReason> {
        func skip(_ message: String) -> Result<Entry, SkipReason> { .failure(SkipReason(message: "\(position)\(message)")) }
        guard item.objectValue != nil else { return skip(": not an object") }
        guard let kty = item["kty"]?.stringValue else { return skip(".kty: missing or not a string") }

        var keyID: String?
        if let kid = item["kid"] {
            guard let text = kid.stringValue else { return skip(".kid: not a string") }
            keyID = text
        }
        if let use = item["use"] {
            guard use.stringValue == "sig" else { return skip(".use: not \"sig\"; only signature keys verify tokens") }
        }
        if let operations = item["key_ops"] {
            guard let list = operations.arrayValue, list.contains(where: { $0.stringValue == "verify" }) else {
                return skip(".key_ops: does not include \"verify\"")
            }
        }
        var algorithm: JWSAlgorithm?
        if let alg = item["alg"] {
            guard let name = alg.stringValue, let known = JWSAlgorithm(rawValue: name) else {
                return skip(".alg: not a supported JWS signature algorithm")
            }
            algorithm = known
        }

        func field(_ name: String) -> Result<[UInt8], SkipReason> {
            guard let text = item[name]?.stringValue else {
                return .failure(SkipReason(message: "\(position).\(name): missing or not a string"))
            }
            switch Base64URL.decode(Array(text.utf8), allowPadding: true) {
            case .success(let bytes): return .success(bytes)
            case .failure: return .failure(SkipReason(message: "\(position).\(name): not base64url"))
            }
        }

        let key: JWSKey
        do {
            switch kty {
            case "RSA":
                key = try JWSKey.rsa(modulus: field("n").get(), exponent: field("e").get())
            case "EC":
                guard let curve = item["crv"]?.stringValue else { return skip(".crv: missing or not a string") }
                guard ["P-256", "P-384", "P-521"].contains(curve) else {
                    return skip(".crv: unsupported curve (use P-256, P-384 or P-521)")
                }
                key = try JWSKey.ec(curve: curve, x: field("x").get(), y: field("y").get())
            case "OKP":
                guard item["crv"]?.stringValue == "Ed25519" else { return skip(".crv: only Ed25519 is supported for OKP keys") }
                key = try JWSKey.ed25519(publicKey: field("x").get())
            case "oct":
                return skip(".kty: \"oct\" keys (shared secrets) are not accepted from a JWKS; configure hmac_secret_file or hmac_secret_env")
            default:
                return skip(".kty: unsupported key type (use RSA, EC or OKP)")
            }
        } catch let reason as SkipReason {
            return .failure(reason)
        } catch let error as TLSError {
            return skip(": \(error.description)")
        } catch {
            return skip(": unusable key")
        }
        if let algorithm, !key.supports(algorithm) {
            return skip(".alg: \(algorithm.rawValue) does not match the \(key.summary) key")
        }
        return .success(Entry(keyID: keyID, algorithm: algorithm, key: key))
    }
}

/// A JWKS document that cannot be used at all. Each problem names the key index and field;
/// no key material or document text is quoted.
public struct JWKSError: Error, Sendable, Equatable, CustomStringConvertible {
    public var problems: [String]

    public init(problems: [String]) {
        self.problems = problems
    }

    public var description: String {
        "invalid JWKS: " + (problems.count == 1 ? problems[0] : problems.joined(separator: "; "))
    }
}
