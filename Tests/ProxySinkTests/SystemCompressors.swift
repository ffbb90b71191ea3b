import Foundation

/// Compressed request bodies made at test time by the system's `gzip` and `zstd` and Python's
/// zlib module (the zlib format, which `deflate` means); nothing compressed is checked in.
enum SystemCompressors {
    /// A compressor command that exited non-zero.
    struct CommandFailed: Error {
        var command: String
        var status: Int32
    }

    /// `coding` is a content-coding name: gzip, zstd or deflate.
    static func compress(_ data: [UInt8], _ coding: String) throws -> [UInt8] {
        switch coding {
        case "gzip": return try run(["gzip", "-c", "-n"], input: data)
        case "zstd": return try run(["zstd", "-c", "-q"], input: data)
        case "deflate":
            return try run(["python3", "-c", "import sys, zlib; sys.stdout.buffer.write(zlib.compress(sys.stdin.buffer.read()))"],
                           input: data)
        default: preconditionFailure("no compressor for \(coding)")
        }
    }

    private static func run(_ arguments: [String], input: [UInt8]) throws -> [UInt8] {
        let inputFile = FileManager.default.temporaryDirectory.appendingPathComponent("sink-compress-\(UUID().uuidString)")
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
