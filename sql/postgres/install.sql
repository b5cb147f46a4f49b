-- Tandem: objects in this database (PostgreSQL 12 or later).
-- `tandem install` runs exactly this script, in one transaction; running it again is harmless.
-- Placeholders like {{schema}} are filled with identifiers quoted for PostgreSQL.
BEGIN;

CREATE SCHEMA IF NOT EXISTS {{schema}};
COMMENT ON SCHEMA {{schema}} IS 'tandem: change capture and id links (created by tandem install)';

-- One row per captured change. A row leaves only after its effect is committed at the other
-- side and the id pair is written back here. `seq` orders the changes of one record.
CREATE TABLE IF NOT EXISTS {{schema}}.outbox (
    seq             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity          text        NOT NULL,
    op              "char"      NOT NULL CHECK (op IN ('I', 'U', 'D')),
    key             jsonb,                  -- the record's key values, as a JSON array
    image           jsonb       NOT NULL,   -- the full row: after the change, before it for deletes
    captured_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,            -- NULL: now
    last_error      text,
    first_failed_at timestamptz,
    last_failed_at  timestamptz,
    suspended       boolean     NOT NULL DEFAULT false
);
-- Upgrades from versions without the key column.
ALTER TABLE {{schema}}.outbox ADD COLUMN IF NOT EXISTS key jsonb;
-- Captured while tandem applied a change here (a cascade or another trigger's effect of its
-- write): the consequence of a change already decided, which loses every conflict against a
-- change a user made. Added by upgrades too.
ALTER TABLE {{schema}}.outbox ADD COLUMN IF NOT EXISTS derived boolean NOT NULL DEFAULT false;
-- What is pending: a partial index in sequence order, so claiming stays an index scan.
CREATE INDEX IF NOT EXISTS outbox_pending ON {{schema}}.outbox (seq) WHERE NOT suspended;
-- Changes of one record: conflict detection, superseding suspended images, waiting children,
-- and a record's later changes in sequence order (folded into the batch that claims it).
CREATE INDEX IF NOT EXISTS outbox_record_seq ON {{schema}}.outbox (entity, key, seq);
DROP INDEX IF EXISTS {{schema}}.outbox_record;  -- before 0.2: (entity, key), now a prefix of the above
-- Suspended changes of one record: every write-back looks here for older images to supersede;
-- this small index answers "none" without probing the pending ones.
CREATE INDEX IF NOT EXISTS outbox_suspended ON {{schema}}.outbox (entity, key, seq) WHERE suspended;
-- Rows are inserted and soon deleted: vacuum early so the table stays small.
ALTER TABLE {{schema}}.outbox SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000);

-- One row per linked record: its key here and on the other side (JSON arrays as text, e.g.
-- [17] or ["X",2]), the newest sequence of the other side's outbox applied here (older or
-- equal changes are discarded), and a tombstone mark so a late update cannot revive a delete.
CREATE TABLE IF NOT EXISTS {{schema}}.id_map (
    entity      text        NOT NULL,
    a_key       text,
    b_key       text,
    applied_seq bigint      NOT NULL DEFAULT 0,
    deleted     boolean     NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (a_key IS NOT NULL OR b_key IS NOT NULL)
);
CREATE UNIQUE INDEX IF NOT EXISTS id_map_a ON {{schema}}.id_map (entity, a_key);
CREATE UNIQUE INDEX IF NOT EXISTS id_map_b ON {{schema}}.id_map (entity, b_key);
-- It grows by a row per new record: analyze it early so plans see its real size.
ALTER TABLE {{schema}}.id_map SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_scale_factor = 0.05);

-- Conflicts resolved here: a record changed on both sides before either change was applied.
-- Both sides end with the winner's values; the losing image is kept here for review.
CREATE TABLE IF NOT EXISTS {{schema}}.conflicts (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity         text        NOT NULL,
    incoming_side  text        NOT NULL,  -- 'A' or 'B': where the incoming change was captured
    incoming_key   text        NOT NULL,  -- the record's key there
    local_key      text,                  -- the record's key here
    policy         text        NOT NULL,
    winner         text        NOT NULL,  -- 'A' or 'B'
    incoming_op    "char"      NOT NULL,
    incoming_image jsonb,                 -- mapped to this side's columns
    local_op       "char"      NOT NULL,
    local_image    jsonb,
    resolved_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Backfill progress per entity copied from this side: the last row queued (its key resumes the
-- next run) and counts. Written in the same transaction as the queued chunk.
CREATE TABLE IF NOT EXISTS {{schema}}.backfill (
    entity      text        PRIMARY KEY,
    last_image  jsonb,
    rows_done   bigint      NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
);

-- The newest sequence of this outbox that tandem has begun to apply at the other side: one
-- row, raised once per batch (not per change) before the batch is applied. An insert at or
-- below it that never failed may be at the other side whatever reply comes back: the other
-- side's new record meeting it, linked to nothing, under its key given by values waits for
-- that reply instead of merging with it.
CREATE TABLE IF NOT EXISTS {{schema}}.sent_mark (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq bigint  NOT NULL
);
INSERT INTO {{schema}}.sent_mark (one, seq) VALUES (true, 0) ON CONFLICT (one) DO NOTHING;

-- What `install` recorded of each synchronised table, per entity reading it: its columns
-- (name, type, NOT NULL) and unique keys, as JSON. `run` and `check` compare the live catalog
-- with it (schema drift): a mapped column dropped, renamed or retyped pauses the entity until
-- the table matches again or `install` records it anew. Written by `install` after this script.
CREATE TABLE IF NOT EXISTS {{schema}}.fingerprint (
    entity      text        PRIMARY KEY,
    table_name  text        NOT NULL,
    fingerprint text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The generic capture trigger function: TG_ARGV[0] is the entity, TG_ARGV[1..] its key columns.
-- Triggers of older installs call it; `tandem install` now gives each table a capture function
-- of its own with the same behaviour, cheaper per row (sql/postgres/trigger.sql).
-- Tandem's own writes set tandem.applying (the oid of the one table it writes; 'on' in older
-- versions: every table) and are skipped at trigger depth 1; what they cause (cascades into
-- other tables at depth 1, the target's own triggers at greater depth) is captured, marked
-- `derived`, and flows back.
-- No NOTIFY: a notifying commit serialises all commits (tandem polls an indexed outbox).
CREATE OR REPLACE FUNCTION {{schema}}.capture() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    new_img jsonb;
    old_img jsonb;
    new_key jsonb := '[]';
    old_key jsonb := '[]';
    i integer;
    applying text := current_setting('tandem.applying', true);
    derived boolean := COALESCE(current_setting('tandem.applying', true), '') <> '';
BEGIN
    IF pg_trigger_depth() = 1 AND applying IN ('on', TG_RELID::text) THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_img := to_jsonb(NEW);
        FOR i IN 1 .. TG_NARGS - 1 LOOP
            new_key := new_key || jsonb_build_array(new_img -> TG_ARGV[i]);
        END LOOP;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_img := to_jsonb(OLD);
        FOR i IN 1 .. TG_NARGS - 1 LOOP
            old_key := old_key || jsonb_build_array(old_img -> TG_ARGV[i]);
        END LOOP;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {{schema}}.outbox (entity, op, key, image, derived) VALUES (TG_ARGV[0], 'I', new_key, new_img, derived);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {{schema}}.outbox (entity, op, key, image, derived) VALUES (TG_ARGV[0], 'D', old_key, old_img, derived);
    ELSIF new_img = old_img AND new_img::text = old_img::text THEN
        -- An update that changes nothing is not a change (text compare keeps 1.0 <> 1.00).
        NULL;
    ELSIF new_key IS DISTINCT FROM old_key THEN
        -- A key change travels as delete + insert.
        INSERT INTO {{schema}}.outbox (entity, op, key, image, derived)
        VALUES (TG_ARGV[0], 'D', old_key, old_img, derived), (TG_ARGV[0], 'I', new_key, new_img, derived);
    ELSE
        INSERT INTO {{schema}}.outbox (entity, op, key, image, derived) VALUES (TG_ARGV[0], 'U', new_key, new_img, derived);
    END IF;
    RETURN NULL;
END
$fn$;

-- Changes waiting for a retry, by record: a newer change of the record takes them along (see
-- claim_batch). Small: only failed changes are in it.
CREATE INDEX IF NOT EXISTS outbox_retrying ON {{schema}}.outbox (entity, key, seq)
    WHERE next_attempt_at IS NOT NULL AND NOT suspended;

-- The oldest eligible pending changes. `SET enable_seqscan = off` pins the index scan even
-- when statistics are stale (a fresh outbox looks empty to the planner).
CREATE OR REPLACE FUNCTION {{schema}}.pending(max_rows integer)
RETURNS SETOF {{schema}}.outbox
LANGUAGE sql STABLE SET enable_seqscan = off AS $fn$
    SELECT * FROM {{schema}}.outbox
    WHERE NOT suspended AND (next_attempt_at IS NULL OR next_attempt_at <= clock_timestamp())
    ORDER BY seq
    LIMIT max_rows
$fn$;
-- The same, leaving out the changes of entities paused by schema drift (`skip_entities`):
-- they stay pending, untried, while the rest flows.
CREATE OR REPLACE FUNCTION {{schema}}.pending(max_rows integer, skip_entities text[])
RETURNS SETOF {{schema}}.outbox
LANGUAGE sql STABLE SET enable_seqscan = off AS $fn$
    SELECT * FROM {{schema}}.outbox
    WHERE NOT suspended AND (next_attempt_at IS NULL OR next_attempt_at <= clock_timestamp())
      AND entity <> ALL(skip_entities)
    ORDER BY seq
    LIMIT max_rows
$fn$;

-- A batch: the oldest eligible pending changes after `after_seq` (the head), and, for the
-- records of the head whose entity is in `pull_entities`, their next changes when these are
-- plain fresh updates (a run of 'U' never tried, up to 16 a record, 4 * max_rows in all).
-- Full row images make the newest one of such a run the only one to apply: a backlog of many
-- updates of one record costs one apply (the lever a log-based replica does not have).
-- The run stops at the first insert, delete, retried or suspended change, so what is folded
-- in is always the record's very next changes and order within a record is kept.
-- A head record's older changes still waiting for a retry come along too (pulled): the
-- newest image carries them, with the op folded (an update after an insert that failed is
-- applied as that insert, not as an update after a delete; found by the simulation).
-- Each row comes with its record's key, so tandem groups a record's rows without reading
-- their images and decodes only the newest. (Sending only the newest image needs a sort of
-- the batch by record here, which cost more than the images it saved: measured.)
-- Entities in `skip_entities` (paused by schema drift) are left out of the head, and so
-- entirely: their changes stay pending, untried.
DROP FUNCTION IF EXISTS {{schema}}.claim_batch(integer, bigint, text[]);
DROP FUNCTION IF EXISTS {{schema}}.claim_batch(integer, bigint, text[], text[]);
CREATE FUNCTION {{schema}}.claim_batch(max_rows integer, after_seq bigint, pull_entities text[],
                                       skip_entities text[])
RETURNS TABLE (seq bigint, entity text, op text, image text, captured_at timestamptz,
               attempts integer, derived boolean, pulled boolean, key text)
LANGUAGE sql STABLE SET enable_seqscan = off AS $fn$
    WITH head AS MATERIALIZED (
        SELECT o.seq, o.entity, o.op, o.key, o.image, o.captured_at, o.attempts, o.derived
        FROM {{schema}}.outbox AS o
        WHERE NOT o.suspended AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= clock_timestamp())
          AND o.seq > after_seq AND o.entity <> ALL(skip_entities)
        ORDER BY o.seq
        LIMIT max_rows
    ), batch AS (
        SELECT h.seq, h.entity, h.op, h.key, h.image, h.captured_at, h.attempts, h.derived, false AS pulled
        FROM head AS h
        UNION ALL
        SELECT w.seq, w.entity, w.op, w.key, w.image, w.captured_at, w.attempts, w.derived, true
        FROM (SELECT h.entity, h.key, min(h.seq) AS first FROM head AS h
              WHERE h.key IS NOT NULL GROUP BY h.entity, h.key) AS r
        JOIN {{schema}}.outbox AS w
          ON w.entity = r.entity AND w.key = r.key AND w.seq < r.first
         AND w.next_attempt_at > clock_timestamp() AND NOT w.suspended
        UNION ALL
        (SELECT l.seq, l.entity, l.op, l.key, l.image, l.captured_at, l.attempts, l.derived, true
         FROM (SELECT DISTINCT h.entity, h.key FROM head AS h
               WHERE h.entity = ANY(pull_entities) AND h.key IS NOT NULL) AS r,
              (SELECT max(h.seq) AS s FROM head AS h) AS m,
              LATERAL (
                  SELECT x.* FROM (
                      SELECT o.seq, o.entity, o.op, o.key, o.image, o.captured_at, o.attempts, o.derived,
                             bool_and(o.op = 'U' AND NOT o.suspended AND o.attempts = 0)
                                 OVER (ORDER BY o.seq) AS fresh_run
                      FROM {{schema}}.outbox AS o
                      WHERE o.entity = r.entity AND o.key = r.key AND o.seq > m.s
                      ORDER BY o.seq
                      LIMIT 16
                  ) AS x
                  WHERE x.fresh_run
              ) AS l
         ORDER BY l.seq
         LIMIT 4 * max_rows)
    )
    SELECT b.seq, b.entity, b.op::text, b.image::text, b.captured_at, b.attempts, b.derived,
           b.pulled, b.key::text
    FROM batch AS b
$fn$;
-- The form of earlier versions (a running older tandem during an upgrade): nothing skipped.
CREATE FUNCTION {{schema}}.claim_batch(max_rows integer, after_seq bigint, pull_entities text[])
RETURNS TABLE (seq bigint, entity text, op text, image text, captured_at timestamptz,
               attempts integer, derived boolean, pulled boolean, key text)
LANGUAGE sql STABLE AS $fn$
    SELECT * FROM {{schema}}.claim_batch(max_rows, after_seq, pull_entities, '{}'::text[])
$fn$;
