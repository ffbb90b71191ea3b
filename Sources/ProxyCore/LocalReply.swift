import NIOCore
import NIOHTTP1
import ProxyAuth
import ProxyHTTP2
import ProxyJSON

/// A reply the proxy makes itself instead of forwarding: refused credentials, wrong path or method,
/// limits, and upstream failures.
///
/// Every local reply is built here, so each cause maps to one HTTP status, one `google.rpc.Status`
/// code and (next) one gRPC status. OTLP clients retry 429/502/503/504 and drop everything else, so an
/// upstream problem is always 503/504 (never 500): nothing is lost.
struct LocalReply: Sendable, Equatable {
    var status: HTTPResponseStatus
    /// The `google.rpc.Code` carried in the body.
    var rpcCode: Int
    /// A generic message for the client; specific reasons go to logs only.
    var message: String
    var extraHeaders: [(String, String)] = []
    /// Fields added to the gRPC trailers-only form (e.g. `grpc-status-details-bin` with a retry delay).
    var grpcExtraFields: [(String, String)] = []

    static func == (lhs: LocalReply, rhs: LocalReply) -> Bool {
        lhs.status == rhs.status && lhs.rpcCode == rhs.rpcCode && lhs.message == rhs.message
            && lhs.extraHeaders.elementsEqual(rhs.extraHeaders, by: { $0 == $1 })
            && lhs.grpcExtraFields.elementsEqual(rhs.grpcExtraFields, by: { $0 == $1 })
    }

    // google.rpc.Code values used here.
    enum Code {
        static let invalidArgument = 3
        static let deadlineExceeded = 4
        static let notFound = 5
        static let permissionDenied = 7
        static let resourceExhausted = 8
        static let unimplemented = 12
        static let unavailable = 14
        static let unauthenticated = 16
    }

    /// The one place authentication failures become replies (DESIGN.md, style rule 7): 401 with the
    /// configured challenges / UNAUTHENTICATED, or 403 / PERMISSION_DENIED. The client gets a generic
    /// message; the specific reason goes to the logs.
    static func authenticationFailed(_ failure: AuthFailure, challenges: [String] = [#"Bearer realm="otlp""#]) -> LocalReply {
        if failure.isForbidden {
            return LocalReply(status: .forbidden, rpcCode: Code.permissionDenied, message: "permission denied")
        }
        return LocalReply(
            status: .unauthorized, rpcCode: Code.unauthenticated, message: "authentication required",
            extraHeaders: challenges.map { ("WWW-Authenticate", $0) })
    }

    /// Authentication cannot be decided now (signing keys not loaded yet): retryable.
    static let authenticationUnavailable = LocalReply(
        status: .serviceUnavailable, rpcCode: Code.unavailable, message: "authentication keys unavailable, retry later",
        extraHeaders: [("Retry-After", "5")])

    static let notFound = LocalReply(
        status: .notFound, rpcCode: Code.notFound,
        message: "not found: OTLP/HTTP paths are /v1/traces, /v1/metrics, /v1/logs and /v1development/profiles")
    static let methodNotAllowed = LocalReply(
        status: .methodNotAllowed, rpcCode: Code.unimplemented, message: "method not allowed: use POST",
        extraHeaders: [("Allow", "POST")])
    static let bodyTooLarge = LocalReply(
        status: .payloadTooLarge, rpcCode: Code.resourceExhausted, message: "request body too large")
    static let headersTooLarge = LocalReply(
        status: .requestHeaderFieldsTooLarge, rpcCode: Code.resourceExhausted,
        message: "request header fields too large")
    static let badRequest = LocalReply(
        status: .badRequest, rpcCode: Code.invalidArgument, message: "malformed request")
    static let upstreamUnavailable = LocalReply(
        status: .serviceUnavailable, rpcCode: Code.unavailable, message: "upstream unavailable, retry later",
        extraHeaders: [("Retry-After", "1")])
    static let upstreamTimeout = LocalReply(
        status: .gatewayTimeout, rpcCode: Code.deadlineExceeded, message: "upstream timed out")

    /// The body: a `google.rpc.Status` in the request's encoding.
    func body(encoding: OTLPEncoding, allocator: ByteBufferAllocator) -> ByteBuffer {
        switch encoding {
        case .json:
            let json = JSONValue.object([(key: "code", value: .integer(Int64(rpcCode))), (key: "message", value: .string(message))])
            return allocator.buffer(bytes: json.encoded())
        case .protobuf:
            return allocator.buffer(bytes: Self.protobufStatus(code: rpcCode, message: message))
        }
    }

    /// `google.rpc.Status { int32 code = 1; string message = 2; }` in protobuf wire format.
    static func protobufStatus(code: Int, message: String) -> [UInt8] {
        var out: [UInt8] = []
        if code != 0 {
            out.append(0x08)
            appendVarint(UInt64(code), to: &out)
        }
        let text = Array(message.utf8)
        if !text.isEmpty {
            out.append(0x12)
            appendVarint(UInt64(text.count), to: &out)
            out.append(contentsOf: text)
        }
        return out
    }

    private static func appendVarint(_ value: UInt64, to out: inout [UInt8]) {
        var value = value
        while value >= 0x80 {
            out.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        out.append(UInt8(value))
    }

    /// The response head for this reply on a connection that stays open or not.
    func head(version: HTTPVersion, encoding: OTLPEncoding, bodyLength: Int, close: Bool) -> HTTPResponseHead {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: encoding == .json ? "application/json" : "application/x-protobuf")
        headers.add(name: "Content-Length", value: String(bodyLength))
        for (name, value) in extraHeaders { headers.add(name: name, value: value) }
        if close { headers.add(name: "Connection", value: "close") }
        return HTTPResponseHead(version: version, status: status, headers: headers)
    }
}

extension LocalReply {
    /// A gRPC call to a method other than the four OTLP Export methods.
    static let unimplementedMethod = LocalReply(
        status: .notFound, rpcCode: Code.unimplemented,
        message: "unknown method: only the OTLP Export methods are served")
    /// A gRPC message over `grpc.max_recv_msg_size`.
    static let messageTooLarge = LocalReply(
        status: .payloadTooLarge, rpcCode: Code.resourceExhausted, message: "message larger than max_recv_msg_size")

    /// A payload the proxy reads and cannot: 415 / UNIMPLEMENTED for a coding or media type it does not
    /// read, 413 / RESOURCE_EXHAUSTED when it would decompress past the limit, 400 / INVALID_ARGUMENT
    /// when it is corrupt or not an export request. The message says which, never with payload bytes.
    static func payloadRefused(_ refusal: PayloadRefusal) -> LocalReply {
        switch refusal {
        case .unsupportedCoding, .unsupportedMediaType:
            return LocalReply(status: .unsupportedMediaType, rpcCode: Code.unimplemented, message: refusal.description)
        case .tooLarge:
            return LocalReply(status: .payloadTooLarge, rpcCode: Code.resourceExhausted, message: refusal.description)
        case .invalid:
            return LocalReply(status: .badRequest, rpcCode: Code.invalidArgument, message: refusal.description)
        }
    }

    /// The same reply as a gRPC trailers-only response; google.rpc codes are gRPC status codes.
    var grpcTrailersOnly: [HTTP2HeaderField] {
        GRPC.trailersOnly(code: rpcCode, message: message)
            + grpcExtraFields.map { HTTP2HeaderField(name: $0.0, value: $0.1) }
    }
}
