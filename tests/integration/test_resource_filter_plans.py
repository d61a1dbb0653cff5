"""The indexes of migration 0005 serve filtered lists: EXPLAIN of the very statement
ShardStore.list_page sends, on a shard seeded (COPY) with enough rows for the planner to care."""

from __future__ import annotations

import json
import random
import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from simplu_grpc.adapters.postgres.pool_registry import PoolRegistry
from simplu_grpc.adapters.postgres.shard_store import ShardStore
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.resources.model import OPEN_RANGE
from simplu_grpc.domain.resources.validation import validate_list
from simplu_grpc.metrics import Metrics
from tests.fixtures.postgres import PgServer, new_db_prefix

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# One large location (the one queried) among small ones: a list in it must not scan it.
ROWS_PER_LOCATION = {"loc3": 30_000, **{f"loc{n}": 300 for n in (0, 1, 2, 4)}}
BASE = datetime(2026, 3, 1, tzinfo=UTC)


class _Recorder:
    """A ShardSession stand-in that keeps the statement instead of running it."""

    def __init__(self) -> None:
        self.statement = ""
        self.params: dict[str, Any] = {}

    def run(self, statement: str, params: dict[str, Any], **_: Any) -> list[Any]:
        self.statement, self.params = statement, params
        return []


@pytest.fixture(scope="module")
def shard_dsn(pg: PgServer) -> Iterator[str]:
    name = new_db_prefix("plans")
    dsn = pg.create_database(name)
    registry = PoolRegistry(metrics=Metrics(), min_size=1, max_size=2, connect_timeout=5.0)
    with registry.connection(ShardAssignment(shard_id="plans", connection_string=dsn)) as session:
        session.run("SELECT 1", {})  # migrates
    registry.close()
    rng = random.Random(5)

    def word() -> str:
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(5, 10))).title()

    with psycopg.connect(dsn, autocommit=True) as conn:
        with (
            conn.cursor() as cursor,
            cursor.copy(
                "COPY resources (business_id, location_id, resource_type, resource_id, business_type, data,"
                " start_time, end_time) FROM STDIN"
            ) as copy,
        ):
            for location, count in ROWS_PER_LOCATION.items():
                for index in range(count):
                    data = {
                        "first_name": word(),
                        "last_name": word(),
                        "email": f"user.{location}.{index}@example.com",
                        "status": rng.choice(["active", "archived", "new"]),
                    }
                    start = BASE + timedelta(minutes=rng.randint(0, 100_000))
                    end = start + timedelta(hours=rng.randint(1, 48)) if rng.random() < 0.5 else None
                    copy.write_row(
                        (
                            "b1",
                            location,
                            "patients",
                            f"p{index:05d}",
                            "dental",
                            json.dumps(data),
                            start,
                            end,
                        )
                    )
        # What autovacuum does after a bulk load: statistics, and the GIN pending lists merged
        # (before that, a GIN index looks expensive to the planner and a scan wins).
        conn.execute("VACUUM ANALYZE resources")
    yield dsn
    pg.drop_database(name)


def _plan(dsn: str, filter_text: str, order_by: str = "") -> str:
    query = validate_list(
        business_type="dental",
        business_id="b1",
        location_id="loc3",
        resource_type="patients",
        start_range=OPEN_RANGE,
        overlaps=OPEN_RANGE,
        data_contains=None,
        order_by=order_by,
        page_size=50,
        max_bytes=256 * 1024,
        max_depth=32,
        filter_text=filter_text,
    )
    recorder = _Recorder()
    ShardStore().list_page(recorder, query, None)  # type: ignore[arg-type]  # records the statement, runs nothing
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("EXPLAIN (FORMAT JSON) " + recorder.statement, recorder.params).fetchall()
    return json.dumps(rows[0][0])


def test_equality_on_a_data_field_uses_the_containment_index(shard_dsn: str) -> None:
    """data.email = "..." is containment from the root: the jsonb_path_ops GIN index answers it."""
    plan = _plan(shard_dsn, 'data.email = "user.loc3.1234@example.com"')
    assert "resources_data_containment" in plan


def test_text_search_uses_the_trigram_indexes(shard_dsn: str) -> None:
    """A bare search term scans the trigram indexes of the type's searchable fields."""
    plan = _plan(shard_dsn, '"qzvxw"')
    assert "resources_search_patients_last_name" in plan
    assert "resources_search_patients_first_name" in plan


def test_partial_match_on_a_searchable_field_uses_its_trigram_index(shard_dsn: str) -> None:
    """data.last_name:"text" uses that field's trigram index, also under another ordering."""
    plan = _plan(shard_dsn, 'data.last_name:"qzvxw"', order_by="data.first_name")
    assert "resources_search_patients_last_name" in plan


@pytest.mark.parametrize(
    ("filter_text", "index"),
    [
        (
            'start_time >= "2026-03-10T00:00:00Z" AND start_time < "2026-03-10T06:00:00Z"',
            "resources_by_start_time",
        ),
        ('end_time >= "2026-03-10T00:00:00Z" AND end_time < "2026-03-10T06:00:00Z"', "resources_by_end_time"),
        ('create_time > "2030-01-01T00:00:00Z"', "resources_by_create_time"),
    ],
)
def test_time_ranges_use_the_time_indexes(shard_dsn: str, filter_text: str, index: str) -> None:
    """A narrow range on a time field is an index range within the tenant's type."""
    assert index in _plan(shard_dsn, filter_text, order_by="data.last_name")
