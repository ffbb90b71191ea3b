import Foundation
import NIOCore
import NIOPosix
@_exported import OTLPFixtures

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
