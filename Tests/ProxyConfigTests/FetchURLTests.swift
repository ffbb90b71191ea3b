import XCTest

@testable import ProxyConfig

/// The strict URL parser for `jwks_url`, the OIDC discovery document and the `jwks_uri` it names.
final class FetchURLTests: XCTestCase {
    func testParse_HTTPSWithPathAndQuery() throws {
        let url = try FetchURL(parsing: "https://idp.example.com/realms/a/protocol/openid-connect/certs?x=1&y=%2F")
        XCTAssertEqual(url.scheme, "https")
        XCTAssertEqual(url.host, "idp.example.com")
        XCTAssertNil(url.port)
        XCTAssertEqual(url.effectivePort, 443)
        XCTAssertEqual(url.target, "/realms/a/protocol/openid-connect/certs?x=1&y=%2F")  // escapes kept as written
        XCTAssertEqual(url.hostHeader, "idp.example.com")
        XCTAssertEqual("\(url)", "https://idp.example.com/realms/a/protocol/openid-connect/certs?x=1&y=%2F")
    }

    func testParse_PortsHostsAndEmptyPath() throws {
        let plain = try FetchURL(parsing: "HTTP://127.0.0.1:8080")
        XCTAssertEqual(plain.scheme, "http")
        XCTAssertEqual(plain.port, 8080)
        XCTAssertEqual(plain.target, "/")
        XCTAssertEqual(plain.hostHeader, "127.0.0.1:8080")
        XCTAssertEqual(try FetchURL(parsing: "https://h?q").target, "/?q")
        XCTAssertEqual(try FetchURL(parsing: "http://localhost/").effectivePort, 80)

        let v6 = try FetchURL(parsing: "https://[::1]:8443/jwks.json")
        XCTAssertEqual(v6.host, "::1")
        XCTAssertEqual(v6.port, 8443)
        XCTAssertEqual(v6.hostHeader, "[::1]:8443")
        XCTAssertEqual(try FetchURL(parsing: "https://[2001:db8::7]/k").hostHeader, "[2001:db8::7]")
    }

    func testParse_Refusals_SayWhy() {
        let cases: [(String, String)] = [
            ("idp.example.com/jwks.json", "no scheme"),
            ("ftp://idp.example.com/jwks.json", "the scheme must be https"),
            ("https:///jwks.json", "no host"),
            ("https://:443/jwks.json", "no host"),
            ("https://idp.example.com:/jwks.json", "the port must be a number from 1 to 65535"),
            ("https://idp.example.com:0/", "the port must be a number from 1 to 65535"),
            ("https://idp.example.com:65536/", "the port must be a number from 1 to 65535"),
            ("https://idp.example.com:+443/", "the port must be a number from 1 to 65535"),
            ("https://[::1/jwks.json", "without its closing ]"),
            ("https://[not-v6]/", "is not an IPv6 address"),
            ("https://[127.0.0.1]/", "is not an IPv6 address"),
            ("https://[::1]x/", "unexpected characters after ]"),
            ("https://idp example.com/", "spaces, control and non-ASCII"),
            ("https://idp.example.com/a b", "spaces, control and non-ASCII"),
            ("https://idp.exämple.com/", "spaces, control and non-ASCII"),
            ("https://idp.example.com/\u{7F}", "spaces, control and non-ASCII"),
            ("https://idp!.example.com/", "the host may hold only"),
            ("https://idp.example.com/jwks.json#keys", "a fragment"),
            ("https://idp.example.com/%zz", "percent-escape"),
            ("https://idp.example.com/%4", "percent-escape"),
            ("https://idp.example.com/{kid}", "'{' must be percent-encoded"),
            ("https://idp.example.com/a\\b", "'\\' must be percent-encoded"),
            ("", "no scheme"),
        ]
        for text in ["https://user:pass@idp.example.com/jwks.json", "https://user@idp.example.com/", "https://a@b:c@idp.example.com/"] {
            XCTAssertThrowsError(try FetchURL(parsing: text), text) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains("user information (user@ or user:password@) is not allowed"), message)
                XCTAssertTrue(message.hasPrefix("\"https://…@idp.example.com/"), message)
                XCTAssertFalse(message.contains("user:pass@") || message.contains("//user@"), message)
                XCTAssertFalse(message.contains("b:c"), message)
            }
        }
        for (text, reason) in cases {
            XCTAssertThrowsError(try FetchURL(parsing: text), text) { error in
                let message = "\(error)"
                XCTAssertTrue(message.hasPrefix("\"\(text)\" is not a usable URL: "), message)
                XCTAssertTrue(message.contains(reason), "\(text): \(message)")
                XCTAssertTrue(message.hasSuffix("write e.g. https://idp.example.com/.well-known/jwks.json"), message)
            }
        }
    }
}
