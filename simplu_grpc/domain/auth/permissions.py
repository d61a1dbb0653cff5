"""Permission strings: their grammar, what grants what, and the reading of legacy role strings.

A role holds permission strings of three kinds:

- ``"*"``: everything (the owner role), including changing roles and deleting the business;
- ``"<resource_type>:<action>"`` with ``<action>`` one of read, create, update, delete or ``*``,
  for a type of the business type's catalog (``"patients:read"``, ``"treatment-plans:*"``);
- ``"admin.<area>:<action>"`` for business administration (``"admin.members:update"``).

Catalog types are lowercase words joined by ``-`` (checked when the catalog loads), so they
never contain ``.`` and no catalog type can ever take an administration string: a gym's
``members:update`` (gym-member records) and ``admin.members:update`` (who belongs to the
business) are different strings that grant different things.

Before administration had its own namespace, roles stored in DynamoDB named it with bare
strings (``members:update``, ``locations:create``, ``business:update``, ``settings:update``).
``upgrade_legacy`` reads such a string as the administration permission only where the
business type's catalog has no type of that name; where it has (a gym's ``members``), the
string keeps its catalog meaning, which grants less, never more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

ALL_PERMISSIONS: Final = "*"
ACTIONS: Final = ("read", "create", "update", "delete")
ADMIN_PREFIX: Final = "admin."


@dataclass(frozen=True, slots=True)
class AdminPermission:
    """One administration permission the server checks, and what it allows."""

    permission: str
    description: str


# The administration areas; each action of an area is a valid string, the ones below are checked.
ADMIN_AREAS: Final = ("business", "settings", "locations", "members")

BUSINESS_UPDATE: Final = "admin.business:update"
SETTINGS_UPDATE: Final = "admin.settings:update"
LOCATIONS_CREATE: Final = "admin.locations:create"
LOCATIONS_UPDATE: Final = "admin.locations:update"
LOCATIONS_DELETE: Final = "admin.locations:delete"
MEMBERS_READ: Final = "admin.members:read"
MEMBERS_UPDATE: Final = "admin.members:update"
MEMBERS_DELETE: Final = "admin.members:delete"

ADMIN_PERMISSIONS: Final = (
    AdminPermission(BUSINESS_UPDATE, "UpdateBusiness: rename the business"),
    AdminPermission(SETTINGS_UPDATE, "UpdateBusinessSettings, and UpdateBusiness's settings path"),
    AdminPermission(LOCATIONS_CREATE, "AddLocation"),
    AdminPermission(LOCATIONS_UPDATE, "UpdateLocation (in the member's locations)"),
    AdminPermission(LOCATIONS_DELETE, "RemoveLocation (in the member's locations)"),
    AdminPermission(MEMBERS_READ, "see every member (Cognito subs) in GetBusiness and ListBusinesses"),
    AdminPermission(MEMBERS_UPDATE, "SetMember (only roles within the caller's own); sees every member"),
    AdminPermission(MEMBERS_DELETE, "RemoveMember (only members whose role is within the caller's)"),
    AdminPermission(ALL_PERMISSIONS, "everything, including UpdateBusiness's roles path and DeleteBusiness"),
)


def admin_area(permission: str) -> str | None:
    """The area of an ``admin.<area>:<action>`` string, None for any other string."""
    subject, _, _ = permission.rpartition(":")
    if not subject.startswith(ADMIN_PREFIX):
        return None
    return subject[len(ADMIN_PREFIX) :]


def split(permission: str) -> tuple[str, str]:
    """``(subject, action)`` of ``"<subject>:<action>"``; the subject is a catalog type or
    ``admin.<area>``."""
    subject, _, action = permission.rpartition(":")
    return subject, action


@dataclass(frozen=True, slots=True)
class Permission:
    """One permission string as the server checks it: ``"*"`` or ``"<subject>:<action>"``.

    The only place that decides what grants what: the authorizer's checks (a member acting,
    who sees members) and the escalation check (handing out a role) all go through ``grants``.
    """

    text: str

    @property
    def subject(self) -> str:
        return split(self.text)[0]

    @property
    def action(self) -> str:
        return split(self.text)[1]

    def granted_by(self, granted: Iterable[str]) -> bool:
        """Whether the granted strings allow this permission (``"*"`` needs ``"*"`` itself)."""
        held = frozenset(granted)
        if ALL_PERMISSIONS in held:
            return True
        if self.text == ALL_PERMISSIONS:
            return False
        return self.text in held or f"{self.subject}:*" in held


def grants(granted: Iterable[str], permission: str | Permission) -> bool:
    """Whether the granted strings (a role's) allow ``permission``: the one permission rule."""
    needed = permission if isinstance(permission, Permission) else Permission(permission)
    return needed.granted_by(granted)


def permission_problem(permission: str, catalog_types: frozenset[str]) -> str | None:
    """Why ``permission`` is not a valid string for a business whose catalog is ``catalog_types``
    (None when it is valid)."""
    if permission == ALL_PERMISSIONS:
        return None
    subject, separator, action = permission.rpartition(":")
    if not separator or action not in (*ACTIONS, "*"):
        return (
            "must be '*', '<resource_type>:<read|create|update|delete|*>' or "
            "'admin.<business|settings|locations|members>:<action>'"
        )
    area = admin_area(permission)
    if area is not None:
        if area not in ADMIN_AREAS:
            return f"administration areas are {', '.join(ADMIN_AREAS)}"
        return None
    if subject in catalog_types:
        return None
    if subject in ADMIN_AREAS:
        return (
            f"{subject!r} is not a resource type of this business; business administration is "
            f"'admin.{subject}:{action}'"
        )
    return f"{subject[:64]!r} is not a resource type of this business (ListResourceTypes lists them)"


def upgrade_legacy(permissions: Iterable[str], catalog_types: frozenset[str]) -> tuple[str, ...]:
    """Role strings as stored before the ``admin.`` namespace, read in today's grammar.

    ``"<area>:<action>"`` for an administration area the catalog has no type of becomes
    ``"admin.<area>:<action>"``; everything else is kept as it is (idempotent).
    """
    upgraded: list[str] = []
    for stored in permissions:
        subject, separator, action = stored.rpartition(":")
        legacy = separator and subject in ADMIN_AREAS and subject not in catalog_types
        permission = f"{ADMIN_PREFIX}{subject}:{action}" if legacy else stored
        if permission not in upgraded:
            upgraded.append(permission)
    return tuple(upgraded)


def type_permissions(resource_type: str) -> Mapping[str, str]:
    """The permission string of each action on a catalog type, and ``"*"`` for all of them."""
    return {action: f"{resource_type}:{action}" for action in (*ACTIONS, "*")}
