import NIOCore
import NIOPosix
import ProxyHTTP2

/// The h2c connections to the gRPC receiver for one event loop: streams from many client
/// connections are multiplexed over few upstream connections, a new one opened only when every
/// existing one is at the receiver's MAX_CONCURRENT_STREAMS.
///
/// Lives on its event loop only; no locks.
final class UpstreamH2Pool {
    typealias Waiter = (Result<UpstreamH2Connection, any Error>) -> Void

    let eventLoop: any EventLoop
    let address: SocketAddress
    let connectTimeout: TimeAmount
    let settings: HTTP2SessionSettings

    private var connections: [UpstreamH2Connection] = []
    /// Exchanges waiting for capacity while a connection is being opened.
    private var waiters: [Waiter] = []
    private var connecting = false

    init(eventLoop: any EventLoop, address: SocketAddress, connectTimeout: TimeAmount, settings: HTTP2SessionSettings) {
        self.eventLoop = eventLoop
        self.address = address
        self.connectTimeout = connectTimeout
        self.settings = settings
    }

    /// Hands out a connection that can take one more stream now (the caller opens it at once), or
    /// opens a new connection.
    func acquire(_ completion: @escaping Waiter) {
        eventLoop.assertInEventLoop()
        if let connection = connections.first(where: { $0.hasCapacity }) {
            completion(.success(connection))
            return
        }
        waiters.append(completion)
        serveWaiters()
    }

    private func connect() {
        connecting = true
        let settings = self.settings
        let settingsTimeout = connectTimeout
        ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        UpstreamH2Connection(settings: settings, settingsTimeout: settingsTimeout))
                }
            }
            .connect(to: address)
            .assumeIsolated()
            .whenComplete { [self] result in
                connecting = false
                switch result {
                case .success(let channel):
                    do {
                        let connection = try channel.pipeline.syncOperations.handler(type: UpstreamH2Connection.self)
                        connection.onUnusable = { [weak self] gone in self?.connections.removeAll { $0 === gone } }
                        connection.onCapacity = { [weak self] _ in self?.serveWaiters() }
                        connections.append(connection)
                        serveWaiters()
                    } catch {
                        channel.close(promise: nil)
                        failWaiters(error)
                    }
                case .failure(let error):
                    failWaiters(error)
                }
            }
    }

    /// Gives waiting exchanges the capacity that exists; opens another connection for the rest.
    private func serveWaiters() {
        while !waiters.isEmpty, let connection = connections.first(where: { $0.hasCapacity }) {
            let waiter = waiters.removeFirst()
            waiter(.success(connection))  // opens its stream before returning
        }
        // Open another connection only when every connection is at the receiver's stream limit (or
        // went away) — not while one is still waiting for its SETTINGS, which may raise its limit.
        let awaitingSettings = connections.contains { $0.isActive && !$0.goingAway && !$0.receivedSettings }
        if !waiters.isEmpty && !connecting && !awaitingSettings {
            connect()
        }
    }

    private func failWaiters(_ error: any Error) {
        let failed = waiters
        waiters.removeAll()
        for waiter in failed { waiter(.failure(error)) }
    }

    /// Closes every connection (shutdown).
    func closeAll() {
        eventLoop.assertInEventLoop()
        let open = connections
        connections.removeAll()
        for connection in open { connection.close() }
    }
}
