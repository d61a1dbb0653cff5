"""The purge's shard adapter: a deleted business's rows removed in bounded batches.

Shard tables are found, not listed: every base table of the shard's schema with a
``business_id`` column (resources, request_ids, resource_changes today; whatever a later
migration adds tomorrow), tables that others reference by foreign key last, so a cascade never
runs ahead of a batch. One batch deletes at most ``limit`` rows of one table,
``DELETE ... WHERE ctid = ANY(ARRAY(SELECT ctid ... WHERE business_id = %s LIMIT %s))``, which
the business_id-leading index of each table serves, in its own transaction under a
statement_timeout: a lock is held for one short batch, never for the whole business.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from simplu_grpc.domain.business.model import Business
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.errors import ShardUnavailable
from simplu_grpc.redact import redact

log = logging.getLogger(__name__)

_TABLES = """
SELECT c.table_name
FROM information_schema.columns c
JOIN information_schema.tables t USING (table_schema, table_name)
WHERE c.column_name = 'business_id' AND t.table_type = 'BASE TABLE' AND c.table_schema = current_schema()
ORDER BY EXISTS (
    SELECT 1 FROM pg_constraint f
    WHERE f.contype = 'f' AND f.confrelid = format('%I.%I', c.table_schema, c.table_name)::regclass
), c.table_name
"""
_BATCH_STATEMENT_TIMEOUT_MS = 30_000
_BATCH_WRITE_ITEMS = 25


class ShardPurger:
    """``domain.business_retention.ShardData`` on PostgreSQL: one connection per shard, kept for the run."""

    def __init__(
        self,
        *,
        list_shards: Callable[[], Sequence[ShardAssignment]],
        locate: Callable[[str, str], ShardAssignment | None],
        connect_timeout_seconds: float = 5.0,
    ) -> None:
        self._list_shards = list_shards
        self._locate = locate
        self._timeout = connect_timeout_seconds
        self._connections: dict[str, psycopg.Connection[Any]] = {}
        self._tables: dict[str, list[str]] = {}

    def shards_of(self, business: Business) -> list[ShardAssignment]:
        """Every shard the directory lists, and each location's current one (deduplicated by id)."""
        found = {shard.shard_id: shard for shard in self._list_shards()}
        for location in business.locations:
            assigned = self._locate(business.id, location.id)
            if assigned is not None:
                found.setdefault(assigned.shard_id, assigned)
        return [found[shard_id] for shard_id in sorted(found)]

    def delete_batch(self, shard: ShardAssignment, business_id: str, limit: int) -> int:
        conn = self._connection(shard)
        try:
            for table in self._tables_of(shard, conn):
                with conn.transaction():
                    conn.execute(f"SET LOCAL statement_timeout = {_BATCH_STATEMENT_TIMEOUT_MS}")
                    statement = sql.SQL(
                        "DELETE FROM {table} WHERE ctid = ANY(ARRAY("
                        "SELECT ctid FROM {table} WHERE business_id = %s LIMIT %s))"
                    ).format(table=sql.Identifier(table))
                    deleted = conn.execute(statement, (business_id, limit)).rowcount
                if deleted:
                    return int(deleted)
        except psycopg.OperationalError as exc:
            self._drop(shard.shard_id)
            raise ShardUnavailable(
                f"shard {shard.shard_id!r} failed during the purge: {redact(str(exc))}",
                metadata={"shard_id": shard.shard_id},
            ) from exc
        return 0

    def _tables_of(self, shard: ShardAssignment, conn: psycopg.Connection[Any]) -> list[str]:
        if shard.shard_id not in self._tables:
            self._tables[shard.shard_id] = [str(row[0]) for row in conn.execute(_TABLES).fetchall()]
        return self._tables[shard.shard_id]

    def _connection(self, shard: ShardAssignment) -> psycopg.Connection[Any]:
        conn = self._connections.get(shard.shard_id)
        if conn is not None and not conn.closed:
            return conn
        if not shard.connection_string:
            raise ShardUnavailable(
                f"shard {shard.shard_id!r} has no usable connection string",
                metadata={"shard_id": shard.shard_id},
            )
        try:
            conn = psycopg.connect(
                shard.connection_string, autocommit=True, connect_timeout=max(2, int(self._timeout))
            )
        except psycopg.OperationalError as exc:
            raise ShardUnavailable(
                f"shard {shard.shard_id!r} is unreachable: {redact(str(exc))}",
                metadata={"shard_id": shard.shard_id},
            ) from exc
        self._connections[shard.shard_id] = conn
        return conn

    def _drop(self, shard_id: str) -> None:
        conn = self._connections.pop(shard_id, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for shard_id in list(self._connections):
            self._drop(shard_id)
