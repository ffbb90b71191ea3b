// The bounded streaming decompressor: the same loop for every coding, over the two decoders
// that own C handles (ZlibInflateStream, ZstdDecompressionStream). No C types in this file.

/// Decompresses one body or message of a given coding, fed in pieces or whole, into at most
/// `limit` bytes of output.
///
/// Output is produced in chunks of at most 64 KiB, and only while the total stays within
/// `limit`: once `limit` bytes are out, the decoder is given a single spare byte to see whether
/// the stream has more, and if it has, `feed` throws `.tooLarge(limit:)` at once. So memory
/// never grows with what the input would expand to: a few hundred KiB of gzip that would inflate
/// to gigabytes costs at most `limit` bytes of output (plus the decoder's window: 32 KiB for
/// zlib, at most 8 MiB for zstd).
///
/// Call order: `feed` any number of times (empty pieces are fine), then `finish()` once the input
/// has ended, which throws `.truncated` when the stream stopped part way. Concatenated gzip
/// members and zstd frames are one stream; deflate (zlib format) is a single stream, and bytes
/// after it throw `.trailingData`. `identity` copies the input under the same limit.
///
/// After any error the decompressor is spent: every later `feed` or `finish` throws the same
/// error. It owns its decoder (a zlib or zstd stream, freed with it) and is not thread-safe; use
/// it from one thread at a time.
public final class Decompressor {
    public let coding: ContentCoding
    /// The most output bytes this decompressor produces over its whole life.
    public let limit: Int
    /// Output bytes produced so far.
    public private(set) var outputCount = 0
    /// Input bytes taken so far.
    public private(set) var inputCount = 0

    /// The largest piece of output written per decoder call.
    static let chunkSize = 64 * 1024

    /// The decoder behind the loop; each case's class owns its C stream and frees it.
    private enum Decoder {
        case identity
        case zlib(ZlibInflateStream)
        case zstd(ZstdDecompressionStream)
    }

    private let decoder: Decoder
    /// Where each decoder call writes; `min(chunkSize, limit)` bytes (at least 1), freed in `deinit`.
    private let scratch: UnsafeMutableRawBufferPointer
    /// Whether the current stream (member, frame) has ended; a new one starts if input follows.
    private var streamEnded = false
    private var failure: DecompressionError?

    /// - Parameter limit: the most output bytes allowed; at least 0.
    public init(coding: ContentCoding, limit: Int) throws(DecompressionError) {
        precondition(limit >= 0, "the output limit cannot be negative")
        self.coding = coding
        self.limit = limit
        switch coding {
        case .identity: decoder = .identity
        case .gzip: decoder = .zlib(try ZlibInflateStream.make(windowBits: ZlibInflateStream.gzipWindowBits))
        case .deflate: decoder = .zlib(try ZlibInflateStream.make(windowBits: ZlibInflateStream.zlibWindowBits))
        case .zstd: decoder = .zstd(try ZstdDecompressionStream.make())
        }
        scratch = .allocate(byteCount: max(1, min(Self.chunkSize, limit)), alignment: 1)
    }

    deinit {
        scratch.deallocate()
    }

    /// Decompresses a whole body: `feed` then `finish`.
    public static func decompress(_ input: some Collection<UInt8>, coding: ContentCoding, limit: Int) throws(DecompressionError) -> [UInt8] {
        let decompressor = try Decompressor(coding: coding, limit: limit)
        var output: [UInt8] = []
        try decompressor.feed(input, into: &output)
        try decompressor.finish()
        return output
    }

    /// Decodes the next piece of input and appends what it decodes to `output` (whatever `output`
    /// held before stays in front). On `.tooLarge`, this call has appended exactly the bytes that
    /// bring the decompressor's total output to `limit`, and no more.
    public func feed(_ input: UnsafeRawBufferPointer, into output: inout [UInt8]) throws(DecompressionError) {
        if let failure { throw failure }
        do {
            try run(input, into: &output)
        } catch {
            failure = error
            throw error
        }
    }

    /// `feed` for any collection of bytes (`[UInt8]`, `ArraySlice`, NIO's `ByteBufferView`): used
    /// in place when it is contiguous, else copied through a 64 KiB buffer.
    public func feed(_ input: some Collection<UInt8>, into output: inout [UInt8]) throws(DecompressionError) {
        let contiguous: Result<Void, DecompressionError>? = input.withContiguousStorageIfAvailable { buffer in
            Result { () throws(DecompressionError) in try feed(UnsafeRawBufferPointer(buffer), into: &output) }
        }
        if let contiguous { return try contiguous.get() }
        var piece: [UInt8] = []
        piece.reserveCapacity(min(input.count, Self.chunkSize))
        var index = input.startIndex
        while index != input.endIndex {
            let end = input.index(index, offsetBy: Self.chunkSize, limitedBy: input.endIndex) ?? input.endIndex
            piece.removeAll(keepingCapacity: true)
            piece.append(contentsOf: input[index..<end])
            try piece.withUnsafeBytes { bytes in
                Result { () throws(DecompressionError) in try feed(bytes, into: &output) }
            }.get()
            index = end
        }
    }

    /// `feed` returning only this piece's output.
    public func feed(_ input: some Collection<UInt8>) throws(DecompressionError) -> [UInt8] {
        var output: [UInt8] = []
        try feed(input, into: &output)
        return output
    }

    /// Call when the input has ended: throws `.truncated` unless the last stream ended (for
    /// `identity`, never), including when there was no input at all.
    public func finish() throws(DecompressionError) {
        if let failure { throw failure }
        if case .identity = decoder { return }
        guard streamEnded else {
            failure = .truncated
            throw .truncated
        }
    }

    // MARK: The loop

    private func run(_ input: UnsafeRawBufferPointer, into output: inout [UInt8]) throws(DecompressionError) {
        var offset = 0
        while true {
            if streamEnded {
                guard offset < input.count else { return }
                try startNextStream()
            }
            let rest = UnsafeRawBufferPointer(rebasing: input[offset...])
            let room = limit - outputCount
            let step: DecodeStep
            let offered: Int
            if room == 0 {
                // At the limit: one spare byte tells whether the stream has more to give. It is
                // thrown away; the stream is refused if it holds anything.
                offered = 1
                var spare: UInt8 = 0
                step = try withUnsafeMutableBytes(of: &spare) { (spareBytes) throws(DecompressionError) in
                    try decode(rest, into: spareBytes)
                }
                if step.produced > 0 { throw .tooLarge(limit: limit) }
            } else {
                offered = min(room, scratch.count)
                step = try decode(rest, appendingAtMost: offered, to: &output)
            }
            offset += step.consumed
            inputCount += step.consumed
            outputCount += step.produced
            if step.ended {
                streamEnded = true
                continue
            }
            if step.produced == offered { continue }  // the room was filled: more may be waiting
            if offset == input.count { return }       // everything taken: wait for more input
            if step.consumed == 0 {
                // Room and input left, yet the decoder took and gave nothing: never loop on it.
                throw .corrupt("the decoder made no progress")
            }
        }
    }

    /// Decodes into the scratch buffer (at most `count` bytes) and appends what came out to
    /// `output`. Decoding into scratch memory, not into zero-filled space at the end of `output`,
    /// keeps a small piece of input as cheap as its output.
    private func decode(_ input: UnsafeRawBufferPointer, appendingAtMost count: Int,
                        to output: inout [UInt8]) throws(DecompressionError) -> DecodeStep {
        let step = try decode(input, into: UnsafeMutableRawBufferPointer(rebasing: scratch[..<count]))
        if step.produced > 0 {
            reserve(step.produced, in: &output)
            output.append(contentsOf: UnsafeRawBufferPointer(rebasing: scratch[..<step.produced]))
        }
        return step
    }

    /// Makes room for `extra` more bytes, growing geometrically as Array would, but never asking
    /// for capacity past what the limit still allows: the output's allocation stays within
    /// `limit` bytes of what this decompressor writes.
    private func reserve(_ extra: Int, in output: inout [UInt8]) {
        let needed = output.count + extra
        guard needed > output.capacity else { return }
        let most = output.count + (limit - outputCount)
        output.reserveCapacity(min(max(needed, output.capacity * 2), most))
    }

    private func decode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws(DecompressionError) -> DecodeStep {
        switch decoder {
        case .identity:
            let count = min(input.count, output.count)
            if count > 0 { output.baseAddress!.copyMemory(from: input.baseAddress!, byteCount: count) }
            return DecodeStep(consumed: count, produced: count, ended: false)
        case .zlib(let stream):
            return try stream.step(input, output)
        case .zstd(let stream):
            return try stream.step(input, output)
        }
    }

    /// Input after the end of a stream: the next gzip member or zstd frame; deflate has no next.
    private func startNextStream() throws(DecompressionError) {
        switch (coding, decoder) {
        case (.gzip, .zlib(let stream)):
            try stream.reset()
        case (.zstd, .zstd(let stream)):
            try stream.reset()
        default:
            throw .trailingData
        }
        streamEnded = false
    }
}

@available(*, unavailable, message: "a Decompressor holds a decoder's state; use it from one thread at a time")
extension Decompressor: Sendable {}
