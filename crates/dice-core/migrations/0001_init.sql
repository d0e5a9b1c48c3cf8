-- dice schema, version 1.
-- Integers are u64 values that never use the top bit (ids, HLC timestamps, seqs, expiries).

-- Scalar facts about this replica: 'node_id', 'hlc' (the clock's high-water mark).
CREATE TABLE meta (
    name  TEXT    PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- Per origin: the version vector component and the GC floor.
CREATE TABLE origins (
    origin INTEGER PRIMARY KEY NOT NULL,
    seq    INTEGER NOT NULL DEFAULT 0,
    floor  INTEGER NOT NULL DEFAULT 0
);

-- The current entry of every key; value NULL is a tombstone.
CREATE TABLE entries (
    key        BLOB    PRIMARY KEY NOT NULL,
    value      BLOB,
    hlc        INTEGER NOT NULL,
    origin     INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    expires_at INTEGER
) WITHOUT ROWID;
