-- Capture trigger of one table, with a block per entity that reads it.
-- Trigger names are per schema in SQL Server, so each table's is tandem_capture_<table>.
-- (EXEC takes a variable: SQL Server allows only literals and variables inside EXEC (...).)
-- Several entities on one table (one legacy table split in two): each block writes that
-- entity's own outbox rows, from its own key and columns. Tandem's write for one entity (the
-- session context tandem.entity names it) is skipped for that entity only: the others that
-- read the table capture it when their columns changed, so what tandem wrote for entity X
-- reaches entity Y's other side too (it cannot echo back as X).

-- name: trigger
-- Capture trigger on {{table}} for {{entities_comment}}.
IF EXISTS (SELECT 1 FROM sys.triggers WHERE parent_id = OBJECT_ID({{table_lit}}) AND name = {{trigger_name_lit}})
BEGIN
    DECLARE @drop nvarchar(max) = N'DROP TRIGGER ' + QUOTENAME(OBJECT_SCHEMA_NAME(OBJECT_ID({{table_lit}}))) + N'.' + QUOTENAME({{trigger_name_lit}});
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
CREATE TRIGGER {{trigger}} ON {{table}}
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
{{entities}}
END;
GO
-- The mark `tandem uninstall` and `tandem check` find the trigger by: a property of the
-- table named after this installation's schema, whose value is the trigger's name. (On the
-- table rather than on the trigger: both work on SQL Server, only this one on Babelfish.)
DECLARE @s sysname = OBJECT_SCHEMA_NAME(OBJECT_ID({{table_lit}})),
        @t sysname = OBJECT_NAME(OBJECT_ID({{table_lit}}));
IF EXISTS (SELECT 1 FROM sys.extended_properties
           WHERE class = 1 AND major_id = OBJECT_ID({{table_lit}}) AND minor_id = 0 AND name = {{mark_lit}})
    EXEC sys.sp_updateextendedproperty @name = {{mark_lit}}, @value = {{trigger_name_lit}},
        @level0type = N'SCHEMA', @level0name = @s, @level1type = N'TABLE', @level1name = @t;
ELSE
    EXEC sys.sp_addextendedproperty @name = {{mark_lit}}, @value = {{trigger_name_lit}},
        @level0type = N'SCHEMA', @level0name = @s, @level1type = N'TABLE', @level1name = @t;
GO

-- name: entity
    -- Entity {{entity_comment}}: skipped when tandem writes for it (only at nesting level 1:
    -- what other triggers and ON DELETE CASCADE do while tandem applies a change is captured).
    -- (ISNULL: outside tandem's writes the context is NULL, and NOT (NULL = x) is not true.)
    IF NOT (TRIGGER_NESTLEVEL() = 1
            AND ISNULL(CONVERT(nvarchar(600), SESSION_CONTEXT(N'tandem.applying')), N'') = {{table_ctx_lit}}{{others_write}})
    BEGIN
        DELETE FROM @c;
        WITH n AS (
            SELECT {{i_key_cols}},
                   CONVERT(nvarchar(max), (SELECT {{i_key_json}} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS k,
                   CONVERT(nvarchar(max), (SELECT {{i_image_cols}} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS img
            FROM inserted AS i
        ), o AS (
            SELECT {{d_key_cols}},
                   CONVERT(nvarchar(max), (SELECT {{d_key_json}} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS k,
                   CONVERT(nvarchar(max), (SELECT {{d_image_cols}} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS img
            FROM deleted AS d
        )
        INSERT INTO @c (ord, op, k, img)
        SELECT v.ord, v.op, v.k, v.img
        FROM n FULL OUTER JOIN o ON {{n_o_join}} AND n.k = o.k
        CROSS APPLY (VALUES (0, 'D', o.k, o.img), (1, 'U', n.k, n.img), (2, 'I', n.k, n.img)) AS v (ord, op, k, img)
        WHERE (v.ord = 0 AND n.k IS NULL)
           OR (v.ord = 1 AND n.k IS NOT NULL AND o.k IS NOT NULL AND n.img <> o.img)
           OR (v.ord = 2 AND o.k IS NULL);
        -- Deletes first, so a key change is a delete followed by an insert in sequence order.
        INSERT INTO {{schema}}.[outbox] (entity, op, [key], key_prefix, image, derived)
        SELECT {{entity_lit}}, c.op, c.k, LEFT(c.k, 400), c.img, @derived
        FROM @c AS c
        ORDER BY c.ord;
    END;
