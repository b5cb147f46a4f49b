-- Tandem: the statements `tandem run` sends at run time (SQL Server), through sp_executesql.
-- Each begins with `-- name:`. Placeholders: {{schema}} is tandem's schema quoted as [name];
-- {{own}} / {{peer}} are [a_key] / [b_key] (this side's key column in id_map and the other
-- side's). Values always travel as parameters @P1, @P2, ... Rows are read by column name
-- (the claims' by position), so the columns read carry names.
-- Times are read as microseconds since 1970 (DATEDIFF_BIG), an exact instant in any zone.

-- name: claim
-- The oldest eligible pending changes, none of the entities in @P2 (a JSON array of names:
-- entities paused by schema drift, whose changes stay pending, untried). READPAST skips rows
-- still locked by a transaction that has not committed (they are taken next time, nothing is
-- lost); READCOMMITTEDLOCK keeps READPAST meaningful under READ_COMMITTED_SNAPSHOT; shared
-- locks last only while each row is read, so claiming never blocks an application writing to
-- its tables.
SELECT TOP (@P1) seq, entity, op, image,
       DATEDIFF_BIG(microsecond, '1970-01-01', captured_at) AS captured_us, attempts, derived
FROM {{schema}}.[outbox] WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
WHERE suspended = 0 AND (next_attempt_at IS NULL OR next_attempt_at <= SYSDATETIMEOFFSET())
  AND entity NOT IN (SELECT CONVERT(nvarchar(128), value) FROM OPENJSON(@P2))
ORDER BY seq;

-- name: claim_batch
-- A batch of a pipelined burst: the @P1 oldest eligible pending changes after sequence @P2
-- (the previous batch of the burst may still be in flight), then, for records of the
-- entities in @P3 (a JSON array of names), their next plain updates further back in the
-- outbox (pulled = 1), which tandem folds into one apply: up to 16 per record and 4 × @P1 in
-- all, each record's run stopping at its first row that is not a fresh update (an insert, a
-- delete, a retried or suspended change). Every row comes with its record's key (as the
-- capture trigger wrote it), so tandem groups a record's rows without reading their images.
-- A head record's older changes still waiting for a retry come along too (pulled = 1): the
-- newest image carries them, with the op folded (an update after an insert that failed is
-- applied as that insert). A row pulled twice (by two head rows) is taken once by tandem.
-- Entities in @P4 (paused by schema drift) are left out of the head, and so entirely.
-- Locking as in claim. The head is found by its last sequence, then read by range: no table
-- variable (measured on Babelfish: 40 ms a batch of 1,000 against 170 ms with one).
SET NOCOUNT ON;
DECLARE @last bigint = (
    SELECT MAX(h.seq) FROM (
        SELECT TOP (@P1) seq FROM {{schema}}.[outbox] WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
        WHERE suspended = 0 AND (next_attempt_at IS NULL OR next_attempt_at <= SYSDATETIMEOFFSET())
          AND seq > @P2 AND entity NOT IN (SELECT CONVERT(nvarchar(128), value) FROM OPENJSON(@P4))
        ORDER BY seq) AS h);
IF @P3 = N'[]'
    SELECT seq, entity, op, image, DATEDIFF_BIG(microsecond, '1970-01-01', captured_at),
           attempts, CONVERT(bit, 0) AS pulled, [key], derived
    FROM {{schema}}.[outbox] WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
    WHERE suspended = 0 AND (next_attempt_at IS NULL OR next_attempt_at <= SYSDATETIMEOFFSET())
      AND seq > @P2 AND seq <= @last AND entity NOT IN (SELECT CONVERT(nvarchar(128), value) FROM OPENJSON(@P4))
    UNION ALL
    SELECT w.seq, w.entity, w.op, w.image, DATEDIFF_BIG(microsecond, '1970-01-01', w.captured_at),
           w.attempts, CONVERT(bit, 1), w.[key], w.derived
    FROM {{schema}}.[outbox] AS h WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
    JOIN {{schema}}.[outbox] AS w WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
      ON w.entity = h.entity AND w.key_prefix = h.key_prefix AND w.[key] = h.[key] AND w.seq < h.seq
    WHERE h.suspended = 0 AND (h.next_attempt_at IS NULL OR h.next_attempt_at <= SYSDATETIMEOFFSET())
      AND h.seq > @P2 AND h.seq <= @last AND h.[key] IS NOT NULL
      AND h.entity NOT IN (SELECT CONVERT(nvarchar(128), value) FROM OPENJSON(@P4))
      AND w.suspended = 0 AND w.next_attempt_at > SYSDATETIMEOFFSET();
ELSE
    SELECT seq, entity, op, image, DATEDIFF_BIG(microsecond, '1970-01-01', captured_at),
           attempts, CONVERT(bit, 0) AS pulled, [key], derived
    FROM {{schema}}.[outbox] WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
    WHERE suspended = 0 AND (next_attempt_at IS NULL OR next_attempt_at <= SYSDATETIMEOFFSET())
      AND seq > @P2 AND seq <= @last AND entity NOT IN (SELECT CONVERT(nvarchar(128), value) FROM OPENJSON(@P4))
    UNION ALL
    SELECT p.seq, p.entity, p.op, p.image, DATEDIFF_BIG(microsecond, '1970-01-01', p.captured_at),
           p.attempts, CONVERT(bit, 1), p.[key], p.derived
    FROM (
        SELECT TOP (4 * @P1) l.*
        FROM {{schema}}.[outbox] AS h WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
        CROSS APPLY (
            SELECT TOP (16) o.seq, o.entity, o.op, o.image, o.captured_at, o.attempts, o.[key], o.derived
            FROM {{schema}}.[outbox] AS o WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
            WHERE o.entity = h.entity AND o.key_prefix = h.key_prefix AND o.[key] = h.[key]
              AND o.seq > @last
              AND NOT EXISTS (SELECT 1 FROM {{schema}}.[outbox] AS b
                              WHERE b.entity = h.entity AND b.key_prefix = h.key_prefix AND b.[key] = h.[key]
                                AND b.seq > @last AND b.seq <= o.seq
                                AND NOT (b.op = 'U' AND b.suspended = 0 AND b.attempts = 0))
            ORDER BY o.seq
        ) AS l
        WHERE h.suspended = 0 AND h.seq > @P2 AND h.seq <= @last AND h.[key] IS NOT NULL
          AND h.entity NOT IN (SELECT CONVERT(nvarchar(128), value) FROM OPENJSON(@P4))
          AND h.entity IN (SELECT CONVERT(nvarchar(128), value) FROM OPENJSON(@P3))
          AND NOT EXISTS (SELECT 1 FROM {{schema}}.[outbox] AS h2
                          WHERE h2.entity = h.entity AND h2.key_prefix = h.key_prefix AND h2.[key] = h.[key]
                            AND h2.seq > h.seq AND h2.seq <= @last)
        ORDER BY l.seq
    ) AS p
    UNION ALL
    SELECT w.seq, w.entity, w.op, w.image, DATEDIFF_BIG(microsecond, '1970-01-01', w.captured_at),
           w.attempts, CONVERT(bit, 1), w.[key], w.derived
    FROM {{schema}}.[outbox] AS h WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
    JOIN {{schema}}.[outbox] AS w WITH (READCOMMITTEDLOCK, READPAST, ROWLOCK)
      ON w.entity = h.entity AND w.key_prefix = h.key_prefix AND w.[key] = h.[key] AND w.seq < h.seq
    WHERE h.suspended = 0 AND (h.next_attempt_at IS NULL OR h.next_attempt_at <= SYSDATETIMEOFFSET())
      AND h.seq > @P2 AND h.seq <= @last AND h.[key] IS NOT NULL
      AND h.entity NOT IN (SELECT CONVERT(nvarchar(128), value) FROM OPENJSON(@P4))
      AND w.suspended = 0 AND w.next_attempt_at > SYSDATETIMEOFFSET();

-- name: fingerprint_save
-- `install` records what it saw of an entity's table (@P3: JSON), for drift detection.
SET NOCOUNT ON;
UPDATE {{schema}}.[fingerprint]
SET table_name = @P2, fingerprint = @P3, recorded_at = SYSDATETIMEOFFSET()
WHERE entity = @P1;
IF @@ROWCOUNT = 0
    INSERT INTO {{schema}}.[fingerprint] (entity, table_name, fingerprint) VALUES (@P1, @P2, @P3);

-- name: fingerprint_list
-- What `install` recorded, per entity (nothing before the first install of a version that
-- records fingerprints).
IF OBJECT_ID({{fingerprint_lit}}, N'U') IS NOT NULL
    SELECT entity, table_name, fingerprint FROM {{schema}}.[fingerprint];

-- name: mark_sent
-- A batch is about to be applied at the other side: the sent mark rises to its newest change
-- of a record whose key this side gives by values (@P1). One row, once per batch; it never
-- goes down. Those of its changes that failed before (@P2, a JSON array of seq) are sent
-- again: their retry time is cleared (a failure sets it), so they count as sent with no
-- failure since.
UPDATE o SET next_attempt_at = NULL
FROM {{schema}}.[outbox] AS o
JOIN OPENJSON(@P2) WITH (seq bigint '$') AS r ON o.seq = r.seq
WHERE o.attempts > 0;
UPDATE {{schema}}.[sent_mark] SET seq = @P1 WHERE seq < @P1;

-- name: links_by_own
-- @P1 entity, @P2 a JSON array of this side's keys (as text).
SELECT m.{{own}} AS own_key, m.{{peer}} AS peer_key, m.deleted, m.applied_seq,
       DATEDIFF_BIG(microsecond, '1970-01-01', m.updated_at) AS updated_us
FROM {{schema}}.[id_map] AS m
JOIN OPENJSON(@P2) WITH (k nvarchar(max) '$') AS j
  ON m.{{own}} = j.k COLLATE Latin1_General_100_BIN2
WHERE m.entity = @P1;

-- name: suspended_list
SELECT TOP (@P2) seq, entity, op, image, attempts,
       DATEDIFF_BIG(microsecond, '1970-01-01', captured_at) AS captured_us,
       DATEDIFF_BIG(microsecond, '1970-01-01', first_failed_at) AS first_failed_us,
       DATEDIFF_BIG(microsecond, '1970-01-01', last_failed_at) AS last_failed_us,
       last_error
FROM {{schema}}.[outbox]
WHERE suspended = 1 AND (@P1 IS NULL OR seq = @P1)
ORDER BY seq;

-- name: resubmit
UPDATE {{schema}}.[outbox]
SET suspended = 0, attempts = 0, next_attempt_at = NULL
WHERE suspended = 1 AND (@P1 IS NULL OR seq = @P1);
SELECT CONVERT(bigint, @@ROWCOUNT) AS affected;

-- name: discard
DELETE FROM {{schema}}.[outbox] WHERE suspended = 1 AND seq = @P1;
SELECT CONVERT(bigint, @@ROWCOUNT) AS affected;

-- name: status_outbox
SELECT entity,
       CONVERT(bigint, SUM(CASE WHEN suspended = 0 THEN 1 ELSE 0 END)) AS pending_count,
       CONVERT(bigint, SUM(CASE WHEN suspended = 1 THEN 1 ELSE 0 END)) AS suspended_count,
       MIN(CASE WHEN suspended = 0 THEN DATEDIFF_BIG(microsecond, '1970-01-01', captured_at) END) AS oldest_pending_us
FROM {{schema}}.[outbox] GROUP BY entity;

-- name: status_links
SELECT entity, CONVERT(bigint, COUNT(*)) AS linked_count FROM {{schema}}.[id_map] WHERE deleted = 0 GROUP BY entity;

-- name: status_conflicts
SELECT entity, CONVERT(bigint, COUNT(*)) AS conflict_count FROM {{schema}}.[conflicts] GROUP BY entity;

-- name: install_state
-- Are the tables there, and how many capture triggers carry this installation's mark?
SELECT CONVERT(bit, CASE WHEN OBJECT_ID({{outbox_lit}}, N'U') IS NOT NULL
                          AND OBJECT_ID({{id_map_lit}}, N'U') IS NOT NULL THEN 1 ELSE 0 END) AS installed,
       CONVERT(bigint, (SELECT COUNT(*) FROM sys.triggers AS t
                        JOIN sys.extended_properties AS p
                          ON p.class = 1 AND p.major_id = t.parent_id AND p.minor_id = 0
                         AND p.name = {{mark_lit}}
                        WHERE t.name = CONVERT(sysname, p.value))) AS trigger_count,
       -- The form install recorded (install_end.sql); none on installs older than the mark.
       (SELECT CONVERT(nvarchar(40), value) FROM sys.extended_properties
        WHERE class = 1 AND major_id = OBJECT_ID({{outbox_lit}}) AND minor_id = 0
          AND name = N'tandem_format') AS install_format;

-- name: server
-- For `tandem check`: SQL Server 2016 (13) or later, and a compatibility level of 130 or
-- more (OPENJSON needs it). Babelfish for PostgreSQL (a T-SQL engine tandem is tested on)
-- reports version 12 but has what tandem needs.
SELECT CONVERT(int, SERVERPROPERTY('ProductMajorVersion')) AS major_version,
       CONVERT(int, (SELECT compatibility_level FROM sys.databases WHERE database_id = DB_ID())) AS compat_level,
       CONVERT(bit, CASE WHEN @@VERSION LIKE N'Babelfish%' THEN 1 ELSE 0 END) AS is_babelfish;

-- name: table_exists
SELECT CONVERT(bit, CASE WHEN OBJECT_ID(@P1, N'U') IS NOT NULL THEN 1 ELSE 0 END) AS present;

-- name: sequence_exists
-- For `check`: does the sequence a `key_from` names exist (@P1: its quoted name)?
SELECT CONVERT(bit, CASE WHEN OBJECT_ID(@P1, N'SO') IS NOT NULL THEN 1 ELSE 0 END) AS present;

-- name: table_columns
-- The table's columns with their system type, size, and whether each is an identity, is
-- computed, has a default. Types of alias types are their system type. The last column says
-- whether the database compares names case-insensitively (its collation), as `check` must.
SELECT c.name AS column_name, TYPE_NAME(c.system_type_id) AS type_name,
       CONVERT(int, c.max_length) AS max_length, CONVERT(int, c.precision) AS num_precision,
       CONVERT(int, c.scale) AS num_scale, c.is_nullable, c.is_identity, c.is_computed,
       CONVERT(bit, CASE WHEN c.default_object_id <> 0 THEN 1 ELSE 0 END) AS has_default,
       CONVERT(bit, CASE WHEN CONVERT(nvarchar(128), DATABASEPROPERTYEX(DB_NAME(), 'Collation')) LIKE N'%[_]CI[_]%' THEN 1 ELSE 0 END) AS case_insensitive
FROM sys.columns AS c
WHERE c.object_id = OBJECT_ID(@P1)
ORDER BY c.column_id;

-- name: table_unique_keys
-- Every unique index or constraint (primary key included, filtered ones excluded) as
-- (index id, column name).
SELECT i.index_id, c.name AS column_name
FROM sys.indexes AS i
JOIN sys.index_columns AS ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id
JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
WHERE i.object_id = OBJECT_ID(@P1) AND i.is_unique = 1 AND i.has_filter = 0
  AND ic.is_included_column = 0;

-- name: rollback
-- Run on a connection whose batch failed: nothing it began may stay open.
IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
EXEC sys.sp_set_session_context N'tandem.applying', NULL;
EXEC sys.sp_set_session_context N'tandem.entity', NULL;

-- name: session
-- Every pooled connection: the SET options filtered indexes need (id_map), and SET XACT_ABORT
-- OFF so a change the database refuses can be rolled back alone to its savepoint.
SET ANSI_NULLS ON;
SET ANSI_PADDING ON;
SET ANSI_WARNINGS ON;
SET ARITHABORT ON;
SET CONCAT_NULL_YIELDS_NULL ON;
SET QUOTED_IDENTIFIER ON;
SET NUMERIC_ROUNDABORT OFF;
SET XACT_ABORT OFF;
SET DATEFORMAT ymd;

-- name: look_up
-- A look-up through a reference table tandem does not sync (`lookup` on a column): for each
-- value asked (@P1: a JSON array of texts), the rows whose {{by}} holds it, with their {{out}}
-- as JSON ({"v": ...}). One statement per look-up column per batch. Compared as text in a
-- binary collation (trailing spaces ignored, as SQL Server compares), so a value that cannot
-- be the column's type matches nothing instead of failing the batch.
SELECT w.v AS asked, CONVERT(nvarchar(max), (SELECT t.{{out}} AS [v] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) AS found
FROM (SELECT DISTINCT q.v FROM OPENJSON(@P1) WITH (v nvarchar(4000) '$') AS q) AS w
JOIN {{table}} AS t
  ON CONVERT(nvarchar(4000), t.{{by}}) COLLATE Latin1_General_100_BIN2 = w.v COLLATE Latin1_General_100_BIN2;
