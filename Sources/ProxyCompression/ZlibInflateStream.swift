// zlib's inflate, for gzip and deflate (zlib format). Everything here touches C: the z_stream
// lives on the heap because zlib keeps a pointer back to it in its private state and refuses
// (Z_STREAM_ERROR) a stream whose address changed, so it must never be a Swift value that moves.
internal import CZlib

/// What one call into a decoder did.
struct DecodeStep {
    /// Input bytes the decoder took (it may keep some in its own buffers).
    var consumed: Int
    /// Output bytes written to the start of the output buffer.
    var produced: Int
    /// The current stream (gzip member, zlib stream, zstd frame) ended and all its output was written.
    var ended: Bool
}

/// Owns one zlib inflate stream: the heap-allocated `z_stream` and the state `inflateInit2` hung on
/// it. `init(takingOwnershipOf:)` takes a stream `inflateInit2` has set up; `deinit` ends it
/// (`inflateEnd`) and frees the memory. Not thread-safe: one caller at a time (`Decompressor`).
/// Between calls it holds no pointer into caller memory.
final class ZlibInflateStream {
    private let stream: UnsafeMutablePointer<z_stream>

    /// gzip only (RFC 1952): 15-bit window plus 16, which tells zlib to expect the gzip wrapper.
    /// Not 32 + 15 (detect gzip or zlib): a body labelled gzip must be gzip.
    static let gzipWindowBits: Int32 = 16 + 15
    /// zlib format only (RFC 1950), which HTTP's and gRPC's "deflate" are.
    static let zlibWindowBits: Int32 = 15

    /// Takes ownership of `stream`, already set up by `inflateInit2`; freed in `deinit`.
    init(takingOwnershipOf stream: UnsafeMutablePointer<z_stream>) {
        self.stream = stream
    }

    deinit {
        inflateEnd(stream)  // frees zlib's state and window; the result only says whether the state was valid
        stream.deinitialize(count: 1)
        stream.deallocate()
    }

    /// A new inflate stream with zlib's default allocator (zalloc, zfree, opaque all NULL).
    static func make(windowBits: Int32) throws(DecompressionError) -> ZlibInflateStream {
        let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        stream.initialize(to: z_stream())  // all fields zero: NULL allocator hooks, no input yet
        let result = otlp_inflate_init2(stream, windowBits)
        guard result == Z_OK else {
            // inflateInit2 frees what it allocated when it fails; only our struct is left.
            stream.deinitialize(count: 1)
            stream.deallocate()
            throw .setupFailed(result == Z_MEM_ERROR ? "zlib: out of memory" : "zlib: inflateInit2 returned \(result)")
        }
        return ZlibInflateStream(takingOwnershipOf: stream)
    }

    /// Decodes from `input` into `output` (which must not be empty) until one of them is used up
    /// or the stream ends. Z_BUF_ERROR ("no progress possible") is not an error: it means the
    /// decoder needs more input, or more room, and the caller sees it as a step that did nothing.
    func step(_ input: UnsafeRawBufferPointer, _ output: UnsafeMutableRawBufferPointer) throws(DecompressionError) -> DecodeStep {
        precondition(output.count > 0, "inflate needs room for output")
        // avail_in/avail_out are 32-bit: offer at most 4 GiB - 1 per call; the caller loops.
        let inputCount = min(input.count, Int(UInt32.max))
        let outputCount = min(output.count, Int(UInt32.max))
        // zlib's next_in is not const (z_const is empty unless defined); inflate never writes through it.
        stream.pointee.next_in = input.baseAddress.map { UnsafeMutablePointer(mutating: $0.assumingMemoryBound(to: Bytef.self)) }
        stream.pointee.avail_in = uInt(inputCount)
        stream.pointee.next_out = output.baseAddress!.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_out = uInt(outputCount)
        let result = inflate(stream, Z_NO_FLUSH)
        let step = DecodeStep(consumed: inputCount - Int(stream.pointee.avail_in),
                              produced: outputCount - Int(stream.pointee.avail_out),
                              ended: result == Z_STREAM_END)
        // Drop the pointers into the caller's buffers: they are valid only during this call.
        stream.pointee.next_in = nil
        stream.pointee.avail_in = 0
        stream.pointee.next_out = nil
        stream.pointee.avail_out = 0
        switch result {
        case Z_OK, Z_STREAM_END, Z_BUF_ERROR:
            return step
        case Z_NEED_DICT:
            throw .corrupt("the zlib stream needs a preset dictionary")
        case Z_MEM_ERROR:
            throw .setupFailed("zlib: out of memory")
        default:
            // Z_DATA_ERROR (and Z_STREAM_ERROR, which would be our bug): msg is one of zlib's static strings.
            throw .corrupt(stream.pointee.msg.map { String(cString: $0) } ?? "zlib error \(result)")
        }
    }

    /// Starts the next stream (the next gzip member) with the same settings.
    func reset() throws(DecompressionError) {
        let result = inflateReset(stream)
        guard result == Z_OK else { throw .setupFailed("zlib: inflateReset returned \(result)") }
    }
}
