import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import ProxyConfig
import ProxyCore
import ProxySink
import ServiceLifecycle
import UnixSignals

@main
struct OTLPAuthProxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "otlp-auth-proxy",
        abstract: "A TLS-terminating authentication proxy for OpenTelemetry (OTLP) receivers.",
        subcommands: [RunCommand.self, ValidateCommand.self, SinkCommand.self])
}

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Serve OTLP over TLS and forward authenticated traffic to the receiver.")

    @Option(name: .long, help: "The YAML configuration file.")
    var config: String

    @Option(name: .long, help: "Event loop threads (default: one per core).")
    var threads: Int = System.coreCount

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
            throw ExitCode(1)
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        let server: ProxyServer
        do {
            server = try ProxyServer(runtime: runtime, group: group, logger: logger, metrics: metrics)
        } catch {
            printError("otlp-auth-proxy: cannot start: \(error)")
            throw ExitCode(1)
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
            throw ExitCode(1)
        }
        try? await group.shutdownGracefully()
    }
}

struct ValidateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check a configuration file and the files it names, then exit (non-zero on problems).")

    @Option(name: .long, help: "The YAML configuration file.")
    var config: String

    func run() async throws {
        let configuration = try loadConfiguration(config)
        do {
            _ = try ProxyRuntime(configuration: configuration)
        } catch {
            printError("\(config): \(error)")
            throw ExitCode(1)
        }
        print("configuration OK: \(config)")
    }
}

struct SinkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sink",
        abstract: "Run a small OTLP receiver that counts what it gets per tenant (GET /stats), for demos and tests.")

    @Option(name: .long, help: "Address to listen on for OTLP/HTTP (plaintext).")
    var listen: String = "127.0.0.1:14318"

    @Option(name: .customLong("grpc-listen"), help: "Address to listen on for OTLP/gRPC (plaintext h2c).")
    var grpcListen: String = "127.0.0.1:14317"

    func run() async throws {
        bootstrapLogging(level: "info", format: .logfmt)
        let logger = Logger(label: "otlp-auth-proxy.sink")
        guard let endpoint = Endpoint.parse(listen) else {
            printError("sink: --listen \(listen): expected host:port, e.g. 127.0.0.1:14318")
            throw ExitCode(1)
        }
        guard let grpcEndpoint = Endpoint.parse(grpcListen) else {
            printError("sink: --grpc-listen \(grpcListen): expected host:port, e.g. 127.0.0.1:14317")
            throw ExitCode(1)
        }
        guard grpcEndpoint.host == endpoint.host else {
            printError("sink: --grpc-listen \(grpcListen): must use the same host as --listen (\(endpoint.host))")
            throw ExitCode(1)
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
        throw ExitCode(1)
    }
}

/// Application logs go to stderr in `log.format`, like the access log.
func bootstrapLogging(level: String, format: ProxyConfiguration.Log.Format) {
    let level = Logger.Level(rawValue: level) ?? .info
    LoggingSystem.bootstrap { label in
        StructuredLogHandler(label: label, level: level, format: format)
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// The one line on stdout that scripts and tests wait for.
func printReady(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
