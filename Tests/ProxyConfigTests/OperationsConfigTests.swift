import XCTest

@testable import ProxyConfig

/// `admin.endpoint`, `log.access_log` and `log.format`.
final class OperationsConfigTests: XCTestCase {
    func testDefaults_AdminOnLoopback9464_JSONAccessLog() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal))
        XCTAssertEqual(configuration.admin.endpoint, Endpoint(host: "127.0.0.1", port: 9464))
        XCTAssertTrue(configuration.log.accessLog)
        XCTAssertEqual(configuration.log.format, .json)
    }

    func testAdminEndpoint_EmptyString_DisablesListener() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal(plus: #"admin: { endpoint: "" }"#)))
        XCTAssertNil(configuration.admin.endpoint)
    }

    func testAdminEndpoint_SetAndLogKeysRead() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal(plus: """
            admin: { endpoint: "0.0.0.0:9100" }
            log: { access_log: false, format: LogFmt }
            """)))
        XCTAssertEqual(configuration.admin.endpoint, Endpoint(host: "0.0.0.0", port: 9100))
        XCTAssertFalse(configuration.log.accessLog)
        XCTAssertEqual(configuration.log.format, .logfmt)
    }

    func testAdminEndpoint_SamePortAsHTTPListener_NamesBothKeys() {
        guard let error = refuse(Fixture.minimal(plus: """
            http: { endpoint: "0.0.0.0:4318" }
            admin: { endpoint: "127.0.0.1:4318" }
            """)) else { return }
        XCTAssertEqual(error.problems.map(\.key), ["admin.endpoint"])
        XCTAssertTrue(error.problems[0].message.contains("http.endpoint"), error.problems[0].message)
    }

    func testLogFormat_Unknown_ListsChoices_AccessLogNotBoolean() {
        guard let error = refuse(Fixture.minimal(plus: "log: { format: xml, access_log: yes please }")) else { return }
        XCTAssertEqual(Set(error.problems.map(\.key)), ["log.format", "log.access_log"])
        let format = error.problems.first { $0.key == "log.format" }!
        XCTAssertTrue(format.message.contains("json") && format.message.contains("logfmt"), format.message)
    }

    func testAdminEndpoint_Malformed_NamesKey() {
        guard let error = refuse(Fixture.minimal(plus: "admin: { endpoint: 9464 }")) else { return }
        XCTAssertEqual(error.problems.map(\.key), ["admin.endpoint"])
    }
}
