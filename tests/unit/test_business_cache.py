"""BusinessCache: TTL, negative caching, own writes invalidate, metrics counted."""

from __future__ import annotations

from dataclasses import replace

from simplu_grpc.domain.business import Business, BusinessType
from simplu_grpc.domain.business_cache import BusinessCache
from simplu_grpc.metrics import Metrics
from tests.fixtures.clock import FakeClock


class CountingStore:
    def __init__(self) -> None:
        self.items: dict[str, Business] = {}
        self.reads = 0

    def get(self, business_id: str, *, consistent: bool = True) -> Business | None:
        self.reads += 1
        return self.items.get(business_id)


def lookups(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "simplu_cache_lookups_total", {"cache": "business", "result": result}
    )
    return value or 0.0


def test_hits_within_ttl_and_refetch_after() -> None:
    """A second lookup within the TTL is a hit (no store read); after the TTL the store is read again."""
    store, clock, metrics = CountingStore(), FakeClock(start=100.0), Metrics()
    store.items["b1"] = Business(id="b1", name="One", type=BusinessType.GYM, version=1)
    cache = BusinessCache(store, ttl_seconds=30, metrics=metrics, clock=clock)
    assert cache.get("b1") is not None
    assert cache.get("b1") is not None
    assert store.reads == 1
    assert lookups(metrics, "hit") == 1
    assert lookups(metrics, "miss") == 1
    clock.now += 31
    cache.get("b1")
    assert store.reads == 2


def test_missing_business_is_cached_and_invalidated_by_create() -> None:
    """A miss is remembered; put() after this server's own create replaces it at once."""
    store, clock = CountingStore(), FakeClock(start=100.0)
    cache = BusinessCache(store, ttl_seconds=30, metrics=Metrics(), clock=clock)
    assert cache.get("b2") is None
    assert cache.get("b2") is None
    assert store.reads == 1
    created = Business(id="b2", name="Two", type=BusinessType.HOTEL, version=1)
    cache.put(created)
    assert cache.get("b2") == created
    assert cache.invalidate("b2") == 1
    assert cache.invalidate("b2") == 0


def test_an_older_read_never_replaces_a_newer_own_write() -> None:
    """put(v3) then a racing read of v2 keeps v3."""
    store, clock = CountingStore(), FakeClock(start=100.0)
    cache = BusinessCache(store, ttl_seconds=30, metrics=Metrics(), clock=clock)
    newer = Business(id="b3", name="New", type=BusinessType.GYM, version=3)
    cache.put(newer)
    cache._remember("b3", replace(newer, name="Old", version=2), clock())
    assert cache.get("b3") == newer


def test_zero_ttl_disables_caching_and_size_is_bounded() -> None:
    """ttl 0 reads through every time; max_entries evicts the least recently used."""
    store, clock = CountingStore(), FakeClock(start=100.0)
    cache = BusinessCache(store, ttl_seconds=0, metrics=Metrics(), clock=clock)
    cache.get("x")
    cache.get("x")
    assert store.reads == 2
    small = BusinessCache(store, ttl_seconds=30, metrics=Metrics(), clock=clock, max_entries=2)
    for name in ("a", "b", "c"):
        small.get(name)
    assert small.invalidate() == 2


def test_a_miss_read_racing_with_a_create_never_hides_the_new_business() -> None:
    """A "no such business" read that began before this server's create does not overwrite it."""
    store, clock = CountingStore(), FakeClock(start=100.0)
    cache = BusinessCache(store, ttl_seconds=30, metrics=Metrics(), clock=clock)
    read_began = clock()
    clock.now += 1
    created = Business(id="b5", name="Fresh", type=BusinessType.HOTEL, version=1)
    cache.put(created)
    cache._remember("b5", None, read_began)
    assert cache.get("b5") == created
    assert store.reads == 0
