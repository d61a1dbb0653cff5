"""The ShardAdmin use cases against in-memory ports (tests/unit/admin_memory.py): migrations,
consistency, location routing and shard views, without Citrus, PostgreSQL or DynamoDB."""

from __future__ import annotations

import dataclasses

import pytest

from simplu_grpc.domain.admin.consistency import FindingKind
from simplu_grpc.domain.business.model import Business, BusinessStatus, BusinessType, Location
from simplu_grpc.domain.placement.routing import Resolution
from simplu_grpc.errors import FailedPrecondition, InvalidArgument, NotFound, ShardUnavailable
from tests.unit.admin_memory import (
    API_KEY,
    SECRET_PW,
    FakeMigrator,
    FakeReader,
    FakeRouting,
    FakeShards,
    MemoryBusinesses,
    console,
    shard,
)


def business(
    business_id: str = "b1", *locations: str, status: BusinessStatus = BusinessStatus.ACTIVE
) -> Business:
    return Business(
        id=business_id,
        name="B",
        type=BusinessType.DENTAL,
        locations=tuple(Location(id=loc, name=loc) for loc in (locations or ("l1",))),
        status=status,
    )


# --- migrations -------------------------------------------------------------------------


def test_migrate_all_migrates_every_listed_shard_and_reports_each() -> None:
    """Every shard Citrus lists is migrated through the Migrator port; a second run applies nothing."""
    shards = FakeShards([shard("shard-02", 1), shard("shard-01", 1)])
    migrator = FakeMigrator(latest=2)
    admin = console(shards, migrator=migrator)
    first = admin.migrations.migrate_all()
    assert [(o.shard_id, o.version_before, o.version_after, o.applied_versions) for o in first] == [
        ("shard-01", 0, 2, [1, 2]),
        ("shard-02", 0, 2, [1, 2]),
    ]
    assert [o.target for o in first] == ["127.0.0.1:5432/shard_01", "127.0.0.1:5432/shard_02"]
    again = admin.migrations.migrate_all()
    assert [(o.version_before, o.version_after, o.applied) for o in again] == [(2, 2, []), (2, 2, [])]
    assert admin.migrations.target_version == 2


def test_a_failing_shard_is_reported_redacted_and_the_others_still_migrate() -> None:
    """One shard's failure is its own outcome (no versions, a redacted error), not the call's."""
    broken, fine = shard("shard-01", 1), shard("shard-02", 1)
    migrator = FakeMigrator()
    migrator.failing[broken.connection_string] = ShardUnavailable(
        f"cannot connect to {broken.connection_string} with key {API_KEY}"
    )
    outcomes = console(FakeShards([broken, fine]), migrator=migrator).migrations.migrate_all()
    failed, migrated = outcomes
    assert (failed.version_before, failed.version_after) == (None, None)
    assert failed.error.startswith("SHARD_UNAVAILABLE: ")
    assert SECRET_PW not in failed.error
    assert API_KEY not in failed.error
    assert migrated.version_after == migrator.latest
    assert migrated.error == ""


def test_migrate_one_shard_checks_its_arguments_and_changes_nothing_else() -> None:
    """One shard by id; an unknown id is NOT_FOUND, an id with all_shards INVALID_ARGUMENT; only
    the named shard is touched."""
    shards = FakeShards([shard("shard-01", 1), shard("shard-02", 1)])
    migrator = FakeMigrator()
    admin = console(shards, migrator=migrator)
    (outcome,) = admin.migrations.migrate("shard-02", all_shards=False)
    assert outcome.shard_id == "shard-02"
    assert [dsn for dsn, _ in migrator.calls] == [shards.shards[1].connection_string]
    with pytest.raises(NotFound):
        admin.migrations.migrate("shard-09", all_shards=False)
    with pytest.raises(InvalidArgument):
        admin.migrations.migrate("shard-01", all_shards=True)
    assert len(migrator.calls) == 1


# --- consistency ------------------------------------------------------------------------


def test_consistency_reports_unregistered_unmigrated_and_orphans() -> None:
    """Each kind of drift is a finding: a location Citrus does not know, a shard behind this
    server's schema, and rows of a location business info does not hold."""
    s1 = shard("shard-01", 1)
    shards = FakeShards([s1])
    shards.placed[("b1", "l1")] = s1
    migrator = FakeMigrator(latest=3)
    migrator.versions[s1.connection_string] = 2
    reader = FakeReader(migrator)
    reader.rows[s1.connection_string] = {("b1", "l1"): 4, ("b1", "gone"): 2}
    admin = console(
        shards, businesses=MemoryBusinesses(business("b1", "l1", "l2")), migrator=migrator, reader=reader
    )
    (report,), next_token = admin.consistency.check("b1", 0, "")
    assert next_token == ""
    assert {(f.kind, f.location_id) for f in report.findings} == {
        (FindingKind.LOCATION_NOT_REGISTERED, "l2"),
        (FindingKind.SHARD_NOT_MIGRATED, "l1"),
        (FindingKind.ORPHAN_RESOURCES, "gone"),
    }
    (orphan,) = [f for f in report.findings if f.kind is FindingKind.ORPHAN_RESOURCES]
    assert orphan.count == 2
    assert shards.registered == []  # a check repairs nothing


def test_consistency_of_a_consistent_business_and_of_an_unknown_one() -> None:
    """A registered, migrated business without orphans has no finding; an unknown one is NOT_FOUND."""
    s1 = shard("shard-01", 1)
    shards = FakeShards([s1])
    shards.placed[("b1", "l1")] = s1
    migrator = FakeMigrator(latest=1)
    migrator.versions[s1.connection_string] = 1
    admin = console(shards, businesses=MemoryBusinesses(business("b1", "l1")), migrator=migrator)
    (report,), _ = admin.consistency.check("b1", 0, "")
    assert report.consistent
    with pytest.raises(NotFound):
        admin.consistency.check("b9", 0, "")


def test_consistency_reports_unreachable_shards_and_citrus_down_redacted() -> None:
    """A shard that does not answer is SHARD_UNREACHABLE for its locations; Citrus down is
    CITRUS_UNAVAILABLE; neither detail carries a secret."""
    s1 = shard("shard-01", 1)
    shards = FakeShards([s1])
    shards.placed[("b1", "l1")] = s1
    migrator = FakeMigrator()
    reader = FakeReader(migrator)
    reader.unreachable.add(s1.connection_string)
    businesses = MemoryBusinesses(business("b1", "l1"))
    admin = console(shards, businesses=businesses, migrator=migrator, reader=reader)
    (report,), _ = admin.consistency.check("b1", 0, "")
    assert [f.kind for f in report.findings] == [FindingKind.SHARD_UNREACHABLE]
    assert SECRET_PW not in report.findings[0].detail
    shards.down = True
    (report,), _ = admin.consistency.check("b1", 0, "")
    assert [f.kind for f in report.findings] == [FindingKind.CITRUS_UNAVAILABLE]


def test_consistency_pages_through_business_info() -> None:
    """Without a business id, one page of businesses is checked and the next token returned."""
    shards = FakeShards([])
    admin = console(shards, businesses=MemoryBusinesses(*(business(f"b{i}") for i in range(3))))
    reports, token = admin.consistency.check("", 2, "")
    assert [r.business_id for r in reports] == ["b0", "b1"]
    reports, token = admin.consistency.check("", 2, token)
    assert ([r.business_id for r in reports], token) == (["b2"], "")
    with pytest.raises(InvalidArgument):
        admin.consistency.check("b1", 0, "2")


# --- location routing -------------------------------------------------------------------


def test_location_shard_answers_from_the_cache_unless_refreshed() -> None:
    """A cached route is answered without Citrus; a refresh asks Citrus and drops the cached entry."""
    s1, s2 = shard("shard-01", 1), shard("shard-02", 1)
    shards = FakeShards([s1, s2])
    shards.placed[("b1", "l1")] = s2
    routing = FakeRouting()
    routing.entries[("b1", "l1")] = Resolution(s1, True, 12.0)
    admin = console(shards, routing, businesses=MemoryBusinesses(business("b1", "l1")))
    cached = admin.locations.location_shard("b1", "l1", refresh=False)
    assert (cached.shard_id, cached.from_cache, cached.cache_age_seconds) == ("shard-01", True, 12.0)
    assert cached.target == "127.0.0.1:5432/shard_01"
    assert routing.calls == []
    fresh = admin.locations.location_shard("b1", "l1", refresh=True)
    assert (fresh.shard_id, fresh.from_cache) == ("shard-02", False)
    assert routing.calls == [("b1", "l1")]
    assert shards.registered == []  # looking up never registers


def test_location_shard_of_unknown_or_unregistered_locations_is_not_found() -> None:
    """An unknown business or location is NOT_FOUND; a known one Citrus never took is NOT_FOUND
    with LOCATION_NOT_REGISTERED (and is not registered by asking)."""
    shards = FakeShards([shard("shard-01", 1)])
    admin = console(shards, businesses=MemoryBusinesses(business("b1", "l1")))
    for business_id, location_id in (("b9", "l1"), ("b1", "l9")):
        with pytest.raises(NotFound):
            admin.locations.location_shard(business_id, location_id, refresh=False)
    with pytest.raises(NotFound) as raised:
        admin.locations.location_shard("b1", "l1", refresh=False)
    assert raised.value.reason == "LOCATION_NOT_REGISTERED"
    assert shards.registered == []


def test_register_location_uses_the_business_type_and_refuses_another_or_a_deleted_business() -> None:
    """RegisterLocation registers under the business's own type and drops the cached route; another
    type is BUSINESS_TYPE_MISMATCH and a deleted business BUSINESS_DELETED, both registering nothing."""
    shards = FakeShards([shard("shard-01", 1)])
    routing = FakeRouting()
    deleted = dataclasses.replace(business("b2", "l1"), status=BusinessStatus.DELETED)
    admin = console(shards, routing, businesses=MemoryBusinesses(business("b1", "l1"), deleted))
    view = admin.locations.register_location("b1", "l1", None)
    assert view.shard_id == "shard-01"
    assert shards.registered == [("b1", "l1", "dental")]
    assert routing.calls == [("b1", "l1")]
    with pytest.raises(FailedPrecondition) as mismatch:
        admin.locations.register_location("b1", "l1", BusinessType.GYM)
    assert mismatch.value.reason == "BUSINESS_TYPE_MISMATCH"
    with pytest.raises(FailedPrecondition) as gone:
        admin.locations.register_location("b2", "l1", None)
    assert gone.value.reason == "BUSINESS_DELETED"
    assert shards.registered == [("b1", "l1", "dental")]


# --- shard views ------------------------------------------------------------------------


def test_list_shards_reads_the_schema_version_of_shards_without_a_pool() -> None:
    """Shards this server has no pool for get their schema version through the ShardReader port."""
    s1, s2 = shard("shard-01", 1), shard("shard-02", 2)
    migrator = FakeMigrator()
    migrator.versions[s1.connection_string] = 3
    listed = console(FakeShards([s1, s2]), migrator=migrator).shards.list_shards()
    assert [(v.shard_id, v.schema_version, v.listed_by_citrus) for v in listed.shards] == [
        ("shard-01", 3, True),
        ("shard-02", 0, True),
    ]
    assert listed.citrus_reachable
