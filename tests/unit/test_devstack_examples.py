"""The grpcurl examples `simplu-grpc dev` prints are valid requests for the methods they call, and
the token each one is run with is the one printed for it."""

from __future__ import annotations

import json
import shlex
import socket

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from simplu.v1 import business_pb2, resource_pb2, shard_admin_pb2

from simplu_grpc.devstack.stack import (
    DEMO_BUSINESS,
    EXAMPLE_BUSINESS,
    USER_EXAMPLES,
    DevStackError,
    grpcurl,
    require_free,
)

REQUEST_TYPES: dict[str, type[Message]] = {
    "simplu.v1.BusinessService/CreateBusiness": business_pb2.CreateBusinessRequest,
    "simplu.v1.BusinessService/ListBusinesses": business_pb2.ListBusinessesRequest,
    "simplu.v1.BusinessService/GetMyAccess": business_pb2.GetMyAccessRequest,
    "simplu.v1.ShardAdminService/ListShards": shard_admin_pb2.ListShardsRequest,
    "simplu.v1.ResourceService/CreateResource": resource_pb2.CreateResourceRequest,
    "simplu.v1.ResourceService/ListResources": resource_pb2.ListResourcesRequest,
    "simplu.v1.ResourceService/ListResourceChanges": resource_pb2.ListResourceChangesRequest,
}


@pytest.mark.parametrize(
    ("method", "data", "bearer_var"),
    [
        ("simplu.v1.BusinessService/CreateBusiness", EXAMPLE_BUSINESS, "TOKEN"),
        ("simplu.v1.BusinessService/ListBusinesses", {"page_size": 10}, "TOKEN"),
        ("simplu.v1.ShardAdminService/ListShards", {}, "TOKEN"),
        *((method, data, "USER_TOKEN") for method, data in USER_EXAMPLES),
    ],
)
def test_printed_request_body_parses_as_the_methods_request(
    method: str, data: object, bearer_var: str
) -> None:
    """The -d JSON of each printed command is accepted by the request type (as grpcurl would), and
    the command sends the token printed for its caller (the admin's $TOKEN or the user's $USER_TOKEN)."""
    argv = shlex.split(grpcurl("localhost:50051", method, data, bearer_var=bearer_var))
    assert argv[argv.index("-H") + 1] == f"authorization: Bearer ${bearer_var}"
    body = argv[argv.index("-d") + 1]
    request = json_format.Parse(body, REQUEST_TYPES[method]())
    assert json_format.MessageToDict(request, preserving_proto_field_name=True) == json.loads(body)


def test_the_demo_business_is_a_valid_create_request() -> None:
    """The demo business the dev stack creates for the plain user parses as a CreateBusinessRequest."""
    request = json_format.ParseDict(DEMO_BUSINESS, business_pb2.CreateBusinessRequest())
    assert request.business_id == "demo"
    assert list(request.business.permissions.roles["staff"].permissions) == ["patients:*", "appointments:*"]


def test_an_enum_name_grpcurl_would_reject_is_caught() -> None:
    """A short enum name ("DENTAL") is not a value of BusinessType, so the check above can fail."""
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict({"business": {"type": "DENTAL"}}, business_pb2.CreateBusinessRequest())


def test_a_port_taken_on_one_address_of_localhost_is_refused() -> None:
    """Another process on 127.0.0.1:port: localhost's port is not free, though ::1 may be."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        with pytest.raises(DevStackError, match=f"port {port} is already in use on 127.0.0.1; set GRPC_PORT"):
            require_free(port, "gRPC server", "GRPC_PORT", host="localhost")


def test_printed_calls_show_zero_values() -> None:
    """Calls with a request print zero values (-emit-defaults: `"active": false` is an answer);
    grpcurl's `list` verb takes no such flag."""
    call = shlex.split(grpcurl("localhost:50051", "simplu.v1.ShardAdminService/ListShards", {}))
    assert "-emit-defaults" in call
    assert call[-1] == "simplu.v1.ShardAdminService/ListShards"
    assert "-emit-defaults" not in shlex.split(grpcurl("localhost:50051", "list", bearer_var=None))
