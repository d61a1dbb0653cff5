"""ListResources filters and data orderings on a real PostgreSQL shard, against the reference.

Random filters (hypothesis) compiled to SQL must select exactly what
``evaluate`` selects on the same few hundred documents; paging through any
data ordering must return every match exactly once, in the ordering's documented order.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from simplu_grpc.adapters.postgres.pool_registry import PoolRegistry
from simplu_grpc.adapters.postgres.resource_aggregate_sql import aggregate
from simplu_grpc.adapters.postgres.shard_store import TOTAL_SIZE_LIMIT, ShardStore
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.resources import aggregates as resource_aggregates
from simplu_grpc.domain.resources.filter_eval import MISSING, evaluate, lookup
from simplu_grpc.domain.resources.filter_parser import parse
from simplu_grpc.domain.resources.model import OPEN_RANGE, ListQuery, SortKey
from simplu_grpc.domain.resources.page_tokens import Position
from simplu_grpc.domain.resources.validation import parse_order_by, validate_list
from simplu_grpc.errors import InvalidArgument
from simplu_grpc.metrics import Metrics
from tests.fixtures.postgres import PgServer, new_db_prefix

pytestmark = pytest.mark.integration

DOCUMENTS = 300
BASE = datetime(2026, 3, 1, tzinfo=UTC)
NAMES = ["Popescu", "popa", "Ionescu", "ION", "Pop%", "a_b", "Ăla", "", "pop escu"]
STATUSES = ["confirmed", "cancelled", "Pending", "pending"]


@dataclass
class Seeded:
    registry: PoolRegistry
    assignment: ShardAssignment
    rows: list[dict[str, Any]]  # resource_id, the four times, data: as the shard stores them


def _scalar(rng: random.Random) -> Any:
    return rng.choice(
        [
            rng.randint(-3, 50),
            rng.randint(-3, 50) + rng.choice([0.5, 0.25, 0.0]),
            rng.choice(NAMES),
            rng.choice(STATUSES),
            rng.choice([True, False]),
            None,
        ]
    )


def _document(rng: random.Random) -> dict[str, Any]:
    candidates: dict[str, Any] = {
        "status": rng.choice(STATUSES) if rng.random() < 0.8 else _scalar(rng),
        "last_name": rng.choice(NAMES) if rng.random() < 0.8 else _scalar(rng),
        "first_name": rng.choice(NAMES),
        "age": rng.randint(0, 90) if rng.random() < 0.7 else _scalar(rng),
        "price": rng.choice([10, 10.5, 99.99, 100, 250, -1]),
        "paid": rng.choice([True, False, None, "yes"]),
        "tags": [_scalar(rng) for _ in range(rng.randint(0, 3))] if rng.random() < 0.8 else _scalar(rng),
        "address": {"city": rng.choice(["Cluj", "cluj", "Iasi", None])}
        if rng.random() < 0.7
        else _scalar(rng),
    }
    return {k: v for k, v in candidates.items() if rng.random() < 0.85}


@pytest.fixture(scope="module")
def seeded(pg: PgServer) -> Iterator[Seeded]:
    """One shard with DOCUMENTS patients of business b1/main, plus other tenants' look-alikes."""
    name = new_db_prefix("filters")
    dsn = pg.create_database(name)
    registry = PoolRegistry(metrics=Metrics(), min_size=1, max_size=4, connect_timeout=5.0)
    assignment = ShardAssignment(shard_id="filters", connection_string=dsn)
    with registry.connection(assignment) as session:  # migrates the new shard
        session.run("SELECT 1", {})
    rng = random.Random(12)
    records = []
    for index in range(DOCUMENTS):
        start = BASE + timedelta(hours=rng.randint(-500, 500)) if rng.random() < 0.8 else None
        end = start + timedelta(hours=rng.randint(0, 48)) if start and rng.random() < 0.6 else None
        created = BASE - timedelta(days=rng.randint(0, 60), seconds=index)
        data = _document(rng)
        for business, location in (("b1", "main"), ("b1", "annex"), ("b2", "main")):
            records.append(
                (
                    business,
                    location,
                    "patients",
                    f"p{index:03d}",
                    "dental",
                    Jsonb(data),
                    start,
                    end,
                    created,
                    created,
                )
            )
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO resources (business_id, location_id, resource_type, resource_id, business_type,"
                " data, start_time, end_time, create_time, update_time)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                records,
            )
        conn.execute("ANALYZE resources")
        fetched = conn.execute(
            "SELECT resource_id, create_time, update_time, start_time, end_time, data FROM resources"
            " WHERE business_id = 'b1' AND location_id = 'main' ORDER BY resource_id"
        ).fetchall()
    rows = [
        {
            "resource_id": r[0],
            "create_time": r[1],
            "update_time": r[2],
            "start_time": r[3],
            "end_time": r[4],
            "data": r[5],
        }
        for r in fetched
    ]
    yield Seeded(registry, assignment, rows)
    registry.close()
    pg.drop_database(name)


def _query(filter_text: str, order_by: str = "", page_size: int = 1000) -> ListQuery:
    return validate_list(
        business_type="dental",
        business_id="b1",
        location_id="main",
        resource_type="patients",
        start_range=OPEN_RANGE,
        overlaps=OPEN_RANGE,
        data_contains=None,
        order_by=order_by,
        page_size=page_size,
        max_bytes=256 * 1024,
        max_depth=32,
        filter_text=filter_text,
    )


def _listed(seeded: Seeded, query: ListQuery) -> tuple[list[str], int | None]:
    ids: list[str] = []
    after: Position | None = None
    total: int | None = None
    first = True
    while True:
        with seeded.registry.connection(seeded.assignment) as session:
            page = ShardStore().list_page(session, query, after)
        if first:
            total, first = page.total_size, False
        ids += [r.key.resource_id for r in page.resources]
        if not page.more:
            return ids, total
        after = page.positions[-1]


def _expected(seeded: Seeded, filter_text: str) -> list[str]:
    node = parse(filter_text, "patients")
    assert node is not None
    return [row["resource_id"] for row in seeded.rows if evaluate(node, row, row["data"])]


# --- filters as text --------------------------------------------------------------------

_PATHS = [
    "status",
    "last_name",
    "first_name",
    "age",
    "price",
    "paid",
    "tags",
    "address.city",
    "address",
    "nope",
]


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_numbers = st.one_of(st.integers(-5, 100), st.sampled_from([0.5, 10.5, 99.99, -1.0, 2.25]))
_texts = st.one_of(
    st.sampled_from(NAMES + STATUSES + ["cluj", "POP", "esc", "%", "_", "yes"]), st.text("aopP%_", max_size=3)
)
_values = st.one_of(
    _numbers.map(str),
    _texts.filter(bool).map(_quoted),
    st.sampled_from(["true", "false", "null"]),
)
_instants = st.integers(-600, 600).map(lambda h: _quoted((BASE + timedelta(hours=h)).isoformat()))


@st.composite
def _restriction(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["data", "data", "data", "has", "time", "id", "search"]))
    if kind == "search":
        return _quoted(draw(_texts.filter(bool)))
    if kind == "id":
        op = draw(st.sampled_from(["=", "!=", "<", ">=", ":"]))
        text = ("p" + str(draw(st.integers(0, 320))).zfill(3))[: draw(st.integers(1, 4))]
        return f"resource_id {op} {_quoted(text)}"
    if kind == "time":
        column = draw(st.sampled_from(["start_time", "end_time", "create_time", "update_time"]))
        if draw(st.booleans()) and column in ("start_time", "end_time"):
            return draw(st.sampled_from([f"{column} = null", f"{column} != null", f"{column}:*"]))
        return f"{column} {draw(st.sampled_from(['=', '!=', '<', '<=', '>', '>=']))} {draw(_instants)}"
    path = "data." + draw(st.sampled_from(_PATHS))
    if kind == "has":
        value = draw(
            st.one_of(
                st.just("*"),
                _numbers.map(str),
                _texts.filter(bool).map(_quoted),
                st.sampled_from(["true", "false"]),
            )
        )
        return f"{path}:{value}"
    op = draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">="]))
    value = draw(_values)
    if op not in ("=", "!=") and value in ("true", "false", "null"):
        value = "1"
    return f"{path} {op} {value}"


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, children).map(lambda p: f"{p[0]} AND {p[1]}"),
        st.tuples(children, children).map(lambda p: f"{p[0]} OR {p[1]}"),
        st.tuples(children, children).map(lambda p: f"({p[0]} OR {p[1]})"),
        st.tuples(children, children).map(lambda p: f"{p[0]} {p[1]}"),
        children.map(lambda c: f"NOT ({c})"),
        children.map(lambda c: f"-({c})"),
    )


FILTERS = st.recursive(_restriction(), _combine, max_leaves=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(filter_text=FILTERS)
def test_random_filters_select_exactly_what_the_reference_selects(seeded: Seeded, filter_text: str) -> None:
    """For any filter of the grammar, the shard returns exactly the reference evaluation's
    resources (of this tenant only), and total_size counts them."""
    expected = _expected(seeded, filter_text)
    ids, total = _listed(seeded, _query(filter_text, order_by="create_time"))
    assert sorted(ids) == expected, filter_text
    assert total == len(expected)


@pytest.mark.parametrize(
    "order_by",
    [
        "data.last_name, create_time",
        "data.last_name desc, start_time",
        "data.age desc",
        "data.status, data.age desc, end_time",
        "data.address.city desc",
        "end_time desc, data.price",
    ],
)
def test_paging_through_a_data_ordering_returns_every_match_once_in_order(
    seeded: Seeded, order_by: str
) -> None:
    """Pages of 7 in a data ordering (mixed directions, missing keys, mixed types) return each
    match once, in the same order as one large page; that order is jsonb's (checked in Python
    where the database collation is byte order)."""
    filter_text = '-data.status = "cancelled"'
    small, _ = _listed(seeded, _query(filter_text, order_by, page_size=7))
    one_page, _ = _listed(seeded, _query(filter_text, order_by, page_size=1000))
    assert small == one_page
    assert sorted(small) == _expected(seeded, filter_text)
    with psycopg.connect(seeded.assignment.connection_string) as conn:
        collation = conn.execute(
            "SELECT datcollate FROM pg_database WHERE datname = current_database()"
        ).fetchone()
    if collation is not None and collation[0] in ("C", "POSIX", "C.UTF-8", "C.utf8"):
        by_id = {row["resource_id"]: row for row in seeded.rows}
        assert small == sorted(small, key=_reference_key(parse_order_by(order_by), by_id))


def _reference_key(keys: tuple[SortKey, ...], by_id: dict[str, dict[str, Any]]) -> Any:
    """jsonb order for the scalar values the seed uses: missing/null < string < number < bool
    (arrays and objects by their JSON text, which the orderings above only meet rarely)."""
    far = datetime.max.replace(tzinfo=UTC)

    class Key:
        def __init__(self, resource_id: str) -> None:
            self.parts = []
            row = by_id[resource_id]
            for key in keys:
                if key.is_data:
                    value = lookup(row["data"], key.data_path)
                    part = _json_rank(value)
                else:
                    part = row[key.field] or far
                self.parts.append((part, key.descending))
            self.parts.append((resource_id, keys[-1].descending))

        def __lt__(self, other: Key) -> bool:
            for (mine, descending), (theirs, _) in zip(self.parts, other.parts, strict=True):
                if mine != theirs:
                    return bool(mine > theirs) if descending else bool(mine < theirs)
            return False

    return Key


def _json_rank(value: Any) -> tuple[int, Any]:
    if value is None or value is MISSING:
        return (1, 0)
    if isinstance(value, list) and not value:
        return (0, 0)
    if isinstance(value, str):
        return (2, value.encode("utf-8"))
    if isinstance(value, bool):
        return (4, value)
    if isinstance(value, int | float):
        return (3, value)
    if isinstance(value, list):
        return (5, json.dumps(value))
    return (6, json.dumps(value))


def test_total_size_is_absent_past_the_limit(seeded: Seeded) -> None:
    """The count stops at TOTAL_SIZE_LIMIT: with more matches total_size is None (not a wrong number)."""
    assert TOTAL_SIZE_LIMIT >= DOCUMENTS  # the seeded set is always counted exactly
    ids, total = _listed(seeded, _query(""))
    assert total == len(ids) == DOCUMENTS


@pytest.mark.parametrize(
    "hostile",
    [
        "data.a = 1; DROP TABLE resources",
        'data.a = "\x00"',
        "(" * 200 + "data.a = 1" + ")" * 200,
        "data.a = " + '"' + "x" * 100_000 + '"',
        "data.a:*" + " OR data.a:*" * 100,
        'data."a" = 1',
        "data.a.b.c.d.e.f.g.h.i = 1",
        "data.a = 99999999999999999999999999",
        "data.a = 1e999",
        "resource_id = null",
        "update_time > 5",
        "\\",
        "'",
        'data.a = "\\',
    ],
)
def test_hostile_filters_are_invalid_argument_on_the_filter_field(seeded: Seeded, hostile: str) -> None:
    """SQL fragments, NUL, deep nesting, huge literals, too many terms, bad types: INVALID_ARGUMENT
    naming "filter", and the shard still holds its rows."""
    with pytest.raises(InvalidArgument) as caught:
        _query(hostile)
    assert [v.field for v in caught.value.violations] == ["filter"]
    with psycopg.connect(seeded.assignment.connection_string) as conn:
        count = conn.execute("SELECT count(*) FROM resources").fetchone()
    assert count == (DOCUMENTS * 3,)


@pytest.mark.parametrize(
    "text",
    [
        "data.a = '1'' OR 1=1 --'",
        '"\'; DROP TABLE resources; --"',
        'data.last_name:"%" OR data.last_name:"_"',
        'data.last_name = "Pop%"',
        'resource_id:"%"',
    ],
)
def test_sql_looking_filters_are_only_values(seeded: Seeded, text: str) -> None:
    """Quotes, comments and LIKE wildcards inside a filter are values: the result is the
    reference's (a literal % matches only a literal %), and the table is intact."""
    ids, _ = _listed(seeded, _query(text))
    assert sorted(ids) == _expected(seeded, text)
    with psycopg.connect(seeded.assignment.connection_string) as conn:
        count = conn.execute("SELECT count(*) FROM resources").fetchone()
    assert count == (DOCUMENTS * 3,)


def test_filtered_lists_are_never_server_side_prepared(seeded: Seeded) -> None:
    """Ten filtered lists on one connection leave no prepared statement behind: each is planned
    with its values, so a search keeps its trigram index (a generic plan of a prepared
    statement cannot use an index whose key is a parameter)."""
    with seeded.registry.connection(seeded.assignment) as session:
        for index in range(10):
            ShardStore().list_page(session, _query(f'"pop{index}" OR data.age > {index}'), None)
        rows = session.run(
            "SELECT count(*) AS n FROM pg_prepared_statements WHERE statement LIKE '%total_size%'"
        )
    assert rows == [{"n": 0}]


def _group_key(value: Any) -> tuple[Any, ...]:
    """A JSON value as jsonb groups it: numbers by value (1 = 1.0), booleans apart from numbers."""
    if value is None or value is MISSING:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    if isinstance(value, str):
        return ("string", value)
    return ("json", json.dumps(value, sort_keys=True))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(filter_text=FILTERS, group=st.sampled_from(["data.status", "data.paid", "data.address.city"]))
def test_random_aggregates_match_the_reference(seeded: Seeded, filter_text: str, group: str) -> None:
    """Counts and sum/min/max of data.age per value of a data field, under a random filter,
    equal the reference computed in Python over the same documents."""
    query = resource_aggregates.validate_aggregate(
        business_type="dental",
        business_id="b1",
        location_id="main",
        resource_type="patients",
        filter_text=filter_text,
        value_field="data.age",
        group_by=[group],
        max_groups=1000,
        zone="UTC",
    )
    with seeded.registry.connection(seeded.assignment) as session:
        result = aggregate(session, query)
    node = parse(filter_text, "patients")
    assert node is not None
    path = group.split(".")[1:]
    expected: dict[tuple[Any, ...], list[float]] = {}
    counts: dict[tuple[Any, ...], int] = {}
    for row in seeded.rows:
        if not evaluate(node, row, row["data"]):
            continue
        key = _group_key(lookup(row["data"], path))
        counts[key] = counts.get(key, 0) + 1
        age = row["data"].get("age")
        values = expected.setdefault(key, [])
        if isinstance(age, int | float) and not isinstance(age, bool):
            values.append(float(age))
    got = {_group_key(g.keys[0]): g for g in result.groups}
    assert set(got) == set(counts), filter_text
    for key, group_result in got.items():
        assert group_result.count == counts[key]
        values = expected[key]
        assert group_result.sum == (pytest.approx(sum(values)) if values else None)
        assert group_result.min == (min(values) if values else None)
        assert group_result.max == (max(values) if values else None)
