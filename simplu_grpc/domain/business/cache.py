"""The business lookups of authorization, on the one cache mechanism (``domain.cache``).

Resource calls need the business (is it active, which locations, who is a member) on every
request; a warm request must not touch DynamoDB (DESIGN §1). Entries are fresh for
``ttl_seconds``; past it an entry is still answered at once while one background read
refreshes it, and while DynamoDB fails it is served for up to ``stale_max_seconds`` more
(``BUSINESS_CACHE_STALE_MAX_SECONDS``): a DynamoDB outage does not stop the tenants this
server knows. That is also how long a change made through another replica (a member
removed) can take to show here while DynamoDB is down; while it answers, about ``ttl_seconds``.
This server's own writes replace or drop entries at once. Misses (no such business) are
cached too, so a stream of requests for a nonexistent id does not hammer the table; creating
that id here replaces the entry.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from simplu_grpc.domain.business.model import Business
from simplu_grpc.domain.business.ports import BusinessRepository
from simplu_grpc.domain.cache import Background, Cache
from simplu_grpc.metrics import Metrics


def _is_older(cached: Business | None, loaded: Business | None) -> bool:
    """A read that lags behind what is cached (an eventually consistent read after our write)."""
    return cached is not None and loaded is not None and cached.version > loaded.version


class BusinessCache:
    """``get(id)`` through the cache; ``put`` / ``invalidate`` after writes. Thread-safe."""

    def __init__(
        self,
        store: BusinessRepository,
        *,
        ttl_seconds: float,
        metrics: Metrics,
        stale_max_seconds: float = 300.0,
        failure_backoff_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
        background: Background | None = None,
    ) -> None:
        self._store = store
        self._cache: Cache[str, Business | None] = Cache(
            self._load,
            name="business",
            ttl=ttl_seconds,
            stale_max=stale_max_seconds,
            failure_backoff=failure_backoff_seconds,
            metrics=metrics,
            clock=clock,
            background=background,
            max_entries=max_entries,
            is_older=_is_older,
        )

    def _load(self, business_id: str) -> Business | None:
        # An eventually consistent read is enough here: the TTL already allows this much staleness.
        return self._store.get(business_id, consistent=False)

    def get(self, business_id: str) -> Business | None:
        """The business (or None when it does not exist), from cache while usable."""
        return self._cache.get(business_id).value

    def put(self, business: Business) -> None:
        """Remember a business this server just wrote (fresher than anything cached or being read)."""
        self._cache.put(business.id, business)

    def invalidate(self, business_id: str | None = None) -> int:
        """Drop one entry (or all); answers how many were dropped."""
        if business_id is None:
            return self._cache.invalidate()
        return self._cache.invalidate(lambda key: key == business_id)

    def close(self) -> None:
        """Stop the background refresher."""
        self._cache.close()
