"""ResourceService over a real channel: Citrus emulator shards on PostgreSQL, moto DynamoDB, real tokens."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2, json_format
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status
from simplu.v1 import resource_pb2

from simplu_grpc.adapters import migrator
from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer
from simplu_grpc.domain import resources as rules
from simplu_grpc.domain.business import BusinessType, Location, Member, Role
from tests.fixtures.server import MakeServer
from tests.integration.resource_stack import ResourceStack, build_stack, struct

pytestmark = pytest.mark.integration

SERVICE_NAME = resource_pb2.DESCRIPTOR.services_by_name["ResourceService"].full_name


@pytest.fixture
def stack(
    make_server: MakeServer,
    citrus: CitrusEmulator,
    moto_server: MotoServer,
    auth_settings: dict[str, Any],
    admin_token: str,
) -> Iterator[ResourceStack]:
    built = build_stack(
        make_server=make_server,
        citrus=citrus,
        moto_server=moto_server,
        auth_settings=auth_settings,
        admin_token=admin_token,
    )
    yield built
    built.server.stop(0)
    built.server.deps.close()


def _code(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def _violations(error: grpc.RpcError) -> list[str]:
    """The BadRequest field violations in the error's google.rpc.Status details."""
    status = rpc_status.from_call(error)
    assert status is not None
    fields: list[str] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields.extend(v.field for v in bad_request.field_violations)
    return fields


# --- shards, tenants, pools ---------------------------------------------------------------


def test_businesses_spread_over_shards_with_one_pool_per_shard(stack: ResourceStack) -> None:
    """Seven businesses (capacity 3) land on three shards; the server keeps exactly one pool per shard id."""
    businesses = [
        stack.add_business(t) for t in [BusinessType.DENTAL, BusinessType.GYM, BusinessType.HOTEL] * 2
    ]
    businesses.append(stack.add_business(BusinessType.DENTAL, locations=("main", "annex")))
    names = {BusinessType.DENTAL: "patients", BusinessType.GYM: "members", BusinessType.HOTEL: "rooms"}
    for business in businesses:
        created = stack.create(business, names[business.type], data={"n": 1})
        assert created.business_id == business.id
        assert created.etag
    stack.create(businesses[-1], "patients", location_id="annex")
    shards = {stack.shard_of(b) for b in businesses}
    assert len(shards) >= 3, shards
    assert stack.shard_of(businesses[-1], "annex") == stack.shard_of(businesses[-1])
    stats = stack.pools.stats()
    assert sorted(s.shard_id for s in stats) == sorted(shards)
    assert stack.pools.pools_created == len(shards)
    assert all(s.schema_version == migrator.latest_version() for s in stats)


def test_identical_ids_in_two_tenants_are_isolated(
    stack: ResourceStack, make_user_token: Callable[..., tuple[str, str]]
) -> None:
    """Two tenants using the same location and resource ids each see only their own data;
    a member of one gets PERMISSION_DENIED in the other, even for a business id that does not exist."""
    sub_a, token_a = make_user_token("tenant-a-user")
    sub_b, token_b = make_user_token("tenant-b-user")
    a = stack.add_business(members={sub_a: Member(role="owner")})
    b = stack.add_business(members={sub_b: Member(role="owner")})
    stack.create(a, data={"owner": "A"}, resource_id="p1", token=token_a)
    stack.create(b, data={"owner": "B"}, resource_id="p1", token=token_b)
    assert dict(stack.get(a, "p1", token=token_a).data) == {"owner": "A"}
    assert dict(stack.get(b, "p1", token=token_b).data) == {"owner": "B"}
    denied = _code(lambda: stack.get(b, "p1", token=token_a))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    missing = _code(
        lambda: stack.stub.GetResource(
            resource_pb2.GetResourceRequest(
                business_id="nosuchbusiness", location_id="main", resource_name="patients", resource_id="p1"
            ),
            metadata=stack.md(token_a),
            timeout=5,
        )
    )
    assert missing.code() == grpc.StatusCode.PERMISSION_DENIED


def test_role_and_location_limits_apply(
    stack: ResourceStack, make_user_token: Callable[..., tuple[str, str]]
) -> None:
    """A reader can read but not create; a member limited to one location cannot touch another."""
    sub, token = make_user_token("limited-reader")
    business = stack.add_business(
        locations=("main", "annex"),
        roles={"owner": Role(permissions=("*",)), "reader": Role(permissions=("patients:read",))},
        members={sub: Member(role="reader", location_ids=("main",))},
    )
    created = stack.create(business, resource_id="r1")
    assert stack.get(business, created.resource_id, token=token).resource_id == "r1"
    assert _code(lambda: stack.create(business, token=token)).code() == grpc.StatusCode.PERMISSION_DENIED
    assert (
        _code(lambda: stack.get(business, "r1", location_id="annex", token=token)).code()
        == grpc.StatusCode.PERMISSION_DENIED
    )


def test_twenty_concurrent_first_requests_create_one_pool(stack: ResourceStack) -> None:
    """20 simultaneous first requests for a tenant on an unused shard create one pool; all succeed."""
    business = stack.add_business()
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda i: stack.create(business, data={"i": i}), range(20)))
    assert len({r.resource_id for r in results}) == 20
    assert stack.pools.pools_created == 1
    assert [s.shard_id for s in stack.pools.stats()] == [stack.shard_of(business)]
    assert stack.citrus.calls["register"] == 1


# --- CRUD semantics -------------------------------------------------------------------------


def test_create_get_batch_delete_round_trip(stack: ResourceStack) -> None:
    """Create returns server ids and RFC 3339 dates; BatchGet keeps request order and lists missing keys;
    Delete with a stale etag is ABORTED, without etag removes, then NOT_FOUND."""
    business = stack.add_business(locations=("main", "annex"))
    first = stack.create(
        business, data={"name": "Ana"}, start_date="2026-03-01", end_date="2026-03-02T10:00:00+02:00"
    )
    assert len(first.resource_id) == 26
    assert first.business_type == 1
    assert first.start_date == "2026-03-01T00:00:00Z"
    assert first.end_date == "2026-03-02T08:00:00Z"
    second = stack.create(business, "appointments", location_id="annex")
    keys = [
        resource_pb2.ResourceKey(
            location_id="annex", resource_name="appointments", resource_id=second.resource_id
        ),
        resource_pb2.ResourceKey(location_id="main", resource_name="patients", resource_id="nope"),
        resource_pb2.ResourceKey(location_id="main", resource_name="patients", resource_id=first.resource_id),
    ]
    batch = stack.stub.BatchGetResources(
        resource_pb2.BatchGetResourcesRequest(business_id=business.id, keys=keys),
        metadata=stack.md(),
        timeout=10,
    )
    assert [r.resource_id for r in batch.resources] == [second.resource_id, first.resource_id]
    assert [k.resource_id for k in batch.missing] == ["nope"]
    delete = resource_pb2.DeleteResourceRequest(
        business_id=business.id, location_id="main", resource_name="patients", resource_id=first.resource_id
    )
    stale = resource_pb2.DeleteResourceRequest()
    stale.CopyFrom(delete)
    stale.etag = "v99"
    assert _code(lambda: stack.stub.DeleteResource(stale, metadata=stack.md(), timeout=5)).code() == (
        grpc.StatusCode.ABORTED
    )
    stack.stub.DeleteResource(delete, metadata=stack.md(), timeout=5)
    assert _code(lambda: stack.get(business, first.resource_id)).code() == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: stack.stub.DeleteResource(delete, metadata=stack.md(), timeout=5)).code() == (
        grpc.StatusCode.NOT_FOUND
    )


def test_client_id_taken_is_already_exists(stack: ResourceStack) -> None:
    """A client-chosen id that is taken answers ALREADY_EXISTS and leaves the first row alone."""
    business = stack.add_business()
    stack.create(business, resource_id="fixed-1", data={"v": 1})
    error = _code(lambda: stack.create(business, resource_id="fixed-1", data={"v": 2}))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert dict(stack.get(business, "fixed-1").data) == {"v": 1}


def test_masked_update_changes_only_the_named_keys(stack: ResourceStack) -> None:
    """update_mask data.status changes that key alone; data.patient.name creates a nested key;
    a stale etag is ABORTED and leaves the row exactly as it was."""
    business = stack.add_business()
    created = stack.create(
        business, data={"status": "new", "name": "Ana", "tags": ["a", "b"], "patient": {"age": 3}}
    )
    request = resource_pb2.UpdateResourceRequest(
        resource=resource_pb2.Resource(
            business_id=business.id,
            location_id="main",
            resource_name="patients",
            resource_id=created.resource_id,
            data=struct({"status": "confirmed", "patient": {"name": "Bob"}, "name": "IGNORED"}),
            etag=created.etag,
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["data.status", "data.patient.name"]),
    )
    updated = stack.stub.UpdateResource(request, metadata=stack.md(), timeout=10)
    assert json_format.MessageToDict(updated.data) == {
        "status": "confirmed",
        "name": "Ana",
        "tags": ["a", "b"],
        "patient": {"age": 3, "name": "Bob"},
    }
    assert updated.etag != created.etag
    before = stack.get(business, created.resource_id)
    error = _code(lambda: stack.stub.UpdateResource(request, metadata=stack.md(), timeout=10))
    assert error.code() == grpc.StatusCode.ABORTED
    assert stack.get(business, created.resource_id) == before


def test_masked_updates_cannot_grow_data_past_the_limit(stack: ResourceStack) -> None:
    """Masked updates that are each small cannot grow a document past RESOURCE_DATA_MAX_BYTES:
    the one whose result would exceed it is INVALID_ARGUMENT on resource.data and changes nothing."""
    business = stack.add_business()
    chunk = "x" * (100 * 1024)
    created = stack.create(business, data={"a": chunk})

    def put(key: str) -> resource_pb2.Resource:
        return stack.stub.UpdateResource(
            resource_pb2.UpdateResourceRequest(
                resource=resource_pb2.Resource(
                    business_id=business.id,
                    location_id="main",
                    resource_name="patients",
                    resource_id=created.resource_id,
                    data=struct({key: chunk}),
                ),
                update_mask=field_mask_pb2.FieldMask(paths=[f"data.{key}"]),
            ),
            metadata=stack.md(),
            timeout=10,
        )

    grown = put("b")
    before = stack.get(business, created.resource_id)
    assert before.etag == grown.etag
    error = _code(lambda: put("c"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert _violations(error) == ["resource.data"]
    assert stack.get(business, created.resource_id) == before


def test_retried_create_with_request_id_leaves_one_row(stack: ResourceStack) -> None:
    """The same request_id, retried in sequence and concurrently, creates one row and returns it each time."""
    business = stack.add_business()
    first = stack.create(business, data={"x": 1}, request_id="req-123")
    again = stack.create(business, data={"x": 1}, request_id="req-123")
    assert again == first
    with ThreadPoolExecutor(max_workers=8) as pool:
        racing = list(
            pool.map(lambda _: stack.create(business, data={"y": 1}, request_id="req-race"), range(8))
        )
    assert len({r.resource_id for r in racing}) == 1
    listed = stack.stub.ListResources(
        resource_pb2.ListResourcesRequest(
            business_id=business.id, location_id="main", resource_name="patients"
        ),
        metadata=stack.md(),
        timeout=10,
    )
    assert len(listed.resources) == 2


def test_list_filters_and_orders(stack: ResourceStack) -> None:
    """ListResources filters by start-date range and JSON containment, orders by start_date or update_time."""
    business = stack.add_business()
    for day, status in [(1, "open"), (2, "done"), (3, "open"), (4, "open")]:
        stack.create(
            business, "appointments", data={"status": status, "day": day}, start_date=f"2026-03-0{day}"
        )
    request = resource_pb2.ListResourcesRequest(
        business_id=business.id,
        location_id="main",
        resource_name="appointments",
        start_from="2026-03-02",
        start_to="2026-03-04",
        data_contains=struct({"status": "open"}),
    )
    page = stack.stub.ListResources(request, metadata=stack.md(), timeout=10)
    assert [r.data["day"] for r in page.resources] == [3]
    newest_first = stack.stub.ListResources(
        resource_pb2.ListResourcesRequest(
            business_id=business.id,
            location_id="main",
            resource_name="appointments",
            order_by="update_time desc",
        ),
        metadata=stack.md(),
        timeout=10,
    )
    assert [r.data["day"] for r in newest_first.resources] == [4, 3, 2, 1]


def test_paging_is_stable_while_newer_resources_arrive(stack: ResourceStack) -> None:
    """Paging 1,000 resources while new ones are inserted returns every original exactly once."""
    business = stack.add_business()
    stack.create(business, "appointments", resource_id="seed", start_date="2026-01-01")
    shard = stack.shard_of(business)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    originals = {f"orig-{i:04d}" for i in range(1000)}
    rows = [
        (
            business.id,
            "main",
            "appointments",
            f"orig-{i:04d}",
            "dental",
            f'{{"i": {i}}}',
            base + timedelta(hours=i % 300),
        )
        for i in range(1000)
    ]
    shard_db = stack.citrus.pg.dsn(stack.citrus.shard(shard).database)
    with psycopg.connect(shard_db, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO resources (business_id, location_id, resource_name, resource_id, business_type,"
            " data, start_date) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s)",
            rows,
        )
    seen: list[str] = []
    token = ""
    inserted = 0
    while True:
        page = stack.stub.ListResources(
            resource_pb2.ListResourcesRequest(
                business_id=business.id,
                location_id="main",
                resource_name="appointments",
                page_size=97,
                page_token=token,
            ),
            metadata=stack.md(),
            timeout=10,
        )
        seen.extend(r.resource_id for r in page.resources)
        # Newer resources, some sorting before the cursor and some after it.
        for start in ("2026-01-01", "2026-06-01", ""):
            stack.create(business, "appointments", start_date=start)
            inserted += 1
        token = page.next_page_token
        if not token:
            break
    found = [r for r in seen if r in originals]
    assert len(found) == len(set(found)) == 1000
    assert inserted > 10


# --- hostile input --------------------------------------------------------------------------


def test_hostile_input_is_invalid_argument_and_changes_nothing(stack: ResourceStack) -> None:
    """SQL metacharacters, oversized or deep data, unknown names, bad dates, bad masks and tokens
    are INVALID_ARGUMENT with a field violation, and no shard row changes."""
    business = stack.add_business()
    existing = stack.create(business, data={"keep": True})
    before = stack.count_rows()
    evil = "x'; DROP TABLE resources; --"
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(39):
        deep = {"k": deep}

    def create(**resource: Any) -> Callable[[], Any]:
        request_fields = {k: resource.pop(k) for k in ("request_id", "resource_id") if k in resource}
        fields = {"business_id": business.id, "location_id": "main", "resource_name": "patients", **resource}
        data = fields.pop("data", None)
        request = resource_pb2.CreateResourceRequest(
            resource=resource_pb2.Resource(**fields), **request_fields
        )
        if data is not None:
            # Built in place: copying would re-parse, and protobuf refuses the deep one client-side.
            request.resource.data.update(data)
        return lambda: stack.stub.CreateResource(request, metadata=stack.md(), timeout=10)

    def listing(**fields: Any) -> Callable[[], Any]:
        base = {"business_id": business.id, "location_id": "main", "resource_name": "patients", **fields}
        return lambda: stack.stub.ListResources(
            resource_pb2.ListResourcesRequest(**base), metadata=stack.md(), timeout=10
        )

    def update(paths: list[str]) -> Callable[[], Any]:
        message = resource_pb2.Resource(
            business_id=business.id,
            location_id="main",
            resource_name="patients",
            resource_id=existing.resource_id,
            data=struct({"keep": False}),
        )
        return lambda: stack.stub.UpdateResource(
            resource_pb2.UpdateResourceRequest(
                resource=message, update_mask=field_mask_pb2.FieldMask(paths=paths)
            ),
            metadata=stack.md(),
            timeout=10,
        )

    calls = {
        "evil resource_id": create(resource_id=evil),
        "evil location": create(location_id=evil),
        "evil business": create(business_id=evil),
        "evil resource_name": create(resource_name=evil),
        "evil request_id": create(request_id=evil),
        "300 KiB data": create(data={"blob": "x" * (300 * 1024)}),
        "NaN in data": create(data={"n": float("nan")}),
        "infinity in filter": listing(data_contains=struct({"n": float("inf")})),
        "nesting 40": create(data=deep),
        "hotel name on dental": create(resource_name="rooms"),
        "bad start_date": create(start_date="2026-02-30"),
        "naive date-time": create(start_date="2026-03-01T10:00:00"),
        "end before start": create(start_date="2026-03-02", end_date="2026-03-01"),
        "evil filter key": listing(data_contains=struct({evil: 1})),
        "evil order_by": listing(order_by=evil),
        "bad start_from": listing(start_from="not-a-date"),
        "malformed page token": listing(page_token="bm90LWEtdG9rZW4"),
        "hostile page token": listing(page_token=evil),
        "unknown mask path": update(["name"]),
        "evil mask path": update([f"data.{evil}"]),
        "batch of 101": lambda: stack.stub.BatchGetResources(
            resource_pb2.BatchGetResourcesRequest(
                business_id=business.id,
                keys=[resource_pb2.ResourceKey(location_id="main", resource_name="patients", resource_id="a")]
                * 101,
            ),
            metadata=stack.md(),
            timeout=10,
        ),
    }
    for label, call in calls.items():
        error = _code(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (label, error.code(), error.details())
        assert _violations(error), label
    assert stack.count_rows() == before
    assert dict(stack.get(business, existing.resource_id).data) == {"keep": True}


def test_dates_without_a_utc_instant_are_invalid_argument_not_internal(stack: ResourceStack) -> None:
    """Well-formed date-times whose UTC instant falls outside year 1..9999 are INVALID_ARGUMENT
    naming the field, on Create and on List (they used to escape as OverflowError: INTERNAL)."""
    business = stack.add_business()
    before = stack.count_rows()
    early, late = "0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-02:00"
    for field, value in (("start_date", early), ("end_date", late), ("start_date", late)):
        resource = resource_pb2.Resource(
            business_id=business.id, location_id="main", resource_name="patients", **{field: value}
        )
        error = _code(
            lambda r=resource: stack.stub.CreateResource(
                resource_pb2.CreateResourceRequest(resource=r), metadata=stack.md(), timeout=10
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, value, error.details())
        assert any(field in name for name in _violations(error)), _violations(error)
    for field, value in (("start_from", early), ("start_to", late)):
        request = resource_pb2.ListResourcesRequest(
            business_id=business.id, location_id="main", resource_name="patients", **{field: value}
        )
        error = _code(lambda r=request: stack.stub.ListResources(r, metadata=stack.md(), timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, value, error.details())
        assert any(field in name for name in _violations(error)), _violations(error)
    assert stack.count_rows() == before


# --- the warm path --------------------------------------------------------------------------


def test_warm_path_calls_neither_citrus_nor_dynamodb(stack: ResourceStack) -> None:
    """After one request, 100 GetResource calls make zero Citrus calls (emulator counters) and zero
    DynamoDB reads (counted around the real business store)."""
    business = stack.add_business()
    created = stack.create(business)
    stack.get(business, created.resource_id)
    stack.citrus.reset_calls()
    reads_before = stack.source.calls
    for _ in range(100):
        assert stack.get(business, created.resource_id).resource_id == created.resource_id
    assert stack.citrus.calls == dict.fromkeys(stack.citrus.calls, 0)
    assert stack.source.calls == reads_before


def test_inactive_location_and_unknown_business_never_touch_a_shard(stack: ResourceStack) -> None:
    """An admin asking for a missing business gets NOT_FOUND, for an inactive location
    FAILED_PRECONDITION, and for neither is Citrus asked or a shard pool opened."""
    business = stack.add_business(locations=("main",))
    closed = dataclasses.replace(
        business,
        id=f"{business.id}x",
        locations=(*business.locations, Location(id="closed", name="closed", active=False)),
    )
    stack.store.create(closed)
    stack.citrus.reset_calls()
    inactive = _code(lambda: stack.create(closed, location_id="closed"))
    assert inactive.code() == grpc.StatusCode.FAILED_PRECONDITION, inactive.details()
    error = _code(
        lambda: stack.stub.GetResource(
            resource_pb2.GetResourceRequest(
                business_id="missingbiz", location_id="main", resource_name="patients", resource_id="x"
            ),
            metadata=stack.md(),
            timeout=5,
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert sum(stack.citrus.calls.values()) == 0
    assert stack.pools.stats() == []


def test_concurrent_masked_updates_lose_nothing(stack: ResourceStack) -> None:
    """20 concurrent masked updates of different keys all land: each is one atomic statement,
    not a read-modify-write of the document."""
    business = stack.add_business()
    created = stack.create(business, data={"base": True})

    def update(i: int) -> None:
        stack.stub.UpdateResource(
            resource_pb2.UpdateResourceRequest(
                resource=resource_pb2.Resource(
                    business_id=business.id,
                    location_id="main",
                    resource_name="patients",
                    resource_id=created.resource_id,
                    data=struct({f"k{i}": i}),
                ),
                update_mask=field_mask_pb2.FieldMask(paths=[f"data.k{i}"]),
            ),
            metadata=stack.md(),
            timeout=10,
        )

    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(update, range(20)))
    final = stack.get(business, created.resource_id)
    assert json_format.MessageToDict(final.data) == {"base": True, **{f"k{i}": i for i in range(20)}}
    assert final.etag == "v21"


def test_each_check_and_each_route_happens_once_per_request(
    stack: ResourceStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Create and List shape-check each id once (then authorise, then the type's catalog once);
    BatchGet validates each key once and routes each location once (not again per shard)."""
    business = stack.add_business(locations=("main", "annex"))
    created = stack.create(business, location_id="annex")
    ids: list[str] = []
    names: list[str] = []
    routed: list[tuple[str, bool]] = []
    real_require_id, real_require_name = rules.require_id, rules.require_resource_name
    real_resolve = stack.routing.resolve

    def require_id(field_name: str, value: str, **kwargs: Any) -> str:
        ids.append(field_name)
        return real_require_id(field_name, value, **kwargs)

    def require_resource_name(
        business_type: str, resource_name: str, field_name: str = "resource_name"
    ) -> str:
        names.append(field_name)
        return real_require_name(business_type, resource_name, field_name)

    def resolve(business_id: str, location_id: str, *args: Any, refresh: bool = False, **kwargs: Any) -> Any:
        routed.append((location_id, refresh))
        return real_resolve(business_id, location_id, *args, refresh=refresh, **kwargs)

    monkeypatch.setattr(rules, "require_id", require_id)
    monkeypatch.setattr(rules, "require_resource_name", require_resource_name)
    monkeypatch.setattr(stack.routing, "resolve", resolve)

    stack.create(business)
    assert ids == ["resource.business_id", "resource.location_id"]
    assert names == ["resource.resource_name"]
    ids.clear()
    names.clear()
    stack.stub.ListResources(
        resource_pb2.ListResourcesRequest(
            business_id=business.id, location_id="main", resource_name="patients"
        ),
        metadata=stack.md(),
        timeout=10,
    )
    assert ids == ["business_id", "location_id"]
    assert names == ["resource_name"]
    ids.clear()
    names.clear()
    routed.clear()
    keys = [
        resource_pb2.ResourceKey(
            location_id="annex", resource_name="patients", resource_id=created.resource_id
        ),
        resource_pb2.ResourceKey(location_id="main", resource_name="patients", resource_id="nope"),
        resource_pb2.ResourceKey(location_id="annex", resource_name="patients", resource_id="gone"),
    ]
    batch = stack.stub.BatchGetResources(
        resource_pb2.BatchGetResourcesRequest(business_id=business.id, keys=keys),
        metadata=stack.md(),
        timeout=10,
    )
    assert [r.resource_id for r in batch.resources] == [created.resource_id]
    assert sorted(ids) == sorted(
        ["business_id"] + [f"keys[{i}].{part}_id" for i in range(3) for part in ("location", "resource")]
    )
    assert names == [f"keys[{i}].resource_name" for i in range(3)]
    assert sorted(routed) == [("annex", False), ("main", False)]


def test_an_etag_we_never_issued_is_aborted_on_update_and_delete_alike(stack: ResourceStack) -> None:
    """Update and Delete read an etag the same way: one that names no version of ours matches
    nothing (ABORTED, the row untouched) instead of being ignored."""
    business = stack.add_business()
    created = stack.create(business, data={"keep": True})
    key = {
        "business_id": business.id,
        "location_id": "main",
        "resource_name": "patients",
        "resource_id": created.resource_id,
    }
    for etag in ('W/"v1"', "v1x", "v" + "9" * 30):
        update = resource_pb2.UpdateResourceRequest(
            resource=resource_pb2.Resource(**key, data=struct({"keep": False}), etag=etag),
            update_mask=field_mask_pb2.FieldMask(paths=["data"]),
        )
        error = _code(lambda r=update: stack.stub.UpdateResource(r, metadata=stack.md(), timeout=10))
        assert error.code() == grpc.StatusCode.ABORTED, (etag, error.details())
        delete = resource_pb2.DeleteResourceRequest(**key, etag=etag)
        error = _code(lambda r=delete: stack.stub.DeleteResource(r, metadata=stack.md(), timeout=10))
        assert error.code() == grpc.StatusCode.ABORTED, (etag, error.details())
    assert dict(stack.get(business, created.resource_id).data) == {"keep": True}


# --- the transport under held calls ---------------------------------------------------------

HELD_CALLS = 64


def test_calls_that_never_send_their_message_stop_neither_health_nor_requests(stack: ResourceStack) -> None:
    """64 calls without a token that send their headers and never their message (issue 9 item 9)
    hold no thread that health checks or other requests need: while they are open, every health
    check and every authenticated GetResource is answered, and the held calls are still open."""
    business = stack.add_business()
    created = stack.create(business)
    release = threading.Event()

    def never() -> Iterator[bytes]:
        release.wait()
        yield from ()

    holder = stack.server.new_channel()
    hold = holder.stream_unary(f"/{SERVICE_NAME}/GetResource")
    held = [hold.future(never(), timeout=120) for _ in range(HELD_CALLS)]
    try:
        # One check could slip in before the held calls reach the server; twenty in a row cannot.
        for _ in range(20):
            assert stack.server.health_status(timeout=2) == health_pb2.HealthCheckResponse.SERVING
            assert stack.get(business, created.resource_id, timeout=2).resource_id == created.resource_id
        assert not any(call.done() for call in held)
    finally:
        release.set()
        for call in held:
            call.cancel()
        holder.close()
