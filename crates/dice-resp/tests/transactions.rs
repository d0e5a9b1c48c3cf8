//! MULTI / EXEC / DISCARD / WATCH / UNWATCH: replies byte for byte in RESP2 and RESP3,
//! atomicity against other clients, WATCH against local and replicated writes, and the
//! bounds on a transaction.
#![allow(clippy::unwrap_used)]

mod common;

use common::{bounded, exchange, q, start, start_default, start_with_clock};
use dice_resp::RespConfig;
use redis::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn cmd(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

#[tokio::test]
async fn queued_commands_run_in_order_at_exec() {
    let s = start_default().await;
    let mut raw = s.raw().await;
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["SET", "a", "1"]), b"+QUEUED\r\n").await;
    exchange(&mut raw, &cmd(&["GET", "a"]), b"+QUEUED\r\n").await;
    exchange(&mut raw, &cmd(&["APPEND", "a", "23"]), b"+QUEUED\r\n").await;
    exchange(&mut raw, &cmd(&["GET", "nothing"]), b"+QUEUED\r\n").await;
    exchange(
        &mut raw,
        &cmd(&["SET", "b", "x", "EX", "0"]),
        b"+QUEUED\r\n",
    )
    .await;
    // Nothing ran yet.
    assert_eq!(s.cache.get(b"a"), None);
    exchange(
        &mut raw,
        &cmd(&["EXEC"]),
        b"*5\r\n+OK\r\n$1\r\n1\r\n:3\r\n$-1\r\n-ERR invalid expire time in 'set' command\r\n",
    )
    .await;
    assert_eq!(s.cache.get(b"a").as_deref(), Some(&b"123"[..]));
    // Acknowledged means committed.
    assert_eq!(s.cache.stats().pending_keys, 0);

    // An empty transaction, and DISCARD.
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["EXEC"]), b"*0\r\n").await;
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["SET", "a", "discarded"]), b"+QUEUED\r\n").await;
    exchange(&mut raw, &cmd(&["DISCARD"]), b"+OK\r\n").await;
    assert_eq!(s.cache.get(b"a").as_deref(), Some(&b"123"[..]));

    // RESP3: a missing value inside EXEC is `_`.
    hello3(&mut raw).await;
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["GET", "nothing"]), b"+QUEUED\r\n").await;
    exchange(&mut raw, &cmd(&["EXEC"]), b"*1\r\n_\r\n").await;
}

#[tokio::test]
async fn errors_while_queuing_abort_exec() {
    let s = start_default().await;
    let mut raw = s.raw().await;
    exchange(&mut raw, &cmd(&["EXEC"]), b"-ERR EXEC without MULTI\r\n").await;
    exchange(
        &mut raw,
        &cmd(&["DISCARD"]),
        b"-ERR DISCARD without MULTI\r\n",
    )
    .await;
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(
        &mut raw,
        &cmd(&["MULTI"]),
        b"-ERR MULTI calls can not be nested\r\n",
    )
    .await;
    exchange(
        &mut raw,
        &cmd(&["WATCH", "a"]),
        b"-ERR WATCH inside MULTI is not allowed\r\n",
    )
    .await;
    // Those two errors do not abort the transaction (as in Redis).
    exchange(&mut raw, &cmd(&["SET", "a", "1"]), b"+QUEUED\r\n").await;
    exchange(&mut raw, &cmd(&["EXEC"]), b"*1\r\n+OK\r\n").await;

    for bad in [cmd(&["NOSUCHCOMMAND", "x"]), cmd(&["GET"]), cmd(&["INFO"])] {
        exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
        exchange(&mut raw, &cmd(&["SET", "b", "1"]), b"+QUEUED\r\n").await;
        let mut reply = [0u8; 1];
        tokio::io::AsyncWriteExt::write_all(&mut raw, &bad)
            .await
            .unwrap();
        bounded(tokio::io::AsyncReadExt::read_exact(&mut raw, &mut reply))
            .await
            .unwrap();
        assert_eq!(
            reply[0],
            b'-',
            "{:?} is refused",
            String::from_utf8_lossy(&bad)
        );
        let line = read_line(&mut raw).await;
        assert!(!line.is_empty());
        exchange(&mut raw, &cmd(&["SET", "c", "1"]), b"+QUEUED\r\n").await;
        exchange(
            &mut raw,
            &cmd(&["EXEC"]),
            b"-EXECABORT Transaction discarded because of previous errors.\r\n",
        )
        .await;
        assert_eq!(s.cache.get(b"b"), None, "nothing of an aborted EXEC ran");
        assert_eq!(s.cache.get(b"c"), None);
    }
    // The connection is out of the transaction after EXECABORT.
    exchange(&mut raw, &cmd(&["GET", "a"]), b"$1\r\n1\r\n").await;
}

#[tokio::test]
async fn commands_before_auth_abort_the_transaction() {
    let s = start(RespConfig::default().with_requirepass(Some("pw".into()))).await;
    let mut raw = s.raw().await;
    exchange(
        &mut raw,
        &cmd(&["MULTI"]),
        b"-NOAUTH Authentication required.\r\n",
    )
    .await;
    exchange(&mut raw, &cmd(&["AUTH", "pw"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(
        &mut raw,
        &cmd(&["AUTH", "pw"]),
        b"-ERR Command not allowed inside a transaction\r\n",
    )
    .await;
    exchange(
        &mut raw,
        &cmd(&["EXEC"]),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    )
    .await;
}

/// Switches to RESP3 and reads the whole HELLO reply (a map ending with `modules`, empty).
async fn hello3(raw: &mut tokio::net::TcpStream) {
    tokio::io::AsyncWriteExt::write_all(raw, &cmd(&["HELLO", "3"]))
        .await
        .unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"$7\r\nmodules\r\n*0\r\n") {
        got.extend(read_line(raw).await);
    }
    assert!(got.starts_with(b"%7\r\n"));
}

async fn read_line(raw: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        bounded(tokio::io::AsyncReadExt::read_exact(raw, &mut b))
            .await
            .unwrap();
        line.push(b[0]);
    }
    line
}

#[tokio::test]
async fn watch_aborts_exec_when_another_client_writes() {
    let s = start_default().await;
    let mut other = s.client().await;
    let mut raw = s.raw().await;
    let () = q(&mut other, &[b"SET", b"w", b"0"]).await;

    exchange(&mut raw, &cmd(&["WATCH", "w", "absent"]), b"+OK\r\n").await;
    let () = q(&mut other, &[b"SET", b"w", b"0"]).await; // same value: still a write
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["SET", "w", "mine"]), b"+QUEUED\r\n").await;
    exchange(&mut raw, &cmd(&["EXEC"]), b"*-1\r\n").await;
    assert_eq!(s.cache.get(b"w").as_deref(), Some(&b"0"[..]));

    // EXEC unwatched everything: the next transaction runs.
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["SET", "w", "mine"]), b"+QUEUED\r\n").await;
    exchange(&mut raw, &cmd(&["EXEC"]), b"*1\r\n+OK\r\n").await;

    // No change: runs. A key absent then created by another client: aborts (RESP3: `_`).
    exchange(&mut raw, &cmd(&["WATCH", "w", "absent"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["GET", "w"]), b"+QUEUED\r\n").await;
    exchange(&mut raw, &cmd(&["EXEC"]), b"*1\r\n$4\r\nmine\r\n").await;
    hello3(&mut raw).await;
    exchange(&mut raw, &cmd(&["WATCH", "absent"]), b"+OK\r\n").await;
    let () = q(&mut other, &[b"SET", b"absent", b"now"]).await;
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["DEL", "absent"]), b"+QUEUED\r\n").await;
    exchange(&mut raw, &cmd(&["EXEC"]), b"_\r\n").await;
    assert_eq!(s.cache.get(b"absent").as_deref(), Some(&b"now"[..]));

    // A delete of an absent key is a write too (a tombstone), and so is our own write.
    exchange(&mut raw, &cmd(&["WATCH", "gone"]), b"+OK\r\n").await;
    let _: i64 = q(&mut other, &[b"DEL", b"gone"]).await;
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["EXEC"]), b"_\r\n").await;
    exchange(&mut raw, &cmd(&["WATCH", "w"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["SET", "w", "self"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["EXEC"]), b"_\r\n").await;

    // UNWATCH forgets; DISCARD too.
    exchange(&mut raw, &cmd(&["WATCH", "w"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["UNWATCH"]), b"+OK\r\n").await;
    let () = q(&mut other, &[b"SET", b"w", b"1"]).await;
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["EXEC"]), b"*0\r\n").await;
    exchange(&mut raw, &cmd(&["WATCH", "w"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["DISCARD"]), b"+OK\r\n").await;
    let () = q(&mut other, &[b"SET", b"w", b"2"]).await;
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["EXEC"]), b"*0\r\n").await;
}

#[tokio::test]
async fn watch_sees_replicated_writes_and_expiry() {
    let (s, clock) = start_with_clock().await;
    let peer_dir = tempfile::tempdir().unwrap();
    let peer = dice_core::Cache::open(peer_dir.path()).await.unwrap();
    let mut raw = s.raw().await;
    exchange(&mut raw, &cmd(&["SET", "r", "local"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["WATCH", "r"]), b"+OK\r\n").await;
    // A peer writes the key (later, so it wins) and pushes it here.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    peer.put("r", "remote").await.unwrap();
    let (push, _) = peer.push_after(0).unwrap();
    s.cache.handle_sync(push).unwrap();
    assert_eq!(s.cache.get(b"r").as_deref(), Some(&b"remote"[..]));
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["SET", "r", "mine"]), b"+QUEUED\r\n").await;
    exchange(&mut raw, &cmd(&["EXEC"]), b"*-1\r\n").await;
    assert_eq!(s.cache.get(b"r").as_deref(), Some(&b"remote"[..]));

    // A watched key that expires meanwhile aborts EXEC too (as in Redis 7).
    exchange(&mut raw, &cmd(&["SET", "e", "v", "PX", "50"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["WATCH", "e"]), b"+OK\r\n").await;
    clock.advance(std::time::Duration::from_millis(50));
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["SET", "e", "new"]), b"+QUEUED\r\n").await;
    exchange(&mut raw, &cmd(&["EXEC"]), b"*-1\r\n").await;
    assert_eq!(s.cache.get(b"e"), None);
}

#[tokio::test]
async fn exec_is_atomic_and_one_group_commit() {
    let s = start_default().await;
    let mut c = s.client().await;
    // One group commit for all the writes of an EXEC.
    let before = s.cache.stats().commits;
    let mut pipe = redis::pipe();
    pipe.atomic();
    for i in 0..50 {
        pipe.cmd("SET").arg(format!("g:{i}")).arg(i);
    }
    let replies: Vec<Value> = bounded(pipe.query_async(&mut c)).await.unwrap();
    assert_eq!(replies.len(), 50);
    assert_eq!(s.cache.stats().commits - before, 1, "one group commit");
    assert_eq!(s.cache.stats().pending_keys, 0);

    // Another client never sees half of a transaction.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let mut r = s.client().await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            while !stop.load(Ordering::Relaxed) {
                let (a, b): (Option<i64>, Option<i64>) = redis::cmd("MGET")
                    .arg("a")
                    .arg("b")
                    .query_async(&mut r)
                    .await
                    .unwrap();
                assert_eq!(a, b, "a reader saw half of a transaction");
                seen += 1;
            }
            seen
        })
    };
    for i in 0..300 {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg("a")
            .arg(i)
            .cmd("GET")
            .arg("a")
            .cmd("SET")
            .arg("b")
            .arg(i);
        let (_, got, _): ((), i64, ()) = bounded(pipe.query_async(&mut c)).await.unwrap();
        assert_eq!(got, i);
    }
    stop.store(true, Ordering::Relaxed);
    assert!(bounded(reader).await.unwrap() > 0);
}

#[tokio::test]
async fn exec_replies_and_queue_are_bounded() {
    let s = start(
        RespConfig::default()
            .with_max_exec_reply(2000)
            .with_max_request_len(64 * 1024),
    )
    .await;
    let mut raw = s.raw().await;
    let big = "x".repeat(800);
    exchange(&mut raw, &cmd(&["SET", "big", &big]), b"+OK\r\n").await;
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    for _ in 0..3 {
        exchange(&mut raw, &cmd(&["GET", "big"]), b"+QUEUED\r\n").await;
    }
    exchange(&mut raw, &cmd(&["GETSET", "big", "small"]), b"+QUEUED\r\n").await;
    exchange(&mut raw, &cmd(&["MGET", "big", "big"]), b"+QUEUED\r\n").await;
    exchange(&mut raw, &cmd(&["SET", "after", "1"]), b"+QUEUED\r\n").await;
    let bulk = format!("$800\r\n{big}\r\n");
    let too_big = "-ERR the replies of this EXEC would pass 2000 bytes (max_exec_reply); \
                   the command was not run\r\n";
    let expected = format!("*6\r\n{bulk}{bulk}{too_big}{too_big}{too_big}+OK\r\n");
    exchange(&mut raw, &cmd(&["EXEC"]), expected.as_bytes()).await;
    // The GETSET that did not fit did not write; the command after it ran.
    assert_eq!(s.cache.get(b"big").as_deref(), Some(big.as_bytes()));
    assert_eq!(s.cache.get(b"after").as_deref(), Some(&b"1"[..]));

    // The queue: at most max_request_len bytes together.
    exchange(&mut raw, &cmd(&["MULTI"]), b"+OK\r\n").await;
    let value = "y".repeat(10_000);
    let mut refused = false;
    for _ in 0..10 {
        let mut reply = [0u8; 1];
        tokio::io::AsyncWriteExt::write_all(&mut raw, &cmd(&["SET", "q", &value]))
            .await
            .unwrap();
        bounded(tokio::io::AsyncReadExt::read_exact(&mut raw, &mut reply))
            .await
            .unwrap();
        let line = read_line(&mut raw).await;
        if reply[0] == b'-' {
            assert!(String::from_utf8_lossy(&line).contains("max_request_len"));
            refused = true;
            break;
        }
    }
    assert!(refused, "the queue is bounded");
    exchange(
        &mut raw,
        &cmd(&["EXEC"]),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    )
    .await;
    assert_eq!(s.cache.get(b"q"), None);
}
