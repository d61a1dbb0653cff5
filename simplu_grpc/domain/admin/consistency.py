"""CheckConsistency: business info vs Citrus registrations vs shard contents. Read-only.

For each business checked:

- every ACTIVE location in business info must be registered with Citrus (``get_shard``,
  never ``register``: this check repairs nothing), on an active shard;
- the shards of its locations must answer and carry this server's latest schema;
- every resource row on any shard Citrus lists must belong to a location that exists in the
  business info (any status); the rest are reported as orphans, counted per shard and location.

Shards are read through the ``ShardReader`` port, over short-lived, read-only connections
(not the pools: creating a pool migrates a new shard, and a check must not change
anything), concurrently and under a short deadline each, with one query per shard for the
whole page of businesses.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from simplu_grpc.domain.admin.dependencies import CALL_TIMEOUT_SECONDS, run_bounded, within
from simplu_grpc.domain.admin.ports import Migrator, ShardReader, ShardSnapshot
from simplu_grpc.domain.business.model import Business
from simplu_grpc.domain.business.ports import BusinessRepository
from simplu_grpc.domain.checks import Violations, check_business_id
from simplu_grpc.domain.paging import PageSizeRule
from simplu_grpc.domain.placement.ports import ShardSource
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.errors import CitrusUnavailable, InvalidArgument, NotFound
from simplu_grpc.redact import describe_error

log = logging.getLogger(__name__)

PAGE_SIZE = PageSizeRule(default=20, maximum=100)
# Per shard read; a blackholed shard is reported unreachable after this long.
SHARD_CHECK_TIMEOUT_SECONDS = 3.0


class FindingKind(enum.Enum):
    LOCATION_NOT_REGISTERED = 1
    SHARD_UNREACHABLE = 2
    SHARD_NOT_MIGRATED = 3
    ORPHAN_RESOURCES = 4
    SHARD_INACTIVE = 5
    CITRUS_UNAVAILABLE = 6


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    location_id: str = ""
    shard_id: str = ""
    count: int = 0
    detail: str = ""


@dataclass(slots=True)
class BusinessReport:
    business_id: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not self.findings


class ConsistencyChecker:
    """Runs the checks for one business or a page of businesses; reports, never repairs."""

    def __init__(
        self,
        *,
        shards: ShardSource,
        businesses: BusinessRepository,
        secrets: tuple[str, ...] = (),
        reader: ShardReader,
        migrator: Migrator,
        shard_timeout: float = SHARD_CHECK_TIMEOUT_SECONDS,
    ) -> None:
        self._shards = shards
        self._businesses = businesses
        self._secrets = secrets
        self._reader = reader
        self._migrator = migrator
        self._shard_timeout = shard_timeout

    def check(self, business_id: str, page_size: int, page_token: str) -> tuple[list[BusinessReport], str]:
        """Reports for ``business_id``, or for one page of businesses; and the next page token."""
        size = PAGE_SIZE.resolve(page_size)
        if business_id:
            v = Violations()
            check_business_id(v, "business_id", business_id)
            v.raise_if_any()
            if page_token:
                raise InvalidArgument.field("page_token", "must be empty when business_id is given")
            with within(CALL_TIMEOUT_SECONDS):
                business = self._businesses.get(business_id)
            return self._check([business] if business else [], [business_id], require=business_id), ""
        with within(CALL_TIMEOUT_SECONDS):
            page = self._businesses.list(
                page_size=size, page_token=page_token, member=None, include_deleted=False
            )
        found = page.businesses
        return self._check(found, [b.id for b in found], require=""), page.next_token

    def _check(self, businesses: list[Business], ids: list[str], *, require: str) -> list[BusinessReport]:
        reports = {b.id: BusinessReport(b.id) for b in businesses}
        try:
            with within(CALL_TIMEOUT_SECONDS):
                listed = self._shards.shards_health()
        except CitrusUnavailable as exc:
            detail = describe_error(exc, self._secrets)
            for report in reports.values():
                report.findings.append(Finding(FindingKind.CITRUS_UNAVAILABLE, detail=detail))
            if require and not reports:
                raise
            return list(reports.values())
        by_id = {s.shard_id: s for s in listed}

        # 1. Registrations of active locations (read-only lookups).
        location_shard: dict[tuple[str, str], ShardAssignment] = {}
        for business in businesses:
            self._check_registrations(business, reports[business.id], location_shard)

        # 2. One read per shard Citrus lists, concurrently: version + counts for these businesses.
        outcomes = run_bounded(
            {s.shard_id: _bind(self._reader.snapshot, s.connection_string, ids) for s in listed},
            timeout=self._shard_timeout,
        )
        target = self._migrator.latest_version()
        known = {b.id: {loc.id for loc in b.locations} for b in businesses}
        orphans_of_missing: list[Finding] = []
        for shard_id in sorted(by_id):
            outcome = outcomes[shard_id]
            users = sorted({(b, loc) for (b, loc), s in location_shard.items() if s.shard_id == shard_id})
            if not isinstance(outcome, ShardSnapshot):
                secrets = (*self._secrets, by_id[shard_id].connection_string)
                error = outcome if isinstance(outcome, BaseException) else RuntimeError("no answer")
                detail = describe_error(error, secrets)
                for b, loc in users:
                    reports[b].findings.append(
                        Finding(
                            FindingKind.SHARD_UNREACHABLE, location_id=loc, shard_id=shard_id, detail=detail
                        )
                    )
                continue
            if outcome.schema_version < target:
                detail = f"schema version {outcome.schema_version}, this server needs {target}"
                for b, loc in users:
                    reports[b].findings.append(
                        Finding(
                            FindingKind.SHARD_NOT_MIGRATED, location_id=loc, shard_id=shard_id, detail=detail
                        )
                    )
            for (b, loc), count in sorted(outcome.counts.items()):
                if b in known and loc in known[b]:
                    continue
                finding = Finding(
                    FindingKind.ORPHAN_RESOURCES,
                    location_id=loc,
                    shard_id=shard_id,
                    count=count,
                    detail=(
                        f"{count} resources of location {loc!r}, which is not in business info"
                        if b in known
                        else f"{count} resources of business {b!r}, which is not in business info"
                    ),
                )
                if b in reports:
                    reports[b].findings.append(finding)
                else:
                    orphans_of_missing.append(finding)
        if require and require not in reports:
            if not orphans_of_missing:
                raise NotFound(f"business {require!r} not found", metadata={"business_id": require})
            # A deleted business whose resources stayed behind: report them rather than NOT_FOUND.
            reports[require] = BusinessReport(require, orphans_of_missing)
        return [reports[b.id] for b in businesses] + [r for k, r in reports.items() if k not in known]

    def _check_registrations(
        self,
        business: Business,
        report: BusinessReport,
        location_shard: dict[tuple[str, str], ShardAssignment],
    ) -> None:
        for location in business.locations:
            if not location.active:
                continue
            try:
                with within(CALL_TIMEOUT_SECONDS):
                    assignment = self._shards.get_shard(business.id, location.id)
            except CitrusUnavailable as exc:
                report.findings.append(
                    Finding(
                        FindingKind.CITRUS_UNAVAILABLE,
                        location_id=location.id,
                        detail=describe_error(exc, self._secrets),
                    )
                )
                return
            if assignment is None:
                report.findings.append(
                    Finding(
                        FindingKind.LOCATION_NOT_REGISTERED,
                        location_id=location.id,
                        detail=f"Citrus has no shard for key {business.id}-{location.id}",
                    )
                )
                continue
            location_shard[(business.id, location.id)] = assignment
            if not assignment.is_active:
                report.findings.append(
                    Finding(
                        FindingKind.SHARD_INACTIVE,
                        location_id=location.id,
                        shard_id=assignment.shard_id,
                        detail="Citrus marks the shard inactive",
                    )
                )


def _bind(
    fn: Callable[[str, Sequence[str]], ShardSnapshot], dsn: str, ids: Sequence[str]
) -> Callable[[], Any]:
    return lambda: fn(dsn, ids)
