"""HTTP/1.1 request smuggling: the Transfer-Encoding and Content-Length mutation families of the
public smuggling scanners (defparam/smuggler's named mutations and its per-byte families, reproduced
here from their descriptions), each sent in both probe shapes against the binary:

- CL.TE: the mutated header with a Content-Length that covers a chunked terminator and a smuggled
  request behind it. A proxy that read the mutation as chunked would end the body at `0\\r\\n\\r\\n` and
  send the smuggled request on as a request of its own.
- TE.CL: the mutated header with `Content-Length: 4` and a chunked body that hides a smuggled request.
  A proxy that read the mutation as chunked would forward the whole chunk as one body, where a
  receiver reading Content-Length would find the smuggled request.

Whatever the mutation, the receiver (the strict recording upstream of test_h1_desync) must never get
a smuggled request, never get bytes it could read two ways, and every request it gets carries exactly
the body the proxy framed, with Content-Length and no Transfer-Encoding. Mutations that still name
Transfer-Encoding in any spelling are refused with 400 and a close before anything is forwarded; the
few that are plainly another field (`Content-Encoding`, a value of `X`) are forwarded, framed by
their Content-Length.
"""

from __future__ import annotations

import time

import pytest

from h1_helpers import h1_exchange
from test_h1_desync import SETTLE, RecordingUpstream, request, upstream, proxy, token  # noqa: F401 (fixtures)

CL_TE_BODY = b"0\r\n\r\nPOST /v1/logs?smuggled=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
# The smuggled request has no Host: should the proxy itself ever read it as a request, it answers 400.
TE_CL_BODY = b"5c\r\nPOST /v1/logs?smuggled=1 HTTP/1.1\r\nContent-Length: 15\r\n\r\nx=1\r\n0\r\n\r\n"

TE = b"Transfer-Encoding"

NAMED: dict[str, bytes] = {
    "nameprefix1": b" " + TE + b": chunked",
    "tabprefix1": TE + b":\tchunked",
    "tabprefix2": TE + b"\t:\tchunked",
    "space1": TE + b" : chunked",
    "spacejoin1": b"Transfer Encoding: chunked",
    "underjoin1": b"Transfer_Encoding: chunked",
    "underjoin lower": b"transfer_encoding: chunked",
    "smashed": b"Transfer Encoding:chunked",
    "space2": TE + b":chunked",
    "valueprefix1": TE + b":  chunked",
    "vertprefix1": TE + b":\x0bchunked",
    "commaCow": TE + b": chunked, cow",
    "cowComma": TE + b": cow, chunked",
    "identity, chunked": TE + b": identity, chunked",
    "contentEnc": b"Content-Encoding: chunked",
    "linewrapped1": TE + b":\n chunked",
    "linewrapped CRLF": TE + b":\r\n chunked",
    "quoted": TE + b': "chunked"',
    "aposed": TE + b": 'chunked'",
    "lazygrep": TE + b": chunk",
    "sarcasm": b"TrAnSFer-EnCODinG: cHuNkeD",
    "yelling": b"TRANSFER-ENCODING: CHUNKED",
    "0dsuffix": TE + b": chunked\r",
    "tabsuffix": TE + b": chunked\t",
    "revdualchunk": TE + b": cow\r\n" + TE + b": chunked",
    "dualchunk": TE + b": chunked\r\n" + TE + b": cow",
    "dualchunk same": TE + b": chunked\r\n" + TE + b": chunked",
    "0dspam": b"Transfer\r-Encoding: chunked",
    "nested": TE + b": cow chunked bar",
    "spaceFF": TE + b":\xffchunked",
    "accentTE": b"Transf\x82r-Encoding: chunked",
    "accentCH": TE + b": ch\x96nked",
    "unispace": TE + b":\xa0chunked",
    "connection": b"Connection: Transfer-Encoding\r\n" + TE + b": chunked",
    "bare LF before": b"X: X\n" + TE + b": chunked",
}

# Per-byte families: each control character, space, DEL and a few bytes above 0x7F in the place shown.
BYTES = list(range(0x00, 0x21)) + [0x7F, 0x80, 0xA0, 0xFF]
FAMILIES: dict[str, bytes] = {
    "midspace": TE + b":%cchunked",
    "postspace": TE + b"%c: chunked",
    "prespace": b"%c" + TE + b": chunked",
    "endspace": TE + b": chunked%c",
    "xprespace": b"X: X%c" + TE + b": chunked",
    "endspacex": TE + b": chunked%cX: X",
    "rxprespace": b"X: X\r%c" + TE + b": chunked",
    "xnprespace": b"X: X%c\n" + TE + b": chunked",
    "endspacerx": TE + b": chunked\r%cX: X",
    "endspacexn": TE + b": chunked%c\nX: X",
}

# Content-Length spellings next to a chunked Transfer-Encoding-free request: each must be refused
# unless it is a plain decimal length.
CL_MUTATIONS: dict[str, bytes] = {
    "cl space before colon": b"Content-Length : %d",
    "cl tab before colon": b"Content-Length\t: %d",
    "cl underscore": b"Content_Length: %d",
    "cl vertical tab": b"Content-Length:\x0b%d",
    "cl form feed suffix": b"Content-Length: %d\x0c",
    "cl plus": b"Content-Length: +%d",
    "cl list": b"Content-Length: %d, %d",
    "cl two fields": b"Content-Length: %d\r\nContent-Length: %d",
    "cl space inside": b"Content-Length: %d 0",
    "cl prefix space line": b" Content-Length: %d",
    "cl bare LF before": b"X: X\nContent-Length: %d",
}


def is_forwarded(family: str, byte: int | None) -> bool:
    """The mutations that are plainly not a framing header: another field's name, or a byte that is
    legal inside the value of `X` (space, tab, obs-text)."""
    if family == "contentEnc":
        return True
    return family == "xprespace" and byte in (0x09, 0x20, 0x80, 0xA0, 0xFF)


def te_cases() -> list[tuple[str, bytes, bool]]:
    cases = [(name, line, is_forwarded(name, None)) for name, line in NAMED.items()]
    for family, pattern in FAMILIES.items():
        for byte in BYTES:
            cases.append((f"{family}-{byte:02x}", pattern.replace(b"%c", bytes([byte])), is_forwarded(family, byte)))
    return cases


def run_case(port: int, ca_file: str, token: str, case: str, line: bytes, shape: str, forwarded: bool) -> str | None:
    """Sends one mutation in one probe shape; returns what went wrong on the client side, if anything."""
    target = b"POST /v1/traces?case=" + case.replace(" ", "_").encode() + b"-" + shape.encode() + b" HTTP/1.1"
    if shape == "CL.TE":
        payload = request(token, line, b"Content-Length: " + str(len(CL_TE_BODY)).encode(), body=CL_TE_BODY,
                          start=target, content_length=False)
        expected = [200] if forwarded else [400]
    else:
        payload = request(token, line, b"Content-Length: 4", body=TE_CL_BODY, start=target, content_length=False)
        # Read by its Content-Length, what follows is a request of its own without a Host: 400.
        expected = [200, 400] if forwarded else [400]
    exchange = h1_exchange(port, ca_file, payload, responses=len(expected), expect_close=not forwarded or shape == "TE.CL")
    if exchange.statuses != expected:
        return f"{case} {shape}: expected {expected}, got {exchange.describe()}"
    if expected[-1] == 400 and not exchange.closed:
        return f"{case} {shape}: refused but the connection stayed open: {exchange.describe()}"
    return None


def check_upstream(upstream: RecordingUpstream, forwarded_cases: set[str]) -> list[str]:
    """What the receiver got, against what the proxy may have forwarded."""
    time.sleep(SETTLE)
    problems = [f"ambiguous bytes at the receiver: {error}" for error in upstream.errors]
    seen: set[str] = set()
    for forwarded in upstream.requests:
        case = forwarded.target.partition("?case=")[2]
        if "smuggled" in forwarded.target or case not in forwarded_cases:
            problems.append(f"forwarded a request it should have refused: {forwarded.target}")
            continue
        seen.add(case)
        expected_body = CL_TE_BODY if case.endswith("CL.TE") else TE_CL_BODY[:4]
        if forwarded.body != expected_body:
            problems.append(f"{case}: the receiver got body {forwarded.body!r}")
        if forwarded.values("transfer-encoding") or forwarded.values("content-length") != [str(len(expected_body))]:
            problems.append(f"{case}: framing fields {forwarded.headers}")
    problems += [f"{case}: never reached the receiver" for case in forwarded_cases - seen]
    return problems


def run_family(proxy, upstream, token: str, ca_file: str, cases: list[tuple[str, bytes, bool]]) -> None:
    problems: list[str] = []
    forwarded_cases: set[str] = set()
    for case, line, forwarded in cases:
        for shape in ("CL.TE", "TE.CL"):
            problem = run_case(proxy.port, ca_file, token, case, line, shape, forwarded)
            if problem:
                problems.append(problem)
            if forwarded:
                forwarded_cases.add(f"{case.replace(' ', '_')}-{shape}")
    problems += check_upstream(upstream, forwarded_cases)
    assert not problems, "\n".join(problems)


def test_h1_named_transfer_encoding_mutations_refused_or_framed_by_content_length(proxy, upstream, token, ca_file):
    run_family(proxy, upstream, token, ca_file, [case for case in te_cases() if case[0] in NAMED])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_h1_per_byte_transfer_encoding_mutations_refused_or_framed_by_content_length(proxy, upstream, token, ca_file,
                                                                                      family):
    run_family(proxy, upstream, token, ca_file, [case for case in te_cases() if case[0].startswith(family + "-")])


def test_h1_content_length_mutations_refused_nothing_forwarded(proxy, upstream, token, ca_file):
    problems = []
    for case, pattern in CL_MUTATIONS.items():
        line = pattern.replace(b"%d", b"5")
        payload = request(token, line, start=b"POST /v1/traces?case=" + case.replace(" ", "_").encode() + b" HTTP/1.1",
                          content_length=False)
        exchange = h1_exchange(proxy.port, ca_file, payload)
        if exchange.statuses != [400] or not exchange.closed:
            problems.append(f"{case}: {exchange.describe()}")
    time.sleep(SETTLE)
    if upstream.raw:
        problems.append(f"the receiver got bytes: {upstream.describe()}")
    assert not problems, "\n".join(problems)


def test_h1_control_plain_content_length_with_leading_zeros_forwarded_once(proxy, upstream, token, ca_file):
    """The control for the family above: a plain decimal length (leading zeros are still decimal)."""
    payload = request(token, b"Content-Length: 005", content_length=False)
    exchange = h1_exchange(proxy.port, ca_file, payload, expect_close=False)
    assert exchange.statuses == [200], exchange.describe()
    time.sleep(SETTLE)
    assert [(r.target, r.body) for r in upstream.requests] == [("/v1/traces", b"hello")], upstream.describe()
    assert upstream.errors == []
