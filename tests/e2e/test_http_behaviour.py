"""curl against the proxy: authentication failures, headers the proxy owns, routing, limits,
and upstream failures. curl is pinned to HTTP/1.1 where the test is about HTTP/1.1 framing."""

from __future__ import annotations

import json
import socket
import time

from google.rpc import status_pb2

from conftest import curl, free_port
import re

import requests
from opentelemetry.sdk.trace.export import SpanExportResult

from grpc_helpers import grpc_span_exporter, tls_connect
from otel_helpers import make_spans

JSON = "Content-Type: application/json"
PROTOBUF = "Content-Type: application/x-protobuf"
ONE_SPAN = json.dumps(
    {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "name": "curl-span",
                                "kind": 1,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000001000000000",
                            }
                        ]
                    }
                ]
            }
        ]
    }
).encode()


def bearer(token: str) -> list[str]:
    return ["-H", f"Authorization: Bearer {token}"]


def test_curl_json_wrong_token_401_bearer_challenge_json_status_body(proxy, sink, ca_file, tokens):
    result = curl(f"{proxy.url}/v1/traces", "-H", JSON, *bearer(tokens.plain + "nope"), ca_file=ca_file, data=ONE_SPAN)
    assert result.status == 401
    assert (result.header("www-authenticate") or "").startswith("Bearer")
    assert (result.header("content-type") or "").startswith("application/json")
    body = json.loads(result.body)
    assert body["code"] == 16  # UNAUTHENTICATED
    assert isinstance(body.get("message"), str) and body["message"]
    assert tokens.plain not in result.body.decode()
    assert sink.stats()["requests"] == 0


def test_curl_protobuf_missing_token_401_protobuf_status_body(proxy, sink, ca_file):
    result = curl(f"{proxy.url}/v1/traces", "-H", PROTOBUF, ca_file=ca_file, data=b"")
    assert result.status == 401
    assert (result.header("www-authenticate") or "").startswith("Bearer")
    assert (result.header("content-type") or "").startswith("application/x-protobuf")
    status = status_pb2.Status()
    status.ParseFromString(result.body)
    assert status.code == 16
    assert status.message
    assert sink.stats()["requests"] == 0


def test_curl_basic_scheme_instead_of_bearer_401(proxy, sink, ca_file, tokens):
    result = curl(
        f"{proxy.url}/v1/traces", "-H", JSON, "-H", f"Authorization: Basic {tokens.plain}", ca_file=ca_file, data=ONE_SPAN
    )
    assert result.status == 401
    assert sink.stats()["requests"] == 0


def test_curl_valid_token_json_export_200_counted(proxy, sink, ca_file, tokens):
    result = curl(f"{proxy.url}/v1/traces", "-H", JSON, *bearer(tokens.plain), ca_file=ca_file, data=ONE_SPAN)
    assert result.status == 200
    assert json.loads(result.body or b"{}") == {}
    assert sink.tenant("team-a")["spans"] == 1


def test_curl_client_sent_tenant_headers_replaced_by_proxy_value(proxy, sink, ca_file, tokens):
    result = curl(
        f"{proxy.url}/v1/traces",
        "--http1.1",
        "-H", JSON,
        *bearer(tokens.plain),
        "-H", "X-Scope-OrgID: evil",
        "-H", "x-scope-orgid: evil2",
        "-H", "X_Scope_OrgID: evil3",
        "-H", "Connection: X-Scope-OrgID",
        ca_file=ca_file,
        data=ONE_SPAN,
    )
    assert result.status == 200
    stats = sink.stats()
    tenant_values = [value for name, value in stats["last_request"]["headers"] if name.replace("_", "-") == "x-scope-orgid"]
    assert tenant_values == ["team-a"]
    assert stats["duplicate_tenant_headers"] == 0
    assert set(stats["tenants"]) == {"team-a"}
    assert stats["tenants"]["team-a"]["spans"] == 1


def test_curl_get_export_path_405(proxy, sink, ca_file, tokens):
    result = curl(f"{proxy.url}/v1/traces", *bearer(tokens.plain), ca_file=ca_file)
    assert result.status == 405
    assert sink.stats()["requests"] == 0


def test_curl_post_unknown_path_404(proxy, sink, ca_file, tokens):
    result = curl(f"{proxy.url}/v1/other", "-H", JSON, *bearer(tokens.plain), ca_file=ca_file, data=ONE_SPAN)
    assert result.status == 404
    assert sink.stats()["requests"] == 0


def test_curl_body_over_max_request_body_size_413_nothing_forwarded(start_proxy, sink, ca_file, tokens):
    small = start_proxy(sink.port, max_request_body_size="1KiB")
    big = b'{"resourceSpans":[' + b" " * 4096 + b"]}"
    result = curl(f"{small.url}/v1/traces", "--http1.1", "-H", JSON, *bearer(tokens.plain), ca_file=ca_file, data=big)
    assert result.status == 413
    chunked = curl(
        f"{small.url}/v1/traces", "--http1.1", "-H", JSON, "-H", "Transfer-Encoding: chunked", *bearer(tokens.plain),
        ca_file=ca_file, data=big,
    )
    assert chunked.status == 413
    # A body within the limit still goes through this proxy.
    ok = curl(f"{small.url}/v1/traces", "-H", JSON, *bearer(tokens.plain), ca_file=ca_file, data=ONE_SPAN)
    assert ok.status == 200
    stats = sink.stats()
    assert stats["requests"] == 1
    assert stats["tenants"]["team-a"]["spans"] == 1


def test_curl_upstream_down_503_with_retry_after(start_proxy, sink, ca_file, tokens):
    orphan = start_proxy(free_port())
    result = curl(f"{orphan.url}/v1/traces", "-H", JSON, *bearer(tokens.plain), ca_file=ca_file, data=ONE_SPAN)
    assert result.status == 503
    assert result.header("retry-after") is not None
    assert json.loads(result.body)["code"] == 14  # UNAVAILABLE


def test_control_curl_really_sends_both_tenant_headers(sink):
    """Direct to the sink (no proxy): the spoofing request above does carry two copies, so the
    proxy test cannot pass merely because curl merged them."""
    result = curl(
        f"{sink.url}/v1/traces",
        "--http1.1",
        "-H", JSON,
        "-H", "X-Scope-OrgID: evil",
        "-H", "x-scope-orgid: evil2",
        "-H", "X_Scope_OrgID: evil3",
        "-H", "Connection: X-Scope-OrgID",
        data=ONE_SPAN,
    )
    assert result.status == 200
    stats = sink.stats()
    assert stats["duplicate_tenant_headers"] == 1
    assert [v for n, v in stats["last_request"]["headers"] if n == "x-scope-orgid"] == ["evil", "evil2"]


def _post_on(connection, token: str) -> int:
    """One OTLP/HTTP request on an open HTTP/1.1 connection; returns the status once the whole
    response (Content-Length framed) has been read."""
    connection.sendall(
        b"POST /v1/traces HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: {len(ONE_SPAN)}\r\n\r\n".encode()
        + ONE_SPAN
    )
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        assert chunk, f"connection closed before a response head: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    while len(body) < length:
        body += connection.recv(65536)
    return int(lines[0].split()[1])


def test_keep_alive_connection_idle_for_idle_timeout_closed_busy_one_kept(start_proxy, sink, ca_file, tokens):
    proxy = start_proxy(sink.port, idle_timeout="1s")
    # Busy: a request every 0.3 s for three idle timeouts, all on one connection.
    busy = tls_connect(proxy.port, ca_file, alpn=("http/1.1",))
    try:
        started = time.monotonic()
        while time.monotonic() - started < 3.0:
            assert _post_on(busy, tokens.hashed) == 200
            time.sleep(0.3)
    finally:
        busy.close()
    # Idle after one request: closed by the proxy about one idle timeout later.
    idle = tls_connect(proxy.port, ca_file, alpn=("http/1.1",))
    try:
        assert _post_on(idle, tokens.hashed) == 200
        answered = time.monotonic()
        idle.settimeout(5)
        try:
            assert idle.recv(1) == b"", "nothing but the close is sent to an idle connection"
        except (ConnectionResetError, socket.timeout) as error:
            raise AssertionError(f"the idle connection was not closed cleanly: {error!r}") from error
        waited = time.monotonic() - answered
        assert 0.8 <= waited <= 2.5, f"closed after {waited:.2f}s with idle_timeout 1s"
    finally:
        idle.close()


def test_max_connection_age_clients_reconnect_without_a_failed_export(start_proxy, sink, ca_file, tokens):
    """limits.max_connection_age 1s: a gRPC exporter keeping one channel is sent GOAWAY about every
    second and reconnects, with every export succeeding; an idle HTTP/1.1 keep-alive connection is
    closed at its age although http.idle_timeout (90 s) is far away."""
    proxy = start_proxy(sink.port, grpc_upstream_port=sink.require_grpc_port(), extra="limits: { max_connection_age: 1s }\n")

    exporter = grpc_span_exporter(proxy.grpc_port, ca_file, tokens.hashed)
    results = []
    try:
        started = time.monotonic()
        while time.monotonic() - started < 3.5:
            results.append(exporter.export(make_spans(1)))
            time.sleep(0.05)
    finally:
        exporter.shutdown()
    assert results and all(result == SpanExportResult.SUCCESS for result in results), results
    metrics = requests.get(proxy.admin_url + "/metrics", timeout=5).text
    accepted = re.search(r'otlp_auth_proxy_connections_accepted_total\{listener="grpc"\} (\d+)', metrics)
    assert accepted and int(accepted.group(1)) >= 3, "the exporter reconnected as its connections aged"

    connection = tls_connect(proxy.port, ca_file, alpn=("http/1.1",))
    try:
        assert _post_on(connection, tokens.hashed) == 200
        answered = time.monotonic()
        connection.settimeout(5)
        assert connection.recv(1) == b"", "nothing but the close is sent once the connection is old"
        waited = time.monotonic() - answered
        assert waited <= 2.0, f"closed {waited:.2f}s after the answer; the connection was 1 s old"
    finally:
        connection.close()
