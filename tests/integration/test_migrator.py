"""Shard migrations against real PostgreSQL: ordered, idempotent, safe under concurrent replicas."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import psycopg
import pytest

from simplu_grpc.adapters.postgres import migrator
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.settings import Settings
from simplu_grpc.wiring import build_migrations, build_shard_source


class Listed:
    """Citrus listing fixed shards (only ``shards_health`` is used to migrate)."""

    def __init__(self, shards: list[ShardAssignment]) -> None:
        self._shards = shards

    def get_shard(self, business_id: str, location_id: str) -> ShardAssignment | None:
        return None

    def register(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment:
        raise AssertionError("migrations register nothing")

    def shards_health(self) -> list[ShardAssignment]:
        return list(self._shards)

    def capacity(self, shard_id: str) -> None:
        return None


pytestmark = pytest.mark.integration


def test_shipped_migrations_are_ordered() -> None:
    """Migration files are found as package data, numbered without gaps or duplicates."""
    versions = [m.version for m in migrator.migrations()]
    assert versions == list(range(1, len(versions) + 1))
    assert migrator.latest_version() == versions[-1]


def test_migrate_fresh_database_then_nothing(fresh_database: Callable[[], str]) -> None:
    """A fresh database goes 0 -> latest; a second run applies nothing; schema_version agrees."""
    dsn = fresh_database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert migrator.schema_version(conn) == 0
    first = migrator.migrate(dsn)
    assert (first.before, first.after) == (0, migrator.latest_version())
    assert first.applied == [f"{m.version:04d}_{m.name}" for m in migrator.migrations()]
    second = migrator.migrate(dsn)
    assert second == migrator.MigrationResult(migrator.latest_version(), migrator.latest_version(), [])
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert migrator.schema_version(conn) == migrator.latest_version()
        tables = {
            row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    assert {"resources", "request_ids", "schema_migrations"} <= tables


def test_concurrent_replicas_migrate_exactly_once(fresh_database: Callable[[], str]) -> None:
    """Eight replicas racing on a fresh shard: one applies the files, the others wait and apply none."""
    dsn = fresh_database()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: migrator.migrate(dsn), range(8)))
    assert sum(1 for r in results if r.applied) == 1
    assert all(r.after == migrator.latest_version() for r in results)


def test_migrate_all_single_database(fresh_database: Callable[[], str]) -> None:
    """Without Citrus, migrate_all (as `simplu-grpc migrate` wires it) migrates the DATABASE_*
    database as shard "default"."""
    dsn = fresh_database()
    parts = urlsplit(dsn)
    settings = dataclasses.replace(
        Settings(),
        database_host=parts.hostname or "127.0.0.1",
        database_port=parts.port or 5432,
        database_username=parts.username or "postgres",
        database_password=parts.password or "",
        database_name=parts.path.lstrip("/"),
    )
    (outcome,) = build_migrations(settings, build_shard_source(settings, None)).migrate_all()
    assert outcome.shard_id == "default"
    assert outcome.version_after == migrator.latest_version()
    assert outcome.applied


def test_migrate_all_reports_each_shard_and_hides_passwords(fresh_database: Callable[[], str]) -> None:
    """One unreachable shard is reported (without its password) while the others are migrated."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    shards = [
        ShardAssignment(shard_id="shard-01", connection_string=fresh_database()),
        ShardAssignment(
            shard_id="shard-02", connection_string=f"postgresql://u:topsecret@127.0.0.1:{port}/x"
        ),
    ]
    outcomes = build_migrations(Settings(), Listed(shards)).migrate_all()
    assert outcomes[0].version_after == migrator.latest_version()
    assert outcomes[0].error == ""
    assert outcomes[1].version_after is None
    assert outcomes[1].target == f"127.0.0.1:{port}/x"
    assert outcomes[1].error
    assert outcomes[1].error.startswith("OperationalError: "), outcomes[1].error  # says why, too
    assert "topsecret" not in repr(outcomes)


def test_admin_migrate_gives_up_on_a_held_lock_within_the_deadline(fresh_database: Callable[[], str]) -> None:
    """MigrateShard while another session holds the migration lock: the shard is reported failed
    within the RPC's deadline and no session is left waiting on the lock afterwards."""
    import time

    from simplu_grpc import context
    from simplu_grpc.context import Deadline

    dsn = fresh_database()
    shard = ShardAssignment(shard_id="locked", connection_string=dsn)

    admin = build_migrations(Settings(), Listed([shard]))
    with psycopg.connect(dsn, autocommit=True) as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (migrator.ADVISORY_LOCK_KEY,))
        started = time.monotonic()
        with context.bind(deadline=Deadline.after(1.5)):
            (outcome,) = admin.migrate("locked", all_shards=False)
        assert time.monotonic() - started < 4.0
        assert outcome.error
        # The migration's statement was cancelled by its timeout, not abandoned in a thread.
        waiting = 1
        for _ in range(30):
            row = holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()
            waiting = row[0] if row else 0
            if not waiting:
                break
            time.sleep(0.1)
        assert waiting == 0
        holder.execute("ROLLBACK")
