import Foundation
import Logging
import NIOCore
import NIOPosix
import ProxyConfig
import XCTest

@testable import ProxyCore

/// Reload in this process: certificates, credentials and broken files, with openssl s_client and
/// curl as clients and a recording receiver behind the proxy.
final class ReloadTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var files: TestFiles!

    override func setUp() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        files = try TestFiles()
        // A second server certificate from the same CA, for rotations.
        let script = """
            set -e
            openssl ecparam -name prime256v1 -genkey -noout -out server2.key 2>/dev/null
            openssl req -new -key server2.key -subj /CN=localhost -out server2.csr 2>/dev/null
            openssl x509 -req -in server2.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -sha256 -extfile ext.cnf -out server2.crt 2>/dev/null
            cp server.crt server1.crt
            cp server.key server1.key
            """
        XCTAssertEqual(try runProcess("/bin/sh", ["-c", script], in: files.directory).status, 0)
    }

    override func tearDown() async throws {
        try await group.shutdownGracefully()
    }

    private func start(extra: String = "") async throws -> (RecordingUpstream, RunningProxy, ProxyConfiguration) {
        let upstream = RecordingUpstream(group: group, behaviour: .respond(status: .ok, body: "ok"))
        let port = try await upstream.start()
        let configuration = try files.configuration(upstreamPort: port, extra: extra)
        let proxy = try await RunningProxy(configuration: configuration, group: group)
        return (upstream, proxy, configuration)
    }

    /// The serial number of the certificate a new TLS handshake presents.
    private func presentedSerial(_ port: Int) throws -> String {
        let result = try runProcess(
            "/bin/sh",
            ["-c", "openssl s_client -connect 127.0.0.1:\(port) -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -serial"])
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private func serial(_ name: String) throws -> String {
        try runProcess("/usr/bin/openssl", ["x509", "-noout", "-serial", "-in", files.path(name)])
            .stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private func copy(_ source: String, to target: String) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: files.path(source)))
        try data.write(to: URL(fileURLWithPath: files.path(target)))
    }

    private func write(_ text: String, to name: String) throws {
        try text.write(toFile: files.path(name), atomically: true, encoding: .utf8)
    }

    private func post(_ port: Int, token: String = TestFiles.token) throws -> CurlResult {
        try curl(
            ["-H", "Authorization: Bearer \(token)", "-H", "Content-Type: application/x-protobuf", "-d", "x",
             "https://127.0.0.1:\(port)/v1/traces"], caFile: files.caFile)
    }

    func testReload_NewCertificate_NewHandshakesPresentIt() async throws {
        let (upstream, proxy, configuration) = try await start()
        let first = try serial("server1.crt")
        let second = try serial("server2.crt")
        XCTAssertNotEqual(first, second)
        XCTAssertEqual(try presentedSerial(proxy.httpPort), first)

        try copy("server2.crt", to: "server.crt")
        try copy("server2.key", to: "server.key")
        let reloaded = await proxy.server.reload(configuration: configuration)
        XCTAssertTrue(reloaded)
        XCTAssertEqual(try presentedSerial(proxy.httpPort), second, "new handshakes use the new certificate")
        XCTAssertEqual(try presentedSerial(proxy.grpcPort), second)
        XCTAssertEqual(try post(proxy.httpPort).status, 200)
        await proxy.stop()
        await upstream.stop()
    }

    func testReload_BrokenFiles_KeepServingOldCertificateAndTokens() async throws {
        let (upstream, proxy, configuration) = try await start()
        let original = try serial("server1.crt")
        let pem = try String(contentsOfFile: files.path("server2.crt"), encoding: .utf8)
        let cases: [(name: String, breakFiles: () throws -> Void)] = [
            ("half-written certificate", { try self.write(String(pem.prefix(pem.count / 2)), to: "server.crt") }),
            ("key of another certificate", { try self.copy("server2.key", to: "server.key") }),
            ("empty key file", { try self.write("", to: "server.key") }),
            ("tokens file missing", { try FileManager.default.removeItem(atPath: self.files.path("tokens.yaml")) }),
            ("tokens file not YAML", { try self.write("tokens: [\n  - {", to: "tokens.yaml") }),
        ]
        let tokens = try String(contentsOfFile: files.path("tokens.yaml"), encoding: .utf8)
        for (name, breakFiles) in cases {
            try breakFiles()
            let reloaded = await proxy.server.reload(configuration: configuration)
            XCTAssertFalse(reloaded, name)
            XCTAssertEqual(try presentedSerial(proxy.httpPort), original, name)
            XCTAssertEqual(try post(proxy.httpPort).status, 200, name)
            // Restore for the next case.
            try copy("server1.crt", to: "server.crt")
            try copy("server1.key", to: "server.key")
            try write(tokens, to: "tokens.yaml")
        }
        let repaired = await proxy.server.reload(configuration: configuration)
        XCTAssertTrue(repaired, "a reload succeeds again once the files are whole")
        await proxy.stop()
        await upstream.stop()
    }

    func testReloadFile_InvalidYAML_KeepsServing() async throws {
        let (upstream, proxy, _) = try await start()
        try write("tls: [\n", to: "proxy.yaml")
        let broken = await proxy.server.reload(configurationFile: files.path("proxy.yaml"))
        XCTAssertFalse(broken)
        let missing = await proxy.server.reload(configurationFile: files.path("absent.yaml"))
        XCTAssertFalse(missing)
        XCTAssertEqual(try post(proxy.httpPort).status, 200)
        await proxy.stop()
        await upstream.stop()
    }

    func testReload_NewTokensFile_NewTokenAcceptedOldRefused() async throws {
        let (upstream, proxy, configuration) = try await start()
        let newToken = "rotated-token-abcdefghijklmnopqrstuvwxyz"
        try write("tokens:\n  - { principal: ci-runner, tenant: team-c, token: \"\(newToken)\" }\n", to: "tokens.yaml")
        let reloaded = await proxy.server.reload(configuration: configuration)
        XCTAssertTrue(reloaded)
        XCTAssertEqual(try post(proxy.httpPort, token: newToken).status, 200)
        XCTAssertEqual(upstream.requests.last?.head.headers["x-scope-orgid"], ["team-c"])
        XCTAssertEqual(try post(proxy.httpPort).status, 401, "the old token is gone")
        await proxy.stop()
        await upstream.stop()
    }

    func testReload_ListenerEndpointChanged_KeepsOldListenersAndAppliesTheRest() async throws {
        let (upstream, proxy, configuration) = try await start()
        var changed = configuration
        changed.http.endpoint = Endpoint(host: "127.0.0.1", port: 1)
        changed.upstream.http = Endpoint(host: "127.0.0.1", port: 2)
        changed.http.maxRequestBodySize = 1
        let reloaded = await proxy.server.reload(configuration: changed)
        XCTAssertTrue(reloaded)
        XCTAssertEqual(proxy.server.runtime.configuration.http.endpoint, configuration.http.endpoint)
        XCTAssertEqual(proxy.server.runtime.configuration.upstream.http, configuration.upstream.http)
        // Still on the old port and the old receiver; the new body limit applies.
        XCTAssertEqual(try post(proxy.httpPort).status, 200)
        let large = try curl(
            ["-H", "Authorization: Bearer \(TestFiles.token)", "-d", "xx", "https://127.0.0.1:\(proxy.httpPort)/v1/traces"],
            caFile: files.caFile)
        XCTAssertEqual(large.status, 413)
        await proxy.stop()
        await upstream.stop()
    }

    func testWatcher_TokensFileRewritten_Reloads() async throws {
        let upstream = RecordingUpstream(group: group, behaviour: .respond(status: .ok, body: "ok"))
        let port = try await upstream.start()
        try write("""
            grpc: { endpoint: "127.0.0.1:0" }
            http: { endpoint: "127.0.0.1:0" }
            tls: { cert_file: server.crt, key_file: server.key }
            upstream: { grpc: "127.0.0.1:\(port)", http: "127.0.0.1:\(port)" }
            auth: { bearer: { tokens_file: tokens.yaml } }
            reload: { watch_interval: 100ms }
            """, to: "proxy.yaml")
        let configuration = try ProxyConfiguration.load(file: files.path("proxy.yaml"))
        let proxy = try await RunningProxy(configuration: configuration, group: group)
        let watcher = ConfigurationWatcher(
            server: proxy.server, configurationFile: files.path("proxy.yaml"), logger: Logger(label: "test"))
        let task = Task { try await watcher.run() }

        let newToken = "watched-token-abcdefghijklmnopqrstuvwxyz"
        try await Task.sleep(for: .milliseconds(300))
        try write("tokens:\n  - { principal: ci-runner, tenant: team-w, token: \"\(newToken)\" }\n", to: "tokens.yaml")
        var status = 0
        for _ in 0..<50 {
            status = try post(proxy.httpPort, token: newToken).status
            if status == 200 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        XCTAssertEqual(status, 200, "the watcher reloaded the rewritten tokens file")
        task.cancel()
        _ = try? await task.value
        await proxy.stop()
        await upstream.stop()
    }

    func testWatchedFiles_KubernetesSymlinkSwap_Detected() throws {
        // A mounted Secret: tls.crt -> ..data/tls.crt, ..data -> ..v1; an update writes ..v2 and
        // renames a new ..data link over the old one.
        let root = files.directory.appendingPathComponent("secret").path
        let manager = FileManager.default
        try manager.createDirectory(atPath: root + "/..v1", withIntermediateDirectories: true)
        try "one".write(toFile: root + "/..v1/tls.crt", atomically: true, encoding: .utf8)
        try manager.createSymbolicLink(atPath: root + "/..data", withDestinationPath: "..v1")
        try manager.createSymbolicLink(atPath: root + "/tls.crt", withDestinationPath: "..data/tls.crt")
        let configuration = ProxyConfiguration(
            tls: .init(certFile: root + "/tls.crt", keyFile: files.path("server.key")),
            auth: .init(bearer: .init(tokensFile: files.path("tokens.yaml"))))
        let configFile = files.path("server.crt")
        let before = WatchedFiles(configurations: [configuration], configurationFile: configFile)
        XCTAssertEqual(
            WatchedFiles(configurations: [configuration], configurationFile: configFile).changedPaths(since: before), [])

        try manager.createDirectory(atPath: root + "/..v2", withIntermediateDirectories: true)
        try "two".write(toFile: root + "/..v2/tls.crt", atomically: true, encoding: .utf8)
        try manager.createSymbolicLink(atPath: root + "/..data_tmp", withDestinationPath: "..v2")
        XCTAssertEqual(rename(root + "/..data_tmp", root + "/..data"), 0)
        let after = WatchedFiles(configurations: [configuration], configurationFile: configFile)
        XCTAssertEqual(after.changedPaths(since: before), [root + "/tls.crt"])
    }

    func testWatchedFiles_Paths_CoverEveryNamedFile() throws {
        let configuration = try ProxyConfiguration.parse(yaml: """
            tls: { cert_file: s.crt, key_file: s.key, client_ca_file: ca.crt, crl_file: ca.crl }
            auth:
              bearer: { tokens_file: tokens.yaml }
              basic: { htpasswd_file: users.htpasswd }
              jwt:
                providers:
                  - { name: a, issuer: "https://a", audiences: [x], algorithms: [ES256], jwks_file: a.json }
                  - { name: b, issuer: "https://b", audiences: [x], algorithms: [ES256], jwks_url: "https://b/keys", jwks_ca_file: b-ca.crt }
            tenant: { default: t }
            """, directory: "/etc/p")
        XCTAssertEqual(
            WatchedFiles.paths(of: configuration, configurationFile: "/etc/p/proxy.yaml"),
            ["/etc/p/proxy.yaml", "/etc/p/s.crt", "/etc/p/s.key", "/etc/p/ca.crt", "/etc/p/ca.crl", "/etc/p/tokens.yaml",
             "/etc/p/users.htpasswd", "/etc/p/a.json", "/etc/p/b-ca.crt"])
    }
}
