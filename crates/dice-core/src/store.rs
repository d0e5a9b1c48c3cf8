//! SQLite persistence through sqlx: the data directory, its lock, the schema, loading and
//! group commits. Only the cache's writer task touches a [`Store`].

use crate::entry::{Entry, NodeId, Version};
use crate::error::SqlContext;
use crate::hlc::Hlc;
use crate::version_vector::VersionVector;
use crate::{Error, Result};
use bytes::Bytes;
use futures_util::TryStreamExt;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row, SqlSafeStr, SqliteConnection};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// The database file inside a data directory.
pub const DB_FILE: &str = "dice.sqlite3";
/// The lock file inside a data directory.
pub const LOCK_FILE: &str = "LOCK";
/// SQLite `application_id` of a dice database ("DICE").
pub const APPLICATION_ID: i64 = 0x4449_4345;
/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = 1;

/// How durable an acknowledged write is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Survives a crash of the process (SQLite `synchronous=NORMAL` in WAL mode). Default.
    #[default]
    Normal,
    /// Also survives power loss (`synchronous=FULL`: fsync at every group commit).
    Fsync,
}

/// Largest group of rows in one multi-row statement; smaller groups are powers of two so the
/// number of distinct prepared statements stays small.
const MAX_ROWS_PER_STATEMENT: usize = 256;

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        "init".into(),
        MigrationType::Simple,
        include_str!("../migrations/0001_init.sql").into_sql_str(),
        false,
    )])
}

/// What a data directory held when opened.
pub(crate) struct Loaded {
    pub node_id: NodeId,
    pub hlc: Hlc,
    pub vv: VersionVector,
    pub floors: VersionVector,
    pub entries: Vec<Entry>,
}

/// One group commit: rows to delete, rows to upsert, and the replica's bookkeeping.
#[derive(Default)]
pub(crate) struct CommitBatch {
    pub removals: Vec<Bytes>,
    pub upserts: Vec<Entry>,
    pub vv: VersionVector,
    pub floors: VersionVector,
    pub hlc: Hlc,
}

/// An open data directory: its lock and its single write connection.
pub(crate) struct Store {
    conn: SqliteConnection,
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
    pub async fn open(dir: &Path, durability: Durability) -> Result<(Store, Loaded)> {
        std::fs::create_dir_all(dir).map_err(io_err("creating data directory", dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
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

        let opts = SqliteConnectOptions::new()
            .filename(&db_path)
            .create_if_missing(true)
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

        let loaded = load(&mut conn).await?;
        Ok((Store { conn, _lock: lock }, loaded))
    }

    /// Writes one group in one transaction.
    pub async fn commit(&mut self, batch: &CommitBatch) -> Result<()> {
        let mut tx = self.conn.begin().await.ctx("beginning a commit")?;
        for chunk in chunks(&batch.removals) {
            let sql = delete_sql(chunk.len());
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for k in chunk {
                q = q.bind(k.as_ref());
            }
            q.execute(&mut *tx).await.ctx("deleting entries")?;
        }
        for chunk in chunks(&batch.upserts) {
            let sql = upsert_sql(chunk.len());
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for e in chunk {
                q = q
                    .bind(e.key.as_ref())
                    .bind(e.value.as_deref())
                    .bind(to_i64(e.version.hlc.as_u64()))
                    .bind(to_i64(e.version.origin.as_u64()))
                    .bind(to_i64(e.seq))
                    .bind(e.expires_at_ms.map(to_i64));
            }
            q.execute(&mut *tx).await.ctx("upserting entries")?;
        }
        let origins: Vec<(NodeId, u64, u64)> = batch
            .vv
            .iter()
            .map(|(o, s)| (o, s, batch.floors.get(o)))
            .chain(
                batch
                    .floors
                    .iter()
                    .filter(|(o, _)| batch.vv.get(*o) == 0)
                    .map(|(o, f)| (o, 0, f)),
            )
            .collect();
        for chunk in chunks(&origins) {
            let mut sql = String::from("INSERT INTO origins (origin, seq, floor) VALUES ");
            push_tuples(&mut sql, chunk.len(), 3);
            sql.push_str(
                " ON CONFLICT(origin) DO UPDATE SET seq = max(seq, excluded.seq), \
                 floor = max(floor, excluded.floor)",
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (o, s, f) in chunk {
                q = q.bind(to_i64(o.as_u64())).bind(to_i64(*s)).bind(to_i64(*f));
            }
            q.execute(&mut *tx).await.ctx("saving the version vector")?;
        }
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ('hlc', ?1) \
             ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value)",
        )
        .bind(to_i64(batch.hlc.as_u64()))
        .execute(&mut *tx)
        .await
        .ctx("saving the clock")?;
        tx.commit().await.ctx("committing")?;
        Ok(())
    }

    /// Closes the connection (checkpointing the WAL); the lock goes with the store.
    pub async fn close(self) -> Result<()> {
        self.conn.close().await.ctx("closing the database")
    }
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

async fn load(conn: &mut SqliteConnection) -> Result<Loaded> {
    let node_id: Option<i64> = sqlx::query_scalar("SELECT value FROM meta WHERE name = 'node_id'")
        .fetch_optional(&mut *conn)
        .await
        .ctx("reading the node id")?;
    let node_id = match node_id.and_then(|v| NodeId::new(to_u64(v))) {
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
    let hlc: Option<i64> = sqlx::query_scalar("SELECT value FROM meta WHERE name = 'hlc'")
        .fetch_optional(&mut *conn)
        .await
        .ctx("reading the clock")?;
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
        vv.set(origin, to_u64(row.get(1)));
        let floor = to_u64(row.get(2));
        if floor > 0 {
            floors.set(origin, floor);
        }
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM entries")
        .fetch_one(&mut *conn)
        .await
        .ctx("counting entries")?;
    let mut entries = Vec::with_capacity(to_u64(count) as usize);
    let mut rows =
        sqlx::query("SELECT key, value, hlc, origin, seq, expires_at FROM entries").fetch(conn);
    while let Some(row) = rows.try_next().await.ctx("loading entries")? {
        let key: Vec<u8> = row.try_get(0).ctx("decoding a key")?;
        let value: Option<Vec<u8>> = row.try_get(1).ctx("decoding a value")?;
        let origin =
            NodeId::new(to_u64(row.try_get(3).ctx("decoding an origin")?)).unwrap_or_default();
        entries.push(Entry {
            key: Bytes::from(key),
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
        });
    }
    Ok(Loaded {
        node_id,
        hlc: Hlc::from_u64(to_u64(hlc.unwrap_or(0))),
        vv,
        floors,
        entries,
    })
}

/// Splits rows into statement-sized groups: full groups of the maximum size, then powers of
/// two, so at most a handful of distinct statements are ever prepared.
fn chunks<T>(rows: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut rest = rows;
    while !rest.is_empty() {
        let n = if rest.len() >= MAX_ROWS_PER_STATEMENT {
            MAX_ROWS_PER_STATEMENT
        } else {
            1 << (usize::BITS - 1 - rest.len().leading_zeros())
        };
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

fn push_tuples(sql: &mut String, rows: usize, cols: usize) {
    let tuple = format!("({})", vec!["?"; cols].join(", "));
    sql.push_str(&vec![tuple; rows].join(", "));
}

fn upsert_sql(rows: usize) -> String {
    let mut sql =
        String::from("INSERT INTO entries (key, value, hlc, origin, seq, expires_at) VALUES ");
    push_tuples(&mut sql, rows, 6);
    // The version guard: a row only ever moves to a greater version.
    sql.push_str(
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value, hlc = excluded.hlc, \
         origin = excluded.origin, seq = excluded.seq, expires_at = excluded.expires_at \
         WHERE (excluded.hlc, excluded.origin) > (entries.hlc, entries.origin)",
    );
    sql
}

fn delete_sql(rows: usize) -> String {
    format!(
        "DELETE FROM entries WHERE key IN ({})",
        vec!["?"; rows].join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn chunks_cover_everything_with_few_distinct_sizes() {
        for n in [0usize, 1, 2, 3, 255, 256, 257, 1000, 4097] {
            let rows: Vec<usize> = (0..n).collect();
            let parts = chunks(&rows);
            assert_eq!(parts.iter().map(|c| c.len()).sum::<usize>(), n);
            assert!(parts.iter().all(|c| c.len().is_power_of_two()));
            assert_eq!(parts.concat(), rows);
        }
    }
}
