"""The principal → tenant table and per-principal limits end to end (bearer tokens with
`signals`, `auth.principals` with fixed tenants, `allowed_tenants` and `signals`), HS256 with a
secret file, and `validate` naming the key of each broken auth setting."""

from __future__ import annotations

import secrets

import grpc
import jwt
import pytest

from auth_helpers import bearer, claims, grpc_export, post_otlp, start_auth_proxy, tenant_counts, validate, write_auth_config


class PolicyTokens:
    traces_only = "tr-" + secrets.token_urlsafe(24)     # token entry signals: [traces], tenant team-t
    metrics_only = "me-" + secrets.token_urlsafe(24)    # principals entry signals: [metrics], tenant team-m
    fixed = "fx-" + secrets.token_urlsafe(24)           # token tenant team-a, principals entry tenant team-fixed
    limited = "li-" + secrets.token_urlsafe(24)         # token tenant team-z, principals allowed_tenants [team-y]
    profiles_only = "pr-" + secrets.token_urlsafe(24)   # token entry signals: [profiles], tenant team-p


@pytest.fixture(scope="module")
def policy_proxy(binary, certs, shared_sink, tmp_path_factory):
    directory = tmp_path_factory.mktemp("policy-proxy")
    tokens_file = directory / "tokens.yaml"
    tokens_file.write_text(
        f"""tokens:
  - {{ principal: traces-writer, tenant: team-t, token: "{PolicyTokens.traces_only}", signals: [traces] }}
  - {{ principal: metrics-writer, tenant: team-m, token: "{PolicyTokens.metrics_only}" }}
  - {{ principal: fixed-writer, tenant: team-a, token: "{PolicyTokens.fixed}" }}
  - {{ principal: limited-writer, tenant: team-z, token: "{PolicyTokens.limited}" }}
  - {{ principal: profiler, tenant: team-p, token: "{PolicyTokens.profiles_only}", signals: [profiles] }}
"""
    )
    tokens_file.chmod(0o600)
    proxy = start_auth_proxy(
        binary, directory, certs=certs, sink=shared_sink,
        auth={
            "bearer": {"tokens_file": str(tokens_file)},
            "principals": [
                {"principal": "token:metrics-writer", "signals": ["metrics"]},
                {"principal": "token:fixed-*", "tenant": "team-fixed"},
                {"principal": "token:limited-writer", "allowed_tenants": ["team-y"]},
            ],
        },
    )
    yield proxy
    proxy.stop()


@pytest.fixture
def proxy(policy_proxy, sink):
    assert policy_proxy.proc.poll() is None, f"the policy proxy died\n{policy_proxy.describe()}"
    return policy_proxy


def test_token_entry_signals_traces_only_metrics_403_grpc_permission_denied(proxy, sink, ca_file):
    assert post_otlp(proxy, ca_file, headers=bearer(PolicyTokens.traces_only), signal="traces").status == 200
    response = post_otlp(proxy, ca_file, headers=bearer(PolicyTokens.traces_only), signal="metrics")
    assert response.status == 403
    assert response.header_values("www-authenticate") == []  # authorization, not authentication
    metadata = [("authorization", f"Bearer {PolicyTokens.traces_only}")]
    assert grpc_export(proxy, ca_file, signal="metrics", metadata=metadata) == grpc.StatusCode.PERMISSION_DENIED
    assert grpc_export(proxy, ca_file, signal="logs", metadata=metadata) == grpc.StatusCode.PERMISSION_DENIED
    assert grpc_export(proxy, ca_file, signal="traces", metadata=metadata) == grpc.StatusCode.OK
    assert tenant_counts(sink) == {"team-t": 2}


def test_profiles_need_the_signal_a_traces_principal_gets_403_and_permission_denied(proxy, sink, ca_file):
    response = post_otlp(proxy, ca_file, headers=bearer(PolicyTokens.traces_only), signal="profiles")
    assert response.status == 403
    metadata = [("authorization", f"Bearer {PolicyTokens.traces_only}")]
    assert grpc_export(proxy, ca_file, signal="profiles", metadata=metadata) == grpc.StatusCode.PERMISSION_DENIED
    # The principals entry signals: [metrics] refuses profiles too.
    metadata = [("authorization", f"Bearer {PolicyTokens.metrics_only}")]
    assert grpc_export(proxy, ca_file, signal="profiles", metadata=metadata) == grpc.StatusCode.PERMISSION_DENIED
    assert tenant_counts(sink) == {}


def test_token_entry_signals_profiles_only(proxy, sink, ca_file):
    assert post_otlp(proxy, ca_file, headers=bearer(PolicyTokens.profiles_only), signal="profiles").status == 200
    metadata = [("authorization", f"Bearer {PolicyTokens.profiles_only}")]
    assert grpc_export(proxy, ca_file, signal="profiles", metadata=metadata) == grpc.StatusCode.OK
    assert grpc_export(proxy, ca_file, signal="traces", metadata=metadata) == grpc.StatusCode.PERMISSION_DENIED
    assert post_otlp(proxy, ca_file, headers=bearer(PolicyTokens.profiles_only), signal="logs").status == 403
    assert tenant_counts(sink) == {"team-p": 2}


def test_principals_entry_signals_metrics_only_traces_403(proxy, sink, ca_file):
    assert post_otlp(proxy, ca_file, headers=bearer(PolicyTokens.metrics_only), signal="traces").status == 403
    assert post_otlp(proxy, ca_file, headers=bearer(PolicyTokens.metrics_only), signal="metrics").status == 200
    metadata = [("authorization", f"Bearer {PolicyTokens.metrics_only}")]
    assert grpc_export(proxy, ca_file, signal="traces", metadata=metadata) == grpc.StatusCode.PERMISSION_DENIED
    assert tenant_counts(sink) == {"team-m": 1}


def test_principals_entry_fixed_tenant_overrides_token_tenant(proxy, sink, ca_file):
    assert post_otlp(proxy, ca_file, headers=bearer(PolicyTokens.fixed)).status == 200
    assert tenant_counts(sink) == {"team-fixed": 1}


def test_principals_entry_allowed_tenants_violated_403(proxy, sink, ca_file):
    assert post_otlp(proxy, ca_file, headers=bearer(PolicyTokens.limited)).status == 403
    metadata = [("authorization", f"Bearer {PolicyTokens.limited}")]
    assert grpc_export(proxy, ca_file, metadata=metadata) == grpc.StatusCode.PERMISSION_DENIED
    assert sink.stats()["requests"] == 0


def test_unsupported_scheme_401(proxy, sink, ca_file):
    # Basic is not configured on this proxy: a Basic header is refused, not ignored.
    response = post_otlp(proxy, ca_file, headers={"authorization": "Basic YWxpY2U6c2VjcmV0"})
    assert response.status == 401
    response = post_otlp(proxy, ca_file, headers={"authorization": f"Digest {PolicyTokens.fixed}"})
    assert response.status == 401
    assert sink.stats()["requests"] == 0


# --- HS256 from a secret file ---------------------------------------------------------------


def test_jwt_hs256_secret_file_accepted_and_wrong_secret_refused(binary, certs, sink, ca_file, tmp_path):
    secret = secrets.token_bytes(48).hex()
    secret_file = tmp_path / "hs.key"
    secret_file.write_text(secret + "\n")  # one trailing newline is trimmed
    secret_file.chmod(0o600)
    issuer = "https://hs.e2e.test/"
    proxy = start_auth_proxy(
        binary, tmp_path / "hs", certs=certs, sink=sink,
        auth={"jwt": {"providers": [{
            "name": "shared-secret", "issuer": issuer, "audiences": ["otlp-ingest"], "algorithms": ["HS256"],
            "hmac_secret_file": str(secret_file), "tenant_claim": "tenant",
        }]}},
    )
    try:
        good = jwt.encode(claims(issuer, sub="hs-client", tenant="team-hs"), secret.encode(), algorithm="HS256")
        assert post_otlp(proxy, ca_file, headers=bearer(good)).status == 200
        wrong = jwt.encode(claims(issuer, sub="hs-client", tenant="team-hs"), (secret + "x").encode(), algorithm="HS256")
        assert post_otlp(proxy, ca_file, headers=bearer(wrong)).status == 401
        hs512 = jwt.encode(claims(issuer, sub="hs-client", tenant="team-hs"), secret.encode(), algorithm="HS512")
        assert post_otlp(proxy, ca_file, headers=bearer(hs512)).status == 401  # not in the allow-list
    finally:
        proxy.stop()
    assert secret not in proxy.logs()
    assert tenant_counts(sink) == {"team-hs": 1}


# --- validate names the key -----------------------------------------------------------------


def _provider(**overrides) -> dict:
    provider = {"name": "corp", "issuer": "https://idp.example.com/", "audiences": ["otlp-ingest"], "algorithms": ["HS256"]}
    provider.update(overrides)
    return {k: v for k, v in provider.items() if v is not None}


def _bad_configs(tmp_path, certs, tokens_file):
    short_secret = tmp_path / "short.key"
    short_secret.write_text("only-twenty-bytes-ok\n")
    client_ca = certs / "ca.crt"
    bearer_only = {"bearer": {"tokens_file": str(tokens_file)}}
    return {
        # HS256 and no secret (discovery cannot give an HMAC key).
        "hs256_without_secret": ({"auth": {"jwt": {"providers": [_provider()]}}}, ["auth.jwt.providers"], ["hmac_secret"]),
        "hmac_secret_too_short": (
            {"auth": {"jwt": {"providers": [_provider(hmac_secret_file=str(short_secret))]}}},
            ["auth.jwt.providers"], ["hmac_secret_file"],
        ),
        "client_auth_require_without_ca": ({"tls": {"client_auth": "require"}, "auth": bearer_only}, ["tls.client_auth"], []),
        "crl_without_ca": ({"tls": {"crl_file": str(client_ca)}, "auth": bearer_only}, ["tls.crl_file"], []),
        "mtls_without_client_ca": ({"auth": {**bearer_only, "mtls": {}}}, ["auth.mtls"], []),
        "method_not_configured": ({"auth": {**bearer_only, "methods": ["bearer", "basic"]}}, ["auth.methods"], []),
        "verify_depth_out_of_range": (
            {"tls": {"client_ca_file": str(client_ca), "verify_depth": 11}, "auth": bearer_only}, ["tls.verify_depth"], [],
        ),
        "jwks_url_plain_http_remote": (
            {"auth": {"jwt": {"providers": [_provider(algorithms=["ES256"], jwks_url="http://idp.example.com/jwks.json")]}}},
            ["auth.jwt.providers", "jwks_url"], [],
        ),
        "clock_skew_over_5m": (
            {"auth": {"jwt": {"providers": [_provider(algorithms=["ES256"], jwks_url="https://idp.example.com/jwks", clock_skew="10m")]}}},
            ["auth.jwt.providers", "clock_skew"], [],
        ),
        "unknown_signal_in_principals": (
            {"auth": {**bearer_only, "principals": [{"principal": "token:x", "signals": ["traces", "events"]}]}},
            ["auth.principals"], ["signals"],
        ),
    }


CASES = [
    "hs256_without_secret", "hmac_secret_too_short", "client_auth_require_without_ca", "crl_without_ca",
    "mtls_without_client_ca", "method_not_configured", "verify_depth_out_of_range", "jwks_url_plain_http_remote",
    "clock_skew_over_5m", "unknown_signal_in_principals",
]


@pytest.mark.parametrize("case", CASES)
def test_validate_bad_auth_config_exit_1_names_key(binary, certs, tokens_file, shared_sink, tmp_path, case):
    sections, keys, words = _bad_configs(tmp_path, certs, tokens_file)[case]
    config = write_auth_config(tmp_path, certs=certs, sink=shared_sink, auth=sections["auth"], tls=sections.get("tls"))
    result = validate(binary, config)
    assert result.returncode == 1, result.stdout + result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert problems, result.stderr
    for key in keys:
        assert any(key in line for line in problems), f"{key} not named:\n{result.stderr}"
    for word in words:
        assert word in result.stderr, result.stderr
    assert "configuration OK" not in result.stdout


def test_validate_good_auth_config_exit_0(binary, certs, tokens_file, shared_sink, tmp_path):
    secret_file = tmp_path / "hs.key"
    secret_file.write_text(secrets.token_hex(32))
    config = write_auth_config(
        tmp_path, certs=certs, sink=shared_sink,
        tls={"client_ca_file": str(certs / "ca.crt"), "client_auth": "request", "verify_depth": 3},
        auth={
            "methods": ["mtls", "jwt", "bearer"],
            "mtls": {"principal_from": ["uri_san", "subject_cn"], "allowed_principals": ["spiffe://otlp-auth-proxy.dev/*"]},
            "bearer": {"tokens_file": str(tokens_file)},
            "jwt": {"providers": [_provider(hmac_secret_file=str(secret_file), clock_skew="30s", tenant_claim="org.tenant")]},
            "principals": [{"principal": "cert:spiffe://otlp-auth-proxy.dev/*", "tenant": "team-dev", "signals": ["traces"]}],
        },
        tenant={"default": "anonymous"},
    )
    result = validate(binary, config)
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
