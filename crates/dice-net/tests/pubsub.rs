//! Cluster-wide pub/sub: two real swarms on 127.0.0.1; a message published on one reaches
//! the other, and neither hears its own.
#![allow(clippy::unwrap_used)]

use dice_net::pubsub::{Incoming, PubSubMessage};
use dice_net::{Multiaddr, Node, NodeBuilder};
use std::time::Duration;

async fn start(dir: &std::path::Path, peers: &[Multiaddr]) -> Node {
    let mut b = NodeBuilder::new(dir)
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .mdns(false)
        .catchup_interval(Duration::from_millis(500));
    for p in peers {
        b = b.peer(p.clone());
    }
    b.start().await.unwrap()
}

/// Publishes `tag` from `from` every 100 ms until `to` receives a message (gossipsub sends
/// only once it knows the peer joined the topic), for at most 20 s.
async fn until_received(from: &Node, to: &mut Incoming, tag: &str) -> PubSubMessage {
    let wait = async {
        let mut i = 0;
        loop {
            let payload = format!("{tag}-{i}");
            from.pubsub().publish(b"news", payload.as_bytes());
            i += 1;
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), to.recv()).await {
                return m;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .expect("the message crossed within 20 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_on_one_node_reaches_the_other() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(da.path(), &[]).await;
    let mut a_addr = a.status().await.unwrap().listen_addrs[0].clone();
    a_addr.push(libp2p::multiaddr::Protocol::P2p(a.peer_id()));
    let b = start(db.path(), &[a_addr]).await;
    let mut a_in = a.pubsub().take_incoming().unwrap();
    let mut b_in = b.pubsub().take_incoming().unwrap();
    assert!(a.pubsub().take_incoming().is_none(), "taken once");

    let m = until_received(&a, &mut b_in, "from-a").await;
    assert_eq!(&m.channel[..], b"news");
    assert!(m.payload.starts_with(b"from-a-"), "{m:?}");
    let m = until_received(&b, &mut a_in, "from-b").await;
    assert!(m.payload.starts_with(b"from-b-"), "{m:?}");
    // Neither node hears its own messages back (its subscribers got them locally already).
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), a_in.recv()).await {
        assert!(m.payload.starts_with(b"from-b-"), "A heard its own {m:?}");
    }
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), b_in.recv()).await {
        assert!(m.payload.starts_with(b"from-a-"), "B heard its own {m:?}");
    }
    // Too large for the cluster: refused at once, counted.
    let dropped = || {
        a.pubsub()
            .counters()
            .send_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = dropped();
    let max = a.pubsub().max_message();
    assert!(!a.pubsub().publish(b"news", &vec![0u8; max + 1]));
    assert_eq!(dropped(), before + 1);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
