"""HTTP/1.1 request smuggling (desync) suite, with the exact bytes written on a raw TLS socket
(ALPN http/1.1), and the same hostile headers arriving over HTTP/2 (raw HPACK blocks), which the
proxy forwards as HTTP/1.1.

Every hostile request carries a valid bearer token, so authentication is not what stops it. The
upstream is a recording raw-socket HTTP/1.1 server started per test: it keeps every byte the proxy
sent it and parses them strictly, so each test checks at the upstream that nothing was forwarded
(zero bytes), or for a body that turns bad mid-stream, that no complete request reached it.

Cases where the proxy does not yet behave as required stay here as strict xfails naming what
happens now, so the gap is recorded and the suite turns red when it is fixed without the marker
being removed.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

import pytest
from hpack import Decoder

from h1_helpers import CLOSE_WITHIN, Exchange, h1_exchange
from grpc_helpers import (
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    RST_STREAM,
    RawH2,
    frame,
    stateless_header_block,
    tls_connect,
)

SETTLE = 0.3  # seconds given to anything the proxy might still forward after it answered
BODY = b"hello"

TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


# --- a recording HTTP/1.1 upstream ------------------------------------------------------------


@dataclass
class UpstreamRequest:
    method: str
    target: str
    headers: list[tuple[str, str]]  # names lower-cased, in the order received
    body: bytes

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


@dataclass
class UpstreamConnection:
    raw: bytearray = field(default_factory=bytearray)
    requests: list[UpstreamRequest] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ended_mid_request: bool = False


class AmbiguousMessage(Exception):
    pass


class RecordingUpstream:
    """A raw-socket HTTP/1.1 server on 127.0.0.1:0 standing in for the receiver. Records every
    byte per connection, parses requests strictly (CRLF only, token names, no whitespace before
    the colon, at most one of Content-Length / Transfer-Encoding: chunked, exactly one framing),
    answers each complete request 200 with the request target as the body, and closes a
    connection whose bytes are ambiguous (recorded in `errors`)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections: list[UpstreamConnection] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def raw(self) -> bytes:
        with self._lock:
            return b"".join(bytes(connection.raw) for connection in self.connections)

    @property
    def requests(self) -> list[UpstreamRequest]:
        with self._lock:
            return [request for connection in self.connections for request in connection.requests]

    @property
    def errors(self) -> list[str]:
        with self._lock:
            return [error for connection in self.connections for error in connection.errors]

    def describe(self) -> str:
        return f"upstream received {self.raw[:600]!r}; requests={len(self.requests)} errors={self.errors}"

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            record = UpstreamConnection()
            with self._lock:
                self.connections.append(record)
            threading.Thread(target=self._serve, args=(conn, record), daemon=True).start()

    def _serve(self, conn: socket.socket, record: UpstreamConnection) -> None:
        buffer = bytearray()
        conn.settimeout(0.2)
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    if buffer:
                        with self._lock:
                            record.ended_mid_request = True
                    return
                with self._lock:
                    record.raw += data
                buffer += data
                while True:
                    try:
                        parsed = parse_request(buffer)
                    except AmbiguousMessage as error:
                        with self._lock:
                            record.errors.append(str(error))
                        return
                    if parsed is None:
                        break
                    request, used = parsed
                    del buffer[:used]
                    with self._lock:
                        record.requests.append(request)
                    body = request.target.encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                    )
        except OSError:
            return
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)


def parse_request(buffer: bytearray) -> tuple[UpstreamRequest, int] | None:
    """One complete request from the front of `buffer` and the bytes it used; None if more bytes
    are needed; AmbiguousMessage for anything a strict HTTP/1.1 recipient could read two ways."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > 65536:
            raise AmbiguousMessage("no end of head within 64 KiB")
        return None
    head = bytes(buffer[:end])
    if b"\n" in head.replace(b"\r\n", b"") or b"\r" in head.replace(b"\r\n", b"") or b"\x00" in head:
        raise AmbiguousMessage(f"bare CR, LF or NUL in head {head!r}")
    lines = head.split(b"\r\n")
    request_line = re.fullmatch(rb"([A-Z]+) (\S+) HTTP/1\.1", lines[0])
    if not request_line:
        raise AmbiguousMessage(f"bad request line {lines[0]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN_RE.match(name):
            raise AmbiguousMessage(f"bad header line {line!r}")
        headers.append((name.decode().lower(), value.strip(b" \t").decode("latin-1")))
    lengths = [value for key, value in headers if key == "content-length"]
    codings = [value for key, value in headers if key == "transfer-encoding"]
    if lengths and codings:
        raise AmbiguousMessage("both Content-Length and Transfer-Encoding")
    if len(lengths) > 1 or len(codings) > 1:
        raise AmbiguousMessage("repeated framing header")
    position = end + 4
    if codings:
        if codings[0].lower() != "chunked":
            raise AmbiguousMessage(f"transfer coding {codings[0]!r}")
        body = bytearray()
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            size_text = bytes(buffer[position:line_end]).split(b";")[0]
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,15}", size_text):
                raise AmbiguousMessage(f"bad chunk size {size_text!r}")
            size = int(size_text, 16)
            position = line_end + 2
            if size == 0:
                trailer_end = buffer.find(b"\r\n\r\n", position - 2)
                if trailer_end < 0:
                    return None
                position = trailer_end + 4
                break
            if len(buffer) < position + size + 2:
                return None
            body += buffer[position : position + size]
            if buffer[position + size : position + size + 2] != b"\r\n":
                raise AmbiguousMessage("chunk data not followed by CRLF")
            position += size + 2
        return UpstreamRequest(request_line[1].decode(), request_line[2].decode(), headers, bytes(body)), position
    length = 0
    if lengths:
        if not re.fullmatch(r"[0-9]{1,15}", lengths[0]):
            raise AmbiguousMessage(f"bad Content-Length {lengths[0]!r}")
        length = int(lengths[0])
    if len(buffer) < position + length:
        return None
    body = bytes(buffer[position : position + length])
    return UpstreamRequest(request_line[1].decode(), request_line[2].decode(), headers, body), position + length


def request(token: str, *lines: bytes, body: bytes = BODY, start: bytes = b"POST /v1/traces HTTP/1.1",
            content_length: bool = True) -> bytes:
    """A request with CRLF line ends: the request line, Host, the bearer token, the content type,
    `lines` as given, Content-Length of `body` unless told not to, then the body."""
    head = [start, b"Host: 127.0.0.1", b"Authorization: Bearer " + token.encode(),
            b"Content-Type: application/x-protobuf", *lines]
    if content_length:
        head.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def chunked(*chunks: bytes) -> bytes:
    return b"".join(hex(len(chunk))[2:].encode() + b"\r\n" + chunk + b"\r\n" for chunk in chunks) + b"0\r\n\r\n"


# --- fixtures and assertions ------------------------------------------------------------------


@pytest.fixture
def upstream():
    server = RecordingUpstream()
    yield server
    server.stop()


@pytest.fixture
def proxy(start_proxy, upstream):
    """A proxy of its own in front of the recording upstream (also as its gRPC upstream, which no
    test here reaches)."""
    return start_proxy(upstream.port)


@pytest.fixture
def token(tokens) -> str:
    return tokens.plain  # tenant team-a


def assert_refused(exchange: Exchange, allowed: tuple[int, ...] = (400,)) -> None:
    assert exchange.statuses and exchange.statuses[0] in allowed, (
        f"expected {allowed} for the hostile request: {exchange.describe()}")
    assert exchange.closed, f"the proxy kept the connection open after refusing: {exchange.describe()}"


def assert_nothing_forwarded(upstream: RecordingUpstream) -> None:
    time.sleep(SETTLE)
    assert upstream.raw == b"", f"the upstream received bytes: {upstream.describe()}"


def assert_no_complete_request(upstream: RecordingUpstream) -> None:
    """For a body that goes bad after the head was forwarded: the upstream may have seen the head
    and some body, but never a complete request, and its connection was cut."""
    time.sleep(SETTLE)
    assert upstream.requests == [], f"a complete request reached the upstream: {upstream.describe()}"
    assert upstream.errors == [], f"the upstream received ambiguous bytes: {upstream.describe()}"
    if upstream.raw:
        connections = [c for c in upstream.connections if c.raw]
        assert all(c.ended_mid_request for c in connections), (
            f"the proxy left a half request open upstream: {upstream.describe()}")


# --- controls: the harness sees a normal request go through -----------------------------------


def test_control_valid_content_length_request_200_kept_open_forwarded_once(proxy, upstream, token, ca_file):
    exchange = h1_exchange(proxy.port, ca_file, request(token), expect_close=False)
    assert exchange.statuses == [200], exchange.describe()
    assert not exchange.closed, exchange.describe()
    time.sleep(SETTLE)
    [forwarded] = upstream.requests
    assert (forwarded.method, forwarded.target, forwarded.body) == ("POST", "/v1/traces", BODY)
    assert forwarded.values("x-scope-orgid") == ["team-a"]
    assert upstream.errors == []


def test_control_valid_chunked_request_200_body_forwarded_whole(proxy, upstream, token, ca_file):
    payload = request(token, b"Transfer-Encoding: chunked", body=chunked(b"hel", b"lo"), content_length=False)
    exchange = h1_exchange(proxy.port, ca_file, payload, expect_close=False)
    assert exchange.statuses == [200], exchange.describe()
    time.sleep(SETTLE)
    [forwarded] = upstream.requests
    assert forwarded.body == BODY
    assert upstream.errors == []


# --- hostile heads: 400 and close, nothing forwarded ------------------------------------------

CL_TE_SMUGGLED = b"0\r\n\r\nPOST /v1/logs?smuggled=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"


def hostile(token: str, case: str) -> bytes:
    """The bytes of each hostile request by name (all carry the valid bearer token)."""
    te_body = chunked(BODY)
    cl = b"Content-Length: " + str(len(te_body)).encode()
    r = lambda *lines, **kw: request(token, *lines, **kw)  # noqa: E731
    cases = {
        # Content-Length and Transfer-Encoding together, in both orders, with a request smuggled
        # after the chunked body end for a front end that would believe Content-Length.
        "CL.TE": r(b"Content-Length: " + str(len(CL_TE_SMUGGLED)).encode(), b"Transfer-Encoding: chunked",
                   body=CL_TE_SMUGGLED, content_length=False),
        "TE.CL": r(b"Transfer-Encoding: chunked", b"Content-Length: 4",
                   body=b"5c\r\nPOST /v1/logs?smuggled=1 HTTP/1.1\r\nContent-Length: 15\r\n\r\nx=1\r\n0\r\n\r\n",
                   content_length=False),
        # Transfer-Encoding obfuscations, each next to a Content-Length.
        "TE chunked-identity": r(b"Transfer-Encoding: chunked, identity", cl, body=te_body, content_length=False),
        "TE folded onto previous line": r(b"X-Pad: 1", b" Transfer-Encoding: chunked", cl, body=te_body,
                                          content_length=False),
        "TE xchunked": r(b"Transfer-Encoding: xchunked", cl, body=te_body, content_length=False),
        "TE tab before value": r(b"Transfer-Encoding:\tchunked", cl, body=te_body, content_length=False),
        "TE duplicated": r(b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity", cl, body=te_body,
                           content_length=False),
        "TE on HTTP/1.0": r(b"Transfer-Encoding: chunked", cl, body=te_body, content_length=False,
                            start=b"POST /v1/traces HTTP/1.0"),
        "TE on HTTP/1.0 without Content-Length": r(b"Transfer-Encoding: chunked", body=te_body,
                                                   content_length=False, start=b"POST /v1/traces HTTP/1.0"),
        "TE space before colon": r(b"Transfer-Encoding : chunked", cl, body=te_body, content_length=False),
        # Content-Length abuse.
        "CL duplicated equal": r(b"Content-Length: 5", b"Content-Length: 5", content_length=False),
        "CL duplicated different": r(b"Content-Length: 5", b"Content-Length: 6", body=b"hello!",
                                     content_length=False),
        "CL list in one header": r(b"Content-Length: 5, 5", content_length=False),
        "CL plus sign": r(b"Content-Length: +5", content_length=False),
        "CL negative": r(b"Content-Length: -1", content_length=False),
        "CL hex": r(b"Content-Length: 0x5", content_length=False),
        "CL space before colon": r(b"Content-Length : 5", content_length=False),
        # Line structure.
        "obs-fold with space": r(b"X-Folded: first", b" second"),
        "obs-fold with tab": r(b"X-Folded: first", b"\tsecond"),
        "bare LF line ends": request(token, body=BODY).replace(b"\r\n", b"\n"),
        "bare LF after one header": r(b"X-A: 1\nX-B: 2"),
        "bare CR inside a header value": r(b"X-A: 1\rX-B: 2"),
        "bare CR as line end": r(b"X-A: 1\rContent-Length: 0"),
        "space before colon": r(b"X-Custom : 1"),
        "NUL in header value": r(b"X-A: a\x00b"),
        # Protocol switches the proxy never makes.
        "Upgrade h2c": r(b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c",
                         b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"),
        "Upgrade websocket": r(b"Connection: Upgrade", b"Upgrade: websocket", b"Sec-WebSocket-Version: 13",
                               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="),
    }
    return cases[case]


def xfail(reason: str):
    return pytest.mark.xfail(strict=True, reason=reason)


HOSTILE_HEADS = [
    "CL.TE",
    "TE.CL",
    "TE chunked-identity",
    "TE folded onto previous line",
    "TE xchunked",
    "TE tab before value",
    "TE duplicated",
    "TE on HTTP/1.0",
    "TE on HTTP/1.0 without Content-Length",
    "TE space before colon",
    "CL duplicated equal",
    "CL duplicated different",
    "CL list in one header",
    "CL plus sign",
    "CL negative",
    "CL hex",
    "CL space before colon",
    "obs-fold with space",
    "obs-fold with tab",
    "bare LF line ends",
    "bare LF after one header",
    "bare CR inside a header value",
    "bare CR as line end",
    "space before colon",
    "NUL in header value",
    "Upgrade h2c",
    "Upgrade websocket",
]

# Cases the proxy does not handle as required yet: name -> what happens now.
KNOWN_GAPS: dict[str, str] = {}


def hostile_params():
    for case in HOSTILE_HEADS:
        marks = [xfail(KNOWN_GAPS[case])] if case in KNOWN_GAPS else []
        yield pytest.param(case, id=case.replace(" ", "_").replace("/", ""), marks=marks)


@pytest.mark.parametrize("case", list(hostile_params()))
def test_h1_hostile_head_400_and_close_nothing_forwarded(proxy, upstream, token, case, ca_file):
    exchange = h1_exchange(proxy.port, ca_file, hostile(token, case))
    assert_refused(exchange)
    assert_nothing_forwarded(upstream)


def test_h1_content_length_over_int64_400_or_413_and_close_nothing_forwarded(proxy, upstream, token, ca_file):
    payload = request(token, b"Content-Length: 99999999999999999999999999", content_length=False)
    exchange = h1_exchange(proxy.port, ca_file, payload)
    assert_refused(exchange, allowed=(400, 413))
    assert_nothing_forwarded(upstream)


def test_h1_content_length_over_body_limit_413_and_close_nothing_forwarded(proxy, upstream, token, ca_file):
    payload = request(token, b"Content-Length: 1000000000000", content_length=False)
    exchange = h1_exchange(proxy.port, ca_file, payload)
    assert_refused(exchange, allowed=(413,))
    assert_nothing_forwarded(upstream)


# --- bad chunked bodies -----------------------------------------------------------------------

BAD_CHUNKS = {
    "chunk size negative": b"-1\r\nhello\r\n0\r\n\r\n",
    "chunk size 0x prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
    "chunk size overflow": b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "chunk data without CRLF": b"5\r\nhelloXX0\r\n\r\n",
    "chunk size with space": b"5 \r\nhello\r\n0\r\n\r\n",
    "chunk extension 100 KiB": b"5;" + b"a" * 100_000 + b"\r\nhello\r\n0\r\n\r\n",
    "chunk line ends bare LF": b"5\nhello\n0\n\n",
}

KNOWN_CHUNK_GAPS: dict[str, str] = {}


def chunk_params():
    for case in BAD_CHUNKS:
        marks = [xfail(KNOWN_CHUNK_GAPS[case])] if case in KNOWN_CHUNK_GAPS else []
        yield pytest.param(case, id=case.replace(" ", "_").replace("/", ""), marks=marks)


@pytest.mark.parametrize("case", list(chunk_params()))
def test_h1_bad_chunked_body_400_and_close_no_request_completed_upstream(proxy, upstream, token, case, ca_file):
    payload = request(token, b"Transfer-Encoding: chunked", body=BAD_CHUNKS[case], content_length=False)
    exchange = h1_exchange(proxy.port, ca_file, payload)
    assert_refused(exchange, allowed=(400, 413))
    assert_no_complete_request(upstream)


def test_h1_many_small_chunks_with_short_extensions_200_body_forwarded_whole(proxy, upstream, token, ca_file):
    """The framing budget that stops long chunk extensions leaves ordinary chunked bodies alone:
    2,000 chunks of 8 bytes, each with a short extension, arrive whole."""
    pieces = [b"%08d" % index for index in range(2000)]
    body = b"".join(b"8;n=v\r\n" + piece + b"\r\n" for piece in pieces) + b"0\r\n\r\n"
    payload = request(token, b"Transfer-Encoding: chunked", body=body, content_length=False)
    exchange = h1_exchange(proxy.port, ca_file, payload, expect_close=False)
    assert exchange.statuses == [200], exchange.describe()
    time.sleep(SETTLE)
    [forwarded] = upstream.requests
    assert forwarded.body == b"".join(pieces)
    assert upstream.errors == []


def test_h1_pipelined_valid_then_long_chunk_extension_second_answered_400(proxy, upstream, token, ca_file):
    second = request(token, b"Transfer-Encoding: chunked", body=BAD_CHUNKS["chunk extension 100 KiB"],
                     content_length=False, start=b"POST /v1/logs HTTP/1.1")
    exchange = h1_exchange(proxy.port, ca_file, request(token) + second, responses=2)
    assert exchange.statuses == [200, 400], exchange.describe()
    assert exchange.closed, exchange.describe()
    time.sleep(SETTLE)
    assert [(r.target, r.body) for r in upstream.requests] == [("/v1/traces", BODY)], upstream.describe()


def test_h1_chunked_body_turning_bad_after_head_forwarded_close_upstream_cut(proxy, upstream, token, ca_file):
    """The head and a good chunk arrive first (the proxy starts forwarding), the bad chunk size
    0.3 s later: the upstream must never see the request completed, its connection is cut."""
    payload = request(token, b"Transfer-Encoding: chunked", body=b"3\r\nhel\r\n", content_length=False)
    exchange = h1_exchange(proxy.port, ca_file, payload, rest=b"zz\r\nlo\r\n0\r\n\r\n")
    assert exchange.closed, exchange.describe()
    assert exchange.statuses in ([], [400]), exchange.describe()
    assert_no_complete_request(upstream)


def test_h1_chunked_trailer_tenant_header_never_reaches_upstream(proxy, upstream, token, ca_file):
    """A tenant header sent as a chunked trailer field must not reach the receiver, where it could
    be merged into the headers."""
    body = b"5\r\nhello\r\n0\r\nX-Scope-OrgID: team-evil\r\nAuthorization: Bearer evil\r\n\r\n"
    payload = request(token, b"Transfer-Encoding: chunked", b"Trailer: X-Scope-OrgID", body=body,
                      content_length=False)
    exchange = h1_exchange(proxy.port, ca_file, payload, expect_close=False)
    assert exchange.statuses in ([200], [400]), exchange.describe()
    time.sleep(SETTLE)
    assert b"team-evil" not in upstream.raw and b"Bearer evil" not in upstream.raw, upstream.describe()
    assert upstream.errors == [], upstream.describe()


# --- Connection: naming the proxy's own headers -----------------------------------------------


def test_h1_connection_names_tenant_and_authorization_upstream_gets_one_proxy_tenant(proxy, upstream, token, ca_file):
    payload = request(token, b"Connection: X-Scope-OrgID, Authorization")
    exchange = h1_exchange(proxy.port, ca_file, payload, expect_close=False)
    assert exchange.statuses == [200], exchange.describe()
    time.sleep(SETTLE)
    [forwarded] = upstream.requests
    assert forwarded.values("x-scope-orgid") == ["team-a"], forwarded.headers
    assert forwarded.values("authorization") == []
    assert forwarded.values("connection") == [] or "x-scope-orgid" not in forwarded.values("connection")[0].lower()
    assert upstream.errors == []


def test_h1_connection_names_tenant_with_client_tenant_sent_upstream_gets_proxy_value(proxy, upstream, token, ca_file):
    payload = request(token, b"X-Scope-OrgID: team-evil", b"Connection: keep-alive, X-Scope-OrgID",
                      b"x-scope-orgid: team-evil2")
    exchange = h1_exchange(proxy.port, ca_file, payload, expect_close=False)
    assert exchange.statuses == [200], exchange.describe()
    time.sleep(SETTLE)
    [forwarded] = upstream.requests
    assert forwarded.values("x-scope-orgid") == ["team-a"], forwarded.headers
    assert b"team-evil" not in upstream.raw


def test_h1_connection_names_content_length_framing_kept(proxy, upstream, token, ca_file):
    """`Connection: Content-Length` must not strip the framing header and leave the body to be
    read as the next request."""
    payload = request(token, b"Connection: Content-Length")
    exchange = h1_exchange(proxy.port, ca_file, payload, expect_close=False)
    assert exchange.statuses in ([200], [400]), exchange.describe()
    time.sleep(SETTLE)
    assert upstream.errors == [], upstream.describe()
    assert [r.body for r in upstream.requests] in ([BODY], []), upstream.describe()


# --- pipelining -------------------------------------------------------------------------------


def test_h1_pipelined_two_valid_requests_answered_in_order_both_forwarded(proxy, upstream, token, ca_file):
    payload = request(token) + request(token, start=b"POST /v1/logs HTTP/1.1", body=b"world")
    exchange = h1_exchange(proxy.port, ca_file, payload, responses=2, expect_close=False)
    assert exchange.statuses == [200, 200], exchange.describe()
    assert [response.body for response in exchange.responses] == [b"/v1/traces", b"/v1/logs"]
    time.sleep(SETTLE)
    assert [(r.target, r.body) for r in upstream.requests] == [("/v1/traces", BODY), ("/v1/logs", b"world")]
    assert upstream.errors == []


def pipelined_valid_then_cl_te(token: str) -> bytes:
    second = hostile(token, "CL.TE").replace(b"POST /v1/traces", b"POST /v1/metrics", 1)
    return request(token) + second


def test_h1_pipelined_valid_then_cl_te_smuggled_part_never_forwarded_connection_closed(
    proxy, upstream, token, ca_file
):
    exchange = h1_exchange(proxy.port, ca_file, pipelined_valid_then_cl_te(token), responses=2)
    assert exchange.statuses[:1] == [200], exchange.describe()
    assert exchange.statuses[1:] in ([], [400]), exchange.describe()
    assert exchange.closed, exchange.describe()
    time.sleep(SETTLE)
    assert [(r.target, r.body) for r in upstream.requests] == [("/v1/traces", BODY)], upstream.describe()
    assert b"/v1/metrics" not in upstream.raw and b"smuggled" not in upstream.raw, upstream.describe()
    assert upstream.errors == []


def test_h1_pipelined_valid_then_cl_te_second_answered_400(proxy, upstream, token, ca_file):
    exchange = h1_exchange(proxy.port, ca_file, pipelined_valid_then_cl_te(token), responses=2)
    assert exchange.statuses == [200, 400], exchange.describe()
    assert exchange.closed, exchange.describe()


def test_h1_body_longer_than_content_length_extra_bytes_not_forwarded(proxy, upstream, token, ca_file):
    """Content-Length 5 followed by 5 body bytes and then a garbage line: the garbage is the start
    of a next request (400 and close), never part of the first one upstream."""
    payload = request(token) + b"GARBAGE /v1/logs?smuggled=1 HTTP/9.9\r\n\r\n"
    exchange = h1_exchange(proxy.port, ca_file, payload, responses=2)
    assert exchange.statuses[:1] == [200], exchange.describe()
    assert exchange.statuses[1:] in ([], [400]), exchange.describe()
    assert exchange.closed, exchange.describe()
    time.sleep(SETTLE)
    assert [(r.target, r.body) for r in upstream.requests] == [("/v1/traces", BODY)], upstream.describe()
    assert b"smuggled" not in upstream.raw


# --- the same hostile headers over HTTP/2 (forwarded as HTTP/1.1) -----------------------------


def h2_base(port: int, token: str) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", f"127.0.0.1:{port}"),
        (":path", "/v1/traces"),
        ("content-type", "application/x-protobuf"),
        ("authorization", f"Bearer {token}"),
    ]


@dataclass
class H2Outcome:
    status: int | None
    reset: int | None  # RST_STREAM error code on stream 1
    goaway: int | None
    closed: bool

    @property
    def refused(self) -> bool:
        return self.reset is not None or self.goaway is not None or (self.status is not None and 400 <= self.status < 500)

    def describe(self) -> str:
        return f"status={self.status} reset={self.reset} goaway={self.goaway} closed={self.closed}"


def h2_raw_request(port: int, ca_file: str, headers: list[tuple[str, str]], body: bytes = BODY,
                   extra_data: bytes = b"") -> H2Outcome:
    """Stream 1 with a raw HPACK block (no client-side validation) and `body` (+ `extra_data`) as
    DATA; waits for the stream's fate."""
    connection = RawH2(port, ca_file)
    try:
        block = stateless_header_block(headers)
        flags = END_HEADERS | (0 if body or extra_data else END_STREAM)
        connection.send(frame(HEADERS, flags, 1, block))
        if body or extra_data:
            connection.send(frame(DATA, 0, 1, body))
            connection.send(frame(DATA, END_STREAM, 1, extra_data))
        return h2_stream_outcome(connection)
    finally:
        connection.close()


def h2_stream_outcome(connection: RawH2) -> H2Outcome:
    """Waits for the fate of stream 1: its response ends, it is reset, or the connection goes."""
    deadline = time.monotonic() + CLOSE_WITHIN
    outcome = H2Outcome(None, None, None, False)
    decoder = Decoder()
    seen = 0
    while time.monotonic() < deadline:
        connection._read(timeout=0.2)
        for kind, flags, stream, payload in connection.frames[seen:]:
            seen += 1
            if kind == HEADERS:
                fields = decoder.decode(payload)
                if stream == 1 and outcome.status is None:
                    outcome.status = int(dict(fields).get(":status", 0)) or None
                if stream == 1 and flags & END_STREAM:
                    return finish(outcome, connection)
            elif kind == DATA and stream == 1 and flags & END_STREAM:
                return finish(outcome, connection)
            elif kind == RST_STREAM and stream == 1:
                outcome.reset = int.from_bytes(payload[:4], "big")
                return finish(outcome, connection)
            elif kind == GOAWAY:
                outcome.goaway = int.from_bytes(payload[4:8], "big")
                return finish(outcome, connection)
        if connection.eof:
            outcome.closed = True
            return outcome
    return outcome


def finish(outcome: H2Outcome, connection: RawH2) -> H2Outcome:
    outcome.closed = connection.eof
    return outcome


def h2_hostile_headers(port: int, token: str, case: str) -> list[tuple[str, str]]:
    base = h2_base(port, token)
    cases: dict[str, list[tuple[str, str]]] = {
        "transfer-encoding chunked": base + [("transfer-encoding", "chunked")],
        "connection keep-alive": base + [("connection", "keep-alive")],
        "connection naming the tenant header": base + [("connection", "x-scope-orgid")],
        "keep-alive": base + [("keep-alive", "timeout=5")],
        "proxy-connection": base + [("proxy-connection", "keep-alive")],
        "upgrade h2c": base + [("upgrade", "h2c")],
        "te gzip": base + [("te", "gzip")],
        "uppercase header name": base + [("X-Custom", "1")],
        "uppercase Transfer-Encoding": base + [("Transfer-Encoding", "chunked")],
        "CRLF header injection in value": base + [("x-custom", "1\r\nx-injected: 1")],
        "LF in value": base + [("x-custom", "1\nx-injected: 1")],
        "CR in value": base + [("x-custom", "1\rx-injected: 1")],
        "NUL in value": base + [("x-custom", "1\x00x-injected")],
        "space in header name": base + [("x-custom x-injected", "1")],
        "colon in header name": base + [("x-injected:", "1")],
        "CRLF in path": [(k, "/v1/traces HTTP/1.1\r\nx-injected: 1\r\nx-pad: 1" if k == ":path" else v)
                         for k, v in base],
        "space in path": [(k, "/v1/traces HTTP/1.1" if k == ":path" else v) for k, v in base],
        "CRLF in authority": [(k, "127.0.0.1\r\nx-injected: 1" if k == ":authority" else v) for k, v in base],
        "space in method": [(k, "POST /v1/logs HTTP/1.1\r\nx-injected: 1\r\n\r\nPOST" if k == ":method" else v)
                            for k, v in base],
        "content-length twice differing": base + [("content-length", "5"), ("content-length", "6")],
        "content-length plus sign": base + [("content-length", "+5")],
    }
    return cases[case]


H2_CASES = [
    "transfer-encoding chunked",
    "connection keep-alive",
    "connection naming the tenant header",
    "keep-alive",
    "proxy-connection",
    "upgrade h2c",
    "te gzip",
    "uppercase header name",
    "uppercase Transfer-Encoding",
    "CRLF header injection in value",
    "LF in value",
    "CR in value",
    "NUL in value",
    "space in header name",
    "colon in header name",
    "CRLF in path",
    "space in path",
    "CRLF in authority",
    "space in method",
    "content-length twice differing",
    "content-length plus sign",
]

KNOWN_H2_GAPS: dict[str, str] = {}


def h2_params():
    for case in H2_CASES:
        marks = [xfail(KNOWN_H2_GAPS[case])] if case in KNOWN_H2_GAPS else []
        yield pytest.param(case, id=case.replace(" ", "_").replace("/", ""), marks=marks)


def test_h2_control_valid_request_200_forwarded_as_unambiguous_http11(proxy, upstream, token, ca_file):
    outcome = h2_raw_request(proxy.port, ca_file, h2_base(proxy.port, token) + [("content-length", "5")])
    assert outcome.status == 200, outcome.describe()
    time.sleep(SETTLE)
    assert upstream.errors == [], upstream.describe()
    [forwarded] = upstream.requests
    assert (forwarded.method, forwarded.target, forwarded.body) == ("POST", "/v1/traces", BODY)
    assert forwarded.values("x-scope-orgid") == ["team-a"]


@pytest.mark.parametrize("case", list(h2_params()))
def test_h2_hostile_header_refused_nothing_forwarded(proxy, upstream, token, ca_file, case):
    outcome = h2_raw_request(proxy.port, ca_file, h2_hostile_headers(proxy.port, token, case))
    assert outcome.refused, f"the proxy accepted the request: {outcome.describe()}"
    assert_nothing_forwarded(upstream)
    assert b"x-injected" not in upstream.raw.lower()


def test_h2_content_length_shorter_than_data_refused_no_request_completed_upstream(proxy, upstream, token, ca_file):
    outcome = h2_raw_request(proxy.port, ca_file, h2_base(proxy.port, token) + [("content-length", "5")],
                             extra_data=b"POST /v1/logs?smuggled=1 HTTP/1.1\r\n\r\n")
    assert outcome.refused, outcome.describe()
    assert_no_complete_request(upstream)
    assert b"smuggled" not in upstream.raw


# --- a declared length the stream has not yet confirmed ---------------------------------------
# HTTP/1.1 framing makes a request complete at its Content-Length; HTTP/2 ends it at END_STREAM.
# Each test holds the stream open at the point where the two disagree, so what the receiver holds
# then is checked without a race.


def wait_for_upstream_bytes(upstream: RecordingUpstream, ending: bytes) -> None:
    deadline = time.monotonic() + CLOSE_WITHIN
    while not upstream.raw.endswith(ending):
        assert time.monotonic() < deadline, f"the upstream never received {ending!r}: {upstream.describe()}"
        time.sleep(0.02)


SMUGGLED = b"POST /v1/logs?smuggled=1 HTTP/1.1\r\n\r\n"


def held_stream(proxy, token: str, ca_file: str, content_length: str, first: bytes | None,
                while_held, last: bytes) -> H2Outcome:
    """Stream 1 declaring `content_length`: HEADERS, then DATA `first` without END_STREAM (none when
    None), then `while_held()` runs with the stream still open, then DATA `last` with END_STREAM.
    Returns the stream's fate."""
    connection = RawH2(proxy.port, ca_file)
    try:
        block = stateless_header_block(h2_base(proxy.port, token) + [("content-length", content_length)])
        connection.send(frame(HEADERS, END_HEADERS, 1, block))
        if first is not None:
            connection.send(frame(DATA, 0, 1, first))
        while_held()
        connection.send(frame(DATA, END_STREAM, 1, last))
        return h2_stream_outcome(connection)
    finally:
        connection.close()


def test_h2_all_declared_bytes_before_end_stream_receiver_holds_no_complete_request(proxy, upstream, token, ca_file):
    def receiver_incomplete():
        wait_for_upstream_bytes(upstream, BODY[:-1])
        time.sleep(SETTLE)
        assert upstream.requests == [], f"complete before END_STREAM: {upstream.describe()}"

    outcome = held_stream(proxy, token, ca_file, "5", BODY, receiver_incomplete, SMUGGLED)
    assert outcome.reset is not None or outcome.goaway is not None, outcome.describe()
    assert_no_complete_request(upstream)
    assert b"smuggled" not in upstream.raw


def test_h2_all_declared_bytes_then_empty_end_stream_forwarded_whole(proxy, upstream, token, ca_file):
    outcome = held_stream(proxy, token, ca_file, "5", BODY, lambda: wait_for_upstream_bytes(upstream, BODY[:-1]), b"")
    assert outcome.status == 200, outcome.describe()
    time.sleep(SETTLE)
    assert [(r.target, r.body) for r in upstream.requests] == [("/v1/traces", BODY)], upstream.describe()
    assert upstream.errors == [], upstream.describe()


def test_h2_declared_empty_head_waits_for_end_stream(proxy, upstream, token, ca_file):
    def nothing_forwarded_yet():
        time.sleep(SETTLE)
        assert upstream.raw == b"", f"the head went out before END_STREAM: {upstream.describe()}"

    outcome = held_stream(proxy, token, ca_file, "0", None, nothing_forwarded_yet, b"")
    assert outcome.status == 200, outcome.describe()
    time.sleep(SETTLE)
    assert [(r.target, r.body) for r in upstream.requests] == [("/v1/traces", b"")], upstream.describe()


def test_h2_declared_empty_then_data_refused_nothing_forwarded(proxy, upstream, token, ca_file):
    outcome = held_stream(proxy, token, ca_file, "0", None, lambda: time.sleep(SETTLE), SMUGGLED)
    assert outcome.reset is not None or outcome.goaway is not None, outcome.describe()
    assert_nothing_forwarded(upstream)
