import Foundation
import ProxySystem
import XCTest
import ProxySystem

/// The wall-clock type that replaced Foundation's `Date` in the products, and the file reader that
/// replaced `FileManager`: exact timestamp text (it appears in logs and error messages) and errors
/// that name the file.
final class WallTimeTests: XCTestCase {
    func testRFC3339_ExactText() {
        XCTAssertEqual(WallTime(secondsSince1970: 0).rfc3339, "1970-01-01T00:00:00Z")
        XCTAssertEqual(WallTime(secondsSince1970: 1_700_000_000.25).rfc3339, "2023-11-14T22:13:20Z")
        XCTAssertEqual(WallTime(secondsSince1970: 1_700_000_000.25).rfc3339Milliseconds, "2023-11-14T22:13:20.250Z")
        // Truncated, never rounded up into the next second.
        XCTAssertEqual(WallTime(secondsSince1970: 1_700_000_000.9999).rfc3339Milliseconds, "2023-11-14T22:13:20.999Z")
        // A leap day and the last second of a year.
        XCTAssertEqual(WallTime(secondsSince1970: 951_782_400).rfc3339, "2000-02-29T00:00:00Z")
        XCTAssertEqual(WallTime(secondsSince1970: 1_798_761_599.5).rfc3339Milliseconds, "2026-12-31T23:59:59.500Z")
        XCTAssertEqual(WallTime(secondsSince1970: 253_402_300_799).rfc3339, "9999-12-31T23:59:59Z")
        XCTAssertEqual("\(WallTime(secondsSince1970: 86_400))", "1970-01-02T00:00:00Z")
    }

    func testRFC3339_MatchesFoundationsISO8601Formatter() {
        let formatter = ISO8601DateFormatter()
        for seconds in [0, 1, 59, 86_399, 951_868_799, 1_234_567_890, 1_700_000_000, 2_147_483_648, 4_102_444_800] as [Double] {
            XCTAssertEqual(
                WallTime(secondsSince1970: seconds).rfc3339, formatter.string(from: Date(timeIntervalSince1970: seconds)))
        }
    }

    func testRFC3339_OutOfRange_SaysSo() {
        XCTAssertEqual(WallTime(secondsSince1970: .nan).rfc3339, "(not a time)")
        XCTAssertTrue(WallTime(secondsSince1970: 1e300).rfc3339.hasPrefix("(out of range"))
    }

    func testNow_IsTheSystemClock() {
        let difference = WallTime.now().secondsSince1970 - Date().timeIntervalSince1970
        XCTAssertLessThan(abs(difference), 1)
    }

    func testArithmeticAndOrder() {
        let start = WallTime(secondsSince1970: 1_000)
        XCTAssertEqual(start.adding(seconds: 300).seconds(since: start), 300)
        XCTAssertLessThan(start, start.adding(seconds: 0.001))
        XCTAssertEqual(start.adding(seconds: -1_000), WallTime(secondsSince1970: 0))
    }

    func testSystemFile_ReadsBytes() throws {
        let path = NSTemporaryDirectory() + "walltime-\(getpid())-read.bin"
        let content: [UInt8] = Array(0...255) + Array(repeating: 7, count: 10_000)
        try Data(content).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        XCTAssertEqual(try SystemFile.read(path), content)
    }

    func testSystemFile_Errors_NameFileAndReason() {
        XCTAssertThrowsError(try SystemFile.read("/nonexistent/secret.key")) { error in
            XCTAssertEqual("\(error)", "cannot read /nonexistent/secret.key: No such file or directory")
        }
        XCTAssertThrowsError(try SystemFile.read("/tmp")) { error in
            XCTAssertEqual("\(error)", "cannot read /tmp: Is a directory")
        }
    }

    func testSystemFile_RefusesOversizedFile() throws {
        let path = NSTemporaryDirectory() + "walltime-\(getpid())-big.bin"
        try Data(repeating: 1, count: 2_000).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        XCTAssertThrowsError(try SystemFile.read(path, maxBytes: 1_000)) { error in
            XCTAssertEqual("\(error)", "cannot read \(path): larger than 1000 bytes")
        }
        XCTAssertEqual(try SystemFile.read(path, maxBytes: 2_000).count, 2_000)
    }

    /// A file that reports no size and never ends (an operator naming /dev/zero as a secret) is read
    /// up to the limit and refused, not read without end.
    func testSystemFile_EndlessFile_RefusedAtTheLimit() {
        XCTAssertThrowsError(try SystemFile.read("/dev/zero", maxBytes: 1 << 20)) { error in
            XCTAssertEqual((error as? SystemFile.ReadError)?.kind, .tooLarge(1 << 20))
            XCTAssertEqual("\(error)", "cannot read /dev/zero: larger than 1048576 bytes")
        }
    }

    func testSystemFile_ErrorKinds() {
        XCTAssertThrowsError(try SystemFile.read("/nonexistent/x")) { error in
            XCTAssertEqual((error as? SystemFile.ReadError)?.kind, .notFound)
        }
        XCTAssertThrowsError(try SystemFile.read("/tmp")) { error in
            XCTAssertEqual((error as? SystemFile.ReadError)?.kind, .isDirectory)
        }
    }
}
