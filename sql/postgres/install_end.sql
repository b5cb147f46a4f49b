-- The form of these objects (tandem's INSTALL_FORMAT), for `tandem run` and `tandem check`
-- to tell them from objects an older tandem installed, which lack some this one uses.
COMMENT ON TABLE {{schema}}.outbox IS 'tandem objects, format {{install_format}}';
COMMIT;
