import Foundation
import NIOConcurrencyHelpers
import ProxyConfig
import XCTest

@testable import ProxyCore

/// The limits' pure parts: token buckets with the clock passed in, the connection gate, held-byte
/// tallies, and the wire form of the retryable replies.
final class LimitsTests: XCTestCase {
    private typealias TenantRate = ProxyConfiguration.Limits.TenantRate
    private let second: UInt64 = 1_000_000_000

    private func policy(
        requests: Double = 0, bytes: Double = 0, burst: Duration = .seconds(2),
        overrides: [String: TenantRate.Rates] = [:]
    ) -> TenantRate {
        TenantRate(defaults: .init(requestsPerSecond: requests, bytesPerSecond: bytes), burstSeconds: burst, overrides: overrides)
    }

    // MARK: Token buckets

    func testRequestRate_BurstThenLimited_RetryAfterUntilNextToken() {
        let limiter = TenantRateLimiter()
        let rate = policy(requests: 2, burst: .seconds(2))  // bucket of 4
        let start: UInt64 = 100 * second
        for index in 0..<4 {
            XCTAssertEqual(limiter.admit(tenant: "team-a", policy: rate, now: start), .admitted, "request \(index)")
        }
        XCTAssertEqual(limiter.admit(tenant: "team-a", policy: rate, now: start), .limited(.requests, retryAfter: .milliseconds(500)))
        // Half a second later one token is back, and only one.
        XCTAssertEqual(limiter.admit(tenant: "team-a", policy: rate, now: start + second / 2), .admitted)
        guard case .limited(.requests, let wait) = limiter.admit(tenant: "team-a", policy: rate, now: start + second / 2) else {
            return XCTFail("expected the fifth request within the second to be limited")
        }
        XCTAssertEqual(wait, .milliseconds(500))
    }

    func testRequestRate_Refill_CappedAtBurst() {
        let limiter = TenantRateLimiter()
        let rate = policy(requests: 1, burst: .seconds(3))
        let start: UInt64 = 5 * second
        XCTAssertEqual(limiter.admit(tenant: "t", policy: rate, now: start), .admitted)
        // An hour of quiet refills to three tokens, not 3600.
        let later = start + 3600 * second
        for _ in 0..<3 { XCTAssertEqual(limiter.admit(tenant: "t", policy: rate, now: later), .admitted) }
        XCTAssertNotEqual(limiter.admit(tenant: "t", policy: rate, now: later), .admitted)
    }

    func testRequestRate_FractionalRate_BucketHoldsAtLeastOneRequest() {
        let limiter = TenantRateLimiter()
        let rate = policy(requests: 0.2, burst: .seconds(1))  // capacity 0.2, raised to 1
        XCTAssertEqual(limiter.admit(tenant: "t", policy: rate, now: second), .admitted)
        XCTAssertEqual(limiter.admit(tenant: "t", policy: rate, now: second), .limited(.requests, retryAfter: .seconds(5)))
        XCTAssertEqual(limiter.admit(tenant: "t", policy: rate, now: 6 * second), .admitted)
    }

    func testTenants_HaveSeparateBuckets() {
        let limiter = TenantRateLimiter()
        let rate = policy(requests: 1, burst: .seconds(1))
        XCTAssertEqual(limiter.admit(tenant: "team-a", policy: rate, now: second), .admitted)
        XCTAssertNotEqual(limiter.admit(tenant: "team-a", policy: rate, now: second), .admitted)
        XCTAssertEqual(limiter.admit(tenant: "team-b", policy: rate, now: second), .admitted, "another tenant is unaffected")
    }

    func testOverrides_ApplyToTheirTenant_ZeroIsUnlimited() {
        let limiter = TenantRateLimiter()
        let rate = policy(
            requests: 1, burst: .seconds(1),
            overrides: ["big": .init(requestsPerSecond: 100, bytesPerSecond: 0), "free": .init()])
        for _ in 0..<100 { XCTAssertEqual(limiter.admit(tenant: "big", policy: rate, now: second), .admitted) }
        XCTAssertNotEqual(limiter.admit(tenant: "big", policy: rate, now: second), .admitted)
        for _ in 0..<1000 { XCTAssertEqual(limiter.admit(tenant: "free", policy: rate, now: second), .admitted) }
        XCTAssertEqual(limiter.bucketCount, 1, "unlimited tenants need no bucket")
    }

    func testByteRate_LargeBodyLeavesDebt_NextRequestWaitsForRefill() {
        let limiter = TenantRateLimiter()
        let rate = policy(bytes: 1000, burst: .seconds(1))  // bucket of 1000 bytes
        XCTAssertEqual(limiter.admit(tenant: "t", policy: rate, now: second), .admitted)
        limiter.charge(tenant: "t", bytes: 4000, policy: rate, now: second)  // -3000
        XCTAssertEqual(limiter.admit(tenant: "t", policy: rate, now: second), .limited(.bytes, retryAfter: .milliseconds(3001)))
        XCTAssertEqual(limiter.admit(tenant: "t", policy: rate, now: 2 * second), .limited(.bytes, retryAfter: .milliseconds(2001)))
        XCTAssertEqual(limiter.admit(tenant: "t", policy: rate, now: 4 * second + second / 100), .admitted)
    }

    func testByteRate_RequestsAlsoLimited_ByteDebtDoesNotTakeRequestToken() {
        let limiter = TenantRateLimiter()
        let rate = policy(requests: 1, bytes: 1000, burst: .seconds(1))
        XCTAssertEqual(limiter.admit(tenant: "t", policy: rate, now: second), .admitted)
        limiter.charge(tenant: "t", bytes: 1500, policy: rate, now: second)
        // One second later both budgets have refilled enough: bytes 500 > 0, one request token.
        XCTAssertEqual(limiter.admit(tenant: "t", policy: rate, now: 2 * second), .admitted)
    }

    func testPolicyChange_KeepsBucketState() {
        let limiter = TenantRateLimiter()
        let before = policy(requests: 1, burst: .seconds(1))
        XCTAssertEqual(limiter.admit(tenant: "t", policy: before, now: second), .admitted)
        // A reload raises the rate: the empty bucket refills at the new rate, it is not reset to full.
        let after = policy(requests: 10, burst: .seconds(1))
        XCTAssertEqual(limiter.admit(tenant: "t", policy: after, now: second), .limited(.requests, retryAfter: .milliseconds(100)))
        XCTAssertEqual(limiter.admit(tenant: "t", policy: after, now: second + second / 10), .admitted)
    }

    func testManyTenants_FullBucketsPruned() {
        let limiter = TenantRateLimiter()
        let rate = policy(requests: 1000, burst: .seconds(1))
        let tenants = 16 * TenantRateLimiter.maxBucketsPerShard * 2
        for index in 0..<tenants {
            _ = limiter.admit(tenant: "tenant-\(index)", policy: rate, now: second + UInt64(index) * 1_000_000)
        }
        XCTAssertLessThanOrEqual(limiter.bucketCount, 16 * (TenantRateLimiter.maxBucketsPerShard + 1))
    }

    // MARK: Connections and held bytes

    func testConnectionGate_RefusesBeyondLimit_FreesOnClose() {
        let gate = ConnectionGate()
        XCTAssertTrue(gate.tryOpen(limit: 2))
        XCTAssertTrue(gate.tryOpen(limit: 2))
        XCTAssertFalse(gate.tryOpen(limit: 2))
        XCTAssertEqual(gate.count, 2)
        gate.closed()
        XCTAssertTrue(gate.tryOpen(limit: 2))
        XCTAssertFalse(gate.tryOpen(limit: 2))
    }

    func testConnectionGate_ConcurrentOpens_NeverExceedLimit() {
        let gate = ConnectionGate()
        let admitted = DispatchQueue.concurrentPerform_count(iterations: 1000) { gate.tryOpen(limit: 100) }
        XCTAssertEqual(admitted, 100)
        XCTAssertEqual(gate.count, 100)
    }

    func testConnectionGate_WarnsAtMostEveryTenSeconds() {
        let gate = ConnectionGate()
        XCTAssertTrue(gate.shouldWarn(now: 50 * second))
        XCTAssertFalse(gate.shouldWarn(now: 55 * second))
        XCTAssertTrue(gate.shouldWarn(now: 61 * second))
    }

    func testHeldBytes_ReleaseNeverExceedsHeld() {
        let gauge = BufferedBytesGauge()
        var first = HeldBytes(gauge: gauge)
        var second = HeldBytes(gauge: gauge)
        first.add(100)
        second.add(50)
        XCTAssertEqual(gauge.bytes, 150)
        XCTAssertTrue(gauge.isOver(149))
        XCTAssertFalse(gauge.isOver(150))
        first.release(30)
        first.releaseAll()
        first.release(500)  // late release after the holder ended: no effect
        XCTAssertEqual(gauge.bytes, 50)
        second.releaseAll()
        XCTAssertEqual(gauge.bytes, 0)
    }

    func testStreamHeldBytes_StreamCloseReleasesItsShare() {
        let gauge = BufferedBytesGauge()
        var held = StreamHeldBytes(gauge: gauge)
        held.add(1, 1000)
        held.add(3, 500)
        held.release(1, 400)
        XCTAssertEqual(gauge.bytes, 1100)
        held.releaseStream(1)
        held.release(1, 100)  // a consume after the stream closed
        XCTAssertEqual(gauge.bytes, 500)
        held.add(5, 10)
        held.releaseAll()
        XCTAssertEqual(gauge.bytes, 0)
    }

    // MARK: Replies

    func testRetryAfterSeconds_RoundsUpToWholeSeconds() {
        XCTAssertEqual(LocalReply.retryAfterSeconds(.milliseconds(1)), "1")
        XCTAssertEqual(LocalReply.retryAfterSeconds(.seconds(2)), "2")
        XCTAssertEqual(LocalReply.retryAfterSeconds(.milliseconds(2001)), "3")
    }

    func testRateLimitedReply_HTTP429WithRetryAfter() {
        let reply = LocalReply.rateLimited(retryAfter: .milliseconds(1500))
        XCTAssertEqual(reply.status, .tooManyRequests)
        XCTAssertEqual(reply.rpcCode, 8)
        XCTAssertEqual(reply.extraHeaders.first { $0.0 == "Retry-After" }?.1, "2")
    }

    func testRateLimitedReply_GRPCTrailers_CarryRetryInfoInStatusDetails() throws {
        let reply = LocalReply.rateLimited(retryAfter: .milliseconds(1500))
        let fields = Dictionary(reply.grpcTrailersOnly.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })
        XCTAssertEqual(fields[":status"], "200")
        XCTAssertEqual(fields["grpc-status"], "8")
        let details = try XCTUnwrap(fields["grpc-status-details-bin"])
        XCTAssertFalse(details.hasSuffix("="), "binary metadata is sent unpadded")
        let status = try WireMessage(base64Unpadded: details)
        XCTAssertEqual(status.varint(1), 8)
        XCTAssertEqual(status.string(2), "tenant rate limit exceeded, retry later")
        let any = try WireMessage(status.bytes(3))
        XCTAssertEqual(any.string(1), "type.googleapis.com/google.rpc.RetryInfo")
        let delay = try WireMessage(WireMessage(any.bytes(2)).bytes(1))
        XCTAssertEqual(delay.varint(1), 1)
        XCTAssertEqual(delay.varint(2), 500_000_000)
        // The RetryInfo alone, for exporters that read it from its own metadata key.
        let alone = try WireMessage(base64Unpadded: XCTUnwrap(fields["google.rpc.retryinfo-bin"]))
        XCTAssertEqual(alone.bytes(1), any.bytes(2).flatMap { try? WireMessage($0).bytes(1) })
    }

    func testBinaryHeaderValue_IsBase64WithoutPadding_EveryTailLength() {
        for count in 0...10 {
            let bytes = (0..<count).map { UInt8(truncatingIfNeeded: $0 * 97 + 251) }
            var expected = Data(bytes).base64EncodedString()
            while expected.hasSuffix("=") { expected.removeLast() }
            XCTAssertEqual(LocalReply.binaryHeaderValue(bytes), expected, "\(count) bytes")
        }
        XCTAssertEqual(LocalReply.binaryHeaderValue([0xFB, 0xFF, 0xBF]), "+/+/")
    }

    func testOverloadedReply_503RetryAfter_GRPCUnavailable() {
        let reply = LocalReply.overloaded
        XCTAssertEqual(reply.status, .serviceUnavailable)
        XCTAssertEqual(reply.extraHeaders.first { $0.0 == "Retry-After" }?.1, "1")
        XCTAssertEqual(reply.grpcTrailersOnly.first { $0.name == "grpc-status" }?.value, "14")
    }
}

extension DispatchQueue {
    /// Runs `body` `iterations` times concurrently; returns how many returned true.
    static func concurrentPerform_count(iterations: Int, _ body: @Sendable () -> Bool) -> Int {
        let count = NIOLockedCounter()
        concurrentPerform(iterations: iterations) { _ in if body() { count.increment() } }
        return count.value
    }
}

final class NIOLockedCounter: Sendable {
    private let box = NIOLockedValueBox(0)
    func increment() { box.withLockedValue { $0 += 1 } }
    var value: Int { box.withLockedValue { $0 } }
}

/// A minimal protobuf reader for the tests: the first value of each field number, by wire type.
struct WireMessage {
    private var varints: [Int: UInt64] = [:]
    private var lengthDelimited: [Int: [UInt8]] = [:]

    struct Malformed: Error {}

    init(base64Unpadded text: String) throws {
        let padded = text + String(repeating: "=", count: (4 - text.count % 4) % 4)
        guard let data = Data(base64Encoded: padded) else { throw Malformed() }
        try self.init(Array(data))
    }

    init(_ bytes: [UInt8]?) throws {
        guard let bytes else { throw Malformed() }
        var index = 0
        func varint() throws -> UInt64 {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                guard index < bytes.count, shift < 64 else { throw Malformed() }
                let byte = bytes[index]
                index += 1
                value |= UInt64(byte & 0x7F) << shift
                if byte & 0x80 == 0 { return value }
                shift += 7
            }
        }
        while index < bytes.count {
            let key = try varint()
            let field = Int(key >> 3)
            switch key & 7 {
            case 0:
                let value = try varint()
                if varints[field] == nil { varints[field] = value }
            case 2:
                let length = Int(try varint())
                guard index + length <= bytes.count else { throw Malformed() }
                if lengthDelimited[field] == nil { lengthDelimited[field] = Array(bytes[index..<index + length]) }
                index += length
            default:
                throw Malformed()
            }
        }
    }

    func varint(_ field: Int) -> UInt64? { varints[field] }
    func bytes(_ field: Int) -> [UInt8]? { lengthDelimited[field] }
    func string(_ field: Int) -> String? { bytes(field).map { String(decoding: $0, as: UTF8.self) } }
}
