#!/usr/bin/env python3
"""Side-by-side benchmark of otlp-auth-proxy, nghttpx and HAProxy, each in front of the same fast
upstreams, on the same machine, in one run.

- Upstreams: nghttpd (h2c) answers the gRPC Export path with a 200, an empty export response and
  `grpc-status: 0`; nginx answers OTLP/HTTP over HTTP/1.1 keep-alive with an empty 200. Both do far
  less per request than a TLS proxy in front of them, so a row measures the proxy.
- Pinning: each proxy runs one worker thread on one core; h2load and the upstream share the other.
- The same certificate and key for all three; the same checks where they have them (bearer token or
  ES256 JWT, the credential removed, X-Scope-OrgID set); nghttpx checks nothing.
- Every run has a fixed request count, a warm-up and a time bound. For each run the table gives
  requests/s, MB/s of request bodies, the proxy's CPU µs per request (utime + stime from /proc over
  the run, divided by the successful requests), how busy the proxy, h2load, the upstream and both
  cores were (CPU time / wall time), and our rate and CPU per request against nghttpx's and
  HAProxy's. When the proxy's core was not saturated, the row says what was: the load generator,
  the upstream, both of them, other work on a core, or nothing.
- The scenarios run with access logs on in all three proxies (each formats a line per request,
  written to /dev/null) and off in all three: two sets of proxies run side by side, and the two
  settings of a proxy are measured back to back. A short check first counts the lines each proxy
  writes to a file, to show that "on" formats a line per request.
- Then: the p99 latency our proxy adds at half of its peak (paced h2load, straight to nghttpd and
  through the proxy); idle RSS and RSS with 1,000 idle TLS + HTTP/2 connections for each proxy; an
  end-to-end row through our proxy into the built-in sink, which checks that the sink counted every
  span; binary size and startup time; and each target of issue 14, met or not.

Run through `make bench` (which installs the tools and builds the release binary). BENCH_REQUESTS
sets the request count of the 1 KiB runs (default 60,000; the 16 KiB runs use a quarter of it, the
256 KiB runs a twentieth); BENCH_ROUNDS (default 2) how often each run is repeated, rounds taking
turns over all rows; a row keeps its fastest round."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("OTLP_AUTH_PROXY_BIN", ROOT / ".build/release/otlp-auth-proxy"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "60000"))
ROUNDS = max(int(os.environ.get("BENCH_ROUNDS", "2")), 1)
TOKEN = "bench-token-0123456789abcdef0123456789"
GRPC_PATH = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
HTTP_PATH = "/v1/traces"
RUN_TIMEOUT = 180  # seconds; a run that takes longer is stopped and its unfinished requests count as failed
SATURATED = 0.90  # share of one core above which a process counts as the limit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of `pids` (all their threads), in seconds."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def core_times() -> dict[int, tuple[int, int, int]]:
    """(busy, softirq, total) jiffies of each core, from /proc/stat. Busy is everything but idle and
    iowait: processes, interrupts, softirqs (where loopback TCP delivers the packets a process sent,
    time /proc/PID/stat does not count) and time the hypervisor took (steal)."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            numbers = [int(v) for v in values[:8]]
            idle = numbers[3] + numbers[4]
            out[int(name[3:])] = (sum(numbers) - idle, numbers[6], sum(numbers))
    return out


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [int(p) for p in out]


def pick_cores() -> tuple[int | None, int | None, str]:
    """The proxy's core and the core h2load and the upstream share, or no pinning on one core."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None, f"only {len(cores)} core available: nothing is pinned, the proxy, h2load and the upstream share it"
    return cores[0], cores[1], f"each proxy one worker thread on core {cores[0]}; h2load and the upstream on core {cores[1]}"


PROXY_CORE, LOAD_CORE, PINNING = pick_cores()


def pinned(args: list[str], core: int | None) -> list[str]:
    return args if core is None else ["taskset", "-c", str(core), *args]


class Proc:
    """A process the benchmark starts in its work directory; stdout and stderr go to `name.log`
    unless `stdout` or `stderr` name another file (such as /dev/null)."""

    def __init__(self, args: list[str], cwd: Path, name: str, core: int | None = None,
                 stdout: str | None = None, stderr: str | None = None):
        self.name = name
        log = cwd / f"{name}.log"
        self.out = open(stdout or log, "ab")
        self.err = open(stderr, "ab") if stderr else (open(log, "ab") if stdout else self.out)
        self.proc = subprocess.Popen(pinned(args, core), cwd=cwd, stdout=self.out, stderr=self.err)

    def pids(self) -> list[int]:
        return children(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for handle in {self.out, self.err}:
            handle.close()


def _varint(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80]); n >>= 7
    return out + bytes([n])


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return bytes([number << 3 | 2]) + _varint(len(payload)) + payload


SPAN = _field(2, _field(5, b"s" * 80))  # a ScopeSpans.spans entry: a span with an 80-byte name


def spans_in(size: int) -> int:
    return max(1, size // len(SPAN))


def otlp_request(size: int) -> bytes:
    """A valid ExportTraceServiceRequest of about `size` bytes, written by hand in protobuf wire format
    (`spans_in(size)` spans with a name only), so the sink counts its spans."""
    return _field(1, _field(2, SPAN * spans_in(size)))


SIZES = {"1k": 1024, "16k": 16 * 1024, "256k": 256 * 1024}


def make_fixtures(work: Path) -> dict:
    subprocess.run([str(ROOT / "certs/make-dev-certs.sh"), str(work / "certs")], check=True, capture_output=True)
    (work / "certs/haproxy.pem").write_bytes((work / "certs/server.crt").read_bytes() + (work / "certs/server.key").read_bytes())
    (work / "tokens.yaml").write_text(f'tokens:\n  - principal: bench\n    tenant: bench\n    token: "{TOKEN}"\n')
    for name, size in SIZES.items():
        body = otlp_request(size)
        (work / f"body-{name}.bin").write_bytes(body)
        (work / f"grpc-{name}.bin").write_bytes(b"\x00" + struct.pack(">I", len(body)) + body)
    # ES256 key, JWKS and token (PyJWT and cryptography from the test venv).
    script = """
import jwt, json, time, sys
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import serialization
k = ec.generate_private_key(ec.SECP256R1())
open('es256.pem','wb').write(k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(k.public_key())); jwk.update(kid='bench', use='sig', alg='ES256')
open('jwks.json','w').write(json.dumps({'keys':[jwk]}))
open('jwt.txt','w').write(jwt.encode({'iss':'https://idp.bench','aud':'otlp','sub':'bench','tenant':'bench','exp':int(time.time())+86400}, k, algorithm='ES256', headers={'kid':'bench'}))
"""
    subprocess.run([str(ROOT / ".venv/bin/python"), "-c", script], cwd=work, check=True)
    return {"jwt": (work / "jwt.txt").read_text().strip()}


QUIET = 'log: { level: warning, access_log: false }\nadmin: { endpoint: "" }\n'
LOGGING = 'log: { level: warning, access_log: true }\nadmin: { endpoint: "" }\n'


def proxy_config(grpc: int, http: int, upstream_grpc: int, upstream_http: int, tail: str = QUIET) -> str:
    """The proxy's configuration for the fixtures of `make_fixtures`: bearer tokens and an ES256 JWT
    provider in front of the given upstream ports; `tail` adds the log and admin settings (quiet by
    default; LOGGING writes the access log)."""
    return f"""
grpc: {{ endpoint: "127.0.0.1:{grpc}" }}
http: {{ endpoint: "127.0.0.1:{http}" }}
tls: {{ cert_file: certs/server.crt, key_file: certs/server.key }}
upstream: {{ grpc: "127.0.0.1:{upstream_grpc}", http: "127.0.0.1:{upstream_http}" }}
auth:
  bearer: {{ tokens_file: tokens.yaml }}
  jwt:
    providers:
      - {{ name: bench, issuer: "https://idp.bench", audiences: [otlp], algorithms: [ES256], jwks_file: jwks.json, tenant_claim: tenant }}
""" + tail


# --- upstreams ---------------------------------------------------------------------------------


def start_nghttpd(work: Path, port: int) -> Proc:
    """nghttpd in h2c mode: it reads each request's body and answers the Export path with the file at
    that path (an empty ExportTraceServiceResponse as one gRPC message) and a `grpc-status: 0` trailer."""
    htdocs = work / "htdocs"
    (htdocs / GRPC_PATH.rsplit("/", 1)[0].lstrip("/")).mkdir(parents=True, exist_ok=True)
    (htdocs / GRPC_PATH.lstrip("/")).write_bytes(b"\x00\x00\x00\x00\x00")
    return Proc(["nghttpd", "--no-tls", "--address=127.0.0.1", f"--htdocs={htdocs}", "--workers=1",
                 "--max-concurrent-streams=1024", "--trailer=grpc-status: 0", str(port)], work, "nghttpd", LOAD_CORE)


def start_nginx(work: Path, port: int) -> Proc:
    """nginx answering OTLP/HTTP with an empty 200 (an empty export response) on keep-alive connections.
    For `return` nginx reads and discards the request body, so the connection stays framed."""
    prefix = work / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    temp = " ".join(f"{kind}_temp_path tmp/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (prefix / "nginx.conf").write_text(f"""
worker_processes 1;
pid nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    {temp}
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            client_max_body_size 32m;
            client_body_buffer_size 64k;
            default_type application/x-protobuf;
            return 200 "";
        }}
    }}
}}
""")
    return Proc(["nginx", "-p", str(prefix), "-e", "stderr", "-c", "nginx.conf", "-g", "daemon off;"], work, "nginx", LOAD_CORE)


# --- proxies -------------------------------------------------------------------------------------


@dataclass
class Proxies:
    """The three proxies of one access-log setting, all pinned to the proxy core, and their ports (with
    the upstreams' ports)."""
    ours: Proc
    nghttpx: Proc
    haproxy: Proc
    ports: dict
    startup: float = 0.0  # seconds from our proxy's start until it listened

    def all(self) -> list[Proc]:
        return [self.ours, self.nghttpx, self.haproxy]

    def targets(self, scenario: "Scenario") -> list[tuple[str, Proc, str]]:
        """(name, process, URL) of each proxy that runs `scenario`."""
        path = HTTP_PATH if scenario.h1 else GRPC_PATH
        url = lambda port: f"https://127.0.0.1:{self.ports[port]}{path}"
        ours = ("otlp-auth-proxy", self.ours, url("ours_http" if scenario.h1 else "ours_grpc"))
        if scenario.jwt:
            return [ours, ("HAProxy jwt_verify", self.haproxy, url("haproxy_jwt"))]
        return [ours, ("nghttpx", self.nghttpx, url("nghttpx")), ("HAProxy", self.haproxy, url("haproxy"))]


def haproxy_config(work: Path, ports: dict, logs: bool) -> str:
    """HAProxy with the checks it can do: the bearer token compared with a fixed string (or the ES256
    JWT run through jwt_verify), the credential removed and X-Scope-OrgID set, as our proxy does.
    gRPC goes to nghttpd over h2c, OTLP/HTTP to nginx over HTTP/1.1 keep-alive."""
    pem = work / "certs/haproxy.pem"
    return f"""
global
    nbthread 1
    {"log stdout format raw local0" if logs else ""}
defaults
    mode http
    {"log global" if logs else ""}
    {"option httplog" if logs else ""}
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend static
    bind 127.0.0.1:{ports['haproxy']} ssl crt {pem} alpn h2,http/1.1
    http-request deny deny_status 401 unless {{ req.hdr(authorization) -m str "Bearer {TOKEN}" }}
    http-request del-header authorization
    http-request set-header X-Scope-OrgID bench
    use_backend http if {{ path_beg /v1/ }}
    default_backend grpc
frontend jwt
    bind 127.0.0.1:{ports['haproxy_jwt']} ssl crt {pem} alpn h2,http/1.1
    http-request set-var(txn.bearer) http_auth_bearer
    http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_verify("ES256","{work}/es256.pem") -m int 1 }}
    http-request del-header authorization
    http-request set-header X-Scope-OrgID bench
    use_backend http if {{ path_beg /v1/ }}
    default_backend grpc
backend grpc
    server s1 127.0.0.1:{ports['nghttpd']} proto h2
backend http
    server s1 127.0.0.1:{ports['nginx']}
"""


def start_proxies(work: Path, ports: dict, logs: bool, tag: str, log_dir: Path | None = None) -> Proxies:
    """Starts the three proxies with access logs on or off and waits until they listen. With logs on,
    each writes its lines to /dev/null, or to its own file in `log_dir` when given. `tag` names their
    configuration and log files."""
    def access(name: str) -> str:
        return str(log_dir / f"access-{name}.log") if log_dir else "/dev/null"
    config = work / f"proxy-{tag}.yaml"
    config.write_text(proxy_config(ports["ours_grpc"], ports["ours_http"], ports["nghttpd"], ports["nginx"],
                                   LOGGING if logs else QUIET))
    (work / f"haproxy-{tag}.cfg").write_text(haproxy_config(work, ports, logs))
    started = time.time()
    # Our access log goes to stderr; with logs off stderr only carries warnings and errors.
    ours = Proc([str(BIN), "run", "--config", config.name, "--threads", "1"], work, f"ours-{tag}", PROXY_CORE,
                stderr=access("otlp-auth-proxy") if logs else None)
    wait_port(ports["ours_grpc"])
    wait_port(ports["ours_http"])
    startup = time.time() - started
    nghttpx = Proc(["nghttpx", f"--frontend=127.0.0.1,{ports['nghttpx']}",
                    f"--backend=127.0.0.1,{ports['nghttpd']};;proto=h2",
                    f"--backend=127.0.0.1,{ports['nginx']};/v1/;proto=http/1.1",
                    "--workers=1", "--no-ocsp", "--conf=/dev/null", f"--errorlog-file=nghttpx-{tag}.err",
                    *([f"--accesslog-file={access('nghttpx')}"] if logs else []),
                    "certs/server.key", "certs/server.crt"], work, f"nghttpx-{tag}", PROXY_CORE)
    # HAProxy writes its log lines to stdout ("log stdout"); its own messages go to stderr.
    haproxy = Proc(["haproxy", "-f", f"haproxy-{tag}.cfg"], work, f"haproxy-{tag}", PROXY_CORE,
                   stdout=access("HAProxy") if logs else None)
    for name in ("nghttpx", "haproxy", "haproxy_jwt"):
        wait_port(ports[name])
    time.sleep(0.5)
    return Proxies(ours, nghttpx, haproxy, ports, startup)


# --- load ----------------------------------------------------------------------------------------


@dataclass
class Result:
    rps: float = 0.0
    mbps: float = 0.0
    ok: int = 0
    failed: int = 0
    p50: float = 0.0  # ms, paced runs only
    p99: float = 0.0
    cpu_us: float = 0.0  # the proxy's CPU µs per successful request
    busy: float = 0.0  # the proxy's CPU time / wall time
    loadgen_busy: float = 0.0
    upstream_busy: float = 0.0
    proxy_core_busy: float = 0.0  # the proxy's whole core, whoever used it
    proxy_core_softirq: float = 0.0
    load_core_busy: float = 0.0
    load_core_softirq: float = 0.0
    wall: float = 0.0  # seconds the h2load run took
    spread: float = 0.0  # how much slower the slowest round of this row was than the one kept
    timed_out: bool = False

    def limit(self) -> str:
        """What limited the run, when it was not the proxy's core (the proxy and the kernel's softirq
        work for its packets); "" when it was."""
        if PROXY_CORE is None:  # unpinned: only whole processes can be told apart
            if self.busy >= SATURATED:
                return ""
            return ("the load generator" if self.loadgen_busy >= SATURATED else
                    "the upstream" if self.upstream_busy >= SATURATED else "no process saturated")
        others = self.proxy_core_busy - self.busy - self.proxy_core_softirq
        if self.proxy_core_busy >= SATURATED:
            return f"other work on the proxy core ({others:.0%})" if others >= 0.15 else ""
        if self.loadgen_busy >= SATURATED:
            return "the load generator"
        if self.upstream_busy >= SATURATED:
            return "the upstream"
        if self.load_core_busy >= SATURATED:
            load_others = self.load_core_busy - self.loadgen_busy - self.upstream_busy - self.load_core_softirq
            if load_others >= 0.15:
                return f"other work on the load core ({load_others:.0%})"
            return "load generator + upstream"
        return "no core saturated"


def h2load(url: str, body: Path, headers: list[str], h1: bool, clients: int, streams: int, work: Path, n: int,
           rps_per_client: int = 0) -> Result:
    """Runs h2load on the load core; with `rps_per_client` the load is paced (open loop) instead of as
    fast as possible, and latencies are read from its log. Also measures h2load's own CPU use."""
    log = work / "h2load.log"
    log.unlink(missing_ok=True)  # h2load appends to its log file; each run's latencies must be its own
    args = ["h2load", "-n", str(n), "-c", str(clients), "-d", str(body)]
    if streams > 1:
        args += ["-m", str(streams)]
    if h1:
        args.append("--h1")
    if rps_per_client:
        args += [f"--rps={rps_per_client}", "--log-file", str(log)]
    for header in headers:
        args += ["-H", header]
    result = Result(failed=n)
    usage_before = os.times()
    started = time.monotonic()
    try:
        out = subprocess.run(pinned(args + [url], LOAD_CORE), capture_output=True, text=True, timeout=RUN_TIMEOUT).stdout
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        result.timed_out = True
    wall = max(time.monotonic() - started, 1e-9)
    usage_after = os.times()
    loadgen_cpu = (usage_after.children_user + usage_after.children_system
                   - usage_before.children_user - usage_before.children_system)
    for line in out.splitlines():
        if line.startswith("finished in"):
            result.rps = float(line.replace(",", "").split()[3])
        if line.startswith("status codes:"):
            result.ok = int(line.split()[2])
    # MB/s of request bodies sent (h2load's own figure counts response bytes).
    result.mbps = result.rps * body.stat().st_size / 1e6
    if rps_per_client and log.exists():
        latencies = sorted(int(l.split()[2]) for l in log.read_text().splitlines() if l.strip())
        if latencies:
            result.p50 = latencies[len(latencies) // 2] / 1000
            result.p99 = latencies[int(len(latencies) * 0.99)] / 1000
    result.failed = n - result.ok
    result.loadgen_busy = loadgen_cpu / wall
    result.wall = wall
    return result


def measure(url: str, body: Path, headers: list[str], h1: bool, clients: int, streams: int, work: Path, n: int,
            proxy: Proc, upstream: Proc, warmup: bool = True) -> Result:
    """A warm-up (a tenth of `n`, at most 5,000), then a measured run of `n` requests with the proxy's,
    the upstream's and each core's CPU use over it."""
    if warmup:
        h2load(url, body, headers, h1, clients, streams, work, max(min(n // 10, 5000), 100))
    proxy_pids, upstream_pids = proxy.pids(), upstream.pids()
    proxy_before, upstream_before, cores_before = cpu_seconds(proxy_pids), cpu_seconds(upstream_pids), core_times()
    result = h2load(url, body, headers, h1, clients, streams, work, n)
    proxy_cpu = cpu_seconds(proxy_pids) - proxy_before
    upstream_cpu = cpu_seconds(upstream_pids) - upstream_before
    cores_after = core_times()
    wall = result.wall
    result.busy = proxy_cpu / wall
    result.upstream_busy = upstream_cpu / wall
    result.cpu_us = proxy_cpu / max(result.ok, 1) * 1e6
    def core_busy(core: int | None) -> tuple[float, float]:
        if core is None:
            return 0.0, 0.0
        total = cores_after[core][2] - cores_before[core][2]
        if not total:
            return 0.0, 0.0
        return ((cores_after[core][0] - cores_before[core][0]) / total,
                (cores_after[core][1] - cores_before[core][1]) / total)
    result.proxy_core_busy, result.proxy_core_softirq = core_busy(PROXY_CORE)
    result.load_core_busy, result.load_core_softirq = core_busy(LOAD_CORE)
    return result


@dataclass
class Scenario:
    key: str
    title: str
    body: str  # fixture file name
    h1: bool
    clients: int
    streams: int
    n: int
    jwt: bool = False


def scenarios() -> list[Scenario]:
    return [
        Scenario("grpc1k", "gRPC 1 KiB bearer 8x16", "grpc-1k.bin", False, 8, 16, REQUESTS),
        Scenario("http1k", "HTTP/1.1 1 KiB 32 conns", "body-1k.bin", True, 32, 1, REQUESTS),
        Scenario("jwt", "gRPC 1 KiB ES256 JWT 8x16", "grpc-1k.bin", False, 8, 16, REQUESTS, jwt=True),
        Scenario("grpc16k", "gRPC 16 KiB bearer 8x16", "grpc-16k.bin", False, 8, 16, max(REQUESTS // 4, 100)),
        Scenario("grpc256k", "gRPC 256 KiB bearer 8x16", "grpc-256k.bin", False, 8, 16, max(REQUESTS // 20, 100)),
    ]


def headers_for(scenario: Scenario, credential: str) -> list[str]:
    auth = [f"authorization: Bearer {credential}"]
    if scenario.h1:
        return ["content-type: application/x-protobuf", *auth]
    return ["content-type: application/grpc", "te: trailers", *auth]


Rows = dict[bool, list[tuple[Scenario, str, Result]]]


def run_scenarios(work: Path, sets: dict[bool, Proxies], upstreams: dict[str, Proc], fixtures: dict) -> Rows:
    """Every scenario through every proxy with access logs on and off, ROUNDS times; each row keeps the
    round with the highest rate. The two settings of a proxy run back to back (in alternating order),
    and rounds go through all rows in turn, so a slow spell of the machine hits different rows."""
    best: dict[tuple[bool, str, str], Result] = {}
    for round in range(ROUNDS):
        for index, scenario in enumerate(scenarios()):
            upstream = upstreams["nginx" if scenario.h1 else "nghttpd"]
            credential = fixtures["jwt"] if scenario.jwt else TOKEN
            for position in range(len(sets[True].targets(scenario))):
                for logs in ((True, False) if (index + position + round) % 2 == 0 else (False, True)):
                    name, proc, url = sets[logs].targets(scenario)[position]
                    result = measure(url, work / scenario.body, headers_for(scenario, credential), scenario.h1,
                                     scenario.clients, scenario.streams, work, scenario.n, proc, upstream)
                    key = (logs, scenario.key, name)
                    kept = best.get(key)
                    slowest = min([result.rps] + ([kept.rps] if kept else []))
                    if kept is None or (result.failed, -result.rps) < (kept.failed, -kept.rps):
                        best[key] = result
                    best[key].spread = max(best[key].spread, 1 - slowest / best[key].rps if best[key].rps else 0)
                    print(f"  round {round + 1}/{ROUNDS} logs {'on ' if logs else 'off'} {scenario.title:26} {name:20} "
                          f"{result.rps:8.0f} req/s {result.cpu_us:6.1f} µs/req, proxy {result.busy:.0%} (core "
                          f"{result.proxy_core_busy:.0%}), h2load {result.loadgen_busy:.0%}, upstream {result.upstream_busy:.0%} "
                          f"(core {result.load_core_busy:.0%})" + (f", {result.failed} failed" if result.failed else ""),
                          file=sys.stderr, flush=True)
    return {logs: [(scenario, name, best[(logs, scenario.key, name)]) for scenario in scenarios()
                   for name, _, _ in sets[logs].targets(scenario)] for logs in (True, False)}


def added_latency(work: Path, proxies: Proxies, peak: float) -> tuple[int, list[tuple[Result, Result]]]:
    """p50 and p99 straight to nghttpd and through our proxy, both paced at half of `peak` (gRPC 1 KiB,
    bearer) by 32 clients with one request in flight each, enough that pacing, not queueing, sets the
    rate; about six seconds each, ROUNDS times. Returns the rate and each round's (direct, through),
    the round with the least added p99 first."""
    clients = 32
    paced = max(int(peak / 2 / clients), 1)
    n = max(paced * clients * 6, 1000)
    grpc = headers_for(scenarios()[0], TOKEN)
    rounds = []
    for _ in range(ROUNDS):
        direct = h2load(f"http://127.0.0.1:{proxies.ports['nghttpd']}{GRPC_PATH}", work / "grpc-1k.bin", grpc, False,
                        clients, 1, work, n, rps_per_client=paced)
        through = h2load(f"https://127.0.0.1:{proxies.ports['ours_grpc']}{GRPC_PATH}", work / "grpc-1k.bin", grpc, False,
                         clients, 1, work, n, rps_per_client=paced)
        rounds.append((direct, through))
    rounds.sort(key=lambda pair: pair[1].p99 - pair[0].p99)
    return paced * clients, rounds


def check_access_logs(work: Path, ports: dict) -> str:
    """Runs the proxies briefly with access logs on, each into its own file, and counts the lines that
    1,000 gRPC and 1,000 HTTP/1.1 requests through each wrote: "on" must mean a line per request."""
    n = 1000
    grpc, http = scenarios()[0], scenarios()[1]
    proxies = start_proxies(work, ports, True, "check", log_dir=work)
    try:
        for scenario in (grpc, http):
            for _, _, url in proxies.targets(scenario):
                h2load(url, work / scenario.body, headers_for(scenario, TOKEN), scenario.h1, 4, 1 if scenario.h1 else 4, work, n)
        time.sleep(0.5)
    finally:
        for proc in proxies.all():
            proc.stop()
    counts = {}
    for name, marker in (("otlp-auth-proxy", '"msg":"request"'), ("nghttpx", "/v1/traces"), ("HAProxy", "/v1/traces")):
        text = (work / f"access-{name}.log").read_text(errors="replace")
        counts[name] = sum(1 for line in text.splitlines() if marker in line or "TraceService/Export" in line)
    return ", ".join(f"{name} {count:,}" for name, count in counts.items()) + f" lines for {2 * n:,} requests each"


def sink_sanity(work: Path) -> str:
    """Our proxy in front of the built-in sink: gRPC and OTLP/HTTP exports with a bearer token, then the
    sink's /stats must count every span of every successful request for the token's tenant."""
    ports = {name: free_port() for name in ("grpc", "http", "sink_grpc", "sink_http")}
    (work / "proxy-sink.yaml").write_text(proxy_config(ports["grpc"], ports["http"], ports["sink_grpc"], ports["sink_http"]))
    sink = Proc([str(BIN), "sink", "--listen", f"127.0.0.1:{ports['sink_http']}", "--grpc-listen",
                 f"127.0.0.1:{ports['sink_grpc']}"], work, "sink", LOAD_CORE)
    proxy = Proc([str(BIN), "run", "--config", "proxy-sink.yaml", "--threads", "1"], work, "ours-sink", PROXY_CORE)
    lines = []
    try:
        for port in ports.values():
            wait_port(port)
        n = min(REQUESTS, 20000)
        spans = spans_in(SIZES["1k"])
        for scenario in scenarios()[:2]:
            url = f"https://127.0.0.1:{ports['http' if scenario.h1 else 'grpc']}{HTTP_PATH if scenario.h1 else GRPC_PATH}"
            headers = headers_for(scenario, TOKEN)
            h2load(url, work / scenario.body, headers, scenario.h1, scenario.clients, scenario.streams, work, 1000)
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{ports['sink_http']}/stats/reset", method="POST")).read()
            result = measure(url, work / scenario.body, headers, scenario.h1, scenario.clients, scenario.streams, work, n,
                             proxy, sink, warmup=False)
            stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{ports['sink_http']}/stats").read())
            tenant = stats.get("tenants", {}).get("bench", {})
            expected = result.ok * spans
            verdict = "ok" if tenant.get("spans") == expected and tenant.get("requests") == result.ok == n else "MISMATCH"
            lines.append(f"{scenario.title}: {result.rps:.0f} req/s, {result.cpu_us:.1f} µs/req, {result.failed} failed; "
                         f"the sink counted {tenant.get('requests', 0):,} requests and {tenant.get('spans', 0):,} spans "
                         f"for tenant bench, expected {n:,} and {expected:,}: {verdict}")
    finally:
        proxy.stop()
        sink.stop()
    return "\n".join(lines)


def idle_connections_rss(port: int, pids: list[int], ca_file: Path, count: int = 1000) -> float:
    """RSS (MiB, summed over the proxy's processes) while `count` HTTP/2 connections sit idle.

    Each connection does what an idle gRPC exporter has done: TLS with ALPN h2, the client preface and an
    empty SETTINGS frame, then it reads the server's SETTINGS and acknowledges them. A connection that
    stopped after the TLS handshake would let a proxy that sets up HTTP/2 lazily look smaller than it is
    for real clients."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["h2"])
    settings_ack = bytes([0, 0, 0, 4, 1, 0, 0, 0, 0])
    conns = []
    try:
        for _ in range(count):
            raw = socket.create_connection(("127.0.0.1", port))
            conn = context.wrap_socket(raw, server_hostname="localhost")
            conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
            conns.append(conn)
        for conn in conns:
            conn.settimeout(5)
            seen = b""
            # The server's first frame is its SETTINGS (type 4, flags 0); acknowledge it.
            while len(seen) < 9:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                seen += chunk
            if len(seen) >= 9 and seen[3] == 4 and seen[4] == 0:
                conn.sendall(settings_ack)
        time.sleep(1)
        return sum(rss_kib(pid) for pid in pids) / 1024
    finally:
        for conn in conns:
            conn.close()


# --- report --------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if a and b else ""


def print_table(title: str, rows: list[tuple[Scenario, str, Result]]) -> None:
    print(f"\n{title}")
    print(f"{'':56} {'round':>5} {'':>7} {'CPU':>6}  {'busy, % of a core':^33}  {'vs nghttpx':^12}  {'vs HAProxy':^12}")
    print(f"{'scenario':26} {'proxy':20} {'req/s':>8} {'spread':>6} {'MB/s':>7} {'µs/req':>6}  {'proxy':>5} {'core':>5} {'h2load':>6} "
          f"{'upstr':>5} {'core':>5}  {'rate':>6} {'CPU':>5}  {'rate':>6} {'CPU':>5}  limited by")
    for scenario, name, r in rows:
        vs = {"nghttpx": ("", ""), "HAProxy": ("", "")}
        if name == "otlp-auth-proxy":
            for other in vs:
                o = next((res for s, n, res in rows if s.key == scenario.key and n.startswith(other)), None)
                if o is not None:
                    vs[other] = (ratio(r.rps, o.rps), ratio(r.cpu_us, o.cpu_us))
        limit = r.limit()
        flags = ([limit] if limit else []) + ([f"{r.failed} failed"] if r.failed else []) + (["timed out"] if r.timed_out else [])
        print(f"{scenario.title:26} {name:20} {r.rps:8.0f} {r.spread:6.0%} {r.mbps:7.1f} {r.cpu_us:6.1f}  {r.busy:5.0%} {r.proxy_core_busy:5.0%} "
              f"{r.loadgen_busy:6.0%} {r.upstream_busy:5.0%} {r.load_core_busy:5.0%}  {vs['nghttpx'][0]:>6} {vs['nghttpx'][1]:>5}  "
              f"{vs['HAProxy'][0]:>6} {vs['HAProxy'][1]:>5}  {'; '.join(flags)}".rstrip())


def versions() -> str:
    def first_line(args: list[str]) -> str:
        try:
            run = subprocess.run(args, capture_output=True, text=True)
            return (run.stdout or run.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    haproxy = first_line(["haproxy", "-v"]).split()
    nginx = first_line(["nginx", "-v"]).rsplit("/", 1)[-1]
    nghttp2 = first_line(["nghttpx", "--version"]).rsplit("/", 1)[-1]
    openssl = first_line(["openssl", "version"]).split()
    return (f"nghttpx, nghttpd and h2load {nghttp2}; HAProxy {haproxy[2] if len(haproxy) > 2 else '?'}; nginx {nginx}; "
            f"OpenSSL {openssl[1] if len(openssl) > 1 else '?'}")


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="otlp-bench-"))
    try:
        return report(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(work: Path) -> int:
    fixtures = make_fixtures(work)
    upstream_ports = {"nghttpd": free_port(), "nginx": free_port()}
    def ports() -> dict:
        return upstream_ports | {name: free_port() for name in ("ours_grpc", "ours_http", "nghttpx", "haproxy", "haproxy_jwt")}
    upstreams: dict[str, Proc] = {}
    sets: dict[bool, Proxies] = {}
    print(f"machine: {os.cpu_count()} cores, {os.uname().release}; {PINNING}", file=sys.stderr, flush=True)
    try:
        upstreams["nghttpd"] = start_nghttpd(work, upstream_ports["nghttpd"])
        upstreams["nginx"] = start_nginx(work, upstream_ports["nginx"])
        wait_port(upstream_ports["nghttpd"])
        wait_port(upstream_ports["nginx"])
        log_check = check_access_logs(work, ports())
        sets[False] = start_proxies(work, ports(), False, "off")
        idle = {proc.name: sum(rss_kib(pid) for pid in proc.pids()) / 1024 for proc in sets[False].all()}
        sets[True] = start_proxies(work, ports(), True, "on")
        rows = run_scenarios(work, sets, upstreams, fixtures)
        latency = {logs: added_latency(work, sets[logs], next(r for s, n, r in rows[logs] if s.key == "grpc1k" and n == "otlp-auth-proxy").rps)
                   for logs in (True, False)}
        ca = work / "certs/ca.crt"
        off = sets[False]
        rss = {proc.name: idle_connections_rss(off.ports[port], proc.pids(), ca)
               for proc, port in ((off.ours, "ours_grpc"), (off.nghttpx, "nghttpx"), (off.haproxy, "haproxy"))}
    finally:
        for proxies in sets.values():
            for proc in proxies.all():
                proc.stop()
        for proc in upstreams.values():
            proc.stop()
    sanity = sink_sanity(work)

    print(f"\nmachine: {os.cpu_count()} cores, {os.uname().release}; {PINNING}")
    print(f"upstreams: nghttpd (h2c) for gRPC, nginx (HTTP/1.1 keep-alive) for OTLP/HTTP; {versions()}")
    print(f"each row: the best of {ROUNDS} runs of {REQUESTS:,} requests (16 KiB: a quarter, 256 KiB: a twentieth) after a warm-up")
    print("µs/req: the proxy's CPU time (utime + stime, all its processes and threads) per successful request")
    print("busy: CPU time / wall time of the run, for the proxy, h2load and the upstream, and for the proxy's core and the")
    print("  load core as a whole (which adds the kernel's softirq work for the packets sent from it, other processes and steal)")
    print("round spread: how much slower the row's slowest round was than the one shown (the machine's noise)")
    print("rate: our req/s / theirs (higher is better); CPU: our µs/req / theirs (lower is better)")
    print("limited by: shown when the proxy's core was not saturated (< 90% busy)")
    print(f"access logs on, written to a file in a short check: {log_check}")
    print_table("access logs ON in all three (one line per request, to /dev/null)", rows[True])
    print_table("access logs OFF in all three", rows[False])

    def row(logs: bool, key: str, name: str) -> Result:
        return next(r for s, n, r in rows[logs] if s.key == key and n == name)

    print("\naccess log cost, CPU µs per request with logs on minus off:")
    for key, title in (("grpc1k", "gRPC 1 KiB"), ("http1k", "HTTP/1.1 1 KiB")):
        print(f"  {title}: " + ", ".join(f"{name} {row(True, key, name).cpu_us - row(False, key, name).cpu_us:+.1f}"
                                          for name in ("otlp-auth-proxy", "nghttpx", "HAProxy")))
    for logs in (True, False):
        rate, rounds = latency[logs]
        direct, through = rounds[0]
        others = ", ".join(f"{t.p99 - d.p99:.2f}" for d, t in rounds[1:])
        failed = sum(d.failed + t.failed for d, t in rounds)
        print(f"latency at half of our peak ({rate} req/s, gRPC 1 KiB bearer, 32 clients, logs {'on' if logs else 'off'}): "
              f"p99 straight to nghttpd {direct.p99:.2f} ms, through otlp-auth-proxy {through.p99:.2f} ms, added "
              f"{through.p99 - direct.p99:.2f} ms (p50 added {through.p50 - direct.p50:.2f} ms)"
              + (f"; the other rounds added {others} ms" if others else "") + (f" [{failed} failed]" if failed else ""))
    idle_ours, rss_ours = idle["ours-off"], rss["ours-off"]
    print(f"memory: idle RSS otlp-auth-proxy {idle_ours:.1f} MiB, nghttpx {idle['nghttpx-off']:.1f} MiB, HAProxy "
          f"{idle['haproxy-off']:.1f} MiB; with 1,000 idle TLS + HTTP/2 connections {rss_ours:.1f}, {rss['nghttpx-off']:.1f}, "
          f"{rss['haproxy-off']:.1f} MiB")
    print(f"binary {BIN.stat().st_size / 1024 / 1024:.1f} MiB; startup to listening {sets[False].startup * 1000:.0f} ms")
    print("end to end through otlp-auth-proxy into the built-in sink:")
    for line in sanity.splitlines():
        print(f"  {line}")

    # Issue 14's targets, each with the measured value.
    print("\ntargets (issue 14):")
    def target(text: str, value: str, met: bool) -> None:
        print(f"  {text:62} {value:46} {'met' if met else 'not met'}")
    for logs in (True, False):
        ours, ngx, hap = (row(logs, "grpc1k", n) for n in ("otlp-auth-proxy", "nghttpx", "HAProxy"))
        target(f"1 KiB gRPC bearer, logs {'on' if logs else 'off'}: >=1.0x nghttpx, >=1.2x HAProxy",
               f"{ours.rps / ngx.rps:.2f}x nghttpx, {ours.rps / hap.rps:.2f}x HAProxy",
               ours.rps >= ngx.rps and ours.rps >= 1.2 * hap.rps)
    for logs in (True, False):
        ours, ngx, hap = (row(logs, "http1k", n) for n in ("otlp-auth-proxy", "nghttpx", "HAProxy"))
        target(f"1 KiB OTLP/HTTP HTTP/1.1, logs {'on' if logs else 'off'}: >=1.0x HAProxy, nghttpx",
               f"{ours.rps / hap.rps:.2f}x HAProxy, {ours.rps / ngx.rps:.2f}x nghttpx",
               ours.rps >= hap.rps and ours.rps >= ngx.rps)
    for logs in (True, False):
        jwt, bearer, hap = row(logs, "jwt", "otlp-auth-proxy"), row(logs, "grpc1k", "otlp-auth-proxy"), row(logs, "jwt", "HAProxy jwt_verify")
        target(f"cached ES256 JWT, logs {'on' if logs else 'off'}: >=0.9x own bearer, >=5x HAProxy",
               f"{jwt.rps / bearer.rps:.2f}x own bearer, {jwt.rps / hap.rps:.2f}x HAProxy jwt_verify",
               jwt.rps >= 0.9 * bearer.rps and jwt.rps >= 5 * hap.rps)
    line_cost = [row(True, key, "otlp-auth-proxy").cpu_us - row(False, key, "otlp-auth-proxy").cpu_us for key in ("grpc1k", "http1k")]
    target("access log line <=1 µs CPU (logs on minus off)",
           f"{line_cost[0]:.1f} µs gRPC, {line_cost[1]:.1f} µs HTTP/1.1", max(line_cost) <= 1.0)
    for logs in (True, False):
        ours, ngx = row(logs, "grpc256k", "otlp-auth-proxy"), row(logs, "grpc256k", "nghttpx")
        target(f"256 KiB gRPC, logs {'on' if logs else 'off'}: >=1.5x nghttpx MB/s",
               f"{ours.mbps:.0f} vs {ngx.mbps:.0f} MB/s = {ours.mbps / ngx.mbps:.2f}x", ours.mbps >= 1.5 * ngx.mbps)
    for logs in (True, False):
        direct, through = latency[logs][1][0]
        added = through.p99 - direct.p99
        target(f"p99 added at half of peak, logs {'on' if logs else 'off'}: <1 ms", f"{added:.2f} ms", added < 1.0)
    target("idle RSS <=16 MiB", f"{idle_ours:.1f} MiB", idle_ours <= 16)
    target("1,000 idle TLS + HTTP/2 connections <=40 MiB", f"{rss_ours:.1f} MiB", rss_ours <= 40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
