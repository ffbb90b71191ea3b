import Foundation
@testable import ProxyAuth
import ProxyTLS
import XCTest
import ProxySystem

/// JWKS parsing (which keys are usable, which are skipped and why, what fails the whole set) and the
/// bounded verified-token cache.
final class JWTJWKSTests: XCTestCase {
    var keys: JWTTestKeys!

    override func setUpWithError() throws {
        keys = try JWTTestKeys.load()
    }

    func parse(_ members: [Any]) throws -> JWKSet {
        try JWKSet.parse(Array(JWTMint.json(["keys": members]).utf8))
    }

    func with(_ key: JWTTestKeys.Key, _ extra: [String: Any]) -> [String: Any] {
        var members: [String: Any] = key.jwk
        members.merge(extra) { $1 }
        return members
    }

    func testJWKS_UsableKeys_ListedByKid() throws {
        let set = try parse([
            with(keys.rsa, ["kid": "rsa-1", "use": "sig", "alg": "RS256"]),
            with(keys.ec384, ["kid": "ec-384", "key_ops": ["verify"]]),
            with(keys.ed25519, ["kid": "ed-1"]),
            with(keys.ec521, [:]),
        ])
        XCTAssertEqual(set.keyIDs, ["rsa-1", "ec-384", "ed-1"])
        XCTAssertEqual(set.count, 4)
        XCTAssertEqual(set.skipped, [])
    }

    func testJWKS_RSA1024_Refused() throws {
        // Alone it fails the whole set, naming the key; next to a good key it is skipped with a reason.
        XCTAssertThrowsError(try parse([with(keys.rsa1024, ["kid": "weak"])])) { error in
            let error = error as! JWKSError
            XCTAssertTrue(error.description.contains("keys[0]"), error.description)
            XCTAssertTrue(error.description.contains("1024 bits"), error.description)
            XCTAssertFalse(error.description.contains(self.keys.rsa1024.jwk["n"]!.prefix(16)), "no key material in errors")
        }
        let mixed = try parse([with(keys.rsa1024, ["kid": "weak"]), with(keys.rsa, ["kid": "strong"])])
        XCTAssertEqual(mixed.keyIDs, ["strong"])
        XCTAssertEqual(mixed.skipped.count, 1)
        XCTAssertTrue(mixed.skipped[0].hasPrefix("keys[0]"), mixed.skipped[0])
    }

    func testJWKS_OctKey_Refused() throws {
        let oct: [String: Any] = ["kty": "oct", "kid": "hs", "k": JWTMint.b64url(Array(repeating: 7, count: 64))]
        XCTAssertThrowsError(try parse([oct])) { error in
            XCTAssertTrue("\(error)".contains("oct"), "\(error)")
            XCTAssertTrue("\(error)".contains("hmac_secret_file"), "\(error)")
        }
        let mixed = try parse([oct, with(keys.ec256, ["kid": "ec-1"])])
        XCTAssertEqual(mixed.keyIDs, ["ec-1"])
    }

    func testJWKS_UnusableKeys_SkippedWithReasons() throws {
        var offCurve = keys.ec256.jwk
        offCurve["y"] = keys.ec256Other.jwk["y"]
        let set = try parse([
            with(keys.rsa, ["kid": "enc", "use": "enc"]),
            with(keys.rsa, ["kid": "ops", "key_ops": ["encrypt"]]),
            with(keys.rsa, ["kid": "alg", "alg": "RSA-OAEP"]),
            with(keys.rsa, ["kid": "mismatch", "alg": "ES256"]),
            ["kty": "OKP", "crv": "X25519", "x": keys.ed25519.jwk["x"]!, "kid": "x25519"],
            ["kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA", "kid": "k1"],
            offCurve.merging(["kid": "off-curve"]) { $1 },
            ["kty": "RSA", "kid": "no-n", "e": "AQAB"],
            ["kty": "RSA", "kid": "bad-n", "n": "!!", "e": "AQAB"],
            ["kty": "PQ", "kid": "future"],
            with(keys.rsa, ["kid": 5]),
            "not an object",
            with(keys.ec256, ["kid": "good"]),
        ])
        XCTAssertEqual(set.keyIDs, ["good"])
        XCTAssertEqual(set.skipped.count, 12)
        for (index, reason) in set.skipped.enumerated() {
            XCTAssertTrue(reason.hasPrefix("keys[\(index)]"), reason)
        }
        XCTAssertTrue(set.skipped[0].contains(".use"), set.skipped[0])
        XCTAssertTrue(set.skipped[3].contains("ES256 does not match"), set.skipped[3])
    }

    func testJWKS_NotAKeySet_Refused() throws {
        XCTAssertThrowsError(try JWKSet.parse(Array("[]".utf8)))
        XCTAssertThrowsError(try JWKSet.parse(Array(#"{"keys":{}}"#.utf8)))
        XCTAssertThrowsError(try JWKSet.parse(Array(#"{"keys":[]}"#.utf8))) { error in
            XCTAssertTrue("\(error)".contains("empty"), "\(error)")
        }
        XCTAssertThrowsError(try JWKSet.parse(Array("<html>".utf8)))
        // Duplicate members: the document is ambiguous, so it is refused.
        let duplicate = #"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"\#(keys.ed25519.jwk["x"]!)","kid":"a","kid":"b"}]}"#
        XCTAssertThrowsError(try JWKSet.parse(Array(duplicate.utf8)))
    }

    func testJWKS_PaddedFieldsAccepted() throws {
        // Some key servers pad base64url; the fields decode the same.
        var padded = keys.ed25519.jwk
        padded["x"] = padded["x"]! + "="
        XCTAssertEqual(try parse([padded]).count, 1)
    }

    // MARK: Base64url

    func testBase64URL_CanonicalOnly() {
        XCTAssertEqual(try Base64URL.decode(Array("AQAB".utf8)).get(), [1, 0, 1])
        XCTAssertEqual(try Base64URL.decode(Array("-_8".utf8)).get(), [0xFB, 0xFF])
        XCTAssertEqual(Base64URL.decode(Array("-_9".utf8)), .failure(.nonCanonical))  // unused bits set
        XCTAssertEqual(Base64URL.decode(Array("AQ==".utf8)), .failure(.nonCanonical))
        XCTAssertEqual(try Base64URL.decode(Array("AQ==".utf8), allowPadding: true).get(), [1])
        XCTAssertEqual(Base64URL.decode(Array("A".utf8)), .failure(.nonCanonical))
        XCTAssertEqual(Base64URL.decode(Array("+/8".utf8)), .failure(.nonCanonical))
        XCTAssertEqual(Base64URL.decode(Array("A*".utf8)), .failure(.notBase64))
        for length in 0..<40 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            XCTAssertEqual(try Base64URL.decode(Array(Base64URL.encode(bytes).utf8)).get(), bytes)
        }
    }

    // MARK: Cache bounds

    func testCache_BoundedEvictsOldest() {
        var cache = VerifiedTokenCache(capacity: 3)
        let later = WallTime(secondsSince1970: 2_000_000_000)
        func identity(_ name: String) -> JWTIdentity {
            JWTIdentity(issuer: "i", principal: name, tenant: nil, headers: [], expiresAt: later)
        }
        let now = WallTime(secondsSince1970: 1_800_000_000)
        for index in 0..<5 { cache.insert([UInt8(index)], identity("p\(index)")) }
        XCTAssertEqual(cache.count, 3)
        XCTAssertNil(cache.lookup([0], now: now))
        XCTAssertNil(cache.lookup([1], now: now))
        XCTAssertEqual(cache.lookup([4], now: now)?.principal, "p4")
        // Re-inserting an entry makes it the newest: the next eviction takes [2], not it.
        cache.insert([3], identity("p3-again"))
        cache.insert([9], identity("p9"))
        XCTAssertNil(cache.lookup([2], now: now))
        XCTAssertEqual(cache.lookup([3], now: now)?.principal, "p3-again")
        XCTAssertEqual(cache.count, 3)
        // Many more insertions keep the size at the capacity.
        for index in 10..<1000 { cache.insert([UInt8(index % 256), UInt8(index / 256)], identity("p")) }
        XCTAssertEqual(cache.count, 3)
        // Entries past exp are not answered and are dropped.
        XCTAssertNil(cache.lookup([UInt8(999 % 256), UInt8(999 / 256)], now: later))
        XCTAssertEqual(cache.count, 2)
    }

    func testProvider_CacheCapacityIsTenThousand() {
        XCTAssertEqual(JWTProvider.cacheCapacity, 10_000)
    }
}
