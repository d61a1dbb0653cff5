"""ResourceService as production wires it (wiring.build_deps): business created over BusinessService,
resources on its Citrus shard, and the single-database mode without Citrus."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from simplu.v1 import business_pb2, resource_pb2

from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer, create_business_table
from tests.fixtures.citrus import CITRUS_API_KEY
from tests.fixtures.server import MakeServer, RunningServer

pytestmark = pytest.mark.integration

REGION = "us-east-1"


def _server(make_server: MakeServer, moto_server: MotoServer, **overrides: Any) -> RunningServer:
    table = f"biz-{secrets.token_hex(4)}"
    create_business_table(moto_server.url, REGION, table)
    return make_server(dynamodb_endpoint=moto_server.url, dynamodb_business_info_table=table, **overrides)


def _business(
    server: RunningServer,
    token: str,
    business_type: business_pb2.BusinessType = business_pb2.BUSINESS_TYPE_DENTAL,
) -> str:
    created = server.business.CreateBusiness(
        business_pb2.CreateBusinessRequest(
            business=business_pb2.Business(
                name="Clinic", type=business_type, locations=[business_pb2.Location(id="main", name="Main")]
            )
        ),
        metadata=(("authorization", f"Bearer {token}"),),
        timeout=10,
    )
    return str(created.business.id)


def _round_trip(server: RunningServer, token: str, business_id: str) -> resource_pb2.Resource:
    md: tuple[tuple[str, str | bytes], ...] = (("authorization", f"Bearer {token}"),)
    resource = resource_pb2.Resource(business_id=business_id, location_id="main", resource_type="patients")
    resource.data.update({"name": "Ana"})
    created = server.resource.CreateResource(
        resource_pb2.CreateResourceRequest(resource=resource), metadata=md, timeout=10
    )
    got = server.resource.GetResource(
        resource_pb2.GetResourceRequest(
            business_id=business_id,
            location_id="main",
            resource_type="patients",
            resource_id=created.resource_id,
        ),
        metadata=md,
        timeout=10,
    )
    assert got == created
    return got


def test_wired_server_serves_resources_on_citrus_shards(
    make_server: MakeServer,
    moto_server: MotoServer,
    citrus: CitrusEmulator,
    make_user_token: Callable[..., tuple[str, str]],
) -> None:
    """The owner who created a business over BusinessService stores and reads a resource on its shard."""
    server = _server(make_server, moto_server, citrus_server_url=citrus.url, citrus_api_key=CITRUS_API_KEY)
    _, owner_token = make_user_token("wired-owner")
    business_id = _business(server, owner_token)
    got = _round_trip(server, owner_token, business_id)
    assert dict(got.data) == {"name": "Ana"}
    shard = citrus.registrations()[f"{business_id}-main"]
    assert server.deps.pools is not None
    assert [s.shard_id for s in server.deps.pools.stats()] == [shard]


def test_first_resource_use_registers_a_pending_location_and_records_it(
    make_server: MakeServer,
    moto_server: MotoServer,
    citrus: CitrusEmulator,
    make_user_token: Callable[..., tuple[str, str]],
) -> None:
    """Citrus down at create: the first resource request registers the location once and business
    info stops listing it as unregistered."""
    server = _server(
        make_server,
        moto_server,
        citrus_server_url=citrus.url,
        citrus_api_key=CITRUS_API_KEY,
        citrus_retry_attempts=1,
    )
    _, owner_token = make_user_token("lazy-owner")
    citrus.stop()
    try:
        business_id = _business(server, owner_token)
    finally:
        citrus.start()
    assert server.deps.business_store is not None
    stored = server.deps.business_store.get(business_id)
    assert stored is not None
    assert stored.unregistered_location_ids == ("main",)
    assert f"{business_id}-main" not in citrus.registrations()

    _round_trip(server, owner_token, business_id)

    assert f"{business_id}-main" in citrus.registrations()
    stored = server.deps.business_store.get(business_id)
    assert stored is not None
    assert stored.unregistered_location_ids == ()


def test_wired_server_single_database_mode(
    make_server: MakeServer,
    moto_server: MotoServer,
    fresh_database: Callable[[], str],
    admin_token: str,
) -> None:
    """Without CITRUS_SERVER_URL every location is on shard "default" (DATABASE_*), migrated on first use."""
    target = urlsplit(fresh_database())
    server = _server(
        make_server,
        moto_server,
        database_host=target.hostname or "127.0.0.1",
        database_port=target.port or 5432,
        database_username=target.username or "postgres",
        database_password=target.password or "",
        database_name=target.path.lstrip("/"),
    )
    business_id = _business(server, admin_token, business_pb2.BUSINESS_TYPE_HOTEL)
    md: tuple[tuple[str, str | bytes], ...] = (("authorization", f"Bearer {admin_token}"),)
    resource = resource_pb2.Resource(business_id=business_id, location_id="main", resource_type="rooms")
    created = server.resource.CreateResource(
        resource_pb2.CreateResourceRequest(resource=resource, resource_id="101"), metadata=md, timeout=10
    )
    assert created.resource_id == "101"
    assert created.business_type == business_pb2.BUSINESS_TYPE_HOTEL
    assert server.deps.pools is not None
    assert [s.shard_id for s in server.deps.pools.stats()] == ["default"]
