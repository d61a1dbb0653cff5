"""The numbers of one shard connection pool, as ShardAdmin.ListPools and the metrics show them.

One type for the adapter that measures them (adapters/postgres/pool_stats.py) and the admin use
cases that report them; it holds no secret (the target is host:port/db, never the connection
string, and the last error is redacted).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class PoolStatsInfo:
    """One shard pool as ShardAdmin.ListPools and metrics show it (psycopg_pool stats names); no secret."""

    shard_id: str
    target: str  # host:port/db, never the connection string
    pool_min: int
    pool_max: int
    pool_size: int
    pool_available: int
    requests_waiting: int
    requests_num: int
    requests_errors: int
    connections_num: int
    connections_errors: int
    connections_lost: int
    create_time: datetime | None
    last_used_time: datetime | None
    healthy: bool | None  # None: no connection attempt finished yet
    last_error: str | None  # redacted
    schema_version: int | None  # None: not migrated through this pool yet
