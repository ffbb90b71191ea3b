import NIOCore
import NIOHTTP1
import NIOPosix

/// The keep-alive connections to one upstream address for one event loop.
///
/// Lives on its event loop only (reached through a loop-bound box), so it needs no locks: the client
/// channel, its exchange and the upstream channel all run on the same loop.
final class UpstreamHTTP1Pool {
    let eventLoop: any EventLoop
    let address: SocketAddress
    let connectTimeout: TimeAmount
    let maxIdle: Int
    /// How long a connection may sit unused before the pool closes it, so the receiver's own idle
    /// timeout (Go's default is longer) rarely races a new request.
    let idleTimeout: TimeAmount = .seconds(30)

    private var idle: [UpstreamHTTP1Connection] = []
    /// One timer per pool closes connections idle longer than `idleTimeout` (instead of a timer per
    /// connection scheduled and cancelled on every request). Runs only while connections are idle.
    private var sweep: Scheduled<Void>?

    init(eventLoop: any EventLoop, address: SocketAddress, connectTimeout: TimeAmount, maxIdle: Int) {
        self.eventLoop = eventLoop
        self.address = address
        self.connectTimeout = connectTimeout
        self.maxIdle = maxIdle
    }

    /// Hands out an idle connection or opens a new one; `completion` runs on the event loop.
    func acquire(_ completion: @escaping (Result<UpstreamHTTP1Connection, any Error>) -> Void) {
        eventLoop.assertInEventLoop()
        while let connection = idle.popLast() {
            connection.idleSince = nil
            if connection.isActive && connection.reusable {
                completion(.success(connection))
                return
            }
        }
        ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    // The connection is its own HTTP/1.1 codec.
                    try sync.addHandler(UpstreamHTTP1Connection())
                }
            }
            .connect(to: address)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    do {
                        let connection = try channel.pipeline.syncOperations.handler(type: UpstreamHTTP1Connection.self)
                        completion(.success(connection))
                    } catch {
                        channel.close(promise: nil)
                        completion(.failure(error))
                    }
                case .failure(let error):
                    completion(.failure(error))
                }
            }
    }

    /// Takes a connection back after an exchange completed both ways; closes it when not reusable.
    func release(_ connection: UpstreamHTTP1Connection) {
        eventLoop.assertInEventLoop()
        connection.exchange = nil
        connection.holdReads(false)
        guard connection.isActive, connection.reusable, idle.count < maxIdle else {
            connection.abort()
            return
        }
        if connection.onClose == nil {
            connection.onClose = { [weak self] closed in
                self?.idle.removeAll { $0 === closed }
            }
        }
        connection.idleSince = .now()
        idle.append(connection)
        if sweep == nil { scheduleSweep() }
    }

    private func scheduleSweep() {
        sweep = eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(idleTimeout.nanoseconds / 3)) { [weak self] in
            self?.closeExpired()
        }
    }

    /// Closes the connections idle for `idleTimeout` or longer (the oldest sit first in `idle`).
    private func closeExpired() {
        sweep = nil
        let cutoff = NIODeadline.now() - idleTimeout
        let expired = idle.prefix { ($0.idleSince ?? .distantFuture) <= cutoff }
        idle.removeFirst(expired.count)
        for connection in expired { connection.abort() }
        if !idle.isEmpty { scheduleSweep() }
    }

    /// Closes every idle connection (shutdown).
    func closeIdle() {
        eventLoop.assertInEventLoop()
        let connections = idle
        idle.removeAll()
        sweep?.cancel()
        sweep = nil
        for connection in connections { connection.abort() }
    }
}
