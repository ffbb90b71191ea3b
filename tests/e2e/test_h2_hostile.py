"""Hostile HTTP/2 smoke tests with raw frames over TLS (ALPN h2): rapid reset, CONTINUATION
flood and a request with 10,000 tiny headers. Each time the attacker's connection must be closed
by the proxy (GOAWAY or EOF within a few seconds), the proxy must stay up, and a well-behaved
OpenTelemetry gRPC exporter running at the same time must keep succeeding."""

from __future__ import annotations

import threading
import time

import pytest
from hpack import Encoder, HeaderTuple
from opentelemetry.sdk.trace.export import SpanExportResult

from grpc_helpers import (
    CANCEL,
    CONTINUATION,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    RST_STREAM,
    TRACE_EXPORT,
    RawH2,
    frame,
    grpc_request_headers,
    grpc_span_exporter,
    stateless_header_block,
)
from otel_helpers import make_spans

CLOSE_WITHIN = 5.0  # seconds the proxy has to close the attacker's connection
ATTACK_SECONDS = 1.0  # the attack is repeated on new connections for at least this long
MAX_ROUNDS = 200


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


@pytest.fixture
def proxy(start_proxy, sink):
    """A proxy of its own per attack, so a crash or a leftover stays with this test."""
    return start_proxy(sink.port, grpc_upstream_port=sink.require_grpc_port())


@pytest.fixture
def attack(proxy, sink, ca_file, tokens):
    """Runs an attack (a function of a fresh raw connection) again and again for at least
    ATTACK_SECONDS while a good client exports, then checks what every test shares: each
    attacking connection was closed by the proxy within CLOSE_WITHIN seconds, the proxy is
    still running, and every export of the good client succeeded, also during the attack."""
    sink.require_grpc_port()

    def run(send_attack) -> list[RawH2]:
        attackers: list[RawH2] = []
        with GoodClient(proxy.grpc_port, ca_file, tokens.hashed) as good:
            started = time.monotonic()
            while not attackers or (time.monotonic() - started < ATTACK_SECONDS and len(attackers) < MAX_ROUNDS):
                attacker = RawH2(proxy.grpc_port, ca_file)
                attackers.append(attacker)
                try:
                    send_attack(attacker)
                    closed = attacker.wait_closed(CLOSE_WITHIN)
                    kinds = sorted({kind for kind, _, _, _ in attacker.frames})
                    assert closed, (
                        f"round {len(attackers)}: the proxy kept the attacker's connection open"
                        f" for {CLOSE_WITHIN}s (frame types seen: {kinds})"
                    )
                finally:
                    attacker.close()
                assert proxy.proc.poll() is None, f"the proxy died\n{proxy.describe()}"
            ended = time.monotonic()
            during = good.successes_between(started, ended)
            results = good.finish()
        assert all(result == SpanExportResult.SUCCESS for result in results), results
        assert during >= 2, f"only {during} good exports finished during {ended - started:.1f}s of attack"
        assert sink.tenant("team-b")["spans"] == 2 * len(results)
        assert proxy.proc.poll() is None, f"the proxy died\n{proxy.describe()}"
        return attackers

    return run


def test_h2_rapid_reset_5000_streams_connection_closed_good_client_unaffected(attack, proxy, tokens):
    block = stateless_header_block(grpc_request_headers(proxy.grpc_port, tokens.plain, TRACE_EXPORT))

    def rapid_reset(attacker: RawH2) -> None:
        batch = 100
        for first in range(0, 5000, batch):
            data = b"".join(
                frame(HEADERS, END_HEADERS, stream, block) + frame(RST_STREAM, 0, stream, CANCEL.to_bytes(4, "big"))
                for stream in range(2 * first + 1, 2 * (first + batch) + 1, 2)
            )
            if not attacker.send(data):
                return

    attack(rapid_reset)


def test_h2_continuation_flood_connection_closed_good_client_unaffected(attack, proxy, tokens):
    start = stateless_header_block(grpc_request_headers(proxy.grpc_port, tokens.plain, TRACE_EXPORT))
    fragment = stateless_header_block([("x-c", "v")])

    def continuation_flood(attacker: RawH2) -> None:
        if not attacker.send(frame(HEADERS, END_STREAM, 1, start)):  # no END_HEADERS
            return
        for _ in range(10):
            if not attacker.send(frame(CONTINUATION, 0, 1, fragment) * 1000):
                return

    attack(continuation_flood)


def test_h2_ten_thousand_tiny_headers_connection_closed_good_client_unaffected(attack, proxy, tokens):
    # One HEADERS frame of about 10 KB: the request, one header added to the HPACK dynamic
    # table, then 9,999 one-byte references to it (index 62, the newest dynamic entry).
    encoder = Encoder()
    block = encoder.encode(grpc_request_headers(proxy.grpc_port, tokens.plain, TRACE_EXPORT))
    block += encoder.encode([HeaderTuple("x-t", "1")])  # incremental indexing: becomes index 62
    block += bytes([0x80 | 62]) * 9_999

    def tiny_headers(attacker: RawH2) -> None:
        attacker.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))

    attack(tiny_headers)
