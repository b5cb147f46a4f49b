-- What `tandem init` reads of a SQL Server database: every user table (tandem's own schema,
-- @P1, left out) with its columns, keys, foreign keys and CHECK constraints, from the sys
-- catalog views (SQL Server 2016+). Read only. Rows come back named and are read by name.

-- name: catalog_columns
-- Alias types are read as their system type. The last column says whether the database
-- compares names case-insensitively (its collation).
SELECT s.name AS schema_name,
       t.name AS table_name,
       c.name AS column_name,
       TYPE_NAME(c.system_type_id) AS type_name,
       CONVERT(int, c.max_length) AS max_length,
       CONVERT(int, c.precision) AS num_precision,
       CONVERT(int, c.scale) AS num_scale,
       c.is_nullable AS is_nullable,
       c.is_identity AS is_identity,
       c.is_computed AS is_computed,
       dc.definition AS default_expr,
       CONVERT(bit, CASE WHEN CONVERT(nvarchar(128), DATABASEPROPERTYEX(DB_NAME(), 'Collation')) LIKE N'%[_]CI[_]%' THEN 1 ELSE 0 END) AS case_insensitive
FROM sys.tables AS t
JOIN sys.schemas AS s ON s.schema_id = t.schema_id
JOIN sys.columns AS c ON c.object_id = t.object_id
LEFT JOIN sys.default_constraints AS dc ON dc.object_id = c.default_object_id
WHERE t.is_ms_shipped = 0 AND s.name <> @P1
ORDER BY s.name, t.name, c.column_id;

-- name: catalog_keys
-- Primary keys and unique indexes or constraints without a filter, columns in key order.
SELECT s.name AS schema_name,
       t.name AS table_name,
       CONVERT(int, i.index_id) AS index_id,
       i.is_primary_key AS is_primary,
       c.name AS column_name
FROM sys.indexes AS i
JOIN sys.tables AS t ON t.object_id = i.object_id
JOIN sys.schemas AS s ON s.schema_id = t.schema_id
JOIN sys.index_columns AS ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id
JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
WHERE t.is_ms_shipped = 0 AND s.name <> @P1 AND i.is_unique = 1 AND i.has_filter = 0
  AND ic.is_included_column = 0
ORDER BY s.name, t.name, i.is_primary_key DESC, i.index_id, ic.key_ordinal;

-- name: catalog_foreign_keys
-- One row per column of each foreign key, in the key's order.
SELECT s.name AS schema_name,
       t.name AS table_name,
       fk.name AS constraint_name,
       c.name AS column_name,
       ps.name AS parent_schema,
       pt.name AS parent_table,
       pc.name AS parent_column
FROM sys.foreign_keys AS fk
JOIN sys.foreign_key_columns AS fkc ON fkc.constraint_object_id = fk.object_id
JOIN sys.tables AS t ON t.object_id = fk.parent_object_id
JOIN sys.schemas AS s ON s.schema_id = t.schema_id
JOIN sys.columns AS c ON c.object_id = fkc.parent_object_id AND c.column_id = fkc.parent_column_id
JOIN sys.tables AS pt ON pt.object_id = fk.referenced_object_id
JOIN sys.schemas AS ps ON ps.schema_id = pt.schema_id
JOIN sys.columns AS pc ON pc.object_id = fkc.referenced_object_id AND pc.column_id = fkc.referenced_column_id
WHERE t.is_ms_shipped = 0 AND s.name <> @P1
ORDER BY s.name, t.name, fk.name, fkc.constraint_column_id;

-- name: catalog_checks
-- CHECK constraints as the server keeps them (`([Status]='C' OR [Status]='O')`); tandem reads
-- code lists out of them and ignores the rest.
SELECT s.name AS schema_name,
       t.name AS table_name,
       cc.name AS constraint_name,
       cc.definition AS definition
FROM sys.check_constraints AS cc
JOIN sys.tables AS t ON t.object_id = cc.parent_object_id
JOIN sys.schemas AS s ON s.schema_id = t.schema_id
WHERE t.is_ms_shipped = 0 AND s.name <> @P1
ORDER BY s.name, t.name, cc.name;
