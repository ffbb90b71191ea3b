import NIOCore
import NIOEmbedded
import ProxyTLS
import XCTest

/// A client and a server handler back to back in memory: OpenSSL reads ciphertext from the handler's own
/// buffers, so however the socket cuts or joins records (a byte at a time, many records at once),
/// both sides must get every cleartext byte, in order.
final class TLSCiphertextDeliveryTests: XCTestCase {
    private func pair() throws -> (client: EmbeddedChannel, server: EmbeddedChannel) {
        let certs = try TestCertificates.load()
        let serverContext = try TLSServerContext(
            settings: TLSServerSettings(certificateChainFile: certs.rsaChain, privateKeyFile: certs.rsaKey))
        let server = EmbeddedChannel(handler: TLSServerHandler(context: serverContext))
        try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 4318)).wait()
        let client = EmbeddedChannel(handler: TLSClientHandler(context: try TLSClientContext(caFile: certs.caFile), serverHostname: "localhost"))
        try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 4318)).wait()
        return (client, server)
    }

    /// Moves ciphertext both ways until neither side writes more; `piece` cuts every write into
    /// parts of that many bytes (nil: as written, joined into one buffer per direction and round).
    private func pump(_ client: EmbeddedChannel, _ server: EmbeddedChannel, piece: Int?) throws {
        for _ in 0..<100 {
            var moved = false
            for (from, to) in [(client, server), (server, client)] {
                var joined = ByteBuffer()
                while var out = try from.readOutbound(as: ByteBuffer.self) { joined.writeBuffer(&out) }
                guard joined.readableBytes > 0 else { continue }
                moved = true
                if let piece {
                    while joined.readableBytes > 0 {
                        try to.writeInbound(joined.readSlice(length: min(piece, joined.readableBytes))!)
                    }
                } else {
                    try to.writeInbound(joined)
                }
            }
            if !moved { return }
        }
        XCTFail("the handlers kept talking")
    }

    private func cleartext(_ channel: EmbeddedChannel) throws -> [UInt8] {
        var all: [UInt8] = []
        while let part = try channel.readInbound(as: ByteBuffer.self) { all += part.readableBytesView }
        return all
    }

    func testEveryByteArrives_WhateverTheCutsOfTheCiphertext() throws {
        let request = (0..<40_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let response = Array("response".utf8)
        for piece in [1, 7, 5, 1000, nil] as [Int?] {
            let (client, server) = try pair()
            try pump(client, server, piece: piece)
            // Several writes, so several records (one is past the 16 KiB record limit) travel together.
            client.write(ByteBuffer(bytes: request[0..<100]), promise: nil)
            client.write(ByteBuffer(bytes: request[100..<30_000]), promise: nil)
            client.writeAndFlush(ByteBuffer(bytes: request[30_000...]), promise: nil)
            try pump(client, server, piece: piece)
            XCTAssertEqual(try cleartext(server), request, "pieces of \(piece.map(String.init) ?? "any") bytes")
            server.writeAndFlush(ByteBuffer(bytes: response), promise: nil)
            try pump(client, server, piece: piece)
            XCTAssertEqual(try cleartext(client), response, "pieces of \(piece.map(String.init) ?? "any") bytes")
            _ = try? client.finish()
            _ = try? server.finish()
        }
    }
}
