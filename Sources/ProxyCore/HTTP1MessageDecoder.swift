import NIOCore
import NIOHTTP1

/// The proxy's HTTP/1.1 parser: request heads and their bodies (Content-Length or chunked) from the
/// bytes of one client connection, strictly; or, for the upstream connections, the receiver's
/// responses the same way (`kind`).
///
/// A pure value: the HTTP/1.1 front (`HTTP1ExchangeHandler`) and the upstream connection
/// (`UpstreamHTTP1Connection`) append what they read with `feed` and pull events with `next`, one at
/// a time, so the front can stop between requests (pipelining) and leave the rest of the bytes here,
/// unparsed. Nothing is copied per header but its name and value strings, made once the whole head
/// has been checked; body events are slices of the bytes read.
///
/// What it refuses, each one an `.error` after which it produces nothing more (a client is answered
/// 400, or 431 for the header limits, and its connection closed; an upstream connection is closed):
///
/// - anything but CRLF line ends (a bare LF, or a CR not followed by LF, anywhere in a head, a
///   chunk line or the trailers);
/// - a request line that is not `token SP target SP HTTP/1.1` (or `HTTP/1.0`), the target visible
///   ASCII only;
/// - a field name that is not a token, whitespace before the colon, obs-fold (a line starting with
///   space or tab), control characters (NUL, CR, DEL...) in a value;
/// - Content-Length and Transfer-Encoding together, more than one Content-Length (even equal),
///   either name spelt with `_` for `-`,
///   a Content-Length that is not plain digits (no sign, list or hex), more than one
///   Transfer-Encoding, any transfer coding but exactly `chunked`;
/// - a chunk size that is not 1 to 15 hex digits directly followed by CRLF or `;`, chunk extensions
///   that are not `;name[=token|quoted-string]`, chunk data not followed by CRLF;
/// - more header bytes or fields than the limits (431), checked as the bytes arrive, so an oversized
///   head is never held whole; framing (chunk lines, trailers) beyond `framingPerRequest` plus the
///   body's size (a client streaming `5;aaaa…` forever), checked the same way.
///
/// Upgrade, Host and Transfer-Encoding on HTTP/1.0 are the exchange's rules (`Exchange.receivedHead`):
/// the head goes to it as read, framed as it says. Trailer fields are checked and dropped.
///
/// Responses: a status line `HTTP/1.1 (or 1.0) SP 3DIGIT [SP reason]`, the same field rules; no body
/// after 1xx (no end either: the final response follows), 204 and 304; Transfer-Encoding exactly
/// `chunked`, or one Content-Length, or else a body that ends with the connection (`inputClosed`).
struct HTTP1MessageDecoder {
    enum Kind {
        case request
        case response
    }

    enum Event {
        /// A request head; `keepAlive` as its version and `Connection` tokens say.
        case head(HTTPRequestHead, keepAlive: Bool)
        /// A response head (`kind` response); `keepAlive` false also when only the close ends its body.
        case responseHead(HTTPResponseHead, keepAlive: Bool)
        /// Body bytes (never empty), a slice of what was read.
        case body(ByteBuffer)
        /// The request ended (after its body, or right after a head without one).
        case end
        /// The bytes are refused; nothing more comes.
        case error(ReplyCause)
    }

    /// Bytes a head may take as sent (request line, fields with their whitespace, line ends) before
    /// it is refused while still arriving; the exchange then checks the exact field sizes.
    let maxHeadBytes: Int
    let maxHeaderCount: Int
    /// Framing bytes (chunk-size lines with extensions, CRLF after chunk data, trailers) a request
    /// may have beyond its body's size.
    let framingPerRequest: Int
    let kind: Kind

    init(kind: Kind = .request, maxHeaderBytes: Int, maxHeaderCount: Int, framingPerRequest: Int = 16 * 1024) {
        self.kind = kind
        // Room for ": " and CRLF per field, optional whitespace, the request line and blank line.
        self.maxHeadBytes = maxHeaderBytes + 8 * maxHeaderCount + 1024
        self.maxHeaderCount = maxHeaderCount
        self.framingPerRequest = framingPerRequest
    }

    private enum State {
        case head
        case fixedBody(remaining: Int)
        case chunkLine
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        /// A head without a body was just produced: its end comes next.
        case endPending
        /// A response body that ends with the connection.
        case untilClose
        case failed
    }

    /// One header field of the head being read: offsets from the head's first byte.
    private struct FieldRange {
        var nameStart: Int
        var nameLength: Int
        var valueStart: Int
        var valueLength: Int
    }

    /// Bytes read and not consumed yet. While a head arrives its first byte stays at `readerIndex`.
    private var buffer = HTTP1MessageDecoder.empty
    private var state = State.head

    // The head being read (offsets from `buffer.readerIndex`).
    /// Bytes of the head split into lines so far.
    private var scanned = 0
    private var sawRequestLine = false
    /// Where the method starts (after any empty lines before the request line).
    private var methodStart = 0
    private var methodLength = 0
    private var targetStart = 0
    private var targetLength = 0
    private var minorVersion = 1
    /// A response's status code.
    private var statusCode = 0
    private var fields: [FieldRange] = []
    private var contentLengths = 0
    private var contentLength = -1
    private var transferEncodings = 0
    private var chunked = false
    private var connectionClose = false
    private var connectionKeepAlive = false

    // The body being read.
    private var bodyBytes = 0
    private var framingBytes = 0

    /// Whether bytes wait here unparsed (the start of a next request, pipelined).
    var hasBufferedBytes: Bool { buffer.readableBytes > 0 }

    /// Appends bytes read from the connection.
    mutating func feed(_ bytes: ByteBuffer) {
        if case .failed = state { return }
        if buffer.readableBytes == 0 {
            buffer = bytes
            return
        }
        if buffer.readerIndex > 0 { buffer.discardReadBytes() }
        buffer.writeImmutableBuffer(bytes)
    }

    /// Drops whatever is buffered (the connection is closing).
    mutating func discardBuffered() {
        buffer = Self.empty
    }

    /// Whether the decoder keeps storage of a read alive (for tests: an idle one keeps none).
    var holdsStorage: Bool { buffer.capacity > 0 }

    /// An empty buffer shared by every decoder: what `buffer` becomes once it is all consumed.
    private static let empty = ByteBuffer()

    /// The next event, or nil when more bytes are needed.
    mutating func next() -> Event? {
        let event = nextEvent()
        // Once every byte read is consumed, the read's storage is let go: an idle keep-alive
        // connection holds no buffer.
        if event == nil && buffer.readableBytes == 0 && buffer.capacity > 0 { buffer = Self.empty }
        return event
    }

    private mutating func nextEvent() -> Event? {
        switch state {
        case .failed:
            return nil
        case .endPending:
            state = .head
            return .end
        case .head:
            return readHead()
        case .untilClose:
            guard buffer.readableBytes > 0 else { return nil }
            return .body(buffer.readSlice(length: buffer.readableBytes)!)
        case .fixedBody(let remaining):
            let available = buffer.readableBytes
            guard available > 0 else { return nil }
            let take = min(available, remaining)
            let slice = buffer.readSlice(length: take)!
            state = take == remaining ? .endPending : .fixedBody(remaining: remaining - take)
            return .body(slice)
        case .chunkData(let remaining):
            let available = buffer.readableBytes
            guard available > 0 else { return nil }
            let take = min(available, remaining)
            let slice = buffer.readSlice(length: take)!
            bodyBytes += take
            state = take == remaining ? .chunkDataEnd : .chunkData(remaining: remaining - take)
            return .body(slice)
        case .chunkDataEnd:
            guard buffer.readableBytes >= 2 else { return nil }
            guard buffer.readInteger(as: UInt16.self) == 0x0D0A else { return fail(.malformed(.unparsable)) }
            framingBytes += 2
            state = .chunkLine
            return nextEvent()
        case .chunkLine:
            return readChunkLine()
        case .trailers:
            return readTrailers()
        }
    }

    /// The connection's input ended: the end of a response whose body the close ends; nil otherwise
    /// (a message cut short is the caller's to handle as a broken connection).
    mutating func inputClosed() -> Event? {
        guard case .untilClose = state else { return nil }
        state = .failed
        return .end
    }

    private mutating func fail(_ cause: ReplyCause) -> Event {
        state = .failed
        buffer = Self.empty
        return .error(cause)
    }

    // MARK: Lines

    /// Where the CRLF-ended line starting at `start` (an offset from the reader index) ends: the
    /// offset of its CR, nil when no LF has arrived yet (`searched` says where to look again), or -1
    /// for an LF without a CR before it.
    private static func lineEnd(_ span: Span<UInt8>, from start: Int, searched: inout Int) -> Int? {
        var index = max(start, searched)
        let count = span.count
        while index < count, span[index] != UInt8(ascii: "\n") { index += 1 }
        guard index < count else {
            searched = count
            return nil
        }
        searched = 0
        guard index > start, span[index - 1] == UInt8(ascii: "\r") else { return -1 }
        return index - 1
    }

    // MARK: Head

    /// Where the search for the current line's LF resumes (an offset from the reader index).
    private var searched = 0

    private mutating func readHead() -> Event? {
        let bytes = buffer
        let span = bytes.readableBytesUInt8Span
        while true {
            let start = scanned
            if sawRequestLine && searched <= start {
                // A field line seen for the first time: found and checked in one pass. One that was
                // cut short by the end of a read is looked for again below, from where the search for
                // its LF stopped, so a head trickling in byte by byte is not scanned again each time.
                switch Self.scanFieldLine(span, from: start) {
                case .incomplete:
                    searched = span.count
                    if span.count > maxHeadBytes { return fail(.headersTooLarge) }
                    return nil
                case .invalid:
                    return fail(.malformed(.unparsable))
                case .empty(let next):
                    scanned = next
                    if scanned > maxHeadBytes { return fail(.headersTooLarge) }
                    return finishHead()
                case .field(let nameEnd, let valueStart, let valueEnd, let next):
                    scanned = next
                    if scanned > maxHeadBytes { return fail(.headersTooLarge) }
                    if let cause = recordField(span, start: start, nameEnd: nameEnd, valueStart: valueStart, valueEnd: valueEnd) {
                        return fail(cause)
                    }
                    continue
                }
            }
            guard let end = Self.lineEnd(span, from: start, searched: &searched) else {
                if span.count > maxHeadBytes { return fail(.headersTooLarge) }
                return nil
            }
            guard end >= 0 else { return fail(.malformed(.unparsable)) }
            scanned = end + 2
            if scanned > maxHeadBytes { return fail(.headersTooLarge) }
            if !sawRequestLine {
                // Empty lines before a request line are ignored (RFC 9112 §2.2).
                if start == end { continue }
                let valid = kind == .request ? requestLine(span, start: start, end: end) : statusLine(span, start: start, end: end)
                guard valid else { return fail(.malformed(.unparsable)) }
                sawRequestLine = true
                continue
            }
            if start == end { return finishHead() }
            if let cause = fieldLine(span, start: start, end: end) { return fail(cause) }
        }
    }

    private mutating func requestLine(_ span: Span<UInt8>, start: Int, end: Int) -> Bool {
        var index = start
        while index < end, Self.isTokenByte(span[index]) { index += 1 }
        guard index > start, index < end, span[index] == UInt8(ascii: " ") else { return false }
        methodStart = start
        methodLength = index - start
        index += 1
        let target = index
        while index < end, span[index] > 0x20, span[index] < 0x7F { index += 1 }
        guard index > target, index < end, span[index] == UInt8(ascii: " ") else { return false }
        targetStart = target
        targetLength = index - target
        index += 1
        // Exactly `HTTP/1.1` or `HTTP/1.0`.
        guard end - index == 8, span[index] == UInt8(ascii: "H"), span[index + 1] == UInt8(ascii: "T"),
            span[index + 2] == UInt8(ascii: "T"), span[index + 3] == UInt8(ascii: "P"), span[index + 4] == UInt8(ascii: "/"),
            span[index + 5] == UInt8(ascii: "1"), span[index + 6] == UInt8(ascii: "."),
            span[index + 7] == UInt8(ascii: "1") || span[index + 7] == UInt8(ascii: "0")
        else { return false }
        minorVersion = span[index + 7] == UInt8(ascii: "1") ? 1 : 0
        return true
    }

    /// `HTTP/1.1 SP 3DIGIT [SP reason-phrase]` (or HTTP/1.0); the reason is not kept (the client gets
    /// the usual phrase for the code).
    private mutating func statusLine(_ span: Span<UInt8>, start: Int, end: Int) -> Bool {
        guard end - start >= 12, span[start] == UInt8(ascii: "H"), span[start + 1] == UInt8(ascii: "T"),
            span[start + 2] == UInt8(ascii: "T"), span[start + 3] == UInt8(ascii: "P"), span[start + 4] == UInt8(ascii: "/"),
            span[start + 5] == UInt8(ascii: "1"), span[start + 6] == UInt8(ascii: "."),
            span[start + 7] == UInt8(ascii: "1") || span[start + 7] == UInt8(ascii: "0"), span[start + 8] == UInt8(ascii: " ")
        else { return false }
        minorVersion = span[start + 7] == UInt8(ascii: "1") ? 1 : 0
        var code = 0
        for index in start + 9..<start + 12 {
            let digit = span[index] &- UInt8(ascii: "0")
            guard digit < 10 else { return false }
            code = code * 10 + Int(digit)
        }
        guard code >= 100 else { return false }
        statusCode = code
        guard end > start + 12 else { return true }
        guard span[start + 12] == UInt8(ascii: " ") else { return false }
        for index in start + 13..<end {
            let byte = span[index]
            guard byte == UInt8(ascii: "\t") || (byte >= 0x20 && byte != 0x7F) else { return false }
        }
        return true
    }

    /// Checks one field line and records it; the cause when it is refused.
    private mutating func fieldLine(_ span: Span<UInt8>, start: Int, end: Int) -> ReplyCause? {
        guard let (nameEnd, valueStart, valueEnd) = Self.splitField(span, start: start, end: end) else {
            return .malformed(.unparsable)
        }
        return recordField(span, start: start, nameEnd: nameEnd, valueStart: valueStart, valueEnd: valueEnd)
    }

    /// What one pass over a field line found.
    private enum FieldScan {
        case field(nameEnd: Int, valueStart: Int, valueEnd: Int, next: Int)
        /// The empty line that ends the head.
        case empty(next: Int)
        /// The bytes end before the line does.
        case incomplete
        case invalid
    }

    /// A field line (or the empty line) from offset `start`, split and checked as `splitField` does,
    /// with its CRLF found in the same pass: any other control character, a bare CR or LF included,
    /// makes it invalid.
    private static func scanFieldLine(_ span: Span<UInt8>, from start: Int) -> FieldScan {
        let count = span.count
        var index = start
        guard index < count else { return .incomplete }
        if span[index] == UInt8(ascii: "\r") {
            guard index + 1 < count else { return .incomplete }
            return span[index + 1] == UInt8(ascii: "\n") ? .empty(next: index + 2) : .invalid
        }
        while index < count, isTokenByte(span[index]) { index += 1 }
        guard index < count else { return .incomplete }
        guard index > start, span[index] == UInt8(ascii: ":") else { return .invalid }
        let nameEnd = index
        index += 1
        while index < count, span[index] == UInt8(ascii: " ") || span[index] == UInt8(ascii: "\t") { index += 1 }
        let valueStart = index
        var valueEnd = index
        while index < count {
            let byte = span[index]
            if byte > 0x20 {
                // Visible characters and obs-text; not DEL.
                guard byte != 0x7F else { return .invalid }
                index += 1
                valueEnd = index
            } else if byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") {
                index += 1
            } else {
                // A control character: only CRLF, which ends the line.
                guard byte == UInt8(ascii: "\r") else { return .invalid }
                guard index + 1 < count else { return .incomplete }
                guard span[index + 1] == UInt8(ascii: "\n") else { return .invalid }
                return .field(nameEnd: nameEnd, valueStart: valueStart, valueEnd: valueEnd, next: index + 2)
            }
        }
        return .incomplete
    }

    /// Records a checked field line and notes its framing; the cause when it is refused.
    private mutating func recordField(_ span: Span<UInt8>, start: Int, nameEnd: Int, valueStart: Int, valueEnd: Int)
        -> ReplyCause?
    {
        if fields.count == maxHeaderCount { return .headersTooLarge }
        if fields.isEmpty { fields.reserveCapacity(16) }
        fields.append(
            FieldRange(nameStart: start, nameLength: nameEnd - start, valueStart: valueStart, valueLength: valueEnd - valueStart))
        return frameField(span, name: start, nameLength: nameEnd - start, value: valueStart, valueEnd: valueEnd)
    }

    /// `name ":" OWS value OWS`: the name's end and the value's bounds, or nil when the line is not a
    /// valid field line (obs-fold, whitespace before the colon, a name that is not a token, a control
    /// character in the value).
    private static func splitField(_ span: Span<UInt8>, start: Int, end: Int) -> (nameEnd: Int, valueStart: Int, valueEnd: Int)? {
        // Offsets within the line, so the loops' bounds are the line's own count.
        let line = span.extracting(start..<end)
        let count = line.count
        var index = 0
        while index < count, isTokenByte(line[index]) { index += 1 }
        guard index > 0, index < count, line[index] == UInt8(ascii: ":") else { return nil }
        let nameEnd = index
        index += 1
        while index < count, line[index] == UInt8(ascii: " ") || line[index] == UInt8(ascii: "\t") { index += 1 }
        let valueStart = index
        var valueEnd = index
        while index < count {
            let byte = line[index]
            index += 1
            if byte > 0x20 {
                // Visible characters and obs-text; not DEL.
                guard byte != 0x7F else { return nil }
                valueEnd = index
            } else if byte != UInt8(ascii: " ") && byte != UInt8(ascii: "\t") {
                return nil
            }
        }
        return (start + nameEnd, start + valueStart, start + valueEnd)
    }

    /// Notes what a field says about the message's framing and the connection.
    private mutating func frameField(_ span: Span<UInt8>, name: Int, nameLength: Int, value: Int, valueEnd: Int) -> ReplyCause? {
        switch nameLength {
        case 14 where Self.equalsLowercased(span, at: name, length: 14, "content-length"):
            contentLengths += 1
            if contentLengths > 1 { return .malformed(.duplicateContentLength) }
            // 1 to 18 digits, nothing else: no sign, no list, no hex.
            let length = valueEnd - value
            guard length >= 1, length <= 18 else { return .malformed(.unparsable) }
            var total = 0
            for index in value..<valueEnd {
                let digit = span[index] &- UInt8(ascii: "0")
                guard digit < 10 else { return .malformed(.unparsable) }
                total = total * 10 + Int(digit)
            }
            contentLength = total
        case 17 where Self.equalsLowercased(span, at: name, length: 17, "transfer-encoding"):
            transferEncodings += 1
            if transferEncodings > 1 { return .malformed(.unparsable) }
            guard Self.equalsLowercased(span, at: value, length: valueEnd - value, "chunked") else {
                return .malformed(.unparsable)
            }
            chunked = true
        case 10 where Self.equalsLowercased(span, at: name, length: 10, "connection"):
            connectionTokens(span, value: value, valueEnd: valueEnd)
        case 14 where Self.equalsLowercased(span, at: name, length: 14, "content-length", underscoreAsDash: true),
            17 where Self.equalsLowercased(span, at: name, length: 17, "transfer-encoding", underscoreAsDash: true):
            // `Content_Length`, `transfer_encoding`: receivers that map `_` to `-` (CGI-style
            // gateways) would read a framing field the proxy did not.
            return .malformed(.unparsable)
        default:
            break
        }
        return nil
    }

    /// Reads the `close` and `keep-alive` tokens of a Connection value.
    private mutating func connectionTokens(_ span: Span<UInt8>, value: Int, valueEnd: Int) {
        var index = value
        while index < valueEnd {
            var tokenEnd = index
            while tokenEnd < valueEnd, span[tokenEnd] != UInt8(ascii: ",") { tokenEnd += 1 }
            var first = index
            var last = tokenEnd
            while first < last, span[first] == UInt8(ascii: " ") || span[first] == UInt8(ascii: "\t") { first += 1 }
            while last > first, span[last - 1] == UInt8(ascii: " ") || span[last - 1] == UInt8(ascii: "\t") { last -= 1 }
            if Self.equalsLowercased(span, at: first, length: last - first, "close") { connectionClose = true }
            if Self.equalsLowercased(span, at: first, length: last - first, "keep-alive") { connectionKeepAlive = true }
            index = tokenEnd + 1
        }
    }

    private mutating func finishHead() -> Event {
        if transferEncodings > 0 && contentLengths > 0 { return fail(.malformed(.unparsable)) }
        let base = buffer.readerIndex
        var headers: [(String, String)] = []
        headers.reserveCapacity(fields.count)
        for field in fields {
            headers.append(
                (
                    buffer.getString(at: base + field.nameStart, length: field.nameLength)!,
                    buffer.getString(at: base + field.valueStart, length: field.valueLength)!
                ))
        }
        let version: HTTPVersion = minorVersion == 1 ? .http1_1 : .http1_0
        var keepAlive = minorVersion == 1 ? !connectionClose : connectionKeepAlive && !connectionClose
        let event: Event
        bodyBytes = 0
        framingBytes = 0
        switch kind {
        case .request:
            let method: HTTPMethod
            if methodLength == 4, buffer.getInteger(at: base + methodStart, as: UInt32.self) == 0x504F_5354 {
                method = .POST
            } else {
                method = HTTPMethod(rawValue: buffer.getString(at: base + methodStart, length: methodLength)!)
            }
            let target = buffer.getString(at: base + targetStart, length: targetLength)!
            event = .head(HTTPRequestHead(version: version, method: method, uri: target, headers: HTTPHeaders(headers)), keepAlive: keepAlive)
            if chunked {
                state = .chunkLine
            } else if contentLength > 0 {
                state = .fixedBody(remaining: contentLength)
            } else {
                state = .endPending
            }
        case .response:
            // No body after 1xx (and no end: the final response follows), 204 and 304, whatever
            // the fields say (RFC 9112 §6.3).
            if statusCode < 200 {
                state = .head
            } else if statusCode == 204 || statusCode == 304 {
                state = .endPending
            } else if chunked {
                state = .chunkLine
            } else if contentLength >= 0 {
                state = contentLength > 0 ? .fixedBody(remaining: contentLength) : .endPending
            } else {
                state = .untilClose
                keepAlive = false
            }
            event = .responseHead(
                HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: statusCode), headers: HTTPHeaders(headers)),
                keepAlive: keepAlive)
        }
        buffer.moveReaderIndex(forwardBy: scanned)
        resetHead()
        return event
    }

    private mutating func resetHead() {
        scanned = 0
        searched = 0
        sawRequestLine = false
        fields.removeAll(keepingCapacity: true)
        contentLengths = 0
        contentLength = -1
        transferEncodings = 0
        chunked = false
        connectionClose = false
        connectionKeepAlive = false
    }

    // MARK: Chunked body

    /// Framing bytes the current request may still use.
    private var framingLeft: Int { framingPerRequest + bodyBytes - framingBytes }

    private enum FramingLine {
        /// The line has not all arrived (and fits the budget so far).
        case incomplete
        /// A bare CR or LF, or past the framing budget.
        case refused
        /// The line ends `end` bytes after the reader index (before its CRLF), counted against the budget.
        case line(end: Int)
    }

    /// The next chunk-size or trailer line, charged to the framing budget.
    private mutating func nextFramingLine() -> FramingLine {
        let bytes = buffer
        let span = bytes.readableBytesUInt8Span
        guard let end = Self.lineEnd(span, from: 0, searched: &searched) else {
            return span.count > framingLeft ? .refused : .incomplete
        }
        guard end >= 0 else { return .refused }
        framingBytes += end + 2
        return framingBytes > framingPerRequest + bodyBytes ? .refused : .line(end: end)
    }

    private mutating func readChunkLine() -> Event? {
        let end: Int
        switch nextFramingLine() {
        case .incomplete: return nil
        case .refused: return fail(.malformed(.unparsable))
        case .line(let found): end = found
        }
        let bytes = buffer
        guard let size = Self.chunkSize(bytes.readableBytesUInt8Span, end: end) else { return fail(.malformed(.unparsable)) }
        buffer.moveReaderIndex(forwardBy: end + 2)
        if size == 0 {
            state = .trailers
            return readTrailers()
        }
        state = .chunkData(remaining: size)
        return nextEvent()
    }

    /// `1*15HEXDIG *( ";" name [ "=" ( token / quoted-string ) ] )` from the reader index to `end`,
    /// nothing else (no whitespace).
    private static func chunkSize(_ span: Span<UInt8>, end: Int) -> Int? {
        var index = 0
        var size = 0
        while index < end, let digit = hexValue(span[index]) {
            size = size << 4 | digit
            index += 1
        }
        guard index > 0, index <= 15 else { return nil }
        while index < end {
            guard span[index] == UInt8(ascii: ";") else { return nil }
            index += 1
            let name = index
            while index < end, isTokenByte(span[index]) { index += 1 }
            guard index > name else { return nil }
            guard index < end, span[index] == UInt8(ascii: "=") else { continue }
            index += 1
            if index < end, span[index] == UInt8(ascii: "\"") {
                index += 1
                var closed = false
                while index < end {
                    let byte = span[index]
                    index += 1
                    if byte == UInt8(ascii: "\"") {
                        closed = true
                        break
                    }
                    if byte == UInt8(ascii: "\\") {
                        guard index < end, isQuotedTextByte(span[index]) else { return nil }
                        index += 1
                    } else if !isQuotedTextByte(byte) {
                        return nil
                    }
                }
                guard closed else { return nil }
            } else {
                let valueStart = index
                while index < end, isTokenByte(span[index]) { index += 1 }
                guard index > valueStart else { return nil }
            }
        }
        return size
    }

    /// Trailer fields, checked like header fields and dropped, up to the empty line that ends the request.
    private mutating func readTrailers() -> Event? {
        while true {
            let end: Int
            switch nextFramingLine() {
            case .incomplete: return nil
            case .refused: return fail(.malformed(.unparsable))
            case .line(let found): end = found
            }
            if end == 0 {
                buffer.moveReaderIndex(forwardBy: 2)
                state = .head
                return .end
            }
            let bytes = buffer
            guard Self.splitField(bytes.readableBytesUInt8Span, start: 0, end: end) != nil else {
                return fail(.malformed(.unparsable))
            }
            buffer.moveReaderIndex(forwardBy: end + 2)
        }
    }

    // MARK: Bytes

    /// tchar (RFC 9110 §5.6.2).
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
            UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// qdtext and quoted-pair's second byte: HTAB, SP and visible characters (obs-text included), no DEL.
    private static func isQuotedTextByte(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: "\t") || (byte >= 0x20 && byte != 0x7F)
    }

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return Int(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return Int(byte - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }

    /// True when the `length` bytes at offset `index` are `lower` in any ASCII case.
    /// With `underscoreAsDash`, `_` also matches `-`.
    private static func equalsLowercased(
        _ span: Span<UInt8>, at index: Int, length: Int, _ lower: StaticString, underscoreAsDash: Bool = false
    ) -> Bool {
        guard length == lower.utf8CodeUnitCount else { return false }
        return lower.withUTF8Buffer { expected in
            for offset in 0..<length {
                let byte = span[index + offset]
                var folded = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
                if underscoreAsDash && folded == UInt8(ascii: "_") { folded = UInt8(ascii: "-") }
                guard folded == expected[offset] else { return false }
            }
            return true
        }
    }
}
