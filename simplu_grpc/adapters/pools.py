"""Shard pool registry: one psycopg_pool.ConnectionPool per shard id, bounded by the RPC deadline.

Why it is shaped this way (DESIGN §6):

* One pool per shard id, not per tenant: every business+location on a shard shares it.
  Pools are created on first use under a lock, double-checked so that concurrent first
  requests create exactly one, named after the shard, opened explicitly, with
  ``num_workers=1`` (the default 3 background threads per pool multiply with the shard count).
* Connection budget: each replica opens at most ``max_size`` connections per shard, so
  ``replicas x SHARD_POOL_MAX_SIZE (+1 briefly while a pool is replaced)`` must stay below
  the shard's ``max_connections`` minus what its other clients use.
* A new connection string for a known shard id (Citrus failed it over) replaces the pool;
  the old one is closed in the background: its idle connections at once, the ones in use
  when their request returns them (psycopg_pool closes returned connections of a closed
  pool), so no in-flight request is cut and no acknowledged write is lost. Which string is
  current is decided by when Citrus gave it (``ShardAssignment.observed_at``), not by a grace
  period: a request routed before the move still uses the new pool, a move back is followed at once.
* Checkout never waits past the RPC's deadline, and a query never runs past it either:
  ``statement_timeout`` is set per transaction (``set_config(..., true)``) from the
  remaining time, and a watchdog shuts the socket of a query whose server stopped
  answering (blackholed network: no statement_timeout can reach us, and libpq would wait
  forever), turning a hang into DEADLINE_EXCEEDED.
* Exhausted vs down: a checkout that times out while the shard accepts connections is
  RESOURCE_EXHAUSTED (``pool_error(shard, "exhausted")``); one that fails because
  connecting to the shard fails is UNAVAILABLE / SHARD_UNAVAILABLE (``"unavailable"``).
  Connection attempts are observed through the pool's ``connection_class``.
* The liveness check of a pooled connection costs no round trip: its socket is polled, and
  only a connection with something to read (usually: the server or a proxy closed it) goes
  through ``ConnectionPool.check_connection``, bounded by the deadline. A ping before every
  reuse would double the warm path's round trips and catch nothing more: a peer that
  vanished silently makes the ping hang just like the statement, and once TCP keepalives
  (below) give up on it the socket polls readable too. A warm request costs one round trip.
* Each query runs in one pipeline (BEGIN, statement_timeout, the statement, COMMIT): one
  network round trip.
* Schema migrations run once per pool, on its first checkout.
* A pool nobody used for ``idle_close_seconds`` is closed by a background sweeper thread,
  so a replica that goes quiet gives its connections back; the next request opens a new one.
"""

from __future__ import annotations

import contextlib
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
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout, TooManyRequests

from simplu_grpc import context
from simplu_grpc.adapters import migrator
from simplu_grpc.domain.shards import ShardAssignment
from simplu_grpc.errors import DeadlineExceeded, ResourceExhausted, ShardUnavailable
from simplu_grpc.metrics import Metrics, PoolGauge
from simplu_grpc.redact import dsn_target, redact

if TYPE_CHECKING:
    from simplu_grpc.settings import Settings

logger = logging.getLogger(__name__)

Row = dict[str, Any]
Query = str | bytes | sql.Composed | sql.SQL

# Waiters for a connection re-check the shard's health this often instead of queueing
# silently until the deadline (a waiter re-queues at the back: fine at this granularity).
_WAIT_SLICE = 0.1
# After a failed connection attempt requests fail fast for this long; the next request
# after it builds a fresh pool (fresh connection attempts, no inherited backoff): a healed
# shard is used again within about this long, with no restart.
_RETRY_AFTER_FAILURE = 1.0
# The watchdog cuts a silent connection this long after the deadline: statement_timeout
# (set to the deadline) normally answers first, with a clean error.
_CUT_GRACE = 0.05
# How often the background sweeper looks for pools nobody used for shard_pool_idle_close_seconds.
_SWEEP_INTERVAL = 30.0


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
    """Outcomes of a pool's connection attempts (written by its worker thread, read by requests)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.last_success: float | None = None
        self.last_failure: float | None = None
        self.last_error: str | None = None
        self.connecting = 0  # connection attempts in progress

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

    __slots__ = ("_lock", "action", "cancelled", "fired")

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action
        self.cancelled = False
        self.fired = False
        # Held while firing, so a request that cancels right at its deadline cannot hand the
        # connection back to the pool while the watchdog is cutting it.
        self._lock = threading.Lock()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True

    def fire(self) -> None:
        with self._lock:
            if self.cancelled:
                return
            self.fired = True
            self.action()


class _Watchdog:
    """One thread running actions at absolute monotonic times (cutting silent connections)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Alarm]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def arm(self, at: float, action: Callable[[], None]) -> _Alarm:
        alarm = _Alarm(action)
        with self._cond:
            heapq.heappush(self._heap, (at, next(self._seq), alarm))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="shard-watchdog", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is alarm:
                self._cond.notify()
        return alarm

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    # Drop cancelled alarms at the top so the heap stays small.
                    while self._heap and self._heap[0][2].cancelled:
                        heapq.heappop(self._heap)
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
            try:
                alarm.fire()
            except Exception:
                logger.exception("shard watchdog action failed")


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


class ShardSession:
    """A checked-out shard connection; ``run`` executes one statement in one round trip."""

    def __init__(
        self, shard_id: str, conn: psycopg.Connection[Any], watchdog: _Watchdog, health: _Health
    ) -> None:
        self.shard_id = shard_id
        self.conn = conn
        self._watchdog = watchdog
        self._health = health

    def run(self, query: Query, params: Sequence[Any] | dict[str, Any] | None = None) -> list[Row]:
        """Run one statement in its own transaction with statement_timeout = the remaining deadline."""
        conn = self.conn
        with self.guard("querying the shard") as millis:
            try:
                with conn.pipeline():
                    conn.execute("BEGIN")
                    conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(millis),))
                    cursor = conn.cursor(row_factory=dict_row)
                    cursor.execute(query, params)
                    conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return cursor.fetchall() if cursor.description is not None else []

    def execute(
        self, query: Query, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> psycopg.Cursor[Any]:
        """Raw autocommit execution (ShardAdmin probes, schema reads), bounded by the deadline."""
        with self.guard("querying the shard"):
            return self.conn.execute(query, params)

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[int]:
        """Bound raw use of ``conn`` by the deadline; translate connection-level errors. Yields ms left."""
        deadline = context.deadline()
        left = deadline.check(what)
        alarm = self._watchdog.arm(deadline.expires_at + _CUT_GRACE, lambda: _cut(self.conn))
        try:
            yield max(1, int(left * 1000))
        except psycopg.errors.QueryCanceled as exc:
            raise DeadlineExceeded(f"deadline exceeded while {what}") from exc
        except psycopg.OperationalError as exc:
            if alarm.fired:
                raise DeadlineExceeded(f"shard {self.shard_id} did not answer before the deadline") from exc
            raise ShardUnavailable(
                f"lost the connection to shard {self.shard_id}", metadata={"shard_id": self.shard_id}
            ) from exc
        finally:
            alarm.cancel()
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
    ) -> None:
        if min_size < 0 or max_size < 1 or min_size > max_size:
            raise ValueError("need 0 <= min_size <= max_size and max_size >= 1")
        if max_waiting < 0:
            raise ValueError("max_waiting must not be negative")
        if connect_timeout <= 0 or idle_close_seconds <= 0 or sweep_interval <= 0:
            raise ValueError("connect_timeout, idle_close_seconds and sweep_interval must be positive")
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
        self._watchdog = _Watchdog()
        # Idle pools are closed by a background thread, not by requests: a replica that goes
        # quiet must still give back its connections to every shard it once used. Started
        # with the first pool, so a registry that never connects owns no thread.
        self._sweep_interval = sweep_interval
        self._sweep_stop = threading.Event()
        self._sweeper: threading.Thread | None = None
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
        entry, conn = self._checkout(assignment)
        session = ShardSession(entry.shard_id, conn, self._watchdog, entry.health)
        try:
            if self._migrate and not entry.migrated:
                self._ensure_migrated(entry, session)
            yield session
        finally:
            _rollback(conn)
            with contextlib.suppress(Exception):
                entry.pool.putconn(conn)

    def _checkout(self, assignment: ShardAssignment) -> tuple[_PoolEntry, psycopg.Connection[Any]]:
        deadline = context.deadline()
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
                raise self._timed_out(entry)
            # Wait in slices: if the pool's connection attempts start failing while we wait (a
            # shard that just went down), the caller hears UNAVAILABLE now, not at the deadline.
            wait = min(left, _WAIT_SLICE)
            try:
                conn: psycopg.Connection[Any] = entry.pool.getconn(timeout=wait)
            except TooManyRequests as exc:
                self._metrics.pool_error(entry.shard_id, "exhausted")
                raise ResourceExhausted(
                    f"too many requests waiting for shard {entry.shard_id}",
                    reason="SHARD_POOL_EXHAUSTED",
                    metadata={"shard_id": entry.shard_id},
                ) from exc
            except PoolTimeout:
                continue
            except PoolClosed:
                # Replaced (failover, idle close, recycle) between lookup and checkout.
                entry = self._entry(assignment)
                continue
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
            entry.pool.putconn(conn)
            return False
        except BaseException:
            conn.close()
            entry.pool.putconn(conn)
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

    def _timed_out(self, entry: _PoolEntry) -> Exception:
        if entry.health.failing:
            return self._unavailable(entry)
        if not entry.health.proven or entry.health.connecting:
            # Waiting on a connection attempt that neither succeeds nor fails: the shard (or
            # the network to it) does not answer. Exhaustion means every connection is busy.
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
        pool: ConnectionPool[Any] = ConnectionPool(
            conninfo,
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
            max_waiting=self._max_waiting,
            max_idle=self._max_idle,
            max_lifetime=self._max_lifetime,
            # No `check=`: done in _usable(), bounded by the deadline (see module docstring).
            name=shard_id,
            open=False,
            # Retry connecting for a while; _checkout() replaces the pool after a failure anyway.
            reconnect_timeout=max(30.0, 6 * self._connect_timeout),
            num_workers=1,
        )
        pool.open(wait=False)
        self.pools_created += 1
        entry = _PoolEntry(shard_id, conninfo, pool, health)
        if previous is not None:
            entry.observed_at = previous.observed_at
            if keep_migrated or previous.conninfo == conninfo:
                entry.migrated = previous.migrated
                entry.schema_version = previous.schema_version
            self._close_in_background(previous.pool)
        self._pools[shard_id] = entry
        return entry

    def _close_in_background(self, pool: ConnectionPool[Any]) -> None:
        # close() returns idle connections at once and closes in-use ones when their request
        # returns them; it may wait for the pool's worker (a connect attempt in progress).
        thread = threading.Thread(
            target=self._close_pool, args=(pool,), name=f"close-pool-{pool.name}", daemon=True
        )
        thread.start()

    @staticmethod
    def _close_pool(pool: ConnectionPool[Any], timeout: float = 10.0) -> None:
        try:
            pool.close(timeout=timeout)
        except Exception:
            logger.exception("closing a shard pool failed", extra={"shard_id": pool.name})

    def _start_sweeper(self) -> None:
        """Caller holds ``_lock``."""
        if self._sweeper is None:
            self._sweeper = threading.Thread(target=self._sweep, name="shard-pool-sweeper", daemon=True)
            self._sweeper.start()

    def _sweep(self) -> None:
        while not self._sweep_stop.wait(self._sweep_interval):
            try:
                self.close_idle()
            except Exception:
                # A sweep that fails must not end the sweeper: the next one tries again.
                logger.exception("sweeping idle shard pools failed")

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
                    requests_waiting=raw.get("requests_waiting", 0),
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
        """Close every pool (server shutdown); later checkouts answer UNAVAILABLE."""
        with self._lock:
            self._closed = True
            entries = list(self._pools.values())
            self._pools.clear()
        for entry in entries:
            # Short: at shutdown a worker stuck connecting to a dead shard must not hold the exit.
            self._close_pool(entry.pool, timeout=2.0)
        self._sweep_stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
        self._watchdog.stop()
