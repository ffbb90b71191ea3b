import Logging
import ProxyConfig
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Polls the configuration file and every file it names every `reload.watch_interval`, and reloads
/// the server when any of them changed (Kubernetes rarely signals a pod when a mounted Secret
/// rotates). The interval is re-read from the runtime after each reload; 0 pauses polling.
///
/// A service of the executable's ServiceGroup: it ends on graceful shutdown. A failed reload is not
/// retried until a file changes again (a half-written file changes again when it is complete); after
/// a failure the files the edited configuration names are watched too, so creating a missing one
/// retries.
public struct ConfigurationWatcher: Service {
    private let server: ProxyServer
    private let configurationFile: String
    private let logger: Logger
    /// How often to look again while polling is disabled, in case a reload enables it.
    private let idleCheck: Duration

    public init(server: ProxyServer, configurationFile: String, logger: Logger, idleCheck: Duration = .seconds(1)) {
        self.server = server
        self.configurationFile = configurationFile
        self.logger = logger
        self.idleCheck = idleCheck
    }

    public func run() async throws {
        var files = snapshot(pending: nil)
        var pending: ProxyConfiguration?
        while !Task.isShuttingDownGracefully {
            let interval = server.runtime.configuration.reload.watchInterval
            let slept: Void? = try? await cancelWhenGracefulShutdown {
                try await Task.sleep(for: interval == .zero ? idleCheck : interval)
            }
            guard slept != nil, !Task.isCancelled else { return }
            guard interval != .zero else {
                files = snapshot(pending: pending)
                continue
            }
            let now = snapshot(pending: pending)
            let changed = now.changedPaths(since: files)
            files = now
            guard !changed.isEmpty else { continue }
            logger.info("watched files changed; reloading", metadata: ["files": "\(changed.joined(separator: ", "))"])
            if await server.reload(configurationFile: configurationFile) {
                pending = nil
            } else {
                pending = try? ProxyConfiguration.load(file: configurationFile)
            }
            // The configuration now served (or the one that failed) may name other files.
            files = snapshot(pending: pending).keeping(now)
        }
    }

    /// The files of the configuration being served and of `pending`, plus the configuration file.
    private func snapshot(pending: ProxyConfiguration?) -> WatchedFiles {
        WatchedFiles(
            configurations: [server.runtime.configuration] + (pending.map { [$0] } ?? []),
            configurationFile: configurationFile)
    }
}
