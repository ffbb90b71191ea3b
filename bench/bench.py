#!/usr/bin/env python3
"""Side-by-side benchmark: otlp-auth-proxy, nghttpx and HAProxy in front of the same upstream, on the
same machine, in one run, each pinned to one worker thread. Prints one table (requests/s, MB/s, p50
and p99 latency, CPU seconds per 100k requests, peak RSS, and ratios to nghttpx and HAProxy), then
idle RSS, RSS with 1,000 idle TLS connections, binary size and startup time.

Run through `make bench` (which installs the tools and builds the release binary)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("OTLP_AUTH_PROXY_BIN", ROOT / ".build/release/otlp-auth-proxy"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "60000"))
TOKEN = "bench-token-0123456789abcdef0123456789"
GRPC_PATH = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


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
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [int(p) for p in out]


class Proc:
    def __init__(self, args: list[str], cwd: Path, name: str):
        self.name = name
        self.log = open(cwd / f"{name}.log", "wb")
        self.proc = subprocess.Popen(args, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT)

    def pids(self) -> list[int]:
        return children(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def make_fixtures(work: Path) -> dict:
    subprocess.run([str(ROOT / "certs/make-dev-certs.sh"), str(work / "certs")], check=True, capture_output=True)
    (work / "certs/haproxy.pem").write_bytes((work / "certs/server.crt").read_bytes() + (work / "certs/server.key").read_bytes())
    (work / "tokens.yaml").write_text(f'tokens:\n  - principal: bench\n    tenant: bench\n    token: "{TOKEN}"\n')
    # A valid ExportTraceServiceRequest of about 1 KiB and of about 256 KiB, written by hand in
    # protobuf wire format (span name only), so the sink counts them.
    def varint(n: int) -> bytes:
        out = b""
        while n >= 0x80:
            out += bytes([n & 0x7F | 0x80]); n >>= 7
        return out + bytes([n])
    def ld(field: int, payload: bytes) -> bytes:
        return bytes([field << 3 | 2]) + varint(len(payload)) + payload
    def request(size: int) -> bytes:
        span = ld(5, b"s" * 80)
        count = max(1, size // (len(span) + 2))
        return ld(1, ld(2, b"".join(ld(2, span) for _ in range(count))))
    for name, size in (("1k", 1024), ("256k", 256 * 1024)):
        body = request(size)
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


def proxy_config(grpc: int, http: int, sink_grpc: int, sink_http: int, tail: str = QUIET) -> str:
    """The proxy's configuration for the fixtures of `make_fixtures`: bearer tokens and an ES256 JWT
    provider in front of the sink; `tail` adds the log and admin settings (quiet by default)."""
    return f"""
grpc: {{ endpoint: "127.0.0.1:{grpc}" }}
http: {{ endpoint: "127.0.0.1:{http}" }}
tls: {{ cert_file: certs/server.crt, key_file: certs/server.key }}
upstream: {{ grpc: "127.0.0.1:{sink_grpc}", http: "127.0.0.1:{sink_http}" }}
auth:
  bearer: {{ tokens_file: tokens.yaml }}
  jwt:
    providers:
      - {{ name: bench, issuer: "https://idp.bench", audiences: [otlp], algorithms: [ES256], jwks_file: jwks.json, tenant_claim: tenant }}
""" + tail


def h2load(url: str, body: Path, headers: list[str], h1: bool, clients: int, streams: int, work: Path, n: int,
           rps_per_client: int = 0) -> dict:
    """Runs h2load; with `rps_per_client` the load is paced (open loop) instead of as fast as possible.
    Also reports h2load's own CPU use, to tell when the load generator is the bottleneck."""
    log = work / "h2load.log"
    log.unlink(missing_ok=True)  # h2load appends to its log file; each run's latencies must be its own
    args = ["h2load", "-n", str(n), "-c", str(clients), "-m", str(streams), "-d", str(body), "--log-file", str(log)]
    if h1:
        args.append("--h1")
    if rps_per_client:
        args.append(f"--rps={rps_per_client}")
    for header in headers:
        args += ["-H", header]
    usage_before = os.times()
    started = time.monotonic()
    out = subprocess.run(args + [url], capture_output=True, text=True, timeout=600).stdout
    usage_after = os.times()
    loadgen_cpu = (usage_after.children_user + usage_after.children_system
                   - usage_before.children_user - usage_before.children_system)
    stats = {"rps": 0.0, "mbps": 0.0, "ok": 0, "failed": n}
    for line in out.splitlines():
        if line.startswith("finished in"):
            parts = line.replace(",", "").split()
            stats["rps"] = float(parts[3])
            rate, unit = parts[5][:-3], parts[5][-3:]
            stats["mbps"] = float(parts[5].rstrip("KMGB/s")) * {"KB/s": 1e-3, "MB/s": 1.0, "GB/s": 1e3}.get(unit, 1e-6)
        if line.startswith("status codes:"):
            stats["ok"] = int(line.split()[2])
    # The body rate is what clients sent, not what h2load counts (it counts response bytes).
    stats["mbps"] = stats["rps"] * body.stat().st_size / 1e6
    latencies = sorted(int(l.split()[2]) for l in log.read_text().splitlines() if l.strip())
    if latencies:
        stats["p50"] = latencies[len(latencies) // 2] / 1000
        stats["p99"] = latencies[int(len(latencies) * 0.99)] / 1000
    stats["failed"] = n - stats["ok"]
    stats["loadgen_busy"] = loadgen_cpu / max(time.monotonic() - started, 1e-9)
    return stats


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


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="otlp-bench-"))
    fixtures = make_fixtures(work)
    ports = {name: free_port() for name in ("sink_http", "sink_grpc", "proxy_grpc", "proxy_http", "proxy2_grpc", "proxy2_http", "nghttpx", "haproxy_static", "haproxy_jwt", "haproxy_h1")}
    (work / "proxy.yaml").write_text(proxy_config(ports["proxy_grpc"], ports["proxy_http"], ports["sink_grpc"], ports["sink_http"]))
    (work / "haproxy.cfg").write_text(f"""
global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend jwt
    bind 127.0.0.1:{ports['haproxy_jwt']} ssl crt {work}/certs/haproxy.pem alpn h2,http/1.1
    http-request set-var(txn.bearer) http_auth_bearer
    acl jwt_ok var(txn.bearer),jwt_verify("ES256","{work}/es256.pem") -m int 1
    http-request deny deny_status 401 unless jwt_ok
    http-request set-header X-Scope-OrgID bench
    default_backend grpc
frontend static
    bind 127.0.0.1:{ports['haproxy_static']} ssl crt {work}/certs/haproxy.pem alpn h2,http/1.1
    http-request deny deny_status 401 unless {{ req.hdr(authorization) -m str "Bearer {TOKEN}" }}
    http-request set-header X-Scope-OrgID bench
    default_backend grpc
frontend h1
    bind 127.0.0.1:{ports['haproxy_h1']} ssl crt {work}/certs/haproxy.pem alpn http/1.1
    http-request deny deny_status 401 unless {{ req.hdr(authorization) -m str "Bearer {TOKEN}" }}
    http-request set-header X-Scope-OrgID bench
    default_backend http
backend grpc
    server s1 127.0.0.1:{ports['sink_grpc']} proto h2
backend http
    server s1 127.0.0.1:{ports['sink_http']}
""")
    procs = []
    try:
        sink = Proc([str(BIN), "sink", "--listen", f"127.0.0.1:{ports['sink_http']}", "--grpc-listen", f"127.0.0.1:{ports['sink_grpc']}"], work, "sink")
        procs.append(sink)
        started = time.time()
        proxy = Proc([str(BIN), "run", "--config", "proxy.yaml", "--threads", "1"], work, "proxy")
        procs.append(proxy)
        wait_port(ports["proxy_http"])
        startup = time.time() - started
        nghttpx = Proc(["nghttpx", f"--frontend=127.0.0.1,{ports['nghttpx']}", f"--backend=127.0.0.1,{ports['sink_grpc']};;proto=h2",
                        "--workers=1", "--no-ocsp", "--conf=/dev/null", "--errorlog-file=nghttpx.err", "--accesslog-file=/dev/null",
                        "certs/server.key", "certs/server.crt"], work, "nghttpx")
        haproxy = Proc(["haproxy", "-f", "haproxy.cfg"], work, "haproxy")
        procs += [nghttpx, haproxy]
        for name in ("sink_grpc", "nghttpx", "haproxy_static"):
            wait_port(ports[name])
        time.sleep(0.5)
        idle_rss = rss_kib(proxy.proc.pid)

        grpc = ["content-type: application/grpc", "te: trailers"]
        bearer = [f"authorization: Bearer {TOKEN}"]
        jwt_header = [f"authorization: Bearer {fixtures['jwt']}"]
        url = lambda port: f"https://127.0.0.1:{port}{GRPC_PATH}"
        scenarios = [
            ("gRPC 1 KiB, bearer", [
                ("otlp-auth-proxy", proxy, url(ports["proxy_grpc"]), "grpc-1k.bin", grpc + bearer, False),
                ("nghttpx (no auth)", nghttpx, url(ports["nghttpx"]), "grpc-1k.bin", grpc + bearer, False),
                ("HAProxy (header match)", haproxy, url(ports["haproxy_static"]), "grpc-1k.bin", grpc + bearer, False)]),
            ("gRPC 1 KiB, ES256 JWT", [
                ("otlp-auth-proxy", proxy, url(ports["proxy_grpc"]), "grpc-1k.bin", grpc + jwt_header, False),
                ("HAProxy jwt_verify", haproxy, url(ports["haproxy_jwt"]), "grpc-1k.bin", grpc + jwt_header, False)]),
            ("gRPC 256 KiB, bearer", [
                ("otlp-auth-proxy", proxy, url(ports["proxy_grpc"]), "grpc-256k.bin", grpc + bearer, False),
                ("nghttpx (no auth)", nghttpx, url(ports["nghttpx"]), "grpc-256k.bin", grpc + bearer, False),
                ("HAProxy (header match)", haproxy, url(ports["haproxy_static"]), "grpc-256k.bin", grpc + bearer, False)]),
            ("OTLP/HTTP 1 KiB, HTTP/1.1 keep-alive", [
                ("otlp-auth-proxy", proxy, f"https://127.0.0.1:{ports['proxy_http']}/v1/traces", "body-1k.bin", ["content-type: application/x-protobuf"] + bearer, True),
                ("HAProxy (header match)", haproxy, f"https://127.0.0.1:{ports['haproxy_h1']}/v1/traces", "body-1k.bin", ["content-type: application/x-protobuf"] + bearer, True)]),
        ]
        rows = []
        for title, runs in scenarios:
            for name, proc, target, body, headers, h1 in runs:
                big = "256k" in body
                n = REQUESTS // 20 if big else REQUESTS
                clients, streams = (16, 1) if h1 else (4, 32)
                h2load(target, work / body, headers, h1, clients, streams, work, min(n, 2000))  # warm up
                before = cpu_seconds(proc.pids())
                stats = h2load(target, work / body, headers, h1, clients, streams, work, n)
                cpu = cpu_seconds(proc.pids()) - before
                stats["cpu100k"] = cpu / max(stats["ok"], 1) * 100_000
                stats["rss"] = max(rss_kib(pid, "VmHWM") for pid in proc.pids()) / 1024
                rows.append((title, name, stats))

        print(f"\nmachine: {os.cpu_count()} cores, {os.uname().release}; each proxy one worker thread; upstream: the built-in sink")
        print(f"{'scenario':38} {'proxy':24} {'req/s':>9} {'MB/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'cpu s/100k':>10} {'peak RSS MiB':>12} {'vs nghttpx':>10} {'vs HAProxy':>10}")
        for title, name, stats in rows:
            same = [s for t, n, s in rows if t == title]
            def ratio(prefix: str) -> str:
                other = next((s for t, n, s in rows if t == title and n.startswith(prefix)), None)
                if other is None or other is stats or not other["rps"] or name != "otlp-auth-proxy":
                    return ""
                return f"{stats['rps'] / other['rps']:.2f}x"
            print(f"{title:38} {name:24} {stats['rps']:9.0f} {stats['mbps']:8.1f} {stats.get('p50', 0):7.2f} {stats.get('p99', 0):7.2f} "
                  f"{stats['cpu100k']:10.2f} {stats['rss']:12.1f} {ratio('nghttpx'):>10} {ratio('HAProxy'):>10}"
                  + ("" if stats["failed"] == 0 else f"  ({stats['failed']} failed)"))

        # p99 added over going straight to the upstream, both paced at half of our peak (gRPC 1 KiB, bearer).
        peak = next(s for t, n, s in rows if t == "gRPC 1 KiB, bearer" and n == "otlp-auth-proxy")["rps"]
        clients = 32  # one request in flight per client: enough clients that pacing, not queueing, sets the rate
        paced = max(int(peak / 2 / clients), 1)
        paced_n = max(int(peak / 2 * 10), 1000)  # about ten seconds
        direct = h2load(f"http://127.0.0.1:{ports['sink_grpc']}{GRPC_PATH}", work / "grpc-1k.bin", grpc + bearer, False,
                        clients, 1, work, paced_n, rps_per_client=paced)
        through = h2load(url(ports["proxy_grpc"]), work / "grpc-1k.bin", grpc + bearer, False, clients, 1, work, paced_n,
                         rps_per_client=paced)
        print(f"\nat half of peak ({paced * clients} req/s, gRPC 1 KiB, bearer): p99 straight to the sink "
              f"{direct.get('p99', 0):.2f} ms, through otlp-auth-proxy {through.get('p99', 0):.2f} ms, "
              f"added {through.get('p99', 0) - direct.get('p99', 0):.2f} ms (p50 added "
              f"{through.get('p50', 0) - direct.get('p50', 0):.2f} ms)")

        # Two worker threads against one, same scenario, more clients so two loops have work.
        config2 = (work / "proxy.yaml").read_text().replace(str(ports["proxy_grpc"]), str(ports["proxy2_grpc"])).replace(
            str(ports["proxy_http"]), str(ports["proxy2_http"]))
        (work / "proxy2.yaml").write_text(config2)
        proxy2 = Proc([str(BIN), "run", "--config", "proxy2.yaml", "--threads", "2"], work, "proxy2")
        procs.append(proxy2)
        wait_port(ports["proxy2_grpc"])
        scaling = {}
        for threads, port in ((1, ports["proxy_grpc"]), (2, ports["proxy2_grpc"])):
            h2load(url(port), work / "grpc-1k.bin", grpc + bearer, False, 8, 32, work, 2000)
            scaling[threads] = h2load(url(port), work / "grpc-1k.bin", grpc + bearer, False, 8, 32, work, REQUESTS)
        ratio = scaling[2]["rps"] / max(scaling[1]["rps"], 1)
        busy = scaling[2]["loadgen_busy"]
        cores = os.cpu_count() or 1
        if cores < 4:
            verdict = (f"not a measure of scaling here: {cores} cores are shared by h2load (it used {busy:.0%} of a core), "
                       "the sink and the proxy, so a second worker thread has no core of its own")
        else:
            verdict = f"h2load used {busy:.0%} of a core" + (" (the load generator is the bottleneck)" if busy > 0.85 else "")
        print(f"2 worker threads: {scaling[2]['rps']:.0f} req/s vs 1 thread {scaling[1]['rps']:.0f} req/s = {ratio:.2f}x; {verdict}")

        # Idle and 1,000 idle TLS connections, for each proxy.
        ca = work / "certs/ca.crt"
        rss_1000 = idle_connections_rss(ports["proxy_grpc"], proxy.pids(), ca)
        nghttpx_1000 = idle_connections_rss(ports["nghttpx"], nghttpx.pids(), ca)
        haproxy_1000 = idle_connections_rss(ports["haproxy_static"], haproxy.pids(), ca)
        print(f"\notlp-auth-proxy idle RSS {idle_rss / 1024:.1f} MiB; with 1,000 idle TLS connections {rss_1000:.1f} MiB "
              f"(nghttpx {nghttpx_1000:.1f} MiB, HAProxy {haproxy_1000:.1f} MiB); "
              f"binary {BIN.stat().st_size / 1024 / 1024:.1f} MiB; startup to listening {startup * 1000:.0f} ms")
        return 0
    finally:
        for proc in procs:
            proc.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
