"""Receivers that decode what the proxy forwarded with the official OTLP protobuf classes: a grpcio
server for the four Export services (traces, metrics, logs, profiles) that keeps each request's raw
bytes and metadata, and helpers that turn what the OTLP/HTTP RecordingReceiver got into the same
request objects."""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

# signal → (gRPC service, request class, response class, OTLP/HTTP path, resources field)
SIGNALS = {
    "traces": (
        "opentelemetry.proto.collector.trace.v1.TraceService",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
        "/v1/traces",
        "resource_spans",
    ),
    "metrics": (
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
        "/v1/metrics",
        "resource_metrics",
    ),
    "logs": (
        "opentelemetry.proto.collector.logs.v1.LogsService",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
        "/v1/logs",
        "resource_logs",
    ),
    "profiles": (
        "opentelemetry.proto.collector.profiles.v1development.ProfilesService",
        profiles_service_pb2.ExportProfilesServiceRequest,
        profiles_service_pb2.ExportProfilesServiceResponse,
        "/v1development/profiles",
        "resource_profiles",
    ),
}


def grpc_method(signal: str) -> str:
    return f"/{SIGNALS[signal][0]}/Export"


def request_class(signal: str):
    return SIGNALS[signal][1]


def http_path(signal: str) -> str:
    return SIGNALS[signal][3]


def resources(request, signal: str) -> list:
    """The Resource of every resource entry (ResourceSpans, ResourceMetrics, ...) of a request."""
    return [entry.resource for entry in getattr(request, SIGNALS[signal][4])]


def attribute_values(resource, key: str) -> list[str]:
    return [kv.value.string_value for kv in resource.attributes if kv.key == key]


def without_attributes(request, signal: str, keys: set[str]):
    """A copy of `request` with every Resource attribute whose key is in `keys` removed."""
    copy = type(request)()
    copy.CopyFrom(request)
    for resource in resources(copy, signal):
        kept = [kv for kv in resource.attributes if kv.key not in keys]
        del resource.attributes[:]
        resource.attributes.extend(kept)
    return copy


def decode_http(signal: str, body: bytes, content_type: str):
    """What an OTLP/HTTP receiver would parse from a forwarded body."""
    message = request_class(signal)()
    if content_type.startswith("application/json"):
        json_format.Parse(body.decode(), message)
    else:
        message.ParseFromString(body)
    return message


@dataclass
class ReceivedExport:
    signal: str
    raw: bytes
    metadata: list[tuple[str, str]]

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.metadata if key == name]

    def request(self):
        return request_class(self.signal).FromString(self.raw)


@dataclass
class OTLPGrpcReceiver:
    """A grpcio server (h2c) on 127.0.0.1:0 serving the four OTLP Export methods; it keeps each
    request's serialized bytes as grpcio received them (after any decompression) and its metadata."""

    exports: list[ReceivedExport] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    server: grpc.Server | None = None

    def start(self) -> OTLPGrpcReceiver:
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8), options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        )
        handlers = []
        for signal, (service, _, response, _, _) in SIGNALS.items():

            def export(raw: bytes, context, signal=signal, response=response):
                with self.lock:
                    self.exports.append(ReceivedExport(signal, raw, list(context.invocation_metadata())))
                return response().SerializeToString()

            method = grpc.unary_unary_rpc_method_handler(export, request_deserializer=None, response_serializer=None)
            handlers.append(grpc.method_handlers_generic_handler(service, {"Export": method}))
        self.server.add_generic_rpc_handlers(handlers)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        return self

    def received(self) -> list[ReceivedExport]:
        with self.lock:
            return list(self.exports)

    def clear(self) -> None:
        with self.lock:
            self.exports.clear()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=0).wait(5)
