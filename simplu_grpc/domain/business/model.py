"""The business model: a business, its locations, settings and permissions (values, no I/O)."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

# The role the creator of a business gets; "*" allows every action on every resource.
OWNER_ROLE = "owner"
# Idempotency keys live beside businesses; business ids never contain "#", so no clash.
KIND_REQUEST = "request"


class BusinessType(enum.StrEnum):
    """The kind of business; it selects the catalog of resource types. Lowercase on the wire."""

    DENTAL = "dental"
    GYM = "gym"
    HOTEL = "hotel"


class BusinessStatus(enum.StrEnum):
    ACTIVE = "active"
    # Soft-deleted: members get NOT_FOUND, platform admins still see it; resource data stays.
    DELETED = "deleted"


@dataclass(frozen=True, slots=True, kw_only=True)
class Location:
    """A place where the business operates; each is registered with Citrus."""

    id: str
    name: str
    address: str = ""
    phone: str = ""
    email: str = ""
    timezone: str = ""  # empty: the business default
    active: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkingHours:
    """Opening hours for one day (1 = Monday .. 7 = Sunday), local "HH:MM"."""

    day: int
    open: str = ""
    close: str = ""
    closed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class BusinessSettings:
    currency: str = ""
    language: str = ""
    timezone: str = ""
    date_format: str = ""
    time_format: str = ""
    working_hours: tuple[WorkingHours, ...] = ()
    features: Mapping[str, bool] = field(default_factory=dict)
    # Free-form JSON object (google.protobuf.Struct on the wire); bounded in size by validation.
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Role:
    """A named set of permission strings (grammar in ``domain.auth.permissions``)."""

    permissions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """A person's membership: a role, limited to some locations (empty: every location)."""

    role: str
    location_ids: tuple[str, ...] = ()

    @property
    def all_locations(self) -> bool:
        return not self.location_ids

    def may_act_in(self, location_id: str) -> bool:
        return self.all_locations or location_id in self.location_ids


@dataclass(frozen=True, slots=True, kw_only=True)
class Permissions:
    roles: Mapping[str, Role] = field(default_factory=dict)
    members: Mapping[str, Member] = field(default_factory=dict)  # Cognito sub -> membership


@dataclass(frozen=True, slots=True, kw_only=True)
class Business:
    """One business as stored in the business-info table.

    ``version`` is the optimistic-concurrency counter the store conditions writes on; the
    etag shown to callers is derived from it. ``unregistered_location_ids`` lists locations
    saved here but not yet registered with Citrus (registration completes later).
    """

    id: str
    name: str
    type: BusinessType
    locations: tuple[Location, ...] = ()
    settings: BusinessSettings = field(default_factory=BusinessSettings)
    permissions: Permissions = field(default_factory=Permissions)
    status: BusinessStatus = BusinessStatus.ACTIVE
    owner: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None
    version: int = 0
    unregistered_location_ids: tuple[str, ...] = ()
    # Attributes of the stored item this service does not model (the original system's
    # domainLabel, credits, billing fields, ...), as the store read them: written back
    # unchanged, never shown to callers.
    unmodelled: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_active(self) -> bool:
        return self.status is BusinessStatus.ACTIVE

    @property
    def etag(self) -> str:
        """Opaque to callers: changes on every write (AIP-154)."""
        return f"v{self.version}"

    def location(self, location_id: str) -> Location | None:
        return next((loc for loc in self.locations if loc.id == location_id), None)

    def member(self, subject: str) -> Member | None:
        return self.permissions.members.get(subject)

    def role_permissions(self, role: str) -> tuple[str, ...]:
        found = self.permissions.roles.get(role)
        return found.permissions if found else ()

    def with_location(self, location: Location) -> Business:
        """A copy with ``location`` replacing the one with its id, or appended."""
        if self.location(location.id) is None:
            return replace(self, locations=(*self.locations, location))
        return replace(
            self, locations=tuple(location if loc.id == location.id else loc for loc in self.locations)
        )

    def with_unregistered(self, location_ids: tuple[str, ...]) -> Business:
        return replace(self, unregistered_location_ids=tuple(dict.fromkeys(location_ids)))


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    """What a create did: ``replayed`` when an earlier create with the same request key won."""

    business: Business
    replayed: bool


@dataclass(frozen=True, slots=True)
class BusinessPage:
    """One page of a listing; ``next_token`` is empty on the last page."""

    businesses: list[Business]
    next_token: str


def request_key(subject: str, request_id: str) -> str:
    """The idempotency key of a create: scoped to the caller, so two callers' request ids never meet."""
    digest = hashlib.sha256(f"{subject}\x00{request_id}".encode()).hexdigest()
    return f"{KIND_REQUEST}#{digest}"
