"""Basic authentication end to end: an htpasswd file made at test time (bcrypt from the Python
`bcrypt` package, sha-crypt from `openssl passwd -6`), the OpenTelemetry SDK exporters sending
`Authorization: Basic …`, the principal → tenant table for `user:` principals, and `validate`
refusing weak hash formats."""

from __future__ import annotations

import base64
import re
import secrets
import statistics
import time

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from auth_helpers import (
    basic,
    bcrypt_line,
    grpc_export,
    post_otlp,
    sha1_line,
    sha512_crypt_line,
    start_auth_proxy,
    tenant_counts,
    validate,
    write_auth_config,
)
from grpc_helpers import read_ca
from otel_helpers import make_spans

# Generated per run; never written anywhere but the htpasswd hashes.
PASSWORDS = {name: secrets.token_urlsafe(12) for name in ("alice", "bob", "carol", "dave")}


@pytest.fixture(scope="module")
def htpasswd_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("basic") / "users.htpasswd"
    path.write_text(
        "# users of the e2e tests\n"
        + bcrypt_line("alice", PASSWORDS["alice"], "$2y$") + "\n"
        + bcrypt_line("bob", PASSWORDS["bob"], "$2b$") + "\n"
        + sha512_crypt_line("carol", PASSWORDS["carol"]) + "\n"
        + bcrypt_line("dave", PASSWORDS["dave"]) + "\n"
    )
    path.chmod(0o600)
    return path


def basic_settings(certs, sink, htpasswd_file, tokens_file=None) -> dict:
    auth = {
        "basic": {"htpasswd_file": str(htpasswd_file)},
        "principals": [
            {"principal": "user:alice", "tenant": "team-basic"},
            {"principal": "user:bob", "tenant": "team-bob"},
            {"principal": "user:carol", "tenant": "team-sha"},
            # dave has no entry, and there is no tenant.default: authenticated but no tenant.
        ],
    }
    if tokens_file is not None:
        auth["bearer"] = {"tokens_file": str(tokens_file)}
    return dict(certs=certs, sink=sink, auth=auth)


@pytest.fixture(scope="module")
def basic_proxy(binary, certs, shared_sink, htpasswd_file, tokens_file, tmp_path_factory):
    proxy = start_auth_proxy(
        binary, tmp_path_factory.mktemp("basic-proxy"), **basic_settings(certs, shared_sink, htpasswd_file, tokens_file)
    )
    yield proxy
    proxy.stop()


@pytest.fixture
def proxy(basic_proxy, sink):
    assert basic_proxy.proc.poll() is None, f"the Basic proxy died\n{basic_proxy.describe()}"
    return basic_proxy


def test_basic_http_sdk_exporter_alice_counted_under_her_tenant(proxy, sink, ca_file):
    exporter = HttpSpanExporter(
        endpoint=f"{proxy.url}/v1/traces", certificate_file=ca_file, headers=basic("alice", PASSWORDS["alice"]),
        timeout=10, compression=Compression.NoCompression,
    )
    try:
        assert exporter.export(make_spans(5)) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    stats = sink.stats()
    assert stats["tenants"] == {"team-basic": {"requests": 1, "spans": 5, "data_points": 0, "log_records": 0, "profiles": 0}}
    headers = stats["last_request"]["headers"]
    assert [v for k, v in headers if k == "x-scope-orgid"] == ["team-basic"]
    assert "authorization" not in [k for k, _ in headers]


def test_basic_grpc_sdk_exporter_alice_counted_under_her_tenant(proxy, sink, ca_file):
    exporter = GrpcSpanExporter(
        endpoint=f"https://127.0.0.1:{proxy.grpc_port}", credentials=grpc.ssl_channel_credentials(read_ca(ca_file)),
        headers=basic("alice", PASSWORDS["alice"]), timeout=10, compression=grpc.Compression.NoCompression,
    )
    try:
        assert exporter.export(make_spans(2)) == SpanExportResult.SUCCESS
        # The second export with the same credentials (cached success) is counted too.
        assert exporter.export(make_spans(1)) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert sink.stats()["tenants"]["team-basic"]["spans"] == 3


@pytest.mark.parametrize("user, tenant", [("bob", "team-bob"), ("carol", "team-sha")], ids=["bcrypt-2b", "sha512-crypt"])
def test_basic_other_hash_formats_accepted(proxy, sink, ca_file, user, tenant):
    assert post_otlp(proxy, ca_file, headers=basic(user, PASSWORDS[user])).status == 200
    assert tenant_counts(sink) == {tenant: 1}


def test_basic_scheme_case_insensitive(proxy, sink, ca_file):
    value = basic("alice", PASSWORDS["alice"])["authorization"].replace("Basic", "bAsIc")
    assert post_otlp(proxy, ca_file, headers={"authorization": value}).status == 200
    assert tenant_counts(sink) == {"team-basic": 1}


def test_basic_wrong_password_401_challenge_nothing_forwarded(proxy, sink, ca_file):
    response = post_otlp(proxy, ca_file, headers=basic("alice", PASSWORDS["alice"] + "x"))
    assert response.status == 401
    challenges = " ".join(response.header_values("www-authenticate"))
    assert re.search(r"(?i)\bbasic realm=", challenges), response.headers
    assert grpc_export(proxy, ca_file, metadata=list(basic("alice", "nope").items())) == grpc.StatusCode.UNAUTHENTICATED
    assert sink.stats()["requests"] == 0


def test_basic_unknown_user_401(proxy, sink, ca_file):
    assert post_otlp(proxy, ca_file, headers=basic("mallory", "whatever-password")).status == 401
    assert grpc_export(proxy, ca_file, metadata=list(basic("mallory", "x").items())) == grpc.StatusCode.UNAUTHENTICATED
    assert sink.stats()["requests"] == 0


def test_basic_malformed_credentials_401(proxy, sink, ca_file):
    for value in ("Basic", "Basic !!!not-base64!!!", "Basic " + base64.b64encode(b"no-colon").decode()):
        assert post_otlp(proxy, ca_file, headers={"authorization": value}).status == 401, value
    assert sink.stats()["requests"] == 0


def test_basic_two_authorization_headers_401(proxy, sink, ca_file):
    good = basic("alice", PASSWORDS["alice"])["authorization"]
    response = post_otlp(proxy, ca_file, headers=[("Authorization", good), ("Authorization", good)])
    assert response.status == 401
    assert sink.stats()["requests"] == 0


def test_basic_unknown_user_costs_as_much_as_wrong_password(proxy, sink, ca_file):
    """An unknown user is hashed against a dummy hash: its refusal is not visibly faster than a
    wrong password's (which runs bcrypt), so user names cannot be probed by timing."""

    def timed(user: str, password: str) -> float:
        start = time.perf_counter()
        assert post_otlp(proxy, ca_file, headers=basic(user, password)).status == 401
        return time.perf_counter() - start

    wrong = statistics.median(timed("alice", f"wrong-{i}") for i in range(5))
    unknown = statistics.median(timed(f"nobody-{i}", f"wrong-{i}") for i in range(5))
    assert unknown >= 0.5 * wrong, f"unknown user {unknown * 1000:.1f} ms, wrong password {wrong * 1000:.1f} ms"


def test_basic_cached_success_is_fast_and_never_accepts_another_password(proxy, sink, ca_file):
    """After one success, the same credentials skip the deliberately slow hash (steady traffic
    costs about as much as a bearer token), while a different password is still hashed and refused."""

    def timed(password: str, expected: int) -> float:
        start = time.perf_counter()
        assert post_otlp(proxy, ca_file, headers=basic("alice", password), body=b"").status == expected
        return time.perf_counter() - start

    timed(PASSWORDS["alice"], 200)
    cached = statistics.median(timed(PASSWORDS["alice"], 200) for _ in range(7))
    hashed = statistics.median(timed(PASSWORDS["alice"] + f"-{i}", 401) for i in range(7))
    assert cached < 0.6 * hashed, f"cached success {cached * 1000:.1f} ms, wrong password {hashed * 1000:.1f} ms"
    assert tenant_counts(sink) == {"team-basic": 8}


def test_basic_user_without_tenant_and_no_default_403(proxy, sink, ca_file):
    response = post_otlp(proxy, ca_file, headers=basic("dave", PASSWORDS["dave"]))
    assert response.status == 403
    assert grpc_export(proxy, ca_file, metadata=list(basic("dave", PASSWORDS["dave"]).items())) == grpc.StatusCode.PERMISSION_DENIED
    assert sink.stats()["requests"] == 0


def test_basic_user_without_tenant_gets_default_tenant(binary, certs, sink, htpasswd_file, ca_file, tmp_path):
    settings = basic_settings(certs, sink, htpasswd_file)
    proxy = start_auth_proxy(binary, tmp_path / "default", tenant={"default": "anonymous"}, **settings)
    try:
        assert post_otlp(proxy, ca_file, headers=basic("dave", PASSWORDS["dave"])).status == 200
        assert post_otlp(proxy, ca_file, headers=basic("alice", PASSWORDS["alice"])).status == 200
    finally:
        proxy.stop()
    assert tenant_counts(sink) == {"anonymous": 1, "team-basic": 1}


def test_basic_passwords_never_logged(proxy, sink, ca_file):
    assert post_otlp(proxy, ca_file, headers=basic("alice", PASSWORDS["alice"])).status == 200
    assert post_otlp(proxy, ca_file, headers=basic("alice", PASSWORDS["bob"])).status == 401
    logs = proxy.logs()
    for password in (PASSWORDS["alice"], PASSWORDS["bob"]):
        assert password not in logs
    assert base64.b64encode(f"alice:{PASSWORDS['alice']}".encode()).decode() not in logs


@pytest.mark.parametrize("weak", ["sha1", "plain", "des"])
def test_validate_weak_htpasswd_line_exit_1_names_line(binary, certs, sink, tmp_path, weak):
    line = {
        "sha1": sha1_line("eve", "secret-password"),
        "plain": "eve:secret-password",
        "des": "eve:rEK1ecacw.7.c",  # traditional DES crypt (13 characters)
    }[weak]
    htpasswd = tmp_path / "weak.htpasswd"
    htpasswd.write_text(bcrypt_line("alice", "alice-password") + "\n" + line + "\n")
    config = write_auth_config(tmp_path, certs=certs, sink=sink, auth={"basic": {"htpasswd_file": str(htpasswd)}})
    result = validate(binary, config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "auth.basic.htpasswd_file" in result.stderr, result.stderr
    assert re.search(r"\bline 2\b|:2\b", result.stderr), result.stderr
    assert line.split(":", 1)[1] not in result.stderr, "the hash itself must not be echoed"
    assert "configuration OK" not in result.stdout
