/// The module's one error type: every problem found in one validation pass over one configuration.
///
/// Loading never stops at the first problem; it collects them all so a user fixes the file in one go.
/// Messages name values only for keys the proxy knows (never the value of an unknown key), so a
/// secret pasted into the wrong place does not end up in a log.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// One thing wrong with the configuration: where (a dotted key) and what to do about it.
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        /// Dotted path of the offending key, e.g. "upstream.http", "tls.cert_file";
        /// "(file)" for problems with the file itself (unreadable, not YAML).
        public var key: String
        /// What is wrong and how to fix it.
        public var message: String

        public init(key: String, message: String) {
            self.key = key
            self.message = message
        }

        /// "upstream.http: ...".
        public var description: String { "\(key): \(message)" }
    }

    /// The file path given to `load(file:)`, or the `sourceName` given to `parse`.
    public var source: String
    /// Never empty when thrown.
    public var problems: [Problem]

    public init(source: String, problems: [Problem]) {
        self.source = source
        self.problems = problems
    }

    /// "<source>: 2 problems:\n  - key: message\n  - key: message".
    public var description: String {
        let count = problems.count == 1 ? "1 problem" : "\(problems.count) problems"
        return "\(source): \(count):" + problems.map { "\n  - \($0.description)" }.joined()
    }
}
