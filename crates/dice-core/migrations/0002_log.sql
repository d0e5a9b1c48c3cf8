-- dice schema, version 2: the map is kept as a snapshot plus a log of group commits, both as
-- versioned postcard blobs (see src/store.rs). A group commit appends one row; nothing is
-- rewritten in place, so a commit writes about the bytes it carries. Version 1's `entries`
-- table is read once as the base under both, and emptied by the first snapshot.

-- One row per group commit: the keys it set (whole entries) or dropped, and the version
-- vector, GC floors and clock after it. Replayed in id order, after the snapshot.
CREATE TABLE log (
    id    INTEGER PRIMARY KEY,
    batch BLOB    NOT NULL
);

-- Snapshots, written a chunk at a time while commits go on. Only the chunks of generation
-- meta.snapshot_gen count, and log replay then starts after id meta.log_start.
CREATE TABLE snapshot (
    id    INTEGER PRIMARY KEY,
    gen   INTEGER NOT NULL,
    chunk BLOB    NOT NULL
);
