"""The one set of shard-lookup ports: what the domain asks Citrus (or the single database).

Lookup and registration are separate operations: ``get_shard`` only asks where a location
lives (None: nowhere yet), ``register`` places it. A caller that wants register-on-miss
(the routing cache, for a location business info holds but Citrus never took) calls both.
``adapters.citrus`` implements them: ``CitrusClient`` (raw Citrus), ``CitrusDirectory``
(Citrus plus the business-info bookkeeping of a registration) and ``SingleDatabaseDirectory``.
"""

from __future__ import annotations

from typing import Protocol

from simplu_grpc.domain.placement.shards import CapacityInfo, ShardAssignment


class ShardLookup(Protocol):
    """Where a business+location lives; None when it is not registered (never registers)."""

    def get_shard(self, business_id: str, location_id: str) -> ShardAssignment | None: ...


class ShardRegistrar(Protocol):
    """Place a business+location on a shard (idempotent: a registered location keeps its shard)."""

    def register(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment: ...


class ShardDirectory(ShardLookup, ShardRegistrar, Protocol):
    """Lookup and registration: what the routing cache needs."""


class ShardSource(ShardDirectory, Protocol):
    """Everything Citrus answers: placement plus shard health and capacity (ShardAdmin, usage)."""

    def shards_health(self) -> list[ShardAssignment]: ...

    def capacity(self, shard_id: str) -> CapacityInfo | None: ...
