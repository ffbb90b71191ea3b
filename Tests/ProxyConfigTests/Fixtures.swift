import XCTest
@testable import ProxyConfig

/// Named YAML fixtures and helpers shared by the configuration tests.
enum Fixture {
    /// The smallest valid file: the two TLS files and a tokens file; everything else defaults.
    static let minimal = """
        tls:
          cert_file: server.crt
          key_file: server.key
        auth:
          bearer:
            tokens_file: tokens.yaml
        """

    /// `minimal` plus extra top-level YAML (sections that `minimal` does not have).
    static func minimal(plus extra: String) -> String {
        minimal + "\n" + extra
    }

    /// Directory relative paths resolve against in `parse` calls.
    static let directory = "/etc/otlp-auth-proxy"
}

extension XCTestCase {
    /// Parses text that must be valid.
    func parse(_ yaml: String, file: StaticString = #filePath, line: UInt = #line) -> ProxyConfiguration? {
        do {
            return try ProxyConfiguration.parse(yaml: yaml, directory: Fixture.directory)
        } catch {
            XCTFail("unexpected problems: \(error)", file: file, line: line)
            return nil
        }
    }

    /// Parses text that must be refused; returns the error.
    func refuse(_ yaml: String, file: StaticString = #filePath, line: UInt = #line) -> ConfigurationError? {
        do {
            let configuration = try ProxyConfiguration.parse(yaml: yaml, directory: Fixture.directory)
            XCTFail("expected problems, got \(configuration)", file: file, line: line)
            return nil
        } catch {
            XCTAssertFalse(error.problems.isEmpty, "an error must carry problems", file: file, line: line)
            return error
        }
    }

    /// Parses text that must be refused with exactly one problem, under `key`; returns its message.
    @discardableResult
    func onlyProblem(
        _ key: String, in yaml: String, file: StaticString = #filePath, line: UInt = #line
    ) -> String {
        guard let error = refuse(yaml, file: file, line: line) else { return "" }
        XCTAssertEqual(error.problems.map(\.key), [key], "\(error)", file: file, line: line)
        return error.problems.first(where: { $0.key == key })?.message ?? ""
    }

    func assertContains(
        _ text: String, _ parts: String..., file: StaticString = #filePath, line: UInt = #line
    ) {
        for part in parts {
            XCTAssertTrue(text.contains(part), "expected \(part.debugDescription) in: \(text)", file: file, line: line)
        }
    }
}
