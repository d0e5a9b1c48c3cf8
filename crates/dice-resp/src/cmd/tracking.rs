//! `CLIENT TRACKING | CACHING | GETREDIR | TRACKINGINFO`: client-side caching, with Redis's
//! options, rules and error texts. The state and the invalidations are in
//! [`crate::tracking`].

use super::{Ctx, NOT_AN_INTEGER, SYNTAX_ERROR, is, truncated};
use crate::frame::{
    Request, parse_i64, write_array_len, write_bulk, write_integer, write_map_len, write_set_len,
    write_simple,
};
use crate::tracking::{Mode, overlap};
use bytes::Bytes;
use std::sync::Arc;

/// `CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX prefix ...] [BCAST] [OPTIN] [OPTOUT]
/// [NOLOOP]`.
pub(crate) fn tracking(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let mut mode = Mode::default();
    let mut prefixes: Vec<&[u8]> = Vec::new();
    let mut j = 3;
    while j < req.len() {
        let opt = req.arg(j);
        let more = j + 1 < req.len();
        if is(opt, "redirect") && more {
            j += 1;
            if mode.redirect != 0 {
                return ctx.error("ERR A client can only redirect to a single other client");
            }
            let Some(id) = parse_i64(req.arg(j)) else {
                return ctx.error(NOT_AN_INTEGER);
            };
            // Redis requires the target to exist now (it may go later).
            let exists = u64::try_from(id).is_ok_and(|id| {
                ctx.server
                    .registry
                    .lock()
                    .is_ok_and(|r| r.contains_key(&id))
            });
            if !exists {
                return ctx.error("ERR The client ID you want redirect to does not exist");
            }
            mode.redirect = id as u64;
        } else if is(opt, "bcast") {
            mode.bcast = true;
        } else if is(opt, "optin") {
            mode.optin = true;
        } else if is(opt, "optout") {
            mode.optout = true;
        } else if is(opt, "noloop") {
            mode.noloop = true;
        } else if is(opt, "prefix") && more {
            j += 1;
            prefixes.push(req.arg(j));
        } else {
            return ctx.error(SYNTAX_ERROR);
        }
        j += 1;
    }
    let switch = req.arg(2);
    if is(switch, "off") {
        ctx.server.tracking.disable(ctx.session.id);
        ctx.session.tracking = Default::default();
        return write_simple(ctx.out, "OK");
    }
    if !is(switch, "on") {
        return ctx.error(SYNTAX_ERROR);
    }
    if !mode.bcast && !prefixes.is_empty() {
        return ctx.error("ERR PREFIX option requires BCAST mode to be enabled");
    }
    let current = ctx.session.tracking.mode.clone();
    if let Some(cur) = &current
        && cur.bcast != mode.bcast
    {
        return ctx.error(
            "ERR You can't switch BCAST mode on/off before disabling tracking for this \
             client, and then re-enabling it with a different mode.",
        );
    }
    if mode.bcast && (mode.optin || mode.optout) {
        return ctx.error("ERR OPTIN and OPTOUT are not compatible with BCAST");
    }
    if mode.optin && mode.optout {
        return ctx.error("ERR You can't specify both OPTIN mode and OPTOUT mode");
    }
    if let Some(cur) = &current
        && ((mode.optin && cur.optout) || (mode.optout && cur.optin))
    {
        return ctx.error(
            "ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this \
             client, and then re-enabling it with a different mode.",
        );
    }
    if mode.bcast {
        let max = ctx.server.cache.options().limits.max_key_len;
        if let Some(p) = prefixes.iter().find(|p| p.len() > max) {
            let text = format!(
                "ERR prefix of {} bytes is longer than the longest key ({max} bytes)",
                p.len()
            );
            return ctx.error(&text);
        }
        for (i, p) in prefixes.iter().enumerate() {
            if let Some(existing) = ctx.session.tracking.prefixes.iter().find(|e| overlap(e, p)) {
                let text = format!(
                    "ERR Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a \
                     single client must not overlap.",
                    truncated(p, 128),
                    truncated(existing, 128)
                );
                return ctx.error(&text);
            }
            if let Some(other) = prefixes[i + 1..].iter().find(|o| overlap(p, o)) {
                let text = format!(
                    "ERR Prefix '{}' overlaps with another provided prefix '{}'. Prefixes \
                     for a single client must not overlap.",
                    truncated(p, 128),
                    truncated(other, 128)
                );
                return ctx.error(&text);
            }
        }
    }
    let redirect = (mode.redirect != 0)
        .then(|| {
            ctx.server
                .registry
                .lock()
                .ok()
                .and_then(|r| r.get(&mode.redirect).map(Arc::downgrade))
        })
        .flatten();
    if mode.redirect != 0 && redirect.is_none() {
        return ctx.error("ERR The client ID you want redirect to does not exist");
    }
    let prefixes: Vec<Bytes> = prefixes.into_iter().map(Bytes::copy_from_slice).collect();
    let server = ctx.server;
    let entry = ctx.session.entry.clone();
    if let Err(text) =
        server
            .tracking
            .enable(&server.cache, &entry, mode.clone(), redirect, &prefixes)
    {
        return ctx.error(&text);
    }
    let t = &mut ctx.session.tracking;
    if mode.bcast {
        let wanted = if prefixes.is_empty() {
            vec![Bytes::new()]
        } else {
            prefixes
        };
        for p in wanted {
            if !t.prefixes.contains(&p) {
                t.prefixes.push(p);
            }
        }
    }
    t.mode = Some(mode);
    write_simple(ctx.out, "OK");
}

/// `CLIENT CACHING YES|NO`: whether the next command's reads are remembered (`OPTIN`,
/// `OPTOUT` modes).
pub(crate) fn caching(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let Some(mode) = ctx.session.tracking.mode.clone() else {
        return ctx.error(
            "ERR CLIENT CACHING can be called only when the client is in tracking mode with \
             OPTIN or OPTOUT mode enabled",
        );
    };
    let opt = req.arg(2);
    if is(opt, "yes") {
        if !mode.optin {
            return ctx.error(
                "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.",
            );
        }
    } else if is(opt, "no") {
        if !mode.optout {
            return ctx.error(
                "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.",
            );
        }
    } else {
        return ctx.error(SYNTAX_ERROR);
    }
    ctx.session.tracking.caching = true;
    write_simple(ctx.out, "OK");
}

/// `CLIENT GETREDIR`: the connection invalidations go to; 0 for this one, -1 without
/// tracking.
pub(crate) fn getredir(ctx: &mut Ctx<'_>) {
    let redirect = ctx
        .session
        .tracking
        .mode
        .as_ref()
        .map_or(-1, |m| i64::try_from(m.redirect).unwrap_or(-1));
    write_integer(ctx.out, redirect);
}

/// `CLIENT TRACKINGINFO`: a map of `flags` (a set), `redirect` and `prefixes`.
pub(crate) fn trackinginfo(ctx: &mut Ctx<'_>) {
    let proto = ctx.proto();
    let t = &ctx.session.tracking;
    let mut flags: Vec<&str> = Vec::new();
    match &t.mode {
        None => flags.push("off"),
        Some(m) => {
            flags.push("on");
            if m.bcast {
                flags.push("bcast");
            }
            if m.optin {
                flags.push("optin");
                if t.caching {
                    flags.push("caching-yes");
                }
            }
            if m.optout {
                flags.push("optout");
                if t.caching {
                    flags.push("caching-no");
                }
            }
            if m.noloop {
                flags.push("noloop");
            }
            let broken = ctx
                .session
                .entry
                .tracking
                .load(std::sync::atomic::Ordering::Relaxed)
                & crate::tracking::FLAG_BROKEN_REDIRECT
                != 0;
            if broken {
                flags.push("broken_redirect");
            }
        }
    }
    let redirect = t
        .mode
        .as_ref()
        .map_or(-1, |m| i64::try_from(m.redirect).unwrap_or(-1));
    write_map_len(ctx.out, 3, proto);
    write_bulk(ctx.out, b"flags");
    write_set_len(ctx.out, flags.len(), proto);
    for f in flags {
        write_bulk(ctx.out, f.as_bytes());
    }
    write_bulk(ctx.out, b"redirect");
    write_integer(ctx.out, redirect);
    write_bulk(ctx.out, b"prefixes");
    write_array_len(ctx.out, t.prefixes.len());
    for p in &t.prefixes {
        write_bulk(ctx.out, p);
    }
}

/// Writes `first` and whatever other invalidation is queued (up to [`crate::wire::OUTPUT_FLUSH_AT`] at a
/// time) to the client. False once the connection must close.
pub(crate) async fn deliver_pushes(
    state: &crate::state::ServerState,
    session: &mut super::Session,
    first: crate::registry::Push,
    out: &mut Vec<u8>,
    batch: &mut crate::wire::Batch,
    wire: &mut crate::wire::Wire,
) -> bool {
    let mut next = Some(first);
    while let Some(p) = next {
        session.entry.inbox.taken(&p);
        let subscribed = session.pubsub.as_ref().is_some_and(|s| s.count() > 0);
        crate::tracking::write_push(out, &p, session.proto, subscribed);
        if out.len() >= crate::wire::OUTPUT_FLUSH_AT
            && !crate::wire::send(state, out, batch, wire).await
        {
            return false;
        }
        next = session.pushes.try_recv().ok();
    }
    if session.entry.inbox.overflowed() {
        return false;
    }
    crate::wire::send(state, out, batch, wire).await
}
