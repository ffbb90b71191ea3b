internal import COpenSSL
import NIOCore

/// Owns one `SSL*` for one accepted connection, and through `SSL_set_bio` its two memory BIOs:
/// `networkIn` (ciphertext from the socket that OpenSSL reads) and `networkOut` (ciphertext
/// OpenSSL writes, to be sent to the socket). `deinit` frees the SSL, which frees both BIOs.
///
/// Not thread-safe: used only from the channel's event loop by `TLSServerHandler`. Every call that
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

    /// Kept so the `TLSServerContext` (which the ALPN callback reaches unretained) outlives the SSL.
    let context: TLSServerContext
    private let ssl: OpaquePointer
    private let networkIn: OpaquePointer
    private let networkOut: OpaquePointer

    /// Makes an accept-state SSL from `context`. Nil only when OpenSSL cannot allocate.
    init?(context: TLSServerContext) {
        OpenSSLErrorQueue.clear()
        guard let ssl = SSL_new(context.ctx) else { return nil }
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
        SSL_set_accept_state(ssl)
        self.context = context
        self.ssl = ssl
        self.networkIn = networkIn
        self.networkOut = networkOut
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
        return classify(rc, kind: .handshake, message: "TLS handshake failed")
    }

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
            return .failed(TLSError.drainingErrorQueue(kind, message))
        }
    }
}
