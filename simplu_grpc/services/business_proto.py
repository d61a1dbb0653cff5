"""Protobuf <-> domain conversion for BusinessService (no rules here beyond the wire's enums)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, overload

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from simplu.v1 import business_pb2

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
from simplu_grpc.domain.validation import Violations

TYPE_FROM_PROTO: dict[int, BusinessType] = {
    business_pb2.BUSINESS_TYPE_DENTAL: BusinessType.DENTAL,
    business_pb2.BUSINESS_TYPE_GYM: BusinessType.GYM,
    business_pb2.BUSINESS_TYPE_HOTEL: BusinessType.HOTEL,
}
TYPE_TO_PROTO: dict[BusinessType, business_pb2.BusinessType] = {
    BusinessType.DENTAL: business_pb2.BUSINESS_TYPE_DENTAL,
    BusinessType.GYM: business_pb2.BUSINESS_TYPE_GYM,
    BusinessType.HOTEL: business_pb2.BUSINESS_TYPE_HOTEL,
}
STATUS_TO_PROTO: dict[BusinessStatus, business_pb2.BusinessStatus] = {
    BusinessStatus.ACTIVE: business_pb2.BUSINESS_STATUS_ACTIVE,
    BusinessStatus.DELETED: business_pb2.BUSINESS_STATUS_DELETED,
}


def business_type(v: Violations, field: str, value: int) -> BusinessType:
    """The domain type; an unset or unknown enum value is a violation (DENTAL stands in)."""
    found = TYPE_FROM_PROTO.get(int(value))
    if found is None:
        if int(value) == 0:
            v.add(field, "is required: BUSINESS_TYPE_DENTAL, BUSINESS_TYPE_GYM or BUSINESS_TYPE_HOTEL")
        else:
            v.add(field, f"unknown business type {int(value)}")
        return BusinessType.DENTAL
    return found


def location_from_proto(pb: business_pb2.Location) -> Location:
    return Location(
        id=pb.id,
        name=pb.name,
        address=pb.address,
        phone=pb.phone,
        email=pb.email,
        timezone=pb.timezone,
        active=pb.active,
    )


def settings_from_proto(pb: business_pb2.BusinessSettings) -> BusinessSettings:
    extras: dict[str, Any] = {}
    if pb.HasField("extras"):
        extras = json_format.MessageToDict(pb.extras)
    # The day (an enum number proto3 lets through unchecked) is validated by the domain
    # (check_settings), like every other settings field: one violation per field.
    hours = [
        WorkingHours(day=int(wh.day), open=wh.open, close=wh.close, closed=wh.closed)
        for wh in pb.working_hours
    ]
    return BusinessSettings(
        currency=pb.currency,
        language=pb.language,
        timezone=pb.timezone,
        date_format=pb.date_format,
        time_format=pb.time_format,
        working_hours=tuple(hours),
        features=dict(pb.features),
        extras=extras,
    )


def roles_from_proto(pb: business_pb2.BusinessPermissions) -> dict[str, Role]:
    return {name: Role(permissions=tuple(role.permissions)) for name, role in pb.roles.items()}


def member_from_proto(pb: business_pb2.Member) -> Member:
    return Member(role=pb.role, location_ids=tuple(pb.location_ids))


def business_from_proto(v: Violations, field: str, pb: business_pb2.Business) -> Business:
    """A create's draft: the caller's fields; output-only fields are ignored."""
    return Business(
        id=pb.id,
        name=pb.name,
        type=business_type(v, f"{field}.type", pb.type),
        locations=tuple(location_from_proto(loc) for loc in pb.locations),
        settings=settings_from_proto(pb.settings),
        permissions=Permissions(
            roles=roles_from_proto(pb.permissions),
            members={sub: member_from_proto(m) for sub, m in pb.permissions.members.items()},
        ),
    )


@overload
def timestamp(moment: datetime) -> timestamp_pb2.Timestamp: ...
@overload
def timestamp(moment: None) -> None: ...
def timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A protobuf Timestamp of ``moment`` (None stays None)."""
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def location_to_proto(location: Location) -> business_pb2.Location:
    return business_pb2.Location(
        id=location.id,
        name=location.name,
        address=location.address,
        phone=location.phone,
        email=location.email,
        timezone=location.timezone,
        active=location.active,
    )


def settings_to_proto(settings: BusinessSettings) -> business_pb2.BusinessSettings:
    pb = business_pb2.BusinessSettings(
        currency=settings.currency,
        language=settings.language,
        timezone=settings.timezone,
        date_format=settings.date_format,
        time_format=settings.time_format,
        working_hours=[
            business_pb2.WorkingHours(
                day=business_pb2.DayOfWeek.Name(wh.day),
                open=wh.open,
                close=wh.close,
                closed=wh.closed,
            )
            for wh in settings.working_hours
        ],
        features=dict(settings.features),
    )
    if settings.extras:
        extras = struct_pb2.Struct()
        extras.update(dict(settings.extras))
        pb.extras.CopyFrom(extras)
    return pb


def business_to_proto(business: Business) -> business_pb2.Business:
    pb = business_pb2.Business(
        id=business.id,
        name=business.name,
        type=TYPE_TO_PROTO[business.type],
        locations=[location_to_proto(loc) for loc in business.locations],
        settings=settings_to_proto(business.settings),
        permissions=business_pb2.BusinessPermissions(
            roles={
                name: business_pb2.Role(permissions=list(role.permissions))
                for name, role in business.permissions.roles.items()
            },
            members={
                sub: business_pb2.Member(role=m.role, location_ids=list(m.location_ids))
                for sub, m in business.permissions.members.items()
            },
        ),
        status=STATUS_TO_PROTO[business.status],
        etag=business.etag,
        owner=business.owner,
    )
    created = timestamp(business.create_time)
    if created is not None:
        pb.create_time.CopyFrom(created)
    updated = timestamp(business.update_time)
    if updated is not None:
        pb.update_time.CopyFrom(updated)
    return pb
