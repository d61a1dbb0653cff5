"""GetLocationStatistics's recent activities over a real channel: the latest changes of the
types summarised, from the change history (what ListResourceChanges reads), of that location
only; the recently updated resources when the history has none (rows loaded in bulk)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from google.protobuf import field_mask_pb2
from simplu.v1 import resource_pb2

from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer
from simplu_grpc.domain.business import Business, Member, Role
from tests.fixtures.server import MakeServer
from tests.integration.resource_stack import ResourceStack, build_stack

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


def _statistics(stack: ResourceStack, business: Business, location_id: str = "main") -> Any:
    return stack.stub.GetLocationStatistics(
        resource_pb2.GetLocationStatisticsRequest(business_id=business.id, location_id=location_id),
        metadata=stack.md(),
        timeout=10,
    )


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
                (business.id, resource_type, resource_id, json.dumps({}), base, updated),
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
