"""In-memory implementations of the resources domain's ports (domain/resources/ports.py).

``MemoryShards`` is the ShardConnections port: a session is the assignment it was opened on,
and a shard listed in ``unreachable`` refuses the connection (``ShardUnreachable``: nothing
sent). ``MemoryStore`` is the ResourceStore port with the shard store's semantics: one table
keyed by the resource key, versions and etags, request ids scoped to their requester, a
change log; ``fail_next`` makes the next store call fail after it reached its shard (as a
lost connection does). Every store call is recorded as (operation, shard id).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.resources.aggregates import AggregateQuery, AggregateResult
from simplu_grpc.domain.resources.changes import ChangeKind, ChangeQuery, ResourceChange
from simplu_grpc.domain.resources.model import (
    ListQuery,
    NewResource,
    ResourceKey,
    StoredResource,
    Unset,
    UpdatePlan,
    etag_for,
)
from simplu_grpc.domain.resources.page_tokens import Position
from simplu_grpc.domain.resources.ports import ListedPage
from simplu_grpc.domain.resources.statistics import Activity, Statistic, StatisticsQuery
from simplu_grpc.errors import Aborted, AlreadyExists, InvalidArgument, NotFound, ShardUnreachable

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class MemoryShards:
    """ShardConnections: hands out the assignment as the session; records every connection."""

    def __init__(self) -> None:
        self.unreachable: set[str] = set()
        self.connections: list[str] = []

    @contextlib.contextmanager
    def connection(self, assignment: ShardAssignment) -> Iterator[ShardAssignment]:
        self.connections.append(assignment.shard_id)
        if assignment.shard_id in self.unreachable:
            raise ShardUnreachable(f"shard {assignment.shard_id} refused the connection")
        yield assignment


class MemoryStore:
    """ResourceStore over dicts, with the shard store's rules (see module docstring)."""

    def __init__(self) -> None:
        self.rows: dict[ResourceKey, StoredResource] = {}
        self.request_ids: dict[tuple[str, str, str, str], ResourceKey] = {}
        self.changes: list[ResourceChange] = []
        self.calls: list[tuple[str, str]] = []
        self.fail_next: Exception | None = None
        self._clock = EPOCH

    def _enter(self, operation: str, session: ShardAssignment) -> None:
        self.calls.append((operation, session.shard_id))
        failure, self.fail_next = self.fail_next, None
        if failure is not None:
            raise failure

    def _tick(self) -> datetime:
        self._clock += timedelta(seconds=1)
        return self._clock

    def _log(
        self, kind: ChangeKind, key: ResourceKey, version: int, who: str, paths: Sequence[str] = ()
    ) -> None:
        self.changes.append(
            ResourceChange(
                sequence=len(self.changes) + 1,
                kind=kind,
                key=key,
                version=version,
                paths=tuple(paths),
                principal=who,
                change_time=self._tick(),
            )
        )

    def create(self, session: ShardAssignment, new: NewResource) -> tuple[StoredResource, bool]:
        self._enter("create", session)
        claim = (new.key.business_id, new.key.location_id, new.requester, new.request_id or "")
        if new.request_id and claim in self.request_ids:
            first = self.rows[self.request_ids[claim]]
            if first.key.resource_type != new.key.resource_type:
                raise InvalidArgument.field("request_id", "was already used for a different request")
            return first, False
        if new.key in self.rows:
            raise AlreadyExists(f"resource {new.key.resource_id} already exists", reason="RESOURCE_EXISTS")
        now = self._tick()
        stored = StoredResource(
            new.key, new.business_type, copy.deepcopy(new.data), new.start_time, new.end_time, now, now, 1
        )
        self.rows[new.key] = stored
        if new.request_id:
            self.request_ids[claim] = new.key
        self._log(ChangeKind.CREATED, new.key, 1, new.requester)
        return stored, True

    def get(self, session: ShardAssignment, key: ResourceKey) -> StoredResource:
        self._enter("get", session)
        found = self.rows.get(key)
        if found is None:
            raise NotFound(
                f"resource {key.resource_type}/{key.resource_id} not found", reason="RESOURCE_NOT_FOUND"
            )
        return found

    def batch_get(
        self, session: ShardAssignment, business_id: str, keys: Sequence[ResourceKey]
    ) -> list[StoredResource]:
        self._enter("batch_get", session)
        return [self.rows[k] for k in keys if k.business_id == business_id and k in self.rows]

    def list_page(self, session: ShardAssignment, query: ListQuery, after: Position | None) -> ListedPage:
        """Time-column orderings only (what these tests use); no filter, no containment."""
        self._enter("list_page", session)
        assert query.filter is None, "not supported by the fake"
        assert not query.data_contains, "not supported by the fake"
        assert all(not key.is_data and not key.descending for key in query.order_by)
        fields = [key.field for key in query.order_by]

        def sort_key(row: StoredResource) -> tuple[Any, ...]:
            return (*(getattr(row, f) for f in fields), row.key.resource_id)

        matching = sorted(
            (
                row
                for row in self.rows.values()
                if (row.key.business_id, row.key.location_id, row.key.resource_type)
                == (query.business_id, query.location_id, query.resource_type)
            ),
            key=sort_key,
        )
        if after is not None:
            matching = [row for row in matching if sort_key(row) > (*after.sort_values, after.resource_id)]
        page = matching[: query.page_size]
        return ListedPage(
            resources=page,
            positions=[Position(tuple(getattr(row, f) for f in fields), row.key.resource_id) for row in page],
            more=len(matching) > query.page_size,
            total_size=None,
        )

    def update(
        self,
        session: ShardAssignment,
        key: ResourceKey,
        plan: UpdatePlan,
        *,
        principal: str,
        max_bytes: int | None = None,
    ) -> StoredResource:
        self._enter("update", session)
        current = self._current(key, plan.expected_version)
        data = copy.deepcopy(plan.replace_data if plan.replace_data is not None else current.data)
        for path, value in plan.set_paths:
            target = data
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = copy.deepcopy(value)
        for path in plan.remove_paths:
            target = data
            for part in path[:-1]:
                target = target.get(part, {})
            target.pop(path[-1], None)
        updated = replace(
            current,
            data=data,
            start_time=current.start_time if isinstance(plan.start_time, Unset) else plan.start_time,
            end_time=current.end_time if isinstance(plan.end_time, Unset) else plan.end_time,
            update_time=self._tick(),
            version=current.version + 1,
        )
        self.rows[key] = updated
        self._log(ChangeKind.UPDATED, key, updated.version, principal, plan.paths)
        return updated

    def delete(
        self, session: ShardAssignment, key: ResourceKey, *, expected_version: int | None, principal: str
    ) -> None:
        self._enter("delete", session)
        current = self._current(key, expected_version)
        del self.rows[key]
        self._log(ChangeKind.DELETED, key, current.version, principal)

    def _current(self, key: ResourceKey, expected_version: int | None) -> StoredResource:
        current = self.rows.get(key)
        if current is None:
            raise NotFound(
                f"resource {key.resource_type}/{key.resource_id} not found", reason="RESOURCE_NOT_FOUND"
            )
        if expected_version is not None and current.version != expected_version:
            raise Aborted(
                "the etag does not match the resource's current version; read it again",
                metadata={"current_etag": etag_for(current.version)},
            )
        return current

    def list_changes(
        self, session: ShardAssignment, query: ChangeQuery, after: int | None
    ) -> tuple[list[ResourceChange], bool]:
        self._enter("list_changes", session)
        rows = [
            c
            for c in self.changes
            if (c.key.business_id, c.key.location_id) == (query.business_id, query.location_id)
            and c.key.resource_type in query.resource_types
            and (after is None or c.sequence > after)
        ]
        return rows[: query.page_size], len(rows) > query.page_size

    def aggregate(self, session: ShardAssignment, query: AggregateQuery) -> AggregateResult:
        raise AssertionError("AggregateResources is covered against PostgreSQL (test_resource_filter_store)")

    def statistics(
        self, session: ShardAssignment, query: StatisticsQuery
    ) -> tuple[list[Statistic], list[Activity]]:
        raise AssertionError("GetLocationStatistics is covered against PostgreSQL")
