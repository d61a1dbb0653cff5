"""GetTenantUsage over a real channel: real resource calls counted per location, storage read from
the shards (Citrus emulator, real PostgreSQL), admins only, and /metrics bounded to the top tenants."""

from __future__ import annotations

import os
import socket
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import psycopg
import pytest
from simplu.v1 import resource_pb2, shard_admin_pb2

from simplu_grpc.adapters.postgres import migrator
from simplu_grpc.adapters.postgres.storage_usage import StorageReader
from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer
from simplu_grpc.devstack.postgres import PgServer
from simplu_grpc.domain.business.model import Business, BusinessType, Location, Member, Permissions, Role
from tests.fixtures.server import MakeServer
from tests.integration.test_shard_admin import (  # the ShardAdmin suite's stack and fixtures
    Seen,
    Stack,
    new_citrus,
    seen,  # noqa: F401  # fixture
    server_env,
    table,  # noqa: F401  # fixture
    uid,
)

pytestmark = pytest.mark.integration

ADMIN = shard_admin_pb2


@dataclass
class UsageStack(Stack):
    metrics_port: int = 0


@pytest.fixture
def usage_stack(
    *,
    request: pytest.FixtureRequest,
    make_server: MakeServer,
    make_citrus: Callable[..., CitrusEmulator],
    moto_server: MotoServer,
    pg: PgServer,
    admin_token: str,
) -> UsageStack:
    """A server on a fresh 3-shard emulator; /metrics on its own port with the top 2 tenants."""
    # The ShardAdmin suite's fixtures (imported above): every response is scanned for secrets.
    table_name: str = request.getfixturevalue("table")
    recorded: Seen = request.getfixturevalue("seen")
    citrus = new_citrus(make_citrus, pg, recorded)
    env = {
        **server_env(citrus, moto_server.url, table_name),
        "TENANT_METRICS_TOP": "2",
        # The warm path, as in production: repeated calls read the business from the cache.
        "BUSINESS_CACHE_TTL_SECONDS": "30",
    }
    port = free_port()
    server = make_server(env=env, metrics_port=port)
    return UsageStack(
        server, citrus, pg, admin_token, recorded, table_name, moto_server.url, metrics_port=port
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_resource(stack: Stack, business_id: str, location_id: str, resource_id: str, token: str = "") -> None:
    stack.server.resource.GetResource(
        resource_pb2.GetResourceRequest(
            business_id=business_id, location_id=location_id, resource_type="clients", resource_id=resource_id
        ),
        metadata=stack.md(token or None),
        timeout=10,
    )


def test_three_locations_are_ranked_by_their_load(usage_stack: UsageStack) -> None:
    """Locations driven at 10 / 100 / 1,000 GetResource calls come back in that order, by
    requests, shard time and rows, with counts within 5 % (here: exact, the sketch never filled),
    and the answer names the replica (this process) and the window."""
    stack = usage_stack
    business_id = uid()
    stack.registered(business_id, "l10", "l100", "l1000")
    driven = {"l10": 10, "l100": 100, "l1000": 1000}
    for location, calls in driven.items():
        created = stack.create_resource(business_id, location)
        for _ in range(calls):
            get_resource(stack, business_id, location, created.resource_id)

    for order in (
        ADMIN.TENANT_USAGE_ORDER_REQUESTS,
        ADMIN.TENANT_USAGE_ORDER_UNSPECIFIED,  # shard time
        ADMIN.TENANT_USAGE_ORDER_ROWS,
    ):
        answer = stack.call("GetTenantUsage", ADMIN.GetTenantUsageRequest(order_by=order))
        assert [t.location_id for t in answer.tenants] == ["l1000", "l100", "l10"], order
    answer = stack.call(
        "GetTenantUsage",
        ADMIN.GetTenantUsageRequest(order_by=ADMIN.TENANT_USAGE_ORDER_REQUESTS, window_minutes=1),
    )
    shard_id = stack.citrus.registrations()[f"{business_id}-l10"]
    for tenant in answer.tenants:
        expected = driven[tenant.location_id]
        # Each location also had its one create (a write): counted as a request too.
        assert abs(tenant.load.requests - (expected + 1)) <= 0.05 * expected
        assert abs(tenant.load.rows_read - expected) <= 0.05 * expected
        assert tenant.load.rows_written == 1
        assert tenant.load.errors == 0
        assert tenant.load.shard_time.ToNanoseconds() > 0
        assert tenant.load.shard_time_overcount.ToNanoseconds() == 0
        assert (tenant.business_id, tenant.shard_id) == (business_id, shard_id)
    assert answer.load_exact
    assert answer.window_minutes == 1
    assert answer.replica.host == socket.gethostname()
    assert answer.replica.pid == os.getpid()
    span = answer.window_end.ToNanoseconds() - answer.window_start.ToNanoseconds()
    assert 60e9 <= span <= 120e9
    assert answer.top_k == 1000
    assert answer.tracked_locations == 3
    # One shard's view: the same three; another shard's: none of them.
    other = next(s.shard_id for s in stack.citrus.shards() if s.shard_id != shard_id)
    assert len(stack.call("GetTenantUsage", ADMIN.GetTenantUsageRequest(shard_id=shard_id)).tenants) == 3
    assert stack.call("GetTenantUsage", ADMIN.GetTenantUsageRequest(shard_id=other)).tenants == []


def test_failed_calls_count_as_errors(usage_stack: UsageStack) -> None:
    """A GetResource of a missing resource reaches the shard and fails: one request, one error."""
    stack = usage_stack
    business_id = uid()
    stack.registered(business_id, "l1")
    with pytest.raises(grpc.RpcError) as missing:
        get_resource(stack, business_id, "l1", "nope")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    answer = stack.call(
        "GetTenantUsage", ADMIN.GetTenantUsageRequest(order_by=ADMIN.TENANT_USAGE_ORDER_ERRORS)
    )
    assert [(t.location_id, t.load.requests, t.load.errors) for t in answer.tenants] == [("l1", 1, 1)]


def test_storage_per_location_and_type_is_read_from_the_shards(usage_stack: UsageStack) -> None:
    """Ordered by stored rows or bytes: rows and bytes per resource type, exact on a small shard,
    for one shard or every shard, with the load of the same locations attached; read-only."""
    stack = usage_stack
    business_id = uid()
    shard_id = stack.registered(business_id, "big", "small")
    for _ in range(3):
        stack.create_resource(business_id, "big", "clients")
    stack.create_resource(business_id, "big", "staff")
    stack.create_resource(business_id, "small", "clients")
    large = resource_pb2.CreateResourceRequest(
        resource=resource_pb2.Resource(business_id=business_id, location_id="small", resource_type="invoices")
    )
    large.resource.data.update({"text": os.urandom(20_000).hex()})  # incompressible: 40 kB stored
    stack.server.resource.CreateResource(large, metadata=stack.md(), timeout=10)

    by_rows = stack.call(
        "GetTenantUsage",
        ADMIN.GetTenantUsageRequest(shard_id=shard_id, order_by=ADMIN.TENANT_USAGE_ORDER_STORED_ROWS),
    )
    assert [(t.location_id, t.stored_rows) for t in by_rows.tenants] == [("big", 4), ("small", 2)]
    big = by_rows.tenants[0]
    assert {(s.resource_type, s.rows) for s in big.storage} == {("clients", 3), ("staff", 1)}
    assert big.stored_bytes == sum(s.bytes for s in big.storage) > 0
    assert big.load.rows_written == 4  # the load of the same location, from this replica
    [note] = by_rows.storage
    assert (note.shard_id, note.exact, note.sampled_percent, note.error) == (shard_id, True, 100.0, "")
    assert note.table_bytes > 0

    by_bytes = stack.call(
        "GetTenantUsage", ADMIN.GetTenantUsageRequest(order_by=ADMIN.TENANT_USAGE_ORDER_STORED_BYTES)
    )
    assert [t.location_id for t in by_bytes.tenants] == ["small", "big"]
    assert by_bytes.tenants[0].stored_bytes > 40_000
    # Every shard Citrus lists was read (the empty ones too), and reading changed nothing: the
    # shards no resource call ever used are still not migrated.
    assert sorted(n.shard_id for n in by_bytes.storage) == sorted(s.shard_id for s in stack.citrus.shards())
    assert all(n.error == "" for n in by_bytes.storage)
    for shard in stack.citrus.shards():
        if shard.shard_id != shard_id:
            with stack.pg.connect(shard.database) as conn:
                row = conn.execute("SELECT to_regclass('resources') IS NULL").fetchone()
            assert row == (True,), shard.shard_id


def test_storage_of_a_large_table_is_estimated_from_a_sample(fresh_database: Callable[[], str]) -> None:
    """Above the exact bound the reader samples pages (never the whole table) and scales up:
    marked estimated, with its sampled percentage, and close to the truth on an even table."""
    dsn = fresh_database()
    migrator.migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO resources (business_id, location_id, resource_type, resource_id, business_type, data)
            SELECT 'b1', 'l' || (i % 4), 'clients', 'r' || i, 'dental',
                   jsonb_build_object('n', repeat('x', 200))
            FROM generate_series(1, 20000) AS i
            """
        )
        heap = int(conn.execute("SELECT pg_relation_size('resources')").fetchone()[0])  # type: ignore[index]  # one row, always
    storage = StorageReader(exact_max_bytes=heap // 5).read(dsn, locations=10, by_bytes=False)
    assert not storage.exact
    assert 15 <= storage.sampled_percent <= 25
    rows = {t.location_id: t.rows for t in storage.types}
    assert sorted(rows) == ["l0", "l1", "l2", "l3"]
    for estimate in rows.values():
        assert 2500 <= estimate <= 10_000  # 5,000 each in truth


def test_only_admins_may_read_tenant_usage(
    usage_stack: UsageStack,
    make_user_token: Callable[..., tuple[str, str]],
    machine_token: Callable[..., str],
) -> None:
    """A business owner (who may use its own locations) and a machine with resource scopes get
    PERMISSION_DENIED, for their own business's shard too; the admin scope is enough."""
    stack = usage_stack
    owner_sub, owner_token = make_user_token(f"owner-{uid()}")
    business = Business(
        id=uid(),
        name="Owned",
        type=BusinessType.DENTAL,
        locations=(Location(id="l1", name="l1"),),
        permissions=Permissions(
            roles={"owner": Role(permissions=("*",))}, members={owner_sub: Member(role="owner")}
        ),
    )
    store = stack.server.deps.business_store
    assert store is not None
    store.create(business)
    shard_id = str(stack.citrus.register(business.id, "l1", "dental")["shardId"])
    request = resource_pb2.CreateResourceRequest(
        resource=resource_pb2.Resource(business_id=business.id, location_id="l1", resource_type="clients")
    )
    stack.server.resource.CreateResource(request, metadata=stack.md(owner_token), timeout=10)  # owns it

    for token in (owner_token, machine_token()):
        for asked in (ADMIN.GetTenantUsageRequest(), ADMIN.GetTenantUsageRequest(shard_id=shard_id)):
            error = stack.fails("GetTenantUsage", asked, token=token)
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    allowed = stack.server.admin.GetTenantUsage(
        ADMIN.GetTenantUsageRequest(), metadata=stack.md(machine_token(["simplu/admin"])), timeout=10
    )
    assert [t.business_id for t in allowed.tenants] == [business.id]


def test_bad_arguments_are_invalid(usage_stack: UsageStack) -> None:
    """A window not offered, a page size over 100 and an unknown order are INVALID_ARGUMENT; an
    unknown shard is NOT_FOUND when its storage is asked for."""
    stack = usage_stack
    for request in (
        ADMIN.GetTenantUsageRequest(window_minutes=2),
        ADMIN.GetTenantUsageRequest(page_size=101),
        ADMIN.GetTenantUsageRequest(order_by=99),  # type: ignore[arg-type]  # an undefined enum number on purpose
    ):
        assert stack.fails("GetTenantUsage", request).code() == grpc.StatusCode.INVALID_ARGUMENT
    unknown = ADMIN.GetTenantUsageRequest(shard_id="shard-99", order_by=ADMIN.TENANT_USAGE_ORDER_STORED_BYTES)
    assert stack.fails("GetTenantUsage", unknown).code() == grpc.StatusCode.NOT_FOUND


def test_metrics_show_the_top_tenants_only(usage_stack: UsageStack) -> None:
    """With TENANT_METRICS_TOP=2, /metrics has two series per tenant metric however many
    locations were served: the two busiest (by shard time)."""
    stack = usage_stack
    business_id = uid()
    locations = ("l1", "l2", "l3", "l4", "l5")
    stack.registered(business_id, *locations)
    for weight, location in enumerate(locations, start=1):
        created = stack.create_resource(business_id, location)
        for _ in range(weight * 20):
            get_resource(stack, business_id, location, created.resource_id)
    port = stack.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    for metric in ("simplu_tenant_top_shard_seconds", "simplu_tenant_top_requests", "simplu_tenant_top_rows"):
        series = [line for line in text.splitlines() if line.startswith(metric + "{")]
        assert len(series) == 2, metric
    requests = [line for line in text.splitlines() if line.startswith("simplu_tenant_top_requests{")]
    assert {line.split('location="')[1].split('"')[0] for line in requests} <= set(locations)
    served = stack.call("GetTenantUsage", ADMIN.GetTenantUsageRequest(page_size=2))
    assert {line.split('location="')[1].split('"')[0] for line in requests} == {
        t.location_id for t in served.tenants
    }
