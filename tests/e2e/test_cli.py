"""The `validate` command and process lifecycle of `run` and `sink`."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from conftest import start_proxy_process, start_sink_process, write_proxy_config


def validate(binary: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), "validate", "--config", str(config)], capture_output=True, text=True, timeout=30)


def test_validate_good_config_exit_0(binary, certs, tokens_file, tmp_path):
    config = write_proxy_config(tmp_path, certs=certs, upstream_port=14318, tokens_file=tokens_file)
    result = validate(binary, config)
    assert result.returncode == 0, result.stderr
    assert f"configuration OK: {config}" in result.stdout


def test_validate_unknown_key_exit_1_names_key(binary, certs, tokens_file, tmp_path):
    config = write_proxy_config(tmp_path, certs=certs, upstream_port=14318, tokens_file=tokens_file)
    config.write_text(config.read_text().replace("max_request_body_size:", "max_body_size: 1KiB, max_request_body_size:"))
    result = validate(binary, config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "  - http.max_body_size:" in result.stderr, result.stderr
    assert "configuration OK" not in result.stdout


def test_validate_remote_upstream_exit_1_names_key(binary, certs, tokens_file, tmp_path):
    config = write_proxy_config(tmp_path, certs=certs, upstream_port=14318, tokens_file=tokens_file)
    config.write_text(config.read_text().replace('http: "127.0.0.1:14318"', 'http: "10.20.30.40:14318"'))
    result = validate(binary, config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "  - upstream.http:" in result.stderr, result.stderr
    assert "unsafe_allow_remote_upstream" in result.stderr
    assert "upstream.grpc" not in result.stderr  # only the bad key is reported


def test_validate_reports_every_problem_in_one_pass(binary, certs, tokens_file, tmp_path):
    config = write_proxy_config(tmp_path, certs=certs, upstream_port=14318, tokens_file=tokens_file)
    text = config.read_text().replace('http: "127.0.0.1:14318"', 'http: "10.20.30.40:14318"')
    config.write_text(text.replace('min_version: "1.2"', 'min_version: "1.2", bogus: 1'))
    result = validate(binary, config)
    assert result.returncode == 1
    assert "  - upstream.http:" in result.stderr and "  - tls.bogus:" in result.stderr, result.stderr


def test_validate_jwks_url_with_password_exit_1_names_key_hides_password(binary, certs, tokens_file, tmp_path):
    config = write_proxy_config(tmp_path, certs=certs, upstream_port=14318, tokens_file=tokens_file)
    provider = ('{ name: idp, issuer: "https://idp.example.com/", audiences: [otlp], algorithms: [ES256], '
                'jwks_url: "https://reader:hunter2-secret@idp.example.com/jwks.json" }')
    text, count = re.subn(r"auth: \{ bearer: (\{[^}]*\}) \}",
                          lambda m: f"auth: {{ bearer: {m.group(1)}, jwt: {{ providers: [{provider}] }} }}", config.read_text())
    assert count == 1
    config.write_text(text)
    result = validate(binary, config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "auth.jwt.providers[0].jwks_url" in result.stderr, result.stderr
    assert "user information" in result.stderr, result.stderr
    assert "hunter2-secret" not in result.stderr + result.stdout
    assert "configuration OK" not in result.stdout


def test_help_and_usage_errors(binary):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=30)

    for args in ([], ["--help"], ["help"]):
        result = run(*args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("OVERVIEW: A TLS-terminating authentication proxy"), result.stdout
        assert "  validate " in result.stdout and result.stderr == ""
    result = run("run", "-h")
    assert result.returncode == 0 and "--threads <n>" in result.stdout, result.stdout
    result = run("run", "--config", "proxy.yaml", "--threads", "many")
    assert result.returncode == 64, result.stdout + result.stderr
    assert result.stderr.startswith("Error: The value 'many' is invalid for '--threads <n>'"), result.stderr
    assert result.stdout == ""
    result = run("sink", "--listen")
    assert result.returncode == 64 and "Missing value for '--listen <host:port>'" in result.stderr, result.stderr
    result = run("serve")
    assert result.returncode == 64 and "Unknown subcommand 'serve'" in result.stderr, result.stderr


def test_run_missing_certificate_exits_nonzero_naming_key(binary, certs, tokens_file, tmp_path):
    config = write_proxy_config(tmp_path, certs=certs, upstream_port=14318, tokens_file=tokens_file)
    config.write_text(config.read_text().replace("server.crt", "missing.crt"))
    result = subprocess.run([str(binary), "run", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "tls.cert_file" in result.stderr, result.stderr
    assert "proxy ready" not in result.stdout


def test_sigterm_stops_proxy_and_sink_cleanly(binary, certs, tokens_file, tmp_path):
    sink = start_sink_process(binary, tmp_path, port=0)
    config = write_proxy_config(tmp_path / "proxy", certs=certs, upstream_port=sink.port, tokens_file=tokens_file)
    proxy = start_proxy_process(binary, config)
    assert proxy.stop(timeout=10) == 0, proxy.describe()
    assert sink.stop(timeout=10) == 0, sink.describe()
    assert len(proxy.stdout_lines) == 1, proxy.stdout_lines  # the ready line only; logs go to stderr
    # The sink's ready line, then its final counters as it stops; its logs go to stderr too.
    assert len(sink.stdout_lines) == 2, sink.stdout_lines
    assert sink.stdout_lines[1].startswith("sink stopped stats="), sink.stdout_lines
    assert json.loads(sink.stdout_lines[1].split("=", 1)[1])["requests"] == 0
