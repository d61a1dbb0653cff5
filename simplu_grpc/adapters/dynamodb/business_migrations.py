"""One-shot migrations of the business-info table: ``simplu-grpc index-members`` and ``rewrite-items``.

Each walks the table in scan order, a page at a time, and is idempotent: it writes only what
is missing, so a second run writes nothing, and a run that stopped (Ctrl-C, throttling, a
lost connection) resumes by running again, or from ``start_after``, the last id it reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from simplu_grpc.adapters.dynamodb.business_items import from_item, is_business_item, to_item
from simplu_grpc.adapters.dynamodb.business_store import BusinessStore
from simplu_grpc.adapters.dynamodb.membership_items import membership_id
from simplu_grpc.domain.business.model import Business
from simplu_grpc.errors import Aborted

log = logging.getLogger(__name__)

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
        businesses = [business for business in map(_readable, items) if business is not None]
        pairs = [(subject, b.id) for b in businesses for subject in sorted(b.permissions.members)]
        report.businesses += len(businesses)
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


@dataclass
class RewriteReport:
    """What ``rewrite_items`` found, and rewrote unless it was a dry run."""

    businesses: int = 0
    current: int = 0  # already in the current shape: left alone
    rewritten: int = 0  # rewritten, or (dry run) to be rewritten
    changed_meanwhile: int = 0  # written by someone else between read and rewrite: run again
    unreadable: list[str] = field(default_factory=list)  # ids of items that cannot be read: untouched
    last_id: str | None = None


def rewrite_items(
    store: BusinessStore,
    *,
    dry_run: bool,
    start_after: str | None = None,
    on_page: Callable[[RewriteReport], None] = lambda _report: None,
) -> RewriteReport:
    """Rewrite every business item not in the current shape (the original system's) in place.

    Each rewrite is the store's ordinary conditional update (the item must not have changed
    since it was read) and writes, in the same transaction, the membership items of the
    members the reader derives (the original's owner).
    """
    report = RewriteReport()
    cursor = start_after
    while True:
        items, cursor = store.scan_page(start_after=cursor, limit=SCAN_PAGE)
        for item in items:
            business = _readable(item, report.unreadable)
            if business is None:
                continue
            report.businesses += 1
            if to_item(business) == item:
                report.current += 1
                continue
            report.rewritten += 1
            if dry_run:
                continue
            indexed = {s: m for s, m in business.permissions.members.items() if s in member_subs(item)}
            previous = replace(business, permissions=replace(business.permissions, members=indexed))
            try:
                store.update(business, previous=previous)
            except Aborted:
                report.rewritten -= 1
                report.changed_meanwhile += 1
        if items:
            report.last_id = str(items[-1]["id"]["S"])
        on_page(report)
        if cursor is None:
            return report


def _readable(item: Mapping[str, Any], unreadable: list[str] | None = None) -> Business | None:
    """The business an item holds; None for other kinds of item and for malformed ones (logged,
    and their ids noted in ``unreadable``): a migration never stops at one bad item."""
    if not is_business_item(item):
        return None
    try:
        return from_item(item)
    except ValueError as exc:
        log.error("%s", exc)
        if unreadable is not None:
            unreadable.append(str(item.get("id", {}).get("S", "")))
        return None


def member_subs(item: Mapping[str, Any]) -> list[str]:
    """The Cognito subs a raw business item lists as members (``permissions.members``' keys)."""
    members = item.get("permissions", {}).get("M", {}).get("members", {}).get("M", {})
    return sorted(members)
