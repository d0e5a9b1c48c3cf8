//! Errors of the cache, with the context a user needs to act on them.

use std::path::PathBuf;

/// Everything that can go wrong in dice-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Keys must not be empty.
    #[error("key is empty")]
    EmptyKey,
    /// A key past [`crate::Limits::max_key_len`].
    #[error("key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value past [`crate::Limits::max_value_len`].
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A remote entry that breaks an invariant.
    #[error("invalid entry from a peer ({reason}), key starting {key_prefix:?}")]
    InvalidEntry {
        /// What is wrong.
        reason: &'static str,
        /// The first bytes of its key.
        key_prefix: Vec<u8>,
    },
    /// Used memory is past the memory limit and the policy evicts nothing (or nothing is
    /// left to evict): writes that add data are refused, reads and deletes go on.
    #[error("command not allowed when used memory > 'maxmemory'")]
    OutOfMemory,
    /// A peer broke the sync protocol.
    #[error("sync protocol violation: {0}")]
    Protocol(String),
    /// A sync message could not be encoded or decoded.
    #[error(transparent)]
    Wire(#[from] crate::sync::WireError),
    /// Another process has the data directory open.
    #[error(
        "data directory {path} is in use by another dice process (lock held on {path}/LOCK)",
        path = .path.display()
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// The database file is not one of ours.
    #[error("{path} is not a dice database: {reason}", path = .path.display())]
    NotADiceDatabase {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// The database is ours but something in it cannot be read back.
    #[error("{path} is damaged: {reason}", path = .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What could not be read.
        reason: String,
    },
    /// The database was written by a newer dice.
    #[error(
        "{path} has schema version {found}, newer than this dice supports ({supported}); upgrade dice",
        path = .path.display()
    )]
    SchemaTooNew {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// A file-system operation failed.
    #[error("{op} {path}: {source}", path = .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// SQLite said no.
    #[error("sqlite: {context}: {source}")]
    Sqlite {
        /// What was being done.
        context: &'static str,
        /// The error.
        source: sqlx::Error,
    },
    /// The schema migrations failed.
    #[error("migrating the database schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A group commit failed: the write was rolled back and happened nowhere.
    #[error("commit failed, the write was not applied: {0}")]
    CommitFailed(String),
    /// The store cannot commit (disk full, database deleted or replaced, I/O errors): writes
    /// are refused until it recovers; reads go on. Redis answers `MISCONF` in this situation.
    #[error("writes are refused: {0}")]
    WritesRefused(String),
    /// The cache was closed.
    #[error("the cache is closed")]
    Closed,
    /// An integer increment of a value that is not an integer in `i64`'s range.
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    /// A float increment of a value that is not a number.
    #[error("value is not a valid float")]
    NotAFloat,
    /// An integer increment whose result leaves `i64`'s range.
    #[error("increment or decrement would overflow")]
    Overflow,
    /// A float increment whose result is not finite.
    #[error("increment would produce NaN or Infinity")]
    NanOrInfinity,
    /// A command of one type on a key holding another (Redis's `WRONGTYPE`).
    #[error("Operation against a key holding the wrong kind of value")]
    WrongType,
    /// A hash field whose name has the id of another field of the same hash (see
    /// [`crate::entry::FieldId`]): refused, nothing written.
    #[error("field name collides with another field of this hash")]
    FieldCollision,
    /// `HINCRBY` of a field that is not an integer.
    #[error("hash value is not an integer")]
    HashNotAnInteger,
    /// `HINCRBYFLOAT` of a field that is not a number.
    #[error("hash value is not a float")]
    HashNotAFloat,
}

/// Results of dice-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) trait SqlContext<T> {
    fn ctx(self, context: &'static str) -> Result<T>;
}

impl<T> SqlContext<T> for std::result::Result<T, sqlx::Error> {
    fn ctx(self, context: &'static str) -> Result<T> {
        self.map_err(|source| Error::Sqlite { context, source })
    }
}
