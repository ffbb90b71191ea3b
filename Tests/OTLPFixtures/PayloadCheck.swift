// Checks of what OTLPPayload.rewrite produced, for the unit tests and the fuzz target. They read
// bodies with `ProtoWalker` (and `JSONValue` for OTLP/JSON), never with the editor's own cursor,
// and compare what a parser would decode: repeated `resource` fields merged, the last `key` of a
// KeyValue taken as its key, field order between different fields ignored, bytes inside items
// compared as they are.
import ProxyJSON
import ProxyOTLP

/// A parser's view of one protobuf export request.
public struct RequestView: Equatable, CustomStringConvertible {
    /// Request fields other than the ResourceX ones, in order, with their values.
    public var others: [Field] = []
    public var resources: [ResourceXView] = []

    public struct Field: Equatable {
        public var number: UInt64
        public var value: ProtoValue
    }

    public struct ResourceXView: Equatable {
        /// ResourceX fields other than `resource`, in order (scopes, schema_url, unknown fields).
        public var others: [Field] = []
        /// The merged Resource: its fields other than `attributes`, in order; an absent Resource is empty.
        public var resourceOthers: [Field] = []
        /// The merged attributes: each KeyValue's bytes and its effective key.
        public var attributes: [(key: [UInt8], bytes: ArraySlice<UInt8>)] = []

        public static func == (lhs: Self, rhs: Self) -> Bool {
            lhs.others == rhs.others && lhs.resourceOthers == rhs.resourceOthers
                && lhs.attributes.count == rhs.attributes.count
                && zip(lhs.attributes, rhs.attributes).allSatisfy { $0.key == $1.key && $0.bytes == $1.bytes }
        }
    }

    public var description: String {
        "request: \(others.count) other fields, resources: "
            + resources.map { "[\($0.others.count) fields, resource \($0.resourceOthers.count) fields + \($0.attributes.count) attributes]" }
            .joined(separator: " ")
    }

    /// Reads `body` as a parser would, for the fields on the way to the Resource attributes.
    public init(_ body: [UInt8]) throws(OTLPBodyError) {
        try ProtoWalker.forEachField(body[...]) { number, value throws(OTLPBodyError) in
            guard number == 1, case .lengthDelimited(let resourceX) = value else {
                others.append(Field(number: number, value: value))
                return
            }
            var view = ResourceXView()
            try ProtoWalker.forEachField(resourceX) { number, value throws(OTLPBodyError) in
                guard number == 1, case .lengthDelimited(let resource) = value else {
                    view.others.append(Field(number: number, value: value))
                    return
                }
                try ProtoWalker.forEachField(resource) { number, value throws(OTLPBodyError) in
                    guard number == 1, case .lengthDelimited(let keyValue) = value else {
                        view.resourceOthers.append(Field(number: number, value: value))
                        return
                    }
                    var key: [UInt8] = []
                    try ProtoWalker.forEachField(keyValue) { number, value in
                        if number == 1, case .lengthDelimited(let bytes) = value { key = Array(bytes) }
                    }
                    view.attributes.append((key: key, bytes: keyValue))
                }
            }
            resources.append(view)
        }
    }

    /// The same view without the attributes whose key is one of `keys`.
    public func removing(_ keys: [String]) -> RequestView {
        let keys = keys.map { Array($0.utf8) }
        var copy = self
        for index in copy.resources.indices {
            copy.resources[index].attributes.removeAll { keys.contains($0.key) }
        }
        return copy
    }

    /// The KeyValue bytes the editor writes for `attribute`: key(1) and value(2) = AnyValue{string_value(1)}.
    public static func encodedKeyValue(_ attribute: ResourceAttribute) -> [UInt8] {
        var value = ProtoWriter()
        value.string(1, attribute.value)
        var keyValue = ProtoWriter()
        keyValue.string(1, attribute.key)
        keyValue.bytes(2, value.bytes)
        return keyValue.bytes
    }
}

/// The properties every successful rewrite must have.
public enum PayloadCheck {
    /// Rewrites `body`; nil when it was refused, else the list of broken properties (empty when all hold):
    /// (a) the output counts the same items, (b) rewriting the output gives the same bytes,
    /// (c) every Resource has exactly one KeyValue per attribute, encoded as the editor writes it,
    /// (d) without the attributes the output reads as the input does.
    public static func protobuf(
        _ signal: OTLPSignal, _ body: [UInt8], _ attributes: [ResourceAttribute]
    ) -> [String]? {
        guard let (output, summary) = try? OTLPPayload.rewrite(signal, .protobuf, body, setting: attributes) else {
            return nil
        }
        var problems: [String] = []
        do {
            let counted = try OTLPPayload.count(signal, .protobuf, body)
            if counted != summary { problems.append("rewrite counted \(summary.items), count \(counted.items)") }
            let recounted = try OTLPPayload.count(signal, .protobuf, output)
            if recounted != summary { problems.append("(a) output counts \(recounted.items), input \(summary.items)") }
            let again = try OTLPPayload.rewrite(signal, .protobuf, output, setting: attributes)
            if again.body != output { problems.append("(b) rewriting the output changed it") }
            let keys = attributes.map(\.key)
            let before = try RequestView(body)
            let after = try RequestView(output)
            for (index, resource) in after.resources.enumerated() {
                for attribute in attributes {
                    let copies = resource.attributes.filter { $0.key == Array(attribute.key.utf8) }
                    if copies.count != 1 || Array(copies[0].bytes) != RequestView.encodedKeyValue(attribute) {
                        problems.append("(c) resource \(index) has \(copies.count) attributes \(attribute.key), or not as written")
                    }
                }
            }
            if before.removing(keys) != after.removing(keys) {
                problems.append("(d) without the attributes, output \(after.removing(keys)) != input \(before.removing(keys))")
            }
        } catch {
            problems.append("the output was refused: \(error)")
        }
        return problems
    }

    /// The same properties for OTLP/JSON, read with `JSONValue`.
    public static func json(
        _ signal: OTLPSignal, _ body: [UInt8], _ attributes: [ResourceAttribute]
    ) -> [String]? {
        guard let (output, summary) = try? OTLPPayload.rewrite(signal, .json, body, setting: attributes) else {
            return nil
        }
        var problems: [String] = []
        do {
            let recounted = try OTLPPayload.count(signal, .json, output)
            if recounted != summary { problems.append("(a) output counts \(recounted.items), input \(summary.items)") }
            let again = try OTLPPayload.rewrite(signal, .json, output, setting: attributes)
            if again.body != output { problems.append("(b) rewriting the output changed it") }
            let before = try JSONValue.parse(body, maxDepth: 256)
            let after = try JSONValue.parse(output, maxDepth: 256)
            let resourcesName = jsonResourcesName(signal)
            let list = after[resourcesName] ?? after[snakeCase(resourcesName)]
            for (index, resource) in (list?.arrayValue ?? []).enumerated() {
                let list = resource["resource"]?["attributes"]?.arrayValue ?? []
                for attribute in attributes {
                    let copies = list.filter { $0["key"]?.stringValue == attribute.key }
                    let expected = JSONValue.object([
                        (key: "key", value: .string(attribute.key)),
                        (key: "value", value: .object([(key: "stringValue", value: .string(attribute.value))])),
                    ])
                    if copies != [expected] {
                        problems.append("(c) resource \(index) has \(copies.count) attributes \(attribute.key), or not as written")
                    }
                }
            }
            let keys = attributes.map(\.key)
            if normalized(before, signal, removing: keys) != normalized(after, signal, removing: keys) {
                problems.append("(d) without the attributes, the output does not read as the input")
            }
        } catch {
            problems.append("the output was refused: \(error)")
        }
        return problems
    }

    /// The name the editor writes for the ResourceX list (it keeps the spelling the client used).
    private static func jsonResourcesName(_ signal: OTLPSignal) -> String {
        switch signal {
        case .traces: return "resourceSpans"
        case .metrics: return "resourceMetrics"
        case .logs: return "resourceLogs"
        case .profiles: return "resourceProfiles"
        }
    }

    /// The document with, in every ResourceX, `resource` (absent or null read as `{}`) moved last and
    /// its `attributes` (absent or null read as `[]`) moved last and without the keys in `keys`.
    private static func normalized(_ root: JSONValue, _ signal: OTLPSignal, removing keys: [String]) -> JSONValue {
        guard case .object(var members) = root else { return root }
        let names = [jsonResourcesName(signal), snakeCase(jsonResourcesName(signal))]
        for index in members.indices where names.contains(members[index].key) {
            guard case .array(var resources) = members[index].value else { continue }
            for position in resources.indices {
                guard case .object(var resourceX) = resources[position] else { continue }
                let resource = resourceX.first(where: { $0.key == "resource" })?.value.objectValue ?? []
                resourceX.removeAll { $0.key == "resource" }
                var fields = resource.filter { $0.key != "attributes" }
                let list = resource.first(where: { $0.key == "attributes" })?.value.arrayValue ?? []
                fields.append((key: "attributes", value: .array(list.filter { !keys.contains($0["key"]?.stringValue ?? "") })))
                resourceX.append((key: "resource", value: .object(fields)))
                resources[position] = .object(resourceX)
            }
            members[index].value = .array(resources)
        }
        return .object(members)
    }

    private static func snakeCase(_ name: String) -> String {
        var result = ""
        for character in name {
            if character.isUppercase {
                result += "_" + character.lowercased()
            } else {
                result.append(character)
            }
        }
        return result
    }
}
