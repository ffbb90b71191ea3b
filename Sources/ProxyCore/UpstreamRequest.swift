import ProxyOTLP
import NIOHTTP1
import ProxyHTTP2

/// Where an accepted request goes: an OTLP/gRPC call to the gRPC receiver over h2c, or an OTLP/HTTP
/// request to the HTTP receiver over HTTP/1.1.
enum ExchangeRoute: Equatable, Sendable {
    case grpc(OTLPSignal)
    case http(OTLPSignal)

    var signal: OTLPSignal {
        switch self {
        case .grpc(let signal), .http(let signal): return signal
        }
    }
}

/// The head of the request the receiver gets, in the receiver's protocol.
enum UpstreamRequest {
    /// For the gRPC receiver (h2c): pseudo-header fields first, then the regular fields.
    case h2c([HTTP2HeaderField])
    /// For the HTTP receiver.
    case http1(HTTPRequestHead)
}

extension HeaderPolicy {
    /// Builds every upstream request head, for both receivers and from both client protocols: the one
    /// place where the client's head becomes the receiver's.
    ///
    /// - The receiver gets exactly one authority: `:authority` for h2c, one `Host` for HTTP/1.1, from
    ///   `authority` (the client's `:authority` or its single `Host`); every client `host` field is
    ///   dropped (the exchange already refused a head whose `host` disagreed with `:authority`).
    /// - The target is the client's, query included, for OTLP/HTTP; the method's fixed path for gRPC.
    /// - Client fields pass through `forwardedRequestFields` (tenant and owned headers, hop-by-hop,
    ///   credentials and `Connection`-nominated names removed); then the tenant header and the
    ///   credential's extra headers are added.
    /// - An HTTP/2 request that ended with its head and declared no length gets `content-length: 0`,
    ///   so the HTTP/1.1 receiver sees an unambiguous empty body.
    /// - A payload the proxy rewrote (`rewrittenLength`) goes uncompressed: the client's
    ///   `content-encoding`, `grpc-encoding` and `content-length` are dropped, and the OTLP/HTTP
    ///   receiver gets the new `content-length`.
    func upstreamRequest(
        _ route: ExchangeRoute, head: ExchangeRequestHead, authority: String, tenant: String,
        extra: [(name: String, value: String)], declaresLength: Bool, rewrittenLength: Int? = nil
    ) -> UpstreamRequest {
        switch head.fields {
        case .http1(let headers):
            return upstreamRequest(
                route, fields: headers.lazy.map { (name: $0.name, value: $0.value) }, nominated: Self.connectionNominated(headers),
                namesAreLowercase: false, target: head.target, endStream: head.endStream, authority: authority, tenant: tenant, extra: extra,
                declaresLength: declaresLength, rewrittenLength: rewrittenLength)
        case .http2(let fields):
            return upstreamRequest(
                route,
                // Pseudo-headers are skipped by `forwardedRequestFields`.
                fields: fields.lazy.map { (name: $0.name, value: $0.value) },
                // HTTP/2 forbids `Connection` (nghttp2 refuses such a request): nothing is nominated.
                // Its names are lower case (nghttp2 refuses others).
                nominated: [], namesAreLowercase: true, target: head.target, endStream: head.endStream, authority: authority, tenant: tenant, extra: extra,
                declaresLength: declaresLength, rewrittenLength: rewrittenLength)
        }
    }

    private func upstreamRequest(
        _ route: ExchangeRoute, fields: some Sequence<(name: String, value: String)>, nominated: Set<String>,
        namesAreLowercase: Bool, target: String,
        endStream: Bool, authority: String, tenant: String, extra: [(name: String, value: String)], declaresLength: Bool,
        rewrittenLength: Int?
    ) -> UpstreamRequest {
        let rewritten = rewrittenLength != nil
        switch route {
        case .grpc(let signal):
            var out: [HTTP2HeaderField] = []
            out.reserveCapacity(24)
            out += [
                HTTP2HeaderField(name: ":method", value: "POST"),
                HTTP2HeaderField(name: ":scheme", value: "http"),
                HTTP2HeaderField(name: ":authority", value: authority),
                HTTP2HeaderField(name: ":path", value: signal.grpcPath),
                HTTP2HeaderField(name: "te", value: "trailers"),
            ]
            forwardedRequestFields(fields, nominated: nominated, namesAreLowercase: namesAreLowercase) { _, lower, value in
                if lower.utf8.count == 4 && lower == "host" || (rewritten && Self.describesPayload(lower)) { return }
                out.append(HTTP2HeaderField(name: lower, value: value))
            }
            out.append(HTTP2HeaderField(name: tenantHeaderLowercased, value: tenant))
            for (name, value) in extra { out.append(HTTP2HeaderField(name: name.lowercased(), value: value)) }
            return .h2c(out)
        case .http:
            // Built as pairs and made into headers once: `HTTPHeaders.add` checks every name again,
            // and these names are the client's (checked by the parser or nghttp2) or the configuration's.
            var pairs: [(String, String)] = []
            pairs.reserveCapacity(20)
            pairs.append(("Host", authority))
            forwardedRequestFields(fields, nominated: nominated, namesAreLowercase: namesAreLowercase) { name, lower, value in
                if lower.utf8.count == 4 && lower == "host" || (rewritten && Self.describesPayload(lower)) { return }
                pairs.append((name, value))
            }
            pairs.append((tenantHeader, tenant))
            for (name, value) in extra { pairs.append((name, value)) }
            if let rewrittenLength {
                pairs.append(("content-length", String(rewrittenLength)))
            } else if endStream && !declaresLength {
                pairs.append(("content-length", "0"))
            }
            return .http1(HTTPRequestHead(version: .http1_1, method: .POST, uri: target, headers: HTTPHeaders(pairs)))
        }
    }

    /// The fields that describe the client's body as sent (its coding and length), which a rewritten
    /// payload no longer matches. `lower` is lower case.
    private static func describesPayload(_ lower: String) -> Bool {
        lower == "content-encoding" || lower == "grpc-encoding" || lower == "content-length"
    }
}
