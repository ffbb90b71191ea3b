#if canImport(Glibc)
import CMalloc
#endif
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Gives the memory of closed connections back to the system.
///
/// glibc's allocator keeps the pages of freed blocks inside its arenas: after a burst of connections
/// closes, the proxy's RSS stays at the burst's peak (1,000 idle HTTP/2 connections leave about 40 MiB
/// behind). Every `interval`, if the connections open now are at least `closedThreshold` fewer than
/// the most open at once since the previous check, `malloc_trim(0)` runs on the thread pool (never on
/// an event loop) and hands the free pages back.
final class HeapReturn: Sendable {
    private struct State {
        var task: RepeatedTask?
        var trims = 0
    }

    private let state = NIOLockedValueBox(State())
    private let connections: ConnectionRegistry
    private let threadPool: NIOThreadPool
    private let closedThreshold: Int

    init(connections: ConnectionRegistry, threadPool: NIOThreadPool, closedThreshold: Int = 64) {
        self.connections = connections
        self.threadPool = threadPool
        self.closedThreshold = closedThreshold
    }

    /// How many times the heap was trimmed (for tests).
    var trims: Int { state.withLockedValue { $0.trims } }

    func start(on eventLoop: any EventLoop, interval: TimeAmount = .seconds(5)) {
        let task = eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { [self] _ in
            check()
        }
        state.withLockedValue { $0.task = task }
    }

    func stop() {
        state.withLockedValue { state in
            state.task?.cancel()
            state.task = nil
        }
    }

    /// Trims when enough connections closed since the previous check.
    func check() {
        let (open, peak) = connections.peakSinceLastCall()
        guard peak - open >= closedThreshold else { return }
        state.withLockedValue { $0.trims += 1 }
        threadPool.submit { _ in
            #if canImport(Glibc)
            _ = malloc_trim(0)
            #endif
        }
    }
}
