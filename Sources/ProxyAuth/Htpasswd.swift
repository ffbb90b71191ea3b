internal import CCrypt
import NIOConcurrencyHelpers
import ProxyTLS
import ProxySystem

/// The users of `auth.basic.htpasswd_file` and their password hashes, verified with the system's
/// libcrypt (libxcrypt). Immutable after loading; reload builds a new file (and so a new cache).
///
/// Only slow, salted formats are accepted: bcrypt (`$2y$`, `$2b$`, `$2a$`) and sha-crypt (`$5$`,
/// `$6$`). Everything weaker or unknown is refused at load with the line number, never the hash.
/// A name the file does not list is checked against a dummy hash of the same kind and cost as the
/// file's first entry, so an unknown user costs the same time as a wrong password.
public struct HtpasswdFile: Sendable {
    /// One accepted line: the user and the full hash string as crypt(3) produces it.
    struct Entry: Sendable {
        var user: String
        var hash: String
        var line: Int
    }

    let entries: [String: Entry]
    /// A hash of a random password with the first entry's algorithm and cost: what an unknown
    /// user's password is checked against.
    let dummyHash: String
    let cache: SuccessCache

    /// The file's users, for tests and diagnostics (never the hashes).
    public var users: [String] { entries.keys.sorted() }

    /// What `check` found; the public API reduces it to a Bool, the authenticator logs the reason.
    enum Outcome: Sendable, Equatable {
        case success
        case unknownUser
        case wrongPassword
    }

    /// How long a successful verification is remembered (monotonic time).
    static let cacheLifetime: Duration = .seconds(300)
    /// The most remembered successes; beyond it, expired ones are purged, then the oldest half dropped.
    static let cacheCapacity = 10_000

    /// Reads and checks an htpasswd file. Every problem is reported at once, naming the line.
    public static func load(file path: String) throws(AuthConfigurationError) -> HtpasswdFile {
        let bytes: [UInt8]
        do {
            bytes = try SystemFile.read(path)
        } catch {
            throw AuthConfigurationError(file: path, problems: ["cannot read the file: \(error.reason)"])
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw AuthConfigurationError(file: path, problems: ["cannot read the file: it is not UTF-8 text"])
        }
        return try parse(text, file: path)
    }

    /// Parses htpasswd text (`user:hash` per line; blank lines and `#` comments are skipped);
    /// `file` only names the source in messages.
    public static func parse(_ text: String, file: String) throws(AuthConfigurationError) -> HtpasswdFile {
        var problems: [String] = []
        var entries: [String: Entry] = [:]
        var first: Entry?
        // "\r\n" is one Character in Swift, so both line ends are named.
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
        for (offset, rawLine) in lines.enumerated() {
            let number = offset + 1
            var line = Substring(rawLine)
            if line.hasSuffix("\r") { line = line.dropLast() }
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":") else {
                problems.append("line \(number): expected `user:hash`; create entries with `htpasswd -B`")
                continue
            }
            let user = String(line[..<colon])
            let hash = String(line[line.index(after: colon)...])
            if user.isEmpty {
                problems.append("line \(number): the user name is empty")
                continue
            }
            if user.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.value < 0x20 || $0.value == 0x7F }) {
                problems.append("line \(number): the user name contains spaces or control characters")
                continue
            }
            if let refusal = Self.formatProblem(hash) {
                problems.append("line \(number) (user \(quoted(user))): \(refusal)")
                continue
            }
            if let earlier = entries[user] {
                problems.append("line \(number): user \(quoted(user)) is already defined on line \(earlier.line); keep one entry per user")
                continue
            }
            let entry = Entry(user: user, hash: hash, line: number)
            entries[user] = entry
            if first == nil { first = entry }
        }
        if problems.isEmpty && entries.isEmpty {
            problems.append("no users: add `user:hash` lines, e.g. with `htpasswd -B -C 10 \(file) alice`")
        }
        guard problems.isEmpty, let first else { throw AuthConfigurationError(file: file, problems: problems) }
        guard let dummy = Crypt.dummyHash(like: first.hash) else {
            throw AuthConfigurationError(
                file: file,
                problems: ["line \(first.line): the system's libcrypt cannot create a hash of the same kind; "
                    + "re-create the entry with `htpasswd -B`"])
        }
        return HtpasswdFile(entries: entries, dummyHash: dummy, cache: SuccessCache())
    }

    /// Whether `password` is the user's password. Slow on purpose (bcrypt / sha-crypt): call it off
    /// the event loop. An unknown user takes the same time as a wrong password.
    public func verify(user: String, password: String) -> Bool {
        check(user: user, password: password, now: .now) == .success
    }

    /// Cheap: whether exactly these credentials verified successfully within the last five minutes.
    public func isCached(user: String, password: String) -> Bool {
        isCached(user: user, password: password, now: .now)
    }

    func isCached(user: String, password: String, now: ContinuousClock.Instant) -> Bool {
        cache.contains(Self.cacheKey(user: user, password: password), now: now)
    }

    /// The full check, with the reason for a failure; records a success in the cache.
    func check(user: String, password: String, now: ContinuousClock.Instant) -> Outcome {
        guard let entry = entries[user] else {
            // Same work as for a known user: hash the password against a hash of the same cost.
            _ = Crypt.matches(password: password, hash: dummyHash)
            return .unknownUser
        }
        guard Crypt.matches(password: password, hash: entry.hash) else { return .wrongPassword }
        cache.insert(Self.cacheKey(user: user, password: password), expiry: now + Self.cacheLifetime)
        return .success
    }

    /// A random salt per process: a cache key seen in a memory dump cannot be checked against
    /// guessed passwords at SHA-256 speed without also finding the salt.
    private static let cacheSalt: [UInt8] = {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }()

    static func cacheKey(user: String, password: String) -> [UInt8] {
        Digest.sha256(cacheSalt + Array(user.utf8) + [UInt8(ascii: ":")] + Array(password.utf8))
    }

    /// Why a hash string is not accepted, or nil when it is bcrypt or sha-crypt in a well-formed shape.
    static func formatProblem(_ hash: String) -> String? {
        let accepted = "accepted formats are bcrypt ($2y$, $2b$, $2a$) and sha-crypt ($5$, $6$); "
            + "re-create the entry with `htpasswd -B` (bcrypt)"
        if hash.isEmpty { return "no password hash; \(accepted)" }
        if hash.hasPrefix("{SHA}") { return "{SHA} (unsalted SHA-1) is refused as too weak; \(accepted)" }
        if hash.hasPrefix("$apr1$") { return "$apr1$ (Apache MD5) is refused as too weak; \(accepted)" }
        if hash.hasPrefix("$1$") { return "$1$ (MD5-crypt) is refused as too weak; \(accepted)" }
        if hash.hasPrefix("$argon2") { return "Argon2 is not supported by the system's libcrypt; \(accepted)" }
        if hash.hasPrefix("$y$") || hash.hasPrefix("$7$") || hash.hasPrefix("$gy$") {
            return "yescrypt/scrypt hashes are not accepted; \(accepted)"
        }
        if hash.count == 13, hash.utf8.allSatisfy(Crypt.isHashCharacter) {
            return "a DES crypt hash is refused as too weak (8-character passwords, 12-bit salt); \(accepted)"
        }
        guard let kind = Crypt.Kind(hash: hash) else {
            if hash.hasPrefix("$") { return "an unknown hash format; \(accepted)" }
            return "looks like a plain-text password, which is refused; \(accepted)"
        }
        if !Crypt.isWellFormed(hash, kind: kind) {
            return "a damaged \(kind.name) hash (wrong length or characters); \(accepted)"
        }
        // Every check, failed ones included, and the unknown-user dummy hash computed at load pay the
        // entry's cost: bound it, so one entry cannot stall start-up or let each request burn seconds.
        if let cost = Crypt.cost(of: hash, kind: kind), cost > kind.maximumCost {
            switch kind {
            case .bcrypt:
                return "bcrypt cost \(cost) is above the maximum of \(kind.maximumCost) (each check would take "
                    + "seconds to hours); re-create the entry with `htpasswd -B -C 10`"
            case .shaCrypt:
                return "sha-crypt rounds=\(cost) is above the maximum of \(kind.maximumCost) (each check would take "
                    + "seconds or more); re-create the entry with fewer rounds, or with `htpasswd -B -C 10`"
            }
        }
        return nil
    }

    private static func quoted(_ user: String) -> String {
        user.count > 64 ? String(user.prefix(64)).debugDescription + "…" : user.debugDescription
    }
}

/// Successful Basic verifications, keyed by a salted SHA-256 of `user:password`, each expiring after
/// `HtpasswdFile.cacheLifetime`. Shared by copies of one `HtpasswdFile`; guarded by a lock because
/// event loops and offloaded hashing use it concurrently.
final class SuccessCache: @unchecked Sendable {
    private let lock = NIOLock()
    private var expiries: [[UInt8]: ContinuousClock.Instant] = [:]

    func contains(_ key: [UInt8], now: ContinuousClock.Instant) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard let expiry = expiries[key] else { return false }
        if expiry > now { return true }
        expiries[key] = nil
        return false
    }

    func insert(_ key: [UInt8], expiry: ContinuousClock.Instant) {
        lock.lock()
        defer { lock.unlock() }
        if expiries.count >= HtpasswdFile.cacheCapacity, expiries[key] == nil {
            let now = expiry - HtpasswdFile.cacheLifetime
            expiries = expiries.filter { $0.value > now }
            if expiries.count >= HtpasswdFile.cacheCapacity {
                // Still full of live entries: drop the half that expires first.
                let keep = expiries.sorted { $0.value > $1.value }.prefix(HtpasswdFile.cacheCapacity / 2)
                expiries = Dictionary(uniqueKeysWithValues: keep.map { ($0.key, $0.value) })
            }
        }
        expiries[key] = expiry
    }

    var count: Int {
        lock.lock()
        defer { lock.unlock() }
        return expiries.count
    }
}

/// The libcrypt calls. `crypt_rn` with a zeroed `struct crypt_data` allocated per call, so concurrent
/// verifications share no state (plain `crypt` uses a static buffer and is not thread safe).
enum Crypt {
    enum Kind: Equatable {
        case bcrypt(prefix: String)
        case shaCrypt(prefix: String)

        init?(hash: String) {
            for prefix in ["$2y$", "$2b$", "$2a$"] where hash.hasPrefix(prefix) {
                self = .bcrypt(prefix: prefix)
                return
            }
            for prefix in ["$5$", "$6$"] where hash.hasPrefix(prefix) {
                self = .shaCrypt(prefix: prefix)
                return
            }
            return nil
        }

        /// The highest accepted cost: bcrypt's log2 rounds (14 is about a second per check), sha-crypt's
        /// rounds (a million is about as long).
        var maximumCost: Int {
            switch self {
            case .bcrypt: return 14
            case .shaCrypt: return 1_000_000
            }
        }

        var name: String {
            switch self {
            case .bcrypt: return "bcrypt"
            case .shaCrypt: return "sha-crypt"
            }
        }
    }

    /// crypt(3)'s alphabet: `./0-9A-Za-z`.
    static func isHashCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "."), UInt8(ascii: "/"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"):
            return true
        default:
            return false
        }
    }

    /// Shape checks, so a truncated or edited hash is a load error rather than a user who can never
    /// log in. bcrypt: `$2y$NN$` + 53 characters; sha-crypt: `$5$[rounds=N$]salt$hash` with a 43
    /// (SHA-256) or 86 (SHA-512) character hash.
    static func isWellFormed(_ hash: String, kind: Kind) -> Bool {
        let bytes = Array(hash.utf8)
        switch kind {
        case .bcrypt:
            guard bytes.count == 60, bytes[6] == UInt8(ascii: "$"),
                  let cost = Int(String(decoding: bytes[4..<6], as: UTF8.self)), (4...31).contains(cost)
            else { return false }
            return bytes[7...].allSatisfy(isHashCharacter)
        case .shaCrypt(let prefix):
            let fields = hash.dropFirst(prefix.count).split(separator: "$", omittingEmptySubsequences: false)
            var rest = fields[...]
            if let first = rest.first, first.hasPrefix("rounds=") {
                guard let rounds = Int(first.dropFirst("rounds=".count)), rounds >= 1000 else { return false }
                rest = rest.dropFirst()
            }
            guard rest.count == 2, let salt = rest.first, let digest = rest.last,
                  (1...16).contains(salt.utf8.count), salt.utf8.allSatisfy({ $0 != UInt8(ascii: ":") && $0 > 0x20 })
            else { return false }
            let length = prefix == "$5$" ? 43 : 86
            return digest.utf8.count == length && digest.utf8.allSatisfy(isHashCharacter)
        }
    }

    /// A well-formed hash's cost: bcrypt's two-digit log2 rounds, sha-crypt's `rounds=` (nil when
    /// absent: the default 5000).
    static func cost(of hash: String, kind: Kind) -> Int? {
        switch kind {
        case .bcrypt:
            return Int(String(decoding: Array(hash.utf8)[4..<6], as: UTF8.self))
        case .shaCrypt(let prefix):
            let afterPrefix = hash.dropFirst(prefix.count)
            guard afterPrefix.hasPrefix("rounds="), let end = afterPrefix.firstIndex(of: "$") else { return nil }
            return Int(afterPrefix[afterPrefix.index(afterPrefix.startIndex, offsetBy: 7)..<end])
        }
    }

    /// Hashes `password` with the setting (salt, algorithm, cost) in `setting`; nil when libcrypt
    /// refuses (e.g. a NUL in the password, an unsupported setting).
    static func hash(password: String, setting: String) -> String? {
        guard !password.utf8.contains(0) else { return nil }
        let data = UnsafeMutablePointer<crypt_data>.allocate(capacity: 1)
        defer { data.deallocate() }
        // crypt_rn requires the `initialized` field (and the rest) zeroed before first use.
        UnsafeMutableRawPointer(data).initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<crypt_data>.size)
        let size = Int32(MemoryLayout<crypt_data>.size)
        guard let output = crypt_rn(password, setting, UnsafeMutableRawPointer(data), size) else { return nil }
        let result = String(cString: output)
        // Scrub the copy of the password libcrypt left in the work area.
        UnsafeMutableRawPointer(data).initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<crypt_data>.size)
        // Failure tokens start with `*`; a real hash starts with the setting's prefix.
        return result.hasPrefix("*") ? nil : result
    }

    /// Constant-time comparison of the recomputed hash with the stored one.
    static func matches(password: String, hash: String) -> Bool {
        guard let computed = Self.hash(password: password, setting: hash) else { return false }
        return ConstantTime.equals(Array(computed.utf8), Array(hash.utf8))
    }

    /// A fresh setting (random salt) for the algorithm and cost of `hash`.
    static func setting(like hash: String) -> String? {
        guard let kind = Kind(hash: hash) else { return nil }
        let prefix: String
        var count: UInt = 0
        switch kind {
        case .bcrypt(let bcryptPrefix):
            prefix = bcryptPrefix
            count = UInt(String(hash.utf8.dropFirst(4).prefix(2))!) ?? 10
        case .shaCrypt(let shaPrefix):
            prefix = shaPrefix
            let afterPrefix = hash.dropFirst(shaPrefix.count)
            if afterPrefix.hasPrefix("rounds="), let end = afterPrefix.firstIndex(of: "$") {
                count = UInt(afterPrefix[afterPrefix.index(afterPrefix.startIndex, offsetBy: 7)..<end]) ?? 0
            }
        }
        var output = [CChar](repeating: 0, count: Int(CRYPT_GENSALT_OUTPUT_SIZE))
        // nil random bytes: libcrypt draws them from the OS.
        guard crypt_gensalt_rn(prefix, count, nil, 0, &output, Int32(output.count)) != nil else { return nil }
        let setting = String(decoding: output.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return setting.hasPrefix("*") ? nil : setting
    }

    /// A hash of a random password with the same algorithm and cost as `hash`.
    static func dummyHash(like hash: String) -> String? {
        guard let setting = setting(like: hash) else { return nil }
        var generator = SystemRandomNumberGenerator()
        let password = String((0..<24).map { _ in Character(Unicode.Scalar(UInt8.random(in: 0x61...0x7A, using: &generator))) })
        return Self.hash(password: password, setting: setting)
    }
}
