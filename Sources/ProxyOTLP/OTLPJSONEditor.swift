// The OTLP/JSON side of OTLPPayload: the body is decoded into `JSONValue`s (jansson, strict),
// walked along the same path as the protobuf editor, edited and encoded again. Not the hot path:
// OTLP/JSON is rare and already costs a decode at the receiver.
//
// Value fidelity of decode → encode: integers stay 64-bit integers (so int64 numbers beyond 2^53
// come back digit for digit), reals are written with 17 significant digits (the same double
// when parsed), strings are re-escaped by jansson (the same characters when parsed). A number
// that fits neither int64 nor a double, such as a uint64 above 2^63 written as a number (the
// OTLP/JSON encoding writes 64-bit integers as strings), a string with `\u0000`, and invalid
// UTF-8 are refused by the decoder.
import ProxyJSON

enum OTLPJSONEditor {
    typealias Members = [(key: String, value: JSONValue)]

    /// A field's JSON name and its original proto name (the same for one-word names).
    struct Name {
        let json: String
        let proto: String
        init(_ json: String, _ proto: String? = nil) {
            self.json = json
            self.proto = proto ?? json
        }
    }

    struct Path {
        let resources: Name
        let scopes: Name
        let items: Name

        init(_ signal: OTLPSignal) {
            switch signal {
            case .traces:
                (resources, scopes, items) = (Name("resourceSpans", "resource_spans"), Name("scopeSpans", "scope_spans"), Name("spans"))
            case .metrics:
                (resources, scopes, items) = (Name("resourceMetrics", "resource_metrics"), Name("scopeMetrics", "scope_metrics"), Name("metrics"))
            case .logs:
                (resources, scopes, items) = (Name("resourceLogs", "resource_logs"), Name("scopeLogs", "scope_logs"), Name("logRecords", "log_records"))
            case .profiles:
                (resources, scopes, items) = (Name("resourceProfiles", "resource_profiles"), Name("scopeProfiles", "scope_profiles"), Name("profiles"))
            }
        }
    }

    static let metricData = [
        Name("gauge"), Name("sum"), Name("histogram"), Name("exponentialHistogram", "exponential_histogram"), Name("summary"),
    ]

    /// Walks (and with `attributes`, edits) one body. `body` is nil when nothing was edited.
    static func run(
        _ signal: OTLPSignal, _ body: [UInt8], setting attributes: [ResourceAttribute]?
    ) throws(OTLPBodyError) -> (body: [UInt8]?, summary: OTLPPayloadSummary) {
        let root: JSONValue
        do {
            root = try JSONValue.parse(body, maxDepth: 256)  // AnyValue attributes may nest deeply
        } catch {
            // jansson's reason can quote a byte of the body: only the position is passed on.
            throw OTLPBodyError("OTLP/JSON body is not valid JSON (line \(error.line), column \(error.column))")
        }
        guard case .object(var members) = root else { throw OTLPBodyError("OTLP/JSON export request must be a JSON object") }
        let path = Path(signal)
        var items = 0
        guard let (index, list) = try member(members, path.resources) else {
            return (nil, OTLPPayloadSummary(items: 0))
        }
        var resources = try elements(list, path.resources)
        for position in resources.indices {
            guard case .object(var resource) = resources[position] else {
                throw OTLPBodyError("\(path.resources.json) elements must be objects")
            }
            if let (_, scopes) = try member(resource, path.scopes) {
                for scope in try elements(scopes, path.scopes) {
                    guard case .object(let scopeMembers) = scope else {
                        throw OTLPBodyError("\(path.scopes.json) elements must be objects")
                    }
                    guard let (_, list) = try member(scopeMembers, path.items) else { continue }
                    for item in try elements(list, path.items) {
                        guard case .object(let itemMembers) = item else {
                            throw OTLPBodyError("\(path.items.json) elements must be objects")
                        }
                        items += signal == .metrics ? try dataPoints(itemMembers) : 1
                    }
                }
            }
            try editResource(&resource, attributes)
            resources[position] = .object(resource)
        }
        guard attributes != nil else { return (nil, OTLPPayloadSummary(items: items)) }
        members[index].value = .array(resources)
        return (JSONValue.object(members).encoded(), OTLPPayloadSummary(items: items))
    }

    /// Checks the attributes of a ResourceX's `resource` and, with `attributes`, sets them.
    private static func editResource(_ resourceX: inout Members, _ attributes: [ResourceAttribute]?) throws(OTLPBodyError) {
        let resourceName = Name("resource")
        var resource: Members = []
        let found = try member(resourceX, resourceName)
        if let (_, value) = found {
            guard case .object(let members) = value else { throw OTLPBodyError("resource must be an object") }
            resource = members
        }
        let attributesName = Name("attributes")
        var list: [JSONValue] = []
        if let (_, value) = try member(resource, attributesName) { list = try elements(value, attributesName) }
        var kept: [JSONValue] = []
        kept.reserveCapacity(list.count + (attributes?.count ?? 0))
        for keyValue in list {
            let key = try effectiveKey(keyValue)
            if let attributes, attributes.contains(where: { $0.key == key }) { continue }
            kept.append(keyValue)
        }
        guard let attributes else { return }
        for attribute in attributes {
            kept.append(.object([
                (key: "key", value: .string(attribute.key)),
                (key: "value", value: .object([(key: "stringValue", value: .string(attribute.value))])),
            ]))
        }
        if let index = resource.firstIndex(where: { $0.key == "attributes" }) {
            resource[index].value = .array(kept)  // also when it was null
        } else {
            resource.append((key: "attributes", value: .array(kept)))
        }
        if let index = resourceX.firstIndex(where: { $0.key == "resource" }) {
            resourceX[index].value = .object(resource)  // also when it was null
        } else {
            resourceX.append((key: "resource", value: .object(resource)))
        }
    }

    /// A KeyValue's key ("" when absent or null, as parsers take it); refuses a non-string key
    /// and a key named by index into the profiles dictionary.
    private static func effectiveKey(_ keyValue: JSONValue) throws(OTLPBodyError) -> String {
        guard case .object(let members) = keyValue else { throw OTLPBodyError("attributes elements must be objects") }
        if let (_, index) = try member(members, Name("keyStrindex", "key_strindex")) {
            guard index == .integer(0) || index == .string("0") else {
                throw OTLPBodyError("Resource attribute names its key by keyStrindex, which is not accepted")
            }
        }
        guard let (_, key) = try member(members, Name("key")) else { return "" }
        guard case .string(let text) = key else { throw OTLPBodyError("attribute key must be a string") }
        return text
    }

    /// The data points of one Metric; more than one data field set is refused, as parsers do for a oneof.
    private static func dataPoints(_ metric: Members) throws(OTLPBodyError) -> Int {
        var points: Int?
        for name in metricData {
            guard let (_, data) = try member(metric, name) else { continue }
            guard points == nil else { throw OTLPBodyError("Metric sets more than one of its data fields") }
            guard case .object(let dataMembers) = data else { throw OTLPBodyError("\(name.json) must be an object") }
            let pointsName = Name("dataPoints", "data_points")
            guard let (_, list) = try member(dataMembers, pointsName) else {
                points = 0
                continue
            }
            let elements = try elements(list, pointsName)
            guard elements.allSatisfy({ if case .object = $0 { return true } else { return false } }) else {
                throw OTLPBodyError("dataPoints elements must be objects")
            }
            points = elements.count
        }
        return points ?? 0
    }

    /// The member named `name` (by either spelling) with a non-null value, and its index; refuses
    /// an object that has both spellings, which parsers would read as the same field set twice.
    private static func member(_ members: Members, _ name: Name) throws(OTLPBodyError) -> (Int, JSONValue)? {
        var found: Int?
        for (index, member) in members.enumerated() where member.key == name.json || member.key == name.proto {
            guard found == nil else { throw OTLPBodyError("field \(name.json) is given as both \(name.json) and \(name.proto)") }
            found = index
        }
        guard let found, members[found].value != .null else { return nil }
        return (found, members[found].value)
    }

    private static func elements(_ value: JSONValue, _ name: Name) throws(OTLPBodyError) -> [JSONValue] {
        guard case .array(let elements) = value else { throw OTLPBodyError("\(name.json) must be an array") }
        return elements
    }
}
