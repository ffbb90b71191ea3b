// ProxyCompression: the only module that touches zlib and libzstd (DESIGN.md, "Layout").
//
// It reads compressed OTLP payloads: HTTP `Content-Encoding` bodies and gRPC messages sent with
// `grpc-encoding`. It decompresses only; every output is bounded by a limit the caller sets.

/// A content coding the decompressors understand, as named by HTTP `Content-Encoding` (RFC 9110
/// section 8.4.1) and gRPC `grpc-encoding`.
///
/// - `gzip`: the gzip file format (RFC 1952). Concatenated members are read as one stream, as
///   `gzip -d` and Go's `compress/gzip` do. A zlib stream sent as "gzip" is refused.
/// - `deflate`: the zlib format (RFC 1950), which is what both HTTP's and gRPC's "deflate" mean.
///   Raw deflate without the zlib header is refused, and so is anything after the stream's end.
/// - `zstd`: Zstandard frames (RFC 8878). Concatenated frames (and skippable frames) are read as
///   one stream. Frames that need a window larger than 8 MiB are refused (RFC 8878 asks decoders
///   to support 8 MiB; more would let one frame header make the decoder allocate up to 2 GiB).
/// - `identity`: no coding; the bytes are copied under the same limit.
public enum ContentCoding: Sendable, Equatable, CaseIterable {
    case identity
    case gzip
    case deflate
    case zstd

    /// One coding token: compared case-insensitively, spaces and tabs around it ignored; `x-gzip`
    /// is gzip (RFC 9110 keeps it as an alias). Nil for anything else, including an empty token
    /// and a list.
    public init?(token: some StringProtocol) {
        switch Self.lowercasedTrimmed(token) {
        case "identity": self = .identity
        case "gzip", "x-gzip": self = .gzip
        case "deflate": self = .deflate
        case "zstd": self = .zstd
        default: return nil
        }
    }

    /// The coding the values of a message's `Content-Encoding` fields declare, all of them in
    /// arrival order (several fields are one comma-separated list).
    ///
    /// No field, empty list members and `identity` mean identity. At most one other coding is
    /// supported: a stack of codings ("gzip, zstd", or two fields) or an unknown token throws
    /// `.unsupportedCoding` with what was declared, cut to 64 characters.
    public init(contentEncoding values: some Sequence<some StringProtocol>) throws(DecompressionError) {
        var declared: [String] = []
        for value in values {
            for member in value.split(separator: ",", omittingEmptySubsequences: false) {
                let token = Self.lowercasedTrimmed(member)
                if !token.isEmpty && token != "identity" { declared.append(token) }
            }
        }
        guard !declared.isEmpty else {
            self = .identity
            return
        }
        let description = Self.shortened(declared.joined(separator: ", "))
        guard declared.count == 1, let coding = ContentCoding(token: declared[0]) else {
            throw .unsupportedCoding(description)
        }
        self = coding
    }

    /// The canonical token, as written in `Content-Encoding`, `grpc-encoding` and `grpc-accept-encoding`.
    public var name: String {
        switch self {
        case .identity: return "identity"
        case .gzip: return "gzip"
        case .deflate: return "deflate"
        case .zstd: return "zstd"
        }
    }

    /// `token` without surrounding spaces and tabs, ASCII letters lowered (header tokens are ASCII).
    private static func lowercasedTrimmed(_ token: some StringProtocol) -> String {
        var scalars = Substring(token).unicodeScalars[...]
        while let first = scalars.first, first == " " || first == "\t" { scalars.removeFirst() }
        while let last = scalars.last, last == " " || last == "\t" { scalars.removeLast() }
        var out = String.UnicodeScalarView()
        for scalar in scalars {
            if scalar.value >= 0x41 && scalar.value <= 0x5a {
                out.append(Unicode.Scalar(scalar.value + 0x20)!)
            } else {
                out.append(scalar)
            }
        }
        return String(out)
    }

    /// At most 64 characters of a client-supplied name, for error messages.
    static func shortened(_ text: String) -> String {
        text.count <= 64 ? text : String(text.prefix(61)) + "..."
    }
}

/// Why a body or message could not be decompressed. The one error type of ProxyCompression;
/// messages carry the library's reason, never the input's bytes.
public enum DecompressionError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The declared coding is not one the decompressors know (or is a stack of codings).
    case unsupportedCoding(String)
    /// The input is not valid data of its coding; the reason is zlib's or libzstd's.
    case corrupt(String)
    /// The output would grow past `limit` bytes. Decoding stopped at the limit: nothing past it
    /// was produced or kept.
    case tooLarge(limit: Int)
    /// The input ended inside a stream (or there was no stream at all).
    case truncated
    /// Bytes follow the end of a stream that cannot be followed by another (deflate).
    case trailingData
    /// The library could not set up a decoder (out of memory, or a library/header mismatch).
    case setupFailed(String)

    public var description: String {
        switch self {
        case .unsupportedCoding(let coding): return "unsupported content coding \(coding)"
        case .corrupt(let reason): return "corrupt compressed data: \(reason)"
        case .tooLarge(let limit): return "decompressed data larger than \(limit) bytes"
        case .truncated: return "compressed data truncated: the stream does not end"
        case .trailingData: return "data after the end of the compressed stream"
        case .setupFailed(let reason): return "cannot set up a decompressor: \(reason)"
        }
    }
}
