"""The grpcurl examples `simplu-grpc dev` prints are valid requests for the methods they call."""

from __future__ import annotations

import json
import shlex

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from simplu.v1 import business_pb2, shard_admin_pb2

from simplu_grpc.devstack.stack import EXAMPLE_BUSINESS, grpcurl

REQUEST_TYPES: dict[str, type[Message]] = {
    "simplu.v1.BusinessService/CreateBusiness": business_pb2.CreateBusinessRequest,
    "simplu.v1.BusinessService/ListBusinesses": business_pb2.ListBusinessesRequest,
    "simplu.v1.ShardAdminService/ListShards": shard_admin_pb2.ListShardsRequest,
}


@pytest.mark.parametrize(
    ("method", "data"),
    [
        ("simplu.v1.BusinessService/CreateBusiness", EXAMPLE_BUSINESS),
        ("simplu.v1.BusinessService/ListBusinesses", {"page_size": 10}),
        ("simplu.v1.ShardAdminService/ListShards", {}),
    ],
)
def test_printed_request_body_parses_as_the_methods_request(method: str, data: object) -> None:
    """The -d JSON of each printed command is accepted by the request type (as grpcurl would)."""
    argv = shlex.split(grpcurl("localhost:50051", method, data).replace("$TOKEN", "t"))
    body = argv[argv.index("-d") + 1]
    request = json_format.Parse(body, REQUEST_TYPES[method]())
    assert json_format.MessageToDict(request, preserving_proto_field_name=True) == json.loads(body)


def test_an_enum_name_grpcurl_would_reject_is_caught() -> None:
    """A short enum name ("DENTAL") is not a value of BusinessType, so the check above can fail."""
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict({"business": {"type": "DENTAL"}}, business_pb2.CreateBusinessRequest())


def test_printed_calls_show_zero_values() -> None:
    """Calls with a request print zero values (-emit-defaults: `"active": false` is an answer);
    grpcurl's `list` verb takes no such flag."""
    call = shlex.split(grpcurl("localhost:50051", "simplu.v1.ShardAdminService/ListShards", {}))
    assert "-emit-defaults" in call
    assert call[-1] == "simplu.v1.ShardAdminService/ListShards"
    assert "-emit-defaults" not in shlex.split(grpcurl("localhost:50051", "list", token=False))
