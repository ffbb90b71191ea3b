"""Reload and drain with real processes: SIGHUP and file-watch reloads while OpenTelemetry SDK
exporters send, certificate rotation through a Kubernetes-style symlink swap, broken reloads that
keep the old state, JWKS keys across reloads, and SIGTERM while slow requests are in flight."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from opentelemetry.sdk.trace.export import SpanExportResult

from auth_helpers import (
    DAY,
    NOW,
    Authority,
    JWKSServer,
    SigningKey,
    _pem_cert,
    _pem_key,
    bearer,
    claims,
    jwks,
    post_otlp,
)
from receivers import RecordingReceiver
from conftest import Proxy, Sink, start_proxy_process
from grpc_helpers import grpc_span_exporter
from otel_helpers import make_spans, span_exporter

RELOADED = "configuration reloaded"
FAILED = "reload failed"


class SecretMount:
    """A directory laid out like a mounted Kubernetes Secret: `tls.crt` and `tls.key` are links to
    `..data/…`, and `..data` links to a versioned directory that an update replaces atomically."""

    def __init__(self, directory: Path, authority: Authority):
        self.directory = directory
        self.authority = authority
        self.version = 0
        directory.mkdir(parents=True)
        self.serial = self.publish()
        (directory / "tls.crt").symlink_to("..data/tls.crt")
        (directory / "tls.key").symlink_to("..data/tls.key")

    def issue(self, **validity) -> tuple[bytes, bytes, int]:
        cert, key = self.authority.issue(
            "localhost", dns=("localhost",), ips=("127.0.0.1",), eku=(ExtendedKeyUsageOID.SERVER_AUTH,), **validity
        )
        return _pem_cert(cert), _pem_key(key), cert.serial_number

    def publish(self, cert: bytes | None = None, key: bytes | None = None, **validity) -> int:
        """Writes a new version (a fresh certificate unless given) and swaps `..data` to it."""
        serial = 0
        if cert is None:
            cert, key, serial = self.issue(**validity)
        self.version += 1
        version = self.directory / f"..v{self.version}"
        version.mkdir()
        (version / "tls.crt").write_bytes(cert)
        (version / "tls.key").write_bytes(key)
        link = self.directory / "..data_tmp"
        link.symlink_to(version.name)
        os.replace(link, self.directory / "..data")
        return serial


def presented_serial(port: int, ca_file: str) -> int:
    """The serial number of the certificate a new TLS handshake presents."""
    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def write_config(directory: Path, mount: Path, tokens_file: Path, sink_http: int, sink_grpc: int, **extra) -> Path:
    """JSON is YAML too."""
    config = {
        "grpc": {"endpoint": "127.0.0.1:0"},
        "http": {"endpoint": "127.0.0.1:0"},
        "tls": {"cert_file": str(mount / "tls.crt"), "key_file": str(mount / "tls.key")},
        "upstream": {"grpc": f"127.0.0.1:{sink_grpc}", "http": f"127.0.0.1:{sink_http}"},
        "auth": {"bearer": {"tokens_file": str(tokens_file)}},
        "admin": {"endpoint": "127.0.0.1:0"},
        **extra,
    }
    path = directory / "proxy.yaml"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def wait_for_log(proxy: Proxy, needle: str, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while proxy.logs().count(needle) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"expected {count}× {needle!r} in the logs\n{proxy.describe()}")
        time.sleep(0.02)


@pytest.fixture
def pki(tmp_path: Path):
    authority = Authority.root("reload CA")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(_pem_cert(authority.cert))
    return authority, str(ca_file)


@pytest.fixture
def reload_proxy(binary: Path, tmp_path: Path, tokens_file: Path, sink: Sink, pki):
    """A proxy serving the certificate of a Secret-style mount, polling its files every 100ms."""
    authority, _ = pki
    mount = SecretMount(tmp_path / "secret", authority)
    config = write_config(
        tmp_path, mount.directory, tokens_file, sink.port, sink.require_grpc_port(),
        reload={"watch_interval": "100ms"},
    )
    proxy = start_proxy_process(binary, config)
    yield proxy, mount, config
    proxy.stop()


def test_100_reloads_by_sighup_and_file_watch_while_sdk_exporters_send_lose_nothing(
    reload_proxy, sink, pki, tokens
):
    proxy, mount, _ = reload_proxy
    _, ca_file = pki
    stop = threading.Event()
    results: dict[str, list] = {"http": [], "http-new-connection": [], "grpc": []}

    def send(kind: str) -> None:
        exporter = None
        while not stop.is_set():
            if exporter is None or kind == "http-new-connection":
                if exporter is not None:
                    exporter.shutdown()
                exporter = (
                    grpc_span_exporter(proxy.grpc_port, ca_file, tokens.plain)
                    if kind == "grpc" else span_exporter(proxy.url, ca_file, tokens.plain)
                )
            results[kind].append(exporter.export(make_spans(2)))
        exporter.shutdown()

    senders = [threading.Thread(target=send, args=(kind,)) for kind in results]
    for thread in senders:
        thread.start()
    try:
        serial = mount.serial
        for index in range(100):
            before = proxy.logs().count(RELOADED)
            if index % 2 == 0:
                proxy.proc.send_signal(signal.SIGHUP)
            else:
                serial = mount.publish()  # the watcher sees the ..data swap
            wait_for_log(proxy, RELOADED, before + 1)
        # After the last rotation, new connections present the newest certificate.
        assert presented_serial(proxy.port, ca_file) == serial
        assert presented_serial(proxy.grpc_port, ca_file) == serial
    finally:
        stop.set()
        for thread in senders:
            thread.join(timeout=30)

    logs = proxy.logs()
    assert logs.count(RELOADED) >= 100
    assert FAILED not in logs
    for kind, outcomes in results.items():
        assert outcomes, f"{kind}: nothing was exported"
        assert all(outcome == SpanExportResult.SUCCESS for outcome in outcomes), (
            f"{kind}: {outcomes.count(SpanExportResult.FAILURE)} of {len(outcomes)} exports failed"
        )
    sent = 2 * sum(len(outcomes) for outcomes in results.values())
    assert sink.tenant("team-a")["spans"] == sent
    assert proxy.proc.poll() is None


def test_broken_reloads_keep_serving_old_certificate_and_log_file_and_reason(
    reload_proxy, sink, pki, tokens, tokens_file
):
    proxy, mount, config = reload_proxy
    _, ca_file = pki
    original = mount.serial
    good_config = config.read_text()
    good_cert = (mount.directory / "tls.crt").read_bytes()
    good_key = (mount.directory / "tls.key").read_bytes()
    other_cert, other_key, _ = mount.issue()
    expired_cert, expired_key, _ = mount.issue(not_before=NOW() - 3 * DAY, not_after=NOW() - DAY)

    cases = [
        ("half-written certificate", lambda: mount.publish(other_cert[: len(other_cert) // 2], other_key), "tls.crt"),
        ("key of another certificate", lambda: mount.publish(good_cert, other_key), "tls.key"),
        ("expired certificate", lambda: mount.publish(expired_cert, expired_key), "expired"),
        ("invalid YAML", lambda: config.write_text("tls: [\n"), "YAML"),
        ("unknown key", lambda: config.write_text(good_config.replace('"reload"', '"relaod"')), "relaod"),
        ("tokens file missing", lambda: config.write_text(good_config.replace(str(tokens_file), "/nonexistent/tokens.yaml")),
         "/nonexistent/tokens.yaml"),
    ]
    for name, break_it, reason in cases:
        failures = proxy.logs().count(FAILED)
        break_it()
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for_log(proxy, FAILED, failures + 1)
        failure_line = [line for line in proxy.logs().splitlines() if FAILED in line][-1]
        assert reason in failure_line, f"{name}: {failure_line}"
        assert presented_serial(proxy.port, ca_file) == original, name
        exporter = span_exporter(proxy.url, ca_file, tokens.plain)
        try:
            assert exporter.export(make_spans(1)) == SpanExportResult.SUCCESS, name
        finally:
            exporter.shutdown()
        # Restore (the watcher may retry a failed reload when the files change back: both are fine).
        config.write_text(good_config)
        mount.publish(good_cert, good_key)
        time.sleep(0.3)

    metrics = urllib.request.urlopen(proxy.admin_url + "/metrics", timeout=5).read().decode()
    failed = [line for line in metrics.splitlines() if line.startswith('otlp_auth_proxy_reloads_total{result="failure"}')]
    assert failed and float(failed[0].split()[-1]) >= len(cases), failed

    reloads = proxy.logs().count(RELOADED)
    proxy.proc.send_signal(signal.SIGHUP)
    wait_for_log(proxy, RELOADED, reloads + 1)
    assert proxy.proc.poll() is None
    logs = proxy.logs()
    assert tokens.plain not in logs and "PRIVATE KEY" not in logs


def connection_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def start_slow_proxy(binary: Path, tmp_path: Path, tokens_file: Path, sink: Sink, pki, delay: float, drain: str):
    authority, _ = pki
    receiver = RecordingReceiver(delay)
    mount = SecretMount(tmp_path / "secret", authority)
    config = write_config(
        tmp_path, mount.directory, tokens_file, receiver.port, sink.require_grpc_port(),
        shutdown={"drain_timeout": drain}, upstream={"http": f"127.0.0.1:{receiver.port}",
                                                     "grpc": f"127.0.0.1:{sink.require_grpc_port()}",
                                                     "timeout": "30s"},
    )
    return receiver, start_proxy_process(binary, config)


def test_sigterm_during_slow_requests_completes_them_and_exits_0(binary, tmp_path, tokens_file, sink, pki, tokens):
    _, ca_file = pki
    receiver, proxy = start_slow_proxy(binary, tmp_path, tokens_file, sink, pki, delay=2.0, drain="20s")
    try:
        outcomes: list = []

        def export() -> None:
            exporter = span_exporter(proxy.url, ca_file, tokens.plain, timeout=20)
            try:
                outcomes.append(exporter.export(make_spans(3)))
            finally:
                exporter.shutdown()

        threads = [threading.Thread(target=export) for _ in range(6)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while receiver.received < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.received == 6 and receiver.answered == 0

        assert urllib.request.urlopen(proxy.admin_url + "/readyz", timeout=5).status == 200
        started = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        wait_for_log(proxy, "draining", 1, timeout=5)
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(proxy.admin_url + "/readyz", timeout=5)
        assert not_ready.value.code == 503, "not ready while draining"
        assert connection_refused(proxy.port), "the listener closed when the drain began"
        for thread in threads:
            thread.join(timeout=30)
        code = proxy.proc.wait(timeout=30)
        elapsed = time.monotonic() - started
    finally:
        proxy.stop()
        receiver.close()
    assert outcomes == [SpanExportResult.SUCCESS] * 6
    assert receiver.answered == 6
    assert code == 0, proxy.describe()
    assert elapsed < 10, f"the drain waited for the requests, not the 20s deadline ({elapsed:.1f}s)"


def test_sigterm_with_request_past_drain_timeout_exits_0_at_deadline(binary, tmp_path, tokens_file, sink, pki, tokens):
    _, ca_file = pki
    receiver, proxy = start_slow_proxy(binary, tmp_path, tokens_file, sink, pki, delay=15.0, drain="1s")
    try:
        outcome: list = []

        def export() -> None:
            exporter = span_exporter(proxy.url, ca_file, tokens.plain, timeout=20)
            try:
                outcome.append(exporter.export(make_spans(1)))
            finally:
                exporter.shutdown()

        thread = threading.Thread(target=export, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while receiver.received < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        code = proxy.proc.wait(timeout=15)
        elapsed = time.monotonic() - started
    finally:
        proxy.stop()
        receiver.close()
    assert code == 0, proxy.describe()
    assert 0.9 < elapsed < 6, elapsed
    assert "drain timeout reached" in proxy.logs()


def test_reload_keeps_jwks_keys_of_unchanged_provider_and_fetches_a_changed_one(
    binary, tmp_path, tokens_file, sink, pki
):
    _, ca_file = pki
    issuer = "https://idp.reload.test/"
    first_key, second_key = SigningKey.es256("first"), SigningKey.es256("second")
    first_idp = JWKSServer(tmp_path / "idp1", jwks(first_key))
    second_idp = JWKSServer(tmp_path / "idp2", jwks(second_key))

    def provider(idp: JWKSServer) -> dict:
        return {"name": "corp", "issuer": issuer, "audiences": ["otlp-ingest"], "algorithms": ["ES256"],
                "jwks_url": idp.jwks_url, "jwks_ca_file": str(idp.ca_file), "tenant_claim": "tenant"}

    mount = SecretMount(tmp_path / "secret", pki[0])

    def configure(idp: JWKSServer) -> Path:
        return write_config(
            tmp_path, mount.directory, tokens_file, sink.port, sink.require_grpc_port(),
            auth={"methods": ["jwt"], "jwt": {"providers": [provider(idp)]}},
            reload={"watch_interval": "0s"},
        )

    def status(key: SigningKey) -> int:
        token = key.sign(claims(issuer, sub="svc", tenant="team-jwt"))
        return post_otlp(proxy, ca_file, headers=bearer(token)).status

    proxy = start_proxy_process(binary, configure(first_idp))
    try:
        deadline = time.monotonic() + 10
        while status(first_key) != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status(first_key) == 200

        # Same provider, same key source: the reloaded provider starts with the keys it had, so
        # tokens keep verifying even while the IdP is unreachable.
        first_idp.stop()
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for_log(proxy, RELOADED, 1)
        assert status(first_key) == 200, proxy.describe()

        # The key source changed: the provider fetches from the new one at once.
        configure(second_idp)
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for_log(proxy, RELOADED, 2)
        deadline = time.monotonic() + 10
        while status(second_key) != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status(second_key) == 200
        assert second_idp.fetch_count() >= 1
        assert status(first_key) == 401, "keys of the old source do not follow the provider to a new source"
    finally:
        proxy.stop()
        second_idp.stop()
