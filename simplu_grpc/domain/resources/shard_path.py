"""The path every ResourceService call takes to its shard: permission and the business first
(``_allowed``, ``_checked_key``), then routing, a session and one store call (``_on_shard``),
counted into the tenant's load (``_run``).

When the shard cannot be reached, Citrus is asked once more (it may have failed the shard
over to a new connection string) and the call is retried there; writes are retried only
when the failure is ``ShardUnreachable`` (the statement was never sent), so no write is
applied twice. A write the shard refused because the location moved away (LocationMoved: the
shard's fence, nothing was written) is retried once on the route Citrus gives now.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from simplu_grpc import context
from simplu_grpc.domain.admin.tenant_load import IgnoreLoad
from simplu_grpc.domain.auth.authz import Authorizer
from simplu_grpc.domain.business.model import Business, Location
from simplu_grpc.domain.business.ports import BusinessLookup
from simplu_grpc.domain.checks import require_id
from simplu_grpc.domain.placement.routing import RoutingCache
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.resources.catalog import require_known_type, require_resource_type
from simplu_grpc.domain.resources.ids import new_resource_id
from simplu_grpc.domain.resources.model import ResourceKey, StoredResource
from simplu_grpc.domain.resources.ports import (
    ListedPage,
    LoadRecorder,
    ResourceStore,
    Session,
    ShardConnections,
)
from simplu_grpc.domain.resources.results import Limits
from simplu_grpc.domain.resources.validation import validate_tenant
from simplu_grpc.errors import LocationMoved, ShardUnavailable, ShardUnreachable, SimpluError

T = TypeVar("T")

CREATE, UPDATE, DELETE = "create", "update", "delete"

# What one shard call read and wrote, from its result (for per-tenant load, ``LoadRecorder``).
RowCounts = Callable[[Any], tuple[int, int]]


def read_one(_: object) -> tuple[int, int]:
    return 1, 0


def wrote_one(_: object) -> tuple[int, int]:
    return 0, 1


def rows_created(result: tuple[StoredResource, bool]) -> tuple[int, int]:
    # A replayed create (same request id) only read the first result back.
    return (0, 1) if result[1] else (1, 0)


def read_all(rows: Sequence[StoredResource]) -> tuple[int, int]:
    return len(rows), 0


def read_groups(result: Any) -> tuple[int, int]:
    # An aggregate reads many rows to answer few groups; the groups answered is what is known.
    return len(getattr(result, "groups", ())), 0


def read_recent(result: tuple[Any, Sequence[Any]]) -> tuple[int, int]:
    return len(result[1]), 0


def read_changes(page: tuple[Sequence[Any], bool]) -> tuple[int, int]:
    return len(page[0]), 0


def read_page(page: ListedPage) -> tuple[int, int]:
    return len(page.resources), 0


class ShardPath:
    """The use cases' dependencies and their shared path to the shard (see module docstring)."""

    def __init__(
        self,
        *,
        businesses: BusinessLookup,
        authorizer: Authorizer,
        routing: RoutingCache,
        pools: ShardConnections,
        store: ResourceStore,
        limits: Limits = Limits(),
        new_id: Callable[[], str] = new_resource_id,
        load: LoadRecorder | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_write: Callable[[ShardAssignment, str, str], None] | None = None,
    ) -> None:
        self._businesses = businesses
        self._authorizer = authorizer
        self._routing = routing
        self._pools = pools
        self._store = store
        self._limits = limits
        self._new_id = new_id
        self._load = load or IgnoreLoad()
        self._clock = clock
        # Called (shard, business id, location id) after a write that changed a resource
        # committed: wakes the change streams (adapters.change_notifier).
        self._on_write = on_write

    # --- the shared path -----------------------------------------------------------------

    def _checked_key(self, key: ResourceKey, action: str, prefix: str = "") -> Business:
        validate_tenant(key.business_id, key.location_id, prefix)
        require_known_type(key.resource_type, f"{prefix}resource_type")
        require_id(f"{prefix}resource_id", key.resource_id)
        business, _ = self._allowed(key.business_id, key.location_id, key.resource_type, action)
        require_resource_type(business.type.value, key.resource_type, f"{prefix}resource_type")
        return business

    def _allowed(
        self, business_id: str, location_id: str, resource_type: str, action: str
    ) -> tuple[Business, Location]:
        """The caller may ``action`` ``resource_type`` at the location (the active business and location)."""
        return self._authorizer.require_resource(
            context.principal(),
            self._businesses.get(business_id),
            business_id,
            location_id=location_id,
            resource_type=resource_type,
            action=action,
        )

    def _route(self, business: Business, location_id: str, *, refresh: bool = False) -> ShardAssignment:
        return self._routing.resolve(
            business.id, location_id, business.type.value, refresh=refresh
        ).assignment

    def _on_shard(
        self,
        business: Business,
        location_id: str,
        work: Callable[[Session], T],
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
        work: Callable[[Session], T],
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
                if written and self._on_write is not None:
                    self._on_write(assignment, business_id, location_id)
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
