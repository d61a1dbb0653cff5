"""SuspendBusiness, ResumeBusiness and UndeleteBusiness through a real server (moto, Citrus emulator,
PostgreSQL shards, a loopback channel): who may call them (permission before existence), what a
suspended business's resources answer, and the retention window."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from google.protobuf import struct_pb2
from simplu.v1 import business_pb2, resource_pb2

from tests.integration.lifecycle_stack import Metadata, Stack, answer, dynamodb_calls

pytestmark = pytest.mark.integration

ADMIN_ONLY = (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_ONLY")
SUSPENDED = (grpc.StatusCode.FAILED_PRECONDITION, "BUSINESS_SUSPENDED")


@pytest.fixture
def stack(lifecycle_stack: Stack) -> Stack:
    return lifecycle_stack


def suspend(stack: Stack, business_id: str, md: Metadata, etag: str = "") -> business_pb2.Business:
    request = business_pb2.SuspendBusinessRequest(business_id=business_id, etag=etag)
    return stack.server.business.SuspendBusiness(request, metadata=md, timeout=10)


def resume(stack: Stack, business_id: str, md: Metadata) -> business_pb2.Business:
    request = business_pb2.ResumeBusinessRequest(business_id=business_id)
    return stack.server.business.ResumeBusiness(request, metadata=md, timeout=10)


def undelete(stack: Stack, business_id: str, md: Metadata) -> business_pb2.Business:
    request = business_pb2.UndeleteBusinessRequest(business_id=business_id)
    return stack.server.business.UndeleteBusiness(request, metadata=md, timeout=10)


def delete(stack: Stack, business_id: str, md: Metadata) -> business_pb2.Business:
    request = business_pb2.DeleteBusinessRequest(business_id=business_id)
    return stack.server.business.DeleteBusiness(request, metadata=md, timeout=10)


def test_suspend_and_resume_are_for_platform_admins_and_permission_comes_before_existence(
    stack: Stack,
) -> None:
    """The owner, a stranger and a businesses.write client get ADMIN_ONLY, for an existing id and a
    made-up one alike; an admin gets NOT_FOUND for the made-up one, and a bad id is INVALID_ARGUMENT."""
    _, owner = stack.person()
    business = stack.create(owner)
    _, stranger = stack.person()
    writer = stack.machine("simplu/businesses.write")
    for md in (owner, stranger, writer):
        for business_id in (business.id, "nosuchbusiness"):
            assert answer(lambda md=md, b=business_id: suspend(stack, b, md)) == ADMIN_ONLY
            assert answer(lambda md=md, b=business_id: resume(stack, b, md)) == ADMIN_ONLY
    assert answer(lambda: suspend(stack, "nosuchbusiness", stack.admin)) == (
        grpc.StatusCode.NOT_FOUND,
        "BUSINESS_NOT_FOUND",
    )
    assert answer(lambda: suspend(stack, "bad-id", stack.admin))[0] == grpc.StatusCode.INVALID_ARGUMENT
    get = business_pb2.GetBusinessRequest(business_id=business.id)
    assert stack.server.business.GetBusiness(get, metadata=owner, timeout=10).status == (
        business_pb2.BUSINESS_STATUS_ACTIVE
    )


def test_a_suspended_business_refuses_every_resource_call_with_its_reason_until_resumed(stack: Stack) -> None:
    """Suspended: every ResourceService call on its data answers FAILED_PRECONDITION /
    BUSINESS_SUSPENDED (to its owner and to admins), a stranger still gets PERMISSION_DENIED first;
    BusinessService still reads and shows it SUSPENDED; suspending twice changes nothing (same
    etag); after ResumeBusiness the data is there as it was."""
    _, owner = stack.person()
    business = stack.create(owner)
    created = stack.server.resource.CreateResource(
        resource_pb2.CreateResourceRequest(
            resource=resource_pb2.Resource(
                business_id=business.id,
                location_id="main",
                resource_type="patients",
                data=struct_pb2.Struct(fields={"name": struct_pb2.Value(string_value="Ana")}),
            )
        ),
        metadata=owner,
        timeout=20,
    )
    suspended = suspend(stack, business.id, stack.admin)
    assert suspended.status == business_pb2.BUSINESS_STATUS_SUSPENDED
    assert suspend(stack, business.id, stack.admin, etag=suspended.etag).etag == suspended.etag

    rs = stack.server.resource
    key = {"business_id": business.id, "location_id": "main", "resource_type": "patients"}
    calls = {
        "CreateResource": lambda md: rs.CreateResource(
            resource_pb2.CreateResourceRequest(resource=resource_pb2.Resource(**key)), metadata=md, timeout=10
        ),
        "GetResource": lambda md: rs.GetResource(
            resource_pb2.GetResourceRequest(**key, resource_id=created.resource_id), metadata=md, timeout=10
        ),
        "BatchGetResources": lambda md: rs.BatchGetResources(
            resource_pb2.BatchGetResourcesRequest(
                business_id=business.id,
                keys=[
                    resource_pb2.ResourceKey(
                        location_id="main", resource_type="patients", resource_id=created.resource_id
                    )
                ],
            ),
            metadata=md,
            timeout=10,
        ),
        "ListResources": lambda md: rs.ListResources(
            resource_pb2.ListResourcesRequest(**key), metadata=md, timeout=10
        ),
        "AggregateResources": lambda md: rs.AggregateResources(
            resource_pb2.AggregateResourcesRequest(**key), metadata=md, timeout=10
        ),
        "GetLocationStatistics": lambda md: rs.GetLocationStatistics(
            resource_pb2.GetLocationStatisticsRequest(business_id=business.id, location_id="main"),
            metadata=md,
            timeout=10,
        ),
        "UpdateResource": lambda md: rs.UpdateResource(
            resource_pb2.UpdateResourceRequest(
                resource=resource_pb2.Resource(
                    **key, resource_id=created.resource_id, data=struct_pb2.Struct()
                )
            ),
            metadata=md,
            timeout=10,
        ),
        "DeleteResource": lambda md: rs.DeleteResource(
            resource_pb2.DeleteResourceRequest(**key, resource_id=created.resource_id),
            metadata=md,
            timeout=10,
        ),
        "ListResourceChanges": lambda md: rs.ListResourceChanges(
            resource_pb2.ListResourceChangesRequest(business_id=business.id, location_id="main"),
            metadata=md,
            timeout=10,
        ),
    }
    _, stranger = stack.person()
    for name, call in calls.items():
        assert answer(lambda call=call: call(owner)) == SUSPENDED, name
        assert answer(lambda call=call: call(stack.admin)) == SUSPENDED, name
        assert answer(lambda call=call: call(stranger))[0] == grpc.StatusCode.PERMISSION_DENIED, name

    # The refusal is decided on the business the permission check read from the cache: warm,
    # not one DynamoDB call (this server wrote the suspension, so its cache has it).
    reads_before = dynamodb_calls(stack, "get_item")
    assert answer(lambda: calls["GetResource"](owner)) == SUSPENDED
    assert dynamodb_calls(stack, "get_item") == reads_before

    get = business_pb2.GetBusinessRequest(business_id=business.id)
    assert stack.server.business.GetBusiness(get, metadata=owner, timeout=10).status == (
        business_pb2.BUSINESS_STATUS_SUSPENDED
    )
    assert resume(stack, business.id, stack.admin).status == business_pb2.BUSINESS_STATUS_ACTIVE
    again = calls["GetResource"](owner)
    assert again.data == created.data
    assert again.etag == created.etag


def test_undelete_within_the_window_brings_the_business_back_for_its_owner_only(stack: Stack) -> None:
    """A deleted business shows delete_time and purge_time (30 days later by default). A member
    without "*" gets MISSING_PERMISSION, a stranger NOT_A_MEMBER, for the business and for a
    made-up id alike; the owner undeletes it: ACTIVE, delete_time gone, resources reachable again.
    Undeleting a live business is BUSINESS_NOT_DELETED; an admin's made-up id is NOT_FOUND."""
    owner_sub, owner = stack.person()
    business = stack.create(owner)
    helper_sub, helper = stack.person()
    stack.server.business.UpdateBusiness(
        business_pb2.UpdateBusinessRequest(
            business=business_pb2.Business(
                id=business.id,
                permissions=business_pb2.BusinessPermissions(
                    roles={
                        "owner": business_pb2.Role(permissions=["*"]),
                        "front": business_pb2.Role(permissions=["patients:*"]),
                    }
                ),
            ),
            update_mask={"paths": ["permissions.roles"]},
        ),
        metadata=owner,
        timeout=10,
    )
    stack.server.business.SetMember(
        business_pb2.SetMemberRequest(
            business_id=business.id, member=helper_sub, membership=business_pb2.Member(role="front")
        ),
        metadata=owner,
        timeout=10,
    )
    deleted = delete(stack, business.id, owner)
    assert deleted.status == business_pb2.BUSINESS_STATUS_DELETED
    assert deleted.HasField("delete_time")
    window = deleted.purge_time.ToDatetime() - deleted.delete_time.ToDatetime()
    assert window == timedelta(days=30)

    _, stranger = stack.person()
    assert answer(lambda: undelete(stack, business.id, helper)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "MISSING_PERMISSION",
    )
    for business_id in (business.id, "nosuchbusiness"):
        assert answer(lambda b=business_id: undelete(stack, b, stranger)) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "NOT_A_MEMBER",
        )
    assert answer(lambda: undelete(stack, "nosuchbusiness", stack.admin)) == (
        grpc.StatusCode.NOT_FOUND,
        "BUSINESS_NOT_FOUND",
    )

    back = undelete(stack, business.id, owner)
    assert back.status == business_pb2.BUSINESS_STATUS_ACTIVE
    assert not back.HasField("delete_time")
    assert not back.HasField("purge_time")
    assert back.owner == owner_sub
    listing = resource_pb2.ListResourcesRequest(
        business_id=business.id, location_id="main", resource_type="patients"
    )
    stack.server.resource.ListResources(listing, metadata=helper, timeout=10)
    assert answer(lambda: undelete(stack, business.id, owner)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "BUSINESS_NOT_DELETED",
    )


def test_deleting_never_lifts_a_suspension_and_a_deleted_business_cannot_be_suspended(stack: Stack) -> None:
    """A deleted business cannot be suspended or resumed (FAILED_PRECONDITION / BUSINESS_DELETED); a
    business suspended when its owner deleted it comes back SUSPENDED on undelete, its resources
    still refused."""
    _, owner = stack.person()
    plain = stack.create(owner)
    delete(stack, plain.id, owner)
    deleted = (grpc.StatusCode.FAILED_PRECONDITION, "BUSINESS_DELETED")
    assert answer(lambda: suspend(stack, plain.id, stack.admin)) == deleted
    assert answer(lambda: resume(stack, plain.id, stack.admin)) == deleted

    billed = stack.create(owner)
    suspend(stack, billed.id, stack.admin)
    delete(stack, billed.id, owner)
    assert undelete(stack, billed.id, owner).status == business_pb2.BUSINESS_STATUS_SUSPENDED
    listing = resource_pb2.ListResourcesRequest(
        business_id=billed.id, location_id="main", resource_type="patients"
    )
    assert (
        answer(lambda: stack.server.resource.ListResources(listing, metadata=owner, timeout=10)) == SUSPENDED
    )
    assert resume(stack, billed.id, stack.admin).status == business_pb2.BUSINESS_STATUS_ACTIVE
    assert undelete(stack, plain.id, owner).status == business_pb2.BUSINESS_STATUS_ACTIVE


def test_undelete_after_the_window_is_refused_with_retention_expired(expired_lifecycle_stack: Stack) -> None:
    """With BUSINESS_RETENTION_DAYS=0 the window has closed as soon as the business is deleted:
    the owner and an admin get FAILED_PRECONDITION / RETENTION_EXPIRED, and it stays deleted."""
    stack = expired_lifecycle_stack
    _, owner = stack.person()
    business = stack.create(owner)
    deleted = delete(stack, business.id, owner)
    assert deleted.purge_time == deleted.delete_time
    expired = (grpc.StatusCode.FAILED_PRECONDITION, "RETENTION_EXPIRED")
    assert answer(lambda: undelete(stack, business.id, owner)) == expired
    assert answer(lambda: undelete(stack, business.id, stack.admin)) == expired
    get = business_pb2.GetBusinessRequest(business_id=business.id)
    assert stack.server.business.GetBusiness(get, metadata=stack.admin, timeout=10).status == (
        business_pb2.BUSINESS_STATUS_DELETED
    )
