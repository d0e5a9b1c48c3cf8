//! `--max-peers`: a node keeps a bounded number of connections and still converges through
//! its neighbours. Real swarms on 127.0.0.1 with explicit peers (no mDNS), in temp dirs.
#![allow(clippy::unwrap_used)]

mod common;
use common::addr_of;
use dice_net::{Multiaddr, Node, NodeBuilder};
use std::time::{Duration, Instant};

const NODES: usize = 8;
const MAX_PEERS: usize = 4;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

async fn connected(node: &Node) -> Vec<dice_net::PeerId> {
    let status = node.status().await.unwrap();
    status
        .peers
        .iter()
        .filter(|p| p.connected)
        .map(|p| p.peer_id)
        .collect()
}

/// The most connected peers any node has now.
async fn most_connected(nodes: &[Node]) -> usize {
    let mut most = 0;
    for n in nodes {
        most = most.max(connected(n).await.len());
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_larger_than_max_peers_converges_through_neighbours() {
    init_tracing();
    let dirs: Vec<_> = (0..NODES).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Node> = Vec::new();
    let mut addrs: Vec<Multiaddr> = Vec::new();
    for dir in &dirs {
        // Each node is told of every node started before it, as mDNS would tell it of all:
        // the bound, not the lack of addresses, is what keeps it from a full mesh.
        let mut b = NodeBuilder::new(dir.path())
            .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .mdns(false)
            .max_peers(MAX_PEERS)
            .catchup_interval(Duration::from_millis(300));
        for a in &addrs {
            b = b.peer(a.clone());
        }
        let node = b.start().await.unwrap();
        addrs.push(addr_of(&node).await);
        nodes.push(node);
    }

    // Every node finds neighbours, and none ever holds more than its bound.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut most = 0;
    loop {
        most = most.max(most_connected(&nodes).await);
        let mut all_have_one = true;
        for n in &nodes {
            all_have_one &= !connected(n).await.is_empty();
        }
        if all_have_one || Instant::now() > deadline {
            assert!(all_have_one, "a node found no neighbour in 30 s");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One write on every node, one more on node 0 after the others.
    for (i, n) in nodes.iter().enumerate() {
        n.put(format!("k{i}"), format!("from {i}")).await.unwrap();
    }
    nodes[0].put("last", "from 0").await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let converged = loop {
        most = most.max(most_connected(&nodes).await);
        let mut done = true;
        for n in &nodes {
            for i in 0..NODES {
                done &= n.get(format!("k{i}").as_bytes()).is_some();
            }
            done &= n.get(b"last").is_some();
        }
        if done {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let digests: Vec<u64> = nodes.iter().map(|n| n.cache().digest()).collect();
    let degrees: Vec<usize> = {
        let mut d = Vec::new();
        for n in &nodes {
            d.push(connected(n).await.len());
        }
        d
    };
    assert!(
        converged,
        "every write on every node within 60 s (connected peers per node: {degrees:?})"
    );
    assert!(
        digests.windows(2).all(|w| w[0] == w[1]),
        "converged nodes have equal digests: {digests:?}"
    );
    assert!(
        most <= MAX_PEERS,
        "a node had {most} connected peers, over --max-peers {MAX_PEERS}"
    );
    // With at most 4 of 7 possible neighbours, the writes of node 0 reached at least 3
    // nodes it is not connected to: only through its neighbours.
    let zero = connected(&nodes[0]).await;
    let strangers_of_zero = nodes[1..]
        .iter()
        .filter(|n| !zero.contains(&n.peer_id()))
        .count();
    assert!(
        strangers_of_zero >= NODES - 1 - MAX_PEERS,
        "node 0 reached only through neighbours: {strangers_of_zero} nodes"
    );
    let closed: u64 = {
        let mut c = 0;
        for n in &nodes {
            c += n.status().await.unwrap().closed_over_max_peers;
        }
        c
    };
    tracing::info!(closed, ?degrees, "max-peers cluster converged");
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[test]
fn a_node_dials_three_quarters_of_its_bound() {
    assert_eq!(dice_net::dial_target(32), 24);
    assert_eq!(dice_net::dial_target(4), 3);
    assert_eq!(dice_net::dial_target(1), 1);
    assert!(dice_net::dial_target(dice_net::DEFAULT_MAX_PEERS) < dice_net::DEFAULT_MAX_PEERS);
}
