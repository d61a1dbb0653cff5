"""Unit tests: the routing cache's TTL, single-flight refresh, stale-while-error and invalidation."""

from __future__ import annotations

import threading
import time

import pytest

from simplu_grpc.domain import routing
from simplu_grpc.domain.routing import RoutingCache
from simplu_grpc.domain.shards import ShardAssignment
from simplu_grpc.errors import CitrusUnavailable
from simplu_grpc.metrics import Metrics
from tests.fixtures.clock import FakeClock


class FakeDirectory:
    """Counts calls; can fail, or block until released (to observe single flight)."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False
        self.gate: threading.Event | None = None
        self.conn = "postgresql://u:pw@db/s1"
        self._lock = threading.Lock()

    def get_shard(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment:
        with self._lock:
            self.calls += 1
        if self.gate is not None:
            assert self.gate.wait(5)
        if self.fail:
            raise CitrusUnavailable("citrus down")
        return ShardAssignment(shard_id=f"shard-{business_id}", connection_string=self.conn)


class _CountingFlight(routing._Flight):
    """A single-flight record that counts the followers waiting on it."""

    followers = 0
    lock = threading.Lock()

    def __init__(self) -> None:
        super().__init__()
        self.done = _CountedEvent()


class _CountedEvent(threading.Event):
    def wait(self, timeout: float | None = None) -> bool:
        with _CountingFlight.lock:
            _CountingFlight.followers += 1
        return super().wait(timeout)


@pytest.fixture
def counting_flights(monkeypatch: pytest.MonkeyPatch) -> type[_CountingFlight]:
    monkeypatch.setattr(_CountingFlight, "followers", 0)
    monkeypatch.setattr(routing, "_Flight", _CountingFlight)
    return _CountingFlight


def _wait_parked(directory: FakeDirectory, flights: type[_CountingFlight], threads: int) -> None:
    """Poll until one thread is inside the lookup and every other one follows it: only then does
    releasing the lookup test single flight rather than thread start-up timing."""
    deadline = time.monotonic() + 5
    while directory.calls < 1 or flights.followers < threads - 1:
        assert time.monotonic() < deadline, f"{directory.calls} lookups, {flights.followers} followers"
        time.sleep(0.005)


def _cache(
    directory: FakeDirectory, clock: FakeClock, ttl: float = 60, stale_max: float = 600
) -> RoutingCache:
    return RoutingCache(directory, ttl=ttl, stale_max=stale_max, metrics=Metrics(), clock=clock)


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


def test_expired_entry_is_refreshed() -> None:
    """Past the TTL the directory is asked again."""
    directory, clock = FakeDirectory(), FakeClock()
    cache = _cache(directory, clock)
    cache.resolve("b1", "l1", "dental")
    clock.now += 61
    assert not cache.resolve("b1", "l1", "dental").from_cache
    assert directory.calls == 2


def test_stale_while_error_is_bounded() -> None:
    """When the directory fails, an expired entry is served up to stale_max past its TTL, then the error."""
    directory, clock = FakeDirectory(), FakeClock()
    cache = _cache(directory, clock, ttl=60, stale_max=600)
    cache.resolve("b1", "l1", "dental")
    directory.fail = True
    clock.now += 300
    stale = cache.resolve("b1", "l1", "dental")
    assert stale.from_cache
    assert stale.age_seconds == pytest.approx(300)
    clock.now += 400  # 700 s old > 60 + 600
    with pytest.raises(CitrusUnavailable):
        cache.resolve("b1", "l1", "dental")


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
    cache = RoutingCache(
        directory, ttl=60, stale_max=600, metrics=Metrics(), clock=clock, min_refresh_interval=1
    )
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


def test_single_flight_for_concurrent_misses(counting_flights: type[_CountingFlight]) -> None:
    """20 threads missing the same key at once make exactly one directory call and all get its answer."""
    directory, clock = FakeDirectory(), FakeClock()
    directory.gate = threading.Event()
    cache = _cache(directory, clock)
    results: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        found = cache.resolve("b1", "l1", "dental")
        with lock:
            results.append(found.assignment.shard_id)

    threads = [threading.Thread(target=work) for _ in range(20)]
    for thread in threads:
        thread.start()
    _wait_parked(directory, counting_flights, len(threads))
    directory.gate.set()
    for thread in threads:
        thread.join(5)
    assert directory.calls == 1
    assert results == ["shard-b1"] * 20


def test_single_flight_error_reaches_every_waiter(counting_flights: type[_CountingFlight]) -> None:
    """If the one lookup fails, every waiter without a cached entry gets the error (one call in all)."""
    directory, clock = FakeDirectory(), FakeClock()
    directory.gate = threading.Event()
    directory.fail = True
    cache = _cache(directory, clock)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            cache.resolve("b1", "l1", "dental")
        except CitrusUnavailable as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(10)]
    for thread in threads:
        thread.start()
    _wait_parked(directory, counting_flights, len(threads))
    directory.gate.set()
    for thread in threads:
        thread.join(5)
    assert directory.calls == 1
    assert len(errors) == 10


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
