// The module's error type and a small closure-based protobuf wire reader. The payload editor has
// its own cursor (OTLPWireEditor.swift); this reader serves the tests and the fuzz target, which
// check the editor's output with code that shares nothing with it.

/// Why a body was refused. The text is sent to clients (the sink's 400, the proxy's
/// google.rpc.Status): it names fields and structure, never bytes of the body.
public struct OTLPBodyError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    /// True when the body was well-formed but the rewritten body would pass the caller's limit
    /// (answer it like a body over the size limit: 413 / RESOURCE_EXHAUSTED, not 400).
    public var exceedsLimit: Bool

    public init(_ description: String, exceedsLimit: Bool = false) {
        self.description = description
        self.exceedsLimit = exceedsLimit
    }
}

/// One decoded protobuf field value. Length-delimited values are slices of the input.
public enum ProtoValue: Equatable {
    case varint(UInt64)
    case fixed64(UInt64)
    case lengthDelimited(ArraySlice<UInt8>)
    case fixed32(UInt32)
}

/// Protobuf wire-format reader over a byte slice: varint / fixed64 / length-delimited /
/// fixed32. Groups (wire types 3 and 4) are refused: OTLP never uses them.
public enum ProtoWalker {
    /// Calls `body` for every field of the message in `bytes`, in order.
    public static func forEachField(
        _ bytes: ArraySlice<UInt8>, _ body: (UInt64, ProtoValue) throws(OTLPBodyError) -> Void
    ) throws(OTLPBodyError) {
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let key = try readVarint(bytes, &index)
            let number = key >> 3
            guard number != 0, number <= 536_870_911 else { throw OTLPBodyError("invalid protobuf field number \(number)") }
            switch key & 7 {
            case 0:
                try body(number, .varint(try readVarint(bytes, &index)))
            case 1:
                guard bytes.endIndex - index >= 8 else { throw OTLPBodyError("truncated protobuf fixed64 field \(number)") }
                var value: UInt64 = 0
                for offset in 0..<8 { value |= UInt64(bytes[index + offset]) << (8 * UInt64(offset)) }
                index += 8
                try body(number, .fixed64(value))
            case 2:
                let length = try readVarint(bytes, &index)
                guard length <= UInt64(bytes.endIndex - index) else {
                    throw OTLPBodyError("protobuf field \(number) length runs past the end of its message")
                }
                let end = index + Int(length)
                let value = bytes[index..<end]
                index = end
                try body(number, .lengthDelimited(value))
            case 5:
                guard bytes.endIndex - index >= 4 else { throw OTLPBodyError("truncated protobuf fixed32 field \(number)") }
                var value: UInt32 = 0
                for offset in 0..<4 { value |= UInt32(bytes[index + offset]) << (8 * UInt32(offset)) }
                index += 4
                try body(number, .fixed32(value))
            default:
                throw OTLPBodyError("unsupported protobuf wire type \(key & 7) for field \(number)")
            }
        }
    }

    /// Calls `body` with each embedded message in field `field`; other fields are skipped.
    public static func forEachMessage(
        _ bytes: ArraySlice<UInt8>, field: UInt64, _ body: (ArraySlice<UInt8>) throws(OTLPBodyError) -> Void
    ) throws(OTLPBodyError) {
        try forEachField(bytes) { number, value throws(OTLPBodyError) in
            guard number == field else { return }
            guard case .lengthDelimited(let message) = value else {
                throw OTLPBodyError("protobuf field \(field) must be an embedded message")
            }
            try body(message)
        }
    }

    /// Reads a base-128 varint of at most 10 bytes.
    public static func readVarint(_ bytes: ArraySlice<UInt8>, _ index: inout Int) throws(OTLPBodyError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard index < bytes.endIndex else { throw OTLPBodyError("truncated protobuf varint") }
            let byte = bytes[index]
            index += 1
            if shift == 63 && byte > 1 { throw OTLPBodyError("protobuf varint longer than 64 bits") }
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
    }
}
