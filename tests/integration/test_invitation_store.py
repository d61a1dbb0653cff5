"""InvitationStore against a real moto server: spending a code and adding the member are one
conditional transaction, so a spent (or revoked) invitation can never make a member again.

The guarantee under concurrency is DynamoDB's (conditions checked atomically per transaction);
moto's server does not serialize concurrent transactions, so the race is shown here as its two
deterministic halves: a stale business and an already-spent invitation each abort the whole write.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from simplu_grpc.adapters.dynamodb.business_store import BusinessStore
from simplu_grpc.adapters.dynamodb.invitation_store import InvitationStore
from simplu_grpc.adapters.dynamodb.membership_items import membership_id
from simplu_grpc.devstack.moto_server import MotoServer, create_business_table
from simplu_grpc.domain.business.invitation_model import Invitation, InvitationState, NewCode
from simplu_grpc.domain.business.model import Business, BusinessType, Member, Permissions, Role
from simplu_grpc.errors import Aborted
from simplu_grpc.metrics import Metrics
from tests.integration.test_business_store import dynamodb

pytestmark = pytest.mark.integration

REGION = "us-east-1"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def stores(moto_server: MotoServer) -> Iterator[tuple[BusinessStore, InvitationStore]]:
    table = f"inv-{secrets.token_hex(4)}"
    create_business_table(moto_server.url, REGION, table)
    client = dynamodb(moto_server.url)
    businesses = BusinessStore(table=table, client=client, metrics=Metrics())
    yield businesses, InvitationStore(businesses=businesses, table=table, client=client)
    client.delete_table(TableName=table)
    client.close()


def clinic(businesses: BusinessStore) -> Business:
    draft = Business(
        id=f"b{secrets.token_hex(6)}",
        name="Clinic",
        type=BusinessType.DENTAL,
        owner="olga",
        permissions=Permissions(
            roles={"owner": Role(permissions=("*",)), "staff": Role(permissions=("patients:read",))},
            members={"olga": Member(role="owner")},
        ),
    )
    return businesses.create(draft).business


def pending(business_id: str, invitee: str) -> Invitation:
    code = NewCode.draw()
    return Invitation(
        id=code.invitation_id,
        business_id=business_id,
        email="new@example.com",
        membership=Member(role="staff"),
        invitee=invitee,
        invited_by="olga",
        create_time=NOW,
        expire_time=NOW + timedelta(days=7),
        code_hash=code.code_hash,
    )


def joined(business: Business, subject: str) -> Business:
    members = {**business.permissions.members, subject: Member(role="staff")}
    return replace(business, permissions=replace(business.permissions, members=members))


def accepted(invitation: Invitation) -> Invitation:
    return replace(invitation, state=InvitationState.ACCEPTED, close_time=NOW, closed_by=invitation.invitee)


def test_accepting_writes_member_membership_item_and_spent_code_together(
    stores: tuple[BusinessStore, InvitationStore],
) -> None:
    """One accept: the business lists the member, their membership item exists, the invitation is accepted."""
    businesses, invitations = stores
    business = clinic(businesses)
    invitation = pending(business.id, "nina")
    invitations.create(invitation)
    assert invitations.get(invitation.id) == invitation

    saved = invitations.accept(accepted(invitation), business=joined(business, "nina"), previous=business)
    assert saved.member("nina") == Member(role="staff")
    assert businesses.get(business.id) == saved
    stored = invitations.get(invitation.id)
    assert stored is not None
    assert stored.state is InvitationState.ACCEPTED
    assert businesses.existing_ids([membership_id("nina", business.id)]) == {
        membership_id("nina", business.id)
    }


def test_a_spent_invitation_aborts_the_whole_write_even_on_a_fresh_business(
    stores: tuple[BusinessStore, InvitationStore],
) -> None:
    """The loser of a race re-reads the business (fresh version) but the invitation is spent: Aborted,
    and neither the business nor any membership item changes."""
    businesses, invitations = stores
    business = clinic(businesses)
    invitation = pending(business.id, "nina")
    invitations.create(invitation)
    invitations.accept(accepted(invitation), business=joined(business, "nina"), previous=business)
    fresh = businesses.get(business.id)
    assert fresh is not None

    with pytest.raises(Aborted):
        invitations.accept(accepted(invitation), business=joined(fresh, "oscar"), previous=fresh)
    assert businesses.get(business.id) == fresh
    assert businesses.existing_ids([membership_id("oscar", business.id)]) == set()


def test_a_stale_business_aborts_and_leaves_the_invitation_pending(
    stores: tuple[BusinessStore, InvitationStore],
) -> None:
    """The business changed since it was read: Aborted, and the code is not spent."""
    businesses, invitations = stores
    business = clinic(businesses)
    invitation = pending(business.id, "nina")
    invitations.create(invitation)
    businesses.update(replace(business, name="Renamed"), previous=business)

    with pytest.raises(Aborted):
        invitations.accept(accepted(invitation), business=joined(business, "nina"), previous=business)
    stored = invitations.get(invitation.id)
    assert stored is not None
    assert stored.state is InvitationState.PENDING


def test_revoking_is_conditional_on_pending(stores: tuple[BusinessStore, InvitationStore]) -> None:
    """Closing an invitation someone accepted meanwhile aborts; the accepted state stays."""
    businesses, invitations = stores
    business = clinic(businesses)
    invitation = pending(business.id, "nina")
    invitations.create(invitation)
    invitations.accept(accepted(invitation), business=joined(business, "nina"), previous=business)

    revoked = replace(invitation, state=InvitationState.REVOKED, close_time=NOW, closed_by="olga")
    with pytest.raises(Aborted):
        invitations.close(revoked)
    stored = invitations.get(invitation.id)
    assert stored is not None
    assert stored.state is InvitationState.ACCEPTED
