import Logging
import NIOCore
import NIOHTTP1
import ProxyTLS

/// Waits for the TLS handshake and installs the protocol front the client negotiated with ALPN.
///
/// `h2` gets the HTTP/2 front; `http/1.1` or no ALPN the HTTP/1.1 front (`HTTP1ExchangeHandler`,
/// its own codec). Removes itself
/// once the front is installed. The TLS handler fires the handshake event before it passes on any
/// application data, so nothing reaches the front before it is in place.
final class ProtocolSelectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    /// The runtime current at accept: the connection's protocol settings (header limits, idle
    /// timeout) come from it; requests read the runtime in force (`ProxyServices.runtime`).
    private let runtime: ProxyRuntime
    private let pools: UpstreamPools
    private let services: ProxyServices
    /// Where a connection with a client certificate records itself, to be judged again later.
    private let certificateConnections: ClientCertificateConnections
    private let logger: Logger
    /// A drain started during the handshake: the front gets the event once installed.
    private var draining = false

    init(
        connectionRuntime runtime: ProxyRuntime, pools: UpstreamPools, services: ProxyServices,
        certificateConnections: ClientCertificateConnections, logger: Logger
    ) {
        self.runtime = runtime
        self.pools = pools
        self.services = services
        self.certificateConnections = certificateConnections
        self.logger = logger
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ProxyDrainEvent {
            draining = true
            return
        }
        guard let event = event as? TLSServerEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        switch event {
        case .handshakeCompleted(let negotiated, let peerCertificate, let peerChain):
            if let peerCertificate, let peerChain {
                // May end the connection at once (a reload swapped the trust store during the
                // handshake): the drain event then reaches this handler and the front gets it below.
                certificateConnections.opened(
                    context.channel, certificate: peerCertificate, chain: peerChain, connectionRuntime: runtime)
            }
            if negotiated == "h2" {
                do {
                    let sync = context.pipeline.syncOperations
                    try sync.addHandler(IdleStateHandler(allTimeout: runtime.limits.idleTimeout), position: .after(self))
                    try sync.addHandler(
                        HTTP2ServerConnection(
                            connectionRuntime: runtime, pools: pools, services: services, peerCertificate: peerCertificate,
                            logger: logger))
                    if draining { context.fireUserInboundEventTriggered(ProxyDrainEvent()) }
                    sync.removeHandler(context: context, promise: nil)
                } catch {
                    context.close(promise: nil)
                }
                return
            }
            guard negotiated == nil || negotiated == "http/1.1" else {
                logger.debug("unsupported ALPN protocol", metadata: ["alpn": "\(negotiated ?? "")"])
                context.close(promise: nil)
                return
            }
            do {
                let sync = context.pipeline.syncOperations
                // The HTTP/1.1 front is the connection's codec too: it parses requests and writes
                // responses itself, right behind TLS.
                try sync.addHandler(
                    HTTP1ExchangeHandler(
                        connectionRuntime: runtime, pools: pools, pool: pools.http(on: context.eventLoop), services: services,
                        peerCertificate: peerCertificate, logger: logger))
                if draining { context.fireUserInboundEventTriggered(ProxyDrainEvent()) }
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            } catch {
                context.close(promise: nil)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A failed handshake: the TLS handler already sent the alert and closes; log the reason.
        services.metrics.tlsHandshakeFailed(reason: TLSHandshakeFailure.label(error))
        if let tlsError = error as? TLSError, tlsError.kind == .peerVerification {
            logger.info("client certificate rejected", metadata: ["reason": "\(tlsError.description)"])
        } else {
            logger.debug("TLS handshake failed", metadata: ["error": "\(error)"])
        }
        context.close(promise: nil)
    }
}
