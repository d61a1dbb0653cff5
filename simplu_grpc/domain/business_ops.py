"""BusinessService behaviour: validate, authorize, read-modify-write with etags, register with Citrus.

Every write reads the business (strongly consistent), checks permission before existence,
checks the caller's etag, applies the change to an immutable copy and writes it back on
the condition that nobody else wrote in between (``BusinessStore.update``). A conflict with
a caller-supplied etag is ABORTED; without an etag the change is simply re-applied to the
fresh copy (up to three times), since the caller asked for "this change", not "this version".

Citrus registration happens after the business is saved, so a Citrus outage never loses a
business: locations not yet registered are kept in ``unregistered_location_ids`` and retried
(idempotently) on the next create retry, AddLocation or UpdateLocation, or by ShardAdmin.
"""

from __future__ import annotations

import builtins
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from simplu_grpc import context as rpc_context
from simplu_grpc.domain import permissions as perm
from simplu_grpc.domain.authz import Access, Authorizer
from simplu_grpc.domain.business import (
    OWNER_ROLE,
    Business,
    BusinessPage,
    BusinessSettings,
    BusinessStatus,
    BusinessType,
    CreateOutcome,
    Location,
    Member,
    Permissions,
    Role,
    request_key,
)
from simplu_grpc.domain.business_cache import BusinessCache
from simplu_grpc.domain.domain_labels import check_domain_label
from simplu_grpc.domain.permissions import ALL_PERMISSIONS
from simplu_grpc.domain.principal import Principal
from simplu_grpc.domain.resources import KNOWN_RESOURCE_TYPES, REQUEST_ID_PATTERN, catalog_types
from simplu_grpc.domain.shards import ShardAssignment
from simplu_grpc.domain.validation import (
    MAX_LOCATIONS,
    MAX_MEMBERS,
    NAME_MAX,
    Violations,
    check_business_id,
    check_id,
    check_location,
    check_member,
    check_new_business,
    check_roles,
    check_settings,
    check_subject,
    check_text,
    page_size,
)
from simplu_grpc.errors import (
    Aborted,
    AlreadyExists,
    CitrusUnavailable,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SimpluError,
)

log = logging.getLogger(__name__)

_WRITE_ATTEMPTS = 3

BUSINESS_PATHS = ("name", "settings", "permissions.roles", "domain_label")
# What an empty UpdateBusiness mask updates when populated (AIP-134); roles only when named.
_POPULATED_BUSINESS_PATHS = ("name", "settings", "domain_label")
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
LOCATION_PATHS = ("name", "address", "phone", "email", "timezone", "active")
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
_IGNORED_LOCATION_PATHS = frozenset({"id"})


class BusinessRepository(Protocol):
    """The business store port (``adapters.business_store.BusinessStore`` implements it)."""

    def get(self, business_id: str, *, consistent: bool = True) -> Business | None: ...

    def create(self, business: Business, *, request_key: str | None = None) -> CreateOutcome: ...

    def update(self, business: Business, *, previous: Business) -> Business:
        """Write ``business`` over ``previous`` (the stored business it changes, same version)."""
        ...

    def list(
        self, *, page_size: int, page_token: str, member: str | None, include_deleted: bool
    ) -> BusinessPage: ...


class Registrar(Protocol):
    """The part of the Citrus client registration needs."""

    def register(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment: ...


@dataclass(frozen=True, slots=True)
class Registered:
    """A business after a write that registers locations, and those Citrus has not taken yet."""

    business: Business
    unregistered_location_ids: tuple[str, ...]


def new_business_id() -> str:
    """32 hex characters: unguessable, collision-free, and never a ``-``."""
    return uuid.uuid4().hex


class BusinessOps:
    """The BusinessService use cases, independent of protobuf."""

    def __init__(
        self,
        *,
        store: BusinessRepository,
        cache: BusinessCache,
        authorizer: Authorizer,
        citrus: Registrar | None,
        id_factory: Callable[[], str] = new_business_id,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._cache = cache
        self._authz = authorizer
        self._citrus = citrus
        self._new_id = id_factory
        self._now = clock

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
        if request_id and not REQUEST_ID_PATTERN.fullmatch(request_id):
            v.add("request_id", "must be 1-128 characters of A-Z a-z 0-9 _ . : - (a UUID is ideal)")
        check_new_business(v, "business", draft)
        label = check_domain_label(v, "business.domain_label", draft.domain_label)
        v.raise_if_any()
        self._authz.may_create_business(principal)

        business = self._with_owner(principal, draft)
        business = replace(
            business,
            id=business_id or self._new_id(),
            status=BusinessStatus.ACTIVE,
            locations=tuple(replace(loc, active=True) for loc in business.locations),
            domain_label=label,
            delete_time=None,
            purge_start_time=None,
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
        if business is not None and business.is_deleted and not admin:
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
        domain_label: str = "",
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
        mask = _mask(
            v,
            "update_mask",
            given,
            (*BUSINESS_PATHS, *_IMMUTABLE_BUSINESS_PATHS),
            refused=refused,
            ignored=_IGNORED_BUSINESS_PATHS,
        )
        if not given:
            populated = {
                "name": bool(name),
                "settings": settings is not None,
                "domain_label": bool(domain_label),
            }
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
        label = check_domain_label(v, "business.domain_label", domain_label) if "domain_label" in mask else ""
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
            if "domain_label" in mask:
                updated = replace(updated, domain_label=label)
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
        mask = _mask(v, "update_mask", paths, SETTINGS_PATHS, refused={}, ignored=frozenset())
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
            change=lambda business: replace(business, status=BusinessStatus.DELETED, delete_time=self._now()),
        )
        return deleted

    # --- locations ---------------------------------------------------------------------

    def add_location(
        self,
        principal: Principal,
        business_id: str,
        location: Location,
        *,
        etag: str,
        violations: Violations | None = None,
    ) -> Registered:
        v = Violations() if violations is None else violations
        check_business_id(v, "business_id", business_id)
        check_location(v, "location", location)
        v.raise_if_any()
        added = replace(location, active=True)

        def change(business: Business) -> Business:
            if business.location(added.id) is not None:
                raise AlreadyExists(
                    f"location {added.id!r} already exists in business {business_id!r}",
                    reason="LOCATION_EXISTS",
                )
            if len(business.locations) >= MAX_LOCATIONS:
                raise FailedPrecondition(f"a business has at most {MAX_LOCATIONS} locations")
            updated = business.with_location(added)
            if self._citrus is not None:
                updated = updated.with_unregistered((*business.unregistered_location_ids, added.id))
            return updated

        business = self._mutate(
            principal, business_id, etag, perm.LOCATIONS_CREATE, location_id=None, change=change
        )
        return self.register_pending(business)

    def update_location(
        self,
        principal: Principal,
        business_id: str,
        location: Location,
        *,
        etag: str,
        paths: Iterable[str],
        violations: Violations | None = None,
    ) -> Registered:
        v = Violations() if violations is None else violations
        check_business_id(v, "business_id", business_id)
        check_id(v, "location.id", location.id)
        given = list(paths)
        fields = _mask(v, "update_mask", given, LOCATION_PATHS, refused={}, ignored=_IGNORED_LOCATION_PATHS)
        if not given:
            # AIP-134: an empty mask updates the populated fields. proto3 cannot tell an unset
            # string or bool from "" / false, so clearing a field or deactivating takes a mask.
            fields = tuple(path for path in LOCATION_PATHS if getattr(location, path) not in ("", False))
            if not fields:
                v.add(
                    "update_mask",
                    "is empty and location has no populated field besides id: nothing to update",
                )
        v.raise_if_any()

        def change(business: Business) -> Business:
            current = _existing_location(business, location.id)
            merged = replace(current, **{path: getattr(location, path) for path in fields})
            check = Violations()
            check_location(check, "location", merged)
            check.raise_if_any()
            return business.with_location(merged)

        business = self._mutate(
            principal, business_id, etag, perm.LOCATIONS_UPDATE, location_id=location.id, change=change
        )
        return self.register_pending(business)

    def remove_location(
        self, principal: Principal, business_id: str, location_id: str, *, etag: str
    ) -> Business:
        v = Violations()
        check_business_id(v, "business_id", business_id)
        check_id(v, "location_id", location_id)
        v.raise_if_any()

        def change(business: Business) -> Business:
            return business.with_location(replace(_existing_location(business, location_id), active=False))

        return self._mutate(
            principal, business_id, etag, perm.LOCATIONS_DELETE, location_id=location_id, change=change
        )

    # --- members -----------------------------------------------------------------------

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
            self._forbid_escalation(principal, business, membership.role)
            current = business.member(subject)
            if current is not None:
                # Changing someone's membership is acting on their role: no demoting a superior.
                self._forbid_escalation(principal, business, current.role, target=subject)
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
            self._forbid_escalation(
                principal, business, business.permissions.members[subject].role, target=subject
            )
            members = {s: m for s, m in business.permissions.members.items() if s != subject}
            return replace(business, permissions=replace(business.permissions, members=members))

        return self._mutate(
            principal, business_id, etag, perm.MEMBERS_DELETE, location_id=None, change=change
        )

    # --- Citrus registration ---------------------------------------------------------------

    def register_pending(self, business: Business) -> Registered:
        """Register every active location Citrus has not taken yet; record what succeeded.

        Stops at the first Citrus failure (Citrus is then most likely down, and each call
        already retried within the deadline); the rest stay pending. Registration is
        idempotent at Citrus, so a location registered twice is still registered once.
        """
        pending = tuple(business.unregistered_location_ids)
        if self._citrus is None or not pending or business.is_deleted:
            return Registered(business, pending if self._citrus is not None else ())
        done = self._register(business, pending)
        if not done:
            return Registered(business, pending)
        remaining = tuple(lid for lid in pending if lid not in done)
        try:
            saved = self._store.update(business.with_unregistered(remaining), previous=business)
        except Aborted:
            # Someone changed the business meanwhile; their copy still lists these locations,
            # and registering them again later is harmless (idempotent).
            self._cache.invalidate(business.id)
            return Registered(business, remaining)
        self._cache.put(saved)
        return Registered(saved, remaining)

    def note_registered(self, business_id: str, location_id: str) -> None:
        """Record that someone else (ShardAdmin.RegisterLocation, a lazy registration on first
        resource use) registered a location; best effort, since re-registering is harmless."""
        business = self._store.get(business_id)
        if business is None or location_id not in business.unregistered_location_ids:
            return
        remaining = tuple(lid for lid in business.unregistered_location_ids if lid != location_id)
        try:
            self._cache.put(self._store.update(business.with_unregistered(remaining), previous=business))
        except Aborted:
            self._cache.invalidate(business_id)

    def _register(self, business: Business, pending: tuple[str, ...]) -> tuple[str, ...]:
        """Register what it can; the ids that Citrus took."""
        if self._citrus is None:
            return ()
        # Keep part of the deadline for saving the outcome and answering: a slow Citrus must
        # not turn a saved business into a DEADLINE_EXCEEDED for the caller.
        outer = rpc_context.deadline()
        reserve = min(1.0, 0.25 * outer.remaining())
        done: builtins.list[str] = []
        with rpc_context.bind(deadline=rpc_context.Deadline(outer.expires_at - reserve)):
            for location_id in pending:
                location = business.location(location_id)
                if location is None or not location.active:
                    continue
                try:
                    self._citrus.register(business.id, location_id, business.type.value)
                except CitrusUnavailable as exc:
                    log.warning(
                        "citrus registration of %s/%s deferred: %s", business.id, location_id, exc.message
                    )
                    break
                done.append(location_id)
        return tuple(done)

    # --- helpers -----------------------------------------------------------------------

    def _mutate(
        self,
        principal: Principal,
        business_id: str,
        etag: str,
        permission: str | tuple[str, ...],
        *,
        location_id: str | None,
        change: Callable[[Business], Business],
    ) -> Business:
        permissions = (permission,) if isinstance(permission, str) else permission

        def allowed(found: Business | None) -> Business:
            for needed in permissions:
                business = self._authz.require_business_write(
                    principal, found, business_id, needed, location_id=location_id
                )
            return business

        return self.rewrite(business_id, etag, allowed, change)

    def rewrite(
        self,
        business_id: str,
        etag: str,
        allowed: Callable[[Business | None], Business],
        change: Callable[[Business], Business],
    ) -> Business:
        """Read (strongly consistent), let ``allowed`` decide on what was read (permission, then
        existence and state; it answers the business to change), check the caller's etag, write
        ``change`` of it conditional on the version read. With an etag a conflict is ABORTED;
        without, everything is decided again on a fresh read (up to three times)."""
        for attempt in range(_WRITE_ATTEMPTS):
            business = allowed(self._store.get(business_id))
            if etag and etag != business.etag:
                raise Aborted(
                    f"etag {etag!r} is not the current one for business {business_id!r}; read it again",
                    metadata={"business_id": business_id, "current_etag": business.etag},
                )
            changed = change(business)
            if changed == business:
                return business
            try:
                saved = self._store.update(changed, previous=business)
            except Aborted:
                self._cache.invalidate(business_id)
                if etag or attempt == _WRITE_ATTEMPTS - 1:
                    raise
                continue
            self._cache.put(saved)
            return saved
        raise AssertionError("unreachable")  # pragma: no cover

    def _forbid_escalation(
        self, principal: Principal, business: Business, role: str, *, target: str = ""
    ) -> None:
        """A person may only hand out permissions they hold themselves, and may only change or
        remove the membership of someone whose role grants nothing beyond their own."""
        if principal.is_machine or self._authz.is_admin(principal):
            return
        caller = business.member(principal.subject)
        mine = business.role_permissions(caller.role) if caller else ()
        for permission in business.role_permissions(role):
            if not perm.permits(mine, permission):
                whose = f"the membership of {target!r} (role {role!r})" if target else f"role {role!r}"
                raise PermissionDenied(
                    f"{whose} grants {permission!r}, which your own role does not have",
                    reason="ESCALATION",
                )


def _existing_location(business: Business, location_id: str) -> Location:
    found = business.location(location_id)
    if found is None:
        raise NotFound(
            f"location {location_id!r} not found in business {business.id!r}", reason="LOCATION_NOT_FOUND"
        )
    return found


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


def _mask(
    v: Violations,
    field: str,
    paths: Iterable[str],
    allowed: tuple[str, ...],
    *,
    refused: dict[str, str],
    ignored: frozenset[str],
) -> tuple[str, ...]:
    """Validated update-mask paths in canonical order, ``ignored`` ones left out; empty when the
    mask is empty (or names only ignored paths)."""
    given = list(paths)
    for index, path in enumerate(given):
        if path in ignored:
            continue
        if path in refused:
            v.add(f"{field}.paths[{index}]", f"{path!r} cannot be updated: {refused[path]}")
        elif path not in allowed:
            v.add(f"{field}.paths[{index}]", f"unknown path {path[:64]!r}; allowed: {', '.join(allowed)}")
    return tuple(path for path in allowed if path in given)


def probe_check(probe: Callable[[], None], *, seconds: float = 2.0) -> Callable[[], bool]:
    """A readiness check from an adapter's ``probe``: True when it answers within ``seconds``.

    Never raises (the readiness loop must keep going); the probe runs under its own short
    deadline so a slow dependency cannot stall the loop for a whole RPC deadline.
    """

    def check() -> bool:
        try:
            with rpc_context.bind(deadline=rpc_context.Deadline.after(seconds)):
                probe()
        except Exception as exc:
            log.info("readiness probe %s failed: %s", getattr(probe, "__qualname__", probe), exc)
            return False
        return True

    return check
