import ProxyYAML

/// The keys each section accepts, by dotted section path ("" is the top level). The reader refuses
/// every other key, and uses this table to suggest the key a typo was meant to be.
enum Schema {
    static let sections: [(path: String, keys: [String])] = [
        ("", ["grpc", "http", "tls", "upstream", "auth", "tenant", "usage", "log", "admin", "limits", "reload", "shutdown"]),
        ("grpc", ["endpoint", "max_recv_msg_size"]),
        ("http", ["endpoint", "max_request_body_size", "max_header_bytes", "max_header_count", "idle_timeout"]),
        ("tls", ["cert_file", "key_file", "min_version", "client_ca_file", "client_auth", "crl_file", "verify_depth"]),
        ("upstream", ["grpc", "http", "connect_timeout", "timeout", "max_idle_connections",
                      "unsafe_allow_remote_upstream"]),
        ("auth", ["methods", "mtls", "jwt", "bearer", "basic", "principals", "forward_authorization"]),
        ("auth.mtls", ["principal_from", "allowed_principals"]),
        ("auth.jwt", ["providers", "max_token_bytes"]),
        ("auth.jwt.providers", ["name", "issuer", "audiences", "algorithms", "jwks_file", "jwks_url",
                                "hmac_secret_file", "hmac_secret_env", "jwks_ca_file", "jwks_refresh_interval",
                                "jwks_min_refetch_interval", "clock_skew", "required_claims", "principal_claim",
                                "tenant_claim", "claims_to_headers"]),
        ("auth.bearer", ["tokens_file"]),
        ("auth.basic", ["htpasswd_file"]),
        ("auth.principals", ["principal", "tenant", "allowed_tenants", "signals"]),
        ("tenant", ["header", "default", "resource_attribute", "principal_attribute"]),
        ("usage", ["count_items"]),
        ("log", ["level", "access_log", "format"]),
        ("admin", ["endpoint"]),
        ("limits", ["max_connections", "handshake_timeout", "max_buffered_bytes", "max_connection_age", "tenant_rate"]),
        ("limits.tenant_rate", ["requests_per_second", "bytes_per_second", "items_per_second", "burst_seconds", "overrides"]),
        ("limits.tenant_rate.overrides.<tenant>", ["requests_per_second", "bytes_per_second", "items_per_second"]),
        ("reload", ["watch_interval"]),
        ("shutdown", ["drain_timeout"]),
    ]

    /// Sections that are the entries of a list (`auth.jwt.providers[0]`), by their schema path.
    static let listSections: Set<String> = ["auth.jwt.providers", "auth.principals"]

    static func keys(of path: String) -> [String] {
        sections.first { $0.path == path }?.keys ?? []
    }
}

/// The known keys of one YAML mapping, looked up by name. `isBroken` marks a section that was not
/// a mapping at all (already reported), so "required" checks inside it stay quiet.
struct Fields {
    var path: String
    var values: [String: YAMLNode] = [:]
    var isBroken = false

    subscript(name: String) -> YAMLNode? { values[name] }

    /// The dotted key of a field in this section.
    func key(_ name: String) -> String { path.isEmpty ? name : "\(path).\(name)" }
}

/// Turns the YAML tree into a `ProxyConfiguration` in one pass, collecting every problem instead of
/// stopping at the first. Values of known keys are checked here; rules that relate several keys
/// (distinct listeners, loopback upstreams) run at the end of `read`.
struct ConfigurationReader {
    /// Absolute directory that relative file paths resolve against.
    let directory: String
    private(set) var problems: [ConfigurationError.Problem] = []

    init(directory: String) {
        self.directory = directory
    }

    /// The configuration with defaults applied; meaningful only when `problems` is empty afterwards.
    mutating func read(_ root: YAMLNode?) -> ProxyConfiguration {
        let top = section(root, path: "")

        let grpcFields = section(in: top, "grpc")
        var grpc = ProxyConfiguration.GRPC()
        if let value = endpoint(grpcFields, "endpoint", example: "0.0.0.0:4317") { grpc.endpoint = value }
        if let value = size(grpcFields, "max_recv_msg_size", example: "4MiB") { grpc.maxRecvMsgSize = value }

        let httpFields = section(in: top, "http")
        var http = ProxyConfiguration.HTTP()
        if let value = endpoint(httpFields, "endpoint", example: "0.0.0.0:4318") { http.endpoint = value }
        if let value = size(httpFields, "max_request_body_size", example: "20MiB") { http.maxRequestBodySize = value }
        if let value = size(httpFields, "max_header_bytes", example: "64KiB") { http.maxHeaderBytes = value }
        if let value = integer(httpFields, "max_header_count", minimum: 1, example: "100") { http.maxHeaderCount = value }
        if let value = duration(httpFields, "idle_timeout", example: "90s") { http.idleTimeout = value }

        let tlsFields = section(in: top, "tls")
        let certFile = requiredPath(
            tlsFields, "cert_file", example: "/etc/otlp-auth-proxy/tls/server.crt",
            required: "required: the PEM certificate chain the proxy presents, "
                + "e.g. cert_file: /etc/otlp-auth-proxy/tls/server.crt")
        let keyFile = requiredPath(
            tlsFields, "key_file", example: "/etc/otlp-auth-proxy/tls/server.key",
            required: "required: the PEM private key of that certificate, "
                + "e.g. key_file: /etc/otlp-auth-proxy/tls/server.key")
        let minVersion = tlsVersion(tlsFields, "min_version") ?? ProxyConfiguration.TLS.defaultMinVersion
        let tls = readClientCertificates(
            tlsFields, into: ProxyConfiguration.TLS(certFile: certFile ?? "", keyFile: keyFile ?? "", minVersion: minVersion))

        let upstreamFields = section(in: top, "upstream")
        var upstream = ProxyConfiguration.Upstream()
        if let value = endpoint(upstreamFields, "grpc", example: "127.0.0.1:14317") { upstream.grpc = value }
        if let value = endpoint(upstreamFields, "http", example: "127.0.0.1:14318") { upstream.http = value }
        if let value = duration(upstreamFields, "connect_timeout", example: "5s") { upstream.connectTimeout = value }
        if let value = duration(upstreamFields, "timeout", example: "30s") { upstream.timeout = value }
        if let value = integer(upstreamFields, "max_idle_connections", minimum: 0, example: "64") {
            upstream.maxIdleConnections = value
        }
        if let value = boolean(upstreamFields, "unsafe_allow_remote_upstream") { upstream.unsafeAllowRemoteUpstream = value }

        let authFields = section(in: top, "auth")
        let auth = readAuth(authFields, tls: tls)

        let tenantFields = section(in: top, "tenant")
        var tenant = ProxyConfiguration.Tenant()
        if let value = string(tenantFields, "header", example: "X-Scope-OrgID") {
            if let problem = Self.tenantHeaderProblem(value) {
                report(tenantFields.key("header"), problem)
            } else {
                tenant.header = value
            }
        }
        if let value = string(tenantFields, "default", example: "anonymous") {
            if let problem = Self.tenantIDProblem(value) {
                report(tenantFields.key("default"), "\(quote(value)): \(problem)")
            } else {
                tenant.defaultTenant = value
            }
        }
        for (name, example) in [("resource_attribute", "tenant.id"), ("principal_attribute", "auth.principal")] {
            guard let value = string(tenantFields, name, example: example) else { continue }
            if let problem = Self.attributeKeyProblem(value, example: example) {
                report(tenantFields.key(name), problem)
            } else if name == "resource_attribute" {
                tenant.resourceAttribute = value
            } else {
                tenant.principalAttribute = value
            }
        }
        if let key = tenant.resourceAttribute, key == tenant.principalAttribute {
            report(tenantFields.key("principal_attribute"), "\(quote(key)) is also tenant.resource_attribute: one attribute "
                + "cannot hold both the tenant and the principal; e.g. principal_attribute: auth.principal")
            tenant.principalAttribute = nil
        }

        let usageFields = section(in: top, "usage")
        var usage = ProxyConfiguration.Usage()
        if let value = boolean(usageFields, "count_items") { usage.countItems = value }

        let logFields = section(in: top, "log")
        var log = ProxyConfiguration.Log()
        if let value = string(logFields, "level", example: "info") {
            let lowered = value.lowercased()
            if ProxyConfiguration.Log.allowedLevels.contains(lowered) {
                log.level = lowered
            } else {
                report(logFields.key("level"), "\(quote(value)) is not a log level: use one of "
                    + ProxyConfiguration.Log.allowedLevels.joined(separator: ", ") + " (default info)")
            }
        }

        if let value = boolean(logFields, "access_log") { log.accessLog = value }
        if let value = string(logFields, "format", example: "json") {
            if let format = ProxyConfiguration.Log.Format(rawValue: value.lowercased()) {
                log.format = format
            } else {
                report(logFields.key("format"), "\(quote(value)) is not a log format: use json (the default) or logfmt")
            }
        }

        let admin = readAdmin(section(in: top, "admin"), listeners: [("grpc.endpoint", grpc.endpoint), ("http.endpoint", http.endpoint)])
        let limits = readLimits(section(in: top, "limits"))
        let (reload, shutdown) = readOperations(top)

        checkListeners(grpc: grpc.endpoint, http: http.endpoint)
        checkUpstreams(upstream, listeners: [("grpc.endpoint", grpc.endpoint), ("http.endpoint", http.endpoint)])

        var configuration = ProxyConfiguration(
            grpc: grpc, http: http, tls: tls, upstream: upstream, auth: auth, tenant: tenant, log: log,
            admin: admin, limits: limits)
        configuration.reload = reload
        configuration.shutdown = shutdown
        configuration.usage = usage
        return configuration
    }

    /// `admin.endpoint`: "" turns the listener off; otherwise it must not share a port with an OTLP listener.
    private mutating func readAdmin(
        _ fields: Fields, listeners: [(key: String, endpoint: Endpoint)]
    ) -> ProxyConfiguration.Admin {
        var admin = ProxyConfiguration.Admin()
        if let node = fields["endpoint"], case .scalar(let scalar) = node, !scalar.isNull, scalar.text.isEmpty {
            admin.endpoint = nil
            return admin
        }
        guard let endpoint = endpoint(fields, "endpoint", example: "127.0.0.1:9464") else { return admin }
        admin.endpoint = endpoint
        if endpoint.port != 0 {
            for listener in listeners where listener.endpoint.port == endpoint.port && Self.overlap(listener.endpoint, endpoint) {
                report(fields.key("endpoint"), "\(endpoint) collides with \(listener.key) \(listener.endpoint): the admin "
                    + "listener needs its own port, e.g. 127.0.0.1:9464, or \"\" to turn it off")
                break
            }
        }
        return admin
    }

    // MARK: - Rules that relate several keys

    /// Both listeners bind at start-up; the same port on overlapping addresses would fail there
    /// with a less helpful message.
    private mutating func checkListeners(grpc: Endpoint, http: Endpoint) {
        guard grpc.port != 0, grpc.port == http.port, Self.overlap(grpc, http) else { return }
        report("http.endpoint", "\(http) collides with grpc.endpoint \(grpc): the two listeners need "
            + "different ports, e.g. grpc 0.0.0.0:4317 and http 0.0.0.0:4318")
    }

    private mutating func checkUpstreams(
        _ upstream: ProxyConfiguration.Upstream, listeners: [(key: String, endpoint: Endpoint)]
    ) {
        for (key, target) in [("upstream.grpc", upstream.grpc), ("upstream.http", upstream.http)] {
            if target.port == 0 {
                report(key, "port 0 cannot be connected to: use the port the receiver listens on, "
                    + "e.g. 127.0.0.1:\(key == "upstream.grpc" ? 14317 : 14318)")
                continue
            }
            if !target.isLoopback && !upstream.unsafeAllowRemoteUpstream {
                report(key, "\(target) is not a loopback address: the proxy forwards in plaintext, so "
                    + "telemetry and tenant headers would leave the host unencrypted. Run the receiver on "
                    + "127.0.0.1 or [::1], or, if the network path is protected some other way, "
                    + "set upstream.unsafe_allow_remote_upstream: true")
                continue
            }
            // Only a loopback target provably reaches a wildcard listener; a remote address might be
            // another host, so it is flagged only when written exactly like the listener.
            for listener in listeners where listener.endpoint.port == target.port
                && (target.isLoopback ? Self.overlap(listener.endpoint, target)
                    : listener.endpoint.host.lowercased() == target.host.lowercased()) {
                report(key, "\(target) is the proxy's own listener (\(listener.key) \(listener.endpoint)): "
                    + "requests would loop back into the proxy. Run the receiver on another port, "
                    + "e.g. 127.0.0.1:\(key == "upstream.grpc" ? 14317 : 14318)")
                break
            }
        }
    }

    /// Whether two endpoints on the same port would land on the same socket address: equal hosts,
    /// or one of them a wildcard covering the other's address family.
    private static func overlap(_ a: Endpoint, _ b: Endpoint) -> Bool {
        if a.host.lowercased() == b.host.lowercased() { return true }
        func covers(_ wildcard: Endpoint, _ other: Endpoint) -> Bool {
            guard wildcard.isWildcard else { return false }
            // "::" listens on both families; 0.0.0.0 only on IPv4 (and names, which may resolve to it).
            return wildcard.host.contains(":") || !other.host.contains(":")
        }
        return covers(a, b) || covers(b, a)
    }

    // MARK: - Sections and unknown keys

    mutating func section(in parent: Fields, _ name: String) -> Fields {
        var fields = section(parent[name], path: parent.key(name))
        fields.isBroken = fields.isBroken || parent.isBroken
        return fields
    }

    /// Reports every key not in the schema for `path` (or `schema`, for list entries such as
    /// `auth.jwt.providers[1]`), and the section itself when it is not a mapping.
    /// An absent or empty (null) section is an empty mapping: all defaults.
    mutating func section(_ node: YAMLNode?, path: String, schema: String? = nil) -> Fields {
        let schemaPath = schema ?? path
        var fields = Fields(path: path)
        guard let node, !Self.isNull(node) else { return fields }
        guard case let .mapping(mapping) = node else {
            if path.isEmpty {
                report("(file)", "the file must be a mapping of sections (grpc, http, tls, upstream, auth, "
                    + "tenant, log), found \(Self.describe(node))")
            } else {
                report(path, "must be a mapping of keys (e.g. \(Schema.keys(of: schemaPath).first ?? "key"): ...), "
                    + "found \(Self.describe(node))")
            }
            fields.isBroken = true
            return fields
        }
        let known = Schema.keys(of: schemaPath)
        for entry in mapping.entries {
            let name = entry.key.text
            let value = entry.value
            if known.contains(name) {
                fields.values[name] = value
            } else {
                report(fields.key(name), Self.unknownKeyMessage(name, in: schemaPath))
            }
        }
        return fields
    }

    /// Suggests a close key in the same section (edit distance ≤ 2, ignoring case, '-' and camelCase),
    /// else the section(s) where the key does belong, else the keys allowed here.
    /// Never repeats the value: an unknown key may hold anything, including a secret.
    static func unknownKeyMessage(_ name: String, in path: String) -> String {
        let known = Schema.keys(of: path)
        let normalized = normalize(name)
        let scored = known.map { (key: $0, distance: min(
            Spelling.distance(normalized, normalize($0)),
            normalized.replacingUnderscores == normalize($0).replacingUnderscores ? 0 : Int.max)) }
        if let best = scored.min(by: { $0.distance < $1.distance }), best.distance <= 2 {
            return "unknown key; did you mean `\(best.key)`?"
        }
        let elsewhere = Schema.sections.filter { $0.path != path && $0.keys.contains(name) }.map(\.path)
        if !elsewhere.isEmpty {
            let places = elsewhere.map { $0.isEmpty ? "the top level" : "`\($0)`" }.joined(separator: " or ")
            let example = elsewhere[0].isEmpty ? name : "\(elsewhere[0]).\(name)"
            return "unknown key here: `\(name)` belongs under \(places) (\(example))"
        }
        let what = path.isEmpty ? "the sections are" : "the keys allowed here are"
        return "unknown key; \(what): \(known.joined(separator: ", "))"
    }

    private static func normalize(_ key: String) -> String {
        key.lowercased().replacing("-", with: "_")
    }

    // MARK: - Typed values
    //
    // Each reader returns nil when the key is absent (the caller keeps the default) or when the
    // value is wrong (the problem is already reported).

    /// The scalar under `name`, reporting lists, mappings and empty values. With `nullIsAbsent`,
    /// `key:` with no value counts as absent (for required keys, whose caller reports "required").
    mutating func scalar(_ fields: Fields, _ name: String, expected: String, example: String,
                                 nullIsAbsent: Bool = false) -> (scalar: YAMLScalar, text: String)? {
        guard let node = fields[name] else { return nil }
        guard case let .scalar(scalar) = node else {
            report(fields.key(name), "must be \(expected), found \(Self.describe(node)); e.g. \(name): \(example)")
            return nil
        }
        if scalar.isNull {
            if !nullIsAbsent {
                report(fields.key(name), "has no value: set one, e.g. \(name): \(example), "
                    + "or remove the key to use the default")
            }
            return nil
        }
        return (scalar, scalar.text)
    }

    mutating func string(_ fields: Fields, _ name: String, example: String) -> String? {
        scalar(fields, name, expected: "a string", example: example)?.text
    }

    /// A non-empty file path, made absolute against the config file's directory. Reports `required`
    /// when the key is absent, empty or has no value (unless the section itself was broken).
    mutating func requiredPath(
        _ fields: Fields, _ name: String, example: String, required: String
    ) -> String? {
        let before = problems.count
        let value = scalar(fields, name, expected: "a file path", example: example, nullIsAbsent: true)
        guard problems.count == before else { return nil }
        guard let text = value?.text, !text.allSatisfy(\.isWhitespace) else {
            if !fields.isBroken { report(fields.key(name), required) }
            return nil
        }
        return Paths.absolute(text, relativeTo: directory)
    }

    mutating func endpoint(_ fields: Fields, _ name: String, example: String) -> Endpoint? {
        if case .sequence = fields[name] {
            // Unquoted, YAML reads "[::1]:4318" as a one-element list.
            report(fields.key(name), "must be a \"host:port\" string, found a list; quote IPv6 endpoints, "
                + "e.g. \(name): \"[::1]:4318\"")
            return nil
        }
        guard let (_, text) = scalar(fields, name, expected: "a \"host:port\" string", example: quote(example))
        else { return nil }
        if let endpoint = Endpoint.parse(text) { return endpoint }
        report(fields.key(name), Self.endpointProblem(text, example: example))
        return nil
    }

    static func endpointProblem(_ text: String, example: String) -> String {
        let shown = quote(text)
        if text.contains("://") || text.contains("/") {
            return "\(shown) is not an endpoint: drop the scheme and any path, write host:port, e.g. \(quote(example))"
        }
        if !text.isEmpty, text.allSatisfy({ $0.isASCII && $0.isNumber }) {
            return "\(shown) is not an endpoint: write host:port, e.g. \(quote(example)), or \(quote(":" + text)) "
                + "for all interfaces"
        }
        if let colon = text.lastIndex(of: ":") {
            let port = text[text.index(after: colon)...]
            if !port.isEmpty, port.allSatisfy({ $0.isASCII && $0.isNumber }), (Int(port) ?? Int.max) > 65535 {
                return "\(shown): port \(port) is out of range: use 1-65535 (0 picks a free port when listening)"
            }
            if port.isEmpty {
                return "\(shown) has no port: write host:port, e.g. \(quote(example))"
            }
            if !text.hasPrefix("["), text[..<colon].contains(":") {
                return "\(shown) is not an endpoint: write an IPv6 address in brackets, e.g. \"[::1]:4317\""
            }
        } else {
            return "\(shown) has no port: write host:port, e.g. \(quote(example))"
        }
        return "\(shown) is not an endpoint: write host:port, e.g. \(quote(example)), \"[::1]:4317\", "
            + "or \":4317\" for all interfaces"
    }

    mutating func size(_ fields: Fields, _ name: String, example: String) -> Int? {
        guard let (scalar, text) = scalar(fields, name, expected: "a size", example: example) else { return nil }
        do throws(UnitError) {
            switch scalar.kind {
            case .int:
                guard let bytes = scalar.int else { throw UnitError(message: "\(quote(text)) is too large") }
                guard bytes > 0 else { throw UnitError(message: "must be greater than 0, e.g. \(name): \(example)") }
                return bytes
            case .string, .float:
                return try Units.parseSize(text)
            case .null, .bool:
                throw UnitError(message: "must be a size, found \(Self.describe(.scalar(scalar))); e.g. \(name): \(example)")
            }
        } catch {
            report(fields.key(name), error.message)
            return nil
        }
    }

    mutating func duration(_ fields: Fields, _ name: String, example: String) -> Duration? {
        guard let (scalar, text) = scalar(fields, name, expected: "a duration", example: example) else { return nil }
        do throws(UnitError) {
            switch scalar.kind {
            case .int:
                // Includes YAML 1.1 sexagesimal ("1:30" is 90): plain numbers are seconds.
                guard let seconds = scalar.int else { throw UnitError(message: "\(quote(text)) is too long") }
                return try Units.parseDuration(String(seconds))
            case .string, .float:
                return try Units.parseDuration(text)
            case .null, .bool:
                throw UnitError(message: "must be a duration, found \(Self.describe(.scalar(scalar))); e.g. \(name): \(example)")
            }
        } catch {
            report(fields.key(name), error.message)
            return nil
        }
    }

    mutating func integer(_ fields: Fields, _ name: String, minimum: Int, example: String) -> Int? {
        guard let (scalar, text) = scalar(fields, name, expected: "a whole number", example: example) else { return nil }
        guard scalar.kind == .int else {
            let unquote = scalar.kind == .string && Int(text) != nil ? " (remove the quotes)" : ""
            report(fields.key(name), "must be a whole number, found \(Self.describe(.scalar(scalar)))\(unquote); "
                + "e.g. \(name): \(example)")
            return nil
        }
        guard let value = scalar.int else {
            report(fields.key(name), "\(quote(text)) is too large")
            return nil
        }
        guard value >= minimum else {
            let bound = minimum == 0 ? "0 or more" : "at least \(minimum)"
            report(fields.key(name), "must be \(bound), found \(value); e.g. \(name): \(example)")
            return nil
        }
        return value
    }

    mutating func boolean(_ fields: Fields, _ name: String) -> Bool? {
        guard let (scalar, text) = scalar(fields, name, expected: "true or false", example: "false") else { return nil }
        guard scalar.kind == .bool, let value = scalar.bool else {
            let lowered = text.lowercased()
            let unquote = scalar.kind == .string && (lowered == "true" || lowered == "false") ? " (remove the quotes)" : ""
            report(fields.key(name), "must be true or false, found \(Self.describe(.scalar(scalar)))\(unquote)")
            return nil
        }
        return value
    }

    /// "1.2" or "1.3"; an unquoted 1.2 arrives as a YAML float and is accepted too.
    mutating func tlsVersion(_ fields: Fields, _ name: String) -> String? {
        guard let (scalar, text) = scalar(fields, name, expected: "\"1.2\" or \"1.3\"", example: "\"1.2\"") else {
            return nil
        }
        let allowed = ProxyConfiguration.TLS.allowedMinVersions
        if allowed.contains(text) { return text }
        if scalar.kind == .float, let number = scalar.float,
           let match = allowed.first(where: { Double($0) == number }) {
            return match
        }
        report(fields.key(name), "\(quote(text)) is not supported: use \"1.2\" (the default) or \"1.3\"; "
            + "TLS 1.0 and 1.1 are not offered")
        return nil
    }

    /// A problem with a Resource attribute key the proxy sets, or nil when it is usable: 1 to 255 bytes of
    /// printable UTF-8 without spaces, as OpenTelemetry attribute names are written.
    static func attributeKeyProblem(_ key: String, example: String) -> String? {
        if key.isEmpty { return "must not be empty; e.g. \(example)" }
        if key.utf8.count > 255 { return "is longer than 255 bytes; use a short name such as \(example)" }
        if key.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.value < 0x20 || $0.value == 0x7F }) {
            return "\(quote(key)) contains spaces or control characters; e.g. \(example)"
        }
        return nil
    }

    /// A problem with `tenant.header`, or nil when the name is usable.
    static func tenantHeaderProblem(_ header: String) -> String? {
        let example = "e.g. header: X-Scope-OrgID"
        if header.isEmpty {
            return "must not be empty; \(example)"
        }
        if header.hasPrefix(":") {
            return "\(quote(header)) is an HTTP/2 pseudo-header, which the proxy cannot set; use a regular header name, \(example)"
        }
        let tchar = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
        guard header.allSatisfy({ tchar.contains($0) }) else {
            return "\(quote(header)) is not a valid HTTP header name: use letters, digits and !#$%&'*+-.^_`|~ "
                + "only (no spaces or colons), \(example)"
        }
        let lowered = header.lowercased()
        if HopByHopFields.contains(lowered) {
            return "\(quote(header)) is a hop-by-hop header, which is removed before forwarding, so the receiver "
                + "would never see the tenant; \(example)"
        }
        let managed: Set = ["authorization", "host", "content-length", "content-type", "content-encoding"]
        if managed.contains(lowered) || lowered.hasPrefix("grpc-") {
            return "\(quote(header)) is a header HTTP or gRPC itself needs (credentials, routing or framing); "
                + "use a header of its own for the tenant, \(example)"
        }
        return nil
    }

    // MARK: - Helpers

    mutating func report(_ key: String, _ message: String) {
        problems.append(.init(key: key, message: message))
    }

    static func isNull(_ node: YAMLNode) -> Bool { node.isNull }

    /// How a found value is named in "must be X, found Y" messages.
    static func describe(_ node: YAMLNode) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case let .scalar(scalar):
            switch scalar.kind {
            case .null: return "no value"
            case .int, .float: return "the number \(scalar.text)"
            case .bool: return "the boolean \(scalar.text)"
            case .string: return "the string \(quote(scalar.text))"
            }
        }
    }
}

/// A value as shown in a message: quoted, control characters escaped, at most 64 characters.
func quote(_ text: String) -> String {
    text.count > 64 ? String(text.prefix(64)).debugDescription + "…" : text.debugDescription
}

extension String {
    fileprivate var replacingUnderscores: String { replacing("_", with: "") }
}
