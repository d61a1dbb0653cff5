"""ResourceOps reports every shard call to its LoadRecorder: per attempt, on the shard that ran it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from simplu_grpc import context
from simplu_grpc.domain.admin.tenant_load import TenantLoad
from simplu_grpc.domain.auth.authz import Authorizer
from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.domain.business.model import Business, BusinessType, Location
from simplu_grpc.domain.placement.routing import RoutingCache
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.resources.model import ResourceKey, StoredResource
from simplu_grpc.domain.resources.ops import ResourceOps
from simplu_grpc.errors import NotFound, ShardUnreachable
from simplu_grpc.metrics import Metrics

BUSINESS = Business(
    id="clinic1", name="Clinic", type=BusinessType.DENTAL, locations=(Location(id="l1", name="l1"),)
)
KEY = ResourceKey("clinic1", "l1", "patients", "p1")
ADMIN = Principal(
    subject="op", username="op", token_use="access", client_id="app", groups=frozenset({"admin"})
)
SHARD_A = ShardAssignment(shard_id="shard-a", connection_string="postgresql://a/x")
SHARD_B = ShardAssignment(shard_id="shard-b", connection_string="postgresql://b/x")


class Directory:
    """Citrus in miniature: answers ``current`` (a test changes it to fail the shard over)."""

    def __init__(self) -> None:
        self.current = SHARD_A

    def get_shard(self, business_id: str, location_id: str) -> ShardAssignment | None:
        return self.current

    def register(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment:
        raise AssertionError("every location of these tests is registered")


class Pools:
    """Hands out a placeholder session; a shard listed in ``down`` cannot be connected to."""

    def __init__(self) -> None:
        self.down: set[str] = set()

    @contextlib.contextmanager
    def connection(self, assignment: ShardAssignment) -> Iterator[str]:
        if assignment.shard_id in self.down:
            raise ShardUnreachable(f"shard {assignment.shard_id} refused the connection")
        yield assignment.shard_id


class Store:
    """Finds ``p1`` only."""

    def get(self, session: str, key: ResourceKey) -> StoredResource:
        if key.resource_id != "p1":
            raise NotFound("resource not found")
        now = datetime.now(UTC)
        return StoredResource(key, "dental", {}, None, None, now, now, 1)


@pytest.fixture
def parts() -> tuple[ResourceOps, TenantLoad, Directory, Pools]:
    load = TenantLoad(capacity=10)
    directory = Directory()
    pools = Pools()
    ops = ResourceOps(
        businesses={"clinic1": BUSINESS},  # type: ignore[arg-type]  # a dict has .get like the cache
        authorizer=Authorizer(admin_group="admin"),
        routing=RoutingCache(directory, ttl=60, stale_max=60, metrics=Metrics(), min_refresh_interval=0),
        pools=pools,  # type: ignore[arg-type]  # the pool port: connection(assignment) only
        store=Store(),  # type: ignore[arg-type]  # the store port: get only
        load=load,
    )
    return ops, load, directory, pools


def figures(load: TenantLoad) -> dict[str, tuple[int, int, int, int]]:
    """shard -> (requests, errors, rows read, rows written) of clinic1/l1."""
    return {
        f.shard_id: (f.requests, f.errors, f.rows_read, f.rows_written)
        for f in load.top(minutes=1).tenants
        if (f.business_id, f.location_id) == ("clinic1", "l1")
    }


def test_a_read_counts_one_request_and_one_row(
    parts: tuple[ResourceOps, TenantLoad, Directory, Pools],
) -> None:
    """A found resource: one request, one row read, shard time measured; a missing one: an error."""
    ops, load, _, _ = parts
    with context.bind(principal=ADMIN):
        ops.get(KEY)
        with pytest.raises(NotFound):
            ops.get(ResourceKey("clinic1", "l1", "patients", "nope"))
    assert figures(load) == {"shard-a": (2, 1, 1, 0)}
    assert load.top(minutes=1).tenants[0].shard_ns > 0


def test_a_failed_over_read_counts_on_both_shards(
    parts: tuple[ResourceOps, TenantLoad, Directory, Pools],
) -> None:
    """Shard A refuses, Citrus now says B: a failed attempt on A, the read on B."""
    ops, load, directory, pools = parts
    with context.bind(principal=ADMIN):
        ops.get(KEY)  # routes to A and caches it
        pools.down.add("shard-a")
        directory.current = SHARD_B
        ops.get(KEY)
    assert figures(load) == {"shard-a": (2, 1, 1, 0), "shard-b": (1, 0, 1, 0)}


def test_a_shard_marked_inactive_still_serves_and_counts_its_tenants(
    parts: tuple[ResourceOps, TenantLoad, Directory, Pools],
) -> None:
    """isActive=false only stops new businesses (issue 9 item 10): an existing tenant's read runs
    on the shard and is counted like any other."""
    ops, load, directory, _ = parts
    directory.current = ShardAssignment(
        shard_id="shard-a", connection_string="postgresql://a/x", is_active=False
    )
    with context.bind(principal=ADMIN):
        ops.get(KEY)
    assert figures(load) == {"shard-a": (1, 0, 1, 0)}
