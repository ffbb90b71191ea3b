"""The payload editor (ProxyOTLP's OTLPPayload) against the official protobuf classes: requests
made with opentelemetry-proto are rewritten by `otlp-payload-tool` (a test-support build of the
editor, Tests/OTLPPayloadTool) and the output is parsed with the same classes. It must parse and
equal the input with the attribute set on every Resource, in protobuf and in OTLP/JSON.

The tool is $OTLP_PAYLOAD_TOOL_BIN, else .build/debug/otlp-payload-tool (built by `swift build`).
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest
from google.protobuf import json_format

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from otlp_payloads import REQUEST_CLASSES, SIGNALS, TENANT_KEY, random_request, with_attribute

REPO_ROOT = Path(__file__).resolve().parents[2]
VALUE = "team-a ünïcode \"quoted\""


def tool() -> Path:
    configured = os.environ.get("OTLP_PAYLOAD_TOOL_BIN")
    path = Path(configured) if configured else REPO_ROOT / ".build/debug/otlp-payload-tool"
    assert path.exists(), f"{path} is missing: build it with `swift build` (or set OTLP_PAYLOAD_TOOL_BIN)"
    return path


def rewrite(signal: str, encoding: str, body: bytes, *attributes: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(tool()), "rewrite", signal, encoding, *attributes], input=body, capture_output=True, timeout=30)


def rewritten(signal: str, encoding: str, body: bytes) -> bytes:
    result = rewrite(signal, encoding, body, f"{TENANT_KEY}={VALUE}")
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


@pytest.mark.parametrize("signal", SIGNALS)
def test_protobuf_random_requests_parse_with_the_attribute_on_every_resource(signal):
    rng = random.Random(f"protobuf-{signal}")
    for _ in range(40):
        request, items = random_request(signal, rng)
        output = REQUEST_CLASSES[signal].FromString(rewritten(signal, "protobuf", request.SerializeToString()))
        assert output == with_attribute(request, TENANT_KEY, VALUE)
        count = subprocess.run([str(tool()), "count", signal, "protobuf"], input=request.SerializeToString(),
                               capture_output=True, check=True)
        assert int(count.stdout) == items


@pytest.mark.parametrize("signal", SIGNALS)
def test_json_random_requests_parse_with_the_attribute_on_every_resource(signal):
    rng = random.Random(f"json-{signal}")
    for index in range(20):
        request, _ = random_request(signal, rng)
        # The exporters' camelCase names, or the proto names parsers accept too.
        text = json_format.MessageToJson(request, preserving_proto_field_name=index % 2 == 1)
        output = json_format.Parse(rewritten(signal, "json", text.encode()), REQUEST_CLASSES[signal]())
        assert output == with_attribute(request, TENANT_KEY, VALUE)


def test_duplicated_resource_field_merged_by_the_parser_carries_one_attribute():
    """Two `resource` fields in one ResourceSpans, each with a client copy: the parser merges them."""
    first = resource_pb2.Resource(attributes=[common_pb2.KeyValue(key=TENANT_KEY, value=common_pb2.AnyValue(string_value="forged"))])
    second = resource_pb2.Resource(attributes=[
        common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="api")),
        common_pb2.KeyValue(key=TENANT_KEY, value=common_pb2.AnyValue(int_value=7)),
    ])
    spans = trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=[trace_pb2.Span(name="s")])])

    def field(number: int, payload: bytes) -> bytes:
        assert len(payload) < 128
        return bytes([number << 3 | 2, len(payload)]) + payload

    resource_spans = field(1, first.SerializeToString()) + spans.SerializeToString() + field(1, second.SerializeToString())
    body = field(1, resource_spans)
    request = REQUEST_CLASSES["traces"].FromString(body)
    assert [kv.key for kv in request.resource_spans[0].resource.attributes] == [TENANT_KEY, "service.name", TENANT_KEY]
    output = REQUEST_CLASSES["traces"].FromString(rewritten("traces", "protobuf", body))
    assert output == with_attribute(request, TENANT_KEY, VALUE)
    assert [kv.key for kv in output.resource_spans[0].resource.attributes] == ["service.name", TENANT_KEY]


def test_resource_attribute_named_by_key_strindex_is_refused():
    request = REQUEST_CLASSES["profiles"]()
    request.dictionary.string_table.extend(["", TENANT_KEY])
    rx = request.resource_profiles.add()
    rx.resource.attributes.add(key_strindex=1, value=common_pb2.AnyValue(string_value="forged"))
    result = rewrite("profiles", "protobuf", request.SerializeToString(), f"{TENANT_KEY}={VALUE}")
    assert result.returncode == 1
    assert b"key_strindex" in result.stderr and b"forged" not in result.stderr
