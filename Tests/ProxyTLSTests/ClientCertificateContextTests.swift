import Foundation
import ProxyTLS
import XCTest

/// Loading the client-certificate trust settings: what `TLSServerContext` refuses, and the key
/// and file each error names.
final class ClientCertificateContextTests: XCTestCase {
    private var server: TestCertificates!
    private var clients: ClientCertificates!

    override func setUpWithError() throws {
        server = try TestCertificates.load()
        clients = try ClientCertificates.load()
    }

    private func loadError(
        caFile: String?, clientAuth: TLSClientAuth = .require, crlFile: String? = nil, verifyDepth: Int = 4
    ) -> TLSError? {
        do {
            _ = try TLSServerContext(
                settings: TLSServerSettings(
                    certificateChainFile: server.rsaChain, privateKeyFile: server.rsaKey,
                    clientCAFile: caFile, clientAuth: clientAuth, crlFile: crlFile, verifyDepth: verifyDepth))
            return nil
        } catch {
            return error
        }
    }

    private func assertError(
        _ error: TLSError?, _ kind: TLSError.Kind, mentions parts: [String],
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertEqual(error?.kind, kind, error?.description ?? "no error", file: file, line: line)
        for part in parts {
            XCTAssertTrue(
                error?.description.contains(part) ?? false, "\"\(part)\" missing from: \(error?.description ?? "no error")",
                file: file, line: line)
        }
    }

    func testSettings_Defaults_NoClientCertificates() {
        let settings = TLSServerSettings(certificateChainFile: "c", privateKeyFile: "k")
        XCTAssertNil(settings.clientCAFile)
        XCTAssertEqual(settings.clientAuth, .none)
        XCTAssertNil(settings.crlFile)
        XCTAssertEqual(settings.verifyDepth, 4)
        XCTAssertEqual(TLSClientAuth(rawValue: "require"), .require)
        XCTAssertEqual(TLSClientAuth(rawValue: "request"), .request)
        XCTAssertEqual(TLSClientAuth(rawValue: "none"), TLSClientAuth.none)
    }

    func testLoad_CAFileAndCRLBundle_Succeeds() {
        XCTAssertNil(loadError(caFile: clients.caFile, crlFile: clients.crlFile))
        XCTAssertNil(loadError(caFile: clients.caFile, clientAuth: .request, verifyDepth: 1))
        XCTAssertNil(loadError(caFile: clients.caFile, clientAuth: .none, verifyDepth: 10))
    }

    func testLoad_RequireWithoutCAFile_ConfigurationErrorNamingKeys() {
        assertError(loadError(caFile: nil, clientAuth: .require), .configuration, mentions: ["tls.client_auth require", "tls.client_ca_file"])
        assertError(loadError(caFile: nil, clientAuth: .request), .configuration, mentions: ["tls.client_auth request"])
    }

    func testLoad_CRLWithoutCAFile_ConfigurationError() {
        assertError(
            loadError(caFile: nil, clientAuth: .none, crlFile: clients.crlFile), .configuration,
            mentions: ["tls.crl_file", "tls.client_ca_file"])
    }

    func testLoad_VerifyDepthOutOfRange_ConfigurationError() {
        assertError(loadError(caFile: clients.caFile, verifyDepth: 0), .configuration, mentions: ["tls.verify_depth 0", "1 to 10"])
        assertError(loadError(caFile: clients.caFile, verifyDepth: 11), .configuration, mentions: ["tls.verify_depth 11"])
    }

    func testLoad_MissingCAFile_InvalidTrustStoreNamingPath() {
        let missing = clients.directory + "/no-such-ca.pem"
        assertError(loadError(caFile: missing), .invalidTrustStore, mentions: ["tls.client_ca_file", missing, "cannot read"])
    }

    func testLoad_GarbageCAFile_InvalidTrustStore() {
        assertError(
            loadError(caFile: clients.garbageFile), .invalidTrustStore,
            mentions: ["tls.client_ca_file", clients.garbageFile, "no valid CA certificate"])
    }

    func testLoad_CAFileIsDirectory_InvalidTrustStore() {
        assertError(loadError(caFile: clients.directory), .invalidTrustStore, mentions: ["not a regular file"])
    }

    func testLoad_ExpiredCRL_InvalidTrustStoreNamingFileAndIssuer() {
        assertError(
            loadError(caFile: clients.caFile, crlFile: clients.expiredCRL), .invalidTrustStore,
            mentions: ["tls.crl_file", clients.expiredCRL, "expired", "Clients Root CA"])
    }

    func testLoad_GarbageCRL_InvalidTrustStore() {
        assertError(
            loadError(caFile: clients.caFile, crlFile: clients.garbageFile), .invalidTrustStore,
            mentions: ["tls.crl_file", clients.garbageFile, "no valid CRL"])
    }

    func testLoad_CRLFollowedByDamagedBlock_InvalidTrustStore() {
        assertError(
            loadError(caFile: clients.caFile, crlFile: clients.crlThenGarbage), .invalidTrustStore,
            mentions: ["tls.crl_file", "after CRL #1"])
    }

    func testLoad_MissingCRL_InvalidTrustStore() {
        let missing = clients.directory + "/no-such.crl"
        assertError(loadError(caFile: clients.caFile, crlFile: missing), .invalidTrustStore, mentions: ["tls.crl_file", missing])
    }

    func testLoad_CertificateAsCRL_InvalidTrustStore() {
        assertError(
            loadError(caFile: clients.caFile, crlFile: clients.good.cert), .invalidTrustStore,
            mentions: ["no valid CRL"])
    }
}
