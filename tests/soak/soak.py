"""`make soak`: the release proxy under mixed OpenTelemetry SDK exporters for SOAK_SECONDS (default
600), with 10% of them using invalid credentials and the sink (the receiver) restarted twice.

Exporters: OTLP/gRPC and OTLP/HTTP span exporters from the Python SDK, in EXPORTER_PROCESSES worker
processes of EXPORTERS_PER_PROCESS threads each, authenticating with a bearer token (two tenants) or
HTTP Basic (a third tenant through `auth.principals`); two of them (one gRPC, one HTTP) send a wrong
token or password. Every exporter counts the results of its own `export(...)` calls (the SDK retries
503 / UNAVAILABLE inside a call, so a SUCCESS means the spans were accepted after any retries).

Every SAMPLE_SECONDS the proxy's RSS (VmRSS) and open descriptors are sampled. The sink is stopped
and started again on the same ports at one and two thirds of the run; it prints its final counters
when it stops, so spans counted while it stops are not lost to the sum.

Checks (the exit status is non-zero when one fails):
  - RSS slope after warm-up (least squares over the samples after min(120 s, a third of the run))
    below 1 MiB/min;
  - open descriptors back to the baseline once the clients stopped and the sink closed its side;
  - for every tenant, the spans the sink counted (summed over its three lives) are at least the spans
    the exporters were told were exported (more would be a retried request the sink counted twice);
  - the invalid-credential exporters saw only failures, and the sink counted nothing outside the
    three valid tenants.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))

from conftest import PROXY_READY, SINK_READY, Proxy, Sink, free_port  # noqa: E402
from process_probes import open_fds, rss_kib, settled_fds  # noqa: E402

SOAK_SECONDS = int(os.environ.get("SOAK_SECONDS", "600"))
SAMPLE_SECONDS = 10
EXPORTER_PROCESSES = 2
EXPORTERS_PER_PROCESS = 10
PAUSE_BETWEEN_EXPORTS = 0.25
RSS_SLOPE_LIMIT_MIB_PER_MIN = 1.0
# How long the sink stays down at each restart: long enough that clients get 503 / UNAVAILABLE and
# the exporters' own retries have to carry the spans across.
RESTART_DOWNTIME_SECONDS = 2.0


def binary() -> Path:
    configured = os.environ.get("OTLP_AUTH_PROXY_BIN", ".build/release/otlp-auth-proxy")
    path = Path(configured)
    return path if path.is_absolute() else REPO_ROOT / path


# --- exporters (worker processes) ----------------------------------------------------------------


def exporter_specs() -> list[dict]:
    """Twenty exporters: gRPC and HTTP alternate; credentials rotate over three valid kinds; two
    (10%) are invalid."""
    kinds = ["bearer-a", "bearer-b", "basic"]
    specs = []
    for index in range(EXPORTER_PROCESSES * EXPORTERS_PER_PROCESS):
        protocol = "grpc" if index % 2 == 0 else "http"
        credential = kinds[index % 3]
        if index == 4:
            credential = "invalid-bearer"  # a gRPC exporter
        if index == 15:
            credential = "invalid-basic"  # an HTTP exporter
        specs.append({"index": index, "protocol": protocol, "credential": credential, "batch": 5 + index % 11})
    return specs


def authorization(credential: str, secrets_: dict) -> str:
    import base64

    if credential == "bearer-a":
        return f"Bearer {secrets_['token_a']}"
    if credential == "bearer-b":
        return f"Bearer {secrets_['token_b']}"
    if credential == "invalid-bearer":
        return f"Bearer {secrets_['token_a']}x"
    password = secrets_["password"] if credential == "basic" else secrets_["password"] + "x"
    return "Basic " + base64.b64encode(f"soak-user:{password}".encode()).decode()


def make_exporter(spec: dict, settings: dict):
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GRPCSpanExporter
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPSpanExporter

    header = authorization(spec["credential"], settings["secrets"])
    if spec["protocol"] == "grpc":
        with open(settings["ca_file"], "rb") as handle:
            credentials = grpc.ssl_channel_credentials(handle.read())
        return GRPCSpanExporter(
            endpoint=f"https://127.0.0.1:{settings['grpc_port']}", credentials=credentials,
            headers={"authorization": header}, timeout=30, compression=grpc.Compression.NoCompression,
        )
    return HTTPSpanExporter(
        endpoint=f"https://127.0.0.1:{settings['http_port']}/v1/traces", certificate_file=settings["ca_file"],
        headers={"authorization": header}, timeout=30, compression=Compression.NoCompression,
    )


def run_exporter(spec: dict, settings: dict, results: dict) -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    from otel_helpers import make_spans

    spans = make_spans(spec["batch"])
    exporter = make_exporter(spec, settings)
    counts = {"calls_ok": 0, "calls_failed": 0, "spans_ok": 0, "spans_failed": 0}
    try:
        while time.time() < settings["stop_at"]:
            result = exporter.export(spans)
            if result == SpanExportResult.SUCCESS:
                counts["calls_ok"] += 1
                counts["spans_ok"] += len(spans)
            else:
                counts["calls_failed"] += 1
                counts["spans_failed"] += len(spans)
            time.sleep(PAUSE_BETWEEN_EXPORTS)
    finally:
        exporter.shutdown()
        results[spec["index"]] = {**spec, **counts}


def worker_process(specs: list[dict], settings: dict, queue) -> None:
    import logging

    # The SDK logs every retried export as a warning; the counts below say what happened.
    logging.disable(logging.CRITICAL)
    results: dict = {}
    threads = [threading.Thread(target=run_exporter, args=(spec, settings, results)) for spec in specs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put(list(results.values()))


# --- processes under test ------------------------------------------------------------------------


def start_sink(workdir: Path, http_port: int, grpc_port: int, life: int) -> Sink:
    directory = workdir / f"sink{life}"
    directory.mkdir()
    args = [str(binary()), "sink", "--listen", f"127.0.0.1:{http_port}", "--grpc-listen", f"127.0.0.1:{grpc_port}"]
    return Sink("sink", args, SINK_READY, directory)


def stop_sink(sink: Sink) -> dict:
    """Stops the sink and returns the counters it printed as it stopped."""
    sink.stop(timeout=30)
    for line in reversed(sink.stdout_lines):
        if line.startswith("sink stopped stats="):
            return json.loads(line.split("=", 1)[1])
    raise SystemExit(f"the sink printed no final stats\n{sink.describe()}")


def write_files(workdir: Path) -> tuple[Path, dict]:
    import bcrypt

    certs = workdir / "certs"
    subprocess.run([str(REPO_ROOT / "certs" / "make-dev-certs.sh"), str(certs)], check=True, capture_output=True)
    token_a, token_b = "soak-" + secrets.token_urlsafe(24), "soak-" + secrets.token_urlsafe(24)
    password = secrets.token_urlsafe(16)
    tokens = workdir / "tokens.yaml"
    tokens.write_text(
        f"""tokens:
  - principal: soak-a
    tenant: team-a
    token: "{token_a}"
  - principal: soak-b
    tenant: team-b
    sha256: "{hashlib.sha256(token_b.encode()).hexdigest()}"
"""
    )
    htpasswd = workdir / "users.htpasswd"
    htpasswd.write_text(f"soak-user:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()}\n")
    for path in (tokens, htpasswd):
        path.chmod(0o600)
    return certs, {"token_a": token_a, "token_b": token_b, "password": password}


def write_proxy_config(workdir: Path, certs: Path, http_port: int, grpc_port: int) -> Path:
    config = workdir / "proxy.yaml"
    config.write_text(
        f"""grpc: {{ endpoint: "127.0.0.1:0" }}
http: {{ endpoint: "127.0.0.1:0" }}
tls: {{ cert_file: {certs}/server.crt, key_file: {certs}/server.key }}
upstream: {{ grpc: "127.0.0.1:{grpc_port}", http: "127.0.0.1:{http_port}" }}
auth:
  bearer: {{ tokens_file: tokens.yaml }}
  basic: {{ htpasswd_file: users.htpasswd }}
  principals:
    - principal: "user:soak-user"
      tenant: team-c
tenant: {{ header: X-Scope-OrgID }}
admin: {{ endpoint: "127.0.0.1:0" }}
"""
    )
    return config


# --- analysis ---------------------------------------------------------------------------------


def slope_mib_per_min(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS (KiB) over time (s), in MiB per minute."""
    if len(samples) < 3:
        return float("nan")  # fails the check: a run too short to judge
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    covariance = sum((t - mean_t) * (r - mean_r) for t, r in samples)
    variance = sum((t - mean_t) ** 2 for t, _ in samples)
    return covariance / variance * 60 / 1024


def main() -> int:
    if not os.access(binary(), os.X_OK):
        print(f"soak: {binary()} not found: run `swift build -c release --static-swift-stdlib` (make soak does)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="otlp-soak-"))
    certs, secrets_ = write_files(workdir)
    http_port, grpc_port = free_port(), free_port()
    sink = start_sink(workdir, http_port, grpc_port, 0)
    config = write_proxy_config(workdir, certs, http_port, grpc_port)
    proxy = Proxy("proxy", [str(binary()), "run", "--config", str(config)], PROXY_READY, workdir)
    pid = proxy.proc.pid
    baseline_fds = settled_fds(pid)
    started = time.time()
    settings = {
        "ca_file": str(certs / "ca.crt"), "grpc_port": proxy.grpc_port, "http_port": proxy.port,
        "secrets": secrets_, "stop_at": started + SOAK_SECONDS,
    }
    print(f"soak: {SOAK_SECONDS} s, {EXPORTER_PROCESSES * EXPORTERS_PER_PROCESS} exporters, work dir {workdir}", flush=True)

    samples: list[tuple[float, int, int]] = [(0.0, rss_kib(pid), open_fds(pid))]
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    specs = exporter_specs()
    workers = []
    for number in range(EXPORTER_PROCESSES):
        mine = specs[number * EXPORTERS_PER_PROCESS : (number + 1) * EXPORTERS_PER_PROCESS]
        worker = context.Process(target=worker_process, args=(mine, settings, queue))
        worker.start()
        workers.append(worker)

    restart_at = [SOAK_SECONDS / 3, 2 * SOAK_SECONDS / 3]
    sink_totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    restarts: list[str] = []
    next_sample = SAMPLE_SECONDS
    life = 0
    while time.time() < settings["stop_at"]:
        elapsed = time.time() - started
        if restart_at and elapsed >= restart_at[0]:
            restart_at.pop(0)
            stats = stop_sink(sink)
            for tenant, counts in stats["tenants"].items():
                for key, value in counts.items():
                    sink_totals[tenant][key] += value
            stopped = time.time() - started
            life += 1
            time.sleep(RESTART_DOWNTIME_SECONDS)
            sink = start_sink(workdir, http_port, grpc_port, life)
            restarts.append(f"{stopped:.0f} s (down {time.time() - started - stopped:.2f} s)")
            print(f"soak: sink restarted at {restarts[-1]}", flush=True)
        if elapsed >= next_sample:
            samples.append((elapsed, rss_kib(pid), open_fds(pid)))
            rss, fds = samples[-1][1], samples[-1][2]
            print(f"soak: {elapsed:5.0f} s  rss {rss / 1024:7.1f} MiB  fds {fds}", flush=True)
            next_sample += SAMPLE_SECONDS
        time.sleep(0.2)

    results: list[dict] = []
    for _ in workers:
        results.extend(queue.get(timeout=120))
    for worker in workers:
        worker.join(timeout=60)
    stats = stop_sink(sink)
    for tenant, counts in stats["tenants"].items():
        for key, value in counts.items():
            sink_totals[tenant][key] += value
    fds_after_wait = time.monotonic() + 15
    while open_fds(pid) > baseline_fds and time.monotonic() < fds_after_wait:
        time.sleep(0.2)
    fds_after = open_fds(pid)
    final_rss = rss_kib(pid)
    proxy_alive = proxy.proc.poll() is None
    proxy.stop()
    proxy_log = proxy.logs()
    retryable = proxy_log.count('"outcome":"upstream_error"')

    # --- report ---
    warm_up = min(120.0, SOAK_SECONDS / 3)
    slope = slope_mib_per_min([(t, rss) for t, rss, _ in samples if t >= warm_up])
    tenant_of = {"bearer-a": "team-a", "bearer-b": "team-b", "basic": "team-c"}
    exported: dict[str, int] = defaultdict(int)
    print()
    print(f"{'exporter':<26}{'calls ok':>10}{'calls failed':>14}{'spans ok':>10}{'spans failed':>14}")
    groups: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for result in results:
        name = f"{result['protocol']} {result['credential']}"
        for key in ("calls_ok", "calls_failed", "spans_ok", "spans_failed"):
            groups[name][key] += result[key]
        groups[name]["exporters"] += 1
        if result["credential"] in tenant_of:
            exported[tenant_of[result["credential"]]] += result["spans_ok"]
    for name in sorted(groups):
        group = groups[name]
        label = f"{name} (x{group['exporters']})"
        print(f"{label:<26}{group['calls_ok']:>10}{group['calls_failed']:>14}{group['spans_ok']:>10}{group['spans_failed']:>14}")
    print()
    print(f"{'tenant':<10}{'spans exported':>16}{'spans at sink':>15}{'extra at sink':>15}")
    checks: list[tuple[str, bool]] = []
    for tenant in sorted(set(exported) | set(sink_totals)):
        sent, received = exported.get(tenant, 0), sink_totals[tenant]["spans"] if tenant in sink_totals else 0
        print(f"{tenant:<10}{sent:>16}{received:>15}{received - sent:>15}")
        if tenant in exported:
            checks.append((f"{tenant}: every exported span counted by the sink ({received} >= {sent})", received >= sent))
        else:
            checks.append((f"{tenant}: the sink counted spans for a tenant nobody may send as ({received})", False))
    invalid = [r for r in results if r["credential"].startswith("invalid")]
    invalid_ok = sum(r["calls_ok"] for r in invalid)
    invalid_calls = sum(r["calls_ok"] + r["calls_failed"] for r in invalid)
    checks.append((f"invalid credentials: {invalid_calls} calls, {invalid_ok} succeeded (must be 0)", invalid_calls > 0 and invalid_ok == 0))
    valid_calls = sum(r["calls_ok"] for r in results if r["credential"] in tenant_of)
    checks.append((f"valid exporters made progress ({valid_calls} successful calls)", valid_calls > 0))
    checks.append((
        f"RSS slope after {warm_up:.0f} s warm-up: {slope:+.3f} MiB/min over {sum(1 for t, _, _ in samples if t >= warm_up)} samples "
        f"(limit {RSS_SLOPE_LIMIT_MIB_PER_MIN})", slope < RSS_SLOPE_LIMIT_MIB_PER_MIN,
    ))
    checks.append((f"open fds back to baseline: {fds_after} (baseline {baseline_fds}, peak {max(f for _, _, f in samples)})", fds_after <= baseline_fds))
    checks.append(("proxy still running at the end", proxy_alive))
    print()
    print(f"RSS: start {samples[0][1] / 1024:.1f} MiB, peak {max(r for _, r, _ in samples) / 1024:.1f} MiB, end {final_rss / 1024:.1f} MiB")
    print(f"sink restarts at: {', '.join(restarts) or 'none'}; requests answered 503 / UNAVAILABLE meanwhile: {retryable}")
    for text, passed in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {text}")
    if all(passed for _, passed in checks):
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    print(f"logs kept in {workdir}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
