-- Tandem: objects in this database (SQL Server 2016 SP1 or later, compatibility level 130+).
-- `tandem install` runs exactly this script, batch by batch (GO separates batches, as in
-- sqlcmd and SSMS), in one transaction; running it again is harmless.
-- Placeholders like {{schema}} are filled with identifiers quoted as [name] (] doubled) and
-- string literals N'...' (' doubled); values never travel inside SQL text.
-- Keys and entity names use a binary collation, so 'abc' and 'ABC' are different keys,
-- exactly as on PostgreSQL.
SET ANSI_NULLS ON;
SET QUOTED_IDENTIFIER ON;
SET XACT_ABORT ON;
BEGIN TRANSACTION;
GO
IF SCHEMA_ID({{schema_lit}}) IS NULL
BEGIN
    EXEC (N'CREATE SCHEMA ' + {{schema_ident_lit}});
    -- The mark that lets `tandem uninstall` drop the schema (only one tandem created).
    EXEC sys.sp_addextendedproperty @name = N'tandem',
        @value = N'tandem: change capture and id links (created by tandem install)',
        @level0type = N'SCHEMA', @level0name = {{schema_lit}};
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
IF OBJECT_ID({{outbox_lit}}, N'U') IS NULL
BEGIN
CREATE TABLE {{schema}}.[outbox] (
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
CREATE INDEX outbox_record ON {{schema}}.[outbox] (entity, key_prefix);
END;
GO
-- Upgrades from versions without the derived mark.
IF COL_LENGTH({{outbox_lit}}, 'derived') IS NULL
    ALTER TABLE {{schema}}.[outbox] ADD derived bit NOT NULL DEFAULT 0;
GO
-- One row per linked record: its key here and on the other side (JSON arrays as text, e.g.
-- [17] or ["X",2]), the newest sequence of the other side's outbox applied here (older or
-- equal changes are discarded), and a tombstone mark so a late update cannot revive a delete.
IF OBJECT_ID({{id_map_lit}}, N'U') IS NULL
BEGIN
CREATE TABLE {{schema}}.[id_map] (
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
CREATE UNIQUE INDEX id_map_a ON {{schema}}.[id_map] (entity, a_key) WHERE a_key IS NOT NULL;
CREATE UNIQUE INDEX id_map_b ON {{schema}}.[id_map] (entity, b_key) WHERE b_key IS NOT NULL;
END;
GO
-- Backfill progress, one row per entity backfilled from this side: the key of the last row
-- queued (as id_map writes keys, for people), rows queued so far, and when it finished. Saved in the same
-- transaction as the chunk it describes, so a backfill resumes exactly after the last chunk.
IF OBJECT_ID({{backfill_lit}}, N'U') IS NULL
CREATE TABLE {{schema}}.[backfill] (
    entity      nvarchar(128)     COLLATE Latin1_General_100_BIN2 NOT NULL PRIMARY KEY CLUSTERED,
    last_key    nvarchar(max)     COLLATE Latin1_General_100_BIN2 NULL,
    rows_done   bigint            NOT NULL DEFAULT 0,
    updated_at  datetimeoffset(7) NOT NULL DEFAULT SYSDATETIMEOFFSET(),
    finished_at datetimeoffset(7) NULL
);
GO
-- Where a backfill resumes: the typed values of the last key queued, one row per key column
-- (sql_variant keeps each value's type exactly, so no text has to be parsed back).
IF OBJECT_ID({{backfill_key_lit}}, N'U') IS NULL
CREATE TABLE {{schema}}.[backfill_key] (
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
IF OBJECT_ID({{sent_mark_lit}}, N'U') IS NULL
CREATE TABLE {{schema}}.[sent_mark] (
    one bit    NOT NULL PRIMARY KEY CLUSTERED DEFAULT 1 CHECK (one = 1),
    seq bigint NOT NULL
);
GO
IF NOT EXISTS (SELECT 1 FROM {{schema}}.[sent_mark])
    INSERT INTO {{schema}}.[sent_mark] (one, seq) VALUES (1, 0);
GO
-- What `install` recorded of each synchronised table, per entity reading it: its columns
-- (name, type, NOT NULL) and unique keys, as JSON. `run` and `check` compare the live catalog
-- with it (schema drift): a mapped column dropped, renamed or retyped pauses the entity until
-- the table matches again or `install` records it anew. Written by `install` after this script.
IF OBJECT_ID({{fingerprint_lit}}, N'U') IS NULL
CREATE TABLE {{schema}}.[fingerprint] (
    entity      nvarchar(128)     COLLATE Latin1_General_100_BIN2 NOT NULL PRIMARY KEY CLUSTERED,
    table_name  nvarchar(400)     NOT NULL,
    fingerprint nvarchar(max)     NOT NULL,
    recorded_at datetimeoffset(7) NOT NULL DEFAULT SYSDATETIMEOFFSET()
);
GO
-- Conflicts resolved here: a record changed on both sides before either change was applied.
-- Both sides end with the winner's values; the losing image is kept here for review.
IF OBJECT_ID({{conflicts_lit}}, N'U') IS NULL
CREATE TABLE {{schema}}.[conflicts] (
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
