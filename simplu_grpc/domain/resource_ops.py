"""ResourceService use cases: who may act, where the data lives, then one statement on that shard.

Every call follows the same path, in this order (the order is the contract):

1. input shape (ids, a resource type some catalog has) -> INVALID_ARGUMENT, touching nothing;
2. the business, through the short-lived business cache (no DynamoDB call when warm);
3. permission (``Authorizer.require_resource``) BEFORE existence: a stranger gets
   PERMISSION_DENIED whether or not the business exists; then the business must be active
   and the location must belong to it and be active;
4. the rest of validation that needs the business type (catalog, documents, dates);
5. routing (cache -> Citrus, registering the location on first use);
6. a pooled connection to the shard and ONE statement.

When the shard cannot be reached, Citrus is asked once more (it may have failed the shard
over to a new connection string) and the call is retried there; writes are retried only
when the failure happened before the statement was sent, so no write is applied twice.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from simplu_grpc import context
from simplu_grpc.adapters.location_statistics_sql import statistics as statistics_on_shard
from simplu_grpc.adapters.pools import PoolRegistry, ShardSession, ShardUnreachable
from simplu_grpc.adapters.resource_aggregate_sql import aggregate as aggregate_on_shard
from simplu_grpc.adapters.shard_store import ListedPage, ShardStore, group_by_location
from simplu_grpc.domain import changes, location_statistics, page_tokens, resource_aggregates
from simplu_grpc.domain import resources as rules
from simplu_grpc.domain.authz import READ, Authorizer
from simplu_grpc.domain.business import Business
from simplu_grpc.domain.changes import ResourceChange
from simplu_grpc.domain.ids import new_resource_id
from simplu_grpc.domain.resources import ResourceKey, StoredResource
from simplu_grpc.domain.routing import RoutingCache
from simplu_grpc.domain.shards import ShardAssignment
from simplu_grpc.domain.tenant_load import IgnoreLoad, LoadRecorder
from simplu_grpc.errors import LocationMoved, ShardUnavailable, SimpluError

T = TypeVar("T")

CREATE, UPDATE, DELETE = "create", "update", "delete"

# What one shard call read and wrote, from its result (for per-tenant load, ``LoadRecorder``).
RowCounts = Callable[[Any], tuple[int, int]]


def _read_one(_: object) -> tuple[int, int]:
    return 1, 0


def _wrote_one(_: object) -> tuple[int, int]:
    return 0, 1


def _created(result: tuple[StoredResource, bool]) -> tuple[int, int]:
    # A replayed create (same request id) only read the first result back.
    return (0, 1) if result[1] else (1, 0)


def _read_all(rows: Sequence[StoredResource]) -> tuple[int, int]:
    return len(rows), 0


def _read_groups(result: Any) -> tuple[int, int]:
    # An aggregate reads many rows to answer few groups; the groups answered is what is known.
    return len(getattr(result, "groups", ())), 0


def _read_recent(result: tuple[Any, Sequence[Any]]) -> tuple[int, int]:
    return len(result[1]), 0


def _read_changes(page: tuple[Sequence[Any], bool]) -> tuple[int, int]:
    return len(page[0]), 0


def _read_page(page: ListedPage) -> tuple[int, int]:
    return len(page.resources), 0


class BusinessLookup(Protocol):
    def get(self, business_id: str) -> Business | None: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """Document bounds from settings (RESOURCE_DATA_MAX_BYTES / _MAX_DEPTH)."""

    max_bytes: int = 256 * 1024
    max_depth: int = 32


class ResponseBudget(Protocol):
    """Takes the resources of one response until the next would not fit (the transport's
    message size is the servicer's business; the use case only stops where it says)."""

    def admit(self, resource: StoredResource) -> bool:
        """Take ``resource`` into the response; False (taking nothing) when it does not fit."""
        ...


class Unbounded:
    """A budget that takes everything (for callers that have no message limit)."""

    def admit(self, resource: StoredResource) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Page:
    resources: list[StoredResource]
    next_page_token: str
    # Exact number of matches when cheap to know (see ShardStore.list_page), else None.
    total_size: int | None = None


@dataclass(frozen=True, slots=True)
class ChangePage:
    changes: list[ResourceChange]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class BatchResult:
    found: list[StoredResource]
    missing: list[ResourceKey]
    next_page_token: str = ""


class ResourceOps:
    """The ResourceService use cases (see module docstring)."""

    def __init__(
        self,
        *,
        businesses: BusinessLookup,
        authorizer: Authorizer,
        routing: RoutingCache,
        pools: PoolRegistry,
        store: ShardStore | None = None,
        limits: Limits = Limits(),
        new_id: Callable[[], str] = new_resource_id,
        load: LoadRecorder | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._businesses = businesses
        self._authorizer = authorizer
        self._routing = routing
        self._pools = pools
        self._store = store or ShardStore()
        self._limits = limits
        self._new_id = new_id
        self._load = load or IgnoreLoad()
        self._clock = clock

    # --- the RPCs ------------------------------------------------------------------

    def create(
        self,
        *,
        business_id: str,
        location_id: str,
        resource_type: str,
        resource_id: str,
        data: Mapping[str, Any],
        start_time: datetime | None,
        end_time: datetime | None,
        request_id: str,
    ) -> tuple[StoredResource, bool]:
        rules.validate_tenant(business_id, location_id, "resource.")
        rules.require_known_type(resource_type, "resource.resource_type")
        business = self._allowed(business_id, location_id, resource_type, CREATE)
        new, generate = rules.validate_new(
            business_id=business_id,
            location_id=location_id,
            resource_type=resource_type,
            business_type=business.type.value,
            resource_id=resource_id,
            data=data,
            start_time=start_time,
            end_time=end_time,
            request_id=request_id,
            max_bytes=self._limits.max_bytes,
            max_depth=self._limits.max_depth,
        )
        if generate:
            new = replace(new, key=replace(new.key, resource_id=self._new_id()))
        new = replace(new, requester=context.principal().subject)
        return self._on_shard(
            business, location_id, lambda s: self._store.create(s, new), idempotent=False, rows=_created
        )

    def get(self, key: ResourceKey) -> StoredResource:
        business = self._checked_key(key, READ)
        return self._on_shard(
            business, key.location_id, lambda s: self._store.get(s, key), idempotent=True, rows=_read_one
        )

    def batch_get(
        self,
        business_id: str,
        keys: Sequence[ResourceKey],
        *,
        page_token: str = "",
        binding_extra: Sequence[str] = (),
        budget: ResponseBudget | None = None,
    ) -> BatchResult:
        """The keys in request order, found or missing, from the page token's key on, up to
        where the budget stops (then a token for the rest)."""
        rules.validate_batch_shape(business_id, keys)
        principal = context.principal()
        business = self._businesses.get(business_id)
        # Every (location, name) pair must be allowed before anything is read.
        for location_id, resource_type in dict.fromkeys((k.location_id, k.resource_type) for k in keys):
            self._authorizer.require_resource(
                principal,
                business,
                business_id,
                location_id=location_id,
                resource_type=resource_type,
                action=READ,
            )
        assert business is not None  # require_resource raised otherwise
        rules.validate_batch_names(business.type.value, keys)
        binding = {
            "b": business_id,
            "k": [[k.location_id, k.resource_type, k.resource_id] for k in keys],
            "m": sorted(binding_extra),
        }
        offset = page_tokens.decode_offset(page_token, binding, len(keys))
        wanted = keys[offset:]
        # Route each location once, then one statement per shard for all its keys.
        by_shard: dict[str, tuple[str, ShardAssignment, list[ResourceKey]]] = {}
        for location_id, location_keys in group_by_location(wanted).items():
            assignment = self._route(business, location_id)
            by_shard.setdefault(assignment.shard_id, (location_id, assignment, []))[2].extend(location_keys)
        found: dict[ResourceKey, StoredResource] = {}
        for location_id, assignment, shard_keys in by_shard.values():
            rows = self._on_shard(
                business,
                location_id,
                functools.partial(self._store.batch_get, business_id=business_id, keys=shard_keys),
                idempotent=True,
                assignment=assignment,
                rows=_read_all,
            )
            for row in rows:
                found[row.key] = row
        taken: list[StoredResource] = []
        missing: list[ResourceKey] = []
        budget = budget or Unbounded()
        for index, key in enumerate(wanted):
            hit = found.get(key)
            if hit is None:
                missing.append(key)
            elif budget.admit(hit):
                taken.append(hit)
            else:
                return BatchResult(taken, missing, page_tokens.encode_offset(binding, offset + index))
        return BatchResult(taken, missing)

    def list(
        self,
        *,
        business_id: str,
        location_id: str,
        resource_type: str,
        start_range: rules.TimeRange,
        overlaps: rules.TimeRange,
        data_contains: Mapping[str, Any] | None,
        order_by: str,
        page_size: int,
        page_token: str,
        budget: ResponseBudget | None = None,
        filter_text: str = "",
    ) -> Page:
        rules.validate_tenant(business_id, location_id)
        rules.require_known_type(resource_type, "resource_type")
        business = self._allowed(business_id, location_id, resource_type, READ)
        query = rules.validate_list(
            business_type=business.type.value,
            business_id=business_id,
            location_id=location_id,
            resource_type=resource_type,
            start_range=start_range,
            overlaps=overlaps,
            data_contains=data_contains,
            order_by=order_by,
            page_size=page_size,
            max_bytes=self._limits.max_bytes,
            max_depth=self._limits.max_depth,
            filter_text=filter_text,
        )
        binding = query.binding()
        after = page_tokens.decode(page_token, binding, [key.is_data for key in query.order_by])
        listed = self._on_shard(
            business,
            location_id,
            lambda s: self._store.list_page(s, query, after),
            idempotent=True,
            rows=_read_page,
        )
        rows = listed.resources
        budget = budget or Unbounded()
        taken = 0
        while taken < len(rows) and budget.admit(rows[taken]):
            taken += 1
        if taken == len(rows) and not listed.more:
            return Page(rows, "", listed.total_size)
        return Page(rows[:taken], page_tokens.encode(binding, listed.positions[taken - 1]), listed.total_size)

    def aggregate(
        self,
        *,
        business_id: str,
        location_id: str,
        resource_type: str,
        filter_text: str,
        value_field: str,
        group_by: Sequence[str],
        max_groups: int,
    ) -> resource_aggregates.AggregateResult:
        """Counts (and sum/min/max of a numeric data field) per group; "<type>:read"."""
        rules.validate_tenant(business_id, location_id)
        rules.require_known_type(resource_type, "resource_type")
        business, location = self._authorizer.require_resource(
            context.principal(),
            self._businesses.get(business_id),
            business_id,
            location_id=location_id,
            resource_type=resource_type,
            action=READ,
        )
        query = resource_aggregates.validate_aggregate(
            business_type=business.type.value,
            business_id=business_id,
            location_id=location_id,
            resource_type=resource_type,
            filter_text=filter_text,
            value_field=value_field,
            group_by=group_by,
            max_groups=max_groups,
            zone=resource_aggregates.time_zone(location.timezone, business.settings.timezone),
        )
        return self._on_shard(
            business, location_id, lambda s: aggregate_on_shard(s, query), idempotent=True, rows=_read_groups
        )

    def statistics(self, *, business_id: str, location_id: str) -> location_statistics.LocationStatistics:
        """The business type's dashboard for one location; read permission on every type it
        summarises is checked before anything is read (PERMISSION_DENIED names none of them)."""
        rules.validate_tenant(business_id, location_id)
        principal = context.principal()
        looked_up = self._businesses.get(business_id)
        # The types summarised follow from the business type; every one must be readable. An
        # unknown business still goes through the authorizer (PERMISSION_DENIED first).
        kinds = location_statistics.definitions(looked_up.type.value.lower()) if looked_up else ()
        types = list(dict.fromkeys(d.resource_type for d in kinds)) or ["activities"]
        for resource_type in types:
            business, location = self._authorizer.require_resource(
                principal,
                looked_up,
                business_id,
                location_id=location_id,
                resource_type=resource_type,
                action=READ,
            )
        zone = resource_aggregates.time_zone(location.timezone, business.settings.timezone)
        now = self._clock()
        query = location_statistics.plan(
            business_type=business.type.value.lower(),
            business_id=business_id,
            location_id=location_id,
            now=now,
            zone=zone,
        )
        found, recent = self._on_shard(
            business, location_id, lambda s: statistics_on_shard(s, query), idempotent=True, rows=_read_recent
        )
        return location_statistics.LocationStatistics(now, zone, found, recent)

    def update(self, key: ResourceKey, request: rules.UpdateRequest) -> StoredResource:
        business = self._checked_key(key, UPDATE, prefix="resource.")
        plan = rules.validate_update(
            request, max_bytes=self._limits.max_bytes, max_depth=self._limits.max_depth
        )
        principal = context.principal()
        # The request alone is bounded above; the shard bounds the RESULT (masked sets add up).
        return self._on_shard(
            business,
            key.location_id,
            lambda s: self._store.update(
                s, key, plan, principal=principal.subject, max_bytes=self._limits.max_bytes
            ),
            idempotent=False,
            rows=_wrote_one,
        )

    def delete(self, key: ResourceKey, *, etag: str) -> None:
        business = self._checked_key(key, DELETE)
        version = rules.expected_version(etag)
        self._on_shard(
            business,
            key.location_id,
            lambda s: self._store.delete(
                s, key, expected_version=version, principal=context.principal().subject
            ),
            idempotent=False,
            rows=_wrote_one,
        )

    def list_changes(
        self,
        *,
        business_id: str,
        location_id: str,
        resource_types: Sequence[str],
        resource_id: str,
        principal: str,
        change_time: rules.TimeRange,
        order_by: str,
        page_size: int,
        page_token: str,
    ) -> ChangePage:
        """A location's change history (or one resource's), read permission per type: named
        types must all be readable; no types means every type of the location the caller may
        read (PERMISSION_DENIED when none)."""
        rules.validate_tenant(business_id, location_id)
        named = tuple(resource_types)
        for index, resource_type in enumerate(named):
            rules.require_known_type(resource_type, f"resource_types[{index}]")
        wanted_id, who, descending, size = changes.validate_filters(
            resource_types=named,
            resource_id=resource_id,
            principal=principal,
            change_time=change_time,
            order_by=order_by,
            page_size=page_size,
        )
        known = self._businesses.get(business_id)
        if named:
            candidates = named
        elif known is not None:
            candidates = tuple(sorted(rules.catalog_types(known.type.value)))
        else:
            candidates = tuple(sorted(rules.KNOWN_RESOURCE_TYPES))
        business, readable = self._authorizer.require_readable_types(
            context.principal(),
            known,
            business_id,
            location_id=location_id,
            resource_types=candidates,
            all_required=bool(named),
        )
        for index, resource_type in enumerate(named):
            rules.require_resource_type(business.type.value, resource_type, f"resource_types[{index}]")
        query = changes.ChangeQuery(
            business_id=business_id,
            location_id=location_id,
            resource_types=tuple(sorted(readable)),
            resource_id=wanted_id,
            principal=who,
            change_time=change_time,
            descending=descending,
            page_size=size,
        )
        binding = query.binding()
        after = page_tokens.decode_sequence(page_token, binding)
        rows, more = self._on_shard(
            business,
            location_id,
            lambda s: self._store.list_changes(s, query, after),
            idempotent=True,
            rows=_read_changes,
        )
        if not more or not rows:
            return ChangePage(rows, "")
        return ChangePage(rows, page_tokens.encode_sequence(binding, rows[-1].sequence))

    # --- the shared path -----------------------------------------------------------------

    def _checked_key(self, key: ResourceKey, action: str, prefix: str = "") -> Business:
        rules.validate_tenant(key.business_id, key.location_id, prefix)
        rules.require_known_type(key.resource_type, f"{prefix}resource_type")
        rules.require_id(f"{prefix}resource_id", key.resource_id)
        business = self._allowed(key.business_id, key.location_id, key.resource_type, action)
        rules.require_resource_type(business.type.value, key.resource_type, f"{prefix}resource_type")
        return business

    def _allowed(self, business_id: str, location_id: str, resource_type: str, action: str) -> Business:
        business, _ = self._authorizer.require_resource(
            context.principal(),
            self._businesses.get(business_id),
            business_id,
            location_id=location_id,
            resource_type=resource_type,
            action=action,
        )
        return business

    def _route(self, business: Business, location_id: str, *, refresh: bool = False) -> ShardAssignment:
        return self._routing.resolve(
            business.id, location_id, business.type.value, refresh=refresh
        ).assignment

    def _on_shard(
        self,
        business: Business,
        location_id: str,
        work: Callable[[ShardSession], T],
        *,
        idempotent: bool,
        rows: RowCounts,
        assignment: ShardAssignment | None = None,
    ) -> T:
        """Run ``work`` on the location's shard (``assignment`` when the caller already routed
        it); once more on a fresh route when the shard cannot be reached. ``rows`` says what a
        result read and wrote, for the tenant's load."""
        if assignment is None:
            assignment = self._route(business, location_id)
        try:
            return self._run(assignment, work, business.id, location_id, rows)
        except LocationMoved as moved:
            # The shard fenced the location after a move (the write changed nothing): this
            # route is stale. Ask the directory and write where it says now, once.
            fresh = self._route(business, location_id, refresh=True)
            if fresh.shard_id == assignment.shard_id:
                raise moved from None
            return self._run(fresh, work, business.id, location_id, rows)
        except ShardUnavailable as failure:
            if not (idempotent or isinstance(failure, ShardUnreachable)):
                raise
            # Citrus may have failed the shard over to a new connection string: ask it once.
            try:
                fresh = self._route(business, location_id, refresh=True)
            except SimpluError:
                raise failure from None
            if fresh.connection_string == assignment.connection_string:
                raise
            return self._run(fresh, work, business.id, location_id, rows)

    def _run(
        self,
        assignment: ShardAssignment,
        work: Callable[[ShardSession], T],
        business_id: str,
        location_id: str,
        rows: RowCounts,
    ) -> T:
        """Every statement on a shard passes here: it is also where the tenant's load is counted
        (one call per attempt, on the shard that ran it; failed attempts count as errors)."""
        # Citrus's isActive=false means "take no new businesses" (Citrus's register honours it);
        # the shard's existing tenants are served while its database answers.
        # Shard time is the time the tenant held a shard connection (checkout excluded: a
        # wait for the pool is the other tenants' load, not this one's).
        started = ended = 0
        read = written = 0
        failed = True
        try:
            with self._pools.connection(assignment) as session:
                started = time.perf_counter_ns()
                try:
                    result = work(session)
                finally:
                    ended = time.perf_counter_ns()
                read, written = rows(result)
                failed = False
                return result
        finally:
            self._load.record(
                assignment.shard_id,
                business_id,
                location_id,
                shard_ns=ended - started,
                rows_read=read,
                rows_written=written,
                error=failed,
            )
