"""The shard store against real PostgreSQL: bounds on updated documents, request-id and change retention."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from simplu_grpc.adapters.postgres import resource_statements
from simplu_grpc.adapters.postgres.pool_registry import PoolRegistry
from simplu_grpc.adapters.postgres.pool_session import ShardSession
from simplu_grpc.adapters.postgres.shard_store import ShardStore
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.resources.documents import document_size
from simplu_grpc.domain.resources.model import NewResource, ResourceKey, UpdatePlan
from simplu_grpc.errors import InvalidArgument
from simplu_grpc.metrics import Metrics

pytestmark = pytest.mark.integration

MAX_BYTES = 2000


@pytest.fixture
def shard(fresh_database: Callable[[], str]) -> Iterator[tuple[PoolRegistry, ShardAssignment]]:
    registry = PoolRegistry(metrics=Metrics(), min_size=1, max_size=4, connect_timeout=2.0)
    yield registry, ShardAssignment(shard_id="s", connection_string=fresh_database())
    registry.close()


def _key(resource_id: str, business_id: str = "b1", location_id: str = "main") -> ResourceKey:
    return ResourceKey(business_id, location_id, "patients", resource_id)


def _new(resource_id: str, request_id: str | None = None, **key: str) -> NewResource:
    return NewResource(
        key=_key(resource_id, **key),
        business_type="dental",
        data={"v": resource_id},
        start_time=None,
        end_time=None,
        request_id=request_id,
    )


def _sql(assignment: ShardAssignment, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(assignment.connection_string, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def test_masked_updates_cannot_grow_a_document_past_the_limit(
    shard: tuple[PoolRegistry, ShardAssignment],
) -> None:
    """Each masked update is small, but the one whose RESULT would exceed max_bytes is refused
    (INVALID_ARGUMENT on resource.data) and changes nothing; the earlier ones landed."""
    registry, assignment = shard
    store = ShardStore()
    with registry.connection(assignment) as session:
        store.create(session, _new("r1"))
    landed = 0
    refused: InvalidArgument | None = None
    for index in range(10):
        plan = UpdatePlan(set_paths=(((f"k{index}",), "x" * 400),), paths=(f"data.k{index}",))
        try:
            with registry.connection(assignment) as session:
                store.update(session, _key("r1"), plan, principal="tester", max_bytes=MAX_BYTES)
        except InvalidArgument as exc:
            refused = exc
            break
        landed += 1
    assert refused is not None
    assert [v.field for v in refused.violations] == ["resource.data"]
    assert 0 < landed < 10
    with registry.connection(assignment) as session:
        stored = store.get(session, _key("r1"))
    assert sorted(stored.data) == sorted(["v", *(f"k{i}" for i in range(landed))])
    assert stored.version == 1 + landed
    (size,) = _sql(assignment, "SELECT octet_length(data::text) FROM resources")[0]
    assert size <= MAX_BYTES
    # Removing keys and changing dates still works on a document at the limit.
    with registry.connection(assignment) as session:
        shrunk = store.update(
            session, _key("r1"), UpdatePlan(remove_paths=(("k0",),)), principal="tester", max_bytes=MAX_BYTES
        )
    assert "k0" not in shrunk.data


def test_concurrent_masked_updates_never_exceed_the_limit(
    shard: tuple[PoolRegistry, ShardAssignment],
) -> None:
    """Racing updates are each checked on the row as locked: together they cannot overshoot."""
    registry, assignment = shard
    store = ShardStore()
    with registry.connection(assignment) as session:
        store.create(session, _new("r1"))

    def grow(index: int) -> bool:
        plan = UpdatePlan(set_paths=(((f"k{index}",), "y" * 300),), paths=(f"data.k{index}",))
        try:
            with registry.connection(assignment) as session:
                store.update(session, _key("r1"), plan, principal="tester", max_bytes=MAX_BYTES)
        except InvalidArgument:
            return False
        return True

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(grow, range(12)))
    (size, keys) = _sql(
        assignment,
        "SELECT octet_length(data::text), (SELECT count(*) FROM jsonb_object_keys(data)) FROM resources",
    )[0]
    assert size <= MAX_BYTES
    assert keys == 1 + sum(outcomes)
    assert 0 < sum(outcomes) < 12


def test_request_ids_expire_and_are_purged(shard: tuple[PoolRegistry, ShardAssignment]) -> None:
    """Within the retention a retry returns the first resource; after it the request id creates anew;
    each idempotent create purges expired claims (of any tenant), a bounded number at a time."""
    registry, assignment = shard
    store = ShardStore()
    with registry.connection(assignment) as session:
        first, created = store.create(session, _new("r1", "rq-1"))
        assert created
        again, created = store.create(session, _new("r2", "rq-1"))
        assert (again.key, created) == (first.key, False)
        for index in range(30):
            store.create(session, _new(f"other-{index}", f"rq-o{index}", business_id="b2"))
    _sql(assignment, "UPDATE request_ids SET create_time = create_time - interval '25 hours'")
    with registry.connection(assignment) as session:
        renewed, created = store.create(session, _new("r3", "rq-1"))
    assert created
    assert renewed.key.resource_id == "r3"
    # 31 expired claims: rq-1 was taken over, 20 of the other tenant's were purged by that create.
    counts = dict(_sql(assignment, "SELECT business_id, count(*) FROM request_ids GROUP BY 1"))
    assert counts == {"b1": 1, "b2": 10}
    with registry.connection(assignment) as session:
        store.create(session, _new("r4", "rq-2"))
    assert dict(_sql(assignment, "SELECT business_id, count(*) FROM request_ids GROUP BY 1")) == {"b1": 2}
    # The resources themselves are untouched by the purge.
    assert _sql(assignment, "SELECT count(*) FROM resources") == [(33,)]


def test_the_server_measures_documents_as_the_shard_does(fresh_database: Callable[[], str]) -> None:
    """document_size (requests) equals octet_length(jsonb::text) (update results) for documents with
    nesting, lists, unicode, escapes and numbers: a document accepted at create is not refused for
    the same size when updated."""
    documents: list[dict[str, Any]] = [
        {},
        {"a": 1, "b": [1, 2.5, None, True, False], "c": {"d": {"e": "f"}}},
        {"name": "Zoë 🦷 Ștefan", "quote": 'say "hi"\n\ttab\\slash/', "ctl": "\x01\x1f\x7f"},
        {"n": -0.25, "big": 12345678901234, "empty": {}, "list": [], "s": ""},
    ]
    dsn = fresh_database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for document in documents:
            row = conn.execute("SELECT octet_length(%s::jsonb::text)", (Jsonb(document),)).fetchone()
            assert row is not None
            assert document_size(document) == row[0], document


def test_a_create_refused_for_size_by_the_shard_does_not_speak_of_an_update(
    shard: tuple[PoolRegistry, ShardAssignment],
) -> None:
    """A create that runs into the shard's document-size bound (here a trigger applying the
    bound to inserts) is INVALID_ARGUMENT on resource.data, worded for a create."""
    registry, assignment = shard
    store = ShardStore()
    with registry.connection(assignment) as session:  # the first connection migrates the shard
        store.create(session, _new("small"))
    _sql(
        assignment,
        """
CREATE FUNCTION bounded_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM simplu_jsonb_bounded(NEW.data, 16);
    RETURN NEW;
END
$$;
CREATE TRIGGER bounded_insert BEFORE INSERT ON resources FOR EACH ROW EXECUTE FUNCTION bounded_insert();
""",
    )
    big = NewResource(
        key=_key("big"), business_type="dental", data={"v": "x" * 100}, start_time=None, end_time=None
    )
    with pytest.raises(InvalidArgument) as caught, registry.connection(assignment) as session:
        store.create(session, big)
    assert [v.field for v in caught.value.violations] == ["resource.data"]
    assert "update" not in caught.value.message
    assert "update" not in caught.value.violations[0].description


def test_changes_past_retention_are_pruned_by_every_nth_write_a_bounded_batch_at_a_time(
    shard: tuple[PoolRegistry, ShardAssignment],
) -> None:
    """Every second write (of any kind: create, idempotent create, update, delete) deletes at
    most 100 changes past the retention, of any tenant, and never one still within it."""
    registry, assignment = shard
    store = ShardStore(change_retention=timedelta(hours=1), change_prune_every=2)
    with registry.connection(assignment) as session:  # the first connection migrates the shard
        session.run("SELECT 1")
    _sql(
        assignment,
        "INSERT INTO resource_changes (business_id, location_id, resource_type, resource_id, kind,"
        " version, principal, change_time) SELECT 'b2', 'main', 'patients', 'old-' || i, 'created', 1,"
        " 'p', now() - interval '2 hours' FROM generate_series(1, 250) AS i",
    )

    def expired() -> int:
        query = "SELECT count(*) FROM resource_changes WHERE change_time < now() - interval '1 hour'"
        return int(_sql(assignment, query)[0][0])

    plan = UpdatePlan(set_paths=((("k",), 1),), paths=("data.k",))
    writes: list[Callable[[ShardSession], object]] = [
        lambda s: store.create(s, _new("r1")),
        lambda s: store.create(s, _new("r2", "rq-1")),
        lambda s: store.update(s, _key("r1"), plan, principal="t"),
        lambda s: store.delete(s, _key("r2"), expected_version=None, principal="t"),
        lambda s: store.update(s, _key("r1"), plan, principal="t"),
        lambda s: store.update(s, _key("r1"), plan, principal="t"),
    ]
    left = [expired()]
    for write in writes:
        with registry.connection(assignment) as session:
            write(session)
        left.append(expired())
    assert left == [250, 250, 150, 150, 50, 50, 0]
    # The writes' own changes are within retention: all kept, in the order they were made.
    kept = _sql(assignment, "SELECT kind, resource_id FROM resource_changes ORDER BY sequence")
    assert kept == [
        ("created", "r1"),
        ("created", "r2"),
        ("updated", "r1"),
        ("deleted", "r2"),
        ("updated", "r1"),
        ("updated", "r1"),
    ]


def test_the_change_prune_is_an_index_range_scan_even_before_statistics(
    shard: tuple[PoolRegistry, ShardAssignment],
) -> None:
    """With 20,000 changes and no ANALYZE yet, the prune in a write's statement reads the
    change_time index, never the whole log (a scan per write would grow with the log)."""
    registry, assignment = shard
    store = ShardStore()
    with registry.connection(assignment) as session:  # the first connection migrates the shard
        store.create(session, _new("r0"))
    _sql(
        assignment,
        "INSERT INTO resource_changes (business_id, location_id, resource_type, resource_id, kind,"
        " version, principal) SELECT 'b1', 'main', 'patients', 'r' || i, 'updated', 1, 'p'"
        " FROM generate_series(1, 20000) AS i",
    )
    params = {
        "b": "b1",
        "l": "main",
        "n": "patients",
        "id": "r1",
        "type": "dental",
        "data": Jsonb({}),
        "start": None,
        "end": None,
        "who": "p",
        "change_retention": timedelta(days=7),
        "change_prune": 100,
    }
    with psycopg.connect(assignment.connection_string, autocommit=True) as conn:
        cursor = psycopg.ClientCursor(conn)
        cursor.execute("EXPLAIN " + resource_statements.INSERTS[True], params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "resource_changes_by_time" in plan
    assert "Seq Scan on resource_changes" not in plan
