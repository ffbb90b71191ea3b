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

/// The only handler of one pooled plaintext HTTP/1.1 connection to the receiver, and its codec:
/// requests are written straight into bytes (`HTTP1RequestEncoder`), responses read with the proxy's
/// parser (`HTTP1MessageDecoder`, responses), so no message part crosses a pipeline.
///
/// Owned by its channel's pipeline; the pool keeps it while idle, an exchange while leased. Reads are
/// held while the client cannot take more response bytes, so at most a socket read is buffered. A
/// request's head, a small body and its end are gathered and written at once on `flush`.
final class UpstreamHTTP1Connection: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Receivers are trusted more than clients, but their responses are still bounded.
    private var decoder = HTTP1MessageDecoder(kind: .response, maxHeaderBytes: 64 * 1024, maxHeaderCount: 256)
    private var encoder = HTTP1RequestEncoder()
    /// Request bytes not yet handed to the channel.
    private var output: ByteBuffer?

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
        // A response whose body the close ends is complete now.
        if let end = decoder.inputClosed(), let exchange { deliver(end, to: exchange, context: context) }
        output = nil
        let exchange = self.exchange
        self.exchange = nil
        onClose?(self)
        onClose = nil
        exchange?.upstreamClosed()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        decoder.feed(unwrapInboundIn(data))
        while let event = decoder.next() {
            guard let exchange else {
                // Bytes from the receiver while no request is outstanding: the connection is out of step.
                outOfStep(context: context)
                return
            }
            guard deliver(event, to: exchange, context: context) else { return }
        }
        // Bytes left after the response ended, with the connection back in the pool: out of step too.
        if exchange == nil && decoder.hasBufferedBytes { outOfStep(context: context) }
    }

    /// Hands one response event to the exchange; false when the connection is closing.
    @discardableResult
    private func deliver(_ event: HTTP1MessageDecoder.Event, to exchange: any UpstreamHTTP1Exchange, context: ChannelHandlerContext)
        -> Bool
    {
        switch event {
        case .responseHead(let head, let keepAlive):
            if head.status.code >= 200 && !keepAlive { reusable = false }
            exchange.upstreamReceived(.head(head))
        case .body(let buffer):
            exchange.upstreamReceived(.body(buffer))
        case .end:
            exchange.upstreamReceived(.end(nil))
        case .head, .error:
            // Bytes that are no response, or one that could be read two ways: the connection
            // cannot be trusted any more.
            outOfStep(context: context)
            return false
        }
        return true
    }

    private func outOfStep(context: ChannelHandlerContext) {
        reusable = false
        decoder.discardBuffered()
        context.close(promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        exchange?.upstreamReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        exchange?.upstreamWritabilityChanged(isWritable: context.channel.isWritable)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A reset or another transport error: the connection cannot be trusted any more.
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

    /// Bodies up to this size are copied behind the head into one write; larger ones are written as
    /// they are, without a copy.
    private static let coalescedBodyBytes = 4096

    /// Starts a request with its head. A head that cannot be written unambiguously is not: the
    /// connection closes instead, which its exchange sees as the receiver gone.
    func writeHead(_ head: HTTPRequestHead) {
        guard let context else { return }
        var out = output ?? context.channel.allocator.buffer(capacity: 512)
        guard encoder.writeHead(head, into: &out) else {
            reusable = false
            output = nil
            context.close(promise: nil)
            return
        }
        output = out
    }

    func writeBody(_ data: ByteBuffer) {
        guard let context else { return }
        if encoder.passesBodyThrough && data.readableBytes > Self.coalescedBodyBytes {
            writeOutput(context: context)
            context.write(wrapOutboundOut(data), promise: nil)
            return
        }
        var out = output ?? context.channel.allocator.buffer(capacity: data.readableBytes + 32)
        encoder.writeBody(data, into: &out)
        output = out
    }

    func writeEnd() {
        guard let context else { return }
        var out = output ?? context.channel.allocator.buffer(capacity: 8)
        encoder.writeEnd(into: &out)
        output = out
    }

    private func writeOutput(context: ChannelHandlerContext) {
        if let out = output {
            output = nil
            if out.readableBytes > 0 { context.write(wrapOutboundOut(out), promise: nil) }
        }
    }

    func flush() {
        guard let context else { return }
        writeOutput(context: context)
        context.flush()
    }

    /// Marks the connection unusable and closes it (an aborted exchange leaves it mid-message).
    func abort() {
        reusable = false
        exchange = nil
        output = nil
        context?.close(promise: nil)
    }
}
