import XCTest
import ProxyJSON

/// Parsing and encoding through jansson: strictness (duplicates, UTF-8, depth, integer
/// range) and faithful round trips.
final class JSONValueTests: XCTestCase {
    private func parse(_ text: String, maxDepth: Int = 64, scalars: Bool = false) throws -> JSONValue {
        try JSONValue.parse(Array(text.utf8), maxDepth: maxDepth, allowScalarTopLevel: scalars)
    }

    private func expectError(_ bytes: [UInt8], maxDepth: Int = 64, file: StaticString = #filePath, line: UInt = #line) -> JSONError? {
        do {
            let value = try JSONValue.parse(bytes, maxDepth: maxDepth)
            XCTFail("expected a parse error, got \(value)", file: file, line: line)
            return nil
        } catch {
            return error
        }
    }

    func testParse_ObjectMembers_KeepDocumentOrder() throws {
        let value = try parse(#"{"z":1,"a":"x","m":[true,false,null],"b":1.5}"#)
        guard case .object(let members) = value else { return XCTFail("not an object: \(value)") }
        XCTAssertEqual(members.map(\.key), ["z", "a", "m", "b"])
        XCTAssertEqual(value["z"], .integer(1))
        XCTAssertEqual(value["a"]?.stringValue, "x")
        XCTAssertEqual(value["m"]?.arrayValue, [.bool(true), .bool(false), .null])
        XCTAssertEqual(value["b"], .number(1.5))
        XCTAssertNil(value["missing"])
    }

    func testRoundTrip_EncodedIsCompactAndOrderPreserving() throws {
        let text = #"{"z":1,"a":"x\"y\\\n","m":[true,false,null,{"k":[]}],"b":1.5,"e":{}}"#
        let value = try parse(text)
        XCTAssertEqual(String(decoding: value.encoded(), as: UTF8.self), text)
        XCTAssertEqual(try JSONValue.parse(value.encoded()), value)
    }

    func testRoundTrip_UnicodeStrings() throws {
        let value = JSONValue.object([(key: "名前", value: .string("héllo 🌍")), (key: "e", value: .string(""))])
        XCTAssertEqual(try JSONValue.parse(value.encoded()), value)
        let escaped = try parse(#"["\u00e9\ud83c\udf0d"]"#)
        XCTAssertEqual(escaped.arrayValue?.first?.stringValue, "é🌍")
    }

    func testEncoded_BuiltInSwift_MatchesExpectedBytes() {
        let value = JSONValue.object([
            (key: "code", value: .integer(16)),
            (key: "message", value: .string("unauthenticated")),
            (key: "details", value: .array([])),
        ])
        XCTAssertEqual(String(decoding: value.encoded(), as: UTF8.self),
                       #"{"code":16,"message":"unauthenticated","details":[]}"#)
    }

    func testEncoded_NonFiniteNumber_BecomesNull() {
        XCTAssertEqual(String(decoding: JSONValue.array([.number(.nan), .number(.infinity)]).encoded(), as: UTF8.self),
                       "[null,null]")
    }

    func testParse_DuplicateMember_Rejected() {
        let error = expectError(Array(#"{"alg":"RS256","alg":"none"}"#.utf8))
        XCTAssertEqual(error?.line, 1)
        XCTAssertTrue(error?.message.contains("duplicate") ?? false, error?.message ?? "")
    }

    func testParse_DuplicateMemberNested_Rejected() {
        XCTAssertNotNil(expectError(Array(#"{"a":{"x":1,"x":2}}"#.utf8)))
    }

    func testParse_DepthAtLimit_Accepted_BeyondLimit_Rejected() throws {
        let ok = String(repeating: "[", count: 8) + String(repeating: "]", count: 8)
        XCTAssertNoThrow(try parse(ok, maxDepth: 8))
        let deep = String(repeating: "[", count: 9) + String(repeating: "]", count: 9)
        let error = expectError(Array(deep.utf8), maxDepth: 8)
        XCTAssertEqual(error?.column, 9)
        XCTAssertTrue(error?.message.contains("deeper than 8") ?? false, error?.message ?? "")
    }

    func testParse_BracketsInsideStrings_DoNotCountAsDepth() throws {
        let value = try parse(#"{"s":"[[[[{{{{\"[[["}"#, maxDepth: 1)
        XCTAssertEqual(value["s"]?.stringValue, #"[[[[{{{{"[[["#)
    }

    func testParse_HugeNesting_RejectedWithoutRecursion() {
        let bytes = [UInt8](repeating: UInt8(ascii: "["), count: 1_000_000)
        XCTAssertNotNil(expectError(bytes))
    }

    func testParse_InvalidUTF8_Rejected() {
        XCTAssertNotNil(expectError([UInt8(ascii: "["), UInt8(ascii: "\""), 0xC3, 0x28, UInt8(ascii: "\""), UInt8(ascii: "]")]))
        XCTAssertNotNil(expectError([UInt8(ascii: "["), UInt8(ascii: "\""), 0xFF, UInt8(ascii: "\""), UInt8(ascii: "]")]))
        // Overlong encoding of "/".
        XCTAssertNotNil(expectError([UInt8(ascii: "["), UInt8(ascii: "\""), 0xC0, 0xAF, UInt8(ascii: "\""), UInt8(ascii: "]")]))
    }

    func testParse_LoneSurrogateEscape_Rejected() {
        XCTAssertNotNil(expectError(Array(#"["\ud800"]"#.utf8)))
    }

    func testParse_NulEscape_Rejected() {
        XCTAssertNotNil(expectError(Array(#"["a\u0000b"]"#.utf8)))
    }

    func testParse_BigIntegers_ExactAtInt64Limits() throws {
        let value = try parse("[9223372036854775807,-9223372036854775808,0]")
        XCTAssertEqual(value.arrayValue, [.integer(.max), .integer(.min), .integer(0)])
        XCTAssertEqual(String(decoding: value.encoded(), as: UTF8.self), "[9223372036854775807,-9223372036854775808,0]")
    }

    func testParse_IntegerBeyondInt64_Rejected() {
        let error = expectError(Array("[9223372036854775808]".utf8))
        XCTAssertTrue(error?.message.contains("too big") ?? false, error?.message ?? "")
    }

    func testParse_RealsAndIntegers_StayDistinct() throws {
        let value = try parse("[1,1.0,1e3,-0.5]")
        XCTAssertEqual(value.arrayValue, [.integer(1), .number(1.0), .number(1000), .number(-0.5)])
        XCTAssertNotEqual(JSONValue.integer(1), JSONValue.number(1))
    }

    func testParse_ScalarTopLevel_OnlyWithFlag() throws {
        XCTAssertNotNil(expectError(Array("42".utf8)))
        XCTAssertEqual(try parse("42", scalars: true), .integer(42))
        XCTAssertEqual(try parse(#""x""#, scalars: true), .string("x"))
    }

    func testParse_TrailingGarbageAndEmpty_Rejected() {
        XCTAssertNotNil(expectError(Array("{} x".utf8)))
        XCTAssertNotNil(expectError([]))
        XCTAssertNotNil(expectError(Array(#"{"a":1,}"#.utf8)))
    }

    func testParseError_NeverQuotesInput() {
        let secret = "s3cr3t-token-value"
        let error = expectError(Array(#"{"token": \#(secret)}"#.utf8))
        XCTAssertNotNil(error)
        XCTAssertFalse(error?.description.contains(secret) ?? true, error?.description ?? "")
        XCTAssertFalse(error?.description.contains("s3cr3t") ?? true, error?.description ?? "")
    }

    func testParse_NonContiguousCollection_Works() throws {
        let bytes = Array(#"{"a":[1,2]}"#.utf8)
        let lazy = bytes.lazy.map { $0 }  // no contiguous storage
        XCTAssertEqual(try JSONValue.parse(lazy)["a"], .array([.integer(1), .integer(2)]))
    }

    func testEquality_ObjectMemberOrderMatters() {
        let ab = JSONValue.object([(key: "a", value: .null), (key: "b", value: .null)])
        let ba = JSONValue.object([(key: "b", value: .null), (key: "a", value: .null)])
        XCTAssertNotEqual(ab, ba)
        XCTAssertEqual(ab, JSONValue.object([(key: "a", value: .null), (key: "b", value: .null)]))
    }
}
