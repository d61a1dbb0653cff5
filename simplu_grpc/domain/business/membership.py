"""SetMember and RemoveMember: who belongs to a business, without handing out more than one holds."""

from __future__ import annotations

from dataclasses import replace

from simplu_grpc.domain.auth import permissions as perm
from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.domain.business.model import Business, Member
from simplu_grpc.domain.business.validation import MAX_MEMBERS, check_member, check_subject
from simplu_grpc.domain.business.writes import BusinessWriter
from simplu_grpc.domain.checks import Violations, check_business_id
from simplu_grpc.errors import FailedPrecondition, NotFound


class MembershipCommands(BusinessWriter):
    """The membership use cases; escalation is refused by ``Authorizer.require_within_own_role``."""

    def set_member(
        self,
        principal: Principal,
        business_id: str,
        subject: str,
        membership: Member,
        *,
        etag: str,
        violations: Violations | None = None,
    ) -> Business:
        v = Violations() if violations is None else violations
        check_business_id(v, "business_id", business_id)
        check_subject(v, "member", subject)
        check_member(v, "membership", membership)
        v.raise_if_any()

        def change(business: Business) -> Business:
            if subject == business.owner and business.member(subject) is not None:
                raise FailedPrecondition(
                    "the owner's membership cannot be changed", reason="OWNER_MEMBERSHIP"
                )
            if membership.role not in business.permissions.roles:
                raise FailedPrecondition(
                    f"role {membership.role!r} is not defined in business {business_id!r}",
                    reason="ROLE_NOT_FOUND",
                )
            for location_id in membership.location_ids:
                if business.location(location_id) is None:
                    raise FailedPrecondition(
                        f"location {location_id!r} is not in business {business_id!r}",
                        reason="LOCATION_NOT_FOUND",
                    )
            self._authz.require_within_own_role(principal, business, membership.role)
            current = business.member(subject)
            if current is not None:
                # Changing someone's membership is acting on their role: no demoting a superior.
                self._authz.require_within_own_role(principal, business, current.role, target=subject)
            members = dict(business.permissions.members)
            if subject not in members and len(members) >= MAX_MEMBERS:
                raise FailedPrecondition(f"a business has at most {MAX_MEMBERS} members")
            members[subject] = membership
            return replace(business, permissions=replace(business.permissions, members=members))

        return self._mutate(
            principal, business_id, etag, perm.MEMBERS_UPDATE, location_id=None, change=change
        )

    def remove_member(self, principal: Principal, business_id: str, subject: str, *, etag: str) -> Business:
        v = Violations()
        check_business_id(v, "business_id", business_id)
        check_subject(v, "member", subject)
        v.raise_if_any()

        def change(business: Business) -> Business:
            if business.member(subject) is None:
                raise NotFound(
                    f"{subject!r} is not a member of business {business_id!r}", reason="MEMBER_NOT_FOUND"
                )
            if subject == business.owner:
                raise FailedPrecondition("the owner cannot be removed", reason="OWNER_MEMBERSHIP")
            self._authz.require_within_own_role(
                principal, business, business.permissions.members[subject].role, target=subject
            )
            members = {s: m for s, m in business.permissions.members.items() if s != subject}
            return replace(business, permissions=replace(business.permissions, members=members))

        return self._mutate(
            principal, business_id, etag, perm.MEMBERS_DELETE, location_id=None, change=change
        )
