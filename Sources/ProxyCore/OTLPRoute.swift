import Foundation

/// The OTLP signal a request carries, decided from its path. Only these three are forwarded.
public enum OTLPSignal: String, Sendable, CaseIterable {
    case traces
    case metrics
    case logs

    /// The OTLP/HTTP path (`/v1/traces` …), without a query.
    public var httpPath: String { "/v1/\(rawValue)" }

    /// Maps an OTLP/HTTP request target to its signal; a query string is ignored, anything else is nil.
    public init?(httpTarget target: String) {
        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        switch path {
        case "/v1/traces": self = .traces
        case "/v1/metrics": self = .metrics
        case "/v1/logs": self = .logs
        default: return nil
        }
    }
}

/// The encoding of an OTLP/HTTP request, which decides the encoding of a local error body.
enum OTLPEncoding: Sendable, Equatable {
    case protobuf
    case json

    /// `application/json` (any parameters, any case) is JSON; everything else is answered in protobuf,
    /// the OTLP default.
    init(contentType: String?) {
        guard let contentType else {
            self = .protobuf
            return
        }
        let mediaType = contentType.split(separator: ";", maxSplits: 1).first.map {
            $0.trimmingCharacters(in: .whitespaces).lowercased()
        }
        self = mediaType == "application/json" ? .json : .protobuf
    }
}
