// Counting spans, metric data points and log records in OTLP export requests, in both
// encodings, without generated protobuf code: a minimal wire-format walker descends the
// few message levels that lead to the items and skips everything else.
import ProxyJSON

/// Why a body could not be counted (the sink answers 400 with this text).
public struct OTLPBodyError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Pure functions: body bytes in, item count out.
public enum OTLPItemCounter {
    /// Counts the items of an `Export{Trace,Metrics,Logs}ServiceRequest` in protobuf encoding.
    /// Unknown fields are skipped at every level; a malformed encoding (truncated varint or
    /// length, group wire types, field number 0, a known field with the wrong wire type)
    /// throws.
    public static func countProtobuf(_ signal: OTLPSignal, _ body: [UInt8]) throws(OTLPBodyError) -> Int {
        var count = 0
        switch signal {
        case .traces:
            // ExportTraceServiceRequest.resource_spans(1) → ResourceSpans.scope_spans(2) → ScopeSpans.spans(2)
            try ProtoWalker.forEachMessage(body[...], field: 1) { resource throws(OTLPBodyError) in
                try ProtoWalker.forEachMessage(resource, field: 2) { scope throws(OTLPBodyError) in
                    try ProtoWalker.forEachMessage(scope, field: 2) { _ in count += 1 }
                }
            }
        case .profiles:
            // ExportProfilesServiceRequest.resource_profiles(1) → ResourceProfiles.scope_profiles(2)
            // → ScopeProfiles.profiles(2); the request's dictionary(2) holds no items.
            try ProtoWalker.forEachMessage(body[...], field: 1) { resource throws(OTLPBodyError) in
                try ProtoWalker.forEachMessage(resource, field: 2) { scope throws(OTLPBodyError) in
                    try ProtoWalker.forEachMessage(scope, field: 2) { _ in count += 1 }
                }
            }
        case .logs:
            // ExportLogsServiceRequest.resource_logs(1) → ResourceLogs.scope_logs(2) → ScopeLogs.log_records(2)
            try ProtoWalker.forEachMessage(body[...], field: 1) { resource throws(OTLPBodyError) in
                try ProtoWalker.forEachMessage(resource, field: 2) { scope throws(OTLPBodyError) in
                    try ProtoWalker.forEachMessage(scope, field: 2) { _ in count += 1 }
                }
            }
        case .metrics:
            // resource_metrics(1) → scope_metrics(2) → metrics(2) → gauge(5) | sum(7) | histogram(9)
            // | exponential_histogram(10) | summary(11) → data_points(1)
            try ProtoWalker.forEachMessage(body[...], field: 1) { resource throws(OTLPBodyError) in
                try ProtoWalker.forEachMessage(resource, field: 2) { scope throws(OTLPBodyError) in
                    try ProtoWalker.forEachMessage(scope, field: 2) { metric throws(OTLPBodyError) in
                        try ProtoWalker.forEachField(metric) { number, value throws(OTLPBodyError) in
                            guard metricDataFields.contains(number) else { return }
                            guard case .lengthDelimited(let data) = value else {
                                throw OTLPBodyError("metric data field \(number) is not length-delimited")
                            }
                            try ProtoWalker.forEachMessage(data, field: 1) { _ in count += 1 }
                        }
                    }
                }
            }
        }
        return count
    }

    /// Counts the items of an export request in OTLP/JSON encoding. Field names are the
    /// protobuf JSON names (`resourceSpans`); the original snake_case names are accepted
    /// too, as protobuf JSON parsers do. Absent or null fields count as empty.
    public static func countJSON(_ signal: OTLPSignal, _ body: [UInt8]) throws(OTLPBodyError) -> Int {
        let root: JSONValue
        do {
            root = try JSONValue.parse(body, maxDepth: 256)  // AnyValue attributes may nest deeply
        } catch {
            throw OTLPBodyError("\(error)")
        }
        guard case .object = root else { throw OTLPBodyError("export request must be a JSON object") }
        let path: [(String, String)]
        switch signal {
        case .traces: path = [("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"), ("spans", "spans")]
        case .profiles: path = [("resourceProfiles", "resource_profiles"), ("scopeProfiles", "scope_profiles"), ("profiles", "profiles")]
        case .logs: path = [("resourceLogs", "resource_logs"), ("scopeLogs", "scope_logs"), ("logRecords", "log_records")]
        case .metrics: path = [("resourceMetrics", "resource_metrics"), ("scopeMetrics", "scope_metrics"), ("metrics", "metrics")]
        }
        var count = 0
        for resource in try jsonArray(root, path[0]) {
            for scope in try jsonArray(resource, path[1]) {
                let items = try jsonArray(scope, path[2])
                guard signal == .metrics else {
                    count += items.count
                    continue
                }
                for metric in items {
                    for name in metricDataJSONNames {
                        guard let data = member(metric, name), data != .null else { continue }
                        guard case .object = data else { throw OTLPBodyError("\(name.0) must be an object") }
                        count += try jsonArray(data, ("dataPoints", "data_points")).count
                    }
                }
            }
        }
        return count
    }

    private static let metricDataFields: Set<UInt64> = [5, 7, 9, 10, 11]
    private static let metricDataJSONNames = [
        ("gauge", "gauge"), ("sum", "sum"), ("histogram", "histogram"),
        ("exponentialHistogram", "exponential_histogram"), ("summary", "summary"),
    ]

    private static func member(_ value: JSONValue, _ name: (String, String)) -> JSONValue? {
        value[name.0] ?? value[name.1]
    }

    /// The array member `name` of `value`; empty when absent or null.
    private static func jsonArray(_ value: JSONValue, _ name: (String, String)) throws(OTLPBodyError) -> [JSONValue] {
        guard case .object = value else { throw OTLPBodyError("expected an object holding \(name.0)") }
        guard let member = member(value, name), member != .null else { return [] }
        guard let elements = member.arrayValue else { throw OTLPBodyError("\(name.0) must be an array") }
        return elements
    }
}

/// One decoded protobuf field value. Length-delimited values are slices of the input.
enum ProtoValue {
    case varint(UInt64)
    case fixed64
    case lengthDelimited(ArraySlice<UInt8>)
    case fixed32
}

/// Protobuf wire-format reader over a byte slice: varint / fixed64 / length-delimited /
/// fixed32. Groups (wire types 3 and 4) are refused: OTLP never uses them.
enum ProtoWalker {
    /// Calls `body` for every field of the message in `bytes`, in order.
    static func forEachField(
        _ bytes: ArraySlice<UInt8>, _ body: (UInt64, ProtoValue) throws(OTLPBodyError) -> Void
    ) throws(OTLPBodyError) {
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let key = try readVarint(bytes, &index)
            let number = key >> 3
            guard number != 0, number <= 536_870_911 else { throw OTLPBodyError("invalid protobuf field number \(number)") }
            switch key & 7 {
            case 0:
                try body(number, .varint(try readVarint(bytes, &index)))
            case 1:
                guard bytes.endIndex - index >= 8 else { throw OTLPBodyError("truncated protobuf fixed64 field \(number)") }
                index += 8
                try body(number, .fixed64)
            case 2:
                let length = try readVarint(bytes, &index)
                guard length <= UInt64(bytes.endIndex - index) else {
                    throw OTLPBodyError("protobuf field \(number) length runs past the end of its message")
                }
                let end = index + Int(length)
                let value = bytes[index..<end]
                index = end
                try body(number, .lengthDelimited(value))
            case 5:
                guard bytes.endIndex - index >= 4 else { throw OTLPBodyError("truncated protobuf fixed32 field \(number)") }
                index += 4
                try body(number, .fixed32)
            default:
                throw OTLPBodyError("unsupported protobuf wire type \(key & 7) for field \(number)")
            }
        }
    }

    /// Calls `body` with each embedded message in field `field`; other fields are skipped.
    static func forEachMessage(
        _ bytes: ArraySlice<UInt8>, field: UInt64, _ body: (ArraySlice<UInt8>) throws(OTLPBodyError) -> Void
    ) throws(OTLPBodyError) {
        try forEachField(bytes) { number, value throws(OTLPBodyError) in
            guard number == field else { return }
            guard case .lengthDelimited(let message) = value else {
                throw OTLPBodyError("protobuf field \(field) must be an embedded message")
            }
            try body(message)
        }
    }

    /// Reads a base-128 varint of at most 10 bytes.
    static func readVarint(_ bytes: ArraySlice<UInt8>, _ index: inout Int) throws(OTLPBodyError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard index < bytes.endIndex else { throw OTLPBodyError("truncated protobuf varint") }
            let byte = bytes[index]
            index += 1
            if shift == 63 && byte > 1 { throw OTLPBodyError("protobuf varint longer than 64 bits") }
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
    }
}
