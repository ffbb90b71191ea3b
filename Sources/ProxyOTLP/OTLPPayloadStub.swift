// Placeholder for the payload editor being built (issue 15): counting works through the item
// counter; rewriting is refused until the wire editor lands.

/// How an export request body is encoded.
public enum OTLPPayloadEncoding: Sendable, Equatable { case protobuf, json }

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
    /// Spans, metric data points, log records or profiles.
    public var items: Int
    public init(items: Int) { self.items = items }
}

public enum OTLPPayload {
    public static func count(_ signal: OTLPSignal, _ encoding: OTLPPayloadEncoding, _ body: [UInt8]) throws(OTLPBodyError) -> OTLPPayloadSummary {
        switch encoding {
        case .protobuf: return OTLPPayloadSummary(items: try OTLPItemCounter.countProtobuf(signal, body))
        case .json: return OTLPPayloadSummary(items: try OTLPItemCounter.countJSON(signal, body))
        }
    }

    public static func rewrite(
        _ signal: OTLPSignal, _ encoding: OTLPPayloadEncoding, _ body: [UInt8], setting attributes: [ResourceAttribute]
    ) throws(OTLPBodyError) -> (body: [UInt8], summary: OTLPPayloadSummary) {
        throw OTLPBodyError("resource attributes cannot be set yet")
    }
}
