"""Shard pool registry: one psycopg_pool.ConnectionPool per shard id, bounded by the RPC deadline.

Why it is shaped this way (DESIGN §6):

* One pool per shard id, not per tenant: every business+location on a shard shares it.
  Pools are created on first use under a lock, double-checked so that concurrent first
  requests create exactly one, named after the shard, opened explicitly.
* Threads do not multiply with the shard count: psycopg_pool gives each pool a scheduler
  and worker threads (2 per shard even with ``num_workers=1``: 214 threads for 100 shards).
  Here every pool's scheduled maintenance runs on one shared timer thread and its background
  work (connecting) on shared workers that exist only while there is work (``_ShardPool``).
  Connections are opened on demand, up to ``min_size`` once a pool is used, not one more.
* Connection budget: each replica opens at most ``max_size`` connections per shard, so
  ``replicas x SHARD_POOL_MAX_SIZE (+1 briefly while a pool is replaced)`` must stay below
  the shard's ``max_connections`` minus what its other clients use.
* A new connection string for a known shard id (Citrus failed it over) replaces the pool;
  the old one is closed in the background: its idle connections at once, the ones in use
  when their request returns them (psycopg_pool closes returned connections of a closed
  pool), so no in-flight request is cut and no acknowledged write is lost. Which string is
  current is decided by when Citrus gave it (``ShardAssignment.observed_at``), not by a grace
  period: a request routed before the move still uses the new pool, a move back is followed at once.
* Checkout is ONE wait bounded by the RPC's deadline (a deadline already spent is
  DEADLINE_EXCEEDED before the pool is asked). psycopg_pool leaves a waiter that timed out
  in its queue until a connection comes back, so the queue bound is enforced here, counting
  only callers still waiting or holding a connection: up to ``max_size + max_waiting``
  callers are served, and a caller beyond that is turned away at once (RESOURCE_EXHAUSTED,
  or UNAVAILABLE when the shard stopped answering). A failed connection attempt closes the
  pool, which wakes its waiters: they answer UNAVAILABLE at once, not at their deadline.
* Checkout never waits past the RPC's deadline, and a query never runs past it either:
  ``statement_timeout`` is set per transaction (``set_config(..., true)``) from the
  remaining time, and a watchdog shuts the socket of a query whose server stopped
  answering (blackholed network: no statement_timeout can reach us, and libpq would wait
  forever), turning a hang into DEADLINE_EXCEEDED.
* Exhausted vs down: a checkout that times out while every connection is busy with a shard
  that answers is RESOURCE_EXHAUSTED (``pool_error(shard, "exhausted")``); one that fails
  because connecting to the shard fails is UNAVAILABLE / SHARD_UNAVAILABLE; one that waited
  on connection attempts or on queries the shard never answered is DEADLINE_EXCEEDED (both
  ``"unavailable"``). Connection attempts are observed through the pool's
  ``connection_class``, queries through ``ShardSession.guard``.
* A write whose connection is lost once the statement was sent (it commits on its own, in
  the one message ``ShardSession.run`` sends) is CommitOutcomeUnknown (UNAVAILABLE /
  COMMIT_OUTCOME_UNKNOWN): it may or may not be applied, and a retry with the same
  ``request_id`` is the safe way on.
* The liveness check of a pooled connection costs no round trip: its socket is polled, and
  only a connection with something to read (usually: the server or a proxy closed it) goes
  through ``ConnectionPool.check_connection``, bounded by the deadline. A ping before every
  reuse would double the warm path's round trips and catch nothing more: a peer that
  vanished silently makes the ping hang just like the statement, and once TCP keepalives
  (below) give up on it the socket polls readable too. A warm request costs one round trip.
* Each statement goes out as one simple-protocol message with its statement_timeout
  (``ShardSession.run``): one network round trip, its own implicit transaction.
* Schema migrations run once per pool, on its first checkout.
* A pool nobody used for ``idle_close_seconds`` is closed by a sweep on the timer thread
  (every ``_SWEEP_INTERVAL``), so a replica that goes quiet gives its connections back; the
  next request opens a new one.
* Shutdown (``close``) is bounded: queries still running after the server's grace period
  are cut, and pools close without waiting for any thread.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import heapq
import itertools
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

import psycopg
from psycopg import pq, sql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout
from psycopg_pool.pool import MaintenanceTask, ShrinkPool

from simplu_grpc import context, tracing
from simplu_grpc.adapters.postgres import migrator
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.errors import CommitOutcomeUnknown, DeadlineExceeded, ResourceExhausted, ShardUnavailable
from simplu_grpc.metrics import Metrics, PoolGauge
from simplu_grpc.redact import dsn_target, redact

if TYPE_CHECKING:
    from simplu_grpc.settings import Settings

logger = logging.getLogger(__name__)

Row = dict[str, Any]
Query = str | bytes | sql.Composed | sql.SQL

# After a failed connection attempt requests fail fast for this long; the next request
# after it builds a fresh pool (fresh connection attempts, no inherited backoff): a healed
# shard is used again within about this long, with no restart.
_RETRY_AFTER_FAILURE = 1.0
# The watchdog cuts a silent connection this long after the deadline: statement_timeout
# (set to the deadline) normally answers first, with a clean error.
_CUT_GRACE = 0.05
# How often the background sweep looks for pools nobody used for shard_pool_idle_close_seconds
# (so an idle pool is closed at most this late).
_SWEEP_INTERVAL = 2.0
# A shared pool worker thread with nothing to do for this long ends.
_WORKER_IDLE_EXIT = 5.0
# At shutdown, how long closing every pool may take in all (it needs no network round trip).
_CLOSE_ALL_BOUND = 2.0


class ShardUnreachable(ShardUnavailable):
    """Connecting to the shard failed: no statement of this request reached it, so a retry is safe."""


@dataclass(frozen=True, slots=True)
class PoolStatsInfo:
    """One shard pool as ShardAdmin.ListPools and metrics show it (psycopg_pool stats names); no secret."""

    shard_id: str
    target: str  # host:port/db, never the connection string
    pool_min: int
    pool_max: int
    pool_size: int
    pool_available: int
    requests_waiting: int
    requests_num: int
    requests_errors: int
    connections_num: int
    connections_errors: int
    connections_lost: int
    create_time: datetime | None
    last_used_time: datetime | None
    healthy: bool | None  # None: no connection attempt finished yet
    last_error: str | None  # redacted
    schema_version: int | None  # None: not migrated through this pool yet


class _Health:
    """What a shard's pool has seen: its connection attempts (written by the pool's worker)
    and its queries (written by requests); read by requests to tell "down", "not answering"
    and "busy" apart."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.last_success: float | None = None
        self.last_failure: float | None = None
        self.last_error: str | None = None
        self.connecting = 0  # connection attempts in progress
        self.on_failure: Callable[[], None] | None = None  # called after a failed attempt
        self.in_flight = 0  # queries sent and not answered yet
        self.answers = 0  # queries the shard answered (results or server errors), ever
        self.cut_since_answer = False  # the watchdog cut a query after the latest answer

    def attempt(self) -> None:
        with self._lock:
            self.connecting += 1

    def connected(self) -> None:
        with self._lock:
            self.connecting -= 1
            self.last_success = self._clock()

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.connecting -= 1
            self.last_failure = self._clock()
            # libpq messages may quote the conninfo: redact before anyone can show it.
            self.last_error = redact(f"{type(exc).__name__}: {exc}".strip())[:300]
        if self.on_failure is not None:
            self.on_failure()

    def query_started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def query_ended(self, *, answered: bool, cut: bool) -> None:
        with self._lock:
            self.in_flight -= 1
            if answered:
                self.answers += 1
                self.cut_since_answer = False
            elif cut:
                self.cut_since_answer = True

    def stalled(self, answers_before: int) -> bool:
        """Queries are in flight and none was answered since ``answers`` was ``answers_before``."""
        with self._lock:
            return self.in_flight > 0 and self.answers == answers_before

    @property
    def failing(self) -> bool:
        """The latest connection attempt failed."""
        with self._lock:
            return self.last_failure is not None and (
                self.last_success is None or self.last_failure > self.last_success
            )

    @property
    def proven(self) -> bool:
        """The latest connection attempt succeeded."""
        with self._lock:
            return self.last_success is not None and (
                self.last_failure is None or self.last_success > self.last_failure
            )

    def failure_age(self) -> float:
        with self._lock:
            return self._clock() - self.last_failure if self.last_failure is not None else float("inf")


def _connection_class(health: _Health) -> type[psycopg.Connection[Any]]:
    """A Connection subclass that reports each connection attempt of one pool to its health."""

    class ShardConnection(psycopg.Connection[Any]):
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
            health.attempt()
            try:
                conn = super().connect(conninfo, **kwargs)
            except BaseException as exc:
                health.failed(exc)
                raise
            health.connected()
            return conn

    return ShardConnection


class _Alarm:
    """An action due at some time; once ``cancel()`` returns, it has either run or never will."""

    __slots__ = ("_lock", "_timer", "action", "cancelled", "counted", "fired", "queued")

    def __init__(self, action: Callable[[], None], timer: _Timer) -> None:
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


class _Timer:
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
        self._heap: list[tuple[float, int, _Alarm]] = []
        self._cancelled = 0  # cancelled entries still in _heap
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._fire_late = False  # stopped with fire_pending: later alarms fire at once

    def arm(self, at: float, action: Callable[[], None]) -> _Alarm:
        """Run ``action`` at monotonic time ``at``; once stopped: never, or at once (``stop``)."""
        alarm = _Alarm(action, self)
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

    def discard(self, alarm: _Alarm) -> None:
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
    def _fire(alarm: _Alarm) -> None:
        try:
            alarm.fire()
        except Exception:
            logger.exception("shard timer action failed")


class _Workers:
    """Threads for the pools' background work (connecting, closing), shared by every pool.

    A thread is started when work arrives and no thread is idle, and ends after
    ``idle_exit`` seconds without work: an idle replica with 100 shard pools runs none,
    instead of psycopg_pool's scheduler + worker per pool (214 threads for 100 shards). The
    tasks of one key (a pool) run one at a time, in order, as with ``num_workers=1``; so a
    shard whose connection attempts hang holds one thread, never another shard's work.
    """

    def __init__(self, *, idle_exit: float = _WORKER_IDLE_EXIT) -> None:
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


class _ShardPool(ConnectionPool[Any]):
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

    def __init__(self, conninfo: str, *, timer: _Timer, workers: _Workers, **kwargs: Any) -> None:
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


def _has_input(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection has something to read: usually the server (or a proxy) closed it.

    Costs no round trip. An idle healthy connection has nothing pending; a closed one reads
    as EOF. Anything pending sends the connection through the full check.
    """
    try:
        # poll(), not select(): select() refuses descriptors above FD_SETSIZE (1024), which a
        # busy server reaches, and every checkout would then pay the full check.
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.Error):
        return True


def _cut(conn: psycopg.Connection[Any]) -> None:
    """Shut the connection's socket down so a thread blocked reading it wakes with an error."""
    with contextlib.suppress(Exception):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


class _PoolEntry:
    """A shard's current pool and what the registry knows about it."""

    def __init__(self, shard_id: str, conninfo: str, pool: ConnectionPool[Any], health: _Health) -> None:
        self.shard_id = shard_id
        self.conninfo = conninfo
        self.pool = pool
        self.health = health
        self.migrated = False
        self.schema_version: int | None = None
        self.migrate_lock = threading.Lock()
        self.created = datetime.now(UTC)
        self.last_used = time.monotonic()
        self.last_used_wall: datetime | None = None
        # When the directory gave the connection string this pool uses (ShardAssignment.observed_at):
        # a request routed with an OLDER answer naming another string uses this pool (it was
        # routed before the move); a NEWER answer (a move, or a move back) replaces the pool.
        self.observed_at = 0.0
        # Callers of this pool waiting for a connection and holding one. Counted here, not
        # read from psycopg_pool: a waiter that timed out stays in its queue until a
        # connection comes back, so its length overstates the callers still waiting.
        self._demand_lock = threading.Lock()
        self.waiting = 0
        self.in_use = 0

    def admit(self, limit: int) -> bool:
        """Count one more waiting caller, unless ``limit`` (0: none) callers already wait or hold one."""
        with self._demand_lock:
            if limit and self.waiting + self.in_use >= limit:
                return False
            self.waiting += 1
            return True

    def served(self) -> None:
        with self._demand_lock:
            self.waiting -= 1
            self.in_use += 1

    def gave_up(self) -> None:
        with self._demand_lock:
            self.waiting -= 1

    def returned(self) -> None:
        with self._demand_lock:
            self.in_use -= 1


class ShardSession:
    """A checked-out shard connection; ``run`` executes one statement in one round trip."""

    def __init__(
        self, shard_id: str, conn: psycopg.Connection[Any], watchdog: _Timer, health: _Health
    ) -> None:
        self.shard_id = shard_id
        self.conn = conn
        self._watchdog = watchdog
        self._health = health

    def run(
        self,
        query: Query,
        params: Sequence[Any] | dict[str, Any] | None = None,
        *,
        write: bool = False,
    ) -> list[Row]:
        """Run one statement bounded by the deadline, in one message and one round trip.

        ``SET LOCAL statement_timeout = <ms left>; <statement>`` goes as one simple-protocol
        query: PostgreSQL runs a multi-statement query as one implicit transaction, so the
        timeout applies to this statement only and the statement commits (or rolls back) with
        no BEGIN/COMMIT of its own. (A pipeline of BEGIN, set_config, the statement and COMMIT
        did four times the statements on both sides; the bench's capacity rows show what this
        bought.) Values are still never part of the SQL we write: psycopg's ``ClientCursor``
        quotes each parameter by the connection's own rules; ``millis`` is an int.

        The values are inlined by the client and the text is never a server-side prepared
        statement, so PostgreSQL always plans with the actual values (a generic plan cannot use
        an expression or partial index whose key is a parameter: the filtered lists' trigram
        searches need this).

        ``write``: the statement changes data, so a connection lost once it was sent is
        CommitOutcomeUnknown (the write may or may not be applied), not a plain ShardUnavailable.
        """
        conn = self.conn
        text = (
            query.decode()
            if isinstance(query, bytes)
            else query
            if isinstance(query, str)
            else query.as_string(conn)
        )
        with self.guard("querying the shard", write=write) as millis:
            try:
                cursor = psycopg.ClientCursor(conn, row_factory=dict_row)
                cursor.execute(f"SET LOCAL statement_timeout = {int(millis)}; {text}", params)
                # The first result is the SET's; the statement's is the second. Its status says
                # whether it has rows (``description`` would build column objects per call).
                cursor.nextset()
                result = cursor.pgresult
                if result is None or result.status != pq.ExecStatus.TUPLES_OK:
                    return []
                return cursor.fetchall()
            except BaseException:
                _rollback(conn)
                raise

    def execute(
        self, query: Query, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> psycopg.Cursor[Any]:
        """Raw autocommit execution (ShardAdmin probes, schema reads), bounded by the deadline."""
        with self.guard("querying the shard"):
            return self.conn.execute(query, params)

    @contextlib.contextmanager
    def guard(self, what: str, *, write: bool = False) -> Iterator[int]:
        """Bound raw use of ``conn`` by the deadline; translate connection-level errors. Yields ms left."""
        deadline = context.deadline()
        left = deadline.check(what)
        alarm = self._watchdog.arm(deadline.expires_at + _CUT_GRACE, lambda: _cut(self.conn))
        lost = False
        self._health.query_started()
        try:
            yield max(1, int(left * 1000))
        except psycopg.errors.QueryCanceled as exc:
            raise DeadlineExceeded(f"deadline exceeded while {what}") from exc
        except psycopg.OperationalError as exc:
            lost = True
            metadata = {"shard_id": self.shard_id}
            if alarm.fired:
                raise DeadlineExceeded(
                    f"shard {self.shard_id} did not answer before the deadline"
                    + ("; the write may or may not have been applied" if write else ""),
                    reason="COMMIT_OUTCOME_UNKNOWN" if write else None,
                    metadata=metadata,
                ) from exc
            if write:
                raise CommitOutcomeUnknown(
                    f"lost the connection to shard {self.shard_id} after the write was sent: it may or"
                    " may not have been applied; retry with the same request_id",
                    metadata=metadata,
                ) from exc
            raise ShardUnavailable(
                f"lost the connection to shard {self.shard_id}", metadata=metadata
            ) from exc
        finally:
            alarm.cancel()
            self._health.query_ended(answered=not lost, cut=alarm.fired)
            if alarm.fired:
                # Cut just as the work finished: never hand a half-shut socket back to the pool.
                with contextlib.suppress(Exception):
                    self.conn.close()


def _rollback(conn: psycopg.Connection[Any]) -> None:
    if conn.closed:
        return
    if conn.pgconn.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")


class PoolRegistry:
    """One ConnectionPool per shard id; see the module docstring for the why of each rule."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        min_size: int = 1,
        max_size: int = 10,
        max_waiting: int = 64,
        max_idle: float = 300.0,
        max_lifetime: float = 3600.0,
        idle_close_seconds: float = 900.0,
        connect_timeout: float = 5.0,
        migrate: bool = True,
        application_name: str = "simplu-grpc",
        clock: Callable[[], float] = time.monotonic,
        sweep_interval: float = _SWEEP_INTERVAL,
        worker_idle_exit: float = _WORKER_IDLE_EXIT,
    ) -> None:
        if min_size < 0 or max_size < 1 or min_size > max_size:
            raise ValueError("need 0 <= min_size <= max_size and max_size >= 1")
        if max_waiting < 0:
            raise ValueError("max_waiting must not be negative")
        if min(connect_timeout, idle_close_seconds, sweep_interval, worker_idle_exit) <= 0:
            raise ValueError(
                "connect_timeout, idle_close_seconds, sweep_interval and worker_idle_exit must be positive"
            )
        self._metrics = metrics
        self._min_size = min_size
        self._max_size = max_size
        self._max_waiting = max_waiting
        self._max_idle = max_idle
        self._max_lifetime = max_lifetime
        self._idle_close = idle_close_seconds
        self._connect_timeout = connect_timeout
        self._migrate = migrate
        self._application_name = application_name
        self._clock = clock
        # Guards _pools changes (creation, replacement, removal). Lookups of an existing,
        # matching pool read the dict without it: dict reads are atomic under the GIL.
        self._lock = threading.Lock()
        self._pools: dict[str, _PoolEntry] = {}
        # Threads, whatever the shard count: the watchdog (cuts silent queries), one timer
        # for every pool's scheduled maintenance and the idle sweep, and workers only while
        # there is background work (see _Workers). Each starts on first use.
        self._watchdog = _Timer("shard-watchdog")
        self._timer = _Timer("shard-pool-timer")
        self._workers = _Workers(idle_exit=worker_idle_exit)
        # Idle pools are closed by the timer, not by requests: a replica that goes quiet
        # must still give back its connections to every shard it once used.
        self._sweep_interval = sweep_interval
        self._sweeping = False
        self._closed = False
        self.pools_created = 0  # for tests and ListPools: how many pools this registry opened

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics) -> PoolRegistry:
        return cls(
            metrics=metrics,
            min_size=settings.shard_pool_min_size,
            max_size=settings.shard_pool_max_size,
            max_waiting=settings.shard_pool_max_waiting,
            max_idle=settings.shard_pool_max_idle_seconds,
            max_lifetime=settings.shard_pool_max_lifetime_seconds,
            idle_close_seconds=settings.shard_pool_idle_close_seconds,
            connect_timeout=settings.shard_connect_timeout_seconds,
        )

    # --- checkout ------------------------------------------------------------------------

    @contextlib.contextmanager
    def connection(self, assignment: ShardAssignment) -> Iterator[ShardSession]:
        """A session on the assignment's shard, migrated, bounded by the RPC's deadline."""
        if self._closed:
            raise ShardUnavailable("the server is shutting down", metadata={"shard_id": assignment.shard_id})
        # The span covers the checkout (waiting for a connection) and the statements.
        with tracing.span(
            "postgresql shard",
            kind=tracing.SpanKind.CLIENT,
            attributes={"db.system": "postgresql", "simplu.shard_id": assignment.shard_id},
        ):
            yield from self._session(assignment)

    def _session(self, assignment: ShardAssignment) -> Iterator[ShardSession]:
        entry, conn = self._checkout(assignment)
        session = ShardSession(entry.shard_id, conn, self._watchdog, entry.health)
        try:
            if self._migrate and not entry.migrated:
                self._ensure_migrated(entry, session)
            yield session
        finally:
            _rollback(conn)
            self._give_back(entry, conn)

    def _give_back(self, entry: _PoolEntry, conn: psycopg.Connection[Any]) -> None:
        entry.returned()
        with contextlib.suppress(Exception):
            entry.pool.putconn(conn)

    def _checkout(self, assignment: ShardAssignment) -> tuple[_PoolEntry, psycopg.Connection[Any]]:
        deadline = context.deadline()
        if deadline.remaining() <= 0:
            # Spent before the pool was even asked (on Citrus, say): not the pool's doing.
            raise DeadlineExceeded(
                f"deadline exceeded before a connection to shard {assignment.shard_id} was requested",
                metadata={"shard_id": assignment.shard_id},
            )
        entry = self._entry(assignment)
        while True:
            entry.last_used = self._clock()
            entry.last_used_wall = datetime.now(UTC)
            if entry.health.failing:
                if entry.health.failure_age() < _RETRY_AFTER_FAILURE:
                    raise self._unavailable(entry)
                # The pool's own reconnect backs off for a long time; start afresh instead.
                entry = self._replace_failed(entry)
            left = deadline.remaining()
            if left <= 0:
                raise self._timed_out(entry, answers_before=None)
            if not entry.admit(self._max_size + self._max_waiting if self._max_waiting else 0):
                raise self._rejected(entry)
            answers_before = entry.health.answers
            # ONE wait, bounded by the deadline. psycopg_pool keeps a timed-out waiter queued
            # until a connection comes back, so waiting in slices would pile up stale waiters.
            # A shard going down while we wait wakes us anyway: a failed connection attempt
            # closes the pool (_connect_failed), which fails its waiters with PoolClosed.
            try:
                conn: psycopg.Connection[Any] = entry.pool.getconn(timeout=left)
            except PoolTimeout:
                entry.gave_up()
                raise self._timed_out(entry, answers_before=answers_before) from None
            except PoolClosed:
                # Failed, replaced (failover) or idle-closed meanwhile: look again.
                entry.gave_up()
                entry = self._current(entry, assignment)
                continue
            except BaseException:
                entry.gave_up()
                raise
            entry.served()
            if self._usable(entry, conn):
                return entry, conn

    def _usable(self, entry: _PoolEntry, conn: psycopg.Connection[Any]) -> bool:
        """Whether a checked-out connection may be used: its socket has nothing to read, or
        ConnectionPool.check_connection (bounded by the deadline) passes (module docstring)."""
        if not _has_input(conn):
            return True
        session = ShardSession(entry.shard_id, conn, self._watchdog, entry.health)
        try:
            with session.guard("checking a shard connection"):
                ConnectionPool.check_connection(conn)
        except ShardUnavailable:
            # This connection is dead (server restart, network cut); others may be fine.
            # The pool replaces it when it comes back closed.
            conn.close()
            self._give_back(entry, conn)
            return False
        except BaseException:
            conn.close()
            self._give_back(entry, conn)
            raise
        return True

    def _ensure_migrated(self, entry: _PoolEntry, session: ShardSession) -> None:
        # One request per pool migrates; concurrent first requests wait for it here (never
        # past their own deadline), and other replicas wait on the advisory lock inside migrate().
        if not entry.migrate_lock.acquire(timeout=context.deadline().remaining()):
            raise DeadlineExceeded(
                f"deadline exceeded while shard {entry.shard_id}'s schema was being migrated",
                metadata={"shard_id": entry.shard_id},
            )
        try:
            if entry.migrated:
                return
            with session.guard("migrating the shard schema") as millis:
                result = migrator.ensure_migrated(session.conn, entry.shard_id, timeout_ms=millis)
            entry.schema_version = result.after
            entry.migrated = True
        finally:
            entry.migrate_lock.release()

    def _unavailable(self, entry: _PoolEntry) -> ShardUnavailable:
        self._metrics.pool_error(entry.shard_id, "unavailable")
        return ShardUnreachable(
            f"shard {entry.shard_id} is unavailable (cannot connect)", metadata={"shard_id": entry.shard_id}
        )

    def _timed_out(self, entry: _PoolEntry, *, answers_before: int | None) -> Exception:
        """What a checkout that reached the deadline tells its caller."""
        if entry.health.failing:
            return self._unavailable(entry)
        health = entry.health
        if (
            not health.proven
            or health.connecting
            or answers_before is None
            or health.stalled(answers_before)
            or health.cut_since_answer
        ):
            # Waiting on a connection attempt that neither succeeds nor fails, or on queries the
            # shard does not answer (every connection stuck): the shard (or the network to it)
            # does not answer. Exhaustion means every connection is busy and the shard answers.
            self._metrics.pool_error(entry.shard_id, "unavailable")
            return DeadlineExceeded(
                f"shard {entry.shard_id} did not answer before the deadline",
                metadata={"shard_id": entry.shard_id},
            )
        self._metrics.pool_error(entry.shard_id, "exhausted")
        return ResourceExhausted(
            f"no connection to shard {entry.shard_id} became free before the deadline",
            reason="SHARD_POOL_EXHAUSTED",
            metadata={"shard_id": entry.shard_id},
        )

    def _rejected(self, entry: _PoolEntry) -> Exception:
        """What a caller hears when max_size callers hold a connection and max_waiting wait."""
        if entry.health.cut_since_answer:
            # The queue is full of callers of a shard that stopped answering.
            self._metrics.pool_error(entry.shard_id, "unavailable")
            return ShardUnavailable(
                f"shard {entry.shard_id} is not answering", metadata={"shard_id": entry.shard_id}
            )
        self._metrics.pool_error(entry.shard_id, "exhausted")
        return ResourceExhausted(
            f"too many requests waiting for shard {entry.shard_id}",
            reason="SHARD_POOL_EXHAUSTED",
            metadata={"shard_id": entry.shard_id},
        )

    # --- the pools -------------------------------------------------------------------------

    def _entry(self, assignment: ShardAssignment) -> _PoolEntry:
        shard_id, conninfo = assignment.shard_id, assignment.connection_string
        entry = self._pools.get(shard_id)
        if entry is not None and entry.conninfo == conninfo:
            return entry
        with self._lock:
            # Double-checked: another request may have created or replaced it meanwhile.
            entry = self._pools.get(shard_id)
            if entry is not None and entry.conninfo == conninfo:
                return entry
            if self._closed:
                raise ShardUnavailable("the server is shutting down", metadata={"shard_id": shard_id})
            if entry is not None:
                if assignment.observed_at < entry.observed_at:
                    # A request routed before the failover: the current pool is the right one.
                    return entry
                logger.info(
                    "shard connection string changed; replacing its pool",
                    extra={"shard_id": shard_id, "target": dsn_target(conninfo)},
                )
            installed = self._install(shard_id, conninfo, previous=entry)
            installed.observed_at = assignment.observed_at
            return installed

    def _current(self, entry: _PoolEntry, assignment: ShardAssignment) -> _PoolEntry:
        """The entry to wait on after ``entry``'s pool was closed under a waiting request."""
        if self._pools.get(entry.shard_id) is not entry:
            return self._entry(assignment)  # replaced or idle-closed: the current one, or a new one
        if entry.health.failing:
            return entry  # closed by its failed connection attempt: _checkout answers UNAVAILABLE
        return self._replace_failed(entry)

    def _replace_failed(self, entry: _PoolEntry) -> _PoolEntry:
        with self._lock:
            if self._closed:
                # close() ran while this request waited: never open a pool nobody will close.
                raise ShardUnavailable("the server is shutting down", metadata={"shard_id": entry.shard_id})
            current = self._pools.get(entry.shard_id)
            if current is not entry:
                return current if current is not None else self._install(entry.shard_id, entry.conninfo, None)
            return self._install(entry.shard_id, entry.conninfo, previous=entry, keep_migrated=True)

    def _install(
        self, shard_id: str, conninfo: str, previous: _PoolEntry | None, *, keep_migrated: bool = False
    ) -> _PoolEntry:
        """Caller holds ``_lock``. Open a new pool for the shard; retire the previous one."""
        self._start_sweeper()
        health = _Health(self._clock)
        pool = _ShardPool(
            conninfo,
            timer=self._timer,
            workers=self._workers,
            connection_class=_connection_class(health),
            kwargs={
                "autocommit": True,
                # libpq rounds below 2 s up to 2 s.
                "connect_timeout": max(2, round(self._connect_timeout)),
                "application_name": self._application_name,
                # Detect peers that vanished without a FIN while idle.
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
                "keepalives_count": 3,
            },
            min_size=self._min_size,
            max_size=self._max_size,
            # Bounded by _checkout, which counts only callers still waiting (_PoolEntry.admit).
            max_waiting=0,
            max_idle=self._max_idle,
            max_lifetime=self._max_lifetime,
            # No `check=`: done in _usable(), bounded by the deadline (see module docstring).
            name=shard_id,
            # Retry connecting for a while; _checkout() replaces the pool after a failure anyway.
            reconnect_timeout=max(30.0, 6 * self._connect_timeout),
        )
        pool.open(wait=False)
        self.pools_created += 1
        entry = _PoolEntry(shard_id, conninfo, pool, health)
        health.on_failure = functools.partial(self._connect_failed, entry)
        if previous is not None:
            entry.observed_at = previous.observed_at
            if keep_migrated or previous.conninfo == conninfo:
                entry.migrated = previous.migrated
                entry.schema_version = previous.schema_version
            self._close_in_background(previous.pool)
        self._pools[shard_id] = entry
        return entry

    def _connect_failed(self, entry: _PoolEntry) -> None:
        """A connection attempt of ``entry``'s pool failed (in a pool worker): close the pool, so
        its waiters hear PoolClosed now and answer UNAVAILABLE instead of waiting out their
        deadlines; the next request after the fail-fast window builds a fresh pool."""
        if not entry.pool.closed:
            logger.info(
                "a connection attempt to the shard failed; closing its pool",
                extra={"shard_id": entry.shard_id},
            )
            self._close_pool(entry.pool)

    def _close_in_background(self, pool: ConnectionPool[Any]) -> None:
        # close() returns idle connections at once and closes in-use ones when their request
        # returns them. Off the caller's thread (it may hold _lock): closing sends a message
        # on each idle connection. Its own key: never queued behind the pool's own work.
        self._workers.submit(object(), functools.partial(self._close_pool, pool))

    @staticmethod
    def _close_pool(pool: ConnectionPool[Any]) -> None:
        # No thread to wait for (_ShardPool): a connection attempt in progress is discarded when it ends.
        try:
            pool.close(timeout=0)
        except Exception:
            logger.exception("closing a shard pool failed", extra={"shard_id": pool.name})

    def _start_sweeper(self) -> None:
        """Caller holds ``_lock``."""
        if not self._sweeping:
            self._sweeping = True
            self._timer.arm(time.monotonic() + self._sweep_interval, self._sweep)

    def _sweep(self) -> None:
        try:
            self.close_idle()
        except Exception:
            # A sweep that fails must not end the sweeps: the next one tries again.
            logger.exception("sweeping idle shard pools failed")
        finally:
            self._timer.arm(time.monotonic() + self._sweep_interval, self._sweep)

    def close_idle(self) -> list[str]:
        """Close pools nobody used for ``idle_close_seconds``; returns their shard ids."""
        now = self._clock()
        with self._lock:
            idle = [entry for entry in self._pools.values() if now - entry.last_used >= self._idle_close]
            for entry in idle:
                del self._pools[entry.shard_id]
        for entry in idle:
            logger.info("closing idle shard pool", extra={"shard_id": entry.shard_id})
            self._close_in_background(entry.pool)
        return [entry.shard_id for entry in idle]

    # --- operations ------------------------------------------------------------------------

    def pool(self, shard_id: str) -> ConnectionPool[Any] | None:
        """The shard's current pool object (ShardAdmin and tests); None when there is none."""
        entry = self._pools.get(shard_id)
        return entry.pool if entry is not None else None

    def shard_ids(self) -> list[str]:
        return sorted(self._pools)

    def assignment(self, shard_id: str) -> ShardAssignment | None:
        """The assignment the shard's current pool connects with (ShardAdmin probes); None if no pool."""
        entry = self._pools.get(shard_id)
        if entry is None:
            return None
        return ShardAssignment(shard_id=shard_id, connection_string=entry.conninfo)

    def stats(self) -> list[PoolStatsInfo]:
        infos = []
        for entry in sorted(self._pools.values(), key=lambda e: e.shard_id):
            raw = entry.pool.get_stats()
            infos.append(
                PoolStatsInfo(
                    shard_id=entry.shard_id,
                    target=dsn_target(entry.conninfo),
                    pool_min=raw.get("pool_min", self._min_size),
                    pool_max=raw.get("pool_max", self._max_size),
                    pool_size=raw.get("pool_size", 0),
                    pool_available=raw.get("pool_available", 0),
                    # Callers still waiting; psycopg_pool's count includes the ones that gave up.
                    requests_waiting=entry.waiting,
                    requests_num=raw.get("requests_num", 0),
                    requests_errors=raw.get("requests_errors", 0),
                    connections_num=raw.get("connections_num", 0),
                    connections_errors=raw.get("connections_errors", 0),
                    connections_lost=raw.get("connections_lost", 0),
                    create_time=entry.created,
                    last_used_time=entry.last_used_wall,
                    healthy=True if entry.health.proven else False if entry.health.failing else None,
                    last_error=entry.health.last_error,
                    schema_version=entry.schema_version,
                )
            )
        return infos

    def gauges(self) -> list[PoolGauge]:
        """Pool numbers for Metrics.watch_pools (read at scrape time)."""
        return [
            PoolGauge(
                shard_id=s.shard_id,
                size=s.pool_size,
                available=s.pool_available,
                waiting=s.requests_waiting,
                max_size=s.pool_max,
            )
            for s in self.stats()
        ]

    def recycle(self, shard_id: str) -> bool:
        """Replace every connection of the shard's pool (password rotation, failover); False if no pool."""
        entry = self._pools.get(shard_id)
        if entry is None:
            return False
        entry.pool.drain()
        return True

    def close(self) -> None:
        """Close every pool (server shutdown); later checkouts answer UNAVAILABLE.

        Bounded, whatever the shards do: queries still running (the server's grace period is
        over) are cut now, so their threads end instead of holding the exit until their
        deadlines; the pools are closed together, with no wait on any thread (a connection
        attempt to a shard that does not answer is abandoned to its daemon thread).
        """
        with self._lock:
            self._closed = True
            entries = list(self._pools.values())
            self._pools.clear()
        self._watchdog.stop(fire_pending=True)
        self._timer.stop()
        closer = threading.Thread(
            target=lambda: [self._close_pool(entry.pool) for entry in entries],
            name="shard-pools-close",
            daemon=True,
        )
        closer.start()
        closer.join(_CLOSE_ALL_BOUND)
