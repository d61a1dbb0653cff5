"""Protobuf <-> domain conversion for BusinessService (no rules here beyond the wire's types).

The wire's own types are checked here because the domain never sees them: enum numbers proto3
lets through, and google.type.TimeOfDay, which the store keeps as local "HH:MM" (DynamoDB
format unchanged), so a time it cannot keep (seconds, nanos, 24:00, out of range) is refused
rather than silently rounded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, overload

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.type import dayofweek_pb2, timeofday_pb2
from simplu.v1 import business_pb2

from simplu_grpc.domain.auth.principal import TokenUse
from simplu_grpc.domain.business.model import (
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
from simplu_grpc.domain.checks import Violations

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
TOKEN_USE_TO_PROTO: dict[TokenUse, business_pb2.TokenUse] = {
    "access": business_pb2.TOKEN_USE_ACCESS,
    "id": business_pb2.TOKEN_USE_ID,
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


def local_time(v: Violations, field: str, pb: timeofday_pb2.TimeOfDay) -> str:
    """``pb`` as the store's "HH:MM"; a time the store cannot keep exactly is a violation."""
    problems = []
    if not 0 <= pb.hours <= 23:
        hint = " (a day that closes at midnight closes at 00:00)" if pb.hours == 24 else ""
        problems.append(f"hours must be 0-23, got {pb.hours}{hint}")
    if not 0 <= pb.minutes <= 59:
        problems.append(f"minutes must be 0-59, got {pb.minutes}")
    if pb.seconds or pb.nanos:
        problems.append("seconds and nanos must be 0: opening hours are kept to the minute")
    if problems:
        v.add(field, "; ".join(problems))
        return ""
    return f"{pb.hours:02d}:{pb.minutes:02d}"


def time_of_day(hhmm: str) -> timeofday_pb2.TimeOfDay | None:
    """The stored "HH:MM" as a TimeOfDay; None when empty (or not a time)."""
    hours, sep, minutes = hhmm.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit()):
        return None
    return timeofday_pb2.TimeOfDay(hours=int(hours), minutes=int(minutes))


def working_hours_from_proto(v: Violations, field: str, pb: business_pb2.WorkingHours) -> WorkingHours:
    """One day; the times are ignored on a closed day. A missing time is the domain's to refuse."""
    # The day (an enum number proto3 lets through unchecked) is validated by the domain
    # (check_settings), like every other settings field: one violation per field.
    if pb.closed:
        return WorkingHours(day=int(pb.day), closed=True)
    opens = local_time(v, f"{field}.open_time", pb.open_time) if pb.HasField("open_time") else ""
    closes = local_time(v, f"{field}.close_time", pb.close_time) if pb.HasField("close_time") else ""
    return WorkingHours(day=int(pb.day), open=opens, close=closes)


def settings_from_proto(v: Violations, field: str, pb: business_pb2.BusinessSettings) -> BusinessSettings:
    """Settings as the domain keeps them; wire-level violations are added to ``v`` under ``field``."""
    extras: dict[str, Any] = {}
    if pb.HasField("extras"):
        extras = json_format.MessageToDict(pb.extras)
    hours = [
        working_hours_from_proto(v, f"{field}.working_hours[{index}]", wh)
        for index, wh in enumerate(pb.working_hours)
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
    """A create's draft: the caller's fields; output-only fields (status, owner, times) and the
    etag are ignored, as the proto's field_behavior says."""
    return Business(
        id=pb.id,
        name=pb.name,
        type=business_type(v, f"{field}.type", pb.type),
        locations=tuple(location_from_proto(loc) for loc in pb.locations),
        settings=settings_from_proto(v, f"{field}.settings", pb.settings),
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


def working_hours_to_proto(hours: WorkingHours) -> business_pb2.WorkingHours:
    pb = business_pb2.WorkingHours(day=dayofweek_pb2.DayOfWeek.Name(hours.day), closed=hours.closed)
    for name, value in (("open_time", hours.open), ("close_time", hours.close)):
        converted = time_of_day(value)
        if converted is not None:
            getattr(pb, name).CopyFrom(converted)
    return pb


def settings_to_proto(settings: BusinessSettings) -> business_pb2.BusinessSettings:
    pb = business_pb2.BusinessSettings(
        currency=settings.currency,
        language=settings.language,
        timezone=settings.timezone,
        date_format=settings.date_format,
        time_format=settings.time_format,
        working_hours=[working_hours_to_proto(wh) for wh in settings.working_hours],
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
