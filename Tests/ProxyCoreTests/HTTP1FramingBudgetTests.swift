import XCTest

@testable import ProxyCore

/// The HTTP/1.1 framing budget as a pure value: bytes read against what the decoder made of them.
final class HTTP1FramingBudgetTests: XCTestCase {
    private func budget() -> HTTP1FramingBudget {
        HTTP1FramingBudget(maxHeaderBytes: 64 * 1024, maxHeaderCount: 100)
    }

    /// `5;aaaa…` with a 100 KiB extension: the decoder produces the head and nothing else while
    /// the reads go on, so the budget runs out before the chunk's data arrives.
    func testLongChunkExtension_Exceeded() {
        var budget = budget()
        budget.read(300)
        budget.decodedHead(bytes: 300, fields: 5)
        XCTAssertFalse(budget.isExceeded)
        var read = 300
        while read < 300 + 100_000 && !budget.isExceeded {
            budget.read(16_384)
            read += 16_384
        }
        XCTAssertTrue(budget.isExceeded, "100 KiB of chunk extension passed")
        XCTAssertTrue(budget.inBody)
    }

    /// 2,000 chunks of 8 bytes, each with a short extension (`8;n=v\r\n…\r\n`): ordinary framing.
    func testManySmallChunksWithShortExtensions_WithinBudget() {
        var budget = budget()
        budget.read(300)
        budget.decodedHead(bytes: 300, fields: 5)
        for _ in 0..<2000 {
            budget.read(7 + 8 + 2)
            budget.decodedBody(8)
            XCTAssertFalse(budget.isExceeded)
            budget.settle()
        }
        budget.read(5)
        budget.decodedEnd()
        XCTAssertFalse(budget.isExceeded)
    }

    /// A head still arriving at the end of a read may use a head's allowance; a whole one more
    /// than that is over budget (padding whitespace the decoder skips without counting).
    func testHeadInProgress_OneHeadAllowance() {
        var budget = budget()
        budget.read(budget.perHead)
        XCTAssertFalse(budget.isExceeded)
        budget.read(budget.framingPerRequest + 1)
        XCTAssertTrue(budget.isExceeded)
        XCTAssertFalse(budget.inBody)
    }

    /// Two requests decoded from one read (pipelined): the first one's head allowance is its real
    /// size, not a whole header limit, so the second one's long extension is still caught.
    func testPipelinedRequestInSameRead_DoesNotLendAHeadLimit() {
        var budget = budget()
        budget.read(300 + 5 + 300 + 16_384)
        budget.decodedHead(bytes: 300, fields: 5)
        budget.decodedBody(5)
        budget.decodedEnd()
        budget.decodedHead(bytes: 300, fields: 5)
        XCTAssertFalse(budget.isExceeded)
        for _ in 0..<4 { budget.read(16_384) }
        XCTAssertTrue(budget.isExceeded)
    }

    /// Between requests the count starts again: 1,000 small keep-alive requests never bank
    /// allowance for a later one.
    func testKeepAliveRequests_DoNotBankAllowance() {
        var budget = budget()
        for _ in 0..<1000 {
            budget.read(200)
            budget.decodedHead(bytes: 300, fields: 5)
            budget.decodedBody(5)
            budget.decodedEnd()
            XCTAssertFalse(budget.isExceeded)
            budget.settle()
        }
        XCTAssertEqual(budget.received, 0)
        budget.read(300)
        budget.decodedHead(bytes: 300, fields: 5)
        budget.read(2 * budget.framingPerRequest)
        XCTAssertTrue(budget.isExceeded)
    }
}
