"""A soft-deleted business answers the same way from BusinessService, ResourceService and ShardAdmin.

One rule (``authz.require_live``): members and machine clients are told NOT_FOUND (for them
the business is gone); platform admins, who still read it, are told FAILED_PRECONDITION /
BUSINESS_DELETED when they try to act on it. Real server, moto, Citrus emulator, channel.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import grpc
import pytest
from simplu.v1 import business_pb2, resource_pb2, shard_admin_pb2

from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer, create_business_table
from tests.fixtures.citrus import CITRUS_API_KEY
from tests.fixtures.server import MakeServer, RunningServer
from tests.fixtures.tokens import LocalIssuer
from tests.integration.lifecycle_stack import Metadata, answer, bearer

pytestmark = pytest.mark.integration

REGION = "us-east-1"


@pytest.fixture
def server(make_server: MakeServer, moto_server: MotoServer, module_citrus: CitrusEmulator) -> RunningServer:
    table = f"deleted-{secrets.token_hex(4)}"
    create_business_table(moto_server.url, REGION, table)
    return make_server(
        env={
            "DYNAMODB_ENDPOINT": moto_server.url,
            "DYNAMODB_BUSINESS_INFO_TABLE": table,
            "CITRUS_SERVER_URL": module_citrus.url,
            "CITRUS_API_KEY": CITRUS_API_KEY,
            "CITRUS_TIMEOUT": "1000",
            "CITRUS_RETRY_ATTEMPTS": "2",
        }
    )


def test_a_deleted_business_answers_alike_from_every_service(
    server: RunningServer, local_issuer: LocalIssuer, admin_token: str
) -> None:
    """After DeleteBusiness: its owner gets NOT_FOUND / BUSINESS_NOT_FOUND from BusinessService and
    ResourceService; a platform admin gets FAILED_PRECONDITION / BUSINESS_DELETED from BusinessService,
    ResourceService and ShardAdmin (and still reads it)."""
    owner_sub = str(uuid.uuid4())
    owner = bearer(local_issuer.user_token(sub=owner_sub, username=f"owner-{owner_sub[:8]}"))
    admin = bearer(admin_token)
    created = server.business.CreateBusiness(
        business_pb2.CreateBusinessRequest(
            business=business_pb2.Business(
                name="Gone Dental",
                type=business_pb2.BUSINESS_TYPE_DENTAL,
                locations=[business_pb2.Location(id="main", name="Main")],
            )
        ),
        metadata=owner,
        timeout=20,
    ).business
    business_id = created.id
    listing = resource_pb2.ListResourcesRequest(
        business_id=business_id, location_id="main", resource_type="patients"
    )
    server.resource.ListResources(listing, metadata=owner, timeout=10)  # reachable while active
    server.business.DeleteBusiness(
        business_pb2.DeleteBusinessRequest(business_id=business_id), metadata=owner, timeout=10
    )

    def add_location(md: Metadata) -> Any:
        request = business_pb2.AddLocationRequest(
            business_id=business_id, location=business_pb2.Location(id="second", name="Second")
        )
        return server.business.AddLocation(request, metadata=md, timeout=10)

    gone = (grpc.StatusCode.NOT_FOUND, "BUSINESS_NOT_FOUND")
    get = business_pb2.GetBusinessRequest(business_id=business_id)
    assert answer(lambda: server.business.GetBusiness(get, metadata=owner, timeout=10)) == gone
    assert answer(lambda: add_location(owner)) == gone
    assert answer(lambda: server.resource.ListResources(listing, metadata=owner, timeout=10)) == gone

    deleted = (grpc.StatusCode.FAILED_PRECONDITION, "BUSINESS_DELETED")
    seen = server.business.GetBusiness(get, metadata=admin, timeout=10)
    assert seen.status == business_pb2.BUSINESS_STATUS_DELETED
    assert answer(lambda: add_location(admin)) == deleted
    assert answer(lambda: server.resource.ListResources(listing, metadata=admin, timeout=10)) == deleted
    register = shard_admin_pb2.RegisterLocationRequest(business_id=business_id, location_id="main")
    assert answer(lambda: server.admin.RegisterLocation(register, metadata=admin, timeout=10)) == deleted
