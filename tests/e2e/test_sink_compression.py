"""The built-in sink reads what OTLP exporters send by default: gzip (and deflate, zstd) over
OTLP/HTTP and OTLP/gRPC, straight from the OpenTelemetry SDK exporters and through the proxy in
front of it (as `make run` wires them; the proxy passes compressed bodies through untouched).
Corrupt data is refused, and a gzip bomb gets 413 / RESOURCE_EXHAUSTED without the sink's memory
growing past its body limit."""

from __future__ import annotations

import gzip
import shutil
import socket
import struct
import subprocess

import grpc
import pytest
import requests
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ResponseReceived, StreamEnded
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

from grpc_helpers import TRACE_EXPORT, h2_request, read_ca
from otel_helpers import make_logs, make_metrics, make_spans
from otlp_payloads import gzip_bomb
from process_probes import rss_kib

MIB = 1024 * 1024
# The sink's body limit (OTLPSink's default maxBodyBytes; `otlp-auth-proxy sink` has no flag for it).
SINK_LIMIT = 64 * MIB
BOMB_SIZE = 512 * MIB


def header_values(stats: dict, name: str) -> list[str]:
    return [value for key, value in stats["last_request"]["headers"] if key == name]


def vm_hwm_kib(pid: int) -> int:
    """Peak resident memory (VmHWM) in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM line for pid {pid}")


def zstd_compress(data: bytes) -> bytes:
    assert shutil.which("zstd"), "the zstd command is missing: run scripts/install-deps.sh"
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def grpc_framed(message: bytes, compressed: bool) -> bytes:
    return bytes([1 if compressed else 0]) + struct.pack(">I", len(message)) + message


# --- the SDK exporters straight into the sink ---------------------------------------------------


def test_sdk_http_gzip_and_deflate_exports_straight_to_sink_counted(sink):
    spans = OTLPSpanExporter(endpoint=f"{sink.url}/v1/traces", timeout=10, compression=Compression.Gzip)
    metrics = OTLPMetricExporter(endpoint=f"{sink.url}/v1/metrics", timeout=10, compression=Compression.Gzip)
    logs = OTLPLogExporter(endpoint=f"{sink.url}/v1/logs", timeout=10, compression=Compression.Deflate)
    data, points = make_metrics()
    try:
        assert spans.export(make_spans(9)) == SpanExportResult.SUCCESS
        assert header_values(sink.stats(), "content-encoding") == ["gzip"]
        assert metrics.export(data) == MetricExportResult.SUCCESS
        assert logs.export(make_logs(4)) == LogRecordExportResult.SUCCESS
        assert header_values(sink.stats(), "content-encoding") == ["deflate"]
    finally:
        for exporter in (spans, metrics, logs):
            exporter.shutdown()
    assert sink.stats()["tenants"] == {"": {"requests": 3, "spans": 9, "data_points": points, "log_records": 4, "profiles": 0}}


def test_sdk_grpc_gzip_and_deflate_exports_straight_to_sink_counted(sink):
    port = sink.require_grpc_port()
    spans = GrpcSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10, compression=grpc.Compression.Gzip)
    metrics = GrpcMetricExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10, compression=grpc.Compression.Gzip)
    logs = GrpcLogExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10, compression=grpc.Compression.Deflate)
    data, points = make_metrics()
    try:
        assert spans.export(make_spans(8)) == SpanExportResult.SUCCESS
        assert header_values(sink.stats(), "grpc-encoding") == ["gzip"]
        assert metrics.export(data) == MetricExportResult.SUCCESS
        assert logs.export(make_logs(3)) == LogRecordExportResult.SUCCESS
        assert header_values(sink.stats(), "grpc-encoding") == ["deflate"]
    finally:
        for exporter in (spans, metrics, logs):
            exporter.shutdown()
    assert sink.stats()["tenants"] == {"": {"requests": 3, "spans": 8, "data_points": points, "log_records": 3, "profiles": 0}}


# --- through the proxy (TLS, bearer token), as `make run` runs them ------------------------------


def test_sdk_http_gzip_export_through_proxy_counted_under_tenant(proxy, sink, ca_file, tokens):
    exporter = OTLPSpanExporter(
        endpoint=f"{proxy.url}/v1/traces", certificate_file=ca_file, timeout=10,
        headers={"authorization": f"Bearer {tokens.plain}"}, compression=Compression.Gzip,
    )
    try:
        assert exporter.export(make_spans(6)) == SpanExportResult.SUCCESS
        assert exporter.export(make_spans(5)) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    stats = sink.stats()
    assert stats["tenants"] == {"team-a": {"requests": 2, "spans": 11, "data_points": 0, "log_records": 0, "profiles": 0}}
    # The proxy forwarded the body as the exporter compressed it.
    assert header_values(stats, "content-encoding") == ["gzip"]
    assert stats["requests_with_authorization"] == 0


def test_sdk_grpc_gzip_export_through_proxy_counted_under_tenant(proxy, sink, ca_file, tokens):
    exporter = GrpcSpanExporter(
        endpoint=f"https://127.0.0.1:{proxy.grpc_port}", credentials=grpc.ssl_channel_credentials(read_ca(ca_file)),
        headers={"authorization": f"Bearer {tokens.hashed}"}, timeout=10, compression=grpc.Compression.Gzip,
    )
    try:
        assert exporter.export(make_spans(7)) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    stats = sink.stats()
    assert stats["tenants"] == {"team-b": {"requests": 1, "spans": 7, "data_points": 0, "log_records": 0, "profiles": 0}}
    assert header_values(stats, "grpc-encoding") == ["gzip"]


def test_zstd_bodies_and_messages_through_proxy_counted(proxy, sink, ca_file, tokens):
    body = encode_spans(make_spans(4)).SerializeToString()
    compressed = zstd_compress(body)
    http = requests.post(
        f"{proxy.url}/v1/traces", data=compressed, verify=ca_file, timeout=10,
        headers={"authorization": f"Bearer {tokens.plain}", "content-type": "application/x-protobuf", "content-encoding": "zstd"},
    )
    assert http.status_code == 200, http.text
    reply = h2_request(proxy.grpc_port, ca_file, [
        (":method", "POST"), (":scheme", "https"), (":authority", "127.0.0.1"), (":path", TRACE_EXPORT),
        ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-encoding", "zstd"),
        ("authorization", f"Bearer {tokens.plain}"),
    ], grpc_framed(compressed, compressed=True))
    assert reply.grpc_status == 0, reply.grpc_message
    assert reply.header("grpc-accept-encoding") == "gzip, zstd, deflate, identity"
    assert sink.tenant("team-a")["spans"] == 8


# --- refusals -----------------------------------------------------------------------------------


def test_corrupt_gzip_body_400_straight_and_through_proxy(proxy, sink, ca_file, tokens):
    damaged = bytearray(gzip.compress(encode_spans(make_spans(3)).SerializeToString()))
    damaged[-6] ^= 0xFF  # the CRC-32
    headers = {"content-type": "application/x-protobuf", "content-encoding": "gzip"}
    straight = requests.post(f"{sink.url}/v1/traces", data=bytes(damaged), headers=headers, timeout=10)
    assert straight.status_code == 400
    assert straight.text.startswith("content-encoding gzip: corrupt compressed data"), straight.text
    through = requests.post(
        f"{proxy.url}/v1/traces", data=bytes(damaged), verify=ca_file, timeout=10,
        headers={**headers, "authorization": f"Bearer {tokens.plain}"},
    )
    assert through.status_code == 400, through.text
    stats = sink.stats()
    assert stats["requests"] == 2
    assert all(counts["spans"] == 0 for counts in stats["tenants"].values()), stats


def test_unknown_content_encoding_415_names_it(sink):
    response = requests.post(
        f"{sink.url}/v1/traces", data=b"\x00" * 16, timeout=10,
        headers={"content-type": "application/x-protobuf", "content-encoding": "br"},
    )
    assert response.status_code == 415
    assert "content-encoding br is not supported" in response.text
    assert response.headers["accept-encoding"] == "gzip, zstd, deflate, identity"


def test_gzip_bomb_http_413_sink_memory_stays_within_its_limit(start_sink):
    """512 MiB of zeros as about 500 KiB of gzip: the sink answers 413 having decompressed at most
    its 64 MiB limit, so its resident memory grows by well under the bomb (if it inflated the bomb
    it would grow by 512 MiB or more)."""
    sink = start_sink()
    pid = sink.proc.pid
    bomb = gzip_bomb(BOMB_SIZE)
    assert len(bomb) < 1 * MIB
    headers = {"content-type": "application/x-protobuf", "content-encoding": "gzip"}
    # Warm up: the gzip path once with a small body, so its code and buffers are already resident.
    small = requests.post(f"{sink.url}/v1/traces", data=gzip.compress(encode_spans(make_spans(2)).SerializeToString()),
                          headers=headers, timeout=10)
    assert small.status_code == 200
    rss_before, hwm_before = rss_kib(pid), vm_hwm_kib(pid)

    response = requests.post(f"{sink.url}/v1/traces", data=bomb, headers=headers, timeout=60)

    rss_after, hwm_after = rss_kib(pid), vm_hwm_kib(pid)
    measured = f"VmRSS {rss_before} -> {rss_after} KiB, VmHWM {hwm_before} -> {hwm_after} KiB"
    print(f"sink after a {BOMB_SIZE // MIB} MiB gzip bomb: {measured}")
    assert response.status_code == 413, response.text
    assert response.text == f"request body larger than {SINK_LIMIT} bytes after content-encoding gzip is decoded\n"
    # The peak (VmHWM) shows what was decompressed: at most the limit's worth of output (its last
    # growth copies half of it once), never the bomb's 512 MiB. Afterwards that memory is returned.
    bound_kib = (SINK_LIMIT + SINK_LIMIT // 2) // 1024
    assert rss_after - rss_before < bound_kib, measured
    assert hwm_after - rss_before < bound_kib + 16 * 1024, measured
    assert sink.stats()["tenants"] == {"": {"requests": 2, "spans": 2, "data_points": 0, "log_records": 0, "profiles": 0}}


def test_gzip_bomb_grpc_through_proxy_resource_exhausted_sink_memory_bounded(start_sink, start_proxy, ca_file, tokens):
    """The same bomb as one gRPC message (flag 1, grpc-encoding gzip) through the proxy, which
    passes it on compressed: the sink answers RESOURCE_EXHAUSTED within its limit."""
    sink = start_sink()
    proxy = start_proxy(sink.port, grpc_upstream_port=sink.require_grpc_port())
    pid = sink.proc.pid
    bomb = gzip_bomb(BOMB_SIZE)
    headers = [
        (":method", "POST"), (":scheme", "https"), (":authority", "127.0.0.1"), (":path", TRACE_EXPORT),
        ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-encoding", "gzip"),
        ("authorization", f"Bearer {tokens.plain}"),
    ]
    warm = h2_request(proxy.grpc_port, ca_file, headers,
                      grpc_framed(gzip.compress(encode_spans(make_spans(2)).SerializeToString()), compressed=True))
    assert warm.grpc_status == 0, warm.grpc_message
    rss_before, hwm_before = rss_kib(pid), vm_hwm_kib(pid)

    reply = h2_request(proxy.grpc_port, ca_file, headers, grpc_framed(bomb, compressed=True), timeout=60)

    rss_after, hwm_after = rss_kib(pid), vm_hwm_kib(pid)
    measured = f"VmRSS {rss_before} -> {rss_after} KiB, VmHWM {hwm_before} -> {hwm_after} KiB"
    print(f"sink after a {BOMB_SIZE // MIB} MiB gzip bomb over gRPC: {measured}")
    assert reply.grpc_status == 8, reply.grpc_message
    assert "after grpc-encoding gzip is decoded" in (reply.grpc_message or "")
    bound_kib = (SINK_LIMIT + SINK_LIMIT // 2) // 1024
    assert rss_after - rss_before < bound_kib, measured
    assert hwm_after - rss_before < bound_kib + 16 * 1024, measured
    assert sink.tenant("team-a") == {"requests": 2, "spans": 2, "data_points": 0, "log_records": 0, "profiles": 0}


@pytest.mark.parametrize("flag_header", [[], [("grpc-encoding", "identity")]], ids=["no-encoding", "identity"])
def test_compressed_grpc_message_without_encoding_internal(sink, flag_header):
    """A message with the compressed flag on a call that declares no encoding is a gRPC protocol
    error (INTERNAL). grpcio never sends one, so the request is made by hand with h2 over h2c."""
    message = grpc_framed(gzip.compress(encode_spans(make_spans(1)).SerializeToString()), compressed=True)
    with socket.create_connection(("127.0.0.1", sink.require_grpc_port()), timeout=10) as sock:
        connection = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        connection.initiate_connection()
        connection.send_headers(1, [
            (":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", TRACE_EXPORT),
            ("content-type", "application/grpc"), ("te", "trailers"), *flag_header,
        ])
        connection.send_data(1, message, end_stream=True)
        sock.sendall(connection.data_to_send())
        headers: dict[str, str] = {}
        ended = False
        while not ended:
            received = sock.recv(65536)
            assert received, "the sink closed the connection without answering"
            for event in connection.receive_data(received):
                if isinstance(event, ResponseReceived):
                    headers.update(dict(event.headers))
                elif isinstance(event, StreamEnded):
                    ended = True
            sock.sendall(connection.data_to_send())
    assert headers.get("grpc-status") == "13", headers
    assert sink.stats()["tenants"][""]["spans"] == 0
