"""ResourceService under faults: shard failover, Citrus down, refusing and blackholed shards."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from simplu.v1 import resource_pb2

from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer
from simplu_grpc.domain.business.model import Business
from tests.fixtures.faultproxy import FaultProxy
from tests.fixtures.server import MakeServer
from tests.integration.resource_stack import ResourceStack, build_stack

pytestmark = pytest.mark.integration

MakeProxy = Callable[[str, int], FaultProxy]


@pytest.fixture
def make_stack(
    make_server: MakeServer,
    citrus: CitrusEmulator,
    moto_server: MotoServer,
    auth_settings: dict[str, Any],
    admin_token: str,
) -> Iterator[Callable[..., ResourceStack]]:
    built: list[ResourceStack] = []

    def make(**options: Any) -> ResourceStack:
        stack = build_stack(
            make_server=make_server,
            citrus=citrus,
            moto_server=moto_server,
            auth_settings=auth_settings,
            admin_token=admin_token,
            **options,
        )
        built.append(stack)
        return stack

    yield make
    for stack in built:
        stack.server.stop(0)
        stack.server.deps.close()


def _failure(call: Callable[[], Any]) -> tuple[grpc.RpcError, float]:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value, time.monotonic() - started


def _reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    if status is None:
        return ""
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


def _retry_delay(error: grpc.RpcError) -> timedelta | None:
    """The google.rpc.RetryInfo delay of an answer, None when it carries none."""
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(retry):
            return retry.retry_delay.ToTimedelta()
    return None


def _behind_proxy(stack: ResourceStack, business: Business, make_proxy: MakeProxy) -> tuple[str, FaultProxy]:
    """Register the business with Citrus and route its shard through a new fault proxy."""
    shard = stack.register(business)
    direct = stack.citrus.pg.dsn(stack.citrus.shard(shard).database, password=stack.citrus.shard_password)
    target = urlsplit(direct)
    proxy = make_proxy(target.hostname or "127.0.0.1", target.port or 5432)
    stack.citrus.move_shard(shard, proxy.dsn(direct))
    return shard, proxy


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _succeeds(call: Callable[[], Any]) -> bool:
    try:
        call()
    except grpc.RpcError:
        return False
    return True


def test_moved_shard_is_followed_and_no_acknowledged_write_is_lost(
    make_stack: Callable[..., ResourceStack], fault_proxy: MakeProxy
) -> None:
    """Citrus moves a shard to a new connection string and the old one dies: the next request
    (a create) succeeds on the new one, the old pool is closed, and every acknowledged write is there."""
    stack = make_stack()
    business = stack.add_business()
    neighbour = stack.add_business()
    shard, old_route = _behind_proxy(stack, business, fault_proxy)
    assert stack.register(neighbour) == shard
    written: dict[str, set[str]] = {business.id: set(), neighbour.id: set()}
    written[business.id].update(stack.create(business, data={"i": i}).resource_id for i in range(5))
    written[neighbour.id].add(stack.create(neighbour, data={"n": 1}).resource_id)
    old_pool = stack.pools.pool(shard)
    assert old_pool is not None

    direct = stack.citrus.pg.dsn(stack.citrus.shard(shard).database, password=stack.citrus.shard_password)
    target = urlsplit(direct)
    new_route = fault_proxy(target.hostname or "127.0.0.1", target.port or 5432)
    stack.citrus.move_shard(shard, new_route.dsn(direct))
    old_route.refuse()

    written[business.id].add(stack.create(business, data={"after": True}).resource_id)
    assert stack.pools.pool(shard) is not old_pool
    assert _eventually(lambda: old_pool.closed)
    assert new_route.accepted >= 1
    # The neighbour on the same shard follows without another Citrus lookup of its own.
    written[neighbour.id].add(stack.create(neighbour, data={"n": 2}).resource_id)
    assert stack.pools.pools_created == 2
    # Every acknowledged write is on the shard (read through the new route), and nothing else.
    for owner in (business, neighbour):
        listed = stack.stub.ListResources(
            resource_pb2.ListResourcesRequest(
                business_id=owner.id, location_id="main", resource_type="patients"
            ),
            metadata=stack.md(),
            timeout=10,
        )
        assert {r.resource_id for r in listed.resources} == written[owner.id]
    assert [len(ids) for ids in written.values()] == [6, 2]


def test_citrus_down_known_tenants_keep_working_unknown_get_unavailable(
    make_stack: Callable[..., ResourceStack],
) -> None:
    """With Citrus stopped, a tenant routed before keeps working (stale-while-error, TTL 0 here so every
    request would ask Citrus), while a never-seen tenant gets UNAVAILABLE / CITRUS_UNAVAILABLE
    within its deadline."""
    stack = make_stack(routing_ttl=0.0, routing_stale_max=3600.0, citrus_timeout_ms=500)
    known = stack.add_business()
    stranger = stack.add_business()
    created = stack.create(known)
    stack.citrus.stop()
    try:
        for _ in range(5):
            assert stack.get(known, created.resource_id, timeout=5).resource_id == created.resource_id
        assert stack.create(known, data={"while": "citrus down"}).resource_id
        error, elapsed = _failure(lambda: stack.create(stranger, timeout=3.0))
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        assert _reason(error) == "CITRUS_UNAVAILABLE"
        assert _retry_delay(error) == timedelta(seconds=2)
        assert elapsed < 3.0
    finally:
        stack.citrus.start()


def test_refusing_shard_is_unavailable_while_other_shards_serve_and_it_heals(
    make_stack: Callable[..., ResourceStack], fault_proxy: MakeProxy
) -> None:
    """A shard whose proxy refuses connections: its tenants get UNAVAILABLE / SHARD_UNAVAILABLE within
    the deadline, tenants on other shards see 100% success, and after heal() it recovers without restart."""
    stack = make_stack()
    healthy = [stack.add_business() for _ in range(3)]
    for business in healthy:
        stack.register(business)
    victim = stack.add_business()
    shard, proxy = _behind_proxy(stack, victim, fault_proxy)
    assert shard != stack.shard_of(healthy[0])
    kept = [stack.create(b).resource_id for b in healthy]
    victim_id = stack.create(victim).resource_id

    proxy.refuse()
    for _ in range(3):
        error, elapsed = _failure(lambda: stack.get(victim, victim_id, timeout=3.0))
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        assert _reason(error) == "SHARD_UNAVAILABLE"
        assert _retry_delay(error) == timedelta(seconds=2)
        assert elapsed < 3.0
        for business, resource_id in zip(healthy, kept, strict=True):
            assert stack.get(business, resource_id, timeout=3.0).resource_id == resource_id
    ok = sum(
        _succeeds(functools.partial(stack.get, b, r, timeout=3.0))
        for b, r in zip(healthy * 7, kept * 7, strict=True)
    )
    assert ok == 21

    proxy.heal()
    assert _eventually(lambda: _succeeds(lambda: stack.get(victim, victim_id, timeout=3.0)), timeout=10)


def test_blackholed_shard_answers_at_the_deadline_never_hangs(
    make_stack: Callable[..., ResourceStack], fault_proxy: MakeProxy
) -> None:
    """A shard that swallows every packet: requests end with DEADLINE_EXCEEDED or UNAVAILABLE at their
    deadline (established connections and new connects alike), and the shard recovers after heal()."""
    stack = make_stack()
    business = stack.add_business()
    _, proxy = _behind_proxy(stack, business, fault_proxy)
    resource_id = stack.create(business).resource_id

    proxy.blackhole()
    for _ in range(2):
        error, elapsed = _failure(lambda: stack.get(business, resource_id, timeout=1.5))
        assert error.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
        assert elapsed < 2.5
    proxy.heal()
    assert _eventually(lambda: _succeeds(lambda: stack.get(business, resource_id, timeout=3.0)), timeout=15)


def test_a_saturated_shard_pool_is_resource_exhausted_with_a_retry_delay(
    make_stack: Callable[..., ResourceStack],
) -> None:
    """One connection per shard and room for one waiting request: while the connection is held by a
    request blocked on a row lock, two more requests compete for the one queue slot and (at least)
    one is refused before its deadline with RESOURCE_EXHAUSTED / SHARD_POOL_EXHAUSTED, its shard id
    and a RetryInfo. The held request completes once the lock is released; each contender either
    got its resource or that same refusal."""
    stack = make_stack(pool_max_size=1, pool_max_waiting=1)
    business = stack.add_business()
    made: list[resource_pb2.Resource] = []
    # The first request on a new pool may itself be refused while the connection is being made.
    assert _eventually(lambda: _succeeds(lambda: made.append(stack.create(business, data={"n": 1}))))
    created = made[0]
    shard = stack.shard_of(business)
    update = resource_pb2.UpdateResourceRequest(
        resource=resource_pb2.Resource(
            business_id=business.id,
            location_id="main",
            resource_type="patients",
            resource_id=created.resource_id,
            data=created.data,
        ),
    )
    update.update_mask.paths.append("data")

    def get() -> Any:
        return stack.get(business, created.resource_id, timeout=20)

    with ThreadPoolExecutor(max_workers=3) as executor:
        with stack.row_locked(business, created.resource_id):
            held = executor.submit(lambda: stack.stub.UpdateResource(update, metadata=stack.md(), timeout=20))
            stack.wait_for_lock_waiters(business)
            contenders = [executor.submit(get), executor.submit(get)]
            done, _ = wait(contenders, timeout=15, return_when=FIRST_COMPLETED)
            assert done, "no request was refused while the pool was saturated"
            first = done.pop().exception()
            assert first is not None, "a request was served while the only connection was held"
        assert held.result(timeout=20).resource_id == created.resource_id
        outcomes = [f.exception(timeout=20) for f in contenders]
    for refused in outcomes:
        if refused is None:
            continue
        assert isinstance(refused, grpc.RpcError)
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.details()
        assert _reason(refused) == "SHARD_POOL_EXHAUSTED"
        assert _retry_delay(refused) == timedelta(milliseconds=500)
        status = rpc_status.from_call(refused)
        assert status is not None
        info = error_details_pb2.ErrorInfo()
        assert any(detail.Unpack(info) for detail in status.details)
        assert info.metadata["shard_id"] == shard


def test_concurrent_callers_of_a_blackholed_shard_never_hear_resource_exhausted(
    make_stack: Callable[..., ResourceStack], fault_proxy: MakeProxy
) -> None:
    """Waves of 12 concurrent reads of a blackholed shard (pool of 4) for a few seconds: every one
    ends with DEADLINE_EXCEEDED or UNAVAILABLE by its deadline, none with RESOURCE_EXHAUSTED (stale
    waiters once filled the queue and made a silent shard look saturated)."""
    from concurrent.futures import ThreadPoolExecutor

    stack = make_stack()
    business = stack.add_business()
    _, proxy = _behind_proxy(stack, business, fault_proxy)
    resource_id = stack.create(business).resource_id

    proxy.blackhole()
    failures: list[tuple[grpc.RpcError, float]] = []
    with ThreadPoolExecutor(max_workers=12) as callers:
        for _ in range(3):
            failures += callers.map(
                lambda _: _failure(lambda: stack.get(business, resource_id, timeout=1.0)), range(12)
            )
    codes = {error.code() for error, _ in failures}
    assert codes <= {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE}, codes
    assert max(elapsed for _, elapsed in failures) < 2.0
    proxy.heal()
    assert _eventually(lambda: _succeeds(lambda: stack.get(business, resource_id, timeout=3.0)), timeout=15)
