"""Unit tests: the one cache mechanism (TTL, stale-while-revalidate in the background, bounded
stale-if-error, single flight, failure memo with backoff, forced loads, own writes) on a fake clock."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from simplu_grpc import context
from simplu_grpc.domain.cache import Cache
from simplu_grpc.errors import CitrusUnavailable, DeadlineExceeded
from simplu_grpc.metrics import Metrics
from tests.fixtures.clock import FakeClock, ManualBackground


class Source:
    """A dependency that counts loads; it can fail, or block until ``gate`` is set."""

    def __init__(self) -> None:
        self.loads = 0
        self.version = 1
        self.error: BaseException | None = None
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, key: str) -> str:
        with self._lock:
            self.loads += 1
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(5)
        if self.error is not None:
            raise self.error
        return f"{key}@v{self.version}"


def lookups(metrics: Metrics, result: str, cache: str = "test") -> float:
    labels = {"cache": cache, "result": result}
    value = metrics.registry.get_sample_value("simplu_cache_lookups_total", labels)
    return value or 0.0


def make(
    source: Source,
    clock: FakeClock,
    *,
    metrics: Metrics | None = None,
    background: ManualBackground | None = None,
    **options: Any,
) -> Cache[str, str]:
    settings: dict[str, Any] = {"ttl": 60.0, "stale_max": 600.0, "failure_backoff": 5.0, **options}
    return Cache(
        source,
        name="test",
        metrics=metrics or Metrics(),
        clock=clock,
        background=background if background is not None else ManualBackground(),
        **settings,
    )


def test_fresh_entries_are_answered_without_loading() -> None:
    """Within the TTL the cache answers; the source is asked once."""
    source, clock, metrics = Source(), FakeClock(), Metrics()
    cache = make(source, clock, metrics=metrics)
    first = cache.get("a")
    clock.advance(59)
    again = cache.get("a")
    assert (first.value, first.from_cache) == ("a@v1", False)
    assert (again.value, again.from_cache, again.age_seconds) == ("a@v1", True, pytest.approx(59))
    assert source.loads == 1
    assert (lookups(metrics, "hit"), lookups(metrics, "miss")) == (1, 1)


def test_an_expired_entry_is_answered_at_once_and_refreshed_once_in_the_background() -> None:
    """Past the TTL every caller gets the old value immediately; ONE refresh is queued however many
    callers come, and once it ran the new value is served fresh."""
    source, clock, background = Source(), FakeClock(), ManualBackground()
    cache = make(source, clock, background=background)
    cache.get("a")
    source.version = 2
    clock.advance(61)
    for _ in range(20):
        stale = cache.get("a")
        assert (stale.value, stale.from_cache) == ("a@v1", True)
    assert source.loads == 1
    assert background.run_all() == 1
    assert source.loads == 2
    fresh = cache.get("a")
    assert (fresh.value, fresh.age_seconds) == ("a@v2", 0)


def test_a_caller_holding_a_usable_entry_never_waits_on_a_hung_source() -> None:
    """With the real background worker and a source that hangs, lookups of an expired entry return
    while the refresh is still blocked inside the source."""
    source, clock = Source(), FakeClock()
    cache: Cache[str, str] = Cache(
        source, name="test", ttl=60, stale_max=600, failure_backoff=5, metrics=Metrics(), clock=clock
    )
    try:
        cache.get("a")
        source.gate = threading.Event()
        source.entered.clear()
        clock.advance(61)
        answers: list[str] = []
        caller = threading.Thread(target=lambda: answers.extend(cache.get("a").value for _ in range(10)))
        caller.start()
        assert source.entered.wait(5)
        caller.join(5)
        assert not caller.is_alive()
        assert answers == ["a@v1"] * 10
        assert not source.gate.is_set()  # the refresh is still hanging
        assert source.loads == 2
    finally:
        assert source.gate is not None
        source.gate.set()
        cache.close()


def test_stale_if_error_is_bounded_by_stale_max() -> None:
    """While the source fails, an expired entry is served up to stale_max past its TTL, then the error."""
    source, clock, background = Source(), FakeClock(), ManualBackground()
    cache = make(source, clock, background=background)
    cache.get("a")
    source.error = CitrusUnavailable("down")
    clock.advance(300)
    assert cache.get("a").value == "a@v1"
    background.run_all()
    clock.advance(359)  # 659 s old: still within 60 + 600
    assert cache.get("a").value == "a@v1"
    background.run_all()
    clock.advance(2)
    with pytest.raises(CitrusUnavailable):
        cache.get("a")


def test_failures_are_memoized_one_attempt_per_key_per_backoff() -> None:
    """After a failed load, callers without an entry get the remembered error at once (no load),
    other keys are unaffected, and the key is tried again after the backoff."""
    source, clock, metrics = Source(), FakeClock(), Metrics()
    cache = make(source, clock, metrics=metrics, failure_backoff=5.0)
    source.error = CitrusUnavailable("down")
    with pytest.raises(CitrusUnavailable):
        cache.get("a")
    for _ in range(50):
        with pytest.raises(CitrusUnavailable, match="down"):
            cache.get("a")
        clock.advance(0.09)  # 4.5 s in all
    assert source.loads == 1
    assert lookups(metrics, "failed") == 50
    with pytest.raises(CitrusUnavailable):
        cache.get("b")
    assert source.loads == 2
    clock.advance(0.6)
    source.error = None
    assert cache.get("a").value == "a@v1"
    assert source.loads == 3


def test_no_background_refresh_is_queued_while_a_key_backs_off() -> None:
    """A failed background refresh is memoized too: stale lookups within the backoff queue nothing."""
    source, clock, background = Source(), FakeClock(), ManualBackground()
    cache = make(source, clock, background=background, failure_backoff=5.0)
    cache.get("a")
    source.error = CitrusUnavailable("down")
    clock.advance(61)
    cache.get("a")
    assert background.run_all() == 1
    for _ in range(10):
        assert cache.get("a").value == "a@v1"
        clock.advance(0.4)
    assert background.run_all() == 0
    clock.advance(1.5)
    cache.get("a")
    assert background.run_all() == 1
    assert source.loads == 3


def test_a_remembered_error_is_a_fresh_copy_each_time() -> None:
    """Memoized errors are raised as copies (no shared, growing traceback), same message and reason."""
    source, clock = Source(), FakeClock()
    cache = make(source, clock)
    source.error = CitrusUnavailable("down", metadata={"operation": "get_shard"})
    raised = []
    for _ in range(3):
        with pytest.raises(CitrusUnavailable) as caught:
            cache.get("a")
        raised.append(caught.value)
    assert len({id(e) for e in raised}) == 3
    assert {(e.message, e.reason, tuple(e.metadata.items())) for e in raised} == {
        ("down", "CITRUS_UNAVAILABLE", (("operation", "get_shard"),))
    }


def test_deadline_exceeded_is_not_memoized() -> None:
    """A caller that ran out of time says nothing about the source: the next caller loads again."""
    source, clock = Source(), FakeClock()
    cache = make(source, clock)
    source.error = DeadlineExceeded("out of time")
    with pytest.raises(DeadlineExceeded):
        cache.get("a")
    source.error = None
    assert cache.get("a").value == "a@v1"
    assert source.loads == 2


def _park(source: Source, metrics: Metrics, threads: int) -> None:
    """Poll until one thread is inside the load and every other one waits for it."""
    deadline = time.monotonic() + 5
    while source.loads < 1 or lookups(metrics, "miss") < threads:
        assert time.monotonic() < deadline, f"{source.loads} loads, {lookups(metrics, 'miss')} misses"
        time.sleep(0.005)


@pytest.mark.parametrize("fails", [False, True])
def test_single_flight_for_concurrent_misses(fails: bool) -> None:
    """20 callers missing one key make one load; all get its value, or all its error."""
    source, clock, metrics = Source(), FakeClock(), Metrics()
    source.gate = threading.Event()
    source.error = CitrusUnavailable("down") if fails else None
    cache = make(source, clock, metrics=metrics)
    outcomes: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            found = cache.get("a").value
        except CitrusUnavailable as exc:
            found = exc.message
        with lock:
            outcomes.append(found)

    threads = [threading.Thread(target=work) for _ in range(20)]
    for thread in threads:
        thread.start()
    _park(source, metrics, len(threads))
    source.gate.set()
    for thread in threads:
        thread.join(5)
    assert source.loads == 1
    assert outcomes == (["down"] if fails else ["a@v1"]) * 20


def test_a_follower_gives_up_at_its_own_deadline() -> None:
    """A caller waiting for another's load stops at its deadline with DEADLINE_EXCEEDED."""
    source, clock, metrics = Source(), FakeClock(), Metrics()
    source.gate = threading.Event()
    cache = make(source, clock, metrics=metrics)
    leader = threading.Thread(target=cache.get, args=("a",))
    leader.start()
    try:
        assert source.entered.wait(5)
        with context.bind(deadline=context.Deadline.after(0.05)), pytest.raises(DeadlineExceeded):
            cache.get("a")
    finally:
        source.gate.set()
        leader.join(5)
    assert source.loads == 1


def test_own_writes_win_over_loads_that_began_before_them() -> None:
    """put() during a load keeps the put value; so does invalidate() (the load's answer is not stored)."""
    source, clock = Source(), FakeClock()
    cache = make(source, clock)
    source.gate = threading.Event()
    loader = threading.Thread(target=cache.get, args=("a",))
    loader.start()
    assert source.entered.wait(5)
    cache.put("a", "a@written")
    source.gate.set()
    loader.join(5)
    assert cache.get("a").value == "a@written"
    assert source.loads == 1

    source.gate, source.entered = threading.Event(), threading.Event()
    loader = threading.Thread(target=cache.get, args=("b",))
    loader.start()
    assert source.entered.wait(5)
    assert cache.invalidate() == 1
    source.gate.set()
    loader.join(5)
    assert cache.peek("b") is None


def test_is_older_keeps_a_newer_cached_value() -> None:
    """A load older than what is cached (is_older) does not replace it; a put of an older one neither."""
    source, clock, background = Source(), FakeClock(), ManualBackground()
    cache = make(source, clock, background=background, is_older=lambda cached, new: cached[-1] > new[-1])
    cache.put("a", "a@v3")
    clock.advance(61)
    cache.get("a")
    background.run_all()  # loads a@v1
    assert cache.peek("a") is not None
    assert cache.get("a").value == "a@v3"
    cache.put("a", "a@v2")
    assert cache.get("a").value == "a@v3"


def test_forced_loads_wait_never_fall_back_and_are_limited_per_interval() -> None:
    """get(force=True) loads even a fresh key and raises the source's error (no stale answer); within
    min_force_interval it answers the entry the last forced load left; invalidation lifts the limit."""
    source, clock = Source(), FakeClock()
    cache = make(source, clock, min_force_interval=1.0, failure_backoff=0.5)
    cache.get("a")
    source.version = 2
    forced = cache.get("a", force=True)
    assert (forced.value, forced.from_cache) == ("a@v2", False)
    for _ in range(10):
        assert cache.get("a", force=True).value == "a@v2"
    assert source.loads == 2
    clock.advance(1.5)
    source.error = CitrusUnavailable("down")
    with pytest.raises(CitrusUnavailable):
        cache.get("a", force=True)
    assert cache.get("a", force=True).from_cache  # a failed forced load counts too
    assert cache.get("a").value == "a@v2"  # plain lookups still get the fresh entry
    assert source.loads == 3
    source.error = None
    cache.invalidate(lambda key: key == "a")
    cache.get("a")
    assert not cache.get("a", force=True).from_cache
    assert source.loads == 5


def test_propagate_updates_related_entries() -> None:
    """A loaded value can rewrite other entries (routes to a shard whose address changed)."""
    source, clock = Source(), FakeClock()
    cache = make(
        source,
        clock,
        propagate=lambda new, other: other.split("@")[0] + "@" + new.split("@")[1] if other != new else None,
    )
    cache.get("a")
    cache.get("b")
    source.version = 2
    cache.get("a", force=True)
    peeked = cache.peek("b")
    assert peeked is not None
    assert peeked.value == "b@v2"


def test_size_is_bounded_and_zero_lifetimes_disable_caching() -> None:
    """max_entries evicts the least recently used; ttl = stale_max = 0 loads every time."""
    source, clock = Source(), FakeClock()
    small = make(source, clock, max_entries=2)
    for key in ("a", "b", "a", "c"):
        small.get(key)
    assert small.peek("b") is None
    assert small.peek("a") is not None
    off = make(source, clock, ttl=0, stale_max=0)
    off.get("x")
    off.get("x")
    assert source.loads == 3 + 2


def test_refreshes_share_one_worker_thread() -> None:
    """Many expired keys are refreshed by one background thread, not one thread per refresh."""
    source, clock = Source(), FakeClock()
    cache: Cache[str, str] = Cache(
        source, name="one-worker", ttl=1, stale_max=600, failure_backoff=5, metrics=Metrics(), clock=clock
    )
    try:
        keys = [f"k{i}" for i in range(50)]
        for key in keys:
            cache.get(key)
        clock.advance(2)
        for key in keys:
            cache.get(key)
        deadline = time.monotonic() + 5
        while source.loads < 100:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        workers = [t for t in threading.enumerate() if t.name.startswith("one-worker-refresh")]
        assert len(workers) == 1
    finally:
        cache.close()


def test_close_ends_queued_refreshes_and_never_holds_the_process() -> None:
    """After close() a refresh still queued ends without loading (its key can be loaded again by a
    caller), and the worker is a daemon thread: a refresh stuck on a hung dependency cannot hold exit."""
    source, clock = Source(), FakeClock()
    cache: Cache[str, str] = Cache(
        source, name="closing", ttl=1, stale_max=600, failure_backoff=5, metrics=Metrics(), clock=clock
    )
    cache.get("a")
    cache.get("b")
    source.gate = threading.Event()
    source.entered.clear()
    clock.advance(2)
    cache.get("a")  # its refresh hangs in the source
    assert source.entered.wait(5)
    cache.get("b")  # queued behind it
    (worker,) = [t for t in threading.enumerate() if t.name == "closing-refresh"]
    assert worker.daemon
    cache.close()
    source.gate.set()
    worker.join(5)
    assert not worker.is_alive()
    assert source.loads == 3  # b's queued refresh never reached the source
    clock.advance(700)
    assert cache.get("b").value == "b@v1"
    assert source.loads == 4
