-- Shard schema v2: a bound on documents grown by updates, and retention for idempotency keys.

-- UpdateResource computes the new document inside its one UPDATE statement (masked paths
-- are applied to the row as it is when locked), so the size bound must be checked there
-- too: a request that is small itself could otherwise grow a document past the limit one
-- key at a time. The size measured is the document as jsonb's text output renders it
-- (", " and ": " separators), which is also how the server measures requests. Raising
-- aborts the statement, so nothing changes; the constraint name lets the server answer
-- INVALID_ARGUMENT for the field resource.data.
CREATE FUNCTION simplu_jsonb_bounded(doc jsonb, max_bytes integer) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    size integer := octet_length(doc::text);
BEGIN
    IF size > max_bytes THEN
        RAISE EXCEPTION 'the updated document would be % bytes; at most %', size, max_bytes
            USING ERRCODE = 'check_violation', CONSTRAINT = 'resources_data_max_bytes';
    END IF;
    RETURN doc;
END
$$;

-- Request ids are remembered for a bounded time (AIP-155 asks for a window, not forever):
-- older ones are ignored by creates and purged a few at a time by later creates. This
-- index keeps that purge an index range scan.
CREATE INDEX request_ids_by_create_time ON request_ids (create_time);
