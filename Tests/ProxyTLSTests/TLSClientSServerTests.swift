import Foundation
import NIOCore
import NIOPosix
import ProxyTLS
import XCTest

/// What the client side saw, filled on the event loop and read by the test thread.
final class ClientObservations: @unchecked Sendable {
    private let lock = NSLock()
    private var _events: [TLSClientEvent] = []
    private var _errors: [any Error] = []
    private var _received = ""
    private let closed = DispatchSemaphore(value: 0)

    func record(_ event: TLSClientEvent) { lock.withLock { _events.append(event) } }
    func record(_ error: any Error) { lock.withLock { _errors.append(error) } }
    func append(_ text: String) { lock.withLock { _received += text } }
    func markClosed() { closed.signal() }
    func waitUntilClosed() -> Bool { closed.wait(timeout: .now() + 10) == .success }

    var events: [TLSClientEvent] { lock.withLock { _events } }
    var tlsErrors: [TLSError] { lock.withLock { _errors.compactMap { $0 as? TLSError } } }
    var received: String { lock.withLock { _received } }
}

/// Sends an HTTP/1.0 GET as soon as the channel is active (so it waits in the TLS handler's queue
/// until the handshake completes) and records the reply, events and errors.
final class HTTPGetHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let observations: ClientObservations
    private let host: String

    init(observations: ClientObservations, host: String) {
        self.observations = observations
        self.host = host
    }

    func channelActive(context: ChannelHandlerContext) {
        let request = context.channel.allocator.buffer(string: "GET / HTTP/1.0\r\nHost: \(host)\r\n\r\n")
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        observations.append(String(decoding: buffer.readableBytesView, as: UTF8.self))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSClientEvent { observations.record(event) }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        observations.record(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        observations.markClosed()
        context.fireChannelInactive()
    }
}

/// `TLSClientHandler` against `openssl s_server -www` on 127.0.0.1 (port chosen by s_server),
/// serving the RSA test chain for localhost / 127.0.0.1 issued through the test intermediate.
final class TLSClientSServerTests: XCTestCase {
    private var certs: TestCertificates!
    private var clients: ClientCertificates!
    private var group: MultiThreadedEventLoopGroup!
    private var sServer: OpenSSLProcess?
    private var port = 0

    override func setUpWithError() throws {
        signal(SIGPIPE, SIG_IGN)
        certs = try TestCertificates.load()
        clients = try ClientCertificates.load()
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    override func tearDownWithError() throws {
        sServer?.stop()
        try group.syncShutdownGracefully()
    }

    private func startSServer(_ extra: [String] = []) throws {
        let server = try OpenSSLProcess(
            [
                "s_server", "-accept", "127.0.0.1:0", "-www", "-cert", certs.rsaChain, "-key", certs.rsaKey,
                "-cert_chain", certs.directory + "/int.pem",
            ] + extra)
        sServer = server
        XCTAssertTrue(server.waitForOutput(containing: "ACCEPT 127.0.0.1:"), server.output)
        let line = try XCTUnwrap(server.output.split(separator: "\n").first { $0.hasPrefix("ACCEPT 127.0.0.1:") })
        port = try XCTUnwrap(Int(line.split(separator: ":").last ?? ""))
    }

    /// Connects with a fresh `TLSClientHandler` and waits until the channel closes.
    private func get(caFile: String?, serverHostname: String) throws -> ClientObservations {
        let context = try TLSClientContext(caFile: caFile)
        let observations = ClientObservations()
        let channel = try ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        TLSClientHandler(context: context, serverHostname: serverHostname))
                    try channel.pipeline.syncOperations.addHandler(
                        HTTPGetHandler(observations: observations, host: serverHostname))
                }
            }
            .connect(host: "127.0.0.1", port: port).wait()
        XCTAssertTrue(observations.waitUntilClosed(), "the connection did not close")
        try? channel.close().wait()
        return observations
    }

    func testTrustedCAMatchingName_HandshakeAndHTTPGetReply() throws {
        try startSServer()
        let seen = try get(caFile: certs.caFile, serverHostname: "localhost")
        XCTAssertEqual(seen.tlsErrors, [])
        XCTAssertEqual(seen.events, [.handshakeCompleted])
        XCTAssertTrue(seen.received.hasPrefix("HTTP/1.0 200 ok"), seen.received)
        // The whole status page (several records) arrived before s_server closed the connection.
        XCTAssertTrue(seen.received.contains("Ciphers supported in s_server binary"), String(seen.received.prefix(500)))
        XCTAssertTrue(seen.received.contains("</HTML>"), String(seen.received.suffix(300)))
    }

    /// s_server answers SNI "localhost" with its second certificate (issued by the clients' root
    /// CA) and a client without SNI with its first (the server test chain). A client trusting only
    /// the clients' root therefore succeeds by name and fails by IP address.
    func testSNI_ServerPicksCertificateByName() throws {
        try startSServer([
            "-servername", "localhost", "-cert2", clients.sniServer.cert, "-key2", clients.sniServer.key,
        ])
        let byName = try get(caFile: clients.caFile, serverHostname: "localhost")
        XCTAssertEqual(byName.tlsErrors, [])
        XCTAssertEqual(byName.events, [.handshakeCompleted])
        XCTAssertTrue(byName.received.hasPrefix("HTTP/1.0 200 ok"), byName.received)

        let byAddress = try get(caFile: clients.caFile, serverHostname: "127.0.0.1")
        XCTAssertEqual(byAddress.events, [])
        XCTAssertEqual(byAddress.tlsErrors.first?.kind, .peerVerification)
    }

    func testIPAddressName_VerifiedAgainstIPSAN() throws {
        try startSServer()
        let seen = try get(caFile: certs.caFile, serverHostname: "127.0.0.1")
        XCTAssertEqual(seen.tlsErrors, [])
        XCTAssertEqual(seen.events, [.handshakeCompleted])
        XCTAssertTrue(seen.received.hasPrefix("HTTP/1.0 200 ok"), seen.received)
    }

    func testWrongCA_PeerVerificationError() throws {
        try startSServer()
        let seen = try get(caFile: clients.caFile, serverHostname: "localhost")
        XCTAssertEqual(seen.events, [])
        XCTAssertEqual(seen.received, "")
        XCTAssertEqual(seen.tlsErrors.first?.kind, .peerVerification)
        XCTAssertEqual(
            seen.tlsErrors.first?.description, "server certificate rejected: unable to get local issuer certificate")
    }

    func testWrongHostname_PeerVerificationError() throws {
        try startSServer()
        let seen = try get(caFile: certs.caFile, serverHostname: "jwks.example.com")
        XCTAssertEqual(seen.events, [])
        XCTAssertEqual(seen.received, "")
        XCTAssertEqual(seen.tlsErrors.first?.kind, .peerVerification)
        XCTAssertEqual(seen.tlsErrors.first?.description, "server certificate rejected: hostname mismatch")
    }

    func testWrongIPAddress_PeerVerificationError() throws {
        try startSServer()
        let seen = try get(caFile: certs.caFile, serverHostname: "127.0.0.2")
        XCTAssertEqual(seen.events, [])
        XCTAssertEqual(seen.tlsErrors.first?.kind, .peerVerification)
        XCTAssertEqual(seen.tlsErrors.first?.description, "server certificate rejected: IP address mismatch")
    }

    func testSystemCAs_TestServerNotTrusted() throws {
        try startSServer()
        let seen = try get(caFile: nil, serverHostname: "localhost")
        XCTAssertEqual(seen.events, [])
        XCTAssertEqual(seen.tlsErrors.first?.kind, .peerVerification)
    }

    func testServerRequiresTLS13Only_ClientNegotiatesIt() throws {
        try startSServer(["-tls1_3"])
        let seen = try get(caFile: certs.caFile, serverHostname: "localhost")
        XCTAssertEqual(seen.events, [.handshakeCompleted])
        XCTAssertTrue(seen.received.contains("TLSv1.3"), String(seen.received.prefix(800)))
    }

    func testServerOffersOnlyTLS11_HandshakeError() throws {
        try startSServer(["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"])
        let seen = try get(caFile: certs.caFile, serverHostname: "localhost")
        XCTAssertEqual(seen.events, [])
        XCTAssertEqual(seen.tlsErrors.first?.kind, .handshake)
    }

    func testContext_MissingCAFile_InvalidTrustStore() {
        let missing = certs.directory + "/nope.pem"
        XCTAssertThrowsError(try TLSClientContext(caFile: missing)) { error in
            let error = error as? TLSError
            XCTAssertEqual(error?.kind, .invalidTrustStore)
            XCTAssertTrue(error?.description.contains(missing) ?? false, error?.description ?? "")
        }
    }

    func testContext_GarbageCAFile_InvalidTrustStore() {
        XCTAssertThrowsError(try TLSClientContext(caFile: certs.garbageFile)) { error in
            XCTAssertEqual((error as? TLSError)?.kind, .invalidTrustStore)
        }
    }

    func testContext_SystemDefaults_Load() {
        XCTAssertNoThrow(try TLSClientContext(caFile: nil))
    }
}
