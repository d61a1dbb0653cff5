"""Shard views for operators: ListShards, GetShardUsage, CheckShardCapacity, ListPools, RecyclePool.

Every answer is bounded in time: calls to Citrus run under a deadline no longer than the
RPC's and no longer than a few seconds (``dependencies.within``), and answers that touch
several shards read them concurrently (``dependencies.run_bounded``). Connection strings
never leave this module; every error text is redacted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import cast

from simplu_grpc.domain.admin.arguments import require_shard_id
from simplu_grpc.domain.admin.dependencies import CALL_TIMEOUT_SECONDS, run_bounded, within
from simplu_grpc.domain.admin.ports import Pools, Routing, ShardReader
from simplu_grpc.domain.placement.ports import ShardSource
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.pool_stats import PoolStatsInfo
from simplu_grpc.errors import InvalidArgument, NotFound
from simplu_grpc.redact import describe_error

log = logging.getLogger(__name__)

# ListShards: the Citrus health call may itself take ~2 s (Citrus probes every shard).
LIST_SHARDS_TIMEOUT_SECONDS = 2.5
# Per-shard reads (schema version) inside answers about many shards.
SHARD_READ_TIMEOUT_SECONDS = 1.5
# Not worth opening connections with less than this left of ListShards's budget.
_MIN_READ_SECONDS = 0.2


def usage_percentage(business_count: int | None, max_businesses: int | None) -> float | None:
    """``business_count / max_businesses * 100`` rounded to 2 decimals.

    None when Citrus did not report either count (unknown usage is not 0 % usage); 0 when it
    reported a maximum of 0.
    """
    if business_count is None or max_businesses is None:
        return None
    if max_businesses <= 0:
        return 0.0
    return round(business_count / max_businesses * 100.0, 2)


def is_near_capacity(usage: float | None, threshold_percent: float) -> bool:
    """At or above the threshold (SHARD_NEAR_CAPACITY_PERCENT) counts as near capacity.

    An unknown usage is never flagged: that would be a guess either way.
    """
    return usage is not None and usage >= threshold_percent


class UsageOrder(Enum):
    BY_SHARD_ID = "shard_id"
    USAGE_DESC = "usage_percentage desc"
    USAGE_ASC = "usage_percentage"

    @classmethod
    def parse(cls, order_by: str) -> UsageOrder:
        """GetShardUsage's ``order_by`` (AIP-132 style, as ListResources'); INVALID_ARGUMENT otherwise."""
        found = _USAGE_ORDERS.get(" ".join(order_by.lower().split()))
        if found is None:
            raise InvalidArgument.field(
                "order_by", 'must be "shard_id", "usage_percentage" or "usage_percentage desc"'
            )
        return found


_USAGE_ORDERS = {
    "": UsageOrder.BY_SHARD_ID,
    "shard_id": UsageOrder.BY_SHARD_ID,
    "shard_id asc": UsageOrder.BY_SHARD_ID,
    "usage_percentage": UsageOrder.USAGE_ASC,
    "usage_percentage asc": UsageOrder.USAGE_ASC,
    "usage_percentage desc": UsageOrder.USAGE_DESC,
}


@dataclass(frozen=True, slots=True)
class ShardUsage:
    """None counts / usage: Citrus did not report them (unknown, never invented)."""

    shard_id: str
    business_count: int | None
    max_businesses: int | None
    usage_percentage: float | None
    is_active: bool
    near_capacity: bool


@dataclass(frozen=True, slots=True)
class ShardView:
    """One line of ListShards: Citrus's view merged with this server's pool."""

    shard_id: str
    active: bool | None  # None: neither Citrus nor a route of this server said
    last_health_check: datetime | None
    business_count: int | None  # None: unknown (Citrus did not report it, or did not list the shard)
    max_businesses: int | None
    usage_percentage: float | None
    near_capacity: bool
    listed_by_citrus: bool
    pool: PoolStatsInfo | None
    schema_version: int | None  # None: unknown (no pool here, or the shard did not answer in time)


@dataclass(frozen=True, slots=True)
class ShardList:
    shards: list[ShardView]
    citrus_reachable: bool
    citrus_error: str
    near_capacity_threshold: float


@dataclass(frozen=True, slots=True)
class Capacity:
    shard_id: str
    can_accept_new_business: bool
    business_count: int | None  # None: Citrus did not report it
    max_businesses: int | None


class ShardViews:
    """Citrus's shards merged with this server's pools; ``reader`` reads schema versions."""

    def __init__(
        self,
        *,
        shards: ShardSource,
        pools: Pools,
        routing: Routing,
        reader: ShardReader,
        near_capacity_percent: float,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self._shards = shards
        self._pools = pools
        self._routing = routing
        self._reader = reader
        self.near_capacity_percent = near_capacity_percent
        self._secrets = tuple(s for s in secrets if s)

    def list_shards(self) -> ShardList:
        """Citrus health merged with local pools; answers from local pools when Citrus is down.

        Schema versions come from this server's pools, and, for shards it has no pool for
        (e.g. just migrated by MigrateShard), from a short read-only connection made with the
        connection string Citrus listed, within what is left of the answer's budget.
        """
        started = time.monotonic()
        stats = {s.shard_id: s for s in self._pools.stats()}
        calls: dict[str, Callable[[], object]] = {"citrus": self._shards.shards_health}
        for shard_id in stats:
            calls[f"schema/{shard_id}"] = self._pooled_version(shard_id)
        outcomes = run_bounded(calls, timeout=LIST_SHARDS_TIMEOUT_SECONDS)
        health = outcomes["citrus"]
        citrus_error = ""
        listed: list[ShardAssignment] = []
        if isinstance(health, BaseException):
            citrus_error = describe_error(health, self._secrets)
            log.warning("ListShards: shard health unavailable: %s", citrus_error)
        else:
            listed = list(cast(list[ShardAssignment], health))
        unpooled = {
            f"schema/{s.shard_id}": _bind_dsn(self._reader.schema_version, s.connection_string)
            for s in listed
            if s.shard_id not in stats and s.connection_string
        }
        left = LIST_SHARDS_TIMEOUT_SECONDS - (time.monotonic() - started)
        if unpooled and left > _MIN_READ_SECONDS:
            outcomes.update(run_bounded(unpooled, timeout=min(SHARD_READ_TIMEOUT_SECONDS, left)))
        versions = {
            name.removeprefix("schema/"): value
            for name, value in outcomes.items()
            if name.startswith("schema/") and isinstance(value, int)
        }
        views: dict[str, ShardView] = {}
        for shard in listed:
            usage = usage_percentage(shard.business_count, shard.max_businesses)
            views[shard.shard_id] = ShardView(
                shard_id=shard.shard_id,
                active=shard.is_active,
                last_health_check=shard.last_health_check,
                business_count=shard.business_count,
                max_businesses=shard.max_businesses,
                usage_percentage=usage,
                near_capacity=is_near_capacity(usage, self.near_capacity_percent),
                listed_by_citrus=True,
                pool=stats.get(shard.shard_id),
                schema_version=versions.get(shard.shard_id),
            )
        last_known = self._routing.shards()
        for shard_id, pool in stats.items():
            if shard_id not in views:
                views[shard_id] = ShardView(
                    shard_id=shard_id,
                    # Citrus did not list it (or did not answer): its last isActive on a route.
                    active=last_known.get(shard_id),
                    last_health_check=None,
                    business_count=None,
                    max_businesses=None,
                    usage_percentage=None,
                    near_capacity=False,
                    listed_by_citrus=False,
                    pool=pool,
                    schema_version=versions.get(shard_id),
                )
        return ShardList(
            shards=[views[k] for k in sorted(views)],
            citrus_reachable=not citrus_error,
            citrus_error=citrus_error,
            near_capacity_threshold=self.near_capacity_percent,
        )

    def shard_usage(self, order: UsageOrder, near_capacity_only: bool) -> list[ShardUsage]:
        """The reference's usage statistics, sorted and filtered; CITRUS_UNAVAILABLE when Citrus is down."""
        with within(CALL_TIMEOUT_SECONDS):
            listed = self._shards.shards_health()
        rows = []
        for shard in listed:
            usage = usage_percentage(shard.business_count, shard.max_businesses)
            rows.append(
                ShardUsage(
                    shard_id=shard.shard_id,
                    business_count=shard.business_count,
                    max_businesses=shard.max_businesses,
                    usage_percentage=usage,
                    is_active=shard.is_active,
                    near_capacity=is_near_capacity(usage, self.near_capacity_percent),
                )
            )
        if near_capacity_only:
            # A shard of unknown usage is not known to be near capacity: left out.
            rows = [row for row in rows if row.near_capacity]
        rows.sort(key=lambda r: r.shard_id)
        # Stable sorts: ties stay by id; shards of unknown usage come last in either order.
        if order is UsageOrder.USAGE_DESC:
            rows.sort(key=lambda r: -1.0 if r.usage_percentage is None else r.usage_percentage, reverse=True)
        elif order is UsageOrder.USAGE_ASC:
            rows.sort(key=lambda r: (r.usage_percentage is None, r.usage_percentage or 0.0))
        return rows

    def check_capacity(self, shard_id: str) -> Capacity:
        """Citrus's capacity answer for one shard; NOT_FOUND for an unknown shard."""
        require_shard_id(shard_id)
        with within(CALL_TIMEOUT_SECONDS):
            info = self._shards.capacity(shard_id)
        if info is None:
            raise NotFound(f"shard {shard_id!r} is unknown to Citrus", metadata={"shard_id": shard_id})
        return Capacity(
            shard_id=info.shard_id or shard_id,
            can_accept_new_business=info.can_accept_new_business,
            business_count=info.business_count,
            max_businesses=info.max_businesses,
        )

    def list_pools(self) -> list[PoolStatsInfo]:
        return sorted(self._pools.stats(), key=lambda s: s.shard_id)

    def recycle_pool(self, shard_id: str) -> PoolStatsInfo:
        """Replace every connection of the shard's pool; NOT_FOUND when there is none."""
        require_shard_id(shard_id)
        if not self._pools.recycle(shard_id):
            raise NotFound(f"this server has no pool for shard {shard_id!r}", metadata={"shard_id": shard_id})
        log.info("recycled the pool of shard %s", shard_id)
        for stats in self._pools.stats():
            if stats.shard_id == shard_id:
                return stats
        raise NotFound(
            f"the pool of shard {shard_id!r} was closed meanwhile", metadata={"shard_id": shard_id}
        )

    def _pooled_version(self, shard_id: str) -> Callable[[], int | None]:
        def read() -> int | None:
            with within(SHARD_READ_TIMEOUT_SECONDS):
                return self._reader.pool_version(shard_id)

        return read


def _bind_dsn(read: Callable[[str], int], dsn: str) -> Callable[[], int]:
    return lambda: read(dsn)
