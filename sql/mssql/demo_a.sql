-- Demo and test schema for side A on SQL Server: the legacy system (the same tables as
-- sql/demo/a_legacy.sql, in T-SQL). ROW_VER lets the tests see whether a row was rewritten.
IF SCHEMA_ID(N'dbo') IS NULL EXEC (N'CREATE SCHEMA dbo');
GO
CREATE TABLE dbo.ORDERS (
    ORDER_NO  int IDENTITY(1000, 1) NOT NULL PRIMARY KEY,
    CUST_NAME varchar(60)   NOT NULL,
    STATUS    char(1)       NOT NULL DEFAULT 'O',
    AMOUNT    decimal(12,2) NULL,
    REMARK    nvarchar(max) NULL,      -- not synchronised
    NEW_ID    bigint        NULL,      -- filled by tandem with the id in B
    ROW_VER   rowversion               -- not synchronised
);
GO
CREATE TABLE dbo.ORDER_ITEMS (
    ORDER_NO int NOT NULL REFERENCES dbo.ORDERS (ORDER_NO) ON DELETE CASCADE,
    LINE_NO  int NOT NULL,
    QTY      int NOT NULL,
    PRIMARY KEY (ORDER_NO, LINE_NO)
);
GO
