import OTLPFixtures
import ProxyOTLP
import XCTest

/// The protobuf wire editor: the attribute set on every Resource, client copies gone however they
/// were hidden, everything else byte for byte, malformed bodies refused with texts that quote nothing.
final class OTLPPayloadRewriteTests: XCTestCase {
    let tenant = ResourceAttribute(key: Fixtures.tenantKey, value: "team-a")

    private func rewrite(_ signal: OTLPSignal, _ body: [UInt8], _ attributes: [ResourceAttribute]? = nil) throws -> [UInt8] {
        try OTLPPayload.rewrite(signal, .protobuf, body, setting: attributes ?? [tenant]).body
    }

    private func assertChecksHold(_ signal: OTLPSignal, _ body: [UInt8], _ attributes: [ResourceAttribute],
                                  file: StaticString = #filePath, line: UInt = #line) {
        guard let problems = PayloadCheck.protobuf(signal, body, attributes) else {
            return XCTFail("refused", file: file, line: line)
        }
        XCTAssertEqual(problems, [], file: file, line: line)
    }

    func testTraces_SeveralResourceSpans_EachResourceGetsTheAttributeOnce() throws {
        let body = Fixtures.traces([[2, 3], [1], []])
        let output = try rewrite(.traces, body)
        let view = try RequestView(output)
        XCTAssertEqual(view.resources.count, 3)
        for resource in view.resources {
            XCTAssertEqual(resource.attributes.map { String(decoding: $0.key, as: UTF8.self) }, ["service.name", "tenant.id"])
            XCTAssertEqual(Array(resource.attributes[1].bytes), Fixtures.keyValue("tenant.id", "team-a"))
        }
        XCTAssertEqual(try OTLPPayload.count(.traces, .protobuf, output).items, 6)
        assertChecksHold(.traces, body, [tenant])
    }

    func testClientCopies_InBothResourceFieldsAndByRepeatedKey_Removed() throws {
        let output = try rewrite(.traces, Fixtures.tracesWithClientCopies())
        // Expected: the copies and the KeyValue whose last key is tenant.id gone, the KeyValue whose
        // last key is `kept` still there, the proxy's KeyValue at the end of the second `resource`.
        var expected = ProtoWriter()
        expected.message(1) { resourceX in
            resourceX.message(1) { resource in
                resource.bytes(1, Fixtures.keyValue("service.name", "checkout"))
                resource.uint(2, 3)
            }
            resourceX.message(2) { scope in
                scope.message(2) { $0.string(5, "a") }
                scope.message(2) { $0.string(5, "b") }
            }
            resourceX.message(1) { resource in
                resource.message(1) { kv in
                    kv.string(1, Fixtures.tenantKey)
                    kv.message(2) { $0.string(1, "value-of-kept") }
                    kv.string(1, "kept")
                }
                resource.bytes(1, Fixtures.keyValue(Fixtures.tenantKey, "team-a"))
            }
        }
        XCTAssertEqual(output, expected.bytes)
        XCTAssertFalse(String(decoding: output, as: UTF8.self).contains("forged"))
        assertChecksHold(.traces, Fixtures.tracesWithClientCopies(), [tenant])
    }

    func testResourceLogsWithoutResource_GetsOneHoldingOnlyTheAttribute() throws {
        let output = try rewrite(.logs, Fixtures.logsWithoutResource())
        var expected = ProtoWriter()
        expected.message(1) { resourceX in
            resourceX.message(2) { scope in scope.message(2) { $0.fixed64(1, 1) } }
            resourceX.string(3, "https://opentelemetry.io/schemas/1.26.0")
            resourceX.message(1) { $0.bytes(1, Fixtures.keyValue(Fixtures.tenantKey, "team-a")) }
        }
        expected.message(1) { resourceX in
            resourceX.message(1) { resource in
                resource.bytes(1, Fixtures.keyValue("host.name", "h1"))
                resource.bytes(1, Fixtures.keyValue(Fixtures.tenantKey, "team-a"))
            }
            resourceX.message(2) { scope in
                scope.message(2) { $0.fixed64(1, 2) }
                scope.message(2) { $0.fixed64(1, 3) }
            }
        }
        XCTAssertEqual(output, expected.bytes)
    }

    func testUnknownFieldsAtEveryLevel_KeptByteForByte() throws {
        let body = Fixtures.metricsWithUnknownFields()
        let output = try rewrite(.metrics, body)
        // The same builder with the KeyValue appended to the Resource: only it and the two lengths differ.
        var added = ProtoWriter()
        added.bytes(1, Fixtures.keyValue("tenant.id", "team-a"))
        XCTAssertEqual(output, Fixtures.metricsWithUnknownFields(resourceTail: added.bytes))
        XCTAssertNotEqual(output.count - body.count, added.bytes.count, "the ResourceMetrics length prefix grew a byte")
        assertChecksHold(.metrics, body, [tenant])
    }

    func testProfiles_DictionaryKept_ProfilesCounted() throws {
        let body = Fixtures.profiles()
        let (output, summary) = try OTLPPayload.rewrite(.profiles, .protobuf, body, setting: [tenant])
        XCTAssertEqual(summary.items, 3)
        let dictionaries = try RequestView(output).others.filter { $0.number == 2 }
        XCTAssertEqual(dictionaries, try RequestView(body).others.filter { $0.number == 2 })
        XCTAssertEqual(dictionaries.count, 1)
        assertChecksHold(.profiles, body, [tenant])
    }

    func testTwoAttributes_BothSetInOrder_RepeatedKeyTakesTheLast() throws {
        let attributes = [
            ResourceAttribute(key: "tenant.id", value: "stale"), ResourceAttribute(key: "principal", value: "collector"),
            ResourceAttribute(key: "tenant.id", value: "team-a"),
        ]
        let output = try rewrite(.logs, Fixtures.logs(1), attributes)
        let keys = try RequestView(output).resources[0].attributes.map { String(decoding: $0.key, as: UTF8.self) }
        XCTAssertEqual(keys, ["principal", "tenant.id"])
        assertChecksHold(.logs, Fixtures.logs(1), [attributes[1], attributes[2]])
    }

    func testEveryFixture_EverySignal_ChecksHold() throws {
        let attributes = [tenant, ResourceAttribute(key: "principal", value: "ünïcode \"quoted\"")]
        for (name, body) in Fixtures.named {
            for signal in OTLPSignal.allCases {
                guard let problems = PayloadCheck.protobuf(signal, body, attributes) else { continue }
                XCTAssertEqual(problems, [], "\(name) as \(signal)")
            }
        }
    }

    func testNoAttributes_BodyUnchanged() throws {
        let body = Fixtures.tracesWithClientCopies()
        XCTAssertEqual(try rewrite(.traces, body, []), body)
    }

    func testOverlongLengthPrefix_WrittenMinimally_RestKept() throws {
        // resource_logs with its length as a two-byte varint (0x85 0x00 = 5): legal, not minimal.
        var scope = ProtoWriter()
        scope.message(2) { $0.message(2) { $0.uint(2, 9) } }
        let body: [UInt8] = [0x0A, UInt8(scope.bytes.count) | 0x80, 0x00] + scope.bytes
        let output = try rewrite(.logs, body)
        var expected = ProtoWriter()
        expected.message(1) { resourceX in
            resourceX.bytes += scope.bytes
            resourceX.message(1) { $0.bytes(1, Fixtures.keyValue("tenant.id", "team-a")) }
        }
        XCTAssertEqual(output, expected.bytes)
    }

    func testMetrics_DataOneofRepeated_CountsWhatAParserKeeps() throws {
        func metric(_ members: [(UInt64, Int)]) -> [UInt8] {
            var request = ProtoWriter()
            request.message(1) { $0.message(2) { $0.message(2) { metric in
                for (field, points) in members {
                    metric.message(field) { data in for _ in 0..<points { data.message(1) { $0.fixed64(3, 1) } } }
                }
            } } }
            return request.bytes
        }
        XCTAssertEqual(try OTLPPayload.count(.metrics, .protobuf, metric([(5, 4), (7, 1)])).items, 1, "a later member replaces")
        XCTAssertEqual(try OTLPPayload.count(.metrics, .protobuf, metric([(7, 2), (7, 3)])).items, 5, "the same member merges")
        XCTAssertEqual(try OTLPPayload.count(.metrics, .protobuf, metric([(5, 2), (7, 1), (5, 3)])).items, 3)
    }

    func testOutputPastTheLimit_RefusedAsTooLarge() throws {
        // 100 empty ResourceSpans (two bytes each) each gain a Resource with the attribute.
        let body: [UInt8] = Array([[UInt8]](repeating: [0x0A, 0x00], count: 100).joined())
        let output = try rewrite(.traces, body)
        XCTAssertEqual(try RequestView(output).resources.count, 100)
        XCTAssertGreaterThan(output.count, 10 * body.count)
        XCTAssertEqual(try OTLPPayload.rewrite(.traces, .protobuf, body, setting: [tenant], limit: output.count).body, output)
        for encoding in [OTLPPayloadEncoding.protobuf, .json] {
            let input = encoding == .protobuf ? body : Array(#"{"resourceSpans":[{},{},{},{},{},{}]}"#.utf8)
            XCTAssertThrowsError(try OTLPPayload.rewrite(.traces, encoding, input, setting: [tenant], limit: input.count * 2)) {
                XCTAssertEqual(($0 as? OTLPBodyError)?.exceedsLimit, true, "\($0)")
            }
        }
    }

    // MARK: - Refused

    /// A ResourceSpans whose Resource holds `keyValue`.
    private func tracesWithKeyValue(_ keyValue: [UInt8]) -> [UInt8] {
        var request = ProtoWriter()
        request.message(1) { $0.message(1) { $0.bytes(1, keyValue) } }
        return request.bytes
    }

    private func assertRefused(_ body: [UInt8], _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try OTLPPayload.count(.traces, .protobuf, body), file: file, line: line) {
            XCTAssertTrue("\($0)".contains(fragment), "\($0)", file: file, line: line)
        }
        XCTAssertThrowsError(try rewrite(.traces, body), file: file, line: line)
    }

    func testKeyStrindex_Refused_ZeroAndItsTruncatedFormAccepted() throws {
        var named = ProtoWriter()
        named.uint(3, 7)
        named.message(2) { $0.string(1, "team-b") }
        assertRefused(tracesWithKeyValue(named.bytes), "key_strindex")
        // int32 keeps the low 32 bits: 2^32 reads as index 0, which names no key.
        for value: UInt64 in [0, 1 << 32] {
            var unnamed = ProtoWriter()
            unnamed.string(1, "a")
            unnamed.uint(3, value)
            XCTAssertNoThrow(try rewrite(.traces, tracesWithKeyValue(unnamed.bytes)))
        }
    }

    func testKeyNotUTF8_Refused_TextQuotesNothing() {
        var keyValue = ProtoWriter()
        keyValue.bytes(1, Array("secret-".utf8) + [0xC0, 0x80])  // overlong NUL
        assertRefused(tracesWithKeyValue(keyValue.bytes), "not valid UTF-8")
        XCTAssertThrowsError(try rewrite(.traces, tracesWithKeyValue(keyValue.bytes))) {
            XCTAssertFalse("\($0)".contains("secret"))
        }
    }

    func testKnownFieldsWithWrongWireType_Refused() {
        var keyAsVarint = ProtoWriter()
        keyAsVarint.uint(1, 1)
        assertRefused(tracesWithKeyValue(keyAsVarint.bytes), "KeyValue field 1 has wire type 0")
        var valueAsFixed = ProtoWriter()
        valueAsFixed.fixed32(2, 1)
        assertRefused(tracesWithKeyValue(valueAsFixed.bytes), "KeyValue field 2 has wire type 5")
        var resourceAsVarint = ProtoWriter()
        resourceAsVarint.message(1) { $0.uint(1, 1) }
        assertRefused(resourceAsVarint.bytes, "ResourceSpans field 1 has wire type 0")
        var droppedAsBytes = ProtoWriter()
        droppedAsBytes.message(1) { $0.message(1) { $0.string(2, "x") } }
        assertRefused(droppedAsBytes.bytes, "Resource field 2 has wire type 2")
        var spanAsFixed = ProtoWriter()
        spanAsFixed.message(1) { $0.message(2) { $0.fixed64(2, 1) } }
        assertRefused(spanAsFixed.bytes, "ScopeSpans field 2 has wire type 1")
    }

    func testMalformedFraming_Refused() {
        // A KeyValue cut short inside its key: the Resource's length covers bytes that are not a field.
        var truncated = ProtoWriter()
        truncated.message(1) { $0.message(1) { $0.bytes(1, [0x0A, 0x09] + Array("tenant".utf8)) } }
        assertRefused(truncated.bytes, "past the end")
        assertRefused([0x0A, 0x02, 0x0B, 0x0C], "wire type 3")  // a group inside ResourceSpans
        assertRefused([0x0A, 0x02, 0x00, 0x00], "field number 0")
        assertRefused([0x0A, 0x01, 0x8A], "truncated protobuf varint")
    }
}
