//! Keyspace commands: `DEL`, `UNLINK`, `EXISTS`, `TOUCH`, `EXPIRE`, `PEXPIRE`, `EXPIREAT`,
//! `PEXPIREAT`, `EXPIRETIME`, `PEXPIRETIME`, `TTL`, `PTTL`, `PERSIST`, `TYPE`, `RENAME`,
//! `RENAMENX`, `COPY`, `RANDOMKEY`, `OBJECT`, `MEMORY USAGE`, `KEYS`, `SCAN`, `DBSIZE`,
//! `FLUSHALL`.

use super::{Ctx, Db, NOT_AN_INTEGER, SYNTAX_ERROR, expiry_ms, is, truncated};
use crate::frame::{Request, parse_i64, write_array_len, write_bulk, write_integer, write_simple};
use crate::glob::glob_match;
use bytes::Bytes;
use dice_core::{KeyType, Replica};
use std::collections::BinaryHeap;

/// Whether `key` could be stored at all (keys past the limits, or empty, never exist).
fn storable(db: &dyn Db, key: &[u8]) -> bool {
    db.replica().limits().check(key, None).is_ok()
}

/// `DEL key [key ...]` and `UNLINK`: the number of keys that were present here. Each key
/// gets a tombstone even if absent here, so the delete also wins over older writes that
/// have not reached this node yet. All under one hold of the lock.
pub(crate) fn del(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let mut deleted = 0;
    for key in req.args().skip(1) {
        if !storable(db, key) {
            continue;
        }
        match remove_observed(db, key) {
            Ok(existed) => deleted += i64::from(existed),
            Err(e) => return ctx.cache_error(&e),
        }
    }
    write_integer(ctx.out, deleted);
}

/// Removes everything of `key` this node observed, of every type
/// ([`dice_core::Replica::remove_observed`]); whether it was present.
pub(crate) fn remove_observed(db: &mut dyn Db, key: &[u8]) -> dice_core::Result<bool> {
    let mut existed = false;
    let owned = Bytes::copy_from_slice(key);
    db.modify(owned.clone(), &mut |r, now| {
        existed = r.remove_observed(owned.clone(), now)?;
        Ok(())
    })?;
    Ok(existed)
}

/// Whether `key` is a hash.
fn is_hash(db: &dyn Db, key: &[u8]) -> bool {
    db.replica().key_type(key, db.now()) == Some(KeyType::Hash)
}

/// Whether `key` is a set.
fn is_set(db: &dyn Db, key: &[u8]) -> bool {
    db.replica().key_type(key, db.now()) == Some(KeyType::Set)
}

/// Sets the expiry of the set `key` (every member added again with it).
fn expire_set(db: &mut dyn Db, key: &[u8], at: Option<u64>) -> dice_core::Result<()> {
    let owned = Bytes::copy_from_slice(key);
    db.modify(owned.clone(), &mut |r, now| {
        r.expire_set(owned.clone(), at, now).map(|_| ())
    })
}

/// Copies the set `from` over `to` (whatever `to` held goes, as observed), with its expiry.
fn copy_set(db: &mut dyn Db, from: &[u8], to: &[u8]) -> dice_core::Result<()> {
    let (r, now) = (db.replica(), db.now());
    let members: Vec<Bytes> = r
        .smembers(from, now)?
        .into_iter()
        .map(Bytes::copy_from_slice)
        .collect();
    let expiry = r.key_expiry(from, now).flatten();
    let to = Bytes::copy_from_slice(to);
    db.modify(to.clone(), &mut |r, now| {
        r.remove_observed(to.clone(), now)?;
        r.sadd(to.clone(), &members, now)?;
        if expiry.is_some() {
            r.expire_set(to.clone(), expiry, now)?;
        }
        Ok(())
    })
}

/// Sets the expiry of the hash `key` (every field written again with it).
fn expire_hash(db: &mut dyn Db, key: &[u8], at: Option<u64>) -> dice_core::Result<()> {
    let owned = Bytes::copy_from_slice(key);
    db.modify(owned.clone(), &mut |r, now| {
        r.expire_hash(owned.clone(), at, now).map(|_| ())
    })
}

/// `EXISTS key [key ...]` (and `TOUCH`): how many of the keys are present, a key named
/// twice counting twice.
pub(crate) fn exists(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let n = req.args().skip(1).filter(|k| db.exists(k)).count();
    write_integer(ctx.out, n as i64);
}

/// `EXPIRE key seconds [NX | XX | GT | LT]` and its `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`
/// forms: 1 if the expiry was set, 0 if the key is absent or the condition failed. An
/// expiry not in the future deletes the key. The new expiry is a new write of the value.
pub(crate) fn expire(
    ctx: &mut Ctx<'_>,
    db: &mut dyn Db,
    req: Request<'_>,
    unit_ms: i64,
    absolute: bool,
    command: &str,
) {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in req.args().skip(3) {
        if is(opt, "nx") {
            nx = true;
        } else if is(opt, "xx") {
            xx = true;
        } else if is(opt, "gt") {
            gt = true;
        } else if is(opt, "lt") {
            lt = true;
        } else {
            let text = format!("ERR Unsupported option {}", truncated(opt, 128));
            return ctx.error(&text);
        }
    }
    if nx && (xx || gt || lt) {
        return ctx.error("ERR NX and XX, GT or LT options at the same time are not compatible");
    }
    if gt && lt {
        return ctx.error("ERR GT and LT options at the same time are not compatible");
    }
    let Some(amount) = parse_i64(req.arg(2)) else {
        return ctx.error(NOT_AN_INTEGER);
    };
    let now = ctx.now_ms();
    let Some(when) = expiry_ms(amount, unit_ms, absolute, now) else {
        let text = format!("ERR invalid expire time in '{command}' command");
        return ctx.error(&text);
    };
    let key = req.arg(1);
    let Some(expires) = db.replica().key_expiry(key, db.now()) else {
        return write_integer(ctx.out, 0);
    };
    // A key with no expiry counts as an infinite one for GT and LT, as in Redis.
    let allowed = match expires.map(|t| t as i64) {
        Some(t) => !(nx || (gt && when <= t) || (lt && when >= t)),
        None => !xx && !gt,
    };
    if !allowed {
        return write_integer(ctx.out, 0);
    }
    if is_hash(db, key) || is_set(db, key) {
        let done = if when <= now {
            remove_observed(db, key).map(|_| ())
        } else if is_set(db, key) {
            expire_set(db, key, Some(when as u64))
        } else {
            expire_hash(db, key, Some(when as u64))
        };
        return match done {
            Ok(()) => write_integer(ctx.out, 1),
            Err(e) => ctx.cache_error(&e),
        };
    }
    let Some((value, _)) = db.get_with_expiry(key) else {
        return write_integer(ctx.out, 0);
    };
    let write = if when <= now {
        (None, None)
    } else {
        (Some(value), Some(when as u64))
    };
    match db.write(Bytes::copy_from_slice(key), write.0, write.1) {
        Ok(()) => write_integer(ctx.out, 1),
        Err(e) => ctx.cache_error(&e),
    }
}

/// `TTL key` (seconds, rounded like Redis) and `PTTL key` (milliseconds): -2 if the key is
/// absent, -1 if it has no expiry.
pub(crate) fn ttl(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>, millis: bool) {
    let reply = match db.replica().key_expiry(req.arg(1), db.now()) {
        None => -2,
        Some(None) => -1,
        Some(Some(at)) => {
            let left = (at as i64).saturating_sub(db.now() as i64).max(0);
            if millis { left } else { (left + 500) / 1000 }
        }
    };
    write_integer(ctx.out, reply);
}

/// `EXPIRETIME key` (Unix seconds) and `PEXPIRETIME key` (milliseconds): -2 if absent, -1
/// if the key has no expiry.
pub(crate) fn expiretime(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>, millis: bool) {
    let reply = match db.replica().key_expiry(req.arg(1), db.now()) {
        None => -2,
        Some(None) => -1,
        Some(Some(at)) => {
            let at = at as i64;
            if millis { at } else { at / 1000 }
        }
    };
    write_integer(ctx.out, reply);
}

/// `PERSIST key`: 1 if an expiry was removed (a new write of the value with none).
pub(crate) fn persist(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let key = req.arg(1);
    if is_hash(db, key) || is_set(db, key) {
        if db.replica().key_expiry(key, db.now()).flatten().is_none() {
            return write_integer(ctx.out, 0);
        }
        let done = if is_set(db, key) {
            expire_set(db, key, None)
        } else {
            expire_hash(db, key, None)
        };
        return match done {
            Ok(()) => write_integer(ctx.out, 1),
            Err(e) => ctx.cache_error(&e),
        };
    }
    let Some((value, Some(_))) = db.get_with_expiry(key) else {
        return write_integer(ctx.out, 0);
    };
    match db.write(Bytes::copy_from_slice(key), Some(value), None) {
        Ok(()) => write_integer(ctx.out, 1),
        Err(e) => ctx.cache_error(&e),
    }
}

/// `TYPE key`: `string`, `hash`, `set`, or `none` if absent.
pub(crate) fn type_of(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let t = db
        .replica()
        .key_type(req.arg(1), db.now())
        .map_or("none", KeyType::name);
    write_simple(ctx.out, t);
}

/// Copies the hash `from` over `to` (whatever `to` held goes, as observed), with its
/// expiry: `to` gets a field element per field.
fn copy_hash(db: &mut dyn Db, from: &[u8], to: &[u8]) -> dice_core::Result<()> {
    let (r, now) = (db.replica(), db.now());
    let fields: Vec<(Bytes, Bytes)> = r
        .hash_fields(from, now)?
        .into_iter()
        .map(|(n, v)| (Bytes::copy_from_slice(n), Bytes::copy_from_slice(v)))
        .collect();
    let expiry = r.key_expiry(from, now).flatten();
    let to = Bytes::copy_from_slice(to);
    db.modify(to.clone(), &mut |r, now| {
        r.remove_observed(to.clone(), now)?;
        r.hset(to.clone(), &fields, false, now)?;
        if expiry.is_some() {
            r.expire_hash(to.clone(), expiry, now)?;
        }
        Ok(())
    })
}

/// `RENAME key newkey` and `RENAMENX` (`nx`: only if `newkey` is absent here; 1 or 0): a
/// write of the value (and its expiry) under the new name and a tombstone under the old,
/// both under one hold of the lock. On other nodes the two are ordinary writes.
pub(crate) fn rename(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>, nx: bool) {
    let (from, to) = (req.arg(1), req.arg(2));
    if !db.exists(from) {
        return ctx.error("ERR no such key");
    }
    if from == to {
        return if nx {
            write_integer(ctx.out, 0)
        } else {
            write_simple(ctx.out, "OK")
        };
    }
    if nx && db.exists(to) {
        return write_integer(ctx.out, 0);
    }
    if is_set(db, from) {
        let done = copy_set(db, from, to).and_then(|()| remove_observed(db, from).map(|_| ()));
        return match done {
            Ok(()) if nx => write_integer(ctx.out, 1),
            Ok(()) => write_simple(ctx.out, "OK"),
            Err(e) => ctx.cache_error(&e),
        };
    }
    if is_hash(db, from) {
        let done = copy_hash(db, from, to).and_then(|()| remove_observed(db, from).map(|_| ()));
        return match done {
            Ok(()) if nx => write_integer(ctx.out, 1),
            Ok(()) => write_simple(ctx.out, "OK"),
            Err(e) => ctx.cache_error(&e),
        };
    }
    let Some((value, expires)) = db.get_with_expiry(from) else {
        return ctx.error("ERR no such key");
    };
    let written = db
        .write(Bytes::copy_from_slice(to), Some(value), expires)
        .and_then(|()| db.write(Bytes::copy_from_slice(from), None, None));
    match written {
        Ok(()) if nx => write_integer(ctx.out, 1),
        Ok(()) => write_simple(ctx.out, "OK"),
        Err(e) => ctx.cache_error(&e),
    }
}

/// `COPY source destination [DB 0] [REPLACE]`: 1 if copied (with the expiry), 0 if the
/// source is absent or the destination present without `REPLACE`.
pub(crate) fn copy(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let mut replace = false;
    let mut j = 3;
    while j < req.len() {
        let opt = req.arg(j);
        if is(opt, "replace") {
            replace = true;
        } else if is(opt, "db") && j + 1 < req.len() {
            match parse_i64(req.arg(j + 1)) {
                None => return ctx.error(NOT_AN_INTEGER),
                Some(0) => {}
                Some(_) => return ctx.error("ERR DB index is out of range"),
            }
            j += 1;
        } else {
            return ctx.error(SYNTAX_ERROR);
        }
        j += 1;
    }
    let (from, to) = (req.arg(1), req.arg(2));
    if from == to {
        return ctx.error("ERR source and destination objects are the same");
    }
    if !db.exists(from) || (!replace && db.exists(to)) {
        return write_integer(ctx.out, 0);
    }
    if is_set(db, from) {
        return match db.room().and_then(|()| copy_set(db, from, to)) {
            Ok(()) => write_integer(ctx.out, 1),
            Err(e) => ctx.cache_error(&e),
        };
    }
    if is_hash(db, from) {
        return match db.room().and_then(|()| copy_hash(db, from, to)) {
            Ok(()) => write_integer(ctx.out, 1),
            Err(e) => ctx.cache_error(&e),
        };
    }
    let Some((value, expires)) = db.get_with_expiry(from) else {
        return write_integer(ctx.out, 0);
    };
    match db.write(Bytes::copy_from_slice(to), Some(value), expires) {
        Ok(()) => write_integer(ctx.out, 1),
        Err(e) => ctx.cache_error(&e),
    }
}

/// A pseudo-random `u64` (not for secrets): the hash of the clock and a counter.
pub(crate) fn random_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    xxhash_rust::xxh3::xxh3_64(&[nanos.to_le_bytes(), n.to_le_bytes()].concat())
}

/// `RANDOMKEY`: a live key, or null if there is none. The key whose [`scan_hash`] follows
/// a random point (one walk of the map: O(n), unlike Redis).
pub(crate) fn randomkey(ctx: &mut Ctx<'_>, db: &mut dyn Db) {
    let point = random_u64();
    let now = db.now();
    let mut after: Option<(u64, &[u8])> = None;
    let mut first: Option<(u64, &[u8])> = None;
    for key in db.replica().live_keys(now) {
        let h = scan_hash(key);
        if h >= point && after.is_none_or(|(b, _)| h < b) {
            after = Some((h, key));
        }
        if first.is_none_or(|(b, _)| h < b) {
            first = Some((h, key));
        }
    }
    match after.or(first) {
        Some((_, key)) => write_bulk(ctx.out, key),
        None => ctx.null(),
    }
}

/// The encoding Redis would report for a string value.
fn encoding(value: &[u8]) -> &'static str {
    let int = value.len() <= 20
        && std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .is_some_and(|n| n.to_string().as_bytes() == value);
    if int {
        "int"
    } else if value.len() <= 44 {
        "embstr"
    } else {
        "raw"
    }
}

const OBJECT_HELP: &[&str] = &[
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Print this help.",
];

const MEMORY_HELP: &[&str] = &[
    "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "USAGE <key> [SAMPLES <count>]",
    "    Return memory in bytes used by <key> and its value. Nested values are",
    "    sampled up to <count> times (default: 5, 0 means sample all).",
    "HELP",
    "    Print this help.",
];

fn write_help(ctx: &mut Ctx<'_>, lines: &[&str]) {
    write_array_len(ctx.out, lines.len());
    for l in lines {
        write_simple(ctx.out, l);
    }
}

/// `OBJECT ENCODING | FREQ | IDLETIME | REFCOUNT key` and `OBJECT HELP`. `IDLETIME` is the
/// time since the key was last written (by any node). `FREQ` is the LFU counter eviction
/// ranks the key by under an LFU policy (Redis's logarithmic counter, decayed; keys sharing
/// a slot of the access table share it), and Redis's error under any other policy.
pub(crate) fn object(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let sub = req.arg(1);
    if is(sub, "help") {
        if req.len() != 2 {
            return ctx.wrong_arity("object|help");
        }
        return write_help(ctx, OBJECT_HELP);
    }
    let name = ["encoding", "freq", "idletime", "refcount"]
        .into_iter()
        .find(|n| is(sub, n));
    let Some(name) = name else {
        return super::connection::unknown_subcommand(ctx, sub, "OBJECT");
    };
    if req.len() != 3 {
        return ctx.wrong_arity(&format!("object|{name}"));
    }
    let key = req.arg(2);
    if !db.exists(key) {
        return ctx.null();
    }
    match name {
        "encoding" => {
            // A hash is a field element each: Redis's name for a hash of any size.
            let e = db.get(key).map_or("hashtable", encoding);
            write_bulk(ctx.out, e.as_bytes());
        }
        "freq" => match db.replica().access_frequency(key, db.now()) {
            Some(f) => write_integer(ctx.out, i64::from(f)),
            None => ctx.error(
            "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please              note that when switching between policies at runtime LRU and LFU data will take              some time to adjust.",
            ),
        },
        "idletime" => {
            let written = db
                .replica()
                .entry(key)
                .map_or(0, |e| e.version.hlc.physical_ms());
            let idle = db.now().saturating_sub(written) / 1000;
            write_integer(ctx.out, idle as i64);
        }
        _ => write_integer(ctx.out, 1),
    }
}

/// `MEMORY USAGE key [SAMPLES count]` (the bytes the entry takes in the map: its key, its
/// value and a fixed header) and `MEMORY HELP`.
pub(crate) fn memory(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let sub = req.arg(1);
    if is(sub, "help") {
        if req.len() != 2 {
            return ctx.wrong_arity("memory|help");
        }
        return write_help(ctx, MEMORY_HELP);
    }
    if !is(sub, "usage") {
        return super::connection::unknown_subcommand(ctx, sub, "MEMORY");
    }
    match req.len() {
        3 => {}
        5 if is(req.arg(3), "samples") => {
            if parse_i64(req.arg(4)).is_none_or(|n| n < 0) {
                return ctx.error(NOT_AN_INTEGER);
            }
        }
        n if n < 3 => return ctx.wrong_arity("memory|usage"),
        _ => return ctx.error(SYNTAX_ERROR),
    }
    let key = req.arg(2);
    match db.get(key) {
        // The packed record (a 40-byte header, the key, the value), its map slot and the
        // allocator's rounding, about.
        Some(v) => write_integer(ctx.out, (40 + key.len() + v.len() + 24) as i64),
        None => ctx.null(),
    }
}

/// `KEYS pattern`: every live key matching the glob. The matching keys are collected in
/// one walk of the map under the read lock (keys only: no value is copied), then the reply
/// is streamed, sent whenever it passes the flush size.
pub(crate) async fn keys(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let pattern = req.arg(1);
    let all = pattern == b"*";
    let now = ctx.server.cache.now_ms();
    let keys: Vec<Bytes> = ctx.server.cache.with_replica(|r| {
        r.live_keys(now)
            .filter(|k| all || glob_match(pattern, k))
            .map(Bytes::copy_from_slice)
            .collect()
    });
    write_array_len(ctx.out, keys.len());
    write_keys(ctx, keys.iter()).await;
}

/// `KEYS` in an `EXEC`: the whole reply at once, within the EXEC's bound.
pub(crate) fn keys_db(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let pattern = req.arg(1);
    let all = pattern == b"*";
    let r = db.replica();
    let matching = || {
        r.live_keys(db.now())
            .filter(|k| all || glob_match(pattern, k))
    };
    write_array_len(ctx.out, matching().count());
    for k in matching() {
        if !ctx.fits(k.len()) {
            return ctx.too_big();
        }
        write_bulk(ctx.out, k);
    }
}

/// Appends `keys` as bulk strings, sending the reply whenever it passes the flush size.
async fn write_keys<'k>(ctx: &mut Ctx<'_>, keys: impl Iterator<Item = &'k Bytes>) {
    for k in keys {
        write_bulk(ctx.out, k);
        if !ctx.flush_if_full().await {
            return;
        }
    }
}

/// The hash that orders keys for `SCAN`; its cursor is the next hash to start from.
pub(crate) fn scan_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// One `SCAN` page: the live keys whose [`scan_hash`] is at least `cursor`, the `count`
/// smallest hashes of them (plus any key sharing the last hash), and the cursor to continue
/// from (0 when done). A key present during a whole scan is returned: its hash lies in
/// exactly one page's range whatever else changes.
pub(crate) fn scan_page(
    replica: &Replica,
    now: u64,
    cursor: u64,
    count: usize,
) -> (u64, Vec<Bytes>) {
    let count = count.max(1);
    // First pass: the count-th smallest hash at or above the cursor (hashes only, cheap).
    let mut smallest: BinaryHeap<u64> = BinaryHeap::with_capacity(count.min(1 << 16) + 1);
    for key in replica.live_keys(now) {
        let h = scan_hash(key);
        if h < cursor {
            continue;
        }
        if smallest.len() < count {
            smallest.push(h);
        } else if smallest.peek().is_some_and(|&top| h < top) {
            smallest.pop();
            smallest.push(h);
        }
    }
    let (last, next) = match smallest.peek() {
        Some(&top) if smallest.len() >= count => (top, top.checked_add(1).unwrap_or(0)),
        _ => (u64::MAX, 0),
    };
    // Second pass: every key in [cursor, last], ties on the last hash included.
    let mut page: Vec<(u64, Bytes)> = replica
        .live_keys(now)
        .filter_map(|key| {
            let h = scan_hash(key);
            (cursor <= h && h <= last).then(|| (h, Bytes::copy_from_slice(key)))
        })
        .collect();
    page.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    (next, page.into_iter().map(|(_, k)| k).collect())
}

/// Parses a `SCAN` cursor: a decimal `u64`.
fn parse_cursor(arg: &[u8]) -> Option<u64> {
    if arg.is_empty() || arg.len() > 20 || !arg.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// The options of a `SCAN`.
struct ScanArgs<'a> {
    cursor: u64,
    count: usize,
    pattern: Option<&'a [u8]>,
    /// `TYPE`: `None` for any type; `Some(None)` for a type dice does not hold.
    kind: Option<Option<KeyType>>,
}

/// Parses `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`, or replies the error.
fn scan_args<'a>(ctx: &mut Ctx<'_>, req: &Request<'a>) -> Option<ScanArgs<'a>> {
    let Some(cursor) = parse_cursor(req.arg(1)) else {
        ctx.error("ERR invalid cursor");
        return None;
    };
    let mut args = ScanArgs {
        cursor,
        count: 10,
        pattern: None,
        kind: None,
    };
    let mut i = 2;
    while i < req.len() {
        let (opt, value) = (req.arg(i), req.get(i + 1));
        match value {
            Some(v) if is(opt, "count") => match parse_i64(v) {
                None => {
                    ctx.error(NOT_AN_INTEGER);
                    return None;
                }
                Some(n) if n < 1 => {
                    ctx.error(SYNTAX_ERROR);
                    return None;
                }
                Some(n) => args.count = usize::try_from(n).unwrap_or(usize::MAX),
            },
            Some(v) if is(opt, "match") => args.pattern = (v != b"*").then_some(v),
            Some(v) if is(opt, "type") => {
                if is(v, "string") {
                    args.kind = Some(Some(KeyType::String));
                } else if is(v, "hash") {
                    args.kind = Some(Some(KeyType::Hash));
                } else if is(v, "set") {
                    args.kind = Some(Some(KeyType::Set));
                } else if ["list", "zset", "stream"].iter().any(|t| is(v, t)) {
                    args.kind = Some(None);
                } else {
                    let text = format!("ERR unknown type name '{}'", truncated(v, 128));
                    ctx.error(&text);
                    return None;
                }
            }
            _ => {
                ctx.error(SYNTAX_ERROR);
                return None;
            }
        }
        i += 2;
    }
    Some(args)
}

/// One page for `args`: the next cursor and the page's keys (matching or not).
fn scan_once(r: &Replica, now: u64, args: &ScanArgs<'_>) -> (u64, Vec<Bytes>) {
    let widened = args.count.max(r.entry_count() / 64);
    let (next, mut keys) = scan_page(r, now, args.cursor, widened);
    if let Some(kind) = args.kind {
        keys.retain(|k| r.key_type(k, now) == kind);
    }
    (next, keys)
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
///
/// `COUNT` is a hint, as in Redis: each call walks the whole map (it has no order to resume
/// from), so on a large map a page holds at least 1/64 of the keys, which bounds a full
/// scan to about 64 walks.
pub(crate) async fn scan(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let Some(args) = scan_args(ctx, &req) else {
        return;
    };
    let now = ctx.server.cache.now_ms();
    let (next, keys) = ctx.server.cache.with_replica(|r| scan_once(r, now, &args));
    write_array_len(ctx.out, 2);
    let mut digits = [0u8; 20];
    write_bulk(ctx.out, format_u64(next, &mut digits));
    let matching = |k: &&Bytes| args.pattern.is_none_or(|p| glob_match(p, k));
    write_array_len(ctx.out, keys.iter().filter(matching).count());
    write_keys(ctx, keys.iter().filter(matching)).await;
}

/// `SCAN` in an `EXEC`: the whole reply at once, within the EXEC's bound.
pub(crate) fn scan_db(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let Some(args) = scan_args(ctx, &req) else {
        return;
    };
    let (next, keys) = scan_once(db.replica(), db.now(), &args);
    write_array_len(ctx.out, 2);
    let mut digits = [0u8; 20];
    write_bulk(ctx.out, format_u64(next, &mut digits));
    let matching = |k: &&Bytes| args.pattern.is_none_or(|p| glob_match(p, k));
    write_array_len(ctx.out, keys.iter().filter(matching).count());
    for k in keys.iter().filter(matching) {
        if !ctx.fits(k.len()) {
            return ctx.too_big();
        }
        write_bulk(ctx.out, k);
    }
}

/// `n` in decimal, in `buf`.
fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// `DBSIZE`: the number of live keys.
pub(crate) fn dbsize(ctx: &mut Ctx<'_>, db: &mut dyn Db) {
    write_integer(ctx.out, db.replica().live_len(db.now()) as i64);
}

/// Checks `FLUSHALL [ASYNC | SYNC]`; replies the error if wrong.
fn flush_args(ctx: &mut Ctx<'_>, req: &Request<'_>) -> bool {
    match req.get(1) {
        None => true,
        Some(mode) if req.len() == 2 && (is(mode, "async") || is(mode, "sync")) => true,
        Some(_) => {
            ctx.error(SYNTAX_ERROR);
            false
        }
    }
}

/// Tombstones written per hold of the cache's write lock by `FLUSHALL`.
const FLUSH_PER_LOCK: usize = 1024;

/// `FLUSHALL [ASYNC | SYNC]` (and `FLUSHDB`): a tombstone for every live key, so the flush
/// reaches every node once replicated; a few keys per hold of the write lock. Keys written
/// by other clients after the flush began may survive it or not.
pub(crate) async fn flushall(ctx: &mut Ctx<'_>, req: Request<'_>) {
    if !flush_args(ctx, &req) {
        return;
    }
    let now = ctx.server.cache.now_ms();
    let keys: Vec<Bytes> = ctx
        .server
        .cache
        .with_replica(|r| r.live_keys(now).map(Bytes::copy_from_slice).collect());
    for chunk in keys.chunks(FLUSH_PER_LOCK) {
        let written = ctx
            .server
            .cache
            .transact(|tx| {
                let done = chunk
                    .iter()
                    .try_for_each(|k| tx.write(k.clone(), None, None).map(|_| ()));
                (done, tx.replica().local_seq())
            })
            .await;
        match written {
            Ok(((Ok(()), seq), generation)) => {
                if let Some(g) = generation {
                    ctx.wrote(g, seq);
                }
            }
            Ok(((Err(e), seq), generation)) => {
                if let Some(g) = generation {
                    ctx.wrote(g, seq);
                }
                return ctx.cache_error(&e);
            }
            Err(e) => return ctx.cache_error(&e),
        }
    }
    // Client tracking: every client drops everything (a null invalidation), as in Redis.
    ctx.server.tracking.flush_all();
    write_simple(ctx.out, "OK");
}

/// `FLUSHALL` in an `EXEC`: every tombstone in the transaction.
pub(crate) fn flushall_db(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    if !flush_args(ctx, &req) {
        return;
    }
    let now = db.now();
    let keys: Vec<Bytes> = db
        .replica()
        .live_keys(now)
        .map(Bytes::copy_from_slice)
        .collect();
    for key in keys {
        if let Err(e) = db.write(key, None, None) {
            return ctx.cache_error(&e);
        }
    }
    ctx.server.tracking.flush_all();
    write_simple(ctx.out, "OK");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dice_core::{Limits, NodeId};
    use std::collections::BTreeSet;

    fn replica_with(keys: impl IntoIterator<Item = String>) -> Replica {
        let mut r = Replica::new(NodeId::new(1).unwrap(), Limits::default());
        for k in keys {
            r.write(k.into(), Some(Bytes::from_static(b"v")), None, 1_000)
                .unwrap();
        }
        r
    }

    fn full_scan(r: &Replica, count: usize) -> Vec<Bytes> {
        let (mut cursor, mut all) = (0, Vec::new());
        loop {
            let (next, keys) = scan_page(r, 1_000, cursor, count);
            all.extend(keys);
            if next == 0 {
                return all;
            }
            assert!(next > cursor, "the cursor moves forward");
            cursor = next;
        }
    }

    #[test]
    fn scan_returns_every_key_once() {
        let r = replica_with((0..500).map(|i| format!("key:{i}")));
        for count in [1, 7, 10, 499, 500, 1000] {
            let all = full_scan(&r, count);
            assert_eq!(all.len(), 500, "count {count}");
            let distinct: BTreeSet<_> = all.iter().collect();
            assert_eq!(distinct.len(), 500);
        }
    }

    #[test]
    fn scan_survives_changes_between_pages() {
        let mut r = replica_with((0..200).map(|i| format!("stay:{i}")));
        let (mut cursor, mut seen) = (0, BTreeSet::new());
        let mut round = 0;
        loop {
            let (next, keys) = scan_page(&r, 1_000, cursor, 10);
            seen.extend(keys);
            // Churn: add and delete other keys between pages.
            for j in 0..20 {
                let k = format!("churn:{round}:{j}");
                r.write(k.into(), Some(Bytes::from_static(b"v")), None, 1_000)
                    .unwrap();
            }
            if round > 0 {
                for j in 0..20 {
                    let k = format!("churn:{}:{j}", round - 1);
                    r.write(k.into(), None, None, 1_000).unwrap();
                }
            }
            round += 1;
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for i in 0..200 {
            assert!(seen.contains(&Bytes::from(format!("stay:{i}"))), "stay:{i}");
        }
    }

    #[test]
    fn cursor_parsing() {
        assert_eq!(parse_cursor(b"0"), Some(0));
        assert_eq!(parse_cursor(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_cursor(b"18446744073709551616"), None);
        assert_eq!(parse_cursor(b"-1"), None);
        assert_eq!(parse_cursor(b""), None);
        let mut buf = [0; 20];
        assert_eq!(format_u64(u64::MAX, &mut buf), b"18446744073709551615");
        assert_eq!(format_u64(0, &mut buf), b"0");
    }
}
