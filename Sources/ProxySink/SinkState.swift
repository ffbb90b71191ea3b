// What the sink remembers between requests, and the pure request → response logic.
// The channel handler only moves bytes; everything decided here is testable without I/O.
import ProxyOTLP
import ProxyCompression
import ProxyJSON

/// Per-tenant counters.
public struct TenantCounts: Sendable, Equatable {
    public var requests = 0
    public var spans = 0
    public var dataPoints = 0
    public var logRecords = 0
    public var profiles = 0
    public init(requests: Int = 0, spans: Int = 0, dataPoints: Int = 0, logRecords: Int = 0, profiles: Int = 0) {
        self.requests = requests
        self.spans = spans
        self.dataPoints = dataPoints
        self.logRecords = logRecords
        self.profiles = profiles
    }
}

/// The request line and headers of the last OTLP request, as received: names lower-cased,
/// arrival order, duplicates kept; any `authorization` value replaced by `<redacted>`.
public struct RecordedRequest: Sendable, Equatable {
    public var method: String
    public var path: String
    public var headers: [(name: String, value: String)]

    public init(method: String, path: String, headers: [(name: String, value: String)]) {
        self.method = method
        self.path = path
        self.headers = headers
    }

    /// Values of every header called `name` (case-insensitive), in arrival order.
    public func values(_ name: String) -> [String] {
        let lowered = name.lowercased()
        return headers.filter { $0.name == lowered }.map(\.value)
    }

    public static func == (lhs: RecordedRequest, rhs: RecordedRequest) -> Bool {
        lhs.method == rhs.method && lhs.path == rhs.path && lhs.headers.count == rhs.headers.count
            && zip(lhs.headers, rhs.headers).allSatisfy { $0.name == $1.name && $0.value == $1.value }
    }
}

/// A snapshot of the sink's counters. Every request other than `/stats` and `/stats/reset`
/// counts, whatever its outcome, so "nothing reached the sink" is `requests == 0`; items
/// are counted only for accepted (200) exports.
public struct SinkStats: Sendable, Equatable {
    /// Tenant key for requests that carried the tenant header more than once.
    public static let multipleTenantsKey = "(multiple)"

    public var requests = 0
    /// Keyed by the `X-Scope-OrgID` value; `""` when absent, `"(multiple)"` when repeated.
    public var tenants: [String: TenantCounts] = [:]
    public var duplicateTenantHeaders = 0
    public var requestsWithAuthorization = 0
    public var lastRequest: RecordedRequest?

    public init() {}

    /// `{"requests":N,"tenants":{...},"duplicate_tenant_headers":N,"requests_with_authorization":N,
    /// "last_request":{"method":…,"path":…,"headers":[[name,value],…]} | null}`, tenants sorted by key.
    public func json() -> [UInt8] {
        let tenantMembers = tenants.sorted { $0.key < $1.key }.map { key, counts in
            (key: key, value: JSONValue.object([
                (key: "requests", value: .integer(Int64(counts.requests))),
                (key: "spans", value: .integer(Int64(counts.spans))),
                (key: "data_points", value: .integer(Int64(counts.dataPoints))),
                (key: "log_records", value: .integer(Int64(counts.logRecords))),
                (key: "profiles", value: .integer(Int64(counts.profiles))),
            ]))
        }
        let last: JSONValue = lastRequest.map { request in
            .object([
                (key: "method", value: .string(request.method)),
                (key: "path", value: .string(request.path)),
                (key: "headers", value: .array(request.headers.map { .array([.string($0.name), .string($0.value)]) })),
            ])
        } ?? .null
        return JSONValue.object([
            (key: "requests", value: .integer(Int64(requests))),
            (key: "tenants", value: .object(tenantMembers)),
            (key: "duplicate_tenant_headers", value: .integer(Int64(duplicateTenantHeaders))),
            (key: "requests_with_authorization", value: .integer(Int64(requestsWithAuthorization))),
            (key: "last_request", value: last),
        ]).encoded()
    }
}

/// A whole request as the handler hands it over.
struct SinkRequest {
    var method: String
    var path: String
    /// Names as received (any case), arrival order, duplicates kept.
    var headers: [(name: String, value: String)]
    var body: [UInt8]
}

/// The reply the handler writes.
struct SinkResponse: Equatable {
    var status: Int
    var headers: [(name: String, value: String)]
    var body: [UInt8]

    static func == (lhs: SinkResponse, rhs: SinkResponse) -> Bool {
        lhs.status == rhs.status && lhs.body == rhs.body && lhs.headers.count == rhs.headers.count
            && zip(lhs.headers, rhs.headers).allSatisfy { $0.name == $1.name && $0.value == $1.value }
    }

    static func text(_ status: Int, _ message: String, extra: [(name: String, value: String)] = []) -> SinkResponse {
        SinkResponse(status: status, headers: [("content-type", "text/plain; charset=utf-8")] + extra,
                     body: Array((message + "\n").utf8))
    }
}

extension OTLPPayloadEncoding {
    /// The request encodings the sink accepts, from a `content-type` value: media type compared
    /// case-insensitively, parameters ignored.
    init?(contentType: String) {
        let media = contentType.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        switch media.trimmingSpaces().lowercased() {
        case "application/x-protobuf": self = .protobuf
        case "application/json": self = .json
        default: return nil
        }
    }
}

/// The sink's counters plus the routing and counting rules. Callers hold it behind a lock;
/// `respond` does all the parsing first and only then mutates, so the lock is held briefly
/// if a caller splits the two (see `OTLPSink`).
struct SinkState {
    private(set) var stats = SinkStats()

    mutating func reset() { stats = SinkStats() }

    /// Decides the response for `request` and records it (except for the stats endpoints).
    /// `maxBodyBytes` bounds the body after decompression (see `evaluate`).
    mutating func handle(_ request: SinkRequest, maxBodyBytes: Int) -> SinkResponse {
        switch request.path {
        case "/stats":
            guard request.method == "GET" else { return .text(405, "use GET for /stats", extra: [("allow", "GET")]) }
            return SinkResponse(status: 200, headers: [("content-type", "application/json")], body: stats.json())
        case "/stats/reset":
            guard request.method == "POST" else { return .text(405, "use POST for /stats/reset", extra: [("allow", "POST")]) }
            reset()
            return SinkResponse(status: 200, headers: [("content-type", "application/json")], body: Array("{}".utf8))
        default:
            let outcome = Self.evaluate(request, maxBodyBytes: maxBodyBytes)
            record(request, outcome: outcome)
            return outcome.response
        }
    }

    /// The result of checking and counting one OTLP request.
    struct Outcome {
        var response: SinkResponse
        var signal: OTLPSignal?
        var items = 0
    }

    /// The codings the sink decompresses, for `Accept-Encoding` on a 415 and `grpc-accept-encoding`.
    static let acceptedCodings = "gzip, zstd, deflate, identity"

    /// Routing, content checks, decompression and counting; no state involved. A compressed body
    /// is decompressed into at most `maxBodyBytes` bytes (the limit the raw body had too): past
    /// that the request gets 413 without anything more being decompressed.
    static func evaluate(_ request: SinkRequest, maxBodyBytes: Int) -> Outcome {
        guard let signal = OTLPSignal(httpPath: Substring(request.path)) else {
            return Outcome(response: .text(404, "no such path; the sink serves POST /v1/traces, /v1/metrics, /v1/logs, /v1development/profiles"))
        }
        guard request.method == "POST" else {
            return Outcome(response: .text(405, "OTLP export requests use POST", extra: [("allow", "POST")]))
        }
        let coding: ContentCoding
        do {
            coding = try ContentCoding(contentEncoding: request.headers.filter { $0.name.lowercased() == "content-encoding" }.map(\.value))
        } catch {
            let declared = if case .unsupportedCoding(let name) = error { name } else { "\(error)" }
            // RFC 9110 section 12.5.3: a 415 for a content coding says which codings would do.
            return Outcome(response: .text(415, "content-encoding \(declared) is not supported by the sink; it accepts \(acceptedCodings)",
                                           extra: [("accept-encoding", acceptedCodings)]))
        }
        let contentTypes = request.headers.filter { $0.name.lowercased() == "content-type" }.map(\.value)
        guard contentTypes.count == 1, let encoding = OTLPPayloadEncoding(contentType: contentTypes[0]) else {
            return Outcome(response: .text(415, "content-type must be application/x-protobuf or application/json"))
        }
        let body: [UInt8]
        if coding == .identity {
            body = request.body
        } else {
            do {
                body = try Decompressor.decompress(request.body, coding: coding, limit: maxBodyBytes)
            } catch {
                return Outcome(response: decompressionFailure(error, coding: coding, maxBodyBytes: maxBodyBytes))
            }
        }
        do {
            let items = try OTLPPayload.count(signal, encoding, body).items
            let response = encoding == .protobuf
                ? SinkResponse(status: 200, headers: [("content-type", "application/x-protobuf")], body: [])
                : SinkResponse(status: 200, headers: [("content-type", "application/json")], body: Array("{}".utf8))
            return Outcome(response: response, signal: signal, items: items)
        } catch {
            return Outcome(response: .text(400, "malformed \(signal.rawValue) export request: \(error)"))
        }
    }

    /// 413 when the body decompresses past the limit, 400 when it is not valid data of its coding,
    /// 503 when no decompressor could be set up (out of memory: worth a retry).
    private static func decompressionFailure(_ error: DecompressionError, coding: ContentCoding, maxBodyBytes: Int) -> SinkResponse {
        switch error {
        case .tooLarge:
            return .text(413, "request body larger than \(maxBodyBytes) bytes after content-encoding \(coding.name) is decoded")
        case .setupFailed:
            return .text(503, "content-encoding \(coding.name): \(error)")
        case .corrupt, .truncated, .trailingData, .unsupportedCoding:
            return .text(400, "content-encoding \(coding.name): \(error)")
        }
    }

    /// Counts one non-stats request under its tenant key.
    mutating func record(_ request: SinkRequest, outcome: Outcome) {
        stats.requests += 1
        let tenantValues = request.headers.filter { $0.name.lowercased() == "x-scope-orgid" }.map(\.value)
        let tenant: String
        switch tenantValues.count {
        case 0: tenant = ""
        case 1: tenant = tenantValues[0]
        default:
            tenant = SinkStats.multipleTenantsKey
            stats.duplicateTenantHeaders += 1
        }
        var counts = stats.tenants[tenant] ?? TenantCounts()
        counts.requests += 1
        if outcome.response.status == 200, let signal = outcome.signal {
            switch signal {
            case .traces: counts.spans += outcome.items
            case .metrics: counts.dataPoints += outcome.items
            case .logs: counts.logRecords += outcome.items
            case .profiles: counts.profiles += outcome.items
            }
        }
        stats.tenants[tenant] = counts
        var sawAuthorization = false
        let headers = request.headers.map { header -> (name: String, value: String) in
            let name = header.name.lowercased()
            guard name == "authorization" else { return (name, header.value) }
            sawAuthorization = true
            return (name, "<redacted>")
        }
        if sawAuthorization { stats.requestsWithAuthorization += 1 }
        stats.lastRequest = RecordedRequest(method: request.method, path: request.path, headers: headers)
    }
}

extension StringProtocol {
    /// Without spaces and tabs at either end (HTTP optional whitespace).
    func trimmingSpaces() -> String {
        var slice = Substring(self)
        while let first = slice.first, first == " " || first == "\t" { slice.removeFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice.removeLast() }
        return String(slice)
    }
}
