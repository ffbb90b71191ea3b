import NIOCore

/// Fired with `context.fireUserInboundEventTriggered` once the handshake completes.
public enum TLSServerEvent: Sendable, Equatable {
    /// `negotiatedProtocol`: the ALPN result, nil when none. `peerCertificate`: the client's
    /// certificate when it sent one and it verified against `tls.client_ca_file` (and the CRLs);
    /// nil when the client sent none (possible with `TLSClientAuth.request`) or client
    /// certificates are not requested. A certificate that fails verification never gets here:
    /// the handshake fails instead. `peerChain`: that certificate's chain as the client sent it,
    /// present exactly when `peerCertificate` is, so it can be verified again after a reload
    /// (`TLSServerContext.verify(_:at:)`).
    case handshakeCompleted(negotiatedProtocol: String?, peerCertificate: PeerCertificate?, peerChain: PeerChain?)
}

/// Fired with `context.fireUserInboundEventTriggered` once the client handshake completes, that
/// is, once the server's certificate chain and name have been verified.
public enum TLSClientEvent: Sendable, Equatable {
    case handshakeCompleted
}

/// The server and client TLS handlers are one class: a thin NIO face over `TLSChannelCore`, which
/// holds the state machine and the one `SSL*`; only construction differs.
public typealias TLSServerHandler = TLSHandler
public typealias TLSClientHandler = TLSHandler

/// NIO handler that drives one OpenSSL connection over a BIO of Swift buffers: ciphertext `ByteBuffer`s to and
/// from the socket, cleartext `ByteBuffer`s to and from the next handler. Owns one `TLSChannelCore`.
public final class TLSHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private let core: TLSChannelCore

    /// NIO handler that terminates TLS: ciphertext `ByteBuffer`s in from the socket, cleartext
    /// `ByteBuffer`s out to the next handler, and the reverse on write.
    ///
    /// Owns one `TLSChannelCore` (and through it one `SSL*` reading and writing Swift buffers) made from the
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
    public init(context: TLSServerContext) {
        self.core = TLSChannelCore(connection: SSLConnection(context: context))
    }

    /// NIO handler for an outbound TLS connection (JWKS and OIDC discovery over HTTPS): cleartext
    /// `ByteBuffer`s written by the next handler are encrypted to the socket, ciphertext from the
    /// socket is decrypted and passed on.
    ///
    /// Owns one `TLSChannelCore` (and through it one client `SSL*` over Swift buffers, freed with the
    /// handler) made from `context`, which it keeps alive. `serverHostname` is sent as SNI (unless it
    /// is an IP literal) and must match the server certificate's subject alternative names
    /// (partial wildcards such as `a*.example.com` are not accepted).
    ///
    /// Call order and events:
    /// - The ClientHello is sent when the channel becomes active (or at once if the handler is added
    ///   to an active channel). Writes made before the handshake completes are queued and sent after.
    /// - `TLSClientEvent.handshakeCompleted` is fired once, before any cleartext is read.
    /// - A server certificate that fails verification fails the handshake with
    ///   `errorCaught(TLSError(.peerVerification))` naming OpenSSL's reason (e.g. "server certificate
    ///   rejected: Hostname mismatch"), then the channel closes; other failures are `.handshake`, and
    ///   later TLS errors `.protocolFailure`. An invalid `serverHostname` is reported as
    ///   `.configuration` when the handler is added.
    /// - The server's close_notify closes the channel; a TCP close that cuts the handshake or a record
    ///   short fires `TLSError(.unexpectedEOF)` first.
    public init(context: TLSClientContext, serverHostname: String) {
        let connection = SSLConnection(ctx: context.ctx, owner: context, role: .client)
        let nameError = connection?.expectServerName(serverHostname)
        self.core = TLSChannelCore(connection: connection, setupError: nameError)
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
