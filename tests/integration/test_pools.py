"""Shard pool registry against real PostgreSQL: one pool per shard, deadlines, exhausted/down."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from prometheus_client import generate_latest

from simplu_grpc import context
from simplu_grpc.adapters.postgres import migrator
from simplu_grpc.adapters.postgres.pool_registry import PoolRegistry
from simplu_grpc.context import Deadline
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.errors import DeadlineExceeded, ResourceExhausted, ShardUnavailable
from simplu_grpc.metrics import Metrics
from tests.fixtures.clock import FakeClock
from tests.fixtures.faultproxy import FaultProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(metrics: Metrics) -> Iterator[PoolRegistry]:
    made = PoolRegistry(metrics=metrics, min_size=1, max_size=2, connect_timeout=2.0)
    yield made
    made.close()


@pytest.fixture
def shard_dsn(fresh_database: Callable[[], str]) -> str:
    return fresh_database()


def _run(
    registry: PoolRegistry, assignment: ShardAssignment, query: str = "SELECT 1 AS one"
) -> list[dict[str, Any]]:
    with registry.connection(assignment) as session:
        return session.run(query)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _metric(metrics: Metrics, shard: str, kind: str) -> float:
    value = metrics.registry.get_sample_value(
        "simplu_shard_pool_errors_total", {"shard": shard, "kind": kind}
    )
    return value or 0.0


def test_concurrent_first_use_creates_one_pool_and_migrates_once(
    registry: PoolRegistry, shard_dsn: str
) -> None:
    """20 threads using a new shard at once create one pool; the schema is migrated on first use."""
    assignment = ShardAssignment(shard_id="shard-x", connection_string=shard_dsn)
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: _run(registry, assignment), range(20)))
    assert results == [[{"one": 1}]] * 20
    assert registry.pools_created == 1
    (stats,) = registry.stats()
    assert stats.shard_id == "shard-x"
    assert stats.schema_version == migrator.latest_version()
    assert stats.healthy is True
    assert stats.pool_max == 2
    assert _run(registry, assignment, "SELECT max(version) AS v FROM schema_migrations") == [
        {"v": migrator.latest_version()}
    ]


def test_two_shard_ids_two_pools_stats_without_secrets(
    registry: PoolRegistry, shard_dsn: str, pg: Any
) -> None:
    """Each shard id gets its own pool; stats show host:port/db, never the password."""
    with_password = pg.dsn(urlsplit(shard_dsn).path.lstrip("/"), password="s3cret-pw")
    _run(registry, ShardAssignment(shard_id="a", connection_string=shard_dsn))
    _run(registry, ShardAssignment(shard_id="b", connection_string=with_password))
    stats = registry.stats()
    assert [s.shard_id for s in stats] == ["a", "b"]
    assert "s3cret-pw" not in repr(stats)
    assert registry.assignment("b") is not None


def test_exhausted_pool_is_resource_exhausted(
    registry: PoolRegistry, metrics: Metrics, shard_dsn: str
) -> None:
    """With every connection busy, a checkout ends at the deadline: RESOURCE_EXHAUSTED (metric: exhausted)."""
    assignment = ShardAssignment(shard_id="busy", connection_string=shard_dsn)
    _run(registry, assignment)
    hold = threading.Event()
    holding = threading.Barrier(3)

    def occupy() -> None:
        with registry.connection(assignment):
            holding.wait(5)
            hold.wait(10)

    threads = [threading.Thread(target=occupy) for _ in range(2)]
    for thread in threads:
        thread.start()
    holding.wait(5)
    try:
        started = time.monotonic()
        with context.bind(deadline=Deadline.after(0.5)), pytest.raises(ResourceExhausted) as caught:
            _run(registry, assignment)
        assert time.monotonic() - started < 1.5
        assert caught.value.reason == "SHARD_POOL_EXHAUSTED"
    finally:
        hold.set()
        for thread in threads:
            thread.join(5)
    assert _metric(metrics, "busy", "exhausted") == 1
    assert _metric(metrics, "busy", "unavailable") == 0


def test_unreachable_shard_is_unavailable_fast(registry: PoolRegistry, metrics: Metrics) -> None:
    """A refusing shard is SHARD_UNAVAILABLE long before the deadline (metric: unavailable)."""
    assignment = ShardAssignment(
        shard_id="down", connection_string=f"postgresql://postgres:hunter2@127.0.0.1:{_closed_port()}/x"
    )
    started = time.monotonic()
    with context.bind(deadline=Deadline.after(5)), pytest.raises(ShardUnavailable) as caught:
        _run(registry, assignment)
    assert time.monotonic() - started < 2.0
    assert caught.value.reason == "SHARD_UNAVAILABLE"
    assert _metric(metrics, "down", "unavailable") >= 1
    (stats,) = registry.stats()
    assert stats.healthy is False
    assert stats.last_error
    assert "hunter2" not in stats.last_error


def test_statement_timeout_follows_the_deadline(registry: PoolRegistry, shard_dsn: str) -> None:
    """A statement running past the RPC deadline is cancelled by statement_timeout: DEADLINE_EXCEEDED."""
    assignment = ShardAssignment(shard_id="slow", connection_string=shard_dsn)
    _run(registry, assignment)
    started = time.monotonic()
    with context.bind(deadline=Deadline.after(0.4)), pytest.raises(DeadlineExceeded):
        _run(registry, assignment, "SELECT pg_sleep(5)")
    assert time.monotonic() - started < 1.0
    assert _run(registry, assignment) == [{"one": 1}]


def test_blackholed_connection_is_cut_at_the_deadline(
    registry: PoolRegistry, shard_dsn: str, fault_proxy: Callable[[str, int], FaultProxy]
) -> None:
    """A query on a connection whose packets vanish ends at the deadline (watchdog), not never."""
    target = urlsplit(shard_dsn)
    proxy = fault_proxy(target.hostname or "127.0.0.1", target.port or 5432)
    assignment = ShardAssignment(shard_id="hole", connection_string=proxy.dsn(shard_dsn))
    _run(registry, assignment)
    proxy.blackhole()
    started = time.monotonic()
    with context.bind(deadline=Deadline.after(0.5)), pytest.raises(DeadlineExceeded):
        _run(registry, assignment)
    assert time.monotonic() - started < 1.5
    proxy.heal()
    deadline = time.monotonic() + 10
    while True:
        try:
            with context.bind(deadline=Deadline.after(3)):
                assert _run(registry, assignment) == [{"one": 1}]
            break
        except (ShardUnavailable, DeadlineExceeded):
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_new_connection_string_replaces_the_pool_and_closes_the_old(
    registry: PoolRegistry, shard_dsn: str, fault_proxy: Callable[[str, int], FaultProxy]
) -> None:
    """A new connection string for a shard id opens a new pool and closes the old one; a late request
    still carrying the old string (routed with an earlier answer) uses the new pool, not flipping back."""
    target = urlsplit(shard_dsn)
    proxy = fault_proxy(target.hostname or "127.0.0.1", target.port or 5432)
    old = ShardAssignment(shard_id="moving", connection_string=shard_dsn, observed_at=1.0)
    new = ShardAssignment(shard_id="moving", connection_string=proxy.dsn(shard_dsn), observed_at=2.0)
    _run(registry, old)
    old_pool = registry.pool("moving")
    assert old_pool is not None
    _run(registry, new)
    assert proxy.accepted >= 1
    assert registry.pool("moving") is not old_pool
    deadline = time.monotonic() + 10
    while not old_pool.closed:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    _run(registry, old)
    assert registry.pools_created == 2
    assert registry.stats()[0].target.endswith(f":{proxy.port}{target.path}")


def test_a_move_back_to_the_previous_connection_string_is_followed_at_once(
    registry: PoolRegistry, shard_dsn: str, fault_proxy: Callable[[str, int], FaultProxy]
) -> None:
    """Failover A -> B, then a newer answer moving the shard back to A (within seconds): the pool
    follows it at once (it used to keep B for 60 s whatever Citrus said)."""
    target = urlsplit(shard_dsn)
    first = fault_proxy(target.hostname or "127.0.0.1", target.port or 5432)
    second = fault_proxy(target.hostname or "127.0.0.1", target.port or 5432)
    a = ShardAssignment(shard_id="back", connection_string=first.dsn(shard_dsn), observed_at=1.0)
    b = ShardAssignment(shard_id="back", connection_string=second.dsn(shard_dsn), observed_at=2.0)
    _run(registry, a)
    _run(registry, b)
    second.refuse()
    accepted = first.accepted
    back = ShardAssignment(shard_id="back", connection_string=first.dsn(shard_dsn), observed_at=3.0)
    with context.bind(deadline=Deadline.after(3)):
        assert _run(registry, back) == [{"one": 1}]
    assert first.accepted > accepted
    assert registry.pools_created == 3


def test_idle_pools_are_closed_in_the_background_without_requests(metrics: Metrics, shard_dsn: str) -> None:
    """A quiet registry closes a pool once it has been idle long enough, with no request arriving."""
    clock = FakeClock(start=time.monotonic())
    registry = PoolRegistry(metrics=metrics, idle_close_seconds=60, clock=clock, sweep_interval=0.05)
    try:
        _run(registry, ShardAssignment(shard_id="quiet", connection_string=shard_dsn))
        pool = registry.pool("quiet")
        assert pool is not None
        clock.now += 30
        time.sleep(0.3)  # several sweeps run; the pool is not idle long enough yet
        assert registry.pool("quiet") is pool
        clock.now += 31
        deadline = time.monotonic() + 10
        while not pool.closed:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert registry.stats() == []
    finally:
        registry.close()
    assert not any(t.name == "shard-pool-sweeper" and t.is_alive() for t in threading.enumerate())


def test_idle_pools_are_closed(metrics: Metrics, shard_dsn: str) -> None:
    """A pool unused for idle_close_seconds is closed; the next request opens a fresh one."""
    clock = FakeClock(start=time.monotonic())
    registry = PoolRegistry(metrics=metrics, idle_close_seconds=60, clock=clock)
    try:
        assignment = ShardAssignment(shard_id="idle", connection_string=shard_dsn)
        _run(registry, assignment)
        pool = registry.pool("idle")
        assert pool is not None
        clock.now += 30
        assert registry.close_idle() == []
        clock.now += 61
        assert registry.close_idle() == ["idle"]
        assert registry.stats() == []
        deadline = time.monotonic() + 10
        while not pool.closed:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        _run(registry, assignment)
        assert registry.pools_created == 2
    finally:
        registry.close()


def test_recycle_replaces_every_connection(registry: PoolRegistry, shard_dsn: str) -> None:
    """recycle() drains the pool: the backend serving the next request is a new one."""
    assignment = ShardAssignment(shard_id="cycle", connection_string=shard_dsn)
    before = _run(registry, assignment, "SELECT pg_backend_pid() AS pid")[0]["pid"]
    assert registry.recycle("cycle") is True
    assert registry.recycle("nope") is False
    deadline = time.monotonic() + 10
    while _run(registry, assignment, "SELECT pg_backend_pid() AS pid")[0]["pid"] == before:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_gauges_are_scraped(registry: PoolRegistry, metrics: Metrics, shard_dsn: str) -> None:
    """Metrics.watch_pools(registry.gauges) exposes per-shard pool gauges at scrape time."""
    metrics.watch_pools(registry.gauges)
    _run(registry, ShardAssignment(shard_id="scraped", connection_string=shard_dsn))
    text = generate_latest(metrics.registry).decode()
    assert 'simplu_shard_pool_max_size{shard="scraped"} 2.0' in text


def test_closed_registry_refuses(metrics: Metrics, shard_dsn: str) -> None:
    """After close() (shutdown) a checkout is UNAVAILABLE rather than opening a new pool."""
    registry = PoolRegistry(metrics=metrics)
    registry.close()
    with pytest.raises(ShardUnavailable):
        _run(registry, ShardAssignment(shard_id="late", connection_string=shard_dsn))


@pytest.mark.parametrize("high_descriptors", [False, True], ids=["low-fds", "fds-above-1024"])
def test_reusing_an_idle_connection_costs_one_round_trip(
    metrics: Metrics, shard_dsn: str, high_descriptors: bool
) -> None:
    """A warm request on a connection idle for a minute is ONE PostgreSQL round trip (counted on the
    wire): the socket is polled, not pinged (DESIGN §1) — also when its descriptor is above 1024,
    where select() would refuse it."""
    filler: list[int] = []
    if high_descriptors:
        with open(os.devnull, "rb") as devnull:
            filler = [os.dup(devnull.fileno()) for _ in range(1100)]
    try:
        _count_warm_round_trips(metrics, shard_dsn)
    finally:
        for fd in filler:
            os.close(fd)


def _count_warm_round_trips(metrics: Metrics, shard_dsn: str) -> None:
    from bench.pgwire import PgRoundTripCounter

    target = urlsplit(shard_dsn)
    counter = PgRoundTripCounter(target.hostname or "127.0.0.1", target.port or 5432).start()
    clock = FakeClock(start=time.monotonic())
    registry = PoolRegistry(metrics=metrics, min_size=1, max_size=1, clock=clock)
    try:
        assignment = ShardAssignment(shard_id="warm", connection_string=counter.rewrite(shard_dsn))
        _run(registry, assignment)  # opens the pool and migrates the shard
        for idle in (0.0, 61.0, 600.0):
            clock.now += idle
            counter.reset()
            assert _run(registry, assignment) == [{"one": 1}]
            assert counter.round_trips() == 1, (idle, counter.messages())
    finally:
        registry.close()
        counter.stop()


def test_connection_closed_by_the_server_is_replaced_before_use(
    registry: PoolRegistry, shard_dsn: str
) -> None:
    """A pooled connection whose backend was terminated is noticed at checkout (its socket reads EOF)
    and replaced: the next request, a write, succeeds instead of failing UNAVAILABLE."""
    assignment = ShardAssignment(shard_id="killed", connection_string=shard_dsn)
    pid = _run(registry, assignment, "SELECT pg_backend_pid() AS pid")[0]["pid"]
    with psycopg.connect(shard_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, "the backend never exited"
            time.sleep(0.02)
    rows = _run(
        registry,
        assignment,
        "INSERT INTO resources (business_id, location_id, resource_type, resource_id, business_type)"
        " VALUES ('b', 'l', 'patients', 'r', 'dental') RETURNING pg_backend_pid() AS pid",
    )
    assert rows[0]["pid"] != pid


def test_first_use_migration_is_bounded_by_each_callers_deadline(
    registry: PoolRegistry, shard_dsn: str
) -> None:
    """While another replica holds the migration lock, the migrating request ends at ITS deadline with
    DEADLINE_EXCEEDED, and a request queued behind it in this process at its own (shorter) one."""
    assignment = ShardAssignment(shard_id="locked", connection_string=shard_dsn)
    with psycopg.connect(shard_dsn, autocommit=True) as other_replica:
        other_replica.execute("SELECT pg_advisory_lock(%s)", (migrator.ADVISORY_LOCK_KEY,))
        outcomes: dict[str, tuple[type[BaseException] | None, float]] = {}

        def request(name: str, seconds: float) -> None:
            started = time.monotonic()
            try:
                with context.bind(deadline=Deadline.after(seconds)):
                    _run(registry, assignment)
            except Exception as exc:
                outcomes[name] = (type(exc), time.monotonic() - started)
            else:
                outcomes[name] = (None, time.monotonic() - started)

        migrating = threading.Thread(target=request, args=("migrating", 1.5))
        migrating.start()
        deadline = time.monotonic() + 10
        while not other_replica.execute(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone():
            assert time.monotonic() < deadline, "the migration never waited for the lock"
            time.sleep(0.02)
        request("queued", 0.3)
        migrating.join(10)
        other_replica.execute("SELECT pg_advisory_unlock(%s)", (migrator.ADVISORY_LOCK_KEY,))
    assert outcomes["queued"][0] is DeadlineExceeded
    assert outcomes["queued"][1] < 0.8, outcomes
    assert outcomes["migrating"][0] is DeadlineExceeded
    assert outcomes["migrating"][1] < 2.5, outcomes
    assert _run(registry, assignment) == [{"one": 1}]
    assert registry.stats()[0].schema_version == migrator.latest_version()


def test_a_request_racing_shutdown_never_opens_a_new_pool(metrics: Metrics) -> None:
    """A request already past the closed-check when close() runs, on a failing shard whose pool it
    would replace, gets UNAVAILABLE instead of opening a pool nobody will ever close."""
    clock = FakeClock(start=time.monotonic())
    registry = PoolRegistry(metrics=metrics, connect_timeout=2.0, clock=clock)
    assignment = ShardAssignment(
        shard_id="racing", connection_string=f"postgresql://postgres@127.0.0.1:{_closed_port()}/x"
    )
    with context.bind(deadline=Deadline.after(5)), pytest.raises(ShardUnavailable):
        _run(registry, assignment)
    created = registry.pools_created
    # The racing request looked its pool up before close(); past the fail-fast window its
    # checkout loop then replaces the failing pool.
    looked_up = registry._pools["racing"]
    clock.now += 5
    registry.close()
    with pytest.raises(ShardUnavailable):
        registry._replace_failed(looked_up)
    assert registry.pools_created == created
    assert registry.stats() == []


# --- issue 9: checkout waits, threads, alarms, shutdown, unknown commits --------------------


def _outcome(registry: PoolRegistry, assignment: ShardAssignment, seconds: float, query: str) -> Any:
    """The exception a request with a ``seconds`` deadline ends with, or None; and how long it took."""
    started = time.monotonic()
    try:
        with context.bind(deadline=Deadline.after(seconds)):
            _run(registry, assignment, query)
    except Exception as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def test_callers_within_max_size_plus_max_waiting_are_served(metrics: Metrics, shard_dsn: str) -> None:
    """Pool of 2 + queue of 4: with both connections held, 4 callers wait as long as their deadline
    allows (no stale-waiter pile-up turns them away) and are served once connections come back; a 7th
    caller, with the queue truly full, is turned away at once with RESOURCE_EXHAUSTED."""
    registry = PoolRegistry(metrics=metrics, min_size=1, max_size=2, max_waiting=4)
    assignment = ShardAssignment(shard_id="queue", connection_string=shard_dsn)
    try:
        _run(registry, assignment)
        release = threading.Event()
        holding = threading.Barrier(3)

        def hold() -> None:
            with context.bind(deadline=Deadline.after(30)), registry.connection(assignment):
                holding.wait(10)
                release.wait(20)

        holders = [threading.Thread(target=hold) for _ in range(2)]
        for thread in holders:
            thread.start()
        holding.wait(10)
        with ThreadPoolExecutor(max_workers=4) as waiters:
            waits = [
                waiters.submit(_outcome, registry, assignment, 20.0, "SELECT 1 AS one") for _ in range(4)
            ]
            assert _eventually(lambda: registry.stats()[0].requests_waiting == 4)
            # Waiting a while is what piled up stale waiters (one per 0.1 s per caller) before.
            time.sleep(0.5)
            assert not any(wait.done() for wait in waits), [w.result() for w in waits if w.done()]
            seventh, took = _outcome(registry, assignment, 5.0, "SELECT 1 AS one")
            assert isinstance(seventh, ResourceExhausted), seventh
            assert seventh.reason == "SHARD_POOL_EXHAUSTED"
            assert took < 2.5  # turned away, not timed out
            release.set()
            assert [wait.result()[0] for wait in waits] == [None] * 4
        for thread in holders:
            thread.join(10)
        assert _metric(metrics, "queue", "exhausted") == 1
    finally:
        registry.close()


def test_a_burst_of_100_grows_the_pool_to_max_size_and_every_caller_is_served(
    metrics: Metrics, shard_dsn: str
) -> None:
    """100 concurrent callers on a pool of 10 + queue of 90: all are served and the pool grows to 10."""
    registry = PoolRegistry(metrics=metrics, min_size=1, max_size=10, max_waiting=90)
    assignment = ShardAssignment(shard_id="burst", connection_string=shard_dsn)
    try:
        _run(registry, assignment)
        with ThreadPoolExecutor(max_workers=100) as callers:
            outcomes = list(
                callers.map(
                    lambda _: _outcome(registry, assignment, 60.0, "SELECT pg_sleep(0.2) AS slept"),
                    range(100),
                )
            )
        assert [error for error, _ in outcomes] == [None] * 100
        (stats,) = registry.stats()
        assert stats.pool_size == 10
        assert stats.requests_waiting == 0
    finally:
        registry.close()


def test_a_blackholed_shard_answers_deadline_exceeded_or_unavailable_never_exhausted(
    metrics: Metrics, shard_dsn: str, fault_proxy: Callable[[str, int], FaultProxy]
) -> None:
    """Waves of concurrent callers of a blackholed shard (pool 2 + queue 4; the first wave within it,
    the later ones beyond it) each end with DEADLINE_EXCEEDED or UNAVAILABLE by their deadline."""
    target = urlsplit(shard_dsn)
    proxy = fault_proxy(target.hostname or "127.0.0.1", target.port or 5432)
    registry = PoolRegistry(metrics=metrics, min_size=1, max_size=2, max_waiting=4, connect_timeout=2.0)
    assignment = ShardAssignment(shard_id="void", connection_string=proxy.dsn(shard_dsn))
    try:
        _run(registry, assignment)
        proxy.blackhole()
        outcomes = []
        for size in (6, 8, 8, 8, 8):
            with ThreadPoolExecutor(max_workers=size) as callers:
                outcomes += list(
                    callers.map(lambda _: _outcome(registry, assignment, 0.7, "SELECT 1 AS one"), range(size))
                )
        kinds = {type(error).__name__ for error, _ in outcomes}
        assert all(isinstance(error, DeadlineExceeded | ShardUnavailable) for error, _ in outcomes), kinds
        assert max(took for _, took in outcomes) < 1.7, outcomes
        assert _metric(metrics, "void", "exhausted") == 0
    finally:
        proxy.heal()
        registry.close()


def test_a_deadline_spent_before_the_pool_is_deadline_exceeded(
    registry: PoolRegistry, metrics: Metrics, shard_dsn: str
) -> None:
    """A request whose deadline was used up before it reached the pool (on Citrus, say) is told
    DEADLINE_EXCEEDED, not that a healthy, idle pool is exhausted."""
    assignment = ShardAssignment(shard_id="late", connection_string=shard_dsn)
    _run(registry, assignment)
    with context.bind(deadline=Deadline(time.monotonic() - 0.01)), pytest.raises(DeadlineExceeded):
        _run(registry, assignment)
    assert _metric(metrics, "late", "exhausted") == 0


def _registry_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("shard-")]


def test_100_idle_shards_run_few_threads_each_pool_at_min_size(metrics: Metrics) -> None:
    """100 shard pools that served a request and went idle: the process runs at most 100 threads
    (the registry a handful, not a scheduler and a worker per pool), and each pool holds min_size
    connections (1), not one more. Uses a private PostgreSQL cluster: 100 connections would fill
    the shared server."""
    from simplu_grpc.devstack.postgres import ThrowawayCluster

    reason = ThrowawayCluster.available()
    if reason is not None:
        pytest.skip(f"needs a private PostgreSQL cluster: {reason}")
    with ThrowawayCluster(max_connections=250) as cluster:
        registry = PoolRegistry(metrics=metrics, min_size=1, max_size=10, worker_idle_exit=0.2)
        try:
            for index in range(100):
                assignment = ShardAssignment(shard_id=f"s{index:03}", connection_string=cluster.dsn())
                with context.bind(deadline=Deadline.after(30)):
                    _run(registry, assignment)
            assert len(registry.stats()) == 100
            assert _eventually(lambda: len(_registry_threads()) <= 3), _registry_threads()
            assert threading.active_count() <= 100, [t.name for t in threading.enumerate()]
            assert {s.pool_size for s in registry.stats()} == {1}
            with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
                row = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'simplu-grpc'"
                ).fetchone()
            assert row == (100,)
        finally:
            registry.close()


def test_an_idle_pool_is_closed_within_idle_close_plus_5_seconds(metrics: Metrics, shard_dsn: str) -> None:
    """With the default sweep, a pool unused for idle_close_seconds (1 s here) is closed at most 5 s later."""
    registry = PoolRegistry(metrics=metrics, idle_close_seconds=1)
    try:
        _run(registry, ShardAssignment(shard_id="sleepy", connection_string=shard_dsn))
        last_used = time.monotonic()
        pool = registry.pool("sleepy")
        assert pool is not None
        _eventually(lambda: pool.closed, timeout=10)
        assert pool.closed
        assert time.monotonic() - last_used <= 1 + 5
        assert registry.stats() == []
    finally:
        registry.close()


def test_finished_queries_leave_no_watchdog_alarm_behind(registry: PoolRegistry, shard_dsn: str) -> None:
    """2,000 requests with 1 h deadlines: once they finished, the watchdog holds (almost) no alarm, so
    memory does not grow with rate x client deadline."""
    assignment = ShardAssignment(shard_id="alarms", connection_string=shard_dsn)
    with context.bind(deadline=Deadline.after(3600)):
        for _ in range(2000):
            _run(registry, assignment)
    assert registry._watchdog.pending() <= 2


def test_shutdown_with_10_blackholed_shards_is_bounded(
    metrics: Metrics, shard_dsn: str, fault_proxy: Callable[[str, int], FaultProxy]
) -> None:
    """close() with 10 blackholed shards, each with a query stuck on a long deadline and a connection
    attempt hanging: it returns within about 2 s (not 2 s per shard), and the stuck queries are cut
    (DEADLINE_EXCEEDED) at once instead of holding their threads until their deadlines."""
    target = urlsplit(shard_dsn)
    registry = PoolRegistry(metrics=metrics, min_size=1, max_size=2, connect_timeout=10.0)
    proxies = [fault_proxy(target.hostname or "127.0.0.1", target.port or 5432) for _ in range(10)]
    assignments = [
        ShardAssignment(shard_id=f"stuck{i}", connection_string=p.dsn(shard_dsn))
        for i, p in enumerate(proxies)
    ]
    stuck: list[Any] = []
    threads = []
    try:
        for assignment in assignments:
            with ThreadPoolExecutor(max_workers=2) as warm:  # two connections per pool
                list(warm.map(lambda a: _run(registry, a, "SELECT pg_sleep(0.1)"), [assignment] * 2))
        for proxy in proxies:
            proxy.blackhole()
        for assignment in assignments:
            # One query cut by the watchdog: its pool starts a connection attempt that hangs.
            error, _ = _outcome(registry, assignment, 0.2, "SELECT 1 AS one")
            assert isinstance(error, DeadlineExceeded), error
            # One query with a long deadline, stuck on the other connection.
            thread = threading.Thread(
                target=lambda a=assignment: stuck.append(_outcome(registry, a, 120.0, "SELECT 1 AS one"))
            )
            thread.start()
            threads.append(thread)
        assert _eventually(lambda: sum(s.pool_size for s in registry.stats()) >= 20)
        started = time.monotonic()
        registry.close()
        assert time.monotonic() - started < 3.0
        for thread in threads:
            thread.join(timeout=max(0.1, started + 4.0 - time.monotonic()))
        assert len(stuck) == 10, "stuck queries were not cut at shutdown"
        assert all(isinstance(error, DeadlineExceeded) for error, _ in stuck), stuck
    finally:
        for proxy in proxies:
            proxy.heal()
        registry.close()
        for thread in threads:
            thread.join(10)


def test_a_write_whose_connection_is_lost_after_commit_was_sent_says_its_outcome_is_unknown(
    registry: PoolRegistry, shard_dsn: str, fault_proxy: Callable[[str, int], FaultProxy]
) -> None:
    """The connection is closed while the shard runs a write (COMMIT already sent): the caller hears
    UNAVAILABLE / COMMIT_OUTCOME_UNKNOWN, and indeed the write was applied; a read under the same
    fault is plain SHARD_UNAVAILABLE."""
    from simplu_grpc.errors import CommitOutcomeUnknown

    target = urlsplit(shard_dsn)
    proxy = fault_proxy(target.hostname or "127.0.0.1", target.port or 5432)
    assignment = ShardAssignment(shard_id="unsure", connection_string=proxy.dsn(shard_dsn))
    with psycopg.connect(shard_dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE writes (id int)")

        def cut_while(statement: str, *, write: bool) -> BaseException | None:
            failure: list[BaseException] = []

            def work() -> None:
                try:
                    with (
                        context.bind(deadline=Deadline.after(30)),
                        registry.connection(assignment) as session,
                    ):
                        session.run(statement, write=write)
                except Exception as exc:
                    failure.append(exc)

            thread = threading.Thread(target=work)
            thread.start()
            assert _eventually(
                lambda: (
                    admin.execute(
                        # This test's database only: the server is shared with other test runs.
                        "SELECT 1 FROM pg_stat_activity WHERE state = 'active'"
                        " AND datname = current_database()"
                        " AND query LIKE '%pg_sleep(0.5)%' AND pid <> pg_backend_pid()"
                    ).fetchone()
                    is not None
                )
            )
            proxy.refuse()  # closes the connection mid-statement (FIN), as a dying proxy or node would
            thread.join(10)
            proxy.heal()
            return failure[0] if failure else None

        lost_write = cut_while("INSERT INTO writes SELECT 1 FROM pg_sleep(0.5)", write=True)
        assert isinstance(lost_write, CommitOutcomeUnknown), lost_write
        assert lost_write.reason == "COMMIT_OUTCOME_UNKNOWN"
        assert "request_id" in lost_write.message
        # Unknown, and in fact applied: the shard committed after the client lost the connection.
        assert _eventually(lambda: admin.execute("SELECT count(*) FROM writes").fetchone() == (1,))
        # The pool saw its reconnect refused: it serves again after the fail-fast window.
        assert _eventually(lambda: _outcome(registry, assignment, 5.0, "SELECT 1 AS one")[0] is None)
        lost_read = cut_while("SELECT 1 AS one FROM pg_sleep(0.5)", write=False)
        assert isinstance(lost_read, ShardUnavailable), lost_read
        assert lost_read.reason == "SHARD_UNAVAILABLE"
