import ProxySystem
internal import COpenSSL

/// A client's certificate chain as the client sent it, kept after the handshake so it can be
/// verified again later against another server context: the trust store and CRLs of a reload.
///
/// Owns one reference to the leaf `X509*` and, when the client sent intermediates, one
/// `STACK_OF(X509)*` holding a reference to each (both taken with up-refs from the connection's
/// `SSL`, so keeping them costs no copy: the session holds the same certificates); `deinit` drops
/// them. Built only by `SSLConnection.verifiedPeer`, from a chain that verified in the handshake.
///
/// Sendable: nothing here changes the certificates after the handshake. OpenSSL's `X509` objects
/// are safe to verify from several threads at once (their reference counts are atomic, and the
/// extension cache filled on first use is guarded by the certificate's own lock).
public final class PeerChain: Sendable {
    /// The leaf `X509*`; this object holds one reference.
    nonisolated(unsafe) let leaf: OpaquePointer
    /// The intermediates the client sent (`STACK_OF(X509)*`), each with a reference held here;
    /// nil when it sent only its leaf.
    nonisolated(unsafe) let intermediates: OpaquePointer?
    /// The earliest notAfter among the certificates of the chain the handshake verified (the leaf,
    /// the intermediates and the trust anchor): the moment a new handshake with it would fail.
    /// Nil when OpenSSL could not convert a time.
    public let validUntil: WallTime?

    /// Takes ownership of one reference to `leaf` and of `intermediates` (a stack whose elements
    /// each carry a reference, as `X509_chain_up_ref` makes it).
    private init(takingLeaf leaf: OpaquePointer, intermediates: OpaquePointer?, validUntil: WallTime?) {
        self.leaf = leaf
        self.intermediates = intermediates
        self.validUntil = validUntil
    }

    deinit {
        X509_free(leaf)
        if let intermediates { otlp_sk_X509_pop_free(intermediates) }
    }

    /// The chain of `ssl`'s peer. Nil when the peer sent no certificate or its chain did not verify.
    /// Call only after the handshake has completed, on the connection's event loop.
    fileprivate convenience init?(verifiedPeerOf ssl: OpaquePointer) {
        guard SSL_get_verify_result(ssl) == X509_V_OK else { return nil }
        // get1: a new reference to the leaf, owned from here on.
        guard let leaf = SSL_get1_peer_certificate(ssl) else { return nil }
        // On a server the peer chain holds what the client sent after its leaf (get0: the SSL keeps
        // it); X509_chain_up_ref copies the stack and takes a reference to each certificate.
        var intermediates: OpaquePointer?
        if let sent = SSL_get_peer_cert_chain(ssl), OPENSSL_sk_num(sent) > 0 {
            OpenSSLErrorQueue.clear()
            guard let copy = X509_chain_up_ref(sent) else {
                OpenSSLErrorQueue.clear()  // only an allocation failure gets here
                X509_free(leaf)
                return nil
            }
            intermediates = copy
        }
        // get0: the verified chain (leaf to trust anchor) belongs to the SSL.
        let validUntil = SSL_get0_verified_chain(ssl).flatMap(earliestNotAfter)
        self.init(takingLeaf: leaf, intermediates: intermediates, validUntil: validUntil)
    }
}

extension PeerChain: Equatable {
    /// The same object: a chain stands for the certificates of one handshake.
    public static func == (lhs: PeerChain, rhs: PeerChain) -> Bool {
        lhs === rhs
    }
}

/// What verifying a client's chain again says (`TLSServerContext.verify(_:at:)`).
public enum PeerVerification: Sendable, Equatable {
    /// The chain verifies; `until` is the earliest notAfter among its certificates (leaf,
    /// intermediates and trust anchor), nil when OpenSSL could not convert one.
    case valid(until: WallTime?)
    /// A CRL of the context lists a certificate of the chain.
    case revoked
    /// A certificate of the chain (the leaf, an intermediate or the trust anchor) is past its notAfter.
    case expired
    /// Any other failure: no configured CA issued the chain any more, an issuer has no CRL, the
    /// chain is too deep for `tls.verify_depth`... `reason` is OpenSSL's verify error text.
    case untrusted(reason: String)
}

extension TLSServerContext {
    /// Whether this context verifies client certificates (it has `tls.client_ca_file`).
    public var verifiesClientCertificates: Bool { settings.clientCAFile != nil }

    /// Verifies `chain` against this context's trust store and CRLs, with the parameters its
    /// handshakes use (depth, the "SSL client" purpose, CRL checks, security level), as of `time`.
    /// A chain verified in a handshake with an older context is judged here as a new handshake
    /// with this one would judge it. Safe to call from any thread; it reads files not at all.
    public func verify(_ chain: PeerChain, at time: WallTime) -> PeerVerification {
        guard verifiesClientCertificates else {
            return .untrusted(reason: "no client CA is configured (tls.client_ca_file)")
        }
        OpenSSLErrorQueue.clear()
        guard let store = SSL_CTX_get_cert_store(ctx), let storeContext = X509_STORE_CTX_new() else {
            return .untrusted(reason: Self.reasons("cannot set up a certificate verification"))
        }
        defer { X509_STORE_CTX_free(storeContext) }
        // The store context borrows the leaf and the intermediates (it takes no references):
        // `chain` keeps them alive for the duration of this call.
        guard X509_STORE_CTX_init(storeContext, store, chain.leaf, chain.intermediates) == 1,
            X509_STORE_CTX_set_default(storeContext, "ssl_client") == 1
        else {
            return .untrusted(reason: Self.reasons("cannot set up a certificate verification"))
        }
        // As OpenSSL's handshake does (ssl_verify_cert_chain): the "ssl_client" defaults, then the
        // context's own parameters on top (depth, purpose, CRL flags), and its security level for
        // key sizes and signature algorithms.
        let param = X509_STORE_CTX_get0_param(storeContext)
        guard X509_VERIFY_PARAM_set1(param, SSL_CTX_get0_param(ctx)) == 1 else {
            return .untrusted(reason: Self.reasons("cannot set up a certificate verification"))
        }
        X509_VERIFY_PARAM_set_auth_level(param, SSL_CTX_get_security_level(ctx))
        X509_VERIFY_PARAM_set_time(param, time_t(time.secondsSince1970.rounded(.down)))

        let result = X509_verify_cert(storeContext)
        if result == 1 {
            return .valid(until: X509_STORE_CTX_get0_chain(storeContext).flatMap(earliestNotAfter))
        }
        let error = X509_STORE_CTX_get_error(storeContext)
        OpenSSLErrorQueue.clear()
        switch error {
        case X509_V_ERR_CERT_REVOKED:
            return .revoked
        case X509_V_ERR_CERT_HAS_EXPIRED:
            return .expired
        case X509_V_OK:
            // A failure without a verify error is an internal one (allocation).
            return .untrusted(reason: "verification failed")
        default:
            return .untrusted(reason: X509_verify_cert_error_string(Int(error)).map { String(cString: $0) } ?? "verify error \(error)")
        }
    }

    /// `message` with whatever OpenSSL queued, for the rare failure to set up a verification.
    private static func reasons(_ message: String) -> String {
        TLSError.drainingErrorQueue(.peerVerification, message).description
    }
}

/// The earliest notAfter among the certificates of `stack` (`STACK_OF(X509)*`, not consumed); nil
/// when the stack is empty or a time cannot be converted.
private func earliestNotAfter(_ stack: OpaquePointer) -> WallTime? {
    var earliest: WallTime?
    for index in 0..<OPENSSL_sk_num(stack) {
        guard let element = OPENSSL_sk_value(stack, index) else { continue }
        let cert = OpaquePointer(element)
        guard let notAfter = asn1TimeToWallTime(X509_get0_notAfter(cert)) else { return nil }
        earliest = min(earliest ?? notAfter, notAfter)
    }
    return earliest
}

extension SSLConnection {
    /// The peer's certificate fields and its chain, when the peer sent a certificate and its chain
    /// verified; nil otherwise. Call only after the handshake has completed.
    var verifiedPeer: (certificate: PeerCertificate, chain: PeerChain)? {
        guard let chain = PeerChain(verifiedPeerOf: ssl) else { return nil }
        return (PeerCertificate(copying: chain.leaf), chain)
    }
}
