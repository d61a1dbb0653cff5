-- Shard schema v7: moving a location between shards online (issue 13).
--
-- location_fences: a location this shard must no longer write. Every resource write statement
-- checks it in the same statement (a primary-key probe of this nearly always empty table, no
-- extra round trip): 'frozen' during a move's short write freeze (the caller is told to retry
-- shortly), 'moved' once the location is served by another shard (a replica with a stale route
-- refreshes it and retries there). A shard never writes a fenced location, whatever route a
-- replica has cached.
CREATE TABLE location_fences (
    business_id text        NOT NULL,
    location_id text        NOT NULL,
    state       text        NOT NULL,
    move_id     text        NOT NULL,
    set_time    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (business_id, location_id),
    CONSTRAINT location_fences_state CHECK (state IN ('frozen', 'moved'))
);

-- location_moves: the durable record of a move, kept on the move's SOURCE shard. The engine
-- writes its progress here after every bounded step, so a restarted replica (or another one,
-- once the lease has expired) resumes where the last step ended.
CREATE TABLE location_moves (
    move_id          text        PRIMARY KEY,
    business_id      text        NOT NULL,
    location_id      text        NOT NULL,
    source_shard     text        NOT NULL,
    target_shard     text        NOT NULL,
    phase            text        NOT NULL,
    -- The step within the phase, and its cursors (keyset positions, change-log watermarks).
    progress         jsonb       NOT NULL DEFAULT '{}',
    rows_copied      bigint      NOT NULL DEFAULT 0,
    changes_copied   bigint      NOT NULL DEFAULT 0,
    lag              bigint      NOT NULL DEFAULT 0,
    verification     jsonb,
    error            text        NOT NULL DEFAULT '',
    requested        text        NOT NULL DEFAULT '',
    owner            text        NOT NULL DEFAULT '',
    lease_until      timestamptz NOT NULL DEFAULT '-infinity',
    create_time      timestamptz NOT NULL DEFAULT clock_timestamp(),
    update_time      timestamptz NOT NULL DEFAULT clock_timestamp(),
    switch_time      timestamptz,
    freeze_millis    bigint,
    CONSTRAINT location_moves_phase CHECK (
        phase IN ('copying', 'catching_up', 'switched', 'finalizing', 'finalized', 'reverting',
                  'reverted', 'failed'))
);

-- location_move_cursors: on the shard RECEIVING a move's change rows, the highest source sequence
-- already copied from each origin shard. The copy statement reads it (locked) and advances it in
-- the same statement as the insert, so a batch repeated after a crash adds no duplicate history.
CREATE TABLE location_move_cursors (
    move_id       text   NOT NULL,
    origin        text   NOT NULL,
    last_sequence bigint NOT NULL,
    PRIMARY KEY (move_id, origin)
);

-- At most one open move (not finalized, reverted or failed) per location on a shard.
CREATE UNIQUE INDEX location_moves_one_open ON location_moves (business_id, location_id)
    WHERE phase IN ('copying', 'catching_up', 'switched', 'finalizing', 'reverting');
