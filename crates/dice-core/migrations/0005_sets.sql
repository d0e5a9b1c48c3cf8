-- dice schema, version 5: no table changes. Log rows and snapshot chunks are now written in
-- blob format 5, whose entries may be set elements (see src/store.rs). Blobs of formats 1 to 4
-- are still read. The version is raised so that an older dice, which cannot decode a set
-- element, refuses the file with a message that says so instead of calling it damaged.
INSERT OR REPLACE INTO meta (name, value) VALUES ('blob_format', 5);
