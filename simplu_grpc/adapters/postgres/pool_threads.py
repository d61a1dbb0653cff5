"""The threads every shard pool shares, whatever the shard count: a timer (the watchdog that
cuts silent queries, and every pool's scheduled maintenance) and background workers that exist
only while there is work; ``ShardPool`` is a ConnectionPool that uses them instead of its own.

* Threads do not multiply with the shard count: psycopg_pool gives each pool a scheduler
  and worker threads (2 per shard even with ``num_workers=1``: 214 threads for 100 shards).
  Here every pool's scheduled maintenance runs on one shared timer thread and its background
  work (connecting) on shared workers that exist only while there is work (``ShardPool``).
  Connections are opened on demand, up to ``min_size`` once a pool is used, not one more.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from psycopg_pool import ConnectionPool
from psycopg_pool.pool import MaintenanceTask, ShrinkPool

from simplu_grpc.adapters.postgres.pool_health import PoolHealth, connection_class

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


# A shared pool worker thread with nothing to do for this long ends.
WORKER_IDLE_EXIT = 5.0
# At shutdown, how long closing every pool may take in all (it needs no network round trip).


class Alarm:
    """An action due at some time; once ``cancel()`` returns, it has either run or never will."""

    __slots__ = ("_lock", "_timer", "action", "cancelled", "counted", "fired", "queued")

    def __init__(self, action: Callable[[], None], timer: Timer) -> None:
        self.action = action
        self.cancelled = False
        self.fired = False
        self.queued = False  # in the timer's heap (guarded by the timer's lock)
        self.counted = False  # counted among the heap's cancelled entries (timer's lock)
        self._timer = timer
        # Held while firing, so a request that cancels right at its deadline cannot hand the
        # connection back to the pool while the watchdog is cutting it.
        self._lock = threading.Lock()

    def cancel(self) -> None:
        with self._lock:
            if self.cancelled or self.fired:
                return
            self.cancelled = True
        self._timer.discard(self)

    def fire(self) -> None:
        with self._lock:
            if self.cancelled or self.fired:
                return
            self.fired = True
            self.action()


class Timer:
    """One thread running actions at absolute monotonic times, started with the first one.

    A cancelled alarm does not wait in the heap until its time: once cancelled entries are
    the majority the heap is rebuilt without them, so it holds at most about twice the
    alarms still pending. (A finished query's watchdog alarm is cancelled at once; with 1 h
    client deadlines, leaving it queued until due kept every request's alarm, its closure
    and its connection reference alive for an hour.)
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Alarm]] = []
        self._cancelled = 0  # cancelled entries still in _heap
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._fire_late = False  # stopped with fire_pending: later alarms fire at once

    def arm(self, at: float, action: Callable[[], None]) -> Alarm:
        """Run ``action`` at monotonic time ``at``; once stopped: never, or at once (``stop``)."""
        alarm = Alarm(action, self)
        with self._cond:
            if not self._stopped:
                alarm.queued = True
                heapq.heappush(self._heap, (at, next(self._seq), alarm))
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
                elif self._heap[0][2] is alarm:
                    self._cond.notify()
                return alarm
            fire_now = self._fire_late
        if fire_now:
            self._fire(alarm)
        else:
            alarm.cancelled = True
        return alarm

    def discard(self, alarm: Alarm) -> None:
        """``alarm`` was cancelled: account for it, and compact the heap when it is mostly dead."""
        with self._cond:
            if not alarm.queued or alarm.counted:
                return
            alarm.counted = True
            self._cancelled += 1
            if 2 * self._cancelled > len(self._heap):
                kept = []
                for entry in self._heap:
                    if entry[2].cancelled:
                        entry[2].queued = False
                    else:
                        kept.append(entry)
                heapq.heapify(kept)
                self._heap = kept
                self._cancelled = 0

    def pending(self) -> int:
        """Entries in the heap, cancelled ones included (bounded: see the class docstring)."""
        with self._cond:
            return len(self._heap)

    def stop(self, *, fire_pending: bool = False) -> None:
        """Stop the thread; with ``fire_pending``, run every pending action now (in this thread),
        and any armed later at once."""
        with self._cond:
            self._stopped = True
            self._fire_late = fire_pending
            entries, self._heap = self._heap, []
            self._cancelled = 0
            for entry in entries:
                entry[2].queued = False
            self._cond.notify()
        if fire_pending:
            for _, _, alarm in sorted(entries, key=lambda e: (e[0], e[1])):
                self._fire(alarm)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    while self._heap and self._heap[0][2].cancelled:
                        _, _, dropped = heapq.heappop(self._heap)
                        dropped.queued = False
                        if dropped.counted:
                            self._cancelled -= 1
                    if not self._heap:
                        self._cond.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        break
                    self._cond.wait(timeout=delay)
                if self._stopped:
                    return
                _, _, alarm = heapq.heappop(self._heap)
                alarm.queued = False
            self._fire(alarm)

    @staticmethod
    def _fire(alarm: Alarm) -> None:
        try:
            alarm.fire()
        except Exception:
            logger.exception("shard timer action failed")


class Workers:
    """Threads for the pools' background work (connecting, closing), shared by every pool.

    A thread is started when work arrives and no thread is idle, and ends after
    ``idle_exit`` seconds without work: an idle replica with 100 shard pools runs none,
    instead of psycopg_pool's scheduler + worker per pool (214 threads for 100 shards). The
    tasks of one key (a pool) run one at a time, in order, as with ``num_workers=1``; so a
    shard whose connection attempts hang holds one thread, never another shard's work.
    """

    def __init__(self, *, idle_exit: float = WORKER_IDLE_EXIT) -> None:
        self._idle_exit = idle_exit
        self._cond = threading.Condition()
        # A key is in _queues while it has work queued or running; in _ready while queued
        # and no thread runs it.
        self._queues: dict[object, collections.deque[Callable[[], None]]] = {}
        self._ready: collections.deque[object] = collections.deque()
        self._idle = 0
        self.threads = 0  # alive (for tests and ListPools)

    def submit(self, key: object, task: Callable[[], None]) -> None:
        with self._cond:
            queue = self._queues.get(key)
            if queue is not None:
                queue.append(task)  # its turn comes when the key's current task ends
                return
            self._queues[key] = collections.deque([task])
            self._ready.append(key)
            if self._idle >= len(self._ready):
                self._cond.notify()
                return
            self.threads += 1
        threading.Thread(target=self._run, name="shard-pool-worker", daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._ready:
                    self._idle += 1
                    woken = self._cond.wait(self._idle_exit)
                    self._idle -= 1
                    if not woken and not self._ready:
                        self.threads -= 1
                        return
                key = self._ready.popleft()
                task = self._queues[key].popleft()
            try:
                task()
            except Exception:
                logger.exception("shard pool background task failed")
            with self._cond:
                if self._queues[key]:
                    self._ready.append(key)
                else:
                    del self._queues[key]


class ShardPool(ConnectionPool[Any]):
    """A ConnectionPool that runs its background work on the registry's shared timer and
    workers instead of its own scheduler and worker threads, and opens connections on demand.

    Overrides psycopg_pool's thread hooks (``_start_workers``, ``_start_initial_tasks``; the
    public ``run_task``/``schedule_task``), checked by the thread-count test in
    tests/integration/test_pools.py. ``close()`` then never waits for a thread: a
    connection attempt in progress ends on its own and its connection is discarded.

    On demand: the first request's wait grows the pool, and growth continues up to
    ``min_size`` (``_add_connection``). Opening ``min_size`` connections eagerly raced the
    first request, which grew the pool by one more while the first was being opened, so an
    idle pool kept ``min_size + 1`` connections until ``max_idle`` shrank it.
    """

    def __init__(self, conninfo: str, *, timer: Timer, workers: Workers, **kwargs: Any) -> None:
        self._shared_timer = timer
        self._shared_workers = workers
        super().__init__(conninfo, open=False, num_workers=1, **kwargs)

    def _start_workers(self) -> None:
        """No thread of its own: see the class docstring."""

    def _start_initial_tasks(self) -> None:
        self._nconns = self._nconns_min = 0
        self.schedule_task(ShrinkPool(self), self.max_idle)

    def run_task(self, task: MaintenanceTask) -> None:
        self._shared_workers.submit(self, task.run)

    def schedule_task(self, task: MaintenanceTask, delay: float) -> None:
        self._shared_timer.arm(time.monotonic() + delay, task.tick)


def open_shard_pool(
    conninfo: str,
    shard_id: str,
    *,
    health: PoolHealth,
    timer: Timer,
    workers: Workers,
    min_size: int,
    max_size: int,
    max_idle: float,
    max_lifetime: float,
    connect_timeout: float,
    application_name: str,
) -> ShardPool:
    """A shard's new pool, opened (connections come on demand), reporting to ``health``."""
    pool = ShardPool(
        conninfo,
        timer=timer,
        workers=workers,
        connection_class=connection_class(health),
        kwargs={
            "autocommit": True,
            # libpq rounds below 2 s up to 2 s.
            "connect_timeout": max(2, round(connect_timeout)),
            "application_name": application_name,
            # Detect peers that vanished without a FIN while idle.
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        },
        min_size=min_size,
        max_size=max_size,
        # Bounded by PoolRegistry._checkout, which counts only callers still waiting (PoolEntry.admit).
        max_waiting=0,
        max_idle=max_idle,
        max_lifetime=max_lifetime,
        # No `check=`: done in PoolRegistry._usable(), bounded by the deadline (see module docstring).
        name=shard_id,
        # Retry connecting for a while; PoolRegistry._checkout() replaces the pool after a failure anyway.
        reconnect_timeout=max(30.0, 6 * connect_timeout),
    )
    pool.open(wait=False)
    return pool
