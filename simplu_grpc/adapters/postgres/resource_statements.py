"""The fixed SQL text of the resource statements (ShardStore): every write logs its change in
the same statement, and one write in ``change_prune_every`` also prunes the change log.

No identifier and no SQL text here ever comes from input; values are bound parameters.
"""

from __future__ import annotations

COLUMNS = (
    "business_id, location_id, resource_type, resource_id, business_type, data,"
    " start_time, end_time, create_time, update_time, version"
)
PK = "business_id = %(b)s AND location_id = %(l)s AND resource_type = %(n)s AND resource_id = %(id)s"

# Every write records its change in the same statement (a ``logged`` CTE): the row commits or
# rolls back with the write, and costs no extra round trip. A create replayed by its request
# id changed nothing and logs nothing (``created`` is then empty).
CHANGE_COLUMNS = "business_id, location_id, resource_type, resource_id, kind, version, paths, principal"

# Changes past retention are deleted by one write in ``change_prune_every`` (ShardStore), in
# that write's statement, at most _CHANGE_PRUNE_BATCH of them: bounded work, no extra round
# trip, no background thread, and several times the log's inflow, so the prune outruns it.
# Not on every write: planning the prune costs a write about as much as logging its change
# does (measured), so it is paid once in many writes. Maintenance, not a tenant read: it
# returns nothing, and takes rows no concurrent prune holds (SKIP LOCKED). The plan must not
# read the whole log, whatever the statistics say (a young log has none): ORDER BY change_time
# makes the choice a range scan of resource_changes_by_time (oldest first), and = ANY(ARRAY(..))
# deletes them through the primary key (IN (...) may be planned as a join over the whole table).
PRUNE_CHANGES = """,
prune_changes AS (
    DELETE FROM resource_changes
    WHERE sequence = ANY(ARRAY(
        SELECT sequence FROM resource_changes
        WHERE change_time < now() - %(change_retention)s::interval
        ORDER BY change_time
        LIMIT %(change_prune)s
        FOR UPDATE SKIP LOCKED))
)"""
# A location being moved (or moved away) is fenced on this shard (migration 0007): every write
# statement reads the fence first, in the same statement, and changes nothing when there is one;
# its answer row says which fence stopped it (``fence``, ``fence_move``). A primary-key probe of
# a table that is empty but for the few locations in a move: no extra round trip on the warm path.
# A writer whose snapshot predates a new fence is waited out by the move (adapters/postgres/move_copier.py).
FENCE = """fence AS (
    SELECT state, move_id FROM location_fences WHERE business_id = %(b)s AND location_id = %(l)s
)"""
NOT_FENCED = "NOT EXISTS (SELECT 1 FROM fence)"
FENCE_COLUMNS = "(SELECT state FROM fence) AS fence, (SELECT move_id FROM fence) AS fence_move"

# Where a write statement's last CTE ends: the prune goes there when it is that write's turn.
PRUNE_SLOT = "/* prune */"


def with_and_without_prune(statement: str) -> tuple[str, str]:
    """The write statement without the prune, and with it."""
    return statement.replace(PRUNE_SLOT, ""), statement.replace(PRUNE_SLOT, PRUNE_CHANGES)


INSERT = f"""
WITH {FENCE}, created AS (
    INSERT INTO resources (business_id, location_id, resource_type, resource_id, business_type, data,
                           start_time, end_time)
    SELECT %(b)s, %(l)s, %(n)s, %(id)s, %(type)s, %(data)s, %(start)s, %(end)s WHERE {NOT_FENCED}
    RETURNING {COLUMNS}
), logged AS (
    INSERT INTO resource_changes ({CHANGE_COLUMNS})
    SELECT business_id, location_id, resource_type, resource_id, 'created', version, '{{}}', %(who)s
    FROM created
){PRUNE_SLOT}
SELECT {FENCE_COLUMNS}, c.* FROM (SELECT 1) AS one
LEFT JOIN (SELECT true AS created, {COLUMNS} FROM created) AS c ON true
"""

# The request id is claimed first: a concurrent retry blocks on the claim's unique index
# until this statement commits, so exactly one resource is ever created per request id.
# A claim belongs to the caller who made it (%(who)s, the token's subject): only that
# caller's retry replays it; another caller's same request id is a request of its own.
# Request ids are remembered for a bounded time (``request_id_retention``, AIP-155's
# window): an older claim is ignored (taken over by the new request) and a few expired
# claims are purged by each idempotent create, in this same statement. The purge is
# maintenance, not a tenant read: it returns nothing, and never touches this request's own
# claim (one statement must not modify a row twice).
INSERT_IDEMPOTENT = f"""
WITH {FENCE}, purge AS (
    DELETE FROM request_ids
    WHERE (business_id, location_id, requester, request_id) IN (
        SELECT business_id, location_id, requester, request_id FROM request_ids
        WHERE create_time < now() - %(retention)s::interval
          AND NOT (business_id = %(b)s AND location_id = %(l)s AND requester = %(who)s
                   AND request_id = %(rq)s)
        LIMIT %(purge)s
        FOR UPDATE SKIP LOCKED)
), claim AS (
    INSERT INTO request_ids (business_id, location_id, requester, request_id, resource_type, resource_id)
    SELECT %(b)s, %(l)s, %(who)s, %(rq)s, %(n)s, %(id)s WHERE {NOT_FENCED}
    ON CONFLICT (business_id, location_id, requester, request_id) DO UPDATE
        SET resource_type = EXCLUDED.resource_type,
            resource_id = EXCLUDED.resource_id,
            create_time = EXCLUDED.create_time
        WHERE request_ids.create_time < now() - %(retention)s::interval
    RETURNING resource_id
), created AS (
    INSERT INTO resources (business_id, location_id, resource_type, resource_id, business_type, data,
                           start_time, end_time)
    SELECT %(b)s, %(l)s, %(n)s, %(id)s, %(type)s, %(data)s, %(start)s, %(end)s FROM claim
    RETURNING {COLUMNS}
), logged AS (
    INSERT INTO resource_changes ({CHANGE_COLUMNS})
    SELECT business_id, location_id, resource_type, resource_id, 'created', version, '{{}}', %(who)s
    FROM created
){PRUNE_SLOT}
SELECT {FENCE_COLUMNS}, x.* FROM (SELECT 1) AS one LEFT JOIN (
    SELECT true AS created, {COLUMNS} FROM created
    UNION ALL
    SELECT false AS created, {", ".join(f"r.{c.strip()}" for c in COLUMNS.split(","))}
    FROM request_ids q
    JOIN resources r USING (business_id, location_id, resource_type, resource_id)
    WHERE q.business_id = %(b)s AND q.location_id = %(l)s AND q.requester = %(who)s
      AND q.request_id = %(rq)s
      AND q.create_time >= now() - %(retention)s::interval
      AND NOT EXISTS (SELECT 1 FROM claim)
) AS x ON true
"""

REPLAY = f"""
SELECT false AS created, {", ".join(f"r.{c.strip()}" for c in COLUMNS.split(","))}
FROM request_ids q
JOIN resources r USING (business_id, location_id, resource_type, resource_id)
WHERE q.business_id = %(b)s AND q.location_id = %(l)s AND q.requester = %(who)s
  AND q.request_id = %(rq)s
  AND q.create_time >= now() - %(retention)s::interval
"""

GET = f"SELECT {COLUMNS} FROM resources WHERE {PK}"

BATCH_GET = f"""
SELECT {COLUMNS} FROM resources
WHERE business_id = %(b)s
  AND (location_id, resource_type, resource_id) IN (
      SELECT * FROM unnest(%(l)s::text[], %(n)s::text[], %(id)s::text[]))
"""

DELETE = f"""
WITH {FENCE}, current_row AS (
    SELECT version FROM resources WHERE {PK}
), deleted AS (
    DELETE FROM resources WHERE {PK} AND (%(v)s::bigint IS NULL OR version = %(v)s::bigint)
      AND {NOT_FENCED}
    RETURNING business_id, location_id, resource_type, resource_id, version
), logged AS (
    INSERT INTO resource_changes ({CHANGE_COLUMNS})
    SELECT business_id, location_id, resource_type, resource_id, 'deleted', version, '{{}}', %(who)s
    FROM deleted
){PRUNE_SLOT}
SELECT {FENCE_COLUMNS}, (SELECT version FROM current_row) AS current_version,
       (SELECT version FROM deleted) AS deleted_version
"""

# (without the prune, with it) for each fixed write statement; see PRUNE_CHANGES.
INSERTS = with_and_without_prune(INSERT)
INSERTS_IDEMPOTENT = with_and_without_prune(INSERT_IDEMPOTENT)
DELETES = with_and_without_prune(DELETE)
