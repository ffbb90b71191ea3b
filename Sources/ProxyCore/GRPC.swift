import NIOCore
import ProxyHTTP2

/// gRPC framing facts the relay needs: which requests are gRPC, local trailers-only replies, and
/// the deadline a client asked for.
enum GRPC {
    /// `application/grpc`, `application/grpc+proto`, `application/grpc;…` (ASCII letters in any
    /// case, as media types are compared). One pass over the bytes without allocating: this runs on
    /// every HTTP/2 request.
    static func isGRPC(contentType: String?) -> Bool {
        guard let contentType else { return false }
        // The usual spelling, compared as a whole.
        if contentType == "application/grpc" { return true }
        var bytes = contentType.utf8.makeIterator()
        for expected in "application/grpc".utf8 {
            guard var byte = bytes.next() else { return false }
            if byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") { byte |= 0x20 }
            guard byte == expected else { return false }
        }
        guard let next = bytes.next() else { return true }
        return next == UInt8(ascii: "+") || next == UInt8(ascii: ";")
    }

    /// A trailers-only response: `:status 200`, content type, `grpc-status`, `grpc-message`, sent
    /// as one HEADERS frame with END_STREAM.
    static func trailersOnly(code: Int, message: String) -> [HTTP2HeaderField] {
        [
            HTTP2HeaderField(name: ":status", value: "200"),
            HTTP2HeaderField(name: "content-type", value: "application/grpc"),
            HTTP2HeaderField(name: "grpc-status", value: String(code)),
            HTTP2HeaderField(name: "grpc-message", value: percentEncoded(message)),
        ]
    }

    /// grpc-message is percent-encoded: bytes outside printable ASCII, and `%`.
    static func percentEncoded(_ message: String) -> String {
        var out = ""
        for byte in message.utf8 {
            if byte >= 0x20 && byte <= 0x7E && byte != UInt8(ascii: "%") {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                let hex = Array("0123456789ABCDEF".utf8)
                out += "%" + String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]], as: UTF8.self)
            }
        }
        return out
    }

    /// Parses `grpc-timeout` (`1*8DIGIT unit`, unit one of H M S m u n); nil when absent or malformed.
    static func timeout(_ value: String?) -> TimeAmount? {
        guard let value, value.utf8.count >= 2, value.utf8.count <= 9, let unit = value.last,
              let amount = Int64(value.dropLast()), amount >= 0
        else { return nil }
        switch unit {
        case "H": return .hours(amount)
        case "M": return .minutes(amount)
        case "S": return .seconds(amount)
        case "m": return .milliseconds(amount)
        case "u": return .microseconds(amount)
        case "n": return .nanoseconds(amount)
        default: return nil
        }
    }
}

/// Follows the length-prefixed messages of a gRPC request body as it streams through, without
/// buffering it, to refuse a message whose declared length exceeds `max_recv_msg_size` before the
/// receiver has to hold it.
struct GRPCMessageScanner {
    let maxMessageSize: Int
    /// Bytes of the current 5-byte prefix seen so far, and its length bytes.
    private var prefixSeen = 0
    private var length: UInt32 = 0
    /// Payload bytes still to skip for the current message.
    private var remaining = 0

    init(maxMessageSize: Int) {
        self.maxMessageSize = maxMessageSize
    }

    enum Outcome: Equatable {
        case ok
        /// A message declared this many bytes, over the limit.
        case tooLarge(Int)
    }

    /// True between messages: every message seen so far arrived whole.
    var atMessageBoundary: Bool { prefixSeen == 0 && remaining == 0 }

    mutating func scan(_ buffer: ByteBuffer) -> Outcome {
        var view = buffer.readableBytesView[...]
        while !view.isEmpty {
            if remaining > 0 {
                let skip = min(remaining, view.count)
                view = view.dropFirst(skip)
                remaining -= skip
                continue
            }
            let byte = view.first!
            view = view.dropFirst()
            if prefixSeen > 0 { length = length << 8 | UInt32(byte) }
            prefixSeen += 1
            if prefixSeen == 5 {
                let declared = Int(length)
                prefixSeen = 0
                length = 0
                if declared > maxMessageSize { return .tooLarge(declared) }
                remaining = declared
            }
        }
        return .ok
    }
}
