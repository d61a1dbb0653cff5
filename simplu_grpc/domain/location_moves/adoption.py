"""From single-database mode to Citrus: move every location of the single database onto the
shard Citrus assigns it, with the same engine as an operator's move (``simplu-grpc move-to-citrus``).

For each location that has resources in the single database (shard ``default``): register it with
Citrus (which assigns its shard), record a move from the single database to that shard, and run it
to the switch; with ``finalize``, delete the single database's copy of every switched location.
A second run resumes: locations whose move is open continue, switched or finalized ones are skipped.
Locations run one after the other, so the single database serves its tenants meanwhile.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from simplu_grpc.domain.location_moves.model import Move, Phase, Request
from simplu_grpc.domain.location_moves.ports import MoveRecords
from simplu_grpc.domain.location_moves.runner import MoveRunner
from simplu_grpc.domain.placement.shards import ShardAssignment


class LegacyLocations(Protocol):
    def locations(self, shard: ShardAssignment) -> list[tuple[str, str, str]]:
        """(business id, location id, business type) of every location with resources."""
        ...


class Registrar(Protocol):
    def register(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment: ...


@dataclass(frozen=True, slots=True)
class Adopted:
    """One location's outcome."""

    business_id: str
    location_id: str
    target_shard: str
    move_id: str
    phase: Phase
    error: str = ""


def adopt(
    *,
    legacy: ShardAssignment,
    locations: LegacyLocations,
    citrus: Registrar,
    records: MoveRecords,
    runner: MoveRunner,
    finalize: bool = False,
    dry_run: bool = False,
    on_done: Callable[[Adopted], None] = lambda _: None,
    poll_seconds: float = 0.2,
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> list[Adopted]:
    """Move every location of ``legacy`` to its Citrus shard (see module docstring)."""
    existing = {
        (m.business_id, m.location_id): m
        for m in records.list_moves(legacy, business_id=None, open_only=False)
        if m.phase not in (Phase.REVERTED, Phase.FAILED)
    }
    outcomes: list[Adopted] = []
    for business_id, location_id, business_type in locations.locations(legacy):
        move = existing.get((business_id, location_id))
        if dry_run:
            target = move.target_shard if move is not None else "(assigned by Citrus at the run)"
            outcome = Adopted(
                business_id,
                location_id,
                target,
                move.move_id if move else "",
                move.phase if move else Phase.COPYING,
            )
        else:
            if move is None:
                assigned = citrus.register(business_id, location_id, business_type)
                move = records.create(
                    legacy,
                    Move(
                        move_id=new_id(),
                        business_id=business_id,
                        location_id=location_id,
                        source_shard=legacy.shard_id,
                        target_shard=assigned.shard_id,
                    ),
                )
            if finalize and move.phase is Phase.SWITCHED:
                records.request(legacy, move.move_id, Request.FINALIZE)
            move = _run_until_settled(legacy, move, records, runner, poll_seconds)
            outcome = Adopted(
                business_id, location_id, move.target_shard, move.move_id, move.phase, move.error
            )
        outcomes.append(outcome)
        on_done(outcome)
    return outcomes


def _run_until_settled(
    legacy: ShardAssignment, move: Move, records: MoveRecords, runner: MoveRunner, poll_seconds: float
) -> Move:
    """Kick the move and wait until it has nothing left to do here (switched, finalized, failed)."""
    while True:
        runner.kick(legacy.shard_id, move.move_id)
        found = records.find(legacy, move.move_id)
        if found is None:  # pragma: no cover - records are never deleted
            return move
        move = found
        if not move.phase.has_work and move.requested is Request.NONE:
            return move
        time.sleep(poll_seconds)
