import ProxyYAML

/// What a scalar means to the readers. Plain scalars are resolved by the YAML 1.1 rules the
/// configuration has always been read with (Yams' default resolver, PyYAML's `SafeLoader`): `yes`/`off`
/// are booleans, `1:30` is 90, `0x10` is 16, `010` is octal 8; quoted and block scalars are strings.
enum ScalarKind: Equatable {
    case null, bool, int, float, string
}

extension YAMLScalar {
    var kind: ScalarKind {
        guard isPlain else { return .string }
        if isNull { return .null }
        if Self.booleans[text] != nil { return .bool }
        if YAML11.isInt(text) { return .int }
        if YAML11.isFloat(text) { return .float }
        return .string
    }

    /// The boolean of a plain `true`/`yes`/`on`/`false`/`no`/`off` (in the three usual cases).
    var bool: Bool? { isPlain ? Self.booleans[text] : nil }

    /// The integer of a plain scalar (binary, octal, decimal, hexadecimal, sexagesimal, `_` separators);
    /// nil when it is not one or does not fit in an `Int`.
    var int: Int? { isPlain ? YAML11.int(text) : nil }

    /// The number of a plain scalar, including `.inf` and `.nan`; nil when it is not one.
    var float: Double? { isPlain ? YAML11.float(text) : nil }

    private static let booleans: [String: Bool] = {
        var table: [String: Bool] = [:]
        for (words, value) in [(["yes", "true", "on"], true), (["no", "false", "off"], false)] {
            for word in words {
                table[word] = value
                table[word.prefix(1).uppercased() + word.dropFirst()] = value
                table[word.uppercased()] = value
            }
        }
        return table
    }()
}

/// The YAML 1.1 int and float patterns and constructors (Yams' `Resolver.int`, `Resolver.float`,
/// `Int.construct`, `Double.construct`), written out without regular expressions.
enum YAML11 {
    private static func isDigit(_ c: Character) -> Bool { c >= "0" && c <= "9" }
    private static func isDigitOrUnderscore(_ c: Character) -> Bool { isDigit(c) || c == "_" }

    /// `[-+]?`, then the rest.
    private static func unsigned(_ text: String) -> Substring {
        text.hasPrefix("-") || text.hasPrefix("+") ? text.dropFirst() : text[...]
    }

    /// `(:[0-5]?[0-9])+` over `parts` (the pieces after the first colon).
    private static func areSexagesimalParts(_ parts: ArraySlice<Substring>) -> Bool {
        !parts.isEmpty && parts.allSatisfy { part in
            (part.count == 1 && isDigit(part.first!))
                || (part.count == 2 && ("0"..."5").contains(part.first!) && isDigit(part.last!))
        }
    }

    static func isInt(_ text: String) -> Bool {
        let body = unsigned(text)
        if body.hasPrefix("0b") { return body.count > 2 && body.dropFirst(2).allSatisfy { $0 == "0" || $0 == "1" || $0 == "_" } }
        if body.hasPrefix("0x") { return body.count > 2 && body.dropFirst(2).allSatisfy { $0.isHexDigit || $0 == "_" } }
        if body.hasPrefix("0o") { return body.count > 2 && body.dropFirst(2).allSatisfy { ("0"..."7").contains($0) || $0 == "_" } }
        if body == "0" { return true }
        if body.hasPrefix("0") { return body.dropFirst().allSatisfy { ("0"..."7").contains($0) || $0 == "_" } }
        guard let first = body.first, ("1"..."9").contains(first) else { return false }
        let parts = body.split(separator: ":", omittingEmptySubsequences: false)
        guard parts[0].allSatisfy(isDigitOrUnderscore) else { return false }
        return parts.count == 1 || areSexagesimalParts(parts.dropFirst())
    }

    static func isFloat(_ text: String) -> Bool {
        switch text {
        case ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF", ".nan", ".NaN", ".NAN":
            return true
        default:
            break
        }
        if text.hasPrefix(".") {
            // \.[0-9_]+([eE][-+][0-9]+)?
            var rest = text.dropFirst()
            let mantissa = rest.prefix(while: isDigitOrUnderscore)
            guard !mantissa.isEmpty else { return false }
            rest = rest.dropFirst(mantissa.count)
            if rest.isEmpty { return true }
            guard rest.first == "e" || rest.first == "E" else { return false }
            rest = rest.dropFirst()
            guard rest.first == "-" || rest.first == "+" else { return false }
            rest = rest.dropFirst()
            return !rest.isEmpty && rest.allSatisfy(isDigit)
        }
        var body = unsigned(text)
        guard let first = body.first, isDigit(first) else { return false }
        if body.contains(":") {
            // [0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*
            guard let point = body.firstIndex(of: ".") else { return false }
            let fraction = body[body.index(after: point)...]
            let parts = body[..<point].split(separator: ":", omittingEmptySubsequences: false)
            return parts[0].allSatisfy(isDigitOrUnderscore) && areSexagesimalParts(parts.dropFirst())
                && fraction.allSatisfy(isDigitOrUnderscore)
        }
        // [0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?
        body = body.drop(while: isDigitOrUnderscore)
        if body.first == "." { body = body.dropFirst().drop(while: isDigitOrUnderscore) }
        if body.isEmpty { return true }
        guard body.first == "e" || body.first == "E" else { return false }
        body = body.dropFirst()
        if body.first == "-" || body.first == "+" { body = body.dropFirst() }
        return !body.isEmpty && body.allSatisfy(isDigit)
    }

    static func int(_ text: String) -> Int? {
        let stripped = text.filter { $0 != "_" }
        if stripped == "0" { return 0 }
        let negative = stripped.hasPrefix("-")
        let sign = negative ? "-" : ""
        let body = unsigned(stripped)
        for (prefix, radix) in [("0x", 16), ("0b", 2), ("0o", 8), ("0", 8)] where body.hasPrefix(prefix) {
            return Int(sign + body.dropFirst(prefix.count), radix: radix)
        }
        if body.contains(":") {
            guard let value = sexagesimal(body) else { return nil }
            return negative ? -value : value
        }
        return Int(stripped)
    }

    static func float(_ text: String) -> Double? {
        switch text.lowercased() {
        case ".inf", "+.inf": return .infinity
        case "-.inf": return -.infinity
        case ".nan": return .nan
        default: break
        }
        let stripped = text.filter { $0 != "_" }
        if stripped.contains(":") {
            let negative = stripped.hasPrefix("-")
            let body = unsigned(stripped)
            guard let point = body.firstIndex(of: "."),
                  let whole = sexagesimal(body[..<point]),
                  let fraction = Double("0" + body[point...])
            else { return Double(stripped) }
            let value = Double(whole) + fraction
            return negative ? -value : value
        }
        return Double(stripped)
    }

    /// "1:30" → 90, "1:00:00" → 3600; nil on overflow or a piece that is not a number.
    private static func sexagesimal(_ text: Substring) -> Int? {
        var value = 0
        for part in text.split(separator: ":", omittingEmptySubsequences: false) {
            guard let digit = Int(part) else { return nil }
            let (shifted, overflow) = value.multipliedReportingOverflow(by: 60)
            let (sum, overflowSum) = shifted.addingReportingOverflow(digit)
            guard !overflow, !overflowSum else { return nil }
            value = sum
        }
        return value
    }
}
