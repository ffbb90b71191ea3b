// The protobuf side of OTLPPayload: one pass over the framing of an export request that counts
// its items and, when attributes are to be set, writes the edited request as it goes.
//
// Only the messages on the path request → ResourceX(1) → Resource(1) → attributes(1) → KeyValue
// and ResourceX → ScopeX(2) → items(2) (→ Metric data(5,7,9,10,11) → data_points(1)) are read;
// every other field is skipped by its length and copied unchanged. An edit changes the length of
// the Resource messages it touches and so of their ResourceX: those two length prefixes are the
// only bytes written anew. The ResourceX is walked first (items counted, Resource occurrences and
// the KeyValues to drop noted), its new length computed, then it is written out in one go.

/// One field of a protobuf message, as positions in the body.
struct WireField {
    var number: UInt64
    var wireType: UInt64
    /// The first byte of the tag.
    var start: Int
    /// The first byte after the tag: the length prefix of a length-delimited field.
    var lengthStart: Int
    /// The first byte of the value (for a length-delimited field, of its payload).
    var valueStart: Int
    /// One past the field's last byte.
    var end: Int
    /// The value of a varint field (0 for other wire types).
    var varint: UInt64
}

/// Reads the fields of one message in `bytes[range]`, in order; throws on malformed framing
/// (the same rules as `ProtoWalker`, with which it shares no code so the fuzz target can check
/// one against the other).
struct WireFields {
    let bytes: [UInt8]
    var index: Int
    let end: Int

    init(_ bytes: [UInt8], _ range: Range<Int>) {
        self.bytes = bytes
        self.index = range.lowerBound
        self.end = range.upperBound
    }

    @inline(__always)
    mutating func next() throws(OTLPBodyError) -> WireField? {
        guard index < end else { return nil }
        let start = index
        let key = try varint()
        let number = key >> 3
        guard number != 0, number <= 536_870_911 else { throw OTLPBodyError("invalid protobuf field number \(number)") }
        let lengthStart = index
        var value: UInt64 = 0
        switch key & 7 {
        case 0:
            value = try varint()
        case 1:
            guard end - index >= 8 else { throw OTLPBodyError("truncated protobuf fixed64 field \(number)") }
            index += 8
        case 2:
            let length = try varint()
            guard length <= UInt64(end - index) else {
                throw OTLPBodyError("protobuf field \(number) length runs past the end of its message")
            }
            let valueStart = index
            index += Int(length)
            return WireField(number: number, wireType: 2, start: start, lengthStart: lengthStart,
                             valueStart: valueStart, end: index, varint: 0)
        case 5:
            guard end - index >= 4 else { throw OTLPBodyError("truncated protobuf fixed32 field \(number)") }
            index += 4
        default:
            throw OTLPBodyError("unsupported protobuf wire type \(key & 7) for field \(number)")
        }
        return WireField(number: number, wireType: key & 7, start: start, lengthStart: lengthStart,
                         valueStart: lengthStart, end: index, varint: value)
    }

    /// A base-128 varint of at most 10 bytes whose value fits 64 bits.
    @inline(__always)
    private mutating func varint() throws(OTLPBodyError) -> UInt64 {
        guard index < end else { throw OTLPBodyError("truncated protobuf varint") }
        let first = bytes[index]
        index += 1
        if first < 0x80 { return UInt64(first) }
        var result = UInt64(first & 0x7F)
        var shift: UInt64 = 7
        while true {
            guard index < end else { throw OTLPBodyError("truncated protobuf varint") }
            let byte = bytes[index]
            index += 1
            if shift == 63 && byte > 1 { throw OTLPBodyError("protobuf varint longer than 64 bits") }
            result |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return result }
            shift += 7
        }
    }
}

/// One run over one body: `run()` once, then read `items` and (when editing) `output`.
/// Holds scratch arrays reused across the ResourceX messages of the body.
struct OTLPWireEditor {
    let signal: OTLPSignal
    let body: [UInt8]
    let names: OTLPMessageNames
    /// The keys to remove from every Resource (UTF-8); empty when only counting.
    let keys: [[UInt8]]
    /// The encoded `attributes` fields (tag, length, KeyValue) appended to every Resource.
    let added: [UInt8]
    let editing: Bool
    /// The longest output allowed; checked after each ResourceX is written.
    let limit: Int

    private(set) var items = 0
    private(set) var output: [UInt8] = []

    /// The `resource` fields of the ResourceX being read.
    private var resources: [WireField] = []
    /// For each of them: its new payload length, and where its removals end in `removals`.
    private var resourceLengths: [Int] = []
    private var removalEnds: [Int] = []
    /// Byte ranges of the KeyValue fields to drop, in body order.
    private var removals: [Range<Int>] = []

    init(signal: OTLPSignal, body: [UInt8], attributes: [ResourceAttribute]?, limit: Int = .max) {
        self.signal = signal
        self.limit = limit
        self.body = body
        self.names = OTLPMessageNames(signal)
        self.editing = attributes != nil
        self.keys = (attributes ?? []).map { Array($0.key.utf8) }
        var added: [UInt8] = []
        for attribute in attributes ?? [] {
            var anyValue: [UInt8] = []
            Self.appendField(&anyValue, 1, Array(attribute.value.utf8))  // AnyValue.string_value
            var keyValue: [UInt8] = []
            Self.appendField(&keyValue, 1, Array(attribute.key.utf8))    // KeyValue.key
            Self.appendField(&keyValue, 2, anyValue)                     // KeyValue.value
            Self.appendField(&added, 1, keyValue)                        // Resource.attributes
        }
        self.added = added
    }

    mutating func run() throws(OTLPBodyError) {
        if editing { output.reserveCapacity(body.count + 16 + added.count * 4) }
        var fields = WireFields(body, 0..<body.count)
        var copied = 0
        while let field = try fields.next() {
            switch field.number {
            case 1:  // resource_spans / resource_metrics / resource_logs / resource_profiles
                try requireLength(field, names.request)
                if editing {
                    output.append(contentsOf: body[copied..<field.lengthStart])
                    copied = field.end
                }
                try resourceX(field)
                if output.count > limit { throw OTLPPayload.tooLarge(limit) }
            case 2 where signal == .profiles:  // ExportProfilesServiceRequest.dictionary
                try requireLength(field, names.request)
            default:
                break
            }
        }
        if editing { output.append(contentsOf: body[copied...]) }
    }

    /// Reads one ResourceX; when editing, writes its new length prefix and payload.
    private mutating func resourceX(_ outer: WireField) throws(OTLPBodyError) {
        resources.removeAll(keepingCapacity: true)
        resourceLengths.removeAll(keepingCapacity: true)
        removalEnds.removeAll(keepingCapacity: true)
        removals.removeAll(keepingCapacity: true)
        var fields = WireFields(body, outer.valueStart..<outer.end)
        while let field = try fields.next() {
            switch field.number {
            case 1:  // resource
                try requireLength(field, names.resource)
                try resource(field)
            case 2:  // scope_spans / scope_metrics / scope_logs / scope_profiles
                try requireLength(field, names.resource)
                try scope(field)
            case 3:  // schema_url
                try requireLength(field, names.resource)
            default:
                break
            }
        }
        guard editing else { return }

        // The new KeyValues end the last occurrence; parsers merge the occurrences in order.
        if !resources.isEmpty { resourceLengths[resources.count - 1] += added.count }
        var length = outer.end - outer.valueStart
        for (index, field) in resources.enumerated() {
            let newLength = resourceLengths[index]
            length += Self.varintSize(newLength) + newLength - (field.end - field.lengthStart)
        }
        if resources.isEmpty { length += 1 + Self.varintSize(added.count) + added.count }
        Self.appendVarint(&output, UInt64(length))

        var copied = outer.valueStart
        var removal = 0
        for (index, field) in resources.enumerated() {
            output.append(contentsOf: body[copied..<field.lengthStart])  // up to and with the tag
            Self.appendVarint(&output, UInt64(resourceLengths[index]))
            var from = field.valueStart
            while removal < removalEnds[index] {
                output.append(contentsOf: body[from..<removals[removal].lowerBound])
                from = removals[removal].upperBound
                removal += 1
            }
            output.append(contentsOf: body[from..<field.end])
            if index == resources.count - 1 { output.append(contentsOf: added) }
            copied = field.end
        }
        output.append(contentsOf: body[copied..<outer.end])
        if resources.isEmpty {
            output.append(0x0A)  // ResourceX.resource, length-delimited
            Self.appendVarint(&output, UInt64(added.count))
            output.append(contentsOf: added)
        }
    }

    /// Reads one Resource: notes the KeyValues whose key is one of `keys` and its new length.
    private mutating func resource(_ outer: WireField) throws(OTLPBodyError) {
        var removed = 0
        var fields = WireFields(body, outer.valueStart..<outer.end)
        while let field = try fields.next() {
            switch field.number {
            case 1:  // attributes
                try requireLength(field, "Resource")
                if try keyValueMatches(field) {
                    removals.append(field.start..<field.end)
                    removed += field.end - field.start
                }
            case 2:  // dropped_attributes_count
                try requireVarint(field, "Resource")
            case 3:  // entity_refs
                try requireLength(field, "Resource")
            default:
                break
            }
        }
        resources.append(outer)
        resourceLengths.append(outer.end - outer.valueStart - removed)
        removalEnds.append(removals.count)
    }

    /// Whether the KeyValue's effective key (the last `key` field, as parsers keep) is one of `keys`.
    private func keyValueMatches(_ outer: WireField) throws(OTLPBodyError) -> Bool {
        var key = 0..<0
        var keyIndex: UInt64 = 0
        var fields = WireFields(body, outer.valueStart..<outer.end)
        while let field = try fields.next() {
            switch field.number {
            case 1:  // key
                try requireLength(field, "KeyValue")
                guard Self.isUTF8(body, field.valueStart..<field.end) else {
                    throw OTLPBodyError("Resource attribute key (KeyValue field 1) is not valid UTF-8")
                }
                key = field.valueStart..<field.end
            case 2:  // value
                try requireLength(field, "KeyValue")
            case 3:  // key_strindex (int32: parsers keep the low 32 bits)
                try requireVarint(field, "KeyValue")
                keyIndex = field.varint
            default:
                break
            }
        }
        guard UInt32(truncatingIfNeeded: keyIndex) == 0 else {
            throw OTLPBodyError("Resource attribute names its key by key_strindex (KeyValue field 3), which is not accepted")
        }
        guard editing else { return false }
        let candidate = body[key]
        for wanted in keys where wanted.count == candidate.count && wanted.elementsEqual(candidate) { return true }
        return false
    }

    /// Reads one ScopeX and counts its items.
    private mutating func scope(_ outer: WireField) throws(OTLPBodyError) {
        var fields = WireFields(body, outer.valueStart..<outer.end)
        while let field = try fields.next() {
            switch field.number {
            case 1, 3:  // scope, schema_url
                try requireLength(field, names.scope)
            case 2:  // spans / metrics / log_records / profiles
                try requireLength(field, names.scope)
                if signal == .metrics {
                    items += try dataPoints(field)
                } else {
                    items += 1
                }
            default:
                break
            }
        }
    }

    /// The data points a receiver decodes from one Metric. Its data is a oneof: a later member
    /// replaces an earlier one, a repeated member merges with the one before it.
    private func dataPoints(_ metric: WireField) throws(OTLPBodyError) -> Int {
        var member: UInt64 = 0
        var points = 0
        var fields = WireFields(body, metric.valueStart..<metric.end)
        while let field = try fields.next() {
            switch field.number {
            case 5, 7, 9, 10, 11:  // gauge, sum, histogram, exponential_histogram, summary
                try requireLength(field, "Metric")
                var count = 0
                var inner = WireFields(body, field.valueStart..<field.end)
                while let point = try inner.next() {
                    guard point.number == 1 else { continue }  // data_points
                    try requireLength(point, "Metric data field \(field.number)")
                    count += 1
                }
                if field.number == member {
                    points += count
                } else {
                    member = field.number
                    points = count
                }
            default:
                break
            }
        }
        return points
    }

    /// `message` is an autoclosure: a name built per call would cost more than the walk itself.
    @inline(__always)
    private func requireLength(_ field: WireField, _ message: @autoclosure () -> String) throws(OTLPBodyError) {
        guard field.wireType == 2 else {
            throw OTLPBodyError("\(message()) field \(field.number) has wire type \(field.wireType), expected length-delimited")
        }
    }

    @inline(__always)
    private func requireVarint(_ field: WireField, _ message: @autoclosure () -> String) throws(OTLPBodyError) {
        guard field.wireType == 0 else {
            throw OTLPBodyError("\(message()) field \(field.number) has wire type \(field.wireType), expected varint")
        }
    }

    static func varintSize(_ value: Int) -> Int {
        var value = UInt64(value)
        var size = 1
        while value >= 0x80 {
            value >>= 7
            size += 1
        }
        return size
    }

    static func appendVarint(_ bytes: inout [UInt8], _ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    static func appendField(_ bytes: inout [UInt8], _ number: UInt8, _ payload: [UInt8]) {
        bytes.append(number << 3 | 2)
        appendVarint(&bytes, UInt64(payload.count))
        bytes.append(contentsOf: payload)
    }

    /// Strict UTF-8 (no overlong forms, surrogates or values past U+10FFFF), as proto3 parsers check strings.
    static func isUTF8(_ bytes: [UInt8], _ range: Range<Int>) -> Bool {
        if bytes[range].allSatisfy({ $0 < 0x80 }) { return true }
        return String(validating: bytes[range], as: UTF8.self) != nil
    }
}
