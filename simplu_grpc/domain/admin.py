"""ShardAdmin use cases: shard health and usage, routing, pools, migrations, dependency status.

Every answer is bounded in time: calls to one dependency run under a deadline no longer
than the RPC's and no longer than a few seconds, and answers that touch several
dependencies probe them concurrently (``admin_status``). Connection strings never leave
this module except as ``host:port/db`` targets; every error text is redacted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import cast

from simplu_grpc import context
from simplu_grpc.adapters import migrator
from simplu_grpc.domain.admin_consistency import BusinessReport, ConsistencyChecker, read_snapshot
from simplu_grpc.domain.admin_ports import Businesses, Pools, Routing, ShardSource
from simplu_grpc.domain.admin_status import (
    DependencyCheck,
    DependencyProber,
    describe_error,
    run_bounded,
    within,
)
from simplu_grpc.domain.authz import require_live
from simplu_grpc.domain.business import Business, BusinessType
from simplu_grpc.domain.pool_stats import PoolStatsInfo
from simplu_grpc.domain.shards import ShardAssignment
from simplu_grpc.domain.validation import Violations, check_business_id, check_id, check_text
from simplu_grpc.errors import FailedPrecondition, InvalidArgument, NotFound, SimpluError
from simplu_grpc.redact import dsn_target

log = logging.getLogger(__name__)

# How long one admin call may wait on Citrus or the business store (the RPC's deadline wins
# when shorter): an operator in an incident wants "Citrus is down" now, not after retries.
CALL_TIMEOUT_SECONDS = 5.0
# ListShards: the Citrus health call may itself take ~2 s (Citrus probes every shard).
LIST_SHARDS_TIMEOUT_SECONDS = 2.5
# Per-shard reads (schema version) inside answers about many shards.
SHARD_READ_TIMEOUT_SECONDS = 1.5
# Not worth opening connections with less than this left of ListShards's budget.
_MIN_READ_SECONDS = 0.2
# Migrations may legitimately take a while; still bounded.
MIGRATE_TIMEOUT_SECONDS = 60.0


SHARD_ID_MAX = 128


def usage_percentage(business_count: int | None, max_businesses: int | None) -> float | None:
    """``business_count / max_businesses * 100`` rounded to 2 decimals.

    None when Citrus did not report either count (unknown usage is not 0 % usage); 0 when it
    reported a maximum of 0.
    """
    if business_count is None or max_businesses is None:
        return None
    if max_businesses <= 0:
        return 0.0
    return round(business_count / max_businesses * 100.0, 2)


def is_near_capacity(usage: float | None, threshold_percent: float) -> bool:
    """At or above the threshold (SHARD_NEAR_CAPACITY_PERCENT) counts as near capacity.

    An unknown usage is never flagged: that would be a guess either way.
    """
    return usage is not None and usage >= threshold_percent


class UsageOrder(Enum):
    BY_SHARD_ID = "shard_id"
    USAGE_DESC = "usage_percentage desc"
    USAGE_ASC = "usage_percentage"

    @classmethod
    def parse(cls, order_by: str) -> UsageOrder:
        """GetShardUsage's ``order_by`` (AIP-132 style, as ListResources'); INVALID_ARGUMENT otherwise."""
        found = _USAGE_ORDERS.get(" ".join(order_by.lower().split()))
        if found is None:
            raise InvalidArgument.field(
                "order_by", 'must be "shard_id", "usage_percentage" or "usage_percentage desc"'
            )
        return found


_USAGE_ORDERS = {
    "": UsageOrder.BY_SHARD_ID,
    "shard_id": UsageOrder.BY_SHARD_ID,
    "shard_id asc": UsageOrder.BY_SHARD_ID,
    "usage_percentage": UsageOrder.USAGE_ASC,
    "usage_percentage asc": UsageOrder.USAGE_ASC,
    "usage_percentage desc": UsageOrder.USAGE_DESC,
}


@dataclass(frozen=True, slots=True)
class ShardUsage:
    """None counts / usage: Citrus did not report them (unknown, never invented)."""

    shard_id: str
    business_count: int | None
    max_businesses: int | None
    usage_percentage: float | None
    is_active: bool
    near_capacity: bool


@dataclass(frozen=True, slots=True)
class ShardView:
    """One line of ListShards: Citrus's view merged with this server's pool."""

    shard_id: str
    active: bool | None  # None: neither Citrus nor a route of this server said
    last_health_check: datetime | None
    business_count: int | None  # None: unknown (Citrus did not report it, or did not list the shard)
    max_businesses: int | None
    usage_percentage: float | None
    near_capacity: bool
    listed_by_citrus: bool
    pool: PoolStatsInfo | None
    schema_version: int | None  # None: unknown (no pool here, or the shard did not answer in time)


@dataclass(frozen=True, slots=True)
class ShardList:
    shards: list[ShardView]
    citrus_reachable: bool
    citrus_error: str
    near_capacity_threshold: float


@dataclass(frozen=True, slots=True)
class LocationShardView:
    business_id: str
    location_id: str
    shard_id: str
    active: bool
    from_cache: bool
    cache_age_seconds: float
    target: str


@dataclass(frozen=True, slots=True)
class Capacity:
    shard_id: str
    can_accept_new_business: bool
    business_count: int | None  # None: Citrus did not report it
    max_businesses: int | None


@dataclass(frozen=True, slots=True)
class MigrationOutcome:
    """``version_before``/``version_after`` are None when the migration failed (not known)."""

    shard_id: str
    version_before: int | None
    version_after: int | None
    applied: list[int] = field(default_factory=list)
    error: str = ""


class ShardAdminService:
    """The operator's console over Citrus shards, this server's pools and its dependencies.

    In single-database mode ``shards`` answers for the one database. ``probes`` maps
    dependency names (``dynamodb``, ``citrus`` when there is one, ``jwks``, ...) to light
    probes; one probe per shard pool is added at call time. ``on_registered(business_id,
    location_id)`` records a registration made here in business info (BusinessOps.note_registered).
    """

    def __init__(
        self,
        *,
        shards: ShardSource,
        pools: Pools,
        routing: Routing,
        businesses: Businesses,
        near_capacity_percent: float,
        probes: Mapping[str, Callable[[], object]] | None = None,
        on_registered: Callable[[str, str], None] | None = None,
        secrets: tuple[str, ...] = (),
        prober: DependencyProber | None = None,
        migrate: Callable[[str, int], migrator.MigrationResult] | None = None,
        target_version: Callable[[], int] = migrator.latest_version,
        consistency: ConsistencyChecker | None = None,
        read_version: Callable[[str], int] | None = None,
    ) -> None:
        self._shards = shards
        self._pools = pools
        self._routing = routing
        self._businesses = businesses
        self.near_capacity_percent = near_capacity_percent
        self._probes = dict(probes or {})
        self._on_registered = on_registered
        self._secrets = tuple(s for s in secrets if s)
        self._prober = prober or DependencyProber(secrets=self._secrets)
        self._migrate = migrate or _migrate_within
        self._target_version = target_version
        self._read_version = read_version or _read_version
        self._consistency = consistency or ConsistencyChecker(
            shards=shards, businesses=businesses, secrets=self._secrets, target_version=target_version
        )

    # --- Citrus views -----------------------------------------------------------------

    def list_shards(self) -> ShardList:
        """Citrus health merged with local pools; answers from local pools when Citrus is down.

        Schema versions come from this server's pools, and, for shards it has no pool for
        (e.g. just migrated by MigrateShard), from a short read-only connection made with the
        connection string Citrus listed, within what is left of the answer's budget.
        """
        started = time.monotonic()
        stats = {s.shard_id: s for s in self._pools.stats()}
        calls: dict[str, Callable[[], object]] = {"citrus": self._shards.shards_health}
        for shard_id in stats:
            calls[f"schema/{shard_id}"] = self._schema_reader(shard_id)
        outcomes = run_bounded(calls, timeout=LIST_SHARDS_TIMEOUT_SECONDS)
        health = outcomes["citrus"]
        citrus_error = ""
        listed: list[ShardAssignment] = []
        if isinstance(health, BaseException):
            citrus_error = describe_error(health, self._secrets)
            log.warning("ListShards: shard health unavailable: %s", citrus_error)
        else:
            listed = list(cast(list[ShardAssignment], health))
        unpooled = {
            f"schema/{s.shard_id}": _bind_dsn(self._read_version, s.connection_string)
            for s in listed
            if s.shard_id not in stats and s.connection_string
        }
        left = LIST_SHARDS_TIMEOUT_SECONDS - (time.monotonic() - started)
        if unpooled and left > _MIN_READ_SECONDS:
            outcomes.update(run_bounded(unpooled, timeout=min(SHARD_READ_TIMEOUT_SECONDS, left)))
        versions = {
            name.removeprefix("schema/"): value
            for name, value in outcomes.items()
            if name.startswith("schema/") and isinstance(value, int)
        }
        views: dict[str, ShardView] = {}
        for shard in listed:
            usage = usage_percentage(shard.business_count, shard.max_businesses)
            views[shard.shard_id] = ShardView(
                shard_id=shard.shard_id,
                active=shard.is_active,
                last_health_check=shard.last_health_check,
                business_count=shard.business_count,
                max_businesses=shard.max_businesses,
                usage_percentage=usage,
                near_capacity=is_near_capacity(usage, self.near_capacity_percent),
                listed_by_citrus=True,
                pool=stats.get(shard.shard_id),
                schema_version=versions.get(shard.shard_id),
            )
        last_known = self._routing.shards()
        for shard_id, pool in stats.items():
            if shard_id not in views:
                views[shard_id] = ShardView(
                    shard_id=shard_id,
                    # Citrus did not list it (or did not answer): its last isActive on a route.
                    active=last_known.get(shard_id),
                    last_health_check=None,
                    business_count=None,
                    max_businesses=None,
                    usage_percentage=None,
                    near_capacity=False,
                    listed_by_citrus=False,
                    pool=pool,
                    schema_version=versions.get(shard_id),
                )
        return ShardList(
            shards=[views[k] for k in sorted(views)],
            citrus_reachable=not citrus_error,
            citrus_error=citrus_error,
            near_capacity_threshold=self.near_capacity_percent,
        )

    def shard_usage(self, order: UsageOrder, near_capacity_only: bool) -> list[ShardUsage]:
        """The reference's usage statistics, sorted and filtered; CITRUS_UNAVAILABLE when Citrus is down."""
        with within(CALL_TIMEOUT_SECONDS):
            listed = self._shards.shards_health()
        rows = []
        for shard in listed:
            usage = usage_percentage(shard.business_count, shard.max_businesses)
            rows.append(
                ShardUsage(
                    shard_id=shard.shard_id,
                    business_count=shard.business_count,
                    max_businesses=shard.max_businesses,
                    usage_percentage=usage,
                    is_active=shard.is_active,
                    near_capacity=is_near_capacity(usage, self.near_capacity_percent),
                )
            )
        if near_capacity_only:
            # A shard of unknown usage is not known to be near capacity: left out.
            rows = [row for row in rows if row.near_capacity]
        rows.sort(key=lambda r: r.shard_id)
        # Stable sorts: ties stay by id; shards of unknown usage come last in either order.
        if order is UsageOrder.USAGE_DESC:
            rows.sort(key=lambda r: -1.0 if r.usage_percentage is None else r.usage_percentage, reverse=True)
        elif order is UsageOrder.USAGE_ASC:
            rows.sort(key=lambda r: (r.usage_percentage is None, r.usage_percentage or 0.0))
        return rows

    def check_capacity(self, shard_id: str) -> Capacity:
        """Citrus's capacity answer for one shard; NOT_FOUND for an unknown shard."""
        _require_shard_id(shard_id)
        with within(CALL_TIMEOUT_SECONDS):
            info = self._shards.capacity(shard_id)
        if info is None:
            raise NotFound(f"shard {shard_id!r} is unknown to Citrus", metadata={"shard_id": shard_id})
        return Capacity(
            shard_id=info.shard_id or shard_id,
            can_accept_new_business=info.can_accept_new_business,
            business_count=info.business_count,
            max_businesses=info.max_businesses,
        )

    # --- locations --------------------------------------------------------------------

    def location_shard(self, business_id: str, location_id: str, *, refresh: bool) -> LocationShardView:
        """Where a location lives: from the routing cache unless ``refresh`` (or a miss); never registers."""
        _require_location_key(business_id, location_id)
        self._existing_location(business_id, location_id)
        if not refresh:
            cached = self._routing.peek(business_id, location_id)
            if cached is not None:
                return _location_view(
                    business_id, location_id, cached.assignment, from_cache=True, age=cached.age_seconds
                )
        with within(CALL_TIMEOUT_SECONDS):
            assignment_or_none = self._shards.get_shard(business_id, location_id)
        if assignment_or_none is None:
            raise NotFound(
                f"location {business_id}/{location_id} is not registered with Citrus",
                reason="LOCATION_NOT_REGISTERED",
                metadata={"business_id": business_id, "location_id": location_id},
            )
        if refresh:
            # The next resource request must see what Citrus says now, not the old entry. Only
            # once Citrus answered: while it is down the cached route is what keeps tenants up.
            self._routing.invalidate(business_id, location_id)
        return _location_view(business_id, location_id, assignment_or_none, from_cache=False, age=0.0)

    def register_location(
        self, business_id: str, location_id: str, business_type: BusinessType | None
    ) -> LocationShardView:
        """Register with Citrus (idempotent there) under the business's own type.

        ``business_type``, when given, must be that type: Citrus places a business by its type,
        and a location registered under another would be routed as a business it is not. The
        request is well formed either way; it is refused because of what business info holds,
        hence FAILED_PRECONDITION (BUSINESS_TYPE_MISMATCH), not INVALID_ARGUMENT. A deleted
        business is not registered (``require_live``: FAILED_PRECONDITION / BUSINESS_DELETED).
        """
        _require_location_key(business_id, location_id)
        business = self._existing_location(business_id, location_id)
        require_live(business, business_id, sees_deleted=True)
        if business_type is not None and business_type is not business.type:
            raise FailedPrecondition(
                f"business {business_id!r} is of type {business.type.value!r}, not {business_type.value!r}; "
                "leave business_type unset to use the business's own",
                reason="BUSINESS_TYPE_MISMATCH",
                metadata={"business_id": business_id, "business_type": business.type.value},
            )
        with within(CALL_TIMEOUT_SECONDS):
            assignment = self._shards.register(business_id, location_id, business.type.value)
        # A cached entry from before (e.g. another shard) must not outlive the registration.
        self._routing.invalidate(business_id, location_id)
        self._note_registered(business_id, location_id)
        log.info("registered %s/%s with Citrus on %s", business_id, location_id, assignment.shard_id)
        return _location_view(business_id, location_id, assignment, from_cache=False, age=0.0)

    def _note_registered(self, business_id: str, location_id: str) -> None:
        """Tell business info (through ``on_registered``) that the location is registered."""
        if self._on_registered is None:
            return
        try:
            with within(CALL_TIMEOUT_SECONDS):
                self._on_registered(business_id, location_id)
        except SimpluError as exc:
            # The registration itself succeeded; a stale pending entry is only retried later
            # (idempotently at Citrus), so this must not fail the call.
            log.warning(
                "registered %s/%s but could not update its pending list: %s",
                business_id,
                location_id,
                describe_error(exc, self._secrets),
            )

    def _existing_location(self, business_id: str, location_id: str) -> Business:
        with within(CALL_TIMEOUT_SECONDS):
            business = self._businesses.get(business_id)
        if business is None:
            raise NotFound(f"business {business_id!r} not found", metadata={"business_id": business_id})
        if business.location(location_id) is None:
            raise NotFound(
                f"location {location_id!r} not found in business {business_id!r}",
                metadata={"business_id": business_id, "location_id": location_id},
            )
        return business

    # --- pools and routing ------------------------------------------------------------

    def list_pools(self) -> list[PoolStatsInfo]:
        return sorted(self._pools.stats(), key=lambda s: s.shard_id)

    def recycle_pool(self, shard_id: str) -> PoolStatsInfo:
        """Replace every connection of the shard's pool; NOT_FOUND when there is none."""
        _require_shard_id(shard_id)
        if not self._pools.recycle(shard_id):
            raise NotFound(f"this server has no pool for shard {shard_id!r}", metadata={"shard_id": shard_id})
        log.info("recycled the pool of shard %s", shard_id)
        for stats in self._pools.stats():
            if stats.shard_id == shard_id:
                return stats
        raise NotFound(
            f"the pool of shard {shard_id!r} was closed meanwhile", metadata={"shard_id": shard_id}
        )

    def invalidate_routing(self, business_id: str, location_id: str, everything: bool) -> int:
        """Drop routing entries: one location, one business, or all; how many were dropped."""
        if everything:
            if business_id or location_id:
                raise InvalidArgument.field("all", "must not be combined with business_id or location_id")
            dropped = self._routing.invalidate()
        elif business_id:
            _require_location_key(business_id, location_id, location_required=False)
            dropped = self._routing.invalidate(business_id, location_id or None)
        elif location_id:
            raise InvalidArgument.field("business_id", "is required with location_id")
        else:
            raise InvalidArgument.field("business_id", "give business_id (and location_id), or all = true")
        log.info(
            "routing invalidated (%s/%s all=%s): %d dropped", business_id, location_id, everything, dropped
        )
        return dropped

    # --- migrations -------------------------------------------------------------------

    @property
    def target_version(self) -> int:
        return self._target_version()

    def migrate(self, shard_id: str, all_shards: bool) -> list[MigrationOutcome]:
        """Apply pending migrations to one shard or every shard Citrus lists; per-shard results."""
        if all_shards and shard_id:
            raise InvalidArgument.field("all_shards", "must not be combined with shard_id")
        if not all_shards:
            _require_shard_id(shard_id)
        with within(CALL_TIMEOUT_SECONDS):
            listed = self._shards.shards_health()
        if not all_shards:
            listed = [s for s in listed if s.shard_id == shard_id]
            if not listed:
                raise NotFound(f"shard {shard_id!r} is unknown to Citrus", metadata={"shard_id": shard_id})
        outcomes = run_bounded(
            {s.shard_id: self._migration(s.connection_string) for s in listed},
            timeout=MIGRATE_TIMEOUT_SECONDS,
        )
        results = []
        for shard in sorted(listed, key=lambda s: s.shard_id):
            outcome = outcomes[shard.shard_id]
            if isinstance(outcome, migrator.MigrationResult):
                results.append(
                    MigrationOutcome(
                        shard_id=shard.shard_id,
                        version_before=outcome.before,
                        version_after=outcome.after,
                        applied=[int(name.split("_", 1)[0]) for name in outcome.applied],
                    )
                )
            else:
                error = describe_error(
                    outcome if isinstance(outcome, BaseException) else RuntimeError("no result"),
                    (*self._secrets, shard.connection_string),
                )
                log.warning("migration of shard %s failed: %s", shard.shard_id, error)
                results.append(MigrationOutcome(shard.shard_id, None, None, error=error))
        return results

    def _migration(self, dsn: str) -> Callable[[], migrator.MigrationResult]:
        # Runs inside run_bounded, whose deadline is the call's budget: the migration's
        # statements (the advisory-lock wait included) are cut when it runs out, so no
        # thread is left waiting on another replica's lock after the answer went out.
        def run() -> migrator.MigrationResult:
            timeout_ms = max(1, int(context.deadline().remaining() * 1000))
            return self._migrate(dsn, timeout_ms)

        return run

    # --- consistency ------------------------------------------------------------------

    def check_consistency(
        self, business_id: str, page_size: int, page_token: str
    ) -> tuple[list[BusinessReport], str]:
        """Business info vs Citrus vs shard contents for one business or a page; read-only."""
        return self._consistency.check(business_id, page_size, page_token)

    # --- dependency status ------------------------------------------------------------

    def dependency_status(self) -> list[DependencyCheck]:
        """DynamoDB, Citrus, JWKS and each shard pool, probed concurrently; answers within ~2 s."""
        probes: dict[str, Callable[[], object]] = dict(self._probes)
        for stats in sorted(self._pools.stats(), key=lambda s: s.shard_id):
            probes[f"shard/{stats.shard_id}"] = self._pool_probe(stats.shard_id)
        return self._prober.run(probes)

    def _pool_probe(self, shard_id: str) -> Callable[[], object]:
        # Through the registry's own checkout: bounded by the probe's deadline, and a shard
        # that stopped answering mid-query is cut off by its watchdog instead of hanging.
        def probe() -> object:
            assignment = self._pools.assignment(shard_id)
            if assignment is None:
                raise NotFound(f"the pool of shard {shard_id} was closed meanwhile")
            with self._pools.connection(assignment) as session:
                return session.run("SELECT 1")

        return probe

    def _schema_reader(self, shard_id: str) -> Callable[[], int | None]:
        def read() -> int | None:
            with within(SHARD_READ_TIMEOUT_SECONDS):
                assignment = self._pools.assignment(shard_id)
                if assignment is None:
                    return None
                with (
                    self._pools.connection(assignment) as session,
                    session.guard("reading the schema version"),
                ):
                    return migrator.schema_version(session.conn)

        return read


def _bind_dsn(read: Callable[[str], int], dsn: str) -> Callable[[], int]:
    return lambda: read(dsn)


def _read_version(dsn: str) -> int:
    """A shard's schema version over a short-lived read-only connection (never through a pool:
    creating one would migrate the shard, and a listing must change nothing)."""
    return read_snapshot(dsn, ()).schema_version


def _location_view(
    business_id: str, location_id: str, assignment: ShardAssignment, *, from_cache: bool, age: float
) -> LocationShardView:
    return LocationShardView(
        business_id=business_id,
        location_id=location_id,
        shard_id=assignment.shard_id,
        active=assignment.is_active,
        from_cache=from_cache,
        cache_age_seconds=max(0.0, age),
        target=dsn_target(assignment.connection_string),
    )


def _require_location_key(business_id: str, location_id: str, *, location_required: bool = True) -> None:
    """DESIGN §4 ids, as everywhere else: a malformed id is INVALID_ARGUMENT, not "not found"."""
    v = Violations()
    check_business_id(v, "business_id", business_id)
    if location_id or location_required:
        check_id(v, "location_id", location_id)
    v.raise_if_any()


def _require_shard_id(shard_id: str) -> None:
    # Shard ids are Citrus's to choose: bounded printable text, not our id grammar.
    v = Violations()
    check_text(v, "shard_id", shard_id, max_length=SHARD_ID_MAX, required=True)
    v.raise_if_any()


def _migrate_within(dsn: str, timeout_ms: int) -> migrator.MigrationResult:
    """Migrate one shard, connecting and running its statements within ``timeout_ms``."""
    return migrator.migrate(dsn, connect_timeout=timeout_ms / 1000, timeout_ms=timeout_ms)
