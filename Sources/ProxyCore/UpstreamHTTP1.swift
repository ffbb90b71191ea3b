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

/// The handler of one pooled plaintext HTTP/1.1 connection to the receiver, and its codec: it is the
/// only handler in the channel's pipeline, writing requests with `HTTP1RequestWriter` and reading
/// responses with `HTTP1ResponseParser` (rather than NIO's general client codec, which cost two more
/// handlers and a hop through each per part).
///
/// Owned by its channel's pipeline; the pool keeps it while idle, an exchange while leased. Reads are
/// held while the client cannot take more response bytes, so at most a socket read is buffered.
/// A malformed response, or bytes from the receiver while no request is outstanding, close the
/// connection (the exchange sees `upstreamClosed`).
final class UpstreamHTTP1Connection: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

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

    private var writer = HTTP1RequestWriter()
    /// Request bytes not yet passed to the channel: the head, with small body pieces appended to it,
    /// so a small request leaves as one buffer. Written at `flush()` or before a large body piece.
    private var outbound: ByteBuffer?
    private var parser = HTTP1ResponseParser()
    /// Received bytes the parser could not use yet (part of a head or a chunk-size line).
    private var inbound: ByteBuffer?

    /// Body pieces up to this size are copied behind the head instead of written separately.
    private static let coalesceLimit = 16 * 1024

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
        // A body that runs until the receiver closes ends here.
        if let end = parser.endOfInput(), let exchange {
            exchange.upstreamReceived(end)
        }
        let exchange = self.exchange
        self.exchange = nil
        onClose?(self)
        onClose = nil
        exchange?.upstreamClosed()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        if var held = inbound {
            inbound = nil
            held.writeBuffer(&buffer)
            buffer = held
        }
        while true {
            guard let exchange else {
                guard buffer.readableBytes == 0 else {
                    // Bytes from the receiver while no request is outstanding: the connection is out of step.
                    reusable = false
                    context.close(promise: nil)
                    return
                }
                break
            }
            let part: HTTP1ResponseParser.Part?
            do {
                part = try parser.next(&buffer)
            } catch {
                // A response the proxy cannot read unambiguously: the connection cannot be trusted any more.
                reusable = false
                context.close(promise: nil)
                return
            }
            guard let part else { break }
            switch part {
            case .head(let head):
                if !Self.isKeepAlive(head) || parser.readsUntilClose { reusable = false }
            case .end:
                // More bytes right behind a complete response: the receiver is out of step, so the
                // connection must not go back to the pool when the exchange releases it.
                if buffer.readableBytes > 0 { reusable = false }
            case .body:
                break
            }
            exchange.upstreamReceived(part)
        }
        if buffer.readableBytes > 0 { inbound = buffer }
    }

    /// Keep-alive unless HTTP/1.0 or `Connection: close`.
    private static func isKeepAlive(_ head: HTTPResponseHead) -> Bool {
        guard head.version.minor == 1 else { return false }
        for (name, value) in head.headers where HTTP1RequestWriter.equalsLowercased(name, "connection") {
            for token in value.split(separator: ",") {
                let trimmed = token.drop { $0 == " " || $0 == "\t" }
                if trimmed.prefix(5).lowercased() == "close", trimmed.dropFirst(5).allSatisfy({ $0 == " " || $0 == "\t" }) {
                    return false
                }
            }
        }
        return true
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        exchange?.upstreamReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        exchange?.upstreamWritabilityChanged(isWritable: context.channel.isWritable)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A reset or other transport error: the connection cannot be trusted any more.
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

    /// Queues one part of the request; `flush()` sends what is queued.
    func write(_ part: HTTPClientRequestPart) {
        guard let context else { return }
        switch part {
        case .head(let head):
            var out = context.channel.allocator.buffer(capacity: 2048)
            guard writer.writeHead(head, into: &out) else {
                // A field that cannot go on the wire as-is (NIO's header validator refused these too).
                reusable = false
                context.close(promise: nil)
                return
            }
            writeOutbound(context: context)
            outbound = out
        case .body(.byteBuffer(var body)):
            let length = body.readableBytes
            // A zero-size chunk would end a chunked body.
            guard length > 0 else { return }
            if length <= Self.coalesceLimit {
                var out = outbound ?? context.channel.allocator.buffer(capacity: length + 16)
                writer.writeBodyPrefix(length: length, into: &out)
                out.writeBuffer(&body)
                writer.writeBodySuffix(into: &out)
                outbound = out
            } else {
                var out = outbound ?? context.channel.allocator.buffer(capacity: 16)
                writer.writeBodyPrefix(length: length, into: &out)
                outbound = out
                writeOutbound(context: context)
                context.write(wrapOutboundOut(body), promise: nil)
                var suffix = context.channel.allocator.buffer(capacity: 2)
                writer.writeBodySuffix(into: &suffix)
                if suffix.readableBytes > 0 { outbound = suffix }
            }
        case .body(.fileRegion):
            preconditionFailure("request bodies are never file regions")
        case .end:
            guard writer.chunked else { return }
            var out = outbound ?? context.channel.allocator.buffer(capacity: 8)
            writer.writeEnd(into: &out)
            outbound = out
        }
    }

    private func writeOutbound(context: ChannelHandlerContext) {
        guard let out = outbound else { return }
        outbound = nil
        if out.readableBytes > 0 { context.write(wrapOutboundOut(out), promise: nil) }
    }

    func flush() {
        guard let context else { return }
        writeOutbound(context: context)
        context.flush()
    }

    /// Marks the connection unusable and closes it (an aborted exchange leaves it mid-message).
    func abort() {
        reusable = false
        exchange = nil
        outbound = nil
        context?.close(promise: nil)
    }
}

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
