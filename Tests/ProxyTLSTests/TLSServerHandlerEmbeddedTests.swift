import NIOCore
import NIOEmbedded
import ProxyTLS
import XCTest

/// In-memory tests of the handler's failure paths: no TLS client needed.
final class TLSServerHandlerEmbeddedTests: XCTestCase {
    private var channel: EmbeddedChannel!

    override func setUpWithError() throws {
        let certs = try TestCertificates.load()
        let context = try TLSServerContext(
            settings: TLSServerSettings(certificateChainFile: certs.rsaChain, privateKeyFile: certs.rsaKey))
        channel = EmbeddedChannel(handler: TLSServerHandler(context: context))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 4318)).wait()
    }

    override func tearDown() {
        _ = try? channel.finish()
        channel = nil
    }

    private func caughtTLSError() -> TLSError? {
        do {
            try channel.throwIfErrorCaught()
            return nil
        } catch let error as TLSError {
            return error
        } catch {
            XCTFail("unexpected error type: \(error)")
            return nil
        }
    }

    func testPlaintextHTTPRequest_HandshakeErrorAndClose() throws {
        XCTAssertThrowsError(try channel.writeInbound(ByteBuffer(string: "POST /v1/traces HTTP/1.1\r\nHost: x\r\n\r\n"))) {
            error in
            XCTAssertEqual((error as? TLSError)?.kind, .handshake)
            XCTAssertTrue((error as? TLSError)?.description.contains("http request") ?? false, "\(error)")
        }
        XCTAssertFalse(channel.isActive)
        XCTAssertNil(try channel.readInbound(as: ByteBuffer.self), "no cleartext may reach the next handler")
    }

    func testWriteBeforeHandshake_HandshakeFails_PromiseFailsWithHandshakeError() throws {
        let write = channel.writeAndFlush(ByteBuffer(string: "early response"))
        XCTAssertNil(try channel.readOutbound(as: ByteBuffer.self), "nothing may be sent before the handshake")
        XCTAssertThrowsError(try channel.writeInbound(ByteBuffer(repeating: 0x00, count: 64))) { error in
            XCTAssertEqual((error as? TLSError)?.kind, .handshake)
        }
        XCTAssertThrowsError(try write.wait()) { error in
            XCTAssertEqual((error as? TLSError)?.kind, .handshake)
        }
        XCTAssertFalse(channel.isActive)
    }

    func testEOFAfterPartialClientHello_UnexpectedEOF() throws {
        // A handshake record header announcing 512 bytes, then only the first body byte.
        try channel.writeInbound(ByteBuffer(bytes: [0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))
        XCTAssertNil(caughtTLSError(), "a partial ClientHello is not an error yet")
        XCTAssertTrue(channel.isActive)
        channel.pipeline.fireChannelInactive()
        XCTAssertEqual(caughtTLSError()?.kind, .unexpectedEOF)
    }

    func testEOFBeforeAnyBytes_NoError() throws {
        channel.pipeline.fireChannelInactive()
        XCTAssertNil(caughtTLSError(), "a connect-and-close probe is not a TLS failure")
    }

    func testCloseDuringHandshake_QueuedWriteFails() throws {
        let write = channel.write(ByteBuffer(string: "never sent"))
        try channel.close().wait()
        XCTAssertThrowsError(try write.wait())
        XCTAssertNil(try channel.readOutbound(as: ByteBuffer.self))
    }
}
