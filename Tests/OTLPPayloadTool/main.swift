// A test-support command around OTLPPayload, not shipped with the proxy:
//
//   otlp-payload-tool rewrite <signal> <protobuf|json> [key=value ...]   stdin → stdout, or exit 1 and the error on stderr
//   otlp-payload-tool count <signal> <protobuf|json>                      prints the item count
//   otlp-payload-tool bench <signal> <protobuf|json> <file> <seconds>     ns per KiB of count and rewrite
//   otlp-payload-tool seeds <directory>                                   writes the fixtures as fuzz seeds
//
// tests/e2e/test_otlp_wire_editor.py drives `rewrite` with requests made by the official protobuf
// classes and parses the output with them.
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import OTLPFixtures
import ProxyOTLP

func fail(_ message: String) -> Never {
    let bytes = Array((message + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(1)
}

func readAll(_ descriptor: Int32) -> [UInt8] {
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { break }
        bytes += buffer[..<count]
    }
    return bytes
}

func writeAll(_ descriptor: Int32, _ bytes: [UInt8]) {
    var offset = 0
    while offset < bytes.count {
        let count = bytes[offset...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { fail("write failed") }
        offset += count
    }
}

func readFile(_ path: String) -> [UInt8] {
    let descriptor = open(path, O_RDONLY)
    guard descriptor >= 0 else { fail("cannot open \(path)") }
    defer { close(descriptor) }
    return readAll(descriptor)
}

func writeFile(_ path: String, _ bytes: [UInt8]) {
    let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard descriptor >= 0 else { fail("cannot create \(path)") }
    defer { close(descriptor) }
    writeAll(descriptor, bytes)
}

func signalAndEncoding(_ arguments: ArraySlice<String>) -> (OTLPSignal, OTLPPayloadEncoding) {
    guard arguments.count >= 2, let signal = OTLPSignal(rawValue: arguments[arguments.startIndex]) else {
        fail("expected a signal: traces, metrics, logs or profiles")
    }
    switch arguments[arguments.startIndex + 1] {
    case "protobuf": return (signal, .protobuf)
    case "json": return (signal, .json)
    default: fail("expected an encoding: protobuf or json")
    }
}

/// Runs `body` repeatedly for about `seconds` and returns nanoseconds per call.
func measure(seconds: Double, _ body: () throws -> Void) rethrows -> Double {
    let clock = ContinuousClock()
    var calls = 0
    var batch = 1
    let start = clock.now
    var elapsed = Duration.zero
    while elapsed < .milliseconds(Int64(seconds * 1000)) {
        for _ in 0..<batch { try body() }
        calls += batch
        batch = min(batch * 2, 1024)
        elapsed = start.duration(to: clock.now)
    }
    let (secondsPart, attoseconds) = elapsed.components
    return (Double(secondsPart) * 1e9 + Double(attoseconds) / 1e9) / Double(calls)
}

let arguments = CommandLine.arguments.dropFirst()
switch arguments.first {
case "rewrite":
    let (signal, encoding) = signalAndEncoding(arguments.dropFirst())
    let attributes = arguments.dropFirst(3).map { argument -> ResourceAttribute in
        guard let equals = argument.firstIndex(of: "=") else { fail("attributes are key=value") }
        return ResourceAttribute(key: String(argument[..<equals]), value: String(argument[argument.index(after: equals)...]))
    }
    do {
        writeAll(1, try OTLPPayload.rewrite(signal, encoding, readAll(0), setting: attributes).body)
    } catch {
        fail("refused: \(error)")
    }
case "count":
    let (signal, encoding) = signalAndEncoding(arguments.dropFirst())
    do {
        print(try OTLPPayload.count(signal, encoding, readAll(0)).items)
    } catch {
        fail("refused: \(error)")
    }
case "bench":
    let (signal, encoding) = signalAndEncoding(arguments.dropFirst())
    let rest = Array(arguments.dropFirst(3))
    guard rest.count == 2, let seconds = Double(rest[1]) else { fail("bench <signal> <encoding> <file> <seconds>") }
    let body = readFile(rest[0])
    let kib = Double(body.count) / 1024
    let attributes = [ResourceAttribute(key: "tenant.id", value: "team-a")]
    do {
        var items = 0
        let count = try measure(seconds: seconds) { items = try OTLPPayload.count(signal, encoding, body).items }
        let rewrite = try measure(seconds: seconds) { _ = try OTLPPayload.rewrite(signal, encoding, body, setting: attributes) }
        print("\(signal.rawValue) \(encoding) \(body.count) bytes, \(items) items: "
            + "count \(Int(count)) ns (\(Int(count / kib)) ns/KiB), rewrite \(Int(rewrite)) ns (\(Int(rewrite / kib)) ns/KiB)")
    } catch {
        fail("refused: \(error)")
    }
case "seeds":
    guard arguments.count == 2 else { fail("seeds <directory>") }
    for (name, body) in Fixtures.named {
        writeFile("\(arguments.last!)/\(name)", body)
    }
default:
    fail("usage: otlp-payload-tool rewrite|count|bench|seeds ... (see Tests/OTLPPayloadTool/main.swift)")
}
