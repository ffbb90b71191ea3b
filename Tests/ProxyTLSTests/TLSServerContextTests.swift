import Foundation
import ProxyTLS
import XCTest

final class TLSServerContextTests: XCTestCase {
    private var certs: TestCertificates!

    override func setUpWithError() throws {
        certs = try TestCertificates.load()
    }

    private func loadError(cert: String, key: String, alpn: [String] = ["http/1.1"]) -> TLSError? {
        do {
            _ = try TLSServerContext(
                settings: TLSServerSettings(certificateChainFile: cert, privateKeyFile: key, alpnProtocols: alpn))
            return nil
        } catch {
            return error
        }
    }

    func testLoad_RSAChainWithPKCS8Key_Succeeds() throws {
        let settings = TLSServerSettings(certificateChainFile: certs.rsaChain, privateKeyFile: certs.rsaKey)
        let context = try TLSServerContext(settings: settings)
        XCTAssertEqual(context.settings, settings)
        XCTAssertEqual(context.settings.minimumVersion, .v1_2)
        XCTAssertEqual(context.settings.alpnProtocols, ["http/1.1"])
    }

    func testLoad_ECDSAChainWithTraditionalKey_Succeeds() throws {
        XCTAssertNoThrow(
            try TLSServerContext(
                settings: TLSServerSettings(
                    certificateChainFile: certs.ecdsaChain, privateKeyFile: certs.ecdsaKey, minimumVersion: .v1_3)))
    }

    func testLoad_CertificateNotAfter_IsLeafExpiry() throws {
        let context = try TLSServerContext(
            settings: TLSServerSettings(certificateChainFile: certs.rsaChain, privateKeyFile: certs.rsaKey))
        let notAfter = try XCTUnwrap(context.certificateNotAfter)
        // The fixtures are issued for 30 days from now.
        let days = notAfter.seconds(since: .now()) / 86_400
        XCTAssertGreaterThan(days, 29.9)
        XCTAssertLessThan(days, 30.1)
    }

    func testLoad_MissingCertFile_FileUnreadableNamingPath() {
        let missing = certs.directory + "/does-not-exist.pem"
        let error = loadError(cert: missing, key: certs.rsaKey)
        XCTAssertEqual(error?.kind, .fileUnreadable)
        XCTAssertTrue(error?.description.contains(missing) ?? false, error?.description ?? "no error")
        XCTAssertTrue(error?.description.contains("tls.cert_file") ?? false, error?.description ?? "no error")
    }

    func testLoad_MissingKeyFile_FileUnreadableNamingPath() {
        let missing = certs.directory + "/no-such.key"
        let error = loadError(cert: certs.rsaChain, key: missing)
        XCTAssertEqual(error?.kind, .fileUnreadable)
        XCTAssertTrue(error?.description.contains(missing) ?? false, error?.description ?? "no error")
        XCTAssertTrue(error?.description.contains("tls.key_file") ?? false, error?.description ?? "no error")
    }

    func testLoad_DirectoryAsCertFile_FileUnreadable() {
        XCTAssertEqual(loadError(cert: certs.directory, key: certs.rsaKey)?.kind, .fileUnreadable)
    }

    func testLoad_EmptyCertFile_InvalidPEMNamingPath() {
        let error = loadError(cert: certs.emptyFile, key: certs.rsaKey)
        XCTAssertEqual(error?.kind, .invalidPEM)
        XCTAssertTrue(error?.description.contains(certs.emptyFile) ?? false, error?.description ?? "no error")
    }

    func testLoad_GarbageCertFile_InvalidPEMNamingPath() {
        let error = loadError(cert: certs.garbageFile, key: certs.rsaKey)
        XCTAssertEqual(error?.kind, .invalidPEM)
        XCTAssertTrue(error?.description.contains(certs.garbageFile) ?? false, error?.description ?? "no error")
    }

    func testLoad_TruncatedCertFile_InvalidPEM() {
        let error = loadError(cert: certs.truncatedChain, key: certs.rsaKey)
        XCTAssertEqual(error?.kind, .invalidPEM)
        XCTAssertTrue(error?.description.contains(certs.truncatedChain) ?? false, error?.description ?? "no error")
    }

    func testLoad_GarbageKeyFile_InvalidPEMWithoutFileContents() throws {
        let error = loadError(cert: certs.rsaChain, key: certs.garbageFile)
        XCTAssertEqual(error?.kind, .invalidPEM)
        XCTAssertTrue(error?.description.contains(certs.garbageFile) ?? false, error?.description ?? "no error")
        XCTAssertFalse(error?.description.contains("this is not PEM") ?? true)
    }

    func testLoad_KeyFileGivenAsCertificate_InvalidPEM() {
        XCTAssertEqual(loadError(cert: certs.rsaKey, key: certs.rsaKey)?.kind, .invalidPEM)
    }

    func testLoad_UnrelatedRSAKey_KeyMismatch() {
        let error = loadError(cert: certs.rsaChain, key: certs.unrelatedRSAKey)
        XCTAssertEqual(error?.kind, .keyMismatch)
        XCTAssertTrue(error?.description.contains(certs.unrelatedRSAKey) ?? false, error?.description ?? "no error")
        XCTAssertFalse(error?.description.contains("PRIVATE KEY") ?? true)
    }

    func testLoad_ECDSAKeyForRSACertificate_KeyMismatch() {
        XCTAssertEqual(loadError(cert: certs.rsaChain, key: certs.ecdsaKey)?.kind, .keyMismatch)
    }

    func testLoad_EmptyALPNName_Configuration() {
        XCTAssertEqual(loadError(cert: certs.rsaChain, key: certs.rsaKey, alpn: ["h2", ""])?.kind, .configuration)
    }

    func testHolder_Replace_CurrentReturnsNewContext() throws {
        let first = try TLSServerContext(
            settings: TLSServerSettings(certificateChainFile: certs.rsaChain, privateKeyFile: certs.rsaKey))
        let second = try TLSServerContext(
            settings: TLSServerSettings(certificateChainFile: certs.ecdsaChain, privateKeyFile: certs.ecdsaKey))
        let holder = TLSServerContextHolder(first)
        XCTAssertTrue(holder.current === first)
        holder.replace(with: second)
        XCTAssertTrue(holder.current === second)
    }
}
