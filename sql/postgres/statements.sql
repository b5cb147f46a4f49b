-- Tandem: the statements `tandem run` prepares at run time (PostgreSQL).
-- Each begins with `-- name:`. Placeholders: {{schema}}, {{table}} and column lists are
-- identifiers quoted for PostgreSQL; {{own}} / {{peer}} are `a_key` / `b_key` (this side's
-- key column in id_map and the other side's). Values always travel as parameters.
-- Row values arrive as one JSON object ($1) and are typed by jsonb_populate_record against
-- the table's own row type, so every column keeps its exact type (numeric scale, bytea,
-- timestamps with or without time zone).

-- name: mark_table
-- Tandem is about to write this table ($1): the capture trigger skips tandem's writes to it
-- (see install.sql), and captures what they cause in other tables (an ON DELETE CASCADE runs
-- at trigger depth 1 too) marked `derived`: the consequence of a change already decided,
-- which loses every conflict against a user's change (apply.rs, resolve_conflict).
-- tandem.entity names the entity ($2) written for: on a table several entities read, the
-- others capture the write, derived too (sql/postgres/trigger.sql).
SELECT set_config('tandem.applying', $1::text::regclass::oid::text, true),
       set_config('tandem.entity', $2, true);

-- name: claim
-- $1 rows, none of the entities in $2 (paused by schema drift).
SELECT seq, entity, op::text, image::text, captured_at, attempts, derived
FROM {{schema}}.pending($1, $2);

-- name: claim_batch
-- $1 rows after sequence $2, and later plain updates of their records for entities $3; none
-- of the entities in $4 (paused by schema drift).
SELECT seq, entity, op, image, captured_at, attempts, derived, pulled, key
FROM {{schema}}.claim_batch($1, $2, $3, $4);

-- name: fingerprint_save
-- `install` records what it saw of an entity's table ($3: JSON), for drift detection.
INSERT INTO {{schema}}.fingerprint (entity, table_name, fingerprint) VALUES ($1, $2, $3)
ON CONFLICT (entity) DO UPDATE
SET table_name = EXCLUDED.table_name, fingerprint = EXCLUDED.fingerprint,
    recorded_at = clock_timestamp();

-- name: fingerprint_list
-- What `install` recorded, per entity (the table is missing before the first install of a
-- version that records fingerprints: tandem reads that as "nothing recorded").
SELECT entity, table_name, fingerprint FROM {{schema}}.fingerprint;

-- name: record_lock
-- Applying a change from the other side: first lock the record (a transaction-scoped advisory
-- lock on entity and key), so even a record without a link yet is applied by one transaction
-- at a time.
SELECT pg_advisory_xact_lock(hashtext('tandem apply'), hashtext($1 || ' ' || $2));

-- name: link_by_peer
-- Then its link, locked, with the newest applied sequence.
SELECT applied_seq, {{own}}, deleted FROM {{schema}}.id_map
WHERE entity = $1 AND {{peer}} = $2
FOR UPDATE;

-- name: ref_by_peer
-- A parent's link, and whether a delete of its row here is captured and not settled yet: then
-- the parent was deleted here (its delete is on its way), and a row at its key now is another
-- record, created again under a key given by values.
SELECT m.{{own}}, m.deleted, m.applied_seq,
       EXISTS (SELECT 1 FROM {{schema}}.outbox AS o
               WHERE o.entity = $1 AND o.key = m.{{own}}::jsonb AND o.op = 'D' AND NOT o.suspended)
FROM {{schema}}.id_map AS m WHERE m.entity = $1 AND m.{{peer}} = $2;

-- name: unlink_own
-- A link naming this record's key for another peer record is stale (the key was reused, or
-- the record came back there under another key): that peer record loses its key here and
-- becomes a tombstone, keeping its sequence guard, so a late change of it is still
-- recognised as old, and the link no longer counts as live (left live, it outlived its
-- records at both sides: found by the simulation's full workload, seed 9114).
WITH gone AS (
    DELETE FROM {{schema}}.id_map
    WHERE entity = $1 AND {{own}} = $3 AND {{peer}} IS NULL
)
UPDATE {{schema}}.id_map SET {{own}} = NULL, deleted = true, updated_at = clock_timestamp()
WHERE entity = $1 AND {{own}} = $3 AND {{peer}} IS NOT NULL AND {{peer}} <> $2;

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
SELECT seq, captured_at, op::text, image::text, derived FROM {{schema}}.outbox
WHERE entity = $1 AND key = $2::text::jsonb AND NOT suspended AND seq > $3
ORDER BY seq DESC;

-- name: settle_moot
-- Changes of records a delete from the other side has just removed here ($2: their keys) that
-- can decide nothing any more: suspended ones (the records were gone there already), pending
-- updates that the other side's guard counts as seen ($3: per key) before it deleted the
-- record (one failed there, its parent gone, until it was parked: found by the simulation's
-- full workload, seed 64491), and creations and updates older than a delete pending here (the
-- record is deleted at both sides; travelling without that delete, they created it again
-- there: seed 2496 of the variant without key changes at A). Moot, settled in the delete's
-- transaction instead of left for an operator who could do nothing with them. The apply logs
-- their sequences.
DELETE FROM {{schema}}.outbox AS o
USING unnest($2::text[], $3::bigint[]) AS x(k, after)
WHERE o.entity = $1 AND o.key = x.k::jsonb
  AND (o.suspended OR (o.op = 'U' AND o.seq <= x.after)
       OR (o.op <> 'D'
           AND o.seq < (SELECT max(d.seq) FROM {{schema}}.outbox AS d
                        WHERE d.entity = o.entity AND d.key = o.key AND d.op = 'D'
                          AND NOT d.suspended)))
RETURNING o.key::text, o.seq;

-- name: local_reinsert
-- The local changes won over a delete from the other side: send them as inserts, so the record
-- is created again there (all of them: an older one arriving there as an update would be
-- discarded as an update after that delete). They travel as new changes, in their order, with
-- their capture times: a copy of one claimed before this conflict may be on its way as an
-- update still, and its reply must find its row gone (`settled_now`: a late reply changes
-- nothing) instead of settling the insert it has become (found by the fault suite's full
-- workload, seed 5517: the update was discarded after the delete, and the record stayed at
-- this side only). Their retry state stays theirs.
WITH moved AS (
    DELETE FROM {{schema}}.outbox WHERE seq = ANY($1)
    RETURNING seq, entity, op, key, image, captured_at, derived, attempts, next_attempt_at,
              last_error, first_failed_at, last_failed_at
)
INSERT INTO {{schema}}.outbox (entity, op, key, image, captured_at, derived, attempts,
                               next_attempt_at, last_error, first_failed_at, last_failed_at)
SELECT entity, CASE WHEN op = 'U' THEN 'I' ELSE op END, key, image, captured_at, derived,
       attempts, next_attempt_at, last_error, first_failed_at, last_failed_at
FROM moved ORDER BY seq;

-- name: local_redelete
-- The local delete ($1) beat the other side's change of a record not linked here (it landed
-- on this key): it travels again, as a new change with its capture time (a copy may have
-- reached the other side before that record was linked there, and settled on nothing).
INSERT INTO {{schema}}.outbox (entity, op, key, image, captured_at, derived)
SELECT entity, op, key, image, captured_at, derived FROM {{schema}}.outbox WHERE seq = $1;

-- name: conflict_log
INSERT INTO {{schema}}.conflicts
    (entity, incoming_side, incoming_key, local_key, policy, winner,
     incoming_op, incoming_image, local_op, local_image)
VALUES ($1, $2, $3, $4, $5, $6, $7::text::"char", $8::text::jsonb, $9::text::"char", $10::text::jsonb);

-- name: link_seen
-- A change that lost a conflict is settled: later copies of it are stale. A lost delete ($5)
-- still deleted the record at the other side: the link is a tombstone (the winning record
-- here travels as an insert and is linked to the new record it creates there). $6: a record
-- the other side moved to a key given here that a local record holds, whose old row is gone
-- here, lands on that record: the link names it.
INSERT INTO {{schema}}.id_map AS m (entity, {{peer}}, {{own}}, applied_seq, deleted)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (entity, {{peer}}) DO UPDATE
SET applied_seq = GREATEST(m.applied_seq, EXCLUDED.applied_seq),
    {{own}} = CASE WHEN $6::bool THEN EXCLUDED.{{own}} ELSE COALESCE(m.{{own}}, EXCLUDED.{{own}}) END,
    deleted = m.deleted OR EXCLUDED.deleted,
    updated_at = clock_timestamp();

-- name: supersede
-- A newer image of a record that was settled replaces its older images, suspended or still
-- waiting for a retry: images are full rows, so applied later they would be stale, and left
-- pending they would count as changes of the record here in conflict detection (found by the
-- simulation: an insert deleted again before it could be applied won a conflict against a
-- record the other side created with the same key).
DELETE FROM {{schema}}.outbox AS o
USING unnest($1::text[], $2::text[], $3::bigint[]) AS d(entity, key, seq)
WHERE o.entity = d.entity AND o.key = d.key::jsonb AND o.seq < d.seq;

-- name: mark_sent
-- A batch is about to be applied at the other side: the sent mark rises to its newest change
-- of a record whose key this side gives by values ($1). One row, once per batch; it never goes
-- down. Those of its changes that failed before ($2) are sent again: their retry time is
-- cleared (a failure sets it), so they count as sent with no failure since.
WITH resent AS (
    UPDATE {{schema}}.outbox SET next_attempt_at = NULL
    WHERE seq = ANY($2::bigint[]) AND attempts > 0
)
UPDATE {{schema}}.sent_mark SET seq = $1 WHERE seq < $1;

-- name: own_pending_sent
-- This side's changes of a record ($1 entity, $2 key) still here, oldest first: each one's op,
-- and whether it was sent to the other side with no failure since (at or below the sent mark,
-- never failed or sent again since: mark_sent clears the retry time): such an insert's record
-- may be there whatever reply comes back (so may an update's after a pending insert: it
-- travels as that insert when the insert failed earlier in its burst), and such a delete may
-- have removed it there, or come with the insert as one change that created nothing.
SELECT o.op::text, (o.attempts = 0 OR o.next_attempt_at IS NULL) AND o.seq <= m.seq
FROM {{schema}}.outbox AS o, {{schema}}.sent_mark AS m
WHERE o.entity = $1 AND o.key = $2::text::jsonb AND NOT o.suspended
ORDER BY o.seq;

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
-- One index probe per key, forced by the LATERAL: as `= ANY($2)` or a plain join, the planner
-- scanned the entity's whole id_map instead (a plan chosen while id_map was nearly empty, or
-- a hash join it thought cheaper: 11-34 ms a call at 100k links, measured).
SELECT m.{{own}}, m.{{peer}}, m.deleted, m.applied_seq, m.updated_at
FROM unnest($2::text[]) AS k(key)
CROSS JOIN LATERAL (
    SELECT * FROM {{schema}}.id_map AS i WHERE i.entity = $1 AND i.{{own}} = k.key LIMIT 1
) AS m;

-- name: unlink_peer
-- As unlink_own, the other way round: another record of this side linked to the same peer
-- loses its peer and keeps its guard. (A guard row of the peer without a record here is
-- merged into the new link by link_written_back.) And this record's link to another peer is
-- retired, not overwritten: that peer was replaced at the other side (a record deleted there
-- and created again under a new generated key), and its row keeps its guard as a tombstone,
-- so a late copy of its changes is still recognised (found by the simulation).
-- $4: the write-back is of a delete. It changes nothing when a live record here holds the
-- peer: the other side created the record again under that given key, that creation has
-- already reached this side, and the link names the new record (link_written_back then writes
-- the tombstone without the peer; found by the fault suite's full workload).
WITH held AS (
    SELECT 1 FROM {{schema}}.id_map
    WHERE $4::bool AND entity = $1 AND {{peer}} = $3 AND {{own}} IS NOT NULL AND {{own}} <> $2
      AND NOT deleted
), retired AS (
    UPDATE {{schema}}.id_map SET {{own}} = NULL, deleted = true, updated_at = clock_timestamp()
    WHERE entity = $1 AND {{own}} = $2 AND {{peer}} IS NOT NULL AND {{peer}} <> $3
      AND NOT EXISTS (SELECT 1 FROM held)
), stolen AS (
    UPDATE {{schema}}.id_map SET {{peer}} = NULL, updated_at = clock_timestamp()
    WHERE entity = $1 AND {{peer}} = $3 AND {{own}} IS NOT NULL AND {{own}} <> $2
      AND NOT EXISTS (SELECT 1 FROM held)
    RETURNING {{own}} AS own, deleted
)
-- The live records that lost the peer (see drop_duplicate).
SELECT own FROM stolen WHERE NOT deleted;

-- name: link_written_back
-- Write-back at the side a change came from, after the other side committed it. A link of
-- the peer with no record here (written when its changes were applied here, e.g. the delete of
-- a record this side never had) holds the guard of the peer's changes: it is merged into this
-- link, so a late copy of an older change of the peer is still recognised as old (found by
-- the simulation: a record re-created with the same given key lost its guard and an older
-- insert was applied again). $5: the peer's changes up to this sequence lost a conflict there;
-- a copy of one still on its way here is stale, so the guard rises to it. A delete's
-- write-back leaves the peer to a live record here that holds it (see unlink_peer).
WITH gone AS (
    DELETE FROM {{schema}}.id_map
    WHERE entity = $1 AND {{peer}} = $3 AND {{own}} IS NULL
    RETURNING applied_seq
), held AS (
    SELECT 1 FROM {{schema}}.id_map
    WHERE $4::bool AND entity = $1 AND {{peer}} = $3 AND {{own}} IS NOT NULL AND {{own}} <> $2
      AND NOT deleted
)
INSERT INTO {{schema}}.id_map AS m (entity, {{own}}, {{peer}}, deleted, applied_seq)
VALUES ($1, $2, CASE WHEN EXISTS (SELECT 1 FROM held) THEN NULL ELSE $3::text END, $4,
        GREATEST(COALESCE((SELECT max(applied_seq) FROM gone), 0), $5::int8))
ON CONFLICT (entity, {{own}}) DO UPDATE
SET {{peer}} = COALESCE(EXCLUDED.{{peer}}, m.{{peer}}),
    deleted = EXCLUDED.deleted,
    applied_seq = GREATEST(m.applied_seq, EXCLUDED.applied_seq),
    updated_at = clock_timestamp();

-- name: retire_unpeered
-- A link here that lost its peer to another record here in this write-back (unlink_peer),
-- whose record is gone here (the caller read its row) and has no change pending here, is a
-- tombstone: a delete of it lost at the other side and left it live for the winner to come
-- back, but the winner came back under another key, and took the peer there (found by the
-- simulation's full workload, seed 38559: the link stayed live, naming no record). It keeps
-- its guard.
UPDATE {{schema}}.id_map SET deleted = true, updated_at = clock_timestamp()
WHERE entity = $1 AND {{own}} = $2 AND {{peer}} IS NULL AND NOT deleted
  AND NOT EXISTS (SELECT 1 FROM {{schema}}.outbox WHERE entity = $1 AND key = $2::text::jsonb);

-- name: repoint_link
-- A stale report for a record whose row here is gone (its delete is on its way, or lost a
-- conflict) names the record the other side holds now: a live link of the record to another
-- peer (one the other side has since replaced, whose reply was lost) names the new one, unless
-- a link here already holds it. Neither revives the link nor takes the peer from another link:
-- the other side's delete of that record must find the link (found by the simulation, seed
-- 353185).
-- Returns the peer it replaced and the link's guard: peer_tombstone keeps that guard under the
-- old peer, so a late copy of a change of the old peer's key is still recognised (found by the
-- simulation's full workload, seed 44713: a creation whose reply was lost came again after the
-- record had moved there, and was created a second time).
UPDATE {{schema}}.id_map AS m SET {{peer}} = $3, updated_at = clock_timestamp()
FROM {{schema}}.id_map AS was
WHERE m.entity = $1 AND m.{{own}} = $2 AND NOT m.deleted AND m.{{peer}} IS NOT NULL
  AND m.{{peer}} <> $3
  AND NOT EXISTS (SELECT 1 FROM {{schema}}.id_map AS o WHERE o.entity = $1 AND o.{{peer}} = $3)
  AND was.entity = m.entity AND was.{{own}} = m.{{own}}
RETURNING was.{{peer}} AS old_peer, m.applied_seq;

-- name: born_again
-- A stale report of a creation or update older than a creation of its key still pending here
-- ($3: the change's sequence), with no delete of the key pending between them, is of a record
-- that left the key before (moved by the other side's change): the row there now is another
-- record, and the report leaves its link as it is (found by the simulation's variant without
-- key changes at A, seed 111365: the report took the peer from the moved record, which was
-- then deleted at the other side). A delete pending between them still needs the link to reach
-- that record there, and a stale delete names the record the other side applied after it
-- (default workload, seed 635583).
SELECT NOT EXISTS (SELECT 1 FROM {{schema}}.outbox WHERE seq = $3 AND op = 'D')
   AND (SELECT n.op = 'I' FROM {{schema}}.outbox AS n
        WHERE n.entity = $1 AND n.key = $2::text::jsonb AND n.seq > $3 AND n.op <> 'U'
        ORDER BY n.seq LIMIT 1) IS TRUE;

-- name: peer_tombstone
-- The guard of a peer a link no longer names (repoint_link), as a tombstone with no record here.
INSERT INTO {{schema}}.id_map (entity, {{own}}, {{peer}}, applied_seq, deleted)
VALUES ($1, NULL, $2, $3, true)
ON CONFLICT DO NOTHING;

-- name: settled_now
-- The outbox rows a write-back settles that are still here, locked. A change whose rows are
-- gone was settled meanwhile by the write-back of an instance that took over while this one
-- lost its lease (it claimed the change again, or a newer one of the record): this reply is
-- late and changes nothing (found by the simulation with lost leases). Locked, so of two
-- write-backs of one change, the second waits and then finds it settled.
SELECT seq FROM {{schema}}.outbox WHERE seq = ANY($1) ORDER BY seq FOR UPDATE;

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

-- Set-based apply: a wave of changes of one entity in a handful of statements. Arrays
-- travel as parameters; the changes of a wave have distinct keys (they are coalesced).

-- name: wave_record_locks
-- The same per-record locks as record_lock, for every record of the wave, in key order.
SELECT count(*) FROM (
    SELECT pg_advisory_xact_lock(hashtext('tandem apply'), hashtext($1 || ' ' || k))
    FROM (SELECT k FROM unnest($2::text[]) AS k ORDER BY k) AS keys
) AS locked;

-- name: wave_links
-- One index probe per key (see links_by_own), each link locked.
SELECT m.{{peer}}, m.applied_seq, m.{{own}}, m.deleted
FROM unnest($2::text[]) AS k(key)
CROSS JOIN LATERAL (
    SELECT * FROM {{schema}}.id_map AS i WHERE i.entity = $1 AND i.{{peer}} = k.key
    LIMIT 1 FOR UPDATE
) AS m;

-- name: wave_parent_links
-- As ref_by_peer, for a wave's parents.
SELECT m.{{peer}}, m.{{own}}, m.deleted, m.applied_seq,
       EXISTS (SELECT 1 FROM {{schema}}.outbox AS o
               WHERE o.entity = $1 AND o.key = m.{{own}}::jsonb AND o.op = 'D' AND NOT o.suspended)
FROM unnest($2::text[]) AS k(key)
CROSS JOIN LATERAL (
    SELECT * FROM {{schema}}.id_map AS i WHERE i.entity = $1 AND i.{{peer}} = k.key LIMIT 1
) AS m;

-- name: wave_local_pending
-- Any change of these records captured here and newer than what the other side applied.
SELECT x.k
FROM unnest($2::text[], $3::bigint[]) AS x(k, after)
WHERE EXISTS (
    SELECT 1 FROM {{schema}}.outbox AS o
    WHERE o.entity = $1 AND o.key = x.k::jsonb AND NOT o.suspended AND o.seq > x.after
);

-- name: wave_link_applied
INSERT INTO {{schema}}.id_map AS m (entity, {{peer}}, {{own}}, applied_seq, deleted)
SELECT $1, x.src, x.own, x.seq, x.deleted
FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bool[]) AS x(src, own, seq, deleted)
ON CONFLICT (entity, {{peer}}) DO UPDATE
SET {{own}} = COALESCE(EXCLUDED.{{own}}, m.{{own}}),
    applied_seq = GREATEST(m.applied_seq, EXCLUDED.applied_seq),
    deleted = EXCLUDED.deleted,
    updated_at = clock_timestamp();

-- name: wave_link_written_back
-- The common case in one statement: a link whose peer would change (the other side replaced
-- the record) is left out (the WHERE), and the caller, seeing fewer rows than links, takes
-- the careful path, which retires the old peer's link (unlink_peer); so is a link that would
-- come back from a tombstone (see the last condition). $5: as in link_written_back.
INSERT INTO {{schema}}.id_map AS m (entity, {{own}}, {{peer}}, deleted, applied_seq)
SELECT x.entity, x.own, x.peer, x.deleted, x.guard
FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::int8[])
    AS x(entity, own, peer, deleted, guard)
ON CONFLICT (entity, {{own}}) DO UPDATE
SET {{peer}} = COALESCE(EXCLUDED.{{peer}}, m.{{peer}}),
    deleted = EXCLUDED.deleted,
    applied_seq = GREATEST(m.applied_seq, EXCLUDED.applied_seq),
    updated_at = clock_timestamp()
WHERE (m.{{peer}} IS NULL OR EXCLUDED.{{peer}} IS NULL OR m.{{peer}} = EXCLUDED.{{peer}})
  -- A reply that would revive a tombstone is left to the careful path too: it revives it only
  -- while the record's row is here (a late reply after the record's delete must not).
  AND NOT (m.deleted AND NOT EXCLUDED.deleted);

-- name: status_outbox
SELECT entity,
       count(*) FILTER (WHERE NOT suspended),
       count(*) FILTER (WHERE suspended),
       min(captured_at) FILTER (WHERE NOT suspended)
FROM {{schema}}.outbox GROUP BY entity;

-- name: status_links
SELECT entity, count(*) FROM {{schema}}.id_map
WHERE NOT deleted AND a_key IS NOT NULL AND b_key IS NOT NULL
GROUP BY entity;

-- name: install_state
SELECT to_regclass({{schema_ident_lit}} || '.outbox') IS NOT NULL
   AND to_regclass({{schema_ident_lit}} || '.id_map') IS NOT NULL
   AND to_regprocedure({{schema_ident_lit}} || '.capture()') IS NOT NULL,
       -- Capture triggers: each calls capture_<table>() (capture() on older installs), which
       -- live in tandem's schema.
       (SELECT count(*) FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
        WHERE tg.tgname = 'tandem_capture'
          AND p.pronamespace = to_regnamespace({{schema_ident_lit}})),
       -- The form install recorded (install_end.sql); none on installs older than the mark.
       obj_description(to_regclass({{schema_ident_lit}} || '.outbox'), 'pg_class');

-- name: table_columns
-- For `tandem check`: the table's columns, whether each has a default (or identity), whether
-- it refuses NULL, and every unique or primary key index as a list of column names.
SELECT a.attname,
       format_type(a.atttypid, a.atttypmod),
       (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''),
       a.attnotnull
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

-- name: sequence_exists
-- For `check`: does the sequence a `key_from` names exist ($1: its quoted name)?
SELECT EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass($1) AND relkind = 'S');

-- name: backfill_get
SELECT last_image::text, rows_done, finished_at IS NOT NULL FROM {{schema}}.backfill WHERE entity = $1;

-- name: backfill_reset
DELETE FROM {{schema}}.backfill WHERE entity = $1;

-- name: backfill_progress
INSERT INTO {{schema}}.backfill AS b (entity, last_image, rows_done, finished_at)
VALUES ($1, $2::text::jsonb, $3, CASE WHEN $4 THEN clock_timestamp() END)
ON CONFLICT (entity) DO UPDATE
SET last_image = COALESCE(EXCLUDED.last_image, b.last_image),
    rows_done = b.rows_done + EXCLUDED.rows_done,
    updated_at = clock_timestamp(),
    finished_at = EXCLUDED.finished_at;

-- name: pending_between
-- Queued rows in a range: eligible now, waiting for a retry, suspended.
SELECT count(*) FILTER (WHERE NOT suspended AND (next_attempt_at IS NULL OR next_attempt_at <= clock_timestamp())),
       count(*) FILTER (WHERE NOT suspended AND next_attempt_at > clock_timestamp()),
       count(*) FILTER (WHERE suspended)
FROM {{schema}}.outbox WHERE seq BETWEEN $1 AND $2;

-- name: link_mark_deleted
UPDATE {{schema}}.id_map SET deleted = true, updated_at = clock_timestamp()
WHERE entity = $1 AND {{own}} = $2;

-- Per entity (filled with the entity's table and columns):

-- name: row_lock
SELECT jsonb_build_array({{t_key}})::text
FROM {{table}} AS t, jsonb_populate_record(NULL::{{table}}, $1::text::jsonb) AS r
WHERE ({{t_key}}) = ({{r_key}})
FOR UPDATE OF t;

-- name: natural_holder
-- The row here, other than the record's own ($1 carries its key, none for a record new here),
-- that holds the incoming values of the other side's key (a natural unique key here, where
-- this side draws its own keys), locked: a record this side created under the same values
-- while the incoming one was created or moved onto them (`lands_on_new_local` in apply.rs).
SELECT jsonb_build_array({{t_key}})::text
FROM {{table}} AS t, jsonb_populate_record(NULL::{{table}}, $1::text::jsonb) AS r
WHERE ({{t_natural}}) = ({{r_natural}}) AND ({{t_key}}) IS DISTINCT FROM ({{r_key}})
FOR UPDATE OF t;

-- name: holds_natural
-- The record's row ($1 carries its key), locked, and whether it holds the incoming values of
-- the other side's key (a natural unique key here, where this side draws its own keys): no
-- row when it is gone. A link here naming a row that does not hold them is older than the
-- record's move at this side (`moved_away` in apply.rs).
SELECT ({{t_natural}}) IS NOT DISTINCT FROM ({{r_natural}})
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

-- name: row_soft_delete
-- `soft_delete` at this side: a delete marks the row ({{soft_set}}: the time, or the flag's
-- deleted value from the payload) rather than deleting it; a row marked already is left as it is.
UPDATE {{table}} AS t SET {{soft_set}}
FROM jsonb_populate_record(NULL::{{table}}, $1::text::jsonb) AS r
WHERE ({{t_key}}) = ({{r_key}})
  AND {{soft_live}};

-- name: peer_update
-- Fills the table's peer_id_column with the other side's key.
UPDATE {{table}} AS t SET {{peer_col}} = r.{{peer_col}}
FROM jsonb_populate_record(NULL::{{table}}, $1::text::jsonb) AS r
WHERE ({{t_key}}) = ({{r_key}})
  AND t.{{peer_col}}::text IS DISTINCT FROM r.{{peer_col}}::text;

-- name: wave_row_locks
-- Which of these rows exist, locked ($1: a JSON array of objects holding the key columns).
SELECT jsonb_build_array({{t_key}})::text
FROM {{table}} AS t
JOIN jsonb_populate_recordset(NULL::{{table}}, $1::text::jsonb) AS r ON ({{t_key}}) = ({{r_key}})
ORDER BY {{t_key}}
FOR UPDATE OF t;

-- name: wave_update
-- Returns the keys of the rows it changed: the others already held these values.
UPDATE {{table}} AS t SET {{set_list}}
FROM jsonb_populate_recordset(NULL::{{table}}, $1::text::jsonb) AS r
WHERE ({{t_key}}) = ({{r_key}})
  AND ({{t_cols_text}}) IS DISTINCT FROM ({{r_cols_text}})
RETURNING jsonb_build_array({{t_key}})::text;

-- name: wave_insert
INSERT INTO {{table}} ({{insert_cols}}) OVERRIDING SYSTEM VALUE
SELECT {{r_insert_cols}} FROM jsonb_populate_recordset(NULL::{{table}}, $1::text::jsonb) AS r
RETURNING jsonb_build_array({{key}})::text;

-- name: wave_delete
DELETE FROM {{table}} AS t
USING jsonb_populate_recordset(NULL::{{table}}, $1::text::jsonb) AS r
WHERE ({{t_key}}) = ({{r_key}})
RETURNING jsonb_build_array({{t_key}})::text;

-- name: wave_soft_delete
-- `soft_delete` at this side, set-based (see row_soft_delete): the keys of the rows it marked.
UPDATE {{table}} AS t SET {{soft_set}}
FROM jsonb_populate_recordset(NULL::{{table}}, $1::text::jsonb) AS r
WHERE ({{t_key}}) = ({{r_key}})
  AND {{soft_live}}
RETURNING jsonb_build_array({{t_key}})::text;

-- name: key_default
-- How this side makes a new key (a generated, single-column key): its sequence, or its
-- default expression, to draw the keys of a wave of inserts in one statement. Drawing from
-- a sequence directly needs USAGE on it (an identity column does not when it fills itself):
-- without it, nothing is returned and inserts go one at a time.
SELECT CASE WHEN has_sequence_privilege(x.s, 'USAGE') THEN x.s END,
       CASE WHEN x.s IS NULL THEN
           (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef AS d
            JOIN pg_attribute AS a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
            WHERE d.adrelid = to_regclass({{table_lit}}) AND a.attname = {{key_lit}})
       END
FROM (SELECT pg_get_serial_sequence({{table_lit}}, {{key_lit}}) AS s) AS x;

-- name: key_from_sequence
-- key_from = "sequence NAME": $1 new keys for records tandem creates here.
SELECT to_jsonb(nextval({{sequence_lit}}::regclass))::text FROM generate_series(1, $1::int);

-- name: key_from_max_lock
-- key_from = "max+1": the table is locked against other writers (plain reads go on) until the
-- batch commits, so a legacy application numbering with max+1 too waits rather than collides.
LOCK TABLE {{table}} IN EXCLUSIVE MODE;

-- name: key_from_max
-- key_from = "max+1": $1 new keys after the largest (under key_from_max_lock).
SELECT to_jsonb(coalesce((SELECT max({{key}}) FROM {{table}}), 0) + g)::text
FROM generate_series(1, $1::int) AS g;

-- name: wave_peer_update
-- Write-back, set-based: the peer_id_column of many rows ($1: JSON array of key + peer).
UPDATE {{table}} AS t SET {{peer_col}} = r.{{peer_col}}
FROM jsonb_populate_recordset(NULL::{{table}}, $1::text::jsonb) AS r
WHERE ({{t_key}}) = ({{r_key}})
  AND t.{{peer_col}}::text IS DISTINCT FROM r.{{peer_col}}::text;

-- name: row_count
SELECT count(*) FROM {{table}} AS t WHERE {{visible}};

-- name: backfill_chunk
-- The next chunk of existing rows in key order (keyset pagination: $1 is the last row queued
-- before), queued as changes in this side's outbox; {{visible}}: only the rows the entity shows
-- here (not soft-deleted, inside its filter: the values in parameter $4). FOR SHARE waits for a concurrent writer
-- of a row to commit and then reads its new version, so the queued image is never older than a
-- live change with a smaller sequence: a backfilled row never overwrites a newer live change.
WITH chunk AS MATERIALIZED (
    SELECT to_jsonb(t.*) AS image
    FROM {{table}} AS t
    WHERE ($1::text IS NULL
       OR ({{t_key}}) > (SELECT {{r_key}} FROM jsonb_populate_record(NULL::{{table}}, $1::text::jsonb) AS r))
      AND {{visible}}
    ORDER BY {{t_key}}
    LIMIT $2
    FOR SHARE OF t
), queued AS (
    INSERT INTO {{schema}}.outbox (entity, op, key, image)
    SELECT $3, 'U', {{image_key}}, image FROM chunk
    RETURNING seq
)
SELECT (SELECT count(*) FROM queued),
       (SELECT min(seq) FROM queued),
       (SELECT max(seq) FROM queued),
       (SELECT image::text FROM chunk ORDER BY {{image_order_desc}} LIMIT 1);

-- name: requeue
-- `verify --repair`: queue the current image of one record as a change of op $3.
WITH rec AS MATERIALIZED (
    SELECT to_jsonb(t.*) AS image
    FROM {{table}} AS t, jsonb_populate_record(NULL::{{table}}, $1::text::jsonb) AS r
    WHERE ({{t_key}}) = ({{r_key}})
    FOR SHARE OF t
)
INSERT INTO {{schema}}.outbox (entity, op, key, image)
SELECT $2, $3::text::"char", {{image_key}}, image FROM rec;

-- name: children_resend
-- A delete from the other side lost here to a newer change of the parent record: that side
-- creates the parent again, under a new key where its keys are generated, and its children
-- there that outlived the delete (no foreign key) still name the old one. This side's children
-- of the parent ($2: its key here, one column; {{ref}} names it) travel again as inserts of
-- entity $1, marked derived (the consequence of a change already decided: they never win a
-- conflict against a user's change), and move there under the parent. {{visible}}: only the
-- rows the entity shows here (parameter $3). Where this side gives the child's key by values
-- ({{key_given}}), a child whose newest change pending here is an insert or an update travels
-- again as an update: an insert from here onto a live link there would name a new record
-- under a reused key, and its pending changes may have reached the other side already, their
-- replies lost, and settle there as stale, which left it under the old parent there (found
-- by the simulation's full workload, seeds 76362 and 117946; where a delete left only a
-- tombstone there, the update is discarded and the pending change creates it). Not one whose
-- newest is a delete: the row is here, so that delete lost at the other side (and came back
-- as the winner's change), its reply lost, and it carries no image (found by the simulation's
-- full workload without key changes at A, seed 1264): it travels as an insert. Where its key
-- is generated, it travels again as an insert all the same (seed 8748 and three more).
INSERT INTO {{schema}}.outbox (entity, op, key, image, derived)
SELECT $1,
       CASE WHEN {{key_given}} AND COALESCE((SELECT o.op <> 'D' FROM {{schema}}.outbox AS o
                                            WHERE o.entity = $1 AND o.key = x.k AND NOT o.suspended
                                            ORDER BY o.seq DESC LIMIT 1), false)
            THEN 'U' ELSE 'I' END::"char",
       x.k, x.image, true
FROM (
    SELECT image, {{image_key}} AS k
    FROM (
        SELECT to_jsonb(t.*) AS image
        FROM {{table}} AS t
        WHERE t.{{ref}} = (jsonb_populate_record(NULL::{{table}},
                  jsonb_build_object({{ref_lit}}, $2::text::jsonb -> 0))).{{ref}}
          AND {{visible}}
    ) AS c
) AS x;

-- name: drop_duplicate
-- A live record here that lost its peer to another record here (unlink_peer) is a second copy
-- of the peer's record: tandem created it from the peer's change and that reply was lost, and
-- the other side then took this side's other record for the peer (both sides created the
-- record under a key given there, and it landed on the local one). The copy goes, not captured
-- (the other side never knew it: the caller marks the table), and its link becomes a
-- tombstone; unless it has changes of its own here (a user's, which travel; where its own
-- change settled by the write-back lost its conflict there, the caller runs this again once
-- that change left the outbox: seed 42553), or rows here refer to it (one NOT EXISTS per
-- child table, filled in by sql.rs). Not with a soft delete here (sql.rs). The caller locks
-- the row first (row_lock), so this statement's snapshot sees a change a user committed to it
-- meanwhile. $1: the key as a JSON object by column, $2: the same key as id_map text, $3: the
-- entity. Returns the rows gone.
WITH gone AS (
    DELETE FROM {{table}} AS t
    USING jsonb_populate_record(NULL::{{table}}, $1::text::jsonb) AS r
    WHERE ({{t_key}}) = ({{r_key}})
      AND NOT EXISTS (SELECT 1 FROM {{schema}}.outbox AS o
                      WHERE o.entity = $3 AND o.key = $2::text::jsonb){{no_children}}
    RETURNING 1
), tomb AS (
    UPDATE {{schema}}.id_map SET deleted = true, updated_at = clock_timestamp()
    WHERE entity = $3 AND {{own}} = $2 AND EXISTS (SELECT 1 FROM gone)
)
SELECT count(*) FROM gone;

-- name: fetch_image
SELECT to_jsonb(t.*)::text
FROM {{table}} AS t, jsonb_populate_record(NULL::{{table}}, $1::text::jsonb) AS r
WHERE ({{t_key}}) = ({{r_key}});

-- name: fetch_images
-- The current rows of many records in one read ($1: their keys as id_map texts, $2: the same
-- keys as JSON objects by column), each with the key it was asked by: the lossy rule's read
-- before a batch is applied, one statement per entity per batch.
SELECT q.k, to_jsonb(t.*)::text
FROM unnest($1::text[], $2::text[]) AS q(k, o)
CROSS JOIN LATERAL jsonb_populate_record(NULL::{{table}}, q.o::jsonb) AS r
JOIN {{table}} AS t ON ({{t_key}}) = ({{r_key}});

-- name: look_up
-- A look-up through a reference table tandem does not sync (`lookup` on a column): for each
-- value asked ($1, as text), the rows whose {{by}} holds it, with their {{out}} as JSON. One
-- statement per look-up column per batch. Compared as text, so a value that cannot be the
-- column's type matches nothing instead of failing the batch.
SELECT w.v, to_jsonb(t.{{out}})::text
FROM (SELECT DISTINCT u.v FROM unnest($1::text[]) AS u(v)) AS w
JOIN {{table}} AS t ON t.{{by}}::text = w.v;

-- name: verify_rows
-- Each record as verify compares it: its key on each side (JSON arrays, as id_map stores them),
-- a join key (A's key; B-only records get 'B:' and their own key) and a hash of its values in
-- one shape (A's codes; parents by A's key), so both databases compute comparable hashes.
-- {{visible}}: a soft-deleted row, or one outside the entity's filter, is absent (its values
-- in the statement's last parameter).
SELECT {{a_key_expr}} AS a_key, {{b_key_expr}} AS b_key, {{join_key_expr}} AS jk,
       md5(coalesce({{a_key_expr}}, '-') || '|' || coalesce({{b_key_expr}}, '-') || '|' || {{values_expr}}) AS h
FROM {{table}} AS t
WHERE {{visible}}

-- name: verify_values
-- Verify across dialects (the other side is not PostgreSQL): each record's keys as in
-- verify_rows and its values in the same shape, one JSON text per column, which tandem
-- normalises and hashes (src/endpoint/verify_hash.rs explains why not in the database).
SELECT {{a_key_expr}} AS a_key, {{b_key_expr}} AS b_key, {{join_key_expr}} AS jk, {{values_array}} AS v
FROM {{table}} AS t
WHERE {{visible}};

-- name: verify_buckets
-- Count and hash sum per bucket of join keys: equal buckets never leave the database.
SELECT (('x' || substr(md5(jk), 1, 8))::bit(32)::bigint % $1)::int AS bucket,
       count(*),
       sum(('x' || substr(h, 1, 15))::bit(60)::bigint)::text
FROM ({{verify_rows}}) AS v
GROUP BY 1;

-- name: verify_records
SELECT a_key, b_key, jk, h
FROM ({{verify_rows}}) AS v
WHERE (('x' || substr(md5(jk), 1, 8))::bit(32)::bigint % $1)::int = ANY($2);

-- name: verify_in_flight
-- Which of these join keys have changes still in this side's outbox.
SELECT DISTINCT jk FROM (
    SELECT {{outbox_jk}} AS jk FROM {{schema}}.outbox AS o WHERE o.entity = $1
) AS x
WHERE jk = ANY($2);
