"""A shard pool's health (connection attempts, answered and unanswered queries) and the
registry's entry for one shard's pool (its demand, migration state and when it was last used)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

import psycopg
from psycopg_pool import ConnectionPool

from simplu_grpc.redact import redact

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


class PoolHealth:
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


def connection_class(health: PoolHealth) -> type[psycopg.Connection[Any]]:
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


class PoolEntry:
    """A shard's current pool and what the registry knows about it."""

    def __init__(self, shard_id: str, conninfo: str, pool: ConnectionPool[Any], health: PoolHealth) -> None:
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
