-- Tandem: objects in this database (SQL Server 2016 SP1 or later, compatibility level 130+).
-- `tandem install` runs exactly this script, batch by batch (GO separates batches, as in
-- sqlcmd and SSMS), in one transaction; running it again is harmless.
-- Placeholders like [tandem] are filled with identifiers quoted as [name] (] doubled) and
-- string literals N'...' (' doubled); values never travel inside SQL text.
-- Keys and entity names use a binary collation, so 'abc' and 'ABC' are different keys,
-- exactly as on PostgreSQL.
SET ANSI_NULLS ON;
SET QUOTED_IDENTIFIER ON;
SET XACT_ABORT ON;
BEGIN TRANSACTION;
GO
IF SCHEMA_ID(N'tandem') IS NULL
BEGIN
    EXEC (N'CREATE SCHEMA ' + N'[tandem]');
    -- The mark that lets `tandem uninstall` drop the schema (only one tandem created).
    EXEC sys.sp_addextendedproperty @name = N'tandem',
        @value = N'tandem: change capture and id links (created by tandem install)',
        @level0type = N'SCHEMA', @level0name = N'tandem';
END;
GO
-- One row per captured change. A row leaves only after its effect is committed at the other
-- side and the id pair is written back here. `seq` orders the changes of one record.
-- `key` is the record's key as the capture trigger writes it (FOR JSON of the key columns);
-- `key_prefix` makes it indexable (nvarchar(max) cannot be an index key).
-- The indexes are created with their table, in the same guarded block: the guard is the
-- table's existence, because an index name cannot be looked up the same way everywhere
-- (Babelfish stores it under a derived name). A later version that adds an index adds a
-- guarded step of its own.
IF OBJECT_ID(N'[tandem].[outbox]', N'U') IS NULL
BEGIN
CREATE TABLE [tandem].[outbox] (
    seq             bigint            IDENTITY(1,1) NOT NULL PRIMARY KEY CLUSTERED,
    entity          nvarchar(128)     COLLATE Latin1_General_100_BIN2 NOT NULL,
    op              char(1)           COLLATE Latin1_General_100_BIN2 NOT NULL CHECK (op IN ('I', 'U', 'D')),
    [key]           nvarchar(max)     COLLATE Latin1_General_100_BIN2 NULL,
    key_prefix      nvarchar(400)     COLLATE Latin1_General_100_BIN2 NULL,
    image           nvarchar(max)     NOT NULL,  -- the full row (FOR JSON): after the change, before it for deletes
    captured_at     datetimeoffset(7) NOT NULL DEFAULT SYSDATETIMEOFFSET(),
    attempts        int               NOT NULL DEFAULT 0,
    next_attempt_at datetimeoffset(7) NULL,      -- NULL: now
    last_error      nvarchar(max)     NULL,
    first_failed_at datetimeoffset(7) NULL,
    last_failed_at  datetimeoffset(7) NULL,
    suspended       bit               NOT NULL DEFAULT 0,
    -- Captured while tandem applied a change here (a cascade, another trigger's effect):
    -- the consequence of a change already decided, which loses every conflict against a
    -- change a user made.
    derived         bit               NOT NULL DEFAULT 0
);
-- Changes of one record: conflict detection, superseding suspended images, waiting children.
-- (No filtered index and no indexed computed column here: the capture trigger inserts into
-- this table from application sessions, whatever their SET options are.)
CREATE INDEX outbox_record ON [tandem].[outbox] (entity, key_prefix);
END;
GO
-- Upgrades from versions without the derived mark.
IF COL_LENGTH(N'[tandem].[outbox]', 'derived') IS NULL
    ALTER TABLE [tandem].[outbox] ADD derived bit NOT NULL DEFAULT 0;
GO
-- One row per linked record: its key here and on the other side (JSON arrays as text, e.g.
-- [17] or ["X",2]), the newest sequence of the other side's outbox applied here (older or
-- equal changes are discarded), and a tombstone mark so a late update cannot revive a delete.
IF OBJECT_ID(N'[tandem].[id_map]', N'U') IS NULL
BEGIN
CREATE TABLE [tandem].[id_map] (
    id          bigint            IDENTITY(1,1) NOT NULL PRIMARY KEY CLUSTERED,
    entity      nvarchar(128)     COLLATE Latin1_General_100_BIN2 NOT NULL,
    a_key       nvarchar(700)     COLLATE Latin1_General_100_BIN2 NULL,
    b_key       nvarchar(700)     COLLATE Latin1_General_100_BIN2 NULL,
    applied_seq bigint            NOT NULL DEFAULT 0,
    deleted     bit               NOT NULL DEFAULT 0,
    updated_at  datetimeoffset(7) NOT NULL DEFAULT SYSDATETIMEOFFSET(),
    CHECK (a_key IS NOT NULL OR b_key IS NOT NULL)
);
-- Unique like PostgreSQL's (entity, a_key) and (entity, b_key), where NULLs never collide.
CREATE UNIQUE INDEX id_map_a ON [tandem].[id_map] (entity, a_key) WHERE a_key IS NOT NULL;
CREATE UNIQUE INDEX id_map_b ON [tandem].[id_map] (entity, b_key) WHERE b_key IS NOT NULL;
END;
GO
-- Backfill progress, one row per entity backfilled from this side: the key of the last row
-- queued (as id_map writes keys, for people), rows queued so far, and when it finished. Saved in the same
-- transaction as the chunk it describes, so a backfill resumes exactly after the last chunk.
IF OBJECT_ID(N'[tandem].[backfill]', N'U') IS NULL
CREATE TABLE [tandem].[backfill] (
    entity      nvarchar(128)     COLLATE Latin1_General_100_BIN2 NOT NULL PRIMARY KEY CLUSTERED,
    last_key    nvarchar(max)     COLLATE Latin1_General_100_BIN2 NULL,
    rows_done   bigint            NOT NULL DEFAULT 0,
    updated_at  datetimeoffset(7) NOT NULL DEFAULT SYSDATETIMEOFFSET(),
    finished_at datetimeoffset(7) NULL
);
GO
-- Where a backfill resumes: the typed values of the last key queued, one row per key column
-- (sql_variant keeps each value's type exactly, so no text has to be parsed back).
IF OBJECT_ID(N'[tandem].[backfill_key]', N'U') IS NULL
CREATE TABLE [tandem].[backfill_key] (
    entity nvarchar(128) COLLATE Latin1_General_100_BIN2 NOT NULL,
    ord    int               NOT NULL,
    v      sql_variant       NULL,
    PRIMARY KEY CLUSTERED (entity, ord)
);
GO
-- The newest sequence of this outbox that tandem has begun to apply at the other side: one
-- row, raised once per batch (not per change) before the batch is applied. An insert at or
-- below it that never failed may be at the other side whatever reply comes back: the other
-- side's new record meeting it, linked to nothing, under its key given by values waits for
-- that reply instead of merging with it.
IF OBJECT_ID(N'[tandem].[sent_mark]', N'U') IS NULL
CREATE TABLE [tandem].[sent_mark] (
    one bit    NOT NULL PRIMARY KEY CLUSTERED DEFAULT 1 CHECK (one = 1),
    seq bigint NOT NULL
);
GO
IF NOT EXISTS (SELECT 1 FROM [tandem].[sent_mark])
    INSERT INTO [tandem].[sent_mark] (one, seq) VALUES (1, 0);
GO
-- What `install` recorded of each synchronised table, per entity reading it: its columns
-- (name, type, NOT NULL) and unique keys, as JSON. `run` and `check` compare the live catalog
-- with it (schema drift): a mapped column dropped, renamed or retyped pauses the entity until
-- the table matches again or `install` records it anew. Written by `install` after this script.
IF OBJECT_ID(N'[tandem].[fingerprint]', N'U') IS NULL
CREATE TABLE [tandem].[fingerprint] (
    entity      nvarchar(128)     COLLATE Latin1_General_100_BIN2 NOT NULL PRIMARY KEY CLUSTERED,
    table_name  nvarchar(400)     NOT NULL,
    fingerprint nvarchar(max)     NOT NULL,
    recorded_at datetimeoffset(7) NOT NULL DEFAULT SYSDATETIMEOFFSET()
);
GO
-- Conflicts resolved here: a record changed on both sides before either change was applied.
-- Both sides end with the winner's values; the losing image is kept here for review.
IF OBJECT_ID(N'[tandem].[conflicts]', N'U') IS NULL
CREATE TABLE [tandem].[conflicts] (
    id             bigint            IDENTITY(1,1) NOT NULL PRIMARY KEY CLUSTERED,
    entity         nvarchar(128)     COLLATE Latin1_General_100_BIN2 NOT NULL,
    incoming_side  char(1)           NOT NULL,  -- 'A' or 'B': where the incoming change was captured
    incoming_key   nvarchar(max)     NOT NULL,  -- the record's key there
    local_key      nvarchar(max)     NULL,      -- the record's key here
    policy         varchar(12)       NOT NULL,
    winner         char(1)           NOT NULL,  -- 'A' or 'B'
    incoming_op    char(1)           NOT NULL,
    incoming_image nvarchar(max)     NULL,      -- mapped to this side's columns
    local_op       char(1)           NOT NULL,
    local_image    nvarchar(max)     NULL,
    resolved_at    datetimeoffset(7) NOT NULL DEFAULT SYSDATETIMEOFFSET()
);
GO

-- Capture trigger on [dbo].[ORDERS] for entity order.
IF EXISTS (SELECT 1 FROM sys.triggers WHERE parent_id = OBJECT_ID(N'[dbo].[ORDERS]') AND name = N'tandem_capture_ORDERS')
BEGIN
    DECLARE @drop nvarchar(max) = N'DROP TRIGGER ' + QUOTENAME(OBJECT_SCHEMA_NAME(OBJECT_ID(N'[dbo].[ORDERS]'))) + N'.' + QUOTENAME(N'tandem_capture_ORDERS');
    EXEC (@drop);
END;
GO
-- Set-based: one INSERT for all rows of the statement, from `inserted` and `deleted` paired
-- by key. A row in both with the same key is an update (captured only when its image
-- changed: compared in a binary collation, so 'a' -> 'A' is a change); a key change travels
-- as a delete plus an insert. Images are FOR JSON with INCLUDE_NULL_VALUES, so a NULL column
-- stays a member with value null, apart from '' and from a column that is not there.
-- An image holds the key and the mapped columns (and a soft delete's mark and a row filter's
-- column: the mapping decides on them at claim), named as the config names them: columns
-- tandem does not synchronise are neither read (a rowversion or a type FOR JSON cannot encode
-- stays out of the way) nor make an update a change.
-- Tandem's own writes to this table set the session context tandem.applying to its name and
-- are skipped, but only at nesting level 1: what other triggers and ON DELETE CASCADE do
-- while tandem applies a change is captured and flows back, marked `derived` (the
-- consequence of a change already decided: it loses every conflict against a user's change).
CREATE TRIGGER [dbo].[tandem_capture_ORDERS] ON [dbo].[ORDERS]
AFTER INSERT, UPDATE, DELETE
AS
BEGIN
    SET NOCOUNT ON;
    IF NOT EXISTS (SELECT 1 FROM inserted) AND NOT EXISTS (SELECT 1 FROM deleted)
        RETURN;
    DECLARE @c TABLE (
        ord int NOT NULL,
        op  char(1) NOT NULL,
        k   nvarchar(max) NOT NULL,
        img nvarchar(max) NOT NULL
    );
    DECLARE @derived bit = CASE WHEN SESSION_CONTEXT(N'tandem.applying') IS NULL THEN 0 ELSE 1 END;
-- Entity order: skipped when tandem writes for it (only at nesting level 1:
    -- what other triggers and ON DELETE CASCADE do while tandem applies a change is captured).
    -- (ISNULL: outside tandem's writes the context is NULL, and NOT (NULL = x) is not true.)
    IF NOT (TRIGGER_NESTLEVEL() = 1
            AND ISNULL(CONVERT(nvarchar(600), SESSION_CONTEXT(N'tandem.applying')), N'') = N'[dbo].[ORDERS]')
    BEGIN
        DELETE FROM @c;
        WITH n AS (
            SELECT i.[ORDER_NO] AS [c1],
                   CONVERT(nvarchar(max), (SELECT i.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS k,
                   CONVERT(nvarchar(max), (SELECT i.[ORDER_NO] AS [ORDER_NO], i.[CUST_NAME] AS [CUST_NAME], i.[STATUS] AS [STATUS], i.[AMOUNT] AS [AMOUNT] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS img
            FROM inserted AS i
        ), o AS (
            SELECT d.[ORDER_NO] AS [c1],
                   CONVERT(nvarchar(max), (SELECT d.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS k,
                   CONVERT(nvarchar(max), (SELECT d.[ORDER_NO] AS [ORDER_NO], d.[CUST_NAME] AS [CUST_NAME], d.[STATUS] AS [STATUS], d.[AMOUNT] AS [AMOUNT] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS img
            FROM deleted AS d
        )
        INSERT INTO @c (ord, op, k, img)
        SELECT v.ord, v.op, v.k, v.img
        FROM n FULL OUTER JOIN o ON n.[c1] = o.[c1] AND n.k = o.k
        CROSS APPLY (VALUES (0, 'D', o.k, o.img), (1, 'U', n.k, n.img), (2, 'I', n.k, n.img)) AS v (ord, op, k, img)
        WHERE (v.ord = 0 AND n.k IS NULL)
           OR (v.ord = 1 AND n.k IS NOT NULL AND o.k IS NOT NULL AND n.img <> o.img)
           OR (v.ord = 2 AND o.k IS NULL);
        -- Deletes first, so a key change is a delete followed by an insert in sequence order.
        INSERT INTO [tandem].[outbox] (entity, op, [key], key_prefix, image, derived)
        SELECT N'order', c.op, c.k, LEFT(c.k, 400), c.img, @derived
        FROM @c AS c
        ORDER BY c.ord;
    END;
END;
GO
-- The mark `tandem uninstall` and `tandem check` find the trigger by: a property of the
-- table named after this installation's schema, whose value is the trigger's name. (On the
-- table rather than on the trigger: both work on SQL Server, only this one on Babelfish.)
DECLARE @s sysname = OBJECT_SCHEMA_NAME(OBJECT_ID(N'[dbo].[ORDERS]')),
        @t sysname = OBJECT_NAME(OBJECT_ID(N'[dbo].[ORDERS]'));
IF EXISTS (SELECT 1 FROM sys.extended_properties
           WHERE class = 1 AND major_id = OBJECT_ID(N'[dbo].[ORDERS]') AND minor_id = 0 AND name = N'tandem:tandem')
    EXEC sys.sp_updateextendedproperty @name = N'tandem:tandem', @value = N'tandem_capture_ORDERS',
        @level0type = N'SCHEMA', @level0name = @s, @level1type = N'TABLE', @level1name = @t;
ELSE
    EXEC sys.sp_addextendedproperty @name = N'tandem:tandem', @value = N'tandem_capture_ORDERS',
        @level0type = N'SCHEMA', @level0name = @s, @level1type = N'TABLE', @level1name = @t;
GO
-- Capture trigger on [dbo].[ORDER_ITEMS] for entity order_item.
IF EXISTS (SELECT 1 FROM sys.triggers WHERE parent_id = OBJECT_ID(N'[dbo].[ORDER_ITEMS]') AND name = N'tandem_capture_ORDER_ITEMS')
BEGIN
    DECLARE @drop nvarchar(max) = N'DROP TRIGGER ' + QUOTENAME(OBJECT_SCHEMA_NAME(OBJECT_ID(N'[dbo].[ORDER_ITEMS]'))) + N'.' + QUOTENAME(N'tandem_capture_ORDER_ITEMS');
    EXEC (@drop);
END;
GO
-- Set-based: one INSERT for all rows of the statement, from `inserted` and `deleted` paired
-- by key. A row in both with the same key is an update (captured only when its image
-- changed: compared in a binary collation, so 'a' -> 'A' is a change); a key change travels
-- as a delete plus an insert. Images are FOR JSON with INCLUDE_NULL_VALUES, so a NULL column
-- stays a member with value null, apart from '' and from a column that is not there.
-- An image holds the key and the mapped columns (and a soft delete's mark and a row filter's
-- column: the mapping decides on them at claim), named as the config names them: columns
-- tandem does not synchronise are neither read (a rowversion or a type FOR JSON cannot encode
-- stays out of the way) nor make an update a change.
-- Tandem's own writes to this table set the session context tandem.applying to its name and
-- are skipped, but only at nesting level 1: what other triggers and ON DELETE CASCADE do
-- while tandem applies a change is captured and flows back, marked `derived` (the
-- consequence of a change already decided: it loses every conflict against a user's change).
CREATE TRIGGER [dbo].[tandem_capture_ORDER_ITEMS] ON [dbo].[ORDER_ITEMS]
AFTER INSERT, UPDATE, DELETE
AS
BEGIN
    SET NOCOUNT ON;
    IF NOT EXISTS (SELECT 1 FROM inserted) AND NOT EXISTS (SELECT 1 FROM deleted)
        RETURN;
    DECLARE @c TABLE (
        ord int NOT NULL,
        op  char(1) NOT NULL,
        k   nvarchar(max) NOT NULL,
        img nvarchar(max) NOT NULL
    );
    DECLARE @derived bit = CASE WHEN SESSION_CONTEXT(N'tandem.applying') IS NULL THEN 0 ELSE 1 END;
-- Entity order_item: skipped when tandem writes for it (only at nesting level 1:
    -- what other triggers and ON DELETE CASCADE do while tandem applies a change is captured).
    -- (ISNULL: outside tandem's writes the context is NULL, and NOT (NULL = x) is not true.)
    IF NOT (TRIGGER_NESTLEVEL() = 1
            AND ISNULL(CONVERT(nvarchar(600), SESSION_CONTEXT(N'tandem.applying')), N'') = N'[dbo].[ORDER_ITEMS]')
    BEGIN
        DELETE FROM @c;
        WITH n AS (
            SELECT i.[ORDER_NO] AS [c1], i.[LINE_NO] AS [c2],
                   CONVERT(nvarchar(max), (SELECT i.[ORDER_NO] AS [k1], i.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS k,
                   CONVERT(nvarchar(max), (SELECT i.[ORDER_NO] AS [ORDER_NO], i.[LINE_NO] AS [LINE_NO], i.[QTY] AS [QTY] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS img
            FROM inserted AS i
        ), o AS (
            SELECT d.[ORDER_NO] AS [c1], d.[LINE_NO] AS [c2],
                   CONVERT(nvarchar(max), (SELECT d.[ORDER_NO] AS [k1], d.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS k,
                   CONVERT(nvarchar(max), (SELECT d.[ORDER_NO] AS [ORDER_NO], d.[LINE_NO] AS [LINE_NO], d.[QTY] AS [QTY] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS img
            FROM deleted AS d
        )
        INSERT INTO @c (ord, op, k, img)
        SELECT v.ord, v.op, v.k, v.img
        FROM n FULL OUTER JOIN o ON n.[c1] = o.[c1] AND n.[c2] = o.[c2] AND n.k = o.k
        CROSS APPLY (VALUES (0, 'D', o.k, o.img), (1, 'U', n.k, n.img), (2, 'I', n.k, n.img)) AS v (ord, op, k, img)
        WHERE (v.ord = 0 AND n.k IS NULL)
           OR (v.ord = 1 AND n.k IS NOT NULL AND o.k IS NOT NULL AND n.img <> o.img)
           OR (v.ord = 2 AND o.k IS NULL);
        -- Deletes first, so a key change is a delete followed by an insert in sequence order.
        INSERT INTO [tandem].[outbox] (entity, op, [key], key_prefix, image, derived)
        SELECT N'order_item', c.op, c.k, LEFT(c.k, 400), c.img, @derived
        FROM @c AS c
        ORDER BY c.ord;
    END;
END;
GO
-- The mark `tandem uninstall` and `tandem check` find the trigger by: a property of the
-- table named after this installation's schema, whose value is the trigger's name. (On the
-- table rather than on the trigger: both work on SQL Server, only this one on Babelfish.)
DECLARE @s sysname = OBJECT_SCHEMA_NAME(OBJECT_ID(N'[dbo].[ORDER_ITEMS]')),
        @t sysname = OBJECT_NAME(OBJECT_ID(N'[dbo].[ORDER_ITEMS]'));
IF EXISTS (SELECT 1 FROM sys.extended_properties
           WHERE class = 1 AND major_id = OBJECT_ID(N'[dbo].[ORDER_ITEMS]') AND minor_id = 0 AND name = N'tandem:tandem')
    EXEC sys.sp_updateextendedproperty @name = N'tandem:tandem', @value = N'tandem_capture_ORDER_ITEMS',
        @level0type = N'SCHEMA', @level0name = @s, @level1type = N'TABLE', @level1name = @t;
ELSE
    EXEC sys.sp_addextendedproperty @name = N'tandem:tandem', @value = N'tandem_capture_ORDER_ITEMS',
        @level0type = N'SCHEMA', @level0name = @s, @level1type = N'TABLE', @level1name = @t;
GO
-- The form of these objects (tandem's INSTALL_FORMAT), for `tandem run` and `tandem check`
-- to tell them from objects an older tandem installed, which lack some this one uses.
IF EXISTS (SELECT 1 FROM sys.extended_properties
           WHERE class = 1 AND major_id = OBJECT_ID(N'[tandem].[outbox]') AND minor_id = 0
             AND name = N'tandem_format')
    EXEC sys.sp_updateextendedproperty @name = N'tandem_format', @value = N'1',
        @level0type = N'SCHEMA', @level0name = N'tandem', @level1type = N'TABLE', @level1name = N'outbox';
ELSE
    EXEC sys.sp_addextendedproperty @name = N'tandem_format', @value = N'1',
        @level0type = N'SCHEMA', @level0name = N'tandem', @level1type = N'TABLE', @level1name = N'outbox';
GO
COMMIT TRANSACTION;
SET XACT_ABORT OFF;
GO

-- Statements tandem sends at run time on this side (for review; not run by install):

-- claim
-- -- The oldest eligible pending changes, none of the entities in @P2 (a JSON array of names:
-- -- entities paused by schema drift, whose changes stay pending, untried). READPAST skips rows
-- -- still locked by a transaction that has not committed (they are taken next time, nothing is
-- -- lost); READCOMMITTEDLOCK keeps READPAST meaningful under READ_COMMITTED_SNAPSHOT; shared
-- -- locks last only while each row is read, so claiming never blocks an application writing to
-- -- its tables.
-- SELECT TOP (@P1) seq, entity, op, image,
--        DATEDIFF_BIG(microsecond, '1970-01-01', captured_at) AS captured_us, attempts, derived
-- FROM [tandem].[outbox] WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
-- WHERE suspended = 0 AND (next_attempt_at IS NULL OR next_attempt_at <= SYSDATETIMEOFFSET())
--   AND entity NOT IN (SELECT CONVERT(nvarchar(128), value) FROM OPENJSON(@P2))
-- ORDER BY seq;

-- claim_batch
-- -- A batch of a pipelined burst: the @P1 oldest eligible pending changes after sequence @P2
-- -- (the previous batch of the burst may still be in flight), then, for records of the
-- -- entities in @P3 (a JSON array of names), their next plain updates further back in the
-- -- outbox (pulled = 1), which tandem folds into one apply: up to 16 per record and 4 × @P1 in
-- -- all, each record's run stopping at its first row that is not a fresh update (an insert, a
-- -- delete, a retried or suspended change). Every row comes with its record's key (as the
-- -- capture trigger wrote it), so tandem groups a record's rows without reading their images.
-- -- A head record's older changes still waiting for a retry come along too (pulled = 1): the
-- -- newest image carries them, with the op folded (an update after an insert that failed is
-- -- applied as that insert). A row pulled twice (by two head rows) is taken once by tandem.
-- -- Entities in @P4 (paused by schema drift) are left out of the head, and so entirely.
-- -- Locking as in claim. The head is found by its last sequence, then read by range: no table
-- -- variable (measured on Babelfish: 40 ms a batch of 1,000 against 170 ms with one).
-- SET NOCOUNT ON;
-- DECLARE @last bigint = (
--     SELECT MAX(h.seq) FROM (
--         SELECT TOP (@P1) seq FROM [tandem].[outbox] WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
--         WHERE suspended = 0 AND (next_attempt_at IS NULL OR next_attempt_at <= SYSDATETIMEOFFSET())
--           AND seq > @P2 AND entity NOT IN (SELECT CONVERT(nvarchar(128), value) FROM OPENJSON(@P4))
--         ORDER BY seq) AS h);
-- IF @P3 = N'[]'
--     SELECT seq, entity, op, image, DATEDIFF_BIG(microsecond, '1970-01-01', captured_at),
--            attempts, CONVERT(bit, 0) AS pulled, [key], derived
--     FROM [tandem].[outbox] WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
--     WHERE suspended = 0 AND (next_attempt_at IS NULL OR next_attempt_at <= SYSDATETIMEOFFSET())
--       AND seq > @P2 AND seq <= @last AND entity NOT IN (SELECT CONVERT(nvarchar(128), value) FROM OPENJSON(@P4))
--     UNION ALL
--     SELECT w.seq, w.entity, w.op, w.image, DATEDIFF_BIG(microsecond, '1970-01-01', w.captured_at),
--            w.attempts, CONVERT(bit, 1), w.[key], w.derived
--     FROM [tandem].[outbox] AS h WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
--     JOIN [tandem].[outbox] AS w WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
--       ON w.entity = h.entity AND w.key_prefix = h.key_prefix AND w.[key] = h.[key] AND w.seq < h.seq
--     WHERE h.suspended = 0 AND (h.next_attempt_at IS NULL OR h.next_attempt_at <= SYSDATETIMEOFFSET())
--       AND h.seq > @P2 AND h.seq <= @last AND h.[key] IS NOT NULL
--       AND h.entity NOT IN (SELECT CONVERT(nvarchar(128), value) FROM OPENJSON(@P4))
--       AND w.suspended = 0 AND w.next_attempt_at > SYSDATETIMEOFFSET();
-- ELSE
--     SELECT seq, entity, op, image, DATEDIFF_BIG(microsecond, '1970-01-01', captured_at),
--            attempts, CONVERT(bit, 0) AS pulled, [key], derived
--     FROM [tandem].[outbox] WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
--     WHERE suspended = 0 AND (next_attempt_at IS NULL OR next_attempt_at <= SYSDATETIMEOFFSET())
--       AND seq > @P2 AND seq <= @last AND entity NOT IN (SELECT CONVERT(nvarchar(128), value) FROM OPENJSON(@P4))
--     UNION ALL
--     SELECT p.seq, p.entity, p.op, p.image, DATEDIFF_BIG(microsecond, '1970-01-01', p.captured_at),
--            p.attempts, CONVERT(bit, 1), p.[key], p.derived
--     FROM (
--         SELECT TOP (4 * @P1) l.*
--         FROM [tandem].[outbox] AS h WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
--         CROSS APPLY (
--             SELECT TOP (16) o.seq, o.entity, o.op, o.image, o.captured_at, o.attempts, o.[key], o.derived
--             FROM [tandem].[outbox] AS o WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
--             WHERE o.entity = h.entity AND o.key_prefix = h.key_prefix AND o.[key] = h.[key]
--               AND o.seq > @last
--               AND NOT EXISTS (SELECT 1 FROM [tandem].[outbox] AS b
--                               WHERE b.entity = h.entity AND b.key_prefix = h.key_prefix AND b.[key] = h.[key]
--                                 AND b.seq > @last AND b.seq <= o.seq
--                                 AND NOT (b.op = 'U' AND b.suspended = 0 AND b.attempts = 0))
--             ORDER BY o.seq
--         ) AS l
--         WHERE h.suspended = 0 AND h.seq > @P2 AND h.seq <= @last AND h.[key] IS NOT NULL
--           AND h.entity NOT IN (SELECT CONVERT(nvarchar(128), value) FROM OPENJSON(@P4))
--           AND h.entity IN (SELECT CONVERT(nvarchar(128), value) FROM OPENJSON(@P3))
--           AND NOT EXISTS (SELECT 1 FROM [tandem].[outbox] AS h2
--                           WHERE h2.entity = h.entity AND h2.key_prefix = h.key_prefix AND h2.[key] = h.[key]
--                             AND h2.seq > h.seq AND h2.seq <= @last)
--         ORDER BY l.seq
--     ) AS p
--     UNION ALL
--     SELECT w.seq, w.entity, w.op, w.image, DATEDIFF_BIG(microsecond, '1970-01-01', w.captured_at),
--            w.attempts, CONVERT(bit, 1), w.[key], w.derived
--     FROM [tandem].[outbox] AS h WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
--     JOIN [tandem].[outbox] AS w WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
--       ON w.entity = h.entity AND w.key_prefix = h.key_prefix AND w.[key] = h.[key] AND w.seq < h.seq
--     WHERE h.suspended = 0 AND (h.next_attempt_at IS NULL OR h.next_attempt_at <= SYSDATETIMEOFFSET())
--       AND h.seq > @P2 AND h.seq <= @last AND h.[key] IS NOT NULL
--       AND h.entity NOT IN (SELECT CONVERT(nvarchar(128), value) FROM OPENJSON(@P4))
--       AND w.suspended = 0 AND w.next_attempt_at > SYSDATETIMEOFFSET();

-- mark_sent
-- -- A batch is about to be applied at the other side: the sent mark rises to its newest change
-- -- of a record whose key this side gives by values (@P1). One row, once per batch; it never
-- -- goes down. Those of its changes that failed before (@P2, a JSON array of seq) are sent
-- -- again: their retry time is cleared (a failure sets it), so they count as sent with no
-- -- failure since.
-- UPDATE o SET next_attempt_at = NULL
-- FROM [tandem].[outbox] AS o
-- JOIN OPENJSON(@P2) WITH (seq bigint '$') AS r ON o.seq = r.seq
-- WHERE o.attempts > 0;
-- UPDATE [tandem].[sent_mark] SET seq = @P1 WHERE seq < @P1;

-- links_by_own
-- -- @P1 entity, @P2 a JSON array of this side's keys (as text).
-- SELECT m.[a_key] AS own_key, m.[b_key] AS peer_key, m.deleted, m.applied_seq,
--        DATEDIFF_BIG(microsecond, '1970-01-01', m.updated_at) AS updated_us
-- FROM [tandem].[id_map] AS m
-- JOIN OPENJSON(@P2) WITH (k nvarchar(max) '$') AS j
--   ON m.[a_key] = j.k COLLATE Latin1_General_100_BIN2
-- WHERE m.entity = @P1;

-- session
-- -- Every pooled connection: the SET options filtered indexes need (id_map), and SET XACT_ABORT
-- -- OFF so a change the database refuses can be rolled back alone to its savepoint.
-- SET ANSI_NULLS ON;
-- SET ANSI_PADDING ON;
-- SET ANSI_WARNINGS ON;
-- SET ARITHABORT ON;
-- SET CONCAT_NULL_YIELDS_NULL ON;
-- SET QUOTED_IDENTIFIER ON;
-- SET NUMERIC_ROUNDABORT OFF;
-- SET XACT_ABORT OFF;
-- SET DATEFORMAT ymd;

-- rollback
-- -- Run on a connection whose batch failed: nothing it began may stay open.
-- IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
-- EXEC sys.sp_set_session_context N'tandem.applying', NULL;
-- EXEC sys.sp_set_session_context N'tandem.entity', NULL;

-- apply batch (sql/mssql/apply.sql; per-entity parts from sql/mssql/entity.sql, typed from the catalog at run time)
-- -- Tandem: apply a batch of changes from the other side, in one round trip (SQL Server).
-- -- @P1 is the batch as a JSON array; values are already in this side's column types (see
-- -- src/endpoint/mssql/types.rs). Per change, in order, in one transaction, exactly as on
-- -- PostgreSQL: lock the record's link in id_map, discard it if this or a newer change was
-- -- applied (the sequence guard), resolve parents through their links, detect and settle a
-- -- conflict, write only what differs, and update the link in the same transaction.
-- -- A change the database refuses (a constraint, a value that does not fit, a trigger that
-- -- raises) is rolled back alone to its savepoint and reported; if it left the transaction
-- -- unable to go on, the batch starts over without it. Any other error (a deadlock, a lost
-- -- connection, a missing table) rolls the whole batch back and is raised.
-- -- Result: one row per change (i, how, target_key, conflict, fail, err_number, err_message,
-- -- parent, parent_key, superseded, moot). how: W written, U unchanged, S stale, D deleted here,
-- -- C conflict lost; fail: R refused by the database, P waiting for a parent.
-- SET NOCOUNT ON;
-- SET XACT_ABORT OFF;
-- DECLARE @changes TABLE (
--     i                int               NOT NULL PRIMARY KEY,
--     entity           nvarchar(128)     COLLATE Latin1_General_100_BIN2 NOT NULL,
--     tbl              nvarchar(600)     NOT NULL,
--     op               char(1)           NOT NULL,
--     seq              bigint            NOT NULL,
--     source_key       nvarchar(max)     COLLATE Latin1_General_100_BIN2 NOT NULL,
--     peer_hint        nvarchar(max)     COLLATE Latin1_General_100_BIN2 NULL,
--     hint_predates    bit               NOT NULL,
--     first_seq        bigint            NOT NULL,
--     peer_applied_seq bigint            NOT NULL,
--     captured_at      datetimeoffset(7) NOT NULL,
--     key_given        bit               NOT NULL,
--     key_problem      nvarchar(2000)    NULL,
--     row_problem      nvarchar(2000)    NULL,
--     policy           varchar(12)       NOT NULL,
--     derived          bit               NOT NULL,
--     born             bit               NOT NULL,
--     source_key_given bit               NOT NULL,
--     row_values       nvarchar(max)     NOT NULL,
--     row_image        nvarchar(max)     NOT NULL,
--     refs             nvarchar(max)     NULL
-- );
-- INSERT INTO @changes
-- SELECT c.i, c.entity, c.tbl, c.op, c.seq, c.source_key, c.peer_hint, c.hint_predates, c.first_seq, c.peer_applied_seq,
--        c.captured_at, c.key_given, c.key_problem, c.row_problem, c.policy, c.derived, c.born, c.source_key_given, c.row_values,
--        c.row_image, c.refs
-- FROM OPENJSON(@P1) WITH (
--     i int '$.i', entity nvarchar(128) '$.entity', tbl nvarchar(600) '$.tbl', op char(1) '$.op',
--     seq bigint '$.seq', source_key nvarchar(max) '$.source_key', peer_hint nvarchar(max) '$.peer_hint',
--     hint_predates bit '$.hint_predates', first_seq bigint '$.first_seq',
--     peer_applied_seq bigint '$.peer_applied_seq', captured_at datetimeoffset(7) '$.captured_at',
--     key_given bit '$.key_given', key_problem nvarchar(2000) '$.key_problem',
--     row_problem nvarchar(2000) '$.row_problem', policy varchar(12) '$.policy', derived bit '$.derived',
--     born bit '$.born', source_key_given bit '$.source_key_given',
--     row_values nvarchar(max) '$.row' AS JSON, row_image nvarchar(max) '$.image' AS JSON,
--     refs nvarchar(max) '$.refs' AS JSON
-- ) AS c;
-- 
-- DECLARE @out TABLE (
--     i           int            NOT NULL PRIMARY KEY,
--     how         char(1)        NULL,
--     target_key  nvarchar(max)  NULL,
--     conflict    bit            NOT NULL DEFAULT 0,
--     -- The newest change captured here that the incoming one beat (Outcome::Done::superseded).
--     superseded  bigint         NULL,
--     fail        char(1)        NULL,
--     err_number  int            NULL,
--     err_message nvarchar(4000) NULL,
--     parent      nvarchar(128)  NULL,
--     parent_key  nvarchar(max)  NULL,
--     -- Changes suspended here that a delete made moot (Outcome::Done::moot), as FOR JSON.
--     moot        nvarchar(max)  NULL
-- );
-- -- Changes that left the transaction unable to go on; the batch is redone without them.
-- -- (Table variables keep their rows through a rollback.)
-- DECLARE @skip TABLE (i int NOT NULL PRIMARY KEY, err_number int, err_message nvarchar(4000));
-- DECLARE @pending TABLE (seq bigint NOT NULL PRIMARY KEY, captured_at datetimeoffset(7), op char(1), image nvarchar(max), derived bit);
-- DECLARE @ins TABLE (k nvarchar(max));
-- DECLARE @moot TABLE (seq bigint NOT NULL);
-- DECLARE @beaten TABLE (seq bigint NOT NULL PRIMARY KEY);
-- 
-- DECLARE @i int, @entity nvarchar(128), @tbl nvarchar(600), @op char(1), @seq bigint,
--         @source_key nvarchar(max), @peer_hint nvarchar(max), @hint_predates bit, @first_seq bigint,
--         @peer_applied_seq bigint,
--         @captured_at datetimeoffset(7), @key_given bit, @key_problem nvarchar(2000),
--         @row_problem nvarchar(2000), @policy varchar(12), @derived bit, @born bit, @source_key_given bit,
--         @row_values nvarchar(max),
--         @row_image nvarchar(max), @refs nvarchar(max),
--         @row nvarchar(max), @image nvarchar(max), @key nvarchar(max), @native nvarchar(max),
--         @given nvarchar(max), @found bit, @n int, @new_key bigint,
--         @link_found bit, @applied bigint, @own nvarchar(max), @deleted bit, @dead_own bit, @moved_on bit, @child_entity nvarchar(128),
--         @known nvarchar(max), @linked_live bit, @tombstone bit,
--         @refs_ok bit, @missing_parent nvarchar(128), @missing_key nvarchar(max), @missing_gone bit,
--         @parent_link bit, @parent_deleted bit, @this_entity nvarchar(128), @this_key nvarchar(max),
--         @moved bit, @replaced bit, @new_own bit, @hint_taken bit, @old_found bit, @holds bit, @held bit, @newest_sent bit,
--         @r int, @r_mark nvarchar(200), @r_parent nvarchar(128), @r_key nvarchar(max),
--         @r_hint nvarchar(max), @parent_key nvarchar(max), @v nvarchar(4000),
--         @here nvarchar(max), @moved_from nvarchar(max), @resolution char(1), @local_seq bigint, @local_at datetimeoffset(7),
--         @local_op char(1), @local_image nvarchar(max), @winner char(1), @force bit,
--         @candidate nvarchar(max), @done bit, @put bit, @link_target nvarchar(max),
--         @link_deleted bit, @out_how char(1), @out_conflict bit, @superseded bigint,
--         @here_native nvarchar(max), @out_moot nvarchar(max), @holder nvarchar(max),
--         @old_native nvarchar(max), @last_delete bigint,
--         @err int, @msg nvarchar(4000), @restart bit = 1;
-- 
-- WHILE @restart = 1
-- BEGIN
--     SET @restart = 0;
--     DELETE FROM @out;
--     BEGIN TRANSACTION;
--     SET @i = -1;
--     WHILE 1 = 1
--     BEGIN
--         SELECT TOP (1) @i = i, @entity = entity, @tbl = tbl, @op = op, @seq = seq,
--                @source_key = source_key, @peer_hint = peer_hint, @hint_predates = hint_predates,
--                @first_seq = first_seq,
--                @peer_applied_seq = peer_applied_seq, @captured_at = captured_at,
--                @key_given = key_given, @key_problem = key_problem, @row_problem = row_problem,
--                @policy = policy, @derived = derived, @born = born, @source_key_given = source_key_given,
--                @row_values = row_values, @row_image = row_image, @refs = refs
--         FROM @changes WHERE i > @i ORDER BY i;
--         IF @@ROWCOUNT = 0 BREAK;
--         IF EXISTS (SELECT 1 FROM @skip WHERE i = @i)
--         BEGIN
--             INSERT INTO @out (i, fail, err_number, err_message)
--             SELECT i, 'R', err_number, err_message FROM @skip WHERE i = @i;
--             CONTINUE;
--         END;
--         SELECT @done = 0, @put = 0, @out_conflict = 0, @superseded = NULL, @here_native = NULL,
--                @out_moot = NULL, @held = 0;
--         SAVE TRANSACTION tandem_change;
--         BEGIN TRY
--             -- 1. Lock the record's link; the sequence guard.
--             SELECT @link_found = 0, @applied = NULL, @own = NULL, @deleted = 0, @dead_own = 0;
--             SELECT @link_found = 1, @applied = applied_seq, @own = {{own}}, @deleted = deleted
--             FROM {{schema}}.[id_map] WITH (UPDLOCK, HOLDLOCK)
--             WHERE entity = @entity AND {{peer}} = @source_key;
--             -- Where the source links this key to another record here than this link does
--             -- (keys given by values, reused): is this link's row gone here (its record was
--             -- deleted here, and that delete has not reached the source yet)?
--             SET @moved_on = 0;
--             IF @link_found = 1 AND @source_key_given = 1 AND @peer_hint IS NOT NULL
--                AND (@own IS NULL OR @own <> @peer_hint)
--             BEGIN
--                 IF @deleted = 0 AND @own IS NOT NULL
--                 BEGIN
--                     SELECT @key = @own, @found = 0;
-- {{lock_blocks}}
--                     IF @found = 0
--                         SET @dead_own = 1;
--                 END;
--                 -- A link that names no record here (its record was taken by another) keeps
--                 -- only the guard: the source's link says which record this is.
--                 IF @deleted = 0 AND @own IS NULL
--                     SET @dead_own = 1;
--                 -- The guard protects the record this link names; when that one is gone and the
--                 -- source's record lives here, the latter has not seen this delete yet (only a
--                 -- delete: an older update must not overwrite the newer record).
--                 IF @op = 'D' AND @applied >= @seq AND (@deleted = 1 OR @own IS NULL OR @dead_own = 1)
--                 BEGIN
--                     SELECT @key = @peer_hint, @found = 0;
-- {{lock_blocks}}
--                     SET @moved_on = @found;
--                 END;
--             END;
--             IF @link_found = 1 AND @applied >= @seq AND @moved_on = 0
--             BEGIN
--                 -- At a tombstone the record was deleted here: 'T' with the key it had, so the
--                 -- source's tombstone keeps the pair (Done::StaleDeleted).
--                 INSERT INTO @out (i, how, target_key)
--                 VALUES (@i, CASE WHEN @deleted = 1 AND @own IS NOT NULL THEN 'T' ELSE 'S' END, @own);
--                 SET @done = 1;
--             END;
-- 
--             IF @done = 0
--             BEGIN
--                 -- @hint_taken: no link here, and the source's hint names a key here that a live
--                 -- link gives another record of the source: the hint is older than that link
--                 -- (the key went to another record here since), and this side knows nothing of
--                 -- this record (as on PostgreSQL; simulation's full workload, seed 76215). Only
--                 -- where the source draws its keys: a key given by values may be this record's
--                 -- old one. Unless the hint is the newer one: a change of the key pending here,
--                 -- none a delete, was applied there (at or below its guard) and its reply was
--                 -- lost (endpoint::hint_newer_than_link on PostgreSQL; fault suite, seed 1002).
--                 SET @hint_taken = 0;
--                 IF @link_found = 0 AND @peer_hint IS NOT NULL AND @source_key_given = 0
--                     AND EXISTS (SELECT 1 FROM {{schema}}.[id_map]
--                                 WHERE entity = @entity AND {{own}} = @peer_hint AND deleted = 0
--                                   AND {{peer}} IS NOT NULL AND {{peer}} <> @source_key)
--                 BEGIN
--                     SELECT @hint_taken = 1, @key = @peer_hint, @native = NULL;
-- {{native_key_blocks}}
--                     IF EXISTS (SELECT 1 FROM {{schema}}.[outbox]
--                                WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
--                                  AND [key] = @native AND suspended = 0
--                                  AND seq <= @peer_applied_seq)
--                        AND NOT EXISTS (SELECT 1 FROM {{schema}}.[outbox]
--                                        WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
--                                          AND [key] = @native AND suspended = 0 AND op = 'D')
--                         SET @hint_taken = 0;
--                 END;
--                 -- What this side knows of the record: its own link, else the source's (the
--                 -- write-back of a link the source made may still be on its way here).
--                 -- A tombstone here of another record than the one the source now links this key
--                 -- to is older than that link where the source's keys are given by values (the
--                 -- key was taken by a new record): the source's link wins. So does a live link
--                 -- whose row is gone here (@dead_own).
--                 -- A record the source created after its delete of the one this link names (a
--                 -- number its application reused) whose reply was lost, so this link still names
--                 -- the number: the record under it is this side's new one (its insert the oldest
--                 -- change of it pending here after all the source has applied of this side's).
--                 -- Likewise a delete arriving at a tombstone here: the record it names was
--                 -- deleted here already, and a row under the number whose insert is that oldest
--                 -- change is this side's new record, which the delete must not remove (as on
--                 -- PostgreSQL; simulation's full workload, seed 50143).
--                 -- @new_own: that row is a new record of this side the source has not seen (as
--                 -- new_since on PostgreSQL); where keys are given here, a delete at a tombstone
--                 -- asks (below, once the key here is known), and a creation at a live link: this
--                 -- side deleted the record the link names, its delete lost at the source, which
--                 -- sent the record again as a creation; it is created again here under its own
--                 -- key, and the new record stays (simulation's variant without key changes at A,
--                 -- seed 110294; as on PostgreSQL). Not an update: a creation at both sides at
--                 -- once that landed here as one record has this side's insert pending too.
--                 SET @new_own = 0;
--                 IF @link_found = 1 AND @own IS NOT NULL
--                    AND ((@deleted = 0 AND @op = 'I' AND (@born = 1 OR @key_given = 1))
--                         OR (@deleted = 1 AND @op = 'D'))
--                 BEGIN
--                     SELECT @key = @own, @native = NULL;
-- {{native_key_blocks}}
--                     IF (SELECT TOP (1) op FROM {{schema}}.[outbox]
--                         WHERE entity = @entity AND key_prefix = LEFT(@native, 400) AND [key] = @native
--                           AND suspended = 0 AND seq > @peer_applied_seq
--                         ORDER BY seq) = 'I'
--                         SET @new_own = 1;
--                 END;
--                 SET @replaced = CASE WHEN @key_given = 0 OR @op = 'I' THEN @new_own ELSE 0 END;
--                 -- A delete arriving at a live link whose record this side deleted and created
--                 -- anew under the same number (an insert pending after its last pending delete;
--                 -- the reply of that delete lost, so the link still names the number): both
--                 -- sides deleted the record the link names, and the new record stays. Not where
--                 -- the source applied that insert: the two travelled as one change of the record,
--                 -- and the delete is of it (as on PostgreSQL; fault suite, full workload, seed
--                 -- 6655; simulation, seed 110685).
--                 IF @replaced = 0 AND @key_given = 0 AND @link_found = 1 AND @own IS NOT NULL
--                    AND @deleted = 0 AND @op = 'D'
--                 BEGIN
--                     SELECT @key = @own, @native = NULL;
-- {{native_key_blocks}}
--                     IF EXISTS (SELECT 1 FROM {{schema}}.[outbox] AS i
--                                WHERE i.entity = @entity AND i.key_prefix = LEFT(@native, 400)
--                                  AND i.[key] = @native AND i.op = 'I' AND i.suspended = 0
--                                  AND i.seq > @peer_applied_seq
--                                  AND i.seq > (SELECT MAX(d.seq) FROM {{schema}}.[outbox] AS d
--                                               WHERE d.entity = @entity
--                                                 AND d.key_prefix = LEFT(@native, 400)
--                                                 AND d.[key] = @native AND d.op = 'D'
--                                                 AND d.suspended = 0))
--                         SET @replaced = 1;
--                 END;
--                 -- So does the link of a delete that the source wrote before the delete, where
--                 -- this side has applied none of the changes the delete carries (as on
--                 -- PostgreSQL: TargetChange::delete_hint_holds; simulation's full workload,
--                 -- seed 52926).
--                 IF @link_found = 1 AND @source_key_given = 1
--                    AND (@deleted = 1 OR @dead_own = 1
--                         OR (@op = 'D' AND @hint_predates = 1 AND @applied < @first_seq))
--                    AND @peer_hint IS NOT NULL AND (@own IS NULL OR @own <> @peer_hint)
--                     SELECT @known = @peer_hint, @tombstone = 0, @linked_live = 1;
--                 -- A record the source created after its delete of the one this tombstone names
--                 -- (a number its application reused): another record, created anew here,
--                 -- whatever this side still has pending of the old one (as on PostgreSQL).
--                 ELSE IF (@link_found = 1 AND @deleted = 1 AND @op = 'I' AND @born = 1 AND @key_given = 0)
--                         OR @replaced = 1
--                     SELECT @known = NULL, @tombstone = 0, @linked_live = 0;
--                 ELSE IF @link_found = 1
--                     SELECT @known = @own, @tombstone = @deleted,
--                            @linked_live = CASE WHEN @own IS NOT NULL AND @deleted = 0 THEN 1 ELSE 0 END;
--                 -- See @hint_taken above.
--                 ELSE IF @hint_taken = 1
--                     SELECT @known = NULL, @tombstone = 0, @linked_live = 0;
--                 ELSE
--                     SELECT @known = @peer_hint, @tombstone = 0,
--                            @linked_live = CASE WHEN @peer_hint IS NOT NULL THEN 1 ELSE 0 END;
-- 
--                 -- 2. Parents: ref columns take the parent's key here.
--                 SELECT @row = @row_values, @image = @row_image, @refs_ok = 1, @r = -1,
--                        @missing_parent = NULL, @missing_key = NULL;
--                 WHILE @refs_ok = 1
--                 BEGIN
--                     -- The column holds the token "\u0001tandem-ref-N\u0001" (as JSON text: T-SQL
--                     -- literals keep the backslashes), built here rather than sent.
--                     SELECT TOP (1) @r = x.n,
--                            @r_mark = N'"\u0001tandem-ref-' + CONVERT(nvarchar(11), x.n) + N'\u0001"',
--                            @r_parent = x.parent, @r_key = x.[key], @r_hint = x.hint
--                     FROM OPENJSON(@refs) WITH (n int '$.n',
--                          parent nvarchar(128) '$.parent', [key] nvarchar(max) '$.key', hint nvarchar(max) '$.hint') AS x
--                     WHERE x.n > @r ORDER BY x.n;
--                     IF @@ROWCOUNT = 0 BREAK;
--                     -- The source's hint stands in only where there is no link here at all: a
--                     -- tombstone here knows better (the parent's delete is on its way there).
--                     SELECT @parent_key = NULL, @parent_link = 0, @parent_deleted = 0;
--                     SELECT @parent_key = {{own}}, @parent_link = 1, @parent_deleted = deleted
--                     FROM {{schema}}.[id_map]
--                     WHERE entity = @r_parent AND {{peer}} = @r_key;
--                     IF @parent_link = 0
--                         SET @parent_key = @r_hint;
--                     -- A parent whose delete here is still on its way is deleted too: a row at
--                     -- its key now is another record (keys given by values), which the child
--                     -- must not join; the same for the source's hint (simulation's full
--                     -- workload, seed 73430). The parent's key in the outbox's form, by its
--                     -- entity.
--                     IF @parent_deleted = 0 AND @parent_key IS NOT NULL AND @op <> 'D'
--                     BEGIN
--                         SELECT @this_entity = @entity, @this_key = @key,
--                                @entity = @r_parent, @key = @parent_key, @native = NULL;
-- {{native_key_blocks}}
--                         SELECT @entity = @this_entity, @key = @this_key;
--                         IF EXISTS (SELECT 1 FROM {{schema}}.[outbox]
--                                    WHERE entity = @r_parent AND key_prefix = LEFT(@native, 400)
--                                      AND [key] = @native AND op = 'D' AND suspended = 0)
--                             SET @parent_deleted = 1;
--                     END;
--                     IF @parent_deleted = 1 AND @op <> 'D'
--                         SET @parent_key = NULL;
--                     IF @parent_key IS NULL
--                         SELECT @refs_ok = 0, @missing_parent = @r_parent, @missing_key = @r_key,
--                                @missing_gone = CASE WHEN @parent_deleted = 1 AND @op <> 'D' THEN 1 ELSE 0 END;
--                     ELSE
--                     BEGIN
--                         -- The ref column holds a marker token (2016 has no JSON_MODIFY with a
--                         -- computed path): replace it by the parent's key value, as a JSON string
--                         -- that OPENJSON ... WITH converts to the column's type.
--                         SET @v = N'"' + STRING_ESCAPE(JSON_VALUE(@parent_key, '$[0]'), 'json') + N'"';
--                         SET @row = REPLACE(@row, @r_mark, @v);
--                         SET @image = REPLACE(@image, @r_mark, @v);
--                     END;
--                 END;
-- 
--                 -- A creation at the source under a key given by values, which the source links
--                 -- to nothing, where the link here names a live record that no longer holds
--                 -- those values: the link was written back before this side's move of the record
--                 -- reached the source (whose reply was lost), so the source's record under that
--                 -- key is another, new one (as moved_away on PostgreSQL; found by the
--                 -- simulation's full workload, seed 12653).
--                 -- A delete the source links to nothing, where the link here names a live
--                 -- record that no longer holds the key's values and has changes pending here
--                 -- captured before the delete: either this side moved it and the move reached
--                 -- the source, whose reply was lost (the delete is of another record, created
--                 -- there under the freed key), or the source's record is this one and both
--                 -- sides changed it at once. Those changes' replies tell which: the delete
--                 -- waits until they have settled (51004, caught below as H; seed 68782, as on
--                 -- PostgreSQL). A move here newer than the delete cannot have freed the key at
--                 -- the source before it: the delete is of this record (a conflict below).
--                 IF @refs_ok = 1 AND (@op = 'D' OR (@op = 'I' AND @born = 1)) AND @source_key_given = 1
--                    AND @key_given = 0 AND @peer_hint IS NULL AND @linked_live = 1
--                    AND @known IS NOT NULL AND @known = @own
--                 BEGIN
--                     SELECT @key = @own, @found = 0, @holds = 0;
-- {{holds_natural_blocks}}
--                     IF @found = 1 AND @holds = 0 AND @op = 'D'
--                     BEGIN
--                         SET @native = NULL;
-- {{native_key_blocks}}
--                         IF EXISTS (SELECT 1 FROM {{schema}}.[outbox]
--                                    WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
--                                      AND [key] = @native AND suspended = 0
--                                      AND captured_at < @captured_at)
--                         BEGIN
--                             SET @here = @own;
--                             SET @msg = N'the record ' + @own + N' at side ' + {{here_lit}}
--                                 + N' linked to this key no longer holds it, and its changes are still on their way to side '
--                                 + {{incoming_lit}} + N'; this delete waits until they have settled';
--                             ;THROW 51004, @msg, 1;
--                         END;
--                     END
--                     ELSE IF @found = 1 AND @holds = 0
--                         SELECT @known = NULL, @tombstone = 0, @linked_live = 0;
--                 END;
-- 
--                 -- An update of a record the source links to another record here than this live
--                 -- link does, where the record this link names no longer holds the key's values
--                 -- here, and the hinted one is here with a change pending, none a delete, that
--                 -- the source has applied (at or below its guard): this side moved the linked
--                 -- record, its move reached the source, and the hinted record took the freed key
--                 -- there; both replies were lost. The hint is the newer link, and the update is
--                 -- of the hinted record (as hint_newer on PostgreSQL; simulation's variant
--                 -- without key changes at A, seed 52926: it landed on the moved record, beat its
--                 -- pending move and removed its row as a copy of the hinted one).
--                 IF @refs_ok = 1 AND @op = 'U' AND @source_key_given = 1 AND @key_given = 0
--                    AND @peer_hint IS NOT NULL AND @linked_live = 1 AND @known IS NOT NULL
--                    AND @known = @own AND @own <> @peer_hint
--                 BEGIN
--                     SELECT @key = @own, @found = 0, @holds = 0;
-- {{holds_natural_blocks}}
--                     IF @found = 1 AND @holds = 0
--                     BEGIN
--                         SELECT @key = @peer_hint, @found = 0, @native = NULL;
-- {{lock_blocks}}
-- {{native_key_blocks}}
--                         IF @found = 1
--                            AND EXISTS (SELECT 1 FROM {{schema}}.[outbox]
--                                        WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
--                                          AND [key] = @native AND suspended = 0
--                                          AND seq <= @peer_applied_seq)
--                            AND NOT EXISTS (SELECT 1 FROM {{schema}}.[outbox]
--                                            WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
--                                              AND [key] = @native AND suspended = 0 AND op = 'D')
--                             SET @known = @peer_hint;
--                     END;
--                 END;
-- 
--                 -- 3. The record's key here, as far as it is known before writing.
--                 SET @given = NULL;
--                 IF @key_given = 1 AND @refs_ok = 1
--                 BEGIN
--                     IF @key_problem IS NOT NULL AND @op <> 'D'
--                     BEGIN
--                         ;THROW 51001, @key_problem, 1;
--                     END;
--                     IF @key_problem IS NULL
--                     BEGIN
-- {{given_key_blocks}}
--                     END;
--                 END;
--                 IF @refs_ok = 0 AND @op <> 'D'
--                 BEGIN
--                     ROLLBACK TRANSACTION tandem_change;
--                     INSERT INTO @out (i, fail, parent, parent_key)
--                     VALUES (@i, CASE WHEN @missing_gone = 1 THEN 'G' ELSE 'P' END, @missing_parent, @missing_key);
--                     SET @done = 1;
--                 END;
--             END;
-- 
--             IF @done = 0
--             BEGIN
--                 SET @here = CASE WHEN @key_given = 1 THEN COALESCE(@given, @known) ELSE @known END;
--                 -- A key given by values that another live record holds here is not this
--                 -- record's: its image is older than that record's, so it waits (retried) until
--                 -- that record moves or is deleted, or a newer change of its own supersedes it.
--                 -- A delete settles without touching that record's row, link or pending changes.
--                 IF @key_given = 1 AND @here IS NOT NULL AND @op = 'D'
--                     AND EXISTS (SELECT 1 FROM {{schema}}.[id_map]
--                                 WHERE entity = @entity AND {{own}} = @here AND deleted = 0
--                                   AND {{peer}} IS NOT NULL AND {{peer}} <> @source_key)
--                     SET @here = NULL;
--                 -- A delete of a record this side has no link of, nor the source: nothing of
--                 -- it reached here (its insert never came, or waits below for this side's own
--                 -- one). A row under its key given here that is a new record of this side (its
--                 -- insert pending here) is another record, and stays (found by the simulation's
--                 -- full workload, seeds 2673 and 6044; as on PostgreSQL).
--                 IF @key_given = 1 AND @here IS NOT NULL AND @op = 'D'
--                     AND @link_found = 0 AND @peer_hint IS NULL
--                 BEGIN
--                     SELECT @key = @here, @native = NULL;
-- {{native_key_blocks}}
--                     IF EXISTS (SELECT 1 FROM {{schema}}.[outbox]
--                                WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
--                                  AND [key] = @native AND op = 'I' AND suspended = 0)
--                         SET @here = NULL;
--                 END;
--                 -- A delete arriving at a tombstone here, under a key given here by values that
--                 -- a new record of this side holds now (its insert the oldest change of it
--                 -- pending here after all the source has applied of this side's changes of the
--                 -- record): the record it names was deleted here already, and the new one under
--                 -- the reused key stays (@new_own, as @replaced above for keys drawn here;
--                 -- simulation's default workload, seed 484427; as on PostgreSQL).
--                 IF @key_given = 1 AND @here IS NOT NULL AND @op = 'D' AND @new_own = 1
--                     AND @own COLLATE Latin1_General_100_BIN2 = @here
--                     SET @here = NULL;
--                 IF @key_given = 1 AND @given IS NOT NULL AND @op <> 'D'
--                 BEGIN
--                     SET @v = NULL;
--                     SELECT TOP (1) @v = {{peer}} FROM {{schema}}.[id_map]
--                     WHERE entity = @entity AND {{own}} = @given AND deleted = 0
--                       AND {{peer}} IS NOT NULL AND {{peer}} <> @source_key;
--                     -- A record this side deleted and created anew under the key (an insert
--                     -- after its last pending delete, the new record's updates after it) does
--                     -- not hold it: the link names the deleted record, whose delete has not come
--                     -- back confirmed (its reply was lost). The upsert meets the new record as a
--                     -- conflict below (seed 13671; also with updates after the insert, seeds
--                     -- 83823 and 92172 of the variant without key changes at A; as on
--                     -- PostgreSQL).
--                     IF @v IS NOT NULL
--                     BEGIN
--                         SELECT @key = @given, @native = NULL;
-- {{native_key_blocks}}
--                         IF EXISTS (SELECT 1 FROM {{schema}}.[outbox] AS i
--                                    WHERE i.entity = @entity AND i.key_prefix = LEFT(@native, 400)
--                                      AND i.[key] = @native AND i.op = 'I' AND i.suspended = 0
--                                      AND i.seq > (SELECT MAX(d.seq) FROM {{schema}}.[outbox] AS d
--                                                   WHERE d.entity = @entity
--                                                     AND d.key_prefix = LEFT(@native, 400)
--                                                     AND d.[key] = @native AND d.op = 'D'
--                                                     AND d.suspended = 0))
--                             SET @v = NULL;
--                         -- A record moving onto a key held by a record that stays there
--                         -- whatever its peer's changes say does not wait for it to move. It
--                         -- stays where its changes pending here (its row here, the newest not a
--                         -- delete) beat a user's change captured at the source when this one
--                         -- was: then they beat any move of its peer away from the key, which the
--                         -- source made before this change took it. The move meets it as a
--                         -- conflict below, loses, and is put back under its old key at its side
--                         -- (@held; seed 87994, as on PostgreSQL).
--                         ELSE IF @linked_live = 1 AND @known IS NOT NULL
--                             AND @known COLLATE Latin1_General_100_BIN2 <> @given
--                         BEGIN
--                             SELECT @local_op = NULL, @local_at = NULL;
--                             SELECT TOP (1) @local_op = op, @local_at = captured_at
--                             FROM {{schema}}.[outbox]
--                             WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
--                               AND [key] = @native AND suspended = 0
--                             ORDER BY seq DESC;
--                             IF @local_op <> 'D'
--                                 AND EXISTS (SELECT 1 FROM {{schema}}.[outbox]
--                                             WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
--                                               AND [key] = @native AND derived = 0 AND suspended = 0)
--                                 AND ((@policy = 'a_wins' AND {{here_lit}} = N'A')
--                                      OR (@policy = 'b_wins' AND {{here_lit}} = N'B')
--                                      OR (@policy = 'newest_wins'
--                                          AND (@local_at > @captured_at
--                                               OR (@local_at = @captured_at AND {{here_lit}} = N'A'))))
--                             BEGIN
--                                 SELECT @key = @given, @found = 0;
-- {{lock_blocks}}
--                                 IF @found = 1
--                                     SELECT @held = 1, @v = NULL;
--                             END;
--                         END;
--                     END;
--                     IF @v IS NOT NULL
--                     BEGIN
--                         SET @msg = N'key ' + @given + N' at side ' + {{here_lit}}
--                             + N' belongs to another record (side ' + {{incoming_lit}} + N' key ' + @v
--                             + N'); this change waits until that record moves or is deleted, or a newer change of this record arrives';
--                         ;THROW 51003, @msg, 1;
--                     END;
--                 END;
--                 -- A creation at the source under a key given here by values, where this
--                 -- side's own new record under that key, linked to nothing, was sent to the
--                 -- source already (its insert, or an update after its pending insert, at or
--                 -- below the sent mark, never failed or sent again since): the reply may have
--                 -- been lost, its copy may be there, and then the source's record is another
--                 -- one (an update travels as the insert that failed earlier in its burst: seed
--                 -- 62166 of the simulation's variant).
--                 -- Merging the two here would leave that copy linked to nothing at the source.
--                 -- The change waits until this side's insert is confirmed (linked) or failed
--                 -- (51004, caught below as H; seeds 8082 and 21577, as on PostgreSQL). So it does
--                 -- where that record was deleted here since (its row gone, its newest pending
--                 -- change a delete not sent yet): winning over that delete as a conflict would
--                 -- discard it, and its copy would stay at the source (seed 91390). A linked
--                 -- record moving onto that key waits the same: winning there would take the new
--                 -- record over, and its copy there would stay linked to nothing (seed 57548 of
--                 -- the variant, as on PostgreSQL).
--                 IF @key_given = 1 AND @here IS NOT NULL
--                     AND ((@op = 'I' AND @born = 1 AND @link_found = 0 AND @peer_hint IS NULL)
--                          OR (@op <> 'D' AND @linked_live = 1 AND @known IS NOT NULL
--                              AND @given IS NOT NULL AND @known <> @given))
--                     AND NOT EXISTS (SELECT 1 FROM {{schema}}.[id_map]
--                                     WHERE entity = @entity AND {{own}} = @here AND deleted = 0)
--                 BEGIN
--                     SELECT @key = @here, @found = 0, @native = NULL;
-- {{lock_blocks}}
-- {{native_key_blocks}}
--                     IF EXISTS (SELECT 1 FROM {{schema}}.[outbox] AS s
--                                WHERE s.entity = @entity AND s.key_prefix = LEFT(@native, 400)
--                                  AND s.[key] = @native AND s.op <> 'D' AND s.suspended = 0
--                                  AND (s.attempts = 0 OR s.next_attempt_at IS NULL)
--                                  AND s.seq <= (SELECT seq FROM {{schema}}.[sent_mark])
--                                  AND EXISTS (SELECT 1 FROM {{schema}}.[outbox] AS i
--                                              WHERE i.entity = @entity
--                                                AND i.key_prefix = LEFT(@native, 400)
--                                                AND i.[key] = @native AND i.op = 'I'
--                                                AND i.suspended = 0 AND i.seq <= s.seq))
--                     BEGIN
--                         -- The newest pending change, and whether it was sent too.
--                         SELECT @local_op = NULL, @newest_sent = 0, @msg = NULL;
--                         SELECT TOP (1) @local_op = o.op,
--                                @newest_sent = CASE WHEN (o.attempts = 0 OR o.next_attempt_at IS NULL)
--                                                         AND o.seq <= m.seq THEN 1 ELSE 0 END
--                         FROM {{schema}}.[outbox] AS o CROSS JOIN {{schema}}.[sent_mark] AS m
--                         WHERE o.entity = @entity AND o.key_prefix = LEFT(@native, 400)
--                           AND o.[key] = @native AND o.suspended = 0
--                         ORDER BY o.seq DESC;
--                         IF @found = 1 AND @local_op <> 'D'
--                             SET @msg = N' holds a new record of this side, sent to side ' + {{incoming_lit}}
--                                 + N' with no reply yet; this change waits until that record is linked or its insert fails';
--                         -- Not where that delete was sent too: it came with the insert as one
--                         -- change that created nothing there, or reached the copy (seed 3053).
--                         IF @found = 0 AND @local_op = 'D' AND @newest_sent = 0
--                             SET @msg = N' held a new record of this side, sent to side ' + {{incoming_lit}}
--                                 + N' with no reply yet and deleted here since; this change waits until that record is linked (its delete then goes first) or its insert fails';
--                         IF @msg IS NOT NULL
--                         BEGIN
--                             SET @msg = N'key ' + @here + N' at side ' + {{here_lit}} + @msg;
--                             ;THROW 51004, @msg, 1;
--                         END;
--                     END;
--                 END;
--                 -- 4. A change of this record captured here and not yet applied at the other side
--                 -- means it changed on both sides: the entity's policy settles it.
--                 SET @resolution = 'N';
--                 DELETE FROM @beaten;
--                 -- A move (a key given by values changed at the source): changes pending here of
--                 -- the record under its old key conflict as much as under its new. Where this
--                 -- side's win, the record stays under its old key and the move is not applied;
--                 -- the changes it beats go only if it wins under its new key too (@beaten; as on
--                 -- PostgreSQL, seed 12476).
--                 IF @key_given = 1 AND @op <> 'D' AND @linked_live = 1 AND @known IS NOT NULL
--                    AND @given IS NOT NULL AND @known COLLATE Latin1_General_100_BIN2 <> @given
--                 BEGIN
--                     SELECT @key = @known, @native = NULL;
-- {{native_key_blocks}}
--                     DELETE FROM @pending;
--                     INSERT INTO @pending (seq, captured_at, op, image, derived)
--                     SELECT seq, captured_at, op, image, derived FROM {{schema}}.[outbox]
--                     WHERE entity = @entity AND key_prefix = LEFT(@native, 400) AND [key] = @native
--                       AND suspended = 0
--                       AND seq > CASE WHEN @peer_hint IS NOT NULL
--                                       AND @peer_hint COLLATE Latin1_General_100_BIN2 <> @known
--                                      THEN 0 ELSE @peer_applied_seq END;
--                     SET @n = @@ROWCOUNT;
--                     IF @n > 0
--                     BEGIN
--                         SELECT TOP (1) @local_seq = seq, @local_at = captured_at, @local_op = op,
--                                @local_image = image
--                         FROM @pending ORDER BY seq DESC;
--                         SELECT @key = @known, @found = 0;
-- {{lock_blocks}}
--                         -- Changes of a row gone here without a captured delete decide nothing.
--                         IF @local_op <> 'D' AND @found = 0
--                         BEGIN
--                             DELETE o FROM {{schema}}.[outbox] AS o JOIN @pending AS p ON o.seq = p.seq;
--                             SET @n = 0;
--                         END;
--                     END;
--                     IF @n > 0
--                     BEGIN
--                         SET @winner = {{winner_case}};
--                         INSERT INTO {{schema}}.[conflicts]
--                             (entity, incoming_side, incoming_key, local_key, policy, winner,
--                              incoming_op, incoming_image, local_op, local_image)
--                         VALUES (@entity, {{incoming_lit}}, @source_key, @known, @policy, @winner,
--                                 @op, @image, @local_op, @local_image);
--                         IF @winner = {{incoming_lit}}
--                             INSERT INTO @beaten (seq) SELECT seq FROM @pending;
--                         ELSE
--                         BEGIN
--                             -- The record stays under its old key; this side's changes travel
--                             -- (a delete of a record not linked here again, as a new change, as
--                             -- below).
--                             IF @local_op = 'D' AND (@link_found = 0 OR @deleted = 1 OR @own IS NULL
--                                                     OR @own COLLATE Latin1_General_100_BIN2 <> @known)
--                                 INSERT INTO {{schema}}.[outbox] (entity, op, [key], key_prefix, image, captured_at, derived)
--                                 SELECT entity, op, [key], key_prefix, image, captured_at, derived
--                                 FROM {{schema}}.[outbox] WHERE seq = @local_seq;
--                             UPDATE {{schema}}.[id_map] WITH (SERIALIZABLE)
--                             SET applied_seq = CASE WHEN applied_seq > @seq THEN applied_seq ELSE @seq END,
--                                 {{own}} = COALESCE({{own}}, @known), updated_at = SYSDATETIMEOFFSET()
--                             WHERE entity = @entity AND {{peer}} = @source_key;
--                             IF @@ROWCOUNT = 0
--                                 INSERT INTO {{schema}}.[id_map] (entity, {{peer}}, {{own}}, applied_seq, deleted)
--                                 VALUES (@entity, @source_key, @known, @seq, 0);
--                             INSERT INTO @out (i, how, target_key, conflict) VALUES (@i, 'C', @known, 1);
--                             SET @done = 1;
--                         END;
--                     END;
--                 END;
--                 IF @here IS NOT NULL AND @done = 0
--                 BEGIN
--                     SELECT @key = @here, @native = NULL;
-- {{native_key_blocks}}
--                     SET @here_native = @native;
--                     DELETE FROM @pending;
--                     INSERT INTO @pending (seq, captured_at, op, image, derived)
--                     SELECT seq, captured_at, op, image, derived FROM {{schema}}.[outbox]
--                     WHERE entity = @entity AND key_prefix = LEFT(@native, 400) AND [key] = @native
--                       AND suspended = 0
--                       -- The source's guard counts this side's changes of the record it links;
--                       -- under a key the record is not linked to here, they are another record's.
--                       -- So under a key the source did not link when it read the guard (a move
--                       -- that landed here, whose reply had not reached it: seed 37896).
--                       AND seq > CASE WHEN @known IS NOT NULL
--                                       AND @known COLLATE Latin1_General_100_BIN2 <> @here
--                                      THEN 0
--                                      WHEN @peer_hint IS NOT NULL
--                                       AND @peer_hint COLLATE Latin1_General_100_BIN2 <> @here
--                                      THEN 0 ELSE @peer_applied_seq END;
--                     SET @n = @@ROWCOUNT;
--                     -- Changes of a row that is gone here without a captured delete: tandem
--                     -- deleted it, applying the other side's delete, which could pass only once
--                     -- they had been applied there (their replies lost). They decide nothing.
--                     IF @n > 0
--                     BEGIN
--                         SELECT TOP (1) @local_op = op FROM @pending ORDER BY seq DESC;
--                         SELECT @key = @here, @found = 0;
-- {{lock_blocks}}
--                         IF @local_op <> 'D' AND @found = 0
--                         BEGIN
--                             DELETE o FROM {{schema}}.[outbox] AS o JOIN @pending AS p ON o.seq = p.seq;
--                             SET @n = 0;
--                         END;
--                         -- Both sides deleted the record: they agree, nothing to decide (the
--                         -- local delete travels and settles on nothing there).
--                         IF @op = 'D' AND @local_op = 'D'
--                             SET @n = 0;
--                     END;
--                     IF @n > 0
--                     BEGIN
--                         SELECT TOP (1) @local_seq = seq, @local_at = captured_at, @local_op = op,
--                                @local_image = image
--                         FROM @pending ORDER BY seq DESC;
--                         -- A change tandem's own apply caused (derived: a cascade, a trigger's
--                         -- effect) loses to a user's change; otherwise the policy decides, and
--                         -- ties go to A, so both sides decide the same way (winner_case in
--                         -- entity.sql, shared with the landing on a new local record below).
--                         SET @winner = {{winner_case}};
--                         INSERT INTO {{schema}}.[conflicts]
--                             (entity, incoming_side, incoming_key, local_key, policy, winner,
--                              incoming_op, incoming_image, local_op, local_image)
--                         VALUES (@entity, {{incoming_lit}}, @source_key, @here, @policy, @winner,
--                                 @op, CASE WHEN @op <> 'D' THEN @image END, @local_op, @local_image);
--                         IF @winner = {{incoming_lit}}
--                         BEGIN
--                             DELETE o FROM {{schema}}.[outbox] AS o JOIN @pending AS p ON o.seq = p.seq;
--                             SELECT @resolution = 'I', @superseded = MAX(seq) FROM @pending;
--                         END
--                         ELSE
--                         BEGIN
--                             -- The local changes won over a delete: they travel as inserts, to
--                             -- create the record again at the other side (all of them: an older
--                             -- one arriving there as an update would be discarded as an update
--                             -- after that delete, and unlink the record: found by the simulation).
--                             IF @op = 'D' AND @local_op <> 'D'
--                             BEGIN
--                                 -- As new changes, in their order, with their capture
--                                 -- times: a copy of one claimed before this conflict may be
--                                 -- on its way as an update still, and its reply must find its
--                                 -- row gone (a late reply changes nothing) instead of settling
--                                 -- the insert it has become (found by the fault suite, seed
--                                 -- 5517: the record stayed at this side only). Their retry
--                                 -- state stays theirs.
--                                 INSERT INTO {{schema}}.[outbox] (entity, op, [key], key_prefix, image, captured_at, derived,
--                                     attempts, next_attempt_at, last_error, first_failed_at, last_failed_at)
--                                 SELECT o.entity, CASE WHEN o.op = 'U' THEN 'I' ELSE o.op END, o.[key],
--                                        o.key_prefix, o.image, o.captured_at, o.derived, o.attempts,
--                                        o.next_attempt_at, o.last_error, o.first_failed_at, o.last_failed_at
--                                 FROM {{schema}}.[outbox] AS o JOIN @pending AS p ON o.seq = p.seq
--                                 ORDER BY o.seq;
--                                 DELETE o FROM {{schema}}.[outbox] AS o JOIN @pending AS p ON o.seq = p.seq;
--                                 -- The other side creates the record again, under a new key
--                                 -- where its keys are generated; its children there that
--                                 -- outlived the delete (no foreign key) still name the old
--                                 -- one: the children here travel again, derived, and move
--                                 -- there under it (found by the simulation's full workload).
-- {{children_resend_blocks}}
--                             END;
--                             -- A local delete that beats the other side's change of a record
--                             -- not linked here (it landed on this key) travels again, as a new
--                             -- change: a copy of it may have reached the other side before that
--                             -- record was linked there, and settled on nothing (found by the
--                             -- simulation's full workload, seed 3053; as on PostgreSQL).
--                             IF @op <> 'D' AND @local_op = 'D'
--                                AND (@link_found = 0 OR @deleted = 1 OR @own IS NULL
--                                     OR @own COLLATE Latin1_General_100_BIN2 <> @here)
--                                 INSERT INTO {{schema}}.[outbox] (entity, op, [key], key_prefix, image, captured_at, derived)
--                                 SELECT entity, op, [key], key_prefix, image, captured_at, derived
--                                 FROM {{schema}}.[outbox] WHERE seq = @local_seq;
--                             -- The losing change is settled: later copies of it are stale. A
--                             -- link naming this key for another record is stale (as in 6.).
--                             -- Not where the record held by another one stays (@held): the
--                             -- move is put back below, and that record keeps its link.
--                             IF @here IS NOT NULL AND @held = 0
--                             BEGIN
--                                 DELETE FROM {{schema}}.[id_map]
--                                 WHERE entity = @entity AND {{own}} = @here AND {{peer}} IS NULL;
--                                 UPDATE {{schema}}.[id_map] SET {{own}} = NULL, deleted = 1, updated_at = SYSDATETIMEOFFSET()
--                                 WHERE entity = @entity AND {{own}} = @here AND {{peer}} <> @source_key;
--                             END;
--                             -- A record the other side moved to a key given here that a local
--                             -- record holds (whose change won) lands on that record: two records
--                             -- claimed one key at once, so one record now, the winner's values,
--                             -- and the link names it (as on PostgreSQL). Its old row here goes
--                             -- (the record moved), unless this side changed it meanwhile or
--                             -- rows refer to it (@n stays 0): then it stays there, and no change
--                             -- pending here would put it back at the other side, so its row
--                             -- travels as an update (found by the simulation's full workload).
--                             SET @v = NULL;
--                             IF @key_given = 1 AND @op <> 'D' AND @given IS NOT NULL
--                                 SELECT @v = {{own}} FROM {{schema}}.[id_map]
--                                 WHERE entity = @entity AND {{peer}} = @source_key AND deleted = 0
--                                   AND {{own}} <> @given;
--                             SET @moved_from = @v;
--                             IF @v IS NOT NULL
--                             BEGIN
--                                 SELECT @key = @v, @found = 0;
-- {{lock_blocks}}
--                                 SET @old_found = @found;
--                                 SELECT @key = @here, @found = 0;
-- {{lock_blocks}}
--                                 IF @old_found = 1
--                                 BEGIN
--                                     SELECT @key = @v, @native = NULL, @n = 0;
-- {{native_key_blocks}}
--                                     IF @found = 1 AND @held = 0 AND NOT EXISTS (
--                                         SELECT 1 FROM {{schema}}.[outbox]
--                                         WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
--                                           AND [key] = @native AND suspended = 0
--                                           AND seq > @peer_applied_seq)
--                                     BEGIN
--                                         -- Not captured, as every write of an apply (5.).
--                                         EXEC sys.sp_set_session_context N'tandem.applying', @tbl;
--                                         EXEC sys.sp_set_session_context N'tandem.entity', @entity;
-- {{leaf_delete_blocks}}
--                                         EXEC sys.sp_set_session_context N'tandem.applying', NULL;
--                                     END;
--                                     IF @n = 0
--                                     BEGIN
-- {{requeue_blocks}}
--                                         SET @v = NULL;
--                                     END;
--                                 END
--                                 ELSE IF @found = 0
--                                     SET @v = NULL;
--                             END;
--                             -- A move that lost and did not land: the record's key here is
--                             -- still its old one (reported so; the source links it there).
--                             IF @v IS NULL AND @moved_from IS NOT NULL
--                                 SET @here = @moved_from;
--                             -- A lost delete deleted the record at the other side for good where
--                             -- keys are generated there (the winner travels as an insert and gets
--                             -- a new key): a tombstone; where they are given by values, the
--                             -- winner comes back under the same key and the link stays.
--                             UPDATE {{schema}}.[id_map] WITH (SERIALIZABLE)
--                             SET applied_seq = CASE WHEN applied_seq > @seq THEN applied_seq ELSE @seq END,
--                                 {{own}} = CASE WHEN @v IS NOT NULL THEN @here ELSE COALESCE({{own}}, @here) END,
--                                 deleted = CASE WHEN @op = 'D' AND @source_key_given = 0 THEN 1 ELSE deleted END,
--                                 updated_at = SYSDATETIMEOFFSET()
--                             WHERE entity = @entity AND {{peer}} = @source_key;
--                             IF @@ROWCOUNT = 0
--                                 INSERT INTO {{schema}}.[id_map] (entity, {{peer}}, {{own}}, applied_seq, deleted)
--                                 VALUES (@entity, @source_key, @here, @seq, CASE WHEN @op = 'D' AND @source_key_given = 0 THEN 1 ELSE 0 END);
--                             INSERT INTO @out (i, how, target_key, conflict) VALUES (@i, 'C', @here, 1);
--                             SET @done = 1;
--                         END;
--                     END;
--                 END;
--             END;
-- 
--             -- The changes a move beat under its old key go: it won under its new key too.
--             IF @done = 0 AND EXISTS (SELECT 1 FROM @beaten)
--             BEGIN
--                 DELETE o FROM {{schema}}.[outbox] AS o JOIN @beaten AS b ON o.seq = b.seq;
--                 SELECT @local_seq = MAX(seq) FROM @beaten;
--                 IF @superseded IS NULL OR @local_seq > @superseded
--                     SET @superseded = @local_seq;
--                 SET @resolution = 'I';
--             END;
-- 
--             IF @done = 0
--             BEGIN
--                 -- 5. Write. Tandem's own writes are marked so the capture trigger skips them.
--                 SET @force = CASE WHEN @resolution = 'I' THEN 1 ELSE 0 END;
--                 SET @out_conflict = @force;
--                 EXEC sys.sp_set_session_context N'tandem.applying', @tbl;
--                 -- Entities sharing the table capture this write (sql/mssql/trigger.sql).
--                 EXEC sys.sp_set_session_context N'tandem.entity', @entity;
--                 IF @op = 'D'
--                 BEGIN
--                     SET @out_how = 'U';
--                     IF @here IS NOT NULL
--                     BEGIN
--                         SELECT @key = @here, @n = 0;
-- {{delete_blocks}}
--                         IF @n > 0 SET @out_how = 'W';
--                         -- Changes of the record this delete removed that can decide nothing
--                         -- any more: suspended ones (it was gone at the other side already),
--                         -- and pending updates the other side's guard counts as seen before it
--                         -- deleted the record (simulation, full workload, seed 64491), and
--                         -- creations and updates older than a delete pending here: the record
--                         -- is deleted at both sides, and they would create it again at the
--                         -- other side (seed 2496 of the variant without key changes at A). Moot,
--                         -- settled instead of left for an operator (as on PostgreSQL).
--                         DELETE FROM @moot;
--                         SET @last_delete = NULL;
--                         SELECT @last_delete = MAX(seq) FROM {{schema}}.[outbox]
--                         WHERE entity = @entity AND key_prefix = LEFT(@here_native, 400)
--                           AND [key] = @here_native AND op = 'D' AND suspended = 0;
--                         DELETE FROM {{schema}}.[outbox]
--                         OUTPUT deleted.seq INTO @moot (seq)
--                         WHERE entity = @entity AND key_prefix = LEFT(@here_native, 400)
--                           AND [key] = @here_native
--                           AND (suspended = 1
--                                OR (op <> 'D' AND seq < @last_delete)
--                                OR (op = 'U'
--                                    AND seq <= CASE WHEN @known IS NOT NULL
--                                                     AND @known COLLATE Latin1_General_100_BIN2 <> @here
--                                                    THEN 0
--                                                    WHEN @peer_hint IS NOT NULL
--                                                     AND @peer_hint COLLATE Latin1_General_100_BIN2 <> @here
--                                                    THEN 0 ELSE @peer_applied_seq END));
--                         IF EXISTS (SELECT 1 FROM @moot)
--                             SET @out_moot = (SELECT seq FROM @moot ORDER BY seq FOR JSON PATH);
--                     END;
--                     SELECT @put = 1, @link_target = @here, @link_deleted = 1;
--                 END
--                 ELSE IF @tombstone = 1 AND @op = 'U' AND @force = 0
--                     -- An update after a delete: the record is gone here, and the delete wins.
--                     SELECT @put = 1, @link_target = @known, @link_deleted = 1, @out_how = 'D';
--                 ELSE
--                 BEGIN
--                     -- A value tandem could not convert for its column fails here, where
--                     -- PostgreSQL's typed read of the row would.
--                     IF @row_problem IS NOT NULL
--                     BEGIN
--                         ;THROW 51000, @row_problem, 1;
--                     END;
--                     -- A record the other side moved to another key given here (a line
--                     -- renumbered, an item moved to another order) leaves its old row: it is
--                     -- written under its new key below (as on PostgreSQL; without this, the
--                     -- change was taken for an update of a record deleted here and dropped).
--                     SET @moved = 0;
--                     IF @key_given = 1 AND @given IS NOT NULL AND @linked_live = 1
--                        AND @known IS NOT NULL AND @known COLLATE Latin1_General_100_BIN2 <> @given
--                     BEGIN
--                         SELECT @key = @known, @n = 0;
-- {{delete_blocks}}
--                         IF @n > 0 SET @moved = 1;
--                     END;
--                     -- After a tombstone the record is created anew, unless the incoming change
--                     -- won a conflict against this side's changes of the record here.
--                     SET @candidate = CASE WHEN @key_given = 1 THEN @given
--                                           WHEN @tombstone = 1 AND @force = 0 THEN NULL ELSE @known END;
--                     SET @found = 0;
--                     IF @candidate IS NOT NULL
--                     BEGIN
--                         SET @key = @candidate;
-- {{lock_blocks}}
--                     END;
--                     -- A linked record put back under values of the other side's key that a
--                     -- new record of this side holds here (not linked, its insert pending):
--                     -- two records claimed one key at once, so they end as one, as two created
--                     -- under one key do. The change lands on that record (the policy decides
--                     -- against its pending changes), and the linked record's old row goes, not
--                     -- captured: nothing of it is pending here, so it is a copy of the incoming
--                     -- record (as lands_on_new_local on PostgreSQL; found by the simulation's
--                     -- full workload, seed 471 and 17 more). Only for a leaf entity with real
--                     -- deletes (natural_holder). The same where the incoming record is new here
--                     -- (or created anew after a tombstone): two records created under one key at
--                     -- once are one record at once, as at the side given the key, provided the
--                     -- local one has nothing pending but its insert (one moved onto the key
--                     -- still travels as a move; seed 1739 and 3 more, 760 for the move).
--                     SET @holder = NULL;
--                     IF @found = 1 AND @key_given = 0
--                     BEGIN
-- {{natural_holder_blocks}}
--                     END
--                     ELSE IF @candidate IS NULL AND @key_given = 0
--                     BEGIN
--                         SET @key = NULL;
-- {{newcomer_holder_blocks}}
--                     END;
--                     IF @holder IS NOT NULL
--                     BEGIN
--                         SELECT @old_native = NULL;
--                         IF @candidate IS NOT NULL
--                         BEGIN
--                             SELECT @key = @candidate, @native = NULL;
-- {{native_key_blocks}}
--                             SET @old_native = @native;
--                         END;
--                         SELECT @key = @holder, @native = NULL;
-- {{native_key_blocks}}
--                         IF EXISTS (SELECT 1 FROM {{schema}}.[outbox]
--                                    WHERE entity = @entity AND key_prefix = LEFT(@old_native, 400)
--                                      AND [key] = @old_native AND suspended = 0)
--                            OR EXISTS (SELECT 1 FROM {{schema}}.[id_map]
--                                       WHERE entity = @entity AND {{own}} = @holder
--                                         AND {{peer}} IS NOT NULL AND deleted = 0)
--                            OR NOT EXISTS (SELECT 1 FROM {{schema}}.[outbox]
--                                           WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
--                                             AND [key] = @native AND op = 'I' AND suspended = 0)
--                            OR (@candidate IS NULL
--                                AND EXISTS (SELECT 1 FROM {{schema}}.[outbox]
--                                            WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
--                                              AND [key] = @native AND op <> 'I' AND suspended = 0))
--                             SET @holder = NULL;
--                         SET @key = @candidate;
--                     END;
--                     IF @holder IS NOT NULL
--                     BEGIN
--                         SET @n = 0;
--                         IF @candidate IS NOT NULL
--                         BEGIN
-- {{delete_blocks}}
--                         END;
--                         DELETE FROM @pending;
--                         INSERT INTO @pending (seq, captured_at, op, image, derived)
--                         SELECT seq, captured_at, op, image, derived FROM {{schema}}.[outbox]
--                         WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
--                           AND [key] = @native AND suspended = 0;
--                         SELECT TOP (1) @local_at = captured_at, @local_op = op, @local_image = image
--                         FROM @pending ORDER BY seq DESC;
--                         SET @winner = {{winner_case}};
--                         INSERT INTO {{schema}}.[conflicts]
--                             (entity, incoming_side, incoming_key, local_key, policy, winner,
--                              incoming_op, incoming_image, local_op, local_image)
--                         VALUES (@entity, {{incoming_lit}}, @source_key, @holder, @policy, @winner,
--                                 @op, @image, @local_op, @local_image);
--                         IF @winner = {{incoming_lit}}
--                         BEGIN
--                             DELETE o FROM {{schema}}.[outbox] AS o JOIN @pending AS p ON o.seq = p.seq;
--                             SELECT @local_seq = MAX(seq) FROM @pending;
--                             IF @superseded IS NULL OR @local_seq > @superseded
--                                 SET @superseded = @local_seq;
--                             SELECT @key = @holder, @n = 0;
-- {{update_blocks}}
--                             SELECT @out_how = 'W', @out_conflict = 1;
--                         END
--                         ELSE
--                             SELECT @out_how = 'C', @out_conflict = 1;
--                         SELECT @put = 1, @link_target = @holder, @link_deleted = 0;
--                     END
--                     ELSE IF @found = 1
--                     BEGIN
--                         SET @n = 0;
-- {{update_blocks}}
--                         SELECT @put = 1, @link_target = @candidate, @link_deleted = 0,
--                                @out_how = CASE WHEN @n > 0 THEN 'W' ELSE 'U' END;
--                     END
--                     ELSE IF @candidate IS NOT NULL AND @linked_live = 1 AND @force = 0 AND @moved = 0 AND @op = 'U'
--                         -- Linked, yet gone here, with no delete of it pending here: it was
--                         -- deleted at this side and that delete reached the other side already.
--                         -- (An insert re-creates it, as PostgreSQL's apply does: that is how
--                         -- `verify --repair` brings back a record deleted behind tandem's back;
--                         -- a generated key is drawn anew.)
--                         SELECT @put = 1, @link_target = @candidate, @link_deleted = 1, @out_how = 'D';
--                     ELSE
--                     BEGIN
--                         DELETE FROM @ins;
-- {{insert_blocks}}
--                         SELECT @put = 1, @link_target = (SELECT TOP (1) k FROM @ins),
--                                @link_deleted = 0, @out_how = 'W';
--                     END;
--                 END;
--                 EXEC sys.sp_set_session_context N'tandem.applying', NULL;
--                 EXEC sys.sp_set_session_context N'tandem.entity', NULL;
--             END;
-- 
--             IF @put = 1
--             BEGIN
--                 -- 6. The link: the sequence guard and the id pair, with the data.
--                 IF @link_target IS NOT NULL
--                 BEGIN
--                     -- A link naming this record's key for another record of the other side is
--                     -- stale (the key was reused, or the record came back there under another
--                     -- key): that record loses its key here and becomes a tombstone, keeping
--                     -- its sequence guard (as on PostgreSQL).
--                     DELETE FROM {{schema}}.[id_map]
--                     WHERE entity = @entity AND {{own}} = @link_target AND {{peer}} IS NULL;
--                     UPDATE {{schema}}.[id_map] SET {{own}} = NULL, deleted = 1, updated_at = SYSDATETIMEOFFSET()
--                     WHERE entity = @entity AND {{own}} = @link_target AND {{peer}} <> @source_key;
--                 END;
--                 UPDATE {{schema}}.[id_map] WITH (SERIALIZABLE)
--                 SET {{own}} = COALESCE(@link_target, {{own}}),
--                     applied_seq = CASE WHEN applied_seq > @seq THEN applied_seq ELSE @seq END,
--                     deleted = @link_deleted, updated_at = SYSDATETIMEOFFSET()
--                 WHERE entity = @entity AND {{peer}} = @source_key;
--                 IF @@ROWCOUNT = 0
--                     INSERT INTO {{schema}}.[id_map] (entity, {{peer}}, {{own}}, applied_seq, deleted)
--                     VALUES (@entity, @source_key, @link_target, @seq, @link_deleted);
--                 INSERT INTO @out (i, how, target_key, conflict, superseded, moot)
--                 VALUES (@i, @out_how, @link_target, @out_conflict, @superseded, @out_moot);
--             END;
--         END TRY
--         BEGIN CATCH
--             SELECT @err = ERROR_NUMBER(), @msg = ERROR_MESSAGE();
-- {{identity_off_all}}
--             EXEC sys.sp_set_session_context N'tandem.applying', NULL;
--             EXEC sys.sp_set_session_context N'tandem.entity', NULL;
--             IF @err IN ({{row_errors}}) OR @err >= 50000
--             BEGIN
--                 -- Caused by the row: this change fails alone.
--                 IF XACT_STATE() = 1
--                 BEGIN
--                     ROLLBACK TRANSACTION tandem_change;
--                     DELETE FROM @out WHERE i = @i;
--                     -- A foreign key refused the row: a parent linked here whose row is gone
--                     -- (deleted here; that delete has not reached the source yet) makes the change
--                     -- wait, as a parent deleted here does, instead of failing as a bad row.
--                     SELECT @missing_parent = NULL, @r = -1;
--                     WHILE @err = 547 AND @op <> 'D' AND @missing_parent IS NULL
--                     BEGIN
--                         SELECT TOP (1) @r = x.n, @r_parent = x.parent, @r_key = x.[key], @r_hint = x.hint
--                         FROM OPENJSON(@refs) WITH (n int '$.n',
--                              parent nvarchar(128) '$.parent', [key] nvarchar(max) '$.key', hint nvarchar(max) '$.hint') AS x
--                         WHERE x.n > @r ORDER BY x.n;
--                         IF @@ROWCOUNT = 0 BREAK;
--                         SELECT @parent_key = NULL, @parent_link = 0, @parent_deleted = 0;
--                         SELECT @parent_key = {{own}}, @parent_link = 1, @parent_deleted = deleted
--                         FROM {{schema}}.[id_map]
--                         WHERE entity = @r_parent AND {{peer}} = @r_key;
--                         IF @parent_link = 0
--                             SET @parent_key = @r_hint;
--                         IF @parent_key IS NOT NULL AND @parent_deleted = 0
--                         BEGIN
--                             SELECT @child_entity = @entity, @entity = @r_parent, @key = @parent_key, @found = 0;
-- {{lock_blocks}}
--                             SET @entity = @child_entity;
--                             IF @found = 0
--                                 SELECT @missing_parent = @r_parent, @missing_key = @r_key;
--                         END;
--                     END;
--                     -- A unique key refused the row: where another record here holds the
--                     -- incoming values of the other side's key (a natural unique key here) and
--                     -- still has changes pending here, those changes decide the clash at the
--                     -- source (the two records meet there under one key, or the holder moves
--                     -- away), so the change waits for them instead of being suspended first
--                     -- (H; as held_by_coming on PostgreSQL).
--                     SET @holder = NULL;
--                     IF @err IN (2627, 2601) AND @op <> 'D' AND @missing_parent IS NULL
--                     BEGIN
--                         SET @key = @known;
-- {{newcomer_holder_blocks}}
--                         IF @holder IS NOT NULL
--                         BEGIN
--                             SELECT @key = @holder, @native = NULL;
-- {{native_key_blocks}}
--                             IF NOT EXISTS (SELECT 1 FROM {{schema}}.[outbox]
--                                            WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
--                                              AND [key] = @native AND suspended = 0)
--                                 SET @holder = NULL;
--                         END;
--                     END;
--                     -- This side's own insert under the key is on its way there (51004 above).
--                     IF @err = 51004
--                         SET @holder = @here;
--                     IF @missing_parent IS NOT NULL
--                         INSERT INTO @out (i, fail, parent, parent_key) VALUES (@i, 'G', @missing_parent, @missing_key);
--                     ELSE IF @holder IS NOT NULL
--                         INSERT INTO @out (i, fail, err_number, err_message, parent_key)
--                         VALUES (@i, 'H', @err, @msg, @holder);
--                     ELSE
--                         INSERT INTO @out (i, fail, err_number, err_message) VALUES (@i, 'R', @err, @msg);
--                 END
--                 ELSE
--                 BEGIN
--                     -- The error doomed the transaction (or a trigger ended it): start again
--                     -- without this change.
--                     IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
--                     INSERT INTO @skip (i, err_number, err_message) VALUES (@i, @err, @msg);
--                     SET @restart = 1;
--                     BREAK;
--                 END;
--             END
--             ELSE
--             BEGIN
--                 -- Not the row's fault: the whole batch fails and is retried.
--                 IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
--                 THROW;
--             END;
--         END CATCH;
--     END;
--     IF @restart = 0 COMMIT TRANSACTION;
-- END;
-- SELECT i, how, target_key, conflict, fail, err_number, err_message, parent, parent_key, superseded,
--        moot
-- FROM @out ORDER BY i;

-- write-back batch (sql/mssql/write_back.sql)
-- -- Tandem: record, at the side changes came from, what became of them — in one round trip and
-- -- one transaction (SQL Server). @P1: the id pairs (JSON array), @P2: the outbox rows that are
-- -- done (JSON array of seq), @P3: the failures (JSON array).
-- -- Per link: drop a stale link naming the peer for another record, store the pair (a stale
-- -- report, `only_if_row`, leaves the link as it is when this side's row is gone: the record's
-- -- delete is on its way or settled, and a late copy must neither revive the link nor take the
-- -- peer from the link holding it now; a live link only learns the peer the other side holds
-- -- now; it changes nothing where its key was created again since; nor does any reply of a
-- -- creation or update revive a tombstone of a record gone here),
-- -- fill the
-- -- table's peer_id_column (a peer id that does not fit the column is reported, and does not
-- -- block the write-back of the change itself), and remove older images of the record, pending or
-- -- suspended
-- -- (a newer image was applied: images are full rows, the newest wins).
-- -- Result: one row per peer id that could not be stored (n, kind 'P', error), and per second copy
-- -- of a record removed here, or left because it could not be (n, kind 'D', its key, error).
-- -- A live record here that loses its peer to this link's record is a second copy of the peer's
-- -- record: tandem created it from the peer's change and that reply was lost, and the other side
-- -- then took this side's other record for the peer (both sides created the record under a key
-- -- given there: it landed on the local one). The copy goes, not captured (the other side never
-- -- knew it), and its link becomes a tombstone; unless it has changes of its own here (a user's,
-- -- which travel; a change settled by this write-back that lost its conflict there no longer
-- -- counts); only for an entity nothing refers to and without a soft delete here (as
-- -- drop_duplicate does on PostgreSQL).
-- SET NOCOUNT ON;
-- SET XACT_ABORT OFF;
-- DECLARE @links TABLE (
--     n          int           NOT NULL PRIMARY KEY,
--     entity     nvarchar(128) COLLATE Latin1_General_100_BIN2 NOT NULL,
--     own        nvarchar(max) COLLATE Latin1_General_100_BIN2 NOT NULL,
--     peer       nvarchar(max) COLLATE Latin1_General_100_BIN2 NULL,
--     deleted    bit           NOT NULL,
--     only_if_row bit          NOT NULL,
--     seq        bigint        NOT NULL,
--     peer_guard bigint        NULL,
--     gone_there bit           NOT NULL,
--     lost       bit           NOT NULL,
--     peer_value nvarchar(max) NULL
-- );
-- INSERT INTO @links
-- SELECT l.n, l.entity, l.own, l.peer, l.deleted, l.only_if_row, l.seq, l.peer_guard, l.gone_there,
--        ISNULL(l.lost, 0), l.peer_value
-- FROM OPENJSON(@P1) WITH (
--     n int '$.n', entity nvarchar(128) '$.entity', own nvarchar(max) '$.own',
--     peer nvarchar(max) '$.peer', deleted bit '$.deleted', only_if_row bit '$.only_if_row', seq bigint '$.seq',
--     peer_guard bigint '$.peer_guard', gone_there bit '$.gone_there', lost bit '$.lost',
--     peer_value nvarchar(max) '$.peer_value' AS JSON
-- ) AS l;
-- DECLARE @warnings TABLE (n int NOT NULL, kind char(1) NOT NULL, err_message nvarchar(4000) NULL,
--                          dup nvarchar(max) NULL);
-- DECLARE @n int = -1, @entity nvarchar(128), @key nvarchar(max), @peer nvarchar(max),
--         @deleted bit, @only_if_row bit, @found bit, @seq bigint, @peer_guard bigint, @peer_value nvarchar(max), @native nvarchar(max),
--         @guard bigint, @dup nvarchar(max), @old_peer nvarchar(max),
--         @err int, @msg nvarchar(4000);
-- 
-- DECLARE @settled TABLE (seq bigint NOT NULL PRIMARY KEY);
-- -- Records to drop once the settled changes left the outbox (n: the link's).
-- DECLARE @dups TABLE (i int IDENTITY PRIMARY KEY, n int NOT NULL,
--                      entity nvarchar(128) COLLATE Latin1_General_100_BIN2 NOT NULL,
--                      own nvarchar(max) COLLATE Latin1_General_100_BIN2 NOT NULL);
-- DECLARE @i int;
-- DECLARE @unpeered TABLE (n int IDENTITY PRIMARY KEY,
--                          entity nvarchar(128) COLLATE Latin1_General_100_BIN2 NOT NULL,
--                          own nvarchar(max) COLLATE Latin1_General_100_BIN2 NOT NULL);
-- 
-- BEGIN TRY
--     BEGIN TRANSACTION;
--     -- Only the replies of changes still in the outbox count: a change whose rows are gone was
--     -- settled meanwhile by the write-back of an instance that took over while this one lost its
--     -- lease (it claimed the change again, or a newer one of the record), and this reply is late
--     -- and changes nothing (as settled_now does on PostgreSQL). The rows are locked by an update
--     -- that changes nothing, so of two write-backs of one change the second waits, then finds
--     -- it settled.
--     UPDATE o SET attempts = o.attempts
--     OUTPUT inserted.seq INTO @settled (seq)
--     FROM {{schema}}.[outbox] AS o
--     JOIN OPENJSON(@P2) WITH (seq bigint '$') AS d ON o.seq = d.seq;
--     DELETE l FROM @links AS l WHERE NOT EXISTS (SELECT 1 FROM @settled AS s WHERE s.seq = l.seq);
--     WHILE 1 = 1
--     BEGIN
--         SELECT TOP (1) @n = n, @entity = entity, @key = own, @peer = peer, @deleted = deleted,
--                @only_if_row = only_if_row, @seq = seq, @peer_guard = peer_guard,
--                @peer_value = peer_value
--         FROM @links WHERE n > @n ORDER BY n;
--         IF @@ROWCOUNT = 0 BREAK;
--         SET @found = 1;
--         IF @only_if_row = 1
--         BEGIN
--             -- A stale report of a creation or update older than a creation of its key still
--             -- pending here, with no delete of the key pending between them, is of a record that
--             -- left the key before (moved by the other side's change): the row there now is
--             -- another record, whose link and peer id are its own (as born_again does on
--             -- PostgreSQL; seed 111365 of the simulation's variant; a delete between them, or a
--             -- stale delete, keeps the report: seed 635583 of the default workload).
--             SET @native = NULL;
-- {{native_key_blocks}}
--             IF NOT EXISTS (SELECT 1 FROM {{schema}}.[outbox] WHERE seq = @seq AND op = 'D')
--                AND (SELECT TOP (1) op FROM {{schema}}.[outbox]
--                     WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
--                       AND [key] = @native AND seq > @seq AND op <> 'U'
--                     ORDER BY seq) = 'I'
--                 CONTINUE;
--             SET @found = 0;
-- {{exists_blocks}}
--             -- The row is gone, but the report names the record the other side holds now: a
--             -- live link of the record to a peer since replaced there names the new one, unless
--             -- a link here holds it already (as repoint_link does on PostgreSQL).
--             -- The peer it replaces keeps the link's guard as a tombstone with no record here,
--             -- so a late copy of a change of the old peer's key is still recognised (seed 44713;
--             -- as peer_tombstone does on PostgreSQL).
--             IF @found = 0 AND @peer IS NOT NULL
--             BEGIN
--                 SET @old_peer = NULL;
--                 SELECT @old_peer = {{peer}}, @guard = applied_seq FROM {{schema}}.[id_map]
--                 WHERE entity = @entity AND {{own}} = @key AND deleted = 0
--                   AND {{peer}} IS NOT NULL AND {{peer}} <> @peer
--                   AND NOT EXISTS (SELECT 1 FROM {{schema}}.[id_map] AS o
--                                   WHERE o.entity = @entity AND o.{{peer}} = @peer);
--                 IF @old_peer IS NOT NULL
--                 BEGIN
--                     UPDATE {{schema}}.[id_map] SET {{peer}} = @peer, updated_at = SYSDATETIMEOFFSET()
--                     WHERE entity = @entity AND {{own}} = @key;
--                     INSERT INTO {{schema}}.[id_map] (entity, {{own}}, {{peer}}, applied_seq, deleted)
--                     VALUES (@entity, NULL, @old_peer, @guard, 1);
--                 END;
--             END;
--         END;
--         -- A late reply of a creation or an update leaves the tombstone of a record gone here as
--         -- it is: the record's delete came first, the other side's applied here or this side's
--         -- written back (a second instance took over while the first still wrote its batch
--         -- back; as gone_here does on PostgreSQL). The row is locked, so a delete applied here
--         -- meanwhile has committed, or waits.
--         IF @found = 1 AND @deleted = 0 AND @only_if_row = 0 AND EXISTS (
--             SELECT 1 FROM {{schema}}.[id_map] WITH (UPDLOCK)
--             WHERE entity = @entity AND {{own}} = @key AND deleted = 1)
--         BEGIN
--             SET @found = 0;
-- {{lock_blocks}}
--         END;
--         IF @found = 1
--         BEGIN
--             -- Another record here linked to the same peer loses its peer (and keeps its guard); a
--             -- link of the peer with no record here holds the guard of the peer's changes and is
--             -- merged into this link (as link_written_back does on PostgreSQL).
--             SET @guard = 0;
--             -- A delete's write-back leaves the peer to a live record here that holds it: the
--             -- other side created the record again under that given key, and that creation
--             -- has already reached this side (the tombstone is written without the peer).
--             IF @deleted = 1 AND @peer IS NOT NULL AND EXISTS (
--                 SELECT 1 FROM {{schema}}.[id_map]
--                 WHERE entity = @entity AND {{peer}} = @peer AND {{own}} <> @key AND deleted = 0)
--                 SET @peer = NULL;
--             IF @peer IS NOT NULL
--             BEGIN
--                 SELECT @guard = ISNULL(MAX(applied_seq), 0) FROM {{schema}}.[id_map]
--                 WHERE entity = @entity AND {{peer}} = @peer AND {{own}} IS NULL;
--                 DELETE FROM {{schema}}.[id_map]
--                 WHERE entity = @entity AND {{peer}} = @peer AND {{own}} IS NULL;
--                 SET @dup = NULL;
--                 SELECT @dup = {{own}} FROM {{schema}}.[id_map]
--                 WHERE entity = @entity AND {{peer}} = @peer AND {{own}} <> @key AND deleted = 0;
--                 UPDATE {{schema}}.[id_map] SET {{peer}} = NULL, updated_at = SYSDATETIMEOFFSET()
--                 OUTPUT inserted.entity, inserted.{{own}} INTO @unpeered (entity, own)
--                 WHERE entity = @entity AND {{peer}} = @peer AND {{own}} <> @key;
--                 IF @dup IS NOT NULL
--                 BEGIN
--                     SAVE TRANSACTION tandem_dup;
--                     BEGIN TRY
-- {{drop_duplicate_blocks}}
--                     END TRY
--                     BEGIN CATCH
--                         SELECT @err = ERROR_NUMBER(), @msg = ERROR_MESSAGE();
--                         EXEC sys.sp_set_session_context N'tandem.applying', NULL;
--                         IF XACT_STATE() <> 1 OR @err IN ({{transient_errors}})
--                         BEGIN
--                             ;THROW;
--                         END;
--                         ROLLBACK TRANSACTION tandem_dup;
--                         INSERT INTO @warnings (n, kind, err_message, dup) VALUES (@n, 'D', @msg, @dup);
--                     END CATCH;
--                     -- Kept for its own change, settled here, which lost its conflict there:
--                     -- dropped below, once that change left the outbox.
--                     IF EXISTS (SELECT 1 FROM @links AS d
--                                WHERE d.entity = @entity AND d.own = @dup AND d.lost = 1)
--                         INSERT INTO @dups (n, entity, own) VALUES (@n, @entity, @dup);
--                 END;
--                 -- This record's link to another peer is retired, not overwritten: that peer was
--                 -- replaced at the other side, and its row keeps its guard as a tombstone.
--                 UPDATE {{schema}}.[id_map] SET {{own}} = NULL, deleted = 1, updated_at = SYSDATETIMEOFFSET()
--                 WHERE entity = @entity AND {{own}} = @key AND {{peer}} IS NOT NULL AND {{peer}} <> @peer;
--             END;
--             -- The peer's changes up to @peer_guard lost a conflict there: a copy of one still
--             -- on its way here is stale.
--             IF @peer_guard > @guard SET @guard = @peer_guard;
--             UPDATE {{schema}}.[id_map] WITH (SERIALIZABLE)
--             SET {{peer}} = COALESCE(@peer, {{peer}}), deleted = @deleted,
--                 applied_seq = CASE WHEN applied_seq > @guard THEN applied_seq ELSE @guard END,
--                 updated_at = SYSDATETIMEOFFSET()
--             WHERE entity = @entity AND {{own}} = @key;
--             IF @@ROWCOUNT = 0
--                 INSERT INTO {{schema}}.[id_map] (entity, {{own}}, {{peer}}, deleted, applied_seq)
--                 VALUES (@entity, @key, @peer, @deleted, @guard);
--         END;
--         IF @peer_value IS NOT NULL AND @deleted = 0
--         BEGIN
--             SAVE TRANSACTION tandem_peer;
--             BEGIN TRY
-- {{peer_update_blocks}}
--             END TRY
--             BEGIN CATCH
--                 SELECT @err = ERROR_NUMBER(), @msg = ERROR_MESSAGE();
--                 EXEC sys.sp_set_session_context N'tandem.applying', NULL;
--                 IF XACT_STATE() <> 1 OR @err IN ({{transient_errors}})
--                 BEGIN
--                     ;THROW;
--                 END;
--                 ROLLBACK TRANSACTION tandem_peer;
--                 INSERT INTO @warnings (n, kind, err_message) VALUES (@n, 'P', @msg);
--             END CATCH;
--         END;
--         SET @native = NULL;
-- {{native_key_blocks}}
--         DELETE FROM {{schema}}.[outbox]
--         WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
--           AND [key] = @native AND seq < @seq;
--     END;
--     DELETE o FROM {{schema}}.[outbox] AS o
--     JOIN OPENJSON(@P2) WITH (seq bigint '$') AS d ON o.seq = d.seq;
--     -- A record that lost its peer above, whose own change settled here lost its conflict
--     -- there, goes now that the settled changes left the outbox: that change travels no more,
--     -- and the winner there can no longer reach it (it lost at the other side to that side's
--     -- delete of the record, whose delete then never reached it, folded with a new record's
--     -- insert under the key: simulation's full workload without key changes at A, seed 42553;
--     -- as on PostgreSQL). So does a copy of a record gone at the other side, though this side's
--     -- change was not a delete (an update discarded after a delete there, or a stale report
--     -- naming no record), which that delete never reaches (the other side deleted it applying
--     -- this side's delete of another copy): its own pending changes keep it (simulation's full
--     -- workload, seed 13709; as on PostgreSQL).
--     INSERT INTO @dups (n, entity, own)
--     SELECT n, entity, own FROM @links WHERE gone_there = 1 ORDER BY n;
--     SET @i = 0;
--     WHILE 1 = 1
--     BEGIN
--         SELECT TOP (1) @i = i, @n = n, @entity = entity, @dup = own FROM @dups
--         WHERE i > @i ORDER BY i;
--         IF @@ROWCOUNT = 0 BREAK;
--         SAVE TRANSACTION tandem_dup;
--         BEGIN TRY
-- {{drop_duplicate_blocks}}
--         END TRY
--         BEGIN CATCH
--             SELECT @err = ERROR_NUMBER(), @msg = ERROR_MESSAGE();
--             EXEC sys.sp_set_session_context N'tandem.applying', NULL;
--             IF XACT_STATE() <> 1 OR @err IN ({{transient_errors}})
--             BEGIN
--                 ;THROW;
--             END;
--             ROLLBACK TRANSACTION tandem_dup;
--             INSERT INTO @warnings (n, kind, err_message, dup) VALUES (@n, 'D', @msg, @dup);
--         END CATCH;
--     END;
--     -- A link that lost its peer to another record here, whose row is gone here and that has no
--     -- change pending here, is a tombstone: a delete of it lost at the other side and left it
--     -- live for the winner to come back, but the winner came back under another key (seed
--     -- 38559; as retire_unpeered does on PostgreSQL). It keeps its guard.
--     SET @n = 0;
--     WHILE 1 = 1
--     BEGIN
--         SELECT TOP (1) @n = n, @entity = entity, @key = own FROM @unpeered WHERE n > @n ORDER BY n;
--         IF @@ROWCOUNT = 0 BREAK;
--         SET @found = 0;
-- {{exists_blocks}}
--         SET @native = NULL;
-- {{native_key_blocks}}
--         IF @found = 0 AND NOT EXISTS (SELECT 1 FROM {{schema}}.[outbox]
--                                       WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
--                                         AND [key] = @native)
--             UPDATE {{schema}}.[id_map] SET deleted = 1, updated_at = SYSDATETIMEOFFSET()
--             WHERE entity = @entity AND {{own}} = @key AND {{peer}} IS NULL AND deleted = 0;
--     END;
--     UPDATE o
--     SET attempts = o.attempts + 1,
--         next_attempt_at = DATEADD(millisecond, f.delay_ms, SYSDATETIMEOFFSET()),
--         last_error = f.error,
--         first_failed_at = COALESCE(o.first_failed_at, SYSDATETIMEOFFSET()),
--         last_failed_at = SYSDATETIMEOFFSET(),
--         suspended = f.suspend
--     FROM {{schema}}.[outbox] AS o
--     JOIN (SELECT s.seq, x.delay_ms, x.error, x.suspend
--           FROM OPENJSON(@P3) WITH (seqs nvarchar(max) '$.seqs' AS JSON, delay_ms int '$.delay_ms',
--                error nvarchar(max) '$.error', suspend bit '$.suspend') AS x
--           CROSS APPLY OPENJSON(x.seqs) WITH (seq bigint '$') AS s) AS f
--       ON o.seq = f.seq;
--     COMMIT TRANSACTION;
-- END TRY
-- BEGIN CATCH
--     IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
--     EXEC sys.sp_set_session_context N'tandem.applying', NULL;
--     THROW;
-- END CATCH;
-- SELECT n, kind, err_message, dup FROM @warnings ORDER BY n;

-- per-entity parts (sql/mssql/entity.sql)
-- -- Tandem: the per-entity parts of the apply and write-back batches (SQL Server), filled at
-- -- run time with the entity's table, its columns and their types as the catalog gives them.
-- -- Placeholders: {{table}} and column names are quoted as [name]; {{entity_lit}} is N'...'.
-- -- A row arrives as a JSON array in the order of {{with_row}} and is typed by OPENJSON ...
-- -- WITH, wrapped in one more array: OPENJSON makes a row of each element of an array, so
-- -- [[...]] is one row whose paths $[0], $[1]... are the values (OPENJSON over the bare array
-- -- would make one row per value); {{row_proj}} converts what WITH cannot read directly (bytes from 0x-hex, datetime
-- -- through datetime2(7)). A key arrives as its text (a JSON array, e.g. [17] or ["X",2]) and is
-- -- typed by {{with_key}}.
-- 
-- -- name: native_key
-- -- The key as the capture trigger writes it (FOR JSON of the typed key columns), to find this
-- -- record's changes in the outbox.
-- IF @entity = {{entity_lit}}
--     SELECT @native = CONVERT(nvarchar(max), (SELECT {{native_key_k}} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
--     FROM OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k;
-- 
-- -- name: given_key
-- -- The record's key here when the other side gives it: the row's key columns, typed, as text.
-- IF @entity = {{entity_lit}}
--     SELECT @given = {{canonical_key_r}}
--     FROM (SELECT {{row_proj}} FROM OPENJSON(N'[' + @row + N']') WITH ({{with_row}}) AS j) AS r;
-- 
-- -- name: lock
-- IF @entity = {{entity_lit}}
--     SELECT @found = 1
--     FROM {{table}} AS t WITH (UPDLOCK, HOLDLOCK)
--     JOIN OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k ON {{t_k_join}};
-- 
-- -- name: winner_case
-- -- Who wins a conflict against this side's changes in @pending (as conflict_winner in Rust): a
-- -- change tandem's own apply caused (derived: a cascade, a trigger's effect) loses to a user's
-- -- change; otherwise the policy decides, and ties go to A, so both sides decide the same way.
-- -- Not per entity: apply.sql uses it where it resolves a conflict (winner_case).
-- CASE
--     WHEN @derived = 1 AND EXISTS (SELECT 1 FROM @pending WHERE derived = 0) THEN {{here_lit}}
--     WHEN @derived = 0 AND NOT EXISTS (SELECT 1 FROM @pending WHERE derived = 0) THEN {{incoming_lit}}
--     WHEN @policy = 'a_wins' THEN 'A' WHEN @policy = 'b_wins' THEN 'B'
--     WHEN @captured_at > @local_at THEN {{incoming_lit}}
--     WHEN @captured_at < @local_at THEN {{here_lit}}
--     ELSE 'A' END
-- 
-- -- name: natural_holder
-- -- The row here, other than the record's own (@key), that holds the incoming values (@row) of
-- -- the other side's key (a natural unique key here, where this side draws its keys), locked: its
-- -- key as text in @holder (as natural_holder on PostgreSQL). Only for an entity nothing refers
-- -- to, without a soft delete here (sql.rs).
-- IF @entity = {{entity_lit}}
--     SELECT TOP (1) @holder = {{canonical_key_t}}
--     FROM {{table}} AS t WITH (UPDLOCK, HOLDLOCK)
--     CROSS JOIN (SELECT {{row_proj}} FROM OPENJSON(N'[' + @row + N']') WITH ({{with_row}}) AS j) AS r
--     WHERE {{t_r_natural_join}}
--       AND NOT EXISTS (SELECT 1 FROM OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k
--                       WHERE {{t_k_join}});
-- 
-- -- name: holds_natural
-- -- The record's row here (@key), locked: @found = 1 if it is there, and @holds = 1 if it holds
-- -- the incoming values (@row) of the other side's key (a natural unique key here, where this
-- -- side draws its keys; as holds_natural on PostgreSQL).
-- IF @entity = {{entity_lit}}
--     SELECT @found = 1, @holds = CASE WHEN {{t_r_natural_join}} THEN 1 ELSE 0 END
--     FROM {{table}} AS t WITH (UPDLOCK, HOLDLOCK)
--     JOIN OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k ON {{t_k_join}}
--     CROSS JOIN (SELECT {{row_proj}} FROM OPENJSON(N'[' + @row + N']') WITH ({{with_row}}) AS j) AS r;
-- 
-- -- name: requeue
-- -- A record the other side moved onto a key a local record holds, whose move lost the conflict,
-- -- stays here under its old key (@key): its row is queued as an update, so it travels back and
-- -- puts the record back where this side keeps it (as bulk.sql's requeue for `verify --repair`).
-- IF @entity = {{entity_lit}}
--     INSERT INTO {{schema}}.[outbox] (entity, op, [key], key_prefix, image)
--     SELECT {{entity_lit}}, 'U', x.k, LEFT(x.k, 400), x.img
--     FROM (SELECT CONVERT(nvarchar(max), (SELECT {{native_key_k}} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS k,
--                  {{image_t}} AS img
--           FROM {{table}} AS t
--           JOIN OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k ON {{t_k_join}}) AS x;
-- 
-- -- name: children_resend
-- -- A delete from the other side lost here to a newer change of the parent record (@entity
-- -- {{parent_lit}}, its key here @here): the other side creates the parent again, under a new
-- -- key where its keys are generated, and its children there that outlived the delete (no
-- -- foreign key) still name the old one. This side's rows of {{entity_lit}} under it (ref column
-- -- {{ref}}) travel again as inserts, marked derived (the consequence of a change already
-- -- decided: they never win a conflict against a user's change), and move there under the
-- -- parent. Only the rows the entity shows here ({{visible}}). Where this side gives the
-- -- child's key by values ({{key_given}} = 1), a child whose newest change pending here is an
-- -- insert or an update travels again as an update: an insert from here onto a live link there
-- -- would name a new record under a reused key, and its pending changes may have reached the
-- -- other side already, their replies lost, and settle there as stale, which left it under the
-- -- old parent there (simulation's full workload, seeds 76362 and 117946). Not one whose newest
-- -- is a delete: the row is here, so that delete lost at the other side, its reply lost, and it
-- -- carries no image (simulation, seed 1264): it travels as an insert. Where its key is
-- -- generated, it travels again as an insert all the same (seed 8748).
-- IF @entity = {{parent_lit}}
--     INSERT INTO {{schema}}.[outbox] (entity, op, [key], key_prefix, image, derived)
--     SELECT {{entity_lit}},
--            CASE WHEN {{key_given}} = 1
--                      AND EXISTS (SELECT 1
--                                  FROM (SELECT TOP (1) o.op FROM {{schema}}.[outbox] AS o
--                                        WHERE o.entity = {{entity_lit}} AND o.key_prefix = LEFT(x.k, 400)
--                                          AND o.[key] = x.k AND o.suspended = 0
--                                        ORDER BY o.seq DESC) AS n
--                                  WHERE n.op <> 'D')
--                 THEN 'U' ELSE 'I' END,
--            x.k, LEFT(x.k, 400), x.img, 1
--     FROM (SELECT CONVERT(nvarchar(max), (SELECT {{t_key_json}} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS k,
--                  {{image_t}} AS img
--           FROM {{table}} AS t
--           JOIN OPENJSON(N'[' + @here + N']') WITH ([v] {{ref_input}} '$[0]') AS p ON t.{{ref}} = p.[v]
--           WHERE {{visible}}) AS x;
-- 
-- -- name: exists
-- -- Whether the record's row is here (write-back of a stale report); no lock: a delete racing
-- -- this read is captured, and travels.
-- IF @entity = {{entity_lit}}
--     SELECT @found = 1
--     FROM {{table}} AS t
--     JOIN OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k ON {{t_k_join}};
-- 
-- -- name: update
-- -- Writes nothing when the row already holds these values (no echo, no empty updates): the
-- -- columns are compared as FOR JSON text in a binary collation, so NULL, '' and case differ.
-- IF @entity = {{entity_lit}}
-- BEGIN
--     UPDATE t SET {{set_list}}
--     FROM {{table}} AS t
--     JOIN OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k ON {{t_k_join}}
--     CROSS JOIN (SELECT {{row_proj}} FROM OPENJSON(N'[' + @row + N']') WITH ({{with_row}}) AS j) AS r
--     WHERE CONVERT(nvarchar(max), (SELECT {{t_set_cols}} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2
--        <> CONVERT(nvarchar(max), (SELECT {{r_set_cols}} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2;
--     SET @n = @@ROWCOUNT;
-- END;
-- 
-- -- name: insert
-- -- The last statement learns the key the row got: the given key, SCOPE_IDENTITY() for an IDENTITY
-- -- key, or (a key from another default) what OUTPUT ... INTO returned, checked to be there.
-- IF @entity = {{entity_lit}}
-- BEGIN
--     {{identity_on}}INSERT INTO {{table}} ({{cols}})
--     {{output_key}}SELECT {{r_cols}}
--     FROM (SELECT {{row_proj}} FROM OPENJSON(N'[' + @row + N']') WITH ({{with_row}}) AS j) AS r;
--     {{identity_off}}
--     {{key_back}}
-- END;
-- 
-- -- name: insert_key_from
-- -- key_from: the new row gets the key tandem draws ({{key_draw}}: the next value of the
-- -- configured sequence, or one more than the largest key under a table lock held until the
-- -- batch commits, so a legacy application numbering with max+1 waits rather than collides).
-- IF @entity = {{entity_lit}}
-- BEGIN
--     {{key_draw}}
--     INSERT INTO {{table}} ({{key_col}}{{cols_after_key}})
--     SELECT @new_key{{r_cols_after_key}}
--     FROM (SELECT {{row_proj}} FROM OPENJSON(N'[' + @row + N']') WITH ({{with_row}}) AS j) AS r;
--     INSERT INTO @ins (k) VALUES (N'[' + CONVERT(nvarchar(40), @new_key) + N']');
-- END;
-- 
-- -- name: key_from_sequence
-- SET @new_key = NEXT VALUE FOR {{sequence}};
-- 
-- -- name: key_from_max
-- SELECT @new_key = ISNULL(MAX({{key_col}}), 0) + 1 FROM {{table}} WITH (TABLOCKX, HOLDLOCK);
-- 
-- -- name: insert_defaults
-- IF @entity = {{entity_lit}}
-- BEGIN
--     INSERT INTO {{table}}
--     {{output_key}}DEFAULT VALUES;
--     {{key_back}}
-- END;
-- 
-- -- name: delete
-- IF @entity = {{entity_lit}}
-- BEGIN
--     DELETE t FROM {{table}} AS t
--     JOIN OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k ON {{t_k_join}};
--     SET @n = @@ROWCOUNT;
-- END;
-- 
-- -- name: soft_delete
-- -- `soft_delete` at this side: a delete marks the row rather than deleting it: the time
-- -- (CURRENT_TIMESTAMP), or the flag's deleted value, which the change carries in its row (at
-- -- position {{mark_at}}: values travel as data, never as SQL text). A row marked already is
-- -- left as it is.
-- IF @entity = {{entity_lit}}
-- BEGIN
--     UPDATE t SET t.{{mark}} = {{mark_deleted}}
--     FROM {{table}} AS t
--     JOIN OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k ON {{t_k_join}}
--     CROSS JOIN (SELECT {{mark_proj}} AS [v] FROM OPENJSON(N'[' + @row + N']') WITH ([v] {{mark_input}} '$[{{mark_at}}]') AS j) AS s
--     WHERE {{mark_live}};
--     SET @n = @@ROWCOUNT;
-- END;
-- 
-- -- name: peer_update
-- -- Fills the table's peer_id_column with the other side's key (only when it differs).
-- IF @entity = {{entity_lit}}
-- BEGIN
--     EXEC sys.sp_set_session_context N'tandem.applying', {{table_ctx_lit}};
--     UPDATE t SET t.{{peer_col}} = p.[v]
--     FROM {{table}} AS t
--     JOIN OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k ON {{t_k_join}}
--     CROSS JOIN (SELECT {{peer_proj}} AS [v] FROM OPENJSON(N'[' + @peer_value + N']') WITH ([v] {{peer_input}} '$[0]') AS j) AS p
--     WHERE CONVERT(nvarchar(max), (SELECT t.{{peer_col}} AS [v] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2
--        <> CONVERT(nvarchar(max), (SELECT p.[v] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2;
--     EXEC sys.sp_set_session_context N'tandem.applying', NULL;
-- END;
-- 
-- -- name: drop_duplicate
-- -- A second copy of a record (@dup, its key here), left by a lost reply, goes (see write_back.sql);
-- -- not while rows here refer to it (one NOT EXISTS per child table, filled in by sql.rs), nor with a
-- -- soft delete here (sql.rs).
-- IF @entity = {{entity_lit}}
-- BEGIN
--     SELECT @native = CONVERT(nvarchar(max), (SELECT {{native_key_k}} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
--     FROM OPENJSON(N'[' + @dup + N']') WITH ({{with_key}}) AS k;
--     IF NOT EXISTS (SELECT 1 FROM {{schema}}.[outbox]
--                    WHERE entity = @entity AND key_prefix = LEFT(@native, 400) AND [key] = @native)
--     BEGIN
--         EXEC sys.sp_set_session_context N'tandem.applying', {{table_ctx_lit}};
--         DELETE t FROM {{table}} AS t
--         JOIN OPENJSON(N'[' + @dup + N']') WITH ({{with_key}}) AS k ON {{t_k_join}}{{no_children}};
--         IF @@ROWCOUNT > 0
--         BEGIN
--             UPDATE {{schema}}.[id_map] SET deleted = 1, updated_at = SYSDATETIMEOFFSET()
--             WHERE entity = @entity AND {{own}} = @dup;
--             INSERT INTO @warnings (n, kind, dup) VALUES (@n, 'D', @dup);
--         END;
--         EXEC sys.sp_set_session_context N'tandem.applying', NULL;
--     END;
-- END;
-- 
-- -- name: in_flight
-- -- Which of these records (@P1: a JSON array of this side's keys as text) still have changes
-- -- in the outbox, pending or suspended.
-- SELECT q.k
-- FROM OPENJSON(@P1) WITH (k nvarchar(max) '$') AS q
-- CROSS APPLY (SELECT CONVERT(nvarchar(max), (SELECT {{native_key_k}} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS native
--              FROM OPENJSON(N'[' + q.k + N']') WITH ({{with_key}}) AS k) AS n
-- WHERE EXISTS (SELECT 1 FROM {{schema}}.[outbox] AS o
--               WHERE o.entity = {{entity_lit}} AND o.key_prefix = LEFT(n.native, 400) AND o.[key] = n.native);

-- backfill and verify (sql/mssql/bulk.sql; per entity, typed from the catalog at run time)
-- -- Tandem: backfill and verify on SQL Server, sent at run time through sp_executesql.
-- -- Placeholders: {{schema}}, {{table}} and column names are quoted as [name]; {{entity_lit}} is
-- -- N'...'; {{own}} / {{peer}} are [a_key] / [b_key] (this side's key column in id_map and the
-- -- other side's). Values always travel as parameters @P1, @P2, ...
-- -- A key arrives as its text, as id_map stores it (a JSON array, e.g. [17] or ["X",2]), and is
-- -- typed by OPENJSON ... WITH ({{with_key}}), wrapped in one more array (see entity.sql).
-- -- {{native_key_t}} is the key as the capture trigger writes it into the outbox (FOR JSON of
-- -- the key columns), {{image_t}} the row image as the trigger writes it (the key and the mapped
-- -- columns, FOR JSON with INCLUDE_NULL_VALUES), {{canonical_t}} the key as id_map text.
-- 
-- -- name: backfill_get
-- SELECT last_key, rows_done, CONVERT(bit, CASE WHEN finished_at IS NULL THEN 0 ELSE 1 END)
-- FROM {{schema}}.[backfill] WHERE entity = @P1;
-- 
-- -- name: backfill_reset
-- DELETE FROM {{schema}}.[backfill_key] WHERE entity = @P1;
-- DELETE FROM {{schema}}.[backfill] WHERE entity = @P1;
-- 
-- -- name: pending_between
-- -- Queued rows in a range: eligible now, waiting for a retry, suspended.
-- SELECT CONVERT(bigint, COUNT_BIG(CASE WHEN suspended = 0 AND (next_attempt_at IS NULL OR next_attempt_at <= SYSDATETIMEOFFSET()) THEN 1 END)),
--        CONVERT(bigint, COUNT_BIG(CASE WHEN suspended = 0 AND next_attempt_at > SYSDATETIMEOFFSET() THEN 1 END)),
--        CONVERT(bigint, COUNT_BIG(CASE WHEN suspended = 1 THEN 1 END))
-- FROM {{schema}}.[outbox] WHERE seq BETWEEN @P1 AND @P2;
-- 
-- -- name: links_by_peer
-- -- verify: this side's keys of records linked to these keys of the other side (@P2, a JSON
-- -- array of key texts).
-- SELECT m.{{peer}}, m.{{own}}
-- FROM {{schema}}.[id_map] AS m
-- JOIN OPENJSON(@P2) WITH (k nvarchar(max) '$') AS j
--   ON m.{{peer}} = j.k COLLATE Latin1_General_100_BIN2
-- WHERE m.entity = @P1 AND m.deleted = 0;
-- 
-- -- Per entity (filled with the entity's table, key and column types):
-- 
-- -- name: row_count
-- -- {{visible_p1}}: the rows the entity shows here (see backfill_chunk).
-- SELECT COUNT_BIG(*) FROM {{table}} AS t WHERE {{visible_p1}};
-- 
-- -- name: backfill_chunk
-- -- The next @P2 existing rows of entity @P1 in key order (keyset pagination after the last key
-- -- queued, kept typed in backfill_key), queued as changes in the outbox, and the progress
-- -- saved, in one transaction.
-- -- Live-safe: the rows are read with UPDLOCK, which is a locking read even under
-- -- READ_COMMITTED_SNAPSHOT: it waits for a transaction writing a row to end, reads the row as
-- -- committed, and keeps the row locked until this transaction commits. So a live change of a
-- -- row either committed before the read (its outbox row has a smaller sequence and the image
-- -- queued here already holds its values) or comes after this commit (a larger sequence): a
-- -- backfilled image never overwrites a newer live change, and a row deleted meanwhile is not
-- -- queued (its tombstone wins at the other side). The outbox sequences of the chunk lie in
-- -- (@before, @max]: @before is read before the insert, so every row queued here is above it.
-- -- The progress row is locked first (UPDLOCK, HOLDLOCK): two backfills of one entity take turns.
-- -- {{visible_p3}}: only the rows the entity shows here (not soft-deleted: @P3 is a flag's deleted
-- -- value; inside its filter: @P4 is a JSON array of the filter's values); else 1 = 1.
-- SET NOCOUNT ON;
-- DECLARE @last nvarchar(max), @new_last nvarchar(max), @found bit = 0, @finished bit = 0,
--         @n bigint = 0, @before bigint = NULL, @max bigint = NULL;
-- {{key_declare}}
-- DECLARE @c TABLE (ord int IDENTITY(1,1) NOT NULL PRIMARY KEY, k nvarchar(max) NOT NULL,
--                   img nvarchar(max) NOT NULL, last nvarchar(max) NOT NULL, {{c_key_cols}});
-- BEGIN TRY
--     BEGIN TRANSACTION;
--     SELECT @found = 1, @last = last_key,
--            @finished = CASE WHEN finished_at IS NULL THEN 0 ELSE 1 END
--     FROM {{schema}}.[backfill] WITH (UPDLOCK, HOLDLOCK) WHERE entity = @P1;
--     IF @finished = 0
--     BEGIN
--         IF @last IS NULL
--             INSERT INTO @c (k, img, last, {{c_key_names}})
--             SELECT TOP (@P2) {{native_key_t}}, {{image_t}}, {{canonical_t}}, {{t_key_order}}
--             FROM {{table}} AS t WITH (UPDLOCK, ROWLOCK)
--             WHERE {{visible_p3}}
--             ORDER BY {{t_key_order}};
--         ELSE
--         BEGIN
-- {{key_load}}
--             INSERT INTO @c (k, img, last, {{c_key_names}})
--             SELECT TOP (@P2) {{native_key_t}}, {{image_t}}, {{canonical_t}}, {{t_key_order}}
--             FROM {{table}} AS t WITH (UPDLOCK, ROWLOCK)
--             WHERE {{after_key}} AND {{visible_p3}}
--             ORDER BY {{t_key_order}};
--         END;
--         SELECT @n = COUNT_BIG(*) FROM @c;
--         IF @n > 0
--         BEGIN
--             SELECT @before = ISNULL(MAX(seq), 0) FROM {{schema}}.[outbox] WITH (READPAST);
--             INSERT INTO {{schema}}.[outbox] (entity, op, [key], key_prefix, image)
--             SELECT @P1, 'U', c.k, LEFT(c.k, 400), c.img FROM @c AS c ORDER BY c.ord;
--             SET @max = CONVERT(bigint, SCOPE_IDENTITY());
--             SELECT TOP (1) @new_last = c.last, {{key_assign}} FROM @c AS c ORDER BY c.ord DESC;
--             DELETE FROM {{schema}}.[backfill_key] WHERE entity = @P1;
--             INSERT INTO {{schema}}.[backfill_key] (entity, ord, v) VALUES {{key_store}};
--         END;
--         SET @finished = CASE WHEN @n < @P2 THEN 1 ELSE 0 END;
--         IF @found = 1
--             UPDATE {{schema}}.[backfill]
--             SET last_key = COALESCE(@new_last, last_key), rows_done = rows_done + @n,
--                 updated_at = SYSDATETIMEOFFSET(),
--                 finished_at = CASE WHEN @finished = 1 THEN SYSDATETIMEOFFSET() END
--             WHERE entity = @P1;
--         ELSE
--             INSERT INTO {{schema}}.[backfill] (entity, last_key, rows_done, finished_at)
--             VALUES (@P1, @new_last, @n, CASE WHEN @finished = 1 THEN SYSDATETIMEOFFSET() END);
--     END;
--     COMMIT TRANSACTION;
-- END TRY
-- BEGIN CATCH
--     IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
--     THROW;
-- END CATCH;
-- SELECT @n, CASE WHEN @n > 0 THEN @before + 1 END, @max, @finished;
-- 
-- -- name: requeue
-- -- `verify --repair`: the current row of one record (@P1, its key) queued as a change of op @P3
-- -- of entity @P2, read with the same locking read as a backfill chunk.
-- SET NOCOUNT ON;
-- INSERT INTO {{schema}}.[outbox] (entity, op, [key], key_prefix, image)
-- SELECT @P2, @P3, x.k, LEFT(x.k, 400), x.img
-- FROM (SELECT {{native_key_t}} AS k, {{image_t}} AS img
--       FROM {{table}} AS t WITH (UPDLOCK, ROWLOCK)
--       JOIN OPENJSON(N'[' + @P1 + N']') WITH ({{with_key}}) AS k ON {{t_k_join}}) AS x;
-- SELECT CONVERT(bigint, @@ROWCOUNT);
-- 
-- -- name: fetch_image
-- SELECT {{image_t}}
-- FROM {{table}} AS t
-- JOIN OPENJSON(N'[' + @P1 + N']') WITH ({{with_key}}) AS k ON {{t_k_join}};
-- 
-- -- name: fetch_images
-- -- The current rows of many records in one read (@P1: a JSON array of their keys as id_map
-- -- texts), each with the key it was asked by: the lossy rule's read before a batch is applied,
-- -- one statement per entity per batch.
-- SELECT q.k, x.img
-- FROM OPENJSON(@P1) WITH (k nvarchar(max) '$') AS q
-- CROSS APPLY (SELECT {{image_t}} AS img
--              FROM {{table}} AS t
--              JOIN OPENJSON(N'[' + q.k + N']') WITH ({{with_key}}) AS k ON {{t_k_join}}) AS x;
-- 
-- -- name: delete_record
-- -- `verify --repair`: deletes one record (@P1, its key) of entity @P2 as tandem's own write
-- -- (not captured: the session context marks it, as an apply does) and marks its link deleted.
-- -- {{delete_from}}: a DELETE, or with `soft_delete` here the UPDATE that marks the row (a flag's
-- -- deleted value in @P3).
-- SET NOCOUNT ON;
-- DECLARE @n bigint = 0;
-- BEGIN TRY
--     BEGIN TRANSACTION;
--     EXEC sys.sp_set_session_context N'tandem.applying', {{table_ctx_lit}};
--     EXEC sys.sp_set_session_context N'tandem.entity', @P2;
--     {{delete_from}}
--     JOIN OPENJSON(N'[' + @P1 + N']') WITH ({{with_key}}) AS k ON {{t_k_join}};
--     SET @n = @@ROWCOUNT;
--     EXEC sys.sp_set_session_context N'tandem.applying', NULL;
--     EXEC sys.sp_set_session_context N'tandem.entity', NULL;
--     UPDATE {{schema}}.[id_map] SET deleted = 1, updated_at = SYSDATETIMEOFFSET()
--     WHERE entity = @P2 AND {{own}} = @P1;
--     COMMIT TRANSACTION;
-- END TRY
-- BEGIN CATCH
--     IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
--     EXEC sys.sp_set_session_context N'tandem.applying', NULL;
--     EXEC sys.sp_set_session_context N'tandem.entity', NULL;
--     THROW;
-- END CATCH;
-- SELECT @n;
-- 
-- -- name: verify_rows
-- -- Each record as verify compares it: its key on each side (id_map texts), a join key (A's
-- -- key; records B has and A does not know get 'B:' and their own key), the row image, and for
-- -- parent columns on side B the parent's key at A (through the parent's id map), then for
-- -- looked-up columns on the side of their reference table the reference row's value. The values
-- -- are hashed by tandem (see src/endpoint/verify_hash.rs), streamed, never held whole.
-- SELECT {{a_key_expr}} AS a_key, {{b_key_expr}} AS b_key, {{jk_expr}} AS jk,
--        {{image_t}} AS img{{ref_cols}}
-- FROM {{table}} AS t;
