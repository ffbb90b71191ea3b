import NIOCore
import NIOHTTP1

/// How many bytes of an HTTP/1.1 connection may be neither header fields nor body: request lines,
/// separators, chunk-size lines with their extensions, trailers, whitespace.
///
/// NIO's decoder (llhttp) bounds header fields, but it skips chunk extensions and padding whitespace
/// without any limit, so a client could stream megabytes of `5;aaaa…` per chunk and keep the
/// decoder busy forever without sending a byte of body. The budget compares the bytes read from
/// the socket with what the decoder made of them, after each read has been decoded:
///
/// - each decoded request head may take what it is made of (request line, fields, ": " and CRLF)
///   plus a little optional whitespace per field;
/// - each request may add `framingPerRequest` bytes of framing (16 KiB by default, the chunk
///   extension limit Node.js applies), plus as many as its body has (chunk lines of chunks down to
///   5 bytes each, or short extensions on every chunk);
/// - a head still arriving at the end of a read may take `perHead` (the header-bytes limit plus
///   separators per field), since the decoder has not yet said how long it is.
///
/// Between requests the count starts again, so a long keep-alive connection never banks allowance.
/// A pure value: the two counting handlers feed it and act on `isExceeded`.
struct HTTP1FramingBudget: Equatable {
    let perHead: Int
    let framingPerRequest: Int

    /// Bytes read from the socket since the count started.
    private(set) var received = 0
    /// Body bytes the decoder produced since then.
    private(set) var body = 0
    /// Request heads the decoder produced since then.
    private(set) var heads = 0
    /// What those heads may have taken on the wire.
    private(set) var headBytes = 0
    /// Between a request's head and its end.
    private(set) var inBody = false

    init(maxHeaderBytes: Int, maxHeaderCount: Int, framingPerRequest: Int = 16 * 1024) {
        // ": " and CRLF per field, plus generous room for optional whitespace, the method, the
        // version and the blank line.
        self.perHead = maxHeaderBytes + 8 * maxHeaderCount + 1024
        self.framingPerRequest = framingPerRequest
    }

    mutating func read(_ bytes: Int) { received += bytes }

    /// A head of `bytes` as the decoder reports it (see `HTTP1DecodedByteCounter.size`) with `fields` fields.
    mutating func decodedHead(bytes: Int, fields: Int) {
        heads += 1
        headBytes += bytes + 4 * fields + 256
        inBody = true
    }

    mutating func decodedBody(_ bytes: Int) { body += bytes }

    mutating func decodedEnd() { inBody = false }

    /// The bytes that were not body, against what the requests seen so far may use.
    var isExceeded: Bool {
        let allowance = headBytes + (inBody ? 0 : perHead) + max(heads, 1) * framingPerRequest + body
        return received - body > allowance
    }

    /// Called after each decoded read: between requests the count starts again.
    mutating func settle() {
        guard !inBody else { return }
        received = 0
        body = 0
        heads = 0
        headBytes = 0
    }
}

/// The budget of one connection, shared by `HTTP1RawByteCounter` (before the decoder) and
/// `HTTP1ExchangeHandler` (right after it, counting what the decoder produced); same event loop.
final class HTTP1FramingMeter {
    var budget: HTTP1FramingBudget

    init(budget: HTTP1FramingBudget) {
        self.budget = budget
    }

    /// The bytes of a head as sent without optional whitespace: request line, `name: value` CRLF
    /// per field, the blank line.
    static func size(_ head: HTTPRequestHead) -> Int {
        var total = head.method.rawValue.utf8.count + head.uri.utf8.count + 12
        for (name, value) in head.headers { total += name.utf8.count + value.utf8.count + 4 }
        return total + 2
    }
}

/// Sits before the HTTP/1.1 decoder: counts the bytes read, and once the decoder has made what it
/// could of them, checks the budget. Over budget it reports a parser error (400, or 431 when the
/// excess is in a head) through the pipeline like the decoder's own, and drops every later read.
final class HTTP1RawByteCounter: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let meter: HTTP1FramingMeter
    private var tripped = false

    init(meter: HTTP1FramingMeter) {
        self.meter = meter
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !tripped else { return }
        meter.budget.read(unwrapInboundIn(data).readableBytes)
        context.fireChannelRead(data)
        guard meter.budget.isExceeded else {
            meter.budget.settle()
            return
        }
        tripped = true
        // Parser errors are what the exchange queues behind a response in flight, so this one is
        // answered in order, like a malformed request.
        context.fireErrorCaught(meter.budget.inBody ? HTTPParserError.invalidChunkSize : HTTPParserError.headerOverflow)
    }
}
