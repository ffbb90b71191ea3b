import XCTest
@testable import ProxyConfig

/// `reload` and `shutdown`: defaults, accepted values and the messages for wrong ones.
final class OperationsValidationTests: XCTestCase {
    func testReloadAndShutdown_Absent_Defaults() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal))
        XCTAssertEqual(configuration.reload.watchInterval, .seconds(10))
        XCTAssertEqual(configuration.shutdown.drainTimeout, .seconds(25))
    }

    func testReloadAndShutdown_Set_ReadAsWritten() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal(plus: """
            reload: { watch_interval: 1500ms }
            shutdown: { drain_timeout: 2m }
            """)))
        XCTAssertEqual(configuration.reload.watchInterval, .milliseconds(1500))
        XCTAssertEqual(configuration.shutdown.drainTimeout, .seconds(120))
    }

    func testReloadWatchInterval_Zero_DisablesPolling() throws {
        for zero in ["0", "0s", "0ms", "\"0.0s\""] {
            let configuration = try XCTUnwrap(parse(Fixture.minimal(plus: "reload: { watch_interval: \(zero) }")), zero)
            XCTAssertEqual(configuration.reload.watchInterval, .zero, zero)
        }
    }

    func testReloadWatchInterval_Negative_NamesKeyAndZero() {
        let message = onlyProblem("reload.watch_interval", in: Fixture.minimal(plus: "reload: { watch_interval: -5s }"))
        assertContains(message, "must not be negative", "0s")
    }

    func testReloadWatchInterval_NoUnit_NamesKey() {
        let message = onlyProblem("reload.watch_interval", in: Fixture.minimal(plus: "reload: { watch_interval: 10 parsecs }"))
        assertContains(message, "unit")
    }

    func testShutdownDrainTimeout_Zero_Refused() {
        let message = onlyProblem("shutdown.drain_timeout", in: Fixture.minimal(plus: "shutdown: { drain_timeout: 0s }"))
        assertContains(message, "greater than 0")
    }

    func testShutdownDrainTimeout_OverAnHour_Refused() {
        let message = onlyProblem("shutdown.drain_timeout", in: Fixture.minimal(plus: "shutdown: { drain_timeout: 2h }"))
        assertContains(message, "at most 1h", "terminationGracePeriodSeconds")
    }

    func testReload_Typo_SuggestsKey() {
        let message = onlyProblem("reload.watch_intervall", in: Fixture.minimal(plus: "reload: { watch_intervall: 5s }"))
        assertContains(message, "did you mean `watch_interval`")
    }

    func testShutdown_NotAMapping_NamesSection() {
        let message = onlyProblem("shutdown", in: Fixture.minimal(plus: "shutdown: 25s"))
        assertContains(message, "must be a mapping", "drain_timeout")
    }
}
