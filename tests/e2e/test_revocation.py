"""Revocation reaches connections that were open before it: every request is judged by the
credentials in force when it arrives, not by those of the moment its connection was accepted.

For each credential kind (bearer token, htpasswd user, JWT key in a JWKS file, JWT key dropped by a
JWKS URL refresh, a signal removed from a principal) and each kind of long-lived client connection (a
grpcio channel, an HTTP/1.1 keep-alive connection, OTLP/HTTP over HTTP/2), a connection is opened and
used with two credentials, the first is revoked, and on that same connection the first is refused
while the second is still accepted. That no new connection was made is read from the proxy's own
`connections_accepted_total` counter."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import secrets
import signal
import ssl
import time
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from auth_helpers import (
    GRPC_METHODS,
    grpc_client_channel,
    JWKSServer,
    SigningKey,
    bcrypt_line,
    edit_config,
    claims,
    jwks,
    start_auth_proxy,
)
from grpc_helpers import H2Client, trace_request

ISSUER = "https://revocation.e2e.test/"
FRONTS = ("grpc", "h1", "h2")


def connections_accepted(proxy) -> float:
    """The proxy's accepted-connection count over both listeners, from its admin /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"{proxy.admin_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "otlp_auth_proxy_connections_accepted_total":
                total += sample.value
    return total


class Connection:
    """One client connection of the given kind that carries OTLP trace exports one after another.
    `send` returns "ok", "unauthenticated" or "forbidden" (the status of each transport mapped to one
    word), so a test reads the same on every front."""

    def __init__(self, front: str, proxy, ca_file: str):
        self.front = front
        self.payload = trace_request(1).SerializeToString()
        if front == "grpc":
            self.channel = grpc_client_channel(proxy.grpc_port, ca_file)
            self.call = self.channel.unary_unary(GRPC_METHODS["traces"], request_serializer=None, response_deserializer=None)
        elif front == "h1":
            context = ssl.create_default_context(cafile=ca_file)
            context.set_alpn_protocols(["http/1.1"])
            self.http = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=context, timeout=15)
            self.http.connect()
            self.socket = self.http.sock
        else:
            self.h2 = H2Client(proxy.port, ca_file, timeout=15)

    def send(self, authorization: str) -> str:
        if self.front == "grpc":
            try:
                self.call(self.payload, metadata=[("authorization", authorization)], timeout=15)
                return "ok"
            except grpc.RpcError as error:
                return {grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
                        grpc.StatusCode.PERMISSION_DENIED: "forbidden"}.get(error.code(), str(error.code()))
        if self.front == "h1":
            self.http.request("POST", "/v1/traces", body=self.payload, headers={
                "Content-Type": "application/x-protobuf", "Authorization": authorization})
            response = self.http.getresponse()
            response.read()
            # http.client reconnects on its own after a close: the same socket proves the same connection.
            assert self.http.sock is self.socket, "the HTTP/1.1 connection was replaced"
            return self.word(response.status)
        response = self.h2.request([
            (":method", "POST"), (":scheme", "https"), (":authority", "127.0.0.1"), (":path", "/v1/traces"),
            ("content-type", "application/x-protobuf"), ("authorization", authorization),
        ], self.payload)
        assert not self.h2.terminated, "the HTTP/2 connection was ended"
        return self.word(response.status)

    @staticmethod
    def word(status: int | None) -> str:
        return {200: "ok", 401: "unauthenticated", 403: "forbidden"}.get(status, f"status {status}")

    def close(self) -> None:
        if self.front == "grpc":
            self.channel.close()
        elif self.front == "h1":
            self.http.close()
        else:
            self.h2.close()


def reload_and_wait(proxy) -> None:
    before = proxy.logs().count("configuration reloaded")
    proxy.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while proxy.logs().count("configuration reloaded") <= before:
        if "reload failed" in proxy.logs():
            pytest.fail(f"the reload failed\n{proxy.describe()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no reload within 10 s\n{proxy.describe()}")
        time.sleep(0.02)


def check_revocation(proxy, ca_file: str, front: str, revoked: str, kept: str, revoke) -> None:
    """Both credentials work on one connection; after `revoke()` the first is refused and the second
    still accepted, on the same connection."""
    connection = Connection(front, proxy, ca_file)
    try:
        assert connection.send(revoked) == "ok"
        assert connection.send(kept) == "ok"
        accepted = connections_accepted(proxy)
        revoke()
        assert connection.send(revoked) == "unauthenticated"
        assert connection.send(kept) == "ok"
        assert connection.send(revoked) == "unauthenticated", "a refusal must not be remembered as a success"
        assert connections_accepted(proxy) == accepted, "the client had to open a new connection"
    finally:
        connection.close()


@pytest.mark.parametrize("front", FRONTS)
def test_revocation_bearer_token_removed_by_reload_refused_on_open_connection(binary, certs, ca_file, sink, tmp_path, front):
    sink.require_grpc_port()
    leaked, other = "leaked-" + secrets.token_urlsafe(24), "other-" + secrets.token_urlsafe(24)
    tokens = tmp_path / "tokens.yaml"

    def write(*entries: tuple[str, str]) -> None:
        tokens.write_text("tokens:\n" + "".join(
            f'  - {{ principal: {name}, tenant: team-{name}, sha256: "{hashlib.sha256(token.encode()).hexdigest()}" }}\n'
            for name, token in entries))

    write(("leaked", leaked), ("other", other))
    proxy = start_auth_proxy(binary, tmp_path / "proxy", certs=certs, sink=sink,
                             auth={"bearer": {"tokens_file": str(tokens)}})
    try:
        def revoke():
            write(("other", other))
            reload_and_wait(proxy)

        check_revocation(proxy, ca_file, front, f"Bearer {leaked}", f"Bearer {other}", revoke)
    finally:
        proxy.stop()


@pytest.mark.parametrize("front", FRONTS)
def test_revocation_htpasswd_user_removed_by_reload_refused_on_open_connection(binary, certs, ca_file, sink, tmp_path, front):
    sink.require_grpc_port()
    passwords = {"alice": secrets.token_urlsafe(12), "bob": secrets.token_urlsafe(12)}
    htpasswd = tmp_path / "users.htpasswd"
    htpasswd.write_text("".join(bcrypt_line(user, password) + "\n" for user, password in passwords.items()))
    htpasswd.chmod(0o600)
    proxy = start_auth_proxy(binary, tmp_path / "proxy", certs=certs, sink=sink, auth={
        "basic": {"htpasswd_file": str(htpasswd)},
        "principals": [{"principal": "user:alice", "tenant": "team-a"}, {"principal": "user:bob", "tenant": "team-b"}],
    })

    def basic(user: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{passwords[user]}".encode()).decode()

    try:
        def revoke():
            htpasswd.write_text(bcrypt_line("bob", passwords["bob"]) + "\n")
            reload_and_wait(proxy)

        check_revocation(proxy, ca_file, front, basic("alice"), basic("bob"), revoke)
    finally:
        proxy.stop()


def jwt_provider(**keys) -> dict:
    return {"name": "corp", "issuer": ISSUER, "audiences": ["otlp-ingest"], "algorithms": ["ES256"],
            "tenant_claim": "tenant", **keys}


@pytest.mark.parametrize("front", FRONTS)
def test_revocation_jwks_file_key_removed_by_reload_refused_on_open_connection(binary, certs, ca_file, sink, tmp_path, front):
    sink.require_grpc_port()
    leaked_key, other_key = SigningKey.es256("leaked"), SigningKey.es256("other")
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(jwks(leaked_key, other_key)))
    proxy = start_auth_proxy(binary, tmp_path / "proxy", certs=certs, sink=sink,
                             auth={"jwt": {"providers": [jwt_provider(jwks_file=str(jwks_file))]}})
    leaked = "Bearer " + leaked_key.sign(claims(ISSUER, sub="svc-a", tenant="team-a", lifetime=600))
    other = "Bearer " + other_key.sign(claims(ISSUER, sub="svc-b", tenant="team-b", lifetime=600))
    try:
        def revoke():
            jwks_file.write_text(json.dumps(jwks(other_key)))
            reload_and_wait(proxy)

        check_revocation(proxy, ca_file, front, leaked, other, revoke)
    finally:
        proxy.stop()


@pytest.mark.parametrize("front", FRONTS)
def test_revocation_jwks_url_key_removed_by_refresh_refused_on_open_connection(binary, certs, ca_file, sink, tmp_path, front):
    sink.require_grpc_port()
    leaked_key, other_key = SigningKey.es256("leaked"), SigningKey.es256("other")
    server = JWKSServer(tmp_path / "idp", jwks(leaked_key, other_key))
    proxy = start_auth_proxy(binary, tmp_path / "proxy", certs=certs, sink=sink, auth={"jwt": {"providers": [
        jwt_provider(jwks_url=server.jwks_url, jwks_ca_file=str(server.ca_file), jwks_refresh_interval="1s"),
    ]}})
    leaked = "Bearer " + leaked_key.sign(claims(ISSUER, sub="svc-a", tenant="team-a", lifetime=600))
    other = "Bearer " + other_key.sign(claims(ISSUER, sub="svc-b", tenant="team-b", lifetime=600))
    try:
        def revoke():
            server.set_keys(jwks(other_key))
            fetched = server.fetch_count()
            deadline = time.monotonic() + 10
            # Two more fetches: the first may have read the old set just before it changed.
            while server.fetch_count() < fetched + 2:
                assert time.monotonic() < deadline, "the proxy did not refresh the JWKS"
                time.sleep(0.05)
            time.sleep(0.2)  # the fetched set is parsed and swapped in just after the response

        check_revocation(proxy, ca_file, front, leaked, other, revoke)
    finally:
        proxy.stop()
        server.stop()


@pytest.mark.parametrize("front", FRONTS)
def test_revocation_signal_removed_from_principal_by_reload_forbidden_on_open_connection(binary, certs, ca_file, sink, tmp_path, front):
    sink.require_grpc_port()
    token = "t-" + secrets.token_urlsafe(24)
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(f'tokens:\n  - {{ principal: exporter, tenant: team-a, token: "{token}" }}\n')
    tokens.chmod(0o600)
    directory = tmp_path / "proxy"

    def auth(signals: list[str]) -> dict:
        return {"bearer": {"tokens_file": str(tokens)},
                "principals": [{"principal": "token:exporter", "tenant": "team-a", "signals": signals}]}

    proxy = start_auth_proxy(binary, directory, certs=certs, sink=sink, auth=auth(["traces", "logs"]))
    connection = Connection(front, proxy, ca_file)
    try:
        assert connection.send(f"Bearer {token}") == "ok"
        accepted = connections_accepted(proxy)
        edit_config(directory / "proxy.yaml", lambda document: document.update(auth=auth(["logs"])))
        reload_and_wait(proxy)
        assert connection.send(f"Bearer {token}") == "forbidden"
        assert connections_accepted(proxy) == accepted
    finally:
        connection.close()
        proxy.stop()
