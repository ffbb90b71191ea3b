"""The per-request rules both fronts share, checked at the receiver: exactly one Host, the query
string kept on every path, headers a response names in `Connection:` never reaching a client, and a
rate-limited request logged as `limited`. A recording HTTP/1.1 receiver keeps the raw request target
and every header line it got, so a duplicate is seen as a duplicate."""

from __future__ import annotations

import json
import time

import pytest

from h1_helpers import h1_exchange
from receivers import RecordingReceiver
from grpc_helpers import H2Client, grpc_request_headers, grpc_framed, h2_request, trace_request


@pytest.fixture
def receiver():
    receiver = RecordingReceiver(response_headers=[("Connection", "X-Internal"), ("X-Internal", "receiver-secret")])
    yield receiver
    receiver.close()


@pytest.fixture
def rules_proxy(start_proxy, receiver, sink):
    return start_proxy(receiver.port, grpc_upstream_port=sink.require_grpc_port())


def h1_send(port: int, ca_file: str, request: bytes, *, expect_close: bool = False):
    """One request on a fresh HTTP/1.1 connection: the exchange (statuses, raw reply, closed)."""
    return h1_exchange(port, ca_file, request, expect_close=expect_close)


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
    exchange = h1_send(rules_proxy.port, ca_file, request, expect_close=True)
    assert exchange.statuses == [400], exchange.describe()
    assert exchange.closed, "the connection must close after a request with two Host lines"
    assert receiver.received_requests() == []


def test_h1_no_host_400_nothing_forwarded(rules_proxy, receiver, ca_file, tokens):
    exchange = h1_send(rules_proxy.port, ca_file, otlp_http_request(tokens.plain), expect_close=True)
    assert exchange.statuses == [400], exchange.describe()
    assert receiver.received_requests() == []


def test_h1_one_host_forwarded_with_exactly_that_host(rules_proxy, receiver, ca_file, tokens):
    exchange = h1_send(rules_proxy.port, ca_file, otlp_http_request(tokens.plain, "Host: otlp.example"))
    assert exchange.statuses == [200], exchange.describe()
    assert receiver.header_values(0, "host") == ["otlp.example"]


def test_h2_host_field_differs_from_authority_400_nothing_forwarded(rules_proxy, receiver, ca_file, tokens):
    port = rules_proxy.port
    response = h2_request(port, ca_file, h2_otlp_headers(port, tokens.plain, ("host", "evil.example")),
                          trace_request(1).SerializeToString(), validate_outbound=False)
    assert response.status == 400, response
    assert receiver.received_requests() == []


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
    exchange = h1_send(port, ca_file, otlp_http_request(tokens.plain, "Host: h", target="/v1/traces?source=edge"))
    assert exchange.statuses == [200], exchange.describe()
    h2 = h2_request(port, ca_file, h2_otlp_headers(port, tokens.plain, path="/v1/traces?source=edge"),
                    trace_request(1).SerializeToString())
    assert h2.status == 200, h2
    assert [request["target"] for request in receiver.received_requests()] == ["/v1/traces?source=edge"] * 2


# --- Connection-nominated response headers ----------------------------------------------------


def test_response_headers_named_in_connection_never_reach_clients(rules_proxy, receiver, ca_file, tokens):
    port = rules_proxy.port
    h2 = h2_request(port, ca_file, h2_otlp_headers(port, tokens.plain), trace_request(1).SerializeToString())
    assert h2.status == 200, h2
    names = [name for name, _ in h2.headers]
    assert "x-internal" not in names and "connection" not in names, h2.headers
    exchange = h1_send(port, ca_file, otlp_http_request(tokens.plain, "Host: h"))
    assert exchange.statuses == [200], exchange.describe()
    assert b"receiver-secret" not in exchange.raw and b"x-internal" not in exchange.raw.lower(), exchange.raw


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
    h1 = h1_send(port, ca_file, otlp_http_request(tokens.plain, "Host: h"))
    assert h1.statuses == [429], h1.describe()
    deadline = time.monotonic() + 5
    while True:
        records = [json.loads(line) for line in proxy.logs().splitlines() if line.startswith("{") and '"msg":"request"' in line]
        limited = [record for record in records if record.get("status") == 429]
        if len(limited) >= 2 or time.monotonic() > deadline:
            break
    assert limited and all(record["outcome"] == "limited" for record in limited), records
    assert {record["transport"] for record in limited} == {"h2", "http/1.1"}
