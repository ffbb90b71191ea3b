import NIOCore
import ProxyHTTP2
import XCTest

final class HTTP2SessionTests: XCTestCase {
    // MARK: Requests, responses, trailers

    /// Sends a request with `extra` fields and asserts the server got exactly those; returns the pair and stream.
    private func requestArrivesExactly(extra: [HTTP2HeaderField], line: UInt = #line) throws -> (SessionPair, Int32) {
        let pair = try SessionPair()
        let id = try pair.client.submitRequest(fields: requestFields(extra: extra), endStream: true)
        try pair.pump()
        guard case .headers(id, let fields, .request, true)? =
                pair.serverEvents.first(where: { if case .headers = $0 { return true } else { return false } }) else {
            XCTFail("server saw no request headers: \(pair.serverEvents)", line: line)
            return (pair, id)
        }
        XCTAssertEqual(fields, requestFields(extra: extra), line: line)
        return (pair, id)
    }

    func testHeaderFields_EmptyLongAndNonASCIIValues_ArriveExactly() throws {
        // Values past any small-buffer size, empty ones and multi-byte UTF-8 must all be laid out
        // for nghttp2 at the right offsets.
        let extra = [
            HTTP2HeaderField(name: "x-empty", value: ""),
            HTTP2HeaderField(name: "x-long", value: String(repeating: "v", count: 5000)),
            HTTP2HeaderField(name: "x-utf8", value: "grüße-日本"),
            HTTP2HeaderField(name: "authorization", value: "Bearer t0ken", neverIndex: true),
            HTTP2HeaderField(name: "x-last", value: "z"),
        ]
        _ = try requestArrivesExactly(extra: extra)
    }

    func testHeaderBlockLargerThanTheFrameBuffer_ArrivesExactlyBothWays() throws {
        // Past 16 KiB a header block leaves nghttp2's first frame buffer (more chunks, CONTINUATION
        // frames) and a value is decoded into a buffer of its own: the session's page-backed blocks.
        let big = String((0..<40_000).map { Character(UnicodeScalar(UInt8(97 + $0 % 26))) })
        let extra = [HTTP2HeaderField(name: "x-big", value: big), HTTP2HeaderField(name: "x-after", value: "1")]
        let (pair, id) = try requestArrivesExactly(extra: extra)

        let response = [HTTP2HeaderField(name: ":status", value: "200"), HTTP2HeaderField(name: "x-big", value: big)]
        try pair.server.submitResponse(streamID: id, fields: response, endStream: true)
        try pair.pump()
        guard case .headers(id, let back, .response, true)? =
                pair.clientEvents.first(where: { if case .headers = $0 { return true } else { return false } }) else {
            return XCTFail("client saw no response headers: \(pair.clientEvents)")
        }
        XCTAssertEqual(back, response)
    }

    func testDataChunks_ArriveExactly_AndASmallOneNeverHoldsItsWholeInputAlive() throws {
        // Large chunks are handed over as slices of the received bytes; a small one is copied, so a
        // held chunk keeps at most four times its size of memory alive.
        let pair = try SessionPair()
        let id = try pair.client.submitRequest(fields: requestFields(), endStream: false)
        try pair.pump()
        let large = ByteBuffer(bytes: (0..<12_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        var toServer = ByteBuffer()
        toServer.reserveCapacity(64 * 1024)
        try pair.client.submitData(streamID: id, large, endStream: false)
        try pair.client.drainOutput(into: &toServer, events: &pair.clientEvents)
        try pair.client.submitData(streamID: id, ByteBuffer(string: "tail"), endStream: true)
        try pair.client.drainOutput(into: &toServer, events: &pair.clientEvents)
        var events: [HTTP2Event] = []
        try pair.server.receive(toServer, events: &events)
        let chunks = events.compactMap { event -> ByteBuffer? in
            if case .data(id, let buffer, _) = event { return buffer } else { return nil }
        }
        XCTAssertEqual(chunks.reduce(into: ByteBuffer()) { $0.writeImmutableBuffer($1) }, {
            var all = large
            all.writeString("tail")
            return all
        }())
        let small = try XCTUnwrap(chunks.last)
        XCTAssertEqual(small.readableBytes, 4)
        XCTAssertLessThanOrEqual(small.storageCapacity, 64, "a 4-byte chunk holds \(small.storageCapacity) bytes")
    }

    func testRequestWithBody_ServerSeesRequestHeadersDataChunksAndEnd() throws {
        let pair = try SessionPair()
        let id = try pair.client.submitRequest(
            fields: requestFields(extra: [
                HTTP2HeaderField(name: "content-type", value: "application/grpc"),
                HTTP2HeaderField(name: "authorization", value: "Bearer t0ken", neverIndex: true),
            ]),
            endStream: false)
        XCTAssertEqual(id, 1)
        try pair.pump()
        try pair.client.submitData(streamID: id, ByteBuffer(string: "hello "), endStream: false)
        try pair.pump()
        try pair.client.submitData(streamID: id, ByteBuffer(string: "world"), endStream: true)
        try pair.pump()

        guard case .headers(let streamID, let fields, let kind, let endStream)? =
                pair.serverEvents.first(where: { if case .headers = $0 { return true } else { return false } }) else {
            return XCTFail("server saw no headers: \(pair.serverEvents)")
        }
        XCTAssertEqual(streamID, id)
        XCTAssertEqual(kind, .request)
        XCTAssertFalse(endStream)
        XCTAssertEqual(Array(fields.prefix(4)), requestFields())
        XCTAssertTrue(fields.contains(HTTP2HeaderField(name: "content-type", value: "application/grpc")))
        // The never-indexed flag survives HPACK, so a relay can keep it on credentials.
        XCTAssertTrue(fields.contains(HTTP2HeaderField(name: "authorization", value: "Bearer t0ken", neverIndex: true)))

        XCTAssertEqual(String(decoding: receivedBody(pair.serverEvents, streamID: id), as: UTF8.self), "hello world")
        let dataEvents = pair.serverEvents.filter { if case .data = $0 { return true } else { return false } }
        XCTAssertGreaterThanOrEqual(dataEvents.count, 2, "each submitData went out as its own DATA frame")
        guard case .data(_, _, let lastEnds)? = dataEvents.last else { return XCTFail() }
        XCTAssertTrue(lastEnds, "the final chunk carries END_STREAM")
        XCTAssertEqual(dataEvents.dropLast().filter { if case .data(_, _, true) = $0 { return true } else { return false } }.count, 0)

        let sent = pair.clientEvents.reduce(0) { total, event in
            if case .dataSent(id, let bytes) = event { return total + bytes }
            return total
        }
        XCTAssertEqual(sent, 11, "dataSent reports exactly the DATA bytes taken from the queue")
        XCTAssertEqual(pair.client.queuedOutboundBytes(streamID: id), 0)
    }

    func testResponseDataAndTrailers_ClientSeesResponseDataTrailersWithEndStream() throws {
        let pair = try SessionPair()
        let id = try pair.client.submitRequest(fields: requestFields(), endStream: true)
        try pair.pump()
        XCTAssertTrue(pair.serverEvents.contains(.headers(streamID: id, fields: requestFields(), kind: .request, endStream: true)))

        try pair.server.submitResponse(
            streamID: id,
            fields: [HTTP2HeaderField(name: ":status", value: "200"), HTTP2HeaderField(name: "content-type", value: "application/grpc")],
            endStream: false)
        // Drained with an empty queue: the provider defers, and submitData below must resume it.
        try pair.pump()
        try pair.server.submitData(streamID: id, ByteBuffer(bytes: [0, 0, 0, 0, 0]), endStream: false)
        try pair.server.submitTrailers(streamID: id, fields: [HTTP2HeaderField(name: "grpc-status", value: "0")])
        try pair.pump()

        let streamEvents = pair.clientEvents.filter { $0.streamID == id && !isDataSent($0) }
        XCTAssertEqual(streamEvents, [
            .headers(streamID: id, fields: [HTTP2HeaderField(name: ":status", value: "200"),
                                            HTTP2HeaderField(name: "content-type", value: "application/grpc")],
                     kind: .response, endStream: false),
            .data(streamID: id, ByteBuffer(bytes: [0, 0, 0, 0, 0]), endStream: false),
            .headers(streamID: id, fields: [HTTP2HeaderField(name: "grpc-status", value: "0")], kind: .trailers, endStream: true),
            .streamClosed(streamID: id, errorCode: .noError),
        ])
        XCTAssertEqual(pair.serverEvents.last, .streamClosed(streamID: id, errorCode: .noError))
        XCTAssertEqual(pair.client.openLocalStreams, 0)
    }

    func testTrailersRightAfterResponseHeaders_SentWithoutData() throws {
        let pair = try SessionPair()
        let id = try pair.client.submitRequest(fields: requestFields(), endStream: true)
        try pair.pump()
        try pair.server.submitResponse(streamID: id, fields: [HTTP2HeaderField(name: ":status", value: "200")], endStream: false)
        try pair.server.submitTrailers(streamID: id, fields: [HTTP2HeaderField(name: "grpc-status", value: "12")])
        try pair.pump()
        XCTAssertTrue(pair.clientEvents.contains(
            .headers(streamID: id, fields: [HTTP2HeaderField(name: "grpc-status", value: "12")], kind: .trailers, endStream: true)))
        XCTAssertEqual(receivedBody(pair.clientEvents, streamID: id), [])
        XCTAssertThrowsError(try pair.server.submitData(streamID: id, ByteBuffer(string: "late"), endStream: true)) { error in
            XCTAssertEqual((error as? HTTP2Error)?.kind, .streamNotFound)
        }
    }

    func testSubmitDataAfterEndStream_Refused() throws {
        let pair = try SessionPair()
        let id = try pair.client.submitRequest(fields: requestFields(), endStream: false)
        try pair.client.submitData(streamID: id, ByteBuffer(string: "x"), endStream: true)
        XCTAssertThrowsError(try pair.client.submitData(streamID: id, ByteBuffer(string: "y"), endStream: false)) { error in
            XCTAssertEqual((error as? HTTP2Error)?.kind, .streamClosed)
        }
        XCTAssertThrowsError(try pair.client.submitData(streamID: 99, ByteBuffer(string: "y"), endStream: false)) { error in
            XCTAssertEqual((error as? HTTP2Error)?.kind, .streamNotFound)
        }
    }

    // MARK: Flow control

    func testFlowControl_SenderStopsAtStreamWindowAndResumesAfterConsume() throws {
        let pair = try SessionPair()
        let window = HTTP2SessionSettings().initialWindowSize
        let body = (0..<(1024 * 1024)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let id = try pair.client.submitRequest(fields: requestFields(), endStream: false)
        try pair.client.submitData(streamID: id, ByteBuffer(bytes: body), endStream: true)
        try pair.pump()

        XCTAssertEqual(receivedBody(pair.serverEvents, streamID: id).count, window, "nothing past the stream window")
        XCTAssertEqual(pair.client.queuedOutboundBytes(streamID: id), body.count - window)

        // Nothing moves while the server consumes nothing.
        try pair.pump()
        XCTAssertEqual(receivedBody(pair.serverEvents, streamID: id).count, window)

        var consumed = 0
        for _ in 0..<20 {
            let received = receivedBody(pair.serverEvents, streamID: id).count
            if received == body.count { break }
            pair.server.consume(streamID: id, bytes: received - consumed)
            consumed = received
            try pair.pump()
        }
        XCTAssertEqual(receivedBody(pair.serverEvents, streamID: id), body)
        XCTAssertEqual(pair.client.queuedOutboundBytes(streamID: id), 0)
        guard case .data(id, _, true)? = pair.serverEvents.last(where: { if case .data = $0 { return true } else { return false } }) else {
            return XCTFail("last DATA chunk does not end the stream")
        }
    }

    func testPaddedData_PaddingIsConsumedByTheSession_CallerConsumesPayloadOnly() throws {
        let server = try HTTP2Session(role: .server)
        let raw = RawClient(server: server)
        try raw.handshake()
        try raw.send(RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders, streamID: 1, payload: HPACK.request()))

        let padLength = 255
        let chunk = 16_384 - 1 - padLength
        let frames = 10
        for index in 0..<frames {
            let payload = [UInt8(padLength)] + [UInt8](repeating: UInt8(index), count: chunk) + [UInt8](repeating: 0, count: padLength)
            try raw.send(RawFrame(type: RawFrame.data, flags: RawFrame.padded, streamID: 1, payload: payload))
        }
        XCTAssertEqual(receivedBody(raw.serverEvents, streamID: 1).count, chunk * frames, "padding is not delivered")
        XCTAssertFalse(try raw.drain().contains { $0.type == RawFrame.windowUpdate && $0.streamID == 1 },
                       "no window opens before the caller consumes")

        server.consume(streamID: 1, bytes: chunk * frames)
        let updates = try raw.drain().filter { $0.type == RawFrame.windowUpdate && $0.streamID == 1 }
        XCTAssertEqual(updates.count, 1)
        // Consuming only the payload gives back the whole frames: the session consumed the
        // padding (and the pad length byte) itself.
        XCTAssertEqual(updates.first.map { Int($0.word(at: 0)) }, 16_384 * frames)
    }

    // MARK: Concurrency limits

    func testClient150Streams_At100Concurrent_AllComplete() throws {
        let pair = try SessionPair()
        var ids: [Int32] = []
        for _ in 0..<150 { ids.append(try pair.client.submitRequest(fields: requestFields(), endStream: true)) }
        XCTAssertEqual(pair.client.openLocalStreams, 150)
        try pair.pump()

        XCTAssertEqual(pair.client.remoteMaxConcurrentStreams, 100)
        XCTAssertTrue(pair.clientEvents.contains(.remoteSettings(maxConcurrentStreams: 100)))
        func serverRequests() -> [Int32] {
            pair.serverEvents.compactMap { if case .headers(let id, _, .request, _) = $0 { return id } else { return nil } }
        }
        XCTAssertEqual(serverRequests().count, 100, "the client keeps to the server's limit")

        var answered = Set<Int32>()
        for _ in 0..<3 {
            for id in serverRequests() where !answered.contains(id) {
                try pair.server.submitResponse(streamID: id, fields: [HTTP2HeaderField(name: ":status", value: "200")], endStream: true)
                answered.insert(id)
            }
            try pair.pump()
        }
        XCTAssertEqual(answered.count, 150)
        let closed = pair.clientEvents.compactMap { if case .streamClosed(let id, .noError) = $0 { return id } else { return nil } }
        XCTAssertEqual(Set(closed), Set(ids))
        XCTAssertEqual(pair.client.openLocalStreams, 0)
    }

    /// Before the client has acknowledged our SETTINGS, streams past the limit are refused one by
    /// one (REFUSED_STREAM, safe to retry); the connection stays up.
    func testRawClient150StreamsBeforeSettingsAck_ServerRefusesPast100() throws {
        var settings = HTTP2SessionSettings()
        settings.maxConcurrentStreams = 100
        let server = try HTTP2Session(role: .server, settings: settings)
        let raw = RawClient(server: server)
        try raw.send(bytes: RawFrame.clientPreface + RawFrame.settingsFrame([]).bytes)
        let first = try raw.drain()
        let advertised = first.first { $0.type == RawFrame.settings && $0.flags & RawFrame.ack == 0 }
        XCTAssertTrue(advertised.map { frame in
            stride(from: 0, to: frame.payload.count, by: 6).contains { offset in
                frame.payload[offset] == 0 && frame.payload[offset + 1] == 3 && frame.word(at: offset + 2) == 100
            }
        } ?? false, "SETTINGS_MAX_CONCURRENT_STREAMS 100 advertised")

        try raw.send(bytes: manyRequests(150))
        let refused = try raw.drain().filter { $0.type == RawFrame.rstStream }
        XCTAssertEqual(refused.count, 50)
        XCTAssertTrue(refused.allSatisfy { $0.word(at: 0) == HTTP2ErrorCode.refusedStream.rawValue })
        XCTAssertEqual(Set(refused.map(\.streamID)), Set((100..<150).map { Int32(2 * $0 + 1) }))
        let accepted = raw.serverEvents.filter { if case .headers(_, _, .request, _) = $0 { return true } else { return false } }
        XCTAssertEqual(accepted.count, 100)
        XCTAssertTrue(server.wantsRead)
    }

    /// Once the client has acknowledged the limit, going past it is a connection error (nghttp2's
    /// rule): GOAWAY(PROTOCOL_ERROR) and the caller closes.
    func testRawClient150StreamsAfterSettingsAck_ConnectionError() throws {
        var settings = HTTP2SessionSettings()
        settings.maxConcurrentStreams = 100
        let server = try HTTP2Session(role: .server, settings: settings)
        let raw = RawClient(server: server)
        try raw.handshake()
        XCTAssertThrowsError(try raw.send(bytes: manyRequests(150))) { error in
            XCTAssertEqual((error as? HTTP2Error)?.kind, .protocolViolation)
        }
        let goaway = try raw.drain().compactMap(\.goawayFields)
        XCTAssertEqual(goaway.map(\.errorCode), [HTTP2ErrorCode.protocolError.rawValue])
        XCTAssertEqual(goaway.first?.lastStreamID, 199, "the 100 accepted streams are the ones processed")
    }

    private func manyRequests(_ count: Int) -> [UInt8] {
        let block = HPACK.request()
        var bytes: [UInt8] = []
        for index in 0..<count {
            bytes += RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders | RawFrame.endStream,
                              streamID: Int32(2 * index + 1), payload: block).bytes
        }
        return bytes
    }

    // MARK: Resets and GOAWAY

    func testClientReset_ServerSeesStreamResetThenClosed() throws {
        let pair = try SessionPair()
        let id = try pair.client.submitRequest(fields: requestFields(), endStream: false)
        pair.client.setStreamTag(42, streamID: id)
        XCTAssertEqual(pair.client.streamTag(streamID: id), 42)
        try pair.pump()
        pair.client.submitReset(streamID: id, errorCode: .cancel)
        try pair.pump()

        let serverStream = pair.serverEvents.filter { $0.streamID == id }
        XCTAssertEqual(Array(serverStream.suffix(2)), [
            .streamReset(streamID: id, errorCode: .cancel), .streamClosed(streamID: id, errorCode: .cancel),
        ])
        XCTAssertEqual(pair.clientEvents.last, .streamClosed(streamID: id, errorCode: .cancel))
        XCTAssertNil(pair.client.streamTag(streamID: id), "tags go with the stream")
        XCTAssertEqual(pair.client.openLocalStreams, 0)
    }

    func testServerReset_ClientSeesStreamResetThenClosed() throws {
        let pair = try SessionPair()
        let id = try pair.client.submitRequest(fields: requestFields(), endStream: false)
        try pair.pump()
        pair.server.submitReset(streamID: id, errorCode: .enhanceYourCalm)
        try pair.pump()
        let clientStream = pair.clientEvents.filter { $0.streamID == id }
        XCTAssertEqual(Array(clientStream.suffix(2)), [
            .streamReset(streamID: id, errorCode: .enhanceYourCalm), .streamClosed(streamID: id, errorCode: .enhanceYourCalm),
        ])
        XCTAssertEqual(pair.serverEvents.last, .streamClosed(streamID: id, errorCode: .enhanceYourCalm))
    }

    /// nghttp2 drops frames of a stream that are still queued when RST_STREAM is submitted, so a
    /// reply that must reach the peer before the reset has to be drained first.
    func testResetAfterTrailersOnlyReply_ReplyArrivesOnlyIfDrainedFirst() throws {
        let pair = try SessionPair()
        let drained = try pair.client.submitRequest(fields: requestFields(), endStream: false)
        let notDrained = try pair.client.submitRequest(fields: requestFields(), endStream: false)
        try pair.pump()
        let reply = [HTTP2HeaderField(name: ":status", value: "200"), HTTP2HeaderField(name: "grpc-status", value: "8")]

        try pair.server.submitResponse(streamID: drained, fields: reply, endStream: true)
        var out = ByteBuffer()
        try pair.server.drainOutput(into: &out, events: &pair.serverEvents)
        try pair.client.receive(out, events: &pair.clientEvents)
        pair.server.submitReset(streamID: drained, errorCode: .noError)

        try pair.server.submitResponse(streamID: notDrained, fields: reply, endStream: true)
        pair.server.submitReset(streamID: notDrained, errorCode: .noError)
        try pair.pump()

        XCTAssertTrue(pair.clientEvents.contains(.headers(streamID: drained, fields: reply, kind: .response, endStream: true)))
        XCTAssertFalse(pair.clientEvents.contains { if case .headers(notDrained, _, _, _) = $0 { return true } else { return false } })
        XCTAssertTrue(pair.clientEvents.contains(.streamClosed(streamID: notDrained, errorCode: .noError)))
    }

    func testGoaway_ClientSeesLastStreamID_NewRequestsRefused() throws {
        let pair = try SessionPair()
        let first = try pair.client.submitRequest(fields: requestFields(), endStream: true)
        let second = try pair.client.submitRequest(fields: requestFields(), endStream: true)
        try pair.pump()
        XCTAssertEqual(pair.server.lastProcessedStreamID, second)
        pair.server.submitGoaway(errorCode: .noError, lastStreamID: first)
        try pair.pump()

        XCTAssertTrue(pair.clientEvents.contains(.goaway(lastStreamID: first, errorCode: .noError)))
        // The stream above the GOAWAY's last id was not processed: nghttp2 closes it as refused.
        XCTAssertTrue(pair.clientEvents.contains(.streamClosed(streamID: second, errorCode: .refusedStream)))

        // A request after GOAWAY never leaves the client.
        do {
            let third = try pair.client.submitRequest(fields: requestFields(), endStream: true)
            try pair.pump()
            XCTAssertTrue(pair.clientEvents.contains(.streamClosed(streamID: third, errorCode: .refusedStream)))
        } catch let error as HTTP2Error {
            XCTAssertEqual(error.kind, .sessionClosed)
        }
        XCTAssertEqual(pair.client.openLocalStreams, 1, "only the stream below the last id is still open")
    }

    func testShutdownNotice_ThenFinalGoaway() throws {
        let pair = try SessionPair()
        let id = try pair.client.submitRequest(fields: requestFields(), endStream: true)
        try pair.pump()
        pair.server.submitShutdownNotice()
        try pair.pump()
        XCTAssertTrue(pair.clientEvents.contains(.goaway(lastStreamID: Int32.max, errorCode: .noError)))
        pair.server.submitGoaway(errorCode: .noError)
        try pair.pump()
        XCTAssertTrue(pair.clientEvents.contains(.goaway(lastStreamID: id, errorCode: .noError)))
        try pair.server.submitResponse(streamID: id, fields: [HTTP2HeaderField(name: ":status", value: "200")], endStream: true)
        try pair.pump()
        XCTAssertTrue(pair.clientEvents.contains(.streamClosed(streamID: id, errorCode: .noError)))
        XCTAssertFalse(pair.server.wantsRead, "GOAWAY sent and no streams left: the session is done")
    }

    // MARK: Header limits

    func testHeaderCountOverLimit_ThrowsAndQueuesGoawayEnhanceYourCalm() throws {
        var settings = HTTP2SessionSettings()
        settings.maxHeaderCount = 10
        let server = try HTTP2Session(role: .server, settings: settings)
        let raw = RawClient(server: server)
        try raw.handshake()

        // Exactly at the limit (4 pseudo-headers + 6) is accepted.
        let atLimit = HPACK.request(extra: (0..<6).map { ("x-\($0)", "v") })
        try raw.send(RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders | RawFrame.endStream, streamID: 1, payload: atLimit))
        XCTAssertTrue(raw.serverEvents.contains { if case .headers(1, let fields, .request, true) = $0 { return fields.count == 10 } else { return false } })

        let overLimit = HPACK.request(extra: (0..<7).map { ("x-\($0)", "v") })
        XCTAssertThrowsError(try raw.send(RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders | RawFrame.endStream,
                                                   streamID: 3, payload: overLimit))) { error in
            XCTAssertEqual((error as? HTTP2Error)?.kind, .headerListTooLarge)
        }
        XCTAssertFalse(raw.serverEvents.contains { $0.streamID == 3 }, "the oversized block is never delivered")
        let goaway = try raw.drain().compactMap(\.goawayFields)
        XCTAssertEqual(goaway.map(\.errorCode), [HTTP2ErrorCode.enhanceYourCalm.rawValue])
        XCTAssertFalse(server.wantsRead)
        XCTAssertThrowsError(try raw.send(RawFrame.settingsAck)) { error in
            XCTAssertEqual((error as? HTTP2Error)?.kind, .sessionClosed)
        }
    }

    func testHeaderBytesOverLimit_ThrowsAndQueuesGoawayEnhanceYourCalm() throws {
        var settings = HTTP2SessionSettings()
        settings.maxHeaderListBytes = 4096
        let server = try HTTP2Session(role: .server, settings: settings)
        let raw = RawClient(server: server)
        let first = try raw.handshake()
        XCTAssertTrue(first.contains { frame in
            frame.type == RawFrame.settings && stride(from: 0, to: frame.payload.count, by: 6).contains {
                frame.payload[$0 + 1] == 6 && frame.word(at: $0 + 2) == 4096
            }
        }, "SETTINGS_MAX_HEADER_LIST_SIZE advertised")

        // Two 2,000-byte values: each field alone is fine, together they pass 4,096.
        let block = HPACK.request(extra: [("x-a", String(repeating: "a", count: 2000)), ("x-b", String(repeating: "b", count: 2000))])
        XCTAssertThrowsError(try raw.send(RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders | RawFrame.endStream,
                                                   streamID: 1, payload: block))) { error in
            XCTAssertEqual((error as? HTTP2Error)?.kind, .headerListTooLarge)
        }
        let goaway = try raw.drain().compactMap(\.goawayFields)
        XCTAssertEqual(goaway.map(\.errorCode), [HTTP2ErrorCode.enhanceYourCalm.rawValue])
        XCTAssertTrue(raw.serverEvents.isEmpty || !raw.serverEvents.contains { if case .headers = $0 { return true } else { return false } })
    }

    func testHeaderBytesLimit_SpreadOverContinuations_StillEnforced() throws {
        var settings = HTTP2SessionSettings()
        settings.maxHeaderListBytes = 4096
        let server = try HTTP2Session(role: .server, settings: settings)
        let raw = RawClient(server: server)
        try raw.handshake()
        let block = HPACK.request(extra: (0..<40).map { ("x-\($0)", String(repeating: "v", count: 100)) })
        let half = block.count / 2
        XCTAssertThrowsError(try raw.send(
            RawFrame(type: RawFrame.headers, flags: RawFrame.endStream, streamID: 1, payload: Array(block[..<half])),
            RawFrame(type: RawFrame.continuation, flags: RawFrame.endHeaders, streamID: 1, payload: Array(block[half...])))) { error in
            XCTAssertEqual((error as? HTTP2Error)?.kind, .headerListTooLarge)
        }
        XCTAssertEqual(try raw.drain().compactMap(\.goawayFields).map(\.errorCode), [HTTP2ErrorCode.enhanceYourCalm.rawValue])
    }

    // MARK: Protocol violations

    func testBadClientPreface_ProtocolViolation() throws {
        let server = try HTTP2Session(role: .server)
        var events: [HTTP2Event] = []
        XCTAssertThrowsError(try server.receive(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"), events: &events)) { error in
            XCTAssertEqual((error as? HTTP2Error)?.kind, .protocolViolation)
        }
        XCTAssertEqual(events, [])
        var out = ByteBuffer()
        try server.drainOutput(into: &out, events: &events)
        XCTAssertEqual(RawFrame.parse(out).compactMap(\.goawayFields).map(\.errorCode), [HTTP2ErrorCode.protocolError.rawValue])
    }

    func testSettingsWithTooManyEntries_ProtocolViolationAndGoaway() throws {
        var settings = HTTP2SessionSettings()
        settings.maxSettingsEntries = 32
        let server = try HTTP2Session(role: .server, settings: settings)
        let raw = RawClient(server: server)
        // 32 entries are fine...
        try raw.send(bytes: RawFrame.clientPreface + RawFrame.settingsFrame(Array(repeating: (4, 65_535), count: 32)).bytes)
        // (A SETTINGS without MAX_CONCURRENT_STREAMS means no limit.)
        XCTAssertEqual(raw.serverEvents, [.remoteSettings(maxConcurrentStreams: Int(UInt32.max))])
        // ...33 are a connection error.
        XCTAssertThrowsError(try raw.send(RawFrame.settingsFrame(Array(repeating: (4, 65_535), count: 33)))) { error in
            XCTAssertEqual((error as? HTTP2Error)?.kind, .protocolViolation)
            XCTAssertTrue(String(describing: error).contains("too many"), "got: \(String(describing: error))")
        }
        let goaway = try raw.drain().compactMap(\.goawayFields)
        XCTAssertEqual(goaway.map(\.errorCode), [HTTP2ErrorCode.enhanceYourCalm.rawValue])
        XCTAssertFalse(server.wantsRead)
    }

    // MARK: Glitches: stream errors nghttp2 answers by itself, empty DATA frames

    /// The "MadeYouReset" pattern: each stream is made to fail (here a wrong content-length), so nghttp2 resets it without the client ever sending RST_STREAM. Within the
    /// budget each is a stream error only; past it the session ends with GOAWAY(ENHANCE_YOUR_CALM).
    func testServerProvokedResets_PastGlitchBudget_GoawayEnhanceYourCalm() throws {
        var settings = HTTP2SessionSettings()
        settings.maxGlitches = 10
        settings.glitchesPerSecond = 0
        let server = try HTTP2Session(role: .server, settings: settings)
        let raw = RawClient(server: server)
        try raw.handshake()
        try raw.send(bytes: provokedResets(streams: 1...10))
        let within = try raw.drain()
        XCTAssertEqual(within.filter { $0.type == RawFrame.rstStream }.count, 10)
        XCTAssertTrue(within.allSatisfy { $0.type != RawFrame.goaway })
        XCTAssertTrue(server.wantsRead, "stream errors within the budget keep the connection")

        XCTAssertThrowsError(try raw.send(bytes: provokedResets(streams: 11...11))) { error in
            XCTAssertEqual((error as? HTTP2Error)?.kind, .protocolViolation)
            XCTAssertTrue(String(describing: error).contains("stream errors"), "got: \(String(describing: error))")
        }
        let goaway = try raw.drain().compactMap(\.goawayFields)
        XCTAssertEqual(goaway.map(\.errorCode), [HTTP2ErrorCode.enhanceYourCalm.rawValue])
        XCTAssertFalse(server.wantsRead)
    }

    /// Resets the proxy decides on (a cancelled upstream, a stalled reader) are not the peer's glitches.
    func testCallerResets_NotCountedAsGlitches() throws {
        var settings = HTTP2SessionSettings()
        settings.maxGlitches = 3
        settings.glitchesPerSecond = 0
        let pair = try SessionPair(server: settings)
        for _ in 0..<10 {
            let id = try pair.client.submitRequest(fields: requestFields(), endStream: false)
            try pair.pump()
            pair.server.submitReset(streamID: id, errorCode: .cancel)
            try pair.pump()
            XCTAssertEqual(pair.clientEvents.last, .streamClosed(streamID: id, errorCode: .cancel))
        }
        XCTAssertFalse(pair.clientEvents.contains { if case .goaway = $0 { return true } else { return false } })
        XCTAssertTrue(pair.server.wantsRead)
    }

    func testEmptyDataFrames_PastGlitchBudget_GoawayEnhanceYourCalm() throws {
        var settings = HTTP2SessionSettings()
        settings.maxGlitches = 10
        settings.glitchesPerSecond = 0
        let server = try HTTP2Session(role: .server, settings: settings)
        let raw = RawClient(server: server)
        try raw.handshake()
        try raw.send(RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders, streamID: 1, payload: HPACK.request()))
        let empty = RawFrame(type: RawFrame.data, flags: 0, streamID: 1, payload: [])
        try raw.send(bytes: Array(repeating: empty.bytes, count: 10).flatMap { $0 })
        XCTAssertTrue(try raw.drain().allSatisfy { $0.type != RawFrame.goaway })
        XCTAssertThrowsError(try raw.send(empty)) { error in
            XCTAssertTrue(String(describing: error).contains("empty DATA"), "got: \(String(describing: error))")
        }
        XCTAssertEqual(try raw.drain().compactMap(\.goawayFields).map(\.errorCode), [HTTP2ErrorCode.enhanceYourCalm.rawValue])
        // An empty DATA frame that ends the stream is how many clients end a request: not a glitch.
        let ok = try HTTP2Session(role: .server, settings: settings)
        let client = RawClient(server: ok)
        try client.handshake()
        for index in 0..<20 {
            let id = Int32(2 * index + 1)
            try client.send(RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders, streamID: id, payload: HPACK.request()),
                            RawFrame(type: RawFrame.data, flags: RawFrame.endStream, streamID: id, payload: []))
            ok.submitReset(streamID: id, errorCode: .noError)
        }
        XCTAssertTrue(try client.drain().allSatisfy { $0.type != RawFrame.goaway })
    }

    /// A peer that sends PINGs and never reads what we send: `receive` stops serialising output
    /// past a limit, so the ACKs stay in nghttp2's queue, whose flood check ends the session
    /// (rather than the ACKs piling up in our buffer without bound).
    func testPingFlood_CallerNeverDrains_FloodedConnectionError() throws {
        let server = try HTTP2Session(role: .server)
        let raw = RawClient(server: server)
        try raw.handshake()
        let ping = RawFrame(type: 6, flags: 0, streamID: 0, payload: Array(repeating: 7, count: 8)).bytes
        let batch = Array(repeating: ping, count: 500).flatMap { $0 }
        var sent = 0
        XCTAssertThrowsError(try {
            while sent < 20_000 {
                try raw.send(bytes: batch)
                sent += 500
            }
        }()) { error in
            XCTAssertEqual((error as? HTTP2Error)?.kind, .protocolViolation)
        }
        XCTAssertLessThan(sent, 10_000, "the flood was noticed once about 64 KiB of ACKs were waiting")
        let frames = try raw.drain()
        XCTAssertEqual(frames.compactMap(\.goawayFields).map(\.errorCode), [HTTP2ErrorCode.enhanceYourCalm.rawValue])
    }

    /// Each stream: request HEADERS declaring content-length 1, then 5 bytes of DATA with END_STREAM
    /// (malformed, RFC 9113 §8.1.1: a stream error nghttp2 answers with RST_STREAM by itself).
    private func provokedResets(streams: ClosedRange<Int>) -> [UInt8] {
        let block = HPACK.request(extra: [("content-length", "1")])
        return streams.flatMap { index -> [UInt8] in
            let id = Int32(2 * index - 1)
            return RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders, streamID: id, payload: block).bytes
                + RawFrame(type: RawFrame.data, flags: RawFrame.endStream, streamID: id, payload: [1, 2, 3, 4, 5]).bytes
        }
    }

    func testDataOnIdleStream_ProtocolViolation() throws {
        let server = try HTTP2Session(role: .server)
        let raw = RawClient(server: server)
        try raw.handshake()
        XCTAssertThrowsError(try raw.send(RawFrame(type: RawFrame.data, flags: 0, streamID: 5, payload: [1, 2, 3]))) { error in
            XCTAssertEqual((error as? HTTP2Error)?.kind, .protocolViolation)
        }
        XCTAssertEqual(try raw.drain().compactMap(\.goawayFields).map(\.errorCode), [HTTP2ErrorCode.protocolError.rawValue])
    }

    func testInvalidSettings_Rejected() {
        var settings = HTTP2SessionSettings()
        settings.maxFrameSize = 1000
        XCTAssertThrowsError(try HTTP2Session(role: .server, settings: settings)) { error in
            XCTAssertEqual((error as? HTTP2Error)?.kind, .invalidArgument)
        }
    }

    func testClientPreface_IsFirstOutput_WithSettingsAndConnectionWindow() throws {
        let client = try HTTP2Session(role: .client)
        XCTAssertEqual(client.remoteMaxConcurrentStreams, 100, "100 until the server's SETTINGS arrive")
        var out = ByteBuffer()
        var events: [HTTP2Event] = []
        try client.drainOutput(into: &out, events: &events)
        let frames = RawFrame.parse(out, skippingPreface: true)
        XCTAssertEqual(frames.first?.type, RawFrame.settings)
        let push = frames.first.map { frame in
            stride(from: 0, to: frame.payload.count, by: 6).first { frame.payload[$0 + 1] == 2 }.map { frame.word(at: $0 + 2) }
        } ?? nil
        XCTAssertEqual(push, 0, "clients disable server push")
        let connectionUpdate = frames.first { $0.type == RawFrame.windowUpdate && $0.streamID == 0 }
        XCTAssertEqual(connectionUpdate.map { Int($0.word(at: 0)) }, 4 * 1024 * 1024 - 65_535)
    }

    private func isDataSent(_ event: HTTP2Event) -> Bool {
        if case .dataSent = event { return true }
        return false
    }
}
