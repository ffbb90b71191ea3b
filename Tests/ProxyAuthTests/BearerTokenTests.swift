import Foundation
@testable import ProxyAuth
import XCTest

final class BearerTokenTests: XCTestCase {
    static let plainToken = "0123456789abcdef0123456789abcdef"

    static let tokensFile = """
        tokens:
          - principal: ci-runner
            tenant: team-a
            token: "\(plainToken)"
        """

    func table(_ yaml: String) throws -> BearerTokenTable {
        try BearerTokenTable.parse(yaml: yaml, file: "tokens.yaml")
    }

    func problems(_ yaml: String) -> [String] {
        do {
            _ = try table(yaml)
            return []
        } catch {
            return error.problems
        }
    }

    func testAuthenticate_PlainToken_GivesPrincipalAndTenant() throws {
        let authenticator = Authenticator.make(bearer: try table(Self.tokensFile))
        let result = authenticator.authenticate(authorization: ["Bearer \(Self.plainToken)"])
        XCTAssertEqual(try result.get(), AuthDecision(principal: Principal(name: "token:ci-runner", method: .bearer), tenant: "team-a"))
    }

    func testAuthenticate_SchemeIsCaseInsensitive() throws {
        let authenticator = Authenticator.make(bearer: try table(Self.tokensFile))
        for scheme in ["bearer", "BEARER", "BeArEr"] {
            XCTAssertEqual(try authenticator.authenticate(authorization: ["\(scheme) \(Self.plainToken)"]).get().tenant, "team-a")
        }
    }

    func testAuthenticate_HashedEntry_MatchesTheToken() throws {
        let token = "hashed-token-value-0123456789"
        let hash = sha256Hex(token)
        let authenticator = Authenticator.make(bearer: try table("""
            tokens:
              - principal: hashed
                tenant: team-b
                sha256: "\(hash)"
            """))
        XCTAssertEqual(try authenticator.authenticate(authorization: ["Bearer \(token)"]).get().principal.name, "token:hashed")
        XCTAssertEqual(authenticator.authenticate(authorization: ["Bearer \(hash)"]), .failure(.unknownToken))
    }

    func testAuthenticate_Failures() throws {
        let authenticator = Authenticator.make(bearer: try table(Self.tokensFile))
        XCTAssertEqual(authenticator.authenticate(authorization: []), .failure(.missingCredential))
        XCTAssertEqual(
            authenticator.authenticate(authorization: ["Bearer \(Self.plainToken)", "Bearer \(Self.plainToken)"]),
            .failure(.multipleAuthorizationHeaders))
        XCTAssertEqual(authenticator.authenticate(authorization: ["Bearer wrong-token-0123456789"]), .failure(.unknownToken))
        // A prefix or an extension of a valid token is not that token.
        XCTAssertEqual(authenticator.authenticate(authorization: ["Bearer \(Self.plainToken.dropLast())"]), .failure(.unknownToken))
        XCTAssertEqual(authenticator.authenticate(authorization: ["Bearer \(Self.plainToken)x"]), .failure(.unknownToken))
        for malformed in ["Bearer", "Bearer ", "Bearer  \(Self.plainToken)", "Bearer \(Self.plainToken) ", "\(Self.plainToken)",
                          "Bearer a b", "Bearer =abc", "Bearer ab=c"] {
            XCTAssertEqual(authenticator.authenticate(authorization: [malformed]), .failure(.malformedAuthorization), malformed)
        }
        XCTAssertEqual(authenticator.authenticate(authorization: ["Basic dXNlcjpwYXNz"]), .failure(.unsupportedScheme))
        let basicOnly = Authenticator.make(basic: try HtpasswdFile.parse(HtpasswdTests.fixtureFile, file: "u"))
        XCTAssertEqual(basicOnly.authenticate(authorization: ["Bearer \(Self.plainToken)"]), .failure(.unsupportedScheme))
    }

    func testLoad_Problems_NameTheEntryAndKey_NeverTheToken() {
        let found = problems("""
            tokens:
              - principal: a
                tenant: team-a
                token: "short-secret"
              - principal: b
                tenant: "bad tenant"
                token: "\(Self.plainToken)"
              - tenant: team-c
                sha256: "nothex"
              - principal: d
                tenant: team-d
              - principal: e
                tenant: team-e
                token: "\(Self.plainToken)"
                colour: blue
            """)
        let text = found.joined(separator: "\n")
        XCTAssertTrue(text.contains("tokens[0].token: shorter than 16"), text)
        XCTAssertTrue(text.contains("tokens[1].tenant:"), text)
        XCTAssertTrue(text.contains("tokens[2].principal: required"), text)
        XCTAssertTrue(text.contains("tokens[2].sha256: expected 64 hex"), text)
        XCTAssertTrue(text.contains("tokens[3]: set `token`"), text)
        XCTAssertTrue(text.contains("tokens[4].colour: unknown key"), text)
        XCTAssertTrue(text.contains("tokens[4]: the same token as tokens[1]"), text)
        XCTAssertFalse(text.contains("short-secret"), "a token value leaked into a message")
        XCTAssertFalse(text.contains(Self.plainToken), "a token value leaked into a message")
    }

    func testLoad_Signals_ParsedAndChecked() throws {
        let loaded = try table("""
            tokens:
              - { principal: a, tenant: t, token: "\(Self.plainToken)", signals: [traces, logs] }
            """)
        XCTAssertEqual(loaded.entries.first?.signals, [.traces, .logs])
        XCTAssertNil(try table(Self.tokensFile).entries.first?.signals)
        for bad in ["[traces, profiles]", "[]", "traces"] {
            let found = problems("tokens:\n  - { principal: a, tenant: t, token: \"\(Self.plainToken)\", signals: \(bad) }")
            XCTAssertEqual(found.count, 1, bad)
            XCTAssertTrue(found.first?.contains("tokens[0].signals:") ?? false, "\(found)")
        }
    }

    func testLoad_MissingFile_NamesPath() {
        XCTAssertThrowsError(try BearerTokenTable.load(file: "/nonexistent/tokens.yaml")) { error in
            XCTAssertTrue("\(error)".contains("/nonexistent/tokens.yaml"), "\(error)")
        }
    }

    func testLoad_BadYAML_GivesLineNotContent() {
        let found = problems("tokens:\n  - principal: a\n    token: \"abc-secret-value-123456\n")
        XCTAssertEqual(found.count, 1)
        XCTAssertTrue(found[0].contains("line"), found[0])
        XCTAssertFalse(found[0].contains("abc-secret-value"), found[0])
    }

    /// Found by fuzz-tokens: a mapping key that is itself a map made Yams' `Any` construction
    /// force-unwrap nil and crash the process (the input below is the fuzzer's, unchanged).
    func testLoad_MapOrListAsKey_RefusedNamingLine_NoCrash() {
        let fuzzerInput = """
            tokens:
              - { principal: a, tenant: t, token: "fuzz-bearer-token-0123456789abcdef", signals: [traces, metrics, logs] }
              - { principal: a, tenant: t, token: "fuzz-bearer-to+en-1227189659abcdef" }
              - { principal: b, tenant: "bad tenant", token: short }
              - { principal: c, tenant: t, sha256: "zz", tsignals:th }:
            """
        let found = problems(fuzzerInput)
        XCTAssertEqual(found, ["line 5: a key is a map or a list; keys in this file are plain names"])
        for input in ["{a: 1}: x\n", "tokens:\n  - ? [principal]\n    : a\n", "? !!set {a, b}\n: x\n"] {
            XCTAssertEqual(problems(input).count, 1, input)
            XCTAssertTrue(problems(input)[0].contains("a key is a map or a list"), input)
        }
        // Plain keys, anchors and merge keys still load.
        let merged = """
            base: &base {tenant: team-a}
            tokens:
              - {<<: *base, principal: a, token: "\(Self.plainToken)"}
            """
        XCTAssertEqual(problems(merged), ["unknown key `base`: the file has one key, `tokens`"])
    }

    func testTenantID_Rules() {
        XCTAssertNil(TenantID.problem("team-a_1.prod"))
        XCTAssertNotNil(TenantID.problem(""))
        XCTAssertNotNil(TenantID.problem(".."))
        XCTAssertNotNil(TenantID.problem("a/b"))
        XCTAssertNotNil(TenantID.problem("a b"))
        XCTAssertNotNil(TenantID.problem(String(repeating: "a", count: 151)))
    }

    private func sha256Hex(_ text: String) -> String {
        // Independent of the code under test: the coreutils tool.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["sha256sum"]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try! process.run()
        input.fileHandleForWriting.write(Data(text.utf8))
        try! input.fileHandleForWriting.close()
        process.waitUntilExit()
        let line = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return String(line.prefix(64))
    }
}


private extension Error {
    var problems: [String] { (self as? AuthConfigurationError)?.problems ?? ["\(self)"] }
}
