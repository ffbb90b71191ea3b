import NIOConcurrencyHelpers
import NIOPosix
import ProxySystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Writes log lines to a file descriptor (stderr) from a thread of its own, in batches, so logging
/// never blocks an event loop and costs it no system call.
///
/// A line is formatted straight into the pending buffer under a lock (`append`); the writer thread
/// takes the whole buffer and writes it with as few `write` calls as it can, then waits a few
/// milliseconds so the next batch can grow. An idle writer sleeps on a condition and is woken by the
/// first line that arrives.
///
/// When the output is slower than the lines (stderr piped into a slow reader), the pending buffer
/// grows to `maxPendingBytes` (4 MiB) and further lines are dropped, never waited for: the event
/// loops keep serving. Once the writer catches up it writes one warning line saying how many lines
/// were dropped. Lines from different threads never interleave, and their order is kept.
///
/// One per descriptor for the life of the process (`standardError`); `flush` waits until what was
/// appended is written (before the process exits).
public final class LogWriter: @unchecked Sendable {
    /// The writer for standard error, started on first use.
    public static let standardError = LogWriter(descriptor: 2)

    public static let maxPendingBytes = 4 << 20
    /// How long the writer lets a batch grow after writing one.
    static let batchDelayNanoseconds = 5_000_000

    // Everything below is guarded by `condition`, whose value the writer thread waits on: it sets 1
    // and waits for 0, which the first appender after that sets.
    private let condition = ConditionLock(value: 0)
    /// The writer thread waits for lines: the next appender must wake it.
    private var writerWaits = false
    private var pending: [UInt8] = []
    private var dropped = 0
    /// The writer holds a batch it has not finished writing.
    private var writing = false
    private var started = false

    private let descriptor: Int32
    private let thread = NIOThreadPool(numberOfThreads: 1)

    init(descriptor: Int32) {
        self.descriptor = descriptor
        pending.reserveCapacity(64 * 1024)
    }

    /// Appends one line (`encode` writes it, with its newline) to the pending batch, or drops it when
    /// the batch is full. Never blocks on the output.
    func append(_ encode: (inout [UInt8]) -> Void) {
        condition.lock()
        if !started { start() }
        guard pending.count < Self.maxPendingBytes else {
            dropped += 1
            condition.unlock()
            return
        }
        encode(&pending)
        if writerWaits {
            writerWaits = false
            condition.unlock(withValue: 0)  // wakes the writer
        } else {
            condition.unlock()
        }
    }

    /// Appends `line` and a newline.
    public func appendLine(_ line: String) {
        append { out in
            out.append(contentsOf: line.utf8)
            out.append(UInt8(ascii: "\n"))
        }
    }

    /// Waits (at most `timeout`) until every line appended before the call is written.
    public func flush(timeout: Duration = .seconds(2)) {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            condition.lock()
            let done = pending.isEmpty && !writing
            condition.unlock()
            if done { return }
            var pause = timespec(tv_sec: 0, tv_nsec: 1_000_000)
            nanosleep(&pause, nil)
        }
    }

    /// Called with the lock held.
    private func start() {
        started = true
        thread.start()
        thread.submit { [self] _ in run() }
    }

    private func run() {
        var batch: [UInt8] = []
        batch.reserveCapacity(64 * 1024)
        while true {
            condition.lock()
            while pending.isEmpty {
                writerWaits = true
                condition.unlock(withValue: 1)
                condition.lock(whenValue: 0)
            }
            swap(&pending, &batch)
            let droppedNow = dropped
            dropped = 0
            writing = true
            condition.unlock()

            writeAll(batch)
            batch.removeAll(keepingCapacity: true)
            if droppedNow > 0 {
                writeAll(Array(
                    ("{\"time\":\"\(WallTime.now().rfc3339Milliseconds)\",\"level\":\"warning\",\"logger\":\"otlp-auth-proxy\","
                        + "\"msg\":\"log lines dropped: the output could not keep up\",\"dropped\":\(droppedNow)}\n").utf8))
            }
            condition.lock()
            writing = false
            condition.unlock()
            var pause = timespec(tv_sec: 0, tv_nsec: Self.batchDelayNanoseconds)
            nanosleep(&pause, nil)
        }
    }

    private func writeAll(_ bytes: [UInt8]) {
        Self.writeAll(bytes, to: descriptor)
    }

    /// Writes all of `bytes` to `descriptor`, retrying after interruptions; gives up on an error (a
    /// closed stderr must not stop the proxy).
    static func writeAll(_ bytes: [UInt8], to descriptor: Int32) {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if written <= 0 {
                    if written < 0 && errno == EINTR { continue }
                    return
                }
                offset += written
            }
        }
    }
}
