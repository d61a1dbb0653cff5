"""The change streams' pure parts: the commit horizon, resume tokens, buffers and the fan-out."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from simplu_grpc.domain.resources.changes import ChangeKind, ResourceChange
from simplu_grpc.domain.resources.model import ResourceKey
from simplu_grpc.domain.watch import (
    CommitHorizon,
    Position,
    ShardFanout,
    Subscription,
    WatchedChange,
    decode_token,
    encode_token,
)
from simplu_grpc.errors import InvalidArgument, Unavailable

NOW = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)


def change(sequence: int, location: str = "main", business: str = "b1") -> WatchedChange:
    return WatchedChange(
        ResourceChange(
            sequence=sequence,
            kind=ChangeKind.CREATED,
            key=ResourceKey(business, location, "patients", f"p{sequence}"),
            version=1,
            paths=(),
            principal="someone",
            change_time=NOW,
        ),
        None,
    )


def test_the_horizon_settles_a_poll_only_when_every_transaction_before_it_ended() -> None:
    horizon = CommitHorizon()
    # Poll 1: sequences up to 10 drawn; the snapshot after says xids below 100 were assigned,
    # and xid 95 still runs (xmin 95): 10 may belong to it.
    horizon.observed(10, 100)
    assert horizon.settle(95) is None
    assert horizon.waiting
    # Poll 2: more drawn (12), later snapshot (xmax 104); 95 still runs.
    horizon.observed(12, 104)
    assert horizon.settle(95) is None
    # 95 ended, but 101 (assigned before poll 2's snapshot) still runs: poll 1 settles, not 2.
    assert horizon.settle(101) == 10
    assert horizon.settle(104) == 12
    assert not horizon.waiting


def test_the_horizon_settles_a_quiet_shard_at_once() -> None:
    horizon = CommitHorizon()
    horizon.observed(7, 50)
    assert horizon.settle(50) == 7  # xmin == xmax: nothing runs


def test_the_horizon_keeps_the_earliest_snapshot_for_an_unchanged_sequence() -> None:
    horizon = CommitHorizon()
    horizon.observed(5, 40)
    horizon.observed(5, 60)  # nothing drawn since: the first snapshot's bound is enough
    assert horizon.settle(40) == 5


def test_a_resume_token_round_trips_and_is_bound_to_its_location() -> None:
    token = encode_token("b1", "main", "shard-01", Position(42, NOW))
    assert decode_token(token, "b1", "main") == ("shard-01", Position(42, NOW))
    with pytest.raises(InvalidArgument, match="another location"):
        decode_token(token, "b1", "annex")
    with pytest.raises(InvalidArgument, match="another location"):
        decode_token(token, "b2", "main")
    for bad in ("", "not a token", "e30", token[:-3], "x" * 5000):
        with pytest.raises(InvalidArgument) as caught:
            decode_token(bad, "b1", "main")
        assert caught.value.violations[0].field == "resume_token"


def test_a_subscription_overflows_past_its_capacity_and_skips_what_it_already_has() -> None:
    subscription = Subscription(("b1", "main"), capacity=2)
    subscription.go_live(cursor=3)
    subscription.push([change(2), change(3), change(4)], Position(4, NOW))
    taken, frontier = subscription.take(0)
    assert [c.change.sequence for c in taken] == [4]
    assert frontier == Position(4, NOW)
    subscription.push([change(5), change(6), change(7)], Position(7, NOW))
    assert subscription.overflowed


def test_the_fanout_pushes_only_a_locations_own_changes_to_live_watchers() -> None:
    fanout = ShardFanout("shard-01")
    main = Subscription(("b1", "main"), capacity=10)
    annex = Subscription(("b1", "annex"), capacity=10)
    catching_up = Subscription(("b1", "main"), capacity=10)
    for subscription in (main, annex, catching_up):
        fanout.join(subscription)
    assert not fanout.go_live(main, 0)  # no frontier yet
    fanout.publish([], Position(5, NOW), [])
    assert fanout.frontier(0) == Position(5, NOW)
    assert not fanout.go_live(main, 4)  # behind the frontier: read the log first
    assert fanout.go_live(main, 5)
    assert fanout.go_live(annex, 5)
    covered = fanout.covering()
    fanout.publish([change(6), change(7, "annex"), change(8)], Position(9, NOW), covered)
    assert [c.change.sequence for c in main.take(0)[0]] == [6, 8]
    assert [c.change.sequence for c in annex.take(0)[0]] == [7]
    assert catching_up.take(0) == ([], None)


def test_a_watcher_live_before_its_location_was_read_goes_back_to_the_log() -> None:
    fanout = ShardFanout("shard-01")
    fanout.publish([], Position(5, NOW), [])
    late = Subscription(("b1", "late"), capacity=10)
    fanout.join(late)
    assert fanout.go_live(late, 5)
    # The listener's read began before "late" joined: its range did not include it.
    fanout.publish([change(6)], Position(6, NOW), [("b1", "main")])
    assert not late.live


def test_a_failed_fanout_ends_its_watchers_and_refuses_new_ones() -> None:
    fanout = ShardFanout("shard-01")
    watcher = Subscription(("b1", "main"), capacity=10)
    fanout.join(watcher)
    error = Unavailable("gone", reason="WATCH_INTERRUPTED")
    fanout.fail(error)
    assert watcher.ended is error
    with pytest.raises(Unavailable):
        fanout.join(Subscription(("b1", "main"), capacity=10))
    with pytest.raises(Unavailable):
        fanout.frontier(0)


def test_watch_streams_stay_below_the_admission_bound() -> None:
    from simplu_grpc.settings import Settings, SettingsError

    base = {"COGNITO_USER_POOL_ID": "us-east-1_x", "COGNITO_CLIENT_ID": "c"}
    assert Settings.from_env(base).watch_max_streams == 128
    assert Settings.from_env({**base, "GRPC_MAX_CONCURRENT_RPCS": "64"}).watch_max_streams == 32
    chosen = Settings.from_env({**base, "GRPC_MAX_CONCURRENT_RPCS": "1024", "WATCH_MAX_STREAMS": "768"})
    assert chosen.watch_max_streams == 768
    with pytest.raises(SettingsError, match="WATCH_MAX_STREAMS"):
        Settings.from_env({**base, "GRPC_MAX_CONCURRENT_RPCS": "100", "WATCH_MAX_STREAMS": "100"})
