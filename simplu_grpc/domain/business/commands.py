"""BusinessService use cases: create, read, list, update, settings, delete; ``BusinessOps`` joins them.

``BusinessOps`` is the one object the servicer calls: the business-wide use cases here, the
location ones (``locations``), the membership ones (``membership``) and the Citrus bookkeeping
(``registration``), all writing through the one read-modify-write loop (``writes``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace

from simplu_grpc.domain.auth import permissions as perm
from simplu_grpc.domain.auth.authz import Access
from simplu_grpc.domain.auth.permissions import ALL_PERMISSIONS
from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.domain.business.locations import LocationCommands
from simplu_grpc.domain.business.membership import MembershipCommands
from simplu_grpc.domain.business.model import (
    OWNER_ROLE,
    Business,
    BusinessPage,
    BusinessSettings,
    BusinessStatus,
    BusinessType,
    Member,
    Permissions,
    Role,
    request_key,
)
from simplu_grpc.domain.business.registration import Registered
from simplu_grpc.domain.business.validation import (
    NAME_MAX,
    check_new_business,
    check_roles,
    check_settings,
    check_update_mask,
    page_size,
)
from simplu_grpc.domain.checks import (
    Violations,
    check_business_id,
    check_id,
    check_request_id,
    check_text,
)
from simplu_grpc.domain.resources.catalog import KNOWN_RESOURCE_TYPES, catalog_types
from simplu_grpc.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    SimpluError,
)

log = logging.getLogger(__name__)

BUSINESS_PATHS = ("name", "settings", "permissions.roles")
# What an empty UpdateBusiness mask updates when populated (AIP-134); roles only when named.
_POPULATED_BUSINESS_PATHS = ("name", "settings")
SETTINGS_PATHS = (
    "currency",
    "language",
    "timezone",
    "date_format",
    "time_format",
    "working_hours",
    "features",
    "extras",
)
# Paths UpdateBusiness refuses: these fields change through other RPCs.
_REFUSED_BUSINESS_PATHS = {
    "locations": "use AddLocation, UpdateLocation and RemoveLocation",
    "permissions.members": "use SetMember and RemoveMember",
    "permissions": "name permissions.roles; members change through SetMember and RemoveMember",
}
# Paths ignored in an update mask (AIP-203): the OUTPUT_ONLY fields, the etag (checked, never
# written) and the IDENTIFIER, which names the business and so cannot differ.
_IGNORED_BUSINESS_PATHS = frozenset({"id", "status", "owner", "etag", "create_time", "update_time"})
# IMMUTABLE (AIP-203): accepted in a mask with the current value only.
_IMMUTABLE_BUSINESS_PATHS = ("type",)


class BusinessOps(LocationCommands, MembershipCommands):
    """The BusinessService use cases, independent of protobuf (its constructor: ``BusinessWriter``)."""

    # --- create ------------------------------------------------------------------------

    def create(
        self,
        principal: Principal,
        draft: Business,
        *,
        business_id: str = "",
        request_id: str = "",
        violations: Violations | None = None,
    ) -> Registered:
        v = Violations() if violations is None else violations
        if draft.id and business_id and draft.id != business_id:
            v.add("business.id", "must be empty or equal to business_id")
        elif draft.id and not business_id:
            check_business_id(v, "business.id", draft.id)
            business_id = draft.id
        elif business_id:
            check_business_id(v, "business_id", business_id)
        check_request_id(v, "request_id", request_id)
        check_new_business(v, "business", draft)
        v.raise_if_any()
        self._authz.may_create_business(principal)

        business = self._with_owner(principal, draft)
        business = replace(
            business,
            id=business_id or self._new_id(),
            status=BusinessStatus.ACTIVE,
            locations=tuple(replace(loc, active=True) for loc in business.locations),
        )
        if self._citrus is not None:
            business = business.with_unregistered(tuple(loc.id for loc in business.locations))
        key = request_key(principal.subject, request_id) if request_id else None
        try:
            outcome = self._store.create(business, request_key=key)
        except AlreadyExists:
            self._deny_unless_visible(principal, business.id)
            raise
        self._cache.put(outcome.business)
        if outcome.replayed:
            log.info("create replayed for request id; business %s", outcome.business.id)
        return self.register_pending(outcome.business)

    def _deny_unless_visible(self, principal: Principal, business_id: str) -> None:
        """A taken id answers ALREADY_EXISTS only to callers who may read that business.

        Anyone else gets the same PERMISSION_DENIED as for any other tenant's id (AIP-133), so a
        client-chosen id cannot be used to probe which businesses exist.
        """
        existing = self._store.get(business_id)
        if existing is None:
            return
        try:
            self._authz.require_business_read(principal, existing, business_id)
        except PermissionDenied:
            raise
        except SimpluError:
            return  # visible to the caller, e.g. a member of a deleted business: ALREADY_EXISTS

    def _with_owner(self, principal: Principal, draft: Business) -> Business:
        """A person who creates a business becomes its owner: a member with the "*" role."""
        if principal.is_machine:
            return replace(draft, owner=principal.subject)
        roles = dict(draft.permissions.roles)
        roles[OWNER_ROLE] = Role(permissions=(ALL_PERMISSIONS,))
        members = dict(draft.permissions.members)
        members[principal.subject] = Member(role=OWNER_ROLE)
        return replace(draft, owner=principal.subject, permissions=Permissions(roles=roles, members=members))

    # --- reads -------------------------------------------------------------------------

    def get(self, principal: Principal, business_id: str) -> Business:
        v = Violations()
        check_business_id(v, "business_id", business_id)
        v.raise_if_any()
        found = self._store.get(business_id)
        business = self._authz.require_business_read(principal, found, business_id)
        self._cache.put(business)
        return business

    def as_seen_by(self, principal: Principal, business: Business) -> Business:
        """What ``principal`` may see of ``business`` (every Business answered goes through this:
        other members' Cognito subs only for those who may see members)."""
        return self._authz.as_seen_by(principal, business)

    def list(self, principal: Principal, *, size: int, page_token: str, show_deleted: bool) -> BusinessPage:
        v = Violations()
        resolved = page_size(v, "page_size", size)
        if len(page_token) > 1024:
            v.add("page_token", "is not a token this service issued")
        v.raise_if_any()
        admin = self._authz.is_admin(principal)
        if show_deleted and not admin:
            raise PermissionDenied("show_deleted is for platform admins", reason="ADMIN_ONLY")
        if self._authz.may_list_all_businesses(principal):
            member = None
        elif principal.is_machine:
            raise PermissionDenied("requires the simplu/businesses.read scope", reason="MISSING_SCOPE")
        else:
            member = principal.subject
        return self._store.list(
            page_size=resolved, page_token=page_token, member=member, include_deleted=show_deleted
        )

    def my_access(self, principal: Principal, business_id: str, location_id: str) -> tuple[Access, bool]:
        """What the caller may do in the business, and (with a location) whether they may act there."""
        v = Violations()
        check_business_id(v, "business_id", business_id)
        if location_id:
            check_id(v, "location_id", location_id)
        v.raise_if_any()
        business = self._cache.get(business_id)
        admin = self._authz.is_admin(principal)
        if business is not None and not business.is_active and not admin:
            business = None
        access = self._authz.access(principal, business)
        location_allowed = False
        if location_id and business is not None:
            location = business.location(location_id)
            location_allowed = (
                location is not None
                and location.active
                and bool(access.permissions)
                and access.may_act_in(location_id)
            )
        return access, location_allowed

    # --- business-wide writes -------------------------------------------------------------

    def update(
        self,
        principal: Principal,
        business_id: str,
        *,
        etag: str,
        paths: Iterable[str],
        name: str,
        settings: BusinessSettings | None,
        roles: dict[str, Role],
        business_type: BusinessType | None = None,
        violations: Violations | None = None,
    ) -> Business:
        """``settings`` None: not given (an empty mask then leaves settings alone; a mask naming
        "settings" clears them). ``business_type`` None: not given; otherwise it must be the
        business's type, since the type is immutable."""
        v = Violations() if violations is None else violations
        check_business_id(v, "business.id", business_id)
        given = list(paths)
        refused = dict(_REFUSED_BUSINESS_PATHS)
        if business_type is None:
            refused["type"] = (
                "it is immutable; name it only with the business's current type, or leave it out"
            )
        mask = check_update_mask(
            v,
            "update_mask",
            given,
            (*BUSINESS_PATHS, *_IMMUTABLE_BUSINESS_PATHS),
            refused=refused,
            ignored=_IGNORED_BUSINESS_PATHS,
        )
        if not given:
            populated = {"name": bool(name), "settings": settings is not None}
            mask = tuple(path for path in _POPULATED_BUSINESS_PATHS if populated[path])
            if not mask and business_type is None:
                v.add(
                    "update_mask",
                    "is empty and neither business.name nor business.settings is populated: "
                    "nothing to update (name the paths to clear a field)",
                )
        new_settings = settings if settings is not None else BusinessSettings()
        if "name" in mask:
            check_text(v, "business.name", name, max_length=NAME_MAX, required=True)
        if "settings" in mask:
            check_settings(v, "business.settings", new_settings)
        if "permissions.roles" in mask:
            # The shape here; the business type's own catalog once the business is read.
            check_roles(v, "business.permissions.roles", roles, KNOWN_RESOURCE_TYPES)
        v.raise_if_any()
        # Changing roles changes what everyone may do: only the owner role ("*") may. Settings
        # need admin.settings:update here too, or UpdateBusiness would bypass
        # UpdateBusinessSettings' rule.
        needed: list[str] = [perm.BUSINESS_UPDATE]
        if "settings" in mask:
            needed.append(perm.SETTINGS_UPDATE)
        if "permissions.roles" in mask:
            needed.append(ALL_PERMISSIONS)
        permission = tuple(needed)

        def change(business: Business) -> Business:
            if business_type is not None and business_type is not business.type:
                raise InvalidArgument.field(
                    "business.type",
                    f"is immutable: business {business_id!r} is {business.type.value!r}, "
                    f"it cannot become {business_type.value!r}",
                )
            updated = business
            if "name" in mask:
                updated = replace(updated, name=name)
            if "settings" in mask:
                updated = replace(updated, settings=new_settings)
            if "permissions.roles" in mask:
                check = Violations()
                check_roles(check, "business.permissions.roles", roles, catalog_types(business.type))
                check.raise_if_any()
                _check_roles_still_cover_members(updated, roles)
                updated = replace(updated, permissions=replace(updated.permissions, roles=dict(roles)))
            return updated

        return self._mutate(principal, business_id, etag, permission, location_id=None, change=change)

    def update_settings(
        self,
        principal: Principal,
        business_id: str,
        *,
        etag: str,
        paths: Iterable[str],
        settings: BusinessSettings,
        violations: Violations | None = None,
    ) -> Business:
        v = Violations() if violations is None else violations
        check_business_id(v, "business_id", business_id)
        mask = check_update_mask(v, "update_mask", paths, SETTINGS_PATHS, refused={}, ignored=frozenset())
        if not mask:
            check_settings(v, "settings", settings)
        v.raise_if_any()

        def change(business: Business) -> Business:
            if not mask:
                return replace(business, settings=settings)
            merged = replace(business.settings, **{path: getattr(settings, path) for path in mask})
            check = Violations()
            check_settings(check, "settings", merged)
            check.raise_if_any()
            return replace(business, settings=merged)

        return self._mutate(
            principal, business_id, etag, perm.SETTINGS_UPDATE, location_id=None, change=change
        )

    def delete(self, principal: Principal, business_id: str, *, etag: str) -> Business:
        v = Violations()
        check_business_id(v, "business_id", business_id)
        v.raise_if_any()
        deleted = self._mutate(
            principal,
            business_id,
            etag,
            ALL_PERMISSIONS,
            location_id=None,
            change=lambda business: replace(business, status=BusinessStatus.DELETED),
        )
        return deleted


def _check_roles_still_cover_members(business: Business, roles: dict[str, Role]) -> None:
    for subject, member in business.permissions.members.items():
        if member.role not in roles:
            raise FailedPrecondition(
                f"role {member.role!r} is still given to members; change their membership first",
                reason="ROLE_IN_USE",
            )
        if subject == business.owner and ALL_PERMISSIONS not in roles[member.role].permissions:
            raise FailedPrecondition(
                f"the owner's role {member.role!r} must keep '*'", reason="OWNER_MEMBERSHIP"
            )
