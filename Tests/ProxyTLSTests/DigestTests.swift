import ProxyTLS
import XCTest

final class DigestTests: XCTestCase {
    private func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }

    func testSHA256_ABC_MatchesFIPS180Vector() {
        XCTAssertEqual(
            hex(Digest.sha256(Array("abc".utf8))),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    func testSHA256_Empty_MatchesKnownVector() {
        XCTAssertEqual(
            hex(Digest.sha256([UInt8]())),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    func testSHA256_AcceptsAnySequence() {
        XCTAssertEqual(Digest.sha256("abc".utf8), Digest.sha256([0x61, 0x62, 0x63]))
        XCTAssertEqual(Digest.sha256("abc".utf8).count, 32)
    }

    func testConstantTimeEquals_SameBytes_True() {
        XCTAssertTrue(ConstantTime.equals([1, 2, 3], [1, 2, 3]))
        XCTAssertTrue(ConstantTime.equals([], []))
    }

    func testConstantTimeEquals_DifferentBytes_False() {
        XCTAssertFalse(ConstantTime.equals([1, 2, 3], [1, 2, 4]))
        XCTAssertFalse(ConstantTime.equals([0, 2, 3], [1, 2, 3]))
    }

    func testConstantTimeEquals_DifferentLengths_False() {
        XCTAssertFalse(ConstantTime.equals([1, 2, 3], [1, 2]))
        XCTAssertFalse(ConstantTime.equals([], [0]))
        XCTAssertFalse(ConstantTime.equals([1, 2], [1, 2, 0]))
    }
}
