"""The admin use cases' read-only shard reads (``domain.admin.ports.ShardReader``) over psycopg.

CheckConsistency and ListShards read shards this server may have no pool for over short-lived
connections: creating a pool migrates a new shard, and a check or a listing must change
nothing. The server side is read-only too (``default_transaction_read_only``), and every
statement is bounded by what is left of the caller's deadline.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from simplu_grpc import context
from simplu_grpc.adapters.postgres import migrator
from simplu_grpc.adapters.postgres.pool_registry import PoolRegistry
from simplu_grpc.domain.admin.ports import ShardSnapshot


class PostgresShardReader:
    """Reads a shard's schema version and per-location resource counts; never writes."""

    def __init__(self, pools: PoolRegistry | None = None) -> None:
        self._pools = pools

    def snapshot(self, dsn: str, business_ids: Sequence[str]) -> ShardSnapshot:
        """Read a shard's schema version and per-location resource counts, read-only, bounded."""
        timeout_ms = max(100, int(context.deadline().remaining() * 1000))
        with psycopg.connect(
            dsn,
            autocommit=True,
            connect_timeout=max(2, int(timeout_ms / 1000)),
            # Read-only at the server: this check must never write, even by mistake.
            options=f"-c default_transaction_read_only=on -c statement_timeout={timeout_ms}",
            application_name="simplu-grpc consistency check",
        ) as conn:
            # Asked separately: a never-migrated shard has no schema_migrations table to read.
            row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
            version = migrator.schema_version(conn) if row and row[0] else 0
            counts: dict[tuple[str, str], int] = {}
            if version >= 1 and business_ids:
                rows = conn.execute(
                    "SELECT business_id, location_id, count(*) FROM resources"
                    " WHERE business_id = ANY(%s) GROUP BY business_id, location_id",
                    (list(business_ids),),
                ).fetchall()
                counts = {(str(b), str(loc)): int(n) for b, loc, n in rows}
        return ShardSnapshot(version, counts)

    def schema_version(self, dsn: str) -> int:
        """A shard's schema version over a short-lived read-only connection (never through a pool:
        creating one would migrate the shard, and a listing must change nothing)."""
        return self.snapshot(dsn, ()).schema_version

    def pool_version(self, shard_id: str) -> int | None:
        """Through the registry's own checkout: bounded by the deadline, cut off by its watchdog."""
        if self._pools is None:
            return None
        assignment = self._pools.assignment(shard_id)
        if assignment is None:
            return None
        with (
            self._pools.connection(assignment) as session,
            session.guard("reading the schema version"),
        ):
            return migrator.schema_version(session.conn)
