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

    /// The server certificate and protocol floor (key `tls`).
    public struct TLS: Sendable, Equatable {
        public static let defaultMinVersion = "1.2"
        /// The values `min_version` accepts.
        public static let allowedMinVersions = ["1.2", "1.3"]

        /// Key `cert_file`: PEM certificate chain, leaf first. Absolute after loading.
        public var certFile: String
        /// Key `key_file`: PEM private key of the leaf certificate. Absolute after loading.
        public var keyFile: String
        /// Key `min_version`: "1.2" or "1.3".
        public var minVersion: String

        public init(certFile: String, keyFile: String, minVersion: String = defaultMinVersion) {
            self.certFile = certFile
            self.keyFile = keyFile
            self.minVersion = minVersion
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

    /// How clients prove who they are (key `auth`). Loading requires at least one method.
    public struct Auth: Sendable, Equatable {
        /// Bearer tokens listed in a file (key `bearer`).
        public struct Bearer: Sendable, Equatable {
            /// Key `tokens_file`. Absolute after loading.
            public var tokensFile: String

            public init(tokensFile: String) {
                self.tokensFile = tokensFile
            }
        }

        /// Key `bearer`.
        public var bearer: Bearer?
        /// Key `forward_authorization`: pass the client's Authorization header upstream (default: drop it).
        public var forwardAuthorization: Bool

        public init(bearer: Bearer? = nil, forwardAuthorization: Bool = false) {
            self.bearer = bearer
            self.forwardAuthorization = forwardAuthorization
        }
    }

    /// The header the proxy sets from the authenticated principal (key `tenant`).
    public struct Tenant: Sendable, Equatable {
        public static let defaultHeader = "X-Scope-OrgID"

        /// Key `header`, default "X-Scope-OrgID". Spelled as configured.
        public var header: String

        public init(header: String = defaultHeader) {
            self.header = header
        }
    }

    /// Logging (key `log`).
    public struct Log: Sendable, Equatable {
        public static let defaultLevel = "info"
        /// The values `level` accepts, most verbose first (swift-log's levels).
        public static let allowedLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

        /// Key `level`, lower case after loading.
        public var level: String

        public init(level: String = defaultLevel) {
            self.level = level
        }
    }

    public var grpc: GRPC
    public var http: HTTP
    public var tls: TLS
    public var upstream: Upstream
    public var auth: Auth
    public var tenant: Tenant
    public var log: Log
    /// The file the configuration was loaded from (absolute), or nil when parsed from text.
    public var sourceFile: String?

    public init(
        grpc: GRPC = GRPC(),
        http: HTTP = HTTP(),
        tls: TLS,
        upstream: Upstream = Upstream(),
        auth: Auth,
        tenant: Tenant = Tenant(),
        log: Log = Log(),
        sourceFile: String? = nil
    ) {
        self.grpc = grpc
        self.http = http
        self.tls = tls
        self.upstream = upstream
        self.auth = auth
        self.tenant = tenant
        self.log = log
        self.sourceFile = sourceFile
    }
}
