import NIOCore
import NIOHTTP1

/// Writes the responses of one HTTP/1.1 client connection straight into bytes: the status line and
/// fields of a head, then its body in the framing the head chose.
///
/// The framing follows RFC 9112 §6 for what the exchange hands over (it has already dropped the
/// receiver's hop-by-hop fields, Transfer-Encoding included): no body for 1xx, 204 and 304 (any
/// Content-Length dropped); a Content-Length is kept and used; otherwise HTTP/1.1 clients get
/// `transfer-encoding: chunked`, and HTTP/1.0 clients a body that only the close of the connection
/// ends (`closesToEnd`, which the front honours). A response to HEAD keeps its fields but sends no
/// body. A pure value, one per connection; one response at a time.
struct HTTP1ResponseEncoder {
    private enum Framing {
        case length
        case chunked
        /// Neither a length nor chunked: the body ends with the connection.
        case untilClose
        /// No body may follow (1xx, 204, 304, or a response to HEAD).
        case none
    }

    private var framing = Framing.none

    /// The response just written has no length: the connection must close after it.
    var closesToEnd: Bool {
        if case .untilClose = framing { return true }
        return false
    }

    /// Appends `head`'s status line and fields; `requestMethod` is the method of the request it answers.
    mutating func writeHead(_ head: HTTPResponseHead, requestMethod: HTTPMethod, into out: inout ByteBuffer) {
        let code = Int(head.status.code)
        let informational = code >= 100 && code < 200 && code != 101
        let mayHaveBody = !(code >= 100 && code < 200) && code != 204 && code != 304
        let isHTTP11 = head.version.major == 1 && head.version.minor >= 1

        // Measured first, then written straight into `out` in one reservation (`ByteCursor.field`).
        let reason = head.status.reasonPhrase
        let statusText = code >= 100 && code <= 999 ? nil : String(code)
        var length = 9 + (statusText?.utf8.count ?? 3) + 1 + reason.utf8.count + 2 + 2
        var hasLength = false
        for (name, value) in head.headers {
            switch HTTP1RequestEncoder.framingField(name) {
            case .contentLength:
                guard mayHaveBody else { continue }
                hasLength = true
            case .transferEncoding:
                // The framing is this encoder's: a coding named by anyone else never goes out.
                continue
            case .other:
                break
            }
            length += ByteCursor.fieldLength(name, value)
        }
        if !mayHaveBody {
            framing = .none
        } else if hasLength {
            framing = .length
        } else if isHTTP11 {
            framing = .chunked
        } else {
            framing = .untilClose
        }
        let chunked: Bool
        if case .chunked = framing { chunked = true } else { chunked = false }
        if chunked { length += HTTP1RequestEncoder.chunkedField.utf8CodeUnitCount }
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { raw in
            var writer = ByteCursor(base: raw.baseAddress!)
            writer.static(isHTTP11 ? "HTTP/1.1 " : "HTTP/1.0 ")
            if let statusText {
                writer.string(statusText)
            } else {
                writer.byte(UInt8(ascii: "0") + UInt8(code / 100))
                writer.byte(UInt8(ascii: "0") + UInt8(code / 10 % 10))
                writer.byte(UInt8(ascii: "0") + UInt8(code % 10))
            }
            writer.byte(UInt8(ascii: " "))
            writer.string(reason)
            writer.static("\r\n")
            for (name, value) in head.headers {
                switch HTTP1RequestEncoder.framingField(name) {
                case .contentLength where !mayHaveBody, .transferEncoding: continue
                default: writer.field(name, value)
                }
            }
            if chunked { writer.static(HTTP1RequestEncoder.chunkedField) }
            writer.static("\r\n")
            return writer.count
        }
        // A HEAD response says what a GET would have had, without the body.
        if !informational && requestMethod == .HEAD { framing = .none }
    }

    /// Body bytes go out as they are (a length, or until the close), so a large buffer can be written
    /// without a copy; otherwise `writeBody` frames them.
    var passesBodyThrough: Bool {
        switch framing {
        case .length, .untilClose: return true
        case .chunked, .none: return false
        }
    }

    /// Appends body bytes of the current response, framed.
    func writeBody(_ data: ByteBuffer, into out: inout ByteBuffer) {
        guard data.readableBytes > 0 else { return }
        switch framing {
        case .none:
            return
        case .length, .untilClose:
            out.writeImmutableBuffer(data)
        case .chunked:
            Self.writeHex(data.readableBytes, into: &out)
            out.writeStaticString("\r\n")
            out.writeImmutableBuffer(data)
            out.writeStaticString("\r\n")
        }
    }

    /// Appends the end of the current response (the last chunk when chunked).
    mutating func writeEnd(into out: inout ByteBuffer) {
        if case .chunked = framing { out.writeStaticString("0\r\n\r\n") }
        framing = .none
    }

    static func writeHex(_ value: Int, into out: inout ByteBuffer) {
        var shift = (Int.bitWidth - value.leadingZeroBitCount + 3) / 4 * 4 - 4
        if shift < 0 { shift = 0 }
        while shift >= 0 {
            let digit = UInt8((value >> shift) & 0xF)
            out.writeInteger(digit < 10 ? UInt8(ascii: "0") + digit : UInt8(ascii: "a") + digit - 10)
            shift -= 4
        }
    }
}
