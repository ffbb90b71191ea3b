/// The parsed form of one `Authorization` header value: `<scheme> <credentials>`.
///
/// The scheme compares case-insensitively (RFC 9110 §11.1); the credentials must be a token68 with no
/// surrounding or inner whitespace, so `Bearer  a b` or a trailing tab never reach a lookup.
public struct AuthorizationHeader: Sendable, Equatable {
    public enum Scheme: Sendable, Equatable {
        case bearer
        case basic
        case other
    }

    public var scheme: Scheme
    /// The credential bytes exactly as sent (a token68). Never log them.
    public var credentials: ArraySlice<UInt8>

    /// Parses one header value; nil when it is not `<scheme> SP <token68>`.
    public init?(_ value: some StringProtocol) {
        let bytes = Array(value.utf8)
        guard let space = bytes.firstIndex(of: UInt8(ascii: " ")), space > 0 else { return nil }
        let schemeBytes = bytes[..<space]
        guard schemeBytes.allSatisfy(Self.isTchar) else { return nil }
        let credentials = bytes[(space + 1)...]
        guard !credentials.isEmpty, Self.isToken68(credentials) else { return nil }
        switch String(decoding: schemeBytes, as: UTF8.self).lowercased() {
        case "bearer": self.scheme = .bearer
        case "basic": self.scheme = .basic
        default: self.scheme = .other
        }
        self.credentials = credentials
    }

    /// token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    static func isToken68(_ bytes: ArraySlice<UInt8>) -> Bool {
        var seenPadding = false
        for byte in bytes {
            if byte == UInt8(ascii: "=") {
                seenPadding = true
                continue
            }
            if seenPadding { return false }
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"),
                UInt8(ascii: "+"), UInt8(ascii: "/"):
                continue
            default:
                return false
            }
        }
        return bytes.first != UInt8(ascii: "=")
    }

    /// RFC 9110 tchar.
    static func isTchar(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return Array("!#$%&'*+-.^_`|~".utf8).contains(byte)
        }
    }
}
