-- Tandem: remove everything `tandem install` created in this database, and nothing else.
SET ANSI_NULLS ON;
SET QUOTED_IDENTIFIER ON;
SET XACT_ABORT ON;
BEGIN TRANSACTION;
GO
-- Every capture trigger marked as this installation's (extended property tandem = schema).
DECLARE @drop nvarchar(max) = N'';
SELECT @drop = @drop + N'DROP TRIGGER ' + QUOTENAME(OBJECT_SCHEMA_NAME(t.object_id)) + N'.' + QUOTENAME(t.name) + N'; '
FROM sys.triggers AS t
JOIN sys.extended_properties AS p
  ON p.class = 1 AND p.major_id = t.object_id AND p.minor_id = 0 AND p.name = N'tandem'
WHERE CONVERT(nvarchar(128), p.value) = {{schema_lit}};
EXEC (@drop);
GO
DROP TABLE IF EXISTS {{schema}}.[outbox];
DROP TABLE IF EXISTS {{schema}}.[id_map];
DROP TABLE IF EXISTS {{schema}}.[conflicts];
GO
-- The schema goes only if tandem created it and nothing else lives in it.
IF SCHEMA_ID({{schema_lit}}) IS NOT NULL
   AND EXISTS (SELECT 1 FROM sys.extended_properties
               WHERE class = 3 AND major_id = SCHEMA_ID({{schema_lit}}) AND name = N'tandem'
                 AND CONVERT(nvarchar(200), value) LIKE N'tandem:%')
   AND NOT EXISTS (SELECT 1 FROM sys.objects WHERE schema_id = SCHEMA_ID({{schema_lit}}))
   AND NOT EXISTS (SELECT 1 FROM sys.types WHERE schema_id = SCHEMA_ID({{schema_lit}}))
    EXEC (N'DROP SCHEMA ' + {{schema_ident_lit}});
GO
COMMIT TRANSACTION;
SET XACT_ABORT OFF;
GO
