import Foundation
import XCTest

/// Runs the `openssl` CLI (`s_client`, `s_server`) as a child process and collects its combined
/// output from a reader thread, so a test can wait for a line while the process keeps running.
final class OpenSSLProcess: @unchecked Sendable {
    let process = Process()
    private let stdinPipe = Pipe()
    private let lock = NSLock()
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    init(_ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        let stdout = Pipe()
        process.standardInput = stdinPipe
        process.standardOutput = stdout
        process.standardError = stdout
        try process.run()
        let reader = Thread { [self] in
            while true {
                let chunk = stdout.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                lock.withLock { data.append(chunk) }
            }
            done.signal()
        }
        reader.start()
    }

    var output: String { lock.withLock { String(decoding: data, as: UTF8.self) } }

    /// Polls the output for up to `timeout` seconds; true once `text` appears.
    func waitForOutput(containing text: String, timeout: TimeInterval = 10) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if output.contains(text) { return true }
            if !process.isRunning { return output.contains(text) }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return output.contains(text)
    }

    func send(_ line: String) {
        try? stdinPipe.fileHandleForWriting.write(contentsOf: Data((line + "\n").utf8))
    }

    func closeInput() {
        try? stdinPipe.fileHandleForWriting.close()
    }

    /// Waits up to `timeout` seconds for the process to exit (terminating it after that) and for
    /// the reader to see end of output; returns the exit status.
    @discardableResult
    func finish(timeout: TimeInterval = 10) -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.01)
        }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        _ = done.wait(timeout: .now() + 10)
        return process.terminationStatus
    }

    /// Stops a long-running process (s_server) that the test started.
    func stop() {
        if process.isRunning { process.terminate() }
        finish()
    }
}

/// One `openssl s_client` run: connect, send `message` once the handshake is through, wait for
/// its echo (or for s_client to exit, e.g. on an alert), then close stdin so s_client sends
/// close_notify and exits.
struct SClientResult {
    var output: String
    var status: Int32

    /// The number from s_client's "SSL alert number N" line for an alert it received, if any.
    var receivedAlert: Int? {
        guard let range = output.range(of: "SSL alert number ") else { return nil }
        return Int(output[range.upperBound...].prefix(while: \.isNumber))
    }

    static func run(port: Int, caFile: String, arguments: [String], message: String) throws -> SClientResult {
        let client = try OpenSSLProcess(
            [
                "s_client", "-connect", "127.0.0.1:\(port)", "-servername", "localhost",
                "-CAfile", caFile, "-verify_return_error",
            ] + arguments)
        // In TLS 1.3 the client finishes its side before the server has checked the client
        // certificate; the server's verdict (an alert) arrives when s_client next reads.
        client.send(message)
        _ = client.waitForOutput(containing: message)
        client.closeInput()
        let status = client.finish()
        return SClientResult(output: client.output, status: status)
    }
}
