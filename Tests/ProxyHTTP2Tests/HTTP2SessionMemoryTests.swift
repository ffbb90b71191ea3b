@testable import ProxyHTTP2
import XCTest

/// The allocator nghttp2 sessions use: large blocks in pages of their own, the rest from the heap.
final class HTTP2SessionMemoryTests: XCTestCase {
    func testLargeBlocksAreMappedAndFreedSmallOnesAreNot() throws {
        let memory = HTTP2SessionMemory()
        let small = try XCTUnwrap(memory.allocate(100, zeroed: false))
        XCTAssertEqual(memory.mappedCount, 0)
        let large = try XCTUnwrap(memory.allocate(16_394, zeroed: false))
        XCTAssertEqual(memory.mappedCount, 1)
        large.storeBytes(of: 0xAB, toByteOffset: 16_393, as: UInt8.self)
        memory.release(large)
        memory.release(small)
        XCTAssertEqual(memory.mappedCount, 0)
    }

    func testCallocIsZeroedOnBothPaths() throws {
        let memory = HTTP2SessionMemory()
        for size in [64, 40_000] {
            let block = try XCTUnwrap(memory.allocate(size, zeroed: true))
            XCTAssertTrue(UnsafeRawBufferPointer(start: block, count: size).allSatisfy { $0 == 0 }, "size \(size)")
            memory.release(block)
        }
    }

    func testReallocKeepsTheContentsAcrossTheThreshold() throws {
        let memory = HTTP2SessionMemory()
        var block = try XCTUnwrap(memory.reallocate(nil, 1000))
        for i in 0..<1000 { block.storeBytes(of: UInt8(i % 251), toByteOffset: i, as: UInt8.self) }
        // Heap to pages, pages to larger pages, pages back to the heap.
        for size in [20_000, 70_000, 500] {
            block = try XCTUnwrap(memory.reallocate(block, size))
            for i in 0..<min(size, 1000) { XCTAssertEqual(block.load(fromByteOffset: i, as: UInt8.self), UInt8(i % 251)) }
        }
        XCTAssertEqual(memory.mappedCount, 0)
        memory.release(block)
    }

    func testASessionsFrameBufferIsMapped() throws {
        let session = try HTTP2Session(role: .server)
        XCTAssertEqual(session.mappedBlocks, 1)
    }
}
