"""BusinessOps rules with an in-memory repository: owners, masks, etags, escalation, registration."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from simplu.v1 import business_pb2 as pb

from simplu_grpc.domain.auth.authz import Authorizer
from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.domain.business.cache import BusinessCache
from simplu_grpc.domain.business.commands import BusinessOps
from simplu_grpc.domain.business.model import (
    Business,
    BusinessPage,
    BusinessSettings,
    BusinessType,
    CreateOutcome,
    Location,
    Member,
    Role,
)
from simplu_grpc.domain.checks import Violations
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.errors import (
    Aborted,
    AlreadyExists,
    CitrusUnavailable,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from simplu_grpc.metrics import Metrics
from simplu_grpc.services import business_proto


class MemoryRepository:
    """Just enough of BusinessStore, with the same version semantics."""

    def __init__(self) -> None:
        self.items: dict[str, Business] = {}
        self.requests: dict[str, str] = {}
        self.writes = 0

    def get(self, business_id: str, *, consistent: bool = True) -> Business | None:
        return self.items.get(business_id)

    def create(self, business: Business, *, request_key: str | None = None) -> CreateOutcome:
        if request_key and request_key in self.requests:
            return CreateOutcome(self.items[self.requests[request_key]], replayed=True)
        if business.id in self.items:
            raise AlreadyExists("taken")
        stored = replace(business, version=1)
        self.items[business.id] = stored
        self.writes += 1
        if request_key:
            self.requests[request_key] = business.id
        return CreateOutcome(stored, replayed=False)

    def update(self, business: Business, *, previous: Business) -> Business:
        current = self.items[business.id]
        assert previous.version == business.version
        if current.version != business.version:
            raise Aborted("stale")
        stored = replace(business, version=business.version + 1)
        self.items[business.id] = stored
        self.writes += 1
        return stored

    def list(
        self, *, page_size: int, page_token: str, member: str | None, include_deleted: bool
    ) -> BusinessPage:
        return BusinessPage(list(self.items.values())[:page_size], "")


class FakeCitrus:
    def __init__(self) -> None:
        self.down = False
        self.registered: list[str] = []

    def register(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment:
        if self.down:
            raise CitrusUnavailable("down")
        self.registered.append(f"{business_id}-{location_id}")
        return ShardAssignment(shard_id="shard-01", connection_string="postgresql://x")


def person(sub: str) -> Principal:
    return Principal(subject=sub, username=sub, token_use="access", client_id="app")


@pytest.fixture
def repo() -> MemoryRepository:
    return MemoryRepository()


@pytest.fixture
def citrus() -> FakeCitrus:
    return FakeCitrus()


@pytest.fixture
def ops(repo: MemoryRepository, citrus: FakeCitrus) -> BusinessOps:
    counter = itertools.count(1)
    return BusinessOps(
        store=repo,
        cache=BusinessCache(repo, ttl_seconds=30, metrics=Metrics()),
        authorizer=Authorizer(admin_group="admin"),
        citrus=citrus,
        id_factory=lambda: f"gen{next(counter)}",
    )


def draft(*locations: str) -> Business:
    return Business(
        id="",
        name="Clinic",
        type=BusinessType.DENTAL,
        locations=tuple(Location(id=loc, name=loc) for loc in locations),
    )


def test_creator_becomes_owner_and_locations_register(ops: BusinessOps, citrus: FakeCitrus) -> None:
    """The creator is a member with the "*" owner role; each location is registered once."""
    done = ops.create(person("alice"), draft("L1", "L2"))
    business = done.business
    assert business.id == "gen1"
    assert business.owner == "alice"
    assert business.member("alice") == Member(role="owner")
    assert business.role_permissions("owner") == ("*",)
    assert citrus.registered == ["gen1-L1", "gen1-L2"]
    assert done.unregistered_location_ids == ()
    assert business.unregistered_location_ids == ()


def test_business_id_may_come_in_the_business_message(ops: BusinessOps) -> None:
    """business.id is accepted when business_id is empty, and must match it otherwise."""
    assert ops.create(person("a"), replace(draft(), id="mine")).business.id == "mine"
    with pytest.raises(InvalidArgument):
        ops.create(person("a"), replace(draft(), id="one"), business_id="two")


def test_citrus_down_then_request_retry_registers(
    ops: BusinessOps, citrus: FakeCitrus, repo: MemoryRepository
) -> None:
    """Citrus down: saved with pending ids; the same request_id later registers them and clears the list."""
    citrus.down = True
    first = ops.create(person("a"), draft("L1", "L2"), request_id="r1")
    assert first.unregistered_location_ids == ("L1", "L2")
    assert repo.items[first.business.id].unregistered_location_ids == ("L1", "L2")
    citrus.down = False
    again = ops.create(person("a"), draft("L1", "L2"), request_id="r1")
    assert again.business.id == first.business.id
    assert again.unregistered_location_ids == ()
    assert citrus.registered == [f"{first.business.id}-L1", f"{first.business.id}-L2"]
    assert len(repo.items) == 1


def test_stale_etag_is_aborted_and_changes_nothing(ops: BusinessOps, repo: MemoryRepository) -> None:
    """An etag that is not the current one: ABORTED, no write."""
    business = ops.create(person("a"), draft("L1")).business
    ops.update(
        person("a"),
        business.id,
        etag=business.etag,
        paths=["name"],
        name="New",
        settings=BusinessSettings(),
        roles={},
    )
    writes = repo.writes
    with pytest.raises(Aborted):
        ops.update(
            person("a"),
            business.id,
            etag=business.etag,
            paths=["name"],
            name="Lost",
            settings=BusinessSettings(),
            roles={},
        )
    assert repo.writes == writes
    assert repo.items[business.id].name == "New"


def test_masks_are_checked(ops: BusinessOps) -> None:
    """Unknown and immutable paths are INVALID_ARGUMENT on update_mask.paths[i]."""
    business = ops.create(person("a"), draft()).business
    with pytest.raises(InvalidArgument) as raised:
        ops.update(
            person("a"),
            business.id,
            etag="",
            paths=["type", "nope"],
            name="x",
            settings=BusinessSettings(),
            roles={},
        )
    assert [v.field for v in raised.value.violations] == ["update_mask.paths[0]", "update_mask.paths[1]"]
    settings = ops.update_settings(
        person("a"),
        business.id,
        etag="",
        paths=["currency"],
        settings=BusinessSettings(currency="EUR", language="fr"),
    )
    assert (settings.settings.currency, settings.settings.language) == ("EUR", "")


def test_roles_in_use_and_owner_role_are_protected(ops: BusinessOps) -> None:
    """Dropping a role members hold, or taking "*" from the owner's role, is FAILED_PRECONDITION."""
    business = ops.create(person("a"), draft()).business
    with pytest.raises(FailedPrecondition):
        ops.update(
            person("a"),
            business.id,
            etag="",
            paths=["permissions.roles"],
            name="",
            settings=BusinessSettings(),
            roles={},
        )
    with pytest.raises(FailedPrecondition):
        ops.update(
            person("a"),
            business.id,
            etag="",
            paths=["permissions.roles"],
            name="",
            settings=BusinessSettings(),
            roles={"owner": Role(permissions=("patients:read",))},
        )


def test_members_rules(ops: BusinessOps) -> None:
    """Unknown roles/locations fail; the owner cannot be changed or removed; non-members are NOT_FOUND."""
    business = ops.create(person("a"), draft("L1")).business
    business = ops.update(
        person("a"),
        business.id,
        etag="",
        paths=["permissions.roles"],
        name="",
        settings=BusinessSettings(),
        roles={
            "owner": Role(permissions=("*",)),
            "desk": Role(permissions=("patients:read", "admin.members:update")),
        },
    )
    with pytest.raises(FailedPrecondition):
        ops.set_member(person("a"), business.id, "bob", Member(role="ghost"), etag="")
    with pytest.raises(FailedPrecondition):
        ops.set_member(person("a"), business.id, "bob", Member(role="desk", location_ids=("L9",)), etag="")
    with pytest.raises(FailedPrecondition):
        ops.set_member(person("a"), business.id, "a", Member(role="desk"), etag="")
    with pytest.raises(FailedPrecondition):
        ops.remove_member(person("a"), business.id, "a", etag="")
    with pytest.raises(NotFound):
        ops.remove_member(person("a"), business.id, "nobody", etag="")
    ops.set_member(person("a"), business.id, "bob", Member(role="desk"), etag="")
    with pytest.raises(PermissionDenied):
        ops.set_member(person("bob"), business.id, "carol", Member(role="owner"), etag="")


def test_add_location_duplicate_and_remove_unknown(ops: BusinessOps) -> None:
    """A second location with the same id is ALREADY_EXISTS; removing an unknown one is NOT_FOUND."""
    business = ops.create(person("a"), draft("L1")).business
    with pytest.raises(AlreadyExists):
        ops.add_location(person("a"), business.id, Location(id="L1", name="again"), etag="")
    with pytest.raises(NotFound):
        ops.remove_location(person("a"), business.id, "L9", etag="")
    removed = ops.remove_location(person("a"), business.id, "L1", etag="")
    assert removed.location("L1") == Location(id="L1", name="L1", active=False)


def test_proto_round_trip_keeps_the_business() -> None:
    """business_to_proto then business_from_proto gives back the same draft fields."""
    business = Business(
        id="b1",
        name="Gym",
        type=BusinessType.GYM,
        locations=(Location(id="L1", name="One", timezone="UTC", email="a@b.co"),),
        settings=BusinessSettings(currency="EUR", features={"x": True}, extras={"k": [1.0, "v"]}),
    )
    message = business_proto.business_to_proto(business)
    assert message.type == pb.BUSINESS_TYPE_GYM
    v = Violations()
    back = business_proto.business_from_proto(v, "business", message)
    assert not v
    assert (back.id, back.name, back.type, back.locations, back.settings) == (
        business.id,
        business.name,
        business.type,
        business.locations,
        business.settings,
    )
    unknown = pb.Business(name="x")
    unknown.type = 42
    business_proto.business_from_proto(v, "business", unknown)
    assert [item.field for item in v.items] == ["business.type"]


def test_note_registered_clears_a_pending_location(
    ops: BusinessOps, citrus: FakeCitrus, repo: MemoryRepository
) -> None:
    """A registration done elsewhere (ShardAdmin, lazy first use) is recorded; unknown ids are ignored."""
    citrus.down = True
    business = ops.create(person("a"), draft("L1", "L2")).business
    ops.note_registered(business.id, "L1")
    ops.note_registered(business.id, "L9")
    ops.note_registered("nope", "L1")
    assert repo.items[business.id].unregistered_location_ids == ("L2",)


def test_members_cannot_demote_or_remove_someone_above_them(ops: BusinessOps) -> None:
    """A member with admin.members:update/delete cannot change or remove someone whose role exceeds theirs."""
    business = ops.create(person("a"), draft("L1")).business
    business = ops.update(
        person("a"),
        business.id,
        etag="",
        paths=["permissions.roles"],
        name="",
        settings=BusinessSettings(),
        roles={
            "owner": Role(permissions=("*",)),
            "manager": Role(permissions=("*",)),
            "desk": Role(permissions=("patients:read", "admin.members:update", "admin.members:delete")),
        },
    )
    ops.set_member(person("a"), business.id, "boss", Member(role="manager"), etag="")
    ops.set_member(person("a"), business.id, "desk1", Member(role="desk"), etag="")
    ops.set_member(person("a"), business.id, "desk2", Member(role="desk"), etag="")
    before = ops.get(person("a"), business.id)
    with pytest.raises(PermissionDenied) as demote:
        ops.set_member(person("desk1"), business.id, "boss", Member(role="desk"), etag="")
    assert demote.value.reason == "ESCALATION"
    with pytest.raises(PermissionDenied) as remove:
        ops.remove_member(person("desk1"), business.id, "boss", etag="")
    assert remove.value.reason == "ESCALATION"
    assert ops.get(person("a"), business.id) == before
    # Peers with the same role remain manageable.
    ops.remove_member(person("desk1"), business.id, "desk2", etag="")
    assert ops.get(person("a"), business.id).member("desk2") is None


def test_taken_id_of_another_tenant_is_permission_denied_not_already_exists(
    ops: BusinessOps, repo: MemoryRepository
) -> None:
    """Creating with a client id another tenant holds says PERMISSION_DENIED (no existence probe);
    the owner who retries with the same id is told ALREADY_EXISTS."""
    ops.create(person("a"), draft("L1"), business_id="taken")
    writes = repo.writes
    with pytest.raises(PermissionDenied) as stranger:
        ops.create(person("b"), draft("L1"), business_id="taken")
    assert stranger.value.reason == "NOT_A_MEMBER"
    with pytest.raises(PermissionDenied) as ghost:
        ops.get(person("b"), "nosuchid")
    assert (ghost.value.reason, ghost.value.message.replace("nosuchid", "taken")) == (
        stranger.value.reason,
        stranger.value.message,
    )
    with pytest.raises(AlreadyExists):
        ops.create(person("a"), draft("L1"), business_id="taken")
    assert repo.writes == writes


def test_update_business_cannot_bypass_the_settings_permission(
    ops: BusinessOps, repo: MemoryRepository
) -> None:
    """A role with admin.business:update but not admin.settings:update renames the business, yet cannot change
    settings through UpdateBusiness (which would sidestep UpdateBusinessSettings' rule)."""
    business = ops.create(person("a"), draft("L1")).business
    ops.update(
        person("a"),
        business.id,
        etag="",
        paths=["permissions.roles"],
        name="",
        settings=BusinessSettings(),
        roles={"owner": Role(permissions=("*",)), "editor": Role(permissions=("admin.business:update",))},
    )
    ops.set_member(person("a"), business.id, "ed", Member(role="editor"), etag="")
    renamed = ops.update(
        person("ed"),
        business.id,
        etag="",
        paths=["name"],
        name="Renamed",
        settings=BusinessSettings(),
        roles={},
    )
    assert renamed.name == "Renamed"
    writes = repo.writes
    for paths in (["settings"], []):
        with pytest.raises(PermissionDenied) as raised:
            ops.update(
                person("ed"),
                business.id,
                etag="",
                paths=paths,
                name="Renamed",
                settings=BusinessSettings(currency="USD"),
                roles={},
            )
        assert raised.value.metadata == {"permission": "admin.settings:update"}
    assert repo.writes == writes
