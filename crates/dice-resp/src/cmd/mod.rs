//! Commands: the table of what dice answers, argument checks shared by every command, and
//! dispatch to one module per family ([`connection`], [`strings`], [`keyspace`], [`info`],
//! [`transaction`]).
//!
//! A command reads its arguments from the [`Request`], applies itself to the cache and
//! appends its reply to the connection's output buffer. Commands on keys run against a
//! [`Db`]: a read-only view of the replica under the cache's read lock, or a
//! [`dice_core::Transaction`] under its write lock ([`dice_core::Cache::transact`]) for
//! commands that write, so every command is atomic on this node; `EXEC` runs all its
//! queued commands in one transaction. Writes report their commit ticket to the
//! [`Batch`]; the connection waits for the highest one once before it sends the batch's
//! replies.

pub(crate) mod admin;
pub(crate) mod connection;
pub(crate) mod docs;
pub(crate) mod hashes;
pub(crate) mod info;
pub(crate) mod keyspace;
pub(crate) mod pubsub;
pub(crate) mod sets;
pub(crate) mod strings;
pub(crate) mod tracking;
pub(crate) mod transaction;

use crate::frame::{Protocol, Request, write_error, write_null};
use crate::state::ServerState;
pub(crate) use crate::wire::Batch;
use crate::wire::{OUTPUT_FLUSH_AT, Wire, send};
use bytes::Bytes;
use dice_core::{Replica, Transaction};
use std::sync::atomic::Ordering;

/// Redis's error texts that several commands share.
pub(crate) const SYNTAX_ERROR: &str = "ERR syntax error";
pub(crate) const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
pub(crate) const WRONGTYPE: &str =
    "WRONGTYPE Operation against a key holding the wrong kind of value";

/// What one connection knows about its client.
#[derive(Debug)]
pub(crate) struct Session {
    /// What other connections see of this one (`CLIENT LIST`, `CLIENT KILL`).
    pub entry: std::sync::Arc<crate::registry::ClientEntry>,
    /// `CLIENT ID`.
    pub id: u64,
    /// `CLIENT SETNAME`.
    pub name: Option<Vec<u8>>,
    /// Whether the client may run commands (always, when no password is set).
    pub authenticated: bool,
    /// Set by `QUIT` (and too many failed `AUTH`s): close after the replies are sent.
    pub quit: bool,
    /// With `quit`: read what the client still sends while closing, so that it gets the
    /// last reply (an error saying why) before the connection goes.
    pub linger: bool,
    /// Failed `AUTH`s on this connection (it closes at [`connection::MAX_AUTH_FAILURES`]).
    pub auth_failures: u32,
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// The reply protocol, chosen by `HELLO`.
    pub proto: Protocol,
    /// The commands queued since `MULTI`, if the client is in a transaction.
    pub multi: Option<transaction::Multi>,
    /// The keys under `WATCH`, with what they held when watched.
    pub watched: transaction::Watched,
    /// The channels and patterns subscribed to, and the queue of messages (from the first
    /// `SUBSCRIBE` or `PSUBSCRIBE` on).
    pub pubsub: Option<Box<crate::pubsub::ClientSubs>>,
    /// The seq of this connection's latest write ([`dice_core::Entry::seq`]; 0: none yet),
    /// for `WAIT`.
    pub last_write_seq: u64,
    /// `CLIENT TRACKING` as this connection set it.
    pub tracking: crate::tracking::SessionTracking,
    /// Invalidation messages for this connection (see [`crate::tracking`]).
    pub pushes: tokio::sync::mpsc::UnboundedReceiver<crate::registry::Push>,
}

/// Runs a write `f` on the replica through [`Db::modify`] (the command's transaction),
/// keeping what it returns.
pub(crate) fn modify_keeping<T>(
    db: &mut dyn Db,
    key: &[u8],
    f: impl FnOnce(&mut Replica, u64) -> dice_core::Result<T>,
) -> dice_core::Result<T> {
    let mut f = Some(f);
    let mut out = None;
    db.modify(Bytes::copy_from_slice(key), &mut |r, now| {
        if let Some(f) = f.take() {
            out = Some(f(r, now)?);
        }
        Ok(())
    })?;
    out.ok_or_else(|| dice_core::Error::Protocol("a write did not run".into()))
}

/// Where a command on keys reads and writes: the replica under the cache's read lock
/// (commands that do not write), or a [`Transaction`] under its write lock.
pub(crate) trait Db {
    /// The replica, this command's (or transaction's) writes included.
    fn replica(&self) -> &Replica;
    /// The time the command runs at (milliseconds since the Unix epoch).
    fn now(&self) -> u64;
    /// A local write (`value` `None` deletes).
    fn write(
        &mut self,
        key: Bytes,
        value: Option<Bytes>,
        expires_at_ms: Option<u64>,
    ) -> dice_core::Result<()>;

    /// Adds `by` to the counter of `key`; what it reads as afterwards.
    fn incr(&mut self, key: Bytes, by: dice_core::Increment) -> dice_core::Result<Bytes>;

    /// Runs `f` on the replica for a write that [`Db::write`] and [`Db::incr`] do not
    /// cover (hashes, removing a key as observed); `key` is the key it writes.
    fn modify(
        &mut self,
        key: Bytes,
        f: &mut dyn FnMut(&mut Replica, u64) -> dice_core::Result<()>,
    ) -> dice_core::Result<()>;

    /// Whether a write that adds data may run: `OOM` past `maxmemory` when nothing can be
    /// evicted (Redis's `denyoom` commands). Removals do not ask.
    fn room(&self) -> dice_core::Result<()> {
        Ok(())
    }

    /// The live value of `key`.
    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.replica().get(key, self.now())
    }

    /// Whether `key` reads as present, whatever its type.
    fn exists(&self, key: &[u8]) -> bool {
        self.replica().contains(key, self.now())
    }

    /// The live value of `key` and its expiry.
    fn get_with_expiry(&self, key: &[u8]) -> Option<(Bytes, Option<u64>)> {
        self.replica().get_with_expiry(key, self.now())
    }
}

impl Db for Transaction<'_> {
    fn replica(&self) -> &Replica {
        Transaction::replica(self)
    }
    fn now(&self) -> u64 {
        self.now_ms()
    }
    fn write(
        &mut self,
        key: Bytes,
        value: Option<Bytes>,
        expires_at_ms: Option<u64>,
    ) -> dice_core::Result<()> {
        Transaction::write(self, key, value, expires_at_ms).map(|_| ())
    }
    fn incr(&mut self, key: Bytes, by: dice_core::Increment) -> dice_core::Result<Bytes> {
        Transaction::incr(self, key, by).map(|(v, _)| v)
    }
    fn modify(
        &mut self,
        _key: Bytes,
        f: &mut dyn FnMut(&mut Replica, u64) -> dice_core::Result<()>,
    ) -> dice_core::Result<()> {
        Transaction::modify(self, |r, now| f(r, now))
    }
    fn room(&self) -> dice_core::Result<()> {
        Transaction::room(self)
    }
}

/// A transaction that notes the keys it wrote (for client tracking's `NOLOOP`).
struct Recorded<'t, 'a> {
    tx: &'t mut Transaction<'a>,
    keys: Vec<Bytes>,
}

impl Db for Recorded<'_, '_> {
    fn replica(&self) -> &Replica {
        self.tx.replica()
    }
    fn now(&self) -> u64 {
        self.tx.now_ms()
    }
    fn write(
        &mut self,
        key: Bytes,
        value: Option<Bytes>,
        expires_at_ms: Option<u64>,
    ) -> dice_core::Result<()> {
        self.tx.write(key.clone(), value, expires_at_ms)?;
        self.keys.push(key);
        Ok(())
    }
    fn incr(&mut self, key: Bytes, by: dice_core::Increment) -> dice_core::Result<Bytes> {
        let value = self.tx.incr(key.clone(), by).map(|(v, _)| v)?;
        self.keys.push(key);
        Ok(value)
    }
    fn modify(
        &mut self,
        key: Bytes,
        f: &mut dyn FnMut(&mut Replica, u64) -> dice_core::Result<()>,
    ) -> dice_core::Result<()> {
        self.tx.modify(|r, now| f(r, now))?;
        self.keys.push(key);
        Ok(())
    }
    fn room(&self) -> dice_core::Result<()> {
        self.tx.room()
    }
}

/// The replica under the read lock, for commands that only read.
pub(crate) struct ReadOnly<'a> {
    pub replica: &'a Replica,
    pub now: u64,
}

impl Db for ReadOnly<'_> {
    fn replica(&self) -> &Replica {
        self.replica
    }
    fn now(&self) -> u64 {
        self.now
    }
    fn write(&mut self, _: Bytes, _: Option<Bytes>, _: Option<u64>) -> dice_core::Result<()> {
        // Never reached: commands flagged `write` run in a transaction.
        debug_assert!(false, "a read-only command wrote");
        Err(dice_core::Error::Protocol(
            "a read-only command tried to write".into(),
        ))
    }
    fn incr(&mut self, _: Bytes, _: dice_core::Increment) -> dice_core::Result<Bytes> {
        debug_assert!(false, "a read-only command wrote");
        Err(dice_core::Error::Protocol(
            "a read-only command tried to write".into(),
        ))
    }
    fn modify(
        &mut self,
        _: Bytes,
        _: &mut dyn FnMut(&mut Replica, u64) -> dice_core::Result<()>,
    ) -> dice_core::Result<()> {
        debug_assert!(false, "a read-only command wrote");
        Err(dice_core::Error::Protocol(
            "a read-only command tried to write".into(),
        ))
    }
}

/// Everything a command runs with.
pub(crate) struct Ctx<'a> {
    pub server: &'a ServerState,
    pub session: &'a mut Session,
    pub out: &'a mut Vec<u8>,
    pub batch: &'a mut Batch,
    wire: &'a mut Wire,
    /// Whether the command being run wrote.
    wrote: bool,
    /// Where the reply of the command being run starts in `out`.
    reply_start: usize,
    /// The length `out` may not pass while an `EXEC` runs (its replies cannot be sent
    /// before it ends, since it holds the cache's lock); `usize::MAX` otherwise.
    limit: usize,
}

impl<'a> Ctx<'a> {
    /// The time by the cache's clock, as Redis's signed milliseconds.
    pub fn now_ms(&self) -> i64 {
        i64::try_from(self.server.cache.now_ms()).unwrap_or(i64::MAX)
    }

    pub fn new(
        server: &'a ServerState,
        session: &'a mut Session,
        out: &'a mut Vec<u8>,
        batch: &'a mut Batch,
        wire: &'a mut Wire,
    ) -> Self {
        Ctx {
            server,
            session,
            out,
            batch,
            wire,
            wrote: false,
            reply_start: 0,
            limit: usize::MAX,
        }
    }

    /// Sends what is buffered once it passes [`OUTPUT_FLUSH_AT`] (waiting for the socket:
    /// a client reading slowly slows its own replies, nobody else's). A command with a
    /// reply of many elements calls it between elements, never holding the cache's lock.
    /// False once the client is gone: stop answering.
    ///
    /// Only read commands may call it mid-reply: a write's reply must stay whole in the
    /// buffer until its commit is known.
    pub async fn flush_if_full(&mut self) -> bool {
        if self.wire.broken {
            return false;
        }
        if self.out.len() < OUTPUT_FLUSH_AT {
            return true;
        }
        debug_assert!(!self.wrote, "a write's reply is never sent in pieces");
        let sent = send(self.server, self.out, self.batch, self.wire).await;
        self.reply_start = 0;
        sent
    }

    /// Whether `bytes` more of reply fit: always, except in an `EXEC`, whose replies are
    /// bounded by [`crate::RespConfig::max_exec_reply`]. A command that would pass it
    /// answers [`Ctx::too_big`] instead (and does not write).
    pub fn fits(&self, bytes: usize) -> bool {
        self.out.len().saturating_add(bytes).saturating_add(32) <= self.limit
    }

    /// The error of a command in an `EXEC` whose reply would not fit.
    pub fn too_big(&mut self) {
        let text = format!(
            "ERR the replies of this EXEC would pass {} bytes (max_exec_reply); the \
             command was not run",
            self.server.config.max_exec_reply
        );
        self.out.truncate(self.reply_start);
        write_error(self.out, &text);
    }

    /// Records a write of the current command, made durable by the commit of `ticket`;
    /// `seq` is this node's local seq right after it (the write's own seq, read under the
    /// lock).
    pub fn wrote(&mut self, ticket: dice_core::CommitTicket, seq: u64) {
        self.wrote = true;
        self.batch.ticket = self.batch.ticket.max(Some(ticket));
        self.session.last_write_seq = self.session.last_write_seq.max(seq);
    }

    /// The reply protocol of this connection.
    pub fn proto(&self) -> Protocol {
        self.session.proto
    }

    /// Appends a missing value: `$-1` in RESP2, `_` in RESP3.
    pub fn null(&mut self) {
        write_null(self.out, self.session.proto);
    }

    /// Appends an error reply.
    pub fn error(&mut self, text: &str) {
        write_error(self.out, text);
    }

    /// Appends the reply to a failed cache operation.
    pub fn cache_error(&mut self, e: &dice_core::Error) {
        write_error(self.out, &cache_error_text(e));
    }

    /// Appends `ERR wrong number of arguments for '<name>' command`.
    pub fn wrong_arity(&mut self, name: &str) {
        let text = format!("ERR wrong number of arguments for '{name}' command");
        write_error(self.out, &text);
    }
}

/// The reply text of a failed cache operation.
pub(crate) fn cache_error_text(e: &dice_core::Error) -> String {
    match e {
        // Redis's code for "writes are refused because the server cannot persist".
        dice_core::Error::WritesRefused(why) => format!(
            "MISCONF dice cannot persist to disk, so writes are refused (reads go on): {why}"
        ),
        dice_core::Error::WrongType => WRONGTYPE.to_owned(),
        // Redis's exact reply past `maxmemory`.
        dice_core::Error::OutOfMemory => {
            "OOM command not allowed when used memory > 'maxmemory'.".to_owned()
        }
        e => format!("ERR {e}"),
    }
}

/// Which handler runs a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    // Connection and server.
    Auth,
    Client,
    Command,
    Echo,
    Hello,
    Info,
    Ping,
    Quit,
    Select,
    Config,
    Time,
    Shutdown,
    Reset,
    // Pub/sub.
    Subscribe,
    Psubscribe,
    Unsubscribe,
    Punsubscribe,
    Publish,
    Pubsub,
    Wait,
    Waitaof,
    // Transactions.
    Discard,
    Exec,
    Multi,
    Unwatch,
    Watch,
    // Commands on keys, run against a `Db`.
    Append,
    Copy,
    Counter,
    Dbsize,
    Del,
    Exists,
    Expire,
    Expireat,
    Expiretime,
    Flushall,
    Get,
    Getdel,
    Getex,
    Getrange,
    Getset,
    Hdel,
    Hexists,
    Hget,
    Hgetall,
    Hincrby,
    Hincrbyfloat,
    Hkeys,
    Hlen,
    Hmget,
    Hmset,
    Hrandfield,
    Hscan,
    Hset,
    Hsetnx,
    Hstrlen,
    Hvals,
    Keys,
    Sadd,
    Scard,
    Sdiff,
    Sdiffstore,
    Sinter,
    Sintercard,
    Sinterstore,
    Sismember,
    Smembers,
    Smismember,
    Smove,
    Spop,
    Srandmember,
    Srem,
    Sscan,
    Sunion,
    Sunionstore,
    Memory,
    Mget,
    Mset,
    Msetnx,
    Object,
    Persist,
    Pexpire,
    Pexpireat,
    Pexpiretime,
    Psetex,
    Pttl,
    Randomkey,
    Rename,
    Renamenx,
    Scan,
    Set,
    Setex,
    Setnx,
    Setrange,
    Strlen,
    Touch,
    Ttl,
    Type,
}

/// One command as `COMMAND` describes it (Redis's arity convention: `n` exactly `n`
/// arguments with the name, `-n` at least `n`).
#[derive(Debug)]
pub(crate) struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    pub arity: i32,
    pub flags: &'static [&'static str],
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
}

impl Spec {
    /// Whether an unauthenticated client may run it.
    fn no_auth(&self) -> bool {
        matches!(
            self.kind,
            Kind::Auth | Kind::Hello | Kind::Quit | Kind::Reset
        )
    }

    /// Whether it may write (it then runs in a transaction).
    pub fn writes(&self) -> bool {
        self.flags.contains(&"write")
    }

    /// Whether it runs at once even between `MULTI` and `EXEC` (as in Redis).
    fn runs_in_multi(&self) -> bool {
        matches!(
            self.kind,
            Kind::Exec | Kind::Discard | Kind::Multi | Kind::Watch | Kind::Quit | Kind::Reset
        )
    }

    /// Whether `EXEC` cannot run it (it would take the cache's lock that `EXEC` holds, or
    /// change the connection): refused when queued, which aborts the transaction.
    fn no_multi(&self) -> bool {
        self.flags.contains(&"no_multi")
            || matches!(
                self.kind,
                Kind::Subscribe
                    | Kind::Psubscribe
                    | Kind::Unsubscribe
                    | Kind::Punsubscribe
                    | Kind::Reset
            )
    }

    fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        let arity = i64::from(self.arity);
        if arity >= 0 {
            argc == arity
        } else {
            argc >= -arity
        }
    }
}

const fn spec(
    name: &'static str,
    kind: Kind,
    arity: i32,
    flags: &'static [&'static str],
    keys: (i32, i32, i32),
) -> Spec {
    Spec {
        name,
        kind,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
    }
}

const NO_KEYS: (i32, i32, i32) = (0, 0, 0);
const ONE_KEY: (i32, i32, i32) = (1, 1, 1);
const TWO_KEYS: (i32, i32, i32) = (1, 2, 1);
const ALL_KEYS: (i32, i32, i32) = (1, -1, 1);
const PAIRS: (i32, i32, i32) = (1, -1, 2);

const W: &[&str] = &["write"];
const W_FAST: &[&str] = &["write", "fast"];
const W_OOM: &[&str] = &["write", "denyoom"];
const W_OOM_FAST: &[&str] = &["write", "denyoom", "fast"];
const R: &[&str] = &["readonly"];
const R_FAST: &[&str] = &["readonly", "fast"];
const PUBSUB: &[&str] = &["pubsub", "noscript", "loading", "stale"];
const TX: &[&str] = &["noscript", "loading", "stale", "fast", "allow_busy"];

/// Every command, sorted by name (binary-searched).
pub(crate) static TABLE: &[Spec] = &[
    spec("append", Kind::Append, 3, W_OOM_FAST, ONE_KEY),
    spec(
        "auth",
        Kind::Auth,
        -2,
        &[
            "noscript", "loading", "stale", "fast", "no_auth", "no_multi",
        ],
        NO_KEYS,
    ),
    spec(
        "client",
        Kind::Client,
        -2,
        &["noscript", "loading", "stale"],
        NO_KEYS,
    ),
    spec("command", Kind::Command, -1, &["loading", "stale"], NO_KEYS),
    spec(
        "config",
        Kind::Config,
        -2,
        &["admin", "noscript", "loading", "stale"],
        NO_KEYS,
    ),
    spec("copy", Kind::Copy, -3, W_OOM, TWO_KEYS),
    spec("dbsize", Kind::Dbsize, 1, R_FAST, NO_KEYS),
    spec("decr", Kind::Counter, 2, W_OOM_FAST, ONE_KEY),
    spec("decrby", Kind::Counter, 3, W_OOM_FAST, ONE_KEY),
    spec("del", Kind::Del, -2, W, ALL_KEYS),
    spec("discard", Kind::Discard, 1, TX, NO_KEYS),
    spec("echo", Kind::Echo, 2, &["fast"], NO_KEYS),
    spec(
        "exec",
        Kind::Exec,
        1,
        &["noscript", "loading", "stale", "skip_slowlog"],
        NO_KEYS,
    ),
    spec("exists", Kind::Exists, -2, R_FAST, ALL_KEYS),
    spec("expire", Kind::Expire, -3, W_FAST, ONE_KEY),
    spec("expireat", Kind::Expireat, -3, W_FAST, ONE_KEY),
    spec("expiretime", Kind::Expiretime, 2, R_FAST, ONE_KEY),
    spec("flushall", Kind::Flushall, -1, W, NO_KEYS),
    spec("flushdb", Kind::Flushall, -1, W, NO_KEYS),
    spec("get", Kind::Get, 2, R_FAST, ONE_KEY),
    spec("getdel", Kind::Getdel, 2, W_FAST, ONE_KEY),
    spec("getex", Kind::Getex, -2, W_FAST, ONE_KEY),
    spec("getrange", Kind::Getrange, 4, R, ONE_KEY),
    spec("getset", Kind::Getset, 3, W_OOM_FAST, ONE_KEY),
    spec("hdel", Kind::Hdel, -3, W_FAST, ONE_KEY),
    spec(
        "hello",
        Kind::Hello,
        -1,
        &[
            "noscript", "loading", "stale", "fast", "no_auth", "no_multi",
        ],
        NO_KEYS,
    ),
    spec("hexists", Kind::Hexists, 3, R_FAST, ONE_KEY),
    spec("hget", Kind::Hget, 3, R_FAST, ONE_KEY),
    spec("hgetall", Kind::Hgetall, 2, R, ONE_KEY),
    spec("hincrby", Kind::Hincrby, 4, W_OOM_FAST, ONE_KEY),
    spec("hincrbyfloat", Kind::Hincrbyfloat, 4, W_OOM_FAST, ONE_KEY),
    spec("hkeys", Kind::Hkeys, 2, R, ONE_KEY),
    spec("hlen", Kind::Hlen, 2, R_FAST, ONE_KEY),
    spec("hmget", Kind::Hmget, -3, R_FAST, ONE_KEY),
    spec("hmset", Kind::Hmset, -4, W_OOM_FAST, ONE_KEY),
    spec("hrandfield", Kind::Hrandfield, -2, R, ONE_KEY),
    spec("hscan", Kind::Hscan, -3, R, ONE_KEY),
    spec("hset", Kind::Hset, -4, W_OOM_FAST, ONE_KEY),
    spec("hsetnx", Kind::Hsetnx, 4, W_OOM_FAST, ONE_KEY),
    spec("hstrlen", Kind::Hstrlen, 3, R_FAST, ONE_KEY),
    spec("hvals", Kind::Hvals, 2, R, ONE_KEY),
    spec("incr", Kind::Counter, 2, W_OOM_FAST, ONE_KEY),
    spec("incrby", Kind::Counter, 3, W_OOM_FAST, ONE_KEY),
    spec("incrbyfloat", Kind::Counter, 3, W_OOM_FAST, ONE_KEY),
    spec(
        "info",
        Kind::Info,
        -1,
        &["loading", "stale", "no_multi"],
        NO_KEYS,
    ),
    spec("keys", Kind::Keys, 2, R, NO_KEYS),
    spec("memory", Kind::Memory, -2, R, NO_KEYS),
    spec("mget", Kind::Mget, -2, R_FAST, ALL_KEYS),
    spec("mset", Kind::Mset, -3, W_OOM, PAIRS),
    spec("msetnx", Kind::Msetnx, -3, W_OOM, PAIRS),
    spec("multi", Kind::Multi, 1, TX, NO_KEYS),
    spec("object", Kind::Object, -2, R, NO_KEYS),
    spec("persist", Kind::Persist, 2, W_FAST, ONE_KEY),
    spec("pexpire", Kind::Pexpire, -3, W_FAST, ONE_KEY),
    spec("pexpireat", Kind::Pexpireat, -3, W_FAST, ONE_KEY),
    spec("pexpiretime", Kind::Pexpiretime, 2, R_FAST, ONE_KEY),
    spec("ping", Kind::Ping, -1, &["fast"], NO_KEYS),
    spec("psetex", Kind::Psetex, 4, W_OOM, ONE_KEY),
    spec("psubscribe", Kind::Psubscribe, -2, PUBSUB, NO_KEYS),
    spec("pttl", Kind::Pttl, 2, R_FAST, ONE_KEY),
    spec(
        "publish",
        Kind::Publish,
        3,
        &["pubsub", "loading", "stale", "fast"],
        NO_KEYS,
    ),
    spec("pubsub", Kind::Pubsub, -2, &["loading", "stale"], NO_KEYS),
    spec("punsubscribe", Kind::Punsubscribe, -1, PUBSUB, NO_KEYS),
    spec(
        "quit",
        Kind::Quit,
        -1,
        &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        NO_KEYS,
    ),
    spec("randomkey", Kind::Randomkey, 1, R, NO_KEYS),
    spec("rename", Kind::Rename, 3, W, TWO_KEYS),
    spec("renamenx", Kind::Renamenx, 3, W_FAST, TWO_KEYS),
    spec(
        "reset",
        Kind::Reset,
        1,
        &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        NO_KEYS,
    ),
    spec("sadd", Kind::Sadd, -3, W_OOM_FAST, ONE_KEY),
    spec("scan", Kind::Scan, -2, R, NO_KEYS),
    spec("scard", Kind::Scard, 2, R_FAST, ONE_KEY),
    spec("sdiff", Kind::Sdiff, -2, R, ALL_KEYS),
    spec("sdiffstore", Kind::Sdiffstore, -3, W_OOM, ALL_KEYS),
    spec(
        "select",
        Kind::Select,
        2,
        &["loading", "stale", "fast"],
        NO_KEYS,
    ),
    spec("set", Kind::Set, -3, W_OOM, ONE_KEY),
    spec("setex", Kind::Setex, 4, W_OOM, ONE_KEY),
    spec("setnx", Kind::Setnx, 3, W_OOM_FAST, ONE_KEY),
    spec("setrange", Kind::Setrange, 4, W_OOM, ONE_KEY),
    spec(
        "shutdown",
        Kind::Shutdown,
        -1,
        &[
            "admin",
            "noscript",
            "loading",
            "stale",
            "no_multi",
            "allow_busy",
        ],
        NO_KEYS,
    ),
    spec("sinter", Kind::Sinter, -2, R, ALL_KEYS),
    spec("sintercard", Kind::Sintercard, -3, R, NO_KEYS),
    spec("sinterstore", Kind::Sinterstore, -3, W_OOM, ALL_KEYS),
    spec("sismember", Kind::Sismember, 3, R_FAST, ONE_KEY),
    spec("smembers", Kind::Smembers, 2, R, ONE_KEY),
    spec("smismember", Kind::Smismember, -3, R_FAST, ONE_KEY),
    spec("smove", Kind::Smove, 4, W_FAST, TWO_KEYS),
    spec("spop", Kind::Spop, -2, W_FAST, ONE_KEY),
    spec("srandmember", Kind::Srandmember, -2, R, ONE_KEY),
    spec("srem", Kind::Srem, -3, W_FAST, ONE_KEY),
    spec("sscan", Kind::Sscan, -3, R, ONE_KEY),
    spec("strlen", Kind::Strlen, 2, R_FAST, ONE_KEY),
    spec("subscribe", Kind::Subscribe, -2, PUBSUB, NO_KEYS),
    spec("substr", Kind::Getrange, 4, R, ONE_KEY),
    spec("sunion", Kind::Sunion, -2, R, ALL_KEYS),
    spec("sunionstore", Kind::Sunionstore, -3, W_OOM, ALL_KEYS),
    spec(
        "time",
        Kind::Time,
        1,
        &["loading", "stale", "fast"],
        NO_KEYS,
    ),
    spec("touch", Kind::Touch, -2, R_FAST, ALL_KEYS),
    spec("ttl", Kind::Ttl, 2, R_FAST, ONE_KEY),
    spec("type", Kind::Type, 2, R_FAST, ONE_KEY),
    spec("unlink", Kind::Del, -2, W_FAST, ALL_KEYS),
    spec("unsubscribe", Kind::Unsubscribe, -1, PUBSUB, NO_KEYS),
    spec("unwatch", Kind::Unwatch, 1, TX, NO_KEYS),
    spec("wait", Kind::Wait, 3, &["noscript", "no_multi"], NO_KEYS),
    spec(
        "waitaof",
        Kind::Waitaof,
        4,
        &["noscript", "no_multi"],
        NO_KEYS,
    ),
    spec("watch", Kind::Watch, -2, TX, ALL_KEYS),
];

/// The command named `name`, in any case. No allocation.
pub(crate) fn lookup(name: &[u8]) -> Option<&'static Spec> {
    let mut lower = [0u8; 16];
    if name.len() > lower.len() {
        return None;
    }
    for (l, c) in lower.iter_mut().zip(name) {
        *l = c.to_ascii_lowercase();
    }
    let lower = &lower[..name.len()];
    TABLE
        .binary_search_by(|s| s.name.as_bytes().cmp(lower))
        .ok()
        .map(|i| &TABLE[i])
}

/// Runs one request (with at least one argument) and appends its reply; tells the
/// configured observer what ran, how long it took and whether it answered an error.
pub(crate) async fn execute(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let Some(observer) = ctx.server.config.command_observer.clone() else {
        execute_request(ctx, req).await;
        return;
    };
    let started = std::time::Instant::now();
    let name = lookup(req.arg(0)).map_or("unknown", |s| s.name);
    let out_before = ctx.out.len();
    execute_request(ctx, req).await;
    // A streamed reply may have been flushed already: then its first byte is gone, and an
    // error reply (always short) was not streamed.
    let failed = ctx.out.len() > out_before && ctx.out.get(out_before) == Some(&b'-');
    observer.command(name, started.elapsed(), failed);
}

/// Runs one request, then ends what `CLIENT CACHING yes|no` set up for it.
async fn execute_request(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let kind = execute_command(ctx, req).await;
    // `CLIENT CACHING yes|no` applies to the next command, or to the whole transaction
    // that follows (Redis clears it after any command but `CLIENT`, outside `MULTI`).
    if ctx.session.multi.is_none() && kind != Some(Kind::Client) {
        ctx.session.tracking.caching = false;
    }
}

/// Runs one request; the kind of command it was, if known.
async fn execute_command(ctx: &mut Ctx<'_>, req: Request<'_>) -> Option<Kind> {
    ctx.reply_start = ctx.out.len();
    ctx.wrote = false;
    let Some(spec) = lookup(req.arg(0)) else {
        unknown_command(ctx, req);
        transaction::flag(ctx);
        return None;
    };
    execute_spec(ctx, spec, req).await;
    Some(spec.kind)
}

/// Runs a known command.
async fn execute_spec(ctx: &mut Ctx<'_>, spec: &'static Spec, req: Request<'_>) {
    note_command(ctx, spec);
    if !spec.arity_ok(req.len()) {
        ctx.wrong_arity(spec.name);
        transaction::flag(ctx);
        return;
    }
    if !ctx.session.authenticated && !spec.no_auth() {
        ctx.error("NOAUTH Authentication required.");
        transaction::flag(ctx);
        return;
    }
    if ctx.session.proto == Protocol::Resp2
        && pubsub::subscribed(ctx)
        && !pubsub::allowed_when_subscribed(spec.kind)
    {
        ctx.error(&pubsub::not_allowed_text(spec.name));
        transaction::flag(ctx);
        return;
    }
    if !admin::wait_unpaused(ctx, spec).await {
        return;
    }
    if ctx.session.multi.is_some() && !spec.runs_in_multi() {
        if spec.no_multi() {
            ctx.error("ERR Command not allowed inside a transaction");
            transaction::flag(ctx);
        } else {
            transaction::queue(ctx, spec, req);
        }
        return;
    }
    match spec.kind {
        Kind::Auth => connection::auth(ctx, req),
        Kind::Client => connection::client(ctx, req),
        Kind::Command => connection::command(ctx, req),
        Kind::Echo => connection::echo(ctx, req),
        Kind::Hello => connection::hello(ctx, req),
        Kind::Ping if ctx.session.proto == Protocol::Resp2 && pubsub::subscribed(ctx) => {
            pubsub::ping_subscribed(ctx, req);
        }
        Kind::Ping => connection::ping(ctx, req),
        Kind::Quit => connection::quit(ctx),
        Kind::Reset => pubsub::reset(ctx),
        Kind::Subscribe => pubsub::subscribe(ctx, req, false),
        Kind::Psubscribe => pubsub::subscribe(ctx, req, true),
        Kind::Unsubscribe => pubsub::unsubscribe(ctx, req, false),
        Kind::Punsubscribe => pubsub::unsubscribe(ctx, req, true),
        Kind::Publish => pubsub::publish(ctx, req),
        Kind::Pubsub => pubsub::pubsub(ctx, req),
        Kind::Select => connection::select(ctx, req),
        Kind::Info => info::info(ctx, req),
        Kind::Config => admin::config(ctx, req),
        Kind::Time => admin::time(ctx),
        Kind::Shutdown => admin::shutdown(ctx, req),
        Kind::Wait => admin::wait(ctx, req).await,
        Kind::Waitaof => admin::waitaof(ctx),
        Kind::Multi => transaction::multi(ctx),
        Kind::Exec => transaction::exec(ctx).await,
        Kind::Discard => transaction::discard(ctx),
        Kind::Watch => transaction::watch(ctx, req),
        Kind::Unwatch => transaction::unwatch(ctx),
        // Streamed: their replies go out in pieces, the lock taken a few keys at a time.
        Kind::Mget => strings::mget(ctx, req).await,
        Kind::Keys => keyspace::keys(ctx, req).await,
        Kind::Scan => keyspace::scan(ctx, req).await,
        // A tombstone per key: many short holds of the lock, not one long one.
        Kind::Flushall => keyspace::flushall(ctx, req).await,
        _ => run_on_cache(ctx, spec, req).await,
    }
    if ctx.wrote {
        ctx.batch.write_replies.push(ctx.reply_start..ctx.out.len());
    }
    note_multi(ctx);
}

/// Shows this client's transaction in `CLIENT LIST` (`multi=`, `flags=x`).
pub(crate) fn note_multi(ctx: &Ctx<'_>) {
    let queued = ctx.session.multi.as_ref().map_or(-1, |m| m.len() as i64);
    ctx.session.entry.multi.store(queued, Ordering::Relaxed);
}

/// Counts a command and notes it as this client's last (`CLIENT LIST`).
fn note_command(ctx: &mut Ctx<'_>, spec: &'static Spec) {
    ctx.server
        .stats
        .commands_processed
        .fetch_add(1, Ordering::Relaxed);
    let entry = &ctx.session.entry;
    let active = entry.connected.elapsed().as_millis() as u64;
    entry.last_active_ms.store(active, Ordering::Relaxed);
    if let Ok(mut c) = entry.last_cmd.lock() {
        *c = spec.name;
    }
}

/// Runs a command on keys against the cache: in a transaction of its own if it may write,
/// else under the read lock.
async fn run_on_cache(ctx: &mut Ctx<'_>, spec: &'static Spec, req: Request<'_>) {
    let kind = spec.kind;
    on_cache(ctx, spec.writes(), |ctx, db| {
        run_on_db(ctx, db, kind, req);
        remember_reads(ctx, db, spec, req);
    })
    .await;
}

/// The keys a command names: its key arguments as `COMMAND` describes them, and the key of
/// `OBJECT <sub> key` and `MEMORY USAGE key` (which Redis's key specs name too).
pub(crate) fn key_args<'a>(spec: &Spec, req: Request<'a>) -> Vec<&'a [u8]> {
    let n = req.len() as i64;
    if spec.first_key <= 0 {
        return match spec.kind {
            Kind::Object | Kind::Memory if n > 2 => vec![req.arg(2)],
            _ => Vec::new(),
        };
    }
    let first = i64::from(spec.first_key);
    let last = match i64::from(spec.last_key) {
        l if l < 0 => n + l,
        l => l,
    };
    let step = i64::from(spec.step).max(1);
    let mut keys = Vec::new();
    let mut i = first;
    while i <= last && i < n {
        keys.push(req.arg(i as usize));
        i += step;
    }
    keys
}

/// Client tracking (default mode): remembers the keys a read-only command read, under the
/// cache's lock the read held (see [`crate::tracking`]).
pub(crate) fn remember_reads(ctx: &Ctx<'_>, db: &dyn Db, spec: &Spec, req: Request<'_>) {
    if spec.writes() || !ctx.session.tracking.remembers_reads() {
        return;
    }
    let keys = key_args(spec, req);
    if !keys.is_empty() {
        ctx.server
            .tracking
            .remember(ctx.session.id, keys.into_iter(), db.replica(), db.now());
    }
}

/// Runs `f` against the cache under one hold of its lock: in a transaction whose writes commit
/// as one group (waited for, like any write) if `writes`, else under the read lock.
pub(crate) async fn on_cache<'a>(
    ctx: &mut Ctx<'a>,
    writes: bool,
    f: impl FnOnce(&mut Ctx<'a>, &mut dyn Db),
) {
    let server = ctx.server;
    if writes {
        let record = server.tracking.records_writers();
        match server
            .cache
            .transact(|tx| {
                if record {
                    // Some client is in NOLOOP mode: say who made these writes, under the
                    // lock that made them.
                    let mut db = Recorded {
                        tx: &mut *tx,
                        keys: Vec::new(),
                    };
                    f(ctx, &mut db);
                    server.tracking.note_local_writes(ctx.session.id, &db.keys);
                } else {
                    f(ctx, tx);
                }
                tx.replica().local_seq()
            })
            .await
        {
            Ok((seq, Some(ticket))) => ctx.wrote(ticket, seq),
            Ok((_, None)) => {}
            Err(e) => ctx.cache_error(&e),
        }
    } else {
        server.cache.with_replica(|replica| {
            let mut db = ReadOnly {
                replica,
                now: server.cache.now_ms(),
            };
            f(ctx, &mut db);
        });
    }
}

/// Runs a command on keys against `db`, synchronously (under the cache's lock). Connection
/// commands that `EXEC` may run (they touch no lock) are run here too.
pub(crate) fn run_on_db(ctx: &mut Ctx<'_>, db: &mut dyn Db, kind: Kind, req: Request<'_>) {
    // String commands on a key of another type answer WRONGTYPE, as in Redis.
    if matches!(
        kind,
        Kind::Append
            | Kind::Counter
            | Kind::Get
            | Kind::Getdel
            | Kind::Getex
            | Kind::Getrange
            | Kind::Getset
            | Kind::Setrange
            | Kind::Strlen
    ) && req.len() > 1
        && db
            .replica()
            .key_type(req.arg(1), db.now())
            .is_some_and(|t| t != dice_core::KeyType::String)
    {
        return ctx.error(WRONGTYPE);
    }
    match kind {
        Kind::Hset => hashes::hset(ctx, db, req, false),
        Kind::Hmset => hashes::hset(ctx, db, req, true),
        Kind::Hsetnx => hashes::hsetnx(ctx, db, req),
        Kind::Hget => hashes::hget(ctx, db, req),
        Kind::Hmget => hashes::hmget(ctx, db, req),
        Kind::Hdel => hashes::hdel(ctx, db, req),
        Kind::Hgetall => hashes::hgetall(ctx, db, req, hashes::Part::Both),
        Kind::Hkeys => hashes::hgetall(ctx, db, req, hashes::Part::Keys),
        Kind::Hvals => hashes::hgetall(ctx, db, req, hashes::Part::Values),
        Kind::Hlen => hashes::hlen(ctx, db, req),
        Kind::Hexists => hashes::hexists(ctx, db, req, false),
        Kind::Hstrlen => hashes::hexists(ctx, db, req, true),
        Kind::Hincrby => hashes::hincr(ctx, db, req, false),
        Kind::Hincrbyfloat => hashes::hincr(ctx, db, req, true),
        Kind::Hrandfield => hashes::hrandfield(ctx, db, req),
        Kind::Hscan => hashes::hscan(ctx, db, req),
        Kind::Sadd => sets::sadd(ctx, db, req),
        Kind::Srem => sets::srem(ctx, db, req),
        Kind::Smembers => sets::smembers(ctx, db, req),
        Kind::Sismember => sets::sismember(ctx, db, req),
        Kind::Smismember => sets::smismember(ctx, db, req),
        Kind::Scard => sets::scard(ctx, db, req),
        Kind::Spop => sets::spop(ctx, db, req),
        Kind::Srandmember => sets::srandmember(ctx, db, req),
        Kind::Sscan => sets::sscan(ctx, db, req),
        Kind::Sinter => sets::combine_cmd(ctx, db, req, sets::Op::Inter),
        Kind::Sunion => sets::combine_cmd(ctx, db, req, sets::Op::Union),
        Kind::Sdiff => sets::combine_cmd(ctx, db, req, sets::Op::Diff),
        Kind::Sinterstore => sets::store(ctx, db, req, sets::Op::Inter),
        Kind::Sunionstore => sets::store(ctx, db, req, sets::Op::Union),
        Kind::Sdiffstore => sets::store(ctx, db, req, sets::Op::Diff),
        Kind::Sintercard => sets::sintercard(ctx, db, req),
        Kind::Smove => sets::smove(ctx, db, req),
        Kind::Client => connection::client(ctx, req),
        Kind::Command => connection::command(ctx, req),
        Kind::Echo => connection::echo(ctx, req),
        Kind::Ping => connection::ping(ctx, req),
        Kind::Select => connection::select(ctx, req),
        Kind::Config => admin::config(ctx, req),
        Kind::Time => admin::time(ctx),
        Kind::Publish => pubsub::publish(ctx, req),
        Kind::Pubsub => pubsub::pubsub(ctx, req),
        Kind::Append => strings::append(ctx, db, req),
        Kind::Counter => strings::counter(ctx, db, req),
        Kind::Get => strings::get(ctx, db, req),
        Kind::Getdel => strings::getdel(ctx, db, req),
        Kind::Getex => strings::getex(ctx, db, req),
        Kind::Getrange => strings::getrange(ctx, db, req),
        Kind::Getset => strings::getset(ctx, db, req),
        Kind::Mget => strings::mget_db(ctx, db, req),
        Kind::Mset => strings::mset(ctx, db, req, false),
        Kind::Msetnx => strings::mset(ctx, db, req, true),
        Kind::Psetex => strings::setex(ctx, db, req, 1, "psetex"),
        Kind::Set => strings::set(ctx, db, req),
        Kind::Setex => strings::setex(ctx, db, req, 1000, "setex"),
        Kind::Setnx => strings::setnx(ctx, db, req),
        Kind::Setrange => strings::setrange(ctx, db, req),
        Kind::Strlen => strings::strlen(ctx, db, req),
        Kind::Copy => keyspace::copy(ctx, db, req),
        Kind::Dbsize => keyspace::dbsize(ctx, db),
        Kind::Del => keyspace::del(ctx, db, req),
        Kind::Exists => keyspace::exists(ctx, db, req),
        Kind::Expire => keyspace::expire(ctx, db, req, 1000, false, "expire"),
        Kind::Pexpire => keyspace::expire(ctx, db, req, 1, false, "pexpire"),
        Kind::Expireat => keyspace::expire(ctx, db, req, 1000, true, "expireat"),
        Kind::Pexpireat => keyspace::expire(ctx, db, req, 1, true, "pexpireat"),
        Kind::Expiretime => keyspace::expiretime(ctx, db, req, false),
        Kind::Pexpiretime => keyspace::expiretime(ctx, db, req, true),
        Kind::Flushall => keyspace::flushall_db(ctx, db, req),
        Kind::Keys => keyspace::keys_db(ctx, db, req),
        Kind::Memory => keyspace::memory(ctx, db, req),
        Kind::Object => keyspace::object(ctx, db, req),
        Kind::Persist => keyspace::persist(ctx, db, req),
        Kind::Ttl => keyspace::ttl(ctx, db, req, false),
        Kind::Pttl => keyspace::ttl(ctx, db, req, true),
        Kind::Randomkey => keyspace::randomkey(ctx, db),
        Kind::Rename => keyspace::rename(ctx, db, req, false),
        Kind::Renamenx => keyspace::rename(ctx, db, req, true),
        Kind::Scan => keyspace::scan_db(ctx, db, req),
        Kind::Touch => keyspace::exists(ctx, db, req),
        Kind::Type => keyspace::type_of(ctx, db, req),
        // Never queued (no_multi, or run at once in MULTI) and dispatched before.
        Kind::Auth
        | Kind::Hello
        | Kind::Shutdown
        | Kind::Wait
        | Kind::Waitaof
        | Kind::Info
        | Kind::Quit
        | Kind::Multi
        | Kind::Exec
        | Kind::Discard
        | Kind::Watch
        | Kind::Reset
        | Kind::Subscribe
        | Kind::Psubscribe
        | Kind::Unsubscribe
        | Kind::Punsubscribe => ctx.error("ERR Command not allowed inside a transaction"),
        // Queued in a transaction: EXEC has already dropped the watched keys.
        Kind::Unwatch => crate::frame::write_simple(ctx.out, "OK"),
    }
}

/// `ERR unknown command 'FOO', with args beginning with: 'a' 'b' `, as Redis 7 words it.
fn unknown_command(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let mut text = String::from("ERR unknown command '");
    text.push_str(&truncated(req.arg(0), 128));
    text.push_str("', with args beginning with: ");
    let mut args = String::new();
    for a in req.args().skip(1) {
        if args.len() >= 128 {
            break;
        }
        args.push('\'');
        args.push_str(&truncated(a, 128 - args.len()));
        args.push_str("' ");
    }
    text.push_str(&args);
    ctx.error(&text);
}

/// Up to `max` bytes of `bytes`, as text (invalid UTF-8 shown as U+FFFD).
pub(crate) fn truncated(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned()
}

/// The cursor of `HSCAN` and `SSCAN`: a decimal `u64`.
pub(crate) fn parse_scan_cursor(arg: &[u8]) -> Option<u64> {
    std::str::from_utf8(arg).ok()?.parse::<u64>().ok()
}

/// Whether `arg` equals `word` (lowercase ASCII) in any case.
pub(crate) fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// An absolute expiry in milliseconds since the epoch from a command argument `amount` in
/// units of `unit_ms`, relative to `now_ms` unless `absolute`. `None` on overflow (Redis's
/// "invalid expire time").
pub(crate) fn expiry_ms(amount: i64, unit_ms: i64, absolute: bool, now_ms: i64) -> Option<i64> {
    let ms = amount.checked_mul(unit_ms)?;
    if absolute {
        Some(ms)
    } else {
        ms.checked_add(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_found() {
        for w in TABLE.windows(2) {
            assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
        }
        for s in TABLE {
            assert!(std::ptr::eq(
                lookup(s.name.to_uppercase().as_bytes()).expect("found"),
                s
            ));
        }
        assert!(lookup(b"nosuchcommand").is_none());
        assert!(lookup(b"averyveryverylongcommandname").is_none());
    }

    #[test]
    fn arity() {
        let get = lookup(b"get").expect("get");
        assert!(get.arity_ok(2) && !get.arity_ok(1) && !get.arity_ok(3));
        let set = lookup(b"set").expect("set");
        assert!(set.arity_ok(3) && set.arity_ok(9) && !set.arity_ok(2));
    }
}
