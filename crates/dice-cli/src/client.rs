//! `put/get/del/keys/status`: over the Redis protocol to a running node, or directly on a
//! data directory that no node holds.

use crate::Command;
use crate::node::API_ADDR_FILE;
use anyhow::{Context, Result, bail};
use dice_core::skew::SKEW_WARN_MS;
use dice_core::{Cache, CacheOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The default API address of a node.
pub const DEFAULT_NODE: &str = "127.0.0.1:7379";

/// Where a command goes.
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

fn connect(addr: &str, password: Option<&str>) -> Result<redis::Connection> {
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>().ok()?,
            ))
        })
        .with_context(|| format!("{addr:?} is not HOST:PORT"))?;
    let mut redis_info = redis::RedisConnectionInfo::default();
    if let Some(p) = password {
        redis_info = redis_info.set_password(p);
    }
    let info = redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp(
        host.to_string(),
        port,
    ))
    .with_context(|| format!("bad node address {addr}"))?
    .set_redis_settings(redis_info);
    let client = redis::Client::open(info).with_context(|| format!("bad node address {addr}"))?;
    client
        .get_connection_with_timeout(Duration::from_secs(5))
        .with_context(|| format!("cannot reach a dice node at {addr}"))
}

/// Runs a client command.
pub async fn run(target: Target, command: Command) -> Result<ExitCode> {
    match target {
        Target::Node { addr, password } => {
            let mut conn = connect(&addr, password.as_deref())?;
            remote(&mut conn, command, &addr)
        }
        Target::Data { dir, password } => {
            if let Ok(text) = std::fs::read_to_string(dir.join(API_ADDR_FILE)) {
                let addr = text.trim().to_string();
                match connect(&addr, password.as_deref()) {
                    Ok(mut conn) => return remote(&mut conn, command, &addr),
                    Err(e) => {
                        tracing::debug!(error = %e, "the node that wrote api.addr is not there");
                    }
                }
            }
            local(&dir, command).await
        }
    }
}

fn print_value(key: &str, value: Option<Vec<u8>>) -> ExitCode {
    match value {
        Some(v) => {
            println!("{}", String::from_utf8_lossy(&v));
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("dice: {key:?}: no such key");
            ExitCode::from(1)
        }
    }
}

fn remote(conn: &mut redis::Connection, command: Command, addr: &str) -> Result<ExitCode> {
    let ctx = || format!("node at {addr}");
    Ok(match command {
        Command::Put { key, value, ttl } => {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key).arg(&value);
            if let Some(ttl) = ttl {
                cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
            }
            let _: String = cmd.query(conn).with_context(ctx)?;
            println!("OK");
            ExitCode::SUCCESS
        }
        Command::Get { key } => {
            let v: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query(conn).with_context(ctx)?;
            print_value(&key, v)
        }
        Command::Del { keys } => {
            let n: u64 = redis::cmd("DEL").arg(&keys).query(conn).with_context(ctx)?;
            println!("{n}");
            ExitCode::SUCCESS
        }
        Command::Keys { pattern } => {
            let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS")
                .arg(&pattern)
                .query(conn)
                .with_context(ctx)?;
            keys.sort();
            for k in keys {
                println!("{}", String::from_utf8_lossy(&k));
            }
            ExitCode::SUCCESS
        }
        Command::Status { json } => {
            let info: String = redis::cmd("INFO")
                .arg("server")
                .arg("keyspace")
                .arg("cluster")
                .query(conn)
                .with_context(ctx)?;
            print_status(&status_from_info(&info, addr), json);
            ExitCode::SUCCESS
        }
        Command::Node(_) | Command::Keygen { .. } => bail!("not a client command"),
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
        "writes_refused": fields.get("dice_writes_refused_reason").copied(),
        "peers": peers,
    })
}

fn print_status(s: &serde_json::Value, json: bool) {
    if json {
        println!("{s}");
        return;
    }
    let field = |k: &str| {
        s[k].as_str()
            .map(str::to_string)
            .unwrap_or_else(|| s[k].to_string())
    };
    println!("node id:  {}", field("node_id"));
    if !field("peer_id").is_empty() {
        println!("peer id:  {}", field("peer_id"));
    }
    if let Some(api) = s["api"].as_str() {
        println!("api:      {api}");
    }
    if let Some(dir) = s["data_dir"].as_str() {
        println!("data dir: {dir} (no node running)");
    }
    println!("keys:     {}", field("keys"));
    println!("digest:   {}", field("digest"));
    if let Some(why) = s["writes_refused"].as_str() {
        println!("writes:   REFUSED: {why}");
    }
    let peers = s["peers"].as_array().cloned().unwrap_or_default();
    println!("peers:    {}", peers.len());
    for p in peers {
        // Older nodes do not report it; "-" when no estimate yet.
        let offset = match &p["clock_offset_ms"] {
            serde_json::Value::Number(n) => {
                let skewed = n.as_i64().is_some_and(|o| o.unsigned_abs() > SKEW_WARN_MS);
                format!("{n}{}", if skewed { " (SKEWED)" } else { "" })
            }
            _ => "-".to_string(),
        };
        println!(
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
        );
    }
}

/// The same commands on a data directory that no node holds.
async fn local(dir: &std::path::Path, command: Command) -> Result<ExitCode> {
    let cache = Cache::open_with(dir, CacheOptions::default())
        .await
        .with_context(|| format!("opening {}", dir.display()))?;
    let code = match command {
        Command::Put { key, value, ttl } => {
            match ttl {
                Some(ttl) => cache.put_with_ttl(key, value, ttl).await?,
                None => cache.put(key, value).await?,
            };
            println!("OK");
            ExitCode::SUCCESS
        }
        Command::Get { key } => print_value(&key, cache.get(key.as_bytes()).map(|v| v.to_vec())),
        Command::Del { keys } => {
            let mut deleted = 0;
            for k in keys {
                deleted += usize::from(cache.delete(bytes::Bytes::from(k)).await?);
            }
            println!("{deleted}");
            ExitCode::SUCCESS
        }
        Command::Keys { pattern } => {
            for (k, _) in cache.scan_prefix(b"") {
                if dice_resp::glob::glob_match(pattern.as_bytes(), &k) {
                    println!("{}", String::from_utf8_lossy(&k));
                }
            }
            ExitCode::SUCCESS
        }
        Command::Status { json } => {
            let s = cache.stats();
            let status = serde_json::json!({
                "node_id": s.node_id.to_string(),
                "data_dir": dir.display().to_string(),
                "keys": s.keys,
                "entries": s.entries,
                "digest": format!("{:016x}", s.digest),
                "peers": [],
            });
            print_status(&status, json);
            ExitCode::SUCCESS
        }
        Command::Node(_) | Command::Keygen { .. } => bail!("not a client command"),
    };
    cache.close().await?;
    Ok(code)
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
                    dice_peer1:id=12D4,node=cc,addr=-,connected=0,unacked=0,missing=0,clock_offset_ms=-\r\n";
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
    }
}
