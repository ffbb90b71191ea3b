import ProxySystem
import ProxyYAML

extension ProxyConfiguration {
    /// Reads and validates the file. Relative paths inside resolve against the file's directory.
    /// An unreadable file is reported as one problem with key "(file)" naming the path.
    public static func load(file path: String) throws(ConfigurationError) -> ProxyConfiguration {
        func fail(_ message: String) -> ConfigurationError {
            ConfigurationError(source: path, problems: [.init(key: "(file)", message: message)])
        }
        guard !path.isEmpty else {
            throw fail("no configuration file given: pass the path of a YAML file, e.g. /etc/otlp-auth-proxy/proxy.yaml")
        }
        let currentDirectory = ProcessEnvironment.currentDirectory
        let absolute = Paths.absolute(path, relativeTo: currentDirectory)
        let bytes: [UInt8]
        do {
            bytes = try SystemFile.read(absolute, maxBytes: YAML.defaultMaximumBytes)
        } catch {
            switch error.kind {
            case .notFound:
                throw fail("cannot read \(path): no such file; check the path "
                    + "(a relative path resolves against the current directory, \(currentDirectory))")
            case .isDirectory:
                throw fail("cannot read \(path): it is a directory; give the path of the YAML file inside it")
            case .tooLarge:
                throw fail("cannot read \(path): \(error.explanation); a configuration file is a few KiB, check that "
                    + "the path names the right file")
            case .permissionDenied, .other:
                throw fail("cannot read \(path): \(error.explanation)")
            }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw fail("cannot read \(path): it is not UTF-8 text; save it as UTF-8")
        }
        var configuration = try parse(
            yaml: text, directory: Paths.directory(of: absolute), sourceName: path)
        configuration.sourceFile = absolute
        return configuration
    }

    /// Parses and validates YAML text; relative paths resolve against `directory`
    /// (itself resolved against the current directory when relative).
    public static func parse(
        yaml: String, directory: String, sourceName: String = "config"
    ) throws(ConfigurationError) -> ProxyConfiguration {
        let root: YAMLNode?
        do {
            root = try YAML.parse(yaml)
        } catch {
            throw ConfigurationError(
                source: sourceName, problems: [.init(key: "(file)", message: syntaxMessage(error, yaml: yaml))])
        }
        let base = Paths.absolute(directory, relativeTo: ProcessEnvironment.currentDirectory)
        var reader = ConfigurationReader(directory: base)
        let configuration = reader.read(root)
        guard reader.problems.isEmpty else {
            throw ConfigurationError(source: sourceName, problems: reader.problems)
        }
        return configuration
    }

    /// The reader's position and reason (it never quotes the document), plus a hint for the most
    /// common mistake in this file: an unquoted IPv6 endpoint, which YAML reads as a list.
    private static func syntaxMessage(_ error: YAMLError, yaml: String) -> String {
        let text = "YAML syntax error at line \(error.line), column \(error.column): \(error.reason)"
        let lines = yaml.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
        if error.line >= 1, error.line <= lines.count {
            let line = lines[error.line - 1]
            if line.contains("]:") && !line.contains("\"[") && !line.contains("'[") {
                return text + "; quote IPv6 endpoints, e.g. endpoint: \"[::1]:4318\""
            }
        }
        return text
    }
}

/// Path arithmetic on strings, without touching the file system.
enum Paths {
    /// `path` if absolute, else joined to `base`; "." and ".." segments are folded.
    static func absolute(_ path: String, relativeTo base: String) -> String {
        let joined = path.hasPrefix("/") ? path : base + "/" + path
        var segments: [Substring] = []
        for segment in joined.split(separator: "/", omittingEmptySubsequences: true) {
            switch segment {
            case ".": continue
            case "..": if !segments.isEmpty { segments.removeLast() }
            default: segments.append(segment)
            }
        }
        return "/" + segments.joined(separator: "/")
    }

    /// The directory part of an absolute path.
    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
        return String(path[..<slash])
    }
}
