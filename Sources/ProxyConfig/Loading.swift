import Foundation
import Yams

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
        let fileManager = FileManager.default
        let absolute = Paths.absolute(path, relativeTo: fileManager.currentDirectoryPath)
        var isDirectory: ObjCBool = false
        guard fileManager.fileExists(atPath: absolute, isDirectory: &isDirectory) else {
            throw fail("cannot read \(path): no such file; check the path "
                + "(a relative path resolves against the current directory, \(fileManager.currentDirectoryPath))")
        }
        guard !isDirectory.boolValue else {
            throw fail("cannot read \(path): it is a directory; give the path of the YAML file inside it")
        }
        guard fileManager.isReadableFile(atPath: absolute) else {
            throw fail("cannot read \(path): permission denied; make it readable by the user the proxy runs as")
        }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: absolute))
        } catch {
            throw fail("cannot read \(path): \(error.localizedDescription)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
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
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw ConfigurationError(
                source: sourceName, problems: [.init(key: "(file)", message: syntaxMessage(error))])
        }
        let base = Paths.absolute(directory, relativeTo: FileManager.default.currentDirectoryPath)
        var reader = ConfigurationReader(directory: base)
        let configuration = reader.read(root)
        guard reader.problems.isEmpty else {
            throw ConfigurationError(source: sourceName, problems: reader.problems)
        }
        return configuration
    }

    /// Yams' error text quotes the surrounding document; ours keeps only the position and the reason.
    private static func syntaxMessage(_ error: any Error) -> String {
        func position(_ mark: Mark) -> String { "line \(mark.line), column \(mark.column)" }
        func located(_ context: YamlError.Context?, _ problem: String, _ mark: Mark, _ yaml: String) -> String {
            var text = "YAML syntax error at \(position(mark)): \(problem)"
            if let context { text += " (\(context.text) at \(position(context.mark)))" }
            // The most common cause in this file: an unquoted IPv6 endpoint, which YAML reads as a list.
            let lines = yaml.split(separator: "\n", omittingEmptySubsequences: false)
            if mark.line >= 1, mark.line <= lines.count {
                let line = lines[mark.line - 1]
                if line.contains("]:") && !line.contains("\"[") && !line.contains("'[") {
                    return text + "; quote IPv6 endpoints, e.g. endpoint: \"[::1]:4318\""
                }
            }
            return text + "; fix the YAML there"
        }
        guard let yamlError = error as? YamlError else {
            return "not valid YAML: \(error)"
        }
        switch yamlError {
        case let .scanner(context, problem, mark, yaml),
            let .parser(context, problem, mark, yaml),
            let .composer(context, problem, mark, yaml):
            return located(context, problem, mark, yaml)
        case let .reader(problem, offset, _, yaml):
            if let offset, offset <= yaml.count {
                let before = yaml.prefix(offset)
                let line = before.filter { $0 == "\n" }.count + 1
                let column = before.count - (before.lastIndex(of: "\n").map { before.distance(from: before.startIndex, to: $0) + 1 } ?? 0) + 1
                return "YAML cannot be read at line \(line), column \(column): \(problem); save the file as UTF-8 text"
            }
            return "YAML cannot be read: \(problem); save the file as UTF-8 text"
        case let .duplicatedKeysInMapping(duplicates, context):
            let names = duplicates.map { "`\($0)`" }.joined(separator: ", ")
            let line = context.mark.line > 0 ? " (first at line \(context.mark.line))" : ""
            return "duplicate key \(names)\(line): a key may appear only once in a mapping; keep one"
        default:
            return "not valid YAML: \(yamlError)"
        }
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
