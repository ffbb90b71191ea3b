import NIOCore

/// Fired with `context.fireUserInboundEventTriggered` once the handshake completes.
public enum TLSServerEvent: Sendable, Equatable {
    /// `negotiatedProtocol`: the ALPN result, nil when none. `peerCertificate`: the client's
    /// certificate when it sent one and it verified against `tls.client_ca_file` (and the CRLs);
    /// nil when the client sent none (possible with `TLSClientAuth.request`) or client
    /// certificates are not requested. A certificate that fails verification never gets here:
    /// the handshake fails instead.
    case handshakeCompleted(negotiatedProtocol: String?, peerCertificate: PeerCertificate?)
}

/// NIO handler that terminates TLS: ciphertext `ByteBuffer`s in from the socket, cleartext
/// `ByteBuffer`s out to the next handler, and the reverse on write.
///
/// Owns one `TLSChannelCore` (and through it one `SSL*` with memory BIOs) made from the
/// `TLSServerContext` given at init; take `TLSServerContextHolder.current` when building the
/// pipeline so a reload affects only new connections. The call order and events are the core's
/// (see `TLSChannelCore`); in short:
/// - `TLSServerEvent.handshakeCompleted` is fired before any cleartext is read.
/// - Writes before the handshake completes are queued and sent with the handshake's last flight.
/// - A failed handshake sends OpenSSL's alert, fires `errorCaught(TLSError)` and closes. The kind is
///   `.peerVerification` when the client's certificate was rejected (the description names
///   OpenSSL's verify reason, e.g. "client certificate rejected: certificate has expired") or a
///   required one was missing, `.handshake` otherwise; later TLS errors are `.protocolFailure`.
/// - A TCP close that cuts a handshake or record short fires `TLSError(.unexpectedEOF)`.
/// Nothing is logged here; the caller logs the errors it receives.
public final class TLSServerHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private let core: TLSChannelCore

    public init(context: TLSServerContext) {
        self.core = TLSChannelCore(connection: SSLConnection(context: context))
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        core.handlerAdded(context: context)
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        core.handlerRemoved(context: context)
    }

    public func channelActive(context: ChannelHandlerContext) {
        core.channelActive(context: context)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        core.channelRead(context: context, ciphertext: unwrapInboundIn(data))
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        core.channelReadComplete(context: context)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        core.channelInactive(context: context)
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        core.userInboundEventTriggered(context: context, event: event)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        core.write(context: context, cleartext: unwrapOutboundIn(data), promise: promise)
    }

    public func flush(context: ChannelHandlerContext) {
        core.flush(context: context)
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        core.close(context: context, mode: mode, promise: promise)
    }
}
