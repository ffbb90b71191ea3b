import ProxySystem
import ProxyOTLP
import ProxyYAML

/// Reading and checking of the authentication keys: `tls` client certificates, `auth` and its
/// methods, the principal table. Part of the one validation pass of `ConfigurationReader`: every
/// problem is reported with its dotted key (list entries as `auth.jwt.providers[1]`), and values of
/// secret-bearing keys are never repeated.
extension ConfigurationReader {
    typealias Auth = ProxyConfiguration.Auth
    typealias Provider = ProxyConfiguration.Auth.JWT.Provider

    // MARK: - tls: client certificates

    mutating func readClientCertificates(_ fields: Fields, into base: ProxyConfiguration.TLS) -> ProxyConfiguration.TLS {
        var tls = base
        tls.clientCAFile = optionalPath(fields, "client_ca_file", example: "/etc/otlp-auth-proxy/tls/clients-ca.crt")
        tls.crlFile = optionalPath(fields, "crl_file", example: "/etc/otlp-auth-proxy/tls/clients.crl")
        let clientAuth = choice(fields, "client_auth", ProxyConfiguration.TLS.ClientAuth.self, example: "require")
        let depth = integer(fields, "verify_depth", minimum: 0, example: "4")
        let range = ProxyConfiguration.TLS.verifyDepthRange
        if let depth {
            if range.contains(depth) {
                tls.verifyDepth = depth
            } else {
                report(fields.key("verify_depth"), "must be \(range.lowerBound) to \(range.upperBound), found \(depth): "
                    + "the number of CA certificates allowed between a client certificate and its trust anchor, "
                    + "e.g. verify_depth: 4")
            }
        }
        tls.clientAuth = clientAuth ?? (tls.clientCAFile == nil ? .none : .require)
        if tls.clientCAFile == nil {
            if let clientAuth, clientAuth != .none {
                report(fields.key("client_auth"), "\(clientAuth.rawValue) needs tls.client_ca_file: the PEM bundle of "
                    + "the CAs that sign client certificates, e.g. client_ca_file: /etc/otlp-auth-proxy/tls/clients-ca.crt")
            }
            if tls.crlFile != nil {
                report(fields.key("crl_file"), "needs tls.client_ca_file: a CRL only applies to client certificates; "
                    + "set client_ca_file or remove crl_file")
            }
            if depth != nil {
                report(fields.key("verify_depth"), "needs tls.client_ca_file: the depth only applies to client "
                    + "certificate chains; set client_ca_file or remove verify_depth")
            }
        }
        return tls
    }

    // MARK: - auth

    mutating func readAuth(_ fields: Fields, tls: ProxyConfiguration.TLS) -> Auth {
        var auth = Auth()
        if let value = boolean(fields, "forward_authorization") { auth.forwardAuthorization = value }

        if fields["bearer"] != nil {
            let bearerFields = section(in: fields, "bearer")
            if let file = requiredPath(
                bearerFields, "tokens_file", example: "/etc/otlp-auth-proxy/tokens.yaml",
                required: "required: the YAML file listing each token with its principal and tenant, "
                    + "e.g. bearer: { tokens_file: /etc/otlp-auth-proxy/tokens.yaml }")
            {
                auth.bearer = .init(tokensFile: file)
            }
        }
        if fields["basic"] != nil {
            let basicFields = section(in: fields, "basic")
            if let file = requiredPath(
                basicFields, "htpasswd_file", example: "/etc/otlp-auth-proxy/users.htpasswd",
                required: "required: the htpasswd file with bcrypt or sha-crypt hashes, "
                    + "e.g. basic: { htpasswd_file: /etc/otlp-auth-proxy/users.htpasswd } (create it with `htpasswd -B -c`)")
            {
                auth.basic = .init(htpasswdFile: file)
            }
        }
        if fields["mtls"] != nil {
            auth.mtls = readMTLS(section(in: fields, "mtls"), tls: tls)
        }
        if fields["jwt"] != nil {
            auth.jwt = readJWT(section(in: fields, "jwt"))
        }
        auth.principals = readPrincipals(fields)

        let configured = Auth.Method.allCases.filter { method in
            switch method {
            case .mtls: return fields["mtls"] != nil
            case .jwt: return fields["jwt"] != nil
            case .bearer: return fields["bearer"] != nil
            case .basic: return fields["basic"] != nil
            }
        }
        if let listed = methodList(fields) {
            for method in listed where !configured.contains(method) {
                report(fields.key("methods"), "\(method.rawValue) is not configured: add an auth.\(method.rawValue) "
                    + "section or remove \(method.rawValue) from the list")
            }
            for method in configured where !listed.contains(method) {
                report(fields.key("methods"), "auth.\(method.rawValue) is configured but not listed: add "
                    + "\(method.rawValue) to auth.methods (the list is the order of precedence), or remove auth.\(method.rawValue)")
            }
            auth.methods = listed
        } else {
            auth.methods = configured
        }
        if configured.isEmpty && !fields.isBroken {
            report(fields.path, "required: at least one authentication method, e.g. "
                + "auth: { bearer: { tokens_file: /etc/otlp-auth-proxy/tokens.yaml } }; the methods are "
                + "mtls (client certificates), jwt, bearer (a tokens file) and basic (an htpasswd file)")
        }
        return auth
    }

    private mutating func methodList(_ fields: Fields) -> [Auth.Method]? {
        guard let names = stringList(fields, "methods", example: "[mtls, jwt, bearer, basic]") else { return nil }
        if names.isEmpty {
            report(fields.key("methods"), "must not be empty: list the methods in order of precedence, "
                + "e.g. methods: [mtls, bearer], or remove the key to use every configured method")
            return nil
        }
        var methods: [Auth.Method] = []
        for name in names {
            guard let method = Auth.Method(rawValue: name) else {
                report(fields.key("methods"), "\(quote(name)) is not a method: use mtls, jwt, bearer or basic")
                continue
            }
            if methods.contains(method) {
                report(fields.key("methods"), "\(name) is listed twice; list each method once")
                continue
            }
            methods.append(method)
        }
        return methods
    }

    private mutating func readMTLS(_ fields: Fields, tls: ProxyConfiguration.TLS) -> Auth.MTLS {
        var mtls = Auth.MTLS()
        if tls.clientCAFile == nil {
            report(fields.path, "needs tls.client_ca_file: client certificates can only identify principals when the "
                + "proxy verifies them against your client CA, e.g. tls: { client_ca_file: /etc/otlp-auth-proxy/tls/clients-ca.crt }")
        } else if tls.clientAuth == .none {
            report(fields.path, "needs tls.client_auth request or require: with none the proxy never asks for a "
                + "client certificate")
        }
        if let names = stringList(fields, "principal_from", example: "[uri_san, dns_san, subject_cn]") {
            var sources: [Auth.MTLS.Source] = []
            for name in names {
                guard let source = Auth.MTLS.Source(rawValue: name) else {
                    report(fields.key("principal_from"), "\(quote(name)) is not an identity source: use uri_san, "
                        + "dns_san or subject_cn")
                    continue
                }
                if sources.contains(source) {
                    report(fields.key("principal_from"), "\(name) is listed twice; list each source once")
                } else {
                    sources.append(source)
                }
            }
            if names.isEmpty {
                report(fields.key("principal_from"), "must not be empty, e.g. principal_from: [uri_san, dns_san, subject_cn]")
            } else {
                mtls.principalFrom = sources
            }
        }
        if let patterns = stringList(fields, "allowed_principals", example: "[\"spiffe://prod.example/ns/otel/*\"]") {
            if patterns.isEmpty {
                report(fields.key("allowed_principals"), "must not be empty: list the identities allowed, "
                    + "or remove the key to allow every certificate the client CA signed")
            } else if patterns.contains(where: \.isEmpty) {
                report(fields.key("allowed_principals"), "contains an empty pattern")
            } else {
                mtls.allowedPrincipals = patterns
            }
        }
        return mtls
    }

    private mutating func readJWT(_ fields: Fields) -> Auth.JWT {
        var jwt = Auth.JWT(providers: [])
        if let value = size(fields, "max_token_bytes", example: "16KiB") {
            if value < 1024 || value > 1024 * 1024 {
                report(fields.key("max_token_bytes"), "must be between 1KiB and 1MiB, e.g. max_token_bytes: 16KiB")
            } else {
                jwt.maxTokenBytes = value
            }
        }
        let providersKey = fields.key("providers")
        guard let node = fields["providers"], !Self.isNull(node) else {
            if !fields.isBroken {
                report(providersKey, "required: at least one provider with name, issuer, audiences and algorithms, "
                    + "e.g. providers: [{ name: corp, issuer: \"https://idp.example.com/\", audiences: [otlp-ingest], "
                    + "algorithms: [ES256] }]")
            }
            return jwt
        }
        guard case let .sequence(items) = node else {
            report(providersKey, "must be a list of providers, found \(Self.describe(node))")
            return jwt
        }
        if items.isEmpty {
            report(providersKey, "must not be empty: add at least one provider")
        }
        var names: [String: Int] = [:]
        for (index, item) in items.enumerated() {
            let path = "\(providersKey)[\(index)]"
            let entryFields = section(item, path: path, schema: "auth.jwt.providers")
            if entryFields.isBroken { continue }
            guard let provider = readProvider(entryFields) else { continue }
            if let first = names[provider.name] {
                report(entryFields.key("name"), "\(quote(provider.name)) is already the name of providers[\(first)]; "
                    + "names must be unique (they label logs and metrics)")
            } else {
                names[provider.name] = index
            }
            jwt.providers.append(provider)
        }
        return jwt
    }

    /// One provider; nil when a required key is missing (already reported).
    private mutating func readProvider(_ fields: Fields) -> Provider? {
        let name = requiredString(fields, "name", example: "corp", what: "a unique name for logs and metrics")
        if let name, !name.unicodeScalars.allSatisfy({
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0)
        }) {
            report(fields.key("name"), "\(quote(name)): use letters, digits and - _ . only (it is a metric label)")
        }
        let issuer = requiredString(fields, "issuer", example: "\"https://idp.example.com/\"",
                                    what: "the exact `iss` value the tokens carry")
        var audiences: [String] = []
        if let list = stringList(fields, "audiences", example: "[otlp-ingest]") {
            audiences = list
            if list.isEmpty || list.contains(where: \.isEmpty) {
                report(fields.key("audiences"), "must list at least one non-empty audience, e.g. audiences: [otlp-ingest]")
            }
        } else if fields["audiences"] == nil {
            report(fields.key("audiences"), "required: the `aud` values this proxy accepts, e.g. audiences: [otlp-ingest]")
        }
        var algorithms: [String] = []
        if let list = stringList(fields, "algorithms", example: "[ES256]") {
            for value in list {
                if let known = Provider.allowedAlgorithms.first(where: { $0.lowercased() == value.lowercased() }) {
                    if algorithms.contains(known) {
                        report(fields.key("algorithms"), "\(known) is listed twice")
                    } else {
                        algorithms.append(known)
                    }
                } else if value.lowercased() == "none" {
                    report(fields.key("algorithms"), "\"none\" (unsigned tokens) is never accepted")
                } else {
                    report(fields.key("algorithms"), "\(quote(value)) is not supported: use "
                        + Provider.allowedAlgorithms.joined(separator: ", "))
                }
            }
            if list.isEmpty {
                report(fields.key("algorithms"), "must list at least one algorithm, e.g. algorithms: [ES256]")
            }
        } else if fields["algorithms"] == nil {
            report(fields.key("algorithms"), "required: the signature algorithms to accept, e.g. algorithms: [ES256, RS256]")
        }

        // Key source: at most one; none means OIDC discovery from the issuer.
        let jwksFile = optionalPath(fields, "jwks_file", example: "/etc/otlp-auth-proxy/jwks.json")
        let jwksURL = string(fields, "jwks_url", example: "https://idp.example.com/.well-known/jwks.json")
        let secretFile = optionalPath(fields, "hmac_secret_file", example: "/etc/otlp-auth-proxy/hs.key")
        let secretEnv = string(fields, "hmac_secret_env", example: "OTLP_JWT_SECRET")
        let sources = [("jwks_file", jwksFile), ("jwks_url", jwksURL), ("hmac_secret_file", secretFile),
                       ("hmac_secret_env", secretEnv)].filter { $0.1 != nil }.map(\.0)
        var keySource = Provider.KeySource.discovery
        if sources.count > 1 {
            report(fields.path, "set only one key source, found " + sources.joined(separator: " and ")
                + "; remove all of them to use OIDC discovery from the issuer")
        } else if let jwksFile {
            keySource = .jwksFile(jwksFile)
        } else if let jwksURL {
            if let problem = Self.httpsURLProblem(jwksURL) {
                report(fields.key("jwks_url"), problem)
            }
            keySource = .jwksURL(jwksURL)
        } else if let secretFile {
            if let problem = Self.secretFileProblem(secretFile) { report(fields.key("hmac_secret_file"), problem) }
            keySource = .hmacSecretFile(secretFile)
        } else if let secretEnv {
            if let problem = Self.secretEnvProblem(secretEnv) { report(fields.key("hmac_secret_env"), problem) }
            keySource = .hmacSecretEnv(secretEnv)
        }
        let hmacAlgorithms = algorithms.filter { $0.hasPrefix("HS") }
        let publicAlgorithms = algorithms.filter { !$0.hasPrefix("HS") }
        switch keySource {
        case .hmacSecretFile, .hmacSecretEnv:
            if !publicAlgorithms.isEmpty {
                report(fields.key("algorithms"), publicAlgorithms.joined(separator: ", ")
                    + " cannot use an HMAC secret; a provider with hmac_secret_file or hmac_secret_env accepts "
                    + "HS256, HS384 and HS512 only (add a second provider for public-key tokens)")
            }
        case .jwksFile, .jwksURL, .discovery:
            if let first = hmacAlgorithms.first {
                report(fields.key("algorithms"), "\(first) needs hmac_secret_file or hmac_secret_env: HMAC keys are "
                    + "never taken from a JWKS (that would let a public key sign tokens)")
            }
        }
        if case .discovery = keySource, sources.isEmpty, hmacAlgorithms.isEmpty, let issuer,
           let problem = Self.httpsURLProblem(issuer) {
            report(fields.key("issuer"), "with no jwks_file, jwks_url or hmac secret, keys come from OIDC discovery at "
                + "<issuer>/.well-known/openid-configuration, so the issuer must be a URL: \(problem)")
        }

        let caFile = optionalPath(fields, "jwks_ca_file", example: "/etc/otlp-auth-proxy/tls/idp-ca.crt")
        if caFile != nil {
            switch keySource {
            case .jwksURL, .discovery: break
            default:
                report(fields.key("jwks_ca_file"), "only applies to keys fetched over HTTPS (jwks_url or discovery); remove it")
            }
        }
        var provider = Provider(
            name: name ?? "", issuer: issuer ?? "", audiences: audiences, algorithms: algorithms, keySource: keySource,
            jwksCAFile: caFile)
        if let value = duration(fields, "jwks_refresh_interval", example: "10m") {
            if value < .seconds(1) {
                report(fields.key("jwks_refresh_interval"), "must be at least 1s, e.g. jwks_refresh_interval: 10m")
            } else {
                provider.jwksRefreshInterval = value
            }
        }
        if let value = duration(fields, "jwks_min_refetch_interval", example: "30s") {
            if value < .seconds(1) {
                report(fields.key("jwks_min_refetch_interval"), "must be at least 1s, e.g. jwks_min_refetch_interval: 30s")
            } else {
                provider.jwksMinRefetchInterval = value
            }
        }
        if let value = duration(fields, "clock_skew", example: "60s") {
            if value > Provider.maximumClockSkew {
                report(fields.key("clock_skew"), "at most 5m: a larger skew keeps expired tokens valid; fix the clocks "
                    + "(NTP) instead, e.g. clock_skew: 60s")
            } else {
                provider.clockSkew = value
            }
        }
        if let list = stringList(fields, "required_claims", example: "[sub]") {
            if list.contains(where: \.isEmpty) {
                report(fields.key("required_claims"), "contains an empty claim name")
            }
            provider.requiredClaims = list
        }
        if let value = string(fields, "principal_claim", example: "sub") {
            if let problem = Self.claimPathProblem(value) {
                report(fields.key("principal_claim"), problem)
            } else {
                provider.principalClaim = value
            }
        }
        if let value = string(fields, "tenant_claim", example: "org.tenant") {
            if let problem = Self.claimPathProblem(value) {
                report(fields.key("tenant_claim"), problem)
            } else {
                provider.tenantClaim = value
            }
        }
        provider.claimsToHeaders = readClaimsToHeaders(fields)
        guard name != nil, issuer != nil else { return nil }
        return provider
    }

    private mutating func readClaimsToHeaders(_ fields: Fields) -> [Auth.JWT.ClaimHeader] {
        let key = fields.key("claims_to_headers")
        guard let node = fields["claims_to_headers"], !Self.isNull(node) else { return [] }
        guard case let .mapping(mapping) = node else {
            report(key, "must be a mapping of claim to header name, e.g. claims_to_headers: { sub: X-OTLP-Subject }, "
                + "found \(Self.describe(node))")
            return []
        }
        var result: [Auth.JWT.ClaimHeader] = []
        var seen: Set<String> = []
        for entry in mapping.entries {
            let claimScalar = entry.key
            guard case let .scalar(headerScalar) = entry.value, !headerScalar.isNull else {
                report(key, "each entry is `claim: Header-Name`, e.g. sub: X-OTLP-Subject")
                continue
            }
            let claim = claimScalar.text
            let header = headerScalar.text
            if let problem = Self.claimPathProblem(claim) {
                report(key, "claim \(quote(claim)): \(problem)")
                continue
            }
            if let problem = Self.ownedHeaderProblem(header) {
                report(key, "header \(quote(header)) for claim \(quote(claim)): \(problem)")
                continue
            }
            if !seen.insert(header.lowercased()).inserted {
                report(key, "header \(quote(header)) is used twice; each claim needs a header of its own")
                continue
            }
            result.append(.init(claim: claim, header: header))
        }
        return result
    }

    private mutating func readPrincipals(_ fields: Fields) -> [Auth.PrincipalEntry] {
        let key = fields.key("principals")
        guard let node = fields["principals"], !Self.isNull(node) else { return [] }
        guard case let .sequence(items) = node else {
            report(key, "must be a list of entries with principal and tenant, allowed_tenants or signals, "
                + "found \(Self.describe(node))")
            return []
        }
        var entries: [Auth.PrincipalEntry] = []
        for (index, item) in items.enumerated() {
            let entryFields = section(item, path: "\(key)[\(index)]", schema: "auth.principals")
            if entryFields.isBroken { continue }
            let principal = requiredString(
                entryFields, "principal", example: "\"cert:spiffe://prod.example/ns/otel/*\"",
                what: "a qualified principal name or pattern (cert:…, user:…, token:…, jwt:<issuer>#<subject>)")
            if let principal, !["cert:", "user:", "token:", "jwt:", "*"].contains(where: { principal.hasPrefix($0) }) {
                report(entryFields.key("principal"), "\(quote(principal)) names no kind of principal: start it with "
                    + "cert:, user:, token: or jwt: (e.g. token:ci-runner, jwt:https://idp.example.com/#svc-a)")
            }
            var entry = Auth.PrincipalEntry(principal: principal ?? "")
            if let tenant = string(entryFields, "tenant", example: "team-a") {
                if let problem = Self.tenantIDProblem(tenant) {
                    report(entryFields.key("tenant"), "\(quote(tenant)): \(problem)")
                } else {
                    entry.tenant = tenant
                }
            }
            if let tenants = stringList(entryFields, "allowed_tenants", example: "[team-a, team-b]") {
                if tenants.isEmpty {
                    report(entryFields.key("allowed_tenants"), "must not be empty: list the tenants allowed, or remove the key")
                }
                for tenant in tenants {
                    if let problem = Self.tenantIDProblem(tenant) {
                        report(entryFields.key("allowed_tenants"), "\(quote(tenant)): \(problem)")
                    }
                }
                entry.allowedTenants = tenants
                if let fixed = entry.tenant, !tenants.contains(fixed) {
                    report(entryFields.key("allowed_tenants"), "does not contain the entry's own tenant \(quote(fixed)), "
                        + "so every request would be refused; add it or remove one of the keys")
                }
            }
            if let names = stringList(entryFields, "signals", example: "[traces, metrics]") {
                var signals: [ProxyConfiguration.Signal] = []
                for name in names {
                    if let signal = ProxyConfiguration.Signal(rawValue: name) {
                        if !signals.contains(signal) { signals.append(signal) }
                    } else {
                        report(entryFields.key("signals"), "\(quote(name)) is not a signal: use \(OTLPSignal.names("or"))")
                    }
                }
                if names.isEmpty {
                    report(entryFields.key("signals"), "must not be empty: list the signals allowed, or remove the key for all of them")
                }
                entry.signals = signals
            }
            if principal != nil { entries.append(entry) }
        }
        return entries
    }

    // MARK: - Value helpers

    /// A file path made absolute, or nil when absent; an empty value is reported.
    mutating func optionalPath(_ fields: Fields, _ name: String, example: String) -> String? {
        guard let (_, text) = scalar(fields, name, expected: "a file path", example: example) else { return nil }
        guard !text.allSatisfy(\.isWhitespace) else {
            report(fields.key(name), "must not be empty: set a file path, e.g. \(name): \(example), or remove the key")
            return nil
        }
        return Paths.absolute(text, relativeTo: directory)
    }

    /// A required non-empty string; reports `required` with `what` when absent.
    private mutating func requiredString(_ fields: Fields, _ name: String, example: String, what: String) -> String? {
        let before = problems.count
        let value = scalar(fields, name, expected: "a string", example: example, nullIsAbsent: true)
        guard problems.count == before else { return nil }
        guard let text = value?.text, !text.isEmpty else {
            report(fields.key(name), "required: \(what), e.g. \(name): \(example)")
            return nil
        }
        return text
    }

    /// A list of scalars as strings; nil when absent or wrong (reported). A single scalar is refused
    /// with a hint to write a list.
    mutating func stringList(_ fields: Fields, _ name: String, example: String) -> [String]? {
        guard let node = fields[name], !Self.isNull(node) else { return nil }
        guard case let .sequence(items) = node else {
            if case let .scalar(scalar) = node {
                report(fields.key(name), "must be a list, found \(Self.describe(node)); write \(name): [\(scalar.text)]")
            } else {
                report(fields.key(name), "must be a list, found \(Self.describe(node)); e.g. \(name): \(example)")
            }
            return nil
        }
        var values: [String] = []
        for item in items {
            guard case let .scalar(scalar) = item, !Self.isNull(item) else {
                report(fields.key(name), "every entry must be a plain value, found \(Self.describe(item)); e.g. \(name): \(example)")
                return nil
            }
            values.append(scalar.text)
        }
        return values
    }

    /// A value from a fixed set (a `RawRepresentable` string enum), matched case-insensitively.
    mutating func choice<T: RawRepresentable & CaseIterable>(
        _ fields: Fields, _ name: String, _ type: T.Type, example: String
    ) -> T? where T.RawValue == String {
        let options = T.allCases.map(\.rawValue)
        guard let (_, text) = scalar(fields, name, expected: options.joined(separator: ", "), example: example) else {
            return nil
        }
        if let value = T.allCases.first(where: { $0.rawValue == text.lowercased() }) { return value }
        report(fields.key(name), "\(quote(text)) is not one of \(options.joined(separator: ", ")), e.g. \(name): \(example)")
        return nil
    }

    // MARK: - Value rules

    /// Tenant IDs as Mimir, Loki and Tempo accept them. The same rule as ProxyAuth's `TenantID`
    /// (this module does not depend on ProxyAuth); keep the two in step.
    static func tenantIDProblem(_ tenant: String) -> String? {
        if tenant.isEmpty { return "a tenant ID must not be empty" }
        if tenant.utf8.count > 150 { return "a tenant ID is at most 150 characters" }
        if tenant == "." || tenant == ".." { return "`.` and `..` are not valid tenant IDs" }
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!-_.*'()".utf8)
        if !tenant.utf8.allSatisfy({ allowed.contains($0) }) {
            return "use letters, digits and ! - _ . * ' ( ) only (the characters Mimir, Loki and Tempo accept)"
        }
        return nil
    }

    /// A claim name or dotted path (`org.tenant`): non-empty segments, no spaces.
    static func claimPathProblem(_ path: String) -> String? {
        if path.isEmpty { return "must not be empty" }
        if path.split(separator: ".", omittingEmptySubsequences: false).contains(where: \.isEmpty) {
            return "\(quote(path)) has an empty segment; write a claim name or a dotted path such as org.tenant"
        }
        if path.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.value < 0x20 }) {
            return "\(quote(path)) contains spaces or control characters"
        }
        return nil
    }

    /// A header name the proxy may own and set from a claim.
    static func ownedHeaderProblem(_ header: String) -> String? {
        if let problem = tenantHeaderProblem(header) {
            return problem.replacing("e.g. header: X-Scope-OrgID", with: "e.g. X-OTLP-Subject")
                .replacing("for the tenant", with: "for the claim")
                .replacing("would never see the tenant", with: "would never see it")
        }
        let lowered = header.lowercased()
        if lowered == "te" || lowered == "x-forwarded-for" || lowered.hasPrefix("x-forwarded-") || lowered == "forwarded" {
            return "a header proxies set themselves; choose a name of your own, e.g. X-OTLP-Subject"
        }
        return nil
    }

    /// https, or http only to a loopback host; nil when fine.
    static func httpsURLProblem(_ text: String) -> String? {
        let url: FetchURL
        do {
            url = try FetchURL(parsing: text)
        } catch {
            return "\(quote(error.shown)) is not a URL the keys can be fetched from: \(error.reason); "
                + "write e.g. https://idp.example.com/.well-known/jwks.json"
        }
        guard !url.isHTTPS else { return nil }
        let host = url.host.lowercased()
        if host == "localhost" || host == "::1" || host.hasPrefix("127.") { return nil }
        return "\(quote(text)) uses plain http to a host that is not loopback: keys fetched that way can be "
            + "replaced by anyone on the path; use https (http is accepted only for 127.0.0.1, [::1] and localhost)"
    }

    /// A secret file that exists must hold at least 32 bytes after one trailing newline is trimmed.
    /// It is read here only to check that; its contents are neither kept nor shown. Whether it exists
    /// and is readable is checked where it is used (like every file the configuration names).
    static func secretFileProblem(_ path: String) -> String? {
        guard let data = try? SystemFile.read(path, maxBytes: 1024 * 1024) else { return nil }
        var length = data.count
        if data.last == UInt8(ascii: "\n") {
            length -= 1
            if length > 0, data[data.startIndex + length - 1] == UInt8(ascii: "\r") { length -= 1 }
        }
        if length < Provider.minimumHMACSecretBytes {
            return "the secret in \(path) is \(length) bytes; HMAC secrets need at least "
                + "\(Provider.minimumHMACSecretBytes) bytes (e.g. `openssl rand -hex 32 > \(path)`)"
        }
        return nil
    }

    static func secretEnvProblem(_ name: String) -> String? {
        guard !name.isEmpty, name.utf8.allSatisfy({ $0 == UInt8(ascii: "_") || (0x30...0x39).contains($0)
            || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) })
        else {
            return "\(quote(name)) is not an environment variable name; use letters, digits and _ (e.g. OTLP_JWT_SECRET)"
        }
        guard let value = ProcessEnvironment.value(name) else {
            return "the environment variable \(name) is not set; set it to a secret of at least "
                + "\(Provider.minimumHMACSecretBytes) bytes (e.g. `export \(name)=$(openssl rand -hex 32)`)"
        }
        if value.utf8.count < Provider.minimumHMACSecretBytes {
            return "the secret in \(name) is \(value.utf8.count) bytes; HMAC secrets need at least "
                + "\(Provider.minimumHMACSecretBytes) bytes"
        }
        return nil
    }
}
