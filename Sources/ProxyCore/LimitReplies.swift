import NIOHTTP1

/// The retryable replies of the limits: a tenant over its rate, and load shedding.
///
/// OTLP exporters retry 429 and 503 (honouring `Retry-After`) and gRPC UNAVAILABLE; they retry
/// RESOURCE_EXHAUSTED only when the status carries a `google.rpc.RetryInfo`, so the gRPC form of the
/// rate-limit reply always has one: in `grpc-status-details-bin` (a `google.rpc.Status` whose details
/// hold the RetryInfo, as the gRPC richer error model and the Go and Java exporters read it) and in
/// `google.rpc.retryinfo-bin` (the RetryInfo alone, as the Python exporter reads it).
extension LocalReply {
    static let retryInfoTypeURL = "type.googleapis.com/google.rpc.RetryInfo"

    /// A tenant over its request or byte rate: 429 + `Retry-After`, gRPC 8 with RetryInfo.
    static func rateLimited(retryAfter: Duration) -> LocalReply {
        let message = "tenant rate limit exceeded, retry later"
        let retryInfo = Self.retryInfo(delay: retryAfter)
        let status = Self.statusWithDetails(
            code: Code.resourceExhausted, message: message, details: [(retryInfoTypeURL, retryInfo)])
        return LocalReply(
            status: .tooManyRequests, rpcCode: Code.resourceExhausted, message: message,
            extraHeaders: [("Retry-After", retryAfterSeconds(retryAfter))],
            grpcExtraFields: [
                ("grpc-status-details-bin", binaryHeaderValue(status)),
                ("google.rpc.retryinfo-bin", binaryHeaderValue(retryInfo)),
            ])
    }

    /// The proxy holds more than `limits.max_buffered_bytes`: 503 + `Retry-After`, gRPC 14.
    static let overloaded = LocalReply(
        status: .serviceUnavailable, rpcCode: Code.unavailable, message: "proxy overloaded, retry later",
        extraHeaders: [("Retry-After", "1")])

    /// Whole seconds for `Retry-After`, rounded up, at least 1.
    static func retryAfterSeconds(_ delay: Duration) -> String {
        let (seconds, attoseconds) = delay.components
        return String(max(1, seconds + (attoseconds > 0 ? 1 : 0)))
    }

    /// `google.rpc.RetryInfo { google.protobuf.Duration retry_delay = 1; }` with
    /// `Duration { int64 seconds = 1; int32 nanos = 2; }`.
    static func retryInfo(delay: Duration) -> [UInt8] {
        let (seconds, attoseconds) = delay.components
        var duration: [UInt8] = []
        if seconds != 0 {
            duration.append(0x08)
            appendVarint(UInt64(seconds), to: &duration)
        }
        let nanos = attoseconds / 1_000_000_000
        if nanos != 0 {
            duration.append(0x10)
            appendVarint(UInt64(nanos), to: &duration)
        }
        var out: [UInt8] = [0x0A]
        appendVarint(UInt64(duration.count), to: &out)
        return out + duration
    }

    /// `google.rpc.Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }`
    /// with `Any { string type_url = 1; bytes value = 2; }`.
    static func statusWithDetails(code: Int, message: String, details: [(typeURL: String, value: [UInt8])]) -> [UInt8] {
        var out = protobufStatus(code: code, message: message)
        for detail in details {
            var any: [UInt8] = [0x0A]
            appendVarint(UInt64(detail.typeURL.utf8.count), to: &any)
            any += Array(detail.typeURL.utf8)
            any.append(0x12)
            appendVarint(UInt64(detail.value.count), to: &any)
            any += detail.value
            out.append(0x1A)
            appendVarint(UInt64(any.count), to: &out)
            out += any
        }
        return out
    }

    /// A `-bin` metadata value: base64 without padding (gRPC over HTTP/2 spec; readers accept both).
    static func binaryHeaderValue(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var index = 0
        while index < bytes.count {
            let count = min(3, bytes.count - index)
            var group = UInt32(bytes[index]) << 16
            if count > 1 { group |= UInt32(bytes[index + 1]) << 8 }
            if count > 2 { group |= UInt32(bytes[index + 2]) }
            // 3 bytes give 4 characters; a final 1 or 2 bytes give 2 or 3 (no '=' padding).
            for shift in stride(from: 18, through: 18 - 6 * count, by: -6) {
                out.append(alphabet[Int((group >> UInt32(shift)) & 0x3F)])
            }
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func appendVarint(_ value: UInt64, to out: inout [UInt8]) {
        var value = value
        while value >= 0x80 {
            out.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        out.append(UInt8(value))
    }
}
