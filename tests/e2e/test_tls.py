"""TLS on the proxy's listeners, seen by openssl s_client."""

from __future__ import annotations

import subprocess


def s_client(port: int, ca_file: str, *options: str) -> subprocess.CompletedProcess[str]:
    """One handshake, then EOF on stdin closes the connection. Output is stdout + stderr."""
    command = [
        "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
        "-CAfile", ca_file, "-verify_return_error", *options,
    ]
    return subprocess.run(command, input="", capture_output=True, text=True, timeout=20)


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def test_tls13_handshake_alpn_http11_verified(proxy, ca_file):
    result = s_client(proxy.port, ca_file, "-alpn", "http/1.1")
    text = output(result)
    assert result.returncode == 0, text
    assert "New, TLSv1.3," in text, text
    assert "ALPN protocol: http/1.1" in text, text
    assert "Verify return code: 0 (ok)" in text, text


def test_tls12_handshake_ecdhe_aead_accepted(proxy, ca_file):
    result = s_client(proxy.port, ca_file, "-tls1_2", "-alpn", "http/1.1")
    text = output(result)
    assert result.returncode == 0, text
    assert "New, TLSv1.2, Cipher is ECDHE-" in text, text
    assert "GCM" in text or "CHACHA20" in text, text


def test_grpc_listener_also_serves_tls(proxy, ca_file):
    result = s_client(proxy.grpc_port, ca_file, "-alpn", "http/1.1")
    assert result.returncode == 0, output(result)
    assert "Verify return code: 0 (ok)" in output(result)


def test_tls11_refused(proxy, ca_file):
    # OpenSSL 3 clients refuse TLS 1.1 at security level 1 and up without sending anything;
    # level 0 makes this client really offer TLS 1.1 so the proxy is the one refusing.
    result = s_client(proxy.port, ca_file, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    text = output(result)
    assert result.returncode != 0, text
    assert "New, TLSv1.1" not in text
    assert "no protocols available" not in text, "the client never offered TLS 1.1: " + text
    assert "alert protocol version" in text, text  # the proxy's protocol_version alert


def test_unknown_alpn_only_h2c_not_negotiated(proxy, ca_file):
    # A client offering only a protocol the proxy does not speak gets no ALPN agreement
    # (or a no_application_protocol alert), never a silent switch to that protocol.
    result = s_client(proxy.port, ca_file, "-alpn", "spdy/3")
    assert "ALPN protocol: spdy/3" not in output(result)


def test_min_version_13_refuses_tls12(start_proxy, sink, ca_file):
    strict = start_proxy(sink.port, min_version="1.3")
    refused = s_client(strict.port, ca_file, "-tls1_2")
    assert refused.returncode != 0, output(refused)
    accepted = s_client(strict.port, ca_file, "-tls1_3")
    assert accepted.returncode == 0, output(accepted)
