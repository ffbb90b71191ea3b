import Foundation
import XCTest
@testable import ProxyAuth

/// `Authorization: Basic` decoding (RFC 7617): strict base64, UTF-8, split at the first colon.
final class BasicCredentialsTests: XCTestCase {
    private func decode(_ token: String) -> BasicCredentials? {
        BasicCredentials(token68: Array(token.utf8))
    }

    private func encode(_ text: String) -> String {
        Data(text.utf8).base64EncodedString()
    }

    func testDecode_UserAndPassword() {
        XCTAssertEqual(decode("YWxpY2U6cHc="), BasicCredentials(user: "alice", password: "pw"))
        XCTAssertEqual(decode(encode("alice:p:w")), BasicCredentials(user: "alice", password: "p:w"))
        XCTAssertEqual(decode(encode("alice:")), BasicCredentials(user: "alice", password: ""))
        XCTAssertEqual(decode(encode("zoë:pässwörd")), BasicCredentials(user: "zoë", password: "pässwörd"))
        XCTAssertEqual(decode(encode("ab:cd")), BasicCredentials(user: "ab", password: "cd"))  // no padding needed
    }

    func testDecode_Malformed_Refused() {
        let cases: [(String, String)] = [
            ("YWxpY2U6cHc", "padding missing"),
            ("YWxpY2U6cHc==", "too much padding"),
            ("YWxpY2U6cHd=", "non-zero bits under the padding (a second spelling)"),
            ("YW-pY2U6cHc=", "base64url alphabet"),
            ("YWxp Y2U6cHc=", "a space"),
            (encode("alice"), "no colon"),
            (encode(":pw"), "empty user"),
            (encode("alice:p\tw"), "control character"),
            (encode("alice:p\u{0}w"), "NUL"),
            (Data([0x61, 0x3A, 0xFF, 0xFE]).base64EncodedString(), "not UTF-8"),
            ("", "empty"),
            ("=", "only padding"),
        ]
        for (token, why) in cases {
            XCTAssertNil(decode(token), why)
        }
    }

    func testAuthenticator_BasicHeaders_EndToEnd() throws {
        let file = try HtpasswdFile.parse(HtpasswdTests.fixtureFile, file: "u")
        let authenticator = Authenticator.make(basic: file, defaultTenant: "shared")
        let good = "Basic " + encode("bob:secret")
        XCTAssertEqual(try authenticator.authenticate(authorization: [good]).get(),
                       AuthDecision(principal: Principal(name: "user:bob", method: .basic), tenant: "shared"))
        for scheme in ["basic", "BASIC", "bAsIc"] {
            XCTAssertNoThrow(try authenticator.authenticate(authorization: ["\(scheme) " + encode("bob:secret")]).get(), scheme)
        }
        XCTAssertEqual(authenticator.authenticate(authorization: ["Basic " + encode("bob:wrong")]), .failure(.wrongPassword))
        XCTAssertEqual(authenticator.authenticate(authorization: ["Basic " + encode("eve:secret")]), .failure(.unknownUser))
        XCTAssertEqual(authenticator.authenticate(authorization: ["Basic YWxpY2U6cHc"]), .failure(.malformedAuthorization))
        XCTAssertEqual(authenticator.authenticate(authorization: ["Basic " + encode("bob")]), .failure(.malformedAuthorization))
        XCTAssertEqual(authenticator.authenticate(authorization: [good, good]), .failure(.multipleAuthorizationHeaders))
    }

    func testAuthenticator_UncachedBasic_IsOffloaded_CachedIsDecidedInline() throws {
        let file = try HtpasswdFile.parse(HtpasswdTests.fixtureFile, file: "u")
        let authenticator = Authenticator.make(basic: file, defaultTenant: "shared")
        let credentials = RequestCredentials(
            peerCertificate: nil, authorization: ["Basic " + encode("bob:secret")], signal: .logs)
        guard case .offload(let work) = authenticator.authenticate(credentials, now: .now()) else {
            return XCTFail("the first verification must be offloaded: it hashes")
        }
        XCTAssertEqual(try work().get().principal.name, "user:bob")
        guard case .decided(.success(let decision)) = authenticator.authenticate(credentials, now: .now()) else {
            return XCTFail("a cached success must be decided without hashing")
        }
        XCTAssertEqual(decision.tenant, "shared")
        // A wrong password is never served from the cache, and is offloaded (it hashes) every time.
        let wrong = RequestCredentials(peerCertificate: nil, authorization: ["Basic " + encode("bob:wrong")], signal: .logs)
        guard case .offload(let failing) = authenticator.authenticate(wrong, now: .now()) else {
            return XCTFail("a wrong password must be hashed")
        }
        XCTAssertEqual(failing(), .failure(.wrongPassword))
    }
}
