#!/usr/bin/env python3
"""Writes the linker's symbol ordering file (scripts/symbol-order.txt) for release builds.

The release binary's code is about 10 MiB. Executed functions lay scattered across it, and the
kernel maps a file's pages 64 KiB at a time around each page touched, so an idle proxy kept almost
8 MiB of code resident that it never runs. Listed in this file, the functions a proxy runs (start-up,
reload, the request paths, the admin endpoint, shutdown) are laid out together at the start of the
code, most-run first, and the rest of the binary stays on disk. (Functions without a symbol are
gathered by scripts/release-layout.ld instead.)

How the list is made: the release binary (built with function sections) runs under valgrind's
callgrind in front of the built-in sink, once with the default logging and the admin endpoint and
once quiet, each with bearer tokens and a JWT provider configured, and gets: gRPC and OTLP/HTTP
exports over HTTP/2 and HTTP/1.1 with a token and with a JWT, a refused token, a /metrics scrape, a
SIGHUP reload and a SIGTERM drain. Every function of the binary that ran is listed, by instructions
executed, except names that would drag a large library section that never ran along (see
`without_idle_blobs`); the release link's map (`.build/release-link.map`) tells which those are.

A list that no longer matches the code costs only memory, never correctness: functions it does not
name are placed after it as before. Run `make symbol-order` after larger changes to the code.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench import GRPC_PATH, QUIET, TOKEN, free_port, make_fixtures, proxy_config, wait_port  # noqa: E402

BIN = Path(os.environ.get("OTLP_AUTH_PROXY_BIN", ROOT / ".build/release/otlp-auth-proxy"))
OUT = ROOT / "scripts/symbol-order.txt"
LINK_MAP = Path(os.environ.get("SYMBOL_ORDER_MAP", ROOT / ".build/release-link.map"))


def run(args: list[str], work: Path) -> None:
    result = subprocess.run(args, cwd=work, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise SystemExit(f"symbol-order: {args[0]} failed ({result.returncode}): {result.stderr.strip()[-400:]}")


def exercise(work: Path, ports: dict[str, int], jwt: str) -> None:
    grpc_url = f"https://127.0.0.1:{ports['grpc']}{GRPC_PATH}"
    http_url = f"https://127.0.0.1:{ports['http']}/v1/traces"
    grpc = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    protobuf = ["-H", "content-type: application/x-protobuf"]
    for credential in (TOKEN, jwt):
        auth = ["-H", f"authorization: Bearer {credential}"]
        run(["h2load", "-n", "200", "-c", "2", "-m", "8", "-d", "grpc-1k.bin", *grpc, *auth, grpc_url], work)
        run(["h2load", "-n", "20", "-c", "1", "-m", "2", "-d", "grpc-256k.bin", *grpc, *auth, grpc_url], work)
        run(["h2load", "--h1", "-n", "200", "-c", "2", "-d", "body-1k.bin", *protobuf, *auth, http_url], work)
        run(["h2load", "-n", "100", "-c", "1", "-m", "4", "-d", "body-1k.bin", *protobuf, *auth, http_url], work)
    subprocess.run(["curl", "-sk", "-o", "/dev/null", "-H", "authorization: Bearer wrong-token",
                    "-H", "content-type: application/x-protobuf", "--data-binary", "@body-1k.bin", http_url], cwd=work)
    subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{ports['admin']}/metrics"], cwd=work)
    subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{ports['admin']}/readyz"], cwd=work)


def self_costs(profile: Path, binary: Path) -> dict[str, int]:
    """Instructions executed in each function of `binary`, from an uncompressed callgrind profile."""
    costs: dict[str, int] = defaultdict(int)
    target = binary.resolve()
    in_binary = False
    function = ""
    after_calls = False
    for line in profile.read_text(errors="replace").splitlines():
        if line.startswith("ob="):
            in_binary = Path(line[3:].strip()).resolve() == target
        elif line.startswith("fn="):
            function = re.sub(r"'\d+$", "", line[3:].strip())  # a recursion level callgrind tells apart
            after_calls = False
        elif line.startswith("calls="):
            after_calls = True
        elif line[:1].isdigit():  # a cost line: position (absolute, --compress-pos=no) and Ir
            if after_calls:
                after_calls = False  # the inclusive cost of a call, not this function's own
                continue
            fields = line.split()
            if in_binary and function and len(fields) >= 2:
                costs[function] += int(fields[1])
    return costs


def link_map_blobs(link_map: Path) -> tuple[dict[str, set[int]], set[int]]:
    """From lld's map of the release link: the code sections each symbol is defined in, and the large
    sections that hold many functions at once (libraries built without function sections)."""
    defined: dict[str, set[int]] = defaultdict(set)
    blobs: set[int] = set()
    section = -1
    in_text = False
    entry = re.compile(r"\s*[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+ (\s*)(\S.*)$")
    for index, line in enumerate(link_map.read_text(errors="replace").splitlines()):
        match = entry.match(line)
        if not match:
            continue
        size, depth, what = int(match.group(1), 16), len(match.group(2)), match.group(3)
        if depth == 0:
            in_text = what == ".text"
        elif not in_text:
            continue
        elif depth == 8:
            section = index
            if what.endswith(":(.text)") and size >= 16 * 1024:
                blobs.add(index)
        elif depth == 16:
            defined[what].add(section)
    return defined, blobs


def without_idle_blobs(costs: dict[str, int], link_map: Path) -> dict[str, int]:
    """The linker moves every section that defines a listed name. Local copies of small helpers
    (value witnesses) are defined in many objects, some of them large sections of a library built
    without function sections; a name listed for its copy elsewhere would pull such a section, run
    or not, into the packed code. A large section counts as run when a name defined only there ran;
    names that are also defined in a large section that did not run are left out."""
    defined, blobs = link_map_blobs(link_map)
    ran = {next(iter(defined[name])) for name in costs if len(defined.get(name, ())) == 1}
    idle = blobs - ran
    return {name: cost for name, cost in costs.items() if not defined.get(name, set()) & idle}


# Two ways a proxy is commonly run: with the access log and the admin endpoint (the defaults), and
# quiet as `make bench` runs it. Start-up differs between them; each function either runs is listed.
VARIANTS = {
    "defaults": 'log: { level: info }\nadmin: { endpoint: "127.0.0.1:ADMIN_PORT" }\n',
    "quiet": QUIET,
}


def profile(work: Path, binary: Path, jwt: str, variant: str) -> dict[str, int]:
    """Runs the proxy under callgrind with one configuration variant through start-up, the
    exercise, a reload, the exercise again and a drain; returns instructions per function."""
    ports = {name: free_port() for name in ("grpc", "http", "admin", "sink_http", "sink_grpc")}
    tail = VARIANTS[variant].replace("ADMIN_PORT", str(ports["admin"]))
    (work / "proxy.yaml").write_text(proxy_config(ports["grpc"], ports["http"], ports["sink_grpc"], ports["sink_http"], tail))
    sink = subprocess.Popen([str(BIN), "sink", "--listen", f"127.0.0.1:{ports['sink_http']}",
                             "--grpc-listen", f"127.0.0.1:{ports['sink_grpc']}"], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    output = work / f"callgrind-{variant}.out"
    log = work / f"valgrind-{variant}.log"
    proxy = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={output}",
                              "--compress-strings=no", "--compress-pos=no", "--demangle=no",
                              str(binary), "run", "--config", "proxy.yaml", "--threads", "1"], cwd=work,
                             stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    try:
        wait_port(ports["sink_grpc"])
        wait_port(ports["http"], timeout=120)
        wait_port(ports["grpc"], timeout=30)
        exercise(work, ports, jwt)
        proxy.send_signal(signal.SIGHUP)
        time.sleep(3)
        exercise(work, ports, jwt)
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=120)
    finally:
        if proxy.poll() is None:
            proxy.kill()
        sink.terminate()
        sink.wait()
    costs = self_costs(output, binary)
    if len(costs) < 1000:
        raise SystemExit(f"symbol-order: only {len(costs)} functions in the {variant} profile; see {log}")
    return costs


def main() -> int:
    if not BIN.exists():
        raise SystemExit(f"symbol-order: {BIN} does not exist; build the release binary first")
    if not LINK_MAP.exists():
        raise SystemExit(f"symbol-order: {LINK_MAP} does not exist; link the release binary with -Map (make symbol-order does)")
    work = Path(tempfile.mkdtemp(prefix="otlp-symbol-order-"))
    fixtures = make_fixtures(work)
    # valgrind's DWARF reader does not take the toolchain's DWARF 5; the symbol table is enough.
    binary = work / "otlp-auth-proxy"
    run(["objcopy", "--strip-debug", str(BIN), str(binary)], work)
    costs: dict[str, int] = defaultdict(int)
    for variant in VARIANTS:
        for name, cost in profile(work, binary, fixtures["jwt"], variant).items():
            costs[name] += cost
    costs = without_idle_blobs(costs, LINK_MAP)
    ordered = sorted(costs, key=lambda name: (-costs[name], name))
    OUT.write_text("".join(name + "\n" for name in ordered))
    print(f"symbol-order: {len(ordered)} functions written to {OUT.relative_to(ROOT)}")
    subprocess.run(["rm", "-rf", str(work)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
