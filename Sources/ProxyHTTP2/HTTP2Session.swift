// The one nghttp2 session type. Everything that calls libnghttp2 lives in this file:
// session set-up, the C callbacks (free functions that forward to methods), the DATA provider,
// and the translation of frames into `HTTP2Event`s. The session's allocator is HTTP2SessionMemory.swift.
internal import CNghttp2
import NIOCore

/// Owns one `nghttp2_session*` (server or client), created in `init` and freed in `deinit`.
/// It is driven by memory only: `receive` feeds bytes read from the socket to
/// `nghttp2_session_mem_recv`, `drainOutput` collects what `nghttp2_session_mem_send` produces.
/// The owner writes that output, then calls `drainOutput` again after every `receive` and
/// every `submit…`; it closes the connection when `receive` throws (after writing the drained
/// GOAWAY) or when neither `wantsRead` nor `wantsWrite` holds.
///
/// Flow control is end to end: the session never opens a receive window by itself.
/// The owner calls `consume` for DATA it has passed on.
///
/// Not thread-safe and not Sendable: one instance belongs to one event loop.
public final class HTTP2Session {
    public let role: HTTP2Role
    private let settings: HTTP2SessionSettings
    /// The nghttp2 session. Nil only while `init` is running or if creating it failed.
    private var session: OpaquePointer?
    private let allocator = ByteBufferAllocator()
    /// Where nghttp2 allocates for this session; released after the session (see `deinit`).
    private let memory = HTTP2SessionMemory()
    /// How many of the session's blocks have pages of their own (for tests).
    var mappedBlocks: Int { memory.mappedCount }

    /// Per-stream state the caller can see: outbound DATA queue, trailers, tag.
    private var streams: [Int32: StreamState] = [:]
    /// Streams in `streams` that we opened (client requests).
    private var localOpenCount = 0
    /// The header block being received (only one can be in progress per connection).
    private var block = HeaderBlock(streamID: 0)

    /// The bytes `receive` is feeding to nghttp2, and where they start, while it does.
    private var input: (buffer: ByteBuffer, base: UnsafeRawPointer)?
    /// Events raised by callbacks during one mem_recv / mem_send, handed to the caller after it returns.
    private var pendingEvents: [HTTP2Event] = []
    /// An error raised in a callback; the callback returned NGHTTP2_ERR_CALLBACK_FAILURE and the
    /// calling method throws this once nghttp2 has returned.
    private var callbackError: HTTP2Error?
    /// The error that ended the session; later calls to `receive` report it as `.sessionClosed`.
    private var failure: HTTP2Error?
    /// Output serialised by `receive` (see there), written out first by the next `drainOutput`.
    private var pendingOutput: ByteBuffer
    /// How much output `receive` serialises before leaving the rest queued in nghttp2.
    static let pendingOutputLimit = 64 * 1024
    /// True once the caller submitted a GOAWAY: a GOAWAY with an error code is then not a sign
    /// that nghttp2 found a connection error.
    private var callerSentGoaway = false
    /// A GOAWAY with an error code that nghttp2 queued by itself (a connection error it handled
    /// internally, such as too many SETTINGS entries), and the reason it gave.
    private var libraryGoaway: (code: HTTP2ErrorCode, reason: String)?
    /// The last message nghttp2 passed to its error callback, for error descriptions.
    private var lastLibraryMessage: String?
    /// Streams the caller reset (`submitReset`) whose RST_STREAM has not been sent yet: those
    /// resets are the proxy's decision, not a glitch of the peer's.
    private var callerResets: Set<Int32> = []
    /// What the peer may still get wrong before the session ends (`maxGlitches`).
    private var glitches: GlitchBudget
    /// Set when the glitch budget ran out; the GOAWAY(ENHANCE_YOUR_CALM) is queued.
    private var glitchError: HTTP2Error?

    /// Creates the nghttp2 session and queues our SETTINGS and the connection WINDOW_UPDATE
    /// (the client's connection preface is written by the first `drainOutput`).
    public init(role: HTTP2Role, settings: HTTP2SessionSettings = .init()) throws(HTTP2Error) {
        try Self.validate(settings)
        self.role = role
        self.settings = settings
        self.pendingOutput = allocator.buffer(capacity: 0)
        self.glitches = GlitchBudget(burst: settings.maxGlitches, perSecond: settings.glitchesPerSecond,
                                     now: NIODeadline.now().uptimeNanoseconds)

        // passUnretained: this object owns the nghttp2 session and frees it in deinit, so the
        // session (and every callback it makes) never outlives the pointer it was given.
        let userData = Unmanaged.passUnretained(self).toOpaque()
        var created: OpaquePointer?
        var mem = memory.table()
        let rc = try Self.withCallbacksAndOptions(role: role, settings: settings) { callbacks, options in
            switch role {
            case .server: return nghttp2_session_server_new3(&created, callbacks, userData, options, &mem)
            case .client: return nghttp2_session_client_new3(&created, callbacks, userData, options, &mem)
            }
        }
        guard rc == 0, let created else {
            throw HTTP2Error(kind: .internalError, description: "nghttp2 session creation failed: \(Self.libraryText(rc))")
        }
        session = created

        var entries: [nghttp2_settings_entry] = [
            entry(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, settings.maxConcurrentStreams),
            entry(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, settings.initialWindowSize),
            entry(NGHTTP2_SETTINGS_MAX_FRAME_SIZE, settings.maxFrameSize),
            entry(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, settings.maxHeaderListBytes),
            // No RFC 7540 priority tree (RFC 9218): the proxy never used the peer's priorities, and
            // nghttp2 then keeps no closed streams for the tree.
            entry(NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1),
        ]
        if role == .client {
            entries.append(entry(NGHTTP2_SETTINGS_ENABLE_PUSH, 0))
        }
        let settingsRC = nghttp2_submit_settings(created, UInt8(NGHTTP2_FLAG_NONE.rawValue), entries, entries.count)
        guard settingsRC == 0 else {
            throw HTTP2Error(kind: .internalError, description: "nghttp2 rejected our SETTINGS: \(Self.libraryText(settingsRC))")
        }
        // Stream 0 is the connection: this queues a WINDOW_UPDATE that raises our connection
        // receive window from the protocol's 65,535 to the configured size.
        let windowRC = nghttp2_session_set_local_window_size(
            created, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, Int32(settings.connectionWindowSize))
        guard windowRC == 0 else {
            throw HTTP2Error(kind: .internalError, description: "nghttp2 rejected the connection window: \(Self.libraryText(windowRC))")
        }
    }

    deinit {
        // nghttp2 frees its memory through `memory`, which is released only after this.
        if let session { nghttp2_session_del(session) }
    }

    /// Builds the callbacks and options objects, hands them to `body` (which creates the session;
    /// nghttp2 copies both), and frees them.
    private static func withCallbacksAndOptions(
        role: HTTP2Role, settings: HTTP2SessionSettings,
        _ body: (OpaquePointer, OpaquePointer) -> Int32
    ) throws(HTTP2Error) -> Int32 {
        var callbacksOut: OpaquePointer?
        guard nghttp2_session_callbacks_new(&callbacksOut) == 0, let callbacks = callbacksOut else {
            throw HTTP2Error(kind: .internalError, description: "nghttp2_session_callbacks_new failed")
        }
        defer { nghttp2_session_callbacks_del(callbacks) }
        var optionsOut: OpaquePointer?
        guard nghttp2_option_new(&optionsOut) == 0, let options = optionsOut else {
            throw HTTP2Error(kind: .internalError, description: "nghttp2_option_new failed")
        }
        defer { nghttp2_option_del(options) }

        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, onBeginHeaders)
        nghttp2_session_callbacks_set_on_header_callback(callbacks, onHeader)
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, onFrameRecv)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, onDataChunkRecv)
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, onStreamClose)
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, onFrameSend)
        nghttp2_session_callbacks_set_on_frame_not_send_callback(callbacks, onFrameNotSend)
        nghttp2_session_callbacks_set_error_callback2(callbacks, onError)

        // Flow control is end to end: window updates follow `consume`, never arrival.
        nghttp2_option_set_no_auto_window_update(options, 1)
        nghttp2_option_set_max_settings(options, settings.maxSettingsEntries)
        nghttp2_option_set_max_outbound_ack(options, settings.maxOutboundAck)
        // Everything else keeps nghttp2's defaults: HTTP messaging checks on both roles, the
        // stream reset rate limit and the CONTINUATION limit that Debian's 1.52 carries.
        return body(callbacks, options)
    }

    private static func validate(_ settings: HTTP2SessionSettings) throws(HTTP2Error) {
        func check(_ ok: Bool, _ what: String) throws(HTTP2Error) {
            if !ok { throw HTTP2Error(kind: .invalidArgument, description: "HTTP/2 setting out of range: \(what)") }
        }
        try check((0...Int(UInt32.max)).contains(settings.maxConcurrentStreams), "maxConcurrentStreams \(settings.maxConcurrentStreams)")
        try check((0...Int(Int32.max)).contains(settings.initialWindowSize), "initialWindowSize \(settings.initialWindowSize) (0...2^31-1)")
        try check((65_535...Int(Int32.max)).contains(settings.connectionWindowSize),
                  "connectionWindowSize \(settings.connectionWindowSize) (65535...2^31-1)")
        try check((16_384...16_777_215).contains(settings.maxFrameSize), "maxFrameSize \(settings.maxFrameSize) (16384...16777215)")
        try check((0...Int(UInt32.max)).contains(settings.maxHeaderListBytes), "maxHeaderListBytes \(settings.maxHeaderListBytes)")
        try check(settings.maxHeaderCount >= 1, "maxHeaderCount \(settings.maxHeaderCount) (at least 1)")
        try check(settings.maxSettingsEntries >= 1, "maxSettingsEntries \(settings.maxSettingsEntries) (at least 1)")
        try check(settings.maxOutboundAck >= 1, "maxOutboundAck \(settings.maxOutboundAck) (at least 1)")
        try check(settings.maxGlitches >= 1, "maxGlitches \(settings.maxGlitches) (at least 1)")
        try check(settings.glitchesPerSecond >= 0, "glitchesPerSecond \(settings.glitchesPerSecond) (0 or more)")
    }

    // MARK: Bytes in and out

    /// Feeds received bytes; appends the events they produced. On a connection error it throws, and
    /// the session has queued the GOAWAY that `drainOutput` will produce; the caller then closes.
    ///
    /// Connection errors that nghttp2 handles internally (it queues a GOAWAY and keeps accepting
    /// bytes) only show when the GOAWAY is serialised, so this method also runs the send side:
    /// frames nghttp2 wants to send are kept for the next `drainOutput` (in order, before anything
    /// newer), and `.dataSent` / `.streamClosed` raised while doing so are appended to `events`.
    public func receive(_ bytes: ByteBuffer, events: inout [HTTP2Event]) throws(HTTP2Error) {
        guard let session else { throw HTTP2Error(kind: .sessionClosed, description: "HTTP/2 session was not created") }
        if let failure {
            throw HTTP2Error(kind: .sessionClosed, description: "HTTP/2 session already failed: \(failure.description)")
        }
        let rc = bytes.withUnsafeReadableBytes { raw -> Int in
            guard let base = raw.baseAddress, raw.count > 0 else { return 0 }
            input = (bytes, UnsafeRawPointer(base))
            defer { input = nil }
            return nghttp2_session_mem_recv(session, base.assumingMemoryBound(to: UInt8.self), raw.count)
        }
        events.append(contentsOf: pendingEvents)
        pendingEvents.removeAll(keepingCapacity: true)
        if let error = callbackError {
            callbackError = nil
            failure = error
            throw error
        }
        if rc < 0 {
            // A connection error nghttp2 reports by returning (bad client magic, flood, ...).
            // Queue a GOAWAY so the peer learns why; the caller closes after writing it.
            let code = Int32(rc) == NGHTTP2_ERR_FLOODED.rawValue ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR
            _ = nghttp2_session_terminate_session(session, code.rawValue)
            let error = HTTP2Error(kind: .protocolViolation, description: "HTTP/2 connection error: \(Self.libraryText(Int32(rc)))")
            failure = error
            throw error
        }
        // While the caller cannot write (the peer is not reading), output serialised here would pile
        // up without bound; past a limit it stays in nghttp2's queue instead, where its flood
        // checks (the count of queued PING and SETTINGS ACKs) see it and end the session.
        if nghttp2_session_want_write(session) != 0 && pendingOutput.readableBytes < Self.pendingOutputLimit {
            try send(into: &pendingOutput, events: &events)
        }
        if let glitchError {
            failure = glitchError
            throw glitchError
        }
        if let goaway = libraryGoaway {
            let reason = goaway.reason.isEmpty ? (lastLibraryMessage ?? "") : goaway.reason
            let error = HTTP2Error(
                kind: .protocolViolation,
                description: "HTTP/2 connection error, GOAWAY \(goaway.code) queued" + (reason.isEmpty ? "" : ": \(reason)"))
            failure = error
            throw error
        }
    }

    /// Appends everything nghttp2 wants to send now (frames, including DATA taken from the queues below)
    /// to `buffer`; appends `.dataSent` / `.streamClosed` events raised while doing so.
    public func drainOutput(into buffer: inout ByteBuffer, events: inout [HTTP2Event]) throws(HTTP2Error) {
        if pendingOutput.readableBytes > 0 {
            buffer.writeBuffer(&pendingOutput)
            pendingOutput.clear()
        }
        try send(into: &buffer, events: &events)
    }

    /// Runs nghttp2_session_mem_send until it has nothing more, copying each chunk to `buffer`.
    private func send(into buffer: inout ByteBuffer, events: inout [HTTP2Event]) throws(HTTP2Error) {
        guard let session else { return }
        var result: HTTP2Error?
        while true {
            var chunk: UnsafePointer<UInt8>?
            let count = nghttp2_session_mem_send(session, &chunk)
            if count < 0 {
                result = callbackError ?? HTTP2Error(kind: .internalError, description: "HTTP/2 send failed: \(Self.libraryText(Int32(count)))")
                callbackError = nil
                break
            }
            guard count > 0, let chunk else { break }
            buffer.writeBytes(UnsafeRawBufferPointer(start: chunk, count: count))
        }
        events.append(contentsOf: pendingEvents)
        pendingEvents.removeAll(keepingCapacity: true)
        if let result {
            failure = failure ?? result
            throw result
        }
    }

    /// nghttp2_session_want_read: false once the session is finished (GOAWAY exchanged and no
    /// active streams, or a terminating GOAWAY sent).
    public var wantsRead: Bool {
        guard let session else { return false }
        return nghttp2_session_want_read(session) != 0
    }

    /// nghttp2_session_want_write, or output kept by `receive` not yet drained.
    public var wantsWrite: Bool {
        guard let session else { return false }
        return pendingOutput.readableBytes > 0 || nghttp2_session_want_write(session) != 0
    }

    // MARK: Submitting

    /// Server: response HEADERS. With endStream false a data provider is attached, so later
    /// submitData/submitTrailers flow on this stream.
    public func submitResponse(streamID: Int32, fields: [HTTP2HeaderField], endStream: Bool) throws(HTTP2Error) {
        let session = try liveSession()
        guard role == .server else {
            throw HTTP2Error(kind: .invalidArgument, description: "only a server session submits responses")
        }
        guard let index = streams.index(forKey: streamID) else {
            throw HTTP2Error(kind: .streamNotFound, description: "no open HTTP/2 stream \(streamID)")
        }
        let rc: Int32
        if endStream {
            rc = Self.withNameValues(fields) { nva, count in
                nghttp2_submit_response(session, streamID, nva, count, nil)
            }
        } else {
            var provider = Self.dataProvider()
            rc = Self.withNameValues(fields) { nva, count in
                nghttp2_submit_response(session, streamID, nva, count, &provider)
            }
        }
        guard rc == 0 else { throw Self.submitError(rc, "response HEADERS on stream \(streamID)") }
        // Submitting only queues the frame (no callbacks run), so `index` is still valid.
        streams.values[index].providerAttached = !endStream
    }

    /// Client: a new request stream; returns its id. With endStream false a data provider is attached.
    public func submitRequest(fields: [HTTP2HeaderField], endStream: Bool) throws(HTTP2Error) -> Int32 {
        let session = try liveSession()
        guard role == .client else {
            throw HTTP2Error(kind: .invalidArgument, description: "only a client session submits requests")
        }
        let rc: Int32
        if endStream {
            rc = Self.withNameValues(fields) { nva, count in
                nghttp2_submit_request(session, nil, nva, count, nil, nil)
            }
        } else {
            var provider = Self.dataProvider()
            rc = Self.withNameValues(fields) { nva, count in
                nghttp2_submit_request(session, nil, nva, count, &provider, nil)
            }
        }
        guard rc > 0 else { throw Self.submitError(rc, "request HEADERS") }
        var state = StreamState(localOpened: true)
        state.providerAttached = !endStream
        streams[rc] = state
        localOpenCount += 1
        return rc
    }

    /// Queues DATA (copied into frames when flow control allows; resumes a deferred provider).
    public func submitData(streamID: Int32, _ data: ByteBuffer, endStream: Bool) throws(HTTP2Error) {
        let session = try liveSession()
        let index = try openOutbound(streamID)
        if data.readableBytes == 0 && !endStream { return }
        streams.values[index].enqueue(data, endStream: endStream)
        try resumeIfDeferred(session, streamID, at: index)
    }

    /// Queues trailers; sent (with END_STREAM) after all queued DATA.
    public func submitTrailers(streamID: Int32, fields: [HTTP2HeaderField]) throws(HTTP2Error) {
        let session = try liveSession()
        let index = try openOutbound(streamID)
        streams.values[index].trailers = fields
        streams.values[index].endQueued = true
        try resumeIfDeferred(session, streamID, at: index)
    }

    /// The position of `streamID` in `streams` (looked up once per call: the stream id is hashed on
    /// every DATA and trailers submission) when its outbound side is still open.
    private func openOutbound(_ streamID: Int32) throws(HTTP2Error) -> Dictionary<Int32, StreamState>.Index {
        guard let index = streams.index(forKey: streamID) else {
            throw HTTP2Error(kind: .streamNotFound, description: "no open HTTP/2 stream \(streamID)")
        }
        guard streams.values[index].providerAttached, !streams.values[index].endQueued else {
            throw HTTP2Error(kind: .streamClosed, description: "HTTP/2 stream \(streamID) has already ended its outbound side")
        }
        return index
    }

    private func resumeIfDeferred(
        _ session: OpaquePointer, _ streamID: Int32, at index: Dictionary<Int32, StreamState>.Index
    ) throws(HTTP2Error) {
        guard streams.values[index].deferred else { return }
        streams.values[index].deferred = false
        let rc = nghttp2_session_resume_data(session, streamID)
        guard rc == 0 else { throw Self.submitError(rc, "resuming DATA on stream \(streamID)") }
    }

    /// RST_STREAM with `errorCode`; the stream closes (`.streamClosed`) when the frame is sent.
    /// nghttp2 drops frames of the stream that are still queued (e.g. a trailers-only reply just
    /// submitted): call `drainOutput` first when they must reach the peer.
    public func submitReset(streamID: Int32, errorCode: HTTP2ErrorCode) {
        guard let session else { return }
        if nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, errorCode.rawValue) == 0 {
            callerResets.insert(streamID)
        }
    }

    /// GOAWAY with the last stream id we processed (or the one given) and the code.
    public func submitGoaway(errorCode: HTTP2ErrorCode, lastStreamID: Int32? = nil) {
        guard let session else { return }
        callerSentGoaway = true
        let last = lastStreamID ?? nghttp2_session_get_last_proc_stream_id(session)
        _ = nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), last, errorCode.rawValue, nil, 0)
    }

    /// Server: the first of the two GOAWAYs of a graceful shutdown (nghttp2_submit_shutdown_notice).
    public func submitShutdownNotice() {
        guard let session, role == .server else { return }
        callerSentGoaway = true
        _ = nghttp2_submit_shutdown_notice(session)
    }

    /// Gives `bytes` of received DATA back to the peer's window (nghttp2_session_consume), after the
    /// relay has forwarded them. Never automatic: flow control is end to end. On a stream that has
    /// closed meanwhile only the connection window is given back. nghttp2 consumes DATA padding
    /// by itself, so callers consume exactly the payload bytes they were given.
    public func consume(streamID: Int32, bytes: Int) {
        guard let session, bytes > 0 else { return }
        if streamID == 0 || nghttp2_session_consume(session, streamID, bytes) != 0 {
            _ = nghttp2_session_consume_connection(session, bytes)
        }
    }

    /// Outbound DATA bytes queued on a stream and not yet taken into frames.
    public func queuedOutboundBytes(streamID: Int32) -> Int {
        streams[streamID]?.queuedBytes ?? 0
    }

    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS (or 100 until its SETTINGS arrive).
    public var remoteMaxConcurrentStreams: Int {
        guard let session else { return 0 }
        return Int(nghttp2_session_get_remote_settings(session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS))
    }

    /// Streams currently open that we opened (client) — for pool capacity. A submitted request
    /// counts from `submitRequest` until its `.streamClosed`.
    public var openLocalStreams: Int { localOpenCount }

    public var lastProcessedStreamID: Int32 {
        guard let session else { return 0 }
        return nghttp2_session_get_last_proc_stream_id(session)
    }

    /// Per-stream user data for the caller (e.g. an exchange id); removed when the stream closes.
    /// Ignored for a stream the session does not know (never opened, or already closed).
    public func setStreamTag(_ tag: Int, streamID: Int32) {
        streams[streamID]?.tag = tag
    }

    public func streamTag(streamID: Int32) -> Int? {
        streams[streamID]?.tag
    }

    private func liveSession() throws(HTTP2Error) -> OpaquePointer {
        guard let session else { throw HTTP2Error(kind: .sessionClosed, description: "HTTP/2 session was not created") }
        if let failure {
            throw HTTP2Error(kind: .sessionClosed, description: "HTTP/2 session already failed: \(failure.description)")
        }
        return session
    }

    // MARK: Callback targets (called by the thunks at the end of this file)

    fileprivate func beginHeaders(streamID: Int32) {
        block = HeaderBlock(streamID: streamID)
    }

    /// Stores one field unless the block would pass a limit; then the whole session is ended with
    /// GOAWAY(ENHANCE_YOUR_CALM) and the callback fails, so nothing more of the block is decoded
    /// or kept (HPACK bombs stop here).
    fileprivate func header(session: OpaquePointer, streamID: Int32, name: UnsafeRawBufferPointer,
                            value: UnsafeRawBufferPointer, flags: UInt8) -> Int32 {
        let cost = name.count + value.count + 32
        if block.fields.count + 1 > settings.maxHeaderCount || block.bytes + cost > settings.maxHeaderListBytes {
            let which = block.fields.count + 1 > settings.maxHeaderCount
                ? "more than \(settings.maxHeaderCount) fields"
                : "more than \(settings.maxHeaderListBytes) bytes"
            callbackError = HTTP2Error(kind: .headerListTooLarge,
                                       description: "HTTP/2 header block on stream \(streamID) has \(which)")
            _ = nghttp2_session_terminate_session(session, NGHTTP2_ENHANCE_YOUR_CALM.rawValue)
            return NGHTTP2_ERR_CALLBACK_FAILURE.rawValue
        }
        block.bytes += cost
        block.fields.append(HTTP2HeaderField(
            name: HTTP2KnownFields.name(name),
            value: HTTP2KnownFields.value(value),
            neverIndex: flags & UInt8(NGHTTP2_NV_FLAG_NO_INDEX.rawValue) != 0))
        return 0
    }

    fileprivate func frameReceived(session: OpaquePointer, frame: UnsafePointer<nghttp2_frame>) {
        let hd = frame.pointee.hd
        let endStream = hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
        switch Int(hd.type) {
        case Int(NGHTTP2_DATA.rawValue):
            if hd.length == 0 && !endStream {
                // Legal, but it carries nothing and ends nothing: only costs us a frame's work.
                glitch(session, "empty DATA frames")
            }
            guard endStream else { return }
            // END_STREAM belongs to the frame; mark the chunk it carried, if that chunk is
            // still in this batch, otherwise report it as an empty final chunk.
            if case .data(let id, let buffer, false)? = pendingEvents.last, id == hd.stream_id {
                pendingEvents[pendingEvents.count - 1] = .data(streamID: id, buffer, endStream: true)
            } else {
                pendingEvents.append(.data(streamID: hd.stream_id, allocator.buffer(capacity: 0), endStream: true))
            }
        case Int(NGHTTP2_HEADERS.rawValue):
            guard block.streamID == hd.stream_id else { return }
            let fields = block.fields
            block = HeaderBlock(streamID: 0)
            let kind = headerKind(fields)
            if kind == .request && streams[hd.stream_id] == nil {
                streams[hd.stream_id] = StreamState(localOpened: false)
            }
            pendingEvents.append(.headers(streamID: hd.stream_id, fields: fields, kind: kind, endStream: endStream))
        case Int(NGHTTP2_RST_STREAM.rawValue):
            guard streams[hd.stream_id] != nil else { return }
            pendingEvents.append(.streamReset(streamID: hd.stream_id,
                                              errorCode: HTTP2ErrorCode(wire: frame.pointee.rst_stream.error_code)))
        case Int(NGHTTP2_GOAWAY.rawValue):
            pendingEvents.append(.goaway(lastStreamID: frame.pointee.goaway.last_stream_id,
                                         errorCode: HTTP2ErrorCode(wire: frame.pointee.goaway.error_code)))
        case Int(NGHTTP2_SETTINGS.rawValue):
            guard hd.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) == 0 else { return }
            pendingEvents.append(.remoteSettings(maxConcurrentStreams: remoteMaxConcurrentStreams))
        default:
            return
        }
    }

    private func headerKind(_ fields: [HTTP2HeaderField]) -> HTTP2HeaderKind {
        switch role {
        case .server:
            return fields.contains { $0.name == ":method" } ? .request : .trailers
        case .client:
            guard let status = fields.first(where: { $0.name == ":status" }) else { return .trailers }
            return status.value.hasPrefix("1") ? .informational : .response
        }
    }

    fileprivate func dataChunk(streamID: Int32, _ bytes: UnsafeRawBufferPointer) {
        pendingEvents.append(.data(streamID: streamID, chunkBuffer(bytes), endStream: false))
    }

    /// A received DATA chunk as a buffer. nghttp2 hands DATA over in place, inside the bytes given to
    /// `receive`: a chunk that is at least a quarter of that buffer's storage is a slice of it (no copy,
    /// no allocation); a smaller one is copied, so a held chunk never keeps more than four times its
    /// size alive.
    private func chunkBuffer(_ bytes: UnsafeRawBufferPointer) -> ByteBuffer {
        if let (buffer, base) = input, let start = bytes.baseAddress, bytes.count * 4 >= buffer.storageCapacity {
            let offset = start - base
            if offset >= 0 && offset + bytes.count <= buffer.readableBytes,
               let slice = buffer.getSlice(at: buffer.readerIndex + offset, length: bytes.count) {
                return slice
            }
        }
        return allocator.buffer(bytes: bytes)
    }

    fileprivate func streamClosed(streamID: Int32, errorCode: UInt32) {
        if !callerResets.isEmpty { callerResets.remove(streamID) }
        guard let state = streams.removeValue(forKey: streamID) else { return }
        if state.localOpened { localOpenCount -= 1 }
        pendingEvents.append(.streamClosed(streamID: streamID, errorCode: HTTP2ErrorCode(wire: errorCode)))
    }

    fileprivate func frameSent(session: OpaquePointer, frame: UnsafePointer<nghttp2_frame>) {
        if Int(frame.pointee.hd.type) == Int(NGHTTP2_RST_STREAM.rawValue) {
            // A reset the caller did not ask for is nghttp2 answering a stream error of the peer's.
            // NO_ERROR resets (a complete response before the request ended) are not errors.
            if callerResets.remove(frame.pointee.hd.stream_id) == nil,
               frame.pointee.rst_stream.error_code != NGHTTP2_NO_ERROR.rawValue {
                glitch(session, "stream errors")
            }
            return
        }
        guard Int(frame.pointee.hd.type) == Int(NGHTTP2_GOAWAY.rawValue) else { return }
        let goaway = frame.pointee.goaway
        guard goaway.error_code != NGHTTP2_NO_ERROR.rawValue, !callerSentGoaway, callbackError == nil,
              glitchError == nil, libraryGoaway == nil else { return }
        let reason: String
        if let opaque = goaway.opaque_data, goaway.opaque_data_len > 0 {
            reason = String(decoding: UnsafeBufferPointer(start: opaque, count: min(goaway.opaque_data_len, 256)), as: UTF8.self)
        } else {
            reason = ""
        }
        libraryGoaway = (HTTP2ErrorCode(wire: goaway.error_code), reason)
    }

    /// A request HEADERS that was never sent (GOAWAY received, session closing) never opened an
    /// nghttp2 stream, so nghttp2 will not report it closed: report it here, as refused, since
    /// the peer never saw it and it is safe to retry elsewhere.
    fileprivate func frameNotSent(session: OpaquePointer, frame: UnsafePointer<nghttp2_frame>) {
        let hd = frame.pointee.hd
        guard Int(hd.type) == Int(NGHTTP2_HEADERS.rawValue), streams[hd.stream_id] != nil,
              nghttp2_session_find_stream(session, hd.stream_id) == nil else { return }
        streamClosed(streamID: hd.stream_id, errorCode: HTTP2ErrorCode.refusedStream.rawValue)
    }

    /// Spends one glitch; once the budget is gone, ends the session with GOAWAY(ENHANCE_YOUR_CALM).
    /// nghttp2 allows terminating the session from inside its callbacks.
    private func glitch(_ session: OpaquePointer, _ what: String) {
        guard glitchError == nil, !glitches.spend(now: NIODeadline.now().uptimeNanoseconds) else { return }
        glitchError = HTTP2Error(
            kind: .protocolViolation,
            description: "HTTP/2 peer caused too many \(what) (more than \(settings.maxGlitches) in a burst)")
        _ = nghttp2_session_terminate_session(session, NGHTTP2_ENHANCE_YOUR_CALM.rawValue)
    }

    fileprivate func libraryError(_ message: String) {
        lastLibraryMessage = message
    }

    /// The DATA provider: copies queued bytes into the frame nghttp2 is building. With the
    /// queue empty it ends the stream (or sends the trailers) once the caller ended it, and
    /// otherwise defers until `submitData` / `submitTrailers` resume it.
    fileprivate func readData(session: OpaquePointer, streamID: Int32, into out: UnsafeMutableRawBufferPointer,
                              flags: UnsafeMutablePointer<UInt32>) -> Int {
        guard let index = streams.index(forKey: streamID) else {
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            return 0
        }
        let (copied, step) = streams.values[index].provide(into: out)
        if copied > 0 {
            pendingEvents.append(.dataSent(streamID: streamID, bytes: copied))
        }
        switch step {
        case .more:
            return copied
        case .deferred:
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        case .end:
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            return copied
        case .endWithTrailers(let trailers):
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue | NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
            let rc = Self.withNameValues(trailers) { nva, count in
                nghttp2_submit_trailer(session, streamID, nva, count)
            }
            if rc != 0 {
                callbackError = Self.submitError(rc, "trailers on stream \(streamID)")
                return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue)
            }
            return copied
        }
    }

    // MARK: Helpers

    private static func dataProvider() -> nghttp2_data_provider {
        // The stream id passed to the read callback identifies the queue; no source pointer needed.
        nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: readDataCallback)
    }

    /// Lays out `fields` as nghttp2_nv entries pointing into one byte buffer that stays alive
    /// for the duration of `body` (nghttp2 copies names and values while submitting). Both the bytes
    /// and the entries are temporary allocations (on the stack when small): this runs for every
    /// HEADERS and trailers block sent.
    private static func withNameValues<R>(_ fields: [HTTP2HeaderField],
                                          _ body: (UnsafePointer<nghttp2_nv>?, Int) -> R) -> R {
        // One byte more than the fields need: nghttp2 never reads through a zero-length pointer,
        // but it must point into the buffer and not be null.
        var total = 1
        for field in fields { total += field.name.utf8.count + field.value.utf8.count }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: total) { storage in
            let base = storage.baseAddress!
            base.initialize(repeating: 0, count: total)
            return withUnsafeTemporaryAllocation(of: nghttp2_nv.self, capacity: max(fields.count, 1)) { nva in
                var offset = 0
                for (position, field) in fields.enumerated() {
                    let name = base + offset
                    let nameCount = copyUTF8(field.name, to: name)
                    offset += nameCount
                    let value = base + offset
                    let valueCount = copyUTF8(field.value, to: value)
                    offset += valueCount
                    let flags = field.neverIndex ? NGHTTP2_NV_FLAG_NO_INDEX.rawValue : NGHTTP2_NV_FLAG_NONE.rawValue
                    (nva.baseAddress! + position).initialize(
                        to: nghttp2_nv(name: name, value: value, namelen: nameCount, valuelen: valueCount, flags: UInt8(flags)))
                }
                return body(UnsafePointer(nva.baseAddress!), fields.count)
            }
        }
    }

    /// Copies the UTF-8 bytes of `string` to `start` (room for `string.utf8.count` bytes); returns how many.
    private static func copyUTF8(_ string: String, to start: UnsafeMutablePointer<UInt8>) -> Int {
        if let count = string.utf8.withContiguousStorageIfAvailable({ bytes -> Int in
            if let source = bytes.baseAddress { start.update(from: source, count: bytes.count) }
            return bytes.count
        }) {
            return count
        }
        var count = 0
        for byte in string.utf8 {
            start[count] = byte
            count += 1
        }
        return count
    }

    private static func libraryText(_ code: Int32) -> String {
        String(cString: nghttp2_strerror(code))
    }

    private static func submitError(_ code: Int32, _ what: String) -> HTTP2Error {
        let kind: HTTP2Error.Kind
        switch code {
        case NGHTTP2_ERR_INVALID_ARGUMENT.rawValue, NGHTTP2_ERR_DATA_EXIST.rawValue, NGHTTP2_ERR_PROTO.rawValue:
            kind = .invalidArgument
        case NGHTTP2_ERR_STREAM_CLOSED.rawValue, NGHTTP2_ERR_STREAM_CLOSING.rawValue,
             NGHTTP2_ERR_STREAM_SHUT_WR.rawValue:
            kind = .streamClosed
        case NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE.rawValue, NGHTTP2_ERR_SESSION_CLOSING.rawValue,
             NGHTTP2_ERR_START_STREAM_NOT_ALLOWED.rawValue:
            kind = .sessionClosed
        default:
            kind = .internalError
        }
        return HTTP2Error(kind: kind, description: "HTTP/2 \(what) not submitted: \(libraryText(code))")
    }
}

private func entry(_ id: nghttp2_settings_id, _ value: Int) -> nghttp2_settings_entry {
    nghttp2_settings_entry(settings_id: Int32(id.rawValue), value: UInt32(value))
}

/// The state of one stream the caller knows about.
private struct StreamState {
    /// True for streams we opened (client requests).
    var localOpened: Bool
    var tag: Int?
    /// A DATA provider is attached and has not yet reported EOF.
    var providerAttached = false
    /// The caller ended the outbound side (endStream on submitData, or submitTrailers).
    var endQueued = false
    /// The provider returned NGHTTP2_ERR_DEFERRED and waits for `nghttp2_session_resume_data`.
    var deferred = false
    var trailers: [HTTP2HeaderField]?
    private var outbound = CircularBuffer<ByteBuffer>()
    private(set) var queuedBytes = 0

    init(localOpened: Bool) {
        self.localOpened = localOpened
    }

    mutating func enqueue(_ data: ByteBuffer, endStream: Bool) {
        if data.readableBytes > 0 {
            outbound.append(data)
            queuedBytes += data.readableBytes
        }
        if endStream { endQueued = true }
    }

    /// What the DATA provider does after copying queued bytes.
    enum ProviderStep {
        /// More queued bytes, or more may come: the frame carries what was copied.
        case more
        /// Nothing queued and the caller has not ended the stream: wait for `nghttp2_session_resume_data`.
        case deferred
        /// The queue is empty and the caller ended the stream: END_STREAM on this frame.
        case end
        /// The same, but the stream ends with these trailers instead.
        case endWithTrailers([HTTP2HeaderField])
    }

    /// One call of the DATA provider: moves queued bytes into `out` and says how the frame ends.
    /// Updates the flags the provider's answer implies (detached at the end, deferred while waiting).
    mutating func provide(into out: UnsafeMutableRawBufferPointer) -> (copied: Int, step: ProviderStep) {
        let copied = take(into: out)
        guard queuedBytes == 0 else { return (copied, .more) }
        if endQueued {
            providerAttached = false
            guard let trailers else { return (copied, .end) }
            self.trailers = nil
            return (copied, .endWithTrailers(trailers))
        }
        if copied == 0 {
            deferred = true
            return (0, .deferred)
        }
        return (copied, .more)
    }

    /// Moves up to `out.count` queued bytes into `out`; returns how many.
    mutating func take(into out: UnsafeMutableRawBufferPointer) -> Int {
        var copied = 0
        while copied < out.count, !outbound.isEmpty {
            let n = outbound[outbound.startIndex].withUnsafeReadableBytes { bytes -> Int in
                let n = min(bytes.count, out.count - copied)
                UnsafeMutableRawBufferPointer(rebasing: out[copied..<(copied + n)])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<n]))
                return n
            }
            copied += n
            outbound[outbound.startIndex].moveReaderIndex(forwardBy: n)
            if outbound[outbound.startIndex].readableBytes == 0 { outbound.removeFirst() }
        }
        queuedBytes -= copied
        return copied
    }
}

/// A token bucket of peer glitches: `burst` tokens, refilled at `perSecond`. Times are monotonic
/// nanoseconds, passed in.
struct GlitchBudget {
    private let burst: Double
    private let perSecond: Double
    private var tokens: Double
    private var updated: UInt64

    init(burst: Int, perSecond: Int, now: UInt64) {
        self.burst = Double(burst)
        self.perSecond = Double(perSecond)
        self.tokens = Double(burst)
        self.updated = now
    }

    /// Takes one token; false when there was none left.
    mutating func spend(now: UInt64) -> Bool {
        if now > updated {
            tokens = min(burst, tokens + Double(now - updated) / 1e9 * perSecond)
            updated = now
        }
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}

/// Accounting for the header block being received.
private struct HeaderBlock {
    var streamID: Int32
    var fields: [HTTP2HeaderField] = []
    /// name + value + 32 per stored field, as HPACK counts header list size.
    var bytes = 0
}

// MARK: - nghttp2 callbacks
// Thunks only: check pointers, recover the session object from user_data (passed unretained in
// init: the HTTP2Session owns the nghttp2 session, so it is alive whenever nghttp2 calls back)
// and forward.

private func owner(_ userData: UnsafeMutableRawPointer?) -> HTTP2Session? {
    guard let userData else { return nil }
    return Unmanaged<HTTP2Session>.fromOpaque(userData).takeUnretainedValue()
}

fileprivate func onBeginHeaders(_ session: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?,
                                _ userData: UnsafeMutableRawPointer?) -> Int32 {
    guard let frame, let owner = owner(userData) else { return NGHTTP2_ERR_CALLBACK_FAILURE.rawValue }
    owner.beginHeaders(streamID: frame.pointee.hd.stream_id)
    return 0
}

fileprivate func onHeader(_ session: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?,
                          _ name: UnsafePointer<UInt8>?, _ nameLength: Int,
                          _ value: UnsafePointer<UInt8>?, _ valueLength: Int,
                          _ flags: UInt8, _ userData: UnsafeMutableRawPointer?) -> Int32 {
    guard let session, let frame, let owner = owner(userData) else { return NGHTTP2_ERR_CALLBACK_FAILURE.rawValue }
    return owner.header(session: session, streamID: frame.pointee.hd.stream_id,
                        name: UnsafeRawBufferPointer(start: name, count: name == nil ? 0 : nameLength),
                        value: UnsafeRawBufferPointer(start: value, count: value == nil ? 0 : valueLength),
                        flags: flags)
}

fileprivate func onFrameRecv(_ session: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?,
                             _ userData: UnsafeMutableRawPointer?) -> Int32 {
    guard let session, let frame, let owner = owner(userData) else { return NGHTTP2_ERR_CALLBACK_FAILURE.rawValue }
    owner.frameReceived(session: session, frame: frame)
    return 0
}

fileprivate func onDataChunkRecv(_ session: OpaquePointer?, _ flags: UInt8, _ streamID: Int32,
                                 _ data: UnsafePointer<UInt8>?, _ length: Int,
                                 _ userData: UnsafeMutableRawPointer?) -> Int32 {
    guard let owner = owner(userData) else { return NGHTTP2_ERR_CALLBACK_FAILURE.rawValue }
    owner.dataChunk(streamID: streamID, UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : length))
    return 0
}

fileprivate func onStreamClose(_ session: OpaquePointer?, _ streamID: Int32, _ errorCode: UInt32,
                               _ userData: UnsafeMutableRawPointer?) -> Int32 {
    guard let owner = owner(userData) else { return NGHTTP2_ERR_CALLBACK_FAILURE.rawValue }
    owner.streamClosed(streamID: streamID, errorCode: errorCode)
    return 0
}

fileprivate func onFrameSend(_ session: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?,
                             _ userData: UnsafeMutableRawPointer?) -> Int32 {
    guard let session, let frame, let owner = owner(userData) else { return NGHTTP2_ERR_CALLBACK_FAILURE.rawValue }
    owner.frameSent(session: session, frame: frame)
    return 0
}

fileprivate func onFrameNotSend(_ session: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?,
                                _ libraryError: Int32, _ userData: UnsafeMutableRawPointer?) -> Int32 {
    guard let session, let frame, let owner = owner(userData) else { return NGHTTP2_ERR_CALLBACK_FAILURE.rawValue }
    owner.frameNotSent(session: session, frame: frame)
    return 0
}

fileprivate func onError(_ session: OpaquePointer?, _ libraryError: Int32, _ message: UnsafePointer<CChar>?,
                         _ length: Int, _ userData: UnsafeMutableRawPointer?) -> Int32 {
    guard let message, let owner = owner(userData) else { return 0 }
    owner.libraryError(String(decoding: UnsafeRawBufferPointer(start: message, count: length), as: UTF8.self))
    return 0
}

fileprivate func readDataCallback(_ session: OpaquePointer?, _ streamID: Int32, _ buffer: UnsafeMutablePointer<UInt8>?,
                                  _ length: Int, _ dataFlags: UnsafeMutablePointer<UInt32>?,
                                  _ source: UnsafeMutablePointer<nghttp2_data_source>?,
                                  _ userData: UnsafeMutableRawPointer?) -> Int {
    guard let session, let buffer, let dataFlags, let owner = owner(userData) else {
        return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue)
    }
    return owner.readData(session: session, streamID: streamID,
                          into: UnsafeMutableRawBufferPointer(start: buffer, count: length), flags: dataFlags)
}
