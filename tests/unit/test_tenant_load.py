"""TenantLoad: bounded memory whatever the number of tenants, heavy hitters kept, windows by minute."""

from __future__ import annotations

import random

import pytest

from simplu_grpc.domain.admin.tenant_load import BUCKET_SECONDS, WINDOW_MINUTES_MAX, LoadOrder, TenantLoad
from tests.fixtures.clock import FakeClock

MS = 1_000_000


def call(
    load: TenantLoad,
    location: str,
    *,
    ms: int = 1,
    shard: str = "s1",
    business: str = "b1",
    rows_read: int = 1,
    rows_written: int = 0,
    error: bool = False,
) -> None:
    load.record(
        shard,
        business,
        location,
        shard_ns=ms * MS,
        rows_read=rows_read,
        rows_written=rows_written,
        error=error,
    )


def test_size_stays_at_k_with_100000_distinct_locations() -> None:
    """100,000 distinct locations in one minute: the sketch holds K entries, and the three
    heavy locations mixed into the stream are the top three, in order, with their shard time
    counted in full (space-saving never under-counts a kept entry)."""
    clock = FakeClock(start=6000.0)
    load = TenantLoad(capacity=100, clock=clock)
    # Calls of 1 ms each. Space-saving keeps every tenant above total/K (112,000 / 100 ms here)
    # and over-counts none by more than that, so these three are the top three, in this order.
    heavy = {"heavy-a": 6000, "heavy-b": 4000, "heavy-c": 2000}
    stream = [f"loc-{i}" for i in range(100_000)]
    for name, calls in heavy.items():
        stream += [name] * calls
    random.Random(7).shuffle(stream)
    for location in stream:
        call(load, location)
    assert load.current_size() == 100
    assert load.size() == 100
    report = load.top(minutes=1, limit=3)
    assert [t.location_id for t in report.tenants] == ["heavy-a", "heavy-b", "heavy-c"]
    for tenant in report.tenants:
        assert tenant.shard_ns >= heavy[tenant.location_id] * MS
        assert tenant.shard_ns - tenant.overcount_ns <= heavy[tenant.location_id] * MS
        assert tenant.requests <= heavy[tenant.location_id]
    assert not report.exact
    assert report.capacity == 100


def test_size_stays_bounded_across_minutes() -> None:
    """Minute after minute of new tenants: never more than K per minute for the minutes kept."""
    clock = FakeClock(start=0.0)
    load = TenantLoad(capacity=50, clock=clock)
    for minute in range(40):
        for i in range(500):
            call(load, f"m{minute}-{i}")
        clock.advance(BUCKET_SECONDS)
        assert load.size() <= 50 * (WINDOW_MINUTES_MAX + 1)
    assert load.current_size() <= 50


def test_below_capacity_every_figure_is_exact() -> None:
    """Fewer tenants than K: counts, errors, rows and shard time are exact and ordered per request."""
    load = TenantLoad(capacity=10, clock=FakeClock())
    for _ in range(3):
        call(load, "a", ms=5, rows_read=2)
    call(load, "b", ms=1, rows_written=1, error=True)
    call(load, "b", ms=1, rows_written=1)
    report = load.top(minutes=1)
    assert report.exact
    by_location = {t.location_id: t for t in report.tenants}
    a, b = by_location["a"], by_location["b"]
    assert (a.requests, a.errors, a.rows_read, a.rows_written, a.shard_ns) == (3, 0, 6, 0, 15 * MS)
    assert (b.requests, b.errors, b.rows_read, b.rows_written, b.shard_ns) == (2, 1, 2, 2, 2 * MS)
    assert a.overcount_ns == b.overcount_ns == 0
    assert [t.location_id for t in load.top(minutes=1, order=LoadOrder.ERRORS).tenants] == ["b", "a"]
    assert [t.location_id for t in load.top(minutes=1, order=LoadOrder.REQUESTS).tenants] == ["a", "b"]


def test_windows_cover_the_last_minutes_and_older_ones_are_dropped() -> None:
    """A call 3 minutes ago is in the 5- and 15-minute windows, not the 1-minute one; after 16
    minutes it is gone from all."""
    clock = FakeClock(start=60_000.0)
    load = TenantLoad(capacity=10, clock=clock)
    call(load, "old")
    clock.advance(3 * BUCKET_SECONDS)
    call(load, "new")
    names = {m: [t.location_id for t in load.top(minutes=m).tenants] for m in (1, 5, 15)}
    assert names == {1: ["new"], 5: ["new", "old"], 15: ["new", "old"]}
    one = load.top(minutes=1)
    assert clock.now - one.start >= BUCKET_SECONDS  # at least the last full minute
    clock.advance(16 * BUCKET_SECONDS)
    assert load.top(minutes=15).tenants == []


def test_one_shard_or_some_locations_only() -> None:
    """The shard filter and the (business, location) filter select their tenants only."""
    load = TenantLoad(capacity=10, clock=FakeClock())
    call(load, "l1", shard="s1", business="b1")
    call(load, "l2", shard="s2", business="b1")
    call(load, "l1", shard="s2", business="b2")
    assert {t.location_id for t in load.top(minutes=1, shard_id="s1").tenants} == {"l1"}
    picked = load.top(minutes=1, keys=[("b2", "l1")]).tenants
    assert [(t.shard_id, t.business_id, t.location_id) for t in picked] == [("s2", "b2", "l1")]


def test_a_window_not_offered_is_refused() -> None:
    """Only 1, 5 and 15 minutes are kept."""
    with pytest.raises(ValueError, match="minutes"):
        TenantLoad(capacity=10).top(minutes=2)
