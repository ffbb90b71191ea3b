internal import COpenSSL

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Owns one `SSL_CTX` configured as a TLS client for the proxy's own outbound HTTPS (JWKS and
/// OIDC discovery fetches): TLS 1.2 or 1.3, security level 2, and peer verification against
/// `caFile` or, when nil, the system's default CA locations (OpenSSL's default file and
/// directory, e.g. /etc/ssl/certs on Debian). The server name is checked per connection by
/// `TLSClientHandler`.
///
/// Built once and never modified afterwards, so it is safe to share between event loops; each
/// connection makes its own `SSL` from it. `deinit` frees the `SSL_CTX`; every `SSL` made from it
/// belongs to a `TLSClientHandler` that keeps this object alive.
public final class TLSClientContext: Sendable {
    /// The `SSL_CTX*`: written in `init` only, after which OpenSSL allows concurrent `SSL_new`.
    nonisolated(unsafe) let ctx: OpaquePointer

    public init(caFile: String?) throws(TLSError) {
        OpenSSLErrorQueue.clear()
        guard let ctx = SSL_CTX_new(TLS_client_method()) else {
            throw TLSError.drainingErrorQueue(.configuration, "tls client: cannot create an OpenSSL client context")
        }
        var configured = false
        defer { if !configured { SSL_CTX_free(ctx) } }

        guard otlp_SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1,
            otlp_SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) == 1
        else {
            throw TLSError.drainingErrorQueue(.configuration, "tls client: OpenSSL rejected the protocol versions")
        }
        SSL_CTX_set_security_level(ctx, 2)
        _ = SSL_CTX_set_options(ctx, otlp_SSL_OP_NO_COMPRESSION() | otlp_SSL_OP_NO_RENEGOTIATION())

        if let caFile {
            try Self.loadCAFile(ctx, caFile)
        } else {
            OpenSSLErrorQueue.clear()
            guard SSL_CTX_set_default_verify_paths(ctx) == 1 else {
                throw TLSError.drainingErrorQueue(.invalidTrustStore, "tls client: cannot use the system CA certificates")
            }
        }
        // No verify callback: OpenSSL's verdict stands, and a failure ends the handshake.
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
        self.ctx = ctx
        configured = true
    }

    deinit {
        SSL_CTX_free(ctx)
    }

    private static func loadCAFile(_ ctx: OpaquePointer, _ path: String) throws(TLSError) {
        var info = stat()
        guard stat(path, &info) == 0 else {
            let reason = String(cString: strerror(errno))
            throw TLSError(kind: .invalidTrustStore, description: "jwks_ca_file \(path): cannot read file (\(reason))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw TLSError(kind: .invalidTrustStore, description: "jwks_ca_file \(path): not a regular file")
        }
        OpenSSLErrorQueue.clear()
        guard SSL_CTX_load_verify_locations(ctx, path, nil) == 1 else {
            throw TLSError.drainingErrorQueue(.invalidTrustStore, "jwks_ca_file \(path): no valid CA certificate found in PEM")
        }
    }
}

/// True for a dotted IPv4 or an IPv6 literal (no brackets), which is verified against IP
/// subject alternative names and never sent as SNI.
func isIPLiteral(_ host: String) -> Bool {
    var v4 = in_addr()
    var v6 = in6_addr()
    return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
}
