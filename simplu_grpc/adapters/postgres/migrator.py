"""Shard schema migrations: versioned SQL files applied in order under a PostgreSQL advisory lock.

Several replicas may open a pool to the same new shard at the same moment and all try to
migrate it. Each runs the whole upgrade in ONE transaction that first takes a
transaction-scoped advisory lock: the first replica applies the pending files, the others
wait on the lock, then see the new version in ``schema_migrations`` and apply nothing. A
failing file rolls back everything of that run, so a shard is never left half-migrated.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Protocol

import psycopg

from simplu_grpc.domain.admin.ports import MigrationResult
from simplu_grpc.errors import ShardUnavailable

logger = logging.getLogger(__name__)

# pg_advisory_xact_lock key: "simplu" in ASCII, so it is recognisable in pg_locks and
# unlikely to collide with another application's lock on the same database.
ADVISORY_LOCK_KEY = 0x73696D706C75

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

_CREATE_HISTORY = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


class Executor(Protocol):
    """A psycopg connection, or the pool registry's ShardSession (which forwards ``execute``)."""

    def execute(self, query: Any, params: Any = None) -> Any: ...


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file: ``NNNN_name.sql`` with NNNN its version."""

    version: int
    name: str
    sql: str


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration shipped in ``simplu_grpc.migrations``, in version order."""
    found: list[Migration] = []
    for entry in resources.files("simplu_grpc.migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match["version"]), match["name"], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return tuple(found)


def latest_version() -> int:
    """The version a fully migrated shard reports."""
    shipped = migrations()
    return shipped[-1].version if shipped else 0


def schema_version(conn: Executor) -> int:
    """The highest applied migration version; 0 for a database never migrated."""
    # Two statements: PostgreSQL resolves table names when planning, so one query naming a
    # table that may not exist fails even in a branch that would never run.
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def migrate(
    conn_or_dsn: psycopg.Connection[Any] | str,
    *,
    connect_timeout: float = 5.0,
    timeout_ms: int | None = None,
) -> MigrationResult:
    """Apply every pending migration in one transaction under the advisory lock; idempotent.

    With ``timeout_ms``, each statement (the wait for another replica's lock included) is
    cut after that long (QueryCanceled) instead of waiting forever.
    """
    if isinstance(conn_or_dsn, str):
        with psycopg.connect(
            conn_or_dsn, autocommit=True, connect_timeout=max(2, int(connect_timeout))
        ) as conn:
            return _migrate(conn, timeout_ms)
    return _migrate(conn_or_dsn, timeout_ms)


def _migrate(conn: psycopg.Connection[Any], timeout_ms: int | None = None) -> MigrationResult:
    with conn.transaction():
        if timeout_ms is not None:
            # Bounds the wait for another replica's lock and the upgrade itself (the RPC deadline).
            conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(timeout_ms),))
        # Taken first so that a concurrent replica's upgrade is fully visible (committed)
        # before this one reads the version; released by the commit.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
        conn.execute(_CREATE_HISTORY)
        before = schema_version(conn)
        applied: list[str] = []
        for migration in migrations():
            if migration.version <= before:
                continue
            conn.execute(migration.sql.encode("utf-8"))
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            applied.append(f"{migration.version:04d}_{migration.name}")
        after = max(before, latest_version())
    if applied:
        logger.info("shard schema migrated", extra={"before": before, "after": after, "applied": applied})
    return MigrationResult(before, after, applied)


class PostgresMigrator:
    """The ``Migrator`` port of the admin use cases (MigrateShard, ``simplu-grpc migrate``).

    Connecting takes at most ``connect_timeout_seconds`` when given, else the whole budget.
    """

    def __init__(self, *, connect_timeout_seconds: float | None = None) -> None:
        self._connect_timeout = connect_timeout_seconds

    def latest_version(self) -> int:
        return latest_version()

    def migrate(self, dsn: str, timeout_ms: int) -> MigrationResult:
        """Migrate one shard, connecting and running its statements within ``timeout_ms``."""
        budget = timeout_ms / 1000
        connect = budget if self._connect_timeout is None else min(budget, self._connect_timeout)
        return migrate(dsn, connect_timeout=connect, timeout_ms=timeout_ms)


def ensure_migrated(
    conn: psycopg.Connection[Any], shard_id: str, *, timeout_ms: int | None = None
) -> MigrationResult:
    """Used by the pool registry on a shard's first use, within ``timeout_ms`` (the RPC's time
    left); a timeout propagates as QueryCanceled (the caller's deadline), other connection
    errors become SHARD_UNAVAILABLE."""
    try:
        return _migrate(conn, timeout_ms)
    except psycopg.errors.QueryCanceled:
        raise
    except psycopg.OperationalError as exc:
        raise ShardUnavailable(
            f"shard {shard_id} is unavailable (migration failed)", metadata={"shard_id": shard_id}
        ) from exc
