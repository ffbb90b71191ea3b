import ProxySystem

/// Formats an access log line straight into bytes: no intermediate fields, strings or number
/// descriptions, so a line costs about a microsecond. The same fields, order and escaping as
/// `LogLine.render` (JSON: every value escaped as a JSON string; logfmt: a value quoted with JSON
/// escapes when it holds a space, `=`, a quote, a backslash or a control character), so a value can
/// never break the line or inject a field.
enum AccessLogEncoder {
    static func append(_ record: RequestRecord, format: AccessLog.Format, to out: inout [UInt8]) {
        // Every byte of a value escapes to at most six (`\u00XX`); keys, numbers and separators fit in
        // the fixed part. The line is built on the stack and appended once.
        var stringBytes = record.transport.utf8.count + record.authResult.utf8.count + record.outcome.utf8.count
        stringBytes += (record.signal?.utf8.count ?? 0) + (record.tenant?.utf8.count ?? 0)
        stringBytes += (record.principal?.utf8.count ?? 0) + (record.authReason?.utf8.count ?? 0) + (record.peer?.utf8.count ?? 0)
        withUnsafeTemporaryAllocation(byteCount: 512 + 6 * stringBytes, alignment: 1) { scratch in
            var line = LineWriter(base: scratch.baseAddress!, format: format)
            line.key("time")
            appendTimestamp(record.time, to: &line.bytes)
            line.string("msg", "request")
            line.string("transport", record.transport)
            if let signal = record.signal { line.string("signal", signal) }
            if let tenant = record.tenant { line.string("tenant", tenant) }
            if let principal = record.principal { line.string("principal", principal) }
            line.number("status", record.status)
            if let grpcStatus = record.grpcStatus { line.number("grpc_status", grpcStatus) }
            line.string("auth_result", record.authResult)
            if let reason = record.authReason { line.string("auth_reason", reason) }
            line.string("outcome", record.outcome)
            line.number("bytes_in", record.bytesIn)
            line.number("bytes_out", record.bytesOut)
            if let items = record.items { line.number("items", items) }
            if let decoded = record.bytesDecoded { line.number("bytes_decoded", decoded) }
            line.key("duration_ms")
            appendMilliseconds(record.duration, to: &line.bytes)
            if let peer = record.peer { line.string("peer", peer) }
            line.end()
            out.append(contentsOf: UnsafeRawBufferPointer(start: scratch.baseAddress, count: line.bytes.count))
        }
    }

    /// Writes keys, separators and values of one line in its format into memory sized by the caller.
    private struct LineWriter {
        var bytes: ByteCursor
        let format: AccessLog.Format
        private var first = true

        init(base: UnsafeMutableRawPointer, format: AccessLog.Format) {
            self.bytes = ByteCursor(base: base, format: format)
            self.format = format
        }

        mutating func key(_ key: StaticString) {
            switch format {
            case .json:
                bytes.byte(first ? UInt8(ascii: "{") : UInt8(ascii: ","))
                bytes.byte(UInt8(ascii: "\""))
                bytes.static(key)
                bytes.byte(UInt8(ascii: "\""))
                bytes.byte(UInt8(ascii: ":"))
            case .logfmt:
                if !first { bytes.byte(UInt8(ascii: " ")) }
                bytes.static(key)
                bytes.byte(UInt8(ascii: "="))
            }
            first = false
        }

        mutating func string(_ name: StaticString, _ text: String) {
            key(name)
            switch format {
            case .json: AccessLogEncoder.appendJSONString(text, to: &bytes)
            case .logfmt: AccessLogEncoder.appendLogfmtValue(text, to: &bytes)
            }
        }

        mutating func number(_ name: StaticString, _ value: Int) {
            key(name)
            AccessLogEncoder.appendDecimal(value, to: &bytes)
        }

        mutating func end() {
            if format == .json { bytes.byte(UInt8(ascii: "}")) }
            bytes.byte(UInt8(ascii: "\n"))
        }
    }

    // MARK: Values

    static func appendDecimal(_ value: Int, to out: inout ByteCursor) {
        if value < 0 {
            out.byte(UInt8(ascii: "-"))
            appendDecimal(UInt(value.magnitude), to: &out)
        } else {
            appendDecimal(UInt(value), to: &out)
        }
    }

    /// `value` in decimal, left-padded with zeros to `width` digits.
    static func appendDecimal(_ value: UInt, to out: inout ByteCursor, width: Int = 1) {
        if value < 10 && width <= 1 {
            out.byte(UInt8(ascii: "0") + UInt8(truncatingIfNeeded: value))
            return
        }
        var digits = 1
        var bound: UInt = 10
        while digits < 20 && value >= bound {
            digits += 1
            bound = bound &* 10
        }
        digits = max(digits, width)
        var rest = value
        var index = out.count + digits
        out.count = index
        while index > out.count - digits {
            index -= 1
            out.base.storeBytes(of: UInt8(ascii: "0") + UInt8(truncatingIfNeeded: rest % 10), toByteOffset: index, as: UInt8.self)
            rest /= 10
        }
    }

    /// Milliseconds with up to three decimals, shortest form with at least one decimal (`1.5`, `2.0`,
    /// `1001.486`), rounded to the microsecond: what `Double` printing of the rounded value gives.
    static func appendMilliseconds(_ duration: Duration, to out: inout ByteCursor) {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0, seconds < 1 << 40 else {
            out.byte(UInt8(ascii: "0"))
            return
        }
        let micros = UInt(seconds) * 1_000_000 + UInt((attoseconds + 500_000_000_000) / 1_000_000_000_000)
        appendDecimal(micros / 1000, to: &out)
        out.byte(UInt8(ascii: "."))
        var fraction = micros % 1000
        if fraction == 0 {
            out.byte(UInt8(ascii: "0"))
            return
        }
        var width = 3
        while fraction % 10 == 0 {
            fraction /= 10
            width -= 1
        }
        appendDecimal(fraction, to: &out, width: width)
    }

    /// RFC 3339 UTC with milliseconds (`"2026-01-02T03:04:05.678Z"`, quoted in JSON), from integer
    /// arithmetic on the days since 1970 (the civil calendar algorithm of H. Hinnant), without `gmtime_r`.
    static func appendTimestamp(_ time: WallTime, to out: inout ByteCursor) {
        let quoted = out.format == .json
        let interval = time.secondsSince1970
        guard interval.isFinite, interval >= 0, interval < 253_402_300_800 else {
            let text = LogLine.timestamp(time)
            if quoted { appendJSONString(text, to: &out) } else { appendLogfmtValue(text, to: &out) }
            return
        }
        if quoted { out.byte(UInt8(ascii: "\"")) }
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
        out.byte(UInt8(ascii: "-"))
        appendDecimal(UInt(month), to: &out, width: 2)
        out.byte(UInt8(ascii: "-"))
        appendDecimal(UInt(day), to: &out, width: 2)
        out.byte(UInt8(ascii: "T"))
        appendDecimal(UInt(secondOfDay / 3600), to: &out, width: 2)
        out.byte(UInt8(ascii: ":"))
        appendDecimal(UInt(secondOfDay / 60 % 60), to: &out, width: 2)
        out.byte(UInt8(ascii: ":"))
        appendDecimal(UInt(secondOfDay % 60), to: &out, width: 2)
        out.byte(UInt8(ascii: "."))
        appendDecimal(UInt(millis), to: &out, width: 3)
        out.byte(UInt8(ascii: "Z"))
        if quoted { out.byte(UInt8(ascii: "\"")) }
    }

    /// A JSON string: `"` and `\` escaped, control characters, DEL, U+2028 and U+2029 as `\uXXXX`
    /// (so the line stays one line for every reader), other UTF-8 copied as is.
    static func appendJSONString(_ text: String, to out: inout ByteCursor) {
        out.byte(UInt8(ascii: "\""))
        if let done = text.utf8.withContiguousStorageIfAvailable({ escapeJSON($0, to: &out) }) {
            _ = done
        } else {
            let bytes = Array(text.utf8)
            bytes.withUnsafeBufferPointer { escapeJSON($0, to: &out) }
        }
        out.byte(UInt8(ascii: "\""))
    }

    private static func escapeJSON(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout ByteCursor) {
        let hex: StaticString = "0123456789abcdef"
        var index = 0
        var run = 0
        while index < bytes.count {
            let byte = bytes[index]
            // Most bytes of most values need nothing: they are copied in runs.
            if byte >= 0x20 && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "\\") && byte != 0x7F && byte != 0xE2 {
                index += 1
                continue
            }
            if index > run {
                (out.base + out.count).copyMemory(from: bytes.baseAddress! + run, byteCount: index - run)
                out.count += index - run
            }
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                out.byte(UInt8(ascii: "\\"))
                out.byte(byte)
            case UInt8(ascii: "\\"):
                out.byte(UInt8(ascii: "\\"))
                out.byte(byte)
            case UInt8(ascii: "\n"): out.static("\\n")
            case UInt8(ascii: "\r"): out.static("\\r")
            case UInt8(ascii: "\t"): out.static("\\t")
            case 0xE2 where index + 1 < bytes.count && bytes[index] == 0x80 && (bytes[index + 1] == 0xA8 || bytes[index + 1] == 0xA9):
                out.static(bytes[index + 1] == 0xA8 ? "\\u2028" : "\\u2029")
                index += 2
            case 0..<0x20, 0x7F:
                out.static("\\u00")
                hex.withUTF8Buffer { digits in
                    out.byte(digits[Int(byte >> 4)])
                    out.byte(digits[Int(byte & 0xF)])
                }
            default:
                out.byte(byte)
            }
            run = index
        }
        if index > run {
            (out.base + out.count).copyMemory(from: bytes.baseAddress! + run, byteCount: index - run)
            out.count += index - run
        }
    }

    /// A logfmt value: bare when it needs no quoting, else a JSON string.
    static func appendLogfmtValue(_ text: String, to out: inout ByteCursor) {
        let needsQuotes = text.isEmpty || text.utf8.contains { byte in
            byte == UInt8(ascii: " ") || byte == UInt8(ascii: "=") || byte == UInt8(ascii: "\"")
                || byte == UInt8(ascii: "\\") || byte < 0x20 || byte == 0x7F
        }
        if needsQuotes {
            appendJSONString(text, to: &out)
        } else {
            for byte in text.utf8 { out.byte(byte) }
        }
    }
}

/// A write position in memory the caller sized for everything written (no bounds are checked here:
/// `AccessLogEncoder.append` allocates the worst case of its line, the HTTP/1.1 encoders the exact size of a head).
struct ByteCursor {
    let base: UnsafeMutableRawPointer
    var count = 0
    /// The line's format, for values whose spelling depends on it (the quoted timestamp of JSON).
    var format: AccessLog.Format = .json

    @inline(__always)
    mutating func byte(_ value: UInt8) {
        base.storeBytes(of: value, toByteOffset: count, as: UInt8.self)
        count += 1
    }

    @inline(__always)
    mutating func `static`(_ text: StaticString) {
        let length = text.utf8CodeUnitCount
        (base + count).copyMemory(from: text.utf8Start, byteCount: length)
        count += length
    }
}
