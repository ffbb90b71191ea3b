// Names and values that nearly every OTLP request and response carries, as strings made once.
//
// Making a `String` from received bytes validates them as UTF-8 and, past 15 bytes, allocates. For the
// few names and values that nearly every exchange repeats (the pseudo-headers, `content-type:
// application/grpc`, `te: trailers`, `grpc-status: 0`) the received bytes are compared with the known
// spelling instead and the string literal is used: no validation, no allocation, no reference
// counting. Anything else, or any other spelling, is made from the bytes as before.

enum HTTP2KnownFields {
    /// The string for a header name as received, known or made from the bytes.
    static func name(_ bytes: UnsafeRawBufferPointer) -> String {
        known(name: bytes) ?? String(decoding: bytes, as: UTF8.self)
    }

    /// The string for a header value as received, known or made from the bytes.
    static func value(_ bytes: UnsafeRawBufferPointer) -> String {
        known(value: bytes) ?? String(decoding: bytes, as: UTF8.self)
    }

    static func known(name bytes: UnsafeRawBufferPointer) -> String? {
        switch bytes.count {
        case 2: if equal(bytes, "te") { return "te" }
        case 4: if equal(bytes, "date") { return "date" }
        case 5: if equal(bytes, ":path") { return ":path" }
        case 6: if equal(bytes, "server") { return "server" }
        case 7:
            if equal(bytes, ":method") { return ":method" }
            if equal(bytes, ":scheme") { return ":scheme" }
            if equal(bytes, ":status") { return ":status" }
        case 10:
            if equal(bytes, ":authority") { return ":authority" }
            if equal(bytes, "user-agent") { return "user-agent" }
        case 11: if equal(bytes, "grpc-status") { return "grpc-status" }
        case 12:
            if equal(bytes, "content-type") { return "content-type" }
            if equal(bytes, "grpc-timeout") { return "grpc-timeout" }
            if equal(bytes, "grpc-message") { return "grpc-message" }
        case 13:
            if equal(bytes, "authorization") { return "authorization" }
            if equal(bytes, "grpc-encoding") { return "grpc-encoding" }
        case 14: if equal(bytes, "content-length") { return "content-length" }
        case 15: if equal(bytes, "accept-encoding") { return "accept-encoding" }
        case 16: if equal(bytes, "content-encoding") { return "content-encoding" }
        case 20: if equal(bytes, "grpc-accept-encoding") { return "grpc-accept-encoding" }
        default: break
        }
        return nil
    }

    static func known(value bytes: UnsafeRawBufferPointer) -> String? {
        switch bytes.count {
        case 1: if equal(bytes, "0") { return "0" }
        case 3: if equal(bytes, "200") { return "200" }
        case 4:
            if equal(bytes, "POST") { return "POST" }
            if equal(bytes, "http") { return "http" }
            if equal(bytes, "gzip") { return "gzip" }
        case 5: if equal(bytes, "https") { return "https" }
        case 8: if equal(bytes, "trailers") { return "trailers" }
        case 16: if equal(bytes, "application/grpc") { return "application/grpc" }
        case 22: if equal(bytes, "application/x-protobuf") { return "application/x-protobuf" }
        default: break
        }
        return nil
    }

    /// Whether `bytes` (already known to be as long) spell `known` exactly.
    @inline(__always)
    private static func equal(_ bytes: UnsafeRawBufferPointer, _ known: StaticString) -> Bool {
        let count = known.utf8CodeUnitCount
        guard bytes.count == count else { return false }
        let expected = known.utf8Start
        var index = 0
        while index < count {
            if bytes[index] != expected[index] { return false }
            index += 1
        }
        return true
    }
}
