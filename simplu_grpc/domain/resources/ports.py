"""What the ResourceService use cases need from outside the domain, as Protocols.

The PostgreSQL adapters implement them (``adapters/postgres``: ``PoolRegistry`` is the
``ShardConnections``, ``ShardStore`` the ``ResourceStore``); the unit tests use in-memory ones
(tests/unit/test_resource_ops.py). The domain never sees a connection: a session is whatever
the connections port hands out, passed back unchanged to the store port (``Session``).

Errors are the error tree's (``simplu_grpc.errors``): the adapters translate library
exceptions at their edge. In particular a shard that could not be reached at all (no
statement of this request was sent) is ``ShardUnreachable``: the one case in which a write
may be retried on a fresh route.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from simplu_grpc.domain.business.model import Business
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.resources.aggregates import AggregateQuery, AggregateResult
from simplu_grpc.domain.resources.changes import ChangeQuery, ResourceChange
from simplu_grpc.domain.resources.model import ListQuery, NewResource, ResourceKey, StoredResource, UpdatePlan
from simplu_grpc.domain.resources.page_tokens import Position
from simplu_grpc.domain.resources.statistics import Activity, Statistic, StatisticsQuery

# A session on one shard, as ``ShardConnections.connection`` yields it: opaque to the domain,
# handed back unchanged to the ``ResourceStore`` (its type belongs to the adapter).
Session = Any


class BusinessLookup(Protocol):
    """The business a request names (the short-lived business cache)."""

    def get(self, business_id: str) -> Business | None: ...


class ShardConnections(Protocol):
    """Sessions on a shard (the per-shard connection pools)."""

    def connection(self, assignment: ShardAssignment) -> AbstractContextManager[Session]:
        """A session on the assignment's shard, bounded by the RPC's deadline.

        Raises ``ShardUnreachable`` when the shard cannot be connected to (nothing was sent),
        another ``ShardUnavailable`` (or ``DeadlineExceeded``/``ResourceExhausted``) otherwise.
        """
        ...


@dataclass(frozen=True, slots=True)
class ListedPage:
    """A ListResources page: the rows, the keyset position after each, whether more follow,
    and the number of matches when cheaply known (None: more than the store counts, or unknown)."""

    resources: list[StoredResource]
    positions: list[Position]
    more: bool
    total_size: int | None


class ResourceStore(Protocol):
    """Resource reads and writes, each one statement on a session of the shard that holds them.

    A write that lost its connection after it was sent raises ``CommitOutcomeUnknown``.
    """

    def create(self, session: Session, new: NewResource) -> tuple[StoredResource, bool]:
        """Insert; with a request id, a retry returns the first result. Returns (resource, created)."""
        ...

    def get(self, session: Session, key: ResourceKey) -> StoredResource: ...

    def batch_get(
        self, session: Session, business_id: str, keys: Sequence[ResourceKey]
    ) -> list[StoredResource]:
        """The existing resources among ``keys`` (all on this session's shard)."""
        ...

    def list_page(self, session: Session, query: ListQuery, after: Position | None) -> ListedPage: ...

    def update(
        self,
        session: Session,
        key: ResourceKey,
        plan: UpdatePlan,
        *,
        principal: str,
        max_bytes: int | None = None,
    ) -> StoredResource: ...

    def delete(
        self, session: Session, key: ResourceKey, *, expected_version: int | None, principal: str
    ) -> None: ...

    def list_changes(
        self, session: Session, query: ChangeQuery, after: int | None
    ) -> tuple[list[ResourceChange], bool]: ...

    def aggregate(self, session: Session, query: AggregateQuery) -> AggregateResult: ...

    def statistics(
        self, session: Session, query: StatisticsQuery
    ) -> tuple[list[Statistic], list[Activity]]: ...
