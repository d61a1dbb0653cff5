"""Invitations: CreateInvitation, AcceptInvitation, ListInvitations, RevokeInvitation.

Onboarding by e-mail: a member who manages members invites ``email`` with a role and locations;
the Cognito user with that e-mail is found, or created (Cognito then mails them a temporary
password), and the invitation records their ``sub``. The inviter is shown a single-use code
(``domain.business.invitation_model``) to hand to the person; the person signs in and accepts with it,
and their token's ``sub`` — which must be the invited user's — becomes the member.

Rules, in the order they are checked:

- Create and revoke are business writes under ``admin.members:update`` (permission before
  existence, as every other write), and the role given or revoked may grant nothing the caller's
  own role lacks: the one escalation check (``Authorizer.require_within_own_role``, through
  ``BusinessOps.check_grant`` as SetMember uses it).
- Accept: an unknown code and a code whose secret does not match answer the same NOT_FOUND (a
  guessed id learns nothing); then whose it is (INVITATION_WRONG_USER), then its state (revoked,
  already used, expired). Adding the member and spending the code happen in one DynamoDB
  transaction, so a code can never make two members, nor be spent without making one.
- Listing invitations shows e-mails: only to those who may see members.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from simplu_grpc.domain.auth import permissions as perm
from simplu_grpc.domain.auth.authz import Authorizer, require_live
from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.domain.business.cache import BusinessCache
from simplu_grpc.domain.business.commands import BusinessOps
from simplu_grpc.domain.business.invitation_model import (
    Invitation,
    InvitationPage,
    InvitationState,
    InvitationStore,
    NewCode,
    UserDirectory,
    is_invitation_id,
    parse_code,
)
from simplu_grpc.domain.business.model import Business, Member
from simplu_grpc.domain.business.ports import BusinessRepository
from simplu_grpc.domain.business.validation import MAX_MEMBERS, check_email, check_member, page_size
from simplu_grpc.domain.checks import Violations, check_business_id
from simplu_grpc.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)

log = logging.getLogger(__name__)

DEFAULT_TTL = timedelta(days=7)
# At most this many invitations kept per business (pending, or closed within the retention the
# store keeps them for): each may create a Cognito user, so a member cannot flood the pool.
MAX_RECENT_INVITATIONS = 200
_ACCEPT_ATTEMPTS = 3
_CODE_MAX = 128


class InvitationOps:
    """The invitation use cases, independent of protobuf and of DynamoDB/Cognito."""

    def __init__(
        self,
        *,
        businesses: BusinessOps,
        store: BusinessRepository,
        cache: BusinessCache,
        invitations: InvitationStore,
        users: UserDirectory,
        authorizer: Authorizer,
        ttl: timedelta = DEFAULT_TTL,
        max_recent: int = MAX_RECENT_INVITATIONS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if ttl <= timedelta(0):
            raise ValueError("ttl must be positive")
        self._businesses = businesses
        self._store = store
        self._cache = cache
        self._invitations = invitations
        self._users = users
        self._authz = authorizer
        self._ttl = ttl
        self._max_recent = max_recent
        self._now = clock

    # --- create ------------------------------------------------------------------------

    def create(
        self, principal: Principal, business_id: str, email: str, membership: Member
    ) -> tuple[Invitation, str]:
        """The new invitation and its code (to be shown to the caller once, never logged)."""
        v = Violations()
        check_business_id(v, "business_id", business_id)
        address = email.strip().lower()
        if not address:
            v.add("email", "is required")
        elif '"' in address or "\\" in address:
            v.add("email", "must be an email address like name@example.com")
        else:
            check_email(v, "email", address)
        check_member(v, "membership", membership)
        v.raise_if_any()
        business = self._authz.require_business_write(
            principal, self._store.get(business_id), business_id, perm.MEMBERS_UPDATE
        )
        self._businesses.check_grant(principal, business, membership)
        if self._invitations.count_recent(business_id) >= self._max_recent:
            raise FailedPrecondition(
                f"business {business_id!r} has {self._max_recent} recent invitations, the most it may "
                "keep; wait for them to close and expire",
                reason="TOO_MANY_INVITATIONS",
            )
        invitee, created = self._users.find_or_create(address)
        if business.member(invitee) is not None:
            raise AlreadyExists(
                f"{address} is already a member of business {business_id!r}", reason="ALREADY_A_MEMBER"
            )
        now = self._now()
        code = NewCode.draw()
        invitation = Invitation(
            id=code.invitation_id,
            business_id=business_id,
            email=address,
            membership=membership,
            invitee=invitee,
            invited_by=principal.subject,
            create_time=now,
            expire_time=now + self._ttl,
            code_hash=code.code_hash,
            user_created=created,
            by_platform=principal.is_machine or self._authz.is_admin(principal),
        )
        self._invitations.create(invitation)
        log.info(
            "invitation %s to business %s created by %s (user %s)",
            invitation.id,
            business_id,
            principal.log_name(),
            "created" if created else "found",
        )
        return invitation, code.code

    # --- accept ------------------------------------------------------------------------

    def accept(self, principal: Principal, code: str) -> tuple[Invitation, Business]:
        """The caller becomes a member; the accepted invitation and the business after it."""
        if not code.strip():
            raise InvalidArgument.field("code", "is required")
        if len(code) > _CODE_MAX:
            raise InvalidArgument.field("code", f"must be at most {_CODE_MAX} characters")
        for attempt in range(_ACCEPT_ATTEMPTS):
            invitation = self._redeemable(principal, code)
            business = self._joinable(invitation, principal)
            now = self._now()
            accepted = replace(
                invitation, state=InvitationState.ACCEPTED, close_time=now, closed_by=principal.subject
            )
            members = dict(business.permissions.members)
            members[principal.subject] = invitation.membership
            joined = replace(business, permissions=replace(business.permissions, members=members))
            try:
                saved = self._invitations.accept(accepted, business=joined, previous=business)
            except Aborted:
                # The business or the invitation changed meanwhile: read both again, and answer
                # from what they say now (used, revoked) or try again.
                self._cache.invalidate(business.id)
                if attempt == _ACCEPT_ATTEMPTS - 1:
                    raise
                continue
            self._cache.put(saved)
            log.info("invitation %s accepted by %s", invitation.id, principal.log_name())
            return accepted, saved
        raise AssertionError("unreachable")  # pragma: no cover

    def _redeemable(self, principal: Principal, code: str) -> Invitation:
        """The invitation this code opens, for this caller, still pending; else the precise error."""
        parsed = parse_code(code)
        found = self._invitations.get(parsed[0]) if parsed else None
        if parsed is None or found is None or not found.matches(parsed[1]):
            # One answer for malformed, unknown and wrong-secret codes: nothing to probe.
            raise NotFound("no invitation has this code", reason="INVITATION_NOT_FOUND")
        if principal.is_machine or principal.subject != found.invitee:
            raise PermissionDenied(
                "this invitation is for another user; sign in as the invited person "
                f"({_masked(found.email)})",
                reason="INVITATION_WRONG_USER",
            )
        state = found.state_at(self._now())
        if state is InvitationState.REVOKED:
            raise FailedPrecondition("this invitation was revoked", reason="INVITATION_REVOKED")
        if state is InvitationState.ACCEPTED:
            raise FailedPrecondition("this invitation was already used", reason="INVITATION_USED")
        if state is InvitationState.EXPIRED:
            raise FailedPrecondition(
                "this invitation has expired; ask for a new one", reason="INVITATION_EXPIRED"
            )
        return found

    def _joinable(self, invitation: Invitation, principal: Principal) -> Business:
        """The business to join, if the invitation's membership can still be given in it."""
        business = require_live(
            self._store.get(invitation.business_id), invitation.business_id, sees_deleted=False
        )
        if business.member(principal.subject) is not None:
            raise AlreadyExists(
                f"you are already a member of business {business.id!r}", reason="ALREADY_A_MEMBER"
            )
        self._still_grantable(invitation, business)
        if len(business.permissions.members) >= MAX_MEMBERS:
            raise FailedPrecondition(f"a business has at most {MAX_MEMBERS} members")
        return business

    def _still_grantable(self, invitation: Invitation, business: Business) -> None:
        """The invitation's membership can still be given, by its inviter as they are today.

        The same checks as when it was created (a member's ``admin.members:update`` and the one
        escalation check): a manager who lost those rights since cannot grant through their old
        invitations what they could not grant now. Roles and locations must still exist.
        """
        inviter = Principal(
            subject=invitation.invited_by,
            # A platform inviter acts as a machine client would: no member rights to re-check.
            username="" if invitation.by_platform else invitation.invited_by,
            token_use="access",  # noqa: S106 - the token kind, not a password
            client_id="",
        )
        try:
            if not invitation.by_platform:
                self._authz.require_business_write(inviter, business, business.id, perm.MEMBERS_UPDATE)
            self._businesses.check_grant(inviter, business, invitation.membership)
        except PermissionDenied as exc:
            raise FailedPrecondition(
                f"the member who invited you can no longer grant role {invitation.membership.role!r}; "
                "ask for a new invitation",
                reason="INVITER_NOT_ALLOWED",
            ) from exc

    # --- list / revoke -----------------------------------------------------------------

    def list(self, principal: Principal, business_id: str, *, size: int, page_token: str) -> InvitationPage:
        v = Violations()
        check_business_id(v, "business_id", business_id)
        resolved = page_size(v, "page_size", size)
        if len(page_token) > 1024:
            v.add("page_token", "is not a token this service issued")
        v.raise_if_any()
        self.require_members_visible(principal, business_id)
        return self._invitations.list(business_id, page_size=resolved, page_token=page_token)

    def require_members_visible(self, principal: Principal, business_id: str) -> Business:
        """The business, if ``principal`` may see who belongs to it (ListInvitations, ListMembers)."""
        business = self._authz.require_business_read(principal, self._store.get(business_id), business_id)
        if not self._authz.may_see_members(principal, business):
            raise PermissionDenied(
                f"your role does not grant {perm.MEMBERS_READ!r} in business {business_id!r}",
                reason="MISSING_PERMISSION",
                metadata={"permission": perm.MEMBERS_READ},
            )
        return business

    def revoke(self, principal: Principal, business_id: str, invitation_id: str) -> Invitation:
        v = Violations()
        check_business_id(v, "business_id", business_id)
        if not invitation_id:
            v.add("invitation_id", "is required")
        elif not is_invitation_id(invitation_id):
            v.add("invitation_id", "is not an invitation id this service issued")
        v.raise_if_any()
        business = self._authz.require_business_write(
            principal, self._store.get(business_id), business_id, perm.MEMBERS_UPDATE
        )
        found = self._invitations.get(invitation_id)
        if found is None or found.business_id != business_id:
            raise NotFound(
                f"invitation {invitation_id!r} not found in business {business_id!r}",
                reason="INVITATION_NOT_FOUND",
            )
        self._authz.require_within_own_role(
            principal, business, found.membership.role, target=f"invitation {invitation_id}"
        )
        if found.state is InvitationState.ACCEPTED:
            raise FailedPrecondition("the invitation was already accepted", reason="INVITATION_USED")
        if found.state is InvitationState.REVOKED:
            raise FailedPrecondition("the invitation was already revoked", reason="INVITATION_REVOKED")
        revoked = replace(
            found, state=InvitationState.REVOKED, close_time=self._now(), closed_by=principal.subject
        )
        try:
            self._invitations.close(revoked)
        except Aborted:
            # Accepted (or revoked) by someone else meanwhile: say which.
            return self.revoke(principal, business_id, invitation_id)
        log.info("invitation %s revoked by %s", invitation_id, principal.log_name())
        return revoked


def _masked(email: str) -> str:
    """``j***@example.com``: enough for the right person to recognise, little for anyone else."""
    name, _, domain = email.partition("@")
    return f"{name[:1]}***@{domain}"
