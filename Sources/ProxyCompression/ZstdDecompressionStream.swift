// libzstd's streaming decoder. Everything here touches C. ZSTD_DStream is the same object as
// ZSTD_DCtx; it imports as an OpaquePointer.
internal import CZstd

/// Owns one `ZSTD_DStream`. `init(takingOwnershipOf:)` takes a stream from `ZSTD_createDStream`
/// with its parameters set; `deinit` frees it (`ZSTD_freeDStream`). Not thread-safe: one caller
/// at a time (`Decompressor`). It keeps no pointer into caller memory between calls.
final class ZstdDecompressionStream {
    private let stream: OpaquePointer

    /// The largest window a frame may ask for: 2^23 = 8 MiB, what RFC 8878 asks every decoder to
    /// support. The decoder allocates the window a frame header declares, so without a cap a
    /// 20-byte frame could make it allocate up to 2 GiB whatever the output limit.
    static let windowLogMax: Int32 = 23

    /// Takes ownership of `stream`, from `ZSTD_createDStream`; freed in `deinit`.
    init(takingOwnershipOf stream: OpaquePointer) {
        self.stream = stream
    }

    deinit {
        ZSTD_freeDStream(stream)
    }

    /// A new decoder that refuses frames whose window exceeds `windowLogMax`.
    static func make() throws(DecompressionError) -> ZstdDecompressionStream {
        guard let raw = ZSTD_createDStream() else { throw .setupFailed("zstd: out of memory") }
        let owned = ZstdDecompressionStream(takingOwnershipOf: raw)  // frees it if the next step throws
        let result = otlp_zstd_set_window_log_max(raw, windowLogMax)
        guard ZSTD_isError(result) == 0 else {
            throw .setupFailed("zstd: " + String(cString: ZSTD_getErrorName(result)))
        }
        return owned
    }

    /// Decodes from `input` into `output` (which must not be empty). A frame has ended when
    /// ZSTD_decompressStream returns 0: decoded and fully flushed. Otherwise its return value is
    /// a hint of the next input size, or an error code.
    func step(_ input: UnsafeRawBufferPointer, _ output: UnsafeMutableRawBufferPointer) throws(DecompressionError) -> DecodeStep {
        precondition(output.count > 0, "the zstd decoder needs room for output")
        var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var outBuffer = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
        let result = ZSTD_decompressStream(stream, &outBuffer, &inBuffer)
        if ZSTD_isError(result) != 0 {
            if otlp_zstd_error_is_window_too_large(result) != 0 {
                throw .corrupt("the zstd frame needs a window larger than \(1 << (Self.windowLogMax - 20)) MiB")
            }
            // ZSTD_getErrorName returns one of libzstd's static strings.
            throw .corrupt(String(cString: ZSTD_getErrorName(result)))
        }
        return DecodeStep(consumed: inBuffer.pos, produced: outBuffer.pos, ended: result == 0)
    }

    /// Starts the next frame; the parameters (the window cap) stay.
    func reset() throws(DecompressionError) {
        let result = ZSTD_DCtx_reset(stream, ZSTD_reset_session_only)
        guard ZSTD_isError(result) == 0 else {
            throw .setupFailed("zstd: " + String(cString: ZSTD_getErrorName(result)))
        }
    }
}
