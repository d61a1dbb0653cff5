-- Shard schema v1: the resource table, idempotency keys for creates, and the helper that
-- sets a nested key in one statement (UpdateResource with update_mask paths such as
-- data.patient.name).

-- One row per resource. business_id and location_id stay separate columns (never the
-- joined Citrus key); the primary key on the four id columns isolates tenants even when
-- two of them use the same resource ids.
CREATE TABLE resources (
    business_id   text        NOT NULL,
    location_id   text        NOT NULL,
    resource_name text        NOT NULL,
    resource_id   text        NOT NULL,
    business_type text        NOT NULL,
    data          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    start_date    timestamptz,
    end_date      timestamptz,
    create_time   timestamptz NOT NULL DEFAULT clock_timestamp(),
    update_time   timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Bumped by every update; the etag is derived from it (AIP-154).
    version       bigint      NOT NULL DEFAULT 1,
    PRIMARY KEY (business_id, location_id, resource_name, resource_id),
    CONSTRAINT resources_data_is_object CHECK (jsonb_typeof(data) = 'object'),
    CONSTRAINT resources_dates_ordered CHECK (end_date IS NULL OR start_date IS NULL OR end_date >= start_date)
);

-- ListResources ordered by start_date (the default): keyset on (sort key, resource_id).
-- Resources without a start_date sort last, so the key is never NULL and row comparison works.
CREATE INDEX resources_by_start_date ON resources (
    business_id, location_id, resource_name, (COALESCE(start_date, 'infinity'::timestamptz)), resource_id
);

-- ListResources ordered by update_time.
CREATE INDEX resources_by_update_time ON resources (
    business_id, location_id, resource_name, update_time, resource_id
);

-- JSON containment filter (data @> '{"status": "confirmed"}').
CREATE INDEX resources_data_containment ON resources USING gin (data jsonb_path_ops);

-- Idempotent creates (AIP-155): a request id, once claimed, names the resource it created.
-- Deleting the resource forgets the key, so a later retry creates again rather than
-- pointing at nothing.
CREATE TABLE request_ids (
    business_id   text        NOT NULL,
    location_id   text        NOT NULL,
    request_id    text        NOT NULL,
    resource_name text        NOT NULL,
    resource_id   text        NOT NULL,
    create_time   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (business_id, location_id, request_id),
    FOREIGN KEY (business_id, location_id, resource_name, resource_id)
        REFERENCES resources (business_id, location_id, resource_name, resource_id) ON DELETE CASCADE
);

CREATE INDEX request_ids_by_resource ON request_ids (business_id, location_id, resource_name, resource_id);

-- Sets doc #> path to value, creating (or replacing non-object) intermediate levels, so a
-- masked update of data.patient.name works when data.patient is missing. jsonb_set alone
-- only creates the last level.
CREATE FUNCTION simplu_jsonb_put(doc jsonb, path text[], value jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    depth int := coalesce(array_length(path, 1), 0);
BEGIN
    IF depth = 0 THEN
        RETURN value;
    END IF;
    IF doc IS NULL OR jsonb_typeof(doc) <> 'object' THEN
        doc := '{}'::jsonb;
    END IF;
    FOR i IN 1 .. depth - 1 LOOP
        IF jsonb_typeof(doc #> path[1:i]) IS DISTINCT FROM 'object' THEN
            doc := jsonb_set(doc, path[1:i], '{}'::jsonb, true);
        END IF;
    END LOOP;
    RETURN jsonb_set(doc, path, value, true);
END
$$;
