import Logging
import NIOCore
import NIOPosix
import ProxyConfig
import ProxyCore
import ProxySink
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The executable: parses the command line (`CommandLineInterface`, in ProxyCore so it is tested
/// there), runs the command, and exits with its status: 0, 1 for a failure the command reported,
/// 64 for a usage error.
@main
enum OTLPAuthProxyCommand {
    static func main() async {
        switch CommandLineInterface.parse(Array(CommandLine.arguments.dropFirst())) {
        case .help(let text):
            LogOutput.standardOutput(text)
            exitAfterLogs(0)
        case .usageError(let text):
            printError(text)
            exitAfterLogs(CommandLineInterface.usageExitCode)
        case .command(let command):
            do {
                switch command {
                case .run(let config, let threads):
                    try await RunCommand(config: config, threads: threads ?? System.coreCount).run()
                case .validate(let config):
                    try await ValidateCommand(config: config).run()
                case .sink(let listen, let grpcListen):
                    try await SinkCommand(listen: listen, grpcListen: grpcListen).run()
                }
            } catch let failure as CommandFailure {
                exitAfterLogs(failure.status)
            } catch {
                printError("Error: \(error)")
                exitAfterLogs(1)
            }
            exitAfterLogs(0)
        }
    }
}

/// A command that has already said what went wrong on stderr and ends with `status`.
struct CommandFailure: Error {
    var status: Int32 = 1
}

struct RunCommand {
    var config: String
    var threads: Int

    func run() async throws {
        let configuration = try loadConfiguration(config)
        bootstrapLogging(level: configuration.log.level, format: configuration.log.format)
        let logger = Logger(label: "otlp-auth-proxy")
        let metrics = ProxyMetrics(
            accessLog: configuration.log.accessLog ? AccessLog(format: configuration.log.format) : nil)

        let runtime: ProxyRuntime
        do {
            runtime = try ProxyRuntime(configuration: configuration)
        } catch {
            printError("otlp-auth-proxy: cannot start: \(error)")
            throw CommandFailure()
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        let server: ProxyServer
        do {
            server = try ProxyServer(runtime: runtime, group: group, logger: logger, metrics: metrics)
        } catch {
            printError("otlp-auth-proxy: cannot start: \(error)")
            throw CommandFailure()
        }
        let admin = configuration.admin.endpoint.map { endpoint in
            AdminServer(
                endpoint: endpoint, group: group, metrics: metrics,
                upstreams: [("upstream.grpc", configuration.upstream.grpc), ("upstream.http", configuration.upstream.http)],
                isDraining: { server.isDraining }, logger: logger)
        }
        // Trapped before the ready line, so an early SIGHUP reloads instead of ending the process.
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        let service = ListenerService(
            start: {
                let bound = try await server.start()
                let adminAddress = try await admin?.start()
                printReady(
                    "proxy ready grpc=\(bound.grpc.hostPort) http=\(bound.http.hostPort)"
                        + (adminAddress.map { " admin=\($0.hostPort)" } ?? ""))
            },
            stop: {
                // The drain timeout of the configuration being served: a reload may have changed it.
                // The admin listener stays up meanwhile, so /readyz reports the drain.
                await server.drain(timeout: server.runtime.configuration.shutdown.drainTimeout)
                await server.shutdown()
                await admin?.shutdown()
            })
        let path = configuration.sourceFile ?? config
        // The group stops services in reverse order: reload triggers first, the listeners (draining) last.
        let services: [any Service] = [
            service,
            ReloadSignalService(signals: hangups, server: server, configurationFile: path, logger: logger),
            ConfigurationWatcher(server: server, configurationFile: path, logger: logger),
        ]
        let serviceGroup = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await serviceGroup.run()
        } catch {
            printError("otlp-auth-proxy: \(error)")
            try? await group.shutdownGracefully()
            throw CommandFailure()
        }
        try? await group.shutdownGracefully()
    }
}

struct ValidateCommand {
    var config: String

    func run() async throws {
        let configuration = try loadConfiguration(config)
        do {
            _ = try ProxyRuntime(configuration: configuration)
        } catch {
            printError("\(config): \(error)")
            throw CommandFailure()
        }
        LogOutput.standardOutput("configuration OK: \(config)")
    }
}

struct SinkCommand {
    var listen: String
    var grpcListen: String

    func run() async throws {
        bootstrapLogging(level: "info", format: .logfmt)
        let logger = Logger(label: "otlp-auth-proxy.sink")
        guard let endpoint = Endpoint.parse(listen) else {
            printError("sink: --listen \(listen): expected host:port, e.g. 127.0.0.1:14318")
            throw CommandFailure()
        }
        guard let grpcEndpoint = Endpoint.parse(grpcListen) else {
            printError("sink: --grpc-listen \(grpcListen): expected host:port, e.g. 127.0.0.1:14317")
            throw CommandFailure()
        }
        guard grpcEndpoint.host == endpoint.host else {
            printError("sink: --grpc-listen \(grpcListen): must use the same host as --listen (\(endpoint.host))")
            throw CommandFailure()
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let sink = OTLPSink(host: endpoint.host, port: endpoint.port, grpcPort: grpcEndpoint.port,
                            eventLoopGroup: group, logger: logger)
        let service = ListenerService(
            start: {
                let ports = try await sink.start()
                let grpc = Endpoint(host: grpcEndpoint.host, port: ports.grpc ?? grpcEndpoint.port)
                printReady("sink ready http=\(Endpoint(host: endpoint.host, port: ports.http)) grpc=\(grpc)")
            },
            stop: { try? await sink.shutdown() })
        let serviceGroup = ServiceGroup(
            configuration: .init(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await serviceGroup.run()
        try? await group.shutdownGracefully()
        // The final counters, once no event loop can count anything more: a caller that restarts
        // the sink adds these up without racing requests that arrive while it stops.
        printReady("sink stopped stats=\(String(decoding: sink.snapshot().json(), as: UTF8.self))")
    }
}

/// Runs listeners until the service group asks for a graceful shutdown.
struct ListenerService: Service {
    let start: @Sendable () async throws -> Void
    let stop: @Sendable () async -> Void

    func run() async throws {
        try await start()
        try? await gracefulShutdown()
        await stop()
    }
}

func loadConfiguration(_ path: String) throws -> ProxyConfiguration {
    do {
        return try ProxyConfiguration.load(file: path)
    } catch {
        printError("\(error)")
        throw CommandFailure()
    }
}

/// Application logs go to stderr in `log.format`, like the access log.
func bootstrapLogging(level: String, format: ProxyConfiguration.Log.Format) {
    let level = Logger.Level(rawValue: level) ?? .info
    LoggingSystem.bootstrap { label in
        StructuredLogHandler(label: label, level: level, format: format)
    }
}

/// Exits once the log lines still batched for stderr are written.
func exitAfterLogs(_ status: Int32) -> Never {
    LogWriter.standardError.flush()
    exit(status)
}

func printError(_ message: String) {
    LogOutput.standardError(message)
}

/// The one line on stdout that scripts and tests wait for.
func printReady(_ line: String) {
    LogOutput.standardOutput(line)
}
