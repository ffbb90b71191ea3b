/// The user and password of one `Authorization: Basic` value (RFC 7617). Never log the password.
public struct BasicCredentials: Sendable, Equatable {
    public var user: String
    public var password: String

    public init(user: String, password: String) {
        self.user = user
        self.password = password
    }

    /// Decodes the token68 after `Basic `: standard base64 alphabet with the padding required, the
    /// bytes valid UTF-8, split at the first `:` (a password may contain `:`, a user name may not).
    /// nil when any of that fails or the user name is empty.
    public init?(token68 bytes: some Collection<UInt8>) {
        guard let decoded = Self.decodeBase64(Array(bytes)),
              let text = String(validating: decoded, as: UTF8.self),
              let colon = text.firstIndex(of: ":")
        else { return nil }
        let user = String(text[..<colon])
        guard !user.isEmpty else { return nil }
        // Control characters have no place in either part; NUL would also truncate at libcrypt.
        guard !text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else { return nil }
        self.user = user
        self.password = String(text[text.index(after: colon)...])
    }

    /// Strict RFC 4648 §4 base64: length a multiple of 4, at most two `=` at the end, and the unused
    /// bits of the last symbol zero (so each value has exactly one encoding).
    static func decodeBase64(_ input: [UInt8]) -> [UInt8]? {
        guard !input.isEmpty, input.count % 4 == 0 else { return nil }
        var padding = 0
        if input[input.count - 1] == UInt8(ascii: "=") { padding += 1 }
        if input[input.count - 2] == UInt8(ascii: "=") { padding += 1 }
        var output: [UInt8] = []
        output.reserveCapacity(input.count / 4 * 3)
        var index = 0
        while index < input.count {
            var quad: UInt32 = 0
            for offset in 0..<4 {
                let byte = input[index + offset]
                let isPadding = index + 4 == input.count && offset >= 4 - padding
                let value: UInt32
                if isPadding {
                    guard byte == UInt8(ascii: "=") else { return nil }
                    value = 0
                } else {
                    guard let decoded = sextet(byte) else { return nil }
                    value = UInt32(decoded)
                }
                quad = quad << 6 | value
            }
            let bytes = [UInt8(quad >> 16 & 0xFF), UInt8(quad >> 8 & 0xFF), UInt8(quad & 0xFF)]
            if index + 4 == input.count {
                // Non-zero bits under the padding would mean a second spelling of the same bytes.
                if padding == 1 && bytes[2] != 0 { return nil }
                if padding == 2 && (bytes[1] != 0 || bytes[2] != 0) { return nil }
                output += bytes.prefix(3 - padding)
            } else {
                output += bytes
            }
            index += 4
        }
        return output
    }

    private static func sextet(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return byte - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return byte - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): return 62
        case UInt8(ascii: "/"): return 63
        default: return nil
        }
    }
}
