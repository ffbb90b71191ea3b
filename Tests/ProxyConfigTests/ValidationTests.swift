import XCTest
@testable import ProxyConfig

/// Each validation rule: the problem names the exact key and says how to fix it.
final class ValidationTests: XCTestCase {
    // MARK: - Unknown keys

    func testUnknownKey_CloseToKnown_SuggestsIt() {
        let message = onlyProblem(
            "http.max_request_body_sise", in: Fixture.minimal(plus: "http: { max_request_body_sise: 1MiB }"))
        assertContains(message, "unknown key", "did you mean `max_request_body_size`?")
    }

    func testUnknownKey_CamelCase_SuggestsSnakeCase() {
        let message = onlyProblem(
            "http.maxRequestBodySize", in: Fixture.minimal(plus: "http: { maxRequestBodySize: 1MiB }"))
        assertContains(message, "did you mean `max_request_body_size`?")
    }

    func testUnknownKey_TopLevelTypo_SuggestsSection() {
        let message = onlyProblem("upstreams", in: Fixture.minimal(plus: "upstreams: {}"))
        assertContains(message, "did you mean `upstream`?")
    }

    func testUnknownKey_Nested_NamesFullDottedKey() {
        let yaml = """
            tls: { cert_file: a, key_file: b }
            auth: { bearer: { tokens_file: t, token_file: u } }
            """
        let message = onlyProblem("auth.bearer.token_file", in: yaml)
        assertContains(message, "did you mean `tokens_file`?")
    }

    func testUnknownKey_NothingClose_ListsAllowedKeys() {
        let message = onlyProblem("grpc.compression", in: Fixture.minimal(plus: "grpc: { compression: gzip }"))
        assertContains(message, "unknown key", "endpoint, max_recv_msg_size")
    }

    func testUnknownKey_BelongsInAnotherSection_SaysWhere() {
        let message = onlyProblem(
            "unsafe_allow_remote_upstream", in: Fixture.minimal(plus: "unsafe_allow_remote_upstream: true"))
        assertContains(message, "belongs under `upstream`", "upstream.unsafe_allow_remote_upstream")
    }

    func testUnknownKey_TopLevelTypo_Refused() {
        // Every top-level section is known now; an unknown one is still refused.
        guard let error = refuse(Fixture.minimal(plus: "reloads: {}")) else { return }
        XCTAssertEqual(error.problems.map(\.key), ["reloads"])
        for problem in error.problems { assertContains(problem.message, "unknown key") }
    }

    func testUnknownKey_ValueNeverShown() {
        let yaml = """
            tls: { cert_file: a, key_file: b }
            auth: { bearer: { tokens_file: t, token: s3cr3t-t0ken-value } }
            """
        guard let error = refuse(yaml) else { return }
        XCTAssertEqual(error.problems.map(\.key), ["auth.bearer.token"])
        XCTAssertFalse(error.description.contains("s3cr3t"), error.description)
    }

    // MARK: - Wrong types

    func testWrongType_ListWhereMappingExpected_NamesSectionAndType() {
        let message = onlyProblem("grpc", in: Fixture.minimal(plus: "grpc: [\"0.0.0.0:4317\"]"))
        assertContains(message, "must be a mapping", "found a list")
    }

    func testWrongType_StringWhereNumberExpected_NamesKeyAndType() {
        let message = onlyProblem("http.max_header_count", in: Fixture.minimal(plus: "http: { max_header_count: lots }"))
        assertContains(message, "must be a whole number", "found the string \"lots\"")
    }

    func testWrongType_QuotedNumber_SaysRemoveQuotes() {
        let message = onlyProblem("http.max_header_count", in: Fixture.minimal(plus: "http: { max_header_count: \"100\" }"))
        assertContains(message, "must be a whole number", "remove the quotes")
    }

    func testWrongType_QuotedBoolean_SaysRemoveQuotes() {
        let message = onlyProblem(
            "auth.forward_authorization",
            in: """
                tls: { cert_file: a, key_file: b }
                auth: { bearer: { tokens_file: t }, forward_authorization: "true" }
                """)
        assertContains(message, "must be true or false", "remove the quotes")
    }

    func testWrongType_MappingWhereEndpointExpected() {
        let message = onlyProblem(
            "upstream.http", in: Fixture.minimal(plus: "upstream: { http: { host: 127.0.0.1, port: 14318 } }"))
        assertContains(message, "must be a \"host:port\" string", "found a mapping")
    }

    func testNullValue_OnKeyWithDefault_SaysSetOrRemove() {
        let message = onlyProblem("http.idle_timeout", in: Fixture.minimal(plus: "http:\n  idle_timeout:\n"))
        assertContains(message, "has no value", "remove the key")
    }

    // MARK: - Sizes and durations in context

    func testSize_BadUnit_ListsUnits() {
        let message = onlyProblem("grpc.max_recv_msg_size", in: Fixture.minimal(plus: "grpc: { max_recv_msg_size: 4MiBs }"))
        assertContains(message, "unknown unit", "KiB, MiB, GiB", "KB, MB, GB")
    }

    func testSize_Zero_MustBePositive() {
        let message = onlyProblem("http.max_request_body_size", in: Fixture.minimal(plus: "http: { max_request_body_size: 0 }"))
        assertContains(message, "greater than 0")
    }

    func testSize_IntegerBytes_Accepted() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal(plus: "http: { max_header_bytes: 16384 }")))
        XCTAssertEqual(configuration.http.maxHeaderBytes, 16384)
    }

    func testDuration_Negative_MustBePositive() {
        let message = onlyProblem("upstream.timeout", in: Fixture.minimal(plus: "upstream: { timeout: -5s }"))
        assertContains(message, "greater than 0")
    }

    func testDuration_PlainNumber_IsSeconds() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal(plus: "upstream: { timeout: 45, connect_timeout: 0.25 }")))
        XCTAssertEqual(configuration.upstream.timeout, .seconds(45))
        XCTAssertEqual(configuration.upstream.connectTimeout, .milliseconds(250))
    }

    func testDuration_UnknownUnit_ListsUnits() {
        let message = onlyProblem("http.idle_timeout", in: Fixture.minimal(plus: "http: { idle_timeout: 5 days }"))
        assertContains(message, "unknown unit \"days\"", "ms, s, m, h")
    }

    func testCounts_Bounds() {
        assertContains(
            onlyProblem("http.max_header_count", in: Fixture.minimal(plus: "http: { max_header_count: 0 }")),
            "at least 1")
        assertContains(
            onlyProblem("upstream.max_idle_connections", in: Fixture.minimal(plus: "upstream: { max_idle_connections: -1 }")),
            "0 or more")
    }

    // MARK: - Endpoints

    func testEndpoint_Unparsable_ShowsExample() {
        let message = onlyProblem("grpc.endpoint", in: Fixture.minimal(plus: "grpc: { endpoint: \"not an endpoint\" }"))
        assertContains(message, "host:port", "0.0.0.0:4317")
    }

    func testEndpoint_WithScheme_SaysDropScheme() {
        let message = onlyProblem("upstream.http", in: Fixture.minimal(plus: "upstream: { http: \"http://127.0.0.1:14318\" }"))
        assertContains(message, "drop the scheme", "127.0.0.1:14318")
    }

    func testEndpoint_BarePort_SuggestsColonForm() {
        let message = onlyProblem("http.endpoint", in: Fixture.minimal(plus: "http: { endpoint: 4318 }"))
        assertContains(message, "\":4318\"")
    }

    func testEndpoint_PortOutOfRange_SaysRange() {
        let message = onlyProblem("http.endpoint", in: Fixture.minimal(plus: "http: { endpoint: \"0.0.0.0:70000\" }"))
        assertContains(message, "port 70000 is out of range", "65535")
    }

    func testEndpoint_UnbracketedIPv6_SaysUseBrackets() {
        let message = onlyProblem("grpc.endpoint", in: Fixture.minimal(plus: "grpc: { endpoint: \"::1:4317\" }"))
        assertContains(message, "brackets", "[::1]:4317")
    }

    func testEndpoints_IPv6Listeners_Accepted() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal(plus: """
            grpc: { endpoint: "[::]:4317" }
            http: { endpoint: "[::1]:4318" }
            upstream: { grpc: "[::1]:14317", http: "[::1]:14318" }
            """)))
        XCTAssertEqual(configuration.grpc.endpoint.host, "::")
        XCTAssertEqual(configuration.http.endpoint.description, "[::1]:4318")
        XCTAssertEqual(configuration.upstream.http, Endpoint(host: "::1", port: 14318))
    }

    func testEndpoints_SameListenerAddress_Refused() {
        let message = onlyProblem(
            "http.endpoint", in: Fixture.minimal(plus: "grpc: { endpoint: \":4317\" }\nhttp: { endpoint: \":4317\" }"))
        assertContains(message, "grpc.endpoint", "different ports")
    }

    func testEndpoints_WildcardAndSpecificOnSamePort_Refused() {
        onlyProblem(
            "http.endpoint",
            in: Fixture.minimal(plus: "grpc: { endpoint: \"0.0.0.0:9000\" }\nhttp: { endpoint: \"127.0.0.1:9000\" }"))
    }

    func testEndpoints_BothPortZero_Accepted() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal(plus: """
            grpc: { endpoint: "127.0.0.1:0" }
            http: { endpoint: "127.0.0.1:0" }
            """)))
        XCTAssertEqual(configuration.grpc.endpoint.port, 0)
        XCTAssertEqual(configuration.http.endpoint.port, 0)
    }

    // MARK: - TLS

    func testTLS_Missing_BothFilesRequiredWithExample() {
        guard let error = refuse("auth: { bearer: { tokens_file: t } }") else { return }
        XCTAssertEqual(error.problems.map(\.key), ["tls.cert_file", "tls.key_file"])
        XCTAssertEqual(
            error.problems[0].message,
            "required: the PEM certificate chain the proxy presents, e.g. cert_file: /etc/otlp-auth-proxy/tls/server.crt")
        assertContains(error.problems[1].message, "required", "key_file: /etc/otlp-auth-proxy/tls/server.key")
    }

    func testTLS_EmptyStringPath_IsRequired() {
        let message = onlyProblem(
            "tls.key_file", in: "tls: { cert_file: a.crt, key_file: \"\" }\nauth: { bearer: { tokens_file: t } }")
        assertContains(message, "required")
    }

    func testTLS_FilesNotCheckedForExistence() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal))
        XCTAssertFalse(FileManager.default.fileExists(atPath: configuration.tls.certFile))
    }

    func testTLS_MinVersion_AcceptsStringsAndNumbers() throws {
        let cases: [(yaml: String, expected: String)] = [
            ("\"1.2\"", "1.2"), ("\"1.3\"", "1.3"), ("1.2", "1.2"), ("1.3", "1.3"), ("1.30", "1.3"),
        ]
        for (value, expected) in cases {
            let yaml = "tls: { cert_file: a, key_file: b, min_version: \(value) }\nauth: { bearer: { tokens_file: t } }"
            let configuration = try XCTUnwrap(parse(yaml), value)
            XCTAssertEqual(configuration.tls.minVersion, expected, value)
        }
    }

    func testTLS_MinVersion_OtherValuesRefused() {
        for value in ["\"1.1\"", "1.0", "\"TLSv1.3\"", "1", "\"\""] {
            let yaml = "tls: { cert_file: a, key_file: b, min_version: \(value) }\nauth: { bearer: { tokens_file: t } }"
            let message = onlyProblem("tls.min_version", in: yaml)
            assertContains(message, "\"1.2\"", "\"1.3\"")
        }
    }

    // MARK: - Upstream

    func testUpstream_Remote_RefusedNamingUnsafeKey() {
        let message = onlyProblem("upstream.http", in: Fixture.minimal(plus: "upstream: { http: \"10.1.2.3:4318\" }"))
        assertContains(message, "10.1.2.3:4318", "not a loopback", "plaintext", "leave the host",
                       "unsafe_allow_remote_upstream: true")
    }

    func testUpstream_RemoteHostName_Refused() {
        let message = onlyProblem("upstream.grpc", in: Fixture.minimal(plus: "upstream: { grpc: \"receiver.internal:4317\" }"))
        assertContains(message, "plaintext")
    }

    func testUpstream_RemoteWithUnsafeKey_Accepted() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal(plus: """
            upstream: { grpc: "10.1.2.3:4317", http: "10.1.2.3:4318", unsafe_allow_remote_upstream: true }
            """)))
        XCTAssertTrue(configuration.upstream.unsafeAllowRemoteUpstream)
        XCTAssertEqual(configuration.upstream.http, Endpoint(host: "10.1.2.3", port: 4318))
    }

    func testUpstream_LoopbackForms_Accepted() throws {
        for host in ["127.0.0.1", "127.9.8.7", "localhost", "[::1]"] {
            let yaml = Fixture.minimal(plus: "upstream: { http: \"\(host):14318\" }")
            XCTAssertNotNil(parse(yaml), host)
        }
    }

    func testUpstream_PointsAtOwnListener_RefusedAsLoop() {
        let message = onlyProblem("upstream.http", in: Fixture.minimal(plus: "upstream: { http: \"127.0.0.1:4318\" }"))
        assertContains(message, "http.endpoint", "loop", "14318")
    }

    func testUpstream_PortZero_Refused() {
        let message = onlyProblem("upstream.grpc", in: Fixture.minimal(plus: "upstream: { grpc: \"127.0.0.1:0\" }"))
        assertContains(message, "port 0")
    }

    // MARK: - Auth

    func testAuth_Missing_AtLeastOneMethodRequired() {
        let message = onlyProblem("auth", in: "tls: { cert_file: a, key_file: b }")
        assertContains(message, "required", "at least one authentication method", "tokens_file:", "basic", "jwt", "mtls")
    }

    func testAuth_BearerWithoutTokensFile_TokensFileRequired() {
        let message = onlyProblem(
            "auth.bearer.tokens_file", in: "tls: { cert_file: a, key_file: b }\nauth: { bearer: {} }")
        assertContains(message, "required")
    }

    func testAuth_SectionWrongType_ReportsSectionOnly() {
        let message = onlyProblem("auth", in: "tls: { cert_file: a, key_file: b }\nauth: bearer")
        assertContains(message, "must be a mapping")
    }

    // MARK: - Tenant header

    func testTenantHeader_Invalid_Refused() {
        let cases: [(header: String, hint: String)] = [
            ("\"X Scope\"", "not a valid HTTP header name"),
            ("\"X-Scope:OrgID\"", "not a valid HTTP header name"),
            ("\"\"", "must not be empty"),
            ("\":authority\"", "pseudo-header"),
            ("Connection", "hop-by-hop"),
            ("Transfer-Encoding", "hop-by-hop"),
            ("keep-alive", "hop-by-hop"),
            ("Expect", "hop-by-hop"),
            ("HTTP2-Settings", "hop-by-hop"),
            ("Proxy-Authorization", "hop-by-hop"),
            ("Authorization", "header of its own"),
            ("host", "header of its own"),
            ("Content-Length", "header of its own"),
        ]
        for (header, hint) in cases {
            let message = onlyProblem("tenant.header", in: Fixture.minimal(plus: "tenant: { header: \(header) }"))
            assertContains(message, hint, "X-Scope-OrgID")
        }
    }

    func testTenantHeader_EveryHopByHopName_Refused() {
        for name in HopByHopFields.names.sorted() {
            let message = onlyProblem("tenant.header", in: Fixture.minimal(plus: "tenant: { header: \(name) }"))
            assertContains(message, "hop-by-hop")
        }
    }

    func testTenantHeader_CustomToken_KeptAsWritten() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal(plus: "tenant: { header: X-Tenant_ID.v2 }")))
        XCTAssertEqual(configuration.tenant.header, "X-Tenant_ID.v2")
    }

    // MARK: - Log level

    func testLogLevel_AnyCase_StoredLowerCase() throws {
        let configuration = try XCTUnwrap(parse(Fixture.minimal(plus: "log: { level: WARNING }")))
        XCTAssertEqual(configuration.log.level, "warning")
    }

    func testLogLevel_Unknown_ListsLevels() {
        let message = onlyProblem("log.level", in: Fixture.minimal(plus: "log: { level: verbose }"))
        assertContains(message, "\"verbose\"", "trace, debug, info, notice, warning, error, critical")
    }

    // MARK: - One pass

    func testSeveralProblems_AllReportedInOneError() {
        let yaml = """
            grpc: { endpoint: "nowhere", max_recv_msg_size: 4 parsecs }
            http: { max_request_body_sise: 1MiB }
            tls: { key_file: server.key, min_version: "1.0" }
            upstream: { http: "192.168.1.10:4318" }
            auth: { bearer: { tokens_file: tokens.yaml } }
            tenant: { header: "bad header" }
            log: { level: loud }
            """
        guard let error = refuse(yaml) else { return }
        XCTAssertEqual(error.problems.map(\.key), [
            "grpc.endpoint", "grpc.max_recv_msg_size", "http.max_request_body_sise", "tls.cert_file",
            "tls.min_version", "tenant.header", "log.level", "upstream.http",
        ])
        XCTAssertEqual(error.source, "config")
        XCTAssertTrue(error.description.hasPrefix("config: 8 problems:\n  - grpc.endpoint: "), error.description)
        XCTAssertEqual(error.description.components(separatedBy: "\n  - ").count, 9)
    }

    func testDescription_SingleProblem_Format() {
        let error = ConfigurationError(source: "proxy.yaml", problems: [.init(key: "log.level", message: "bad")])
        XCTAssertEqual(error.description, "proxy.yaml: 1 problem:\n  - log.level: bad")
        XCTAssertEqual(error.problems[0].description, "log.level: bad")
    }
}

extension ValidationTests {
    func testEndpoint_UnquotedIPv6_SaysQuoteIt() {
        let block = onlyProblem("(file)", in: Fixture.minimal(plus: "http:\n  endpoint: [::1]:4318\n"))
        assertContains(block, "line 8", "quote IPv6 endpoints", "\"[::1]:4318\"")
        let flow = onlyProblem("(file)", in: Fixture.minimal(plus: "http: { endpoint: [::1]:4318 }"))
        assertContains(flow, "line 7", "quote IPv6 endpoints")
        let list = onlyProblem("http.endpoint", in: Fixture.minimal(plus: "http: { endpoint: [\"::1\", 4318] }"))
        assertContains(list, "found a list", "quote IPv6 endpoints")
    }

    func testRequiredPath_WrongType_ReportsTypeNotRequired() {
        let message = onlyProblem(
            "tls.cert_file", in: "tls: { cert_file: [a, b], key_file: k }\nauth: { bearer: { tokens_file: t } }")
        assertContains(message, "must be a file path", "found a list", "cert_file: /etc/otlp-auth-proxy/tls/server.crt")
    }
}
