internal import COpenSSL
import NIOCore

/// Owns one `SSL*` for one connection, server (accept state) or client (connect state), and the
/// ciphertext on both sides of it: OpenSSL reads what the socket delivered from `inbound` and appends
/// what it writes to `outbound`, both Swift buffers reached through one BIO of our own
/// (`BufferBIO`). So received ciphertext is not copied into a memory BIO first (nor its buffer zeroed
/// each time it grows), and ciphertext to send is not copied out of one; an idle connection keeps no
/// BIO buffers. `deinit` frees the SSL, which frees the BIO.
///
/// Not thread-safe: used only from the channel's event loop by `TLSChannelCore`. Every call that
/// can fail clears the thread's OpenSSL error queue first and drains it into a `TLSError` on
/// failure (WANT_READ / WANT_WRITE are results, not errors).
final class SSLConnection {
    /// Result of one step that reads from `inbound`.
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
    /// The BIO OpenSSL reads and writes ciphertext through; owned by `ssl`.
    private let bio: OpaquePointer
    /// Ciphertext received and not yet read by OpenSSL.
    private var inbound = ByteBuffer()
    /// Ciphertext OpenSSL wrote and the socket has not been given yet.
    private var outbound = ByteBuffer()
    private let allocator = ByteBufferAllocator()

    /// Makes an accept-state SSL from a server context. Nil only when OpenSSL cannot allocate.
    convenience init?(context: TLSServerContext) {
        self.init(ctx: context.ctx, owner: context, role: .server)
    }

    /// Makes an SSL from `ctx` (owned by `owner`) in accept or connect state.
    /// Nil only when OpenSSL cannot allocate.
    init?(ctx: OpaquePointer, owner: AnyObject, role: Role) {
        OpenSSLErrorQueue.clear()
        guard let method = BufferBIO.method, let ssl = SSL_new(ctx) else { return nil }
        guard let bio = BIO_new(method) else {
            SSL_free(ssl)
            return nil
        }
        // The same BIO both ways; SSL_set_bio takes the one reference for both (SSL_free frees it).
        SSL_set_bio(ssl, bio, bio)
        switch role {
        case .server: SSL_set_accept_state(ssl)
        case .client: SSL_set_connect_state(ssl)
        }
        self.role = role
        self.contextOwner = owner
        self.ssl = ssl
        self.bio = bio
        // Unretained: this object owns the SSL, which owns the BIO; `deinit` clears it first.
        BIO_set_data(bio, Unmanaged.passUnretained(self).toOpaque())
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
        BIO_set_data(bio, nil)
        SSL_free(ssl)
    }

    // MARK: Ciphertext in and out

    /// Hands ciphertext received from the socket to OpenSSL: kept as it is (no copy) when nothing
    /// is waiting, appended to what is.
    func receive(_ ciphertext: ByteBuffer) {
        if inbound.readableBytes == 0 {
            inbound = ciphertext
        } else {
            var more = ciphertext
            inbound.writeBuffer(&more)
        }
    }

    /// After the received ciphertext was worked through: lets go of the read buffer when all of it was
    /// used, and copies a short remainder (part of a record) out of it, so an idle connection never keeps
    /// more than four times what it has not read alive.
    func settleInput() {
        let left = inbound.readableBytes
        if left == 0 {
            inbound = ByteBuffer()
        } else if left * 4 < inbound.storageCapacity {
            var compact = allocator.buffer(capacity: left)
            compact.writeImmutableBuffer(inbound)
            inbound = compact
        }
    }

    /// Bytes OpenSSL has written that are not yet sent.
    var pendingCiphertextCount: Int {
        outbound.readableBytes
    }

    /// All pending ciphertext, to be written to the socket as it is; nil when there is none.
    func takeCiphertext() -> ByteBuffer? {
        guard outbound.readableBytes > 0 else { return nil }
        defer { outbound = ByteBuffer() }
        return outbound
    }

    /// True when OpenSSL holds ciphertext it has not turned into cleartext yet, i.e. the socket
    /// closing now would cut a record in half.
    var hasUnprocessedInput: Bool {
        SSL_has_pending(ssl) == 1 || inbound.readableBytes > 0
    }

    /// BIO read: OpenSSL takes up to `count` bytes of received ciphertext; -1 with "retry" when none is here.
    fileprivate func readCiphertext(into out: UnsafeMutableRawPointer, count: Int, bio: OpaquePointer) -> Int32 {
        let available = inbound.readableBytes
        guard available > 0 else {
            BIO_set_flags(bio, BIO_FLAGS_READ | BIO_FLAGS_SHOULD_RETRY)
            return -1
        }
        let taken = min(count, available)
        inbound.withUnsafeReadableBytes { bytes in out.copyMemory(from: bytes.baseAddress!, byteCount: taken) }
        inbound.moveReaderIndex(forwardBy: taken)
        return Int32(taken)
    }

    /// BIO write: OpenSSL's ciphertext is appended to what waits for the socket.
    fileprivate func writeCiphertext(_ bytes: UnsafeRawBufferPointer) -> Int32 {
        if outbound.capacity == 0 { outbound = allocator.buffer(capacity: max(bytes.count, 4096)) }
        outbound.writeBytes(bytes)
        return Int32(bytes.count)
    }

    /// BIO_ctrl_pending: received ciphertext OpenSSL has not read.
    fileprivate var inboundCount: Int { inbound.readableBytes }

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

    /// Encrypts all of `cleartext` into `outbound`. The BIO takes every write whole, so without
    /// partial-write mode SSL_write either takes everything or fails.
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

    /// Queues our close_notify in `outbound`. Errors (e.g. the peer already gone) are ignored:
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

/// The BIO type of every `SSLConnection`: reads and writes go to the connection's Swift buffers. The
/// BIO's data is the connection (unretained; nil once the connection is being freed, when reads find
/// nothing and writes fail).
private enum BufferBIO {
    /// Made once and never changed (OpenSSL only reads a BIO_METHOD), hence `nonisolated(unsafe)`.
    nonisolated(unsafe) static let method: OpaquePointer? = {
        guard let method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "otlp-auth-proxy ciphertext") else {
            return nil
        }
        _ = BIO_meth_set_write(method) { bio, data, length in
            guard let bio else { return -1 }
            BIO_clear_flags(bio, BufferBIO.retryFlags)
            guard let connection = BufferBIO.connection(bio) else { return -1 }
            guard let data, length > 0 else { return 0 }
            return connection.writeCiphertext(UnsafeRawBufferPointer(start: data, count: Int(length)))
        }
        _ = BIO_meth_set_read(method) { bio, out, length in
            guard let bio else { return -1 }
            BIO_clear_flags(bio, BufferBIO.retryFlags)
            guard let out, length > 0 else { return 0 }
            guard let connection = BufferBIO.connection(bio) else {
                BIO_set_flags(bio, BIO_FLAGS_READ | BIO_FLAGS_SHOULD_RETRY)
                return -1
            }
            return connection.readCiphertext(into: out, count: Int(length), bio: bio)
        }
        _ = BIO_meth_set_ctrl(method) { bio, command, _, _ in
            switch command {
            case BIO_CTRL_FLUSH: return 1
            case BIO_CTRL_PENDING: return bio.flatMap(BufferBIO.connection).map { $0.inboundCount } ?? 0
            case BIO_CTRL_WPENDING: return bio.flatMap(BufferBIO.connection).map { $0.pendingCiphertextCount } ?? 0
            default: return 0
            }
        }
        _ = BIO_meth_set_create(method) { bio in
            BIO_set_init(bio, 1)
            return 1
        }
        return method
    }()

    /// BIO_clear_retry_flags: what a previous call said about retrying.
    static let retryFlags = BIO_FLAGS_READ | BIO_FLAGS_WRITE | BIO_FLAGS_IO_SPECIAL | BIO_FLAGS_SHOULD_RETRY

    static func connection(_ bio: OpaquePointer) -> SSLConnection? {
        BIO_get_data(bio).map { Unmanaged<SSLConnection>.fromOpaque($0).takeUnretainedValue() }
    }
}
