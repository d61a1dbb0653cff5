"""Storage per location on one shard: rows and bytes per (business, location, resource type), bounded.

Cost is bounded twice: by the statement timeout (the RPC's deadline, as every shard
statement) and by how much of the table is read:

* **exact** when the resources heap is at most ``exact_max_bytes`` (64 MiB by default): one
  sequential scan grouping every row; rows are ``count(*)``, bytes ``sum(pg_column_size(data))``.
* **estimated** above that: ``TABLESAMPLE SYSTEM`` reads about ``exact_max_bytes`` worth of
  random pages (never the whole table) and scales the sample up by the sampled fraction.
  Block sampling is unbiased for totals but noisy for a location stored in few pages: small
  locations may be missing or off; the heavy ones (what an operator looks for) are not.

Shards are read over a short-lived read-only connection (``default_transaction_read_only``), not
the pools: a pool's first checkout migrates a shard, and reading storage must change nothing
(a shard never migrated has no ``resources`` table and is reported empty).

Bytes are the stored size of the documents (``pg_column_size``: after compression, out-of-line
TOAST counted without reading it back), not row headers or indexes; ``table_bytes``
(``pg_total_relation_size``: heap, TOAST and indexes) is given alongside for the whole shard.
Read-only, and only the ``resources`` table.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from simplu_grpc import context
from simplu_grpc.domain.admin.ports import ShardStorage, TypeStorage
from simplu_grpc.errors import DeadlineExceeded, ShardUnavailable

# A sequential scan of this much heap stays well under a second on a warm shard.
EXACT_MAX_BYTES = 64 * 1024 * 1024

_TABLE = """
SELECT pg_relation_size(c.oid) AS heap_bytes, pg_total_relation_size(c.oid) AS table_bytes,
       c.reltuples::bigint AS estimated_rows
FROM pg_class c WHERE c.oid = to_regclass('resources')
"""

# Groups, then the top ``locations`` locations by the chosen total (ties by id), all their types.
_GROUPS = """
WITH g AS (
    SELECT business_id, location_id, resource_type, count(*) AS n,
           COALESCE(sum(pg_column_size(data)), 0)::bigint AS bytes
    FROM resources {sample}
    GROUP BY business_id, location_id, resource_type
), per_location AS (
    SELECT g.*, sum(n) OVER w AS location_rows, sum(bytes) OVER w AS location_bytes
    FROM g WINDOW w AS (PARTITION BY business_id, location_id)
), ranked AS (
    SELECT per_location.*,
           dense_rank() OVER (ORDER BY {total} DESC, business_id, location_id) AS place
    FROM per_location
)
SELECT business_id, location_id, resource_type, n, bytes FROM ranked
WHERE place <= %(locations)s
ORDER BY place, resource_type
"""


class StorageReader:
    """Reads a shard's storage per location (see module docstring); the ``StorageReading`` port."""

    def __init__(self, *, exact_max_bytes: int = EXACT_MAX_BYTES) -> None:
        if exact_max_bytes < 8192:
            raise ValueError("exact_max_bytes must be at least one page (8192)")
        self._exact_max_bytes = exact_max_bytes

    def read(self, dsn: str, *, locations: int, by_bytes: bool) -> ShardStorage:
        """The top ``locations`` locations by stored bytes (or rows), each with every resource
        type; DEADLINE_EXCEEDED past the RPC's deadline, UNAVAILABLE when the shard fails."""
        timeout_ms = max(100, int(context.deadline().remaining() * 1000))
        try:
            with psycopg.connect(
                dsn,
                autocommit=True,
                connect_timeout=max(2, timeout_ms // 1000),
                options=f"-c default_transaction_read_only=on -c statement_timeout={timeout_ms}",
                application_name="simplu-grpc tenant usage",
                row_factory=dict_row,
            ) as conn:
                return self._read(conn, locations=locations, by_bytes=by_bytes)
        except psycopg.errors.QueryCanceled as exc:
            raise DeadlineExceeded("reading the shard's storage took longer than the deadline") from exc
        except psycopg.Error as exc:
            raise ShardUnavailable(f"the shard could not be read ({type(exc).__name__})") from exc

    def _read(self, conn: psycopg.Connection[Any], *, locations: int, by_bytes: bool) -> ShardStorage:
        table = conn.execute(_TABLE).fetchall()
        if not table:  # a shard this server never migrated: nothing stored here
            return ShardStorage([], exact=True, sampled_percent=100.0, table_bytes=0, estimated_rows=0)
        heap_bytes = int(table[0]["heap_bytes"])
        percent = 100.0
        sample = ""
        if heap_bytes > self._exact_max_bytes:
            percent = max(0.0001, 100.0 * self._exact_max_bytes / heap_bytes)
            # A fixed literal from a float computed here: never text from a request.
            sample = f"TABLESAMPLE SYSTEM ({percent:.6f})"
        statement = _GROUPS.format(sample=sample, total="location_bytes" if by_bytes else "location_rows")
        rows = conn.execute(statement, {"locations": locations}).fetchall()
        scale = 100.0 / percent
        return ShardStorage(
            types=[
                TypeStorage(
                    business_id=r["business_id"],
                    location_id=r["location_id"],
                    resource_type=r["resource_type"],
                    rows=round(int(r["n"]) * scale),
                    bytes=round(int(r["bytes"]) * scale),
                )
                for r in rows
            ],
            exact=not sample,
            sampled_percent=percent,
            table_bytes=int(table[0]["table_bytes"]),
            estimated_rows=int(table[0]["estimated_rows"]),
        )
