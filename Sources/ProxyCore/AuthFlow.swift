import NIOCore
import NIOPosix
import ProxyAuth
import ProxySystem

/// What authentication decided for one request.
enum AuthOutcome {
    case allowed(AuthDecision)
    case refused(AuthFailure)
    /// The proxy cannot decide right now (JWT keys not loaded yet, shutting down): a retryable 503 / 14.
    case unavailable(reason: String)
}

/// Process-wide helpers every connection shares, which outlive a reload of the runtime: the runtime in
/// force (read once per request), a thread pool for password hashing (slow on purpose, so never on an
/// event loop), the JWKS refresher for unknown key ids, and the metrics and access log.
struct ProxyServices: Sendable {
    let runtime: RuntimeInForce
    let threadPool: NIOThreadPool
    let jwks: JWKSRefresher?
    let metrics: ProxyMetrics
    /// Open connections, held bytes and tenant buckets (the `limits` section).
    let limits: LimitState
}

/// Runs the authenticator's steps for one request on the request's event loop: most requests are
/// decided at once; Basic credentials without a cached success are hashed on the thread pool; a JWT
/// naming an unknown key id gets one refetch of its provider's keys, then a second decision.
/// `completion` always runs on `eventLoop`.
enum AuthFlow {
    ///
    /// With a connection's `memory`, a credential that connection had accepted under the same runtime and
    /// key sets is decided from it without running the authenticator, and every new success is remembered.
    static func run(
        _ credentials: RequestCredentials, runtime: ProxyRuntime, services: ProxyServices, eventLoop: any EventLoop,
        memory: CredentialMemory? = nil, completion: @escaping (AuthOutcome) -> Void
    ) {
        let now = WallTime.now()
        if let memory, let decision = memory.recall(credentials, runtime: runtime, now: now) {
            completion(.allowed(decision))
            return
        }
        guard let memory else {
            step(
                runtime.authenticator.authenticate(credentials, now: now), credentials: credentials, runtime: runtime,
                services: services, eventLoop: eventLoop, refetched: false, completion: completion)
            return
        }
        // The key sets' version before deciding: a refresh while deciding leaves a stale version remembered,
        // which only costs a fresh check next time.
        let keysVersion = runtime.authenticator.keysVersion
        step(
            runtime.authenticator.authenticate(credentials, now: now), credentials: credentials, runtime: runtime,
            services: services, eventLoop: eventLoop, refetched: false
        ) { outcome in
            if case .allowed(let decision) = outcome {
                memory.remember(decision, for: credentials, runtime: runtime, keysVersion: keysVersion)
            }
            completion(outcome)
        }
    }

    private static func step(
        _ step: AuthStep, credentials: RequestCredentials, runtime: ProxyRuntime, services: ProxyServices,
        eventLoop: any EventLoop, refetched: Bool, completion: @escaping (AuthOutcome) -> Void
    ) {
        switch step {
        case .decided(let result):
            completion(outcome(result))
        case .offload(let work):
            services.threadPool.runIfActive(eventLoop: eventLoop) { work() }
                .assumeIsolated()
                .whenComplete { result in
                    switch result {
                    case .success(let decided): completion(outcome(decided))
                    case .failure: completion(.unavailable(reason: "shutting_down"))
                    }
                }
        case .refetchKeys(let provider):
            guard !refetched, let jwks = services.jwks else {
                completion(.refused(.invalidJWT(.unknownKeyID)))
                return
            }
            jwks.refetch(provider).hop(to: eventLoop).assumeIsolated().whenComplete { _ in
                let again = runtime.authenticator.authenticate(credentials, now: .now())
                if case .refetchKeys = again {
                    completion(.refused(.invalidJWT(.unknownKeyID)))
                    return
                }
                AuthFlow.step(
                    again, credentials: credentials, runtime: runtime, services: services, eventLoop: eventLoop,
                    refetched: true, completion: completion)
            }
        }
    }

    private static func outcome(_ result: Result<AuthDecision, AuthFailure>) -> AuthOutcome {
        switch result {
        case .success(let decision):
            return .allowed(decision)
        case .failure(.invalidJWT(.noKeys)):
            // Keys not fetched yet (IdP unreachable at start): a retry later can succeed, so say so.
            return .unavailable(reason: "jwt_keys_unavailable")
        case .failure(let failure):
            return .refused(failure)
        }
    }
}
