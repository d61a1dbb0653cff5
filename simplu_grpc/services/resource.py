"""ResourceService servicer: protobuf in, one ResourceOps use case, protobuf out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import empty_pb2, field_mask_pb2, json_format, struct_pb2, timestamp_pb2
from google.type import interval_pb2
from simplu.v1 import business_pb2, resource_pb2, resource_pb2_grpc

from simplu_grpc.domain.auth import permissions
from simplu_grpc.domain.resources.catalog import catalog_types, common_types
from simplu_grpc.domain.resources.changes import ChangeKind, ResourceChange
from simplu_grpc.domain.resources.model import (
    OPEN_RANGE,
    ResourceKey,
    StoredResource,
    TimeRange,
    format_timestamp,
)
from simplu_grpc.domain.resources.ops import ResourceOps
from simplu_grpc.domain.resources.validation import UpdateRequest
from simplu_grpc.errors import InvalidArgument

SERVICE = resource_pb2.DESCRIPTOR.services_by_name["ResourceService"]

_BUSINESS_TYPES = {
    "dental": business_pb2.BUSINESS_TYPE_DENTAL,
    "gym": business_pb2.BUSINESS_TYPE_GYM,
    "hotel": business_pb2.BUSINESS_TYPE_HOTEL,
}
_BUSINESS_TYPE_NAMES = {number: name for name, number in _BUSINESS_TYPES.items()}
# Returned whatever the read_mask says: without them a resource cannot be named again.
_IDENTIFYING = ("business_id", "location_id", "resource_type", "resource_id")


def _document(struct: struct_pb2.Struct, field: str) -> dict[str, Any]:
    try:
        converted = json_format.MessageToDict(struct)
    except ValueError:
        # NaN and infinities have no JSON form: protobuf refuses them here, before validation.
        raise InvalidArgument.field(field, "numbers must be finite") from None
    # A Struct always converts to a JSON object.
    return converted


def _instant(holder: Any, name: str, field: str) -> datetime | None:
    """A Timestamp field as an aware datetime, None when unset; INVALID_ARGUMENT when it is not
    a valid Timestamp (seconds outside 0001-9999, nanos outside 0..999,999,999)."""
    if not holder.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(holder, name)
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise InvalidArgument.field(field, "is not a valid timestamp (years 0001-9999)") from None


def _interval(request: Any, name: str) -> TimeRange:
    if not request.HasField(name):
        return OPEN_RANGE
    interval: interval_pb2.Interval = getattr(request, name)
    return TimeRange(
        _instant(interval, "start_time", f"{name}.start_time"),
        _instant(interval, "end_time", f"{name}.end_time"),
    )


def _read_mask(request: Any) -> field_mask_pb2.FieldMask | None:
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
    passing them in would copy each one)."""
    key = stored.key
    message.business_id = key.business_id
    message.location_id = key.location_id
    message.resource_type = key.resource_type
    message.resource_id = key.resource_id
    message.business_type = _BUSINESS_TYPES.get(stored.business_type, business_pb2.BUSINESS_TYPE_UNSPECIFIED)
    message.etag = stored.etag
    if mask is None or "data" in mask.paths:
        # The document is the bulk of a resource: not even converted when masked out.
        message.data.update(stored.data)
    if stored.start_time is not None:
        _set_timestamp(message.start_time, stored.start_time)
    if stored.end_time is not None:
        _set_timestamp(message.end_time, stored.end_time)
    _set_timestamp(message.create_time, stored.create_time)
    _set_timestamp(message.update_time, stored.update_time)
    if mask is not None:
        for name in _RESOURCE_FIELDS.difference(mask.paths):
            message.ClearField(name)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RESOURCE_FIELDS = frozenset(resource_pb2.Resource.DESCRIPTOR.fields_by_name)


def _set_timestamp(field: timestamp_pb2.Timestamp, value: datetime) -> None:
    """``Timestamp.FromDatetime`` for an aware datetime, at a quarter of its cost."""
    since = value - _EPOCH
    field.seconds = since.days * 86_400 + since.seconds
    field.nanos = since.microseconds * 1000


class _ResponseBudget:
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


def _json_value(value: Any) -> struct_pb2.Value:
    """A group key as a protobuf Value (instants as RFC 3339 strings)."""
    message = struct_pb2.Value()
    if isinstance(value, datetime):
        message.string_value = format_timestamp(value)
    else:
        json_format.ParseDict(value, message)
    return message


def _key(message: resource_pb2.ResourceKey, business_id: str) -> ResourceKey:
    return ResourceKey(business_id, message.location_id, message.resource_type, message.resource_id)


def _key_proto(key: ResourceKey) -> resource_pb2.ResourceKey:
    return resource_pb2.ResourceKey(
        location_id=key.location_id, resource_type=key.resource_type, resource_id=key.resource_id
    )


class ResourceServicer(resource_pb2_grpc.ResourceServiceServicer):
    """Every method: the request converted, one use case (the caller comes from the request context)."""

    def __init__(self, ops: ResourceOps, *, response_max_bytes: int = 3 * 1024 * 1024) -> None:
        self._ops = ops
        self._response_max_bytes = response_max_bytes

    def CreateResource(
        self, request: resource_pb2.CreateResourceRequest, context: grpc.ServicerContext
    ) -> resource_pb2.Resource:
        r = request.resource
        if request.resource_id and r.resource_id and request.resource_id != r.resource_id:
            raise InvalidArgument.field(
                "resource.resource_id", "differs from resource_id; name the new id in one place"
            )
        stored, _ = self._ops.create(
            business_id=r.business_id,
            location_id=r.location_id,
            resource_type=r.resource_type,
            resource_id=request.resource_id or r.resource_id,
            data=_document(r.data, "resource.data"),
            start_time=_instant(r, "start_time", "resource.start_time"),
            end_time=_instant(r, "end_time", "resource.end_time"),
            request_id=request.request_id,
        )
        return to_proto(stored)

    def GetResource(
        self, request: resource_pb2.GetResourceRequest, context: grpc.ServicerContext
    ) -> resource_pb2.Resource:
        mask = _read_mask(request)
        key = ResourceKey(
            request.business_id, request.location_id, request.resource_type, request.resource_id
        )
        return to_proto(self._ops.get(key), mask)

    def BatchGetResources(
        self, request: resource_pb2.BatchGetResourcesRequest, context: grpc.ServicerContext
    ) -> resource_pb2.BatchGetResourcesResponse:
        response = resource_pb2.BatchGetResourcesResponse()
        budget = _ResponseBudget(self._response_max_bytes, _read_mask(request), response.resources)
        result = self._ops.batch_get(
            request.business_id,
            [_key(k, request.business_id) for k in request.keys],
            page_token=request.page_token,
            binding_extra=list(request.read_mask.paths),
            budget=budget,
        )
        response.missing.extend(_key_proto(k) for k in result.missing)
        response.next_page_token = result.next_page_token
        return response

    def ListResources(
        self, request: resource_pb2.ListResourcesRequest, context: grpc.ServicerContext
    ) -> resource_pb2.ListResourcesResponse:
        response = resource_pb2.ListResourcesResponse()
        budget = _ResponseBudget(self._response_max_bytes, _read_mask(request), response.resources)
        page = self._ops.list(
            business_id=request.business_id,
            location_id=request.location_id,
            resource_type=request.resource_type,
            start_range=_interval(request, "start_time_range"),
            overlaps=_interval(request, "overlaps"),
            data_contains=(
                _document(request.data_contains, "data_contains")
                if request.HasField("data_contains")
                else None
            ),
            order_by=request.order_by,
            page_size=request.page_size,
            page_token=request.page_token,
            budget=budget,
            filter_text=request.filter,
        )
        response.next_page_token = page.next_page_token
        if page.total_size is not None:
            response.total_size = page.total_size
        return response

    def AggregateResources(
        self, request: resource_pb2.AggregateResourcesRequest, context: grpc.ServicerContext
    ) -> resource_pb2.AggregateResourcesResponse:
        result = self._ops.aggregate(
            business_id=request.business_id,
            location_id=request.location_id,
            resource_type=request.resource_type,
            filter_text=request.filter,
            value_field=request.value_field,
            group_by=list(request.group_by),
            max_groups=request.max_groups,
        )
        response = resource_pb2.AggregateResourcesResponse(truncated=result.truncated)
        for group in result.groups:
            message = response.groups.add(count=group.count, sum=group.sum, min=group.min, max=group.max)
            for key in group.keys:
                message.keys.add().CopyFrom(_json_value(key))
        return response

    def GetLocationStatistics(
        self, request: resource_pb2.GetLocationStatisticsRequest, context: grpc.ServicerContext
    ) -> resource_pb2.LocationStatistics:
        found = self._ops.statistics(business_id=request.business_id, location_id=request.location_id)
        response = resource_pb2.LocationStatistics(time_zone=found.time_zone)
        response.as_of.FromDatetime(found.as_of)
        for statistic in found.statistics:
            response.statistics.add(
                name=statistic.name,
                resource_type=statistic.resource_type,
                value=statistic.value,
                breakdown=statistic.breakdown,
            )
        for activity in found.recent_activities:
            item = response.recent_activities.add(
                resource_type=activity.resource_type, resource_id=activity.resource_id
            )
            item.create_time.FromDatetime(activity.create_time)
            item.update_time.FromDatetime(activity.update_time)
        return response

    def UpdateResource(
        self, request: resource_pb2.UpdateResourceRequest, context: grpc.ServicerContext
    ) -> resource_pb2.Resource:
        r = request.resource
        key = ResourceKey(r.business_id, r.location_id, r.resource_type, r.resource_id)
        updated = self._ops.update(
            key,
            UpdateRequest(
                paths=list(request.update_mask.paths),
                data_paths=list(request.data_paths),
                data=_document(r.data, "resource.data"),
                start_time=_instant(r, "start_time", "resource.start_time"),
                end_time=_instant(r, "end_time", "resource.end_time"),
                etag=r.etag,
            ),
        )
        return to_proto(updated)

    def DeleteResource(
        self, request: resource_pb2.DeleteResourceRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        key = ResourceKey(
            request.business_id, request.location_id, request.resource_type, request.resource_id
        )
        self._ops.delete(key, etag=request.etag)
        return empty_pb2.Empty()

    def ListResourceChanges(
        self, request: resource_pb2.ListResourceChangesRequest, context: grpc.ServicerContext
    ) -> resource_pb2.ListResourceChangesResponse:
        page = self._ops.list_changes(
            business_id=request.business_id,
            location_id=request.location_id,
            resource_types=list(request.resource_types),
            resource_id=request.resource_id,
            principal=request.principal,
            change_time=_interval(request, "change_time_range"),
            order_by=request.order_by,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        response = resource_pb2.ListResourceChangesResponse(next_page_token=page.next_page_token)
        for change in page.changes:
            _fill_change(response.changes.add(), change)
        return response

    def ListResourceTypes(
        self, request: resource_pb2.ListResourceTypesRequest, context: grpc.ServicerContext
    ) -> resource_pb2.ListResourceTypesResponse:
        business_type = _BUSINESS_TYPE_NAMES.get(request.business_type)
        if business_type is None:
            raise InvalidArgument.field(
                "business_type", "is required: BUSINESS_TYPE_DENTAL, BUSINESS_TYPE_GYM or BUSINESS_TYPE_HOTEL"
            )
        common = common_types()
        return resource_pb2.ListResourceTypesResponse(
            resource_types=[
                resource_pb2.ResourceType(
                    name=name,
                    common=name in common,
                    permissions=_type_permissions(name),
                )
                for name in sorted(catalog_types(business_type))
            ],
            administration_permissions=[
                resource_pb2.AdministrationPermission(permission=p.permission, description=p.description)
                for p in permissions.ADMIN_PERMISSIONS
            ],
        )


_CHANGE_KINDS = {
    ChangeKind.CREATED: resource_pb2.CHANGE_KIND_CREATED,
    ChangeKind.UPDATED: resource_pb2.CHANGE_KIND_UPDATED,
    ChangeKind.DELETED: resource_pb2.CHANGE_KIND_DELETED,
}


def _fill_change(message: resource_pb2.ResourceChange, change: ResourceChange) -> None:
    key = change.key
    message.sequence = change.sequence
    message.kind = _CHANGE_KINDS[change.kind]
    message.business_id = key.business_id
    message.location_id = key.location_id
    message.resource_type = key.resource_type
    message.resource_id = key.resource_id
    message.etag = change.etag
    message.changed_paths.extend(change.paths)
    message.principal = change.principal
    _set_timestamp(message.change_time, change.change_time)


def _type_permissions(resource_type: str) -> resource_pb2.ResourceTypePermissions:
    strings = permissions.type_permissions(resource_type)
    return resource_pb2.ResourceTypePermissions(
        read=strings["read"],
        create=strings["create"],
        update=strings["update"],
        delete=strings["delete"],
        all=strings["*"],
    )
