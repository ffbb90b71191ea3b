internal import COpenSSL

/// The module's one error type. `description` names the file (or the connection stage) and the
/// reason, followed by OpenSSL's library/reason strings when the error queue had any.
/// It never contains key material or certificate contents.
public struct TLSError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// A certificate or key file is missing, is a directory, or cannot be read.
        case fileUnreadable
        /// A file was readable but holds no usable PEM certificate or key (empty, truncated, encrypted).
        case invalidPEM
        /// The private key does not belong to the leaf certificate.
        case keyMismatch
        /// OpenSSL refused a protocol setting (versions, ciphers, groups, ALPN list).
        case configuration
        /// The TLS handshake with a client failed (version, cipher, malformed hello...).
        case handshake
        /// A TLS error after the handshake (bad record MAC, unexpected message...).
        case protocolFailure
        /// The peer closed the TCP connection in the middle of the handshake or a record.
        case unexpectedEOF
        /// A client certificate failed verification (expired, unknown CA, revoked, wrong purpose, too deep).
        case peerVerification
        /// A CRL or CA file cannot be used (unreadable, not PEM, expired CRL at load).
        case invalidTrustStore
        /// A JWS key from JWK fields is unusable (too short, not on the curve, unsupported type).
        case invalidKey
    }

    public var kind: Kind
    public var description: String

    public init(kind: Kind, description: String) {
        self.kind = kind
        self.description = description
    }

    /// Builds an error from `message` plus whatever is on this thread's OpenSSL error queue,
    /// and empties the queue so the next operation starts clean.
    static func drainingErrorQueue(_ kind: Kind, _ message: String) -> TLSError {
        let reasons = OpenSSLErrorQueue.drain()
        if reasons.isEmpty {
            return TLSError(kind: kind, description: message)
        }
        return TLSError(kind: kind, description: "\(message) (\(reasons.joined(separator: "; ")))")
    }
}

/// Reads OpenSSL's per-thread error queue. Callers run `ERR_clear_error()` before a fallible
/// call (`OpenSSLErrorQueue.clear()`) so that what `drain()` returns belongs to that call.
enum OpenSSLErrorQueue {
    static func clear() {
        ERR_clear_error()
    }

    /// Pops every queued error and renders each as "library: reason". Only OpenSSL's static
    /// strings are used, never the per-error data string, which can carry file contents.
    static func drain() -> [String] {
        var reasons: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            let library = ERR_lib_error_string(code).map { String(cString: $0) } ?? "lib(\(ERR_GET_LIB(code)))"
            let reason = ERR_reason_error_string(code).map { String(cString: $0) } ?? "reason(\(ERR_GET_REASON(code)))"
            let text = "\(library): \(reason)"
            // Keep the list short and free of repeats; OpenSSL often stacks the same reason.
            if !reasons.contains(text) && reasons.count < 8 {
                reasons.append(text)
            }
        }
        return reasons
    }
}
