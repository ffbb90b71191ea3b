import ProxyOTLP
import ProxyAuth
import ProxyTLS

/// The facts of one request as the exchange learns them, turned into one `RequestRecord` when it
/// ends. Each `Exchange` owns one and calls `finish` exactly once; later calls do nothing, so every
/// path that ends an exchange may call it without checking whether another already did.
struct RequestLog {
    private let started: ContinuousClock.Instant
    private(set) var record: RequestRecord
    private(set) var isFinished = false

    init(transport: String, peer: String?) {
        started = .now
        record = RequestRecord(time: .now(), transport: transport, peer: peer)
    }

    mutating func setSignal(_ signal: OTLPSignal) {
        record.signal = signal.rawValue
    }

    mutating func setTransport(_ transport: String) {
        record.transport = transport
    }

    mutating func authenticated(_ decision: AuthDecision) {
        record.authResult = "ok"
        record.tenant = decision.tenant
        record.principal = decision.principal.name
    }

    /// Records a refusal and counts it by method and reason.
    mutating func authFailed(_ failure: AuthFailure, recorder: any ExchangeRecorder) {
        record.authResult = "failure"
        record.authReason = failure.reason
        recorder.authFailed(method: failure.methodLabel, reason: failure.reason)
    }

    /// Authentication could not be decided (keys not loaded, shutting down): not the client's fault.
    mutating func authUnavailable(reason: String) {
        record.authResult = "unavailable"
        record.authReason = reason
    }

    mutating func responseStarted(status: Int) {
        record.status = status
    }

    mutating func grpcStatus(_ status: Int?) {
        if let status { record.grpcStatus = status }
    }

    /// The proxy read the payload: its items and decompressed size.
    mutating func payloadRead(items: Int, decodedBytes: Int) {
        record.items = items
        record.bytesDecoded = decodedBytes
    }

    mutating func sent(_ bytes: Int) {
        record.bytesOut += bytes
    }

    /// Ends the request: counts it, observes its duration and writes the access log line.
    mutating func finish(outcome: RequestOutcome, bytesIn: Int, recorder: any ExchangeRecorder) {
        guard !isFinished else { return }
        isFinished = true
        record.outcome = outcome.label
        record.bytesIn = bytesIn
        record.duration = ContinuousClock.now - started
        recorder.requestFinished(record)
    }
}

extension AuthFailure {
    /// The method a failure belongs to, for the `method` label: the method whose credential was
    /// wrong, `none` when no usable credential was sent, `policy` when the principal was known but not
    /// allowed (tenant, signal or principal rules).
    var methodLabel: String {
        switch self {
        case .missingCredential, .multipleAuthorizationHeaders, .malformedAuthorization, .credentialTooLarge,
            .unsupportedScheme:
            return "none"
        case .unknownToken: return "bearer"
        case .unknownUser, .wrongPassword: return "basic"
        case .invalidJWT: return "jwt"
        case .certificateIdentityMissing: return "mtls"
        default: return isForbidden ? "policy" : "none"
        }
    }
}

extension GRPC {
    /// The `grpc-status` value among response header or trailer fields, if any.
    static func status<Fields: Sequence>(in fields: Fields) -> Int? where Fields.Element == (name: String, value: String) {
        for field in fields where field.name == "grpc-status" {
            return Int(field.value)
        }
        return nil
    }
}
