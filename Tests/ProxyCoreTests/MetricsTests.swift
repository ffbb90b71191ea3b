import Foundation
import Logging
import NIOConcurrencyHelpers
import ProxyAuth
import ProxyTLS
import XCTest

@testable import ProxyCore
import ProxySystem

/// Collects log lines written to a sink, for assertions.
final class LineCollector: Sendable {
    private let box = NIOLockedValueBox<[String]>([])
    var lines: [String] { box.withLockedValue { $0 } }
    var sink: @Sendable (String) -> Void { { [box] line in box.withLockedValue { $0.append(line) } } }
}

/// Pulls one sample's value out of Prometheus text: `name{labels} value`, labels in any order.
func sample(_ exposition: String, _ name: String, _ labels: [String: String] = [:]) -> Double? {
    for line in exposition.split(separator: "\n") where !line.hasPrefix("#") {
        guard let space = line.lastIndex(of: " ") else { continue }
        let series = line[..<space]
        let value = Double(line[line.index(after: space)...])
        let seriesName: Substring
        var seriesLabels: [String: String] = [:]
        if let brace = series.firstIndex(of: "{") {
            seriesName = series[..<brace]
            let inner = series[series.index(after: brace)..<series.index(before: series.endIndex)]
            for pair in inner.split(separator: ",") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard parts.count == 2 else { continue }
                seriesLabels[String(parts[0])] = String(parts[1].dropFirst().dropLast())
            }
        } else {
            seriesName = series
        }
        if seriesName == name && seriesLabels == labels { return value }
    }
    return nil
}

final class MetricsTests: XCTestCase {
    private func record(
        outcome: String = "forwarded", tenant: String? = "team-a", signal: String = "traces", transport: String = "grpc",
        bytesIn: Int = 120
    ) -> RequestRecord {
        RequestRecord(
            time: WallTime(secondsSince1970: 1_700_000_000.25), transport: transport, signal: signal, tenant: tenant,
            principal: "token:ci-runner", status: 200, grpcStatus: 0, authResult: "ok", outcome: outcome,
            bytesIn: bytesIn, bytesOut: 5, duration: .milliseconds(30), peer: "127.0.0.1:50000")
    }

    func testRequestFinished_CountsBySignalTransportTenantOutcome() {
        let metrics = ProxyMetrics()
        metrics.requestFinished(record())
        metrics.requestFinished(record())
        metrics.requestFinished(record(outcome: "refused", tenant: nil))
        let text = metrics.exposition()
        XCTAssertEqual(
            sample(text, "otlp_auth_proxy_requests_total",
                   ["signal": "traces", "transport": "grpc", "tenant": "team-a", "outcome": "forwarded"]), 2)
        XCTAssertEqual(
            sample(text, "otlp_auth_proxy_requests_total",
                   ["signal": "traces", "transport": "grpc", "tenant": "", "outcome": "refused"]), 1)
        XCTAssertEqual(
            sample(text, "otlp_auth_proxy_received_bytes_total", ["signal": "traces", "transport": "grpc", "tenant": "team-a"]), 240)
        XCTAssertEqual(
            sample(text, "otlp_auth_proxy_received_bytes_total", ["signal": "traces", "transport": "grpc", "tenant": ""]), 120)
        XCTAssertEqual(sample(text, "otlp_auth_proxy_sent_bytes_total", ["signal": "traces", "transport": "grpc"]), 15)
        XCTAssertEqual(
            sample(text, "otlp_auth_proxy_request_duration_seconds_count", ["signal": "traces", "transport": "grpc"]), 3)
        // 30 ms lands in the 50 ms bucket but not the 25 ms one.
        XCTAssertEqual(
            sample(text, "otlp_auth_proxy_request_duration_seconds_bucket",
                   ["signal": "traces", "transport": "grpc", "le": "0.05"]), 3)
        XCTAssertEqual(
            sample(text, "otlp_auth_proxy_request_duration_seconds_bucket",
                   ["signal": "traces", "transport": "grpc", "le": "0.025"]), 0)
    }

    func testReceivedBytes_PerTenantAndSignal_WhateverTheOutcome() {
        let metrics = ProxyMetrics()
        metrics.requestFinished(record(tenant: "team-a", signal: "profiles", bytesIn: 1000))
        metrics.requestFinished(record(outcome: "limited", tenant: "team-a", signal: "profiles", bytesIn: 24))
        metrics.requestFinished(record(tenant: "team-b", signal: "profiles", bytesIn: 7))
        metrics.requestFinished(record(tenant: "team-a", signal: "logs", transport: "http/1.1", bytesIn: 300))
        metrics.requestFinished(record(outcome: "refused", tenant: nil, signal: "profiles", bytesIn: 50))
        // A tenant whose requests had no body gets a series at zero, like its requests_total.
        metrics.requestFinished(record(tenant: "team-c", signal: "traces", bytesIn: 0))
        let text = metrics.exposition()
        let received = { (tenant: String, signal: String, transport: String) in
            sample(text, "otlp_auth_proxy_received_bytes_total", ["signal": signal, "transport": transport, "tenant": tenant])
        }
        XCTAssertEqual(received("team-a", "profiles", "grpc"), 1024, "every outcome of a tenant counts, the two requests added")
        XCTAssertEqual(received("team-b", "profiles", "grpc"), 7)
        XCTAssertEqual(received("team-a", "logs", "http/1.1"), 300)
        XCTAssertEqual(received("", "profiles", "grpc"), 50, "bytes of requests not authenticated carry no tenant")
        XCTAssertEqual(received("team-c", "traces", "grpc"), 0)
        XCTAssertEqual(
            sample(text, "otlp_auth_proxy_requests_total",
                   ["signal": "profiles", "transport": "grpc", "tenant": "team-a", "outcome": "limited"]), 1)
        XCTAssertNil(
            sample(text, "otlp_auth_proxy_received_bytes_total", ["signal": "profiles", "transport": "grpc"]),
            "no series without the tenant label")
    }

    func testItems_CountedForForwardedPayloadsOnly_PerTenantAndSignal() {
        let metrics = ProxyMetrics()
        XCTAssertNil(
            sample(metrics.exposition(), "otlp_auth_proxy_items_total", ["signal": "traces", "transport": "grpc", "tenant": "team-a"]),
            "no usage series before a payload was read")
        func read(_ outcome: String, tenant: String, signal: String = "traces", items: Int, decoded: Int) -> RequestRecord {
            var made = record(outcome: outcome, tenant: tenant, signal: signal)
            made.items = items
            made.bytesDecoded = decoded
            return made
        }
        metrics.requestFinished(read("forwarded", tenant: "team-a", items: 12, decoded: 4000))
        metrics.requestFinished(read("forwarded", tenant: "team-a", items: 3, decoded: 900))
        metrics.requestFinished(read("upstream_error", tenant: "team-a", items: 50, decoded: 9999))
        metrics.requestFinished(read("forwarded", tenant: "team-b", signal: "logs", items: 7, decoded: 70))
        metrics.requestFinished(record(tenant: "team-c"))
        let text = metrics.exposition()
        let usage = { (name: String, tenant: String, signal: String) in
            sample(text, "otlp_auth_proxy_\(name)", ["signal": signal, "transport": "grpc", "tenant": tenant])
        }
        XCTAssertEqual(usage("items_total", "team-a", "traces"), 15, "the request that failed upstream is retried, so not counted")
        XCTAssertEqual(usage("decoded_bytes_total", "team-a", "traces"), 4900)
        XCTAssertEqual(usage("items_total", "team-b", "logs"), 7)
        XCTAssertNil(usage("items_total", "team-c", "traces"), "a request whose payload was not read has no items")
    }

    func testReloads_CountedByResult_LastSuccessTime() {
        let metrics = ProxyMetrics()
        XCTAssertEqual(sample(metrics.exposition(), "otlp_auth_proxy_reloads_total", ["result": "failure"]), 0)
        metrics.reloaded(success: false, at: WallTime(secondsSince1970: 10))
        metrics.reloaded(success: true, at: WallTime(secondsSince1970: 2_000_000_000))
        let text = metrics.exposition()
        XCTAssertEqual(sample(text, "otlp_auth_proxy_reloads_total", ["result": "failure"]), 1)
        XCTAssertEqual(sample(text, "otlp_auth_proxy_reloads_total", ["result": "success"]), 1)
        XCTAssertEqual(sample(text, "otlp_auth_proxy_last_reload_success_timestamp_seconds"), 2_000_000_000)
    }

    func testConnectionsEnded_ByReason_EveryReasonPresentFromTheStart() {
        let metrics = ProxyMetrics()
        for reason in ["certificate_revoked", "certificate_expired", "certificate_untrusted", "principal_removed"] {
            XCTAssertEqual(sample(metrics.exposition(), "otlp_auth_proxy_connections_ended_total", ["reason": reason]), 0)
        }
        metrics.connectionEnded(reason: "certificate_revoked")
        metrics.connectionEnded(reason: "certificate_revoked")
        metrics.connectionEnded(reason: "certificate_expired")
        let text = metrics.exposition()
        XCTAssertEqual(sample(text, "otlp_auth_proxy_connections_ended_total", ["reason": "certificate_revoked"]), 2)
        XCTAssertEqual(sample(text, "otlp_auth_proxy_connections_ended_total", ["reason": "certificate_expired"]), 1)
        XCTAssertEqual(sample(text, "otlp_auth_proxy_connections_ended_total", ["reason": "principal_removed"]), 0)
    }

    func testCertificatesLoaded_ReplacesTheSet() {
        let metrics = ProxyMetrics()
        metrics.certificatesLoaded([("server", WallTime(secondsSince1970: 100)), ("client_ca:old", WallTime(secondsSince1970: 200))])
        metrics.certificatesLoaded([("server", WallTime(secondsSince1970: 300))])
        let text = metrics.exposition()
        XCTAssertEqual(sample(text, "otlp_auth_proxy_certificate_not_after_timestamp_seconds", ["certificate": "server"]), 300)
        XCTAssertNil(sample(text, "otlp_auth_proxy_certificate_not_after_timestamp_seconds", ["certificate": "client_ca:old"]))
    }

    func testConnectionsStreamsAndFailures_GaugesAndCounters() {
        let metrics = ProxyMetrics()
        metrics.connectionOpened(listener: "grpc")
        metrics.connectionOpened(listener: "grpc")
        metrics.connectionClosed(listener: "grpc")
        metrics.streamOpened()
        metrics.tlsHandshakeFailed(reason: "client_certificate")
        metrics.upstreamError(kind: "connect")
        metrics.authFailed(method: "bearer", reason: "unknown_token")
        let text = metrics.exposition()
        XCTAssertEqual(sample(text, "otlp_auth_proxy_open_connections", ["listener": "grpc"]), 1)
        XCTAssertEqual(sample(text, "otlp_auth_proxy_connections_accepted_total", ["listener": "grpc"]), 2)
        XCTAssertEqual(sample(text, "otlp_auth_proxy_open_streams"), 1)
        XCTAssertEqual(sample(text, "otlp_auth_proxy_tls_handshake_failures_total", ["reason": "client_certificate"]), 1)
        XCTAssertEqual(sample(text, "otlp_auth_proxy_upstream_errors_total", ["kind": "connect"]), 1)
        XCTAssertEqual(sample(text, "otlp_auth_proxy_auth_failures_total", ["method": "bearer", "reason": "unknown_token"]), 1)
    }

    func testRequestFinished_WritesOneAccessLogLine_UntilTurnedOff() {
        let lines = LineCollector()
        let metrics = ProxyMetrics(accessLog: AccessLog(format: .json, sink: lines.sink))
        metrics.requestFinished(record())
        XCTAssertEqual(lines.lines.count, 1)
        metrics.setAccessLog(nil)
        metrics.requestFinished(record())
        XCTAssertEqual(lines.lines.count, 1)
    }

    func testReplyCause_OutcomeLabels() {
        XCTAssertEqual(ReplyCause.upstreamTimeout.outcome.label, "upstream_error")
        XCTAssertEqual(ReplyCause.upstreamUnavailable(.connect).outcome.label, "upstream_error")
        XCTAssertEqual(ReplyCause.authenticationFailed(.unknownToken).outcome.label, "refused")
        XCTAssertEqual(ReplyCause.rateLimited(retryAfter: .seconds(1)).outcome.label, "limited")
        XCTAssertEqual(ReplyCause.shed.outcome.label, "shed")
    }

    func testAuthFailureMethodLabel_ByCredentialKind() {
        XCTAssertEqual(AuthFailure.unknownToken.methodLabel, "bearer")
        XCTAssertEqual(AuthFailure.wrongPassword.methodLabel, "basic")
        XCTAssertEqual(AuthFailure.missingCredential.methodLabel, "none")
        XCTAssertEqual(AuthFailure.tenantNotAllowed.methodLabel, "policy")
        XCTAssertEqual(AuthFailure.certificateIdentityMissing.methodLabel, "mtls")
    }
}

final class AccessLogTests: XCTestCase {
    private let record = RequestRecord(
        time: WallTime(secondsSince1970: 1_700_000_000.25), transport: "http/1.1", signal: "logs", tenant: "team \"a\"",
        principal: "user:alice\nforged=1", status: 401, authResult: "failure", authReason: "wrong_password",
        outcome: "refused", bytesIn: 10, bytesOut: 42, duration: .microseconds(1500), peer: "[::1]:4000")

    func testJSON_ParsesWithEveryField() throws {
        let line = AccessLog.line(record, format: .json)
        XCTAssertFalse(line.contains("\n"))
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        XCTAssertEqual(object["time"] as? String, "2023-11-14T22:13:20.250Z")
        XCTAssertEqual(object["tenant"] as? String, "team \"a\"")
        XCTAssertEqual(object["principal"] as? String, "user:alice\nforged=1")
        XCTAssertEqual(object["status"] as? Int, 401)
        XCTAssertEqual(object["auth_result"] as? String, "failure")
        XCTAssertEqual(object["auth_reason"] as? String, "wrong_password")
        XCTAssertEqual(object["bytes_out"] as? Int, 42)
        XCTAssertEqual(object["duration_ms"] as? Double, 1.5)
        XCTAssertEqual(object["peer"] as? String, "[::1]:4000")
        XCTAssertNil(object["grpc_status"], "absent facts are left out")
    }

    func testLogfmt_QuotesAndEscapes_StaysOneLine() {
        let line = AccessLog.line(record, format: .logfmt)
        XCTAssertFalse(line.contains("\n"))
        XCTAssertTrue(line.hasPrefix("time=2023-11-14T22:13:20.250Z msg=request transport=http/1.1 signal=logs "), line)
        XCTAssertTrue(line.contains(#"tenant="team \"a\"""#), line)
        XCTAssertTrue(line.contains(#"principal="user:alice\nforged=1""#), line)
        XCTAssertTrue(line.contains(" status=401 "), line)
        XCTAssertFalse(line.contains(" forged=1"), "a value cannot inject a field")
    }

    func testEncoder_SameLineAsTheGeneralRenderer_ForAwkwardValues() {
        let awkward = [
            "plain", "", "with space", "quote\"and\\backslash", "line\nbreak\r\ttab", "ctl\u{01}\u{1F}\u{7F}",
            "unicode é ☃ 𝄞", "separators \u{2028}\u{2029}", "a=b", "ünïcödé=\"x\"",
        ]
        let durations: [Duration] = [.zero, .microseconds(1), .microseconds(1500), .milliseconds(2), .nanoseconds(1_001_486_400),
                                     .seconds(3600), .nanoseconds(999_999_999)]
        let times = [0, 1_700_000_000.25, 951_782_400.999, 4_102_444_800.5, 1_709_164_800.001]
        for (index, text) in awkward.enumerated() {
            var sample = record
            sample.tenant = text
            sample.principal = text.isEmpty ? nil : "user:" + text
            sample.peer = text
            sample.grpcStatus = index % 2 == 0 ? nil : index
            sample.duration = durations[index % durations.count]
            sample.time = WallTime(secondsSince1970: times[index % times.count])
            for format in [AccessLog.Format.json, .logfmt] {
                XCTAssertEqual(
                    AccessLog.line(sample, format: format), AccessLog.renderedLine(sample, format: format),
                    "\(format) \(text.debugDescription)")
            }
        }
    }

    func testEncoder_SameLineAsTheGeneralRenderer_WhereverTheAwkwardByteSits() {
        // The encoder skips eight plain bytes at a time: an awkward character at every offset, in values
        // longer and shorter than a word, must still be escaped as the general renderer does it.
        let specials = ["\"", "\\", "\n", "\u{01}", "\u{7F}", "é", "\u{2028}", "☃"]
        for special in specials {
            for length in [0, 1, 7, 8, 9, 15, 16, 17, 31] {
                for offset in 0...length {
                    let plain = String(repeating: "a", count: length)
                    let text = String(plain.prefix(offset)) + special + String(plain.dropFirst(offset))
                    var sample = record
                    sample.tenant = text
                    sample.peer = plain
                    XCTAssertEqual(
                        AccessLog.line(sample, format: .json), AccessLog.renderedLine(sample, format: .json),
                        "\(special.debugDescription) at \(offset) of \(length)")
                }
            }
        }
    }

    func testStructuredLogHandler_JSONWithMetadata() throws {
        let lines = LineCollector()
        let handler = StructuredLogHandler(label: "proxy", level: .info, format: .json, sink: lines.sink)
        var logger = Logger(label: "proxy", factory: { _ in handler })
        logger[metadataKey: "listener"] = "grpc"
        logger.debug("hidden")
        logger.info("listening", metadata: ["port": "4317"])
        XCTAssertEqual(lines.lines.count, 1)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(lines.lines[0].utf8)) as? [String: Any])
        XCTAssertEqual(object["msg"] as? String, "listening")
        XCTAssertEqual(object["level"] as? String, "info")
        XCTAssertEqual(object["listener"] as? String, "grpc")
        XCTAssertEqual(object["port"] as? String, "4317")
    }
}
