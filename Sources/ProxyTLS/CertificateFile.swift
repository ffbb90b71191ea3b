import ProxySystem
internal import COpenSSL

/// Reads the certificates of a PEM bundle (a CA file) for reporting: each one's subject common name
/// and not-after time, copied out so no OpenSSL handle leaves this function.
public enum CertificateFile {
    /// One certificate of a bundle, as metrics name it.
    public struct Summary: Sendable, Equatable {
        /// The subject's common name, or nil when it has none (or none that is valid UTF-8).
        public var commonName: String?
        public var notAfter: WallTime
        /// SHA-256 of the DER encoding, to tell apart certificates without a common name.
        public var sha256Fingerprint: [UInt8]
    }

    /// Every certificate in the PEM file at `path`, in file order. Unreadable files and blocks that
    /// are not certificates yield what was read before them; this is for metrics, not for trust.
    public static func summaries(pemFile path: String) -> [Summary] {
        OpenSSLErrorQueue.clear()
        guard let bio = BIO_new_file(path, "r") else {
            OpenSSLErrorQueue.clear()
            return []
        }
        defer { BIO_free(bio) }
        var result: [Summary] = []
        // PEM_read_bio_X509 returns a new X509 the caller owns; freed after copying its fields.
        while let cert = PEM_read_bio_X509(bio, nil, nil, nil) {
            defer { X509_free(cert) }
            let fields = PeerCertificate(copying: cert)
            if let notAfter = fields.notAfter {
                result.append(
                    Summary(commonName: fields.subjectCommonName, notAfter: notAfter,
                            sha256Fingerprint: fields.sha256Fingerprint))
            }
        }
        // The loop ends on "no start line" at end of file: expected, not an error.
        OpenSSLErrorQueue.clear()
        return result
    }
}
