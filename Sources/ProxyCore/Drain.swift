import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Sent down every open client connection when the proxy starts draining: the HTTP/2 front sends
/// the shutdown notice and then the final GOAWAY; the HTTP/1.1 front answers with
/// `Connection: close` and closes idle keep-alive connections; a connection still in its TLS
/// handshake passes it to the front it installs.
struct ProxyDrainEvent: Sendable {}

/// The client connections the server accepted and that are still open, so a drain can reach them
/// and wait for them. Channels remove themselves when they close.
final class ConnectionRegistry: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var draining = false
        /// The most channels open at once since `peakSinceLastCall()` was last called.
        var peak = 0
    }

    private let state = NIOLockedValueBox(State())

    /// Records a newly accepted channel; false once draining (the caller refuses the connection).
    func register(_ channel: any Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        let accepted = state.withLockedValue { state -> Bool in
            guard !state.draining else { return false }
            state.channels[id] = channel
            state.peak = max(state.peak, state.channels.count)
            return true
        }
        if accepted {
            channel.closeFuture.whenComplete { [state] _ in
                state.withLockedValue { _ = $0.channels.removeValue(forKey: id) }
            }
        }
        return accepted
    }

    var isDraining: Bool { state.withLockedValue { $0.draining } }

    var count: Int { state.withLockedValue { $0.channels.count } }

    /// The channels open now and the most open at once since the previous call; starts the next
    /// period at the current count.
    func peakSinceLastCall() -> (open: Int, peak: Int) {
        state.withLockedValue { state in
            defer { state.peak = state.channels.count }
            return (state.channels.count, state.peak)
        }
    }

    /// Marks the registry draining and returns the open channels.
    func startDraining() -> [any Channel] {
        state.withLockedValue { state in
            state.draining = true
            return Array(state.channels.values)
        }
    }

    var open: [any Channel] { state.withLockedValue { Array($0.channels.values) } }
}

/// Thrown from the child channel initializer for a connection accepted while draining; the
/// bootstrap closes it.
struct DrainingError: Error {}

extension ProxyServer {
    /// True from the moment a drain starts: the readiness check reports not-ready.
    public var isDraining: Bool { connections.isDraining }

    /// Client connections open now.
    public var openConnections: Int { connections.count }

    /// Graceful shutdown: turns not-ready, stops accepting, asks every open connection to finish
    /// (HTTP/2 shutdown notice then final GOAWAY; HTTP/1.1 `Connection: close`, idle connections
    /// closed at once), waits up to `timeout` for requests in flight, then closes whatever is left.
    /// Call `shutdown()` afterwards to release the pools and the thread pool.
    public func drain(timeout: Duration) async {
        let open = connections.startDraining()
        await closeListeners()
        // Logged once the listeners are closed, so what the line says is already true.
        logger.info(
            "draining: no new connections, finishing requests in flight",
            metadata: ["connections": "\(open.count)", "drain_timeout": "\(timeout)"])
        for channel in open {
            channel.pipeline.fireUserInboundEventTriggered(ProxyDrainEvent())
        }
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while connections.count > 0, clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let left = connections.open
        if !left.isEmpty {
            logger.warning(
                "drain timeout reached; closing connections still open", metadata: ["connections": "\(left.count)"])
        }
        for channel in left {
            try? await channel.close()
            // The registry forgets a channel in its close future's first callback; wait for it, so
            // `openConnections` is 0 when the drain returns.
            try? await channel.closeFuture.get()
        }
        logger.info("drained")
    }
}
