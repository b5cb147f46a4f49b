-- What `tandem init` reads of a PostgreSQL database: every user table (partitions and the
-- system schemas left out, and tandem's own schema, $1), with its columns, keys, foreign keys
-- and CHECK constraints. Read only; nothing here writes. Rows come back named, in catalog
-- order, and are read by column name.

-- name: catalog_columns
SELECT n.nspname::text AS schema_name,
       c.relname::text AS table_name,
       a.attname::text AS column_name,
       format_type(a.atttypid, a.atttypmod) AS type_name,
       a.attnotnull AS not_null,
       (a.attidentity <> '') AS is_identity,
       (a.attgenerated <> '') AS is_generated,
       pg_get_expr(d.adbin, d.adrelid) AS default_expr,
       (SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
          FROM pg_enum e WHERE e.enumtypid = a.atttypid) AS enum_labels
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
  AND n.nspname <> $1
ORDER BY n.nspname, c.relname, a.attnum;

-- name: catalog_keys
-- Primary keys and unique indexes without a predicate or an expression, columns in index order.
SELECT n.nspname::text AS schema_name,
       c.relname::text AS table_name,
       i.indisprimary AS is_primary,
       ARRAY(SELECT a.attname::text
               FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              ORDER BY k.ord) AS column_names
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
  AND c.relkind IN ('r', 'p') AND n.nspname <> $1
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
ORDER BY n.nspname, c.relname, i.indisprimary DESC, i.indexrelid;

-- name: catalog_foreign_keys
SELECT n.nspname::text AS schema_name,
       c.relname::text AS table_name,
       con.conname::text AS constraint_name,
       ARRAY(SELECT a.attname::text
               FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
              ORDER BY k.ord) AS column_names,
       pn.nspname::text AS parent_schema,
       pc.relname::text AS parent_table,
       ARRAY(SELECT a.attname::text
               FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
              ORDER BY k.ord) AS parent_columns
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class pc ON pc.oid = con.confrelid
JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE con.contype = 'f' AND n.nspname <> $1
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
ORDER BY n.nspname, c.relname, con.conname;

-- name: catalog_checks
-- CHECK constraints as PostgreSQL prints them; tandem reads code lists out of them
-- (`status = ANY (ARRAY['O', 'C'])`) and ignores the rest.
SELECT n.nspname::text AS schema_name,
       c.relname::text AS table_name,
       con.conname::text AS constraint_name,
       pg_get_constraintdef(con.oid) AS definition
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.contype = 'c' AND n.nspname <> $1
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
ORDER BY n.nspname, c.relname, con.conname;
