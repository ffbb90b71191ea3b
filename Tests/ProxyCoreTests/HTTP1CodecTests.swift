import NIOCore
import NIOHTTP1
import XCTest

@testable import ProxyCore

/// The upstream half of the HTTP/1.1 codec and the client response writer, as pure values: responses
/// read from named byte fixtures, requests and responses written as exact bytes.
final class HTTP1CodecTests: XCTestCase {
    /// Every event of a response decoder fed `text`, as short strings; `closed` feeds the end of input.
    private func responseEvents(_ text: String, closed: Bool = false) -> [String] {
        var decoder = HTTP1MessageDecoder(kind: .response, maxHeaderBytes: 8192, maxHeaderCount: 20)
        decoder.feed(ByteBuffer(string: text))
        var events: [String] = []
        func describe(_ event: HTTP1MessageDecoder.Event) -> String {
            switch event {
            case .responseHead(let head, let keepAlive):
                return "head \(head.status.code) \(head.version) keepAlive=\(keepAlive) "
                    + head.headers.map { "\($0.name)=\($0.value)" }.joined(separator: ",")
            case .body(let buffer): return "body \(String(buffer: buffer))"
            case .end: return "end"
            case .error(let cause): return "error \(cause.reason)"
            case .head: return "request head"
            }
        }
        while let event = decoder.next() { events.append(describe(event)) }
        if closed, let event = decoder.inputClosed() { events.append(describe(event)) }
        return events
    }

    func testResponse_ContentLength_HeadBodyEnd() {
        XCTAssertEqual(
            responseEvents("HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nContent-Length: 2\r\n\r\nok"),
            ["head 200 HTTP/1.1 keepAlive=true Content-Type=a/b,Content-Length=2", "body ok", "end"])
    }

    func testResponse_Chunked_BodyJoinedEnd() {
        XCTAssertEqual(
            responseEvents("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
            ["head 200 HTTP/1.1 keepAlive=true Transfer-Encoding=chunked", "body ok", "end"])
    }

    func testResponse_NoContentAndNotModified_NoBodyWhateverTheLength() {
        XCTAssertEqual(
            responseEvents("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n"),
            ["head 204 HTTP/1.1 keepAlive=true Content-Length=5", "end", "head 304 HTTP/1.1 keepAlive=true ", "end"])
    }

    func testResponse_InformationalThenFinal_NoEndBetween() {
        XCTAssertEqual(
            responseEvents("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            ["head 100 HTTP/1.1 keepAlive=true ", "head 200 HTTP/1.1 keepAlive=true Content-Length=0", "end"])
    }

    /// Without a length the body ends with the connection, which therefore is never reused.
    func testResponse_NoLength_BodyUntilClose() {
        XCTAssertEqual(
            responseEvents("HTTP/1.1 200 OK\r\n\r\nabc", closed: true),
            ["head 200 HTTP/1.1 keepAlive=false ", "body abc", "end"])
        XCTAssertEqual(
            responseEvents("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx"),
            ["head 200 HTTP/1.0 keepAlive=true Connection=keep-alive,Content-Length=1", "body x", "end"])
    }

    /// A response cut short is no end: the connection's close is the exchange's to handle.
    func testResponse_ContentLengthCutShort_NoEndAtClose() {
        XCTAssertEqual(
            responseEvents("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", closed: true),
            ["head 200 HTTP/1.1 keepAlive=true Content-Length=5", "body ab"])
    }

    func testResponse_StatusLineForms() {
        XCTAssertEqual(responseEvents("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").first, "head 200 HTTP/1.1 keepAlive=true Content-Length=0")
        XCTAssertEqual(responseEvents("HTTP/1.1 299 Whatever it is\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").first,
                       "head 299 HTTP/1.1 keepAlive=false Connection=close,Content-Length=0")
        for bad in ["HTTP/1.1 20 OK\r\n\r\n", "HTTP/2 200 OK\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1  200 OK\r\n\r\n",
                    "HTTP/1.1 200 O\u{0}K\r\n\r\n", "HTTP/1.1 099 Low\r\n\r\n"] {
            XCTAssertEqual(responseEvents(bad), ["error malformed_http"], bad)
        }
    }

    func testResponse_AmbiguousFraming_Refused() {
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nok",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: 1\nContent-Length: 0\r\n\r\n",
        ] {
            XCTAssertEqual(responseEvents(bad).last?.hasPrefix("error "), true, bad)
        }
    }

    // MARK: Requests to the receiver

    private func request(_ head: HTTPRequestHead, body: [String] = []) -> String? {
        var encoder = HTTP1RequestEncoder()
        var out = ByteBuffer()
        guard encoder.writeHead(head, into: &out) else { return nil }
        for part in body { encoder.writeBody(ByteBuffer(string: part), into: &out) }
        encoder.writeEnd(into: &out)
        return String(buffer: out)
    }

    private func head(_ fields: [(String, String)], target: String = "/v1/traces") -> HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: .POST, uri: target, headers: HTTPHeaders(fields))
    }

    func testRequest_WithLength_WrittenAsIs() {
        XCTAssertEqual(
            request(head([("Host", "r"), ("content-length", "5")]), body: ["hel", "lo"]),
            "POST /v1/traces HTTP/1.1\r\nHost: r\r\ncontent-length: 5\r\n\r\nhello")
    }

    /// No length: chunked, so the receiver reads exactly one framing; a Transfer-Encoding field from
    /// elsewhere never goes out.
    func testRequest_WithoutLength_Chunked() {
        XCTAssertEqual(
            request(head([("Host", "r"), ("Transfer-Encoding", "gzip")], target: "/v1/logs?a=1"), body: ["hello", "", "0123456789abcdefg"]),
            "POST /v1/logs?a=1 HTTP/1.1\r\nHost: r\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n11\r\n0123456789abcdefg\r\n0\r\n\r\n")
    }

    func testRequest_HeadThatCannotBeWrittenUnambiguously_Refused() {
        XCTAssertNil(request(head([("Host", "r")], target: "/v1/traces HTTP/1.1\r\nX: 1")))
        XCTAssertNil(request(head([("Host", "r")], target: "/v1/{traces}")))
        XCTAssertNil(request(head([("Host", "r")], target: "")))
        XCTAssertNil(request(head([("Host", "r"), ("X-A", "1\r\nX-Injected: 1")])))
        XCTAssertNil(request(head([("Host", "r"), ("X-A", "a\u{0}b")])))
        XCTAssertNil(request(head([("Host", "r"), ("X A", "1")])))
        XCTAssertNil(request(head([("Host", "r"), ("X-A:", "1")])))
        XCTAssertNotNil(request(head([("Host", "r"), ("X-A", "tab\tand é")])))
    }

    func testRequest_Refused_LeavesTheBufferAsItWas() {
        var encoder = HTTP1RequestEncoder()
        var out = ByteBuffer(string: "earlier bytes")
        XCTAssertFalse(encoder.writeHead(head([("Host", "r"), ("X-Ok", "1"), ("X-A", "1\r\nX-Injected: 1")]), into: &out))
        XCTAssertEqual(String(buffer: out), "earlier bytes")
    }

    func testRequest_EmptyLongAndMultibyteValues_WrittenExactly() {
        let long = String(repeating: "v", count: 3000)
        XCTAssertEqual(
            request(head([("Host", "r"), ("X-Empty", ""), ("X-Long", long), ("X-UTF8", "grüße ☃"), ("content-length", "0")])),
            "POST /v1/traces HTTP/1.1\r\nHost: r\r\nX-Empty: \r\nX-Long: \(long)\r\nX-UTF8: grüße ☃\r\ncontent-length: 0\r\n\r\n")
    }

    // MARK: Responses to the client

    private func response(
        _ status: HTTPResponseStatus, version: HTTPVersion = .http1_1, method: HTTPMethod = .POST, _ fields: [(String, String)],
        body: String = ""
    ) -> (bytes: String, closesToEnd: Bool) {
        var encoder = HTTP1ResponseEncoder()
        var out = ByteBuffer()
        encoder.writeHead(HTTPResponseHead(version: version, status: status, headers: HTTPHeaders(fields)), requestMethod: method, into: &out)
        let closes = encoder.closesToEnd
        encoder.writeBody(ByteBuffer(string: body), into: &out)
        encoder.writeEnd(into: &out)
        return (String(buffer: out), closes)
    }

    func testResponse_WithLength_WrittenAsIs() {
        XCTAssertEqual(
            response(.ok, [("Content-Type", "a/b"), ("Content-Length", "2")], body: "ok").bytes,
            "HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nContent-Length: 2\r\n\r\nok")
    }

    func testResponse_WithoutLength_ChunkedOnHTTP11_UntilCloseOnHTTP10() {
        XCTAssertEqual(
            response(.ok, [("Transfer-Encoding", "identity")], body: "ok").bytes,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
        let old = response(.ok, version: .http1_0, [], body: "ok")
        XCTAssertEqual(old.bytes, "HTTP/1.0 200 OK\r\n\r\nok")
        XCTAssertTrue(old.closesToEnd)
    }

    func testResponse_NoContentAndHEAD_NoBody() {
        XCTAssertEqual(response(.noContent, [("Content-Length", "2")], body: "ok").bytes, "HTTP/1.1 204 No Content\r\n\r\n")
        XCTAssertEqual(
            response(.methodNotAllowed, method: .HEAD, [("Content-Length", "2")], body: "ok").bytes,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 2\r\n\r\n")
        XCTAssertEqual(response(.continue, []).bytes, "HTTP/1.1 100 Continue\r\n\r\n")
    }
}
