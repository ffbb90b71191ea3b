// Fuzzes configuration loading: the input is the YAML file, read as UTF-8 like
// `ProxyConfiguration.load`. Relative paths resolve against a directory that does not exist;
// certificate and token files are checked where they are used, not while parsing.
import Foundation
import FuzzSupport
import ProxyConfig

runFuzzer { data, count in
    guard let text = String(bytes: fuzzBytes(data, count), encoding: .utf8) else { return 0 }
    do {
        let configuration = try ProxyConfiguration.parse(yaml: text, directory: "/nonexistent/fuzz-config")
        _ = configuration == configuration
    } catch let error as ConfigurationError {
        if error.problems.isEmpty { fatalError("a configuration error without problems") }
        _ = error.description
    } catch {
        fatalError("an error of an unexpected type: \(error)")
    }
    return 0
}
