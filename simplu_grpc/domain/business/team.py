"""A business's people: ListMembers and TransferOwnership.

The owner is the member whose ``sub`` is ``Business.owner``; their role holds ``"*"`` (kept so by
UpdateBusiness's roles path). Only the owner (or a platform admin) hands the business over, to
someone who is already a member (invited first): the new owner takes the owner's role, the
previous owner keeps the role they choose, in every location.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from simplu_grpc.domain.auth.authz import Authorizer
from simplu_grpc.domain.auth.permissions import ALL_PERMISSIONS
from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.domain.business.commands import BusinessOps
from simplu_grpc.domain.business.invitation_model import after_token, read_after_token
from simplu_grpc.domain.business.invitations import InvitationOps
from simplu_grpc.domain.business.model import Business, Member
from simplu_grpc.domain.business.validation import check_subject, page_size
from simplu_grpc.domain.checks import Violations, check_business_id
from simplu_grpc.errors import FailedPrecondition, InvalidArgument, PermissionDenied


@dataclass(frozen=True, slots=True)
class TeamMember:
    subject: str
    membership: Member
    owner: bool


@dataclass(frozen=True, slots=True)
class MemberPage:
    members: list[TeamMember]
    next_token: str


class TeamOps:
    """ListMembers and TransferOwnership, on top of the business use cases."""

    def __init__(
        self, *, businesses: BusinessOps, invitations: InvitationOps, authorizer: Authorizer
    ) -> None:
        self._businesses = businesses
        self._invitations = invitations
        self._authz = authorizer

    def list_members(
        self, principal: Principal, business_id: str, *, size: int, page_token: str
    ) -> MemberPage:
        """Members by subject, for those who may see members (see ``Authorizer.may_see_members``)."""
        v = Violations()
        check_business_id(v, "business_id", business_id)
        resolved = page_size(v, "page_size", size)
        v.raise_if_any()
        after = read_after_token(page_token, business_id) if page_token else ""
        business = self._invitations.require_members_visible(principal, business_id)
        subjects = sorted(s for s in business.permissions.members if s > after)
        shown = subjects[:resolved]
        members = [TeamMember(s, business.permissions.members[s], owner=s == business.owner) for s in shown]
        more = len(subjects) > len(shown)
        return MemberPage(members, after_token(shown[-1], business_id) if more else "")

    def transfer_ownership(
        self, principal: Principal, business_id: str, new_owner: str, previous_owner_role: str, *, etag: str
    ) -> Business:
        v = Violations()
        check_business_id(v, "business_id", business_id)
        check_subject(v, "new_owner", new_owner)
        if not previous_owner_role:
            v.add("previous_owner_role", "is required")
        v.raise_if_any()
        admin = self._authz.is_admin(principal)

        def change(business: Business) -> Business:
            if not admin and principal.subject != business.owner:
                raise PermissionDenied(
                    f"only the owner of business {business_id!r} may transfer it", reason="NOT_OWNER"
                )
            if new_owner == business.owner:
                raise InvalidArgument.field("new_owner", "is already the owner")
            if business.member(new_owner) is None:
                raise FailedPrecondition(
                    f"{new_owner!r} is not a member of business {business_id!r}; invite them first",
                    reason="NEW_OWNER_NOT_MEMBER",
                )
            if previous_owner_role not in business.permissions.roles:
                raise FailedPrecondition(
                    f"role {previous_owner_role!r} is not defined in business {business_id!r}",
                    reason="ROLE_NOT_FOUND",
                )
            members = dict(business.permissions.members)
            owner_role = _owner_role(business)
            members[new_owner] = Member(role=owner_role)
            if business.owner in members:
                members[business.owner] = Member(role=previous_owner_role)
            return replace(
                business, owner=new_owner, permissions=replace(business.permissions, members=members)
            )

        # "*" is the owner role's permission: anyone without it is refused before existence.
        return self._businesses.mutate(principal, business_id, etag, ALL_PERMISSIONS, change=change)


def _owner_role(business: Business) -> str:
    """The role the new owner takes: the current owner's (it holds "*"), else any role with "*"."""
    current = business.member(business.owner)
    if current is not None and ALL_PERMISSIONS in business.role_permissions(current.role):
        return current.role
    for name, role in sorted(business.permissions.roles.items()):
        if ALL_PERMISSIONS in role.permissions:
            return name
    raise FailedPrecondition(f"business {business.id!r} has no role with '*' for its owner")
