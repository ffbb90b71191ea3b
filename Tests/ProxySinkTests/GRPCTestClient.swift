// A small h2c gRPC client for the sink tests: one NIO connection driven by an HTTP2Session in
// the client role, so the sink is exercised by a real HTTP/2 peer over a socket.
import NIOCore
import NIOPosix
import ProxyHTTP2

/// What the client saw on one call's stream.
struct GRPCCallResult: Sendable {
    var headers: [HTTP2HeaderField] = []
    var data: [UInt8] = []
    var trailers: [HTTP2HeaderField] = []
    /// True when the response ended on its HEADERS frame (trailers-only).
    var endedOnHeaders = false
    var closeCode: HTTP2ErrorCode?
    var resetByServer: HTTP2ErrorCode?

    func header(_ name: String) -> String? { headers.first { $0.name == name }?.value }
    func trailer(_ name: String) -> String? { trailers.first { $0.name == name }?.value }
    /// grpc-status from the trailers, or from the headers of a trailers-only response.
    var grpcStatus: Int? { (trailer("grpc-status") ?? header("grpc-status")).flatMap { Int($0) } }
    var grpcMessage: String? { trailer("grpc-message") ?? header("grpc-message") }
}

/// One call to make: request HEADERS, then `chunks` as separate DATA submissions; the last one
/// ends the stream unless `endStream` is false.
struct PendingCall {
    var fields: [HTTP2HeaderField]
    var chunks: [[UInt8]]
    var endStream = true
    var promise: EventLoopPromise<GRPCCallResult>
}

final class GRPCTestClient: Sendable {
    let channel: any Channel

    static func connect(port: Int, group: any EventLoopGroup) async throws -> GRPCTestClient {
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(GRPCTestClientHandler())
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        return GRPCTestClient(channel: channel)
    }

    private init(channel: any Channel) { self.channel = channel }

    static func requestFields(path: String, extra: [(String, String)] = [],
                              contentType: String = "application/grpc") -> [HTTP2HeaderField] {
        [
            HTTP2HeaderField(name: ":method", value: "POST"),
            HTTP2HeaderField(name: ":scheme", value: "http"),
            HTTP2HeaderField(name: ":authority", value: "127.0.0.1"),
            HTTP2HeaderField(name: ":path", value: path),
            HTTP2HeaderField(name: "content-type", value: contentType),
            HTTP2HeaderField(name: "te", value: "trailers"),
        ] + extra.map { HTTP2HeaderField(name: $0.0, value: $0.1) }
    }

    /// A length-prefixed, uncompressed gRPC message.
    static func framed(_ message: [UInt8], flag: UInt8 = 0) -> [UInt8] {
        let length = UInt32(message.count)
        return [flag, UInt8(length >> 24), UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff)] + message
    }

    func call(_ fields: [HTTP2HeaderField], chunks: [[UInt8]], endStream: Bool = true) async throws -> GRPCCallResult {
        let promise = channel.eventLoop.makePromise(of: GRPCCallResult.self)
        channel.writeAndFlush(PendingCall(fields: fields, chunks: chunks, endStream: endStream, promise: promise), promise: nil)
        return try await promise.futureResult.get()
    }

    func close() async {
        try? await channel.close()
    }
}

struct GRPCTestConnectionClosed: Error {}

/// Turns `PendingCall`s into streams and completes each call when its stream closes.
final class GRPCTestClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = PendingCall
    typealias OutboundOut = ByteBuffer

    private let session = try! HTTP2Session(role: .client)
    private var calls: [Int32: (result: GRPCCallResult, promise: EventLoopPromise<GRPCCallResult>)] = [:]

    func channelActive(context: ChannelHandlerContext) {
        flush(context: context)
        context.fireChannelActive()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let call = unwrapOutboundIn(data)
        do {
            let id = try session.submitRequest(fields: call.fields, endStream: call.chunks.isEmpty && call.endStream)
            calls[id] = (GRPCCallResult(), call.promise)
            for (index, chunk) in call.chunks.enumerated() {
                let last = index == call.chunks.count - 1
                try session.submitData(streamID: id, ByteBuffer(bytes: chunk), endStream: last && call.endStream)
            }
        } catch {
            call.promise.fail(error)
        }
        promise?.succeed()
    }

    func flush(context: ChannelHandlerContext) {
        var output = context.channel.allocator.buffer(capacity: 0)
        var events: [HTTP2Event] = []
        try? session.drainOutput(into: &output, events: &events)
        handle(events)
        if output.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(output), promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var events: [HTTP2Event] = []
        do {
            try session.receive(unwrapInboundIn(data), events: &events)
        } catch {
            failAll(error)
            context.close(promise: nil)
            return
        }
        handle(events)
        flush(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(GRPCTestConnectionClosed())
        context.fireChannelInactive()
    }

    private func handle(_ events: [HTTP2Event]) {
        for event in events {
            switch event {
            case .headers(let id, let fields, .response, let endStream):
                calls[id]?.result.headers = fields
                calls[id]?.result.endedOnHeaders = endStream
            case .headers(let id, let fields, .trailers, _):
                calls[id]?.result.trailers = fields
            case .data(let id, let chunk, _):
                session.consume(streamID: id, bytes: chunk.readableBytes)
                calls[id]?.result.data += Array(chunk.readableBytesView)
            case .streamReset(let id, let code):
                calls[id]?.result.resetByServer = code
            case .streamClosed(let id, let code):
                guard var call = calls.removeValue(forKey: id) else { continue }
                call.result.closeCode = code
                call.promise.succeed(call.result)
            default:
                break
            }
        }
    }

    private func failAll(_ error: any Error) {
        let pending = calls
        calls = [:]
        for (_, call) in pending { call.promise.fail(error) }
    }
}
