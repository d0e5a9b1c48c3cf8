//! Hash commands: `HSET`, `HMSET`, `HSETNX`, `HGET`, `HMGET`, `HDEL`, `HGETALL`, `HKEYS`,
//! `HVALS`, `HLEN`, `HEXISTS`, `HSTRLEN`, `HINCRBY`, `HINCRBYFLOAT`, `HRANDFIELD`, `HSCAN`.
//!
//! A hash is one element per field in the replica ([`dice_core::Elem::Field`]): `HSET`
//! writes the fields it names and nothing else, so a write of one field travels alone, and
//! fields written at once on several nodes all survive (the greater version wins field by
//! field). Every command answers `WRONGTYPE` on a string or counter key, as Redis does.

use super::{Ctx, Db, NOT_AN_INTEGER, SYNTAX_ERROR, is, modify_keeping};
use crate::frame::Protocol;
use crate::frame::{
    Request, parse_i64, write_array_len, write_bulk, write_integer, write_map_len, write_simple,
};
use crate::glob::glob_match;
use bytes::Bytes;
use dice_core::Increment;
use dice_core::counter::parse_float;
use dice_core::entry::FieldId;

/// The `(field, value)` pairs of `HSET key field value [field value ...]` from argument 2 on.
fn pairs(req: &Request<'_>) -> Vec<(Bytes, Bytes)> {
    (2..req.len())
        .step_by(2)
        .map(|i| {
            (
                Bytes::copy_from_slice(req.arg(i)),
                Bytes::copy_from_slice(req.arg(i + 1)),
            )
        })
        .collect()
}

/// `HSET key field value [field value ...]`: the number of fields that were new; `HMSET`
/// (`ok`): `+OK`.
pub(crate) fn hset(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>, ok: bool) {
    if !req.len().is_multiple_of(2) {
        return ctx.wrong_arity(if ok { "hmset" } else { "hset" });
    }
    let pairs = pairs(&req);
    let key = req.arg(1);
    match db.room().and_then(|()| {
        modify_keeping(db, key, |r, now| {
            r.hset(Bytes::copy_from_slice(key), &pairs, false, now)
        })
    }) {
        Ok(_) if ok => write_simple(ctx.out, "OK"),
        Ok(n) => write_integer(ctx.out, n as i64),
        Err(e) => ctx.cache_error(&e),
    }
}

/// `HSETNX key field value`: 1 if the field was set, 0 if it was present.
pub(crate) fn hsetnx(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let pairs = pairs(&req);
    let key = req.arg(1);
    match db.room().and_then(|()| {
        modify_keeping(db, key, |r, now| {
            r.hset(Bytes::copy_from_slice(key), &pairs, true, now)
        })
    }) {
        Ok(n) => write_integer(ctx.out, n as i64),
        Err(e) => ctx.cache_error(&e),
    }
}

/// Writes `v` as a bulk string, or the EXEC-bound error.
fn reply_bulk(ctx: &mut Ctx<'_>, v: Option<&[u8]>) {
    match v {
        Some(v) if ctx.fits(v.len()) => write_bulk(ctx.out, v),
        Some(_) => ctx.too_big(),
        None => ctx.null(),
    }
}

/// `HGET key field`.
pub(crate) fn hget(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    match db.replica().hget(req.arg(1), req.arg(2), db.now()) {
        Ok(v) => reply_bulk(ctx, v),
        Err(e) => ctx.cache_error(&e),
    }
}

/// `HMGET key field [field ...]`.
pub(crate) fn hmget(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let (r, now, key) = (db.replica(), db.now(), req.arg(1));
    if let Err(e) = r.hlen(key, now) {
        return ctx.cache_error(&e);
    }
    let values: Vec<Option<&[u8]>> = (2..req.len())
        .map(|i| r.hget(key, req.arg(i), now).ok().flatten())
        .collect();
    let total: usize = values.iter().map(|v| v.map_or(5, |v| v.len() + 16)).sum();
    if !ctx.fits(total) {
        return ctx.too_big();
    }
    write_array_len(ctx.out, values.len());
    for v in values {
        match v {
            Some(v) => write_bulk(ctx.out, v),
            None => ctx.null(),
        }
    }
}

/// `HDEL key field [field ...]`: how many of the fields were present.
pub(crate) fn hdel(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let key = req.arg(1);
    let names: Vec<Bytes> = req.args().skip(2).map(Bytes::copy_from_slice).collect();
    match modify_keeping(db, key, |r, now| {
        r.hdel(Bytes::copy_from_slice(key), &names, now)
    }) {
        Ok(n) => write_integer(ctx.out, n as i64),
        Err(e) => ctx.cache_error(&e),
    }
}

/// What `HGETALL`, `HKEYS` and `HVALS` list.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Both,
    Keys,
    Values,
}

/// `HGETALL key` (a map in RESP3), `HKEYS key`, `HVALS key`.
pub(crate) fn hgetall(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>, part: Part) {
    let fields = match db.replica().hash_fields(req.arg(1), db.now()) {
        Ok(f) => f,
        Err(e) => return ctx.cache_error(&e),
    };
    let total: usize = fields.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
    if !ctx.fits(total) {
        return ctx.too_big();
    }
    match part {
        Part::Both => write_map_len(ctx.out, fields.len(), ctx.proto()),
        _ => write_array_len(ctx.out, fields.len()),
    }
    for (n, v) in fields {
        if part != Part::Values {
            write_bulk(ctx.out, n);
        }
        if part != Part::Keys {
            write_bulk(ctx.out, v);
        }
    }
}

/// `HLEN key`.
pub(crate) fn hlen(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    match db.replica().hlen(req.arg(1), db.now()) {
        Ok(n) => write_integer(ctx.out, n as i64),
        Err(e) => ctx.cache_error(&e),
    }
}

/// `HEXISTS key field` (1 or 0) and `HSTRLEN key field` (`strlen`: the value's length).
pub(crate) fn hexists(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>, strlen: bool) {
    match db.replica().hget(req.arg(1), req.arg(2), db.now()) {
        Ok(v) if strlen => write_integer(ctx.out, v.map_or(0, <[u8]>::len) as i64),
        Ok(v) => write_integer(ctx.out, i64::from(v.is_some())),
        Err(e) => ctx.cache_error(&e),
    }
}

/// `HINCRBY key field increment` and `HINCRBYFLOAT` (`float`).
pub(crate) fn hincr(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>, float: bool) {
    let by = if float {
        match parse_float(req.arg(3)) {
            Some(f) => Increment::Float(f),
            None => return ctx.error("ERR value is not a valid float"),
        }
    } else {
        match parse_i64(req.arg(3)) {
            Some(n) => Increment::Int(n),
            None => return ctx.error(NOT_AN_INTEGER),
        }
    };
    let (key, field) = (req.arg(1), Bytes::copy_from_slice(req.arg(2)));
    match db.room().and_then(|()| {
        modify_keeping(db, key, |r, now| {
            r.hincr(Bytes::copy_from_slice(key), field, by, now)
        })
    }) {
        Ok(v) if float => write_bulk(ctx.out, &v),
        Ok(v) => write_integer(
            ctx.out,
            std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_default(),
        ),
        Err(e) => ctx.cache_error(&e),
    }
}

/// A pseudo-random index below `n` (not for secrets).
fn random_below(n: usize) -> usize {
    (super::keyspace::random_u64() % n.max(1) as u64) as usize
}

/// `HRANDFIELD key [count [WITHVALUES]]`: a random field (nil if the hash is absent); with
/// a count, up to `count` distinct fields, or `-count` fields that may repeat.
pub(crate) fn hrandfield(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let count = match req.get(2) {
        None => None,
        Some(c) => match parse_i64(c) {
            Some(c) => Some(c),
            None => return ctx.error(NOT_AN_INTEGER),
        },
    };
    let with_values = match req.get(3) {
        None => false,
        Some(w) if is(w, "withvalues") && req.len() == 4 => true,
        Some(_) => return ctx.error(SYNTAX_ERROR),
    };
    if count.is_none() && req.len() > 2 {
        return ctx.error(SYNTAX_ERROR);
    }
    let fields = match db.replica().hash_fields(req.arg(1), db.now()) {
        Ok(f) => f,
        Err(e) => return ctx.cache_error(&e),
    };
    let Some(count) = count else {
        return match fields.len() {
            0 => ctx.null(),
            n => reply_bulk(ctx, Some(fields[random_below(n)].0)),
        };
    };
    let picked: Vec<(&[u8], &[u8])> = if count >= 0 {
        let mut all = fields;
        let n = (count as u64).min(all.len() as u64) as usize;
        // A partial Fisher-Yates shuffle: `n` distinct fields.
        for i in 0..n {
            let j = i + random_below(all.len() - i);
            all.swap(i, j);
        }
        all.truncate(n);
        all
    } else if fields.is_empty() {
        Vec::new()
    } else {
        let n = count.unsigned_abs();
        if n > 1 << 24 {
            return ctx.error("ERR value is out of range");
        }
        (0..n).map(|_| fields[random_below(fields.len())]).collect()
    };
    let total: usize = picked.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
    if !ctx.fits(total) {
        return ctx.too_big();
    }
    let resp3 = ctx.proto() == Protocol::Resp3;
    if with_values && resp3 {
        write_array_len(ctx.out, picked.len());
    } else {
        write_array_len(ctx.out, picked.len() * if with_values { 2 } else { 1 });
    }
    for (n, v) in picked {
        if with_values && resp3 {
            write_array_len(ctx.out, 2);
        }
        write_bulk(ctx.out, n);
        if with_values {
            write_bulk(ctx.out, v);
        }
    }
}

/// `HSCAN key cursor [MATCH pattern] [COUNT count] [NOVALUES]`: fields in the order of their
/// ids, from `cursor` on; a field present during a whole scan is returned at least once.
pub(crate) fn hscan(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let cursor = match super::parse_scan_cursor(req.arg(2)) {
        Some(c) => c,
        None => return ctx.error("ERR invalid cursor"),
    };
    let (mut count, mut pattern, mut novalues) = (10usize, None, false);
    let mut i = 3;
    while i < req.len() {
        let opt = req.arg(i);
        if is(opt, "novalues") {
            novalues = true;
            i += 1;
            continue;
        }
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
    let fields = match db.replica().hash_fields(req.arg(1), db.now()) {
        Ok(f) => f,
        Err(e) => return ctx.cache_error(&e),
    };
    let mut ordered: Vec<(u64, &[u8], &[u8])> = fields
        .into_iter()
        .map(|(n, v)| (FieldId::of(n).scan_order(), n, v))
        .filter(|(c, _, _)| *c >= cursor)
        .collect();
    ordered.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut next = 0u64;
    if ordered.len() > count {
        // Stop before the first field past `count` (and every field sharing its cursor).
        let stop = ordered[count].0;
        if stop == ordered[0].0 {
            // More than `count` fields share one cursor: return them all.
            ordered.retain(|(c, _, _)| *c == stop);
            next = stop.checked_add(1).unwrap_or(0);
        } else {
            ordered.retain(|(c, _, _)| *c < stop);
            next = stop;
        }
    }
    let page: Vec<(&[u8], &[u8])> = ordered
        .into_iter()
        .filter(|(_, n, _)| pattern.is_none_or(|p| glob_match(p, n)))
        .map(|(_, n, v)| (n, v))
        .collect();
    let total: usize = page.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
    if !ctx.fits(total) {
        return ctx.too_big();
    }
    write_array_len(ctx.out, 2);
    write_bulk(ctx.out, next.to_string().as_bytes());
    write_array_len(ctx.out, page.len() * if novalues { 1 } else { 2 });
    for (n, v) in page {
        write_bulk(ctx.out, n);
        if !novalues {
            write_bulk(ctx.out, v);
        }
    }
}
