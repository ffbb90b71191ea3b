"""Deployment files and documentation examples: every YAML file parses, the Kubernetes manifests agree
with the proxy configuration they mount (ports, probe paths, file paths, timing, memory), every proxy
configuration shipped passes `otlp-auth-proxy validate`, the Alloy and Collector pipelines listen where
the proxy forwards, the systemd unit verifies and the binary runs with its memory restriction, the
Dockerfile installs what the binary links, and the commands the docs show work."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from conftest import PROXY_READY, REPO_ROOT, Proxy, start_sink_process, write_proxy_config
from deploy_helpers import (
    DEPLOY, KUSTOMIZE, Materials, alloy_blocks, alloy_receivers, endpoint_host, endpoint_port, find, kubectl,
    render, render_structurally, render_with_kubectl, unhashed, validate,
)

OVERLAYS = ["sidecar", "edge"]
DOCS = REPO_ROOT / "docs"
DEFAULT_UPSTREAM = {"grpc": "127.0.0.1:14317", "http": "127.0.0.1:14318"}


@pytest.fixture(scope="module")
def materials() -> Materials:
    return Materials()


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request):
    """The rendered overlay and the pieces the checks look at."""
    objects = render(KUSTOMIZE / "overlays" / request.param)
    deployment = find(objects, "Deployment", "otlp-gateway")
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    proxy = containers["otlp-auth-proxy"]
    config_text = mounted_file(objects, pod, proxy, argument_after(proxy["args"], "--config"))
    alloy = containers["alloy"]
    alloy_text = mounted_file(objects, pod, alloy, alloy["args"][1])
    return {
        "name": request.param, "objects": objects, "deployment": deployment, "pod": pod, "proxy": proxy,
        "alloy": alloy, "config_text": config_text, "config": yaml.safe_load(config_text), "alloy_text": alloy_text,
    }


def argument_after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def mount_for(pod: dict, container: dict, path: str) -> tuple[dict, dict]:
    """The volume mount of `container` that holds `path`, and its volume."""
    mounts = [m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, f"{container['name']}: {path} is under {len(mounts)} mounts"
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[0]["name"])
    return mounts[0], volume


def mounted_file(objects: list[dict], pod: dict, container: dict, path: str) -> str:
    mount, volume = mount_for(pod, container, path)
    assert "configMap" in volume, f"{path} is expected from a ConfigMap"
    config_map = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == volume["configMap"]["name"])
    return config_map["data"][os.path.relpath(path, mount["mountPath"])]


def port_number(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def sleep_seconds(container: dict) -> int:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    return int(command[1])


def duration_seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)(ms|s|m|h)", value):
        total += float(number) * units[unit]
    return total


def size_bytes(value) -> int:
    if isinstance(value, int):
        return value
    number, unit = re.fullmatch(r"([\d.]+)\s*([KMG]i?)?B?", str(value)).groups()
    factor = {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "K": 1000, "M": 1000**2, "G": 1000**3}[unit]
    return int(float(number) * factor)


def admin_paths() -> set[str]:
    """The paths docs/metrics.md lists for the admin listener."""
    return set(re.findall(r"^\| `GET (/\w+)` \|", (DOCS / "metrics.md").read_text(), re.M))


def documented_metrics() -> set[str]:
    return {"otlp_auth_proxy_" + name for name in re.findall(r"^\| `(\w+)` \| (?:counter|gauge|histogram)", (DOCS / "metrics.md").read_text(), re.M)}


# --- every YAML file ------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for root in (DEPLOY, REPO_ROOT / "examples") for p in root.rglob("*") if p.suffix in (".yaml", ".yml"))


def test_every_yaml_file_under_deploy_and_examples_parses():
    files = yaml_files()
    assert len(files) >= 19, files
    for path in files:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert documents, f"{path} is empty"


def test_kustomizations_name_only_files_that_exist():
    kustomizations = list(KUSTOMIZE.rglob("kustomization.yaml"))
    assert len(kustomizations) == 3
    for path in kustomizations:
        kustomization = yaml.safe_load(path.read_text())
        named = list(kustomization.get("resources", [])) + [p["path"] for p in kustomization.get("patches", [])]
        named += [f.partition("=")[2] or f for g in kustomization.get("configMapGenerator", []) for f in g["files"]]
        for entry in named:
            assert (path.parent / entry).exists(), f"{path}: {entry} does not exist"


@pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed; the checks use the structural rendering")
@pytest.mark.parametrize("name", OVERLAYS)
def test_structural_rendering_matches_kubectl_kustomize(name):
    """Where kubectl is missing the checks render the overlays themselves; here both must agree."""
    overlay = KUSTOMIZE / "overlays" / name
    by_kubectl, ours = render_with_kubectl(overlay), render_structurally(overlay)

    def normal(objects):
        result = {}
        for o in objects:
            o = yaml.safe_load(re.sub(r"(-[a-z0-9]{10})(?=\b)", "", yaml.safe_dump(o)))
            result[(o["kind"], unhashed(o["metadata"]["name"]))] = o
        return result

    assert normal(by_kubectl) == normal(ours)


# --- the proxy configurations --------------------------------------------------------------------


def proxy_configs() -> list[Path]:
    files = [REPO_ROOT / "examples/proxy.yaml", DEPLOY / "systemd/proxy.yaml"]
    files += sorted(KUSTOMIZE.rglob("proxy.yaml"))
    return files


@pytest.mark.parametrize("path", proxy_configs(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_shipped_proxy_config_passes_validate(binary, materials, tmp_path, path):
    result = validate(binary, path.read_text(), tmp_path, materials)
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


def test_validate_check_fails_on_a_broken_config(binary, materials, tmp_path):
    """The check above is able to fail: a typo in a shipped file is reported."""
    text = (KUSTOMIZE / "base/proxy.yaml").read_text().replace("watch_interval:", "watch_intervall:")
    result = validate(binary, text, tmp_path, materials)
    assert result.returncode == 1 and "reload.watch_intervall" in result.stderr, result.stderr


# --- the Kubernetes manifests against the proxy configuration they mount ---------------------------


def test_container_ports_are_the_configured_listeners(overlay):
    config, proxy = overlay["config"], overlay["proxy"]
    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    assert ports == {
        "otlp-grpc": endpoint_port(config["grpc"]["endpoint"]),
        "otlp-http": endpoint_port(config["http"]["endpoint"]),
        "admin": endpoint_port(config["admin"]["endpoint"]),
    }
    for key in ("grpc", "http", "admin"):
        # The kubelet, the Service and Prometheus reach the pod IP, not its loopback.
        assert endpoint_host(config[key]["endpoint"]) in ("0.0.0.0", "::"), f"{key}.endpoint"


def test_probes_ask_the_admin_listener_for_documented_paths(overlay):
    proxy, config = overlay["proxy"], overlay["config"]
    admin = endpoint_port(config["admin"]["endpoint"])
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert proxy["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        get = proxy[probe]["httpGet"]
        assert port_number(proxy, get["port"]) == admin
        assert get["path"] in admin_paths()
    annotations = overlay["deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == admin
    assert annotations["prometheus.io/path"] == "/metrics" and "/metrics" in admin_paths()


def test_service_ports_are_named_typed_and_reach_the_proxy(overlay):
    service = find(overlay["objects"], "Service", "otlp-gateway")
    proxy, config = overlay["proxy"], overlay["config"]
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"otlp-grpc", "otlp-http"}, "only the OTLP ports; the admin port stays off the Service"
    assert ports["otlp-grpc"]["appProtocol"] == "grpc" and ports["otlp-http"]["appProtocol"] == "http"
    assert port_number(proxy, ports["otlp-grpc"]["targetPort"]) == endpoint_port(config["grpc"]["endpoint"])
    assert port_number(proxy, ports["otlp-http"]["targetPort"]) == endpoint_port(config["http"]["endpoint"])
    assert ports["otlp-grpc"]["port"] == 4317 and ports["otlp-http"]["port"] == 4318
    labels = overlay["deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_files_the_config_names_are_mounted_from_secrets_without_subpath(overlay):
    """Rotation works by the kubelet swapping a mounted Secret's files, which subPath mounts never see."""
    config, pod, proxy = overlay["config"], overlay["pod"], overlay["proxy"]
    paths = [config["tls"]["cert_file"], config["tls"]["key_file"], config["auth"]["bearer"]["tokens_file"]]
    for path in paths:
        mount, volume = mount_for(pod, proxy, path)
        assert "secret" in volume, path
        assert "subPath" not in mount, path
    _, tls_volume = mount_for(pod, proxy, config["tls"]["cert_file"])
    certificate = find(overlay["objects"], "Certificate", "otlp-gateway-tls")
    assert certificate["spec"]["secretName"] == tls_volume["secret"]["secretName"]
    assert Path(config["tls"]["cert_file"]).name == "tls.crt" and Path(config["tls"]["key_file"]).name == "tls.key"
    assert duration_seconds(config["reload"]["watch_interval"]) > 0, "rotation needs the file watch"


def test_shutdown_timing_fits_the_grace_period(overlay):
    """The proxy drains before the kubelet kills it, and Alloy receives until the proxy is done."""
    pod, config = overlay["pod"], overlay["config"]
    drain = duration_seconds(config["shutdown"]["drain_timeout"])
    grace = pod["terminationGracePeriodSeconds"]
    proxy_done = sleep_seconds(overlay["proxy"]) + drain
    assert proxy_done < grace
    assert sleep_seconds(overlay["alloy"]) >= proxy_done
    assert grace - sleep_seconds(overlay["alloy"]) >= 10, "Alloy needs time to flush after the proxy is done"


def test_memory_limit_covers_the_configured_limits(overlay):
    """The memory figures of docs/benchmarks.md: the start RSS, per idle connection, plus the buffered bytes."""
    text = (DOCS / "benchmarks.md").read_text()
    idle = float(re.search(r"idle RSS ([\d.]+) MiB", text).group(1)) * 1024**2
    per_connection = float(re.search(r"about (\d+) KiB per idle TLS", text).group(1)) * 1024
    limits = overlay["config"].get("limits", {})
    needed = idle + limits.get("max_connections", 10000) * per_connection + size_bytes(limits.get("max_buffered_bytes", "256MiB"))
    resources = overlay["proxy"]["resources"]
    assert size_bytes(resources["limits"]["memory"]) >= needed
    assert size_bytes(resources["requests"]["memory"]) >= idle


def test_alloy_receives_where_the_proxy_forwards(overlay):
    upstream = overlay["config"]["upstream"]
    receivers = alloy_receivers(overlay["alloy_text"])
    for protocol in ("grpc", "http"):
        assert receivers[protocol]["endpoint"] == upstream[protocol]
        assert receivers[protocol]["include_metadata"] == "true"
        assert endpoint_host(upstream[protocol]) == "127.0.0.1"


def test_edge_load_balancer_autoscaler_and_budget():
    objects = render(KUSTOMIZE / "overlays/edge")
    service = find(objects, "Service", "otlp-gateway")
    deployment = find(objects, "Deployment", "otlp-gateway")
    proxy = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "otlp-auth-proxy")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    annotations = service["metadata"]["annotations"]
    assert int(annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-port"]) == port_number(proxy, "admin")
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-path"] == "/readyz"
    hpa = find(objects, "HorizontalPodAutoscaler", "otlp-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    assert "cpu" in proxy["resources"]["requests"], "the autoscaler measures against the CPU request"
    pdb = find(objects, "PodDisruptionBudget", "otlp-gateway")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


# --- Alloy and Collector pipelines ----------------------------------------------------------------


def alloy_files() -> list[Path]:
    return sorted(DEPLOY.rglob("*.alloy"))


@pytest.mark.parametrize("path", alloy_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_alloy_pipeline_behind_the_proxy(path):
    text = path.read_text()
    assert alloy_blocks(text, r"otelcol\.receiver\.otlp\s+\"[^\"]+\""), "no receiver"
    if path.name == "sampling-tier.alloy":
        return  # fed by the gateways' load-balancing exporter, not by the proxy
    receivers = alloy_receivers(text)
    # The proxy configuration deployed with it: next to it, or the Kubernetes base one.
    config = path.parent / "proxy.yaml"
    config = config if config.exists() else KUSTOMIZE / "base/proxy.yaml"
    upstream = yaml.safe_load(config.read_text())["upstream"]
    assert {p: r["endpoint"] for p, r in receivers.items()} == {"grpc": upstream["grpc"], "http": upstream["http"]}
    assert all(r["include_metadata"] == "true" for r in receivers.values())
    # One batch per tenant, and the tenant header copied from the request to every backend.
    for body in alloy_blocks(text, r'otelcol\.processor\.batch\s+"[^"]+"'):
        assert 'metadata_keys = ["X-Scope-OrgID"]' in body
    headers = alloy_blocks(text, r'otelcol\.auth\.headers\s+"tenant"')
    assert headers and 'from_context = "X-Scope-OrgID"' in headers[0]
    for body in alloy_blocks(text, r'otelcol\.exporter\.(?:otlp|otlphttp)\s+"[^"]+"'):
        assert "auth     = otelcol.auth.headers.tenant.handler" in body


def collector_files() -> list[Path]:
    return sorted(KUSTOMIZE.rglob("collector*.yaml"))


@pytest.mark.parametrize("path", collector_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_collector_pipeline_behind_the_proxy(path):
    config = yaml.safe_load(path.read_text())
    protocols = config["receivers"]["otlp"]["protocols"]
    assert {p: protocols[p]["endpoint"] for p in ("grpc", "http")} == DEFAULT_UPSTREAM
    assert all(protocols[p]["include_metadata"] is True for p in ("grpc", "http"))
    assert config["extensions"]["headers_setter/tenant"]["headers"][0]["from_context"] == "X-Scope-OrgID"
    for name, pipeline in config["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{name}: {component} is not defined"
    for name, exporter in config["exporters"].items():
        auth = exporter.get("auth") or exporter.get("protocol", {}).get("otlp", {}).get("auth")
        assert auth == {"authenticator": "headers_setter/tenant"}, name


def test_collector_files_match_the_alloy_pipelines():
    assert {p.name for p in collector_files()} == {"collector.yaml", "collector-loadbalancing.yaml"}
    assert (KUSTOMIZE / "overlays/edge/config-loadbalancing.alloy").exists()
    assert len(collector_files()) == 3  # sidecar, edge, edge with load balancing


# --- systemd -------------------------------------------------------------------------------------


UNIT = DEPLOY / "systemd/otlp-auth-proxy.service"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_unit_reload_user_and_sandbox():
    s = unit_settings()
    assert "/bin/kill -HUP $MAINPID" in s["ExecReload"]
    assert s["User"] == ["otlp-auth-proxy"]
    sysusers = (DEPLOY / "systemd/otlp-auth-proxy.sysusers").read_text()
    assert re.search(r"^u otlp-auth-proxy ", sysusers, re.M)
    expected = {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "PrivateDevices": "yes", "CapabilityBoundingSet": "", "AmbientCapabilities": "", "MemoryDenyWriteExecute": "yes",
        "RestrictNamespaces": "yes", "LockPersonality": "yes", "SystemCallArchitectures": "native",
    }
    for key, value in expected.items():
        assert s[key] == [value], key
    assert s["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert "@system-service" in s["SystemCallFilter"]
    config = yaml.safe_load((DEPLOY / "systemd/proxy.yaml").read_text())
    assert duration_seconds(s["TimeoutStopSec"][0] + "s") > duration_seconds(config["shutdown"]["drain_timeout"])
    for command in s["ExecStart"] + s["ExecStartPre"]:
        assert command.endswith("--config /etc/otlp-auth-proxy/proxy.yaml")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_has_nothing_to_say(binary, tmp_path):
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/otlp-auth-proxy", str(binary)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result.stdout + result.stderr


PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
# The prefix the proxy runs under: what MemoryDenyWriteExecute=yes asks the kernel for, then (when
# argv[1] names system calls) the unit's SystemCallFilter as a seccomp allow-list whose other calls
# fail with EPERM (SystemCallErrorNumber=EPERM), as systemd installs it, through libseccomp.
SANDBOX_EXEC = (
    "import ctypes, errno, os, sys\n"
    f"if ctypes.CDLL(None).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0: sys.exit(97)\n"
    "if sys.argv[1]:\n"
    "    seccomp = ctypes.CDLL('libseccomp.so.2')\n"
    "    seccomp.seccomp_init.restype = ctypes.c_void_p\n"
    "    context = ctypes.c_void_p(seccomp.seccomp_init(0x00050000 | errno.EPERM))\n"
    "    for name in sys.argv[1].split(','):\n"
    "        number = seccomp.seccomp_syscall_resolve_name(name.encode())\n"
    "        if number >= 0 and seccomp.seccomp_rule_add(context, 0x7fff0000, number, 0) != 0: sys.exit(96)\n"
    "    if seccomp.seccomp_load(context) != 0: sys.exit(95)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def syscall_group(name: str, cache: dict[str, set[str]]) -> set[str]:
    """The system calls of a systemd group (`@system-service`), nested groups expanded."""
    if name not in cache:
        listing = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, timeout=20).stdout
        calls: set[str] = set()
        for entry in re.findall(r"^\s+([@\w-]+)\s*$", listing, re.M):
            calls |= syscall_group(entry, cache) if entry.startswith("@") else {entry}
        cache[name] = calls
    return cache[name]


def unit_syscall_allow_list() -> list[str]:
    """What the unit's SystemCallFilter= lines allow: the allow-list minus the `~` deny-lists."""
    if shutil.which("systemd-analyze") is None or ctypes_library("libseccomp.so.2") is None:
        return []
    cache: dict[str, set[str]] = {}
    allowed: set[str] = set()
    for value in unit_settings()["SystemCallFilter"]:
        deny = value.startswith("~")
        calls = set().union(*(syscall_group(g, cache) if g.startswith("@") else {g} for g in value.lstrip("~").split()))
        allowed = allowed - calls if deny else allowed | calls
    assert len(allowed) > 200 and "setuid" not in allowed and "setrlimit" not in allowed, sorted(allowed)[:20]
    return sorted(allowed)


def ctypes_library(name: str):
    import ctypes

    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def kernel_refuses_write_execute() -> bool:
    """Whether this kernel has PR_SET_MDWE, checked in a child that tries a writable+executable map."""
    probe = (
        "import ctypes, mmap, sys\n"
        f"if ctypes.CDLL(None).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0: sys.exit(2)\n"
        "try:\n    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\nexcept OSError:\n    sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    return subprocess.run([sys.executable, "-c", probe], timeout=10).returncode == 0


# Where the process may make a private mount namespace (root, unshare), every mount is made read-only
# in it: what ProtectSystem=strict and Kubernetes' readOnlyRootFilesystem give the proxy.
READ_ONLY_EXEC = (
    "mount --make-rprivate / && for m in $(awk '{print $2}' /proc/self/mounts); do "
    'mount -o remount,bind,ro "$m" 2>/dev/null; done; touch /tmp/.otlp-auth-proxy-rw 2>/dev/null && exit 98; exec "$@"'
)


def read_only_prefix() -> list[str]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return []
    prefix = ["unshare", "-m", "sh", "-c", READ_ONLY_EXEC, "sh"]
    return prefix if subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0 else []


def test_proxy_serves_in_the_unit_sandbox_and_the_image_healthcheck_passes(binary, certs, tokens, tokens_file, tmp_path):
    """The unit's MemoryDenyWriteExecute=yes (the Swift runtime, NIO, OpenSSL and nghttp2 never need a
    writable and executable mapping) and SystemCallFilter (where systemd-analyze and libseccomp are
    here), and no file written (every mount read-only where a private mount namespace is possible).
    The same proxy answers the Dockerfile's HEALTHCHECK."""
    if not kernel_refuses_write_execute():
        pytest.skip("this kernel has no PR_SET_MDWE")
    sink = start_sink_process(binary, tmp_path, port=0)
    config = write_proxy_config(tmp_path / "proxy", certs=certs, upstream_port=sink.port, tokens_file=tokens_file,
                                grpc_upstream_port=sink.grpc_port)
    command = [*read_only_prefix(), sys.executable, "-c", SANDBOX_EXEC, ",".join(unit_syscall_allow_list()),
               str(binary), "run", "--config", str(config)]
    proxy = Proxy("proxy", command, PROXY_READY, config.parent)
    try:
        response = requests.post(
            f"{proxy.url}/v1/traces", data=b"", verify=str(certs / "ca.crt"), timeout=10,
            headers={"Authorization": f"Bearer {tokens.plain}", "Content-Type": "application/x-protobuf"},
        )
        assert response.status_code == 200, response.text
        assert sink.tenant("team-a")["requests"] >= 1
        healthcheck = dockerfile_healthcheck().replace("9464", proxy.match.group("aport"))
        assert subprocess.run(["bash", "-c", healthcheck], timeout=10).returncode == 0
        sink.stop(timeout=10)  # the receiver is gone: /readyz turns 503 within its 2 s probe period
        assert not wait_until(lambda: subprocess.run(["bash", "-c", healthcheck], timeout=10).returncode == 0, expect=False)
    finally:
        assert proxy.stop(timeout=10) == 0, proxy.describe()
        sink.stop(timeout=10)


def wait_until(check, expect: bool, timeout: float = 6.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check() == expect:
            return expect
        time.sleep(0.3)
    return not expect


# --- Dockerfile ----------------------------------------------------------------------------------


DOCKERFILE = DEPLOY / "docker/Dockerfile"
RUNTIME_PACKAGES = {"libssl3", "libnghttp2-14", "libjansson4", "ca-certificates"}
# In debian:bookworm-slim already: the C library, libcrypt, the C++ and GCC runtimes (apt needs them),
# zlib and libzstd (dpkg pre-depends on both).
BASE_IMAGE_PACKAGES = {"libc6", "libcrypt1", "libstdc++6", "libgcc-s1", "zlib1g", "libzstd1"}


def dockerfile_stages() -> list[tuple[str, str]]:
    """(FROM line, the instructions of that stage) for each stage, with continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line.startswith("FROM "):
            stages.append((line, ""))
        elif stages and line and not line.startswith("#"):
            stages[-1] = (stages[-1][0], stages[-1][1] + line + "\n")
    return stages


def dockerfile_healthcheck() -> str:
    runtime = dockerfile_stages()[-1][1]
    match = re.search(r'^HEALTHCHECK .*CMD \["bash", "-c", "(.*)"\]$', runtime, re.M)
    assert match, "the runtime stage has a HEALTHCHECK"
    return match.group(1).encode().decode("unicode_escape")


def installed_packages(instructions: str) -> set[str]:
    match = re.search(r"apt-get install -y --no-install-recommends ([^&]+)&&", instructions)
    return set(match.group(1).split())


def test_dockerfile_stages_user_ports():
    (build_from, build), (runtime_from, runtime) = dockerfile_stages()
    assert re.fullmatch(r"FROM swift:6\.\d+-bookworm AS build", build_from)
    assert runtime_from == "FROM debian:bookworm-slim"
    assert "--static-swift-stdlib" in build and "-c release" in build
    assert installed_packages(runtime) == RUNTIME_PACKAGES
    user = re.search(r"^USER (\d+):(\d+)$", runtime, re.M)
    assert user and int(user.group(1)) != 0
    exposed = {int(p) for p in re.search(r"^EXPOSE (.+)$", runtime, re.M).group(1).split()}
    deployment = find(render(KUSTOMIZE / "overlays/sidecar"), "Deployment", "otlp-gateway")
    proxy = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "otlp-auth-proxy")
    assert exposed == {p["containerPort"] for p in proxy["ports"]}
    assert proxy["securityContext"]["runAsUser"] == int(user.group(1))
    assert re.search(r'^CMD \["run", "--config", "/etc/otlp-auth-proxy/proxy.yaml"\]$', runtime, re.M)


def test_dockerfile_links_as_make_release_with_the_layout_files_in_its_context():
    """The image's binary is linked as `make release` links it (same flags, so the same memory
    figures), and the symbol ordering file the flags name is in the build context."""
    makefile = re.sub(r"\\\n\s*", " ", (REPO_ROOT / "Makefile").read_text())
    release_flags = re.search(r"^RELEASE_FLAGS := (.+)$", makefile, re.M).group(1).split()
    (_, build), _ = dockerfile_stages()
    command = re.search(r"^RUN swift build -c release (.+?) --product otlp-auth-proxy ", build, re.M).group(1).split()
    assert command == [flag.replace("$(CURDIR)", "/src") for flag in release_flags]
    ordering = next(flag for flag in command if flag.startswith("--symbol-ordering-file="))
    layout = command[command.index("-T") + 2]
    assert [ordering.split("=", 1)[1], layout] == ["/src/scripts/symbol-order.txt", "/src/scripts/release-layout.ld"]
    assert re.search(r"^COPY scripts/symbol-order\.txt scripts/release-layout\.ld \./scripts/$", build, re.M)
    ignore = (DEPLOY / "docker/Dockerfile.dockerignore").read_text().split()
    for name in ("symbol-order.txt", "release-layout.ld"):
        assert f"!scripts/{name}" in ignore
        assert (REPO_ROOT / "scripts" / name).stat().st_size > 0


def test_dockerfile_matches_this_machine():
    """The builder's Swift is the one the project builds with here; the runtime's Debian release is this one's."""
    (build_from, _), (runtime_from, _) = dockerfile_stages()
    os_release = Path("/etc/os-release")
    if os_release.exists() and "VERSION_CODENAME=" in os_release.read_text():
        codename = re.search(r"^VERSION_CODENAME=(\w+)", os_release.read_text(), re.M).group(1)
        assert runtime_from.endswith(f"debian:{codename}-slim") and f"-{codename} AS" in build_from
    if shutil.which("swift"):
        version = re.search(r"Swift version (\d+\.\d+)", subprocess.run(["swift", "--version"], capture_output=True, text=True).stdout)
        if version:
            assert f"swift:{version.group(1)}-" in build_from


@pytest.mark.skipif(shutil.which("apt-cache") is None or shutil.which("dpkg") is None, reason="not a Debian system")
def test_runtime_packages_exist_and_cover_what_the_binary_links(binary):
    runtime = dockerfile_stages()[-1][1]
    packages = sorted(installed_packages(runtime))
    shown = subprocess.run(["apt-cache", "show", "--no-all-versions", *packages], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert set(re.findall(r"^Package: (\S+)$", shown.stdout, re.M)) == set(packages)
    libraries = re.findall(r"^\s*(\S+\.so[.\d]*) => (/\S+)", subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout, re.M)
    # The Swift runtime is linked statically in the image.
    system = [path for _, path in libraries if "swift" not in path]
    assert len(system) >= 4, libraries
    linked = set()
    for path in system:
        # With merged /usr a package may have registered the file under /lib or under /usr/lib.
        candidates = [path, "/usr" + path] if path.startswith("/lib") else [path]
        owners = [subprocess.run(["dpkg", "-S", c], capture_output=True, text=True) for c in candidates]
        found = [o.stdout for o in owners if o.returncode == 0]
        assert found, f"no package owns {path}"
        linked.add(found[0].split(":")[0])
    assert {"libssl3", "libnghttp2-14", "libjansson4"} <= linked, linked
    assert linked <= set(packages) | BASE_IMAGE_PACKAGES, linked - set(packages) - BASE_IMAGE_PACKAGES


# --- Prometheus ----------------------------------------------------------------------------------


def test_alert_rules_parse_and_use_documented_metrics():
    rules = yaml.safe_load((DEPLOY / "prometheus/otlp-auth-proxy.rules.yaml").read_text())
    documented = documented_metrics()
    assert len(documented) >= 10
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert len(alerts) >= 6
    for rule in alerts:
        assert rule["alert"] and rule["expr"] and rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"]
        names = set(re.findall(r"\b(otlp_auth_proxy_\w+)", rule["expr"]))
        assert names, rule["alert"]
        for name in names:
            base = re.sub(r"_(bucket|sum|count)$", "", name) if name.endswith(("_bucket", "_sum", "_count")) else name
            assert base in documented, f"{rule['alert']}: {name} is not in docs/metrics.md"
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


def test_pod_monitor_scrapes_the_admin_port():
    monitor = yaml.safe_load((DEPLOY / "prometheus/podmonitor.yaml").read_text())
    deployment = find(render(KUSTOMIZE / "overlays/sidecar"), "Deployment", "otlp-gateway")
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    proxy = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "otlp-auth-proxy")
    assert endpoint["port"] in {p["name"] for p in proxy["ports"]} and endpoint["port"] == "admin"
    assert endpoint["path"] == "/metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_every_counter_the_proxy_defines_is_documented():
    """The alert rules can only use what docs/metrics.md lists; the list must have every counter."""
    source = (REPO_ROOT / "Sources/ProxyCore/Metrics.swift").read_text()
    counters = {f"otlp_auth_proxy_{name}_{unit or 'total'}"
                for name, unit in re.findall(r'counter\(\s*"(\w+)"(?:,\s*unit:\s*"(\w+)")?', source)}
    assert len(counters) >= 8, counters
    assert counters <= documented_metrics(), counters - documented_metrics()
