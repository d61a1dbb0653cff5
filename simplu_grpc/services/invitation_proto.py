"""Protobuf <-> domain conversion for BusinessService's people management (invitations, members)."""

from __future__ import annotations

from datetime import datetime

from simplu.v1 import business_pb2

from simplu_grpc.domain.business.invitation_model import Invitation, InvitationState
from simplu_grpc.domain.business.model import Member
from simplu_grpc.domain.business.team import TeamMember
from simplu_grpc.services.business_proto import timestamp

STATE_TO_PROTO: dict[InvitationState, business_pb2.InvitationState] = {
    InvitationState.PENDING: business_pb2.INVITATION_STATE_PENDING,
    InvitationState.ACCEPTED: business_pb2.INVITATION_STATE_ACCEPTED,
    InvitationState.REVOKED: business_pb2.INVITATION_STATE_REVOKED,
    InvitationState.EXPIRED: business_pb2.INVITATION_STATE_EXPIRED,
}


def invitation_to_proto(invitation: Invitation, now: datetime) -> business_pb2.Invitation:
    """The invitation as callers see it (never its code hash); its state as of ``now``."""
    message = business_pb2.Invitation(
        id=invitation.id,
        business_id=invitation.business_id,
        email=invitation.email,
        membership=_member(invitation.membership),
        state=STATE_TO_PROTO[invitation.state_at(now)],
        invitee=invitation.invitee,
        invited_by=invitation.invited_by,
        create_time=timestamp(invitation.create_time),
        expire_time=timestamp(invitation.expire_time),
        user_created=invitation.user_created,
    )
    if invitation.close_time is not None:
        message.close_time.CopyFrom(timestamp(invitation.close_time))
    if invitation.state is InvitationState.REVOKED:
        message.revoked_by = invitation.closed_by
    return message


def member_to_proto(member: TeamMember) -> business_pb2.BusinessMember:
    return business_pb2.BusinessMember(
        subject=member.subject,
        membership=_member(member.membership),
        owner=member.owner,
    )


def _member(member: Member) -> business_pb2.Member:
    return business_pb2.Member(role=member.role, location_ids=list(member.location_ids))
