"""HTTP/2 on the proxy's TLS listeners with real HTTP/2 clients: h2load multiplexing gRPC-style
unary calls on one connection, and OTLP/HTTP over h2 (curl --http2, the h2 library) translated
to HTTP/1.1 for the OTLP/HTTP upstream."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from conftest import curl, free_port
from grpc_helpers import GOAWAY, TRACE_EXPORT, RawH2, h2_request, one_kib_grpc_body
from otel_helpers import make_spans

PROTOBUF = "Content-Type: application/x-protobuf"


def listener_port(proxy, listener: str) -> int:
    return proxy.grpc_port if listener == "grpc" else proxy.port


# --- 4. 200 concurrent unary gRPC calls on one connection ----------------------------------


def test_h2load_200_concurrent_grpc_unary_calls_one_connection_all_counted(proxy, sink, ca_file, tokens, tmp_path: Path):
    sink.require_grpc_port()
    body = tmp_path / "body.grpc"
    body.write_bytes(one_kib_grpc_body())
    command = [
        "h2load", "-n", "200", "-c", "1", "-m", "200", "-d", str(body),
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        "-H", f"authorization: Bearer {tokens.plain}",
        f"https://127.0.0.1:{proxy.grpc_port}{TRACE_EXPORT}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    # The command line holds the token: report only h2load's output, never the command.
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"Application protocol: h2\b", output), output
    assert re.search(r"requests: 200 total, 200 started, 200 done, 200 succeeded, 0 failed", output), output
    assert re.search(r"status codes: 200 2xx, 0 3xx, 0 4xx, 0 5xx", output), output
    # Every gRPC call is a 200 whatever its grpc-status: the sink's counts say they all arrived.
    stats = sink.stats()
    assert stats["tenants"] == {"team-a": {"requests": 200, "spans": 200, "data_points": 0, "log_records": 0, "profiles": 0}}
    assert stats["duplicate_tenant_headers"] == 0
    assert stats["requests_with_authorization"] == 0


# --- 5. OTLP/HTTP over h2 ------------------------------------------------------------------


@pytest.mark.parametrize("listener", ["http", "grpc"])
def test_curl_http2_protobuf_export_translated_to_http1_counted(proxy, sink, ca_file, tokens, listener):
    body = encode_spans(make_spans(3)).SerializeToString()
    port = listener_port(proxy, listener)
    result = curl(
        f"https://127.0.0.1:{port}/v1/traces", "--http2", "-H", PROTOBUF,
        "-H", f"Authorization: Bearer {tokens.hashed}", "-H", "X-Scope-OrgID: evil",
        ca_file=ca_file, data=body,
    )
    assert result.version == "HTTP/2", result.version
    assert result.status == 200, result.body
    assert (result.header("content-type") or "").startswith("application/x-protobuf")
    stats = sink.stats()
    assert stats["tenants"] == {"team-b": {"requests": 1, "spans": 3, "data_points": 0, "log_records": 0, "profiles": 0}}
    last = stats["last_request"]
    assert last["method"] == "POST"
    assert last["path"] == "/v1/traces"
    names = [name.lower() for name, _ in last["headers"]]
    assert [value for name, value in last["headers"] if name.lower() == "x-scope-orgid"] == ["team-b"]
    assert "authorization" not in names
    # No HTTP/2 pseudo-header or h2-only field leaks into the HTTP/1.1 request.
    assert not any(name.startswith(":") for name in names), names
    assert stats["duplicate_tenant_headers"] == 0


def test_curl_http2_missing_token_401_bearer_challenge(proxy, sink, ca_file):
    result = curl(f"{proxy.url}/v1/traces", "--http2", "-H", PROTOBUF, ca_file=ca_file, data=b"")
    assert result.version == "HTTP/2"
    assert result.status == 401
    assert (result.header("www-authenticate") or "").startswith("Bearer")
    status = status_pb2.Status()
    status.ParseFromString(result.body)
    assert status.code == 16
    assert sink.stats()["requests"] == 0


def test_curl_http2_unknown_path_404_nothing_forwarded(proxy, sink, ca_file, tokens):
    result = curl(
        f"{proxy.url}/v1/other", "--http2", "-H", PROTOBUF, "-H", f"Authorization: Bearer {tokens.plain}",
        ca_file=ca_file, data=b"",
    )
    assert result.version == "HTTP/2"
    assert result.status == 404
    assert sink.stats()["requests"] == 0


def test_h2_json_export_large_body_streamed_to_http1_upstream(proxy, sink, ca_file, tokens):
    """A JSON export larger than the HTTP/2 initial window (64 KiB) crosses several flow-control
    windows and still arrives whole."""
    spans = [
        {
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": f"{index:016x}",
            "name": "h2-span-" + "n" * 400,
            "kind": 1,
            "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000001000000000",
        }
        for index in range(400)
    ]
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()
    assert len(body) > 150_000
    headers = [
        (":method", "POST"), (":scheme", "https"), (":authority", f"127.0.0.1:{proxy.port}"), (":path", "/v1/traces"),
        ("content-type", "application/json"), ("authorization", f"Bearer {tokens.plain}"),
    ]
    response = h2_request(proxy.port, ca_file, headers, body, timeout=20)
    assert response.status == 200, (response.headers, response.data[:200])
    assert json.loads(response.data or b"{}") == {}
    assert sink.tenant("team-a")["spans"] == 400


def otlp_http_h2_headers(port: int, token: str, content_type: str = "application/x-protobuf"):
    return [
        (":method", "POST"), (":scheme", "https"), (":authority", f"127.0.0.1:{port}"), (":path", "/v1/traces"),
        ("content-type", content_type), ("authorization", f"Bearer {token}"),
    ]


def test_h2_body_over_max_request_body_size_413_nothing_forwarded(start_proxy, sink, ca_file, tokens):
    small = start_proxy(sink.port, max_request_body_size="1KiB")
    body = encode_spans(make_spans(40)).SerializeToString()
    assert len(body) > 1024
    response = h2_request(small.port, ca_file, otlp_http_h2_headers(small.port, tokens.plain), body)
    assert response.status == 413, (response.headers, response.reset_code)
    assert sink.stats()["requests"] == 0


def test_h2_otlp_http_upstream_down_503_retry_after(start_proxy, sink, ca_file, tokens):
    orphan = start_proxy(free_port())
    body = encode_spans(make_spans(1)).SerializeToString()
    response = h2_request(orphan.port, ca_file, otlp_http_h2_headers(orphan.port, tokens.plain), body)
    assert response.status == 503, (response.headers, response.reset_code)
    assert response.header("retry-after") is not None
    status = status_pb2.Status()
    status.ParseFromString(response.data)
    assert status.code == 14


# --- graceful close --------------------------------------------------------------------------


def test_h2_sigterm_sends_goaway_no_error_then_exit_0(start_proxy, sink, ca_file):
    """Shutting down closes an idle HTTP/2 connection with the graceful pair of GOAWAYs (RFC 9113
    §6.8): the shutdown notice (last stream id 2^31-1), then the final one (last stream id 0), both
    NO_ERROR, rather than a bare TCP close."""
    proxy = start_proxy(sink.port)
    client = RawH2(proxy.grpc_port, ca_file)
    try:
        proxy.proc.send_signal(signal.SIGTERM)
        assert client.wait_closed(10), "no GOAWAY or EOF after SIGTERM"
        deadline = time.monotonic() + 10
        while not client.eof and time.monotonic() < deadline:
            client.drain()
            time.sleep(0.01)
        assert client.eof, "the connection stayed open after the final GOAWAY"
        goaways = [payload for kind, _, _, payload in client.frames if kind == GOAWAY]
        assert len(goaways) >= 2, "the connection was closed without the shutdown notice and the final GOAWAY"
        assert int.from_bytes(goaways[0][0:4], "big") & 0x7FFFFFFF == 0x7FFFFFFF  # the notice
        assert int.from_bytes(goaways[-1][0:4], "big") & 0x7FFFFFFF == 0  # final: no stream was processed
        assert all(int.from_bytes(payload[4:8], "big") == 0 for payload in goaways)  # NO_ERROR
    finally:
        client.close()
    assert proxy.stop(timeout=10) == 0, proxy.describe()
