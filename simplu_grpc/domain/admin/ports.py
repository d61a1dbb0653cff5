"""What the ShardAdmin use cases need from the adapters, as Protocols (the real adapters satisfy them).

Kept structural so the admin domain can be exercised with the real adapters in integration
tests and with in-memory fakes in unit tests, and so it does not import psycopg or urllib3.
Shard lookup (Citrus) is ``domain.placement.ports``; everything else the admin use cases
reach is here: pools, the routing cache, business info, the migrator and shard reads
(``adapters.postgres.migrator.PostgresMigrator``, ``adapters.postgres.consistency_reader``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from simplu_grpc.domain.placement.routing import Resolution
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.pool_stats import PoolStatsInfo


class Pools(Protocol):
    """The per-shard connection pools of this server."""

    def connection(self, assignment: ShardAssignment) -> AbstractContextManager[Any]: ...

    def stats(self) -> Sequence[PoolStatsInfo]: ...

    def recycle(self, shard_id: str) -> bool: ...

    def assignment(self, shard_id: str) -> ShardAssignment | None:
        """Where this server's pool for ``shard_id`` connects (may differ from Citrus's answer now)."""
        ...


class Routing(Protocol):
    """The routing cache (business+location -> assignment)."""

    def peek(self, business_id: str, location_id: str) -> Resolution | None: ...

    def invalidate(self, business_id: str | None = None, location_id: str | None = None) -> int: ...

    def shards(self) -> dict[str, bool]:
        """Each routed shard with Citrus's last ``isActive`` for it."""
        ...


class MigrationResult(NamedTuple):
    """One shard's migration: schema version before and after, and what was applied
    (``NNNN_name`` of each migration, in order)."""

    before: int
    after: int
    applied: list[str]


class Migrator(Protocol):
    """Applies the shard schema migrations this server carries."""

    def latest_version(self) -> int:
        """The schema version this server needs (its newest migration)."""
        ...

    def migrate(self, dsn: str, timeout_ms: int) -> MigrationResult:
        """Apply what is pending on the shard at ``dsn``, connecting and running within ``timeout_ms``."""
        ...


@dataclass(frozen=True, slots=True)
class ShardSnapshot:
    """What one shard holds for the businesses checked: its schema version and row counts."""

    schema_version: int
    # (business_id, location_id) -> number of resources
    counts: dict[tuple[str, str], int]


class ShardReader(Protocol):
    """Read-only reads of a shard: never through a pool (creating one migrates the shard, and
    the answers that use these must change nothing) except ``pool_version``, which reads
    through the pool this server already has."""

    def snapshot(self, dsn: str, business_ids: Sequence[str]) -> ShardSnapshot:
        """Schema version and per-location resource counts of ``business_ids``, within the deadline."""
        ...

    def schema_version(self, dsn: str) -> int:
        """The shard's schema version (0: never migrated), over a short-lived connection."""
        ...

    def pool_version(self, shard_id: str) -> int | None:
        """The schema version read through this server's pool of ``shard_id``; None without one."""
        ...


@dataclass(frozen=True, slots=True)
class TypeStorage:
    business_id: str
    location_id: str
    resource_type: str
    rows: int
    bytes: int


@dataclass(frozen=True, slots=True)
class ShardStorage:
    """The heaviest locations of one shard; ``exact`` False: figures scaled from a sample."""

    types: list[TypeStorage]
    exact: bool
    sampled_percent: float  # 100 when exact
    table_bytes: int
    estimated_rows: int  # PostgreSQL's statistics (reltuples); -1 when never analyzed


class StorageReading(Protocol):
    """Reads storage per location of one shard, read-only (adapters/postgres/storage_usage.py)."""

    def read(self, dsn: str, *, locations: int, by_bytes: bool) -> ShardStorage: ...
