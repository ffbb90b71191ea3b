// ProxyJSON: the only module that touches libjansson (DESIGN.md, "Layout").
//
// jansson does the strict parsing (duplicate members rejected, invalid UTF-8 rejected,
// integers that do not fit 64 bits rejected) and the encoding; the rest of the proxy sees
// only `JSONValue`, a plain Swift tree. No `json_t` ever escapes this file: `parse` copies
// the tree out and frees the document before returning, `encoded` builds a temporary
// document and frees it before returning. Both own their `json_t` through one `defer`.
internal import CJansson

/// A JSON document as Swift values, copied out of jansson.
///
/// Objects keep their members in document order (jansson iterates objects in insertion
/// order since 2.8), so `parse(x).encoded()` preserves member order. Equality is structural
/// and order-sensitive for object members: two objects with the same members in a
/// different order are not equal, because they do not encode to the same bytes.
/// Integers and reals stay distinct (`1` is `.integer(1)`, `1.0` is `.number(1.0)`).
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([(key: String, value: JSONValue)])

    /// Parses `bytes` strictly and copies the result into Swift values.
    ///
    /// Rejects duplicate object members, invalid UTF-8, `\u0000` in strings, integers
    /// outside the 64-bit range, trailing garbage, and nesting deeper than `maxDepth`
    /// arrays/objects (checked before jansson sees the input, so a hostile document
    /// cannot make the parser recurse deeply). The top level must be an object or an
    /// array unless `allowScalarTopLevel` is true.
    ///
    /// Error messages carry jansson's reason and position but never the offending input
    /// text, since documents may hold credentials (JWT claims, tokens).
    public static func parse(
        _ bytes: some Collection<UInt8>, maxDepth: Int = 64, allowScalarTopLevel: Bool = false
    ) throws(JSONError) -> JSONValue {
        let result: Result<JSONValue, JSONError>
        if let fast = bytes.withContiguousStorageIfAvailable({
            Self.parseBuffer($0, maxDepth: maxDepth, allowScalarTopLevel: allowScalarTopLevel)
        }) {
            result = fast
        } else {
            let copy = Array(bytes)
            result = copy.withUnsafeBufferPointer {
                Self.parseBuffer($0, maxDepth: maxDepth, allowScalarTopLevel: allowScalarTopLevel)
            }
        }
        return try result.get()
    }

    /// Compact encoding (no whitespace), member order preserved.
    /// Non-finite doubles, which JSON cannot express, are written as `null`.
    public func encoded() -> [UInt8] {
        guard let root = Self.makeJSON(self) else { return Array("null".utf8) }
        defer { otlp_json_decref(root) }  // the temporary document is ours alone
        let flags = Int(JSON_COMPACT) | Int(JSON_ENCODE_ANY)
        // First call measures, second call fills; json_dumpb returns 0 on failure.
        let size = json_dumpb(root, nil, 0, flags)
        guard size > 0 else { return Array("null".utf8) }
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            count = buffer.baseAddress.map { base in
                base.withMemoryRebound(to: CChar.self, capacity: size) { json_dumpb(root, $0, size, flags) }
            } ?? 0
        }
    }

    /// The value of object member `key` (the first one; parsed documents never have two),
    /// or nil for a missing member or a non-object.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first(where: { $0.key == key })?.value
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let elements) = self { return elements }
        return nil
    }

    public var stringValue: String? {
        if case .string(let string) = self { return string }
        return nil
    }

    public var objectValue: [(key: String, value: JSONValue)]? {
        if case .object(let members) = self { return members }
        return nil
    }

    public var int64Value: Int64? {
        if case .integer(let value) = self { return value }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    /// Integer or real as a Double (for claims such as `exp` that may be either).
    public var doubleValue: Double? {
        switch self {
        case .integer(let value): return Double(value)
        case .number(let value): return value
        default: return nil
        }
    }

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.integer(let a), .integer(let b)): return a == b
        case (.number(let a), .number(let b)): return a == b
        case (.string(let a), .string(let b)): return a == b
        case (.array(let a), .array(let b)): return a == b
        case (.object(let a), .object(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        default: return false
        }
    }
}

/// A parse failure: position (1-based line and column, as jansson counts them) and reason.
/// The message never quotes the input.
public struct JSONError: Error, Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var column: Int
    public var message: String

    public init(line: Int, column: Int, message: String) {
        self.line = line
        self.column = column
        self.message = message
    }

    public var description: String { "invalid JSON at line \(line), column \(column): \(message)" }
}

// MARK: - Parsing (C side)

extension JSONValue {
    fileprivate static func parseBuffer(
        _ buffer: UnsafeBufferPointer<UInt8>, maxDepth: Int, allowScalarTopLevel: Bool
    ) -> Result<JSONValue, JSONError> {
        if let depthError = checkDepth(buffer, maxDepth: maxDepth) { return .failure(depthError) }
        var flags = Int(JSON_REJECT_DUPLICATES)
        if allowScalarTopLevel { flags |= Int(JSON_DECODE_ANY) }
        var error = json_error_t()
        // json_loadb reads exactly `count` bytes; an empty buffer still needs a valid pointer.
        let root: UnsafeMutablePointer<json_t>? = buffer.withMemoryRebound(to: CChar.self) { chars in
            guard let base = chars.baseAddress else { return "".withCString { json_loadb($0, 0, flags, &error) } }
            return json_loadb(base, chars.count, flags, &error)
        }
        guard let root else { return .failure(JSONError(error)) }
        defer { otlp_json_decref(root) }  // the only reference; copy-out below takes none
        return .success(copyOut(root))
    }

    /// Copies a jansson tree into Swift values. Depth was bounded before parsing.
    private static func copyOut(_ node: UnsafeMutablePointer<json_t>) -> JSONValue {
        let type = otlp_json_typeof(node)
        switch type {
        case otlp_json_type_object():
            var members: [(key: String, value: JSONValue)] = []
            members.reserveCapacity(json_object_size(node))
            var iter = json_object_iter(node)
            while let current = iter {
                // Keys are validated UTF-8 (no NUL: JSON_ALLOW_NUL is not set), length-delimited.
                let keyPointer = json_object_iter_key(current)!
                let keyLength = json_object_iter_key_len(current)
                let key = keyPointer.withMemoryRebound(to: UInt8.self, capacity: keyLength) {
                    String(decoding: UnsafeBufferPointer(start: $0, count: keyLength), as: UTF8.self)
                }
                members.append((key: key, value: copyOut(json_object_iter_value(current)!)))
                iter = json_object_iter_next(node, current)
            }
            return .object(members)
        case otlp_json_type_array():
            let count = json_array_size(node)
            var elements: [JSONValue] = []
            elements.reserveCapacity(count)
            for index in 0..<count { elements.append(copyOut(json_array_get(node, index)!)) }
            return .array(elements)
        case otlp_json_type_string():
            let length = json_string_length(node)
            guard let chars = json_string_value(node) else { return .string("") }
            return .string(chars.withMemoryRebound(to: UInt8.self, capacity: length) {
                String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self)
            })
        case otlp_json_type_integer():
            return .integer(Int64(json_integer_value(node)))
        case otlp_json_type_real():
            return .number(json_real_value(node))
        case otlp_json_type_true():
            return .bool(true)
        case otlp_json_type_false():
            return .bool(false)
        default:
            return .null
        }
    }

    /// Counts array/object nesting outside strings; reports the first bracket that goes
    /// past `maxDepth`. Syntax errors are left to jansson.
    private static func checkDepth(_ buffer: UnsafeBufferPointer<UInt8>, maxDepth: Int) -> JSONError? {
        var depth = 0
        var inString = false
        var escaped = false
        var line = 1
        var column = 0
        for byte in buffer {
            if byte == UInt8(ascii: "\n") {
                line += 1
                column = 0
            } else {
                column += 1
            }
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""):
                inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                if depth > maxDepth {
                    return JSONError(line: line, column: column, message: "nesting deeper than \(maxDepth) levels")
                }
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                depth -= 1
            default:
                break
            }
        }
        return nil
    }
}

extension JSONError {
    /// Takes jansson's position and reason, dropping its "near '<input>'" suffix so no
    /// input text (possibly a credential) reaches a log line.
    fileprivate init(_ error: json_error_t) {
        var copy = error
        var text = String(cString: otlp_json_error_text(&copy))
        let marker = Array(" near '".utf8)
        let utf8 = Array(text.utf8)
        if utf8.count >= marker.count,
           let start = (0...(utf8.count - marker.count)).first(where: { utf8[$0..<($0 + marker.count)].elementsEqual(marker) }) {
            text = String(decoding: utf8[..<start], as: UTF8.self)
        }
        if text.isEmpty { text = "malformed document" }
        self.init(line: Int(error.line), column: Int(error.column), message: text)
    }
}

// MARK: - Encoding (C side)

extension JSONValue {
    /// Builds a new jansson tree (reference count 1, owned by the caller) or nil if
    /// jansson refuses a value (it cannot: Swift strings are valid UTF-8 and jansson's
    /// length-taking setters accept NUL).
    fileprivate static func makeJSON(_ value: JSONValue) -> UnsafeMutablePointer<json_t>? {
        switch value {
        case .null: return json_null()
        case .bool(let flag): return flag ? json_true() : json_false()
        case .integer(let number): return json_integer(json_int_t(number))
        case .number(let number): return number.isFinite ? json_real(number) : json_null()
        case .string(let string):
            return withCChars(string) { json_stringn($0, $1) }
        case .array(let elements):
            guard let array = json_array() else { return nil }
            for element in elements {
                // json_array_append_new steals the child reference, also on failure.
                guard let child = makeJSON(element), json_array_append_new(array, child) == 0 else {
                    otlp_json_decref(array)
                    return nil
                }
            }
            return array
        case .object(let members):
            guard let object = json_object() else { return nil }
            for member in members {
                // json_object_setn_new steals the child reference, also on failure.
                // Duplicate keys in a Swift-built object: the last one wins.
                let status: Int32 = withCChars(member.key) { key, keyLength in
                    guard let child = makeJSON(member.value) else { return -1 }
                    return json_object_setn_new(object, key, keyLength, child)
                }
                guard status == 0 else {
                    otlp_json_decref(object)
                    return nil
                }
            }
            return object
        }
    }
}

/// Calls `body` with a pointer to `string`'s UTF-8 bytes (not NUL-terminated) and their
/// count; the pointer is never nil, even for an empty string.
private func withCChars<R>(_ string: String, _ body: (UnsafePointer<CChar>, Int) -> R) -> R {
    var copy = string
    return copy.withUTF8 { utf8 in
        guard let base = utf8.baseAddress else { return "".withCString { body($0, 0) } }
        return base.withMemoryRebound(to: CChar.self, capacity: utf8.count) { body($0, utf8.count) }
    }
}
