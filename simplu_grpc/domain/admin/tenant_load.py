"""Per-tenant load in this process: requests, errors, rows and shard time per (shard, business, location).

Memory is bounded whatever the number of tenants: each minute has its own space-saving
sketch (Metwally et al., "Efficient computation of frequent and top-k elements") of at most
``capacity`` entries, and only the last ``WINDOW_MINUTES_MAX`` + 1 minutes are kept. The
sketch is weighted by shard time (the resource a hot shard runs out of): when it is full, a
new tenant takes the place of the entry with the least shard time and inherits that amount
as its possible over-count. So every tenant whose shard time in a minute exceeds
1/capacity of that minute's total is kept, and its shard time is never under-counted; its
other figures (requests, errors, rows) are counted from the moment it (last) got an entry,
so they are never over-counted. While a minute's sketch never filled, all its figures are exact.

Recording is one short critical section per shard call (a dict lookup and five additions;
an eviction is amortised O(log capacity) through a lazily corrected min-heap). Queries
merge the sketches of a window under the same lock: O(capacity x minutes), off the request path.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

# The windows GetTenantUsage offers, in minutes; the ring keeps one more (the current,
# partial) minute so that "the last N minutes" always covers at least N full minutes.
WINDOWS_MINUTES = (1, 5, 15)
WINDOW_MINUTES_MAX = max(WINDOWS_MINUTES)
BUCKET_SECONDS = 60

# Counter slots of one entry (a list, not an object: the request path only adds to it).
_SHARD_NS, _REQUESTS, _ERRORS, _ROWS_READ, _ROWS_WRITTEN, _OVERCOUNT_NS = range(6)

TenantKey = tuple[str, str, str]  # (shard_id, business_id, location_id)


class LoadRecorder(Protocol):
    """The port ResourceOps reports every shard call to (one call per statement on a shard)."""

    def record(
        self,
        shard_id: str,
        business_id: str,
        location_id: str,
        *,
        shard_ns: int,
        rows_read: int,
        rows_written: int,
        error: bool,
    ) -> None: ...


class LoadOrder(Enum):
    SHARD_TIME = "shard_time"
    REQUESTS = "requests"
    ERRORS = "errors"
    ROWS = "rows"  # read + written


@dataclass(frozen=True, slots=True)
class TenantFigures:
    """One tenant's load over a window in this process.

    ``shard_ns`` may over-count by at most ``overcount_ns`` (space-saving); requests, errors
    and rows may under-count by what was recorded while the tenant had no entry. All exact
    when ``overcount_ns`` is 0 and the window's sketches never filled (``LoadReport.exact``).
    """

    shard_id: str
    business_id: str
    location_id: str
    shard_ns: int
    requests: int
    errors: int
    rows_read: int
    rows_written: int
    overcount_ns: int

    def value(self, order: LoadOrder) -> int:
        if order is LoadOrder.SHARD_TIME:
            return self.shard_ns
        if order is LoadOrder.REQUESTS:
            return self.requests
        if order is LoadOrder.ERRORS:
            return self.errors
        return self.rows_read + self.rows_written


@dataclass(frozen=True, slots=True)
class LoadReport:
    """The top tenants of a window; ``start``/``end`` are epoch seconds of what it covers."""

    tenants: list[TenantFigures]
    start: float
    end: float
    exact: bool  # no sketch of the window ever evicted an entry
    tracked: int  # distinct tenants (with this filter) the window's sketches hold
    capacity: int


class _Sketch:
    """One minute's space-saving summary: at most ``capacity`` entries, weighted by shard time."""

    __slots__ = ("capacity", "counters", "evictions", "heap", "start")

    def __init__(self, start: float, capacity: int) -> None:
        self.start = start
        self.capacity = capacity
        self.counters: dict[TenantKey, list[int]] = {}
        # (shard_ns when pushed, key): exactly one item per entry, never above its current shard_ns
        # (counts only grow), so the smallest item whose value is current is the true minimum.
        self.heap: list[tuple[int, TenantKey]] = []
        self.evictions = 0

    def entry(self, key: TenantKey) -> list[int]:
        counters = self.counters.get(key)
        if counters is not None:
            return counters
        inherited = 0
        if len(self.counters) >= self.capacity:
            inherited = self._evict_smallest()
        counters = [inherited, 0, 0, 0, 0, inherited]
        self.counters[key] = counters
        heapq.heappush(self.heap, (inherited, key))
        return counters

    def _evict_smallest(self) -> int:
        heap, counters = self.heap, self.counters
        while True:
            pushed, key = heapq.heappop(heap)
            current = counters[key][_SHARD_NS]
            if current == pushed:
                del counters[key]
                self.evictions += 1
                return current
            heapq.heappush(heap, (current, key))


class TenantLoad:
    """Windowed top-K load per tenant for this process (see module docstring); thread-safe."""

    def __init__(
        self,
        *,
        capacity: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._clock = clock
        # Guards the ring and every sketch in it: held for a few dict operations per request,
        # and by queries while they copy a window out (never across I/O).
        self._lock = threading.Lock()
        self._ring: list[_Sketch] = []  # oldest first, at most WINDOW_MINUTES_MAX + 1
        self._current = self._new_bucket(clock())

    def _new_bucket(self, now: float) -> _Sketch:
        sketch = _Sketch(now - now % BUCKET_SECONDS, self.capacity)
        self._ring.append(sketch)
        del self._ring[: -(WINDOW_MINUTES_MAX + 1)]
        self._current_end = sketch.start + BUCKET_SECONDS
        return sketch

    def record(
        self,
        shard_id: str,
        business_id: str,
        location_id: str,
        *,
        shard_ns: int,
        rows_read: int,
        rows_written: int,
        error: bool,
    ) -> None:
        """Count one shard call (the LoadRecorder port)."""
        now = self._clock()
        key = (shard_id, business_id, location_id)
        with self._lock:
            if now >= self._current_end:
                self._current = self._new_bucket(now)
            counters = self._current.entry(key)
            counters[_SHARD_NS] += shard_ns
            counters[_REQUESTS] += 1
            counters[_ROWS_READ] += rows_read
            counters[_ROWS_WRITTEN] += rows_written
            if error:
                counters[_ERRORS] += 1

    def size(self) -> int:
        """Entries held now, all minutes together (at most capacity x (WINDOW_MINUTES_MAX + 1))."""
        with self._lock:
            return sum(len(s.counters) for s in self._ring)

    def current_size(self) -> int:
        """Entries of the current minute's sketch (at most ``capacity``)."""
        with self._lock:
            return len(self._current.counters)

    def top(
        self,
        *,
        minutes: int,
        order: LoadOrder = LoadOrder.SHARD_TIME,
        limit: int = 10,
        shard_id: str = "",
        keys: Iterable[tuple[str, str]] = (),
    ) -> LoadReport:
        """The ``limit`` heaviest tenants over at least the last ``minutes`` full minutes (and the
        current one), optionally of one shard or of some (business, location) pairs only."""
        if minutes not in WINDOWS_MINUTES:
            raise ValueError(f"minutes must be one of {WINDOWS_MINUTES}")
        wanted = set(keys)
        now = self._clock()
        with self._lock:
            oldest = now - now % BUCKET_SECONDS - minutes * BUCKET_SECONDS
            sketches = [s for s in self._ring if s.start >= oldest]
            exact = all(s.evictions == 0 for s in sketches)
            merged: dict[TenantKey, list[int]] = {}
            for sketch in sketches:
                for key, counters in sketch.counters.items():
                    if shard_id and key[0] != shard_id:
                        continue
                    if wanted and (key[1], key[2]) not in wanted:
                        continue
                    total = merged.get(key)
                    if total is None:
                        merged[key] = list(counters)
                    else:
                        for slot, value in enumerate(counters):
                            total[slot] += value
        figures = [
            TenantFigures(
                shard_id=key[0],
                business_id=key[1],
                location_id=key[2],
                shard_ns=c[_SHARD_NS],
                requests=c[_REQUESTS],
                errors=c[_ERRORS],
                rows_read=c[_ROWS_READ],
                rows_written=c[_ROWS_WRITTEN],
                overcount_ns=c[_OVERCOUNT_NS],
            )
            for key, c in merged.items()
        ]
        # Heaviest first; ties by tenant so an answer is stable.
        figures.sort(key=lambda f: (-f.value(order), f.shard_id, f.business_id, f.location_id))
        return LoadReport(
            tenants=figures[:limit],
            start=oldest,
            end=now,
            exact=exact,
            tracked=len(figures),
            capacity=self.capacity,
        )


class IgnoreLoad:
    """A LoadRecorder that keeps nothing (for use cases built without usage tracking)."""

    def record(
        self,
        shard_id: str,
        business_id: str,
        location_id: str,
        *,
        shard_ns: int,
        rows_read: int,
        rows_written: int,
        error: bool,
    ) -> None:
        return None
