import Foundation
import NIOCore
import NIOPosix
import ProxySystem
import ProxyTLS
import Synchronization
import XCTest

/// A client's chain kept from a real handshake (`openssl s_client -cert` against
/// `TLSServerHandler`) and verified again with `TLSServerContext.verify(_:at:)` against another
/// context, as a reload does: a CRL that now lists it, a trust store without its CA, a later time.
final class PeerChainVerifyTests: XCTestCase {
    private var server: TestCertificates!
    private var clients: ClientCertificates!
    private var group: MultiThreadedEventLoopGroup!
    private var serverChannel: Channel?
    private var observations: ServerObservations!

    override func setUpWithError() throws {
        signal(SIGPIPE, SIG_IGN)
        server = try TestCertificates.load()
        clients = try ClientCertificates.load()
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        observations = ServerObservations()
    }

    override func tearDownWithError() throws {
        try serverChannel?.close().wait()
        try group.syncShutdownGracefully()
    }

    private func context(caFile: String? = nil, crlFile: String? = nil, verifyDepth: Int = 4) throws -> TLSServerContext {
        try TLSServerContext(
            settings: TLSServerSettings(
                certificateChainFile: server.rsaChain, privateKeyFile: server.rsaKey,
                clientCAFile: caFile ?? clients.caFile, clientAuth: .require, crlFile: crlFile, verifyDepth: verifyDepth))
    }

    /// The certificate and chain `client` presents in a handshake with a server using `context`.
    private func handshake(
        _ client: ClientCertificates.Client, with context: TLSServerContext
    ) throws -> (certificate: PeerCertificate, chain: PeerChain) {
        let observations = self.observations!
        let channel = try ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(TLSServerHandler(context: context))
                    try channel.pipeline.syncOperations.addHandler(EchoHandler(observations: observations))
                }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
        serverChannel = channel
        let port = try XCTUnwrap(channel.localAddress?.port)
        var arguments = ["-cert", client.cert, "-key", client.key]
        if let chain = client.chain { arguments += ["-cert_chain", chain] }
        let result = try SClientResult.run(port: port, caFile: server.caFile, arguments: arguments, message: "ping-chain")
        XCTAssertEqual(result.status, 0, result.output)
        let events = observations.events
        let peer = events.first.flatMap { event -> (PeerCertificate, PeerChain)? in
            guard case .handshakeCompleted(_, let certificate?, let chain?) = event else { return nil }
            return (certificate, chain)
        }
        return try XCTUnwrap(peer, "no peer certificate and chain in \(events)")
    }

    func testVerify_SameSettings_ValidUntilEarliestNotAfter() throws {
        let accepting = try context(crlFile: clients.crlFile)
        let peer = try handshake(clients.good, with: accepting)
        let now = WallTime.now()
        guard case .valid(let until?) = try context(crlFile: clients.crlFile).verify(peer.chain, at: now) else {
            return XCTFail("not valid")
        }
        // The leaf and the root CA were both made for 30 days: the earlier of the two.
        let leafNotAfter = try XCTUnwrap(peer.certificate.notAfter)
        XCTAssertLessThanOrEqual(until, leafNotAfter)
        XCTAssertGreaterThan(until.seconds(since: now), 29.9 * 86_400)
        XCTAssertEqual(peer.chain.validUntil, until)
    }

    func testVerify_ChainWithIntermediate_IntermediateKeptFromHandshake() throws {
        let peer = try handshake(clients.viaIntermediate, with: try context(crlFile: clients.crlFile))
        guard case .valid = try context(crlFile: clients.crlFile).verify(peer.chain, at: .now()) else {
            return XCTFail("the chain sent with its intermediate must verify again")
        }
        // Depth 1 allows only leaves issued straight by a configured CA.
        guard case .untrusted(let reason) = try context(verifyDepth: 1).verify(peer.chain, at: .now()) else {
            return XCTFail("a chain too deep for the new verify_depth must fail")
        }
        XCTAssertTrue(reason.contains("too long"), reason)
    }

    func testVerify_NewCRLListsLeaf_Revoked() throws {
        // Accepted by a context without CRLs, then judged by one whose CRL lists it.
        let peer = try handshake(clients.revoked, with: try context())
        XCTAssertEqual(try context(crlFile: clients.crlFile).verify(peer.chain, at: .now()), .revoked)
        guard case .valid = try context().verify(peer.chain, at: .now()) else {
            return XCTFail("without a CRL the chain stays valid")
        }
    }

    func testVerify_CAReplaced_Untrusted() throws {
        let peer = try handshake(clients.good, with: try context())
        guard case .untrusted(let reason) = try context(caFile: clients.otherCAFile).verify(peer.chain, at: .now()) else {
            return XCTFail("a chain whose CA is no longer configured must fail")
        }
        XCTAssertTrue(reason.contains("local issuer"), reason)
    }

    func testVerify_CRLForIntermediateOnly_UntrustedWithoutRootCRL() throws {
        // CRL checks fail closed: a leaf of the root with no root CRL cannot be checked.
        let peer = try handshake(clients.good, with: try context(crlFile: clients.crlFile))
        guard case .untrusted(let reason) = try context(crlFile: clients.intermediateCRLOnly).verify(peer.chain, at: .now())
        else { return XCTFail("no CRL for the issuer must fail") }
        XCTAssertTrue(reason.contains("CRL"), reason)
    }

    func testVerify_AfterNotAfter_Expired() throws {
        let peer = try handshake(clients.good, with: try context())
        let later = try XCTUnwrap(peer.chain.validUntil).adding(seconds: 1)
        XCTAssertEqual(try context().verify(peer.chain, at: later), .expired)
        guard case .valid = try context().verify(peer.chain, at: later.adding(seconds: -2)) else {
            return XCTFail("valid just before its notAfter")
        }
    }

    func testVerify_ContextWithoutClientCA_Untrusted() throws {
        let peer = try handshake(clients.good, with: try context())
        let plain = try TLSServerContext(
            settings: TLSServerSettings(certificateChainFile: server.rsaChain, privateKeyFile: server.rsaKey))
        XCTAssertFalse(plain.verifiesClientCertificates)
        guard case .untrusted = plain.verify(peer.chain, at: .now()) else { return XCTFail("no trust store, no trust") }
    }

    func testVerify_FromManyThreadsAtOnce_SameVerdicts() throws {
        let peer = try handshake(clients.revoked, with: try context())
        let withCRL = try context(crlFile: clients.crlFile)
        let without = try context()
        let chain = peer.chain
        let wrong = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 64) { index in
            let revokedNow = index % 2 == 0
            let verdict = (revokedNow ? withCRL : without).verify(chain, at: .now())
            let right: Bool
            switch verdict {
            case .revoked: right = revokedNow
            case .valid: right = !revokedNow
            case .expired, .untrusted: right = false
            }
            if !right { wrong.withLock { $0.append("\(index): \(verdict)") } }
        }
        XCTAssertEqual(wrong.withLock { $0 }, [])
    }
}
