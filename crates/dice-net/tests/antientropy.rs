//! Anti-entropy between real nodes on 127.0.0.1: a divergence made behind the sync
//! protocol's back is repaired within seconds and counted; a normal run repairs nothing.
#![allow(clippy::unwrap_used)]

use dice_net::{Multiaddr, Node, NodeBuilder};
use std::time::{Duration, Instant};

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

async fn start(dir: &std::path::Path, peers: &[Multiaddr]) -> Node {
    let mut b = NodeBuilder::new(dir)
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .mdns(false)
        .catchup_interval(Duration::from_millis(500))
        .antientropy_interval(Duration::from_millis(100));
    for p in peers {
        b = b.peer(p.clone());
    }
    b.start().await.unwrap()
}

async fn two_nodes() -> (Vec<tempfile::TempDir>, Node, Node) {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(dirs[0].path(), &[]).await;
    let mut addr = a.status().await.unwrap().listen_addrs[0].clone();
    addr.push(libp2p::multiaddr::Protocol::P2p(a.peer_id()));
    let b = start(dirs[1].path(), &[addr]).await;
    (dirs, a, b)
}

/// Polls `f` until it holds or `timeout` passes.
async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn converged(a: &Node, b: &Node) -> bool {
    let (sa, sb) = (a.cache().stats(), b.cache().stats());
    sa.digest == sb.digest && sa.vv == sb.vv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_divergence_behind_the_protocol_is_repaired_and_counted() {
    init_tracing();
    let (_dirs, a, b) = two_nodes().await;
    for k in 0..300 {
        a.put(format!("k{k:03}"), format!("v{k}")).await.unwrap();
    }
    let synced = eventually(Duration::from_secs(20), || {
        converged(&a, &b) && b.cache().len() == 300
    })
    .await;
    assert!(synced, "never converged");

    // Behind the protocol's back, on B only: one key lost, one reverted to an older write.
    let lost = a.cache().entry(b"k007").unwrap();
    let good = a.cache().entry(b"k123").unwrap();
    let mut older = good.clone();
    older.value = Some("damaged".into());
    older.version.hlc = dice_core::Hlc::from_u64(good.version.hlc.as_u64() - 1);
    b.cache().set_behind_protocol(b"k007", None);
    b.cache().set_behind_protocol(b"k123", Some(&older));
    assert_ne!(a.cache().digest(), b.cache().digest());

    let repaired = eventually(Duration::from_secs(10), || {
        b.cache().entry(b"k007") == Some(lost.clone())
            && b.cache().entry(b"k123") == Some(good.clone())
            && converged(&a, &b)
    })
    .await;
    assert!(repaired, "not repaired: {:?}", b.cache().entry(b"k123"));
    let (ra, rb) = (a.cache().stats().replica, b.cache().stats().replica);
    assert_eq!(
        ra.repaired_entries + rb.repaired_entries,
        2,
        "{ra:?} {rb:?}"
    );
    assert_eq!(rb.repaired_entries, 2, "B took both: {rb:?}");
    assert!(rb.repairs >= 1 && rb.repairs <= 2, "{rb:?}");
    // The node status carries the counters (INFO cluster and `dice status` print them).
    let status = b.status().await.unwrap();
    assert_eq!(status.cache.replica.repaired_entries, 2);
    // The repair was persisted: B holds it after a restart.
    a.shutdown().await.unwrap();
    b.cache().flush().await.unwrap();
    b.shutdown().await.unwrap();
    let cache = dice_core::Cache::open(_dirs[1].path()).await.unwrap();
    assert_eq!(cache.entry(b"k123"), Some(good));
    assert_eq!(cache.entry(b"k007"), Some(lost));
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_run_repairs_nothing() {
    init_tracing();
    let (_dirs, a, b) = two_nodes().await;
    // Writes on both sides, overlapping keys, deletes and short TTLs, while anti-entropy
    // runs every 100 ms.
    for round in 0..20 {
        for k in 0..25 {
            let key = format!("k{:02}", (k * 7 + round) % 40);
            let node = if (k + round) % 2 == 0 { &a } else { &b };
            match k % 5 {
                0 => {
                    node.delete(key).await.unwrap();
                }
                1 => {
                    node.cache()
                        .put_with_ttl(key, "t", Duration::from_millis(300))
                        .await
                        .unwrap();
                }
                _ => {
                    node.put(key, format!("r{round}")).await.unwrap();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(
        eventually(Duration::from_secs(20), || converged(&a, &b)).await,
        "never converged"
    );
    // Let exchanges compare the converged state a few times.
    let compared = eventually(Duration::from_secs(10), || {
        a.cache().stats().replica.ae_compared >= 3 && b.cache().stats().replica.ae_compared >= 3
    })
    .await;
    assert!(compared, "anti-entropy never compared");
    for n in [&a, &b] {
        let r = n.cache().stats().replica;
        assert_eq!(
            (r.repairs, r.repaired_entries, r.repair_conflicts),
            (0, 0, 0),
            "{r:?}"
        );
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
