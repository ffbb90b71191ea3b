import Foundation
import NIOHTTP1

/// The rules for the headers the proxy owns, applied to every forwarded request.
///
/// The proxy is the only source of the tenant header: every client-sent copy is dropped (any case,
/// any number of them, also when named in `Connection:`), then exactly one value is set from the
/// principal. Hop-by-hop headers and credentials never cross. Pure and channel-free, so it is tested
/// directly and shared by every protocol front.
public struct HeaderPolicy: Sendable {
    /// The tenant header's name as configured (e.g. `X-Scope-OrgID`), written in that spelling.
    public let tenantHeader: String
    /// Whether the client's `Authorization` header goes upstream (off by default).
    public let forwardAuthorization: Bool

    private let tenantHeaderLowercased: String

    public init(tenantHeader: String, forwardAuthorization: Bool) {
        self.tenantHeader = tenantHeader
        self.forwardAuthorization = forwardAuthorization
        self.tenantHeaderLowercased = tenantHeader.lowercased()
    }

    /// Headers that describe one hop and never pass through a proxy (RFC 9110 §7.6.1), plus
    /// `proxy-authorization` (a credential for us, not the receiver) and `expect` (answered here).
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "proxy-authorization", "proxy-authenticate", "expect",
    ]

    /// Headers a `Connection:` list can never remove: they frame the message or identify the target.
    static let framing: Set<String> = ["content-length", "host", "content-type", "content-encoding"]

    /// The headers sent upstream for a client request authenticated as `tenant`.
    public func upstreamRequestHeaders(from client: HTTPHeaders, tenant: String) -> HTTPHeaders {
        let nominated = Self.connectionNominated(client)
        var out = HTTPHeaders()
        out.reserveCapacity(client.count + 1)
        for (name, value) in client {
            let lower = name.lowercased()
            if lower == tenantHeaderLowercased { continue }
            if Self.hopByHop.contains(lower) { continue }
            if lower == "authorization" && !forwardAuthorization { continue }
            if nominated.contains(lower) && !Self.framing.contains(lower) { continue }
            out.add(name: name, value: value)
        }
        out.add(name: tenantHeader, value: tenant)
        return out
    }

    /// The headers relayed to the client from an upstream response: hop-by-hop ones are dropped, the
    /// client connection's own framing and keep-alive are decided by the proxy.
    public func clientResponseHeaders(from upstream: HTTPHeaders) -> HTTPHeaders {
        let nominated = Self.connectionNominated(upstream)
        var out = HTTPHeaders()
        out.reserveCapacity(upstream.count)
        for (name, value) in upstream {
            let lower = name.lowercased()
            if Self.hopByHop.contains(lower) { continue }
            if nominated.contains(lower) && !Self.framing.contains(lower) { continue }
            out.add(name: name, value: value)
        }
        return out
    }

    /// The lower-cased names listed in every `Connection` header.
    static func connectionNominated(_ headers: HTTPHeaders) -> Set<String> {
        var names: Set<String> = []
        for value in headers["connection"] {
            for token in value.split(separator: ",") {
                let name = token.trimmingCharacters(in: .whitespaces).lowercased()
                if !name.isEmpty { names.insert(name) }
            }
        }
        return names
    }
}
