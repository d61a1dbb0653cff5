"""Dependency outages on a server wired as in production (wiring.build_deps): Citrus hung, refusing or
down; DynamoDB refused or blackholed behind a fault proxy in front of moto; a shard Citrus marks
inactive; a shard moved and moved back. Short TTLs stand in for minutes."""

from __future__ import annotations

import functools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2
from simplu.v1 import business_pb2, resource_pb2, shard_admin_pb2

from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer, create_business_table
from simplu_grpc.health import READINESS
from tests.fixtures.citrus import CITRUS_API_KEY
from tests.fixtures.faultproxy import FaultProxy
from tests.fixtures.server import MakeServer, RunningServer

pytestmark = pytest.mark.integration

REGION = "us-east-1"
MakeProxy = Callable[[str, int], FaultProxy]


@dataclass
class Wired:
    """A production-wired server whose DynamoDB is reached through ``dynamodb`` (a fault proxy)."""

    server: RunningServer
    citrus: CitrusEmulator
    dynamodb: FaultProxy
    token: str

    def md(self) -> tuple[tuple[str, str | bytes], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    def new_business(self, location_ids: tuple[str, ...] = ("main",)) -> str:
        created = self.server.business.CreateBusiness(
            business_pb2.CreateBusinessRequest(
                business=business_pb2.Business(
                    name="Clinic",
                    type=business_pb2.BUSINESS_TYPE_DENTAL,
                    locations=[business_pb2.Location(id=loc, name=loc) for loc in location_ids],
                )
            ),
            metadata=self.md(),
            timeout=10,
        )
        return str(created.business.id)

    def create(self, business_id: str, timeout: float = 10) -> str:
        resource = resource_pb2.Resource(
            business_id=business_id, location_id="main", resource_type="patients"
        )
        created = self.server.resource.CreateResource(
            resource_pb2.CreateResourceRequest(resource=resource), metadata=self.md(), timeout=timeout
        )
        return str(created.resource_id)

    def get(self, business_id: str, resource_id: str, timeout: float = 2.0) -> resource_pb2.Resource:
        return self.server.resource.GetResource(
            resource_pb2.GetResourceRequest(
                business_id=business_id, location_id="main", resource_type="patients", resource_id=resource_id
            ),
            metadata=self.md(),
            timeout=timeout,
        )

    def shard_of(self, business_id: str) -> str:
        return self.citrus.registrations()[f"{business_id}-main"]

    def metric(self, name: str, labels: dict[str, str]) -> float | None:
        return self.server.deps.metrics.registry.get_sample_value(name, labels)

    def citrus_lookups_sent(self) -> float:
        """Route lookups this server attempted (whatever their outcome, refused connects included)."""
        return sum(
            sample.value
            for family in self.server.deps.metrics.registry.collect()
            for sample in family.samples
            if sample.name == "simplu_dependency_calls_total"
            and sample.labels.get("dependency") == "citrus"
            and sample.labels.get("operation") in ("get_shard", "register")
        )


@pytest.fixture
def wired(
    make_server: MakeServer,
    moto_server: MotoServer,
    citrus: CitrusEmulator,
    fault_proxy: MakeProxy,
    admin_token: str,
) -> Callable[..., Wired]:
    """Factory: ``wired(**settings overrides)`` -> a started Wired server."""

    def make(**overrides: Any) -> Wired:
        table = f"biz-{secrets.token_hex(4)}"
        create_business_table(moto_server.url, REGION, table)
        moto = urlsplit(moto_server.url)
        proxy = fault_proxy(moto.hostname or "127.0.0.1", moto.port or 80)
        settings: dict[str, Any] = {
            "dynamodb_endpoint": f"http://127.0.0.1:{proxy.port}",
            "dynamodb_business_info_table": table,
            "citrus_server_url": citrus.url,
            "citrus_api_key": CITRUS_API_KEY,
            "citrus_retry_attempts": 1,
            **overrides,
        }
        return Wired(server=make_server(**settings), citrus=citrus, dynamodb=proxy, token=admin_token)

    return make


def _eventually(call: Callable[[], Any], timeout: float = 10.0) -> bool:
    """Whether ``call`` succeeds within ``timeout`` (polled)."""
    end = time.monotonic() + timeout
    while True:
        try:
            call()
            return True
        except grpc.RpcError:
            if time.monotonic() > end:
                return False
            time.sleep(0.1)


def _outcomes(calls: Sequence[Callable[[], Any]], seconds: float) -> tuple[int, list[grpc.StatusCode]]:
    """Run the calls round-robin for ``seconds``; (how many ran, the codes of those that failed)."""
    failures: list[grpc.StatusCode] = []
    ran = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for call in calls:
            ran += 1
            try:
                call()
            except grpc.RpcError as exc:
                failures.append(exc.code())
    return ran, failures


@pytest.mark.parametrize("fault", ["hung", "refusing", "stopped"])
def test_citrus_outage_cached_tenants_never_fail_and_each_route_is_retried_once_per_backoff(
    wired: Callable[..., Wired], fault: str
) -> None:
    """Citrus hangs (longer than the requests' deadline), answers 503, or is gone: tenants whose routes
    are cached (though expired: TTL 0.2 s) get 100 % of their requests served, none waits on Citrus,
    and Citrus sees at most one lookup per route per backoff interval."""
    backoff = 0.5
    stack = wired(
        routing_cache_ttl_seconds=0.2,
        routing_stale_max_seconds=3600.0,
        cache_failure_backoff_seconds=backoff,
        citrus_timeout_ms=5000,
    )
    tenants = [stack.new_business() for _ in range(4)]
    resources = [stack.create(business_id) for business_id in tenants]
    time.sleep(0.3)  # every route expires: from now on each lookup would ask Citrus
    stack.citrus.reset_calls()
    sent_before = stack.citrus_lookups_sent()
    if fault == "hung":
        stack.citrus.set_delay(30)
    elif fault == "refusing":
        stack.citrus.fail_with(503)
    else:
        stack.citrus.stop()
    try:
        started = time.monotonic()
        calls = [
            functools.partial(stack.get, b, r, timeout=1.0) for b, r in zip(tenants, resources, strict=True)
        ]
        ran, failures = _outcomes(calls, seconds=2.0)
        elapsed = time.monotonic() - started
        received = stack.citrus.calls["get_shard"] + stack.citrus.calls["register"]
        sent = stack.citrus_lookups_sent() - sent_before
    finally:
        stack.citrus.heal()
        stack.citrus.start()
    assert failures == []
    assert ran >= 40
    # One lookup per route per backoff interval at most (+1: the first one of each route), counted
    # where Citrus receives them and where this server finished them (a stopped Citrus receives
    # nothing; a hung one finishes nothing within the test).
    bound = len(tenants) * (elapsed / backoff + 1)
    assert sent <= bound
    assert received <= bound
    assert max(sent, received) >= 1


@pytest.mark.parametrize("fault", ["refused", "blackholed"])
def test_dynamodb_outage_known_businesses_keep_all_resource_traffic(
    wired: Callable[..., Wired], fault: str
) -> None:
    """DynamoDB refuses connections or swallows every packet for many business-cache TTLs: requests
    of businesses this server knows are all served (stale business info, refreshed in the
    background), a business it never saw fails by its deadline, and traffic recovers after."""
    stack = wired(
        business_cache_ttl_seconds=0.2,
        business_cache_stale_max_seconds=120.0,
        cache_failure_backoff_seconds=0.5,
        dynamodb_timeout_ms=1000,
    )
    known = [stack.new_business() for _ in range(3)]
    resources = [stack.create(business_id) for business_id in known]
    stranger = stack.new_business()
    stack.server.deps.business_cache.invalidate(stranger)  # type: ignore[union-attr]  # wired: present
    getattr(stack.dynamodb, "refuse" if fault == "refused" else "blackhole")()
    try:
        calls = [
            functools.partial(stack.get, b, r, timeout=1.5) for b, r in zip(known, resources, strict=True)
        ]
        ran, failures = _outcomes(calls, seconds=2.5)  # > 12 TTLs
        with pytest.raises(grpc.RpcError) as caught:
            stack.create(stranger, timeout=1.5)
    finally:
        stack.dynamodb.heal()
    assert failures == []
    assert ran >= 30
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    # Recovered once the remembered failure's backoff (0.5 s) is over.
    assert _eventually(lambda: stack.create(stranger, timeout=10))


def test_hung_dynamodb_requests_end_at_their_deadline_and_readiness_keeps_answering(
    wired: Callable[..., Wired], caplog: pytest.LogCaptureFixture
) -> None:
    """DynamoDB blackholed (its calls would each wait the 3 s DYNAMODB_TIMEOUT): requests that need
    it end on the server at their 1 s deadline, not seconds later, so 12 clients in a loop never
    fill the 16 workers, and readiness answers (SERVING: Citrus is up) within 1 s throughout."""
    stack = wired(dynamodb_timeout_ms=3000, cache_failure_backoff_seconds=0.0)
    business_ids = [stack.new_business() for _ in range(12)]
    cache = stack.server.deps.business_cache
    assert cache is not None
    cache.invalidate()  # every request must read DynamoDB
    stack.dynamodb.blackhole()
    stop = threading.Event()
    codes: list[grpc.StatusCode] = []

    def client(business_id: str) -> None:
        while not stop.is_set():
            try:
                stack.server.business.GetBusiness(
                    business_pb2.GetBusinessRequest(business_id=business_id), metadata=stack.md(), timeout=1.0
                )
            except grpc.RpcError as exc:
                codes.append(exc.code())

    clients = [threading.Thread(target=client, args=(b,)) for b in business_ids]
    health: list[int] = []
    try:
        with caplog.at_level(logging.INFO, logger="simplu_grpc.access"):
            for thread in clients:
                thread.start()
            end = time.monotonic() + 4.0
            while time.monotonic() < end:
                health.append(stack.server.health_status(READINESS, timeout=1.0))
                time.sleep(0.2)
            stop.set()
            for thread in clients:
                thread.join(10)
    finally:
        stop.set()
        stack.dynamodb.heal()
    assert set(health) == {health_pb2.HealthCheckResponse.SERVING}
    assert codes
    assert set(codes) <= {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE}
    durations = [
        float(getattr(r, "duration_ms", 0.0)) for r in caplog.records if "GetBusiness" in r.getMessage()
    ]
    assert durations
    # Each ends at its deadline (typically 5-20 ms past it here), never after the 3 s read timeout.
    # The bound is loose because this shared test machine stalls whole processes for a few
    # hundred ms at times: the 100 ms target is not asserted here.
    assert max(durations) < 1000 + 1000, sorted(durations)[-5:]


def test_an_inactive_shard_keeps_serving_its_tenants_takes_no_new_ones_and_shows_the_flag(
    wired: Callable[..., Wired],
) -> None:
    """Citrus marks a shard isActive=false: its existing tenants are served (they used to get
    UNAVAILABLE), a new business lands on another shard, ListShards says inactive and the
    simplu_shard_active gauge is 0."""
    stack = wired(routing_cache_ttl_seconds=0.2, routing_stale_max_seconds=3600.0)
    tenant = stack.new_business()
    resource_id = stack.create(tenant)
    shard = stack.shard_of(tenant)
    assert stack.metric("simplu_shard_active", {"shard": shard}) == 1.0
    stack.citrus.set_active(shard, False)
    assert stack.server.deps.routing is not None
    stack.server.deps.routing.invalidate()
    for _ in range(5):
        assert stack.get(tenant, resource_id).resource_id == resource_id
    assert stack.create(tenant)
    newcomer = stack.new_business()
    stack.create(newcomer)
    assert stack.shard_of(newcomer) != shard
    assert stack.metric("simplu_shard_active", {"shard": shard}) == 0.0
    listed = stack.server.admin.ListShards(
        shard_admin_pb2.ListShardsRequest(), metadata=stack.md(), timeout=10
    )
    flags = {s.shard_id: s.active for s in listed.shards}
    assert flags[shard] is False
    assert flags[stack.shard_of(newcomer)] is True


def test_a_shard_moved_back_to_its_previous_address_is_followed_at_once(
    wired: Callable[..., Wired], fault_proxy: MakeProxy
) -> None:
    """Citrus fails a shard over from A to B, then (seconds later) back to A and B dies: after
    InvalidateRouting the next request reaches A (the pool registry used to keep B for 60 s)."""
    stack = wired()
    tenant = stack.new_business()
    shard = stack.shard_of(tenant)
    direct = stack.citrus.shard(shard).connection_string
    target = urlsplit(direct)
    first = fault_proxy(target.hostname or "127.0.0.1", target.port or 5432)
    second = fault_proxy(target.hostname or "127.0.0.1", target.port or 5432)
    stack.citrus.move_shard(shard, first.dsn(direct))
    assert stack.server.deps.routing is not None
    stack.server.deps.routing.invalidate()
    resource_id = stack.create(tenant)
    assert first.accepted >= 1

    stack.citrus.move_shard(shard, second.dsn(direct))
    first.refuse()
    assert stack.get(tenant, resource_id, timeout=5).resource_id == resource_id  # followed to B
    assert second.accepted >= 1

    first.heal()
    stack.citrus.move_shard(shard, first.dsn(direct))
    second.refuse()
    dropped = stack.server.admin.InvalidateRouting(
        shard_admin_pb2.InvalidateRoutingRequest(business_id=tenant), metadata=stack.md(), timeout=10
    )
    assert dropped.dropped >= 1
    accepted = first.accepted
    assert stack.get(tenant, resource_id, timeout=5).resource_id == resource_id
    assert first.accepted > accepted
