/// The header fields that describe one hop and never pass through the proxy, in either direction:
/// RFC 9110 §7.6.1 and RFC 9113 §8.2.2, plus `proxy-authorization` (a credential for the proxy, not the
/// receiver) and `expect` (answered by the proxy). One list for the whole product: the header rules
/// (`HeaderPolicy`) drop these names, and the configuration refuses them as names the proxy would set
/// (`tenant.header`, `claims_to_headers`), which the receiver would then never see.
public enum HopByHopFields {
    /// Lower-case names.
    public static let names: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "proxy-authorization", "proxy-authenticate", "expect", "http2-settings",
    ]

    /// Whether a lower-case name is in `names`. Compares only against the names of the same length,
    /// instead of hashing: this runs for each field of each request and response.
    public static func contains(_ lower: String) -> Bool {
        switch lower.utf8.count {
        case 2: return lower == "te"
        case 6: return lower == "expect"
        case 7: return lower == "trailer" || lower == "upgrade"
        case 10: return lower == "connection" || lower == "keep-alive"
        case 14: return lower == "http2-settings"
        case 16: return lower == "proxy-connection"
        case 17: return lower == "transfer-encoding"
        case 18: return lower == "proxy-authenticate"
        case 19: return lower == "proxy-authorization"
        default: return false
        }
    }
}
