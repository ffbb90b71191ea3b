// The OTLP/gRPC side of the sink, as pure logic: which calls it serves, how a unary request
// message is reassembled from DATA, and which gRPC status each outcome gets. The h2c channel
// handler (SinkGRPCHandler) only moves bytes and frames.
import ProxyOTLP
import NIOCore
import ProxyCompression

/// The gRPC status codes the sink answers with.
enum GRPCStatusCode: Int, Equatable {
    case ok = 0
    case invalidArgument = 3
    case resourceExhausted = 8
    case unimplemented = 12
    case `internal` = 13
    case unavailable = 14
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

    /// The response HEADERS: for a trailers-only reply they carry the status too. Every gRPC
    /// reply says which message encodings the sink reads (`grpc-accept-encoding`).
    var headerFields: [(name: String, value: String)] {
        guard httpStatus == 200 else {
            return [(":status", String(httpStatus)), ("content-type", "text/plain; charset=utf-8")]
        }
        var fields: [(name: String, value: String)] = [
            (":status", "200"), ("content-type", "application/grpc"), ("grpc-accept-encoding", SinkState.acceptedCodings),
        ]
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
    /// Compressed-Flag 1 on a call without a `grpc-encoding` (or with identity): the gRPC spec
    /// forbids it, and gRPC implementations answer INTERNAL.
    case compressedWithoutEncoding
    /// A Compressed-Flag other than 0 or 1.
    case invalidFlag(UInt8)
    case noMessage
    case truncated(declared: Int, received: Int)
    case moreThanOneMessage

    var description: String {
        switch self {
        case .tooLarge(let declared, let limit): return "message of \(declared) bytes is larger than the sink's limit of \(limit)"
        case .compressedWithoutEncoding: return "compressed message on a call without grpc-encoding"
        case .invalidFlag(let flag): return "message flag \(flag) is neither 0 (uncompressed) nor 1 (compressed)"
        case .noMessage: return "the request carries no message"
        case .truncated(let declared, let received): return "message truncated: \(received) of \(declared) bytes"
        case .moreThanOneMessage: return "more than one message on a unary call"
        }
    }

    var status: GRPCStatusCode {
        switch self {
        case .tooLarge: return .resourceExhausted
        case .compressedWithoutEncoding, .invalidFlag: return .internal
        case .noMessage, .truncated, .moreThanOneMessage: return .invalidArgument
        }
    }
}

/// The one message of a unary call, as it arrived: `compressed` is its Compressed-Flag.
struct GRPCMessage: Equatable {
    var compressed: Bool
    var bytes: [UInt8]
}

/// Reassembles the single length-prefixed message of a unary call from DATA chunks.
/// It never holds more than the 5-byte prefix plus `maxMessageBytes`: a larger declared length
/// fails as soon as the prefix is complete, and so does a compressed message on a call whose
/// `coding` is identity. It does not decompress (`GRPCExport.evaluate` does).
struct GRPCUnaryMessageReader {
    let maxMessageBytes: Int
    /// The call's `grpc-encoding`.
    let coding: ContentCoding
    private var bytes: [UInt8] = []

    init(maxMessageBytes: Int, coding: ContentCoding = .identity) {
        self.maxMessageBytes = maxMessageBytes
        self.coding = coding
    }

    private var declaredLength: Int? {
        guard bytes.count >= 5 else { return nil }
        return bytes[1..<5].reduce(0) { $0 << 8 | Int($1) }
    }

    mutating func append(_ chunk: ByteBuffer) throws(GRPCFramingError) {
        bytes.append(contentsOf: chunk.readableBytesView)
        guard let declared = declaredLength else { return }
        guard bytes[0] <= 1 else { throw .invalidFlag(bytes[0]) }
        guard bytes[0] == 0 || coding != .identity else { throw .compressedWithoutEncoding }
        guard declared <= maxMessageBytes else { throw .tooLarge(declared: declared, limit: maxMessageBytes) }
        guard bytes.count <= 5 + declared else { throw .moreThanOneMessage }
    }

    /// The message, once the request stream has ended.
    func finish() throws(GRPCFramingError) -> GRPCMessage {
        guard let declared = declaredLength else {
            if bytes.isEmpty { throw .noMessage }
            throw .truncated(declared: 5, received: bytes.count)
        }
        guard bytes.count == 5 + declared else { throw .truncated(declared: declared, received: bytes.count - 5) }
        return GRPCMessage(compressed: bytes[0] == 1, bytes: Array(bytes[5...]))
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
            return .failure(.unimplemented, "unknown method \(request.path); the sink serves the four OTLP Export methods")
        }
        guard messageCoding(request) != nil else {
            let declared = request.headers.filter { $0.name == "grpc-encoding" }.map(\.value).joined(separator: ", ")
            let shown = declared.count <= 64 ? declared : String(declared.prefix(61)) + "..."
            // The reply's grpc-accept-encoding lists what would do (gRPC compression spec).
            return .failure(.unimplemented, "grpc-encoding \(shown) is not supported by the sink; it accepts \(SinkState.acceptedCodings)")
        }
        return nil
    }

    /// The call's message coding from `grpc-encoding`: none (or empty) is identity; nil for an
    /// unknown one or more than one field.
    static func messageCoding(_ request: SinkRequest) -> ContentCoding? {
        let values = request.headers.filter { $0.name == "grpc-encoding" }.map(\.value)
        guard let value = values.first else { return .identity }
        guard values.count == 1 else { return nil }
        if value.trimmingSpaces().isEmpty { return .identity }
        return ContentCoding(token: value)
    }

    private static func isGRPC(_ contentType: String) -> Bool {
        let media = (contentType.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? "").trimmingSpaces()
        return media == "application/grpc" || media == "application/grpc+proto"
    }

    /// Decompresses (into at most `maxMessageBytes`) and counts the message of a call that passed
    /// `check`; the outcome is what the sink records.
    static func evaluate(_ request: SinkRequest, message: Result<GRPCMessage, GRPCFramingError>,
                         maxMessageBytes: Int) -> (SinkState.Outcome, GRPCReply) {
        if let early = check(request) { return (recorded(nil), early) }
        guard let signal = OTLPSignal(grpcPath: request.path) else {
            return (recorded(nil), .failure(.unimplemented, "unknown method \(request.path)"))
        }
        let body: [UInt8]
        switch message {
        case .failure(let error):
            return (recorded(nil), .failure(error.status, error.description))
        case .success(let message) where !message.compressed:
            body = message.bytes
        case .success(let message):
            // The reader refused a compressed message on an identity call, and `check` an unknown coding.
            let coding = messageCoding(request) ?? .identity
            do {
                body = try Decompressor.decompress(message.bytes, coding: coding, limit: maxMessageBytes)
            } catch {
                return (recorded(nil), decompressionFailure(error, coding: coding, maxMessageBytes: maxMessageBytes))
            }
        }
        do {
            let items = try OTLPPayload.count(signal, .protobuf, body).items
            return (SinkState.Outcome(response: okResponse, signal: signal, items: items), .exported)
        } catch {
            return (recorded(nil), .failure(.invalidArgument, "malformed \(signal.rawValue) export request: \(error)"))
        }
    }

    /// RESOURCE_EXHAUSTED past the limit (as for a declared length over it), INVALID_ARGUMENT for
    /// data that is not valid in its coding, UNAVAILABLE (retried) when no decompressor could be set up.
    private static func decompressionFailure(_ error: DecompressionError, coding: ContentCoding, maxMessageBytes: Int) -> GRPCReply {
        switch error {
        case .tooLarge:
            return .failure(.resourceExhausted,
                            "message larger than the sink's limit of \(maxMessageBytes) bytes after grpc-encoding \(coding.name) is decoded")
        case .setupFailed:
            return .failure(.unavailable, "grpc-encoding \(coding.name): \(error)")
        case .corrupt, .truncated, .trailingData, .unsupportedCoding:
            return .failure(.invalidArgument, "grpc-encoding \(coding.name): \(error)")
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
