import XCTest
@testable import ProxyConfig

/// `Endpoint` parsing, printing and the loopback test that guards plaintext forwarding.
final class EndpointTests: XCTestCase {
    func testParse_ValidTable() {
        let table: [(String, String, Int)] = [
            ("127.0.0.1:4318", "127.0.0.1", 4318),
            ("0.0.0.0:4317", "0.0.0.0", 4317),
            (":4317", "0.0.0.0", 4317),
            ("localhost:14318", "localhost", 14318),
            ("receiver.monitoring.svc.cluster.local:4317", "receiver.monitoring.svc.cluster.local", 4317),
            ("[::1]:4318", "::1", 4318),
            ("[::]:4317", "::", 4317),
            ("[2001:db8::7]:443", "2001:db8::7", 443),
            ("[::ffff:127.0.0.1]:80", "::ffff:127.0.0.1", 80),
            ("[fe80::1%eth0]:4317", "fe80::1%eth0", 4317),
            ("127.0.0.1:0", "127.0.0.1", 0),
            ("127.0.0.1:65535", "127.0.0.1", 65535),
        ]
        for (text, host, port) in table {
            XCTAssertEqual(Endpoint.parse(text), Endpoint(host: host, port: port), text)
        }
    }

    func testParse_InvalidTable() {
        let table = [
            "", "4317", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:43a7",
            "::1:4318", "[::1]", "[::1]4318", "[::1:4318", "[not-v6]:4318", "[1:2:3:4:5:6:7:8:9]:1",
            "http://127.0.0.1:4318", "127.0.0.1:4318/v1/traces", "host name:80", "a..b:80", " 127.0.0.1:80",
            "127.0.0.1:+80",
        ]
        for text in table {
            XCTAssertNil(Endpoint.parse(text), text)
        }
    }

    func testDescription_BracketsIPv6AndRoundTrips() {
        XCTAssertEqual(Endpoint(host: "127.0.0.1", port: 4318).description, "127.0.0.1:4318")
        XCTAssertEqual(Endpoint(host: "::1", port: 4318).description, "[::1]:4318")
        XCTAssertEqual(Endpoint(host: "[::1]", port: 4318).host, "::1")
        for text in ["127.0.0.1:4318", "[::1]:4318", "localhost:1", "[2001:db8::7]:443"] {
            XCTAssertEqual(Endpoint.parse(text)?.description, text)
        }
    }

    func testIsLoopback_Table() {
        let loopback = ["127.0.0.1", "127.255.0.9", "::1", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1", "localhost", "LOCALHOST"]
        let remote = [
            "0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "126.0.0.1", "::2", "2001:db8::1", "localhost.example.com",
            "127.0.0.1.nip.io", "receiver",
        ]
        for host in loopback { XCTAssertTrue(Endpoint(host: host, port: 1).isLoopback, host) }
        for host in remote { XCTAssertFalse(Endpoint(host: host, port: 1).isLoopback, host) }
    }
}
