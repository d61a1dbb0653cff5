"""The ShardAdmin use cases together: what ``wiring.build_admin`` builds and the servicer serves."""

from __future__ import annotations

from dataclasses import dataclass

from simplu_grpc.domain.admin.consistency import ConsistencyChecker
from simplu_grpc.domain.admin.dependencies import DependencyStatus
from simplu_grpc.domain.admin.migrations import ShardMigrations
from simplu_grpc.domain.admin.routing import LocationRouting
from simplu_grpc.domain.admin.shards import ShardViews
from simplu_grpc.domain.admin.usage import TenantUsageQuery


@dataclass(frozen=True, slots=True)
class ShardAdmin:
    """The operators' console, one use case per concern (each with its own ports)."""

    shards: ShardViews
    locations: LocationRouting
    migrations: ShardMigrations
    consistency: ConsistencyChecker
    dependencies: DependencyStatus
    usage: TenantUsageQuery
