-- Tandem: remove everything `tandem install` created in this database, and nothing else.
BEGIN;
-- Every tandem_capture trigger that calls tandem's capture function, on any table.
DO $do$
DECLARE t record;
BEGIN
    IF to_regprocedure({{schema_ident_lit}} || '.capture()') IS NULL THEN
        RETURN;
    END IF;
    FOR t IN SELECT tgname, tgrelid::regclass AS tbl FROM pg_trigger
             WHERE tgfoid = to_regprocedure({{schema_ident_lit}} || '.capture()') LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, t.tbl);
    END LOOP;
END
$do$;
DROP FUNCTION IF EXISTS {{schema}}.capture();
DROP FUNCTION IF EXISTS {{schema}}.pending(integer);
DROP FUNCTION IF EXISTS {{schema}}.claim_batch(integer, bigint, text[]);
DROP TABLE IF EXISTS {{schema}}.outbox;
DROP TABLE IF EXISTS {{schema}}.id_map;
DROP TABLE IF EXISTS {{schema}}.conflicts;
DROP TABLE IF EXISTS {{schema}}.backfill;
-- The schema goes only if tandem created it and nothing else lives in it.
DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = {{schema_name_lit}}
               AND obj_description(n.oid, 'pg_namespace') LIKE 'tandem:%')
       AND NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE n.nspname = {{schema_name_lit}})
       AND NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                       WHERE n.nspname = {{schema_name_lit}}) THEN
        EXECUTE format('DROP SCHEMA %I', {{schema_name_lit}});
    END IF;
END
$do$;
COMMIT;
