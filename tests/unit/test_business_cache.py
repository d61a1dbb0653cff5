"""BusinessCache: TTL, negative caching, own writes win, stale answers while DynamoDB fails, metrics."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from simplu_grpc.domain.business.cache import BusinessCache
from simplu_grpc.domain.business.model import Business, BusinessType
from simplu_grpc.errors import BusinessStoreUnavailable
from simplu_grpc.metrics import Metrics
from tests.fixtures.clock import FakeClock, ManualBackground


class CountingStore:
    def __init__(self) -> None:
        self.items: dict[str, Business] = {}
        self.reads = 0
        self.down = False
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def get(self, business_id: str, *, consistent: bool = True) -> Business | None:
        self.reads += 1
        found = self.items.get(business_id)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(5)
        if self.down:
            raise BusinessStoreUnavailable("the business store is unreachable")
        return found


def lookups(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "simplu_cache_lookups_total", {"cache": "business", "result": result}
    )
    return value or 0.0


def test_hits_within_ttl_and_refetch_after() -> None:
    """A second lookup within the TTL is a hit (no store read); after the TTL the store is read again,
    in the background, while the caller gets the cached business."""
    store, clock, metrics, background = CountingStore(), FakeClock(start=100.0), Metrics(), ManualBackground()
    store.items["b1"] = Business(id="b1", name="One", type=BusinessType.GYM, version=1)
    cache = BusinessCache(store, ttl_seconds=30, metrics=metrics, clock=clock, background=background)
    assert cache.get("b1") is not None
    assert cache.get("b1") is not None
    assert store.reads == 1
    assert lookups(metrics, "hit") == 1
    assert lookups(metrics, "miss") == 1
    clock.now += 31
    store.items["b1"] = replace(store.items["b1"], name="Renamed", version=2)
    assert cache.get("b1") == Business(id="b1", name="One", type=BusinessType.GYM, version=1)
    assert background.run_all() == 1
    assert store.reads == 2
    renamed = cache.get("b1")
    assert renamed is not None
    assert renamed.name == "Renamed"


def test_a_known_business_is_served_while_dynamodb_is_down_up_to_the_stale_bound() -> None:
    """With DynamoDB failing, a cached business keeps being answered for stale_max past its TTL
    (one background read per backoff, none by callers); then the outage reaches the caller."""
    store, clock, background = CountingStore(), FakeClock(start=100.0), ManualBackground()
    store.items["b1"] = Business(id="b1", name="One", type=BusinessType.GYM, version=1)
    cache = BusinessCache(
        store,
        ttl_seconds=30,
        stale_max_seconds=120,
        failure_backoff_seconds=1,
        metrics=Metrics(),
        clock=clock,
        background=background,
    )
    cache.get("b1")
    store.down = True
    for _ in range(240):
        clock.now += 0.5  # two minutes in all
        assert cache.get("b1") is not None
        background.run_all()
    assert store.reads <= 1 + 120
    clock.now += 31
    with pytest.raises(BusinessStoreUnavailable):
        cache.get("b1")


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
    """put(v3) then a lagging read of v2 (eventually consistent) keeps v3."""
    store, clock, background = CountingStore(), FakeClock(start=100.0), ManualBackground()
    cache = BusinessCache(store, ttl_seconds=30, metrics=Metrics(), clock=clock, background=background)
    newer = Business(id="b3", name="New", type=BusinessType.GYM, version=3)
    store.items["b3"] = replace(newer, name="Old", version=2)
    cache.put(newer)
    clock.now += 31
    cache.get("b3")
    assert background.run_all() == 1
    assert cache.get("b3") == newer


def test_zero_lifetimes_disable_caching_and_size_is_bounded() -> None:
    """ttl 0 and stale max 0 read through every time; max_entries evicts the least recently used."""
    store, clock = CountingStore(), FakeClock(start=100.0)
    cache = BusinessCache(store, ttl_seconds=0, stale_max_seconds=0, metrics=Metrics(), clock=clock)
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
    store.gate = threading.Event()
    reader = threading.Thread(target=cache.get, args=("b5",))
    reader.start()
    assert store.entered.wait(5)
    created = Business(id="b5", name="Fresh", type=BusinessType.HOTEL, version=1)
    cache.put(created)
    store.gate.set()
    reader.join(5)
    assert cache.get("b5") == created
    assert store.reads == 1
