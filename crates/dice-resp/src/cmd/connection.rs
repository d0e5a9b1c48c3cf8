//! Connection commands: `PING`, `ECHO`, `QUIT`, `AUTH`, `HELLO`, `SELECT`, `CLIENT`,
//! `COMMAND`.

use super::{Ctx, NOT_AN_INTEGER, SYNTAX_ERROR, Spec, TABLE, is, lookup, truncated};
use crate::frame::{
    Protocol, Request, parse_i64, write_array_len, write_bulk, write_integer, write_map_len,
    write_null_aggregate, write_set_len, write_simple,
};

/// The Redis version dice's protocol subset follows, reported by `HELLO` and `INFO`
/// (clients pick features by it). Honest, not flattering: 7.2 is the Redis whose replies
/// dice follows, and clients switch on features of later versions by it (redis-py 8 turns
/// on its client-side cache for 7.4 and later, which needs `CLIENT TRACKING`, which dice
/// lacks). dice's own version is `dice_version`, beside it.
pub(crate) const REDIS_VERSION: &str = "7.2.0";

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
    true
}

/// `CLIENT ID | GETNAME | SETNAME name | SETINFO LIB-NAME|LIB-VER value`.
pub(crate) fn client(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let sub = req.arg(1);
    let (name, argc) = if is(sub, "id") {
        ("client|id", 2)
    } else if is(sub, "getname") {
        ("client|getname", 2)
    } else if is(sub, "setname") {
        ("client|setname", 3)
    } else if is(sub, "setinfo") {
        ("client|setinfo", 4)
    } else {
        unknown_subcommand(ctx, sub, "CLIENT");
        return;
    };
    if req.len() != argc {
        ctx.wrong_arity(name);
        return;
    }
    match name {
        "client|id" => write_integer(ctx.out, ctx.session.id as i64),
        "client|getname" => match &ctx.session.name {
            Some(n) => write_bulk(ctx.out, n),
            None => ctx.null(),
        },
        "client|setname" => {
            if set_name(ctx, req.arg(2)) {
                write_simple(ctx.out, "OK");
            }
        }
        _ => {
            // Library name and version: accepted (clients send them on connect), not kept.
            let attr = req.arg(2);
            if !is(attr, "lib-name") && !is(attr, "lib-ver") {
                let text = format!("ERR Unrecognized option '{}'", truncated(attr, 128));
                ctx.error(&text);
            } else if req.arg(3).iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
                let text = format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    String::from_utf8_lossy(attr).to_lowercase()
                );
                ctx.error(&text);
            } else {
                write_simple(ctx.out, "OK");
            }
        }
    }
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
        // A map of command name to docs: none described.
        write_map_len(ctx.out, 0, proto);
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
