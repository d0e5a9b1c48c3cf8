//! CONFIG, CLIENT LIST/INFO/KILL, TIME, SHUTDOWN, COMMAND DOCS and INFO fields.
#![allow(clippy::unwrap_used)]

mod common;

use common::{bounded, err, exchange, q, read_to_close, start, start_default};
use dice_resp::RespConfig;
use redis::Value;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test]
async fn config_get_set_resetstat() {
    let s = start(RespConfig::default().with_requirepass(Some("pw".into()))).await;
    let url = format!("redis://:pw@{}/", s.handle.local_addr());
    let mut c = common::client_at(&url).await;
    let all: HashMap<String, String> = q(&mut c, &[b"CONFIG", b"GET", b"*"]).await;
    assert_eq!(all["maxclients"], "10000");
    assert_eq!(all["databases"], "1");
    assert_eq!(all["save"], "");
    assert_eq!(all["appendonly"], "no");
    assert_eq!(all["timeout"], "0");
    assert_eq!(all["port"], s.handle.local_addr().port().to_string());
    assert!(
        !all.contains_key("requirepass"),
        "the password is never shown"
    );
    assert!(!all.values().any(|v| v == "pw"));
    let some: HashMap<String, String> =
        q(&mut c, &[b"CONFIG", b"GET", b"MAX*", b"data?ases"]).await;
    let mut keys: Vec<_> = some.keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "databases",
            "maxclients",
            "maxmemory",
            "maxmemory-policy",
            "maxmemory-samples"
        ]
    );
    let none: HashMap<String, String> = q(&mut c, &[b"CONFIG", b"GET", b"nosuch"]).await;
    assert!(none.is_empty());
    assert_eq!(
        err(&mut c, &[b"CONFIG", b"GET"]).await,
        "ERR wrong number of arguments for 'config|get' command"
    );

    // timeout changes at run time and closes idle clients from then on.
    let () = q(&mut c, &[b"CONFIG", b"SET", b"timeout", b"1"]).await;
    let t: HashMap<String, String> = q(&mut c, &[b"CONFIG", b"GET", b"timeout"]).await;
    assert_eq!(t["timeout"], "1");
    let mut idle = s.raw().await;
    exchange(&mut idle, b"AUTH pw\r\n", b"+OK\r\n").await;
    assert!(
        read_to_close(&mut idle).await.is_empty(),
        "closed when idle"
    );
    // (This client was idle as long: it is closed too.)
    let mut c = common::client_at(&url).await;
    let () = q(&mut c, &[b"CONFIG", b"SET", b"timeout", b"0"]).await;
    assert_eq!(
        err(&mut c, &[b"CONFIG", b"SET", b"timeout", b"x"]).await,
        "ERR CONFIG SET failed (possibly related to argument 'timeout') - argument couldn't \
         be parsed into an integer"
    );
    assert_eq!(
        err(&mut c, &[b"CONFIG", b"SET", b"maxclients", b"5"]).await,
        "ERR CONFIG SET failed (possibly related to argument 'maxclients') - can't set \
         immutable config"
    );
    // Setting what it already is is fine (tools do `CONFIG SET save ""`).
    let () = q(&mut c, &[b"CONFIG", b"SET", b"save", b""]).await;
    assert_eq!(
        err(&mut c, &[b"CONFIG", b"SET", b"nosuch", b"1"]).await,
        "ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'"
    );
    assert_eq!(
        err(&mut c, &[b"CONFIG", b"SET", b"timeout"]).await,
        "ERR wrong number of arguments for 'config|set' command"
    );
    // Checked before anything is applied.
    let _ = err(
        &mut c,
        &[b"CONFIG", b"SET", b"timeout", b"7", b"port", b"1"],
    )
    .await;
    let t: HashMap<String, String> = q(&mut c, &[b"CONFIG", b"GET", b"timeout"]).await;
    assert_eq!(t["timeout"], "0");

    let info: String = q(&mut c, &[b"INFO", b"stats"]).await;
    assert!(!info.contains("total_connections_received:0\r\n"));
    let () = q(&mut c, &[b"CONFIG", b"RESETSTAT"]).await;
    let info: String = q(&mut c, &[b"INFO", b"stats"]).await;
    assert!(info.contains("total_connections_received:0\r\n"), "{info}");
    assert!(info.contains("dice_auth_failures:0\r\n"));
    assert_eq!(
        err(&mut c, &[b"CONFIG", b"REWRITE"]).await,
        "ERR The server is running without a config file"
    );
    let help: Vec<String> = q(&mut c, &[b"CONFIG", b"HELP"]).await;
    assert!(help[0].starts_with("CONFIG <subcommand>"));
}

fn field(line: &str, name: &str) -> String {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        .trim_end()
        .to_string()
}

#[tokio::test]
async fn client_list_info_kill() {
    let s = start_default().await;
    let mut c = s.client().await;
    let mut victim = s.raw().await;
    exchange(&mut victim, b"CLIENT SETNAME victim\r\n", b"+OK\r\n").await;
    exchange(
        &mut victim,
        b"CLIENT SETINFO LIB-NAME mylib\r\n",
        b"+OK\r\n",
    )
    .await;
    let mut bystander = s.raw().await;
    exchange(&mut bystander, b"PING\r\n", b"+PONG\r\n").await;

    let list: String = q(&mut c, &[b"CLIENT", b"LIST"]).await;
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    let victim_line = lines.iter().find(|l| l.contains("name=victim")).unwrap();
    assert_eq!(field(victim_line, "lib-name"), "mylib");
    assert_eq!(field(victim_line, "cmd"), "client");
    assert_eq!(field(victim_line, "db"), "0");
    let victim_id = field(victim_line, "id");
    let victim_addr = field(victim_line, "addr");
    assert_eq!(victim_addr, victim.local_addr().unwrap().to_string());

    let me: String = q(&mut c, &[b"CLIENT", b"INFO"]).await;
    let my_id: i64 = q(&mut c, &[b"CLIENT", b"ID"]).await;
    assert_eq!(field(&me, "id"), my_id.to_string());
    assert_eq!(field(&me, "resp"), "2");
    assert_eq!(field(&me, "flags"), "N");
    let only: String = q(&mut c, &[b"CLIENT", b"LIST", b"ID", victim_id.as_bytes()]).await;
    assert_eq!(only.lines().count(), 1);
    assert!(only.contains("name=victim"));

    // KILL ID: only the target goes.
    let killed: i64 = q(&mut c, &[b"CLIENT", b"KILL", b"ID", victim_id.as_bytes()]).await;
    assert_eq!(killed, 1);
    assert!(read_to_close(&mut victim).await.is_empty());
    exchange(&mut bystander, b"PING\r\n", b"+PONG\r\n").await;
    common::eventually(|| async {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut s.client().await)
            .await
            .unwrap();
        !list.contains("name=victim")
    })
    .await;

    // KILL addr (the old form) and KILL ADDR.
    let by_addr = bystander.local_addr().unwrap().to_string();
    let () = q(&mut c, &[b"CLIENT", b"KILL", by_addr.as_bytes()]).await;
    assert!(read_to_close(&mut bystander).await.is_empty());
    assert_eq!(
        err(&mut c, &[b"CLIENT", b"KILL", b"127.0.0.1:1"]).await,
        "ERR No such client"
    );
    let mut third = s.raw().await;
    exchange(&mut third, b"PING\r\n", b"+PONG\r\n").await;
    let addr = third.local_addr().unwrap().to_string();
    let n: i64 = q(&mut c, &[b"CLIENT", b"KILL", b"ADDR", addr.as_bytes()]).await;
    assert_eq!(n, 1);
    assert!(read_to_close(&mut third).await.is_empty());
    // SKIPME: this connection survives a kill of everyone.
    let n: i64 = q(&mut c, &[b"CLIENT", b"KILL", b"USER", b"default"]).await;
    assert!(n >= 0);
    assert_eq!(q::<i64>(&mut c, &[b"CLIENT", b"ID"]).await, my_id);
    assert_eq!(
        err(&mut c, &[b"CLIENT", b"KILL", b"ID", b"x"]).await,
        "ERR client-id should be greater than 0"
    );
    assert_eq!(
        err(&mut c, &[b"CLIENT", b"KILL", b"NOPE", b"1"]).await,
        "ERR syntax error"
    );

    let help: Vec<String> = q(&mut c, &[b"CLIENT", b"HELP"]).await;
    assert!(help[0].starts_with("CLIENT <subcommand>"));
    let () = q(&mut c, &[b"CLIENT", b"NO-EVICT", b"on"]).await;
    let () = q(&mut c, &[b"CLIENT", b"NO-TOUCH", b"off"]).await;
    assert_eq!(
        err(&mut c, &[b"CLIENT", b"NO-EVICT", b"maybe"]).await,
        "ERR syntax error"
    );
}

#[tokio::test]
async fn client_list_shows_multi_and_resp3_is_verbatim() {
    let s = start_default().await;
    let mut raw = s.raw().await;
    exchange(&mut raw, b"MULTI\r\nPING\r\n", b"+OK\r\n+QUEUED\r\n").await;
    let mut c = s.client().await;
    let list: String = q(&mut c, &[b"CLIENT", b"LIST"]).await;
    let line = list.lines().find(|l| l.contains("flags=x")).unwrap();
    assert_eq!(field(line, "multi"), "1");
    exchange(&mut raw, b"EXEC\r\n", b"*1\r\n+PONG\r\n").await;

    let mut raw3 = s.raw().await;
    raw3_hello(&mut raw3).await;
    tokio::io::AsyncWriteExt::write_all(&mut raw3, b"CLIENT INFO\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 1];
    bounded(tokio::io::AsyncReadExt::read_exact(&mut raw3, &mut head))
        .await
        .unwrap();
    assert_eq!(head[0], b'=', "CLIENT INFO is a verbatim string in RESP3");
}

async fn raw3_hello(raw: &mut tokio::net::TcpStream) {
    tokio::io::AsyncWriteExt::write_all(raw, b"HELLO 3\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"modules\r\n*0\r\n") {
        bounded(tokio::io::AsyncReadExt::read_exact(raw, &mut b))
            .await
            .unwrap();
        got.push(b[0]);
    }
}

#[tokio::test]
async fn time_command_docs_info() {
    let s = start_default().await;
    let mut c = s.client().await;
    let (secs, micros): (String, String) = q(&mut c, &[b"TIME"]).await;
    let secs: u64 = secs.parse().unwrap();
    assert!(secs.abs_diff(dice_core::now_ms() / 1000) < 5);
    assert!(micros.parse::<u64>().unwrap() < 1_000_000);

    let count: i64 = q(&mut c, &[b"COMMAND", b"COUNT"]).await;
    let docs: Value = q(&mut c, &[b"COMMAND", b"DOCS"]).await;
    let Value::Array(flat) = &docs else {
        panic!("{docs:?}")
    };
    assert_eq!(flat.len() as i64, 2 * count, "docs for every command");
    let set: Value = q(&mut c, &[b"COMMAND", b"DOCS", b"set", b"nosuch"]).await;
    let text = format!("{set:?}");
    for want in [
        "summary",
        "since",
        "string",
        "arguments",
        "KEEPTTL",
        "optional",
    ] {
        assert!(text.contains(want), "{want} in {text}");
    }
    let client: Value = q(&mut c, &[b"COMMAND", b"DOCS", b"client"]).await;
    assert!(format!("{client:?}").contains("client|kill"));

    let info: String = q(&mut c, &[b"INFO"]).await;
    for section in [
        "# Server",
        "# Clients",
        "# Memory",
        "# Persistence",
        "# Stats",
        "# Keyspace",
        "# Cluster",
    ] {
        assert!(info.contains(section), "{section}");
    }
    for f in [
        "run_id:",
        "total_commands_processed:",
        "total_net_input_bytes:",
        "rdb_last_bgsave_status:ok",
        "aof_enabled:0",
        "maxmemory_policy:noeviction",
        "connected_clients:1",
    ] {
        assert!(info.contains(f), "{f}");
    }
}

#[tokio::test]
async fn shutdown_asks_the_owner_and_needs_the_password() {
    let s = start(RespConfig::default().with_requirepass(Some("pw".into()))).await;
    let mut raw = s.raw().await;
    exchange(
        &mut raw,
        b"SHUTDOWN\r\n",
        b"-NOAUTH Authentication required.\r\n",
    )
    .await;
    let asked = tokio::time::timeout(Duration::from_millis(100), s.handle.shutdown_requested());
    assert!(asked.await.is_err(), "no request yet");
    exchange(
        &mut raw,
        b"AUTH pw\r\nSHUTDOWN ABORT\r\n",
        b"+OK\r\n-ERR No shutdown in progress.\r\n",
    )
    .await;
    exchange(&mut raw, b"SHUTDOWN BOGUS\r\n", b"-ERR syntax error\r\n").await;
    exchange(
        &mut raw,
        b"SET k v\r\nMULTI\r\nSHUTDOWN\r\nDISCARD\r\n",
        b"+OK\r\n+OK\r\n-ERR Command not allowed inside a transaction\r\n+OK\r\n",
    )
    .await;
    tokio::io::AsyncWriteExt::write_all(&mut raw, b"SHUTDOWN NOSAVE\r\n")
        .await
        .unwrap();
    assert!(read_to_close(&mut raw).await.is_empty(), "no reply: closed");
    bounded(s.handle.shutdown_requested()).await;
    // The owner stops the server; acknowledged writes are committed.
    let common::TestServer { cache, handle, .. } = s;
    handle.shutdown().await.unwrap();
    assert_eq!(cache.get(b"k").as_deref(), Some(&b"v"[..]));
    assert_eq!(cache.stats().pending_keys, 0);
}

#[tokio::test]
async fn shutdown_without_an_owner_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dice_core::Cache::open(dir.path()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(dice_resp::serve(listener, cache, RespConfig::default()));
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    exchange(
        &mut raw,
        b"SHUTDOWN\r\n",
        b"-ERR Errors trying to SHUTDOWN. Check logs.\r\n",
    )
    .await;
    exchange(&mut raw, b"PING\r\n", b"+PONG\r\n").await;
    task.abort();
}

/// A cluster provider whose single peer acknowledged our writes up to `acked`.
struct OnePeer {
    acked: std::sync::atomic::AtomicU64,
}

impl dice_resp::ClusterInfo for OnePeer {
    fn cluster_lines(&self) -> Vec<String> {
        Vec::new()
    }
    fn acked_by(&self, seq: u64) -> usize {
        usize::from(self.acked.load(std::sync::atomic::Ordering::SeqCst) >= seq)
    }
}

#[tokio::test]
async fn wait_counts_the_peers_that_acknowledged_this_connections_writes() {
    use std::sync::atomic::Ordering::SeqCst;
    // Standalone (no provider): 0 at once, even with no timeout.
    let s = start_default().await;
    let mut c = s.client().await;
    let _: () = q(&mut c, &[b"SET", b"k", b"v"]).await;
    assert_eq!(q::<i64>(&mut c, &[b"WAIT", b"1", b"0"]).await, 0);
    let e = err(&mut c, &[b"WAIT", b"1", b"-1"]).await;
    assert_eq!(e, "ERR timeout is negative");
    let e = err(&mut c, &[b"WAIT", b"x", b"0"]).await;
    assert!(e.contains("not an integer"), "{e}");
    let e = err(&mut c, &[b"WAITAOF", b"1", b"0", b"0"]).await;
    assert!(e.contains("appendonly"), "{e}");
    // Not in a transaction (it would block under the cache's lock).
    let _: String = q(&mut c, &[b"MULTI"]).await;
    let e = err(&mut c, &[b"WAIT", b"0", b"0"]).await;
    assert!(e.contains("not allowed inside a transaction"), "{e}");
    let e = err(&mut c, &[b"EXEC"]).await;
    assert!(e.starts_with("EXECABORT"), "{e}");

    // With a provider: the seq asked about is the connection's last write's own.
    let dir = tempfile::tempdir().unwrap();
    let cache = dice_core::Cache::open(dir.path()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = std::sync::Arc::new(OnePeer {
        acked: std::sync::atomic::AtomicU64::new(0),
    });
    let server = dice_resp::RespServer::new(listener, cache.clone(), Default::default())
        .with_cluster_info(peer.clone())
        .spawn()
        .unwrap();
    let url = format!("redis://{}/", server.local_addr());
    let mut c = common::client_at(&url).await;
    let mut other = common::client_at(&url).await;
    // No write yet: every peer holds all of them.
    assert_eq!(q::<i64>(&mut c, &[b"WAIT", b"1", b"0"]).await, 1);
    let _: () = q(&mut c, &[b"SET", b"a", b"1"]).await;
    let mine = cache.local_seq();
    let _: () = q(&mut other, &[b"MSET", b"b", b"2", b"c", b"3"]).await;
    assert!(cache.local_seq() > mine);
    // Not acknowledged: 0 once the timeout passes.
    assert_eq!(q::<i64>(&mut c, &[b"WAIT", b"1", b"100"]).await, 0);
    // Acknowledged up to this connection's write (not the other's): 1.
    peer.acked.store(mine, SeqCst);
    assert_eq!(q::<i64>(&mut c, &[b"WAIT", b"1", b"0"]).await, 1);
    // The longest timeout is fine (no overflow).
    let forever = i64::MAX.to_string();
    assert_eq!(
        q::<i64>(&mut c, &[b"WAIT", b"1", forever.as_bytes()]).await,
        1
    );
    assert_eq!(
        q::<i64>(&mut c, &[b"WAIT", b"2", b"1"]).await,
        1,
        "one peer only"
    );
    assert_eq!(q::<i64>(&mut other, &[b"WAIT", b"1", b"100"]).await, 0);
    // A WAIT with no bound returns once the acknowledgement comes.
    let waiting = tokio::spawn(async move { q::<i64>(&mut other, &[b"WAIT", b"1", b"0"]).await });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    peer.acked.store(cache.local_seq(), SeqCst);
    assert_eq!(bounded(waiting).await.unwrap(), 1);
    // A transaction's writes count too.
    let _: (String, String) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("t")
        .arg("1")
        .cmd("GET")
        .arg("t")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(q::<i64>(&mut c, &[b"WAIT", b"1", b"50"]).await, 0);
    peer.acked.store(cache.local_seq(), SeqCst);
    assert_eq!(q::<i64>(&mut c, &[b"WAIT", b"1", b"50"]).await, 1);
    server.shutdown().await.unwrap();
}
