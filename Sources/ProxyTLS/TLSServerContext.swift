internal import COpenSSL

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import NIOConcurrencyHelpers
import ProxySystem

// Mozilla "intermediate" (https://ssl-config.mozilla.org, version 5.7): ECDHE with AEAD only for
// TLS 1.2 (no DHE, no CBC, no static RSA key exchange), the three standard TLS 1.3 suites.
private let intermediateTLS12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    + "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
private let intermediateTLS13Ciphersuites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
private let intermediateGroups = "X25519:prime256v1:secp384r1"
/// Level 2: at least 112-bit security (RSA/DH >= 2048 bits, ECC >= 224 bits), no SHA-1 signatures.
private let securityLevel: Int32 = 2

/// Owns one `SSL_CTX` configured as a TLS server: certificate chain, private key, protocol
/// versions, Mozilla "intermediate" ciphers and groups, the ALPN selection callback, and, with
/// `clientCAFile`, client certificate verification (trust store, CRLs, depth, clientAuth purpose).
///
/// Built once from `TLSServerSettings` and never modified afterwards, so it is safe to share
/// between event loops; each connection makes its own `SSL` from it (`TLSServerHandler`).
/// `deinit` frees the `SSL_CTX` and the ALPN list. OpenSSL reference-counts the `SSL_CTX`, but the
/// ALPN callback reaches this object through an unretained pointer, so every `SSL` made from it
/// must be outlived by this object: `TLSServerHandler` keeps a strong reference for that reason.
public final class TLSServerContext: Sendable {
    public let settings: TLSServerSettings
    /// The leaf certificate's notAfter, or nil if OpenSSL could not convert it.
    public let certificateNotAfter: WallTime?

    /// The `SSL_CTX*`. Only read after `init` returns, and OpenSSL allows concurrent `SSL_new`
    /// on a context that is no longer being configured, hence `nonisolated(unsafe)`.
    nonisolated(unsafe) let ctx: OpaquePointer
    /// `alpnProtocols` in ALPN wire format (length-prefixed), in server preference order.
    /// Heap memory with a stable address: the ALPN callback returns pointers into it to OpenSSL.
    /// Written once in `init`, freed in `deinit`.
    nonisolated(unsafe) private let alpnWire: UnsafeMutableBufferPointer<UInt8>

    public init(settings: TLSServerSettings) throws(TLSError) {
        let wire = try Self.encodeALPN(settings.alpnProtocols)
        try Self.checkReadable(settings.certificateChainFile, label: "tls.cert_file")
        try Self.checkReadable(settings.privateKeyFile, label: "tls.key_file")

        OpenSSLErrorQueue.clear()
        guard let ctx = SSL_CTX_new(TLS_server_method()) else {
            throw TLSError.drainingErrorQueue(.configuration, "tls: cannot create an OpenSSL server context")
        }
        // Until every property is set, a failure must free what was made here.
        var configured = false
        defer { if !configured { SSL_CTX_free(ctx) } }

        try Self.applyProtocolSettings(ctx, minimumVersion: settings.minimumVersion)
        let notAfter = try Self.loadCertificateAndKey(ctx, settings: settings)
        try Self.configureClientVerification(ctx, settings: settings)

        let alpnWire = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: wire.count)
        _ = alpnWire.initialize(from: wire)
        self.settings = settings
        self.certificateNotAfter = notAfter
        self.ctx = ctx
        self.alpnWire = alpnWire
        configured = true

        if !wire.isEmpty {
            // passUnretained: this object owns the SSL_CTX, and every SSL made from it is owned by a
            // handler that also holds this object, so `self` outlives every callback invocation.
            SSL_CTX_set_alpn_select_cb(ctx, alpnSelectCallback, Unmanaged.passUnretained(self).toOpaque())
        }
    }

    deinit {
        SSL_CTX_free(ctx)
        alpnWire.deallocate()
    }

    /// Server-preference ALPN selection: the first of our protocols that the client also offers.
    /// Returns the protocol's bytes inside `alpnWire`, or nil when there is no overlap.
    fileprivate func selectALPN(offered: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8>? {
        var ours = 0
        while ours < alpnWire.count {
            let ourLength = Int(alpnWire[ours])
            let ourName = UnsafeBufferPointer(rebasing: alpnWire[(ours + 1)..<(ours + 1 + ourLength)])
            var theirs = 0
            while theirs < offered.count {
                let theirLength = Int(offered[theirs])
                let end = theirs + 1 + theirLength
                guard end <= offered.count else { break }  // malformed client list: stop reading it
                if theirLength == ourLength && ourName.elementsEqual(offered[(theirs + 1)..<end]) {
                    return ourName
                }
                theirs = end
            }
            ours += 1 + ourLength
        }
        return nil
    }

    // MARK: - Building the SSL_CTX

    /// ALPN wire format: each protocol as one length byte then its bytes. Names must be 1...255 bytes.
    private static func encodeALPN(_ protocols: [String]) throws(TLSError) -> [UInt8] {
        var wire: [UInt8] = []
        for name in protocols {
            let bytes = Array(name.utf8)
            guard (1...255).contains(bytes.count) else {
                throw TLSError(
                    kind: .configuration,
                    description: "tls.alpn \"\(name)\": an ALPN protocol name must be 1 to 255 bytes")
            }
            wire.append(UInt8(bytes.count))
            wire.append(contentsOf: bytes)
        }
        return wire
    }

    /// Opens the file once so a missing, unreadable or directory path gets a message naming it,
    /// rather than OpenSSL's generic "system library" error.
    private static func checkReadable(_ path: String, label: String) throws(TLSError) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            throw TLSError(kind: .fileUnreadable, description: "\(label) \(path): cannot read file (\(reason))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw TLSError(kind: .fileUnreadable, description: "\(label) \(path): not a regular file")
        }
        if info.st_size == 0 {
            throw TLSError(kind: .invalidPEM, description: "\(label) \(path): file is empty")
        }
    }

    private static func applyProtocolSettings(_ ctx: OpaquePointer, minimumVersion: TLSVersion) throws(TLSError) {
        let minimum: Int32 = switch minimumVersion {
        case .v1_2: TLS1_2_VERSION
        case .v1_3: TLS1_3_VERSION
        }
        OpenSSLErrorQueue.clear()
        guard otlp_SSL_CTX_set_min_proto_version(ctx, minimum) == 1,
            otlp_SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) == 1
        else {
            throw TLSError.drainingErrorQueue(.configuration, "tls.min_version \(minimumVersion.rawValue): rejected by OpenSSL")
        }
        guard SSL_CTX_set_cipher_list(ctx, intermediateTLS12Ciphers) == 1 else {
            throw TLSError.drainingErrorQueue(.configuration, "tls: OpenSSL rejected the TLS 1.2 cipher list")
        }
        guard SSL_CTX_set_ciphersuites(ctx, intermediateTLS13Ciphersuites) == 1 else {
            throw TLSError.drainingErrorQueue(.configuration, "tls: OpenSSL rejected the TLS 1.3 ciphersuites")
        }
        guard otlp_SSL_CTX_set1_groups_list(ctx, intermediateGroups) == 1 else {
            throw TLSError.drainingErrorQueue(.configuration, "tls: OpenSSL rejected the key exchange groups")
        }
        SSL_CTX_set_security_level(ctx, securityLevel)
        _ = SSL_CTX_set_options(
            ctx,
            otlp_SSL_OP_NO_COMPRESSION() | otlp_SSL_OP_NO_RENEGOTIATION()
                | otlp_SSL_OP_CIPHER_SERVER_PREFERENCE())
        // Idle connections give their 16 KiB+ record buffers back: OTLP exporters keep many
        // connections open that are quiet between batches.
        _ = otlp_SSL_CTX_set_mode(ctx, Int(SSL_MODE_RELEASE_BUFFERS))
        // PEM loading must never prompt on the terminal for a passphrase: encrypted keys fail instead.
        SSL_CTX_set_default_passwd_cb(ctx, refusePassphraseCallback)
    }

    /// Loads the chain and key, checks that they belong together, and returns the leaf's notAfter.
    private static func loadCertificateAndKey(_ ctx: OpaquePointer, settings: TLSServerSettings) throws(TLSError) -> WallTime? {
        let certPath = settings.certificateChainFile
        let keyPath = settings.privateKeyFile

        OpenSSLErrorQueue.clear()
        guard SSL_CTX_use_certificate_chain_file(ctx, certPath) == 1 else {
            throw TLSError.drainingErrorQueue(
                .invalidPEM, "tls.cert_file \(certPath): no valid certificate found in PEM")
        }

        // The key is parsed on its own first, so "not a key" (invalidPEM) and "not this
        // certificate's key" (keyMismatch) are told apart: SSL_CTX_use_PrivateKey_file reports both
        // as the same failure.
        OpenSSLErrorQueue.clear()
        guard let bio = BIO_new_file(keyPath, "r") else {
            throw TLSError.drainingErrorQueue(.fileUnreadable, "tls.key_file \(keyPath): cannot read file")
        }
        defer { BIO_free(bio) }
        guard let key = PEM_read_bio_PrivateKey(bio, nil, refusePassphraseCallback, nil) else {
            throw TLSError.drainingErrorQueue(
                .invalidPEM, "tls.key_file \(keyPath): no valid unencrypted private key found in PEM")
        }
        defer { EVP_PKEY_free(key) }  // SSL_CTX_use_PrivateKey takes its own reference.

        OpenSSLErrorQueue.clear()
        guard SSL_CTX_use_PrivateKey(ctx, key) == 1, SSL_CTX_check_private_key(ctx) == 1 else {
            throw TLSError.drainingErrorQueue(
                .keyMismatch, "tls.key_file \(keyPath): private key does not match the certificate in \(certPath)")
        }

        guard let leaf = SSL_CTX_get0_certificate(ctx) else { return nil }
        return asn1TimeToWallTime(X509_get0_notAfter(leaf))
    }

    // MARK: - Client certificates

    /// Trust store, CertificateRequest CA names, verify mode, depth, purpose and CRLs.
    /// OpenSSL then verifies each client chain during the handshake and, on failure, sends the
    /// alert that matches the verify error (expired → certificate_expired, unknown issuer or
    /// too deep → unknown_ca, revoked → certificate_revoked, wrong EKU → unsupported_certificate).
    private static func configureClientVerification(_ ctx: OpaquePointer, settings: TLSServerSettings) throws(TLSError) {
        guard let caFile = settings.clientCAFile else {
            if settings.clientAuth != .none {
                throw TLSError(
                    kind: .configuration,
                    description: "tls.client_auth \(settings.clientAuth.rawValue): needs tls.client_ca_file to verify client certificates")
            }
            if settings.crlFile != nil {
                throw TLSError(kind: .configuration, description: "tls.crl_file: needs tls.client_ca_file")
            }
            return
        }
        guard (1...10).contains(settings.verifyDepth) else {
            throw TLSError(
                kind: .configuration,
                description: "tls.verify_depth \(settings.verifyDepth): must be 1 to 10 (certificates below the trust anchor)")
        }
        try checkTrustFile(caFile, label: "tls.client_ca_file")

        OpenSSLErrorQueue.clear()
        guard SSL_CTX_load_verify_locations(ctx, caFile, nil) == 1 else {
            throw TLSError.drainingErrorQueue(
                .invalidTrustStore, "tls.client_ca_file \(caFile): no valid CA certificate found in PEM")
        }
        // The CA subjects go into the CertificateRequest so clients holding several certificates
        // pick one from these CAs. SSL_CTX_set_client_CA_list takes ownership of the list.
        OpenSSLErrorQueue.clear()
        guard let names = SSL_load_client_CA_file(caFile) else {
            throw TLSError.drainingErrorQueue(
                .invalidTrustStore, "tls.client_ca_file \(caFile): no valid CA certificate found in PEM")
        }
        SSL_CTX_set_client_CA_list(ctx, names)

        // OpenSSL's depth counts the CA certificates between leaf and trust anchor; ours counts
        // the leaf too (1 = issued directly by a configured CA).
        SSL_CTX_set_verify_depth(ctx, Int32(settings.verifyDepth - 1))
        // A server verifies client chains for the "SSL client" purpose by default; set it so the
        // rule is explicit: a leaf whose extendedKeyUsage lacks clientAuth fails with
        // "unsupported certificate purpose" (alert unsupported_certificate).
        OpenSSLErrorQueue.clear()
        guard SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT) == 1 else {
            throw TLSError.drainingErrorQueue(.configuration, "tls: OpenSSL refused the SSL client purpose")
        }

        if let crlFile = settings.crlFile {
            guard let store = SSL_CTX_get_cert_store(ctx) else {
                throw TLSError(kind: .configuration, description: "tls: the OpenSSL context has no certificate store")
            }
            try loadCRLs(crlFile, into: store)
            // CRL_CHECK checks the leaf, CRL_CHECK_ALL every certificate of the chain; a missing,
            // expired or not-yet-valid CRL fails verification (fail closed).
            let param = SSL_CTX_get0_param(ctx)
            guard X509_VERIFY_PARAM_set_flags(param, UInt(X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL)) == 1 else {
                throw TLSError.drainingErrorQueue(.configuration, "tls: OpenSSL refused the CRL check flags")
            }
        }

        let mode: Int32 = switch settings.clientAuth {
        case .none: SSL_VERIFY_NONE
        case .request: SSL_VERIFY_PEER
        case .require: SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
        }
        SSL_CTX_set_verify(ctx, mode, nil)

        if settings.clientAuth != .none {
            // No session resumption while clients are verified: a resumed session skips chain
            // verification, so a certificate that expired (or a context reloaded with a newer CRL)
            // would keep working until the ticket expires. OTLP exporters hold connections open,
            // so full handshakes cost little. The session id context is set anyway, because
            // OpenSSL refuses resumption attempts with verification on and no context set.
            let sessionContext = Array("otlp-auth-proxy/mtls".utf8)
            _ = SSL_CTX_set_session_id_context(ctx, sessionContext, UInt32(sessionContext.count))
            _ = otlp_SSL_CTX_set_session_cache_mode(ctx, Int(SSL_SESS_CACHE_OFF))
            _ = SSL_CTX_set_num_tickets(ctx, 0)
            _ = SSL_CTX_set_options(ctx, otlp_SSL_OP_NO_TICKET())
        }
    }

    /// `checkReadable` for trust files (CA bundle, CRL): the same checks, reported as
    /// `.invalidTrustStore` so callers can tell trust material from the server's own certificate.
    private static func checkTrustFile(_ path: String, label: String) throws(TLSError) {
        do {
            try checkReadable(path, label: label)
        } catch {
            throw TLSError(kind: .invalidTrustStore, description: error.description)
        }
    }

    /// Adds every CRL in the PEM file at `path` to `store`. Refuses a file that holds no CRL, a
    /// damaged CRL after good ones, and a CRL that is already past its nextUpdate (or not yet
    /// valid): loading it would only make every client fail verification.
    private static func loadCRLs(_ path: String, into store: OpaquePointer) throws(TLSError) {
        try checkTrustFile(path, label: "tls.crl_file")
        OpenSSLErrorQueue.clear()
        guard let bio = BIO_new_file(path, "r") else {
            throw TLSError.drainingErrorQueue(.invalidTrustStore, "tls.crl_file \(path): cannot read file")
        }
        defer { BIO_free(bio) }

        var count = 0
        while true {
            OpenSSLErrorQueue.clear()
            guard let crl = PEM_read_bio_X509_CRL(bio, nil, refusePassphraseCallback, nil) else { break }
            defer { X509_CRL_free(crl) }  // X509_STORE_add_crl takes its own reference.
            count += 1
            let issuer = crlIssuer(crl)
            if let nextUpdate = X509_CRL_get0_nextUpdate(crl), X509_cmp_current_time(nextUpdate) <= 0 {
                let when = asn1TimeToWallTime(nextUpdate).map { " at \($0)" } ?? ""
                throw TLSError(
                    kind: .invalidTrustStore,
                    description: "tls.crl_file \(path): CRL #\(count) (issuer \(issuer)) expired\(when) (nextUpdate); install a current CRL")
            }
            if let lastUpdate = X509_CRL_get0_lastUpdate(crl), X509_cmp_current_time(lastUpdate) > 0 {
                throw TLSError(
                    kind: .invalidTrustStore,
                    description: "tls.crl_file \(path): CRL #\(count) (issuer \(issuer)) is not valid yet (lastUpdate in the future)")
            }
            guard X509_STORE_add_crl(store, crl) == 1 else {
                throw TLSError.drainingErrorQueue(.invalidTrustStore, "tls.crl_file \(path): OpenSSL refused CRL #\(count)")
            }
        }
        // The loop ends when PEM reading fails: at the end of the file that is "no start line";
        // anything else means a damaged CRL.
        let last = ERR_peek_last_error()
        let atEnd = count > 0 && ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE
        guard atEnd else {
            let message = count == 0
                ? "tls.crl_file \(path): no valid CRL found in PEM"
                : "tls.crl_file \(path): the PEM block after CRL #\(count) is not a valid CRL"
            throw TLSError.drainingErrorQueue(.invalidTrustStore, message)
        }
        OpenSSLErrorQueue.clear()
    }

    /// The CRL issuer's distinguished name in OpenSSL's one-line form, for error messages.
    private static func crlIssuer(_ crl: OpaquePointer) -> String {
        guard let name = X509_CRL_get_issuer(crl), let line = X509_NAME_oneline(name, nil, 0) else {
            return "unknown"
        }
        defer { CRYPTO_free(line, #fileID, #line) }
        return String(cString: line)
    }
}

/// `pem_password_cb` that supplies no passphrase (returns 0), so encrypted PEM fails to load
/// instead of OpenSSL's default of prompting on the controlling terminal.
fileprivate func refusePassphraseCallback(
    _ buffer: UnsafeMutablePointer<CChar>?, _ size: Int32, _ rwflag: Int32, _ userdata: UnsafeMutableRawPointer?
) -> Int32 {
    0
}

/// `SSL_CTX_alpn_select_cb_func`: recovers the `TLSServerContext` from `arg` and asks it.
/// With no overlap it answers SSL_TLSEXT_ERR_NOACK: the handshake goes on without ALPN and the
/// caller assumes HTTP/1.1, which is what clients that offer only unknown protocols expect.
fileprivate func alpnSelectCallback(
    _ ssl: OpaquePointer?,
    _ out: UnsafeMutablePointer<UnsafePointer<UInt8>?>?,
    _ outLength: UnsafeMutablePointer<UInt8>?,
    _ offered: UnsafePointer<UInt8>?,
    _ offeredLength: UInt32,
    _ arg: UnsafeMutableRawPointer?
) -> Int32 {
    guard let out, let outLength, let offered, let arg else { return SSL_TLSEXT_ERR_NOACK }
    let context = Unmanaged<TLSServerContext>.fromOpaque(arg).takeUnretainedValue()
    guard let chosen = context.selectALPN(offered: UnsafeBufferPointer(start: offered, count: Int(offeredLength)))
    else { return SSL_TLSEXT_ERR_NOACK }
    out.pointee = chosen.baseAddress
    outLength.pointee = UInt8(chosen.count)
    return SSL_TLSEXT_ERR_OK
}

/// The context new handshakes use, swappable by reload. Each `TLSServerHandler` takes `current`
/// once, when it is created, so open connections keep the context they started with while new
/// connections pick up the replacement.
public final class TLSServerContextHolder: Sendable {
    private let box: NIOLockedValueBox<TLSServerContext>

    public init(_ context: TLSServerContext) {
        self.box = NIOLockedValueBox(context)
    }

    public var current: TLSServerContext {
        box.withLockedValue { $0 }
    }

    public func replace(with context: TLSServerContext) {
        box.withLockedValue { $0 = context }
    }
}
