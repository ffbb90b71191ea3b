// The OTLP signals and the two ways a request names one: the OTLP/HTTP path and the gRPC
// method. One enum for the whole product: routing, authorization (`signals:` lists), the sink.

/// The OTLP signal a request carries, decided from its path. Only these are forwarded.
public enum OTLPSignal: String, Sendable, CaseIterable {
    case traces
    case metrics
    case logs
    /// OTLP profiles, still in development upstream: its paths carry `v1development`.
    case profiles

    /// The OTLP/HTTP path (`/v1/traces` …), without a query.
    public var httpPath: String {
        switch self {
        case .traces, .metrics, .logs: return "/v1/\(rawValue)"
        case .profiles: return "/v1development/profiles"
        }
    }

    /// The gRPC method path of this signal's Export call.
    public var grpcPath: String {
        switch self {
        case .traces: return "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        case .metrics: return "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
        case .logs: return "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
        case .profiles: return "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export"
        }
    }

    /// Maps a gRPC `:path` to its signal; only the OTLP Export methods are known.
    public init?(grpcPath path: String) {
        switch path {
        case OTLPSignal.traces.grpcPath: self = .traces
        case OTLPSignal.metrics.grpcPath: self = .metrics
        case OTLPSignal.logs.grpcPath: self = .logs
        case OTLPSignal.profiles.grpcPath: self = .profiles
        default: return nil
        }
    }

    /// Maps an OTLP/HTTP request target to its signal; a query string is ignored, anything else is nil.
    public init?(httpTarget target: String) {
        if let signal = Self(httpPath: Substring(target)) {
            self = signal
            return
        }
        guard let query = target.utf8.firstIndex(of: UInt8(ascii: "?")),
            let signal = Self(httpPath: Substring(target.utf8[..<query]))
        else { return nil }
        self = signal
    }

    /// The signal names for messages that list them: "traces, metrics, logs or profiles" with
    /// `conjunction` "or", "traces, metrics, logs and profiles" with "and".
    public static func names(_ conjunction: String) -> String {
        let names = allCases.map(\.rawValue)
        return names.dropLast().joined(separator: ", ") + " \(conjunction) " + names.last!
    }

    /// The signal whose OTLP/HTTP path is exactly `path` (no query).
    public init?(httpPath path: Substring) {
        switch path {
        case "/v1/traces": self = .traces
        case "/v1/metrics": self = .metrics
        case "/v1/logs": self = .logs
        case "/v1development/profiles": self = .profiles
        default: return nil
        }
    }
}
