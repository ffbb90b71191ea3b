import ProxySystem
internal import COpenSSL
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The identity fields of a client certificate that passed verification, copied out of OpenSSL
/// so no C handle crosses threads. Built only from a certificate whose chain verified
/// (`SSL_get_verify_result == X509_V_OK`); the auth module picks the principal from these fields.
///
/// Strings holding a NUL byte or bytes outside printable ASCII (DNS names, URIs) or invalid UTF-8
/// (the CN) are left out rather than truncated or repaired, so "a.example\0.evil" can never be
/// read as "a.example".
public struct PeerCertificate: Sendable, Equatable {
    /// The subject's commonName; the last one when the subject holds several (the most specific RDN).
    public var subjectCommonName: String?
    /// SAN dNSName entries, in certificate order.
    public var dnsNames: [String]
    /// SAN uniformResourceIdentifier entries (SPIFFE IDs), in certificate order.
    public var uris: [String]
    public var notAfter: WallTime?
    /// SHA-256 of the certificate's DER encoding (32 bytes).
    public var sha256Fingerprint: [UInt8]

    public init(
        subjectCommonName: String?, dnsNames: [String], uris: [String], notAfter: WallTime?, sha256Fingerprint: [UInt8]
    ) {
        self.subjectCommonName = subjectCommonName
        self.dnsNames = dnsNames
        self.uris = uris
        self.notAfter = notAfter
        self.sha256Fingerprint = sha256Fingerprint
    }
}

extension PeerCertificate {
    /// Copies the fields out of `cert`. The caller keeps its reference; nothing here frees `cert`.
    init(copying cert: OpaquePointer) {
        self.init(
            subjectCommonName: Self.commonName(cert),
            dnsNames: [], uris: [],
            notAfter: asn1TimeToWallTime(X509_get0_notAfter(cert)),
            sha256Fingerprint: Self.fingerprint(cert))
        (dnsNames, uris) = Self.subjectAltNames(cert)
    }

    private static func commonName(_ cert: OpaquePointer) -> String? {
        guard let name = X509_get_subject_name(cert) else { return nil }
        var last: Int32 = -1
        var index = X509_NAME_get_index_by_NID(name, NID_commonName, -1)
        while index >= 0 {
            last = index
            index = X509_NAME_get_index_by_NID(name, NID_commonName, index)
        }
        guard last >= 0, let entry = X509_NAME_get_entry(name, last),
            let data = X509_NAME_ENTRY_get_data(entry)
        else { return nil }
        // ASN1_STRING_to_UTF8 converts BMPString/UniversalString etc. into a fresh UTF-8 buffer.
        var utf8: UnsafeMutablePointer<UInt8>?
        let length = ASN1_STRING_to_UTF8(&utf8, data)
        guard length >= 0, let utf8 else {
            OpenSSLErrorQueue.clear()
            return nil
        }
        defer { CRYPTO_free(utf8, #fileID, #line) }
        let bytes = UnsafeBufferPointer(start: utf8, count: Int(length))
        guard !bytes.contains(0) else { return nil }
        return String(validating: bytes, as: UTF8.self)
    }

    /// SAN dNSName and URI entries; other name types (IP, email, otherName) are ignored.
    private static func subjectAltNames(_ cert: OpaquePointer) -> (dns: [String], uris: [String]) {
        // X509_get_ext_d2i returns a newly allocated GENERAL_NAMES (a stack); freed below.
        guard let raw = X509_get_ext_d2i(cert, NID_subject_alt_name, nil, nil) else {
            OpenSSLErrorQueue.clear()  // a malformed SAN extension leaves an error on the queue
            return ([], [])
        }
        let names = OpaquePointer(raw)
        defer { GENERAL_NAMES_free(names) }
        var dns: [String] = []
        var uris: [String] = []
        for index in 0..<OPENSSL_sk_num(names) {
            guard let element = OPENSSL_sk_value(names, index) else { continue }
            var type: Int32 = 0
            // For GEN_DNS and GEN_URI the value is an ASN1_IA5STRING owned by the GENERAL_NAME.
            guard let value = GENERAL_NAME_get0_value(element.assumingMemoryBound(to: GENERAL_NAME.self), &type),
                type == GEN_DNS || type == GEN_URI
            else { continue }
            guard let text = printableASCII(value.assumingMemoryBound(to: ASN1_STRING.self)) else { continue }
            if type == GEN_DNS { dns.append(text) } else { uris.append(text) }
        }
        return (dns, uris)
    }

    /// An IA5String's bytes as a String, or nil when any byte is outside 0x21...0x7E.
    private static func printableASCII(_ string: UnsafeMutablePointer<ASN1_STRING>) -> String? {
        let length = Int(ASN1_STRING_length(string))
        guard length > 0, let data = ASN1_STRING_get0_data(string) else { return nil }
        let bytes = UnsafeBufferPointer(start: data, count: length)
        guard bytes.allSatisfy({ (0x21...0x7E).contains($0) }) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func fingerprint(_ cert: OpaquePointer) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = digest.withUnsafeMutableBufferPointer { out in
            X509_digest(cert, EVP_sha256(), out.baseAddress, &length)
        }
        // X509_digest with the built-in SHA-256 fails only if allocation fails.
        precondition(ok == 1 && length == 32, "X509_digest(SHA-256) failed")
        return Array(digest.prefix(Int(length)))
    }
}

/// An ASN1_TIME as a wall-clock time, or nil when OpenSSL cannot convert it.
func asn1TimeToWallTime(_ time: UnsafePointer<ASN1_TIME>?) -> WallTime? {
    guard let time else { return nil }
    var parts = tm()
    guard ASN1_TIME_to_tm(time, &parts) == 1 else {
        OpenSSLErrorQueue.clear()
        return nil
    }
    return WallTime(secondsSince1970: Double(timegm(&parts)))
}
