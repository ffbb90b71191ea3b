// The allocator one nghttp2 session uses (`nghttp2_mem`).
//
// nghttp2 allocates its outbound frame buffer, 16,394 bytes, when a session is created, and keeps it for
// the session's life. From the heap, that buffer mostly lands on pages the TLS handshake has already
// touched and freed, so an idle HTTP/2 connection keeps all of it resident although it only ever wrote
// a SETTINGS frame at its start. Blocks this large get pages of their own here (`mmap`), and the kernel
// backs only the pages written: about 4 KiB for an idle connection instead of 16. Everything smaller
// goes to `malloc` as before. A session has at most a few such blocks (the frame buffer, a long header
// value being decoded, a large frame being read), so they are kept in a small table per session; when
// the table is full, or `mmap` fails (the process's map count), the block comes from `malloc`.
internal import CNghttp2
import Glibc

/// The mapped blocks of one session. Owned by its `HTTP2Session`, which frees it after the nghttp2
/// session (whose last frees come through here).
final class HTTP2SessionMemory {
    /// Blocks of at least this many bytes are mapped.
    static let mappedThreshold = 16 * 1024
    static let slots = 8
    private static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Base address and mapped length of each mapped block; a free slot has a nil base.
    private let bases = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: slots)
    private let lengths = UnsafeMutablePointer<Int>.allocate(capacity: slots)

    init() {
        bases.initialize(repeating: nil, count: Self.slots)
        lengths.initialize(repeating: 0, count: Self.slots)
    }

    deinit {
        for slot in 0..<Self.slots {
            if let base = bases[slot] { munmap(base, lengths[slot]) }
        }
        bases.deallocate()
        lengths.deallocate()
    }

    /// The `nghttp2_mem` to create a session with; valid while this object lives. The common cases (a
    /// small block, a block not on a page boundary) go straight to the C library without this object.
    func table() -> nghttp2_mem {
        nghttp2_mem(
            mem_user_data: Unmanaged.passUnretained(self).toOpaque(),
            malloc: { size, user in
                size < HTTP2SessionMemory.mappedThreshold ? malloc(size) : HTTP2SessionMemory.from(user).allocate(size, zeroed: false)
            },
            free: { pointer, user in
                if HTTP2SessionMemory.mayBeMapped(pointer) { HTTP2SessionMemory.from(user).release(pointer) } else { free(pointer) }
            },
            calloc: { count, size, user in
                let (total, overflow) = count.multipliedReportingOverflow(by: size)
                if overflow { return nil }
                return total < HTTP2SessionMemory.mappedThreshold ? calloc(1, total) : HTTP2SessionMemory.from(user).allocate(total, zeroed: true)
            },
            realloc: { pointer, size, user in
                if pointer != nil && !HTTP2SessionMemory.mayBeMapped(pointer) && size < HTTP2SessionMemory.mappedThreshold {
                    return realloc(pointer, size)
                }
                return HTTP2SessionMemory.from(user).reallocate(pointer, size)
            })
    }

    /// Whether `pointer` can be a mapped block: those start on a page, so on a 4 KiB boundary whatever
    /// the page size. A heap block rarely does, and is then looked up in the table and not found.
    @inline(__always)
    static func mayBeMapped(_ pointer: UnsafeMutableRawPointer?) -> Bool {
        Int(bitPattern: pointer) & 4095 == 0
    }

    private static func from(_ user: UnsafeMutableRawPointer?) -> HTTP2SessionMemory {
        Unmanaged<HTTP2SessionMemory>.fromOpaque(user!).takeUnretainedValue()
    }

    /// How many mapped blocks are live (for tests).
    var mappedCount: Int { (0..<Self.slots).reduce(0) { $0 + (bases[$1] == nil ? 0 : 1) } }

    func allocate(_ size: Int, zeroed: Bool) -> UnsafeMutableRawPointer? {
        if size >= Self.mappedThreshold, let block = map(size) { return block }
        return zeroed ? calloc(1, size) : malloc(size)
    }

    func release(_ pointer: UnsafeMutableRawPointer?) {
        guard let pointer else { return }
        if Self.mayBeMapped(pointer), let slot = slot(of: pointer) {
            munmap(pointer, lengths[slot])
            bases[slot] = nil
            return
        }
        free(pointer)
    }

    func reallocate(_ pointer: UnsafeMutableRawPointer?, _ size: Int) -> UnsafeMutableRawPointer? {
        guard let pointer else { return allocate(size, zeroed: false) }
        guard Self.mayBeMapped(pointer), let slot = slot(of: pointer) else {
            return realloc(pointer, size)
        }
        if size <= lengths[slot] && size >= Self.mappedThreshold { return pointer }
        guard let moved = allocate(size, zeroed: false) else { return nil }
        moved.copyMemory(from: pointer, byteCount: min(size, lengths[slot]))
        munmap(pointer, lengths[slot])
        bases[slot] = nil
        return moved
    }

    private func map(_ size: Int) -> UnsafeMutableRawPointer? {
        guard let slot = (0..<Self.slots).first(where: { bases[$0] == nil }) else { return nil }
        let length = (size + Self.pageSize - 1) & ~(Self.pageSize - 1)
        let block = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let block, block != MAP_FAILED else { return nil }
        bases[slot] = block
        lengths[slot] = length
        return block
    }

    private func slot(of pointer: UnsafeMutableRawPointer) -> Int? {
        (0..<Self.slots).first { bases[$0] == pointer }
    }
}
