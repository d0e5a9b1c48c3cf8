//! String commands: `GET`, `SET`, `SETEX`, `PSETEX`, `SETNX`, `GETDEL`, `GETSET`, `GETEX`,
//! `GETRANGE` (`SUBSTR`), `SETRANGE`, `APPEND`, `STRLEN`, `MGET`, `MSET`, `MSETNX`, and the
//! counters (`INCR`, `INCRBY`, `DECR`, `DECRBY`, `INCRBYFLOAT`).
//!
//! Every read-modify-write runs under the cache's write lock (see [`super::Db`]), so it is
//! atomic on this node; across nodes it is a last-writer-wins write like any other, except
//! the counters: an increment writes this node's contribution to the key's counter
//! ([`dice_core::counter`]), so increments made at once on several nodes all count.

use super::{Ctx, Db, NOT_AN_INTEGER, SYNTAX_ERROR, expiry_ms, is};
use crate::frame::{
    Request, parse_i64, write_array_len, write_bulk, write_integer, write_null, write_simple,
};
use crate::wire::OUTPUT_FLUSH_AT;
use bytes::Bytes;
use dice_core::Increment;
use dice_core::counter::parse_float;

/// Redis's error for a string that would pass the largest value.
const TOO_LONG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

/// Appends `value` as a bulk string, or the EXEC-bound error if it does not fit.
fn reply_value(ctx: &mut Ctx<'_>, value: Option<&[u8]>) {
    match value {
        Some(v) if ctx.fits(v.len()) => write_bulk(ctx.out, v),
        Some(_) => ctx.too_big(),
        None => ctx.null(),
    }
}

/// `GET key`: the value bytes go straight from the map into the reply.
pub(crate) fn get(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    reply_value(ctx, db.get(req.arg(1)));
}

/// `STRLEN key`: the value's length, 0 if absent.
pub(crate) fn strlen(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let n = db.get(req.arg(1)).map_or(0, <[u8]>::len);
    write_integer(ctx.out, n as i64);
}

/// Most keys looked up under one hold of the cache's read lock by a multi-key read.
pub(crate) const KEYS_PER_LOCK: usize = 64;

/// `MGET key [key ...]`: streamed. The values are copied into the reply a few keys per
/// hold of the read lock, and the reply goes out whenever it passes the flush size, so
/// `MGET big big big ...` costs the connection about one value of memory, not all of them.
pub(crate) async fn mget(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let now = ctx.server.cache.now_ms();
    write_array_len(ctx.out, req.len() - 1);
    let proto = ctx.proto();
    let track = ctx.session.tracking.remembers_reads();
    let mut next = 1;
    while next < req.len() {
        let out = &mut *ctx.out;
        let start = next;
        let server = ctx.server;
        let id = ctx.session.id;
        server.cache.with_replica(|r| {
            while next < req.len() {
                match r.get(req.arg(next), now) {
                    Some(v) => write_bulk(out, v),
                    None => write_null(out, proto),
                }
                next += 1;
                if out.len() >= OUTPUT_FLUSH_AT || next - start == KEYS_PER_LOCK {
                    break;
                }
            }
            if track {
                // Under the lock these reads held (see crate::tracking).
                let keys = (start..next).map(|i| req.arg(i));
                server.tracking.remember(id, keys, r, now);
            }
        });
        if !ctx.flush_if_full().await {
            return;
        }
    }
}

/// `MGET` in an `EXEC`: the whole reply at once, within the EXEC's bound.
pub(crate) fn mget_db(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    write_array_len(ctx.out, req.len() - 1);
    for key in req.args().skip(1) {
        match db.get(key) {
            Some(v) if ctx.fits(v.len()) => write_bulk(ctx.out, v),
            Some(_) => return ctx.too_big(),
            None => ctx.null(),
        }
    }
}

/// Which of `EX`, `PX`, `EXAT`, `PXAT` a `SET` or `GETEX` carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ExpireOption {
    Ex,
    Px,
    Exat,
    Pxat,
}

impl ExpireOption {
    fn parse(opt: &[u8]) -> Option<Self> {
        if is(opt, "ex") {
            Some(Self::Ex)
        } else if is(opt, "px") {
            Some(Self::Px)
        } else if is(opt, "exat") {
            Some(Self::Exat)
        } else if is(opt, "pxat") {
            Some(Self::Pxat)
        } else {
            None
        }
    }

    fn unit_ms(self) -> i64 {
        match self {
            Self::Ex | Self::Exat => 1000,
            Self::Px | Self::Pxat => 1,
        }
    }

    fn absolute(self) -> bool {
        matches!(self, Self::Exat | Self::Pxat)
    }
}

/// Checks an expiry argument like Redis: an integer, positive, and no overflow once made
/// absolute. Replies with the error and returns `None` otherwise.
fn positive_expiry(
    ctx: &mut Ctx<'_>,
    arg: &[u8],
    unit_ms: i64,
    absolute: bool,
    command: &str,
) -> Option<u64> {
    let Some(amount) = parse_i64(arg) else {
        ctx.error(NOT_AN_INTEGER);
        return None;
    };
    match expiry_ms(amount, unit_ms, absolute, ctx.now_ms()) {
        Some(at) if amount > 0 && at > 0 => Some(at as u64),
        _ => {
            let text = format!("ERR invalid expire time in '{command}' command");
            ctx.error(&text);
            None
        }
    }
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT ts | PXAT ts-ms | KEEPTTL]`.
pub(crate) fn set(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let (mut nx, mut xx, mut get, mut keepttl) = (false, false, false, false);
    let mut expire: Option<(ExpireOption, &[u8])> = None;
    let mut j = 3;
    while j < req.len() {
        let opt = req.arg(j);
        let next = req.get(j + 1);
        if is(opt, "nx") && !xx {
            nx = true;
        } else if is(opt, "xx") && !nx {
            xx = true;
        } else if is(opt, "get") {
            get = true;
        } else if is(opt, "keepttl") && expire.is_none() {
            keepttl = true;
        } else if let (Some(kind), Some(arg)) = (ExpireOption::parse(opt), next)
            && !keepttl
            && expire.is_none_or(|(k, _)| k == kind)
        {
            expire = Some((kind, arg));
            j += 1;
        } else {
            ctx.error(SYNTAX_ERROR);
            return;
        }
        j += 1;
    }
    let expires_at = match expire {
        Some((kind, arg)) => {
            match positive_expiry(ctx, arg, kind.unit_ms(), kind.absolute(), "set") {
                Some(at) => Some(at),
                None => return,
            }
        }
        None => None,
    };
    let key = req.arg(1);
    // A plain SET is a blind write: it does not copy the old value out.
    let current = if nx || xx || get || keepttl {
        db.get_with_expiry(key)
    } else {
        None
    };
    if get
        && let Some((v, _)) = &current
        && !ctx.fits(v.len())
    {
        return ctx.too_big();
    }
    // A key of another type: SET replaces it, but GET cannot read it (WRONGTYPE).
    let other = (nx || xx || get || keepttl) && current.is_none() && db.exists(key);
    if get && other {
        return ctx.error(super::WRONGTYPE);
    }
    let exists = current.is_some() || other;
    let applied = !((nx && exists) || (xx && !exists));
    if applied {
        let kept = if other {
            db.replica().key_expiry(key, db.now()).flatten()
        } else {
            current.as_ref().and_then(|c| c.1)
        };
        let expiry = if keepttl { kept } else { expires_at };
        let value = Bytes::copy_from_slice(req.arg(2));
        if let Err(e) = db.write(Bytes::copy_from_slice(key), Some(value), expiry) {
            return ctx.cache_error(&e);
        }
    }
    match (get, current) {
        (true, Some((v, _))) => write_bulk(ctx.out, &v),
        (true, None) => ctx.null(),
        (false, _) if applied => write_simple(ctx.out, "OK"),
        (false, _) => ctx.null(),
    }
}

/// `SETEX key seconds value` (`unit_ms` 1000) and `PSETEX key milliseconds value` (1).
pub(crate) fn setex(
    ctx: &mut Ctx<'_>,
    db: &mut dyn Db,
    req: Request<'_>,
    unit_ms: i64,
    command: &str,
) {
    let Some(at) = positive_expiry(ctx, req.arg(2), unit_ms, false, command) else {
        return;
    };
    let key = Bytes::copy_from_slice(req.arg(1));
    let value = Bytes::copy_from_slice(req.arg(3));
    match db.write(key, Some(value), Some(at)) {
        Ok(()) => write_simple(ctx.out, "OK"),
        Err(e) => ctx.cache_error(&e),
    }
}

/// `SETNX key value`: 1 if set (the key was absent here), 0 otherwise.
pub(crate) fn setnx(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    if db.exists(req.arg(1)) {
        return write_integer(ctx.out, 0);
    }
    let value = Bytes::copy_from_slice(req.arg(2));
    match db.write(Bytes::copy_from_slice(req.arg(1)), Some(value), None) {
        Ok(()) => write_integer(ctx.out, 1),
        Err(e) => ctx.cache_error(&e),
    }
}

/// `GETDEL key`: the value, and a tombstone in its place (written even if the key is absent
/// here, like every dice delete, so it also wins over older writes still on their way).
pub(crate) fn getdel(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let key = req.arg(1);
    let old = db.get(key).map(Bytes::copy_from_slice);
    if old.as_ref().is_some_and(|v| !ctx.fits(v.len())) {
        return ctx.too_big();
    }
    if let Err(e) = db.write(Bytes::copy_from_slice(key), None, None) {
        return ctx.cache_error(&e);
    }
    reply_value(ctx, old.as_deref());
}

/// `GETSET key value`: `SET key value GET` (the expiry is dropped, as by `SET`).
pub(crate) fn getset(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let key = req.arg(1);
    let old = db.get(key).map(Bytes::copy_from_slice);
    if old.as_ref().is_some_and(|v| !ctx.fits(v.len())) {
        return ctx.too_big();
    }
    let value = Bytes::copy_from_slice(req.arg(2));
    if let Err(e) = db.write(Bytes::copy_from_slice(key), Some(value), None) {
        return ctx.cache_error(&e);
    }
    reply_value(ctx, old.as_deref());
}

/// `GETEX key [EX s | PX ms | EXAT ts | PXAT ts-ms | PERSIST]`: the value, and a new expiry
/// (a new write of the value) when one is given. An expiry already past deletes the key.
pub(crate) fn getex(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    // None: leave the expiry; Some(None): persist; Some(Some(at)): expire at.
    let mut change: Option<Option<u64>> = None;
    let mut j = 2;
    while j < req.len() {
        let opt = req.arg(j);
        if is(opt, "persist") && change.is_none() {
            change = Some(None);
        } else if let (Some(kind), Some(arg)) = (ExpireOption::parse(opt), req.get(j + 1))
            && change.is_none()
        {
            let Some(at) = positive_expiry(ctx, arg, kind.unit_ms(), kind.absolute(), "getex")
            else {
                return;
            };
            change = Some(Some(at));
            j += 1;
        } else {
            return ctx.error(SYNTAX_ERROR);
        }
        j += 1;
    }
    let key = req.arg(1);
    let Some((value, expires)) = db.get_with_expiry(key) else {
        return ctx.null();
    };
    if !ctx.fits(value.len()) {
        return ctx.too_big();
    }
    let write = match change {
        None => None,
        Some(None) if expires.is_none() => None,
        Some(None) => Some((Some(value.clone()), None)),
        Some(Some(at)) if at <= db.now() => Some((None, None)),
        Some(Some(at)) => Some((Some(value.clone()), Some(at))),
    };
    if let Some((v, at)) = write
        && let Err(e) = db.write(Bytes::copy_from_slice(key), v, at)
    {
        return ctx.cache_error(&e);
    }
    write_bulk(ctx.out, &value);
}

/// The byte range `start..end` (inclusive, negative from the end) of a string of `len`
/// bytes, as Redis's `GETRANGE` clamps it; `None` when empty.
fn clamp_range(start: i64, end: i64, len: usize) -> Option<std::ops::Range<usize>> {
    let len = len as i64;
    if len == 0 || (start < 0 && end < 0 && start > end) {
        return None;
    }
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let end = if end < 0 { (len + end).max(0) } else { end };
    let end = end.min(len - 1);
    if start > end {
        return None;
    }
    Some(start as usize..end as usize + 1)
}

/// `GETRANGE key start end` (and `SUBSTR`).
pub(crate) fn getrange(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let (Some(start), Some(end)) = (parse_i64(req.arg(2)), parse_i64(req.arg(3))) else {
        return ctx.error(NOT_AN_INTEGER);
    };
    let value = db.get(req.arg(1)).unwrap_or_default();
    let part = clamp_range(start, end, value.len()).map_or(&b""[..], |r| &value[r]);
    reply_value(ctx, Some(part));
}

/// `SETRANGE key offset value`: overwrites from `offset`, padding with zero bytes; the
/// new length. Keeps the key's expiry.
pub(crate) fn setrange(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let key = req.arg(1);
    let patch = req.arg(3);
    let offset = match parse_i64(req.arg(2)) {
        None => return ctx.error(NOT_AN_INTEGER),
        Some(n) if n < 0 => return ctx.error("ERR offset is out of range"),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let current = db.get_with_expiry(key);
    if patch.is_empty() {
        let len = current.map_or(0, |(v, _)| v.len());
        return write_integer(ctx.out, len as i64);
    }
    let max = db.replica().limits().max_value_len;
    let new_len = offset.saturating_add(patch.len());
    if new_len > max {
        return ctx.error(TOO_LONG);
    }
    let (old, expires) = current.unwrap_or_default();
    let mut value = Vec::with_capacity(new_len.max(old.len()));
    value.extend_from_slice(&old);
    if value.len() < new_len {
        value.resize(new_len, 0);
    }
    value[offset..new_len].copy_from_slice(patch);
    let len = value.len();
    match db.write(Bytes::copy_from_slice(key), Some(value.into()), expires) {
        Ok(()) => write_integer(ctx.out, len as i64),
        Err(e) => ctx.cache_error(&e),
    }
}

/// `APPEND key value`: the new length. Keeps the key's expiry.
pub(crate) fn append(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let key = req.arg(1);
    let (old, expires) = db.get_with_expiry(key).unwrap_or_default();
    let max = db.replica().limits().max_value_len;
    if old.len().saturating_add(req.arg(2).len()) > max {
        return ctx.error(TOO_LONG);
    }
    let mut value = Vec::with_capacity(old.len() + req.arg(2).len());
    value.extend_from_slice(&old);
    value.extend_from_slice(req.arg(2));
    let len = value.len();
    match db.write(Bytes::copy_from_slice(key), Some(value.into()), expires) {
        Ok(()) => write_integer(ctx.out, len as i64),
        Err(e) => ctx.cache_error(&e),
    }
}

/// `MSET key value [key value ...]` and `MSETNX` (`nx`: only if no key exists here; 1 if
/// set, 0 if not). Every pair is checked against the limits before any is written, and all
/// are written under one hold of the lock: atomic on this node.
pub(crate) fn mset(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>, nx: bool) {
    if req.len().is_multiple_of(2) {
        return ctx.wrong_arity(if nx { "msetnx" } else { "mset" });
    }
    let limits = db.replica().limits();
    for i in (1..req.len()).step_by(2) {
        if let Err(e) = limits.check(req.arg(i), Some(req.arg(i + 1))) {
            return ctx.cache_error(&e);
        }
    }
    if nx && (1..req.len()).step_by(2).any(|i| db.exists(req.arg(i))) {
        return write_integer(ctx.out, 0);
    }
    for i in (1..req.len()).step_by(2) {
        let key = Bytes::copy_from_slice(req.arg(i));
        let value = Bytes::copy_from_slice(req.arg(i + 1));
        if let Err(e) = db.write(key, Some(value), None) {
            return ctx.cache_error(&e);
        }
    }
    if nx {
        write_integer(ctx.out, 1);
    } else {
        write_simple(ctx.out, "OK");
    }
}

/// `INCR`, `INCRBY`, `DECR`, `DECRBY` (an integer reply) and `INCRBYFLOAT` (a bulk string).
/// A key holding nothing counts from 0, a string from its number. Only this node's
/// contribution is written, so increments made at once on other nodes all count; a `SET` or
/// `DEL` resets what it observed of them.
pub(crate) fn counter(ctx: &mut Ctx<'_>, db: &mut dyn Db, req: Request<'_>) {
    let name = req.arg(0).to_ascii_lowercase();
    let by = match name.as_slice() {
        b"incr" => Increment::Int(1),
        b"decr" => Increment::Int(-1),
        b"incrby" | b"decrby" => {
            let Some(n) = parse_i64(req.arg(2)) else {
                return ctx.error(NOT_AN_INTEGER);
            };
            if name == b"incrby" {
                Increment::Int(n)
            } else {
                let Some(n) = n.checked_neg() else {
                    return ctx.error("ERR decrement would overflow");
                };
                Increment::Int(n)
            }
        }
        _ => match parse_float(req.arg(2)) {
            Some(f) => Increment::Float(f),
            None => return ctx.error("ERR value is not a valid float"),
        },
    };
    match db.incr(Bytes::copy_from_slice(req.arg(1)), by) {
        Ok(v) => match by {
            Increment::Int(_) => match parse_i64(&v) {
                Some(n) => write_integer(ctx.out, n),
                None => ctx.error(NOT_AN_INTEGER),
            },
            Increment::Float(_) => write_bulk(ctx.out, &v),
        },
        Err(e) => ctx.cache_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::clamp_range;

    #[test]
    fn ranges_clamp_like_redis() {
        // "This is a string", 16 bytes.
        assert_eq!(clamp_range(0, 3, 16), Some(0..4));
        assert_eq!(clamp_range(-3, -1, 16), Some(13..16));
        assert_eq!(clamp_range(0, -1, 16), Some(0..16));
        assert_eq!(clamp_range(10, 100, 16), Some(10..16));
        assert_eq!(clamp_range(5, 3, 16), None);
        assert_eq!(clamp_range(-1, -5, 16), None);
        assert_eq!(clamp_range(-100, 2, 16), Some(0..3));
        assert_eq!(clamp_range(0, 0, 0), None);
        assert_eq!(clamp_range(20, 30, 16), None);
    }
}
