-- Tandem: apply a batch of changes from the other side, in one round trip (SQL Server).
-- @P1 is the batch as a JSON array; values are already in this side's column types (see
-- src/endpoint/mssql/types.rs). Per change, in order, in one transaction, exactly as on
-- PostgreSQL: lock the record's link in id_map, discard it if this or a newer change was
-- applied (the sequence guard), resolve parents through their links, detect and settle a
-- conflict, write only what differs, and update the link in the same transaction.
-- A change the database refuses (a constraint, a value that does not fit, a trigger that
-- raises) is rolled back alone to its savepoint and reported; if it left the transaction
-- unable to go on, the batch starts over without it. Any other error (a deadlock, a lost
-- connection, a missing table) rolls the whole batch back and is raised.
-- Result: one row per change (i, how, target_key, conflict, fail, err_number, err_message,
-- parent, parent_key, superseded, moot). how: W written, U unchanged, S stale, D deleted here,
-- C conflict lost; fail: R refused by the database, P waiting for a parent.
SET NOCOUNT ON;
SET XACT_ABORT OFF;
DECLARE @changes TABLE (
    i                int               NOT NULL PRIMARY KEY,
    entity           nvarchar(128)     COLLATE Latin1_General_100_BIN2 NOT NULL,
    tbl              nvarchar(600)     NOT NULL,
    op               char(1)           NOT NULL,
    seq              bigint            NOT NULL,
    source_key       nvarchar(max)     COLLATE Latin1_General_100_BIN2 NOT NULL,
    peer_hint        nvarchar(max)     COLLATE Latin1_General_100_BIN2 NULL,
    hint_predates    bit               NOT NULL,
    first_seq        bigint            NOT NULL,
    peer_applied_seq bigint            NOT NULL,
    captured_at      datetimeoffset(7) NOT NULL,
    key_given        bit               NOT NULL,
    key_problem      nvarchar(2000)    NULL,
    row_problem      nvarchar(2000)    NULL,
    policy           varchar(12)       NOT NULL,
    derived          bit               NOT NULL,
    born             bit               NOT NULL,
    source_key_given bit               NOT NULL,
    row_values       nvarchar(max)     NOT NULL,
    row_image        nvarchar(max)     NOT NULL,
    refs             nvarchar(max)     NULL
);
INSERT INTO @changes
SELECT c.i, c.entity, c.tbl, c.op, c.seq, c.source_key, c.peer_hint, c.hint_predates, c.first_seq, c.peer_applied_seq,
       c.captured_at, c.key_given, c.key_problem, c.row_problem, c.policy, c.derived, c.born, c.source_key_given, c.row_values,
       c.row_image, c.refs
FROM OPENJSON(@P1) WITH (
    i int '$.i', entity nvarchar(128) '$.entity', tbl nvarchar(600) '$.tbl', op char(1) '$.op',
    seq bigint '$.seq', source_key nvarchar(max) '$.source_key', peer_hint nvarchar(max) '$.peer_hint',
    hint_predates bit '$.hint_predates', first_seq bigint '$.first_seq',
    peer_applied_seq bigint '$.peer_applied_seq', captured_at datetimeoffset(7) '$.captured_at',
    key_given bit '$.key_given', key_problem nvarchar(2000) '$.key_problem',
    row_problem nvarchar(2000) '$.row_problem', policy varchar(12) '$.policy', derived bit '$.derived',
    born bit '$.born', source_key_given bit '$.source_key_given',
    row_values nvarchar(max) '$.row' AS JSON, row_image nvarchar(max) '$.image' AS JSON,
    refs nvarchar(max) '$.refs' AS JSON
) AS c;

DECLARE @out TABLE (
    i           int            NOT NULL PRIMARY KEY,
    how         char(1)        NULL,
    target_key  nvarchar(max)  NULL,
    conflict    bit            NOT NULL DEFAULT 0,
    -- The newest change captured here that the incoming one beat (Outcome::Done::superseded).
    superseded  bigint         NULL,
    fail        char(1)        NULL,
    err_number  int            NULL,
    err_message nvarchar(4000) NULL,
    parent      nvarchar(128)  NULL,
    parent_key  nvarchar(max)  NULL,
    -- Changes suspended here that a delete made moot (Outcome::Done::moot), as FOR JSON.
    moot        nvarchar(max)  NULL
);
-- Changes that left the transaction unable to go on; the batch is redone without them.
-- (Table variables keep their rows through a rollback.)
DECLARE @skip TABLE (i int NOT NULL PRIMARY KEY, err_number int, err_message nvarchar(4000));
DECLARE @pending TABLE (seq bigint NOT NULL PRIMARY KEY, captured_at datetimeoffset(7), op char(1), image nvarchar(max), derived bit);
DECLARE @ins TABLE (k nvarchar(max));
DECLARE @moot TABLE (seq bigint NOT NULL);
DECLARE @beaten TABLE (seq bigint NOT NULL PRIMARY KEY);

DECLARE @i int, @entity nvarchar(128), @tbl nvarchar(600), @op char(1), @seq bigint,
        @source_key nvarchar(max), @peer_hint nvarchar(max), @hint_predates bit, @first_seq bigint,
        @peer_applied_seq bigint,
        @captured_at datetimeoffset(7), @key_given bit, @key_problem nvarchar(2000),
        @row_problem nvarchar(2000), @policy varchar(12), @derived bit, @born bit, @source_key_given bit,
        @row_values nvarchar(max),
        @row_image nvarchar(max), @refs nvarchar(max),
        @row nvarchar(max), @image nvarchar(max), @key nvarchar(max), @native nvarchar(max),
        @given nvarchar(max), @found bit, @n int, @new_key bigint,
        @link_found bit, @applied bigint, @own nvarchar(max), @deleted bit, @dead_own bit, @moved_on bit, @child_entity nvarchar(128),
        @known nvarchar(max), @linked_live bit, @tombstone bit,
        @refs_ok bit, @missing_parent nvarchar(128), @missing_key nvarchar(max), @missing_gone bit,
        @parent_link bit, @parent_deleted bit, @this_entity nvarchar(128), @this_key nvarchar(max),
        @moved bit, @replaced bit, @new_own bit, @hint_taken bit, @old_found bit, @holds bit, @held bit, @newest_sent bit,
        @r int, @r_mark nvarchar(200), @r_parent nvarchar(128), @r_key nvarchar(max),
        @r_hint nvarchar(max), @parent_key nvarchar(max), @v nvarchar(4000),
        @here nvarchar(max), @moved_from nvarchar(max), @resolution char(1), @local_seq bigint, @local_at datetimeoffset(7),
        @local_op char(1), @local_image nvarchar(max), @winner char(1), @force bit,
        @candidate nvarchar(max), @done bit, @put bit, @link_target nvarchar(max),
        @link_deleted bit, @out_how char(1), @out_conflict bit, @superseded bigint,
        @here_native nvarchar(max), @out_moot nvarchar(max), @holder nvarchar(max),
        @old_native nvarchar(max), @last_delete bigint,
        @err int, @msg nvarchar(4000), @restart bit = 1;

WHILE @restart = 1
BEGIN
    SET @restart = 0;
    DELETE FROM @out;
    BEGIN TRANSACTION;
    SET @i = -1;
    WHILE 1 = 1
    BEGIN
        SELECT TOP (1) @i = i, @entity = entity, @tbl = tbl, @op = op, @seq = seq,
               @source_key = source_key, @peer_hint = peer_hint, @hint_predates = hint_predates,
               @first_seq = first_seq,
               @peer_applied_seq = peer_applied_seq, @captured_at = captured_at,
               @key_given = key_given, @key_problem = key_problem, @row_problem = row_problem,
               @policy = policy, @derived = derived, @born = born, @source_key_given = source_key_given,
               @row_values = row_values, @row_image = row_image, @refs = refs
        FROM @changes WHERE i > @i ORDER BY i;
        IF @@ROWCOUNT = 0 BREAK;
        IF EXISTS (SELECT 1 FROM @skip WHERE i = @i)
        BEGIN
            INSERT INTO @out (i, fail, err_number, err_message)
            SELECT i, 'R', err_number, err_message FROM @skip WHERE i = @i;
            CONTINUE;
        END;
        SELECT @done = 0, @put = 0, @out_conflict = 0, @superseded = NULL, @here_native = NULL,
               @out_moot = NULL, @held = 0;
        SAVE TRANSACTION tandem_change;
        BEGIN TRY
            -- 1. Lock the record's link; the sequence guard.
            SELECT @link_found = 0, @applied = NULL, @own = NULL, @deleted = 0, @dead_own = 0;
            SELECT @link_found = 1, @applied = applied_seq, @own = [a_key], @deleted = deleted
            FROM [tandem].[id_map] WITH (UPDLOCK, HOLDLOCK)
            WHERE entity = @entity AND [b_key] = @source_key;
            -- Where the source links this key to another record here than this link does
            -- (keys given by values, reused): is this link's row gone here (its record was
            -- deleted here, and that delete has not reached the source yet)?
            SET @moved_on = 0;
            IF @link_found = 1 AND @source_key_given = 1 AND @peer_hint IS NOT NULL
               AND (@own IS NULL OR @own <> @peer_hint)
            BEGIN
                IF @deleted = 0 AND @own IS NOT NULL
                BEGIN
                    SELECT @key = @own, @found = 0;
                        IF @entity = N'order'
                            SELECT @found = 1
                            FROM [dbo].[ORDERS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k ON t.[ORDER_NO] = k.[ORDER_NO];
                        IF @entity = N'order_item'
                            SELECT @found = 1
                            FROM [dbo].[ORDER_ITEMS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k ON t.[ORDER_NO] = k.[ORDER_NO] AND t.[LINE_NO] = k.[LINE_NO];
                    IF @found = 0
                        SET @dead_own = 1;
                END;
                -- A link that names no record here (its record was taken by another) keeps
                -- only the guard: the source's link says which record this is.
                IF @deleted = 0 AND @own IS NULL
                    SET @dead_own = 1;
                -- The guard protects the record this link names; when that one is gone and the
                -- source's record lives here, the latter has not seen this delete yet (only a
                -- delete: an older update must not overwrite the newer record).
                IF @op = 'D' AND @applied >= @seq AND (@deleted = 1 OR @own IS NULL OR @dead_own = 1)
                BEGIN
                    SELECT @key = @peer_hint, @found = 0;
                        IF @entity = N'order'
                            SELECT @found = 1
                            FROM [dbo].[ORDERS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k ON t.[ORDER_NO] = k.[ORDER_NO];
                        IF @entity = N'order_item'
                            SELECT @found = 1
                            FROM [dbo].[ORDER_ITEMS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k ON t.[ORDER_NO] = k.[ORDER_NO] AND t.[LINE_NO] = k.[LINE_NO];
                    SET @moved_on = @found;
                END;
            END;
            IF @link_found = 1 AND @applied >= @seq AND @moved_on = 0
            BEGIN
                -- At a tombstone the record was deleted here: 'T' with the key it had, so the
                -- source's tombstone keeps the pair (Done::StaleDeleted).
                INSERT INTO @out (i, how, target_key)
                VALUES (@i, CASE WHEN @deleted = 1 AND @own IS NOT NULL THEN 'T' ELSE 'S' END, @own);
                SET @done = 1;
            END;

            IF @done = 0
            BEGIN
                -- @hint_taken: no link here, and the source's hint names a key here that a live
                -- link gives another record of the source: the hint is older than that link
                -- (the key went to another record here since), and this side knows nothing of
                -- this record (as on PostgreSQL; simulation's full workload, seed 76215). Only
                -- where the source draws its keys: a key given by values may be this record's
                -- old one. Unless the hint is the newer one: a change of the key pending here,
                -- none a delete, was applied there (at or below its guard) and its reply was
                -- lost (endpoint::hint_newer_than_link on PostgreSQL; fault suite, seed 1002).
                SET @hint_taken = 0;
                IF @link_found = 0 AND @peer_hint IS NOT NULL AND @source_key_given = 0
                    AND EXISTS (SELECT 1 FROM [tandem].[id_map]
                                WHERE entity = @entity AND [a_key] = @peer_hint AND deleted = 0
                                  AND [b_key] IS NOT NULL AND [b_key] <> @source_key)
                BEGIN
                    SELECT @hint_taken = 1, @key = @peer_hint, @native = NULL;
                    IF @entity = N'order'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k;
                    IF @entity = N'order_item'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1], k.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k;
                    IF EXISTS (SELECT 1 FROM [tandem].[outbox]
                               WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
                                 AND [key] = @native AND suspended = 0
                                 AND seq <= @peer_applied_seq)
                       AND NOT EXISTS (SELECT 1 FROM [tandem].[outbox]
                                       WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
                                         AND [key] = @native AND suspended = 0 AND op = 'D')
                        SET @hint_taken = 0;
                END;
                -- What this side knows of the record: its own link, else the source's (the
                -- write-back of a link the source made may still be on its way here).
                -- A tombstone here of another record than the one the source now links this key
                -- to is older than that link where the source's keys are given by values (the
                -- key was taken by a new record): the source's link wins. So does a live link
                -- whose row is gone here (@dead_own).
                -- A record the source created after its delete of the one this link names (a
                -- number its application reused) whose reply was lost, so this link still names
                -- the number: the record under it is this side's new one (its insert the oldest
                -- change of it pending here after all the source has applied of this side's).
                -- Likewise a delete arriving at a tombstone here: the record it names was
                -- deleted here already, and a row under the number whose insert is that oldest
                -- change is this side's new record, which the delete must not remove (as on
                -- PostgreSQL; simulation's full workload, seed 50143).
                -- @new_own: that row is a new record of this side the source has not seen (as
                -- new_since on PostgreSQL); where keys are given here, a delete at a tombstone
                -- asks (below, once the key here is known), and a creation at a live link: this
                -- side deleted the record the link names, its delete lost at the source, which
                -- sent the record again as a creation; it is created again here under its own
                -- key, and the new record stays (simulation's variant without key changes at A,
                -- seed 110294; as on PostgreSQL). Not an update: a creation at both sides at
                -- once that landed here as one record has this side's insert pending too.
                SET @new_own = 0;
                IF @link_found = 1 AND @own IS NOT NULL
                   AND ((@deleted = 0 AND @op = 'I' AND (@born = 1 OR @key_given = 1))
                        OR (@deleted = 1 AND @op = 'D'))
                BEGIN
                    SELECT @key = @own, @native = NULL;
                    IF @entity = N'order'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k;
                    IF @entity = N'order_item'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1], k.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k;
                    IF (SELECT TOP (1) op FROM [tandem].[outbox]
                        WHERE entity = @entity AND key_prefix = LEFT(@native, 400) AND [key] = @native
                          AND suspended = 0 AND seq > @peer_applied_seq
                        ORDER BY seq) = 'I'
                        SET @new_own = 1;
                END;
                SET @replaced = CASE WHEN @key_given = 0 OR @op = 'I' THEN @new_own ELSE 0 END;
                -- A delete arriving at a live link whose record this side deleted and created
                -- anew under the same number (an insert pending after its last pending delete;
                -- the reply of that delete lost, so the link still names the number): both
                -- sides deleted the record the link names, and the new record stays. Not where
                -- the source applied that insert: the two travelled as one change of the record,
                -- and the delete is of it (as on PostgreSQL; fault suite, full workload, seed
                -- 6655; simulation, seed 110685).
                IF @replaced = 0 AND @key_given = 0 AND @link_found = 1 AND @own IS NOT NULL
                   AND @deleted = 0 AND @op = 'D'
                BEGIN
                    SELECT @key = @own, @native = NULL;
                    IF @entity = N'order'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k;
                    IF @entity = N'order_item'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1], k.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k;
                    IF EXISTS (SELECT 1 FROM [tandem].[outbox] AS i
                               WHERE i.entity = @entity AND i.key_prefix = LEFT(@native, 400)
                                 AND i.[key] = @native AND i.op = 'I' AND i.suspended = 0
                                 AND i.seq > @peer_applied_seq
                                 AND i.seq > (SELECT MAX(d.seq) FROM [tandem].[outbox] AS d
                                              WHERE d.entity = @entity
                                                AND d.key_prefix = LEFT(@native, 400)
                                                AND d.[key] = @native AND d.op = 'D'
                                                AND d.suspended = 0))
                        SET @replaced = 1;
                END;
                -- So does the link of a delete that the source wrote before the delete, where
                -- this side has applied none of the changes the delete carries (as on
                -- PostgreSQL: TargetChange::delete_hint_holds; simulation's full workload,
                -- seed 52926).
                IF @link_found = 1 AND @source_key_given = 1
                   AND (@deleted = 1 OR @dead_own = 1
                        OR (@op = 'D' AND @hint_predates = 1 AND @applied < @first_seq))
                   AND @peer_hint IS NOT NULL AND (@own IS NULL OR @own <> @peer_hint)
                    SELECT @known = @peer_hint, @tombstone = 0, @linked_live = 1;
                -- A record the source created after its delete of the one this tombstone names
                -- (a number its application reused): another record, created anew here,
                -- whatever this side still has pending of the old one (as on PostgreSQL).
                ELSE IF (@link_found = 1 AND @deleted = 1 AND @op = 'I' AND @born = 1 AND @key_given = 0)
                        OR @replaced = 1
                    SELECT @known = NULL, @tombstone = 0, @linked_live = 0;
                ELSE IF @link_found = 1
                    SELECT @known = @own, @tombstone = @deleted,
                           @linked_live = CASE WHEN @own IS NOT NULL AND @deleted = 0 THEN 1 ELSE 0 END;
                -- See @hint_taken above.
                ELSE IF @hint_taken = 1
                    SELECT @known = NULL, @tombstone = 0, @linked_live = 0;
                ELSE
                    SELECT @known = @peer_hint, @tombstone = 0,
                           @linked_live = CASE WHEN @peer_hint IS NOT NULL THEN 1 ELSE 0 END;

                -- 2. Parents: ref columns take the parent's key here.
                SELECT @row = @row_values, @image = @row_image, @refs_ok = 1, @r = -1,
                       @missing_parent = NULL, @missing_key = NULL;
                WHILE @refs_ok = 1
                BEGIN
                    -- The column holds the token "\u0001tandem-ref-N\u0001" (as JSON text: T-SQL
                    -- literals keep the backslashes), built here rather than sent.
                    SELECT TOP (1) @r = x.n,
                           @r_mark = N'"\u0001tandem-ref-' + CONVERT(nvarchar(11), x.n) + N'\u0001"',
                           @r_parent = x.parent, @r_key = x.[key], @r_hint = x.hint
                    FROM OPENJSON(@refs) WITH (n int '$.n',
                         parent nvarchar(128) '$.parent', [key] nvarchar(max) '$.key', hint nvarchar(max) '$.hint') AS x
                    WHERE x.n > @r ORDER BY x.n;
                    IF @@ROWCOUNT = 0 BREAK;
                    -- The source's hint stands in only where there is no link here at all: a
                    -- tombstone here knows better (the parent's delete is on its way there).
                    SELECT @parent_key = NULL, @parent_link = 0, @parent_deleted = 0;
                    SELECT @parent_key = [a_key], @parent_link = 1, @parent_deleted = deleted
                    FROM [tandem].[id_map]
                    WHERE entity = @r_parent AND [b_key] = @r_key;
                    IF @parent_link = 0
                        SET @parent_key = @r_hint;
                    -- A parent whose delete here is still on its way is deleted too: a row at
                    -- its key now is another record (keys given by values), which the child
                    -- must not join; the same for the source's hint (simulation's full
                    -- workload, seed 73430). The parent's key in the outbox's form, by its
                    -- entity.
                    IF @parent_deleted = 0 AND @parent_key IS NOT NULL AND @op <> 'D'
                    BEGIN
                        SELECT @this_entity = @entity, @this_key = @key,
                               @entity = @r_parent, @key = @parent_key, @native = NULL;
                    IF @entity = N'order'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k;
                    IF @entity = N'order_item'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1], k.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k;
                        SELECT @entity = @this_entity, @key = @this_key;
                        IF EXISTS (SELECT 1 FROM [tandem].[outbox]
                                   WHERE entity = @r_parent AND key_prefix = LEFT(@native, 400)
                                     AND [key] = @native AND op = 'D' AND suspended = 0)
                            SET @parent_deleted = 1;
                    END;
                    IF @parent_deleted = 1 AND @op <> 'D'
                        SET @parent_key = NULL;
                    IF @parent_key IS NULL
                        SELECT @refs_ok = 0, @missing_parent = @r_parent, @missing_key = @r_key,
                               @missing_gone = CASE WHEN @parent_deleted = 1 AND @op <> 'D' THEN 1 ELSE 0 END;
                    ELSE
                    BEGIN
                        -- The ref column holds a marker token (2016 has no JSON_MODIFY with a
                        -- computed path): replace it by the parent's key value, as a JSON string
                        -- that OPENJSON ... WITH converts to the column's type.
                        SET @v = N'"' + STRING_ESCAPE(JSON_VALUE(@parent_key, '$[0]'), 'json') + N'"';
                        SET @row = REPLACE(@row, @r_mark, @v);
                        SET @image = REPLACE(@image, @r_mark, @v);
                    END;
                END;

                -- A creation at the source under a key given by values, which the source links
                -- to nothing, where the link here names a live record that no longer holds
                -- those values: the link was written back before this side's move of the record
                -- reached the source (whose reply was lost), so the source's record under that
                -- key is another, new one (as moved_away on PostgreSQL; found by the
                -- simulation's full workload, seed 12653).
                -- A delete the source links to nothing, where the link here names a live
                -- record that no longer holds the key's values and has changes pending here
                -- captured before the delete: either this side moved it and the move reached
                -- the source, whose reply was lost (the delete is of another record, created
                -- there under the freed key), or the source's record is this one and both
                -- sides changed it at once. Those changes' replies tell which: the delete
                -- waits until they have settled (51004, caught below as H; seed 68782, as on
                -- PostgreSQL). A move here newer than the delete cannot have freed the key at
                -- the source before it: the delete is of this record (a conflict below).
                IF @refs_ok = 1 AND (@op = 'D' OR (@op = 'I' AND @born = 1)) AND @source_key_given = 1
                   AND @key_given = 0 AND @peer_hint IS NULL AND @linked_live = 1
                   AND @known IS NOT NULL AND @known = @own
                BEGIN
                    SELECT @key = @own, @found = 0, @holds = 0;
                    SET NOCOUNT ON; -- (no entity)
                    IF @found = 1 AND @holds = 0 AND @op = 'D'
                    BEGIN
                        SET @native = NULL;
                    IF @entity = N'order'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k;
                    IF @entity = N'order_item'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1], k.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k;
                        IF EXISTS (SELECT 1 FROM [tandem].[outbox]
                                   WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
                                     AND [key] = @native AND suspended = 0
                                     AND captured_at < @captured_at)
                        BEGIN
                            SET @here = @own;
                            SET @msg = N'the record ' + @own + N' at side ' + 'A'
                                + N' linked to this key no longer holds it, and its changes are still on their way to side '
                                + 'B' + N'; this delete waits until they have settled';
                            ;THROW 51004, @msg, 1;
                        END;
                    END
                    ELSE IF @found = 1 AND @holds = 0
                        SELECT @known = NULL, @tombstone = 0, @linked_live = 0;
                END;

                -- An update of a record the source links to another record here than this live
                -- link does, where the record this link names no longer holds the key's values
                -- here, and the hinted one is here with a change pending, none a delete, that
                -- the source has applied (at or below its guard): this side moved the linked
                -- record, its move reached the source, and the hinted record took the freed key
                -- there; both replies were lost. The hint is the newer link, and the update is
                -- of the hinted record (as hint_newer on PostgreSQL; simulation's variant
                -- without key changes at A, seed 52926: it landed on the moved record, beat its
                -- pending move and removed its row as a copy of the hinted one).
                IF @refs_ok = 1 AND @op = 'U' AND @source_key_given = 1 AND @key_given = 0
                   AND @peer_hint IS NOT NULL AND @linked_live = 1 AND @known IS NOT NULL
                   AND @known = @own AND @own <> @peer_hint
                BEGIN
                    SELECT @key = @own, @found = 0, @holds = 0;
                    SET NOCOUNT ON; -- (no entity)
                    IF @found = 1 AND @holds = 0
                    BEGIN
                        SELECT @key = @peer_hint, @found = 0, @native = NULL;
                        IF @entity = N'order'
                            SELECT @found = 1
                            FROM [dbo].[ORDERS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k ON t.[ORDER_NO] = k.[ORDER_NO];
                        IF @entity = N'order_item'
                            SELECT @found = 1
                            FROM [dbo].[ORDER_ITEMS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k ON t.[ORDER_NO] = k.[ORDER_NO] AND t.[LINE_NO] = k.[LINE_NO];
                    IF @entity = N'order'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k;
                    IF @entity = N'order_item'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1], k.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k;
                        IF @found = 1
                           AND EXISTS (SELECT 1 FROM [tandem].[outbox]
                                       WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
                                         AND [key] = @native AND suspended = 0
                                         AND seq <= @peer_applied_seq)
                           AND NOT EXISTS (SELECT 1 FROM [tandem].[outbox]
                                           WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
                                             AND [key] = @native AND suspended = 0 AND op = 'D')
                            SET @known = @peer_hint;
                    END;
                END;

                -- 3. The record's key here, as far as it is known before writing.
                SET @given = NULL;
                IF @key_given = 1 AND @refs_ok = 1
                BEGIN
                    IF @key_problem IS NOT NULL AND @op <> 'D'
                    BEGIN
                        ;THROW 51001, @key_problem, 1;
                    END;
                    IF @key_problem IS NULL
                    BEGIN
                        IF @entity = N'order_item'
                            SELECT @given = N'[' + CONVERT(nvarchar(40), r.[ORDER_NO]) + N',' + CONVERT(nvarchar(40), r.[LINE_NO]) + N']'
                            FROM (SELECT j.[ORDER_NO] AS [ORDER_NO], j.[LINE_NO] AS [LINE_NO], j.[QTY] AS [QTY] FROM OPENJSON(N'[' + @row + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]', [QTY] int '$[2]') AS j) AS r;
                    END;
                END;
                IF @refs_ok = 0 AND @op <> 'D'
                BEGIN
                    ROLLBACK TRANSACTION tandem_change;
                    INSERT INTO @out (i, fail, parent, parent_key)
                    VALUES (@i, CASE WHEN @missing_gone = 1 THEN 'G' ELSE 'P' END, @missing_parent, @missing_key);
                    SET @done = 1;
                END;
            END;

            IF @done = 0
            BEGIN
                SET @here = CASE WHEN @key_given = 1 THEN COALESCE(@given, @known) ELSE @known END;
                -- A key given by values that another live record holds here is not this
                -- record's: its image is older than that record's, so it waits (retried) until
                -- that record moves or is deleted, or a newer change of its own supersedes it.
                -- A delete settles without touching that record's row, link or pending changes.
                IF @key_given = 1 AND @here IS NOT NULL AND @op = 'D'
                    AND EXISTS (SELECT 1 FROM [tandem].[id_map]
                                WHERE entity = @entity AND [a_key] = @here AND deleted = 0
                                  AND [b_key] IS NOT NULL AND [b_key] <> @source_key)
                    SET @here = NULL;
                -- A delete of a record this side has no link of, nor the source: nothing of
                -- it reached here (its insert never came, or waits below for this side's own
                -- one). A row under its key given here that is a new record of this side (its
                -- insert pending here) is another record, and stays (found by the simulation's
                -- full workload, seeds 2673 and 6044; as on PostgreSQL).
                IF @key_given = 1 AND @here IS NOT NULL AND @op = 'D'
                    AND @link_found = 0 AND @peer_hint IS NULL
                BEGIN
                    SELECT @key = @here, @native = NULL;
                    IF @entity = N'order'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k;
                    IF @entity = N'order_item'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1], k.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k;
                    IF EXISTS (SELECT 1 FROM [tandem].[outbox]
                               WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
                                 AND [key] = @native AND op = 'I' AND suspended = 0)
                        SET @here = NULL;
                END;
                -- A delete arriving at a tombstone here, under a key given here by values that
                -- a new record of this side holds now (its insert the oldest change of it
                -- pending here after all the source has applied of this side's changes of the
                -- record): the record it names was deleted here already, and the new one under
                -- the reused key stays (@new_own, as @replaced above for keys drawn here;
                -- simulation's default workload, seed 484427; as on PostgreSQL).
                IF @key_given = 1 AND @here IS NOT NULL AND @op = 'D' AND @new_own = 1
                    AND @own COLLATE Latin1_General_100_BIN2 = @here
                    SET @here = NULL;
                IF @key_given = 1 AND @given IS NOT NULL AND @op <> 'D'
                BEGIN
                    SET @v = NULL;
                    SELECT TOP (1) @v = [b_key] FROM [tandem].[id_map]
                    WHERE entity = @entity AND [a_key] = @given AND deleted = 0
                      AND [b_key] IS NOT NULL AND [b_key] <> @source_key;
                    -- A record this side deleted and created anew under the key (an insert
                    -- after its last pending delete, the new record's updates after it) does
                    -- not hold it: the link names the deleted record, whose delete has not come
                    -- back confirmed (its reply was lost). The upsert meets the new record as a
                    -- conflict below (seed 13671; also with updates after the insert, seeds
                    -- 83823 and 92172 of the variant without key changes at A; as on
                    -- PostgreSQL).
                    IF @v IS NOT NULL
                    BEGIN
                        SELECT @key = @given, @native = NULL;
                    IF @entity = N'order'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k;
                    IF @entity = N'order_item'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1], k.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k;
                        IF EXISTS (SELECT 1 FROM [tandem].[outbox] AS i
                                   WHERE i.entity = @entity AND i.key_prefix = LEFT(@native, 400)
                                     AND i.[key] = @native AND i.op = 'I' AND i.suspended = 0
                                     AND i.seq > (SELECT MAX(d.seq) FROM [tandem].[outbox] AS d
                                                  WHERE d.entity = @entity
                                                    AND d.key_prefix = LEFT(@native, 400)
                                                    AND d.[key] = @native AND d.op = 'D'
                                                    AND d.suspended = 0))
                            SET @v = NULL;
                        -- A record moving onto a key held by a record that stays there
                        -- whatever its peer's changes say does not wait for it to move. It
                        -- stays where its changes pending here (its row here, the newest not a
                        -- delete) beat a user's change captured at the source when this one
                        -- was: then they beat any move of its peer away from the key, which the
                        -- source made before this change took it. The move meets it as a
                        -- conflict below, loses, and is put back under its old key at its side
                        -- (@held; seed 87994, as on PostgreSQL).
                        ELSE IF @linked_live = 1 AND @known IS NOT NULL
                            AND @known COLLATE Latin1_General_100_BIN2 <> @given
                        BEGIN
                            SELECT @local_op = NULL, @local_at = NULL;
                            SELECT TOP (1) @local_op = op, @local_at = captured_at
                            FROM [tandem].[outbox]
                            WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
                              AND [key] = @native AND suspended = 0
                            ORDER BY seq DESC;
                            IF @local_op <> 'D'
                                AND EXISTS (SELECT 1 FROM [tandem].[outbox]
                                            WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
                                              AND [key] = @native AND derived = 0 AND suspended = 0)
                                AND ((@policy = 'a_wins' AND 'A' = N'A')
                                     OR (@policy = 'b_wins' AND 'A' = N'B')
                                     OR (@policy = 'newest_wins'
                                         AND (@local_at > @captured_at
                                              OR (@local_at = @captured_at AND 'A' = N'A'))))
                            BEGIN
                                SELECT @key = @given, @found = 0;
                        IF @entity = N'order'
                            SELECT @found = 1
                            FROM [dbo].[ORDERS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k ON t.[ORDER_NO] = k.[ORDER_NO];
                        IF @entity = N'order_item'
                            SELECT @found = 1
                            FROM [dbo].[ORDER_ITEMS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k ON t.[ORDER_NO] = k.[ORDER_NO] AND t.[LINE_NO] = k.[LINE_NO];
                                IF @found = 1
                                    SELECT @held = 1, @v = NULL;
                            END;
                        END;
                    END;
                    IF @v IS NOT NULL
                    BEGIN
                        SET @msg = N'key ' + @given + N' at side ' + 'A'
                            + N' belongs to another record (side ' + 'B' + N' key ' + @v
                            + N'); this change waits until that record moves or is deleted, or a newer change of this record arrives';
                        ;THROW 51003, @msg, 1;
                    END;
                END;
                -- A creation at the source under a key given here by values, where this
                -- side's own new record under that key, linked to nothing, was sent to the
                -- source already (its insert, or an update after its pending insert, at or
                -- below the sent mark, never failed or sent again since): the reply may have
                -- been lost, its copy may be there, and then the source's record is another
                -- one (an update travels as the insert that failed earlier in its burst: seed
                -- 62166 of the simulation's variant).
                -- Merging the two here would leave that copy linked to nothing at the source.
                -- The change waits until this side's insert is confirmed (linked) or failed
                -- (51004, caught below as H; seeds 8082 and 21577, as on PostgreSQL). So it does
                -- where that record was deleted here since (its row gone, its newest pending
                -- change a delete not sent yet): winning over that delete as a conflict would
                -- discard it, and its copy would stay at the source (seed 91390). A linked
                -- record moving onto that key waits the same: winning there would take the new
                -- record over, and its copy there would stay linked to nothing (seed 57548 of
                -- the variant, as on PostgreSQL).
                IF @key_given = 1 AND @here IS NOT NULL
                    AND ((@op = 'I' AND @born = 1 AND @link_found = 0 AND @peer_hint IS NULL)
                         OR (@op <> 'D' AND @linked_live = 1 AND @known IS NOT NULL
                             AND @given IS NOT NULL AND @known <> @given))
                    AND NOT EXISTS (SELECT 1 FROM [tandem].[id_map]
                                    WHERE entity = @entity AND [a_key] = @here AND deleted = 0)
                BEGIN
                    SELECT @key = @here, @found = 0, @native = NULL;
                        IF @entity = N'order'
                            SELECT @found = 1
                            FROM [dbo].[ORDERS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k ON t.[ORDER_NO] = k.[ORDER_NO];
                        IF @entity = N'order_item'
                            SELECT @found = 1
                            FROM [dbo].[ORDER_ITEMS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k ON t.[ORDER_NO] = k.[ORDER_NO] AND t.[LINE_NO] = k.[LINE_NO];
                    IF @entity = N'order'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k;
                    IF @entity = N'order_item'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1], k.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k;
                    IF EXISTS (SELECT 1 FROM [tandem].[outbox] AS s
                               WHERE s.entity = @entity AND s.key_prefix = LEFT(@native, 400)
                                 AND s.[key] = @native AND s.op <> 'D' AND s.suspended = 0
                                 AND (s.attempts = 0 OR s.next_attempt_at IS NULL)
                                 AND s.seq <= (SELECT seq FROM [tandem].[sent_mark])
                                 AND EXISTS (SELECT 1 FROM [tandem].[outbox] AS i
                                             WHERE i.entity = @entity
                                               AND i.key_prefix = LEFT(@native, 400)
                                               AND i.[key] = @native AND i.op = 'I'
                                               AND i.suspended = 0 AND i.seq <= s.seq))
                    BEGIN
                        -- The newest pending change, and whether it was sent too.
                        SELECT @local_op = NULL, @newest_sent = 0, @msg = NULL;
                        SELECT TOP (1) @local_op = o.op,
                               @newest_sent = CASE WHEN (o.attempts = 0 OR o.next_attempt_at IS NULL)
                                                        AND o.seq <= m.seq THEN 1 ELSE 0 END
                        FROM [tandem].[outbox] AS o CROSS JOIN [tandem].[sent_mark] AS m
                        WHERE o.entity = @entity AND o.key_prefix = LEFT(@native, 400)
                          AND o.[key] = @native AND o.suspended = 0
                        ORDER BY o.seq DESC;
                        IF @found = 1 AND @local_op <> 'D'
                            SET @msg = N' holds a new record of this side, sent to side ' + 'B'
                                + N' with no reply yet; this change waits until that record is linked or its insert fails';
                        -- Not where that delete was sent too: it came with the insert as one
                        -- change that created nothing there, or reached the copy (seed 3053).
                        IF @found = 0 AND @local_op = 'D' AND @newest_sent = 0
                            SET @msg = N' held a new record of this side, sent to side ' + 'B'
                                + N' with no reply yet and deleted here since; this change waits until that record is linked (its delete then goes first) or its insert fails';
                        IF @msg IS NOT NULL
                        BEGIN
                            SET @msg = N'key ' + @here + N' at side ' + 'A' + @msg;
                            ;THROW 51004, @msg, 1;
                        END;
                    END;
                END;
                -- 4. A change of this record captured here and not yet applied at the other side
                -- means it changed on both sides: the entity's policy settles it.
                SET @resolution = 'N';
                DELETE FROM @beaten;
                -- A move (a key given by values changed at the source): changes pending here of
                -- the record under its old key conflict as much as under its new. Where this
                -- side's win, the record stays under its old key and the move is not applied;
                -- the changes it beats go only if it wins under its new key too (@beaten; as on
                -- PostgreSQL, seed 12476).
                IF @key_given = 1 AND @op <> 'D' AND @linked_live = 1 AND @known IS NOT NULL
                   AND @given IS NOT NULL AND @known COLLATE Latin1_General_100_BIN2 <> @given
                BEGIN
                    SELECT @key = @known, @native = NULL;
                    IF @entity = N'order'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k;
                    IF @entity = N'order_item'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1], k.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k;
                    DELETE FROM @pending;
                    INSERT INTO @pending (seq, captured_at, op, image, derived)
                    SELECT seq, captured_at, op, image, derived FROM [tandem].[outbox]
                    WHERE entity = @entity AND key_prefix = LEFT(@native, 400) AND [key] = @native
                      AND suspended = 0
                      AND seq > CASE WHEN @peer_hint IS NOT NULL
                                      AND @peer_hint COLLATE Latin1_General_100_BIN2 <> @known
                                     THEN 0 ELSE @peer_applied_seq END;
                    SET @n = @@ROWCOUNT;
                    IF @n > 0
                    BEGIN
                        SELECT TOP (1) @local_seq = seq, @local_at = captured_at, @local_op = op,
                               @local_image = image
                        FROM @pending ORDER BY seq DESC;
                        SELECT @key = @known, @found = 0;
                        IF @entity = N'order'
                            SELECT @found = 1
                            FROM [dbo].[ORDERS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k ON t.[ORDER_NO] = k.[ORDER_NO];
                        IF @entity = N'order_item'
                            SELECT @found = 1
                            FROM [dbo].[ORDER_ITEMS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k ON t.[ORDER_NO] = k.[ORDER_NO] AND t.[LINE_NO] = k.[LINE_NO];
                        -- Changes of a row gone here without a captured delete decide nothing.
                        IF @local_op <> 'D' AND @found = 0
                        BEGIN
                            DELETE o FROM [tandem].[outbox] AS o JOIN @pending AS p ON o.seq = p.seq;
                            SET @n = 0;
                        END;
                    END;
                    IF @n > 0
                    BEGIN
                        SET @winner = CASE
                            WHEN @derived = 1 AND EXISTS (SELECT 1 FROM @pending WHERE derived = 0) THEN 'A'
                            WHEN @derived = 0 AND NOT EXISTS (SELECT 1 FROM @pending WHERE derived = 0) THEN 'B'
                            WHEN @policy = 'a_wins' THEN 'A' WHEN @policy = 'b_wins' THEN 'B'
                            WHEN @captured_at > @local_at THEN 'B'
                            WHEN @captured_at < @local_at THEN 'A'
                            ELSE 'A' END;
                        INSERT INTO [tandem].[conflicts]
                            (entity, incoming_side, incoming_key, local_key, policy, winner,
                             incoming_op, incoming_image, local_op, local_image)
                        VALUES (@entity, 'B', @source_key, @known, @policy, @winner,
                                @op, @image, @local_op, @local_image);
                        IF @winner = 'B'
                            INSERT INTO @beaten (seq) SELECT seq FROM @pending;
                        ELSE
                        BEGIN
                            -- The record stays under its old key; this side's changes travel
                            -- (a delete of a record not linked here again, as a new change, as
                            -- below).
                            IF @local_op = 'D' AND (@link_found = 0 OR @deleted = 1 OR @own IS NULL
                                                    OR @own COLLATE Latin1_General_100_BIN2 <> @known)
                                INSERT INTO [tandem].[outbox] (entity, op, [key], key_prefix, image, captured_at, derived)
                                SELECT entity, op, [key], key_prefix, image, captured_at, derived
                                FROM [tandem].[outbox] WHERE seq = @local_seq;
                            UPDATE [tandem].[id_map] WITH (SERIALIZABLE)
                            SET applied_seq = CASE WHEN applied_seq > @seq THEN applied_seq ELSE @seq END,
                                [a_key] = COALESCE([a_key], @known), updated_at = SYSDATETIMEOFFSET()
                            WHERE entity = @entity AND [b_key] = @source_key;
                            IF @@ROWCOUNT = 0
                                INSERT INTO [tandem].[id_map] (entity, [b_key], [a_key], applied_seq, deleted)
                                VALUES (@entity, @source_key, @known, @seq, 0);
                            INSERT INTO @out (i, how, target_key, conflict) VALUES (@i, 'C', @known, 1);
                            SET @done = 1;
                        END;
                    END;
                END;
                IF @here IS NOT NULL AND @done = 0
                BEGIN
                    SELECT @key = @here, @native = NULL;
                    IF @entity = N'order'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k;
                    IF @entity = N'order_item'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1], k.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k;
                    SET @here_native = @native;
                    DELETE FROM @pending;
                    INSERT INTO @pending (seq, captured_at, op, image, derived)
                    SELECT seq, captured_at, op, image, derived FROM [tandem].[outbox]
                    WHERE entity = @entity AND key_prefix = LEFT(@native, 400) AND [key] = @native
                      AND suspended = 0
                      -- The source's guard counts this side's changes of the record it links;
                      -- under a key the record is not linked to here, they are another record's.
                      -- So under a key the source did not link when it read the guard (a move
                      -- that landed here, whose reply had not reached it: seed 37896).
                      AND seq > CASE WHEN @known IS NOT NULL
                                      AND @known COLLATE Latin1_General_100_BIN2 <> @here
                                     THEN 0
                                     WHEN @peer_hint IS NOT NULL
                                      AND @peer_hint COLLATE Latin1_General_100_BIN2 <> @here
                                     THEN 0 ELSE @peer_applied_seq END;
                    SET @n = @@ROWCOUNT;
                    -- Changes of a row that is gone here without a captured delete: tandem
                    -- deleted it, applying the other side's delete, which could pass only once
                    -- they had been applied there (their replies lost). They decide nothing.
                    IF @n > 0
                    BEGIN
                        SELECT TOP (1) @local_op = op FROM @pending ORDER BY seq DESC;
                        SELECT @key = @here, @found = 0;
                        IF @entity = N'order'
                            SELECT @found = 1
                            FROM [dbo].[ORDERS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k ON t.[ORDER_NO] = k.[ORDER_NO];
                        IF @entity = N'order_item'
                            SELECT @found = 1
                            FROM [dbo].[ORDER_ITEMS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k ON t.[ORDER_NO] = k.[ORDER_NO] AND t.[LINE_NO] = k.[LINE_NO];
                        IF @local_op <> 'D' AND @found = 0
                        BEGIN
                            DELETE o FROM [tandem].[outbox] AS o JOIN @pending AS p ON o.seq = p.seq;
                            SET @n = 0;
                        END;
                        -- Both sides deleted the record: they agree, nothing to decide (the
                        -- local delete travels and settles on nothing there).
                        IF @op = 'D' AND @local_op = 'D'
                            SET @n = 0;
                    END;
                    IF @n > 0
                    BEGIN
                        SELECT TOP (1) @local_seq = seq, @local_at = captured_at, @local_op = op,
                               @local_image = image
                        FROM @pending ORDER BY seq DESC;
                        -- A change tandem's own apply caused (derived: a cascade, a trigger's
                        -- effect) loses to a user's change; otherwise the policy decides, and
                        -- ties go to A, so both sides decide the same way (winner_case in
                        -- entity.sql, shared with the landing on a new local record below).
                        SET @winner = CASE
                            WHEN @derived = 1 AND EXISTS (SELECT 1 FROM @pending WHERE derived = 0) THEN 'A'
                            WHEN @derived = 0 AND NOT EXISTS (SELECT 1 FROM @pending WHERE derived = 0) THEN 'B'
                            WHEN @policy = 'a_wins' THEN 'A' WHEN @policy = 'b_wins' THEN 'B'
                            WHEN @captured_at > @local_at THEN 'B'
                            WHEN @captured_at < @local_at THEN 'A'
                            ELSE 'A' END;
                        INSERT INTO [tandem].[conflicts]
                            (entity, incoming_side, incoming_key, local_key, policy, winner,
                             incoming_op, incoming_image, local_op, local_image)
                        VALUES (@entity, 'B', @source_key, @here, @policy, @winner,
                                @op, CASE WHEN @op <> 'D' THEN @image END, @local_op, @local_image);
                        IF @winner = 'B'
                        BEGIN
                            DELETE o FROM [tandem].[outbox] AS o JOIN @pending AS p ON o.seq = p.seq;
                            SELECT @resolution = 'I', @superseded = MAX(seq) FROM @pending;
                        END
                        ELSE
                        BEGIN
                            -- The local changes won over a delete: they travel as inserts, to
                            -- create the record again at the other side (all of them: an older
                            -- one arriving there as an update would be discarded as an update
                            -- after that delete, and unlink the record: found by the simulation).
                            IF @op = 'D' AND @local_op <> 'D'
                            BEGIN
                                -- As new changes, in their order, with their capture
                                -- times: a copy of one claimed before this conflict may be
                                -- on its way as an update still, and its reply must find its
                                -- row gone (a late reply changes nothing) instead of settling
                                -- the insert it has become (found by the fault suite, seed
                                -- 5517: the record stayed at this side only). Their retry
                                -- state stays theirs.
                                INSERT INTO [tandem].[outbox] (entity, op, [key], key_prefix, image, captured_at, derived,
                                    attempts, next_attempt_at, last_error, first_failed_at, last_failed_at)
                                SELECT o.entity, CASE WHEN o.op = 'U' THEN 'I' ELSE o.op END, o.[key],
                                       o.key_prefix, o.image, o.captured_at, o.derived, o.attempts,
                                       o.next_attempt_at, o.last_error, o.first_failed_at, o.last_failed_at
                                FROM [tandem].[outbox] AS o JOIN @pending AS p ON o.seq = p.seq
                                ORDER BY o.seq;
                                DELETE o FROM [tandem].[outbox] AS o JOIN @pending AS p ON o.seq = p.seq;
                                -- The other side creates the record again, under a new key
                                -- where its keys are generated; its children there that
                                -- outlived the delete (no foreign key) still name the old
                                -- one: the children here travel again, derived, and move
                                -- there under it (found by the simulation's full workload).
                                IF @entity = N'order'
                                    INSERT INTO [tandem].[outbox] (entity, op, [key], key_prefix, image, derived)
                                    SELECT N'order_item',
                                           CASE WHEN 1 = 1
                                                     AND EXISTS (SELECT 1
                                                                 FROM (SELECT TOP (1) o.op FROM [tandem].[outbox] AS o
                                                                       WHERE o.entity = N'order_item' AND o.key_prefix = LEFT(x.k, 400)
                                                                         AND o.[key] = x.k AND o.suspended = 0
                                                                       ORDER BY o.seq DESC) AS n
                                                                 WHERE n.op <> 'D')
                                                THEN 'U' ELSE 'I' END,
                                           x.k, LEFT(x.k, 400), x.img, 1
                                    FROM (SELECT CONVERT(nvarchar(max), (SELECT t.[ORDER_NO] AS [k1], t.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS k,
                                                 CONVERT(nvarchar(max), (SELECT t.[ORDER_NO] AS [ORDER_NO], t.[LINE_NO] AS [LINE_NO], t.[QTY] AS [QTY] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) AS img
                                          FROM [dbo].[ORDER_ITEMS] AS t
                                          JOIN OPENJSON(N'[' + @here + N']') WITH ([v] int '$[0]') AS p ON t.[ORDER_NO] = p.[v]
                                          WHERE 1 = 1) AS x;
                            END;
                            -- A local delete that beats the other side's change of a record
                            -- not linked here (it landed on this key) travels again, as a new
                            -- change: a copy of it may have reached the other side before that
                            -- record was linked there, and settled on nothing (found by the
                            -- simulation's full workload, seed 3053; as on PostgreSQL).
                            IF @op <> 'D' AND @local_op = 'D'
                               AND (@link_found = 0 OR @deleted = 1 OR @own IS NULL
                                    OR @own COLLATE Latin1_General_100_BIN2 <> @here)
                                INSERT INTO [tandem].[outbox] (entity, op, [key], key_prefix, image, captured_at, derived)
                                SELECT entity, op, [key], key_prefix, image, captured_at, derived
                                FROM [tandem].[outbox] WHERE seq = @local_seq;
                            -- The losing change is settled: later copies of it are stale. A
                            -- link naming this key for another record is stale (as in 6.).
                            -- Not where the record held by another one stays (@held): the
                            -- move is put back below, and that record keeps its link.
                            IF @here IS NOT NULL AND @held = 0
                            BEGIN
                                DELETE FROM [tandem].[id_map]
                                WHERE entity = @entity AND [a_key] = @here AND [b_key] IS NULL;
                                UPDATE [tandem].[id_map] SET [a_key] = NULL, deleted = 1, updated_at = SYSDATETIMEOFFSET()
                                WHERE entity = @entity AND [a_key] = @here AND [b_key] <> @source_key;
                            END;
                            -- A record the other side moved to a key given here that a local
                            -- record holds (whose change won) lands on that record: two records
                            -- claimed one key at once, so one record now, the winner's values,
                            -- and the link names it (as on PostgreSQL). Its old row here goes
                            -- (the record moved), unless this side changed it meanwhile or
                            -- rows refer to it (@n stays 0): then it stays there, and no change
                            -- pending here would put it back at the other side, so its row
                            -- travels as an update (found by the simulation's full workload).
                            SET @v = NULL;
                            IF @key_given = 1 AND @op <> 'D' AND @given IS NOT NULL
                                SELECT @v = [a_key] FROM [tandem].[id_map]
                                WHERE entity = @entity AND [b_key] = @source_key AND deleted = 0
                                  AND [a_key] <> @given;
                            SET @moved_from = @v;
                            IF @v IS NOT NULL
                            BEGIN
                                SELECT @key = @v, @found = 0;
                        IF @entity = N'order'
                            SELECT @found = 1
                            FROM [dbo].[ORDERS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k ON t.[ORDER_NO] = k.[ORDER_NO];
                        IF @entity = N'order_item'
                            SELECT @found = 1
                            FROM [dbo].[ORDER_ITEMS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k ON t.[ORDER_NO] = k.[ORDER_NO] AND t.[LINE_NO] = k.[LINE_NO];
                                SET @old_found = @found;
                                SELECT @key = @here, @found = 0;
                        IF @entity = N'order'
                            SELECT @found = 1
                            FROM [dbo].[ORDERS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k ON t.[ORDER_NO] = k.[ORDER_NO];
                        IF @entity = N'order_item'
                            SELECT @found = 1
                            FROM [dbo].[ORDER_ITEMS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k ON t.[ORDER_NO] = k.[ORDER_NO] AND t.[LINE_NO] = k.[LINE_NO];
                                IF @old_found = 1
                                BEGIN
                                    SELECT @key = @v, @native = NULL, @n = 0;
                    IF @entity = N'order'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k;
                    IF @entity = N'order_item'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1], k.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k;
                                    IF @found = 1 AND @held = 0 AND NOT EXISTS (
                                        SELECT 1 FROM [tandem].[outbox]
                                        WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
                                          AND [key] = @native AND suspended = 0
                                          AND seq > @peer_applied_seq)
                                    BEGIN
                                        -- Not captured, as every write of an apply (5.).
                                        EXEC sys.sp_set_session_context N'tandem.applying', @tbl;
                                        EXEC sys.sp_set_session_context N'tandem.entity', @entity;
                                        IF @entity = N'order_item'
                                        BEGIN
                                            DELETE t FROM [dbo].[ORDER_ITEMS] AS t
                                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k ON t.[ORDER_NO] = k.[ORDER_NO] AND t.[LINE_NO] = k.[LINE_NO];
                                            SET @n = @@ROWCOUNT;
                                        END;
                                        EXEC sys.sp_set_session_context N'tandem.applying', NULL;
                                    END;
                                    IF @n = 0
                                    BEGIN
                                    IF @entity = N'order'
                                        INSERT INTO [tandem].[outbox] (entity, op, [key], key_prefix, image)
                                        SELECT N'order', 'U', x.k, LEFT(x.k, 400), x.img
                                        FROM (SELECT CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS k,
                                                     CONVERT(nvarchar(max), (SELECT t.[ORDER_NO] AS [ORDER_NO], t.[CUST_NAME] AS [CUST_NAME], t.[STATUS] AS [STATUS], t.[AMOUNT] AS [AMOUNT] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) AS img
                                              FROM [dbo].[ORDERS] AS t
                                              JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k ON t.[ORDER_NO] = k.[ORDER_NO]) AS x;
                                    IF @entity = N'order_item'
                                        INSERT INTO [tandem].[outbox] (entity, op, [key], key_prefix, image)
                                        SELECT N'order_item', 'U', x.k, LEFT(x.k, 400), x.img
                                        FROM (SELECT CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1], k.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS k,
                                                     CONVERT(nvarchar(max), (SELECT t.[ORDER_NO] AS [ORDER_NO], t.[LINE_NO] AS [LINE_NO], t.[QTY] AS [QTY] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) AS img
                                              FROM [dbo].[ORDER_ITEMS] AS t
                                              JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k ON t.[ORDER_NO] = k.[ORDER_NO] AND t.[LINE_NO] = k.[LINE_NO]) AS x;
                                        SET @v = NULL;
                                    END;
                                END
                                ELSE IF @found = 0
                                    SET @v = NULL;
                            END;
                            -- A move that lost and did not land: the record's key here is
                            -- still its old one (reported so; the source links it there).
                            IF @v IS NULL AND @moved_from IS NOT NULL
                                SET @here = @moved_from;
                            -- A lost delete deleted the record at the other side for good where
                            -- keys are generated there (the winner travels as an insert and gets
                            -- a new key): a tombstone; where they are given by values, the
                            -- winner comes back under the same key and the link stays.
                            UPDATE [tandem].[id_map] WITH (SERIALIZABLE)
                            SET applied_seq = CASE WHEN applied_seq > @seq THEN applied_seq ELSE @seq END,
                                [a_key] = CASE WHEN @v IS NOT NULL THEN @here ELSE COALESCE([a_key], @here) END,
                                deleted = CASE WHEN @op = 'D' AND @source_key_given = 0 THEN 1 ELSE deleted END,
                                updated_at = SYSDATETIMEOFFSET()
                            WHERE entity = @entity AND [b_key] = @source_key;
                            IF @@ROWCOUNT = 0
                                INSERT INTO [tandem].[id_map] (entity, [b_key], [a_key], applied_seq, deleted)
                                VALUES (@entity, @source_key, @here, @seq, CASE WHEN @op = 'D' AND @source_key_given = 0 THEN 1 ELSE 0 END);
                            INSERT INTO @out (i, how, target_key, conflict) VALUES (@i, 'C', @here, 1);
                            SET @done = 1;
                        END;
                    END;
                END;
            END;

            -- The changes a move beat under its old key go: it won under its new key too.
            IF @done = 0 AND EXISTS (SELECT 1 FROM @beaten)
            BEGIN
                DELETE o FROM [tandem].[outbox] AS o JOIN @beaten AS b ON o.seq = b.seq;
                SELECT @local_seq = MAX(seq) FROM @beaten;
                IF @superseded IS NULL OR @local_seq > @superseded
                    SET @superseded = @local_seq;
                SET @resolution = 'I';
            END;

            IF @done = 0
            BEGIN
                -- 5. Write. Tandem's own writes are marked so the capture trigger skips them.
                SET @force = CASE WHEN @resolution = 'I' THEN 1 ELSE 0 END;
                SET @out_conflict = @force;
                EXEC sys.sp_set_session_context N'tandem.applying', @tbl;
                -- Entities sharing the table capture this write (sql/mssql/trigger.sql).
                EXEC sys.sp_set_session_context N'tandem.entity', @entity;
                IF @op = 'D'
                BEGIN
                    SET @out_how = 'U';
                    IF @here IS NOT NULL
                    BEGIN
                        SELECT @key = @here, @n = 0;
                        IF @entity = N'order'
                        BEGIN
                            DELETE t FROM [dbo].[ORDERS] AS t
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k ON t.[ORDER_NO] = k.[ORDER_NO];
                            SET @n = @@ROWCOUNT;
                        END;
                        IF @entity = N'order_item'
                        BEGIN
                            DELETE t FROM [dbo].[ORDER_ITEMS] AS t
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k ON t.[ORDER_NO] = k.[ORDER_NO] AND t.[LINE_NO] = k.[LINE_NO];
                            SET @n = @@ROWCOUNT;
                        END;
                        IF @n > 0 SET @out_how = 'W';
                        -- Changes of the record this delete removed that can decide nothing
                        -- any more: suspended ones (it was gone at the other side already),
                        -- and pending updates the other side's guard counts as seen before it
                        -- deleted the record (simulation, full workload, seed 64491), and
                        -- creations and updates older than a delete pending here: the record
                        -- is deleted at both sides, and they would create it again at the
                        -- other side (seed 2496 of the variant without key changes at A). Moot,
                        -- settled instead of left for an operator (as on PostgreSQL).
                        DELETE FROM @moot;
                        SET @last_delete = NULL;
                        SELECT @last_delete = MAX(seq) FROM [tandem].[outbox]
                        WHERE entity = @entity AND key_prefix = LEFT(@here_native, 400)
                          AND [key] = @here_native AND op = 'D' AND suspended = 0;
                        DELETE FROM [tandem].[outbox]
                        OUTPUT deleted.seq INTO @moot (seq)
                        WHERE entity = @entity AND key_prefix = LEFT(@here_native, 400)
                          AND [key] = @here_native
                          AND (suspended = 1
                               OR (op <> 'D' AND seq < @last_delete)
                               OR (op = 'U'
                                   AND seq <= CASE WHEN @known IS NOT NULL
                                                    AND @known COLLATE Latin1_General_100_BIN2 <> @here
                                                   THEN 0
                                                   WHEN @peer_hint IS NOT NULL
                                                    AND @peer_hint COLLATE Latin1_General_100_BIN2 <> @here
                                                   THEN 0 ELSE @peer_applied_seq END));
                        IF EXISTS (SELECT 1 FROM @moot)
                            SET @out_moot = (SELECT seq FROM @moot ORDER BY seq FOR JSON PATH);
                    END;
                    SELECT @put = 1, @link_target = @here, @link_deleted = 1;
                END
                ELSE IF @tombstone = 1 AND @op = 'U' AND @force = 0
                    -- An update after a delete: the record is gone here, and the delete wins.
                    SELECT @put = 1, @link_target = @known, @link_deleted = 1, @out_how = 'D';
                ELSE
                BEGIN
                    -- A value tandem could not convert for its column fails here, where
                    -- PostgreSQL's typed read of the row would.
                    IF @row_problem IS NOT NULL
                    BEGIN
                        ;THROW 51000, @row_problem, 1;
                    END;
                    -- A record the other side moved to another key given here (a line
                    -- renumbered, an item moved to another order) leaves its old row: it is
                    -- written under its new key below (as on PostgreSQL; without this, the
                    -- change was taken for an update of a record deleted here and dropped).
                    SET @moved = 0;
                    IF @key_given = 1 AND @given IS NOT NULL AND @linked_live = 1
                       AND @known IS NOT NULL AND @known COLLATE Latin1_General_100_BIN2 <> @given
                    BEGIN
                        SELECT @key = @known, @n = 0;
                        IF @entity = N'order'
                        BEGIN
                            DELETE t FROM [dbo].[ORDERS] AS t
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k ON t.[ORDER_NO] = k.[ORDER_NO];
                            SET @n = @@ROWCOUNT;
                        END;
                        IF @entity = N'order_item'
                        BEGIN
                            DELETE t FROM [dbo].[ORDER_ITEMS] AS t
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k ON t.[ORDER_NO] = k.[ORDER_NO] AND t.[LINE_NO] = k.[LINE_NO];
                            SET @n = @@ROWCOUNT;
                        END;
                        IF @n > 0 SET @moved = 1;
                    END;
                    -- After a tombstone the record is created anew, unless the incoming change
                    -- won a conflict against this side's changes of the record here.
                    SET @candidate = CASE WHEN @key_given = 1 THEN @given
                                          WHEN @tombstone = 1 AND @force = 0 THEN NULL ELSE @known END;
                    SET @found = 0;
                    IF @candidate IS NOT NULL
                    BEGIN
                        SET @key = @candidate;
                        IF @entity = N'order'
                            SELECT @found = 1
                            FROM [dbo].[ORDERS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k ON t.[ORDER_NO] = k.[ORDER_NO];
                        IF @entity = N'order_item'
                            SELECT @found = 1
                            FROM [dbo].[ORDER_ITEMS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k ON t.[ORDER_NO] = k.[ORDER_NO] AND t.[LINE_NO] = k.[LINE_NO];
                    END;
                    -- A linked record put back under values of the other side's key that a
                    -- new record of this side holds here (not linked, its insert pending):
                    -- two records claimed one key at once, so they end as one, as two created
                    -- under one key do. The change lands on that record (the policy decides
                    -- against its pending changes), and the linked record's old row goes, not
                    -- captured: nothing of it is pending here, so it is a copy of the incoming
                    -- record (as lands_on_new_local on PostgreSQL; found by the simulation's
                    -- full workload, seed 471 and 17 more). Only for a leaf entity with real
                    -- deletes (natural_holder). The same where the incoming record is new here
                    -- (or created anew after a tombstone): two records created under one key at
                    -- once are one record at once, as at the side given the key, provided the
                    -- local one has nothing pending but its insert (one moved onto the key
                    -- still travels as a move; seed 1739 and 3 more, 760 for the move).
                    SET @holder = NULL;
                    IF @found = 1 AND @key_given = 0
                    BEGIN
                            SET NOCOUNT ON; -- (no entity)
                    END
                    ELSE IF @candidate IS NULL AND @key_given = 0
                    BEGIN
                        SET @key = NULL;
                            SET NOCOUNT ON; -- (no entity)
                    END;
                    IF @holder IS NOT NULL
                    BEGIN
                        SELECT @old_native = NULL;
                        IF @candidate IS NOT NULL
                        BEGIN
                            SELECT @key = @candidate, @native = NULL;
                    IF @entity = N'order'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k;
                    IF @entity = N'order_item'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1], k.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k;
                            SET @old_native = @native;
                        END;
                        SELECT @key = @holder, @native = NULL;
                    IF @entity = N'order'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k;
                    IF @entity = N'order_item'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1], k.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k;
                        IF EXISTS (SELECT 1 FROM [tandem].[outbox]
                                   WHERE entity = @entity AND key_prefix = LEFT(@old_native, 400)
                                     AND [key] = @old_native AND suspended = 0)
                           OR EXISTS (SELECT 1 FROM [tandem].[id_map]
                                      WHERE entity = @entity AND [a_key] = @holder
                                        AND [b_key] IS NOT NULL AND deleted = 0)
                           OR NOT EXISTS (SELECT 1 FROM [tandem].[outbox]
                                          WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
                                            AND [key] = @native AND op = 'I' AND suspended = 0)
                           OR (@candidate IS NULL
                               AND EXISTS (SELECT 1 FROM [tandem].[outbox]
                                           WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
                                             AND [key] = @native AND op <> 'I' AND suspended = 0))
                            SET @holder = NULL;
                        SET @key = @candidate;
                    END;
                    IF @holder IS NOT NULL
                    BEGIN
                        SET @n = 0;
                        IF @candidate IS NOT NULL
                        BEGIN
                        IF @entity = N'order'
                        BEGIN
                            DELETE t FROM [dbo].[ORDERS] AS t
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k ON t.[ORDER_NO] = k.[ORDER_NO];
                            SET @n = @@ROWCOUNT;
                        END;
                        IF @entity = N'order_item'
                        BEGIN
                            DELETE t FROM [dbo].[ORDER_ITEMS] AS t
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k ON t.[ORDER_NO] = k.[ORDER_NO] AND t.[LINE_NO] = k.[LINE_NO];
                            SET @n = @@ROWCOUNT;
                        END;
                        END;
                        DELETE FROM @pending;
                        INSERT INTO @pending (seq, captured_at, op, image, derived)
                        SELECT seq, captured_at, op, image, derived FROM [tandem].[outbox]
                        WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
                          AND [key] = @native AND suspended = 0;
                        SELECT TOP (1) @local_at = captured_at, @local_op = op, @local_image = image
                        FROM @pending ORDER BY seq DESC;
                        SET @winner = CASE
                            WHEN @derived = 1 AND EXISTS (SELECT 1 FROM @pending WHERE derived = 0) THEN 'A'
                            WHEN @derived = 0 AND NOT EXISTS (SELECT 1 FROM @pending WHERE derived = 0) THEN 'B'
                            WHEN @policy = 'a_wins' THEN 'A' WHEN @policy = 'b_wins' THEN 'B'
                            WHEN @captured_at > @local_at THEN 'B'
                            WHEN @captured_at < @local_at THEN 'A'
                            ELSE 'A' END;
                        INSERT INTO [tandem].[conflicts]
                            (entity, incoming_side, incoming_key, local_key, policy, winner,
                             incoming_op, incoming_image, local_op, local_image)
                        VALUES (@entity, 'B', @source_key, @holder, @policy, @winner,
                                @op, @image, @local_op, @local_image);
                        IF @winner = 'B'
                        BEGIN
                            DELETE o FROM [tandem].[outbox] AS o JOIN @pending AS p ON o.seq = p.seq;
                            SELECT @local_seq = MAX(seq) FROM @pending;
                            IF @superseded IS NULL OR @local_seq > @superseded
                                SET @superseded = @local_seq;
                            SELECT @key = @holder, @n = 0;
                        IF @entity = N'order'
                        BEGIN
                            UPDATE t SET t.[CUST_NAME] = r.[CUST_NAME], t.[STATUS] = r.[STATUS], t.[AMOUNT] = r.[AMOUNT], t.[NEW_ID] = r.[NEW_ID]
                            FROM [dbo].[ORDERS] AS t
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k ON t.[ORDER_NO] = k.[ORDER_NO]
                            CROSS JOIN (SELECT j.[ORDER_NO] AS [ORDER_NO], j.[CUST_NAME] AS [CUST_NAME], j.[STATUS] AS [STATUS], j.[AMOUNT] AS [AMOUNT], j.[NEW_ID] AS [NEW_ID] FROM OPENJSON(N'[' + @row + N']') WITH ([ORDER_NO] int '$[0]', [CUST_NAME] varchar(max) '$[1]', [STATUS] varchar(max) '$[2]', [AMOUNT] decimal(12,2) '$[3]', [NEW_ID] bigint '$[4]') AS j) AS r
                            WHERE CONVERT(nvarchar(max), (SELECT t.[CUST_NAME], t.[STATUS], t.[AMOUNT], t.[NEW_ID] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2
                               <> CONVERT(nvarchar(max), (SELECT r.[CUST_NAME], r.[STATUS], r.[AMOUNT], r.[NEW_ID] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2;
                            SET @n = @@ROWCOUNT;
                        END;
                        IF @entity = N'order_item'
                        BEGIN
                            UPDATE t SET t.[QTY] = r.[QTY]
                            FROM [dbo].[ORDER_ITEMS] AS t
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k ON t.[ORDER_NO] = k.[ORDER_NO] AND t.[LINE_NO] = k.[LINE_NO]
                            CROSS JOIN (SELECT j.[ORDER_NO] AS [ORDER_NO], j.[LINE_NO] AS [LINE_NO], j.[QTY] AS [QTY] FROM OPENJSON(N'[' + @row + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]', [QTY] int '$[2]') AS j) AS r
                            WHERE CONVERT(nvarchar(max), (SELECT t.[QTY] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2
                               <> CONVERT(nvarchar(max), (SELECT r.[QTY] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2;
                            SET @n = @@ROWCOUNT;
                        END;
                            SELECT @out_how = 'W', @out_conflict = 1;
                        END
                        ELSE
                            SELECT @out_how = 'C', @out_conflict = 1;
                        SELECT @put = 1, @link_target = @holder, @link_deleted = 0;
                    END
                    ELSE IF @found = 1
                    BEGIN
                        SET @n = 0;
                        IF @entity = N'order'
                        BEGIN
                            UPDATE t SET t.[CUST_NAME] = r.[CUST_NAME], t.[STATUS] = r.[STATUS], t.[AMOUNT] = r.[AMOUNT], t.[NEW_ID] = r.[NEW_ID]
                            FROM [dbo].[ORDERS] AS t
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k ON t.[ORDER_NO] = k.[ORDER_NO]
                            CROSS JOIN (SELECT j.[ORDER_NO] AS [ORDER_NO], j.[CUST_NAME] AS [CUST_NAME], j.[STATUS] AS [STATUS], j.[AMOUNT] AS [AMOUNT], j.[NEW_ID] AS [NEW_ID] FROM OPENJSON(N'[' + @row + N']') WITH ([ORDER_NO] int '$[0]', [CUST_NAME] varchar(max) '$[1]', [STATUS] varchar(max) '$[2]', [AMOUNT] decimal(12,2) '$[3]', [NEW_ID] bigint '$[4]') AS j) AS r
                            WHERE CONVERT(nvarchar(max), (SELECT t.[CUST_NAME], t.[STATUS], t.[AMOUNT], t.[NEW_ID] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2
                               <> CONVERT(nvarchar(max), (SELECT r.[CUST_NAME], r.[STATUS], r.[AMOUNT], r.[NEW_ID] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2;
                            SET @n = @@ROWCOUNT;
                        END;
                        IF @entity = N'order_item'
                        BEGIN
                            UPDATE t SET t.[QTY] = r.[QTY]
                            FROM [dbo].[ORDER_ITEMS] AS t
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k ON t.[ORDER_NO] = k.[ORDER_NO] AND t.[LINE_NO] = k.[LINE_NO]
                            CROSS JOIN (SELECT j.[ORDER_NO] AS [ORDER_NO], j.[LINE_NO] AS [LINE_NO], j.[QTY] AS [QTY] FROM OPENJSON(N'[' + @row + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]', [QTY] int '$[2]') AS j) AS r
                            WHERE CONVERT(nvarchar(max), (SELECT t.[QTY] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2
                               <> CONVERT(nvarchar(max), (SELECT r.[QTY] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2;
                            SET @n = @@ROWCOUNT;
                        END;
                        SELECT @put = 1, @link_target = @candidate, @link_deleted = 0,
                               @out_how = CASE WHEN @n > 0 THEN 'W' ELSE 'U' END;
                    END
                    ELSE IF @candidate IS NOT NULL AND @linked_live = 1 AND @force = 0 AND @moved = 0 AND @op = 'U'
                        -- Linked, yet gone here, with no delete of it pending here: it was
                        -- deleted at this side and that delete reached the other side already.
                        -- (An insert re-creates it, as PostgreSQL's apply does: that is how
                        -- `verify --repair` brings back a record deleted behind tandem's back;
                        -- a generated key is drawn anew.)
                        SELECT @put = 1, @link_target = @candidate, @link_deleted = 1, @out_how = 'D';
                    ELSE
                    BEGIN
                        DELETE FROM @ins;
                        IF @entity = N'order'
                        BEGIN
                            INSERT INTO [dbo].[ORDERS] ([CUST_NAME], [STATUS], [AMOUNT], [NEW_ID])
                            SELECT r.[CUST_NAME], r.[STATUS], r.[AMOUNT], r.[NEW_ID]
                            FROM (SELECT j.[ORDER_NO] AS [ORDER_NO], j.[CUST_NAME] AS [CUST_NAME], j.[STATUS] AS [STATUS], j.[AMOUNT] AS [AMOUNT], j.[NEW_ID] AS [NEW_ID] FROM OPENJSON(N'[' + @row + N']') WITH ([ORDER_NO] int '$[0]', [CUST_NAME] varchar(max) '$[1]', [STATUS] varchar(max) '$[2]', [AMOUNT] decimal(12,2) '$[3]', [NEW_ID] bigint '$[4]') AS j) AS r;
                            INSERT INTO @ins (k) VALUES (N'[' + CONVERT(nvarchar(40), CONVERT(int, SCOPE_IDENTITY())) + N']');
                        END;
                        IF @entity = N'order_item'
                        BEGIN
                            INSERT INTO [dbo].[ORDER_ITEMS] ([ORDER_NO], [LINE_NO], [QTY])
                            SELECT r.[ORDER_NO], r.[LINE_NO], r.[QTY]
                            FROM (SELECT j.[ORDER_NO] AS [ORDER_NO], j.[LINE_NO] AS [LINE_NO], j.[QTY] AS [QTY] FROM OPENJSON(N'[' + @row + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]', [QTY] int '$[2]') AS j) AS r;
                            INSERT INTO @ins (k) VALUES (@given);
                        END;
                        SELECT @put = 1, @link_target = (SELECT TOP (1) k FROM @ins),
                               @link_deleted = 0, @out_how = 'W';
                    END;
                END;
                EXEC sys.sp_set_session_context N'tandem.applying', NULL;
                EXEC sys.sp_set_session_context N'tandem.entity', NULL;
            END;

            IF @put = 1
            BEGIN
                -- 6. The link: the sequence guard and the id pair, with the data.
                IF @link_target IS NOT NULL
                BEGIN
                    -- A link naming this record's key for another record of the other side is
                    -- stale (the key was reused, or the record came back there under another
                    -- key): that record loses its key here and becomes a tombstone, keeping
                    -- its sequence guard (as on PostgreSQL).
                    DELETE FROM [tandem].[id_map]
                    WHERE entity = @entity AND [a_key] = @link_target AND [b_key] IS NULL;
                    UPDATE [tandem].[id_map] SET [a_key] = NULL, deleted = 1, updated_at = SYSDATETIMEOFFSET()
                    WHERE entity = @entity AND [a_key] = @link_target AND [b_key] <> @source_key;
                END;
                UPDATE [tandem].[id_map] WITH (SERIALIZABLE)
                SET [a_key] = COALESCE(@link_target, [a_key]),
                    applied_seq = CASE WHEN applied_seq > @seq THEN applied_seq ELSE @seq END,
                    deleted = @link_deleted, updated_at = SYSDATETIMEOFFSET()
                WHERE entity = @entity AND [b_key] = @source_key;
                IF @@ROWCOUNT = 0
                    INSERT INTO [tandem].[id_map] (entity, [b_key], [a_key], applied_seq, deleted)
                    VALUES (@entity, @source_key, @link_target, @seq, @link_deleted);
                INSERT INTO @out (i, how, target_key, conflict, superseded, moot)
                VALUES (@i, @out_how, @link_target, @out_conflict, @superseded, @out_moot);
            END;
        END TRY
        BEGIN CATCH
            SELECT @err = ERROR_NUMBER(), @msg = ERROR_MESSAGE();

            EXEC sys.sp_set_session_context N'tandem.applying', NULL;
            EXEC sys.sp_set_session_context N'tandem.entity', NULL;
            IF @err IN (2627, 2601, 547, 515, 8152, 2628, 245, 8114, 8115, 220, 232, 236, 241, 242, 244, 248, 293, 235, 517, 8134, 8169, 9455, 9400, 512, 3609) OR @err >= 50000
            BEGIN
                -- Caused by the row: this change fails alone.
                IF XACT_STATE() = 1
                BEGIN
                    ROLLBACK TRANSACTION tandem_change;
                    DELETE FROM @out WHERE i = @i;
                    -- A foreign key refused the row: a parent linked here whose row is gone
                    -- (deleted here; that delete has not reached the source yet) makes the change
                    -- wait, as a parent deleted here does, instead of failing as a bad row.
                    SELECT @missing_parent = NULL, @r = -1;
                    WHILE @err = 547 AND @op <> 'D' AND @missing_parent IS NULL
                    BEGIN
                        SELECT TOP (1) @r = x.n, @r_parent = x.parent, @r_key = x.[key], @r_hint = x.hint
                        FROM OPENJSON(@refs) WITH (n int '$.n',
                             parent nvarchar(128) '$.parent', [key] nvarchar(max) '$.key', hint nvarchar(max) '$.hint') AS x
                        WHERE x.n > @r ORDER BY x.n;
                        IF @@ROWCOUNT = 0 BREAK;
                        SELECT @parent_key = NULL, @parent_link = 0, @parent_deleted = 0;
                        SELECT @parent_key = [a_key], @parent_link = 1, @parent_deleted = deleted
                        FROM [tandem].[id_map]
                        WHERE entity = @r_parent AND [b_key] = @r_key;
                        IF @parent_link = 0
                            SET @parent_key = @r_hint;
                        IF @parent_key IS NOT NULL AND @parent_deleted = 0
                        BEGIN
                            SELECT @child_entity = @entity, @entity = @r_parent, @key = @parent_key, @found = 0;
                        IF @entity = N'order'
                            SELECT @found = 1
                            FROM [dbo].[ORDERS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k ON t.[ORDER_NO] = k.[ORDER_NO];
                        IF @entity = N'order_item'
                            SELECT @found = 1
                            FROM [dbo].[ORDER_ITEMS] AS t WITH (UPDLOCK, HOLDLOCK)
                            JOIN OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k ON t.[ORDER_NO] = k.[ORDER_NO] AND t.[LINE_NO] = k.[LINE_NO];
                            SET @entity = @child_entity;
                            IF @found = 0
                                SELECT @missing_parent = @r_parent, @missing_key = @r_key;
                        END;
                    END;
                    -- A unique key refused the row: where another record here holds the
                    -- incoming values of the other side's key (a natural unique key here) and
                    -- still has changes pending here, those changes decide the clash at the
                    -- source (the two records meet there under one key, or the holder moves
                    -- away), so the change waits for them instead of being suspended first
                    -- (H; as held_by_coming on PostgreSQL).
                    SET @holder = NULL;
                    IF @err IN (2627, 2601) AND @op <> 'D' AND @missing_parent IS NULL
                    BEGIN
                        SET @key = @known;
                            SET NOCOUNT ON; -- (no entity)
                        IF @holder IS NOT NULL
                        BEGIN
                            SELECT @key = @holder, @native = NULL;
                    IF @entity = N'order'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]') AS k;
                    IF @entity = N'order_item'
                        SELECT @native = CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1], k.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
                        FROM OPENJSON(N'[' + @key + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k;
                            IF NOT EXISTS (SELECT 1 FROM [tandem].[outbox]
                                           WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
                                             AND [key] = @native AND suspended = 0)
                                SET @holder = NULL;
                        END;
                    END;
                    -- This side's own insert under the key is on its way there (51004 above).
                    IF @err = 51004
                        SET @holder = @here;
                    IF @missing_parent IS NOT NULL
                        INSERT INTO @out (i, fail, parent, parent_key) VALUES (@i, 'G', @missing_parent, @missing_key);
                    ELSE IF @holder IS NOT NULL
                        INSERT INTO @out (i, fail, err_number, err_message, parent_key)
                        VALUES (@i, 'H', @err, @msg, @holder);
                    ELSE
                        INSERT INTO @out (i, fail, err_number, err_message) VALUES (@i, 'R', @err, @msg);
                END
                ELSE
                BEGIN
                    -- The error doomed the transaction (or a trigger ended it): start again
                    -- without this change.
                    IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
                    INSERT INTO @skip (i, err_number, err_message) VALUES (@i, @err, @msg);
                    SET @restart = 1;
                    BREAK;
                END;
            END
            ELSE
            BEGIN
                -- Not the row's fault: the whole batch fails and is retried.
                IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
                THROW;
            END;
        END CATCH;
    END;
    IF @restart = 0 COMMIT TRANSACTION;
END;
SELECT i, how, target_key, conflict, fail, err_number, err_message, parent, parent_key, superseded,
       moot
FROM @out ORDER BY i;
