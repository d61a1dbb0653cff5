"""ShardAdmin.GetTenantUsage: which locations load a shard (this process) and fill it (the shard).

Two sources, and the answer says which figures come from where:

* **load** (requests, errors, rows read/written, shard time per location) comes from this
  server process's ``TenantLoad`` (memory, no I/O): it is *per replica* — the answer names
  the replica (host and process id) — and approximate only once the top-K sketch filled
  (``load_exact``);
* **storage** (rows and bytes per resource type) is read from the shards on demand, only when
  the answer is ordered by stored rows or bytes, bounded by the deadline and by how much of
  the table is read (exact scan or sample: ``StorageReading``; each shard says which).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from simplu_grpc.domain.admin.dependencies import run_bounded, within
from simplu_grpc.domain.admin.ports import Pools, ShardStorage, StorageReading, TypeStorage
from simplu_grpc.domain.admin.tenant_load import WINDOWS_MINUTES, LoadOrder, TenantFigures, TenantLoad
from simplu_grpc.domain.checks import Violations, check_text
from simplu_grpc.domain.paging import PageSizeRule
from simplu_grpc.domain.placement.ports import ShardSource
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.errors import NotFound, SimpluError
from simplu_grpc.redact import describe_error

log = logging.getLogger(__name__)

DEFAULT_WINDOW_MINUTES = 5
# A top-N: more than the maximum is refused, not coerced (the caller would miss tenants).
LIMIT = PageSizeRule(default=10, maximum=100, reject_above=True)
SHARD_ID_MAX = 128
# Citrus's shard list for a fleet-wide storage answer; then every shard is read concurrently.
CITRUS_TIMEOUT_SECONDS = 5.0
STORAGE_TIMEOUT_SECONDS = 10.0


class TenantOrder(Enum):
    SHARD_TIME = "shard_time"
    REQUESTS = "requests"
    ERRORS = "errors"
    ROWS = "rows"  # read + written
    STORED_ROWS = "stored_rows"
    STORED_BYTES = "stored_bytes"

    @property
    def needs_storage(self) -> bool:
        return self in (TenantOrder.STORED_ROWS, TenantOrder.STORED_BYTES)


_LOAD_ORDERS = {
    TenantOrder.SHARD_TIME: LoadOrder.SHARD_TIME,
    TenantOrder.REQUESTS: LoadOrder.REQUESTS,
    TenantOrder.ERRORS: LoadOrder.ERRORS,
    TenantOrder.ROWS: LoadOrder.ROWS,
}


@dataclass(frozen=True, slots=True)
class Replica:
    """The server process that answered (load figures are this process's only)."""

    host: str
    pid: int


@dataclass(frozen=True, slots=True)
class ShardStorageNote:
    """How one shard's storage was read: exactly, from a sample, or not at all (``error``)."""

    shard_id: str
    exact: bool = False
    sampled_percent: float = 0.0
    table_bytes: int = 0
    estimated_rows: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True)
class TenantRow:
    shard_id: str
    business_id: str
    location_id: str
    load: TenantFigures | None  # None: no load recorded for it in the window on this replica
    storage: list[TypeStorage] = field(default_factory=list)

    @property
    def stored_rows(self) -> int:
        return sum(t.rows for t in self.storage)

    @property
    def stored_bytes(self) -> int:
        return sum(t.bytes for t in self.storage)


@dataclass(frozen=True, slots=True)
class TenantUsageReport:
    tenants: list[TenantRow]
    window_minutes: int
    window_start: float  # epoch seconds
    window_end: float
    load_exact: bool
    tracked: int
    capacity: int
    replica: Replica
    storage: list[ShardStorageNote]


class TenantUsageQuery:
    """GetTenantUsage (see module docstring); authorization is the servicer's (admins only)."""

    def __init__(
        self,
        *,
        load: TenantLoad,
        storage: StorageReading,
        shards: ShardSource,
        pools: Pools,
        replica: Replica,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self._load = load
        self._storage = storage
        self._shards = shards
        self._pools = pools
        self._replica = replica
        self._secrets = tuple(s for s in secrets if s)

    def usage(
        self, *, shard_id: str, window_minutes: int, order: TenantOrder, limit: int
    ) -> TenantUsageReport:
        """The top ``limit`` locations of one shard (or every shard) by ``order`` over the window."""
        minutes, limit = _checked(shard_id, window_minutes, limit)
        if order.needs_storage:
            notes, rows = self._by_storage(shard_id, minutes, order, limit)
            report = self._load.top(minutes=minutes, limit=0, shard_id=shard_id)
        else:
            notes = []
            report = self._load.top(
                minutes=minutes, order=_LOAD_ORDERS[order], limit=limit, shard_id=shard_id
            )
            rows = [TenantRow(f.shard_id, f.business_id, f.location_id, f) for f in report.tenants]
        return TenantUsageReport(
            tenants=rows,
            window_minutes=minutes,
            window_start=report.start,
            window_end=report.end,
            load_exact=report.exact,
            tracked=report.tracked,
            capacity=report.capacity,
            replica=self._replica,
            storage=notes,
        )

    def _by_storage(
        self, shard_id: str, minutes: int, order: TenantOrder, limit: int
    ) -> tuple[list[ShardStorageNote], list[TenantRow]]:
        assignments = self._assignments(shard_id)
        by_bytes = order is TenantOrder.STORED_BYTES
        outcomes = run_bounded(
            {a.shard_id: self._reader(a, limit, by_bytes) for a in assignments},
            timeout=STORAGE_TIMEOUT_SECONDS,
        )
        notes: list[ShardStorageNote] = []
        grouped: dict[tuple[str, str, str], list[TypeStorage]] = {}
        for assignment in sorted(assignments, key=lambda a: a.shard_id):
            outcome = outcomes.get(assignment.shard_id)
            if not isinstance(outcome, ShardStorage):
                failure = outcome if isinstance(outcome, BaseException) else TimeoutError("no answer")
                error = describe_error(failure, (*self._secrets, assignment.connection_string))
                log.warning("storage of shard %s could not be read: %s", assignment.shard_id, error)
                notes.append(ShardStorageNote(assignment.shard_id, error=error))
                continue
            notes.append(
                ShardStorageNote(
                    shard_id=assignment.shard_id,
                    exact=outcome.exact,
                    sampled_percent=outcome.sampled_percent,
                    table_bytes=outcome.table_bytes,
                    estimated_rows=outcome.estimated_rows,
                )
            )
            for kind in outcome.types:
                grouped.setdefault((assignment.shard_id, kind.business_id, kind.location_id), []).append(kind)

        def total(item: tuple[tuple[str, str, str], list[TypeStorage]]) -> tuple[int, tuple[str, str, str]]:
            key, types = item
            return (-sum(t.bytes if by_bytes else t.rows for t in types), key)

        top = sorted(grouped.items(), key=total)[:limit]
        load = {
            (f.shard_id, f.business_id, f.location_id): f
            for f in self._load.top(
                minutes=minutes, limit=len(top), shard_id=shard_id, keys=[(k[1], k[2]) for k, _ in top]
            ).tenants
        }
        rows = [TenantRow(key[0], key[1], key[2], load.get(key), types) for key, types in top]
        return notes, rows

    def _reader(self, assignment: ShardAssignment, limit: int, by_bytes: bool) -> Callable[[], ShardStorage]:
        def read() -> ShardStorage:
            return self._storage.read(assignment.connection_string, locations=limit, by_bytes=by_bytes)

        return read

    def _assignments(self, shard_id: str) -> list[ShardAssignment]:
        """Citrus's shards (one, or all); this server's pools when Citrus does not answer."""
        try:
            with within(CITRUS_TIMEOUT_SECONDS):
                listed = self._shards.shards_health()
        except SimpluError as exc:
            log.warning(
                "GetTenantUsage: Citrus unavailable, reading this server's shards only: %s",
                describe_error(exc, self._secrets),
            )
            listed = [a for s in self._pools.stats() if (a := self._pools.assignment(s.shard_id)) is not None]
        if shard_id:
            listed = [a for a in listed if a.shard_id == shard_id]
            if not listed:
                raise NotFound(f"shard {shard_id!r} is unknown", metadata={"shard_id": shard_id})
        # An entry without a connection string (Citrus sent none, or it was below the TLS floor)
        # must not be read: libpq would connect to its defaults, another database altogether.
        return [a for a in listed if a.connection_string]


def _checked(shard_id: str, window_minutes: int, limit: int) -> tuple[int, int]:
    """INVALID_ARGUMENT for a malformed shard id, a window not offered, or a limit out of range."""
    v = Violations()
    check_text(v, "shard_id", shard_id, max_length=SHARD_ID_MAX)
    minutes = window_minutes or DEFAULT_WINDOW_MINUTES
    if minutes not in WINDOWS_MINUTES:
        v.add("window_minutes", f"must be one of {', '.join(map(str, WINDOWS_MINUTES))} minutes")
    problem = LIMIT.problem(limit)
    if problem is not None:
        v.add("page_size", problem)
    v.raise_if_any()
    return minutes, LIMIT.size(limit)
