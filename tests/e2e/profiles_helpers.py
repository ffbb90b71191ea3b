"""OTLP profiles for the end-to-end tests. No OpenTelemetry SDK exports profiles yet, so requests are
built with the official generated classes (opentelemetry-proto, `v1development`) and sent with a
grpcio stub or a plain HTTPS POST: the bytes are what a profiler using those definitions sends."""

from __future__ import annotations

import grpc
import requests
from google.protobuf import json_format
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2, profiles_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.profiles.v1development import profiles_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

PROFILES_EXPORT = "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export"
PROFILES_PATH = "/v1development/profiles"


def profiles_request(count: int, service: str = "checkout") -> profiles_service_pb2.ExportProfilesServiceRequest:
    """An ExportProfilesServiceRequest with `count` CPU profiles of one resource, each with one sample
    of one stack (main in checkout.go), and the dictionary they index (every table's entry 0 is the
    zero value, as the specification requires)."""
    dictionary = profiles_pb2.ProfilesDictionary(
        string_table=["", "cpu", "nanoseconds", "main", "checkout.go", "service.name"],
        mapping_table=[profiles_pb2.Mapping()],
        function_table=[profiles_pb2.Function(), profiles_pb2.Function(name_strindex=3, filename_strindex=4, start_line=10)],
        location_table=[
            profiles_pb2.Location(),
            profiles_pb2.Location(address=0x401000, lines=[profiles_pb2.Line(function_index=1, line=42)]),
        ],
        stack_table=[profiles_pb2.Stack(), profiles_pb2.Stack(location_indices=[1])],
        link_table=[profiles_pb2.Link()],
        attribute_table=[profiles_pb2.KeyValueAndUnit()],
    )
    profiles = [
        profiles_pb2.Profile(
            sample_type=profiles_pb2.ValueType(type_strindex=1, unit_strindex=2),
            samples=[profiles_pb2.Sample(stack_index=1, values=[10_000_000 * (index + 1)])],
            time_unix_nano=1_700_000_000_000_000_000 + index,
            duration_nano=10_000_000_000,
            profile_id=bytes([index + 1] * 16),
        )
        for index in range(count)
    ]
    resource = resource_pb2.Resource(
        attributes=[common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=service))]
    )
    return profiles_service_pb2.ExportProfilesServiceRequest(
        resource_profiles=[
            profiles_pb2.ResourceProfiles(
                resource=resource,
                scope_profiles=[
                    profiles_pb2.ScopeProfiles(scope=common_pb2.InstrumentationScope(name="e2e-profiler"), profiles=profiles)
                ],
            )
        ],
        dictionary=dictionary,
    )


def profiles_json(request: profiles_service_pb2.ExportProfilesServiceRequest) -> bytes:
    """The request in OTLP/JSON (lowerCamelCase names, as the OTLP/HTTP JSON encoding has them)."""
    return json_format.MessageToJson(request).encode()


def export_profiles(channel: grpc.Channel, request, metadata, timeout: float = 10):
    """One ProfilesService/Export unary call with the generated stub; returns the response or raises
    grpc.RpcError."""
    stub = profiles_service_pb2_grpc.ProfilesServiceStub(channel)
    return stub.Export(request, metadata=metadata, timeout=timeout)


def post_profiles(base_url: str, ca_file: str, token: str, body: bytes, content_type: str = "application/x-protobuf"):
    """One OTLP/HTTP profiles export over HTTPS (requests, HTTP/1.1)."""
    return requests.post(
        f"{base_url}{PROFILES_PATH}", data=body, verify=ca_file, timeout=15,
        headers={"authorization": f"Bearer {token}", "content-type": content_type},
    )


def profile_count(request: profiles_service_pb2.ExportProfilesServiceRequest) -> int:
    return sum(len(scope.profiles) for resource in request.resource_profiles for scope in resource.scope_profiles)
