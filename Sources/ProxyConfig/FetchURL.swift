/// An absolute `https` (or `http`) URL the proxy fetches keys from: a `jwks_url`, an issuer's OIDC
/// discovery document, or the `jwks_uri` that document names. Parsed strictly, so what is fetched
/// is exactly what the configuration says: scheme, host (a DNS name, an IPv4 address or a bracketed
/// IPv6 address), optional port, then path and query as written (percent-escapes kept, not decoded).
/// Refused: user information (`user:pass@`), a fragment, an empty host or port, a port outside
/// 1...65535, spaces, control and non-ASCII characters, and characters RFC 3986 does not allow.
///
/// Whether plain `http` is acceptable (loopback only) is the configuration's rule, checked there.
public struct FetchURL: Sendable, Hashable, CustomStringConvertible {
    /// `https` or `http`, lowercased.
    public let scheme: String
    /// The host without brackets: `idp.example.com`, `10.0.0.1`, `::1`.
    public let host: String
    /// The port as written, or nil for the scheme's default.
    public let port: Int?
    /// Path and query for the request line; `/` when the URL has no path.
    public let target: String
    /// The URL as written.
    public let text: String

    public var isHTTPS: Bool { scheme == "https" }
    public var effectivePort: Int { port ?? (isHTTPS ? 443 : 80) }

    /// The `Host` header: the host (bracketed when IPv6) and the port when one was written.
    public var hostHeader: String {
        let name = host.contains(":") ? "[\(host)]" : host
        return port.map { "\(name):\($0)" } ?? name
    }

    public var description: String { text }

    /// Why a text is not a URL the proxy fetches from; the message quotes it (without any user
    /// information, which may be a password) and says what to write.
    public struct Problem: Error, Equatable, CustomStringConvertible {
        /// What is wrong, e.g. "no scheme (https://)".
        public var reason: String
        /// The text as it may be shown.
        public var shown: String

        public var description: String {
            "\"\(shown)\" is not a usable URL: \(reason); write e.g. https://idp.example.com/.well-known/jwks.json"
        }
    }

    public init(parsing text: String) throws(Problem) {
        func refuse(_ reason: String, shown: String = text) -> Problem {
            Problem(reason: reason, shown: shown)
        }
        let bytes = Array(text.utf8)
        guard let separator = Self.firstIndex(of: Array("://".utf8), in: bytes) else {
            throw refuse("no scheme (https://)")
        }
        let scheme = String(decoding: bytes[..<separator], as: UTF8.self).lowercased()
        guard scheme == "https" || scheme == "http" else { throw refuse("the scheme must be https") }
        let rest = bytes[(separator + 3)...]
        for byte in rest where byte <= 0x20 || byte >= 0x7F {
            throw refuse("spaces, control and non-ASCII characters must be percent-encoded")
        }
        let authorityEnd = rest.firstIndex { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }
            ?? rest.endIndex
        let authority = rest[rest.startIndex..<authorityEnd]
        if let at = authority.lastIndex(of: UInt8(ascii: "@")) {
            // The user information may be a password: the message shows the URL without it.
            let redacted = String(decoding: bytes[..<authority.startIndex], as: UTF8.self) + "…"
                + String(decoding: bytes[at...], as: UTF8.self)
            throw refuse("user information (user@ or user:password@) is not allowed", shown: redacted)
        }

        var host: String
        var portText: ArraySlice<UInt8>?
        if authority.first == UInt8(ascii: "[") {
            guard let close = authority.firstIndex(of: UInt8(ascii: "]")) else { throw refuse("an IPv6 address without its closing ]") }
            host = String(decoding: authority[(authority.startIndex + 1)..<close], as: UTF8.self)
            // Only a real IPv6 literal passes (no zone id), as for listener addresses.
            guard Endpoint.ipv6Groups(Substring(host)) != nil else {
                throw refuse("[\(host)] is not an IPv6 address")
            }
            let after = authority[(close + 1)...]
            if let first = after.first {
                guard first == UInt8(ascii: ":") else { throw refuse("unexpected characters after ]") }
                portText = after.dropFirst()
            }
        } else {
            let colon = authority.firstIndex(of: UInt8(ascii: ":"))
            host = String(decoding: authority[authority.startIndex..<(colon ?? authority.endIndex)], as: UTF8.self)
            if let colon { portText = authority[(colon + 1)...] }
            guard !host.isEmpty else { throw refuse("no host") }
            let allowed = host.utf8.allSatisfy { byte in
                (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                    || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                    || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_")
            }
            guard allowed else { throw refuse("the host may hold only letters, digits, '-', '.' and '_'") }
        }
        var port: Int?
        if let portText {
            guard !portText.isEmpty, portText.count <= 5,
                  portText.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                  let number = Int(String(decoding: portText, as: UTF8.self)), (1...65535).contains(number)
            else {
                throw refuse("the port must be a number from 1 to 65535")
            }
            port = number
        }

        let target = rest[authorityEnd...]
        if target.contains(UInt8(ascii: "#")) { throw refuse("a fragment (#...) has no meaning here") }
        var index = target.startIndex
        while index < target.endIndex {
            let byte = target[index]
            if byte == UInt8(ascii: "%") {
                guard index + 2 < target.endIndex,
                      Self.isHex(target[index + 1]), Self.isHex(target[index + 2])
                else {
                    throw refuse("'%' must start a percent-escape such as %2F")
                }
                index += 3
                continue
            }
            guard Self.isAllowedInPathOrQuery(byte) else {
                throw refuse("'\(Character(Unicode.Scalar(byte)))' must be percent-encoded")
            }
            index += 1
        }
        var targetText = String(decoding: target, as: UTF8.self)
        if targetText.isEmpty || targetText.first == "?" { targetText = "/" + targetText }

        self.scheme = scheme
        self.host = host
        self.port = port
        self.target = targetText
        self.text = text
    }

    /// RFC 3986 pchar, '/' and '?' (query), other than percent-escapes: unreserved and sub-delims, ':' and '@'.
    private static func isAllowedInPathOrQuery(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return Array("-._~!$&'()*+,;=:@/?".utf8).contains(byte)
        }
    }

    private static func isHex(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"), UInt8(ascii: "A")...UInt8(ascii: "F"):
            return true
        default:
            return false
        }
    }

    private static func firstIndex(of needle: [UInt8], in bytes: [UInt8]) -> Int? {
        guard bytes.count >= needle.count else { return nil }
        for start in 0...(bytes.count - needle.count) where Array(bytes[start..<(start + needle.count)]) == needle {
            return start
        }
        return nil
    }
}
