-- The form of these objects (tandem's INSTALL_FORMAT), for `tandem run` and `tandem check`
-- to tell them from objects an older tandem installed, which lack some this one uses.
IF EXISTS (SELECT 1 FROM sys.extended_properties
           WHERE class = 1 AND major_id = OBJECT_ID({{outbox_lit}}) AND minor_id = 0
             AND name = N'tandem_format')
    EXEC sys.sp_updateextendedproperty @name = N'tandem_format', @value = N'{{install_format}}',
        @level0type = N'SCHEMA', @level0name = {{schema_lit}}, @level1type = N'TABLE', @level1name = N'outbox';
ELSE
    EXEC sys.sp_addextendedproperty @name = N'tandem_format', @value = N'{{install_format}}',
        @level0type = N'SCHEMA', @level0name = {{schema_lit}}, @level1type = N'TABLE', @level1name = N'outbox';
GO
COMMIT TRANSACTION;
SET XACT_ABORT OFF;
GO
