//! Real swarms on 127.0.0.1 with explicit peers, in temp dirs.
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

fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

async fn start(dir: &std::path::Path, peers: &[Multiaddr]) -> Node {
    let mut b = NodeBuilder::new(dir)
        .listen(loopback())
        .mdns(false)
        .catchup_interval(Duration::from_millis(500));
    for p in peers {
        b = b.peer(p.clone());
    }
    b.start().await.unwrap()
}

async fn addr_of(node: &Node) -> Multiaddr {
    let s = node.status().await.unwrap();
    let mut a = s.listen_addrs[0].clone();
    a.push(libp2p::multiaddr::Protocol::P2p(node.peer_id()));
    a
}

async fn eventually<F: std::future::Future<Output = bool>>(
    timeout: Duration,
    mut f: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge() {
    init_tracing();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(dirs[0].path(), &[]).await;
    let a_addr = addr_of(&a).await;
    let b = start(dirs[1].path(), &[a_addr.clone()]).await;
    let c = start(dirs[2].path(), &[a_addr]).await;
    for (i, n) in [&a, &b, &c].iter().enumerate() {
        for k in 0..100 {
            n.put(format!("k{k}"), format!("from{i}-{k}"))
                .await
                .unwrap();
        }
    }
    let nodes = [a.clone(), b.clone(), c.clone()];
    let converged = eventually(Duration::from_secs(20), || {
        let nodes = nodes.clone();
        async move {
            let d: Vec<u64> = nodes.iter().map(|n| n.cache().digest()).collect();
            d[0] == d[1] && d[1] == d[2] && nodes[0].cache().len() == 100
        }
    })
    .await;
    assert!(
        converged,
        "digests: {:?}",
        nodes.iter().map(|n| n.cache().digest()).collect::<Vec<_>>()
    );
    // b and c found each other through a (Kademlia), not only through a.
    let meshed = eventually(Duration::from_secs(20), || {
        let (b, c) = (b.clone(), c.clone());
        async move {
            let sb = b.status().await.unwrap();
            sb.peers
                .iter()
                .any(|p| p.peer_id == c.peer_id() && p.connected)
        }
    })
    .await;
    assert!(
        meshed,
        "b never connected to c: {:?}",
        b.status().await.unwrap().peers
    );
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}
