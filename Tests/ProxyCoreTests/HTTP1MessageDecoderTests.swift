import NIOCore
import NIOHTTP1
import XCTest

@testable import ProxyCore

/// The HTTP/1.1 request parser as a pure value: named fixtures of bytes in, events out. Every
/// fixture is also fed one byte at a time, which must give the same events (body slices joined).
final class HTTP1MessageDecoderTests: XCTestCase {
    /// What a run of the decoder produced, body bytes joined per request.
    enum Outcome: Equatable {
        case request(method: String, target: String, version: String, fields: [String], keepAlive: Bool, body: String)
        case error(String)
        /// A head whose request has not ended when the bytes ran out.
        case unfinished(target: String, body: String)
    }

    private static let post = "POST /v1/traces HTTP/1.1\r\nHost: a\r\n"

    private func decode(_ bytes: [UInt8], maxHeaderBytes: Int = 8192, maxHeaderCount: Int = 20, byteByByte: Bool)
        -> [Outcome]
    {
        var decoder = HTTP1MessageDecoder(maxHeaderBytes: maxHeaderBytes, maxHeaderCount: maxHeaderCount)
        var outcomes: [Outcome] = []
        var current: (head: HTTPRequestHead, keepAlive: Bool, body: [UInt8])?
        func drain() -> Bool {
            while let event = decoder.next() {
                switch event {
                case .head(let head, let keepAlive):
                    current = (head, keepAlive, [])
                case .body(let buffer):
                    XCTAssertGreaterThan(buffer.readableBytes, 0, "empty body event")
                    current?.body += buffer.readableBytesView
                case .end:
                    guard let request = current else {
                        XCTFail("end without head")
                        return false
                    }
                    outcomes.append(
                        .request(
                            method: request.head.method.rawValue, target: request.head.uri,
                            version: "\(request.head.version)", fields: request.head.headers.map { "\($0.name)=\($0.value)" },
                            keepAlive: request.keepAlive, body: String(decoding: request.body, as: UTF8.self)))
                    current = nil
                case .error(let cause):
                    outcomes.append(.error(cause.reason))
                    return false
                case .responseHead:
                    XCTFail("a response from a request decoder")
                    return false
                }
            }
            return true
        }
        if byteByByte {
            for byte in bytes {
                decoder.feed(ByteBuffer(bytes: [byte]))
                guard drain() else { break }
            }
        } else {
            decoder.feed(ByteBuffer(bytes: bytes))
            _ = drain()
        }
        if let request = current, outcomes.last.map({ if case .error = $0 { return false } else { return true } }) ?? true {
            outcomes.append(.unfinished(target: request.head.uri, body: String(decoding: request.body, as: UTF8.self)))
        }
        return outcomes
    }

    /// Decodes whole and byte by byte, checks both agree, returns the outcome.
    private func outcome(_ text: String, maxHeaderBytes: Int = 8192, maxHeaderCount: Int = 20, file: StaticString = #filePath,
                         line: UInt = #line) -> [Outcome] {
        let bytes = Array(text.utf8)
        let whole = decode(bytes, maxHeaderBytes: maxHeaderBytes, maxHeaderCount: maxHeaderCount, byteByByte: false)
        let split = decode(bytes, maxHeaderBytes: maxHeaderBytes, maxHeaderCount: maxHeaderCount, byteByByte: true)
        XCTAssertEqual(whole, split, "fed whole and byte by byte differ", file: file, line: line)
        return whole
    }

    // MARK: Accepted

    func testContentLengthRequest_HeadFieldsBody() {
        XCTAssertEqual(
            outcome(Self.post + "Content-Type: application/x-protobuf\r\nContent-Length: 5\r\n\r\nhello"),
            [.request(method: "POST", target: "/v1/traces", version: "HTTP/1.1",
                      fields: ["Host=a", "Content-Type=application/x-protobuf", "Content-Length=5"], keepAlive: true, body: "hello")])
    }

    func testChunkedRequest_BodyJoinedTrailersDropped() {
        XCTAssertEqual(
            outcome(Self.post + "Transfer-Encoding: Chunked\r\n\r\n3\r\nhel\r\n2;name=value;q=\"a \\\" b\"\r\nlo\r\n0\r\nX-Trailer: 1\r\n\r\n"),
            [.request(method: "POST", target: "/v1/traces", version: "HTTP/1.1",
                      fields: ["Host=a", "Transfer-Encoding=Chunked"], keepAlive: true, body: "hello")])
    }

    func testNoFraming_EmptyBody() {
        XCTAssertEqual(
            outcome("GET /v1/traces?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            [.request(method: "GET", target: "/v1/traces?x=1", version: "HTTP/1.1", fields: ["Host=a"], keepAlive: true, body: "")])
    }

    func testOptionalWhitespaceAroundValue_Trimmed_InnerKept() {
        XCTAssertEqual(
            outcome(Self.post + "X-A:  \t a \t b \t\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n"),
            [.request(method: "POST", target: "/v1/traces", version: "HTTP/1.1",
                      fields: ["Host=a", "X-A=a \t b", "X-Empty=", "Content-Length=0"], keepAlive: true, body: "")])
    }

    func testPipelinedRequests_EachWhole_InOrder() {
        let two = Self.post + "Content-Length: 3\r\n\r\nabc" + "POST /v1/logs HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nde"
        XCTAssertEqual(
            outcome(two),
            [
                .request(method: "POST", target: "/v1/traces", version: "HTTP/1.1", fields: ["Host=a", "Content-Length=3"],
                         keepAlive: true, body: "abc"),
                .request(method: "POST", target: "/v1/logs", version: "HTTP/1.1", fields: ["Host=a", "Content-Length=2"],
                         keepAlive: true, body: "de"),
            ])
    }

    func testEmptyLinesBeforeRequestLine_Ignored() {
        XCTAssertEqual(
            outcome("\r\n\r\n" + Self.post + "\r\n"),
            [.request(method: "POST", target: "/v1/traces", version: "HTTP/1.1", fields: ["Host=a"], keepAlive: true, body: "")])
    }

    func testKeepAlive_FromVersionAndConnectionTokens() {
        let cases: [(String, Bool)] = [
            ("POST / HTTP/1.1\r\n\r\n", true),
            ("POST / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            ("POST / HTTP/1.1\r\nConnection: X-A , Close\r\n\r\n", false),
            ("POST / HTTP/1.0\r\n\r\n", false),
            ("POST / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
            ("POST / HTTP/1.0\r\nConnection: Keep-Alive, close\r\n\r\n", false),
        ]
        for (text, keepAlive) in cases {
            guard case .request(_, _, _, _, let decided, _) = outcome(text).first else {
                XCTFail("not decoded: \(text)")
                continue
            }
            XCTAssertEqual(decided, keepAlive, text)
        }
    }

    /// Framing `Exchange` decides on is left to it: the head goes through as read.
    func testUpgradeAndTransferEncodingOnHTTP10_HeadPassedToExchange() {
        XCTAssertEqual(
            outcome("POST /v1/traces HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            [.request(method: "POST", target: "/v1/traces", version: "HTTP/1.0", fields: ["Transfer-Encoding=chunked"],
                      keepAlive: false, body: "")])
        XCTAssertEqual(
            outcome(Self.post + "Upgrade: h2c\r\n\r\n"),
            [.request(method: "POST", target: "/v1/traces", version: "HTTP/1.1", fields: ["Host=a", "Upgrade=h2c"],
                      keepAlive: true, body: "")])
    }

    func testBodyArrivingInParts_UnfinishedUntilWhole() {
        XCTAssertEqual(
            outcome(Self.post + "Content-Length: 10\r\n\r\nhello"), [.unfinished(target: "/v1/traces", body: "hello")])
    }

    // MARK: Refused

    /// Each of these is refused with the reason given, whatever came before it in the bytes.
    static let refused: [(name: String, bytes: String, reason: String)] = [
        ("CL and TE", post + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "malformed_http"),
        ("TE and CL", post + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", "malformed_http"),
        ("TE chunked, identity", post + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", "malformed_http"),
        ("TE gzip, chunked", post + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "malformed_http"),
        ("TE xchunked", post + "Transfer-Encoding: xchunked\r\n\r\n", "malformed_http"),
        ("TE twice", post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "malformed_http"),
        ("CL twice equal", post + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", "duplicate_content_length"),
        ("CL twice different", post + "Content-Length: 5\r\ncontent-length: 6\r\n\r\nhello!", "duplicate_content_length"),
        ("CL list", post + "Content-Length: 5, 5\r\n\r\nhello", "malformed_http"),
        ("CL plus", post + "Content-Length: +5\r\n\r\nhello", "malformed_http"),
        ("CL negative", post + "Content-Length: -1\r\n\r\n", "malformed_http"),
        ("CL hex", post + "Content-Length: 0x5\r\n\r\n", "malformed_http"),
        ("CL empty", post + "Content-Length: \r\n\r\n", "malformed_http"),
        ("CL 19 digits", post + "Content-Length: 1000000000000000000\r\n\r\n", "malformed_http"),
        ("CL inner space", post + "Content-Length: 1 2\r\n\r\n", "malformed_http"),
        ("CL with underscore", post + "Content_Length: 5\r\n\r\nhello", "malformed_http"),
        ("TE with underscore", post + "transfer_encoding: chunked\r\n\r\n0\r\n\r\n", "malformed_http"),
        ("space before colon", post + "Content-Length : 5\r\n\r\nhello", "malformed_http"),
        ("tab before colon", post + "X-A\t: 5\r\n\r\n", "malformed_http"),
        ("obs-fold space", post + "X-A: 1\r\n 2\r\n\r\n", "malformed_http"),
        ("obs-fold tab", post + "X-A: 1\r\n\t2\r\n\r\n", "malformed_http"),
        ("whitespace before first field", "POST / HTTP/1.1\r\n Host: a\r\n\r\n", "malformed_http"),
        ("bare LF ends", "POST / HTTP/1.1\nHost: a\n\n", "malformed_http"),
        ("bare LF after a field", post + "X-A: 1\nX-B: 2\r\n\r\n", "malformed_http"),
        ("bare CR in value", post + "X-A: 1\rX-B: 2\r\n\r\n", "malformed_http"),
        ("NUL in value", post + "X-A: a\u{0}b\r\n\r\n", "malformed_http"),
        ("DEL in value", post + "X-A: a\u{7F}b\r\n\r\n", "malformed_http"),
        ("empty name", post + ": 1\r\n\r\n", "malformed_http"),
        ("no colon", post + "X-A 1\r\n\r\n", "malformed_http"),
        ("name with slash", post + "X/A: 1\r\n\r\n", "malformed_http"),
        ("request line two spaces", "POST  / HTTP/1.1\r\n\r\n", "malformed_http"),
        ("request line tab", "POST\t/ HTTP/1.1\r\n\r\n", "malformed_http"),
        ("version 9.9", "GARBAGE /v1/logs HTTP/9.9\r\n\r\n", "malformed_http"),
        ("version 2.0", "POST / HTTP/2.0\r\n\r\n", "malformed_http"),
        ("version lower case", "POST / http/1.1\r\n\r\n", "malformed_http"),
        ("HTTP/0.9 style", "GET /\r\n\r\n", "malformed_http"),
        ("target with DEL", "POST /a\u{7F} HTTP/1.1\r\n\r\n", "malformed_http"),
        ("method not a token", "PO(ST / HTTP/1.1\r\n\r\n", "malformed_http"),
        ("chunk size negative", post + "Transfer-Encoding: chunked\r\n\r\n-1\r\nhello\r\n0\r\n\r\n", "malformed_http"),
        ("chunk size 0x", post + "Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", "malformed_http"),
        ("chunk size 16 digits", post + "Transfer-Encoding: chunked\r\n\r\n0000000000000005\r\nhello\r\n0\r\n\r\n", "malformed_http"),
        ("chunk size with space", post + "Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", "malformed_http"),
        ("chunk size empty", post + "Transfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n", "malformed_http"),
        ("chunk data without CRLF", post + "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", "malformed_http"),
        ("chunk line bare LF", post + "Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n", "malformed_http"),
        ("chunk extension without name", post + "Transfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n", "malformed_http"),
        ("chunk extension with space", post + "Transfer-Encoding: chunked\r\n\r\n5; a=b\r\nhello\r\n0\r\n\r\n", "malformed_http"),
        ("chunk extension bare CR", post + "Transfer-Encoding: chunked\r\n\r\n5;a=\"\r\"\r\nhello\r\n0\r\n\r\n", "malformed_http"),
        ("chunk extension open quote", post + "Transfer-Encoding: chunked\r\n\r\n5;a=\"b\r\nhello\r\n0\r\n\r\n", "malformed_http"),
        ("trailer obs-fold", post + "Transfer-Encoding: chunked\r\n\r\n0\r\nX-A: 1\r\n 2\r\n\r\n", "malformed_http"),
        ("trailer bare LF", post + "Transfer-Encoding: chunked\r\n\r\n0\r\nX-A: 1\n\r\n", "malformed_http"),
        ("second request bad after a good one",
         post + "Content-Length: 1\r\n\r\na" + "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "malformed_http"),
    ]

    func testRefusedFixtures() {
        for fixture in Self.refused {
            let outcomes = outcome(fixture.bytes)
            XCTAssertEqual(outcomes.last, .error(fixture.reason), "\(fixture.name): \(outcomes)")
        }
    }

    /// tchar of RFC 9110 §5.6.2, for every byte value.
    func testTokenBytes_ExactlyTheRFCSet() {
        let tchar = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        for byte in UInt8.min...UInt8.max {
            XCTAssertEqual(HTTP1MessageDecoder.isTokenByte(byte), tchar.contains(byte), "byte \(byte)")
        }
    }

    /// Once a read is all consumed, its storage is let go: an idle keep-alive connection holds no
    /// buffer, while one holding part of a request keeps it.
    func testAllBytesConsumed_NoStorageHeld() {
        var decoder = HTTP1MessageDecoder(maxHeaderBytes: 8192, maxHeaderCount: 20)
        decoder.feed(ByteBuffer(string: Self.post + "Content-Length: 2\r\n\r\nok"))
        while decoder.next() != nil {}
        XCTAssertFalse(decoder.holdsStorage)
        decoder.feed(ByteBuffer(string: Self.post))
        XCTAssertNil(decoder.next())
        XCTAssertTrue(decoder.holdsStorage, "a head in progress is kept")
    }

    /// Nothing is produced after an error, even if what follows would parse.
    func testAfterError_NothingMore() {
        var decoder = HTTP1MessageDecoder(maxHeaderBytes: 8192, maxHeaderCount: 20)
        decoder.feed(ByteBuffer(string: "POST / HTTP/1.1\nHost: a\r\n\r\n"))
        guard case .error = decoder.next() else { return XCTFail("not refused") }
        decoder.feed(ByteBuffer(string: Self.post + "\r\n"))
        XCTAssertNil(decoder.next())
    }

    // MARK: Limits

    func testTooManyFields_431() {
        let fields = (0..<21).map { "X-\($0): 1\r\n" }.joined()
        XCTAssertEqual(outcome("POST / HTTP/1.1\r\n" + fields + "\r\n", maxHeaderCount: 20), [.error("header_limit")])
        let fit = (0..<20).map { "X-\($0): 1\r\n" }.joined()
        XCTAssertEqual(outcome("POST / HTTP/1.1\r\n" + fit + "\r\n", maxHeaderCount: 20).count, 1)
    }

    /// A head longer than the limit is refused while it arrives, before its end, and before it is
    /// all held: the decoder never buffers more than the head allowance and a read.
    func testOversizedHeadStillArriving_431BeforeItsEnd() {
        var decoder = HTTP1MessageDecoder(maxHeaderBytes: 1024, maxHeaderCount: 10)
        decoder.feed(ByteBuffer(string: "POST / HTTP/1.1\r\nX-A: "))
        XCTAssertNil(decoder.next())
        var fed = 0
        var refused: ReplyCause?
        while fed < 100_000 {
            decoder.feed(ByteBuffer(repeating: UInt8(ascii: "a"), count: 512))
            fed += 512
            if case .error(let cause) = decoder.next() {
                refused = cause
                break
            }
        }
        XCTAssertEqual(refused, .headersTooLarge)
        XCTAssertLessThanOrEqual(fed, decoder.maxHeadBytes + 512)
    }

    /// `5;aaaa…` with a 100 KiB extension: refused once the request's framing allowance is used,
    /// long before the extension ends.
    func testLongChunkExtension_RefusedWithinAllowance() {
        var decoder = HTTP1MessageDecoder(maxHeaderBytes: 8192, maxHeaderCount: 20)
        decoder.feed(ByteBuffer(string: Self.post + "Transfer-Encoding: chunked\r\n\r\n5;a="))
        guard case .head = decoder.next() else { return XCTFail("no head") }
        var fed = 0
        var refused: ReplyCause?
        while fed < 100_000 {
            decoder.feed(ByteBuffer(repeating: UInt8(ascii: "a"), count: 1000))
            fed += 1000
            if case .error(let cause) = decoder.next() {
                refused = cause
                break
            }
        }
        XCTAssertEqual(refused, .malformed(.unparsable))
        XCTAssertLessThanOrEqual(fed, decoder.framingPerRequest + 1000)
    }

    /// 2,000 chunks of 8 bytes, each with a short extension: ordinary framing, the body arrives whole.
    func testManySmallChunksWithShortExtensions_Accepted() {
        let pieces = (0..<2000).map { String(format: "%08d", $0) }
        let body = pieces.map { "8;n=v\r\n\($0)\r\n" }.joined() + "0\r\n\r\n"
        let outcomes = decode(Array((Self.post + "Transfer-Encoding: chunked\r\n\r\n" + body).utf8), byteByByte: false)
        XCTAssertEqual(outcomes.count, 1)
        guard case .request(_, _, _, _, _, let received) = outcomes.first else { return XCTFail("\(outcomes)") }
        XCTAssertEqual(received, pieces.joined())
    }

    /// One-byte chunks cost five framing bytes each: more than the allowance grows, so a body sent
    /// that way is refused after about 4 KiB.
    func testOneByteChunks_RefusedOnceFramingOutgrowsBody() {
        let body = String(repeating: "1\r\nx\r\n", count: 10_000) + "0\r\n\r\n"
        let outcomes = decode(Array((Self.post + "Transfer-Encoding: chunked\r\n\r\n" + body).utf8), byteByByte: false)
        XCTAssertEqual(outcomes, [.error("malformed_http")])
    }

    /// The allowance starts again with every request: a long keep-alive connection banks nothing,
    /// and a pipelined request's long extension is caught as if it came alone.
    func testPipelinedLongExtension_CaughtAfterAGoodRequest() {
        let good = Self.post + "Content-Length: 5\r\n\r\nhello"
        let bad = Self.post + "Transfer-Encoding: chunked\r\n\r\n5;" + String(repeating: "a", count: 100_000) + "\r\nhello\r\n0\r\n\r\n"
        let outcomes = decode(Array((good + bad).utf8), byteByByte: false)
        XCTAssertEqual(outcomes.count, 2, "\(outcomes)")
        XCTAssertEqual(outcomes.last, .error("malformed_http"))
    }
}
