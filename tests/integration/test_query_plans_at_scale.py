"""The bench's queries use their indexes on a realistically sized location: EXPLAIN of the very
statements ShardStore.list_page and location_statistics_sql.statistics send, on a shard
loaded the way the bench loads it (bench/queries.py: COPY, then VACUUM ANALYZE, so the
planner decides with real statistics -- no unanalysed-table tricks), plus small neighbour
locations, a hotel location and a change history.

Each test names the index the statement must use and fails when the plan reads the table
another way -- including through an index that only happens to imply the resource type (a
partial trigram index was the plan of the statistics windows before they were written as
the time indexes' expressions).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from bench import queries
from simplu_grpc.adapters.postgres import location_statistics_sql
from simplu_grpc.adapters.postgres.pool_registry import PoolRegistry
from simplu_grpc.adapters.postgres.shard_store import ShardStore
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.resources import statistics as location_statistics
from simplu_grpc.domain.resources.model import OPEN_RANGE
from simplu_grpc.domain.resources.validation import validate_list
from simplu_grpc.metrics import Metrics
from tests.fixtures.postgres import PgServer, new_db_prefix

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUSINESS = "b1"
BIG = "main"
ROWS = 40_000
NEIGHBOURS = ("n1", "n2", "n3")
HOTEL = ("b2", "hotel")
CHANGES = 30_000
NOW = datetime.now(UTC)


class _Recorder:
    """A ShardSession stand-in that keeps the statement instead of running it."""

    def __init__(self) -> None:
        self.statement = ""
        self.params: dict[str, Any] = {}

    def run(self, statement: str, params: dict[str, Any], **_: Any) -> list[Any]:
        self.statement, self.params = statement, params
        # statistics() reads the one row it expects; an IndexError ends it after recording.
        return []


def _copy_hotel(conn: psycopg.Connection[Any], rng: random.Random) -> None:
    business_id, location_id = HOTEL
    with (
        conn.cursor() as cursor,
        cursor.copy(queries.COPY_RESOURCES) as copy,
    ):
        for index in range(15_000):
            start = NOW + timedelta(days=rng.randint(-700, 60), hours=rng.randint(0, 23))
            end = start + timedelta(days=rng.randint(1, 7))
            data = {"status": rng.choice(["confirmed", "cancelled", "done"]), "total": rng.randint(50, 900)}
            created = start - timedelta(days=rng.randint(1, 60))
            row = (business_id, location_id, "reservations", f"r{index:06d}", "hotel")
            copy.write_row((*row, json.dumps(data), start, end, created, created))
        for index in range(40):
            copy.write_row(
                (business_id, location_id, "rooms", f"room{index}", "hotel", "{}", None, None, NOW, NOW)
            )


def _copy_changes(conn: psycopg.Connection[Any], rng: random.Random) -> None:
    """A shard's change history: the big location's and the hotel's share of it among those
    of many other tenants (a shard holds many businesses), each of its own types and some of
    a type no statistic summarises (staff)."""
    dental, hotel = ("patients", "appointments", "invoices", "staff"), ("reservations", "rooms", "staff")
    others = [(f"other{n}", "main", dental) for n in range(40)]
    neighbours = [(BUSINESS, n, dental) for n in NEIGHBOURS]
    locations = [(BUSINESS, BIG, dental), (*HOTEL, hotel), *neighbours, *others]
    with (
        conn.cursor() as cursor,
        cursor.copy(
            "COPY resource_changes (business_id, location_id, resource_type, resource_id, kind, version,"
            " principal, change_time) FROM STDIN"
        ) as copy,
    ):
        for index in range(CHANGES):
            business_id, location_id, types = rng.choice(locations)
            when = NOW - timedelta(seconds=CHANGES - index)
            kind = rng.choice(["created", "updated", "updated", "deleted"])
            copy.write_row(
                (business_id, location_id, rng.choice(types), f"q{index:07d}", kind, 1, "sub-1", when)
            )


@pytest.fixture(scope="module")
def shard_dsn(pg: PgServer) -> Iterator[str]:
    name = new_db_prefix("scaleplans")
    dsn = pg.create_database(name)
    registry = PoolRegistry(metrics=Metrics(), min_size=1, max_size=2, connect_timeout=5.0)
    with registry.connection(ShardAssignment(shard_id="scaleplans", connection_string=dsn)) as session:
        session.run("SELECT 1", {})  # migrates
    registry.close()
    for location in NEIGHBOURS:
        queries.seed_location(dsn, BUSINESS, location, 2_000)
    rng = random.Random(11)
    with psycopg.connect(dsn, autocommit=True) as conn:
        _copy_hotel(conn, rng)
        _copy_changes(conn, rng)
    # The bench's own loader, last: it ends with VACUUM ANALYZE of the whole table.
    queries.seed_location(dsn, BUSINESS, BIG, ROWS)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE resource_changes")
    yield dsn
    pg.drop_database(name)


def _explain(dsn: str, recorder: _Recorder) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("EXPLAIN (FORMAT JSON) " + recorder.statement, recorder.params).fetchall()
    plan: dict[str, Any] = rows[0][0][0]["Plan"]
    return plan


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _reads(plan: dict[str, Any], relation: str) -> list[str]:
    """How each scan of ``relation`` reads it: the index name, or the node type without one.
    A bitmap heap scan reads through the bitmap index scans below it."""
    found: list[str] = []
    for node in _nodes(plan):
        if node.get("Relation Name") != relation:
            continue
        if node["Node Type"] == "Bitmap Heap Scan":
            found += [n["Index Name"] for n in _nodes(node) if n["Node Type"] == "Bitmap Index Scan"]
        else:
            found.append(node.get("Index Name", node["Node Type"]))
    return found


# The change history's indexes. The planner picks among them by the location's share of the
# shard's history: a range of (tenant, sequence) or (tenant, type, id, sequence), or for a
# location with a good share, the primary key (sequence) read backward until 10 match. Never a
# scan and sort of the shard's whole history.
_HISTORY_INDEXES = {"resource_changes_by_location", "resource_changes_by_resource", "resource_changes_pkey"}


def _statistics_plan(dsn: str, business_type: str, business_id: str, location_id: str) -> dict[str, Any]:
    query = location_statistics.plan(
        business_type=business_type, business_id=business_id, location_id=location_id, now=NOW, zone="UTC"
    )
    recorder = _Recorder()
    with pytest.raises(IndexError):
        location_statistics_sql.statistics(recorder, query)  # type: ignore[arg-type]  # records only
    return _explain(dsn, recorder)


def _list_plan(dsn: str, resource_type: str, filter_text: str) -> dict[str, Any]:
    query = validate_list(
        business_type="dental",
        business_id=BUSINESS,
        location_id=BIG,
        resource_type=resource_type,
        start_range=OPEN_RANGE,
        overlaps=OPEN_RANGE,
        data_contains=None,
        order_by="",
        page_size=50,
        max_bytes=256 * 1024,
        max_depth=32,
        filter_text=filter_text,
    )
    recorder = _Recorder()
    ShardStore().list_page(recorder, query, None)  # type: ignore[arg-type]  # records only
    return _explain(dsn, recorder)


def test_dental_statistics_read_only_through_the_time_and_change_indexes(shard_dsn: str) -> None:
    """Appointments today / this month are ranges of (tenant, type, start_time), each read
    once for all the figures over it; new patients and revenue ranges of (tenant, type,
    create_time); recent activities an index scan of the change history, joined to the
    resources by their key."""
    plan = _statistics_plan(shard_dsn, "dental", BUSINESS, BIG)
    reads = _reads(plan, "resources")
    # Two row sets (today's and this month's appointments), each read once for its count
    # and breakdowns (a CTE named several times is materialized).
    assert reads.count("resources_by_start_time") == 2, reads
    assert reads.count("resources_by_create_time") == 2, reads
    assert set(reads) <= {
        "resources_by_start_time",
        "resources_by_create_time",
        "resources_by_update_time",
    } | {"resources_pkey"}, reads
    assert _reads(plan, "resource_changes"), plan
    assert set(_reads(plan, "resource_changes")) <= _HISTORY_INDEXES, plan


def test_hotel_statistics_read_only_through_the_time_indexes(shard_dsn: str) -> None:
    """The hotel windows (tonight's overlap, arrivals, departures, the month) are index
    ranges too: tonight by whichever of start_time / end_time the planner finds narrower."""
    plan = _statistics_plan(shard_dsn, "hotel", *HOTEL)
    reads = _reads(plan, "resources")
    assert "resources_by_end_time" in reads, reads  # departures today
    allowed = {
        "resources_by_start_time",
        "resources_by_end_time",
        "resources_by_update_time",
        "resources_pkey",
    }
    # rooms (no window) is the whole type of one tenant: the (tenant, type, ...) indexes.
    assert set(reads) <= allowed | {"resources_by_create_time"}, reads
    assert _reads(plan, "resource_changes"), plan
    assert set(_reads(plan, "resource_changes")) <= _HISTORY_INDEXES, plan


def test_the_bench_filtered_list_walks_the_ordering_index(shard_dsn: str) -> None:
    """data.status = "done" AND data.price >= 1200 on appointments (the bench's filtered list):
    the page walks (tenant, type, start_time) until it is full, instead of collecting every
    match and sorting; the bounded total uses the containment index."""
    plan = _list_plan(shard_dsn, "appointments", 'data.status = "done" AND data.price >= 1200')
    assert plan["Node Type"] == "Limit"
    (page,) = [n for n in plan["Plans"] if n["Parent Relationship"] == "Outer"]
    assert (page["Node Type"], page.get("Index Name")) == ("Index Scan", "resources_by_start_time"), page
    (total,) = [n for n in plan["Plans"] if n["Parent Relationship"] == "InitPlan"]
    assert "resources_data_containment" in _reads(total, "resources"), total


def test_the_bench_text_search_collects_from_the_trigram_indexes(shard_dsn: str) -> None:
    """A search term (the bench's text search) reads the trigram indexes of the patients'
    searchable fields, not the ordering index through the whole location."""
    plan = _list_plan(shard_dsn, "patients", '"mar"')
    reads = set(_reads(plan, "resources"))
    assert {
        "resources_search_patients_first_name",
        "resources_search_patients_last_name",
        "resources_search_patients_phone",
        "resources_search_patients_email",
    } <= reads, reads
    assert "resources_by_start_time" not in reads, reads
