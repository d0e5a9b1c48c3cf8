//! `put/get/del/keys/status`: over the Redis protocol to a running node, or directly on a
//! data directory that no node holds.

use crate::UsageError;
use crate::node::API_ADDR_FILE;
use anyhow::{Context, Result, anyhow};
use dice_core::skew::SKEW_WARN_MS;
use dice_core::{Cache, CacheOptions};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The default API address of a node.
pub const DEFAULT_NODE: &str = "127.0.0.1:7379";

/// The most `dice put` reads from stdin or a file (`--file /dev/zero` must not eat the
/// memory): a node takes no larger request. Values are further limited to 1 MiB by default,
/// checked once read, which names the exact size.
pub const MAX_INPUT: u64 = 128 * 1024 * 1024;

/// Where a command goes.
#[derive(Debug, PartialEq)]
pub enum Target {
    /// A node's API address.
    Node {
        addr: String,
        password: Option<String>,
    },
    /// A data directory: its running node if any, else the directory itself.
    Data {
        dir: PathBuf,
        password: Option<String>,
    },
}

impl Target {
    /// `--node`, else `--data`, else the default address.
    pub fn resolve(
        node: Option<String>,
        data: Option<PathBuf>,
        password: Option<String>,
    ) -> Result<Target> {
        Ok(match (node, data) {
            (Some(addr), _) => Target::Node { addr, password },
            (None, Some(dir)) => Target::Data { dir, password },
            (None, None) => Target::Node {
                addr: DEFAULT_NODE.into(),
                password,
            },
        })
    }
}

/// A client command, its value already read.
#[derive(Debug)]
pub enum Request {
    /// `dice put`.
    Put {
        key: String,
        value: Vec<u8>,
        ttl: Option<Duration>,
    },
    /// `dice get`.
    Get { key: String, raw: bool },
    /// `dice del`.
    Del { keys: Vec<String> },
    /// `dice keys`.
    Keys { pattern: String },
    /// `dice status`.
    Status { json: bool },
}

/// The value of `dice put`: `--file PATH`, `-` for stdin, else the argument's bytes.
pub fn read_value(value: Option<OsString>, file: Option<&Path>) -> Result<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    match (value, file) {
        (_, Some(path)) => {
            let f = std::fs::File::open(path).map_err(|e| {
                let what = format!("cannot read the value from {}: {e}", path.display());
                if e.kind() == std::io::ErrorKind::NotFound {
                    anyhow::Error::new(UsageError(what))
                } else {
                    anyhow!(what)
                }
            })?;
            read_bounded(f, &path.display().to_string())
        }
        (Some(v), None) if v == "-" => read_bounded(std::io::stdin().lock(), "stdin"),
        (Some(v), None) => Ok(v.into_vec()),
        (None, None) => Err(UsageError(
            "no value: give VALUE, `-` to read it from stdin, or --file PATH".into(),
        )
        .into()),
    }
}

/// All of `input`, refusing more than [`MAX_INPUT`] bytes.
fn read_bounded(input: impl Read, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    input
        .take(MAX_INPUT + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading the value from {what}"))?;
    if buf.len() as u64 > MAX_INPUT {
        anyhow::bail!(
            "the value from {what} is larger than {} MiB, more than a node takes",
            MAX_INPUT / (1024 * 1024)
        );
    }
    Ok(buf)
}

fn connect(addr: &str, password: Option<&str>) -> Result<redis::Connection, redis::RedisError> {
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>().ok()?,
            ))
        })
        .ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not HOST:PORT",
                addr.to_string(),
            ))
        })?;
    let mut redis_info = redis::RedisConnectionInfo::default();
    if let Some(p) = password {
        redis_info = redis_info.set_password(p);
    }
    let info = redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp(
        host.to_string(),
        port,
    ))?
    .set_redis_settings(redis_info);
    redis::Client::open(info)?.get_connection_with_timeout(Duration::from_secs(5))
}

/// Whether the node was there and refused us: a wrong or missing password.
fn is_auth_error(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
}

/// A redis client error as a user should read it: what went wrong, said once.
fn explain(e: redis::RedisError, addr: &str) -> anyhow::Error {
    let how = "give the node's --requirepass with --password or DICE_PASSWORD";
    if e.kind() == redis::ErrorKind::AuthenticationFailed || e.code() == Some("WRONGPASS") {
        return anyhow!(
            "wrong password for the node at {addr} (WRONGPASS, or the node has no password): {how}"
        );
    }
    if e.code() == Some("NOAUTH") {
        return anyhow!("the node at {addr} requires a password (NOAUTH): {how}");
    }
    if e.kind() == redis::ErrorKind::InvalidClientConfig {
        return UsageError(format!("{addr:?} is not a node address (HOST:PORT)")).into();
    }
    if let Some(code) = e.code() {
        // A server error reply, such as MISCONF (writes refused) or a value too large.
        let detail = e.detail().unwrap_or_default();
        return anyhow!("the node at {addr} answered: {code} {detail}");
    }
    anyhow::Error::new(e).context(format!("cannot reach a dice node at {addr}"))
}

/// Checks a `--data` directory before a client command uses it: it must exist (only `dice
/// node` creates one) and, unless empty, hold a dice database, so that a typo or a wrong
/// directory is not silently made into a data directory.
fn check_data_dir(dir: &Path) -> Result<()> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(UsageError(format!(
                "no data directory at {}: start a node there first (`dice --data {} node`), \
                 or check the path",
                dir.display(),
                dir.display()
            ))
            .into());
        }
        Err(e) => {
            return Err(anyhow!(
                "cannot use the data directory {}: {e}",
                dir.display()
            ));
        }
    };
    if !meta.is_dir() {
        return Err(UsageError(format!("{} is not a directory", dir.display())).into());
    }
    let empty = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the data directory {}", dir.display()))?
        .next()
        .is_none();
    if !empty && !dir.join("dice.sqlite3").exists() {
        return Err(UsageError(format!(
            "{} is not a dice data directory (no dice.sqlite3 in it)",
            dir.display()
        ))
        .into());
    }
    Ok(())
}

/// Runs a client command.
pub async fn run(target: Target, request: Request) -> Result<ExitCode> {
    match target {
        Target::Node { addr, password } => {
            let mut conn = connect(&addr, password.as_deref()).map_err(|e| explain(e, &addr))?;
            remote(&mut conn, request, &addr)
        }
        Target::Data { dir, password } => {
            check_data_dir(&dir)?;
            if let Ok(text) = std::fs::read_to_string(dir.join(API_ADDR_FILE)) {
                let addr = text.trim().to_string();
                match connect(&addr, password.as_deref()) {
                    Ok(mut conn) => return remote(&mut conn, request, &addr),
                    // The node is there: opening the directory would only say it is in use.
                    Err(e) if is_auth_error(&e) => return Err(explain(e, &addr)),
                    Err(e) => {
                        tracing::debug!(error = %e, "the node that wrote api.addr is not there");
                    }
                }
            }
            local(&dir, request).await
        }
    }
}

/// Writes a value byte for byte, then a newline unless `raw`; exit 1 with a message if the
/// key is absent.
fn print_value(key: &str, value: Option<&[u8]>, raw: bool) -> Result<ExitCode> {
    match value {
        Some(v) => {
            let mut out = std::io::stdout().lock();
            out.write_all(v)?;
            if !raw {
                out.write_all(b"\n")?;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("dice: {key:?}: no such key");
            Ok(ExitCode::from(1))
        }
    }
}

/// One line per key, byte for byte.
fn print_keys<K: AsRef<[u8]>>(keys: impl IntoIterator<Item = K>) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for k in keys {
        out.write_all(k.as_ref())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

fn print_line(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn remote(conn: &mut redis::Connection, request: Request, addr: &str) -> Result<ExitCode> {
    let err = |e| explain(e, addr);
    Ok(match request {
        Request::Put { key, value, ttl } => {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key).arg(&value[..]);
            if let Some(ttl) = ttl {
                cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
            }
            let _: String = cmd.query(conn).map_err(err)?;
            print_line("OK")?;
            ExitCode::SUCCESS
        }
        Request::Get { key, raw } => {
            let v: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query(conn).map_err(err)?;
            print_value(&key, v.as_deref(), raw)?
        }
        Request::Del { keys } => {
            let n: u64 = redis::cmd("DEL").arg(&keys).query(conn).map_err(err)?;
            print_line(&n.to_string())?;
            ExitCode::SUCCESS
        }
        Request::Keys { pattern } => {
            let mut keys: Vec<Vec<u8>> =
                redis::cmd("KEYS").arg(&pattern).query(conn).map_err(err)?;
            keys.sort();
            print_keys(keys)?;
            ExitCode::SUCCESS
        }
        Request::Status { json } => {
            let info: String = redis::cmd("INFO")
                .arg("server")
                .arg("keyspace")
                .arg("cluster")
                .query(conn)
                .map_err(err)?;
            print_status(&status_from_info(&info, addr), json)?;
            ExitCode::SUCCESS
        }
    })
}

/// `INFO` fields, and the per-peer ones split into maps.
fn status_from_info(info: &str, addr: &str) -> serde_json::Value {
    let fields: BTreeMap<&str, &str> = info
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .collect();
    let keys = fields
        .get("dice_keys")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let mut peers = Vec::new();
    for (name, value) in &fields {
        if name.starts_with("dice_peer")
            && name[9..].chars().all(|c| c.is_ascii_digit())
            && name.len() > 9
        {
            let p: serde_json::Map<String, serde_json::Value> = value
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| {
                    let number = k != "id" && k != "node";
                    let v = match (v.parse::<u64>(), v.parse::<i64>()) {
                        (Ok(n), _) if number => serde_json::Value::from(n),
                        (_, Ok(n)) if number => serde_json::Value::from(n),
                        _ => serde_json::Value::from(v),
                    };
                    (k.to_string(), v)
                })
                .collect();
            peers.push(serde_json::Value::Object(p));
        }
    }
    serde_json::json!({
        "node_id": fields.get("dice_node_id").copied().unwrap_or(""),
        "peer_id": fields.get("dice_peer_id").copied().unwrap_or(""),
        "api": addr,
        "cluster": fields.get("dice_cluster").copied().unwrap_or(""),
        "keys": keys,
        "digest": fields.get("dice_digest").copied().unwrap_or(""),
        "full_resyncs": fields.get("dice_full_resyncs").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
        "refused_connections": fields.get("dice_refused_connections").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
        "repairs": fields.get("dice_repairs").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
        "repaired_entries": fields.get("dice_repaired_entries").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
        "repair_conflicts": fields.get("dice_repair_conflicts").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
        "writes_refused": fields.get("dice_writes_refused_reason").copied(),
        "peers": peers,
    })
}

fn print_status(s: &serde_json::Value, json: bool) -> Result<()> {
    if json {
        return print_line(&s.to_string());
    }
    let mut lines = Vec::new();
    let field = |k: &str| match &s[k] {
        serde_json::Value::String(v) => Some(v.clone()),
        serde_json::Value::Null => None,
        v => Some(v.to_string()),
    };
    lines.push(format!(
        "node id:  {}",
        field("node_id").unwrap_or_default()
    ));
    if let Some(peer_id) = field("peer_id").filter(|p| !p.is_empty()) {
        lines.push(format!("peer id:  {peer_id}"));
    }
    if let Some(api) = s["api"].as_str() {
        lines.push(format!("api:      {api}"));
    }
    if let Some(dir) = s["data_dir"].as_str() {
        lines.push(format!("data dir: {dir} (no node running)"));
    }
    lines.push(format!("keys:     {}", field("keys").unwrap_or_default()));
    lines.push(format!("digest:   {}", field("digest").unwrap_or_default()));
    if let Some(why) = s["writes_refused"].as_str() {
        lines.push(format!("writes:   REFUSED: {why}"));
    }
    // Anti-entropy repairs: 0 in normal operation (older nodes do not report them).
    if s["repairs"].is_number() {
        lines.push(format!(
            "repairs:  {} ({} entries, {} conflicts)",
            field("repairs").unwrap_or_default(),
            field("repaired_entries").unwrap_or_default(),
            field("repair_conflicts").unwrap_or_default()
        ));
    }
    let peers = s["peers"].as_array().cloned().unwrap_or_default();
    lines.push(format!("peers:    {}", peers.len()));
    for p in peers {
        // Older nodes do not report it; "-" when no estimate yet.
        let offset = match &p["clock_offset_ms"] {
            serde_json::Value::Number(n) => {
                let skewed = n.as_i64().is_some_and(|o| o.unsigned_abs() > SKEW_WARN_MS);
                format!("{n}{}", if skewed { " (SKEWED)" } else { "" })
            }
            _ => "-".to_string(),
        };
        lines.push(format!(
            "  {} {} {} unacked={} missing={} clock_offset_ms={offset}",
            p["id"].as_str().unwrap_or("?"),
            if p["connected"] == 1 {
                "connected   "
            } else {
                "disconnected"
            },
            p["addr"].as_str().unwrap_or("-"),
            p["unacked"],
            p["missing"],
        ));
    }
    print_line(&lines.join("\n"))
}

/// The libp2p peer id of the node whose data directory this is, read from its identity
/// file; `None` if it never ran a node (never created here).
fn offline_peer_id(dir: &Path) -> Option<String> {
    if !dir.join(dice_net::keys::IDENTITY_FILE).exists() {
        return None;
    }
    dice_net::keys::load_or_create_identity(dir)
        .ok()
        .map(|k| k.public().to_peer_id().to_string())
}

/// The same commands on a data directory that no node holds.
async fn local(dir: &Path, request: Request) -> Result<ExitCode> {
    let cache = Cache::open_with(dir, CacheOptions::default())
        .await
        .with_context(|| format!("opening {}", dir.display()))?;
    let result = local_request(&cache, dir, request).await;
    // Closed whatever happened (a broken pipe included): pending writes are committed.
    let closed = cache.close().await;
    let code = result?;
    closed?;
    Ok(code)
}

async fn local_request(cache: &Cache, dir: &Path, request: Request) -> Result<ExitCode> {
    Ok(match request {
        Request::Put { key, value, ttl } => {
            match ttl {
                Some(ttl) => cache.put_with_ttl(key, value, ttl).await?,
                None => cache.put(key, value).await?,
            };
            print_line("OK")?;
            ExitCode::SUCCESS
        }
        Request::Get { key, raw } => print_value(&key, cache.get(key.as_bytes()).as_deref(), raw)?,
        Request::Del { keys } => {
            let mut deleted = 0;
            for k in keys {
                deleted += usize::from(cache.delete(bytes::Bytes::from(k)).await?);
            }
            print_line(&deleted.to_string())?;
            ExitCode::SUCCESS
        }
        Request::Keys { pattern } => {
            let mut keys: Vec<_> = cache
                .scan_prefix(b"")
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| dice_resp::glob::glob_match(pattern.as_bytes(), k))
                .collect();
            keys.sort();
            print_keys(keys)?;
            ExitCode::SUCCESS
        }
        Request::Status { json } => {
            let s = cache.stats();
            let status = serde_json::json!({
                "node_id": s.node_id.to_string(),
                "peer_id": offline_peer_id(dir),
                "data_dir": dir.display().to_string(),
                "keys": s.keys,
                "entries": s.entries,
                "digest": format!("{:016x}", s.digest),
                "repairs": s.replica.repairs,
                "repaired_entries": s.replica.repaired_entries,
                "repair_conflicts": s.replica.repair_conflicts,
                "peers": [],
            });
            print_status(&status, json)?;
            ExitCode::SUCCESS
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn status_is_read_from_info() {
        let info = "# Server\r\nredis_version:7.2.0\r\n# Cluster\r\ncluster_enabled:0\r\n\
                    dice_node_id:00000000000000aa\r\ndice_keys:3\r\ndice_digest:00000000deadbeef\r\n\
                    dice_peers:1\r\ndice_peer0:id=12D3,node=bb,addr=/ip4/127.0.0.1/tcp/1,connected=1,unacked=0,missing=2,clock_offset_ms=-1500\r\n\
                    dice_peer1:id=12D4,node=cc,addr=-,connected=0,unacked=0,missing=0,clock_offset_ms=-\r\n\
                    dice_repairs:2\r\ndice_repaired_entries:5\r\ndice_repair_conflicts:1\r\n";
        let s = status_from_info(info, "127.0.0.1:7379");
        assert_eq!(s["node_id"], "00000000000000aa");
        assert_eq!(s["keys"], 3);
        assert_eq!(s["digest"], "00000000deadbeef");
        assert_eq!(s["peers"][0]["id"], "12D3");
        assert_eq!(s["peers"][0]["missing"], 2);
        assert_eq!(s["peers"][0]["connected"], 1);
        assert_eq!(s["peers"][0]["clock_offset_ms"], -1500);
        assert_eq!(s["peers"][1]["clock_offset_ms"], "-");
        assert_eq!(s["peers"].as_array().unwrap().len(), 2);
        assert_eq!(s["repairs"], 2);
        assert_eq!(s["repaired_entries"], 5);
        assert_eq!(s["repair_conflicts"], 1);
        // A node that reports none (an older one) shows zeros.
        let s = status_from_info("dice_keys:0\r\n", "127.0.0.1:7379");
        assert_eq!(s["repairs"], 0);
    }
}
