-- dice schema, version 6: no table changes. Log rows and snapshot chunks are now written in
-- blob format 6, whose entries may be hash fields' counter elements (see src/store.rs).
-- Blobs of formats 1 to 5 are still read. The version is raised so that an older dice, which
-- cannot decode a field counter element, refuses the file with a message that says so
-- instead of calling it damaged.
INSERT OR REPLACE INTO meta (name, value) VALUES ('blob_format', 6);
