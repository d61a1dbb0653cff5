"""The shards' change feeds: ONE listening connection per shard per process, shared by every watcher.

A ``ShardListener`` thread holds a dedicated autocommit connection to its shard that LISTENs on
``simplu_resource_changes`` (every replica notifies it after its writes commit:
``adapters.change_notifier``). Each
wake-up (a notification, or a short timer while changes are still settling) is one *poll*:

1. ``Q``: the change-log identity's last drawn value (not transactional: what was drawn so far);
   nothing new since the frontier: done (an idle shard costs one tiny query per wake-up);
2. ``X``: a transaction id of its own, assigned after Q was read (above every id assigned before);
3. a snapshot's oldest running transaction of this database -> ``CommitHorizon`` says how far
   the log is final (``domain.watch``, with the proof);
4. the changes of the watched locations above the previous frontier and up to the new one, in
   sequence order, each with its resource as the change left it -> ``ShardFanout.publish``.

Notifications only wake the listener, the log is the truth: a notification lost to a reconnect
loses nothing, and writes made through another replica arrive the same way. A connection lost is
re-made (the frontier survives it: transaction ids and the log are the shard's); a shard
unreachable for ``reconnect_seconds`` ends its watchers with WATCH_INTERRUPTED (they resume).
A listener with no watchers left stops after ``linger_seconds``.

``read`` (a watcher's catch-up) and ``oldest_retained`` go through the shard's pool.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from simplu_grpc.adapters.change_notifier import CHANGE_CHANNEL, LISTENER_APPLICATION
from simplu_grpc.adapters.postgres.pool_registry import PoolRegistry
from simplu_grpc.adapters.postgres.shard_store import _stored as stored_resource
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.resources.changes import ChangeKind, ResourceChange
from simplu_grpc.domain.resources.model import ResourceKey
from simplu_grpc.domain.watch import (
    CommitHorizon,
    LocationKey,
    Position,
    ShardFanout,
    Subscription,
    WatchedChange,
)
from simplu_grpc.errors import SimpluError, Unavailable

log = logging.getLogger(__name__)


_LAST_DRAWN: Final = (
    "SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS q FROM resource_changes_sequence_seq"
)
# The snapshot's xmax, and the oldest transaction still running that may be this database's:
# the cluster's xmin would do, but transaction ids are cluster-wide, and a long transaction in
# another database on the same server must not hold this shard's streams back. A running id is
# left out only when pg_stat_activity shows it belongs to another database (ids compared on
# their low 32 bits, unique among running transactions); one it cannot attribute (another
# role's session, without pg_read_all_stats) still counts: a delay, never a loss.
_SNAPSHOT: Final = """
SELECT coalesce(
           (SELECT min(u::text::bigint) FROM pg_snapshot_xip(s) AS u
            WHERE u::text::bigint % 4294967296 NOT IN (
                SELECT backend_xid::text::bigint FROM pg_stat_activity
                WHERE datname IS DISTINCT FROM current_database() AND backend_xid IS NOT NULL)),
           pg_snapshot_xmax(s)::text::bigint) AS xmin,
       clock_timestamp() AS now
FROM pg_current_snapshot() AS s
"""
# An upper bound of every transaction id assigned so far: a transaction id of its own (this
# one-statement transaction commits at once). A snapshot's xmax is no such bound: it is the
# newest *completed* id + 1, and a running transaction may hold an id above it.
_NEXT_XID: Final = "SELECT pg_current_xact_id()::text::bigint AS x"
# A change, and the resource as it left it when it still is (same version; never for a delete).
_READ: Final = """
SELECT c.sequence, c.business_id, c.location_id, c.resource_type, c.resource_id, c.kind, c.version,
       c.paths, c.principal, c.change_time, r.business_type, r.data, r.start_time, r.end_time,
       r.create_time, r.update_time, r.version AS resource_version
FROM resource_changes c
LEFT JOIN resources r
  ON c.kind <> 'deleted' AND r.business_id = c.business_id AND r.location_id = c.location_id
 AND r.resource_type = c.resource_type AND r.resource_id = c.resource_id AND r.version = c.version
WHERE {where} AND c.sequence > %(after)s AND c.sequence <= %(upto)s
ORDER BY c.sequence
LIMIT %(limit)s
"""
# One location's catch-up: an index range of resource_changes_by_location.
_READ_LOCATION: Final = _READ.format(where="c.business_id = %(b)s AND c.location_id = %(l)s")
# The live range for every watched location: a primary-key range, filtered.
_READ_LOCATIONS: Final = _READ.format(
    where="(c.business_id, c.location_id) IN (SELECT * FROM unnest(%(b)s::text[], %(l)s::text[]))"
)
_OLDEST_RETAINED: Final = "SELECT now() - %(retention)s::interval AS oldest"


def _watched(row: dict[str, Any]) -> WatchedChange:
    key = ResourceKey(row["business_id"], row["location_id"], row["resource_type"], row["resource_id"])
    change = ResourceChange(
        sequence=int(row["sequence"]),
        kind=ChangeKind(row["kind"]),
        key=key,
        version=int(row["version"]),
        paths=tuple(row["paths"]),
        principal=row["principal"],
        change_time=row["change_time"],
    )
    # Joined on the change's version: the row's resource columns are the resource's own.
    resource = stored_resource(row) if row["resource_version"] is not None else None
    return WatchedChange(change, resource)


def _one(conn: psycopg.Connection[dict[str, Any]], query: str) -> dict[str, Any]:
    row = conn.execute(query).fetchone()
    if row is None:
        raise psycopg.InterfaceError("the shard answered no row to a one-row query")
    return row


def _interrupted(shard_id: str) -> Unavailable:
    return Unavailable(
        f"the change feed of shard {shard_id} was lost: resume with the resume_token in this"
        " error's metadata",
        reason="WATCH_INTERRUPTED",
    )


class ShardListener:
    """One shard's listening connection and poll loop (see module docstring)."""

    def __init__(
        self,
        assignment: ShardAssignment,
        *,
        application_name: str,
        connect_timeout: float,
        batch: int,
        idle_poll_seconds: float,
        busy_poll_seconds: float,
        reconnect_seconds: float,
        linger_seconds: float,
        on_exit: Any,
        prepare: Any,
    ) -> None:
        self.assignment = assignment
        self.fanout = ShardFanout(assignment.shard_id)
        self._application_name = application_name
        self._connect_timeout = connect_timeout
        self._batch = batch
        self._idle_poll = idle_poll_seconds
        self._busy_poll = busy_poll_seconds
        self._reconnect = reconnect_seconds
        self._linger = linger_seconds
        self._on_exit = on_exit
        self._prepare = prepare
        self._stop = threading.Event()
        self.finished = False
        self.polls = 0  # for tests and the bench: how many polls this listener made
        self._frontier: Position | None = None
        self._horizon = CommitHorizon()
        self._polled = 0.0
        self._thread = threading.Thread(
            target=self._run, name=f"simplu-listen-{assignment.shard_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        conn = psycopg.connect(
            self.assignment.connection_string,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=max(2, round(self._connect_timeout)),
            application_name=LISTENER_APPLICATION,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        conn.execute("SET statement_timeout = 10000")
        # The only transactions it commits are the polls' own ids (_NEXT_XID): nothing to make
        # durable, so no WAL flush per poll (an id's order holds whether its commit is flushed).
        conn.execute("SET synchronous_commit = off")
        conn.execute(f"LISTEN {CHANGE_CHANNEL}")
        return conn

    def _run(self) -> None:
        failing_since: float | None = None
        idle_since: float | None = None
        try:
            while not self._stop.is_set():
                try:
                    self._prepare(self.assignment)
                    with self._connect() as conn:
                        failing_since = None
                        woke_for: list[str] = []
                        while not self._stop.is_set():
                            if self.fanout.watched == 0:
                                idle_since = idle_since or time.monotonic()
                                if time.monotonic() - idle_since >= self._linger and self._on_exit(self):
                                    return
                            else:
                                idle_since = None
                            if self._due(woke_for):
                                self._poll(conn)
                            wait = self._busy_poll if self._horizon.waiting else self._idle_poll
                            woke_for = [n.payload for n in conn.notifies(timeout=wait, stop_after=1)]
                except (psycopg.Error, SimpluError) as exc:
                    now = time.monotonic()
                    failing_since = failing_since or now
                    log.warning("change feed of shard %s: %s", self.assignment.shard_id, type(exc).__name__)
                    if now - failing_since >= self._reconnect:
                        self.fanout.fail(_interrupted(self.assignment.shard_id))
                        return
                    self._stop.wait(0.2)
        except Exception:
            log.exception("change feed of shard %s failed", self.assignment.shard_id)
            self.fanout.fail(_interrupted(self.assignment.shard_id))
        finally:
            self.finished = True
            self._on_exit(self, force=True)

    def _due(self, woke_for: list[str]) -> bool:
        """Whether to poll now: a change of a watched location (or none known: a timer), changes
        still settling, or no poll for ``idle_poll_seconds``. Changes of locations nobody here
        watches cost this replica nothing but the wake-up; the frontier catches up on the next
        poll (a stale frontier is still a true one)."""
        if not woke_for or self._horizon.waiting or self._frontier is None:
            return True
        if time.monotonic() - self._polled >= self._idle_poll:
            return True
        watched = {f"{b}/{loc}" for b, loc in self.fanout.covering()}
        return any(payload in watched for payload in woke_for)

    def _poll(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        self.polls += 1
        self._polled = time.monotonic()
        drawn = _one(conn, _LAST_DRAWN)["q"]
        if self._frontier is not None and drawn <= self._frontier.sequence and not self._horizon.waiting:
            return  # nothing drawn since the frontier: nothing to settle, nothing to read
        if not self._horizon.holds(drawn):
            self._horizon.observed(drawn, _one(conn, _NEXT_XID)["x"])
        snapshot = _one(conn, _SNAPSHOT)
        settled = self._horizon.settle(int(snapshot["xmin"]))
        if settled is None:
            return
        previous = self._frontier
        target = Position(max(settled, previous.sequence if previous else 0), snapshot["now"])
        covered = self.fanout.covering()
        after = previous.sequence if previous is not None else target.sequence
        while covered and after < target.sequence:
            rows = conn.execute(
                _READ_LOCATIONS,
                {
                    "b": [b for b, _ in covered],
                    "l": [loc for _, loc in covered],
                    "after": after,
                    "upto": target.sequence,
                    "limit": self._batch,
                },
            ).fetchall()
            changes = [_watched(row) for row in rows]
            if len(changes) < self._batch:
                break
            last = changes[-1].change
            self._frontier = Position(last.sequence, last.change_time)
            self.fanout.publish(changes, self._frontier, covered)
            after = last.sequence
        else:
            changes = []
        self._frontier = target
        self.fanout.publish(changes, target, covered)


class ChangeListeners:
    """``domain.watch.ChangeFeeds`` over PostgreSQL: one listener per shard, started on demand."""

    def __init__(
        self,
        pools: PoolRegistry,
        *,
        retention: timedelta,
        application_name: str = "simplu-grpc",
        connect_timeout: float = 5.0,
        batch: int = 500,
        idle_poll_seconds: float = 1.0,
        busy_poll_seconds: float = 0.02,
        reconnect_seconds: float = 5.0,
        linger_seconds: float = 30.0,
        on_listen: Callable[[str], None] | None = None,
    ) -> None:
        self._pools = pools
        # Told the shard id when a listener starts (the notifier then wakes it on every write).
        self._on_listen = on_listen
        self._retention = retention
        self._options: dict[str, Any] = {
            "application_name": application_name,
            "connect_timeout": connect_timeout,
            "batch": batch,
            "idle_poll_seconds": idle_poll_seconds,
            "busy_poll_seconds": busy_poll_seconds,
            "reconnect_seconds": reconnect_seconds,
            "linger_seconds": linger_seconds,
        }
        self._lock = threading.Lock()
        self._listeners: dict[str, ShardListener] = {}
        self._closed = False

    def subscribe(self, assignment: ShardAssignment, subscription: Subscription) -> ShardFanout:
        # Joined under the registry's lock: a listener about to stop for want of watchers
        # (``_exited``) either sees this one or is already gone and a new one starts.
        with self._lock:
            fanout = self._fanout(assignment)
            fanout.join(subscription)
            return fanout

    def _fanout(self, assignment: ShardAssignment) -> ShardFanout:
        """Caller holds ``_lock``."""
        if self._closed:
            raise Unavailable("the server is shutting down", reason="WATCH_INTERRUPTED")
        found = self._listeners.get(assignment.shard_id)
        if found is not None and not found.finished:
            if found.assignment.connection_string == assignment.connection_string:
                return found.fanout
            # The shard moved (a failover Citrus reported): its watchers resume on the new one.
            found.fanout.fail(_interrupted(assignment.shard_id))
            found.stop(timeout=0)
        listener = ShardListener(assignment, on_exit=self._exited, prepare=self._migrated, **self._options)
        self._listeners[assignment.shard_id] = listener
        if self._on_listen is not None:
            self._on_listen(assignment.shard_id)
        listener.start()
        return listener.fanout

    def _migrated(self, assignment: ShardAssignment) -> None:
        """The shard's schema is current (the pool migrates it on first use): the log and its
        trigger exist before the listener reads them."""
        with self._pools.connection(assignment):
            pass

    def _exited(self, listener: ShardListener, *, force: bool = False) -> bool:
        """A listener asks to stop (no watchers for a while) or has stopped; True: it may."""
        with self._lock:
            if not force and listener.fanout.watched:
                return False
            if self._listeners.get(listener.assignment.shard_id) is listener:
                del self._listeners[listener.assignment.shard_id]
            return True

    def listeners(self) -> list[ShardListener]:
        with self._lock:
            return list(self._listeners.values())

    def read(
        self, assignment: ShardAssignment, location: LocationKey, after: int, upto: int, limit: int
    ) -> list[WatchedChange]:
        params = {"b": location[0], "l": location[1], "after": after, "upto": upto, "limit": limit}
        with self._pools.connection(assignment) as session:
            return [_watched(row) for row in session.run(_READ_LOCATION, params)]

    def oldest_retained(self, assignment: ShardAssignment) -> datetime | None:
        with self._pools.connection(assignment) as session:
            rows = session.run(_OLDEST_RETAINED, {"retention": self._retention})
        return rows[0]["oldest"] if rows else None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            listeners = list(self._listeners.values())
        for listener in listeners:
            listener.fanout.fail(_interrupted(listener.assignment.shard_id))
            listener.stop()
