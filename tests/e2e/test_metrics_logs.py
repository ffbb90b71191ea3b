"""Operations: the admin listener (/metrics parsed with the Prometheus text parser, /healthz, /readyz)
and the access log, against a real proxy process in front of the sink."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from auth_helpers import bearer, post_otlp
from conftest import free_port, start_proxy_process, write_proxy_config
from grpc_helpers import bearer_metadata, export_traces, grpc_channel, trace_request


def admin_get(proxy, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(proxy.admin_url + path, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(proxy) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    status, text = admin_get(proxy, "/metrics")
    assert status == 200, text
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def request_lines(proxy) -> list[dict]:
    lines = []
    for line in proxy.logs().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("msg") == "request":
                lines.append(record)
    return lines


@pytest.fixture
def ops_proxy(start_proxy, sink):
    return start_proxy(sink.port, grpc_upstream_port=sink.grpc_port)


def test_admin_metrics_counters_move_with_requests_and_rejections(ops_proxy, ca_file, tokens):
    before = scrape(ops_proxy)
    http_body = trace_request(2).SerializeToString()
    other_body = trace_request(1).SerializeToString()
    grpc_message = trace_request(3)
    assert post_otlp(ops_proxy, ca_file, headers=bearer(tokens.plain), body=http_body).status == 200
    assert post_otlp(ops_proxy, ca_file, headers=bearer(tokens.hashed), body=other_body).status == 200
    assert post_otlp(ops_proxy, ca_file, headers=bearer("not-a-valid-token-0123456789")).status == 401
    assert post_otlp(ops_proxy, ca_file, signal="logs").status == 401
    with grpc_channel(ops_proxy.grpc_port, ca_file) as channel:
        export_traces(channel, grpc_message, bearer_metadata(tokens.plain))
        with pytest.raises(grpc.RpcError) as refused:
            export_traces(channel, trace_request(1), bearer_metadata("wrong-token-abcdefghijklmnop"))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    after = scrape(ops_proxy)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "otlp_auth_proxy_requests_total"
    assert delta(requests, signal="traces", transport="http/1.1", tenant="team-a", outcome="forwarded") == 1
    assert delta(requests, signal="traces", transport="http/1.1", tenant="team-b", outcome="forwarded") == 1
    assert delta(requests, signal="traces", transport="http/1.1", tenant="", outcome="refused") == 1
    assert delta(requests, signal="logs", transport="http/1.1", tenant="", outcome="refused") == 1
    assert delta(requests, signal="traces", transport="grpc", tenant="team-a", outcome="forwarded") == 1
    assert delta(requests, signal="traces", transport="grpc", tenant="", outcome="refused") == 1
    failures = "otlp_auth_proxy_auth_failures_total"
    assert delta(failures, method="bearer", reason="unknown_token") == 2
    assert delta(failures, method="none", reason="missing_credential") == 1
    assert delta("otlp_auth_proxy_request_duration_seconds_count", signal="traces", transport="grpc") == 2
    # Body bytes per tenant as they came: the gRPC message with its 5-byte frame prefix.
    received = "otlp_auth_proxy_received_bytes_total"
    assert delta(received, signal="traces", transport="grpc", tenant="team-a") == 5 + grpc_message.ByteSize()
    assert delta(received, signal="traces", transport="http/1.1", tenant="team-a") == len(http_body)
    assert delta(received, signal="traces", transport="http/1.1", tenant="team-b") == len(other_body)
    assert delta("otlp_auth_proxy_connections_accepted_total", listener="http") >= 4
    assert value(after, "otlp_auth_proxy_open_streams") == 0
    # Present from the start, so a reload failure alert has a series to watch.
    assert ("otlp_auth_proxy_reloads_total", (("result", "failure"),)) in after
    assert value(after, "otlp_auth_proxy_last_reload_success_timestamp_seconds") > time.time() - 3600
    not_after = value(after, "otlp_auth_proxy_certificate_not_after_timestamp_seconds", certificate="server")
    assert not_after > time.time()


def test_admin_tls_handshake_failure_counted(ops_proxy):
    import socket

    before = scrape(ops_proxy)
    with socket.create_connection(("127.0.0.1", ops_proxy.port), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plaintext to the TLS port
        raw.settimeout(5)
        try:
            raw.recv(1024)
        except OSError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = scrape(ops_proxy)
        moved = sum(v for (n, _), v in after.items() if n == "otlp_auth_proxy_tls_handshake_failures_total") - sum(
            v for (n, _), v in before.items() if n == "otlp_auth_proxy_tls_handshake_failures_total"
        )
        if moved >= 1:
            return
        time.sleep(0.1)
    pytest.fail("a plaintext request to the TLS port did not count a handshake failure")


def test_admin_healthz_readyz(ops_proxy):
    assert admin_get(ops_proxy, "/healthz") == (200, "ok\n")
    assert admin_get(ops_proxy, "/readyz") == (200, "ready\n")
    assert admin_get(ops_proxy, "/other")[0] == 404


def test_admin_readyz_503_when_upstream_unreachable(start_proxy):
    proxy = start_proxy(free_port())
    status, body = admin_get(proxy, "/readyz")
    assert status == 503
    assert "unreachable: upstream.http 127.0.0.1:" in body
    assert admin_get(proxy, "/healthz")[0] == 200


def test_access_log_json_one_line_per_request_without_secrets(ops_proxy, ca_file, tokens):
    assert post_otlp(ops_proxy, ca_file, headers=bearer(tokens.plain)).status == 200
    assert post_otlp(ops_proxy, ca_file, headers=bearer(tokens.plain[:-2] + "zz")).status == 401
    with grpc_channel(ops_proxy.grpc_port, ca_file) as channel:
        export_traces(channel, trace_request(2), bearer_metadata(tokens.hashed))
    deadline = time.monotonic() + 5
    while len(request_lines(ops_proxy)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    ok, refused, grpc_ok = request_lines(ops_proxy)[:3]
    assert ok["tenant"] == "team-a" and ok["principal"] == "token:ci-runner"
    assert (ok["status"], ok["auth_result"], ok["outcome"], ok["signal"]) == (200, "ok", "forwarded", "traces")
    assert ok["bytes_in"] > 0 and ok["duration_ms"] >= 0 and ok["peer"].startswith("127.0.0.1:")
    assert (refused["status"], refused["auth_result"], refused["auth_reason"]) == (401, "failure", "unknown_token")
    assert "tenant" not in refused and "principal" not in refused
    assert (grpc_ok["transport"], grpc_ok["grpc_status"], grpc_ok["tenant"]) == ("grpc", 0, "team-b")
    logs = ops_proxy.logs()
    for secret in (tokens.plain, tokens.hashed, tokens.plain[:-2] + "zz"):
        assert secret not in logs
        assert secret[:12] not in logs
    # Application logs are JSON lines too.
    assert all(line.startswith("{") for line in logs.splitlines() if line)


def test_access_log_logfmt(binary, certs, tokens_file, sink, ca_file, tokens, tmp_path):
    config = write_proxy_config(
        tmp_path / "logfmt", certs=certs, upstream_port=sink.port, grpc_upstream_port=sink.grpc_port,
        tokens_file=tokens_file,
    )
    config.write_text(config.read_text() + "log: { format: logfmt }\n")
    proxy = start_proxy_process(binary, config)
    try:
        assert post_otlp(proxy, ca_file, headers=bearer(tokens.plain)).status == 200
        deadline = time.monotonic() + 5
        lines: list[str] = []
        while not lines and time.monotonic() < deadline:
            lines = [line for line in proxy.logs().splitlines() if " msg=request " in line]
            time.sleep(0.05)
        assert lines, proxy.logs()
        assert " tenant=team-a principal=token:ci-runner status=200 " in lines[0]
        assert tokens.plain[:12] not in proxy.logs()
    finally:
        proxy.stop()


def test_admin_disabled_with_empty_endpoint(binary, certs, tokens_file, sink, tmp_path):
    config = write_proxy_config(tmp_path / "noadmin", certs=certs, upstream_port=sink.port, tokens_file=tokens_file)
    config.write_text(config.read_text().replace('admin: { endpoint: "127.0.0.1:0" }', 'admin: { endpoint: "" }'))
    proxy = start_proxy_process(binary, config)
    try:
        assert proxy.match.group("aport") is None
    finally:
        proxy.stop()
