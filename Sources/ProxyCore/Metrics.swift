import Foundation

/// One finished request, as the access log and the request metrics see it. Never holds a credential.
public struct RequestRecord: Sendable {
    public var time: Date
    /// `http/1.1`, `h2` (OTLP/HTTP over HTTP/2) or `grpc`.
    public var transport: String
    public var signal: String?
    public var tenant: String?
    public var principal: String?
    /// HTTP status sent to the client (200 for gRPC).
    public var status: Int
    /// gRPC status sent to the client, when the request was gRPC.
    public var grpcStatus: Int?
    /// `ok`, `failure` or `none` (refused before authentication).
    public var authResult: String
    /// The specific authentication failure reason (`AuthFailure.reason`), never secret.
    public var authReason: String?
    /// `forwarded`, `refused`, `upstream_error`, `limited`, `shed`, `client_gone`.
    public var outcome: String
    public var bytesIn: Int
    public var bytesOut: Int
    public var duration: Duration
    public var peer: String?
}

/// The counters, gauges and histograms of the proxy, and the access log; shared by every connection
/// and kept across reloads. The exposition (Prometheus text on the admin listener) and the log line
/// format live here, so the fronts only report facts.
public final class ProxyMetrics: Sendable {
    public init() {}

    func requestFinished(_ record: RequestRecord) {}
    func authFailed(method: String, reason: String) {}
    func upstreamError(kind: String) {}
    func connectionOpened(listener: String) {}
    func connectionClosed(listener: String) {}
    func streamOpened() {}
    func streamClosed() {}
    func tlsHandshakeFailed(reason: String) {}
    /// A connection closed at accept (`reason`: `max_connections`).
    func connectionRefused(listener: String, reason: String) {}
    /// A request refused because its tenant was over a rate (`kind`: `requests` or `bytes`).
    func rateLimited(tenant: String, kind: String) {}
    /// A request refused because the proxy held more than `limits.max_buffered_bytes`.
    func loadShed() {}
    public func reloaded(success: Bool, at time: Date) {}
    public func certificateNotAfter(name: String, notAfter: Date) {}
}
