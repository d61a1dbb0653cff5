"""Resource SQL on a shard: every statement fixed text plus parameters, each RPC one statement.

No identifier and no SQL text ever comes from input: column names, orderings and the
shape of the update expression are chosen from fixed fragments by validated enums and
counts; ids, documents, paths and dates are always bound parameters. Multi-step work
(idempotent create, etag-checked update and delete) is one statement with CTEs, so it is
atomic and costs one round trip. Each statement goes out as ONE simple-protocol query,
``SET LOCAL statement_timeout = <ms left>; <statement>`` (see ``ShardSession.run``). psycopg errors
are translated here: unique violation ->
ALREADY_EXISTS, check violation -> INVALID_ARGUMENT; etag mismatch -> ABORTED with
nothing changed, carrying the current etag (ErrorInfo metadata ``current_etag``) that the same
statement read.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from simplu_grpc.adapters.postgres import location_statistics_sql, resource_aggregate_sql
from simplu_grpc.adapters.postgres import resource_filter_sql as sql
from simplu_grpc.adapters.postgres.pool_session import Row, ShardSession
from simplu_grpc.adapters.postgres.resource_errors import check_violation, etag_mismatch, refuse_if_fenced
from simplu_grpc.adapters.postgres.resource_statements import (
    BATCH_GET,
    CHANGE_COLUMNS,
    COLUMNS,
    DELETES,
    FENCE,
    FENCE_COLUMNS,
    GET,
    INSERTS,
    INSERTS_IDEMPOTENT,
    NOT_FENCED,
    PK,
    PRUNE_SLOT,
    REPLAY,
    with_and_without_prune,
)
from simplu_grpc.domain.resources.aggregates import AggregateQuery, AggregateResult
from simplu_grpc.domain.resources.changes import ChangeKind, ChangeQuery, ResourceChange
from simplu_grpc.domain.resources.model import (
    ListQuery,
    NewResource,
    ResourceKey,
    StoredResource,
    Unset,
    UpdatePlan,
)
from simplu_grpc.domain.resources.page_tokens import Position
from simplu_grpc.domain.resources.ports import ListedPage
from simplu_grpc.domain.resources.statistics import Activity, Statistic, StatisticsQuery
from simplu_grpc.errors import Aborted, AlreadyExists, InvalidArgument, NotFound

# ListResources' total_size is exact up to this many matches, absent beyond (the count stops
# there, so a broad filter never costs a full count).
TOTAL_SIZE_LIMIT = 1000


def _position(query: ListQuery, row: Row) -> Position:
    values: list[Any] = []
    for index, key in enumerate(query.order_by):
        values.append(row[f"sort_{index}"] if key.is_data else row[key.field])
    return Position(tuple(values), row["resource_id"])


def _stored(row: Row) -> StoredResource:
    return StoredResource(
        key=ResourceKey(row["business_id"], row["location_id"], row["resource_type"], row["resource_id"]),
        business_type=row["business_type"],
        # A JSON object: the resources_data_is_object constraint guarantees it.
        data=row["data"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        create_time=row["create_time"],
        update_time=row["update_time"],
        version=int(row["version"]),
    )


def _key_params(key: ResourceKey) -> dict[str, Any]:
    return {"b": key.business_id, "l": key.location_id, "n": key.resource_type, "id": key.resource_id}


# How long a request id is remembered (AIP-155): a retry within it returns the first result.
REQUEST_ID_RETENTION = timedelta(hours=24)
# Expired request ids each idempotent create deletes at most (more than one per create, so
# the purge outruns the claims; few, so a create never does much more than its own work).
_PURGE_BATCH = 20
# How long the change log keeps a change (CHANGE_RETENTION_SECONDS); one write in
# CHANGE_PRUNE_EVERY deletes at most _CHANGE_PRUNE_BATCH expired changes (see PRUNE_CHANGES).
CHANGE_RETENTION = timedelta(days=7)
_CHANGE_PRUNE_BATCH = 100
CHANGE_PRUNE_EVERY = 16


class ShardStore:
    """Resource reads and writes on one shard session (see module docstring)."""

    def __init__(
        self,
        *,
        request_id_retention: timedelta = REQUEST_ID_RETENTION,
        change_retention: timedelta = CHANGE_RETENTION,
        change_prune_every: int = CHANGE_PRUNE_EVERY,
    ) -> None:
        if request_id_retention <= timedelta(0):
            raise ValueError("request_id_retention must be positive")
        if change_retention <= timedelta(0):
            raise ValueError("change_retention must be positive")
        if change_prune_every < 1:
            raise ValueError("change_prune_every must be at least 1")
        self._retention = request_id_retention
        self._change_retention = change_retention
        self._prune_every = change_prune_every
        # Counts writes to pick the ones that prune; next() on a count is atomic under the GIL,
        # and a miscount would only move a prune by one write.
        self._writes = itertools.count(1)

    def _logging(self, principal: str) -> tuple[dict[str, Any], bool]:
        """What a write's change row needs (who wrote), and whether this write also prunes
        (with what is past retention)."""
        params: dict[str, Any] = {"who": principal}
        prune = next(self._writes) % self._prune_every == 0
        if prune:
            params["change_retention"] = self._change_retention
            params["change_prune"] = _CHANGE_PRUNE_BATCH
        return params, prune

    def create(self, session: ShardSession, new: NewResource) -> tuple[StoredResource, bool]:
        """Insert; with a request id, a retry returns the first result. Returns (resource, created)."""
        params = {
            **_key_params(new.key),
            "type": new.business_type,
            "data": Jsonb(new.data),
            "start": new.start_time,
            "end": new.end_time,
            "rq": new.request_id,
            "retention": self._retention,
            "purge": _PURGE_BATCH,
        }
        logging, prune = self._logging(new.requester)
        params.update(logging)
        statement = (INSERTS_IDEMPOTENT if new.request_id else INSERTS)[prune]
        try:
            answered = session.run(statement, params, write=True)
            # One row always comes back (it carries the fence); a row without a resource means
            # nothing was created or replayed.
            rows = [row for row in answered if row["resource_id"] is not None]
            if not rows:
                refuse_if_fenced(answered[0])
            if not rows and new.request_id:
                # A concurrent create with this request id committed while we waited on the
                # claim; our statement's snapshot predates it, a new one sees it.
                rows = session.run(REPLAY, params)
        except psycopg.errors.UniqueViolation as exc:
            raise AlreadyExists(
                f"resource {new.key.resource_id} already exists",
                reason="RESOURCE_EXISTS",
                metadata={"resource_id": new.key.resource_id},
            ) from exc
        except psycopg.errors.CheckViolation as exc:
            raise check_violation(exc, updating=False) from exc
        if not rows:
            raise Aborted(
                "a concurrent create with the same request_id did not finish; retry", reason="CONFLICT"
            )
        row = rows[0]
        stored = _stored(row)
        if not row["created"] and stored.key.resource_type != new.key.resource_type:
            raise InvalidArgument.field("request_id", "was already used for a different request")
        return stored, bool(row["created"])

    def get(self, session: ShardSession, key: ResourceKey) -> StoredResource:
        rows = session.run(GET, _key_params(key))
        if not rows:
            raise NotFound(
                f"resource {key.resource_type}/{key.resource_id} not found", reason="RESOURCE_NOT_FOUND"
            )
        return _stored(rows[0])

    def batch_get(
        self, session: ShardSession, business_id: str, keys: Sequence[ResourceKey]
    ) -> list[StoredResource]:
        """The existing resources among ``keys`` (all on this session's shard), one statement."""
        if not keys:
            return []
        rows = session.run(
            BATCH_GET,
            {
                "b": business_id,
                "l": [k.location_id for k in keys],
                "n": [k.resource_type for k in keys],
                "id": [k.resource_id for k in keys],
            },
        )
        return [_stored(row) for row in rows]

    def list_page(self, session: ShardSession, query: ListQuery, after: Position | None) -> ListedPage:
        """One page in keyset order, whether more rows follow it, and the bounded total."""
        out = sql.Compiled()
        where = ["business_id = %(b)s", "location_id = %(l)s", "resource_type = %(n)s"]
        params = out.params
        params.update(
            {
                "b": query.business_id,
                "l": query.location_id,
                "n": query.resource_type,
                "limit": query.page_size + 1,
            }
        )
        if query.start_range.start is not None:
            where.append("start_time >= %(from)s")
            params["from"] = query.start_range.start
        if query.start_range.end is not None:
            where.append("start_time < %(to)s")
            params["to"] = query.start_range.end
        # Overlap with [overlap_from, overlap_to): an end-less resource is the instant start_time,
        # a start-less one overlaps nothing.
        if not query.overlaps.is_open:
            where.append("start_time IS NOT NULL")
        if query.overlaps.end is not None:
            where.append("start_time < %(overlap_to)s")
            params["overlap_to"] = query.overlaps.end
        if query.overlaps.start is not None:
            where.append(
                "(end_time > %(overlap_from)s OR (end_time IS NULL AND start_time >= %(overlap_from)s))"
            )
            params["overlap_from"] = query.overlaps.start
        if query.data_contains:
            where.append("data @> %(contains)s")
            params["contains"] = Jsonb(query.data_contains)
        if query.filter is not None:
            where.append(sql.compile_filter(query.filter, out))
        expressions = [sql.sort_expression(key, out) for key in query.order_by]
        matching = " AND ".join(where)
        page_where = matching
        if after is not None:
            page_where += " AND " + sql.after_condition(query.order_by, expressions, after, out)
        # Data sort values come back as jsonb text, so a position goes back to the shard exactly.
        sort_values = "".join(
            f", ({e})::text AS sort_{i}"
            for i, (k, e) in enumerate(zip(query.order_by, expressions, strict=True))
            if k.is_data
        )
        params["count_limit"] = TOTAL_SIZE_LIMIT + 1
        # The total is an uncorrelated subquery (computed once) that stops counting past the
        # limit: bounded work, in the same statement as the page.
        statement = (
            f"SELECT {COLUMNS}{sort_values},"
            f" (SELECT count(*) FROM (SELECT 1 FROM resources WHERE {matching} LIMIT %(count_limit)s) AS c)"
            f" AS total_size FROM resources WHERE {page_where}"
            f" ORDER BY {sql.order_clause(query.order_by, expressions)} LIMIT %(limit)s"
        )
        # Custom plans only: the indexes that serve a filter have its values as their keys.
        rows = session.run(statement, params)
        page = rows[: query.page_size]
        total: int | None = None
        if rows and rows[0]["total_size"] <= TOTAL_SIZE_LIMIT:
            total = int(rows[0]["total_size"])
        elif not rows and after is None:
            total = 0
        return ListedPage(
            resources=[_stored(row) for row in page],
            positions=[_position(query, row) for row in page],
            more=len(rows) > query.page_size,
            total_size=total,
        )

    def update(
        self,
        session: ShardSession,
        key: ResourceKey,
        plan: UpdatePlan,
        *,
        principal: str,
        max_bytes: int | None = None,
    ) -> StoredResource:
        """Apply the plan in one statement, logging the change as ``principal``'s; NOT_FOUND,
        ABORTED when the etag is stale, and INVALID_ARGUMENT (nothing changed) when the
        resulting document exceeds ``max_bytes``."""
        logging, prune = self._logging(principal)
        params: dict[str, Any] = {**_key_params(key), **logging, "paths": list(plan.paths)}
        expression = "data"
        if plan.replace_data is not None:
            params["replace"] = Jsonb(plan.replace_data)
            expression = "%(replace)s::jsonb"
        for index, (path, value) in enumerate(plan.set_paths):
            params[f"sp{index}"] = list(path)
            params[f"sv{index}"] = Jsonb(value)
            expression = f"simplu_jsonb_put({expression}, %(sp{index})s::text[], %(sv{index})s::jsonb)"
        for index, path in enumerate(plan.remove_paths):
            params[f"rp{index}"] = list(path)
            expression = f"({expression} #- %(rp{index})s::text[])"
        if max_bytes is not None and (plan.replace_data is not None or plan.set_paths):
            # The result is measured on the row as locked (masked sets accumulate), in this
            # statement; an oversized result raises and the statement changes nothing.
            params["max_bytes"] = max_bytes
            expression = f"simplu_jsonb_bounded({expression}, %(max_bytes)s::integer)"
        assignments = [f"data = {expression}"]
        if not isinstance(plan.start_time, Unset):
            assignments.append("start_time = %(start)s")
            params["start"] = plan.start_time
        if not isinstance(plan.end_time, Unset):
            assignments.append("end_time = %(end)s")
            params["end"] = plan.end_time
        assignments += ["update_time = clock_timestamp()", "version = version + 1"]
        params["v"] = plan.expected_version
        statement = f"""
WITH {FENCE}, current_row AS (
    SELECT version FROM resources WHERE {PK}
), updated AS (
    UPDATE resources SET {", ".join(assignments)}
    WHERE {PK} AND (%(v)s::bigint IS NULL OR version = %(v)s::bigint) AND {NOT_FENCED}
    RETURNING {COLUMNS}
), logged AS (
    INSERT INTO resource_changes ({CHANGE_COLUMNS})
    SELECT business_id, location_id, resource_type, resource_id, 'updated', version, %(paths)s::text[],
           %(who)s
    FROM updated
){PRUNE_SLOT}
SELECT {FENCE_COLUMNS}, (SELECT version FROM current_row) AS current_version, u.*
FROM (SELECT 1) AS one LEFT JOIN updated AS u ON true
"""
        statement = with_and_without_prune(statement)[prune]
        try:
            rows = session.run(statement, params, write=True)
        except psycopg.errors.CheckViolation as exc:
            raise check_violation(exc, updating=True, max_bytes=max_bytes) from exc
        row = rows[0]
        refuse_if_fenced(row)
        if row["current_version"] is None:
            raise NotFound(
                f"resource {key.resource_type}/{key.resource_id} not found", reason="RESOURCE_NOT_FOUND"
            )
        if row["version"] is None:
            raise etag_mismatch(key, row["current_version"], plan.expected_version)
        return _stored(row)

    def delete(
        self, session: ShardSession, key: ResourceKey, *, expected_version: int | None, principal: str
    ) -> None:
        """Delete, logging the change as ``principal``'s; ``expected_version``
        (``resources.expected_version(etag)``) None deletes any version."""
        logging, prune = self._logging(principal)
        params = {**_key_params(key), "v": expected_version, **logging}
        row = session.run(DELETES[prune], params, write=True)[0]
        refuse_if_fenced(row)
        if row["current_version"] is None:
            raise NotFound(
                f"resource {key.resource_type}/{key.resource_id} not found", reason="RESOURCE_NOT_FOUND"
            )
        if row["deleted_version"] is None:
            raise etag_mismatch(key, row["current_version"], expected_version)

    def list_changes(
        self, session: ShardSession, query: ChangeQuery, after: int | None
    ) -> tuple[list[ResourceChange], bool]:
        """One page of the change log in sequence order (after the sequence ``after``), and whether
        more rows follow it. The location (and, for one resource, its key) leads the WHERE so the
        scan is an index range: resource_changes_by_location or _by_resource."""
        where = ["business_id = %(b)s", "location_id = %(l)s", "resource_type = ANY(%(n)s::text[])"]
        params: dict[str, Any] = {
            "b": query.business_id,
            "l": query.location_id,
            "n": list(query.resource_types),
            "limit": query.page_size + 1,
        }
        if query.resource_id is not None:
            where.append("resource_id = %(id)s")
            params["id"] = query.resource_id
        if query.principal is not None:
            where.append("principal = %(who)s")
            params["who"] = query.principal
        if query.change_time.start is not None:
            where.append("change_time >= %(from)s")
            params["from"] = query.change_time.start
        if query.change_time.end is not None:
            where.append("change_time < %(to)s")
            params["to"] = query.change_time.end
        direction = "DESC" if query.descending else "ASC"
        if after is not None:
            where.append(f"sequence {'<' if query.descending else '>'} %(after)s")
            params["after"] = after
        statement = (
            f"SELECT sequence, {CHANGE_COLUMNS}, change_time FROM resource_changes"
            f" WHERE {' AND '.join(where)} ORDER BY sequence {direction} LIMIT %(limit)s"
        )
        rows = session.run(statement, params)
        return [_change(row) for row in rows[: query.page_size]], len(rows) > query.page_size

    def aggregate(self, session: ShardSession, query: AggregateQuery) -> AggregateResult:
        """AggregateResources' one statement (``resource_aggregate_sql``)."""
        return resource_aggregate_sql.aggregate(session, query)

    def statistics(
        self, session: ShardSession, query: StatisticsQuery
    ) -> tuple[list[Statistic], list[Activity]]:
        """GetLocationStatistics' one statement (``location_statistics_sql``)."""
        return location_statistics_sql.statistics(session, query)


def _change(row: Row) -> ResourceChange:
    return ResourceChange(
        sequence=int(row["sequence"]),
        kind=ChangeKind(row["kind"]),
        key=ResourceKey(row["business_id"], row["location_id"], row["resource_type"], row["resource_id"]),
        version=int(row["version"]),
        paths=tuple(row["paths"]),
        principal=row["principal"],
        change_time=row["change_time"],
    )
