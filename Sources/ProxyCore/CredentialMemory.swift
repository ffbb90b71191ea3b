import ProxyOTLP
import ProxyAuth
import ProxySystem
import ProxyTLS

/// What one connection last had accepted, so a repeated credential costs a comparison instead of a
/// hash, a table lookup and the principal rules: the `Authorization` value and, per signal, the
/// decision it got.
///
/// A remembered decision holds only while everything it was made from is unchanged: the runtime
/// generation in force (a reload makes a new one), the JWT key sets (`Authenticator.keysVersion`, bumped
/// by a refresh or refetch) and, for a JWT, its `exp`. So a credential a reload or a key refresh
/// removed is refused from the next request on, as without the memory. Only successes are remembered;
/// the presented value is compared in constant time. The peer certificate belongs to the connection
/// and is the same for every request on it.
///
/// One per client connection, used only on its event loop.
final class CredentialMemory {
    private var generation: UInt64 = 0
    private var keysVersion: UInt64 = 0
    private var authorization: [UInt8] = []
    private var decisions: [AuthDecision?] = [nil, nil, nil, nil]

    private static func slot(_ signal: OTLPSignal) -> Int {
        switch signal {
        case .traces: return 0
        case .metrics: return 1
        case .logs: return 2
        case .profiles: return 3
        }
    }

    /// The decision remembered for these credentials, if it still holds under `runtime` at `now`.
    func recall(_ credentials: RequestCredentials, runtime: ProxyRuntime, now: WallTime) -> AuthDecision? {
        guard generation == runtime.generation, credentials.authorization.count <= 1,
            let decision = decisions[Self.slot(credentials.signal)]
        else { return nil }
        if let validUntil = decision.validUntil, validUntil <= now { return nil }
        guard keysVersion == runtime.authenticator.keysVersion else { return nil }
        let presented = credentials.authorization.first.map { Array($0.utf8) } ?? []
        guard ConstantTime.equals(presented, authorization) else { return nil }
        return decision
    }

    /// Remembers a decision made by `runtime` for these credentials (dropping what was remembered for
    /// other credentials or another runtime).
    func remember(_ decision: AuthDecision, for credentials: RequestCredentials, runtime: ProxyRuntime, keysVersion: UInt64) {
        guard credentials.authorization.count <= 1 else { return }
        let presented = credentials.authorization.first.map { Array($0.utf8) } ?? []
        if generation != runtime.generation || self.keysVersion != keysVersion || !ConstantTime.equals(presented, authorization) {
            generation = runtime.generation
            self.keysVersion = keysVersion
            authorization = presented
            decisions = [nil, nil, nil, nil]
        }
        decisions[Self.slot(credentials.signal)] = decision
    }
}
