import ProxySystem

/// Formats an access log line straight into bytes: no intermediate fields, strings or number
/// descriptions, so a line costs about a microsecond. The same fields, order and escaping as
/// `LogLine.render` (JSON: every value escaped as a JSON string; logfmt: a value quoted with JSON
/// escapes when it holds a space, `=`, a quote, a backslash or a control character), so a value can
/// never break the line or inject a field.
enum AccessLogEncoder {
    static func append(_ record: RequestRecord, format: AccessLog.Format, to out: inout [UInt8]) {
        var line = Line(format: format)
        line.field("time", out: &out) { appendTimestamp(record.time, to: &$0, quoted: format == .json) }
        line.string("msg", "request", out: &out)
        line.string("transport", record.transport, out: &out)
        if let signal = record.signal { line.string("signal", signal, out: &out) }
        if let tenant = record.tenant { line.string("tenant", tenant, out: &out) }
        if let principal = record.principal { line.string("principal", principal, out: &out) }
        line.number("status", record.status, out: &out)
        if let grpcStatus = record.grpcStatus { line.number("grpc_status", grpcStatus, out: &out) }
        line.string("auth_result", record.authResult, out: &out)
        if let reason = record.authReason { line.string("auth_reason", reason, out: &out) }
        line.string("outcome", record.outcome, out: &out)
        line.number("bytes_in", record.bytesIn, out: &out)
        line.number("bytes_out", record.bytesOut, out: &out)
        line.field("duration_ms", out: &out) { appendMilliseconds(record.duration, to: &$0) }
        if let peer = record.peer { line.string("peer", peer, out: &out) }
        line.end(out: &out)
    }

    /// Writes keys and separators in the line's format; values are appended by the callers.
    private struct Line {
        let format: AccessLog.Format
        private var first = true

        init(format: AccessLog.Format) {
            self.format = format
        }

        mutating func field(_ key: StaticString, out: inout [UInt8], value: (inout [UInt8]) -> Void) {
            switch format {
            case .json:
                out.append(first ? UInt8(ascii: "{") : UInt8(ascii: ","))
                out.append(UInt8(ascii: "\""))
                key.withUTF8Buffer { out.append(contentsOf: $0) }
                out.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
            case .logfmt:
                if !first { out.append(UInt8(ascii: " ")) }
                key.withUTF8Buffer { out.append(contentsOf: $0) }
                out.append(UInt8(ascii: "="))
            }
            first = false
            value(&out)
        }

        mutating func string(_ key: StaticString, _ text: String, out: inout [UInt8]) {
            let format = self.format
            field(key, out: &out) { out in
                switch format {
                case .json: AccessLogEncoder.appendJSONString(text, to: &out)
                case .logfmt: AccessLogEncoder.appendLogfmtValue(text, to: &out)
                }
            }
        }

        mutating func number(_ key: StaticString, _ value: Int, out: inout [UInt8]) {
            field(key, out: &out) { AccessLogEncoder.appendDecimal(value, to: &$0) }
        }

        func end(out: inout [UInt8]) {
            if format == .json { out.append(UInt8(ascii: "}")) }
            out.append(UInt8(ascii: "\n"))
        }
    }

    // MARK: Values

    static func appendDecimal(_ value: Int, to out: inout [UInt8]) {
        if value < 0 {
            out.append(UInt8(ascii: "-"))
            appendDecimal(UInt(value.magnitude), to: &out)
        } else {
            appendDecimal(UInt(value), to: &out)
        }
    }

    static func appendDecimal(_ value: UInt, to out: inout [UInt8], width: Int = 1) {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        var rest = value
        withUnsafeMutableBytes(of: &digits) { buffer in
            repeat {
                buffer[count] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
                count += 1
            } while rest > 0 || count < width
            while count > 0 {
                count -= 1
                out.append(buffer[count])
            }
        }
    }

    /// Milliseconds with up to three decimals, shortest form with at least one decimal (`1.5`, `2.0`,
    /// `1001.486`), rounded to the microsecond: what `Double` printing of the rounded value gives.
    static func appendMilliseconds(_ duration: Duration, to out: inout [UInt8]) {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0, seconds < 1 << 40 else {
            out.append(UInt8(ascii: "0"))
            return
        }
        let micros = UInt(seconds) * 1_000_000 + UInt((attoseconds + 500_000_000_000) / 1_000_000_000_000)
        appendDecimal(micros / 1000, to: &out)
        out.append(UInt8(ascii: "."))
        var fraction = micros % 1000
        if fraction == 0 {
            out.append(UInt8(ascii: "0"))
            return
        }
        var width = 3
        while fraction % 10 == 0 {
            fraction /= 10
            width -= 1
        }
        appendDecimal(fraction, to: &out, width: width)
    }

    /// RFC 3339 UTC with milliseconds (`2026-01-02T03:04:05.678Z`), from integer arithmetic on the days
    /// since 1970 (the civil calendar algorithm of H. Hinnant), without `gmtime_r`.
    static func appendTimestamp(_ time: WallTime, to out: inout [UInt8], quoted: Bool) {
        let interval = time.secondsSince1970
        guard interval.isFinite, interval >= 0, interval < 253_402_300_800 else {
            let text = LogLine.timestamp(time)
            if quoted { appendJSONString(text, to: &out) } else { appendLogfmtValue(text, to: &out) }
            return
        }
        if quoted { out.append(UInt8(ascii: "\"")) }
        let whole = Int(interval.rounded(.down))
        let millis = min(999, Int((interval - Double(whole)) * 1000))
        let days = whole / 86_400
        let secondOfDay = whole % 86_400
        // Days to year, month, day.
        let z = days + 719_468
        let era = z / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        appendDecimal(UInt(year), to: &out, width: 4)
        out.append(UInt8(ascii: "-"))
        appendDecimal(UInt(month), to: &out, width: 2)
        out.append(UInt8(ascii: "-"))
        appendDecimal(UInt(day), to: &out, width: 2)
        out.append(UInt8(ascii: "T"))
        appendDecimal(UInt(secondOfDay / 3600), to: &out, width: 2)
        out.append(UInt8(ascii: ":"))
        appendDecimal(UInt(secondOfDay / 60 % 60), to: &out, width: 2)
        out.append(UInt8(ascii: ":"))
        appendDecimal(UInt(secondOfDay % 60), to: &out, width: 2)
        out.append(UInt8(ascii: "."))
        appendDecimal(UInt(millis), to: &out, width: 3)
        out.append(UInt8(ascii: "Z"))
        if quoted { out.append(UInt8(ascii: "\"")) }
    }

    /// A JSON string: `"` and `\` escaped, control characters, DEL, U+2028 and U+2029 as `\uXXXX`
    /// (so the line stays one line for every reader), other UTF-8 copied as is.
    static func appendJSONString(_ text: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var text = text
        text.withUTF8 { bytes in
            var index = 0
            var copiedUpTo = 0
            while index < bytes.count {
                let byte = bytes[index]
                let escape: StaticString?
                var length = 1
                switch byte {
                case UInt8(ascii: "\""): escape = "\\\""
                case UInt8(ascii: "\\"): escape = "\\\\"
                case UInt8(ascii: "\n"): escape = "\\n"
                case UInt8(ascii: "\r"): escape = "\\r"
                case UInt8(ascii: "\t"): escape = "\\t"
                case 0xE2 where index + 2 < bytes.count && bytes[index + 1] == 0x80 && bytes[index + 2] == 0xA8:
                    escape = "\\u2028"
                    length = 3
                case 0xE2 where index + 2 < bytes.count && bytes[index + 1] == 0x80 && bytes[index + 2] == 0xA9:
                    escape = "\\u2029"
                    length = 3
                default:
                    escape = nil
                }
                if let escape {
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[copiedUpTo..<index]))
                    escape.withUTF8Buffer { out.append(contentsOf: $0) }
                    index += length
                    copiedUpTo = index
                } else if byte < 0x20 || byte == 0x7F {
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[copiedUpTo..<index]))
                    let hex: [UInt8] = Array("0123456789abcdef".utf8)
                    out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                            hex[Int(byte >> 4)], hex[Int(byte & 0xF)]])
                    index += 1
                    copiedUpTo = index
                } else {
                    index += 1
                }
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[copiedUpTo..<bytes.count]))
        }
        out.append(UInt8(ascii: "\""))
    }

    /// A logfmt value: bare when it needs no quoting, else a JSON string.
    static func appendLogfmtValue(_ text: String, to out: inout [UInt8]) {
        let needsQuotes = text.isEmpty || text.utf8.contains { byte in
            byte == UInt8(ascii: " ") || byte == UInt8(ascii: "=") || byte == UInt8(ascii: "\"")
                || byte == UInt8(ascii: "\\") || byte < 0x20 || byte == 0x7F
        }
        if needsQuotes {
            appendJSONString(text, to: &out)
        } else {
            out.append(contentsOf: text.utf8)
        }
    }
}
