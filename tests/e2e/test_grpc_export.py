"""OTLP/gRPC through the proxy (TLS, ALPN h2, bearer token) to an h2c upstream: the OpenTelemetry
SDK gRPC exporters into the built-in sink, and grpcio clients against a real grpcio receiver,
including every local failure a gRPC client must see with the right status."""

from __future__ import annotations

import time
import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

from conftest import free_port
from grpc_helpers import (
    LOGS_EXPORT,
    TRACE_EXPORT,
    BAD_BATCH_DETAILS,
    BrokenH2CUpstream,
    GrpcReceiver,
    bearer_metadata,
    export_traces,
    grpc_channel,
    grpc_framed,
    grpc_log_exporter,
    grpc_metric_exporter,
    grpc_request_headers,
    grpc_span_exporter,
    h2_request,
    raw_unary,
    read_ca,
    trace_request,
)
from otel_helpers import make_logs, make_metrics, make_spans


def assert_forwarded_headers(stats: dict, tenant: str, path: str) -> None:
    """The sink's last request came over gRPC with exactly one tenant header, the proxy's, and
    no credentials."""
    last = stats["last_request"]
    assert last["path"] == path
    names = [name for name, _ in last["headers"]]
    assert [value for name, value in last["headers"] if name == "x-scope-orgid"] == [tenant], last["headers"]
    assert "authorization" not in names, last["headers"]
    assert stats["requests_with_authorization"] == 0
    assert stats["duplicate_tenant_headers"] == 0


@pytest.fixture
def receiver():
    """Starts in-process grpcio receivers; all stopped at teardown."""
    started: list[GrpcReceiver] = []

    def start(behaviour: str = "ok", max_concurrent_streams: int | None = None) -> GrpcReceiver:
        server = GrpcReceiver(behaviour=behaviour, max_concurrent_streams=max_concurrent_streams).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def channels():
    """grpcio channels opened by a test; all closed at teardown."""
    opened: list[grpc.Channel] = []

    def open_channel(port: int, ca_file: str, **options) -> grpc.Channel:
        channel = grpc_channel(port, ca_file, options=list(options.items()))
        opened.append(channel)
        return channel

    yield open_channel
    for channel in opened:
        channel.close()


# --- 1. SDK gRPC exporters into the sink ---------------------------------------------------


def test_grpc_sdk_span_export_counted_under_token_tenant(proxy, sink, ca_file, tokens):
    sink.require_grpc_port()
    exporter = grpc_span_exporter(proxy.grpc_port, ca_file, tokens.plain)
    try:
        assert exporter.export(make_spans(7)) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    stats = sink.stats()
    assert stats["tenants"] == {"team-a": {"requests": 1, "spans": 7, "data_points": 0, "log_records": 0, "profiles": 0}}
    assert_forwarded_headers(stats, "team-a", TRACE_EXPORT)


def test_grpc_sdk_metric_export_data_points_counted(proxy, sink, ca_file, tokens):
    sink.require_grpc_port()
    data, points = make_metrics()
    exporter = grpc_metric_exporter(proxy.grpc_port, ca_file, tokens.hashed)
    try:
        assert exporter.export(data) == MetricExportResult.SUCCESS
    finally:
        exporter.shutdown()
    stats = sink.stats()
    assert stats["tenants"] == {"team-b": {"requests": 1, "spans": 0, "data_points": points, "log_records": 0, "profiles": 0}}
    assert_forwarded_headers(stats, "team-b", "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")


def test_grpc_sdk_log_export_records_counted(proxy, sink, ca_file, tokens):
    sink.require_grpc_port()
    exporter = grpc_log_exporter(proxy.grpc_port, ca_file, tokens.plain)
    try:
        assert exporter.export(make_logs(4)) == LogRecordExportResult.SUCCESS
    finally:
        exporter.shutdown()
    stats = sink.stats()
    assert stats["tenants"] == {"team-a": {"requests": 1, "spans": 0, "data_points": 0, "log_records": 4, "profiles": 0}}
    assert_forwarded_headers(stats, "team-a", LOGS_EXPORT)


def test_grpc_sdk_span_export_on_http_listener_routed_by_content_type(proxy, sink, ca_file, tokens):
    """Routing is per request, not per port: gRPC sent to the OTLP/HTTP port still goes to the
    gRPC upstream."""
    sink.require_grpc_port()
    exporter = grpc_span_exporter(proxy.port, ca_file, tokens.hashed)
    try:
        assert exporter.export(make_spans(2)) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    stats = sink.stats()
    assert stats["tenants"]["team-b"]["spans"] == 2
    assert_forwarded_headers(stats, "team-b", TRACE_EXPORT)


def test_grpc_sdk_span_export_wrong_token_fails_nothing_reaches_sink(proxy, sink, ca_file, tokens):
    sink.require_grpc_port()
    exporter = grpc_span_exporter(proxy.grpc_port, ca_file, tokens.plain + "x")
    try:
        started = time.monotonic()
        assert exporter.export(make_spans(2)) == SpanExportResult.FAILURE
        assert time.monotonic() - started < 5, "UNAUTHENTICATED must not be retried"
    finally:
        exporter.shutdown()
    assert sink.stats()["requests"] == 0


# --- 2. a real grpcio receiver behind the proxy --------------------------------------------


def test_grpcio_upstream_sees_one_proxy_tenant_and_no_authorization(start_proxy, sink, receiver, channels, ca_file, tokens):
    upstream = receiver()
    proxy = start_proxy(sink.port, grpc_upstream_port=upstream.port)
    channel = channels(proxy.grpc_port, ca_file)
    metadata = bearer_metadata(tokens.plain, ("x-scope-orgid", "evil"), ("x-scope-orgid", "evil2"))
    export_traces(channel, trace_request(5), metadata)
    assert upstream.spans == 5
    exports = [call for call in upstream.calls if call.method == TRACE_EXPORT]
    assert len(exports) == 1, upstream.calls
    assert exports[0].values("x-scope-orgid") == ["team-a"], exports[0].metadata
    assert exports[0].values("authorization") == [], "credentials were forwarded"


def test_grpc_sdk_gzip_export_passed_through_to_grpcio_upstream(start_proxy, sink, receiver, ca_file, tokens):
    """OTEL_EXPORTER_OTLP_COMPRESSION=gzip is common: compressed messages (flag 1, grpc-encoding
    gzip) pass through unchanged and the receiver decompresses them."""
    upstream = receiver()
    proxy = start_proxy(sink.port, grpc_upstream_port=upstream.port)
    exporter = OTLPSpanExporter(
        endpoint=f"https://127.0.0.1:{proxy.grpc_port}",
        credentials=grpc.ssl_channel_credentials(read_ca(ca_file)),
        headers={"authorization": f"Bearer {tokens.plain}"},
        timeout=10,
        compression=grpc.Compression.Gzip,
    )
    try:
        assert exporter.export(make_spans(6)) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert upstream.spans == 6


def test_grpcio_upstream_invalid_argument_relayed_with_message(start_proxy, sink, receiver, channels, ca_file, tokens):
    upstream = receiver("abort")
    proxy = start_proxy(sink.port, grpc_upstream_port=upstream.port)
    channel = channels(proxy.grpc_port, ca_file)
    with pytest.raises(grpc.RpcError) as failure:
        export_traces(channel, trace_request(1), bearer_metadata(tokens.plain))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failure.value
    assert failure.value.details() == "bad batch"
    trailers = dict(failure.value.trailing_metadata() or ())
    assert trailers.get("grpc-status-details-bin") == BAD_BATCH_DETAILS, trailers
    assert trailers.get("x-receiver") == "kept", trailers
    assert upstream.exports == 1


def test_grpcio_3mib_export_crosses_many_flow_control_windows(start_proxy, sink, receiver, channels, ca_file, tokens):
    """A message of 3 MiB (under the 4 MiB default) spans many HTTP/2 windows on both hops; with
    flow control relayed end to end it arrives whole, twice in parallel on one connection."""
    upstream = receiver()
    proxy = start_proxy(sink.port, grpc_upstream_port=upstream.port)
    channel = channels(proxy.grpc_port, ca_file)
    request = trace_request(3000)
    for span in request.resource_spans[0].scope_spans[0].spans:
        span.name = span.name + "-" + "s" * 1000
    assert 3 * 1024 * 1024 < request.ByteSize() < 4 * 1024 * 1024, request.ByteSize()
    stub_call = channel.unary_unary(TRACE_EXPORT, request_serializer=None, response_deserializer=None)
    payload = request.SerializeToString()
    calls = [stub_call.future(payload, metadata=bearer_metadata(tokens.plain), timeout=30) for _ in range(2)]
    assert [c.exception(timeout=40) for c in calls] == [None, None]
    assert upstream.spans == 6000


def test_grpcio_upstream_200_concurrent_calls_one_channel_all_succeed(start_proxy, sink, receiver, channels, ca_file, tokens):
    upstream = receiver()
    proxy = start_proxy(sink.port, grpc_upstream_port=upstream.port)
    channel = channels(proxy.grpc_port, ca_file)
    stub_call = channel.unary_unary(TRACE_EXPORT, request_serializer=None, response_deserializer=None)
    payload = trace_request(1).SerializeToString()
    metadata = bearer_metadata(tokens.hashed)
    calls = [stub_call.future(payload, metadata=metadata, timeout=30) for _ in range(200)]
    deadline = time.monotonic() + 40
    failures = []
    for call in calls:
        error = call.exception(timeout=max(deadline - time.monotonic(), 0.1))
        if error is not None:
            failures.append(error.code())
    assert failures == []
    assert upstream.spans == 200
    assert all(call.values("x-scope-orgid") == ["team-b"] for call in upstream.calls)


def test_grpcio_upstream_max_concurrent_streams_respected_with_more_connections(start_proxy, sink, receiver, channels, ca_file, tokens):
    """The receiver allows 5 streams per connection; 100 concurrent slow calls from one client
    connection all succeed, spread over several upstream connections. A stream the receiver
    refuses (more than its limit, also before its SETTINGS were acknowledged: grpc-core answers
    RST_STREAM REFUSED_STREAM) was never processed and must be retried, not failed as 14."""
    upstream = receiver("slow", max_concurrent_streams=5)
    proxy = start_proxy(sink.port, grpc_upstream_port=upstream.port)
    channel = channels(proxy.grpc_port, ca_file)
    call = channel.unary_unary(TRACE_EXPORT, request_serializer=None, response_deserializer=None)
    payload = trace_request(1).SerializeToString()
    calls = [call.future(payload, metadata=bearer_metadata(tokens.plain), timeout=30) for _ in range(100)]
    deadline = time.monotonic() + 40
    failures = [error.code() for c in calls if (error := c.exception(timeout=max(deadline - time.monotonic(), 0.1)))]
    assert failures == [], f"{len(failures)} of 100 calls failed"
    assert upstream.spans == 100
    assert len(upstream.peers) >= 2, upstream.peers


def test_grpcio_upstream_restarted_pooled_connection_replaced(start_proxy, sink, receiver, channels, ca_file, tokens):
    """The receiver restarts (GOAWAY, close) between two exports: the proxy must not keep using
    its dead pooled connection, so the export after the restart succeeds."""
    first = receiver()
    proxy = start_proxy(sink.port, grpc_upstream_port=first.port)
    channel = channels(proxy.grpc_port, ca_file)
    export_traces(channel, trace_request(1), bearer_metadata(tokens.plain))
    assert first.spans == 1
    first.stop()
    second = GrpcReceiver().start(port=first.port)
    try:
        export_traces(channel, trace_request(2), bearer_metadata(tokens.plain))
        assert second.spans == 2
    finally:
        second.stop()


def test_grpc_proxy_logs_never_contain_tokens(proxy, sink, ca_file, tokens, channels):
    sink.require_grpc_port()
    channel = channels(proxy.grpc_port, ca_file)
    for token in (tokens.plain, tokens.hashed, tokens.plain + "-wrong", "Bearer " + tokens.hashed):
        try:
            export_traces(channel, trace_request(1), bearer_metadata(token))
        except grpc.RpcError:
            pass
    logs = proxy.logs()
    for secret in (tokens.plain, tokens.hashed):
        assert secret not in logs
        assert secret[:12] not in logs


# --- 3. failures a grpcio client sees --------------------------------------------------------


@pytest.mark.parametrize("credential", ["none", "wrong"])
def test_grpcio_bad_credentials_unauthenticated_nothing_upstream(start_proxy, sink, receiver, channels, ca_file, tokens, credential):
    upstream = receiver()
    proxy = start_proxy(sink.port, grpc_upstream_port=upstream.port)
    channel = channels(proxy.grpc_port, ca_file)
    token = None if credential == "none" else tokens.plain[:-1]
    with pytest.raises(grpc.RpcError) as failure:
        export_traces(channel, trace_request(1), bearer_metadata(token))
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED, failure.value
    assert tokens.plain not in (failure.value.details() or "")
    assert upstream.calls == []


@pytest.mark.parametrize("listener", ["grpc", "http"])
def test_h2_missing_token_trailers_only_unauthenticated(proxy, sink, ca_file, listener):
    """The local rejection is a trailers-only reply: :status 200, content-type
    application/grpc, grpc-status 16, END_STREAM on the HEADERS frame (on either listener)."""
    port = proxy.grpc_port if listener == "grpc" else proxy.port
    body = b"\x00\x00\x00\x00\x00"
    response = h2_request(port, ca_file, grpc_request_headers(port, None), body)
    assert response.status == 200
    assert (response.header("content-type") or "").startswith("application/grpc")
    assert response.ended_on_headers, (response.headers, response.trailers)
    assert response.header("grpc-status") == "16"
    assert response.header("grpc-message")
    assert response.data == b""
    assert sink.stats()["requests"] == 0


def test_grpcio_message_over_max_recv_msg_size_resource_exhausted(start_proxy, sink, receiver, channels, ca_file, tokens):
    upstream = receiver()
    proxy = start_proxy(sink.port, grpc_upstream_port=upstream.port)
    channel = channels(proxy.grpc_port, ca_file, **{"grpc.max_send_message_length": 8 * 1024 * 1024})
    payload = b"\x0a" + b"\xff" * (5 * 1024 * 1024)  # never parsed: the length prefix alone is too big
    with pytest.raises(grpc.RpcError) as failure:
        raw_unary(channel, TRACE_EXPORT, payload, bearer_metadata(tokens.plain), timeout=20)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, failure.value
    assert upstream.exports == 0
    # The same connection still carries a normal export afterwards.
    export_traces(channel, trace_request(2), bearer_metadata(tokens.plain))
    assert upstream.spans == 2


def test_grpcio_message_under_raised_max_recv_msg_size_forwarded(start_proxy, sink, receiver, channels, ca_file, tokens):
    """The limit is the configured one, not a fixed 4 MiB: a 5 MiB export passes at 8MiB."""
    upstream = receiver()
    proxy = start_proxy(sink.port, grpc_upstream_port=upstream.port, max_recv_msg_size="8MiB")
    channel = channels(proxy.grpc_port, ca_file, **{"grpc.max_send_message_length": 8 * 1024 * 1024})
    request = trace_request(1)
    request.resource_spans[0].scope_spans[0].spans[0].name = "x" * (5 * 1024 * 1024)
    export_traces(channel, request, bearer_metadata(tokens.plain), timeout=20)
    assert upstream.spans == 1


def test_grpcio_upstream_down_unavailable(start_proxy, sink, channels, ca_file, tokens):
    proxy = start_proxy(sink.port, grpc_upstream_port=free_port())
    channel = channels(proxy.grpc_port, ca_file)
    with pytest.raises(grpc.RpcError) as failure:
        export_traces(channel, trace_request(1), bearer_metadata(tokens.plain))
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE, failure.value
    # The proxy answered (grpcio's own connection failure to the proxy would say so).
    assert "failed to connect" not in (failure.value.details() or "").lower(), failure.value.details()
    response = h2_request(proxy.grpc_port, ca_file, grpc_request_headers(proxy.grpc_port, tokens.plain), b"\x00" * 5)
    assert response.status == 200
    assert response.grpc_status == 14


def test_grpcio_slow_upstream_client_deadline_exceeded(start_proxy, sink, receiver, channels, ca_file, tokens):
    upstream = receiver("sleep")
    proxy = start_proxy(sink.port, grpc_upstream_port=upstream.port)
    channel = channels(proxy.grpc_port, ca_file)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as failure:
        export_traces(channel, trace_request(1), bearer_metadata(tokens.plain), timeout=1)
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, failure.value
    assert time.monotonic() - started < 2.9  # before the receiver's 3 s answer
    assert upstream.exports == 1  # it did reach the receiver; the deadline was enforced on the way back


def test_h2_grpc_timeout_header_proxy_answers_deadline_exceeded(start_proxy, sink, receiver, ca_file, tokens):
    """A client that relies on the proxy to honour grpc-timeout (no local deadline) gets 4 from
    the proxy itself, well before the receiver's 3 s answer."""
    upstream = receiver("sleep")
    proxy = start_proxy(sink.port, grpc_upstream_port=upstream.port)
    body = grpc_framed(trace_request(1).SerializeToString())
    started = time.monotonic()
    headers = grpc_request_headers(proxy.grpc_port, tokens.plain, TRACE_EXPORT, ("grpc-timeout", "1S"))
    response = h2_request(proxy.grpc_port, ca_file, headers, body, timeout=10)
    elapsed = time.monotonic() - started
    assert response.grpc_status == 4, (response.headers, response.trailers, response.reset_code)
    assert 0.8 < elapsed < 2.9, elapsed  # the deadline, not the receiver's 3 s answer


def test_h2_upstream_timeout_setting_deadline_exceeded(start_proxy, sink, receiver, ca_file, tokens):
    upstream = receiver("sleep")
    proxy = start_proxy(sink.port, grpc_upstream_port=upstream.port, upstream_timeout="1s")
    body = grpc_framed(trace_request(1).SerializeToString())
    started = time.monotonic()
    response = h2_request(proxy.grpc_port, ca_file, grpc_request_headers(proxy.grpc_port, tokens.plain), body, timeout=10)
    elapsed = time.monotonic() - started
    assert response.status == 200
    assert response.grpc_status == 4, (response.headers, response.trailers, response.reset_code)
    assert elapsed < 2.9, elapsed


def test_grpcio_unknown_method_unimplemented_nothing_upstream(start_proxy, sink, receiver, channels, ca_file, tokens):
    upstream = receiver()
    proxy = start_proxy(sink.port, grpc_upstream_port=upstream.port)
    channel = channels(proxy.grpc_port, ca_file)
    with pytest.raises(grpc.RpcError) as failure:
        raw_unary(channel, "/foo.Bar/Baz", b"", bearer_metadata(tokens.plain))
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED, failure.value
    assert upstream.calls == [], "the proxy forwarded a method it must not"
    response = h2_request(
        proxy.grpc_port, ca_file, grpc_request_headers(proxy.grpc_port, tokens.plain, "/foo.Bar/Baz"), b"\x00" * 5
    )
    assert response.status == 200
    assert response.ended_on_headers
    assert response.grpc_status == 12
    assert upstream.calls == []


def test_control_grpcio_direct_to_sink_h2c_counts_client_tenant(sink):
    """Direct to the sink's h2c listener (no proxy): the sink counts gRPC exports per
    x-scope-orgid as sent, so the proxy tests above see the proxy's rewriting, not the sink's."""
    port = sink.require_grpc_port()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        export_traces(channel, trace_request(3), [("x-scope-orgid", "direct")])
    finally:
        channel.close()
    stats = sink.stats()
    assert stats["tenants"] == {"direct": {"requests": 1, "spans": 3, "data_points": 0, "log_records": 0, "profiles": 0}}
    assert stats["last_request"]["path"] == TRACE_EXPORT


@pytest.mark.parametrize("mode", ["reset", "close"])
def test_grpcio_upstream_resets_or_drops_unavailable(start_proxy, sink, channels, ca_file, tokens, mode):
    """A receiver that resets the stream (RST_STREAM) or drops the connection mid-request gives
    14 UNAVAILABLE, which exporters retry: never UNKNOWN or INTERNAL."""
    upstream = BrokenH2CUpstream(mode)
    try:
        proxy = start_proxy(sink.port, grpc_upstream_port=upstream.port)
        channel = channels(proxy.grpc_port, ca_file)
        with pytest.raises(grpc.RpcError) as failure:
            export_traces(channel, trace_request(1), bearer_metadata(tokens.plain))
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE, failure.value
        assert upstream.requests >= 1, "the request never reached the upstream"
        # The proxy survives and the same client connection still works for the next call.
        assert proxy.proc.poll() is None, proxy.describe()
        response = h2_request(proxy.grpc_port, ca_file, grpc_request_headers(proxy.grpc_port, tokens.plain), b"\x00" * 5)
        assert response.status == 200
        assert response.grpc_status == 14
    finally:
        upstream.stop()
