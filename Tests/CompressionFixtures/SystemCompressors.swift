import Foundation

/// Compressed fixtures made at test time by the system's own compressors: `gzip`, `zstd`, and
/// Python's zlib module for the zlib format (which `deflate` means). Nothing is checked in, and
/// the decompressors (`ProxyCompression`, and the sink through it) are tested against independent
/// encoders. Shared by the test targets that need compressed data.
public enum SystemCompressors {
    /// A compressor command that exited non-zero.
    public struct CommandFailed: Error, CustomStringConvertible {
        public var command: String
        public var status: Int32
        public var description: String { "\(command) exited with \(status)" }
    }

    /// gzip with no name or timestamp in the header (`-n`).
    public static func gzip(_ data: [UInt8], level: Int = 6) throws -> [UInt8] {
        try run(["gzip", "-c", "-n", "-\(level)"], input: data)
    }

    public static func zstd(_ data: [UInt8], options: [String] = []) throws -> [UInt8] {
        try run(["zstd", "-c", "-q"] + options, input: data)
    }

    /// The zlib format (RFC 1950).
    public static func zlib(_ data: [UInt8]) throws -> [UInt8] {
        try run(["python3", "-c", "import sys, zlib; sys.stdout.buffer.write(zlib.compress(sys.stdin.buffer.read()))"],
                input: data)
    }

    /// `coding` is a content-coding name (gzip, zstd or deflate); anything else leaves `data` as it is.
    public static func compress(_ data: [UInt8], _ coding: String) throws -> [UInt8] {
        switch coding {
        case "gzip": return try gzip(data)
        case "zstd": return try zstd(data)
        case "deflate": return try zlib(data)
        default: return data
        }
    }

    /// The standard output of a shell pipeline, for inputs too large to hold (e.g. `head -c 300M /dev/zero | gzip`).
    public static func shell(_ script: String) throws -> [UInt8] {
        try run(["bash", "-c", "set -o pipefail; " + script], input: [])
    }

    private static func run(_ arguments: [String], input: [UInt8]) throws -> [UInt8] {
        let inputFile = FileManager.default.temporaryDirectory.appendingPathComponent("compress-in-\(UUID().uuidString)")
        try Data(input).write(to: inputFile)
        defer { try? FileManager.default.removeItem(at: inputFile) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.standardInput = try FileHandle(forReadingFrom: inputFile)
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CommandFailed(command: arguments.joined(separator: " "), status: process.terminationStatus)
        }
        return [UInt8](data)
    }
}

/// Test data that compresses somewhat, like telemetry: repeated words with varying numbers.
public func sampleData(count: Int, seed: UInt64 = 1) -> [UInt8] {
    var state = seed
    var out: [UInt8] = []
    out.reserveCapacity(count)
    let words = ["span", "trace", "service.name", "checkout", "http.method", "GET", "POST", "status", "200", "503"]
    while out.count < count {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        out += Array(words[Int(state >> 60) % words.count].utf8)
        out += Array(String(state >> 40, radix: 16).utf8)
        out.append(UInt8(ascii: " "))
    }
    return Array(out.prefix(count))
}
