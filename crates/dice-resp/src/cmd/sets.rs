//! Set commands: `SADD`, `SREM`, `SMEMBERS`, `SISMEMBER`, `SMISMEMBER`, `SCARD`, `SPOP`,
//! `SRANDMEMBER`, `SSCAN`, `SINTER`, `SUNION`, `SDIFF`, their `*STORE` forms, `SINTERCARD`
//! and `SMOVE`.
//!
//! A set is an observed-remove set in the replica (see `dice_core::set`): each `SADD` writes
//! one add element per member named, each removal one element listing the adds it observed,
//! so a write on a large set travels as one element, and an `SADD` made on one node while
//! another removes the member survives (add wins). Every command answers `WRONGTYPE` on a key
//! of another type, as Redis does.

use super::{Ctx, Db, NOT_AN_INTEGER, SYNTAX_ERROR, is, modify_keeping};
use crate::frame::{Request, parse_i64, write_array_len, write_bulk, write_integer, write_set_len};
use crate::glob::glob_match;
use bytes::Bytes;
use dice_core::entry::FieldId;
use std::collections::HashSet;

fn owned(args: impl Iterator<Item = impl AsRef<[u8]>>) -> Vec<Bytes> {
    args.map(|a| Bytes::copy_from_slice(a.as_ref())).collect()
}

/// Writes `members` as a set (an array in RESP2), or the EXEC-bound error.
fn reply_members<T: AsRef<[u8]>>(ctx: &mut Ctx<'_>, members: &[T], as_set: bool) {
    let total: usize = members.iter().map(|m| m.as_ref().len() + 16).sum();
    if !ctx.fits(total) {
        return ctx.too_big();
    }
    if as_set {
        write_set_len(ctx.out, members.len(), ctx.proto());
    } else {
        write_array_len(ctx.out, members.len());
    }
    for m in members {
        write_bulk(ctx.out, m.as_ref());
    }
}

/// `SADD key member [member ...]`: how many members were new.
pub(crate) fn sadd(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let key = req.arg(1);
    let members = owned(req.args().skip(2));
    match db.room().and_then(|()| {
        modify_keeping(db, key, |r, now| {
            r.sadd(Bytes::copy_from_slice(key), &members, now)
        })
    }) {
        Ok(n) => write_integer(ctx.out, n as i64),
        Err(e) => ctx.cache_error(&e),
    }
}

/// `SREM key member [member ...]`: how many members were present.
pub(crate) fn srem(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let key = req.arg(1);
    let members = owned(req.args().skip(2));
    match modify_keeping(db, key, |r, now| {
        r.srem(Bytes::copy_from_slice(key), &members, now)
    }) {
        Ok(n) => write_integer(ctx.out, n as i64),
        Err(e) => ctx.cache_error(&e),
    }
}

/// `SMEMBERS key` (a set in RESP3).
pub(crate) fn smembers(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    match db.replica().smembers(req.arg(1), db.now()) {
        Ok(m) => reply_members(ctx, &m, true),
        Err(e) => ctx.cache_error(&e),
    }
}

/// `SISMEMBER key member`: 1 or 0.
pub(crate) fn sismember(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    match db.replica().sismember(req.arg(1), req.arg(2), db.now()) {
        Ok(b) => write_integer(ctx.out, i64::from(b)),
        Err(e) => ctx.cache_error(&e),
    }
}

/// `SMISMEMBER key member [member ...]`: 1 or 0 per member.
pub(crate) fn smismember(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let (r, now, key) = (db.replica(), db.now(), req.arg(1));
    let mut out = Vec::with_capacity(req.len() - 2);
    for m in req.args().skip(2) {
        match r.sismember(key, m, now) {
            Ok(b) => out.push(b),
            Err(e) => return ctx.cache_error(&e),
        }
    }
    if !ctx.fits(out.len() * 4) {
        return ctx.too_big();
    }
    write_array_len(ctx.out, out.len());
    for b in out {
        write_integer(ctx.out, i64::from(b));
    }
}

/// `SCARD key`.
pub(crate) fn scard(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    match db.replica().scard(req.arg(1), db.now()) {
        Ok(n) => write_integer(ctx.out, n as i64),
        Err(e) => ctx.cache_error(&e),
    }
}

/// The optional count of `SPOP` and `SRANDMEMBER` (argument 2); `Err` once the error is
/// written.
fn count_arg(ctx: &mut Ctx<'_>, req: &Request<'_>) -> Result<Option<i64>, ()> {
    if req.len() > 3 {
        ctx.error(SYNTAX_ERROR);
        return Err(());
    }
    match req.get(2) {
        None => Ok(None),
        Some(c) => match parse_i64(c) {
            Some(c) => Ok(Some(c)),
            None => {
                ctx.error(NOT_AN_INTEGER);
                Err(())
            }
        },
    }
}

/// `SPOP key [count]`: a random member removed (nil if none); with a count, up to `count`
/// members removed (a set in RESP3).
pub(crate) fn spop(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let Ok(count) = count_arg(ctx, &req) else {
        return;
    };
    if count.is_some_and(|c| c < 0) {
        return ctx.error("ERR value is out of range, must be positive");
    }
    let key = req.arg(1);
    let n = count.map_or(1, |c| usize::try_from(c).unwrap_or(usize::MAX));
    // The reply must fit: check the members it could take before removing them.
    match db.replica().smembers(key, db.now()) {
        Ok(all) => {
            let mut sizes: Vec<usize> = all.iter().map(|m| m.len() + 16).collect();
            sizes.sort_unstable_by(|a, b| b.cmp(a));
            if !ctx.fits(sizes.iter().take(n).sum()) {
                return ctx.too_big();
            }
        }
        Err(e) => return ctx.cache_error(&e),
    }
    let popped = match modify_keeping(db, key, |r, now| {
        r.spop(Bytes::copy_from_slice(key), n, now)
    }) {
        Ok(p) => p,
        Err(e) => return ctx.cache_error(&e),
    };
    match count {
        None => match popped.first() {
            Some(m) => write_bulk(ctx.out, m),
            None => ctx.null(),
        },
        Some(_) => reply_members(ctx, &popped, true),
    }
}

/// A pseudo-random index below `n` (not for secrets).
fn random_below(n: usize) -> usize {
    (super::keyspace::random_u64() % n.max(1) as u64) as usize
}

/// `SRANDMEMBER key [count]`: a random member (nil if none); with a count, up to `count`
/// distinct members, or `-count` members that may repeat.
pub(crate) fn srandmember(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let Ok(count) = count_arg(ctx, &req) else {
        return;
    };
    let (r, now, key) = (db.replica(), db.now(), req.arg(1));
    let Some(count) = count else {
        if let Err(e) = r.scard(key, now) {
            return ctx.cache_error(&e);
        }
        return match r.set_random_member(key, now) {
            Some(m) if ctx.fits(m.len()) => write_bulk(ctx.out, m),
            Some(_) => ctx.too_big(),
            None => ctx.null(),
        };
    };
    let members = match r.smembers(key, now) {
        Ok(m) => m,
        Err(e) => return ctx.cache_error(&e),
    };
    let picked: Vec<&[u8]> = if count >= 0 {
        let mut all = members;
        let n = (count as u64).min(all.len() as u64) as usize;
        for i in 0..n {
            let j = i + random_below(all.len() - i);
            all.swap(i, j);
        }
        all.truncate(n);
        all
    } else if count == i64::MIN {
        return ctx.error(
            "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807",
        );
    } else if members.is_empty() {
        Vec::new()
    } else {
        let n = count.unsigned_abs();
        if n > 1 << 24 {
            return ctx.error("ERR value is out of range");
        }
        (0..n)
            .map(|_| members[random_below(members.len())])
            .collect()
    };
    reply_members(ctx, &picked, false);
}

/// `SSCAN key cursor [MATCH pattern] [COUNT count]`: members in the order of their ids, from
/// `cursor` on; a member present during a whole scan is returned at least once.
pub(crate) fn sscan(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let cursor = match super::parse_scan_cursor(req.arg(2)) {
        Some(c) => c,
        None => return ctx.error("ERR invalid cursor"),
    };
    let (mut count, mut pattern) = (10usize, None);
    let mut i = 3;
    while i < req.len() {
        let opt = req.arg(i);
        match req.get(i + 1) {
            Some(v) if is(opt, "count") => match parse_i64(v) {
                Some(n) if n >= 1 => count = usize::try_from(n).unwrap_or(usize::MAX),
                Some(_) => return ctx.error(SYNTAX_ERROR),
                None => return ctx.error(NOT_AN_INTEGER),
            },
            Some(v) if is(opt, "match") => pattern = (v != b"*").then_some(v),
            _ => return ctx.error(SYNTAX_ERROR),
        }
        i += 2;
    }
    let members = match db.replica().smembers(req.arg(1), db.now()) {
        Ok(m) => m,
        Err(e) => return ctx.cache_error(&e),
    };
    let mut ordered: Vec<(u64, &[u8])> = members
        .into_iter()
        .map(|m| (FieldId::of(m).scan_order(), m))
        .filter(|(c, _)| *c >= cursor)
        .collect();
    ordered.sort_unstable();
    let mut next = 0u64;
    if ordered.len() > count {
        // Stop before the first member past `count` (and every member sharing its cursor).
        let stop = ordered[count].0;
        if stop == ordered[0].0 {
            ordered.retain(|(c, _)| *c == stop);
            next = stop.checked_add(1).unwrap_or(0);
        } else {
            ordered.retain(|(c, _)| *c < stop);
            next = stop;
        }
    }
    let page: Vec<&[u8]> = ordered
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| pattern.is_none_or(|p| glob_match(p, m)))
        .collect();
    let total: usize = page.iter().map(|m| m.len() + 16).sum();
    if !ctx.fits(total) {
        return ctx.too_big();
    }
    write_array_len(ctx.out, 2);
    write_bulk(ctx.out, next.to_string().as_bytes());
    write_array_len(ctx.out, page.len());
    for m in page {
        write_bulk(ctx.out, m);
    }
}

/// Which set operation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Inter,
    Union,
    Diff,
}

/// The result of `op` over the sets `keys` (an absent key is an empty set); `WRONGTYPE` if
/// any key is of another type.
fn combine(db: &dyn Db, keys: &[&[u8]], op: Op) -> dice_core::Result<Vec<Bytes>> {
    let (r, now) = (db.replica(), db.now());
    let mut sets: Vec<Vec<&[u8]>> = Vec::with_capacity(keys.len());
    for k in keys {
        sets.push(r.smembers(k, now)?);
    }
    let out: Vec<&[u8]> = match op {
        Op::Union => {
            let mut seen = HashSet::new();
            sets.iter()
                .flatten()
                .copied()
                .filter(|m| seen.insert(*m))
                .collect()
        }
        Op::Inter => {
            let Some(smallest) = sets.iter().min_by_key(|s| s.len()) else {
                return Ok(Vec::new());
            };
            let others: Vec<HashSet<&[u8]>> =
                sets.iter().map(|s| s.iter().copied().collect()).collect();
            smallest
                .iter()
                .copied()
                .filter(|m| others.iter().all(|o| o.contains(m)))
                .collect()
        }
        Op::Diff => {
            let Some((first, rest)) = sets.split_first() else {
                return Ok(Vec::new());
            };
            let rest: HashSet<&[u8]> = rest.iter().flatten().copied().collect();
            first
                .iter()
                .copied()
                .filter(|m| !rest.contains(m))
                .collect()
        }
    };
    Ok(out.into_iter().map(Bytes::copy_from_slice).collect())
}

/// `SINTER key [key ...]`, `SUNION`, `SDIFF` (a set in RESP3).
pub(crate) fn combine_cmd(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>, op: Op) {
    let keys: Vec<&[u8]> = req.args().skip(1).collect();
    match combine(db, &keys, op) {
        Ok(m) => reply_members(ctx, &m, true),
        Err(e) => ctx.cache_error(&e),
    }
}

/// `SINTERSTORE destination key [key ...]`, `SUNIONSTORE`, `SDIFFSTORE`: a write of the
/// destination (whatever it held goes, as observed; an empty result deletes it); the number
/// of members stored.
pub(crate) fn store(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>, op: Op) {
    let keys: Vec<&[u8]> = req.args().skip(2).collect();
    let members = match combine(db, &keys, op) {
        Ok(m) => m,
        Err(e) => return ctx.cache_error(&e),
    };
    let dst = req.arg(1);
    let n = members.len();
    let done = db.room().and_then(|()| {
        modify_keeping(db, dst, |r, now| {
            let dst = Bytes::copy_from_slice(dst);
            r.remove_observed(dst.clone(), now)?;
            if !members.is_empty() {
                r.sadd(dst, &members, now)?;
            }
            Ok(())
        })
    });
    match done {
        Ok(()) => write_integer(ctx.out, n as i64),
        Err(e) => ctx.cache_error(&e),
    }
}

/// `SINTERCARD numkeys key [key ...] [LIMIT limit]`: the size of the intersection, counted up
/// to `limit` (0: no limit).
pub(crate) fn sintercard(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let numkeys = match parse_i64(req.arg(1)) {
        Some(n) if n > 0 => n as usize,
        Some(_) => return ctx.error("ERR numkeys should be greater than 0"),
        None => return ctx.error("ERR numkeys should be greater than 0"),
    };
    if numkeys > req.len() - 2 {
        return ctx.error("ERR Number of keys can't be greater than number of args");
    }
    let mut limit = 0usize;
    let mut i = 2 + numkeys;
    while i < req.len() {
        match req.get(i + 1) {
            Some(v) if is(req.arg(i), "limit") => match parse_i64(v) {
                Some(l) if l >= 0 => limit = l as usize,
                _ => return ctx.error("ERR LIMIT can't be negative"),
            },
            _ => return ctx.error(SYNTAX_ERROR),
        }
        i += 2;
    }
    let keys: Vec<&[u8]> = (2..2 + numkeys).map(|i| req.arg(i)).collect();
    match combine(db, &keys, Op::Inter) {
        Ok(m) => {
            let n = if limit > 0 {
                m.len().min(limit)
            } else {
                m.len()
            };
            write_integer(ctx.out, n as i64);
        }
        Err(e) => ctx.cache_error(&e),
    }
}

/// `SMOVE source destination member`: 1 if moved, 0 if `member` is not in `source`.
pub(crate) fn smove(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let (src, dst, member) = (req.arg(1), req.arg(2), Bytes::copy_from_slice(req.arg(3)));
    let done = db.room().and_then(|()| {
        modify_keeping(db, dst, |r, now| {
            r.smove(
                Bytes::copy_from_slice(src),
                Bytes::copy_from_slice(dst),
                member,
                now,
            )
        })
    });
    match done {
        Ok(moved) => write_integer(ctx.out, i64::from(moved)),
        Err(e) => ctx.cache_error(&e),
    }
}
