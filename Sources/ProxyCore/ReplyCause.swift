import ProxyAuth

/// Why the proxy answered a request itself instead of forwarding it. One enum for both fronts: each
/// cause maps to one `LocalReply` (status, `google.rpc.Status` code, gRPC status) and one outcome.
enum ReplyCause: Equatable, Sendable {
    /// An OTLP/HTTP path other than `/v1/traces`, `/v1/metrics`, `/v1/logs`, `/v1development/profiles`.
    case unknownPath
    /// A gRPC method other than the four OTLP Export methods, or not a POST.
    case unknownMethod
    /// OTLP/HTTP with a method other than POST.
    case methodNotAllowed
    case malformed(Malformed)
    case headersTooLarge
    /// The declared or received OTLP/HTTP body is over `http.max_request_body_size`.
    case bodyTooLarge
    /// A gRPC message is over `grpc.max_recv_msg_size`.
    case messageTooLarge
    /// The proxy holds more than `limits.max_buffered_bytes`.
    case shed
    case authenticationFailed(AuthFailure)
    /// Authentication could not be decided now (keys not loaded, shutting down); the reason is for logs.
    case authenticationUnavailable(reason: String)
    case rateLimited(retryAfter: Duration)
    case upstreamUnavailable(UpstreamFailure)
    case upstreamTimeout
    /// A payload the proxy reads could not be read (coding, media type, size or content).
    case payloadRefused(PayloadRefusal)

    /// What made a request malformed, for the log line's reason.
    enum Malformed: String, Sendable {
        /// More than one `Host`, or an HTTP/2 `host` field that differs from `:authority`.
        case conflictingHost = "conflicting_host"
        /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
        case missingHost = "missing_host"
        case duplicateContentLength = "duplicate_content_length"
        /// `Upgrade`, or Transfer-Encoding on HTTP/1.0.
        case ambiguousFraming = "ambiguous_framing"
        /// The HTTP/1.1 parser refused the bytes.
        case unparsable = "malformed_http"
    }

    /// The reason written to the log line and the debug logs.
    var reason: String {
        switch self {
        case .unknownPath: return "unknown_path"
        case .unknownMethod: return "unknown_method"
        case .methodNotAllowed: return "method"
        case .malformed(let what): return what.rawValue
        case .headersTooLarge: return "header_limit"
        case .bodyTooLarge: return "body_limit"
        case .messageTooLarge: return "message_limit"
        case .shed: return "load_shed"
        case .authenticationFailed(let failure): return failure.reason
        case .authenticationUnavailable(let reason): return reason
        case .rateLimited: return "rate_limited"
        case .upstreamUnavailable(let failure): return "upstream_\(failure.rawValue)"
        case .upstreamTimeout: return "upstream_timeout"
        case .payloadRefused(let refusal): return refusal.reason
        }
    }

    /// How the request is counted and logged.
    var outcome: RequestOutcome {
        switch self {
        case .shed: return .shed
        case .rateLimited: return .limited
        case .upstreamUnavailable(let failure): return .upstreamError(failure)
        case .upstreamTimeout: return .upstreamError(.timeout)
        default: return .refused
        }
    }

    /// The reply the client gets; `challenges` are the `WWW-Authenticate` values of a 401.
    func reply(challenges: [String]) -> LocalReply {
        switch self {
        case .unknownPath: return .notFound
        case .unknownMethod: return .unimplementedMethod
        case .methodNotAllowed: return .methodNotAllowed
        case .malformed: return .badRequest
        case .headersTooLarge: return .headersTooLarge
        case .bodyTooLarge: return .bodyTooLarge
        case .messageTooLarge: return .messageTooLarge
        case .shed: return .overloaded
        case .authenticationFailed(let failure): return .authenticationFailed(failure, challenges: challenges)
        case .authenticationUnavailable: return .authenticationUnavailable
        case .rateLimited(let retryAfter): return .rateLimited(retryAfter: retryAfter)
        case .upstreamUnavailable: return .upstreamUnavailable
        case .upstreamTimeout: return .upstreamTimeout
        case .payloadRefused(let refusal): return .payloadRefused(refusal)
        }
    }
}

/// What went wrong with the receiver; the `kind` label of `upstream_errors_total`.
enum UpstreamFailure: String, Sendable {
    /// No connection could be made.
    case connect
    /// The connection took no new stream.
    case stream
    /// The receiver reset the stream or closed the connection.
    case reset
    /// The receiver did not answer, or went silent mid-response, for `upstream.timeout`.
    case timeout
}

/// How a request ended, for its access log line and the `outcome` label of `requests_total`.
enum RequestOutcome: Equatable, Sendable {
    /// The receiver's response was relayed whole.
    case forwarded
    /// Answered locally: authentication, authorization, routing, limits or malformed input.
    case refused
    /// A tenant over its rate.
    case limited
    /// Shed for load.
    case shed
    /// The receiver failed: the client got 503 / 504 or an aborted response.
    case upstreamError(UpstreamFailure)
    /// The client went away (or reset its stream) before the response ended.
    case clientGone

    var label: String {
        switch self {
        case .forwarded: return "forwarded"
        case .refused: return "refused"
        case .limited: return "limited"
        case .shed: return "shed"
        case .upstreamError: return "upstream_error"
        case .clientGone: return "client_gone"
        }
    }
}
