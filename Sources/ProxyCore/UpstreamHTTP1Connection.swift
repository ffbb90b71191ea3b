import NIOCore
import NIOHTTP1
import NIOPosix

/// What an upstream connection reports to the exchange currently using it. Called on the event loop
/// that owns both the client and the upstream channel (the pool is per event loop), so no hops.
protocol UpstreamHTTP1Exchange: AnyObject {
    func upstreamReceived(_ part: HTTPClientResponsePart)
    func upstreamReadComplete()
    func upstreamWritabilityChanged(isWritable: Bool)
    /// The connection closed or failed while this exchange was using it.
    func upstreamClosed()
}

/// The handler at the end of one pooled plaintext HTTP/1.1 connection to the receiver.
///
/// Owned by its channel's pipeline; the pool keeps it while idle, an exchange while leased. Reads are
/// held while the client cannot take more response bytes, so at most a socket read is buffered.
final class UpstreamHTTP1Connection: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    /// The exchange using this connection; nil while idle in the pool.
    weak var exchange: (any UpstreamHTTP1Exchange)?
    /// Called once when the channel goes away, so the pool can forget an idle connection.
    var onClose: ((UpstreamHTTP1Connection) -> Void)?
    /// False once the receiver said `Connection: close` or answered over HTTP/1.0.
    private(set) var reusable = true
    private(set) var isActive = false

    private var context: ChannelHandlerContext?
    private var readsHeld = false
    private var pendingRead = false
    /// When the connection went back to the pool; the pool's sweep closes it once it has been idle too long.
    var idleSince: NIODeadline?

    var isWritable: Bool { context?.channel.isWritable ?? false }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        isActive = context.channel.isActive
    }

    /// The context holds this handler strongly: keeping it after removal would be a cycle that
    /// leaks both with every closed connection.
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        isActive = true
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        isActive = false
        reusable = false
        let exchange = self.exchange
        self.exchange = nil
        onClose?(self)
        onClose = nil
        exchange?.upstreamClosed()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if case .head(let head) = part, head.status.code >= 200 {
            if !head.isKeepAlive { reusable = false }
        }
        guard let exchange else {
            // Bytes from the receiver while no request is outstanding: the connection is out of step.
            reusable = false
            context.close(promise: nil)
            return
        }
        exchange.upstreamReceived(part)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        exchange?.upstreamReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        exchange?.upstreamWritabilityChanged(isWritable: context.channel.isWritable)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A decode error or reset: the connection cannot be trusted any more.
        reusable = false
        context.close(promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        if readsHeld {
            pendingRead = true
        } else {
            context.read()
        }
    }

    /// Stops or resumes reading from the receiver (client-side backpressure).
    func holdReads(_ hold: Bool) {
        readsHeld = hold
        if !hold, pendingRead, let context {
            pendingRead = false
            context.read()
        }
    }

    func write(_ part: HTTPClientRequestPart) {
        context?.write(wrapOutboundOut(part), promise: nil)
    }

    func flush() {
        context?.flush()
    }

    /// Marks the connection unusable and closes it (an aborted exchange leaves it mid-message).
    func abort() {
        reusable = false
        exchange = nil
        context?.close(promise: nil)
    }
}
