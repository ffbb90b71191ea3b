"""The documentation's examples: links resolve, YAML blocks parse, configuration blocks pass
`otlp-auth-proxy validate`, Alloy and Collector snippets point where they should, and the commands and
programs of docs/quickstart.md and docs/clients.md are run against a real proxy and sink."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from auth_helpers import Authority, SigningKey, bcrypt_line, claims, jwks, write_client
from conftest import REPO_ROOT, Proxy, start_proxy_process
from cryptography.hazmat.primitives import serialization
from deploy_helpers import Materials, alloy_blocks, alloy_receivers, validate

DOCS = REPO_ROOT / "docs"
MARKDOWN = [REPO_ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def blocks(path: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text()) if lang == language]


def section(path: Path, heading: str) -> str:
    """The text of a `## heading` section, up to the next `## `."""
    text = path.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def github_anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(path):
    text = FENCE.sub("", path.read_text())
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"\w+://", target) or target.startswith("mailto:"):
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        assert resolved.exists(), f"{path.name}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{path.name}: {target}: no such heading"


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.name)
def test_yaml_blocks_parse(path):
    for body in blocks(path, "yaml"):
        list(yaml.safe_load_all(body))


def proxy_config_blocks() -> list[tuple[str, str]]:
    """Blocks that are whole proxy configurations: they name a certificate and an authentication method."""
    found = []
    for path in MARKDOWN:
        for index, body in enumerate(blocks(path, "yaml")):
            document = yaml.safe_load(body)
            if isinstance(document, dict) and {"tls", "auth"} <= document.keys():
                found.append((f"{path.name}[{index}]", body))
    return found


@pytest.fixture(scope="module")
def materials() -> Materials:
    return Materials()


@pytest.mark.parametrize("name,body", proxy_config_blocks(), ids=[n for n, _ in proxy_config_blocks()])
def test_configuration_blocks_pass_validate(binary, materials, tmp_path, name, body):
    result = validate(binary, body, tmp_path, materials)
    assert result.returncode == 0, f"{name}: {result.stderr}"


def test_there_are_configuration_blocks_to_check():
    names = {n.split("[")[0] for n, _ in proxy_config_blocks()}
    assert {"README.md", "configuration.md"} <= names, names


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.name)
def test_alloy_blocks_are_balanced_and_receivers_listen_where_the_proxy_forwards(path):
    for body in blocks(path, "alloy"):
        assert body.count("{") == body.count("}"), body
        receivers = alloy_receivers(body)
        if receivers:
            assert {p: r["endpoint"] for p, r in receivers.items()} == {"grpc": "127.0.0.1:14317", "http": "127.0.0.1:14318"}
            assert all(r["include_metadata"] == "true" for r in receivers.values())


def test_client_snippets_use_the_right_ports_and_defined_authenticators():
    clients = DOCS / "clients.md"
    alloy = blocks(clients, "alloy")
    assert len(alloy) == 4
    for body in alloy:
        for kind, label in re.findall(r"auth\s+=\s+otelcol\.auth\.(\w+)\.(\w+)\.handler", body):
            assert alloy_blocks(body, rf'otelcol\.auth\.{kind}\s+"{label}"'), f"{kind}.{label} is not defined"
        for exporter in alloy_blocks(body, r'otelcol\.exporter\.otlp\s+"\w+"'):
            assert 'endpoint = "otlp.example.com:4317"' in exporter
        for exporter in alloy_blocks(body, r'otelcol\.exporter\.otlphttp\s+"\w+"'):
            assert 'endpoint = "https://otlp.example.com:4318"' in exporter
        assert "ca_file" in body
    (collector,) = [yaml.safe_load(b) for b in blocks(clients, "yaml")]
    for name, exporter in collector["exporters"].items():
        expected = "otlp.example.com:4317" if name.startswith("otlp/") else "https://otlp.example.com:4318"
        assert exporter["endpoint"] == expected, name
        if "auth" in exporter:
            authenticator = exporter["auth"]["authenticator"]
            assert authenticator in collector["extensions"] and authenticator in collector["service"]["extensions"]


# --- running the examples ------------------------------------------------------------------------

SDK_PROGRAM_LANGUAGE = "python"


def shell_environment(script: str, cwd: Path, extra: dict[str, str]) -> dict[str, str]:
    """The OTEL_* variables a block of `export` lines sets, evaluated by bash as a reader would."""
    result = subprocess.run(
        ["bash", "-c", "set -eu\n" + script + "\nenv -0"], cwd=cwd, capture_output=True, timeout=20,
        env={"PATH": os.environ["PATH"], "HOME": str(cwd), **extra},
    )
    assert result.returncode == 0, result.stderr.decode()
    variables = dict(item.split("=", 1) for item in result.stdout.decode().split("\0") if "=" in item)
    return {k: v for k, v in variables.items() if k.startswith("OTEL_")}


def run_sdk_program(program: str, environment: dict[str, str], monkeypatch) -> None:
    """Runs the quick start's Python program in this process (the exporters are installed here),
    with exactly `environment` as its OTEL_* variables."""
    with monkeypatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("OTEL_")]:
            patch.delenv(key)
        for key, value in environment.items():
            patch.setenv(key, value)
        exec(compile(program, "docs/quickstart.md", "exec"), {"__name__": "quickstart"})


def wait_for(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def local_ports(text: str, proxy: Proxy, sink) -> str:
    """The docs use make run's fixed ports; the test processes listen on free ones."""
    return (text.replace("127.0.0.1:14318", f"127.0.0.1:{sink.port}")
                .replace("127.0.0.1:4318", f"127.0.0.1:{proxy.port}")
                .replace("127.0.0.1:4317", f"127.0.0.1:{proxy.grpc_port}")
                .replace("127.0.0.1:9464", proxy.admin_url.removeprefix("http://")))


@pytest.fixture
def run_dir(tmp_path, certs, tokens) -> Path:
    """What `make run` leaves in run/: the CA and the token (of tenant team-a here)."""
    (tmp_path / "run/certs").mkdir(parents=True)
    (tmp_path / "run/certs/ca.crt").write_bytes((certs / "ca.crt").read_bytes())
    (tmp_path / "run/token").write_text(tokens.plain)
    return tmp_path


def test_quickstart_curl_commands(proxy, sink, run_dir):
    quickstart = DOCS / "quickstart.md"
    first_span, unauthenticated = blocks(quickstart, "sh")[1:3]
    assert "curl --cacert run/certs/ca.crt https://127.0.0.1:4318/v1/traces" in first_span
    result = subprocess.run(["bash", "-c", local_ports(first_span, proxy, sink)], cwd=run_dir, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("{}{") and '"tenants":{"team-a":{"requests":1,"spans":1' in result.stdout, result.stdout
    assert sink.tenant("team-a")["spans"] == 1
    result = subprocess.run(["bash", "-c", local_ports(unauthenticated, proxy, sink)], cwd=run_dir, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "401", result.stdout + result.stderr
    assert sink.tenant("team-a")["spans"] == 1
    # What the proxy saw: its metrics and readiness on the admin listener.
    saw = blocks(quickstart, "sh")[-1]
    assert "127.0.0.1:9464/metrics" in saw
    result = subprocess.run(["bash", "-c", local_ports(saw, proxy, sink)], cwd=run_dir, capture_output=True, text=True, timeout=30)
    assert 'otlp_auth_proxy_requests_total{' in result.stdout and 'tenant="team-a"' in result.stdout, result.stdout
    assert result.stdout.rstrip().endswith("ready"), result.stdout
    # The README shows the same first span as make run prints.
    assert first_span.splitlines()[0] in (REPO_ROOT / "README.md").read_text()
    assert first_span.splitlines()[0].replace("run/", "$dir/") in (REPO_ROOT / "scripts/dev-run.sh").read_text()


def test_quickstart_sdk_program_over_http_and_grpc(proxy, sink, run_dir, monkeypatch):
    quickstart = DOCS / "quickstart.md"
    shell = blocks(quickstart, "sh")
    http_exports, grpc_exports = shell[3], shell[4]
    (program,) = blocks(quickstart, SDK_PROGRAM_LANGUAGE)
    http_environment = shell_environment(local_ports(http_exports, proxy, sink).replace("$PWD", str(run_dir)), run_dir, {})
    assert http_environment["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    run_sdk_program(program, http_environment, monkeypatch)
    assert wait_for(lambda: sink.tenant("team-a")["spans"] == 1)
    grpc_environment = {**http_environment, **shell_environment(local_ports(grpc_exports, proxy, sink), run_dir, {})}
    assert grpc_environment["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    run_sdk_program(program, grpc_environment, monkeypatch)
    assert wait_for(lambda: sink.tenant("team-a")["spans"] == 2)
    # The README's SDK block is the quick start's.
    assert http_exports.strip() in (REPO_ROOT / "README.md").read_text()


def test_clients_sdk_environment_blocks_with_every_credential(binary, certs, tokens, tokens_file, sink, tmp_path, monkeypatch):
    """Each environment block of docs/clients.md, with the quick start's program, against a proxy that
    accepts bearer tokens, Basic users, JWTs and client certificates; each lands in its tenant."""
    pki = tmp_path / "pki"
    pki.mkdir()
    client_ca = Authority.root("docs clients CA")
    client = write_client(pki, "client", *client_ca.issue("docs-client", uris=("spiffe://docs.test/sender",)))
    (pki / "clients-ca.crt").write_bytes(client_ca.cert.public_bytes(serialization.Encoding.PEM))
    signer = SigningKey.es256("docs")
    (pki / "jwks.json").write_text(json.dumps(jwks(signer)))
    (pki / "users.htpasswd").write_text(bcrypt_line("docs-user", "docs-password") + "\n")
    jwt_file = tmp_path / "jwt"
    jwt_file.write_text(signer.sign(claims("https://idp.example.com/", sub="docs-sender")))
    config = tmp_path / "proxy" / "proxy.yaml"
    config.parent.mkdir()
    config.write_text(f"""
grpc: {{ endpoint: "127.0.0.1:0" }}
http: {{ endpoint: "127.0.0.1:0" }}
tls: {{ cert_file: {certs}/server.crt, key_file: {certs}/server.key, client_ca_file: {pki}/clients-ca.crt, client_auth: request }}
upstream: {{ grpc: "127.0.0.1:{sink.grpc_port or sink.port}", http: "127.0.0.1:{sink.port}" }}
auth:
  mtls: {{}}
  jwt:
    providers:
      - {{ name: idp, issuer: "https://idp.example.com/", audiences: [otlp-ingest], algorithms: [ES256], jwks_file: {pki}/jwks.json }}
  bearer: {{ tokens_file: {tokens_file} }}
  basic: {{ htpasswd_file: {pki}/users.htpasswd }}
  principals:
    - {{ principal: "cert:*", tenant: cert-tenant }}
    - {{ principal: "jwt:*", tenant: jwt-tenant }}
    - {{ principal: "user:*", tenant: basic-tenant }}
admin: {{ endpoint: "" }}
""")
    proxy = start_proxy_process(binary, config)
    try:
        (program,) = blocks(DOCS / "quickstart.md", SDK_PROGRAM_LANGUAGE)
        sdk = section(DOCS / "clients.md", "OpenTelemetry SDKs (environment variables)")
        environment_blocks = [b for lang, b in FENCE.findall(sdk) if lang == "sh"]
        assert len(environment_blocks) == 5
        secrets = {"OTLP_TOKEN": tokens.plain, "OTLP_USER": "docs-user", "OTLP_PASSWORD": "docs-password"}
        for block in environment_blocks:
            script = (block.replace("https://otlp.example.com:4317", f"https://localhost:{proxy.grpc_port}")
                           .replace("https://otlp.example.com:4318", f"https://localhost:{proxy.port}")
                           .replace("/etc/ssl/otlp/ca.crt", str(certs / "ca.crt"))
                           .replace("/etc/ssl/otlp/client.crt", str(client.cert))
                           .replace("/etc/ssl/otlp/client.key", str(client.key))
                           .replace("/var/run/secrets/otlp/jwt", str(jwt_file)))
            if "CLIENT_CERTIFICATE" in block:
                tenant = "cert-tenant"
            elif "Basic%20" in block:
                tenant = "basic-tenant"
            elif "secrets/otlp/jwt" in block:
                tenant = "jwt-tenant"
            else:
                tenant = "team-a"
            before = sink.tenant(tenant)["spans"]
            run_sdk_program(program, shell_environment(script, tmp_path, secrets), monkeypatch)
            assert wait_for(lambda: sink.tenant(tenant)["spans"] == before + 1), f"{tenant}: {block}\n{proxy.describe()}"
    finally:
        assert proxy.stop(timeout=10) == 0, proxy.describe()


def test_paths_the_docs_name_under_deploy_exist():
    for path in MARKDOWN:
        for named in re.findall(r"\b(deploy/[\w./*-]+[\w*])", path.read_text()):
            if named == "deploy/otlp-gateway":
                continue  # kubectl's name for the Deployment, not a path
            if "*" in named:
                assert list(REPO_ROOT.glob(named)), f"{path.name}: {named} matches nothing"
            else:
                assert (REPO_ROOT / named).exists(), f"{path.name}: {named} does not exist"


def test_alert_rules_shown_in_operations_are_the_shipped_ones():
    shipped = yaml.safe_load((REPO_ROOT / "deploy/prometheus/otlp-auth-proxy.rules.yaml").read_text())
    by_name = {rule["alert"]: rule for group in shipped["groups"] for rule in group["rules"]}
    (shown,) = [yaml.safe_load(b) for b in blocks(DOCS / "operations.md", "yaml")]
    rules = [rule for group in shown["groups"] for rule in group["rules"]]
    assert rules
    for rule in rules:
        original = by_name[rule["alert"]]
        assert {k: original[k] for k in rule if k != "annotations"} == {k: v for k, v in rule.items() if k != "annotations"}
