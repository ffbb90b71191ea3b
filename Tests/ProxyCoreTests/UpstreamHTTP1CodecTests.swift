import NIOCore
import NIOHTTP1
import XCTest

@testable import ProxyCore

/// The upstream HTTP/1.1 codec as pure values: how requests are serialised and how the receiver's
/// responses are read, including the framing the parser refuses.
final class UpstreamHTTP1CodecTests: XCTestCase {
    // MARK: Request writer

    private func head(_ fields: [(String, String)], uri: String = "/v1/traces") -> HTTPRequestHead {
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: uri)
        for (name, value) in fields { head.headers.add(name: name, value: value) }
        return head
    }

    private func written(_ head: HTTPRequestHead, bodies: [String]) -> String? {
        var writer = HTTP1RequestWriter()
        var out = ByteBuffer()
        guard writer.writeHead(head, into: &out) else { return nil }
        for body in bodies {
            writer.writeBodyPrefix(length: body.utf8.count, into: &out)
            out.writeString(body)
            writer.writeBodySuffix(into: &out)
        }
        writer.writeEnd(into: &out)
        return String(buffer: out)
    }

    func testWriter_ContentLength_BodyAsIs() {
        let text = written(head([("host", "r"), ("content-length", "5")]), bodies: ["hello"])
        XCTAssertEqual(text, "POST /v1/traces HTTP/1.1\r\nhost: r\r\ncontent-length: 5\r\n\r\nhello")
    }

    /// No Content-Length: the writer frames the body itself, and a Transfer-Encoding it was handed is dropped.
    func testWriter_NoLength_Chunked_InheritedCodingDropped() {
        let text = written(head([("host", "r"), ("Transfer-Encoding", "gzip")]), bodies: ["hello", "0123456789abcdef0"])
        XCTAssertEqual(
            text,
            "POST /v1/traces HTTP/1.1\r\nhost: r\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n11\r\n0123456789abcdef0\r\n0\r\n\r\n")
    }

    func testWriter_RefusesFieldsThatCannotGoOnTheWire() {
        XCTAssertNil(written(head([("x-a", "one\r\nx-injected: two")]), bodies: []))
        XCTAssertNil(written(head([("x-a", "nul\u{0}")]), bodies: []))
        XCTAssertNil(written(head([("x a", "v")]), bodies: []))
        XCTAssertNil(written(head([("x:a", "v")]), bodies: []))
        XCTAssertNil(written(head([], uri: "/v1/traces HTTP/1.1\r\nx: y"), bodies: []))
        XCTAssertNil(written(head([], uri: "/v1/traces\u{7F}"), bodies: []))
        XCTAssertNotNil(written(head([("x-a", "tab\tand obs-text \u{E9}")], uri: "/v1/traces?a=b%20c"), bodies: []))
    }

    // MARK: Response parser

    /// Feeds `chunks` one read at a time and collects every part; throws the parser's error.
    private func parse(_ chunks: [String], untilClose: Bool = false) throws -> [HTTP1ResponseParser.Part] {
        var parser = HTTP1ResponseParser(maxHeadBytes: 1024)
        var parts: [HTTP1ResponseParser.Part] = []
        var held = ByteBuffer()
        for chunk in chunks {
            held.writeString(chunk)
            while let part = try parser.next(&held) { parts.append(part) }
        }
        if untilClose, let end = parser.endOfInput() { parts.append(end) }
        return parts
    }

    private func bodyText(_ parts: [HTTP1ResponseParser.Part]) -> String {
        parts.reduce(into: "") { text, part in
            if case .body(let buffer) = part { text += String(buffer: buffer) }
        }
    }

    private func status(_ parts: [HTTP1ResponseParser.Part]) -> [UInt] {
        parts.compactMap { part in
            if case .head(let head) = part { return head.status.code }
            return nil
        }
    }

    private func ends(_ parts: [HTTP1ResponseParser.Part]) -> Int {
        parts.filter { if case .end = $0 { return true } else { return false } }.count
    }

    func testParser_ContentLength_SplitAcrossReads() throws {
        let parts = try parse(["HTTP/1.1 200 OK\r\nContent-Ty", "pe: application/x-protobuf\r\nContent-Length:  4 \r", "\n\r\nab", "cd"])
        XCTAssertEqual(status(parts), [200])
        guard case .head(let head) = parts[0] else { return XCTFail("no head") }
        XCTAssertEqual(head.headers["content-type"], ["application/x-protobuf"])
        XCTAssertEqual(head.headers["content-length"], ["4"])
        XCTAssertEqual(bodyText(parts), "abcd")
        XCTAssertEqual(ends(parts), 1)
        guard case .end(nil) = parts.last else { return XCTFail("last part is not the end") }
    }

    /// Two responses back to back on one keep-alive connection, the second with an empty body.
    func testParser_TwoResponses_InOneRead() throws {
        let parts = try parse(["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"])
        XCTAssertEqual(status(parts), [200, 503])
        XCTAssertEqual(ends(parts), 2)
        XCTAssertEqual(bodyText(parts), "ok")
    }

    func testParser_Chunked_WithExtensionsAndTrailers() throws {
        let parts = try parse([
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;name=value\r\nabc\r\n", "A\r\n0123456789\r\n0\r\nx-t: 1\r\n\r\n",
        ])
        XCTAssertEqual(bodyText(parts), "abc0123456789")
        guard case .end(let trailers) = parts.last else { return XCTFail("no end") }
        XCTAssertEqual(trailers?["x-t"], ["1"])
    }

    func testParser_Chunked_EndWithoutTrailers() throws {
        let parts = try parse(["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n", "\r\n"])
        XCTAssertEqual(bodyText(parts), "hi")
        guard case .end(nil) = parts.last else { return XCTFail("no end") }
    }

    func testParser_InformationalResponsesDropped_NoBodyStatuses() throws {
        let parts = try parse(["HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"])
        XCTAssertEqual(status(parts), [204])
        XCTAssertEqual(ends(parts), 1)
    }

    /// No length and no coding: the body runs until the receiver closes, and only then ends.
    func testParser_UntilClose() throws {
        var parts = try parse(["HTTP/1.0 200 OK\r\n\r\nsome", " body"])
        XCTAssertEqual(ends(parts), 0)
        parts = try parse(["HTTP/1.0 200 OK\r\n\r\nsome", " body"], untilClose: true)
        XCTAssertEqual(bodyText(parts), "some body")
        XCTAssertEqual(ends(parts), 1)
    }

    func testParser_RefusesAmbiguousFraming() {
        let cases: [(String, UpstreamHTTP1CodecError)] = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", .ambiguousFraming),
            ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", .ambiguousFraming),
            ("HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n", .ambiguousFraming),
            ("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n", .ambiguousFraming),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", .ambiguousFraming),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", .ambiguousFraming),
            ("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", .malformedStatusLine),
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\nX: y\r\n\r\n", .malformedField),
            ("HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n", .malformedField),
            ("HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", .malformedField),
            ("HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 0\r\n\r\n", .malformedField),
            ("HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n", .malformedStatusLine),
            ("HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", .malformedStatusLine),
            ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", .unexpectedUpgrade),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n", .malformedChunk),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n", .malformedChunk),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n", .malformedChunk),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;a\rb\r\nabc\r\n", .malformedChunk),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", .malformedChunk),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", .malformedChunk),
        ]
        for (response, expected) in cases {
            XCTAssertThrowsError(try parse([response]), response.debugDescription) { error in
                XCTAssertEqual(error as? UpstreamHTTP1CodecError, expected, response.debugDescription)
            }
        }
    }

    func testParser_HeadOverLimit_Refused() {
        let big = "HTTP/1.1 200 OK\r\nX: " + String(repeating: "a", count: 2000)
        XCTAssertThrowsError(try parse([big])) { error in
            XCTAssertEqual(error as? UpstreamHTTP1CodecError, .headTooLarge)
        }
    }
}
