import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ProxyAuth
import ProxyJSON

/// Keeps the signing keys of JWT providers with a remote key source (`jwks_url`, or OIDC discovery
/// from the issuer) current: fetched at start, refreshed on each provider's interval, and refetched
/// on demand when a token names an unknown key id (the provider rate-limits that). A failed fetch
/// keeps the last good key set.
///
/// Owned by the `ProxyServer`, which starts it with the listeners and stops it at shutdown; its
/// periodic refreshes are scheduled tasks on one event loop.
public final class JWKSRefresher: Sendable {
    /// Where one provider's keys come from.
    struct Source: Sendable {
        enum Location: Sendable {
            case jwks(URL)
            /// `<issuer>/.well-known/openid-configuration`, whose `jwks_uri` names the key set.
            case discovery(issuer: String)
        }

        var provider: JWTProvider
        var location: Location
        var fetcher: HTTPSFetcher
        var refreshInterval: TimeAmount
    }

    private let sources: [Source]
    private let eventLoop: any EventLoop
    private let logger: Logger
    /// Fetches under way, by provider name: concurrent refetch requests share one.
    private let inFlight: NIOLockedValueBox<[String: EventLoopFuture<Void>]> = NIOLockedValueBox([:])
    private let timers: NIOLockedValueBox<[RepeatedTask]> = NIOLockedValueBox([])

    init(sources: [Source], eventLoop: any EventLoop, logger: Logger) {
        self.sources = sources
        self.eventLoop = eventLoop
        self.logger = logger
    }

    var isEmpty: Bool { sources.isEmpty }

    /// Fetches every provider's keys now and schedules the refreshes.
    func start() {
        for source in sources {
            _ = fetch(source)
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
        let tasks = timers.withLockedValue { timers in
            defer { timers.removeAll() }
            return timers
        }
        for task in tasks { task.cancel() }
    }

    /// Refetches one provider's keys now (after `JWTProvider.claimRefetch` allowed it). The future
    /// completes on `eventLoop`'s loop once the keys were replaced or the fetch failed.
    public func refetch(_ provider: JWTProvider) -> EventLoopFuture<Void> {
        guard let source = sources.first(where: { $0.provider === provider }) else {
            return eventLoop.makeSucceededVoidFuture()
        }
        return fetch(source)
    }

    private func fetch(_ source: Source) -> EventLoopFuture<Void> {
        let name = source.provider.settings.name
        return inFlight.withLockedValue { inFlight -> EventLoopFuture<Void> in
            if let running = inFlight[name] { return running }
            let future = load(source).flatMapThrowing { [logger] bytes -> Void in
                let set = try JWKSet.parse(bytes)
                source.provider.replaceKeys(set)
                logger.info("JWKS loaded", metadata: ["provider": "\(name)", "keys": "\(set.keyIDs.count)"])
            }.flatMapErrorThrowing { [logger] error in
                logger.warning(
                    "JWKS fetch failed; keeping the last good keys",
                    metadata: ["provider": "\(name)", "error": "\(error)"])
                throw error
            }
            inFlight[name] = future
            future.whenComplete { [inFlight = self.inFlight] _ in
                inFlight.withLockedValue { _ = $0.removeValue(forKey: name) }
            }
            return future
        }
    }

    private func load(_ source: Source) -> EventLoopFuture<[UInt8]> {
        switch source.location {
        case .jwks(let url):
            return source.fetcher.get(url, on: eventLoop)
        case .discovery(let issuer):
            let trimmed = issuer.hasSuffix("/") ? String(issuer.dropLast()) : issuer
            guard let url = URL(string: trimmed + "/.well-known/openid-configuration") else {
                return eventLoop.makeFailedFuture(HTTPSFetcher.FetchError(description: "\(issuer): not a URL"))
            }
            return source.fetcher.get(url, on: eventLoop).flatMapThrowing { bytes -> URL in
                guard let document = try? JSONValue.parse(bytes), let uri = document["jwks_uri"]?.stringValue,
                      let jwksURL = URL(string: uri), jwksURL.scheme?.lowercased() == "https"
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
