import Foundation
import NIOConcurrencyHelpers
import XCTest

@testable import ProxyCore

/// The batched log writer over a real pipe: lines from many threads arrive whole and in order, and a
/// reader that stops reading never blocks the appenders (lines past the limit are dropped and said so).
final class LogWriterTests: XCTestCase {
    private func makePipe() -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        return (fds[0], fds[1])
    }

    /// Reads from `descriptor` until `done` says the text is complete or `timeout` passes.
    private func readUntil(_ descriptor: Int32, timeout: TimeInterval = 20, done: (String) -> Bool) -> String {
        var data = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        let deadline = Date().addingTimeInterval(timeout)
        var text = ""
        while Date() < deadline {
            var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 100) > 0 else {
                if done(text) { break }
                continue
            }
            let count = read(descriptor, &chunk, chunk.count)
            guard count > 0 else { break }
            data += chunk[0..<count]
            text = String(decoding: data, as: UTF8.self)
            if done(text) { break }
        }
        return text
    }

    func testLinesFromManyThreads_ArriveWholeAndInOrderPerThread() {
        let (readEnd, writeEnd) = makePipe()
        defer { close(readEnd); close(writeEnd) }
        let writer = LogWriter(descriptor: writeEnd)
        let threads = 4
        let perThread = 2000
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            for index in 0..<perThread { writer.appendLine("thread=\(thread) line=\(index) padding=\(String(repeating: "x", count: 40))") }
        }
        let text = readUntil(readEnd) { $0.split(separator: "\n").count >= threads * perThread }
        let lines = text.split(separator: "\n")
        XCTAssertEqual(lines.count, threads * perThread)
        var next = [Int](repeating: 0, count: threads)
        for line in lines {
            let parts = line.split(separator: " ")
            XCTAssertEqual(parts.count, 3, "a line was torn: \(line)")
            guard parts.count == 3, let thread = Int(parts[0].dropFirst(7)), let index = Int(parts[1].dropFirst(5)) else { continue }
            XCTAssertEqual(index, next[thread], "thread \(thread) out of order")
            next[thread] = index + 1
        }
    }

    func testReaderStopsReading_AppendersNeverBlock_OverflowDroppedAndReported() {
        let (readEnd, writeEnd) = makePipe()
        defer { close(readEnd); close(writeEnd) }
        let writer = LogWriter(descriptor: writeEnd)
        let line = String(repeating: "y", count: 1023)
        let total = (LogWriter.maxPendingBytes / 1024) * 3
        let appended = NIOLockedValueBox(0)
        let finished = expectation(description: "appending finished without the pipe being read")
        DispatchQueue.global().async {
            for _ in 0..<total {
                writer.appendLine(line)
                appended.withLockedValue { $0 += 1 }
            }
            finished.fulfill()
        }
        wait(for: [finished], timeout: 30)
        XCTAssertEqual(appended.withLockedValue { $0 }, total)
        let text = readUntil(readEnd) { $0.contains("log lines dropped") }
        XCTAssertTrue(text.contains("log lines dropped: the output could not keep up"))
        let kept = text.split(separator: "\n").filter { $0 == line[...] }.count
        XCTAssertLessThan(kept, total, "more lines than the pending limit holds were kept")
        XCTAssertGreaterThan(kept, LogWriter.maxPendingBytes / 1024 / 2, "the pending batch was not written")
    }
}
