"""Wakes the shards' change listeners after a write commits: NOTIFY outside the write's transaction.

A NOTIFY inside the write's own statement would cost nothing in round trips but a great deal in
throughput: PostgreSQL serialises the commits of notifying transactions (a database-wide lock
held through the commit's WAL flush), so concurrent writes lose their group commit (measured:
8 concurrent inserts went from ~2000/s to ~420/s with a pg_notify in the statement). So a write
only hands its location to this notifier (a set insert, no I/O); one background thread sends
what accumulated, per shard, as ONE statement on a pooled connection, with
``synchronous_commit = off`` (a notification needs no durable commit), while the next batch
accumulates. A shard nobody listens on (no replica watches it) is left alone for a minute at a
time: writes there cost nothing; a replica that starts watching it is woken by its own writes at
once (``listening``) and by other replicas' within that minute (its 1 s timer poll meanwhile).
Listeners read the changes from the change log, never from the notification: a
notification lost (a failure here, a crash) delays a change until the listener's next timer
poll, it never loses it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Final

from simplu_grpc import context
from simplu_grpc.adapters.postgres.pool_registry import PoolRegistry
from simplu_grpc.domain.placement.shards import ShardAssignment

log = logging.getLogger(__name__)

CHANGE_CHANNEL: Final = "simplu_resource_changes"
LISTENER_APPLICATION: Final = "simplu-grpc-listener"
# Notifies, and says whether any replica listens on this shard at all (its listeners connect
# with application_name LISTENER_APPLICATION): when none does, the shard is left alone for
# _QUIET_SECONDS, so writes where nobody watches cost no round trip at all.
# One statement (its result is the one ShardSession.run returns); synchronous_commit is set for
# this transaction only, in its FROM.
_NOTIFY: Final = (
    f"SELECT count(pg_notify('{CHANGE_CHANNEL}', p)) AS sent,"
    " EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
    f" AND application_name = '{LISTENER_APPLICATION}') AS listened"
    " FROM set_config('synchronous_commit', 'off', true) AS quiet, unnest(%(p)s::text[]) AS p"
)
_QUIET_SECONDS: Final = 60.0
_SEND_SECONDS: Final = 5.0


class ChangeNotifier:
    """``changed(assignment, business_id, location_id)`` after a write committed (see module doc)."""

    def __init__(self, pools: PoolRegistry) -> None:
        self._pools = pools
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: dict[str, tuple[ShardAssignment, set[str]]] = {}
        self._thread: threading.Thread | None = None
        self._closed = False
        # shard id -> monotonic time until which nobody listens there (as last seen).
        self._quiet_until: dict[str, float] = {}
        # shard id -> until when it is notified whatever the check says (a listener of this
        # process is starting there and may not be connected yet).
        self._keep_until: dict[str, float] = {}
        self.sent = 0  # statements sent, for tests and the bench

    def listening(self, shard_id: str) -> None:
        """A listener of this process started on ``shard_id``: notify its writes from now on."""
        with self._lock:
            self._quiet_until.pop(shard_id, None)
            self._keep_until[shard_id] = time.monotonic() + _QUIET_SECONDS

    def changed(self, assignment: ShardAssignment, business_id: str, location_id: str) -> None:
        with self._lock:
            if self._closed or time.monotonic() < self._quiet_until.get(assignment.shard_id, 0.0):
                return
            entry = self._pending.get(assignment.shard_id)
            if entry is None or entry[0].connection_string != assignment.connection_string:
                entry = self._pending[assignment.shard_id] = (assignment, set())
            entry[1].add(f"{business_id}/{location_id}")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="simplu-change-notifier", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                batch, self._pending = self._pending, {}
                closed = self._closed
            for assignment, payloads in batch.values():
                self._send(assignment, sorted(payloads))
            if closed:
                return

    def _send(self, assignment: ShardAssignment, payloads: list[str]) -> None:
        try:
            with (
                context.bind(deadline=context.Deadline.after(_SEND_SECONDS)),
                self._pools.connection(assignment) as session,
            ):
                rows = session.run(_NOTIFY, {"p": payloads})
            self.sent += 1
            if rows and not rows[0]["listened"]:
                with self._lock:
                    now = time.monotonic()
                    if now >= self._keep_until.get(assignment.shard_id, 0.0):
                        self._quiet_until[assignment.shard_id] = now + _QUIET_SECONDS
        except Exception as exc:  # the listeners' timer polls catch up: log, never raise
            log.warning("could not notify shard %s of changes: %s", assignment.shard_id, type(exc).__name__)

    def close(self) -> None:
        """Send what is pending, then stop."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(_SEND_SECONDS + 1)
