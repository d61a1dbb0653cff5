"""The data side of a location move (ShardCopier): fixed SQL on the source and target shards.

Rows travel as one JSON array per batch: the source renders the batch with ``jsonb_agg`` and the
target reads it back with ``jsonb_to_recordset`` in one ``INSERT .. ON CONFLICT`` statement, so a
batch is one statement on each side and every value (timestamps to the microsecond, documents)
arrives exactly. Upserts make every batch idempotent: a step repeated after a crash changes nothing.

Settling the change log (``settle``): the log's sequence is taken when a write inserts its change
row, so a change with a lower sequence may commit after one with a higher sequence. The sequence's
``last_value`` is read first, then every transaction holding a write lock on ``resource_changes``
at that moment is waited out (pg_locks, by virtual transaction id): every change at or below the
value read has then committed or rolled back. A writer takes its table locks when its statement is
parsed, before the statement's snapshot, so ``drain_writers`` after setting a fence leaves no
writer that could still commit a write without having seen the fence.
"""

from __future__ import annotations

import time
from typing import Any

from simplu_grpc.adapters.pools import PoolRegistry, ShardSession
from simplu_grpc.domain.location_moves.model import Checksum
from simplu_grpc.domain.shards import ShardAssignment
from simplu_grpc.errors import Unavailable

_RESOURCE_COLUMNS = (
    "business_id, location_id, resource_type, resource_id, business_type, data, start_time, end_time,"
    " create_time, update_time, version"
)
_RESOURCE_TYPES = (
    "business_id text, location_id text, resource_type text, resource_id text, business_type text,"
    " data jsonb, start_time timestamptz, end_time timestamptz, create_time timestamptz,"
    " update_time timestamptz, version bigint"
)
_CHANGE_COLUMNS = (
    "business_id, location_id, resource_type, resource_id, kind, version, paths, principal, change_time"
)
_CHANGE_TYPES = (
    "seq bigint, business_id text, location_id text, resource_type text, resource_id text, kind text,"
    " version bigint, paths text[], principal text, change_time timestamptz"
)
_CLAIM_COLUMNS = "business_id, location_id, requester, request_id, resource_type, resource_id, create_time"
_CLAIM_TYPES = (
    "business_id text, location_id text, requester text, request_id text, resource_type text,"
    " resource_id text, create_time timestamptz"
)
_LOC = "business_id = %(b)s AND location_id = %(l)s"

_UPSERT_RESOURCES = f"""
INSERT INTO resources ({_RESOURCE_COLUMNS})
SELECT {_RESOURCE_COLUMNS} FROM jsonb_to_recordset(%(rows)s::jsonb) AS x({_RESOURCE_TYPES})
ON CONFLICT (business_id, location_id, resource_type, resource_id) DO UPDATE SET
    business_type = EXCLUDED.business_type, data = EXCLUDED.data, start_time = EXCLUDED.start_time,
    end_time = EXCLUDED.end_time, create_time = EXCLUDED.create_time,
    update_time = EXCLUDED.update_time, version = EXCLUDED.version
"""
# Change rows get the target's own sequence numbers, in the source's order. Exactly once: the
# cursor of (move, origin) on the receiving shard is read locked and advanced in the same statement
# (location_move_cursors), so a batch copied again (a step repeated after a crash) adds nothing.
# Used as the first CTEs of a statement: ``WITH {_CHANGE_CTES}, ...``.
_CHANGE_CTES = f"""prev AS (
    SELECT last_sequence FROM location_move_cursors
    WHERE move_id = %(move)s AND origin = %(origin)s FOR UPDATE
), fresh AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS x({_CHANGE_TYPES})
    WHERE x.seq > coalesce((SELECT last_sequence FROM prev), 0)
), logged AS (
    INSERT INTO resource_changes ({_CHANGE_COLUMNS})
    SELECT {_CHANGE_COLUMNS} FROM fresh ORDER BY seq
    RETURNING 1
), advanced AS (
    INSERT INTO location_move_cursors (move_id, origin, last_sequence)
    SELECT %(move)s, %(origin)s, max(seq) FROM fresh HAVING count(*) > 0
    ON CONFLICT (move_id, origin) DO UPDATE
    SET last_sequence = greatest(location_move_cursors.last_sequence, EXCLUDED.last_sequence)
)"""
_INSERT_CHANGES = f"WITH {_CHANGE_CTES} SELECT (SELECT count(*) FROM logged) AS n"
# A claim refers to its resource (foreign key): one whose resource is not on the target yet is
# left for the freeze's final copy of recent claims, when every resource is there.
# Keys gone from the source, deleted on the target by key (joined with the list); left out
# of the statement when there are none.
_DELETE_GONE = """, deleted AS (
    DELETE FROM resources r USING jsonb_array_elements(%(gone)s::jsonb) AS g
    WHERE r.business_id = %(b)s AND r.location_id = %(l)s AND r.resource_type = g->>0
      AND r.resource_id = g->>1
    RETURNING 1
)"""
_NOTHING_GONE = ", deleted AS (SELECT 1 WHERE false)"
_UPSERT_CLAIMS = f"""
INSERT INTO request_ids ({_CLAIM_COLUMNS})
SELECT {_CLAIM_COLUMNS} FROM jsonb_to_recordset(%(rows)s::jsonb) AS x({_CLAIM_TYPES})
WHERE EXISTS (SELECT 1 FROM resources r WHERE r.business_id = x.business_id
              AND r.location_id = x.location_id AND r.resource_type = x.resource_type
              AND r.resource_id = x.resource_id)
ON CONFLICT (business_id, location_id, requester, request_id) DO UPDATE SET
    resource_type = EXCLUDED.resource_type, resource_id = EXCLUDED.resource_id,
    create_time = EXCLUDED.create_time
"""
# The order-independent checksum: the sum of the first 60 bits of each row's md5 (numeric, so it
# never overflows), over a canonical text of every column (timestamps in UTC, jsonb's own text).
_CHECKSUM = f"""
SELECT count(*) AS n, coalesce(sum(('x' || substr(md5(concat_ws('|',
    resource_type, resource_id, business_type, data::text,
    (start_time AT TIME ZONE 'UTC')::text, (end_time AT TIME ZONE 'UTC')::text,
    (create_time AT TIME ZONE 'UTC')::text, (update_time AT TIME ZONE 'UTC')::text, version::text
)), 1, 15))::bit(60)::bigint::numeric), 0)::text AS digest
FROM resources WHERE {_LOC}
"""
_LAST_SEQUENCE = (
    "SELECT coalesce(pg_sequence_last_value("
    "pg_get_serial_sequence('resource_changes', 'sequence')::regclass), 0) AS last"
)
_WRITERS = """
SELECT coalesce(array_agg(DISTINCT virtualtransaction), '{}') AS writers FROM pg_locks
WHERE locktype = 'relation' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND relation = ANY(ARRAY['resource_changes'::regclass, 'resources'::regclass])
  AND mode = 'RowExclusiveLock' AND granted AND pid <> pg_backend_pid()
"""
_STILL_WRITING = """
SELECT count(*) AS n FROM pg_locks
WHERE locktype = 'virtualxid' AND virtualxid = ANY(%(v)s::text[]) AND granted
"""
# How often drain_writers looks again, and for how long at most (a write statement is bounded
# by its RPC's deadline, so writers end within that; a stuck one fails the step, which is retried).
_DRAIN_POLL = 0.005
_DRAIN_BOUND = 60.0


class MoveCopier:
    """ShardCopier on this replica's shard pools (see module docstring)."""

    def __init__(self, pools: PoolRegistry) -> None:
        self._pools = pools

    def _run(
        self, shard: ShardAssignment, query: str, params: dict[str, Any] | None = None, *, write: bool = False
    ) -> list[dict[str, Any]]:
        with self._pools.connection(shard) as session:
            return session.run(query, params, write=write)

    def refresh_statistics(self, shard: ShardAssignment) -> None:
        # Takes no lock that writes wait for (SHARE UPDATE EXCLUSIVE), samples a bounded number
        # of rows: cheap, and what keeps a key lookup on the primary key rather than on an index
        # that only leads with the location (a plan made on "no statistics" can pick either).
        self._run(shard, "ANALYZE resources, resource_changes, request_ids")

    def settle(self, shard: ShardAssignment) -> int:
        with self._pools.connection(shard) as session:
            last = int(session.run(_LAST_SEQUENCE)[0]["last"])
            self._wait_out(session, session.run(_WRITERS)[0]["writers"])
        return last

    def drain_writers(self, shard: ShardAssignment) -> None:
        with self._pools.connection(shard) as session:
            self._wait_out(session, session.run(_WRITERS)[0]["writers"])

    @staticmethod
    def _wait_out(session: ShardSession, writers: list[str]) -> None:
        if not writers:
            return
        # A virtual transaction holds a lock on its own virtualxid until it ends.
        vxids = [w for w in writers if w]
        until = time.monotonic() + _DRAIN_BOUND
        while int(session.run(_STILL_WRITING, {"v": vxids})[0]["n"]):
            if time.monotonic() > until:
                raise Unavailable("writes on the shard did not finish in time for the move; it retries")
            time.sleep(_DRAIN_POLL)

    def copy_history(
        self,
        source: ShardAssignment,
        target: ShardAssignment,
        business_id: str,
        location_id: str,
        *,
        move_id: str,
        after: int,
        upto: int,
        limit: int,
    ) -> tuple[int, int | None]:
        params = {"b": business_id, "l": location_id, "after": after, "upto": upto, "limit": limit}
        rows = self._run(
            source,
            f"""
SELECT count(*) AS n, max(seq) AS last, coalesce(jsonb_agg(x ORDER BY seq), '[]')::text AS rows FROM (
    SELECT sequence AS seq, {_CHANGE_COLUMNS} FROM resource_changes
    WHERE {_LOC} AND sequence > %(after)s AND sequence <= %(upto)s ORDER BY sequence LIMIT %(limit)s) x
""",
            params,
        )[0]
        if rows["n"]:
            self._run(
                target,
                _INSERT_CHANGES,
                {"rows": rows["rows"], "move": move_id, "origin": source.shard_id},
                write=True,
            )
        return int(rows["n"]), None if rows["last"] is None else int(rows["last"])

    def copy_resources(
        self,
        source: ShardAssignment,
        target: ShardAssignment,
        business_id: str,
        location_id: str,
        *,
        after: list[str] | None,
        limit: int,
    ) -> tuple[int, list[str] | None]:
        return self._copy_keyed(
            source,
            target,
            business_id,
            location_id,
            after=after,
            limit=limit,
            columns=_RESOURCE_COLUMNS,
            table="resources",
            key=("resource_type", "resource_id"),
            upsert=_UPSERT_RESOURCES,
            where="",
        )

    def copy_request_ids(
        self,
        source: ShardAssignment,
        target: ShardAssignment,
        business_id: str,
        location_id: str,
        *,
        after: list[str] | None,
        limit: int,
        since: float | None = None,
    ) -> tuple[int, list[str] | None]:
        where = "" if since is None else f" AND create_time >= to_timestamp({float(since)})"
        return self._copy_keyed(
            source,
            target,
            business_id,
            location_id,
            after=after,
            limit=limit,
            columns=_CLAIM_COLUMNS,
            table="request_ids",
            key=("requester", "request_id"),
            upsert=_UPSERT_CLAIMS,
            where=where,
        )

    def _copy_keyed(
        self,
        source: ShardAssignment,
        target: ShardAssignment,
        business_id: str,
        location_id: str,
        *,
        after: list[str] | None,
        limit: int,
        columns: str,
        table: str,
        key: tuple[str, str],
        upsert: str,
        where: str,
    ) -> tuple[int, list[str] | None]:
        """One keyset batch of a location's rows of ``table`` (fixed names, chosen by the caller)."""
        params: dict[str, Any] = {"b": business_id, "l": location_id, "limit": limit}
        position = ""
        if after is not None:
            position = f" AND ({key[0]}, {key[1]}) > (%(k0)s, %(k1)s)"
            params.update(k0=after[0], k1=after[1])
        row = self._run(
            source,
            f"""
SELECT count(*) AS n, coalesce(jsonb_agg(x ORDER BY {key[0]}, {key[1]}), '[]')::text AS rows,
       (array_agg({key[0]} ORDER BY {key[0]} DESC, {key[1]} DESC))[1] AS last0,
       (array_agg({key[1]} ORDER BY {key[0]} DESC, {key[1]} DESC))[1] AS last1 FROM (
    SELECT {columns} FROM {table} WHERE {_LOC}{position}{where}
    ORDER BY {key[0]}, {key[1]} LIMIT %(limit)s) x
""",
            params,
        )[0]
        if row["n"]:
            self._run(target, upsert, {"rows": row["rows"]}, write=True)
        return int(row["n"]), None if row["last0"] is None else [row["last0"], row["last1"]]

    def catch_up(
        self,
        source: ShardAssignment,
        target: ShardAssignment,
        business_id: str,
        location_id: str,
        *,
        move_id: str,
        after: int,
        upto: int,
        limit: int,
    ) -> tuple[int, int, int]:
        params = {"b": business_id, "l": location_id, "after": after, "upto": upto, "limit": limit}
        # The changes, and the CURRENT source row of every key they touch, read in one statement
        # (one snapshot): a key whose row is gone is deleted on the target. The rows are looked
        # up key by key (LATERAL): a location freshly filled has no statistics yet, and a join
        # planned on "1 row" estimates would compare every row of the location with every key.
        row = self._run(
            source,
            f"""
WITH changes AS (
    SELECT sequence AS seq, {_CHANGE_COLUMNS} FROM resource_changes
    WHERE {_LOC} AND sequence > %(after)s AND sequence <= %(upto)s ORDER BY sequence LIMIT %(limit)s
), touched AS (SELECT DISTINCT resource_type, resource_id FROM changes)
SELECT (SELECT count(*) FROM changes) AS n, (SELECT max(seq) FROM changes) AS last,
       (SELECT coalesce(jsonb_agg(c ORDER BY seq), '[]') FROM changes c)::text AS changes,
       (SELECT coalesce(jsonb_agg(r), '[]') FROM (
            SELECT {", ".join("r." + c.strip() for c in _RESOURCE_COLUMNS.split(","))}
            FROM touched t CROSS JOIN LATERAL (
                SELECT * FROM resources r WHERE r.business_id = %(b)s AND r.location_id = %(l)s
                  AND r.resource_type = t.resource_type AND r.resource_id = t.resource_id) r) r)::text
           AS present,
       (SELECT coalesce(jsonb_agg(jsonb_build_array(t.resource_type, t.resource_id)), '[]')
        FROM touched t LEFT JOIN LATERAL (
            SELECT true AS found FROM resources r WHERE r.business_id = %(b)s AND r.location_id = %(l)s
              AND r.resource_type = t.resource_type AND r.resource_id = t.resource_id) x ON true
        WHERE x.found IS NULL)::text AS gone
""",
            params,
        )[0]
        count = int(row["n"])
        if not count:
            return 0, 0, after
        # One statement on the target: the change rows, the present rows upserted, the gone deleted.
        written = self._run(
            target,
            f"""
WITH {_CHANGE_CTES}, upserted AS ({_UPSERT_RESOURCES.replace("%(rows)s", "%(present)s")}
    RETURNING 1
){_DELETE_GONE if row["gone"] != "[]" else _NOTHING_GONE}
SELECT (SELECT count(*) FROM upserted) + (SELECT count(*) FROM deleted) AS n
""",
            {
                "rows": row["changes"],
                "move": move_id,
                "origin": source.shard_id,
                "present": row["present"],
                "gone": row["gone"],
                "b": business_id,
                "l": location_id,
            },
            write=True,
        )[0]["n"]
        return count, int(written), int(row["last"])

    def pending(self, shard: ShardAssignment, business_id: str, location_id: str, *, after: int) -> int:
        return int(
            self._run(
                shard,
                f"""
SELECT count(*) AS n FROM (SELECT 1 FROM resource_changes WHERE {_LOC} AND sequence > %(after)s
                           LIMIT 100000) x
""",
                {"b": business_id, "l": location_id, "after": after},
            )[0]["n"]
        )

    def fence(
        self, shard: ShardAssignment, business_id: str, location_id: str, state: str | None, move_id: str
    ) -> None:
        params = {"b": business_id, "l": location_id, "state": state, "move": move_id}
        if state is None:
            self._run(shard, f"DELETE FROM location_fences WHERE {_LOC}", params, write=True)
            return
        self._run(
            shard,
            """
INSERT INTO location_fences (business_id, location_id, state, move_id)
VALUES (%(b)s, %(l)s, %(state)s, %(move)s)
ON CONFLICT (business_id, location_id) DO UPDATE
SET state = EXCLUDED.state, move_id = EXCLUDED.move_id,
    set_time = clock_timestamp()
""",
            params,
            write=True,
        )

    def checksum(self, shard: ShardAssignment, business_id: str, location_id: str) -> Checksum:
        row = self._run(shard, _CHECKSUM, {"b": business_id, "l": location_id})[0]
        return Checksum(int(row["n"]), format(int(row["digest"]), "x"))

    def purge(self, shard: ShardAssignment, business_id: str, location_id: str, *, limit: int) -> int:
        params = {"b": business_id, "l": location_id, "limit": limit}
        return int(
            self._run(
                shard,
                f"""
WITH r AS (
    DELETE FROM resources WHERE (business_id, location_id, resource_type, resource_id) IN (
        SELECT business_id, location_id, resource_type, resource_id FROM resources
        WHERE {_LOC} LIMIT %(limit)s)
    RETURNING 1
), c AS (
    DELETE FROM resource_changes WHERE sequence = ANY(ARRAY(
        SELECT sequence FROM resource_changes WHERE {_LOC} ORDER BY sequence LIMIT %(limit)s))
    RETURNING 1
), q AS (
    DELETE FROM request_ids WHERE (business_id, location_id, requester, request_id) IN (
        SELECT business_id, location_id, requester, request_id FROM request_ids WHERE {_LOC} LIMIT %(limit)s)
    RETURNING 1
)
SELECT greatest((SELECT count(*) FROM r), (SELECT count(*) FROM c), (SELECT count(*) FROM q)) AS n
""",
                params,
                write=True,
            )[0]["n"]
        )
