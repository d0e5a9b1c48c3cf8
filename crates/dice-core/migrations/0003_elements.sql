-- dice schema, version 3: no table changes. Log rows and snapshot chunks are now written in
-- blob format 3, whose entries name the element of their key they hold (a key's string, a
-- counter's contribution or reset; see src/store.rs). Blobs of formats 1 and 2 (every entry
-- a key's string) are still read. The version is raised so that an older dice, which cannot
-- read format 3, refuses the file with a message that says so instead of calling it damaged.
INSERT OR REPLACE INTO meta (name, value) VALUES ('blob_format', 3);
