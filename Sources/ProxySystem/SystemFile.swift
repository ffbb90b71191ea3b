#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads whole files (the configuration, tokens, htpasswd, JWKS, HMAC secrets) with `open`, `fstat`
/// and `read`, for the modules above this one, which do not use Foundation. The descriptor is owned
/// by `read(_:maxBytes:)` and closed before it returns.
public enum SystemFile {
    /// A file that could not be read: names the file and says why, never its contents.
    public struct ReadError: Error, Equatable, CustomStringConvertible {
        public enum Kind: Equatable, Sendable {
            case notFound
            case isDirectory
            case permissionDenied
            /// Longer than the caller's limit (the limit in bytes).
            case tooLarge(Int)
            case other
        }

        public var path: String
        public var kind: Kind
        /// The system's reason (strerror, e.g. "No such file or directory"), or the size limit.
        public var reason: String

        public var description: String { "cannot read \(path): \(reason)" }

        /// Why, with what to do about it, for messages that name the file themselves.
        public var explanation: String {
            switch kind {
            case .notFound: return "no such file"
            case .isDirectory: return "it is a directory"
            case .permissionDenied: return "permission denied; make it readable by the user the proxy runs as"
            case .tooLarge(let limit): return "it is larger than \(limit / (1024 * 1024)) MiB"
            case .other: return reason
            }
        }
    }

    /// The file's bytes. Refuses directories and files larger than `maxBytes` (default 64 MiB); a file
    /// that grows past the limit while it is read is refused too, never truncated.
    public static func read(_ path: String, maxBytes: Int = 64 << 20) throws(ReadError) -> [UInt8] {
        func failure(_ code: Int32) -> ReadError {
            let kind: ReadError.Kind
            switch code {
            case ENOENT, ENOTDIR: kind = .notFound
            case EACCES, EPERM: kind = .permissionDenied
            case EISDIR: kind = .isDirectory
            default: kind = .other
            }
            return ReadError(path: path, kind: kind, reason: String(cString: strerror(code)))
        }
        let tooLarge = ReadError(path: path, kind: .tooLarge(maxBytes), reason: "larger than \(maxBytes) bytes")
        var fd: Int32
        repeat { fd = open(path, O_RDONLY | O_CLOEXEC) } while fd < 0 && errno == EINTR
        guard fd >= 0 else { throw failure(errno) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw failure(errno) }
        if (info.st_mode & S_IFMT) == S_IFDIR { throw failure(EISDIR) }
        if Int(info.st_size) > maxBytes { throw tooLarge }

        var bytes: [UInt8] = []
        // st_size is a hint (0 for /proc files and pipes): read until end of file either way.
        var chunk = [UInt8](repeating: 0, count: max(4096, min(Int(info.st_size) + 1, maxBytes + 1)))
        while true {
            let count = chunk.withUnsafeMutableBytes { buffer in systemRead(fd, buffer.baseAddress, buffer.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw failure(errno)
            }
            if count == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<count])
            if bytes.count > maxBytes { throw tooLarge }
        }
    }

    private static func systemRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int {
        #if canImport(Glibc)
        Glibc.read(fd, buffer, count)
        #elseif canImport(Musl)
        Musl.read(fd, buffer, count)
        #else
        Darwin.read(fd, buffer, count)
        #endif
    }
}

/// What the process was started with: its environment and current directory.
public enum ProcessEnvironment {
    /// The value of an environment variable, or nil when unset (or not UTF-8). getenv's string
    /// belongs to the environment: it is copied at once, never freed here.
    public static func value(_ name: String) -> String? {
        getenv(name).flatMap { String(validatingCString: $0) }
    }

    /// The process's current directory ("/" if it cannot be determined).
    public static var currentDirectory: String {
        guard let pointer = getcwd(nil, 0) else { return "/" }
        defer { free(pointer) }
        return String(cString: pointer)
    }
}
