"""ShardAdminService over a real channel: the Citrus emulator (3 shards), moto DynamoDB, real shard pools.

Every response and every log line captured in these tests is scanned for the shard password
and the Citrus API key (``no_secrets``).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from grpc_status import rpc_status
from simplu.v1 import business_pb2, resource_pb2, shard_admin_pb2

from simplu_grpc.adapters.postgres import migrator
from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer, create_business_table
from simplu_grpc.devstack.postgres import PgServer
from simplu_grpc.domain.business.model import Business, BusinessType, Location
from simplu_grpc.interceptors.errors import error_info_of
from tests.fixtures.citrus import CITRUS_API_KEY
from tests.fixtures.faultproxy import FaultProxy
from tests.fixtures.scripted_http import ScriptedHTTPServer, serve
from tests.fixtures.server import MakeServer, RunningServer

pytestmark = pytest.mark.integration

REGION = "us-east-1"
ADMIN = shard_admin_pb2


# --- secrets: every response and log line of these tests is scanned ------------------------


@dataclass
class Seen:
    """Texts the tests saw: responses as JSON, error details; scanned at teardown for ``secrets``."""

    token: str = ""
    texts: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=lambda: [CITRUS_API_KEY])

    def add(self, message: Message) -> Message:
        self.texts.append(json_format.MessageToJson(message))
        return message

    def add_error(self, error: grpc.RpcError) -> grpc.RpcError:
        self.texts.append(f"{error.code()} {error.details()}")
        for key, value in error.trailing_metadata() or ():
            self.texts.append(f"{key}={value!r}")
        return error


def md(seen: Seen) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {seen.token}"),)


@pytest.fixture
def seen(caplog: pytest.LogCaptureFixture, admin_token: str) -> Iterator[Seen]:
    """Collects responses; afterwards asserts no response or log line holds a password or the API key."""
    caplog.set_level(logging.DEBUG)
    recorded = Seen(token=admin_token)
    yield recorded
    # caplog.records alone would be the teardown's records only.
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    assert records, "no log records were captured: the scan would prove nothing"
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in records)
    for text in [*recorded.texts, logged]:
        for secret in recorded.secrets:
            assert secret not in text


# --- the stack ------------------------------------------------------------------------------


@dataclass
class Stack:
    server: RunningServer
    citrus: CitrusEmulator
    pg: PgServer
    token: str
    seen: Seen
    table: str
    moto_url: str

    def md(self, token: str | None = None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token or self.token}"),)

    def call(self, method: str, request: Message, *, timeout: float = 10.0) -> Any:
        """A ShardAdmin call with the admin token; the response is recorded for the secret scan."""
        return self.seen.add(getattr(self.server.admin, method)(request, metadata=self.md(), timeout=timeout))

    def fails(self, method: str, request: Message, token: str | None = None) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as info:
            getattr(self.server.admin, method)(request, metadata=self.md(token), timeout=10)
        return self.seen.add_error(info.value)

    def business(
        self,
        business_id: str,
        *locations: str,
        pending: tuple[str, ...] = (),
        kind: BusinessType = BusinessType.DENTAL,
    ) -> Business:
        """A business with these locations, written straight to business info (not registered)."""
        business = Business(
            id=business_id,
            name=f"Business {business_id}",
            type=kind,
            locations=tuple(Location(id=loc, name=loc) for loc in locations),
            unregistered_location_ids=pending,
        )
        store = self.server.deps.business_store
        assert store is not None
        store.create(business)
        return business

    def registered(self, business_id: str, *locations: str) -> str:
        """Create and register with the emulator (not counted as a client call); the shard id."""
        self.business(business_id, *locations)
        shard = ""
        for loc in locations:
            shard = str(self.citrus.register(business_id, loc, "dental")["shardId"])
        return shard

    def create_resource(self, business_id: str, location_id: str, name: str = "clients") -> Any:
        request = resource_pb2.CreateResourceRequest(
            resource=resource_pb2.Resource(
                business_id=business_id, location_id=location_id, resource_type=name
            )
        )
        request.resource.data.update({"name": "Ana"})
        return self.server.resource.CreateResource(request, metadata=self.md(), timeout=10)

    def list_resources(self, business_id: str, location_id: str) -> Any:
        request = resource_pb2.ListResourcesRequest(
            business_id=business_id, location_id=location_id, resource_type="clients", page_size=5
        )
        return self.server.resource.ListResources(request, metadata=self.md(), timeout=10)

    def backend_pids(self, shard_id: str) -> set[int]:
        """PIDs of this server's connections to a shard database, as PostgreSQL lists them."""
        database = self.citrus.shard(shard_id).database
        with self.pg.connect() as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'simplu-grpc'",
                (database,),
            ).fetchall()
        return {int(row[0]) for row in rows}


def server_env(citrus: CitrusEmulator, moto_url: str, table: str) -> dict[str, str]:
    return {
        "CITRUS_SERVER_URL": citrus.url,
        "CITRUS_API_KEY": CITRUS_API_KEY,
        "CITRUS_TIMEOUT": "1000",
        "CITRUS_RETRY_ATTEMPTS": "2",
        "DYNAMODB_ENDPOINT": moto_url,
        "DYNAMODB_BUSINESS_INFO_TABLE": table,
        "DYNAMODB_TIMEOUT": "1000",
        "SHARD_POOL_MIN_SIZE": "2",
        "SHARD_POOL_MAX_SIZE": "4",
        "SHARD_CONNECT_TIMEOUT_SECONDS": "2",
        "BUSINESS_CACHE_TTL_SECONDS": "0",
    }


def new_citrus(make_citrus: Callable[..., CitrusEmulator], pg: PgServer, seen: Seen) -> CitrusEmulator:
    """A 3-shard emulator (capacity 3) whose connection strings carry a password the scan looks for.

    With trust authentication (CI, throwaway clusters) the password is ours and unique; with a
    password-protected server it must be the server's, and is scanned for unless it is trivial.
    """
    own = f"shard-pw-{secrets.token_hex(6)}" if not pg.password else None
    citrus = make_citrus(initial_shards=3, shard_password=own)
    if len(citrus.shard_password) >= 12:
        seen.secrets.append(citrus.shard_password)
    return citrus


@pytest.fixture(scope="module")
def table(moto_server: MotoServer) -> str:
    name = f"admin-{secrets.token_hex(4)}"
    create_business_table(moto_server.url, REGION, name)
    return name


@pytest.fixture
def stack(
    *,
    make_server: MakeServer,
    make_citrus: Callable[..., CitrusEmulator],
    moto_server: MotoServer,
    table: str,
    pg: PgServer,
    admin_token: str,
    seen: Seen,
) -> Stack:
    """A server on a fresh 3-shard emulator (capacity 3 each) and the session's moto DynamoDB."""
    citrus = new_citrus(make_citrus, pg, seen)
    server = make_server(env=server_env(citrus, moto_server.url, table))
    return Stack(server, citrus, pg, admin_token, seen, table, moto_server.url)


def uid(prefix: str = "b") -> str:
    return f"{prefix}{secrets.token_hex(5)}"


def poll(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --- Citrus views ---------------------------------------------------------------------------


def test_list_shards_and_usage_match_the_emulator(stack: Stack) -> None:
    """Counts, usage % (2 decimals) and near-capacity follow the emulator; an inactive shard is inactive."""
    for _ in range(5):  # 3 businesses fill shard-01, 2 go to shard-02
        stack.registered(uid(), "l1")
    stack.citrus.set_active("shard-03", False)

    listed = stack.call("ListShards", ADMIN.ListShardsRequest())
    assert listed.citrus_reachable
    assert listed.citrus_error == ""
    assert listed.near_capacity_threshold == 80.0
    by_id = {s.shard_id: s for s in listed.shards}
    assert sorted(by_id) == ["shard-01", "shard-02", "shard-03"]
    for state in stack.citrus.shards():
        shard = by_id[state.shard_id]
        assert shard.business_count == len(state.businesses)
        assert shard.max_businesses == 3
        assert shard.listed_by_citrus
        assert shard.HasField("last_health_check_time")
    assert [by_id[s].usage_percentage for s in ("shard-01", "shard-02", "shard-03")] == [100.0, 66.67, 0.0]
    assert [by_id[s].near_capacity for s in ("shard-01", "shard-02", "shard-03")] == [True, False, False]
    assert by_id["shard-01"].active
    assert by_id["shard-02"].active
    assert not by_id["shard-03"].active

    # Citrus reports every count here: an empty shard's 0 is a real 0, present on the wire.
    assert all(by_id[s].HasField("business_count") for s in by_id)
    assert all(by_id[s].HasField("usage_percentage") for s in by_id)

    usage = stack.call("GetShardUsage", ADMIN.GetShardUsageRequest(order_by="usage_percentage desc"))
    assert [(u.shard_id, u.business_count, u.usage_percentage, u.active) for u in usage.usage] == [
        ("shard-01", 3, 100.0, True),
        ("shard-02", 2, 66.67, True),
        ("shard-03", 0, 0.0, False),
    ]
    near = stack.call("GetShardUsage", ADMIN.GetShardUsageRequest(near_capacity_only=True))
    assert [u.shard_id for u in near.usage] == ["shard-01"]
    assert near.near_capacity_threshold == 80.0


@pytest.fixture
def quiet_citrus() -> Iterator[ScriptedHTTPServer]:
    """A Citrus that lists a shard and answers capacity without any count (both are optional)."""
    yield from serve(ScriptedHTTPServer())


def test_counts_citrus_did_not_report_are_absent_not_zero(
    make_server: MakeServer,
    quiet_citrus: ScriptedHTTPServer,
    moto_server: MotoServer,
    table: str,
    admin_token: str,
) -> None:
    """ListShards, GetShardUsage and CheckShardCapacity leave unreported counts and usage unset,
    so a client (and grpcurl -emit-defaults) can tell "unknown" from an empty shard."""
    server = make_server(
        env={
            "CITRUS_SERVER_URL": quiet_citrus.url,
            "CITRUS_API_KEY": CITRUS_API_KEY,
            "CITRUS_RETRY_ATTEMPTS": "1",
            "DYNAMODB_ENDPOINT": moto_server.url,
            "DYNAMODB_BUSINESS_INFO_TABLE": table,
        }
    )
    health = [{"shardId": "shard-x", "connectionString": "postgresql://u@127.0.0.1:1/x", "isActive": True}]
    quiet_citrus.set((200, health))
    token = (("authorization", f"Bearer {admin_token}"),)
    listed = server.admin.ListShards(ADMIN.ListShardsRequest(), metadata=token, timeout=10)
    assert listed.citrus_reachable
    [shard] = listed.shards
    assert (shard.shard_id, shard.listed_by_citrus, shard.near_capacity) == ("shard-x", True, False)
    for name in ("business_count", "max_businesses", "usage_percentage", "schema_version"):
        assert not shard.HasField(name), name
    assert not shard.HasField("last_health_check_time")
    printed = json_format.MessageToDict(
        shard, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    assert "business_count" not in printed  # what -emit-defaults prints: nothing, not 0
    assert printed["near_capacity"] is False

    usage = server.admin.GetShardUsage(
        ADMIN.GetShardUsageRequest(order_by="usage_percentage desc"), metadata=token, timeout=10
    )
    [row] = usage.usage
    assert (row.shard_id, row.active) == ("shard-x", True)
    assert not any(row.HasField(n) for n in ("business_count", "max_businesses", "usage_percentage"))

    quiet_citrus.set((200, {"shardId": "shard-x", "canAcceptNewBusiness": True}))
    capacity = server.admin.CheckShardCapacity(
        ADMIN.CheckShardCapacityRequest(shard_id="shard-x"), metadata=token, timeout=10
    )
    assert capacity.can_accept_new_business
    assert not capacity.HasField("business_count")
    assert not capacity.HasField("max_businesses")


def test_get_shard_usage_order_by(stack: Stack) -> None:
    """order_by takes the AIP-132 forms (case and spacing free); anything else is INVALID_ARGUMENT."""
    for _ in range(4):  # 3 fill shard-01, 1 goes to shard-02
        stack.registered(uid(), "l1")
    orders = {
        "": ["shard-01", "shard-02", "shard-03"],
        "shard_id": ["shard-01", "shard-02", "shard-03"],
        "usage_percentage": ["shard-03", "shard-02", "shard-01"],
        "  Usage_Percentage   DESC ": ["shard-01", "shard-02", "shard-03"],
    }
    for order_by, expected in orders.items():
        usage = stack.call("GetShardUsage", ADMIN.GetShardUsageRequest(order_by=order_by))
        assert [u.shard_id for u in usage.usage] == expected, order_by
    error = stack.fails("GetShardUsage", ADMIN.GetShardUsageRequest(order_by="usage"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "order_by" in (error.details() or "")


def test_check_shard_capacity(stack: Stack) -> None:
    """A full shard cannot accept, one with room can; an unknown shard is NOT_FOUND."""
    for _ in range(3):
        stack.registered(uid(), "l1")
    full = stack.call("CheckShardCapacity", ADMIN.CheckShardCapacityRequest(shard_id="shard-01"))
    assert (full.can_accept_new_business, full.business_count, full.max_businesses) == (False, 3, 3)
    roomy = stack.call("CheckShardCapacity", ADMIN.CheckShardCapacityRequest(shard_id="shard-02"))
    assert roomy.can_accept_new_business
    assert roomy.business_count == 0
    error = stack.fails("CheckShardCapacity", ADMIN.CheckShardCapacityRequest(shard_id="shard-99"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = stack.fails("CheckShardCapacity", ADMIN.CheckShardCapacityRequest())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_register_and_locate_a_location(stack: Stack) -> None:
    """RegisterLocation is idempotent; GetLocationShard reads Citrus or the cache and never registers."""
    business_id = uid()
    stack.business(business_id, "l1", "l2", pending=("l1", "l2"), kind=BusinessType.GYM)
    request = ADMIN.GetLocationShardRequest(business_id=business_id, location_id="l1")
    assert stack.fails("GetLocationShard", request).code() == grpc.StatusCode.NOT_FOUND
    assert f"{business_id}-l1" not in stack.citrus.registrations()  # looking up did not register

    registered = stack.call(
        "RegisterLocation", ADMIN.RegisterLocationRequest(business_id=business_id, location_id="l1")
    )
    assert registered.shard_id == stack.citrus.registrations()[f"{business_id}-l1"]
    assert registered.target.endswith(stack.citrus.shard(registered.shard_id).database)
    again = stack.call(
        "RegisterLocation",
        ADMIN.RegisterLocationRequest(
            business_id=business_id, location_id="l1", business_type=business_pb2.BUSINESS_TYPE_GYM
        ),
    )
    assert again.shard_id == registered.shard_id
    assert stack.citrus.calls["register"] == 2
    store = stack.server.deps.business_store
    assert store is not None
    after = store.get(business_id)
    assert after is not None
    assert after.unregistered_location_ids == ("l2",)  # l1 is no longer pending

    located = stack.call("GetLocationShard", request)
    assert (located.shard_id, located.active, located.from_cache) == (registered.shard_id, True, False)
    assert not located.HasField("cache_age")  # Citrus answered: there is no cache entry to age

    # A resource request caches the route; GetLocationShard then answers from the cache...
    stack.create_resource(business_id, "l1")
    stack.citrus.reset_calls()
    cached = stack.call("GetLocationShard", request)
    assert cached.from_cache
    assert cached.HasField("cache_age")
    assert cached.shard_id == registered.shard_id
    assert stack.citrus.calls["get_shard"] == 0
    # ...unless asked to refresh.
    fresh = stack.call(
        "GetLocationShard",
        ADMIN.GetLocationShardRequest(business_id=business_id, location_id="l1", refresh=True),
    )
    assert not fresh.from_cache
    assert not fresh.HasField("cache_age")
    assert stack.citrus.calls["get_shard"] == 1

    for bad in (
        ADMIN.RegisterLocationRequest(business_id=uid(), location_id="l1"),
        ADMIN.RegisterLocationRequest(business_id=business_id, location_id="nope"),
    ):
        assert stack.fails("RegisterLocation", bad).code() == grpc.StatusCode.NOT_FOUND


def test_register_location_refuses_another_business_type(stack: Stack) -> None:
    """A gym's location registered as a dental one: FAILED_PRECONDITION / BUSINESS_TYPE_MISMATCH (the
    request is well formed, business info says otherwise), and Citrus is not asked."""
    business_id = uid()
    stack.business(business_id, "l1", kind=BusinessType.GYM)
    stack.citrus.reset_calls()
    error = stack.fails(
        "RegisterLocation",
        ADMIN.RegisterLocationRequest(
            business_id=business_id, location_id="l1", business_type=business_pb2.BUSINESS_TYPE_DENTAL
        ),
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    status = rpc_status.from_call(error)
    info = error_info_of(status) if status is not None else None
    assert info is not None
    assert info.reason == "BUSINESS_TYPE_MISMATCH"
    assert info.metadata["business_type"] == "gym"
    assert stack.citrus.calls["register"] == 0
    assert f"{business_id}-l1" not in stack.citrus.registrations()


# --- pools and routing -------------------------------------------------------------------


def test_list_pools_and_recycle_replaces_every_connection_without_failing_requests(stack: Stack) -> None:
    """RecyclePool: new backend pids for the shard while concurrent requests on it keep succeeding."""
    business_id = uid()
    shard_id = stack.registered(business_id, "l1")
    stack.create_resource(business_id, "l1")
    pools = stack.call("ListPools", ADMIN.ListPoolsRequest())
    assert [p.shard_id for p in pools.pools] == [shard_id]
    pool = pools.pools[0]
    assert pool.target.endswith(stack.citrus.shard(shard_id).database)
    assert "@" not in pool.target
    assert (pool.pool_min, pool.pool_max) == (2, 4)
    poll(lambda: len(stack.backend_pids(shard_id)) >= 2, what="the pool to open min_size connections")

    errors: list[BaseException] = []
    done = threading.Event()
    served = [0]

    def traffic() -> None:
        while not done.is_set():
            try:
                stack.list_resources(business_id, "l1")
                served[0] += 1
            except BaseException as exc:  # collected, asserted below
                errors.append(exc)
                return

    workers = [threading.Thread(target=traffic) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        poll(lambda: served[0] >= 8, what="traffic before the recycle")
        before = stack.backend_pids(shard_id)  # every connection the pool has, busy or idle
        assert len(before) >= 2
        recycled = stack.call("RecyclePool", ADMIN.RecyclePoolRequest(shard_id=shard_id))
        assert recycled.shard_id == shard_id
        count = served[0]
        poll(lambda: served[0] >= count + 20, what="traffic after the recycle")
        poll(
            lambda: not (stack.backend_pids(shard_id) & before) and len(stack.backend_pids(shard_id)) >= 1,
            what="every old connection to be replaced",
        )
    finally:
        done.set()
        for worker in workers:
            worker.join(timeout=10)
    assert errors == []

    missing = stack.fails("RecyclePool", ADMIN.RecyclePoolRequest(shard_id="shard-03"))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


def test_invalidate_routing_makes_the_next_request_ask_citrus(stack: Stack) -> None:
    """After InvalidateRouting (location, business, all) the next resource request is a Citrus lookup."""
    business_id, other = uid(), uid()
    stack.registered(business_id, "l1", "l2")
    stack.registered(other, "l1")
    for b, loc in ((business_id, "l1"), (business_id, "l2"), (other, "l1")):
        stack.create_resource(b, loc)
    stack.citrus.reset_calls()
    stack.list_resources(business_id, "l1")
    assert stack.citrus.calls["get_shard"] == 0  # warm: from the routing cache

    def invalidate(**kwargs: Any) -> int:
        return int(stack.call("InvalidateRouting", ADMIN.InvalidateRoutingRequest(**kwargs)).dropped)

    assert invalidate(business_id=business_id, location_id="l1") == 1
    stack.list_resources(business_id, "l1")
    assert stack.citrus.calls["get_shard"] == 1
    stack.list_resources(business_id, "l1")
    assert stack.citrus.calls["get_shard"] == 1  # cached again

    assert invalidate(business_id=business_id) == 2
    stack.list_resources(business_id, "l2")
    assert stack.citrus.calls["get_shard"] == 2

    assert invalidate(all=True) == 2  # business/l2 (read again above) and other/l1
    stack.list_resources(other, "l1")
    assert stack.citrus.calls["get_shard"] == 3

    for bad in ({}, {"location_id": "l1"}, {"all": True, "business_id": business_id}):
        error = stack.fails("InvalidateRouting", ADMIN.InvalidateRoutingRequest(**bad))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- migrations -------------------------------------------------------------------------------


def test_migrate_shard_reports_versions(stack: Stack) -> None:
    """MigrateShard applies pending migrations once, reports per shard, and ListShards shows the version
    right after (whether or not this server has a pool for the shard)."""
    target = migrator.latest_version()
    first = stack.call("MigrateShard", ADMIN.MigrateShardRequest(shard_id="shard-03"))
    assert first.target_version == target
    [shard] = first.shards
    assert (shard.shard_id, shard.version_before, shard.version_after, shard.error) == (
        "shard-03",
        0,
        target,
        "",
    )
    assert list(shard.applied) == [m.version for m in migrator.migrations()]
    # This server has no pool for shard-03: ListShards reads the version from the shard itself.
    listed = {s.shard_id: s for s in stack.call("ListShards", ADMIN.ListShardsRequest()).shards}
    assert not listed["shard-03"].HasField("pool")
    assert listed["shard-03"].schema_version == target
    assert listed["shard-01"].schema_version == 0  # not migrated yet
    again = stack.call("MigrateShard", ADMIN.MigrateShardRequest(shard_id="shard-03")).shards[0]
    assert (again.version_before, again.version_after, list(again.applied)) == (target, target, [])

    everything = stack.call("MigrateShard", ADMIN.MigrateShardRequest(all_shards=True))
    assert [s.shard_id for s in everything.shards] == ["shard-01", "shard-02", "shard-03"]
    assert all(s.version_after == target and not s.error for s in everything.shards)

    assert (
        stack.fails("MigrateShard", ADMIN.MigrateShardRequest(shard_id="x")).code()
        == grpc.StatusCode.NOT_FOUND
    )
    assert stack.fails("MigrateShard", ADMIN.MigrateShardRequest()).code() == grpc.StatusCode.INVALID_ARGUMENT

    business_id = uid()
    shard_id = stack.registered(business_id, "l1")
    stack.create_resource(business_id, "l1")
    listed = {s.shard_id: s for s in stack.call("ListShards", ADMIN.ListShardsRequest()).shards}
    assert listed[shard_id].schema_version == target
    assert listed[shard_id].HasField("pool")
    assert all(s.schema_version == target for s in listed.values())  # pool or not, all migrated


# --- dependency status ------------------------------------------------------------------------


def test_dependency_status_when_everything_is_up(stack: Stack) -> None:
    """Every dependency is probed and reported up, with its latency and check time."""
    business_id = uid()
    shard_id = stack.registered(business_id, "l1")
    stack.create_resource(business_id, "l1")
    status = stack.call("GetDependencyStatus", ADMIN.GetDependencyStatusRequest())
    by_name = {d.name: d for d in status.dependencies}
    assert set(by_name) == {"dynamodb", "citrus", "jwks", f"shard/{shard_id}"}
    assert status.all_up
    for dep in status.dependencies:
        assert dep.up
        assert dep.error == ""
        assert dep.HasField("checked_time")
        assert dep.HasField("latency")


def test_answers_within_3s_when_citrus_dynamodb_and_a_shard_are_down(
    *,
    make_server: MakeServer,
    make_citrus: Callable[..., CitrusEmulator],
    fault_proxy: Callable[[str, int], FaultProxy],
    pg: PgServer,
    admin_token: str,
    seen: Seen,
) -> None:
    """ListShards, GetDependencyStatus and ListPools stay fast and say what is down."""
    citrus = new_citrus(make_citrus, pg, seen)
    proxy = fault_proxy(pg.host, pg.port)
    citrus.move_shard("shard-02", proxy.dsn(citrus.shard("shard-02").connection_string))
    with MotoServer() as dynamo:
        table = f"down-{secrets.token_hex(4)}"
        create_business_table(dynamo.url, REGION, table)
        server = make_server(env=server_env(citrus, dynamo.url, table))
        stack = Stack(server, citrus, pg, admin_token, seen, table, dynamo.url)
        # Pools on shard-01 (direct) and shard-02 (through the proxy).
        for _ in range(4):  # 3 businesses fill shard-01, the 4th goes to shard-02
            business_id = uid()
            shard_id = stack.registered(business_id, "l1")
            stack.create_resource(business_id, "l1")
        assert shard_id == "shard-02"
        # Now everything breaks at once.
        proxy.blackhole()
        citrus.stop()
        dynamo.stop()

        for method, request in (
            ("ListShards", ADMIN.ListShardsRequest()),
            ("GetDependencyStatus", ADMIN.GetDependencyStatusRequest()),
            ("ListPools", ADMIN.ListPoolsRequest()),
        ):
            started = time.monotonic()
            response = stack.call(method, request, timeout=30)
            elapsed = time.monotonic() - started
            assert elapsed < 3.0, f"{method} took {elapsed:.2f}s"
            if method == "ListShards":
                assert not response.citrus_reachable
                assert "CITRUS_UNAVAILABLE" in response.citrus_error
                assert {s.shard_id for s in response.shards} == {"shard-01", "shard-02"}
                assert all(not s.listed_by_citrus and s.HasField("pool") for s in response.shards)
                # Citrus said nothing about them: counts and usage are absent, not 0.
                for shard in response.shards:
                    for name in ("business_count", "max_businesses", "usage_percentage"):
                        assert not shard.HasField(name), name
                    assert not shard.HasField("last_health_check_time")
            elif method == "GetDependencyStatus":
                up = {d.name: d.up for d in response.dependencies}
                assert up == {
                    "dynamodb": False,
                    "citrus": False,
                    "jwks": True,
                    "shard/shard-01": True,
                    "shard/shard-02": False,
                }
                assert not response.all_up
                assert all(d.error for d in response.dependencies if not d.up)
            else:
                assert {p.shard_id for p in response.pools} == {"shard-01", "shard-02"}
        proxy.heal()


def test_citrus_down_fails_fast_where_citrus_is_needed(stack: Stack) -> None:
    """With Citrus stopped: ListShards answers from pools; Citrus-only calls are UNAVAILABLE quickly."""
    business_id = uid()
    stack.registered(business_id, "l1")
    stack.create_resource(business_id, "l1")
    stack.citrus.stop()

    listed = stack.call("ListShards", ADMIN.ListShardsRequest())
    assert not listed.citrus_reachable
    assert [s.listed_by_citrus for s in listed.shards] == [False]
    # The active flag is the last one Citrus gave for the shard's routes, not "inactive".
    assert [s.active for s in listed.shards] == [True]
    for method, request in (
        ("GetShardUsage", ADMIN.GetShardUsageRequest()),
        ("CheckShardCapacity", ADMIN.CheckShardCapacityRequest(shard_id="shard-01")),
        ("RegisterLocation", ADMIN.RegisterLocationRequest(business_id=business_id, location_id="l1")),
        ("MigrateShard", ADMIN.MigrateShardRequest(all_shards=True)),
    ):
        started = time.monotonic()
        error = stack.fails(method, request)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, method
        assert time.monotonic() - started < 6.0, method
    report = stack.call("CheckConsistency", ADMIN.CheckConsistencyRequest(business_id=business_id))
    assert findings(report.businesses[0]) == [("FINDING_KIND_CITRUS_UNAVAILABLE", "", "", None)]
    # The location's route is cached: it still resolves, from the cache.
    located = stack.call(
        "GetLocationShard", ADMIN.GetLocationShardRequest(business_id=business_id, location_id="l1")
    )
    assert located.from_cache


def test_single_database_mode(
    make_server: MakeServer,
    fresh_database: Callable[[], str],
    moto_server: MotoServer,
    table: str,
    seen: Seen,
) -> None:
    """Without Citrus, ShardAdmin shows the one database as shard "default" and probes no Citrus."""
    dsn = fresh_database()
    target = psycopg.conninfo.conninfo_to_dict(dsn)
    server = make_server(
        env={
            "DYNAMODB_ENDPOINT": moto_server.url,
            "DYNAMODB_BUSINESS_INFO_TABLE": table,
            "DATABASE_HOST": str(target.get("host", "127.0.0.1")),
            "DATABASE_PORT": str(target.get("port", "5432")),
            "DATABASE_USERNAME": str(target.get("user", "postgres")),
            "DATABASE_PASSWORD": str(target.get("password", "")),
            "DATABASE_NAME": str(target["dbname"]),
        }
    )
    assert server.deps.citrus is None
    migrated = seen.add(
        server.admin.MigrateShard(ADMIN.MigrateShardRequest(all_shards=True), metadata=md(seen), timeout=10)
    )
    assert [(m.shard_id, m.version_after) for m in migrated.shards] == [
        ("default", migrator.latest_version())
    ]
    listed = seen.add(server.admin.ListShards(ADMIN.ListShardsRequest(), metadata=md(seen), timeout=10))
    assert [s.shard_id for s in listed.shards] == ["default"]
    status = seen.add(
        server.admin.GetDependencyStatus(ADMIN.GetDependencyStatusRequest(), metadata=md(seen), timeout=10)
    )
    assert "citrus" not in {d.name for d in status.dependencies}
    assert {"dynamodb", "jwks"} <= {d.name for d in status.dependencies if d.up}


# --- consistency ---------------------------------------------------------------------------


def plant(stack: Stack, shard_id: str, business_id: str, location_id: str, count: int) -> None:
    """Insert resources straight into a shard database (as a bad migration or manual fix would)."""
    dsn = stack.pg.dsn(stack.citrus.shard(shard_id).database)
    migrator.migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for n in range(count):
            conn.execute(
                "INSERT INTO resources (business_id, location_id, resource_type, resource_id, business_type)"
                " VALUES (%s, %s, 'patients', %s, 'dental')",
                (business_id, location_id, f"planted-{n}"),
            )


def findings(report: Any) -> list[tuple[str, str, str, int | None]]:
    """(kind, location, shard, count); count None when absent (only orphans carry one)."""
    return sorted(
        (
            (
                ADMIN.FindingKind.Name(f.kind),
                f.location_id,
                f.shard_id,
                f.count if f.HasField("count") else None,
            )
            for f in report.findings
        ),
        key=str,
    )


def test_check_consistency_finds_unregistered_locations_and_orphans(stack: Stack) -> None:
    """A location unknown to Citrus and resources of a location not in business info are reported."""
    business_id = uid()
    shard_id = stack.registered(business_id, "l1")
    store = stack.server.deps.business_store
    assert store is not None
    # l2 (active) exists in business info but was never registered; l3 is inactive: not required.
    current = store.get(business_id)
    assert current is not None
    store.update(
        current.with_location(Location(id="l2", name="l2")).with_location(
            Location(id="l3", name="l3", active=False)
        ),
        previous=current,
    )
    plant(stack, shard_id, business_id, "l1", 1)  # fine: l1 exists
    plant(stack, shard_id, business_id, "ghost", 2)  # orphans
    deleted_id = uid()
    plant(stack, "shard-02", deleted_id, "l9", 3)  # a business that is not in business info at all
    calls_before = stack.citrus.calls

    report = stack.call("CheckConsistency", ADMIN.CheckConsistencyRequest(business_id=business_id))
    [business] = report.businesses
    assert business.business_id == business_id
    assert not business.consistent
    assert findings(business) == [
        ("FINDING_KIND_LOCATION_NOT_REGISTERED", "l2", "", None),
        ("FINDING_KIND_ORPHAN_RESOURCES", "ghost", shard_id, 2),
    ]
    # Read-only: nothing was registered.
    assert stack.citrus.calls["register"] == calls_before["register"]
    assert f"{business_id}-l2" not in stack.citrus.registrations()

    gone = stack.call("CheckConsistency", ADMIN.CheckConsistencyRequest(business_id=deleted_id))
    assert findings(gone.businesses[0]) == [("FINDING_KIND_ORPHAN_RESOURCES", "l9", "shard-02", 3)]
    error = stack.fails("CheckConsistency", ADMIN.CheckConsistencyRequest(business_id=uid()))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_check_consistency_pages_and_reports_shard_problems(stack: Stack) -> None:
    """Pages of businesses; a consistent one is consistent; an inactive, unmigrated shard is reported."""
    good = uid("a")
    stack.registered(good, "l1")
    stack.create_resource(good, "l1")  # migrates its shard
    stack.citrus.set_active("shard-02", False)
    stack.citrus.set_active("shard-03", False)
    # Fill shard-01, so the next business lands on a new (empty, unmigrated) shard.
    for _ in range(2):
        stack.registered(uid("a"), "l1")
    stack.citrus.set_active("shard-02", True)
    late = uid("z")
    late_shard = stack.registered(late, "l1")
    assert late_shard == "shard-02"
    stack.citrus.set_active("shard-02", False)

    single = stack.call("CheckConsistency", ADMIN.CheckConsistencyRequest(business_id=good))
    assert single.businesses[0].consistent
    assert not single.businesses[0].findings
    report = stack.call("CheckConsistency", ADMIN.CheckConsistencyRequest(business_id=late))
    kinds = findings(report.businesses[0])
    assert ("FINDING_KIND_SHARD_INACTIVE", "l1", "shard-02", None) in kinds
    assert ("FINDING_KIND_SHARD_NOT_MIGRATED", "l1", "shard-02", None) in kinds

    seen_ids: list[str] = []
    token = ""
    while True:
        page = stack.call("CheckConsistency", ADMIN.CheckConsistencyRequest(page_size=2, page_token=token))
        assert len(page.businesses) <= 2
        seen_ids.extend(b.business_id for b in page.businesses)
        token = page.next_page_token
        if not token:
            break
    assert {good, late} <= set(seen_ids)
    assert len(seen_ids) == len(set(seen_ids))


# --- who may call -------------------------------------------------------------------------


ALL_RPCS: list[tuple[str, Message]] = [
    ("ListShards", ADMIN.ListShardsRequest()),
    ("GetShardUsage", ADMIN.GetShardUsageRequest()),
    ("CheckShardCapacity", ADMIN.CheckShardCapacityRequest(shard_id="shard-01")),
    ("GetLocationShard", ADMIN.GetLocationShardRequest(business_id="b", location_id="l")),
    ("RegisterLocation", ADMIN.RegisterLocationRequest(business_id="b", location_id="l")),
    ("ListPools", ADMIN.ListPoolsRequest()),
    ("RecyclePool", ADMIN.RecyclePoolRequest(shard_id="shard-01")),
    ("InvalidateRouting", ADMIN.InvalidateRoutingRequest(all=True)),
    ("MigrateShard", ADMIN.MigrateShardRequest(all_shards=True)),
    ("GetDependencyStatus", ADMIN.GetDependencyStatusRequest()),
    ("CheckConsistency", ADMIN.CheckConsistencyRequest()),
    ("GetTenantUsage", ADMIN.GetTenantUsageRequest(order_by=ADMIN.TENANT_USAGE_ORDER_STORED_BYTES)),
    (
        "StartLocationMove",
        ADMIN.StartLocationMoveRequest(business_id="b", location_id="l", target_shard_id="shard-02"),
    ),
    ("GetLocationMove", ADMIN.GetLocationMoveRequest(move_id="m1")),
    ("ListLocationMoves", ADMIN.ListLocationMovesRequest()),
    ("RevertLocationMove", ADMIN.RevertLocationMoveRequest(move_id="m1")),
    ("FinalizeLocationMove", ADMIN.FinalizeLocationMoveRequest(move_id="m1")),
]


def test_every_rpc_is_covered_by_the_permission_checks() -> None:
    """The list below names every ShardAdmin method."""
    names = {m.name for m in ADMIN.DESCRIPTOR.services_by_name["ShardAdminService"].methods}
    assert names == {name for name, _ in ALL_RPCS}


def test_every_rpc_needs_an_admin(stack: Stack, user_token: str, machine_token: Callable[..., str]) -> None:
    """A plain user or a non-admin machine client gets PERMISSION_DENIED; no token gets UNAUTHENTICATED."""
    machine = machine_token(["simplu/resources.read", "simplu/resources.write", "simplu/businesses.write"])
    stack.citrus.reset_calls()
    for method, request in ALL_RPCS:
        for token in (user_token, machine):
            assert stack.fails(method, request, token).code() == grpc.StatusCode.PERMISSION_DENIED, method
        with pytest.raises(grpc.RpcError) as info:
            getattr(stack.server.admin, method)(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
    # Refused before doing anything (the readiness loop's health calls aside).
    calls = stack.citrus.calls
    assert (calls["get_shard"], calls["register"], calls["capacity"]) == (0, 0, 0)


def test_admin_machine_client_is_allowed(stack: Stack, machine_token: Callable[..., str]) -> None:
    """A client-credentials token with the simplu/admin scope may use ShardAdmin."""
    admin_machine = machine_token(["simplu/admin"])
    response = stack.server.admin.ListShards(
        ADMIN.ListShardsRequest(), metadata=stack.md(admin_machine), timeout=10
    )
    assert len(stack.seen.add(response).shards) == 3
