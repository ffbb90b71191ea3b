"""A raw HTTP/1.1 client over TLS for the end-to-end tests that must send exactly the bytes they
mean (duplicate headers, bad framing) and read exactly what came back, including whether the proxy
closed the connection."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass

from grpc_helpers import tls_connect

CLOSE_WITHIN = 3.0  # seconds the proxy has to answer a hostile request and close the connection


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key == name]
        return values[0] if values else None


@dataclass
class Exchange:
    responses: list[Response]
    closed: bool  # the proxy closed the connection (EOF or reset) within the wait
    raw: bytes

    @property
    def statuses(self) -> list[int]:
        return [response.status for response in self.responses]

    def describe(self) -> str:
        return f"statuses={self.statuses} closed={self.closed} reply={self.raw[:300]!r}"


def parse_responses(data: bytes) -> list[Response]:
    """Every complete response at the front of `data` (Content-Length or chunked bodies)."""
    responses = []
    position = 0
    while True:
        end = data.find(b"\r\n\r\n", position)
        if end < 0:
            return responses
        lines = data[position:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1])
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        position = end + 4
        values = dict(headers)
        if values.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                line_end = data.find(b"\r\n", position)
                if line_end < 0:
                    return responses
                size = int(data[position:line_end].split(b";")[0], 16)
                if len(data) < line_end + 2 + size + 2:
                    return responses
                body += data[line_end + 2 : line_end + 2 + size]
                position = line_end + 2 + size + 2
                if size == 0:
                    break
        else:
            length = int(values.get("content-length", "0"))
            if len(data) < position + length:
                return responses
            body = data[position : position + length]
            position += length
        responses.append(Response(status, headers, body))


def h1_exchange(port: int, ca_file: str, payload: bytes, *, responses: int = 1, expect_close: bool = True,
                pause_after: int | None = None, rest: bytes = b"") -> Exchange:
    """Writes `payload` (then, after a pause, `rest`) on a fresh TLS connection with ALPN
    http/1.1 and reads until `responses` complete responses arrived and, if `expect_close`, the
    proxy closed the connection, or CLOSE_WITHIN seconds passed."""
    sock = tls_connect(port, ca_file, alpn=("http/1.1",))
    try:
        assert sock.selected_alpn_protocol() == "http/1.1", sock.selected_alpn_protocol()
        sock.sendall(payload)
        if rest:
            time.sleep(0.3)
            try:
                sock.sendall(rest)
            except OSError:
                pass
        data = b""
        closed = False
        deadline = time.monotonic() + CLOSE_WITHIN
        while True:
            if len(parse_responses(data)) >= responses and not expect_close:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                break
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
        return Exchange(parse_responses(data), closed, data)
    finally:
        sock.close()
