// Value types of the ProxyHTTP2 interface: settings, header fields, events and the error.
// None of them mention nghttp2; the session translates at its boundary.
import NIOCore

/// Which end of the connection a session plays.
public enum HTTP2Role: Sendable { case server, client }

/// What a session advertises to its peer and enforces on what it receives.
public struct HTTP2SessionSettings: Sendable, Equatable {
    /// SETTINGS_MAX_CONCURRENT_STREAMS we advertise; streams past it are refused (REFUSED_STREAM).
    public var maxConcurrentStreams: Int = 100
    /// SETTINGS_INITIAL_WINDOW_SIZE: how much DATA the peer may send per stream before we consume.
    public var initialWindowSize: Int = 256 * 1024
    /// Our connection receive window, opened with a WINDOW_UPDATE on stream 0 at start.
    public var connectionWindowSize: Int = 4 * 1024 * 1024
    /// SETTINGS_MAX_FRAME_SIZE we accept (16,384 ... 16,777,215).
    public var maxFrameSize: Int = 16_384
    /// Advertised as SETTINGS_MAX_HEADER_LIST_SIZE and enforced per header block
    /// (name + value + 32 per field, as HPACK counts).
    public var maxHeaderListBytes: Int = 64 * 1024
    /// Fields per header block; enforced by the session (nghttp2 1.52 enforces no header list limit).
    public var maxHeaderCount: Int = 100
    /// SETTINGS entries per frame before the peer counts as misbehaving.
    public var maxSettingsEntries: Int = 32
    /// Outbound SETTINGS/PING ACKs queued before the peer counts as flooding us.
    public var maxOutboundAck: Int = 1000
    /// "Glitches" the peer may cause in a burst: streams nghttp2 resets by itself because of what
    /// the peer sent (malformed headers, a zero WINDOW_UPDATE, DATA after END_STREAM, a wrong
    /// content-length, streams over the limit) and DATA frames that carry nothing and do not end
    /// the stream. The peer does not reset these streams itself, so nghttp2's rapid-reset limit
    /// never counts them. Past the burst the session ends with GOAWAY(ENHANCE_YOUR_CALM).
    public var maxGlitches: Int = 1000
    /// How many glitches per second the burst allowance refills by.
    public var glitchesPerSecond: Int = 33

    public init() {}
}

/// One header field as on the wire.
public struct HTTP2HeaderField: Sendable, Equatable {
    /// Lower-case as on the wire; pseudo-headers start with ":".
    public var name: String
    public var value: String
    /// Sent as "never indexed" so no HPACK table on the path keeps it (credentials).
    public var neverIndex: Bool

    public init(name: String, value: String, neverIndex: Bool = false) {
        self.name = name
        self.value = value
        self.neverIndex = neverIndex
    }
}

/// What a received header block is, from the pseudo-headers it carries.
public enum HTTP2HeaderKind: Sendable, Equatable { case request, response, informational, trailers }

/// RFC 9113 section 7 error codes.
public enum HTTP2ErrorCode: UInt32, Sendable {
    case noError = 0, protocolError, internalError, flowControlError,
        settingsTimeout, streamClosed, frameSizeError, refusedStream, cancel, compressionError, connectError,
        enhanceYourCalm, inadequateSecurity, http11Required

    /// Unknown codes from the peer are treated as INTERNAL_ERROR, as RFC 9113 section 7 allows.
    init(wire: UInt32) {
        self = HTTP2ErrorCode(rawValue: wire) ?? .internalError
    }
}

/// What the peer did, in arrival order. Events for one stream end with `.streamClosed`.
public enum HTTP2Event: Sendable, Equatable {
    /// A complete header block (HEADERS + CONTINUATION), after nghttp2's own HTTP messaging checks.
    case headers(streamID: Int32, fields: [HTTP2HeaderField], kind: HTTP2HeaderKind, endStream: Bool)
    /// A DATA chunk (padding excluded). `endStream` true on the chunk that ends the stream; an empty
    /// buffer with endStream true when END_STREAM came on an empty DATA frame.
    case data(streamID: Int32, ByteBuffer, endStream: Bool)
    /// Bytes of our queued outbound DATA that nghttp2 just took into frames for `streamID` (so a relay can
    /// open the window on the other side by exactly this much).
    case dataSent(streamID: Int32, bytes: Int)
    /// The peer sent RST_STREAM.
    case streamReset(streamID: Int32, errorCode: HTTP2ErrorCode)
    /// nghttp2 closed the stream (normal end, reset by either side, or refused); always the last event for a stream.
    case streamClosed(streamID: Int32, errorCode: HTTP2ErrorCode)
    /// The peer sent GOAWAY.
    case goaway(lastStreamID: Int32, errorCode: HTTP2ErrorCode)
    /// The peer's SETTINGS arrived (first one and changes).
    case remoteSettings(maxConcurrentStreams: Int)
}

/// The module's one error type. `description` carries nghttp2's reason text where there is one;
/// it never contains header values.
public struct HTTP2Error: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// nghttp2 reported a connection error (bad preface, flood, bad frame, ...); a GOAWAY is queued.
        case protocolViolation
        /// Our header count/bytes limit: the session has queued GOAWAY(ENHANCE_YOUR_CALM).
        case headerListTooLarge
        case streamNotFound, streamClosed, invalidArgument, sessionClosed, internalError
    }

    public var kind: Kind
    public var description: String

    public init(kind: Kind, description: String) {
        self.kind = kind
        self.description = description
    }
}
