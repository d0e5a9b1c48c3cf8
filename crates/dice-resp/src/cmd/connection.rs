//! Connection commands: `PING`, `ECHO`, `QUIT`, `AUTH`, `HELLO`, `SELECT`, `CLIENT`,
//! `COMMAND`.

use super::{Ctx, NOT_AN_INTEGER, SYNTAX_ERROR, Spec, TABLE, is, lookup, truncated};
use crate::frame::{
    Protocol, Request, parse_i64, write_array_len, write_bulk, write_integer, write_map_len,
    write_null_aggregate, write_set_len, write_simple, write_verbatim,
};
use crate::registry::ClientEntry;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The Redis version dice's protocol subset follows, reported by `HELLO` and `INFO`
/// (clients pick features by it). 7.4: the replies of the commands dice has are those of
/// Redis 7.4 (unchanged since 7.2), and what clients switch on for 7.4 is there: redis-py
/// 8 turns on its client-side cache for 7.4 and later, which needs `CLIENT TRACKING`. The
/// data types dice lacks are refused as unknown commands whatever the version says.
/// dice's own version is `dice_version`, beside it.
pub(crate) const REDIS_VERSION: &str = "7.4.0";

pub(crate) fn ping(ctx: &mut Ctx<'_>, req: Request<'_>) {
    match req.len() {
        1 => write_simple(ctx.out, "PONG"),
        2 => write_bulk(ctx.out, req.arg(1)),
        _ => ctx.wrong_arity("ping"),
    }
}

pub(crate) fn echo(ctx: &mut Ctx<'_>, req: Request<'_>) {
    write_bulk(ctx.out, req.arg(1));
}

pub(crate) fn quit(ctx: &mut Ctx<'_>) {
    write_simple(ctx.out, "OK");
    ctx.session.quit = true;
}

pub(crate) fn select(ctx: &mut Ctx<'_>, req: Request<'_>) {
    match parse_i64(req.arg(1)) {
        None => ctx.error(NOT_AN_INTEGER),
        Some(0) => write_simple(ctx.out, "OK"),
        Some(_) => ctx.error("ERR DB index is out of range"),
    }
}

/// Compares a password in time that depends only on the expected one's length.
fn password_matches(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, e) in expected.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ e);
    }
    diff == 0
}

/// Whether `user`/`password` log in. There is one user, `default`, with the configured
/// password, or with none (any password) when none is configured.
fn credentials_ok(ctx: &Ctx<'_>, user: &[u8], password: &[u8]) -> bool {
    if user != b"default" {
        return false;
    }
    match &ctx.server.config.requirepass {
        None => true,
        Some(expected) => password_matches(password, expected.as_bytes()),
    }
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Failed `AUTH`s (or `HELLO ... AUTH`) after which a connection is closed: its last reply
/// is Redis's `WRONGPASS` error, then the server closes. A client guessing passwords must
/// reconnect every few guesses, and every failure is counted and logged.
pub(crate) const MAX_AUTH_FAILURES: u32 = 3;

/// Replies `WRONGPASS`, counts and logs the failure, and closes the connection after
/// [`MAX_AUTH_FAILURES`].
fn wrong_password(ctx: &mut Ctx<'_>) {
    ctx.error(WRONGPASS);
    ctx.server.auth_failed(ctx.session.peer);
    ctx.session.auth_failures += 1;
    if ctx.session.auth_failures >= MAX_AUTH_FAILURES {
        ctx.server
            .stats
            .auth_disconnects
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            peer = %ctx.session.peer,
            failures = ctx.session.auth_failures,
            "closing a connection after repeated failed AUTHs"
        );
        ctx.session.quit = true;
        ctx.session.linger = true;
    }
}

pub(crate) fn auth(ctx: &mut Ctx<'_>, req: Request<'_>) {
    if req.len() > 3 {
        ctx.error(SYNTAX_ERROR);
        return;
    }
    let (user, password) = if req.len() == 2 {
        if ctx.server.config.requirepass.is_none() {
            ctx.error(
                "ERR AUTH <password> called without any password configured for the default \
                 user. Are you sure your configuration is correct?",
            );
            return;
        }
        (&b"default"[..], req.arg(1))
    } else {
        (req.arg(1), req.arg(2))
    };
    if credentials_ok(ctx, user, password) {
        ctx.session.authenticated = true;
        write_simple(ctx.out, "OK");
    } else {
        wrong_password(ctx);
    }
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`: switches the reply
/// protocol to RESP2 or RESP3 (only once everything else succeeded, as in Redis) and
/// describes the server, as a map.
pub(crate) fn hello(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let mut next = 1;
    let mut proto = None;
    if let Some(v) = req.get(1) {
        next = 2;
        match parse_i64(v) {
            None => {
                ctx.error("ERR Protocol version is not an integer or out of range");
                return;
            }
            Some(2) => proto = Some(Protocol::Resp2),
            Some(3) => proto = Some(Protocol::Resp3),
            Some(_) => {
                ctx.error("NOPROTO unsupported protocol version");
                return;
            }
        }
    }
    let mut credentials = None;
    let mut name = None;
    let mut j = next;
    while j < req.len() {
        let more = req.len() - 1 - j;
        let opt = req.arg(j);
        if is(opt, "auth") && more >= 2 {
            credentials = Some((req.arg(j + 1), req.arg(j + 2)));
            j += 3;
        } else if is(opt, "setname") && more >= 1 {
            name = Some(req.arg(j + 1));
            j += 2;
        } else {
            let text = format!("ERR Syntax error in HELLO option '{}'", truncated(opt, 128));
            ctx.error(&text);
            return;
        }
    }
    if let Some((user, password)) = credentials {
        if !credentials_ok(ctx, user, password) {
            wrong_password(ctx);
            return;
        }
        ctx.session.authenticated = true;
    }
    if !ctx.session.authenticated {
        ctx.error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time",
        );
        return;
    }
    if let Some(name) = name
        && !set_name(ctx, name)
    {
        return;
    }
    if let Some(proto) = proto {
        ctx.session.proto = proto;
        ctx.session
            .entry
            .resp
            .store(proto.version() as u64, Ordering::Relaxed);
    }
    let proto = ctx.proto();
    let out = &mut *ctx.out;
    write_map_len(out, 7, proto);
    write_bulk(out, b"server");
    write_bulk(out, b"redis");
    write_bulk(out, b"version");
    write_bulk(out, REDIS_VERSION.as_bytes());
    write_bulk(out, b"proto");
    write_integer(out, proto.version());
    write_bulk(out, b"id");
    write_integer(out, ctx.session.id as i64);
    write_bulk(out, b"mode");
    write_bulk(out, b"standalone");
    write_bulk(out, b"role");
    write_bulk(out, b"master");
    write_bulk(out, b"modules");
    write_array_len(out, 0);
}

/// Sets the client name (empty clears it); replies with the error and returns false if the
/// name has blanks or special characters, like Redis.
fn set_name(ctx: &mut Ctx<'_>, name: &[u8]) -> bool {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        ctx.error("ERR Client names cannot contain spaces, newlines or special characters.");
        return false;
    }
    ctx.session.name = (!name.is_empty()).then(|| name.to_vec());
    if let Ok(mut n) = ctx.session.entry.name.lock() {
        n.clone_from(&ctx.session.name);
    }
    true
}

const CLIENT_HELP: &[&str] = &[
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CACHING (YES|NO)",
    "    Enable/disable tracking of the keys for next command in OPTIN/OPTOUT modes.",
    "GETREDIR",
    "    Return the client ID we are redirecting to when tracking is enabled.",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "KILL <ip:port>",
    "    Kill connection made from <ip:port>.",
    "KILL <option> <value> [<option> <value> [...]]",
    "    Kill connections. Options are:",
    "    * ADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made from the specified address",
    "    * LADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made to specified local address",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Kill connections by type.",
    "    * USER <username>",
    "      Kill connections authenticated by <username>.",
    "    * SKIPME (YES|NO)",
    "      Skip killing current connection (default: yes).",
    "    * ID <client-id>",
    "      Kill connections by client id.",
    "    * MAXAGE <maxage>",
    "      Kill connections older than the specified age.",
    "LIST [options ...]",
    "    Return information about client connections. Options:",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Return clients of specified type.",
    "    * ID <client-id> [<client-id> ...]",
    "      Return clients of specified IDs only.",
    "UNPAUSE",
    "    Stop the current client pause, resuming traffic.",
    "PAUSE <timeout> [WRITE|ALL]",
    "    Suspend all, or just write, clients for <timeout> milliseconds.",
    "TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]]",
    "         [OPTIN] [OPTOUT] [NOLOOP]",
    "    Control server assisted client side caching.",
    "TRACKINGINFO",
    "    Report tracking status for the current connection.",
    "NO-EVICT (ON|OFF)",
    "    Protect current client connection from eviction.",
    "NO-TOUCH (ON|OFF)",
    "    Will not touch LRU/LFU stats when this mode is on.",
    "SETINFO <option> <value>",
    "    Set client meta attr. Options are:",
    "    * LIB-NAME: the client lib name.",
    "    * LIB-VER: the client lib version.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "HELP",
    "    Print this help.",
];

/// One line of `CLIENT LIST`, in Redis's format (fields dice has no use for are zero).
fn client_line(e: &ClientEntry) -> String {
    let age = e.connected.elapsed();
    let idle_ms = (age.as_millis() as u64).saturating_sub(e.last_active_ms.load(Ordering::Relaxed));
    let name = e
        .name
        .lock()
        .ok()
        .and_then(|n| n.clone())
        .unwrap_or_default();
    let (lib_name, lib_ver) = e.lib.lock().map(|l| l.clone()).unwrap_or_default();
    let multi = e.multi.load(Ordering::Relaxed);
    let sub = e.sub.load(Ordering::Relaxed);
    let psub = e.psub.load(Ordering::Relaxed);
    let cmd = e.last_cmd.lock().map(|c| *c).unwrap_or("NULL");
    let laddr = e.local.map(|a| a.to_string()).unwrap_or_default();
    // Redis's flags, in its order.
    let tracking = e.tracking.load(Ordering::Relaxed);
    let mut flags = String::new();
    for (on, c) in [
        (sub + psub > 0, 'P'),
        (multi >= 0, 'x'),
        (tracking & crate::tracking::FLAG_ON != 0, 't'),
        (tracking & crate::tracking::FLAG_BROKEN_REDIRECT != 0, 'R'),
        (tracking & crate::tracking::FLAG_BCAST != 0, 'B'),
    ] {
        if on {
            flags.push(c);
        }
    }
    if flags.is_empty() {
        flags.push('N');
    }
    let redir = e.redirect.load(Ordering::Relaxed);
    format!(
        "id={} addr={} laddr={laddr} fd={} name={} age={} idle={} flags={} db=0 sub={} psub={} \
         ssub=0 multi={multi} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 \
         oll=0 omem=0 tot-mem=0 events=r cmd={cmd} user=default redir={redir} resp={} lib-name={} \
         lib-ver={}\n",
        e.id,
        e.peer,
        e.fd,
        String::from_utf8_lossy(&name),
        age.as_secs(),
        idle_ms / 1000,
        flags,
        sub,
        psub,
        e.resp.load(Ordering::Relaxed),
        String::from_utf8_lossy(&lib_name),
        String::from_utf8_lossy(&lib_ver),
    )
}

/// A client type of `CLIENT LIST|KILL TYPE`: normal, pubsub, or a replication type (no
/// client here is one).
#[derive(Clone, Copy, PartialEq, Eq)]
enum ClientType {
    Normal,
    Pubsub,
    Replication,
}

fn client_type(name: &[u8]) -> Option<ClientType> {
    if is(name, "normal") {
        Some(ClientType::Normal)
    } else if is(name, "pubsub") {
        Some(ClientType::Pubsub)
    } else if ["master", "replica", "slave"].iter().any(|n| is(name, n)) {
        Some(ClientType::Replication)
    } else {
        None
    }
}

/// As Redis: a RESP2 connection with subscriptions is of type pubsub, any other normal.
fn type_of(e: &ClientEntry) -> ClientType {
    let subscribed = e.sub.load(Ordering::Relaxed) + e.psub.load(Ordering::Relaxed) > 0;
    if subscribed && e.resp.load(Ordering::Relaxed) == 2 {
        ClientType::Pubsub
    } else {
        ClientType::Normal
    }
}

/// The connected clients, by id.
fn clients(ctx: &Ctx<'_>) -> Vec<Arc<ClientEntry>> {
    ctx.server
        .registry
        .lock()
        .map(|r| r.values().cloned().collect())
        .unwrap_or_default()
}

/// Closes client `e`: after this reply if it is this connection, else at once.
fn kill(ctx: &mut Ctx<'_>, e: &ClientEntry) {
    if e.id == ctx.session.id {
        ctx.session.quit = true;
    } else {
        e.killed.notify_one();
    }
}

/// `CLIENT ID | GETNAME | SETNAME name | SETINFO LIB-NAME|LIB-VER value | LIST [TYPE t] [ID
/// id ...] | INFO | KILL addr | KILL filter value ... | NO-EVICT on|off | NO-TOUCH on|off |
/// HELP`.
pub(crate) fn client(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let sub = req.arg(1);
    let found = [
        ("id", 2),
        ("getname", 2),
        ("setname", 3),
        ("setinfo", 4),
        ("list", -2),
        ("info", 2),
        ("kill", -3),
        ("no-evict", 3),
        ("no-touch", 3),
        ("help", 2),
        ("tracking", -3),
        ("caching", 3),
        ("getredir", 2),
        ("trackinginfo", 2),
        ("pause", -3),
        ("unpause", 2),
    ]
    .into_iter()
    .find(|(n, _)| is(sub, n));
    let Some((name, arity)) = found else {
        return unknown_subcommand(ctx, sub, "CLIENT");
    };
    let argc = req.len() as i64;
    if (arity >= 0 && argc != arity) || (arity < 0 && argc < -arity) {
        return ctx.wrong_arity(&format!("client|{name}"));
    }
    let proto = ctx.proto();
    match name {
        "id" => write_integer(ctx.out, ctx.session.id as i64),
        "getname" => match &ctx.session.name {
            Some(n) => write_bulk(ctx.out, n),
            None => ctx.null(),
        },
        "setname" => {
            if set_name(ctx, req.arg(2)) {
                write_simple(ctx.out, "OK");
            }
        }
        "setinfo" => {
            let attr = req.arg(2);
            let value = req.arg(3);
            if !is(attr, "lib-name") && !is(attr, "lib-ver") {
                let text = format!("ERR Unrecognized option '{}'", truncated(attr, 128));
                ctx.error(&text);
            } else if value.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
                let text = format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    String::from_utf8_lossy(attr).to_lowercase()
                );
                ctx.error(&text);
            } else {
                if let Ok(mut lib) = ctx.session.entry.lib.lock() {
                    let slot = if is(attr, "lib-name") {
                        &mut lib.0
                    } else {
                        &mut lib.1
                    };
                    *slot = value.to_vec();
                }
                write_simple(ctx.out, "OK");
            }
        }
        "list" => {
            let mut ids: Option<Vec<u64>> = None;
            let mut kind = None;
            let mut j = 2;
            while j < req.len() {
                if is(req.arg(j), "type") && j + 1 < req.len() {
                    let t = req.arg(j + 1);
                    match client_type(t) {
                        Some(k) => kind = Some(k),
                        None => {
                            let text = format!("ERR Unknown client type '{}'", truncated(t, 128));
                            return ctx.error(&text);
                        }
                    }
                    j += 2;
                } else if is(req.arg(j), "id") && j + 1 < req.len() {
                    let mut list = Vec::new();
                    for a in req.args().skip(j + 1) {
                        match parse_i64(a) {
                            Some(n) if n > 0 => list.push(n as u64),
                            _ => return ctx.error("ERR Invalid client ID"),
                        }
                    }
                    ids = Some(list);
                    j = req.len();
                } else {
                    return ctx.error(SYNTAX_ERROR);
                }
            }
            let mut text = String::new();
            for e in clients(ctx) {
                if kind.is_none_or(|k| k == type_of(&e))
                    && ids.as_ref().is_none_or(|l| l.contains(&e.id))
                {
                    text.push_str(&client_line(&e));
                }
            }
            write_verbatim(ctx.out, "txt", text.as_bytes(), proto);
        }
        "info" => {
            let line = client_line(&ctx.session.entry);
            write_verbatim(ctx.out, "txt", line.as_bytes(), proto);
        }
        "kill" => client_kill(ctx, req),
        "tracking" => super::tracking::tracking(ctx, req),
        "caching" => super::tracking::caching(ctx, req),
        "getredir" => super::tracking::getredir(ctx),
        "trackinginfo" => super::tracking::trackinginfo(ctx),
        "pause" if req.len() > 4 => ctx.error(SYNTAX_ERROR),
        "pause" => super::admin::client_pause(ctx, req),
        "unpause" => super::admin::client_unpause(ctx),
        "no-evict" | "no-touch" => {
            // dice evicts nothing and keeps no access statistics: both are no-ops.
            if is(req.arg(2), "on") || is(req.arg(2), "off") {
                write_simple(ctx.out, "OK");
            } else {
                ctx.error(SYNTAX_ERROR);
            }
        }
        _ => {
            write_array_len(ctx.out, CLIENT_HELP.len());
            for l in CLIENT_HELP {
                write_simple(ctx.out, l);
            }
        }
    }
}

/// `CLIENT KILL addr` (+OK, or an error if no client has that address) and `CLIENT KILL
/// [ID id] [ADDR addr] [LADDR addr] [USER name] [TYPE type] [MAXAGE secs] [SKIPME yes|no]`
/// (the number of clients killed; all filters must match; this connection is skipped
/// unless `SKIPME no`).
fn client_kill(ctx: &mut Ctx<'_>, req: Request<'_>) {
    if req.len() == 3 {
        let addr = req.arg(2);
        let target = clients(ctx)
            .into_iter()
            .find(|e| e.peer.to_string().as_bytes() == addr);
        match target {
            Some(e) => {
                kill(ctx, &e);
                write_simple(ctx.out, "OK");
            }
            None => ctx.error("ERR No such client"),
        }
        return;
    }
    if !req.len().is_multiple_of(2) {
        return ctx.error(SYNTAX_ERROR);
    }
    let mut id = None;
    let mut addr: Option<&[u8]> = None;
    let mut laddr: Option<&[u8]> = None;
    let mut user_ok = true;
    let mut kind = None;
    let mut max_age: Option<u64> = None;
    let mut skip_me = true;
    for j in (2..req.len()).step_by(2) {
        let (opt, v) = (req.arg(j), req.arg(j + 1));
        if is(opt, "id") {
            match parse_i64(v) {
                Some(n) if n > 0 => id = Some(n as u64),
                _ => return ctx.error("ERR client-id should be greater than 0"),
            }
        } else if is(opt, "addr") {
            addr = Some(v);
        } else if is(opt, "laddr") {
            laddr = Some(v);
        } else if is(opt, "user") {
            user_ok = v == b"default";
        } else if is(opt, "type") {
            match client_type(v) {
                Some(k) => kind = Some(k),
                None => {
                    let text = format!("ERR Unknown client type '{}'", truncated(v, 128));
                    return ctx.error(&text);
                }
            }
        } else if is(opt, "maxage") {
            match parse_i64(v) {
                Some(n) if n >= 0 => max_age = Some(n as u64),
                _ => return ctx.error(NOT_AN_INTEGER),
            }
        } else if is(opt, "skipme") {
            if is(v, "yes") {
                skip_me = true;
            } else if is(v, "no") {
                skip_me = false;
            } else {
                return ctx.error(SYNTAX_ERROR);
            }
        } else {
            return ctx.error(SYNTAX_ERROR);
        }
    }
    let mut killed = 0;
    for e in clients(ctx) {
        let matches = user_ok
            && kind.is_none_or(|k| k == type_of(&e))
            && id.is_none_or(|i| i == e.id)
            && addr.is_none_or(|a| e.peer.to_string().as_bytes() == a)
            && laddr.is_none_or(|a| e.local.is_some_and(|l| l.to_string().as_bytes() == a))
            && max_age.is_none_or(|m| e.connected.elapsed().as_secs() >= m)
            && !(skip_me && e.id == ctx.session.id);
        if matches {
            kill(ctx, &e);
            killed += 1;
        }
    }
    write_integer(ctx.out, killed);
}

pub(crate) fn unknown_subcommand(ctx: &mut Ctx<'_>, sub: &[u8], command: &str) {
    let text = format!(
        "ERR unknown subcommand '{}'. Try {command} HELP.",
        truncated(sub, 128)
    );
    ctx.error(&text);
}

/// Redis 7's ten-field command description (flags, ACL categories and tips are sets in
/// RESP3).
fn write_spec(out: &mut Vec<u8>, s: &Spec, proto: Protocol) {
    write_array_len(out, 10);
    write_bulk(out, s.name.as_bytes());
    write_integer(out, i64::from(s.arity));
    write_set_len(out, s.flags.len(), proto);
    for f in s.flags {
        write_simple(out, f);
    }
    write_integer(out, i64::from(s.first_key));
    write_integer(out, i64::from(s.last_key));
    write_integer(out, i64::from(s.step));
    // ACL categories and tips: none described.
    write_set_len(out, 0, proto);
    write_set_len(out, 0, proto);
    // Key specs and subcommands: none described.
    write_array_len(out, 0);
    write_array_len(out, 0);
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO name...`, `COMMAND LIST`, `COMMAND DOCS` (an
/// empty answer: enough for `redis-cli`, which falls back to no hints).
pub(crate) fn command(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let proto = ctx.proto();
    let Some(sub) = req.get(1) else {
        write_array_len(ctx.out, TABLE.len());
        for s in TABLE {
            write_spec(ctx.out, s, proto);
        }
        return;
    };
    if is(sub, "count") {
        if req.len() != 2 {
            ctx.wrong_arity("command|count");
            return;
        }
        write_integer(ctx.out, TABLE.len() as i64);
    } else if is(sub, "docs") {
        // A map of command name to its docs; unknown names are left out, as in Redis.
        let names: Vec<&'static str> = if req.len() == 2 {
            TABLE.iter().map(|s| s.name).collect()
        } else {
            req.args()
                .skip(2)
                .filter_map(lookup)
                .map(|s| s.name)
                .collect()
        };
        write_map_len(ctx.out, names.len(), proto);
        for name in names {
            super::docs::write_doc(ctx.out, name, proto);
        }
    } else if is(sub, "info") {
        write_array_len(ctx.out, req.len() - 2);
        for name in req.args().skip(2) {
            match lookup(name) {
                Some(s) => write_spec(ctx.out, s, proto),
                None => write_null_aggregate(ctx.out, proto),
            }
        }
    } else if is(sub, "list") {
        write_array_len(ctx.out, TABLE.len());
        for s in TABLE {
            write_bulk(ctx.out, s.name.as_bytes());
        }
    } else {
        unknown_subcommand(ctx, sub, "COMMAND");
    }
}

#[cfg(test)]
mod tests {
    use super::password_matches;

    #[test]
    fn passwords() {
        assert!(password_matches(b"secret", b"secret"));
        assert!(!password_matches(b"secreT", b"secret"));
        assert!(!password_matches(b"secret!", b"secret"));
        assert!(!password_matches(b"secre", b"secret"));
        assert!(!password_matches(b"", b"secret"));
        assert!(password_matches(b"", b""));
    }
}
