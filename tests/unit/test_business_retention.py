"""The purge, the lifecycle's window and domain labels against in-memory ports (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from boto3.dynamodb.types import TypeSerializer

from simplu_grpc.adapters.dynamodb.business_items import from_item, to_item
from simplu_grpc.domain.business.domain_labels import label_problem, normalized
from simplu_grpc.domain.business.model import Business, BusinessStatus, BusinessType, Location
from simplu_grpc.domain.business.retention import BusinessPurge, PurgeReport
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.errors import Aborted

NOW = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


class MemoryStore:
    """Versions like BusinessStore; records the order of what happened."""

    def __init__(self, *businesses: Business) -> None:
        self.items = {b.id: b for b in businesses}
        self.log: list[str] = []
        self.race: Business | None = None  # written by "someone else" right before the mark

    def get(self, business_id: str, *, consistent: bool = True) -> Business | None:
        return self.items.get(business_id)

    def update(self, business: Business, *, previous: Business) -> Business:
        if self.race is not None:
            self.items[self.race.id], self.race = self.race, None
        if self.items[business.id].version != previous.version:
            raise Aborted("stale")
        stored = replace(business, version=business.version + 1)
        self.items[business.id] = stored
        self.log.append(f"mark {business.id}")
        return stored

    def deleted_page(self, *, start_after: str | None, limit: int) -> tuple[list[Business], str | None]:
        return [b for b in self.items.values() if b.is_deleted], None

    def remove(self, business: Business) -> None:
        assert self.items[business.id].version == business.version
        del self.items[business.id]
        self.log.append(f"remove {business.id}")


class MemoryShards:
    def __init__(self, store: MemoryStore, rows: dict[str, int]) -> None:
        self.rows = rows  # shard id -> rows of the business
        self.store = store

    def shards_of(self, business: Business) -> Sequence[ShardAssignment]:
        return [ShardAssignment(shard_id=s, connection_string="postgresql://x") for s in sorted(self.rows)]

    def delete_batch(self, shard: ShardAssignment, business_id: str, limit: int) -> int:
        deleted = min(limit, self.rows[shard.shard_id])
        self.rows[shard.shard_id] -= deleted
        if deleted:
            self.store.log.append(f"batch {shard.shard_id} {deleted}")
        return deleted


class MemoryCitrus:
    def __init__(self, store: MemoryStore, offered: bool = True) -> None:
        self.store = store
        self.offered = offered

    def unregister(self, business_id: str, location_id: str) -> bool | None:
        if not self.offered:
            return None
        self.store.log.append(f"unregister {business_id}-{location_id}")
        return True


def deleted(business_id: str, days_ago: float) -> Business:
    return Business(
        id=business_id,
        name=business_id,
        type=BusinessType.DENTAL,
        status=BusinessStatus.DELETED,
        delete_time=NOW - days_ago * DAY,
        locations=(Location(id="main", name="Main"),),
        version=3,
    )


def purge(store: MemoryStore, shards: MemoryShards, **kwargs: object) -> BusinessPurge:
    return BusinessPurge(
        store=store,
        shards=shards,
        citrus=MemoryCitrus(store),
        retention=30 * DAY,
        batch_size=2,
        clock=lambda: NOW,
        **kwargs,  # type: ignore[arg-type]
    )


def test_marks_first_deletes_in_bounded_batches_tells_citrus_and_removes_the_item_last() -> None:
    """Mark, then batches of at most batch_size per shard, then Citrus, then the item: the item
    that lets a stopped run resume is the last thing to go."""
    store = MemoryStore(deleted("old", 31), deleted("recent", 29))
    shards = MemoryShards(store, {"s1": 3, "s2": 2})
    report = purge(store, shards).purge_due()
    assert report.purged == ["old"]
    assert report.rows == {"s1": 3, "s2": 2}
    assert store.log == [
        "mark old",
        "batch s1 2",
        "batch s1 1",
        "batch s2 2",
        "unregister old-main",
        "remove old",
    ]
    assert "recent" in store.items


def test_a_stopped_run_resumes_from_the_marked_business() -> None:
    """Stopped after one batch: the business is marked and still there; the next run finishes it
    without marking it again."""

    class Stop(Exception):
        pass

    def stop(report: PurgeReport) -> None:
        raise Stop

    store = MemoryStore(deleted("old", 40))
    shards = MemoryShards(store, {"s1": 5})
    with pytest.raises(Stop):
        purge(store, shards, on_batch=stop).purge("old")
    assert store.items["old"].purge_start_time == NOW
    assert shards.rows == {"s1": 3}
    report = purge(store, shards).purge("old")
    assert report.purged == ["old"]
    assert store.log.count("mark old") == 1
    assert shards.rows == {"s1": 0}


def test_an_undelete_that_wins_the_race_keeps_the_business() -> None:
    """The mark is conditional on the version read: undeleted in between, nothing is deleted."""
    store = MemoryStore(deleted("old", 40))
    store.race = replace(store.items["old"], status=BusinessStatus.ACTIVE, delete_time=None, version=4)
    shards = MemoryShards(store, {"s1": 5})
    report = purge(store, shards).purge("old")
    assert report.skipped == ["old"]
    assert shards.rows == {"s1": 5}
    assert store.items["old"].is_active


def test_a_citrus_without_unregister_is_noted_and_the_purge_completes() -> None:
    """None from unregister: noted once, nothing else asked of Citrus, the rest done."""
    store = MemoryStore(deleted("old", 40))
    shards = MemoryShards(store, {"s1": 1})
    job = BusinessPurge(
        store=store,
        shards=shards,
        citrus=MemoryCitrus(store, offered=False),
        retention=30 * DAY,
        clock=lambda: NOW,
    )
    report = job.purge("old")
    assert report.citrus_unsupported
    assert report.purged == ["old"]
    assert "old" not in store.items


@pytest.mark.parametrize(
    ("label", "problem"),
    [
        ("zen-dental", None),
        ("abc", None),
        ("a" * 63, None),
        ("ab", "must be 3-63"),
        ("a" * 64, "must be 3-63"),
        ("1abc", "must be 3-63"),
        ("abc-", "must be 3-63"),
        ("a_b_c", "must be 3-63"),
        ("xn--abc", "'--'"),
        ("www", "reserved"),
    ],
)
def test_domain_labels_are_narrow_dns_labels(label: str, problem: str | None) -> None:
    """One lower-case DNS label, starting with a letter, no IDN prefix, not a platform name."""
    found = label_problem(label)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_labels_are_compared_lower_case() -> None:
    """DNS is case-insensitive: a label is stored lower case."""
    assert normalized("  Zen-Dental ") == "zen-dental"


def test_an_item_rewritten_with_the_original_suspended_kept_aside_reads_suspended() -> None:
    """Items rewritten before the status existed say status active and legacyStatus suspended:
    they read as suspended, and writing them back drops legacyStatus."""
    serializer = TypeSerializer()
    current = to_item(Business(id="b1", name="B", type=BusinessType.GYM, version=2))
    current["legacyStatus"] = serializer.serialize("suspended")
    business = from_item(current)
    assert business.status is BusinessStatus.SUSPENDED
    assert "legacyStatus" not in to_item(business)
    resumed = from_item(to_item(replace(business, status=BusinessStatus.ACTIVE)))
    assert resumed.status is BusinessStatus.ACTIVE


def test_lifecycle_fields_round_trip_through_the_item() -> None:
    """domain_label, delete_time, purge_start_time and suspend_time survive a write and a read; the
    item carries the name index keys (type, folded name then id)."""
    business = Business(
        id="b2",
        name="  Zâmbet CLINIC",
        type=BusinessType.DENTAL,
        status=BusinessStatus.DELETED,
        domain_label="zambet",
        delete_time=NOW,
        purge_start_time=NOW + DAY,
        suspend_time=NOW - DAY,
        version=1,
    )
    item = to_item(business)
    assert item["searchType"] == {"S": "dental"}
    assert item["searchName"] == {"S": "zâmbet clinic#b2"}
    assert from_item(item) == business
