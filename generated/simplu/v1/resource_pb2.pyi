import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from simplu.v1 import business_pb2 as _business_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Resource(_message.Message):
    __slots__ = ("business_id", "location_id", "resource_name", "resource_id", "business_type", "data", "start_date", "end_date", "create_time", "update_time", "etag")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    BUSINESS_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    resource_name: str
    resource_id: str
    business_type: _business_pb2.BusinessType
    data: _struct_pb2.Struct
    start_date: str
    end_date: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., resource_name: _Optional[str] = ..., resource_id: _Optional[str] = ..., business_type: _Optional[_Union[_business_pb2.BusinessType, str]] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., start_date: _Optional[str] = ..., end_date: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class ResourceKey(_message.Message):
    __slots__ = ("location_id", "resource_name", "resource_id")
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    location_id: str
    resource_name: str
    resource_id: str
    def __init__(self, location_id: _Optional[str] = ..., resource_name: _Optional[str] = ..., resource_id: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("business_id", "location_id", "resource_name", "resource_id")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    resource_name: str
    resource_id: str
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., resource_name: _Optional[str] = ..., resource_id: _Optional[str] = ...) -> None: ...

class BatchGetResourcesRequest(_message.Message):
    __slots__ = ("business_id", "keys")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    keys: _containers.RepeatedCompositeFieldContainer[ResourceKey]
    def __init__(self, business_id: _Optional[str] = ..., keys: _Optional[_Iterable[_Union[ResourceKey, _Mapping]]] = ...) -> None: ...

class BatchGetResourcesResponse(_message.Message):
    __slots__ = ("resources", "missing")
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    missing: _containers.RepeatedCompositeFieldContainer[ResourceKey]
    def __init__(self, resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ..., missing: _Optional[_Iterable[_Union[ResourceKey, _Mapping]]] = ...) -> None: ...

class ListResourcesRequest(_message.Message):
    __slots__ = ("business_id", "location_id", "resource_name", "start_from", "start_to", "data_contains", "order_by", "page_size", "page_token")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    START_FROM_FIELD_NUMBER: _ClassVar[int]
    START_TO_FIELD_NUMBER: _ClassVar[int]
    DATA_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    resource_name: str
    start_from: str
    start_to: str
    data_contains: _struct_pb2.Struct
    order_by: str
    page_size: int
    page_token: str
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., resource_name: _Optional[str] = ..., start_from: _Optional[str] = ..., start_to: _Optional[str] = ..., data_contains: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., order_by: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListResourcesResponse(_message.Message):
    __slots__ = ("resources", "next_page_token")
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    next_page_token: str
    def __init__(self, resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateResourceRequest(_message.Message):
    __slots__ = ("resource", "update_mask")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    resource: Resource
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, resource: _Optional[_Union[Resource, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class DeleteResourceRequest(_message.Message):
    __slots__ = ("business_id", "location_id", "resource_name", "resource_id", "etag")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    resource_name: str
    resource_id: str
    etag: str
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., resource_name: _Optional[str] = ..., resource_id: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...
