"""ShardAdminService servicer: proto <-> domain only; every RPC first requires a platform admin.

What the domain does not know (None: a count Citrus did not report, a schema version not read,
a latency not measured) stays unset on the wire: the proto's ``optional`` fields and messages
say "unknown" by their absence, never by a 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import grpc
from google.protobuf import duration_pb2
from simplu.v1 import shard_admin_pb2, shard_admin_pb2_grpc

from simplu_grpc import context
from simplu_grpc.domain.admin.consistency import FindingKind
from simplu_grpc.domain.admin.console import ShardAdmin
from simplu_grpc.domain.admin.routing import LocationShardView
from simplu_grpc.domain.admin.shards import UsageOrder
from simplu_grpc.domain.admin.usage import TenantOrder, TenantUsageReport
from simplu_grpc.domain.auth.authz import Authorizer
from simplu_grpc.domain.location_moves.service import LocationMoves
from simplu_grpc.domain.pool_stats import PoolStatsInfo
from simplu_grpc.errors import InvalidArgument
from simplu_grpc.services.business_proto import TYPE_FROM_PROTO, timestamp
from simplu_grpc.services.location_moves import LocationMoveRpcs

T = TypeVar("T")
_FINDINGS = {
    FindingKind.LOCATION_NOT_REGISTERED: shard_admin_pb2.FINDING_KIND_LOCATION_NOT_REGISTERED,
    FindingKind.SHARD_UNREACHABLE: shard_admin_pb2.FINDING_KIND_SHARD_UNREACHABLE,
    FindingKind.SHARD_NOT_MIGRATED: shard_admin_pb2.FINDING_KIND_SHARD_NOT_MIGRATED,
    FindingKind.ORPHAN_RESOURCES: shard_admin_pb2.FINDING_KIND_ORPHAN_RESOURCES,
    FindingKind.SHARD_INACTIVE: shard_admin_pb2.FINDING_KIND_SHARD_INACTIVE,
    FindingKind.CITRUS_UNAVAILABLE: shard_admin_pb2.FINDING_KIND_CITRUS_UNAVAILABLE,
}
_TENANT_ORDERS: dict[int, TenantOrder] = {
    shard_admin_pb2.TENANT_USAGE_ORDER_UNSPECIFIED: TenantOrder.SHARD_TIME,
    shard_admin_pb2.TENANT_USAGE_ORDER_SHARD_TIME: TenantOrder.SHARD_TIME,
    shard_admin_pb2.TENANT_USAGE_ORDER_REQUESTS: TenantOrder.REQUESTS,
    shard_admin_pb2.TENANT_USAGE_ORDER_ERRORS: TenantOrder.ERRORS,
    shard_admin_pb2.TENANT_USAGE_ORDER_ROWS: TenantOrder.ROWS,
    shard_admin_pb2.TENANT_USAGE_ORDER_STORED_ROWS: TenantOrder.STORED_ROWS,
    shard_admin_pb2.TENANT_USAGE_ORDER_STORED_BYTES: TenantOrder.STORED_BYTES,
}


class ShardAdminServicer(LocationMoveRpcs, shard_admin_pb2_grpc.ShardAdminServiceServicer):
    """The operators' console; errors are domain errors, mapped to statuses by the interceptor."""

    def __init__(
        self,
        *,
        admin: ShardAdmin,
        authorizer: Authorizer,
        moves: LocationMoves,
    ) -> None:
        self._admin = admin
        self._authorizer = authorizer
        self._moves = moves

    def _require_admin(self) -> None:
        self._authorizer.require_admin(context.principal())

    def ListShards(
        self, request: shard_admin_pb2.ListShardsRequest, _: grpc.ServicerContext
    ) -> shard_admin_pb2.ListShardsResponse:
        self._require_admin()
        result = self._admin.shards.list_shards()
        response = shard_admin_pb2.ListShardsResponse(
            citrus_reachable=result.citrus_reachable,
            citrus_error=result.citrus_error,
            near_capacity_threshold=result.near_capacity_threshold,
        )
        for shard in result.shards:
            info = response.shards.add(
                shard_id=shard.shard_id,
                active=shard.active,
                business_count=shard.business_count,
                max_businesses=shard.max_businesses,
                usage_percentage=shard.usage_percentage,
                near_capacity=shard.near_capacity,
                listed_by_citrus=shard.listed_by_citrus,
                schema_version=shard.schema_version,
            )
            if shard.last_health_check is not None:
                info.last_health_check_time.CopyFrom(timestamp(shard.last_health_check))
            if shard.pool is not None:
                info.pool.CopyFrom(_pool_stats(shard.pool))
        return response

    def GetShardUsage(
        self, request: shard_admin_pb2.GetShardUsageRequest, _: grpc.ServicerContext
    ) -> shard_admin_pb2.GetShardUsageResponse:
        self._require_admin()
        order = UsageOrder.parse(request.order_by)
        rows = self._admin.shards.shard_usage(order, request.near_capacity_only)
        return shard_admin_pb2.GetShardUsageResponse(
            usage=[
                shard_admin_pb2.ShardUsage(
                    shard_id=row.shard_id,
                    business_count=row.business_count,
                    max_businesses=row.max_businesses,
                    usage_percentage=row.usage_percentage,
                    active=row.is_active,
                    near_capacity=row.near_capacity,
                )
                for row in rows
            ],
            near_capacity_threshold=self._admin.shards.near_capacity_percent,
        )

    def CheckShardCapacity(
        self, request: shard_admin_pb2.CheckShardCapacityRequest, _: grpc.ServicerContext
    ) -> shard_admin_pb2.CheckShardCapacityResponse:
        self._require_admin()
        capacity = self._admin.shards.check_capacity(request.shard_id)
        return shard_admin_pb2.CheckShardCapacityResponse(
            shard_id=capacity.shard_id,
            can_accept_new_business=capacity.can_accept_new_business,
            business_count=capacity.business_count,
            max_businesses=capacity.max_businesses,
        )

    def GetLocationShard(
        self, request: shard_admin_pb2.GetLocationShardRequest, _: grpc.ServicerContext
    ) -> shard_admin_pb2.LocationShard:
        self._require_admin()
        view = self._admin.locations.location_shard(
            request.business_id, request.location_id, refresh=request.refresh
        )
        return _location_shard(view)

    def RegisterLocation(
        self, request: shard_admin_pb2.RegisterLocationRequest, _: grpc.ServicerContext
    ) -> shard_admin_pb2.LocationShard:
        self._require_admin()
        # Unset: the business's own type; a number proto3 let through but the enum lacks: rejected.
        kind = (
            _known(TYPE_FROM_PROTO, request.business_type, "business_type") if request.business_type else None
        )
        view = self._admin.locations.register_location(request.business_id, request.location_id, kind)
        return _location_shard(view)

    def ListPools(
        self, request: shard_admin_pb2.ListPoolsRequest, _: grpc.ServicerContext
    ) -> shard_admin_pb2.ListPoolsResponse:
        self._require_admin()
        return shard_admin_pb2.ListPoolsResponse(
            pools=[_pool_stats(s) for s in self._admin.shards.list_pools()]
        )

    def RecyclePool(
        self, request: shard_admin_pb2.RecyclePoolRequest, _: grpc.ServicerContext
    ) -> shard_admin_pb2.PoolStats:
        self._require_admin()
        return _pool_stats(self._admin.shards.recycle_pool(request.shard_id))

    def InvalidateRouting(
        self, request: shard_admin_pb2.InvalidateRoutingRequest, _: grpc.ServicerContext
    ) -> shard_admin_pb2.InvalidateRoutingResponse:
        self._require_admin()
        dropped = self._admin.locations.invalidate_routing(
            request.business_id, request.location_id, request.all
        )
        return shard_admin_pb2.InvalidateRoutingResponse(dropped=dropped)

    def MigrateShard(
        self, request: shard_admin_pb2.MigrateShardRequest, _: grpc.ServicerContext
    ) -> shard_admin_pb2.MigrateShardResponse:
        self._require_admin()
        outcomes = self._admin.migrations.migrate(request.shard_id, request.all_shards)
        return shard_admin_pb2.MigrateShardResponse(
            shards=[
                shard_admin_pb2.ShardMigration(
                    shard_id=o.shard_id,
                    version_before=o.version_before,
                    version_after=o.version_after,
                    applied=o.applied_versions,
                    error=o.error,
                )
                for o in outcomes
            ],
            target_version=self._admin.migrations.target_version,
        )

    def GetDependencyStatus(
        self, request: shard_admin_pb2.GetDependencyStatusRequest, _: grpc.ServicerContext
    ) -> shard_admin_pb2.GetDependencyStatusResponse:
        self._require_admin()
        checks = self._admin.dependencies.dependency_status()
        response = shard_admin_pb2.GetDependencyStatusResponse(all_up=all(c.up for c in checks))
        for check in checks:
            status = response.dependencies.add(name=check.name, up=check.up, error=check.error)
            if check.latency_seconds is not None:
                status.latency.CopyFrom(_duration(check.latency_seconds))
            status.checked_time.CopyFrom(timestamp(check.checked_at))
        return response

    def CheckConsistency(
        self, request: shard_admin_pb2.CheckConsistencyRequest, _: grpc.ServicerContext
    ) -> shard_admin_pb2.CheckConsistencyResponse:
        self._require_admin()
        reports, next_token = self._admin.consistency.check(
            request.business_id, request.page_size, request.page_token
        )
        response = shard_admin_pb2.CheckConsistencyResponse(next_page_token=next_token)
        for report in reports:
            business = response.businesses.add(business_id=report.business_id, consistent=report.consistent)
            for finding in report.findings:
                business.findings.add(
                    kind=_FINDINGS[finding.kind],
                    location_id=finding.location_id,
                    shard_id=finding.shard_id,
                    # A resource count belongs to orphans only; for other kinds it is not a 0.
                    count=finding.count if finding.kind is FindingKind.ORPHAN_RESOURCES else None,
                    detail=finding.detail,
                )
        return response

    def GetTenantUsage(
        self, request: shard_admin_pb2.GetTenantUsageRequest, _: grpc.ServicerContext
    ) -> shard_admin_pb2.GetTenantUsageResponse:
        self._require_admin()
        report = self._admin.usage.usage(
            shard_id=request.shard_id,
            window_minutes=request.window_minutes,
            order=_known(_TENANT_ORDERS, request.order_by, "order_by"),
            limit=request.page_size,
        )
        return _tenant_usage(report)


def _tenant_usage(report: TenantUsageReport) -> shard_admin_pb2.GetTenantUsageResponse:
    response = shard_admin_pb2.GetTenantUsageResponse(
        replica=shard_admin_pb2.ReplicaInfo(host=report.replica.host, pid=report.replica.pid),
        window_minutes=report.window_minutes,
        load_exact=report.load_exact,
        tracked_locations=report.tracked,
        top_k=report.capacity,
    )
    response.window_start.FromNanoseconds(int(report.window_start * 1e9))
    response.window_end.FromNanoseconds(int(report.window_end * 1e9))
    for row in report.tenants:
        tenant = response.tenants.add(
            shard_id=row.shard_id,
            business_id=row.business_id,
            location_id=row.location_id,
            stored_rows=row.stored_rows,
            stored_bytes=row.stored_bytes,
        )
        if row.load is not None:
            load = row.load
            tenant.load.requests = load.requests
            tenant.load.errors = load.errors
            tenant.load.rows_read = load.rows_read
            tenant.load.rows_written = load.rows_written
            tenant.load.shard_time.FromNanoseconds(load.shard_ns)
            tenant.load.shard_time_overcount.FromNanoseconds(load.overcount_ns)
        for kind in row.storage:
            tenant.storage.add(resource_type=kind.resource_type, rows=kind.rows, bytes=kind.bytes)
    for note in report.storage:
        response.storage.add(
            shard_id=note.shard_id,
            exact=note.exact,
            sampled_percent=note.sampled_percent,
            table_bytes=note.table_bytes,
            estimated_rows=note.estimated_rows,
            error=note.error,
        )
    return response


def _known(mapping: Mapping[int, T], value: int, field: str) -> T:
    """An enum value this server knows; proto3 accepts any number, so unknown ones are INVALID_ARGUMENT."""
    found = mapping.get(int(value))
    if found is None:
        raise InvalidArgument.field(field, f"unknown value {int(value)}")
    return found


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(max(0.0, seconds) * 1e9))
    return duration


def _pool_stats(stats: PoolStatsInfo) -> shard_admin_pb2.PoolStats:
    message = shard_admin_pb2.PoolStats(
        shard_id=stats.shard_id,
        target=stats.target,
        pool_min=stats.pool_min,
        pool_max=stats.pool_max,
        pool_size=stats.pool_size,
        pool_available=stats.pool_available,
        requests_waiting=stats.requests_waiting,
        requests_num=stats.requests_num,
        requests_errors=stats.requests_errors,
        connections_num=stats.connections_num,
        connections_errors=stats.connections_errors,
        connections_lost=stats.connections_lost,
    )
    if stats.create_time is not None:
        message.create_time.CopyFrom(timestamp(stats.create_time))
    if stats.last_used_time is not None:
        message.last_used_time.CopyFrom(timestamp(stats.last_used_time))
    return message


def _location_shard(view: LocationShardView) -> shard_admin_pb2.LocationShard:
    message = shard_admin_pb2.LocationShard(
        business_id=view.business_id,
        location_id=view.location_id,
        shard_id=view.shard_id,
        active=view.active,
        from_cache=view.from_cache,
        target=view.target,
    )
    if view.from_cache:
        message.cache_age.CopyFrom(_duration(view.cache_age_seconds))
    return message
