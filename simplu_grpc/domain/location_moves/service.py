"""The location-move use cases behind ShardAdmin's Start/Get/List/Revert/FinalizeLocationMove.

The caller's permission (platform admin) is checked by the servicer before any of these runs.
Every answer is read from the durable records on the shards, so any replica answers for any move.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from simplu_grpc.domain.admin.routing import existing_location
from simplu_grpc.domain.business.ports import BusinessRepository
from simplu_grpc.domain.checks import Violations, check_business_id, check_id, check_text
from simplu_grpc.domain.location_moves.model import Move, Phase, Request
from simplu_grpc.domain.location_moves.ports import MoveRecords, Placement
from simplu_grpc.domain.location_moves.runner import MoveRunner
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.errors import FailedPrecondition, InvalidArgument, NotFound, SimpluError

_SHARD_ID_MAX = 200


@dataclass(frozen=True, slots=True)
class MoveListing:
    """ListLocationMoves' answer: the moves found, and the shards that could not be read."""

    moves: list[Move]
    unreachable_shard_ids: list[str]


class LocationMoves:
    """Start, read, revert and finalize moves (see module docstring)."""

    def __init__(
        self,
        *,
        records: MoveRecords,
        placement: Placement,
        runner: MoveRunner,
        businesses: BusinessRepository,
        route_settle_seconds: float = 0.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        # Finalize waits this long after the switch: until then a replica may still read the
        # location on the source from a route it cached before (the routing cache's TTL).
        self._route_settle = timedelta(seconds=route_settle_seconds)
        self._now = now
        self._records = records
        self._placement = placement
        self._runner = runner
        self._businesses = businesses
        self._new_id = new_id

    def start(self, business_id: str, location_id: str, target_shard_id: str) -> Move:
        v = Violations()
        check_business_id(v, "business_id", business_id)
        check_id(v, "location_id", location_id)
        check_text(v, "target_shard_id", target_shard_id, max_length=_SHARD_ID_MAX, required=True)
        v.raise_if_any()
        business = existing_location(self._businesses, business_id, location_id)
        target = self._placement.shard(target_shard_id)
        if target is None:
            raise NotFound(
                f"shard {target_shard_id!r} is unknown to the shard directory",
                metadata={"shard_id": target_shard_id},
            )
        source = self._placement.current(business_id, location_id, business.type.value)
        if source.shard_id == target.shard_id:
            raise FailedPrecondition(
                f"the location already lives on shard {target.shard_id}",
                reason="MOVE_TARGET_IS_SOURCE",
                metadata={"shard_id": target.shard_id},
            )
        for open_move in self._list(business_id=business_id, open_only=True).moves:
            if open_move.location_id == location_id:
                raise FailedPrecondition(
                    f"the location already has an open move ({open_move.phase.value})",
                    reason="MOVE_ALREADY_OPEN",
                    metadata={"move_id": open_move.move_id},
                )
        if not self._placement.can_accept(target.shard_id):
            raise FailedPrecondition(
                f"shard {target.shard_id} cannot take another location (full or inactive)",
                reason="TARGET_SHARD_FULL",
                metadata={"shard_id": target.shard_id},
            )
        move = self._records.create(
            source,
            Move(
                move_id=self._new_id(),
                business_id=business_id,
                location_id=location_id,
                source_shard=source.shard_id,
                target_shard=target.shard_id,
            ),
        )
        self._runner.kick(source.shard_id, move.move_id)
        return move

    def get(self, move_id: str) -> Move:
        return self._find(move_id)[1]

    def list(self, *, business_id: str = "", open_only: bool = False) -> MoveListing:
        if business_id:
            v = Violations()
            check_business_id(v, "business_id", business_id)
            v.raise_if_any()
        return self._list(business_id=business_id or None, open_only=open_only)

    def revert(self, move_id: str) -> Move:
        shard, move = self._find(move_id)
        if move.phase is Phase.REVERTING or move.requested is Request.REVERT:
            return move
        if move.phase not in (Phase.COPYING, Phase.CATCHING_UP, Phase.SWITCHED):
            raise _wrong_phase(move, "revert")
        return self._request(shard.shard_id, move, Request.REVERT)

    def finalize(self, move_id: str) -> Move:
        shard, move = self._find(move_id)
        if move.phase in (Phase.FINALIZING, Phase.FINALIZED) or move.requested is Request.FINALIZE:
            return move
        if move.phase is not Phase.SWITCHED or move.verification is None or not move.verification.matched:
            raise _wrong_phase(move, "finalize")
        settled = (move.switch_time or self._now()) + self._route_settle
        if self._now() < settled:
            raise FailedPrecondition(
                "routes cached before the switch may still send reads to the source; finalize after"
                f" {settled.isoformat()}",
                reason="MOVE_NOT_SETTLED",
                metadata={"move_id": move.move_id, "finalize_after": settled.isoformat()},
            )
        return self._request(shard.shard_id, move, Request.FINALIZE)

    def _request(self, shard_id: str, move: Move, request: Request) -> Move:
        shard = self._placement.shard(shard_id)
        if shard is None:  # pragma: no cover - _find just listed it
            raise NotFound("the move's shard is gone", reason="MOVE_NOT_FOUND")
        self._records.request(shard, move.move_id, request)
        self._runner.kick(shard_id, move.move_id)
        found = self._records.find(shard, move.move_id)
        return found if found is not None else move

    def _find(self, move_id: str) -> tuple[ShardAssignment, Move]:
        _require_move_id(move_id)
        for shard in self._placement.shards():
            try:
                found = self._records.find(shard, move_id)
            except SimpluError:
                continue
            if found is not None:
                return shard, found
        raise NotFound(f"move {move_id!r} not found", reason="MOVE_NOT_FOUND", metadata={"move_id": move_id})

    def _list(self, *, business_id: str | None, open_only: bool) -> MoveListing:
        moves: list[Move] = []
        unreachable: list[str] = []
        for shard in self._placement.shards():
            try:
                moves += self._records.list_moves(shard, business_id=business_id, open_only=open_only)
            except SimpluError:
                unreachable.append(shard.shard_id)
        moves.sort(key=lambda m: (m.create_time is not None, m.create_time), reverse=True)
        return MoveListing(moves, unreachable)


def _require_move_id(move_id: str) -> None:
    if not move_id or len(move_id) > 64 or not move_id.isalnum():
        raise InvalidArgument.field("move_id", "must be a move id as StartLocationMove returned it")


def _wrong_phase(move: Move, action: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"cannot {action} a move in phase {move.phase.value}",
        reason="MOVE_WRONG_PHASE",
        metadata={"move_id": move.move_id, "phase": move.phase.value},
    )
