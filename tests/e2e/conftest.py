"""End-to-end fixtures: real `otlp-auth-proxy` processes on 127.0.0.1 port 0, certificates made
at test time with certs/make-dev-certs.sh, and real clients (OpenTelemetry SDK exporters, curl,
openssl s_client).

The binary is $OTLP_AUTH_PROXY_BIN (relative paths are taken from the repository root), else
.build/debug/otlp-auth-proxy. Every process started here is stopped with SIGTERM at teardown.
"""

from __future__ import annotations

import hashlib
import os
import queue
import random
import re
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]

# requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a Session's `verify`, which is
# where the OTLP/HTTP exporters put `certificate_file`; with either set (CI images often set
# them) the exporters would ignore our dev CA. The tests pass every CA explicitly.
for _variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
    os.environ.pop(_variable, None)
READY_TIMEOUT = 20.0
# The sink prints `sink ready http=H:P`, and `... grpc=H:P` once it serves OTLP/gRPC too.
SINK_READY = re.compile(r"^sink ready http=(?P<host>\S+):(?P<port>\d+)(?: grpc=(?P<ghost>\S+):(?P<gport>\d+))?$")
PROXY_READY = re.compile(
    r"^proxy ready grpc=(?P<ghost>\S+):(?P<gport>\d+) http=(?P<host>\S+):(?P<port>\d+)"
    r"(?: admin=(?P<ahost>\S+):(?P<aport>\d+))?$"
)


def binary_path() -> Path:
    configured = os.environ.get("OTLP_AUTH_PROXY_BIN")
    path = Path(configured) if configured else Path(".build/debug/otlp-auth-proxy")
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


class Service:
    """One running `otlp-auth-proxy` subprocess. stdout lines are collected by a reader thread
    (the ready line is the first one); stderr (the logs) goes to a file kept for assertions."""

    def __init__(self, name: str, args: list[str], ready: re.Pattern[str], workdir: Path):
        self.name = name
        self.args = args
        self.stderr_path = workdir / f"{name}.stderr"
        self.stdout_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, cwd=workdir, text=True
            )
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        self.match = self._wait_ready(ready)

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _wait_ready(self, ready: re.Pattern[str]) -> re.Match[str]:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                pytest.fail(f"{self.name} printed no ready line within {READY_TIMEOUT}s\n{self.describe()}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait()
                pytest.fail(f"{self.name} exited with {code} before it was ready\n{self.describe()}")
            self.stdout_lines.append(line)
            match = ready.match(line)
            if match:
                return match

    @property
    def port(self) -> int:
        return int(self.match.group("port"))

    def logs(self) -> str:
        """Everything logged so far. The proxy writes its log lines from a thread of its own, in batches
        a few milliseconds apart, so this first gives the lines logged before the call time to land."""
        time.sleep(0.025)
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return f"command: {' '.join(self.args)}\nstdout: {self.stdout_lines}\nstderr:\n{self.logs()[-4000:]}"

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit within `timeout`. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Collect whatever else the process printed on stdout before it exited.
        self._reader.join(timeout=5)
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.stdout_lines.append(line)
        return self.proc.returncode


class Sink(Service):
    """The built-in sink; stats come from its plaintext `GET /stats`. `grpc_port` is its h2c
    OTLP/gRPC listener (None when the binary's sink has none)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_port(self) -> int | None:
        port = self.match.group("gport")
        return int(port) if port is not None else None

    def require_grpc_port(self) -> int:
        port = self.grpc_port
        if port is None:
            pytest.fail(f"the sink has no gRPC listener (`sink --help` lists no --grpc-listen)\n{self.describe()}")
        return port

    def stats(self) -> dict:
        response = requests.get(f"{self.url}/stats", timeout=5)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        requests.post(f"{self.url}/stats/reset", timeout=5).raise_for_status()

    def tenant(self, name: str) -> dict:
        return self.stats()["tenants"].get(name, {"requests": 0, "spans": 0, "data_points": 0, "log_records": 0, "profiles": 0})


class Proxy(Service):
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def grpc_port(self) -> int:
        return int(self.match.group("gport"))

    @property
    def admin_url(self) -> str:
        """The plaintext admin listener (`/metrics`, `/healthz`, `/readyz`)."""
        port = self.match.group("aport")
        assert port is not None, "this proxy runs without an admin listener"
        return f"http://127.0.0.1:{port}"


@dataclass(frozen=True, repr=False)
class Tokens:
    """Bearer tokens written to the tokens file: `plain` is stored as is (tenant team-a),
    `hashed` only as its SHA-256 (tenant team-b)."""

    plain: str
    hashed: str

    def __repr__(self) -> str:
        # pytest prints fixture values in failure reports: never the tokens themselves.
        return "Tokens(plain=<hidden>, hashed=<hidden>)"


def _ephemeral_port_range() -> tuple[int, int]:
    try:
        low, high = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A port nothing listens on right now (bound and released), below the kernel's ephemeral range:
    a test often starts its listener on the port later (a receiver that comes up late), and meanwhile
    an outgoing connection could otherwise be given the same port as its local port, so the late
    bind fails with EADDRINUSE."""
    low, _ = _ephemeral_port_range()
    for _ in range(200):
        port = random.randrange(10000, max(10001, low))
        # Never the same port twice in one session: two calls before either port is bound (an HTTP and
        # a gRPC listener) would otherwise sometimes get one port.
        if port in _ports_given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _ports_given.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_ports_given: set[int] = set()


def write_proxy_config(
    directory: Path,
    *,
    certs: Path,
    upstream_port: int,
    tokens_file: Path,
    grpc_upstream_port: int | None = None,
    max_request_body_size: str = "20MiB",
    max_recv_msg_size: str = "4MiB",
    upstream_timeout: str = "30s",
    min_version: str = "1.2",
    idle_timeout: str | None = None,
    tenant: str = "header: X-Scope-OrgID",
    extra: str = "",
) -> Path:
    """A config with paths relative to its own directory, as users write them. `upstream_port`
    is the OTLP/HTTP upstream; `grpc_upstream_port` the h2c OTLP/gRPC one (default: the same)."""
    if grpc_upstream_port is None:
        grpc_upstream_port = upstream_port
    directory.mkdir(parents=True, exist_ok=True)
    cert = os.path.relpath(certs / "server.crt", directory)
    key = os.path.relpath(certs / "server.key", directory)
    tokens = os.path.relpath(tokens_file, directory)
    idle = f", idle_timeout: {idle_timeout}" if idle_timeout else ""
    config = directory / "proxy.yaml"
    config.write_text(
        f"""grpc: {{ endpoint: "127.0.0.1:0", max_recv_msg_size: {max_recv_msg_size} }}
http: {{ endpoint: "127.0.0.1:0", max_request_body_size: {max_request_body_size}{idle} }}
tls: {{ cert_file: {cert}, key_file: {key}, min_version: "{min_version}" }}
upstream: {{ grpc: "127.0.0.1:{grpc_upstream_port}", http: "127.0.0.1:{upstream_port}", timeout: {upstream_timeout} }}
auth: {{ bearer: {{ tokens_file: {tokens} }} }}
tenant: {{ {tenant} }}
admin: {{ endpoint: "127.0.0.1:0" }}
{extra}"""
    )
    return config


# --- session fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def binary() -> Path:
    path = binary_path()
    if not os.access(path, os.X_OK):
        pytest.fail(f"otlp-auth-proxy binary not found at {path}: run `swift build` or set OTLP_AUTH_PROXY_BIN")
    return path


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    subprocess.run([str(REPO_ROOT / "certs" / "make-dev-certs.sh"), str(directory)], check=True, capture_output=True)
    return directory


@pytest.fixture(scope="session")
def ca_file(certs: Path) -> str:
    return str(certs / "ca.crt")


@pytest.fixture(scope="session")
def tokens() -> Tokens:
    return Tokens(plain="ci-" + secrets.token_urlsafe(24), hashed="hs-" + secrets.token_urlsafe(24))


@pytest.fixture(scope="session")
def tokens_file(tmp_path_factory: pytest.TempPathFactory, tokens: Tokens) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens.yaml"
    digest = hashlib.sha256(tokens.hashed.encode()).hexdigest()
    path.write_text(
        f"""tokens:
  - principal: ci-runner
    tenant: team-a
    token: "{tokens.plain}"
  - principal: hashed-runner
    tenant: team-b
    sha256: "{digest}"
"""
    )
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def shared_sink(binary: Path, tmp_path_factory: pytest.TempPathFactory):
    sink = start_sink_process(binary, tmp_path_factory.mktemp("sink"), port=0)
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def shared_proxy(binary: Path, certs: Path, tokens_file: Path, shared_sink: Sink, tmp_path_factory):
    directory = tmp_path_factory.mktemp("proxy")
    config = write_proxy_config(
        directory, certs=certs, upstream_port=shared_sink.port, grpc_upstream_port=shared_sink.grpc_port,
        tokens_file=tokens_file,
    )
    proxy = start_proxy_process(binary, config)
    yield proxy
    proxy.stop()


_sink_help: dict[Path, str] = {}


def sink_has_grpc_listener(binary: Path) -> bool:
    """Whether this binary's sink takes --grpc-listen (it serves OTLP/gRPC over h2c)."""
    if binary not in _sink_help:
        result = subprocess.run([str(binary), "sink", "--help"], capture_output=True, text=True, timeout=20)
        _sink_help[binary] = result.stdout + result.stderr
    return "--grpc-listen" in _sink_help[binary]


def start_sink_process(binary: Path, workdir: Path, port: int, grpc_port: int = 0) -> Sink:
    args = [str(binary), "sink", "--listen", f"127.0.0.1:{port}"]
    if sink_has_grpc_listener(binary):
        args += ["--grpc-listen", f"127.0.0.1:{grpc_port}"]
    return Sink("sink", args, SINK_READY, workdir)


def start_proxy_process(binary: Path, config: Path) -> Proxy:
    return Proxy("proxy", [str(binary), "run", "--config", str(config)], PROXY_READY, config.parent)


# --- function fixtures ---------------------------------------------------------------------


@pytest.fixture
def sink(shared_sink: Sink) -> Sink:
    """The shared sink with its counters zeroed for this test."""
    shared_sink.reset()
    return shared_sink


@pytest.fixture
def proxy(shared_proxy: Proxy, sink: Sink) -> Proxy:
    """The shared proxy in front of the (freshly reset) shared sink."""
    assert shared_proxy.proc.poll() is None, f"the shared proxy died\n{shared_proxy.describe()}"
    return shared_proxy


@pytest.fixture
def start_proxy(binary: Path, certs: Path, tokens_file: Path, tmp_path: Path):
    """Starts extra proxies with their own settings; all stopped at teardown."""
    started: list[Proxy] = []

    def start(upstream_port: int, **settings) -> Proxy:
        directory = tmp_path / f"proxy{len(started)}"
        config = write_proxy_config(
            directory, certs=certs, upstream_port=upstream_port, tokens_file=tokens_file, **settings
        )
        proxy = start_proxy_process(binary, config)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def start_sink(binary: Path, tmp_path: Path):
    """Starts extra sinks (e.g. on a chosen port); all stopped at teardown."""
    started: list[Sink] = []

    def start(port: int = 0, grpc_port: int = 0) -> Sink:
        directory = tmp_path / f"sink{len(started)}"
        directory.mkdir()
        sink = start_sink_process(binary, directory, port, grpc_port)
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


# --- curl ------------------------------------------------------------------------------------


@dataclass
class CurlResult:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    version: str = ""  # from the status line: "HTTP/1.1", "HTTP/2"

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]


def curl(url: str, *args: str, ca_file: str | None = None, data: bytes | None = None, timeout: float = 20) -> CurlResult:
    """Runs the curl binary; returns the final response's status, headers (names lower-cased)
    and body. `data` is sent as the request body from stdin."""
    with tempfile.NamedTemporaryFile() as body_file:
        command = ["curl", "-sS", "--max-time", str(timeout), "-D", "-", "-o", body_file.name]
        if ca_file:
            command += ["--cacert", ca_file]
        if data is not None:
            command += ["--data-binary", "@-"]
        command += [*args, url]
        result = subprocess.run(command, input=data, capture_output=True, timeout=timeout + 5)
        if result.returncode != 0:
            raise AssertionError(f"curl failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
        body = Path(body_file.name).read_bytes()
    head = result.stdout.decode("latin-1")
    # With -D - every response head is printed (e.g. 100 Continue first); keep the last.
    blocks = [block for block in head.split("\r\n\r\n") if block.strip()]
    lines = blocks[-1].split("\r\n")
    version, status = lines[0].split()[0], int(lines[0].split()[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return CurlResult(status=status, headers=headers, body=body, version=version)
