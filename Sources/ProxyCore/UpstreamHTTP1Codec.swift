import NIOCore
import NIOHTTP1

/// Why an upstream HTTP/1.1 message could not be written or read. Either way the connection is closed:
/// the exchange using it sees `upstreamClosed` (503 before a response started, a closed client
/// connection after).
enum UpstreamHTTP1CodecError: Error, Equatable {
    /// A request field, method or target that cannot go on the wire as-is (CR, LF, NUL, a bad token).
    case invalidRequestField
    case headTooLarge
    case malformedStatusLine
    case malformedField
    /// Both Content-Length and Transfer-Encoding, more than one Content-Length, a coding other than
    /// `chunked`, or a Content-Length that is not a number.
    case ambiguousFraming
    /// `101 Switching Protocols`: the proxy never asks for an upgrade.
    case unexpectedUpgrade
    case malformedChunk
}

/// Serialises the requests the proxy sends to the receiver: the head straight into one buffer (the
/// caller appends small bodies to it), then the body as sent (`Content-Length`) or chunked.
///
/// Emits only unambiguous HTTP/1.1 (DESIGN.md, HTTP/1.1 defences): the version is always 1.1; a head
/// without `Content-Length` gets `Transfer-Encoding: chunked` (a client-sent Transfer-Encoding never
/// reaches here, the header policy drops it); every field name must be a token, no value may hold a
/// control character other than HTAB, and the target only the bytes RFC 9112 allows — the checks NIO's
/// `NIOHTTPRequestHeadersValidator` made.
struct HTTP1RequestWriter {
    /// The body of the request being written goes out in chunks.
    private(set) var chunked = false

    /// Writes the request line and header section; false (nothing usable written) when a part cannot
    /// be sent as-is.
    mutating func writeHead(_ head: HTTPRequestHead, into out: inout ByteBuffer) -> Bool {
        let method = head.method.rawValue
        guard !method.isEmpty, method.utf8.allSatisfy(Self.isTokenByte), !head.uri.isEmpty,
            head.uri.utf8.allSatisfy(Self.isTargetByte)
        else { return false }
        out.writeString(method)
        out.writeInteger(UInt8(ascii: " "))
        out.writeString(head.uri)
        out.writeStaticString(" HTTP/1.1\r\n")
        var hasLength = false
        for (name, value) in head.headers {
            guard !name.isEmpty, name.utf8.allSatisfy(Self.isTokenByte), value.utf8.allSatisfy(Self.isValueByte)
            else { return false }
            if Self.equalsLowercased(name, "content-length") {
                hasLength = true
            } else if Self.equalsLowercased(name, "transfer-encoding") {
                // Framing is this writer's to decide: an inherited coding is never passed on.
                continue
            }
            out.writeString(name)
            out.writeStaticString(": ")
            out.writeString(value)
            out.writeStaticString("\r\n")
        }
        chunked = !hasLength
        if chunked { out.writeStaticString("transfer-encoding: chunked\r\n") }
        out.writeStaticString("\r\n")
        return true
    }

    /// What goes before a body piece of `length` bytes (a chunk-size line when chunked).
    func writeBodyPrefix(length: Int, into out: inout ByteBuffer) {
        guard chunked else { return }
        out.writeString(String(length, radix: 16))
        out.writeStaticString("\r\n")
    }

    /// What goes after a body piece (the chunk's CRLF when chunked).
    func writeBodySuffix(into out: inout ByteBuffer) {
        guard chunked else { return }
        out.writeStaticString("\r\n")
    }

    /// What ends the body (the last chunk when chunked; trailers are never sent).
    mutating func writeEnd(into out: inout ByteBuffer) {
        if chunked { out.writeStaticString("0\r\n\r\n") }
        chunked = false
    }

    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"),
            UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"),
            UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"),
            UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// Field-value bytes: no control characters but HTAB (CR, LF and NUL above all).
    static func isValueByte(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: "\t") || (byte >= 0x20 && byte != 0x7F)
    }

    /// The bytes RFC 9112 allows literally in a request target (unreserved, gen- and sub-delims, `%`).
    static func isTargetByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
            UInt8(ascii: "~"), UInt8(ascii: ":"), UInt8(ascii: "/"), UInt8(ascii: "?"), UInt8(ascii: "#"),
            UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "@"), UInt8(ascii: "!"), UInt8(ascii: "$"),
            UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "*"),
            UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="), UInt8(ascii: "%"):
            return true
        default:
            return false
        }
    }

    /// ASCII case-insensitive equality with a lower-case constant, without allocating.
    static func equalsLowercased(_ text: String, _ lower: String) -> Bool {
        guard text.utf8.count == lower.utf8.count else { return false }
        for (byte, expected) in zip(text.utf8, lower.utf8) {
            let folded = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
            guard folded == expected else { return false }
        }
        return true
    }
}

/// Reads the receiver's responses: status line, fields, then a body framed by Content-Length,
/// chunked coding, or the end of the connection; 1xx responses are read and dropped. A pure value:
/// the connection handler feeds it bytes and acts on the parts it returns, one at a time, so it can
/// look at what is left after a response ends before handing that end on.
///
/// Strict where a lenient reading could let two parsers disagree on where a response ends: CRLF line
/// ends only (no bare CR or LF), no obs-fold, no whitespace before a colon, field names must be tokens,
/// one Content-Length of digits only and never with Transfer-Encoding, and `chunked` the only coding.
/// Any of those is an error, after which the connection must be closed.
struct HTTP1ResponseParser {
    /// What the parser hands on: NIO's response part type, which the exchanges already take.
    typealias Part = HTTPClientResponsePart

    private enum State: Equatable {
        case head
        case fixedBody(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        case untilClose
        /// The body is complete; the end is handed on by the next call.
        case endPending
    }

    /// The most a status line with its fields (or the trailer section) may take.
    let maxHeadBytes: Int
    private var state: State = .head
    /// How far the current head or line has been searched for its end, so a head arriving in small
    /// reads is not rescanned from its start each time.
    private var scanned = 0

    init(maxHeadBytes: Int = 80 * 1024) {
        self.maxHeadBytes = maxHeadBytes
    }

    /// The body runs until the receiver closes the connection.
    var readsUntilClose: Bool { state == .untilClose }

    /// The next part from `buffer` (consuming its bytes), or nil when more bytes are needed.
    mutating func next(_ buffer: inout ByteBuffer) throws(UpstreamHTTP1CodecError) -> Part? {
        while true {
            switch state {
            case .head:
                guard let head = try readHead(&buffer) else { return nil }
                if head.status.code < 200 {
                    if head.status.code == 101 { throw .unexpectedUpgrade }
                    continue
                }
                return .head(head)
            case .fixedBody(let remaining):
                guard buffer.readableBytes > 0 else { return nil }
                let length = min(remaining, buffer.readableBytes)
                let slice = buffer.readSlice(length: length)!
                state = remaining == length ? .endPending : .fixedBody(remaining: remaining - length)
                return .body(slice)
            case .chunkSize:
                guard let line = try readLine(&buffer, limit: 4096) else { return nil }
                let size = try Self.chunkSize(line)
                state = size == 0 ? .trailers : .chunkData(remaining: size)
            case .chunkData(let remaining):
                guard buffer.readableBytes > 0 else { return nil }
                let length = min(remaining, buffer.readableBytes)
                let slice = buffer.readSlice(length: length)!
                state = remaining == length ? .chunkDataEnd : .chunkData(remaining: remaining - length)
                return .body(slice)
            case .chunkDataEnd:
                guard buffer.readableBytes >= 2 else { return nil }
                guard buffer.readInteger(as: UInt16.self) == 0x0D0A else { throw .malformedChunk }
                state = .chunkSize
            case .trailers:
                guard let section = try readSection(&buffer) else { return nil }
                var trailers = HTTPHeaders()
                try Self.parseFields(section, from: 0, into: &trailers)
                state = .head
                return .end(trailers.isEmpty ? nil : trailers)
            case .untilClose:
                guard buffer.readableBytes > 0 else { return nil }
                return .body(buffer.readSlice(length: buffer.readableBytes)!)
            case .endPending:
                state = .head
                return .end(nil)
            }
        }
    }

    /// The connection ended: the end of a body that runs until close, nil otherwise (a response cut
    /// short is the caller's to report).
    mutating func endOfInput() -> Part? {
        guard state == .untilClose else { return nil }
        state = .head
        return .end(nil)
    }

    // MARK: Head

    private mutating func readHead(_ buffer: inout ByteBuffer) throws(UpstreamHTTP1CodecError) -> HTTPResponseHead? {
        guard let section = try readSection(&buffer) else { return nil }
        // Status line: HTTP/1.x SP 3DIGIT [SP reason-phrase]
        let view = section.readableBytesView
        guard let lineEnd = view.firstIndex(of: UInt8(ascii: "\r")) else { throw .malformedStatusLine }
        let lineLength = lineEnd - view.startIndex
        guard lineLength >= 12, let prefix = section.getString(at: section.readerIndex, length: 7), prefix == "HTTP/1.",
            let minorByte = section.getInteger(at: section.readerIndex + 7, as: UInt8.self),
            minorByte == UInt8(ascii: "0") || minorByte == UInt8(ascii: "1"),
            section.getInteger(at: section.readerIndex + 8, as: UInt8.self) == UInt8(ascii: " ")
        else { throw .malformedStatusLine }
        var code = 0
        for offset in 9..<12 {
            let digit = section.getInteger(at: section.readerIndex + offset, as: UInt8.self)!
            guard digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") else { throw .malformedStatusLine }
            code = code * 10 + Int(digit - UInt8(ascii: "0"))
        }
        guard code >= 100 else { throw .malformedStatusLine }
        var reason = ""
        if lineLength > 12 {
            guard section.getInteger(at: section.readerIndex + 12, as: UInt8.self) == UInt8(ascii: " ") else {
                throw .malformedStatusLine
            }
            for index in (view.startIndex + 13)..<lineEnd {
                guard HTTP1RequestWriter.isValueByte(view[index]) else { throw .malformedStatusLine }
            }
            reason = section.getString(at: section.readerIndex + 13, length: lineLength - 13) ?? ""
        }
        var headers = HTTPHeaders()
        try Self.parseFields(section, from: lineLength + 2, into: &headers)
        let version = HTTPVersion(major: 1, minor: minorByte == UInt8(ascii: "1") ? 1 : 0)
        let status = HTTPResponseStatus(statusCode: code, reasonPhrase: reason)
        if code >= 200 { state = try Self.bodyState(status: code, headers: headers) }
        return HTTPResponseHead(version: version, status: status, headers: headers)
    }

    /// How the body after a final response head is framed (RFC 9112 §6.3 for a response to a POST).
    private static func bodyState(status: Int, headers: HTTPHeaders) throws(UpstreamHTTP1CodecError) -> State {
        var lengths = 0
        var length: Int?
        var codings = 0
        var chunked = false
        for (name, value) in headers {
            if HTTP1RequestWriter.equalsLowercased(name, "content-length") {
                lengths += 1
                length = Self.decimal(value)
            } else if HTTP1RequestWriter.equalsLowercased(name, "transfer-encoding") {
                codings += 1
                chunked = HTTP1RequestWriter.equalsLowercased(value, "chunked")
            }
        }
        if status == 204 || status == 304 {
            guard codings == 0 else { throw .ambiguousFraming }
            return .endPending
        }
        if codings > 0 {
            guard lengths == 0, codings == 1, chunked else { throw .ambiguousFraming }
            return .chunkSize
        }
        if lengths == 0 { return .untilClose }
        guard lengths == 1, let length else { throw .ambiguousFraming }
        return length == 0 ? .endPending : .fixedBody(remaining: length)
    }

    /// The bytes up to and including the first empty line (CRLF CRLF, or a lone CRLF at the start),
    /// consumed from `buffer`; nil while it has not all arrived.
    private mutating func readSection(_ buffer: inout ByteBuffer) throws(UpstreamHTTP1CodecError) -> ByteBuffer? {
        let view = buffer.readableBytesView
        var index = view.startIndex + max(scanned - 3, 0)
        let end = view.endIndex
        while index < end {
            if view[index] == UInt8(ascii: "\n") {
                let offset = index - view.startIndex
                // A lone CRLF (an empty trailer section) or CRLF CRLF.
                let emptyLine =
                    offset >= 1 && view[index - 1] == UInt8(ascii: "\r")
                    && (offset == 1
                        || (offset >= 3 && view[index - 2] == UInt8(ascii: "\n") && view[index - 3] == UInt8(ascii: "\r")))
                if emptyLine {
                    scanned = 0
                    guard offset + 1 <= maxHeadBytes else { throw .headTooLarge }
                    return buffer.readSlice(length: offset + 1)
                }
            }
            index += 1
        }
        scanned = view.count
        if scanned > maxHeadBytes { throw .headTooLarge }
        return nil
    }

    /// One CRLF-terminated line without its CRLF, consumed from `buffer`; nil while it has not all arrived.
    private mutating func readLine(_ buffer: inout ByteBuffer, limit: Int) throws(UpstreamHTTP1CodecError) -> ByteBuffer? {
        let view = buffer.readableBytesView
        guard let lf = view[(view.startIndex + max(scanned - 1, 0))...].firstIndex(of: UInt8(ascii: "\n")) else {
            scanned = view.count
            if scanned > limit { throw .malformedChunk }
            return nil
        }
        scanned = 0
        let length = lf - view.startIndex
        guard length >= 1, view[lf - 1] == UInt8(ascii: "\r"), length + 1 <= limit else { throw .malformedChunk }
        let line = buffer.readSlice(length: length - 1)!
        buffer.moveReaderIndex(forwardBy: 2)
        return line
    }

    /// Fields from `offset` in a section that ends with CRLF CRLF: `name: value` lines, each ending CRLF.
    private static func parseFields(_ section: ByteBuffer, from offset: Int, into headers: inout HTTPHeaders)
        throws(UpstreamHTTP1CodecError)
    {
        let view = section.readableBytesView
        var lineStart = view.startIndex + offset
        let sectionEnd = view.endIndex - 2  // the empty line's CRLF
        while lineStart < sectionEnd {
            var colon: Int?
            var index = lineStart
            // The name: token bytes up to the colon (no whitespace before it, no obs-fold).
            while index < sectionEnd {
                let byte = view[index]
                if byte == UInt8(ascii: ":") {
                    colon = index
                    break
                }
                guard HTTP1RequestWriter.isTokenByte(byte) else { throw .malformedField }
                index += 1
            }
            guard let colon, colon > lineStart else { throw .malformedField }
            // The value: up to CR, which must be followed by LF; no other control bytes.
            index = colon + 1
            while index < sectionEnd, view[index] != UInt8(ascii: "\r") {
                guard HTTP1RequestWriter.isValueByte(view[index]) else { throw .malformedField }
                index += 1
            }
            guard index < sectionEnd, view[index + 1] == UInt8(ascii: "\n") else { throw .malformedField }
            var valueStart = colon + 1
            var valueEnd = index
            while valueStart < valueEnd, view[valueStart] == UInt8(ascii: " ") || view[valueStart] == UInt8(ascii: "\t") {
                valueStart += 1
            }
            while valueEnd > valueStart, view[valueEnd - 1] == UInt8(ascii: " ") || view[valueEnd - 1] == UInt8(ascii: "\t") {
                valueEnd -= 1
            }
            let base = section.readerIndex - view.startIndex
            let name = section.getString(at: base + lineStart, length: colon - lineStart)!
            let value = section.getString(at: base + valueStart, length: valueEnd - valueStart)!
            headers.add(name: name, value: value)
            lineStart = index + 2
        }
    }

    /// A chunk-size line: hex digits, then nothing or `;` extensions (bounded by the line limit).
    private static func chunkSize(_ line: ByteBuffer) throws(UpstreamHTTP1CodecError) -> Int {
        var size = 0
        var digits = 0
        for byte in line.readableBytesView {
            let value: Int
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = Int(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = Int(byte - UInt8(ascii: "a")) + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): value = Int(byte - UInt8(ascii: "A")) + 10
            case UInt8(ascii: ";"):
                // Extensions are skipped, but may hold no control bytes (a bare CR above all).
                guard digits > 0,
                    line.readableBytesView.allSatisfy({ HTTP1RequestWriter.isValueByte($0) })
                else { throw .malformedChunk }
                return size
            default: throw .malformedChunk
            }
            digits += 1
            guard digits <= 15 else { throw .malformedChunk }
            size = size * 16 + value
        }
        guard digits > 0 else { throw .malformedChunk }
        return size
    }

    /// A Content-Length value: 1 to 18 digits, nothing else.
    static func decimal(_ text: String) -> Int? {
        let utf8 = text.utf8
        guard !utf8.isEmpty, utf8.count <= 18 else { return nil }
        var value = 0
        for byte in utf8 {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return value
    }
}
