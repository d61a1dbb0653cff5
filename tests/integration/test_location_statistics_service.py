"""GetLocationStatistics over a real channel: hotel and gym dashboards against a reference
computed here from the rows created (with the response's own as_of and the windows of
location_statistics); recent activities from the change history (what ListResourceChanges
reads), the recently updated resources when it has none; the tenant walls of statistics and
aggregates (another location of the business on the same shard, another business); hostile
filters on AggregateResources are INVALID_ARGUMENT."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2
from simplu.v1 import resource_pb2

from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer
from simplu_grpc.domain.business.model import Business, BusinessType, Location, Member, Permissions, Role
from simplu_grpc.domain.resources import statistics as location_statistics
from tests.fixtures.server import MakeServer
from tests.integration.resource_stack import ResourceStack, build_stack, ts

pytestmark = pytest.mark.integration

# The types the dental dashboard summarises (location_statistics.DEFINITIONS).
DENTAL_TYPES = ["appointments", "patients", "invoices"]


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


def _rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _statistics(
    stack: ResourceStack, business: Business, location_id: str = "main", token: str | None = None
) -> resource_pb2.LocationStatistics:
    return stack.stub.GetLocationStatistics(
        resource_pb2.GetLocationStatisticsRequest(business_id=business.id, location_id=location_id),
        metadata=stack.md(token),
        timeout=10,
    )


def _code(call: Callable[[], Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()  # type: ignore[no-any-return]  # grpc's RpcError is untyped


# (start offset, nights or None for no end_time, status, total) relative to now.
RESERVATIONS = [
    (timedelta(days=-3), 5, "confirmed", 300),  # stays through tonight
    (timedelta(days=-2), 2, "confirmed", 200),  # leaves today
    (timedelta(days=-2), 2, "cancelled", 999),  # cancelled: never counts
    (timedelta(hours=0), 1, "confirmed", 100.5),  # arrives today
    (timedelta(hours=0), None, "confirmed", "n/a"),  # no end time, a total that is no number
    (timedelta(days=-40), 3, "done", 400),  # long gone
    (timedelta(days=20), 2, "confirmed", 250),  # later
]


def _within(instant: datetime | None, window: location_statistics.Window) -> bool:
    return instant is not None and window.start <= instant < window.end


def test_hotel_statistics_match_a_reference_and_see_one_location(stack: ResourceStack) -> None:
    """Rooms, occupancy tonight (overlap with 18:00-10:00, an end-less stay by its start),
    reservations this month, arrivals and departures today, revenue this month; cancelled
    reservations never count, and the same rows in the business's other location do not."""
    business = stack.add_business(BusinessType.HOTEL, locations=("main", "annex"))
    now = datetime.now(UTC).replace(microsecond=0)
    stays: list[tuple[datetime, datetime | None, str, Any]] = []
    for offset, nights, status, total in RESERVATIONS:
        start = now + offset
        end = start + timedelta(days=nights) if nights is not None else None
        stays.append((start, end, status, total))
        for location_id in ("main", "annex"):
            fields = {"start_time": ts(_rfc3339(start))}
            if end is not None:
                fields["end_time"] = ts(_rfc3339(end))
            stack.create(
                business,
                "reservations",
                location_id=location_id,
                data={"status": status, "total": total},
                **fields,
            )
    for index in range(3):
        stack.create(business, "rooms", data={"number": index})
    stack.create(business, "rooms", location_id="annex", data={"number": 9})
    assert stack.shard_of(business, "main") == stack.shard_of(business, "annex")

    answer = _statistics(stack, business)
    windows = location_statistics.windows(answer.as_of.ToDatetime(tzinfo=UTC), "UTC")
    today, month, tonight = windows["today"], windows["month"], windows["tonight"]
    kept = [s for s in stays if s[2] != "cancelled"]
    expected = {
        "rooms": 3,
        "occupied_tonight": sum(
            1
            for start, end, _, _ in kept
            if start < tonight.end and (end > tonight.start if end else start >= tonight.start)
        ),
        "reservations_this_month": sum(1 for s in kept if _within(s[0], month)),
        "arrivals_today": sum(1 for s in kept if _within(s[0], today)),
        "departures_today": sum(1 for s in kept if _within(s[1], today)),
        "revenue_this_month": sum(
            s[3] for s in kept if _within(s[0], month) and isinstance(s[3], int | float)
        ),
    }
    assert {s.name: s.value for s in answer.statistics} == pytest.approx(expected)
    assert expected["occupied_tonight"] >= 2  # the reference is not trivially zero
    assert {(a.resource_type, a.kind) for a in answer.recent_activities} <= {
        ("reservations", resource_pb2.CHANGE_KIND_CREATED),
        ("rooms", resource_pb2.CHANGE_KIND_CREATED),
    }


def test_gym_statistics_match_a_reference(stack: ResourceStack) -> None:
    """Active members (data.status = "active"), check-ins today and this month, packages sold
    this month (memberships created this month)."""
    business = stack.add_business(BusinessType.GYM)
    now = datetime.now(UTC).replace(microsecond=0)
    for status in ("active", "active", "frozen", "active"):
        stack.create(business, "members", data={"status": status})
    check_ins = [now, now - timedelta(minutes=5), now - timedelta(days=3), now - timedelta(days=45)]
    for instant in check_ins:
        stack.create(business, "check-ins", start_time=ts(_rfc3339(instant)))
    for _ in range(2):
        stack.create(business, "memberships", data={"package": "monthly"})

    answer = _statistics(stack, business)
    windows = location_statistics.windows(answer.as_of.ToDatetime(tzinfo=UTC), "UTC")
    assert {s.name: s.value for s in answer.statistics} == {
        "active_members": 3,
        "check_ins_today": sum(1 for c in check_ins if _within(c, windows["today"])),
        "check_ins_this_month": sum(1 for c in check_ins if _within(c, windows["month"])),
        "packages_sold_this_month": 2,
    }


def test_statistics_and_aggregates_never_see_other_locations_or_businesses(
    stack: ResourceStack, make_user_token: Callable[..., tuple[str, str]]
) -> None:
    """The same appointments in the business's other location and in another business: the
    dashboard and an aggregate of one location count only its own; a member of one location
    is refused the other's dashboard and aggregates, and a stranger everything."""
    sub, token = make_user_token("stats-main-only")
    _, stranger = make_user_token("stats-stranger")
    business = stack.add_business(
        locations=("main", "annex"),
        roles={"owner": Role(permissions=("*",))},
        members={sub: Member(role="owner", location_ids=("main",))},
    )
    other = stack.add_business()
    now = _rfc3339(datetime.now(UTC).replace(microsecond=0))
    for target, location_id, copies in ((business, "main", 2), (business, "annex", 3), (other, "main", 4)):
        for _ in range(copies):
            stack.create(
                target,
                "appointments",
                location_id=location_id,
                data={"status": "done", "treatment": "cleaning", "price": 10},
                start_time=ts(now),
            )
    values = {s.name: s for s in _statistics(stack, business, token=token).statistics}
    assert values["appointments_today"].value == 2
    assert dict(values["top_treatments_this_month"].breakdown) == {"cleaning": 2}

    def aggregate(location_id: str, who: str) -> resource_pb2.AggregateResourcesResponse:
        return stack.stub.AggregateResources(
            resource_pb2.AggregateResourcesRequest(
                business_id=business.id,
                location_id=location_id,
                resource_type="appointments",
                filter="data.price:* OR NOT data.price:*",
                value_field="data.price",
            ),
            metadata=stack.md(who),
            timeout=10,
        )

    assert [(g.count, g.sum) for g in aggregate("main", token).groups] == [(2, 20.0)]
    assert [(g.count, g.sum) for g in aggregate("annex", stack.token).groups] == [(3, 30.0)]
    assert _code(lambda: aggregate("annex", token)) == grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: _statistics(stack, business, "annex", token)) == grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: _statistics(stack, business, token=stranger)) == grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: aggregate("main", stranger)) == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    "hostile",
    [
        "data.price = 1; DROP TABLE resources",
        'data.status = "\x00"',
        "(" * 200 + "data.price = 1" + ")" * 200,
        'data.status = "' + "x" * 100_000 + '"',
        "data.price = 1e999",
    ],
)
def test_hostile_aggregate_filters_are_invalid_argument(stack: ResourceStack, hostile: str) -> None:
    """AggregateResources parses the same filter language: hostile input is INVALID_ARGUMENT,
    never INTERNAL, and the location's rows are still there."""
    business = stack.add_business()
    stack.create(business, "appointments", data={"price": 1})
    request = resource_pb2.AggregateResourcesRequest(
        business_id=business.id, location_id="main", resource_type="appointments", filter=hostile
    )
    assert (
        _code(lambda: stack.stub.AggregateResources(request, metadata=stack.md(), timeout=10))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    request.filter = ""
    answer = stack.stub.AggregateResources(request, metadata=stack.md(), timeout=10)
    assert [g.count for g in answer.groups] == [1]


# --- recent activities ----------------------------------------------------------------------


def _update(stack: ResourceStack, business: Business, resource_id: str, token: str, status: str) -> None:
    resource = resource_pb2.Resource(
        business_id=business.id, location_id="main", resource_type="patients", resource_id=resource_id
    )
    resource.data.update({"status": status})
    stack.stub.UpdateResource(
        resource_pb2.UpdateResourceRequest(
            resource=resource, update_mask=field_mask_pb2.FieldMask(paths=["data.status"])
        ),
        metadata=stack.md(token),
        timeout=10,
    )


def test_recent_activities_are_the_latest_changes_of_the_types_summarised(
    stack: ResourceStack, make_user_token: Any
) -> None:
    """Creates, an update by a member and a delete come back newest first, with their kind,
    principal and time exactly as ListResourceChanges reports them; a deleted resource has no
    times any more; a change of a type the dashboard does not summarise (staff), and changes
    in another location or business, are not there."""
    writer_sub, writer = make_user_token("activities-writer")
    business = stack.add_business(
        locations=("main", "annex"),
        roles={"owner": Role(permissions=("*",)), "front": Role(permissions=("patients:update",))},
        members={writer_sub: Member(role="front")},
    )
    elsewhere = stack.add_business()
    patient = stack.create(business, "patients", data={"first_name": "Ana"})
    appointment = stack.create(business, "appointments", data={"status": "confirmed"})
    invoice = stack.create(business, "invoices", data={"total": 10})
    _update(stack, business, patient.resource_id, writer, "active")
    stack.create(business, "staff", data={"name": "Dr. Pop"})
    stack.stub.DeleteResource(
        resource_pb2.DeleteResourceRequest(
            business_id=business.id,
            location_id="main",
            resource_type="appointments",
            resource_id=appointment.resource_id,
        ),
        metadata=stack.md(),
        timeout=10,
    )
    stack.create(business, "patients", location_id="annex", data={"first_name": "Ion"})
    stack.create(elsewhere, "patients", data={"first_name": "Dan"})

    found = _statistics(stack, business).recent_activities
    history = stack.stub.ListResourceChanges(
        resource_pb2.ListResourceChangesRequest(
            business_id=business.id, location_id="main", resource_types=DENTAL_TYPES, order_by="sequence desc"
        ),
        metadata=stack.md(),
        timeout=10,
    ).changes
    assert [(a.kind, a.resource_type, a.resource_id) for a in found] == [
        (resource_pb2.CHANGE_KIND_DELETED, "appointments", appointment.resource_id),
        (resource_pb2.CHANGE_KIND_UPDATED, "patients", patient.resource_id),
        (resource_pb2.CHANGE_KIND_CREATED, "invoices", invoice.resource_id),
        (resource_pb2.CHANGE_KIND_CREATED, "appointments", appointment.resource_id),
        (resource_pb2.CHANGE_KIND_CREATED, "patients", patient.resource_id),
    ]
    assert [(a.kind, a.resource_id, a.principal, a.change_time) for a in found] == [
        (c.kind, c.resource_id, c.principal, c.change_time) for c in history
    ]
    assert found[1].principal == writer_sub
    assert found[0].principal == found[2].principal != writer_sub
    # The deleted appointment has no times; the patient's are the resource's current ones.
    assert not found[0].HasField("create_time")
    assert not found[0].HasField("update_time")
    current = stack.get(business, patient.resource_id)
    assert (found[1].create_time, found[1].update_time) == (current.create_time, current.update_time)
    assert found[1].update_time != patient.update_time


def test_without_a_history_recent_activities_are_the_latest_updates(stack: ResourceStack) -> None:
    """Resources loaded straight into the shard record no change: the dashboard then lists the
    most recently updated resources of the types summarised (kind unspecified, no principal,
    change_time the update time). An empty location has no activities at all."""
    business = stack.add_business()
    assert list(_statistics(stack, business).recent_activities) == []  # also puts the shard schema in place
    base = datetime(2026, 5, 1, tzinfo=UTC)
    rows = [
        ("patients", "p1", base + timedelta(minutes=3)),
        ("invoices", "i1", base + timedelta(minutes=5)),
        ("staff", "s1", base + timedelta(minutes=9)),  # not summarised
        ("appointments", "a1", base + timedelta(minutes=1)),
    ]
    with psycopg.connect(stack.shard_dsn(stack.shard_of(business)), autocommit=True) as conn:
        for resource_type, resource_id, updated in rows:
            conn.execute(
                "INSERT INTO resources (business_id, location_id, resource_type, resource_id, business_type,"
                " data, create_time, update_time) VALUES (%s, 'main', %s, %s, 'dental', %s, %s, %s)",
                (business.id, resource_type, resource_id, "{}", base, updated),
            )
    found = _statistics(stack, business).recent_activities
    assert [(a.resource_type, a.resource_id) for a in found] == [
        ("invoices", "i1"),
        ("patients", "p1"),
        ("appointments", "a1"),
    ]
    for activity in found:
        assert activity.kind == resource_pb2.CHANGE_KIND_UNSPECIFIED
        assert activity.principal == ""
        assert activity.change_time == activity.update_time
        assert activity.create_time.ToDatetime(tzinfo=UTC) == base


def test_aggregates_group_by_local_iso_week(stack: ResourceStack) -> None:
    """start_time:week is the ISO week (from Monday 00:00) in the location's time zone: 23:30
    on Sunday and 00:30 on Monday, local, fall in different weeks, keyed by the local Monday's
    first instant."""
    business = Business(
        id=f"bweek{datetime.now(UTC).strftime('%H%M%S%f')}",
        name="Week clinic",
        type=BusinessType.DENTAL,
        locations=(Location(id="main", name="main", timezone="Europe/Bucharest"),),
        permissions=Permissions(roles={"owner": Role(permissions=("*",))}, members={}),
    )
    stack.store.create(business)
    # Europe/Bucharest is UTC+2 in March (before the 29th).
    for start in ("2026-03-08T21:30:00Z", "2026-03-08T22:30:00Z", "2026-03-10T08:00:00Z"):
        stack.create(business, "appointments", data={"price": 10}, start_time=ts(start))
    answer = stack.stub.AggregateResources(
        resource_pb2.AggregateResourcesRequest(
            business_id=business.id,
            location_id="main",
            resource_type="appointments",
            value_field="data.price",
            group_by=["start_time:week"],
        ),
        metadata=stack.md(),
        timeout=10,
    )
    assert [([k.string_value for k in g.keys], g.count, g.sum) for g in answer.groups] == [
        (["2026-03-01T22:00:00Z"], 1, 10.0),  # the week of Monday March 2, local
        (["2026-03-08T22:00:00Z"], 2, 20.0),  # the week of Monday March 9, local
    ]
