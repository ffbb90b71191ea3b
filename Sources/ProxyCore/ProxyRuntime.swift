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
        self.authenticator = Authenticator(bearer: bearer)
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
