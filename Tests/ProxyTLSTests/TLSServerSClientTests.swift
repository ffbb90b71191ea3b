import Foundation
import NIOCore
import NIOPosix
import ProxyTLS
import XCTest

/// What the server side saw, filled from the event loop and read by the test thread.
final class ServerObservations: @unchecked Sendable {
    private let lock = NSLock()
    private var _events: [TLSServerEvent] = []
    private var _errors: [any Error] = []
    private var _echoWritesCompleted = 0

    func record(_ event: TLSServerEvent) { lock.withLock { _events.append(event) } }
    func record(_ error: any Error) { lock.withLock { _errors.append(error) } }
    func recordEchoWriteCompleted() { lock.withLock { _echoWritesCompleted += 1 } }

    /// Echo writes whose promise succeeded, polled for up to two seconds for at least `minimum`.
    func echoWritesCompleted(atLeast minimum: Int) -> Int {
        let deadline = Date().addingTimeInterval(2)
        var count = lock.withLock { _echoWritesCompleted }
        while count < minimum && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.02)
            count = lock.withLock { _echoWritesCompleted }
        }
        return count
    }
    var events: [TLSServerEvent] { lock.withLock { _events } }
    var tlsErrors: [TLSError] { lock.withLock { _errors.compactMap { $0 as? TLSError } } }

    /// Polls for up to two seconds: the server may log an error just after the client exits.
    func waitForTLSError() -> TLSError? {
        let deadline = Date().addingTimeInterval(2)
        while Date() < deadline {
            if let error = tlsErrors.first { return error }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return nil
    }
}

/// Echoes cleartext back; closes the connection after echoing a message containing "BYE".
final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let observations: ServerObservations

    init(observations: ServerObservations) { self.observations = observations }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenSuccess { [observations] in observations.recordEchoWriteCompleted() }
        context.write(wrapOutboundOut(buffer), promise: written)
        if buffer.getString(at: buffer.readerIndex, length: buffer.readableBytes)?.contains("BYE") == true {
            // The echo must still arrive, ahead of the close_notify.
            context.flush()
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSServerEvent { observations.record(event) }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        observations.record(error)
    }
}

/// Real sockets on 127.0.0.1 port 0, driven by `openssl s_client`.
final class TLSServerSClientTests: XCTestCase {
    private var certs: TestCertificates!
    private var group: MultiThreadedEventLoopGroup!
    private var serverChannel: Channel?
    private var observations: ServerObservations!
    private var port = 0

    override func setUpWithError() throws {
        signal(SIGPIPE, SIG_IGN)  // writing to an s_client that already exited must not kill the run
        certs = try TestCertificates.load()
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        observations = ServerObservations()
    }

    override func tearDownWithError() throws {
        try serverChannel?.close().wait()
        try group.syncShutdownGracefully()
    }

    private func rsaSettings(
        minimumVersion: TLSVersion = .v1_2, alpn: [String] = ["http/1.1"]
    ) -> TLSServerSettings {
        TLSServerSettings(
            certificateChainFile: certs.rsaChain, privateKeyFile: certs.rsaKey,
            minimumVersion: minimumVersion, alpnProtocols: alpn)
    }

    @discardableResult
    private func startServer(_ settings: TLSServerSettings) throws -> TLSServerContextHolder {
        let holder = TLSServerContextHolder(try TLSServerContext(settings: settings))
        try startServer(holder: holder)
        return holder
    }

    private func startServer(holder: TLSServerContextHolder) throws {
        let observations = self.observations!
        let channel = try ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(TLSServerHandler(context: holder.current))
                    try channel.pipeline.syncOperations.addHandler(EchoHandler(observations: observations))
                }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
        serverChannel = channel
        port = try XCTUnwrap(channel.localAddress?.port)
    }

    private struct SClientRun {
        var output: String
        var status: Int32
    }

    /// Runs `openssl s_client` against the server, sends `message` once connected, waits for the
    /// echo (or for s_client to exit), then closes stdin so s_client sends close_notify and exits.
    private func sClient(_ extraArguments: [String], message: String? = nil) throws -> SClientRun {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments =
            [
                "openssl", "s_client", "-connect", "127.0.0.1:\(port)", "-servername", "localhost",
                "-CAfile", certs.caFile, "-verify_return_error",
            ] + extraArguments
        let stdin = Pipe()
        let stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stdout

        let collected = ServerOutput()
        try process.run()
        let reader = Thread {
            while true {
                let data = stdout.fileHandleForReading.availableData
                if data.isEmpty { break }
                collected.append(data)
            }
            collected.finish()
        }
        reader.start()

        if let message {
            try? stdin.fileHandleForWriting.write(contentsOf: Data((message + "\n").utf8))
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning && !collected.text.contains(message) && Date() < deadline {
                Thread.sleep(forTimeInterval: 0.01)
            }
        }
        try? stdin.fileHandleForWriting.close()

        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.01)
        }
        if process.isRunning {
            process.terminate()
            XCTFail("s_client did not exit")
        }
        process.waitUntilExit()
        collected.waitUntilFinished()
        return SClientRun(output: collected.text, status: process.terminationStatus)
    }

    // MARK: Handshake, ALPN, echo

    func testSClientTLS13_RSA_HandshakeALPNAndEcho() throws {
        try startServer(rsaSettings())
        let run = try sClient(["-alpn", "http/1.1"], message: "ping-tls13-7f3a")
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.contains("Verify return code: 0 (ok)"), run.output)
        XCTAssertTrue(run.output.contains("ALPN protocol: http/1.1"), run.output)
        XCTAssertTrue(run.output.contains("TLSv1.3"), run.output)
        XCTAssertTrue(run.output.contains("ping-tls13-7f3a"), run.output)
        XCTAssertTrue(run.output.contains("CN = rsa-server"), run.output)
        XCTAssertEqual(observations.events, [.handshakeCompleted(negotiatedProtocol: "http/1.1", peerCertificate: nil, peerChain: nil)])
        XCTAssertEqual(observations.tlsErrors, [])
        // The echo's write promise completed once its ciphertext reached the socket.
        XCTAssertGreaterThanOrEqual(observations.echoWritesCompleted(atLeast: 1), 1)
    }

    func testSClientTLS12_ECDSA_ECDHESuiteAndEcho() throws {
        try startServer(
            TLSServerSettings(certificateChainFile: certs.ecdsaChain, privateKeyFile: certs.ecdsaKey))
        let run = try sClient(["-tls1_2", "-alpn", "http/1.1"], message: "ping-tls12-19c4")
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.contains("Protocol  : TLSv1.2"), run.output)
        XCTAssertTrue(run.output.contains("Cipher is ECDHE-ECDSA-"), run.output)
        XCTAssertTrue(run.output.contains("ALPN protocol: http/1.1"), run.output)
        XCTAssertTrue(run.output.contains("ping-tls12-19c4"), run.output)
        XCTAssertTrue(run.output.contains("CN = ecdsa-server"), run.output)
    }

    func testSClientTLS12_RSA_ServerPicksAESGCMWithECDHE() throws {
        try startServer(rsaSettings())
        let run = try sClient(["-tls1_2"], message: "ping-rsa12-8d21")
        XCTAssertEqual(run.status, 0, run.output)
        // Server preference puts ECDHE-RSA-AES128-GCM-SHA256 first for an RSA certificate.
        XCTAssertTrue(run.output.contains("Cipher is ECDHE-RSA-AES128-GCM-SHA256"), run.output)
        XCTAssertTrue(run.output.contains("ping-rsa12-8d21"), run.output)
    }

    func testSClient_LargeMessage_EchoedAcrossManyRecords() throws {
        try startServer(rsaSettings())
        // 60 KB cleartext spans several 16 KiB records in both directions.
        let message = String(repeating: "0123456789abcdef", count: 3_750) + "-end-5be1"
        let run = try sClient([], message: message)
        XCTAssertEqual(run.status, 0, String(run.output.suffix(2_000)))
        XCTAssertTrue(run.output.contains(message))
    }

    func testSClientALPN_ServerPreferenceWins() throws {
        try startServer(rsaSettings(alpn: ["h2", "http/1.1"]))
        let run = try sClient(["-alpn", "http/1.1,h2"], message: "ping-alpn-62e0")
        XCTAssertTrue(run.output.contains("ALPN protocol: h2"), run.output)
        XCTAssertEqual(observations.events, [.handshakeCompleted(negotiatedProtocol: "h2", peerCertificate: nil, peerChain: nil)])
    }

    func testSClientALPN_NoOverlap_HandshakeProceedsWithoutALPN() throws {
        try startServer(rsaSettings())
        let run = try sClient(["-alpn", "spdy/3"], message: "ping-noalpn-0b7d")
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.contains("No ALPN negotiated"), run.output)
        XCTAssertTrue(run.output.contains("ping-noalpn-0b7d"), run.output)
        XCTAssertEqual(observations.events, [.handshakeCompleted(negotiatedProtocol: nil, peerCertificate: nil, peerChain: nil)])
    }

    // MARK: Refusals

    func testSClientTLS11_Refused() throws {
        try startServer(rsaSettings())
        // SECLEVEL=0 lets the client really offer TLS 1.1, so the refusal is the server's.
        let run = try sClient(["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], message: "ping-tls11")
        XCTAssertNotEqual(run.status, 0, run.output)
        XCTAssertFalse(run.output.contains("ping-tls11"), run.output)
        XCTAssertEqual(observations.waitForTLSError()?.kind, .handshake)
        XCTAssertEqual(observations.events, [])
    }

    func testSClientTLS12_NonECDHECipher_Refused() throws {
        try startServer(rsaSettings())
        let run = try sClient(["-tls1_2", "-cipher", "AES128-SHA"], message: "ping-static-rsa")
        XCTAssertNotEqual(run.status, 0, run.output)
        XCTAssertFalse(run.output.contains("ping-static-rsa"), run.output)
        let error = observations.waitForTLSError()
        XCTAssertEqual(error?.kind, .handshake)
        XCTAssertTrue(error?.description.contains("no shared cipher") ?? false, error?.description ?? "no error")
    }

    func testSClientTLS12_DHECipher_Refused() throws {
        try startServer(rsaSettings())
        let run = try sClient(["-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"], message: "ping-dhe")
        XCTAssertNotEqual(run.status, 0, run.output)
        XCTAssertEqual(observations.waitForTLSError()?.kind, .handshake)
    }

    func testSClientMinimumTLS13_RefusesTLS12() throws {
        try startServer(rsaSettings(minimumVersion: .v1_3))
        let run = try sClient(["-tls1_2"], message: "ping-min13")
        XCTAssertNotEqual(run.status, 0, run.output)
        XCTAssertFalse(run.output.contains("ping-min13"), run.output)
        XCTAssertEqual(observations.waitForTLSError()?.kind, .handshake)
    }

    func testSClientMinimumTLS13_AcceptsTLS13() throws {
        try startServer(rsaSettings(minimumVersion: .v1_3))
        let run = try sClient(["-tls1_3"], message: "ping-min13-ok")
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.contains("ping-min13-ok"), run.output)
    }

    // MARK: Close and reload

    func testServerClose_SendsCloseNotify() throws {
        try startServer(rsaSettings())
        let run = try sClient([], message: "BYE-4c11")
        XCTAssertTrue(run.output.contains("BYE-4c11"), run.output)
        // s_client prints "closed" when it reads close_notify, and reports an unexpected EOF otherwise.
        XCTAssertTrue(run.output.contains("closed"), run.output)
        XCTAssertFalse(run.output.contains("unexpected eof"), run.output)
    }

    func testHolderReplace_NextHandshakePresentsNewCertificate() throws {
        let holder = try startServer(rsaSettings())
        let before = try sClient([], message: "ping-reload-1")
        XCTAssertTrue(before.output.contains("subject=CN = rsa-server"), before.output)

        holder.replace(
            with: try TLSServerContext(
                settings: TLSServerSettings(certificateChainFile: certs.ecdsaChain, privateKeyFile: certs.ecdsaKey)))
        let after = try sClient([], message: "ping-reload-2")
        XCTAssertEqual(after.status, 0, after.output)
        XCTAssertTrue(after.output.contains("subject=CN = ecdsa-server"), after.output)
        XCTAssertTrue(after.output.contains("ping-reload-2"), after.output)
    }
}

/// s_client's combined output, appended by a reader thread.
private final class ServerOutput: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    func append(_ chunk: Data) { lock.withLock { data.append(chunk) } }
    func finish() { done.signal() }
    func waitUntilFinished() { _ = done.wait(timeout: .now() + 10) }
    var text: String { lock.withLock { String(decoding: data, as: UTF8.self) } }
}
