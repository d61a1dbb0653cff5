"""GetLocationStatistics as one statement: one scalar subquery per statistic over its row set
(a CTE per distinct set), plus the latest changes from the change history, all bound to one
business location.

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
from simplu_grpc.domain.resources.changes import ChangeKind
from simplu_grpc.domain.resources.statistics import (
    TOP,
    Activity,
    PlannedStatistic,
    Statistic,
    StatisticsQuery,
)

# The time fields a window may use (fixed identifiers, chosen by the definitions), as the
# expressions their indexes hold (migrations 0001, 0005).
_INDEXED = {
    "start_time": "COALESCE(start_time, 'infinity'::timestamptz)",
    "end_time": "COALESCE(end_time, 'infinity'::timestamptz)",
    "create_time": "create_time",
    "update_time": "update_time",
}


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
        # Windows are finite, so the COALESCE(time, infinity) of the time indexes changes no
        # answer; written as the index's expression, a window is a range scan of that index.
        if definition.window == "tonight":
            where.append(
                f"{_INDEXED['start_time']} < {end} AND {_INDEXED['end_time']} > {start}"
                f" AND (end_time > {start} OR (end_time IS NULL AND start_time >= {start}))"
            )
        else:
            column = _INDEXED.get(definition.time_field)
            if column is None:
                raise ValueError(f"not a time field: {definition.time_field!r}")
            where.append(f"{column} >= {start} AND {column} < {end}")
    return " AND ".join(where)


def _column(planned: PlannedStatistic, rows: str, out: sql.Compiled) -> tuple[str, str]:
    """(value expression, breakdown expression) for one statistic over the rows of ``rows``."""
    definition = planned.definition
    if definition.kind == "sum":
        path = out.bind(list(definition.value_path))
        value = (
            f"(SELECT COALESCE(sum(CASE WHEN jsonb_typeof(data #> {path}::text[]) = 'number'"
            f" THEN (data #>> {path}::text[])::numeric END), 0)::float8 FROM {rows})"
        )
    else:
        value = f"(SELECT count(*)::float8 FROM {rows})"
    breakdown = "'{}'::jsonb"
    if definition.breakdown_path:
        path = out.bind(list(definition.breakdown_path))
        breakdown = (
            "(SELECT COALESCE(jsonb_object_agg(k, c), '{}'::jsonb) FROM ("
            f"SELECT COALESCE(data #>> {path}::text[], '') AS k, count(*) AS c FROM {rows}"
            f" GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {out.bind(TOP)}) AS top)"
        )
    return value, breakdown


def _row_sets(query: StatisticsQuery, out: sql.Compiled) -> tuple[list[str], list[str]]:
    """One CTE per distinct row set (type, filter, window, time field) and, per statistic, the
    name of its CTE. The dashboards summarise the same rows several ways (appointments this
    month: a count, a status breakdown, a treatment breakdown): PostgreSQL materializes a CTE
    named more than once and reads the index range once; one named once is inlined into its
    subquery (a count then stays an index-only scan)."""
    names: dict[tuple[str, str, str, str], str] = {}
    ctes: list[str] = []
    used: list[str] = []
    for planned in query.statistics:
        d = planned.definition
        key = (d.resource_type, d.filter, d.window, d.time_field if d.window else "")
        if key not in names:
            names[key] = f"s{len(names)}"
            ctes.append(f"{names[key]} AS (SELECT data FROM resources WHERE {_where(planned, out)})")
        used.append(names[key])
    return ctes, used


def statistics(session: ShardSession, query: StatisticsQuery) -> tuple[list[Statistic], list[Activity]]:
    out = sql.Compiled()
    out.params.update({"b": query.business_id, "l": query.location_id})
    ctes, row_sets = _row_sets(query, out)
    columns: list[str] = []
    for index, (planned, rows) in enumerate(zip(query.statistics, row_sets, strict=True)):
        value, breakdown = _column(planned, rows, out)
        columns += [f"{value} AS v{index}", f"{breakdown} AS d{index}"]
    recent = _recent(query, out)
    # Custom plans: see ShardSession.run.
    with_clause = f"WITH {', '.join(ctes)} " if ctes else ""
    row = session.run(f"{with_clause}SELECT {', '.join([*columns, recent])}", out.params)[0]
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
        Activity(
            resource_type=item[0],
            resource_id=item[1],
            create_time=_instant(item[2]),
            update_time=_instant(item[3]),
            kind=ChangeKind(item[4]) if item[4] else None,
            change_time=datetime.fromisoformat(item[5]),
            principal=item[6] or "",
        )
        for item in _list(row["recent"])
    ]
    return found, activities


def _recent(query: StatisticsQuery, out: sql.Compiled) -> str:
    """The latest changes of the types summarised, from the change history: a backward scan
    of (business, location, sequence), joined to the resources still there for their times.
    When the history has none of them (bulk-loaded rows, nothing changed within retention),
    the most recently updated resources: per type a backward scan of its (tenant, type,
    update_time) index, then the latest of those. Both lists have the same item shape:
    [type, id, create_time, update_time, kind, change_time, principal]."""
    if not query.resource_types:
        return "'[]'::jsonb AS recent"
    limit = out.bind(query.recent)
    types = out.bind(list(query.resource_types))
    changes = (
        "(SELECT jsonb_agg(jsonb_build_array(c.resource_type, c.resource_id, r.create_time, r.update_time,"
        " c.kind, c.change_time, c.principal) ORDER BY c.sequence DESC) FROM ("
        "SELECT sequence, resource_type, resource_id, kind, change_time, principal FROM resource_changes"
        f" WHERE business_id = %(b)s AND location_id = %(l)s AND resource_type = ANY({types}::text[])"
        f" ORDER BY sequence DESC LIMIT {limit}) AS c"
        " LEFT JOIN resources AS r ON r.business_id = %(b)s AND r.location_id = %(l)s"
        " AND r.resource_type = c.resource_type AND r.resource_id = c.resource_id)"
    )
    per_type = " UNION ALL ".join(
        "(SELECT resource_type, resource_id, create_time, update_time FROM resources"
        f" WHERE business_id = %(b)s AND location_id = %(l)s AND resource_type = {out.bind(resource_type)}"
        f" ORDER BY update_time DESC, resource_id DESC LIMIT {limit})"
        for resource_type in query.resource_types
    )
    updates = (
        "(SELECT COALESCE(jsonb_agg(jsonb_build_array(resource_type, resource_id, create_time, update_time,"
        " NULL, update_time, NULL) ORDER BY update_time DESC, resource_id DESC), '[]'::jsonb) FROM ("
        f"SELECT * FROM ({per_type}) AS latest"
        f" ORDER BY update_time DESC, resource_id DESC LIMIT {limit}) AS r)"
    )
    # jsonb_agg of no rows is NULL: the updates are read only when the history has nothing.
    return f"COALESCE({changes}, {updates}) AS recent"


def _instant(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _object(value: Any) -> dict[str, Any]:
    loaded = json.loads(value) if isinstance(value, str) else value
    return dict(loaded or {})


def _list(value: Any) -> list[Any]:
    loaded = json.loads(value) if isinstance(value, str) else value
    return list(loaded or [])
