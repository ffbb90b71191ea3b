"""Helpers for the authentication end-to-end tests (issue 4): a client-certificate PKI and CRLs
made at test time with `cryptography`, a JWKS/OIDC server over HTTPS on 127.0.0.1 with its own
CA, JWTs minted with PyJWT, htpasswd lines, proxy configurations with `tls`/`auth`/`tenant`
sections, and small HTTP/gRPC/s_client request helpers that carry a client certificate."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import http.client
import json
import ssl
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path

import grpc
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import Proxy, Sink, start_proxy_process
from grpc_helpers import read_ca, trace_request

NOW = lambda: datetime.datetime.now(datetime.timezone.utc)  # noqa: E731
DAY = datetime.timedelta(days=1)


# --- X.509 -------------------------------------------------------------------------------------


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Authority:
    """A CA key and certificate (root or intermediate) that issues certificates and CRLs."""

    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    revoked: list[int] = field(default_factory=list)

    @staticmethod
    def root(name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "otlp-auth-proxy e2e"),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW() - DAY).not_valid_after(NOW() + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return Authority(name, key, cert)

    def intermediate(self, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "otlp-auth-proxy e2e"),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW() - DAY).not_valid_after(NOW() + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return Authority(name, key, cert)

    def issue(
        self,
        common_name: str,
        *,
        uris: tuple[str, ...] = (),
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        eku: tuple = (ExtendedKeyUsageOID.CLIENT_AUTH,),
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW() - DAY).not_valid_after(not_after or NOW() + 10 * DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        names += [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(IPv4Address(i)) for i in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key

    def crl(self, expired: bool = False) -> bytes:
        """A CRL listing `revoked`, current (or, with `expired`, past its nextUpdate)."""
        last, following = (NOW() - 10 * DAY, NOW() - DAY) if expired else (NOW() - DAY, NOW() + DAY)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject).last_update(last).next_update(following)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .add_extension(x509.CRLNumber(1), critical=False)
        )
        for serial in self.revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW() - DAY).build()
            )
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(False, False, False, False, False, True, True, False, False)


@dataclass(frozen=True)
class ClientCert:
    """A client certificate written to disk: `cert` holds the leaf and any intermediates (the
    chain the client sends), `key` the private key."""

    name: str
    cert: Path
    key: Path

    def chain_bytes(self) -> bytes:
        return self.cert.read_bytes()

    def key_bytes(self) -> bytes:
        return self.key.read_bytes()


def write_client(directory: Path, name: str, cert: x509.Certificate, key, *chain: x509.Certificate) -> ClientCert:
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(_pem_cert(cert) + b"".join(_pem_cert(c) for c in chain))
    if chain:
        # s_client sends only the first certificate of -cert; the rest goes in -cert_chain.
        (directory / f"{name}.chain.crt").write_bytes(b"".join(_pem_cert(c) for c in chain))
    key_path.write_bytes(_pem_key(key))
    key_path.chmod(0o600)
    return ClientCert(name, cert_path, key_path)


@dataclass
class ClientPKI:
    """Every client certificate the mTLS tests use, under one root CA (`ca_file`, with CRLs for
    the root and the intermediate in `crl_file`; `expired_crl_file` has the root's CRL past its
    nextUpdate) plus a rogue CA the proxy does not trust."""

    ca_file: Path
    crl_file: Path
    expired_crl_file: Path
    clients: dict[str, ClientCert]

    def __getitem__(self, name: str) -> ClientCert:
        return self.clients[name]


SPIFFE_GOOD = "spiffe://e2e.test/ns/otel/collector"
SPIFFE_VIA_INTERMEDIATE = "spiffe://e2e.test/ns/otel/edge-agent"
SPIFFE_OUTSIDE = "spiffe://e2e.test/ns/other/intruder"
DNS_CLIENT = "node-7.clients.e2e.test"
CN_ONLY = "collector-1"


def make_client_pki(directory: Path) -> ClientPKI:
    directory.mkdir(parents=True, exist_ok=True)
    root = Authority.root("e2e clients root CA")
    issuing = root.intermediate("e2e clients issuing CA")
    rogue = Authority.root("e2e rogue CA")
    clients: dict[str, ClientCert] = {}

    def add(name: str, authority: Authority, *chain: x509.Certificate, **options) -> x509.Certificate:
        cert, key = authority.issue(name, **options)
        clients[name] = write_client(directory, name, cert, key, *chain)
        return cert

    add("good", root, uris=(SPIFFE_GOOD,))
    add("expired", root, uris=(SPIFFE_GOOD,), not_before=NOW() - 10 * DAY, not_after=NOW() - DAY)
    add("not-yet-valid", root, uris=(SPIFFE_GOOD,), not_before=NOW() + DAY, not_after=NOW() + 10 * DAY)
    add("unknown-ca", rogue, uris=(SPIFFE_GOOD,))
    revoked = add("revoked", root, uris=(SPIFFE_GOOD,))
    root.revoked.append(revoked.serial_number)
    add("server-eku", root, uris=(SPIFFE_GOOD,), eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    add("intermediate", issuing, issuing.cert, uris=(SPIFFE_VIA_INTERMEDIATE,))
    add("dns", root, dns=(DNS_CLIENT,))
    # No subjectAltName at all: the subject CN is the only identity.
    add(CN_ONLY, root)
    add("outside", root, uris=(SPIFFE_OUTSIDE,))

    ca_file = directory / "clients-ca.crt"
    ca_file.write_bytes(_pem_cert(root.cert))
    crl_file = directory / "clients.crl"
    crl_file.write_bytes(root.crl() + issuing.crl())
    expired_crl_file = directory / "clients-expired.crl"
    expired_crl_file.write_bytes(root.crl(expired=True) + issuing.crl())
    return ClientPKI(ca_file, crl_file, expired_crl_file, clients)


def make_server_pki(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a 127.0.0.1/localhost serverAuth certificate: (ca_file, cert_file, key_file)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = Authority.root(f"{name} CA")
    cert, key = ca.issue("localhost", dns=("localhost",), ips=("127.0.0.1",), eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    ca_file = directory / f"{name}-ca.crt"
    ca_file.write_bytes(_pem_cert(ca.cert))
    client = write_client(directory, name, cert, key)
    return ca_file, client.cert, client.key


# --- proxy configuration --------------------------------------------------------------------


def write_auth_config(
    directory: Path,
    *,
    certs: Path,
    sink: Sink,
    auth: dict,
    tls: dict | None = None,
    tenant: dict | None = None,
) -> Path:
    """A complete proxy configuration in front of `sink`. The file is JSON, which is YAML too, so
    nested auth sections are written exactly as given (keys as in the configuration reference)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "grpc": {"endpoint": "127.0.0.1:0"},
        "http": {"endpoint": "127.0.0.1:0"},
        "tls": {"cert_file": str(certs / "server.crt"), "key_file": str(certs / "server.key"), **(tls or {})},
        "upstream": {"grpc": f"127.0.0.1:{sink.require_grpc_port()}", "http": f"127.0.0.1:{sink.port}"},
        "admin": {"endpoint": "127.0.0.1:0"},
        "auth": auth,
        "tenant": {"header": "X-Scope-OrgID", **(tenant or {})},
    }
    path = directory / "proxy.yaml"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def edit_config(path: Path, change) -> dict:
    """Rewrites the JSON configuration at `path` after `change(document)` edited it in place, as an
    operator edits the file before a reload; returns the document."""
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return document


def start_auth_proxy(binary: Path, directory: Path, **settings) -> Proxy:
    return start_proxy_process(binary, write_auth_config(directory, **settings))


def validate(binary: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), "validate", "--config", str(config)], capture_output=True, text=True, timeout=30)


# --- requests through the proxy -------------------------------------------------------------


SIGNAL_PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/v1/logs", "profiles": "/v1development/profiles"}
GRPC_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    "profiles": "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
}


@dataclass
class HTTPResult:
    status: int
    headers: list[tuple[str, str]]  # names lower-cased
    body: bytes

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]


def post_otlp(
    proxy: Proxy,
    ca_file: str,
    *,
    signal: str = "traces",
    client: ClientCert | None = None,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes | None = None,
) -> HTTPResult:
    """One OTLP/HTTP protobuf export over HTTPS/1.1 (http.client, so a header may be repeated:
    pass a list of pairs). The default body is two real spans for traces and an empty (valid)
    request for the other signals."""
    if body is None:
        body = trace_request(2).SerializeToString() if signal == "traces" else b""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    context = ssl.create_default_context(cafile=ca_file)
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    connection = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=context, timeout=15)
    try:
        connection.putrequest("POST", SIGNAL_PATHS[signal], skip_accept_encoding=True)
        connection.putheader("Content-Type", "application/x-protobuf")
        connection.putheader("Content-Length", str(len(body)))
        for name, value in pairs:
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return HTTPResult(response.status, [(k.lower(), v) for k, v in response.getheaders()], response.read())
    finally:
        connection.close()


def grpc_client_channel(port: int, ca_file: str, client: ClientCert | None = None) -> grpc.Channel:
    if client is None:
        credentials = grpc.ssl_channel_credentials(root_certificates=read_ca(ca_file))
    else:
        credentials = grpc.ssl_channel_credentials(read_ca(ca_file), client.key_bytes(), client.chain_bytes())
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


def grpc_export(
    proxy: Proxy,
    ca_file: str,
    *,
    signal: str = "traces",
    client: ClientCert | None = None,
    metadata: list[tuple[str, str]] | None = None,
) -> grpc.StatusCode:
    """One unary Export call on a fresh channel; returns its status code (OK on success). Traces
    carry two spans; the other signals an empty request."""
    payload = trace_request(2).SerializeToString() if signal == "traces" else b""
    channel = grpc_client_channel(proxy.grpc_port, ca_file, client)
    try:
        call = channel.unary_unary(GRPC_METHODS[signal], request_serializer=None, response_deserializer=None)
        call(payload, metadata=metadata or [], timeout=15)
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()
    finally:
        channel.close()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@dataclass
class SClientResult:
    returncode: int
    output: str

    @property
    def http_status(self) -> int | None:
        for line in self.output.splitlines():
            if line.startswith("HTTP/1.1 "):
                return int(line.split()[1])
        return None


def s_client_request(port: int, server_ca: str, client: ClientCert | None, *options: str, method: str = "POST", path: str = "/v1/traces") -> SClientResult:
    """A handshake with openssl s_client presenting `client`, then one OTLP/HTTP request with an
    empty protobuf body on the same connection (so an alert the server sends after a TLS 1.3
    handshake is read, and a good certificate gets an HTTP status)."""
    command = [
        "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
        "-CAfile", server_ca, "-verify_return_error", "-alpn", "http/1.1", "-ign_eof", "-quiet", *options,
    ]
    if client is not None:
        command += ["-cert", str(client.cert), "-key", str(client.key)]
        intermediates = client.cert.with_name(f"{client.name}.chain.crt")
        if intermediates.exists():
            command += ["-cert_chain", str(intermediates)]
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-protobuf\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    result = subprocess.run(command, input=request, capture_output=True, text=True, timeout=20)
    return SClientResult(result.returncode, result.stdout + result.stderr)


# --- JWT ---------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class SigningKey:
    """A private key with its kid and JWS algorithm; `jwk` is its public JWK."""

    kid: str
    algorithm: str
    private: object

    @staticmethod
    def es256(kid: str | None = None) -> SigningKey:
        return SigningKey(kid or f"es-{uuid.uuid4().hex[:8]}", "ES256", ec.generate_private_key(ec.SECP256R1()))

    @staticmethod
    def rs256(kid: str | None = None) -> SigningKey:
        return SigningKey(kid or f"rs-{uuid.uuid4().hex[:8]}", "RS256", rsa.generate_private_key(65537, 2048))

    @property
    def jwk(self) -> dict:
        algorithm = jwt.algorithms.get_default_algorithms()[self.algorithm]
        key = json.loads(algorithm.to_jwk(self.private.public_key()))
        key.update(kid=self.kid, alg=self.algorithm, use="sig")
        return key

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict, **header) -> str:
        return jwt.encode(claims, self.private, algorithm=self.algorithm, headers={"kid": self.kid, **header})


def jwks(*keys: SigningKey) -> dict:
    return {"keys": [key.jwk for key in keys]}


def claims(issuer: str, *, audience="otlp-ingest", lifetime: int = 300, **extra) -> dict:
    now = int(time.time())
    payload = {"iss": issuer, "aud": audience, "iat": now, "nbf": now - 5, "exp": now + lifetime}
    payload.update(extra)
    return {k: v for k, v in payload.items() if v is not None}


def sign_raw(key: SigningKey, header: dict | str, payload: dict | str, *, der: bool = False) -> str:
    """A compact JWS over exactly the given header and payload text (so duplicate members or odd
    spellings survive), signed with `key`'s algorithm. `der`: an ES* signature in DER instead of
    the JOSE r‖s form."""
    header_text = header if isinstance(header, str) else json.dumps(header)
    payload_text = payload if isinstance(payload, str) else json.dumps(payload)
    signing_input = (b64url(header_text.encode()) + "." + b64url(payload_text.encode())).encode()
    if der:
        signature = key.private.sign(signing_input, ec.ECDSA(hashes.SHA256()))
    else:
        signature = jwt.algorithms.get_default_algorithms()[key.algorithm].sign(signing_input, key.private)
    return signing_input.decode() + "." + b64url(signature)


def hs256_with_public_key(key: SigningKey, payload: dict) -> str:
    """The classic key-confusion token: alg HS256 with the RSA public key (PEM) as the secret.
    PyJWT refuses to make it, so it is built by hand."""
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    signature = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(signature)


def alg_none(payload: dict, kid: str, alg: str = "none") -> str:
    header = {"alg": alg, "typ": "JWT", "kid": kid}
    return b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode()) + "."


class JWKSServer:
    """An HTTPS server on 127.0.0.1 (its own CA, `ca_file`) serving `/jwks.json` and an OIDC
    discovery document at `/.well-known/openid-configuration` for `issuer`. `fetches` counts GET
    /jwks.json requests; `set_keys` switches the served set; `stop` takes it off the network."""

    def __init__(self, directory: Path, keys: dict, issuer: str | None = None, port: int = 0,
                 pki: tuple[Path, Path, Path] | None = None):
        """`pki` is (ca_file, cert_file, key_file) from make_server_pki; a fresh CA by default."""
        self.ca_file, cert, key = pki or make_server_pki(directory, "jwks")
        self.keys = keys
        self.issuer = issuer
        self.fetches = 0
        self.discovery_fetches = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server naming)
                if self.path == "/jwks.json":
                    with server.lock:
                        server.fetches += 1
                        body = json.dumps(server.keys).encode()
                elif self.path == "/.well-known/openid-configuration" and server.issuer:
                    with server.lock:
                        server.discovery_fetches += 1
                    body = json.dumps({"issuer": server.issuer, "jwks_uri": server.jwks_url}).encode()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/jwks.json"

    def set_keys(self, keys: dict) -> None:
        with self.lock:
            self.keys = keys

    def fetch_count(self) -> int:
        with self.lock:
            return self.fetches

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


# --- htpasswd ---------------------------------------------------------------------------------


def bcrypt_line(user: str, password: str, prefix: str = "$2y$") -> str:
    import bcrypt

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    return f"{user}:{prefix}{hashed[4:]}"


def sha512_crypt_line(user: str, password: str) -> str:
    result = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True, check=True)
    return f"{user}:{result.stdout.strip()}"


def sha1_line(user: str, password: str) -> str:
    return f"{user}:{{SHA}}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


def tenant_counts(sink: Sink) -> dict[str, int]:
    """Requests per tenant at the sink."""
    return {name: value["requests"] for name, value in sink.stats()["tenants"].items()}


def last_headers(sink: Sink, name: str) -> list[str]:
    return [value for key, value in sink.stats()["last_request"]["headers"] if key == name.lower()]
