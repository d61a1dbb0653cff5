"""Durable location-move records (MoveRecords) in the ``location_moves`` table of the move's
source shard (migration 0007), with a lease: one replica runs a move's steps at a time, and a
move whose runner died (its lease expired) is taken over by the next replica that looks. Also the
locations a single database holds, for ``simplu-grpc move-to-citrus`` (LegacyLocationReader)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from simplu_grpc import context
from simplu_grpc.adapters.postgres.pool_registry import PoolRegistry
from simplu_grpc.adapters.postgres.pool_session import Row
from simplu_grpc.domain.location_moves.model import Move, Phase, Request, Verification
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.errors import FailedPrecondition, SimpluError

log = logging.getLogger(__name__)

_COLUMNS = (
    "move_id, business_id, location_id, source_shard, target_shard, phase, progress, rows_copied,"
    " changes_copied, lag, verification, error, requested, create_time, update_time, switch_time,"
    " freeze_millis"
)
_CLAIMABLE = """
SELECT move_id FROM location_moves
WHERE (phase IN ('copying', 'catching_up', 'finalizing', 'reverting')
       OR (phase = 'switched' AND requested <> ''))
  AND lease_until < clock_timestamp()
ORDER BY create_time
"""
# How long the scan may spend on one shard.
_SCAN_SECONDS = 2.0
_OPEN = "('copying', 'catching_up', 'switched', 'finalizing', 'reverting')"
_WITH_WORK = "('copying', 'catching_up', 'finalizing', 'reverting')"


def _move(row: Row) -> Move:
    return Move(
        move_id=row["move_id"],
        business_id=row["business_id"],
        location_id=row["location_id"],
        source_shard=row["source_shard"],
        target_shard=row["target_shard"],
        phase=Phase(row["phase"]),
        progress=dict(row["progress"] or {}),
        rows_copied=int(row["rows_copied"]),
        changes_copied=int(row["changes_copied"]),
        lag=int(row["lag"]),
        verification=None if row["verification"] is None else Verification.from_json(row["verification"]),
        error=row["error"],
        requested=Request(row["requested"]),
        create_time=row["create_time"],
        update_time=row["update_time"],
        switch_time=row["switch_time"],
        freeze_millis=row["freeze_millis"],
    )


class MoveState:
    """MoveRecords on this replica's shard pools."""

    def __init__(self, pools: PoolRegistry) -> None:
        self._pools = pools
        # When the scan last read each shard (only the scanner thread touches it).
        self._scanned: dict[str, datetime] = {}

    def _run(
        self, shard: ShardAssignment, query: str, params: dict[str, Any], *, write: bool = False
    ) -> list[Row]:
        with self._pools.connection(shard) as session:
            return session.run(query, params, write=write)

    def create(self, shard: ShardAssignment, move: Move) -> Move:
        params = {
            "id": move.move_id,
            "b": move.business_id,
            "l": move.location_id,
            "source": move.source_shard,
            "target": move.target_shard,
            "phase": move.phase.value,
        }
        try:
            rows = self._run(
                shard,
                f"""
INSERT INTO location_moves (move_id, business_id, location_id, source_shard, target_shard, phase)
VALUES (%(id)s, %(b)s, %(l)s, %(source)s, %(target)s, %(phase)s) RETURNING {_COLUMNS}
""",
                params,
                write=True,
            )
        except psycopg.errors.UniqueViolation as exc:
            raise FailedPrecondition(
                f"location {move.location_id} of business {move.business_id} already has an open move",
                reason="MOVE_ALREADY_OPEN",
                metadata={"business_id": move.business_id, "location_id": move.location_id},
            ) from exc
        return _move(rows[0])

    def find(self, shard: ShardAssignment, move_id: str) -> Move | None:
        rows = self._run(
            shard, f"SELECT {_COLUMNS} FROM location_moves WHERE move_id = %(id)s", {"id": move_id}
        )
        return _move(rows[0]) if rows else None

    def list_moves(self, shard: ShardAssignment, *, business_id: str | None, open_only: bool) -> list[Move]:
        where = ["true"]
        if business_id:
            where.append("business_id = %(b)s")
        if open_only:
            where.append(f"phase IN {_OPEN}")
        rows = self._run(
            shard,
            f"SELECT {_COLUMNS} FROM location_moves WHERE {' AND '.join(where)}"
            " ORDER BY create_time DESC LIMIT 1000",
            {"b": business_id},
        )
        return [_move(row) for row in rows]

    def claim(self, shard: ShardAssignment, move_id: str, *, owner: str, lease_seconds: float) -> Move | None:
        rows = self._run(
            shard,
            f"""
UPDATE location_moves
SET owner = %(owner)s, lease_until = clock_timestamp() + make_interval(secs => %(lease)s)
WHERE move_id = %(id)s AND (owner = %(owner)s OR lease_until < clock_timestamp())
  AND (phase IN {_WITH_WORK} OR (phase = 'switched' AND requested <> ''))
RETURNING {_COLUMNS}
""",
            {"id": move_id, "owner": owner, "lease": float(lease_seconds)},
            write=True,
        )
        return _move(rows[0]) if rows else None

    def save(self, shard: ShardAssignment, move: Move, *, owner: str, consumed: bool) -> bool:
        params = {
            "id": move.move_id,
            "owner": owner,
            "phase": move.phase.value,
            "progress": Jsonb(move.progress),
            "rows": move.rows_copied,
            "changes": move.changes_copied,
            "lag": move.lag,
            "verification": None if move.verification is None else Jsonb(move.verification.to_json()),
            "error": move.error,
            "consumed": consumed,
            "switch": move.switch_time,
            "freeze": move.freeze_millis,
        }
        rows = self._run(
            shard,
            """
UPDATE location_moves SET phase = %(phase)s, progress = %(progress)s, rows_copied = %(rows)s,
    changes_copied = %(changes)s, lag = %(lag)s, verification = %(verification)s, error = %(error)s,
    requested = CASE WHEN %(consumed)s THEN '' ELSE requested END,
    switch_time = %(switch)s, freeze_millis = %(freeze)s, update_time = clock_timestamp()
WHERE move_id = %(id)s AND owner = %(owner)s
RETURNING 1
""",
            params,
            write=True,
        )
        return bool(rows)

    def release(self, shard: ShardAssignment, move_id: str, *, owner: str) -> None:
        self._run(
            shard,
            """
UPDATE location_moves SET lease_until = '-infinity' WHERE move_id = %(id)s AND owner = %(owner)s
""",
            {"id": move_id, "owner": owner},
            write=True,
        )

    def request(self, shard: ShardAssignment, move_id: str, request: Request) -> None:
        self._run(
            shard,
            "UPDATE location_moves SET requested = %(r)s WHERE move_id = %(id)s",
            {"id": move_id, "r": request.value},
            write=True,
        )

    def claimable(self) -> list[tuple[str, str]]:
        """(shard id, move id) of moves with work whose lease has expired, on the shards this
        replica has a pool for that something other than this scan used since the last scan (so
        the scan never opens a pool, and a pool nobody else uses still goes idle and closes).
        Each shard's read is bounded by ``_SCAN_SECONDS``; one that does not answer is skipped."""
        found: list[tuple[str, str]] = []
        for info in self._pools.stats():
            assignment = self._pools.assignment(info.shard_id)
            scanned = self._scanned.get(info.shard_id)
            if assignment is None or (
                scanned is not None and (info.last_used_time is None or info.last_used_time <= scanned)
            ):
                continue
            try:
                with context.bind(deadline=context.Deadline.after(_SCAN_SECONDS)):
                    rows = self._run(assignment, _CLAIMABLE, {})
            except SimpluError as exc:
                log.debug("move scan skipped shard %s: %s", info.shard_id, exc.message)
                continue
            finally:
                self._scanned[info.shard_id] = datetime.now(UTC)
            found += [(info.shard_id, str(row["move_id"])) for row in rows]
        return found


class LegacyLocationReader:
    """The locations with resources in the single database (for ``move-to-citrus``)."""

    def __init__(self, pools: PoolRegistry) -> None:
        self._pools = pools

    def locations(self, shard: ShardAssignment) -> list[tuple[str, str, str]]:
        with self._pools.connection(shard) as session:
            rows = session.run(
                "SELECT business_id, location_id, min(business_type) AS business_type FROM resources"
                " GROUP BY business_id, location_id ORDER BY business_id, location_id"
            )
        return [(row["business_id"], row["location_id"], row["business_type"]) for row in rows]
