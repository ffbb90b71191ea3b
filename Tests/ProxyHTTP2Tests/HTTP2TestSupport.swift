// In-memory wiring and raw frame helpers for the HTTP2Session tests. No sockets: one session's
// drained output is the other's input.
import NIOCore
import ProxyHTTP2
import XCTest

/// A client and a server session back to back, with the events each has seen so far.
final class SessionPair {
    let client: HTTP2Session
    let server: HTTP2Session
    var clientEvents: [HTTP2Event] = []
    var serverEvents: [HTTP2Event] = []

    init(client: HTTP2SessionSettings = .init(), server: HTTP2SessionSettings = .init()) throws {
        self.client = try HTTP2Session(role: .client, settings: client)
        self.server = try HTTP2Session(role: .server, settings: server)
    }

    /// Moves bytes both ways until neither side has anything more to say.
    func pump(file: StaticString = #filePath, line: UInt = #line) throws {
        for _ in 0..<1000 {
            var toServer = ByteBuffer()
            try client.drainOutput(into: &toServer, events: &clientEvents)
            if toServer.readableBytes > 0 { try server.receive(toServer, events: &serverEvents) }
            var toClient = ByteBuffer()
            try server.drainOutput(into: &toClient, events: &serverEvents)
            if toClient.readableBytes > 0 { try client.receive(toClient, events: &clientEvents) }
            if toServer.readableBytes == 0 && toClient.readableBytes == 0 { return }
        }
        XCTFail("sessions kept talking after 1000 rounds", file: file, line: line)
    }
}

/// One HTTP/2 frame as parsed from bytes.
struct RawFrame: Equatable {
    var type: UInt8
    var flags: UInt8
    var streamID: Int32
    var payload: [UInt8]

    static let data: UInt8 = 0, headers: UInt8 = 1, rstStream: UInt8 = 3, settings: UInt8 = 4,
        goaway: UInt8 = 7, windowUpdate: UInt8 = 8, continuation: UInt8 = 9
    static let endStream: UInt8 = 0x1, ack: UInt8 = 0x1, endHeaders: UInt8 = 0x4, padded: UInt8 = 0x8

    var bytes: [UInt8] {
        let length = payload.count
        var out: [UInt8] = [UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff), type, flags]
        out += bigEndian32(UInt32(bitPattern: streamID))
        return out + payload
    }

    /// A 32-bit big-endian value from the payload at `offset`.
    func word(at offset: Int) -> UInt32 {
        payload[offset..<offset + 4].reduce(0) { $0 << 8 | UInt32($1) }
    }

    /// GOAWAY: (last stream id, error code).
    var goawayFields: (lastStreamID: Int32, errorCode: UInt32)? {
        guard type == Self.goaway, payload.count >= 8 else { return nil }
        return (Int32(bitPattern: word(at: 0) & 0x7fff_ffff), word(at: 4))
    }

    /// Parses whole frames; `skippingPreface` drops the 24-byte client connection preface first.
    static func parse(_ buffer: ByteBuffer, skippingPreface: Bool = false) -> [RawFrame] {
        var bytes = Array(buffer.readableBytesView)
        if skippingPreface {
            XCTAssertEqual(Array(bytes.prefix(24)), clientPreface)
            bytes.removeFirst(min(24, bytes.count))
        }
        var frames: [RawFrame] = []
        var offset = 0
        while bytes.count - offset >= 9 {
            let length = Int(bytes[offset]) << 16 | Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2])
            guard bytes.count - offset - 9 >= length else { break }
            let id = bytes[offset + 5..<offset + 9].reduce(UInt32(0)) { $0 << 8 | UInt32($1) } & 0x7fff_ffff
            frames.append(RawFrame(type: bytes[offset + 3], flags: bytes[offset + 4], streamID: Int32(id),
                                   payload: Array(bytes[offset + 9..<offset + 9 + length])))
            offset += 9 + length
        }
        return frames
    }

    static let clientPreface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    static func settingsFrame(_ entries: [(UInt16, UInt32)]) -> RawFrame {
        var payload: [UInt8] = []
        for (id, value) in entries {
            payload += [UInt8(id >> 8), UInt8(id & 0xff)] + bigEndian32(value)
        }
        return RawFrame(type: settings, flags: 0, streamID: 0, payload: payload)
    }

    static let settingsAck = RawFrame(type: settings, flags: ack, streamID: 0, payload: [])
}

func bigEndian32(_ value: UInt32) -> [UInt8] {
    [UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]
}

/// HPACK without Huffman or indexing, enough to build request header blocks by hand.
enum HPACK {
    /// A request for `path`: :method POST, :scheme http, :authority, :path, then `extra`
    /// (each as "literal without indexing, new name").
    static func request(path: String = "/", extra: [(String, String)] = []) -> [UInt8] {
        var block: [UInt8] = [0x83, 0x86]  // :method POST, :scheme http (static table)
        block += literal(":authority", "localhost")
        block += literal(":path", path)
        for (name, value) in extra { block += literal(name, value) }
        return block
    }

    static func literal(_ name: String, _ value: String) -> [UInt8] {
        [0x00] + string(name) + string(value)
    }

    /// A string literal with a 7-bit prefix length (multi-byte integers as RFC 7541 5.1).
    static func string(_ text: String) -> [UInt8] {
        let bytes = Array(text.utf8)
        return integer(bytes.count, prefixBits: 7, firstByte: 0) + bytes
    }

    static func integer(_ value: Int, prefixBits: Int, firstByte: UInt8) -> [UInt8] {
        let limit = (1 << prefixBits) - 1
        if value < limit { return [firstByte | UInt8(value)] }
        var out: [UInt8] = [firstByte | UInt8(limit)]
        var rest = value - limit
        while rest >= 128 {
            out.append(UInt8(rest % 128 + 128))
            rest /= 128
        }
        out.append(UInt8(rest))
        return out
    }
}

/// A raw client: sends the preface and frames built by hand into a server session.
final class RawClient {
    let server: HTTP2Session
    var serverEvents: [HTTP2Event] = []

    init(server: HTTP2Session) {
        self.server = server
    }

    /// Sends the connection preface, an empty SETTINGS and an ACK of the server's SETTINGS, and
    /// returns the server's frames in reply.
    @discardableResult
    func handshake() throws -> [RawFrame] {
        try send(bytes: RawFrame.clientPreface + RawFrame.settingsFrame([]).bytes)
        let first = try drain()
        try send(RawFrame.settingsAck)
        return first + (try drain())
    }

    func send(_ frames: RawFrame...) throws {
        try send(bytes: frames.flatMap(\.bytes))
    }

    func send(bytes: [UInt8]) throws {
        try server.receive(ByteBuffer(bytes: bytes), events: &serverEvents)
    }

    func drain() throws -> [RawFrame] {
        var out = ByteBuffer()
        try server.drainOutput(into: &out, events: &serverEvents)
        return RawFrame.parse(out)
    }
}

extension HTTP2Event {
    var streamID: Int32? {
        switch self {
        case .headers(let id, _, _, _), .data(let id, _, _), .dataSent(let id, _), .streamReset(let id, _),
             .streamClosed(let id, _):
            return id
        case .goaway, .remoteSettings:
            return nil
        }
    }
}

/// Payload bytes of the `.data` events for `streamID`, concatenated.
func receivedBody(_ events: [HTTP2Event], streamID: Int32) -> [UInt8] {
    events.reduce(into: []) { out, event in
        if case .data(streamID, let buffer, _) = event { out += Array(buffer.readableBytesView) }
    }
}

func requestFields(path: String = "/v1/traces", extra: [HTTP2HeaderField] = []) -> [HTTP2HeaderField] {
    [
        HTTP2HeaderField(name: ":method", value: "POST"),
        HTTP2HeaderField(name: ":scheme", value: "http"),
        HTTP2HeaderField(name: ":authority", value: "localhost"),
        HTTP2HeaderField(name: ":path", value: path),
    ] + extra
}
