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

-- name: links_by_own
SELECT {{own}}, {{peer}}, deleted FROM {{schema}}.id_map WHERE entity = $1 AND {{own}} = ANY($2);

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
