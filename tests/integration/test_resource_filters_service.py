"""ListResources filter, data ordering and total_size over a real channel (Citrus emulator
shards on PostgreSQL, moto DynamoDB, real tokens): results, errors and tenant isolation."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from simplu.v1 import resource_pb2

from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer
from simplu_grpc.domain.business.model import Business, BusinessType, Location, Member, Permissions, Role
from tests.fixtures.server import MakeServer
from tests.integration.resource_stack import ResourceStack, build_stack, ts

pytestmark = pytest.mark.integration


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


def _list(
    stack: ResourceStack,
    business: Business,
    *,
    location_id: str = "main",
    token: str | None = None,
    **fields: Any,
) -> resource_pb2.ListResourcesResponse:
    return stack.stub.ListResources(
        resource_pb2.ListResourcesRequest(
            business_id=business.id, location_id=location_id, resource_type="patients", **fields
        ),
        metadata=stack.md(token),
        timeout=10,
    )


def _error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def _bad_request(error: grpc.RpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    found: list[tuple[str, str]] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            found += [(v.field, v.description) for v in bad_request.field_violations]
    return found


PATIENTS = [
    {"first_name": "Ana", "last_name": "Popescu", "age": 34, "status": "active"},
    {"first_name": "Ion", "last_name": "Popa", "age": 71, "status": "active"},
    {"first_name": "Maria", "last_name": "Ionescu", "age": 8, "status": "archived"},
    {"first_name": "Dan", "last_name": "Pop", "status": "active"},
    {"first_name": "Elena", "last_name": "Stan", "age": 45, "status": "new", "tags": ["vip"]},
]


def _seed(stack: ResourceStack, business: Business, location_id: str = "main") -> None:
    for index, data in enumerate(PATIENTS):
        stack.create(
            business,
            location_id=location_id,
            resource_id=f"p{index}",
            data=data,
            start_time=ts(f"2026-03-0{index + 1}T09:00:00Z"),
        )


def test_filter_order_by_data_and_total_size(stack: ResourceStack) -> None:
    """A filter with OR, NOT, a text search and a comparison; ordered by a data field
    descending; paged by 2 with the total on every page."""
    business = stack.add_business()
    _seed(stack, business)
    request: dict[str, Any] = {
        "filter": '"pop" AND (data.age >= 30 OR -data.age:*) AND NOT data.status = "archived"',
        "order_by": "data.last_name desc, start_time",
        "page_size": 2,
    }
    names: list[str] = []
    totals: list[int] = []
    token = ""
    while True:
        page = _list(stack, business, page_token=token, **request)
        names += [r.data["last_name"] for r in page.resources]
        assert page.HasField("total_size")
        totals.append(page.total_size)
        token = page.next_page_token
        if not token:
            break
    assert names == ["Popescu", "Popa", "Pop"]
    assert totals == [3, 3]
    searched = _list(stack, business, filter='data.tags:"vip" OR data.first_name:"MAR"', order_by="data.age")
    assert [r.resource_id for r in searched.resources] == ["p2", "p4"]


def test_page_token_is_bound_to_the_filter(stack: ResourceStack) -> None:
    """A token issued for one filter is refused for another (INVALID_ARGUMENT on page_token)."""
    business = stack.add_business()
    _seed(stack, business)
    first = _list(stack, business, filter='data.status = "active"', page_size=1)
    assert first.next_page_token
    error = _error(
        lambda: _list(stack, business, filter='data.status = "new"', page_token=first.next_page_token)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in _bad_request(error)] == ["page_token"]


@pytest.mark.parametrize(
    "hostile",
    [
        "data.a = 1; DROP TABLE resources",
        'data.a = "\x00"',
        "(" * 50 + "data.a = 1" + ")" * 50,
        'data.a = "' + "x" * 5000 + '"',
        " OR ".join(["data.a = 1"] * 40),
        'business_id = "other"',
        "data.a = 1e999",
        "data.a = '",
        "data.a ~ 1",
    ],
)
def test_hostile_filters_answer_invalid_argument_never_internal(stack: ResourceStack, hostile: str) -> None:
    """Over the wire: INVALID_ARGUMENT with a BadRequest violation on "filter" that gives the
    position; the shard is not asked for anything (no rows are changed, none are listed)."""
    business = stack.add_business()
    stack.create(business, resource_id="keep")
    error = _error(lambda: _list(stack, business, filter=hostile))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = _bad_request(error)
    assert [f for f, _ in violations] == ["filter"]
    assert violations[0][1].startswith("at character ")
    assert [r.resource_id for r in _list(stack, business).resources] == ["keep"]


def test_filters_never_see_other_locations_or_businesses(
    stack: ResourceStack, make_user_token: Callable[..., tuple[str, str]]
) -> None:
    """The same documents in another location of the business (same shard) and in another
    business: a filter that matches everything returns only the asked location's rows, a
    filter cannot name business_id or location_id, and a member of one location is refused
    the other whatever the filter."""
    sub, token = make_user_token("main-only-reader")
    business = stack.add_business(
        locations=("main", "annex"),
        roles={"owner": Role(permissions=("*",)), "reader": Role(permissions=("patients:read",))},
        members={sub: Member(role="reader", location_ids=("main",))},
    )
    other = stack.add_business()
    _seed(stack, business, "main")
    _seed(stack, business, "annex")
    _seed(stack, other, "main")
    assert stack.shard_of(business, "main") == stack.shard_of(business, "annex")
    everything = "data.status:* OR NOT data.status:* OR resource_id:*"
    listed = _list(stack, business, filter=everything, token=token, page_size=100)
    assert {(r.business_id, r.location_id) for r in listed.resources} == {(business.id, "main")}
    assert listed.total_size == len(PATIENTS)
    for naming in ('location_id = "annex"', f'business_id = "{other.id}"'):
        error = _error(lambda naming=naming: _list(stack, business, filter=naming, token=token))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    denied = _error(lambda: _list(stack, business, location_id="annex", filter=everything, token=token))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _error(lambda: _list(stack, other, filter=everything, token=token)).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )


# --- AggregateResources ---------------------------------------------------------------------


def _aggregate(
    stack: ResourceStack, business: Business, token: str | None = None, **fields: Any
) -> resource_pb2.AggregateResourcesResponse:
    return stack.stub.AggregateResources(
        resource_pb2.AggregateResourcesRequest(
            business_id=business.id, location_id="main", resource_type="appointments", **fields
        ),
        metadata=stack.md(token),
        timeout=10,
    )


def _keys(group: resource_pb2.AggregateResourcesResponse.Group) -> list[Any]:
    return [json_format.MessageToDict(k) for k in group.keys]


def test_aggregates_group_by_local_day_and_data_field(
    stack: ResourceStack, make_user_token: Callable[..., tuple[str, str]]
) -> None:
    """Counts and sum/min/max of data.price, filtered, per local day in the location's time
    zone (Europe/Bucharest: UTC+2, +3 from March 29) and per status; only numbers count."""
    business = Business(
        id=f"b{secrets.token_hex(5)}",
        name="Tz clinic",
        type=BusinessType.DENTAL,
        locations=(Location(id="main", name="main", timezone="Europe/Bucharest"),),
        permissions=Permissions(roles={"owner": Role(permissions=("*",))}, members={}),
    )
    stack.store.create(business)
    rows = [
        ("2026-03-01T21:30:00Z", "done", 100),  # 23:30 on March 1, local
        ("2026-03-01T22:30:00Z", "done", 50.5),  # 00:30 on March 2, local
        ("2026-03-01T23:00:00Z", "open", "n/a"),  # March 2; a price that is not a number
        ("2026-03-31T22:30:00Z", "done", 20),  # 01:30 on April 1, local (DST)
        ("2026-03-02T10:00:00Z", "cancelled", 999),  # filtered out
        (None, "open", 5),  # no start_time: the null day
    ]
    for start, status, price in rows:
        fields: dict[str, Any] = {"start_time": ts(start)} if start else {}
        stack.create(business, "appointments", data={"status": status, "price": price}, **fields)
    by_day = _aggregate(
        stack,
        business,
        filter='data.status != "cancelled"',
        value_field="data.price",
        group_by=["start_time:day"],
    )
    assert [(_keys(g), g.count, g.sum if g.HasField("sum") else None) for g in by_day.groups] == [
        (["2026-02-28T22:00:00Z"], 1, 100.0),
        (["2026-03-01T22:00:00Z"], 2, 50.5),
        (["2026-03-31T21:00:00Z"], 1, 20.0),
        ([None], 1, 5.0),
    ]
    by_status = _aggregate(
        stack, business, value_field="data.price", group_by=["data.status", "start_time:month"]
    )
    summary = [(_keys(g), g.count, g.min, g.max) for g in by_status.groups]
    assert summary[:2] == [
        (["cancelled", "2026-02-28T22:00:00Z"], 1, 999.0, 999.0),
        (["done", "2026-02-28T22:00:00Z"], 2, 50.5, 100.0),
    ]
    assert not by_status.truncated
    assert _aggregate(stack, business, group_by=["data.status"], max_groups=2).truncated
    total = _aggregate(stack, business)
    assert [(g.count, g.HasField("sum")) for g in total.groups] == [(len(rows), False)]
    bad = _error(lambda: _aggregate(stack, business, filter="data.x = 1 )"))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in _bad_request(bad)] == ["filter"]
    for wrong in (["data.a", "data.b", "data.c"], ["start_time:year"], ["status"]):
        assert _error(lambda wrong=wrong: _aggregate(stack, business, group_by=wrong)).code() == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
    _, stranger = make_user_token("aggregate-stranger")
    assert (
        _error(lambda: _aggregate(stack, business, token=stranger)).code()
        == grpc.StatusCode.PERMISSION_DENIED
    )


# --- GetLocationStatistics ------------------------------------------------------------------


def test_dental_statistics_in_one_call_with_read_permission_on_every_type(
    stack: ResourceStack, make_user_token: Callable[..., tuple[str, str]]
) -> None:
    """Appointments today / this month by status, new patients, revenue (numbers only, not
    cancelled), top treatments and recent activities; a member who cannot read one of the
    summarised types is refused the whole dashboard."""
    partial_sub, partial = make_user_token("stats-partial")
    full_sub, full = make_user_token("stats-full")
    business = stack.add_business(
        roles={
            "owner": Role(permissions=("*",)),
            "front": Role(permissions=("appointments:read", "patients:read")),
            "manager": Role(permissions=("appointments:read", "patients:read", "invoices:read")),
        },
        members={partial_sub: Member(role="front"), full_sub: Member(role="manager")},
    )
    now = datetime.now(UTC).replace(microsecond=0)
    offsets = [
        timedelta(0),
        timedelta(minutes=-1),
        timedelta(days=-2),
        timedelta(days=-40),
        timedelta(hours=1),
    ]
    appointments = []
    for index, offset in enumerate(offsets):
        start = now + offset
        status = ["done", "confirmed", "done", "done", "cancelled"][index]
        treatment = ["cleaning", "cleaning", "filling", "crown", "cleaning"][index]
        appointments.append((start, status, treatment))
        stack.create(
            business,
            "appointments",
            data={"status": status, "treatment": treatment},
            start_time=ts(start.isoformat().replace("+00:00", "Z")),
        )
    for name in ("Ana", "Ion"):
        stack.create(business, "patients", data={"first_name": name})
    for total, status in ((120, "paid"), (30.5, "paid"), (999, "cancelled"), ("n/a", "paid")):
        stack.create(business, "invoices", data={"total": total, "status": status})

    answer = stack.stub.GetLocationStatistics(
        resource_pb2.GetLocationStatisticsRequest(business_id=business.id, location_id="main"),
        metadata=stack.md(full),
        timeout=10,
    )
    values = {s.name: s for s in answer.statistics}
    today = [a for a in appointments if a[0].date() == answer.as_of.ToDatetime(tzinfo=UTC).date()]
    month = [a for a in appointments if (a[0].year, a[0].month) == (now.year, now.month)]
    assert answer.time_zone == "UTC"
    assert values["appointments_today"].value == len(today)
    assert dict(values["appointments_today"].breakdown) == _counts(a[1] for a in today)
    assert values["appointments_this_month"].value == len(month)
    assert dict(values["top_treatments_this_month"].breakdown) == _counts(a[2] for a in month)
    assert values["new_patients_this_month"].value == 2
    assert values["revenue_this_month"].value == 150.5
    assert len(answer.recent_activities) == 10
    updates = [a.update_time.ToDatetime() for a in answer.recent_activities]
    assert updates == sorted(updates, reverse=True)
    assert answer.recent_activities[0].resource_type == "invoices"

    denied = _error(
        lambda: stack.stub.GetLocationStatistics(
            resource_pb2.GetLocationStatisticsRequest(business_id=business.id, location_id="main"),
            metadata=stack.md(partial),
            timeout=10,
        )
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED


def _counts(values: Iterable[str]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for value in values:
        counted[value] = counted.get(value, 0) + 1
    return counted


def test_paging_by_a_data_field_with_extreme_numbers(stack: ResourceStack) -> None:
    """Sort values that jsonb prints at full length (1e300) travel in page tokens and page exactly."""
    business = stack.add_business()
    for index, price in enumerate([1e300, -1e300, 2.5, 1e-300]):
        stack.create(business, resource_id=f"x{index}", data={"price": price})
    seen: list[float] = []
    token = ""
    while True:
        page = _list(stack, business, order_by="data.price desc", page_size=1, page_token=token)
        seen += [r.data["price"] for r in page.resources]
        token = page.next_page_token
        if not token:
            break
    assert seen == [1e300, 2.5, 1e-300, -1e300]
