"""The fixed SQL of location moves (MoveCopier): no identifier and no SQL text here comes from
input; values are bound parameters. Batches travel as one JSON array (``jsonb_agg`` on the
source, ``jsonb_to_recordset`` on the target)."""

from __future__ import annotations

RESOURCE_COLUMNS = (
    "business_id, location_id, resource_type, resource_id, business_type, data, start_time, end_time,"
    " create_time, update_time, version"
)
RESOURCE_TYPES = (
    "business_id text, location_id text, resource_type text, resource_id text, business_type text,"
    " data jsonb, start_time timestamptz, end_time timestamptz, create_time timestamptz,"
    " update_time timestamptz, version bigint"
)
CHANGE_COLUMNS = (
    "business_id, location_id, resource_type, resource_id, kind, version, paths, principal, change_time"
)
CHANGE_TYPES = (
    "seq bigint, business_id text, location_id text, resource_type text, resource_id text, kind text,"
    " version bigint, paths text[], principal text, change_time timestamptz"
)
CLAIM_COLUMNS = "business_id, location_id, requester, request_id, resource_type, resource_id, create_time"
CLAIM_TYPES = (
    "business_id text, location_id text, requester text, request_id text, resource_type text,"
    " resource_id text, create_time timestamptz"
)
LOC = "business_id = %(b)s AND location_id = %(l)s"

UPSERT_RESOURCES = f"""
INSERT INTO resources ({RESOURCE_COLUMNS})
SELECT {RESOURCE_COLUMNS} FROM jsonb_to_recordset(%(rows)s::jsonb) AS x({RESOURCE_TYPES})
ON CONFLICT (business_id, location_id, resource_type, resource_id) DO UPDATE SET
    business_type = EXCLUDED.business_type, data = EXCLUDED.data, start_time = EXCLUDED.start_time,
    end_time = EXCLUDED.end_time, create_time = EXCLUDED.create_time,
    update_time = EXCLUDED.update_time, version = EXCLUDED.version
"""
# Change rows get the target's own sequence numbers, in the source's order. Exactly once: the
# cursor of (move, origin) on the receiving shard is read locked and advanced in the same statement
# (location_move_cursors), so a batch copied again (a step repeated after a crash) adds nothing.
# Used as the first CTEs of a statement: ``WITH {CHANGE_CTES}, ...``.
CHANGE_CTES = f"""prev AS (
    SELECT last_sequence FROM location_move_cursors
    WHERE move_id = %(move)s AND origin = %(origin)s FOR UPDATE
), fresh AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS x({CHANGE_TYPES})
    WHERE x.seq > coalesce((SELECT last_sequence FROM prev), 0)
), logged AS (
    INSERT INTO resource_changes ({CHANGE_COLUMNS})
    SELECT {CHANGE_COLUMNS} FROM fresh ORDER BY seq
    RETURNING 1
), advanced AS (
    INSERT INTO location_move_cursors (move_id, origin, last_sequence)
    SELECT %(move)s, %(origin)s, max(seq) FROM fresh HAVING count(*) > 0
    ON CONFLICT (move_id, origin) DO UPDATE
    SET last_sequence = greatest(location_move_cursors.last_sequence, EXCLUDED.last_sequence)
)"""
INSERT_CHANGES = f"WITH {CHANGE_CTES} SELECT (SELECT count(*) FROM logged) AS n"
# Keys gone from the source, deleted on the target by key (joined with the list); left out
# of the statement when there are none.
DELETE_GONE = """, deleted AS (
    DELETE FROM resources r USING jsonb_array_elements(%(gone)s::jsonb) AS g
    WHERE r.business_id = %(b)s AND r.location_id = %(l)s AND r.resource_type = g->>0
      AND r.resource_id = g->>1
    RETURNING 1
)"""
NOTHING_GONE = ", deleted AS (SELECT 1 WHERE false)"
# A claim refers to its resource (foreign key): one whose resource is not on the target yet is
# left for the freeze's final copy of recent claims, when every resource is there.
UPSERT_CLAIMS = f"""
INSERT INTO request_ids ({CLAIM_COLUMNS})
SELECT {CLAIM_COLUMNS} FROM jsonb_to_recordset(%(rows)s::jsonb) AS x({CLAIM_TYPES})
WHERE EXISTS (SELECT 1 FROM resources r WHERE r.business_id = x.business_id
              AND r.location_id = x.location_id AND r.resource_type = x.resource_type
              AND r.resource_id = x.resource_id)
ON CONFLICT (business_id, location_id, requester, request_id) DO UPDATE SET
    resource_type = EXCLUDED.resource_type, resource_id = EXCLUDED.resource_id,
    create_time = EXCLUDED.create_time
"""
# The order-independent checksum: the sum of the first 60 bits of each row's md5 (numeric, so it
# never overflows), over a canonical text of every column (timestamps in UTC, jsonb's own text).
CHECKSUM = f"""
SELECT count(*) AS n, coalesce(sum(('x' || substr(md5(concat_ws('|',
    resource_type, resource_id, business_type, data::text,
    (start_time AT TIME ZONE 'UTC')::text, (end_time AT TIME ZONE 'UTC')::text,
    (create_time AT TIME ZONE 'UTC')::text, (update_time AT TIME ZONE 'UTC')::text, version::text
)), 1, 15))::bit(60)::bigint::numeric), 0)::text AS digest
FROM resources WHERE {LOC}
"""
LAST_SEQUENCE = (
    "SELECT coalesce(pg_sequence_last_value("
    "pg_get_serial_sequence('resource_changes', 'sequence')::regclass), 0) AS last"
)
WRITERS = """
SELECT coalesce(array_agg(DISTINCT virtualtransaction), '{}') AS writers FROM pg_locks
WHERE locktype = 'relation' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND relation = ANY(ARRAY['resource_changes'::regclass, 'resources'::regclass])
  AND mode = 'RowExclusiveLock' AND granted AND pid <> pg_backend_pid()
"""
STILL_WRITING = """
SELECT count(*) AS n FROM pg_locks
WHERE locktype = 'virtualxid' AND virtualxid = ANY(%(v)s::text[]) AND granted
"""
