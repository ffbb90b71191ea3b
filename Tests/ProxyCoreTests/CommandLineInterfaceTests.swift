import XCTest

@testable import ProxyCore

/// The executable's command line: subcommands, options and defaults as swift-argument-parser gave
/// them before, help on request (exit 0) and usage errors that name the bad option or value (exit 64).
final class CommandLineInterfaceTests: XCTestCase {
    typealias CLI = CommandLineInterface

    func testRun_ConfigAndThreads_BothSpellings() {
        XCTAssertEqual(CLI.parse(["run", "--config", "proxy.yaml"]), .command(.run(config: "proxy.yaml", threads: nil)))
        XCTAssertEqual(
            CLI.parse(["run", "--threads", "4", "--config", "p.yaml"]), .command(.run(config: "p.yaml", threads: 4)))
        XCTAssertEqual(CLI.parse(["run", "--config=p.yaml", "--threads=1"]), .command(.run(config: "p.yaml", threads: 1)))
        // A repeated option: the last value wins.
        XCTAssertEqual(CLI.parse(["run", "--config", "a", "--config", "b"]), .command(.run(config: "b", threads: nil)))
    }

    func testValidateAndSink_Defaults() {
        XCTAssertEqual(CLI.parse(["validate", "--config", "/etc/p.yaml"]), .command(.validate(config: "/etc/p.yaml")))
        XCTAssertEqual(
            CLI.parse(["sink"]), .command(.sink(listen: "127.0.0.1:14318", grpcListen: "127.0.0.1:14317")))
        XCTAssertEqual(
            CLI.parse(["sink", "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"]),
            .command(.sink(listen: "127.0.0.1:0", grpcListen: "127.0.0.1:0")))
    }

    func testHelp_EveryLevel() throws {
        for arguments in [[], ["-h"], ["--help"], ["help"]] {
            guard case .help(let text) = CLI.parse(arguments) else { return XCTFail("\(arguments): no help") }
            XCTAssertTrue(text.hasPrefix("OVERVIEW: A TLS-terminating authentication proxy"), text)
            for name in ["run", "validate", "sink"] { XCTAssertTrue(text.contains("\n  \(name) "), text) }
        }
        for arguments in [["run", "--help"], ["run", "-h"], ["help", "run"], ["run", "--config", "x", "-h"]] {
            guard case .help(let text) = CLI.parse(arguments) else { return XCTFail("\(arguments): no help") }
            XCTAssertTrue(text.contains("USAGE: otlp-auth-proxy run --config <file> [--threads <n>]"), text)
            XCTAssertTrue(text.contains("--threads <n>           Event loop threads (default: one per core)."), text)
        }
        guard case .help(let sink) = CLI.parse(["sink", "--help"]) else { return XCTFail("no sink help") }
        XCTAssertTrue(sink.contains("--listen <host:port>"), sink)
        XCTAssertTrue(sink.contains("(default: 127.0.0.1:14317)"), sink)
        guard case .help(let validate) = CLI.parse(["help", "validate"]) else { return XCTFail("no validate help") }
        XCTAssertTrue(validate.contains("USAGE: otlp-auth-proxy validate --config <file>"), validate)
    }

    func testUsageErrors_NameTheProblem() {
        let cases: [([String], String, String)] = [
            (["run"], "Error: Missing expected argument '--config <file>'", "Usage: otlp-auth-proxy run --config <file>"),
            (["run", "--config"], "Error: Missing value for '--config <file>'", "Help:  --config <file>  The YAML configuration file."),
            (["run", "--config", "--threads", "2"], "Error: Missing value for '--config <file>'", "run --help"),
            (["run", "--config", "p", "--threads", "abc"],
             "Error: The value 'abc' is invalid for '--threads <n>': expected a whole number", "run --help"),
            (["run", "--config", "p", "--bogus"], "Error: Unknown option '--bogus'", "run --help"),
            (["run", "--confg", "p"], "Error: Unknown option '--confg'; did you mean '--config'?", "run --help"),
            (["sink", "--grpc_listen", "x"], "Error: Unknown option '--grpc_listen'; did you mean '--grpc-listen'?", "sink --help"),
            (["vaildate", "--config", "p"], "Error: Unknown subcommand 'vaildate'; did you mean 'validate'?", "See 'otlp-auth-proxy --help'"),
            (["validate", "p.yaml"], "Error: Unexpected argument 'p.yaml'", "Usage: otlp-auth-proxy validate --config <file>"),
            (["sink", "--listen"], "Error: Missing value for '--listen <host:port>'", "sink --help"),
            (["sink", "-x"], "Error: Unexpected argument '-x'", "sink --help"),
            (["bogus"], "Error: Unknown subcommand 'bogus'", "See 'otlp-auth-proxy --help'"),
            (["--version"], "Error: Unknown option '--version'", "Usage: otlp-auth-proxy <subcommand>"),
            (["help", "bogus"], "Error: Unknown subcommand 'bogus'", "Usage: otlp-auth-proxy <subcommand>"),
        ]
        for (arguments, first, mentions) in cases {
            guard case .usageError(let text) = CLI.parse(arguments) else {
                XCTFail("\(arguments): \(CLI.parse(arguments))")
                continue
            }
            XCTAssertEqual(text.split(separator: "\n").first.map(String.init), first, "\(arguments)")
            XCTAssertTrue(text.contains(mentions), "\(arguments): \(text)")
        }
        XCTAssertEqual(CLI.usageExitCode, 64)
    }
}
