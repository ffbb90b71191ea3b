import Logging
import NIOConcurrencyHelpers
import NIOCore
import ProxyAuth
import ProxyConfig
import ProxyJSON

/// Keeps the signing keys of JWT providers with a remote key source (`jwks_url`, or OIDC discovery
/// from the issuer) current: fetched at start, refreshed on each provider's interval, and refetched
/// on demand when a token names an unknown key id (the provider rate-limits that). A failed fetch
/// keeps the last good key set.
///
/// Owned by the `ProxyServer`, which starts it with the listeners and stops it at shutdown; its
/// periodic refreshes are scheduled tasks on one event loop. A reload replaces the sources
/// (`replaceSources`); the last good key set of each provider is remembered with where it came
/// from, so a reloaded provider with the same key source starts with those keys.
public final class JWKSRefresher: Sendable {
    /// Where one provider's keys come from.
    struct Source: Sendable {
        enum Location: Sendable {
            case jwks(FetchURL)
            /// `<issuer>/.well-known/openid-configuration`, whose `jwks_uri` names the key set.
            case discovery(issuer: String, document: FetchURL)
        }

        var provider: JWTProvider
        var location: Location
        var fetcher: HTTPSFetcher
        var refreshInterval: TimeAmount
        /// The CA file the fetcher trusts (nil: the system roots).
        var caFile: String?

        /// Where the keys come from, as compared across reloads.
        var origin: String {
            let place: String
            switch location {
            case .jwks(let url): place = "jwks \(url.text)"
            case .discovery(let issuer, _): place = "discovery \(issuer)"
            }
            return place + " ca \(caFile ?? "-")"
        }
    }

    private let sourcesBox: NIOLockedValueBox<[Source]>
    /// The last key set fetched for each provider name, with the key source it came from.
    private let lastGood: NIOLockedValueBox<[String: (origin: String, keys: JWKSet)]> = NIOLockedValueBox([:])
    private let started = NIOLockedValueBox(false)
    /// Sources replaced by reloads, newest last, for refetches from connections that still use them.
    private let retired: NIOLockedValueBox<[Source]> = NIOLockedValueBox([])
    private static let retiredLimit = 64
    private let eventLoop: any EventLoop
    private let logger: Logger
    /// Fetches under way, by provider: concurrent refetch requests share one.
    private let inFlight: NIOLockedValueBox<[ObjectIdentifier: EventLoopFuture<Void>]> = NIOLockedValueBox([:])
    private let timers: NIOLockedValueBox<[RepeatedTask]> = NIOLockedValueBox([])

    init(sources: [Source], eventLoop: any EventLoop, logger: Logger) {
        self.sourcesBox = NIOLockedValueBox(sources)
        self.eventLoop = eventLoop
        self.logger = logger
    }

    var isEmpty: Bool { sources.isEmpty }

    private var sources: [Source] { sourcesBox.withLockedValue { $0 } }

    /// Fetches every provider's keys now and schedules the refreshes.
    func start() {
        started.withLockedValue { $0 = true }
        schedule(sources, fetchNow: { _ in true })
    }

    private func schedule(_ sources: [Source], fetchNow: (Source) -> Bool) {
        for source in sources {
            if fetchNow(source) { _ = fetch(source) }
            let task = eventLoop.scheduleRepeatedAsyncTask(
                initialDelay: source.refreshInterval, delay: source.refreshInterval
            ) { [self] _ in
                fetch(source).recover { _ in }
            }
            timers.withLockedValue { $0.append(task) }
        }
    }

    /// Cancels the scheduled refreshes.
    func stop() {
        started.withLockedValue { $0 = false }
        cancelTimers()
    }

    private func cancelTimers() {
        let tasks = timers.withLockedValue { timers in
            defer { timers.removeAll() }
            return timers
        }
        for task in tasks { task.cancel() }
    }

    /// Refetches one provider's keys now (after `JWTProvider.claimRefetch` allowed it). The future
    /// completes on `eventLoop`'s loop once the keys were replaced or the fetch failed.
    public func refetch(_ provider: JWTProvider) -> EventLoopFuture<Void> {
        // A request that began before a reload finishes with its runtime, so its providers may be retired ones.
        let known = sourcesBox.withLockedValue { $0 } + retired.withLockedValue { $0 }
        guard let source = known.first(where: { $0.provider === provider }) else {
            return eventLoop.makeSucceededVoidFuture()
        }
        return fetch(source)
    }

    private func fetch(_ source: Source) -> EventLoopFuture<Void> {
        let name = source.provider.settings.name
        return inFlight.withLockedValue { inFlight -> EventLoopFuture<Void> in
            let id = ObjectIdentifier(source.provider)
            if let running = inFlight[id] { return running }
            let future = load(source).flatMapThrowing { [logger, self] bytes -> Void in
                let set = try JWKSet.parse(bytes)
                source.provider.replaceKeys(set)
                self.lastGood.withLockedValue { $0[name] = (source.origin, set) }
                logger.info("JWKS loaded", metadata: ["provider": "\(name)", "keys": "\(set.keyIDs.count)"])
            }.flatMapErrorThrowing { [logger] error in
                logger.warning(
                    "JWKS fetch failed; keeping the last good keys",
                    metadata: ["provider": "\(name)", "error": "\(error)"])
                throw error
            }
            inFlight[id] = future
            future.whenComplete { [inFlight = self.inFlight] _ in
                inFlight.withLockedValue { _ = $0.removeValue(forKey: id) }
            }
            return future
        }
    }

    /// Follows a reload: the new runtime's providers replace the old ones. A new provider whose
    /// key source (name, location and CA file) is unchanged gets the last good keys at once and keeps
    /// its refresh interval; any other is fetched now. Called before the new runtime is served, so
    /// no request sees a provider without its keys.
    func replaceSources(_ newSources: [Source]) {
        let remembered = lastGood.withLockedValue { $0 }
        var carried: Set<String> = []
        for source in newSources {
            let name = source.provider.settings.name
            if let previous = remembered[name], previous.origin == source.origin {
                source.provider.replaceKeys(previous.keys)
                carried.insert(name)
            }
        }
        lastGood.withLockedValue { last in
            let names = Set(newSources.map(\.provider.settings.name))
            last = last.filter { names.contains($0.key) }
        }
        let old = sourcesBox.withLockedValue { sources in
            defer { sources = newSources }
            return sources
        }
        retired.withLockedValue { retired in
            retired.append(contentsOf: old)
            if retired.count > Self.retiredLimit { retired.removeFirst(retired.count - Self.retiredLimit) }
        }
        guard started.withLockedValue({ $0 }) else { return }
        cancelTimers()
        schedule(newSources, fetchNow: { !carried.contains($0.provider.settings.name) })
    }

    private func load(_ source: Source) -> EventLoopFuture<[UInt8]> {
        switch source.location {
        case .jwks(let url):
            return source.fetcher.get(url, on: eventLoop)
        case .discovery(_, let url):
            return source.fetcher.get(url, on: eventLoop).flatMapThrowing { bytes -> FetchURL in
                guard let document = try? JSONValue.parse(bytes), let uri = document["jwks_uri"]?.stringValue,
                      let jwksURL = try? FetchURL(parsing: uri), jwksURL.isHTTPS
                else {
                    throw HTTPSFetcher.FetchError(description: "\(url): no https jwks_uri in the discovery document")
                }
                return jwksURL
            }.flatMap { jwksURL in
                source.fetcher.get(jwksURL, on: self.eventLoop)
            }
        }
    }
}
