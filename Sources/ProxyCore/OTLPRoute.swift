import ProxyOTLP

/// The encoding of an OTLP/HTTP request, which decides the encoding of a local error body.
enum OTLPEncoding: Sendable, Equatable {
    case protobuf
    case json

    /// `application/json` (any parameters, any case) is JSON; everything else is answered in protobuf,
    /// the OTLP default.
    init(contentType: String?) {
        self = contentType.map(Self.isJSON) == true ? .json : .protobuf
    }

    /// Whether the media type (before any `;`, with spaces and tabs around it) is `application/json`
    /// in any case. One pass over the bytes without allocating: this runs on every request.
    private static func isJSON(_ contentType: String) -> Bool {
        // Through the UTF-8 spans: iterating a `String.UTF8View` costs several times more.
        let bytes = contentType.utf8.span
        let json = "application/json".utf8.span
        var matched = 0
        var trailing = false
        for index in bytes.indices {
            var byte = bytes[index]
            if byte == UInt8(ascii: ";") { break }
            let blank = byte == 0x20 || byte == 0x09
            if blank {
                if matched > 0 { trailing = true }
                continue
            }
            if trailing { return false }
            if byte >= 0x41 && byte <= 0x5A { byte |= 0x20 }
            guard matched < json.count, json[matched] == byte else { return false }
            matched += 1
        }
        return matched == json.count
    }
}
