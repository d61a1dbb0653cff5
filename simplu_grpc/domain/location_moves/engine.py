"""The move engine: one bounded step at a time, each persisted before the next (so any replica
resumes a move where its last step ended).

Forward (``source`` -> ``target``):

* COPYING, stages ``clean`` (delete leftovers of an earlier attempt on the target), ``history``
  (change rows with sequence <= the settled watermark ``w0``), ``resources`` (keyset batches),
  ``claims`` (idempotency claims). Writes continue on the source meanwhile.
* CATCHING_UP: passes over the source's change log after ``applied``; when at most
  ``freeze_lag`` changes are left, the cut-over: fence ``frozen`` on the source, wait out the
  writers that may have missed it, final pass, verification, then the switch (Citrus placement,
  source fence ``moved``). A failed verification unfreezes the source and fails the move.
* SWITCHED waits for an operator: FINALIZE -> FINALIZING (delete the source copy in batches)
  -> FINALIZED; REVERT -> REVERTING.
* REVERTING before the switch: unfreeze the source, delete the target's partial copy. After it:
  the same catch-up and cut-over the other way (target -> source, from the target's watermark at
  the switch), then delete the target's copy -> REVERTED.

The ``switching`` flag is saved before the placement call: a step that died around it is
resumed by asking the directory where the location is, never by guessing.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from simplu_grpc.domain.location_moves.model import Move, Phase, Request, Verification
from simplu_grpc.domain.location_moves.ports import Placement, ShardCopier
from simplu_grpc.domain.placement.shards import ShardAssignment

log = logging.getLogger(__name__)

Save = Callable[[Move], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class MoveLimits:
    """How big each step is."""

    # Rows per copy / catch-up / purge batch: one batch is one statement on each side.
    batch_rows: int = 1000
    # The cut-over starts once at most this many changes are left to apply (the freeze then
    # applies them: its length follows this number, not the write rate).
    freeze_lag: int = 200
    # Idempotency claims are copied again from this long before the last claim copy started: a
    # claim carries its transaction's start time, and commits a little later (a write statement
    # that takes longer than this between start and commit may leave its claim behind: a retry
    # of that create after the switch would then create anew).
    claims_margin_seconds: float = 10.0
    # Catch-up passes copy the newer claims at most this often (the freeze copies the rest).
    claims_every_seconds: float = 5.0

    def __post_init__(self) -> None:
        if (
            self.batch_rows < 1
            or self.freeze_lag < 0
            or min(self.claims_margin_seconds, self.claims_every_seconds) < 0
        ):
            raise ValueError("batch_rows >= 1; freeze_lag, claims_margin_seconds, claims_every_seconds >= 0")


@dataclass(frozen=True, slots=True)
class _Way:
    """One direction of data flow: changes on ``origin`` go to ``destination``."""

    origin: ShardAssignment
    destination: ShardAssignment


class MoveEngine:
    """Runs one step of a move (see module docstring); stateless between steps."""

    def __init__(
        self,
        *,
        copier: ShardCopier,
        placement: Placement,
        limits: MoveLimits = MoveLimits(),
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._copier = copier
        self._placement = placement
        self._limits = limits
        self._now = now
        self._monotonic = monotonic

    def step(
        self, move: Move, source: ShardAssignment, target: ShardAssignment, save: Save
    ) -> tuple[Move, bool]:
        """The move after one step, and whether the step carried out the operator's request."""
        if move.phase is Phase.COPYING:
            return self._copying(move, source, target)
        if move.phase is Phase.CATCHING_UP:
            return self._catching_up(move, _Way(source, target), save)
        if move.phase is Phase.SWITCHED:
            return self._switched(move)
        if move.phase is Phase.FINALIZING:
            return self._finalizing(move, source), False
        if move.phase is Phase.REVERTING:
            return self._reverting(move, source, target, save), False
        return move, False

    # --- forward ---------------------------------------------------------------------------

    def _copying(self, move: Move, source: ShardAssignment, target: ShardAssignment) -> tuple[Move, bool]:
        if move.requested is Request.REVERT:
            return _reverting_from(move, switched=False), True
        p = dict(move.progress)
        stage = p.get("stage", "clean")
        batch = self._limits.batch_rows
        b, loc = move.business_id, move.location_id
        if stage == "clean":
            if self._copier.purge(target, b, loc, limit=batch) >= batch:
                return move, False
            self._copier.refresh_statistics(source)
            return _with(
                move, progress={"stage": "history", "w0": self._copier.settle(source), "after": 0}
            ), False
        if stage == "history":
            copied, last = self._copier.copy_history(
                source, target, b, loc, move_id=move.move_id, after=p["after"], upto=p["w0"], limit=batch
            )
            p = {**p, "after": last} if copied >= batch else {**p, "stage": "resources", "after": None}
            return _with(move, progress=p, changes_copied=move.changes_copied + copied), False
        if stage == "resources":
            copied, key = self._copier.copy_resources(source, target, b, loc, after=p["after"], limit=batch)
            if copied < batch:
                # The target just took the whole location: plan its reads (and the catch-up's
                # lookups) on statistics that know it.
                self._copier.refresh_statistics(target)
                p = {**p, "stage": "claims", "after": None, "claims_since": self._now().timestamp()}
            else:
                p = {**p, "after": key}
            return _with(move, progress=p, rows_copied=move.rows_copied + copied), False
        copied, key = self._copier.copy_request_ids(source, target, b, loc, after=p["after"], limit=batch)
        if copied >= batch:
            return _with(move, progress={**p, "after": key}), False
        progress = {"applied": p["w0"], "claims_since": p["claims_since"]}
        return _with(move, phase=Phase.CATCHING_UP, progress=progress), False

    def _catching_up(self, move: Move, way: _Way, save: Save) -> tuple[Move, bool]:
        if move.progress.get("switching"):
            return self._resume_switch(move, way, forward=True), False
        if move.requested is Request.REVERT:
            return _reverting_from(move, switched=False), True
        move = self._pass(move, way, "applied")
        if move.lag > self._limits.freeze_lag:
            return move, False
        return self._cut_over(move, way, "applied", save, forward=True), False

    def _switched(self, move: Move) -> tuple[Move, bool]:
        if move.requested is Request.FINALIZE:
            return _with(move, phase=Phase.FINALIZING, progress={}), True
        if move.requested is Request.REVERT:
            return _reverting_from(move, switched=True), True
        return move, move.requested is not Request.NONE

    def _finalizing(self, move: Move, source: ShardAssignment) -> Move:
        batch = self._limits.batch_rows
        if self._copier.purge(source, move.business_id, move.location_id, limit=batch) >= batch:
            return move
        return _with(move, phase=Phase.FINALIZED, progress={})

    # --- backward --------------------------------------------------------------------------

    def _reverting(self, move: Move, source: ShardAssignment, target: ShardAssignment, save: Save) -> Move:
        p = move.progress
        stage = p.get("stage", "purge")
        b, loc = move.business_id, move.location_id
        if stage == "unfence":
            # Only a fence this move set can be on the source while it still serves the location.
            self._copier.fence(source, b, loc, None, move.move_id)
            return _with(move, progress={**p, "stage": "purge"})
        if stage == "sync":
            way = _Way(target, source)
            if p.get("switching"):
                return self._resume_switch(move, way, forward=False)
            move = self._pass(move, way, "target_applied")
            if move.lag > self._limits.freeze_lag:
                return move
            return self._cut_over(move, way, "target_applied", save, forward=False)
        batch = self._limits.batch_rows
        if self._copier.purge(target, b, loc, limit=batch) >= batch:
            return move
        end = Phase.FAILED if p.get("then") == "failed" else Phase.REVERTED
        return _with(move, phase=end, progress={}, lag=0)

    # --- shared: catch-up passes and the cut-over -------------------------------------------

    def _batch(self, move: Move, way: _Way, *, after: int, upto: int) -> tuple[int, int, int]:
        """One catch-up batch of (after, upto] from ``way.origin`` to ``way.destination``."""
        return self._copier.catch_up(
            way.origin,
            way.destination,
            move.business_id,
            move.location_id,
            move_id=move.move_id,
            after=after,
            upto=upto,
            limit=self._limits.batch_rows,
        )

    def _pass(self, move: Move, way: _Way, key: str) -> Move:
        """One bounded catch-up batch from ``way.origin`` after ``progress[key]``; updates the lag."""
        upto = self._copier.settle(way.origin)
        changes, rows, last = self._batch(move, way, after=int(move.progress[key]), upto=upto)
        applied = last if changes >= self._limits.batch_rows else upto
        lag = self._copier.pending(way.origin, move.business_id, move.location_id, after=applied)
        progress = {**move.progress, key: applied}
        if (
            self._now().timestamp() - (progress.get("claims_since") or 0.0)
            >= self._limits.claims_every_seconds
        ):
            progress = self._copy_claims(progress, way, move)
        return _with(
            move,
            progress=progress,
            changes_copied=move.changes_copied + changes,
            rows_copied=move.rows_copied + rows,
            lag=lag,
        )

    def _drain_changes(self, move: Move, way: _Way, key: str) -> Move:
        """Apply every change of the (frozen) origin: nothing is left to apply afterwards."""
        upto = self._copier.settle(way.origin)
        applied = int(move.progress[key])
        changes_total = rows_total = 0
        while True:
            changes, rows, last = self._batch(move, way, after=applied, upto=upto)
            changes_total += changes
            rows_total += rows
            if changes < self._limits.batch_rows:
                break
            applied = last
        return _with(
            move,
            progress=self._copy_claims({**move.progress, key: upto}, way, move),
            changes_copied=move.changes_copied + changes_total,
            rows_copied=move.rows_copied + rows_total,
            lag=0,
        )

    def _copy_claims(self, progress: dict[str, Any], way: _Way, move: Move) -> dict[str, Any]:
        """Copy the idempotency claims made since the last copy (with the margin); the progress
        with the new ``claims_since``."""
        started = self._now().timestamp()
        since = progress.get("claims_since")
        after: list[str] | None = None
        while True:
            copied, after = self._copier.copy_request_ids(
                way.origin,
                way.destination,
                move.business_id,
                move.location_id,
                after=after,
                limit=self._limits.batch_rows,
                since=None if since is None else since - self._limits.claims_margin_seconds,
            )
            if copied < self._limits.batch_rows:
                return {**progress, "claims_since": started}

    def _cut_over(self, move: Move, way: _Way, key: str, save: Save, *, forward: bool) -> Move:
        """Freeze the origin, apply the rest, verify, and route the location to the destination."""
        b, loc = move.business_id, move.location_id
        # The lease is renewed (or found lost) before anything is frozen: the freeze and the
        # switch run within one fresh lease, never beside another replica's step.
        save(move)
        started = self._monotonic()
        self._copier.fence(way.origin, b, loc, "frozen", move.move_id)
        try:
            self._copier.drain_writers(way.origin)
            move = self._drain_changes(move, way, key)
            leaving = self._copier.checksum(way.origin, b, loc)
            arriving = self._copier.checksum(way.destination, b, loc)
            # Named after the move's shards, whichever way the data flows (a revert flows back).
            verification = Verification(
                source=leaving if forward else arriving,
                target=arriving if forward else leaving,
                verify_time=self._now(),
            )
        except BaseException:
            self._copier.fence(way.origin, b, loc, None, move.move_id)
            raise
        if not verification.matched:
            self._copier.fence(way.origin, b, loc, None, move.move_id)
            log.error("move %s: verification failed (%s)", move.move_id, verification)
            error = "verification failed: the copies differ; the location stays where it was"
            if forward:
                failed = _reverting_from(move, switched=False)
                return _with(
                    failed,
                    verification=verification,
                    error=error,
                    progress={**failed.progress, "then": "failed"},
                )
            return _with(
                move,
                phase=Phase.SWITCHED,
                verification=verification,
                error=error,
                progress={k: v for k, v in move.progress.items() if k == "target_seq"},
            )
        extra: dict[str, Any] = {"switching": True}
        if forward:
            # The destination's change log from here on holds the writes a revert carries back.
            extra["target_seq"] = self._copier.settle(way.destination)
        move = _with(move, verification=verification, progress={**move.progress, **extra})
        save(move)
        self._copier.fence(way.destination, b, loc, None, move.move_id)
        try:
            self._placement.place(b, loc, way.destination.shard_id)
        except BaseException:
            return self._resume_switch(move, way, forward=forward, failure=True)
        return self._switched_to(move, way, forward=forward, started=started)

    def _resume_switch(self, move: Move, way: _Way, *, forward: bool, failure: bool = False) -> Move:
        """A cut-over stopped around the placement call: finish it or undo it, by what the
        directory says now (raises when the directory cannot be asked: the origin stays frozen
        and the next step asks again)."""
        current = self._placement.current(move.business_id, move.location_id, "")
        if current.shard_id == way.destination.shard_id:
            return self._switched_to(move, way, forward=forward, started=None)
        self._copier.fence(way.origin, move.business_id, move.location_id, None, move.move_id)
        progress = {k: v for k, v in move.progress.items() if k != "switching"}
        log.warning(
            "move %s: the switch did not happen (%s); catching up again",
            move.move_id,
            "placement failed" if failure else "resumed",
        )
        return _with(move, progress=progress)

    def _switched_to(self, move: Move, way: _Way, *, forward: bool, started: float | None) -> Move:
        b, loc = move.business_id, move.location_id
        self._copier.fence(way.destination, b, loc, None, move.move_id)
        self._copier.fence(way.origin, b, loc, "moved", move.move_id)
        self._placement.forget_route(b, loc)
        frozen_ms = None if started is None else int((self._monotonic() - started) * 1000)
        if forward:
            return _with(
                move,
                phase=Phase.SWITCHED,
                progress={
                    "target_seq": move.progress["target_seq"],
                    "target_applied": move.progress["target_seq"],
                },
                switch_time=self._now(),
                freeze_millis=frozen_ms if frozen_ms is not None else move.freeze_millis,
                lag=0,
            )
        return _with(move, progress={"stage": "purge"}, lag=0)


def _with(move: Move, **changes: Any) -> Move:
    return dataclasses.replace(move, **changes)


def _reverting_from(move: Move, *, switched: bool) -> Move:
    """The REVERTING phase's first stage: catch the origin up first after a switch, else unfence."""
    if switched:
        progress = {
            "stage": "sync",
            # The target's claims since the switch go back too.
            "claims_since": move.switch_time.timestamp() if move.switch_time is not None else None,
            "target_seq": move.progress["target_seq"],
            "target_applied": move.progress.get("target_applied", move.progress["target_seq"]),
        }
    else:
        progress = {"stage": "unfence"}
    return _with(move, phase=Phase.REVERTING, progress=progress, error="")
