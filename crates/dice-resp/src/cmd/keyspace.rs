//! Keyspace commands: `DEL`, `UNLINK`, `EXISTS`, `EXPIRE`, `PEXPIRE`, `EXPIREAT`,
//! `PEXPIREAT`, `TTL`, `PTTL`, `PERSIST`, `KEYS`, `SCAN`, `DBSIZE`, `FLUSHALL`.

use super::{Ctx, NOT_AN_INTEGER, SYNTAX_ERROR, expiry_ms, is, now_ms, truncated};
use crate::frame::{Request, parse_i64, write_array_len, write_bulk, write_integer, write_simple};
use crate::glob::glob_match;
use bytes::Bytes;
use dice_core::Replica;
use std::collections::BinaryHeap;

/// Whether `key` could be stored at all (keys past the limits, or empty, never exist).
fn storable(ctx: &Ctx<'_>, key: &[u8]) -> bool {
    ctx.server.cache.options().limits.check(key, None).is_ok()
}

/// `DEL key [key ...]` and `UNLINK`: the number of keys that were present here. Each key
/// gets a tombstone even if absent here, so the delete also wins over older writes that
/// have not reached this node yet.
pub(crate) async fn del(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let mut deleted = 0;
    for key in req.args().skip(1) {
        if !storable(ctx, key) {
            continue;
        }
        let mut existed = false;
        let result = ctx
            .server
            .cache
            .update_unacked(Bytes::copy_from_slice(key), |current| {
                existed = current.is_some();
                Some((None, None))
            })
            .await;
        match result {
            Ok(written) => {
                ctx.wrote_if_any(&written);
                deleted += i64::from(existed);
            }
            Err(e) => {
                ctx.cache_error(&e);
                return;
            }
        }
    }
    write_integer(ctx.out, deleted);
}

/// `EXISTS key [key ...]`: how many of the keys are present, a key named twice counting
/// twice.
pub(crate) fn exists(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let now = dice_core::now_ms();
    let n = ctx.server.cache.with_replica(|r| {
        req.args()
            .skip(1)
            .filter(|k| r.get(k, now).is_some())
            .count()
    });
    write_integer(ctx.out, n as i64);
}

/// `EXPIRE key seconds [NX | XX | GT | LT]` and its `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`
/// forms: 1 if the expiry was set, 0 if the key is absent or the condition failed. An
/// expiry not in the future deletes the key. The new expiry is a new write of the value.
pub(crate) async fn expire(
    ctx: &mut Ctx<'_>,
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
            ctx.error(&text);
            return;
        }
    }
    if nx && (xx || gt || lt) {
        ctx.error("ERR NX and XX, GT or LT options at the same time are not compatible");
        return;
    }
    if gt && lt {
        ctx.error("ERR GT and LT options at the same time are not compatible");
        return;
    }
    let Some(amount) = parse_i64(req.arg(2)) else {
        ctx.error(NOT_AN_INTEGER);
        return;
    };
    let now = now_ms();
    let Some(when) = expiry_ms(amount, unit_ms, absolute, now) else {
        let text = format!("ERR invalid expire time in '{command}' command");
        ctx.error(&text);
        return;
    };
    let mut set = false;
    let result = ctx
        .server
        .cache
        .update_unacked(Bytes::copy_from_slice(req.arg(1)), |current| {
            let (value, expires) = current?;
            // A key with no expiry counts as an infinite one for GT and LT, as in Redis.
            let expires = expires.map(|t| t as i64);
            let allowed = match expires {
                Some(t) => !(nx || (gt && when <= t) || (lt && when >= t)),
                None => !xx && !gt,
            };
            if !allowed {
                return None;
            }
            set = true;
            if when <= now {
                Some((None, None))
            } else {
                Some((Some(value), Some(when as u64)))
            }
        })
        .await;
    match result {
        Ok(written) => {
            ctx.wrote_if_any(&written);
            write_integer(ctx.out, i64::from(set));
        }
        Err(e) => ctx.cache_error(&e),
    }
}

/// `TTL key` (seconds, rounded like Redis) and `PTTL key` (milliseconds): -2 if the key is
/// absent, -1 if it has no expiry.
pub(crate) fn ttl(ctx: &mut Ctx<'_>, req: Request<'_>, millis: bool) {
    let reply = match ctx.server.cache.get_with_expiry(req.arg(1)) {
        None => -2,
        Some((_, None)) => -1,
        Some((_, Some(at))) => {
            let left = (at as i64).saturating_sub(now_ms()).max(0);
            if millis { left } else { (left + 500) / 1000 }
        }
    };
    write_integer(ctx.out, reply);
}

/// `PERSIST key`: 1 if an expiry was removed (a new write of the value with none).
pub(crate) async fn persist(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let mut removed = false;
    let result = ctx
        .server
        .cache
        .update_unacked(Bytes::copy_from_slice(req.arg(1)), |current| {
            let (value, expires) = current?;
            expires?;
            removed = true;
            Some((Some(value), None))
        })
        .await;
    match result {
        Ok(written) => {
            ctx.wrote_if_any(&written);
            write_integer(ctx.out, i64::from(removed));
        }
        Err(e) => ctx.cache_error(&e),
    }
}

/// `KEYS pattern`: every live key matching the glob. The matching keys are collected in
/// one walk of the map under the read lock (keys only: no value is copied), then the reply
/// is streamed, sent whenever it passes the flush size.
pub(crate) async fn keys(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let pattern = req.arg(1);
    let all = pattern == b"*";
    let now = dice_core::now_ms();
    let keys: Vec<Bytes> = ctx.server.cache.with_replica(|r| {
        r.live_keys(now)
            .filter(|k| all || glob_match(pattern, k))
            .map(Bytes::copy_from_slice)
            .collect()
    });
    write_array_len(ctx.out, keys.len());
    write_keys(ctx, keys.iter()).await;
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

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
///
/// `COUNT` is a hint, as in Redis: each call walks the whole map (it has no order to resume
/// from), so on a large map a page holds at least 1/64 of the keys, which bounds a full
/// scan to about 64 walks.
pub(crate) async fn scan(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let Some(cursor) = parse_cursor(req.arg(1)) else {
        ctx.error("ERR invalid cursor");
        return;
    };
    let mut count = 10usize;
    let mut pattern: Option<&[u8]> = None;
    let mut strings_only = true;
    let mut i = 2;
    while i < req.len() {
        let (opt, value) = (req.arg(i), req.get(i + 1));
        match value {
            Some(v) if is(opt, "count") => match parse_i64(v) {
                None => {
                    ctx.error(NOT_AN_INTEGER);
                    return;
                }
                Some(n) if n < 1 => {
                    ctx.error(SYNTAX_ERROR);
                    return;
                }
                Some(n) => count = usize::try_from(n).unwrap_or(usize::MAX),
            },
            Some(v) if is(opt, "match") => pattern = (v != b"*").then_some(v),
            Some(v) if is(opt, "type") => {
                // Every dice value is a string.
                if ["string"].iter().any(|t| is(v, t)) {
                    strings_only = true;
                } else if ["list", "set", "zset", "hash", "stream"]
                    .iter()
                    .any(|t| is(v, t))
                {
                    strings_only = false;
                } else {
                    let text = format!("ERR unknown type name '{}'", truncated(v, 128));
                    ctx.error(&text);
                    return;
                }
            }
            _ => {
                ctx.error(SYNTAX_ERROR);
                return;
            }
        }
        i += 2;
    }
    let now = dice_core::now_ms();
    let (next, keys) = ctx.server.cache.with_replica(|r| {
        let widened = count.max(r.entry_count() / 64);
        scan_page(r, now, cursor, widened)
    });
    write_array_len(ctx.out, 2);
    let mut digits = [0u8; 20];
    write_bulk(ctx.out, format_u64(next, &mut digits));
    let matching = |k: &&Bytes| strings_only && pattern.is_none_or(|p| glob_match(p, k));
    write_array_len(ctx.out, keys.iter().filter(matching).count());
    write_keys(ctx, keys.iter().filter(matching)).await;
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
pub(crate) fn dbsize(ctx: &mut Ctx<'_>) {
    write_integer(ctx.out, ctx.server.cache.len() as i64);
}

/// `FLUSHALL [ASYNC | SYNC]` (and `FLUSHDB`): a tombstone for every live key, so the flush
/// reaches every node once replicated. Keys written by other clients after the flush began
/// may survive it or not.
pub(crate) async fn flushall(ctx: &mut Ctx<'_>, req: Request<'_>) {
    match req.get(1) {
        None => {}
        Some(mode) if req.len() == 2 && (is(mode, "async") || is(mode, "sync")) => {}
        Some(_) => {
            ctx.error(SYNTAX_ERROR);
            return;
        }
    }
    let now = dice_core::now_ms();
    let keys: Vec<Bytes> = ctx
        .server
        .cache
        .with_replica(|r| r.live_keys(now).map(Bytes::copy_from_slice).collect());
    for key in keys {
        match ctx.server.cache.write_unacked(key, None, None).await {
            Ok((_, generation)) => ctx.wrote(generation),
            Err(e) => {
                ctx.cache_error(&e);
                return;
            }
        }
    }
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
