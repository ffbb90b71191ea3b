"""Limits with real clients: a tenant over its rate gets the retryable reply (429 + Retry-After
over OTLP/HTTP, RESOURCE_EXHAUSTED with RetryInfo over gRPC), the OpenTelemetry SDK exporters
retry and every span arrives, another tenant is unaffected; max_connections and the TLS handshake
timeout close connections a raw TCP client can observe."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from conftest import curl, start_proxy_process, write_proxy_config
from grpc_helpers import grpc_span_exporter
from otel_helpers import make_spans, span_exporter


@pytest.fixture
def limited_proxy(binary: Path, certs: Path, tokens_file: Path, sink, tmp_path: Path):
    """Starts a proxy in front of the shared sink with a `limits` section appended."""
    started = []

    def start(limits: str):
        config = write_proxy_config(
            tmp_path / f"proxy{len(started)}", certs=certs, upstream_port=sink.port,
            grpc_upstream_port=sink.grpc_port, tokens_file=tokens_file,
        )
        with open(config, "a") as handle:
            handle.write(limits)
        proxy = start_proxy_process(binary, config)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


# team-a (tokens.plain) may start one request per second; team-b (tokens.hashed) has its own, larger budget.
RATE_LIMITS = """limits:
  tenant_rate:
    requests_per_second: 1
    burst_seconds: 1
    overrides:
      team-b: { requests_per_second: 100 }
"""


def test_https_tenant_over_rate_gets_429_retry_after(limited_proxy, sink, ca_file, tokens):
    proxy = limited_proxy(RATE_LIMITS)
    headers = ("-H", f"Authorization: Bearer {tokens.plain}", "-H", "Content-Type: application/x-protobuf")
    first = curl(f"{proxy.url}/v1/traces", *headers, ca_file=ca_file, data=b"")
    second = curl(f"{proxy.url}/v1/traces", *headers, ca_file=ca_file, data=b"")
    assert first.status == 200
    assert second.status == 429
    assert second.header("retry-after") == "1"
    assert sink.stats()["tenants"]["team-a"]["requests"] == 1


def test_https_sdk_exporter_over_rate_retries_and_every_span_arrives_other_tenant_unaffected(
    limited_proxy, sink, ca_file, tokens
):
    proxy = limited_proxy(RATE_LIMITS)
    limited = span_exporter(proxy.url, ca_file, tokens.plain, timeout=20)
    other = span_exporter(proxy.url, ca_file, tokens.hashed, timeout=20)
    started = time.monotonic()
    try:
        for _ in range(4):
            assert limited.export(make_spans(5)) == SpanExportResult.SUCCESS
            # The other tenant exports between team-a's retries and is never refused.
            assert other.export(make_spans(2)) == SpanExportResult.SUCCESS
    finally:
        limited.shutdown()
        other.shutdown()
    elapsed = time.monotonic() - started
    stats = sink.stats()["tenants"]
    assert stats["team-a"]["spans"] == 20 and stats["team-a"]["requests"] == 4
    assert stats["team-b"]["spans"] == 8 and stats["team-b"]["requests"] == 4
    # Four requests at one per second: the exporter waited for Retry-After rather than failing.
    assert elapsed >= 2.0, elapsed
    assert "request rate limited" in proxy.logs()
    assert tokens.plain not in proxy.logs() and tokens.hashed not in proxy.logs()


def test_grpc_sdk_exporter_resource_exhausted_with_retry_info_retries_and_every_span_arrives(
    limited_proxy, sink, ca_file, tokens
):
    if sink.grpc_port is None:
        pytest.skip("this sink has no gRPC listener")
    proxy = limited_proxy(RATE_LIMITS)
    limited = grpc_span_exporter(proxy.grpc_port, ca_file, tokens.plain, timeout=20)
    other = grpc_span_exporter(proxy.grpc_port, ca_file, tokens.hashed, timeout=20)
    started = time.monotonic()
    try:
        for _ in range(4):
            assert limited.export(make_spans(3)) == SpanExportResult.SUCCESS
            assert other.export(make_spans(1)) == SpanExportResult.SUCCESS
    finally:
        limited.shutdown()
        other.shutdown()
    elapsed = time.monotonic() - started
    stats = sink.stats()["tenants"]
    assert stats["team-a"]["spans"] == 12 and stats["team-a"]["requests"] == 4
    assert stats["team-b"]["spans"] == 4 and stats["team-b"]["requests"] == 4
    # RetryInfo carries a delay under a second; without it the exporter would back off 1, 2, 4 s.
    assert 2.0 <= elapsed < 8.0, elapsed


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the proxy closes `sock` (EOF or reset) within `within` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_tcp_beyond_max_connections_closed_at_accept(limited_proxy, ca_file, tokens):
    proxy = limited_proxy("limits: { max_connections: 2, handshake_timeout: 30s }\n")
    held = [socket.create_connection(("127.0.0.1", proxy.port)), socket.create_connection(("127.0.0.1", proxy.grpc_port))]
    try:
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", proxy.port))
        with extra:
            assert _closed_by_peer(extra, within=3)
        assert not _closed_by_peer(held[0], within=0.3), "connections within the limit stay open"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    ok = curl(
        f"{proxy.url}/v1/traces", "-H", f"Authorization: Bearer {tokens.plain}", "-H", "Content-Type: application/x-protobuf",
        ca_file=ca_file, data=b"",
    )
    assert ok.status == 200, "closed connections free their slots"


def test_tcp_silent_client_closed_after_handshake_timeout(limited_proxy):
    proxy = limited_proxy("limits: { handshake_timeout: 500ms }\n")
    with socket.create_connection(("127.0.0.1", proxy.port)) as silent:
        started = time.monotonic()
        assert _closed_by_peer(silent, within=5)
        assert 0.4 <= time.monotonic() - started < 5
