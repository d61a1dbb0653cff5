import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from simplu.v1 import business_pb2 as _business_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FindingKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINDING_KIND_UNSPECIFIED: _ClassVar[FindingKind]
    FINDING_KIND_LOCATION_NOT_REGISTERED: _ClassVar[FindingKind]
    FINDING_KIND_SHARD_UNREACHABLE: _ClassVar[FindingKind]
    FINDING_KIND_SHARD_NOT_MIGRATED: _ClassVar[FindingKind]
    FINDING_KIND_ORPHAN_RESOURCES: _ClassVar[FindingKind]
    FINDING_KIND_SHARD_INACTIVE: _ClassVar[FindingKind]
    FINDING_KIND_CITRUS_UNAVAILABLE: _ClassVar[FindingKind]

class TenantUsageOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TENANT_USAGE_ORDER_UNSPECIFIED: _ClassVar[TenantUsageOrder]
    TENANT_USAGE_ORDER_SHARD_TIME: _ClassVar[TenantUsageOrder]
    TENANT_USAGE_ORDER_REQUESTS: _ClassVar[TenantUsageOrder]
    TENANT_USAGE_ORDER_ERRORS: _ClassVar[TenantUsageOrder]
    TENANT_USAGE_ORDER_ROWS: _ClassVar[TenantUsageOrder]
    TENANT_USAGE_ORDER_STORED_ROWS: _ClassVar[TenantUsageOrder]
    TENANT_USAGE_ORDER_STORED_BYTES: _ClassVar[TenantUsageOrder]

class LocationMovePhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOCATION_MOVE_PHASE_UNSPECIFIED: _ClassVar[LocationMovePhase]
    LOCATION_MOVE_PHASE_COPYING: _ClassVar[LocationMovePhase]
    LOCATION_MOVE_PHASE_CATCHING_UP: _ClassVar[LocationMovePhase]
    LOCATION_MOVE_PHASE_SWITCHED: _ClassVar[LocationMovePhase]
    LOCATION_MOVE_PHASE_FINALIZING: _ClassVar[LocationMovePhase]
    LOCATION_MOVE_PHASE_FINALIZED: _ClassVar[LocationMovePhase]
    LOCATION_MOVE_PHASE_REVERTING: _ClassVar[LocationMovePhase]
    LOCATION_MOVE_PHASE_REVERTED: _ClassVar[LocationMovePhase]
    LOCATION_MOVE_PHASE_FAILED: _ClassVar[LocationMovePhase]
FINDING_KIND_UNSPECIFIED: FindingKind
FINDING_KIND_LOCATION_NOT_REGISTERED: FindingKind
FINDING_KIND_SHARD_UNREACHABLE: FindingKind
FINDING_KIND_SHARD_NOT_MIGRATED: FindingKind
FINDING_KIND_ORPHAN_RESOURCES: FindingKind
FINDING_KIND_SHARD_INACTIVE: FindingKind
FINDING_KIND_CITRUS_UNAVAILABLE: FindingKind
TENANT_USAGE_ORDER_UNSPECIFIED: TenantUsageOrder
TENANT_USAGE_ORDER_SHARD_TIME: TenantUsageOrder
TENANT_USAGE_ORDER_REQUESTS: TenantUsageOrder
TENANT_USAGE_ORDER_ERRORS: TenantUsageOrder
TENANT_USAGE_ORDER_ROWS: TenantUsageOrder
TENANT_USAGE_ORDER_STORED_ROWS: TenantUsageOrder
TENANT_USAGE_ORDER_STORED_BYTES: TenantUsageOrder
LOCATION_MOVE_PHASE_UNSPECIFIED: LocationMovePhase
LOCATION_MOVE_PHASE_COPYING: LocationMovePhase
LOCATION_MOVE_PHASE_CATCHING_UP: LocationMovePhase
LOCATION_MOVE_PHASE_SWITCHED: LocationMovePhase
LOCATION_MOVE_PHASE_FINALIZING: LocationMovePhase
LOCATION_MOVE_PHASE_FINALIZED: LocationMovePhase
LOCATION_MOVE_PHASE_REVERTING: LocationMovePhase
LOCATION_MOVE_PHASE_REVERTED: LocationMovePhase
LOCATION_MOVE_PHASE_FAILED: LocationMovePhase

class PoolStats(_message.Message):
    __slots__ = ("shard_id", "target", "pool_min", "pool_max", "pool_size", "pool_available", "requests_waiting", "requests_num", "requests_errors", "connections_num", "connections_errors", "connections_lost", "create_time", "last_used_time")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    POOL_MIN_FIELD_NUMBER: _ClassVar[int]
    POOL_MAX_FIELD_NUMBER: _ClassVar[int]
    POOL_SIZE_FIELD_NUMBER: _ClassVar[int]
    POOL_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_WAITING_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_NUM_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_ERRORS_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_NUM_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_ERRORS_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_LOST_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_TIME_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    target: str
    pool_min: int
    pool_max: int
    pool_size: int
    pool_available: int
    requests_waiting: int
    requests_num: int
    requests_errors: int
    connections_num: int
    connections_errors: int
    connections_lost: int
    create_time: _timestamp_pb2.Timestamp
    last_used_time: _timestamp_pb2.Timestamp
    def __init__(self, shard_id: _Optional[str] = ..., target: _Optional[str] = ..., pool_min: _Optional[int] = ..., pool_max: _Optional[int] = ..., pool_size: _Optional[int] = ..., pool_available: _Optional[int] = ..., requests_waiting: _Optional[int] = ..., requests_num: _Optional[int] = ..., requests_errors: _Optional[int] = ..., connections_num: _Optional[int] = ..., connections_errors: _Optional[int] = ..., connections_lost: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_used_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ShardInfo(_message.Message):
    __slots__ = ("shard_id", "active", "last_health_check_time", "business_count", "max_businesses", "usage_percentage", "near_capacity", "listed_by_citrus", "pool", "schema_version")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    LAST_HEALTH_CHECK_TIME_FIELD_NUMBER: _ClassVar[int]
    BUSINESS_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_BUSINESSES_FIELD_NUMBER: _ClassVar[int]
    USAGE_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    NEAR_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LISTED_BY_CITRUS_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    active: bool
    last_health_check_time: _timestamp_pb2.Timestamp
    business_count: int
    max_businesses: int
    usage_percentage: float
    near_capacity: bool
    listed_by_citrus: bool
    pool: PoolStats
    schema_version: int
    def __init__(self, shard_id: _Optional[str] = ..., active: _Optional[bool] = ..., last_health_check_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., business_count: _Optional[int] = ..., max_businesses: _Optional[int] = ..., usage_percentage: _Optional[float] = ..., near_capacity: _Optional[bool] = ..., listed_by_citrus: _Optional[bool] = ..., pool: _Optional[_Union[PoolStats, _Mapping]] = ..., schema_version: _Optional[int] = ...) -> None: ...

class ListShardsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListShardsResponse(_message.Message):
    __slots__ = ("shards", "citrus_reachable", "citrus_error", "near_capacity_threshold")
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    CITRUS_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    CITRUS_ERROR_FIELD_NUMBER: _ClassVar[int]
    NEAR_CAPACITY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    shards: _containers.RepeatedCompositeFieldContainer[ShardInfo]
    citrus_reachable: bool
    citrus_error: str
    near_capacity_threshold: float
    def __init__(self, shards: _Optional[_Iterable[_Union[ShardInfo, _Mapping]]] = ..., citrus_reachable: _Optional[bool] = ..., citrus_error: _Optional[str] = ..., near_capacity_threshold: _Optional[float] = ...) -> None: ...

class ShardUsage(_message.Message):
    __slots__ = ("shard_id", "business_count", "max_businesses", "usage_percentage", "active", "near_capacity")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    BUSINESS_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_BUSINESSES_FIELD_NUMBER: _ClassVar[int]
    USAGE_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    NEAR_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    business_count: int
    max_businesses: int
    usage_percentage: float
    active: bool
    near_capacity: bool
    def __init__(self, shard_id: _Optional[str] = ..., business_count: _Optional[int] = ..., max_businesses: _Optional[int] = ..., usage_percentage: _Optional[float] = ..., active: _Optional[bool] = ..., near_capacity: _Optional[bool] = ...) -> None: ...

class GetShardUsageRequest(_message.Message):
    __slots__ = ("order_by", "near_capacity_only")
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    NEAR_CAPACITY_ONLY_FIELD_NUMBER: _ClassVar[int]
    order_by: str
    near_capacity_only: bool
    def __init__(self, order_by: _Optional[str] = ..., near_capacity_only: _Optional[bool] = ...) -> None: ...

class GetShardUsageResponse(_message.Message):
    __slots__ = ("usage", "near_capacity_threshold")
    USAGE_FIELD_NUMBER: _ClassVar[int]
    NEAR_CAPACITY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    usage: _containers.RepeatedCompositeFieldContainer[ShardUsage]
    near_capacity_threshold: float
    def __init__(self, usage: _Optional[_Iterable[_Union[ShardUsage, _Mapping]]] = ..., near_capacity_threshold: _Optional[float] = ...) -> None: ...

class CheckShardCapacityRequest(_message.Message):
    __slots__ = ("shard_id",)
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    def __init__(self, shard_id: _Optional[str] = ...) -> None: ...

class CheckShardCapacityResponse(_message.Message):
    __slots__ = ("shard_id", "can_accept_new_business", "business_count", "max_businesses")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    CAN_ACCEPT_NEW_BUSINESS_FIELD_NUMBER: _ClassVar[int]
    BUSINESS_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_BUSINESSES_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    can_accept_new_business: bool
    business_count: int
    max_businesses: int
    def __init__(self, shard_id: _Optional[str] = ..., can_accept_new_business: _Optional[bool] = ..., business_count: _Optional[int] = ..., max_businesses: _Optional[int] = ...) -> None: ...

class GetLocationShardRequest(_message.Message):
    __slots__ = ("business_id", "location_id", "refresh")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    REFRESH_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    refresh: bool
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., refresh: _Optional[bool] = ...) -> None: ...

class LocationShard(_message.Message):
    __slots__ = ("business_id", "location_id", "shard_id", "active", "from_cache", "cache_age", "target")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    FROM_CACHE_FIELD_NUMBER: _ClassVar[int]
    CACHE_AGE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    shard_id: str
    active: bool
    from_cache: bool
    cache_age: _duration_pb2.Duration
    target: str
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., shard_id: _Optional[str] = ..., active: _Optional[bool] = ..., from_cache: _Optional[bool] = ..., cache_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., target: _Optional[str] = ...) -> None: ...

class RegisterLocationRequest(_message.Message):
    __slots__ = ("business_id", "location_id", "business_type")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    BUSINESS_TYPE_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    business_type: _business_pb2.BusinessType
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., business_type: _Optional[_Union[_business_pb2.BusinessType, str]] = ...) -> None: ...

class ListPoolsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoolsResponse(_message.Message):
    __slots__ = ("pools",)
    POOLS_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[PoolStats]
    def __init__(self, pools: _Optional[_Iterable[_Union[PoolStats, _Mapping]]] = ...) -> None: ...

class RecyclePoolRequest(_message.Message):
    __slots__ = ("shard_id",)
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    def __init__(self, shard_id: _Optional[str] = ...) -> None: ...

class InvalidateRoutingRequest(_message.Message):
    __slots__ = ("business_id", "location_id", "all")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    all: bool
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., all: _Optional[bool] = ...) -> None: ...

class InvalidateRoutingResponse(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: int
    def __init__(self, dropped: _Optional[int] = ...) -> None: ...

class MigrateShardRequest(_message.Message):
    __slots__ = ("shard_id", "all_shards")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    ALL_SHARDS_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    all_shards: bool
    def __init__(self, shard_id: _Optional[str] = ..., all_shards: _Optional[bool] = ...) -> None: ...

class ShardMigration(_message.Message):
    __slots__ = ("shard_id", "version_before", "version_after", "applied", "error")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_BEFORE_FIELD_NUMBER: _ClassVar[int]
    VERSION_AFTER_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    version_before: int
    version_after: int
    applied: _containers.RepeatedScalarFieldContainer[int]
    error: str
    def __init__(self, shard_id: _Optional[str] = ..., version_before: _Optional[int] = ..., version_after: _Optional[int] = ..., applied: _Optional[_Iterable[int]] = ..., error: _Optional[str] = ...) -> None: ...

class MigrateShardResponse(_message.Message):
    __slots__ = ("shards", "target_version")
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    shards: _containers.RepeatedCompositeFieldContainer[ShardMigration]
    target_version: int
    def __init__(self, shards: _Optional[_Iterable[_Union[ShardMigration, _Mapping]]] = ..., target_version: _Optional[int] = ...) -> None: ...

class GetDependencyStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DependencyStatus(_message.Message):
    __slots__ = ("name", "up", "latency", "error", "checked_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CHECKED_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    up: bool
    latency: _duration_pb2.Duration
    error: str
    checked_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., up: _Optional[bool] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., error: _Optional[str] = ..., checked_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetDependencyStatusResponse(_message.Message):
    __slots__ = ("dependencies", "all_up")
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    ALL_UP_FIELD_NUMBER: _ClassVar[int]
    dependencies: _containers.RepeatedCompositeFieldContainer[DependencyStatus]
    all_up: bool
    def __init__(self, dependencies: _Optional[_Iterable[_Union[DependencyStatus, _Mapping]]] = ..., all_up: _Optional[bool] = ...) -> None: ...

class CheckConsistencyRequest(_message.Message):
    __slots__ = ("business_id", "page_size", "page_token")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    page_size: int
    page_token: str
    def __init__(self, business_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ConsistencyFinding(_message.Message):
    __slots__ = ("kind", "location_id", "shard_id", "count", "detail")
    KIND_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: FindingKind
    location_id: str
    shard_id: str
    count: int
    detail: str
    def __init__(self, kind: _Optional[_Union[FindingKind, str]] = ..., location_id: _Optional[str] = ..., shard_id: _Optional[str] = ..., count: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class BusinessConsistency(_message.Message):
    __slots__ = ("business_id", "consistent", "findings")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    CONSISTENT_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    consistent: bool
    findings: _containers.RepeatedCompositeFieldContainer[ConsistencyFinding]
    def __init__(self, business_id: _Optional[str] = ..., consistent: _Optional[bool] = ..., findings: _Optional[_Iterable[_Union[ConsistencyFinding, _Mapping]]] = ...) -> None: ...

class CheckConsistencyResponse(_message.Message):
    __slots__ = ("businesses", "next_page_token")
    BUSINESSES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    businesses: _containers.RepeatedCompositeFieldContainer[BusinessConsistency]
    next_page_token: str
    def __init__(self, businesses: _Optional[_Iterable[_Union[BusinessConsistency, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetTenantUsageRequest(_message.Message):
    __slots__ = ("shard_id", "window_minutes", "order_by", "page_size")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MINUTES_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    window_minutes: int
    order_by: TenantUsageOrder
    page_size: int
    def __init__(self, shard_id: _Optional[str] = ..., window_minutes: _Optional[int] = ..., order_by: _Optional[_Union[TenantUsageOrder, str]] = ..., page_size: _Optional[int] = ...) -> None: ...

class TenantLoad(_message.Message):
    __slots__ = ("requests", "errors", "rows_read", "rows_written", "shard_time", "shard_time_overcount")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ROWS_READ_FIELD_NUMBER: _ClassVar[int]
    ROWS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    SHARD_TIME_FIELD_NUMBER: _ClassVar[int]
    SHARD_TIME_OVERCOUNT_FIELD_NUMBER: _ClassVar[int]
    requests: int
    errors: int
    rows_read: int
    rows_written: int
    shard_time: _duration_pb2.Duration
    shard_time_overcount: _duration_pb2.Duration
    def __init__(self, requests: _Optional[int] = ..., errors: _Optional[int] = ..., rows_read: _Optional[int] = ..., rows_written: _Optional[int] = ..., shard_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., shard_time_overcount: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ResourceTypeStorage(_message.Message):
    __slots__ = ("resource_type", "rows", "bytes")
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    resource_type: str
    rows: int
    bytes: int
    def __init__(self, resource_type: _Optional[str] = ..., rows: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class TenantUsage(_message.Message):
    __slots__ = ("shard_id", "business_id", "location_id", "load", "storage", "stored_rows", "stored_bytes")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    STORED_ROWS_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    business_id: str
    location_id: str
    load: TenantLoad
    storage: _containers.RepeatedCompositeFieldContainer[ResourceTypeStorage]
    stored_rows: int
    stored_bytes: int
    def __init__(self, shard_id: _Optional[str] = ..., business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., load: _Optional[_Union[TenantLoad, _Mapping]] = ..., storage: _Optional[_Iterable[_Union[ResourceTypeStorage, _Mapping]]] = ..., stored_rows: _Optional[int] = ..., stored_bytes: _Optional[int] = ...) -> None: ...

class ShardStorageInfo(_message.Message):
    __slots__ = ("shard_id", "exact", "sampled_percent", "table_bytes", "estimated_rows", "error")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_PERCENT_FIELD_NUMBER: _ClassVar[int]
    TABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_ROWS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    exact: bool
    sampled_percent: float
    table_bytes: int
    estimated_rows: int
    error: str
    def __init__(self, shard_id: _Optional[str] = ..., exact: _Optional[bool] = ..., sampled_percent: _Optional[float] = ..., table_bytes: _Optional[int] = ..., estimated_rows: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class ReplicaInfo(_message.Message):
    __slots__ = ("host", "pid")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    host: str
    pid: int
    def __init__(self, host: _Optional[str] = ..., pid: _Optional[int] = ...) -> None: ...

class GetTenantUsageResponse(_message.Message):
    __slots__ = ("tenants", "replica", "window_minutes", "window_start", "window_end", "load_exact", "tracked_locations", "top_k", "storage")
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MINUTES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    LOAD_EXACT_FIELD_NUMBER: _ClassVar[int]
    TRACKED_LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[TenantUsage]
    replica: ReplicaInfo
    window_minutes: int
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    load_exact: bool
    tracked_locations: int
    top_k: int
    storage: _containers.RepeatedCompositeFieldContainer[ShardStorageInfo]
    def __init__(self, tenants: _Optional[_Iterable[_Union[TenantUsage, _Mapping]]] = ..., replica: _Optional[_Union[ReplicaInfo, _Mapping]] = ..., window_minutes: _Optional[int] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., load_exact: _Optional[bool] = ..., tracked_locations: _Optional[int] = ..., top_k: _Optional[int] = ..., storage: _Optional[_Iterable[_Union[ShardStorageInfo, _Mapping]]] = ...) -> None: ...

class MoveVerification(_message.Message):
    __slots__ = ("source_rows", "target_rows", "source_checksum", "target_checksum", "matched", "verify_time")
    SOURCE_ROWS_FIELD_NUMBER: _ClassVar[int]
    TARGET_ROWS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    TARGET_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    VERIFY_TIME_FIELD_NUMBER: _ClassVar[int]
    source_rows: int
    target_rows: int
    source_checksum: str
    target_checksum: str
    matched: bool
    verify_time: _timestamp_pb2.Timestamp
    def __init__(self, source_rows: _Optional[int] = ..., target_rows: _Optional[int] = ..., source_checksum: _Optional[str] = ..., target_checksum: _Optional[str] = ..., matched: _Optional[bool] = ..., verify_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LocationMove(_message.Message):
    __slots__ = ("move_id", "business_id", "location_id", "source_shard_id", "target_shard_id", "phase", "rows_copied", "changes_copied", "lag", "verification", "error", "create_time", "update_time", "switch_time", "freeze_duration", "requested")
    MOVE_ID_FIELD_NUMBER: _ClassVar[int]
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ROWS_COPIED_FIELD_NUMBER: _ClassVar[int]
    CHANGES_COPIED_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SWITCH_TIME_FIELD_NUMBER: _ClassVar[int]
    FREEZE_DURATION_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_FIELD_NUMBER: _ClassVar[int]
    move_id: str
    business_id: str
    location_id: str
    source_shard_id: str
    target_shard_id: str
    phase: LocationMovePhase
    rows_copied: int
    changes_copied: int
    lag: int
    verification: MoveVerification
    error: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    switch_time: _timestamp_pb2.Timestamp
    freeze_duration: _duration_pb2.Duration
    requested: str
    def __init__(self, move_id: _Optional[str] = ..., business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., source_shard_id: _Optional[str] = ..., target_shard_id: _Optional[str] = ..., phase: _Optional[_Union[LocationMovePhase, str]] = ..., rows_copied: _Optional[int] = ..., changes_copied: _Optional[int] = ..., lag: _Optional[int] = ..., verification: _Optional[_Union[MoveVerification, _Mapping]] = ..., error: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., switch_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., freeze_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., requested: _Optional[str] = ...) -> None: ...

class StartLocationMoveRequest(_message.Message):
    __slots__ = ("business_id", "location_id", "target_shard_id")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    target_shard_id: str
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., target_shard_id: _Optional[str] = ...) -> None: ...

class GetLocationMoveRequest(_message.Message):
    __slots__ = ("move_id",)
    MOVE_ID_FIELD_NUMBER: _ClassVar[int]
    move_id: str
    def __init__(self, move_id: _Optional[str] = ...) -> None: ...

class ListLocationMovesRequest(_message.Message):
    __slots__ = ("business_id", "open_only")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    OPEN_ONLY_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    open_only: bool
    def __init__(self, business_id: _Optional[str] = ..., open_only: _Optional[bool] = ...) -> None: ...

class ListLocationMovesResponse(_message.Message):
    __slots__ = ("moves", "unreachable_shard_ids")
    MOVES_FIELD_NUMBER: _ClassVar[int]
    UNREACHABLE_SHARD_IDS_FIELD_NUMBER: _ClassVar[int]
    moves: _containers.RepeatedCompositeFieldContainer[LocationMove]
    unreachable_shard_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, moves: _Optional[_Iterable[_Union[LocationMove, _Mapping]]] = ..., unreachable_shard_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RevertLocationMoveRequest(_message.Message):
    __slots__ = ("move_id",)
    MOVE_ID_FIELD_NUMBER: _ClassVar[int]
    move_id: str
    def __init__(self, move_id: _Optional[str] = ...) -> None: ...

class FinalizeLocationMoveRequest(_message.Message):
    __slots__ = ("move_id",)
    MOVE_ID_FIELD_NUMBER: _ClassVar[int]
    move_id: str
    def __init__(self, move_id: _Optional[str] = ...) -> None: ...
