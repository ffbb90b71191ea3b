import Logging
import ProxyCore
import ServiceLifecycle
import UnixSignals

/// Reloads the configuration file and every file it names on each SIGHUP, until graceful shutdown.
///
/// The signal sequence is created (and SIGHUP trapped) before the listeners start, so a SIGHUP that
/// arrives once the proxy reports ready never hits the default action, which would end the process.
struct ReloadSignalService: Service {
    let signals: UnixSignalsSequence
    let server: ProxyServer
    let configurationFile: String
    let logger: Logger

    func run() async throws {
        for await _ in signals.cancelOnGracefulShutdown() {
            logger.info("SIGHUP: reloading", metadata: ["file": "\(configurationFile)"])
            _ = await server.reload(configurationFile: configurationFile)
        }
    }
}
