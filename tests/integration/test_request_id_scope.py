"""Request ids belong to their caller (shard schema v4) against real PostgreSQL, including a shard
upgraded from v3 with claims already in it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from simplu_grpc.adapters.postgres import migrator
from simplu_grpc.adapters.postgres.pool_registry import PoolRegistry
from simplu_grpc.adapters.postgres.shard_store import ShardStore
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.resources.model import NewResource, ResourceKey
from simplu_grpc.metrics import Metrics

pytestmark = pytest.mark.integration


@pytest.fixture
def registry() -> Iterator[PoolRegistry]:
    pools = PoolRegistry(metrics=Metrics(), min_size=1, max_size=8, connect_timeout=2.0)
    yield pools
    pools.close()


def _new(resource_id: str, request_id: str, requester: str) -> NewResource:
    return NewResource(
        key=ResourceKey("b1", "main", "patients", resource_id),
        business_type="dental",
        data={"by": requester},
        start_time=None,
        end_time=None,
        request_id=request_id,
        requester=requester,
    )


def _sql(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def test_two_callers_racing_on_one_request_id_each_get_their_own_resource(
    registry: PoolRegistry, fresh_database: Callable[[], str]
) -> None:
    """Eight concurrent creates, four per caller, with one request id: two resources, one per
    caller, and each caller's answers are all its own."""
    assignment = ShardAssignment(shard_id="s", connection_string=fresh_database())
    store = ShardStore()

    def create(index: int) -> tuple[str, str]:
        requester = f"caller-{index % 2}"
        with registry.connection(assignment) as session:
            stored, _ = store.create(session, _new(f"r{index}", "shared-request", requester))
        return requester, stored.key.resource_id

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(create, range(8)))
    per_caller = {requester: {rid for who, rid in answers if who == requester} for requester, _ in answers}
    assert all(len(ids) == 1 for ids in per_caller.values()), per_caller
    assert per_caller["caller-0"] != per_caller["caller-1"]
    rows = _sql(assignment.connection_string, "SELECT resource_id, data->>'by' FROM resources ORDER BY 2")
    assert [(rid, by) for rid, by in rows] == [
        (next(iter(per_caller["caller-0"])), "caller-0"),
        (next(iter(per_caller["caller-1"])), "caller-1"),
    ]


def test_claims_made_before_v4_are_replayed_to_no_one(
    registry: PoolRegistry, fresh_database: Callable[[], str]
) -> None:
    """A v3 shard with a claim is upgraded on first use; the old claim (no caller) answers nobody,
    so a caller sending its request id gets a new resource, and the old resource stays."""
    dsn = fresh_database()
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
        for migration in migrator.migrations():
            if migration.version > 3:
                break
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
        conn.execute(
            "INSERT INTO resources"
            " (business_id, location_id, resource_type, resource_id, business_type, data)"
            " VALUES ('b1', 'main', 'patients', 'old', 'dental', '{\"by\": \"someone\"}')"
        )
        conn.execute(
            "INSERT INTO request_ids (business_id, location_id, request_id, resource_type, resource_id)"
            " VALUES ('b1', 'main', 'rq-old', 'patients', 'old')"
        )
    assignment = ShardAssignment(shard_id="s3", connection_string=dsn)
    store = ShardStore()
    with registry.connection(assignment) as session:
        stored, created = store.create(session, _new("new", "rq-old", "caller-x"))
        again, created_again = store.create(session, _new("newer", "rq-old", "caller-x"))
    assert created
    assert stored.key.resource_id == "new"
    assert stored.data == {"by": "caller-x"}
    assert (again.key.resource_id, created_again) == ("new", False)
    assert _sql(dsn, "SELECT max(version) FROM schema_migrations") == [(migrator.latest_version(),)]
    assert sorted(_sql(dsn, "SELECT requester, request_id, resource_id FROM request_ids")) == [
        ("", "rq-old", "old"),
        ("caller-x", "rq-old", "new"),
    ]
