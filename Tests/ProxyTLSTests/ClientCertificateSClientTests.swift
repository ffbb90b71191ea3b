import Foundation
import NIOCore
import NIOPosix
import ProxyTLS
import XCTest

/// Client certificate verification on real sockets (127.0.0.1 port 0): `openssl s_client -cert`
/// against `TLSServerHandler` with `tls.client_ca_file`. Each refusal asserts the TLS alert number
/// s_client reports (RFC 8446 §6: 40 handshake_failure, 42 bad_certificate, 43
/// unsupported_certificate, 44 certificate_revoked, 45 certificate_expired, 48 unknown_ca,
/// 116 certificate_required) and the `TLSError` the server reports.
final class ClientCertificateSClientTests: XCTestCase {
    private var server: TestCertificates!
    private var clients: ClientCertificates!
    private var group: MultiThreadedEventLoopGroup!
    private var serverChannel: Channel?
    private var observations: ServerObservations!
    private var port = 0

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

    private func settings(
        clientAuth: TLSClientAuth = .require, crlFile: String? = nil, verifyDepth: Int = 4
    ) -> TLSServerSettings {
        TLSServerSettings(
            certificateChainFile: server.rsaChain, privateKeyFile: server.rsaKey,
            clientCAFile: clients.caFile, clientAuth: clientAuth, crlFile: crlFile, verifyDepth: verifyDepth)
    }

    private func startServer(_ settings: TLSServerSettings) throws {
        let context = try TLSServerContext(settings: settings)
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
        port = try XCTUnwrap(channel.localAddress?.port)
    }

    private func connect(
        _ client: ClientCertificates.Client?, _ extra: [String] = [], message: String
    ) throws -> SClientResult {
        var arguments = extra
        if let client {
            arguments += ["-cert", client.cert, "-key", client.key]
            if let chain = client.chain { arguments += ["-cert_chain", chain] }
        }
        return try SClientResult.run(port: port, caFile: server.caFile, arguments: arguments, message: message)
    }

    /// The peer certificate from the single handshakeCompleted event, failing the test otherwise.
    private func acceptedPeer(_ result: SClientResult, message: String) throws -> PeerCertificate? {
        XCTAssertTrue(result.output.contains(message), "no echo:\n\(result.output)")
        XCTAssertNil(result.receivedAlert, result.output)
        XCTAssertEqual(observations.tlsErrors, [])
        let events = observations.events
        XCTAssertEqual(events.count, 1, "\(events)")
        guard case .handshakeCompleted(_, let peer, _)? = events.first else { return nil }
        return peer
    }

    /// Asserts a refused handshake: the alert s_client received, no echo, no handshake event, and
    /// a `.peerVerification` error whose description contains `reason`.
    private func assertRefused(
        _ result: SClientResult, alert: Int, reason: String, message: String,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertEqual(result.receivedAlert, alert, result.output, file: file, line: line)
        XCTAssertFalse(result.output.contains("\n" + message), result.output, file: file, line: line)
        XCTAssertNotEqual(result.status, 0, result.output, file: file, line: line)
        let error = observations.waitForTLSError()
        XCTAssertEqual(error?.kind, .peerVerification, "\(String(describing: error))", file: file, line: line)
        XCTAssertTrue(
            error?.description.contains(reason) ?? false, error?.description ?? "no server error",
            file: file, line: line)
        XCTAssertEqual(observations.events, [], file: file, line: line)
    }

    private func derFingerprint(_ pemPath: String) throws -> [UInt8] {
        let process = try OpenSSLProcess(["x509", "-in", pemPath, "-noout", "-fingerprint", "-sha256"])
        XCTAssertEqual(process.finish(), 0)
        // "sha256 Fingerprint=AB:CD:..." (the label's case differs between OpenSSL versions)
        let hex = try XCTUnwrap(process.output.split(separator: "=").last)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return hex.split(separator: ":").compactMap { UInt8($0, radix: 16) }
    }

    // MARK: Accepted certificates

    func testRequire_GoodClientTLS13_PeerCertificateFields() throws {
        try startServer(settings())
        let result = try connect(clients.good, ["-tls1_3"], message: "ping-good13-41d2")
        XCTAssertEqual(result.status, 0, result.output)
        let peer = try XCTUnwrap(try acceptedPeer(result, message: "ping-good13-41d2"))
        XCTAssertEqual(peer.subjectCommonName, "collector-1")
        XCTAssertEqual(peer.uris, ["spiffe://prod.example/ns/otel/sa/collector"])
        XCTAssertEqual(peer.dnsNames, ["collector-1.clients.example.com", "alt.clients.example.com"])
        let days = try XCTUnwrap(peer.notAfter).seconds(since: .now()) / 86_400
        XCTAssertGreaterThan(days, 29.9)
        XCTAssertLessThan(days, 30.1)
        XCTAssertEqual(peer.sha256Fingerprint.count, 32)
        XCTAssertEqual(peer.sha256Fingerprint, try derFingerprint(clients.good.cert))
    }

    func testRequire_GoodClientTLS12_PeerCertificateSeen() throws {
        try startServer(settings())
        let result = try connect(clients.good, ["-tls1_2"], message: "ping-good12-7a03")
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("Protocol  : TLSv1.2"), result.output)
        let peer = try acceptedPeer(result, message: "ping-good12-7a03")
        XCTAssertEqual(peer?.subjectCommonName, "collector-1")
    }

    func testRequire_CertificateRequestNamesTheClientCA() throws {
        try startServer(settings())
        let result = try connect(clients.good, message: "ping-canames-2b90")
        let names = try XCTUnwrap(result.output.range(of: "Acceptable client certificate CA names"), result.output)
        let following = result.output[names.upperBound...].prefix(200)
        XCTAssertTrue(following.contains("CN = Clients Root CA"), String(following))
        XCTAssertFalse(following.contains("Other CA"), String(following))
    }

    func testRequire_ChainThroughIntermediateWithCRLs_Accepted() throws {
        try startServer(settings(crlFile: clients.crlFile))
        let result = try connect(clients.viaIntermediate, message: "ping-via-int-5c77")
        XCTAssertEqual(result.status, 0, result.output)
        let peer = try acceptedPeer(result, message: "ping-via-int-5c77")
        XCTAssertEqual(peer?.uris, ["spiffe://prod.example/ns/otel/sa/via-int"])
        XCTAssertEqual(peer?.subjectCommonName, "via-intermediate")
    }

    func testRequire_NoSAN_CommonNameOnly() throws {
        try startServer(settings())
        let result = try connect(clients.cnOnly, message: "ping-cn-only-0e4f")
        let peer = try XCTUnwrap(try acceptedPeer(result, message: "ping-cn-only-0e4f"))
        XCTAssertEqual(peer.subjectCommonName, "cn-only-client")
        XCTAssertEqual(peer.dnsNames, [])
        XCTAssertEqual(peer.uris, [])
    }

    func testRequire_SPIFFEURIOnly_NoCommonName() throws {
        try startServer(settings())
        let result = try connect(clients.spiffeOnly, message: "ping-spiffe-93aa")
        let peer = try XCTUnwrap(try acceptedPeer(result, message: "ping-spiffe-93aa"))
        XCTAssertNil(peer.subjectCommonName)
        XCTAssertEqual(peer.uris, ["spiffe://prod.example/ns/otel/sa/spiffe-only"])
        XCTAssertEqual(peer.dnsNames, [])
    }

    /// X509_STRICT is off on purpose: it would refuse leaves without an authority key identifier,
    /// which other TLS stacks accept and older private-CA tooling still issues.
    func testRequire_LeafWithoutKeyIdentifiers_Accepted() throws {
        try startServer(settings())
        let result = try connect(clients.noKeyIdentifiers, message: "ping-nokeyid-61b8")
        let peer = try acceptedPeer(result, message: "ping-nokeyid-61b8")
        XCTAssertEqual(peer?.subjectCommonName, "no-keyid-client")
    }

    func testRequest_NoCertificate_HandshakeSucceedsWithoutPeer() throws {
        try startServer(settings(clientAuth: .request))
        let result = try connect(nil, message: "ping-request-none-1f2e")
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("ping-request-none-1f2e"), result.output)
        XCTAssertEqual(observations.events, [.handshakeCompleted(negotiatedProtocol: nil, peerCertificate: nil, peerChain: nil)])
        XCTAssertEqual(observations.tlsErrors, [])
    }

    func testRequest_GoodCertificate_PeerSeen() throws {
        try startServer(settings(clientAuth: .request))
        let result = try connect(clients.good, message: "ping-request-good-a7d1")
        let peer = try acceptedPeer(result, message: "ping-request-good-a7d1")
        XCTAssertEqual(peer?.subjectCommonName, "collector-1")
    }

    func testNone_WithCAFile_CertificateNotRequestedPeerNil() throws {
        try startServer(settings(clientAuth: .none))
        let result = try connect(clients.good, message: "ping-none-4410")
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("ping-none-4410"), result.output)
        XCTAssertFalse(result.output.contains("Acceptable client certificate CA names"), result.output)
        XCTAssertEqual(observations.events, [.handshakeCompleted(negotiatedProtocol: nil, peerCertificate: nil, peerChain: nil)])
    }

    // MARK: Session resumption

    /// Connects once with `-sess_out`; s_client writes the file only when the server gave it a
    /// resumable session. If there is one, connects again with `-sess_in` and returns that output.
    private func reconnectWithSavedSession(_ version: String, client: ClientCertificates.Client?) throws -> String? {
        let session = clients.directory + "/session-\(UUID().uuidString).pem"
        var base = [version]
        if let client { base += ["-cert", client.cert, "-key", client.key] }
        let first = try SClientResult.run(
            port: port, caFile: server.caFile, arguments: base + ["-sess_out", session], message: "ping-sess-1-\(version)")
        XCTAssertTrue(first.output.contains("ping-sess-1-\(version)"), first.output)
        guard FileManager.default.fileExists(atPath: session) else { return nil }
        let second = try SClientResult.run(
            port: port, caFile: server.caFile, arguments: base + ["-sess_in", session], message: "ping-sess-2-\(version)")
        XCTAssertTrue(second.output.contains("ping-sess-2-\(version)"), second.output)
        return second.output
    }

    /// A resumed session would skip chain verification (expiry, a newer CRL), so with client
    /// certificates the server hands out no resumable session (no tickets, no session cache) and
    /// every connection is a full handshake that sees the certificate again.
    func testRequire_SessionsNotResumed() throws {
        try startServer(settings())
        var handshakes = 0
        for version in ["-tls1_2", "-tls1_3"] {
            handshakes += 1
            if let output = try reconnectWithSavedSession(version, client: clients.good) {
                handshakes += 1
                XCTAssertTrue(output.contains("\nNew, TLSv1."), output)
                XCTAssertFalse(output.contains("\nReused, "), output)
            }
        }
        let peers = observations.events.map { event -> String? in
            guard case .handshakeCompleted(_, let peer, _) = event else { return nil }
            return peer?.subjectCommonName
        }
        XCTAssertEqual(peers, Array(repeating: "collector-1", count: handshakes))
    }

    /// Control for the test above: without client certificates the same s_client runs resume.
    func testNoClientCA_SessionsResumed() throws {
        try startServer(TLSServerSettings(certificateChainFile: server.rsaChain, privateKeyFile: server.rsaKey))
        for version in ["-tls1_2", "-tls1_3"] {
            let output = try XCTUnwrap(try reconnectWithSavedSession(version, client: nil), "no resumable session")
            XCTAssertTrue(output.contains("\nReused, TLSv1."), output)
        }
    }

    // MARK: Refused certificates and their alerts

    func testRequire_ExpiredTLS13_CertificateExpiredAlert() throws {
        try startServer(settings())
        let result = try connect(clients.expired, ["-tls1_3"], message: "ping-expired13")
        assertRefused(result, alert: 45, reason: "client certificate rejected: certificate has expired", message: "ping-expired13")
    }

    func testRequire_ExpiredTLS12_CertificateExpiredAlert() throws {
        try startServer(settings())
        let result = try connect(clients.expired, ["-tls1_2"], message: "ping-expired12")
        assertRefused(result, alert: 45, reason: "certificate has expired", message: "ping-expired12")
    }

    /// OpenSSL maps "not yet valid" to bad_certificate (42), not certificate_expired.
    func testRequire_NotYetValid_BadCertificateAlert() throws {
        try startServer(settings())
        let result = try connect(clients.notYetValid, message: "ping-future")
        assertRefused(result, alert: 42, reason: "certificate is not yet valid", message: "ping-future")
    }

    func testRequire_UnknownCA_UnknownCAAlert() throws {
        try startServer(settings())
        let result = try connect(clients.otherCA, message: "ping-other-ca")
        assertRefused(result, alert: 48, reason: "unable to get local issuer certificate", message: "ping-other-ca")
    }

    func testRequire_RevokedByCRL_CertificateRevokedAlert() throws {
        try startServer(settings(crlFile: clients.crlFile))
        let result = try connect(clients.revoked, message: "ping-revoked")
        assertRefused(result, alert: 44, reason: "certificate revoked", message: "ping-revoked")
    }

    func testRequire_RevokedCertificateWithoutCRL_Accepted() throws {
        // Without tls.crl_file revocation is not checked: the same certificate is accepted.
        try startServer(settings())
        let result = try connect(clients.revoked, message: "ping-revoked-nocrl-6e55")
        XCTAssertEqual(try acceptedPeer(result, message: "ping-revoked-nocrl-6e55")?.subjectCommonName, "revoked-client")
    }

    func testRequire_ServerAuthOnlyEKU_UnsupportedCertificateAlert() throws {
        try startServer(settings())
        let result = try connect(clients.serverAuthOnly, message: "ping-server-eku")
        assertRefused(result, alert: 43, reason: "unsuitable certificate purpose", message: "ping-server-eku")
    }

    func testVerifyDepth1_ChainThroughIntermediate_UnknownCAAlert() throws {
        try startServer(settings(verifyDepth: 1))
        let result = try connect(clients.viaIntermediate, message: "ping-too-deep")
        assertRefused(result, alert: 48, reason: "certificate chain too long", message: "ping-too-deep")
    }

    func testVerifyDepth2_ChainThroughIntermediate_Accepted() throws {
        try startServer(settings(verifyDepth: 2))
        let result = try connect(clients.viaIntermediate, message: "ping-depth2-3c0d")
        XCTAssertNotNil(try acceptedPeer(result, message: "ping-depth2-3c0d"))
    }

    func testRequire_NoCertificateTLS13_CertificateRequiredAlert() throws {
        try startServer(settings())
        let result = try connect(nil, ["-tls1_3"], message: "ping-nocert13")
        assertRefused(result, alert: 116, reason: "client certificate rejected", message: "ping-nocert13")
    }

    func testRequire_NoCertificateTLS12_HandshakeFailureAlert() throws {
        try startServer(settings())
        let result = try connect(nil, ["-tls1_2"], message: "ping-nocert12")
        assertRefused(result, alert: 40, reason: "client certificate rejected", message: "ping-nocert12")
    }

    /// With `request` a client may send no certificate, but one it does send must verify.
    func testRequest_ExpiredCertificate_StillRefused() throws {
        try startServer(settings(clientAuth: .request))
        let result = try connect(clients.expired, message: "ping-request-expired")
        assertRefused(result, alert: 45, reason: "certificate has expired", message: "ping-request-expired")
    }

    func testCRL_IssuerWithoutCRL_UnknownCAAlert() throws {
        // CRL_CHECK_ALL: a leaf from the root needs the root's CRL; only the intermediate's is loaded.
        try startServer(settings(crlFile: clients.intermediateCRLOnly))
        let result = try connect(clients.good, message: "ping-no-crl")
        assertRefused(result, alert: 48, reason: "unable to get certificate CRL", message: "ping-no-crl")
    }

    /// A CRL that was current at load and expires while the server runs makes verification fail
    /// (X509_V_ERR_CRL_HAS_EXPIRED, which OpenSSL reports with certificate_expired) until a
    /// reload brings a fresh CRL. Loading the expired CRL again is refused.
    func testCRL_ExpiresAfterLoad_FailsClosed() throws {
        let crl = try clients.makeShortLivedCRL(seconds: 4)
        let loadedAt = Date()
        try startServer(settings(crlFile: crl))
        let fresh = try connect(clients.good, message: "ping-crl-fresh-8b1c")
        // Only meaningful if the run finished before the CRL expired (it takes well under a second).
        if Date().timeIntervalSince(loadedAt) < 3.5 {
            XCTAssertTrue(fresh.output.contains("ping-crl-fresh-8b1c"), fresh.output)
            XCTAssertEqual(observations.tlsErrors, [])
        }

        Thread.sleep(until: loadedAt.addingTimeInterval(5.5))
        let stale = try connect(clients.good, message: "ping-crl-stale")
        XCTAssertEqual(stale.receivedAlert, 45, stale.output)
        XCTAssertFalse(stale.output.contains("\nping-crl-stale"), stale.output)
        let error = observations.waitForTLSError()
        XCTAssertEqual(error?.kind, .peerVerification)
        XCTAssertEqual(error?.description, "client certificate rejected: CRL has expired")

        XCTAssertThrowsError(try TLSServerContext(settings: settings(crlFile: crl))) { error in
            XCTAssertEqual((error as? TLSError)?.kind, .invalidTrustStore)
        }
    }
}
