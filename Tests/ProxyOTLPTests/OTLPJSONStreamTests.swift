import OTLPFixtures
import ProxyJSON
import ProxyOTLP
import XCTest

/// OTLP/JSON read in one pass over the bytes: what is copied as written, what the tokenizer refuses
/// (the same as the strict decoder it replaced), and where the edits go.
final class OTLPJSONStreamTests: XCTestCase {
    let tenant = ResourceAttribute(key: "tenant.id", value: "team-a")
    let added = #"{"key":"tenant.id","value":{"stringValue":"team-a"}}"#

    private func rewritten(_ text: String, signal: OTLPSignal = .traces, limit: Int = .max) throws -> String {
        String(decoding: try OTLPPayload.rewrite(signal, .json, Array(text.utf8), setting: [tenant], limit: limit).body, as: UTF8.self)
    }

    private func assertRefused(
        _ text: String, _ fragment: String, signal: OTLPSignal = .traces, file: StaticString = #filePath, line: UInt = #line
    ) {
        for attributes in [[], [tenant]] {
            XCTAssertThrowsError(try OTLPPayload.rewrite(signal, .json, Array(text.utf8), setting: attributes), text, file: file, line: line) {
                XCTAssertTrue("\($0)".contains(fragment), "\(text): \($0)", file: file, line: line)
            }
        }
        XCTAssertThrowsError(try OTLPPayload.count(signal, .json, Array(text.utf8)), text, file: file, line: line)
    }

    /// A span whose attribute value is `value`, in a one-Resource body.
    private func span(_ value: String) -> String {
        #"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":"#
            + value + #"}]}]}]}]}"#
    }

    func testWhitespaceAndValues_CopiedAsWritten_EditsAtTheEndOfEachList() throws {
        let body = """
            { "resourceSpans" : [
              { "resource" : { "attributes" : [
                  { "key" : "tenant.id", "value" : { "stringValue" : "forged" } } ,
                  { "key" : "service.name", "value" : { "stringValue" : "api\\u00e9" } }
                ] } ,
                "scopeSpans" : [ { "spans" : [ { "name" : "a", "x" : 1.50, "y" : 1E+2, "z" : -0 } ] } ] },
              { "scopeSpans" : [ ] },
              { "resource" : { } , "schemaUrl" : "" },
              { "resource" : null },
              { "resource" : { "attributes" : null } }
            ] }
            """
        let expected = """
            { "resourceSpans" : [
              { "resource" : { "attributes" : [
                  { "key" : "service.name", "value" : { "stringValue" : "api\\u00e9" } },\(added)
                ] } ,
                "scopeSpans" : [ { "spans" : [ { "name" : "a", "x" : 1.50, "y" : 1E+2, "z" : -0 } ] } ] },
              { "scopeSpans" : [ ],"resource":{"attributes":[\(added)]} },
              { "resource" : {"attributes":[\(added)] } , "schemaUrl" : "" },
              { "resource" : {"attributes":[\(added)]} },
              { "resource" : { "attributes" : [\(added)] } }
            ] }
            """
        XCTAssertEqual(try rewritten(body), expected)
        XCTAssertEqual(try rewritten(expected), expected, "rewriting the output gives the same bytes")
        XCTAssertEqual(PayloadCheck.json(.traces, Array(body.utf8), [tenant]), [])
        XCTAssertEqual(try OTLPPayload.count(.traces, .json, Array(body.utf8)).items, 1)
    }

    func testCopiesDropped_FirstMiddleLastAndAll_CommasStayValid() throws {
        let copy = #"{"key":"tenant.id","value":{"stringValue":"x"}}"#
        let other = #"{"key":"a"}"#
        let cases: [(String, String)] = [
            ("[\(copy),\(other)]", "[\(other),\(added)]"),
            ("[\(other),\(copy),\(other)]", "[\(other),\(other),\(added)]"),
            ("[\(other),\(copy)]", "[\(other),\(added)]"),
            ("[\(copy), \(copy) ]", "[\(added) ]"),
            ("[]", "[\(added)]"),
        ]
        for (list, expected) in cases {
            let body = #"{"resourceLogs":[{"resource":{"attributes":"# + list + "}}]}"
            XCTAssertEqual(try rewritten(body, signal: .logs), #"{"resourceLogs":[{"resource":{"attributes":"# + expected + "}}]}", list)
            XCTAssertEqual(PayloadCheck.json(.logs, Array(body.utf8), [tenant]), [], list)
        }
    }

    func testEscapedKey_ComparedDecoded_CopyRemoved() throws {
        for key in [#"tenant\u002eid"#, #"\u0074enant.id"#, #"tenant\u002Eid"#] {
            let body = #"{"resourceSpans":[{"resource":{"attributes":[{"key":""# + key + #"","value":{"stringValue":"forged"}}]}}]}"#
            XCTAssertEqual(try rewritten(body), #"{"resourceSpans":[{"resource":{"attributes":["# + added + "]}}]}", key)
        }
        // A key that only looks alike stays.
        let body = #"{"resourceSpans":[{"resource":{"attributes":[{"key":"tenant\u002fid"}]}}]}"#
        XCTAssertTrue(try rewritten(body).contains(#"tenant\u002fid"#))
    }

    func testKeyStrindex_OnlyZeroAccepted_InAnySpelling() throws {
        for index in ["0", "-0", #""0""#, #""\u0030""#, "null"] {
            let body = #"{"resourceSpans":[{"resource":{"attributes":[{"key":"a","keyStrindex":"# + index + "}]}}]}"
            XCTAssertNoThrow(try rewritten(body), index)
        }
        for index in ["1", "0.0", "0e0", #""00""#, "true", "[]", "{}"] {
            assertRefused(#"{"resourceSpans":[{"resource":{"attributes":[{"key":"a","key_strindex":"# + index + "}]}}]}", "keyStrindex")
        }
    }

    func testDuplicateMembers_RefusedInEveryObject_NamesComparedDecoded() {
        let cases: [(OTLPSignal, String)] = [
            (.traces, #"{"resourceSpans":[],"resourceSpans":[]}"#),
            (.traces, #"{"resourceSpans":[{"resource":{},"resource":{}}]}"#),
            (.traces, #"{"resourceSpans":[{"resource":null,"scopeSpans":[],"resource":{"attributes":[]}}]}"#),
            (.traces, #"{"resourceSpans":[{"resource":{"attributes":[],"attributes":[]}}]}"#),
            (.traces, #"{"resourceSpans":[{"resource":{"attributes":[{"key":"a","key":"tenant.id"}]}}]}"#),
            (.traces, #"{"resourceSpans":[{"scopeSpans":[{"spans":[],"spans":[]}]}]}"#),
            (.metrics, #"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"sum":{},"sum":{}}]}]}]}"#),
            (.traces, #"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"a","name":"b"}]}]}]}"#),
            (.traces, #"{"resourceSpans":[{"scopeSpans":[{"spans":[{"a":{"b":[{"c":1,"\u0063":2}]}}]}]}]}"#),
            (.traces, #"{"other":{"x":1,"y":2,"x":3}}"#),
            (.traces, #"{"":1,"":2}"#),
        ]
        for (signal, body) in cases { assertRefused(body, "duplicate object member", signal: signal) }

        // An object with many members is checked at its end (by sorting), also for a late duplicate.
        let many = (0..<40).map { #""m\#($0)":\#($0)"# }.joined(separator: ",")
        XCTAssertNoThrow(try rewritten(span("{" + many + "}")))
        assertRefused(span("{" + many + #","m7":0}"#), "duplicate object member")
        assertRefused(span("{" + many + #","\u006d39":0}"#), "duplicate object member")
        // Equal names in sibling and nested objects are no duplicates.
        XCTAssertNoThrow(try rewritten(span(#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#)))
    }

    func testNesting_256LevelsAccepted_257Refused() throws {
        // The body's own path takes 9 levels down to the span attribute's value.
        let inner = 256 - 9
        let deep = String(repeating: "[", count: inner) + String(repeating: "]", count: inner)
        XCTAssertNoThrow(try rewritten(span(deep)))
        let tooDeep = String(repeating: "[", count: inner + 1) + String(repeating: "]", count: inner + 1)
        assertRefused(span(tooDeep), "nesting deeper than 256")
        let objects = String(repeating: #"{"a":"#, count: inner) + "1" + String(repeating: "}", count: inner)
        XCTAssertNoThrow(try rewritten(span(objects)))
        // Far deeper than the limit, unterminated: refused without recursion.
        assertRefused(span(String(repeating: "[", count: 100_000)), "nesting deeper than 256")
    }

    func testNumbers_CopiedByteForByte_RangesAsTheStrictDecoder() throws {
        let kept = [
            "9007199254740993", "-9223372036854775808", "9223372036854775807", "0.1", "0.10000000000000001",
            "1E+2", "1e-400", "-0.0", "123.4500", "1.7976931348623157e308", "0.00000000000000000000000000001e330",
        ]
        for number in kept {
            XCTAssertTrue(try rewritten(span(#"{"doubleValue":"# + number + "}")).contains(":" + number + "}"), number)
        }
        for number in ["9223372036854775808", "-9223372036854775809", "18446744073709551615", "1e309", "1.8e308",
                       "100000000000000000000000000000000000000000000000e300"] {
            assertRefused(span(#"{"intValue":"# + number + "}"), "not valid JSON")
        }
        for number in ["01", "-01", "1.", ".5", "+1", "1e", "1e+", "-", "0x1", "1.e3", "NaN", "Infinity", "- 1"] {
            assertRefused(span(#"{"intValue":"# + number + "}"), "not valid JSON")
        }
    }

    func testStrings_EscapesAndUTF8Validated() throws {
        for text in [#"\ud83d\ude00"#, #"\uD83D\uDE00"#, "é€😀", #"\"\\\/\b\f\n\r\t"#, #"\u00e9"#] {
            XCTAssertNoThrow(try rewritten(span(#"{"stringValue":""# + text + #""}"#)), text)
        }
        for text in [#"\ud800"#, #"\ude00"#, #"\ud800\u0041"#, #"\ud800x"#, #"\u0000"#, #"\x"#, #"\u12"#, #"\u12G4"#, "\t", "\n"] {
            assertRefused(span(#"{"stringValue":""# + text + #""}"#), "not valid JSON")
        }
        let span = Array(span(#"{"stringValue":"@@"}"#).utf8)
        let at = span.firstIndex(of: UInt8(ascii: "@"))!
        for bad: [UInt8] in [[0xC0, 0x80], [0xC1, 0xBF], [0xE0, 0x80, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80],
                             [0xF5, 0x80, 0x80, 0x80], [0x80], [0xC3], [0xE2, 0x82], [0xFF]] {
            var bytes = span
            bytes.replaceSubrange(at..<(at + 2), with: bad)
            XCTAssertThrowsError(try OTLPPayload.count(.traces, .json, bytes), "\(bad)") {
                XCTAssertTrue("\($0)".contains("invalid UTF-8"), "\($0)")
            }
        }
        for good: [UInt8] in [[0xC3, 0xA9], [0xE2, 0x82, 0xAC], [0xED, 0x9F, 0xBF], [0xF0, 0x90, 0x80, 0x80], [0xF4, 0x8F, 0xBF, 0xBF]] {
            var bytes = span
            bytes.replaceSubrange(at..<(at + 2), with: good)
            XCTAssertNoThrow(try OTLPPayload.count(.traces, .json, bytes), "\(good)")
        }
    }

    func testGrammar_TopLevelAndTrailingBytes() {
        assertRefused("", "not valid JSON")
        assertRefused("  \n ", "not valid JSON")
        assertRefused(#""resourceSpans""#, "not valid JSON")
        assertRefused("[]", "must be a JSON object")
        assertRefused("[1,]", "not valid JSON")
        assertRefused("{} {}", "not valid JSON")
        assertRefused("{}x", "not valid JSON")
        assertRefused(#"{"resourceSpans":[],}"#, "not valid JSON")
        assertRefused(#"{"resourceSpans" []}"#, "not valid JSON")
        assertRefused(#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"a":tru}]}]}]}"#, "not valid JSON")
        assertRefused("\u{FEFF}{}", "not valid JSON")
        XCTAssertEqual(try OTLPPayload.count(.traces, .json, Array(" {} \r\n\t".utf8)).items, 0)
    }

    func testSyntaxRefusalWinsOverMeaning_AndPositionIsReported() {
        // The resource is refused for its meaning first, but the body is not JSON at all.
        let body = "{\"resourceSpans\":[{\"resource\":\"secret\"}],\n  \"x\": secret}"
        XCTAssertThrowsError(try OTLPPayload.count(.traces, .json, Array(body.utf8))) {
            XCTAssertTrue("\($0)".contains("not valid JSON (line 2, column 8"), "\($0)")
            XCTAssertFalse("\($0)".contains("secret"), "\($0)")
        }
    }

    func testLimit_OnTheOutput_MalformedStillRefusedAsSuch() throws {
        let body = #"{"resourceSpans":[{},{},{}]}"#
        let output = try rewritten(body)
        XCTAssertEqual(try rewritten(body, limit: output.utf8.count), output)
        XCTAssertThrowsError(try rewritten(body, limit: output.utf8.count - 1)) {
            XCTAssertTrue(($0 as? OTLPBodyError)?.exceedsLimit == true, "\($0)")
        }
        XCTAssertThrowsError(try rewritten(#"{"resourceSpans":[{},{},{}]"#, limit: 10)) {
            XCTAssertEqual(($0 as? OTLPBodyError)?.exceedsLimit, false, "\($0)")
        }
    }

    func testMetrics_DataPointsCounted_NullDataIgnored() throws {
        let body = #"""
        {"resource_metrics":[{"scope_metrics":[{"metrics":[
          {"gauge":null,"sum":{"data_points":[{},{"asInt":"1"}]}},
          {"exponential_histogram":{"dataPoints":[{}]}},
          {"summary":{"dataPoints":null}},
          {"name":"none"}
        ]}]}]}
        """#
        XCTAssertEqual(try OTLPPayload.count(.metrics, .json, Array(body.utf8)).items, 3)
        XCTAssertEqual(PayloadCheck.json(.metrics, Array(body.utf8), [tenant]), [])
        assertRefused(#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"sum":{"dataPoints":[1]}}]}]}]}"#, "must be objects", signal: .metrics)
        assertRefused(#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"sum":[]}]}]}]}"#, "sum must be an object", signal: .metrics)
        assertRefused(#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"gauge":{},"sum":1}]}]}]}"#, "more than one", signal: .metrics)
    }
}
