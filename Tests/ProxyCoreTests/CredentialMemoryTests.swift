import ProxyOTLP
import ProxyAuth
import ProxySystem
import XCTest

@testable import ProxyCore

/// A connection's memory of its last accepted credential holds only for the same value, signal,
/// runtime generation and key sets, and never past a JWT's `exp`.
final class CredentialMemoryTests: XCTestCase {
    nonisolated(unsafe) private static let files = Result { try TestFiles() }

    private func runtime() throws -> ProxyRuntime {
        try ProxyRuntime(configuration: Self.files.get().configuration(upstreamPort: 14318))
    }

    private let now = WallTime(secondsSince1970: 1_800_000_000)
    private let decision = AuthDecision(principal: Principal(name: "token:ci", method: .bearer), tenant: "team-a")

    private func credentials(_ authorization: [String] = ["Bearer good-token"], signal: OTLPSignal = .traces) -> RequestCredentials {
        RequestCredentials(peerCertificate: nil, authorization: authorization, signal: signal)
    }

    func testSameCredentialSameRuntime_Recalled() throws {
        let runtime = try runtime()
        let memory = CredentialMemory()
        XCTAssertNil(memory.recall(credentials(), runtime: runtime, now: now), "nothing remembered yet")
        memory.remember(decision, for: credentials(), runtime: runtime, keysVersion: runtime.authenticator.keysVersion)
        XCTAssertEqual(memory.recall(credentials(), runtime: runtime, now: now), decision)
    }

    func testOtherValueOrOtherSignal_NotRecalled() throws {
        let runtime = try runtime()
        let memory = CredentialMemory()
        memory.remember(decision, for: credentials(), runtime: runtime, keysVersion: runtime.authenticator.keysVersion)
        XCTAssertNil(memory.recall(credentials(["Bearer good-tokeN"]), runtime: runtime, now: now))
        XCTAssertNil(memory.recall(credentials([]), runtime: runtime, now: now))
        XCTAssertNil(memory.recall(credentials(["Bearer good-token", "Bearer good-token"]), runtime: runtime, now: now))
        XCTAssertNil(memory.recall(credentials(signal: .logs), runtime: runtime, now: now), "each signal is decided once")
    }

    func testNewRuntimeGeneration_NotRecalled() throws {
        let before = try runtime()
        let memory = CredentialMemory()
        memory.remember(decision, for: credentials(), runtime: before, keysVersion: before.authenticator.keysVersion)
        let reloaded = try runtime()
        XCTAssertGreaterThan(reloaded.generation, before.generation)
        XCTAssertNil(memory.recall(credentials(), runtime: reloaded, now: now), "a reload forgets every decision")
    }

    func testStaleKeysVersion_NotRecalled() throws {
        let runtime = try runtime()
        let memory = CredentialMemory()
        memory.remember(decision, for: credentials(), runtime: runtime, keysVersion: runtime.authenticator.keysVersion &+ 1)
        XCTAssertNil(memory.recall(credentials(), runtime: runtime, now: now), "decided under other key sets")
    }

    func testJWTDecision_NotRecalledFromItsExpiry() throws {
        let runtime = try runtime()
        let memory = CredentialMemory()
        var jwt = decision
        jwt.validUntil = WallTime(secondsSince1970: now.secondsSince1970 + 60)
        memory.remember(jwt, for: credentials(["Bearer a.b.c"]), runtime: runtime, keysVersion: runtime.authenticator.keysVersion)
        XCTAssertNotNil(memory.recall(credentials(["Bearer a.b.c"]), runtime: runtime, now: now))
        XCTAssertNil(memory.recall(
            credentials(["Bearer a.b.c"]), runtime: runtime, now: WallTime(secondsSince1970: now.secondsSince1970 + 60)))
    }
}
