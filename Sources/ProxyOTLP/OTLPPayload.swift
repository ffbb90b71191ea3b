// Reading and editing OTLP export requests: the public entry points. Protobuf bodies are walked
// and edited on the wire (OTLPWireEditor.swift), OTLP/JSON bodies are tokenized and edited in one
// pass over their bytes (OTLPJSONEditor.swift). Both refuse the same kinds of bodies and count the
// same items.

/// How an export request body is encoded.
public enum OTLPPayloadEncoding: Sendable, Equatable {
    case protobuf
    case json
}

/// One attribute the proxy sets on every Resource of a payload (string value).
public struct ResourceAttribute: Sendable, Equatable {
    public var key: String
    public var value: String

    public init(key: String, value: String) {
        self.key = key
        self.value = value
    }
}

/// What reading a payload found.
public struct OTLPPayloadSummary: Sendable, Equatable {
    /// Spans, metric data points, log records or profiles: the items a receiver decodes.
    public var items: Int

    public init(items: Int) { self.items = items }
}

/// Pure functions over export request bodies: bytes in, bytes and a summary out.
///
/// What both encodings refuse (`OTLPBodyError`, whose text names field numbers or JSON names
/// and never quotes the body or an attribute value, since it is sent back to the client):
/// - framing errors on the path request → ResourceX → Resource / ScopeX → items: truncated
///   varints, tags or lengths, varints over 10 bytes, field number 0 or over 2^29-1, group or
///   unknown wire types, a known field of these messages with the wrong wire type;
/// - a Resource attribute key that is not UTF-8 (official parsers refuse such proto3 strings);
/// - a Resource attribute that names its key by `key_strindex` (KeyValue field 3, an index into
///   the profiles dictionary): its key cannot be known without resolving the dictionary, so a
///   client could use it to smuggle the proxy's key past the removal;
/// - in OTLP/JSON, a field given under both its JSON name and its proto name, a Metric with two
///   data fields set (a oneof), and items or attributes that are not objects.
/// Inside items (spans, data points, log records, profiles) nothing is read beyond their framing.
///
/// Counting follows what a receiver decodes: a Metric whose data oneof occurs more than once
/// counts the data points of the last member (merged with earlier occurrences of that same member).
public enum OTLPPayload {
    /// Validates the framing of an export request down to its items and counts them, without a decode.
    public static func count(
        _ signal: OTLPSignal, _ encoding: OTLPPayloadEncoding, _ body: [UInt8]
    ) throws(OTLPBodyError) -> OTLPPayloadSummary {
        switch encoding {
        case .protobuf:
            var editor = OTLPWireEditor(signal: signal, body: body, attributes: nil)
            try editor.run()
            return OTLPPayloadSummary(items: editor.items)
        case .json:
            return try OTLPJSONEditor.run(signal, body, setting: nil).summary
        }
    }

    /// The same pass, and sets each attribute on every Resource: any KeyValue the client sent with
    /// that key is removed first, then one KeyValue{key, AnyValue{string_value}} is appended. A
    /// ResourceX without a Resource gets one. Returns the new body and the summary.
    ///
    /// Protobuf: the new KeyValues go at the end of the last `resource` field of each ResourceX
    /// (parsers merge repeated occurrences, so they end the merged list); client copies are removed
    /// from every occurrence; every other byte is copied unchanged, and only the length prefixes of
    /// the ResourceX and Resource messages are written anew (minimally encoded). OTLP/JSON: the new
    /// KeyValues end each Resource's `attributes` (added, or replacing a null, when missing; so is
    /// `resource` in a ResourceX), client copies are dropped with their commas, and every other byte
    /// (numbers as written, escapes, whitespace) is copied unchanged.
    ///
    /// With several attributes of the same key, the last one is set. With no attributes the body
    /// comes back unchanged (after the same validation as `count`). Applying `rewrite` to its own
    /// output gives the same bytes again.
    ///
    /// The output can be much larger than the input: every ResourceX gains the attributes, and an
    /// empty one is two bytes in protobuf. A rewritten body longer than `limit` bytes is refused
    /// with `exceedsLimit` set (the protobuf editor stops as soon as it passes the limit; the JSON
    /// editor stops writing then, and goes on validating so a malformed body is still refused as such).
    public static func rewrite(
        _ signal: OTLPSignal, _ encoding: OTLPPayloadEncoding, _ body: [UInt8],
        setting attributes: [ResourceAttribute], limit: Int = .max
    ) throws(OTLPBodyError) -> (body: [UInt8], summary: OTLPPayloadSummary) {
        let attributes = distinctKeys(attributes)
        let output: [UInt8]
        let summary: OTLPPayloadSummary
        switch encoding {
        case .protobuf:
            var editor = OTLPWireEditor(signal: signal, body: body, attributes: attributes.isEmpty ? nil : attributes, limit: limit)
            try editor.run()
            (output, summary) = (attributes.isEmpty ? body : editor.output, OTLPPayloadSummary(items: editor.items))
        case .json:
            let result = try OTLPJSONEditor.run(signal, body, setting: attributes.isEmpty ? nil : attributes, limit: limit)
            (output, summary) = (result.body ?? body, result.summary)
        }
        guard output.count <= limit else { throw tooLarge(limit) }
        return (output, summary)
    }

    static func tooLarge(_ limit: Int) -> OTLPBodyError {
        OTLPBodyError("export request larger than \(limit) bytes once the resource attributes are set", exceedsLimit: true)
    }

    /// The attributes with a key set more than once reduced to the last setting, in order.
    static func distinctKeys(_ attributes: [ResourceAttribute]) -> [ResourceAttribute] {
        var result: [ResourceAttribute] = []
        for attribute in attributes {
            result.removeAll { $0.key == attribute.key }
            result.append(attribute)
        }
        return result
    }
}

/// Names of the messages of one signal's export request, for error texts.
struct OTLPMessageNames {
    let request: String
    let resource: String
    let scope: String
    let item: String

    init(_ signal: OTLPSignal) {
        switch signal {
        case .traces:
            (request, resource, scope, item) = ("ExportTraceServiceRequest", "ResourceSpans", "ScopeSpans", "Span")
        case .metrics:
            (request, resource, scope, item) = ("ExportMetricsServiceRequest", "ResourceMetrics", "ScopeMetrics", "Metric")
        case .logs:
            (request, resource, scope, item) = ("ExportLogsServiceRequest", "ResourceLogs", "ScopeLogs", "LogRecord")
        case .profiles:
            (request, resource, scope, item) = ("ExportProfilesServiceRequest", "ResourceProfiles", "ScopeProfiles", "Profile")
        }
    }
}
