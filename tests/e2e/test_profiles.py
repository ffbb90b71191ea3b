"""OTLP profiles through the proxy, over OTLP/gRPC and OTLP/HTTP (protobuf and JSON): into the built-in
sink, which counts them per tenant, and into a grpcio receiver and an HTTP receiver that decode them
with the official protobuf classes; the request body bytes per tenant on the admin listener's /metrics.

No OpenTelemetry SDK exports profiles yet: the requests are built with opentelemetry-proto's
`v1development` classes and sent with the generated grpcio stub or a plain HTTPS POST."""

from __future__ import annotations

import json
import time
import urllib.request

import grpc
import pytest
from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import ExportProfilesServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from grpc_helpers import GrpcReceiver, bearer_metadata, grpc_channel, grpc_framed
from profiles_helpers import (
    PROFILES_EXPORT,
    PROFILES_PATH,
    export_profiles,
    post_profiles,
    profile_count,
    profiles_json,
    profiles_request,
)
from receivers import RecordingReceiver


def sink_profiles(sink, tenant: str) -> tuple[int, int]:
    counts = sink.tenant(tenant)
    return counts["requests"], counts["profiles"]


def received_bytes(proxy) -> dict[tuple[str, str, str], float]:
    """otlp_auth_proxy_received_bytes_total by (signal, transport, tenant), from /metrics."""
    with urllib.request.urlopen(proxy.admin_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "otlp_auth_proxy_received_bytes_total":
                found[(sample.labels["signal"], sample.labels["transport"], sample.labels["tenant"])] = sample.value
    return found


def access_lines(proxy, count: int) -> list[dict]:
    """The first `count` access log lines (JSON), waiting for the log writer to flush them."""
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(line) for line in proxy.logs().splitlines() if line.startswith("{")]
        lines = [line for line in lines if line.get("msg") == "request"]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines


# --- into the built-in sink ------------------------------------------------------------------


def test_profiles_grpc_stub_into_sink_counted_under_token_tenant(proxy, sink, ca_file, tokens):
    sink.require_grpc_port()
    with grpc_channel(proxy.grpc_port, ca_file) as channel:
        export_profiles(channel, profiles_request(3), bearer_metadata(tokens.plain))
    stats = sink.stats()
    assert stats["tenants"] == {"team-a": {"requests": 1, "spans": 0, "data_points": 0, "log_records": 0, "profiles": 3}}
    last = stats["last_request"]
    assert last["path"] == PROFILES_EXPORT
    assert [value for name, value in last["headers"] if name == "x-scope-orgid"] == ["team-a"]
    assert "authorization" not in [name for name, _ in last["headers"]]


def test_profiles_http_protobuf_and_json_into_sink(proxy, sink, ca_file, tokens):
    protobuf = post_profiles(proxy.url, ca_file, tokens.plain, profiles_request(2).SerializeToString())
    assert protobuf.status_code == 200, protobuf.text
    as_json = post_profiles(proxy.url, ca_file, tokens.hashed, profiles_json(profiles_request(4)), "application/json")
    assert as_json.status_code == 200, as_json.text
    assert sink_profiles(sink, "team-a") == (1, 2)
    assert sink_profiles(sink, "team-b") == (1, 4)
    assert sink.stats()["last_request"]["path"] == PROFILES_PATH


def test_profiles_without_credentials_refused_401_and_unauthenticated(proxy, sink, ca_file):
    body = profiles_request(1).SerializeToString()
    assert post_profiles(proxy.url, ca_file, "not-a-valid-token-0123456789", body).status_code == 401
    with grpc_channel(proxy.grpc_port, ca_file) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            export_profiles(channel, profiles_request(1), [])
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert sink.stats()["tenants"] == {}


# --- into receivers that decode with the official classes ------------------------------------


@pytest.fixture
def receivers():
    grpc_receiver = GrpcReceiver().start()
    http_receiver = RecordingReceiver()
    yield grpc_receiver, http_receiver
    grpc_receiver.stop()
    http_receiver.close()


@pytest.fixture
def receiver_proxy(start_proxy, receivers):
    grpc_receiver, http_receiver = receivers
    return start_proxy(http_receiver.port, grpc_upstream_port=grpc_receiver.port)


def test_profiles_grpc_arrive_at_grpcio_receiver_unchanged(receiver_proxy, receivers, ca_file, tokens):
    grpc_receiver, _ = receivers
    sent = profiles_request(3, service="payments")
    with grpc_channel(receiver_proxy.grpc_port, ca_file) as channel:
        export_profiles(channel, sent, bearer_metadata(tokens.plain, ("x-scope-orgid", "team-evil")))
    assert len(grpc_receiver.profiles_requests) == 1
    received, metadata = grpc_receiver.profiles_requests[0]
    assert received == sent
    assert profile_count(received) == 3
    assert received.dictionary.string_table[3] == "main"
    assert [value for name, value in metadata if name == "x-scope-orgid"] == ["team-a"]
    assert "authorization" not in [name for name, _ in metadata]
    assert [call.method for call in grpc_receiver.calls] == [PROFILES_EXPORT]


def test_profiles_http_arrive_at_http_receiver_unchanged(receiver_proxy, receivers, ca_file, tokens):
    _, http_receiver = receivers
    sent = profiles_request(2)
    response = post_profiles(receiver_proxy.url, ca_file, tokens.hashed, sent.SerializeToString())
    assert response.status_code == 200
    http_receiver.wait_for(1)
    forwarded = http_receiver.received_requests()[0]
    assert forwarded["target"] == PROFILES_PATH
    assert ExportProfilesServiceRequest.FromString(forwarded["body"]) == sent
    assert http_receiver.header_values(0, "x-scope-orgid") == ["team-b"]
    assert http_receiver.header_values(0, "authorization") == []


# --- body bytes per tenant on /metrics, and the access log -----------------------------------


def test_profiles_body_bytes_per_tenant_in_metrics_and_access_log(receiver_proxy, ca_file, tokens):
    grpc_sent = profiles_request(5)
    with grpc_channel(receiver_proxy.grpc_port, ca_file) as channel:
        export_profiles(channel, grpc_sent, bearer_metadata(tokens.plain))
        export_profiles(channel, grpc_sent, bearer_metadata(tokens.plain))
    http_body = profiles_request(1).SerializeToString()
    assert post_profiles(receiver_proxy.url, ca_file, tokens.hashed, http_body).status_code == 200
    assert post_profiles(receiver_proxy.url, ca_file, "not-a-valid-token-0123456789", http_body).status_code == 401

    counted = received_bytes(receiver_proxy)
    assert counted[("profiles", "grpc", "team-a")] == 2 * len(grpc_framed(grpc_sent.SerializeToString()))
    assert counted[("profiles", "http/1.1", "team-b")] == len(http_body)
    # The refused request is never counted under a tenant: whatever of its body arrived has none.
    assert [key for key in counted if key[2] not in ("", "team-a", "team-b")] == []
    assert ("profiles", "http/1.1", "team-a") not in counted

    lines = access_lines(receiver_proxy, 4)
    assert [(line["signal"], line["status"], line.get("tenant")) for line in lines] == [
        ("profiles", 200, "team-a"), ("profiles", 200, "team-a"), ("profiles", 200, "team-b"), ("profiles", 401, None),
    ]
    assert lines[2]["bytes_in"] == len(http_body)
