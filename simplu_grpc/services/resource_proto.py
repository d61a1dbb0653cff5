"""ResourceService's proto <-> domain conversions: resources, keys, times, masks, changes and the
response byte budget (the servicer in ``services/resource.py`` stays one use case per RPC)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import field_mask_pb2, json_format, struct_pb2, timestamp_pb2
from google.type import interval_pb2
from simplu.v1 import business_pb2, resource_pb2

from simplu_grpc.domain.auth import permissions
from simplu_grpc.domain.resources.changes import ChangeKind, ResourceChange
from simplu_grpc.domain.resources.model import (
    OPEN_RANGE,
    ResourceKey,
    StoredResource,
    TimeRange,
    format_timestamp,
)
from simplu_grpc.errors import InvalidArgument
from simplu_grpc.services.encoded_resources import EncodedMessages

SERVICE = resource_pb2.DESCRIPTOR.services_by_name["ResourceService"]


_BUSINESS_TYPES = {
    "dental": business_pb2.BUSINESS_TYPE_DENTAL,
    "gym": business_pb2.BUSINESS_TYPE_GYM,
    "hotel": business_pb2.BUSINESS_TYPE_HOTEL,
}
BUSINESS_TYPE_NAMES = {number: name for name, number in _BUSINESS_TYPES.items()}
# Returned whatever the read_mask says: without them a resource cannot be named again.
_IDENTIFYING = ("business_id", "location_id", "resource_type", "resource_id")


def document_from_struct(struct: struct_pb2.Struct, field: str) -> dict[str, Any]:
    try:
        converted = json_format.MessageToDict(struct)
    except ValueError:
        # NaN and infinities have no JSON form: protobuf refuses them here, before validation.
        raise InvalidArgument.field(field, "numbers must be finite") from None
    # A Struct always converts to a JSON object.
    return converted


def instant_from(holder: Any, name: str, field: str) -> datetime | None:
    """A Timestamp field as an aware datetime, None when unset; INVALID_ARGUMENT when it is not
    a valid Timestamp (seconds outside 0001-9999, nanos outside 0..999,999,999)."""
    if not holder.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(holder, name)
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise InvalidArgument.field(field, "is not a valid timestamp (years 0001-9999)") from None


def interval_from(request: Any, name: str) -> TimeRange:
    if not request.HasField(name):
        return OPEN_RANGE
    interval: interval_pb2.Interval = getattr(request, name)
    return TimeRange(
        instant_from(interval, "start_time", f"{name}.start_time"),
        instant_from(interval, "end_time", f"{name}.end_time"),
    )


def read_mask(request: Any) -> field_mask_pb2.FieldMask | None:
    """The read_mask with the identifying fields added; None when it asks for everything."""
    if not request.HasField("read_mask") or not request.read_mask.paths:
        return None
    mask: field_mask_pb2.FieldMask = request.read_mask
    for index, path in enumerate(mask.paths):
        if path not in resource_pb2.Resource.DESCRIPTOR.fields_by_name:
            shown = path if len(path) <= 64 and path.isprintable() else "this path"
            raise InvalidArgument.field(f"read_mask.paths[{index}]", f"{shown} is not a field of Resource")
    return field_mask_pb2.FieldMask(paths=sorted({*mask.paths, *_IDENTIFYING}))


def to_proto(stored: StoredResource, mask: field_mask_pb2.FieldMask | None = None) -> resource_pb2.Resource:
    message = resource_pb2.Resource()
    fill(message, stored, mask)
    return message


def fill(
    message: resource_pb2.Resource, stored: StoredResource, mask: field_mask_pb2.FieldMask | None = None
) -> None:
    """Write ``stored`` into an empty ``message``, only the ``mask``'s fields when there is one (a
    list fills the response's own repeated entries in place: building separate messages and
    passing them in would copy each one). Built once per resource version (encoded_resources)."""
    _ENCODED.fill(message, (stored.key, stored.version, stored.update_time), _build, stored)
    if mask is not None:
        for name in _RESOURCE_FIELDS.difference(mask.paths):
            message.ClearField(name)


def _build(message: resource_pb2.Resource, stored: StoredResource) -> None:
    key = stored.key
    message.business_id = key.business_id
    message.location_id = key.location_id
    message.resource_type = key.resource_type
    message.resource_id = key.resource_id
    message.business_type = _BUSINESS_TYPES.get(stored.business_type, business_pb2.BUSINESS_TYPE_UNSPECIFIED)
    message.etag = stored.etag
    message.data.update(stored.data)
    if stored.start_time is not None:
        _set_timestamp(message.start_time, stored.start_time)
    if stored.end_time is not None:
        _set_timestamp(message.end_time, stored.end_time)
    _set_timestamp(message.create_time, stored.create_time)
    _set_timestamp(message.update_time, stored.update_time)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ENCODED = EncodedMessages()
_RESOURCE_FIELDS = frozenset(resource_pb2.Resource.DESCRIPTOR.fields_by_name)


def _set_timestamp(field: timestamp_pb2.Timestamp, value: datetime) -> None:
    """``Timestamp.FromDatetime`` for an aware datetime, at a quarter of its cost."""
    since = value - _EPOCH
    field.seconds = since.days * 86_400 + since.seconds
    field.nanos = since.microseconds * 1000


class ResponseBudget:
    """Fills a response's repeated resources until the next would pass the byte budget.

    The first resource is always taken (a page must make progress); each resource is written
    once, in place, and its encoded size counted as it will go on the wire."""

    def __init__(self, max_bytes: int, mask: field_mask_pb2.FieldMask | None, into: Any) -> None:
        self._left = max_bytes
        self._mask = mask
        self._into = into

    def admit(self, resource: StoredResource) -> bool:
        message = self._into.add()
        fill(message, resource, self._mask)
        # The repeated field's tag and length prefix: a few bytes beyond the message itself.
        size = message.ByteSize() + 8
        if len(self._into) > 1 and size > self._left:
            del self._into[-1]
            return False
        self._left -= size
        return True


def json_value(value: Any) -> struct_pb2.Value:
    """A group key as a protobuf Value (instants as RFC 3339 strings)."""
    message = struct_pb2.Value()
    if isinstance(value, datetime):
        message.string_value = format_timestamp(value)
    else:
        json_format.ParseDict(value, message)
    return message


def key_from_proto(message: resource_pb2.ResourceKey, business_id: str) -> ResourceKey:
    return ResourceKey(business_id, message.location_id, message.resource_type, message.resource_id)


def key_to_proto(key: ResourceKey) -> resource_pb2.ResourceKey:
    return resource_pb2.ResourceKey(
        location_id=key.location_id, resource_type=key.resource_type, resource_id=key.resource_id
    )


CHANGE_KINDS = {
    ChangeKind.CREATED: resource_pb2.CHANGE_KIND_CREATED,
    ChangeKind.UPDATED: resource_pb2.CHANGE_KIND_UPDATED,
    ChangeKind.DELETED: resource_pb2.CHANGE_KIND_DELETED,
}


def fill_change(message: resource_pb2.ResourceChange, change: ResourceChange) -> None:
    key = change.key
    message.sequence = change.sequence
    message.kind = CHANGE_KINDS[change.kind]
    message.business_id = key.business_id
    message.location_id = key.location_id
    message.resource_type = key.resource_type
    message.resource_id = key.resource_id
    message.etag = change.etag
    message.changed_paths.extend(change.paths)
    message.principal = change.principal
    _set_timestamp(message.change_time, change.change_time)


def type_permissions(resource_type: str) -> resource_pb2.ResourceTypePermissions:
    strings = permissions.type_permissions(resource_type)
    return resource_pb2.ResourceTypePermissions(
        read=strings["read"],
        create=strings["create"],
        update=strings["update"],
        delete=strings["delete"],
        all=strings["*"],
    )
