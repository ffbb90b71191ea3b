import Logging
import NIOConcurrencyHelpers
import NIOCore
import ProxyConfig
import Synchronization

/// One token bucket: `tokens` refill at a rate up to a capacity. Rates and capacity are passed to
/// each call rather than stored, so a reload that changes a tenant's rate keeps its bucket (and the
/// debt it is in). Times are monotonic nanoseconds (`NIODeadline.uptimeNanoseconds`).
///
/// A bucket may go below zero: request bodies are charged as they arrive, after the request was
/// admitted, so a large body leaves the tenant in debt until the bucket refills.
struct TokenBucket: Sendable, Equatable {
    private(set) var tokens: Double
    private var updated: UInt64

    /// A full bucket.
    init(capacity: Double, now: UInt64) {
        self.tokens = capacity
        self.updated = now
    }

    mutating func refill(rate: Double, capacity: Double, now: UInt64) {
        if now > updated {
            tokens = min(capacity, tokens + Double(now - updated) / 1e9 * rate)
            updated = now
        } else {
            tokens = min(capacity, tokens)
        }
    }

    /// The wait until the bucket holds `needed` tokens (zero when it does now).
    func wait(until needed: Double, rate: Double) -> Duration {
        guard tokens < needed, rate > 0 else { return .zero }
        return .nanoseconds(Int64(((needed - tokens) / rate * 1e9).rounded(.up)))
    }

    mutating func take(_ count: Double) {
        tokens -= count
    }
}

/// Which budget refused a request.
enum RateLimitKind: String, Sendable {
    case requests
    case bytes
    case items
}

/// What the rate limiter decided for one request.
enum RateDecision: Equatable, Sendable {
    case admitted
    /// Over budget: the client may retry after `retryAfter` (never less than a millisecond).
    case limited(RateLimitKind, retryAfter: Duration)
}

/// Per-tenant token buckets for requests, request body bytes and payload items per second, shared by
/// every connection and kept across reloads (the policy comes with each call, from the runtime the
/// connection started with).
///
/// Buckets live in shards, each behind its own lock, so requests of different tenants on different
/// event loops rarely meet. Tenants come from authenticated credentials, so their number is bounded
/// by the configuration or the identity provider; buckets that have refilled completely are dropped
/// when a shard grows past `maxBucketsPerShard`, since a full bucket is what a new tenant gets anyway.
final class TenantRateLimiter: Sendable {
    private struct Buckets: Sendable {
        var requests: TokenBucket?
        var bytes: TokenBucket?
        var items: TokenBucket?
    }

    private static let shardCount = 16
    static let maxBucketsPerShard = 4096
    private let shards: [NIOLockedValueBox<[String: Buckets]>]

    init() {
        shards = (0..<Self.shardCount).map { _ in NIOLockedValueBox([:]) }
    }

    private func shard(_ tenant: String) -> NIOLockedValueBox<[String: Buckets]> {
        var hasher = Hasher()
        hasher.combine(tenant)
        return shards[Int(UInt(bitPattern: hasher.finalize()) % UInt(Self.shardCount))]
    }

    private static func capacity(rate: Double, policy: ProxyConfiguration.Limits.TenantRate, minimum: Double) -> Double {
        max(rate * Double(policy.burstSeconds.components.seconds)
            + rate * Double(policy.burstSeconds.components.attoseconds) / 1e18, minimum)
    }

    /// Admits a request of `tenant` when it has a request token and neither its byte nor its item bucket
    /// is in debt; takes the request token. `now` is monotonic nanoseconds. Items, like bytes, are
    /// charged once known (`charge(tenant:items:)`), so one large payload leaves the tenant in debt.
    func admit(tenant: String, policy: ProxyConfiguration.Limits.TenantRate, now: UInt64) -> RateDecision {
        let rates = policy.rates(for: tenant)
        guard !rates.isUnlimited else { return .admitted }
        let requestCapacity = Self.capacity(rate: rates.requestsPerSecond, policy: policy, minimum: 1)
        return shard(tenant).withLockedValue { buckets in
            var entry = buckets[tenant] ?? Buckets()
            defer {
                buckets[tenant] = entry
                if buckets.count > Self.maxBucketsPerShard { Self.prune(&buckets, policy: policy, now: now) }
            }
            // Admitted while the byte and item buckets are not in debt; bodies and payloads are charged
            // once they arrive.
            for kind in [RateLimitKind.bytes, .items] {
                let rate = Self.rate(kind, rates)
                guard rate > 0 else { continue }
                let capacity = Self.capacity(rate: rate, policy: policy, minimum: 1)
                var bucket = entry[keyPath: Self.bucket(kind)] ?? TokenBucket(capacity: capacity, now: now)
                bucket.refill(rate: rate, capacity: capacity, now: now)
                entry[keyPath: Self.bucket(kind)] = bucket
                if bucket.tokens <= 0 {
                    let wait = bucket.wait(until: min(1, capacity), rate: rate)
                    return .limited(kind, retryAfter: max(wait, .milliseconds(1)))
                }
            }
            if rates.requestsPerSecond > 0 {
                var requests = entry.requests ?? TokenBucket(capacity: requestCapacity, now: now)
                requests.refill(rate: rates.requestsPerSecond, capacity: requestCapacity, now: now)
                if requests.tokens < 1 {
                    entry.requests = requests
                    return .limited(.requests, retryAfter: max(requests.wait(until: 1, rate: rates.requestsPerSecond), .milliseconds(1)))
                }
                requests.take(1)
                entry.requests = requests
            }
            return .admitted
        }
    }

    /// Charges `bytes` of request body to `tenant`'s byte bucket (no-op when its bytes are unlimited).
    func charge(tenant: String, bytes: Int, policy: ProxyConfiguration.Limits.TenantRate, now: UInt64) {
        charge(tenant: tenant, bytes, to: .bytes, policy: policy, now: now)
    }

    /// Charges the items of an admitted request's payload to `tenant`'s item bucket (no-op when its items
    /// are unlimited).
    func charge(tenant: String, items: Int, policy: ProxyConfiguration.Limits.TenantRate, now: UInt64) {
        charge(tenant: tenant, items, to: .items, policy: policy, now: now)
    }

    private func charge(tenant: String, _ amount: Int, to kind: RateLimitKind, policy: ProxyConfiguration.Limits.TenantRate, now: UInt64) {
        let rate = Self.rate(kind, policy.rates(for: tenant))
        guard rate > 0, amount > 0 else { return }
        let capacity = Self.capacity(rate: rate, policy: policy, minimum: 1)
        shard(tenant).withLockedValue { buckets in
            var entry = buckets[tenant] ?? Buckets()
            var bucket = entry[keyPath: Self.bucket(kind)] ?? TokenBucket(capacity: capacity, now: now)
            bucket.refill(rate: rate, capacity: capacity, now: now)
            bucket.take(Double(amount))
            entry[keyPath: Self.bucket(kind)] = bucket
            buckets[tenant] = entry
        }
    }

    /// The rate of one budget.
    private static func rate(_ kind: RateLimitKind, _ rates: ProxyConfiguration.Limits.TenantRate.Rates) -> Double {
        switch kind {
        case .requests: return rates.requestsPerSecond
        case .bytes: return rates.bytesPerSecond
        case .items: return rates.itemsPerSecond
        }
    }

    /// Where a tenant's bucket of one budget is kept.
    private static func bucket(_ kind: RateLimitKind) -> WritableKeyPath<Buckets, TokenBucket?> {
        switch kind {
        case .requests: return \.requests
        case .bytes: return \.bytes
        case .items: return \.items
        }
    }

    /// Drops the buckets that are full again: forgetting them changes nothing.
    private static func prune(_ buckets: inout [String: Buckets], policy: ProxyConfiguration.Limits.TenantRate, now: UInt64) {
        for (tenant, entry) in buckets {
            let rates = policy.rates(for: tenant)
            var full = true
            for kind in [RateLimitKind.requests, .bytes, .items] {
                guard var bucket = entry[keyPath: bucket(kind)] else { continue }
                let capacity = capacity(rate: rate(kind, rates), policy: policy, minimum: 1)
                bucket.refill(rate: rate(kind, rates), capacity: capacity, now: now)
                full = full && bucket.tokens >= capacity
            }
            if full { buckets.removeValue(forKey: tenant) }
        }
    }

    /// The number of tenants with a bucket, for tests.
    var bucketCount: Int {
        shards.reduce(0) { total, shard in total + shard.withLockedValue { $0.count } }
    }
}

/// Counts the client connections open across both listeners, for `limits.max_connections`.
final class ConnectionGate: Sendable {
    private let open = Atomic<Int>(0)
    /// When the last "limit reached" warning was logged (monotonic nanoseconds; 0: never).
    let lastWarning = Atomic<UInt64>(0)

    init() {}

    /// Counts a new connection if fewer than `limit` are open; false means close it.
    func tryOpen(limit: Int) -> Bool {
        var current = open.load(ordering: .relaxed)
        while current < limit {
            let (exchanged, original) = open.compareExchange(
                expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = original
        }
        return false
    }

    /// A counted connection closed.
    func closed() {
        open.subtract(1, ordering: .relaxed)
    }

    var count: Int { open.load(ordering: .relaxed) }
}

/// The bytes the proxy holds for clients and the receiver across all connections (queued request
/// parts, HTTP/2 DATA not yet passed on or sent), for load shedding (`limits.max_buffered_bytes`).
/// Each holder keeps its own tally (`HeldBytes`) and gives back all of it when it ends, so the total
/// cannot drift.
final class BufferedBytesGauge: Sendable {
    private let held = Atomic<Int>(0)

    init() {}

    func add(_ bytes: Int) {
        held.add(bytes, ordering: .relaxed)
    }

    func subtract(_ bytes: Int) {
        held.subtract(bytes, ordering: .relaxed)
    }

    var bytes: Int { held.load(ordering: .relaxed) }

    /// Whether new requests are shed now.
    func isOver(_ limit: Int) -> Bool {
        bytes > limit
    }
}

/// One holder's share of the `BufferedBytesGauge`: adds and releases go to both, and `releaseAll`
/// returns whatever is still held. Lives on one event loop (inside a handler or exchange).
struct HeldBytes {
    let gauge: BufferedBytesGauge
    private(set) var held = 0

    init(gauge: BufferedBytesGauge) {
        self.gauge = gauge
    }

    mutating func add(_ bytes: Int) {
        guard bytes > 0 else { return }
        held += bytes
        gauge.add(bytes)
    }

    /// Releases up to `bytes` (never more than is held, so a late release after `releaseAll` is harmless).
    mutating func release(_ bytes: Int) {
        let amount = min(bytes, held)
        guard amount > 0 else { return }
        held -= amount
        gauge.subtract(amount)
    }

    mutating func releaseAll() {
        release(held)
    }
}

/// The process-wide state of the limits: open connections, held bytes and tenant buckets. Outlives
/// reloads; the limits themselves come from the runtime each connection started with.
final class LimitState: Sendable {
    let connections = ConnectionGate()
    let buffered = BufferedBytesGauge()
    let tenantRates = TenantRateLimiter()

    init() {}
}

/// The `HeldBytes` of one HTTP/2 connection, per stream: request DATA received and not yet
/// consumed (passed on or dropped), response DATA submitted and not yet sent. A stream's share is
/// released when it closes, the connection's when it goes away. Lives on the connection's event loop.
struct StreamHeldBytes {
    private var total: HeldBytes
    private var perStream: [Int32: Int] = [:]

    init(gauge: BufferedBytesGauge) {
        self.total = HeldBytes(gauge: gauge)
    }

    mutating func add(_ streamID: Int32, _ bytes: Int) {
        guard bytes > 0 else { return }
        perStream[streamID, default: 0] += bytes
        total.add(bytes)
    }

    /// Releases up to `bytes` of the stream's share; nothing once the stream was released.
    mutating func release(_ streamID: Int32, _ bytes: Int) {
        guard bytes > 0, let held = perStream[streamID] else { return }
        let amount = min(held, bytes)
        perStream[streamID] = held - amount
        total.release(amount)
    }

    mutating func releaseStream(_ streamID: Int32) {
        guard let held = perStream.removeValue(forKey: streamID) else { return }
        total.release(held)
    }

    mutating func releaseAll() {
        perStream.removeAll()
        total.releaseAll()
    }

    var bytes: Int { total.held }
}

extension ProxyServices {
    /// Whether the proxy holds more than `limits.max_buffered_bytes` now: a new request is then shed
    /// (the exchange counts it).
    func isOverloaded(runtime: ProxyRuntime) -> Bool {
        limits.buffered.isOver(runtime.limits.maxBufferedBytes)
    }

    /// Admits a request of an authenticated tenant against its rates, or says when to retry.
    /// `bodySoFar` request bytes that arrived while authenticating are charged once admitted.
    func admitTenantRequest(tenant: String, bodySoFar: Int, runtime: ProxyRuntime, logger: Logger) -> TenantAdmission {
        let policy = runtime.limits.tenantRate
        guard !policy.isUnlimited else { return .admitted }
        let now = NIODeadline.now().uptimeNanoseconds
        switch limits.tenantRates.admit(tenant: tenant, policy: policy, now: now) {
        case .admitted:
            limits.tenantRates.charge(tenant: tenant, bytes: bodySoFar, policy: policy, now: now)
            return .admitted
        case .limited(let kind, let retryAfter):
            metrics.rateLimited(tenant: tenant, kind: kind.rawValue)
            logger.info(
                "request rate limited",
                metadata: ["tenant": "\(tenant)", "limit": "\(kind.rawValue)", "retry_after": "\(retryAfter)"])
            return .limited(retryAfter: retryAfter)
        }
    }

    /// Charges the items of an admitted request's payload to its tenant's item budget.
    func chargeTenantItems(tenant: String, items: Int, runtime: ProxyRuntime) {
        let policy = runtime.limits.tenantRate
        guard policy.limitsItems else { return }
        limits.tenantRates.charge(tenant: tenant, items: items, policy: policy, now: NIODeadline.now().uptimeNanoseconds)
    }

    /// Charges request body bytes of an admitted request to its tenant's byte budget.
    func chargeTenantBody(tenant: String, bytes: Int, runtime: ProxyRuntime) {
        let policy = runtime.limits.tenantRate
        guard !policy.isUnlimited else { return }
        limits.tenantRates.charge(tenant: tenant, bytes: bytes, policy: policy, now: NIODeadline.now().uptimeNanoseconds)
    }
}
