import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import ProxyConfig
import XCTest

@testable import ProxyCore

/// A temporary directory with a dev CA, a server certificate for 127.0.0.1 and a tokens file, made
/// with the openssl CLI at test time.
final class TestFiles {
    let directory: URL
    static let token = "test-token-0123456789abcdef0123"

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("otlp-auth-proxy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let script = """
            set -e
            openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
            openssl req -x509 -new -key ca.key -sha256 -days 2 -subj /CN=test-ca -out ca.crt 2>/dev/null
            openssl ecparam -name prime256v1 -genkey -noout -out server.key 2>/dev/null
            openssl req -new -key server.key -subj /CN=localhost -out server.csr 2>/dev/null
            printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext.cnf
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -sha256 -extfile ext.cnf -out server.crt 2>/dev/null
            """
        let result = try runProcess("/bin/sh", ["-c", script], in: directory)
        XCTAssertEqual(result.status, 0, result.stderr)
        try """
            tokens:
              - principal: ci-runner
                tenant: team-a
                token: "\(Self.token)"
            """.write(to: directory.appendingPathComponent("tokens.yaml"), atomically: true, encoding: .utf8)
    }

    deinit {
        try? FileManager.default.removeItem(at: directory)
    }

    var caFile: String { directory.appendingPathComponent("ca.crt").path }

    func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// A configuration with both listeners on port 0, pointing at `upstreamPort`.
    func configuration(upstreamPort: Int, extra: String = "") throws -> ProxyConfiguration {
        let yaml = """
            grpc: { endpoint: "127.0.0.1:0" }
            http: { endpoint: "127.0.0.1:0", max_request_body_size: 1MiB }
            tls: { cert_file: server.crt, key_file: server.key }
            upstream: { grpc: "127.0.0.1:\(upstreamPort)", http: "127.0.0.1:\(upstreamPort)", timeout: 2s, connect_timeout: 1s }
            auth: { bearer: { tokens_file: tokens.yaml } }
            \(extra)
            """
        return try ProxyConfiguration.parse(yaml: yaml, directory: directory.path)
    }
}

struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

@discardableResult
func runProcess(_ executable: String, _ arguments: [String], in directory: URL? = nil, stdin: Data? = nil) throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = directory }
    let out = Pipe()
    let err = Pipe()
    let input = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(stdin) }
    try input.fileHandleForWriting.close()
    // Read both pipes before waiting so a full pipe cannot block the child.
    let errData = NIOLockedValueBox(Data())
    let errThread = Thread { errData.withLockedValue { $0 = err.fileHandleForReading.readDataToEndOfFile() } }
    errThread.start()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    while errThread.isExecuting || !errThread.isFinished { usleep(1000) }
    return ProcessResult(
        status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
        stderr: String(decoding: errData.withLockedValue { $0 }, as: UTF8.self))
}

/// A plaintext HTTP/1.1 receiver that records what reaches it, standing in for the OTLP receiver.
final class RecordingUpstream: Sendable {
    enum Behaviour: Sendable {
        case respond(status: HTTPResponseStatus, body: String)
        /// A chunked response, one chunk per part.
        case respondChunked(status: HTTPResponseStatus, parts: [String])
        /// An HTTP/1.0 response without a length: the close ends its body.
        case respondUntilClose(status: HTTPResponseStatus, body: String)
        /// Reads the request, then closes without a response.
        case closeWithoutResponse
        /// Reads the request and never answers.
        case stall
    }

    struct Request: Sendable {
        var head: HTTPRequestHead
        var body: [UInt8]
    }

    let behaviour: Behaviour
    private let state = NIOLockedValueBox<(requests: [Request], connections: Int)>(([], 0))
    private let group: any EventLoopGroup
    private let channel = NIOLockedValueBox<(any Channel)?>(nil)

    init(group: any EventLoopGroup, behaviour: Behaviour = .respond(status: .ok, body: "")) {
        self.group = group
        self.behaviour = behaviour
    }

    var requests: [Request] { state.withLockedValue { $0.requests } }
    var connections: Int { state.withLockedValue { $0.connections } }

    func start() async throws -> Int {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                state.withLockedValue { $0.connections += 1 }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(upstream: self))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        self.channel.withLockedValue { $0 = channel }
        return channel.localAddress!.port!
    }

    func stop() async {
        try? await channel.withLockedValue { $0 }?.close()
    }

    fileprivate func record(_ request: Request) {
        state.withLockedValue { $0.requests.append(request) }
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let upstream: RecordingUpstream
        var head: HTTPRequestHead?
        var body: [UInt8] = []

        init(upstream: RecordingUpstream) { self.upstream = upstream }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body = []
            case .body(let buffer):
                body += Array(buffer.readableBytesView)
            case .end:
                upstream.record(Request(head: head!, body: body))
                switch upstream.behaviour {
                case .respond(let status, let text):
                    var headers = HTTPHeaders([("Content-Type", "application/x-protobuf"), ("Content-Length", "\(text.utf8.count)")])
                    headers.add(name: "X-Upstream", value: "recording")
                    context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
                    context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
                    context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                case .respondChunked(let status, let parts):
                    let headers = HTTPHeaders([("Content-Type", "application/x-protobuf")])
                    context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
                    for part in parts {
                        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: part)))), promise: nil)
                    }
                    context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                case .respondUntilClose(let status, let text):
                    let headers = HTTPHeaders([("Content-Type", "application/x-protobuf")])
                    context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_0, status: status, headers: headers))), promise: nil)
                    context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
                    context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                case .closeWithoutResponse:
                    context.close(promise: nil)
                case .stall:
                    break
                }
            }
        }
    }
}

/// The proxy running in this process, in front of `upstreamPort`.
final class RunningProxy {
    let server: ProxyServer
    let httpPort: Int
    let grpcPort: Int

    init(configuration: ProxyConfiguration, group: any EventLoopGroup) async throws {
        let runtime = try ProxyRuntime(configuration: configuration)
        server = try ProxyServer(runtime: runtime, group: group, logger: Logger(label: "test"))
        let bound = try await server.start()
        httpPort = bound.http.port!
        grpcPort = bound.grpc.port!
    }

    func stop() async {
        await server.shutdown()
    }
}

/// curl's view of one exchange.
struct CurlResult {
    var status: Int
    var headers: [String: [String]]
    var body: String
    var exitCode: Int32
}

/// Runs curl; HTTP/1.1 unless the arguments ask for `--http2` (curl would otherwise pick h2 by ALPN).
func curl(_ arguments: [String], caFile: String) throws -> CurlResult {
    let version = arguments.contains("--http2") ? [] : ["--http1.1"]
    let result = try runProcess(
        "/usr/bin/curl",
        ["-sS", "--cacert", caFile, "-D", "/dev/stderr", "-o", "/dev/stdout", "--max-time", "10"] + version + arguments)
    var status = 0
    var headers: [String: [String]] = [:]
    for line in result.stderr.split(whereSeparator: \.isNewline) {
        if line.hasPrefix("HTTP/") {
            status = Int(line.split(separator: " ")[1]) ?? 0
            headers = [:]
        } else if let colon = line.firstIndex(of: ":") {
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            headers[name, default: []].append(value)
        }
    }
    return CurlResult(status: status, headers: headers, body: result.stdout, exitCode: result.status)
}

/// Waits up to five seconds for `condition`, then asserts it: for state the proxy updates after the
/// client has already seen its answer, such as a connection slot freed when the server side closes.
func waitUntil(
    _ what: String, file: StaticString = #filePath, line: UInt = #line, _ condition: () -> Bool
) async throws {
    for _ in 0..<200 where !condition() {
        try await Task.sleep(for: .milliseconds(25))
    }
    XCTAssertTrue(condition(), what, file: file, line: line)
}
