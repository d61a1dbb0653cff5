"""WatchResources over real channels: the shard's change log, LISTEN/NOTIFY, the fan-out."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest
from simplu.v1 import resource_pb2, resource_pb2_grpc

from simplu_grpc.adapters.change_listener import ChangeListeners
from simplu_grpc.adapters.change_notifier import LISTENER_APPLICATION
from simplu_grpc.domain.business.model import Business, Member, Role
from simplu_grpc.domain.watch import decode_token
from tests.integration.resource_stack import ResourceStack, build_stack, struct
from tests.integration.watch_client import WAIT_SECONDS, Watcher

pytestmark = pytest.mark.integration

CREATED = resource_pb2.CHANGE_KIND_CREATED
UPDATED = resource_pb2.CHANGE_KIND_UPDATED
DELETED = resource_pb2.CHANGE_KIND_DELETED


def _build(request: pytest.FixtureRequest, **knobs: Any) -> ResourceStack:
    return build_stack(
        make_server=request.getfixturevalue("make_server"),
        citrus=request.getfixturevalue("citrus"),
        moto_server=request.getfixturevalue("moto_server"),
        auth_settings=request.getfixturevalue("auth_settings"),
        admin_token=request.getfixturevalue("admin_token"),
        **knobs,
    )


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Iterator[ResourceStack]:
    built = _build(request)
    yield built
    built.server.stop(0)
    built.server.deps.close()


def watch(stack: ResourceStack, business: Business, **kwargs: Any) -> Watcher:
    token = kwargs.pop("token", None)
    watcher = Watcher(stack.stub, stack.md(token), business_id=business.id, **kwargs)
    return watcher


def started(watcher: Watcher) -> Watcher:
    """The first message says the watch is established: it has a token and no change."""
    first = watcher.next()
    assert not first.HasField("change")
    assert first.resume_token
    return watcher


def update(
    stack: ResourceStack, business: Business, resource_id: str, data: dict[str, Any], **kw: Any
) -> Any:
    return stack.stub.UpdateResource(
        resource_pb2.UpdateResourceRequest(
            resource=resource_pb2.Resource(
                business_id=business.id,
                location_id=kw.get("location_id", "main"),
                resource_type="patients",
                resource_id=resource_id,
                data=struct(data),
            ),
        ),
        metadata=stack.md(kw.get("token")),
        timeout=10,
    )


def delete(stack: ResourceStack, business: Business, resource_id: str) -> None:
    stack.stub.DeleteResource(
        resource_pb2.DeleteResourceRequest(
            business_id=business.id, location_id="main", resource_type="patients", resource_id=resource_id
        ),
        metadata=stack.md(),
        timeout=10,
    )


def test_creates_updates_and_deletes_reach_a_watcher_in_sequence_order(stack: ResourceStack) -> None:
    business = stack.add_business()
    watcher = started(watch(stack, business))
    stack.create(business, resource_id="p1", data={"name": "Ana"})
    update(stack, business, "p1", {"name": "Ana Maria"})
    delete(stack, business, "p1")

    created, updated, deleted = watcher.changes(3)
    assert [created.kind, updated.kind, deleted.kind] == [CREATED, UPDATED, DELETED]
    assert created.sequence < updated.sequence < deleted.sequence
    assert {c.resource_id for c in (created, updated, deleted)} == {"p1"}
    # The resource as each change left it (the update replaced it before the create's was read,
    # or not: either the create's own version or nothing, never a later version).
    if created.HasField("resource"):
        assert created.resource.etag == created.etag
        assert created.resource.data["name"] == "Ana"
    # A delete carries the key, never a resource.
    assert not deleted.HasField("resource")
    assert (deleted.business_id, deleted.location_id, deleted.resource_type) == (
        business.id,
        "main",
        "patients",
    )
    assert created.principal
    assert created.HasField("change_time")
    watcher.cancel()


def test_every_write_notifies_the_shards_listeners_with_its_location(stack: ResourceStack) -> None:
    business = stack.add_business()
    dsn = stack.citrus.pg.dsn(stack.citrus.shard(stack.register(business)).database)
    # Named as the service's listeners are: writes are notified only where one listens.
    with psycopg.connect(dsn, autocommit=True, application_name=LISTENER_APPLICATION) as listener:
        listener.execute("LISTEN simplu_resource_changes")
        stack.create(business, resource_id="p1")
        update(stack, business, "p1", {"name": "x"})
        delete(stack, business, "p1")
        payloads = [n.payload for n in listener.notifies(timeout=WAIT_SECONDS, stop_after=3)]
    assert payloads == [f"{business.id}/main"] * 3


def test_a_watcher_gets_the_resource_as_the_change_left_it(stack: ResourceStack) -> None:
    business = stack.add_business()
    watcher = started(watch(stack, business))
    stack.create(business, resource_id="p1", data={"name": "Ana"})
    (created,) = watcher.changes(1)
    assert created.resource.resource_id == "p1"
    assert created.resource.data["name"] == "Ana"
    assert created.resource.etag == created.etag
    watcher.cancel()


def test_outsiders_and_members_without_read_permission_cannot_watch(
    stack: ResourceStack, make_user_token: Any
) -> None:
    _, outsider_token = make_user_token("watch-outsider")
    reader_sub, reader_token = make_user_token("watch-appointments-reader")
    business = stack.add_business(
        locations=("main", "annex"),
        roles={"owner": Role(permissions=("*",)), "scheduler": Role(permissions=("appointments:read",))},
        members={reader_sub: Member(role="scheduler", location_ids=("main",))},
    )
    refused = [
        watch(stack, business, token=outsider_token),
        Watcher(stack.stub, stack.md(outsider_token), business_id="nosuchbusiness"),
        watch(stack, business, token=reader_token, resource_types=["patients"]),
        watch(stack, business, token=reader_token, location_id="annex"),
    ]
    stack.create(business, "patients", resource_id="p1")
    for watcher in refused:
        end = watcher.ended()
        assert end.code == grpc.StatusCode.PERMISSION_DENIED
        assert watcher.drained == []  # not a single message before the refusal

    # The member watches what its role reads: appointments, not patients.
    allowed = started(watch(stack, business, token=reader_token))
    stack.create(business, "patients", resource_id="p2")
    stack.create(business, "appointments", resource_id="a1")
    (change,) = allowed.changes(1)
    assert (change.resource_type, change.resource_id) == ("appointments", "a1")
    allowed.cancel()


def test_a_watcher_of_one_location_never_receives_another_locations_changes(stack: ResourceStack) -> None:
    business = stack.add_business(locations=("main", "annex"))
    other = stack.add_business()
    annex = started(watch(stack, business, location_id="annex"))
    main = started(watch(stack, business))
    stack.create(business, resource_id="m1")
    stack.create(other, resource_id="o1")
    stack.create(business, resource_id="x1", location_id="annex")
    stack.create(business, resource_id="m2")
    assert [c.resource_id for c in main.changes(2)] == ["m1", "m2"]
    (only,) = annex.changes(1)
    assert (only.location_id, only.resource_id) == ("annex", "x1")
    main.cancel()
    annex.cancel()


def test_a_resumed_watch_continues_after_its_token_exactly_once(stack: ResourceStack) -> None:
    business = stack.add_business()
    first = started(watch(stack, business))
    for index in range(3):
        stack.create(business, resource_id=f"p{index}")
    seen = first.changes(2)
    token = first.token
    first.cancel()
    for index in range(3, 6):
        stack.create(business, resource_id=f"p{index}")

    resumed = started(watch(stack, business, resume_token=token))
    rest = resumed.changes(4)
    ids = [c.resource_id for c in seen + rest]
    assert ids == [f"p{index}" for index in range(6)]
    sequences = [c.sequence for c in seen + rest]
    assert sequences == sorted(set(sequences))
    resumed.cancel()


def test_a_resume_token_past_retention_says_to_list_again(stack: ResourceStack) -> None:
    business = stack.add_business()
    watcher = started(watch(stack, business))
    body = json.loads(base64.urlsafe_b64decode(watcher.token + "=" * (-len(watcher.token) % 4)))
    watcher.cancel()
    body["t"] = "2020-01-01T00:00:00+00:00"
    old = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    end = watch(stack, business, resume_token=old).ended()
    assert (end.code, end.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RESUME_TOKEN_EXPIRED")
    assert "ListResources" in str(end)

    other = stack.add_business()
    end = watch(stack, other, resume_token=watcher.token).ended()
    assert end.code == grpc.StatusCode.INVALID_ARGUMENT
    end = watch(stack, business, resume_token="not-a-token").ended()
    assert end.code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_change_committed_late_is_delivered_in_its_place(stack: ResourceStack) -> None:
    """The identity is drawn at insert, not commit: a write holding sequence N that commits after
    the write holding N+1 must still reach the watcher, and before N+1."""
    business = stack.add_business()
    watcher = started(watch(stack, business))
    stack.create(business, resource_id="before")
    (before,) = watcher.changes(1)
    dsn = stack.citrus.pg.dsn(stack.citrus.shard(stack.shard_of(business)).database)
    listeners = stack.server.deps.watch_ops.feeds
    assert isinstance(listeners, ChangeListeners)
    (listener,) = [item for item in listeners.listeners() if item.fanout.watched]

    with psycopg.connect(dsn) as slow:
        # A write as the service makes it (resources first, then its change row), left uncommitted.
        slow.execute(
            "WITH made AS (INSERT INTO resources (business_id, location_id, resource_type, resource_id,"
            " business_type, data) VALUES (%s, 'main', 'patients', 'late', 'dental', '{}')"
            " RETURNING business_id, location_id, resource_type, resource_id, version)"
            " INSERT INTO resource_changes (business_id, location_id, resource_type, resource_id, kind,"
            " version, principal) SELECT business_id, location_id, resource_type, resource_id, 'created',"
            " version, 'slow-writer' FROM made",
            [business.id],
        )
        stack.create(business, resource_id="early")
        # The listener has polled (woken by "early"'s notification) more than once since "early"
        # committed, while "late" still holds the lower sequence.
        polls = listener.polls
        deadline = time.monotonic() + WAIT_SECONDS
        while listener.polls < polls + 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert listener.polls >= polls + 3
        slow.commit()

    late, early = watcher.changes(2)
    assert [late.resource_id, early.resource_id] == ["late", "early"]
    assert before.sequence < late.sequence < early.sequence
    watcher.cancel()


def test_a_slow_reader_is_ended_with_a_resume_token_that_loses_nothing(
    request: pytest.FixtureRequest,
) -> None:
    stack = _build(request, watch_buffer_size=2)
    business = stack.add_business()
    # A reader that does not read: big documents fill the connection's flow-control window
    # (kept at its initial size: no BDP probing), so the stream's own buffer fills behind it.
    channel = grpc.insecure_channel(stack.server.address, options=[("grpc.http2.bdp_probe", 0)])
    slow = Watcher(
        resource_pb2_grpc.ResourceServiceStub(channel), stack.md(), business_id=business.id, read=False
    )
    blob = "x" * 200_000
    ops = stack.server.deps.watch_ops
    assert ops is not None
    # Live (fed by the fan-out) before the writes: a watcher still reading the log reads at its
    # reader's pace and needs no buffer.
    deadline = time.monotonic() + WAIT_SECONDS
    while not any(w.live for w in ops.watches()) and time.monotonic() < deadline:
        time.sleep(0.01)
    written = []
    for index in range(100):
        written.append(stack.create(business, resource_id=f"p{index:02d}", data={"blob": blob}).resource_id)
        if any(w.overflowed for w in ops.watches()):
            break
    slow.start_reading()
    end = slow.ended()
    assert (end.code, end.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "WATCH_TOO_SLOW")
    got = [c.resource_id for c in slow.drained]
    assert len(got) < len(written)
    resumed = started(watch(stack, business, resume_token=end.metadata["resume_token"]))
    rest = [c.resource_id for c in resumed.changes(len(written) - len(got))]
    assert got + rest == written
    resumed.cancel()
    channel.close()
    stack.server.stop(0)
    stack.server.deps.close()


def test_shutdown_ends_streams_with_a_resume_token_and_one_access_line(
    stack: ResourceStack, caplog: pytest.LogCaptureFixture
) -> None:
    business = stack.add_business()
    watcher = started(watch(stack, business))
    stack.create(business, resource_id="p1")
    (change,) = watcher.changes(1)
    with caplog.at_level(logging.INFO, logger="simplu_grpc.access"):
        stack.server.service.shutdown(grace=5)
        end = watcher.ended()
    assert (end.code, end.reason) == (grpc.StatusCode.UNAVAILABLE, "WATCH_INTERRUPTED")
    # The token to resume with: at least as far as the last change the watcher received.
    _, position = decode_token(end.metadata["resume_token"], business.id, "main")
    assert position.sequence >= change.sequence
    # The access line is written when the stream ends, with its final code.
    lines = [r.getMessage() for r in caplog.records if "WatchResources" in r.getMessage()]
    assert len(lines) == 1
    assert " UNAVAILABLE " in lines[0]


def test_a_removed_member_is_ended_with_permission_denied(
    request: pytest.FixtureRequest, make_user_token: Any
) -> None:
    stack = _build(request, business_cache_ttl=0.5)
    member_sub, member_token = make_user_token("watch-removed")
    business = stack.add_business(members={member_sub: Member(role="owner")})
    watcher = started(watch(stack, business, token=member_token))
    stack.create(business, resource_id="p1")
    watcher.changes(1)
    _remove_member(stack, business, member_sub)
    end = watcher.ended()
    assert end.code == grpc.StatusCode.PERMISSION_DENIED
    stack.server.stop(0)
    stack.server.deps.close()


def _remove_member(stack: ResourceStack, business: Business, sub: str) -> None:
    from dataclasses import replace

    from simplu_grpc.domain.business.model import Permissions

    current = stack.store.get(business.id, consistent=True)
    assert current is not None
    members = {k: v for k, v in current.permissions.members.items() if k != sub}
    changed = replace(current, permissions=Permissions(roles=current.permissions.roles, members=members))
    stack.store.update(changed, previous=current)


def test_two_servers_deliver_every_change_to_every_watcher_exactly_once(
    request: pytest.FixtureRequest,
) -> None:
    """Two replicas (each its own listener), watchers on both, writes through both, and a forced
    disconnect and resume on the other replica halfway."""
    one = _build(request)
    two = _build(request, table=one.table)
    business = one.add_business()
    watchers = {
        "one-a": started(watch(one, business)),
        "two-a": started(watch(two, business)),
        "two-b": started(watch(two, business)),
    }
    writes = []
    # Changes a watcher received before it was cut off and resumed under the same name.
    earlier: dict[str, list[Any]] = {}
    for index in range(20):
        target = one if index % 2 == 0 else two
        writes.append(target.create(business, resource_id=f"p{index:02d}").resource_id)
        if index == 9:
            # one-a is cut off mid-stream and resumes on the other replica with its last token.
            moving = watchers["one-a"]
            kept = moving.changes(5)
            moving.cancel()
            watchers["one-a"] = started(watch(two, business, resume_token=moving.token))
            earlier["one-a"] = kept
    for name, watcher in watchers.items():
        got = list(earlier.get(name, []))
        while len(got) < 20:
            try:
                got += watcher.changes(1)
            except AssertionError:
                raise AssertionError(f"{name} got {[c.resource_id for c in got]} of {writes}") from None
        assert [c.resource_id for c in got] == writes, name
        sequences = [c.sequence for c in got]
        assert sequences == sorted(set(sequences)), name
        watcher.cancel()
    for built in (one, two):
        built.server.stop(0)
        built.server.deps.close()
