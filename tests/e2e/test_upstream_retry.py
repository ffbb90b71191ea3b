"""Upstream down: the proxy answers 503 + Retry-After (HTTP) or 14 UNAVAILABLE (gRPC), which the
OTLP exporters retry, so nothing is lost once the receiver comes back."""

from __future__ import annotations

import threading
import time

from opentelemetry.sdk.trace.export import SpanExportResult

from conftest import free_port
from grpc_helpers import grpc_span_exporter
from otel_helpers import make_spans, span_exporter


def test_https_sdk_export_retries_503_until_sink_starts(start_proxy, start_sink, ca_file, tokens):
    upstream_port = free_port()
    proxy = start_proxy(upstream_port)
    exporter = span_exporter(proxy.url, ca_file, tokens.plain, timeout=20)
    outcome: dict[str, object] = {}

    def export() -> None:
        started = time.monotonic()
        outcome["result"] = exporter.export(make_spans(4))
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=export)
    worker.start()
    try:
        time.sleep(1.5)
        assert worker.is_alive(), f"export finished before the sink existed: {outcome}"
        late_sink = start_sink(upstream_port)
        worker.join(timeout=30)
        assert not worker.is_alive(), "export still running after 30 s"
    finally:
        exporter.shutdown()
        worker.join(timeout=5)
    assert outcome["result"] == SpanExportResult.SUCCESS, outcome
    assert outcome["seconds"] >= 1.5  # it really waited for the sink
    stats = late_sink.stats()
    assert stats["tenants"]["team-a"]["spans"] == 4
    assert stats["requests"] == 1  # the failed attempts never reached it


def test_grpc_sdk_export_retries_unavailable_until_sink_starts(start_proxy, start_sink, ca_file, tokens):
    """The same over OTLP/gRPC: 14 UNAVAILABLE from the proxy is retried by the exporter."""
    http_port, grpc_port = free_port(), free_port()
    proxy = start_proxy(http_port, grpc_upstream_port=grpc_port)
    exporter = grpc_span_exporter(proxy.grpc_port, ca_file, tokens.plain, timeout=20)
    outcome: dict[str, object] = {}

    def export() -> None:
        started = time.monotonic()
        outcome["result"] = exporter.export(make_spans(3))
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=export)
    worker.start()
    try:
        time.sleep(1.5)
        assert worker.is_alive(), f"export finished before the sink existed: {outcome}"
        late_sink = start_sink(http_port, grpc_port)
        late_sink.require_grpc_port()
        worker.join(timeout=30)
        assert not worker.is_alive(), "export still running after 30 s"
    finally:
        exporter.shutdown()
        worker.join(timeout=5)
    assert outcome["result"] == SpanExportResult.SUCCESS, outcome
    assert outcome["seconds"] >= 1.5
    stats = late_sink.stats()
    assert stats["tenants"]["team-a"]["spans"] == 3
    assert stats["requests"] == 1
