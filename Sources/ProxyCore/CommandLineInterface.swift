import ProxyConfig

/// The command line of `otlp-auth-proxy`: the subcommands `run`, `validate` and `sink`, their
/// options, help texts and usage errors. A pure function of the arguments, so tests check it
/// without starting a process; the executable prints what it returns and exits with its code.
///
/// Conventions (those of swift-argument-parser, which the executable used before): `--name value`
/// or `--name=value`, a repeated option's last value wins, `-h`/`--help` anywhere prints the help
/// of the command it follows (exit 0), `help [subcommand]` likewise, and a usage error is printed
/// to stderr with the usage line and exits 64 (EX_USAGE).
public enum CommandLineInterface {
    /// What the arguments ask for.
    public enum Command: Equatable, Sendable {
        /// `threads` nil: one event loop per core.
        case run(config: String, threads: Int?)
        case validate(config: String)
        case sink(listen: String, grpcListen: String)
    }

    public enum Outcome: Equatable, Sendable {
        case command(Command)
        /// Print to stdout, exit 0.
        case help(String)
        /// Print to stderr, exit `CommandLineInterface.usageExitCode`.
        case usageError(String)
    }

    /// EX_USAGE from sysexits.h, as swift-argument-parser used.
    public static let usageExitCode: Int32 = 64
    public static let programName = "otlp-auth-proxy"

    struct Option: Sendable {
        let name: String
        let valueName: String
        let help: String
        var required = false
        var defaultValue: String?
        /// Checks a value; returns a reason when it is refused.
        var check: @Sendable (String) -> String? = { _ in nil }

        var synopsis: String { "--\(name) <\(valueName)>" }
    }

    struct Subcommand: Sendable {
        let name: String
        let abstract: String
        let options: [Option]

        var usage: String {
            ([programName, name] + options.map { $0.required ? $0.synopsis : "[\($0.synopsis)]" }).joined(separator: " ")
        }
    }

    static let abstract = "A TLS-terminating authentication proxy for OpenTelemetry (OTLP) receivers."

    static let subcommands: [Subcommand] = [
        Subcommand(
            name: "run", abstract: "Serve OTLP over TLS and forward authenticated traffic to the receiver.",
            options: [
                Option(name: "config", valueName: "file", help: "The YAML configuration file.", required: true),
                Option(
                    name: "threads", valueName: "n", help: "Event loop threads (default: one per core).",
                    check: { Int($0) == nil ? "expected a whole number" : nil }),
            ]),
        Subcommand(
            name: "validate",
            abstract: "Check a configuration file and the files it names, then exit (non-zero on problems).",
            options: [Option(name: "config", valueName: "file", help: "The YAML configuration file.", required: true)]),
        Subcommand(
            name: "sink",
            abstract: "Run a small OTLP receiver that counts what it gets per tenant (GET /stats), for demos and tests.",
            options: [
                Option(
                    name: "listen", valueName: "host:port", help: "Address to listen on for OTLP/HTTP (plaintext).",
                    defaultValue: "127.0.0.1:14318"),
                Option(
                    name: "grpc-listen", valueName: "host:port", help: "Address to listen on for OTLP/gRPC (plaintext h2c).",
                    defaultValue: "127.0.0.1:14317"),
            ]),
    ]

    /// Parses the arguments after the program name.
    public static func parse(_ arguments: [String]) -> Outcome {
        guard let first = arguments.first else { return .help(rootHelp) }
        if first == "-h" || first == "--help" { return .help(rootHelp) }
        if first == "help" {
            guard arguments.count > 1 else { return .help(rootHelp) }
            guard let subcommand = subcommands.first(where: { $0.name == arguments[1] }) else {
                return .usageError(rootError("Unknown subcommand '\(arguments[1])'"))
            }
            return .help(help(subcommand))
        }
        guard let subcommand = subcommands.first(where: { $0.name == first }) else {
            if first.hasPrefix("-") { return .usageError(rootError("Unknown option '\(first)'")) }
            let hint = Spelling.closest(to: first, among: subcommands.map(\.name)).map { "; did you mean '\($0)'?" } ?? ""
            return .usageError(rootError("Unknown subcommand '\(first)'\(hint)"))
        }
        if arguments.contains(where: { $0 == "-h" || $0 == "--help" }) { return .help(help(subcommand)) }

        var values: [String: String] = [:]
        var index = 1
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard argument.hasPrefix("--"), argument.count > 2 else {
                return .usageError(error("Unexpected argument '\(argument)'", subcommand))
            }
            var name = String(argument.dropFirst(2))
            var value: String?
            if let equals = name.firstIndex(of: "=") {
                value = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            }
            guard let option = subcommand.options.first(where: { $0.name == name }) else {
                let hint = Spelling.closest(to: name, among: subcommand.options.map(\.name)).map { "; did you mean '--\($0)'?" } ?? ""
                return .usageError(error("Unknown option '--\(name)'\(hint)", subcommand))
            }
            if value == nil {
                // A following option is not taken for this one's value.
                if index < arguments.count, !arguments[index].hasPrefix("--") {
                    value = arguments[index]
                    index += 1
                } else {
                    return .usageError(error("Missing value for '\(option.synopsis)'", subcommand, option))
                }
            }
            guard let value else { continue }
            if let reason = option.check(value) {
                return .usageError(error("The value '\(value)' is invalid for '\(option.synopsis)': \(reason)", subcommand, option))
            }
            values[name] = value
        }
        for option in subcommand.options where option.required && values[option.name] == nil {
            return .usageError(error("Missing expected argument '\(option.synopsis)'", subcommand, option))
        }
        func value(_ name: String) -> String {
            values[name] ?? subcommand.options.first { $0.name == name }!.defaultValue!
        }
        switch subcommand.name {
        case "run": return .command(.run(config: value("config"), threads: values["threads"].flatMap { Int($0) }))
        case "validate": return .command(.validate(config: value("config")))
        default: return .command(.sink(listen: value("listen"), grpcListen: value("grpc-listen")))
        }
    }

    static var rootHelp: String {
        var lines = [
            "OVERVIEW: \(abstract)", "",
            "USAGE: \(programName) <subcommand>", "",
            "OPTIONS:",
            row("-h, --help", "Show help information."), "",
            "SUBCOMMANDS:",
        ]
        lines += subcommands.map { row($0.name, $0.abstract) }
        lines += ["", "  See '\(programName) help <subcommand>' for detailed help."]
        return lines.joined(separator: "\n")
    }

    static func help(_ subcommand: Subcommand) -> String {
        var lines = ["OVERVIEW: \(subcommand.abstract)", "", "USAGE: \(subcommand.usage)", "", "OPTIONS:"]
        for option in subcommand.options {
            lines.append(row(option.synopsis, option.help + (option.defaultValue.map { " (default: \($0))" } ?? "")))
        }
        lines.append(row("-h, --help", "Show help information."))
        return lines.joined(separator: "\n")
    }

    /// A two-column entry: the name, then the text from column 27 wrapped at 80 columns (starting
    /// on the next line when the name does not leave room).
    private static func row(_ name: String, _ text: String) -> String {
        let column = 26
        var lines: [String] = []
        var line = ""
        for word in text.split(separator: " ") {
            if !line.isEmpty && column + line.count + 1 + word.count > 80 {
                lines.append(line)
                line = ""
            }
            line += (line.isEmpty ? "" : " ") + word
        }
        lines.append(line)
        let margin = String(repeating: " ", count: column)
        let head = "  " + name
        let first = head.count < column - 1
            ? head + String(repeating: " ", count: column - head.count) + lines[0]
            : head + "\n" + margin + lines[0]
        return ([first] + lines.dropFirst().map { margin + $0 }).joined(separator: "\n")
    }

    private static func rootError(_ message: String) -> String {
        "Error: \(message)\nUsage: \(programName) <subcommand>\n  See '\(programName) --help' for more information."
    }

    private static func error(_ message: String, _ subcommand: Subcommand, _ option: Option? = nil) -> String {
        var lines = ["Error: \(message)"]
        if let option { lines.append("Help:  \(option.synopsis)  \(option.help)") }
        lines.append("Usage: \(subcommand.usage)")
        lines.append("  See '\(programName) \(subcommand.name) --help' for more information.")
        return lines.joined(separator: "\n")
    }
}
