import Logging
import NIOConcurrencyHelpers
import NIOCore
import ProxyConfig
import ProxyTLS
import ProxySystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Reload: a complete new `ProxyRuntime` is built and checked off the event loops, then swapped in
/// with one store. Any failure leaves the running state untouched; it is logged with the file and
/// the reason and counted (`ProxyMetrics.reloaded(success: false, …)`). Connections already open keep
/// their TLS context and protocol settings; every request from the swap on, on every connection, is
/// authenticated, authorized and rate-limited against the new runtime (`RuntimeInForce`).
///
/// Reloads run one at a time on the server's thread pool (file reads and key parsing never block an
/// event loop), so a SIGHUP and a file-watch change arriving together cannot swap in an older file.
extension ProxyServer {
    /// Builds a runtime from `configuration` and serves it to new connections. Returns false, and keeps
    /// the current runtime, when any file it names cannot be loaded or checked.
    ///
    /// Listener endpoints and the `upstream` section cannot change while running: a change is logged
    /// as a warning and the old values stay; the rest of the configuration applies.
    public func reload(configuration: ProxyConfiguration) async -> Bool {
        await runReload(source: configuration.sourceFile ?? "configuration") { configuration }
    }

    /// Reads and validates the configuration file, then reloads as `reload(configuration:)` does.
    public func reload(configurationFile path: String) async -> Bool {
        await runReload(source: path) { () throws(ConfigurationError) -> ProxyConfiguration in
            try ProxyConfiguration.load(file: path)
        }
    }

    private func runReload(
        source: String, _ load: @escaping @Sendable () throws -> ProxyConfiguration
    ) async -> Bool {
        do {
            return try await services.threadPool.runIfActive { [self] in
                reloadLock.withLock { reloadNow(source: source, load) }
            }
        } catch {
            logger.warning("reload skipped: the proxy is shutting down", metadata: ["file": "\(source)"])
            return false
        }
    }

    /// Runs on a thread-pool thread under `reloadLock`.
    private func reloadNow(source: String, _ load: () throws -> ProxyConfiguration) -> Bool {
        let now = WallTime.now()
        func fail(_ file: String, _ reason: String) -> Bool {
            logger.error(
                "reload failed; still serving the previous configuration",
                metadata: ["file": "\(file)", "error": "\(reason)"])
            services.metrics.reloaded(success: false, at: now)
            return false
        }
        var configuration: ProxyConfiguration
        do {
            configuration = try load()
        } catch let error as ConfigurationError {
            // One log line: the problems joined, each naming its key.
            return fail(error.source, error.problems.map(\.description).joined(separator: "; "))
        } catch {
            return fail(source, "\(error)")
        }
        let file = configuration.sourceFile ?? source
        let current = runtime.configuration
        keepFixedSettings(of: current, in: &configuration, file: file)

        let runtime: ProxyRuntime
        do {
            runtime = try ProxyRuntime(configuration: configuration)
        } catch {
            return fail(file, error.message)
        }
        if let notAfter = runtime.tls.certificateNotAfter, notAfter <= now {
            return fail(
                configuration.tls.certFile,
                "tls.cert_file \(configuration.tls.certFile): the certificate expired at \(Self.timestamp(notAfter)); "
                    + "install a current certificate")
        }
        let sources: [JWKSRefresher.Source]
        do {
            sources = try Self.keySources(runtime.remoteKeySources, group: group)
        } catch {
            return fail(file, error.message)
        }

        // Everything loaded: from here on nothing can fail. Providers get their carried-over keys
        // before any connection can see the new runtime.
        services.jwks?.replaceSources(sources)
        services.runtime.store(runtime)
        // Client certificates of open connections are judged as a new handshake would judge them
        // (the new CRLs and trust store) and against the new auth.mtls; those that fail are ended.
        let ended = certificateConnections.recheck(against: runtime)
        services.metrics.reloaded(success: true, at: now)
        // The served certificate and every client CA; CAs no longer configured disappear.
        services.metrics.certificatesLoaded(runtime.certificateExpiries)
        logger.info(
            "configuration reloaded",
            metadata: [
                "file": "\(file)",
                "certificate_not_after": "\(runtime.tls.certificateNotAfter.map(Self.timestamp) ?? "unknown")",
                "client_certificate_connections_ended": "\(ended)",
            ])
        return true
    }

    /// Listeners stay bound and upstream pools keep their connections: changes to either need a restart.
    private func keepFixedSettings(of current: ProxyConfiguration, in new: inout ProxyConfiguration, file: String) {
        var kept: [String] = []
        if new.grpc.endpoint != current.grpc.endpoint {
            kept.append("grpc.endpoint (still \(current.grpc.endpoint))")
            new.grpc.endpoint = current.grpc.endpoint
        }
        if new.http.endpoint != current.http.endpoint {
            kept.append("http.endpoint (still \(current.http.endpoint))")
            new.http.endpoint = current.http.endpoint
        }
        if new.upstream.grpc != current.upstream.grpc || new.upstream.http != current.upstream.http
            || new.upstream.connectTimeout != current.upstream.connectTimeout
            || new.upstream.maxIdleConnections != current.upstream.maxIdleConnections
            || new.upstream.unsafeAllowRemoteUpstream != current.upstream.unsafeAllowRemoteUpstream
        {
            kept.append("upstream (still \(current.upstream.grpc) and \(current.upstream.http))")
            // upstream.timeout is per request and does change.
            let timeout = new.upstream.timeout
            new.upstream = current.upstream
            new.upstream.timeout = timeout
        }
        if !kept.isEmpty {
            logger.warning(
                "reload cannot change these settings while running; restart to apply them",
                metadata: ["file": "\(file)", "kept": "\(kept.joined(separator: ", "))"])
        }
    }

    /// The JWKS sources of a runtime's remote JWT providers, one TLS client context per CA file.
    static func keySources(
        _ remote: [ProxyRuntime.RemoteKeySource], group: any EventLoopGroup
    ) throws(StartupError) -> [JWKSRefresher.Source] {
        var sources: [JWKSRefresher.Source] = []
        var clientContexts: [String: TLSClientContext] = [:]
        for source in remote {
            let key = source.caFile ?? ""
            let context: TLSClientContext
            if let existing = clientContexts[key] {
                context = existing
            } else {
                do {
                    context = try TLSClientContext(caFile: source.caFile)
                } catch {
                    throw StartupError(message: "jwt provider \(source.provider.settings.name) jwks_ca_file: \(error)")
                }
                clientContexts[key] = context
            }
            sources.append(
                JWKSRefresher.Source(
                    provider: source.provider, location: source.location,
                    fetcher: HTTPSFetcher(group: group, tlsContext: context), refreshInterval: source.refreshInterval,
                    caFile: source.caFile))
        }
        return sources
    }

    /// RFC 3339 to the second, as ISO8601DateFormatter wrote it: `2026-01-02T03:04:05Z`.
    private static func timestamp(_ time: WallTime) -> String {
        time.rfc3339
    }
}

/// The files a configuration depends on, and a cheap fingerprint of each for change detection.
///
/// `stat` follows symlinks, so when Kubernetes swaps the `..data` link of a mounted Secret the
/// fingerprint of `tls.crt` changes (another inode) even though neither the path nor the link it
/// names changed.
public struct WatchedFiles: Sendable, Equatable {
    /// The fingerprint of one path; `missing` when it cannot be stat'ed.
    public struct Stamp: Sendable, Equatable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var modified: Int64
        var changed: Int64

        static let missing = Stamp(device: 0, inode: 0, size: -1, modified: 0, changed: 0)
    }

    public private(set) var stamps: [String: Stamp]

    /// Fingerprints the configuration file and every file the configurations name.
    public init(configurations: [ProxyConfiguration], configurationFile: String) {
        var stamps: [String: Stamp] = [:]
        for configuration in configurations {
            for path in Self.paths(of: configuration, configurationFile: configurationFile) where stamps[path] == nil {
                stamps[path] = Self.stamp(path)
            }
        }
        self.stamps = stamps
    }

    /// The configuration file, then the TLS files, credential files and JWT key and CA files.
    public static func paths(of configuration: ProxyConfiguration, configurationFile: String) -> [String] {
        var paths = [configurationFile, configuration.tls.certFile, configuration.tls.keyFile]
        if let file = configuration.tls.clientCAFile { paths.append(file) }
        if let file = configuration.tls.crlFile { paths.append(file) }
        if let bearer = configuration.auth.bearer { paths.append(bearer.tokensFile) }
        if let basic = configuration.auth.basic { paths.append(basic.htpasswdFile) }
        for provider in configuration.auth.jwt?.providers ?? [] {
            switch provider.keySource {
            case .jwksFile(let file), .hmacSecretFile(let file): paths.append(file)
            case .jwksURL, .discovery, .hmacSecretEnv: break
            }
            if let file = provider.jwksCAFile { paths.append(file) }
        }
        var seen: Set<String> = []
        return paths.filter { !$0.isEmpty && seen.insert($0).inserted }
    }

    static func stamp(_ path: String) -> Stamp {
        var info = stat()
        guard stat(path, &info) == 0 else { return .missing }
        return Stamp(
            device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size),
            modified: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec),
            changed: Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec))
    }

    /// These paths, with the fingerprints `earlier` took of the paths it has: a file that changed
    /// after `earlier` was taken (during a reload) still shows as changed on the next comparison.
    public func keeping(_ earlier: WatchedFiles) -> WatchedFiles {
        var merged = self
        for (path, stamp) in earlier.stamps where merged.stamps[path] != nil {
            merged.stamps[path] = stamp
        }
        return merged
    }

    /// The paths whose fingerprint differs between the two (including paths only one of them has).
    public func changedPaths(since earlier: WatchedFiles) -> [String] {
        let all = Set(stamps.keys).union(earlier.stamps.keys)
        return all.filter { stamps[$0] != earlier.stamps[$0] }.sorted()
    }
}
