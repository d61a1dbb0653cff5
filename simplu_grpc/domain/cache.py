"""One cache mechanism for lookups that cost a dependency call (business info, routes).

Rules, in the order a lookup meets them (``get``):

* **Fresh** (younger than ``ttl``): answered from the cache.
* **Stale but usable** (younger than ``ttl + stale_max``): answered from the cache at once, and
  ONE refresh of the key is queued on the cache's background worker (stale-while-revalidate).
  A caller holding a usable entry never waits on the dependency; while the dependency fails the
  entry keeps being served until it is ``ttl + stale_max`` old (stale-if-error, bounded).
* **Nothing usable**: one caller per key loads it in its own thread, under its own deadline
  (single flight); concurrent callers for the key wait for that answer up to their deadline.
* **Failure memo**: after a load fails, the key is tried at most once per ``failure_backoff``
  seconds. Callers without a usable entry meanwhile get the remembered error at once, and no
  background refresh of the key is queued. ``DeadlineExceeded`` is not remembered: it says the
  caller ran out of time, not that the dependency failed.

``get(key, force=True)`` is for a caller who learnt the cached value is wrong (a shard that no
longer answers at its cached address): it waits for a fresh load and never falls back to the
stale entry, but a key is force-loaded at most once per ``min_force_interval`` (a dead shard
makes every request ask) — within it the caller gets what the last forced load left.

Values written by this server (``put``) win over loads that began before them; ``invalidate``
makes loads that began before it answer their callers without being stored. ``is_older`` lets
a value type refuse a load older than what is cached (business versions). Background refreshes
run on one worker thread per cache, bounded by ``refresh_timeout`` each; queued refreshes are
deduplicated per key, so the queue never holds more than one per key.
"""

from __future__ import annotations

import copy
import logging
import math
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from simplu_grpc import context
from simplu_grpc.errors import DeadlineExceeded, Unavailable
from simplu_grpc.metrics import Metrics

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

HIT, MISS, STALE, FAILED = "hit", "miss", "stale", "failed"


class Lookup(NamedTuple, Generic[V]):
    """A cache answer: the value, whether it came from the cache, and its age in seconds."""

    value: V
    from_cache: bool
    age_seconds: float


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    stored_at: float
    seq: int  # the cache's write counter when stored (orders puts against loads)


@dataclass(slots=True)
class _Failure:
    error: BaseException
    at: float


class _Flight(Generic[V]):
    """One load in progress; callers without a usable entry wait on it."""

    __slots__ = ("done", "error", "result", "seq")

    def __init__(self, seq: int) -> None:
        self.done = threading.Event()
        self.seq = seq
        self.result: V | None = None
        self.error: BaseException | None = None


class _Worker:
    """One daemon thread running submitted work in order (started on first use).

    Daemon, unlike ``ThreadPoolExecutor``'s: a refresh stuck on a hung dependency must not hold
    the process's exit after shutdown.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Callable[..., object], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., object], /, *args: Any) -> object:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._queue.put((fn, args))
        return None

    def stop(self) -> None:
        """End the thread once the work queued so far has run."""
        self._queue.put(None)

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            fn, args = job
            try:
                fn(*args)
            except Exception:
                log.exception("background cache work failed")


class Background(Protocol):
    """Where refreshes run: ``concurrent.futures.Executor.submit`` (tests pass one they drive by hand)."""

    def submit(self, fn: Callable[..., object], /, *args: Any) -> object: ...


class Cache(Generic[K, V]):
    """Thread-safe keyed cache in front of ``load`` (see the module docstring for the rules)."""

    def __init__(
        self,
        load: Callable[[K], V],
        *,
        name: str,
        ttl: float,
        stale_max: float,
        failure_backoff: float,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        min_force_interval: float = 1.0,
        refresh_timeout: float = 10.0,
        max_entries: int = 100_000,
        is_older: Callable[[V, V], bool] | None = None,
        propagate: Callable[[V, V], V | None] | None = None,
        background: Background | None = None,
    ) -> None:
        if min(ttl, stale_max, failure_backoff, min_force_interval) < 0:
            raise ValueError("ttl, stale_max, failure_backoff and min_force_interval must not be negative")
        if refresh_timeout <= 0:
            raise ValueError("refresh_timeout must be positive")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._load = load
        self.name = name
        self._ttl = ttl
        self._stale_max = stale_max
        self._backoff = failure_backoff
        self._metrics = metrics
        self._clock = clock
        self._min_force = min_force_interval
        self._refresh_timeout = refresh_timeout
        self._max_entries = max_entries
        self._is_older = is_older
        self._propagate = propagate
        # One lock for every map below; loads never run under it (they can take seconds).
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()  # least recently used first
        self._flights: dict[K, _Flight[V]] = {}
        self._failures: OrderedDict[K, _Failure] = OrderedDict()
        self._forced_at: dict[K, float] = {}  # when a forced load of the key last finished
        self._seq = 0  # bumped by every put and invalidate
        self._invalidated_seq = 0
        # One worker thread, started on first use: a refresh storm queues, it never spawns threads.
        self._background = background
        self._worker: _Worker | None = None
        self._closed = False

    # --- lookups -----------------------------------------------------------------------

    def get(self, key: K, *, force: bool = False) -> Lookup[V]:
        """The value for ``key`` under the rules of the module docstring."""
        with self._lock:
            now = self._clock()
            entry = self._entries.get(key)
            flight = self._flights.get(key)
            age = now - entry.stored_at if entry is not None else 0.0
            if entry is not None and not force:
                if age <= self._ttl:
                    self._entries.move_to_end(key)
                    self._metrics.cache_lookup(self.name, HIT)
                    return Lookup(entry.value, True, age)
                if age <= self._ttl + self._stale_max:
                    self._entries.move_to_end(key)
                    if flight is None and not self._backing_off(key, now):
                        self._refresh_in_background(key)
                    self._metrics.cache_lookup(self.name, STALE)
                    return Lookup(entry.value, True, age)
            if flight is None:
                if (
                    force
                    and entry is not None
                    and now - self._forced_at.get(key, -math.inf) < self._min_force
                ):
                    # Forced a moment ago (module docstring): its answer is the entry.
                    self._metrics.cache_lookup(self.name, HIT)
                    return Lookup(entry.value, True, age)
                failure = self._failures.get(key)
                if failure is not None and now - failure.at < self._backoff:
                    self._metrics.cache_lookup(self.name, FAILED)
                    raise _fresh(failure.error)
                flight = self._flights[key] = _Flight(self._seq)
                leader = True
            else:
                leader = False
        self._metrics.cache_lookup(self.name, MISS)
        if leader:
            self._run(key, flight, forced=force)
        elif not flight.done.wait(timeout=context.deadline().remaining()):
            raise DeadlineExceeded(f"deadline exceeded while waiting for the {self.name} lookup")
        if flight.error is not None:
            # The leader raises its own error (traceback intact); followers raise copies.
            raise flight.error if leader else _fresh(flight.error)
        return Lookup(flight.result, False, 0.0)  # type: ignore[arg-type]  # set when error is None

    def peek(self, key: K) -> Lookup[V] | None:
        """The cached entry, fresh or not, without loading or counting anything."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            return Lookup(entry.value, True, self._clock() - entry.stored_at)

    def values(self) -> list[V]:
        """Every cached value (for gauges); a snapshot."""
        with self._lock:
            return [entry.value for entry in self._entries.values()]

    # --- writes ------------------------------------------------------------------------

    def put(self, key: K, value: V) -> None:
        """Remember a value this server just wrote: fresher than any load in progress."""
        with self._lock:
            self._seq += 1
            self._failures.pop(key, None)
            current = self._entries.get(key)
            if current is None or self._is_older is None or not self._is_older(current.value, value):
                self._store(key, value, self._seq)

    def invalidate(self, matches: Callable[[K], bool] | None = None) -> int:
        """Forget the keys ``matches`` selects (every key without it); how many entries were dropped.

        Their failure memos and forced-load limits go too: the next lookup asks the dependency.
        """
        with self._lock:
            self._seq += 1
            self._invalidated_seq = self._seq
            keys = {*self._entries, *self._failures, *self._forced_at}
            doomed = [key for key in keys if matches is None or matches(key)]
            dropped = 0
            for key in doomed:
                dropped += self._entries.pop(key, None) is not None
                self._failures.pop(key, None)
                self._forced_at.pop(key, None)
            return dropped

    def close(self) -> None:
        """Stop the background worker (queued refreshes end unanswered); lookups still work."""
        with self._lock:
            self._closed = True
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    # --- internals ---------------------------------------------------------------------

    def _backing_off(self, key: K, now: float) -> bool:
        failure = self._failures.get(key)
        return failure is not None and now - failure.at < self._backoff

    def _refresh_in_background(self, key: K) -> None:
        """Caller holds the lock and checked there is no flight for ``key``."""
        if self._closed:
            return
        flight: _Flight[V] = _Flight(self._seq)
        self._flights[key] = flight
        background = self._background
        if background is None:
            if self._worker is None:
                self._worker = _Worker(f"{self.name}-refresh")
            background = self._worker
        background.submit(self._refresh, key, flight)

    def _refresh(self, key: K, flight: _Flight[V]) -> None:
        if self._closed:
            # Queued before close(): end the flight without asking the dependency.
            flight.error = Unavailable(f"the {self.name} cache is closed")
            with self._lock:
                del self._flights[key]
            flight.done.set()
            return
        # No RPC is waiting on this: the load gets its own bounded deadline.
        with context.bind(deadline=context.Deadline.after(self._refresh_timeout)):
            self._run(key, flight, forced=False)
        if flight.error is not None:
            log.info("background refresh of a %s entry failed: %s", self.name, flight.error)

    def _run(self, key: K, flight: _Flight[V], *, forced: bool) -> None:
        """Load ``key`` for ``flight``, record the outcome, wake its waiters. Never raises."""
        try:
            value = self._load(key)
        except BaseException as exc:
            flight.error = exc
            with self._lock:
                del self._flights[key]
                now = self._clock()
                if forced:
                    self._forced_at[key] = now
                if not isinstance(exc, DeadlineExceeded):
                    self._failures[key] = _Failure(_fresh(exc, cause=False), now)
                    self._failures.move_to_end(key)
                    while len(self._failures) > self._max_entries:
                        self._failures.popitem(last=False)
            flight.done.set()
            if not isinstance(exc, Exception):
                raise
            return
        flight.result = value
        with self._lock:
            del self._flights[key]
            self._failures.pop(key, None)
            if forced:
                self._forced_at[key] = self._clock()
            current = self._entries.get(key)
            stale_write = flight.seq < self._invalidated_seq or (
                current is not None
                and (
                    current.seq > flight.seq
                    or (self._is_older is not None and self._is_older(current.value, value))
                )
            )
            if not stale_write:
                self._store(key, value, flight.seq)
        flight.done.set()

    def _store(self, key: K, value: V, seq: int) -> None:
        """Caller holds the lock."""
        if self._ttl + self._stale_max <= 0:
            return  # caching is off: nothing is ever usable
        self._entries[key] = _Entry(value, self._clock(), seq)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        if self._propagate is not None:
            for other_key, other in self._entries.items():
                if other_key != key:
                    replacement = self._propagate(value, other.value)
                    if replacement is not None:
                        other.value = replacement


def _fresh(error: BaseException, *, cause: bool = True) -> BaseException:
    """A copy of an error to raise again: raising one instance in many threads would make them
    share (and grow) one traceback. Without ``cause`` the copy holds no frames (memos live long)."""
    try:
        fresh = copy.copy(error)
    except Exception:
        return error
    fresh.__traceback__ = None
    fresh.__cause__ = error.__cause__ if cause else None
    fresh.__suppress_context__ = True
    return fresh
