/// Why a size or duration text was refused; `message` is written to follow the key name in a problem.
struct UnitError: Error, Equatable {
    var message: String
}

/// Parsing of the unit-bearing values in the file: byte sizes ("4MiB") and durations ("500ms").
/// Pure functions on text; the YAML layer decides which scalars reach them.
enum Units {
    static let sizeUnitList = "B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024)"
    static let durationUnitList = "ms, s, m, h (also ns, us)"

    /// Lower-cased unit → bytes. Units are matched case-insensitively: there are no bit units to confuse.
    private static let sizeUnits: [String: Int] = [
        "b": 1,
        "kb": 1_000, "mb": 1_000_000, "gb": 1_000_000_000,
        "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
    ]

    private static let durationUnitsInNanoseconds: [String: Double] = [
        "ns": 1, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9,
    ]

    /// "4194304", "4MiB", "512 KiB", "1.5GB" → bytes (fractions of a byte are dropped). Must be > 0.
    static func parseSize(_ raw: String) throws(UnitError) -> Int {
        let text = trimmed(raw)
        let (number, rest) = splitNumber(text)
        let unit = trimmed(String(rest))
        guard let value = Double(number), !number.isEmpty else {
            throw UnitError(message: "\(quote(raw)) is not a size: write a number of bytes or a number with a unit, "
                + "\(sizeUnitList), e.g. 4MiB")
        }
        let multiplier: Int
        if unit.isEmpty {
            multiplier = 1
        } else if let known = sizeUnits[unit.lowercased()] {
            multiplier = known
        } else {
            throw UnitError(message: "unknown unit \(quote(unit)) in \(quote(raw)): use \(sizeUnitList), e.g. 4MiB")
        }
        guard value > 0 else {
            throw UnitError(message: "must be greater than 0, e.g. 4MiB")
        }
        if unit.isEmpty && number.contains(".") {
            throw UnitError(message: "\(quote(raw)) is not a whole number of bytes: add a unit, "
                + "\(sizeUnitList), e.g. 1.5MiB")
        }
        let bytes = value * Double(multiplier)
        guard bytes < Double(Int32.max) * Double(Int32.max) else {
            throw UnitError(message: "\(quote(raw)) is too large")
        }
        let whole = Int(bytes)
        guard whole > 0 else {
            throw UnitError(message: "must be greater than 0, e.g. 4MiB")
        }
        return whole
    }

    /// "500ms", "5s", "2m", "1h", "1m30s" (Go duration syntax, as in the Collector) or a plain
    /// number of seconds ("90", "0.5"). Must be > 0.
    static func parseDuration(_ raw: String) throws(UnitError) -> Duration {
        let text = trimmed(raw)
        let invalid = UnitError(message: "\(quote(raw)) is not a duration: write a number with a unit, "
            + "\(durationUnitList), e.g. 500ms, 5s, 2m, 1h30m, or a plain number of seconds")
        guard !text.isEmpty else { throw invalid }

        var nanoseconds = 0.0
        let (plainNumber, afterPlainNumber) = splitNumber(text)
        if afterPlainNumber.isEmpty {
            // A plain number: seconds.
            guard let seconds = Double(plainNumber) else { throw invalid }
            nanoseconds = seconds * 1e9
        } else {
            var rest = Substring(text)
            while !rest.isEmpty {
                let (number, afterNumber) = splitNumber(rest)
                // Only the first number may carry a sign ("-5s" is refused below as not > 0).
                guard !number.isEmpty, let value = Double(number),
                      !(number.hasPrefix("-") && rest.startIndex != text.startIndex)
                else { throw invalid }
                let unitText = afterNumber.drop(while: { $0 == " " }).prefix(while: { $0.isLetter })
                guard let unit = durationUnitsInNanoseconds[String(unitText)] else {
                    if unitText.isEmpty { throw invalid }
                    throw UnitError(message: "unknown unit \(quote(String(unitText))) in \(quote(raw)): use \(durationUnitList), "
                        + "e.g. 500ms, 5s, 2m")
                }
                nanoseconds += value * unit
                rest = afterNumber.drop(while: { $0 == " " }).dropFirst(unitText.count).drop(while: { $0 == " " })
            }
        }
        guard nanoseconds.isFinite, nanoseconds < 1e18 else {
            throw UnitError(message: "\(quote(raw)) is too long")
        }
        guard nanoseconds >= 1 else {
            throw UnitError(message: "must be greater than 0, e.g. 5s")
        }
        return .nanoseconds(Int64(nanoseconds))
    }

    /// Leading digits with at most one '.', and the text after them. A sign is part of the number
    /// so that "-5s" reads as a negative value (refused as "must be greater than 0").
    private static func splitNumber<S: StringProtocol>(_ text: S) -> (String, S.SubSequence) {
        var end = text.startIndex
        var seenDot = false
        if end < text.endIndex, text[end] == "-" { end = text.index(after: end) }
        while end < text.endIndex {
            let character = text[end]
            if character.isASCII && character.isNumber {
            } else if character == "." && !seenDot {
                seenDot = true
            } else {
                break
            }
            end = text.index(after: end)
        }
        return (String(text[text.startIndex..<end]), text[end...])
    }

    private static func trimmed(_ text: String) -> String {
        String(text.drop(while: { $0.isWhitespace }).reversed().drop(while: { $0.isWhitespace }).reversed())
    }
}
