import Logging
import NIOCore
import ProxyTLS
import Synchronization

/// Why an accepted connection was closed before its pipeline was built. Thrown from the child
/// channel initializer, which makes the server bootstrap close the connection.
struct ConnectionRefused: Error, CustomStringConvertible {
    var reason: String
    var description: String { "connection refused: \(reason)" }
}

/// Counts an accepted connection against `limits.max_connections`, or refuses it (throws) when the
/// limit is reached. A counted connection is uncounted when it closes, whatever closes it.
/// Runs on the connection's event loop, before any handler is added.
func admitConnection(
    _ channel: any Channel, listener: String, runtime: ProxyRuntime, services: ProxyServices, logger: Logger
) throws(ConnectionRefused) {
    let gate = services.limits.connections
    guard gate.tryOpen(limit: runtime.limits.maxConnections) else {
        services.metrics.connectionRefused(listener: listener, reason: "max_connections")
        if gate.shouldWarn(now: NIODeadline.now().uptimeNanoseconds) {
            logger.warning(
                "connection limit reached, closing new connections",
                metadata: ["listener": "\(listener)", "limits.max_connections": "\(runtime.limits.maxConnections)"])
        }
        throw ConnectionRefused(reason: "max_connections")
    }
    channel.closeFuture.whenComplete { _ in gate.closed() }
}

extension ConnectionGate {
    /// At most one warning every 10 seconds while connections are refused: a flood must not flood the log.
    func shouldWarn(now: UInt64) -> Bool {
        let last = lastWarning.load(ordering: .relaxed)
        guard last == 0 || now &- last >= 10_000_000_000 else { return false }
        return lastWarning.compareExchange(expected: last, desired: max(now, 1), ordering: .relaxed).exchanged
    }
}

/// Closes a connection whose TLS handshake has not completed within `limits.handshake_timeout` of
/// being accepted, so clients that connect and stay silent (or trickle a ClientHello) do not hold
/// connections. Sits right after the TLS handler; removes itself when the handshake completes, after
/// passing the event on. The timer is cancelled when the handler goes (handshake done or channel closed).
final class HandshakeTimeoutHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let timeout: TimeAmount
    private let metrics: ProxyMetrics
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount, metrics: ProxyMetrics) {
        self.timeout = timeout
        self.metrics = metrics
    }

    func handlerAdded(context: ChannelHandlerContext) {
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [metrics] in
            guard context.channel.isActive else { return }
            metrics.tlsHandshakeFailed(reason: "timeout")
            context.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is TLSServerEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        timer?.cancel()
        timer = nil
        context.fireUserInboundEventTriggered(event)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }
}
