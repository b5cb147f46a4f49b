-- Tandem: record, at the side changes came from, what became of them — in one round trip and
-- one transaction (SQL Server). @P1: the id pairs (JSON array), @P2: the outbox rows that are
-- done (JSON array of seq), @P3: the failures (JSON array).
-- Per link: drop a stale link naming the peer for another record, store the pair (a stale
-- report, `only_if_row`, leaves the link as it is when this side's row is gone: the record's
-- delete is on its way or settled, and a late copy must neither revive the link nor take the
-- peer from the link holding it now; a live link only learns the peer the other side holds
-- now; it changes nothing where its key was created again since; nor does any reply of a
-- creation or update revive a tombstone of a record gone here),
-- fill the
-- table's peer_id_column (a peer id that does not fit the column is reported, and does not
-- block the write-back of the change itself), and remove older images of the record, pending or
-- suspended
-- (a newer image was applied: images are full rows, the newest wins).
-- Result: one row per peer id that could not be stored (n, kind 'P', error), and per second copy
-- of a record removed here, or left because it could not be (n, kind 'D', its key, error).
-- A live record here that loses its peer to this link's record is a second copy of the peer's
-- record: tandem created it from the peer's change and that reply was lost, and the other side
-- then took this side's other record for the peer (both sides created the record under a key
-- given there: it landed on the local one). The copy goes, not captured (the other side never
-- knew it), and its link becomes a tombstone; unless it has changes of its own here (a user's,
-- which travel; a change settled by this write-back that lost its conflict there no longer
-- counts); only for an entity nothing refers to and without a soft delete here (as
-- drop_duplicate does on PostgreSQL).
SET NOCOUNT ON;
SET XACT_ABORT OFF;
DECLARE @links TABLE (
    n          int           NOT NULL PRIMARY KEY,
    entity     nvarchar(128) COLLATE Latin1_General_100_BIN2 NOT NULL,
    own        nvarchar(max) COLLATE Latin1_General_100_BIN2 NOT NULL,
    peer       nvarchar(max) COLLATE Latin1_General_100_BIN2 NULL,
    deleted    bit           NOT NULL,
    only_if_row bit          NOT NULL,
    seq        bigint        NOT NULL,
    peer_guard bigint        NULL,
    gone_there bit           NOT NULL,
    lost       bit           NOT NULL,
    peer_value nvarchar(max) NULL
);
INSERT INTO @links
SELECT l.n, l.entity, l.own, l.peer, l.deleted, l.only_if_row, l.seq, l.peer_guard, l.gone_there,
       ISNULL(l.lost, 0), l.peer_value
FROM OPENJSON(@P1) WITH (
    n int '$.n', entity nvarchar(128) '$.entity', own nvarchar(max) '$.own',
    peer nvarchar(max) '$.peer', deleted bit '$.deleted', only_if_row bit '$.only_if_row', seq bigint '$.seq',
    peer_guard bigint '$.peer_guard', gone_there bit '$.gone_there', lost bit '$.lost',
    peer_value nvarchar(max) '$.peer_value' AS JSON
) AS l;
DECLARE @warnings TABLE (n int NOT NULL, kind char(1) NOT NULL, err_message nvarchar(4000) NULL,
                         dup nvarchar(max) NULL);
DECLARE @n int = -1, @entity nvarchar(128), @key nvarchar(max), @peer nvarchar(max),
        @deleted bit, @only_if_row bit, @found bit, @seq bigint, @peer_guard bigint, @peer_value nvarchar(max), @native nvarchar(max),
        @guard bigint, @dup nvarchar(max), @old_peer nvarchar(max),
        @err int, @msg nvarchar(4000);

DECLARE @settled TABLE (seq bigint NOT NULL PRIMARY KEY);
-- Records to drop once the settled changes left the outbox (n: the link's).
DECLARE @dups TABLE (i int IDENTITY PRIMARY KEY, n int NOT NULL,
                     entity nvarchar(128) COLLATE Latin1_General_100_BIN2 NOT NULL,
                     own nvarchar(max) COLLATE Latin1_General_100_BIN2 NOT NULL);
DECLARE @i int;
DECLARE @unpeered TABLE (n int IDENTITY PRIMARY KEY,
                         entity nvarchar(128) COLLATE Latin1_General_100_BIN2 NOT NULL,
                         own nvarchar(max) COLLATE Latin1_General_100_BIN2 NOT NULL);

BEGIN TRY
    BEGIN TRANSACTION;
    -- Only the replies of changes still in the outbox count: a change whose rows are gone was
    -- settled meanwhile by the write-back of an instance that took over while this one lost its
    -- lease (it claimed the change again, or a newer one of the record), and this reply is late
    -- and changes nothing (as settled_now does on PostgreSQL). The rows are locked by an update
    -- that changes nothing, so of two write-backs of one change the second waits, then finds
    -- it settled.
    UPDATE o SET attempts = o.attempts
    OUTPUT inserted.seq INTO @settled (seq)
    FROM {{schema}}.[outbox] AS o
    JOIN OPENJSON(@P2) WITH (seq bigint '$') AS d ON o.seq = d.seq;
    DELETE l FROM @links AS l WHERE NOT EXISTS (SELECT 1 FROM @settled AS s WHERE s.seq = l.seq);
    WHILE 1 = 1
    BEGIN
        SELECT TOP (1) @n = n, @entity = entity, @key = own, @peer = peer, @deleted = deleted,
               @only_if_row = only_if_row, @seq = seq, @peer_guard = peer_guard,
               @peer_value = peer_value
        FROM @links WHERE n > @n ORDER BY n;
        IF @@ROWCOUNT = 0 BREAK;
        SET @found = 1;
        IF @only_if_row = 1
        BEGIN
            -- A stale report of a creation or update older than a creation of its key still
            -- pending here, with no delete of the key pending between them, is of a record that
            -- left the key before (moved by the other side's change): the row there now is
            -- another record, whose link and peer id are its own (as born_again does on
            -- PostgreSQL; seed 111365 of the simulation's variant; a delete between them, or a
            -- stale delete, keeps the report: seed 635583 of the default workload).
            SET @native = NULL;
{{native_key_blocks}}
            IF NOT EXISTS (SELECT 1 FROM {{schema}}.[outbox] WHERE seq = @seq AND op = 'D')
               AND (SELECT TOP (1) op FROM {{schema}}.[outbox]
                    WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
                      AND [key] = @native AND seq > @seq AND op <> 'U'
                    ORDER BY seq) = 'I'
                CONTINUE;
            SET @found = 0;
{{exists_blocks}}
            -- The row is gone, but the report names the record the other side holds now: a
            -- live link of the record to a peer since replaced there names the new one, unless
            -- a link here holds it already (as repoint_link does on PostgreSQL).
            -- The peer it replaces keeps the link's guard as a tombstone with no record here,
            -- so a late copy of a change of the old peer's key is still recognised (seed 44713;
            -- as peer_tombstone does on PostgreSQL).
            IF @found = 0 AND @peer IS NOT NULL
            BEGIN
                SET @old_peer = NULL;
                SELECT @old_peer = {{peer}}, @guard = applied_seq FROM {{schema}}.[id_map]
                WHERE entity = @entity AND {{own}} = @key AND deleted = 0
                  AND {{peer}} IS NOT NULL AND {{peer}} <> @peer
                  AND NOT EXISTS (SELECT 1 FROM {{schema}}.[id_map] AS o
                                  WHERE o.entity = @entity AND o.{{peer}} = @peer);
                IF @old_peer IS NOT NULL
                BEGIN
                    UPDATE {{schema}}.[id_map] SET {{peer}} = @peer, updated_at = SYSDATETIMEOFFSET()
                    WHERE entity = @entity AND {{own}} = @key;
                    INSERT INTO {{schema}}.[id_map] (entity, {{own}}, {{peer}}, applied_seq, deleted)
                    VALUES (@entity, NULL, @old_peer, @guard, 1);
                END;
            END;
        END;
        -- A late reply of a creation or an update leaves the tombstone of a record gone here as
        -- it is: the record's delete came first, the other side's applied here or this side's
        -- written back (a second instance took over while the first still wrote its batch
        -- back; as gone_here does on PostgreSQL). The row is locked, so a delete applied here
        -- meanwhile has committed, or waits.
        IF @found = 1 AND @deleted = 0 AND @only_if_row = 0 AND EXISTS (
            SELECT 1 FROM {{schema}}.[id_map] WITH (UPDLOCK)
            WHERE entity = @entity AND {{own}} = @key AND deleted = 1)
        BEGIN
            SET @found = 0;
{{lock_blocks}}
        END;
        IF @found = 1
        BEGIN
            -- Another record here linked to the same peer loses its peer (and keeps its guard); a
            -- link of the peer with no record here holds the guard of the peer's changes and is
            -- merged into this link (as link_written_back does on PostgreSQL).
            SET @guard = 0;
            -- A delete's write-back leaves the peer to a live record here that holds it: the
            -- other side created the record again under that given key, and that creation
            -- has already reached this side (the tombstone is written without the peer).
            IF @deleted = 1 AND @peer IS NOT NULL AND EXISTS (
                SELECT 1 FROM {{schema}}.[id_map]
                WHERE entity = @entity AND {{peer}} = @peer AND {{own}} <> @key AND deleted = 0)
                SET @peer = NULL;
            IF @peer IS NOT NULL
            BEGIN
                SELECT @guard = ISNULL(MAX(applied_seq), 0) FROM {{schema}}.[id_map]
                WHERE entity = @entity AND {{peer}} = @peer AND {{own}} IS NULL;
                DELETE FROM {{schema}}.[id_map]
                WHERE entity = @entity AND {{peer}} = @peer AND {{own}} IS NULL;
                SET @dup = NULL;
                SELECT @dup = {{own}} FROM {{schema}}.[id_map]
                WHERE entity = @entity AND {{peer}} = @peer AND {{own}} <> @key AND deleted = 0;
                UPDATE {{schema}}.[id_map] SET {{peer}} = NULL, updated_at = SYSDATETIMEOFFSET()
                OUTPUT inserted.entity, inserted.{{own}} INTO @unpeered (entity, own)
                WHERE entity = @entity AND {{peer}} = @peer AND {{own}} <> @key;
                IF @dup IS NOT NULL
                BEGIN
                    SAVE TRANSACTION tandem_dup;
                    BEGIN TRY
{{drop_duplicate_blocks}}
                    END TRY
                    BEGIN CATCH
                        SELECT @err = ERROR_NUMBER(), @msg = ERROR_MESSAGE();
                        EXEC sys.sp_set_session_context N'tandem.applying', NULL;
                        IF XACT_STATE() <> 1 OR @err IN ({{transient_errors}})
                        BEGIN
                            ;THROW;
                        END;
                        ROLLBACK TRANSACTION tandem_dup;
                        INSERT INTO @warnings (n, kind, err_message, dup) VALUES (@n, 'D', @msg, @dup);
                    END CATCH;
                    -- Kept for its own change, settled here, which lost its conflict there:
                    -- dropped below, once that change left the outbox.
                    IF EXISTS (SELECT 1 FROM @links AS d
                               WHERE d.entity = @entity AND d.own = @dup AND d.lost = 1)
                        INSERT INTO @dups (n, entity, own) VALUES (@n, @entity, @dup);
                END;
                -- This record's link to another peer is retired, not overwritten: that peer was
                -- replaced at the other side, and its row keeps its guard as a tombstone.
                UPDATE {{schema}}.[id_map] SET {{own}} = NULL, deleted = 1, updated_at = SYSDATETIMEOFFSET()
                WHERE entity = @entity AND {{own}} = @key AND {{peer}} IS NOT NULL AND {{peer}} <> @peer;
            END;
            -- The peer's changes up to @peer_guard lost a conflict there: a copy of one still
            -- on its way here is stale.
            IF @peer_guard > @guard SET @guard = @peer_guard;
            UPDATE {{schema}}.[id_map] WITH (SERIALIZABLE)
            SET {{peer}} = COALESCE(@peer, {{peer}}), deleted = @deleted,
                applied_seq = CASE WHEN applied_seq > @guard THEN applied_seq ELSE @guard END,
                updated_at = SYSDATETIMEOFFSET()
            WHERE entity = @entity AND {{own}} = @key;
            IF @@ROWCOUNT = 0
                INSERT INTO {{schema}}.[id_map] (entity, {{own}}, {{peer}}, deleted, applied_seq)
                VALUES (@entity, @key, @peer, @deleted, @guard);
        END;
        IF @peer_value IS NOT NULL AND @deleted = 0
        BEGIN
            SAVE TRANSACTION tandem_peer;
            BEGIN TRY
{{peer_update_blocks}}
            END TRY
            BEGIN CATCH
                SELECT @err = ERROR_NUMBER(), @msg = ERROR_MESSAGE();
                EXEC sys.sp_set_session_context N'tandem.applying', NULL;
                IF XACT_STATE() <> 1 OR @err IN ({{transient_errors}})
                BEGIN
                    ;THROW;
                END;
                ROLLBACK TRANSACTION tandem_peer;
                INSERT INTO @warnings (n, kind, err_message) VALUES (@n, 'P', @msg);
            END CATCH;
        END;
        SET @native = NULL;
{{native_key_blocks}}
        DELETE FROM {{schema}}.[outbox]
        WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
          AND [key] = @native AND seq < @seq;
    END;
    DELETE o FROM {{schema}}.[outbox] AS o
    JOIN OPENJSON(@P2) WITH (seq bigint '$') AS d ON o.seq = d.seq;
    -- A record that lost its peer above, whose own change settled here lost its conflict
    -- there, goes now that the settled changes left the outbox: that change travels no more,
    -- and the winner there can no longer reach it (it lost at the other side to that side's
    -- delete of the record, whose delete then never reached it, folded with a new record's
    -- insert under the key: simulation's full workload without key changes at A, seed 42553;
    -- as on PostgreSQL). So does a copy of a record gone at the other side, though this side's
    -- change was not a delete (an update discarded after a delete there, or a stale report
    -- naming no record), which that delete never reaches (the other side deleted it applying
    -- this side's delete of another copy): its own pending changes keep it (simulation's full
    -- workload, seed 13709; as on PostgreSQL).
    INSERT INTO @dups (n, entity, own)
    SELECT n, entity, own FROM @links WHERE gone_there = 1 ORDER BY n;
    SET @i = 0;
    WHILE 1 = 1
    BEGIN
        SELECT TOP (1) @i = i, @n = n, @entity = entity, @dup = own FROM @dups
        WHERE i > @i ORDER BY i;
        IF @@ROWCOUNT = 0 BREAK;
        SAVE TRANSACTION tandem_dup;
        BEGIN TRY
{{drop_duplicate_blocks}}
        END TRY
        BEGIN CATCH
            SELECT @err = ERROR_NUMBER(), @msg = ERROR_MESSAGE();
            EXEC sys.sp_set_session_context N'tandem.applying', NULL;
            IF XACT_STATE() <> 1 OR @err IN ({{transient_errors}})
            BEGIN
                ;THROW;
            END;
            ROLLBACK TRANSACTION tandem_dup;
            INSERT INTO @warnings (n, kind, err_message, dup) VALUES (@n, 'D', @msg, @dup);
        END CATCH;
    END;
    -- A link that lost its peer to another record here, whose row is gone here and that has no
    -- change pending here, is a tombstone: a delete of it lost at the other side and left it
    -- live for the winner to come back, but the winner came back under another key (seed
    -- 38559; as retire_unpeered does on PostgreSQL). It keeps its guard.
    SET @n = 0;
    WHILE 1 = 1
    BEGIN
        SELECT TOP (1) @n = n, @entity = entity, @key = own FROM @unpeered WHERE n > @n ORDER BY n;
        IF @@ROWCOUNT = 0 BREAK;
        SET @found = 0;
{{exists_blocks}}
        SET @native = NULL;
{{native_key_blocks}}
        IF @found = 0 AND NOT EXISTS (SELECT 1 FROM {{schema}}.[outbox]
                                      WHERE entity = @entity AND key_prefix = LEFT(@native, 400)
                                        AND [key] = @native)
            UPDATE {{schema}}.[id_map] SET deleted = 1, updated_at = SYSDATETIMEOFFSET()
            WHERE entity = @entity AND {{own}} = @key AND {{peer}} IS NULL AND deleted = 0;
    END;
    UPDATE o
    SET attempts = o.attempts + 1,
        next_attempt_at = DATEADD(millisecond, f.delay_ms, SYSDATETIMEOFFSET()),
        last_error = f.error,
        first_failed_at = COALESCE(o.first_failed_at, SYSDATETIMEOFFSET()),
        last_failed_at = SYSDATETIMEOFFSET(),
        suspended = f.suspend
    FROM {{schema}}.[outbox] AS o
    JOIN (SELECT s.seq, x.delay_ms, x.error, x.suspend
          FROM OPENJSON(@P3) WITH (seqs nvarchar(max) '$.seqs' AS JSON, delay_ms int '$.delay_ms',
               error nvarchar(max) '$.error', suspend bit '$.suspend') AS x
          CROSS APPLY OPENJSON(x.seqs) WITH (seq bigint '$') AS s) AS f
      ON o.seq = f.seq;
    COMMIT TRANSACTION;
END TRY
BEGIN CATCH
    IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
    EXEC sys.sp_set_session_context N'tandem.applying', NULL;
    THROW;
END CATCH;
SELECT n, kind, err_message, dup FROM @warnings ORDER BY n;
