-- Capture on one table: a function of its own, with each entity that reads the table and its
-- key columns written in (so a change costs one image and one insert per entity), and its
-- trigger. Same behaviour as the generic capture() in install.sql, which older installs'
-- triggers call: tandem's own writes to this table are skipped at trigger depth 1, and what
-- they cause (a cascade into another table, other triggers' writes) is captured marked
-- `derived`, so it never wins a conflict against a user's change; an update is captured
-- when the row's bytes changed (1.0 → 1.00 is a change; setting a row to what it was is not),
-- without building the old image (capture() compares the JSON texts instead, so where bytes
-- differ but the JSON does not — a json value respaced, a float -0 → 0, an array's lower
-- bound — this one captures an update carrying the same image); a key change (the key values
-- compared as JSON) travels as delete + insert; deletes carry the row as it was; no NOTIFY.
--
-- Several entities on one table (one legacy table split in two): one block per entity, each
-- writing its own outbox row, and an update counts for an entity only when its key or mapped
-- columns changed. Tandem's write for one entity (tandem.entity names it) is skipped for that
-- entity only: the others that read the table capture it (derived), so what tandem wrote for
-- entity X reaches entity Y's other side too (it cannot echo back as X).

-- name: function
CREATE OR REPLACE FUNCTION {{function}}() RETURNS trigger
LANGUAGE plpgsql AS {{q}}
DECLARE
    new_key jsonb;
    old_key jsonb;
    applying text := current_setting('tandem.applying', true);
    derived boolean;
BEGIN
    derived := COALESCE(applying, '') <> '';
{{entities}}
    RETURN NULL;
END
{{q}};
COMMENT ON FUNCTION {{function}}() IS {{function_comment}};
DROP TRIGGER IF EXISTS tandem_capture ON {{table}};
CREATE TRIGGER tandem_capture AFTER INSERT OR UPDATE OR DELETE ON {{table}}
    FOR EACH ROW EXECUTE FUNCTION {{function}}();

-- name: entity
    -- Entity {{entity_comment}}.
    IF pg_trigger_depth() = 1
       AND applying IN ('on', TG_RELID::text){{others_write}} THEN
        -- Tandem's own write for this entity: not a change.
        NULL;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO {{schema}}.outbox (entity, op, key, image, derived)
        VALUES ({{entity}}, 'I', jsonb_build_array({{new_key}}), to_jsonb(NEW), derived);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {{schema}}.outbox (entity, op, key, image, derived)
        VALUES ({{entity}}, 'D', jsonb_build_array({{old_key}}), to_jsonb(OLD), derived);
    ELSIF {{unchanged}} THEN
        -- Not a byte (of what this entity reads) changed: not a change.
        NULL;
    ELSE
        new_key := jsonb_build_array({{new_key}});
        old_key := jsonb_build_array({{old_key}});
        IF new_key IS DISTINCT FROM old_key THEN
            -- A key change travels as delete + insert.
            INSERT INTO {{schema}}.outbox (entity, op, key, image, derived)
            VALUES ({{entity}}, 'D', old_key, to_jsonb(OLD), derived), ({{entity}}, 'I', new_key, to_jsonb(NEW), derived);
        ELSE
            INSERT INTO {{schema}}.outbox (entity, op, key, image, derived)
            VALUES ({{entity}}, 'U', new_key, to_jsonb(NEW), derived);
        END IF;
    END IF;
