import ProxyOTLP
import ProxyTLS
import ProxyYAML
import ProxySystem

/// One entry of the tokens file: the SHA-256 of a token, who presents it, the tenant it writes to and
/// optionally the signals it may send.
///
/// Only the hash is kept in memory, whether the file held the token or its hash, so a heap dump or a
/// debug print never shows a usable credential.
public struct BearerTokenEntry: Sendable, Equatable {
    public var principal: String
    public var tenant: String
    public var tokenSHA256: [UInt8]
    /// Key `signals`: when set, requests for other signals are refused (403); nil allows every signal.
    public var signals: Set<OTLPSignal>?

    public init(principal: String, tenant: String, tokenSHA256: [UInt8], signals: Set<OTLPSignal>? = nil) {
        self.principal = principal
        self.tenant = tenant
        self.tokenSHA256 = tokenSHA256
        self.signals = signals
    }
}

/// The static bearer tokens from `auth.bearer.tokens_file`. Immutable; reload builds a new table.
public struct BearerTokenTable: Sendable {
    public let entries: [BearerTokenEntry]

    /// Plain tokens shorter than this are refused at load: they are guessable.
    public static let minimumTokenLength = 16

    public init(entries: [BearerTokenEntry]) {
        self.entries = entries
    }

    /// Finds the entry for a presented token.
    ///
    /// The token is hashed first, then compared with every entry's hash in constant time, without
    /// stopping at a match, so neither the token's length nor which entry matched shows in the timing.
    public func match(token: some Collection<UInt8>) -> BearerTokenEntry? {
        let presented = Digest.sha256(token)
        var found: BearerTokenEntry?
        for entry in entries where ConstantTime.equals(presented, entry.tokenSHA256) {
            if found == nil { found = entry }
        }
        return found
    }

    /// Reads and validates a tokens file. Every problem is reported at once, naming the entry and key;
    /// token values are never echoed.
    ///
    /// ```yaml
    /// tokens:
    ///   - principal: ci-runner
    ///     tenant: team-a
    ///     token: "…"            # or
    ///     sha256: "<64 hex>"
    ///     signals: [traces, metrics]   # optional: traces, metrics, logs, profiles; default all
    /// ```
    public static func load(file path: String) throws(AuthConfigurationError) -> BearerTokenTable {
        let bytes: [UInt8]
        do {
            bytes = try SystemFile.read(path, maxBytes: YAML.defaultMaximumBytes)
        } catch {
            throw AuthConfigurationError(file: path, problems: ["cannot read the file: \(error.explanation)"])
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw AuthConfigurationError(file: path, problems: ["cannot read the file: it is not UTF-8 text; save it as UTF-8"])
        }
        return try parse(yaml: text, file: path)
    }

    /// Parses tokens-file YAML; `file` only names the source in messages.
    public static func parse(yaml text: String, file: String) throws(AuthConfigurationError) -> BearerTokenTable {
        let node: YAMLNode?
        do {
            node = try YAML.parse(text)
        } catch {
            // The reader's reason names the construct and position, never a value (tokens stay out of logs).
            throw AuthConfigurationError(file: file, problems: ["not valid YAML: \(error)"])
        }
        guard let document = node?.mapping else {
            throw AuthConfigurationError(
                file: file, problems: ["expected a map with a `tokens` list at the top level"])
        }
        var problems: [String] = []
        for entry in document.entries where entry.key.text != "tokens" {
            problems.append("unknown key `\(entry.key.text)`: the file has one key, `tokens`")
        }
        guard let list = document["tokens"]?.sequence else {
            problems.append("`tokens` must be a list of entries with principal, tenant and token or sha256")
            throw AuthConfigurationError(file: file, problems: problems)
        }
        var entries: [BearerTokenEntry] = []
        var seenHashes: [[UInt8]: Int] = [:]
        for (index, item) in list.enumerated() {
            let at = "tokens[\(index)]"
            guard let map = item.mapping else {
                problems.append("\(at): expected a map with principal, tenant and token or sha256")
                continue
            }
            for entry in map.entries where !["principal", "tenant", "token", "sha256", "signals"].contains(entry.key.text) {
                problems.append("\(at).\(entry.key.text): unknown key; allowed: principal, tenant, token, sha256, signals")
            }
            var signals: Set<OTLPSignal>?
            if let value = map["signals"] {
                let names = value.sequence?.map { $0.scalar.flatMap(Self.string) }
                let parsed = names?.compactMap { $0.flatMap(OTLPSignal.init(rawValue:)) }
                if let names, let parsed, !parsed.isEmpty, parsed.count == names.count {
                    signals = Set(parsed)
                } else {
                    problems.append("\(at).signals: a non-empty list of \(OTLPSignal.names("and")), e.g. signals: [traces, metrics]")
                }
            }
            let principal = map["principal"]?.scalar.flatMap(Self.string)
            let tenant = map["tenant"]?.scalar.flatMap(Self.string)
            if principal == nil || principal!.isEmpty {
                problems.append("\(at).principal: required, a name for logs such as `ci-runner`")
            } else if !principal!.unicodeScalars.allSatisfy(Self.isPrincipalCharacter) {
                problems.append("\(at).principal: use letters, digits and . _ - @ / : only")
            }
            if let tenant {
                if let problem = TenantID.problem(tenant) { problems.append("\(at).tenant: \(problem)") }
            } else {
                problems.append("\(at).tenant: required, the tenant this token writes to, such as `team-a`")
            }
            let token = map["token"]?.scalar.flatMap(Self.string)
            let hash = map["sha256"]?.scalar.flatMap(Self.string)
            var digest: [UInt8]?
            switch (token, hash) {
            case (nil, nil):
                problems.append("\(at): set `token` (the secret) or `sha256` (its hex SHA-256)")
            case (.some, .some):
                problems.append("\(at): set only one of `token` and `sha256`")
            case (let token?, nil):
                if token.utf8.count < minimumTokenLength {
                    problems.append("\(at).token: shorter than \(minimumTokenLength) characters; generate one with `openssl rand -hex 32`")
                } else if AuthorizationHeader("Bearer \(token)") == nil {
                    problems.append("\(at).token: must be a token68 (letters, digits and - . _ ~ + / =), as clients send it in `Authorization: Bearer`")
                } else {
                    digest = Digest.sha256(Array(token.utf8))
                }
            case (nil, let hash?):
                if let bytes = Self.hexBytes(hash), bytes.count == 32 {
                    digest = bytes
                } else {
                    problems.append("\(at).sha256: expected 64 hex characters (`printf %s TOKEN | sha256sum`)")
                }
            }
            if let digest, let principal, let tenant {
                if let first = seenHashes[digest] {
                    problems.append("\(at): the same token as tokens[\(first)]; each token must map to one principal")
                } else {
                    seenHashes[digest] = index
                }
                entries.append(BearerTokenEntry(principal: principal, tenant: tenant, tokenSHA256: digest, signals: signals))
            }
        }
        if !problems.isEmpty { throw AuthConfigurationError(file: file, problems: problems) }
        return BearerTokenTable(entries: entries)
    }

    /// A scalar's text as written (a number stays as spelled: `0123` is not octal here); nil for null.
    private static func string(_ scalar: YAMLScalar) -> String? {
        scalar.isNull ? nil : scalar.text
    }

    private static func isPrincipalCharacter(_ scalar: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)
            || "._-@/:".unicodeScalars.contains(scalar)
    }

    private static func hexBytes(_ text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let high = hexValue(digits[index]), let low = hexValue(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func hexValue(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return digit - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

/// Tenant identifiers as Mimir, Loki and Tempo accept them in `X-Scope-OrgID`.
public enum TenantID {
    public static let maximumLength = 150
    /// The bytes a tenant ID may contain, indexed by byte value (built once: tenants are checked per request).
    private static let allowedBytes: [Bool] = {
        var table = [Bool](repeating: false, count: 256)
        for byte in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!-_.*'()".utf8 { table[Int(byte)] = true }
        return table
    }()

    /// nil when valid; otherwise what is wrong and how to fix it.
    public static func problem(_ tenant: String) -> String? {
        if tenant.isEmpty { return "must not be empty" }
        if tenant.utf8.count > maximumLength { return "longer than \(maximumLength) characters" }
        if tenant == "." || tenant == ".." { return "`.` and `..` are not valid tenant IDs" }
        if !tenant.utf8.allSatisfy({ allowedBytes[Int($0)] }) {
            return "use letters, digits and ! - _ . * ' ( ) only (the characters Mimir, Loki and Tempo accept)"
        }
        return nil
    }
}

/// A problem in a credentials file (tokens now; htpasswd and JWKS later). Names the file and the entry;
/// never includes a secret.
public struct AuthConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var problems: [String]

    public init(file: String, problems: [String]) {
        self.file = file
        self.problems = problems
    }

    public var description: String {
        "\(file): " + (problems.count == 1 ? problems[0] : problems.map { "\n  - \($0)" }.joined())
    }
}
