"""Shard pool registry: one psycopg_pool.ConnectionPool per shard id, bounded by the RPC deadline.

Why it is shaped this way (DESIGN §6):

* One pool per shard id, not per tenant: every business+location on a shard shares it.
  Pools are created on first use under a lock, double-checked so that concurrent first
  requests create exactly one, named after the shard, opened explicitly.
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
* The liveness check of a pooled connection costs no round trip: its socket is polled, and
  only a connection with something to read (usually: the server or a proxy closed it) goes
  through ``ConnectionPool.check_connection``, bounded by the deadline. A ping before every
  reuse would double the warm path's round trips and catch nothing more: a peer that
  vanished silently makes the ping hang just like the statement, and once TCP keepalives
  (below) give up on it the socket polls readable too. A warm request costs one round trip.
* Schema migrations run once per pool, on its first checkout.
* A pool nobody used for ``idle_close_seconds`` is closed by a sweep on the timer thread
  (every ``_SWEEP_INTERVAL``), so a replica that goes quiet gives its connections back; the
  next request opens a new one.
* Shutdown (``close``) is bounded: queries still running after the server's grace period
  are cut, and pools close without waiting for any thread.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from simplu_grpc import context, tracing
from simplu_grpc.adapters.postgres import migrator
from simplu_grpc.adapters.postgres.pool_errors import rejected, timed_out, unreachable
from simplu_grpc.adapters.postgres.pool_health import PoolEntry, PoolHealth
from simplu_grpc.adapters.postgres.pool_session import ShardSession, has_input, rollback
from simplu_grpc.adapters.postgres.pool_stats import pool_gauges, pool_stats
from simplu_grpc.adapters.postgres.pool_threads import WORKER_IDLE_EXIT, Timer, Workers, open_shard_pool
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.pool_stats import PoolStatsInfo
from simplu_grpc.errors import DeadlineExceeded, ShardUnavailable
from simplu_grpc.metrics import Metrics, PoolGauge
from simplu_grpc.redact import dsn_target

if TYPE_CHECKING:
    from simplu_grpc.settings import Settings

logger = logging.getLogger(__name__)

# After a failed connection attempt requests fail fast for this long; the next request
# after it builds a fresh pool (fresh connection attempts, no inherited backoff): a healed
# shard is used again within about this long, with no restart.
_RETRY_AFTER_FAILURE = 1.0
# How often the background sweep looks for pools nobody used for shard_pool_idle_close_seconds
# (so an idle pool is closed at most this late).
_SWEEP_INTERVAL = 2.0
# At shutdown, how long closing every pool may take in all (it needs no network round trip).
_CLOSE_ALL_BOUND = 2.0


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
        worker_idle_exit: float = WORKER_IDLE_EXIT,
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
        self._pools: dict[str, PoolEntry] = {}
        # Threads, whatever the shard count: the watchdog (cuts silent queries), one timer
        # for every pool's scheduled maintenance and the idle sweep, and workers only while
        # there is background work (see Workers). Each starts on first use.
        self._watchdog = Timer("shard-watchdog")
        self._timer = Timer("shard-pool-timer")
        self._workers = Workers(idle_exit=worker_idle_exit)
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
            rollback(conn)
            self._give_back(entry, conn)

    def _give_back(self, entry: PoolEntry, conn: psycopg.Connection[Any]) -> None:
        entry.returned()
        with contextlib.suppress(Exception):
            entry.pool.putconn(conn)

    def _checkout(self, assignment: ShardAssignment) -> tuple[PoolEntry, psycopg.Connection[Any]]:
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
                    raise unreachable(self._metrics, entry)
                # The pool's own reconnect backs off for a long time; start afresh instead.
                entry = self._replace_failed(entry)
            left = deadline.remaining()
            if left <= 0:
                raise timed_out(self._metrics, entry, answers_before=None)
            if not entry.admit(self._max_size + self._max_waiting if self._max_waiting else 0):
                raise rejected(self._metrics, entry)
            answers_before = entry.health.answers
            # ONE wait, bounded by the deadline. psycopg_pool keeps a timed-out waiter queued
            # until a connection comes back, so waiting in slices would pile up stale waiters.
            # A shard going down while we wait wakes us anyway: a failed connection attempt
            # closes the pool (_connect_failed), which fails its waiters with PoolClosed.
            try:
                conn: psycopg.Connection[Any] = entry.pool.getconn(timeout=left)
            except PoolTimeout:
                entry.gave_up()
                raise timed_out(self._metrics, entry, answers_before=answers_before) from None
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

    def _usable(self, entry: PoolEntry, conn: psycopg.Connection[Any]) -> bool:
        """Whether a checked-out connection may be used: its socket has nothing to read, or
        ConnectionPool.check_connection (bounded by the deadline) passes (module docstring)."""
        if not has_input(conn):
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

    def _ensure_migrated(self, entry: PoolEntry, session: ShardSession) -> None:
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

    # --- the pools -------------------------------------------------------------------------

    def _entry(self, assignment: ShardAssignment) -> PoolEntry:
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

    def _current(self, entry: PoolEntry, assignment: ShardAssignment) -> PoolEntry:
        """The entry to wait on after ``entry``'s pool was closed under a waiting request."""
        if self._pools.get(entry.shard_id) is not entry:
            return self._entry(assignment)  # replaced or idle-closed: the current one, or a new one
        if entry.health.failing:
            return entry  # closed by its failed connection attempt: _checkout answers UNAVAILABLE
        return self._replace_failed(entry)

    def _replace_failed(self, entry: PoolEntry) -> PoolEntry:
        with self._lock:
            if self._closed:
                # close() ran while this request waited: never open a pool nobody will close.
                raise ShardUnavailable("the server is shutting down", metadata={"shard_id": entry.shard_id})
            current = self._pools.get(entry.shard_id)
            if current is not entry:
                return current if current is not None else self._install(entry.shard_id, entry.conninfo, None)
            return self._install(entry.shard_id, entry.conninfo, previous=entry, keep_migrated=True)

    def _install(
        self, shard_id: str, conninfo: str, previous: PoolEntry | None, *, keep_migrated: bool = False
    ) -> PoolEntry:
        """Caller holds ``_lock``. Open a new pool for the shard; retire the previous one."""
        self._start_sweeper()
        health = PoolHealth(self._clock)
        pool = open_shard_pool(
            conninfo,
            shard_id,
            health=health,
            timer=self._timer,
            workers=self._workers,
            min_size=self._min_size,
            max_size=self._max_size,
            max_idle=self._max_idle,
            max_lifetime=self._max_lifetime,
            connect_timeout=self._connect_timeout,
            application_name=self._application_name,
        )
        self.pools_created += 1
        entry = PoolEntry(shard_id, conninfo, pool, health)
        health.on_failure = functools.partial(self._connect_failed, entry)
        if previous is not None:
            entry.observed_at = previous.observed_at
            if keep_migrated or previous.conninfo == conninfo:
                entry.migrated = previous.migrated
                entry.schema_version = previous.schema_version
            self._close_in_background(previous.pool)
        self._pools[shard_id] = entry
        return entry

    def _connect_failed(self, entry: PoolEntry) -> None:
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
        # No thread to wait for (ShardPool): a connection attempt in progress is discarded when it ends.
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
        return pool_stats(
            sorted(self._pools.values(), key=lambda e: e.shard_id), self._min_size, self._max_size
        )

    def gauges(self) -> list[PoolGauge]:
        """Pool numbers for Metrics.watch_pools (read at scrape time)."""
        return pool_gauges(self.stats())

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
