"""Who may do what (DESIGN §7): platform admins, machine clients by scope, people as members.

One module decides for all three services:

- **Platform admins** — people in the Cognito group ``admin_group``, or machine clients with
  the ``simplu/admin`` scope — may do everything, ShardAdmin included, and see deleted businesses.
- **Machine clients** (client-credentials access tokens, no username) act by OAuth scopes:
  ``simplu/businesses.read`` / ``.write`` and ``simplu/resources.read`` / ``.write`` across every
  business (``write`` implies ``read``). Scopes on a person's token grant nothing: a person acts
  only as a member.
- **People** act in a business only as a member listed in its permissions: the role's
  permission strings (``domain.auth.permissions``: ``"<resource_type>:<action>"`` for resources,
  ``"admin.<area>:<action>"`` for administration, ``"*"``) say what, the member's
  ``location_ids`` say where (empty: every location). Business-wide changes
  (``require_business_write`` with no location) need a membership that covers every location.
  Who else belongs to a business (members' Cognito subs, the owner's) is shown only to those
  who may manage members (``as_seen_by``).

Permission is checked before existence: a caller who is not a member gets PERMISSION_DENIED
whether or not the business exists, so ids of other tenants reveal nothing. Only once the
caller is allowed does a missing or deleted business answer, by one rule (``require_live``)
for every service: missing is NOT_FOUND; soft-deleted is NOT_FOUND for whoever cannot see
deleted businesses (members, machine clients) and FAILED_PRECONDITION / BUSINESS_DELETED for
platform admins, who still read it and so must be told why they cannot act on it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from simplu_grpc.domain.auth.permissions import (
    ALL_PERMISSIONS,
    MEMBERS_DELETE,
    MEMBERS_READ,
    MEMBERS_UPDATE,
    grants,
)
from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.domain.business.model import Business, Location, Member
from simplu_grpc.errors import FailedPrecondition, NotFound, PermissionDenied

SCOPE_BUSINESSES_READ = "simplu/businesses.read"
SCOPE_BUSINESSES_WRITE = "simplu/businesses.write"
SCOPE_RESOURCES_READ = "simplu/resources.read"
SCOPE_RESOURCES_WRITE = "simplu/resources.write"
SCOPE_ADMIN = "simplu/admin"

READ = "read"
BUSINESS_DELETED: Final = "BUSINESS_DELETED"


@dataclass(frozen=True, slots=True, kw_only=True)
class Access:
    """What a caller may do in one business (the answer of GetMyAccess)."""

    platform_admin: bool
    role: str = ""
    permissions: tuple[str, ...] = ()
    all_locations: bool = False
    location_ids: tuple[str, ...] = ()

    def may_act_in(self, location_id: str) -> bool:
        return self.all_locations or location_id in self.location_ids


class Authorizer:
    """Authorization decisions; raises PermissionDenied first, then NotFound / FailedPrecondition."""

    def __init__(self, *, admin_group: str) -> None:
        if not admin_group:
            raise ValueError("admin_group must not be empty")
        self._admin_group = admin_group

    # --- platform level ------------------------------------------------------------------

    def is_admin(self, principal: Principal) -> bool:
        if principal.is_machine:
            return SCOPE_ADMIN in principal.scopes
        return self._admin_group in principal.groups

    def require_admin(self, principal: Principal) -> None:
        """ShardAdmin and other operator calls."""
        if not self.is_admin(principal):
            raise PermissionDenied(
                f"requires the {self._admin_group!r} group or the {SCOPE_ADMIN} scope",
                metadata={"required": "admin"},
            )

    def has_scope(self, principal: Principal, *scopes: str) -> bool:
        """A machine client holding any of ``scopes`` (people never act by scope)."""
        return principal.is_machine and any(scope in principal.scopes for scope in scopes)

    def may_list_all_businesses(self, principal: Principal) -> bool:
        return self.is_admin(principal) or self.has_scope(
            principal, SCOPE_BUSINESSES_READ, SCOPE_BUSINESSES_WRITE
        )

    def may_create_business(self, principal: Principal) -> None:
        """Any person (who becomes the owner), platform admins, or businesses.write."""
        if principal.is_machine and not (
            self.is_admin(principal) or self.has_scope(principal, SCOPE_BUSINESSES_WRITE)
        ):
            raise _denied_scope(SCOPE_BUSINESSES_WRITE)

    # --- business level ------------------------------------------------------------------

    def access(self, principal: Principal, business: Business | None) -> Access:
        """What ``principal`` may do in ``business`` (nothing when it is missing or deleted)."""
        if self.is_admin(principal):
            return Access(platform_admin=True, permissions=(ALL_PERMISSIONS,), all_locations=True)
        if principal.is_machine:
            granted: list[str] = []
            if self.has_scope(principal, SCOPE_RESOURCES_READ, SCOPE_RESOURCES_WRITE):
                granted.append("*:read")
            if self.has_scope(principal, SCOPE_RESOURCES_WRITE):
                granted.extend(("*:create", "*:update", "*:delete"))
            return Access(platform_admin=False, permissions=tuple(granted), all_locations=bool(granted))
        member = self._membership(principal, business)
        if member is None or business is None:
            return Access(platform_admin=False)
        return Access(
            platform_admin=False,
            role=member.role,
            permissions=business.role_permissions(member.role),
            all_locations=member.all_locations,
            location_ids=member.location_ids,
        )

    def require_business_read(
        self, principal: Principal, business: Business | None, business_id: str
    ) -> Business:
        """Read business metadata: members, platform admins (deleted too), businesses.read."""
        admin = self.is_admin(principal)
        if not admin:
            if principal.is_machine:
                if not self.has_scope(principal, SCOPE_BUSINESSES_READ, SCOPE_BUSINESSES_WRITE):
                    raise _denied_scope(SCOPE_BUSINESSES_READ)
            elif self._membership(principal, business) is None:
                raise _not_member(business_id)
        if business is not None and not business.is_active and admin:
            return business  # platform admins read deleted businesses
        return require_live(business, business_id, sees_deleted=admin)

    def require_business_write(
        self,
        principal: Principal,
        business: Business | None,
        business_id: str,
        permission: str,
        *,
        location_id: str | None = None,
    ) -> Business:
        """Change a business: ``permission`` is an ``admin.<area>:<action>`` string, or ``"*"``
        (owner only).

        With ``location_id`` the member must be allowed in that location; without it the change
        is business-wide and the membership must cover every location.
        """
        admin = self.is_admin(principal)
        if not admin:
            if principal.is_machine:
                if not self.has_scope(principal, SCOPE_BUSINESSES_WRITE):
                    raise _denied_scope(SCOPE_BUSINESSES_WRITE)
            else:
                self._require_member_permission(principal, business, business_id, permission, location_id)
        return require_live(business, business_id, sees_deleted=admin)

    def require_resource(
        self,
        principal: Principal,
        business: Business | None,
        business_id: str,
        *,
        location_id: str,
        resource_type: str,
        action: str,
    ) -> tuple[Business, Location]:
        """Act on resources of one business location; the business and location must be active."""
        admin = self.is_admin(principal)
        if not admin:
            if principal.is_machine:
                needed = SCOPE_RESOURCES_READ if action == READ else SCOPE_RESOURCES_WRITE
                if not self.has_scope(principal, needed, SCOPE_RESOURCES_WRITE):
                    raise _denied_scope(needed)
            else:
                self._require_member_permission(
                    principal, business, business_id, f"{resource_type}:{action}", location_id
                )
        business = require_live(business, business_id, sees_deleted=admin)
        location = business.location(location_id)
        if location is None:
            raise NotFound(
                f"location {location_id!r} not found in business {business_id!r}", reason="LOCATION_NOT_FOUND"
            )
        if not location.active:
            raise FailedPrecondition(f"location {location_id!r} is inactive", reason="LOCATION_INACTIVE")
        return business, location

    def require_readable_types(
        self,
        principal: Principal,
        business: Business | None,
        business_id: str,
        *,
        location_id: str,
        resource_types: tuple[str, ...],
        all_required: bool,
    ) -> tuple[Business, tuple[str, ...]]:
        """Read several types of one location (a location's change history): each type is
        checked as ``require_resource(..., action=READ)`` would. ``all_required``: every type
        must be readable (the caller named them); otherwise the readable ones are returned and
        only none readable is PERMISSION_DENIED. Permission is decided before existence."""
        readable: list[str] = []
        denied: PermissionDenied | None = None
        for resource_type in resource_types:
            try:
                business, _ = self.require_resource(
                    principal,
                    business,
                    business_id,
                    location_id=location_id,
                    resource_type=resource_type,
                    action=READ,
                )
            except PermissionDenied as exc:
                if all_required:
                    raise
                denied = denied or exc
                continue
            readable.append(resource_type)
        if not readable or business is None:
            raise denied or _not_member(business_id)
        return business, tuple(readable)

    def may_see_members(self, principal: Principal, business: Business) -> bool:
        """Whether ``principal`` sees who belongs to ``business`` (everyone's Cognito sub): platform
        admins, machine clients that may read businesses, members who may read or manage members."""
        if self.is_admin(principal):
            return True
        if principal.is_machine:
            return self.has_scope(principal, SCOPE_BUSINESSES_READ, SCOPE_BUSINESSES_WRITE)
        member = self._membership(principal, business)
        if member is None:
            return False
        granted = business.role_permissions(member.role)
        return any(grants(granted, p) for p in (MEMBERS_READ, MEMBERS_UPDATE, MEMBERS_DELETE))

    def as_seen_by(self, principal: Principal, business: Business) -> Business:
        """``business`` as ``principal`` may see it: without the other members (and the owner's
        sub, unless it is the caller's) for a member who may not see members."""
        if self.may_see_members(principal, business):
            return business
        own = {s: m for s, m in business.permissions.members.items() if s == principal.subject}
        return replace(
            business,
            owner=business.owner if business.owner == principal.subject else "",
            permissions=replace(business.permissions, members=own),
        )

    def require_within_own_role(
        self, principal: Principal, business: Business, role: str, *, target: str = ""
    ) -> None:
        """A person may only hand out permissions they hold themselves, and may only change or
        remove the membership of someone whose role grants nothing beyond their own."""
        if principal.is_machine or self.is_admin(principal):
            return
        caller = self._membership(principal, business)
        mine = business.role_permissions(caller.role) if caller else ()
        for permission in business.role_permissions(role):
            if not grants(mine, permission):
                whose = f"the membership of {target!r} (role {role!r})" if target else f"role {role!r}"
                raise PermissionDenied(
                    f"{whose} grants {permission!r}, which your own role does not have",
                    reason="ESCALATION",
                )

    # --- helpers -----------------------------------------------------------------------

    @staticmethod
    def _membership(principal: Principal, business: Business | None) -> Member | None:
        if business is None or principal.is_machine:
            return None
        return business.member(principal.subject)

    def _require_member_permission(
        self,
        principal: Principal,
        business: Business | None,
        business_id: str,
        permission: str,
        location_id: str | None,
    ) -> None:
        member = self._membership(principal, business)
        if member is None or business is None:
            raise _not_member(business_id)
        if not grants(business.role_permissions(member.role), permission):
            raise PermissionDenied(
                f"role {member.role!r} does not grant {permission!r} in business {business_id!r}",
                reason="MISSING_PERMISSION",
                metadata={"permission": permission},
            )
        if location_id is None:
            if not member.all_locations:
                raise PermissionDenied(
                    f"{permission!r} applies to the whole business; your membership is limited to "
                    "some locations",
                    reason="LOCATION_NOT_ALLOWED",
                    metadata={"permission": permission},
                )
        elif not member.may_act_in(location_id):
            raise PermissionDenied(
                f"your membership does not include location {location_id!r}",
                reason="LOCATION_NOT_ALLOWED",
                metadata={"location_id": location_id},
            )


def require_live(business: Business | None, business_id: str, *, sees_deleted: bool) -> Business:
    """The business to act on, or the one answer every service gives when there is none.

    Missing: NOT_FOUND. Soft-deleted: FAILED_PRECONDITION / BUSINESS_DELETED for a caller who
    ``sees_deleted`` businesses (platform admins: GetBusiness shows it to them as DELETED, so
    "not found" would be a lie), NOT_FOUND for everyone else (for members it is gone).
    """
    if business is None:
        raise _not_found(business_id)
    if not business.is_active:
        if sees_deleted:
            raise FailedPrecondition(
                f"business {business_id!r} is deleted",
                reason=BUSINESS_DELETED,
                metadata={"business_id": business_id},
            )
        raise _not_found(business_id)
    return business


def _not_member(business_id: str) -> PermissionDenied:
    # Same words whether the business exists or not: nothing leaks about other tenants.
    return PermissionDenied(f"not a member of business {business_id!r}", reason="NOT_A_MEMBER")


def _denied_scope(scope: str) -> PermissionDenied:
    return PermissionDenied(f"requires the {scope} scope", reason="MISSING_SCOPE", metadata={"scope": scope})


def _not_found(business_id: str) -> NotFound:
    return NotFound(f"business {business_id!r} not found", reason="BUSINESS_NOT_FOUND")
