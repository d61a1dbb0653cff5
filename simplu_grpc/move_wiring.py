"""Wiring of location moves (issue 13): the use cases and runner a server builds into ``Deps``
(``build_location_moves``, called by ``wiring.build_deps``), and ``simplu-grpc move-to-citrus``
(``run_move_to_citrus``). Kept beside ``wiring.py`` so that module stays within its size."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from simplu_grpc import tracing
from simplu_grpc.adapters.citrus.move_placement import DirectoryPlacement, RegisteredPlacement
from simplu_grpc.adapters.citrus.shard_directory import (
    CitrusDirectory,
    SingleDatabaseDirectory,
    single_database_dsn,
)
from simplu_grpc.adapters.postgres.move_copier import MoveCopier
from simplu_grpc.adapters.postgres.move_state import LegacyLocationReader, MoveState
from simplu_grpc.adapters.postgres.pool_registry import PoolRegistry
from simplu_grpc.domain.location_moves.adoption import Adopted, adopt
from simplu_grpc.domain.location_moves.engine import MoveEngine, MoveLimits
from simplu_grpc.domain.location_moves.runner import MoveRunner
from simplu_grpc.domain.location_moves.service import LocationMoves
from simplu_grpc.errors import FailedPrecondition
from simplu_grpc.metrics import Metrics
from simplu_grpc.settings import Settings

if TYPE_CHECKING:
    from simplu_grpc.wiring import Business, Lifecycle, Resources

# After a location's switch, how long past the routing cache's TTL a replica may still be reading
# from the old shard (one stale-while-revalidate answer, then the background refresh lands).
ROUTE_REFRESH_MARGIN_SECONDS = 5.0


def _owner() -> str:
    """This process as a move's lease holder: host, pid and a per-start nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _runner(settings: Settings, pools: PoolRegistry, placement: DirectoryPlacement, owner: str) -> MoveRunner:
    return MoveRunner(
        records=MoveState(pools),
        engine=MoveEngine(
            copier=MoveCopier(pools),
            placement=placement,
            limits=MoveLimits(batch_rows=settings.move_batch_rows, freeze_lag=settings.move_freeze_lag),
        ),
        placement=placement,
        owner=owner,
        lease_seconds=settings.move_lease_seconds,
        scan_interval=settings.move_scan_seconds,
        background=tracing.untraced,
    )


def build_location_moves(
    settings: Settings, life: Lifecycle, business: Business, resources: Resources
) -> LocationMoves:
    """The location-move use cases, and this replica's move runner (started; closed with ``life``)."""
    from simplu_grpc.wiring import build_shard_source

    placement = DirectoryPlacement(
        directory=resources.directory,
        catalog=build_shard_source(settings, business.citrus),
        placer=business.citrus,
        forget=resources.routing.invalidate,
    )
    runner = _runner(settings, resources.pools, placement, _owner())
    # Closers run last-first: the runner stops before the pools (registered earlier) close.
    life.closers.append(runner.close)
    runner.start()
    return LocationMoves(
        records=MoveState(resources.pools),
        placement=placement,
        runner=runner,
        businesses=business.store,
        # The routing cache's TTL plus its background refresh: then every replica asked Citrus again.
        route_settle_seconds=settings.routing_cache_ttl_seconds + ROUTE_REFRESH_MARGIN_SECONDS,
    )


def run_move_to_citrus(
    settings: Settings, *, finalize: bool, dry_run: bool, on_done: Callable[[Adopted], None]
) -> list[Adopted]:
    """``simplu-grpc move-to-citrus``: every location of the single database (``DATABASE_*``) onto
    the shard Citrus assigns it (CITRUS_SERVER_URL must be set)."""
    from simplu_grpc.wiring import Lifecycle, build_citrus

    life = Lifecycle(metrics=Metrics())
    try:
        citrus = build_citrus(settings, life)
        if citrus is None:
            raise FailedPrecondition(
                "move-to-citrus needs CITRUS_SERVER_URL (and DATABASE_* for the database)"
            )
        pools = PoolRegistry.from_settings(settings, life.metrics)
        life.closers.append(pools.close)
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
        runner = _runner(settings, pools, placement, f"move-to-citrus:{_owner()}")
        life.closers.append(runner.close)
        return adopt(
            legacy=legacy,
            locations=LegacyLocationReader(pools),
            citrus=citrus,
            records=MoveState(pools),
            runner=runner,
            finalize=finalize,
            dry_run=dry_run,
            on_done=on_done,
        )
    finally:
        life.close()
