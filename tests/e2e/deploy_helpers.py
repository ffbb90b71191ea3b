"""Helpers for test_deploy.py: render the kustomize overlays, make the files a configuration names so
`otlp-auth-proxy validate` can check it, and read Alloy configuration blocks."""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from auth_helpers import Authority, SigningKey, _pem_cert, _pem_key, b64url, bcrypt_line, jwks
from cryptography.x509.oid import ExtendedKeyUsageOID
from conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
KUSTOMIZE = DEPLOY / "kubernetes"

# --- proxy configurations -----------------------------------------------------------------------

# The keys whose values are files `validate` reads (docs/configuration.md, "Relative paths").
FILE_KEYS = {
    "cert_file", "key_file", "client_ca_file", "crl_file", "tokens_file", "htpasswd_file",
    "jwks_file", "jwks_ca_file", "hmac_secret_file",
}
INSTALL_PREFIX = "/etc/otlp-auth-proxy/"


def _walk(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield path + (key,), key, value
            yield from _walk(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, path + (index,))


class Materials:
    """One server and one client PKI, a JWKS per algorithm family and the other file contents a
    configuration can name, made once and written wherever a configuration wants them."""

    def __init__(self) -> None:
        server_ca = Authority.root("deploy-check server CA")
        cert, key = server_ca.issue("localhost", dns=("localhost",), ips=("127.0.0.1",),
                                    eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
        self.server_cert = _pem_cert(cert)
        self.server_key = _pem_key(key)
        self.server_ca = _pem_cert(server_ca.cert)
        clients = Authority.root("deploy-check clients CA")
        self.client_ca = _pem_cert(clients.cert)
        self.client_crl = clients.crl()
        self.token = secrets.token_hex(32)
        self.tokens = yaml.safe_dump({"tokens": [{"principal": "deploy-check", "tenant": "team-a", "token": self.token}]})
        self.htpasswd = bcrypt_line("deploy-check", "a-password-for-the-check") + "\n"
        self.hmac_secret = secrets.token_hex(32)
        ed_public = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.jwks_ec_rsa = jwks(SigningKey.es256("es"), SigningKey.rs256("rs"))
        self.jwks_ed = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64url(ed_public), "kid": "ed",
                                  "alg": "EdDSA", "use": "sig"}]}

    def content(self, key: str, context: dict) -> bytes:
        if key == "cert_file":
            return self.server_cert
        if key == "key_file":
            return self.server_key
        if key in ("client_ca_file",):
            return self.client_ca
        if key == "jwks_ca_file":
            return self.server_ca
        if key == "crl_file":
            return self.client_crl
        if key == "tokens_file":
            return self.tokens.encode()
        if key == "htpasswd_file":
            return self.htpasswd.encode()
        if key == "hmac_secret_file":
            return self.hmac_secret.encode() + b"\n"
        if key == "jwks_file":
            algorithms = context.get("algorithms") or []
            return json.dumps(self.jwks_ed if "EdDSA" in algorithms else self.jwks_ec_rsa).encode()
        raise AssertionError(f"no content for {key}")


def materialize(config_text: str, directory: Path, materials: Materials) -> tuple[Path, dict[str, str]]:
    """Writes the configuration into `directory` with INSTALL_PREFIX mapped into it, and every file it
    names with valid content. Returns the configuration's path and the environment `validate` needs
    (the variables `hmac_secret_env` names)."""
    directory.mkdir(parents=True, exist_ok=True)
    installed = directory / "etc"
    text = config_text.replace(INSTALL_PREFIX, f"{installed}/")
    config = directory / "proxy.yaml"
    config.write_text(text)
    document = yaml.safe_load(text) or {}
    environment: dict[str, str] = {}
    for path, key, value in _walk(document):
        context = _parent(document, path)
        if key in FILE_KEYS and isinstance(value, str):
            target = Path(value) if os.path.isabs(value) else directory / value
            assert str(target).startswith(str(directory)), f"{'.'.join(map(str, path))}: {value} is outside {INSTALL_PREFIX}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(materials.content(key, context))
        elif key == "hmac_secret_env" and isinstance(value, str):
            environment[value] = materials.hmac_secret
    return config, environment


def _parent(document, path):
    node = document
    for part in path[:-1]:
        node = node[part]
    return node


def validate(binary: Path, config_text: str, directory: Path, materials: Materials) -> subprocess.CompletedProcess[str]:
    config, environment = materialize(config_text, directory, materials)
    return subprocess.run([str(binary), "validate", "--config", str(config)], capture_output=True, text=True,
                          timeout=30, env={**os.environ, **environment})


def endpoint_port(value: str) -> int:
    return int(value.rsplit(":", 1)[1])


def endpoint_host(value: str) -> str:
    host = value.rsplit(":", 1)[0]
    return host.strip("[]") or "0.0.0.0"


# --- kustomize ---------------------------------------------------------------------------------

HASH_SUFFIX = re.compile(r"-[a-z0-9]{10}$")


def kubectl() -> str | None:
    return shutil.which("kubectl")


def render_with_kubectl(overlay: Path) -> list[dict]:
    result = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def render_structurally(directory: Path) -> list[dict]:
    """What `kubectl kustomize` does for the features deploy/kubernetes uses (resources, strategic
    merge patches, configMapGenerator, namespace, images), without the name hashes."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects: list[dict] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        objects += render_structurally(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    for generator in kustomization.get("configMapGenerator", []):
        data = {}
        for entry in generator.get("files", []):
            key, _, source = entry.partition("=")
            data[key if source else Path(key).name] = (directory / (source or key)).read_text()
        existing = next((o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == generator["name"]), None)
        if generator.get("behavior") in ("replace", "merge"):
            assert existing is not None, f"{directory}: {generator['name']} replaces nothing"
            existing["data"] = data if generator["behavior"] == "replace" else {**existing["data"], **data}
        else:
            assert existing is None, f"{directory}: {generator['name']} generated twice"
            objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data})
    for patch in kustomization.get("patches", []):
        document = yaml.safe_load((directory / patch["path"]).read_text())
        target = next(o for o in objects if o["kind"] == document["kind"] and o["metadata"]["name"] == document["metadata"]["name"])
        _merge(target, document)
    for image in kustomization.get("images", []):
        for container in _containers(objects):
            name, _, _tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    if "namespace" in kustomization:
        for o in objects:
            o["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def _merge(target, patch):
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        elif isinstance(value, list) and isinstance(target.get(key), list) and all(isinstance(v, dict) and "name" in v for v in value):
            for item in value:
                match = next((t for t in target[key] if t.get("name") == item["name"]), None)
                if match is None:
                    target[key].append(copy.deepcopy(item))
                else:
                    _merge(match, item)
        else:
            target[key] = copy.deepcopy(value)


def _containers(objects):
    for o in objects:
        if o["kind"] == "Deployment":
            yield from o["spec"]["template"]["spec"]["containers"]


_rendered: dict[Path, list[dict]] = {}


def render(overlay: Path) -> list[dict]:
    """The overlay's objects (a copy: callers may change them), rendered once per test session."""
    if overlay not in _rendered:
        _rendered[overlay] = render_with_kubectl(overlay) if kubectl() else render_structurally(overlay)
    return copy.deepcopy(_rendered[overlay])


def unhashed(name: str) -> str:
    return HASH_SUFFIX.sub("", name)


def find(objects: list[dict], kind: str, name: str | None = None) -> dict:
    matches = [o for o in objects if o["kind"] == kind and (name is None or unhashed(o["metadata"]["name"]) == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


# --- Alloy configuration ----------------------------------------------------------------------


def strip_comments(text: str) -> str:
    """Removes `//` comments, leaving `//` inside strings (URLs) alone."""
    return re.sub(r'("(?:[^"\\\n]|\\.)*")|//[^\n]*', lambda m: m.group(1) or "", text)


def alloy_blocks(text: str, header: str) -> list[str]:
    """Bodies of the blocks whose header matches `header` (a regex for what precedes `{`)."""
    text = strip_comments(text)
    bodies = []
    for match in re.finditer(header + r"\s*\{", text):
        depth, start = 1, match.end()
        index = start
        while depth:
            assert index < len(text), f"unbalanced braces after {match.group(0)!r}"
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            index += 1
        bodies.append(text[start:index - 1])
    return bodies


def alloy_attribute(body: str, name: str) -> str | None:
    match = re.search(rf"(?m)^\s*{name}\s*=\s*(\"[^\"]*\"|\S+)", body)
    return match.group(1).strip('"') if match else None


def alloy_receivers(text: str) -> dict[str, dict[str, str | None]]:
    """For each otelcol.receiver.otlp: its grpc and http endpoint and include_metadata."""
    receivers = {}
    for body in alloy_blocks(text, r'otelcol\.receiver\.otlp\s+"[^"]+"'):
        for protocol in ("grpc", "http"):
            blocks = alloy_blocks(body, rf"(?m)^\s*{protocol}")
            if blocks:
                receivers[protocol] = {
                    "endpoint": alloy_attribute(blocks[0], "endpoint"),
                    "include_metadata": alloy_attribute(blocks[0], "include_metadata"),
                }
    return receivers
