import ProxyYAML
import XCTest
@testable import ProxyConfig

/// Plain scalars mean what they meant when the configuration was read with Yams (YAML 1.1, as PyYAML's
/// SafeLoader reads them too); quoted ones are always strings.
final class ScalarResolutionTests: XCTestCase {
    private func plain(_ text: String) -> YAMLScalar { YAMLScalar(text: text, style: .plain, line: 1, column: 1) }

    func testKinds() {
        let table: [(String, ScalarKind)] = [
            ("", .null), ("~", .null), ("null", .null), ("Null", .null), ("NULL", .null), ("nULL", .string),
            ("yes", .bool), ("No", .bool), ("ON", .bool), ("off", .bool), ("true", .bool), ("False", .bool), ("yEs", .string),
            ("0", .int), ("42", .int), ("-7", .int), ("+7", .int), ("1_000", .int), ("0x1F", .int), ("0b101", .int),
            ("017", .int), ("0o17", .int), ("1:30", .int), ("1:00:00", .int),
            ("2.5", .float), ("1e3", .float), ("-1.5E-3", .float), (".5", .float), (".inf", .float), ("-.Inf", .float),
            (".NaN", .float), ("1:30.5", .float), ("019", .float), ("1.", .float),
            ("4MiB", .string), ("10s", .string), ("1.2.3", .string), ("0x", .string), ("1:60", .string), ("abc", .string),
            ("1_", .int), ("-", .string), (".", .string),
        ]
        for (text, kind) in table {
            XCTAssertEqual(plain(text).kind, kind, text.debugDescription)
        }
        for style in [YAMLScalar.Style.singleQuoted, .doubleQuoted, .literal, .folded] {
            XCTAssertEqual(YAMLScalar(text: "42", style: style, line: 1, column: 1).kind, .string)
            XCTAssertNil(YAMLScalar(text: "42", style: style, line: 1, column: 1).int)
        }
    }

    func testValues() {
        XCTAssertEqual(plain("1_000").int, 1000)
        XCTAssertEqual(plain("0x1F").int, 31)
        XCTAssertEqual(plain("-0x10").int, -16)
        XCTAssertEqual(plain("0b101").int, 5)
        XCTAssertEqual(plain("017").int, 15)
        XCTAssertEqual(plain("0o17").int, 15)
        XCTAssertEqual(plain("1:30").int, 90)
        XCTAssertEqual(plain("-1:00:00").int, -3600)
        XCTAssertNil(plain("99999999999999999999").int)
        XCTAssertEqual(plain("1:30.5").float, 90.5)
        XCTAssertEqual(plain("1e3").float, 1000)
        XCTAssertEqual(plain("-.inf").float, -.infinity)
        XCTAssertTrue(plain(".nan").float?.isNaN == true)
        XCTAssertEqual(plain("Yes").bool, true)
        XCTAssertEqual(plain("OFF").bool, false)
    }

    /// Through the loader: the booleans and numbers YAML 1.1 allows still work where the keys take them.
    func testThroughTheLoader() throws {
        let configuration = try XCTUnwrap(try? ProxyConfiguration.parse(yaml: Fixture.minimal(plus: """
            log: { access_log: off }
            http: { max_header_count: 0x40 }
            upstream: { unsafe_allow_remote_upstream: no }
            """), directory: Fixture.directory))
        XCTAssertFalse(configuration.log.accessLog)
        XCTAssertEqual(configuration.http.maxHeaderCount, 64)
    }
}
