-- Tandem: backfill and verify on SQL Server, sent at run time through sp_executesql.
-- Placeholders: {{schema}}, {{table}} and column names are quoted as [name]; {{entity_lit}} is
-- N'...'; {{own}} / {{peer}} are [a_key] / [b_key] (this side's key column in id_map and the
-- other side's). Values always travel as parameters @P1, @P2, ...
-- A key arrives as its text, as id_map stores it (a JSON array, e.g. [17] or ["X",2]), and is
-- typed by OPENJSON ... WITH ({{with_key}}), wrapped in one more array (see entity.sql).
-- {{native_key_t}} is the key as the capture trigger writes it into the outbox (FOR JSON of
-- the key columns), {{image_t}} the row image as the trigger writes it (the key and the mapped
-- columns, FOR JSON with INCLUDE_NULL_VALUES), {{canonical_t}} the key as id_map text.

-- name: backfill_get
SELECT last_key, rows_done, CONVERT(bit, CASE WHEN finished_at IS NULL THEN 0 ELSE 1 END)
FROM {{schema}}.[backfill] WHERE entity = @P1;

-- name: backfill_reset
DELETE FROM {{schema}}.[backfill_key] WHERE entity = @P1;
DELETE FROM {{schema}}.[backfill] WHERE entity = @P1;

-- name: pending_between
-- Queued rows in a range: eligible now, waiting for a retry, suspended.
SELECT CONVERT(bigint, COUNT_BIG(CASE WHEN suspended = 0 AND (next_attempt_at IS NULL OR next_attempt_at <= SYSDATETIMEOFFSET()) THEN 1 END)),
       CONVERT(bigint, COUNT_BIG(CASE WHEN suspended = 0 AND next_attempt_at > SYSDATETIMEOFFSET() THEN 1 END)),
       CONVERT(bigint, COUNT_BIG(CASE WHEN suspended = 1 THEN 1 END))
FROM {{schema}}.[outbox] WHERE seq BETWEEN @P1 AND @P2;

-- name: links_by_peer
-- verify: this side's keys of records linked to these keys of the other side (@P2, a JSON
-- array of key texts).
SELECT m.{{peer}}, m.{{own}}
FROM {{schema}}.[id_map] AS m
JOIN OPENJSON(@P2) WITH (k nvarchar(max) '$') AS j
  ON m.{{peer}} = j.k COLLATE Latin1_General_100_BIN2
WHERE m.entity = @P1 AND m.deleted = 0;

-- Per entity (filled with the entity's table, key and column types):

-- name: row_count
-- {{visible_p1}}: the rows the entity shows here (see backfill_chunk).
SELECT COUNT_BIG(*) FROM {{table}} AS t WHERE {{visible_p1}};

-- name: backfill_chunk
-- The next @P2 existing rows of entity @P1 in key order (keyset pagination after the last key
-- queued, kept typed in backfill_key), queued as changes in the outbox, and the progress
-- saved, in one transaction.
-- Live-safe: the rows are read with UPDLOCK, which is a locking read even under
-- READ_COMMITTED_SNAPSHOT: it waits for a transaction writing a row to end, reads the row as
-- committed, and keeps the row locked until this transaction commits. So a live change of a
-- row either committed before the read (its outbox row has a smaller sequence and the image
-- queued here already holds its values) or comes after this commit (a larger sequence): a
-- backfilled image never overwrites a newer live change, and a row deleted meanwhile is not
-- queued (its tombstone wins at the other side). The outbox sequences of the chunk lie in
-- (@before, @max]: @before is read before the insert, so every row queued here is above it.
-- The progress row is locked first (UPDLOCK, HOLDLOCK): two backfills of one entity take turns.
-- {{visible_p3}}: only the rows the entity shows here (not soft-deleted: @P3 is a flag's deleted
-- value; inside its filter: @P4 is a JSON array of the filter's values); else 1 = 1.
SET NOCOUNT ON;
DECLARE @last nvarchar(max), @new_last nvarchar(max), @found bit = 0, @finished bit = 0,
        @n bigint = 0, @before bigint = NULL, @max bigint = NULL;
{{key_declare}}
DECLARE @c TABLE (ord int IDENTITY(1,1) NOT NULL PRIMARY KEY, k nvarchar(max) NOT NULL,
                  img nvarchar(max) NOT NULL, last nvarchar(max) NOT NULL, {{c_key_cols}});
BEGIN TRY
    BEGIN TRANSACTION;
    SELECT @found = 1, @last = last_key,
           @finished = CASE WHEN finished_at IS NULL THEN 0 ELSE 1 END
    FROM {{schema}}.[backfill] WITH (UPDLOCK, HOLDLOCK) WHERE entity = @P1;
    IF @finished = 0
    BEGIN
        IF @last IS NULL
            INSERT INTO @c (k, img, last, {{c_key_names}})
            SELECT TOP (@P2) {{native_key_t}}, {{image_t}}, {{canonical_t}}, {{t_key_order}}
            FROM {{table}} AS t WITH (UPDLOCK, ROWLOCK)
            WHERE {{visible_p3}}
            ORDER BY {{t_key_order}};
        ELSE
        BEGIN
{{key_load}}
            INSERT INTO @c (k, img, last, {{c_key_names}})
            SELECT TOP (@P2) {{native_key_t}}, {{image_t}}, {{canonical_t}}, {{t_key_order}}
            FROM {{table}} AS t WITH (UPDLOCK, ROWLOCK)
            WHERE {{after_key}} AND {{visible_p3}}
            ORDER BY {{t_key_order}};
        END;
        SELECT @n = COUNT_BIG(*) FROM @c;
        IF @n > 0
        BEGIN
            SELECT @before = ISNULL(MAX(seq), 0) FROM {{schema}}.[outbox] WITH (READPAST);
            INSERT INTO {{schema}}.[outbox] (entity, op, [key], key_prefix, image)
            SELECT @P1, 'U', c.k, LEFT(c.k, 400), c.img FROM @c AS c ORDER BY c.ord;
            SET @max = CONVERT(bigint, SCOPE_IDENTITY());
            SELECT TOP (1) @new_last = c.last, {{key_assign}} FROM @c AS c ORDER BY c.ord DESC;
            DELETE FROM {{schema}}.[backfill_key] WHERE entity = @P1;
            INSERT INTO {{schema}}.[backfill_key] (entity, ord, v) VALUES {{key_store}};
        END;
        SET @finished = CASE WHEN @n < @P2 THEN 1 ELSE 0 END;
        IF @found = 1
            UPDATE {{schema}}.[backfill]
            SET last_key = COALESCE(@new_last, last_key), rows_done = rows_done + @n,
                updated_at = SYSDATETIMEOFFSET(),
                finished_at = CASE WHEN @finished = 1 THEN SYSDATETIMEOFFSET() END
            WHERE entity = @P1;
        ELSE
            INSERT INTO {{schema}}.[backfill] (entity, last_key, rows_done, finished_at)
            VALUES (@P1, @new_last, @n, CASE WHEN @finished = 1 THEN SYSDATETIMEOFFSET() END);
    END;
    COMMIT TRANSACTION;
END TRY
BEGIN CATCH
    IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
    THROW;
END CATCH;
SELECT @n, CASE WHEN @n > 0 THEN @before + 1 END, @max, @finished;

-- name: requeue
-- `verify --repair`: the current row of one record (@P1, its key) queued as a change of op @P3
-- of entity @P2, read with the same locking read as a backfill chunk.
SET NOCOUNT ON;
INSERT INTO {{schema}}.[outbox] (entity, op, [key], key_prefix, image)
SELECT @P2, @P3, x.k, LEFT(x.k, 400), x.img
FROM (SELECT {{native_key_t}} AS k, {{image_t}} AS img
      FROM {{table}} AS t WITH (UPDLOCK, ROWLOCK)
      JOIN OPENJSON(N'[' + @P1 + N']') WITH ({{with_key}}) AS k ON {{t_k_join}}) AS x;
SELECT CONVERT(bigint, @@ROWCOUNT);

-- name: fetch_image
SELECT {{image_t}}
FROM {{table}} AS t
JOIN OPENJSON(N'[' + @P1 + N']') WITH ({{with_key}}) AS k ON {{t_k_join}};

-- name: fetch_images
-- The current rows of many records in one read (@P1: a JSON array of their keys as id_map
-- texts), each with the key it was asked by: the lossy rule's read before a batch is applied,
-- one statement per entity per batch.
SELECT q.k, x.img
FROM OPENJSON(@P1) WITH (k nvarchar(max) '$') AS q
CROSS APPLY (SELECT {{image_t}} AS img
             FROM {{table}} AS t
             JOIN OPENJSON(N'[' + q.k + N']') WITH ({{with_key}}) AS k ON {{t_k_join}}) AS x;

-- name: delete_record
-- `verify --repair`: deletes one record (@P1, its key) of entity @P2 as tandem's own write
-- (not captured: the session context marks it, as an apply does) and marks its link deleted.
-- {{delete_from}}: a DELETE, or with `soft_delete` here the UPDATE that marks the row (a flag's
-- deleted value in @P3).
SET NOCOUNT ON;
DECLARE @n bigint = 0;
BEGIN TRY
    BEGIN TRANSACTION;
    EXEC sys.sp_set_session_context N'tandem.applying', {{table_ctx_lit}};
    EXEC sys.sp_set_session_context N'tandem.entity', @P2;
    {{delete_from}}
    JOIN OPENJSON(N'[' + @P1 + N']') WITH ({{with_key}}) AS k ON {{t_k_join}};
    SET @n = @@ROWCOUNT;
    EXEC sys.sp_set_session_context N'tandem.applying', NULL;
    EXEC sys.sp_set_session_context N'tandem.entity', NULL;
    UPDATE {{schema}}.[id_map] SET deleted = 1, updated_at = SYSDATETIMEOFFSET()
    WHERE entity = @P2 AND {{own}} = @P1;
    COMMIT TRANSACTION;
END TRY
BEGIN CATCH
    IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
    EXEC sys.sp_set_session_context N'tandem.applying', NULL;
    EXEC sys.sp_set_session_context N'tandem.entity', NULL;
    THROW;
END CATCH;
SELECT @n;

-- name: verify_rows
-- Each record as verify compares it: its key on each side (id_map texts), a join key (A's
-- key; records B has and A does not know get 'B:' and their own key), the row image, and for
-- parent columns on side B the parent's key at A (through the parent's id map), then for
-- looked-up columns on the side of their reference table the reference row's value. The values
-- are hashed by tandem (see src/endpoint/verify_hash.rs), streamed, never held whole.
SELECT {{a_key_expr}} AS a_key, {{b_key_expr}} AS b_key, {{jk_expr}} AS jk,
       {{image_t}} AS img{{ref_cols}}
FROM {{table}} AS t;
