import NIOCore
import NIOHTTP1

/// Writes the requests of one upstream HTTP/1.1 connection straight into bytes: the request line and
/// fields of a head, then its body in the framing the head chose.
///
/// A head with a Content-Length is framed by it (any Transfer-Encoding field dropped); a head without
/// one gets `transfer-encoding: chunked`, so the receiver always reads exactly one framing. Before a
/// byte is written the head is checked as the receiver will read it: the target only in RFC 3986's
/// characters, token field names, no control character but tab in a value. The exchange builds heads
/// from fields the client's parser (or nghttp2) already checked, so a refusal here means a bug or a
/// field the configuration added; the connection is then not used. A pure value, one per connection;
/// one request at a time.
struct HTTP1RequestEncoder {
    private var chunked = false

    /// Appends `head`'s request line and fields; false (and nothing appended) when the head cannot be
    /// written unambiguously.
    mutating func writeHead(_ head: HTTPRequestHead, into out: inout ByteBuffer) -> Bool {
        guard Self.isValidTarget(head.uri) else { return false }
        // Every field is checked and measured first, then the head is written straight into `out` in
        // one reservation (see `ByteCursor.field`); nothing reaches `out` unless all of them pass.
        var length = head.method.rawValue.utf8.count + 1 + head.uri.utf8.count + 11 + 2
        var hasLength = false
        for (name, value) in head.headers {
            guard Self.isValidName(name), Self.isValidValue(value) else { return false }
            switch Self.framingField(name) {
            case .contentLength: hasLength = true
            case .transferEncoding: continue
            case .other: break
            }
            length += ByteCursor.fieldLength(name, value)
        }
        chunked = !hasLength
        if chunked { length += Self.chunkedField.utf8CodeUnitCount }
        let chunked = chunked
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { raw in
            var writer = ByteCursor(base: raw.baseAddress!)
            writer.string(head.method.rawValue)
            writer.byte(UInt8(ascii: " "))
            writer.string(head.uri)
            writer.static(head.version.minor == 0 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n")
            for (name, value) in head.headers where Self.framingField(name) != .transferEncoding {
                writer.field(name, value)
            }
            if chunked { writer.static(Self.chunkedField) }
            writer.static("\r\n")
            return writer.count
        }
        return true
    }

    static let chunkedField: StaticString = "transfer-encoding: chunked\r\n"

    enum FramingField { case contentLength, transferEncoding, other }

    /// Whether a field name (any case) is one of the two that frame a body.
    @inline(__always)
    static func framingField(_ name: String) -> FramingField {
        switch name.utf8.count {
        case 14 where RequestHeadFacts.equalsLowercased(name, "content-length"): return .contentLength
        case 17 where RequestHeadFacts.equalsLowercased(name, "transfer-encoding"): return .transferEncoding
        default: return .other
        }
    }

    /// Body bytes go out as they are (the head has a Content-Length), so a large buffer can be written
    /// without a copy; otherwise `writeBody` frames them.
    var passesBodyThrough: Bool { !chunked }

    /// Appends body bytes of the current request, framed.
    func writeBody(_ data: ByteBuffer, into out: inout ByteBuffer) {
        guard data.readableBytes > 0 else { return }
        if chunked {
            HTTP1ResponseEncoder.writeHex(data.readableBytes, into: &out)
            out.writeStaticString("\r\n")
            out.writeImmutableBuffer(data)
            out.writeStaticString("\r\n")
        } else {
            out.writeImmutableBuffer(data)
        }
    }

    /// Appends the end of the current request (the last chunk when chunked).
    mutating func writeEnd(into out: inout ByteBuffer) {
        if chunked { out.writeStaticString("0\r\n\r\n") }
        chunked = false
    }

    // The checks read the strings' UTF-8 spans: iterating a `String.UTF8View` costs several times more.

    /// RFC 3986's characters for an origin-form target: unreserved, gen-delims, sub-delims and `%`.
    static func isValidTarget(_ target: String) -> Bool {
        let bytes = target.utf8.span
        guard !bytes.isEmpty else { return false }
        for index in bytes.indices {
            switch bytes[index] {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                    UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"),
                    UInt8(ascii: ":"), UInt8(ascii: "/"), UInt8(ascii: "?"), UInt8(ascii: "#"), UInt8(ascii: "["), UInt8(ascii: "]"),
                    UInt8(ascii: "@"), UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("),
                    UInt8(ascii: ")"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="),
                    UInt8(ascii: "%"):
                continue
            default:
                return false
            }
        }
        return true
    }

    static func isValidName(_ name: String) -> Bool {
        let bytes = name.utf8.span
        guard !bytes.isEmpty else { return false }
        for index in bytes.indices where !HTTP1MessageDecoder.isTokenByte(bytes[index]) { return false }
        return true
    }

    /// Tab, space, visible characters and obs-text; no other control character, no DEL.
    static func isValidValue(_ value: String) -> Bool {
        let bytes = value.utf8.span
        for index in bytes.indices {
            let byte = bytes[index]
            if byte < 0x20 ? byte != UInt8(ascii: "\t") : byte == 0x7F { return false }
        }
        return true
    }
}


/// How both HTTP/1.1 encoders write a head: with the access log's cursor, into memory reserved for
/// exactly as many bytes (`fieldLength` and the callers' counts), so there is one capacity check for the
/// whole head instead of one per piece, and strings are copied from their UTF-8 storage.
extension ByteCursor {
    /// The bytes `name: value` and CRLF take.
    @inline(__always)
    static func fieldLength(_ name: String, _ value: String) -> Int { name.utf8.count + value.utf8.count + 4 }

    @inline(__always)
    mutating func field(_ name: String, _ value: String) {
        string(name)
        byte(UInt8(ascii: ":"))
        byte(UInt8(ascii: " "))
        string(value)
        byte(UInt8(ascii: "\r"))
        byte(UInt8(ascii: "\n"))
    }

    @inline(__always)
    mutating func string(_ text: String) {
        var text = text
        text.withUTF8 { bytes in
            guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
            (base + count).copyMemory(from: source, byteCount: bytes.count)
            count += bytes.count
        }
    }
}
