//! Client tracking (`CLIENT TRACKING`) on one server: one connection tracks, others write;
//! the exact bytes of RESP3 pushes and of RESP2 redirection, `BCAST` with prefixes,
//! `OPTIN`/`OPTOUT`, `NOLOOP`, the table's bound, replicated writes and expiries, flushes,
//! the options' errors.
//!
//! To show that something was *not* sent, a test changes a "sentinel" key the client also
//! tracks and checks that the next message names only the sentinel: changes are handled in
//! order, so a message for the earlier change would come first (or in the same message).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use dice_resp::RespConfig;
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

/// The RESP3 push invalidating `keys`.
fn invalidate(keys: &[&str]) -> Vec<u8> {
    let mut out = format!(">2\r\n$10\r\ninvalidate\r\n*{}\r\n", keys.len()).into_bytes();
    for k in keys {
        out.extend_from_slice(format!("${}\r\n{k}\r\n", k.len()).as_bytes());
    }
    out
}

/// The RESP2 message on `__redis__:invalidate` naming `keys`.
fn invalidate_message(keys: &[&str]) -> Vec<u8> {
    let mut out = b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n".to_vec();
    out.extend_from_slice(format!("*{}\r\n", keys.len()).as_bytes());
    for k in keys {
        out.extend_from_slice(format!("${}\r\n{k}\r\n", k.len()).as_bytes());
    }
    out
}

async fn read_line(raw: &mut TcpStream) -> Vec<u8> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        bounded(raw.read_exact(&mut b)).await.unwrap();
        line.push(b[0]);
    }
    line
}

/// Switches to RESP3 and reads the whole HELLO reply.
async fn hello3(raw: &mut TcpStream) {
    raw.write_all(&cmd(&["HELLO", "3"])).await.unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"$7\r\nmodules\r\n*0\r\n") {
        got.extend(read_line(raw).await);
    }
}

/// A connection's `CLIENT ID`.
async fn client_id(raw: &mut TcpStream) -> u64 {
    raw.write_all(&cmd(&["CLIENT", "ID"])).await.unwrap();
    let line = read_line(raw).await;
    std::str::from_utf8(&line[1..line.len() - 2])
        .unwrap()
        .parse()
        .unwrap()
}

/// Reads RESP3 invalidation pushes until each of `keys` was named, and checks that no
/// other key was (changes handled together may share a message).
async fn expect_invalidated(raw: &mut TcpStream, keys: &[&str]) {
    let want: std::collections::BTreeSet<String> = keys.iter().map(|k| k.to_string()).collect();
    let mut got = std::collections::BTreeSet::new();
    while !want.is_subset(&got) {
        assert_eq!(read_line(raw).await, b">2\r\n");
        assert_eq!(read_line(raw).await, b"$10\r\n");
        assert_eq!(read_line(raw).await, b"invalidate\r\n");
        let n = read_line(raw).await;
        assert_eq!(n[0], b'*', "{:?}", String::from_utf8_lossy(&n));
        let n: usize = std::str::from_utf8(&n[1..n.len() - 2])
            .unwrap()
            .parse()
            .unwrap();
        for _ in 0..n {
            read_line(raw).await;
            let k = read_line(raw).await;
            got.insert(String::from_utf8_lossy(&k[..k.len() - 2]).into_owned());
        }
    }
    assert_eq!(got, want, "the keys invalidated");
}

/// Waits until client `id` is gone from `CLIENT LIST`.
async fn gone(s: &TestServer, id: u64) {
    let needle = format!("id={id} ");
    eventually(|| {
        let url = s.url();
        let needle = needle.clone();
        async move {
            let mut c = client_at(&url).await;
            let list: String = q(&mut c, &[b"CLIENT", b"LIST"]).await;
            !list.lines().any(|l| l.starts_with(&needle))
        }
    })
    .await;
}

/// Expects exactly `want` next on `raw` (reading nothing more).
async fn expect(raw: &mut TcpStream, want: &[u8]) {
    exchange(raw, b"", want).await;
}

/// Expects nothing to arrive on `raw` for a moment (a check that cannot fail because the
/// machine is slow: only a message that should not exist fails it).
async fn expect_silence(raw: &mut TcpStream) {
    let mut b = [0u8; 1];
    let got = tokio::time::timeout(Duration::from_millis(300), raw.read(&mut b)).await;
    assert!(
        got.is_err(),
        "unexpected bytes: {:?}",
        got.map(|r| r.map(|_| b[0]))
    );
}

/// A RESP3 connection with tracking on (with `options`).
async fn tracking3(s: &TestServer, options: &[&str]) -> TcpStream {
    let mut raw = s.raw().await;
    hello3(&mut raw).await;
    let mut args = vec!["CLIENT", "TRACKING", "ON"];
    args.extend_from_slice(options);
    exchange(&mut raw, &cmd(&args), b"+OK\r\n").await;
    raw
}

#[tokio::test]
async fn resp3_default_mode_invalidates_what_was_read_once() {
    let s = start_default().await;
    let mut writer = s.client().await;
    let () = q(&mut writer, &[b"SET", b"k", b"v1"]).await;
    let mut t = tracking3(&s, &[]).await;
    exchange(&mut t, &cmd(&["GET", "k"]), b"$2\r\nv1\r\n").await;
    exchange(&mut t, &cmd(&["GET", "sentinel"]), b"_\r\n").await;

    // Another connection writes a key that was read: one invalidation.
    let () = q(&mut writer, &[b"SET", b"k", b"v2"]).await;
    expect(&mut t, &invalidate(&["k"])).await;
    // Written again, not read since: nothing (the sentinel's message comes alone).
    let () = q(&mut writer, &[b"SET", b"k", b"v3"]).await;
    let () = q(&mut writer, &[b"SET", b"unread", b"x"]).await;
    let () = q(&mut writer, &[b"SET", b"sentinel", b"x"]).await;
    expect_invalidated(&mut t, &["sentinel"]).await;

    // Every read-only command with keys counts; a delete and an expiry change are changes.
    exchange(
        &mut t,
        &cmd(&["MGET", "a", "k"]),
        b"*2\r\n_\r\n$2\r\nv3\r\n",
    )
    .await;
    exchange(&mut t, &cmd(&["EXISTS", "b"]), b":0\r\n").await;
    exchange(&mut t, &cmd(&["STRLEN", "c"]), b":0\r\n").await;
    let _: i64 = q(&mut writer, &[b"DEL", b"k"]).await;
    expect(&mut t, &invalidate(&["k"])).await;
    let () = q(&mut writer, &[b"SET", b"a", b"1"]).await;
    expect(&mut t, &invalidate(&["a"])).await;
    let () = q(&mut writer, &[b"MSET", b"b", b"1", b"c", b"1"]).await;
    expect_invalidated(&mut t, &["b", "c"]).await;

    // Its own write invalidates too (without NOLOOP), after the reply.
    exchange(&mut t, &cmd(&["GET", "own"]), b"_\r\n").await;
    let mut want = b"+OK\r\n".to_vec();
    want.extend(invalidate(&["own"]));
    exchange(&mut t, &cmd(&["SET", "own", "1"]), &want).await;

    // A write command does not remember its key; a transaction's reads do.
    exchange(&mut t, &cmd(&["GETSET", "gs", "1"]), b"_\r\n").await;
    exchange(&mut t, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(&mut t, &cmd(&["GET", "txk"]), b"+QUEUED\r\n").await;
    exchange(&mut t, &cmd(&["EXEC"]), b"*1\r\n_\r\n").await;
    let () = q(&mut writer, &[b"SET", b"gs", b"2"]).await;
    let () = q(&mut writer, &[b"SET", b"txk", b"1"]).await;
    expect_invalidated(&mut t, &["txk"]).await;

    // CLIENT LIST and INFO show it.
    let list: String = q(&mut writer, &[b"CLIENT", b"LIST"]).await;
    assert!(
        list.contains(" flags=t ") && list.contains(" redir=0 "),
        "{list}"
    );
    let info: String = q(&mut writer, &[b"INFO", b"clients"]).await;
    assert!(info.contains("tracking_clients:1\r\n"), "{info}");

    // OFF: nothing more.
    exchange(&mut t, &cmd(&["GET", "late"]), b"_\r\n").await;
    exchange(&mut t, &cmd(&["CLIENT", "TRACKING", "OFF"]), b"+OK\r\n").await;
    let () = q(&mut writer, &[b"SET", b"late", b"1"]).await;
    expect_silence(&mut t).await;
    let info: String = q(&mut writer, &[b"INFO", b"clients"]).await;
    assert!(info.contains("tracking_clients:0\r\n"), "{info}");
}

#[tokio::test]
async fn resp2_redirects_to_a_subscribed_connection() {
    let s = start_default().await;
    let mut writer = s.client().await;
    let mut target = s.raw().await;
    let target_id = client_id(&mut target).await;
    exchange(
        &mut target,
        &cmd(&["SUBSCRIBE", "__redis__:invalidate"]),
        b"*3\r\n$9\r\nsubscribe\r\n$20\r\n__redis__:invalidate\r\n:1\r\n",
    )
    .await;
    let mut t = s.raw().await;
    let tid = target_id.to_string();
    exchange(
        &mut t,
        &cmd(&["CLIENT", "TRACKING", "ON", "REDIRECT", &tid]),
        b"+OK\r\n",
    )
    .await;
    exchange(
        &mut t,
        &cmd(&["CLIENT", "GETREDIR"]),
        format!(":{target_id}\r\n").as_bytes(),
    )
    .await;
    exchange(&mut t, &cmd(&["GET", "k"]), b"$-1\r\n").await;
    let () = q(&mut writer, &[b"SET", b"k", b"v"]).await;
    expect(&mut target, &invalidate_message(&["k"])).await;
    let list: String = q(&mut writer, &[b"CLIENT", b"LIST"]).await;
    assert!(
        list.lines()
            .any(|l| l.contains(" flags=t ") && l.contains(&format!(" redir={target_id} "))),
        "{list}"
    );
    // A flush: the null, as the (RESP2) tracking client spells it.
    exchange(&mut t, &cmd(&["FLUSHALL"]), b"+OK\r\n").await;
    expect(
        &mut target,
        b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$-1\r\n",
    )
    .await;

    // The target goes: the next invalidation finds no one, and the client says so.
    drop(target);
    gone(&s, target_id).await;
    exchange(&mut t, &cmd(&["GET", "k"]), b"$-1\r\n").await;
    let () = q(&mut writer, &[b"SET", b"k", b"w"]).await;
    eventually(|| {
        let url = s.url();
        async move {
            let mut c = client_at(&url).await;
            let list: String = q(&mut c, &[b"CLIENT", b"LIST"]).await;
            list.contains(" flags=tR ")
        }
    })
    .await;
    t.write_all(&cmd(&["CLIENT", "TRACKINGINFO"]))
        .await
        .unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"$8\r\nprefixes\r\n*0\r\n") {
        got.extend(read_line(&mut t).await);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("*6\r\n$5\r\nflags\r\n*2\r\n$2\r\non\r\n$15\r\nbroken_redirect\r\n"),
        "{text}"
    );

    // A redirect to nobody, or to two clients, is refused as in Redis.
    let e = err(
        &mut writer,
        &[b"CLIENT", b"TRACKING", b"ON", b"REDIRECT", b"999999"],
    )
    .await;
    assert_eq!(e, "ERR The client ID you want redirect to does not exist");
    let me: i64 = q(&mut writer, &[b"CLIENT", b"ID"]).await;
    let me = me.to_string();
    let e = err(
        &mut writer,
        &[
            b"CLIENT",
            b"TRACKING",
            b"ON",
            b"REDIRECT",
            me.as_bytes(),
            b"REDIRECT",
            me.as_bytes(),
        ],
    )
    .await;
    assert_eq!(e, "ERR A client can only redirect to a single other client");
}

#[tokio::test]
async fn resp3_redirect_and_broken_redirect_pushes() {
    let s = start_default().await;
    let mut writer = s.client().await;
    let mut target = s.raw().await;
    hello3(&mut target).await;
    let target_id = client_id(&mut target).await;
    let tid = target_id.to_string();
    let mut t = tracking3(&s, &["REDIRECT", &tid]).await;
    exchange(&mut t, &cmd(&["GET", "k"]), b"_\r\n").await;
    let () = q(&mut writer, &[b"SET", b"k", b"v"]).await;
    // A RESP3 target gets pushes, subscribed or not.
    expect(&mut target, &invalidate(&["k"])).await;
    drop(target);
    gone(&s, target_id).await;
    exchange(&mut t, &cmd(&["GET", "k"]), b"$1\r\nv\r\n").await;
    let () = q(&mut writer, &[b"SET", b"k", b"w"]).await;
    expect(
        &mut t,
        format!(">2\r\n$21\r\ntracking-redir-broken\r\n:{target_id}\r\n").as_bytes(),
    )
    .await;
}

#[tokio::test]
async fn bcast_tells_about_every_key_under_its_prefixes() {
    let s = start_default().await;
    let mut writer = s.client().await;
    let mut t = tracking3(&s, &["BCAST", "PREFIX", "user:", "PREFIX", "obj:"]).await;
    let () = q(&mut writer, &[b"SET", b"user:1", b"a"]).await;
    expect(&mut t, &invalidate(&["user:1"])).await;
    let () = q(&mut writer, &[b"SET", b"other", b"a"]).await;
    let () = q(&mut writer, &[b"SET", b"obj:9", b"a"]).await;
    expect_invalidated(&mut t, &["obj:9"]).await;
    // Reads are not remembered in BCAST mode: only prefixes count.
    exchange(&mut t, &cmd(&["GET", "other"]), b"$1\r\na\r\n").await;
    let () = q(&mut writer, &[b"SET", b"other", b"b"]).await;
    let () = q(&mut writer, &[b"SET", b"user:2", b"b"]).await;
    expect_invalidated(&mut t, &["user:2"]).await;

    // TRACKINGINFO: flags as a set, the prefixes.
    t.write_all(&cmd(&["CLIENT", "TRACKINGINFO"]))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.iter().filter(|&&c| c == b'\n').count() < 18 {
        got.extend(read_line(&mut t).await);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("%3\r\n$5\r\nflags\r\n~2\r\n$2\r\non\r\n$5\r\nbcast\r\n$8\r\nredirect\r\n:0\r\n$8\r\nprefixes\r\n*2\r\n"),
        "{text}"
    );
    assert!(text.contains("$5\r\nuser:\r\n") && text.contains("$4\r\nobj:\r\n"));
    let list: String = q(&mut writer, &[b"CLIENT", b"LIST"]).await;
    assert!(list.contains(" flags=tB "), "{list}");
    let info: String = q(&mut writer, &[b"INFO", b"stats"]).await;
    assert!(info.contains("tracking_total_prefixes:2\r\n"), "{info}");

    // Redis's rules and errors.
    exchange(
        &mut t,
        &cmd(&["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "u"]),
        b"-ERR Prefix 'u' overlaps with an existing prefix 'user:'. Prefixes for a single client must not overlap.\r\n",
    )
    .await;
    exchange(
        &mut t,
        &cmd(&["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "a", "PREFIX", "ab"]),
        b"-ERR Prefix 'a' overlaps with another provided prefix 'ab'. Prefixes for a single client must not overlap.\r\n",
    )
    .await;
    exchange(
        &mut t,
        &cmd(&["CLIENT", "TRACKING", "ON"]),
        b"-ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.\r\n",
    )
    .await;
    exchange(
        &mut t,
        &cmd(&["CLIENT", "TRACKING", "ON", "BCAST", "OPTIN"]),
        b"-ERR OPTIN and OPTOUT are not compatible with BCAST\r\n",
    )
    .await;
    // One more prefix is added to those it has.
    exchange(
        &mut t,
        &cmd(&["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "x:"]),
        b"+OK\r\n",
    )
    .await;
    let () = q(&mut writer, &[b"SET", b"x:1", b"b"]).await;
    expect(&mut t, &invalidate(&["x:1"])).await;
    let e = err(
        &mut writer,
        &[b"CLIENT", b"TRACKING", b"ON", b"PREFIX", b"a"],
    )
    .await;
    assert_eq!(e, "ERR PREFIX option requires BCAST mode to be enabled");

    // BCAST without a prefix: every key.
    let mut all = tracking3(&s, &["BCAST"]).await;
    let () = q(&mut writer, &[b"SET", b"anything", b"b"]).await;
    expect(&mut all, &invalidate(&["anything"])).await;
}

#[tokio::test]
async fn prefixes_are_bounded() {
    let config = RespConfig::default()
        .with_max_tracking_prefixes_per_client(3)
        .with_max_tracking_prefixes_total(3);
    let s = start(config).await;
    let mut a = s.client().await;
    let e = err(
        &mut a,
        &[
            b"CLIENT",
            b"TRACKING",
            b"ON",
            b"BCAST",
            b"PREFIX",
            b"a",
            b"PREFIX",
            b"b",
            b"PREFIX",
            b"c",
            b"PREFIX",
            b"d",
        ],
    )
    .await;
    assert!(e.contains("max_tracking_prefixes_per_client"), "{e}");
    let () = q(
        &mut a,
        &[
            b"CLIENT",
            b"TRACKING",
            b"ON",
            b"BCAST",
            b"PREFIX",
            b"a",
            b"PREFIX",
            b"b",
        ],
    )
    .await;
    let mut b = s.client().await;
    let () = q(
        &mut b,
        &[b"CLIENT", b"TRACKING", b"ON", b"BCAST", b"PREFIX", b"a"],
    )
    .await;
    let e = err(
        &mut b,
        &[
            b"CLIENT",
            b"TRACKING",
            b"ON",
            b"BCAST",
            b"PREFIX",
            b"c",
            b"PREFIX",
            b"d",
        ],
    )
    .await;
    assert!(e.contains("max_tracking_prefixes_total"), "{e}");
    let long = vec![b'p'; 5000];
    let e = err(
        &mut b,
        &[b"CLIENT", b"TRACKING", b"ON", b"BCAST", b"PREFIX", &long],
    )
    .await;
    assert!(e.contains("longer than the longest key"), "{e}");
}

#[tokio::test]
async fn optin_and_optout_follow_client_caching() {
    let s = start_default().await;
    let mut writer = s.client().await;
    let mut t = tracking3(&s, &["OPTIN"]).await;
    exchange(&mut t, &cmd(&["GET", "a"]), b"_\r\n").await;
    exchange(&mut t, &cmd(&["CLIENT", "CACHING", "yes"]), b"+OK\r\n").await;
    exchange(&mut t, &cmd(&["GET", "b"]), b"_\r\n").await;
    // Only for the next command.
    exchange(&mut t, &cmd(&["GET", "c"]), b"_\r\n").await;
    // And for a whole transaction after it.
    exchange(&mut t, &cmd(&["CLIENT", "CACHING", "yes"]), b"+OK\r\n").await;
    exchange(&mut t, &cmd(&["MULTI"]), b"+OK\r\n").await;
    exchange(&mut t, &cmd(&["GET", "d"]), b"+QUEUED\r\n").await;
    exchange(&mut t, &cmd(&["EXEC"]), b"*1\r\n_\r\n").await;
    for k in ["a", "b", "c", "d"] {
        let () = q(&mut writer, &[b"SET", k.as_bytes(), b"1"]).await;
    }
    // b and d: a and c were never remembered (changes are handled in order).
    expect_invalidated(&mut t, &["b", "d"]).await;

    exchange(
        &mut t,
        &cmd(&["CLIENT", "CACHING", "no"]),
        b"-ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.\r\n",
    )
    .await;
    exchange(
        &mut t,
        &cmd(&["CLIENT", "TRACKING", "ON", "OPTOUT"]),
        b"-ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.\r\n",
    )
    .await;
    exchange(
        &mut t,
        &cmd(&["CLIENT", "TRACKING", "ON", "OPTIN", "OPTOUT"]),
        b"-ERR You can't specify both OPTIN mode and OPTOUT mode\r\n",
    )
    .await;

    let mut o = tracking3(&s, &["OPTOUT"]).await;
    exchange(&mut o, &cmd(&["CLIENT", "CACHING", "no"]), b"+OK\r\n").await;
    exchange(&mut o, &cmd(&["GET", "e"]), b"_\r\n").await;
    exchange(&mut o, &cmd(&["GET", "f"]), b"_\r\n").await;
    let () = q(&mut writer, &[b"SET", b"e", b"1"]).await;
    let () = q(&mut writer, &[b"SET", b"f", b"1"]).await;
    expect_invalidated(&mut o, &["f"]).await;
    exchange(
        &mut o,
        &cmd(&["CLIENT", "CACHING", "yes"]),
        b"-ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.\r\n",
    )
    .await;
    let e = err(&mut writer, &[b"CLIENT", b"CACHING", b"yes"]).await;
    assert_eq!(
        e,
        "ERR CLIENT CACHING can be called only when the client is in tracking mode with \
         OPTIN or OPTOUT mode enabled"
    );
}

#[tokio::test]
async fn noloop_skips_the_clients_own_writes() {
    let s = start_default().await;
    let mut writer = s.client().await;
    let mut t = tracking3(&s, &["NOLOOP"]).await;
    exchange(&mut t, &cmd(&["GET", "k"]), b"_\r\n").await;
    exchange(&mut t, &cmd(&["GET", "sentinel"]), b"_\r\n").await;
    exchange(&mut t, &cmd(&["SET", "k", "mine"]), b"+OK\r\n").await;
    let () = q(&mut writer, &[b"SET", b"sentinel", b"x"]).await;
    expect_invalidated(&mut t, &["sentinel"]).await;
    // Others' writes still invalidate.
    exchange(&mut t, &cmd(&["GET", "k"]), b"$4\r\nmine\r\n").await;
    let () = q(&mut writer, &[b"SET", b"k", b"theirs"]).await;
    expect(&mut t, &invalidate(&["k"])).await;

    // In BCAST mode too.
    let mut b = tracking3(&s, &["BCAST", "NOLOOP", "PREFIX", "p:"]).await;
    exchange(&mut b, &cmd(&["MSET", "p:1", "a", "p:2", "b"]), b"+OK\r\n").await;
    let () = q(&mut writer, &[b"SET", b"p:3", b"x"]).await;
    expect_invalidated(&mut b, &["p:3"]).await;
    let list: String = q(&mut writer, &[b"CLIENT", b"LIST"]).await;
    assert_eq!(list.matches(" flags=t").count(), 2, "{list}");
}

#[tokio::test]
async fn the_table_is_bounded_and_evicts_with_invalidation() {
    let config = RespConfig::default().with_tracking_table_max_keys(2);
    let s = start(config).await;
    let mut other = s.client().await;
    let mut t = tracking3(&s, &[]).await;
    exchange(&mut t, &cmd(&["GET", "k1"]), b"_\r\n").await;
    exchange(&mut t, &cmd(&["GET", "k2"]), b"_\r\n").await;
    // A third key: the oldest is dropped, and its client told.
    let mut want = b"_\r\n".to_vec();
    want.extend(invalidate(&["k1"]));
    exchange(&mut t, &cmd(&["GET", "k3"]), &want).await;
    let info: String = q(&mut other, &[b"INFO", b"stats"]).await;
    assert!(
        info.contains("tracking_total_keys:2\r\n")
            && info.contains("dice_tracking_evictions:1\r\n"),
        "{info}"
    );
    // CONFIG SET lowers it at run time.
    let () = q(
        &mut other,
        &[b"CONFIG", b"SET", b"tracking-table-max-keys", b"1"],
    )
    .await;
    let mut want = b"_\r\n".to_vec();
    want.extend(invalidate(&["k2", "k3"]));
    exchange(&mut t, &cmd(&["GET", "k4"]), &want).await;
    let got: Vec<String> = q(&mut other, &[b"CONFIG", b"GET", b"tracking-table-max-keys"]).await;
    assert_eq!(got, ["tracking-table-max-keys", "1"]);
    // The one key left is still tracked.
    let () = q(&mut other, &[b"SET", b"k4", b"x"]).await;
    expect(&mut t, &invalidate(&["k4"])).await;
}

#[tokio::test]
async fn replicated_writes_expiries_and_flushes_invalidate() {
    let s = start_default().await;
    let peer_dir = tempfile::tempdir().unwrap();
    let peer = dice_core::Cache::open(peer_dir.path()).await.unwrap();
    let mut t = tracking3(&s, &[]).await;
    let mut b = tracking3(&s, &["BCAST", "PREFIX", "r"]).await;
    exchange(&mut t, &cmd(&["GET", "r"]), b"_\r\n").await;

    // A peer's write, applied here as replication does.
    peer.put("r", "remote").await.unwrap();
    let (push, _) = peer.push_after(0).unwrap();
    s.cache.handle_sync(push).unwrap();
    expect(&mut t, &invalidate(&["r"])).await;
    expect(&mut b, &invalidate(&["r"])).await;

    // A key reaching its expiry: nobody writes, the client is told.
    let mut writer = s.client().await;
    let () = q(&mut writer, &[b"SET", b"e", b"v", b"PX", b"300"]).await;
    exchange(&mut t, &cmd(&["GET", "e"]), b"$1\r\nv\r\n").await;
    expect(&mut t, &invalidate(&["e"])).await;
    exchange(&mut t, &cmd(&["GET", "e"]), b"_\r\n").await;
    // A replicated key that expires, in BCAST mode.
    peer.write(
        bytes::Bytes::from_static(b"rx"),
        Some(bytes::Bytes::from_static(b"v")),
        Some(dice_core::now_ms() + 300),
    )
    .await
    .unwrap();
    let (push, _) = peer.push_after(1).unwrap();
    s.cache.handle_sync(push).unwrap();
    expect(&mut b, &invalidate(&["rx"])).await;
    expect(&mut b, &invalidate(&["rx"])).await;

    // FLUSHALL: the null, to every tracking client.
    let () = q(&mut writer, &[b"FLUSHALL"]).await;
    expect(&mut t, b">2\r\n$10\r\ninvalidate\r\n_\r\n").await;
    let mut got = Vec::new();
    while !got.ends_with(b"invalidate\r\n_\r\n") {
        got.extend(read_line(&mut b).await);
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_its_invalidations_is_disconnected() {
    let config = RespConfig::default().with_pubsub_output_limit(4096);
    let s = start(config).await;
    let mut t = tracking3(&s, &["BCAST"]).await;
    // A raw connection: no client-side timeout on these large writes on a busy machine.
    let mut writer = s.raw().await;
    // Keys of 4000 bytes, 100 per MSET: the socket's buffers fill, then the queue.
    for i in 0..200 {
        let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
        for j in 0..100 {
            args.push(format!("{i}-{j}-{}", "k".repeat(3990)).into_bytes());
            args.push(b"v".to_vec());
        }
        let args: Vec<&str> = args
            .iter()
            .map(|a| std::str::from_utf8(a).unwrap())
            .collect();
        exchange(&mut writer, &cmd(&args), b"+OK\r\n").await;
        writer.write_all(&cmd(&["INFO", "stats"])).await.unwrap();
        let header = read_line(&mut writer).await;
        let len: usize = std::str::from_utf8(&header[1..header.len() - 2])
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0; len + 2];
        bounded(writer.read_exact(&mut body)).await.unwrap();
        let info = String::from_utf8_lossy(&body);
        if info.contains("dice_tracking_output_disconnects:1\r\n") {
            // Closed (what it had not read may be lost with the connection).
            read_to_close(&mut t).await;
            return;
        }
    }
    panic!("a client that never reads was not disconnected");
}
