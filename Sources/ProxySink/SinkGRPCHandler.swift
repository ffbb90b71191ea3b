// The sink's h2c listener: prior-knowledge HTTP/2 without TLS, one HTTP2Session per connection.
import Logging
import NIOCore
import ProxyHTTP2

/// Per-connection handler for the gRPC listener. Owns the connection's `HTTP2Session` through an
/// `HTTP2ChannelDriver` (created in `handlerAdded`, dropped with the handler); every read feeds the
/// session, handles the events and writes what the session wants to send. The sink is the end of the
/// line, so DATA is consumed (window reopened) as soon as it is read.
final class SinkGRPCHandler: ChannelInboundHandler, RemovableChannelHandler, HTTP2ChannelDriverDelegate {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// One call in progress: the request (without body) and its message so far.
    private struct Call {
        var request: SinkRequest
        var reader: GRPCUnaryMessageReader
        var requestEnded = false
        var answered = false
    }

    private let sink: OTLPSink
    private let maxMessageBytes: Int
    private let logger: Logger
    private var driver: HTTP2ChannelDriver?
    /// Set in `handlerAdded`, dropped in `handlerRemoved` (the context holds this handler strongly).
    private var context: ChannelHandlerContext?
    private var session: HTTP2Session? { driver?.session }
    private var calls: [Int32: Call] = [:]
    /// Streams to reset with NO_ERROR once their trailers-only reply has been serialised
    /// (an RST_STREAM queued before the reply HEADERS would make nghttp2 drop the HEADERS).
    private var resetsAfterReply: [Int32] = []

    init(sink: OTLPSink, maxMessageBytes: Int, logger: Logger) {
        self.sink = sink
        self.maxMessageBytes = maxMessageBytes
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        do {
            let driver = HTTP2ChannelDriver(session: try HTTP2Session(role: .server), delegate: self)
            driver.attach(context)
            self.driver = driver
            self.context = context
        } catch {
            logger.error("sink cannot create an HTTP/2 session", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        flush(context: context)  // our SETTINGS and connection window
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        driver?.detach()
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let driver else { return }
        do {
            try driver.receive(unwrapInboundIn(data))
        } catch {
            logger.debug("sink h2c connection error", metadata: ["error": "\(error)"])
            flush(context: context, closeAfter: true)
            return
        }
        flush(context: context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("sink h2c connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    // MARK: Events

    func handle(_ event: HTTP2Event) {
        switch event {
        case .headers(let id, let fields, .request, let endStream):
            started(id, fields: fields, endStream: endStream)
        case .headers(let id, _, .trailers, _):
            ended(id)
        case .data(let id, let chunk, let endStream):
            session?.consume(streamID: id, bytes: chunk.readableBytes)
            if endStream { calls[id]?.requestEnded = true }
            received(id, chunk)
            if endStream { ended(id) }
        case .streamClosed(let id, _):
            calls.removeValue(forKey: id)
        case .headers, .dataSent, .streamReset, .goaway, .remoteSettings:
            break
        }
    }

    private func started(_ id: Int32, fields: [HTTP2HeaderField], endStream: Bool) {
        let value = { (name: String) in fields.first { $0.name == name }?.value ?? "" }
        let request = SinkRequest(
            method: value(":method"), path: value(":path"),
            headers: fields.filter { !$0.name.hasPrefix(":") }.map { (name: $0.name, value: $0.value) },
            body: [])
        // An unknown grpc-encoding is answered by `check` below; the reader never runs for it.
        let reader = GRPCUnaryMessageReader(maxMessageBytes: maxMessageBytes,
                                            coding: GRPCExport.messageCoding(request) ?? .identity)
        calls[id] = Call(request: request, reader: reader, requestEnded: endStream)
        if let early = GRPCExport.check(request) {
            sink.recordGRPC(request)
            answer(id, early)
        }
        if endStream { ended(id) }
    }

    private func received(_ id: Int32, _ chunk: ByteBuffer) {
        guard calls[id]?.answered == false else { return }
        do {
            try calls[id]?.reader.append(chunk)
        } catch {
            guard let request = calls[id]?.request else { return }
            answer(id, sink.processGRPC(request, message: .failure(error)))
        }
    }

    private func ended(_ id: Int32) {
        guard let call = calls[id] else { return }
        calls[id]?.requestEnded = true
        guard !call.answered else { return }
        let message: Result<GRPCMessage, GRPCFramingError>
        do {
            message = .success(try call.reader.finish())
        } catch {
            message = .failure(error)
        }
        let reply = sink.processGRPC(call.request, message: message)
        logger.debug("sink gRPC call", metadata: ["path": "\(call.request.path)", "grpc_status": "\(reply.status.rawValue)"])
        answer(id, reply)
    }

    /// Queues the reply. A call answered before its request ended (an early rejection) is then
    /// reset with NO_ERROR so the client stops sending the rest of the message.
    private func answer(_ id: Int32, _ reply: GRPCReply) {
        guard let session, calls[id] != nil else { return }
        calls[id]?.answered = true
        let fields = { (pairs: [(name: String, value: String)]) in pairs.map { HTTP2HeaderField(name: $0.name, value: $0.value) } }
        do {
            if reply.hasResponseMessage {
                try session.submitResponse(streamID: id, fields: fields(reply.headerFields), endStream: false)
                try session.submitData(streamID: id, ByteBuffer(bytes: GRPCReply.emptyResponseMessage), endStream: false)
                try session.submitTrailers(streamID: id, fields: fields(reply.trailerFields))
            } else {
                try session.submitResponse(streamID: id, fields: fields(reply.headerFields), endStream: true)
                if calls[id]?.requestEnded == false {
                    resetsAfterReply.append(id)
                }
            }
        } catch {
            logger.debug("sink cannot answer gRPC call", metadata: ["stream": "\(id)", "error": "\(error)"])
            session.submitReset(streamID: id, errorCode: .internalError)
        }
    }

    // MARK: Output

    func flushScheduledOutput() {
        guard let context else { return }
        flush(context: context)
    }

    /// Writes what the session wants to send; closes when the session is finished (or `closeAfter`).
    private func flush(context: ChannelHandlerContext, closeAfter: Bool = false) {
        guard let driver else { return }
        do {
            try driver.flush()
            if !resetsAfterReply.isEmpty {
                for id in resetsAfterReply { driver.session.submitReset(streamID: id, errorCode: .noError) }
                resetsAfterReply.removeAll()
                try driver.flush()
            }
        } catch {
            logger.debug("sink h2c output failed", metadata: ["error": "\(error)"])
        }
        if closeAfter || driver.isFinished { context.close(promise: nil) }
    }
}
