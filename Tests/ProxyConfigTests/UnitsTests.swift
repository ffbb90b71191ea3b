import XCTest
@testable import ProxyConfig

/// Table tests for the unit-bearing values: sizes and durations.
final class UnitsTests: XCTestCase {
    func testParseSize_ValidTable() throws {
        let table: [(String, Int)] = [
            ("1", 1), ("4194304", 4_194_304), ("1B", 1), ("10 B", 10),
            ("1KB", 1_000), ("2MB", 2_000_000), ("1GB", 1_000_000_000),
            ("1KiB", 1_024), ("512 KiB", 524_288), ("4MiB", 4_194_304), ("20MiB", 20_971_520), ("1GiB", 1_073_741_824),
            ("4mib", 4_194_304), ("64kb", 64_000), ("1.5MiB", 1_572_864), (" 8MiB ", 8_388_608), (".5KiB", 512),
        ]
        for (text, expected) in table {
            XCTAssertEqual(try Units.parseSize(text), expected, text)
        }
    }

    func testParseSize_InvalidTable() {
        let table: [(String, String)] = [
            ("4MiBs", "unknown unit \"MiBs\""),
            ("4 mega", "unknown unit \"mega\""),
            ("4Mb ps", "unknown unit"),
            ("0", "greater than 0"),
            ("0MiB", "greater than 0"),
            ("-1", "greater than 0"),
            ("-4MiB", "greater than 0"),
            ("0.1B", "greater than 0"),
            ("1.5", "not a whole number of bytes"),
            ("abc", "is not a size"),
            ("", "is not a size"),
            ("MiB", "is not a size"),
            ("99999999999GiB", "too large"),
        ]
        for (text, expected) in table {
            do {
                let value = try Units.parseSize(text)
                XCTFail("\(text.debugDescription) parsed as \(value)")
            } catch {
                XCTAssertTrue(error.message.contains(expected), "\(text.debugDescription): \(error.message)")
            }
        }
    }

    func testParseSize_BadUnit_MessageListsEveryUnit() {
        do {
            _ = try Units.parseSize("4 MiBs")
            XCTFail("accepted")
        } catch {
            for unit in ["B", "KB", "MB", "GB", "KiB", "MiB", "GiB"] {
                XCTAssertTrue(error.message.contains(unit), "\(unit) missing from: \(error.message)")
            }
        }
    }

    func testParseDuration_ValidTable() throws {
        let table: [(String, Duration)] = [
            ("500ms", .milliseconds(500)), ("5s", .seconds(5)), ("2m", .seconds(120)), ("1h", .seconds(3600)),
            ("1m30s", .seconds(90)), ("1h2m3s", .seconds(3723)), ("1.5s", .milliseconds(1500)),
            ("250us", .microseconds(250)), ("10ns", .nanoseconds(10)), ("90", .seconds(90)),
            ("0.5", .milliseconds(500)), ("5 s", .seconds(5)), (" 30s ", .seconds(30)),
        ]
        for (text, expected) in table {
            XCTAssertEqual(try Units.parseDuration(text), expected, text)
        }
    }

    func testParseDuration_InvalidTable() {
        let table: [(String, String)] = [
            ("5 days", "unknown unit \"days\""),
            ("5sec", "unknown unit \"sec\""),
            ("0", "greater than 0"),
            ("0s", "greater than 0"),
            ("-5s", "greater than 0"),
            ("1m-30s", "is not a duration"),
            ("s", "is not a duration"),
            ("", "is not a duration"),
            ("fast", "is not a duration"),
            ("5s junk", "is not a duration"),
            ("99999999999h", "too long"),
        ]
        for (text, expected) in table {
            do {
                let value = try Units.parseDuration(text)
                XCTFail("\(text.debugDescription) parsed as \(value)")
            } catch {
                XCTAssertTrue(error.message.contains(expected), "\(text.debugDescription): \(error.message)")
            }
        }
    }

    func testYAMLScalars_SizesAndDurations_ThroughTheLoader() throws {
        let yaml = Fixture.minimal(plus: """
            grpc: { max_recv_msg_size: 1048576 }
            http: { max_request_body_size: "512 KiB", idle_timeout: 1:30 }
            upstream: { timeout: 2.5 }
            """)
        let configuration = try XCTUnwrap(parse(yaml))
        XCTAssertEqual(configuration.grpc.maxRecvMsgSize, 1_048_576)
        XCTAssertEqual(configuration.http.maxRequestBodySize, 524_288)
        XCTAssertEqual(configuration.http.idleTimeout, .seconds(90))
        XCTAssertEqual(configuration.upstream.timeout, .milliseconds(2500))
    }

    func testYAMLScalars_BooleanWhereSizeExpected_NamesType() {
        let message = onlyProblem("grpc.max_recv_msg_size", in: Fixture.minimal(plus: "grpc: { max_recv_msg_size: true }"))
        assertContains(message, "must be a size", "found the boolean true")
    }
}
