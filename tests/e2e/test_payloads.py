"""The proxy reads OTLP payloads when asked to: it writes the authenticated tenant and principal into
every Resource (`tenant.resource_attribute`, `tenant.principal_attribute`), counts items per tenant
(`usage.count_items`), charges an item rate, and refuses bodies that lie about their size or encoding.

Clients are the OpenTelemetry SDK exporters (gRPC and HTTP, gzip and uncompressed), `requests` for
OTLP/JSON and raw bodies, and grpcio for profiles (there is no SDK profiles exporter). Receivers are a
grpcio server and an HTTP server whose requests are decoded with the official OTLP protobuf classes."""

from __future__ import annotations

import gzip
import json
import struct

import grpc
import pytest
import requests
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.profiles.v1development import profiles_pb2
from opentelemetry.sdk.resources import Resource

from conftest import start_proxy_process, write_proxy_config
from grpc_helpers import grpc_framed, read_ca
from otel_helpers import make_logs, make_metrics, make_spans
from otlp_payloads import gzip_bomb
from otlp_receivers import (
    OTLPGrpcReceiver,
    attribute_values,
    decode_http,
    grpc_method,
    http_path,
    request_class,
    resources,
    without_attributes,
)
from receivers import RecordingReceiver

TENANT_KEY = "tenant.id"
PRINCIPAL_KEY = "auth.principal"
OURS = {TENANT_KEY, PRINCIPAL_KEY}
# What a client tries: its own tenant and principal in the Resource, next to its real attributes.
SPOOFED = Resource.create({"service.name": "payload-e2e", TENANT_KEY: "evil-tenant", PRINCIPAL_KEY: "token:admin"})
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def receivers():
    grpc_receiver = OTLPGrpcReceiver().start()
    http_receiver = RecordingReceiver()
    yield grpc_receiver, http_receiver
    grpc_receiver.stop()
    http_receiver.close()


def _proxy(binary, certs, tokens_file, receivers, directory, extra: str, **settings):
    grpc_receiver, http_receiver = receivers
    config = write_proxy_config(
        directory, certs=certs, upstream_port=http_receiver.port, grpc_upstream_port=grpc_receiver.port,
        tokens_file=tokens_file, extra=extra, **settings,
    )
    return start_proxy_process(binary, config)


@pytest.fixture(scope="module")
def attributing_proxy(binary, certs, tokens_file, receivers, tmp_path_factory):
    proxy = _proxy(
        binary, certs, tokens_file, receivers, tmp_path_factory.mktemp("attributing"),
        "", tenant=f"header: X-Scope-OrgID, resource_attribute: {TENANT_KEY}, principal_attribute: {PRINCIPAL_KEY}",
        max_request_body_size="1MiB", max_recv_msg_size="1MiB",
    )
    yield proxy
    proxy.stop()


@pytest.fixture
def clean(receivers):
    grpc_receiver, http_receiver = receivers
    grpc_receiver.clear()
    with http_receiver.lock:
        http_receiver.requests.clear()
        http_receiver.received = 0
        http_receiver.answered = 0
    return grpc_receiver, http_receiver


def _telemetry(signal: str):
    """SDK telemetry for `signal` with the spoofed Resource, and the request the SDK encodes it to."""
    if signal == "traces":
        data = make_spans(4, SPOOFED)
        return data, encode_spans(data)
    if signal == "metrics":
        data, _ = make_metrics(SPOOFED)
        return data, encode_metrics(data)
    data = make_logs(3, SPOOFED)
    return data, encode_logs(data)


def _exporter(signal: str, transport: str, compressed: bool, proxy, ca_file: str, token: str):
    if transport == "grpc":
        kinds = {"traces": GrpcSpanExporter, "metrics": GrpcMetricExporter, "logs": GrpcLogExporter}
        return kinds[signal](
            endpoint=f"https://127.0.0.1:{proxy.grpc_port}", credentials=grpc.ssl_channel_credentials(read_ca(ca_file)),
            headers={"authorization": f"Bearer {token}"}, timeout=10,
            compression=grpc.Compression.Gzip if compressed else grpc.Compression.NoCompression,
        )
    kinds = {"traces": OTLPSpanExporter, "metrics": OTLPMetricExporter, "logs": OTLPLogExporter}
    return kinds[signal](
        endpoint=f"{proxy.url}{http_path(signal)}", certificate_file=ca_file, headers={"authorization": f"Bearer {token}"},
        timeout=10, compression=Compression.Gzip if compressed else Compression.NoCompression,
    )


def _forwarded(signal: str, transport: str, receivers) -> tuple[object, list[tuple[str, str]]]:
    """The one request the receiver got, decoded with the official classes, and its header fields."""
    grpc_receiver, http_receiver = receivers
    if transport == "grpc":
        [export] = grpc_receiver.received()
        assert export.signal == signal
        return export.request(), export.metadata
    http_receiver.wait_for(1)
    [request] = http_receiver.received_requests()
    assert request["target"] == http_path(signal)
    headers = [(name.lower(), value) for name, value in request["headers"]]
    content_type = dict(headers).get("content-type", "")
    return decode_http(signal, request["body"], content_type), headers


def _assert_attributed(received, sent, signal: str, tenant: str, principal: str) -> None:
    """Every Resource carries exactly one tenant and one principal attribute with the proxy's values,
    and with those removed the request is the one the client sent without its own copies."""
    assert resources(received, signal), "the request has resources"
    for resource in resources(received, signal):
        assert attribute_values(resource, TENANT_KEY) == [tenant]
        assert attribute_values(resource, PRINCIPAL_KEY) == [principal]
    assert without_attributes(received, signal, OURS) == without_attributes(sent, signal, OURS)


@pytest.mark.parametrize("signal", ["traces", "metrics", "logs"])
@pytest.mark.parametrize("compressed", [False, True], ids=["identity", "gzip"])
@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_export_gets_tenant_and_principal_on_every_resource_and_nothing_else_changes(
    attributing_proxy, clean, ca_file, tokens, signal, compressed, transport
):
    data, sent = _telemetry(signal)
    exporter = _exporter(signal, transport, compressed, attributing_proxy, ca_file, tokens.plain)
    try:
        assert exporter.export(data).name == "SUCCESS"
    finally:
        exporter.shutdown()
    received, headers = _forwarded(signal, transport, clean)
    _assert_attributed(received, sent, signal, tenant="team-a", principal="token:ci-runner")
    names = {name for name, _ in headers}
    # The rewritten payload goes uncompressed; the receiver is told so.
    assert "content-encoding" not in names and "grpc-encoding" not in names
    assert [value for name, value in headers if name == "x-scope-orgid"] == ["team-a"]


def test_otlp_json_over_http_gets_the_attribute(attributing_proxy, clean, ca_file, tokens):
    sent = encode_spans(make_spans(3, SPOOFED))
    body = json_format.MessageToJson(sent).encode()
    for compressed in (False, True):
        clean[1].requests.clear()
        clean[1].received = 0
        headers = {"authorization": f"Bearer {tokens.hashed}", "content-type": "application/json"}
        if compressed:
            headers["content-encoding"] = "gzip"
        response = requests.post(
            f"{attributing_proxy.url}/v1/traces", data=gzip.compress(body) if compressed else body, headers=headers,
            verify=ca_file, timeout=10,
        )
        assert response.status_code == 200, response.text
        received, forwarded_headers = _forwarded("traces", "http", clean)
        _assert_attributed(received, sent, "traces", tenant="team-b", principal="token:hashed-runner")
        assert dict(forwarded_headers)["content-type"] == "application/json"


def test_otlp_http_over_http2_gzip_rewritten_with_a_new_length(attributing_proxy, clean, ca_file, tokens):
    """Go exporters send OTLP/HTTP over HTTP/2: the rewritten payload reaches the HTTP/1.1 receiver with
    the length it now has and no coding."""
    from grpc_helpers import H2Client

    _, sent = _telemetry("logs")
    body = gzip.compress(sent.SerializeToString())
    headers = [
        (":method", "POST"), (":scheme", "https"), (":authority", f"127.0.0.1:{attributing_proxy.port}"),
        (":path", "/v1/logs"), ("content-type", "application/x-protobuf"), ("content-encoding", "gzip"),
        ("content-length", str(len(body))), ("authorization", f"Bearer {tokens.plain}"),
    ]
    with H2Client(attributing_proxy.port, ca_file) as client:
        response = client.request(headers, body)
    assert response.status == 200
    received, forwarded = _forwarded("logs", "http", clean)
    _assert_attributed(received, sent, "logs", tenant="team-a", principal="token:ci-runner")
    raw = clean[1].received_requests()[0]["body"]
    assert [value for name, value in forwarded if name == "content-length"] == [str(len(raw))]
    assert "content-encoding" not in {name for name, _ in forwarded}


def _profiles_request() -> profiles_service_pb2.ExportProfilesServiceRequest:
    request = profiles_service_pb2.ExportProfilesServiceRequest()
    request.dictionary.string_table.extend(["", "main", "cpu", "nanoseconds"])
    for service in ("checkout", "cart"):
        resource_profiles = request.resource_profiles.add()
        resource_profiles.resource.attributes.add(key="service.name", value=common_pb2.AnyValue(string_value=service))
        resource_profiles.resource.attributes.add(key=TENANT_KEY, value=common_pb2.AnyValue(string_value="evil"))
        scope = resource_profiles.scope_profiles.add()
        scope.scope.name = "e2e-profiler"
        for index in range(2):
            profile = scope.profiles.add()
            profile.time_unix_nano = 1_700_000_000_000_000_000 + index
            profile.duration_nano = 10_000_000
    return request


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_profiles_forwarded_with_the_attribute(attributing_proxy, clean, ca_file, tokens, transport):
    sent = _profiles_request()
    if transport == "grpc":
        channel = grpc.secure_channel(
            f"127.0.0.1:{attributing_proxy.grpc_port}", grpc.ssl_channel_credentials(read_ca(ca_file)),
            options=[("grpc.ssl_target_name_override", "localhost")],
        )
        with channel:
            call = channel.unary_unary(grpc_method("profiles"), request_serializer=None, response_deserializer=None)
            call(sent.SerializeToString(), metadata=[("authorization", f"Bearer {tokens.plain}")], timeout=10)
    else:
        response = requests.post(
            f"{attributing_proxy.url}/v1development/profiles", data=sent.SerializeToString(),
            headers={"authorization": f"Bearer {tokens.plain}", "content-type": "application/x-protobuf"},
            verify=ca_file, timeout=10,
        )
        assert response.status_code == 200, response.text
    received, _ = _forwarded("profiles", transport, clean)
    _assert_attributed(received, sent, "profiles", tenant="team-a", principal="token:ci-runner")
    assert received.dictionary == sent.dictionary


# --- bodies that lie ------------------------------------------------------------------------


def _post(proxy, ca_file, token, body: bytes, *, encoding: str | None = None, content_type="application/x-protobuf"):
    headers = {"authorization": f"Bearer {token}", "content-type": content_type}
    if encoding:
        headers["content-encoding"] = encoding
    return requests.post(f"{proxy.url}/v1/traces", data=body, headers=headers, verify=ca_file, timeout=15)


def _status(response) -> status_pb2.Status:
    return status_pb2.Status.FromString(response.content)


def _grpc_call(proxy, ca_file, token, body: bytes, *, encoding: str | None = None, compressed_flag: bool = False):
    """A raw gRPC call whose message bytes (and grpc-encoding) the test chooses, through the h2 client."""
    from grpc_helpers import H2Client, grpc_request_headers

    headers = grpc_request_headers(proxy.grpc_port, token)
    if encoding:
        headers.append(("grpc-encoding", encoding))
    framed = bytes([1 if compressed_flag else 0]) + struct.pack(">I", len(body)) + body
    with H2Client(proxy.grpc_port, ca_file) as client:
        return client.request(headers, framed)


def test_http_gzip_bomb_413_and_nothing_forwarded(attributing_proxy, clean, ca_file, tokens):
    response = _post(attributing_proxy, ca_file, tokens.plain, gzip_bomb(64 * MIB), encoding="gzip")
    assert response.status_code == 413
    assert _status(response).code == 8
    assert clean[1].received == 0


def test_grpc_gzip_bomb_resource_exhausted_and_nothing_forwarded(attributing_proxy, clean, ca_file, tokens):
    reply = _grpc_call(attributing_proxy, ca_file, tokens.plain, gzip_bomb(16 * MIB), encoding="gzip", compressed_flag=True)
    assert reply.grpc_status == 8, reply.grpc_message
    assert clean[0].received() == []


@pytest.mark.parametrize(
    "body,encoding",
    [
        (b"\x1f\x8b\x08\x00broken gzip", "gzip"),
        (encode_spans(make_spans(2)).SerializeToString(), "gzip"),  # says gzip, is plain protobuf
        (b"\x0a\x64\x01\x02", None),  # a resource entry claiming 100 bytes, with 2
        (b"\xff\xff\xff\xff", None),
    ],
    ids=["corrupt-gzip", "plain-labelled-gzip", "truncated-message", "not-protobuf"],
)
def test_http_unreadable_payload_400_with_status_and_nothing_forwarded(
    attributing_proxy, clean, ca_file, tokens, body, encoding
):
    response = _post(attributing_proxy, ca_file, tokens.plain, body, encoding=encoding)
    assert response.status_code == 400, response.text
    status = _status(response)
    assert status.code == 3 and status.message.startswith("invalid export request")
    assert clean[1].received == 0


def test_grpc_unreadable_payload_invalid_argument_and_nothing_forwarded(attributing_proxy, clean, ca_file, tokens):
    corrupt = _grpc_call(attributing_proxy, ca_file, tokens.plain, b"\x1f\x8b\x08\x00broken", encoding="gzip", compressed_flag=True)
    assert corrupt.grpc_status == 3
    flag_without_encoding = _grpc_call(attributing_proxy, ca_file, tokens.plain, b"\x0a\x00", compressed_flag=True)
    assert flag_without_encoding.grpc_status == 3
    not_otlp = _grpc_call(attributing_proxy, ca_file, tokens.plain, b"\xff\xff\xff")
    assert not_otlp.grpc_status == 3
    assert clean[0].received() == []


def test_grpc_length_prefix_that_lies_invalid_argument(attributing_proxy, clean, ca_file, tokens):
    from grpc_helpers import H2Client, grpc_request_headers

    message = encode_spans(make_spans(2)).SerializeToString()
    # The prefix claims 10 bytes more than the stream carries before END_STREAM.
    framed = b"\x00" + struct.pack(">I", len(message) + 10) + message
    with H2Client(attributing_proxy.grpc_port, ca_file) as client:
        reply = client.request(grpc_request_headers(attributing_proxy.grpc_port, tokens.plain), framed)
    assert reply.grpc_status == 3
    assert clean[0].received() == []


def test_unknown_codings_415_and_unimplemented(attributing_proxy, clean, ca_file, tokens):
    response = _post(attributing_proxy, ca_file, tokens.plain, b"\x00", encoding="br")
    assert response.status_code == 415
    assert "br" in _status(response).message
    stacked = _post(attributing_proxy, ca_file, tokens.plain, b"\x00", encoding="gzip, gzip")
    assert stacked.status_code == 415
    reply = _grpc_call(attributing_proxy, ca_file, tokens.plain, b"\x00", encoding="snappy", compressed_flag=True)
    assert reply.grpc_status == 12
    assert clean[0].received() == [] and clean[1].received == 0


def test_unauthenticated_payload_is_refused_before_it_is_read(attributing_proxy, clean, ca_file):
    response = _post(attributing_proxy, ca_file, "wrong-token", gzip_bomb(4 * MIB), encoding="gzip")
    assert response.status_code == 401
    assert clean[1].received == 0


# --- counting and the item rate --------------------------------------------------------------


def test_count_only_forwards_the_client_bytes_and_logs_items(binary, certs, tokens_file, receivers, clean, ca_file, tokens, tmp_path):
    proxy = _proxy(binary, certs, tokens_file, receivers, tmp_path, "usage: { count_items: true }\n")
    try:
        payload = gzip.compress(encode_spans(make_spans(5)).SerializeToString())
        response = _post(proxy, ca_file, tokens.plain, payload, encoding="gzip")
        assert response.status_code == 200
        clean[1].wait_for(1)
        [request] = clean[1].received_requests()
        assert request["body"] == payload, "a payload that is only counted goes on as the client sent it"
        assert clean[1].header_values(0, "content-encoding") == ["gzip"]
        lines = [json.loads(line) for line in proxy.logs().splitlines() if '"msg":"request"' in line]
        assert lines[-1]["items"] == 5 and lines[-1]["tenant"] == "team-a"
        assert lines[-1]["bytes_decoded"] == len(gzip.decompress(payload))
        metrics = requests.get(f"{proxy.admin_url}/metrics", timeout=5).text
        labels = 'signal="traces",tenant="team-a",transport="http/1.1"'
        assert _sample(metrics, "otlp_auth_proxy_items_total", labels) == 5
        assert _sample(metrics, "otlp_auth_proxy_decoded_bytes_total", labels) == len(gzip.decompress(payload))
    finally:
        proxy.stop()


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_large_payload_counted_and_forwarded_whole(binary, certs, tokens_file, receivers, clean, ca_file, tokens, tmp_path, transport):
    """Payloads past 256 KiB are read on the thread pool, then relayed like any other."""
    proxy = _proxy(binary, certs, tokens_file, receivers, tmp_path, "usage: { count_items: true }\n")
    try:
        sent = encode_spans(make_spans(3000))
        payload = sent.SerializeToString()
        assert len(payload) > 256 * 1024
        if transport == "grpc":
            reply = _grpc_call(proxy, ca_file, tokens.plain, payload)
            assert reply.grpc_status == 0, reply.grpc_message
            [export] = clean[0].received()
            assert export.raw == payload
        else:
            assert _post(proxy, ca_file, tokens.plain, payload).status_code == 200
            clean[1].wait_for(1)
            assert clean[1].received_requests()[0]["body"] == payload
        lines = [json.loads(line) for line in proxy.logs().splitlines() if '"msg":"request"' in line]
        assert lines[-1]["items"] == 3000
    finally:
        proxy.stop()


def _sample(exposition: str, name: str, labels: str) -> float | None:
    """The value of `name{labels}` (labels in any order) in Prometheus text."""
    wanted = sorted(labels.split(","))
    for line in exposition.splitlines():
        if line.startswith(name + "{"):
            series, value = line.rsplit(" ", 1)
            if sorted(series[len(name) + 1:-1].split(",")) == wanted:
                return float(value)
    return None


def test_item_rate_429_with_retry_after_then_resource_exhausted_with_retry_info(
    binary, certs, tokens_file, receivers, clean, ca_file, tokens, tmp_path
):
    proxy = _proxy(
        binary, certs, tokens_file, receivers, tmp_path,
        "limits: { tenant_rate: { items_per_second: 5, burst_seconds: 1 } }\n",
    )
    try:
        body = encode_spans(make_spans(20)).SerializeToString()
        # Admitted with a full bucket of 5: the 20 spans leave team-a 15 items in debt.
        assert _post(proxy, ca_file, tokens.plain, body).status_code == 200
        limited = _post(proxy, ca_file, tokens.plain, body)
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 3
        assert _status(limited).code == 8
        reply = _grpc_call(proxy, ca_file, tokens.plain, body)
        assert reply.grpc_status == 8
        assert reply.trailer("grpc-status-details-bin") is not None or reply.header("grpc-status-details-bin") is not None
        # Another tenant has its own bucket.
        assert _post(proxy, ca_file, tokens.hashed, body).status_code == 200
        assert clean[1].received == 2
    finally:
        proxy.stop()
