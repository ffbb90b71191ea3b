"""OpenTelemetry SDK OTLP/HTTP exporters → proxy (TLS, bearer token) → sink."""

from __future__ import annotations

from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

from otel_helpers import log_exporter, make_logs, make_metrics, make_spans, metric_exporter, span_exporter


def assert_forwarded_headers(stats: dict, tenant: str) -> None:
    """The last request the sink saw carried exactly one tenant header, the proxy's, and no
    credentials."""
    headers = stats["last_request"]["headers"]
    names = [name for name, _ in headers]
    assert [value for name, value in headers if name == "x-scope-orgid"] == [tenant], headers
    assert "authorization" not in names, headers
    assert stats["requests_with_authorization"] == 0
    assert stats["duplicate_tenant_headers"] == 0


def test_https_sdk_span_export_plain_token_counted_under_team_a(proxy, sink, ca_file, tokens):
    exporter = span_exporter(proxy.url, ca_file, tokens.plain)
    try:
        assert exporter.export(make_spans(7)) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    stats = sink.stats()
    assert stats["tenants"] == {"team-a": {"requests": 1, "spans": 7, "data_points": 0, "log_records": 0, "profiles": 0}}
    assert stats["last_request"]["method"] == "POST"
    assert stats["last_request"]["path"] == "/v1/traces"
    assert_forwarded_headers(stats, "team-a")


def test_https_sdk_span_export_hashed_token_counted_under_team_b(proxy, sink, ca_file, tokens):
    exporter = span_exporter(proxy.url, ca_file, tokens.hashed)
    try:
        assert exporter.export(make_spans(3)) == SpanExportResult.SUCCESS
        assert exporter.export(make_spans(2)) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    stats = sink.stats()
    assert stats["tenants"] == {"team-b": {"requests": 2, "spans": 5, "data_points": 0, "log_records": 0, "profiles": 0}}
    assert_forwarded_headers(stats, "team-b")


def test_https_sdk_metric_export_data_points_counted(proxy, sink, ca_file, tokens):
    data, points = make_metrics()
    exporter = metric_exporter(proxy.url, ca_file, tokens.plain)
    try:
        assert exporter.export(data) == MetricExportResult.SUCCESS
    finally:
        exporter.shutdown()
    stats = sink.stats()
    assert stats["tenants"] == {"team-a": {"requests": 1, "spans": 0, "data_points": points, "log_records": 0, "profiles": 0}}
    assert stats["last_request"]["path"] == "/v1/metrics"
    assert_forwarded_headers(stats, "team-a")


def test_https_sdk_log_export_records_counted(proxy, sink, ca_file, tokens):
    exporter = log_exporter(proxy.url, ca_file, tokens.hashed)
    try:
        assert exporter.export(make_logs(4)) == LogRecordExportResult.SUCCESS
    finally:
        exporter.shutdown()
    stats = sink.stats()
    assert stats["tenants"] == {"team-b": {"requests": 1, "spans": 0, "data_points": 0, "log_records": 4, "profiles": 0}}
    assert stats["last_request"]["path"] == "/v1/logs"
    assert_forwarded_headers(stats, "team-b")


def test_https_sdk_span_export_wrong_token_fails_and_nothing_reaches_sink(proxy, sink, ca_file, tokens):
    exporter = span_exporter(proxy.url, ca_file, tokens.plain + "x")
    try:
        assert exporter.export(make_spans(2)) == SpanExportResult.FAILURE
    finally:
        exporter.shutdown()
    assert sink.stats()["requests"] == 0


def test_https_sdk_span_export_no_token_fails_and_nothing_reaches_sink(proxy, sink, ca_file):
    exporter = span_exporter(proxy.url, ca_file, None)
    try:
        assert exporter.export(make_spans(2)) == SpanExportResult.FAILURE
    finally:
        exporter.shutdown()
    assert sink.stats()["requests"] == 0


def test_proxy_logs_never_contain_tokens(proxy, sink, ca_file, tokens):
    # Traffic with good and bad tokens first, so the log has had the chance to leak them.
    for token in (tokens.plain, tokens.hashed, tokens.plain + "-wrong"):
        exporter = span_exporter(proxy.url, ca_file, token)
        try:
            exporter.export(make_spans(1))
        finally:
            exporter.shutdown()
    logs = proxy.logs()
    for secret in (tokens.plain, tokens.hashed):
        assert secret not in logs
        assert secret[:12] not in logs
