internal import COpenSSL
import NIOCore

/// Owns one `SSL*` for one connection, server (accept state) or client (connect state), and
/// through `SSL_set_bio` its two memory BIOs: `networkIn` (ciphertext from the socket that OpenSSL
/// reads) and `networkOut` (ciphertext OpenSSL writes, to be sent to the socket). `deinit` frees
/// the SSL, which frees both BIOs.
///
/// Not thread-safe: used only from the channel's event loop by `TLSChannelCore`. Every call that
/// can fail clears the thread's OpenSSL error queue first and drains it into a `TLSError` on
/// failure (WANT_READ / WANT_WRITE are results, not errors).
final class SSLConnection {
    /// Result of one step that reads from `networkIn`.
    enum Step {
        /// The step finished (handshake done, or `n` bytes of cleartext read).
        case done(Int)
        /// OpenSSL needs more ciphertext from the socket.
        case wantRead
        /// The peer sent close_notify.
        case closedByPeer
        /// A fatal TLS error; the connection must not be used for TLS again.
        case failed(TLSError)
    }

    /// Which side of the handshake this SSL plays.
    enum Role {
        case server
        case client
    }

    let role: Role
    /// The Swift object that owns the `SSL_CTX` (a `TLSServerContext` or `TLSClientContext`).
    /// Kept so it outlives the SSL: the server's ALPN callback reaches it through an unretained pointer.
    let contextOwner: AnyObject
    /// The `SSL*`; internal so `PeerCertificate` extraction can read the peer's certificate.
    let ssl: OpaquePointer
    private let networkIn: OpaquePointer
    private let networkOut: OpaquePointer

    /// Makes an accept-state SSL from a server context. Nil only when OpenSSL cannot allocate.
    convenience init?(context: TLSServerContext) {
        self.init(ctx: context.ctx, owner: context, role: .server)
    }

    /// Makes an SSL from `ctx` (owned by `owner`) in accept or connect state.
    /// Nil only when OpenSSL cannot allocate.
    init?(ctx: OpaquePointer, owner: AnyObject, role: Role) {
        OpenSSLErrorQueue.clear()
        guard let ssl = SSL_new(ctx) else { return nil }
        guard let networkIn = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            return nil
        }
        guard let networkOut = BIO_new(BIO_s_mem()) else {
            BIO_free(networkIn)
            SSL_free(ssl)
            return nil
        }
        // An empty read BIO reports "retry" (WANT_READ), never EOF: the socket, not the BIO,
        // tells us when the peer has gone. -1 is the default; set it so the rule is visible here.
        _ = otlp_BIO_set_mem_eof_return(networkIn, -1)
        // SSL_set_bio takes ownership of both BIOs: SSL_free frees them.
        SSL_set_bio(ssl, networkIn, networkOut)
        switch role {
        case .server: SSL_set_accept_state(ssl)
        case .client: SSL_set_connect_state(ssl)
        }
        self.role = role
        self.contextOwner = owner
        self.ssl = ssl
        self.networkIn = networkIn
        self.networkOut = networkOut
    }

    /// Client only, before the first handshake step: sends `hostname` as SNI (unless it is an IP
    /// literal, which RFC 6066 forbids in SNI) and makes certificate verification check it against
    /// the server certificate's DNS (or IP) subject alternative names.
    func expectServerName(_ hostname: String) -> TLSError? {
        // A NUL would end the C string early and make OpenSSL check a shorter name.
        guard !hostname.isEmpty, !hostname.utf8.contains(0) else {
            return TLSError(kind: .configuration, description: "tls client: invalid server name \(String(reflecting: hostname))")
        }
        OpenSSLErrorQueue.clear()
        let param = SSL_get0_param(ssl)
        if isIPLiteral(hostname) {
            guard X509_VERIFY_PARAM_set1_ip_asc(param, hostname) == 1 else {
                return TLSError.drainingErrorQueue(.configuration, "tls client: cannot verify against IP address \(hostname)")
            }
            return nil
        }
        guard otlp_SSL_set_tlsext_host_name(ssl, hostname) == 1 else {
            return TLSError.drainingErrorQueue(.configuration, "tls client: invalid server name \"\(hostname)\"")
        }
        // "*.example.com" may match "a.example.com", never "a.b.example.com" or "ab*.example.com".
        SSL_set_hostflags(ssl, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
        guard SSL_set1_host(ssl, hostname) == 1 else {
            return TLSError.drainingErrorQueue(.configuration, "tls client: invalid server name \"\(hostname)\"")
        }
        return nil
    }

    deinit {
        SSL_free(ssl)
    }

    // MARK: Ciphertext in and out

    /// Appends ciphertext received from the socket to `networkIn`. A memory BIO grows as needed.
    func receive(_ ciphertext: ByteBuffer) {
        ciphertext.withUnsafeReadableBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let chunk = Int32(clamping: bytes.count - offset)
                let written = BIO_write(networkIn, bytes.baseAddress! + offset, chunk)
                // A memory BIO write fails only if allocation fails.
                precondition(written > 0, "BIO_write to a memory BIO failed")
                offset += Int(written)
            }
        }
    }

    /// Bytes OpenSSL has written to `networkOut` that are not yet sent.
    var pendingCiphertextCount: Int {
        otlp_BIO_ctrl_pending(networkOut)
    }

    /// Moves all pending ciphertext into `buffer` with one copy per BIO read (no per-byte work).
    func drainCiphertext(into buffer: inout ByteBuffer) {
        while true {
            let pending = pendingCiphertextCount
            if pending == 0 { return }
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: pending) { out in
                let read = BIO_read(networkOut, out.baseAddress, Int32(clamping: pending))
                return max(Int(read), 0)
            }
        }
    }

    /// True when OpenSSL holds ciphertext it has not turned into cleartext yet, i.e. the socket
    /// closing now would cut a record in half.
    var hasUnprocessedInput: Bool {
        SSL_has_pending(ssl) == 1 || otlp_BIO_ctrl_pending(networkIn) > 0
    }

    // MARK: TLS operations

    func handshake() -> Step {
        OpenSSLErrorQueue.clear()
        let rc = SSL_do_handshake(ssl)
        if rc == 1 { return .done(0) }
        let step = classify(rc, kind: .handshake, message: "TLS handshake failed")
        // OpenSSL's own error for these is a generic "certificate verify failed"; the verify
        // result says why, which is what an operator needs in the log.
        if case .failed = step, let verification = peerVerificationError() {
            return .failed(verification)
        }
        return step
    }

    /// After a failed handshake: a `.peerVerification` error when the failure was the peer's
    /// certificate (OpenSSL's verify reason), or the absence of one that was required; else nil.
    /// The OpenSSL error queue has been drained already; the verify result lives on the SSL.
    private func peerVerificationError() -> TLSError? {
        let peer = role == .server ? "client certificate" : "server certificate"
        let result = SSL_get_verify_result(ssl)
        if result != X509_V_OK {
            let reason = X509_verify_cert_error_string(result).map { String(cString: $0) } ?? "verify error \(result)"
            return TLSError(kind: .peerVerification, description: "\(peer) rejected: \(reason)")
        }
        if lastFailureReason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE {
            return TLSError(kind: .peerVerification, description: "\(peer) rejected: none was sent and one is required")
        }
        return nil
    }

    /// The reason code of the first error `classify` drained for its last fatal failure.
    private var lastFailureReason: Int32 = 0

    /// Decrypts as much as fits into `buffer`'s writable space (at least `chunk` bytes).
    func read(into buffer: inout ByteBuffer, chunk: Int) -> Step {
        var step = Step.wantRead
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: chunk) { out in
            OpenSSLErrorQueue.clear()
            let rc = SSL_read(ssl, out.baseAddress, Int32(clamping: out.count))
            if rc > 0 {
                step = .done(Int(rc))
                return Int(rc)
            }
            step = classify(rc, kind: .protocolFailure, message: "TLS read failed")
            return 0
        }
        return step
    }

    /// Encrypts all of `cleartext` into `networkOut`. With memory BIOs and no partial-write mode
    /// SSL_write either takes everything or fails.
    func write(_ cleartext: ByteBuffer) -> TLSError? {
        cleartext.withUnsafeReadableBytes { bytes -> TLSError? in
            var offset = 0
            while offset < bytes.count {
                OpenSSLErrorQueue.clear()
                let rc = SSL_write(ssl, bytes.baseAddress! + offset, Int32(clamping: bytes.count - offset))
                if rc <= 0 {
                    if case .failed(let error) = classify(rc, kind: .protocolFailure, message: "TLS write failed") {
                        return error
                    }
                    return TLSError(kind: .protocolFailure, description: "TLS write failed: OpenSSL did not accept the data")
                }
                offset += Int(rc)
            }
            return nil
        }
    }

    /// Queues our close_notify in `networkOut`. Errors (e.g. the peer already gone) are ignored:
    /// the connection is closing either way.
    func shutdown() {
        OpenSSLErrorQueue.clear()
        _ = SSL_shutdown(ssl)
        OpenSSLErrorQueue.clear()
    }

    /// The ALPN protocol chosen during the handshake, nil when none.
    var negotiatedProtocol: String? {
        var data: UnsafePointer<UInt8>?
        var length: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &data, &length)
        guard let data, length > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self)
    }

    /// Maps a non-success return code to a step, draining the error queue for fatal errors.
    private func classify(_ rc: Int32, kind: TLSError.Kind, message: String) -> Step {
        switch SSL_get_error(ssl, rc) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .wantRead
        case SSL_ERROR_ZERO_RETURN:
            return .closedByPeer
        default:
            lastFailureReason = ERR_GET_REASON(ERR_peek_error())
            return .failed(TLSError.drainingErrorQueue(kind, message))
        }
    }
}
