"""Invitations by e-mail: the value, its single-use code, and the ports the use cases need (no I/O).

An invitation's code is ``<invitation id>.<secret>``: the id finds the stored invitation with one
read, the secret (32 random bytes) proves the holder was given the code. Only a SHA-256 of the
secret is stored (the secret is random and long, so a fast hash cannot be brute-forced) and it is
compared in constant time. The code is shown once, to the inviter, and never logged.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from simplu_grpc.domain.business.model import Business, Member
from simplu_grpc.errors import InvalidArgument

# An invitation id: 12 hex digits of milliseconds (ids sort by creation) and 20 random ones.
_INVITATION_ID = re.compile(r"[0-9a-f]{32}")
# The secret: 32 random bytes, URL-safe base64 without padding (43 characters).
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
_SECRET_BYTES = 32


class InvitationState(enum.StrEnum):
    """The stored state; EXPIRED is never stored, it is a PENDING one past its expire time."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True, kw_only=True)
class Invitation:
    """An invitation to join ``business_id`` as ``membership``, for the Cognito user ``invitee``."""

    id: str
    business_id: str
    email: str
    membership: Member
    invitee: str
    invited_by: str
    create_time: datetime
    expire_time: datetime
    code_hash: str
    state: InvitationState = InvitationState.PENDING
    user_created: bool = False
    # Made by a platform admin or a machine client (not a member): nothing to re-check at accept.
    by_platform: bool = False
    close_time: datetime | None = None
    closed_by: str = ""

    def state_at(self, now: datetime) -> InvitationState:
        """The state a caller sees: a pending invitation past its expire time is EXPIRED."""
        if self.state is InvitationState.PENDING and now >= self.expire_time:
            return InvitationState.EXPIRED
        return self.state

    def matches(self, secret: str) -> bool:
        """Whether ``secret`` is this invitation's, compared in constant time."""
        return hmac.compare_digest(self.code_hash, hash_secret(secret))


@dataclass(frozen=True, slots=True)
class InvitationPage:
    invitations: list[Invitation]
    next_token: str


@dataclass(frozen=True, slots=True)
class NewCode:
    """A freshly drawn code: what the inviter is shown, and what is stored."""

    invitation_id: str
    code: str
    code_hash: str

    @classmethod
    def draw(cls) -> NewCode:
        invitation_id = f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"
        secret = secrets.token_urlsafe(_SECRET_BYTES)
        return cls(invitation_id, f"{invitation_id}.{secret}", hash_secret(secret))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_code(code: str) -> tuple[str, str] | None:
    """``(invitation id, secret)`` of a well-formed code; None for anything else."""
    invitation_id, dot, secret = code.strip().partition(".")
    if not dot or not _INVITATION_ID.fullmatch(invitation_id) or not _SECRET.fullmatch(secret):
        return None
    return invitation_id, secret


def is_invitation_id(value: str) -> bool:
    return bool(_INVITATION_ID.fullmatch(value))


def after_token(after: str, scope: str) -> str:
    """An opaque page token: resume after ``after``, valid only for the query ``scope`` (a business)."""
    raw = json.dumps({"v": 1, "b": scope, "after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_after_token(token: str, scope: str) -> str:
    """Where ``after_token`` said to resume; INVALID_ARGUMENT for a token not issued for ``scope``."""
    try:
        data = json.loads(base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or data.get("v") != 1 or not isinstance(data.get("after"), str):
        raise InvalidArgument.field("page_token", "is not a token this service issued")
    if data.get("b") != scope:
        raise InvalidArgument.field("page_token", "was issued for a different query")
    after: str = data["after"]
    return after


# --- ports ------------------------------------------------------------------------------------


class InvitationStore(Protocol):
    """Where invitations are kept (``adapters.dynamodb.invitation_store.InvitationStore`` on DynamoDB)."""

    def create(self, invitation: Invitation) -> None: ...

    def get(self, invitation_id: str) -> Invitation | None: ...

    def list(self, business_id: str, *, page_size: int, page_token: str) -> InvitationPage:
        """A business's invitations, oldest first; the token is bound to the business."""
        ...

    def count_recent(self, business_id: str) -> int:
        """How many invitations of the business are kept: pending, or closed recently."""
        ...

    def accept(self, accepted: Invitation, *, business: Business, previous: Business) -> Business:
        """In one transaction: ``business`` written over ``previous`` (same version, else Aborted)
        and the invitation marked ``accepted`` if it is still pending (else Aborted)."""
        ...

    def close(self, closed: Invitation) -> None:
        """Write a revoked invitation if it is still pending (else Aborted)."""
        ...


class UserDirectory(Protocol):
    """The user pool's admin side (``adapters.cognito.users.CognitoUsers``)."""

    def find_or_create(self, email: str) -> tuple[str, bool]:
        """The ``sub`` of the one user with this e-mail, created when there is none; and whether
        it was created. FailedPrecondition (INVITEE_AMBIGUOUS) when several users have it."""
        ...
