"""What the ShardAdmin use cases need from the adapters, as Protocols (the real adapters satisfy them).

Kept structural so the admin domain can be exercised with the real adapters in integration
tests and with tiny fakes in unit tests, and so it does not import psycopg_pool or urllib3.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from simplu_grpc.domain.business import Business
from simplu_grpc.domain.pool_stats import PoolStatsInfo
from simplu_grpc.domain.routing import Resolution
from simplu_grpc.domain.shards import CapacityInfo, ShardAssignment


class ShardSource(Protocol):
    """Citrus (or, in single-database mode, the one database): assignments and shard health."""

    def get_shard(self, business_id: str, location_id: str) -> ShardAssignment | None: ...

    def register(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment: ...

    def shards_health(self) -> list[ShardAssignment]: ...

    def capacity(self, shard_id: str) -> CapacityInfo | None: ...


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


class BusinessPage(Protocol):
    @property
    def businesses(self) -> list[Business]: ...
    @property
    def next_token(self) -> str: ...


class Businesses(Protocol):
    """Business info, read fresh (operators must not be answered from a cache)."""

    def get(self, business_id: str) -> Business | None: ...

    def update(self, business: Business, *, previous: Business) -> Business: ...

    def list(
        self, *, page_size: int, page_token: str, member: str | None, include_deleted: bool
    ) -> BusinessPage: ...
