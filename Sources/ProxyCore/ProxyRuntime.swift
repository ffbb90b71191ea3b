import ProxyOTLP
import Atomics
import NIOCore
import ProxyAuth
import ProxyConfig
import ProxyTLS
import ProxySystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Everything a new connection needs that comes from the configuration and the files it names:
/// the TLS context, the authenticator, the header rules and the limits.
///
/// Immutable once built. Building it reads every file and checks every credential, so it happens off
/// the event loops; reload (Reload.swift) builds a new one and swaps it in, while open connections
/// keep the one they started with.
public final class ProxyRuntime: Sendable {
    /// The limits an exchange enforces, converted once from the configuration.
    struct Limits: Sendable {
        var maxRequestBodySize: Int
        var maxRecvMsgSize: Int
        var maxHeaderBytes: Int
        var maxHeaderCount: Int
        var upstreamTimeout: TimeAmount
        var idleTimeout: TimeAmount
        var maxConnections: Int
        var handshakeTimeout: TimeAmount
        var maxBufferedBytes: Int
        var maxConnectionAge: TimeAmount?
        var tenantRate: ProxyConfiguration.Limits.TenantRate
    }

    public let configuration: ProxyConfiguration
    /// Unique to this runtime among those of the process, in the order they were built: a decision a
    /// connection remembers (`CredentialMemory`) holds only for the generation that made it.
    let generation: UInt64
    let tls: TLSServerContext
    let authenticator: Authenticator
    let headerPolicy: HeaderPolicy
    let limits: Limits
    /// Whether request payloads are read, and the Resource attributes set in them.
    let payloads: PayloadPolicy
    /// JWT providers whose keys come from the network (`jwks_url` or discovery), for the refresher.
    let remoteKeySources: [RemoteKeySource]

    private static let generations = ManagedAtomic<UInt64>(0)

    /// A JWT provider whose key set is fetched over HTTPS.
    struct RemoteKeySource: Sendable {
        var provider: JWTProvider
        var location: JWKSRefresher.Source.Location
        var caFile: String?
        var refreshInterval: TimeAmount
    }

    /// Reads the certificate, key and credential files the configuration names.
    public init(configuration: ProxyConfiguration) throws(StartupError) {
        self.configuration = configuration
        self.generation = Self.generations.wrappingIncrementThenLoad(ordering: .relaxed)
        let tlsSettings = configuration.tls
        do {
            self.tls = try TLSServerContext(
                settings: TLSServerSettings(
                    certificateChainFile: tlsSettings.certFile,
                    privateKeyFile: tlsSettings.keyFile,
                    minimumVersion: TLSVersion(rawValue: tlsSettings.minVersion) ?? .v1_2,
                    alpnProtocols: ["h2", "http/1.1"],
                    clientCAFile: tlsSettings.clientCAFile,
                    clientAuth: TLSClientAuth(rawValue: tlsSettings.clientAuth.rawValue) ?? .none,
                    crlFile: tlsSettings.crlFile,
                    verifyDepth: tlsSettings.verifyDepth))
        } catch {
            throw StartupError(message: "\(error)")
        }
        var bearer: BearerTokenTable?
        if let settings = configuration.auth.bearer {
            do {
                bearer = try BearerTokenTable.load(file: settings.tokensFile)
            } catch {
                throw StartupError(message: "auth.bearer.tokens_file \(error)")
            }
        }
        var basic: HtpasswdFile?
        if let settings = configuration.auth.basic {
            do {
                basic = try HtpasswdFile.load(file: settings.htpasswdFile)
            } catch {
                throw StartupError(message: "auth.basic.htpasswd_file \(error)")
            }
        }
        let mtls = configuration.auth.mtls.map { settings in
            MTLSPolicy(
                principalFrom: settings.principalFrom.compactMap { PrincipalSource(rawValue: $0.rawValue) },
                allowedPrincipals: settings.allowedPrincipals)
        }
        let principals = PrincipalTable(entries: configuration.auth.principals.map { entry in
            PrincipalTable.Entry(
                pattern: entry.principal, tenant: entry.tenant, allowedTenants: entry.allowedTenants,
                signals: entry.signals.map(Set.init))
        })
        var jwt: JWTAuthenticator?
        var remote: [RemoteKeySource] = []
        if let settings = configuration.auth.jwt {
            var providers: [JWTProvider] = []
            for (index, provider) in settings.providers.enumerated() {
                let built = try Self.jwtProvider(provider, index: index, maxTokenBytes: settings.maxTokenBytes)
                providers.append(built.provider)
                if let source = built.remote { remote.append(source) }
            }
            jwt = JWTAuthenticator(providers: providers)
        }
        self.remoteKeySources = remote
        self.authenticator = Authenticator(
            methods: configuration.auth.methods.compactMap { AuthMethod(rawValue: $0.rawValue) },
            mtls: mtls, bearer: bearer, basic: basic, jwt: jwt, principals: principals,
            defaultTenant: configuration.tenant.defaultTenant)
        self.headerPolicy = HeaderPolicy(
            tenantHeader: configuration.tenant.header,
            forwardAuthorization: configuration.auth.forwardAuthorization,
            ownedHeaders: authenticator.ownedHeaders)
        self.payloads = PayloadPolicy(configuration)
        self.limits = Limits(
            maxRequestBodySize: configuration.http.maxRequestBodySize,
            maxRecvMsgSize: configuration.grpc.maxRecvMsgSize,
            maxHeaderBytes: configuration.http.maxHeaderBytes,
            maxHeaderCount: configuration.http.maxHeaderCount,
            upstreamTimeout: TimeAmount(configuration.upstream.timeout),
            idleTimeout: TimeAmount(configuration.http.idleTimeout),
            maxConnections: configuration.limits.maxConnections,
            handshakeTimeout: TimeAmount(configuration.limits.handshakeTimeout),
            maxBufferedBytes: configuration.limits.maxBufferedBytes,
            maxConnectionAge: configuration.limits.maxConnectionAge.map(TimeAmount.init),
            tenantRate: configuration.limits.tenantRate)
    }

    /// Builds one JWT provider: its settings, its secret or key file, and where remote keys come from.
    private static func jwtProvider(
        _ provider: ProxyConfiguration.Auth.JWT.Provider, index: Int, maxTokenBytes: Int
    ) throws(StartupError) -> (provider: JWTProvider, remote: RemoteKeySource?) {
        let key = "auth.jwt.providers[\(index)]"
        var secret: [UInt8]?
        var keys: JWKSet?
        var location: JWKSRefresher.Source.Location?
        switch provider.keySource {
        case .hmacSecretFile(let path):
            var bytes: [UInt8]
            do {
                bytes = try SystemFile.read(path, maxBytes: 1 << 20)
            } catch {
                throw StartupError(message: "\(key).hmac_secret_file \(path): cannot read the file: \(error.reason)")
            }
            if bytes.last == UInt8(ascii: "\n") { bytes.removeLast() }
            if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
            secret = bytes
        case .hmacSecretEnv(let name):
            guard let value = ProcessEnvironment.value(name) else {
                throw StartupError(message: "\(key).hmac_secret_env: the environment variable \(name) is not set")
            }
            secret = Array(value.utf8)
        case .jwksFile(let path):
            let bytes: [UInt8]
            do {
                bytes = try SystemFile.read(path)
            } catch {
                throw StartupError(message: "\(key).jwks_file \(path): cannot read the file: \(error.reason)")
            }
            do {
                keys = try JWKSet.parse(bytes)
            } catch {
                throw StartupError(message: "\(key).jwks_file \(path): \(error)")
            }
        case .jwksURL(let text):
            do {
                location = .jwks(try FetchURL(parsing: text))
            } catch {
                throw StartupError(message: "\(key).jwks_url: \(error)")
            }
        case .discovery:
            // The issuer names where its discovery document is: `<issuer>/.well-known/openid-configuration`.
            let issuer = provider.issuer
            let base = issuer.hasSuffix("/") ? String(issuer.dropLast()) : issuer
            do {
                location = .discovery(issuer: issuer, document: try FetchURL(parsing: base + "/.well-known/openid-configuration"))
            } catch {
                throw StartupError(message: "\(key).issuer (OIDC discovery): \(error)")
            }
        }
        let settings = JWTProviderSettings(
            name: provider.name, issuer: provider.issuer, audiences: provider.audiences,
            algorithms: provider.algorithms.compactMap(JWSAlgorithm.init(rawValue:)),
            clockSkew: provider.clockSkew, requiredClaims: provider.requiredClaims,
            principalClaim: provider.principalClaim, tenantClaim: provider.tenantClaim,
            claimsToHeaders: provider.claimsToHeaders.map { (claim: $0.claim, header: $0.header) },
            minRefetchInterval: provider.jwksMinRefetchInterval, maxTokenBytes: maxTokenBytes,
            hmacSecret: secret)
        let built: JWTProvider
        do {
            built = try JWTProvider(settings: settings, keys: keys)
        } catch {
            throw StartupError(message: "\(key): \(error)")
        }
        let remote = location.map {
            RemoteKeySource(
                provider: built, location: $0, caFile: provider.jwksCAFile,
                refreshInterval: TimeAmount(provider.jwksRefreshInterval))
        }
        return (built, remote)
    }
}

/// Why the proxy could not start: the file and the reason, never a secret.
public struct StartupError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
