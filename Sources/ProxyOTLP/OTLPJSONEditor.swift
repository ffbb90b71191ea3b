// The OTLP/JSON side of OTLPPayload: one pass over the body's bytes with a strict JSON tokenizer.
//
// Only the members on the path request → ResourceX → Resource → attributes → KeyValue and
// ResourceX → ScopeX → items (→ Metric → data → dataPoints) are interpreted, by a few functions
// that call each other along that fixed path (at most about twenty frames deep). Every other value
// (the inside of spans, data points, log records, AnyValues) is validated by `skipValue`, which
// keeps its open arrays and objects on a small explicit stack instead of recursing, and is never
// decoded. When attributes are to be set, the output is the body copied range by range: untouched
// bytes (numbers, strings, whitespace) go out exactly as the client wrote them, and only the edits
// are written anew: a dropped KeyValue (with its comma), the appended KeyValues, a `resource` or
// `attributes` member added where it was missing, a `null` in their place replaced. Memory is the
// body, the output and the member names of the objects open at one time.
//
// Strictness, the same as the jansson decoder (JSON_REJECT_DUPLICATES) this replaced, so a body one
// accepts the other accepts too: RFC 8259 grammar with an object at the top; UTF-8 validated (no
// overlong forms, no surrogates, nothing past U+10FFFF); string escapes validated, `\u` surrogates
// only as a high-low pair, `\u0000` refused; numbers validated and copied as written, an integer
// (no fraction, no exponent) refused outside int64 and a real refused when it overflows a double;
// arrays and objects nested deeper than 256 refused; duplicate member names refused in every object,
// compared after escapes are resolved; nothing but whitespace after the value. Checking duplicates
// everywhere, not only in the objects the editor interprets, keeps the old answer for every body and
// costs little: a member name is compared with the earlier names of its object by a fingerprint
// (length, first, middle and last byte) and only on a match byte by byte; an object of more than 16
// members is checked once at its end by sorting its names, so no object costs quadratic time.
//
// Refusals of the body's syntax win over refusals of its meaning: the first meaning refusal is kept,
// the pass goes on validating (without editing), and it is thrown only if the syntax is sound.

/// One pass over one OTLP/JSON body: `run()` once (or the static `run`), then read `items`.
/// Holds the body (shared, not copied), the output when editing, and the stacks of the open objects'
/// member names and of the arrays and objects `skipValue` has open; nothing outlives the pass.
struct OTLPJSONEditor {
    /// A field's JSON name and its original proto name (the same for one-word names).
    struct Name {
        let json: String
        let proto: String
        let jsonBytes: [UInt8]
        let protoBytes: [UInt8]

        init(_ json: String, _ proto: String? = nil) {
            self.json = json
            self.proto = proto ?? json
            self.jsonBytes = Array(json.utf8)
            self.protoBytes = Array(self.proto.utf8)
        }
    }

    /// The names on one signal's path: the ResourceX list, the ScopeX list, the items.
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
    static let resourceName = Name("resource")
    static let attributesName = Name("attributes")
    static let keyName = Name("key")
    static let keyStrindexName = Name("keyStrindex", "key_strindex")
    static let dataPointsName = Name("dataPoints", "data_points")

    /// Arrays and objects nested deeper than this are refused (AnyValue attributes may nest deeply).
    static let maxDepth = 256
    /// Objects with more members than this have their names checked for duplicates at their end.
    static let smallObject = 16

    /// The messages the editor interprets; every other value is only validated.
    enum Role {
        case request, resources, resourceX, resource, attributes, keyValue, scopes, scopeX, items, metric, data, points
    }

    /// What a value turned out to be, for the checks of the member that holds it.
    enum Kind {
        case object, array, string, literal, null
        /// An integer written `0` or `-0`.
        case zero
        case number
    }

    /// A member name: a range of the body, or of `nameBytes` when it had escapes.
    struct NameRef {
        var start: UInt32
        var count: UInt32
        var fingerprint: UInt32 = 0
        var decoded: Bool
    }

    /// The string between its quotes; `escaped` when it holds a backslash.
    struct StringToken {
        var start: Int
        var end: Int
        var escaped: Bool
    }

    /// What an interpreted object has shown so far.
    struct Members {
        var count = 0
        /// Two bits per field the role interprets: seen under its JSON name, under its proto name.
        var seen: UInt32 = 0
        /// `resource` in a ResourceX, `attributes` in a Resource (also when null).
        var found = false
        var dataFields = 0
        var points = 0
        /// A KeyValue's key, decoded (only when editing).
        var key: String?
    }

    /// An array or object open in `skipValue`.
    struct Frame {
        var isObject: Bool
        var namesBase: Int
        var bytesBase: Int
    }

    let body: [UInt8]
    let signal: OTLPSignal
    let path: Path
    /// The keys to remove from every Resource, compared as Swift strings (canonical equivalence).
    let keys: [String]
    /// The KeyValue objects appended to every Resource, comma-separated, and the members and values
    /// that carry them where the client sent none.
    let added: [UInt8]
    let commaAdded: [UInt8]
    let resourceMember: [UInt8]
    let attributesMember: [UInt8]
    let resourceValue: [UInt8]
    let attributesValue: [UInt8]
    /// The longest output kept; past it the output is dropped and `exceeded` set.
    let limit: Int

    private(set) var items = 0
    /// True while the output is being written: attributes are set, nothing refused, limit not passed.
    private var editing: Bool
    private var output: [UInt8] = []
    /// `body[..<copied]` has been written to the output or dropped.
    private var copied = 0
    private var edited = false
    private var exceeded = false
    private var problem: OTLPBodyError?
    private var index = 0
    private var depth = 0
    /// The member names of the open objects, innermost last.
    private var names: [NameRef] = []
    /// Decoded member names that had escapes.
    private var nameBytes: [UInt8] = []
    private var frames: [Frame] = []
    private var scratch: [UInt8] = []

    /// Walks (and with `attributes`, edits) one body. `body` is nil when nothing was edited.
    static func run(
        _ signal: OTLPSignal, _ body: [UInt8], setting attributes: [ResourceAttribute]?, limit: Int = .max
    ) throws(OTLPBodyError) -> (body: [UInt8]?, summary: OTLPPayloadSummary) {
        var editor = OTLPJSONEditor(signal: signal, body: body, attributes: attributes, limit: limit)
        let output = try editor.run()
        return (output, OTLPPayloadSummary(items: editor.items))
    }

    init(signal: OTLPSignal, body: [UInt8], attributes: [ResourceAttribute]?, limit: Int) {
        self.body = body
        self.signal = signal
        self.path = Path(signal)
        self.limit = limit
        self.editing = attributes != nil
        self.keys = (attributes ?? []).map(\.key)
        var added: [UInt8] = []
        for attribute in attributes ?? [] {
            if !added.isEmpty { added.append(Self.comma) }
            added += Array(#"{"key":"#.utf8)
            Self.appendString(&added, attribute.key)
            added += Array(#","value":{"stringValue":"#.utf8)
            Self.appendString(&added, attribute.value)
            added += Array("}}".utf8)
        }
        self.added = added
        self.commaAdded = [Self.comma] + added
        self.attributesValue = [Self.openBracket] + added + [Self.closeBracket]
        self.resourceValue = Array(#"{"attributes":"#.utf8) + attributesValue + [Self.closeBrace]
        self.attributesMember = Array(#""attributes":"#.utf8) + attributesValue
        self.resourceMember = Array(#""resource":"#.utf8) + resourceValue
    }

    mutating func run() throws(OTLPBodyError) -> [UInt8]? {
        // Name positions are kept in 32 bits; the proxy's body limits are far below.
        guard body.count < Int(UInt32.max) else { throw OTLPBodyError("OTLP/JSON body of 4 GiB or more is not read") }
        if editing { output.reserveCapacity(body.count + 2 * resourceMember.count + 64) }
        skipWhitespace()
        guard index < body.count else { throw syntaxError("no JSON value") }
        switch body[index] {
        case Self.openBrace:
            _ = try object(.request)
        case Self.openBracket:
            fail("OTLP/JSON export request must be a JSON object")
            _ = try skipValue()
        default:
            throw syntaxError("'{' expected")
        }
        skipWhitespace()
        guard index == body.count else { throw syntaxError("characters after the JSON value") }
        if let problem { throw problem }
        if exceeded { throw OTLPPayload.tooLarge(limit) }
        guard editing, edited else { return nil }
        copy(to: body.count)
        if exceeded { throw OTLPPayload.tooLarge(limit) }
        return output
    }

    // MARK: - The interpreted path

    /// One interpreted object; returns the data points of a Metric or its data, 1 for a KeyValue
    /// whose key is to be removed, else 0.
    private mutating func object(_ role: Role) throws(OTLPBodyError) -> Int {
        guard problem == nil else {
            _ = try skipValue()
            return 0
        }
        try enter()
        index += 1
        let namesBase = names.count
        let bytesBase = nameBytes.count
        var members = Members()
        var lastValueEnd = index
        skipWhitespace()
        if try !at(Self.closeBrace) {
            while true {
                let name = try memberName(namesBase)
                try colon()
                try member(role, name, &members)
                lastValueEnd = index
                guard try separator(Self.closeBrace) else { break }
            }
        }
        try closeNames(namesBase, bytesBase)
        index += 1
        depth -= 1
        switch role {
        case .resourceX where editing && !members.found:
            // A ResourceX without `resource` gets one, after its last member.
            copy(to: lastValueEnd)
            if members.count > 0 { insert([Self.comma]) }
            insert(resourceMember)
        case .resource where editing && !members.found:
            copy(to: lastValueEnd)
            if members.count > 0 { insert([Self.comma]) }
            insert(attributesMember)
        case .keyValue:
            return editing && keys.contains(members.key ?? "") ? 1 : 0
        case .metric, .data:
            return members.points
        default:
            break
        }
        return 0
    }

    /// One member value of an interpreted object, by the role of the object and the member's name.
    private mutating func member(_ role: Role, _ name: NameRef, _ members: inout Members) throws(OTLPBodyError) {
        members.count += 1
        switch role {
        case .request:
            if let proto = spelling(name, path.resources) {
                note(path.resources, 0, proto, &members)
                _ = try nullOr(Self.openBracket, .resources, "\(path.resources.json) must be an array")
                return
            }
        case .resourceX:
            if let proto = spelling(name, path.scopes) {
                note(path.scopes, 0, proto, &members)
                _ = try nullOr(Self.openBracket, .scopes, "\(path.scopes.json) must be an array")
                return
            }
            if isName(name, Self.resourceName.jsonBytes) {
                members.found = true
                _ = try nullOr(Self.openBrace, .resource, "resource must be an object", replacingNullWith: resourceValue)
                return
            }
        case .resource:
            if isName(name, Self.attributesName.jsonBytes) {
                members.found = true
                _ = try nullOr(Self.openBracket, .attributes, "attributes must be an array", replacingNullWith: attributesValue)
                return
            }
        case .keyValue:
            if let proto = spelling(name, Self.keyStrindexName) {
                note(Self.keyStrindexName, 0, proto, &members)
                // Only the index 0 (the empty string of the dictionary, which is no key) is let through.
                let zero: Bool
                if try at(Self.quote) {
                    let token = try string()
                    zero = decoded(token) == [Self.digit0]
                } else {
                    let kind = try skipValue()
                    zero = kind == .zero || kind == .null
                }
                if !zero { fail("Resource attribute names its key by keyStrindex, which is not accepted") }
                return
            }
            if isName(name, Self.keyName.jsonBytes) {
                if try at(Self.quote) {
                    let token = try string()
                    if editing { members.key = String(decoding: decoded(token), as: UTF8.self) }
                } else if try skipValue() != .null {
                    fail("attribute key must be a string")
                }
                return
            }
        case .scopeX:
            if let proto = spelling(name, path.items) {
                note(path.items, 0, proto, &members)
                _ = try nullOr(Self.openBracket, .items, "\(path.items.json) must be an array")
                return
            }
        case .metric:
            for (field, data) in Self.metricData.enumerated() {
                guard let proto = spelling(name, data) else { continue }
                note(data, field, proto, &members)
                // As parsers read a oneof: a second data field is refused, null is no field.
                if try at(Self.openBrace) {
                    members.dataFields += 1
                    if members.dataFields > 1 { fail("Metric sets more than one of its data fields") }
                    members.points = try object(.data)
                } else if try skipValue() != .null {
                    members.dataFields += 1
                    fail(members.dataFields > 1 ? "Metric sets more than one of its data fields" : "\(data.json) must be an object")
                }
                return
            }
        case .data:
            if let proto = spelling(name, Self.dataPointsName) {
                note(Self.dataPointsName, 0, proto, &members)
                members.points = try nullOr(Self.openBracket, .points, "dataPoints must be an array")
                return
            }
        case .resources, .attributes, .scopes, .items, .points:
            break
        }
        _ = try skipValue()
    }

    /// A member value that is null or an array/object (`open`) read in `role`, else refused with
    /// `message`. When editing, a null is replaced by `replacement`. Returns what the array returns.
    private mutating func nullOr(
        _ open: UInt8, _ role: Role, _ message: String, replacingNullWith replacement: [UInt8]? = nil
    ) throws(OTLPBodyError) -> Int {
        if try at(open) { return open == Self.openBrace ? try object(role) : try array(role) }
        let start = index
        guard try skipValue() == .null else {
            fail(message)
            return 0
        }
        if let replacement, editing {
            copy(to: start)
            skip(to: index)
            insert(replacement)
        }
        return 0
    }

    /// One interpreted array; for dataPoints returns its count.
    private mutating func array(_ role: Role) throws(OTLPBodyError) -> Int {
        guard problem == nil else {
            _ = try skipValue()
            return 0
        }
        try enter()
        index += 1
        var total = 0
        var elements = 0
        // For `attributes`: the elements kept, where the current element's segment starts (after
        // the previous element, or after `[`) and the comma before it.
        var kept = 0
        var segmentStart = index
        var comma = index
        skipWhitespace()
        if try !at(Self.closeBracket) {
            while true {
                switch role {
                case .resources:
                    _ = try element(.resourceX, path.resources.json)
                case .scopes:
                    _ = try element(.scopeX, path.scopes.json)
                case .items:
                    items += try element(signal == .metrics ? .metric : nil, path.items.json)
                case .points:
                    total += try element(nil, "dataPoints")
                case .attributes:
                    let drop = try element(.keyValue, "attributes") == 1
                    if drop {
                        copy(to: segmentStart)
                        skip(to: index)
                    } else {
                        if kept == 0 && elements > 0 {
                            // The first element kept after dropped ones loses its comma.
                            copy(to: segmentStart)
                            skip(to: comma + 1)
                        }
                        kept += 1
                    }
                    segmentStart = index
                case .request, .resourceX, .resource, .keyValue, .scopeX, .metric, .data:
                    _ = try skipValue()
                }
                elements += 1
                skipWhitespace()
                guard index < body.count else { throw syntaxError("unexpected end of body") }
                if body[index] == Self.comma {
                    comma = index
                    index += 1
                    skipWhitespace()
                    continue
                }
                guard body[index] == Self.closeBracket else { throw syntaxError("',' or ']' expected") }
                break
            }
        }
        if role == .attributes && editing {
            // The new KeyValues end the list, right after its last element.
            copy(to: segmentStart)
            insert(kept > 0 ? commaAdded : added)
        }
        index += 1
        depth -= 1
        return total
    }

    /// One element of a list whose elements must be objects, read in `role` (nil: only validated,
    /// and counted as 1).
    private mutating func element(_ role: Role?, _ list: String) throws(OTLPBodyError) -> Int {
        guard try at(Self.openBrace) else {
            _ = try skipValue()
            fail("\(list) elements must be objects")
            return 0
        }
        guard let role else {
            _ = try skipValue()
            return 1
        }
        return try object(role)
    }

    /// Notes a field of the object by its spelling; both spellings are refused, as parsers would
    /// read the same field set twice.
    private mutating func note(_ name: Name, _ field: Int, _ proto: Bool, _ members: inout Members) {
        members.seen |= 1 << UInt32(2 * field + (proto ? 1 : 0))
        let both: UInt32 = 3 << UInt32(2 * field)
        if members.seen & both == both { fail("field \(name.json) is given as both \(name.json) and \(name.proto)") }
    }

    /// Keeps the first refusal of meaning; the pass goes on validating, without editing.
    private mutating func fail(_ message: String) {
        guard problem == nil else { return }
        problem = OTLPBodyError(message)
        editing = false
        output = []
    }

    // MARK: - Output

    private mutating func copy(to end: Int) {
        guard editing, end > copied else { return }
        guard output.count + (end - copied) <= limit else { return exceed() }
        output.append(contentsOf: body[copied..<end])
        copied = end
    }

    private mutating func skip(to end: Int) {
        guard editing else { return }
        copied = end
        edited = true
    }

    private mutating func insert(_ bytes: [UInt8]) {
        guard editing else { return }
        guard output.count + bytes.count <= limit else { return exceed() }
        output.append(contentsOf: bytes)
        edited = true
    }

    private mutating func exceed() {
        exceeded = true
        editing = false
        output = []
    }

    /// A JSON string for `text`: quotes, backslashes and control characters escaped, the rest as UTF-8.
    static func appendString(_ output: inout [UInt8], _ text: String) {
        output.append(quote)
        for byte in text.utf8 {
            switch byte {
            case quote, backslash:
                output += [backslash, byte]
            case 0x0A: output += [backslash, UInt8(ascii: "n")]
            case 0x0D: output += [backslash, UInt8(ascii: "r")]
            case 0x09: output += [backslash, UInt8(ascii: "t")]
            case 0x08: output += [backslash, UInt8(ascii: "b")]
            case 0x0C: output += [backslash, UInt8(ascii: "f")]
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                output += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 15)]]
            default:
                output.append(byte)
            }
        }
        output.append(quote)
    }

    // MARK: - Validation of values the editor does not interpret

    /// Validates one value at `index` (whitespace before it skipped); arrays and objects are walked
    /// with `frames`, not by recursion.
    private mutating func skipValue() throws(OTLPBodyError) -> Kind {
        guard index < body.count else { throw syntaxError("unexpected end of body") }
        let first = body[index]
        guard first == Self.openBrace || first == Self.openBracket else { return try scalar() }
        let bottom = frames.count
        while true {
            // At a value.
            guard index < body.count else { throw syntaxError("unexpected end of body") }
            let byte = body[index]
            if byte == Self.openBrace || byte == Self.openBracket {
                let isObject = byte == Self.openBrace
                try enter()
                frames.append(Frame(isObject: isObject, namesBase: names.count, bytesBase: nameBytes.count))
                index += 1
                skipWhitespace()
                if try !at(isObject ? Self.closeBrace : Self.closeBracket) {
                    if isObject {
                        _ = try memberName(names.count)
                        try colon()
                    }
                    continue
                }
            } else {
                _ = try scalar()
            }
            // After a value, or at the end of an empty array or object.
            while true {
                guard frames.count > bottom else { return first == Self.openBrace ? .object : .array }
                skipWhitespace()
                guard index < body.count else { throw syntaxError("unexpected end of body") }
                let top = frames[frames.count - 1]
                let byte = body[index]
                if byte == Self.comma {
                    index += 1
                    skipWhitespace()
                    if top.isObject {
                        _ = try memberName(top.namesBase)
                        try colon()
                    }
                    break
                }
                guard byte == (top.isObject ? Self.closeBrace : Self.closeBracket) else {
                    throw syntaxError(top.isObject ? "',' or '}' expected" : "',' or ']' expected")
                }
                if top.isObject { try closeNames(top.namesBase, top.bytesBase) }
                frames.removeLast()
                index += 1
                depth -= 1
            }
        }
    }

    private mutating func scalar() throws(OTLPBodyError) -> Kind {
        guard index < body.count else { throw syntaxError("unexpected end of body") }
        switch body[index] {
        case Self.quote:
            _ = try string()
            return .string
        case Self.minus, Self.digit0...Self.digit9:
            return try number()
        case UInt8(ascii: "t"):
            try literal(Self.trueBytes)
            return .literal
        case UInt8(ascii: "f"):
            try literal(Self.falseBytes)
            return .literal
        case UInt8(ascii: "n"):
            try literal(Self.nullBytes)
            return .null
        default:
            throw syntaxError("invalid value")
        }
    }

    private mutating func literal(_ bytes: [UInt8]) throws(OTLPBodyError) {
        guard body.count - index >= bytes.count else { throw syntaxError("invalid literal") }
        for offset in 0..<bytes.count where body[index + offset] != bytes[offset] {
            throw syntaxError("invalid literal")
        }
        index += bytes.count
    }

    /// A number by RFC 8259. As jansson reads them: an integer (no fraction, no exponent) must fit
    /// int64, a real must not overflow a double (an underflow is a zero, accepted).
    private mutating func number() throws(OTLPBodyError) -> Kind {
        let start = index
        let negative = body[index] == Self.minus
        if negative { index += 1 }
        let integerStart = index
        guard index < body.count, Self.isDigit(body[index]) else { throw syntaxError("invalid number") }
        if body[index] == Self.digit0 {
            index += 1
            if index < body.count, Self.isDigit(body[index]) { throw syntaxError("invalid number") }
        } else {
            while index < body.count, Self.isDigit(body[index]) { index += 1 }
        }
        let integerEnd = index
        var fractionEnd = index
        var isReal = false
        if index < body.count, body[index] == UInt8(ascii: ".") {
            isReal = true
            index += 1
            let fractionStart = index
            while index < body.count, Self.isDigit(body[index]) { index += 1 }
            guard index > fractionStart else { throw syntaxError("invalid number") }
            fractionEnd = index
        }
        var exponent = 0
        if index < body.count, body[index] | 0x20 == UInt8(ascii: "e") {
            isReal = true
            index += 1
            var negativeExponent = false
            if index < body.count, body[index] == Self.minus || body[index] == UInt8(ascii: "+") {
                negativeExponent = body[index] == Self.minus
                index += 1
            }
            let exponentStart = index
            while index < body.count, Self.isDigit(body[index]) {
                exponent = min(exponent * 10 + Int(body[index] - Self.digit0), 1_000_000)
                index += 1
            }
            guard index > exponentStart else { throw syntaxError("invalid number") }
            if negativeExponent { exponent = -exponent }
        }
        guard isReal else {
            let digits = integerEnd - integerStart
            var fits = digits < 19
            if digits == 19 {
                let largest = negative ? Self.int64MinDigits : Self.int64MaxDigits
                fits = !Self.greater(body[integerStart..<integerEnd], than: largest)
            }
            guard fits else { throw syntaxError("integer outside the 64-bit range") }
            return digits == 1 && body[integerStart] == Self.digit0 ? .zero : .number
        }
        // The power of ten of the first significant digit decides; only at 308 is the value parsed.
        var magnitude: Int?
        if body[integerStart] != Self.digit0 {
            magnitude = integerEnd - integerStart - 1
        } else {
            var position = integerEnd + 1
            while position < fractionEnd {
                if body[position] != Self.digit0 {
                    magnitude = integerEnd - position
                    break
                }
                position += 1
            }
        }
        guard let magnitude else { return .number }  // a zero
        let power = magnitude + exponent
        if power > 308 || (power == 308 && !(Double(String(decoding: body[start..<index], as: UTF8.self))?.isFinite ?? false)) {
            throw syntaxError("number outside the range of a double")
        }
        return .number
    }

    /// Whether the digits `digits` (as many as `limit`) are greater than `limit`.
    private static func greater(_ digits: ArraySlice<UInt8>, than limit: [UInt8]) -> Bool {
        for (digit, bound) in zip(digits, limit) where digit != bound { return digit > bound }
        return false
    }

    /// A string at `index` (its opening quote); validates escapes and UTF-8, returns its content.
    private mutating func string() throws(OTLPBodyError) -> StringToken {
        index += 1
        let start = index
        var escaped = false
        while true {
            guard index < body.count else { throw syntaxError("unterminated string") }
            let byte = body[index]
            if byte >= 0x20 && byte < 0x80 && byte != Self.quote && byte != Self.backslash {
                index += 1
                continue
            }
            if byte == Self.quote { break }
            if byte == Self.backslash {
                escaped = true
                try escape()
                continue
            }
            guard byte >= 0x80 else { throw syntaxError("control character in a string") }
            try utf8Sequence()
        }
        let token = StringToken(start: start, end: index, escaped: escaped)
        index += 1
        return token
    }

    private mutating func escape() throws(OTLPBodyError) {
        guard index + 1 < body.count else { throw syntaxError("unterminated string") }
        switch body[index + 1] {
        case Self.quote, Self.backslash, UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
            UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
            index += 2
        case UInt8(ascii: "u"):
            guard let value = hex4(index + 2) else { throw syntaxError("invalid \\u escape") }
            guard value != 0 else { throw syntaxError("\\u0000 in a string") }
            guard value < 0xDC00 || value > 0xDFFF else { throw syntaxError("unpaired surrogate escape") }
            index += 6
            if value >= 0xD800 && value <= 0xDBFF {
                guard index + 1 < body.count, body[index] == Self.backslash, body[index + 1] == UInt8(ascii: "u"),
                    let low = hex4(index + 2), low >= 0xDC00 && low <= 0xDFFF
                else { throw syntaxError("unpaired surrogate escape") }
                index += 6
            }
        default:
            throw syntaxError("invalid escape in a string")
        }
    }

    /// The value of four hex digits at `position`, nil when they are not.
    private mutating func hex4(_ position: Int) -> UInt32? {
        guard body.count - position >= 4 else { return nil }
        var value: UInt32 = 0
        for offset in 0..<4 {
            let byte = body[position + offset]
            let digit: UInt8
            switch byte {
            case Self.digit0...Self.digit9: digit = byte - Self.digit0
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: return nil
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    /// One multi-byte UTF-8 sequence at `index`, well-formed by Unicode table 3-7.
    private mutating func utf8Sequence() throws(OTLPBodyError) {
        let lead = body[index]
        let continuations: Int
        var low: UInt8 = 0x80
        var high: UInt8 = 0xBF
        switch lead {
        case 0xC2...0xDF: continuations = 1
        case 0xE0: (continuations, low) = (2, 0xA0)
        case 0xE1...0xEC, 0xEE...0xEF: continuations = 2
        case 0xED: (continuations, high) = (2, 0x9F)
        case 0xF0: (continuations, low) = (3, 0x90)
        case 0xF1...0xF3: continuations = 3
        case 0xF4: (continuations, high) = (3, 0x8F)
        default: throw syntaxError("invalid UTF-8")
        }
        guard body.count - index > continuations else { throw syntaxError("invalid UTF-8") }
        let second = body[index + 1]
        guard second >= low && second <= high else { throw syntaxError("invalid UTF-8") }
        if continuations > 1 {
            for offset in 2...continuations where body[index + offset] & 0xC0 != 0x80 {
                throw syntaxError("invalid UTF-8")
            }
        }
        index += continuations + 1
    }

    /// The content of a validated string with its escapes resolved (in `scratch` when it had any).
    private mutating func decoded(_ token: StringToken) -> [UInt8] {
        guard token.escaped else { return Array(body[token.start..<token.end]) }
        scratch.removeAll(keepingCapacity: true)
        Self.decode(body, token, into: &scratch)
        return scratch
    }

    /// Appends the content of a validated string, escapes resolved, as UTF-8.
    private static func decode(_ body: [UInt8], _ token: StringToken, into buffer: inout [UInt8]) {
        var position = token.start
        while position < token.end {
            let byte = body[position]
            guard byte == backslash else {
                buffer.append(byte)
                position += 1
                continue
            }
            let code = body[position + 1]
            position += 2
            switch code {
            case UInt8(ascii: "u"):
                var scalar = hexValue(body, position)
                position += 4
                if scalar >= 0xD800 && scalar <= 0xDBFF {
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (hexValue(body, position + 2) - 0xDC00)
                    position += 6
                }
                // `escape` let through only scalars: no lone surrogates, nothing past U+10FFFF.
                buffer.append(contentsOf: UTF8.encode(Unicode.Scalar(scalar)!)!)
            case UInt8(ascii: "b"): buffer.append(0x08)
            case UInt8(ascii: "f"): buffer.append(0x0C)
            case UInt8(ascii: "n"): buffer.append(0x0A)
            case UInt8(ascii: "r"): buffer.append(0x0D)
            case UInt8(ascii: "t"): buffer.append(0x09)
            default: buffer.append(code)  // " \ /
            }
        }
    }

    private static func hexValue(_ body: [UInt8], _ position: Int) -> UInt32 {
        var value: UInt32 = 0
        for byte in body[position..<(position + 4)] {
            value = value << 4 | UInt32(byte <= digit9 ? byte - digit0 : (byte | 0x20) - UInt8(ascii: "a") + 10)
        }
        return value
    }

    // MARK: - Member names

    /// Reads a member name; refuses it when an earlier member of the same object (names from
    /// `base` on) has the same decoded name, or leaves that to `closeNames` for a large object.
    private mutating func memberName(_ base: Int) throws(OTLPBodyError) -> NameRef {
        guard index < body.count, body[index] == Self.quote else { throw syntaxError("member name expected") }
        let position = index
        let token = try string()
        var name: NameRef
        if token.escaped {
            let start = nameBytes.count
            Self.decode(body, token, into: &nameBytes)
            name = NameRef(start: UInt32(start), count: UInt32(nameBytes.count - start), decoded: true)
        } else {
            name = NameRef(start: UInt32(token.start), count: UInt32(token.end - token.start), decoded: false)
        }
        let count = Int(name.count)
        if count > 0 {
            name.fingerprint = UInt32(truncatingIfNeeded: count) << 24 | UInt32(nameByte(name, 0)) << 16
                | UInt32(nameByte(name, count / 2)) << 8 | UInt32(nameByte(name, count - 1))
        }
        if names.count - base < Self.smallObject {
            for other in names[base...] where other.fingerprint == name.fingerprint && sameName(other, name) {
                throw syntaxError("duplicate object member", at: position)
            }
        }
        names.append(name)
        return name
    }

    /// Ends an object's names: a large object is checked for duplicates by sorting them.
    private mutating func closeNames(_ base: Int, _ bytesBase: Int) throws(OTLPBodyError) {
        if names.count - base > Self.smallObject {
            let (body, nameBytes) = (self.body, self.nameBytes)
            func byte(_ name: NameRef, _ offset: Int) -> UInt8 {
                name.decoded ? nameBytes[Int(name.start) + offset] : body[Int(name.start) + offset]
            }
            func less(_ a: NameRef, _ b: NameRef) -> Bool {
                if a.fingerprint != b.fingerprint { return a.fingerprint < b.fingerprint }
                if a.count != b.count { return a.count < b.count }
                for offset in 0..<Int(a.count) where byte(a, offset) != byte(b, offset) {
                    return byte(a, offset) < byte(b, offset)
                }
                return false
            }
            let sorted = names[base...].sorted(by: less)
            for position in 1..<sorted.count where !less(sorted[position - 1], sorted[position]) {
                throw syntaxError("duplicate object member")
            }
        }
        // removeLast, not removeSubrange: the latter reallocates an array that has no storage yet.
        if names.count > base { names.removeLast(names.count - base) }
        if nameBytes.count > bytesBase { nameBytes.removeLast(nameBytes.count - bytesBase) }
    }

    private mutating func nameByte(_ name: NameRef, _ offset: Int) -> UInt8 {
        name.decoded ? nameBytes[Int(name.start) + offset] : body[Int(name.start) + offset]
    }

    private mutating func sameName(_ a: NameRef, _ b: NameRef) -> Bool {
        guard a.count == b.count else { return false }
        for offset in 0..<Int(a.count) where nameByte(a, offset) != nameByte(b, offset) { return false }
        return true
    }

    private mutating func isName(_ name: NameRef, _ literal: [UInt8]) -> Bool {
        guard Int(name.count) == literal.count else { return false }
        for offset in 0..<literal.count where nameByte(name, offset) != literal[offset] { return false }
        return true
    }

    /// Whether `name` is `field` by its JSON name (false) or its proto name (true); nil when neither.
    private mutating func spelling(_ name: NameRef, _ field: Name) -> Bool? {
        if isName(name, field.jsonBytes) { return false }
        if field.protoBytes != field.jsonBytes && isName(name, field.protoBytes) { return true }
        return nil
    }

    // MARK: - Tokens
    //
    // The helpers that only read are `mutating` all the same: called from a mutating method, a
    // non-mutating one made the compiler copy the whole editor (336 bytes, and its arrays retained)
    // for each call, a fifth of the time in the first measurements.

    private mutating func enter() throws(OTLPBodyError) {
        depth += 1
        guard depth <= Self.maxDepth else { throw syntaxError("nesting deeper than \(Self.maxDepth) levels") }
    }

    @inline(__always)
    private mutating func skipWhitespace() {
        while index < body.count {
            let byte = body[index]
            guard byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 else { return }
            index += 1
        }
    }

    /// Whether the next byte is `byte`; the end of the body is refused.
    private mutating func at(_ byte: UInt8) throws(OTLPBodyError) -> Bool {
        guard index < body.count else { throw syntaxError("unexpected end of body") }
        return body[index] == byte
    }

    private mutating func colon() throws(OTLPBodyError) {
        skipWhitespace()
        guard try at(UInt8(ascii: ":")) else { throw syntaxError("':' expected") }
        index += 1
        skipWhitespace()
    }

    /// After a member: true past a comma (and whitespace), false at `close`.
    private mutating func separator(_ close: UInt8) throws(OTLPBodyError) -> Bool {
        skipWhitespace()
        if try at(Self.comma) {
            index += 1
            skipWhitespace()
            return true
        }
        guard try at(close) else { throw syntaxError(close == Self.closeBrace ? "',' or '}' expected" : "',' or ']' expected") }
        return false
    }

    /// A refusal of the syntax at `position` (line and column, 1-based, columns in bytes); the
    /// reason is one of this file's fixed texts, never a byte of the body.
    private func syntaxError(_ reason: String, at position: Int? = nil) -> OTLPBodyError {
        let position = min(position ?? index, body.count)
        var line = 1
        var lineStart = 0
        for offset in 0..<position where body[offset] == 0x0A {
            line += 1
            lineStart = offset + 1
        }
        return OTLPBodyError("OTLP/JSON body is not valid JSON (line \(line), column \(position - lineStart + 1): \(reason))")
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= digit0 && byte <= digit9 }

    static let quote = UInt8(ascii: "\"")
    static let backslash = UInt8(ascii: "\\")
    static let comma = UInt8(ascii: ",")
    static let minus = UInt8(ascii: "-")
    static let digit0 = UInt8(ascii: "0")
    static let digit9 = UInt8(ascii: "9")
    static let openBrace = UInt8(ascii: "{")
    static let closeBrace = UInt8(ascii: "}")
    static let openBracket = UInt8(ascii: "[")
    static let closeBracket = UInt8(ascii: "]")
    static let trueBytes = Array("true".utf8)
    static let falseBytes = Array("false".utf8)
    static let nullBytes = Array("null".utf8)
    static let int64MaxDigits = Array("9223372036854775807".utf8)
    static let int64MinDigits = Array("9223372036854775808".utf8)
}
