"""Telemetry made with the OpenTelemetry Python SDK and exported with its OTLP/HTTP exporters,
so the bytes on the wire are exactly what real applications send."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

RESOURCE = Resource.create({"service.name": "otlp-auth-proxy-e2e"})


def make_spans(count: int, resource: Resource = RESOURCE):
    """`count` finished spans (ReadableSpan), one trace."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("e2e")
    with tracer.start_as_current_span("root"):
        for index in range(count - 1):
            with tracer.start_as_current_span(f"child-{index}") as span:
                span.set_attribute("index", index)
    spans = memory.get_finished_spans()
    provider.shutdown()
    assert len(spans) == count
    return spans


def make_metrics(resource: Resource = RESOURCE):
    """MetricsData with exactly 5 data points: a counter over 3 attribute sets and a histogram
    over 2. Returns (data, 5)."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = provider.get_meter("e2e")
    counter = meter.create_counter("e2e.requests")
    for route in ("a", "b", "c"):
        counter.add(1, {"route": route})
    histogram = meter.create_histogram("e2e.latency", unit="ms")
    histogram.record(12.5, {"route": "a"})
    histogram.record(40.0, {"route": "b"})
    data = reader.get_metrics_data()
    provider.shutdown()
    return data, 5


def make_logs(count: int, resource: Resource = RESOURCE):
    """`count` log records."""
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("e2e")
    for index in range(count):
        logger.emit(body=f"log line {index}", attributes={"index": index})
    records = memory.get_finished_logs()
    provider.shutdown()
    assert len(records) == count
    return records


def span_exporter(base_url: str, ca_file: str, token: str | None, timeout: float = 10) -> OTLPSpanExporter:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    return OTLPSpanExporter(
        endpoint=f"{base_url}/v1/traces", certificate_file=ca_file, headers=headers, timeout=timeout,
        compression=Compression.NoCompression,
    )


def metric_exporter(base_url: str, ca_file: str, token: str) -> OTLPMetricExporter:
    return OTLPMetricExporter(
        endpoint=f"{base_url}/v1/metrics", certificate_file=ca_file, headers={"authorization": f"Bearer {token}"},
        timeout=10, compression=Compression.NoCompression,
    )


def log_exporter(base_url: str, ca_file: str, token: str) -> OTLPLogExporter:
    return OTLPLogExporter(
        endpoint=f"{base_url}/v1/logs", certificate_file=ca_file, headers={"authorization": f"Bearer {token}"},
        timeout=10, compression=Compression.NoCompression,
    )
