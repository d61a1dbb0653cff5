"""ResourceOps rules against in-memory ports (tests/unit/memory_resources.py): create, get,
update masks and etags, delete, list pages, batch get, request ids, the retry rule, permission
before existence and tenant isolation. The same rules against PostgreSQL and over gRPC are in
tests/integration/test_resource_service.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from simplu_grpc import context
from simplu_grpc.domain.auth.authz import Authorizer
from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.domain.business.model import Business, BusinessType, Location, Member, Permissions, Role
from simplu_grpc.domain.placement.routing import RoutingCache
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.resources.model import OPEN_RANGE, ResourceKey
from simplu_grpc.domain.resources.ops import ResourceOps
from simplu_grpc.domain.resources.validation import UpdateRequest
from simplu_grpc.errors import (
    Aborted,
    CommitOutcomeUnknown,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ShardUnavailable,
)
from simplu_grpc.metrics import Metrics
from tests.unit.memory_resources import MemoryShards, MemoryStore

ADMIN = Principal(
    subject="op", username="op", token_use="access", client_id="app", groups=frozenset({"admin"})
)
FRONT_DESK = Principal(subject="desk", username="desk", token_use="id", client_id="app")
STRANGER = Principal(subject="nobody", username="nobody", token_use="id", client_id="app")

CLINIC = Business(
    id="clinic1",
    name="Clinic",
    type=BusinessType.DENTAL,
    locations=(Location(id="l1", name="Main"), Location(id="l2", name="Annex")),
    permissions=Permissions(
        roles={"desk": Role(permissions=("patients:read", "patients:create", "patients:update"))},
        members={"desk": Member(role="desk", location_ids=("l1",))},
    ),
)
OTHER = Business(
    id="clinic2", name="Other", type=BusinessType.DENTAL, locations=(Location(id="l1", name="l1"),)
)
SHARD_A = ShardAssignment(shard_id="shard-a", connection_string="postgresql://a/x")
SHARD_A_MOVED = ShardAssignment(shard_id="shard-a", connection_string="postgresql://a2/x")
SHARD_B = ShardAssignment(shard_id="shard-b", connection_string="postgresql://b/x")
START = datetime(2026, 3, 1, 9, tzinfo=UTC)


@dataclass
class Directory:
    """Citrus in miniature: each location's assignment (a test changes one to fail it over)."""

    shards: dict[tuple[str, str], ShardAssignment] = field(default_factory=dict)
    asked: list[tuple[str, str]] = field(default_factory=list)

    def get_shard(self, business_id: str, location_id: str) -> ShardAssignment | None:
        self.asked.append((business_id, location_id))
        return self.shards.get((business_id, location_id), SHARD_A)

    def register(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment:
        raise AssertionError("every location of these tests is already placed")


@dataclass
class Parts:
    ops: ResourceOps
    store: MemoryStore
    shards: MemoryShards
    directory: Directory

    def create(self, resource_id: str = "p1", *, who: Principal = ADMIN, **overrides: Any) -> Any:
        request: dict[str, Any] = {
            "business_id": "clinic1",
            "location_id": "l1",
            "resource_type": "patients",
            "resource_id": resource_id,
            "data": {"name": "Ana", "contact": {"phone": "1"}},
            "start_time": START,
            "end_time": None,
            "request_id": "",
        }
        request.update(overrides)
        with context.bind(principal=who):
            return self.ops.create(**request)


@pytest.fixture
def parts() -> Parts:
    store, shards, directory = MemoryStore(), MemoryShards(), Directory()
    ids = iter(f"gen-{n}" for n in range(1, 100))
    ops = ResourceOps(
        businesses={"clinic1": CLINIC, "clinic2": OTHER},  # type: ignore[arg-type]  # .get like the cache
        authorizer=Authorizer(admin_group="admin"),
        routing=RoutingCache(directory, ttl=60, stale_max=60, metrics=Metrics(), min_refresh_interval=0),
        pools=shards,
        store=store,
        new_id=lambda: next(ids),
    )
    return Parts(ops, store, shards, directory)


def key(resource_id: str = "p1", business_id: str = "clinic1", location_id: str = "l1") -> ResourceKey:
    return ResourceKey(business_id, location_id, "patients", resource_id)


def update(etag: str, *, paths: tuple[str, ...], data: dict[str, Any]) -> UpdateRequest:
    return UpdateRequest(paths=paths, data_paths=(), data=data, start_time=None, end_time=None, etag=etag)


# --- create / get -------------------------------------------------------------------------


def test_create_stores_the_document_as_the_callers_and_get_reads_it_back(parts: Parts) -> None:
    stored, created = parts.create()
    assert created is True
    assert (stored.key, stored.etag, stored.data) == (key(), "v1", {"name": "Ana", "contact": {"phone": "1"}})
    assert [c.principal for c in parts.store.changes] == ["op"]
    with context.bind(principal=ADMIN):
        assert parts.ops.get(key()) == stored


def test_an_empty_resource_id_is_generated(parts: Parts) -> None:
    stored, _ = parts.create("")
    assert stored.key.resource_id == "gen-1"


def test_invalid_input_is_rejected_before_the_shard_is_touched(parts: Parts) -> None:
    with pytest.raises(InvalidArgument):
        parts.create("bad id with spaces")
    with pytest.raises(InvalidArgument):
        parts.create("p1", resource_type="rooms")  # a hotel type: not in a dental catalog
    with pytest.raises(InvalidArgument):
        parts.create("p1", start_time=START, end_time=START - timedelta(hours=1))
    assert parts.store.calls == []
    assert parts.shards.connections == []


def test_a_retried_create_returns_the_first_result_only_to_its_own_caller(parts: Parts) -> None:
    """AIP-155: the same request id replays the first create; another caller's same id is new."""
    first, created = parts.create("", request_id="req-1")
    again, replayed_created = parts.create("", request_id="req-1")
    assert (created, replayed_created) == (True, False)
    assert again == first
    assert len(parts.store.rows) == 1
    other, other_created = parts.create("", request_id="req-1", who=FRONT_DESK)
    assert other_created is True
    assert other.key != first.key
    assert len(parts.store.rows) == 2


# --- update / delete ----------------------------------------------------------------------


def test_update_applies_only_the_masked_paths_and_bumps_the_etag(parts: Parts) -> None:
    parts.create()
    with context.bind(principal=ADMIN):
        updated = parts.ops.update(
            key(), update("v1", paths=("data.contact.phone",), data={"contact": {"phone": "2"}, "name": "X"})
        )
        assert updated.data == {"name": "Ana", "contact": {"phone": "2"}}
        assert updated.etag == "v2"
        removed = parts.ops.update(key(), update("", paths=("data.name",), data={}))
    assert removed.data == {"contact": {"phone": "2"}}
    assert removed.etag == "v3"
    assert [c.paths for c in parts.store.changes[1:]] == [("data.contact.phone",), ("data.name",)]


def test_a_stale_etag_aborts_and_changes_nothing(parts: Parts) -> None:
    parts.create()
    with context.bind(principal=ADMIN):
        parts.ops.update(key(), update("v1", paths=("data.name",), data={"name": "B"}))
        with pytest.raises(Aborted) as stale:
            parts.ops.update(key(), update("v1", paths=("data.name",), data={"name": "C"}))
        with pytest.raises(Aborted):
            parts.ops.delete(key(), etag="v1")
        assert parts.ops.get(key()).data["name"] == "B"
    assert stale.value.metadata["current_etag"] == "v2"


def test_a_malformed_mask_is_invalid_before_the_shard(parts: Parts) -> None:
    parts.create()
    calls = len(parts.store.calls)
    with context.bind(principal=ADMIN):
        with pytest.raises(InvalidArgument):
            parts.ops.update(key(), update("v1", paths=("data.a", "data.a.b"), data={"a": {"b": 1}}))
        with pytest.raises(InvalidArgument):
            parts.ops.update(key(), update("v1", paths=("owner",), data={}))
    assert len(parts.store.calls) == calls


def test_an_etag_of_no_version_never_matches(parts: Parts) -> None:
    """A malformed etag names no version: the write is ABORTED and changes nothing."""
    parts.create()
    with context.bind(principal=ADMIN):
        with pytest.raises(Aborted):
            parts.ops.delete(key(), etag="not-an-etag")
        assert parts.ops.get(key()).etag == "v1"


def test_delete_with_the_current_etag_removes_the_resource(parts: Parts) -> None:
    parts.create()
    with context.bind(principal=ADMIN):
        parts.ops.delete(key(), etag="v1")
        with pytest.raises(NotFound):
            parts.ops.get(key())
        with pytest.raises(NotFound):
            parts.ops.delete(key(), etag="")


# --- list / batch get ---------------------------------------------------------------------


def list_page(parts: Parts, token: str = "", *, size: int = 2, resource_type: str = "patients") -> Any:
    with context.bind(principal=ADMIN):
        return parts.ops.list(
            business_id="clinic1",
            location_id="l1",
            resource_type=resource_type,
            start_range=OPEN_RANGE,
            overlaps=OPEN_RANGE,
            data_contains=None,
            order_by="",
            page_size=size,
            page_token=token,
        )


def test_list_pages_through_every_resource_once_in_order(parts: Parts) -> None:
    for n in (3, 1, 5, 2, 4):
        parts.create(f"p{n}", start_time=START + timedelta(hours=n))
    parts.create("elsewhere", location_id="l2")
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = list_page(parts, token)
        pages += 1
        seen += [r.key.resource_id for r in page.resources]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["p1", "p2", "p3", "p4", "p5"]
    assert pages == 3


def test_a_page_token_works_only_for_its_own_query(parts: Parts) -> None:
    for n in range(3):
        parts.create(f"p{n}")
    token = list_page(parts).next_page_token
    assert token
    with pytest.raises(InvalidArgument):
        list_page(parts, token, resource_type="invoices")
    with pytest.raises(InvalidArgument):
        list_page(parts, size=-1)


def test_batch_get_answers_in_request_order_with_one_call_per_shard(parts: Parts) -> None:
    parts.directory.shards[("clinic1", "l2")] = SHARD_B
    parts.create("p1")
    parts.create("p2", location_id="l2")
    parts.store.calls.clear()
    wanted = [key("p2", location_id="l2"), key("nope"), key("p1")]
    with context.bind(principal=ADMIN):
        result = parts.ops.batch_get("clinic1", wanted)
    assert [r.key for r in result.found] == [wanted[0], wanted[2]]
    assert result.missing == [wanted[1]]
    assert result.next_page_token == ""
    assert sorted(parts.store.calls) == [("batch_get", "shard-a"), ("batch_get", "shard-b")]


# --- the retry rule -----------------------------------------------------------------------


def test_a_write_is_retried_on_a_fresh_route_when_the_shard_was_never_reached(parts: Parts) -> None:
    parts.create("p0")  # routes clinic1/l1 to shard-a's first connection string
    parts.shards.unreachable.add("shard-a")
    parts.directory.shards[("clinic1", "l1")] = SHARD_B  # Citrus failed it over
    stored, created = parts.create("p1")
    assert created
    assert stored.key == key("p1")
    assert parts.store.calls[-1] == ("create", "shard-b")
    assert [c.key.resource_id for c in parts.store.changes] == ["p0", "p1"]  # applied once


@pytest.mark.parametrize(
    "failure",
    [CommitOutcomeUnknown("lost after the write was sent"), ShardUnavailable("lost the connection")],
)
def test_a_write_that_reached_the_shard_is_never_retried(parts: Parts, failure: ShardUnavailable) -> None:
    parts.create("p0")
    parts.directory.shards[("clinic1", "l1")] = SHARD_B
    parts.store.fail_next = failure
    with pytest.raises(type(failure)):
        parts.create("p1")
    assert parts.store.calls[-1] == ("create", "shard-a")
    assert ("create", "shard-b") not in parts.store.calls


def test_a_read_is_retried_on_a_fresh_route_whatever_the_shard_failure(parts: Parts) -> None:
    parts.create()
    parts.directory.shards[("clinic1", "l1")] = SHARD_B
    parts.store.fail_next = ShardUnavailable("lost the connection")
    with context.bind(principal=ADMIN):
        assert parts.ops.get(key()).key == key()
    assert parts.store.calls[-2:] == [("get", "shard-a"), ("get", "shard-b")]


def test_no_retry_when_citrus_still_names_the_same_connection_string(parts: Parts) -> None:
    parts.create("p0")
    parts.shards.unreachable.add("shard-a")
    connections = len(parts.shards.connections)
    with pytest.raises(ShardUnavailable):
        parts.create("p1")
    assert len(parts.shards.connections) == connections + 1  # asked Citrus again, tried once
    parts.directory.shards[("clinic1", "l1")] = SHARD_A_MOVED
    parts.shards.unreachable.clear()
    assert parts.create("p1")[1] is True


# --- permission before existence, tenant isolation ----------------------------------------


def test_a_stranger_is_denied_alike_whether_or_not_the_business_exists(parts: Parts) -> None:
    errors = []
    for business_id in ("clinic1", "ghost"):
        with context.bind(principal=STRANGER), pytest.raises(PermissionDenied) as denied:
            parts.ops.get(key(business_id=business_id))
        errors.append((denied.value.code, denied.value.reason, str(denied.value).replace(business_id, "?")))
    assert errors[0] == errors[1]
    assert parts.store.calls == []
    assert parts.directory.asked == []


def test_existence_is_told_only_to_the_allowed(parts: Parts) -> None:
    with context.bind(principal=ADMIN):
        with pytest.raises(NotFound):
            parts.ops.get(key(business_id="ghost"))
        with pytest.raises(NotFound):
            parts.ops.get(key(location_id="l9"))
    assert parts.store.calls == []


def test_a_member_acts_only_where_and_how_their_role_allows(parts: Parts) -> None:
    stored, _ = parts.create("p1", who=FRONT_DESK)
    with context.bind(principal=FRONT_DESK):
        assert parts.ops.get(key()) == stored
        for denied_call in (
            lambda: parts.ops.get(key(location_id="l2")),  # not their location
            lambda: parts.ops.delete(key(), etag=""),  # not their action
            lambda: parts.ops.get(ResourceKey("clinic1", "l1", "invoices", "i1")),  # not their type
            lambda: parts.ops.get(key(business_id="clinic2")),  # not their business
        ):
            calls = len(parts.store.calls)
            with pytest.raises(PermissionDenied):
                denied_call()
            assert len(parts.store.calls) == calls


def test_a_batch_is_denied_whole_when_one_key_is_not_allowed(parts: Parts) -> None:
    parts.create("p1")
    with context.bind(principal=FRONT_DESK), pytest.raises(PermissionDenied):
        parts.ops.batch_get("clinic1", [key("p1"), key("p1", location_id="l2")])
    assert ("batch_get", "shard-a") not in parts.store.calls


def test_one_business_never_sees_anothers_resources(parts: Parts) -> None:
    """The same location id, type and resource id in two businesses are two resources."""
    parts.create("p1", data={"who": "clinic1"})
    parts.create("p1", business_id="clinic2", data={"who": "clinic2"})
    with context.bind(principal=ADMIN):
        assert parts.ops.get(key()).data == {"who": "clinic1"}
        assert parts.ops.get(key(business_id="clinic2")).data == {"who": "clinic2"}
        result = parts.ops.batch_get("clinic1", [key("p1")])
    assert [r.data for r in list_page(parts, size=10).resources] == [{"who": "clinic1"}]
    assert [r.data for r in result.found] == [{"who": "clinic1"}]
