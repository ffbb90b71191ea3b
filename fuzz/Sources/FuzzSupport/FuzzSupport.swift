import FuzzDriver
import Foundation

/// One fuzz input: the bytes libFuzzer generated. Return 0 (libFuzzer reserves other values).
public typealias FuzzBody = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

/// Hands the process to libFuzzer with `body` as the test function; never returns.
/// Command-line flags (-max_total_time, -dict, corpus directories) go to libFuzzer.
public func runFuzzer(_ body: FuzzBody) -> Never {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, body))
}

/// The input as a byte array (empty for a nil pointer).
public func fuzzBytes(_ data: UnsafePointer<UInt8>?, _ count: Int) -> [UInt8] {
    guard let data, count > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: data, count: count))
}

/// The input as text the way the proxy would see it: invalid UTF-8 is repaired, as
/// `String(decoding:as:)` does for header values and files read as UTF-8.
public func fuzzText(_ data: UnsafePointer<UInt8>?, _ count: Int) -> String {
    String(decoding: fuzzBytes(data, count), as: UTF8.self)
}

/// True when FUZZ_TRACE is set: targets then print what each input led to (for checking seeds and
/// reproducing a finding by hand, e.g. `FUZZ_TRACE=1 .build-fuzz/release/fuzz-jwt fuzz/corpus/jwt/*`).
public let fuzzTracing = getenv("FUZZ_TRACE") != nil
