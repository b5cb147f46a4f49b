-- Tandem: the statements `tandem run` prepares at run time (PostgreSQL).
-- Each begins with `-- name:`. Placeholders: {{schema}}, {{table}} and column lists are
-- identifiers quoted for PostgreSQL; {{own}} / {{peer}} are `a_key` / `b_key` (this side's
-- key column in id_map and the other side's). Values always travel as parameters.
-- Row values arrive as one JSON object ($1) and are typed by jsonb_populate_record against
-- the table's own row type, so every column keeps its exact type (numeric scale, bytea,
-- timestamps with or without time zone).

-- name: claim
SELECT seq, entity, op::text, image::text, captured_at, attempts
FROM {{schema}}.pending($1);

-- name: link_by_peer
-- Applying a change from the other side: lock its link, read the newest applied sequence.
SELECT applied_seq, {{own}}, deleted FROM {{schema}}.id_map
WHERE entity = $1 AND {{peer}} = $2
FOR UPDATE;

-- name: ref_by_peer
SELECT {{own}}, deleted FROM {{schema}}.id_map WHERE entity = $1 AND {{peer}} = $2;

-- name: unlink_own
-- A link naming this record's key for another peer record is stale (the key was reused).
DELETE FROM {{schema}}.id_map WHERE entity = $1 AND {{own}} = $3 AND {{peer}} IS DISTINCT FROM $2;

-- name: link_applied
-- Written in the same transaction as the data: the sequence guard and the id pair.
INSERT INTO {{schema}}.id_map AS m (entity, {{peer}}, {{own}}, applied_seq, deleted)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (entity, {{peer}}) DO UPDATE
SET {{own}} = COALESCE(EXCLUDED.{{own}}, m.{{own}}),
    applied_seq = GREATEST(m.applied_seq, EXCLUDED.applied_seq),
    deleted = EXCLUDED.deleted,
    updated_at = clock_timestamp();

-- name: local_pending
-- Conflict detection: changes of this record captured here and not yet applied at the other
-- side (newer than the newest one the other side has applied), newest first.
SELECT seq, captured_at, op::text, image::text FROM {{schema}}.outbox
WHERE entity = $1 AND key = $2::text::jsonb AND NOT suspended AND seq > $3
ORDER BY seq DESC;

-- name: local_reinsert
-- The local change won over a delete from the other side: send it as an insert, so the record
-- is created again there.
UPDATE {{schema}}.outbox SET op = 'I' WHERE seq = $1;

-- name: conflict_log
INSERT INTO {{schema}}.conflicts
    (entity, incoming_side, incoming_key, local_key, policy, winner,
     incoming_op, incoming_image, local_op, local_image)
VALUES ($1, $2, $3, $4, $5, $6, $7::text::"char", $8::text::jsonb, $9::text::"char", $10::text::jsonb);

-- name: link_seen
-- A change that lost a conflict is settled: later copies of it are stale.
INSERT INTO {{schema}}.id_map AS m (entity, {{peer}}, {{own}}, applied_seq)
VALUES ($1, $2, $3, $4)
ON CONFLICT (entity, {{peer}}) DO UPDATE
SET applied_seq = GREATEST(m.applied_seq, EXCLUDED.applied_seq),
    {{own}} = COALESCE(m.{{own}}, EXCLUDED.{{own}}),
    updated_at = clock_timestamp();

-- name: supersede
-- A newer image of a record that was applied replaces its suspended older images.
DELETE FROM {{schema}}.outbox AS o
USING unnest($1::text[], $2::text[], $3::bigint[]) AS d(entity, key, seq)
WHERE o.suspended AND o.entity = d.entity AND o.key = d.key::jsonb AND o.seq < d.seq;

-- name: in_flight
-- Records with changes still in this outbox (pending or suspended).
SELECT DISTINCT key::text FROM {{schema}}.outbox
WHERE entity = $1 AND key = ANY($2::text[]::jsonb[]);

-- name: suspended_list
SELECT seq, entity, op::text, key::text, attempts, captured_at, first_failed_at, last_failed_at,
       last_error, image::text
FROM {{schema}}.outbox
WHERE suspended AND ($1::bigint IS NULL OR seq = $1)
ORDER BY seq
LIMIT $2;

-- name: resubmit
UPDATE {{schema}}.outbox
SET suspended = false, attempts = 0, next_attempt_at = NULL
WHERE suspended AND ($1::bigint IS NULL OR seq = $1);

-- name: discard
DELETE FROM {{schema}}.outbox WHERE suspended AND seq = $1;

-- name: status_conflicts
SELECT entity, count(*) FROM {{schema}}.conflicts GROUP BY entity;

-- name: links_by_own
SELECT {{own}}, {{peer}}, deleted, applied_seq FROM {{schema}}.id_map
WHERE entity = $1 AND {{own}} = ANY($2);

-- name: unlink_peer
DELETE FROM {{schema}}.id_map WHERE entity = $1 AND {{peer}} = $3 AND {{own}} IS DISTINCT FROM $2;

-- name: link_written_back
-- Write-back at the side a change came from, after the other side committed it.
INSERT INTO {{schema}}.id_map AS m (entity, {{own}}, {{peer}}, deleted)
VALUES ($1, $2, $3, $4)
ON CONFLICT (entity, {{own}}) DO UPDATE
SET {{peer}} = COALESCE(EXCLUDED.{{peer}}, m.{{peer}}),
    deleted = EXCLUDED.deleted,
    updated_at = clock_timestamp();

-- name: done
DELETE FROM {{schema}}.outbox WHERE seq = ANY($1);

-- name: failed
UPDATE {{schema}}.outbox
SET attempts = attempts + 1,
    next_attempt_at = clock_timestamp() + ($2::float8) * interval '1 millisecond',
    last_error = $3,
    first_failed_at = COALESCE(first_failed_at, clock_timestamp()),
    last_failed_at = clock_timestamp(),
    suspended = $4
WHERE seq = ANY($1);

-- name: status_outbox
SELECT entity,
       count(*) FILTER (WHERE NOT suspended),
       count(*) FILTER (WHERE suspended),
       min(captured_at) FILTER (WHERE NOT suspended)
FROM {{schema}}.outbox GROUP BY entity;

-- name: status_links
SELECT entity, count(*) FROM {{schema}}.id_map WHERE NOT deleted GROUP BY entity;

-- name: install_state
SELECT to_regclass({{schema_ident_lit}} || '.outbox') IS NOT NULL
   AND to_regclass({{schema_ident_lit}} || '.id_map') IS NOT NULL
   AND to_regprocedure({{schema_ident_lit}} || '.capture()') IS NOT NULL,
       (SELECT count(*) FROM pg_trigger
        WHERE tgname = 'tandem_capture'
          AND tgfoid = to_regprocedure({{schema_ident_lit}} || '.capture()'));

-- name: table_columns
-- For `tandem check`: the table's columns, whether each has a default (or identity), and
-- every unique or primary key index as a list of column names.
SELECT a.attname,
       format_type(a.atttypid, a.atttypmod),
       (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '')
FROM pg_attribute a
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;

-- name: table_unique_keys
SELECT array_agg(a.attname ORDER BY a.attname)::text[]
FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL
GROUP BY i.indexrelid;

-- name: table_exists
SELECT to_regclass($1) IS NOT NULL;

-- Per entity (filled with the entity's table and columns):

-- name: row_lock
SELECT jsonb_build_array({{t_key}})::text
FROM {{table}} AS t, jsonb_populate_record(NULL::{{table}}, $1::text::jsonb) AS r
WHERE ({{t_key}}) = ({{r_key}})
FOR UPDATE OF t;

-- name: row_update
-- Writes nothing when the row already holds these values (no echo, no empty updates).
UPDATE {{table}} AS t SET {{set_list}}
FROM jsonb_populate_record(NULL::{{table}}, $1::text::jsonb) AS r
WHERE ({{t_key}}) = ({{r_key}})
  AND ({{t_cols_text}}) IS DISTINCT FROM ({{r_cols_text}});

-- name: row_insert
INSERT INTO {{table}} ({{cols}}) OVERRIDING SYSTEM VALUE
SELECT {{r_cols}} FROM jsonb_populate_record(NULL::{{table}}, $1::text::jsonb) AS r
RETURNING jsonb_build_array({{key}})::text;

-- name: row_delete
DELETE FROM {{table}} AS t
USING jsonb_populate_record(NULL::{{table}}, $1::text::jsonb) AS r
WHERE ({{t_key}}) = ({{r_key}});

-- name: peer_update
-- Fills the table's peer_id_column with the other side's key.
UPDATE {{table}} AS t SET {{peer_col}} = r.{{peer_col}}
FROM jsonb_populate_record(NULL::{{table}}, $1::text::jsonb) AS r
WHERE ({{t_key}}) = ({{r_key}})
  AND t.{{peer_col}}::text IS DISTINCT FROM r.{{peer_col}}::text;
