"""A ResourceService under test, built from real parts: moto DynamoDB, the Citrus emulator, PostgreSQL.

``build_stack`` wires the server with production's factories (``wiring.build_deps``) against
those parts, starts it with the ``make_server`` fixture, and counts business-store reads (the
cache's source) so tests can prove the warm path makes no DynamoDB call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from google.protobuf import struct_pb2, timestamp_pb2
from google.type import interval_pb2
from simplu.v1 import resource_pb2, resource_pb2_grpc

from simplu_grpc.adapters.dynamodb.business_store import BusinessStore
from simplu_grpc.adapters.postgres.pool_registry import PoolRegistry
from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer, create_business_table
from simplu_grpc.domain.business.model import (
    Business,
    BusinessType,
    Location,
    Member,
    Permissions,
    Role,
)
from simplu_grpc.domain.placement.routing import RoutingCache
from simplu_grpc.wiring import build_deps
from tests.fixtures.citrus import CITRUS_API_KEY
from tests.fixtures.server import MakeServer, RunningServer, settings_for

REGION = "us-east-1"


class CountingBusinessSource(BusinessStore):
    """The real business store, counting every read that reaches DynamoDB (writes pass through)."""

    def __init__(self, store: BusinessStore) -> None:
        self.__dict__.update(store.__dict__)
        self._count_lock = threading.Lock()
        self.calls = 0

    def get(self, business_id: str, *, consistent: bool = True) -> Business | None:
        with self._count_lock:
            self.calls += 1
        return super().get(business_id, consistent=consistent)


@dataclass
class ResourceStack:
    server: RunningServer
    citrus: CitrusEmulator
    store: BusinessStore
    source: CountingBusinessSource
    routing: RoutingCache
    pools: PoolRegistry
    token: str
    businesses: list[Business] = field(default_factory=list)

    @property
    def stub(self) -> resource_pb2_grpc.ResourceServiceStub:
        return self.server.resource

    def md(self, token: str | None = None) -> tuple[tuple[str, str | bytes], ...]:
        return (("authorization", f"Bearer {token or self.token}"),)

    def add_business(
        self,
        business_type: BusinessType = BusinessType.DENTAL,
        *,
        locations: Sequence[str] = ("main",),
        members: Mapping[str, Member] | None = None,
        roles: Mapping[str, Role] | None = None,
        business_id: str | None = None,
    ) -> Business:
        """Write a business straight into DynamoDB (Citrus learns it on first resource use)."""
        business = Business(
            id=business_id or f"b{secrets.token_hex(5)}",
            name="Test business",
            type=business_type,
            locations=tuple(Location(id=loc, name=loc) for loc in locations),
            permissions=Permissions(
                roles=dict(roles or {"owner": Role(permissions=("*",))}), members=dict(members or {})
            ),
        )
        self.store.create(business)
        self.businesses.append(business)
        return business

    def create(
        self,
        business: Business,
        resource_type: str = "patients",
        *,
        location_id: str = "main",
        data: Mapping[str, Any] | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        **fields: Any,
    ) -> resource_pb2.Resource:
        request_id = fields.pop("request_id", "")
        resource_id = fields.pop("resource_id", "")
        resource = resource_pb2.Resource(
            business_id=business.id, location_id=location_id, resource_type=resource_type, **fields
        )
        if data is not None:
            resource.data.update(dict(data))
        return self.stub.CreateResource(
            resource_pb2.CreateResourceRequest(
                resource=resource, request_id=request_id, resource_id=resource_id
            ),
            metadata=self.md(token),
            timeout=timeout,
        )

    def get(
        self,
        business: Business,
        resource_id: str,
        resource_type: str = "patients",
        *,
        location_id: str = "main",
        token: str | None = None,
        timeout: float = 10.0,
    ) -> resource_pb2.Resource:
        return self.stub.GetResource(
            resource_pb2.GetResourceRequest(
                business_id=business.id,
                location_id=location_id,
                resource_type=resource_type,
                resource_id=resource_id,
            ),
            metadata=self.md(token),
            timeout=timeout,
        )

    def shard_of(self, business: Business, location_id: str = "main") -> str:
        return self.citrus.registrations()[f"{business.id}-{location_id}"]

    def register(self, business: Business, location_id: str = "main") -> str:
        """Register with Citrus ahead of first use (to put the shard behind a proxy first)."""
        answer = self.citrus.register(business.id, location_id, business.type.value)
        return str(answer["shardId"])

    def shard_dsn(self, shard_id: str) -> str:
        return self.citrus.shard(shard_id).connection_string

    @contextlib.contextmanager
    def row_locked(self, business: Business, resource_id: str) -> Iterator[psycopg.Connection[Any]]:
        """Hold the resource's row lock in a direct transaction on its shard (committed on exit):
        the service's statements on that row wait until then. The connection is yielded so the
        test can change the row inside the same transaction."""
        dsn = self.citrus.pg.dsn(self.citrus.shard(self.shard_of(business)).database)
        with psycopg.connect(dsn) as conn:
            conn.execute("SELECT 1 FROM resources WHERE resource_id = %s FOR UPDATE", [resource_id])
            yield conn
            conn.commit()

    def wait_for_lock_waiters(self, business: Business, count: int = 1, timeout: float = 10.0) -> None:
        """Poll the business's shard until ``count`` backends wait on a lock (a request is blocked)."""
        dsn = self.citrus.pg.dsn(self.citrus.shard(self.shard_of(business)).database)
        query = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        end = time.monotonic() + timeout
        with psycopg.connect(dsn, autocommit=True) as conn:
            while True:
                row = conn.execute(query).fetchone()
                if row is not None and row[0] >= count:
                    return
                if time.monotonic() > end:
                    raise AssertionError(f"no {count} request(s) blocked on a lock within {timeout}s")
                time.sleep(0.02)

    def count_rows(self) -> dict[str, int]:
        """Resource rows per shard database (read directly, not through the service)."""
        counts: dict[str, int] = {}
        for shard in self.citrus.shards():
            dsn = self.citrus.pg.dsn(shard.database)
            with psycopg.connect(dsn, autocommit=True) as conn:
                exists = conn.execute("SELECT to_regclass('resources') IS NOT NULL").fetchone()
                if exists and exists[0]:
                    row = conn.execute("SELECT count(*) FROM resources").fetchone()
                    counts[shard.shard_id] = int(row[0]) if row else 0
                else:
                    counts[shard.shard_id] = 0
        return counts


def ts(text: str) -> timestamp_pb2.Timestamp:
    """A Timestamp from RFC 3339 text ("2026-03-01T09:00:00Z")."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromJsonString(text)
    return stamp


def interval(start: str | None = None, end: str | None = None) -> interval_pb2.Interval:
    """A google.type.Interval from RFC 3339 bounds; None leaves a bound open."""
    value = interval_pb2.Interval()
    if start is not None:
        value.start_time.CopyFrom(ts(start))
    if end is not None:
        value.end_time.CopyFrom(ts(end))
    return value


def struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(dict(value))
    return message


def build_stack(
    *,
    make_server: MakeServer,
    citrus: CitrusEmulator,
    moto_server: MotoServer,
    auth_settings: Mapping[str, Any],
    admin_token: str,
    routing_ttl: float = 300.0,
    routing_stale_max: float = 3600.0,
    pool_max_size: int = 4,
    pool_max_waiting: int = 64,
    citrus_timeout_ms: int = 1000,
) -> ResourceStack:
    """A started server whose ResourceService uses real adapters (see module docstring)."""
    settings = settings_for(
        None,
        **auth_settings,
        citrus_server_url=citrus.url,
        citrus_api_key=CITRUS_API_KEY,
        citrus_timeout_ms=citrus_timeout_ms,
        citrus_retry_attempts=2,
        shard_pool_max_size=pool_max_size,
        shard_pool_max_waiting=pool_max_waiting,
        shard_connect_timeout_seconds=2.0,
        routing_cache_ttl_seconds=routing_ttl,
        routing_stale_max_seconds=routing_stale_max,
        business_cache_ttl_seconds=30.0,
        dynamodb_endpoint=moto_server.url,
        dynamodb_business_info_table=f"biz-{secrets.token_hex(4)}",
    )
    create_business_table(moto_server.url, REGION, settings.dynamodb_business_info_table)
    sources: list[CountingBusinessSource] = []

    def counting(store: BusinessStore) -> CountingBusinessSource:
        sources.append(CountingBusinessSource(store))
        return sources[0]

    deps = build_deps(settings, cache_source=counting)
    server = make_server(deps=deps, close_deps=True, **settings_overrides(settings))
    return ResourceStack(
        server=server,
        citrus=citrus,
        store=deps.business_store,
        source=sources[0],
        routing=deps.routing,
        pools=deps.pools,
        token=admin_token,
    )


def settings_overrides(settings: Any) -> dict[str, Any]:
    """The non-auth settings make_server should use (auth comes from its own fixture)."""
    auth = {"aws_region", "cognito_user_pool_id", "cognito_client_ids", "cognito_jwks_url"}
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name not in auth}
