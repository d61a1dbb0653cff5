"""What the location-move engine needs from the outside world; adapters implement these.

Shards are named by ``ShardAssignment`` (id + connection string); the move record lives on the
move's source shard.
"""

from __future__ import annotations

from typing import Protocol

from simplu_grpc.domain.location_moves.model import Checksum, Move, Request
from simplu_grpc.domain.placement.shards import ShardAssignment


class MoveRecords(Protocol):
    """Durable move records on a shard, with a lease so one replica runs a move at a time."""

    def create(self, shard: ShardAssignment, move: Move) -> Move:
        """Insert; FailedPrecondition (MOVE_ALREADY_OPEN) when the location has an open move there."""
        ...

    def find(self, shard: ShardAssignment, move_id: str) -> Move | None: ...

    def list_moves(
        self, shard: ShardAssignment, *, business_id: str | None, open_only: bool
    ) -> list[Move]: ...

    def claim(self, shard: ShardAssignment, move_id: str, *, owner: str, lease_seconds: float) -> Move | None:
        """Take (or renew) the lease and return the current record; None when another owner
        holds an unexpired lease or the move has nothing to do."""
        ...

    def save(self, shard: ShardAssignment, move: Move, *, owner: str, consumed: bool) -> bool:
        """Write the engine's progress if ``owner`` still holds the lease; ``consumed`` clears the
        operator's request. False when the lease was lost (another replica took over)."""
        ...

    def release(self, shard: ShardAssignment, move_id: str, *, owner: str) -> None: ...

    def request(self, shard: ShardAssignment, move_id: str, request: Request) -> None:
        """Record an operator's request (revert, finalize) for the engine's next step."""
        ...

    def claimable(self) -> list[tuple[str, str]]:
        """(source shard id, move id) of moves with work to do whose lease has expired (a dead
        replica's, or none), on the shards this replica already works with."""
        ...


class ShardCopier(Protocol):
    """The data side of a move: copy, catch up, fence, verify, purge one location's rows."""

    def refresh_statistics(self, shard: ShardAssignment) -> None:
        """Refresh the planner's statistics of the shard's resource tables (after a bulk copy the
        target's are stale; a freshly filled source may have none)."""
        ...

    def settle(self, shard: ShardAssignment) -> int:
        """A change-log sequence every change at or below which has committed or rolled back."""
        ...

    def copy_history(
        self,
        source: ShardAssignment,
        target: ShardAssignment,
        business_id: str,
        location_id: str,
        *,
        move_id: str,
        after: int,
        upto: int,
        limit: int,
    ) -> tuple[int, int | None]:
        """Copy up to ``limit`` change rows in (after, upto]; (copied, last sequence or None when done)."""
        ...

    def copy_resources(
        self,
        source: ShardAssignment,
        target: ShardAssignment,
        business_id: str,
        location_id: str,
        *,
        after: list[str] | None,
        limit: int,
    ) -> tuple[int, list[str] | None]:
        """Upsert up to ``limit`` resource rows after the key (type, id); (copied, last key or None
        when done)."""
        ...

    def copy_request_ids(
        self,
        source: ShardAssignment,
        target: ShardAssignment,
        business_id: str,
        location_id: str,
        *,
        after: list[str] | None,
        limit: int,
        since: float | None = None,
    ) -> tuple[int, list[str] | None]:
        """Copy idempotency claims (all, or those made since the epoch time ``since``) in key order;
        (copied, last key)."""
        ...

    def catch_up(
        self,
        source: ShardAssignment,
        target: ShardAssignment,
        business_id: str,
        location_id: str,
        *,
        move_id: str,
        after: int,
        upto: int,
        limit: int,
    ) -> tuple[int, int, int]:
        """Apply up to ``limit`` source changes in (after, upto]: copy the change rows and make the
        target's row of every key they touch equal to the source's current one. Returns
        (changes copied, rows written, last sequence applied)."""
        ...

    def pending(self, shard: ShardAssignment, business_id: str, location_id: str, *, after: int) -> int:
        """Changes of the location after the sequence ``after`` (bounded count)."""
        ...

    def fence(
        self, shard: ShardAssignment, business_id: str, location_id: str, state: str | None, move_id: str
    ) -> None:
        """Set the location's fence on the shard ('frozen', 'moved') or clear it (None)."""
        ...

    def drain_writers(self, shard: ShardAssignment) -> None:
        """Return once no write that could have missed a fence set before this call can commit."""
        ...

    def checksum(self, shard: ShardAssignment, business_id: str, location_id: str) -> Checksum: ...

    def purge(self, shard: ShardAssignment, business_id: str, location_id: str, *, limit: int) -> int:
        """Delete up to ``limit`` of the location's rows (resources, changes, claims); 0 when none left."""
        ...


class Placement(Protocol):
    """The shard directory as a move sees it (Citrus, or the single database)."""

    def current(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment:
        """Where the directory routes the location now (asked, not cached)."""
        ...

    def shard(self, shard_id: str) -> ShardAssignment | None: ...

    def shards(self) -> list[ShardAssignment]: ...

    def can_accept(self, shard_id: str) -> bool: ...

    def place(self, business_id: str, location_id: str, shard_id: str) -> None:
        """Route the location to ``shard_id`` for every replica."""
        ...

    def forget_route(self, business_id: str, location_id: str) -> None:
        """Drop this replica's cached route (the next request asks the directory)."""
        ...
