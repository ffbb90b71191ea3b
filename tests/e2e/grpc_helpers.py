"""OTLP/gRPC and raw HTTP/2 clients for the end-to-end tests: the OpenTelemetry SDK gRPC
exporters, grpcio stubs and an in-process grpcio receiver, a small HTTP/2 client on the `h2`
library (to see exactly which frames a reply used), and raw frame writers for hostile input."""

from __future__ import annotations

import select
import socket
import ssl
import struct
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from google.rpc import status_pb2
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from hpack import Encoder, NeverIndexedHeaderTuple
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2, profiles_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from otel_helpers import make_spans

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"

def read_ca(ca_file: str) -> bytes:
    with open(ca_file, "rb") as handle:
        return handle.read()


# --- gRPC clients --------------------------------------------------------------------------


def grpc_channel(port: int, ca_file: str, options: list[tuple[str, object]] | None = None) -> grpc.Channel:
    """A TLS channel to the proxy, verifying it against the dev CA (the certificate names
    IP:127.0.0.1)."""
    credentials = grpc.ssl_channel_credentials(root_certificates=read_ca(ca_file))
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options or [])


def bearer_metadata(token: str | None, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    metadata = [("authorization", f"Bearer {token}")] if token is not None else []
    return metadata + list(extra)


def trace_request(span_count: int) -> trace_service_pb2.ExportTraceServiceRequest:
    """An ExportTraceServiceRequest made by the SDK's own encoder from `span_count` real spans."""
    return encode_spans(make_spans(span_count))


def export_traces(channel: grpc.Channel, request, metadata, timeout: float = 10):
    """One TraceService/Export unary call with a grpcio stub; returns the response or raises
    grpc.RpcError."""
    stub = trace_service_pb2_grpc.TraceServiceStub(channel)
    return stub.Export(request, metadata=metadata, timeout=timeout)


def raw_unary(channel: grpc.Channel, method: str, payload: bytes, metadata, timeout: float = 10) -> bytes:
    """A unary call on any method path with an already-serialized message (no stub needed)."""
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    return call(payload, metadata=metadata, timeout=timeout)


def grpc_span_exporter(port: int, ca_file: str, token: str | None, timeout: float = 10) -> OTLPSpanExporter:
    return OTLPSpanExporter(
        endpoint=f"https://127.0.0.1:{port}",
        credentials=grpc.ssl_channel_credentials(read_ca(ca_file)),
        headers={"authorization": f"Bearer {token}"} if token is not None else None,
        timeout=timeout,
        compression=grpc.Compression.NoCompression,
    )


def grpc_metric_exporter(port: int, ca_file: str, token: str) -> OTLPMetricExporter:
    return OTLPMetricExporter(
        endpoint=f"https://127.0.0.1:{port}",
        credentials=grpc.ssl_channel_credentials(read_ca(ca_file)),
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
        compression=grpc.Compression.NoCompression,
    )


def grpc_log_exporter(port: int, ca_file: str, token: str) -> OTLPLogExporter:
    return OTLPLogExporter(
        endpoint=f"https://127.0.0.1:{port}",
        credentials=grpc.ssl_channel_credentials(read_ca(ca_file)),
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
        compression=grpc.Compression.NoCompression,
    )


def grpc_framed(message: bytes) -> bytes:
    """One gRPC length-prefixed message (not compressed)."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def one_kib_grpc_body() -> bytes:
    """A gRPC-framed ExportTraceServiceRequest with one span, exactly 1024 bytes on the wire."""
    for padding in range(900, 1024):
        span = trace_pb2.Span(
            trace_id=bytes(range(16)), span_id=bytes(range(8)), name="h2load", kind=1,
            start_time_unix_nano=1_700_000_000_000_000_000, end_time_unix_nano=1_700_000_001_000_000_000,
            attributes=[common_pb2.KeyValue(key="padding", value=common_pb2.AnyValue(string_value="p" * padding))],
        )
        request = trace_service_pb2.ExportTraceServiceRequest(
            resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=[span])])]
        )
        body = grpc_framed(request.SerializeToString())
        if len(body) == 1024:
            return body
    raise AssertionError("no padding gives a 1 KiB body")


# --- an in-process grpcio receiver ---------------------------------------------------------


@dataclass
class ReceivedCall:
    method: str
    metadata: list[tuple[str, str]]

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.metadata if key == name]


class _RecordingInterceptor(grpc.ServerInterceptor):
    """Records every call that reaches the server, whatever its method (also unknown ones)."""

    def __init__(self, receiver: GrpcReceiver):
        self._receiver = receiver

    def intercept_service(self, continuation, handler_call_details):
        metadata = [(item.key, item.value) for item in handler_call_details.invocation_metadata]
        with self._receiver.lock:
            self._receiver.calls.append(ReceivedCall(handler_call_details.method, metadata))
        return continuation(handler_call_details)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: GrpcReceiver):
        self._receiver = receiver

    def Export(self, request, context):
        spans = sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
        with self._receiver.lock:
            self._receiver.spans += spans
            self._receiver.exports += 1
            self._receiver.peers.add(context.peer())
        if self._receiver.behaviour == "abort":
            context.set_trailing_metadata([("grpc-status-details-bin", BAD_BATCH_DETAILS), ("x-receiver", "kept")])
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad batch")
        if self._receiver.behaviour == "slow":
            time.sleep(0.2)
        if self._receiver.behaviour == "sleep":
            # Long enough for any 1 s deadline to pass; ends early when the test stops the server.
            self._receiver.stopping.wait(3.0)
        return trace_service_pb2.ExportTraceServiceResponse()


class _ProfilesService(profiles_service_pb2_grpc.ProfilesServiceServicer):
    """Keeps every profiles request as grpcio decoded it with the official classes, and its metadata."""

    def __init__(self, receiver: GrpcReceiver):
        self._receiver = receiver

    def Export(self, request, context):
        with self._receiver.lock:
            self._receiver.profiles_requests.append((request, list(context.invocation_metadata())))
            self._receiver.exports += 1
        return profiles_service_pb2.ExportProfilesServiceResponse()


# The google.rpc.Status the "abort" receiver sends in its trailers, next to grpc-status 3.
BAD_BATCH_DETAILS = status_pb2.Status(code=3, message="bad batch").SerializeToString()


@dataclass
class GrpcReceiver:
    """A real grpcio server (h2c, insecure) implementing TraceService and ProfilesService on
    127.0.0.1:0, standing in for the OpenTelemetry receiver behind the proxy (`profiles_requests`:
    each decoded profiles request with its metadata). `behaviour`: "ok", "abort" (every
    export fails with INVALID_ARGUMENT "bad batch"), "slow" (answers after 0.2 s) or "sleep" (after
    3 s). `max_concurrent_streams` is advertised in its SETTINGS; `peers` holds the client address
    of every connection an export arrived on."""

    behaviour: str = "ok"
    max_concurrent_streams: int | None = None
    peers: set[str] = field(default_factory=set)
    calls: list[ReceivedCall] = field(default_factory=list)
    profiles_requests: list = field(default_factory=list)
    spans: int = 0
    exports: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    server: grpc.Server | None = None

    def start(self, port: int = 0) -> GrpcReceiver:
        """Listens on `port` (0: any free port)."""
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16),
            interceptors=[_RecordingInterceptor(self)],
            options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)]
            + ([("grpc.max_concurrent_streams", self.max_concurrent_streams)] if self.max_concurrent_streams else []),
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self.server)
        profiles_service_pb2_grpc.add_ProfilesServiceServicer_to_server(_ProfilesService(self), self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.server is not None:
            self.server.stop(grace=0).wait(5)


# --- a small HTTP/2 client over TLS (the h2 library) ---------------------------------------


def tls_connect(port: int, ca_file: str, alpn: tuple[str, ...] = ("h2",), timeout: float = 10,
                receive_buffer: int | None = None, client_cert: tuple[str, str] | None = None) -> ssl.SSLSocket:
    """TLS to the proxy with the given ALPN offer, certificate verified against the dev CA;
    `client_cert` (certificate chain file, key file) is presented when the proxy asks for one."""
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(list(alpn))
    if client_cert is not None:
        context.load_cert_chain(*client_cert)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if receive_buffer is not None:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        raw.settimeout(timeout)
        raw.connect(("127.0.0.1", port))
        return context.wrap_socket(raw, server_hostname="127.0.0.1")
    except BaseException:
        raw.close()
        raise


@dataclass
class H2Response:
    headers: list[tuple[str, str]]
    trailers: list[tuple[str, str]]
    data: bytes
    ended_on_headers: bool  # END_STREAM was on the response HEADERS frame (a trailers-only reply)
    reset_code: int | None

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key == name]
        return values[0] if values else None

    def trailer(self, name: str) -> str | None:
        values = [value for key, value in self.trailers if key == name]
        return values[0] if values else None

    @property
    def status(self) -> int | None:
        value = self.header(":status")
        return int(value) if value is not None else None

    @property
    def grpc_status(self) -> int | None:
        """From the trailers, or from the headers of a trailers-only reply."""
        value = self.trailer("grpc-status") if self.trailers else self.header("grpc-status")
        return int(value) if value is not None else None

    @property
    def grpc_message(self) -> str | None:
        return self.trailer("grpc-message") if self.trailers else self.header("grpc-message")


class H2Client:
    """One HTTP/2 connection over TLS to the proxy that carries requests one after another, so a test
    can send several requests on a connection opened before something changed (a reload)."""

    def __init__(self, port: int, ca_file: str, timeout: float = 10, validate_outbound: bool = True,
                 client_cert: tuple[str, str] | None = None):
        """`validate_outbound=False` lets a test send header blocks the h2 library would refuse;
        `client_cert` is (certificate file, key file) to present."""
        self.timeout = timeout
        self.sock = tls_connect(port, ca_file, timeout=timeout, client_cert=client_cert)
        try:
            assert self.sock.selected_alpn_protocol() == "h2", self.sock.selected_alpn_protocol()
            self.connection = H2Connection(H2Configuration(
                client_side=True, header_encoding="utf-8", validate_outbound_headers=validate_outbound))
            self.connection.initiate_connection()
            self.sock.sendall(self.connection.data_to_send())
        except BaseException:
            self.sock.close()
            raise
        self.terminated = False

    def request(self, headers: list[tuple[str, str]], body: bytes = b"") -> H2Response:
        """Sends one request on a new stream and waits for the end of its response."""
        connection, sock = self.connection, self.sock
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, headers, end_stream=not body)
        sock.sendall(connection.data_to_send())
        pending = body
        response = H2Response([], [], b"", False, None)
        data = bytearray()
        deadline = time.monotonic() + self.timeout
        finished = False
        while not finished:
            while pending:
                window = min(connection.local_flow_control_window(stream), connection.max_outbound_frame_size)
                if window <= 0:
                    break
                chunk, pending = pending[:window], pending[window:]
                connection.send_data(stream, chunk, end_stream=not pending)
                sock.sendall(connection.data_to_send())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no complete HTTP/2 response in time")
            sock.settimeout(remaining)
            received = sock.recv(65536)
            if not received:
                raise ConnectionError("the proxy closed the connection before the response ended")
            for event in connection.receive_data(received):
                if isinstance(event, ResponseReceived) and event.stream_id == stream:
                    response.headers = list(event.headers)
                    response.ended_on_headers = event.stream_ended is not None
                elif isinstance(event, TrailersReceived) and event.stream_id == stream:
                    response.trailers = list(event.headers)
                elif isinstance(event, DataReceived) and event.stream_id == stream:
                    data += event.data
                    connection.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, StreamEnded) and event.stream_id == stream:
                    finished = True
                elif isinstance(event, StreamReset) and event.stream_id == stream:
                    response.reset_code = int(event.error_code)
                    finished = True
                elif isinstance(event, ConnectionTerminated):
                    self.terminated = True
                    finished = True
                elif isinstance(event, WindowUpdated):
                    pass
            outgoing = connection.data_to_send()
            if outgoing:
                sock.sendall(outgoing)
        response.data = bytes(data)
        return response

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "H2Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def h2_request(
    port: int, ca_file: str, headers: list[tuple[str, str]], body: bytes = b"", timeout: float = 10,
    validate_outbound: bool = True,
) -> H2Response:
    """One HTTP/2 request on its own connection; waits for the end of the response."""
    with H2Client(port, ca_file, timeout=timeout, validate_outbound=validate_outbound) as client:
        return client.request(headers, body)


def grpc_request_headers(port: int, token: str | None, path: str = TRACE_EXPORT, *extra: tuple[str, str]):
    headers = [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", f"127.0.0.1:{port}"),
        (":path", path),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    if token is not None:
        headers.append(("authorization", f"Bearer {token}"))
    return headers + list(extra)


# --- raw frames for hostile input ----------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8, 0x9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
# RFC 9113 section 7 error codes.
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, REFUSED_STREAM, CANCEL = (
    0x0, 0x1, 0x2, 0x3, 0x5, 0x7, 0x8)
ENHANCE_YOUR_CALM = 0xB
# SETTINGS identifiers.
SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE = 0x3, 0x4


def settings_payload(*entries: tuple[int, int]) -> bytes:
    """The payload of a SETTINGS frame: 6 bytes per (identifier, value)."""
    return b"".join(struct.pack(">HI", identifier, value) for identifier, value in entries)


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def stateless_header_block(headers: list[tuple[str, str]]) -> bytes:
    """An HPACK block that leaves the decoder's dynamic table untouched (static-table indices
    and never-indexed literals only), so it can be sent again and again."""
    return Encoder().encode([NeverIndexedHeaderTuple(name, value) for name, value in headers])


class RawH2:
    """A TLS connection speaking raw HTTP/2 frames: the client preface, then whatever the test
    writes. Frames from the proxy are parsed only far enough to notice GOAWAY and EOF."""

    def __init__(self, port: int, ca_file: str, settings: bytes = b"", receive_buffer: int | None = None):
        """`settings`: the payload of the client's first SETTINGS frame (see `settings_payload`);
        `receive_buffer`: a fixed SO_RCVBUF, so what the proxy sends backs up quickly when the
        test stops reading."""
        self.sock = tls_connect(port, ca_file, receive_buffer=receive_buffer)
        assert self.sock.selected_alpn_protocol() == "h2", self.sock.selected_alpn_protocol()
        self._buffer = bytearray()
        self.frames: list[tuple[int, int, int, bytes]] = []  # (type, flags, stream, payload)
        self.eof = False
        self.goaway_error: int | None = None
        self.send_failed = False
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings))
        deadline = time.monotonic() + 5
        while not any(kind == SETTINGS and not flags & ACK for kind, flags, _, _ in self.frames):
            if self.eof or time.monotonic() > deadline:
                raise AssertionError("the proxy sent no SETTINGS after the client preface")
            self._read(timeout=deadline - time.monotonic())
        self.sock.sendall(frame(SETTINGS, ACK, 0))

    @property
    def closed(self) -> bool:
        """The proxy has sent GOAWAY or closed the connection."""
        return self.eof or self.goaway_error is not None

    def send(self, data: bytes) -> bool:
        """Writes `data`; False once the proxy has closed the connection. Reads what the proxy
        sent in between, so neither side blocks on a full socket buffer."""
        if self.eof or self.send_failed:
            return False
        view = memoryview(data)
        deadline = time.monotonic() + 20
        while view:
            if time.monotonic() > deadline:
                raise AssertionError("the proxy stopped reading for 20 s without closing the connection")
            try:
                self.sock.settimeout(0.5)
                sent = self.sock.send(view[:16384])
                view = view[sent:]
            except (socket.timeout, ssl.SSLWantWriteError):
                pass
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                self.send_failed = True
                return False
            self.drain()
            if self.eof:
                return False
        return True

    def drain(self) -> None:
        """Reads whatever is available now without waiting."""
        while not self.eof and (self.sock.pending() or select.select([self.sock], [], [], 0)[0]):
            self._read(timeout=0.5)

    def wait_closed(self, seconds: float) -> bool:
        """Waits up to `seconds` for GOAWAY or EOF from the proxy."""
        deadline = time.monotonic() + seconds
        while not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._read(timeout=remaining)
        return True

    def _read(self, timeout: float) -> None:
        try:
            self.sock.settimeout(max(timeout, 0.01))
            chunk = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            self.eof = True
            return
        if not chunk:
            self.eof = True
            return
        self._buffer += chunk
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[0:3], "big")
            if len(self._buffer) < 9 + length:
                break
            kind, flags = self._buffer[3], self._buffer[4]
            stream = int.from_bytes(self._buffer[5:9], "big") & 0x7FFFFFFF
            payload = bytes(self._buffer[9 : 9 + length])
            del self._buffer[: 9 + length]
            self.frames.append((kind, flags, stream, payload))
            if kind == GOAWAY and len(payload) >= 8:
                self.goaway_error = int.from_bytes(payload[4:8], "big")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# --- a misbehaving h2c upstream --------------------------------------------------------------


class BrokenH2CUpstream:
    """An h2c server (prior knowledge, the h2 library) on 127.0.0.1:0 standing in for a receiver
    that fails mid-request: `mode` "reset" answers every request's HEADERS with RST_STREAM
    (INTERNAL_ERROR); "close" drops the TCP connection as soon as a request arrives. Counts the
    requests it saw."""

    def __init__(self, mode: str):
        self.mode = mode
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        from h2.errors import ErrorCodes
        from h2.events import RequestReceived

        connection = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        connection.initiate_connection()
        try:
            conn.sendall(connection.data_to_send())
            conn.settimeout(0.5)
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    return
                for event in connection.receive_data(data):
                    if isinstance(event, RequestReceived):
                        self.requests += 1
                        if self.mode == "close":
                            conn.shutdown(socket.SHUT_RDWR)
                            return
                        connection.reset_stream(event.stream_id, ErrorCodes.INTERNAL_ERROR)
                conn.sendall(connection.data_to_send())
        except OSError:
            return
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)
