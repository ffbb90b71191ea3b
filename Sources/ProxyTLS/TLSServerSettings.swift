/// The lowest TLS protocol version the server accepts. The highest is always TLS 1.3.
public enum TLSVersion: String, Sendable, Equatable {
    case v1_2 = "1.2"
    case v1_3 = "1.3"
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

    public init(
        certificateChainFile: String, privateKeyFile: String,
        minimumVersion: TLSVersion = .v1_2, alpnProtocols: [String] = ["http/1.1"]
    ) {
        self.certificateChainFile = certificateChainFile
        self.privateKeyFile = privateKeyFile
        self.minimumVersion = minimumVersion
        self.alpnProtocols = alpnProtocols
    }
}
