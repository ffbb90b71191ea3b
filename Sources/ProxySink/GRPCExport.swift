// The OTLP/gRPC side of the sink, as pure logic: which calls it serves, how a unary request
// message is reassembled from DATA, and which gRPC status each outcome gets. The h2c channel
// handler (SinkGRPCHandler) only moves bytes and frames.
import NIOCore

extension OTLPSignal {
    /// `/opentelemetry.proto.collector.trace.v1.TraceService/Export` → `.traces`, and so on.
    public init?(grpcPath: String) {
        switch grpcPath {
        case "/opentelemetry.proto.collector.trace.v1.TraceService/Export": self = .traces
        case "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export": self = .metrics
        case "/opentelemetry.proto.collector.logs.v1.LogsService/Export": self = .logs
        default: return nil
        }
    }

    /// The gRPC method path of this signal's Export call.
    public var grpcPath: String {
        switch self {
        case .traces: return "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        case .metrics: return "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
        case .logs: return "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
        }
    }
}

/// The gRPC status codes the sink answers with.
enum GRPCStatusCode: Int, Equatable {
    case ok = 0
    case invalidArgument = 3
    case resourceExhausted = 8
    case unimplemented = 12
}

/// How the sink answers one gRPC call.
struct GRPCReply: Equatable {
    /// 200 for every gRPC answer; 415 when the request is not gRPC at all.
    var httpStatus = 200
    var status: GRPCStatusCode
    var message: String?

    static let exported = GRPCReply(status: .ok, message: nil)

    static func failure(_ status: GRPCStatusCode, _ message: String) -> GRPCReply {
        GRPCReply(status: status, message: message)
    }

    /// A successful Export carries one response message; every failure is trailers-only.
    var hasResponseMessage: Bool { httpStatus == 200 && status == .ok }

    /// The response HEADERS: for a trailers-only reply they carry the status too.
    var headerFields: [(name: String, value: String)] {
        guard httpStatus == 200 else {
            return [(":status", String(httpStatus)), ("content-type", "text/plain; charset=utf-8")]
        }
        var fields: [(name: String, value: String)] = [(":status", "200"), ("content-type", "application/grpc")]
        if !hasResponseMessage { fields += trailerFields }
        return fields
    }

    /// `grpc-status` and, when there is one, the percent-encoded `grpc-message`.
    var trailerFields: [(name: String, value: String)] {
        var fields: [(name: String, value: String)] = [("grpc-status", String(status.rawValue))]
        if let message { fields.append(("grpc-message", GRPCReply.percentEncoded(message))) }
        return fields
    }

    /// The one response message: an empty Export*ServiceResponse behind the 5-byte prefix
    /// (not compressed, length 0).
    static let emptyResponseMessage: [UInt8] = [0, 0, 0, 0, 0]

    /// grpc-message encoding: printable ASCII except "%" as is, every other byte as %XX of its UTF-8.
    static func percentEncoded(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            if byte >= 0x20 && byte <= 0x7e && byte != UInt8(ascii: "%") {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }
}

/// Why a request stream does not hold exactly one usable message.
enum GRPCFramingError: Error, Equatable, CustomStringConvertible {
    case tooLarge(declared: Int, limit: Int)
    case compressedFlag(UInt8)
    case noMessage
    case truncated(declared: Int, received: Int)
    case moreThanOneMessage

    var description: String {
        switch self {
        case .tooLarge(let declared, let limit): return "message of \(declared) bytes is larger than the sink's limit of \(limit)"
        case .compressedFlag(let flag): return "message flag \(flag): the sink accepts only uncompressed messages"
        case .noMessage: return "the request carries no message"
        case .truncated(let declared, let received): return "message truncated: \(received) of \(declared) bytes"
        case .moreThanOneMessage: return "more than one message on a unary call"
        }
    }

    var status: GRPCStatusCode {
        if case .tooLarge = self { return .resourceExhausted }
        return .invalidArgument
    }
}

/// Reassembles the single length-prefixed message of a unary call from DATA chunks.
/// It never holds more than the 5-byte prefix plus `maxMessageBytes`: a larger declared length
/// fails as soon as the prefix is complete.
struct GRPCUnaryMessageReader {
    let maxMessageBytes: Int
    private var bytes: [UInt8] = []

    init(maxMessageBytes: Int) {
        self.maxMessageBytes = maxMessageBytes
    }

    private var declaredLength: Int? {
        guard bytes.count >= 5 else { return nil }
        return bytes[1..<5].reduce(0) { $0 << 8 | Int($1) }
    }

    mutating func append(_ chunk: ByteBuffer) throws(GRPCFramingError) {
        bytes.append(contentsOf: chunk.readableBytesView)
        guard let declared = declaredLength else { return }
        guard bytes[0] == 0 else { throw .compressedFlag(bytes[0]) }
        guard declared <= maxMessageBytes else { throw .tooLarge(declared: declared, limit: maxMessageBytes) }
        guard bytes.count <= 5 + declared else { throw .moreThanOneMessage }
    }

    /// The message, once the request stream has ended.
    func finish() throws(GRPCFramingError) -> [UInt8] {
        guard let declared = declaredLength else {
            if bytes.isEmpty { throw .noMessage }
            throw .truncated(declared: 5, received: bytes.count)
        }
        guard bytes.count == 5 + declared else { throw .truncated(declared: declared, received: bytes.count - 5) }
        return Array(bytes[5...])
    }
}

/// The rules for one OTLP/gRPC call.
enum GRPCExport {
    /// Checks made on the request HEADERS, before any message: a reply here ends the call.
    static func check(_ request: SinkRequest) -> GRPCReply? {
        let contentTypes = request.headers.filter { $0.name == "content-type" }.map { $0.value.lowercased() }
        guard contentTypes.count == 1, isGRPC(contentTypes[0]) else {
            return GRPCReply(httpStatus: 415, status: .unimplemented,
                             message: "content-type must be application/grpc or application/grpc+proto")
        }
        guard request.method == "POST", OTLPSignal(grpcPath: request.path) != nil else {
            return .failure(.unimplemented, "unknown method \(request.path); the sink serves the three OTLP Export methods")
        }
        for header in request.headers where header.name == "grpc-encoding" {
            let coding = header.value.trimmingSpaces().lowercased()
            if !coding.isEmpty && coding != "identity" {
                return .failure(.unimplemented, "grpc-encoding \(coding) is not supported by the sink; send uncompressed messages")
            }
        }
        return nil
    }

    private static func isGRPC(_ contentType: String) -> Bool {
        let media = (contentType.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? "").trimmingSpaces()
        return media == "application/grpc" || media == "application/grpc+proto"
    }

    /// Counts the message of a call that passed `check`; the outcome is what the sink records.
    static func evaluate(_ request: SinkRequest, message: Result<[UInt8], GRPCFramingError>) -> (SinkState.Outcome, GRPCReply) {
        if let early = check(request) { return (recorded(nil), early) }
        guard let signal = OTLPSignal(grpcPath: request.path) else {
            return (recorded(nil), .failure(.unimplemented, "unknown method \(request.path)"))
        }
        switch message {
        case .failure(let error):
            return (recorded(nil), .failure(error.status, error.description))
        case .success(let body):
            do {
                let items = try OTLPItemCounter.countProtobuf(signal, body)
                return (SinkState.Outcome(response: okResponse, signal: signal, items: items), .exported)
            } catch {
                return (recorded(nil), .failure(.invalidArgument, "malformed \(signal.rawValue) export request: \(error)"))
            }
        }
    }

    /// What `SinkState.record` needs: items count only when a signal is set.
    static func recorded(_ signal: OTLPSignal?) -> SinkState.Outcome {
        SinkState.Outcome(response: okResponse, signal: signal, items: 0)
    }

    private static let okResponse = SinkResponse(status: 200, headers: [], body: [])
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
