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
from simplu_grpc.adapters import migrator
from simplu_grpc.adapters.pools import PoolRegistry
from simplu_grpc.context import Deadline
from simplu_grpc.domain.shards import ShardAssignment
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
        "INSERT INTO resources (business_id, location_id, resource_name, resource_id, business_type)"
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
