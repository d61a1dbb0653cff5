"""Routing cache: business+location -> shard, with TTL, single-flight refresh and stale-while-error.

A warm request must not call Citrus, so assignments are cached for ``ttl`` seconds. When
an entry expires, ONE caller per key asks the directory (single flight) while others that
already have an (expired) entry keep using it and callers with nothing cached wait for
that one answer. When the directory fails, an expired entry is still served for up to
``stale_max`` seconds past its TTL (stale-while-error): a Citrus outage does not stop
tenants this server already knows. A forced ``refresh`` (after a shard connection failed:
Citrus may have moved the shard) asks and never falls back to the stale entry; but a key
is force-refreshed at most once per ``min_refresh_interval``: while a shard is down every
request to it fails and asks for a refresh, and those must not become one Citrus call
each. Within the interval a refresh answers the entry the last refresh left.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from simplu_grpc import context
from simplu_grpc.domain.shards import ShardAssignment
from simplu_grpc.errors import DeadlineExceeded
from simplu_grpc.metrics import Metrics

_CACHE = "routing"


class ShardDirectory(Protocol):
    """Where a business+location lives (Citrus, or the single database)."""

    def get_shard(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment: ...


class Resolution(NamedTuple):
    """A routing answer: the assignment, whether it came from the cache, and its age."""

    assignment: ShardAssignment
    from_cache: bool
    age_seconds: float


@dataclass(slots=True)
class _Entry:
    assignment: ShardAssignment
    fetched_at: float


class _Flight:
    """One in-progress directory lookup that followers for the same key wait on."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: ShardAssignment | None = None
        self.error: BaseException | None = None


Key = tuple[str, str]


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
    ) -> None:
        if ttl < 0 or stale_max < 0 or min_refresh_interval < 0:
            raise ValueError("ttl, stale_max and min_refresh_interval must not be negative")
        self._directory = directory
        self._ttl = ttl
        self._stale_max = stale_max
        self._min_refresh = min_refresh_interval
        self._metrics = metrics
        self._clock = clock
        # One lock for the maps; directory calls happen outside it (they can take seconds).
        self._lock = threading.Lock()
        self._entries: dict[Key, _Entry] = {}
        self._flights: dict[Key, _Flight] = {}
        self._refreshed: dict[Key, float] = {}  # when a forced refresh of the key last finished

    def resolve(
        self, business_id: str, location_id: str, business_type: str, *, refresh: bool = False
    ) -> Resolution:
        """The assignment for a location; asks the directory only when needed (see module docstring)."""
        key = (business_id, location_id)
        with self._lock:
            now = self._clock()
            entry = self._entries.get(key)
            if entry is not None and not refresh and now - entry.fetched_at <= self._ttl:
                self._metrics.cache_lookup(_CACHE, "hit")
                return Resolution(entry.assignment, True, now - entry.fetched_at)
            flight = self._flights.get(key)
            if (
                flight is None
                and refresh
                and entry is not None
                and now - self._refreshed.get(key, -math.inf) < self._min_refresh
            ):
                # Refreshed a moment ago (module docstring): its answer is the entry.
                self._metrics.cache_lookup(_CACHE, "hit")
                return Resolution(entry.assignment, True, now - entry.fetched_at)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if (
            not leader
            and entry is not None
            and not refresh
            and now - entry.fetched_at <= self._ttl + self._stale_max
        ):
            # Someone is already refreshing this key: an answer a little past its TTL beats waiting.
            self._metrics.cache_lookup(_CACHE, "stale")
            return Resolution(entry.assignment, True, now - entry.fetched_at)
        if leader:
            self._metrics.cache_lookup(_CACHE, "miss")
            return self._lead(key, flight, business_type, entry, refresh)
        return self._follow(key, flight, entry, refresh)

    def _lead(
        self, key: Key, flight: _Flight, business_type: str, entry: _Entry | None, refresh: bool
    ) -> Resolution:
        try:
            assignment = self._directory.get_shard(key[0], key[1], business_type)
        except BaseException as exc:
            flight.error = exc
            with self._lock:
                del self._flights[key]
                if refresh:
                    self._refreshed[key] = self._clock()
            flight.done.set()
            stale = None if refresh else self._stale_fallback(key)
            if stale is not None:
                return stale
            raise
        with self._lock:
            self._store(key, assignment)
            del self._flights[key]
            if refresh:
                self._refreshed[key] = self._clock()
        flight.result = assignment
        flight.done.set()
        return Resolution(assignment, False, 0.0)

    def _follow(self, key: Key, flight: _Flight, entry: _Entry | None, refresh: bool) -> Resolution:
        if not flight.done.wait(timeout=context.deadline().remaining()):
            raise DeadlineExceeded("deadline exceeded while waiting for the shard lookup")
        if flight.result is not None:
            return Resolution(flight.result, False, 0.0)
        stale = None if refresh else self._stale_fallback(key)
        if stale is not None:
            return stale
        assert flight.error is not None
        raise flight.error

    def _stale_fallback(self, key: Key) -> Resolution | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            age = self._clock() - entry.fetched_at
            if age > self._ttl + self._stale_max:
                return None
        self._metrics.cache_lookup(_CACHE, "stale")
        return Resolution(entry.assignment, True, age)

    def _store(self, key: Key, assignment: ShardAssignment) -> None:
        """Caller holds the lock. A new connection string for a shard updates every entry of that shard.

        Otherwise tenants whose entries are still fresh would keep sending the old string
        and the pool registry would flip the shard's pool back and forth.
        """
        self._entries[key] = _Entry(assignment, self._clock())
        for other_key, other in self._entries.items():
            if (
                other_key != key
                and other.assignment.shard_id == assignment.shard_id
                and other.assignment.connection_string != assignment.connection_string
            ):
                other.assignment = dataclasses.replace(
                    other.assignment, connection_string=assignment.connection_string
                )

    def peek(self, business_id: str, location_id: str) -> Resolution | None:
        """The cached entry (fresh or not) without asking anyone."""
        with self._lock:
            entry = self._entries.get((business_id, location_id))
            if entry is None:
                return None
            return Resolution(entry.assignment, True, self._clock() - entry.fetched_at)

    def invalidate(self, business_id: str | None = None, location_id: str | None = None) -> int:
        """Drop one location's entry, a business's entries, or everything; returns how many were dropped."""
        if business_id is None and location_id is not None:
            raise ValueError("location_id needs business_id")
        with self._lock:
            if business_id is None:
                dropped = len(self._entries)
                self._entries.clear()
                self._refreshed.clear()
                return dropped
            doomed = [
                key
                for key in self._entries
                if key[0] == business_id and (location_id is None or key[1] == location_id)
            ]
            for key in doomed:
                del self._entries[key]
                self._refreshed.pop(key, None)
            return len(doomed)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
