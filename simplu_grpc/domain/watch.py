"""Change streams (WatchResources): positions, the commit horizon, and the per-shard fan-out.

A shard's change log is ordered by ``sequence``, an identity drawn when the change row is
inserted, not when it commits: a transaction holding sequence 10 may commit after the one
holding 11. A stream that delivered 11 as soon as it was visible would lose 10 for good. So a
stream only delivers up to a *frontier* below which no change can still appear:
``CommitHorizon`` finds it from PostgreSQL's own bookkeeping of running transactions (see its
docstring for the proof). Everything at or below the frontier is final, so a reader of the log
(``ChangeFeeds.read``) and the live fan-out (``ShardFanout.publish``) can hand a watcher over
at a frontier with nothing lost and nothing twice.

One ``ShardFanout`` per shard per process is fed by one listener (an adapter holding ONE
LISTEN connection to the shard, shared by every watcher of the process); each watcher is a
``Subscription``: a bounded buffer the listener fills and the stream drains. Nothing here
knows gRPC, protobuf or SQL.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.resources.changes import ResourceChange
from simplu_grpc.domain.resources.model import StoredResource
from simplu_grpc.errors import InvalidArgument, SimpluError

LocationKey = tuple[str, str]  # (business_id, location_id)

_TOKEN_VERSION: Final = 1
_MAX_TOKEN_LENGTH: Final = 1024
_TOKEN_FIELD: Final = "resume_token"


@dataclass(frozen=True, slots=True)
class Position:
    """A point in a shard's change log: every change with a sequence <= ``sequence`` is behind
    it. ``time`` is the shard's clock there (a change's change_time, or when the frontier was
    read): a position older than the log's retention may have lost changes after it."""

    sequence: int
    time: datetime


@dataclass(frozen=True, slots=True)
class WatchedChange:
    """A change as a stream sends it: the log row and, for creates and updates, the resource as
    the change left it when it still is (None when a later change replaced it, and for deletes)."""

    change: ResourceChange
    resource: StoredResource | None

    @property
    def location(self) -> LocationKey:
        return (self.change.key.business_id, self.change.key.location_id)


# --- resume tokens ---------------------------------------------------------------------------


def encode_token(business_id: str, location_id: str, shard_id: str, position: Position) -> str:
    """An opaque resume token: the position, bound to the location and the shard whose log it
    counts in. It grants nothing (the stream re-checks permission), so it carries no HMAC."""
    body = {
        "v": _TOKEN_VERSION,
        "b": business_id,
        "l": location_id,
        "sh": shard_id,
        "s": position.sequence,
        "t": position.time.astimezone(UTC).isoformat(),
    }
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_token(token: str, business_id: str, location_id: str) -> tuple[str, Position]:
    """(shard id, position) of a resume token for this location; INVALID_ARGUMENT when it is not
    one of ours or was made for another location."""
    if len(token) > _MAX_TOKEN_LENGTH:
        raise InvalidArgument.field(_TOKEN_FIELD, "is not a resume token this service issued")
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        valid = (
            isinstance(body, dict)
            and body.get("v") == _TOKEN_VERSION
            and isinstance(body.get("sh"), str)
            and isinstance(body.get("s"), int)
            and body["s"] >= 0
        )
        if not valid:
            raise ValueError("shape")
        when = datetime.fromisoformat(body["t"])
        if when.tzinfo is None:
            raise ValueError("naive time")
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument.field(_TOKEN_FIELD, "is not a resume token this service issued") from None
    if body.get("b") != business_id or body.get("l") != location_id:
        raise InvalidArgument.field(_TOKEN_FIELD, "was issued for another location")
    return body["sh"], Position(body["s"], when)


# --- the commit horizon ------------------------------------------------------------------------


class CommitHorizon:
    """Finds the frontier of a shard's change log: the highest sequence below which every
    change that will ever commit has committed. Fed by a listener's polls.

    Each poll reads, in this order, in separate statements: (1) ``Q``, the identity's last
    drawn value; (2) ``X``, a transaction id assigned to the poll itself (ids are assigned in
    increasing order, so every id assigned before is below it; the poll's transaction commits
    at once); (3) a snapshot's ``xmin``: the oldest transaction of the shard's database still
    running (the snapshot's xmax when none; transactions of other databases are left out by
    the adapter).

    Claim: once a snapshot taken after (2) has ``xmin >= X``, every sequence <= ``Q`` is
    final. Proof: a sequence <= Q was drawn before Q was read. The transaction that drew it
    had its id before it drew it, because every statement that logs a change first modifies
    ``resources`` (the change row is selected from the modified rows), and a transaction gets
    its id at its first modification. So its id is below X. The snapshot shows every
    transaction below its xmax that still runs, and its xmax is above X (the poll's own
    transaction X completed before it); as none below X runs, that transaction has ended:
    committed (its row is visible to any later statement) or rolled back (a gap forever).
    (A snapshot's own xmax is no bound on ids assigned: it is the newest *completed* id + 1,
    so a transaction holding a higher id may run; hence X.)

    A watcher is handed changes up to the frontier only, so a change that commits "late"
    (sequence 10 after 11) is held back until it is visible, then sent in its place.
    """

    def __init__(self) -> None:
        self._pending: deque[tuple[int, int]] = deque()  # (Q, X), Q ascending

    def holds(self, last_drawn: int) -> bool:
        """Whether ``last_drawn`` is already waiting (its earlier X covers it, and settles sooner)."""
        return bool(self._pending) and self._pending[-1][0] == last_drawn

    def observed(self, last_drawn: int, bound: int) -> None:
        """A poll read ``last_drawn`` (Q), then got ``bound`` (X) above every id assigned before."""
        if not self.holds(last_drawn):
            self._pending.append((last_drawn, bound))

    def settle(self, xmin: int) -> int | None:
        """The new frontier given a snapshot's ``xmin``, or None when none settled."""
        frontier: int | None = None
        while self._pending and self._pending[0][1] <= xmin:
            frontier = self._pending.popleft()[0]
        return frontier

    @property
    def waiting(self) -> bool:
        """Whether sequences are drawn that are not final yet (poll again soon)."""
        return bool(self._pending)


# --- subscriptions and the fan-out -----------------------------------------------------------


class Subscription:
    """One watcher's buffer: changes pushed by the shard's fan-out while the watcher is live."""

    def __init__(self, location: LocationKey, *, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.location = location
        self.capacity = capacity
        # Everything at or below ``cursor`` was delivered (or skipped) by the stream.
        self.cursor = 0
        self.live = False
        self.ended: SimpluError | None = None
        self.overflowed = False
        self._changes: deque[WatchedChange] = deque()
        self._frontier: Position | None = None
        self._signal = threading.Condition(threading.Lock())

    def push(self, changes: Sequence[WatchedChange], frontier: Position) -> None:
        """Called by the fan-out (under its lock) with changes above ``cursor`` in sequence order."""
        with self._signal:
            added = False
            for item in changes:
                if item.change.sequence <= self.cursor:
                    continue
                if len(self._changes) >= self.capacity:
                    self.overflowed = True
                    break
                self._changes.append(item)
                added = True
            # A frontier alone wakes nobody: idle watchers stay asleep while other locations
            # change; it is handed over with the next changes (it only makes tokens fresher).
            self._frontier = frontier
            if added or self.overflowed:
                self._signal.notify_all()

    def go_live(self, cursor: int) -> None:
        """Called by the fan-out (under its lock): changes above ``cursor`` are pushed from now on;
        anything buffered before was read from the log."""
        with self._signal:
            self.cursor = cursor
            self._changes.clear()
            self._frontier = None
            self.live = True

    def demote(self) -> None:
        """The fan-out read a range without this location: catch up from the log again."""
        with self._signal:
            self.live = False
            self._signal.notify_all()

    def end(self, error: SimpluError) -> None:
        with self._signal:
            if self.ended is None:
                self.ended = error
            self._signal.notify_all()

    def take(self, timeout: float) -> tuple[list[WatchedChange], Position | None]:
        """The buffered changes and the latest frontier seen, waiting up to ``timeout`` for any."""
        with self._signal:
            if not self._changes and self.ended is None and self.live and not self.overflowed:
                self._signal.wait(timeout)
            taken = list(self._changes)
            self._changes.clear()
            frontier, self._frontier = self._frontier, None
            return taken, frontier


class ShardFanout:
    """The live side of one shard's change feed in this process (see module docstring).

    The listener calls ``covering()`` before it reads a range of the log and ``publish`` after;
    watchers ``join``, catch up from the log, then ``go_live`` at the frontier.
    """

    def __init__(self, shard_id: str) -> None:
        self.shard_id = shard_id
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._frontier: Position | None = None
        self._subscriptions: dict[LocationKey, set[Subscription]] = {}
        self._failure: SimpluError | None = None

    # --- the watcher's side ---

    def join(self, subscription: Subscription) -> None:
        with self._lock:
            if self._failure is not None:
                raise self._failure
            self._subscriptions.setdefault(subscription.location, set()).add(subscription)

    def leave(self, subscription: Subscription) -> None:
        with self._lock:
            found = self._subscriptions.get(subscription.location)
            if found is not None:
                found.discard(subscription)
                if not found:
                    del self._subscriptions[subscription.location]

    def frontier(self, timeout: float) -> Position | None:
        """The current frontier, waiting up to ``timeout`` for the listener's first one."""
        with self._ready:
            if self._frontier is None and self._failure is None:
                self._ready.wait_for(lambda: self._frontier is not None or self._failure is not None, timeout)
            if self._failure is not None:
                raise self._failure
            return self._frontier

    def go_live(self, subscription: Subscription, cursor: int) -> bool:
        """Switch to pushed changes when the watcher has read the log up to the frontier
        (``cursor``); False: the frontier moved on meanwhile, read the log again."""
        with self._lock:
            if self._frontier is None or cursor < self._frontier.sequence:
                return False
            subscription.go_live(cursor)
            return True

    @property
    def watched(self) -> int:
        with self._lock:
            return sum(len(found) for found in self._subscriptions.values())

    # --- the listener's side ---

    def covering(self) -> list[LocationKey]:
        """The locations the listener's next read must include."""
        with self._lock:
            return list(self._subscriptions)

    def publish(
        self, changes: Sequence[WatchedChange], frontier: Position, covered: Sequence[LocationKey]
    ) -> None:
        """The log up to ``frontier`` (``changes``: those of ``covered`` above the previous one,
        in sequence order). A live watcher whose location was not covered (it went live after
        the read began) is sent back to the log for this range."""
        by_location: dict[LocationKey, list[WatchedChange]] = {}
        for item in changes:
            by_location.setdefault(item.location, []).append(item)
        covered_set = set(covered)
        with self._lock:
            if self._frontier is not None and frontier.sequence < self._frontier.sequence:
                return
            self._frontier = frontier
            self._ready.notify_all()
            for location, subscriptions in self._subscriptions.items():
                mine = by_location.get(location, [])
                for subscription in subscriptions:
                    if not subscription.live:
                        continue
                    if location not in covered_set:
                        subscription.demote()
                    else:
                        subscription.push(mine, frontier)

    def fail(self, error: SimpluError) -> None:
        """The feed is gone (the shard unreachable, the server stopping): end every watcher."""
        with self._lock:
            self._failure = error
            self._ready.notify_all()
            everyone = [s for found in self._subscriptions.values() for s in found]
        for subscription in everyone:
            subscription.end(error)

    def end_all(self, error: SimpluError) -> None:
        """End every watcher with ``error`` (server shutdown) without failing the feed."""
        with self._lock:
            everyone = [s for found in self._subscriptions.values() for s in found]
        for subscription in everyone:
            subscription.end(error)


class ChangeFeeds(Protocol):
    """What a stream needs of the shards' change feeds (adapters.change_listener)."""

    def subscribe(self, assignment: ShardAssignment, subscription: Subscription) -> ShardFanout:
        """Join ``subscription`` to the shard's fan-out in this process (its listener started on
        first use) and return the fan-out."""

    def read(
        self, assignment: ShardAssignment, location: LocationKey, after: int, upto: int, limit: int
    ) -> list[WatchedChange]:
        """The location's changes with after < sequence <= upto, in sequence order, at most ``limit``."""

    def oldest_retained(self, assignment: ShardAssignment) -> datetime | None:
        """The shard's clock now minus the log's retention: positions older may have lost changes."""

    def close(self) -> None:
        """Stop every listener."""
