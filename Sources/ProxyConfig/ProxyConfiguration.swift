import ProxyOTLP

/// The proxy's whole configuration as plain values, after defaults are applied and every rule checked.
///
/// Built by `load(file:)` or `parse(yaml:directory:sourceName:)`, which either return a configuration
/// that passed every check or throw one `ConfigurationError` listing every problem. The initializers
/// below apply the same defaults but check nothing: they are for code and tests that build a
/// configuration directly (for example with port 0 endpoints and certificates made at test time).
/// File paths held here are absolute after loading; whether the files exist is checked by their users
/// (the TLS module for certificates, the auth module for the tokens file).
public struct ProxyConfiguration: Sendable, Equatable {
    /// The OTLP/gRPC listener (key `grpc`).
    public struct GRPC: Sendable, Equatable {
        public static let defaultEndpoint = Endpoint(host: "0.0.0.0", port: 4317)
        /// 4 MiB, the OTLP receiver's own default.
        public static let defaultMaxRecvMsgSize = 4 * 1024 * 1024

        /// Key `endpoint`, default "0.0.0.0:4317".
        public var endpoint: Endpoint
        /// Key `max_recv_msg_size`: the largest gRPC message accepted, in bytes.
        public var maxRecvMsgSize: Int

        public init(endpoint: Endpoint = defaultEndpoint, maxRecvMsgSize: Int = defaultMaxRecvMsgSize) {
            self.endpoint = endpoint
            self.maxRecvMsgSize = maxRecvMsgSize
        }
    }

    /// The OTLP/HTTP listener (key `http`).
    public struct HTTP: Sendable, Equatable {
        public static let defaultEndpoint = Endpoint(host: "0.0.0.0", port: 4318)
        /// 20 MiB, the OTLP receiver's own default.
        public static let defaultMaxRequestBodySize = 20 * 1024 * 1024
        public static let defaultMaxHeaderBytes = 64 * 1024
        public static let defaultMaxHeaderCount = 100
        public static let defaultIdleTimeout = Duration.seconds(90)

        /// Key `endpoint`, default "0.0.0.0:4318".
        public var endpoint: Endpoint
        /// Key `max_request_body_size`: a larger body is refused with 413.
        public var maxRequestBodySize: Int
        /// Key `max_header_bytes`: request line plus headers; more is refused with 431.
        public var maxHeaderBytes: Int
        /// Key `max_header_count`: more header fields are refused with 431.
        public var maxHeaderCount: Int
        /// Key `idle_timeout`: a keep-alive connection with no request for this long is closed.
        public var idleTimeout: Duration

        public init(
            endpoint: Endpoint = defaultEndpoint,
            maxRequestBodySize: Int = defaultMaxRequestBodySize,
            maxHeaderBytes: Int = defaultMaxHeaderBytes,
            maxHeaderCount: Int = defaultMaxHeaderCount,
            idleTimeout: Duration = defaultIdleTimeout
        ) {
            self.endpoint = endpoint
            self.maxRequestBodySize = maxRequestBodySize
            self.maxHeaderBytes = maxHeaderBytes
            self.maxHeaderCount = maxHeaderCount
            self.idleTimeout = idleTimeout
        }
    }

    /// The server certificate, protocol floor and client certificates (key `tls`).
    public struct TLS: Sendable, Equatable {
        public static let defaultMinVersion = "1.2"
        /// The values `min_version` accepts.
        public static let allowedMinVersions = ["1.2", "1.3"]
        public static let defaultVerifyDepth = 4
        /// The range `verify_depth` accepts.
        public static let verifyDepthRange = 1...10

        /// Key `client_auth`: whether the TLS handshake asks for a client certificate.
        public enum ClientAuth: String, Sendable, Equatable, CaseIterable {
            /// No certificate is requested.
            case none
            /// A certificate is requested; without one the connection continues (header credentials),
            /// a certificate that fails verification fails the handshake.
            case request
            /// A verified certificate is required to complete the handshake.
            case require
        }

        /// Key `cert_file`: PEM certificate chain, leaf first. Absolute after loading.
        public var certFile: String
        /// Key `key_file`: PEM private key of the leaf certificate. Absolute after loading.
        public var keyFile: String
        /// Key `min_version`: "1.2" or "1.3".
        public var minVersion: String
        /// Key `client_ca_file`: PEM bundle of the CAs client certificates must chain to. Absolute after loading.
        public var clientCAFile: String?
        /// Key `client_auth`; after loading, `.require` when `client_ca_file` is set and the key is not,
        /// else `.none`.
        public var clientAuth: ClientAuth
        /// Key `crl_file`: PEM CRL(s) for the client CAs. Absolute after loading.
        public var crlFile: String?
        /// Key `verify_depth`: the longest client chain below the trust anchor, 1...10.
        public var verifyDepth: Int

        public init(
            certFile: String, keyFile: String, minVersion: String = defaultMinVersion,
            clientCAFile: String? = nil, clientAuth: ClientAuth? = nil, crlFile: String? = nil,
            verifyDepth: Int = defaultVerifyDepth
        ) {
            self.certFile = certFile
            self.keyFile = keyFile
            self.minVersion = minVersion
            self.clientCAFile = clientCAFile
            self.clientAuth = clientAuth ?? (clientCAFile == nil ? .none : .require)
            self.crlFile = crlFile
            self.verifyDepth = verifyDepth
        }
    }

    /// Where requests are forwarded, in plaintext (key `upstream`).
    public struct Upstream: Sendable, Equatable {
        public static let defaultGRPC = Endpoint(host: "127.0.0.1", port: 14317)
        public static let defaultHTTP = Endpoint(host: "127.0.0.1", port: 14318)
        public static let defaultConnectTimeout = Duration.seconds(5)
        public static let defaultTimeout = Duration.seconds(30)
        public static let defaultMaxIdleConnections = 64

        /// Key `grpc`: the receiver's h2c gRPC listener.
        public var grpc: Endpoint
        /// Key `http`: the receiver's HTTP/1.1 listener.
        public var http: Endpoint
        /// Key `connect_timeout`: a connection not established by then counts as upstream down (503).
        public var connectTimeout: Duration
        /// Key `timeout`: no response head by then → 504.
        public var timeout: Duration
        /// Key `max_idle_connections`: idle keep-alive connections kept per event loop; 0 keeps none.
        public var maxIdleConnections: Int
        /// Key `unsafe_allow_remote_upstream`: permits non-loopback upstreams (plaintext off the host).
        public var unsafeAllowRemoteUpstream: Bool

        public init(
            grpc: Endpoint = defaultGRPC,
            http: Endpoint = defaultHTTP,
            connectTimeout: Duration = defaultConnectTimeout,
            timeout: Duration = defaultTimeout,
            maxIdleConnections: Int = defaultMaxIdleConnections,
            unsafeAllowRemoteUpstream: Bool = false
        ) {
            self.grpc = grpc
            self.http = http
            self.connectTimeout = connectTimeout
            self.timeout = timeout
            self.maxIdleConnections = maxIdleConnections
            self.unsafeAllowRemoteUpstream = unsafeAllowRemoteUpstream
        }
    }

    /// The OTLP signals, as `signals:` lists name them: the product's one signal type.
    public typealias Signal = OTLPSignal

    /// How clients prove who they are (key `auth`). Loading requires at least one method.
    public struct Auth: Sendable, Equatable {
        /// The authentication methods, as `auth.methods` names them; `allCases` is the default order.
        public enum Method: String, Sendable, Equatable, CaseIterable {
            case mtls, jwt, bearer, basic
        }

        /// Bearer tokens listed in a file (key `bearer`).
        public struct Bearer: Sendable, Equatable {
            /// Key `tokens_file`. Absolute after loading.
            public var tokensFile: String

            public init(tokensFile: String) {
                self.tokensFile = tokensFile
            }
        }

        /// Client certificates as principals (key `mtls`); needs `tls.client_ca_file`.
        public struct MTLS: Sendable, Equatable {
            /// Where the identity is read from, as `principal_from` names them.
            public enum Source: String, Sendable, Equatable, CaseIterable {
                case uriSAN = "uri_san"
                case dnsSAN = "dns_san"
                case subjectCN = "subject_cn"
            }

            public static let defaultPrincipalFrom: [Source] = [.uriSAN, .dnsSAN, .subjectCN]

            /// Key `principal_from`: the first source the certificate has wins.
            public var principalFrom: [Source]
            /// Key `allowed_principals`: identity patterns (exact or with `*`); empty allows every
            /// certificate the client CAs signed.
            public var allowedPrincipals: [String]

            public init(principalFrom: [Source] = defaultPrincipalFrom, allowedPrincipals: [String] = []) {
                self.principalFrom = principalFrom
                self.allowedPrincipals = allowedPrincipals
            }
        }

        /// Basic authentication from an htpasswd file (key `basic`).
        public struct Basic: Sendable, Equatable {
            /// Key `htpasswd_file`. Absolute after loading.
            public var htpasswdFile: String

            public init(htpasswdFile: String) {
                self.htpasswdFile = htpasswdFile
            }
        }

        /// JWT bearer tokens from one or more issuers (key `jwt`).
        public struct JWT: Sendable, Equatable {
            public static let defaultMaxTokenBytes = 16 * 1024

            /// One trusted issuer (an entry of `providers`).
            public struct Provider: Sendable, Equatable {
                public static let defaultRefreshInterval = Duration.seconds(600)
                public static let defaultMinRefetchInterval = Duration.seconds(30)
                public static let defaultClockSkew = Duration.seconds(60)
                public static let maximumClockSkew = Duration.seconds(300)
                public static let defaultPrincipalClaim = "sub"
                /// The `algorithms` values accepted.
                public static let allowedAlgorithms = [
                    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
                    "HS256", "HS384", "HS512",
                ]
                /// The shortest HMAC secret accepted, in bytes.
                public static let minimumHMACSecretBytes = 32

                /// Where the verification keys come from: exactly one, or OIDC discovery when none is set.
                public enum KeySource: Sendable, Equatable {
                    /// Key `jwks_file`: a JWKS document on disk (absolute after loading).
                    case jwksFile(String)
                    /// Key `jwks_url`: a JWKS document over HTTPS.
                    case jwksURL(String)
                    /// No key source set: `<issuer>/.well-known/openid-configuration` names `jwks_uri`.
                    case discovery
                    /// Key `hmac_secret_file`: the HS* secret (one trailing newline trimmed); absolute after loading.
                    case hmacSecretFile(String)
                    /// Key `hmac_secret_env`: the name of the environment variable holding the HS* secret.
                    case hmacSecretEnv(String)
                }

                /// Key `name`: unique, for logs and metrics.
                public var name: String
                /// Key `issuer`: compared exactly with `iss`.
                public var issuer: String
                /// Key `audiences`: `aud` must contain one of these.
                public var audiences: [String]
                /// Key `algorithms`: the allow-list, as written (e.g. "ES256").
                public var algorithms: [String]
                public var keySource: KeySource
                /// Key `jwks_ca_file`: CA bundle for `jwks_url` / discovery; nil uses the system CAs.
                public var jwksCAFile: String?
                /// Key `jwks_refresh_interval`.
                public var jwksRefreshInterval: Duration
                /// Key `jwks_min_refetch_interval`: an unknown `kid` refetches at most once per this.
                public var jwksMinRefetchInterval: Duration
                /// Key `clock_skew`: at most 5 minutes.
                public var clockSkew: Duration
                /// Key `required_claims`: claims that must be present (`exp` always is).
                public var requiredClaims: [String]
                /// Key `principal_claim`.
                public var principalClaim: String
                /// Key `tenant_claim`: dotted path to a string claim.
                public var tenantClaim: String?
                /// Key `claims_to_headers`, in file order: claim (dotted path) → upstream header name.
                public var claimsToHeaders: [ClaimHeader]

                public init(
                    name: String, issuer: String, audiences: [String], algorithms: [String],
                    keySource: KeySource = .discovery, jwksCAFile: String? = nil,
                    jwksRefreshInterval: Duration = defaultRefreshInterval,
                    jwksMinRefetchInterval: Duration = defaultMinRefetchInterval,
                    clockSkew: Duration = defaultClockSkew, requiredClaims: [String] = [],
                    principalClaim: String = defaultPrincipalClaim, tenantClaim: String? = nil,
                    claimsToHeaders: [ClaimHeader] = []
                ) {
                    self.name = name
                    self.issuer = issuer
                    self.audiences = audiences
                    self.algorithms = algorithms
                    self.keySource = keySource
                    self.jwksCAFile = jwksCAFile
                    self.jwksRefreshInterval = jwksRefreshInterval
                    self.jwksMinRefetchInterval = jwksMinRefetchInterval
                    self.clockSkew = clockSkew
                    self.requiredClaims = requiredClaims
                    self.principalClaim = principalClaim
                    self.tenantClaim = tenantClaim
                    self.claimsToHeaders = claimsToHeaders
                }
            }

            /// One `claims_to_headers` pair.
            public struct ClaimHeader: Sendable, Equatable {
                public var claim: String
                public var header: String

                public init(claim: String, header: String) {
                    self.claim = claim
                    self.header = header
                }
            }

            /// Key `providers`: at least one.
            public var providers: [Provider]
            /// Key `max_token_bytes`: longer `Authorization` values are refused before parsing.
            public var maxTokenBytes: Int

            public init(providers: [Provider], maxTokenBytes: Int = defaultMaxTokenBytes) {
                self.providers = providers
                self.maxTokenBytes = maxTokenBytes
            }
        }

        /// One `principals` entry: a qualified principal pattern and what it may do.
        public struct PrincipalEntry: Sendable, Equatable {
            /// Key `principal`: `cert:…`, `user:…`, `token:…` or `jwt:<issuer>#<claim>`, exact or with `*`.
            public var principal: String
            /// Key `tenant`: a fixed tenant, overriding the credential's own.
            public var tenant: String?
            /// Key `allowed_tenants`: when set, the tenant must be one of these.
            public var allowedTenants: [String]?
            /// Key `signals`: when set, only these signals are accepted.
            public var signals: [Signal]?

            public init(principal: String, tenant: String? = nil, allowedTenants: [String]? = nil, signals: [Signal]? = nil) {
                self.principal = principal
                self.tenant = tenant
                self.allowedTenants = allowedTenants
                self.signals = signals
            }
        }

        /// Key `methods`: the enabled methods in order of precedence. After loading it is never
        /// empty: the configured methods in the default order (mtls, jwt, bearer, basic) when unset.
        public var methods: [Method]
        /// Key `bearer`.
        public var bearer: Bearer?
        /// Key `mtls`.
        public var mtls: MTLS?
        /// Key `basic`.
        public var basic: Basic?
        /// Key `jwt`.
        public var jwt: JWT?
        /// Key `principals`: first match wins.
        public var principals: [PrincipalEntry]
        /// Key `forward_authorization`: pass the client's Authorization header upstream (default: drop it).
        public var forwardAuthorization: Bool

        /// `methods` nil means the configured methods in the default order.
        public init(
            methods: [Method]? = nil, bearer: Bearer? = nil, mtls: MTLS? = nil, basic: Basic? = nil, jwt: JWT? = nil,
            principals: [PrincipalEntry] = [], forwardAuthorization: Bool = false
        ) {
            self.bearer = bearer
            self.mtls = mtls
            self.basic = basic
            self.jwt = jwt
            self.principals = principals
            self.forwardAuthorization = forwardAuthorization
            self.methods = methods ?? Method.allCases.filter { method in
                switch method {
                case .mtls: return mtls != nil
                case .jwt: return jwt != nil
                case .bearer: return bearer != nil
                case .basic: return basic != nil
                }
            }
        }
    }

    /// The header the proxy sets from the authenticated principal (key `tenant`).
    public struct Tenant: Sendable, Equatable {
        public static let defaultHeader = "X-Scope-OrgID"

        /// Key `header`, default "X-Scope-OrgID". Spelled as configured.
        public var header: String
        /// Key `default`: the tenant for principals that get none from the principal table or their
        /// credential; nil refuses them (403).
        public var defaultTenant: String?
        /// Key `resource_attribute`: the Resource attribute (e.g. `tenant.id`) set to the tenant on every
        /// Resource of every accepted payload, replacing any the client sent; nil (the default) leaves
        /// payloads alone.
        public var resourceAttribute: String?
        /// Key `principal_attribute`: the same for the authenticated principal's name.
        public var principalAttribute: String?

        public init(
            header: String = defaultHeader, defaultTenant: String? = nil, resourceAttribute: String? = nil,
            principalAttribute: String? = nil
        ) {
            self.header = header
            self.defaultTenant = defaultTenant
            self.resourceAttribute = resourceAttribute
            self.principalAttribute = principalAttribute
        }
    }

    /// What the proxy counts per tenant (key `usage`).
    public struct Usage: Sendable, Equatable {
        /// Key `count_items`: read every payload to count its spans, data points, log records or
        /// profiles per tenant, even when nothing else needs the payload read.
        public var countItems: Bool

        public init(countItems: Bool = false) {
            self.countItems = countItems
        }
    }

    /// Logging (key `log`).
    public struct Log: Sendable, Equatable {
        public static let defaultLevel = "info"
        /// The values `level` accepts, most verbose first (swift-log's levels).
        public static let allowedLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

        /// How log lines (application logs and the access log) are written (key `format`).
        public enum Format: String, Sendable, Equatable, CaseIterable {
            /// One JSON object per line.
            case json
            /// `key=value` pairs per line, values quoted when they need it.
            case logfmt
        }

        /// Key `level`, lower case after loading.
        public var level: String
        /// Key `access_log`: one line per finished request.
        public var accessLog: Bool
        /// Key `format`.
        public var format: Format

        public init(level: String = defaultLevel, accessLog: Bool = true, format: Format = .json) {
            self.level = level
            self.accessLog = accessLog
            self.format = format
        }
    }

    /// The plaintext operations listener: `/metrics`, `/healthz`, `/readyz` (key `admin`).
    public struct Admin: Sendable, Equatable {
        /// Loopback by default: metrics name tenants, so they are not published off the host unless asked.
        public static let defaultEndpoint = Endpoint(host: "127.0.0.1", port: 9464)

        /// Key `endpoint`; nil (written as "") disables the listener.
        public var endpoint: Endpoint?

        public init(endpoint: Endpoint? = defaultEndpoint) {
            self.endpoint = endpoint
        }
    }

    public var grpc: GRPC
    public var http: HTTP
    public var tls: TLS
    public var upstream: Upstream
    public var auth: Auth
    public var tenant: Tenant
    /// Key `usage`.
    public var usage = Usage()
    public var log: Log
    public var admin: Admin
    /// Key `limits`: connections, handshakes, buffered bytes and per-tenant rates.
    public var limits: Limits
    /// Key `reload`.
    public var reload = Reload()
    /// Key `shutdown`.
    public var shutdown = Shutdown()
    /// The file the configuration was loaded from (absolute), or nil when parsed from text.
    public var sourceFile: String?

    /// Whether the proxy reads request payloads: to set a Resource attribute, to count items, or to
    /// charge an item rate. Otherwise bodies pass through untouched.
    public var readsPayloads: Bool {
        tenant.resourceAttribute != nil || tenant.principalAttribute != nil || usage.countItems
            || limits.tenantRate.limitsItems
    }

    public init(
        grpc: GRPC = GRPC(),
        http: HTTP = HTTP(),
        tls: TLS,
        upstream: Upstream = Upstream(),
        auth: Auth,
        tenant: Tenant = Tenant(),
        log: Log = Log(),
        admin: Admin = Admin(),
        limits: Limits = Limits(),
        sourceFile: String? = nil
    ) {
        self.grpc = grpc
        self.http = http
        self.tls = tls
        self.upstream = upstream
        self.auth = auth
        self.tenant = tenant
        self.log = log
        self.admin = admin
        self.limits = limits
        self.sourceFile = sourceFile
    }
}
