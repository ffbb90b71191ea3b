import NIOCore
import NIOEmbedded
import ProxyTLS
import XCTest

/// In-memory tests of the client handler's start and failure paths: no TLS server needed.
final class TLSClientHandlerEmbeddedTests: XCTestCase {
    private var context: TLSClientContext!

    override func setUpWithError() throws {
        context = try TLSClientContext(caFile: try TestCertificates.load().caFile)
    }

    /// The first outbound bytes once connected: a TLS handshake record carrying the ClientHello.
    private func clientHello(serverHostname: String) throws -> [UInt8] {
        let channel = EmbeddedChannel(handler: TLSClientHandler(context: context, serverHostname: serverHostname))
        defer { _ = try? channel.finish() }
        XCTAssertNil(try channel.readOutbound(as: ByteBuffer.self), "nothing may be sent before the connection")
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
        let hello = try XCTUnwrap(try channel.readOutbound(as: ByteBuffer.self), "no ClientHello on connect")
        return Array(hello.readableBytesView)
    }

    func testConnect_SendsClientHelloWithSNI() throws {
        let hello = try clientHello(serverHostname: "jwks.example.com")
        XCTAssertEqual(hello.first, 0x16, "a TLS handshake record")
        XCTAssertEqual(hello.dropFirst(5).first, 0x01, "a ClientHello")
        XCTAssertNotNil(hello.firstRange(of: Array("jwks.example.com".utf8)), "SNI missing")
    }

    func testConnect_IPAddress_NoSNI() throws {
        let hello = try clientHello(serverHostname: "127.0.0.1")
        XCTAssertEqual(hello.first, 0x16)
        XCTAssertNil(hello.firstRange(of: Array("127.0.0.1".utf8)), "an IP address must not be sent as SNI")
    }

    func testAddedToActiveChannel_SendsClientHelloAtOnce() throws {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
        try channel.pipeline.syncOperations.addHandler(TLSClientHandler(context: context, serverHostname: "localhost"))
        let hello = try XCTUnwrap(try channel.readOutbound(as: ByteBuffer.self))
        XCTAssertEqual(hello.readableBytesView.first, 0x16)
    }

    func testInvalidHostname_ConfigurationErrorAndClose() throws {
        for name in ["", "jwks.example.com\u{0}.evil.example"] {
            let channel = EmbeddedChannel()
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
            try channel.pipeline.syncOperations.addHandler(TLSClientHandler(context: context, serverHostname: name))
            XCTAssertThrowsError(try channel.throwIfErrorCaught()) { error in
                XCTAssertEqual((error as? TLSError)?.kind, .configuration, "\(error)")
            }
            XCTAssertNil(try channel.readOutbound(as: ByteBuffer.self), "no ClientHello for an invalid name")
            XCTAssertFalse(channel.isActive)
            _ = try? channel.finish()
        }
    }

    func testServerSendsGarbage_HandshakeErrorAndEarlyWriteFails() throws {
        let channel = EmbeddedChannel(handler: TLSClientHandler(context: context, serverHostname: "localhost"))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
        _ = try channel.readOutbound(as: ByteBuffer.self)
        let write = channel.writeAndFlush(ByteBuffer(string: "GET / HTTP/1.0\r\n\r\n"))
        XCTAssertThrowsError(try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 400 Bad Request\r\n\r\n"))) { error in
            XCTAssertEqual((error as? TLSError)?.kind, .handshake, "\(error)")
        }
        XCTAssertThrowsError(try write.wait())
        XCTAssertFalse(channel.isActive)
    }

    func testServerClosesDuringHandshake_UnexpectedEOF() throws {
        let channel = EmbeddedChannel(handler: TLSClientHandler(context: context, serverHostname: "localhost"))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
        _ = try channel.readOutbound(as: ByteBuffer.self)
        channel.pipeline.fireChannelInactive()
        XCTAssertThrowsError(try channel.throwIfErrorCaught()) { error in
            XCTAssertEqual((error as? TLSError)?.kind, .unexpectedEOF, "\(error)")
        }
        _ = try? channel.finish()
    }
}
