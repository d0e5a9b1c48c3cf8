//! String commands: `GET`, `SET`, `SETEX`, `PSETEX`, `GETDEL`, `MGET`, `MSET`.

use super::{Ctx, NOT_AN_INTEGER, SYNTAX_ERROR, expiry_ms, is, now_ms};
use crate::frame::{Request, parse_i64, write_array_len, write_bulk, write_null, write_simple};
use crate::server::OUTPUT_FLUSH_AT;
use bytes::Bytes;

/// `GET key`: the value bytes go straight from the map into the reply.
pub(crate) fn get(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let key = req.arg(1);
    let now = dice_core::now_ms();
    let proto = ctx.proto();
    let out = &mut *ctx.out;
    ctx.server.cache.with_replica(|r| match r.get(key, now) {
        Some(v) => write_bulk(out, v),
        None => write_null(out, proto),
    });
}

/// Most keys looked up under one hold of the cache's read lock by a multi-key read.
pub(crate) const KEYS_PER_LOCK: usize = 64;

/// `MGET key [key ...]`: streamed. The values are copied into the reply a few keys per
/// hold of the read lock, and the reply goes out whenever it passes the flush size, so
/// `MGET big big big ...` costs the connection about one value of memory, not all of them.
pub(crate) async fn mget(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let now = dice_core::now_ms();
    write_array_len(ctx.out, req.len() - 1);
    let mut keys = req.args().skip(1).peekable();
    let proto = ctx.proto();
    while keys.peek().is_some() {
        let out = &mut *ctx.out;
        ctx.server.cache.with_replica(|r| {
            for (i, key) in keys.by_ref().enumerate() {
                match r.get(key, now) {
                    Some(v) => write_bulk(out, v),
                    None => write_null(out, proto),
                }
                if out.len() >= OUTPUT_FLUSH_AT || i + 1 == KEYS_PER_LOCK {
                    break;
                }
            }
        });
        if !ctx.flush_if_full().await {
            return;
        }
    }
}

/// Which of `EX`, `PX`, `EXAT`, `PXAT` a `SET` carries.
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

/// Checks a `SET`/`SETEX` expiry argument like Redis: an integer, positive, and no overflow
/// once made absolute. Replies with the error and returns `None` otherwise.
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
    match expiry_ms(amount, unit_ms, absolute, now_ms()) {
        Some(at) if amount > 0 && at > 0 => Some(at as u64),
        _ => {
            let text = format!("ERR invalid expire time in '{command}' command");
            ctx.error(&text);
            None
        }
    }
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT ts | PXAT ts-ms | KEEPTTL]`.
///
/// A plain `SET` (with or without an expiry) is a blind write; `NX`, `XX`, `GET` and
/// `KEEPTTL` read the key first, in the same atomic step as the write.
pub(crate) async fn set(ctx: &mut Ctx<'_>, req: Request<'_>) {
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
    let key = Bytes::copy_from_slice(req.arg(1));
    let value = Bytes::copy_from_slice(req.arg(2));
    let cache = &ctx.server.cache;
    if !(nx || xx || get || keepttl) {
        match cache.write_unacked(key, Some(value), expires_at).await {
            Ok((_, generation)) => {
                ctx.wrote(generation);
                write_simple(ctx.out, "OK");
            }
            Err(e) => ctx.cache_error(&e),
        }
        return;
    }
    let mut old = None;
    let mut applied = false;
    let result = cache
        .update_unacked(key, |current| {
            let exists = current.is_some();
            let kept = current.as_ref().and_then(|c| c.1);
            if get {
                old = current.map(|c| c.0);
            }
            if (nx && exists) || (xx && !exists) {
                return None;
            }
            applied = true;
            Some((Some(value), if keepttl { kept } else { expires_at }))
        })
        .await;
    match result {
        Err(e) => ctx.cache_error(&e),
        Ok(written) => {
            ctx.wrote_if_any(&written);
            match (get, old) {
                (true, Some(v)) => write_bulk(ctx.out, &v),
                (true, None) => ctx.null(),
                (false, _) if applied => write_simple(ctx.out, "OK"),
                (false, _) => ctx.null(),
            }
        }
    }
}

/// `SETEX key seconds value` (`unit_ms` 1000) and `PSETEX key milliseconds value` (1).
pub(crate) async fn setex(ctx: &mut Ctx<'_>, req: Request<'_>, unit_ms: i64, command: &str) {
    let Some(at) = positive_expiry(ctx, req.arg(2), unit_ms, false, command) else {
        return;
    };
    let key = Bytes::copy_from_slice(req.arg(1));
    let value = Bytes::copy_from_slice(req.arg(3));
    match ctx
        .server
        .cache
        .write_unacked(key, Some(value), Some(at))
        .await
    {
        Ok((_, generation)) => {
            ctx.wrote(generation);
            write_simple(ctx.out, "OK");
        }
        Err(e) => ctx.cache_error(&e),
    }
}

/// `GETDEL key`: the value, and a tombstone in its place (written even if the key is absent
/// here, like every dice delete, so it also wins over older writes still on their way).
pub(crate) async fn getdel(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let key = Bytes::copy_from_slice(req.arg(1));
    let mut old = None;
    let result = ctx
        .server
        .cache
        .update_unacked(key, |current| {
            old = current.map(|c| c.0);
            Some((None, None))
        })
        .await;
    match result {
        Err(e) => ctx.cache_error(&e),
        Ok(written) => {
            ctx.wrote_if_any(&written);
            match old {
                Some(v) => write_bulk(ctx.out, &v),
                None => ctx.null(),
            }
        }
    }
}

/// `MSET key value [key value ...]`: every pair is checked against the limits before any is
/// written. (Not atomic: another client may see some of the keys before the others.)
pub(crate) async fn mset(ctx: &mut Ctx<'_>, req: Request<'_>) {
    if req.len().is_multiple_of(2) {
        ctx.wrong_arity("mset");
        return;
    }
    let limits = ctx.server.cache.options().limits;
    for i in (1..req.len()).step_by(2) {
        if let Err(e) = limits.check(req.arg(i), Some(req.arg(i + 1))) {
            ctx.cache_error(&e);
            return;
        }
    }
    for i in (1..req.len()).step_by(2) {
        let key = Bytes::copy_from_slice(req.arg(i));
        let value = Bytes::copy_from_slice(req.arg(i + 1));
        match ctx.server.cache.write_unacked(key, Some(value), None).await {
            Ok((_, generation)) => ctx.wrote(generation),
            Err(e) => {
                ctx.cache_error(&e);
                return;
            }
        }
    }
    write_simple(ctx.out, "OK");
}
