"""ShardAdmin domain logic without servers: usage math, probe bounds, redaction, argument checks."""

from __future__ import annotations

import threading
import time

import pytest

from simplu_grpc import context
from simplu_grpc.context import Deadline
from simplu_grpc.domain.admin.console import ShardAdmin
from simplu_grpc.domain.admin.dependencies import DependencyProber, run_bounded
from simplu_grpc.domain.admin.shards import UsageOrder, is_near_capacity, usage_percentage
from simplu_grpc.domain.placement.shards import CapacityInfo
from simplu_grpc.errors import CitrusUnavailable, InvalidArgument, NotFound, ShardUnavailable
from simplu_grpc.redact import describe_error
from tests.unit.admin_memory import (
    API_KEY,
    SECRET_PW,
    FakeRouting,
    FakeShards,
    MemoryBusinesses,
    console,
    shard,
)


def service(shards: FakeShards, routing: FakeRouting | None = None) -> ShardAdmin:
    return console(shards, routing)


def test_usage_percentage_is_rounded_to_two_decimals() -> None:
    """Usage % is count / max * 100 rounded to 2 decimals, and 0 when the maximum is unknown."""
    assert usage_percentage(2, 3) == 66.67
    assert usage_percentage(1, 3) == 33.33
    assert usage_percentage(3, 3) == 100.0
    assert usage_percentage(5, 0) == 0.0


def test_near_capacity_starts_at_the_threshold() -> None:
    """A shard at or above the threshold is near capacity; below it is not."""
    assert is_near_capacity(80.0, 80.0)
    assert is_near_capacity(100.0, 80.0)
    assert not is_near_capacity(79.99, 80.0)


def test_shard_usage_sorts_and_filters() -> None:
    """GetShardUsage orders by usage either way (ties by id) and can keep only near-capacity shards."""
    admin = service(FakeShards([shard("shard-02", 1), shard("shard-01", 3), shard("shard-03", 2)]))
    by_id = admin.shards.shard_usage(UsageOrder.BY_SHARD_ID, near_capacity_only=False)
    assert [r.shard_id for r in by_id] == ["shard-01", "shard-02", "shard-03"]
    desc = admin.shards.shard_usage(UsageOrder.USAGE_DESC, near_capacity_only=False)
    assert [(r.shard_id, r.usage_percentage) for r in desc] == [
        ("shard-01", 100.0),
        ("shard-03", 66.67),
        ("shard-02", 33.33),
    ]
    asc = admin.shards.shard_usage(UsageOrder.USAGE_ASC, near_capacity_only=False)
    assert [r.shard_id for r in asc] == ["shard-02", "shard-03", "shard-01"]
    near = admin.shards.shard_usage(UsageOrder.BY_SHARD_ID, near_capacity_only=True)
    assert [r.shard_id for r in near] == ["shard-01"]


def test_unknown_usage_is_reported_as_unknown_not_invented() -> None:
    """Counts Citrus did not report stay unknown: no usage %, never near capacity, left out of
    near_capacity_only, sorted after the known shards; CheckShardCapacity keeps them unknown too."""
    admin = service(
        FakeShards([shard("shard-01", None, 3), shard("shard-02", 3, None), shard("shard-03", 3)])
    )
    rows = admin.shards.shard_usage(UsageOrder.USAGE_DESC, near_capacity_only=False)
    assert [
        (r.shard_id, r.business_count, r.max_businesses, r.usage_percentage, r.near_capacity) for r in rows
    ] == [
        ("shard-03", 3, 3, 100.0, True),
        ("shard-01", None, 3, None, False),
        ("shard-02", 3, None, None, False),
    ]
    assert [r.shard_id for r in admin.shards.shard_usage(UsageOrder.USAGE_ASC, near_capacity_only=False)] == [
        "shard-03",
        "shard-01",
        "shard-02",
    ]
    assert [
        r.shard_id for r in admin.shards.shard_usage(UsageOrder.BY_SHARD_ID, near_capacity_only=True)
    ] == ["shard-03"]
    listed = {v.shard_id: v for v in admin.shards.list_shards().shards}
    assert (listed["shard-01"].usage_percentage, listed["shard-01"].near_capacity) == (None, False)

    class UnknownCapacity(FakeShards):
        def capacity(self, shard_id: str) -> CapacityInfo | None:
            return CapacityInfo(shard_id=shard_id, can_accept_new_business=True)

    capacity = service(UnknownCapacity([])).shards.check_capacity("shard-01")
    assert (capacity.business_count, capacity.max_businesses) == (None, None)


def test_list_shards_answers_without_citrus() -> None:
    """ListShards with Citrus down says so (redacted) instead of failing."""
    result = service(FakeShards([], down=True)).shards.list_shards()
    assert not result.citrus_reachable
    assert "CITRUS_UNAVAILABLE" in result.citrus_error
    assert result.shards == []


def test_invalidate_routing_argument_rules() -> None:
    """One location, one business or all; a location without business, or all with ids, is rejected."""
    routing = FakeRouting()
    admin = service(FakeShards([]), routing)
    assert admin.locations.invalidate_routing("b1", "l1", everything=False) == 7
    assert admin.locations.invalidate_routing("b1", "", everything=False) == 7
    assert admin.locations.invalidate_routing("", "", everything=True) == 7
    assert routing.calls == [("b1", "l1"), ("b1", None), (None, None)]
    for args in (("", "", False), ("", "l1", False), ("b1", "", True)):
        with pytest.raises(InvalidArgument):
            admin.locations.invalidate_routing(*args)


def test_recycle_unknown_pool_is_not_found() -> None:
    """RecyclePool of a shard this server has no pool for is NOT_FOUND."""
    with pytest.raises(NotFound):
        service(FakeShards([])).shards.recycle_pool("shard-09")


def test_prober_reports_hung_probe_down_within_budget() -> None:
    """A probe that never returns is reported down after the probe timeout; the others still report."""
    release = threading.Event()
    prober = DependencyProber(probe_timeout=0.3)

    def hang() -> None:
        release.wait(10)

    def boom() -> None:
        raise ShardUnavailable(f"cannot reach postgresql://u:{SECRET_PW}@h:1/db with key {API_KEY}")

    started = time.monotonic()
    try:
        results = prober.run({"hung": hang, "ok": lambda: None, "broken": boom})
    finally:
        release.set()
    elapsed = time.monotonic() - started
    assert elapsed < 1.0
    by_name = {r.name: r for r in results}
    assert [r.name for r in results] == ["hung", "ok", "broken"]
    assert not by_name["hung"].up
    assert "no answer within" in by_name["hung"].error
    assert by_name["hung"].latency_seconds is None  # not measured: GetDependencyStatus leaves it unset
    assert by_name["ok"].latency_seconds is not None
    assert by_name["broken"].latency_seconds is not None
    assert by_name["ok"].up
    assert by_name["ok"].error == ""
    assert not by_name["broken"].up
    assert SECRET_PW not in by_name["broken"].error
    assert "SHARD_UNAVAILABLE" in by_name["broken"].error


def test_prober_binds_a_deadline_in_the_probe_thread() -> None:
    """Adapters inside a probe see a deadline no longer than the probe timeout."""
    seen: list[float] = []
    DependencyProber(probe_timeout=0.5).run({"x": lambda: seen.append(context.deadline().remaining())})
    assert seen
    assert 0 < seen[0] <= 0.5


def test_prober_never_waits_past_the_rpc_deadline() -> None:
    """With less RPC time left than the probe timeout, the budget shrinks to fit."""
    release = threading.Event()
    with context.bind(deadline=Deadline.after(0.4)):
        started = time.monotonic()
        results = DependencyProber(probe_timeout=5).run({"hung": lambda: release.wait(10)})
    release.set()
    assert time.monotonic() - started < 1.0
    assert not results[0].up


def test_error_texts_never_carry_secrets() -> None:
    """DSN passwords, key=value passwords and named secrets are scrubbed from error texts."""
    text = f"postgresql://postgres:{SECRET_PW}@db:5432/x password={SECRET_PW} key {API_KEY}"
    cleaned = describe_error(RuntimeError(text), [API_KEY])
    assert SECRET_PW not in cleaned
    assert API_KEY not in cleaned
    assert cleaned.startswith("RuntimeError: postgresql://postgres:***@db:5432/x")
    assert API_KEY not in describe_error(RuntimeError(f"bad key {API_KEY}"), [API_KEY])
    assert len(describe_error(RuntimeError("x" * 1000))) == 300


def test_run_bounded_returns_results_errors_and_timeouts() -> None:
    """run_bounded maps each call to its value, its exception, or a TimeoutError when too slow."""
    release = threading.Event()
    out = run_bounded(
        {"v": lambda: 3, "e": lambda: 1 / 0, "slow": lambda: release.wait(5)},
        timeout=0.2,
    )
    release.set()
    assert out["v"] == 3
    assert isinstance(out["e"], ZeroDivisionError)
    assert isinstance(out["slow"], TimeoutError)


def test_malformed_ids_are_invalid_argument_before_any_lookup() -> None:
    """Ids that break DESIGN §4 (a '-' in a business id, control characters, 65+ characters) are
    INVALID_ARGUMENT with the field named, on every admin call that takes them; nothing is looked up."""
    routing = FakeRouting()
    admin = service(FakeShards([shard("shard-01", 1)]), routing)
    cases = [
        (lambda: admin.locations.location_shard("a-b", "l1", refresh=False), "business_id"),
        (lambda: admin.locations.location_shard("b1", "bad id", refresh=True), "location_id"),
        (lambda: admin.locations.register_location("b1", "l" * 65, None), "location_id"),
        (lambda: admin.locations.register_location("", "l1", None), "business_id"),
        (lambda: admin.locations.invalidate_routing("a-b", "", everything=False), "business_id"),
        (lambda: admin.locations.invalidate_routing("b1", "l\n1", everything=False), "location_id"),
        (lambda: admin.shards.check_capacity("shard\x00"), "shard_id"),
        (lambda: admin.shards.recycle_pool("s" * 200), "shard_id"),
        (lambda: admin.migrations.migrate("", all_shards=False), "shard_id"),
        (lambda: admin.consistency.check("a-b", 0, ""), "business_id"),
    ]
    for call, field in cases:
        with pytest.raises(InvalidArgument) as raised:
            call()
        assert [v.field for v in raised.value.violations] == [field]
    assert routing.calls == []


def test_unknown_enum_numbers_are_invalid_argument() -> None:
    """proto3 lets any number through an enum field: an unknown business type is rejected, not
    silently replaced by a default; so is an order_by the server does not know."""
    from simplu.v1 import shard_admin_pb2

    from simplu_grpc.domain.auth.authz import Authorizer
    from simplu_grpc.domain.auth.principal import Principal
    from simplu_grpc.services.shard_admin import ShardAdminServicer

    servicer = ShardAdminServicer(
        admin=service(FakeShards([shard("shard-01", 1)])),
        authorizer=Authorizer(admin_group="admin"),
        moves=None,  # type: ignore[arg-type]  # the location-move RPCs are not called here
    )
    operator = Principal(
        subject="op", username="op", token_use="access", client_id="app", groups=frozenset({"admin"})
    )
    with context.bind(principal=operator):
        with pytest.raises(InvalidArgument) as order:
            servicer.GetShardUsage(shard_admin_pb2.GetShardUsageRequest(order_by="99"), None)  # type: ignore[arg-type]  # the servicer ignores its context
        assert [v.field for v in order.value.violations] == ["order_by"]
        with pytest.raises(InvalidArgument) as kind:
            servicer.RegisterLocation(
                shard_admin_pb2.RegisterLocationRequest(business_id="b1", location_id="l1", business_type=42),
                None,  # type: ignore[arg-type]  # the servicer ignores its context
            )
        assert [v.field for v in kind.value.violations] == ["business_type"]
        usage = servicer.GetShardUsage(shard_admin_pb2.GetShardUsageRequest(), None)  # type: ignore[arg-type]  # the servicer ignores its context
        assert [row.shard_id for row in usage.usage] == ["shard-01"]


def test_register_location_reports_the_registration_through_on_registered() -> None:
    """RegisterLocation hands the registration to on_registered (BusinessOps.note_registered, which
    also refreshes the business cache) instead of writing business info itself; a failing callback
    does not fail the registration."""
    from simplu_grpc.domain.business.model import Business, BusinessType, Location
    from simplu_grpc.errors import BusinessStoreUnavailable

    business = Business(
        id="b1",
        name="B",
        type=BusinessType.DENTAL,
        locations=(Location(id="l1", name="l1"),),
        unregistered_location_ids=("l1",),
    )

    noted: list[tuple[str, str]] = []
    admin = console(
        FakeShards([shard("shard-01", 1)]),
        businesses=MemoryBusinesses(business),
        on_registered=lambda b, loc: noted.append((b, loc)),
    )
    view = admin.locations.register_location("b1", "l1", None)
    assert view.shard_id == "shard-01"
    assert noted == [("b1", "l1")]

    def fail(business_id: str, location_id: str) -> None:
        raise BusinessStoreUnavailable("DynamoDB is down")

    failing = console(
        FakeShards([shard("shard-01", 1)]), businesses=MemoryBusinesses(business), on_registered=fail
    )
    assert failing.locations.register_location("b1", "l1", None).shard_id == "shard-01"


def test_dependency_status_uses_the_given_citrus_probe() -> None:
    """The Citrus check is the probe wiring passes (CitrusClient.probe), like every other probe;
    without one (single-database mode) no Citrus line is reported."""
    calls: list[str] = []

    def citrus_probe() -> None:
        calls.append("citrus")
        raise CitrusUnavailable("Citrus is unreachable")

    admin = console(FakeShards([]), probes={"dynamodb": lambda: None, "citrus": citrus_probe})
    status = {check.name: check.up for check in admin.dependencies.dependency_status()}
    assert status == {"dynamodb": True, "citrus": False}
    assert calls == ["citrus"]
    assert [c.name for c in service(FakeShards([])).dependencies.dependency_status()] == []


def test_dependency_status_leaves_an_unmeasured_latency_unset() -> None:
    """A probe that did not answer has no latency on the wire (absent, not 0 s); one that did has it."""
    from simplu.v1 import shard_admin_pb2

    from simplu_grpc.domain.auth.authz import Authorizer
    from simplu_grpc.domain.auth.principal import Principal
    from simplu_grpc.services.shard_admin import ShardAdminServicer

    release = threading.Event()
    admin = console(
        FakeShards([]),
        probes={"hung": lambda: release.wait(10), "ok": lambda: None},
        prober=DependencyProber(probe_timeout=0.2),
    )
    servicer = ShardAdminServicer(
        admin=admin,
        authorizer=Authorizer(admin_group="admin"),
        moves=None,  # type: ignore[arg-type]  # the location-move RPCs are not called here
    )
    operator = Principal(
        subject="op", username="op", token_use="access", client_id="app", groups=frozenset({"admin"})
    )
    try:
        with context.bind(principal=operator):
            status = servicer.GetDependencyStatus(shard_admin_pb2.GetDependencyStatusRequest(), None)  # type: ignore[arg-type]  # the servicer ignores its context
    finally:
        release.set()
    by_name = {d.name: d for d in status.dependencies}
    assert not by_name["hung"].up
    assert not by_name["hung"].HasField("latency")
    assert by_name["ok"].up
    assert by_name["ok"].HasField("latency")
    assert not status.all_up
