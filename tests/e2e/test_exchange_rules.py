"""The per-request rules both fronts share, checked at the receiver: exactly one Host, the query
string kept on every path, headers a response names in `Connection:` never reaching a client, and a
rate-limited request logged as `limited`. A recording HTTP/1.1 receiver keeps the raw request target
and every header line it got, so a duplicate is seen as a duplicate."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from grpc_helpers import H2Client, grpc_request_headers, grpc_framed, h2_request, tls_connect, trace_request


class RecordingReceiver:
    """A plaintext HTTP/1.1 OTLP receiver on 127.0.0.1 that records each request's target and header
    lines, and answers 200 with `response_headers` added."""

    def __init__(self, response_headers: list[tuple[str, str]] | None = None):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.response_headers = response_headers or []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server naming)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.requests.append({"target": self.path, "headers": list(self.headers.items()), "body": body})
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                for name, value in receiver.response_headers:
                    self.send_header(name, value)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self) -> list[dict]:
        with self.lock:
            return list(self.requests)

    def header_values(self, index: int, name: str) -> list[str]:
        return [value for key, value in self.received()[index]["headers"] if key.lower() == name.lower()]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    receiver = RecordingReceiver(response_headers=[("Connection", "X-Internal"), ("X-Internal", "receiver-secret")])
    yield receiver
    receiver.stop()


@pytest.fixture
def rules_proxy(start_proxy, receiver, sink):
    return start_proxy(receiver.port, grpc_upstream_port=sink.require_grpc_port())


def h1_exchange(port: int, ca_file: str, request: bytes) -> tuple[bytes, bool]:
    """Sends raw HTTP/1.1 bytes over TLS; returns what came back and whether the proxy then closed."""
    sock = tls_connect(port, ca_file, alpn=("http/1.1",))
    try:
        sock.sendall(request)
        data = b""
        closed = False
        sock.settimeout(5)
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            except (ssl.SSLError, ConnectionResetError):
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
                if length and len(rest) >= length[0]:
                    sock.settimeout(1)
        return data, closed
    finally:
        sock.close()


def otlp_http_request(token: str, *headers: str, target: str = "/v1/traces") -> bytes:
    body = trace_request(1).SerializeToString()
    lines = [f"POST {target} HTTP/1.1", "Content-Type: application/x-protobuf", f"Authorization: Bearer {token}",
             f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def h2_otlp_headers(port: int, token: str, *extra: tuple[str, str], path: str = "/v1/traces") -> list[tuple[str, str]]:
    return [(":method", "POST"), (":scheme", "https"), (":authority", f"127.0.0.1:{port}"), (":path", path),
            ("content-type", "application/x-protobuf"), ("authorization", f"Bearer {token}"), *extra]


# --- exactly one Host ----------------------------------------------------------------------


def test_h1_two_host_lines_400_connection_closed_nothing_forwarded(rules_proxy, receiver, ca_file, tokens):
    request = otlp_http_request(tokens.plain, "Host: a.example", "Host: b.example")
    response, closed = h1_exchange(rules_proxy.port, ca_file, request)
    assert response.startswith(b"HTTP/1.1 400 "), response[:200]
    assert closed, "the connection must close after a request with two Host lines"
    assert receiver.received() == []


def test_h1_no_host_400_nothing_forwarded(rules_proxy, receiver, ca_file, tokens):
    response, closed = h1_exchange(rules_proxy.port, ca_file, otlp_http_request(tokens.plain))
    assert response.startswith(b"HTTP/1.1 400 "), response[:200]
    assert receiver.received() == []


def test_h1_one_host_forwarded_with_exactly_that_host(rules_proxy, receiver, ca_file, tokens):
    response, _ = h1_exchange(rules_proxy.port, ca_file, otlp_http_request(tokens.plain, "Host: otlp.example"))
    assert response.startswith(b"HTTP/1.1 200 "), response[:200]
    assert receiver.header_values(0, "host") == ["otlp.example"]


def test_h2_host_field_differs_from_authority_400_nothing_forwarded(rules_proxy, receiver, ca_file, tokens):
    port = rules_proxy.port
    response = h2_request(port, ca_file, h2_otlp_headers(port, tokens.plain, ("host", "evil.example")),
                          trace_request(1).SerializeToString(), validate_outbound=False)
    assert response.status == 400, response
    assert receiver.received() == []


def test_h2_grpc_host_field_differs_from_authority_invalid_argument_nothing_forwarded(rules_proxy, sink, ca_file, tokens):
    before = sink.stats()["requests"]
    port = rules_proxy.grpc_port
    response = h2_request(port, ca_file, grpc_request_headers(port, tokens.plain) + [("host", "evil.example")],
                          grpc_framed(trace_request(1).SerializeToString()), validate_outbound=False)
    assert (response.status, response.grpc_status) == (200, 3), response
    assert sink.stats()["requests"] == before


def test_h2_authority_becomes_the_one_host_upstream(rules_proxy, receiver, ca_file, tokens):
    port = rules_proxy.port
    response = h2_request(port, ca_file, h2_otlp_headers(port, tokens.plain, ("host", f"127.0.0.1:{port}")),
                          trace_request(1).SerializeToString())
    assert response.status == 200, response
    assert receiver.header_values(0, "host") == [f"127.0.0.1:{port}"]


# --- the query string, the same on both paths ------------------------------------------------


def test_query_string_reaches_receiver_from_h1_and_h2_alike(rules_proxy, receiver, ca_file, tokens):
    port = rules_proxy.port
    response, _ = h1_exchange(port, ca_file, otlp_http_request(tokens.plain, "Host: h", target="/v1/traces?source=edge"))
    assert response.startswith(b"HTTP/1.1 200 "), response[:200]
    h2 = h2_request(port, ca_file, h2_otlp_headers(port, tokens.plain, path="/v1/traces?source=edge"),
                    trace_request(1).SerializeToString())
    assert h2.status == 200, h2
    assert [request["target"] for request in receiver.received()] == ["/v1/traces?source=edge"] * 2


# --- Connection-nominated response headers ----------------------------------------------------


def test_response_headers_named_in_connection_never_reach_clients(rules_proxy, receiver, ca_file, tokens):
    port = rules_proxy.port
    h2 = h2_request(port, ca_file, h2_otlp_headers(port, tokens.plain), trace_request(1).SerializeToString())
    assert h2.status == 200, h2
    names = [name for name, _ in h2.headers]
    assert "x-internal" not in names and "connection" not in names, h2.headers
    response, _ = h1_exchange(port, ca_file, otlp_http_request(tokens.plain, "Host: h"))
    assert response.startswith(b"HTTP/1.1 200 "), response[:200]
    assert b"receiver-secret" not in response and b"x-internal" not in response.lower(), response


# --- rate-limited requests are logged as limited ------------------------------------------------


def test_rate_limited_request_logged_and_counted_limited_on_both_fronts(start_proxy, receiver, sink, ca_file, tokens):
    proxy = start_proxy(receiver.port, grpc_upstream_port=sink.require_grpc_port(),
                        extra="limits: { tenant_rate: { requests_per_second: 0.001, burst_seconds: 1000 } }\n"
                              "log: { access_log: true, format: json }\n")
    port = proxy.port
    with H2Client(port, ca_file) as client:
        statuses = [client.request(h2_otlp_headers(port, tokens.plain), trace_request(1).SerializeToString()).status
                    for _ in range(3)]
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    h1, _ = h1_exchange(port, ca_file, otlp_http_request(tokens.plain, "Host: h"))
    assert h1.startswith(b"HTTP/1.1 429 "), h1[:200]
    deadline = time.monotonic() + 5
    while True:
        records = [json.loads(line) for line in proxy.logs().splitlines() if line.startswith("{") and '"msg":"request"' in line]
        limited = [record for record in records if record.get("status") == 429]
        if len(limited) >= 2 or time.monotonic() > deadline:
            break
    assert limited and all(record["outcome"] == "limited" for record in limited), records
    assert {record["transport"] for record in limited} == {"h2", "http/1.1"}
