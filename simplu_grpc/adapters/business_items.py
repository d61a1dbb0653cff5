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

from simplu_grpc.domain.business import (
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
from simplu_grpc.domain.permissions import upgrade_legacy
from simplu_grpc.domain.resources import catalog_types
from simplu_grpc.domain.validation import settings_document

KIND_BUSINESS = "business"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def to_item(business: Business) -> dict[str, Any]:
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
    return {key: _serializer.serialize(value) for key, value in document.items()}


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
    doc = {key: _plain(_deserializer.deserialize(value)) for key, value in item.items()}
    try:
        settings = doc.get("settings", {})
        permissions = doc.get("permissions", {})
        business_type = BusinessType(doc["type"])
        # Roles written before administration had its own namespace name it with bare strings
        # ("members:update"): read them in today's grammar (domain.permissions.upgrade_legacy).
        types = catalog_types(business_type)
        return Business(
            id=doc["id"],
            name=doc["name"],
            type=business_type,
            status=BusinessStatus(doc.get("status", BusinessStatus.ACTIVE.value)),
            owner=doc.get("owner", ""),
            version=int(doc.get("version", 0)),
            create_time=_parse_time(doc.get("createdAt")),
            update_time=_parse_time(doc.get("updatedAt")),
            locations=tuple(
                Location(
                    id=loc["id"],
                    name=loc.get("name", ""),
                    address=loc.get("address", ""),
                    phone=loc.get("phone", ""),
                    email=loc.get("email", ""),
                    timezone=loc.get("timezone", ""),
                    active=bool(loc.get("active", True)),
                )
                for loc in doc.get("locations", [])
            ),
            settings=BusinessSettings(
                currency=settings.get("currency", ""),
                language=settings.get("language", ""),
                timezone=settings.get("timezone", ""),
                date_format=settings.get("dateFormat", ""),
                time_format=settings.get("timeFormat", ""),
                working_hours=tuple(
                    WorkingHours(
                        day=int(wh["day"]),
                        open=wh.get("open", ""),
                        close=wh.get("close", ""),
                        closed=bool(wh.get("closed", False)),
                    )
                    for wh in settings.get("workingHours", [])
                ),
                features={str(k): bool(v) for k, v in settings.get("features", {}).items()},
                extras=json.loads(settings.get("extrasJson") or "{}"),
            ),
            permissions=Permissions(
                roles={
                    name: Role(permissions=upgrade_legacy(perms, types))
                    for name, perms in permissions.get("roles", {}).items()
                },
                members={
                    subject: Member(role=m["role"], location_ids=tuple(m.get("locationIds", [])))
                    for subject, m in permissions.get("members", {}).items()
                },
            ),
            unregistered_location_ids=tuple(doc.get("unregisteredLocationIds", [])),
        )
    except (KeyError, ValueError, TypeError) as exc:
        # Never guess: a malformed item is an internal error with the item's id in the log.
        raise ValueError(f"business item {doc.get('id')!r} is malformed: {exc}") from exc
