"""InvitationOps and TeamOps rules against in-memory ports: codes, order of checks, expiry, retries."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from simplu_grpc.domain.auth.authz import Authorizer
from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.domain.business.cache import BusinessCache
from simplu_grpc.domain.business.commands import BusinessOps
from simplu_grpc.domain.business.invitation_model import (
    Invitation,
    InvitationPage,
    InvitationState,
    NewCode,
    after_token,
    hash_secret,
    parse_code,
    read_after_token,
)
from simplu_grpc.domain.business.invitations import InvitationOps
from simplu_grpc.domain.business.model import Business, BusinessType, Location, Member, Permissions, Role
from simplu_grpc.domain.business.team import TeamOps
from simplu_grpc.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from simplu_grpc.metrics import Metrics
from tests.unit.test_business_ops import MemoryRepository, person

START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class MemoryInvitations:
    """The InvitationStore port in memory, with the conditional writes' semantics."""

    def __init__(self, repo: MemoryRepository) -> None:
        self.repo = repo
        self.items: dict[str, Invitation] = {}
        self.conflicts = 0  # how many accepts to abort first (a concurrent business write)

    def create(self, invitation: Invitation) -> None:
        self.items[invitation.id] = invitation

    def get(self, invitation_id: str) -> Invitation | None:
        return self.items.get(invitation_id)

    def list(self, business_id: str, *, page_size: int, page_token: str) -> InvitationPage:
        found = sorted((i for i in self.items.values() if i.business_id == business_id), key=lambda i: i.id)
        return InvitationPage(found[:page_size], "")

    def count_recent(self, business_id: str) -> int:
        return sum(i.business_id == business_id for i in self.items.values())

    def accept(self, accepted: Invitation, *, business: Business, previous: Business) -> Business:
        if self.conflicts:
            self.conflicts -= 1
            self.repo.items[business.id] = replace(self.repo.items[business.id], version=business.version + 1)
            raise Aborted("changed meanwhile")
        if self.items[accepted.id].state is not InvitationState.PENDING:
            raise Aborted("invitation changed")
        saved = self.repo.update(business, previous=previous)
        self.items[accepted.id] = accepted
        return saved

    def close(self, closed: Invitation) -> None:
        if self.items[closed.id].state is not InvitationState.PENDING:
            raise Aborted("invitation changed")
        self.items[closed.id] = closed


class FakeUsers:
    def __init__(self) -> None:
        self.by_email: dict[str, str] = {"known@example.com": "known-sub"}
        self.calls: list[str] = []

    def find_or_create(self, email: str) -> tuple[str, bool]:
        self.calls.append(email)
        if email in self.by_email:
            return self.by_email[email], False
        self.by_email[email] = f"sub-of-{email}"
        return self.by_email[email], True


ROLES = {
    "owner": Role(permissions=("*",)),
    "manager": Role(permissions=("admin.members:update", "patients:read")),
    "staff": Role(permissions=("patients:read",)),
    "clinician": Role(permissions=("patients:*",)),
}


class World:
    def __init__(self) -> None:
        self.repo = MemoryRepository()
        self.invitations = MemoryInvitations(self.repo)
        self.users = FakeUsers()
        self.clock = Clock()
        authorizer = Authorizer(admin_group="admin")
        cache = BusinessCache(self.repo, ttl_seconds=30, metrics=Metrics())
        self.business_ops = BusinessOps(store=self.repo, cache=cache, authorizer=authorizer, citrus=None)
        self.ops = InvitationOps(
            businesses=self.business_ops,
            store=self.repo,
            cache=cache,
            invitations=self.invitations,
            users=self.users,
            authorizer=authorizer,
            ttl=timedelta(days=7),
            max_recent=3,
            clock=self.clock,
        )
        self.team = TeamOps(businesses=self.business_ops, invitations=self.ops, authorizer=authorizer)
        self.repo.items["b1"] = Business(
            id="b1",
            name="Clinic",
            type=BusinessType.DENTAL,
            owner="olga",
            version=1,
            locations=(Location(id="L1", name="One"),),
            permissions=Permissions(
                roles=dict(ROLES),
                members={"olga": Member(role="owner"), "mike": Member(role="manager")},
            ),
        )


@pytest.fixture
def world() -> World:
    return World()


def test_a_code_is_an_id_and_a_secret_and_only_the_secrets_hash_is_kept() -> None:
    """parse_code splits a drawn code; the stored hash is the secret's SHA-256, never the code."""
    drawn = NewCode.draw()
    parsed = parse_code(drawn.code)
    assert parsed is not None
    assert parsed[0] == drawn.invitation_id
    assert drawn.code_hash == hash_secret(parsed[1])
    assert parsed[1] not in drawn.code_hash
    assert NewCode.draw().code != drawn.code
    for bad in (
        "",
        "x.y",
        f"{drawn.invitation_id}.",
        f"{drawn.invitation_id}.short",
        "a" * 32 + "." + "!" * 43,
    ):
        assert parse_code(bad) is None


def test_page_tokens_are_bound_to_their_business() -> None:
    """A token resumes after its item for its business only."""
    token = after_token("abc", "b1")
    assert read_after_token(token, "b1") == "abc"
    with pytest.raises(InvalidArgument):
        read_after_token(token, "b2")
    with pytest.raises(InvalidArgument):
        read_after_token("garbage!", "b1")


def test_escalation_is_refused_before_any_user_is_looked_up(world: World) -> None:
    """The manager cannot invite into a role beyond theirs; the user pool is never called."""
    with pytest.raises(PermissionDenied) as raised:
        world.ops.create(person("mike"), "b1", "new@example.com", Member(role="clinician"))
    assert raised.value.reason == "ESCALATION"
    assert world.users.calls == []
    assert world.invitations.items == {}


def test_permission_before_existence_and_before_the_user_pool(world: World) -> None:
    """An outsider: NOT_A_MEMBER for a real and a missing business alike; no lookup."""
    for business_id in ("b1", "missing"):
        with pytest.raises(PermissionDenied) as raised:
            world.ops.create(person("eve"), business_id, "new@example.com", Member(role="staff"))
        assert raised.value.reason == "NOT_A_MEMBER"
    assert world.users.calls == []


def test_the_email_is_normalised_and_checked(world: World) -> None:
    """Addresses are lowercased; a quote (it would break the pool's filter) is refused."""
    invitation, _ = world.ops.create(person("olga"), "b1", " New@Example.COM ", Member(role="staff"))
    assert invitation.email == "new@example.com"
    with pytest.raises(InvalidArgument):
        world.ops.create(person("olga"), "b1", 'a"b@example.com', Member(role="staff"))


def test_expiry_follows_the_clock(world: World) -> None:
    """Acceptable until just before expire_time; from expire_time on, INVITATION_EXPIRED."""
    invitation, code = world.ops.create(person("olga"), "b1", "new@example.com", Member(role="staff"))
    assert invitation.expire_time == START + timedelta(days=7)
    invitee = person(invitation.invitee)
    world.clock.now = invitation.expire_time
    with pytest.raises(FailedPrecondition) as raised:
        world.ops.accept(invitee, code)
    assert raised.value.reason == "INVITATION_EXPIRED"
    assert invitation.state_at(world.clock.now) is InvitationState.EXPIRED
    world.clock.now = invitation.expire_time - timedelta(microseconds=1)
    accepted, business = world.ops.accept(invitee, code)
    assert accepted.state is InvitationState.ACCEPTED
    assert business.member(invitation.invitee) == Member(role="staff")


def test_accept_is_retried_when_the_business_changed_meanwhile(world: World) -> None:
    """A concurrent write to the business aborts the transaction; the accept re-reads and succeeds."""
    invitation, code = world.ops.create(person("olga"), "b1", "new@example.com", Member(role="staff"))
    world.invitations.conflicts = 2
    _, business = world.ops.accept(person(invitation.invitee), code)
    assert business.member(invitation.invitee) == Member(role="staff")
    world.invitations.conflicts = 0
    with pytest.raises(FailedPrecondition) as raised:
        world.ops.accept(person(invitation.invitee), code)
    assert raised.value.reason == "INVITATION_USED"


def test_a_role_removed_since_is_refused_and_the_code_stays_pending(world: World) -> None:
    """The invited role no longer exists: ROLE_NOT_FOUND; nothing is spent."""
    invitation, code = world.ops.create(person("olga"), "b1", "new@example.com", Member(role="staff"))
    business = world.repo.items["b1"]
    roles = {k: v for k, v in business.permissions.roles.items() if k != "staff"}
    world.repo.items["b1"] = replace(business, permissions=replace(business.permissions, roles=roles))
    with pytest.raises(FailedPrecondition) as raised:
        world.ops.accept(person(invitation.invitee), code)
    assert raised.value.reason == "ROLE_NOT_FOUND"
    assert world.invitations.items[invitation.id].state is InvitationState.PENDING


def test_an_admins_invitation_is_not_rechecked_against_membership(world: World) -> None:
    """A platform admin (not a member) invites into the owner role; accepting works."""
    admin = Principal(
        subject="root", username="root", token_use="access", client_id="app", groups=frozenset({"admin"})
    )
    invitation, code = world.ops.create(admin, "b1", "known@example.com", Member(role="owner"))
    assert (invitation.by_platform, invitation.user_created, invitation.invitee) == (True, False, "known-sub")
    _, business = world.ops.accept(person("known-sub"), code)
    assert business.member("known-sub") == Member(role="owner")


def test_already_a_member_keeps_the_code(world: World) -> None:
    """Accepting while already a member is ALREADY_EXISTS and leaves the code pending."""
    world.users.by_email["mike@example.com"] = "mike"
    with pytest.raises(AlreadyExists):
        world.ops.create(person("olga"), "b1", "mike@example.com", Member(role="staff"))
    invitation, code = world.ops.create(person("olga"), "b1", "new@example.com", Member(role="staff"))
    business = world.repo.items["b1"]
    members = {**business.permissions.members, invitation.invitee: Member(role="staff")}
    world.repo.items["b1"] = replace(business, permissions=replace(business.permissions, members=members))
    with pytest.raises(AlreadyExists) as raised:
        world.ops.accept(person(invitation.invitee), code)
    assert raised.value.reason == "ALREADY_A_MEMBER"
    assert world.invitations.items[invitation.id].state is InvitationState.PENDING


def test_the_number_of_recent_invitations_is_bounded(world: World) -> None:
    """Past max_recent, TOO_MANY_INVITATIONS, before the user pool is asked."""
    for n in range(3):
        world.ops.create(person("olga"), "b1", f"p{n}@example.com", Member(role="staff"))
    with pytest.raises(FailedPrecondition) as raised:
        world.ops.create(person("olga"), "b1", "p9@example.com", Member(role="staff"))
    assert raised.value.reason == "TOO_MANY_INVITATIONS"
    assert "p9@example.com" not in world.users.calls


def test_unknown_codes_say_nothing(world: World) -> None:
    """A well-formed code for no invitation and a wrong secret answer the same NOT_FOUND."""
    _, code = world.ops.create(person("olga"), "b1", "new@example.com", Member(role="staff"))
    wrong = code[:-1] + ("A" if code[-1] != "A" else "B")
    answers = set()
    for candidate in (wrong, NewCode.draw().code, "nonsense"):
        with pytest.raises(NotFound) as raised:
            world.ops.accept(person("anyone"), candidate)
        answers.add((raised.value.reason, raised.value.message))
    assert answers == {("INVITATION_NOT_FOUND", "no invitation has this code")}


def test_transfer_from_a_machine_created_business(world: World) -> None:
    """A business whose owner is a machine client (not a member): an admin hands it to a member."""
    world.repo.items["b1"] = replace(world.repo.items["b1"], owner="client-app")
    admin = Principal(
        subject="root", username="root", token_use="access", client_id="app", groups=frozenset({"admin"})
    )
    moved = world.team.transfer_ownership(admin, "b1", "mike", "manager", etag="")
    assert (moved.owner, moved.member("mike"), moved.member("client-app")) == (
        "mike",
        Member(role="owner"),
        None,
    )
