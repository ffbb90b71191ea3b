import NIOCore
import NIOHTTP1
import NIOPosix
import ProxyConfig
import ProxyTLS

/// Fetches small documents (JWKS, OIDC discovery) with a GET over HTTPS on the proxy's own
/// OpenSSL client, or plain HTTP to a loopback address. One connection per fetch: these are rare.
struct HTTPSFetcher: Sendable {
    struct FetchError: Error, CustomStringConvertible {
        var description: String
    }

    let group: any EventLoopGroup
    /// Verifies the server; nil only for plain-HTTP loopback URLs.
    let tlsContext: TLSClientContext?
    var timeout: TimeAmount = .seconds(10)
    var maxBytes = 1 << 20

    /// Fetches `url` and returns the body of a 200 response.
    func get(_ url: FetchURL, on eventLoop: any EventLoop) -> EventLoopFuture<[UInt8]> {
        let host = url.host
        let secure = url.isHTTPS
        if secure && tlsContext == nil {
            return eventLoop.makeFailedFuture(FetchError(description: "\(url): no TLS client context"))
        }
        let port = url.effectivePort
        let promise = eventLoop.makePromise(of: [UInt8].self)
        let tlsContext = self.tlsContext
        let maxBytes = self.maxBytes
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: url.target)
        head.headers.add(name: "Host", value: url.hostHeader)
        head.headers.add(name: "Accept", value: "application/json")
        head.headers.add(name: "Connection", value: "close")
        head.headers.add(name: "User-Agent", value: "otlp-auth-proxy")
        let request = head
        ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if secure, let tlsContext {
                        try sync.addHandler(TLSClientHandler(context: tlsContext, serverHostname: host))
                    }
                    try sync.addHTTPClientHandlers()
                    try sync.addHandler(FetchHandler(request: request, maxBytes: maxBytes, promise: promise, url: url))
                }
            }
            .connect(host: host, port: port)
            .whenFailure { error in promise.fail(FetchError(description: "\(url): \(error)")) }
        let timer = eventLoop.scheduleTask(in: timeout) {
            promise.fail(FetchError(description: "\(url): no complete response within \(timeout.nanoseconds / 1_000_000) ms"))
        }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        return promise.futureResult
    }
}

/// Sends one GET and collects the response body (bounded), then closes.
private final class FetchHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let request: HTTPRequestHead
    private let maxBytes: Int
    private let promise: EventLoopPromise<[UInt8]>
    private let url: FetchURL
    private var status: HTTPResponseStatus?
    private var body: [UInt8] = []

    init(request: HTTPRequestHead, maxBytes: Int, promise: EventLoopPromise<[UInt8]>, url: FetchURL) {
        self.request = request
        self.maxBytes = maxBytes
        self.promise = promise
        self.url = url
    }

    func channelActive(context: ChannelHandlerContext) {
        // The TLS handler queues these until its handshake completes.
        context.write(wrapOutboundOut(.head(request)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = head.status
        case .body(let buffer):
            if body.count + buffer.readableBytes > maxBytes {
                promise.fail(HTTPSFetcher.FetchError(description: "\(url): response larger than \(maxBytes) bytes"))
                context.close(promise: nil)
                return
            }
            body += buffer.readableBytesView
        case .end:
            if status == .ok {
                promise.succeed(body)
            } else {
                promise.fail(HTTPSFetcher.FetchError(description: "\(url): HTTP \(status?.code ?? 0)"))
            }
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(HTTPSFetcher.FetchError(description: "\(url): \(error)"))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(HTTPSFetcher.FetchError(description: "\(url): connection closed before the response ended"))
        context.fireChannelInactive()
    }
}
