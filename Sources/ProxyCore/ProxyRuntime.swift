import Foundation
import NIOCore
import ProxyAuth
import ProxyConfig
import ProxyTLS

/// Everything a new connection needs that comes from the configuration and the files it names:
/// the TLS context, the authenticator, the header rules and the limits.
///
/// Immutable once built. Building it reads every file and checks every credential, so it happens off
/// the event loops; reload (a later issue) builds a new one and swaps it in, while open connections
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
    }

    public let configuration: ProxyConfiguration
    let tls: TLSServerContext
    let authenticator: Authenticator
    let headerPolicy: HeaderPolicy
    let limits: Limits

    /// Reads the certificate, key and credential files the configuration names.
    public init(configuration: ProxyConfiguration) throws(StartupError) {
        self.configuration = configuration
        do {
            self.tls = try TLSServerContext(
                settings: TLSServerSettings(
                    certificateChainFile: configuration.tls.certFile,
                    privateKeyFile: configuration.tls.keyFile,
                    minimumVersion: TLSVersion(rawValue: configuration.tls.minVersion) ?? .v1_2,
                    alpnProtocols: ["h2", "http/1.1"]))
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
                signals: entry.signals.map { Set($0.compactMap { AuthSignal(rawValue: $0.rawValue) }) })
        })
        // TODO(lead): JWT providers, client certificates from the TLS layer, offloading and key refetch.
        self.authenticator = Authenticator(
            methods: configuration.auth.methods.compactMap { AuthMethod(rawValue: $0.rawValue) },
            mtls: mtls, bearer: bearer, basic: basic, jwt: nil, principals: principals,
            defaultTenant: configuration.tenant.defaultTenant)
        self.headerPolicy = HeaderPolicy(
            tenantHeader: configuration.tenant.header,
            forwardAuthorization: configuration.auth.forwardAuthorization)
        self.limits = Limits(
            maxRequestBodySize: configuration.http.maxRequestBodySize,
            maxRecvMsgSize: configuration.grpc.maxRecvMsgSize,
            maxHeaderBytes: configuration.http.maxHeaderBytes,
            maxHeaderCount: configuration.http.maxHeaderCount,
            upstreamTimeout: TimeAmount(configuration.upstream.timeout),
            idleTimeout: TimeAmount(configuration.http.idleTimeout))
    }
}

extension ProxyRuntime {
    /// Interim adapter to the step-wise authenticator: hashing runs inline and a needed key refetch
    /// counts as an unknown key. TODO(lead): offload hashing from the event loop and fetch keys.
    func authenticateInline(authorization: [String], signal: OTLPSignal) -> Result<AuthDecision, AuthFailure> {
        let credentials = RequestCredentials(
            peerCertificate: nil, authorization: authorization, signal: AuthSignal(rawValue: signal.rawValue) ?? .traces)
        switch authenticator.authenticate(credentials, now: Date()) {
        case .decided(let result): return result
        case .offload(let work): return work()
        case .refetchKeys: return .failure(.invalidJWT(.unknownKeyID))
        }
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
