"""Invitation items <-> domain ``Invitation`` (their shape in the business-info table, no I/O).

One item per invitation, next to the businesses and membership items (business ids never
contain ``#``, so no kind collides with another)::

    id            "invitation#<invitation id>"    the code's first half finds it with one GetItem
    kind          "invitation"
    memberSub     "invitations#<business id>"     the keys of ``member-index``: a business's
    memberOf      "<invitation id>"                invitations are one Query (oldest first), like
                                                   a person's memberships (a Cognito sub never
                                                   starts with "invitations#")
    businessId, email, role, locationIds, invitee, invitedBy, userCreated, byPlatform,
    createdAt, expireTime, state, closedAt, closedBy (ISO 8601 / strings)
    codeHash      hex SHA-256 of the code's secret (the code itself is never stored)
    expiresAt     epoch seconds: DynamoDB's TTL removes the item this long after it closed or expired
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from simplu_grpc.adapters.dynamodb.business_items import iso
from simplu_grpc.domain.business.invitation_model import Invitation, InvitationState
from simplu_grpc.domain.business.model import Member

KIND_INVITATION = "invitation"
# How long an invitation stays listed (and its code answers "used", "revoked" or "expired"
# rather than "not found") after it closed or expired.
RETENTION = timedelta(days=7)


def invitation_item_id(invitation_id: str) -> str:
    return f"{KIND_INVITATION}#{invitation_id}"


def business_partition(business_id: str) -> str:
    """The ``member-index`` partition holding a business's invitations."""
    return f"invitations#{business_id}"


def to_item(invitation: Invitation) -> dict[str, Any]:
    end = invitation.close_time or invitation.expire_time
    item: dict[str, Any] = {
        "id": {"S": invitation_item_id(invitation.id)},
        "kind": {"S": KIND_INVITATION},
        "memberSub": {"S": business_partition(invitation.business_id)},
        "memberOf": {"S": invitation.id},
        "businessId": {"S": invitation.business_id},
        "email": {"S": invitation.email},
        "role": {"S": invitation.membership.role},
        "locationIds": {"L": [{"S": loc} for loc in invitation.membership.location_ids]},
        "invitee": {"S": invitation.invitee},
        "invitedBy": {"S": invitation.invited_by},
        "userCreated": {"BOOL": invitation.user_created},
        "byPlatform": {"BOOL": invitation.by_platform},
        "createdAt": {"S": iso(invitation.create_time)},
        "expireTime": {"S": iso(invitation.expire_time)},
        "state": {"S": invitation.state.value},
        "codeHash": {"S": invitation.code_hash},
        "expiresAt": {"N": str(int((end + RETENTION).timestamp()))},
    }
    if invitation.close_time is not None:
        item["closedAt"] = {"S": iso(invitation.close_time)}
        item["closedBy"] = {"S": invitation.closed_by}
    return item


def is_invitation_item(item: Mapping[str, Any]) -> bool:
    return bool(item.get("kind", {}).get("S") == KIND_INVITATION)


def from_item(item: Mapping[str, Any]) -> Invitation:
    try:
        closed = item.get("closedAt", {}).get("S")
        return Invitation(
            id=str(item["memberOf"]["S"]),
            business_id=str(item["businessId"]["S"]),
            email=str(item["email"]["S"]),
            membership=Member(
                role=str(item["role"]["S"]),
                location_ids=tuple(str(loc["S"]) for loc in item.get("locationIds", {}).get("L", [])),
            ),
            invitee=str(item["invitee"]["S"]),
            invited_by=str(item["invitedBy"]["S"]),
            user_created=bool(item.get("userCreated", {}).get("BOOL", False)),
            by_platform=bool(item.get("byPlatform", {}).get("BOOL", False)),
            create_time=_time(item["createdAt"]["S"]),
            expire_time=_time(item["expireTime"]["S"]),
            state=InvitationState(item["state"]["S"]),
            code_hash=str(item["codeHash"]["S"]),
            close_time=_time(closed) if closed else None,
            closed_by=str(item.get("closedBy", {}).get("S", "")),
        )
    except (KeyError, ValueError, TypeError) as exc:
        # Never guess: a malformed item is an internal error with the item's id in the log.
        raise ValueError(f"invitation item {item.get('id')!r} is malformed: {exc!r}") from exc


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
