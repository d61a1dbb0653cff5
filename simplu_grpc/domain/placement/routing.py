"""Routing cache: business+location -> shard, on the one cache mechanism (``domain.cache``).

A warm request must not call Citrus, so assignments are cached for ``ttl`` seconds. Past
it, the expired entry is still answered at once while ONE background refresh asks Citrus
(stale-while-revalidate); while Citrus fails, it is served for up to ``stale_max`` seconds
past its TTL (stale-if-error), and each route is retried at most once per
``failure_backoff``: a Citrus outage neither stops the tenants this server knows nor turns
into a Citrus call per request. A forced ``refresh`` (after a shard connection failed: Citrus
may have moved the shard) waits for Citrus and never falls back to the stale entry, at most
once per route per ``min_refresh_interval``.

Citrus's ``isActive`` is carried along but does not stop a route: an inactive shard takes
no new businesses, its existing tenants are served while its database answers.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from simplu_grpc.domain.cache import Background, Cache
from simplu_grpc.domain.placement.ports import ShardDirectory
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.metrics import Metrics

_CACHE = "routing"


class Resolution(NamedTuple):
    """A routing answer: the assignment, whether it came from the cache, and its age."""

    assignment: ShardAssignment
    from_cache: bool
    age_seconds: float


@dataclass(frozen=True, slots=True)
class _Key:
    """A route's cache key; the business type rides along (for a registration on a miss), not part of it."""

    business_id: str
    location_id: str
    business_type: str = field(default="", compare=False)


def _follow_shard(new: ShardAssignment, other: ShardAssignment) -> ShardAssignment | None:
    """A new answer about a shard (connection string, active flag) updates every route to it.

    Otherwise tenants whose entries are still fresh would keep sending the old string and
    the pool registry would flip the shard's pool back and forth.
    """
    if other.shard_id != new.shard_id or (
        other.connection_string == new.connection_string and other.is_active == new.is_active
    ):
        return None
    return dataclasses.replace(
        other,
        connection_string=new.connection_string,
        is_active=new.is_active,
        observed_at=new.observed_at,
    )


class RoutingCache:
    """Thread-safe business+location -> ShardAssignment cache in front of a ShardDirectory."""

    def __init__(
        self,
        directory: ShardDirectory,
        *,
        ttl: float,
        stale_max: float,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        min_refresh_interval: float = 1.0,
        failure_backoff: float = 1.0,
        background: Background | None = None,
    ) -> None:
        self._directory = directory
        self._cache: Cache[_Key, ShardAssignment] = Cache(
            self._load,
            name=_CACHE,
            ttl=ttl,
            stale_max=stale_max,
            failure_backoff=failure_backoff,
            metrics=metrics,
            clock=clock,
            background=background,
            min_force_interval=min_refresh_interval,
            propagate=_follow_shard,
        )

    def _load(self, key: _Key) -> ShardAssignment:
        found = self._directory.get_shard(key.business_id, key.location_id)
        if found is not None:
            return found
        # Known to business info (the caller checked) but not to Citrus: registered on first
        # use, with the business's type (e.g. Citrus was down when the location was created).
        return self._directory.register(key.business_id, key.location_id, key.business_type)

    def resolve(
        self, business_id: str, location_id: str, business_type: str, *, refresh: bool = False
    ) -> Resolution:
        """The assignment for a location; asks the directory only when needed (see module docstring)."""
        found = self._cache.get(_Key(business_id, location_id, business_type), force=refresh)
        return Resolution(found.value, found.from_cache, found.age_seconds)

    def peek(self, business_id: str, location_id: str) -> Resolution | None:
        """The cached entry (fresh or not) without asking anyone."""
        found = self._cache.peek(_Key(business_id, location_id))
        return None if found is None else Resolution(found.value, found.from_cache, found.age_seconds)

    def shards(self) -> dict[str, bool]:
        """Each shard this server routes to, with Citrus's last ``isActive`` for it (for metrics)."""
        return {a.shard_id: a.is_active for a in self._cache.values()}

    def invalidate(self, business_id: str | None = None, location_id: str | None = None) -> int:
        """Drop one location's entry, a business's entries, or everything; returns how many were dropped."""
        if business_id is None and location_id is not None:
            raise ValueError("location_id needs business_id")
        if business_id is None:
            return self._cache.invalidate()
        return self._cache.invalidate(
            lambda key: key.business_id == business_id and location_id in (None, key.location_id)
        )

    def close(self) -> None:
        """Stop the background refresher."""
        self._cache.close()

    def __len__(self) -> int:
        return len(self._cache)
