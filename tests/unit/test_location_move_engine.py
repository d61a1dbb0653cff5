"""The move engine's decisions against in-memory shards: phases, operator requests, the switch
and its resumption (the SQL side is covered by tests/integration/test_location_moves.py)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from simplu_grpc.domain.location_moves.engine import MoveEngine, MoveLimits
from simplu_grpc.domain.location_moves.model import Checksum, Move, Phase, Request
from simplu_grpc.domain.placement.shards import ShardAssignment

SOURCE = ShardAssignment(shard_id="s1", connection_string="")
TARGET = ShardAssignment(shard_id="s2", connection_string="")


class Shards:
    """Two in-memory shards: rows by key, a change log of (sequence, key), fences."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, int]] = {"s1": {}, "s2": {}}
        self.log: dict[str, list[tuple[int, str]]] = {"s1": [], "s2": []}
        self.fences: dict[str, str | None] = {"s1": None, "s2": None}
        self.placed = "s1"
        self.place_fails = False
        self.corrupt_target = False

    def write(self, shard: str, key: str, value: int) -> None:
        assert self.fences[shard] is None, f"{shard} is fenced"
        self.rows[shard][key] = value
        self.log[shard].append((len(self.log[shard]) + 1, key))

    # --- ShardCopier ---
    def refresh_statistics(self, shard: ShardAssignment) -> None:
        pass

    def settle(self, shard: ShardAssignment) -> int:
        return len(self.log[shard.shard_id])

    def copy_history(self, source, target, b, loc, *, move_id, after, upto, limit):
        rows = [e for e in self.log[source.shard_id] if after < e[0] <= upto][:limit]
        return len(rows), rows[-1][0] if rows else None

    def copy_resources(self, source, target, b, loc, *, after, limit):
        keys = sorted(k for k in self.rows[source.shard_id] if after is None or k > after[1])[:limit]
        for key in keys:
            self.rows[target.shard_id][key] = self.rows[source.shard_id][key]
        return len(keys), ["t", keys[-1]] if keys else None

    def copy_request_ids(self, *args, **kwargs):
        return 0, None

    def catch_up(self, source, target, b, loc, *, move_id, after, upto, limit):
        changes = [e for e in self.log[source.shard_id] if after < e[0] <= upto][:limit]
        for _, key in changes:
            if key in self.rows[source.shard_id]:
                self.rows[target.shard_id][key] = self.rows[source.shard_id][key]
            else:
                self.rows[target.shard_id].pop(key, None)
        return len(changes), len(changes), changes[-1][0] if changes else after

    def pending(self, shard, b, loc, *, after):
        return len([e for e in self.log[shard.shard_id] if e[0] > after])

    def fence(self, shard, b, loc, state, move_id):
        self.fences[shard.shard_id] = state

    def drain_writers(self, shard: ShardAssignment) -> None:
        pass

    def checksum(self, shard, b, loc):
        rows = dict(self.rows[shard.shard_id])
        if self.corrupt_target and shard.shard_id == "s2":
            rows["bad"] = 1
        return Checksum(len(rows), str(sorted(rows.items())))

    def purge(self, shard, b, loc, *, limit):
        gone = list(self.rows[shard.shard_id])[:limit]
        for key in gone:
            del self.rows[shard.shard_id][key]
        return len(gone)

    # --- Placement ---
    def current(self, b: str, loc: str, kind: str) -> ShardAssignment:
        return SOURCE if self.placed == "s1" else TARGET

    def place(self, b: str, loc: str, shard_id: str) -> None:
        if self.place_fails:
            raise RuntimeError("Citrus down")
        self.placed = shard_id

    def forget_route(self, b: str, loc: str) -> None:
        pass


def run(engine: MoveEngine, move: Move, *, until: Phase, steps: int = 100) -> Move:
    for _ in range(steps):
        move, consumed = engine.step(move, SOURCE, TARGET, lambda _m: None)
        if consumed:
            move = dataclasses.replace(move, requested=Request.NONE)
        if move.phase is until:
            return move
    raise AssertionError(f"stuck in {move.phase} {move.progress}")


@pytest.fixture
def shards() -> Shards:
    s = Shards()
    for i in range(25):
        s.write("s1", f"k{i:02d}", i)
    return s


def engine_for(shards: Shards) -> MoveEngine:
    return MoveEngine(
        copier=shards,
        placement=shards,
        limits=MoveLimits(batch_rows=10, freeze_lag=3),
        now=lambda: datetime(2026, 1, 1, tzinfo=UTC),
    )


def new_move() -> Move:
    return Move(move_id="m", business_id="b", location_id="l", source_shard="s1", target_shard="s2")


def test_a_move_copies_catches_up_and_switches_with_the_source_fenced(shards: Shards) -> None:
    """Writes between steps are carried over; at the switch both sides verify equal, Citrus names
    the target, and the source refuses the location ('moved')."""
    engine = engine_for(shards)
    move = run(engine, new_move(), until=Phase.CATCHING_UP)
    shards.write("s1", "k03", 300)
    shards.write("s1", "new", 1)
    del shards.rows["s1"]["k04"]
    shards.log["s1"].append((len(shards.log["s1"]) + 1, "k04"))
    move = run(engine, move, until=Phase.SWITCHED)
    assert move.verification is not None
    assert move.verification.matched
    assert shards.rows["s2"] == shards.rows["s1"]
    assert (shards.placed, shards.fences["s1"], shards.fences["s2"]) == ("s2", "moved", None)


def test_finalize_deletes_the_source_copy_and_revert_carries_target_writes_back(shards: Shards) -> None:
    """FINALIZE empties the source; REVERT after the switch brings the target's writes back."""
    engine = engine_for(shards)
    switched = run(engine, new_move(), until=Phase.SWITCHED)
    shards.write("s2", "on-target", 7)
    reverted = run(engine, dataclasses.replace(switched, requested=Request.REVERT), until=Phase.REVERTED)
    assert reverted.verification is not None
    assert reverted.verification.matched
    assert shards.rows["s1"]["on-target"] == 7
    assert (shards.placed, shards.fences["s1"], shards.fences["s2"], shards.rows["s2"]) == (
        "s1",
        None,
        "moved",
        {},
    )

    fresh = Shards()
    fresh.write("s1", "a", 1)
    engine = engine_for(fresh)
    switched = run(engine, new_move(), until=Phase.SWITCHED)
    run(engine, dataclasses.replace(switched, requested=Request.FINALIZE), until=Phase.FINALIZED)
    assert fresh.rows["s1"] == {}
    assert fresh.rows["s2"] == {"a": 1}


def test_a_failed_verification_unfreezes_the_source_and_fails_the_move(shards: Shards) -> None:
    """Copies that differ never switch: the source is writable again and the target copy is deleted."""
    shards.corrupt_target = True
    failed = run(engine_for(shards), new_move(), until=Phase.FAILED)
    assert failed.verification is not None
    assert not failed.verification.matched
    assert (shards.placed, shards.fences["s1"], shards.rows["s2"]) == ("s1", None, {})


def test_a_failed_placement_call_is_settled_by_asking_the_directory(shards: Shards) -> None:
    """Citrus failing at the switch: the location stays on the source, unfrozen; the move retries."""
    engine = engine_for(shards)
    move = run(engine, new_move(), until=Phase.CATCHING_UP)
    shards.place_fails = True
    move, _ = engine.step(move, SOURCE, TARGET, lambda _m: None)
    move, _ = engine.step(move, SOURCE, TARGET, lambda _m: None)
    assert move.phase is Phase.CATCHING_UP
    assert "switching" not in move.progress
    assert (shards.placed, shards.fences["s1"]) == ("s1", None)
    shards.place_fails = False
    assert run(engine, move, until=Phase.SWITCHED).phase is Phase.SWITCHED


def test_revert_before_the_switch_abandons_the_move(shards: Shards) -> None:
    """REVERT while copying: the target's partial copy goes, the source stays as it was."""
    engine = engine_for(shards)
    move, _ = engine.step(new_move(), SOURCE, TARGET, lambda _m: None)
    move, _ = engine.step(move, SOURCE, TARGET, lambda _m: None)
    reverted = run(engine, dataclasses.replace(move, requested=Request.REVERT), until=Phase.REVERTED)
    assert reverted.phase is Phase.REVERTED
    assert shards.rows["s2"] == {}
    assert len(shards.rows["s1"]) == 25
    assert shards.fences["s1"] is None
