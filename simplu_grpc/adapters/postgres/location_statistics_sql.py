"""GetLocationStatistics as one statement: one scalar subquery per statistic, plus the most
recently changed resources, all bound to one business location.

Fixed fragments chosen by the (code-defined) statistic definitions; every value -- types,
windows, paths, filter literals -- is a bound parameter. Each subquery is an index range on
(tenant, type, time) or a containment/trigram lookup, like a ListResources filter.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from simplu_grpc.adapters.postgres import resource_filter_sql as sql
from simplu_grpc.adapters.postgres.pool_session import ShardSession
from simplu_grpc.domain.resources.statistics import (
    TOP,
    Activity,
    PlannedStatistic,
    Statistic,
    StatisticsQuery,
)

# The time fields a window may use (fixed identifiers, chosen by the definitions).
_TIMES = {"start_time", "end_time", "create_time", "update_time"}


def _where(planned: PlannedStatistic, out: sql.Compiled) -> str:
    definition = planned.definition
    where = [
        "business_id = %(b)s",
        "location_id = %(l)s",
        f"resource_type = {out.bind(definition.resource_type)}",
    ]
    if planned.filter is not None:
        where.append(sql.compile_filter(planned.filter, out))
    if planned.window is not None:
        start, end = out.bind(planned.window.start), out.bind(planned.window.end)
        if definition.window == "tonight":
            where.append(
                f"start_time < {end} AND (end_time > {start} OR (end_time IS NULL AND start_time >= {start}))"
            )
        else:
            column = definition.time_field
            if column not in _TIMES:
                raise ValueError(f"not a time field: {column!r}")
            where.append(f"{column} >= {start} AND {column} < {end}")
    return " AND ".join(where)


def _column(planned: PlannedStatistic, out: sql.Compiled) -> tuple[str, str]:
    """(value expression, breakdown expression) for one statistic."""
    definition = planned.definition
    where = _where(planned, out)
    if definition.kind == "sum":
        path = out.bind(list(definition.value_path))
        value = (
            f"(SELECT COALESCE(sum(CASE WHEN jsonb_typeof(data #> {path}::text[]) = 'number'"
            f" THEN (data #>> {path}::text[])::numeric END), 0)::float8 FROM resources WHERE {where})"
        )
    else:
        value = f"(SELECT count(*)::float8 FROM resources WHERE {where})"
    breakdown = "'{}'::jsonb"
    if definition.breakdown_path:
        path = out.bind(list(definition.breakdown_path))
        again = _where(planned, out)
        breakdown = (
            "(SELECT COALESCE(jsonb_object_agg(k, c), '{}'::jsonb) FROM ("
            f"SELECT COALESCE(data #>> {path}::text[], '') AS k, count(*) AS c FROM resources"
            f" WHERE {again} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {out.bind(TOP)}) AS top)"
        )
    return value, breakdown


def statistics(session: ShardSession, query: StatisticsQuery) -> tuple[list[Statistic], list[Activity]]:
    out = sql.Compiled()
    out.params.update({"b": query.business_id, "l": query.location_id})
    columns: list[str] = []
    for index, planned in enumerate(query.statistics):
        value, breakdown = _column(planned, out)
        columns += [f"{value} AS v{index}", f"{breakdown} AS d{index}"]
    # The latest changes of each type (a backward scan of its (tenant, type, update_time)
    # index), then the latest of those: one index scan per type instead of a sort of them all.
    limit = out.bind(query.recent)
    per_type = " UNION ALL ".join(
        "(SELECT resource_type, resource_id, create_time, update_time FROM resources"
        f" WHERE business_id = %(b)s AND location_id = %(l)s AND resource_type = {out.bind(resource_type)}"
        f" ORDER BY update_time DESC, resource_id DESC LIMIT {limit})"
        for resource_type in query.resource_types
    )
    recent = (
        "(SELECT COALESCE(jsonb_agg(jsonb_build_array(resource_type, resource_id, create_time, update_time)"
        " ORDER BY update_time DESC, resource_id DESC), '[]'::jsonb) FROM ("
        f"SELECT * FROM ({per_type}) AS latest"
        f" ORDER BY update_time DESC, resource_id DESC LIMIT {limit}) AS r) AS recent"
    )
    # Custom plans: see ShardSession.run.
    row = session.run(f"SELECT {', '.join([*columns, recent])}", out.params)[0]
    found = [
        Statistic(
            planned.definition.name,
            planned.definition.resource_type,
            float(row[f"v{index}"]),
            {str(k): int(v) for k, v in _object(row[f"d{index}"]).items()},
        )
        for index, planned in enumerate(query.statistics)
    ]
    activities = [
        Activity(item[0], item[1], datetime.fromisoformat(item[2]), datetime.fromisoformat(item[3]))
        for item in _list(row["recent"])
    ]
    return found, activities


def _object(value: Any) -> dict[str, Any]:
    loaded = json.loads(value) if isinstance(value, str) else value
    return dict(loaded or {})


def _list(value: Any) -> list[Any]:
    loaded = json.loads(value) if isinstance(value, str) else value
    return list(loaded or [])
