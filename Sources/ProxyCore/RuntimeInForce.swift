import Atomics

/// The runtime in force: the one reload swapped in last. Every request reads it once, when its head
/// arrives, with one atomic load and no lock, and is authenticated, mapped to a tenant, authorized and
/// rate-limited against that runtime until it ends. So a credential a reload removed is refused from
/// the next request on, on every connection, including connections opened before the reload.
///
/// A connection keeps only what belongs to it from the runtime current at accept: its TLS context
/// (handshake and peer certificate stay consistent) and its protocol settings.
///
/// Shared by every connection through `ProxyServices`; written only by reload, under its lock.
final class RuntimeInForce: Sendable {
    // ManagedAtomic's strong-reference support keeps a loaded runtime alive even while a reload
    // replaces it on another thread (no lock, no torn reference).
    private let current: ManagedAtomic<ProxyRuntime>

    init(_ runtime: ProxyRuntime) {
        current = ManagedAtomic(runtime)
    }

    /// The runtime a request that arrives now is judged against.
    func load() -> ProxyRuntime {
        current.load(ordering: .acquiring)
    }

    /// Serves `runtime` to every request from now on.
    func store(_ runtime: ProxyRuntime) {
        current.store(runtime, ordering: .releasing)
    }
}

extension ProxyRuntime: AtomicReference {}
