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
        let configuration = try ProxyConfiguration.load(file: path)
        XCTAssertEqual(configuration.sourceFile, path)
        XCTAssertEqual(configuration.tls.certFile, "/etc/otlp-auth-proxy/tls/server.crt")
        XCTAssertEqual(configuration.auth.bearer?.tokensFile, "/etc/otlp-auth-proxy/tokens.yaml")

        // The example writes every key of the schema, so the reader has seen all of them.
        let text = try String(contentsOfFile: path, encoding: .utf8)
        for (section, keys) in Schema.sections where !section.isEmpty {
            for key in keys where !(section == "auth" && key == "bearer") {
                let pattern = "\n" + String(repeating: "  ", count: section.split(separator: ".").count) + key + ":"
                XCTAssertTrue(text.contains(pattern), "examples/proxy.yaml lacks \(section).\(key)")
            }
        }
    }

    func testReference_DocumentsEveryKey() throws {
        let text = try String(contentsOfFile: repositoryRoot + "/docs/configuration.md", encoding: .utf8)
        for (section, keys) in Schema.sections where !section.isEmpty {
            for key in keys where !(section == "auth" && key == "bearer") {
                XCTAssertTrue(text.contains("### `\(section).\(key)`"), "docs/configuration.md lacks \(section).\(key)")
            }
        }
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
