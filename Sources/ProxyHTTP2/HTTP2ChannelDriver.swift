import NIOCore

/// What an `HTTP2ChannelDriver` reports: each event its session produced, in order.
public protocol HTTP2ChannelDriverDelegate: AnyObject {
    func handle(_ event: HTTP2Event)
    /// A flush asked for with `scheduleFlush` is due: flush now (`HTTP2ChannelDriver.flush`) with the
    /// connection's own policy (writability, closing when the session is finished).
    func flushScheduledOutput()
}

/// Drives one `HTTP2Session` over one NIO channel: feeds it the bytes read, hands the events it
/// produces to the delegate one at a time, and writes what it wants to send as one write per flush.
/// The proxy's client connections (`HTTP2ServerConnection`), its h2c upstream connections and the
/// sink's gRPC listener each own one, and keep only their own policy (which streams exist, when to
/// close).
///
/// Owned by the channel handler that owns the session; `attach` in `handlerAdded`, `detach` in
/// `handlerRemoved` (the context holds the handler strongly, so keeping it would be a cycle). The
/// delegate is that handler, held unowned. Only on the channel's event loop.
///
/// Events are queued and handled in order: handling one can submit work whose output drain produces
/// more events, and those are handled by the loop already running, never by a nested one.
public final class HTTP2ChannelDriver {
    public let session: HTTP2Session
    /// The handler that owns this driver: it outlives it.
    private unowned let delegate: any HTTP2ChannelDriverDelegate
    private var context: ChannelHandlerContext?
    private var events: [HTTP2Event] = []
    private var handling = false
    private var flushScheduled = false
    /// Output waited for the channel to become writable (`flush(whenWritable: true)`).
    public private(set) var outputPending = false

    /// Takes ownership of `session`.
    public init(session: HTTP2Session, delegate: any HTTP2ChannelDriverDelegate) {
        self.session = session
        self.delegate = delegate
    }

    public func attach(_ context: ChannelHandlerContext) {
        self.context = context
    }

    public func detach() {
        context = nil
        flushScheduled = false
    }

    /// Both sides are done: the session wants neither to read nor to write.
    public var isFinished: Bool { !session.wantsRead && !session.wantsWrite }

    /// Feeds bytes read from the peer and handles the events they produced. On a connection error the
    /// events produced before it are handled first, then the error is thrown (the caller closes).
    public func receive(_ bytes: ByteBuffer) throws(HTTP2Error) {
        do {
            try session.receive(bytes, events: &events)
        } catch {
            handleEvents()
            throw error
        }
        handleEvents()
    }

    /// Coalesces output: work done for many streams (and upstream events) in one event-loop tick
    /// leaves as one write. The delegate flushes when it is due, unless a flush happened meanwhile.
    public func scheduleFlush() {
        guard !flushScheduled, let context else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute { [self] in
            if flushScheduled { delegate.flushScheduledOutput() }
        }
    }

    /// Drains the session into one write and flushes it, then handles the events the drain produced.
    /// With `whenWritable`, output waits (`outputPending`) while the channel is not writable, so a peer
    /// that stops reading holds only its own flow-control windows. Throws when the session failed while
    /// producing output (the caller closes).
    @discardableResult
    public func flush(whenWritable: Bool = false) throws(HTTP2Error) -> Bool {
        flushScheduled = false
        guard let context else { return false }
        guard !whenWritable || context.channel.isWritable else {
            outputPending = true
            return false
        }
        outputPending = false
        var buffer = context.channel.allocator.buffer(capacity: 0)
        var failure: HTTP2Error?
        do {
            try session.drainOutput(into: &buffer, events: &events)
        } catch {
            failure = error
        }
        let wrote = buffer.readableBytes > 0
        if wrote { context.writeAndFlush(NIOAny(buffer), promise: nil) }
        if let failure { throw failure }
        handleEvents()
        return wrote
    }

    private func handleEvents() {
        guard !handling else { return }
        handling = true
        defer { handling = false }
        var index = 0
        while index < events.count {
            let event = events[index]
            index += 1
            delegate.handle(event)
        }
        events.removeAll(keepingCapacity: true)
    }
}
