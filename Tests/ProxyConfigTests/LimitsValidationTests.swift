import XCTest
@testable import ProxyConfig

/// The `limits` section: defaults, every key read, and a key-naming message for each mistake.
final class LimitsValidationTests: XCTestCase {
    func testLimits_Absent_Defaults() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal))
        let limits = configuration.limits
        XCTAssertEqual(limits.maxConnections, 10_000)
        XCTAssertEqual(limits.handshakeTimeout, .seconds(10))
        XCTAssertEqual(limits.maxBufferedBytes, 256 * 1024 * 1024)
        XCTAssertNil(limits.maxConnectionAge, "connections live as long as clients keep them")
        XCTAssertEqual(limits.tenantRate.defaults, .init(requestsPerSecond: 0, bytesPerSecond: 0))
        XCTAssertEqual(limits.tenantRate.burstSeconds, .seconds(2))
        XCTAssertTrue(limits.tenantRate.overrides.isEmpty)
        XCTAssertTrue(limits.tenantRate.isUnlimited)
    }

    func testLimits_EveryKey_Read() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal(plus: """
            limits:
              max_connections: 500
              handshake_timeout: 3s
              max_buffered_bytes: 64MiB
              max_connection_age: 10m
              tenant_rate:
                requests_per_second: 20.5
                bytes_per_second: 2MiB
                burst_seconds: 4
                overrides:
                  team-a: { requests_per_second: 50, bytes_per_second: 5MiB }
                  team-b: { bytes_per_second: 0 }
            """)))
        let limits = configuration.limits
        XCTAssertEqual(limits.maxConnections, 500)
        XCTAssertEqual(limits.handshakeTimeout, .seconds(3))
        XCTAssertEqual(limits.maxBufferedBytes, 64 * 1024 * 1024)
        XCTAssertEqual(limits.maxConnectionAge, .seconds(600))
        XCTAssertEqual(limits.tenantRate.defaults, .init(requestsPerSecond: 20.5, bytesPerSecond: 2 * 1024 * 1024))
        XCTAssertEqual(limits.tenantRate.burstSeconds, .seconds(4))
        XCTAssertEqual(limits.tenantRate.rates(for: "team-a"), .init(requestsPerSecond: 50, bytesPerSecond: 5 * 1024 * 1024))
        // An override inherits the rates it leaves out.
        XCTAssertEqual(limits.tenantRate.rates(for: "team-b"), .init(requestsPerSecond: 20.5, bytesPerSecond: 0))
        XCTAssertEqual(limits.tenantRate.rates(for: "someone-else"), limits.tenantRate.defaults)
        XCTAssertFalse(limits.tenantRate.isUnlimited)
    }

    func testLimits_ZeroMaxConnections_NamesKey() {
        let message = onlyProblem("limits.max_connections", in: Fixture.minimal(plus: "limits: { max_connections: 0 }"))
        assertContains(message, "at least 1")
    }

    func testLimits_BadHandshakeTimeout_NamesKey() {
        let message = onlyProblem("limits.handshake_timeout", in: Fixture.minimal(plus: "limits: { handshake_timeout: 10 parsecs }"))
        assertContains(message, "unknown unit")
    }

    func testLimits_BadMaxConnectionAge_NamesKey() {
        assertContains(
            onlyProblem("limits.max_connection_age", in: Fixture.minimal(plus: "limits: { max_connection_age: forever }")),
            "not a duration")
        assertContains(
            onlyProblem("limits.max_connection_age", in: Fixture.minimal(plus: "limits: { max_connection_age: 0s }")),
            "greater than 0")
    }

    func testLimits_ZeroBufferedBytes_NamesKey() {
        let message = onlyProblem("limits.max_buffered_bytes", in: Fixture.minimal(plus: "limits: { max_buffered_bytes: 0 }"))
        assertContains(message, "greater than 0")
    }

    func testTenantRate_NegativeRate_NamesKey() {
        let message = onlyProblem(
            "limits.tenant_rate.requests_per_second",
            in: Fixture.minimal(plus: "limits: { tenant_rate: { requests_per_second: -5 } }"))
        assertContains(message, "0 (unlimited) or more")
    }

    func testTenantRate_QuotedRate_SaysRemoveQuotes() {
        let message = onlyProblem(
            "limits.tenant_rate.requests_per_second",
            in: Fixture.minimal(plus: "limits: { tenant_rate: { requests_per_second: \"5\" } }"))
        assertContains(message, "remove the quotes")
    }

    func testTenantRate_BadByteRate_NamesKey() {
        let message = onlyProblem(
            "limits.tenant_rate.bytes_per_second",
            in: Fixture.minimal(plus: "limits: { tenant_rate: { bytes_per_second: 5 mebibytes } }"))
        assertContains(message, "unknown unit")
    }

    func testTenantRate_ZeroBurst_NamesKey() {
        let message = onlyProblem(
            "limits.tenant_rate.burst_seconds", in: Fixture.minimal(plus: "limits: { tenant_rate: { burst_seconds: 0 } }"))
        assertContains(message, "greater than 0")
    }

    func testTenantRate_OverrideTypo_SuggestsKey() {
        let message = onlyProblem(
            "limits.tenant_rate.overrides.team-a.request_per_second",
            in: Fixture.minimal(plus: "limits: { tenant_rate: { overrides: { team-a: { request_per_second: 5 } } } }"))
        assertContains(message, "did you mean `requests_per_second`?")
    }

    func testTenantRate_OverrideBadValue_NamesTenantAndKey() {
        let message = onlyProblem(
            "limits.tenant_rate.overrides.team-a.bytes_per_second",
            in: Fixture.minimal(plus: "limits: { tenant_rate: { overrides: { team-a: { bytes_per_second: lots } } } }"))
        assertContains(message, "not a size")
    }

    func testTenantRate_OverrideWithoutRates_NamesTenant() {
        let message = onlyProblem(
            "limits.tenant_rate.overrides.team-a",
            in: Fixture.minimal(plus: "limits: { tenant_rate: { overrides: { team-a: {} } } }"))
        assertContains(message, "has no rates")
    }

    func testTenantRate_OverridesNotAMapping_NamesKey() {
        let message = onlyProblem(
            "limits.tenant_rate.overrides",
            in: Fixture.minimal(plus: "limits: { tenant_rate: { overrides: [team-a] } }"))
        assertContains(message, "mapping of tenant IDs")
    }

    func testTenantRate_InvalidTenantID_NamesKey() {
        let message = onlyProblem(
            "limits.tenant_rate.overrides",
            in: Fixture.minimal(plus: "limits: { tenant_rate: { overrides: { \"team a\": { requests_per_second: 1 } } } }"))
        assertContains(message, "\"team a\"")
    }

    func testLimits_UnknownKey_Suggests() {
        let message = onlyProblem("limits.max_connection", in: Fixture.minimal(plus: "limits: { max_connection: 5 }"))
        assertContains(message, "did you mean `max_connections`?")
    }

    func testLimits_ManyProblems_AllReportedInOnePass() {
        guard let error = refuse(Fixture.minimal(plus: """
            limits:
              max_connections: -1
              handshake_timeout: soon
              tenant_rate:
                requests_per_second: many
                overrides:
                  team-a: { bytes_per_second: -1 }
            """)) else { return }
        XCTAssertEqual(
            Set(error.problems.map(\.key)),
            ["limits.max_connections", "limits.handshake_timeout", "limits.tenant_rate.requests_per_second",
             "limits.tenant_rate.overrides.team-a.bytes_per_second"])
    }
}
