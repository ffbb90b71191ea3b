import ProxyCompression
import CompressionFixtures
import XCTest

/// The bounded decompressors against data made by the system's gzip, zstd and Python's zlib:
/// round trips whole and byte by byte, multi-member and multi-frame streams, corrupt and
/// truncated input, the output limit at and past its boundary, and decompression bombs.
final class DecompressorTests: XCTestCase {
    private let codings: [(ContentCoding, String)] = [(.gzip, "gzip"), (.zstd, "zstd"), (.deflate, "deflate")]

    private func expectError(_ expected: DecompressionError, file: StaticString = #filePath, line: UInt = #line,
                             _ body: () throws -> Void) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            XCTAssertEqual(error as? DecompressionError, expected, file: file, line: line)
        }
    }

    private func expectCorrupt(file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            guard case .corrupt(let reason)? = error as? DecompressionError else {
                return XCTFail("expected .corrupt, got \(error)", file: file, line: line)
            }
            XCTAssertFalse(reason.isEmpty, file: file, line: line)
        }
    }

    // MARK: Round trips

    func testRoundTrip_WholeBody_EveryCoding() throws {
        let data = sampleData(count: 300_000)
        for (coding, name) in codings {
            let compressed = try SystemCompressors.compress(data, name)
            XCTAssertLessThan(compressed.count, data.count, name)
            XCTAssertEqual(try Decompressor.decompress(compressed, coding: coding, limit: data.count), data, name)
        }
    }

    func testRoundTrip_FedOneByteAtATime_SameOutput() throws {
        let data = sampleData(count: 20_000, seed: 7)
        for (coding, name) in codings {
            let compressed = try SystemCompressors.compress(data, name)
            let decompressor = try Decompressor(coding: coding, limit: data.count)
            var output: [UInt8] = []
            for byte in compressed {
                try decompressor.feed([byte], into: &output)
            }
            try decompressor.finish()
            XCTAssertEqual(output, data, name)
            XCTAssertEqual(decompressor.inputCount, compressed.count, name)
            XCTAssertEqual(decompressor.outputCount, data.count, name)
        }
    }

    func testRoundTrip_UnevenPiecesAndEmptyPieces_ReturnedPerPiece() throws {
        let data = sampleData(count: 100_000, seed: 3)
        let compressed = try SystemCompressors.zstd(data)
        let decompressor = try Decompressor(coding: .zstd, limit: data.count)
        var joined: [UInt8] = []
        var start = 0
        var size = 1
        while start < compressed.count {
            let end = min(start + size, compressed.count)
            joined += try decompressor.feed(compressed[start..<end])
            joined += try decompressor.feed([UInt8]())
            start = end
            size = size * 3 + 1
        }
        try decompressor.finish()
        XCTAssertEqual(joined, data)
    }

    func testRoundTrip_NonContiguousInput_CopiedThroughBuffer() throws {
        let data = sampleData(count: 200_000, seed: 5)
        let compressed = try SystemCompressors.gzip(data)
        // A lazily mapped collection has no contiguous storage.
        let lazy = compressed.lazy.map { $0 }
        XCTAssertEqual(try Decompressor.decompress(lazy, coding: .gzip, limit: data.count), data)
    }

    func testEmptyContent_EveryCoding_DecompressesToNothing() throws {
        for (coding, name) in codings {
            let compressed = try SystemCompressors.compress([], name)
            XCTAssertEqual(try Decompressor.decompress(compressed, coding: coding, limit: 0), [], name)
        }
    }

    func testIdentity_CopiesUnderTheSameLimit() throws {
        XCTAssertEqual(try Decompressor.decompress([1, 2, 3], coding: .identity, limit: 3), [1, 2, 3])
        XCTAssertEqual(try Decompressor.decompress([UInt8](), coding: .identity, limit: 0), [])
        expectError(.tooLarge(limit: 3)) { _ = try Decompressor.decompress([1, 2, 3, 4], coding: .identity, limit: 3) }
    }

    func testAppendInto_KeepsWhatTheOutputHeld() throws {
        let compressed = try SystemCompressors.gzip(Array("world".utf8))
        var output = Array("hello ".utf8)
        try Decompressor(coding: .gzip, limit: 5).feed(compressed, into: &output)
        XCTAssertEqual(String(decoding: output, as: UTF8.self), "hello world")
    }

    // MARK: Several streams

    func testGzip_ConcatenatedMembers_ReadAsOneStream() throws {
        let first = sampleData(count: 5000, seed: 11), second = sampleData(count: 7000, seed: 12)
        let compressed = try SystemCompressors.gzip(first) + SystemCompressors.gzip(second)
        XCTAssertEqual(try Decompressor.decompress(compressed, coding: .gzip, limit: 12000), first + second)
        // Split inside the second member's header, too.
        let decompressor = try Decompressor(coding: .gzip, limit: 12000)
        let boundary = try SystemCompressors.gzip(first).count
        var output = try decompressor.feed(compressed[..<(boundary + 4)])
        XCTAssertEqual(output, first)
        output += try decompressor.feed(compressed[(boundary + 4)...])
        try decompressor.finish()
        XCTAssertEqual(output, first + second)
    }

    func testGzip_GarbageAfterMember_Corrupt() throws {
        let compressed = try SystemCompressors.gzip(Array("payload".utf8)) + Array("trailing garbage".utf8)
        expectCorrupt { _ = try Decompressor.decompress(compressed, coding: .gzip, limit: 100) }
    }

    func testZstd_ConcatenatedFrames_ReadAsOneStream() throws {
        let first = sampleData(count: 5000, seed: 21), second = sampleData(count: 3000, seed: 22)
        let compressed = try SystemCompressors.zstd(first) + SystemCompressors.zstd(second)
        XCTAssertEqual(try Decompressor.decompress(compressed, coding: .zstd, limit: 8000), first + second)
    }

    func testDeflate_BytesAfterStream_TrailingData() throws {
        let compressed = try SystemCompressors.zlib(Array("payload".utf8))
        expectError(.trailingData) { _ = try Decompressor.decompress(compressed + [0], coding: .deflate, limit: 100) }
        expectError(.trailingData) { _ = try Decompressor.decompress(compressed + compressed, coding: .deflate, limit: 100) }
    }

    // MARK: Refusals

    func testCorrupt_FlippedCheckBytes_EveryCoding() throws {
        let data = sampleData(count: 50_000, seed: 31)
        // gzip ends with CRC-32 and length, zlib with Adler-32: damage the check.
        var gzip = try SystemCompressors.gzip(data)
        gzip[gzip.count - 6] ^= 0xff
        expectCorrupt { _ = try Decompressor.decompress(gzip, coding: .gzip, limit: data.count) }
        var zlib = try SystemCompressors.zlib(data)
        zlib[zlib.count - 1] ^= 0xff
        expectCorrupt { _ = try Decompressor.decompress(zlib, coding: .deflate, limit: data.count) }
        // zstd with a content checksum (-C, the CLI's default) catches a damaged checksum.
        var zstd = try SystemCompressors.zstd(data, options: ["-C"])
        zstd[zstd.count - 1] ^= 0xff
        expectCorrupt { _ = try Decompressor.decompress(zstd, coding: .zstd, limit: data.count) }
    }

    func testCorrupt_WrongFormatForTheLabel() throws {
        let text = Array("plain text, not compressed at all".utf8)
        for (coding, _) in codings {
            expectCorrupt { _ = try Decompressor.decompress(text, coding: coding, limit: 1000) }
        }
        // gzip means gzip: a zlib stream (or a zstd frame) under that label is refused, and the other way round.
        let zlib = try SystemCompressors.zlib(text)
        expectCorrupt { _ = try Decompressor.decompress(zlib, coding: .gzip, limit: 1000) }
        let gzip = try SystemCompressors.gzip(text)
        expectCorrupt { _ = try Decompressor.decompress(gzip, coding: .deflate, limit: 1000) }
        expectCorrupt { _ = try Decompressor.decompress(gzip, coding: .zstd, limit: 1000) }
    }

    func testCorrupt_DamagedBody_ErrorIsSticky() throws {
        var gzip = try SystemCompressors.gzip(sampleData(count: 50_000, seed: 41))
        for index in 20..<60 { gzip[index] = 0xff }
        let decompressor = try Decompressor(coding: .gzip, limit: 100_000)
        var first: DecompressionError?
        XCTAssertThrowsError(try decompressor.feed(gzip)) { first = $0 as? DecompressionError }
        XCTAssertNotNil(first)
        XCTAssertThrowsError(try decompressor.feed([UInt8]())) { XCTAssertEqual($0 as? DecompressionError, first) }
        XCTAssertThrowsError(try decompressor.finish()) { XCTAssertEqual($0 as? DecompressionError, first) }
    }

    func testTruncated_EveryCoding_CutAnywhereOrEmpty() throws {
        let data = sampleData(count: 30_000, seed: 51)
        for (coding, name) in codings {
            let compressed = try SystemCompressors.compress(data, name)
            for cut in [1, 5, compressed.count / 2, compressed.count - 1] {
                let decompressor = try Decompressor(coding: coding, limit: data.count)
                _ = try decompressor.feed(compressed[..<cut])
                XCTAssertThrowsError(try decompressor.finish(), "\(name) cut at \(cut)") {
                    XCTAssertEqual($0 as? DecompressionError, .truncated)
                }
            }
            expectError(.truncated) { _ = try Decompressor.decompress([UInt8](), coding: coding, limit: 10) }
        }
    }

    func testZstd_FrameAskingForWindowOver8MiB_Refused() throws {
        // --long=27 on a pipe (size unknown, so the window is not shrunk to the content): a
        // 128 MiB window in the frame header for 1000 bytes of data.
        let compressed = try SystemCompressors.shell("head -c 1000 /dev/urandom | zstd -q -c --long=27")
        XCTAssertThrowsError(try Decompressor.decompress(compressed, coding: .zstd, limit: 10_000)) { error in
            guard case .corrupt(let reason)? = error as? DecompressionError else { return XCTFail("\(error)") }
            XCTAssertTrue(reason.contains("window larger than 8 MiB"), reason)
        }
        // The same data with the default window decodes.
        let normal = try SystemCompressors.shell("head -c 1000 /dev/zero | zstd -q -c")
        XCTAssertEqual(try Decompressor.decompress(normal, coding: .zstd, limit: 1000), [UInt8](repeating: 0, count: 1000))
    }

    // MARK: The limit

    func testLimit_ExactlyTheContentSize_Accepted_OneLess_TooLarge() throws {
        let data = sampleData(count: 70_000, seed: 61)  // over one 64 KiB output chunk
        for (coding, name) in codings {
            let compressed = try SystemCompressors.compress(data, name)
            XCTAssertEqual(try Decompressor.decompress(compressed, coding: coding, limit: data.count), data, name)
            let decompressor = try Decompressor(coding: coding, limit: data.count - 1)
            var output: [UInt8] = []
            XCTAssertThrowsError(try decompressor.feed(compressed, into: &output), name) {
                XCTAssertEqual($0 as? DecompressionError, .tooLarge(limit: data.count - 1))
            }
            XCTAssertEqual(output, Array(data.prefix(data.count - 1)), "\(name): output stops exactly at the limit")
        }
    }

    func testLimit_ReachedAcrossPieces_TooLargeOnThePieceThatGoesOver() throws {
        let data = sampleData(count: 10_000, seed: 71)
        let compressed = try SystemCompressors.gzip(data)
        let decompressor = try Decompressor(coding: .gzip, limit: 4096)
        var output: [UInt8] = []
        var threw = false
        for byte in compressed {
            do {
                try decompressor.feed([byte], into: &output)
            } catch {
                XCTAssertEqual(error, .tooLarge(limit: 4096))
                threw = true
                break
            }
        }
        XCTAssertTrue(threw)
        XCTAssertEqual(output, Array(data.prefix(4096)))
    }

    func testLimitZero_EmptyContentAccepted_AnyContentTooLarge() throws {
        for (coding, name) in codings {
            XCTAssertEqual(try Decompressor.decompress(try SystemCompressors.compress([], name), coding: coding, limit: 0), [])
            expectError(.tooLarge(limit: 0)) {
                _ = try Decompressor.decompress(try SystemCompressors.compress([42], name), coding: coding, limit: 0)
            }
        }
    }

    /// 300 MiB of zeros, compressed at test time (about 300 KiB of gzip, a few KiB of zstd): the
    /// decompressor stops once about 1 MiB is out, having read only the start of the input, and the
    /// output's allocation stays near the limit (no doubling past it).
    func testBomb_300MiBOfZeros_StopsAtTheLimitAfterReadingLittle() throws {
        let limit = (1 << 20) + 100_000  // not a power of two, so plain doubling would overshoot it
        let bombs: [(ContentCoding, String)] = [
            (.gzip, "head -c 300M /dev/zero | gzip -c -n"),
            (.zstd, "head -c 300M /dev/zero | zstd -q -c"),
            (.deflate, "head -c 300M /dev/zero | python3 -c 'import sys, zlib; c = zlib.compressobj()\n"
                + "for b in iter(lambda: sys.stdin.buffer.read(1 << 20), b\"\"): sys.stdout.buffer.write(c.compress(b))\n"
                + "sys.stdout.buffer.write(c.flush())'"),
        ]
        for (coding, script) in bombs {
            let compressed = try SystemCompressors.shell(script)
            XCTAssertLessThan(compressed.count, 400 * 1024, "\(coding) bomb is small")
            let decompressor = try Decompressor(coding: coding, limit: limit)
            var output: [UInt8] = []
            XCTAssertThrowsError(try decompressor.feed(compressed, into: &output)) {
                XCTAssertEqual($0 as? DecompressionError, .tooLarge(limit: limit))
            }
            XCTAssertEqual(output.count, limit)
            XCTAssertTrue(output.allSatisfy { $0 == 0 })
            XCTAssertLessThanOrEqual(output.capacity, limit + limit / 16, "\(coding): allocation bounded by the limit")
            // 1 MiB of zeros is about 1 KiB of gzip: the rest of the input was never decoded.
            XCTAssertLessThan(decompressor.inputCount, max(compressed.count / 20, 4096), "\(coding) stopped early")
        }
    }

    func testBomb_ManyGzipMembers_StopsAtTheLimit() throws {
        // One member of 1 MiB of zeros repeated 400 times: 400 MiB of output from about 400 KiB.
        let member = try SystemCompressors.shell("head -c 1M /dev/zero | gzip -9 -c -n")
        let bomb = Array([[UInt8]](repeating: member, count: 400).joined())
        let decompressor = try Decompressor(coding: .gzip, limit: 3 << 20)
        var output: [UInt8] = []
        expectError(.tooLarge(limit: 3 << 20)) { try decompressor.feed(bomb, into: &output) }
        XCTAssertEqual(output.count, 3 << 20)
        XCTAssertLessThanOrEqual(decompressor.inputCount, member.count * 4)
    }
}

/// Parsing coding names from `Content-Encoding` and `grpc-encoding` values.
final class ContentCodingTests: XCTestCase {
    func testToken_CaseInsensitiveTrimmed_XGzipIsGzip() {
        XCTAssertEqual(ContentCoding(token: "gzip"), .gzip)
        XCTAssertEqual(ContentCoding(token: " GZip\t"), .gzip)
        XCTAssertEqual(ContentCoding(token: "x-gzip"), .gzip)
        XCTAssertEqual(ContentCoding(token: "ZSTD"), .zstd)
        XCTAssertEqual(ContentCoding(token: "Deflate"), .deflate)
        XCTAssertEqual(ContentCoding(token: "identity"), .identity)
        for unknown in ["", "br", "snappy", "compress", "gzip, zstd", "gzip;q=1", "gzİp"] {
            XCTAssertNil(ContentCoding(token: unknown), unknown)
        }
        XCTAssertEqual(ContentCoding.allCases.map(\.name), ["identity", "gzip", "deflate", "zstd"])
    }

    func testContentEncoding_AbsentEmptyOrIdentity_IsIdentity() throws {
        XCTAssertEqual(try ContentCoding(contentEncoding: [String]()), .identity)
        XCTAssertEqual(try ContentCoding(contentEncoding: [""]), .identity)
        XCTAssertEqual(try ContentCoding(contentEncoding: ["identity", " , Identity"]), .identity)
        XCTAssertEqual(try ContentCoding(contentEncoding: ["identity, gzip"]), .gzip)
        XCTAssertEqual(try ContentCoding(contentEncoding: ["ZSTD"]), .zstd)
    }

    func testContentEncoding_StackedOrUnknown_UnsupportedNamingIt() {
        XCTAssertThrowsError(try ContentCoding(contentEncoding: ["br"])) {
            XCTAssertEqual($0 as? DecompressionError, .unsupportedCoding("br"))
        }
        XCTAssertThrowsError(try ContentCoding(contentEncoding: ["gzip, zstd"])) {
            XCTAssertEqual($0 as? DecompressionError, .unsupportedCoding("gzip, zstd"))
        }
        XCTAssertThrowsError(try ContentCoding(contentEncoding: ["gzip", "gzip"])) {
            XCTAssertEqual($0 as? DecompressionError, .unsupportedCoding("gzip, gzip"))
        }
        XCTAssertThrowsError(try ContentCoding(contentEncoding: [String(repeating: "a", count: 500)])) {
            guard case .unsupportedCoding(let name)? = $0 as? DecompressionError else { return XCTFail("\($0)") }
            XCTAssertEqual(name.count, 64)
        }
    }
}
