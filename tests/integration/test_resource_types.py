"""ListResourceTypes over a real channel on the production wiring: the catalog of each business
type with the permission strings of each action, for any authenticated caller."""

from __future__ import annotations

import json
import secrets
from importlib import resources as package_files

import grpc
import pytest
from grpc_status import rpc_status
from simplu.v1 import business_pb2, resource_pb2

from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer, create_business_table
from simplu_grpc.interceptors.errors import violations_of
from tests.fixtures.citrus import CITRUS_API_KEY
from tests.fixtures.server import MakeServer, RunningServer
from tests.fixtures.tokens import LocalIssuer

pytestmark = pytest.mark.integration

REGION = "us-east-1"
TYPES = {
    "dental": business_pb2.BUSINESS_TYPE_DENTAL,
    "gym": business_pb2.BUSINESS_TYPE_GYM,
    "hotel": business_pb2.BUSINESS_TYPE_HOTEL,
}


@pytest.fixture
def server(make_server: MakeServer, moto_server: MotoServer, module_citrus: CitrusEmulator) -> RunningServer:
    table = f"biz-{secrets.token_hex(4)}"
    create_business_table(moto_server.url, REGION, table)
    return make_server(
        dynamodb_endpoint=moto_server.url,
        dynamodb_business_info_table=table,
        citrus_server_url=module_citrus.url,
        citrus_api_key=CITRUS_API_KEY,
    )


def list_types(
    server: RunningServer, token: str, business_type: int
) -> resource_pb2.ListResourceTypesResponse:
    return server.resource.ListResourceTypes(
        resource_pb2.ListResourceTypesRequest(business_type=business_type),
        metadata=(("authorization", f"Bearer {token}"),),
        timeout=10,
    )


def test_every_business_type_lists_its_catalog_with_the_strings_of_each_action(
    server: RunningServer, local_issuer: LocalIssuer
) -> None:
    """A person who belongs to no business lists each type's catalog (catalog.json: its own names
    plus "common"), sorted, with "<type>:<action>" strings and the administration strings."""
    catalog = json.loads(
        package_files.files("simplu_grpc.domain.resources").joinpath("catalog.json").read_text("utf-8")
    )
    token = local_issuer.user_token(username="no-business-yet")
    for name, number in TYPES.items():
        answer = list_types(server, token, number)
        expected = sorted({*catalog[name], *catalog["common"]})
        assert [t.name for t in answer.resource_types] == expected
        for listed in answer.resource_types:
            assert listed.common == (listed.name in catalog["common"])
            assert (
                listed.permissions.read,
                listed.permissions.create,
                listed.permissions.update,
                listed.permissions.delete,
                listed.permissions.all,
            ) == tuple(f"{listed.name}:{action}" for action in ("read", "create", "update", "delete", "*"))
        strings = [p.permission for p in answer.administration_permissions]
        assert "admin.members:update" in strings
        assert "*" in strings
        assert all(p.description for p in answer.administration_permissions)
        # No resource type can take an administration string.
        assert not any(t.name.startswith("admin.") or ":" in t.name for t in answer.resource_types)
    dental = {t.name for t in list_types(server, token, business_pb2.BUSINESS_TYPE_DENTAL).resource_types}
    assert {"treatment-plans", "dental-chart", "services", "products", "ratings", "workflows"} <= dental
    assert "rooms" not in dental


def test_a_machine_client_may_list_and_no_token_may_not(
    server: RunningServer, local_issuer: LocalIssuer
) -> None:
    """Public data for any authenticated caller (a machine with no resource scope too); without a
    token UNAUTHENTICATED."""
    machine = local_issuer.machine_token(scopes=["simplu/businesses.read"])
    assert list_types(server, machine, business_pb2.BUSINESS_TYPE_HOTEL).resource_types
    with pytest.raises(grpc.RpcError) as raised:
        server.resource.ListResourceTypes(
            resource_pb2.ListResourceTypesRequest(business_type=business_pb2.BUSINESS_TYPE_HOTEL), timeout=10
        )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_an_unspecified_or_unknown_business_type_is_invalid_argument(
    server: RunningServer, local_issuer: LocalIssuer
) -> None:
    """BUSINESS_TYPE_UNSPECIFIED and a number the enum does not have name the business_type field."""
    token = local_issuer.user_token()
    for value in (business_pb2.BUSINESS_TYPE_UNSPECIFIED, 99):
        with pytest.raises(grpc.RpcError) as raised:
            list_types(server, token, value)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(raised.value)
        assert status is not None
        assert [field for field, _ in violations_of(status)] == ["business_type"]
