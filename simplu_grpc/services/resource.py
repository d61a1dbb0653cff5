"""ResourceService servicer: protobuf in, one ResourceOps use case, protobuf out."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from google.protobuf import empty_pb2
from simplu.v1 import resource_pb2, resource_pb2_grpc

from simplu_grpc.domain.auth import permissions
from simplu_grpc.domain.resources.catalog import catalog_types, common_types
from simplu_grpc.domain.resources.model import (
    ResourceKey,
)
from simplu_grpc.domain.resources.ops import ResourceOps
from simplu_grpc.domain.resources.validation import UpdateRequest
from simplu_grpc.domain.watch_ops import WatchOps
from simplu_grpc.errors import InvalidArgument
from simplu_grpc.services.resource_proto import (
    BUSINESS_TYPE_NAMES,
    CHANGE_KINDS,
    ResponseBudget,
    document_from_struct,
    fill,
    fill_change,
    instant_from,
    interval_from,
    json_value,
    key_from_proto,
    key_to_proto,
    read_mask,
    to_proto,
    type_permissions,
)
from simplu_grpc.services.resource_watch import watch_resources

SERVICE = resource_pb2.DESCRIPTOR.services_by_name["ResourceService"]


class ResourceServicer(resource_pb2_grpc.ResourceServiceServicer):
    """Every method: the request converted, one use case (the caller comes from the request context)."""

    def __init__(self, ops: ResourceOps, watch: WatchOps, *, response_max_bytes: int = 3 << 20) -> None:
        self._ops = ops
        self._response_max_bytes = response_max_bytes
        self._watch = watch

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
            data=document_from_struct(r.data, "resource.data"),
            start_time=instant_from(r, "start_time", "resource.start_time"),
            end_time=instant_from(r, "end_time", "resource.end_time"),
            request_id=request.request_id,
        )
        return to_proto(stored)

    def GetResource(
        self, request: resource_pb2.GetResourceRequest, context: grpc.ServicerContext
    ) -> resource_pb2.Resource:
        mask = read_mask(request)
        key = ResourceKey(
            request.business_id, request.location_id, request.resource_type, request.resource_id
        )
        return to_proto(self._ops.get(key), mask)

    def BatchGetResources(
        self, request: resource_pb2.BatchGetResourcesRequest, context: grpc.ServicerContext
    ) -> resource_pb2.BatchGetResourcesResponse:
        response = resource_pb2.BatchGetResourcesResponse()
        budget = ResponseBudget(self._response_max_bytes, read_mask(request), response.resources)
        result = self._ops.batch_get(
            request.business_id,
            [key_from_proto(k, request.business_id) for k in request.keys],
            page_token=request.page_token,
            binding_extra=list(request.read_mask.paths),
            budget=budget,
        )
        response.missing.extend(key_to_proto(k) for k in result.missing)
        response.next_page_token = result.next_page_token
        return response

    def ListResources(
        self, request: resource_pb2.ListResourcesRequest, context: grpc.ServicerContext
    ) -> resource_pb2.ListResourcesResponse:
        response = resource_pb2.ListResourcesResponse()
        budget = ResponseBudget(self._response_max_bytes, read_mask(request), response.resources)
        page = self._ops.list(
            business_id=request.business_id,
            location_id=request.location_id,
            resource_type=request.resource_type,
            start_range=interval_from(request, "start_time_range"),
            overlaps=interval_from(request, "overlaps"),
            data_contains=(
                document_from_struct(request.data_contains, "data_contains")
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
                message.keys.add().CopyFrom(json_value(key))
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
                resource_type=activity.resource_type,
                resource_id=activity.resource_id,
                principal=activity.principal,
                kind=CHANGE_KINDS[activity.kind] if activity.kind else resource_pb2.CHANGE_KIND_UNSPECIFIED,
            )
            item.change_time.FromDatetime(activity.change_time)
            if activity.create_time is not None:
                item.create_time.FromDatetime(activity.create_time)
            if activity.update_time is not None:
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
                data=document_from_struct(r.data, "resource.data"),
                start_time=instant_from(r, "start_time", "resource.start_time"),
                end_time=instant_from(r, "end_time", "resource.end_time"),
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
            change_time=interval_from(request, "change_time_range"),
            order_by=request.order_by,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        response = resource_pb2.ListResourceChangesResponse(next_page_token=page.next_page_token)
        for change in page.changes:
            fill_change(response.changes.add(), change)
        return response

    def WatchResources(
        self, request: resource_pb2.WatchResourcesRequest, context: grpc.ServicerContext
    ) -> Iterator[resource_pb2.WatchResourcesResponse]:
        return watch_resources(
            self._watch, request, changes=fill_change, resources=fill, on_end=context.add_callback
        )

    def ListResourceTypes(
        self, request: resource_pb2.ListResourceTypesRequest, context: grpc.ServicerContext
    ) -> resource_pb2.ListResourceTypesResponse:
        business_type = BUSINESS_TYPE_NAMES.get(request.business_type)
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
                    permissions=type_permissions(name),
                )
                for name in sorted(catalog_types(business_type))
            ],
            administration_permissions=[
                resource_pb2.AdministrationPermission(permission=p.permission, description=p.description)
                for p in permissions.ADMIN_PERMISSIONS
            ],
        )
