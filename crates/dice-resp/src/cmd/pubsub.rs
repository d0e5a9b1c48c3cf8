//! Pub/sub commands: `SUBSCRIBE`, `PSUBSCRIBE`, `UNSUBSCRIBE`, `PUNSUBSCRIBE`, `PUBLISH`,
//! `PUBSUB CHANNELS|NUMSUB|NUMPAT|HELP`, and `RESET`. The hub is in [`crate::pubsub`].

use super::{Ctx, is, truncated};
use crate::frame::{
    Protocol, Request, write_array_len, write_bulk, write_integer, write_null, write_push_len,
    write_simple,
};
use crate::pubsub::{ClientSubs, Delivery, Refused};

/// Appends a message (`message` or `pmessage`) as the connection's protocol frames it: a
/// push in RESP3, an array in RESP2.
pub(crate) fn write_delivery(out: &mut Vec<u8>, d: &Delivery, proto: Protocol) {
    match &d.pattern {
        None => {
            write_push_len(out, 3, proto);
            write_bulk(out, b"message");
        }
        Some(p) => {
            write_push_len(out, 4, proto);
            write_bulk(out, b"pmessage");
            write_bulk(out, p);
        }
    }
    write_bulk(out, &d.channel);
    write_bulk(out, &d.payload);
}

/// Whether a RESP2 connection with subscriptions may run `name` (Redis's list).
pub(crate) fn allowed_when_subscribed(kind: super::Kind) -> bool {
    use super::Kind;
    matches!(
        kind,
        Kind::Subscribe
            | Kind::Psubscribe
            | Kind::Unsubscribe
            | Kind::Punsubscribe
            | Kind::Ping
            | Kind::Quit
            | Kind::Reset
    )
}

/// The error of a command a subscribed RESP2 connection may not run.
pub(crate) fn not_allowed_text(name: &str) -> String {
    format!(
        "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / \
         RESET are allowed in this context"
    )
}

/// Whether the connection has any subscription.
pub(crate) fn subscribed(ctx: &Ctx<'_>) -> bool {
    ctx.session.pubsub.as_ref().is_some_and(|s| s.count() > 0)
}

fn confirm(ctx: &mut Ctx<'_>, kind: &[u8], name: Option<&[u8]>, count: usize) {
    let proto = ctx.proto();
    write_push_len(ctx.out, 3, proto);
    write_bulk(ctx.out, kind);
    match name {
        Some(n) => write_bulk(ctx.out, n),
        None => write_null(ctx.out, proto),
    }
    write_integer(ctx.out, count as i64);
}

/// Checks the length of channel names and patterns; replies the error if one is too long.
fn names_ok(ctx: &mut Ctx<'_>, req: &Request<'_>, names: std::ops::Range<usize>) -> bool {
    let max = ctx.server.config.max_channel_len;
    if let Some(n) = names.map(|i| req.arg(i)).find(|n| n.len() > max) {
        let text = format!(
            "ERR channel name or pattern of {} bytes is longer than {max} bytes \
             (max_channel_len)",
            n.len()
        );
        ctx.error(&text);
        return false;
    }
    true
}

/// `SUBSCRIBE channel...` and `PSUBSCRIBE pattern...`: one confirmation per name, each with
/// the connection's count of subscriptions after it.
pub(crate) fn subscribe(ctx: &mut Ctx<'_>, req: Request<'_>, pattern: bool) {
    if !names_ok(ctx, &req, 1..req.len()) {
        return;
    }
    let config = &ctx.server.config;
    let (per_client, total) = (
        config.max_subscriptions_per_client,
        config.max_subscriptions_total,
    );
    let hub = ctx.server.pubsub.clone();
    let entry = ctx.session.entry.clone();
    let subs = ctx
        .session
        .pubsub
        .get_or_insert_with(|| Box::new(ClientSubs::new(hub, entry)));
    let names: Vec<&[u8]> = req.args().skip(1).collect();
    let set = if pattern {
        &subs.patterns
    } else {
        &subs.channels
    };
    let had: Vec<bool> = names.iter().map(|n| set.contains(*n)).collect();
    let before = subs.count();
    match subs.add_all(&names, pattern, per_client, total) {
        Ok(()) => {}
        Err(Refused::PerClient) => {
            let text = format!(
                "ERR this client would pass {per_client} subscriptions \
                 (max_subscriptions_per_client)"
            );
            return ctx.error(&text);
        }
        Err(Refused::Total) => {
            let text = format!(
                "ERR the server's clients would pass {total} subscriptions together \
                 (max_subscriptions_total)"
            );
            return ctx.error(&text);
        }
    }
    // One confirmation per name, each with the count after it, as if added one by one.
    let kind: &[u8] = if pattern { b"psubscribe" } else { b"subscribe" };
    let mut count = before;
    let mut counted = std::collections::HashSet::new();
    for (name, had) in names.into_iter().zip(had) {
        if !had && counted.insert(name) {
            count += 1;
        }
        confirm(ctx, kind, Some(name), count);
    }
    note_counts(ctx);
}

/// `UNSUBSCRIBE [channel...]` and `PUNSUBSCRIBE [pattern...]`: from the names given, or
/// from all; one confirmation per name (one with a null name if there was none).
pub(crate) fn unsubscribe(ctx: &mut Ctx<'_>, req: Request<'_>, pattern: bool) {
    let kind: &[u8] = if pattern {
        b"punsubscribe"
    } else {
        b"unsubscribe"
    };
    let names: Vec<bytes::Bytes> = if req.len() > 1 {
        req.args()
            .skip(1)
            .map(bytes::Bytes::copy_from_slice)
            .collect()
    } else {
        ctx.session.pubsub.as_ref().map_or_else(Vec::new, |s| {
            let set = if pattern { &s.patterns } else { &s.channels };
            set.iter().cloned().collect()
        })
    };
    if names.is_empty() {
        let count = ctx.session.pubsub.as_ref().map_or(0, |s| s.count());
        confirm(ctx, kind, None, count);
        return;
    }
    for name in names {
        let count = match ctx.session.pubsub.as_mut() {
            Some(s) => {
                s.remove(&name, pattern);
                s.count()
            }
            None => 0,
        };
        confirm(ctx, kind, Some(&name), count);
    }
    note_counts(ctx);
}

/// Shows the connection's counts in `CLIENT LIST` (`sub=`, `psub=`, flag `P`).
fn note_counts(ctx: &Ctx<'_>) {
    let (c, p) = ctx
        .session
        .pubsub
        .as_ref()
        .map_or((0, 0), |s| (s.channels.len(), s.patterns.len()));
    let e = &ctx.session.entry;
    e.sub.store(c as u64, std::sync::atomic::Ordering::Relaxed);
    e.psub.store(p as u64, std::sync::atomic::Ordering::Relaxed);
}

/// Drops every subscription of the connection (`RESET`).
pub(crate) fn unsubscribe_all(ctx: &mut Ctx<'_>) {
    ctx.session.pubsub = None;
    note_counts(ctx);
}

/// `PUBLISH channel message`: the number of subscribers of this node that received it.
pub(crate) fn publish(ctx: &mut Ctx<'_>, req: Request<'_>) {
    if !names_ok(ctx, &req, 1..2) {
        return;
    }
    let received = ctx.server.pubsub.publish(req.arg(1), req.arg(2));
    write_integer(ctx.out, received as i64);
}

const PUBSUB_HELP: &[&str] = &[
    "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CHANNELS [<pattern>]",
    "    Return the currently active channels matching a <pattern> (default: '*').",
    "NUMPAT",
    "    Return number of subscriptions to patterns.",
    "NUMSUB [<channel> ...]",
    "    Return the number of subscribers for the specified channels, excluding",
    "    pattern subscriptions(default: no channels).",
    "HELP",
    "    Print this help.",
];

/// `PUBSUB CHANNELS [pattern] | NUMSUB [channel...] | NUMPAT | HELP`, about this node's
/// subscribers only.
pub(crate) fn pubsub(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let sub = req.arg(1);
    let argc = req.len();
    let hub = ctx.server.pubsub.clone();
    if is(sub, "channels") {
        if argc > 3 {
            return ctx.wrong_arity("pubsub|channels");
        }
        let list = hub.channels(req.get(2));
        write_array_len(ctx.out, list.len());
        for c in list {
            write_bulk(ctx.out, &c);
        }
    } else if is(sub, "numsub") {
        write_array_len(ctx.out, (argc - 2) * 2);
        for c in req.args().skip(2) {
            write_bulk(ctx.out, c);
            write_integer(ctx.out, hub.numsub(c) as i64);
        }
    } else if is(sub, "numpat") {
        if argc != 2 {
            return ctx.wrong_arity("pubsub|numpat");
        }
        write_integer(ctx.out, hub.numpat() as i64);
    } else if is(sub, "help") {
        if argc != 2 {
            return ctx.wrong_arity("pubsub|help");
        }
        write_array_len(ctx.out, PUBSUB_HELP.len());
        for l in PUBSUB_HELP {
            write_simple(ctx.out, l);
        }
    } else {
        let text = format!(
            "ERR unknown subcommand '{}'. Try PUBSUB HELP.",
            truncated(sub, 128)
        );
        ctx.error(&text);
    }
}

/// `PING [message]` on a subscribed RESP2 connection: `["pong", message or ""]`, as Redis.
pub(crate) fn ping_subscribed(ctx: &mut Ctx<'_>, req: Request<'_>) {
    write_array_len(ctx.out, 2);
    write_bulk(ctx.out, b"pong");
    write_bulk(ctx.out, req.get(1).unwrap_or(b""));
}

/// `RESET`: out of any transaction, watch, subscription and client tracking, back to RESP2,
/// no name, and logged out when a password is set; `+RESET`.
pub(crate) fn reset(ctx: &mut Ctx<'_>) {
    ctx.session.multi = None;
    ctx.session.watched = Default::default();
    unsubscribe_all(ctx);
    ctx.server.tracking.disable(ctx.session.id);
    ctx.session.tracking = Default::default();
    ctx.session.proto = Protocol::Resp2;
    ctx.session
        .entry
        .resp
        .store(2, std::sync::atomic::Ordering::Relaxed);
    ctx.session.name = None;
    if let Ok(mut n) = ctx.session.entry.name.lock() {
        *n = None;
    }
    ctx.session.authenticated = ctx.server.config.requirepass.is_none();
    write_simple(ctx.out, "RESET");
}

/// The next pub/sub message for a connection; never, while it has no subscription queue.
pub(crate) async fn next_delivery(
    subs: &mut Option<Box<crate::pubsub::ClientSubs>>,
) -> Option<Delivery> {
    match subs {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Writes `first` and whatever else is queued (up to [`crate::wire::OUTPUT_FLUSH_AT`] at a time) to the
/// client. False once the connection must close (gone, stalled, or past its pub/sub limit).
pub(crate) async fn deliver(
    state: &crate::state::ServerState,
    session: &mut super::Session,
    first: Delivery,
    out: &mut Vec<u8>,
    batch: &mut crate::wire::Batch,
    wire: &mut crate::wire::Wire,
) -> bool {
    let mut next = Some(first);
    while let Some(d) = next {
        write_delivery(out, &d, session.proto);
        if out.len() >= crate::wire::OUTPUT_FLUSH_AT
            && !crate::wire::send(state, out, batch, wire).await
        {
            return false;
        }
        next = session.pubsub.as_mut().and_then(|s| s.try_next());
    }
    if session.pubsub.as_ref().is_some_and(|s| s.overflowed()) {
        return false;
    }
    crate::wire::send(state, out, batch, wire).await
}
