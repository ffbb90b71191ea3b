import XCTest
@testable import ProxyConfig

/// The keys that make the proxy read payloads: `tenant.resource_attribute`, `tenant.principal_attribute`,
/// `usage.count_items` and the item rates. Absent, payloads are not read.
final class PayloadSettingsTests: XCTestCase {
    func testAbsent_PayloadsNotRead() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal))
        XCTAssertNil(configuration.tenant.resourceAttribute)
        XCTAssertNil(configuration.tenant.principalAttribute)
        XCTAssertFalse(configuration.usage.countItems)
        XCTAssertFalse(configuration.readsPayloads)
    }

    func testEveryKey_Read() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal(plus: """
            tenant: { resource_attribute: tenant.id, principal_attribute: auth.principal }
            usage: { count_items: true }
            limits:
              tenant_rate:
                items_per_second: 5000
                overrides:
                  team-a: { items_per_second: 0 }
                  team-b: { requests_per_second: 3 }
            """)))
        XCTAssertEqual(configuration.tenant.resourceAttribute, "tenant.id")
        XCTAssertEqual(configuration.tenant.principalAttribute, "auth.principal")
        XCTAssertTrue(configuration.usage.countItems)
        XCTAssertEqual(configuration.limits.tenantRate.rates(for: "anyone").itemsPerSecond, 5000)
        XCTAssertEqual(configuration.limits.tenantRate.rates(for: "team-a").itemsPerSecond, 0)
        XCTAssertEqual(configuration.limits.tenantRate.rates(for: "team-b").itemsPerSecond, 5000, "inherited")
        XCTAssertTrue(configuration.readsPayloads)
    }

    func testEachKeyAlone_ReadsPayloads() throws {
        for extra in [
            "tenant: { resource_attribute: tenant.id }", "tenant: { principal_attribute: who }", "usage: { count_items: true }",
            "limits: { tenant_rate: { items_per_second: 1 } }",
            "limits: { tenant_rate: { overrides: { team-a: { items_per_second: 1 } } } }",
        ] {
            XCTAssertEqual(parse(Fixture.minimal(plus: extra))?.readsPayloads, true, extra)
        }
        XCTAssertEqual(parse(Fixture.minimal(plus: "usage: { count_items: false }"))?.readsPayloads, false)
    }

    func testAttributeKey_EmptyOrWithSpaces_NamesKey() {
        assertContains(onlyProblem("tenant.resource_attribute", in: Fixture.minimal(plus: #"tenant: { resource_attribute: "" }"#)), "must not be empty")
        assertContains(
            onlyProblem("tenant.principal_attribute", in: Fixture.minimal(plus: #"tenant: { principal_attribute: "auth principal" }"#)),
            "spaces or control characters")
    }

    func testSameKeyForTenantAndPrincipal_Refused() {
        assertContains(
            onlyProblem("tenant.principal_attribute", in: Fixture.minimal(plus: "tenant: { resource_attribute: id, principal_attribute: id }")),
            "cannot hold both")
    }

    func testItemRate_Negative_NamesKey() {
        assertContains(
            onlyProblem("limits.tenant_rate.items_per_second", in: Fixture.minimal(plus: "limits: { tenant_rate: { items_per_second: -1 } }")),
            "0 (unlimited) or more")
    }

    func testUsage_UnknownKey_Suggests() {
        assertContains(onlyProblem("usage.count_item", in: Fixture.minimal(plus: "usage: { count_item: true }")), "count_items")
    }
}
