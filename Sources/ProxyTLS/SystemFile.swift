#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads whole files (configuration-adjacent files: htpasswd, JWKS, HMAC secrets) with `open`,
/// `fstat` and `read`, for the modules above this one, which do not use Foundation. The descriptor
/// is owned by `read(_:maxBytes:)` and closed before it returns.
public enum SystemFile {
    /// A file that could not be read: names the file and says why (strerror), never its contents.
    public struct ReadError: Error, Equatable, CustomStringConvertible {
        public var path: String
        /// The system's reason, e.g. "No such file or directory".
        public var reason: String

        public var description: String { "cannot read \(path): \(reason)" }
    }

    /// The file's bytes. Refuses directories and files larger than `maxBytes` (default 64 MiB).
    public static func read(_ path: String, maxBytes: Int = 64 << 20) throws(ReadError) -> [UInt8] {
        func failure(_ code: Int32) -> ReadError {
            ReadError(path: path, reason: String(cString: strerror(code)))
        }
        var fd: Int32
        repeat { fd = open(path, O_RDONLY | O_CLOEXEC) } while fd < 0 && errno == EINTR
        guard fd >= 0 else { throw failure(errno) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw failure(errno) }
        if (info.st_mode & S_IFMT) == S_IFDIR { throw failure(EISDIR) }
        if Int(info.st_size) > maxBytes { throw ReadError(path: path, reason: "larger than \(maxBytes) bytes") }

        var bytes: [UInt8] = []
        // st_size is a hint (0 for /proc files and pipes): read until end of file either way.
        var chunk = [UInt8](repeating: 0, count: max(4096, min(Int(info.st_size) + 1, maxBytes + 1)))
        while true {
            let count = chunk.withUnsafeMutableBytes { buffer in Glibc.read(fd, buffer.baseAddress, buffer.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw failure(errno)
            }
            if count == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<count])
            if bytes.count > maxBytes { throw ReadError(path: path, reason: "larger than \(maxBytes) bytes") }
        }
    }
}
