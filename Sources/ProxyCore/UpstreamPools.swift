import NIOCore
import ProxyConfig
import ProxyHTTP2

/// The upstream pools of every event loop: one HTTP/1.1 pool and one h2c pool per loop, created
/// lazily on that loop, so a connection's exchanges and their upstream connections never cross loops.
final class UpstreamPools: Sendable {
    private struct LoopPools {
        var http: UpstreamHTTP1Pool
        var grpc: UpstreamH2Pool
    }

    let httpAddress: SocketAddress
    let grpcAddress: SocketAddress
    /// `:authority` for gRPC requests that arrive without one, and `Host` for OTLP/HTTP requests
    /// that arrive without one (HTTP/1.0).
    let grpcAuthority: String
    let httpAuthority: String
    private let connectTimeout: TimeAmount
    private let maxIdleConnections: Int
    private let boxes: [ObjectIdentifier: NIOLoopBoundBox<LoopPools?>]

    init(upstream: ProxyConfiguration.Upstream, group: any EventLoopGroup) throws(StartupError) {
        func resolve(_ endpoint: Endpoint, key: String) throws(StartupError) -> SocketAddress {
            do {
                return try SocketAddress.makeAddressResolvingHost(endpoint.host, port: endpoint.port)
            } catch {
                throw StartupError(message: "\(key): cannot resolve \(endpoint): \(error)")
            }
        }
        httpAddress = try resolve(upstream.http, key: "upstream.http")
        grpcAddress = try resolve(upstream.grpc, key: "upstream.grpc")
        grpcAuthority = upstream.grpc.description
        httpAuthority = upstream.http.description
        connectTimeout = TimeAmount(upstream.connectTimeout)
        maxIdleConnections = upstream.maxIdleConnections
        var boxes: [ObjectIdentifier: NIOLoopBoundBox<LoopPools?>] = [:]
        for loop in group.makeIterator() {
            boxes[ObjectIdentifier(loop)] = NIOLoopBoundBox.makeEmptyBox(valueType: LoopPools.self, eventLoop: loop)
        }
        self.boxes = boxes
    }

    /// The HTTP/1.1 pool of `eventLoop`; call on that loop.
    func http(on eventLoop: any EventLoop) -> UpstreamHTTP1Pool { pools(on: eventLoop).http }

    /// The h2c pool of `eventLoop`; call on that loop.
    func grpc(on eventLoop: any EventLoop) -> UpstreamH2Pool { pools(on: eventLoop).grpc }

    private func pools(on eventLoop: any EventLoop) -> LoopPools {
        guard let box = boxes[ObjectIdentifier(eventLoop)] else {
            preconditionFailure("connection accepted on an event loop outside the proxy's group")
        }
        if let pools = box.value { return pools }
        let pools = LoopPools(
            http: UpstreamHTTP1Pool(
                eventLoop: eventLoop, address: httpAddress, connectTimeout: connectTimeout, maxIdle: maxIdleConnections),
            grpc: UpstreamH2Pool(
                eventLoop: eventLoop, address: grpcAddress, connectTimeout: connectTimeout, settings: HTTP2SessionSettings()))
        box.value = pools
        return pools
    }

    /// Closes idle HTTP/1.1 connections and every h2c connection (shutdown).
    func closeAll() async {
        for (_, box) in boxes {
            try? await box.eventLoop.submit {
                box.value?.http.closeIdle()
                box.value?.grpc.closeAll()
            }.get()
        }
    }
}
