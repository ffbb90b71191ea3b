import Logging
import NIOConcurrencyHelpers
import NIOCore
import ProxyTLS
import ProxySystem

/// Why the proxy asked a connection with a client certificate to finish; the `reason` label of
/// `connections_ended_total` and of the log line.
enum CertificateEndReason: String, Sendable, CaseIterable {
    /// A reloaded `tls.crl_file` lists a certificate of the chain.
    case certificateRevoked = "certificate_revoked"
    /// A certificate of the chain (the leaf, an intermediate or the CA) reached its notAfter.
    case certificateExpired = "certificate_expired"
    /// The reloaded trust store no longer verifies the chain (its CA removed, no CRL for an issuer...).
    case certificateUntrusted = "certificate_untrusted"
    /// The reloaded `auth.mtls` no longer admits the certificate's identity (`allowed_principals`,
    /// or a `principal_from` that finds none).
    case principalRemoved = "principal_removed"
}

/// Whether a connection's client certificate still passes, judged as a new handshake and a new
/// request with the same certificate would be judged by a runtime. Pure: no channels.
enum ClientCertificateCheck {
    enum Verdict: Sendable, Equatable {
        /// Still good; check again at `until` (the chain's earliest notAfter), never when nil.
        case keep(until: WallTime?)
        /// End the connection; `detail` says why, for the log (never a secret).
        case end(CertificateEndReason, detail: String)
    }

    /// The chain against `runtime`'s TLS context (when that context verifies client certificates at
    /// all), then the certificate's identity against its `auth.mtls` policy (when mTLS is an enabled
    /// method). A runtime that verifies no client certificates still ends a chain past its notAfter.
    static func judge(
        certificate: PeerCertificate, chain: PeerChain, against runtime: ProxyRuntime, at now: WallTime
    ) -> Verdict {
        var until = chain.validUntil
        if runtime.tls.verifiesClientCertificates {
            switch runtime.tls.verify(chain, at: now) {
            case .valid(let validUntil):
                until = validUntil
            case .revoked:
                return .end(.certificateRevoked, detail: "a certificate of the chain is listed in tls.crl_file")
            case .expired:
                return .end(.certificateExpired, detail: "a certificate of the chain is past its notAfter")
            case .untrusted(let reason):
                return .end(.certificateUntrusted, detail: "tls.client_ca_file no longer verifies the chain: \(reason)")
            }
        } else if let validUntil = until, validUntil <= now {
            return .end(.certificateExpired, detail: "a certificate of the chain is past its notAfter")
        }
        if let mtls = runtime.authenticator.mtls {
            guard let identity = mtls.identity(of: certificate) else {
                return .end(.principalRemoved, detail: "the certificate has none of the identities auth.mtls.principal_from names")
            }
            guard mtls.allows(identity: identity) else {
                return .end(.principalRemoved, detail: "cert:\(identity) is not in auth.mtls.allowed_principals")
            }
        }
        return .keep(until: until)
    }
}

/// The open client connections that presented a verified client certificate, with the certificate
/// and its chain, so that a reload can judge them again (`recheck(against:)`) and each is ended
/// when its chain expires. Ending is what a drain does to one connection (`ProxyDrainEvent`: HTTP/2
/// shutdown notice then final GOAWAY, HTTP/1.1 `Connection: close`, requests in flight finish); it
/// is logged and counted once per connection.
///
/// Connections without a client certificate are never recorded. A connection records itself on its
/// event loop when its handshake completes and is forgotten when it closes; the expiry timer lives
/// on that event loop and is cancelled with the channel. Shared by every connection, so the records
/// sit behind a lock.
final class ClientCertificateConnections: Sendable {
    private struct Record {
        let channel: any Channel
        let certificate: PeerCertificate
        let chain: PeerChain
        /// Set once the connection was asked to finish, so it is ended, logged and counted once.
        var ended = false
    }

    private let records = NIOLockedValueBox<[ObjectIdentifier: Record]>([:])
    private let runtime: RuntimeInForce
    private let metrics: ProxyMetrics
    private let logger: Logger

    /// Expiry checks are never closer together than this, whatever a clock says.
    private static let minimumCheckDelay: TimeAmount = .milliseconds(50)

    init(runtime: RuntimeInForce, metrics: ProxyMetrics, logger: Logger) {
        self.runtime = runtime
        self.metrics = metrics
        self.logger = logger
    }

    /// Records a connection whose handshake just completed with a verified client certificate and
    /// schedules its expiry check. Runs on the channel's event loop.
    ///
    /// `connectionRuntime` is the runtime whose TLS context verified the certificate. When a reload
    /// swapped in another one meanwhile, the certificate is judged against the runtime in force at
    /// once: the reload's own recheck may have looked at the records before this one was added.
    func opened(
        _ channel: any Channel, certificate: PeerCertificate, chain: PeerChain, connectionRuntime: ProxyRuntime
    ) {
        let id = ObjectIdentifier(channel)
        records.withLockedValue { $0[id] = Record(channel: channel, certificate: certificate, chain: chain) }
        channel.closeFuture.whenComplete { [records] _ in
            records.withLockedValue { _ = $0.removeValue(forKey: id) }
        }
        let inForce = runtime.load()
        if inForce !== connectionRuntime {
            switch ClientCertificateCheck.judge(certificate: certificate, chain: chain, against: inForce, at: .now()) {
            case .keep:
                break
            case .end(let reason, let detail):
                end(id, channel: channel, reason: reason, detail: detail)
                return
            }
        }
        if let until = chain.validUntil { scheduleExpiryCheck(id, channel: channel, at: until) }
    }

    /// Judges every recorded connection against `runtime` (just swapped in by a reload) and ends
    /// those that no longer pass. Returns how many it ended. Runs off the event loops: verifying
    /// chains costs a signature check or more each.
    func recheck(against runtime: ProxyRuntime, at now: WallTime = .now()) -> Int {
        let open = records.withLockedValue { records in
            records.compactMap { id, record in record.ended ? nil : (id, record) }
        }
        var ended = 0
        for (id, record) in open {
            switch ClientCertificateCheck.judge(certificate: record.certificate, chain: record.chain, against: runtime, at: now) {
            case .keep:
                break
            case .end(let reason, let detail):
                if end(id, channel: record.channel, reason: reason, detail: detail) { ended += 1 }
            }
        }
        return ended
    }

    /// At `until`, judges the connection against the runtime in force: a chain that verifies for
    /// longer there (a CA renewed by a reload) is checked again at its new `until`. NIO's timers run
    /// on the monotonic clock, so a wall clock set back fires the check early; it then finds the
    /// chain still valid and waits again.
    private func scheduleExpiryCheck(_ id: ObjectIdentifier, channel: any Channel, at until: WallTime) {
        let seconds = until.seconds(since: .now())
        let delay = max(TimeAmount.nanoseconds(Int64(min(seconds, 1e9) * 1e9)), Self.minimumCheckDelay)
        let task = channel.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            checkExpiry(id, channel: channel)
        }
        channel.closeFuture.assumeIsolated().whenComplete { _ in task.cancel() }
    }

    private func checkExpiry(_ id: ObjectIdentifier, channel: any Channel) {
        guard channel.isActive,
            let record = records.withLockedValue({ $0[id] }), record.channel === channel, !record.ended
        else { return }
        let verdict = ClientCertificateCheck.judge(
            certificate: record.certificate, chain: record.chain, against: runtime.load(), at: .now())
        switch verdict {
        case .keep(let until):
            if let until { scheduleExpiryCheck(id, channel: channel, at: until) }
        case .end(let reason, let detail):
            end(id, channel: channel, reason: reason, detail: detail)
        }
    }

    /// Asks the connection to finish as in a drain, logs and counts it; false when it was already
    /// ended or has closed. `channel` guards against a judgement that outlived its connection: once
    /// a channel is gone, a new one may carry the same identifier.
    @discardableResult
    private func end(
        _ id: ObjectIdentifier, channel: any Channel, reason: CertificateEndReason, detail: String
    ) -> Bool {
        let record = records.withLockedValue { records -> Record? in
            guard var record = records[id], record.channel === channel, !record.ended else { return nil }
            record.ended = true
            records[id] = record
            return record
        }
        guard let record else { return false }
        metrics.connectionEnded(reason: reason.rawValue)
        var metadata: Logger.Metadata = [
            "reason": "\(reason.rawValue)",
            "detail": "\(detail)",
            "subject_cn": "\(record.certificate.subjectCommonName ?? "")",
            "sha256": "\(record.certificate.sha256Fingerprint.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined())",
        ]
        if let peer = record.channel.remoteAddress { metadata["peer"] = "\(peer.hostPort)" }
        if let notAfter = record.certificate.notAfter { metadata["not_after"] = "\(notAfter.rfc3339)" }
        switch reason {
        case .certificateExpired:
            logger.info("client certificate expired; ending its connection", metadata: metadata)
        case .certificateRevoked:
            logger.warning("client certificate revoked; ending its connection", metadata: metadata)
        case .certificateUntrusted:
            logger.warning("client certificate no longer trusted; ending its connection", metadata: metadata)
        case .principalRemoved:
            logger.warning("client certificate principal no longer allowed; ending its connection", metadata: metadata)
        }
        record.channel.pipeline.fireUserInboundEventTriggered(ProxyDrainEvent())
        return true
    }
}
