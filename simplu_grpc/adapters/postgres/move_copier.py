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

from simplu_grpc.adapters.postgres.move_statements import (
    CHANGE_COLUMNS,
    CHANGE_CTES,
    CHECKSUM,
    CLAIM_COLUMNS,
    DELETE_GONE,
    INSERT_CHANGES,
    LAST_SEQUENCE,
    LOC,
    NOTHING_GONE,
    RESOURCE_COLUMNS,
    STILL_WRITING,
    UPSERT_CLAIMS,
    UPSERT_RESOURCES,
    WRITERS,
)
from simplu_grpc.adapters.postgres.pool_registry import PoolRegistry
from simplu_grpc.adapters.postgres.pool_session import ShardSession
from simplu_grpc.domain.location_moves.model import Checksum
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.errors import Unavailable

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
            last = int(session.run(LAST_SEQUENCE)[0]["last"])
            self._wait_out(session, session.run(WRITERS)[0]["writers"])
        return last

    def drain_writers(self, shard: ShardAssignment) -> None:
        with self._pools.connection(shard) as session:
            self._wait_out(session, session.run(WRITERS)[0]["writers"])

    @staticmethod
    def _wait_out(session: ShardSession, writers: list[str]) -> None:
        if not writers:
            return
        # A virtual transaction holds a lock on its own virtualxid until it ends.
        vxids = [w for w in writers if w]
        until = time.monotonic() + _DRAIN_BOUND
        while int(session.run(STILL_WRITING, {"v": vxids})[0]["n"]):
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
    SELECT sequence AS seq, {CHANGE_COLUMNS} FROM resource_changes
    WHERE {LOC} AND sequence > %(after)s AND sequence <= %(upto)s ORDER BY sequence LIMIT %(limit)s) x
""",
            params,
        )[0]
        if rows["n"]:
            self._run(
                target,
                INSERT_CHANGES,
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
            columns=RESOURCE_COLUMNS,
            table="resources",
            key=("resource_type", "resource_id"),
            upsert=UPSERT_RESOURCES,
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
            columns=CLAIM_COLUMNS,
            table="request_ids",
            key=("requester", "request_id"),
            upsert=UPSERT_CLAIMS,
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
    SELECT {columns} FROM {table} WHERE {LOC}{position}{where}
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
    SELECT sequence AS seq, {CHANGE_COLUMNS} FROM resource_changes
    WHERE {LOC} AND sequence > %(after)s AND sequence <= %(upto)s ORDER BY sequence LIMIT %(limit)s
), touched AS (SELECT DISTINCT resource_type, resource_id FROM changes)
SELECT (SELECT count(*) FROM changes) AS n, (SELECT max(seq) FROM changes) AS last,
       (SELECT coalesce(jsonb_agg(c ORDER BY seq), '[]') FROM changes c)::text AS changes,
       (SELECT coalesce(jsonb_agg(r), '[]') FROM (
            SELECT {", ".join("r." + c.strip() for c in RESOURCE_COLUMNS.split(","))}
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
WITH {CHANGE_CTES}, upserted AS ({UPSERT_RESOURCES.replace("%(rows)s", "%(present)s")}
    RETURNING 1
){DELETE_GONE if row["gone"] != "[]" else NOTHING_GONE}
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
SELECT count(*) AS n FROM (SELECT 1 FROM resource_changes WHERE {LOC} AND sequence > %(after)s
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
            self._run(shard, f"DELETE FROM location_fences WHERE {LOC}", params, write=True)
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
        row = self._run(shard, CHECKSUM, {"b": business_id, "l": location_id})[0]
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
        WHERE {LOC} LIMIT %(limit)s)
    RETURNING 1
), c AS (
    DELETE FROM resource_changes WHERE sequence = ANY(ARRAY(
        SELECT sequence FROM resource_changes WHERE {LOC} ORDER BY sequence LIMIT %(limit)s))
    RETURNING 1
), q AS (
    DELETE FROM request_ids WHERE (business_id, location_id, requester, request_id) IN (
        SELECT business_id, location_id, requester, request_id FROM request_ids WHERE {LOC} LIMIT %(limit)s)
    RETURNING 1
)
SELECT greatest((SELECT count(*) FROM r), (SELECT count(*) FROM c), (SELECT count(*) FROM q)) AS n
""",
                params,
                write=True,
            )[0]["n"]
        )
