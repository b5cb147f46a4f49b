-- Capture trigger for entity {{entity_comment}} on {{table}}.
DROP TRIGGER IF EXISTS tandem_capture ON {{table}};
CREATE TRIGGER tandem_capture AFTER INSERT OR UPDATE OR DELETE ON {{table}}
    FOR EACH ROW EXECUTE FUNCTION {{schema}}.capture({{trigger_args}});
