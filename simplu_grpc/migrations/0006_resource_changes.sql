-- Shard schema v6: the change log. Every resource write (create, update, delete) records one
-- row here in the same statement as the write, so a change is logged exactly when it commits
-- and the write costs no extra round trip. ListResourceChanges reads it (who changed what,
-- when); it is also what a change stream catches up from.
--
-- sequence orders the changes of the shard in the order they were recorded (an identity, so
-- never reused; a location's changes all live on its shard). A change still committing may
-- become visible after one with a higher sequence: readers page by sequence and say so.
-- Rows are kept for the server's CHANGE_RETENTION (default 7 days) and pruned a few at a time
-- by later writes (resource_changes_by_time keeps that an index range scan that finds nothing
-- when nothing is due).
CREATE TABLE resource_changes (
    sequence      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_id   text        NOT NULL,
    location_id   text        NOT NULL,
    resource_type text        NOT NULL,
    resource_id   text        NOT NULL,
    kind          text        NOT NULL,
    -- The resource's version after the change (for a delete: the version that was deleted).
    version       bigint      NOT NULL,
    -- The update's paths as the caller gave them (update_mask paths, data_paths); empty for
    -- creates and deletes.
    paths         text[]      NOT NULL DEFAULT '{}',
    -- The caller's subject (the token's sub; a machine client's app client id).
    principal     text        NOT NULL,
    change_time   timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT resource_changes_kind CHECK (kind IN ('created', 'updated', 'deleted'))
);

-- A location's history in sequence order (optionally filtered by type, principal, time).
CREATE INDEX resource_changes_by_location ON resource_changes (business_id, location_id, sequence);

-- One resource's history in sequence order.
CREATE INDEX resource_changes_by_resource ON resource_changes (
    business_id, location_id, resource_type, resource_id, sequence
);

-- The bounded prune: the oldest rows past retention.
CREATE INDEX resource_changes_by_time ON resource_changes (change_time);
