"""Business validation: names, locations, settings, roles and members (every bad field reported at once).

The shared checks (ids, text, the ``Violations`` collector) are in ``domain.checks``.
Limits here also keep every business item well under DynamoDB's 400 KB item size.
"""

from __future__ import annotations

import functools
import json
import re
import zoneinfo
from collections.abc import Iterable, Mapping
from typing import Any

from simplu_grpc.domain.auth.permissions import permission_problem
from simplu_grpc.domain.business.model import (
    Business,
    BusinessSettings,
    Location,
    Member,
    Permissions,
    Role,
)
from simplu_grpc.domain.checks import (
    Violations,
    check_id,
    check_text,
    has_control_characters,
    shown,
)
from simplu_grpc.domain.paging import STANDARD
from simplu_grpc.domain.resources.catalog import catalog_types

# Cognito subs are UUIDs; client ids and usernames are similar. Bounded and printable.
_SUBJECT = re.compile(r"[A-Za-z0-9_.:@+-]{1,128}")
_ROLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")
_PHONE = re.compile(r"\+?[0-9 ().-]{3,32}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,4}")
_HHMM = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
_FEATURE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

NAME_MAX = 200
ADDRESS_MAX = 500
EMAIL_MAX = 254
FORMAT_MAX = 32
MAX_LOCATIONS = 100
MAX_ROLES = 50
MAX_PERMISSIONS_PER_ROLE = 100
MAX_MEMBERS = 1000
MAX_WORKING_HOURS = 21
MAX_FEATURES = 200
SETTINGS_MAX_BYTES = 64 * 1024
PERMISSIONS_MAX_BYTES = 128 * 1024
EXTRAS_MAX_DEPTH = 16
PAGE_SIZE_DEFAULT = STANDARD.default
PAGE_SIZE_MAX = STANDARD.maximum


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_timezone(name: str) -> bool:
    """A real IANA zone name (never a path: ``../etc/passwd`` is not a zone)."""
    zones = _zones()
    if zones:
        return name in zones
    # No zone list on this system: fall back to loading it, with the name shape checked first.
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*", name):
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def check_subject(v: Violations, field: str, value: str) -> None:
    """A Cognito ``sub`` (or client id) naming a member."""
    if not value:
        v.add(field, "is required")
    elif not _SUBJECT.fullmatch(value):
        v.add(field, "must be a Cognito subject: 1-128 characters of A-Z a-z 0-9 _ . : @ + -")


def check_email(v: Violations, field: str, value: str) -> None:
    if not value:
        return
    if len(value) > EMAIL_MAX or has_control_characters(value) or not _EMAIL.fullmatch(value):
        v.add(field, "must be an email address like name@example.com")


def check_phone(v: Violations, field: str, value: str) -> None:
    if not value:
        return
    digits = sum(ch.isdigit() for ch in value)
    if not _PHONE.fullmatch(value) or digits < 3 or digits > 20:
        v.add(field, "must be a phone number: digits, spaces, ( ) . - and an optional leading +")


def check_timezone(v: Violations, field: str, value: str) -> None:
    if value and (len(value) > 64 or not is_timezone(value)):
        v.add(field, f"must be an IANA time zone such as Europe/Bucharest (got {shown(value)})")


def check_location(v: Violations, prefix: str, location: Location) -> None:
    check_id(v, f"{prefix}.id", location.id)
    check_text(v, f"{prefix}.name", location.name, max_length=NAME_MAX, required=True)
    check_text(v, f"{prefix}.address", location.address, max_length=ADDRESS_MAX)
    check_phone(v, f"{prefix}.phone", location.phone)
    check_email(v, f"{prefix}.email", location.email)
    check_timezone(v, f"{prefix}.timezone", location.timezone)


def check_locations(v: Violations, prefix: str, locations: Iterable[Location]) -> None:
    """Each location valid; ids unique within the business; a bounded count."""
    seen: set[str] = set()
    items = list(locations)
    if len(items) > MAX_LOCATIONS:
        v.add(prefix, f"at most {MAX_LOCATIONS} locations per business (got {len(items)})")
        return
    for index, location in enumerate(items):
        check_location(v, f"{prefix}[{index}]", location)
        if location.id in seen:
            v.add(f"{prefix}[{index}].id", f"duplicate location id {shown(location.id)}")
        seen.add(location.id)


def _depth(value: Any) -> int:
    if isinstance(value, Mapping):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list | tuple):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


def serialized_size(value: Any) -> int:
    """Bytes of the compact JSON form: the measure of every size limit here."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())


def settings_document(settings: BusinessSettings) -> dict[str, Any]:
    """The JSON-able form of settings (also what the store keeps)."""
    return {
        "currency": settings.currency,
        "language": settings.language,
        "timezone": settings.timezone,
        "dateFormat": settings.date_format,
        "timeFormat": settings.time_format,
        "workingHours": [
            {"day": wh.day, "open": wh.open, "close": wh.close, "closed": wh.closed}
            for wh in settings.working_hours
        ],
        "features": dict(settings.features),
        "extras": dict(settings.extras),
    }


def check_settings(v: Violations, prefix: str, settings: BusinessSettings) -> None:
    size = serialized_size(settings_document(settings))
    if size > SETTINGS_MAX_BYTES:
        # Nothing else is worth checking in a document this large.
        v.add(prefix, f"must be at most {SETTINGS_MAX_BYTES} bytes serialized (got {size})")
        return
    if settings.currency and not _CURRENCY.fullmatch(settings.currency):
        v.add(f"{prefix}.currency", "must be an ISO 4217 code such as EUR")
    if settings.language and not _LANGUAGE.fullmatch(settings.language):
        v.add(f"{prefix}.language", "must be a BCP 47 language tag such as ro-RO")
    check_timezone(v, f"{prefix}.timezone", settings.timezone)
    check_text(v, f"{prefix}.date_format", settings.date_format, max_length=FORMAT_MAX)
    check_text(v, f"{prefix}.time_format", settings.time_format, max_length=FORMAT_MAX)
    if len(settings.working_hours) > MAX_WORKING_HOURS:
        v.add(f"{prefix}.working_hours", f"at most {MAX_WORKING_HOURS} entries")
    else:
        for index, hours in enumerate(settings.working_hours):
            field = f"{prefix}.working_hours[{index}]"
            if not 1 <= hours.day <= 7:
                v.add(f"{field}.day", f"must be MONDAY..SUNDAY (got {hours.day})")
            if hours.closed:
                continue
            # Field names are the wire's (open_time, close_time: google.type.TimeOfDay, which the
            # servicer turns into "HH:MM" and checks for range first).
            for name, value in (("open_time", hours.open), ("close_time", hours.close)):
                if v.reported(f"{field}.{name}"):
                    continue  # out of range on the wire: already said, precisely
                if not value:
                    v.add(f"{field}.{name}", "is required unless closed")
                elif not _HHMM.fullmatch(value):
                    v.add(f"{field}.{name}", "must be a local time HH:MM (or set closed)")
            if _HHMM.fullmatch(hours.open) and _HHMM.fullmatch(hours.close) and hours.open == hours.close:
                v.add(f"{field}.close_time", "must differ from open_time")
    if len(settings.features) > MAX_FEATURES:
        v.add(f"{prefix}.features", f"at most {MAX_FEATURES} feature flags")
    else:
        for name in settings.features:
            if not _FEATURE.fullmatch(name):
                v.add(f"{prefix}.features", f"feature name {shown(name)} must be 1-64 of A-Z a-z 0-9 _ . : -")
    if _depth(settings.extras) > EXTRAS_MAX_DEPTH:
        v.add(f"{prefix}.extras", f"must nest at most {EXTRAS_MAX_DEPTH} levels")


def check_permission_string(v: Violations, field: str, value: str, types: frozenset[str]) -> None:
    """A permission string of the grammar in ``domain.auth.permissions``, naming a type of ``types``."""
    problem = permission_problem(value, types)
    if problem is not None:
        v.add(field, f"{problem} (got {shown(value)})")


def check_role(v: Violations, prefix: str, name: str, role: Role, types: frozenset[str]) -> None:
    if not _ROLE_NAME.fullmatch(name):
        v.add(prefix, f"role name {shown(name)} must be 1-64 of A-Z a-z 0-9 _ . - starting with a letter")
    if len(role.permissions) > MAX_PERMISSIONS_PER_ROLE:
        v.add(f"{prefix}.permissions", f"at most {MAX_PERMISSIONS_PER_ROLE} permissions per role")
        return
    for index, permission in enumerate(role.permissions):
        check_permission_string(v, f"{prefix}.permissions[{index}]", permission, types)


def check_roles(v: Violations, prefix: str, roles: Mapping[str, Role], types: frozenset[str]) -> None:
    """Roles whose permission strings name administration areas or types of ``types`` (the
    business type's catalog, ``resources.catalog_types``)."""
    if len(roles) > MAX_ROLES:
        v.add(prefix, f"at most {MAX_ROLES} roles")
        return
    for name, role in roles.items():
        check_role(v, f"{prefix}[{name[:64]!r}]", name, role, types)


def check_member(v: Violations, prefix: str, member: Member) -> None:
    if not member.role:
        v.add(f"{prefix}.role", "is required")
    elif not _ROLE_NAME.fullmatch(member.role):
        v.add(f"{prefix}.role", f"role name {shown(member.role)} is not valid")
    if len(member.location_ids) > MAX_LOCATIONS:
        v.add(f"{prefix}.location_ids", f"at most {MAX_LOCATIONS} locations")
        return
    for index, location_id in enumerate(member.location_ids):
        check_id(v, f"{prefix}.location_ids[{index}]", location_id)
    if len(set(member.location_ids)) != len(member.location_ids):
        v.add(f"{prefix}.location_ids", "must not repeat a location id")


def check_permissions(v: Violations, prefix: str, permissions: Permissions, types: frozenset[str]) -> None:
    check_roles(v, f"{prefix}.roles", permissions.roles, types)
    if len(permissions.members) > MAX_MEMBERS:
        v.add(f"{prefix}.members", f"at most {MAX_MEMBERS} members")
        return
    for subject, member in permissions.members.items():
        field = f"{prefix}.members[{subject[:64]!r}]"
        check_subject(v, field, subject)
        check_member(v, field, member)
    document = {
        "roles": {name: list(role.permissions) for name, role in permissions.roles.items()},
        "members": {s: [m.role, *m.location_ids] for s, m in permissions.members.items()},
    }
    if serialized_size(document) > PERMISSIONS_MAX_BYTES:
        v.add(prefix, f"must be at most {PERMISSIONS_MAX_BYTES} bytes serialized")


def check_membership_refs(v: Violations, prefix: str, business: Business) -> None:
    """Every member's role exists and every member location belongs to the business."""
    location_ids = {loc.id for loc in business.locations}
    for subject, member in business.permissions.members.items():
        field = f"{prefix}.members[{subject[:64]!r}]"
        if member.role and member.role not in business.permissions.roles:
            v.add(f"{field}.role", f"role {shown(member.role)} is not defined in permissions.roles")
        for index, location_id in enumerate(member.location_ids):
            if location_id not in location_ids:
                v.add(
                    f"{field}.location_ids[{index}]", f"location {shown(location_id)} is not in the business"
                )


def check_new_business(v: Violations, prefix: str, business: Business) -> None:
    """Everything a create needs: name, locations, settings, permissions and their references."""
    check_text(v, f"{prefix}.name", business.name, max_length=NAME_MAX, required=True)
    check_locations(v, f"{prefix}.locations", business.locations)
    check_settings(v, f"{prefix}.settings", business.settings)
    check_permissions(v, f"{prefix}.permissions", business.permissions, catalog_types(business.type))
    if not v:
        check_membership_refs(v, f"{prefix}.permissions", business)


def page_size(v: Violations, field: str, requested: int) -> int:
    """AIP-158 (``paging.STANDARD``), the problem collected in ``v``."""
    problem = STANDARD.problem(requested)
    if problem is not None:
        v.add(field, problem)
    return STANDARD.size(requested)


def check_update_mask(
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
