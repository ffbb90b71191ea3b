#!/usr/bin/env python3
"""Makes the seed corpus of the fuzz-h2 target: client frame sequences, after the preface.

Run with the end-to-end venv (it has h2 and hpack):  .venv/bin/python fuzz/seeds/make_h2_seeds.py
Each file is one control byte (low 4 bits: read size in units of 7 bytes, 0 = all at once;
bits 4-5: how the harness answers) followed by frames, as fuzz/Sources/fuzz-h2/main.swift reads them.
"""
import pathlib
import struct

import h2.config
import h2.connection
import hpack

FUZZ = pathlib.Path(__file__).resolve().parent.parent
OUT = FUZZ / "corpus" / "h2"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GRPC_PATH = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def request_headers(path=GRPC_PATH, extra=()):
    return [(":method", "POST"), (":scheme", "https"), (":authority", "proxy.test"), (":path", path),
            ("content-type", "application/grpc"), ("te", "trailers"), ("authorization", "Bearer abc")] + list(extra)


def client():
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    connection.initiate_connection()
    return connection


def frames_of(connection) -> bytes:
    data = connection.data_to_send()
    return data[len(PREFACE):] if data.startswith(PREFACE) else data


seeds = {}

c = client()
c.send_headers(1, request_headers())
c.send_data(1, b"\x00\x00\x00\x00\x05hello", end_stream=False)
c.send_headers(1, [("grpc-timeout", "1S")], end_stream=True)
seeds["grpc-export-with-trailers"] = frames_of(c)

c = client()
c.send_headers(1, request_headers("/v1/traces", [("content-type", "application/x-protobuf")]), end_stream=False)
c.send_data(1, b"x" * 300, end_stream=True)
c.send_headers(3, request_headers("/v1/metrics"), end_stream=True)
seeds["two-streams"] = frames_of(c)

c = client()
for stream in range(1, 40, 2):
    c.send_headers(stream, request_headers(), end_stream=False)
    c.reset_stream(stream)
seeds["rapid-reset"] = frames_of(c)

c = client()
c.send_headers(1, request_headers(), end_stream=False)
c.ping(b"12345678")
c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1, h2.settings.SettingCodes.MAX_FRAME_SIZE: 16384})
c.increment_flow_control_window(1000)
c.increment_flow_control_window(1000, stream_id=1)
c.send_data(1, b"\x00" * 100, end_stream=True)
c.close_connection()
seeds["ping-settings-window-goaway"] = frames_of(c)

encoder = hpack.Encoder()
block = encoder.encode(request_headers())
seeds["continuation"] = (frame(0x4, 0, 0) + frame(0x1, 0x0, 1, block[:10]) + frame(0x9, 0x0, 1, block[10:20])
                         + frame(0x9, 0x4, 1, block[20:]) + frame(0x0, 0x1, 1, b"abc"))
big = hpack.Encoder()
bomb = big.encode(request_headers([("x-big", "A" * 4000)]))
repeat = b"".join(big.encode([("x-big", "A" * 4000)]) for _ in range(20))
seeds["hpack-bomb"] = frame(0x4, 0, 0) + frame(0x1, 0x5, 1, bomb) + frame(0x1, 0x5, 3, bomb[:8] + repeat)
seeds["settings-many-entries"] = frame(0x4, 0, 0, b"".join(struct.pack(">HI", 0x2, 0) for _ in range(100)))
seeds["padded-data-priority"] = (frame(0x4, 0, 0) + frame(0x1, 0x4 | 0x20, 1, struct.pack(">IB", 0, 15) + hpack.Encoder().encode(request_headers()))
                                 + frame(0x0, 0x8 | 0x1, 1, bytes([5]) + b"data" + b"\x00" * 5)
                                 + frame(0x2, 0, 3, struct.pack(">IB", 1, 200)))
seeds["data-after-end-stream"] = (frame(0x4, 0, 0) + frame(0x1, 0x5, 1, hpack.Encoder().encode(request_headers()))
                                  + frame(0x0, 0x1, 1, b"late") + frame(0x8, 0, 1, struct.pack(">I", 0)))
seeds["pseudo-header-abuse"] = (frame(0x4, 0, 0) + frame(0x1, 0x5, 1, hpack.Encoder().encode(
    [(":method", "POST"), ("x-a", "1"), (":path", "/v1/logs"), (":unknown", "x"), (":method", "GET"), ("Upper", "v"), ("connection", "close")])))
seeds["push-promise-and-unknown-frame"] = frame(0x4, 0, 0) + frame(0x5, 0x4, 1, b"\x00\x00\x00\x02") + frame(0xfa, 0xff, 7, b"??")

OUT.mkdir(parents=True, exist_ok=True)
for old in OUT.iterdir():
    old.unlink()
for name, data in seeds.items():
    for control, suffix in ((0x00, "whole-trailers-only"), (0x11, "7-byte-reads-echo"), (0x23, "21-byte-reads-reset"), (0x30, "whole-shutdown")):
        (OUT / f"{name}-{suffix}").write_bytes(bytes([control]) + data)
print("wrote", len(list(OUT.iterdir())), "h2 seeds")
