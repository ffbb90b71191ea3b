"""Client certificates (mTLS) end to end: certificates and CRLs made at test time, the
OpenTelemetry SDK exporters (HTTP and gRPC) presenting a good certificate, openssl s_client
presenting every kind of bad one, the principal → tenant table for `cert:` principals, the
allow-list, and the precedence between a certificate and a bearer token."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from auth_helpers import (
    CN_ONLY,
    validate,
    write_auth_config,
    bearer,
    grpc_export,
    make_client_pki,
    post_otlp,
    s_client_request,
    start_auth_proxy,
    tenant_counts,
)
from conftest import curl
from grpc_helpers import read_ca
from otel_helpers import make_spans

ALLOWED = ["spiffe://e2e.test/ns/otel/*", "*.clients.e2e.test", CN_ONLY]
PRINCIPALS = [
    {"principal": "cert:spiffe://e2e.test/ns/otel/*", "tenant": "team-x"},
    {"principal": "cert:*.clients.e2e.test", "tenant": "team-dns"},
    {"principal": f"cert:{CN_ONLY}", "tenant": "team-cn"},
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_client_pki(tmp_path_factory.mktemp("client-pki"))


def mtls_settings(pki, certs, sink, tokens_file, *, methods=("mtls", "bearer"), client_auth="request",
                  principal_from=("uri_san", "dns_san", "subject_cn"), **tls_overrides) -> dict:
    tls = {"client_ca_file": str(pki.ca_file), "client_auth": client_auth, "crl_file": str(pki.crl_file), "verify_depth": 4}
    tls.update(tls_overrides)
    return dict(
        certs=certs,
        sink=sink,
        tls=tls,
        auth={
            "methods": list(methods),
            "mtls": {"principal_from": list(principal_from), "allowed_principals": ALLOWED},
            "bearer": {"tokens_file": str(tokens_file)},
            "principals": PRINCIPALS,
        },
    )


@pytest.fixture(scope="module")
def mtls_proxy(binary, certs, tokens_file, shared_sink, pki, tmp_path_factory):
    """client_auth: request (a connection without a certificate may still use a bearer token),
    methods [mtls, bearer], CRLs for the root and the intermediate."""
    proxy = start_auth_proxy(binary, tmp_path_factory.mktemp("mtls-proxy"), **mtls_settings(pki, certs, shared_sink, tokens_file))
    yield proxy
    proxy.stop()


@pytest.fixture
def proxy(mtls_proxy, sink):
    assert mtls_proxy.proc.poll() is None, f"the mTLS proxy died\n{mtls_proxy.describe()}"
    return mtls_proxy


def assert_only_tenant(sink, tenant: str, requests: int = 1) -> None:
    stats = sink.stats()
    assert tenant_counts(sink) == {tenant: requests}, stats["tenants"]
    headers = stats["last_request"]["headers"]
    assert [v for k, v in headers if k == "x-scope-orgid"] == [tenant], headers
    assert "authorization" not in [k for k, _ in headers], headers


# --- good clients: the SDK exporters ----------------------------------------------------------


def test_mtls_http_sdk_exporter_good_cert_counted_under_team_x(proxy, sink, ca_file, pki):
    client = pki["good"]
    exporter = HttpSpanExporter(
        endpoint=f"{proxy.url}/v1/traces", certificate_file=ca_file, client_key_file=str(client.key),
        client_certificate_file=str(client.cert), timeout=10, compression=Compression.NoCompression,
        headers={"X-Scope-OrgID": "team-evil"},  # a client-sent tenant never wins over the certificate's
    )
    try:
        assert exporter.export(make_spans(4)) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert sink.stats()["tenants"]["team-x"]["spans"] == 4
    assert_only_tenant(sink, "team-x")


def test_mtls_grpc_sdk_exporter_good_cert_counted_under_team_x(proxy, sink, ca_file, pki):
    client = pki["good"]
    exporter = GrpcSpanExporter(
        endpoint=f"https://127.0.0.1:{proxy.grpc_port}",
        credentials=grpc.ssl_channel_credentials(read_ca(ca_file), client.key_bytes(), client.chain_bytes()),
        timeout=10, compression=grpc.Compression.NoCompression,
    )
    try:
        assert exporter.export(make_spans(3)) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert sink.stats()["tenants"]["team-x"]["spans"] == 3
    assert_only_tenant(sink, "team-x")


# --- bad certificates: the handshake fails with the right alert --------------------------------


@pytest.mark.parametrize(
    "name, alert",
    [
        ("expired", "alert certificate expired"),
        ("not-yet-valid", "alert bad certificate"),
        ("unknown-ca", "alert unknown ca"),
        ("revoked", "alert certificate revoked"),
        ("server-eku", "alert unsupported certificate"),
    ],
)
def test_mtls_s_client_bad_cert_refused_with_alert(proxy, sink, ca_file, pki, name, alert):
    result = s_client_request(proxy.port, ca_file, pki[name])
    assert result.returncode != 0, result.output
    assert alert in result.output, result.output
    assert result.http_status is None, result.output
    assert sink.stats()["requests"] == 0


@pytest.mark.parametrize("name", ["expired", "unknown-ca", "revoked"])
def test_mtls_grpc_bad_cert_call_unavailable_nothing_forwarded(proxy, sink, ca_file, pki, name):
    # A failed handshake is a transport failure for grpcio (UNAVAILABLE), never an OK.
    assert grpc_export(proxy, ca_file, client=pki[name]) == grpc.StatusCode.UNAVAILABLE
    assert sink.stats()["requests"] == 0


def test_mtls_proxy_logs_name_verify_reason(proxy, sink, ca_file, pki):
    s_client_request(proxy.port, ca_file, pki["expired"])
    logs = proxy.logs().lower()
    assert "expired" in logs, proxy.logs()[-3000:]


# --- good certificates of every shape ---------------------------------------------------------


def test_mtls_s_client_chain_through_intermediate_accepted(proxy, sink, ca_file, pki):
    result = s_client_request(proxy.port, ca_file, pki["intermediate"])
    assert result.http_status == 200, result.output
    assert_only_tenant(sink, "team-x")


def test_mtls_s_client_no_san_subject_cn_is_principal(proxy, sink, ca_file, pki):
    result = s_client_request(proxy.port, ca_file, pki[CN_ONLY])
    assert result.http_status == 200, result.output
    assert_only_tenant(sink, "team-cn")


def test_mtls_s_client_dns_san_wildcard_principal(proxy, sink, ca_file, pki):
    result = s_client_request(proxy.port, ca_file, pki["dns"])
    assert result.http_status == 200, result.output
    assert_only_tenant(sink, "team-dns")


def test_mtls_identity_outside_allowed_principals_http_403(proxy, sink, ca_file, pki):
    result = s_client_request(proxy.port, ca_file, pki["outside"])
    assert result.http_status == 403, result.output
    response = post_otlp(proxy, ca_file, client=pki["outside"])
    assert response.status == 403
    assert sink.stats()["requests"] == 0


def test_mtls_identity_outside_allowed_principals_grpc_permission_denied(proxy, sink, ca_file, pki):
    assert grpc_export(proxy, ca_file, client=pki["outside"]) == grpc.StatusCode.PERMISSION_DENIED
    assert sink.stats()["requests"] == 0


def test_mtls_no_san_principal_from_uri_only_refused(binary, certs, tokens_file, sink, pki, ca_file, tmp_path):
    """principal_from [uri_san]: a certificate without a URI SAN has no identity → 401 / 16."""
    proxy = start_auth_proxy(
        binary, tmp_path / "uri-only", **mtls_settings(pki, certs, sink, tokens_file, principal_from=("uri_san",))
    )
    try:
        assert post_otlp(proxy, ca_file, client=pki[CN_ONLY]).status == 401
        assert grpc_export(proxy, ca_file, client=pki[CN_ONLY]) == grpc.StatusCode.UNAUTHENTICATED
        assert post_otlp(proxy, ca_file, client=pki["good"]).status == 200
    finally:
        proxy.stop()
    assert tenant_counts(sink) == {"team-x": 1}


def test_mtls_http2_curl_good_cert_counted_under_team_x(proxy, sink, ca_file, pki):
    """OTLP/HTTP over HTTP/2 (ALPN h2) carries the connection's certificate identity too."""
    client = pki["good"]
    result = curl(
        f"{proxy.url}/v1/traces", "--http2", "--cert", str(client.cert), "--key", str(client.key),
        "-H", "content-type: application/x-protobuf", ca_file=ca_file, data=b"",
    )
    assert result.version == "HTTP/2", result.version
    assert result.status == 200, result.body
    assert_only_tenant(sink, "team-x")


def test_mtls_verify_depth_1_refuses_chain_through_intermediate(binary, certs, tokens_file, sink, pki, ca_file, tmp_path):
    """verify_depth 1: a leaf issued by the root is fine, a leaf below an intermediate is too deep."""
    proxy = start_auth_proxy(binary, tmp_path / "depth1", **mtls_settings(pki, certs, sink, tokens_file, verify_depth=1))
    try:
        too_deep = s_client_request(proxy.port, ca_file, pki["intermediate"])
        assert too_deep.returncode != 0 and too_deep.http_status is None, too_deep.output
        assert "alert" in too_deep.output, too_deep.output
        direct = s_client_request(proxy.port, ca_file, pki["good"])
        assert direct.http_status == 200, direct.output
    finally:
        proxy.stop()
    assert tenant_counts(sink) == {"team-x": 1}


def test_mtls_expired_crl_fails_closed(binary, certs, tokens_file, sink, pki, ca_file, tmp_path):
    """A CRL past its nextUpdate gives no assurance: the proxy either refuses the configuration
    (naming tls.crl_file) or refuses every certificate it covers; a good certificate never gets
    through."""
    settings = mtls_settings(pki, certs, sink, tokens_file, crl_file=str(pki.expired_crl_file))
    config = write_auth_config(tmp_path / "expired-crl", **settings)
    checked = validate(binary, config)
    if checked.returncode != 0:
        assert "tls.crl_file" in checked.stderr, checked.stderr
        return
    proxy = start_auth_proxy(binary, tmp_path / "expired-crl-run", **settings)
    try:
        result = s_client_request(proxy.port, ca_file, pki["good"])
        assert result.http_status is None and result.returncode != 0, result.output
    finally:
        proxy.stop()
    assert sink.stats()["requests"] == 0


# --- client_auth request / require ------------------------------------------------------------


def test_mtls_request_mode_no_cert_falls_back_to_bearer(proxy, sink, ca_file, tokens):
    assert post_otlp(proxy, ca_file, headers=bearer(tokens.plain)).status == 200
    assert_only_tenant(sink, "team-a")


def test_mtls_request_mode_no_cert_no_token_401(proxy, sink, ca_file):
    response = post_otlp(proxy, ca_file)
    assert response.status == 401
    assert any(v.lower().startswith("bearer") for v in response.header_values("www-authenticate")), response.headers
    assert grpc_export(proxy, ca_file) == grpc.StatusCode.UNAUTHENTICATED
    assert sink.stats()["requests"] == 0


def test_mtls_require_mode_no_cert_alert_certificate_required(binary, certs, tokens_file, sink, pki, ca_file, tmp_path):
    proxy = start_auth_proxy(binary, tmp_path / "require", **mtls_settings(pki, certs, sink, tokens_file, client_auth="require"))
    try:
        refused = s_client_request(proxy.port, ca_file, None)
        assert refused.returncode != 0, refused.output
        assert "alert certificate required" in refused.output, refused.output
        accepted = s_client_request(proxy.port, ca_file, pki["good"])
        assert accepted.http_status == 200, accepted.output
    finally:
        proxy.stop()
    assert tenant_counts(sink) == {"team-x": 1}


# --- precedence between a certificate and a header credential ---------------------------------


def test_precedence_cert_and_bearer_mtls_first_uses_cert_tenant(proxy, sink, ca_file, pki, tokens):
    response = post_otlp(proxy, ca_file, client=pki["good"], headers=bearer(tokens.plain))
    assert response.status == 200
    assert_only_tenant(sink, "team-x")


def test_precedence_cert_and_bearer_bearer_first_uses_token_tenant(binary, certs, tokens_file, sink, pki, ca_file, tokens, tmp_path):
    proxy = start_auth_proxy(
        binary, tmp_path / "bearer-first", **mtls_settings(pki, certs, sink, tokens_file, methods=("bearer", "mtls"))
    )
    try:
        assert post_otlp(proxy, ca_file, client=pki["good"], headers=bearer(tokens.plain)).status == 200
        assert grpc_export(proxy, ca_file, client=pki["good"], metadata=[("authorization", f"Bearer {tokens.plain}")]) == grpc.StatusCode.OK
    finally:
        proxy.stop()
    assert tenant_counts(sink) == {"team-a": 2}


def test_precedence_good_cert_invalid_bearer_401_no_fall_through(proxy, sink, ca_file, pki, tokens):
    response = post_otlp(proxy, ca_file, client=pki["good"], headers=bearer(tokens.plain + "-wrong"))
    assert response.status == 401
    code = grpc_export(proxy, ca_file, client=pki["good"], metadata=[("authorization", f"Bearer {tokens.plain}-wrong")])
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert sink.stats()["requests"] == 0
