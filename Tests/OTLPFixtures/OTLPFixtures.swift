// OTLP export requests built by hand in protobuf, for the test targets that read payloads.

/// Builds protobuf messages by hand, the way the OTLP exporters encode them.
public struct ProtoWriter {
    public var bytes: [UInt8] = []

    public init() {}

    public mutating func varint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    public mutating func key(_ field: UInt64, _ wireType: UInt64) { varint(field << 3 | wireType) }

    public mutating func message(_ field: UInt64, _ body: (inout ProtoWriter) -> Void) {
        var inner = ProtoWriter()
        body(&inner)
        bytes(field, inner.bytes)
    }

    public mutating func bytes(_ field: UInt64, _ payload: [UInt8]) {
        key(field, 2)
        varint(UInt64(payload.count))
        bytes += payload
    }

    public mutating func string(_ field: UInt64, _ text: String) { bytes(field, Array(text.utf8)) }
    public mutating func uint(_ field: UInt64, _ value: UInt64) { key(field, 0); varint(value) }
    public mutating func fixed64(_ field: UInt64, _ value: UInt64) {
        key(field, 1)
        for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8((value >> UInt64(shift)) & 0xFF)) }
    }
    public mutating func fixed32(_ field: UInt64, _ value: UInt32) {
        key(field, 5)
        for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8((value >> UInt32(shift)) & 0xFF)) }
    }
}

/// OTLP request fixtures with known item counts.
public enum Fixtures {
    /// ExportTraceServiceRequest: one ResourceSpans per element of `layout`, one ScopeSpans
    /// per inner element holding that many spans; scalar and unknown fields sprinkled in at
    /// every level so the walker must skip them.
    public static func traces(_ layout: [[Int]]) -> [UInt8] {
        var request = ProtoWriter()
        for scopes in layout {
            request.message(1) { resource in
                resource.message(1) { $0.message(1) { kv in kv.string(1, "service.name"); kv.message(2) { $0.string(1, "demo") } } }
                for spans in scopes {
                    resource.message(2) { scope in
                        scope.message(1) { $0.string(1, "lib"); $0.string(2, "1.0") }
                        for index in 0..<spans {
                            scope.message(2) { span in
                                span.bytes(1, [UInt8](repeating: 0xAB, count: 16))  // trace_id
                                span.bytes(2, [UInt8](repeating: 0xCD, count: 8))   // span_id
                                span.string(5, "span-\(index)")
                                span.uint(6, 1)                                     // kind
                                span.fixed64(7, 1_700_000_000_000_000_000)          // start
                                span.fixed64(8, 1_700_000_000_100_000_000)          // end
                            }
                        }
                        scope.string(3, "https://opentelemetry.io/schemas/1.21.0")
                    }
                }
                resource.string(3, "schema")
            }
        }
        request.fixed32(99, 7)  // unknown field at top level
        return request.bytes
    }

    /// ExportLogsServiceRequest with `count` log records in one scope.
    public static func logs(_ count: Int) -> [UInt8] {
        var request = ProtoWriter()
        request.message(1) { resource in
            resource.message(2) { scope in
                for index in 0..<count {
                    scope.message(2) { record in
                        record.fixed64(1, 1_700_000_000_000_000_000)
                        record.uint(2, 9)
                        record.message(5) { $0.string(1, "line \(index)") }
                    }
                }
            }
        }
        return request.bytes
    }

    /// ExportMetricsServiceRequest with one metric per (data field, point count) pair.
    public static func metrics(_ metrics: [(field: UInt64, points: Int)]) -> [UInt8] {
        var request = ProtoWriter()
        request.message(1) { resource in
            resource.message(2) { scope in
                for metric in metrics {
                    scope.message(2) { m in
                        m.string(1, "requests")
                        m.string(3, "1")
                        m.message(metric.field) { data in
                            for _ in 0..<metric.points {
                                data.message(1) { point in point.fixed64(3, 1); point.fixed64(4, 42) }
                            }
                            data.uint(2, 2)  // aggregation temporality (sum/histogram)
                        }
                    }
                }
            }
        }
        return request.bytes
    }
}

/// Export requests for the payload editor: client copies of the proxy's attribute hidden the ways
/// protobuf allows, Resources missing, unknown fields at every level.
extension Fixtures {
    /// The key the editor tests set.
    public static let tenantKey = "tenant.id"

    /// KeyValue{key, AnyValue{string_value}} as an exporter writes it.
    public static func keyValue(_ key: String, _ value: String) -> [UInt8] {
        var keyValue = ProtoWriter()
        keyValue.string(1, key)
        keyValue.message(2) { $0.string(1, value) }
        return keyValue.bytes
    }

    /// One ResourceSpans with two `resource` fields, which parsers merge. The first holds a client
    /// copy of `tenantKey` and a KeyValue whose key field occurs twice, `other` then `tenantKey`
    /// (the effective key is the last: a copy); the second holds another copy and a KeyValue whose
    /// key is `tenantKey` then `kept` (effective key `kept`: not a copy). One scope, two spans.
    public static func tracesWithClientCopies() -> [UInt8] {
        var request = ProtoWriter()
        request.message(1) { resourceX in
            resourceX.message(1) { resource in
                resource.bytes(1, keyValue("service.name", "checkout"))
                resource.bytes(1, keyValue(tenantKey, "forged-1"))
                resource.message(1) { kv in
                    kv.string(1, "other")
                    kv.message(2) { $0.string(1, "forged-2") }
                    kv.string(1, tenantKey)
                }
                resource.uint(2, 3)  // dropped_attributes_count
            }
            resourceX.message(2) { scope in
                scope.message(2) { $0.string(5, "a") }
                scope.message(2) { $0.string(5, "b") }
            }
            resourceX.message(1) { resource in
                resource.bytes(1, keyValue(tenantKey, "forged-3"))
                resource.message(1) { kv in
                    kv.string(1, tenantKey)
                    kv.message(2) { $0.string(1, "value-of-kept") }
                    kv.string(1, "kept")
                }
            }
        }
        return request.bytes
    }

    /// Logs: a ResourceLogs without a Resource (one record), then one with (two records).
    public static func logsWithoutResource() -> [UInt8] {
        var request = ProtoWriter()
        request.message(1) { resourceX in
            resourceX.message(2) { scope in scope.message(2) { $0.fixed64(1, 1) } }
            resourceX.string(3, "https://opentelemetry.io/schemas/1.26.0")
        }
        request.message(1) { resourceX in
            resourceX.message(1) { $0.bytes(1, keyValue("host.name", "h1")) }
            resourceX.message(2) { scope in
                scope.message(2) { $0.fixed64(1, 2) }
                scope.message(2) { $0.fixed64(1, 3) }
            }
        }
        return request.bytes
    }

    /// Metrics with unknown fields of every wire type at every level on the path (request,
    /// ResourceMetrics, Resource, KeyValue, ScopeMetrics), entity_refs(3) on the Resource, and
    /// a sum with 2 points. `resourceTail` is appended to the Resource (to build the expected edit).
    public static func metricsWithUnknownFields(resourceTail: [UInt8] = []) -> [UInt8] {
        func unknowns(_ writer: inout ProtoWriter, _ base: UInt64) {
            writer.uint(base, 300)
            writer.fixed64(base + 1, 0x0102_0304_0506_0708)
            writer.string(base + 2, "opaque")
            writer.fixed32(base + 3, 0xDEAD_BEEF)
        }
        var request = ProtoWriter()
        unknowns(&request, 100)
        request.message(1) { resourceX in
            unknowns(&resourceX, 200)
            resourceX.message(1) { resource in
                resource.message(1) { kv in
                    kv.string(1, "service.name")
                    unknowns(&kv, 400)
                    kv.message(2) { $0.string(1, "api") }
                }
                unknowns(&resource, 300)
                resource.message(3) { ref in ref.string(2, "service"); ref.string(3, "service.name") }
                resource.bytes += resourceTail
            }
            resourceX.message(2) { scope in
                unknowns(&scope, 500)
                scope.message(2) { metric in
                    metric.string(1, "requests")
                    metric.message(7) { sum in
                        sum.message(1) { $0.fixed64(3, 1) }
                        sum.message(1) { $0.fixed64(3, 2) }
                        sum.uint(2, 2)
                    }
                }
            }
            resourceX.string(3, "schema")
        }
        unknowns(&request, 600)
        return request.bytes
    }

    /// Profiles: two ResourceProfiles (one profile, then two in two scopes) and the request's
    /// dictionary(2) with a string table, which must be kept as it is.
    public static func profiles() -> [UInt8] {
        var request = ProtoWriter()
        request.message(1) { resourceX in
            resourceX.message(1) { $0.bytes(1, keyValue("service.name", "profiler")) }
            resourceX.message(2) { scope in scope.message(2) { $0.uint(4, 1_700_000_000) } }
        }
        request.message(2) { dictionary in
            dictionary.string(5, "")
            dictionary.string(5, "cpu")
            dictionary.string(5, "nanoseconds")
        }
        request.message(1) { resourceX in
            resourceX.message(2) { scope in scope.message(2) { $0.uint(4, 1) } }
            resourceX.message(2) { scope in scope.message(2) { $0.uint(4, 2) } }
        }
        return request.bytes
    }

    /// Every fixture by a file name (the fuzz seeds), with the signal it is for as the prefix.
    public static var named: [(name: String, body: [UInt8])] {
        [
            ("traces-layout", traces([[2, 3], [1], []])),
            ("traces-client-copies", tracesWithClientCopies()),
            ("logs-records", logs(4)),
            ("logs-without-resource", logsWithoutResource()),
            ("metrics-every-kind", metrics([(5, 1), (7, 2), (9, 3), (10, 4), (11, 5), (12, 100)])),
            ("metrics-unknown-fields", metricsWithUnknownFields()),
            ("profiles-dictionary", profiles()),
        ]
    }
}
