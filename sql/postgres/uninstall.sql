-- Tandem: remove everything `tandem install` created in this database, and nothing else.
BEGIN;
-- Every trigger that calls a function of tandem's schema (the tandem_capture trigger of each
-- table: older installs call capture(), newer ones a generated capture_<table>() each), on any
-- table; then the generated functions, also those whose table has gone.
DO $do$
DECLARE t record;
BEGIN
    FOR t IN SELECT tg.tgname, tg.tgrelid::regclass AS tbl
             FROM pg_trigger tg
             JOIN pg_proc p ON p.oid = tg.tgfoid
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = {{schema_name_lit}} AND NOT tg.tgisinternal LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, t.tbl);
    END LOOP;
    FOR t IN SELECT p.oid::regprocedure AS fn
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = {{schema_name_lit}} AND p.proname LIKE 'capture\_%'
               AND p.prorettype = 'trigger'::regtype LOOP
        EXECUTE format('DROP FUNCTION %s', t.fn);
    END LOOP;
END
$do$;
DROP FUNCTION IF EXISTS {{schema}}.capture();
DROP FUNCTION IF EXISTS {{schema}}.pending(integer);
DROP FUNCTION IF EXISTS {{schema}}.claim_batch(integer, bigint, text[]);
DROP FUNCTION IF EXISTS {{schema}}.pending(integer, text[]);
DROP FUNCTION IF EXISTS {{schema}}.claim_batch(integer, bigint, text[], text[]);
DROP TABLE IF EXISTS {{schema}}.outbox;
DROP TABLE IF EXISTS {{schema}}.id_map;
DROP TABLE IF EXISTS {{schema}}.conflicts;
DROP TABLE IF EXISTS {{schema}}.backfill;
DROP TABLE IF EXISTS {{schema}}.fingerprint;
DROP TABLE IF EXISTS {{schema}}.sent_mark;
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
