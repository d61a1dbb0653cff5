"""A shard pool's numbers (the domain's ``PoolStatsInfo``) read from psycopg_pool and the registry's
own counts, and the gauges the metrics scrape from them."""

from __future__ import annotations

from collections.abc import Iterable

from simplu_grpc.adapters.postgres.pool_health import PoolEntry
from simplu_grpc.domain.pool_stats import PoolStatsInfo
from simplu_grpc.metrics import PoolGauge
from simplu_grpc.redact import dsn_target


def pool_stats(entries: Iterable[PoolEntry], min_size: int, max_size: int) -> list[PoolStatsInfo]:
    """One ``PoolStatsInfo`` per entry, in the given order (``min_size``/``max_size``: the
    registry's, for a pool whose own stats do not say)."""
    infos = []
    for entry in entries:
        raw = entry.pool.get_stats()
        infos.append(
            PoolStatsInfo(
                shard_id=entry.shard_id,
                target=dsn_target(entry.conninfo),
                pool_min=raw.get("pool_min", min_size),
                pool_max=raw.get("pool_max", max_size),
                pool_size=raw.get("pool_size", 0),
                pool_available=raw.get("pool_available", 0),
                # Callers still waiting; psycopg_pool's count includes the ones that gave up.
                requests_waiting=entry.waiting,
                requests_num=raw.get("requests_num", 0),
                requests_errors=raw.get("requests_errors", 0),
                connections_num=raw.get("connections_num", 0),
                connections_errors=raw.get("connections_errors", 0),
                connections_lost=raw.get("connections_lost", 0),
                create_time=entry.created,
                last_used_time=entry.last_used_wall,
                healthy=True if entry.health.proven else False if entry.health.failing else None,
                last_error=entry.health.last_error,
                schema_version=entry.schema_version,
            )
        )
    return infos


def pool_gauges(stats: Iterable[PoolStatsInfo]) -> list[PoolGauge]:
    """Pool numbers for Metrics.watch_pools (read at scrape time)."""
    return [
        PoolGauge(
            shard_id=s.shard_id,
            size=s.pool_size,
            available=s.pool_available,
            waiting=s.requests_waiting,
            max_size=s.pool_max,
        )
        for s in stats
    ]
