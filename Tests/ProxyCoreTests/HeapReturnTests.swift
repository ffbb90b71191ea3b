import NIOCore
import NIOEmbedded
import NIOPosix
import XCTest

@testable import ProxyCore

final class HeapReturnTests: XCTestCase {
    /// The heap is trimmed once enough connections closed since the busiest moment of the previous
    /// period, not while connections only open, and not twice for the same closures.
    /// Synchronous on purpose: an `EmbeddedChannel` may only be used (and freed) on the thread that
    /// made it, and an async test can resume on another thread after an `await`.
    func testTrimsOnceAfterEnoughConnectionsClosed() throws {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        let registry = ConnectionRegistry()
        let heap = HeapReturn(connections: registry, threadPool: pool, closedThreshold: 64)
        var channels: [EmbeddedChannel] = []
        for _ in 0..<100 {
            let channel = EmbeddedChannel()
            XCTAssertTrue(registry.register(channel))
            channels.append(channel)
        }
        heap.check()
        XCTAssertEqual(heap.trims, 0, "connections only opened")

        for channel in channels.prefix(63) { _ = try? channel.finish() }
        heap.check()
        XCTAssertEqual(heap.trims, 0, "63 closed, fewer than the threshold")

        // A burst that opens and closes between two checks still counts: the registry remembers the peak.
        var burst: [EmbeddedChannel] = []
        for _ in 0..<64 {
            let channel = EmbeddedChannel()
            XCTAssertTrue(registry.register(channel))
            burst.append(channel)
        }
        for channel in burst { _ = try? channel.finish() }
        heap.check()
        XCTAssertEqual(heap.trims, 1)
        heap.check()
        XCTAssertEqual(heap.trims, 1, "the same closures do not trim twice")

        for channel in channels.suffix(37) { _ = try? channel.finish() }
        try pool.syncShutdownGracefully()
    }
}
