internal import COpenSSL

/// Hashes for the auth module (token fingerprints, htpasswd-independent comparisons), computed
/// with OpenSSL's EVP interface so one crypto library serves the whole proxy.
public enum Digest {
    /// SHA-256 of `bytes`: always 32 bytes.
    public static func sha256(_ bytes: some Sequence<UInt8>) -> [UInt8] {
        let input = Array(bytes)
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = input.withUnsafeBytes { inputBytes in
            digest.withUnsafeMutableBufferPointer { out in
                EVP_Digest(inputBytes.baseAddress, inputBytes.count, out.baseAddress, &length, EVP_sha256(), nil)
            }
        }
        // EVP_Digest with the built-in SHA-256 fails only if allocation fails.
        precondition(ok == 1 && length == 32, "EVP_Digest(SHA-256) failed")
        return Array(digest.prefix(Int(length)))
    }
}

/// Comparisons whose running time does not depend on where the inputs differ.
public enum ConstantTime {
    /// false when lengths differ; otherwise CRYPTO_memcmp over the bytes.
    /// Only the length leaks through timing, which is why callers compare fixed-length digests.
    public static func equals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        if a.isEmpty { return true }
        return a.withUnsafeBytes { left in
            b.withUnsafeBytes { right in
                CRYPTO_memcmp(left.baseAddress, right.baseAddress, left.count) == 0
            }
        }
    }
}
