"""The change log over a real channel: every write is recorded, ListResourceChanges reads it back."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from simplu.v1 import resource_pb2

from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer
from simplu_grpc.domain.business.model import Business, Member, Role
from tests.fixtures.server import MakeServer
from tests.integration.resource_stack import ResourceStack, build_stack, interval

pytestmark = pytest.mark.integration

CREATED = resource_pb2.CHANGE_KIND_CREATED
UPDATED = resource_pb2.CHANGE_KIND_UPDATED
DELETED = resource_pb2.CHANGE_KIND_DELETED


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


def _subject(token: str) -> str:
    """The ``sub`` claim of a token (read, not verified: the server verified it)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sub"])


def _code(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def _changes(
    stack: ResourceStack, business: Business, *, token: str | None = None, **fields: Any
) -> resource_pb2.ListResourceChangesResponse:
    fields.setdefault("location_id", "main")
    return stack.stub.ListResourceChanges(
        resource_pb2.ListResourceChangesRequest(business_id=business.id, **fields),
        metadata=stack.md(token),
        timeout=10,
    )


def _update(
    stack: ResourceStack,
    business: Business,
    resource_id: str,
    *,
    data: dict[str, Any],
    paths: list[str] | None = None,
    data_paths: list[str] | None = None,
    etag: str = "",
    token: str | None = None,
) -> resource_pb2.Resource:
    resource = resource_pb2.Resource(
        business_id=business.id,
        location_id="main",
        resource_type="patients",
        resource_id=resource_id,
        etag=etag,
    )
    resource.data.update(data)
    return stack.stub.UpdateResource(
        resource_pb2.UpdateResourceRequest(
            resource=resource,
            update_mask=field_mask_pb2.FieldMask(paths=paths or []),
            data_paths=data_paths or [],
        ),
        metadata=stack.md(token),
        timeout=10,
    )


def _delete(stack: ResourceStack, business: Business, resource_id: str, *, token: str | None = None) -> None:
    stack.stub.DeleteResource(
        resource_pb2.DeleteResourceRequest(
            business_id=business.id, location_id="main", resource_type="patients", resource_id=resource_id
        ),
        metadata=stack.md(token),
        timeout=10,
    )


def test_create_update_delete_are_recorded_with_kind_paths_principal_in_sequence_order(
    stack: ResourceStack, make_user_token: Callable[..., tuple[str, str]]
) -> None:
    """Each write of a resource adds one change: its kind, the etag it left, the update's paths,
    the caller's subject, increasing sequences; "sequence desc" lists the same newest first."""
    member_sub, member_token = make_user_token("change-editor")
    business = stack.add_business(members={member_sub: Member(role="owner")})
    created = stack.create(business, resource_id="p1", data={"status": "new"})
    updated = _update(
        stack,
        business,
        "p1",
        data={"status": "seen", "firstName": "Ana"},
        paths=["data.status"],
        data_paths=["/firstName"],
        token=member_token,
    )
    _delete(stack, business, "p1")

    history = _changes(stack, business, resource_types=["patients"], resource_id="p1").changes
    assert [c.kind for c in history] == [CREATED, UPDATED, DELETED]
    assert [c.etag for c in history] == [created.etag, updated.etag, updated.etag]
    assert [list(c.changed_paths) for c in history] == [[], ["data.status", "/firstName"], []]
    admin = _subject(stack.token)
    assert [c.principal for c in history] == [admin, member_sub, admin]
    assert [c.sequence for c in history] == sorted({c.sequence for c in history})
    assert {(c.business_id, c.location_id, c.resource_type, c.resource_id) for c in history} == {
        (business.id, "main", "patients", "p1")
    }
    times = [c.change_time.ToDatetime() for c in history]
    assert times == sorted(times)
    assert created.create_time.ToDatetime() <= times[0]

    newest_first = _changes(
        stack, business, resource_types=["patients"], resource_id="p1", order_by="sequence desc"
    ).changes
    assert list(newest_first) == list(reversed(history))


def test_writes_that_change_nothing_record_nothing(stack: ResourceStack) -> None:
    """A stale-etag update (ABORTED), a taken id (ALREADY_EXISTS), an update of a missing resource
    (NOT_FOUND) and a create replayed by its request id leave the history as it was."""
    business = stack.add_business()
    first = stack.create(business, resource_id="p1", request_id="rq-1")
    replay = stack.create(business, resource_id="p1", request_id="rq-1")
    assert replay.etag == first.etag
    stale = _code(lambda: _update(stack, business, "p1", data={"x": 1}, etag="v9"))
    assert stale.code() == grpc.StatusCode.ABORTED
    taken = _code(lambda: stack.create(business, resource_id="p1"))
    assert taken.code() == grpc.StatusCode.ALREADY_EXISTS
    missing = _code(lambda: _update(stack, business, "nobody", data={"x": 1}))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    missing = _code(lambda: _delete(stack, business, "nobody"))
    assert missing.code() == grpc.StatusCode.NOT_FOUND

    history = _changes(stack, business).changes
    assert [(c.kind, c.resource_id, c.etag) for c in history] == [(CREATED, "p1", first.etag)]


def test_location_history_filters_by_type_principal_and_time_and_never_shows_another_location(
    stack: ResourceStack, make_user_token: Callable[..., tuple[str, str]]
) -> None:
    """A location's history holds only that location's changes; resource_types, principal and
    change_time_range narrow it."""
    member_sub, member_token = make_user_token("change-writer")
    business = stack.add_business(locations=("main", "annex"), members={member_sub: Member(role="owner")})
    other = stack.add_business()
    stack.create(business, "patients", resource_id="p1")
    stack.create(business, "appointments", resource_id="a1", token=member_token)
    stack.create(business, "patients", resource_id="p2", token=member_token)
    stack.create(business, "patients", resource_id="annex-only", location_id="annex")
    stack.create(other, "patients", resource_id="other-tenant")

    main = _changes(stack, business).changes
    assert [c.resource_id for c in main] == ["p1", "a1", "p2"]
    annex = _changes(stack, business, location_id="annex").changes
    assert [c.resource_id for c in annex] == ["annex-only"]

    patients = _changes(stack, business, resource_types=["patients"]).changes
    assert [c.resource_id for c in patients] == ["p1", "p2"]
    by_member = _changes(stack, business, principal=member_sub).changes
    assert [c.resource_id for c in by_member] == ["a1", "p2"]
    nobody = _changes(stack, business, principal="someone-else").changes
    assert list(nobody) == []

    second = main[1].change_time.ToJsonString()
    since_second = _changes(stack, business, change_time_range=interval(start=second)).changes
    assert [c.resource_id for c in since_second] == ["a1", "p2"]
    before_second = _changes(stack, business, change_time_range=interval(end=second)).changes
    assert [c.resource_id for c in before_second] == ["p1"]


def test_pages_walk_the_history_once_in_order_with_tokens_bound_to_the_query(stack: ResourceStack) -> None:
    """page_size 2 over 5 changes: three pages, every change once, in sequence order; a token
    used with another filter is INVALID_ARGUMENT; a bad order_by too."""
    business = stack.add_business()
    for index in range(5):
        stack.create(business, resource_id=f"p{index}")
    seen: list[resource_pb2.ResourceChange] = []
    tokens: list[str] = []
    page = _changes(stack, business, page_size=2)
    seen.extend(page.changes)
    while page.next_page_token:
        tokens.append(page.next_page_token)
        page = _changes(stack, business, page_size=2, page_token=page.next_page_token)
        seen.extend(page.changes)
    assert len(tokens) == 2
    assert [c.resource_id for c in seen] == [f"p{i}" for i in range(5)]
    assert [c.sequence for c in seen] == sorted({c.sequence for c in seen})

    other_query = _code(
        lambda: _changes(stack, business, resource_types=["patients"], page_size=2, page_token=tokens[0])
    )
    assert other_query.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_order = _code(lambda: _changes(stack, business, order_by="change_time"))
    assert bad_order.code() == grpc.StatusCode.INVALID_ARGUMENT
    one_resource_two_types = _code(
        lambda: _changes(stack, business, resource_types=["patients", "appointments"], resource_id="p1")
    )
    assert one_resource_two_types.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_reading_the_history_needs_read_permission_before_anything_is_read(
    stack: ResourceStack, make_user_token: Callable[..., tuple[str, str]]
) -> None:
    """An outsider is PERMISSION_DENIED (also for a business that does not exist); a member sees
    only the types their role may read, is denied a type it may not, and a location outside
    their membership."""
    _, outsider_token = make_user_token("change-outsider")
    reader_sub, reader_token = make_user_token("appointments-reader")
    business = stack.add_business(
        locations=("main", "annex"),
        roles={"owner": Role(permissions=("*",)), "scheduler": Role(permissions=("appointments:read",))},
        members={reader_sub: Member(role="scheduler", location_ids=("main",))},
    )
    stack.create(business, "patients", resource_id="p1")
    stack.create(business, "appointments", resource_id="a1")

    for call in (
        lambda: _changes(stack, business, token=outsider_token),
        lambda: _changes(
            stack, business, token=outsider_token, resource_types=["patients"], resource_id="p1"
        ),
        lambda: stack.stub.ListResourceChanges(
            resource_pb2.ListResourceChangesRequest(business_id="nosuchbusiness", location_id="main"),
            metadata=stack.md(outsider_token),
            timeout=10,
        ),
        lambda: _changes(stack, business, token=reader_token, resource_types=["patients"]),
        lambda: _changes(stack, business, token=reader_token, resource_types=["appointments", "patients"]),
        lambda: _changes(stack, business, token=reader_token, location_id="annex"),
    ):
        assert _code(call).code() == grpc.StatusCode.PERMISSION_DENIED

    visible = _changes(stack, business, token=reader_token).changes
    assert [(c.resource_type, c.resource_id) for c in visible] == [("appointments", "a1")]
    named = _changes(stack, business, token=reader_token, resource_types=["appointments"]).changes
    assert list(named) == list(visible)
