//! Server commands: `CONFIG GET | SET | RESETSTAT | REWRITE | HELP`, `TIME`, `SHUTDOWN`,
//! `WAIT`, `WAITAOF`, and `CLIENT PAUSE | UNPAUSE` with the wait a paused command makes.

use super::pubsub::{deliver, next_delivery};
use super::tracking::deliver_pushes;
use super::{Ctx, Kind, NOT_AN_INTEGER, SYNTAX_ERROR, Spec, is, truncated};
use crate::frame::{
    Request, parse_i64, write_array_len, write_bulk, write_integer, write_map_len, write_simple,
};
use crate::glob::glob_match;
use crate::wire::send;
use std::sync::atomic::Ordering;

/// The parameters `CONFIG GET` shows: what dice has, and what Redis clients ask of a server
/// that keeps no RDB or AOF files. `requirepass` is never shown.
fn parameters(ctx: &Ctx<'_>) -> Vec<(&'static str, String)> {
    let server = ctx.server;
    let limits = server.config.frame_limits(&server.cache);
    let timeout = server.timeout_ms.load(Ordering::Relaxed) / 1000;
    let memory = server.cache.memory_limit();
    let bind = ctx
        .session
        .entry
        .local
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    vec![
        ("appendonly", "no".into()),
        ("bind", bind),
        (
            "client-query-buffer-limit",
            limits.max_request_len.to_string(),
        ),
        ("cluster-enabled", "no".into()),
        ("databases", "1".into()),
        ("dbfilename", "dice.sqlite3".into()),
        ("dir", server.cache.dir().display().to_string()),
        ("maxclients", server.config.max_clients.to_string()),
        ("maxmemory", memory.max_bytes.to_string()),
        ("maxmemory-policy", memory.policy.to_string()),
        ("maxmemory-samples", memory.samples.to_string()),
        (
            "notify-keyspace-events",
            crate::pubsub::notify::to_string(*server.keyspace_events.borrow()),
        ),
        ("port", server.port.to_string()),
        ("proto-max-bulk-len", limits.max_bulk_len.to_string()),
        ("save", String::new()),
        ("timeout", timeout.to_string()),
        (
            "tracking-table-max-keys",
            server.tracking.max_keys.load(Ordering::Relaxed).to_string(),
        ),
    ]
}

const CONFIG_HELP: &[&str] = &[
    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET <pattern>",
    "    Return parameters matching the glob-like <pattern> and their values.",
    "SET <directive> <value>",
    "    Set the configuration <directive> to <value>.",
    "RESETSTAT",
    "    Reset statistics reported by the INFO command.",
    "REWRITE",
    "    Rewrite the configuration file.",
    "HELP",
    "    Print this help.",
];

/// `CONFIG GET pattern [pattern ...]` (a map), `CONFIG SET parameter value [parameter
/// value ...]` (`timeout`, `notify-keyspace-events`, `tracking-table-max-keys`,
/// `maxmemory`, `maxmemory-policy` and `maxmemory-samples` change at run time; setting
/// another shown parameter to the value it has is accepted), `CONFIG RESETSTAT`, `CONFIG
/// REWRITE` (no file), `CONFIG HELP`.
pub(crate) fn config(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let sub = req.arg(1);
    let argc = req.len();
    if is(sub, "get") {
        if argc < 3 {
            return ctx.wrong_arity("config|get");
        }
        let params = parameters(ctx);
        let patterns: Vec<Vec<u8>> = req.args().skip(2).map(|p| p.to_ascii_lowercase()).collect();
        let matching: Vec<&(&str, String)> = params
            .iter()
            .filter(|(name, _)| patterns.iter().any(|p| glob_match(p, name.as_bytes())))
            .collect();
        write_map_len(ctx.out, matching.len(), ctx.session.proto);
        for (name, value) in matching {
            write_bulk(ctx.out, name.as_bytes());
            write_bulk(ctx.out, value.as_bytes());
        }
    } else if is(sub, "set") {
        if argc < 4 || !argc.is_multiple_of(2) {
            return ctx.wrong_arity("config|set");
        }
        config_set(ctx, req);
    } else if is(sub, "resetstat") {
        if argc != 2 {
            return ctx.wrong_arity("config|resetstat");
        }
        ctx.server.stats.reset();
        ctx.server.pubsub.reset_stats();
        ctx.server.tracking.stats.reset();
        write_simple(ctx.out, "OK");
    } else if is(sub, "rewrite") {
        if argc != 2 {
            return ctx.wrong_arity("config|rewrite");
        }
        ctx.error("ERR The server is running without a config file");
    } else if is(sub, "help") {
        if argc != 2 {
            return ctx.wrong_arity("config|help");
        }
        write_array_len(ctx.out, CONFIG_HELP.len());
        for l in CONFIG_HELP {
            write_simple(ctx.out, l);
        }
    } else {
        super::connection::unknown_subcommand(ctx, sub, "CONFIG");
    }
}

/// `CONFIG SET`: every pair is checked before any is applied.
fn config_set(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let params = parameters(ctx);
    let mut timeout = None;
    let mut events = None;
    let mut tracking_max = None;
    let mut memory = ctx.server.cache.memory_limit();
    let memory_was = memory;
    for j in (2..req.len()).step_by(2) {
        let (name, value) = (req.arg(j).to_ascii_lowercase(), req.arg(j + 1));
        let Some((name, current)) = params.iter().find(|(n, _)| n.as_bytes() == name) else {
            let text = format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                truncated(&name, 128)
            );
            return ctx.error(&text);
        };
        if *name == "timeout" {
            match parse_i64(value) {
                Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => timeout = Some(n as u64),
                Some(_) => {
                    return ctx.error(
                        "ERR CONFIG SET failed (possibly related to argument 'timeout') - \
                         argument must be between 0 and 2147483647 inclusive",
                    );
                }
                None => {
                    return ctx.error(
                        "ERR CONFIG SET failed (possibly related to argument 'timeout') - \
                         argument couldn't be parsed into an integer",
                    );
                }
            }
        } else if *name == "notify-keyspace-events" {
            match crate::pubsub::notify::parse(value) {
                Some(f) => events = Some(f),
                None => {
                    return ctx.error(
                        "ERR CONFIG SET failed (possibly related to argument \
                         'notify-keyspace-events') - Invalid event class character. Use \
                         'Ag$lshzxeKEtmdn'.",
                    );
                }
            }
        } else if *name == "tracking-table-max-keys" {
            match parse_i64(value) {
                Some(n) if n >= 0 => tracking_max = Some(n as usize),
                _ => {
                    return ctx.error(
                        "ERR CONFIG SET failed (possibly related to argument \
                         'tracking-table-max-keys') - argument couldn't be parsed into an \
                         integer",
                    );
                }
            }
        } else if *name == "maxmemory" {
            match std::str::from_utf8(value)
                .ok()
                .and_then(dice_core::evict::parse_memory)
            {
                Some(n) => memory.max_bytes = n,
                None => {
                    return ctx.error(
                        "ERR CONFIG SET failed (possibly related to argument 'maxmemory') - \
                         argument must be a memory value",
                    );
                }
            }
        } else if *name == "maxmemory-policy" {
            match std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<dice_core::Policy>().ok())
            {
                Some(p) => memory.policy = p,
                None => {
                    return ctx.error(
                        "ERR CONFIG SET failed (possibly related to argument \
                         'maxmemory-policy') - argument(s) must be one of the following: \
                         volatile-lru, allkeys-lru, volatile-lfu, allkeys-lfu, \
                         volatile-random, allkeys-random, volatile-ttl, noeviction",
                    );
                }
            }
        } else if *name == "maxmemory-samples" {
            match parse_i64(value) {
                Some(n) if (1..=dice_core::evict::MAX_SAMPLES as i64).contains(&n) => {
                    memory.samples = n as usize;
                }
                _ => {
                    return ctx.error(
                        "ERR CONFIG SET failed (possibly related to argument \
                         'maxmemory-samples') - argument must be between 1 and 64 inclusive",
                    );
                }
            }
        } else if current.as_bytes() != value {
            let text = format!(
                "ERR CONFIG SET failed (possibly related to argument '{name}') - can't set \
                 immutable config"
            );
            return ctx.error(&text);
        }
    }
    if let Some(f) = events {
        use crate::pubsub::notify::active;
        let was = ctx.server.keyspace_events.send_replace(f);
        if active(f) && !active(was) {
            // Subscribed now, before the reply: every later write fires.
            let changes = ctx.server.cache.subscribe();
            let _ = ctx.server.keyspace_subscribe.send(changes);
        }
    }
    if memory != memory_was {
        ctx.server.cache.set_memory_limit(memory);
    }
    if let Some(max) = tracking_max {
        // Takes effect at the next read remembered (as in Redis, evicting then).
        ctx.server.tracking.max_keys.store(max, Ordering::Relaxed);
    }
    if let Some(secs) = timeout {
        ctx.server
            .timeout_ms
            .store(secs.saturating_mul(1000), Ordering::Relaxed);
    }
    write_simple(ctx.out, "OK");
}

/// `TIME`: Unix seconds and microseconds, as two bulk strings.
pub(crate) fn time(ctx: &mut Ctx<'_>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    write_array_len(ctx.out, 2);
    write_bulk(ctx.out, now.as_secs().to_string().as_bytes());
    write_bulk(ctx.out, now.subsec_micros().to_string().as_bytes());
}

/// `SHUTDOWN [NOSAVE | SAVE] [NOW] [FORCE]`: asks the process that owns the server to stop
/// (see [`crate::RespHandle::shutdown_requested`]); `dice node` then stops as on SIGTERM:
/// it stops taking clients, commits what is pending and exits. Like Redis, no reply: the
/// connection closes. Every write is committed before it is acknowledged, so `NOSAVE` and
/// `SAVE` change nothing.
pub(crate) fn shutdown(ctx: &mut Ctx<'_>, req: Request<'_>) {
    for opt in req.args().skip(1) {
        if is(opt, "abort") {
            return ctx.error("ERR No shutdown in progress.");
        }
        if !["nosave", "save", "now", "force"]
            .iter()
            .any(|o| is(opt, o))
        {
            return ctx.error(SYNTAX_ERROR);
        }
    }
    let requests = &ctx.server.shutdown_requests;
    if requests.receiver_count() == 0 {
        tracing::warn!(
            peer = %ctx.session.peer,
            "SHUTDOWN refused: nothing in this process takes shutdown requests"
        );
        return ctx.error("ERR Errors trying to SHUTDOWN. Check logs.");
    }
    tracing::info!(peer = %ctx.session.peer, id = ctx.session.id, "SHUTDOWN requested by a client");
    requests.send_replace(true);
    ctx.session.quit = true;
}

/// How often `WAIT` asks the cluster provider again.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// `WAIT numreplicas timeout`: how many peers acknowledged holding this connection's latest
/// write (received and applied in memory), waiting up to `timeout` milliseconds (0: with no
/// bound, as in Redis) until at least `numreplicas` have. A server without a cluster
/// provider answers 0 at once. The wait ends early if the client goes away or is killed.
pub(crate) async fn wait(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let Some(want) = parse_i64(req.arg(1)) else {
        return ctx.error(NOT_AN_INTEGER);
    };
    let Some(timeout) = parse_i64(req.arg(2)) else {
        return ctx.error("ERR timeout is not an integer or out of range");
    };
    if timeout < 0 {
        return ctx.error("ERR timeout is negative");
    }
    let Some(cluster) = ctx.server.cluster.clone() else {
        return write_integer(ctx.out, 0);
    };
    let seq = ctx.session.last_write_seq;
    // A timeout too far to represent waits with no bound, like 0.
    let deadline = (timeout > 0)
        .then(|| {
            tokio::time::Instant::now()
                .checked_add(std::time::Duration::from_millis(timeout.unsigned_abs()))
        })
        .flatten();
    let mut acked = cluster.acked_by(seq);
    // Watch the socket for the client going away, until it sends more (then just wait).
    let mut watch_socket = true;
    while (acked as i64) < want {
        let now = tokio::time::Instant::now();
        let pause = match deadline {
            Some(d) if d <= now => break,
            Some(d) => (d - now).min(WAIT_POLL),
            None => WAIT_POLL,
        };
        let mut probe = [0u8; 1];
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            peeked = ctx.wire.stream.peek(&mut probe), if watch_socket => match peeked {
                Ok(0) | Err(_) => {
                    ctx.wire.broken = true;
                    return;
                }
                Ok(_) => watch_socket = false,
            },
            () = ctx.session.entry.killed.notified() => {
                // CLIENT KILL: close this connection (the permit is taken here).
                ctx.wire.broken = true;
                return;
            }
        }
        acked = cluster.acked_by(seq);
    }
    write_integer(ctx.out, acked as i64);
}

/// `WAITAOF`: dice has no append-only file (every write is committed to SQLite before it
/// is acknowledged), so it answers as Redis does with `appendonly no`.
pub(crate) fn waitaof(ctx: &mut Ctx<'_>) {
    ctx.error(
        "ERR WAITAOF cannot be used when appendonly is disabled: dice has no AOF (every \
         write is committed to disk before it is acknowledged); use WAIT for replicas",
    );
}

/// Whether `spec` waits out a `CLIENT PAUSE ... WRITE`: what may write or be replicated,
/// as in Redis (writes, `PUBLISH`, an `EXEC` with a queued write).
fn pauses_on_write(ctx: &Ctx<'_>, spec: &Spec) -> bool {
    spec.writes()
        || spec.kind == Kind::Publish
        || (spec.kind == Kind::Exec && ctx.session.multi.as_ref().is_some_and(|m| m.writes()))
}

/// Waits while a `CLIENT PAUSE` holds `spec` (every command in `ALL` mode, those that write
/// in `WRITE` mode), as Redis makes a paused client's commands wait, never fail. What this
/// connection has already answered is sent first, and pub/sub messages and invalidations
/// keep flowing meanwhile. False if the connection must close (gone, or killed).
pub(crate) async fn wait_unpaused(ctx: &mut Ctx<'_>, spec: &Spec) -> bool {
    let mut pause = ctx.server.pause.subscribe();
    let mut sent = false;
    let mut watch_socket = true;
    loop {
        let p = *pause.borrow_and_update();
        let Some(until) = p.until else {
            return true;
        };
        if until <= tokio::time::Instant::now() || !(p.all || pauses_on_write(ctx, spec)) {
            return true;
        }
        if !sent {
            sent = true;
            if !send(ctx.server, ctx.out, ctx.batch, ctx.wire).await {
                return false;
            }
            ctx.reply_start = ctx.out.len();
        }
        let mut probe = [0u8; 1];
        let mut delivery = None;
        let mut push = None;
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            changed = pause.changed() => if changed.is_err() {
                return true;
            },
            peeked = ctx.wire.stream.peek(&mut probe), if watch_socket => match peeked {
                Ok(0) | Err(_) => {
                    ctx.wire.broken = true;
                    return false;
                }
                Ok(_) => watch_socket = false,
            },
            Some(d) = next_delivery(&mut ctx.session.pubsub) => delivery = Some(d),
            Some(p) = ctx.session.pushes.recv() => push = Some(p),
            () = ctx.session.entry.killed.notified() => {
                ctx.wire.broken = true;
                return false;
            }
        }
        let server = ctx.server;
        if let Some(d) = delivery
            && !deliver(server, ctx.session, d, ctx.out, ctx.batch, ctx.wire).await
        {
            ctx.wire.broken = true;
            return false;
        }
        if let Some(p) = push
            && !deliver_pushes(server, ctx.session, p, ctx.out, ctx.batch, ctx.wire).await
        {
            ctx.wire.broken = true;
            return false;
        }
        ctx.reply_start = ctx.out.len();
    }
}

/// `CLIENT PAUSE timeout [WRITE | ALL]`: commands wait for `timeout` milliseconds (all of
/// them, or only those that write). A pause already in force keeps its later end and its
/// `ALL` mode, as in Redis. Peers' replicated writes keep applying meanwhile.
pub(crate) fn client_pause(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let mut all = true;
    if let Some(mode) = req.get(3) {
        if is(mode, "write") {
            all = false;
        } else if !is(mode, "all") {
            return ctx.error("ERR CLIENT PAUSE mode must be WRITE or ALL");
        }
    }
    let Some(ms) = parse_i64(req.arg(2)) else {
        return ctx.error("ERR timeout is not an integer or out of range");
    };
    if ms < 0 {
        return ctx.error("ERR timeout is negative");
    }
    let now = tokio::time::Instant::now();
    // A timeout too far to represent pauses for a year (longer than any wait in practice).
    let until = now
        .checked_add(std::time::Duration::from_millis(ms.unsigned_abs()))
        .unwrap_or_else(|| now + std::time::Duration::from_secs(365 * 86_400));
    ctx.server.pause.send_modify(|p| {
        let active = p.until.is_some_and(|u| u > now);
        p.all = all || (active && p.all);
        p.until = Some(match p.until {
            Some(u) if active => u.max(until),
            _ => until,
        });
    });
    tracing::info!(peer = %ctx.session.peer, ms, all, "clients paused (CLIENT PAUSE)");
    write_simple(ctx.out, "OK");
}

/// `CLIENT UNPAUSE`: ends the pause; waiting commands run.
pub(crate) fn client_unpause(ctx: &mut Ctx<'_>) {
    ctx.server.pause.send_replace(Default::default());
    write_simple(ctx.out, "OK");
}
