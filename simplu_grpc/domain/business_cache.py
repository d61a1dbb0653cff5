"""A short-lived cache of business lookups for authorization, invalidated by this server's writes.

Resource calls need the business (is it active, which locations, who is a member) on every
request; a warm request must not touch DynamoDB (DESIGN §1). Entries live ``ttl_seconds``;
this server's own writes replace or drop them at once, other replicas' writes show up when
the entry expires. Misses (no such business) are cached too, so a stream of requests for a
nonexistent id does not hammer the table; creating that id here invalidates the entry.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from simplu_grpc.domain.business import Business
from simplu_grpc.metrics import Metrics


class BusinessSource(Protocol):
    def get(self, business_id: str, *, consistent: bool = True) -> Business | None: ...


class BusinessCache:
    """``get(id)`` through the cache; ``put`` / ``invalidate`` after writes. Thread-safe."""

    def __init__(
        self,
        store: BusinessSource,
        *,
        ttl_seconds: float,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
    ) -> None:
        if ttl_seconds < 0:
            raise ValueError("ttl_seconds must not be negative")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._store = store
        self._ttl = ttl_seconds
        self._metrics = metrics
        self._clock = clock
        self._max_entries = max_entries
        # id -> (expires_at, business or None). The lock guards only the dict, never I/O:
        # two concurrent misses may both read the store, which is cheaper than serializing reads.
        self._entries: OrderedDict[str, tuple[float, Business | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, business_id: str) -> Business | None:
        """The business (or None when it does not exist), from cache while fresh."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(business_id)
            if entry is not None and entry[0] > now:
                self._entries.move_to_end(business_id)
                self._metrics.cache_lookup("business", "hit")
                return entry[1]
        self._metrics.cache_lookup("business", "miss")
        # An eventually consistent read is enough here: the TTL already allows this much staleness.
        business = self._store.get(business_id, consistent=False)
        self._remember(business_id, business, now)
        return business

    def put(self, business: Business) -> None:
        """Remember a business this server just wrote (fresher than anything cached)."""
        self._remember(business.id, business, self._clock())

    def invalidate(self, business_id: str | None = None) -> int:
        """Drop one entry (or all); answers how many were dropped."""
        with self._lock:
            if business_id is None:
                dropped = len(self._entries)
                self._entries.clear()
                return dropped
            return 1 if self._entries.pop(business_id, None) is not None else 0

    def _remember(self, business_id: str, business: Business | None, now: float) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            current = self._entries.get(business_id)
            if current is not None:
                # Never replace what this server wrote with a read that raced with the write:
                # neither an older version nor a "does not exist" read that began before a create
                # (``now`` is when that read began; an entry stored since then is fresher).
                stored_at = current[0] - self._ttl
                if business is None and current[1] is not None and stored_at >= now:
                    return
                if current[1] is not None and business is not None and current[1].version > business.version:
                    return
            self._entries[business_id] = (now + self._ttl, business)
            self._entries.move_to_end(business_id)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
