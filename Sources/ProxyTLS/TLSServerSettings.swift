/// The lowest TLS protocol version the server accepts. The highest is always TLS 1.3.
public enum TLSVersion: String, Sendable, Equatable {
    case v1_2 = "1.2"
    case v1_3 = "1.3"
}

/// Whether the server asks TLS clients for a certificate (`tls.client_auth`).
public enum TLSClientAuth: String, Sendable {
    /// No CertificateRequest; clients authenticate with headers only.
    case none
    /// Ask for a certificate; a client may send none (it then needs header credentials), but a
    /// certificate it does send must verify or the handshake fails.
    case request
    /// A verified certificate is required: without one the handshake fails
    /// (alert certificate_required in TLS 1.3, handshake_failure in TLS 1.2).
    case require
}

/// What a `TLSServerContext` is built from: file paths and protocol choices, no key material.
/// Cipher suites, groups and the security level are fixed to Mozilla's "intermediate" profile
/// and are not settings, so a configuration cannot weaken them.
public struct TLSServerSettings: Sendable, Equatable {
    /// PEM file: the leaf certificate first, then any intermediates.
    public var certificateChainFile: String
    /// PEM file: an RSA or ECDSA private key, PKCS#8 or traditional, unencrypted.
    public var privateKeyFile: String
    /// The lowest protocol version offered; TLS 1.2 by default.
    public var minimumVersion: TLSVersion
    /// ALPN protocols in server preference order; `["http/1.1"]` by default.
    /// An empty list disables ALPN on the server side.
    public var alpnProtocols: [String]
    /// PEM bundle of the CAs that issue client certificates (trust anchors; intermediates may be
    /// sent by the client). Its subjects are also named in the server's CertificateRequest.
    public var clientCAFile: String?
    /// `.request` and `.require` need `clientCAFile`. With `.none` the CA file is still loaded and
    /// checked, but no certificate is asked for.
    public var clientAuth: TLSClientAuth
    /// PEM file with one or more CRLs. When set, every certificate of a client's chain must be
    /// covered by a current CRL from its issuer (OpenSSL CRL_CHECK | CRL_CHECK_ALL); a CRL past its
    /// nextUpdate makes verification fail. Needs `clientCAFile`.
    public var crlFile: String?
    /// The longest client chain accepted below the trust anchor, counting the leaf: 1 means the
    /// leaf must be issued by a CA in `clientCAFile`, 2 allows one intermediate, and so on. 1...10.
    public var verifyDepth: Int

    public init(
        certificateChainFile: String, privateKeyFile: String,
        minimumVersion: TLSVersion = .v1_2, alpnProtocols: [String] = ["http/1.1"],
        clientCAFile: String? = nil, clientAuth: TLSClientAuth = .none, crlFile: String? = nil,
        verifyDepth: Int = 4
    ) {
        self.certificateChainFile = certificateChainFile
        self.privateKeyFile = privateKeyFile
        self.minimumVersion = minimumVersion
        self.alpnProtocols = alpnProtocols
        self.clientCAFile = clientCAFile
        self.clientAuth = clientAuth
        self.crlFile = crlFile
        self.verifyDepth = verifyDepth
    }
}
