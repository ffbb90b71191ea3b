import OTLPFixtures
import ProxyJSON
import ProxyOTLP
import XCTest

/// OTLP/JSON: edited in one pass over the bytes; values other than the attribute read back the same.
final class OTLPPayloadJSONTests: XCTestCase {
    let tenant = ResourceAttribute(key: "tenant.id", value: "team-a")

    private func rewrite(_ signal: OTLPSignal, _ text: String) throws -> JSONValue {
        let output = try OTLPPayload.rewrite(signal, .json, Array(text.utf8), setting: [tenant]).body
        return try JSONValue.parse(output)
    }

    private let expectedAttribute = JSONValue.object([
        (key: "key", value: .string("tenant.id")),
        (key: "value", value: .object([(key: "stringValue", value: .string("team-a"))])),
    ])

    func testCamelCase_EveryResource_CopyReplaced_MissingAndNullResourceGetOne() throws {
        let body = #"""
        {"resourceSpans":[
          {"resource":{"attributes":[{"key":"tenant.id","value":{"stringValue":"forged"}},{"key":"service.name","value":{"stringValue":"api"}}]},
           "scopeSpans":[{"spans":[{"name":"a"},{"name":"b"}]}]},
          {"scopeSpans":[{"spans":[{"name":"c"}]}]},
          {"resource":null,"scopeSpans":[]}
        ]}
        """#
        let output = try rewrite(.traces, body)
        let resources = try XCTUnwrap(output["resourceSpans"]?.arrayValue)
        XCTAssertEqual(resources.count, 3)
        XCTAssertEqual(resources[0]["resource"]?["attributes"]?.arrayValue?.count, 2)
        XCTAssertEqual(resources[0]["resource"]?["attributes"]?.arrayValue?.first?["key"], .string("service.name"))
        for resource in resources {
            XCTAssertEqual(resource["resource"]?["attributes"]?.arrayValue?.last, expectedAttribute)
        }
        XCTAssertEqual(PayloadCheck.json(.traces, Array(body.utf8), [tenant]), [])
        XCTAssertEqual(try OTLPPayload.count(.traces, .json, Array(body.utf8)).items, 3)
    }

    func testSnakeCase_EditedUnderTheClientsNames() throws {
        let body = #"{"resource_logs":[{"resource":{"attributes":[]},"scope_logs":[{"log_records":[{},{}]}]}]}"#
        let output = try rewrite(.logs, body)
        XCTAssertEqual(output["resource_logs"]?.arrayValue?.first?["resource"]?["attributes"], .array([expectedAttribute]))
        XCTAssertEqual(try OTLPPayload.rewrite(.logs, .json, Array(body.utf8), setting: [tenant]).summary.items, 2)
        XCTAssertEqual(PayloadCheck.json(.logs, Array(body.utf8), [tenant]), [])
    }

    func testBothSpellingsOfOneField_Refused() {
        for body in [
            #"{"resourceSpans":[],"resource_spans":[]}"#,
            #"{"resourceSpans":[{"scopeSpans":[],"scope_spans":[]}]}"#,
            #"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"sum":{"dataPoints":[],"data_points":[]}}]}]}]}"#,
            #"{"resourceSpans":[{"resource":{"attributes":[{"key":"a","keyStrindex":0,"key_strindex":0}]}}]}"#,
        ] {
            XCTAssertThrowsError(try OTLPPayload.count(body.contains("Metrics") ? .metrics : .traces, .json, Array(body.utf8)), body) {
                XCTAssertTrue("\($0)".contains("given as both"), "\($0)")
            }
        }
    }

    func testNumbersAndEscapes_ReadBackTheSame() throws {
        // int64 past 2^53 as a number, the largest uint64 as a string, a real that has no short
        // exact form, escapes and non-ASCII text.
        let body = #"""
        {"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m\u00e9\n\"q\"\/","gauge":{"dataPoints":[
          {"asInt":9007199254740993,"timeUnixNano":"18446744073709551615","asDouble":0.1},
          {"asInt":-9223372036854775808,"asDouble":1e300}]}}]}]}]}
        """#
        let output = try OTLPPayload.rewrite(.metrics, .json, Array(body.utf8), setting: [tenant]).body
        let text = String(decoding: output, as: UTF8.self)
        XCTAssertTrue(text.contains("9007199254740993"), text)
        XCTAssertTrue(text.contains("-9223372036854775808"), text)
        let point = try JSONValue.parse(output)["resourceMetrics"]?.arrayValue?[0]["scopeMetrics"]?.arrayValue?[0]["metrics"]?.arrayValue?[0]
        XCTAssertEqual(point?["name"], .string("mé\n\"q\"/"))
        XCTAssertEqual(point?["gauge"]?["dataPoints"]?.arrayValue?[0]["asDouble"], .number(0.1))
        XCTAssertEqual(point?["gauge"]?["dataPoints"]?.arrayValue?[0]["timeUnixNano"], .string("18446744073709551615"))
        XCTAssertEqual(PayloadCheck.json(.metrics, Array(body.utf8), [tenant]), [])
    }

    func testRefused_WithTextsThatQuoteNothing() {
        let cases: [(OTLPSignal, String, String)] = [
            (.metrics, #"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"gauge":{},"sum":{}}]}]}]}"#, "more than one"),
            (.traces, #"{"resourceSpans":[{"resource":{"attributes":[{"key":"a","keyStrindex":3}]}}]}"#, "keyStrindex"),
            (.traces, #"{"resourceSpans":[{"resource":{"attributes":[{"key":7}]}}]}"#, "must be a string"),
            (.traces, #"{"resourceSpans":[{"resource":{"attributes":["secret-attr"]}}]}"#, "must be objects"),
            (.traces, #"{"resourceSpans":[{"scopeSpans":[{"spans":[null]}]}]}"#, "must be objects"),
            (.traces, #"{"resourceSpans":[{"resource":"secret-res"}]}"#, "must be an object"),
            (.traces, #"{"resourceSpans":[{"resource":{"attributes":[{"key":"secret-\ud800"}]}}]}"#, "not valid JSON"),
            (.traces, #"{"resourceSpans":[], "secret-trailing"}"#, "not valid JSON"),
            (.traces, #"{"resourceSpans":[{"scopeSpans":[{"spans":[{"x":18446744073709551615}]}]}]}"#, "not valid JSON"),
        ]
        for (signal, body, fragment) in cases {
            XCTAssertThrowsError(try OTLPPayload.rewrite(signal, .json, Array(body.utf8), setting: [tenant]), body) {
                XCTAssertTrue("\($0)".contains(fragment), "\(body): \($0)")
                XCTAssertFalse("\($0)".contains("secret"), "\(body): \($0)")
            }
        }
    }
}
