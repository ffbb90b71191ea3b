"""Faults: the receiver refuses, resets, stalls, sends GOAWAY or restarts; clients vanish
mid-request; the proxy runs out of file descriptors. Each case checks the status the client sees
(what docs/security.md "Faults" documents: 503 + Retry-After / gRPC 14 UNAVAILABLE for anything to
retry, 504 / 4 DEADLINE_EXCEEDED for a stall), what the proxy logs, that the upstream side was closed
or cancelled where it must be, that the proxy's open descriptors return to their baseline and its
RSS stays within RSS_BOUND_MIB, and that a normal request afterwards succeeds.

The misbehaving receivers are small Python servers (raw sockets for HTTP/1.1, the `h2` library for
h2c) whose next request can be armed with one fault; the real sink is used for restarts.
"""

from __future__ import annotations

import gc
import os
import resource
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset

from conftest import Proxy, free_port, start_proxy_process, write_proxy_config
from process_probes import cpu_seconds, open_fds, rss_kib, settled_fds
from grpc_helpers import (
    GOAWAY,
    export_traces,
    frame,
    grpc_channel,
    grpc_framed,
    grpc_request_headers,
    h2_request,
    bearer_metadata,
    tls_connect,
    trace_request,
)

# How much the proxy's resident memory may grow across one fault (debug build; a leak of the
# buffers involved would show up as far more once repeated, but one fault must stay small).
RSS_BOUND_MIB = 16
UPSTREAM_TIMEOUT_S = 1.0


# --- process probes ------------------------------------------------------------------------


def wait_until(condition, seconds: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "0A": "LISTEN", "0B": "CLOSING",
              "04": "FIN_WAIT1", "05": "FIN_WAIT2", "09": "LAST_ACK"}


def describe_fds(pid: int) -> list[str]:
    """The process's descriptors, sockets shown as `local -> remote STATE` (for failure messages)."""
    sockets = {}
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    local, remote = (int(fields[i].rsplit(":", 1)[1], 16) for i in (1, 2))
                    sockets[fields[9]] = f"tcp :{local} -> :{remote} {TCP_STATES.get(fields[3], fields[3])}"
        except OSError:
            pass
    described = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            target = sockets.get(target[8:-1], target)
        described.append(target)
    return sorted(described)


class Baseline:
    """The proxy's open descriptors and RSS while it holds no client and no upstream connection."""

    def __init__(self, proxy: Proxy, fds: int | None = None):
        self.proxy = proxy
        self.pid = proxy.proc.pid
        self.fds = settled_fds(self.pid) if fds is None else fds
        self.rss = rss_kib(self.pid)

    def assert_no_leak(self, *upstreams) -> None:
        """Closes the upstreams' side of every connection (pooled ones are legitimately kept), then
        expects the descriptor count back at the baseline and RSS within the bound."""
        for upstream in upstreams:
            upstream.drop_all()
        gc.collect()  # client sockets of finished requests held only by reference cycles
        assert wait_until(lambda: open_fds(self.pid) <= self.fds, 8), (
            f"open fds {open_fds(self.pid)} did not return to the baseline {self.fds}: "
            f"{describe_fds(self.pid)}\n" + subprocess.run(["ss", "-tanp"], capture_output=True, text=True).stdout[-3000:]
        )
        growth = (rss_kib(self.pid) - self.rss) / 1024
        print(f"fds back to {open_fds(self.pid)} (baseline {self.fds}), RSS {growth:+.2f} MiB")  # shown with -s
        assert growth < RSS_BOUND_MIB, f"RSS grew by {growth:.1f} MiB (bound {RSS_BOUND_MIB} MiB)"


class LogWindow:
    """The proxy's log lines written since the window was opened."""

    def __init__(self, proxy: Proxy):
        self.proxy = proxy
        self.start = len(proxy.logs())

    def text(self) -> str:
        return self.proxy.logs()[self.start :]

    def wait_for(self, needle: str, seconds: float = 3) -> bool:
        return wait_until(lambda: needle in self.text(), seconds)


# --- misbehaving receivers ------------------------------------------------------------------


class FakeUpstream:
    """Accept loop shared by the fake receivers. `arm(fault)` makes the next request misbehave
    (later ones are answered normally); `pause()` closes the listener so connections are refused,
    `resume()` listens on the same port again; `drop_all()` closes every accepted connection."""

    def __init__(self):
        self.port = free_port()
        self.lock = threading.Lock()
        self.fault: str | None = None
        self.connections = 0
        self.requests = 0  # request heads seen
        self.closed_by_proxy = 0  # connections the proxy closed while a request was held
        self.requests_after_goaway = 0  # h2c: streams opened on a connection after its GOAWAY
        self.resets_from_proxy: list[int] = []  # h2c: RST_STREAM codes the proxy sent
        self.events = threading.Condition(self.lock)
        self._open: set[socket.socket] = set()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self.resume()

    def resume(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def pause(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() stops listening at once; close() alone leaves the socket listening while the
            # accept thread still polls it, and a connection queued then is reset, not refused.
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()

    def arm(self, fault: str) -> None:
        with self.lock:
            self.fault = fault

    def take_fault(self) -> str | None:
        with self.lock:
            fault, self.fault = self.fault, None
            return fault

    def count(self, attribute: str, by: int = 1) -> None:
        with self.lock:
            setattr(self, attribute, getattr(self, attribute) + by)
            self.events.notify_all()

    def wait_for(self, predicate, seconds: float) -> bool:
        with self.lock:
            return self.events.wait_for(lambda: predicate(self), timeout=seconds)

    def drop_all(self) -> None:
        with self.lock:
            open_connections = list(self._open)
        for conn in open_connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        self._stop.set()
        self.pause()
        self.drop_all()

    def _accept(self, listener: socket.socket) -> None:
        listener.settimeout(0.2)
        while not self._stop.is_set() and self._listener is listener:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self._open.add(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.serve(conn)
        except OSError:
            pass
        finally:
            with self.lock:
                self._open.discard(conn)
            conn.close()

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError


def reset_close(conn: socket.socket) -> None:
    """Closes with a TCP RST instead of a FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


class FaultyHTTP1Upstream(FakeUpstream):
    """An OTLP/HTTP receiver over keep-alive HTTP/1.1. Faults: `reset_after_request` (reads the whole
    request, then RST), `reset_mid_response` (sends the head and part of the body, then RST),
    `stall_mid_response` (sends the head and part of the body, then nothing; counts the proxy closing
    the connection), `hold` (reads what comes and never answers; counts the proxy closing the
    connection), `ambiguous_response` (answers with both Content-Length and Transfer-Encoding, then
    counts the proxy closing the connection)."""

    def serve(self, conn: socket.socket) -> None:
        buffer = b""
        while not self._stop.is_set():
            while b"\r\n\r\n" not in buffer:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            self.count("requests")
            fault = self.take_fault()
            headers = {}
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if fault == "hold":
                # Never answer; the proxy must close this connection (timeout or client gone).
                while conn.recv(65536):
                    pass
                self.count("closed_by_proxy")
                return
            buffer = self._read_body(conn, buffer, headers)
            if buffer is None:
                return
            if fault == "reset_after_request":
                reset_close(conn)
                return
            if fault == "ambiguous_response":
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nok"
                )
                while conn.recv(65536):
                    pass
                self.count("closed_by_proxy")
                return
            if fault in ("reset_mid_response", "stall_mid_response"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 100\r\n\r\n" + b"\0" * 10)
                if fault == "stall_mid_response":
                    while conn.recv(65536):
                        pass
                    self.count("closed_by_proxy")
                    return
                time.sleep(0.2)
                reset_close(conn)
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")

    @staticmethod
    def _read_body(conn: socket.socket, buffer: bytes, headers: dict) -> bytes | None:
        """Reads a Content-Length or chunked body; returns the bytes after it (None on EOF)."""
        if b"content-length" in headers:
            need = int(headers[b"content-length"])
            while len(buffer) < need:
                chunk = conn.recv(65536)
                if not chunk:
                    return None
                buffer += chunk
            return buffer[need:]
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while b"\r\n0\r\n\r\n" not in b"\r\n" + buffer:
                chunk = conn.recv(65536)
                if not chunk:
                    return None
                buffer += chunk
            return (b"\r\n" + buffer).split(b"\r\n0\r\n\r\n", 1)[1]
        return buffer


def goaway(last_stream_id: int, error_code: int) -> bytes:
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_stream_id, error_code))


class FaultyH2CUpstream(FakeUpstream):
    """An OTLP/gRPC receiver over h2c (the `h2` library). Faults, applied when a request has been
    read completely (`hold`: when its HEADERS arrive): `reset_after_request` (RST_STREAM
    INTERNAL_ERROR), `reset_mid_response` (response HEADERS, then RST_STREAM INTERNAL_ERROR),
    `drop_mid_response` (response HEADERS, then the TCP connection closes), `goaway_graceful` (GOAWAY
    NO_ERROR naming this stream as the last, the response, and the connection closed a second
    later), `goaway_error` (GOAWAY INTERNAL_ERROR with last-stream-id 0, then close),
    `stall_mid_response` (response HEADERS and one whole message, then nothing; counts the proxy's
    RST_STREAM), `hold` (never answers; counts the proxy's RST_STREAM and connection closes)."""

    OK_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]

    def serve(self, conn: socket.socket) -> None:
        h2 = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        h2.initiate_connection()
        conn.sendall(h2.data_to_send())
        held: set[int] = set()
        close_at: float | None = None  # set once this connection sent a graceful GOAWAY
        conn.settimeout(0.1)
        while not self._stop.is_set():
            if close_at is not None and time.monotonic() >= close_at:
                return
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            if not data:
                if held:
                    self.count("closed_by_proxy")
                return
            for event in h2.receive_data(data):
                if isinstance(event, RequestReceived):
                    self.count("requests")
                    if close_at is not None:
                        self.count("requests_after_goaway")
                    if self.fault == "hold" and self.take_fault() == "hold":
                        held.add(event.stream_id)
                elif isinstance(event, DataReceived):
                    h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, StreamReset):
                    if event.stream_id in held:
                        with self.lock:
                            self.resets_from_proxy.append(int(event.error_code))
                            self.events.notify_all()
                elif isinstance(event, ConnectionTerminated):
                    return
                elif isinstance(event, StreamEnded) and event.stream_id not in held:
                    stream = event.stream_id
                    fault = self.take_fault()
                    if fault == "reset_after_request":
                        h2.reset_stream(stream, ErrorCodes.INTERNAL_ERROR)
                    elif fault == "stall_mid_response":
                        h2.send_headers(stream, self.OK_HEADERS)
                        h2.send_data(stream, b"\0\0\0\0\0")
                        held.add(stream)
                    elif fault in ("reset_mid_response", "drop_mid_response"):
                        h2.send_headers(stream, self.OK_HEADERS)
                        conn.sendall(h2.data_to_send())
                        time.sleep(0.1)
                        if fault == "drop_mid_response":
                            reset_close(conn)
                            return
                        h2.reset_stream(stream, ErrorCodes.INTERNAL_ERROR)
                    elif fault == "goaway_error":
                        conn.sendall(h2.data_to_send() + goaway(0, int(ErrorCodes.INTERNAL_ERROR)))
                        time.sleep(0.05)
                        return
                    else:
                        if fault == "goaway_graceful":
                            conn.sendall(h2.data_to_send() + goaway(stream, 0))
                            close_at = time.monotonic() + 1.0
                        h2.send_headers(stream, self.OK_HEADERS)
                        h2.send_data(stream, b"\0\0\0\0\0")
                        h2.send_headers(stream, [("grpc-status", "0")], end_stream=True)
            outgoing = h2.data_to_send()
            if outgoing:
                conn.sendall(outgoing)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def h1_upstream():
    upstream = FaultyHTTP1Upstream()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def h2c_upstream():
    upstream = FaultyH2CUpstream()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def fault_proxy(binary: Path, certs: Path, tokens_file: Path, h1_upstream, h2c_upstream, tmp_path_factory):
    config = write_proxy_config(
        tmp_path_factory.mktemp("fault-proxy"), certs=certs, upstream_port=h1_upstream.port,
        grpc_upstream_port=h2c_upstream.port, tokens_file=tokens_file, upstream_timeout=f"{UPSTREAM_TIMEOUT_S:g}s",
    )
    proxy = start_proxy_process(binary, config)
    # Descriptors before any client or upstream connection: every case returns to this.
    proxy.idle_fds = settled_fds(proxy.proc.pid)
    yield proxy
    proxy.stop()


@pytest.fixture
def proxy_under_fault(fault_proxy, h1_upstream, h2c_upstream):
    """The module's proxy with no upstream connection left from an earlier case."""
    assert fault_proxy.proc.poll() is None, f"the proxy died\n{fault_proxy.describe()}"
    for upstream in (h1_upstream, h2c_upstream):
        upstream.arm(None)
        upstream.drop_all()
    pid = fault_proxy.proc.pid
    assert wait_until(lambda: open_fds(pid) <= fault_proxy.idle_fds, 8), (open_fds(pid), fault_proxy.idle_fds)
    return fault_proxy


# --- requests -------------------------------------------------------------------------------

TRACE_BODY = trace_request(2).SerializeToString()


def http_export(proxy: Proxy, ca_file: str, token: str, timeout: float = 10) -> requests.Response:
    """One OTLP/HTTP export on its own connection; the body is read and the connection closed
    (a kept Response would otherwise hold its socket open and look like a leak in the proxy)."""
    with requests.Session() as session:
        response = session.post(
            f"{proxy.url}/v1/traces", data=TRACE_BODY, verify=ca_file, timeout=timeout,
            headers={
                "content-type": "application/x-protobuf", "authorization": f"Bearer {token}", "connection": "close",
            },
        )
        response.close()
        return response


def grpc_export(proxy: Proxy, ca_file: str, token: str):
    return h2_request(
        proxy.grpc_port, ca_file, grpc_request_headers(proxy.grpc_port, token), grpc_framed(TRACE_BODY), timeout=10
    )


def assert_recovers(proxy: Proxy, ca_file: str, token: str) -> None:
    response = http_export(proxy, ca_file, token)
    assert response.status_code == 200, (response.status_code, response.content)
    reply = grpc_export(proxy, ca_file, token)
    assert (reply.status, reply.grpc_status) == (200, 0), (reply.headers, reply.trailers, reply.reset_code)


def assert_503_retry_after(response: requests.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.content)
    assert response.headers.get("retry-after") == "1"


# --- the receiver refuses, resets, stalls ------------------------------------------------------


def test_upstreams_refuse_connections_503_retry_after_and_grpc_14_then_recover(
    proxy_under_fault, h1_upstream, h2c_upstream, ca_file, tokens
):
    proxy = proxy_under_fault
    baseline = Baseline(proxy, proxy.idle_fds)
    logs = LogWindow(proxy)
    h1_upstream.pause()
    h2c_upstream.pause()
    try:
        assert_503_retry_after(http_export(proxy, ca_file, tokens.plain))
        reply = grpc_export(proxy, ca_file, tokens.plain)
        assert (reply.status, reply.grpc_status, reply.ended_on_headers) == (200, 14, True), reply
    finally:
        h1_upstream.resume()
        h2c_upstream.resume()
    assert logs.wait_for("upstream unavailable") and logs.wait_for("gRPC upstream unavailable"), logs.text()
    assert "connection refused" in logs.text().lower(), logs.text()
    assert_recovers(proxy, ca_file, tokens.plain)
    baseline.assert_no_leak(h1_upstream, h2c_upstream)


def test_http1_upstream_resets_after_reading_request_503(proxy_under_fault, h1_upstream, h2c_upstream, ca_file, tokens):
    proxy = proxy_under_fault
    baseline = Baseline(proxy, proxy.idle_fds)
    logs = LogWindow(proxy)
    h1_upstream.arm("reset_after_request")
    assert_503_retry_after(http_export(proxy, ca_file, tokens.plain))
    assert logs.wait_for("upstream closed before responding"), logs.text()
    assert_recovers(proxy, ca_file, tokens.plain)
    baseline.assert_no_leak(h1_upstream, h2c_upstream)


def test_http1_upstream_resets_mid_response_client_sees_truncation_not_success(
    proxy_under_fault, h1_upstream, h2c_upstream, ca_file, tokens
):
    """Once the receiver's 200 head went to the client, the only honest signal left is closing the
    connection before the body ends: the client must see an error, never a short 200."""
    proxy = proxy_under_fault
    baseline = Baseline(proxy, proxy.idle_fds)
    h1_upstream.arm("reset_mid_response")
    with pytest.raises(requests.exceptions.RequestException):
        response = http_export(proxy, ca_file, tokens.plain)
        response.raise_for_status()
        assert len(response.content) == 100  # reading the body must fail before this
    assert_recovers(proxy, ca_file, tokens.plain)
    baseline.assert_no_leak(h1_upstream, h2c_upstream)


@pytest.mark.parametrize("fault", ["reset_after_request", "reset_mid_response", "drop_mid_response"])
def test_h2c_upstream_resets_grpc_14(proxy_under_fault, h1_upstream, h2c_upstream, ca_file, tokens, fault):
    """A reset before the response, or after the response HEADERS but before any message, is 14
    UNAVAILABLE in trailers (which exporters retry), never INTERNAL or CANCELLED from a relayed reset."""
    proxy = proxy_under_fault
    baseline = Baseline(proxy, proxy.idle_fds)
    logs = LogWindow(proxy)
    h2c_upstream.arm(fault)
    reply = grpc_export(proxy, ca_file, tokens.plain)
    assert reply.status == 200, reply
    assert reply.reset_code is None, f"the stream was reset ({reply.reset_code}) instead of ending with a status"
    assert reply.grpc_status == 14, (reply.headers, reply.trailers)
    assert logs.wait_for("gRPC upstream stream closed before"), logs.text()
    assert_recovers(proxy, ca_file, tokens.plain)
    baseline.assert_no_leak(h1_upstream, h2c_upstream)


def test_grpcio_client_upstream_reset_mid_response_unavailable(proxy_under_fault, h1_upstream, h2c_upstream, ca_file, tokens):
    """The same through grpcio, as the SDK's exporter sees it."""
    import grpc

    proxy = proxy_under_fault
    baseline = Baseline(proxy, proxy.idle_fds)
    h2c_upstream.arm("reset_mid_response")
    channel = grpc_channel(proxy.grpc_port, ca_file)
    try:
        with pytest.raises(grpc.RpcError) as failure:
            export_traces(channel, trace_request(1), bearer_metadata(tokens.plain))
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE, failure.value
        export_traces(channel, trace_request(1), bearer_metadata(tokens.plain))
    finally:
        channel.close()
    baseline.assert_no_leak(h1_upstream, h2c_upstream)


def test_upstreams_stall_504_and_grpc_4_upstream_side_closed(proxy_under_fault, h1_upstream, h2c_upstream, ca_file, tokens):
    proxy = proxy_under_fault
    baseline = Baseline(proxy, proxy.idle_fds)
    logs = LogWindow(proxy)
    h1_upstream.arm("hold")
    started = time.monotonic()
    response = http_export(proxy, ca_file, tokens.plain)
    elapsed = time.monotonic() - started
    assert response.status_code == 504, (response.status_code, response.content)
    assert UPSTREAM_TIMEOUT_S * 0.9 <= elapsed < UPSTREAM_TIMEOUT_S + 2, elapsed
    # The stalled connection is closed, not returned to the pool.
    assert h1_upstream.wait_for(lambda u: u.closed_by_proxy >= 1, 3), "the proxy kept the stalled connection"

    h2c_upstream.arm("hold")
    started = time.monotonic()
    reply = grpc_export(proxy, ca_file, tokens.plain)
    elapsed = time.monotonic() - started
    assert (reply.status, reply.grpc_status, reply.ended_on_headers) == (200, 4, True), reply
    assert UPSTREAM_TIMEOUT_S * 0.9 <= elapsed < UPSTREAM_TIMEOUT_S + 2, elapsed
    # The stream is cancelled at the receiver; the multiplexed connection stays.
    assert h2c_upstream.wait_for(lambda u: u.resets_from_proxy, 3), "the proxy never cancelled the stalled stream"
    assert h2c_upstream.resets_from_proxy[-1] == ErrorCodes.CANCEL
    assert logs.text().count("upstream timed out") == 2, logs.text()
    assert_recovers(proxy, ca_file, tokens.plain)
    baseline.assert_no_leak(h1_upstream, h2c_upstream)


def test_http1_upstream_ambiguous_response_framing_503_connection_closed(
    proxy_under_fault, h1_upstream, h2c_upstream, ca_file, tokens
):
    """A receiver answering with Content-Length and Transfer-Encoding: the proxy does not guess where
    that response ends; the client gets a retryable 503 and the connection is not reused."""
    proxy = proxy_under_fault
    baseline = Baseline(proxy, proxy.idle_fds)
    h1_upstream.arm("ambiguous_response")
    closed_before = h1_upstream.closed_by_proxy
    response = http_export(proxy, ca_file, tokens.plain)
    assert_503_retry_after(response)
    assert h1_upstream.wait_for(lambda u: u.closed_by_proxy > closed_before, 3), "the ambiguous connection was kept"
    assert_recovers(proxy, ca_file, tokens.plain)
    baseline.assert_no_leak(h1_upstream, h2c_upstream)


def test_http1_keep_alive_second_request_stalls_504_after_the_full_timeout(
    proxy_under_fault, h1_upstream, h2c_upstream, ca_file, tokens
):
    """The upstream timeout of a request is counted from that request, not from an earlier one on the
    same keep-alive client connection (the proxy keeps one response timer per connection)."""
    proxy = proxy_under_fault
    with requests.Session() as session:
        headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {tokens.plain}"}
        first = session.post(f"{proxy.url}/v1/traces", data=TRACE_BODY, verify=ca_file, timeout=10, headers=headers)
        assert first.status_code == 200, (first.status_code, first.content)
        time.sleep(UPSTREAM_TIMEOUT_S * 0.6)
        h1_upstream.arm("hold")
        started = time.monotonic()
        second = session.post(f"{proxy.url}/v1/traces", data=TRACE_BODY, verify=ca_file, timeout=10, headers=headers)
        elapsed = time.monotonic() - started
        second.close()
    assert second.status_code == 504, (second.status_code, second.content)
    assert UPSTREAM_TIMEOUT_S * 0.9 <= elapsed < UPSTREAM_TIMEOUT_S + 2, elapsed
    assert_recovers(proxy, ca_file, tokens.plain)


def test_upstreams_stall_mid_response_client_told_after_timeout_upstream_side_closed(
    proxy_under_fault, h1_upstream, h2c_upstream, ca_file, tokens
):
    """The receiver sends its response head and part of the body, then nothing. Once it has been
    silent for upstream.timeout the proxy gives up: over HTTP/1.1 the client's connection is closed
    before the body's declared length (never a hang, never a short 200 read as complete); a gRPC
    call that has only whole messages ends with 14 in trailers, which exporters retry."""
    proxy = proxy_under_fault
    baseline = Baseline(proxy, proxy.idle_fds)
    logs = LogWindow(proxy)
    h1_upstream.arm("stall_mid_response")
    started = time.monotonic()
    with pytest.raises(requests.exceptions.RequestException):
        response = http_export(proxy, ca_file, tokens.plain)
        response.raise_for_status()
        assert len(response.content) == 100  # reading the body must fail before this
    elapsed = time.monotonic() - started
    assert UPSTREAM_TIMEOUT_S * 0.9 <= elapsed < UPSTREAM_TIMEOUT_S + 2, elapsed
    assert h1_upstream.wait_for(lambda u: u.closed_by_proxy >= 1, 3), "the proxy kept the stalled connection"

    h2c_upstream.arm("stall_mid_response")
    started = time.monotonic()
    reply = grpc_export(proxy, ca_file, tokens.plain)
    elapsed = time.monotonic() - started
    assert reply.reset_code is None, f"the stream was reset ({reply.reset_code}) instead of ending with a status"
    assert (reply.status, reply.grpc_status) == (200, 14), reply
    assert UPSTREAM_TIMEOUT_S * 0.9 <= elapsed < UPSTREAM_TIMEOUT_S + 2, elapsed
    assert h2c_upstream.wait_for(lambda u: u.resets_from_proxy, 3), "the proxy never cancelled the stalled stream"
    assert h2c_upstream.resets_from_proxy[-1] == ErrorCodes.CANCEL
    assert logs.text().count("upstream stalled mid-response") == 2, logs.text()
    assert_recovers(proxy, ca_file, tokens.plain)
    baseline.assert_no_leak(h1_upstream, h2c_upstream)


# --- GOAWAY ---------------------------------------------------------------------------------


def test_h2c_graceful_goaway_in_flight_stream_completes_next_uses_new_connection(
    proxy_under_fault, h1_upstream, h2c_upstream, ca_file, tokens
):
    proxy = proxy_under_fault
    baseline = Baseline(proxy, proxy.idle_fds)
    h2c_upstream.arm("goaway_graceful")
    first = grpc_export(proxy, ca_file, tokens.plain)
    assert (first.status, first.grpc_status) == (200, 0), (first.headers, first.trailers, first.reset_code)
    # The receiver keeps the old connection open for another second: the proxy must not use it.
    # Several calls, so each event loop's pool (one per loop) serves some.
    for _ in range(4):
        reply = grpc_export(proxy, ca_file, tokens.plain)
        assert (reply.status, reply.grpc_status) == (200, 0), (reply.headers, reply.trailers, reply.reset_code)
    assert h2c_upstream.requests_after_goaway == 0, "a stream was opened on a connection after its GOAWAY"
    baseline.assert_no_leak(h1_upstream, h2c_upstream)


def test_h2c_goaway_with_error_refused_stream_grpc_14(proxy_under_fault, h1_upstream, h2c_upstream, ca_file, tokens):
    proxy = proxy_under_fault
    baseline = Baseline(proxy, proxy.idle_fds)
    h2c_upstream.arm("goaway_error")
    reply = grpc_export(proxy, ca_file, tokens.plain)
    assert (reply.status, reply.grpc_status, reply.reset_code) == (200, 14, None), (reply.headers, reply.trailers, reply.reset_code)
    assert_recovers(proxy, ca_file, tokens.plain)
    baseline.assert_no_leak(h1_upstream, h2c_upstream)


# --- clients vanish -------------------------------------------------------------------------


def abort(sock) -> None:
    """Drops a client connection the way a crashed client does: TCP RST, no TLS close_notify."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def h1_request_head(token: str, length: int) -> bytes:
    return (
        f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("moment", ["body_streaming", "awaiting_response"])
def test_http1_client_vanishes_upstream_connection_closed(
    proxy_under_fault, h1_upstream, h2c_upstream, ca_file, tokens, moment
):
    proxy = proxy_under_fault
    baseline = Baseline(proxy, proxy.idle_fds)
    logs = LogWindow(proxy)
    h1_upstream.arm("hold")
    requests_before, closed_before = h1_upstream.requests, h1_upstream.closed_by_proxy
    sock = tls_connect(proxy.port, ca_file, alpn=("http/1.1",))
    if moment == "body_streaming":
        sock.sendall(h1_request_head(tokens.plain, 1 << 20) + b"\0" * 65536)
    else:
        sock.sendall(h1_request_head(tokens.plain, len(TRACE_BODY)) + TRACE_BODY)
    assert h1_upstream.wait_for(lambda u: u.requests > requests_before, 5), "the request never reached the upstream"
    abort(sock)
    assert h1_upstream.wait_for(lambda u: u.closed_by_proxy > closed_before, 3), (
        "the upstream connection of a vanished client was left open"
    )
    # One access log line, `client_gone`: not also a 400 for the body the decoder saw cut short.
    assert logs.wait_for('"outcome":"client_gone"'), logs.text()
    time.sleep(0.3)
    assert '"status":400' not in logs.text(), logs.text()
    assert_recovers(proxy, ca_file, tokens.plain)
    baseline.assert_no_leak(h1_upstream, h2c_upstream)


@pytest.mark.parametrize("moment", ["body_streaming", "awaiting_response"])
def test_grpc_client_vanishes_upstream_stream_cancelled(
    proxy_under_fault, h1_upstream, h2c_upstream, ca_file, tokens, moment
):
    proxy = proxy_under_fault
    baseline = Baseline(proxy, proxy.idle_fds)
    h2c_upstream.arm("hold")
    requests_before = h2c_upstream.requests
    resets_before = len(h2c_upstream.resets_from_proxy)
    sock = tls_connect(proxy.grpc_port, ca_file)
    client = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
    client.initiate_connection()
    client.send_headers(1, grpc_request_headers(proxy.grpc_port, tokens.plain))
    if moment == "body_streaming":
        client.send_data(1, grpc_framed(b"\0" * 100_000)[:16384])
    else:
        client.send_data(1, grpc_framed(TRACE_BODY), end_stream=True)
    sock.sendall(client.data_to_send())
    assert h2c_upstream.wait_for(lambda u: u.requests > requests_before, 5), "the request never reached the upstream"
    abort(sock)
    assert h2c_upstream.wait_for(lambda u: len(u.resets_from_proxy) > resets_before, 3), (
        "the upstream stream of a vanished client was not cancelled"
    )
    assert h2c_upstream.resets_from_proxy[-1] == ErrorCodes.CANCEL
    assert_recovers(proxy, ca_file, tokens.plain)
    baseline.assert_no_leak(h1_upstream, h2c_upstream)


# --- the receiver restarts --------------------------------------------------------------------


def test_sink_restart_on_same_ports_only_retryable_errors_then_first_request_succeeds(
    start_proxy, start_sink, ca_file, tokens
):
    """While the sink is down clients get only 503 / 14; once it is back, the first request of each
    kind succeeds: no stale pooled connection surfaces as an error."""
    http_port, grpc_port = free_port(), free_port()
    sink = start_sink(http_port, grpc_port)
    proxy = start_proxy(http_port, grpc_upstream_port=grpc_port)
    baseline = Baseline(proxy)
    assert_recovers(proxy, ca_file, tokens.plain)  # both pools now hold a connection

    seen: list[tuple[str, object]] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                seen.append(("http", http_export(proxy, ca_file, tokens.plain).status_code))
            except requests.RequestException as error:
                seen.append(("http", repr(error)))
            try:
                seen.append(("grpc", grpc_export(proxy, ca_file, tokens.plain).grpc_status))
            except (OSError, TimeoutError) as error:
                seen.append(("grpc", repr(error)))

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        time.sleep(0.3)
        sink.stop()
        time.sleep(0.5)
        restarted = start_sink(http_port, grpc_port)
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join(timeout=20)
    allowed = {("http", 200), ("http", 503), ("grpc", 0), ("grpc", 14)}
    unexpected = [outcome for outcome in seen if outcome not in allowed]
    assert not unexpected, f"non-retryable outcomes during the restart: {unexpected}"
    assert ("http", 503) in seen and ("grpc", 14) in seen, "the sink was never seen down"
    # Idle now; the first request of each kind after the restart must succeed.
    assert_recovers(proxy, ca_file, tokens.plain)
    assert restarted.stats()["tenants"]["team-a"]["requests"] >= 2
    restarted.stop()
    assert wait_until(lambda: open_fds(baseline.pid) <= baseline.fds, 8), (open_fds(baseline.pid), baseline.fds)
    growth = (rss_kib(baseline.pid) - baseline.rss) / 1024
    print(f"fds back to {open_fds(baseline.pid)} (baseline {baseline.fds}), RSS {growth:+.2f} MiB")
    assert growth < RSS_BOUND_MIB, f"RSS grew by {growth:.1f} MiB"


# --- the proxy runs out of file descriptors ------------------------------------------------------


def test_fd_limit_accept_fails_no_spin_logged_once_then_accepts_again(start_proxy, start_sink, ca_file, tokens):
    sink = start_sink()
    proxy = start_proxy(sink.port, grpc_upstream_port=sink.require_grpc_port())
    pid = proxy.proc.pid
    baseline = Baseline(proxy)
    logs = LogWindow(proxy)
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    limit = baseline.fds + 12
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))
    clients: list[socket.socket] = []
    try:
        for _ in range(40):
            clients.append(socket.create_connection(("127.0.0.1", proxy.port), timeout=5))
        assert wait_until(lambda: open_fds(pid) >= limit, 5), (open_fds(pid), limit)
        time.sleep(0.5)
        cpu_before = cpu_seconds(pid)
        time.sleep(3)
        cpu_used = cpu_seconds(pid) - cpu_before
        assert cpu_used < 0.6, f"the proxy used {cpu_used:.2f} s of CPU in 3 s while accept kept failing\n{logs.text()[-3000:]}"
        assert proxy.proc.poll() is None, proxy.describe()
        failures = [line for line in logs.text().splitlines() if "accept failed" in line]
        assert 1 <= len(failures) <= 3, logs.text()[-3000:]
        assert "too many open files" in failures[0].lower(), failures[0]
    finally:
        for client in clients:
            client.close()
    # Every queued connection is accepted and found closed; then normal service with the same limit.
    assert wait_until(lambda: open_fds(pid) <= baseline.fds, 10), (open_fds(pid), baseline.fds)
    assert resource.prlimit(pid, resource.RLIMIT_NOFILE)[0] == limit
    assert_recovers(proxy, ca_file, tokens.plain)
    assert logs.wait_for("accepting again"), logs.text()[-3000:]
    sink.stop()
    assert wait_until(lambda: open_fds(pid) <= baseline.fds, 8), (open_fds(pid), baseline.fds)
    growth = (rss_kib(pid) - baseline.rss) / 1024
    print(f"fds back to {open_fds(pid)} (baseline {baseline.fds}, limit {limit}), RSS {growth:+.2f} MiB, CPU {cpu_used:.2f} s in 3 s")
    assert growth < RSS_BOUND_MIB * 2, f"RSS grew by {growth:.1f} MiB"
