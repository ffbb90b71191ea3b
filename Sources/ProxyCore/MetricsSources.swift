import NIOCore
import ProxyTLS
import ProxySystem

extension ProxyMetrics {
    /// Counts `channel` open until it closes.
    func connectionOpened(_ channel: any Channel, listener: String) {
        connectionOpened(listener: listener)
        channel.closeFuture.whenComplete { [self] _ in
            connectionClosed(listener: listener)
        }
    }
}

/// The `reason` label of a failed TLS handshake: a fixed set, never the peer's data.
enum TLSHandshakeFailure {
    static func label(_ error: any Error) -> String {
        guard let tlsError = error as? TLSError else { return "io" }
        switch tlsError.kind {
        case .peerVerification: return "client_certificate"
        case .handshake: return "handshake"
        case .unexpectedEOF: return "eof"
        case .protocolFailure: return "protocol"
        default: return "other"
        }
    }
}

extension ProxyRuntime {
    /// The certificates this runtime uses, for the not-after gauges: `server` (the leaf it presents)
    /// and `client_ca:<common name>` for each CA in `tls.client_ca_file` (the fingerprint's first
    /// bytes stand in for a missing or repeated name). Reads the CA file, so call it off the event loops.
    public var certificateExpiries: [(name: String, notAfter: WallTime)] {
        var result: [(name: String, notAfter: WallTime)] = []
        if let notAfter = tls.certificateNotAfter { result.append(("server", notAfter)) }
        if let caFile = configuration.tls.clientCAFile {
            var seen = Set<String>()
            for summary in CertificateFile.summaries(pemFile: caFile) {
                let fingerprint = summary.sha256Fingerprint.prefix(8).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
                var name = "client_ca:" + (summary.commonName ?? fingerprint)
                if seen.contains(name) { name += "#" + fingerprint }
                seen.insert(name)
                result.append((name, summary.notAfter))
            }
        }
        return result
    }
}
