"""Invitations, members and ownership end to end: real moto (DynamoDB + Cognito), channel and tokens.

Issue 14's acceptance for people management: the invitation flow with two users of a real
(moto) user pool, expired / reused / revoked / someone else's codes refused with their own
reasons, no escalation through invitations, and each RPC's permission rules (outsider, member
without the members permission, platform admin), permission before existence.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from simplu.v1 import business_pb2 as pb

from simplu_grpc.devstack.moto_server import CognitoSetup, MotoServer, client, issue_tokens
from tests.fixtures.server import MakeServer, RunningServer
from tests.integration.test_business_service import (
    Bearer,
    bearer,
    new_business,
    new_table,
    reason_of,
    rpc_error,
    scan_table,
    server_env,
    unique_id,
)

pytestmark = pytest.mark.integration

MakeUser = Callable[..., tuple[str, str]]


@pytest.fixture(scope="module")
def table(moto_server: MotoServer) -> str:
    return new_table(moto_server.url)


@pytest.fixture
def server(make_server: MakeServer, moto_server: MotoServer, table: str) -> RunningServer:
    env = {**server_env(moto_server.url, table, None), "COGNITO_ENDPOINT": moto_server.url}
    return make_server(env=env)


def person(make_user_token: MakeUser, prefix: str) -> tuple[str, Bearer, str]:
    """A new user of the pool: (sub, metadata, e-mail)."""
    username = f"{prefix}-{secrets.token_hex(4)}"
    sub, token = make_user_token(username)
    return sub, bearer(token), f"{username}@example.com"


def sign_in_invitee(cognito: CognitoSetup, email: str) -> Bearer:
    """The invited person's first sign-in: the pool user the server created, with a password set
    as Cognito's temporary-password mail would have led them to."""
    password = f"Sp-{secrets.token_urlsafe(12)}-9a"
    client("cognito-idp", cognito.endpoint, cognito.region).admin_set_user_password(
        UserPoolId=cognito.pool_id, Username=email, Password=password, Permanent=True
    )
    return bearer(issue_tokens(cognito.endpoint, cognito.region, cognito, email, password).access)


def pool_subs(cognito: CognitoSetup, email: str) -> list[str]:
    users = client("cognito-idp", cognito.endpoint, cognito.region).list_users(
        UserPoolId=cognito.pool_id, Filter=f'email = "{email}"'
    )["Users"]
    return [next(a["Value"] for a in u["Attributes"] if a["Name"] == "sub") for u in users]


ROLES = {
    "owner": pb.Role(permissions=["*"]),
    "staff": pb.Role(permissions=["patients:read"]),
    "manager": pb.Role(permissions=["admin.members:update", "admin.members:read", "patients:read"]),
    "clinician": pb.Role(permissions=["patients:*"]),
}


def clinic(server: RunningServer, owner: Bearer, **members: pb.Member) -> str:
    """A business with two locations, the roles above and ``members`` (sub -> membership)."""
    business_id = unique_id("inv")
    draft = new_business("Smile", "L1", "L2")
    draft.permissions.CopyFrom(pb.BusinessPermissions(roles=ROLES, members=members))
    server.business.CreateBusiness(
        pb.CreateBusinessRequest(business=draft, business_id=business_id), metadata=owner, timeout=20
    )
    return business_id


def invite(
    server: RunningServer, md: Bearer, business_id: str, email: str, role: str = "staff", *locations: str
) -> pb.CreateInvitationResponse:
    request = pb.CreateInvitationRequest(
        business_id=business_id,
        email=email,
        membership=pb.Member(role=role, location_ids=list(locations)),
    )
    return server.business.CreateInvitation(request, metadata=md, timeout=20)


def accept(server: RunningServer, md: Bearer, code: str) -> pb.AcceptInvitationResponse:
    return server.business.AcceptInvitation(pb.AcceptInvitationRequest(code=code), metadata=md, timeout=20)


@dataclass(frozen=True)
class Invited:
    """An owner's clinic and a pool user invited into it as staff, not yet accepted."""

    owner: Bearer
    business_id: str
    staff_sub: str
    staff: Bearer
    created: pb.CreateInvitationResponse

    @property
    def code(self) -> str:
        return self.created.code


def invited(server: RunningServer, make_user_token: MakeUser) -> Invited:
    _, owner, _ = person(make_user_token, "owner")
    staff_sub, staff, staff_email = person(make_user_token, "staff")
    business_id = clinic(server, owner)
    return Invited(owner, business_id, staff_sub, staff, invite(server, owner, business_id, staff_email))


def refused(call: Callable[[], Any], code: grpc.StatusCode, reason: str) -> grpc.RpcError:
    error = rpc_error(call)
    assert (error.code(), reason_of(error)) == (code, reason), error.details()
    return error


# --- the flow -------------------------------------------------------------------------------


def test_invitation_flow_end_to_end_with_two_users(
    server: RunningServer, cognito: CognitoSetup, make_user_token: MakeUser
) -> None:
    """Owner invites a new e-mail; the pool user is created; they sign in, accept, and are a member."""
    owner_sub, owner, _ = person(make_user_token, "owner")
    business_id = clinic(server, owner)
    email = f"New.Hire-{secrets.token_hex(3)}@Example.com"

    created = invite(server, owner, business_id, email, "staff", "L1")
    invitation = created.invitation
    assert invitation.state == pb.INVITATION_STATE_PENDING
    assert invitation.email == email.lower()
    assert invitation.user_created
    assert invitation.invited_by == owner_sub
    assert list(invitation.membership.location_ids) == ["L1"]
    assert pool_subs(cognito, email.lower()) == [invitation.invitee]
    expire = invitation.expire_time.ToDatetime(tzinfo=UTC) - invitation.create_time.ToDatetime(tzinfo=UTC)
    assert expire == timedelta(days=7)

    invitee = sign_in_invitee(cognito, email.lower())
    # Before accepting, the invitee is nobody in the business.
    refused(
        lambda: server.business.GetBusiness(pb.GetBusinessRequest(business_id=business_id), metadata=invitee),
        grpc.StatusCode.PERMISSION_DENIED,
        "NOT_A_MEMBER",
    )
    accepted = accept(server, invitee, created.code)
    assert accepted.invitation.state == pb.INVITATION_STATE_ACCEPTED
    assert accepted.business.permissions.members[invitation.invitee] == pb.Member(
        role="staff", location_ids=["L1"]
    )

    access = server.business.GetMyAccess(
        pb.GetMyAccessRequest(business_id=business_id, location_id="L1"), metadata=invitee, timeout=10
    )
    assert (access.subject, access.role, access.location_allowed) == (invitation.invitee, "staff", True)
    # The membership index knows too: the new member's ListBusinesses finds the business.
    listed = server.business.ListBusinesses(pb.ListBusinessesRequest(), metadata=invitee, timeout=10)
    assert [b.id for b in listed.businesses] == [business_id]

    invitations = server.business.ListInvitations(
        pb.ListInvitationsRequest(business_id=business_id), metadata=owner, timeout=10
    )
    assert [(i.id, i.state) for i in invitations.invitations] == [
        (invitation.id, pb.INVITATION_STATE_ACCEPTED)
    ]
    members = server.business.ListMembers(
        pb.ListMembersRequest(business_id=business_id), metadata=owner, timeout=10
    )
    assert {(m.subject, m.membership.role, m.owner) for m in members.members} == {
        (owner_sub, "owner", True),
        (invitation.invitee, "staff", False),
    }


def test_an_existing_pool_user_is_found_by_e_mail_not_created(
    server: RunningServer, cognito: CognitoSetup, make_user_token: MakeUser
) -> None:
    """Inviting someone who already has a user: that user (their sub) is invited; none is created."""
    _, owner, _ = person(make_user_token, "owner")
    staff_sub, staff, staff_email = person(make_user_token, "staff")
    business_id = clinic(server, owner)

    created = invite(server, owner, business_id, staff_email.upper())
    assert (created.invitation.invitee, created.invitation.user_created) == (staff_sub, False)
    assert pool_subs(cognito, staff_email) == [staff_sub]
    assert accept(server, staff, created.code).business.permissions.members[staff_sub].role == "staff"

    # Once a member, inviting them again is ALREADY_EXISTS.
    refused(
        lambda: invite(server, owner, business_id, staff_email),
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_A_MEMBER",
    )


def test_an_address_nobody_verified_or_several_users_share_is_refused(
    server: RunningServer, cognito: CognitoSetup, make_user_token: MakeUser
) -> None:
    """A pool user who claimed an address without verifying it is never bound to an invitation
    (INVITEE_UNVERIFIED); two verified users with one address are INVITEE_AMBIGUOUS; nothing kept."""
    _, owner, _ = person(make_user_token, "owner")
    business_id = clinic(server, owner)
    pool = client("cognito-idp", cognito.endpoint, cognito.region)
    claimed = f"victim-{secrets.token_hex(3)}@example.com"
    pool.admin_create_user(
        UserPoolId=cognito.pool_id,
        Username=f"impostor-{secrets.token_hex(3)}",
        MessageAction="SUPPRESS",
        UserAttributes=[{"Name": "email", "Value": claimed}, {"Name": "email_verified", "Value": "false"}],
    )
    shared = f"shared-{secrets.token_hex(3)}@example.com"
    for n in range(2):
        pool.admin_create_user(
            UserPoolId=cognito.pool_id,
            Username=f"twin{n}-{secrets.token_hex(3)}",
            MessageAction="SUPPRESS",
            UserAttributes=[{"Name": "email", "Value": shared}, {"Name": "email_verified", "Value": "true"}],
        )
    refused(
        lambda: invite(server, owner, business_id, claimed),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVITEE_UNVERIFIED",
    )
    refused(
        lambda: invite(server, owner, business_id, shared),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVITEE_AMBIGUOUS",
    )
    listed = server.business.ListInvitations(
        pb.ListInvitationsRequest(business_id=business_id), metadata=owner
    )
    assert list(listed.invitations) == []


def test_a_code_works_once(
    server: RunningServer, moto_server: MotoServer, table: str, make_user_token: MakeUser
) -> None:
    """The second AcceptInvitation with the same code is INVITATION_USED, and changes nothing."""
    scene = invited(server, make_user_token)
    staff = scene.staff
    code = scene.code
    accept(server, staff, code)
    before = scan_table(moto_server.url, table)

    refused(lambda: accept(server, staff, code), grpc.StatusCode.FAILED_PRECONDITION, "INVITATION_USED")
    assert scan_table(moto_server.url, table) == before


def test_an_expired_code_is_refused(
    server: RunningServer, moto_server: MotoServer, table: str, make_user_token: MakeUser
) -> None:
    """Once its expire_time passed, the code answers INVITATION_EXPIRED and the list shows EXPIRED."""
    scene = invited(server, make_user_token)
    owner, staff, staff_sub, business_id = scene.owner, scene.staff, scene.staff_sub, scene.business_id
    created = scene.created
    # The invitation's week is over (its stored expire time moved into the past).
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    client("dynamodb", moto_server.url, "us-east-1").update_item(
        TableName=table,
        Key={"id": {"S": f"invitation#{created.invitation.id}"}},
        UpdateExpression="SET expireTime = :past",
        ExpressionAttributeValues={":past": {"S": past}},
    )

    refused(
        lambda: accept(server, staff, created.code), grpc.StatusCode.FAILED_PRECONDITION, "INVITATION_EXPIRED"
    )
    business = server.business.GetBusiness(pb.GetBusinessRequest(business_id=business_id), metadata=owner)
    assert staff_sub not in business.permissions.members
    listed = server.business.ListInvitations(
        pb.ListInvitationsRequest(business_id=business_id), metadata=owner
    )
    assert [i.state for i in listed.invitations] == [pb.INVITATION_STATE_EXPIRED]


def test_unknown_and_tampered_codes_answer_the_same_not_found(
    server: RunningServer, make_user_token: MakeUser
) -> None:
    """A made-up code, a real id with a wrong secret, and garbage: one NOT_FOUND, one message."""
    scene = invited(server, make_user_token)
    staff = scene.staff
    code = scene.code
    invitation_id, _, secret = code.partition(".")
    tampered = f"{invitation_id}.{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    unknown = f"{secrets.token_hex(16)}.{secret}"
    messages = {
        refused(
            lambda c=candidate: accept(server, staff, c), grpc.StatusCode.NOT_FOUND, "INVITATION_NOT_FOUND"
        ).details()
        for candidate in (tampered, unknown, "not-a-code")
    }
    assert len(messages) == 1
    refused(lambda: accept(server, staff, ""), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    # The real code still works after the failed attempts.
    assert accept(server, staff, code).invitation.state == pb.INVITATION_STATE_ACCEPTED


def test_only_the_invited_user_can_accept(
    server: RunningServer, machine_token: Callable[..., str], make_user_token: MakeUser
) -> None:
    """Another person (or a machine client) with the code is INVITATION_WRONG_USER; the code stays usable."""
    scene = invited(server, make_user_token)
    staff, code = scene.staff, scene.code
    _, other, _ = person(make_user_token, "other")

    for wrong in (other, scene.owner, bearer(machine_token())):
        refused(
            lambda md=wrong: accept(server, md, code),
            grpc.StatusCode.PERMISSION_DENIED,
            "INVITATION_WRONG_USER",
        )
    assert accept(server, staff, code).invitation.state == pb.INVITATION_STATE_ACCEPTED


def test_revoked_invitations(server: RunningServer, make_user_token: MakeUser) -> None:
    """A revoked code is INVITATION_REVOKED; revoking twice is REVOKED, revoking an accepted one USED."""
    _, owner, _ = person(make_user_token, "owner")
    _, staff, staff_email = person(make_user_token, "staff")
    _, nurse, nurse_email = person(make_user_token, "nurse")
    business_id = clinic(server, owner)
    first = invite(server, owner, business_id, staff_email)
    second = invite(server, owner, business_id, nurse_email)

    def revoke(invitation_id: str) -> pb.Invitation:
        request = pb.RevokeInvitationRequest(business_id=business_id, invitation_id=invitation_id)
        return server.business.RevokeInvitation(request, metadata=owner, timeout=10)

    revoked = revoke(first.invitation.id)
    assert revoked.state == pb.INVITATION_STATE_REVOKED
    assert revoked.HasField("close_time")
    refused(
        lambda: accept(server, staff, first.code), grpc.StatusCode.FAILED_PRECONDITION, "INVITATION_REVOKED"
    )
    refused(lambda: revoke(first.invitation.id), grpc.StatusCode.FAILED_PRECONDITION, "INVITATION_REVOKED")
    accept(server, nurse, second.code)
    refused(lambda: revoke(second.invitation.id), grpc.StatusCode.FAILED_PRECONDITION, "INVITATION_USED")
    refused(lambda: revoke(secrets.token_hex(16)), grpc.StatusCode.NOT_FOUND, "INVITATION_NOT_FOUND")
    # Another business's invitation is not found through this one.
    other_business = clinic(server, owner)
    third = invite(server, owner, other_business, f"x-{secrets.token_hex(3)}@example.com")
    refused(lambda: revoke(third.invitation.id), grpc.StatusCode.NOT_FOUND, "INVITATION_NOT_FOUND")


# --- no escalation ---------------------------------------------------------------------------


def test_no_escalation_through_invitations(
    server: RunningServer,
    moto_server: MotoServer,
    table: str,
    cognito: CognitoSetup,
    make_user_token: MakeUser,
) -> None:
    """A manager may invite into roles within their own, never beyond: ESCALATION, and nothing is
    written nor created in the user pool."""
    _, owner, _ = person(make_user_token, "owner")
    manager_sub, manager, _ = person(make_user_token, "manager")
    business_id = clinic(server, owner, **{manager_sub: pb.Member(role="manager")})
    before = scan_table(moto_server.url, table)

    for role in ("owner", "clinician"):
        email = f"esc-{secrets.token_hex(3)}@example.com"
        refused(
            lambda r=role, e=email: invite(server, manager, business_id, e, r),
            grpc.StatusCode.PERMISSION_DENIED,
            "ESCALATION",
        )
        assert pool_subs(cognito, email) == []
    assert scan_table(moto_server.url, table) == before

    # Within their own role: allowed.
    assert invite(server, manager, business_id, f"ok-{secrets.token_hex(3)}@example.com", "staff").code
    # And they cannot revoke an invitation into a role above theirs.
    above = invite(server, owner, business_id, f"up-{secrets.token_hex(3)}@example.com", "clinician")
    refused(
        lambda: server.business.RevokeInvitation(
            pb.RevokeInvitationRequest(business_id=business_id, invitation_id=above.invitation.id),
            metadata=manager,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "ESCALATION",
    )


def test_an_invitation_dies_with_its_inviters_rights(
    server: RunningServer, make_user_token: MakeUser
) -> None:
    """A manager's pending invitation cannot be accepted once the manager may no longer grant it:
    INVITER_NOT_ALLOWED, and the invitee does not become a member."""
    _, owner, _ = person(make_user_token, "owner")
    manager_sub, manager, _ = person(make_user_token, "manager")
    staff_sub, staff, staff_email = person(make_user_token, "staff")
    business_id = clinic(server, owner, **{manager_sub: pb.Member(role="manager")})
    code = invite(server, manager, business_id, staff_email).code
    server.business.SetMember(
        pb.SetMemberRequest(business_id=business_id, member=manager_sub, membership=pb.Member(role="staff")),
        metadata=owner,
    )
    refused(lambda: accept(server, staff, code), grpc.StatusCode.FAILED_PRECONDITION, "INVITER_NOT_ALLOWED")
    business = server.business.GetBusiness(pb.GetBusinessRequest(business_id=business_id), metadata=owner)
    assert staff_sub not in business.permissions.members
    # Given the rights back, the same invitation works.
    server.business.SetMember(
        pb.SetMemberRequest(
            business_id=business_id, member=manager_sub, membership=pb.Member(role="manager")
        ),
        metadata=owner,
    )
    assert accept(server, staff, code).business.permissions.members[staff_sub].role == "staff"


def test_invitation_checks_role_and_locations(server: RunningServer, make_user_token: MakeUser) -> None:
    """An unknown role or location is FAILED_PRECONDITION; a bad e-mail INVALID_ARGUMENT."""
    _, owner, _ = person(make_user_token, "owner")
    business_id = clinic(server, owner)
    email = f"c-{secrets.token_hex(3)}@example.com"
    refused(
        lambda: invite(server, owner, business_id, email, "ghost"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "ROLE_NOT_FOUND",
    )
    refused(
        lambda: invite(server, owner, business_id, email, "staff", "L9"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "LOCATION_NOT_FOUND",
    )
    for bad in ("", "no-at-sign", 'quote"@example.com', "a@b"):
        refused(
            lambda b=bad: invite(server, owner, business_id, b),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )


# --- permission rules -----------------------------------------------------------------------


def test_each_rpc_refuses_outsiders_before_existence(
    server: RunningServer, make_user_token: MakeUser
) -> None:
    """An outsider gets the same NOT_A_MEMBER for a real business and a missing one, on every RPC."""
    _, owner, _ = person(make_user_token, "owner")
    _, outsider, _ = person(make_user_token, "outsider")
    real = clinic(server, owner)
    invitation_id = invite(server, owner, real, f"o-{secrets.token_hex(3)}@example.com").invitation.id
    svc = server.business
    for business_id in (real, unique_id("missing")):
        calls = [
            lambda b=business_id: invite(server, outsider, b, "x@example.com"),
            lambda b=business_id: svc.ListInvitations(
                pb.ListInvitationsRequest(business_id=b), metadata=outsider
            ),
            lambda b=business_id: svc.RevokeInvitation(
                pb.RevokeInvitationRequest(business_id=b, invitation_id=invitation_id), metadata=outsider
            ),
            lambda b=business_id: svc.ListMembers(pb.ListMembersRequest(business_id=b), metadata=outsider),
            lambda b=business_id: svc.TransferOwnership(
                pb.TransferOwnershipRequest(business_id=b, new_owner="someone", previous_owner_role="staff"),
                metadata=outsider,
            ),
        ]
        details = [
            refused(call, grpc.StatusCode.PERMISSION_DENIED, "NOT_A_MEMBER").details() for call in calls
        ]
        assert all(business_id in d for d in details)


def test_a_member_without_the_members_permission_is_refused(
    server: RunningServer, make_user_token: MakeUser
) -> None:
    """Staff (patients:read only) may not invite, revoke, list invitations or members, or transfer."""
    _, owner, _ = person(make_user_token, "owner")
    staff_sub, staff, _ = person(make_user_token, "staff")
    business_id = clinic(server, owner, **{staff_sub: pb.Member(role="staff")})
    invitation_id = invite(server, owner, business_id, f"m-{secrets.token_hex(3)}@example.com").invitation.id
    svc = server.business
    calls = [
        lambda: invite(server, staff, business_id, "x@example.com"),
        lambda: svc.ListInvitations(pb.ListInvitationsRequest(business_id=business_id), metadata=staff),
        lambda: svc.RevokeInvitation(
            pb.RevokeInvitationRequest(business_id=business_id, invitation_id=invitation_id), metadata=staff
        ),
        lambda: svc.ListMembers(pb.ListMembersRequest(business_id=business_id), metadata=staff),
        lambda: svc.TransferOwnership(
            pb.TransferOwnershipRequest(
                business_id=business_id, new_owner=staff_sub, previous_owner_role="staff"
            ),
            metadata=staff,
        ),
    ]
    for call in calls:
        refused(call, grpc.StatusCode.PERMISSION_DENIED, "MISSING_PERMISSION")


def test_a_platform_admin_may_do_each(
    server: RunningServer, cognito: CognitoSetup, admin_token: str, make_user_token: MakeUser
) -> None:
    """The platform admin invites (any role), lists, revokes, lists members and transfers ownership."""
    owner_sub, owner, _ = person(make_user_token, "owner")
    staff_sub, staff, staff_email = person(make_user_token, "staff")
    admin = bearer(admin_token)
    business_id = clinic(server, owner)
    svc = server.business

    created = invite(server, admin, business_id, staff_email, "clinician")
    revoked = svc.RevokeInvitation(
        pb.RevokeInvitationRequest(business_id=business_id, invitation_id=created.invitation.id),
        metadata=admin,
    )
    assert revoked.revoked_by == cognito.admin_sub
    again = invite(server, admin, business_id, staff_email, "clinician")
    accept(server, staff, again.code)
    listed = svc.ListInvitations(pb.ListInvitationsRequest(business_id=business_id), metadata=admin)
    assert [i.state for i in listed.invitations] == [
        pb.INVITATION_STATE_REVOKED,
        pb.INVITATION_STATE_ACCEPTED,
    ]
    members = svc.ListMembers(pb.ListMembersRequest(business_id=business_id), metadata=admin)
    assert {m.subject for m in members.members} == {owner_sub, staff_sub}
    moved = svc.TransferOwnership(
        pb.TransferOwnershipRequest(
            business_id=business_id, new_owner=staff_sub, previous_owner_role="staff"
        ),
        metadata=admin,
    )
    assert moved.owner == staff_sub


def test_a_manager_lists_but_a_read_only_manager_cannot_invite(
    server: RunningServer, make_user_token: MakeUser
) -> None:
    """admin.members:read shows invitations and members; inviting needs admin.members:update."""
    _, owner, _ = person(make_user_token, "owner")
    viewer_sub, viewer, _ = person(make_user_token, "viewer")
    business_id = clinic(server, owner)
    svc = server.business
    roles = dict(ROLES, viewer=pb.Role(permissions=["admin.members:read"]))
    current = svc.GetBusiness(pb.GetBusinessRequest(business_id=business_id), metadata=owner)
    svc.UpdateBusiness(
        pb.UpdateBusinessRequest(
            business=pb.Business(
                id=business_id, etag=current.etag, permissions=pb.BusinessPermissions(roles=roles)
            ),
            update_mask={"paths": ["permissions.roles"]},
        ),
        metadata=owner,
    )
    svc.SetMember(
        pb.SetMemberRequest(business_id=business_id, member=viewer_sub, membership=pb.Member(role="viewer")),
        metadata=owner,
    )
    invite(server, owner, business_id, f"v-{secrets.token_hex(3)}@example.com")
    assert (
        len(
            svc.ListInvitations(
                pb.ListInvitationsRequest(business_id=business_id), metadata=viewer
            ).invitations
        )
        == 1
    )
    assert len(svc.ListMembers(pb.ListMembersRequest(business_id=business_id), metadata=viewer).members) == 2
    refused(
        lambda: invite(server, viewer, business_id, "x@example.com"),
        grpc.StatusCode.PERMISSION_DENIED,
        "MISSING_PERMISSION",
    )


# --- ownership ------------------------------------------------------------------------------


def test_transfer_ownership(server: RunningServer, make_user_token: MakeUser) -> None:
    """Owner only; the new owner must be a member and takes the owner role; the old owner keeps
    the role they chose, and is no longer the owner."""
    owner_sub, owner, _ = person(make_user_token, "owner")
    admin2_sub, admin2, _ = person(make_user_token, "coowner")
    staff_sub, staff, _ = person(make_user_token, "staff")
    business_id = clinic(
        server, owner, **{admin2_sub: pb.Member(role="owner"), staff_sub: pb.Member(role="staff")}
    )
    svc = server.business

    def transfer(md: Bearer, new_owner: str, keep: str = "manager", etag: str = "") -> pb.Business:
        request = pb.TransferOwnershipRequest(
            business_id=business_id, new_owner=new_owner, previous_owner_role=keep, etag=etag
        )
        return svc.TransferOwnership(request, metadata=md, timeout=10)

    # A member with "*" who is not the owner.
    refused(lambda: transfer(admin2, admin2_sub), grpc.StatusCode.PERMISSION_DENIED, "NOT_OWNER")
    refused(
        lambda: transfer(owner, "not-a-member"), grpc.StatusCode.FAILED_PRECONDITION, "NEW_OWNER_NOT_MEMBER"
    )
    refused(
        lambda: transfer(owner, staff_sub, "ghost"), grpc.StatusCode.FAILED_PRECONDITION, "ROLE_NOT_FOUND"
    )
    refused(lambda: transfer(owner, owner_sub), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    refused(lambda: transfer(owner, staff_sub, etag="stale"), grpc.StatusCode.ABORTED, "ETAG_MISMATCH")

    moved = transfer(owner, staff_sub)
    assert moved.owner == staff_sub
    assert moved.permissions.members[staff_sub] == pb.Member(role="owner")
    assert moved.permissions.members[owner_sub] == pb.Member(role="manager")
    # The previous owner is a manager now: no "*", so not even asked whether they own it.
    refused(lambda: transfer(owner, owner_sub), grpc.StatusCode.PERMISSION_DENIED, "MISSING_PERMISSION")
    # The new owner can hand it back, and the old owner may keep the owner role itself.
    back = transfer(staff, owner_sub, keep="owner")
    assert (back.owner, back.permissions.members[staff_sub].role) == (owner_sub, "owner")


# --- secrets, limits, outages ---------------------------------------------------------------


def test_the_code_is_stored_hashed_and_never_logged(
    server: RunningServer,
    moto_server: MotoServer,
    table: str,
    make_user_token: MakeUser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only the secret's SHA-256 is in the table; neither the code nor the secret appears in any log."""
    _, owner, _ = person(make_user_token, "owner")
    _, staff, staff_email = person(make_user_token, "staff")
    business_id = clinic(server, owner)
    with caplog.at_level(logging.DEBUG):
        code = invite(server, owner, business_id, staff_email).code
        accept(server, staff, code)
        rpc_error(lambda: accept(server, staff, code))
    invitation_id, _, secret = code.partition(".")
    assert all(secret not in record.getMessage() for record in caplog.records)
    items = [i for i in scan_table(moto_server.url, table) if i["id"]["S"] == f"invitation#{invitation_id}"]
    assert len(items) == 1
    assert secret not in repr(items[0])
    assert items[0]["codeHash"]["S"] == hashlib.sha256(secret.encode()).hexdigest()


def test_too_many_recent_invitations(
    server: RunningServer,
    moto_server: MotoServer,
    table: str,
    cognito: CognitoSetup,
    make_user_token: MakeUser,
) -> None:
    """With 200 invitations kept for a business, the next is TOO_MANY_INVITATIONS (no user created)."""
    _, owner, _ = person(make_user_token, "owner")
    business_id = clinic(server, owner)
    dynamodb = client("dynamodb", moto_server.url, "us-east-1")
    for start in range(0, 200, 25):
        dynamodb.batch_write_item(
            RequestItems={
                table: [
                    {
                        "PutRequest": {
                            "Item": {
                                "id": {"S": f"invitation#filler{start + n:027d}"},
                                "kind": {"S": "invitation"},
                                "memberSub": {"S": f"invitations#{business_id}"},
                                "memberOf": {"S": f"filler{start + n:027d}"},
                            }
                        }
                    }
                    for n in range(25)
                ]
            }
        )
    email = f"flood-{secrets.token_hex(3)}@example.com"
    refused(
        lambda: invite(server, owner, business_id, email),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TOO_MANY_INVITATIONS",
    )
    assert pool_subs(cognito, email) == []


def test_user_pool_down_is_unavailable_and_writes_nothing(
    make_server: MakeServer, moto_server: MotoServer, table: str, make_user_token: MakeUser
) -> None:
    """Cognito's admin API unreachable: UNAVAILABLE (USER_DIRECTORY_UNAVAILABLE), no invitation kept."""
    env = {**server_env(moto_server.url, table, None), "COGNITO_ENDPOINT": "http://127.0.0.1:9"}
    server = make_server(env=env)
    _, owner, _ = person(make_user_token, "owner")
    business_id = clinic(server, owner)
    refused(
        lambda: invite(server, owner, business_id, f"d-{secrets.token_hex(3)}@example.com"),
        grpc.StatusCode.UNAVAILABLE,
        "USER_DIRECTORY_UNAVAILABLE",
    )
    listed = server.business.ListInvitations(
        pb.ListInvitationsRequest(business_id=business_id), metadata=owner
    )
    assert list(listed.invitations) == []


def test_lists_page(server: RunningServer, make_user_token: MakeUser) -> None:
    """ListInvitations and ListMembers page with tokens bound to the business."""
    owner_sub, owner, _ = person(make_user_token, "owner")
    staff = {f"sub-{n}-{secrets.token_hex(3)}": pb.Member(role="staff") for n in range(4)}
    business_id = clinic(server, owner, **staff)
    other = clinic(server, owner)
    svc = server.business
    made = [
        invite(server, owner, business_id, f"p{n}-{secrets.token_hex(3)}@example.com").invitation.id
        for n in range(5)
    ]
    seen: list[str] = []
    token = ""
    while True:
        page = svc.ListInvitations(
            pb.ListInvitationsRequest(business_id=business_id, page_size=2, page_token=token), metadata=owner
        )
        seen += [i.id for i in page.invitations]
        token = page.next_page_token
        if not token:
            break
        refused(
            lambda t=token: svc.ListInvitations(
                pb.ListInvitationsRequest(business_id=other, page_token=t), metadata=owner
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
    assert seen == made  # oldest first
    subjects: list[str] = []
    token = ""
    while True:
        members = svc.ListMembers(
            pb.ListMembersRequest(business_id=business_id, page_size=2, page_token=token), metadata=owner
        )
        assert len(members.members) <= 2
        subjects += [m.subject for m in members.members]
        token = members.next_page_token
        if not token:
            break
    assert subjects == sorted([owner_sub, *staff])
    refused(
        lambda: svc.ListMembers(
            pb.ListMembersRequest(business_id=business_id, page_token="bogus"), metadata=owner
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
