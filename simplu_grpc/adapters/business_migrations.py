"""One-shot migrations of the business-info table, run by ``simplu-grpc index-members``.

Each walks the table in scan order, a page at a time, and is idempotent: it writes only what
is missing, so a second run writes nothing, and a run that stopped (Ctrl-C, throttling, a
lost connection) resumes by running again, or from ``start_after``, the last id it reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from simplu_grpc.adapters.business_items import KIND_BUSINESS
from simplu_grpc.adapters.business_store import BusinessStore, membership_id

# Items read per scan page (about one BatchGetItem of membership ids per page of businesses).
SCAN_PAGE = 100


@dataclass
class IndexReport:
    """What ``index_members`` found, and wrote unless it was a dry run."""

    businesses: int = 0
    memberships: int = 0
    missing: int = 0  # memberships without their item: written, or (dry run) to be written
    last_id: str | None = None  # the last item scanned: where a run resumes with start_after


def index_members(
    store: BusinessStore,
    *,
    dry_run: bool,
    start_after: str | None = None,
    on_page: Callable[[IndexReport], None] = lambda _report: None,
) -> IndexReport:
    """Give every member of every business its membership item (the index ListBusinesses queries).

    A membership written here for a member removed meanwhile is harmless: a listing shows a
    business only to the people the business item itself lists.
    """
    report = IndexReport()
    cursor = start_after
    while True:
        items, cursor = store.scan_page(start_after=cursor, limit=SCAN_PAGE)
        pairs = [
            (subject, str(item["id"]["S"]))
            for item in items
            if item.get("kind", {}).get("S") == KIND_BUSINESS
            for subject in member_subs(item)
        ]
        report.businesses += sum(1 for item in items if item.get("kind", {}).get("S") == KIND_BUSINESS)
        report.memberships += len(pairs)
        present = store.existing_ids([membership_id(subject, business_id) for subject, business_id in pairs])
        missing = [pair for pair in pairs if membership_id(*pair) not in present]
        report.missing += len(missing)
        if missing and not dry_run:
            store.put_memberships(missing)
        if items:
            report.last_id = str(items[-1]["id"]["S"])
        on_page(report)
        if cursor is None:
            return report


def member_subs(item: Mapping[str, Any]) -> list[str]:
    """The Cognito subs a raw business item lists as members (``permissions.members``' keys)."""
    members = item.get("permissions", {}).get("M", {}).get("members", {}).get("M", {})
    return sorted(members)
