"""ResourceService servicer: protobuf in, one ResourceOps use case, protobuf out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import empty_pb2, json_format, struct_pb2, timestamp_pb2
from simplu.v1 import business_pb2, resource_pb2, resource_pb2_grpc

from simplu_grpc.domain.resource_ops import ResourceOps
from simplu_grpc.domain.resources import ResourceKey, StoredResource, format_timestamp
from simplu_grpc.errors import InvalidArgument

SERVICE = resource_pb2.DESCRIPTOR.services_by_name["ResourceService"]

_BUSINESS_TYPES = {
    "dental": business_pb2.BUSINESS_TYPE_DENTAL,
    "gym": business_pb2.BUSINESS_TYPE_GYM,
    "hotel": business_pb2.BUSINESS_TYPE_HOTEL,
}


def _document(struct: struct_pb2.Struct, field: str) -> dict[str, Any]:
    try:
        converted = json_format.MessageToDict(struct)
    except ValueError:
        # NaN and infinities have no JSON form: protobuf refuses them here, before validation.
        raise InvalidArgument.field(field, "numbers must be finite") from None
    # A Struct always converts to a JSON object.
    return converted


def to_proto(stored: StoredResource) -> resource_pb2.Resource:
    message = resource_pb2.Resource()
    fill(message, stored)
    return message


def fill(message: resource_pb2.Resource, stored: StoredResource) -> None:
    """Write ``stored`` into an empty ``message`` (a list fills the response's own repeated
    entries in place: building separate messages and passing them in would copy each one)."""
    key = stored.key
    message.business_id = key.business_id
    message.location_id = key.location_id
    message.resource_name = key.resource_name
    message.resource_id = key.resource_id
    message.business_type = _BUSINESS_TYPES.get(stored.business_type, business_pb2.BUSINESS_TYPE_UNSPECIFIED)
    if stored.start_date:
        message.start_date = format_timestamp(stored.start_date)
    if stored.end_date:
        message.end_date = format_timestamp(stored.end_date)
    message.etag = stored.etag
    message.data.update(stored.data)
    _set_timestamp(message.create_time, stored.create_time)
    _set_timestamp(message.update_time, stored.update_time)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _set_timestamp(field: timestamp_pb2.Timestamp, value: datetime) -> None:
    """``Timestamp.FromDatetime`` for an aware datetime, at a quarter of its cost."""
    since = value - _EPOCH
    field.seconds = since.days * 86_400 + since.seconds
    field.nanos = since.microseconds * 1000


def _key(message: resource_pb2.ResourceKey, business_id: str) -> ResourceKey:
    return ResourceKey(business_id, message.location_id, message.resource_name, message.resource_id)


class ResourceServicer(resource_pb2_grpc.ResourceServiceServicer):
    """Every method: the request converted, one use case (the caller comes from the request context)."""

    def __init__(self, ops: ResourceOps) -> None:
        self._ops = ops

    def CreateResource(
        self, request: resource_pb2.CreateResourceRequest, context: grpc.ServicerContext
    ) -> resource_pb2.Resource:
        r = request.resource
        stored, _ = self._ops.create(
            business_id=r.business_id,
            location_id=r.location_id,
            resource_name=r.resource_name,
            # The request field wins; resource.resource_id is accepted as well (AIP-133 allows either).
            resource_id=request.resource_id or r.resource_id,
            data=_document(r.data, "resource.data"),
            start_date=r.start_date,
            end_date=r.end_date,
            request_id=request.request_id,
        )
        return to_proto(stored)

    def GetResource(
        self, request: resource_pb2.GetResourceRequest, context: grpc.ServicerContext
    ) -> resource_pb2.Resource:
        key = ResourceKey(
            request.business_id, request.location_id, request.resource_name, request.resource_id
        )
        return to_proto(self._ops.get(key))

    def BatchGetResources(
        self, request: resource_pb2.BatchGetResourcesRequest, context: grpc.ServicerContext
    ) -> resource_pb2.BatchGetResourcesResponse:
        result = self._ops.batch_get(
            request.business_id, [_key(k, request.business_id) for k in request.keys]
        )
        response = resource_pb2.BatchGetResourcesResponse(
            missing=[
                resource_pb2.ResourceKey(
                    location_id=k.location_id, resource_name=k.resource_name, resource_id=k.resource_id
                )
                for k in result.missing
            ],
        )
        for found in result.found:
            fill(response.resources.add(), found)
        return response

    def ListResources(
        self, request: resource_pb2.ListResourcesRequest, context: grpc.ServicerContext
    ) -> resource_pb2.ListResourcesResponse:
        page = self._ops.list(
            business_id=request.business_id,
            location_id=request.location_id,
            resource_name=request.resource_name,
            start_from=request.start_from,
            start_to=request.start_to,
            data_contains=(
                _document(request.data_contains, "data_contains")
                if request.HasField("data_contains")
                else None
            ),
            order_by=request.order_by,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        response = resource_pb2.ListResourcesResponse(next_page_token=page.next_page_token)
        for found in page.resources:
            fill(response.resources.add(), found)
        return response

    def UpdateResource(
        self, request: resource_pb2.UpdateResourceRequest, context: grpc.ServicerContext
    ) -> resource_pb2.Resource:
        r = request.resource
        key = ResourceKey(r.business_id, r.location_id, r.resource_name, r.resource_id)
        updated = self._ops.update(
            key,
            paths=list(request.update_mask.paths),
            data=_document(r.data, "resource.data"),
            start_date=r.start_date,
            end_date=r.end_date,
            etag=r.etag,
        )
        return to_proto(updated)

    def DeleteResource(
        self, request: resource_pb2.DeleteResourceRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        key = ResourceKey(
            request.business_id, request.location_id, request.resource_name, request.resource_id
        )
        self._ops.delete(key, etag=request.etag)
        return empty_pb2.Empty()
