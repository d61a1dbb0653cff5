"""Business-info items <-> domain ``Business`` (the table's item shape, no I/O).

Items follow the reference's ``BusinessInfo`` shape (``id``, ``name``, ``type`` lowercase,
``locations``, ``settings``, ``permissions``, ``createdAt``, ``updatedAt``) plus ``kind``,
``status``, ``version`` (optimistic concurrency), ``owner``, ``memberSubs`` and
``unregisteredLocationIds`` (locations Citrus has not registered yet).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from simplu_grpc.domain.auth.permissions import ALL_PERMISSIONS, upgrade_legacy
from simplu_grpc.domain.business.model import (
    OWNER_ROLE,
    Business,
    BusinessSettings,
    BusinessStatus,
    BusinessType,
    Location,
    Member,
    Permissions,
    Role,
    WorkingHours,
)
from simplu_grpc.domain.business.validation import settings_document
from simplu_grpc.domain.resources.catalog import catalog_types

KIND_BUSINESS = "business"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def is_business_item(item: Mapping[str, Any]) -> bool:
    """A business: ``kind = business``, or an item of the original system (no ``kind``; only the
    request and membership items have a ``#`` in their id)."""
    kind = item.get("kind", {}).get("S")
    return kind == KIND_BUSINESS or (kind is None and "#" not in str(item.get("id", {}).get("S", "#")))


def to_item(business: Business) -> dict[str, Any]:
    """The current shape; attributes this service does not model are written back as read."""
    settings = settings_document(business.settings)
    # Struct numbers are doubles, which DynamoDB's serializer refuses: extras stay JSON text.
    settings["extrasJson"] = json.dumps(settings.pop("extras"), separators=(",", ":"))
    document: dict[str, Any] = {
        "id": business.id,
        "kind": KIND_BUSINESS,
        "name": business.name,
        "type": business.type.value,
        "status": business.status.value,
        "owner": business.owner,
        "version": business.version,
        "createdAt": iso(business.create_time) if business.create_time else "",
        "updatedAt": iso(business.update_time) if business.update_time else "",
        "locations": [
            {
                "id": loc.id,
                "name": loc.name,
                "address": loc.address,
                "phone": loc.phone,
                "email": loc.email,
                "timezone": loc.timezone,
                "active": loc.active,
            }
            for loc in business.locations
        ],
        "settings": settings,
        "permissions": {
            "roles": {name: list(role.permissions) for name, role in business.permissions.roles.items()},
            "members": {
                subject: {"role": member.role, "locationIds": list(member.location_ids)}
                for subject, member in business.permissions.members.items()
            },
        },
        "memberSubs": sorted(business.permissions.members),
        "unregisteredLocationIds": list(business.unregistered_location_ids),
    }
    item = {key: value for key, value in business.unmodelled.items() if key not in document}
    item.update((key, _serializer.serialize(value)) for key, value in document.items())
    return item


# The attributes ``to_item`` writes, and those of the original system the reader translates.
_MODELLED = frozenset(
    {"id", "kind", "name", "type", "status", "owner", "version", "createdAt", "updatedAt", "locations"}
    | {"settings", "permissions", "memberSubs", "unregisteredLocationIds"}
)
_TRANSLATED = frozenset({"businessId", "companyName", "businessName", "businessType", "ownerUserId"})
# The original system keys working hours by day name; ours are ISO days (1 = Monday).
_DAYS = {
    name: number
    for number, name in enumerate(
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"), start=1
    )
}


def _plain(value: Any) -> Any:
    """Deserialized DynamoDB values with Decimals turned back into ints."""
    if isinstance(value, Decimal):
        return int(value)
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def from_item(item: Mapping[str, Any]) -> Business:
    """The business an item holds, in the current shape or the original system's.

    The original system's names are read too (``businessId``, ``companyName``/``businessName``,
    ``businessType`` in any case, ``ownerUserId``, locations' ``locationId``/``isActive``,
    working hours by day name with ``isOpen``, features as a list); missing fields read as
    empty. Its owner becomes a member with an ``owner`` role of ``"*"``, as a creator does
    here. A status this service does not have (``suspended``) reads as active and is kept,
    with every attribute not modelled here, in ``unmodelled`` (``legacyStatus``), so writing
    the business back loses nothing. Only what cannot be read without guessing (no type, an
    unknown type, a location without id) is malformed.
    """
    doc = {key: _plain(_deserializer.deserialize(value)) for key, value in item.items()}
    legacy = "kind" not in doc
    try:
        settings = doc.get("settings") or {}
        permissions: dict[str, Any] = doc["permissions"] if isinstance(doc.get("permissions"), dict) else {}
        business_type = BusinessType(str(doc.get("type") or doc["businessType"]).lower())
        # Roles written before administration had its own namespace name it with bare strings
        # ("members:update"): read them in today's grammar (domain.auth.permissions.upgrade_legacy).
        types = catalog_types(business_type)
        roles = {
            name: Role(permissions=upgrade_legacy(perms, types))
            for name, perms in (permissions.get("roles") or {}).items()
        }
        members = {
            subject: Member(role=m["role"], location_ids=tuple(m.get("locationIds") or ()))
            for subject, m in (permissions.get("members") or {}).items()
        }
        owner = str(doc.get("owner") or doc.get("ownerUserId") or "")
        if legacy and owner and owner not in members:
            roles.setdefault(OWNER_ROLE, Role(permissions=(ALL_PERMISSIONS,)))
            members[owner] = Member(role=OWNER_ROLE)
        unmodelled = {key: value for key, value in item.items() if key not in _MODELLED | _TRANSLATED}
        status = _status(doc)
        if doc.get("status") is not None and doc["status"] != status.value:
            unmodelled["legacyStatus"] = item["status"]
        if "permissions" in doc and not isinstance(doc["permissions"], dict):
            unmodelled["legacyPermissions"] = item["permissions"]
        return Business(
            id=str(doc.get("id") or doc["businessId"]),
            name=str(doc.get("name") or doc.get("companyName") or doc.get("businessName") or ""),
            type=business_type,
            status=status,
            owner=owner,
            version=int(doc.get("version", 0)),
            create_time=_parse_time(doc.get("createdAt")),
            update_time=_parse_time(doc.get("updatedAt")),
            locations=tuple(_location(loc) for loc in doc.get("locations") or ()),
            settings=BusinessSettings(
                currency=settings.get("currency") or "",
                language=settings.get("language") or "",
                timezone=settings.get("timezone") or "",
                date_format=settings.get("dateFormat") or "",
                time_format=settings.get("timeFormat") or "",
                working_hours=_working_hours(settings.get("workingHours") or ()),
                features=_features(settings.get("features") or {}),
                extras=json.loads(settings.get("extrasJson") or "{}"),
            ),
            permissions=Permissions(roles=roles, members=members),
            unregistered_location_ids=tuple(doc.get("unregisteredLocationIds") or ()),
            unmodelled=unmodelled,
        )
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        # Never guess: a malformed item is an internal error with the item's id in the log.
        raise ValueError(f"business item {doc.get('id')!r} is malformed: {exc!r}") from exc


def _status(doc: Mapping[str, Any]) -> BusinessStatus:
    if doc.get("status") == BusinessStatus.DELETED.value or doc.get("deletedAt"):
        return BusinessStatus.DELETED
    return BusinessStatus.ACTIVE


def _location(loc: Mapping[str, Any]) -> Location:
    active = loc.get("active", loc.get("isActive", True))
    return Location(
        id=str(loc.get("id") or loc["locationId"]),
        name=loc.get("name") or "",
        address=loc.get("address") or "",
        phone=loc.get("phone") or "",
        email=loc.get("email") or "",
        timezone=loc.get("timezone") or "",
        active=True if active is None else bool(active),
    )


def _working_hours(hours: Any) -> tuple[WorkingHours, ...]:
    """Ours (a list of ``{day, open, close, closed}``) or the original's map by day name."""
    if isinstance(hours, Mapping):
        return tuple(
            WorkingHours(
                day=_DAYS[name.lower()],
                open=wh.get("open") or "",
                close=wh.get("close") or "",
                closed=not wh.get("isOpen", True),
            )
            for name, wh in sorted(hours.items(), key=lambda pair: _DAYS[pair[0].lower()])
        )
    return tuple(
        WorkingHours(
            day=int(wh["day"]),
            open=wh.get("open", ""),
            close=wh.get("close", ""),
            closed=bool(wh.get("closed", False)),
        )
        for wh in hours
    )


def _features(features: Any) -> dict[str, bool]:
    """Ours (name -> on) or the original's list of enabled names."""
    if isinstance(features, list):
        return {str(name): True for name in features}
    return {str(k): bool(v) for k, v in features.items()}
