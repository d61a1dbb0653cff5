"""Permanent deletion: past the retention window, a deleted business's data leaves every shard.

``simplu-grpc purge-businesses`` runs ``BusinessPurge``. For each business deleted longer ago
than the retention window (``BUSINESS_RETENTION_DAYS``), in this order:

1. **Mark**: ``purge_start_time`` is written, conditional on the version read. From then on
   UndeleteBusiness refuses it (RETENTION_EXPIRED); an undelete that won the race leaves a
   newer version, the mark fails, and the business is skipped.
2. **Shards**: rows with its business_id are deleted from every shard it may have used (every
   shard the directory lists, plus each location's current one), in batches of at most
   ``batch_size`` rows per table, each batch its own short transaction. A run stopped between
   batches (killed, a shard down) leaves the rest for the next run, which finds the business
   still marked and carries on: deleting is idempotent.
3. **Citrus**: each location's registration is removed, when Citrus offers a way to
   (``ShardRegistrations.unregister`` answers None when it does not: logged, then skipped).
4. **Items**: its membership items, its domain-label claim and, last, the business item itself
   (conditional on the version): the business item is what a resumed run starts from, so it
   goes only when everything else is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from simplu_grpc.domain.business.lifecycle import purge_time
from simplu_grpc.domain.business.model import Business
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.errors import Aborted

log = logging.getLogger(__name__)


class PurgeStore(Protocol):
    """The business store as the purge uses it."""

    def get(self, business_id: str, *, consistent: bool = True) -> Business | None: ...

    def update(self, business: Business, *, previous: Business) -> Business: ...

    def deleted_page(self, *, start_after: str | None, limit: int) -> tuple[list[Business], str | None]:
        """Deleted businesses among one page of the table, and where the next page starts."""
        ...

    def remove(self, business: Business) -> None:
        """Delete the business's membership items, its label claim, then the business item."""
        ...


class ShardData(Protocol):
    """The shards as the purge uses them (``adapters.business_purge``)."""

    def shards_of(self, business: Business) -> Sequence[ShardAssignment]: ...

    def delete_batch(self, shard: ShardAssignment, business_id: str, limit: int) -> int:
        """Delete at most ``limit`` of the business's rows from one table (one transaction);
        answers how many went, 0 when no table holds any."""
        ...


class ShardRegistrations(Protocol):
    """Citrus's registrations: True removed, False none, None when Citrus offers no way to."""

    def unregister(self, business_id: str, location_id: str) -> bool | None: ...


@dataclass
class PurgeReport:
    """What a purge did; ``rows`` counts shard rows deleted per shard id."""

    purged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # not due, or undeleted meanwhile
    rows: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    unregistered: int = 0
    citrus_unsupported: bool = False
    last_id: str | None = None


class BusinessPurge:
    """Removes deleted businesses past their window, in bounded, resumable batches."""

    def __init__(
        self,
        *,
        store: PurgeStore,
        shards: ShardData,
        citrus: ShardRegistrations | None,
        retention: timedelta,
        batch_size: int = 500,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_batch: Callable[[PurgeReport], None] = lambda _report: None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._store = store
        self._shards = shards
        self._citrus = citrus
        self._retention = retention
        self._batch = batch_size
        self._now = clock
        # Called after every committed batch (progress; a test stops the run here).
        self._on_batch = on_batch

    def due(self, business: Business) -> bool:
        ends = purge_time(business, self._retention)
        return business.purge_start_time is not None or (ends is not None and self._now() >= ends)

    def purge_due(self, *, start_after: str | None = None, page: int = 100) -> PurgeReport:
        """Every deleted business past its window, in table scan order."""
        report = PurgeReport()
        cursor = start_after
        while True:
            businesses, cursor = self._store.deleted_page(start_after=cursor, limit=page)
            for business in businesses:
                self._purge(business.id, report)
            if cursor is None:
                return report
            report.last_id = cursor

    def purge(self, business_id: str) -> PurgeReport:
        """One business, if it is deleted and past its window."""
        report = PurgeReport()
        self._purge(business_id, report)
        return report

    def _purge(self, business_id: str, report: PurgeReport) -> None:
        business = self._store.get(business_id)
        if business is None or not business.is_deleted or not self.due(business):
            report.skipped.append(business_id)
            return
        if business.purge_start_time is None:
            try:
                business = self._store.update(
                    replace(business, purge_start_time=self._now()), previous=business
                )
            except Aborted:
                log.info("business %s changed while its purge was starting; skipped", business_id)
                report.skipped.append(business_id)
                return
            # The write returns the version it wrote: the item removed last is conditional on it.
        for shard in self._shards.shards_of(business):
            while deleted := self._shards.delete_batch(shard, business_id, self._batch):
                report.rows[shard.shard_id] = report.rows.get(shard.shard_id, 0) + deleted
                report.batches += 1
                self._on_batch(report)
        self._unregister(business, report)
        self._store.remove(business)
        report.purged.append(business_id)
        log.info("business %s purged (%d batches)", business_id, report.batches)

    def _unregister(self, business: Business, report: PurgeReport) -> None:
        if self._citrus is None or report.citrus_unsupported:
            return
        for location in business.locations:
            removed = self._citrus.unregister(business.id, location.id)
            if removed is None:
                log.warning("Citrus offers no way to remove a registration; %s's stay", business.id)
                report.citrus_unsupported = True
                return
            report.unregistered += int(removed)
