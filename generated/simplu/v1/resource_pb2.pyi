import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.type import interval_pb2 as _interval_pb2
from simplu.v1 import business_pb2 as _business_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_KIND_UNSPECIFIED: _ClassVar[ChangeKind]
    CHANGE_KIND_CREATED: _ClassVar[ChangeKind]
    CHANGE_KIND_UPDATED: _ClassVar[ChangeKind]
    CHANGE_KIND_DELETED: _ClassVar[ChangeKind]
CHANGE_KIND_UNSPECIFIED: ChangeKind
CHANGE_KIND_CREATED: ChangeKind
CHANGE_KIND_UPDATED: ChangeKind
CHANGE_KIND_DELETED: ChangeKind

class Resource(_message.Message):
    __slots__ = ("business_id", "location_id", "resource_type", "resource_id", "business_type", "data", "start_time", "end_time", "create_time", "update_time", "etag")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    BUSINESS_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    resource_type: str
    resource_id: str
    business_type: _business_pb2.BusinessType
    data: _struct_pb2.Struct
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., resource_type: _Optional[str] = ..., resource_id: _Optional[str] = ..., business_type: _Optional[_Union[_business_pb2.BusinessType, str]] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class ResourceKey(_message.Message):
    __slots__ = ("location_id", "resource_type", "resource_id")
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    location_id: str
    resource_type: str
    resource_id: str
    def __init__(self, location_id: _Optional[str] = ..., resource_type: _Optional[str] = ..., resource_id: _Optional[str] = ...) -> None: ...

class CreateResourceRequest(_message.Message):
    __slots__ = ("resource", "resource_id", "request_id")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    resource: Resource
    resource_id: str
    request_id: str
    def __init__(self, resource: _Optional[_Union[Resource, _Mapping]] = ..., resource_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetResourceRequest(_message.Message):
    __slots__ = ("business_id", "location_id", "resource_type", "resource_id", "read_mask")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    READ_MASK_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    resource_type: str
    resource_id: str
    read_mask: _field_mask_pb2.FieldMask
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., resource_type: _Optional[str] = ..., resource_id: _Optional[str] = ..., read_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class BatchGetResourcesRequest(_message.Message):
    __slots__ = ("business_id", "keys", "read_mask", "page_token")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    READ_MASK_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    keys: _containers.RepeatedCompositeFieldContainer[ResourceKey]
    read_mask: _field_mask_pb2.FieldMask
    page_token: str
    def __init__(self, business_id: _Optional[str] = ..., keys: _Optional[_Iterable[_Union[ResourceKey, _Mapping]]] = ..., read_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., page_token: _Optional[str] = ...) -> None: ...

class BatchGetResourcesResponse(_message.Message):
    __slots__ = ("resources", "missing", "next_page_token")
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    missing: _containers.RepeatedCompositeFieldContainer[ResourceKey]
    next_page_token: str
    def __init__(self, resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ..., missing: _Optional[_Iterable[_Union[ResourceKey, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListResourcesRequest(_message.Message):
    __slots__ = ("business_id", "location_id", "resource_type", "start_time_range", "overlaps", "data_contains", "order_by", "filter", "page_size", "page_token", "read_mask")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_RANGE_FIELD_NUMBER: _ClassVar[int]
    OVERLAPS_FIELD_NUMBER: _ClassVar[int]
    DATA_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    READ_MASK_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    resource_type: str
    start_time_range: _interval_pb2.Interval
    overlaps: _interval_pb2.Interval
    data_contains: _struct_pb2.Struct
    order_by: str
    filter: str
    page_size: int
    page_token: str
    read_mask: _field_mask_pb2.FieldMask
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., resource_type: _Optional[str] = ..., start_time_range: _Optional[_Union[_interval_pb2.Interval, _Mapping]] = ..., overlaps: _Optional[_Union[_interval_pb2.Interval, _Mapping]] = ..., data_contains: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., order_by: _Optional[str] = ..., filter: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., read_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class ListResourcesResponse(_message.Message):
    __slots__ = ("resources", "next_page_token", "total_size")
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    next_page_token: str
    total_size: int
    def __init__(self, resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class AggregateResourcesRequest(_message.Message):
    __slots__ = ("business_id", "location_id", "resource_type", "filter", "value_field", "group_by", "max_groups")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    MAX_GROUPS_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    resource_type: str
    filter: str
    value_field: str
    group_by: _containers.RepeatedScalarFieldContainer[str]
    max_groups: int
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., resource_type: _Optional[str] = ..., filter: _Optional[str] = ..., value_field: _Optional[str] = ..., group_by: _Optional[_Iterable[str]] = ..., max_groups: _Optional[int] = ...) -> None: ...

class AggregateResourcesResponse(_message.Message):
    __slots__ = ("groups", "truncated")
    class Group(_message.Message):
        __slots__ = ("keys", "count", "sum", "min", "max")
        KEYS_FIELD_NUMBER: _ClassVar[int]
        COUNT_FIELD_NUMBER: _ClassVar[int]
        SUM_FIELD_NUMBER: _ClassVar[int]
        MIN_FIELD_NUMBER: _ClassVar[int]
        MAX_FIELD_NUMBER: _ClassVar[int]
        keys: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
        count: int
        sum: float
        min: float
        max: float
        def __init__(self, keys: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ..., count: _Optional[int] = ..., sum: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[AggregateResourcesResponse.Group]
    truncated: bool
    def __init__(self, groups: _Optional[_Iterable[_Union[AggregateResourcesResponse.Group, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class GetLocationStatisticsRequest(_message.Message):
    __slots__ = ("business_id", "location_id")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ...) -> None: ...

class LocationStatistics(_message.Message):
    __slots__ = ("as_of", "time_zone", "statistics", "recent_activities")
    class Statistic(_message.Message):
        __slots__ = ("name", "resource_type", "value", "breakdown")
        class BreakdownEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: int
            def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
        NAME_FIELD_NUMBER: _ClassVar[int]
        RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        BREAKDOWN_FIELD_NUMBER: _ClassVar[int]
        name: str
        resource_type: str
        value: float
        breakdown: _containers.ScalarMap[str, int]
        def __init__(self, name: _Optional[str] = ..., resource_type: _Optional[str] = ..., value: _Optional[float] = ..., breakdown: _Optional[_Mapping[str, int]] = ...) -> None: ...
    class Activity(_message.Message):
        __slots__ = ("resource_type", "resource_id", "create_time", "update_time", "kind", "change_time", "principal")
        RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
        RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
        CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
        UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
        KIND_FIELD_NUMBER: _ClassVar[int]
        CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
        PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
        resource_type: str
        resource_id: str
        create_time: _timestamp_pb2.Timestamp
        update_time: _timestamp_pb2.Timestamp
        kind: ChangeKind
        change_time: _timestamp_pb2.Timestamp
        principal: str
        def __init__(self, resource_type: _Optional[str] = ..., resource_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[ChangeKind, str]] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., principal: _Optional[str] = ...) -> None: ...
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    RECENT_ACTIVITIES_FIELD_NUMBER: _ClassVar[int]
    as_of: _timestamp_pb2.Timestamp
    time_zone: str
    statistics: _containers.RepeatedCompositeFieldContainer[LocationStatistics.Statistic]
    recent_activities: _containers.RepeatedCompositeFieldContainer[LocationStatistics.Activity]
    def __init__(self, as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., time_zone: _Optional[str] = ..., statistics: _Optional[_Iterable[_Union[LocationStatistics.Statistic, _Mapping]]] = ..., recent_activities: _Optional[_Iterable[_Union[LocationStatistics.Activity, _Mapping]]] = ...) -> None: ...

class UpdateResourceRequest(_message.Message):
    __slots__ = ("resource", "update_mask", "data_paths")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    DATA_PATHS_FIELD_NUMBER: _ClassVar[int]
    resource: Resource
    update_mask: _field_mask_pb2.FieldMask
    data_paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, resource: _Optional[_Union[Resource, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., data_paths: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteResourceRequest(_message.Message):
    __slots__ = ("business_id", "location_id", "resource_type", "resource_id", "etag")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    resource_type: str
    resource_id: str
    etag: str
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., resource_type: _Optional[str] = ..., resource_id: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class ListResourceTypesRequest(_message.Message):
    __slots__ = ("business_type",)
    BUSINESS_TYPE_FIELD_NUMBER: _ClassVar[int]
    business_type: _business_pb2.BusinessType
    def __init__(self, business_type: _Optional[_Union[_business_pb2.BusinessType, str]] = ...) -> None: ...

class ResourceTypePermissions(_message.Message):
    __slots__ = ("read", "create", "update", "delete", "all")
    READ_FIELD_NUMBER: _ClassVar[int]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    read: str
    create: str
    update: str
    delete: str
    all: str
    def __init__(self, read: _Optional[str] = ..., create: _Optional[str] = ..., update: _Optional[str] = ..., delete: _Optional[str] = ..., all: _Optional[str] = ...) -> None: ...

class ResourceType(_message.Message):
    __slots__ = ("name", "common", "permissions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMMON_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    common: bool
    permissions: ResourceTypePermissions
    def __init__(self, name: _Optional[str] = ..., common: _Optional[bool] = ..., permissions: _Optional[_Union[ResourceTypePermissions, _Mapping]] = ...) -> None: ...

class AdministrationPermission(_message.Message):
    __slots__ = ("permission", "description")
    PERMISSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    permission: str
    description: str
    def __init__(self, permission: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ListResourceTypesResponse(_message.Message):
    __slots__ = ("resource_types", "administration_permissions")
    RESOURCE_TYPES_FIELD_NUMBER: _ClassVar[int]
    ADMINISTRATION_PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    resource_types: _containers.RepeatedCompositeFieldContainer[ResourceType]
    administration_permissions: _containers.RepeatedCompositeFieldContainer[AdministrationPermission]
    def __init__(self, resource_types: _Optional[_Iterable[_Union[ResourceType, _Mapping]]] = ..., administration_permissions: _Optional[_Iterable[_Union[AdministrationPermission, _Mapping]]] = ...) -> None: ...

class ResourceChange(_message.Message):
    __slots__ = ("sequence", "kind", "business_id", "location_id", "resource_type", "resource_id", "etag", "changed_paths", "principal", "change_time", "resource")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    CHANGED_PATHS_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    kind: ChangeKind
    business_id: str
    location_id: str
    resource_type: str
    resource_id: str
    etag: str
    changed_paths: _containers.RepeatedScalarFieldContainer[str]
    principal: str
    change_time: _timestamp_pb2.Timestamp
    resource: Resource
    def __init__(self, sequence: _Optional[int] = ..., kind: _Optional[_Union[ChangeKind, str]] = ..., business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., resource_type: _Optional[str] = ..., resource_id: _Optional[str] = ..., etag: _Optional[str] = ..., changed_paths: _Optional[_Iterable[str]] = ..., principal: _Optional[str] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resource: _Optional[_Union[Resource, _Mapping]] = ...) -> None: ...

class ListResourceChangesRequest(_message.Message):
    __slots__ = ("business_id", "location_id", "resource_types", "resource_id", "principal", "change_time_range", "order_by", "page_size", "page_token")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPES_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_RANGE_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    resource_types: _containers.RepeatedScalarFieldContainer[str]
    resource_id: str
    principal: str
    change_time_range: _interval_pb2.Interval
    order_by: str
    page_size: int
    page_token: str
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., resource_types: _Optional[_Iterable[str]] = ..., resource_id: _Optional[str] = ..., principal: _Optional[str] = ..., change_time_range: _Optional[_Union[_interval_pb2.Interval, _Mapping]] = ..., order_by: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListResourceChangesResponse(_message.Message):
    __slots__ = ("changes", "next_page_token")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[ResourceChange]
    next_page_token: str
    def __init__(self, changes: _Optional[_Iterable[_Union[ResourceChange, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchResourcesRequest(_message.Message):
    __slots__ = ("business_id", "location_id", "resource_types", "resume_token")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPES_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    resource_types: _containers.RepeatedScalarFieldContainer[str]
    resume_token: str
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., resource_types: _Optional[_Iterable[str]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class WatchResourcesResponse(_message.Message):
    __slots__ = ("change", "resume_token")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    change: ResourceChange
    resume_token: str
    def __init__(self, change: _Optional[_Union[ResourceChange, _Mapping]] = ..., resume_token: _Optional[str] = ...) -> None: ...
