import XCTest
import OTLPFixtures
import ProxyOTLP

/// Counting items in OTLP export requests without I/O: protobuf built by hand, JSON as
/// the OTLP/JSON exporters write it.
final class OTLPPayloadCountTests: XCTestCase {
    func testProtobufTraces_SpansAcrossResourcesAndScopes_Counted() throws {
        XCTAssertEqual(try count(.traces, .protobuf, Fixtures.traces([[2, 3], [1], []])), 6)
    }

    func testProtobufLogs_RecordsCounted() throws {
        XCTAssertEqual(try count(.logs, .protobuf, Fixtures.logs(4)), 4)
    }

    func testProtobufMetrics_EveryDataKind_PointsCounted() throws {
        // gauge(5), sum(7), histogram(9), exponential_histogram(10), summary(11); field 12 is not data.
        let body = Fixtures.metrics([(5, 1), (7, 2), (9, 3), (10, 4), (11, 5), (12, 100)])
        XCTAssertEqual(try count(.metrics, .protobuf, body), 15)
    }

    func testProtobuf_EmptyRequest_CountsZero() throws {
        for signal in OTLPSignal.allCases {
            XCTAssertEqual(try count(signal, .protobuf, []), 0)
        }
    }

    func testProtobuf_TracesBodyPostedAsLogs_CountsByStructure() throws {
        // Same nesting shape: a traces body read as logs finds the same number of items.
        XCTAssertEqual(try count(.logs, .protobuf, Fixtures.traces([[3]])), 3)
    }

    func testProtobuf_TruncatedLength_Rejected() {
        var body = Fixtures.traces([[2]])
        body.removeLast(4)
        XCTAssertThrowsError(try count(.traces, .protobuf, body))
    }

    func testProtobuf_LengthPastEnd_Rejected() {
        var writer = ProtoWriter()
        writer.key(1, 2)
        writer.varint(1000)
        writer.bytes += [1, 2, 3]
        XCTAssertThrowsError(try count(.traces, .protobuf, writer.bytes)) {
            XCTAssertTrue("\($0)".contains("past the end"), "\($0)")
        }
    }

    func testProtobuf_TruncatedVarint_Rejected() {
        XCTAssertThrowsError(try count(.traces, .protobuf, [0x08, 0xFF, 0xFF]))
    }

    func testProtobuf_OverlongVarint_Rejected() {
        XCTAssertThrowsError(try count(.traces, .protobuf, [0x08] + [UInt8](repeating: 0xFF, count: 10) + [0x01]))
    }

    func testProtobuf_GroupWireType_Rejected() {
        XCTAssertThrowsError(try count(.traces, .protobuf, [0x0B, 0x0C]))  // field 1 start/end group
    }

    func testProtobuf_FieldNumberZero_Rejected() {
        XCTAssertThrowsError(try count(.traces, .protobuf, [0x00, 0x01]))
    }

    func testProtobuf_KnownFieldWithWrongWireType_Rejected() {
        var writer = ProtoWriter()
        writer.uint(1, 5)  // resource_spans as a varint
        XCTAssertThrowsError(try count(.traces, .protobuf, writer.bytes))
    }

    func testProtobuf_UnknownFieldsOfEveryWireType_Skipped() throws {
        var writer = ProtoWriter()
        writer.uint(50, 1)
        writer.fixed64(51, 2)
        writer.fixed32(52, 3)
        writer.string(53, "x")
        writer.bytes += Fixtures.traces([[2]])
        XCTAssertEqual(try count(.traces, .protobuf, writer.bytes), 2)
    }

    func testJSONTraces_CamelCase_Counted() throws {
        let body = #"{"resourceSpans":[{"resource":{},"scopeSpans":[{"scope":{"name":"x"},"spans":[{"name":"a"},{"name":"b"}]},{"spans":[{}]}]},{"scopeSpans":[]}]}"#
        XCTAssertEqual(try count(.traces, .json, Array(body.utf8)), 3)
    }

    func testJSONLogs_SnakeCase_Counted() throws {
        let body = #"{"resource_logs":[{"scope_logs":[{"log_records":[{},{}]}]}]}"#
        XCTAssertEqual(try count(.logs, .json, Array(body.utf8)), 2)
    }

    func testJSONMetrics_EveryDataKind_PointsCounted() throws {
        let body = #"""
        {"resourceMetrics":[{"scopeMetrics":[{"metrics":[
          {"name":"g","gauge":{"dataPoints":[{"asInt":"1"}]}},
          {"name":"s","sum":{"dataPoints":[{},{}],"aggregationTemporality":2}},
          {"name":"h","histogram":{"dataPoints":[{},{},{}]}},
          {"name":"e","exponentialHistogram":{"dataPoints":[{}]}},
          {"name":"q","summary":{"dataPoints":[{},{}]}},
          {"name":"empty"}
        ]}]}]}
        """#
        XCTAssertEqual(try count(.metrics, .json, Array(body.utf8)), 9)
    }

    func testJSON_EmptyObjectAndNulls_CountZero() throws {
        XCTAssertEqual(try count(.traces, .json, Array("{}".utf8)), 0)
        XCTAssertEqual(try count(.traces, .json, Array(#"{"resourceSpans":null}"#.utf8)), 0)
    }

    func testJSON_WrongShapes_Rejected() {
        for body in [#"[]"#, #"{"resourceSpans":{}}"#, #"{"resourceSpans":[1]}"#, #"{"resourceSpans":[{"scopeSpans":"x"}]}"#,
                     #"{"resourceSpans":[],"resourceSpans":[]}"#, "not json"] {
            XCTAssertThrowsError(try count(.traces, .json, Array(body.utf8)), body)
        }
    }

    /// The item count, as `OTLPPayload.count` and `rewrite` (which must agree) report it.
    private func count(_ signal: OTLPSignal, _ encoding: OTLPPayloadEncoding, _ body: [UInt8]) throws -> Int {
        let counted = try OTLPPayload.count(signal, encoding, body).items
        let rewritten = try OTLPPayload.rewrite(signal, encoding, body, setting: [ResourceAttribute(key: "k", value: "v")])
        XCTAssertEqual(rewritten.summary.items, counted, "rewrite and count disagree")
        return counted
    }
}
