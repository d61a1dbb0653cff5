"""WatchResources: who may watch, from where, and the stream itself (catch-up, then live).

``WatchOps.open`` does everything a caller can get wrong before the stream starts, in the
ResourceService order: input shape, then permission (read on every watched type) BEFORE
existence, then the resume token (its location, its shard, its age). The ``Watch`` it returns
is the stream: its first event says the watch is established; then it reads the change log
from the start position up to the shard's frontier (``domain.watch``) and goes live on the
shard's fan-out, going back to the log whenever the fan-out says so. Permission is checked
again every ``recheck_seconds`` through the business cache, so a removed member's stream ends
with PERMISSION_DENIED within the cache's TTL. A stream ends with a resume token in its error
metadata when its buffer overflows (a slow reader) or the server stops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from simplu_grpc import context
from simplu_grpc.domain.auth.authz import Authorizer
from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.domain.business.model import Business
from simplu_grpc.domain.placement.routing import RoutingCache
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.resources.catalog import (
    KNOWN_RESOURCE_TYPES,
    catalog_types,
    require_known_type,
    require_resource_type,
)
from simplu_grpc.domain.resources.validation import validate_tenant
from simplu_grpc.domain.watch import (
    ChangeFeeds,
    Position,
    ShardFanout,
    Subscription,
    WatchedChange,
    decode_token,
    encode_token,
)
from simplu_grpc.errors import (
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    SimpluError,
    Unavailable,
)

# What a stream yields: a change (None for the first event) and the resume token after it.
WatchEvent = tuple[WatchedChange | None, str]


class BusinessLookup(Protocol):
    def get(self, business_id: str) -> Business | None: ...


@dataclass(frozen=True, slots=True)
class WatchLimits:
    """How many streams, how much each may buffer, how often permission is re-checked."""

    max_streams: int = 1000
    buffer_size: int = 1000
    recheck_seconds: float = 30.0
    read_batch: int = 500
    # How long a stream waits for a shard's first frontier (its listener connecting).
    ready_seconds: float = 20.0
    # The deadline of each catch-up read of the log (a stream itself has none).
    read_seconds: float = 10.0


class WatchOps:
    """Opens streams and ends them all at shutdown (see module docstring)."""

    def __init__(
        self,
        *,
        businesses: BusinessLookup,
        authorizer: Authorizer,
        routing: RoutingCache,
        feeds: ChangeFeeds,
        limits: WatchLimits = WatchLimits(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._businesses = businesses
        self._authorizer = authorizer
        self._routing = routing
        self._feeds = feeds
        self.feeds = feeds  # for tests and the bench: the listeners behind the streams
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._active: set[Watch] = set()
        self._closing = False

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._active)

    def watches(self) -> list[Watch]:
        with self._lock:
            return list(self._active)

    def open(
        self, *, business_id: str, location_id: str, resource_types: Sequence[str], resume_token: str
    ) -> Watch:
        validate_tenant(business_id, location_id)
        named = tuple(resource_types)
        for index, resource_type in enumerate(named):
            require_known_type(resource_type, f"resource_types[{index}]")
        if len(set(named)) != len(named):
            raise InvalidArgument.field("resource_types", "names a type twice")
        principal = context.principal()
        business, readable = self._readable(principal, business_id, location_id, named)
        for index, resource_type in enumerate(named):
            require_resource_type(business.type.value, resource_type, f"resource_types[{index}]")
        self._refuse_when_full()
        assignment = self._routing.resolve(business.id, location_id, business.type.value).assignment
        start: Position | None = None
        if resume_token:
            shard_id, start = decode_token(resume_token, business_id, location_id)
            oldest = self._feeds.oldest_retained(assignment)
            if shard_id != assignment.shard_id or (oldest is not None and start.time < oldest):
                raise FailedPrecondition(
                    "resume_token is too old: the change log no longer holds every change after it"
                    " (or the location moved to another shard). List the resources again"
                    " (ListResources) and start a new watch without resume_token",
                    reason="RESUME_TOKEN_EXPIRED",
                )
        return Watch(
            self,
            principal=principal,
            business_id=business_id,
            location_id=location_id,
            resource_types=readable,
            named=bool(named),
            assignment=assignment,
            start=start,
        )

    def shutdown(self) -> None:
        """End every stream with WATCH_INTERRUPTED (and its resume token); refuse new ones."""
        with self._lock:
            self._closing = True
            watches = list(self._active)
        for watch in watches:
            watch.interrupt(
                Unavailable(
                    "the server is shutting down: resume on another replica with the resume_token"
                    " in this error's metadata",
                    reason="WATCH_INTERRUPTED",
                )
            )

    # --- used by Watch ---

    def _readable(
        self, principal: Principal, business_id: str, location_id: str, named: tuple[str, ...]
    ) -> tuple[Business, tuple[str, ...]]:
        known = self._businesses.get(business_id)
        if named:
            candidates = named
        elif known is not None:
            candidates = tuple(sorted(catalog_types(known.type.value)))
        else:
            candidates = tuple(sorted(KNOWN_RESOURCE_TYPES))
        return self._authorizer.require_readable_types(
            principal,
            known,
            business_id,
            location_id=location_id,
            resource_types=candidates,
            all_required=bool(named),
        )

    def _refuse_when_full(self) -> None:
        with self._lock:
            closing, full = self._closing, len(self._active) >= self.limits.max_streams
        if closing:
            raise Unavailable(
                "the server is shutting down: watch on another replica", reason="WATCH_INTERRUPTED"
            )
        if full:
            raise ResourceExhausted(
                f"this server already carries {self.limits.max_streams} watch streams; retry later",
                reason="WATCH_LIMIT",
                metadata={"max_streams": str(self.limits.max_streams)},
            )

    def _started(self, watch: Watch) -> None:
        with self._lock:
            if self._closing:
                raise Unavailable(
                    "the server is shutting down: watch on another replica", reason="WATCH_INTERRUPTED"
                )
            self._active.add(watch)

    def _ended(self, watch: Watch) -> None:
        with self._lock:
            self._active.discard(watch)


def _shutting_down() -> Unavailable:
    return Unavailable("the server is shutting down: watch on another replica", reason="WATCH_INTERRUPTED")


class Watch:
    """One stream; iterate it once (see module docstring)."""

    def __init__(
        self,
        ops: WatchOps,
        *,
        principal: Principal,
        business_id: str,
        location_id: str,
        resource_types: tuple[str, ...],
        named: bool,
        assignment: ShardAssignment,
        start: Position | None,
    ) -> None:
        self._ops = ops
        self._principal = principal
        self._location = (business_id, location_id)
        self._types = frozenset(resource_types)
        self._named = named
        self._assignment = assignment
        self._position = start
        self._subscription = Subscription(self._location, capacity=ops.limits.buffer_size)
        self._fanout: ShardFanout | None = None
        self._counted = False
        self._released = False
        self._released_lock = threading.Lock()

    @property
    def live(self) -> bool:
        """Fed by the shard's fan-out (not reading the log)."""
        return self._subscription.live

    @property
    def overflowed(self) -> bool:
        """Its reader fell behind by more than its buffer (it ends when next it runs)."""
        return self._subscription.overflowed

    def interrupt(self, error: SimpluError) -> None:
        self._subscription.end(error)

    def release(self) -> None:
        """Leave the fan-out and stop counting against the limit (idempotent). Also called when
        the call ends: grpc may drop a cancelled stream's iterator without finishing it."""
        with self._released_lock:
            self._released = True
            fanout, self._fanout = self._fanout, None
            counted, self._counted = self._counted, False
        if fanout is not None:
            fanout.leave(self._subscription)
        if counted:
            self._ops._ended(self)

    def __iter__(self) -> Iterator[WatchEvent]:
        ops = self._ops
        ops._started(self)
        with self._released_lock:
            self._counted = not self._released
        if not self._counted:  # the call ended before its first message
            ops._ended(self)
            return
        try:
            fanout = ops._feeds.subscribe(self._assignment, self._subscription)
            with self._released_lock:
                if not self._released:
                    self._fanout = fanout
            if self._fanout is None:  # the call ended meanwhile
                fanout.leave(self._subscription)
                return
            frontier = fanout.frontier(ops.limits.ready_seconds)
            if frontier is None:
                raise Unavailable(
                    f"the change feed of shard {self._assignment.shard_id} is not ready; retry",
                    reason="WATCH_INTERRUPTED",
                )
            if self._position is None:
                self._position = frontier
            yield None, self._token()
            checked = ops._clock()
            while True:
                yield from self._catch_up(fanout)
                while self._subscription.live:
                    self._raise_if_ended()
                    if ops._clock() - checked >= ops.limits.recheck_seconds:
                        ops._readable(self._principal, *self._location, tuple(sorted(self._types)))
                        checked = ops._clock()
                    changes, frontier = self._subscription.take(ops.limits.recheck_seconds)
                    self._raise_if_ended()
                    for item in changes:
                        yield from self._deliver(item)
                    if frontier is not None:
                        self._advance(frontier)
        finally:
            self.release()

    def _catch_up(self, fanout: ShardFanout) -> Iterator[WatchEvent]:
        """Read the log from the position up to the frontier, until the fan-out takes over."""
        ops = self._ops
        while True:
            self._raise_if_ended()
            frontier = fanout.frontier(ops.limits.ready_seconds)
            if frontier is None or self._position is None:
                raise Unavailable("the change feed is not ready; retry", reason="WATCH_INTERRUPTED")
            while self._position.sequence < frontier.sequence:
                with context.bind(deadline=context.Deadline.after(ops.limits.read_seconds)):
                    rows = ops._feeds.read(
                        self._assignment,
                        self._location,
                        self._position.sequence,
                        frontier.sequence,
                        ops.limits.read_batch,
                    )
                for item in rows:
                    yield from self._deliver(item)
                self._raise_if_ended()
                if len(rows) < ops.limits.read_batch:
                    self._advance(frontier)
            if fanout.go_live(self._subscription, self._position.sequence):
                return

    def _deliver(self, item: WatchedChange) -> Iterator[WatchEvent]:
        change = item.change
        if self._position is not None and change.sequence <= self._position.sequence:
            return  # already behind the stream (read from the log before it went live)
        self._position = Position(change.sequence, change.change_time)
        if change.key.resource_type in self._types:
            yield item, self._token()

    def _advance(self, frontier: Position) -> None:
        if self._position is None or frontier.sequence > self._position.sequence:
            self._position = frontier

    def _token(self) -> str:
        assert self._position is not None
        return encode_token(*self._location, self._assignment.shard_id, self._position)

    def _raise_if_ended(self) -> None:
        subscription = self._subscription
        if subscription.overflowed:
            raise ResourceExhausted(
                f"the stream was not read fast enough: more than {subscription.capacity} changes waited;"
                " resume with the resume_token in this error's metadata",
                reason="WATCH_TOO_SLOW",
                metadata={"resume_token": self._token(), "buffer_size": str(subscription.capacity)},
            )
        ended = subscription.ended
        if ended is not None:
            metadata = {**ended.metadata, "resume_token": self._token()} if self._position else ended.metadata
            raise type(ended)(ended.message, reason=ended.reason, metadata=metadata)
