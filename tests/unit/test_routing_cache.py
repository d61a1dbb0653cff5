"""Unit tests: the routing cache on the one cache mechanism (TTL, background refresh, bounded
stale-if-error, forced refresh, a shard's new address for every route to it, invalidation).

Single flight and the failure memo themselves are tested with the mechanism (test_cache.py)."""

from __future__ import annotations

import threading

import pytest

from simplu_grpc.domain.placement.routing import RoutingCache
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.errors import CitrusUnavailable
from simplu_grpc.metrics import Metrics
from tests.fixtures.clock import FakeClock, ManualBackground


class FakeDirectory:
    """Counts calls; can fail, or block until released (to observe single flight)."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False
        self.gate: threading.Event | None = None
        self.conn = "postgresql://u:pw@db/s1"
        self.active = True
        self._lock = threading.Lock()

    def get_shard(self, business_id: str, location_id: str) -> ShardAssignment | None:
        with self._lock:
            self.calls += 1
        if self.gate is not None:
            assert self.gate.wait(5)
        if self.fail:
            raise CitrusUnavailable("citrus down")
        return ShardAssignment(
            shard_id=f"shard-{business_id}", connection_string=self.conn, is_active=self.active
        )

    def register(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment:
        raise AssertionError("every location of these tests is known to the directory")


def _cache(
    directory: FakeDirectory,
    clock: FakeClock,
    ttl: float = 60,
    stale_max: float = 600,
    background: ManualBackground | None = None,
    **options: float,
) -> RoutingCache:
    return RoutingCache(
        directory,
        ttl=ttl,
        stale_max=stale_max,
        metrics=Metrics(),
        clock=clock,
        background=background or ManualBackground(),
        **options,
    )


def test_hit_within_ttl_asks_nobody() -> None:
    """After one lookup, further resolves within the TTL come from the cache."""
    directory, clock = FakeDirectory(), FakeClock()
    cache = _cache(directory, clock)
    first = cache.resolve("b1", "l1", "dental")
    clock.now += 59
    again = cache.resolve("b1", "l1", "dental")
    assert directory.calls == 1
    assert not first.from_cache
    assert again.from_cache
    assert again.age_seconds == pytest.approx(59)


def test_expired_entry_is_answered_and_refreshed_in_the_background() -> None:
    """Past the TTL the old assignment is answered at once and Citrus is asked once, in the background;
    the refreshed assignment is what later lookups get."""
    directory, clock, background = FakeDirectory(), FakeClock(), ManualBackground()
    cache = _cache(directory, clock, background=background)
    cache.resolve("b1", "l1", "dental")
    clock.now += 61
    directory.conn = "postgresql://u:pw@moved/s1"
    stale = cache.resolve("b1", "l1", "dental")
    assert stale.from_cache
    assert stale.assignment.connection_string == "postgresql://u:pw@db/s1"
    assert directory.calls == 1
    assert background.run_all() == 1
    assert directory.calls == 2
    assert cache.resolve("b1", "l1", "dental").assignment.connection_string == directory.conn


def test_stale_while_error_is_bounded() -> None:
    """When the directory fails, an expired entry is served up to stale_max past its TTL, then the error."""
    directory, clock, background = FakeDirectory(), FakeClock(), ManualBackground()
    cache = _cache(directory, clock, ttl=60, stale_max=600, background=background)
    cache.resolve("b1", "l1", "dental")
    directory.fail = True
    clock.now += 300
    stale = cache.resolve("b1", "l1", "dental")
    assert stale.from_cache
    assert stale.age_seconds == pytest.approx(300)
    background.run_all()
    clock.now += 400  # 700 s old > 60 + 600
    with pytest.raises(CitrusUnavailable):
        cache.resolve("b1", "l1", "dental")


def test_a_failing_directory_is_asked_once_per_route_per_backoff() -> None:
    """A route nobody can serve from the cache gets the remembered Citrus error within the backoff."""
    directory, clock = FakeDirectory(), FakeClock()
    directory.fail = True
    cache = _cache(directory, clock, failure_backoff=2.0)
    for _ in range(20):
        with pytest.raises(CitrusUnavailable):
            cache.resolve("b1", "l1", "dental")
        clock.now += 0.05
    assert directory.calls == 1
    clock.now += 1.5
    directory.fail = False
    assert not cache.resolve("b1", "l1", "dental").from_cache
    assert directory.calls == 2


def test_unknown_key_with_failing_directory_raises() -> None:
    """A never-seen location cannot be served stale: the directory's error goes out."""
    directory, clock = FakeDirectory(), FakeClock()
    directory.fail = True
    with pytest.raises(CitrusUnavailable):
        _cache(directory, clock).resolve("b9", "l9", "gym")


def test_forced_refresh_never_falls_back_to_stale() -> None:
    """refresh=True (after a shard failure) reports the directory's error instead of the old entry."""
    directory, clock = FakeDirectory(), FakeClock()
    cache = _cache(directory, clock)
    cache.resolve("b1", "l1", "dental")
    directory.fail = True
    with pytest.raises(CitrusUnavailable):
        cache.resolve("b1", "l1", "dental", refresh=True)


def test_forced_refreshes_of_a_key_ask_at_most_once_per_interval() -> None:
    """While a shard is down every request asks for a refresh: within min_refresh_interval they get
    the entry the last refresh left (one Citrus call, not one per request), after it they ask again;
    a failed refresh counts too, and invalidation lifts the limit."""
    directory, clock = FakeDirectory(), FakeClock()
    cache = _cache(directory, clock, min_refresh_interval=1, failure_backoff=0.5)
    cache.resolve("b1", "l1", "dental")
    clock.now += 10
    directory.conn = "postgresql://u:pw@moved/s1"
    moved = cache.resolve("b1", "l1", "dental", refresh=True)
    assert not moved.from_cache
    assert moved.assignment.connection_string == directory.conn
    for _ in range(50):
        again = cache.resolve("b1", "l1", "dental", refresh=True)
        assert again.from_cache
        assert again.assignment.connection_string == directory.conn
    assert directory.calls == 2
    clock.now += 1.5
    directory.fail = True
    with pytest.raises(CitrusUnavailable):
        cache.resolve("b1", "l1", "dental", refresh=True)
    assert cache.resolve("b1", "l1", "dental", refresh=True).from_cache
    assert directory.calls == 3
    directory.fail = False
    cache.invalidate("b1", "l1")
    cache.resolve("b1", "l1", "dental")
    assert not cache.resolve("b1", "l1", "dental", refresh=True).from_cache
    assert directory.calls == 5


def test_new_connection_string_updates_every_entry_of_the_shard() -> None:
    """A refreshed assignment with a new connection string reaches other cached locations of the shard."""
    directory, clock = FakeDirectory(), FakeClock()
    cache = _cache(directory, clock)
    cache.resolve("b1", "l1", "dental")
    cache.resolve("b1", "l2", "dental")
    directory.conn = "postgresql://u:pw@replica/s1"
    cache.resolve("b1", "l1", "dental", refresh=True)
    other = cache.peek("b1", "l2")
    assert other is not None
    assert other.assignment.connection_string == directory.conn
    assert directory.calls == 3


def test_invalidate_counts_what_it_dropped() -> None:
    """invalidate() drops one location, a whole business, or everything, and says how many."""
    directory, clock = FakeDirectory(), FakeClock()
    cache = _cache(directory, clock)
    for business, location in [("b1", "l1"), ("b1", "l2"), ("b2", "l1")]:
        cache.resolve(business, location, "dental")
    assert cache.invalidate("b1", "l1") == 1
    assert cache.invalidate("b1") == 1
    assert cache.invalidate() == 1
    assert len(cache) == 0
    cache.resolve("b1", "l1", "dental")
    assert directory.calls == 4


def test_inactive_flag_reaches_every_route_of_the_shard_and_the_shard_list() -> None:
    """Citrus's isActive is kept with the route (it does not stop it) and shows per shard."""
    directory, clock = FakeDirectory(), FakeClock()
    cache = _cache(directory, clock)
    cache.resolve("b1", "l1", "dental")
    cache.resolve("b1", "l2", "dental")
    cache.resolve("b2", "l1", "dental")
    assert cache.shards() == {"shard-b1": True, "shard-b2": True}
    directory.active = False
    assert not cache.resolve("b1", "l1", "dental", refresh=True).assignment.is_active
    other = cache.peek("b1", "l2")
    assert other is not None
    assert not other.assignment.is_active
    assert cache.shards() == {"shard-b1": False, "shard-b2": True}


class UnregisteredDirectory:
    """Citrus that knows no location until it is registered; records the registrations."""

    def __init__(self) -> None:
        self.known: dict[tuple[str, str], ShardAssignment] = {}
        self.registered: list[tuple[str, str, str]] = []

    def get_shard(self, business_id: str, location_id: str) -> ShardAssignment | None:
        return self.known.get((business_id, location_id))

    def register(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment:
        self.registered.append((business_id, location_id, business_type))
        assignment = ShardAssignment(shard_id="shard-new", connection_string="postgresql://u:pw@db/new")
        self.known[(business_id, location_id)] = assignment
        return assignment


def test_a_location_unknown_to_the_directory_is_registered_once_with_its_type() -> None:
    """Lookup never registers; the cache registers a missed location itself (with the business's
    type), once: the next resolve is answered from the cache, and a refresh finds it by lookup."""
    directory, clock = UnregisteredDirectory(), FakeClock()
    cache = RoutingCache(
        directory, ttl=60, stale_max=600, metrics=Metrics(), clock=clock, background=ManualBackground()
    )
    first = cache.resolve("acme", "main", "dental")
    assert first.assignment.shard_id == "shard-new"
    assert directory.registered == [("acme", "main", "dental")]
    assert cache.resolve("acme", "main", "dental").from_cache
    clock.advance(61)
    cache.resolve("acme", "main", "dental", refresh=True)
    assert directory.registered == [("acme", "main", "dental")]
