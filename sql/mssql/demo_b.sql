-- Demo and test schema for side B on SQL Server: the new system (the same tables as
-- sql/demo/b_new.sql, in T-SQL). row_ver lets the tests see whether a row was rewritten.
CREATE TABLE dbo.orders (
    id         bigint IDENTITY(1, 1) NOT NULL PRIMARY KEY,
    customer   nvarchar(max)  NOT NULL,
    status     nvarchar(20)   NOT NULL,
    amount     decimal(12,2)  NULL,
    legacy_no  int            NULL,      -- filled by tandem with the ORDER_NO in A
    created_at datetimeoffset NOT NULL DEFAULT SYSDATETIMEOFFSET(),
    row_ver    rowversion                -- not synchronised
);
GO
CREATE TABLE dbo.order_items (
    id       bigint IDENTITY(1, 1) NOT NULL PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES dbo.orders (id) ON DELETE CASCADE,
    line_no  int    NOT NULL,
    quantity int    NOT NULL,
    UNIQUE (order_id, line_no)
);
GO
