"""Wiring: builds the real adapters and use cases from Settings, and closes them at shutdown.

The one place that knows which adapter implements which port. Production (``serve``), the
CLI (``simplu-grpc migrate``) and the tests build from the same factories:

- ``build_auth``: the JWKS client, the token verifier and the authorizer;
- ``build_business``: the business store (DynamoDB), its cache, the Citrus client, BusinessOps;
- ``build_people``: invitations (the Cognito pool's admin API), ListMembers, TransferOwnership;
- ``build_resources``: the shard directory, routing cache, pool registry, ResourceOps;
- ``build_admin``: the ShardAdmin use cases;
- ``move_wiring.build_location_moves``: location moves (their use cases and this replica's runner);
- ``build_shard_source`` / ``build_migrations``: what ``simplu-grpc migrate`` needs alone;
- ``build_deps``: all of them, into ``Deps``;
- ``build_purge``: what ``simplu-grpc purge-businesses`` needs alone.

Each factory registers a closer on the ``Lifecycle`` for anything holding connections or
threads, and a readiness check where the dependency is essential; ``build_deps`` closes
what it built when a step fails.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from simplu_grpc.adapters.change_listener import ChangeListeners
from simplu_grpc.adapters.change_notifier import ChangeNotifier
from simplu_grpc.adapters.citrus.client import CitrusClient
from simplu_grpc.adapters.citrus.shard_directory import (
    CitrusDirectory,
    SingleDatabaseDirectory,
    single_database_dsn,
)
from simplu_grpc.adapters.cognito.jwks import JwksClient
from simplu_grpc.adapters.cognito.token_verifier import TokenVerifier
from simplu_grpc.adapters.cognito.users import CognitoUsers, make_cognito_client
from simplu_grpc.adapters.dynamodb.business_index import BusinessIndexReader
from simplu_grpc.adapters.dynamodb.business_purge_items import BusinessPurgeStore
from simplu_grpc.adapters.dynamodb.business_store import BusinessStore
from simplu_grpc.adapters.dynamodb.calls import make_dynamodb_client
from simplu_grpc.adapters.dynamodb.invitation_store import InvitationStore
from simplu_grpc.adapters.postgres.business_purge import ShardPurger
from simplu_grpc.adapters.postgres.consistency_reader import PostgresShardReader
from simplu_grpc.adapters.postgres.migrator import PostgresMigrator
from simplu_grpc.adapters.postgres.pool_registry import PoolRegistry
from simplu_grpc.adapters.postgres.shard_store import ShardStore
from simplu_grpc.adapters.postgres.shard_tls import shard_tls
from simplu_grpc.adapters.postgres.storage_usage import StorageReader
from simplu_grpc.deps import Deps, close_all
from simplu_grpc.domain.admin.consistency import ConsistencyChecker
from simplu_grpc.domain.admin.console import ShardAdmin
from simplu_grpc.domain.admin.dependencies import DependencyProber, DependencyStatus
from simplu_grpc.domain.admin.migrations import MIGRATE_TIMEOUT_SECONDS, ShardMigrations
from simplu_grpc.domain.admin.routing import LocationRouting
from simplu_grpc.domain.admin.shards import ShardViews
from simplu_grpc.domain.admin.tenant_load import LoadOrder, TenantLoad
from simplu_grpc.domain.admin.usage import Replica, TenantUsageQuery
from simplu_grpc.domain.auth.authz import Authorizer
from simplu_grpc.domain.business.cache import BusinessCache
from simplu_grpc.domain.business.commands import BusinessOps
from simplu_grpc.domain.business.invitations import InvitationOps
from simplu_grpc.domain.business.lifecycle import BusinessLifecycle
from simplu_grpc.domain.business.ports import BusinessRepository
from simplu_grpc.domain.business.retention import BusinessPurge, PurgeReport
from simplu_grpc.domain.business.search import BusinessDiscovery
from simplu_grpc.domain.business.team import TeamOps
from simplu_grpc.domain.placement.ports import ShardDirectory, ShardSource
from simplu_grpc.domain.placement.routing import RoutingCache
from simplu_grpc.domain.resources.ops import ResourceOps
from simplu_grpc.domain.resources.results import Limits
from simplu_grpc.domain.watch_ops import WatchLimits, WatchOps
from simplu_grpc.health import ReadinessCheck, probe_check
from simplu_grpc.metrics import Metrics, TenantGauge
from simplu_grpc.move_wiring import build_location_moves
from simplu_grpc.settings import Settings

if TYPE_CHECKING:
    pass

# What the business cache reads from, given the store (tests wrap it to count reads).
CacheSource = Callable[[BusinessStore], BusinessRepository]

# A JWKS document is tiny; a slow endpoint should not hold the start (or a token) for long.
JWKS_TIMEOUT_SECONDS = 5.0


@dataclass
class Lifecycle:
    """What the factories share: the metrics, and what to close (last first) and probe."""

    metrics: Metrics
    closers: list[Callable[[], None]] = field(default_factory=list)
    readiness_checks: list[ReadinessCheck] = field(default_factory=list)

    def close(self) -> None:
        close_all(self.closers)


@dataclass(frozen=True, slots=True)
class Auth:
    jwks: JwksClient
    verifier: TokenVerifier
    authorizer: Authorizer


@dataclass(frozen=True, slots=True)
class Business:
    store: BusinessStore
    cache: BusinessCache
    citrus: CitrusClient | None  # None in single-database mode
    ops: BusinessOps
    lifecycle: BusinessLifecycle
    discovery: BusinessDiscovery


@dataclass(frozen=True, slots=True)
class People:
    """BusinessService's people management: invitations (Cognito's admin API), members, ownership."""

    invitations: InvitationOps
    team: TeamOps


@dataclass(frozen=True, slots=True)
class Resources:
    directory: ShardDirectory
    routing: RoutingCache
    pools: PoolRegistry
    load: TenantLoad
    ops: ResourceOps
    watch: WatchOps


def build_auth(settings: Settings, life: Lifecycle) -> Auth:
    """JWKS (loaded now; a failed load is logged and retried on the first unknown kid) and the verifier."""
    jwks = JwksClient(url=settings.jwks_url, timeout_seconds=JWKS_TIMEOUT_SECONDS, metrics=life.metrics)
    life.closers.append(jwks.close)
    verifier = TokenVerifier(
        issuer=settings.cognito_issuer,
        client_ids=settings.cognito_client_ids,
        jwks=jwks,
        leeway_seconds=settings.jwt_leeway_seconds,
        metrics=life.metrics,
    )
    jwks.load()
    return Auth(jwks=jwks, verifier=verifier, authorizer=Authorizer(admin_group=settings.admin_group))


def build_citrus(settings: Settings, life: Lifecycle) -> CitrusClient | None:
    """The Citrus client, or None in single-database mode (no CITRUS_SERVER_URL)."""
    if not settings.citrus_server_url:
        return None
    citrus = CitrusClient(
        base_url=settings.citrus_server_url,
        api_key=settings.citrus_api_key,
        timeout_ms=settings.citrus_timeout_ms,
        retry_attempts=settings.citrus_retry_attempts,
        metrics=life.metrics,
        tls=shard_tls(settings),
    )
    life.closers.append(citrus.close)
    return citrus


def build_business_store(settings: Settings, life: Lifecycle) -> BusinessStore:
    """The business-info table and its DynamoDB client (closed with ``life``)."""
    dynamodb = make_dynamodb_client(settings)
    life.closers.append(dynamodb.close)
    return BusinessStore(table=settings.dynamodb_business_info_table, client=dynamodb, metrics=life.metrics)


def build_business(
    settings: Settings, life: Lifecycle, auth: Auth, *, cache_source: CacheSource | None = None
) -> Business:
    """Business info in DynamoDB, its cache, Citrus and BusinessOps; DynamoDB and Citrus probes
    become readiness checks. ``cache_source`` (tests) wraps the store the cache reads from."""
    store = build_business_store(settings, life)
    cache = BusinessCache(
        store if cache_source is None else cache_source(store),
        ttl_seconds=settings.business_cache_ttl_seconds,
        stale_max_seconds=settings.business_cache_stale_max_seconds,
        failure_backoff_seconds=settings.cache_failure_backoff_seconds,
        metrics=life.metrics,
    )
    life.closers.append(cache.close)
    life.readiness_checks.append(probe_check(store.probe))
    citrus = build_citrus(settings, life)
    if citrus is not None:
        life.readiness_checks.append(probe_check(citrus.probe))
    ops = BusinessOps(store=store, cache=cache, authorizer=auth.authorizer, citrus=citrus)
    lifecycle = BusinessLifecycle(
        writer=ops, authorizer=auth.authorizer, retention=timedelta(days=settings.business_retention_days)
    )
    discovery = BusinessDiscovery(
        index=BusinessIndexReader(store), cache=cache, authorizer=auth.authorizer, reader=ops
    )
    return Business(
        store=store,
        cache=cache,
        citrus=citrus,
        ops=ops,
        lifecycle=lifecycle,
        discovery=discovery,
    )


def build_people(settings: Settings, life: Lifecycle, auth: Auth, business: Business) -> People:
    """Invitations (kept in the business table, users found or created in the Cognito pool through
    its admin API), ListMembers and TransferOwnership."""
    cognito = make_cognito_client(settings)
    life.closers.append(cognito.close)
    invitations = InvitationOps(
        businesses=business.ops,
        store=business.store,
        cache=business.cache,
        invitations=InvitationStore(
            businesses=business.store,
            table=settings.dynamodb_business_info_table,
            client=business.store.client,
        ),
        users=CognitoUsers(client=cognito, pool_id=settings.cognito_user_pool_id, metrics=life.metrics),
        authorizer=auth.authorizer,
        ttl=timedelta(seconds=settings.invitation_ttl_seconds),
    )
    team = TeamOps(businesses=business.ops, invitations=invitations, authorizer=auth.authorizer)
    return People(invitations=invitations, team=team)


def build_shard_source(settings: Settings, citrus: CitrusClient | None) -> ShardSource:
    """What answers shard questions: Citrus, or the one database in single-database mode."""
    if citrus is not None:
        return citrus
    return SingleDatabaseDirectory(single_database_dsn(settings))


def build_resources(settings: Settings, life: Lifecycle, auth: Auth, business: Business) -> Resources:
    """Directory -> routing cache, pool registry, tenant load and ResourceOps."""
    directory: ShardDirectory
    if business.citrus is not None:
        # A registration on first use is recorded in business info (best effort).
        directory = CitrusDirectory(business.citrus, on_registered=business.ops.note_registered)
    else:
        directory = SingleDatabaseDirectory(single_database_dsn(settings))
    routing = RoutingCache(
        directory,
        ttl=settings.routing_cache_ttl_seconds,
        stale_max=settings.routing_stale_max_seconds,
        failure_backoff=settings.cache_failure_backoff_seconds,
        metrics=life.metrics,
    )
    life.closers.append(routing.close)
    life.metrics.watch_shards(routing.shards)
    pools = PoolRegistry.from_settings(settings, life.metrics)
    # Registered after the Citrus client: closers run last-first, so pools close first.
    life.closers.append(pools.close)
    life.metrics.watch_pools(pools.gauges)
    load = TenantLoad(capacity=settings.tenant_usage_top_k)
    if settings.tenant_metrics_top:
        life.metrics.watch_tenants(top_tenants(load, settings.tenant_metrics_top))
    # Change streams: a write wakes the listeners after it commits; registered after the pools
    # (closers run last-first: listeners stop and what is pending is sent before pools close).
    notifier = ChangeNotifier(pools)
    life.closers.append(notifier.close)
    listeners = ChangeListeners(
        pools, retention=timedelta(seconds=settings.change_retention_seconds), on_listen=notifier.listening
    )
    life.closers.append(listeners.close)
    ops = ResourceOps(
        businesses=business.cache,
        authorizer=auth.authorizer,
        routing=routing,
        pools=pools,
        limits=Limits(max_bytes=settings.resource_data_max_bytes, max_depth=settings.resource_data_max_depth),
        load=load,
        store=ShardStore(change_retention=timedelta(seconds=settings.change_retention_seconds)),
        on_write=notifier.changed,
    )
    watch = WatchOps(
        businesses=business.cache,
        authorizer=auth.authorizer,
        routing=routing,
        feeds=listeners,
        limits=watch_limits(settings),
    )
    return Resources(directory=directory, routing=routing, pools=pools, load=load, ops=ops, watch=watch)


def watch_limits(settings: Settings) -> WatchLimits:
    """The streams' limits; permission is re-checked as often as the business cache refreshes."""
    return WatchLimits(
        max_streams=settings.watch_max_streams,
        buffer_size=settings.watch_buffer_size,
        recheck_seconds=max(1.0, settings.business_cache_ttl_seconds),
    )


def admin_secrets(settings: Settings) -> tuple[str, ...]:
    """Scrubbed from every admin error text on top of ``redact()``."""
    return tuple(s for s in (settings.citrus_api_key, settings.database_password) if s)


def build_migrations(
    settings: Settings,
    shards: ShardSource,
    *,
    timeout_seconds: float = MIGRATE_TIMEOUT_SECONDS,
    connect_timeout_seconds: float | None = None,
) -> ShardMigrations:
    """MigrateShard's use case; ``simplu-grpc migrate`` uses it with a longer budget and the
    shards' connect timeout (SHARD_CONNECT_TIMEOUT_SECONDS)."""
    return ShardMigrations(
        shards=shards,
        migrator=PostgresMigrator(connect_timeout_seconds=connect_timeout_seconds),
        secrets=admin_secrets(settings),
        timeout_seconds=timeout_seconds,
    )


def build_admin(
    settings: Settings, life: Lifecycle, auth: Auth, business: Business, resources: Resources
) -> ShardAdmin:
    """The ShardAdmin use cases over Citrus (or the one database), the pools and business info."""
    shards = build_shard_source(settings, business.citrus)
    secrets = admin_secrets(settings)
    probes: dict[str, Callable[[], object]] = {"dynamodb": business.store.probe, "jwks": auth.jwks.probe}
    if business.citrus is not None:
        probes["citrus"] = business.citrus.probe
    reader = PostgresShardReader(resources.pools)
    migrations = build_migrations(settings, shards)
    return ShardAdmin(
        shards=ShardViews(
            shards=shards,
            pools=resources.pools,
            routing=resources.routing,
            reader=reader,
            near_capacity_percent=settings.shard_near_capacity_percent,
            secrets=secrets,
        ),
        locations=LocationRouting(
            shards=shards,
            routing=resources.routing,
            businesses=business.store,
            on_registered=business.ops.note_registered,
            secrets=secrets,
        ),
        migrations=migrations,
        consistency=ConsistencyChecker(
            shards=shards,
            businesses=business.store,
            secrets=secrets,
            reader=reader,
            migrator=migrations.migrator,
        ),
        dependencies=DependencyStatus(
            probes=probes, pools=resources.pools, prober=DependencyProber(secrets=secrets)
        ),
        usage=TenantUsageQuery(
            load=resources.load,
            storage=StorageReader(),
            shards=shards,
            pools=resources.pools,
            replica=this_replica(),
            secrets=secrets,
        ),
    )


def build_deps(settings: Settings, *, cache_source: CacheSource | None = None) -> Deps:
    """Every adapter the server needs, connected and ready; closes what it built if a step fails."""
    life = Lifecycle(metrics=Metrics())
    try:
        auth = build_auth(settings, life)
        business = build_business(settings, life, auth, cache_source=cache_source)
        people = build_people(settings, life, auth, business)
        resources = build_resources(settings, life, auth, business)
        admin = build_admin(settings, life, auth, business, resources)
        moves = build_location_moves(settings, life, business, resources)
    except BaseException:
        life.close()
        raise
    return Deps(
        metrics=life.metrics,
        verifier=auth.verifier,
        jwks=auth.jwks,
        authorizer=auth.authorizer,
        business_store=business.store,
        business_cache=business.cache,
        citrus=business.citrus,
        business_ops=business.ops,
        invitation_ops=people.invitations,
        team_ops=people.team,
        business_lifecycle=business.lifecycle,
        business_discovery=business.discovery,
        pools=resources.pools,
        routing=resources.routing,
        shard_directory=resources.directory,
        resource_ops=resources.ops,
        watch_ops=resources.watch,
        shard_admin=admin,
        location_moves=moves,
        closers=life.closers,
        readiness_checks=life.readiness_checks,
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


def build_purge(
    settings: Settings,
    *,
    batch_size: int = 500,
    on_batch: Callable[[PurgeReport], None] = lambda _report: None,
) -> tuple[BusinessPurge, Callable[[], None]]:
    """The purge of deleted businesses (DynamoDB, Citrus or the single database, the shards), and
    the function that closes what it opened."""
    life = Lifecycle(metrics=Metrics())
    dynamodb = make_dynamodb_client(settings)
    life.closers.append(dynamodb.close)
    store = BusinessStore(table=settings.dynamodb_business_info_table, client=dynamodb, metrics=life.metrics)
    citrus = build_citrus(settings, life)
    source = build_shard_source(settings, citrus)
    shards = ShardPurger(
        list_shards=source.shards_health,
        locate=source.get_shard,
        connect_timeout_seconds=settings.shard_connect_timeout_seconds,
    )
    life.closers.append(shards.close)
    purge = BusinessPurge(
        store=BusinessPurgeStore(store),
        shards=shards,
        citrus=citrus,
        retention=timedelta(days=settings.business_retention_days),
        batch_size=batch_size,
        on_batch=on_batch,
    )
    return purge, life.close
