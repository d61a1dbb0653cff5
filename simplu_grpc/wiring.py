"""Wiring: builds the real adapters from Settings into ``Deps``, and closes them at shutdown.

The one place that knows which adapter implements what; ``build_server`` only sees ``Deps``.
Each feature adds its adapters here (in dependency order), registers a closer for anything
holding connections or threads, and a readiness check where the dependency is essential.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta

from simplu_grpc.adapters.business_store import BusinessStore, make_dynamodb_client
from simplu_grpc.adapters.citrus import CitrusClient
from simplu_grpc.adapters.jwks import JwksClient
from simplu_grpc.adapters.move_copier import MoveCopier
from simplu_grpc.adapters.move_placement import (
    DirectoryPlacement,
    LegacyLocationReader,
    RegisteredPlacement,
    ShardCatalog,
)
from simplu_grpc.adapters.move_state import MoveState
from simplu_grpc.adapters.pools import PoolRegistry
from simplu_grpc.adapters.shard_directory import (
    CitrusDirectory,
    SingleDatabaseDirectory,
    single_database_dsn,
)
from simplu_grpc.adapters.shard_store import ShardStore
from simplu_grpc.adapters.shard_tls import shard_tls
from simplu_grpc.adapters.storage_usage import StorageReader
from simplu_grpc.domain.admin import ShardAdminService
from simplu_grpc.domain.admin_usage import Replica, TenantUsageQuery
from simplu_grpc.domain.authz import Authorizer
from simplu_grpc.domain.business_cache import BusinessCache
from simplu_grpc.domain.business_ops import BusinessOps, probe_check
from simplu_grpc.domain.location_moves.adoption import Adopted, adopt
from simplu_grpc.domain.location_moves.engine import MoveEngine, MoveLimits
from simplu_grpc.domain.location_moves.runner import MoveRunner
from simplu_grpc.domain.location_moves.service import BusinessReader, LocationMoves
from simplu_grpc.domain.resource_ops import Limits, ResourceOps
from simplu_grpc.domain.routing import RoutingCache, ShardDirectory
from simplu_grpc.domain.shards import ShardAssignment
from simplu_grpc.domain.tenant_load import LoadOrder, TenantLoad
from simplu_grpc.domain.tokens import TokenVerifier
from simplu_grpc.errors import FailedPrecondition
from simplu_grpc.metrics import Metrics, TenantGauge
from simplu_grpc.server import Deps
from simplu_grpc.settings import Settings

# After a location's switch, how long past the routing cache's TTL a replica may still be reading
# from the old shard (one stale-while-revalidate answer, then the background refresh lands).
_ROUTE_REFRESH_MARGIN_SECONDS = 5.0
# A JWKS document is tiny; a slow endpoint should not hold the start (or a token) for long.
JWKS_TIMEOUT_SECONDS = 5.0


def build_deps(settings: Settings) -> Deps:
    """Every adapter the server needs, connected and ready; closes what it built if a step fails."""
    metrics = Metrics()
    jwks = JwksClient(url=settings.jwks_url, timeout_seconds=JWKS_TIMEOUT_SECONDS, metrics=metrics)
    deps = Deps(
        metrics=metrics,
        verifier=TokenVerifier(
            issuer=settings.cognito_issuer,
            client_ids=settings.cognito_client_ids,
            jwks=jwks,
            leeway_seconds=settings.jwt_leeway_seconds,
            metrics=metrics,
        ),
        jwks=jwks,
    )
    deps.closers.append(jwks.close)
    try:
        # A failed load is tolerated (logged): the first token with an unknown kid retries.
        jwks.load()
        # --- BusinessService adapters ---
        deps.authorizer = Authorizer(admin_group=settings.admin_group)
        dynamodb = make_dynamodb_client(settings)
        deps.closers.append(dynamodb.close)
        deps.business_store = BusinessStore(
            table=settings.dynamodb_business_info_table, client=dynamodb, metrics=metrics
        )
        deps.business_cache = BusinessCache(
            deps.business_store,
            ttl_seconds=settings.business_cache_ttl_seconds,
            stale_max_seconds=settings.business_cache_stale_max_seconds,
            failure_backoff_seconds=settings.cache_failure_backoff_seconds,
            metrics=metrics,
        )
        deps.closers.append(deps.business_cache.close)
        deps.readiness_checks.append(probe_check(deps.business_store.probe))
        if settings.citrus_server_url:
            deps.citrus = citrus_client(settings, metrics)
            deps.closers.append(deps.citrus.close)
            deps.readiness_checks.append(probe_check(deps.citrus.probe))
        deps.business_ops = BusinessOps(
            store=deps.business_store,
            cache=deps.business_cache,
            authorizer=deps.authorizer,
            citrus=deps.citrus,
        )
        # --- ResourceService adapters ---
        # Single-database mode: the one database also answers the Citrus questions ShardAdmin asks.
        admin_shards: CitrusClient | SingleDatabaseDirectory
        admin_probes = {"dynamodb": deps.business_store.probe, "jwks": jwks.probe}
        if deps.citrus is not None:
            deps.shard_directory = CitrusDirectory(
                deps.citrus, on_registered=deps.business_ops.note_registered
            )
            admin_shards = deps.citrus
            admin_probes["citrus"] = deps.citrus.probe
        else:
            deps.shard_directory = admin_shards = SingleDatabaseDirectory(single_database_dsn(settings))
        deps.routing = RoutingCache(
            deps.shard_directory,
            ttl=settings.routing_cache_ttl_seconds,
            stale_max=settings.routing_stale_max_seconds,
            failure_backoff=settings.cache_failure_backoff_seconds,
            metrics=metrics,
        )
        deps.closers.append(deps.routing.close)
        metrics.watch_shards(deps.routing.shards)
        deps.pools = PoolRegistry.from_settings(settings, metrics)
        # Registered after the Citrus client: closers run last-first, so pools close first.
        deps.closers.append(deps.pools.close)
        metrics.watch_pools(deps.pools.gauges)
        tenant_load = TenantLoad(capacity=settings.tenant_usage_top_k)
        if settings.tenant_metrics_top:
            metrics.watch_tenants(top_tenants(tenant_load, settings.tenant_metrics_top))
        deps.resource_ops = ResourceOps(
            businesses=deps.business_cache,
            authorizer=deps.authorizer,
            routing=deps.routing,
            pools=deps.pools,
            limits=Limits(
                max_bytes=settings.resource_data_max_bytes, max_depth=settings.resource_data_max_depth
            ),
            load=tenant_load,
            store=ShardStore(change_retention=timedelta(seconds=settings.change_retention_seconds)),
        )
        # --- ShardAdmin components ---
        deps.shard_admin = ShardAdminService(
            shards=admin_shards,
            pools=deps.pools,
            routing=deps.routing,
            businesses=deps.business_store,
            near_capacity_percent=settings.shard_near_capacity_percent,
            probes=admin_probes,
            on_registered=deps.business_ops.note_registered,
            secrets=(settings.citrus_api_key, settings.database_password),
        )
        deps.tenant_usage = TenantUsageQuery(
            load=tenant_load,
            storage=StorageReader(),
            shards=admin_shards,
            pools=deps.pools,
            replica=this_replica(),
            secrets=(settings.citrus_api_key, settings.database_password),
        )
        deps.location_moves, runner = build_location_moves(
            settings,
            pools=deps.pools,
            routing=deps.routing,
            directory=deps.shard_directory,
            catalog=admin_shards,
            citrus=deps.citrus,
            businesses=deps.business_store,
        )
        # Registered after the pools: closers run last-first, so moves stop before pools close.
        deps.closers.append(runner.close)
        runner.start()
    except BaseException:
        close_deps(deps)
        raise
    return deps


def citrus_client(settings: Settings, metrics: Metrics) -> CitrusClient:
    """The Citrus client of CITRUS_SERVER_URL (set: the caller checked), with the shards' TLS floor."""
    return CitrusClient(
        base_url=settings.citrus_server_url or "",
        api_key=settings.citrus_api_key,
        timeout_ms=settings.citrus_timeout_ms,
        retry_attempts=settings.citrus_retry_attempts,
        metrics=metrics,
        tls=shard_tls(settings),
    )


def this_replica() -> Replica:
    """This process as GetTenantUsage names it: the host name (the pod's on Kubernetes) and pid."""
    return Replica(host=socket.gethostname(), pid=os.getpid())


def top_tenants(load: TenantLoad, count: int) -> Callable[[], list[TenantGauge]]:
    """The ``count`` tenants with the most shard time over the last 5 minutes, for /metrics."""

    def read() -> list[TenantGauge]:
        report = load.top(minutes=5, order=LoadOrder.SHARD_TIME, limit=count)
        return [
            TenantGauge(
                shard_id=t.shard_id,
                business_id=t.business_id,
                location_id=t.location_id,
                shard_seconds=t.shard_ns / 1e9,
                requests=t.requests,
                errors=t.errors,
                rows=t.rows_read + t.rows_written,
            )
            for t in report.tenants
        ]

    return read


def close_deps(deps: Deps) -> None:
    """Close every adapter (pools, HTTP clients), last built first."""
    deps.close()


def build_location_moves(
    settings: Settings,
    *,
    pools: PoolRegistry,
    routing: RoutingCache,
    directory: ShardDirectory,
    catalog: ShardCatalog,
    citrus: CitrusClient | None,
    businesses: BusinessReader,
    extra_shards: Sequence[ShardAssignment] = (),
    owner: str | None = None,
) -> tuple[LocationMoves, MoveRunner]:
    """The location-move use cases and this replica's move runner (not started)."""
    placement = DirectoryPlacement(
        directory=directory,
        catalog=catalog,
        placer=citrus,
        forget=routing.invalidate,
        extra_shards=extra_shards,
    )
    records = MoveState(pools)
    engine = MoveEngine(
        copier=MoveCopier(pools),
        placement=placement,
        limits=MoveLimits(batch_rows=settings.move_batch_rows, freeze_lag=settings.move_freeze_lag),
    )
    runner = MoveRunner(
        records=records,
        engine=engine,
        placement=placement,
        owner=owner or f"{this_replica().host}:{this_replica().pid}:{uuid.uuid4().hex[:8]}",
        lease_seconds=settings.move_lease_seconds,
        scan_interval=settings.move_scan_seconds,
    )
    moves = LocationMoves(
        records=records,
        placement=placement,
        runner=runner,
        businesses=businesses,
        # The routing cache's TTL plus its background refresh: then every replica asked Citrus again.
        route_settle_seconds=settings.routing_cache_ttl_seconds + _ROUTE_REFRESH_MARGIN_SECONDS,
    )
    return moves, runner


def run_move_to_citrus(
    settings: Settings, *, finalize: bool, dry_run: bool, on_done: Callable[[Adopted], None]
) -> list[Adopted]:
    """``simplu-grpc move-to-citrus``: every location of the single database (``DATABASE_*``) onto
    the shard Citrus assigns it (CITRUS_SERVER_URL must be set)."""
    if not settings.citrus_server_url:
        raise FailedPrecondition("move-to-citrus needs CITRUS_SERVER_URL (and DATABASE_* for the database)")
    metrics = Metrics()
    citrus = citrus_client(settings, metrics)
    pools = PoolRegistry.from_settings(settings, metrics)
    legacy = SingleDatabaseDirectory(single_database_dsn(settings)).assignment
    placement = DirectoryPlacement(
        directory=CitrusDirectory(citrus),
        catalog=citrus,
        # Citrus already routes each location to its shard (registered before the copy): the
        # switch only checks that it still does.
        placer=RegisteredPlacement(citrus),
        forget=lambda _b, _l: None,
        extra_shards=[legacy],
    )
    records = MoveState(pools)
    runner = MoveRunner(
        records=records,
        engine=MoveEngine(
            copier=MoveCopier(pools),
            placement=placement,
            limits=MoveLimits(batch_rows=settings.move_batch_rows, freeze_lag=settings.move_freeze_lag),
        ),
        placement=placement,
        owner=f"move-to-citrus:{this_replica().host}:{this_replica().pid}",
        lease_seconds=settings.move_lease_seconds,
        scan_interval=settings.move_scan_seconds,
        retry_delay=1.0,
    )
    try:
        return adopt(
            legacy=legacy,
            locations=LegacyLocationReader(pools),
            citrus=citrus,
            records=records,
            runner=runner,
            finalize=finalize,
            dry_run=dry_run,
            on_done=on_done,
        )
    finally:
        runner.close()
        pools.close()
        citrus.close()
