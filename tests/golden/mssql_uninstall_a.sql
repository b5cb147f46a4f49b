-- Tandem: remove everything `tandem install` created in this database, and nothing else.
SET ANSI_NULLS ON;
SET QUOTED_IDENTIFIER ON;
SET XACT_ABORT ON;
BEGIN TRANSACTION;
GO
-- Every capture trigger marked as this installation's (a table property named N'tandem:tandem'
-- whose value is the trigger's name), and the marks themselves.
DECLARE @drop nvarchar(max) = N'';
SELECT @drop = @drop
    + CASE WHEN t.object_id IS NOT NULL
           THEN N'DROP TRIGGER ' + QUOTENAME(OBJECT_SCHEMA_NAME(p.major_id)) + N'.' + QUOTENAME(t.name) + N'; '
           ELSE N'' END
    + N'EXEC sys.sp_dropextendedproperty @name = N' + QUOTENAME(p.name, N'''')
    + N', @level0type = N''SCHEMA'', @level0name = N' + QUOTENAME(OBJECT_SCHEMA_NAME(p.major_id), N'''')
    + N', @level1type = N''TABLE'', @level1name = N' + QUOTENAME(OBJECT_NAME(p.major_id), N'''') + N'; '
FROM sys.extended_properties AS p
LEFT JOIN sys.triggers AS t
  ON t.parent_id = p.major_id AND t.name = CONVERT(sysname, p.value)
WHERE p.class = 1 AND p.minor_id = 0 AND p.name = N'tandem:tandem';
EXEC (@drop);
GO
DROP TABLE IF EXISTS [tandem].[outbox];
DROP TABLE IF EXISTS [tandem].[id_map];
DROP TABLE IF EXISTS [tandem].[conflicts];
DROP TABLE IF EXISTS [tandem].[backfill];
DROP TABLE IF EXISTS [tandem].[backfill_key];
DROP TABLE IF EXISTS [tandem].[fingerprint];
DROP TABLE IF EXISTS [tandem].[sent_mark];
GO
-- The schema goes only if tandem created it and nothing else lives in it.
IF SCHEMA_ID(N'tandem') IS NOT NULL
   AND EXISTS (SELECT 1 FROM sys.extended_properties
               WHERE class = 3 AND major_id = SCHEMA_ID(N'tandem') AND name = N'tandem'
                 AND CONVERT(nvarchar(200), value) LIKE N'tandem:%')
   AND NOT EXISTS (SELECT 1 FROM sys.objects WHERE schema_id = SCHEMA_ID(N'tandem'))
   AND NOT EXISTS (SELECT 1 FROM sys.types WHERE schema_id = SCHEMA_ID(N'tandem'))
    EXEC (N'DROP SCHEMA ' + N'[tandem]');
GO
COMMIT TRANSACTION;
SET XACT_ABORT OFF;
GO
