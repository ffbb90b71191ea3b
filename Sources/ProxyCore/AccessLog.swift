import Logging
import NIOConcurrencyHelpers
import ProxyConfig
import ProxyTLS
import ProxySystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Writes one line per finished request, in JSON or logfmt. The line holds only the fields of
/// `RequestRecord`, which never carries a credential (no header value is ever copied into it).
///
/// In the proxy the line is formatted straight into the pending batch of a `LogWriter` (stderr),
/// which writes from a thread of its own: the request path pays about a microsecond and no system call.
public struct AccessLog: Sendable {
    public typealias Format = ProxyConfiguration.Log.Format

    private enum Output: Sendable {
        case writer(LogWriter)
        /// Each complete line, without the trailing newline (tests).
        case lines(@Sendable (String) -> Void)
    }

    public var format: Format
    private let output: Output

    /// Lines go to `writer` (standard error unless told otherwise).
    public init(format: Format, writer: LogWriter = .standardError) {
        self.format = format
        self.output = .writer(writer)
    }

    /// Each line is handed to `sink` as a string, without the trailing newline.
    public init(format: Format, sink: @escaping @Sendable (String) -> Void) {
        self.format = format
        self.output = .lines(sink)
    }

    public func write(_ record: RequestRecord) {
        switch output {
        case .writer(let writer):
            let format = self.format
            writer.append { AccessLogEncoder.append(record, format: format, to: &$0) }
        case .lines(let sink):
            sink(Self.line(record, format: format))
        }
    }

    /// The access log line of `record` as the proxy writes it, without the newline.
    public static func line(_ record: RequestRecord, format: Format) -> String {
        var bytes: [UInt8] = []
        AccessLogEncoder.append(record, format: format, to: &bytes)
        return String(decoding: bytes.dropLast(), as: UTF8.self)
    }

    /// The same line through the general `LogLine.render`; the encoder must agree with it (tests).
    static func renderedLine(_ record: RequestRecord, format: Format) -> String {
        var fields: [(String, LogValue)] = [
            ("time", .string(LogLine.timestamp(record.time))),
            ("msg", .string("request")),
            ("transport", .string(record.transport)),
        ]
        if let signal = record.signal { fields.append(("signal", .string(signal))) }
        if let tenant = record.tenant { fields.append(("tenant", .string(tenant))) }
        if let principal = record.principal { fields.append(("principal", .string(principal))) }
        fields.append(("status", .number(record.status)))
        if let grpcStatus = record.grpcStatus { fields.append(("grpc_status", .number(grpcStatus))) }
        fields.append(("auth_result", .string(record.authResult)))
        if let reason = record.authReason { fields.append(("auth_reason", .string(reason))) }
        fields.append(("outcome", .string(record.outcome)))
        fields.append(("bytes_in", .number(record.bytesIn)))
        fields.append(("bytes_out", .number(record.bytesOut)))
        if let items = record.items { fields.append(("items", .number(items))) }
        if let decoded = record.bytesDecoded { fields.append(("bytes_decoded", .number(decoded))) }
        let (seconds, attoseconds) = record.duration.components
        let milliseconds = Double(seconds) * 1000 + Double(attoseconds) / 1e15
        fields.append(("duration_ms", .decimal((milliseconds * 1000).rounded() / 1000)))
        if let peer = record.peer { fields.append(("peer", .string(peer))) }
        return LogLine.render(fields, format: format)
    }
}

/// A field value in a log line: numbers are written bare in JSON, strings quoted.
public enum LogValue: Sendable, Equatable {
    case string(String)
    case number(Int)
    case decimal(Double)
}

/// Renders log lines as JSON objects or logfmt, escaping every value so a line is always one line.
public enum LogLine {
    public static func render(_ fields: [(String, LogValue)], format: AccessLog.Format) -> String {
        var out = ""
        switch format {
        case .json:
            out.append("{")
            for (index, (key, value)) in fields.enumerated() {
                if index > 0 { out.append(",") }
                out.append(jsonString(key))
                out.append(":")
                switch value {
                case .string(let text): out.append(jsonString(text))
                case .number(let number): out.append(String(number))
                case .decimal(let number): out.append(decimal(number))
                }
            }
            out.append("}")
        case .logfmt:
            for (index, (key, value)) in fields.enumerated() {
                if index > 0 { out.append(" ") }
                out.append(logfmtKey(key))
                out.append("=")
                switch value {
                case .string(let text): out.append(logfmtValue(text))
                case .number(let number): out.append(String(number))
                case .decimal(let number): out.append(decimal(number))
                }
            }
        }
        return out
    }

    /// RFC 3339 UTC with milliseconds, e.g. `2026-01-02T03:04:05.678Z`.
    public static func timestamp(_ time: WallTime) -> String {
        time.rfc3339Milliseconds
    }

    static func decimal(_ value: Double) -> String {
        value.isFinite ? String(value) : "0"
    }

    static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out.append("\\\"")
            case "\\": out.append("\\\\")
            case "\n": out.append("\\n")
            case "\r": out.append("\\r")
            case "\t": out.append("\\t")
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F || scalar.value == 0x2028 || scalar.value == 0x2029 {
                    let hex = String(scalar.value, radix: 16)
                    out.append("\\u" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out.append("\"")
        return out
    }

    /// Keys are the proxy's own, but metadata keys from libraries may hold anything: keep key characters only.
    static func logfmtKey(_ key: String) -> String {
        let cleaned = String(key.unicodeScalars.map { scalar -> Character in
            let c = Character(scalar)
            return scalar.isASCII && (c.isLetter || c.isNumber || c == "_" || c == "." || c == "-") ? c : "_"
        })
        return cleaned.isEmpty ? "_" : cleaned
    }

    static func logfmtValue(_ text: String) -> String {
        let needsQuotes = text.isEmpty || text.unicodeScalars.contains { scalar in
            scalar == " " || scalar == "=" || scalar == "\"" || scalar == "\\" || scalar.value < 0x20 || scalar.value == 0x7F
        }
        guard needsQuotes else { return text }
        // The JSON escaping rules are what logfmt parsers accept inside quotes.
        return jsonString(text)
    }
}

/// Where lines that must be out before the next step go, written at once: the ready line and the
/// sink's counters on stdout, and on stderr the errors printed before the process exits (after what
/// `LogWriter.standardError` still holds, so the order of lines is kept). Whole lines are written with
/// one `write` under a lock, so lines from different threads never interleave.
public enum LogOutput {
    private static let lock = NIOLock()

    public static let standardError: @Sendable (String) -> Void = { line in
        LogWriter.standardError.flush()
        writeLine(line, to: 2)
    }

    /// The ready line and the sink's final counters, which scripts read; unbuffered like stderr.
    public static let standardOutput: @Sendable (String) -> Void = { line in
        writeLine(line, to: 1)
    }

    private static func writeLine(_ line: String, to descriptor: Int32) {
        let bytes = Array((line + "\n").utf8)
        lock.withLock {
            LogWriter.writeAll(bytes, to: descriptor)
        }
    }
}

/// A swift-log handler that writes the application logs in the same format as the access log:
/// time, level, logger label, message, then the metadata (which the proxy never fills with secrets).
public struct StructuredLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let format: AccessLog.Format
    private let sink: @Sendable (String) -> Void

    public init(
        label: String, level: Logger.Level, format: AccessLog.Format,
        sink: @escaping @Sendable (String) -> Void = { LogWriter.standardError.appendLine($0) }
    ) {
        self.label = label
        self.logLevel = level
        self.format = format
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        var fields: [(String, LogValue)] = [
            ("time", .string(LogLine.timestamp(.now()))),
            ("level", .string(event.level.rawValue)),
            ("logger", .string(label)),
            ("msg", .string(event.message.description)),
        ]
        for key in merged.keys.sorted() {
            fields.append((key, .string(Self.text(merged[key]!))))
        }
        sink(LogLine.render(fields, format: format))
    }

    private static func text(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): return text
        case .stringConvertible(let value): return value.description
        case .array(let values): return "[" + values.map(text).joined(separator: ",") + "]"
        case .dictionary(let values):
            return "{" + values.keys.sorted().map { "\($0)=\(text(values[$0]!))" }.joined(separator: ",") + "}"
        }
    }
}
