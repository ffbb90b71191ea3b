import Foundation
import XCTest
@testable import ProxyConfig

/// Keeps the shipped example and the reference in step with the code.
final class DocumentationTests: XCTestCase {
    private var repositoryRoot: String {
        // Tests/ProxyConfigTests/DocumentationTests.swift → repository root.
        Paths.absolute("../..", relativeTo: Paths.directory(of: Paths.absolute(#filePath, relativeTo: "/")))
    }

    func testExampleConfig_LoadsAndSetsEveryKey() throws {
        let path = repositoryRoot + "/examples/proxy.yaml"
        // The example's `ci` provider reads its HMAC secret from this variable.
        setenv("OTLP_JWT_SECRET", String(repeating: "e", count: 32), 0)
        let configuration = try ProxyConfiguration.load(file: path)
        XCTAssertEqual(configuration.sourceFile, path)
        XCTAssertEqual(configuration.tls.certFile, "/etc/otlp-auth-proxy/tls/server.crt")
        XCTAssertEqual(configuration.auth.bearer?.tokensFile, "/etc/otlp-auth-proxy/tokens.yaml")

        // The example writes every key of the schema, so the reader has seen all of them. Keys of
        // list entries (auth.jwt.providers, auth.principals) sit one level deeper, after "- " or aligned with it.
        let text = try String(contentsOfFile: path, encoding: .utf8)
        for (section, keys) in Schema.sections where !section.isEmpty {
            let depth = section.split(separator: ".").count
            for key in keys where !Self.isSubsection(section, key) {
                let patterns = Schema.listSections.contains(section)
                    ? ["\n" + String(repeating: "  ", count: depth) + "- " + key + ":",
                       "\n" + String(repeating: "  ", count: depth + 1) + key + ":"]
                    : ["\n" + String(repeating: "  ", count: depth) + key + ":"]
                XCTAssertTrue(patterns.contains { text.contains($0) }, "examples/proxy.yaml lacks \(section).\(key)")
            }
        }
        // And it is a configuration that loads with every new method on.
        XCTAssertEqual(configuration.auth.methods, [.mtls, .jwt, .bearer, .basic])
        XCTAssertEqual(configuration.tls.clientAuth, .require)
    }

    func testReference_DocumentsEveryKey() throws {
        let text = try String(contentsOfFile: repositoryRoot + "/docs/configuration.md", encoding: .utf8)
        for (section, keys) in Schema.sections where !section.isEmpty {
            for key in keys where !Self.isSubsection(section, key) {
                XCTAssertTrue(text.contains("### `\(section).\(key)`"), "docs/configuration.md lacks \(section).\(key)")
            }
        }
    }

    /// A key that is itself a section (auth.bearer, auth.jwt, …) is documented through its own keys.
    private static func isSubsection(_ section: String, _ key: String) -> Bool {
        Schema.sections.contains { $0.path == "\(section).\(key)" }
    }

    func testUnquotedEndpoints_ReadAsWritten() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal(plus: """
            grpc: { endpoint: 127.0.0.1:4317 }
            http:
              endpoint: :4318
            """)))
        XCTAssertEqual(configuration.grpc.endpoint, Endpoint(host: "127.0.0.1", port: 4317))
        XCTAssertEqual(configuration.http.endpoint, Endpoint(host: "0.0.0.0", port: 4318))
    }
}
