/// Base64url (RFC 4648 §5) as JWS compact serialization uses it: no padding, and only the
/// canonical encoding of each byte string is accepted.
///
/// Canonical matters because the signature covers the encoded text: a decoder that ignores the
/// unused low bits of the last character would let many distinct tokens (and cache keys) decode to
/// the same header and claims. So the unused bits must be zero, which is the same as "re-encoding
/// the decoded bytes gives the input back".
enum Base64URL {
    /// Why a segment did not decode.
    enum Problem: Error, Equatable {
        /// A byte outside the base64/base64url alphabets (not an encoding at all).
        case notBase64
        /// Base64 but not canonical base64url: `+`, `/`, `=` padding, an impossible length, or
        /// non-zero unused bits in the last character.
        case nonCanonical
    }

    /// Strict decode. With `allowPadding`, trailing `=` up to a multiple of four characters is accepted
    /// (used for JWK fields, never for tokens).
    static func decode(_ input: some Collection<UInt8>, allowPadding: Bool = false) -> Result<[UInt8], Problem> {
        var characters = Array(input)
        if allowPadding {
            var padding = 0
            while characters.last == UInt8(ascii: "=") {
                characters.removeLast()
                padding += 1
            }
            if padding > 0 && (padding > 2 || (characters.count + padding) % 4 != 0) { return .failure(.nonCanonical) }
        }
        var output: [UInt8] = []
        output.reserveCapacity(characters.count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        for character in characters {
            guard let value = sextet(character) else {
                return .failure(isStandardBase64(character) ? .nonCanonical : .notBase64)
            }
            accumulator = accumulator << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                output.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
                accumulator &= (1 << UInt32(bits)) - 1
            }
        }
        // 4n+1 characters cannot come from any byte string; leftover bits must be zero.
        if characters.count % 4 == 1 || accumulator != 0 { return .failure(.nonCanonical) }
        return .success(output)
    }

    /// Encodes without padding.
    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        var output: [UInt8] = []
        var accumulator: UInt32 = 0
        var bits = 0
        for byte in bytes {
            accumulator = accumulator << 8 | UInt32(byte)
            bits += 8
            while bits >= 6 {
                bits -= 6
                output.append(alphabet[Int((accumulator >> UInt32(bits)) & 0x3F)])
            }
            accumulator &= (1 << UInt32(bits)) - 1
        }
        if bits > 0 { output.append(alphabet[Int((accumulator << UInt32(6 - bits)) & 0x3F)]) }
        return String(decoding: output, as: UTF8.self)
    }

    private static func sextet(_ character: UInt8) -> UInt8? {
        switch character {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return character - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return character - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return character - UInt8(ascii: "0") + 52
        case UInt8(ascii: "-"): return 62
        case UInt8(ascii: "_"): return 63
        default: return nil
        }
    }

    private static func isStandardBase64(_ character: UInt8) -> Bool {
        character == UInt8(ascii: "+") || character == UInt8(ascii: "/") || character == UInt8(ascii: "=")
    }
}
