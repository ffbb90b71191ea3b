import ProxyOTLP
import Logging
import NIOCore
import NIOPosix
import ProxyCompression
import ProxyHTTP2
import CompressionFixtures
import XCTest
@testable import ProxySink

/// The sink's OTLP/gRPC listener over h2c on 127.0.0.1, with a real HTTP/2 client.
final class GRPCSinkTests: XCTestCase {
    private var group: MultiThreadedEventLoopGroup!
    private var sink: OTLPSink!
    private var httpPort = 0
    private var grpcPort = 0

    override func setUp() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        try await startSink()
    }

    private func startSink(maxBodyBytes: Int = 64 * 1024 * 1024) async throws {
        if let sink { try await sink.shutdown() }
        sink = OTLPSink(host: "127.0.0.1", port: 0, grpcPort: 0, eventLoopGroup: group,
                        logger: Logger(label: "sink-grpc-test"), maxBodyBytes: maxBodyBytes)
        let ports = try await sink.start()
        httpPort = ports.http
        grpcPort = try XCTUnwrap(ports.grpc)
    }

    override func tearDown() async throws {
        try await sink.shutdown()
        try await group.shutdownGracefully()
    }

    private func connect() async throws -> GRPCTestClient {
        try await GRPCTestClient.connect(port: grpcPort, group: group)
    }

    private func export(_ client: GRPCTestClient, _ signal: OTLPSignal, _ message: [UInt8],
                        headers: [(String, String)] = []) async throws -> GRPCCallResult {
        try await client.call(GRPCTestClient.requestFields(path: signal.grpcPath, extra: headers),
                              chunks: [GRPCTestClient.framed(message)])
    }

    // MARK: Accepted exports

    func testH2cTraceExport_Accepted_EmptyResponseAndStatusZero_SpansCounted() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let result = try await export(client, .traces, Fixtures.traces([[2, 1]]), headers: [("x-scope-orgid", "team-a")])

        XCTAssertEqual(result.header(":status"), "200")
        XCTAssertEqual(result.header("content-type"), "application/grpc")
        XCTAssertFalse(result.endedOnHeaders)
        XCTAssertEqual(result.data, [0, 0, 0, 0, 0], "one empty ExportTraceServiceResponse")
        XCTAssertEqual(result.trailers, [HTTP2HeaderField(name: "grpc-status", value: "0")])
        XCTAssertEqual(result.closeCode, .noError)

        let stats = sink.snapshot()
        XCTAssertEqual(stats.requests, 1)
        XCTAssertEqual(stats.tenants["team-a"], TenantCounts(requests: 1, spans: 3))
        XCTAssertEqual(stats.lastRequest?.method, "POST")
        XCTAssertEqual(stats.lastRequest?.path, OTLPSignal.traces.grpcPath)
        XCTAssertEqual(stats.lastRequest?.values("x-scope-orgid"), ["team-a"])
        XCTAssertEqual(stats.lastRequest?.values("content-type"), ["application/grpc"])
    }

    func testH2cMetricsAndLogs_ConcurrentOnOneConnection_CountedLikeHTTP() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let tenant = [("x-scope-orgid", "team-b")]
        async let metrics = client.call(GRPCTestClient.requestFields(path: OTLPSignal.metrics.grpcPath, extra: tenant),
                                        chunks: [GRPCTestClient.framed(Fixtures.metrics([(7, 2), (9, 1)]))])
        async let logs = client.call(GRPCTestClient.requestFields(path: OTLPSignal.logs.grpcPath, extra: tenant),
                                     chunks: [GRPCTestClient.framed(Fixtures.logs(5))])
        let results = try await [metrics, logs]
        XCTAssertEqual(results.map(\.grpcStatus), [0, 0])
        XCTAssertEqual(sink.snapshot().tenants["team-b"], TenantCounts(requests: 2, dataPoints: 3, logRecords: 5))
    }

    func testH2cExport_GRPCProtoContentTypeAndSplitMessage_Reassembled() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let framed = GRPCTestClient.framed(Fixtures.traces([[1, 1, 1]]))
        // Prefix split in the middle, then the rest in small pieces: one message over many DATA frames.
        let chunks = [Array(framed[0..<3]), Array(framed[3..<9])] + stride(from: 9, to: framed.count, by: 7).map {
            Array(framed[$0..<min($0 + 7, framed.count)])
        }
        let result = try await client.call(
            GRPCTestClient.requestFields(path: OTLPSignal.traces.grpcPath, contentType: "application/grpc+proto"), chunks: chunks)
        XCTAssertEqual(result.grpcStatus, 0)
        XCTAssertEqual(sink.snapshot().tenants[""], TenantCounts(requests: 1, spans: 3))
    }

    func testH2cExport_MessageLargerThanStreamWindow_ConsumedAndCounted() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        // About 1 MiB: four times the 256 KiB stream window, so it only arrives if the sink consumes.
        let layout = [Array(repeating: 1, count: 8000)]
        let message = Fixtures.traces(layout) + padding(count: 1024 * 1024)
        let result = try await export(client, .traces, message)
        XCTAssertEqual(result.grpcStatus, 0, result.grpcMessage ?? "")
        XCTAssertEqual(sink.snapshot().tenants[""]?.spans, 8000)
    }

    // MARK: Compressed messages

    func testH2cCompressedExport_GzipZstdDeflate_Accepted_SpansCounted() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        for (index, coding) in ["gzip", "zstd", "deflate"].enumerated() {
            let message = try SystemCompressors.compress(Fixtures.traces([[index + 1, 2]]), coding)
            let result = try await client.call(
                GRPCTestClient.requestFields(path: OTLPSignal.traces.grpcPath, extra: [("grpc-encoding", coding), ("x-scope-orgid", coding)]),
                chunks: [GRPCTestClient.framed(message, flag: 1)])
            XCTAssertEqual(result.grpcStatus, 0, "\(coding): \(result.grpcMessage ?? "")")
            XCTAssertEqual(result.data, [0, 0, 0, 0, 0], "\(coding): the response message is not compressed")
            XCTAssertEqual(result.header("grpc-accept-encoding"), "gzip, zstd, deflate, identity")
            XCTAssertEqual(sink.snapshot().tenants[coding], TenantCounts(requests: 1, spans: index + 3), coding)
        }
    }

    func testH2cGzipEncoding_UncompressedFlag_Accepted() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        // grpc-encoding names the coding a message may use; flag 0 says this one does not.
        let result = try await export(client, .traces, Fixtures.traces([[4]]), headers: [("grpc-encoding", "gzip")])
        XCTAssertEqual(result.grpcStatus, 0, result.grpcMessage ?? "")
        XCTAssertEqual(sink.snapshot().tenants[""]?.spans, 4)
    }

    func testH2cGzipMessageCompressedInSplitFrames_Reassembled() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let framed = GRPCTestClient.framed(try SystemCompressors.compress(Fixtures.traces([[30]]), "gzip"), flag: 1)
        let chunks = stride(from: 0, to: framed.count, by: 3).map { Array(framed[$0..<min($0 + 3, framed.count)]) }
        let result = try await client.call(
            GRPCTestClient.requestFields(path: OTLPSignal.traces.grpcPath, extra: [("grpc-encoding", "gzip")]), chunks: chunks)
        XCTAssertEqual(result.grpcStatus, 0, result.grpcMessage ?? "")
        XCTAssertEqual(sink.snapshot().tenants[""]?.spans, 30)
    }

    func testH2cCorruptGzipMessage_InvalidArgument_NothingCounted() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        var damaged = try SystemCompressors.compress(Fixtures.traces([[5]]), "gzip")
        damaged[damaged.count - 6] ^= 0xff  // the CRC-32
        let truncated = Array(try SystemCompressors.compress(Fixtures.traces([[5]]), "zstd").dropLast(4))
        for (coding, message) in [("gzip", damaged), ("zstd", truncated), ("gzip", Array("not gzip".utf8))] {
            let result = try await client.call(
                GRPCTestClient.requestFields(path: OTLPSignal.traces.grpcPath, extra: [("grpc-encoding", coding)]),
                chunks: [GRPCTestClient.framed(message, flag: 1)])
            XCTAssertEqual(result.grpcStatus, 3, coding)
            XCTAssertTrue(result.grpcMessage?.hasPrefix("grpc-encoding \(coding): ") ?? false, result.grpcMessage ?? "")
        }
        XCTAssertEqual(sink.snapshot().tenants[""], TenantCounts(requests: 3))
    }

    func testH2cCompressedMessageDecompressingPastLimit_ResourceExhausted() async throws {
        try await startSink(maxBodyBytes: 4096)
        let client = try await connect()
        defer { Task { await client.close() } }
        // 100 KiB of padding compresses to a few hundred bytes: small on the wire, too large inside.
        let message = try SystemCompressors.compress(Fixtures.traces([[1]]) + padding(count: 100 * 1024), "zstd")
        XCTAssertLessThan(message.count + 5, 4096)
        let result = try await client.call(
            GRPCTestClient.requestFields(path: OTLPSignal.traces.grpcPath, extra: [("grpc-encoding", "zstd")]),
            chunks: [GRPCTestClient.framed(message, flag: 1)])
        XCTAssertEqual(result.grpcStatus, 8)
        XCTAssertEqual(result.grpcMessage, "message larger than the sink's limit of 4096 bytes after grpc-encoding zstd is decoded")
        XCTAssertEqual(sink.snapshot().tenants[""], TenantCounts(requests: 1))
        // Exactly at the limit is still accepted.
        let fits = Fixtures.traces([[2]])
        let atLimit = fits + padding(count: 4096 - fits.count - 3)  // key (1 byte) + length (2 bytes) + padding
        XCTAssertEqual(atLimit.count, 4096)
        let accepted = try await client.call(
            GRPCTestClient.requestFields(path: OTLPSignal.traces.grpcPath, extra: [("grpc-encoding", "zstd")]),
            chunks: [GRPCTestClient.framed(try SystemCompressors.compress(atLimit, "zstd"), flag: 1)])
        XCTAssertEqual(accepted.grpcStatus, 0, accepted.grpcMessage ?? "")
        XCTAssertEqual(sink.snapshot().tenants[""]?.spans, 2)
    }

    /// An unknown field (number 15, length-delimited) the counter skips, to make a message big.
    private func padding(count: Int) -> [UInt8] {
        var writer = ProtoWriter()
        writer.bytes(15, [UInt8](repeating: 0x61, count: count))
        return writer.bytes
    }

    // MARK: Rejections

    func testH2cUnknownMethod_TrailersOnlyUnimplemented_RecordedWithoutItems() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let result = try await client.call(GRPCTestClient.requestFields(path: "/foo.Bar/Baz"),
                                           chunks: [GRPCTestClient.framed(Fixtures.traces([[1]]))])
        XCTAssertTrue(result.endedOnHeaders, "trailers-only: END_STREAM on HEADERS")
        XCTAssertEqual(result.header(":status"), "200")
        XCTAssertEqual(result.header("content-type"), "application/grpc")
        XCTAssertEqual(result.grpcStatus, 12)
        XCTAssertEqual(result.data, [])
        let stats = sink.snapshot()
        XCTAssertEqual(stats.requests, 1)
        XCTAssertEqual(stats.tenants[""], TenantCounts(requests: 1))
        XCTAssertEqual(stats.lastRequest?.path, "/foo.Bar/Baz")
    }

    func testH2cUnknownEncoding_UnimplementedWithAcceptEncoding() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let result = try await export(client, .traces, Fixtures.traces([[1]]), headers: [("grpc-encoding", "snappy")])
        XCTAssertEqual(result.grpcStatus, 12)
        XCTAssertTrue(result.endedOnHeaders)
        XCTAssertTrue(result.grpcMessage?.contains("grpc-encoding snappy is not supported") ?? false, result.grpcMessage ?? "no grpc-message")
        XCTAssertEqual(result.header("grpc-accept-encoding"), "gzip, zstd, deflate, identity")
        XCTAssertEqual(sink.snapshot().tenants[""], TenantCounts(requests: 1))
    }

    func testH2cMalformedMessage_InvalidArgument() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let result = try await export(client, .traces, [0x0a, 0x05, 0x01])  // field 1 claims 5 bytes, has 1
        XCTAssertEqual(result.grpcStatus, 3)
        XCTAssertTrue(result.endedOnHeaders)
        XCTAssertEqual(sink.snapshot().tenants[""], TenantCounts(requests: 1))
    }

    func testH2cCompressedFlagWithoutEncoding_Internal() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let compressed = try SystemCompressors.compress(Fixtures.traces([[1]]), "gzip")
        for headers in [[], [("grpc-encoding", "identity")]] {
            let result = try await client.call(GRPCTestClient.requestFields(path: OTLPSignal.traces.grpcPath, extra: headers),
                                               chunks: [GRPCTestClient.framed(compressed, flag: 1)])
            XCTAssertEqual(result.grpcStatus, 13, "\(headers)")
            XCTAssertEqual(result.grpcMessage, "compressed message on a call without grpc-encoding")
        }
        XCTAssertEqual(sink.snapshot().tenants[""], TenantCounts(requests: 2))
    }

    func testH2cTwoMessagesOnUnaryCall_InvalidArgument() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let one = GRPCTestClient.framed(Fixtures.traces([[1]]))
        let result = try await client.call(GRPCTestClient.requestFields(path: OTLPSignal.traces.grpcPath), chunks: [one + one])
        XCTAssertEqual(result.grpcStatus, 3)
    }

    func testH2cEmptyRequest_InvalidArgument() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let result = try await client.call(GRPCTestClient.requestFields(path: OTLPSignal.traces.grpcPath), chunks: [])
        XCTAssertEqual(result.grpcStatus, 3)
        XCTAssertEqual(result.grpcMessage, "the request carries no message")
    }

    func testH2cDeclaredLengthOverLimit_ResourceExhaustedBeforeBodyArrives() async throws {
        try await startSink(maxBodyBytes: 1024)
        let client = try await connect()
        defer { Task { await client.close() } }
        // Only the prefix, declaring 1 MiB, and the stream left open: the sink answers at once.
        let prefix: [UInt8] = [0, 0, 0x10, 0, 0]
        let result = try await client.call(GRPCTestClient.requestFields(path: OTLPSignal.traces.grpcPath),
                                           chunks: [prefix], endStream: false)
        XCTAssertEqual(result.grpcStatus, 8)
        XCTAssertTrue(result.endedOnHeaders)
        XCTAssertEqual(result.resetByServer, .noError, "the rest of the upload is cut off with RST_STREAM(NO_ERROR)")
        XCTAssertEqual(sink.snapshot().requests, 1)
    }

    func testH2cNotGRPCContentType_HTTP415() async throws {
        let client = try await connect()
        defer { Task { await client.close() } }
        let result = try await client.call(
            GRPCTestClient.requestFields(path: OTLPSignal.traces.grpcPath, contentType: "application/x-protobuf"),
            chunks: [Fixtures.traces([[1]])])
        XCTAssertEqual(result.header(":status"), "415")
        XCTAssertNil(result.grpcStatus)
    }

    func testHTTPAndGRPC_ShareCounters() async throws {
        let grpc = try await connect()
        defer { Task { await grpc.close() } }
        _ = try await export(grpc, .traces, Fixtures.traces([[2]]), headers: [("x-scope-orgid", "t")])
        let http = try await RawHTTPClient.connect(port: httpPort, group: group)
        defer { Task { await http.close() } }
        _ = try await http.request("POST", "/v1/traces", headers: [("content-type", "application/x-protobuf"), ("x-scope-orgid", "t")],
                                   body: Fixtures.traces([[3]]))
        let stats = try await http.request("GET", "/stats")
        XCTAssertTrue(stats.text.contains(#""t":{"requests":2,"spans":5"#), stats.text)
    }

    func testStart_WithoutGRPCPort_NoGRPCListener() async throws {
        let plain = OTLPSink(host: "127.0.0.1", port: 0, eventLoopGroup: group, logger: Logger(label: "sink-test"))
        let ports = try await plain.start()
        XCTAssertGreaterThan(ports.http, 0)
        XCTAssertNil(ports.grpc)
        try await plain.shutdown()
    }
}

/// The pure pieces: message reassembly and replies.
final class GRPCExportTests: XCTestCase {
    func testReader_MessageInPieces_ReturnsPayload() throws {
        var reader = GRPCUnaryMessageReader(maxMessageBytes: 100)
        try reader.append(ByteBuffer(bytes: [0, 0, 0]))
        try reader.append(ByteBuffer(bytes: [0, 3, 7]))
        try reader.append(ByteBuffer(bytes: [8, 9]))
        XCTAssertEqual(try reader.finish(), GRPCMessage(compressed: false, bytes: [7, 8, 9]))
    }

    func testReader_EmptyMessage_IsAMessage() throws {
        var reader = GRPCUnaryMessageReader(maxMessageBytes: 100)
        try reader.append(ByteBuffer(bytes: [0, 0, 0, 0, 0]))
        XCTAssertEqual(try reader.finish(), GRPCMessage(compressed: false, bytes: []))
    }

    func testReader_Truncated() throws {
        var reader = GRPCUnaryMessageReader(maxMessageBytes: 100)
        try reader.append(ByteBuffer(bytes: [0, 0, 0, 0, 4, 1]))
        XCTAssertThrowsError(try reader.finish()) { XCTAssertEqual($0 as? GRPCFramingError, .truncated(declared: 4, received: 1)) }
        var short = GRPCUnaryMessageReader(maxMessageBytes: 100)
        try short.append(ByteBuffer(bytes: [0, 0]))
        XCTAssertThrowsError(try short.finish())
    }

    func testReader_DeclaredTooLarge_FailsOnPrefixWithResourceExhausted() {
        var reader = GRPCUnaryMessageReader(maxMessageBytes: 100)
        XCTAssertThrowsError(try reader.append(ByteBuffer(bytes: [0, 0, 0, 0, 101]))) { error in
            XCTAssertEqual(error as? GRPCFramingError, .tooLarge(declared: 101, limit: 100))
            XCTAssertEqual((error as? GRPCFramingError)?.status, .resourceExhausted)
        }
    }

    func testReader_CompressedFlag_KeptWhenTheCallHasAnEncoding() throws {
        var reader = GRPCUnaryMessageReader(maxMessageBytes: 100, coding: .gzip)
        try reader.append(ByteBuffer(bytes: [1, 0, 0, 0, 2, 0x1f, 0x8b]))
        XCTAssertEqual(try reader.finish(), GRPCMessage(compressed: true, bytes: [0x1f, 0x8b]))
        var plain = GRPCUnaryMessageReader(maxMessageBytes: 100, coding: .zstd)
        try plain.append(ByteBuffer(bytes: [0, 0, 0, 0, 1, 7]))
        XCTAssertEqual(try plain.finish(), GRPCMessage(compressed: false, bytes: [7]))
    }

    func testReader_CompressedFlagWithoutEncoding_InternalOnThePrefix() {
        var reader = GRPCUnaryMessageReader(maxMessageBytes: 100)
        XCTAssertThrowsError(try reader.append(ByteBuffer(bytes: [1, 0, 0, 0, 50]))) { error in
            XCTAssertEqual(error as? GRPCFramingError, .compressedWithoutEncoding)
            XCTAssertEqual((error as? GRPCFramingError)?.status, .internal)
        }
        var flagTwo = GRPCUnaryMessageReader(maxMessageBytes: 100, coding: .gzip)
        XCTAssertThrowsError(try flagTwo.append(ByteBuffer(bytes: [2, 0, 0, 0, 1]))) { error in
            XCTAssertEqual(error as? GRPCFramingError, .invalidFlag(2))
            XCTAssertEqual((error as? GRPCFramingError)?.status, .internal)
        }
    }

    func testMessageCoding_FromGRPCEncoding() {
        func coding(_ values: [String]) -> ContentCoding? {
            GRPCExport.messageCoding(SinkRequest(method: "POST", path: OTLPSignal.traces.grpcPath,
                                                 headers: values.map { ("grpc-encoding", $0) }, body: []))
        }
        XCTAssertEqual(coding([]), .identity)
        XCTAssertEqual(coding([""]), .identity)
        XCTAssertEqual(coding(["identity"]), .identity)
        XCTAssertEqual(coding(["gzip"]), .gzip)
        XCTAssertEqual(coding(["zstd"]), .zstd)
        XCTAssertEqual(coding(["deflate"]), .deflate)
        XCTAssertNil(coding(["snappy"]))
        XCTAssertNil(coding(["gzip", "gzip"]))
    }

    func testReplies_SuccessHasMessageAndTrailers_FailureIsTrailersOnly() {
        let ok = GRPCReply.exported
        XCTAssertTrue(ok.hasResponseMessage)
        XCTAssertEqual(ok.headerFields.map(\.name), [":status", "content-type", "grpc-accept-encoding"])
        XCTAssertEqual(ok.trailerFields.map(\.value), ["0"])

        let failed = GRPCReply.failure(.unimplemented, "unknown method /x")
        XCTAssertFalse(failed.hasResponseMessage)
        XCTAssertEqual(failed.headerFields.map(\.name),
                       [":status", "content-type", "grpc-accept-encoding", "grpc-status", "grpc-message"])
        XCTAssertEqual(failed.headerFields.first { $0.name == "grpc-status" }?.value, "12")
    }

    func testGRPCMessage_PercentEncoded() {
        XCTAssertEqual(GRPCReply.percentEncoded("bad 100% caf\u{e9}\n"), "bad 100%25 caf%C3%A9%0A")
    }

    func testGRPCPaths_MapToSignals() {
        for signal in OTLPSignal.allCases {
            XCTAssertEqual(OTLPSignal(grpcPath: signal.grpcPath), signal)
        }
        XCTAssertNil(OTLPSignal(grpcPath: "/opentelemetry.proto.collector.trace.v1.TraceService/Other"))
        XCTAssertNil(OTLPSignal(grpcPath: "/v1/traces"))
    }
}
