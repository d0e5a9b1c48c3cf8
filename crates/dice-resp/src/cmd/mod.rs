//! Commands: the table of what dice answers, argument checks shared by every command, and
//! dispatch to one module per family ([`connection`], [`strings`], [`keyspace`], [`info`]).
//!
//! A command reads its arguments from the [`Request`], applies itself to the cache and
//! appends its reply to the connection's output buffer. Writes go through
//! [`dice_core::Cache::write_unacked`] (or its read-modify-write form) and report their commit
//! generation to the [`Batch`]; the connection waits for the highest one once before it sends
//! the batch's replies.

pub(crate) mod connection;
pub(crate) mod info;
pub(crate) mod keyspace;
pub(crate) mod strings;

use crate::frame::{Protocol, Request, write_error, write_null};
use crate::server::{OUTPUT_FLUSH_AT, ServerState, Wire, send};
use std::ops::Range;

/// Redis's error texts that several commands share.
pub(crate) const SYNTAX_ERROR: &str = "ERR syntax error";
pub(crate) const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

/// What one connection knows about its client.
#[derive(Debug)]
pub(crate) struct Session {
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
}

/// The writes made while answering one batch of requests.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// The highest commit generation of a write in the batch (0: none).
    pub max_generation: u64,
    /// The byte ranges of the output holding replies to commands that wrote: if the commit
    /// fails they are replaced by the error.
    pub write_replies: Vec<Range<usize>>,
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
}

impl<'a> Ctx<'a> {
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

    /// Records a write of the current command, made durable by commit `generation`.
    pub fn wrote(&mut self, generation: u64) {
        self.wrote = true;
        self.batch.max_generation = self.batch.max_generation.max(generation);
    }

    /// Records the commit generation of a conditional write, when the update made one.
    pub fn wrote_if_any<T>(&mut self, written: &Option<(T, u64)>) {
        if let Some((_, generation)) = written {
            self.wrote(*generation);
        }
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
        let text = match e {
            // Redis's code for "writes are refused because the server cannot persist".
            dice_core::Error::WritesRefused(why) => format!(
                "MISCONF dice cannot persist to disk, so writes are refused (reads go on): {why}"
            ),
            e => format!("ERR {e}"),
        };
        write_error(self.out, &text);
    }

    /// Appends `ERR wrong number of arguments for '<name>' command`.
    pub fn wrong_arity(&mut self, name: &str) {
        let text = format!("ERR wrong number of arguments for '{name}' command");
        write_error(self.out, &text);
    }
}

/// Which handler runs a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Auth,
    Client,
    Command,
    Dbsize,
    Del,
    Echo,
    Exists,
    Expire,
    Expireat,
    Flushall,
    Get,
    Getdel,
    Hello,
    Info,
    Keys,
    Mget,
    Mset,
    Persist,
    Pexpire,
    Pexpireat,
    Ping,
    Psetex,
    Pttl,
    Quit,
    Scan,
    Select,
    Set,
    Setex,
    Ttl,
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
        matches!(self.kind, Kind::Auth | Kind::Hello | Kind::Quit)
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
const ALL_KEYS: (i32, i32, i32) = (1, -1, 1);

/// Every command, sorted by name (binary-searched).
pub(crate) static TABLE: &[Spec] = &[
    spec(
        "auth",
        Kind::Auth,
        -2,
        &["noscript", "loading", "stale", "fast", "no_auth"],
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
    spec("dbsize", Kind::Dbsize, 1, &["readonly", "fast"], NO_KEYS),
    spec("del", Kind::Del, -2, &["write"], ALL_KEYS),
    spec("echo", Kind::Echo, 2, &["fast"], NO_KEYS),
    spec("exists", Kind::Exists, -2, &["readonly", "fast"], ALL_KEYS),
    spec("expire", Kind::Expire, -3, &["write", "fast"], ONE_KEY),
    spec("expireat", Kind::Expireat, -3, &["write", "fast"], ONE_KEY),
    spec("flushall", Kind::Flushall, -1, &["write"], NO_KEYS),
    spec("flushdb", Kind::Flushall, -1, &["write"], NO_KEYS),
    spec("get", Kind::Get, 2, &["readonly", "fast"], ONE_KEY),
    spec("getdel", Kind::Getdel, 2, &["write", "fast"], ONE_KEY),
    spec(
        "hello",
        Kind::Hello,
        -1,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        NO_KEYS,
    ),
    spec("info", Kind::Info, -1, &["loading", "stale"], NO_KEYS),
    spec("keys", Kind::Keys, 2, &["readonly"], NO_KEYS),
    spec("mget", Kind::Mget, -2, &["readonly", "fast"], ALL_KEYS),
    spec("mset", Kind::Mset, -3, &["write", "denyoom"], (1, -1, 2)),
    spec("persist", Kind::Persist, 2, &["write", "fast"], ONE_KEY),
    spec("pexpire", Kind::Pexpire, -3, &["write", "fast"], ONE_KEY),
    spec(
        "pexpireat",
        Kind::Pexpireat,
        -3,
        &["write", "fast"],
        ONE_KEY,
    ),
    spec("ping", Kind::Ping, -1, &["fast"], NO_KEYS),
    spec("psetex", Kind::Psetex, 4, &["write", "denyoom"], ONE_KEY),
    spec("pttl", Kind::Pttl, 2, &["readonly", "fast"], ONE_KEY),
    spec(
        "quit",
        Kind::Quit,
        -1,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        NO_KEYS,
    ),
    spec("scan", Kind::Scan, -2, &["readonly"], NO_KEYS),
    spec(
        "select",
        Kind::Select,
        2,
        &["loading", "stale", "fast"],
        NO_KEYS,
    ),
    spec("set", Kind::Set, -3, &["write", "denyoom"], ONE_KEY),
    spec("setex", Kind::Setex, 4, &["write", "denyoom"], ONE_KEY),
    spec("ttl", Kind::Ttl, 2, &["readonly", "fast"], ONE_KEY),
    spec("unlink", Kind::Del, -2, &["write", "fast"], ALL_KEYS),
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

/// Runs one request (with at least one argument) and appends its reply.
pub(crate) async fn execute(ctx: &mut Ctx<'_>, req: Request<'_>) {
    ctx.reply_start = ctx.out.len();
    ctx.wrote = false;
    let Some(spec) = lookup(req.arg(0)) else {
        unknown_command(ctx, req);
        return;
    };
    if !spec.arity_ok(req.len()) {
        ctx.wrong_arity(spec.name);
        return;
    }
    if !ctx.session.authenticated && !spec.no_auth() {
        ctx.error("NOAUTH Authentication required.");
        return;
    }
    match spec.kind {
        Kind::Auth => connection::auth(ctx, req),
        Kind::Client => connection::client(ctx, req),
        Kind::Command => connection::command(ctx, req),
        Kind::Echo => connection::echo(ctx, req),
        Kind::Hello => connection::hello(ctx, req),
        Kind::Ping => connection::ping(ctx, req),
        Kind::Quit => connection::quit(ctx),
        Kind::Select => connection::select(ctx, req),
        Kind::Info => info::info(ctx, req),
        Kind::Get => strings::get(ctx, req),
        Kind::Set => strings::set(ctx, req).await,
        Kind::Setex => strings::setex(ctx, req, 1000, "setex").await,
        Kind::Psetex => strings::setex(ctx, req, 1, "psetex").await,
        Kind::Getdel => strings::getdel(ctx, req).await,
        Kind::Mget => strings::mget(ctx, req).await,
        Kind::Mset => strings::mset(ctx, req).await,
        Kind::Del => keyspace::del(ctx, req).await,
        Kind::Exists => keyspace::exists(ctx, req),
        Kind::Expire => keyspace::expire(ctx, req, 1000, false, "expire").await,
        Kind::Pexpire => keyspace::expire(ctx, req, 1, false, "pexpire").await,
        Kind::Expireat => keyspace::expire(ctx, req, 1000, true, "expireat").await,
        Kind::Pexpireat => keyspace::expire(ctx, req, 1, true, "pexpireat").await,
        Kind::Ttl => keyspace::ttl(ctx, req, false),
        Kind::Pttl => keyspace::ttl(ctx, req, true),
        Kind::Persist => keyspace::persist(ctx, req).await,
        Kind::Keys => keyspace::keys(ctx, req).await,
        Kind::Scan => keyspace::scan(ctx, req).await,
        Kind::Dbsize => keyspace::dbsize(ctx),
        Kind::Flushall => keyspace::flushall(ctx, req).await,
    }
    if ctx.wrote {
        ctx.batch.write_replies.push(ctx.reply_start..ctx.out.len());
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

/// The current time as Redis's signed milliseconds.
pub(crate) fn now_ms() -> i64 {
    i64::try_from(dice_core::now_ms()).unwrap_or(i64::MAX)
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
