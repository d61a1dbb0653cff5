"""AggregateResources as one statement: GROUP BY over the tenant's type, filtered as ListResources.

Fixed fragments chosen by validated keys; every value (paths, the time zone, the filter's
literals, the group limit) is a bound parameter. A data key groups by its jsonb value (a
missing key with JSON null) and orders groups in jsonb order; a time key groups by
``date_trunc(unit, time, zone)`` -- the local day, ISO week (Monday) or month -- with unset
times in a last, null group. Only JSON numbers count for sum/min/max.
"""

from __future__ import annotations

import json

from simplu_grpc.adapters.postgres import resource_filter_sql as sql
from simplu_grpc.adapters.postgres.pool_session import ShardSession
from simplu_grpc.domain.resources.aggregates import AggregateQuery, AggregateResult, DataGroup, Group

# Fixed SQL per validated unit / column (never text from the request).
_UNITS = {"day": "'day'", "week": "'week'", "month": "'month'"}
_TIMES = {
    "start_time": "start_time",
    "end_time": "end_time",
    "create_time": "create_time",
    "update_time": "update_time",
}


def aggregate(session: ShardSession, query: AggregateQuery) -> AggregateResult:
    out = sql.Compiled()
    params = out.params
    params.update(
        {
            "b": query.business_id,
            "l": query.location_id,
            "n": query.resource_type,
            "limit": query.max_groups + 1,
        }
    )
    where = ["business_id = %(b)s", "location_id = %(l)s", "resource_type = %(n)s"]
    if query.filter is not None:
        where.append(sql.compile_filter(query.filter, out))
    keys: list[str] = []
    for key in query.group_by:
        if isinstance(key, DataGroup):
            keys.append(f"COALESCE(data #> {out.bind(list(key.path))}::text[], 'null'::jsonb)")
        else:
            keys.append(
                f"date_trunc({_UNITS[key.unit]}, {_TIMES[key.column]}, {out.bind(query.time_zone)}::text)"
            )
    value = "NULL::numeric"
    if query.value_path is not None:
        path = out.bind(list(query.value_path))
        value = (
            f"CASE WHEN jsonb_typeof(data #> {path}::text[]) = 'number'"
            f" THEN (data #>> {path}::text[])::numeric END"
        )
    selected = [
        f"({k}){'::text' if isinstance(g, DataGroup) else ''} AS k{i}"
        for i, (k, g) in enumerate(zip(keys, query.group_by, strict=True))
    ]
    # The key expressions themselves (same text, same parameters), so ORDER BY may use them.
    grouping = ", ".join(keys)
    ordering = ", ".join(f"{k} ASC NULLS LAST" for k in keys)
    statement = (
        f"SELECT {''.join(s + ', ' for s in selected)}count(*) AS count,"
        f" sum({value})::float8 AS sum, min({value})::float8 AS min, max({value})::float8 AS max"
        f" FROM resources WHERE {' AND '.join(where)}"
        + (f" GROUP BY {grouping} ORDER BY {ordering}" if keys else "")
        + " LIMIT %(limit)s"
    )
    rows = session.run(statement, params)  # custom plans: see ShardSession.run
    groups = [
        Group(
            keys=tuple(
                json.loads(row[f"k{i}"]) if isinstance(g, DataGroup) else row[f"k{i}"]
                for i, g in enumerate(query.group_by)
            ),
            count=int(row["count"]),
            sum=row["sum"],
            min=row["min"],
            max=row["max"],
        )
        for row in rows[: query.max_groups]
    ]
    return AggregateResult(groups, truncated=len(rows) > query.max_groups)
