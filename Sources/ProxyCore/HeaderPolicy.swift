import NIOHTTP1
import ProxyConfig
import ProxyHTTP2

/// The rules for the headers the proxy owns, applied to every forwarded request, whatever the protocol
/// on either side.
///
/// The proxy is the only source of the tenant header: every client-sent copy is dropped (any case,
/// any number of them, also when named in `Connection:`), then exactly one value is set from the
/// principal. Hop-by-hop headers and credentials never cross. Pure and channel-free, so it is tested
/// directly; the HTTP/1.1 and HTTP/2 fronts share the one rule set (`forwardedRequestFields`).
public struct HeaderPolicy: Sendable {
    /// The tenant header's name as configured (e.g. `X-Scope-OrgID`), written in that spelling on HTTP/1.1.
    public let tenantHeader: String
    /// Whether the client's `Authorization` header goes upstream (off by default).
    public let forwardAuthorization: Bool

    /// Lower-case names of other headers the proxy sets itself (JWT `claims_to_headers`): like the
    /// tenant header, a client-sent copy never passes.
    public let ownedHeaders: Set<String>

    /// The tenant header's name as HTTP/2 requires it (lower case).
    let tenantHeaderLowercased: String
    /// The lengths of the owned names: only a name of one of these lengths can be an underscore spelling
    /// of one, so other names are never scanned for `_`.
    private let ownedLengths: [Int]
    /// The same lengths as bits (bit n: a name of n bytes), for names shorter than 64 bytes.
    private let ownedLengthMask: UInt64
    private let tenantHeaderLength: Int

    public init(tenantHeader: String, forwardAuthorization: Bool, ownedHeaders: Set<String> = []) {
        self.tenantHeader = tenantHeader
        self.forwardAuthorization = forwardAuthorization
        self.tenantHeaderLowercased = tenantHeader.lowercased()
        self.ownedHeaders = Set(ownedHeaders.map { $0.lowercased() })
        self.ownedLengths = [tenantHeaderLowercased.utf8.count] + self.ownedHeaders.map(\.utf8.count)
        self.ownedLengthMask = ownedLengths.reduce(0) { $1 < 64 ? $0 | (1 << UInt64($1)) : $0 }
        self.tenantHeaderLength = tenantHeaderLowercased.utf8.count
    }

    /// Whether a lower-case name is hop-by-hop (`HopByHopFields`, the product's one list): never forwarded.
    /// `te: trailers` is re-added by the gRPC relay, which needs it.
    static func isHopByHop(_ lower: String) -> Bool {
        HopByHopFields.contains(lower)
    }

    /// Headers a `Connection:` list can never remove: they frame the message or identify the target.
    static let framing: Set<String> = ["content-length", "host", "content-type", "content-encoding"]

    /// Calls `forward` for each client field that may go upstream, in order; pseudo-headers are the
    /// caller's business and are skipped. The caller then adds the tenant header.
    func forwardedRequestFields(
        _ fields: some Sequence<(name: String, value: String)>, nominated: Set<String>, namesAreLowercase: Bool = false,
        _ forward: (_ name: String, _ lowercasedName: String, _ value: String) -> Void
    ) {
        for (name, value) in fields {
            let lower = namesAreLowercase ? name : Self.lowercased(name)
            if dropsRequestField(lower, nominated: nominated) { continue }
            forward(name, lower, value)
        }
    }

    /// Whether a client field (lower-case name) stays behind. Names are compared only with the
    /// listed names of their own length: this runs for every field of every request.
    @inline(__always)
    private func dropsRequestField(_ lower: String, nominated: Set<String>) -> Bool {
        let count = lower.utf8.count
        if Self.isPseudoHeader(lower) { return true }
        if count == tenantHeaderLength && lower == tenantHeaderLowercased { return true }
        if !ownedHeaders.isEmpty && ownedHeaders.contains(lower) { return true }
        // `X_Scope_OrgID`: servers that map `_` to `-` (CGI and WSGI conventions, some frameworks)
        // would read it as the header the proxy owns.
        if ownsLength(count) && ownsUnderscoreSpelling(lower) { return true }
        if Self.isHopByHop(lower) { return true }
        if !forwardAuthorization && count == 13 && lower == "authorization" { return true }
        if !nominated.isEmpty && nominated.contains(lower) && !Self.framing.contains(lower) { return true }
        return false
    }

    /// Whether an owned name (the tenant header or another) is `count` bytes long.
    @inline(__always)
    private func ownsLength(_ count: Int) -> Bool {
        count < 64 ? ownedLengthMask & (1 << UInt64(count)) != 0 : ownedLengths.contains(count)
    }

    /// Whether `name` is an HTTP/2 pseudo-header (starts with `:`).
    @inline(__always)
    static func isPseudoHeader(_ name: String) -> Bool {
        var name = name
        return name.withUTF8 { $0.first == UInt8(ascii: ":") }
    }

    /// Whether a name with underscores is, with `-` for `_`, the tenant header or another owned one.
    private func ownsUnderscoreSpelling(_ lower: String) -> Bool {
        guard lower.utf8.contains(UInt8(ascii: "_")) else { return false }
        let dashed = String(decoding: lower.utf8.map { $0 == UInt8(ascii: "_") ? UInt8(ascii: "-") : $0 }, as: UTF8.self)
        return dashed == tenantHeaderLowercased || ownedHeaders.contains(dashed)
    }

    /// The headers relayed to the client from an upstream response: hop-by-hop ones are dropped, the
    /// client connection's own framing and keep-alive are decided by the proxy.
    public func clientResponseHeaders(from upstream: HTTPHeaders) -> HTTPHeaders {
        var out = HTTPHeaders()
        out.reserveCapacity(upstream.count)
        forEachResponseField(upstream.lazy.map { (name: $0.name, value: $0.value) }, nominated: Self.connectionNominated(upstream)) {
            name, _, value in out.add(name: name, value: value)
        }
        return out
    }

    /// The same for HTTP/2 fields (response headers or trailers), pseudo-headers skipped. Whatever the
    /// receiver's protocol, headers it names in `Connection:` never reach the client.
    /// `fromHTTP2`: the fields come from an HTTP/2 receiver, where `Connection` cannot occur (nghttp2
    /// refuses a message that carries it), so there is nothing nominated to look for.
    public func clientResponseFields(
        from upstream: some Sequence<(name: String, value: String)>, fromHTTP2: Bool = false
    ) -> [HTTP2HeaderField] {
        var out: [HTTP2HeaderField] = []
        out.reserveCapacity(12)
        // HTTP/2 names are lower case (nghttp2 refuses others).
        forEachResponseField(upstream, nominated: fromHTTP2 ? [] : Self.connectionNominated(pairs: upstream),
                             namesAreLowercase: fromHTTP2) { _, lower, value in
            out.append(HTTP2HeaderField(name: lower, value: value))
        }
        return out
    }

    func forEachResponseField(
        _ fields: some Sequence<(name: String, value: String)>, nominated: Set<String>, namesAreLowercase: Bool = false,
        _ forward: (_ name: String, _ lowercasedName: String, _ value: String) -> Void
    ) {
        for (name, value) in fields {
            let lower = namesAreLowercase ? name : Self.lowercased(name)
            if Self.isPseudoHeader(lower) { continue }
            if Self.isHopByHop(lower) { continue }
            if !nominated.isEmpty && nominated.contains(lower) && !Self.framing.contains(lower) { continue }
            forward(name, lower, value)
        }
    }

    /// `name` in lower case; the name itself when it has no upper-case ASCII letter, as HTTP/2 names
    /// always and HTTP/1.1 names mostly are, so the common case makes no new string.
    /// Names are tokens (ASCII; the parser and nghttp2 refuse anything else), so only `A`-`Z` change.
    static func lowercased(_ name: String) -> String {
        var name = name
        let lowered: String? = name.withUTF8 { bytes in
            guard bytes.contains(where: { $0 &- UInt8(ascii: "A") < 26 }) else { return nil }
            return String(unsafeUninitializedCapacity: bytes.count) { out in
                for index in 0..<bytes.count {
                    let byte = bytes[index]
                    out[index] = byte &- UInt8(ascii: "A") < 26 ? byte | 0x20 : byte
                }
                return bytes.count
            }
        }
        return lowered ?? name
    }

    /// The lower-cased names listed in every `Connection` header.
    static func connectionNominated(_ headers: HTTPHeaders) -> Set<String> {
        connectionNominated(values: headers["connection"])
    }

    /// The lower-cased names listed in every `Connection` field among `pairs` (any case).
    static func connectionNominated(pairs: some Sequence<(name: String, value: String)>) -> Set<String> {
        var values: [String] = []
        for (name, value) in pairs where name.utf8.count == 10 && lowercased(name) == "connection" { values.append(value) }
        return values.isEmpty ? [] : connectionNominated(values: values)
    }

    static func connectionNominated(_ fields: [HTTP2HeaderField]) -> Set<String> {
        // HTTP/2 forbids `Connection` (nghttp2 rejects such requests), so this is normally empty.
        connectionNominated(values: fields.lazy.filter { $0.name == "connection" }.map(\.value))
    }

    /// What `Connection: close` nominates, made once.
    private static let closeOnly: Set<String> = ["close"]

    private static func connectionNominated(values: some Sequence<String>) -> Set<String> {
        // The usual values, `keep-alive` and `close`, decided without splitting or a new set: the
        // first names a hop-by-hop field, dropped anyway, so only `close` is kept as a nominated name.
        var closes = false
        if values.allSatisfy({ onlyKeepAliveOrClose($0, closes: &closes) }) { return closes ? closeOnly : [] }
        var names: Set<String> = []
        for value in values {
            for token in value.split(separator: ",") {
                // The whitespace around list elements is spaces and tabs (RFC 9110 OWS).
                var name = token
                while name.first == " " || name.first == "\t" { name.removeFirst() }
                while name.last == " " || name.last == "\t" { name.removeLast() }
                let lowered = name.lowercased()
                if !lowered.isEmpty { names.insert(lowered) }
            }
        }
        return names
    }

    /// True when `value` lists only `keep-alive` and `close` (any case, spaces and tabs around them);
    /// sets `closes` when it lists `close`.
    private static func onlyKeepAliveOrClose(_ value: String, closes: inout Bool) -> Bool {
        var utf8 = value.utf8[...]
        while !utf8.isEmpty {
            var token = utf8.prefix { $0 != UInt8(ascii: ",") }
            utf8 = utf8.dropFirst(token.count + 1)
            while let first = token.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") { token = token.dropFirst() }
            while let last = token.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { token = token.dropLast() }
            if equalsLowercased(token, "keep-alive") { continue }
            if equalsLowercased(token, "close") {
                closes = true
                continue
            }
            return false
        }
        return true
    }

    private static func equalsLowercased(_ bytes: Substring.UTF8View, _ lower: StaticString) -> Bool {
        guard bytes.count == lower.utf8CodeUnitCount else { return false }
        return lower.withUTF8Buffer { expected in
            var index = 0
            for byte in bytes {
                let folded = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
                guard folded == expected[index] else { return false }
                index += 1
            }
            return true
        }
    }
}
