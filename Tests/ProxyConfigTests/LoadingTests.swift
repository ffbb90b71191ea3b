import Foundation
import XCTest
@testable import ProxyConfig

/// Loading whole files: defaults, every key read, relative paths, unreadable files, YAML syntax.
final class LoadingTests: XCTestCase {
    func testParse_MinimalConfig_AppliesEveryDefault() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal))

        XCTAssertEqual(configuration.grpc.endpoint, Endpoint(host: "0.0.0.0", port: 4317))
        XCTAssertEqual(configuration.grpc.maxRecvMsgSize, 4 * 1024 * 1024)
        XCTAssertEqual(configuration.http.endpoint, Endpoint(host: "0.0.0.0", port: 4318))
        XCTAssertEqual(configuration.http.maxRequestBodySize, 20 * 1024 * 1024)
        XCTAssertEqual(configuration.http.maxHeaderBytes, 64 * 1024)
        XCTAssertEqual(configuration.http.maxHeaderCount, 100)
        XCTAssertEqual(configuration.http.idleTimeout, .seconds(90))
        XCTAssertEqual(configuration.tls.minVersion, "1.2")
        XCTAssertEqual(configuration.upstream.grpc, Endpoint(host: "127.0.0.1", port: 14317))
        XCTAssertEqual(configuration.upstream.http, Endpoint(host: "127.0.0.1", port: 14318))
        XCTAssertEqual(configuration.upstream.connectTimeout, .seconds(5))
        XCTAssertEqual(configuration.upstream.timeout, .seconds(30))
        XCTAssertEqual(configuration.upstream.maxIdleConnections, 64)
        XCTAssertFalse(configuration.upstream.unsafeAllowRemoteUpstream)
        XCTAssertFalse(configuration.auth.forwardAuthorization)
        XCTAssertEqual(configuration.tenant.header, "X-Scope-OrgID")
        XCTAssertEqual(configuration.log.level, "info")
        XCTAssertNil(configuration.sourceFile)
    }

    func testParse_MinimalConfig_EqualsCodeBuiltDefaults() throws {
        let loaded = try XCTUnwrap(parse(Fixture.minimal))
        let built = ProxyConfiguration(
            tls: .init(certFile: "/etc/otlp-auth-proxy/server.crt", keyFile: "/etc/otlp-auth-proxy/server.key"),
            auth: .init(bearer: .init(tokensFile: "/etc/otlp-auth-proxy/tokens.yaml")))
        XCTAssertEqual(loaded, built)
    }

    func testParse_EveryKeySet_ReadsEveryValue() throws {
        let yaml = """
            grpc: { endpoint: "127.0.0.1:5317", max_recv_msg_size: 8MiB }
            http:
              endpoint: "[::]:5318"
              max_request_body_size: 10MB
              max_header_bytes: 32KiB
              max_header_count: 50
              idle_timeout: 2m
            tls: { cert_file: /srv/tls/a.crt, key_file: /srv/tls/a.key, min_version: "1.3" }
            upstream:
              grpc: "[::1]:24317"
              http: "localhost:24318"
              connect_timeout: 500ms
              timeout: 1m30s
              max_idle_connections: 0
              unsafe_allow_remote_upstream: false
            auth: { bearer: { tokens_file: /srv/tokens.yaml }, forward_authorization: true }
            tenant: { header: X-Tenant }
            log: { level: debug }
            """
        let configuration = try XCTUnwrap(parse(yaml))

        XCTAssertEqual(configuration.grpc.endpoint, Endpoint(host: "127.0.0.1", port: 5317))
        XCTAssertEqual(configuration.grpc.maxRecvMsgSize, 8 * 1024 * 1024)
        XCTAssertEqual(configuration.http.endpoint, Endpoint(host: "::", port: 5318))
        XCTAssertEqual(configuration.http.maxRequestBodySize, 10_000_000)
        XCTAssertEqual(configuration.http.maxHeaderBytes, 32 * 1024)
        XCTAssertEqual(configuration.http.maxHeaderCount, 50)
        XCTAssertEqual(configuration.http.idleTimeout, .seconds(120))
        XCTAssertEqual(configuration.tls, .init(certFile: "/srv/tls/a.crt", keyFile: "/srv/tls/a.key", minVersion: "1.3"))
        XCTAssertEqual(configuration.upstream.grpc, Endpoint(host: "::1", port: 24317))
        XCTAssertEqual(configuration.upstream.http, Endpoint(host: "localhost", port: 24318))
        XCTAssertEqual(configuration.upstream.connectTimeout, .milliseconds(500))
        XCTAssertEqual(configuration.upstream.timeout, .seconds(90))
        XCTAssertEqual(configuration.upstream.maxIdleConnections, 0)
        XCTAssertEqual(configuration.auth, .init(bearer: .init(tokensFile: "/srv/tokens.yaml"), forwardAuthorization: true))
        XCTAssertEqual(configuration.tenant.header, "X-Tenant")
        XCTAssertEqual(configuration.log.level, "debug")
    }

    func testParse_EmptySections_KeepDefaults() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal(plus: "grpc:\nhttp: {}\nlog:\n")))
        XCTAssertEqual(configuration.grpc, .init())
        XCTAssertEqual(configuration.http, .init())
        XCTAssertEqual(configuration.log, .init())
    }

    // MARK: - Relative paths

    func testParse_RelativePaths_ResolveAgainstDirectory() throws {
        let yaml = """
            tls: { cert_file: tls/server.crt, key_file: ../keys/server.key }
            auth: { bearer: { tokens_file: ./tokens.yaml } }
            """
        let configuration = try ProxyConfiguration.parse(yaml: yaml, directory: "/etc/otlp-auth-proxy")
        XCTAssertEqual(configuration.tls.certFile, "/etc/otlp-auth-proxy/tls/server.crt")
        XCTAssertEqual(configuration.tls.keyFile, "/etc/keys/server.key")
        XCTAssertEqual(configuration.auth.bearer?.tokensFile, "/etc/otlp-auth-proxy/tokens.yaml")
    }

    func testParse_AbsolutePaths_StayAsWritten() throws {
        let yaml = """
            tls: { cert_file: /a/b.crt, key_file: /a/b.key }
            auth: { bearer: { tokens_file: /a/tokens.yaml } }
            """
        let configuration = try ProxyConfiguration.parse(yaml: yaml, directory: "/elsewhere")
        XCTAssertEqual(configuration.tls.certFile, "/a/b.crt")
        XCTAssertEqual(configuration.tls.keyFile, "/a/b.key")
        XCTAssertEqual(configuration.auth.bearer?.tokensFile, "/a/tokens.yaml")
    }

    func testParse_RelativeDirectory_ResolvesAgainstCurrentDirectory() throws {
        let configuration = try ProxyConfiguration.parse(yaml: Fixture.minimal, directory: "conf")
        let expected = FileManager.default.currentDirectoryPath + "/conf/server.crt"
        XCTAssertEqual(configuration.tls.certFile, Paths.absolute(expected, relativeTo: "/"))
        XCTAssertTrue(configuration.tls.certFile.hasPrefix("/"))
    }

    // MARK: - load(file:)

    func testLoad_File_ResolvesPathsAgainstItsDirectoryAndRecordsSource() throws {
        let directory = try makeTemporaryDirectory()
        let file = directory + "/proxy.yaml"
        try Fixture.minimal.write(toFile: file, atomically: true, encoding: .utf8)

        let configuration = try ProxyConfiguration.load(file: file)

        XCTAssertEqual(configuration.sourceFile, file)
        XCTAssertEqual(configuration.tls.certFile, directory + "/server.crt")
        XCTAssertEqual(configuration.tls.keyFile, directory + "/server.key")
        XCTAssertEqual(configuration.auth.bearer?.tokensFile, directory + "/tokens.yaml")
    }

    func testLoad_MissingFile_NamesThePath() {
        let path = "/nonexistent/otlp-auth-proxy/proxy.yaml"
        XCTAssertThrowsError(try ProxyConfiguration.load(file: path)) { error in
            guard let error = error as? ConfigurationError else { return XCTFail("wrong error type: \(error)") }
            XCTAssertEqual(error.source, path)
            XCTAssertEqual(error.problems.map(\.key), ["(file)"])
            self.assertContains(error.problems[0].message, path, "no such file")
            self.assertContains(error.description, path)
        }
    }

    func testLoad_Directory_SaysItIsADirectory() throws {
        let directory = try makeTemporaryDirectory()
        XCTAssertThrowsError(try ProxyConfiguration.load(file: directory)) { error in
            let message = (error as? ConfigurationError)?.problems.first?.message ?? ""
            self.assertContains(message, directory, "is a directory")
        }
    }

    func testLoad_InvalidFile_ReportsProblemsWithFileAsSource() throws {
        let directory = try makeTemporaryDirectory()
        let file = directory + "/proxy.yaml"
        try "log: { level: loud }\n".write(toFile: file, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ProxyConfiguration.load(file: file)) { error in
            guard let error = error as? ConfigurationError else { return XCTFail("wrong error type: \(error)") }
            XCTAssertEqual(error.source, file)
            XCTAssertTrue(error.description.hasPrefix("\(file): 4 problems:"), error.description)
        }
    }

    // MARK: - The file as a whole

    func testParse_SyntaxError_OneFileProblemWithLineAndColumn() {
        let yaml = """
            grpc:
              endpoint: "0.0.0.0:4317
            http: {}
            """
        guard let error = refuse(yaml) else { return }
        XCTAssertEqual(error.problems.map(\.key), ["(file)"])
        assertContains(error.problems[0].message, "YAML syntax error at line", "column")
    }

    func testParse_BadIndentation_ReportsLine() {
        let yaml = "tls:\n  cert_file: a\n key_file: b\n"
        let message = onlyProblem("(file)", in: yaml)
        assertContains(message, "line 3")
    }

    func testParse_DuplicateKey_NamesTheKey() {
        let yaml = Fixture.minimal(plus: "http:\n  endpoint: \":1\"\n  endpoint: \":2\"\n")
        let message = onlyProblem("(file)", in: yaml)
        assertContains(message, "duplicate key `endpoint`", "only once")
    }

    func testParse_TwoDocuments_Refused() {
        let message = onlyProblem("(file)", in: Fixture.minimal + "\n---\nlog: { level: info }\n")
        assertContains(message, "YAML syntax error", "another document")
    }

    func testParse_EmptyFile_ReportsEveryRequiredKey() {
        guard let error = refuse("") else { return }
        XCTAssertEqual(error.problems.map(\.key), ["tls.cert_file", "tls.key_file", "auth"])
    }

    func testParse_RootIsAList_OneFileProblem() {
        let message = onlyProblem("(file)", in: "- grpc\n- http\n")
        assertContains(message, "mapping of sections", "found a list")
    }

    private func makeTemporaryDirectory() throws -> String {
        let path = Paths.absolute(
            NSTemporaryDirectory() + "/proxyconfig-tests-" + UUID().uuidString, relativeTo: "/")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }
}
