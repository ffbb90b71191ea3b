"""JWT end to end: ES256 and RS256 tokens minted with PyJWT, keys from a JWKS served over HTTPS on
127.0.0.1 (its own CA, `jwks_ca_file`), from a `jwks_file` and from OIDC discovery; the tenant
from a claim, claims copied to upstream headers (which the proxy owns), every forged or stale
token refused with 401 / UNAUTHENTICATED, key rotation, a flood of unknown kids, and the JWKS
server going away."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from auth_helpers import (
    JWKSServer,
    SigningKey,
    alg_none,
    b64url,
    bearer,
    claims,
    grpc_export,
    hs256_with_public_key,
    jwks,
    last_headers,
    make_server_pki,
    sign_raw,
    post_otlp,
    start_auth_proxy,
    tenant_counts,
)
from conftest import free_port
from grpc_helpers import read_ca
from otel_helpers import make_spans

ISSUER = "https://idp.e2e.test/"
FILE_ISSUER = "https://files.e2e.test/"
AUDIENCE = "otlp-ingest"


class Keys:
    """The module's signing keys: two served by the JWKS server, one in the JWKS file, and one
    nobody publishes."""

    es = SigningKey.es256("es-1")
    rs = SigningKey.rs256("rs-1")
    file_rs = SigningKey.rs256("file-rs-1")
    stranger = SigningKey.es256("stranger")


def remote_provider(server: JWKSServer, **overrides) -> dict:
    provider = {
        "name": "corp",
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "algorithms": ["ES256", "RS256"],
        "jwks_url": server.jwks_url,
        "jwks_ca_file": str(server.ca_file),
        "required_claims": ["sub"],
        "tenant_claim": "org.tenant",
        "claims_to_headers": {"sub": "X-OTLP-Subject", "org.team": "X-OTLP-Team"},
    }
    provider.update(overrides)
    return provider


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    server = JWKSServer(tmp_path_factory.mktemp("idp"), jwks(Keys.es, Keys.rs))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def jwt_proxy(binary, certs, shared_sink, tokens_file, idp, tmp_path_factory):
    directory = tmp_path_factory.mktemp("jwt-proxy")
    jwks_file = directory / "jwks.json"
    jwks_file.write_text(json.dumps(jwks(Keys.file_rs)))
    proxy = start_auth_proxy(
        binary, directory, certs=certs, sink=shared_sink,
        auth={
            "methods": ["jwt", "bearer"],
            "bearer": {"tokens_file": str(tokens_file)},
            "jwt": {
                "providers": [
                    remote_provider(idp),
                    {
                        "name": "files",
                        "issuer": FILE_ISSUER,
                        "audiences": [AUDIENCE, "second-audience"],
                        "algorithms": ["RS256"],
                        "jwks_file": str(jwks_file),
                        "tenant_claim": "tenant",
                    },
                ],
            },
            "principals": [
                {"principal": f"jwt:{ISSUER}#svc-restricted", "allowed_tenants": ["team-jwt"]},
                {"principal": f"jwt:{ISSUER}#svc-traces-only", "signals": ["traces"]},
            ],
        },
    )
    yield proxy
    proxy.stop()


@pytest.fixture
def proxy(jwt_proxy, sink):
    assert jwt_proxy.proc.poll() is None, f"the JWT proxy died\n{jwt_proxy.describe()}"
    return jwt_proxy


def token(key: SigningKey = Keys.es, issuer: str = ISSUER, **extra) -> str:
    """A valid token unless `extra` breaks it: sub svc-a, tenant team-jwt, team blue."""
    payload = claims(issuer, sub="svc-a", org={"tenant": "team-jwt", "team": "blue"}, jti=uuid.uuid4().hex)
    payload.update(extra)
    return key.sign({k: v for k, v in payload.items() if v is not None})


# --- good tokens ------------------------------------------------------------------------------


def test_jwt_es256_jwks_url_http_sdk_exporter_tenant_from_claim(proxy, sink, ca_file):
    exporter = HttpSpanExporter(
        endpoint=f"{proxy.url}/v1/traces", certificate_file=ca_file, headers=bearer(token(Keys.es)),
        timeout=10, compression=Compression.NoCompression,
    )
    try:
        assert exporter.export(make_spans(3)) == SpanExportResult.SUCCESS
        assert exporter.export(make_spans(2)) == SpanExportResult.SUCCESS  # the cached token
    finally:
        exporter.shutdown()
    stats = sink.stats()
    assert stats["tenants"] == {"team-jwt": {"requests": 2, "spans": 5, "data_points": 0, "log_records": 0, "profiles": 0}}
    headers = stats["last_request"]["headers"]
    assert [v for k, v in headers if k == "x-scope-orgid"] == ["team-jwt"]
    assert "authorization" not in [k for k, _ in headers]


def test_jwt_rs256_jwks_url_grpc_sdk_exporter_tenant_from_claim(proxy, sink, ca_file):
    exporter = GrpcSpanExporter(
        endpoint=f"https://127.0.0.1:{proxy.grpc_port}", credentials=grpc.ssl_channel_credentials(read_ca(ca_file)),
        headers=bearer(token(Keys.rs)), timeout=10, compression=grpc.Compression.NoCompression,
    )
    try:
        assert exporter.export(make_spans(4)) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert sink.stats()["tenants"] == {"team-jwt": {"requests": 1, "spans": 4, "data_points": 0, "log_records": 0, "profiles": 0}}
    assert last_headers(sink, "x-scope-orgid") == ["team-jwt"]


def test_jwt_jwks_file_provider_rs256_second_audience_accepted(proxy, sink, ca_file):
    good = Keys.file_rs.sign(claims(FILE_ISSUER, audience=["unrelated", "second-audience"], sub="batch-1", tenant="team-file"))
    assert post_otlp(proxy, ca_file, headers=bearer(good)).status == 200
    assert tenant_counts(sink) == {"team-file": 1}


def test_jwt_opaque_bearer_token_still_goes_to_bearer_table(proxy, sink, ca_file, tokens):
    assert post_otlp(proxy, ca_file, headers=bearer(tokens.plain)).status == 200
    assert tenant_counts(sink) == {"team-a": 1}


def test_jwt_claims_to_headers_reach_sink_http(proxy, sink, ca_file):
    response = post_otlp(proxy, ca_file, headers=[("Authorization", f"Bearer {token()}"), ("X-OTLP-Team", "forged")])
    assert response.status == 200
    assert last_headers(sink, "x-otlp-subject") == ["svc-a"]
    assert last_headers(sink, "x-otlp-team") == ["blue"]  # the client's copy was dropped


def test_jwt_claims_to_headers_client_copy_dropped_when_claim_absent(proxy, sink, ca_file):
    no_team = token(org={"tenant": "team-jwt"})
    headers = [("Authorization", f"Bearer {no_team}"), ("x-otlp-team", "forged"), ("X-OTLP-Subject", "forged-sub")]
    assert post_otlp(proxy, ca_file, headers=headers).status == 200
    assert last_headers(sink, "x-otlp-team") == []
    assert last_headers(sink, "x-otlp-subject") == ["svc-a"]


def test_jwt_claims_to_headers_reach_sink_grpc(proxy, sink, ca_file):
    metadata = [("authorization", f"Bearer {token()}"), ("x-otlp-team", "forged")]
    assert grpc_export(proxy, ca_file, metadata=metadata) == grpc.StatusCode.OK
    assert last_headers(sink, "x-otlp-subject") == ["svc-a"]
    assert last_headers(sink, "x-otlp-team") == ["blue"]


# --- refused tokens ---------------------------------------------------------------------------


def _crit_token() -> str:
    return Keys.es.sign(claims(ISSUER, sub="svc-a", org={"tenant": "team-jwt"}), crit=["exp"])


def _tampered() -> str:
    header, payload, signature = token().split(".")
    forged = json.loads(__import__("base64").urlsafe_b64decode(payload + "=="))
    forged["org"]["tenant"] = "team-admin"
    return ".".join([header, b64url(json.dumps(forged).encode()), signature])


def _noncanonical_base64() -> str:
    # Same token with a trailing '=' pad on the payload segment.
    header, payload, signature = token().split(".")
    return ".".join([header, payload + "=", signature])


def _payload(**extra) -> dict:
    payload = claims(ISSUER, sub="svc-a", org={"tenant": "team-jwt"}, jti=uuid.uuid4().hex)
    payload.update(extra)
    return payload


def _es_header(**extra) -> dict:
    return {"alg": "ES256", "typ": "JWT", "kid": Keys.es.kid, **extra}


def _duplicate_claim() -> str:
    # Two `org` members: a lenient parser keeps the last one (the attacker's tenant).
    text = json.dumps(_payload())[:-1] + ', "org": {"tenant": "team-admin"}}'
    return sign_raw(Keys.es, _es_header(), text)


def _duplicate_header_alg() -> str:
    return sign_raw(Keys.es, '{"alg": "ES256", "typ": "JWT", "kid": "%s", "alg": "none"}' % Keys.es.kid, _payload())


def _jwe_compact() -> str:
    header = b64url(json.dumps({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": Keys.rs.kid}).encode())
    return ".".join([header, b64url(secrets.token_bytes(256)), b64url(secrets.token_bytes(12)),
                     b64url(secrets.token_bytes(64)), b64url(secrets.token_bytes(16))])


def _json_serialization() -> str:
    header, payload, signature = token().split(".")
    return json.dumps({"payload": payload, "signatures": [{"protected": header, "signature": signature}]})


BAD_TOKENS = {
    "expired": lambda: token(exp=int(time.time()) - 600, iat=int(time.time()) - 900, nbf=int(time.time()) - 900),
    "not_yet_valid": lambda: token(nbf=int(time.time()) + 600),
    "no_exp": lambda: token(exp=None),
    "wrong_aud": lambda: token(aud="someone-else"),
    "wrong_iss": lambda: token(iss="https://evil.example/"),
    "iss_trailing_slash_missing": lambda: token(iss=ISSUER.rstrip("/")),
    "alg_none": lambda: alg_none(claims(ISSUER, sub="svc-a", org={"tenant": "team-jwt"}), Keys.es.kid),
    "hs256_with_rsa_public_key": lambda: hs256_with_public_key(Keys.rs, claims(ISSUER, sub="svc-a", org={"tenant": "team-jwt"})),
    "kid_unknown_file_provider": lambda: SigningKey.rs256("nobody-has-this").sign(claims(FILE_ISSUER, sub="x", tenant="team-file")),
    "kid_unknown_url_provider": lambda: Keys.stranger.sign(claims(ISSUER, sub="svc-a", org={"tenant": "team-jwt"})),
    "alg_not_allowed": lambda: SigningKey.es256(Keys.file_rs.kid).sign(claims(FILE_ISSUER, sub="x", tenant="team-file")),
    "missing_required_sub": lambda: token(sub=None),
    "crit_header": _crit_token,
    "tampered_payload": _tampered,
    "noncanonical_base64": _noncanonical_base64,
    "oversized": lambda: token(padding="x" * 17 * 1024),
    "es256_der_signature": lambda: sign_raw(Keys.es, _es_header(), _payload(), der=True),
    "alg_None_capitalised": lambda: alg_none(_payload(), Keys.es.kid, alg="None"),
    "duplicate_claim": _duplicate_claim,
    "duplicate_header_alg": _duplicate_header_alg,
    "jwe_compact": _jwe_compact,
    "json_serialization": _json_serialization,
    "kid_path_traversal": lambda: sign_raw(Keys.stranger, _es_header(kid="../../../../etc/passwd"), _payload()),
    "rs256_token_with_es_kid": lambda: sign_raw(Keys.rs, {"alg": "RS256", "typ": "JWT", "kid": Keys.es.kid}, _payload()),
}


def test_jwt_hand_signed_control_accepted(proxy, sink, ca_file):
    """The hand-made tokens above differ from this one only in what each case breaks."""
    assert post_otlp(proxy, ca_file, headers=bearer(sign_raw(Keys.es, _es_header(), _payload()))).status == 200
    assert tenant_counts(sink) == {"team-jwt": 1}


def test_jwt_embedded_jku_x5u_jwk_ignored_never_fetched(proxy, sink, ca_file, jwks_server):
    """A token naming its own key (jwk) and key URLs (jku, x5u) on an attacker's server: refused,
    and the proxy never contacts that server."""
    attacker_key = SigningKey.es256("attacker-key")
    attacker = jwks_server(jwks(attacker_key))
    header = {"alg": "ES256", "typ": "JWT", "kid": attacker_key.kid, "jku": attacker.jwks_url,
              "x5u": attacker.jwks_url, "jwk": attacker_key.jwk}
    forged = sign_raw(attacker_key, header, _payload())
    assert post_otlp(proxy, ca_file, headers=bearer(forged)).status == 401
    assert grpc_export(proxy, ca_file, metadata=[("authorization", f"Bearer {forged}")]) == grpc.StatusCode.UNAUTHENTICATED
    assert attacker.fetch_count() == 0
    assert sink.stats()["requests"] == 0


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_jwt_bad_token_http_401_bearer_challenge(proxy, sink, ca_file, case):
    response = post_otlp(proxy, ca_file, headers=bearer(BAD_TOKENS[case]()))
    assert response.status == 401, response.body
    assert any(v.lower().startswith("bearer") for v in response.header_values("www-authenticate")), response.headers
    assert sink.stats()["requests"] == 0


@pytest.mark.parametrize("case", ["expired", "wrong_aud", "wrong_iss", "alg_none", "hs256_with_rsa_public_key", "kid_unknown_url_provider"])
def test_jwt_bad_token_grpc_unauthenticated(proxy, sink, ca_file, case):
    assert grpc_export(proxy, ca_file, metadata=[("authorization", f"Bearer {BAD_TOKENS[case]()}")]) == grpc.StatusCode.UNAUTHENTICATED
    assert sink.stats()["requests"] == 0


def test_jwt_tokens_never_logged(proxy, sink, ca_file):
    good, bad = token(), BAD_TOKENS["expired"]()
    post_otlp(proxy, ca_file, headers=bearer(good))
    post_otlp(proxy, ca_file, headers=bearer(bad))
    logs = proxy.logs()
    for value in (good, bad):
        assert value.split(".")[2] not in logs
        assert value not in logs


# --- authorization from JWT identities --------------------------------------------------------


def test_jwt_tenant_claim_outside_allowed_tenants_403(proxy, sink, ca_file):
    assert post_otlp(proxy, ca_file, headers=bearer(token(sub="svc-restricted"))).status == 200
    other = token(sub="svc-restricted", org={"tenant": "team-other"})
    assert post_otlp(proxy, ca_file, headers=bearer(other)).status == 403
    assert grpc_export(proxy, ca_file, metadata=[("authorization", f"Bearer {other}")]) == grpc.StatusCode.PERMISSION_DENIED
    assert tenant_counts(sink) == {"team-jwt": 1}


def test_jwt_signals_traces_only_metrics_403(proxy, sink, ca_file):
    value = token(sub="svc-traces-only")
    assert post_otlp(proxy, ca_file, headers=bearer(value), signal="traces").status == 200
    assert post_otlp(proxy, ca_file, headers=bearer(value), signal="metrics").status == 403
    assert post_otlp(proxy, ca_file, headers=bearer(value), signal="logs").status == 403
    metadata = [("authorization", f"Bearer {value}")]
    assert grpc_export(proxy, ca_file, signal="metrics", metadata=metadata) == grpc.StatusCode.PERMISSION_DENIED
    assert grpc_export(proxy, ca_file, signal="traces", metadata=metadata) == grpc.StatusCode.OK
    assert tenant_counts(sink) == {"team-jwt": 2}


def test_jwt_invalid_tenant_claim_403(proxy, sink, ca_file):
    for bad in ("team a", "../../etc", "x" * 200):
        assert post_otlp(proxy, ca_file, headers=bearer(token(org={"tenant": bad}))).status == 403, bad
    assert sink.stats()["requests"] == 0


def test_jwt_no_tenant_claim_no_default_403(proxy, sink, ca_file):
    assert post_otlp(proxy, ca_file, headers=bearer(token(org={"team": "blue"}))).status == 403
    assert sink.stats()["requests"] == 0


# --- JWKS lifecycle: rotation, flood of unknown kids, server down, discovery --------------------


@pytest.fixture
def jwks_server(tmp_path):
    started: list[JWKSServer] = []

    def start(keys: dict, issuer: str | None = None) -> JWKSServer:
        server = JWKSServer(tmp_path / f"idp{len(started)}", keys, issuer)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def lifecycle_proxy(binary, certs, sink, tmp_path):
    started = []

    def start(provider: dict):
        proxy = start_auth_proxy(
            binary, tmp_path / f"proxy{len(started)}", certs=certs, sink=sink,
            auth={"jwt": {"providers": [provider]}},
        )
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def test_jwks_rotation_new_kid_accepted_after_refetch(jwks_server, lifecycle_proxy, sink, ca_file):
    old, new = SigningKey.es256("rot-old"), SigningKey.es256("rot-new")
    server = jwks_server(jwks(old))
    proxy = lifecycle_proxy(remote_provider(server, jwks_min_refetch_interval="1s"))
    assert post_otlp(proxy, ca_file, headers=bearer(token(old))).status == 200
    before = server.fetch_count()
    assert before >= 1
    time.sleep(1.2)  # past the minimum refetch interval, whatever started it
    server.set_keys(jwks(new))
    # The first request with the new kid triggers the refetch and is accepted.
    assert post_otlp(proxy, ca_file, headers=bearer(token(new))).status == 200
    assert server.fetch_count() > before
    assert grpc_export(proxy, ca_file, metadata=[("authorization", f"Bearer {token(new)}")]) == grpc.StatusCode.OK
    assert tenant_counts(sink) == {"team-jwt": 3}


def test_jwks_flood_of_unknown_kids_at_most_two_fetches(jwks_server, lifecycle_proxy, sink, ca_file):
    known = SigningKey.es256("flood-known")
    server = jwks_server(jwks(known))
    proxy = lifecycle_proxy(remote_provider(server, jwks_min_refetch_interval="30s"))
    assert post_otlp(proxy, ca_file, headers=bearer(token(known))).status == 200
    before = server.fetch_count()
    flood = [SigningKey("kid-" + secrets.token_hex(8), "ES256", known.private).sign(
        claims(ISSUER, sub="svc-a", org={"tenant": "team-jwt"})) for _ in range(200)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda t: post_otlp(proxy, ca_file, headers=bearer(t)).status, flood))
    elapsed = time.monotonic() - started
    assert elapsed < 30, f"the flood took {elapsed:.1f}s, longer than the refetch interval"
    assert statuses == [401] * 200, {s: statuses.count(s) for s in set(statuses)}
    fetched = server.fetch_count() - before
    assert fetched <= 2, f"{fetched} JWKS fetches for 200 unknown kids in {elapsed:.1f}s"
    # The known key still works after the flood.
    assert post_otlp(proxy, ca_file, headers=bearer(token(known))).status == 200
    assert tenant_counts(sink) == {"team-jwt": 2}


def test_jwks_server_down_last_good_keys_kept(jwks_server, lifecycle_proxy, sink, ca_file):
    key = SigningKey.rs256("kept")
    server = jwks_server(jwks(key))
    proxy = lifecycle_proxy(remote_provider(server, jwks_refresh_interval="1s", jwks_min_refetch_interval="1s"))
    assert post_otlp(proxy, ca_file, headers=bearer(token(key))).status == 200
    server.stop()
    time.sleep(2.5)  # at least one refresh and one refetch attempt fail meanwhile
    assert post_otlp(proxy, ca_file, headers=bearer(Keys.stranger.sign(claims(ISSUER, sub="s")))).status == 401
    time.sleep(1.2)
    # A token the proxy has never seen (fresh jti), signed with the known key: verified with the kept set.
    assert post_otlp(proxy, ca_file, headers=bearer(token(key))).status == 200
    assert proxy.proc.poll() is None
    assert tenant_counts(sink) == {"team-jwt": 2}


def test_jwks_oidc_discovery_from_issuer(jwks_server, lifecycle_proxy, sink, ca_file):
    key = SigningKey.es256("discovered")
    server = jwks_server(jwks(key))
    server.issuer = server.base_url
    provider = remote_provider(server, issuer=server.base_url)
    del provider["jwks_url"]
    proxy = lifecycle_proxy(provider)
    assert post_otlp(proxy, ca_file, headers=bearer(token(key, issuer=server.base_url))).status == 200
    assert server.discovery_fetches >= 1
    assert server.fetch_count() >= 1
    assert tenant_counts(sink) == {"team-jwt": 1}


def test_jwks_unreachable_at_start_503_unavailable_then_accepted(lifecycle_proxy, sink, ca_file, tmp_path):
    """The IdP is down when the proxy starts: tokens get a retryable 503 / UNAVAILABLE (never
    401, which exporters drop), and are accepted once the keys can be fetched."""
    key = SigningKey.es256("late")
    pki = make_server_pki(tmp_path / "late-idp", "jwks")
    port = free_port()
    provider = remote_provider(
        SimpleNamespace(jwks_url=f"https://127.0.0.1:{port}/jwks.json", ca_file=pki[0]),
        jwks_refresh_interval="1s", jwks_min_refetch_interval="1s",
    )
    proxy = lifecycle_proxy(provider)
    assert post_otlp(proxy, ca_file, headers=bearer(token(key))).status == 503
    assert grpc_export(proxy, ca_file, metadata=[("authorization", f"Bearer {token(key)}")]) == grpc.StatusCode.UNAVAILABLE
    server = JWKSServer(tmp_path / "late", jwks(key), port=port, pki=pki)
    try:
        deadline = time.monotonic() + 10
        status = 0
        while time.monotonic() < deadline:
            status = post_otlp(proxy, ca_file, headers=bearer(token(key))).status
            if status == 200:
                break
            assert status == 503
            time.sleep(0.25)
        assert status == 200, "keys never loaded after the JWKS server came up"
        assert server.fetch_count() >= 1
    finally:
        server.stop()
    assert tenant_counts(sink) == {"team-jwt": 1}


def test_jwks_rsa_1024_key_skipped_other_keys_used(jwks_server, lifecycle_proxy, sink, ca_file):
    """An RSA key under 2048 bits in the set is never used; the set's other keys still are."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    weak = SigningKey("weak-rsa", "RS256", rsa.generate_private_key(65537, 1024))
    good = SigningKey.es256("good-es")
    server = jwks_server(jwks(weak, good))
    proxy = lifecycle_proxy(remote_provider(server))
    weak_token = sign_raw(weak, {"alg": "RS256", "typ": "JWT", "kid": weak.kid}, _payload())
    assert post_otlp(proxy, ca_file, headers=bearer(weak_token)).status == 401
    assert post_otlp(proxy, ca_file, headers=bearer(token(good))).status == 200
    assert tenant_counts(sink) == {"team-jwt": 1}


def test_jwt_cached_token_refused_once_expired(jwks_server, lifecycle_proxy, sink, ca_file):
    """The verified-token cache ends at `exp` (plus skew): a token accepted (and cached) a moment
    ago is refused after it expires."""
    key = SigningKey.es256("short-lived")
    server = jwks_server(jwks(key))
    proxy = lifecycle_proxy(remote_provider(server, clock_skew="1s"))
    now = int(time.time())
    short = token(key, iat=now, nbf=now, exp=now + 2)
    assert post_otlp(proxy, ca_file, headers=bearer(short)).status == 200
    assert post_otlp(proxy, ca_file, headers=bearer(short)).status == 200  # from the cache
    time.sleep(max(0.0, now + 2 + 1 + 1.2 - time.time()))  # past exp + skew
    assert post_otlp(proxy, ca_file, headers=bearer(short)).status == 401
    assert tenant_counts(sink) == {"team-jwt": 2}


def test_jwt_hs384_secret_from_env(binary, certs, sink, ca_file, tmp_path, monkeypatch):
    secret = secrets.token_urlsafe(48)
    monkeypatch.setenv("OTLP_E2E_JWT_SECRET", secret)
    issuer = "https://env-secret.e2e.test/"
    proxy = start_auth_proxy(
        binary, tmp_path / "env", certs=certs, sink=sink,
        auth={"jwt": {"providers": [{
            "name": "env-secret", "issuer": issuer, "audiences": [AUDIENCE], "algorithms": ["HS384"],
            "hmac_secret_env": "OTLP_E2E_JWT_SECRET", "tenant_claim": "tenant",
        }]}},
    )
    try:
        import jwt as pyjwt

        good = pyjwt.encode(claims(issuer, sub="env", tenant="team-env"), secret.encode(), algorithm="HS384")
        assert post_otlp(proxy, ca_file, headers=bearer(good)).status == 200
        forged = pyjwt.encode(claims(issuer, sub="env", tenant="team-env"), b"x" * 48, algorithm="HS384")
        assert post_otlp(proxy, ca_file, headers=bearer(forged)).status == 401
    finally:
        proxy.stop()
    assert secret not in proxy.logs()
    assert tenant_counts(sink) == {"team-env": 1}
