"""ResourceService over a real channel: Citrus emulator shards on PostgreSQL, moto DynamoDB, real tokens."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2, json_format, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status
from simplu.v1 import resource_pb2

from simplu_grpc.adapters.postgres import migrator
from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer
from simplu_grpc.domain.business.model import BusinessType, Location, Member, Role
from simplu_grpc.domain.resources import queries as resource_queries
from simplu_grpc.domain.resources import shard_path as resource_shard_path
from simplu_grpc.domain.resources import validation as resource_validation
from tests.fixtures.server import MakeServer
from tests.integration.resource_stack import ResourceStack, build_stack, interval, struct, ts

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
                business_id="nosuchbusiness", location_id="main", resource_type="patients", resource_id="p1"
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
        business,
        data={"name": "Ana"},
        start_time=ts("2026-03-01T00:00:00Z"),
        end_time=ts("2026-03-02T10:00:00+02:00"),
    )
    assert len(first.resource_id) == 26
    assert first.business_type == 1
    assert first.start_time.ToDatetime(tzinfo=UTC) == datetime(2026, 3, 1, tzinfo=UTC)
    assert first.end_time.ToDatetime(tzinfo=UTC) == datetime(2026, 3, 2, 8, tzinfo=UTC)
    second = stack.create(business, "appointments", location_id="annex")
    keys = [
        resource_pb2.ResourceKey(
            location_id="annex", resource_type="appointments", resource_id=second.resource_id
        ),
        resource_pb2.ResourceKey(location_id="main", resource_type="patients", resource_id="nope"),
        resource_pb2.ResourceKey(location_id="main", resource_type="patients", resource_id=first.resource_id),
    ]
    batch = stack.stub.BatchGetResources(
        resource_pb2.BatchGetResourcesRequest(business_id=business.id, keys=keys),
        metadata=stack.md(),
        timeout=10,
    )
    assert [r.resource_id for r in batch.resources] == [second.resource_id, first.resource_id]
    assert [k.resource_id for k in batch.missing] == ["nope"]
    delete = resource_pb2.DeleteResourceRequest(
        business_id=business.id, location_id="main", resource_type="patients", resource_id=first.resource_id
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
            resource_type="patients",
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


def test_update_without_a_mask_never_wipes_data(stack: ResourceStack) -> None:
    """AIP-134 on the wire: an UpdateResource with no mask and no data is INVALID_ARGUMENT and
    changes nothing (it used to replace data with {}); with only start_time populated it moves the
    start and keeps the document."""
    business = stack.add_business()
    created = stack.create(business, data={"name": "Ana", "status": "new"})
    key = {
        "business_id": business.id,
        "location_id": "main",
        "resource_type": "patients",
        "resource_id": created.resource_id,
    }
    error = _code(
        lambda: stack.stub.UpdateResource(
            resource_pb2.UpdateResourceRequest(resource=resource_pb2.Resource(**key)),
            metadata=stack.md(),
            timeout=10,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(error) == ["update_mask"]
    assert stack.get(business, created.resource_id) == created
    moved = stack.stub.UpdateResource(
        resource_pb2.UpdateResourceRequest(
            resource=resource_pb2.Resource(**key, start_time=ts("2026-05-01T09:00:00Z"))
        ),
        metadata=stack.md(),
        timeout=10,
    )
    assert json_format.MessageToDict(moved.data) == {"name": "Ana", "status": "new"}
    assert moved.start_time.ToDatetime(tzinfo=UTC) == datetime(2026, 5, 1, 9, tzinfo=UTC)


def test_keys_with_underscores_and_capitals_are_updatable_from_protobuf_json(stack: ResourceStack) -> None:
    """A request written as grpcurl writes it (protobuf JSON, parsed by json_format) can update
    data keys "first_name" and "contact.phoneNumber" through data_paths; in update_mask the same
    keys cannot be expressed (protobuf JSON refuses "_" in FieldMask paths)."""
    business = stack.add_business()
    created = stack.create(
        business, data={"first_name": "Ana", "contact": {"phoneNumber": "0700"}, "status": "new"}
    )
    body = {
        "resource": {
            "businessId": business.id,
            "locationId": "main",
            "resourceType": "patients",
            "resourceId": created.resource_id,
            "data": {"first_name": "Ana Maria", "contact": {"phoneNumber": "0711"}},
        },
        "dataPaths": ["/first_name", "/contact/phoneNumber"],
    }
    request = json_format.Parse(json.dumps(body), resource_pb2.UpdateResourceRequest())
    updated = stack.stub.UpdateResource(request, metadata=stack.md(), timeout=10)
    assert json_format.MessageToDict(updated.data) == {
        "first_name": "Ana Maria",
        "contact": {"phoneNumber": "0711"},
        "status": "new",
    }
    with pytest.raises(json_format.ParseError):
        json_format.Parse(json.dumps({"updateMask": "data.first_name"}), resource_pb2.UpdateResourceRequest())


def _many_large(stack: ResourceStack, business: Any, count: int, size: int) -> list[str]:
    """``count`` resources whose data is ``size`` bytes, inserted straight into the shard."""
    ids = [f"big-{i:03d}" for i in range(count)]
    stack.create(business, "medics")  # registers the location with Citrus
    with psycopg.connect(stack.shard_dsn(stack.shard_of(business))) as conn:
        conn.cursor().executemany(
            "INSERT INTO resources (business_id, location_id, resource_type, resource_id, business_type,"
            " data) VALUES (%s, 'main', 'patients', %s, 'dental', %s::jsonb)",
            [(business.id, rid, json.dumps({"blob": "x" * size})) for rid in ids],
        )
    return ids


def test_large_pages_stop_at_the_byte_budget_and_continue(stack: ResourceStack) -> None:
    """25 documents of 200 KiB with page_size 100 come back over several pages under the response
    budget (it used to fail with RESOURCE_EXHAUSTED: a response over 4 MiB); every one exactly once."""
    business = stack.add_business()
    ids = _many_large(stack, business, 25, 200 * 1024)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = stack.stub.ListResources(
            resource_pb2.ListResourcesRequest(
                business_id=business.id,
                location_id="main",
                resource_type="patients",
                page_size=100,
                page_token=token,
                order_by="update_time",
            ),
            metadata=stack.md(),
            timeout=10,
        )
        pages += 1
        assert page.ByteSize() <= 3 * 1024 * 1024
        seen.extend(r.resource_id for r in page.resources)
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == ids
    assert pages >= 2
    slim = stack.stub.ListResources(
        resource_pb2.ListResourcesRequest(
            business_id=business.id,
            location_id="main",
            resource_type="patients",
            page_size=100,
            read_mask=field_mask_pb2.FieldMask(paths=["etag"]),
        ),
        metadata=stack.md(),
        timeout=10,
    )
    assert len(slim.resources) == 25
    assert not slim.next_page_token


def test_batch_get_stops_at_the_byte_budget_and_continues_with_a_token(stack: ResourceStack) -> None:
    """BatchGet of 25 x 200 KiB answers in request order over several calls with next_page_token;
    missing keys are reported once; a token replayed with other keys is INVALID_ARGUMENT."""
    business = stack.add_business()
    ids = _many_large(stack, business, 25, 200 * 1024)
    wanted = [*ids[:10], "absent", *ids[10:]]
    keys = [
        resource_pb2.ResourceKey(location_id="main", resource_type="patients", resource_id=i) for i in wanted
    ]
    found: list[str] = []
    missing: list[str] = []
    token = ""
    calls = 0
    while True:
        answer = stack.stub.BatchGetResources(
            resource_pb2.BatchGetResourcesRequest(business_id=business.id, keys=keys, page_token=token),
            metadata=stack.md(),
            timeout=10,
        )
        calls += 1
        assert answer.ByteSize() <= 3 * 1024 * 1024
        found.extend(r.resource_id for r in answer.resources)
        missing.extend(k.resource_id for k in answer.missing)
        token = answer.next_page_token
        if not token:
            break
        last_token = token
    assert found == ids
    assert missing == ["absent"]
    assert calls >= 2
    error = _code(
        lambda: stack.stub.BatchGetResources(
            resource_pb2.BatchGetResourcesRequest(
                business_id=business.id, keys=keys[:3], page_token=last_token
            ),
            metadata=stack.md(),
            timeout=10,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


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
                    resource_type="patients",
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
            business_id=business.id, location_id="main", resource_type="patients"
        ),
        metadata=stack.md(),
        timeout=10,
    )
    assert len(listed.resources) == 2


def test_list_filters_and_orders(stack: ResourceStack) -> None:
    """ListResources filters by start-date range and JSON containment, orders by start_time or update_time."""
    business = stack.add_business()
    for day, status in [(1, "open"), (2, "done"), (3, "open"), (4, "open")]:
        stack.create(
            business,
            "appointments",
            data={"status": status, "day": day},
            start_time=ts(f"2026-03-0{day}T00:00:00Z"),
        )
    request = resource_pb2.ListResourcesRequest(
        business_id=business.id,
        location_id="main",
        resource_type="appointments",
        start_time_range=interval("2026-03-02T00:00:00Z", "2026-03-04T00:00:00Z"),
        data_contains=struct({"status": "open"}),
    )
    page = stack.stub.ListResources(request, metadata=stack.md(), timeout=10)
    assert [r.data["day"] for r in page.resources] == [3]
    newest_first = stack.stub.ListResources(
        resource_pb2.ListResourcesRequest(
            business_id=business.id,
            location_id="main",
            resource_type="appointments",
            order_by="update_time desc",
        ),
        metadata=stack.md(),
        timeout=10,
    )
    assert [r.data["day"] for r in newest_first.resources] == [4, 3, 2, 1]


def test_paging_is_stable_while_newer_resources_arrive(stack: ResourceStack) -> None:
    """Paging 1,000 resources while new ones are inserted returns every original exactly once."""
    business = stack.add_business()
    stack.create(business, "appointments", resource_id="seed", start_time=ts("2026-01-01T00:00:00Z"))
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
            "INSERT INTO resources (business_id, location_id, resource_type, resource_id, business_type,"
            " data, start_time) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s)",
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
                resource_type="appointments",
                page_size=97,
                page_token=token,
            ),
            metadata=stack.md(),
            timeout=10,
        )
        seen.extend(r.resource_id for r in page.resources)
        # Newer resources, some sorting before the cursor and some after it.
        for start in ("2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z", None):
            stack.create(business, "appointments", **({"start_time": ts(start)} if start else {}))
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
        request_fields = {k: resource.pop(k) for k in ("request_id",) if k in resource}
        if "request_resource_id" in resource:
            request_fields["resource_id"] = resource.pop("request_resource_id")
        fields = {"business_id": business.id, "location_id": "main", "resource_type": "patients", **resource}
        data = fields.pop("data", None)
        request = resource_pb2.CreateResourceRequest(
            resource=resource_pb2.Resource(**fields), **request_fields
        )
        if data is not None:
            # Built in place: copying would re-parse, and protobuf refuses the deep one client-side.
            request.resource.data.update(data)
        return lambda: stack.stub.CreateResource(request, metadata=stack.md(), timeout=10)

    def listing(**fields: Any) -> Callable[[], Any]:
        base = {"business_id": business.id, "location_id": "main", "resource_type": "patients", **fields}
        return lambda: stack.stub.ListResources(
            resource_pb2.ListResourcesRequest(**base), metadata=stack.md(), timeout=10
        )

    def update(paths: list[str]) -> Callable[[], Any]:
        message = resource_pb2.Resource(
            business_id=business.id,
            location_id="main",
            resource_type="patients",
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
        "evil resource_type": create(resource_type=evil),
        "evil request_id": create(request_id=evil),
        "300 KiB data": create(data={"blob": "x" * (300 * 1024)}),
        "NaN in data": create(data={"n": float("nan")}),
        "infinity in filter": listing(data_contains=struct({"n": float("inf")})),
        "nesting 40": create(data=deep),
        "hotel name on dental": create(resource_type="rooms"),
        "start_time past 9999": create(start_time=timestamp_pb2.Timestamp(seconds=253402300800)),
        "negative nanos": create(start_time=timestamp_pb2.Timestamp(seconds=0, nanos=-1)),
        "end before start": create(
            start_time=ts("2026-03-02T00:00:00Z"), end_time=ts("2026-03-01T00:00:00Z")
        ),
        "conflicting ids": create(resource_id="a1", request_resource_id="b2"),
        "evil filter key": listing(data_contains=struct({evil: 1})),
        "evil order_by": listing(order_by=evil),
        "reversed start range": listing(
            start_time_range=interval("2026-03-02T00:00:00Z", "2026-03-01T00:00:00Z")
        ),
        "reversed overlap": listing(overlaps=interval("2026-03-02T00:00:00Z", "2026-03-01T00:00:00Z")),
        "unknown read_mask path": listing(read_mask=field_mask_pb2.FieldMask(paths=["secret"])),
        "malformed page token": listing(page_token="bm90LWEtdG9rZW4"),
        "hostile page token": listing(page_token=evil),
        "unknown mask path": update(["name"]),
        "evil mask path": update([f"data.{evil}"]),
        "batch of 101": lambda: stack.stub.BatchGetResources(
            resource_pb2.BatchGetResourcesRequest(
                business_id=business.id,
                keys=[resource_pb2.ResourceKey(location_id="main", resource_type="patients", resource_id="a")]
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


def test_timestamps_outside_years_1_to_9999_are_invalid_argument_not_internal(stack: ResourceStack) -> None:
    """Timestamps protobuf can carry but no calendar can (before 0001, after 9999, bad nanos) are
    INVALID_ARGUMENT naming the field, on Create and on List, and change nothing."""
    business = stack.add_business()
    before = stack.count_rows()
    early = timestamp_pb2.Timestamp(seconds=-62135596801)
    late = timestamp_pb2.Timestamp(seconds=253402300800)
    bad_nanos = timestamp_pb2.Timestamp(seconds=0, nanos=1_000_000_000)
    for field, value in (("start_time", early), ("end_time", late), ("start_time", bad_nanos)):
        resource = resource_pb2.Resource(
            business_id=business.id, location_id="main", resource_type="patients", **{field: value}
        )
        error = _code(
            lambda r=resource: stack.stub.CreateResource(
                resource_pb2.CreateResourceRequest(resource=r), metadata=stack.md(), timeout=10
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, value, error.details())
        assert any(field in name for name in _violations(error)), _violations(error)
    for field in ("start_time_range", "overlaps"):
        request = resource_pb2.ListResourcesRequest(
            business_id=business.id, location_id="main", resource_type="patients"
        )
        getattr(request, field).start_time.CopyFrom(early)
        error = _code(lambda r=request: stack.stub.ListResources(r, metadata=stack.md(), timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, error.details())
        assert any(name.startswith(f"{field}.start_time") for name in _violations(error)), _violations(error)
    assert stack.count_rows() == before


def test_overlap_filter_finds_who_is_in_house(stack: ResourceStack) -> None:
    """overlaps selects stays with start < the interval's end and end > its start: guests in-house
    tonight, not those who left this morning or arrive tomorrow; an end-less booking is an instant."""
    business = stack.add_business(business_type=BusinessType.HOTEL)
    stays = {
        "left-this-morning": ("2026-03-01T14:00:00Z", "2026-03-03T10:00:00Z"),
        "in-house": ("2026-03-02T14:00:00Z", "2026-03-05T10:00:00Z"),
        "arrives-tonight": ("2026-03-03T20:00:00Z", "2026-03-04T10:00:00Z"),
        "arrives-tomorrow": ("2026-03-04T14:00:00Z", "2026-03-06T10:00:00Z"),
        "walk-in-tonight": ("2026-03-03T21:00:00Z", None),
        "walk-in-yesterday": ("2026-03-02T21:00:00Z", None),
    }
    for resource_id, (start, end) in stays.items():
        times = {"start_time": ts(start), **({"end_time": ts(end)} if end else {})}
        stack.create(business, "reservations", resource_id=resource_id, **times)
    stack.create(business, "reservations", resource_id="undated")
    page = stack.stub.ListResources(
        resource_pb2.ListResourcesRequest(
            business_id=business.id,
            location_id="main",
            resource_type="reservations",
            overlaps=interval("2026-03-03T18:00:00Z", "2026-03-04T08:00:00Z"),
        ),
        metadata=stack.md(),
        timeout=10,
    )
    assert [r.resource_id for r in page.resources] == ["in-house", "arrives-tonight", "walk-in-tonight"]


def test_read_mask_leaves_out_data_but_keeps_the_identity(stack: ResourceStack) -> None:
    """read_mask "etag" on Get and List returns the etag and the four identifying fields, no data."""
    business = stack.add_business()
    created = stack.create(business, data={"name": "Ana", "notes": "x" * 1000})
    got = stack.stub.GetResource(
        resource_pb2.GetResourceRequest(
            business_id=business.id,
            location_id="main",
            resource_type="patients",
            resource_id=created.resource_id,
            read_mask=field_mask_pb2.FieldMask(paths=["etag"]),
        ),
        metadata=stack.md(),
        timeout=10,
    )
    assert got.etag == created.etag
    assert (got.business_id, got.location_id, got.resource_type, got.resource_id) == (
        business.id,
        "main",
        "patients",
        created.resource_id,
    )
    assert not got.HasField("data")
    assert not got.HasField("create_time")
    listed = stack.stub.ListResources(
        resource_pb2.ListResourcesRequest(
            business_id=business.id,
            location_id="main",
            resource_type="patients",
            read_mask=field_mask_pb2.FieldMask(paths=["update_time"]),
        ),
        metadata=stack.md(),
        timeout=10,
    )
    assert [r.resource_id for r in listed.resources] == [created.resource_id]
    assert not listed.resources[0].HasField("data")
    assert listed.resources[0].HasField("update_time")


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
                business_id="missingbiz", location_id="main", resource_type="patients", resource_id="x"
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
                    resource_type="patients",
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
    real_require_id = resource_validation.require_id
    real_require_name = resource_validation.require_resource_type
    real_resolve = stack.routing.resolve

    def require_id(field_name: str, value: str, **kwargs: Any) -> str:
        ids.append(field_name)
        return real_require_id(field_name, value, **kwargs)

    def require_resource_type(
        business_type: str, resource_type: str, field_name: str = "resource_type"
    ) -> str:
        names.append(field_name)
        return real_require_name(business_type, resource_type, field_name)

    def resolve(business_id: str, location_id: str, *args: Any, refresh: bool = False, **kwargs: Any) -> Any:
        routed.append((location_id, refresh))
        return real_resolve(business_id, location_id, *args, refresh=refresh, **kwargs)

    # Every caller of the two checks among the use cases and the validators.
    for module in (resource_shard_path, resource_validation):
        monkeypatch.setattr(module, "require_id", require_id)
    for module in (resource_shard_path, resource_queries, resource_validation):
        monkeypatch.setattr(module, "require_resource_type", require_resource_type)
    monkeypatch.setattr(stack.routing, "resolve", resolve)

    stack.create(business)
    assert ids == ["resource.business_id", "resource.location_id"]
    assert names == ["resource.resource_type"]
    ids.clear()
    names.clear()
    stack.stub.ListResources(
        resource_pb2.ListResourcesRequest(
            business_id=business.id, location_id="main", resource_type="patients"
        ),
        metadata=stack.md(),
        timeout=10,
    )
    assert ids == ["business_id", "location_id"]
    assert names == ["resource_type"]
    ids.clear()
    names.clear()
    routed.clear()
    keys = [
        resource_pb2.ResourceKey(
            location_id="annex", resource_type="patients", resource_id=created.resource_id
        ),
        resource_pb2.ResourceKey(location_id="main", resource_type="patients", resource_id="nope"),
        resource_pb2.ResourceKey(location_id="annex", resource_type="patients", resource_id="gone"),
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
    assert names == [f"keys[{i}].resource_type" for i in range(3)]
    assert sorted(routed) == [("annex", False), ("main", False)]


def test_an_etag_we_never_issued_is_aborted_on_update_and_delete_alike(stack: ResourceStack) -> None:
    """Update and Delete read an etag the same way: one that names no version of ours matches
    nothing (ABORTED, the row untouched) instead of being ignored."""
    business = stack.add_business()
    created = stack.create(business, data={"keep": True})
    key = {
        "business_id": business.id,
        "location_id": "main",
        "resource_type": "patients",
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


def _error_details(error: grpc.RpcError) -> tuple[Any, Any]:
    """(ErrorInfo, RetryInfo or None) of an answer's google.rpc.Status."""
    status = rpc_status.from_call(error)
    assert status is not None, f"{error.code()} without rich details: {error.details()}"
    info = error_details_pb2.ErrorInfo()
    retry: Any = None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
    return info, retry


def test_a_stale_etag_is_aborted_with_the_current_etag_and_a_retry_delay(stack: ResourceStack) -> None:
    """UpdateResource and DeleteResource with a stale etag: ABORTED / ETAG_MISMATCH carrying the
    resource's current etag (ErrorInfo metadata current_etag, as a business's ABORTED does) and a
    RetryInfo; retrying with that etag succeeds. Nothing changes on the ABORTED attempts."""
    business = stack.add_business()
    created = stack.create(business, data={"n": 1})
    key = {
        "business_id": business.id,
        "location_id": "main",
        "resource_type": "patients",
        "resource_id": created.resource_id,
    }

    def update(etag: str, n: int) -> resource_pb2.Resource:
        request = resource_pb2.UpdateResourceRequest(
            resource=resource_pb2.Resource(**key, data=struct({"n": n}), etag=etag),
            update_mask=field_mask_pb2.FieldMask(paths=["data.n"]),
        )
        return stack.stub.UpdateResource(request, metadata=stack.md(), timeout=10)

    second = update(created.etag, 2)
    current = update(second.etag, 3)
    for stale in (created.etag, second.etag, "v99", "not-ours"):
        error = _code(lambda etag=stale: update(etag, 4))
        assert error.code() == grpc.StatusCode.ABORTED, (stale, error.details())
        info, retry = _error_details(error)
        assert info.reason == "ETAG_MISMATCH"
        assert dict(info.metadata) == {
            "resource_type": "patients",
            "resource_id": created.resource_id,
            "current_etag": current.etag,
        }
        assert retry is not None
        assert retry.retry_delay.ToTimedelta() > timedelta(0)
        delete = resource_pb2.DeleteResourceRequest(**key, etag=stale)
        error = _code(lambda r=delete: stack.stub.DeleteResource(r, metadata=stack.md(), timeout=10))
        assert error.code() == grpc.StatusCode.ABORTED, (stale, error.details())
        info, retry = _error_details(error)
        assert (info.reason, info.metadata["current_etag"]) == ("ETAG_MISMATCH", current.etag)
        assert retry is not None
    assert stack.get(business, created.resource_id) == current
    # The etag the ABORTED answer named is the one that works.
    assert dict(update(current.etag, 5).data) == {"n": 5}


def test_an_update_that_loses_a_race_after_its_snapshot_claims_no_current_etag(stack: ResourceStack) -> None:
    """The ABORTED answer's current etag is read by the same statement, in its snapshot. When a
    concurrent write commits after that snapshot (here: while the update waits on the row lock),
    the snapshot's version is the caller's own, so the answer names no current etag rather than
    a stale one; re-reading gives the new one. Nothing changes."""
    business = stack.add_business()
    created = stack.create(business, data={"n": 1})
    request = resource_pb2.UpdateResourceRequest(
        resource=resource_pb2.Resource(
            business_id=business.id,
            location_id="main",
            resource_type="patients",
            resource_id=created.resource_id,
            data=struct({"n": 2}),
            etag=created.etag,
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["data.n"]),
    )
    with ThreadPoolExecutor(max_workers=1) as executor:
        with stack.row_locked(business, created.resource_id) as conn:
            pending = executor.submit(
                lambda: _code(lambda: stack.stub.UpdateResource(request, metadata=stack.md(), timeout=20))
            )
            stack.wait_for_lock_waiters(business)
            conn.execute(
                "UPDATE resources SET version = version + 1 WHERE resource_id = %s", [created.resource_id]
            )
        error = pending.result(timeout=20)
    assert error.code() == grpc.StatusCode.ABORTED, error.details()
    info, retry = _error_details(error)
    assert info.reason == "ETAG_MISMATCH"
    assert "current_etag" not in info.metadata
    assert retry is not None
    now = stack.get(business, created.resource_id)
    assert now.etag not in ("", created.etag)
    assert dict(now.data) == {"n": 1}


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
