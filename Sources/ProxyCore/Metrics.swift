import NIOConcurrencyHelpers
import Prometheus
import ProxyTLS
import ProxySystem

/// One finished request, as the access log and the request metrics see it. Never holds a credential.
public struct RequestRecord: Sendable {
    public var time: WallTime
    /// `http/1.1`, `h2` (OTLP/HTTP over HTTP/2) or `grpc`.
    public var transport: String
    public var signal: String?
    public var tenant: String?
    public var principal: String?
    /// HTTP status sent to the client (200 for gRPC); 0 when the client got no status at all.
    public var status: Int
    /// gRPC status sent to the client, when the request was gRPC.
    public var grpcStatus: Int?
    /// `ok`, `failure`, `unavailable` (keys not loaded) or `none` (refused before authentication).
    public var authResult: String
    /// The specific authentication failure reason (`AuthFailure.reason`), never secret.
    public var authReason: String?
    /// `forwarded`, `refused`, `upstream_error`, `limited`, `shed`, `client_gone`.
    public var outcome: String
    /// Request body bytes received from the client.
    public var bytesIn: Int
    /// Response body bytes sent to the client.
    public var bytesOut: Int
    /// Spans, data points, log records or profiles in the payload, when the proxy read it.
    public var items: Int?
    /// The payload's size decompressed, when the proxy read it.
    public var bytesDecoded: Int?
    public var duration: Duration
    public var peer: String?

    public init(
        time: WallTime, transport: String, signal: String? = nil, tenant: String? = nil, principal: String? = nil,
        status: Int = 0, grpcStatus: Int? = nil, authResult: String = "none", authReason: String? = nil,
        outcome: String = "refused", bytesIn: Int = 0, bytesOut: Int = 0, duration: Duration = .zero,
        peer: String? = nil
    ) {
        self.time = time
        self.transport = transport
        self.signal = signal
        self.tenant = tenant
        self.principal = principal
        self.status = status
        self.grpcStatus = grpcStatus
        self.authResult = authResult
        self.authReason = authReason
        self.outcome = outcome
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.duration = duration
        self.peer = peer
    }
}

/// The counters, gauges and histograms of the proxy, and the access log; shared by every connection
/// and kept across reloads. The exposition (Prometheus text on the admin listener) and the log line
/// format live here, so the fronts only report facts.
///
/// Backed by swift-prometheus' `PrometheusCollectorRegistry` (thread-safe; one registry per
/// instance, never the process-wide swift-metrics bootstrap, so tests can make as many as they like).
/// Label values come from fixed sets or from authenticated facts (tenant), never from what an
/// unauthenticated client sent, so their number stays bounded.
public final class ProxyMetrics: Sendable {
    /// Every metric name starts with this.
    public static let prefix = "otlp_auth_proxy"
    /// Request duration buckets: loopback forwarding is fast; exports to a slow receiver are not.
    static let durationBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500),
        .seconds(5), .seconds(10), .seconds(30),
    ]

    public let registry: PrometheusCollectorRegistry
    private let accessLog: NIOLockedValueBox<AccessLog?>
    private let openStreams: Gauge
    private let lastReloadSuccess: Gauge
    /// The certificate not-after gauges by name, so a reload can drop the ones that went away.
    private let certificateGauges = NIOLockedValueBox<[String: Gauge]>([:])
    /// The per-request metrics already made, by their labels: looking one up here is a hash of a few
    /// short strings, where the registry would build the metric's name and label strings every time.
    private let requestMetrics = NIOLockedValueBox<RequestMetricsCache>(RequestMetricsCache())

    /// - Parameter accessLog: where request lines go; nil writes none.
    public init(accessLog: AccessLog? = nil) {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        self.accessLog = NIOLockedValueBox(accessLog)
        self.openStreams = registry.makeGauge(
            descriptor: Self.descriptor("open_streams", unit: "", help: "HTTP/2 client streams open now"), labels: [])
        self.lastReloadSuccess = registry.makeGauge(
            descriptor: Self.descriptor(
                "last_reload_success", unit: "timestamp_seconds",
                help: "Unix time of the last successful configuration load (start or reload)"),
            labels: [])
        lastReloadSuccess.set(WallTime.now().secondsSince1970)
        // Present from the first scrape, so dashboards see zeros rather than absent series.
        for result in ["success", "failure"] { _ = reloads(result) }
        for reason in CertificateEndReason.allCases { _ = connectionsEnded(reason.rawValue) }
    }

    /// Replaces the access log (nil turns it off): reload may change `log.access_log` or `log.format`.
    public func setAccessLog(_ accessLog: AccessLog?) {
        self.accessLog.withLockedValue { $0 = accessLog }
    }

    /// The Prometheus text exposition of every metric.
    public func exposition() -> String {
        registry.emitToString()
    }

    // MARK: Facts the proxy reports

    /// Counts one finished request and writes its access log line.
    func requestFinished(_ record: RequestRecord) {
        let signal = record.signal ?? "unknown"
        let outcome = RequestOutcomeKey(
            signal: signal, transport: record.transport, tenant: record.tenant ?? "", outcome: record.outcome)
        let (perOutcome, perSignal) = requestMetrics.withLockedValue { cache in
            if let last = cache.last, last.key == outcome { return (last.perOutcome, last.perSignal) }
            let found = (cache.perOutcome[outcome] ?? makePerOutcomeMetrics(outcome, into: &cache),
                         cache.perSignal[outcome.perSignal] ?? makePerSignalMetrics(outcome.perSignal, into: &cache))
            cache.last = (outcome, found.0, found.1)
            return found
        }
        perOutcome.requests.increment()
        perSignal.duration.record(record.duration)
        if record.bytesIn > 0 { perOutcome.received.increment(by: Int64(record.bytesIn)) }
        if record.bytesOut > 0 { perSignal.sent.increment(by: Int64(record.bytesOut)) }
        if let items = record.items, record.outcome == RequestOutcome.forwarded.label {
            let usage = requestMetrics.withLockedValue { cache in
                cache.usage[outcome] ?? makeUsageMetrics(outcome, into: &cache)
            }
            usage.items.increment(by: Int64(items))
            usage.decoded.increment(by: Int64(record.bytesDecoded ?? 0))
        }
        let log = accessLog.withLockedValue { $0 }
        log?.write(record)
    }

    /// The request counter of these labels, and the received-bytes counter of the same labels without
    /// `outcome` (the registry hands every outcome of one tenant, signal and transport the same counter).
    private func makePerOutcomeMetrics(_ key: RequestOutcomeKey, into cache: inout RequestMetricsCache) -> PerOutcomeMetrics {
        let made = PerOutcomeMetrics(
            requests: counter(
                "requests", help: "Requests finished, by signal, transport, tenant and outcome",
                labels: [("signal", key.signal), ("transport", key.transport), ("tenant", key.tenant), ("outcome", key.outcome)]),
            // Per tenant for usage accounting: the bytes as they came on the wire (compressed if the client
            // compressed them). The tenant is empty until authentication, so it only ever holds a tenant the
            // proxy authenticated, and the series stay as bounded as requests_total's.
            received: counter(
                "received", unit: "bytes_total", help: "Request body bytes received from clients, by signal, transport and tenant",
                labels: [("signal", key.signal), ("transport", key.transport), ("tenant", key.tenant)]))
        cache.perOutcome[key] = made
        return made
    }

    /// The usage counters of a tenant, signal and transport, made when the first payload the proxy read
    /// for them is forwarded (so a proxy that reads no payloads shows none).
    private func makeUsageMetrics(_ key: RequestOutcomeKey, into cache: inout RequestMetricsCache) -> UsageMetrics {
        let labels = [("signal", key.signal), ("transport", key.transport), ("tenant", key.tenant)]
        let made = UsageMetrics(
            items: counter(
                "items", help: "Spans, metric data points, log records or profiles forwarded in payloads the proxy read, by signal, transport and tenant",
                labels: labels),
            decoded: counter(
                "decoded", unit: "bytes_total",
                help: "Size of the payloads the proxy read and forwarded, decompressed, by signal, transport and tenant",
                labels: labels))
        cache.usage[key] = made
        return made
    }

    private func makePerSignalMetrics(_ key: PerSignalKey, into cache: inout RequestMetricsCache) -> PerSignalMetrics {
        let labels = [("signal", key.signal), ("transport", key.transport)]
        let made = PerSignalMetrics(
            duration: registry.makeDurationHistogram(
                descriptor: Self.descriptor(
                    "request_duration", unit: "seconds", help: "Time from request head to the end of the response"),
                labels: labels, buckets: Self.durationBuckets),
            sent: counter("sent", unit: "bytes_total", help: "Response body bytes sent to clients", labels: labels))
        cache.perSignal[key] = made
        return made
    }

    /// `method` is the method whose credential failed (`mtls`, `jwt`, `bearer`, `basic`), `none` when no
    /// usable credential was sent, `policy` when the principal was known but not allowed.
    func authFailed(method: String, reason: String) {
        counter(
            "auth_failures", help: "Requests refused by authentication or authorization",
            labels: [("method", method), ("reason", reason)]
        ).increment()
    }

    /// `kind`: `connect`, `reset`, `timeout`, `stream`.
    func upstreamError(kind: String) {
        counter("upstream_errors", help: "Failures talking to the receiver", labels: [("kind", kind)]).increment()
    }

    func connectionOpened(listener: String) {
        connections(listener).increment()
        counter("connections_accepted", help: "Client connections accepted", labels: [("listener", listener)])
            .increment()
    }

    func connectionClosed(listener: String) {
        connections(listener).decrement()
    }

    func streamOpened() {
        openStreams.increment()
    }

    func streamClosed() {
        openStreams.decrement()
    }

    func tlsHandshakeFailed(reason: String) {
        counter("tls_handshake_failures", help: "TLS handshakes that failed, by reason", labels: [("reason", reason)])
            .increment()
    }

    /// A connection closed at accept (`reason`: `max_connections`).
    func connectionRefused(listener: String, reason: String) {
        counter(
            "connections_refused", help: "Client connections closed at accept, by listener and reason",
            labels: [("listener", listener), ("reason", reason)]
        ).increment()
    }

    /// A connection the proxy asked to finish because its client certificate no longer passes
    /// (`reason`: a `CertificateEndReason`).
    func connectionEnded(reason: String) {
        connectionsEnded(reason).increment()
    }

    /// A request refused because its tenant was over a rate (`kind`: `requests` or `bytes`).
    func rateLimited(tenant: String, kind: String) {
        counter(
            "rate_limited", help: "Requests refused because their tenant was over its rate",
            labels: [("tenant", tenant), ("kind", kind)]
        ).increment()
    }

    /// A request refused because the proxy held more than `limits.max_buffered_bytes`.
    func loadShed() {
        counter("load_shed", help: "Requests refused to shed load (buffered bytes over the limit)", labels: []).increment()
    }

    /// A configuration load finished (reload); a success also sets the last-success time.
    public func reloaded(success: Bool, at time: WallTime) {
        reloads(success ? "success" : "failure").increment()
        if success { lastReloadSuccess.set(time.secondsSince1970) }
    }

    /// Sets the not-after time of one certificate (`server`, or `client_ca:<subject CN>`).
    public func certificateNotAfter(name: String, notAfter: WallTime) {
        let gauge = certificateGauges.withLockedValue { gauges in
            if let existing = gauges[name] { return existing }
            let gauge = registry.makeGauge(
                descriptor: Self.descriptor(
                    "certificate_not_after", unit: "timestamp_seconds",
                    help: "Unix time after which a certificate the proxy uses is no longer valid"),
                labels: [("certificate", name)])
            gauges[name] = gauge
            return gauge
        }
        gauge.set(notAfter.secondsSince1970)
    }

    /// Replaces the whole set of certificate gauges (start and every reload): certificates that are
    /// no longer configured disappear from the exposition.
    public func certificatesLoaded(_ certificates: [(name: String, notAfter: WallTime)]) {
        let names = Set(certificates.map(\.name))
        certificateGauges.withLockedValue { gauges in
            for (name, gauge) in gauges where !names.contains(name) {
                registry.unregisterGauge(gauge)
                gauges[name] = nil
            }
        }
        for certificate in certificates { certificateNotAfter(name: certificate.name, notAfter: certificate.notAfter) }
    }

    // MARK: Helpers

    private func reloads(_ result: String) -> Counter {
        counter("reloads", help: "Configuration reloads, by result", labels: [("result", result)])
    }

    private func connectionsEnded(_ reason: String) -> Counter {
        counter(
            "connections_ended",
            help: "Client connections asked to finish (GOAWAY, Connection: close) because their client certificate "
                + "no longer passes, by reason",
            labels: [("reason", reason)])
    }

    private func connections(_ listener: String) -> Gauge {
        registry.makeGauge(
            descriptor: Self.descriptor("open_connections", unit: "", help: "Client connections open now"),
            labels: [("listener", listener)])
    }

    private func counter(_ name: String, unit: String = "total", help: String, labels: [(String, String)]) -> Counter {
        registry.makeCounter(descriptor: Self.descriptor(name, unit: unit, help: help), labels: labels)
    }

    private static func descriptor(_ name: String, unit: String, help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: prefix, metricName: name, unitName: unit, helpText: help)
    }
}

/// The labels of one `requests_total` series.
private struct RequestOutcomeKey: Hashable {
    var signal: String
    var transport: String
    var tenant: String
    var outcome: String

    var perSignal: PerSignalKey { PerSignalKey(signal: signal, transport: transport) }
}

/// The labels of the duration histogram and the sent-bytes counter.
private struct PerSignalKey: Hashable {
    var signal: String
    var transport: String
}

/// `requests_total` of one label set, and `received_bytes_total` of its tenant, signal and transport.
private struct PerOutcomeMetrics {
    var requests: Counter
    var received: Counter
}

/// `items_total` and `decoded_bytes_total` of one tenant, signal and transport.
private struct UsageMetrics {
    var items: Counter
    var decoded: Counter
}

private struct PerSignalMetrics {
    var duration: DurationHistogram
    var sent: Counter
}

private struct RequestMetricsCache {
    var perOutcome: [RequestOutcomeKey: PerOutcomeMetrics] = [:]
    var perSignal: [PerSignalKey: PerSignalMetrics] = [:]
    /// Keyed by the forwarded outcome's labels.
    var usage: [RequestOutcomeKey: UsageMetrics] = [:]
    /// The metrics of the previous request: consecutive requests mostly share their labels, and four
    /// string comparisons cost less than hashing them.
    var last: (key: RequestOutcomeKey, perOutcome: PerOutcomeMetrics, perSignal: PerSignalMetrics)?
}
