"""Client certificates that stop passing end the connections they opened, as a drain would end them.

A connection keeps the TLS context it was accepted with, so a client certificate is checked by the
handshake only once. When a reload's CRL revokes it, its CA leaves `tls.client_ca_file`, or
`auth.mtls.allowed_principals` no longer admits it, and when it reaches its notAfter, every open
connection that presented it is asked to finish: HTTP/2 gets the shutdown notice and the final
GOAWAY, HTTP/1.1 answers with `Connection: close` (an idle keep-alive connection is closed at once),
requests in flight complete. The client reconnects, and the new handshake decides. Each such end is
logged and counted in `connections_ended_total{reason}`.

Each test holds client certificate A on a grpcio channel, an HTTP/1.1 keep-alive connection and an
HTTP/2 connection, and certificate B on connections of its own that must keep working."""

from __future__ import annotations

import datetime
import http.client
import socket
import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame, RstStreamFrame
from prometheus_client.parser import text_string_to_metric_families

from auth_helpers import (
    edit_config,
    GRPC_METHODS,
    NOW,
    Authority,
    ClientCert,
    grpc_client_channel,
    s_client_request,
    write_auth_config,
    write_client,
)
from receivers import RecordingReceiver
from conftest import start_proxy_process
from grpc_helpers import H2Client, trace_request
from test_revocation import connections_accepted, reload_and_wait

IDENTITY_A = "spiffe://e2e.test/ns/otel/exporter-a"
IDENTITY_B = "spiffe://e2e.test/ns/otel/exporter-b"
REASONS = ("certificate_revoked", "certificate_expired", "certificate_untrusted", "principal_removed")
PAYLOAD = trace_request(1).SerializeToString()


# --- a client CA whose CRL and trust file the tests rewrite --------------------------------------


@dataclass
class ClientCA:
    """A root CA for client certificates, its `tls.client_ca_file` and its `tls.crl_file`."""

    directory: Path
    root: Authority = field(default_factory=lambda: Authority.root("e2e mtls revocation CA"))
    serials: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_file.write_bytes(pem(self.root.cert))
        self.write_crl()

    @property
    def ca_file(self) -> Path:
        return self.directory / "clients-ca.crt"

    @property
    def crl_file(self) -> Path:
        return self.directory / "clients.crl"

    def issue(self, name: str, identity: str, **validity) -> ClientCert:
        cert, key = self.root.issue(name, uris=(identity,), **validity)
        self.serials[name] = cert.serial_number
        return write_client(self.directory, name, cert, key)

    def write_crl(self) -> None:
        self.crl_file.write_bytes(self.root.crl())

    def revoke(self, name: str) -> None:
        self.root.revoked.append(self.serials[name])
        self.write_crl()


def pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def start_mtls_proxy(binary: Path, directory: Path, certs: Path, sink, pki: ClientCA, allowed: list[str],
                     upstream_http: int | None = None):
    """client_auth require, the CA and CRL of `pki`, mTLS as the only method, one tenant for all."""
    config = write_auth_config(
        directory, certs=certs, sink=sink,
        tls={"client_ca_file": str(pki.ca_file), "crl_file": str(pki.crl_file), "client_auth": "require"},
        auth={"methods": ["mtls"], "mtls": {"allowed_principals": allowed}},
        tenant={"default": "team-mtls"},
    )
    if upstream_http is not None:
        edit_config(config, lambda document: document["upstream"].update(http=f"127.0.0.1:{upstream_http}", timeout="30s"))
    return start_proxy_process(binary, config)


def set_allowed_principals(directory: Path, allowed: list[str]) -> None:
    edit_config(directory / "proxy.yaml", lambda document: document["auth"]["mtls"].update(allowed_principals=allowed))


def connections_ended(proxy) -> dict[str, float]:
    """`otlp_auth_proxy_connections_ended_total` by reason, from the admin /metrics."""
    with urllib.request.urlopen(f"{proxy.admin_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    ended: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "otlp_auth_proxy_connections_ended_total":
                ended[sample.labels["reason"]] = sample.value
    return ended


def wait_for_ended(proxy, reason: str, count: int, timeout: float = 10) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        ended = connections_ended(proxy)
        if ended.get(reason, 0) >= count or time.monotonic() > deadline:
            return ended
        time.sleep(0.05)


# --- the client connections ------------------------------------------------------------------


class GrpcConnection:
    """A grpcio channel presenting `client`; grpcio reconnects by itself after a GOAWAY."""

    def __init__(self, proxy, ca_file: str, client: ClientCert):
        self.channel = grpc_client_channel(proxy.grpc_port, ca_file, client)
        self.call = self.channel.unary_unary(GRPC_METHODS["traces"], request_serializer=None, response_deserializer=None)

    def export(self) -> grpc.StatusCode:
        try:
            self.call(PAYLOAD, timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as error:
            return error.code()

    def close(self) -> None:
        self.channel.close()


class H1Connection:
    """One HTTP/1.1 keep-alive connection presenting `client`; `export` asserts it is still the
    same socket (http.client would silently reconnect)."""

    def __init__(self, proxy, ca_file: str, client: ClientCert):
        context = ssl.create_default_context(cafile=ca_file)
        context.set_alpn_protocols(["http/1.1"])
        context.load_cert_chain(str(client.cert), str(client.key))
        self.http = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=context, timeout=15)
        self.http.connect()
        self.sock = self.http.sock

    def send(self) -> None:
        self.http.request("POST", "/v1/traces", body=PAYLOAD, headers={"Content-Type": "application/x-protobuf"})

    def response(self) -> http.client.HTTPResponse:
        response = self.http.getresponse()
        response.read()
        assert self.http.sock is self.sock or self.http.sock is None, "the HTTP/1.1 connection was replaced"
        return response

    def export(self) -> int:
        self.send()
        return self.response().status

    def closed_by_proxy(self, timeout: float) -> bool:
        """Whether the proxy closes the idle connection within `timeout` (close_notify or EOF)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (socket.timeout, TimeoutError):
            return False
        except (ConnectionError, ssl.SSLError):
            return True

    def close(self) -> None:
        self.http.close()


@dataclass
class Goaway:
    last_stream_id: int
    error_code: int


class H2Connection:
    """One HTTP/2 connection presenting `client`."""

    def __init__(self, proxy, ca_file: str, client: ClientCert):
        self.h2 = H2Client(proxy.port, ca_file, timeout=15, client_cert=(str(client.cert), str(client.key)))

    def headers(self) -> list[tuple[str, str]]:
        return [(":method", "POST"), (":scheme", "https"), (":authority", "127.0.0.1"), (":path", "/v1/traces"),
                ("content-type", "application/x-protobuf")]

    def export(self) -> int | None:
        response = self.h2.request(self.headers(), PAYLOAD)
        assert not self.h2.terminated, "the HTTP/2 connection was ended"
        return response.status

    def start(self) -> int:
        """Sends one request without waiting for its response; returns its stream id."""
        connection = self.h2.connection
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, self.headers())
        connection.send_data(stream, PAYLOAD, end_stream=True)
        self.h2.sock.sendall(connection.data_to_send())
        return stream

    def read_until_closed(self, timeout: float) -> tuple[list[Goaway], dict[int, str], bool]:
        """Reads until the proxy closes the connection: the GOAWAYs received, the `:status` (or
        reset) of each stream that ended meanwhile, and whether the connection closed in time.

        Frames are read with hyperframe and the connection's own HPACK decoder: the h2 library
        takes a GOAWAY as the end of the connection and refuses the frames that follow it, while
        a graceful shutdown goes on serving the streams it names."""
        decoder, sock = self.h2.connection.decoder, self.h2.sock
        goaways: list[Goaway] = []
        outcomes: dict[int, str] = {}
        statuses: dict[int, str] = {}
        pending = b""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return goaways, outcomes, False
            sock.settimeout(remaining)
            try:
                received = sock.recv(65536)
            except (socket.timeout, TimeoutError):
                return goaways, outcomes, False
            except (ConnectionError, ssl.SSLError):
                return goaways, outcomes, True
            if not received:
                return goaways, outcomes, True
            pending += received
            while len(pending) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(pending[:9]))
                if len(pending) < 9 + length:
                    break
                frame.parse_body(memoryview(pending[9:9 + length]))
                pending = pending[9 + length:]
                if isinstance(frame, GoAwayFrame):
                    goaways.append(Goaway(frame.last_stream_id, frame.error_code))
                elif isinstance(frame, HeadersFrame):
                    headers = dict(decoder.decode(frame.data))
                    if ":status" in headers:
                        statuses[frame.stream_id] = headers[":status"]
                    if "END_STREAM" in frame.flags:
                        outcomes[frame.stream_id] = statuses.get(frame.stream_id, "?")
                elif isinstance(frame, DataFrame) and "END_STREAM" in frame.flags:
                    outcomes[frame.stream_id] = statuses.get(frame.stream_id, "?")
                elif isinstance(frame, RstStreamFrame):
                    outcomes[frame.stream_id] = f"reset {frame.error_code}"

    def close(self) -> None:
        self.h2.close()


class Clients:
    """Certificate A on a grpcio channel, HTTP/1.1 and HTTP/2; certificate B on HTTP/1.1 and HTTP/2."""

    def __init__(self, proxy, ca_file: str, a: ClientCert, b: ClientCert):
        self.grpc_a = GrpcConnection(proxy, ca_file, a)
        self.h1_a = H1Connection(proxy, ca_file, a)
        self.h2_a = H2Connection(proxy, ca_file, a)
        self.h1_b = H1Connection(proxy, ca_file, b)
        self.h2_b = H2Connection(proxy, ca_file, b)

    def all_export(self) -> None:
        assert self.grpc_a.export() == grpc.StatusCode.OK
        assert self.h1_a.export() == 200
        assert self.h2_a.export() == 200
        assert self.h1_b.export() == 200
        assert self.h2_b.export() == 200

    def assert_a_ended_b_kept(self) -> None:
        """A's HTTP/1.1 connection (idle) is closed at once, its HTTP/2 connection gets GOAWAY with
        NO_ERROR and then closes; B's connections carry the next exports, on the same connections."""
        assert self.h1_a.closed_by_proxy(timeout=5), "the idle HTTP/1.1 connection with certificate A stayed open"
        goaways, _, closed = self.h2_a.read_until_closed(timeout=5)
        assert goaways, "no GOAWAY on the HTTP/2 connection with certificate A"
        assert all(goaway.error_code == 0 for goaway in goaways), goaways
        assert closed, "the HTTP/2 connection with certificate A stayed open after its GOAWAY"
        assert self.h1_b.export() == 200
        assert self.h2_b.export() == 200

    def close(self) -> None:
        for connection in (self.grpc_a, self.h1_a, self.h2_a, self.h1_b, self.h2_b):
            connection.close()


# --- tests ---------------------------------------------------------------------------------------


def test_mtls_crl_reload_revoking_connected_certificate_ends_its_connections(binary, certs, ca_file, sink, tmp_path):
    sink.require_grpc_port()
    pki = ClientCA(tmp_path / "pki")
    a, b = pki.issue("exporter-a", IDENTITY_A), pki.issue("exporter-b", IDENTITY_B)
    proxy = start_mtls_proxy(binary, tmp_path / "proxy", certs, sink, pki, [IDENTITY_A, IDENTITY_B])
    clients = Clients(proxy, ca_file, a, b)
    try:
        clients.all_export()
        assert not any(connections_ended(proxy).values())

        pki.revoke("exporter-a")
        reload_and_wait(proxy)

        clients.assert_a_ended_b_kept()
        # grpcio reconnects for the next call, and the new handshake refuses the revoked certificate.
        assert clients.grpc_a.export() == grpc.StatusCode.UNAVAILABLE
        refused = s_client_request(proxy.port, ca_file, a)
        assert "alert certificate revoked" in refused.output, refused.output
        assert s_client_request(proxy.port, ca_file, b).http_status == 200

        ended = wait_for_ended(proxy, "certificate_revoked", 3)
        assert ended == {**{reason: 0 for reason in REASONS}, "certificate_revoked": 3}, ended
        logs = proxy.logs()
        assert logs.count("client certificate revoked; ending its connection") == 3, proxy.describe()
        assert '"client_certificate_connections_ended":"3"' in logs, logs[-3000:]
        assert "PRIVATE KEY" not in logs
    finally:
        clients.close()
        proxy.stop()


def test_mtls_ca_removed_from_client_ca_file_by_reload_ends_its_connections(binary, certs, ca_file, sink, tmp_path):
    sink.require_grpc_port()
    pki = ClientCA(tmp_path / "pki")
    other = ClientCA(tmp_path / "other-pki")
    a = pki.issue("exporter-a", IDENTITY_A)
    b = other.issue("exporter-b", IDENTITY_B)
    # Both CAs are trusted, each with its CRL.
    both = tmp_path / "both-ca.crt"
    both.write_bytes(pki.ca_file.read_bytes() + other.ca_file.read_bytes())
    crls = tmp_path / "both.crl"
    crls.write_bytes(pki.crl_file.read_bytes() + other.crl_file.read_bytes())
    directory = tmp_path / "proxy"
    proxy = start_mtls_proxy(binary, directory, certs, sink, pki, [IDENTITY_A, IDENTITY_B])
    config = directory / "proxy.yaml"
    edit_config(config, lambda document: document["tls"].update(client_ca_file=str(both), crl_file=str(crls)))
    reload_and_wait(proxy)
    clients = Clients(proxy, ca_file, a, b)
    try:
        clients.all_export()
        # A's CA goes: only B's CA and CRL stay.
        edit_config(config, lambda document: document["tls"].update(
            client_ca_file=str(other.ca_file), crl_file=str(other.crl_file)))
        reload_and_wait(proxy)

        clients.assert_a_ended_b_kept()
        assert clients.grpc_a.export() == grpc.StatusCode.UNAVAILABLE
        refused = s_client_request(proxy.port, ca_file, a)
        assert "alert unknown ca" in refused.output, refused.output
        ended = wait_for_ended(proxy, "certificate_untrusted", 3)
        assert ended["certificate_untrusted"] == 3 and ended["certificate_revoked"] == 0, ended
        assert proxy.logs().count("client certificate no longer trusted; ending its connection") == 3
    finally:
        clients.close()
        proxy.stop()


def test_mtls_allowed_principal_removed_by_reload_ends_its_connections(binary, certs, ca_file, sink, tmp_path):
    sink.require_grpc_port()
    pki = ClientCA(tmp_path / "pki")
    a, b = pki.issue("exporter-a", IDENTITY_A), pki.issue("exporter-b", IDENTITY_B)
    directory = tmp_path / "proxy"
    proxy = start_mtls_proxy(binary, directory, certs, sink, pki, [IDENTITY_A, IDENTITY_B])
    clients = Clients(proxy, ca_file, a, b)
    try:
        clients.all_export()
        accepted = connections_accepted(proxy)

        set_allowed_principals(directory, [IDENTITY_B])
        reload_and_wait(proxy)

        clients.assert_a_ended_b_kept()
        # The certificate itself is still valid: grpcio's new connection is accepted, and its
        # request refused as any request from a principal outside the allow-list is.
        assert clients.grpc_a.export() == grpc.StatusCode.PERMISSION_DENIED
        assert connections_accepted(proxy) == accepted + 1, "grpcio reconnected once; B stayed on its connections"
        assert s_client_request(proxy.port, ca_file, a).http_status == 403

        ended = wait_for_ended(proxy, "principal_removed", 3)
        assert ended == {**{reason: 0 for reason in REASONS}, "principal_removed": 3}, ended
        assert proxy.logs().count("client certificate principal no longer allowed; ending its connection") == 3
        assert f"cert:{IDENTITY_A} is not in auth.mtls.allowed_principals" in proxy.logs()
    finally:
        clients.close()
        proxy.stop()


def test_mtls_certificate_expiring_while_connected_ends_its_connections_at_not_after(binary, certs, ca_file, sink, tmp_path):
    sink.require_grpc_port()
    pki = ClientCA(tmp_path / "pki")
    # X.509 times have whole seconds: the certificate is valid until the start of that second.
    not_after = (NOW() + datetime.timedelta(seconds=8)).replace(microsecond=0)
    a = pki.issue("exporter-a", IDENTITY_A, not_after=not_after)
    b = pki.issue("exporter-b", IDENTITY_B)
    proxy = start_mtls_proxy(binary, tmp_path / "proxy", certs, sink, pki, [IDENTITY_A, IDENTITY_B])
    clients = Clients(proxy, ca_file, a, b)
    try:
        clients.all_export()
        assert NOW() < not_after - datetime.timedelta(seconds=1), "the set-up took too long for this test"
        assert not any(connections_ended(proxy).values())

        seconds_left = (not_after - NOW()).total_seconds()
        assert clients.h1_a.closed_by_proxy(timeout=seconds_left + 3), "the expired certificate's connection stayed open"
        assert NOW() >= not_after - datetime.timedelta(milliseconds=100), "closed before the certificate expired"
        goaways, _, closed = clients.h2_a.read_until_closed(timeout=5)
        assert goaways and all(goaway.error_code == 0 for goaway in goaways), goaways
        assert closed
        assert clients.grpc_a.export() == grpc.StatusCode.UNAVAILABLE
        refused = s_client_request(proxy.port, ca_file, a)
        assert "alert certificate expired" in refused.output, refused.output
        assert clients.h1_b.export() == 200
        assert clients.h2_b.export() == 200

        ended = wait_for_ended(proxy, "certificate_expired", 3)
        assert ended == {**{reason: 0 for reason in REASONS}, "certificate_expired": 3}, ended
        assert proxy.logs().count("client certificate expired; ending its connection") == 3
    finally:
        clients.close()
        proxy.stop()


def test_mtls_revoked_while_request_in_flight_request_completes_then_connection_ends(binary, certs, ca_file, sink, tmp_path):
    sink.require_grpc_port()
    receiver = RecordingReceiver(delay=2.0)
    pki = ClientCA(tmp_path / "pki")
    a = pki.issue("exporter-a", IDENTITY_A)
    proxy = start_mtls_proxy(binary, tmp_path / "proxy", certs, sink, pki, [IDENTITY_A], upstream_http=receiver.port)
    h1 = H1Connection(proxy, ca_file, a)
    h2 = H2Connection(proxy, ca_file, a)
    try:
        h1.send()
        stream = h2.start()
        receiver.wait_for(2)

        pki.revoke("exporter-a")
        reload_and_wait(proxy)

        response = h1.response()
        assert response.status == 200
        assert response.getheader("connection") == "close"
        goaways, outcomes, closed = h2.read_until_closed(timeout=10)
        assert outcomes == {stream: "200"}, outcomes
        assert goaways and all(goaway.error_code == 0 for goaway in goaways), goaways
        assert goaways[-1].last_stream_id == stream, "the final GOAWAY names the stream that was served"
        assert closed
        assert wait_for_ended(proxy, "certificate_revoked", 2)["certificate_revoked"] == 2
    finally:
        h1.close()
        h2.close()
        proxy.stop()
        receiver.close()
