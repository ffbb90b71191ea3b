"""Random but valid OTLP export requests made with the official protobuf classes
(opentelemetry-proto), for the payload editor's interoperability test and its fuzz seeds.

`random_request(signal, rng)` returns (request message, item count). The requests carry what
exporters send and what an editor must leave alone: every AnyValue kind, nested arrays and
kvlists, events and links, every metric data kind, profiles with a dictionary, resources missing,
and sometimes a client copy of `tenant.id`.
"""

from __future__ import annotations

import random
import zlib

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.profiles.v1development import profiles_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

TENANT_KEY = "tenant.id"
SIGNALS = ("traces", "metrics", "logs", "profiles")

REQUEST_CLASSES = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
    "profiles": profiles_service_pb2.ExportProfilesServiceRequest,
}

WORDS = ["api", "checkout", "db", "ünïcode", 'quote"d', "back\\slash", "new\nline", "", "日本", "emoji 🚀"]


def _text(rng: random.Random) -> str:
    return rng.choice(WORDS) + str(rng.randrange(1000))


def any_value(rng: random.Random, depth: int = 0) -> common_pb2.AnyValue:
    kind = rng.randrange(7 if depth < 2 else 5)
    if kind == 0:
        return common_pb2.AnyValue(string_value=_text(rng))
    if kind == 1:
        return common_pb2.AnyValue(bool_value=rng.random() < 0.5)
    if kind == 2:
        return common_pb2.AnyValue(int_value=rng.choice([0, -1, 2**53 + 1, -(2**63), 2**63 - 1, rng.randrange(-1000, 1000)]))
    if kind == 3:
        return common_pb2.AnyValue(double_value=rng.choice([0.1, -2.5e-300, 1e300, 3.141592653589793]))
    if kind == 4:
        return common_pb2.AnyValue(bytes_value=bytes(rng.randrange(256) for _ in range(rng.randrange(8))))
    if kind == 5:
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[any_value(rng, depth + 1) for _ in range(rng.randrange(3))]))
    return common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=attributes(rng, depth + 1)))


def attributes(rng: random.Random, depth: int = 0, count: int | None = None) -> list[common_pb2.KeyValue]:
    count = rng.randrange(4) if count is None else count
    return [common_pb2.KeyValue(key=f"attr.{i}.{_text(rng)}", value=any_value(rng, depth)) for i in range(count)]


def resource(rng: random.Random) -> resource_pb2.Resource | None:
    """None (no Resource), or one with attributes, sometimes a client copy of the tenant key."""
    if rng.random() < 0.2:
        return None
    attrs = attributes(rng, count=rng.randrange(1, 4))
    if rng.random() < 0.4:
        attrs.insert(rng.randrange(len(attrs) + 1), common_pb2.KeyValue(key=TENANT_KEY, value=any_value(rng)))
    return resource_pb2.Resource(attributes=attrs, dropped_attributes_count=rng.choice([0, 0, 3]))


def scope(rng: random.Random) -> common_pb2.InstrumentationScope:
    return common_pb2.InstrumentationScope(name=_text(rng), version="1.2.3", attributes=attributes(rng))


def _span(rng: random.Random) -> trace_pb2.Span:
    return trace_pb2.Span(
        trace_id=rng.randbytes(16), span_id=rng.randbytes(8), name=_text(rng), kind=rng.randrange(6),
        start_time_unix_nano=rng.randrange(2**64), end_time_unix_nano=rng.randrange(2**64),
        attributes=attributes(rng),
        events=[trace_pb2.Span.Event(name=_text(rng), time_unix_nano=rng.randrange(2**63), attributes=attributes(rng))
                for _ in range(rng.randrange(2))],
        links=[trace_pb2.Span.Link(trace_id=rng.randbytes(16), span_id=rng.randbytes(8)) for _ in range(rng.randrange(2))],
        status=trace_pb2.Status(code=rng.randrange(3), message=_text(rng)),
    )


def _metric(rng: random.Random) -> tuple[metrics_pb2.Metric, int]:
    points = rng.randrange(4)
    metric = metrics_pb2.Metric(name=_text(rng), unit="1", description=_text(rng))
    kind = rng.randrange(5)
    for _ in range(points):
        if kind == 0:
            metric.gauge.data_points.add(as_int=rng.randrange(-(2**63), 2**63), time_unix_nano=rng.randrange(2**64), attributes=attributes(rng))
        elif kind == 1:
            metric.sum.data_points.add(as_double=rng.random(), time_unix_nano=rng.randrange(2**64))
            metric.sum.is_monotonic = True
            metric.sum.aggregation_temporality = 2
        elif kind == 2:
            metric.histogram.data_points.add(count=3, sum=1.5, bucket_counts=[1, 2], explicit_bounds=[0.5])
        elif kind == 3:
            metric.exponential_histogram.data_points.add(count=2, scale=3, zero_count=1)
        else:
            metric.summary.data_points.add(count=1, sum=2.0)
    if points == 0:
        [metric.gauge, metric.sum, metric.histogram, metric.exponential_histogram, metric.summary][kind].SetInParent()
    return metric, points


def _log(rng: random.Random) -> logs_pb2.LogRecord:
    return logs_pb2.LogRecord(
        time_unix_nano=rng.randrange(2**64), severity_number=rng.randrange(25), severity_text="INFO",
        body=any_value(rng), attributes=attributes(rng), trace_id=rng.randbytes(16), flags=1,
    )


def random_request(signal: str, rng: random.Random):
    """An export request of `signal` and the number of items in it."""
    request = REQUEST_CLASSES[signal]()
    items = 0
    for _ in range(rng.randrange(1, 4)):
        res = resource(rng)
        if signal == "traces":
            rx = request.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
            scopes = rx.scope_spans
        elif signal == "metrics":
            rx = request.resource_metrics.add()
            scopes = rx.scope_metrics
        elif signal == "logs":
            rx = request.resource_logs.add()
            scopes = rx.scope_logs
        else:
            rx = request.resource_profiles.add()
            scopes = rx.scope_profiles
        if res is not None:
            rx.resource.CopyFrom(res)
        for _ in range(rng.randrange(3)):
            sx = scopes.add(scope=scope(rng), schema_url=rng.choice(["", "https://opentelemetry.io/schemas/1.21.0"]))
            for _ in range(rng.randrange(4)):
                if signal == "traces":
                    sx.spans.append(_span(rng))
                    items += 1
                elif signal == "metrics":
                    metric, points = _metric(rng)
                    sx.metrics.append(metric)
                    items += points
                elif signal == "logs":
                    sx.log_records.append(_log(rng))
                    items += 1
                else:
                    profile = sx.profiles.add(time_unix_nano=rng.randrange(2**63), duration_nano=10**9, profile_id=rng.randbytes(16))
                    profile.samples.add(stack_index=1, values=[rng.randrange(100)])
                    items += 1
    if signal == "profiles":
        request.dictionary.string_table.extend(["", "cpu", "nanoseconds", _text(rng)])
        request.dictionary.mapping_table.add()
    return request, items


def resources_of(request):
    """The ResourceX messages of any export request."""
    for name in ("resource_spans", "resource_metrics", "resource_logs", "resource_profiles"):
        if request.DESCRIPTOR.fields_by_name.get(name) is not None:
            return getattr(request, name)
    raise ValueError("not an export request")


def with_attribute(request, key: str, value: str):
    """What the editor must produce, decoded: on every Resource, copies of `key` removed and one
    KeyValue{key, string_value} appended (a missing Resource made)."""
    expected = type(request)()
    expected.CopyFrom(request)
    for rx in resources_of(expected):
        kept = [kv for kv in rx.resource.attributes if kv.key != key]
        del rx.resource.attributes[:]
        rx.resource.attributes.extend(kept)
        rx.resource.attributes.add(key=key, value=common_pb2.AnyValue(string_value=value))
    return expected


def gzip_bomb(size: int) -> bytes:
    """gzip of `size` bytes of zeros, compressed 1 MiB at a time so the test never holds them."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + 15)
    zeros = bytes(1024 * 1024)
    parts = [compressor.compress(zeros) for _ in range(size // len(zeros))]
    parts.append(compressor.flush())
    return b"".join(parts)
