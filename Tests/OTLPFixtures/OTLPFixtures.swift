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
