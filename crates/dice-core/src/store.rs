//! SQLite persistence through sqlx: the data directory, its lock, the schema, loading and
//! group commits. Only the cache's writer task touches a `Store`.

use crate::entry::{Elem, Entry, Limits, NodeId, Version};
use crate::error::SqlContext;
use crate::hlc::Hlc;
use crate::replica::Replica;
use crate::version_vector::VersionVector;
use crate::{Error, Result};
use bytes::Bytes;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteLockingMode, SqliteSynchronous};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row, SqlSafeStr, SqliteConnection};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The database file inside a data directory.
pub const DB_FILE: &str = "dice.sqlite3";
/// The lock file inside a data directory.
pub const LOCK_FILE: &str = "LOCK";
/// SQLite `application_id` of a dice database ("DICE").
pub const APPLICATION_ID: i64 = 0x4449_4345;
/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = 6;

/// How durable an acknowledged write is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Survives a crash of the process (SQLite `synchronous=NORMAL` in WAL mode). Default.
    #[default]
    Normal,
    /// Also survives power loss (`synchronous=FULL`: fsync at every group commit).
    Fsync,
}

fn migrator() -> Migrator {
    let migration = |version, name: &str, sql: &'static str| {
        Migration::new(
            version,
            name.to_owned().into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(vec![
        migration(1, "init", include_str!("../migrations/0001_init.sql")),
        migration(2, "log", include_str!("../migrations/0002_log.sql")),
        migration(
            3,
            "elements",
            include_str!("../migrations/0003_elements.sql"),
        ),
        migration(4, "hashes", include_str!("../migrations/0004_hashes.sql")),
        migration(5, "sets", include_str!("../migrations/0005_sets.sql")),
        migration(
            6,
            "hash_counters",
            include_str!("../migrations/0006_hash_counters.sql"),
        ),
    ])
}

/// Format byte in front of every log and snapshot blob written: the postcard body follows an
/// xxh3-64 checksum of it (8 bytes, little-endian), verified on open. In format 3 every entry
/// (and every removal) names the element of its key ([`Elem`]); format 4 adds hash fields
/// ([`Elem::Field`]), whose variant format 3 cannot hold; format 5 adds set elements
/// ([`Elem::Member`], [`Elem::SetRemove`]), which format 4 cannot hold; format 6 adds hash
/// fields' counter elements ([`Elem::FieldCount`], [`Elem::FieldReset`]).
const BLOB_FORMAT: u8 = 6;
/// Format 5: as format 6 without field counters. Still read (its body decodes as format 6's).
const BLOB_FORMAT_SETS: u8 = 5;
/// Format 4: as format 5 without set elements. Still read (its body decodes as format 6's).
const BLOB_FORMAT_HASHES: u8 = 4;
/// Format 3: as format 4 without hash fields. Still read (its body decodes as format 6's).
const BLOB_FORMAT_ELEMS: u8 = 3;
/// Format 2: checksummed like format 3; its entries are all keys' strings ([`Elem::Key`]).
/// Still read: a data directory of an older dice upgrades as it is opened.
const BLOB_FORMAT_KEYS: u8 = 2;
/// The format of blobs written before checksums: the postcard body right after the byte.
/// Still read, unverified.
const BLOB_FORMAT_UNCHECKED: u8 = 1;
/// Length of the checksum after the format byte of a [`BLOB_FORMAT`] blob.
const CHECKSUM_LEN: usize = 8;

/// What to do about a damaged row, said in every error about one.
const CORRUPT_REMEDY: &str = "the database was changed outside dice (disk or file-system \
    damage, or an edit); dice leaves it as is. To recover, stop the node, move its data \
    directory aside and start it again with an empty one: it resyncs the data from its peers \
    (writes it made that no peer received are lost)";

/// Encodes `value` as a blob: format byte, checksum, postcard body.
fn encode_blob<T: Serialize + ?Sized>(value: &T) -> postcard::Result<Vec<u8>> {
    let mut blob = postcard::to_extend(value, vec![BLOB_FORMAT; 1 + CHECKSUM_LEN])?;
    let sum = xxhash_rust::xxh3::xxh3_64(&blob[1 + CHECKSUM_LEN..]);
    blob[1..1 + CHECKSUM_LEN].copy_from_slice(&sum.to_le_bytes());
    Ok(blob)
}

/// What a data directory held when opened.
pub(crate) struct Loaded {
    pub node_id: NodeId,
    pub replica: Replica,
}

/// One group commit: the keys set (with their whole entry), the keys dropped, and the
/// replica's bookkeeping after it.
#[derive(Default)]
pub(crate) struct CommitBatch {
    pub removals: Vec<(Bytes, Elem)>,
    pub upserts: Vec<Entry>,
    pub vv: VersionVector,
    pub floors: VersionVector,
    pub hlc: Hlc,
    /// Entries the map holds with this group applied.
    pub entry_count: u64,
}

/// A log row, as written.
#[derive(Serialize)]
struct LogRecordOut<'a> {
    hlc: u64,
    entries: u64,
    vv: &'a VersionVector,
    floors: &'a VersionVector,
    removed: &'a [RemovedOut<'a>],
    set: &'a [Entry],
}

/// A dropped element, as written in a log row.
#[derive(Serialize)]
struct RemovedOut<'a> {
    key: &'a serde_bytes::Bytes,
    elem: Elem,
}

/// A dropped element, as read back.
#[derive(Deserialize)]
struct RemovedRef<'a> {
    #[serde(borrow)]
    key: &'a serde_bytes::Bytes,
    elem: Elem,
}

const INSERT_LOG_ROW: &str = "INSERT INTO log (id, batch) VALUES (?1, ?2)";

/// Largest log row or snapshot chunk, roughly: SQLite refuses blobs over 1 GB, and a row is
/// built in memory whole.
pub(crate) const MAX_BLOB_BYTES: usize = 8 << 20;

/// Splits `entries` into runs of at most about `max_bytes` each (a run holds at least one entry).
fn split_by_bytes(entries: &[Entry], max_bytes: usize) -> Vec<&[Entry]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, e) in entries.iter().enumerate() {
        let size = e.wire_size();
        if i > start && bytes + size > max_bytes {
            out.push(&entries[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < entries.len() {
        out.push(&entries[start..]);
    }
    out
}

/// A log row of format 3, as read back, borrowing from the row's bytes.
#[derive(Deserialize)]
struct LogRecord<'a> {
    hlc: u64,
    #[allow(dead_code)]
    entries: u64,
    vv: VersionVector,
    floors: VersionVector,
    #[serde(borrow)]
    removed: Vec<RemovedRef<'a>>,
    #[serde(borrow)]
    set: Vec<EntryRef<'a>>,
}

/// A log row of formats 1 and 2 (keys only), as read back.
#[derive(Deserialize)]
struct LogRecordKeys<'a> {
    hlc: u64,
    /// Entries the map held after this commit: a load sizes the map from the newest row
    /// (read through [`LogHead`]).
    #[allow(dead_code)]
    entries: u64,
    vv: VersionVector,
    floors: VersionVector,
    #[serde(borrow)]
    removed: Vec<&'a serde_bytes::Bytes>,
    #[serde(borrow)]
    set: Vec<KeyEntryRef<'a>>,
}

/// An [`Entry`] as read back, borrowing its key and value from the blob (same encoding): a
/// load copies each entry once, into the replica.
#[derive(Deserialize)]
struct EntryRef<'a> {
    #[serde(borrow, with = "serde_bytes")]
    key: &'a [u8],
    elem: Elem,
    #[serde(borrow, with = "serde_bytes")]
    value: Option<&'a [u8]>,
    version: Version,
    seq: u64,
    expires_at_ms: Option<u64>,
}

impl EntryRef<'_> {
    fn load_into(&self, replica: &mut Replica) {
        replica.load_parts(
            self.key,
            self.elem,
            self.value,
            self.version,
            self.seq,
            self.expires_at_ms,
        );
    }
}

/// An entry of formats 1 and 2: a key's string.
#[derive(Deserialize)]
struct KeyEntryRef<'a> {
    #[serde(borrow, with = "serde_bytes")]
    key: &'a [u8],
    #[serde(borrow, with = "serde_bytes")]
    value: Option<&'a [u8]>,
    version: Version,
    seq: u64,
    expires_at_ms: Option<u64>,
}

impl KeyEntryRef<'_> {
    fn load_into(&self, replica: &mut Replica) {
        replica.load_parts(
            self.key,
            Elem::Key,
            self.value,
            self.version,
            self.seq,
            self.expires_at_ms,
        );
    }
}

/// A snapshot being written (see [`Store::begin_snapshot`]).
pub(crate) struct SnapshotRun {
    gen_: i64,
    /// Log rows up to this id are covered by the snapshot once it is complete.
    log_upto: i64,
    /// Entries those log rows carry.
    log_entries_covered: u64,
    /// Where the walk over the map goes on from.
    pub cursor: Option<(NodeId, u64)>,
    /// Entries written so far.
    pub written: u64,
}

/// An open data directory: its lock and its single write connection.
///
/// The map is stored as a snapshot plus a log. A group commit appends one log row holding the
/// final state of every key it touched; nothing is updated in place, so a commit writes about
/// the bytes it carries instead of a B-tree page per key (which made SQLite page writes and
/// checkpoints the largest cost of a write; see BENCHMARKS.md). When the log holds as many
/// entries as the map, the writer writes a new snapshot a chunk at a time between commits, in
/// the map's dot order. Chunks taken while the map changes may hold a key twice or miss one
/// that moved; every such change is in a log row after the snapshot's start, and replay sets
/// each key it names, so snapshot + log replay give back the committed state.
pub(crate) struct Store {
    conn: SqliteConnection,
    /// Id of the newest log row.
    last_log_id: i64,
    /// Entries (set or dropped) in the log rows that replay would read.
    log_entries: u64,
    /// The snapshot generation that counts.
    snapshot_gen: i64,
    /// Log rows up to this id are covered by that snapshot.
    log_start: i64,
    /// Bookkeeping of the newest committed log row.
    committed_vv: VersionVector,
    committed_floors: VersionVector,
    committed_hlc: Hlc,
    committed_entries: u64,
    /// Rows replaced by the current snapshot may still be in the file.
    cleanup_pending: bool,
    /// The database file, and its device and inode when opened: a file deleted or replaced
    /// under the running node is noticed (SQLite would go on writing to the unlinked one).
    db_path: PathBuf,
    db_identity: (u64, u64),
    /// Held (locked) for as long as the store lives.
    _lock: File,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn to_i64(v: u64) -> i64 {
    // Every stored integer keeps its top bit clear (see the schema).
    v.min(i64::MAX as u64) as i64
}

fn to_u64(v: i64) -> u64 {
    v.max(0) as u64
}

impl Store {
    /// Opens (creating if needed) the data directory `dir`, locks it, checks and migrates the
    /// database, and loads everything it holds.
    pub async fn open(
        dir: &Path,
        durability: Durability,
        limits: Limits,
    ) -> Result<(Store, Loaded)> {
        create_private_dir(dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err("opening lock file", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    path: dir.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_err("locking", &lock_path)(e));
            }
        }
        let db_path = dir.join(DB_FILE);
        check_header(&db_path)?;
        // Created here, owner-only, before SQLite sees it: SQLite gives its WAL the mode of the
        // database file, and would create the file 0644.
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&db_path)
            .map_err(io_err("creating the database file", &db_path))?;
        // Files of an older dice may be readable by others.
        for suffix in ["", "-wal", "-shm"] {
            let path = PathBuf::from(format!("{}{suffix}", db_path.display()));
            if let Ok(meta) = std::fs::metadata(&path)
                && meta.permissions().mode() & 0o077 != 0
            {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io_err("making the database owner-only (0600)", &path))?;
            }
        }

        let opts = SqliteConnectOptions::new()
            .filename(&db_path)
            .create_if_missing(true)
            // Only this process ever opens the file (the data dir is locked): no file locks
            // per transaction, and the WAL index in memory instead of a shared-memory file.
            .locking_mode(SqliteLockingMode::Exclusive)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Normal => SqliteSynchronous::Normal,
                Durability::Fsync => SqliteSynchronous::Full,
            })
            .busy_timeout(Duration::from_secs(5))
            // Multi-row upserts write a statement journal; in a temp file it cost a quarter
            // of a large commit (see BENCHMARKS.md).
            .pragma("temp_store", "memory")
            .statement_cache_capacity(64)
            .disable_statement_logging();
        let mut conn = opts.connect().await.map_err(|e| match e {
            sqlx::Error::Database(db) if db.message().contains("not a database") => {
                Error::NotADiceDatabase {
                    path: db_path.to_path_buf(),
                    reason: db.message().to_string(),
                }
            }
            source => Error::Sqlite {
                context: "opening the database",
                source,
            },
        })?;
        check_identity(&mut conn, &db_path).await?;
        // Stamp the file as ours before creating anything in it: a crash between creating the
        // tables and stamping them would leave a file that `check_identity` refuses as foreign.
        sqlx::query(AssertSqlSafe(format!(
            "PRAGMA application_id = {APPLICATION_ID}"
        )))
        .execute(&mut conn)
        .await
        .ctx("setting application_id")?;
        migrator().run(&mut conn).await?;

        let (loaded, tail) = load(&mut conn, &db_path, limits).await?;
        let db_identity =
            file_identity(&db_path).map_err(io_err("reading the metadata of", &db_path))?;
        let store = Store {
            db_path: db_path.clone(),
            db_identity,
            conn,
            last_log_id: tail.last_log_id,
            log_entries: tail.log_entries,
            snapshot_gen: tail.snapshot_gen,
            log_start: tail.log_start,
            committed_vv: loaded.replica.vv().clone(),
            committed_floors: loaded.replica.floors().clone(),
            committed_hlc: loaded.replica.last_hlc(),
            committed_entries: loaded.replica.entry_count() as u64,
            cleanup_pending: tail.snapshot_gen > 0,
            _lock: lock,
        };
        Ok((store, loaded))
    }

    /// Why the database file is no longer the one this store opened (deleted, or replaced
    /// by another file), if it is not.
    pub fn file_replaced(&self) -> Option<String> {
        match file_identity(&self.db_path) {
            Ok(id) if id == self.db_identity => None,
            Ok(_) => Some(format!(
                "the database {} was replaced by another file while the node ran",
                self.db_path.display()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
                "the database {} was deleted while the node ran",
                self.db_path.display()
            )),
            Err(e) => Some(format!(
                "the database {} cannot be checked: {e}",
                self.db_path.display()
            )),
        }
    }

    /// The version vector of the newest committed group.
    pub fn committed_vv(&self) -> &VersionVector {
        &self.committed_vv
    }

    /// The GC floors of the newest committed group.
    pub fn committed_floors(&self) -> &VersionVector {
        &self.committed_floors
    }

    /// Entries (set or dropped) in the log since the current snapshot.
    pub fn log_entries(&self) -> u64 {
        self.log_entries
    }

    /// Writes one group: one log row, in one transaction.
    pub async fn commit(&mut self, batch: &CommitBatch) -> Result<()> {
        let removed: Vec<RemovedOut<'_>> = batch
            .removals
            .iter()
            .map(|(k, elem)| RemovedOut {
                key: serde_bytes::Bytes::new(k),
                elem: *elem,
            })
            .collect();
        // One row per at most `MAX_BLOB_BYTES` of entries (a group of large values would
        // otherwise pass SQLite's blob limit), all in one transaction.
        let mut blobs = Vec::new();
        let mut parts = split_by_bytes(&batch.upserts, MAX_BLOB_BYTES).into_iter();
        let mut first = Some(removed.as_slice());
        loop {
            let set = parts.next().unwrap_or_default();
            if set.is_empty() && first.is_none() {
                break;
            }
            let record = LogRecordOut {
                hlc: batch.hlc.as_u64(),
                entries: batch.entry_count,
                vv: &batch.vv,
                floors: &batch.floors,
                removed: first.take().unwrap_or_default(),
                set,
            };
            blobs.push(
                encode_blob(&record)
                    .map_err(|e| Error::CommitFailed(format!("encoding a log row: {e}")))?,
            );
        }
        // Ids are given, not left to SQLite: after a snapshot switch emptied the table, SQLite
        // would start again at 1, below `log_start`, and replay would skip the new rows.
        let first_id = self.last_log_id + 1;
        if let [blob] = blobs.as_slice() {
            sqlx::query(INSERT_LOG_ROW)
                .bind(first_id)
                .bind(blob.as_slice())
                .execute(&mut self.conn)
                .await
                .ctx("appending to the log")?;
        } else {
            let mut tx = self.conn.begin().await.ctx("beginning a commit")?;
            for (i, blob) in blobs.iter().enumerate() {
                sqlx::query(INSERT_LOG_ROW)
                    .bind(first_id + i as i64)
                    .bind(blob.as_slice())
                    .execute(&mut *tx)
                    .await
                    .ctx("appending to the log")?;
            }
            tx.commit().await.ctx("committing")?;
        }
        self.last_log_id = first_id + blobs.len() as i64 - 1;
        self.log_entries += (batch.removals.len() + batch.upserts.len()) as u64;
        self.committed_vv = batch.vv.clone();
        self.committed_floors = batch.floors.clone();
        self.committed_hlc = batch.hlc;
        self.committed_entries = batch.entry_count;
        Ok(())
    }

    /// Starts a new snapshot: it will cover the log up to the newest row. Chunks left by an
    /// unfinished one are dropped first.
    pub async fn begin_snapshot(&mut self) -> Result<SnapshotRun> {
        sqlx::query("DELETE FROM snapshot WHERE gen > ?1")
            .bind(self.snapshot_gen)
            .execute(&mut self.conn)
            .await
            .ctx("dropping an unfinished snapshot")?;
        Ok(SnapshotRun {
            gen_: self.snapshot_gen + 1,
            log_upto: self.last_log_id,
            log_entries_covered: self.log_entries,
            cursor: None,
            written: 0,
        })
    }

    /// Appends one chunk of the snapshot being written.
    pub async fn write_snapshot_chunk(
        &mut self,
        run: &mut SnapshotRun,
        entries: &[Entry],
    ) -> Result<()> {
        let blob = encode_blob(entries)
            .map_err(|e| Error::CommitFailed(format!("encoding a snapshot chunk: {e}")))?;
        sqlx::query("INSERT INTO snapshot (gen, chunk) VALUES (?1, ?2)")
            .bind(run.gen_)
            .bind(blob)
            .execute(&mut self.conn)
            .await
            .ctx("writing a snapshot chunk")?;
        run.written += entries.len() as u64;
        Ok(())
    }

    /// Makes a complete snapshot the one that counts. What it replaces (the older snapshot,
    /// the log rows it covers, version 1's table) is left to [`Store::cleanup_step`].
    pub async fn finish_snapshot(&mut self, run: SnapshotRun) -> Result<()> {
        let mut tx = self.conn.begin().await.ctx("beginning a snapshot switch")?;
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ('snapshot_gen', ?1), ('log_start', ?2), \
             ('hlc', ?3), ('entries', ?4) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        )
        .bind(run.gen_)
        .bind(run.log_upto)
        .bind(to_i64(self.committed_hlc.as_u64()))
        .bind(to_i64(self.committed_entries))
        .execute(&mut *tx)
        .await
        .ctx("switching snapshots")?;
        // The bookkeeping of the newest committed row: a log emptied by this switch must not
        // take it along.
        sqlx::query("DELETE FROM origins")
            .execute(&mut *tx)
            .await
            .ctx("saving the version vector")?;
        let origins: Vec<(NodeId, u64, u64)> = self
            .committed_vv
            .iter()
            .map(|(o, s)| (o, s, self.committed_floors.get(o)))
            .chain(
                self.committed_floors
                    .iter()
                    .filter(|(o, _)| self.committed_vv.get(*o) == 0)
                    .map(|(o, f)| (o, 0, f)),
            )
            .collect();
        for (o, seq, floor) in origins {
            sqlx::query("INSERT INTO origins (origin, seq, floor) VALUES (?1, ?2, ?3)")
                .bind(to_i64(o.as_u64()))
                .bind(to_i64(seq))
                .bind(to_i64(floor))
                .execute(&mut *tx)
                .await
                .ctx("saving the version vector")?;
        }
        tx.commit().await.ctx("committing a snapshot switch")?;
        self.snapshot_gen = run.gen_;
        self.log_start = run.log_upto;
        // What the new snapshot replaces is no longer read; it is deleted a little at a time
        // (`cleanup_step`): deleting a large snapshot at once held commits back.
        self.cleanup_pending = true;
        self.log_entries = self.log_entries.saturating_sub(run.log_entries_covered);
        Ok(())
    }

    /// Whether rows replaced by a snapshot are still waiting to be deleted.
    pub fn cleanup_pending(&self) -> bool {
        self.cleanup_pending
    }

    /// Deletes a bounded number of the rows the current snapshot replaced; clears
    /// `cleanup_pending` once none is left.
    pub async fn cleanup_step(&mut self) -> Result<()> {
        let chunks = sqlx::query(
            "DELETE FROM snapshot WHERE id IN (SELECT id FROM snapshot WHERE gen < ?1 LIMIT 8)",
        )
        .bind(self.snapshot_gen)
        .execute(&mut self.conn)
        .await
        .ctx("dropping the old snapshot")?
        .rows_affected();
        let rows = sqlx::query(
            "DELETE FROM log WHERE id IN (SELECT id FROM log WHERE id <= ?1 LIMIT 512)",
        )
        .bind(self.log_start)
        .execute(&mut self.conn)
        .await
        .ctx("dropping covered log rows")?
        .rows_affected();
        let v1 =
            sqlx::query("DELETE FROM entries WHERE key IN (SELECT key FROM entries LIMIT 4096)")
                .execute(&mut self.conn)
                .await
                .ctx("dropping version 1 entries")?
                .rows_affected();
        if chunks + rows + v1 == 0 {
            self.cleanup_pending = false;
        }
        Ok(())
    }

    /// Closes the connection (checkpointing the WAL); the lock goes with the store.
    pub async fn close(self) -> Result<()> {
        self.conn.close().await.ctx("closing the database")
    }
}

/// The device and inode of a file.
fn file_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Creates the data directory owner-only (0700), or makes an existing one so: it holds the
/// database and the node's identity key.
fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("creating data directory", dir))?;
    let meta = std::fs::metadata(dir).map_err(io_err("reading the metadata of", dir))?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("making the data directory owner-only (0700)", dir))?;
        tracing::info!(dir = %dir.display(), "data directory made owner-only (0700)");
    }
    Ok(())
}

/// A file that exists and is not empty must start with SQLite's header.
fn check_header(db_path: &Path) -> Result<()> {
    let mut f = match File::open(db_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("opening", db_path)(e)),
    };
    let mut header = [0u8; 16];
    let mut read = 0;
    while read < header.len() {
        match f.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(io_err("reading", db_path)(e)),
        }
    }
    if read == 0 {
        return Ok(());
    }
    if read < header.len() || &header != b"SQLite format 3\0" {
        return Err(Error::NotADiceDatabase {
            path: db_path.to_path_buf(),
            reason: "the file is not an SQLite database".into(),
        });
    }
    Ok(())
}

/// An SQLite file is ours if it carries our application id, or is empty.
async fn check_identity(conn: &mut SqliteConnection, db_path: &Path) -> Result<()> {
    let app_id: i64 = sqlx::query_scalar("PRAGMA application_id")
        .fetch_one(&mut *conn)
        .await
        .ctx("reading application_id")?;
    if app_id != APPLICATION_ID {
        if app_id != 0 {
            return Err(Error::NotADiceDatabase {
                path: db_path.to_path_buf(),
                reason: format!(
                    "its application_id is {app_id:#x}, not dice's {APPLICATION_ID:#x}"
                ),
            });
        }
        let tables: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
                .fetch_one(&mut *conn)
                .await
                .ctx("listing tables")?;
        if tables > 0 {
            return Err(Error::NotADiceDatabase {
                path: db_path.to_path_buf(),
                reason: format!("it holds {tables} tables of another application"),
            });
        }
        return Ok(());
    }
    let has_migrations: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(&mut *conn)
    .await
    .ctx("reading the schema version")?;
    if has_migrations > 0 {
        let found: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
            .fetch_one(&mut *conn)
            .await
            .ctx("reading the schema version")?;
        if let Some(found) = found
            && found > SCHEMA_VERSION
        {
            return Err(Error::SchemaTooNew {
                path: db_path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
    }
    Ok(())
}

/// Where the log stands after loading.
struct LogTail {
    last_log_id: i64,
    log_entries: u64,
    snapshot_gen: i64,
    log_start: i64,
}

async fn meta_value(conn: &mut SqliteConnection, name: &str) -> Result<Option<i64>> {
    sqlx::query_scalar("SELECT value FROM meta WHERE name = ?1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .ctx("reading the meta table")
}

/// The first fields of a log row.
#[derive(Deserialize)]
struct LogHead {
    #[allow(dead_code)]
    hlc: u64,
    entries: u64,
}

/// Decodes a blob read from the row named by `what` (e.g. "table log, row id 17"),
/// checking its checksum when its format has one. A damaged blob is [`Error::Corrupt`] naming
/// the row, what is wrong with it and what to do.
fn decode_blob<'a, T: Deserialize<'a>>(
    blob: &'a [u8],
    what: &str,
    path: &Path,
    prefix_only: bool,
) -> Result<T> {
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        reason: format!("{what}: {reason}; {CORRUPT_REMEDY}"),
    };
    let body = match blob.split_first() {
        Some((
            &(BLOB_FORMAT | BLOB_FORMAT_SETS | BLOB_FORMAT_HASHES | BLOB_FORMAT_ELEMS
            | BLOB_FORMAT_KEYS),
            rest,
        )) => {
            let Some((sum, body)) = rest.split_first_chunk::<CHECKSUM_LEN>() else {
                return Err(corrupt(format!(
                    "{} bytes, too short to hold its checksum",
                    blob.len()
                )));
            };
            let stored = u64::from_le_bytes(*sum);
            let computed = xxhash_rust::xxh3::xxh3_64(body);
            if stored != computed {
                return Err(corrupt(format!(
                    "checksum does not match (stored {stored:016x}, computed {computed:016x} \
                     over its {} bytes)",
                    body.len()
                )));
            }
            body
        }
        Some((&BLOB_FORMAT_UNCHECKED, body)) => body,
        Some((other, _)) => return Err(corrupt(format!("unknown blob format {other}"))),
        None => return Err(corrupt("empty".into())),
    };
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| corrupt(e.to_string()))?;
    if !rest.is_empty() && !prefix_only {
        return Err(corrupt(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}

/// The format byte of a blob (`None`: empty).
fn blob_format(blob: &[u8]) -> Option<u8> {
    blob.first().copied()
}

fn entry_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Entry> {
    let key: Vec<u8> = row.try_get(0).ctx("decoding a key")?;
    let value: Option<Vec<u8>> = row.try_get(1).ctx("decoding a value")?;
    let origin = NodeId::new(to_u64(row.try_get(3).ctx("decoding an origin")?)).unwrap_or_default();
    Ok(Entry {
        key: Bytes::from(key),
        elem: Elem::Key,
        value: value.map(Bytes::from),
        version: Version {
            hlc: Hlc::from_u64(to_u64(row.try_get(2).ctx("decoding a timestamp")?)),
            origin,
        },
        seq: to_u64(row.try_get(4).ctx("decoding a seq")?),
        expires_at_ms: row
            .try_get::<Option<i64>, _>(5)
            .ctx("decoding an expiry")?
            .map(to_u64),
    })
}

async fn load(
    conn: &mut SqliteConnection,
    path: &Path,
    limits: Limits,
) -> Result<(Loaded, LogTail)> {
    let node_id = match meta_value(conn, "node_id")
        .await?
        .and_then(|v| NodeId::new(to_u64(v)))
    {
        Some(id) => id,
        None => {
            let id = NodeId::random();
            sqlx::query("INSERT OR REPLACE INTO meta (name, value) VALUES ('node_id', ?1)")
                .bind(to_i64(id.as_u64()))
                .execute(&mut *conn)
                .await
                .ctx("saving the node id")?;
            id
        }
    };
    let mut hlc = Hlc::from_u64(to_u64(meta_value(conn, "hlc").await?.unwrap_or(0)));
    let snapshot_gen = meta_value(conn, "snapshot_gen").await?.unwrap_or(0);
    let log_start = meta_value(conn, "log_start").await?.unwrap_or(0);
    let mut vv = VersionVector::default();
    let mut floors = VersionVector::default();
    let rows = sqlx::query("SELECT origin, seq, floor FROM origins")
        .fetch_all(&mut *conn)
        .await
        .ctx("reading the version vector")?;
    for row in rows {
        let Some(origin) = NodeId::new(to_u64(row.get::<i64, _>(0))) else {
            continue;
        };
        vv.raise(origin, to_u64(row.get(1)));
        floors.raise(origin, to_u64(row.get(2)));
    }

    // Version 1's table (empty once a snapshot was written), then the snapshot, then the log;
    // each later source sets the keys it names. Straight into the replica: no second copy of
    // the map is ever built.
    let mut replica = Replica::new(node_id, limits);
    // Size the map once, from the newest log row (or the snapshot switch), instead of growing
    // it (and rehashing every entry) a dozen times on the way to a million.
    let newest: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT id, batch FROM log WHERE id > ?1 ORDER BY id DESC LIMIT 1")
            .bind(log_start)
            .fetch_optional(&mut *conn)
            .await
            .ctx("reading the log")?;
    let expected = match newest {
        Some((id, blob)) => {
            decode_blob::<LogHead>(&blob, &format!("table log, row id {id}"), path, true)?.entries
        }
        None => to_u64(meta_value(conn, "entries").await?.unwrap_or(0)),
    };
    replica.reserve(expected.min(1 << 26) as usize);
    // Version 1 rows count as log: they go into the next snapshot.
    let mut log_entries = 0u64;
    if snapshot_gen == 0 {
        let mut rows = sqlx::query("SELECT key, value, hlc, origin, seq, expires_at FROM entries")
            .fetch(&mut *conn);
        while let Some(row) = rows.try_next().await.ctx("loading version 1 entries")? {
            let e = entry_from_row(&row)?;
            replica.load_set(e);
            log_entries += 1;
        }
    }
    {
        let mut rows = sqlx::query("SELECT id, chunk FROM snapshot WHERE gen = ?1 ORDER BY id")
            .bind(snapshot_gen)
            .fetch(&mut *conn);
        while let Some(row) = rows.try_next().await.ctx("loading the snapshot")? {
            let id: i64 = row.try_get(0).ctx("reading a snapshot chunk id")?;
            let blob: &[u8] = row.try_get(1).ctx("reading a snapshot chunk")?;
            let what = format!("table snapshot, generation {snapshot_gen}, chunk row id {id}");
            if matches!(
                blob_format(blob),
                Some(BLOB_FORMAT | BLOB_FORMAT_SETS | BLOB_FORMAT_HASHES | BLOB_FORMAT_ELEMS)
            ) {
                let chunk: Vec<EntryRef<'_>> = decode_blob(blob, &what, path, false)?;
                replica.reserve(chunk.len());
                for e in &chunk {
                    e.load_into(&mut replica);
                }
            } else {
                let chunk: Vec<KeyEntryRef<'_>> = decode_blob(blob, &what, path, false)?;
                replica.reserve(chunk.len());
                for e in &chunk {
                    e.load_into(&mut replica);
                }
            }
        }
    }
    let mut last_log_id = log_start;
    {
        let mut rows = sqlx::query("SELECT id, batch FROM log WHERE id > ?1 ORDER BY id")
            .bind(log_start)
            .fetch(&mut *conn);
        while let Some(row) = rows.try_next().await.ctx("loading the log")? {
            last_log_id = row.try_get(0).ctx("reading a log id")?;
            let blob: &[u8] = row.try_get(1).ctx("reading a log row")?;
            let what = format!("table log, row id {last_log_id}");
            let (row_vv, row_floors, row_hlc) = if matches!(
                blob_format(blob),
                Some(BLOB_FORMAT | BLOB_FORMAT_SETS | BLOB_FORMAT_HASHES | BLOB_FORMAT_ELEMS)
            ) {
                let record: LogRecord = decode_blob(blob, &what, path, false)?;
                log_entries += (record.removed.len() + record.set.len()) as u64;
                for r in &record.removed {
                    replica.load_remove(r.key, r.elem);
                }
                for e in &record.set {
                    e.load_into(&mut replica);
                }
                (record.vv, record.floors, record.hlc)
            } else {
                let record: LogRecordKeys = decode_blob(blob, &what, path, false)?;
                log_entries += (record.removed.len() + record.set.len()) as u64;
                for k in &record.removed {
                    replica.load_remove(k, Elem::Key);
                }
                for e in &record.set {
                    e.load_into(&mut replica);
                }
                (record.vv, record.floors, record.hlc)
            };
            vv.merge(&row_vv);
            floors.merge(&row_floors);
            hlc = hlc.max(Hlc::from_u64(row_hlc));
        }
    }
    // Rows past the newest id replay would read (a snapshot switch may have left them, or a
    // log that was never compacted): the next append continues after every existing id.
    let max_id: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM log")
        .fetch_one(&mut *conn)
        .await
        .ctx("reading the log")?;
    last_log_id = last_log_id.max(max_id.unwrap_or(0));
    replica.finish_load(hlc, &vv, &floors);
    let loaded = Loaded { node_id, replica };
    Ok((
        loaded,
        LogTail {
            last_log_id,
            log_entries,
            snapshot_gen,
            log_start,
        },
    ))
}
