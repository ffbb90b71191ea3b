import Foundation
import XCTest
@testable import ProxyAuth
import ProxyTLS

/// htpasswd files verified with libcrypt: accepted and refused formats (with line numbers), right,
/// wrong and unknown users, equal cost for unknown users, and the success cache.
final class HtpasswdTests: XCTestCase {
    /// Published vectors, not produced by the code under test: crypt_blowfish's test vector for
    /// "U*U" (identical under $2a$, $2b$ and $2y$ for ASCII passwords), and `openssl passwd -5/-6
    /// -salt abcdefgh secret`.
    static let bcryptUU = "$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"
    static let sha512Secret = "$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG."
    static let sha256Secret = "$5$abcdefgh$gruCpC7VkOTspMQTTSAR8mtlO9Upms.fwqE5y16JVM."

    static let fixtureFile = """
        # collectors
        alice:\(bcryptUU)
        bob:\(sha512Secret)

        carol:\(sha256Secret)
        dave:\(bcryptUU.replacingOccurrences(of: "$2y$", with: "$2a$"))
        erin:\(bcryptUU.replacingOccurrences(of: "$2y$", with: "$2b$"))
        """

    private func load(_ text: String) throws -> HtpasswdFile {
        try HtpasswdFile.parse(text, file: "users.htpasswd")
    }

    private func problems(_ text: String) -> [String] {
        do {
            _ = try load(text)
            return []
        } catch {
            return error.problems
        }
    }

    // MARK: - Formats

    func testParse_AcceptedFormats_AllVerify() throws {
        let file = try load(Self.fixtureFile)
        XCTAssertEqual(file.users, ["alice", "bob", "carol", "dave", "erin"])
        XCTAssertTrue(file.verify(user: "alice", password: "U*U"))
        XCTAssertTrue(file.verify(user: "bob", password: "secret"))
        XCTAssertTrue(file.verify(user: "carol", password: "secret"))
        XCTAssertTrue(file.verify(user: "dave", password: "U*U"))
        XCTAssertTrue(file.verify(user: "erin", password: "U*U"))
    }

    func testParse_WeakFormats_RefusedNamingLineAndFormat_HashNeverShown() {
        let lines = [
            ("sha1", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "{SHA}"),
            ("apr1", "$apr1$abcdefgh$0123456789abcdefghijkl", "$apr1$"),
            ("md5", "$1$abcdefgh$0123456789abcdefghijkl", "MD5-crypt"),
            ("des", "abJnggxhB/yWI", "DES"),
            ("plain", "hunter2-plain", "plain-text"),
            ("argon", "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG", "Argon2"),
            ("yes", "$y$j9T$abcdefghijklmnop$0123456789012345678901234567890123456789012", "yescrypt"),
        ]
        let text = "ok:\(Self.bcryptUU)\n" + lines.map { "\($0.0):\($0.1)" }.joined(separator: "\n")
        let found = problems(text)
        XCTAssertEqual(found.count, lines.count, "\(found)")
        for (offset, line) in lines.enumerated() {
            let problem = found.first { $0.hasPrefix("line \(offset + 2) (user \"\(line.0)\")") } ?? ""
            XCTAssertTrue(problem.contains(line.2), "line \(offset + 2): \(problem)")
            XCTAssertTrue(problem.contains("accepted formats are bcrypt"), problem)
            XCTAssertFalse(problem.contains(line.1), "the hash leaked: \(problem)")
        }
    }

    func testParse_DamagedHashesAndBadLines_Refused() {
        let found = problems("""
            a:\(Self.bcryptUU.dropLast())
            b:\(Self.sha512Secret.dropLast(2))
            no-colon-here
            :\(Self.bcryptUU)
            a:\(Self.bcryptUU)
            c d:\(Self.bcryptUU)
            """)
        let text = found.joined(separator: "\n")
        XCTAssertTrue(text.contains("line 1 (user \"a\"): a damaged bcrypt hash"), text)
        XCTAssertTrue(text.contains("line 2 (user \"b\"): a damaged sha-crypt hash"), text)
        XCTAssertTrue(text.contains("line 3: expected `user:hash`"), text)
        XCTAssertTrue(text.contains("line 4: the user name is empty"), text)
        XCTAssertTrue(text.contains("line 6: the user name contains spaces"), text)
        XCTAssertEqual(found.count, 5, text)  // line 5 repeats `a`, whose line 1 was refused already
    }

    /// Found by fuzz-htpasswd (a timeout): a well-formed bcrypt entry of cost 25 made loading compute
    /// the unknown-user dummy hash at that cost, which takes hours. Costs are now bounded at load.
    func testParse_ExcessiveCost_RefusedAtLoadWithoutHashing() throws {
        let fuzzerInput = "# users\nalice:$2y$25$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW\n"
        let started = Date()
        let found = problems(fuzzerInput)
        XCTAssertLessThan(Date().timeIntervalSince(started), 2, "the cost-25 hash was computed")
        XCTAssertEqual(found.count, 1)
        XCTAssertTrue(found[0].hasPrefix("line 2 (user \"alice\"): bcrypt cost 25 is above the maximum of 14"), found[0])
        XCTAssertFalse(found[0].contains("CCCCCCCC"), "the hash leaked into the message")

        let shaRounds = "b:$6$rounds=1000001$saltsalt$" + String(repeating: "a", count: 86)
        XCTAssertTrue(problems(shaRounds).first?.contains("rounds=1000001 is above the maximum of 1000000") == true, "\(problems(shaRounds))")
        // The largest accepted costs still load. They come second: the dummy hash is made like the
        // first entry, so this stays fast.
        let highest = "b:$6$rounds=1000000$saltsalt$" + String(repeating: "a", count: 86)
            + "\nc:" + Self.bcryptUU.replacingOccurrences(of: "$05$", with: "$14$")
        XCTAssertEqual(try load("a:\(Self.sha256Secret)\n" + highest).users, ["a", "b", "c"])
    }

    func testParse_DuplicateUser_NamesBothLines() {
        let found = problems("a:\(Self.bcryptUU)\nb:\(Self.bcryptUU)\na:\(Self.sha256Secret)")
        XCTAssertEqual(found, ["line 3: user \"a\" is already defined on line 1; keep one entry per user"])
    }

    func testParse_NoUsers_Refused() {
        XCTAssertEqual(problems("# nothing\n\n").count, 1)
        XCTAssertTrue(problems("").first?.contains("no users") ?? false)
    }

    func testParse_CRLFLineEndings_Accepted() throws {
        let file = try load("alice:\(Self.bcryptUU)\r\nbob:\(Self.sha512Secret)\r\n")
        XCTAssertTrue(file.verify(user: "bob", password: "secret"))
    }

    func testLoad_MissingFile_NamesPath() {
        XCTAssertThrowsError(try HtpasswdFile.load(file: "/nonexistent/users.htpasswd")) { error in
            XCTAssertTrue("\(error)".contains("/nonexistent/users.htpasswd"), "\(error)")
        }
    }

    // MARK: - Verification

    func testVerify_RightWrongUnknown() throws {
        let file = try load(Self.fixtureFile)
        let now = ContinuousClock.now
        XCTAssertEqual(file.check(user: "bob", password: "secret", now: now), .success)
        XCTAssertEqual(file.check(user: "bob", password: "Secret", now: now), .wrongPassword)
        XCTAssertEqual(file.check(user: "bob", password: "", now: now), .wrongPassword)
        XCTAssertEqual(file.check(user: "mallory", password: "secret", now: now), .unknownUser)
        XCTAssertEqual(file.check(user: "Bob", password: "secret", now: now), .unknownUser)  // user names are exact
        XCTAssertFalse(file.verify(user: "alice", password: "U*U*"))
        XCTAssertFalse(file.verify(user: "alice", password: "U*U\u{0}"))
    }

    func testDummyHash_SameAlgorithmAndCostAsFirstEntry() throws {
        let bcrypt = try load("a:\(Self.bcryptUU)\nb:\(Self.sha512Secret)")
        XCTAssertTrue(bcrypt.dummyHash.hasPrefix("$2y$05$"), bcrypt.dummyHash)
        XCTAssertEqual(bcrypt.dummyHash.count, 60)
        XCTAssertNotEqual(bcrypt.dummyHash, Self.bcryptUU)
        let sha = try load("b:$6$rounds=7000$saltsalt$" + String(repeating: "a", count: 86))
        XCTAssertTrue(sha.dummyHash.hasPrefix("$6$rounds=7000$"), sha.dummyHash)
    }

    /// An unknown user must cost about what a wrong password costs, so response times do not reveal
    /// which user names exist. Medians over 21 runs each, within a factor of 2 either way.
    func testVerify_UnknownUserTime_WithinTwiceWrongPasswordTime() throws {
        let setting = "$2y$08$" + String(repeating: "a", count: 22)
        let hash = try XCTUnwrap(Crypt.hash(password: "right-password", setting: setting))
        let file = try load("known:\(hash)")
        func median(_ block: () -> Void) -> Double {
            var samples: [Double] = []
            for _ in 0..<21 {
                let start = DispatchTime.now().uptimeNanoseconds
                block()
                samples.append(Double(DispatchTime.now().uptimeNanoseconds - start))
            }
            return samples.sorted()[10]
        }
        let now = ContinuousClock.now
        let wrong = median { XCTAssertEqual(file.check(user: "known", password: "wrong-password", now: now), .wrongPassword) }
        let unknown = median { XCTAssertEqual(file.check(user: "nobody", password: "wrong-password", now: now), .unknownUser) }
        XCTAssertLessThan(unknown, wrong * 2, "unknown \(unknown) ns vs wrong \(wrong) ns")
        XCTAssertGreaterThan(unknown, wrong / 2, "unknown \(unknown) ns vs wrong \(wrong) ns")
    }

    func testVerify_Concurrent_IsThreadSafe() throws {
        let file = try load(Self.fixtureFile)
        final class Outcomes: @unchecked Sendable {
            let lock = NSLock()
            var wrong: [Int] = []
        }
        let outcomes = Outcomes()
        DispatchQueue.concurrentPerform(iterations: 32) { index in
            // Alternate right and wrong passwords across users and algorithms at the same time.
            let user = ["alice", "bob", "carol"][index % 3]
            let password = user == "alice" ? "U*U" : "secret"
            let expected = index % 2 == 0
            if file.verify(user: user, password: expected ? password : password + "x") != expected {
                outcomes.lock.lock()
                outcomes.wrong.append(index)
                outcomes.lock.unlock()
            }
        }
        XCTAssertEqual(outcomes.wrong, [])
    }

    // MARK: - Cache

    func testCache_OnlyExactSuccessfulCredentials_ExpiresAfterFiveMinutes() throws {
        let file = try load(Self.fixtureFile)
        let now = ContinuousClock.now
        XCTAssertFalse(file.isCached(user: "bob", password: "secret", now: now))
        XCTAssertEqual(file.check(user: "bob", password: "wrong", now: now), .wrongPassword)
        XCTAssertFalse(file.isCached(user: "bob", password: "wrong", now: now))
        XCTAssertEqual(file.check(user: "bob", password: "secret", now: now), .success)
        XCTAssertTrue(file.isCached(user: "bob", password: "secret", now: now + .seconds(299)))
        XCTAssertFalse(file.isCached(user: "bob", password: "secret ", now: now))
        XCTAssertFalse(file.isCached(user: "bo", password: "bsecret", now: now))  // the separator counts
        XCTAssertFalse(file.isCached(user: "bob", password: "secret", now: now + .seconds(301)))
        // A reloaded file starts with an empty cache.
        XCTAssertFalse(try load(Self.fixtureFile).isCached(user: "bob", password: "secret", now: now))
    }

    func testCache_Bounded() {
        let cache = SuccessCache()
        let now = ContinuousClock.now
        for index in 0..<(HtpasswdFile.cacheCapacity + 10) {
            cache.insert(Digest.sha256(Array("key-\(index)".utf8)), expiry: now + .seconds(300 + index))
        }
        XCTAssertLessThanOrEqual(cache.count, HtpasswdFile.cacheCapacity)
        // The newest entries survive.
        XCTAssertTrue(cache.contains(Digest.sha256(Array("key-\(HtpasswdFile.cacheCapacity + 9)".utf8)), now: now))
    }
}

private extension Error {
    var problems: [String] { (self as? AuthConfigurationError)?.problems ?? ["\(self)"] }
}
