"""Hostile HTTP/2 suite with raw frames over TLS (ALPN h2), against a proxy of its own per test.

Each attack is repeated on fresh connections for a while (ATTACK_SECONDS, shorter for the cheap
single-stream cases) while an OpenTelemetry SDK gRPC exporter exports in a loop on its own
connection, and each test asserts:

- the attacker is cut off as that case expects: GOAWAY with a given error code (connection-level
  abuse), or RST_STREAM with a given code on the offending stream while the connection keeps
  serving (stream-level errors: the connection answers a PING afterwards and sends no GOAWAY), or,
  for floods the attacker never reads, the connection closed (the GOAWAY may be lost in the
  unread backlog);
- the proxy's resident memory (VmRSS, sampled every 20 ms during the attack) never grows by
  RSS_BOUND or more above what it was when the attack began;
- every export of the well-behaved exporter succeeds, also during the attack, and nothing the
  attacker sent with a refused stream reaches the receiver (the attacker's token is team-a's).

The same header abuse over OTLP/HTTP (forwarded as HTTP/1.1) is in test_h1_desync.py; here the
requests are gRPC calls for the h2c receiver.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Callable

import pytest
import requests
from hpack import Decoder, Encoder, HeaderTuple
from opentelemetry.sdk.trace.export import SpanExportResult

from grpc_helpers import (
    ACK,
    CANCEL,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    GOAWAY,
    HEADERS,
    INTERNAL_ERROR,
    PING,
    PROTOCOL_ERROR,
    RST_STREAM,
    SETTINGS,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    STREAM_CLOSED,
    TRACE_EXPORT,
    WINDOW_UPDATE,
    RawH2,
    frame,
    grpc_framed,
    grpc_request_headers,
    grpc_span_exporter,
    settings_payload,
    stateless_header_block,
    trace_request,
)
from otel_helpers import make_spans
from process_probes import rss_kib

CLOSE_WITHIN = 5.0  # seconds the proxy has to cut the attacker off (GOAWAY, RST_STREAM or close)
ATTACK_SECONDS = 1.0  # a connection-level attack is repeated on new connections for this long
QUICK_SECONDS = 0.3  # stream-level cases: a few rounds are enough, each round is one stream
MAX_ROUNDS = 200
# The proxy runs at about 40 MiB RSS (debug build) when an attack starts. An abuse that is not bounded shows as tens
# to hundreds of MiB within a second: 10,000 header fields decoded per stream on 100 streams,
# a stream table that never empties, PING/SETTINGS ACKs queued without end, 100,000 frames each
# turned into an event. What a bounded connection may hold (its TLS record buffers, the nghttp2
# session with a 4 KiB HPACK table, at most its flow-control windows, 256 KiB per stream) for the
# one attacking connection open at a time, plus the good exporter and allocator slack, stays far
# below 16 MiB.
RSS_BOUND = 16 * 1024 * 1024
# How many stream errors the proxy answers with RST_STREAM before it treats the connection as
# abusive (HTTP2SessionSettings.maxProvokedResets); the loops below provoke twice as many.
PROVOKED_RESET_BURST = 1000


def rss_bytes(pid: int) -> int:
    return rss_kib(pid) * 1024


class RSSWatch:
    """Samples a process's VmRSS every 20 ms on a thread; `peak_growth` is the highest sample
    minus the one taken at the start."""

    def __init__(self, pid: int):
        self.pid = pid
        self.start = rss_bytes(pid)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, AssertionError):
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, rss_bytes(self.pid))
        return self.peak - self.start

    @property
    def peak_growth(self) -> int:
        return self.peak - self.start


class GoodClient:
    """An SDK gRPC span exporter (its own connection, team-b's token) exporting in a loop on a
    thread until stopped; records when each export finished and its result."""

    def __init__(self, port: int, ca_file: str, token: str):
        self.exporter = grpc_span_exporter(port, ca_file, token, timeout=10)
        self.results: list[tuple[float, SpanExportResult]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._spans = make_spans(2)

    def _export(self) -> None:
        result = self.exporter.export(self._spans)
        self.results.append((time.monotonic(), result))

    def __enter__(self) -> GoodClient:
        # One export before the attack, so the exporter's connection is already up.
        self._export()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._export()
            self._stop.wait(0.02)

    def successes_between(self, start: float, end: float) -> int:
        return sum(1 for at, result in list(self.results) if start <= at <= end and result == SpanExportResult.SUCCESS)

    def finish(self) -> list[SpanExportResult]:
        self._stop.set()
        self._thread.join(timeout=30)
        self._export()  # and one more after the attack
        return [result for _, result in self.results]

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.exporter.shutdown()


# --- what each case expects -------------------------------------------------------------------


def frames_seen(attacker: RawH2) -> list[str]:
    names = {DATA: "DATA", HEADERS: "HEADERS", RST_STREAM: "RST_STREAM", SETTINGS: "SETTINGS", PING: "PING",
             GOAWAY: "GOAWAY", WINDOW_UPDATE: "WINDOW_UPDATE"}
    return sorted({names.get(kind, hex(kind)) for kind, _, _, _ in attacker.frames})


def expect_goaway(code: int) -> Callable[[RawH2], None]:
    """Connection-level: a GOAWAY with `code`, then the connection closes."""

    def check(attacker: RawH2) -> None:
        attacker.wait_closed(CLOSE_WITHIN)
        assert attacker.goaway_error is not None, (
            f"no GOAWAY within {CLOSE_WITHIN}s (eof={attacker.eof}, frames: {frames_seen(attacker)})")
        assert attacker.goaway_error == code, f"GOAWAY code {attacker.goaway_error:#x}, expected {code:#x}"
        assert wait_eof(attacker, CLOSE_WITHIN), "the connection stayed open after the GOAWAY"

    return check


def expect_closed(attacker: RawH2) -> None:
    """For floods the attacker never reads: GOAWAY or EOF (a GOAWAY may sit behind the unread
    backlog, or be lost to the reset a close with unread bytes causes)."""
    assert attacker.wait_closed(CLOSE_WITHIN), (
        f"the proxy kept the attacker's connection open for {CLOSE_WITHIN}s (frames: {frames_seen(attacker)})")
    assert wait_eof(attacker, CLOSE_WITHIN), "the connection stayed open after the GOAWAY"


def wait_eof(attacker: RawH2, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not attacker.eof and time.monotonic() < deadline:
        attacker._read(timeout=0.2)
    return attacker.eof


def expect_stream_reset(stream: int, code: int) -> Callable[[RawH2], None]:
    """Stream-level: RST_STREAM with `code` on `stream`, no GOAWAY, and the connection still
    answers a PING afterwards."""

    def check(attacker: RawH2) -> None:
        reset = wait_reset(attacker, stream, CLOSE_WITHIN)
        assert reset is not None, (
            f"no RST_STREAM on stream {stream} within {CLOSE_WITHIN}s (goaway={attacker.goaway_error}, "
            f"eof={attacker.eof}, frames: {frames_seen(attacker)})")
        assert reset == code, f"RST_STREAM code {reset:#x} on stream {stream}, expected {code:#x}"
        assert_connection_serves(attacker)

    return check


def wait_reset(attacker: RawH2, stream: int, seconds: float) -> int | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not attacker.closed:
        for kind, _, sid, payload in attacker.frames:
            if kind == RST_STREAM and sid == stream:
                return int.from_bytes(payload[:4], "big")
        attacker._read(timeout=0.1)
    for kind, _, sid, payload in attacker.frames:
        if kind == RST_STREAM and sid == stream:
            return int.from_bytes(payload[:4], "big")
    return None


def assert_connection_serves(attacker: RawH2) -> None:
    """A PING is answered and no GOAWAY came: the stream error did not end the connection."""
    token = b"hostile!"
    assert attacker.send(frame(PING, 0, 0, token)), "the proxy closed the connection after a stream error"
    deadline = time.monotonic() + CLOSE_WITHIN
    while time.monotonic() < deadline:
        if any(kind == PING and flags & ACK and payload == token for kind, flags, _, payload in attacker.frames):
            break
        assert not attacker.closed, (
            f"the connection was closed after a stream-level error (goaway={attacker.goaway_error})")
        attacker._read(timeout=0.1)
    else:
        raise AssertionError("no PING ACK after the stream error")
    assert attacker.goaway_error is None, f"GOAWAY {attacker.goaway_error:#x} after a stream-level error"


# --- the fixtures -----------------------------------------------------------------------------


@pytest.fixture
def proxy(start_proxy, sink):
    """A proxy of its own per attack, so a crash or a leftover stays with this test."""
    return start_proxy(sink.port, grpc_upstream_port=sink.require_grpc_port())


@dataclass
class AttackReport:
    attackers: list[RawH2]
    rss_growth: int


@pytest.fixture
def attack(proxy, sink, ca_file, tokens):
    """Runs an attack (a function of a fresh raw connection) again and again for at least
    `seconds` while a good client exports, checks each round with `check`, and then what every
    test shares: the RSS bound, the proxy still running, every export of the good client
    succeeded (also during the attack), and nothing of the attacker's (team-a) reached the
    receiver unless `attacker_exports` says how many requests may."""
    sink.require_grpc_port()

    def run(send_attack, check, seconds: float = ATTACK_SECONDS, attacker_exports: int = 0,
            settings: bytes = b"", receive_buffer: int | None = None) -> AttackReport:
        attackers: list[RawH2] = []
        with GoodClient(proxy.grpc_port, ca_file, tokens.hashed) as good:
            watch = RSSWatch(proxy.proc.pid)
            started = time.monotonic()
            try:
                while not attackers or (time.monotonic() - started < seconds and len(attackers) < MAX_ROUNDS):
                    attacker = RawH2(proxy.grpc_port, ca_file, settings=settings, receive_buffer=receive_buffer)
                    attackers.append(attacker)
                    try:
                        send_attack(attacker)
                        try:
                            check(attacker)
                        except AssertionError as failure:
                            raise AssertionError(f"round {len(attackers)}: {failure}") from None
                    finally:
                        attacker.close()
                    assert proxy.proc.poll() is None, f"the proxy died\n{proxy.describe()}"
            finally:
                growth = watch.stop()
            ended = time.monotonic()
            during = good.successes_between(started, ended)
            results = good.finish()
        print(f"\nrss: start {watch.start / 2**20:.1f} MiB, peak growth {growth / 2**20:.2f} MiB, "
              f"{len(attackers)} rounds in {ended - started:.2f}s")
        assert growth < RSS_BOUND, (
            f"the proxy's RSS grew by {growth / 2**20:.1f} MiB during the attack (bound {RSS_BOUND / 2**20:.0f} MiB)")
        assert all(result == SpanExportResult.SUCCESS for result in results), results
        min_during = 2 if ended - started >= 0.5 else 1
        assert during >= min_during, f"only {during} good exports finished during {ended - started:.1f}s of attack"
        assert sink.tenant("team-b")["spans"] == 2 * len(results)
        if attacker_exports == 0:
            assert sink.tenant("team-a")["requests"] == 0, "a refused stream reached the receiver"
        assert proxy.proc.poll() is None, f"the proxy died\n{proxy.describe()}"
        return AttackReport(attackers, growth)

    return run


# --- building blocks --------------------------------------------------------------------------


def request_block(port: int, token: str, *extra: tuple[str, str]) -> bytes:
    return stateless_header_block(grpc_request_headers(port, token, TRACE_EXPORT, *extra))


EXPORT_BODY = grpc_framed(trace_request(1).SerializeToString())


def send_unread(attacker: RawH2, data: bytes, seconds: float = 10.0) -> None:
    """Writes `data` without ever reading what the proxy sends, until it is all written, the
    proxy closes, or `seconds` pass (the proxy stopped reading: the check then decides)."""
    view = memoryview(data)
    deadline = time.monotonic() + seconds
    attacker.sock.settimeout(0.5)
    while view and time.monotonic() < deadline:
        try:
            sent = attacker.sock.send(view[:16384])
            view = view[sent:]
        except (socket.timeout, ssl.SSLWantWriteError):
            continue
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            return


def sends(*chunks: Callable[[], bytes] | bytes) -> Callable[[RawH2], None]:
    def attack(attacker: RawH2) -> None:
        for chunk in chunks:
            if not attacker.send(chunk() if callable(chunk) else chunk):
                return

    return attack


# --- connection-level abuse: GOAWAY -----------------------------------------------------------


def test_h2_rapid_reset_5000_streams_goaway_good_client_unaffected(attack, proxy, tokens):
    block = request_block(proxy.grpc_port, tokens.plain)

    def rapid_reset(attacker: RawH2) -> None:
        batch = 100
        for first in range(0, 5000, batch):
            data = b"".join(
                frame(HEADERS, END_HEADERS, stream, block) + frame(RST_STREAM, 0, stream, CANCEL.to_bytes(4, "big"))
                for stream in range(2 * first + 1, 2 * (first + batch) + 1, 2)
            )
            if not attacker.send(data):
                return

    # Requests that were started before the limit struck may reach the receiver: not checked here.
    # nghttp2's own rapid-reset limit (Debian's backport) ends the session with INTERNAL_ERROR.
    attack(rapid_reset, expect_goaway(INTERNAL_ERROR), attacker_exports=-1)


def provoked_resets(offence: Callable[[int, bytes], bytes], block: bytes, count: int = 2 * PROVOKED_RESET_BURST):
    """Opens `count` streams, each followed at once by the frame(s) that make the proxy reset it."""

    def attack(attacker: RawH2) -> None:
        batch = 100
        for first in range(0, count, batch):
            data = b"".join(offence(stream, block) for stream in range(2 * first + 1, 2 * (first + batch) + 1, 2))
            if not attacker.send(data):
                return

    return attack


PROVOKED = {
    # WINDOW_UPDATE with a zero increment on an open stream. RFC 9113 §6.9 makes it a stream error;
    # nghttp2 ends the whole connection at the first one: GOAWAY(PROTOCOL_ERROR).
    "zero window update": (lambda stream, block: (
        frame(HEADERS, END_HEADERS, stream, block) + frame(WINDOW_UPDATE, 0, stream, (0).to_bytes(4, "big"))),
        PROTOCOL_ERROR),
    # DATA after the stream's END_STREAM. A stream error STREAM_CLOSED in RFC 9113 §5.1; nghttp2
    # ends the connection at the first one: GOAWAY(STREAM_CLOSED).
    "data after end stream": (lambda stream, block: (
        frame(HEADERS, END_HEADERS | END_STREAM, stream, block) + frame(DATA, 0, stream, b"x")),
        STREAM_CLOSED),
    # content-length 1 with 5 bytes of DATA: malformed (§8.1.1), a stream error nghttp2 answers with
    # RST_STREAM(PROTOCOL_ERROR) each time; past the proxy's burst of such resets the connection
    # ends with GOAWAY(ENHANCE_YOUR_CALM).
    "bad content-length": (lambda stream, block: (
        frame(HEADERS, END_HEADERS, stream, block + stateless_header_block([("content-length", "1")]))
        + frame(DATA, END_STREAM, stream, b"\x00\x00\x00\x00\x00")),
        ENHANCE_YOUR_CALM),
}


@pytest.mark.parametrize("case", list(PROVOKED), ids=lambda case: case.replace(" ", "_"))
def test_h2_server_provoked_resets_in_a_loop_goaway(attack, proxy, tokens, case):
    """Each stream provokes an error from the proxy (the "MadeYouReset" pattern: the peer does not
    reset, it makes the server do it, so a rapid-reset limit on received RST_STREAM never fires),
    2,000 streams in a row: the connection ends with the GOAWAY the case names."""
    offence, code = PROVOKED[case]
    block = request_block(proxy.grpc_port, tokens.plain)
    # Streams answered before the limit struck may reach the receiver: not checked here.
    report = attack(provoked_resets(offence, block), expect_goaway(code), attacker_exports=-1)
    if code == ENHANCE_YOUR_CALM:
        # Stream-level first: each offence got its own RST_STREAM until the burst was spent.
        resets = [sum(1 for kind, _, _, _ in attacker.frames if kind == RST_STREAM) for attacker in report.attackers]
        assert min(resets) >= PROVOKED_RESET_BURST // 2, resets


def test_h2_continuation_flood_goaway_good_client_unaffected(attack, proxy, tokens):
    start = request_block(proxy.grpc_port, tokens.plain)
    fragment = stateless_header_block([("x-c", "v")])
    # nghttp2's CONTINUATION limit (Debian's backport) returns an error the proxy answers with
    # GOAWAY(PROTOCOL_ERROR), before the header count limit is reached.
    attack(sends(frame(HEADERS, END_STREAM, 1, start), *[frame(CONTINUATION, 0, 1, fragment) * 1000] * 10),
           expect_goaway(PROTOCOL_ERROR))


def hpack_one_large_entry_block(port: int, token: str) -> bytes:
    """The request, one 4,000-byte value added to the HPACK dynamic table, then 1,000 one-byte
    references to it: 4 MB of header list from about 5 KB on the wire."""
    encoder = Encoder()
    block = encoder.encode(grpc_request_headers(port, token, TRACE_EXPORT))
    block += encoder.encode([HeaderTuple("x-big", "b" * 4000)])  # incremental indexing: index 62
    return block + bytes([0x80 | 62]) * 1000


def hpack_tiny_fields_block(port: int, token: str, name: str, value: str, count: int) -> bytes:
    """The request, one small field added to the dynamic table, then `count` one-byte references."""
    encoder = Encoder()
    block = encoder.encode(grpc_request_headers(port, token, TRACE_EXPORT))
    block += encoder.encode([HeaderTuple(name, value)])
    return block + bytes([0x80 | 62]) * count


HPACK_BOMBS = {
    "one large entry referenced 1000 times": lambda port, token: hpack_one_large_entry_block(port, token),
    "ten thousand 1-byte indexed fields": lambda port, token: hpack_tiny_fields_block(port, token, "x-t", "1", 9_999),
    "ten thousand cookie crumbs": lambda port, token: hpack_tiny_fields_block(port, token, "cookie", "a=1", 9_999),
}


@pytest.mark.parametrize("bomb", list(HPACK_BOMBS), ids=lambda bomb: bomb.replace(" ", "_"))
def test_h2_hpack_bomb_goaway_enhance_your_calm(attack, proxy, tokens, bomb):
    block = HPACK_BOMBS[bomb](proxy.grpc_port, tokens.plain)
    attack(sends(frame(HEADERS, END_HEADERS | END_STREAM, 1, block)), expect_goaway(ENHANCE_YOUR_CALM))


FLOODS = {
    # 200 entries in one SETTINGS frame (the proxy allows 32).
    "settings with 200 entries": (
        lambda: frame(SETTINGS, 0, 0, settings_payload(*[(SETTINGS_MAX_CONCURRENT_STREAMS, 100)] * 200)),
        expect_goaway(ENHANCE_YOUR_CALM)),
    # A CONTINUATION with no HEADERS before it.
    "continuation without headers": (
        lambda: frame(CONTINUATION, END_HEADERS, 1, stateless_header_block([("x-c", "v")])),
        expect_goaway(PROTOCOL_ERROR)),
}


@pytest.mark.parametrize("case", list(FLOODS), ids=lambda case: case.replace(" ", "_"))
def test_h2_bad_control_frame_goaway(attack, case):
    make, check = FLOODS[case]
    attack(sends(make()), check)


def test_h2_empty_continuation_flood_goaway(attack, proxy, tokens):
    block = request_block(proxy.grpc_port, tokens.plain)
    attack(sends(frame(HEADERS, END_STREAM, 1, block), frame(CONTINUATION, 0, 1) * 10_000),
           expect_goaway(PROTOCOL_ERROR))


def test_h2_empty_data_flood_goaway_enhance_your_calm(attack, proxy, tokens):
    """100,000 empty DATA frames (no END_STREAM) on an open stream: each is legal, none carries
    anything, and each costs the proxy a frame's work."""
    block = request_block(proxy.grpc_port, tokens.plain)
    attack(sends(frame(HEADERS, END_HEADERS, 1, block), *[frame(DATA, 0, 1) * 10_000] * 10),
           expect_goaway(ENHANCE_YOUR_CALM), attacker_exports=-1)


@pytest.mark.parametrize("kind", ["PING", "SETTINGS"])
def test_h2_ack_flood_without_reading_connection_closed(attack, kind):
    """400,000 PINGs (or empty SETTINGS) written without ever reading the ACKs the proxy owes, on a
    connection with a 4 KiB receive buffer: once the kernel buffers are full the ACKs back up in
    the proxy, and past 1,000 queued ACKs it ends the connection."""
    one = frame(PING, 0, 0, b"12345678") if kind == "PING" else frame(SETTINGS, 0, 0)

    def flood(attacker: RawH2) -> None:
        send_unread(attacker, one * 400_000)

    attack(flood, expect_closed, receive_buffer=4096)


# --- stream-level abuse: RST_STREAM, the connection keeps serving -----------------------------


def h(port: int, token: str, *fields: tuple[str, str], drop: str | None = None, first: tuple[str, str] | None = None):
    fields_ = [field for field in grpc_request_headers(port, token, TRACE_EXPORT) if field[0] != drop]
    if first is not None:
        fields_ = [first] + fields_
    return fields_ + list(fields)


MALFORMED_HEADERS = {
    "unknown pseudo-header": lambda p, t: h(p, t, (":foo", "bar")),
    "duplicated :path": lambda p, t: h(p, t, (":path", TRACE_EXPORT)),
    "missing :path": lambda p, t: h(p, t, drop=":path"),
    "missing :method": lambda p, t: h(p, t, drop=":method"),
    "pseudo-header after a regular header": lambda p, t: h(p, t, drop=":scheme", first=("x-first", "1"))
    + [(":scheme", "https")],
    "connection: keep-alive": lambda p, t: h(p, t, ("connection", "keep-alive")),
    "transfer-encoding: chunked": lambda p, t: h(p, t, ("transfer-encoding", "chunked")),
    "keep-alive": lambda p, t: h(p, t, ("keep-alive", "timeout=5")),
    "proxy-connection": lambda p, t: h(p, t, ("proxy-connection", "keep-alive")),
    "upgrade: h2c": lambda p, t: h(p, t, ("upgrade", "h2c")),
    "te: gzip": lambda p, t: [(k, "gzip" if k == "te" else v) for k, v in h(p, t)],
    "uppercase name": lambda p, t: h(p, t, ("X-Custom", "1")),
    "CR in value": lambda p, t: h(p, t, ("x-custom", "a\rb")),
    "LF in value": lambda p, t: h(p, t, ("x-custom", "a\nx-injected: 1")),
    "NUL in value": lambda p, t: h(p, t, ("x-custom", "a\x00b")),
}


@pytest.mark.parametrize("case", list(MALFORMED_HEADERS), ids=lambda case: case.replace(" ", "_").replace(":", ""))
def test_h2_malformed_request_headers_rst_stream_protocol_error_connection_kept(attack, proxy, tokens, case):
    block = stateless_header_block(MALFORMED_HEADERS[case](proxy.grpc_port, tokens.plain))
    attack(sends(frame(HEADERS, END_HEADERS, 1, block), frame(DATA, END_STREAM, 1, EXPORT_BODY)),
           expect_stream_reset(1, PROTOCOL_ERROR), seconds=QUICK_SECONDS)


def test_h2_pseudo_header_in_trailers_rst_stream_protocol_error_connection_kept(attack, proxy, tokens):
    block = request_block(proxy.grpc_port, tokens.plain)
    trailers = stateless_header_block([(":path", "/v1/logs"), ("x-trailer", "1")])
    attack(sends(frame(HEADERS, END_HEADERS, 1, block), frame(DATA, 0, 1, EXPORT_BODY),
                 frame(HEADERS, END_HEADERS | END_STREAM, 1, trailers)),
           expect_stream_reset(1, PROTOCOL_ERROR), seconds=QUICK_SECONDS)


@pytest.mark.parametrize("declared", [len(EXPORT_BODY) + 10, len(EXPORT_BODY) - 3], ids=["longer", "shorter"])
def test_h2_content_length_not_matching_data_rst_stream_protocol_error_connection_kept(attack, proxy, tokens, declared):
    block = request_block(proxy.grpc_port, tokens.plain, ("content-length", str(declared)))
    attack(sends(frame(HEADERS, END_HEADERS, 1, block), frame(DATA, END_STREAM, 1, EXPORT_BODY)),
           expect_stream_reset(1, PROTOCOL_ERROR), seconds=QUICK_SECONDS)


def test_h2_more_streams_than_allowed_goaway_protocol_error_first_100_processed(attack, proxy, tokens):
    """The proxy advertises 100 concurrent streams and the client has acknowledged that: opening
    120 at once is a connection error in nghttp2 (RFC 9113 §5.1.2 allows either), GOAWAY
    (PROTOCOL_ERROR) naming stream 199, the last of the 100 it took."""
    block = request_block(proxy.grpc_port, tokens.plain)
    streams = [2 * index + 1 for index in range(120)]

    def too_many(attacker: RawH2) -> None:
        attacker.send(b"".join(frame(HEADERS, END_HEADERS, stream, block) for stream in streams))

    def check(attacker: RawH2) -> None:
        expect_goaway(PROTOCOL_ERROR)(attacker)
        last = [int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                for kind, _, _, payload in attacker.frames if kind == GOAWAY][-1]
        assert last == 199, f"GOAWAY names stream {last} as the last processed"

    # The 100 admitted requests never end their bodies: nothing completes at the receiver.
    attack(too_many, check, seconds=QUICK_SECONDS)


def test_h2_one_byte_data_frames_export_served_and_counted(attack, proxy, sink, tokens):
    """A gRPC export whose body (about 4 KB) arrives as one DATA frame per byte is legal: it is
    relayed in bounded memory, answered with grpc-status 0 and counted by the receiver."""
    spans = trace_request(40)
    body = grpc_framed(spans.SerializeToString())
    assert len(body) > 3000
    block = request_block(proxy.grpc_port, tokens.plain)
    frames = b"".join(frame(DATA, 0, 1, body[index:index + 1]) for index in range(len(body))) + frame(DATA, END_STREAM, 1)

    def check(attacker: RawH2) -> None:
        def ended() -> bool:
            return any(sid == 1 and (kind == RST_STREAM or kind == HEADERS and flags & END_STREAM)
                       for kind, flags, sid, _ in attacker.frames)

        deadline = time.monotonic() + CLOSE_WITHIN
        while time.monotonic() < deadline and not attacker.closed and not ended():
            attacker._read(timeout=0.1)
        assert not any(kind in (RST_STREAM, GOAWAY) for kind, _, _, _ in attacker.frames), frames_seen(attacker)
        decoder = Decoder()
        fields = [dict(decoder.decode(payload)) for kind, _, sid, payload in attacker.frames if kind == HEADERS]
        assert fields and fields[-1].get("grpc-status") == "0", f"the export was not answered OK: {fields}"

    report = attack(sends(frame(HEADERS, END_HEADERS, 1, block), frames), check, seconds=QUICK_SECONDS,
                    attacker_exports=-1)
    assert sink.tenant("team-a")["spans"] == 40 * len(report.attackers)


# --- the zero-window slow reader --------------------------------------------------------------


def open_streams_gauge(proxy) -> float:
    text = requests.get(proxy.admin_url + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("otlp_auth_proxy_open_streams "):
            return float(line.split()[1])
    return 0.0


ZERO_WINDOW_IDLE = 2.0  # the proxy's http.idle_timeout in this test, seconds


def test_h2_zero_window_slow_reader_streams_reset_after_idle_timeout_memory_bounded(
    start_proxy, sink, ca_file, tokens
):
    """Clients that set their stream window to 0 and never open it, while pinging to look alive:
    each export is forwarded and answered by the receiver, but its response DATA can never be
    sent. The proxy must not hold those streams (and the response bytes) forever: each is reset
    with CANCEL once nothing could be sent on it for http.idle_timeout, and the open-streams
    gauge returns to zero."""
    proxy = start_proxy(sink.port, grpc_upstream_port=sink.require_grpc_port(), idle_timeout=f"{ZERO_WINDOW_IDLE:g}s")
    block = request_block(proxy.grpc_port, tokens.plain)
    streams = [2 * index + 1 for index in range(50)]
    with GoodClient(proxy.grpc_port, ca_file, tokens.hashed) as good:
        watch = RSSWatch(proxy.proc.pid)
        attackers = [RawH2(proxy.grpc_port, ca_file, settings=settings_payload((SETTINGS_INITIAL_WINDOW_SIZE, 0)))
                     for _ in range(4)]
        try:
            started = time.monotonic()
            for attacker in attackers:
                attacker.send(b"".join(frame(HEADERS, END_HEADERS, stream, block)
                                       + frame(DATA, END_STREAM, stream, EXPORT_BODY) for stream in streams))
            deadline = started + ZERO_WINDOW_IDLE + 2 * CLOSE_WITHIN
            pending = {id(attacker): set(streams) for attacker in attackers}
            while time.monotonic() < deadline and any(pending.values()):
                for attacker in attackers:
                    attacker.send(frame(PING, 0, 0, b"alive..."))  # never idle, never reading DATA
                    attacker._read(timeout=0.05)
                    for kind, _, sid, payload in attacker.frames:
                        if kind == RST_STREAM:
                            assert int.from_bytes(payload[:4], "big") == CANCEL
                            pending[id(attacker)].discard(sid)
                    if attacker.closed:
                        pending[id(attacker)].clear()
                time.sleep(0.2)
            elapsed = time.monotonic() - started
            left = sum(len(streams) for streams in pending.values())
            assert left == 0, f"{left} stalled streams still open after {elapsed:.1f}s"
            assert elapsed >= ZERO_WINDOW_IDLE * 0.9, f"streams reset after {elapsed:.1f}s, before the idle timeout"
            data_frames = sum(1 for attacker in attackers for kind, _, _, _ in attacker.frames if kind == DATA)
            assert data_frames == 0, "the proxy sent DATA past a zero window"
            responses = sum(1 for attacker in attackers for kind, _, _, _ in attacker.frames if kind == HEADERS)
            assert responses == 4 * len(streams), "every export was answered with response HEADERS"
        finally:
            growth = watch.stop()
            for attacker in attackers:
                attacker.close()
        results = good.finish()
    print(f"\nrss: start {watch.start / 2**20:.1f} MiB, peak growth {growth / 2**20:.2f} MiB")
    assert growth < RSS_BOUND
    assert all(result == SpanExportResult.SUCCESS for result in results), results
    deadline = time.monotonic() + CLOSE_WITHIN
    while open_streams_gauge(proxy) != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_streams_gauge(proxy) == 0
    assert sink.tenant("team-a")["requests"] == 4 * len(streams)
    assert proxy.proc.poll() is None, proxy.describe()


# --- closed connections give their memory back ------------------------------------------------

CONNECTIONS_LEAK_BOUND = 4 * 1024 * 1024


def test_h2_300_closed_connections_release_their_memory(proxy, ca_file):
    """Each HTTP/2 connection holds an nghttp2 session of about 25 KiB: 300 connections opened
    (preface and SETTINGS exchanged) and closed one after another must leave the RSS where it
    was, give or take allocator slack (4 MiB; leaking the handler and its session with every
    connection, as the proxy once did, is over 7 MiB)."""
    def churn(count: int) -> None:
        for _ in range(count):
            RawH2(proxy.grpc_port, ca_file).close()

    churn(30)  # warm up: TLS and allocator caches
    time.sleep(0.3)
    before = rss_bytes(proxy.proc.pid)
    churn(300)
    time.sleep(0.5)
    growth = rss_bytes(proxy.proc.pid) - before
    print(f"\nrss growth after 300 closed connections: {growth / 2**20:.2f} MiB")
    assert growth < CONNECTIONS_LEAK_BOUND, f"RSS grew by {growth / 2**20:.1f} MiB over 300 closed connections"


def test_h2_memory_of_a_closed_burst_goes_back_to_the_system(proxy, ca_file):
    """600 HTTP/2 connections held open together grow the RSS by ~25 MiB; the allocator keeps those
    pages after they close unless the proxy hands them back (it checks every 5 s). Within 15 s of
    the burst closing, at least three quarters of the growth must be gone (without the trim the RSS
    stays at the burst's peak)."""
    pid = proxy.proc.pid
    before = rss_bytes(pid)
    burst = [RawH2(proxy.grpc_port, ca_file) for _ in range(600)]
    time.sleep(0.3)
    peak = rss_bytes(pid)
    growth = peak - before
    assert growth > 12 * 2**20, f"600 open connections grew the RSS by only {growth / 2**20:.1f} MiB"
    for connection in burst:
        connection.close()
    deadline = time.monotonic() + 15
    after = peak
    while time.monotonic() < deadline:
        time.sleep(0.5)
        after = rss_bytes(pid)
        if after - before <= growth / 4:
            break
    print(f"\nrss before {before / 2**20:.1f} MiB, with 600 connections {peak / 2**20:.1f} MiB, "
          f"after they closed {after / 2**20:.1f} MiB")
    assert after - before <= growth / 4, (
        f"RSS still {(after - before) / 2**20:.1f} MiB above where it was, 15 s after the burst closed "
        f"(the burst added {growth / 2**20:.1f} MiB)")
    assert proxy.proc.poll() is None, proxy.describe()
