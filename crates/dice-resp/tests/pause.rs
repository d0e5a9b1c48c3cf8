//! `CLIENT PAUSE` and `CLIENT UNPAUSE`: paused commands wait (never fail), `WRITE` holds
//! only what writes or may be replicated, and peers' replicated writes keep applying.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn cmd(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// Expects exactly `want` next on `raw`.
async fn expect(raw: &mut TcpStream, want: &[u8]) {
    exchange(raw, b"", want).await;
}

/// Expects nothing to arrive on `raw` for a moment (this cannot fail because the machine
/// is slow: only a reply that should not exist yet fails it).
async fn expect_silence(raw: &mut TcpStream) {
    let mut b = [0u8; 1];
    let got = tokio::time::timeout(Duration::from_millis(300), raw.read(&mut b)).await;
    assert!(
        got.is_err(),
        "unexpected bytes: {:?}",
        got.map(|r| r.map(|_| b[0]))
    );
}

#[tokio::test]
async fn client_pause_write_holds_writes_not_reads() {
    let s = start_default().await;
    let mut admin = s.client().await;
    let mut paused = s.raw().await;
    let () = q(&mut admin, &[b"SET", b"k", b"before"]).await;
    let () = q(&mut admin, &[b"CLIENT", b"PAUSE", b"100000", b"WRITE"]).await;
    // Reads answer at once.
    exchange(&mut paused, &cmd(&["GET", "k"]), b"$6\r\nbefore\r\n").await;
    // A write waits: the server has read it (CLIENT LIST shows it as the last command)...
    paused
        .write_all(&cmd(&["SET", "k", "after"]))
        .await
        .unwrap();
    eventually(|| {
        let url = s.url();
        async move {
            let mut c = client_at(&url).await;
            let list: String = q(&mut c, &[b"CLIENT", b"LIST"]).await;
            list.lines().filter(|l| l.contains(" cmd=set ")).count() == 1
        }
    })
    .await;
    // ... and has not run it.
    let v: Option<String> = q(&mut admin, &[b"GET", b"k"]).await;
    assert_eq!(v.as_deref(), Some("before"));
    // PUBLISH waits too (it may replicate).
    let mut publisher = s.raw().await;
    publisher
        .write_all(&cmd(&["PUBLISH", "c", "m"]))
        .await
        .unwrap();
    expect_silence(&mut publisher).await;
    // UNPAUSE: it runs, and answers.
    let () = q(&mut admin, &[b"CLIENT", b"UNPAUSE"]).await;
    expect(&mut paused, b"+OK\r\n").await;
    expect(&mut publisher, b":0\r\n").await;
    let v: Option<String> = q(&mut admin, &[b"GET", b"k"]).await;
    assert_eq!(v.as_deref(), Some("after"));

    // Errors as in Redis.
    let e = err(&mut admin, &[b"CLIENT", b"PAUSE", b"10", b"READ"]).await;
    assert_eq!(e, "ERR CLIENT PAUSE mode must be WRITE or ALL");
    let e = err(&mut admin, &[b"CLIENT", b"PAUSE", b"soon"]).await;
    assert_eq!(e, "ERR timeout is not an integer or out of range");
    let e = err(&mut admin, &[b"CLIENT", b"PAUSE", b"-1"]).await;
    assert_eq!(e, "ERR timeout is negative");
}

#[tokio::test]
async fn client_pause_all_holds_every_command_until_it_ends() {
    let s = start_default().await;
    let mut admin = s.client().await;
    let peer_dir = tempfile::tempdir().unwrap();
    let peer = dice_core::Cache::open(peer_dir.path()).await.unwrap();
    let mut paused = s.raw().await;
    let () = q(&mut admin, &[b"CLIENT", b"PAUSE", b"3000"]).await;
    paused.write_all(&cmd(&["PING"])).await.unwrap();
    expect_silence(&mut paused).await;
    // Replicated writes keep applying during a pause.
    peer.put("r", "remote").await.unwrap();
    let (push, _) = peer.push_after(0).unwrap();
    s.cache.handle_sync(push).unwrap();
    assert_eq!(s.cache.get(b"r").as_deref(), Some(&b"remote"[..]));
    // The pause ends by itself: the command runs.
    expect(&mut paused, b"+PONG\r\n").await;
    exchange(&mut paused, &cmd(&["GET", "r"]), b"$6\r\nremote\r\n").await;
}
