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
        let profiler = try table("""
            tokens:
              - { principal: p, tenant: t, token: "\(Self.plainToken)", signals: [profiles] }
            """)
        XCTAssertEqual(profiler.entries.first?.signals, [.profiles])
        let unknown = problems("tokens:\n  - { principal: a, tenant: t, token: \"\(Self.plainToken)\", signals: [traces, events] }")
        XCTAssertTrue(unknown.first?.contains("traces, metrics, logs and profiles") ?? false, "\(unknown)")
        for bad in ["[traces, events]", "[]", "traces"] {
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
    /// force-unwrap nil and crash the process (the input below is the fuzzer's, unchanged). The YAML
    /// reader now refuses such keys itself, naming the line.
    func testLoad_MapOrListAsKey_RefusedNamingLine_NoCrash() {
        let fuzzerInput = """
            tokens:
              - { principal: a, tenant: t, token: "fuzz-bearer-token-0123456789abcdef", signals: [traces, metrics, logs] }
              - { principal: a, tenant: t, token: "fuzz-bearer-to+en-1227189659abcdef" }
              - { principal: b, tenant: "bad tenant", token: short }
              - { principal: c, tenant: t, sha256: "zz", tsignals:th }:
            """
        XCTAssertEqual(problems(fuzzerInput), [
            "not valid YAML: line 5, column 59: a key must be a plain or quoted value, found a flow mapping before this `:`",
        ])
        for (input, expected) in [
            ("{a: 1}: x\n", "line 1, column 7: a key must be a plain or quoted value"),
            ("tokens:\n  - ? [principal]\n    : a\n", "line 2, column 5: complex keys (`? `) are not supported"),
            ("? !!set {a, b}\n: x\n", "line 1, column 1: complex keys (`? `) are not supported"),
            ("tokens:\n  - [a]: x\n", "line 2, column 8: a key must be a plain or quoted value"),
        ] {
            let found = problems(input)
            XCTAssertEqual(found.count, 1, input)
            XCTAssertTrue(found.first?.hasPrefix("not valid YAML: " + expected) == true, "\(input): \(found)")
        }
    }

    /// Anchors, aliases and merge keys would let a small file expand into a huge one; they are refused
    /// where they appear, without echoing the values around them.
    func testLoad_AnchorsAliasesAndTags_RefusedNamingLine() {
        let merged = """
            base: &base {tenant: team-a}
            tokens:
              - {<<: *base, principal: a, token: "\(Self.plainToken)"}
            """
        XCTAssertEqual(problems(merged), ["not valid YAML: line 1, column 7: anchors (`&name`) are not supported; write the value out in full"])
        let alias = "tokens:\n  - principal: a\n    tenant: *t\n    token: \"\(Self.plainToken)\"\n"
        XCTAssertEqual(problems(alias), ["not valid YAML: line 3, column 13: aliases (`*name`) are not supported; write the value out in full"])
        let tagged = "tokens:\n  - principal: a\n    tenant: t\n    token: !!str \(Self.plainToken)\n"
        let found = problems(tagged)
        XCTAssertEqual(found.count, 1)
        XCTAssertTrue(found[0].hasPrefix("not valid YAML: line 4, column 12: tags"), found[0])
        XCTAssertFalse(found[0].contains(Self.plainToken), found[0])
    }

    /// Numbers, booleans and nulls are read as written: a token or tenant of digits keeps its spelling
    /// (YAML 1.1 would turn `0123` into 83), and a missing value is reported as missing.
    func testLoad_ScalarsKeepTheirSpelling() throws {
        let digits = "0123456701234567"
        let table = try BearerTokenTable.parse(
            yaml: "tokens:\n  - {principal: 007, tenant: 0123, token: \(digits)}\n", file: "tokens.yaml")
        XCTAssertEqual(table.entries.map(\.principal), ["007"])
        XCTAssertEqual(table.entries.map(\.tenant), ["0123"])
        XCTAssertNotNil(table.match(token: Array(digits.utf8)))
        XCTAssertEqual(problems("tokens:\n  - {principal: a, tenant: ~, token: \"\(Self.plainToken)\"}\n"),
                       ["tokens[0].tenant: required, the tenant this token writes to, such as `team-a`"])
    }

    /// The tokens files the docs show (README, docs/*.md) read with the proxy's YAML reader into the
    /// entries they describe; the only problems allowed are their `<placeholder>` hashes and tokens.
    func testDocumentedTokensFiles_ReadAsTheyAreShown() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let docs = try FileManager.default.contentsOfDirectory(atPath: root.path + "/docs")
            .filter { $0.hasSuffix(".md") }.map { "docs/" + $0 } + ["README.md"]
        var blocks = 0
        for file in docs {
            let text = try String(contentsOfFile: root.path + "/" + file, encoding: .utf8)
            for block in text.components(separatedBy: "```yaml\n").dropFirst() {
                // Code blocks inside list items are indented; drop the item's indentation.
                let lines = block.components(separatedBy: "```").first!.split(separator: "\n", omittingEmptySubsequences: false)
                let indent = lines.first.map { $0.prefix(while: { $0 == " " }).count } ?? 0
                let body = lines.map { String($0.dropFirst(min(indent, $0.prefix(while: { $0 == " " }).count))) }
                    .joined(separator: "\n")
                guard body.hasPrefix("tokens:") else { continue }
                blocks += 1
                do {
                    let table = try BearerTokenTable.parse(yaml: body, file: file)
                    XCTAssertFalse(table.entries.isEmpty, file)
                } catch {
                    XCTAssertFalse(error.problems.isEmpty, file)
                    for problem in error.problems {
                        XCTAssertTrue(problem.hasSuffix(".sha256: expected 64 hex characters (`printf %s TOKEN | sha256sum`)")
                            || problem.contains(".token: "), "\(file): \(problem)")
                    }
                }
            }
        }
        XCTAssertGreaterThanOrEqual(blocks, 2, "the docs show tokens files in configuration.md and deployment.md")
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
