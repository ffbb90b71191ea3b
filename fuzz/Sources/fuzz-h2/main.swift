// Fuzzes the HTTP/2 session glue on the server side: after the client connection preface, the
// input's bytes are fed to `HTTP2Session.receive` as a client would send them, and the events are
// answered the way the front does (responses, echoed DATA, trailers, resets, GOAWAY, consume).
//
// Input layout: byte 0 chooses how the bytes are cut into reads and how requests are answered;
// the rest are HTTP/2 frames. Seeds are in fuzz/corpus/h2 (fuzz/seeds/make_h2_seeds.py).
import FuzzSupport
import NIOCore
import ProxyHTTP2

/// How a request is answered, from bits 4-5 of the control byte.
enum Reply: UInt8 {
    /// A trailers-only gRPC reply (HEADERS with END_STREAM), as for a local rejection.
    case trailersOnly = 0
    /// Response HEADERS, the request's DATA echoed back, trailers when the request ends.
    case echo = 1
    /// RST_STREAM(REFUSED_STREAM), as when the upstream refuses.
    case reset = 2
    /// The reply, then a graceful shutdown (shutdown notice and GOAWAY) after the first request.
    case shutdown = 3
}

/// Answers events like HTTP2Front; everything it sends goes to a discarded buffer.
struct Responder {
    let session: HTTP2Session
    let reply: Reply
    var open: Set<Int32> = []
    var shutDown = false
    let allocator = ByteBufferAllocator()

    static let responseFields = [
        HTTP2HeaderField(name: ":status", value: "200"),
        HTTP2HeaderField(name: "content-type", value: "application/grpc"),
    ]
    static let trailerFields = [HTTP2HeaderField(name: "grpc-status", value: "0")]

    mutating func handle(_ event: HTTP2Event) {
        switch event {
        case .headers(let streamID, _, let kind, let endStream):
            switch kind {
            case .request:
                open.insert(streamID)
                session.setStreamTag(Int(streamID), streamID: streamID)
                respond(streamID, endStream: endStream)
            case .trailers:
                finish(streamID)
            case .response, .informational:
                break
            }
        case .data(let streamID, let data, let endStream):
            // Flow control is end to end: give the window back once the bytes are "forwarded".
            session.consume(streamID: streamID, bytes: data.readableBytes)
            if reply == .echo, open.contains(streamID) {
                do {
                    try session.submitData(streamID: streamID, data, endStream: false)
                } catch {
                    session.submitReset(streamID: streamID, errorCode: .internalError)
                }
                _ = session.queuedOutboundBytes(streamID: streamID)
            }
            if endStream { finish(streamID) }
        case .streamReset(let streamID, _), .streamClosed(let streamID, _):
            open.remove(streamID)
            _ = session.streamTag(streamID: streamID)
        case .dataSent, .goaway, .remoteSettings:
            break
        }
    }

    private mutating func respond(_ streamID: Int32, endStream: Bool) {
        do {
            switch reply {
            case .trailersOnly:
                try session.submitResponse(streamID: streamID, fields: Self.responseFields + Self.trailerFields, endStream: true)
                open.remove(streamID)
            case .echo:
                try session.submitResponse(streamID: streamID, fields: Self.responseFields, endStream: false)
                if endStream { finish(streamID) }
            case .reset:
                session.submitReset(streamID: streamID, errorCode: .refusedStream)
                open.remove(streamID)
            case .shutdown:
                try session.submitResponse(streamID: streamID, fields: Self.responseFields + Self.trailerFields, endStream: true)
                open.remove(streamID)
                if !shutDown {
                    shutDown = true
                    session.submitShutdownNotice()
                    session.submitGoaway(errorCode: .noError)
                }
            }
        } catch {
            session.submitReset(streamID: streamID, errorCode: .internalError)
        }
    }

    private mutating func finish(_ streamID: Int32) {
        guard reply == .echo, open.contains(streamID) else { return }
        do {
            try session.submitTrailers(streamID: streamID, fields: Self.trailerFields)
        } catch {
            session.submitReset(streamID: streamID, errorCode: .internalError)
        }
    }

    /// Drains output and answers the events that produces, until nothing new comes out.
    /// Returns false once the session failed.
    mutating func flush(_ events: inout [HTTP2Event]) -> Bool {
        for _ in 0..<64 {
            let pending = events
            events.removeAll()
            for event in pending { handle(event) }
            var output = allocator.buffer(capacity: 0)
            do {
                try session.drainOutput(into: &output, events: &events)
            } catch {
                return false
            }
            if events.isEmpty { return true }
        }
        return true
    }
}

let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

runFuzzer { data, count in
    let input = fuzzBytes(data, count)
    let control = input.first ?? 0
    let frames = input.dropFirst()
    let reply = Reply(rawValue: (control >> 4) & 0x3)!
    let chunkSize = control & 0x0f == 0 ? max(frames.count, 1) : Int(control & 0x0f) * 7

    var settings = HTTP2SessionSettings()
    settings.maxConcurrentStreams = 8
    settings.initialWindowSize = 65_535
    settings.maxHeaderListBytes = 16 * 1024
    settings.maxHeaderCount = 50
    let session: HTTP2Session
    do { session = try HTTP2Session(role: .server, settings: settings) } catch { fatalError("session: \(error)") }
    var responder = Responder(session: session, reply: reply)
    var events: [HTTP2Event] = []
    guard responder.flush(&events) else { fatalError("the server's own SETTINGS failed") }

    let allocator = ByteBufferAllocator()
    var bytes = preface[...] + frames
    while !bytes.isEmpty {
        let chunk = bytes.prefix(chunkSize)
        bytes = bytes.dropFirst(chunk.count)
        var buffer = allocator.buffer(capacity: chunk.count)
        buffer.writeBytes(chunk)
        do {
            try session.receive(buffer, events: &events)
        } catch {
            // A connection error: the session queued a GOAWAY; write it and close, as the front does.
            _ = responder.flush(&events)
            return 0
        }
        guard responder.flush(&events) else { return 0 }
        if !session.wantsRead && !session.wantsWrite { return 0 }
    }
    // The client went quiet: the front's drain sends GOAWAY and finishes.
    session.submitGoaway(errorCode: .noError)
    _ = responder.flush(&events)
    _ = session.lastProcessedStreamID
    _ = session.remoteMaxConcurrentStreams
    return 0
}
