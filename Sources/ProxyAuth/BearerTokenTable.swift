import Foundation
import ProxyTLS
import Yams

/// One entry of the tokens file: the SHA-256 of a token, who presents it, the tenant it writes to and
/// optionally the signals it may send.
///
/// Only the hash is kept in memory, whether the file held the token or its hash, so a heap dump or a
/// debug print never shows a usable credential.
public struct BearerTokenEntry: Sendable, Equatable {
    public var principal: String
    public var tenant: String
    public var tokenSHA256: [UInt8]
    /// Key `signals`: when set, requests for other signals are refused (403); nil allows all three.
    public var signals: Set<AuthSignal>?

    public init(principal: String, tenant: String, tokenSHA256: [UInt8], signals: Set<AuthSignal>? = nil) {
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
    ///     signals: [traces, metrics]   # optional, default all three
    /// ```
    public static func load(file path: String) throws(AuthConfigurationError) -> BearerTokenTable {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw AuthConfigurationError(file: path, problems: ["cannot read the file: \(Self.describe(error))"])
        }
        return try parse(yaml: text, file: path)
    }

    /// Parses tokens-file YAML; `file` only names the source in messages.
    public static func parse(yaml text: String, file: String) throws(AuthConfigurationError) -> BearerTokenTable {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw AuthConfigurationError(file: file, problems: ["not valid YAML: \(Self.describe(error))"])
        }
        // Yams turns mapping keys into strings with a force unwrap: a key that is itself a map or a
        // list would crash the process (at start-up, or at reload instead of keeping the old tokens).
        if let node, let line = Self.firstNonScalarKeyLine(node) {
            throw AuthConfigurationError(
                file: file, problems: ["line \(line): a key is a map or a list; keys in this file are plain names"])
        }
        let root = node?.any
        guard let document = root as? [String: Any] else {
            throw AuthConfigurationError(
                file: file, problems: ["expected a map with a `tokens` list at the top level"])
        }
        var problems: [String] = []
        for key in document.keys where key != "tokens" {
            problems.append("unknown key `\(key)`: the file has one key, `tokens`")
        }
        guard let list = document["tokens"] as? [Any] else {
            problems.append("`tokens` must be a list of entries with principal, tenant and token or sha256")
            throw AuthConfigurationError(file: file, problems: problems)
        }
        var entries: [BearerTokenEntry] = []
        var seenHashes: [[UInt8]: Int] = [:]
        for (index, item) in list.enumerated() {
            let at = "tokens[\(index)]"
            guard let map = item as? [String: Any] else {
                problems.append("\(at): expected a map with principal, tenant and token or sha256")
                continue
            }
            for key in map.keys where !["principal", "tenant", "token", "sha256", "signals"].contains(key) {
                problems.append("\(at).\(key): unknown key; allowed: principal, tenant, token, sha256, signals")
            }
            var signals: Set<AuthSignal>?
            if let value = map["signals"] {
                let names = (value as? [Any])?.compactMap { $0 as? String }
                let parsed = names?.compactMap(AuthSignal.init(rawValue:))
                if let names, let parsed, !parsed.isEmpty, parsed.count == names.count,
                   names.count == (value as? [Any])?.count {
                    signals = Set(parsed)
                } else {
                    problems.append("\(at).signals: a non-empty list of traces, metrics, logs, e.g. signals: [traces, metrics]")
                }
            }
            let principal = Self.string(map["principal"])
            let tenant = Self.string(map["tenant"])
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
            let token = Self.string(map["token"])
            let hash = Self.string(map["sha256"])
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

    private static func string(_ value: Any?) -> String? {
        switch value {
        case let string as String: return string
        case let int as Int: return String(int)
        default: return nil
        }
    }

    private static func isPrincipalCharacter(_ scalar: Unicode.Scalar) -> Bool {
        scalar.isASCII
            && (CharacterSet.alphanumerics.contains(scalar) || "._-@/:".unicodeScalars.contains(scalar))
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

    /// Describes a file or YAML error without quoting the file's contents (which may hold tokens).
    /// The line of the first mapping key that is not a scalar (0 when Yams has no position), or nil.
    static func firstNonScalarKeyLine(_ node: Node) -> Int? {
        switch node {
        case .mapping(let mapping):
            for (key, value) in mapping {
                if key.scalar == nil { return key.mark?.line ?? 0 }
                if let line = firstNonScalarKeyLine(value) { return line }
            }
        case .sequence(let sequence):
            for item in sequence {
                if let line = firstNonScalarKeyLine(item) { return line }
            }
        case .scalar, .alias:
            break
        }
        return nil
    }

    private static func describe(_ error: any Error) -> String {
        if let yaml = error as? YamlError {
            switch yaml {
            case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
                return "syntax error at line \(mark.line), column \(mark.column)"
            default:
                return "syntax error"
            }
        }
        return (error as NSError).localizedDescription
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
