import NIOCore
import NIOHTTP1

/// The client side of an `UpstreamHTTP1Relay`: the front that relays the receiver's response to its
/// client. Called on the event loop of both connections.
protocol UpstreamHTTP1RelayClient: AnyObject {
    /// The final response head (informational responses are dropped: the proxy answers `Expect` itself).
    func relayResponseHead(_ head: HTTPResponseHead)
    func relayResponseBody(_ buffer: ByteBuffer)
    /// The response ended. The relay already gave the connection back to the pool, or closed it when
    /// the request had not been sent whole (`requestWasComplete` false).
    func relayResponseEnded(requestWasComplete: Bool)
    /// The receiver closed or failed before the response ended.
    func relayUpstreamClosed()
    /// A read from the receiver ended: a good moment to flush what was relayed.
    func relayReadComplete()
    /// The receiver connection can take more request bytes again, or no more for now.
    func relayWritabilityChanged(isWritable: Bool)
}

/// One request relayed to the HTTP receiver over a leased, pooled HTTP/1.1 connection, for either
/// front (HTTP/1.1 clients, and OTLP/HTTP over HTTP/2).
///
/// Writes the request and hands the response to its client. The receiver must never hold a complete
/// request before the client's request has ended within its declared Content-Length (HTTP/2 ends a
/// request at END_STREAM, HTTP/1.1 at the declared length): so the last declared byte, and for a
/// declared zero the head itself, wait for the client's end. A client stream that carries more than it
/// declared is then cut off while the receiver's request is still incomplete. At most one byte waits.
///
/// Owns the lease: `abort` or the end of the response gives the connection back (or closes it). All
/// calls happen on the event loop that owns the client and the upstream connection.
final class UpstreamHTTP1Relay: UpstreamHTTP1Exchange {
    private let connection: UpstreamHTTP1Connection
    private let pool: UpstreamHTTP1Pool
    /// The client. Weak: the client owns the relay.
    private weak var client: (any UpstreamHTTP1RelayClient)?
    private let declaredLength: Int?
    /// Request body bytes written to the receiver.
    private var forwardedBytes = 0
    /// The tail of the body kept back until the client's end (at most the last declared byte).
    private var heldBody: ByteBuffer?
    /// The head of a request declared empty whose client request has not ended yet.
    private var heldHead: HTTPRequestHead?
    private(set) var requestSent = false
    private var settled = false

    init(connection: UpstreamHTTP1Connection, pool: UpstreamHTTP1Pool, declaredLength: Int?, client: any UpstreamHTTP1RelayClient) {
        self.connection = connection
        self.pool = pool
        self.declaredLength = declaredLength
        self.client = client
        connection.exchange = self
    }

    var isWritable: Bool { connection.isWritable }

    /// Writes the request head (held while a request declared empty has not ended yet).
    func start(head: HTTPRequestHead, requestComplete: Bool) {
        if declaredLength == 0 && !requestComplete {
            heldHead = head
        } else {
            connection.writeHead(head)
        }
    }

    /// Writes a chunk of the request body; `end` when the client's request ended with it (an empty
    /// chunk may only end it). Flushes when asked, and always at the end.
    func send(_ data: ByteBuffer, end: Bool, flush: Bool) {
        guard !settled else { return }
        let size = data.readableBytes
        var sendable = data
        if end {
            if let head = heldHead {
                connection.writeHead(head)
                heldHead = nil
            }
            if var held = heldBody {
                held.writeImmutableBuffer(data)
                sendable = held
                heldBody = nil
            }
        } else if heldHead != nil {
            // Declared empty and not ended: any body is a length mismatch the client side refuses.
            sendable.clear()
        } else if let declared = declaredLength, forwardedBytes + size >= declared {
            let now = max(0, declared - 1 - forwardedBytes)
            sendable = data.getSlice(at: data.readerIndex, length: now)!
            let tail = data.getSlice(at: data.readerIndex + now, length: size - now)!
            if var held = heldBody {
                held.writeImmutableBuffer(tail)
                heldBody = held
            } else {
                heldBody = tail
            }
        }
        forwardedBytes += sendable.readableBytes
        if sendable.readableBytes > 0 { connection.writeBody(sendable) }
        if end {
            connection.writeEnd()
            requestSent = true
        }
        if flush || end { connection.flush() }
    }

    func flush() {
        connection.flush()
    }

    /// Stops or resumes reading the response (the client cannot take more now).
    func holdReads(_ hold: Bool) {
        connection.holdReads(hold)
    }

    /// Drops the request: the connection is left mid-message, so it is closed, never reused.
    func abort() {
        guard !settled else { return }
        settled = true
        connection.exchange = nil
        connection.abort()
    }

    // MARK: UpstreamHTTP1Exchange

    func upstreamReceived(_ part: HTTPClientResponsePart) {
        guard !settled else { return }
        switch part {
        case .head(let head):
            guard head.status.code >= 200 else { return }
            client?.relayResponseHead(head)
        case .body(let buffer):
            client?.relayResponseBody(buffer)
        case .end:
            // Settle the connection first: ending the client's response can close the client at once,
            // and the client must then find nothing left to cancel.
            settled = true
            connection.exchange = nil
            let complete = requestSent
            if complete {
                pool.release(connection)
            } else {
                connection.abort()
            }
            client?.relayResponseEnded(requestWasComplete: complete)
        }
    }

    func upstreamReadComplete() {
        client?.relayReadComplete()
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        client?.relayWritabilityChanged(isWritable: isWritable)
    }

    func upstreamClosed() {
        guard !settled else { return }
        settled = true
        client?.relayUpstreamClosed()
    }
}
