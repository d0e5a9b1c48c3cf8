//! Pub/sub on one server: the exact bytes of Redis's replies in RESP2 and RESP3, the
//! commands a subscribed RESP2 connection may run, the bounds, and a subscriber that does
//! not read being disconnected.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use dice_resp::RespConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the bytes read end with `end`; returns them.
async fn read_until(stream: &mut TcpStream, end: &[u8]) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 1024];
    while !all.ends_with(end) {
        let n = bounded(stream.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&all));
        all.extend_from_slice(&buf[..n]);
    }
    all
}

#[tokio::test]
async fn resp2_subscribe_publish_and_unsubscribe() {
    let server = start_default().await;
    let mut sub = server.raw().await;
    let mut publ = server.raw().await;
    exchange(
        &mut sub,
        b"SUBSCRIBE a b\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
    )
    .await;
    // Twice the same channel: confirmed, the count unchanged.
    exchange(
        &mut sub,
        b"SUBSCRIBE a\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:2\r\n",
    )
    .await;
    exchange(
        &mut sub,
        b"PSUBSCRIBE n*\r\n",
        b"*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:3\r\n",
    )
    .await;

    exchange(&mut publ, b"PUBLISH a hi\r\n", b":1\r\n").await;
    exchange(
        &mut sub,
        b"",
        b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n",
    )
    .await;
    exchange(&mut publ, b"PUBLISH news x\r\n", b":1\r\n").await;
    exchange(
        &mut sub,
        b"",
        b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$1\r\nx\r\n",
    )
    .await;
    exchange(&mut publ, b"PUBLISH other x\r\n", b":0\r\n").await;
    exchange(
        &mut publ,
        b"PUBSUB NUMSUB a b c\r\n",
        b"*6\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:1\r\n$1\r\nc\r\n:0\r\n",
    )
    .await;
    exchange(&mut publ, b"PUBSUB NUMPAT\r\n", b":1\r\n").await;
    exchange(&mut publ, b"PUBSUB CHANNELS b*\r\n", b"*1\r\n$1\r\nb\r\n").await;
    let mut con = server.client().await;
    let mut channels: Vec<String> = q(&mut con, &[b"PUBSUB", b"CHANNELS"]).await;
    channels.sort();
    assert_eq!(channels, ["a", "b"]);
    let list: String = q(&mut con, &[b"CLIENT", b"LIST", b"TYPE", b"pubsub"]).await;
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(
        list.contains("flags=P") && list.contains(" sub=2 psub=1 "),
        "{list}"
    );
    let normal: String = q(&mut con, &[b"CLIENT", b"LIST", b"TYPE", b"normal"]).await;
    assert_eq!(normal.lines().count(), 2, "{normal}");
    assert!(!normal.contains("flags=P"), "{normal}");

    // Subscribed in RESP2: only (P)(UN)SUBSCRIBE, PING, QUIT, RESET.
    exchange(
        &mut sub,
        b"GET k\r\n",
        b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / \
          RESET are allowed in this context\r\n",
    )
    .await;
    exchange(&mut sub, b"PING\r\n", b"*2\r\n$4\r\npong\r\n$0\r\n\r\n").await;
    exchange(
        &mut sub,
        b"PING hey\r\n",
        b"*2\r\n$4\r\npong\r\n$3\r\nhey\r\n",
    )
    .await;

    exchange(
        &mut sub,
        b"UNSUBSCRIBE a\r\n",
        b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:2\r\n",
    )
    .await;
    exchange(&mut publ, b"PUBLISH a gone\r\n", b":0\r\n").await;
    exchange(
        &mut sub,
        b"UNSUBSCRIBE\r\n",
        b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n",
    )
    .await;
    // No channel left: one reply with a null channel and the count (the pattern).
    exchange(
        &mut sub,
        b"UNSUBSCRIBE\r\n",
        b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:1\r\n",
    )
    .await;
    exchange(
        &mut sub,
        b"PUNSUBSCRIBE\r\n",
        b"*3\r\n$12\r\npunsubscribe\r\n$2\r\nn*\r\n:0\r\n",
    )
    .await;
    // Out of subscribed mode: commands run again.
    exchange(&mut sub, b"GET k\r\n", b"$-1\r\n").await;
    exchange(&mut publ, b"PUBLISH news y\r\n", b":0\r\n").await;
    exchange(&mut publ, b"PUBSUB NUMPAT\r\n", b":0\r\n").await;

    // RESET leaves subscribed mode too.
    exchange(
        &mut sub,
        b"SUBSCRIBE c\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n",
    )
    .await;
    exchange(&mut sub, b"RESET\r\n", b"+RESET\r\n").await;
    exchange(&mut sub, b"GET k\r\n", b"$-1\r\n").await;
    exchange(&mut publ, b"PUBLISH c z\r\n", b":0\r\n").await;
    // A name given twice is confirmed twice and counted once.
    exchange(
        &mut sub,
        b"SUBSCRIBE x x y\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n:1\r\n\
          *3\r\n$9\r\nsubscribe\r\n$1\r\ny\r\n:2\r\n",
    )
    .await;
}

#[tokio::test]
async fn resp3_pushes_and_other_commands_allowed() {
    let server = start_default().await;
    let mut sub = server.raw().await;
    let mut publ = server.raw().await;
    sub.write_all(b"HELLO 3\r\n").await.unwrap();
    read_until(&mut sub, b"$7\r\nmodules\r\n*0\r\n").await;
    exchange(
        &mut sub,
        b"SUBSCRIBE a\r\n",
        b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n",
    )
    .await;
    exchange(
        &mut sub,
        b"PSUBSCRIBE a?\r\n",
        b">3\r\n$10\r\npsubscribe\r\n$2\r\na?\r\n:2\r\n",
    )
    .await;
    // Any command runs on a subscribed RESP3 connection.
    exchange(&mut sub, b"GET k\r\n", b"_\r\n").await;
    exchange(&mut sub, b"PING\r\n", b"+PONG\r\n").await;
    exchange(&mut publ, b"PUBLISH a hi\r\n", b":1\r\n").await;
    exchange(
        &mut sub,
        b"",
        b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n",
    )
    .await;
    exchange(&mut publ, b"PUBLISH ab yo\r\n", b":1\r\n").await;
    exchange(
        &mut sub,
        b"",
        b">4\r\n$8\r\npmessage\r\n$2\r\na?\r\n$2\r\nab\r\n$2\r\nyo\r\n",
    )
    .await;
    exchange(
        &mut sub,
        b"UNSUBSCRIBE a\r\n",
        b">3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n",
    )
    .await;
    exchange(
        &mut sub,
        b"UNSUBSCRIBE\r\n",
        b">3\r\n$11\r\nunsubscribe\r\n_\r\n:1\r\n",
    )
    .await;

    // And through a client library: redis-rs reads RESP2 messages too.
    let mut con = server.client().await;
    let n: i64 = q(&mut con, &[b"PUBLISH", b"ab", b"again"]).await;
    assert_eq!(n, 1, "the pattern still matches");
}

#[tokio::test]
async fn bounds_and_transactions() {
    let server = start(
        RespConfig::default()
            .with_max_subscriptions_per_client(3)
            .with_max_channel_len(8),
    )
    .await;
    let mut con = server.client().await;
    let mut sub = server.raw().await;
    // Too many at once: refused whole, nothing subscribed.
    exchange(
        &mut sub,
        b"SUBSCRIBE a b c d\r\n",
        b"-ERR this client would pass 3 subscriptions (max_subscriptions_per_client)\r\n",
    )
    .await;
    let numsub: Vec<redis::Value> = q(&mut con, &[b"PUBSUB", b"NUMSUB", b"a"]).await;
    assert_eq!(numsub[1], redis::Value::Int(0));
    exchange(
        &mut sub,
        b"SUBSCRIBE a b\r\nPSUBSCRIBE c*\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n\
          *3\r\n$10\r\npsubscribe\r\n$2\r\nc*\r\n:3\r\n",
    )
    .await;
    exchange(
        &mut sub,
        b"SUBSCRIBE d\r\n",
        b"-ERR this client would pass 3 subscriptions (max_subscriptions_per_client)\r\n",
    )
    .await;
    let e = err(&mut con, &[b"SUBSCRIBE", b"012345678"]).await;
    assert!(e.contains("longer than 8 bytes (max_channel_len)"), "{e}");
    let e = err(&mut con, &[b"PUBLISH", b"012345678", b"m"]).await;
    assert!(e.contains("longer than 8 bytes"), "{e}");
    // The message itself is bounded like any argument, not by the channel bound.
    let n: i64 = q(&mut con, &[b"PUBLISH", b"a", b"a message longer than 8"]).await;
    assert_eq!(n, 1);

    // SUBSCRIBE is refused in MULTI; PUBLISH is queued and runs in EXEC.
    let mut tx = server.raw().await;
    exchange(&mut tx, b"MULTI\r\n", b"+OK\r\n").await;
    exchange(
        &mut tx,
        b"SUBSCRIBE x\r\n",
        b"-ERR Command not allowed inside a transaction\r\n",
    )
    .await;
    exchange(&mut tx, b"DISCARD\r\n", b"+OK\r\n").await;
    // RESET runs at once in MULTI (as in Redis) and ends the transaction.
    exchange(&mut tx, b"MULTI\r\nGET a\r\n", b"+OK\r\n+QUEUED\r\n").await;
    exchange(&mut tx, b"RESET\r\nGET a\r\n", b"+RESET\r\n$-1\r\n").await;
    exchange(
        &mut tx,
        b"MULTI\r\nPUBLISH b in-tx\r\nEXEC\r\n",
        b"+OK\r\n+QUEUED\r\n*1\r\n:1\r\n",
    )
    .await;
    let mut got = Vec::new();
    let want: &[u8] = b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$23\r\na message longer than 8\r\n\
                        *3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$5\r\nin-tx\r\n";
    got.resize(want.len(), 0);
    bounded(sub.read_exact(&mut got)).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));

    // A connection that closes gives its subscriptions back.
    drop(sub);
    eventually(|| {
        let mut con = con.clone();
        async move {
            let n: i64 = q(&mut con, &[b"PUBSUB", b"NUMPAT"]).await;
            n == 0
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_is_disconnected() {
    const LIMIT: usize = 256 * 1024;
    const PAYLOAD: usize = 64 * 1024;
    let server = start(RespConfig::default().with_pubsub_output_limit(LIMIT)).await;
    let mut slow = server.raw().await;
    exchange(
        &mut slow,
        b"SUBSCRIBE big\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$3\r\nbig\r\n:1\r\n",
    )
    .await;
    // A subscriber that reads everything, all along.
    let mut fast = server.raw().await;
    exchange(
        &mut fast,
        b"SUBSCRIBE big\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$3\r\nbig\r\n:1\r\n",
    )
    .await;
    let (target_tx, mut target_rx) = tokio::sync::watch::channel(usize::MAX);
    // What the fast subscriber has read so far: the publisher waits for it after each
    // message, so that it is never more than one message behind whatever the machine's load
    // (under CI's load a reader task starved for a while was dropped as slow).
    let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = tokio::spawn({
        let read = read.clone();
        async move {
            let mut total = 0usize;
            let mut buf = vec![0u8; 64 * 1024];
            while total < *target_rx.borrow_and_update() {
                tokio::select! {
                    n = fast.read(&mut buf) => {
                        let n = n.unwrap();
                        assert!(n > 0, "the fast subscriber was disconnected");
                        total += n;
                        read.store(total, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ = target_rx.changed() => {}
                }
            }
            (total, fast)
        }
    });
    let frame = format!("*3\r\n$7\r\nmessage\r\n$3\r\nbig\r\n${PAYLOAD}\r\n").len() + PAYLOAD + 2;

    let mut con = server.client().await;
    let payload = vec![b'x'; PAYLOAD];
    let mut published = 0usize;
    let mut dropped_at = None;
    // Loopback socket buffers take a few MiB before the queue grows: 256 MiB is far past.
    for i in 0..4096 {
        let n: i64 = bounded(
            redis::cmd("PUBLISH")
                .arg("big")
                .arg(&payload[..])
                .query_async(&mut con),
        )
        .await
        .unwrap();
        published += 1;
        if n == 1 {
            dropped_at = Some(i);
            break;
        }
        assert_eq!(n, 2);
        let caught_up = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while read.load(std::sync::atomic::Ordering::Relaxed) < published * frame {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(caught_up.is_ok(), "the fast subscriber stopped receiving");
    }
    let dropped_at = dropped_at.expect("the slow subscriber was dropped");
    assert!(dropped_at > 0, "not before its buffers filled");
    // The fast one received every message, in full.
    target_tx.send(published * frame).unwrap();
    let (total, _fast) = bounded(reader).await.unwrap();
    assert_eq!(total, published * frame);

    // The slow one is closed: what it reads ends (after what its buffers held).
    let rest = read_to_close(&mut slow).await;
    assert!(
        rest.len() < published * frame,
        "it did not receive everything"
    );
    eventually(|| {
        let mut con = con.clone();
        async move {
            let numsub: Vec<redis::Value> = q(&mut con, &[b"PUBSUB", b"NUMSUB", b"big"]).await;
            numsub[1] == redis::Value::Int(1)
        }
    })
    .await;
    let info: String = q(&mut con, &[b"INFO", b"stats"]).await;
    assert!(
        info.contains("dice_pubsub_output_disconnects:1\r\n"),
        "{info}"
    );
}

#[tokio::test]
async fn keyspace_notifications_for_local_and_replicated_changes() {
    let server = start_default().await;
    let mut con = server.client().await;
    let shown: Vec<String> = q(&mut con, &[b"CONFIG", b"GET", b"notify-keyspace-events"]).await;
    assert_eq!(shown, ["notify-keyspace-events", ""]);
    let mut sub = server.raw().await;
    exchange(
        &mut sub,
        b"SUBSCRIBE __keyspace@0__:k __keyevent@0__:del\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$16\r\n__keyspace@0__:k\r\n:1\r\n\
          *3\r\n$9\r\nsubscribe\r\n$18\r\n__keyevent@0__:del\r\n:2\r\n",
    )
    .await;
    // Off by default: nothing fires.
    let () = q(&mut con, &[b"SET", b"k", b"quiet"]).await;

    let e = err(
        &mut con,
        &[b"CONFIG", b"SET", b"notify-keyspace-events", b"KQ"],
    )
    .await;
    assert!(e.contains("Invalid event class character"), "{e}");
    let () = q(
        &mut con,
        &[b"CONFIG", b"SET", b"notify-keyspace-events", b"KEA"],
    )
    .await;
    let shown: Vec<String> = q(&mut con, &[b"CONFIG", b"GET", b"notify-keyspace-events"]).await;
    assert_eq!(shown, ["notify-keyspace-events", "AKE"]);
    let () = q(&mut con, &[b"SET", b"k", b"v"]).await;
    let _: i64 = q(&mut con, &[b"DEL", b"k"]).await;
    exchange(
        &mut sub,
        b"",
        b"*3\r\n$7\r\nmessage\r\n$16\r\n__keyspace@0__:k\r\n$3\r\nset\r\n\
          *3\r\n$7\r\nmessage\r\n$16\r\n__keyspace@0__:k\r\n$3\r\ndel\r\n\
          *3\r\n$7\r\nmessage\r\n$18\r\n__keyevent@0__:del\r\n$1\r\nk\r\n",
    )
    .await;

    // A change replicated from a peer fires too.
    let peer_dir = tempfile::tempdir().unwrap();
    let peer = dice_core::Cache::open(peer_dir.path()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    peer.put("k", "remote").await.unwrap();
    let (push, _) = peer.push_after(0).unwrap();
    server.cache.handle_sync(push).unwrap();
    exchange(
        &mut sub,
        b"",
        b"*3\r\n$7\r\nmessage\r\n$16\r\n__keyspace@0__:k\r\n$3\r\nset\r\n",
    )
    .await;

    // Off again: a write fires nothing; the next message is the PUBLISH after it.
    let () = q(
        &mut con,
        &[b"CONFIG", b"SET", b"notify-keyspace-events", b""],
    )
    .await;
    let () = q(&mut con, &[b"SET", b"k", b"quiet"]).await;
    let n: i64 = q(&mut con, &[b"PUBLISH", b"__keyspace@0__:k", b"marker"]).await;
    assert_eq!(n, 1);
    exchange(
        &mut sub,
        b"",
        b"*3\r\n$7\r\nmessage\r\n$16\r\n__keyspace@0__:k\r\n$6\r\nmarker\r\n",
    )
    .await;
}

/// Records what the server hands to the bus.
struct Recorder(std::sync::Mutex<Vec<(Vec<u8>, Vec<u8>)>>);

impl dice_resp::PubSubBus for Recorder {
    fn publish(&self, channel: &[u8], message: &[u8]) {
        self.0
            .lock()
            .unwrap()
            .push((channel.to_vec(), message.to_vec()));
    }
}

#[tokio::test]
async fn publish_goes_to_the_bus_and_remote_messages_do_not_return_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dice_core::Cache::open(dir.path()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bus = std::sync::Arc::new(Recorder(Default::default()));
    let server = dice_resp::RespServer::new(listener, cache, RespConfig::default())
        .with_pubsub_bus(bus.clone());
    let remote = server.pubsub();
    let handle = server.spawn().unwrap();
    let mut sub = TcpStream::connect(handle.local_addr()).await.unwrap();
    let mut publ = TcpStream::connect(handle.local_addr()).await.unwrap();
    exchange(
        &mut sub,
        b"SUBSCRIBE ch\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n",
    )
    .await;
    // No subscriber of its own is needed for a message to go to the other nodes.
    exchange(&mut publ, b"PUBLISH elsewhere x\r\n", b":0\r\n").await;
    exchange(&mut publ, b"PUBLISH ch local\r\n", b":1\r\n").await;
    exchange(
        &mut sub,
        b"",
        b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nlocal\r\n",
    )
    .await;
    // A message from another node reaches the subscriber, and is not sent back out.
    assert_eq!(remote.deliver(b"ch", b"remote"), 1);
    assert_eq!(remote.deliver(b"nobody", b"remote"), 0);
    exchange(
        &mut sub,
        b"",
        b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$6\r\nremote\r\n",
    )
    .await;
    let sent = bus.0.lock().unwrap().clone();
    assert_eq!(
        sent,
        [
            (b"elsewhere".to_vec(), b"x".to_vec()),
            (b"ch".to_vec(), b"local".to_vec())
        ]
    );
    let mut con = client_at(&format!("redis://{}/", handle.local_addr())).await;
    let info: String = q(&mut con, &[b"INFO", b"stats"]).await;
    assert!(info.contains("dice_pubsub_remote_received:2\r\n"), "{info}");
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn subscriptions_of_all_clients_are_bounded_together() {
    let server = start(RespConfig::default().with_max_subscriptions_total(2)).await;
    let (mut one, mut two) = (server.raw().await, server.raw().await);
    exchange(
        &mut one,
        b"PSUBSCRIBE a*\r\nSUBSCRIBE b\r\n",
        b"*3\r\n$10\r\npsubscribe\r\n$2\r\na*\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
    )
    .await;
    exchange(
        &mut two,
        b"SUBSCRIBE c\r\n",
        b"-ERR the server's clients would pass 2 subscriptions together \
          (max_subscriptions_total)\r\n",
    )
    .await;
    let mut con = server.client().await;
    let info: String = q(&mut con, &[b"INFO", b"stats"]).await;
    assert!(info.contains("dice_pubsub_subscriptions:2\r\n"), "{info}");
    // Room again once the first gives one back.
    exchange(
        &mut one,
        b"UNSUBSCRIBE b\r\n",
        b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n",
    )
    .await;
    exchange(
        &mut two,
        b"SUBSCRIBE c\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n",
    )
    .await;
}

#[tokio::test]
async fn subscribed_clients_are_not_closed_as_idle() {
    let server =
        start(RespConfig::default().with_timeout(std::time::Duration::from_millis(300))).await;
    let mut sub = server.raw().await;
    let mut idle = server.raw().await;
    exchange(
        &mut sub,
        b"SUBSCRIBE ch\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n",
    )
    .await;
    // The idle client is closed; the subscriber, as quiet, is not.
    assert!(read_to_close(&mut idle).await.is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let mut publ = server.raw().await;
    exchange(&mut publ, b"PUBLISH ch still-here\r\n", b":1\r\n").await;
    exchange(
        &mut sub,
        b"",
        b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$10\r\nstill-here\r\n",
    )
    .await;
}
