#!/usr/bin/env python3
"""What reading OTLP payloads costs the proxy: the same requests through three configurations of
otlp-auth-proxy, one after another, in front of the same fast upstreams as bench.py (nghttpd for gRPC,
nginx for OTLP/HTTP over HTTP/1.1), pinned the same way (the proxy on one core with one worker thread,
h2load and the upstream on the other), BENCH_ROUNDS times (default 2, modes in alternating order;
a row keeps its fastest round):

- pass: nothing read, bodies pass through untouched (the default);
- count: `usage.count_items: true`, payloads read and counted, forwarded as sent;
- attribute: `tenant.resource_attribute` and `tenant.principal_attribute`, payloads read, both
  attributes set on every Resource, forwarded uncompressed.

Payloads are ExportTraceServiceRequests of about 16 KiB and 256 KiB (uncompressed) built like an SDK
batch: random trace and span ids, names from a small vocabulary, a few attributes per span, so gzip
compresses them about as much as real telemetry. Each is sent uncompressed and gzip-compressed, over
gRPC (8 connections x 8 streams) and OTLP/HTTP over HTTP/1.1 (16 connections). Access logs are off.

For each row: requests/s, MB/s of request bodies as sent on the wire, MB/s of payload (decompressed),
the proxy's CPU µs per request, and the CPU it adds over `pass`. Run through `make bench-payloads`."""

from __future__ import annotations

import gzip
import os
import random
import shutil
import struct
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402  (the shared machinery: processes, pinning, h2load, CPU accounting)

REQUESTS_16K = int(os.environ.get("BENCH_PAYLOAD_REQUESTS", "6000"))
REQUESTS_256K = max(REQUESTS_16K // 12, 100)

MODES = {
    "pass": "",
    "count": "usage: { count_items: true }\n",
    "attribute": "tenant: { resource_attribute: tenant.id, principal_attribute: auth.principal }\n",
}


def _varint(n: int) -> bytes:
    return B._varint(n)


def _bytes(number: int, payload: bytes) -> bytes:
    return B._field(number, payload)


def _string(number: int, text: str) -> bytes:
    return _bytes(number, text.encode())


def _fixed64(number: int, value: int) -> bytes:
    return bytes([number << 3 | 1]) + struct.pack("<Q", value)


def _key_value(key: str, value: str) -> bytes:
    return _string(1, key) + _bytes(2, _string(1, value))


NAMES = ["GET /api/orders", "SELECT orders", "redis GET", "POST /checkout", "grpc.Cart/Add", "render", "kafka publish"]
ROUTES = ["/api/orders", "/api/cart", "/checkout", "/healthz"]


def make_payload(size: int, seed: int = 7) -> bytes:
    """An ExportTraceServiceRequest of about `size` bytes: one Resource, one scope, spans like an SDK's."""
    rng = random.Random(seed)
    resource = _bytes(1, _bytes(1, _key_value("service.name", "checkout")) + _bytes(1, _key_value("host.name", "node-17")))
    scope = _bytes(1, _string(1, "io.opentelemetry.bench") + _string(2, "1.0.0"))
    spans = b""
    start = 1_700_000_000_000_000_000
    while len(spans) < size - 200:
        span = (_bytes(1, rng.randbytes(16)) + _bytes(2, rng.randbytes(8)) + _bytes(4, rng.randbytes(8))
                + _string(5, rng.choice(NAMES)) + bytes([6 << 3, rng.randint(1, 3)])
                + _fixed64(7, start + rng.randint(0, 10**9)) + _fixed64(8, start + rng.randint(10**9, 2 * 10**9))
                + _bytes(9, _key_value("http.route", rng.choice(ROUTES)))
                + _bytes(9, _key_value("http.status_code", str(rng.choice([200, 200, 200, 404, 500])))))
        spans += _bytes(2, span)
    return _bytes(1, resource + _bytes(2, scope + spans))


def make_fixtures(work: Path) -> dict[str, tuple[Path, int]]:
    """Body files by name, each with its payload's decompressed size."""
    B.make_fixtures(work)
    out = {}
    for name, size in (("16k", 16 * 1024), ("256k", 256 * 1024)):
        payload = make_payload(size)
        compressed = gzip.compress(payload, 6)
        for coding, body in (("identity", payload), ("gzip", compressed)):
            flag = 1 if coding == "gzip" else 0
            (work / f"p-http-{name}-{coding}.bin").write_bytes(body)
            (work / f"p-grpc-{name}-{coding}.bin").write_bytes(bytes([flag]) + struct.pack(">I", len(body)) + body)
            out[f"{name}-{coding}"] = (work / f"p-http-{name}-{coding}.bin", len(payload))
    return out


def not_forwarded(admin_port: int) -> int:
    """Requests the proxy finished without forwarding them (refused, limited, upstream errors), from its
    metrics: h2load counts a gRPC reply with status 200 as a success whatever its grpc-status."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).read().decode()
    total = 0
    for line in text.splitlines():
        if line.startswith("otlp_auth_proxy_requests_total{") and 'outcome="forwarded"' not in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def start_ours(work: Path, mode: str, ports: dict) -> B.Proc:
    config = work / f"payload-{mode}.yaml"
    tail = f'log: {{ level: warning, access_log: false }}\nadmin: {{ endpoint: "127.0.0.1:{ports["admin"]}" }}\n'
    config.write_text(B.proxy_config(ports["grpc"], ports["http"], ports["nghttpd"], ports["nginx"], tail) + MODES[mode])
    proc = B.Proc([str(B.BIN), "run", "--config", config.name, "--threads", "1"], work, f"payload-{mode}", B.PROXY_CORE)
    try:
        B.wait_port(ports["grpc"])
        B.wait_port(ports["http"])
    except RuntimeError:
        proc.stop()
        raise RuntimeError(f"otlp-auth-proxy ({mode}) did not start:\n{(work / f'payload-{mode}.log').read_text()[-2000:]}")
    time.sleep(0.3)
    return proc


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="otlp-payload-bench-"))
    try:
        return run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path) -> int:
    fixtures = make_fixtures(work)
    ports = {"nghttpd": B.free_port(), "nginx": B.free_port()}
    upstreams = {"nghttpd": B.start_nghttpd(work, ports["nghttpd"]), "nginx": B.start_nginx(work, ports["nginx"])}
    results: dict[tuple[str, str, str], B.Result] = {}
    rows = [(transport, size, coding) for size in ("16k", "256k") for transport in ("grpc", "http") for coding in ("identity", "gzip")]
    try:
        B.wait_port(ports["nghttpd"])
        B.wait_port(ports["nginx"])
        for round, mode in [(r, m) for r in range(B.ROUNDS) for m in (MODES if r % 2 == 0 else list(MODES)[::-1])]:
            ports |= {"grpc": B.free_port(), "http": B.free_port(), "admin": B.free_port()}
            proxy = start_ours(work, mode, ports)
            try:
                for transport, size, coding in rows:
                    h1 = transport == "http"
                    body = work / f"p-{transport}-{size}-{coding}.bin"
                    headers = [f"authorization: Bearer {B.TOKEN}"]
                    if h1:
                        headers += ["content-type: application/x-protobuf"] + (["content-encoding: gzip"] if coding == "gzip" else [])
                        url = f"https://127.0.0.1:{ports['http']}{B.HTTP_PATH}"
                    else:
                        headers += ["content-type: application/grpc", "te: trailers"] + (["grpc-encoding: gzip"] if coding == "gzip" else [])
                        url = f"https://127.0.0.1:{ports['grpc']}{B.GRPC_PATH}"
                    n = REQUESTS_16K if size == "16k" else REQUESTS_256K
                    clients, streams = (16, 1) if h1 else (8, 8)
                    upstream = upstreams["nginx" if h1 else "nghttpd"]
                    refused_before = not_forwarded(ports["admin"])
                    result = B.measure(url, body, headers, h1, clients, streams, work, n, proxy, upstream)
                    # Refusals of the warm-up count too: any means the configuration does not work.
                    refused = not_forwarded(ports["admin"]) - refused_before
                    result.failed = max(result.failed, refused)
                    key = (mode, transport, f"{size}-{coding}")
                    kept = results.get(key)
                    if kept is None or (result.failed, -result.rps) < (kept.failed, -kept.rps):
                        results[key] = result
                    print(f"  round {round + 1}/{B.ROUNDS} {mode:9} {transport:4} {size:4} {coding:8} {result.rps:8.0f} req/s {result.cpu_us:7.1f} µs/req "
                          f"proxy {result.busy:.0%}" + (f", {result.failed} failed" if result.failed else ""),
                          file=sys.stderr, flush=True)
            finally:
                proxy.stop()
    finally:
        for proc in upstreams.values():
            proc.stop()

    print(f"\nmachine: {os.cpu_count()} cores, {os.uname().release}; {B.PINNING}; access logs off; best of {B.ROUNDS} rounds")
    print("payload: an ExportTraceServiceRequest like an SDK batch; wire MB/s counts the body as sent (compressed or not),")
    print("payload MB/s the same requests' decompressed size; +µs: CPU per request over `pass` (nothing read)")
    print(f"\n| request | mode | req/s | wire MB/s | payload MB/s | CPU µs/req | +µs over pass | limited by |")
    print("|---|---|---|---|---|---|---|---|")
    for transport, size, coding in rows:
        key = f"{size}-{coding}"
        wire = fixtures[key][0].stat().st_size
        payload = fixtures[key][1]
        base = results[("pass", transport, key)]
        for mode in MODES:
            r = results[(mode, transport, key)]
            added = "" if mode == "pass" else f"{r.cpu_us - base.cpu_us:+.1f}"
            label = f"{'gRPC' if transport == 'grpc' else 'HTTP/1.1'} {size} {coding} ({wire:,} B)"
            print(f"| {label} | {mode} | {r.rps:,.0f} | {r.rps * wire / 1e6:.0f} | {r.rps * payload / 1e6:.0f} | "
                  f"{r.cpu_us:.1f} | {added} | {r.limit() or 'proxy'}" + (f", {r.failed} failed" if r.failed else "") + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
