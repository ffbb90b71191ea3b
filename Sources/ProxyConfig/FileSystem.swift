#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The few file-system and process facts the loader needs, from the C library (no Foundation).
enum FileSystem {
    /// Why a file could not be read.
    enum ReadError: Error {
        case notFound
        case isDirectory
        case permissionDenied
        case tooLarge(limit: Int)
        case other(String)
    }

    /// The process's current directory ("/" if it cannot be determined).
    static var currentDirectory: String {
        guard let pointer = getcwd(nil, 0) else { return "/" }
        defer { free(pointer) }
        return String(cString: pointer)
    }

    /// The value of an environment variable, or nil when unset.
    static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// The whole file, at most `limit` bytes (a longer file is refused, not truncated).
    static func read(_ path: String, limit: Int) -> Result<[UInt8], ReadError> {
        var status = stat()
        guard stat(path, &status) == 0 else { return .failure(error(errno)) }
        if (status.st_mode & S_IFMT) == S_IFDIR { return .failure(.isDirectory) }
        guard let file = fopen(path, "rb") else { return .failure(error(errno)) }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(min(Int(status.st_size), limit) + 1)
        while true {
            let next = getc(file)
            if next == EOF { break }
            guard bytes.count < limit else { return .failure(.tooLarge(limit: limit)) }
            bytes.append(UInt8(truncatingIfNeeded: next))
        }
        if ferror(file) != 0 { return .failure(error(errno)) }
        return .success(bytes)
    }

    private static func error(_ code: Int32) -> ReadError {
        switch code {
        case ENOENT, ENOTDIR: return .notFound
        case EACCES, EPERM: return .permissionDenied
        case EISDIR: return .isDirectory
        default: return .other(String(cString: strerror(code)))
        }
    }
}
