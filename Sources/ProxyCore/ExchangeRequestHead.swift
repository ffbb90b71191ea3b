import NIOHTTP1
import ProxyHTTP2

/// The protocol a client speaks on its connection, which decides how replies and response heads
/// are written back.
enum ClientProtocol: Sendable, Equatable {
    case http1(HTTPVersion)
    case http2
}

/// One client request head as a front hands it to the `Exchange`: the method, the target, the
/// authority and the regular fields, in the representation the front already has (no copy per field).
struct ExchangeRequestHead {
    /// The regular header fields (never pseudo-header fields), in order.
    enum Fields {
        case http1(HTTPHeaders)
        /// HTTP/2 fields; pseudo-header fields in it are skipped when read.
        case http2([HTTP2HeaderField])
    }

    var method: String
    /// The request target as sent: the path with its query (`:path`, or the HTTP/1.1 origin-form target).
    var target: String
    /// HTTP/2 `:authority`; nil on HTTP/1.1, where the authority is the `Host` field.
    var authority: String?
    var fields: Fields
    /// The client already ended the request with its head (HTTP/2 END_STREAM on HEADERS).
    var endStream: Bool

    /// A head read from HTTP/2 fields: the pseudo-header fields become method, target and authority.
    init(http2 fields: [HTTP2HeaderField], endStream: Bool) {
        var method = ""
        var target = ""
        var authority: String?
        for field in fields where field.name.utf8.first == UInt8(ascii: ":") {
            switch field.name {
            case ":method": method = field.value
            case ":path": target = field.value
            case ":authority": authority = field.value
            default: break
            }
        }
        self.method = method
        self.target = target
        self.authority = authority
        self.fields = .http2(fields)
        self.endStream = endStream
    }

    init(http1 head: HTTPRequestHead) {
        method = head.method.rawValue
        target = head.uri
        authority = nil
        fields = .http1(head.headers)
        endStream = false
    }

    /// Calls `body` with each regular field, in order.
    func forEachField(_ body: (_ name: String, _ value: String) -> Void) {
        switch fields {
        case .http1(let headers):
            for (name, value) in headers { body(name, value) }
        case .http2(let fields):
            for field in fields where field.name.utf8.first != UInt8(ascii: ":") { body(field.name, field.value) }
        }
    }
}

/// The fields of a request head the exchange decides on, gathered in one pass instead of a lookup
/// (and an array) per name. Names are compared case-insensitively: HTTP/2 sends them lower case,
/// HTTP/1.1 in any case.
struct RequestHeadFacts {
    /// The first Content-Type.
    var contentType: String?
    var upgrade = false
    var transferEncoding = false
    var contentLengths = 0
    /// The first Content-Length.
    var contentLength: String?
    /// An `Expect: 100-continue` (any case).
    var expectsContinue = false
    /// Every Authorization value (more than one is refused by the authenticator).
    var authorization: [String] = []
    /// How many `Host` fields, and the first one's value.
    var hosts = 0
    var host: String?
    var grpcTimeout: String?
    /// Every `Content-Encoding` value, in order.
    var contentEncodings: [String] = []
    /// The last `grpc-encoding`.
    var grpcEncoding: String?
    /// Regular fields in the head.
    var count = 0
    /// The size of the request line and header section as sent (name, ": ", value, CRLF per field).
    var bytes: Int

    /// True when `name` is `lower` in any ASCII case (`lower` is given in lower case).
    /// Compares through the strings' UTF-8 spans: iterating a `String.UTF8View` costs several times more.
    static func equalsLowercased(_ name: String, _ lower: String) -> Bool {
        let bytes = name.utf8.span
        let expected = lower.utf8.span
        guard bytes.count == expected.count else { return false }
        for index in bytes.indices {
            let byte = bytes[index]
            let folded = byte &- UInt8(ascii: "A") < 26 ? byte | 0x20 : byte
            guard folded == expected[index] else { return false }
        }
        return true
    }

    init(_ head: ExchangeRequestHead) {
        bytes = head.target.utf8.count + head.method.utf8.count + 11
        var facts = self
        switch head.fields {
        case .http1(let headers):
            for (name, value) in headers { facts.add(name, value) }
        case .http2(let fields):
            // nghttp2 passes only lower-case names, so each is compared as it is.
            for field in fields where field.name.utf8.first != UInt8(ascii: ":") { facts.addLowercase(field.name, field.value) }
        }
        self = facts
    }

    /// A field whose name is known to be lower case (HTTP/2).
    private mutating func addLowercase(_ name: String, _ value: String) {
        count += 1
        bytes += name.utf8.count + value.utf8.count + 4
        switch name {
        case "host":
            hosts += 1
            if host == nil { host = value }
        case "content-type":
            if contentType == nil { contentType = value }
        case "content-length":
            contentLengths += 1
            if contentLength == nil { contentLength = value }
        case "authorization":
            authorization.append(value)
        case "grpc-timeout":
            grpcTimeout = value
        case "grpc-encoding":
            grpcEncoding = value
        case "content-encoding":
            contentEncodings.append(value)
        case "upgrade":
            upgrade = true
        case "transfer-encoding":
            transferEncoding = true
        case "expect":
            if Self.equalsLowercased(value, "100-continue") { expectsContinue = true }
        default:
            break
        }
    }

    private mutating func add(_ name: String, _ value: String) {
        count += 1
        bytes += name.utf8.count + value.utf8.count + 4
        switch name.utf8.count {
        case 4 where Self.equalsLowercased(name, "host"):
            hosts += 1
            if host == nil { host = value }
        case 12 where Self.equalsLowercased(name, "content-type"):
            if contentType == nil { contentType = value }
        case 7 where Self.equalsLowercased(name, "upgrade"):
            upgrade = true
        case 17 where Self.equalsLowercased(name, "transfer-encoding"):
            transferEncoding = true
        case 14 where Self.equalsLowercased(name, "content-length"):
            contentLengths += 1
            if contentLength == nil { contentLength = value }
        case 6 where Self.equalsLowercased(name, "expect"):
            if Self.equalsLowercased(value, "100-continue") { expectsContinue = true }
        case 13 where Self.equalsLowercased(name, "authorization"):
            authorization.append(value)
        case 12 where Self.equalsLowercased(name, "grpc-timeout"):
            grpcTimeout = value
        case 16 where Self.equalsLowercased(name, "content-encoding"):
            contentEncodings.append(value)
        default:
            break
        }
    }
}
