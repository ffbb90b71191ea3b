import Foundation
import NIOCore
import NIOPosix

/// Builds protobuf messages by hand, the way the OTLP exporters encode them.
struct ProtoWriter {
    var bytes: [UInt8] = []

    mutating func varint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    mutating func key(_ field: UInt64, _ wireType: UInt64) { varint(field << 3 | wireType) }

    mutating func message(_ field: UInt64, _ body: (inout ProtoWriter) -> Void) {
        var inner = ProtoWriter()
        body(&inner)
        bytes(field, inner.bytes)
    }

    mutating func bytes(_ field: UInt64, _ payload: [UInt8]) {
        key(field, 2)
        varint(UInt64(payload.count))
        bytes += payload
    }

    mutating func string(_ field: UInt64, _ text: String) { bytes(field, Array(text.utf8)) }
    mutating func uint(_ field: UInt64, _ value: UInt64) { key(field, 0); varint(value) }
    mutating func fixed64(_ field: UInt64, _ value: UInt64) {
        key(field, 1)
        for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8((value >> UInt64(shift)) & 0xFF)) }
    }
    mutating func fixed32(_ field: UInt64, _ value: UInt32) {
        key(field, 5)
        for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8((value >> UInt32(shift)) & 0xFF)) }
    }
}

/// OTLP request fixtures with known item counts.
enum Fixtures {
    /// ExportTraceServiceRequest: one ResourceSpans per element of `layout`, one ScopeSpans
    /// per inner element holding that many spans; scalar and unknown fields sprinkled in at
    /// every level so the walker must skip them.
    static func traces(_ layout: [[Int]]) -> [UInt8] {
        var request = ProtoWriter()
        for scopes in layout {
            request.message(1) { resource in
                resource.message(1) { $0.message(1) { kv in kv.string(1, "service.name"); kv.message(2) { $0.string(1, "demo") } } }
                for spans in scopes {
                    resource.message(2) { scope in
                        scope.message(1) { $0.string(1, "lib"); $0.string(2, "1.0") }
                        for index in 0..<spans {
                            scope.message(2) { span in
                                span.bytes(1, [UInt8](repeating: 0xAB, count: 16))  // trace_id
                                span.bytes(2, [UInt8](repeating: 0xCD, count: 8))   // span_id
                                span.string(5, "span-\(index)")
                                span.uint(6, 1)                                     // kind
                                span.fixed64(7, 1_700_000_000_000_000_000)          // start
                                span.fixed64(8, 1_700_000_000_100_000_000)          // end
                            }
                        }
                        scope.string(3, "https://opentelemetry.io/schemas/1.21.0")
                    }
                }
                resource.string(3, "schema")
            }
        }
        request.fixed32(99, 7)  // unknown field at top level
        return request.bytes
    }

    /// ExportLogsServiceRequest with `count` log records in one scope.
    static func logs(_ count: Int) -> [UInt8] {
        var request = ProtoWriter()
        request.message(1) { resource in
            resource.message(2) { scope in
                for index in 0..<count {
                    scope.message(2) { record in
                        record.fixed64(1, 1_700_000_000_000_000_000)
                        record.uint(2, 9)
                        record.message(5) { $0.string(1, "line \(index)") }
                    }
                }
            }
        }
        return request.bytes
    }

    /// ExportMetricsServiceRequest with one metric per (data field, point count) pair.
    static func metrics(_ metrics: [(field: UInt64, points: Int)]) -> [UInt8] {
        var request = ProtoWriter()
        request.message(1) { resource in
            resource.message(2) { scope in
                for metric in metrics {
                    scope.message(2) { m in
                        m.string(1, "requests")
                        m.string(3, "1")
                        m.message(metric.field) { data in
                            for _ in 0..<metric.points {
                                data.message(1) { point in point.fixed64(3, 1); point.fixed64(4, 42) }
                            }
                            data.uint(2, 2)  // aggregation temporality (sum/histogram)
                        }
                    }
                }
            }
        }
        return request.bytes
    }
}

/// A parsed HTTP/1.1 response.
struct RawResponse: Sendable {
    var status: Int
    var headers: [(name: String, value: String)]
    var body: [UInt8]

    func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }
    var text: String { String(decoding: body, as: UTF8.self) }
}

/// A minimal HTTP/1.1 client over one NIO connection: the test writes raw request bytes
/// (so it can send duplicate or odd headers exactly) and gets the next response back.
/// Responses must carry Content-Length (the sink always sends it).
final class RawHTTPClient: Sendable {
    let channel: any Channel

    static func connect(port: Int, group: any EventLoopGroup) async throws -> RawHTTPClient {
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ResponseReader())
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        return RawHTTPClient(channel: channel)
    }

    private init(channel: any Channel) { self.channel = channel }

    func send(_ raw: [UInt8]) async throws -> RawResponse {
        let promise = channel.eventLoop.makePromise(of: RawResponse.self)
        channel.writeAndFlush(PendingRequest(bytes: raw, promise: promise), promise: nil)
        return try await promise.futureResult.get()
    }

    /// Sends a request built from parts; adds Host and (except for bodiless GETs) Content-Length.
    func request(_ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8] = []) async throws -> RawResponse {
        var text = "\(method) \(path) HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        if method != "GET" || !body.isEmpty { text += "content-length: \(body.count)\r\n" }
        text += "\r\n"
        return try await send(Array(text.utf8) + body)
    }

    func close() async {
        try? await channel.close()
    }
}

struct PendingRequest {
    var bytes: [UInt8]
    var promise: EventLoopPromise<RawResponse>
}

struct ConnectionClosedBeforeResponse: Error {}

/// Collects bytes and completes the oldest pending promise per complete response.
final class ResponseReader: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = PendingRequest
    typealias OutboundOut = ByteBuffer

    private var received: [UInt8] = []
    private var pending: [EventLoopPromise<RawResponse>] = []

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        pending.append(request.promise)
        context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: request.bytes)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += Array(unwrapInboundIn(data).readableBytesView)
        while !pending.isEmpty, let response = parseOne() {
            pending.removeFirst().succeed(response)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        for promise in pending { promise.fail(ConnectionClosedBeforeResponse()) }
        pending = []
        context.fireChannelInactive()
    }

    private func parseOne() -> RawResponse? {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard received.count >= 4,
              let headEnd = (0...(received.count - 4)).first(where: { received[$0..<($0 + 4)].elementsEqual(separator) })
        else { return nil }
        let lines = String(decoding: received[..<headEnd], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { return nil }
        var headers: [(name: String, value: String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append((String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces)))
        }
        let length = Int(headers.first { $0.name.lowercased() == "content-length" }?.value ?? "0") ?? 0
        let bodyStart = headEnd + 4
        guard received.count - bodyStart >= length else { return nil }
        let body = Array(received[bodyStart..<(bodyStart + length)])
        received.removeFirst(bodyStart + length)
        return RawResponse(status: status, headers: headers, body: body)
    }
}
