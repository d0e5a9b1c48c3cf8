//! Writes spread by gossip past `--max-peers`: nodes that are not neighbours of a write's
//! origin get it from the gossip, not from catch-up rounds. Real swarms on 127.0.0.1 with
//! explicit peers (no mDNS), in temp dirs.
//!
//! The periodic catch-up and anti-entropy are set to an hour, so that the only ways a write
//! travels are the origin's direct pushes (to its neighbours) and the gossip (to everyone);
//! a connection that opens still starts a catch-up, so the test checks that gossip itself
//! delivered every write to every node that is not a neighbour of the origin.
#![allow(clippy::unwrap_used)]

mod common;
use common::{addr_of, eventually, loopback};
use dice_net::{Multiaddr, Node, NodeBuilder, PeerId};
use std::time::{Duration, Instant};

const NODES: usize = 10;
const MAX_PEERS: usize = 4;
const WRITES: usize = 200;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

async fn connected(node: &Node) -> Vec<PeerId> {
    let status = node.status().await.unwrap();
    status
        .peers
        .iter()
        .filter(|p| p.connected)
        .map(|p| p.peer_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_nodes_that_are_not_neighbours_of_their_origin_by_gossip() {
    init_tracing();
    let never = Duration::from_secs(3600);
    let dirs: Vec<_> = (0..NODES).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Node> = Vec::new();
    let mut addrs: Vec<Multiaddr> = Vec::new();
    for dir in &dirs {
        // Each node is told of every node started before it, as mDNS would tell it of all.
        let mut b = NodeBuilder::new(dir.path())
            .listen(loopback())
            .mdns(false)
            .max_peers(MAX_PEERS)
            .catchup_interval(never)
            .antientropy_interval(never);
        for a in &addrs {
            b = b.peer(a.clone());
        }
        let node = b.start().await.unwrap();
        addrs.push(addr_of(&node).await);
        nodes.push(node);
    }

    // The last node knows more members than its bound, so it joins the writes' gossip; its
    // neighbours follow it when they see it join, and theirs them: every node joins.
    let all_joined = eventually(Duration::from_secs(60), || async {
        let mut all = true;
        for n in &nodes {
            let s = n.status().await.unwrap();
            all &= s.gossip.joined && s.peers.iter().any(|p| p.connected);
        }
        all
    })
    .await;
    assert!(
        all_joined,
        "every node joined the writes' gossip within 60 s"
    );
    // Gossipsub builds its mesh at its heartbeats (each second).
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The origin: the node with the fewest neighbours, so that the most nodes are not.
    let mut origin = 0;
    let mut fewest = usize::MAX;
    for (i, n) in nodes.iter().enumerate() {
        let c = connected(n).await.len();
        if c < fewest {
            (origin, fewest) = (i, c);
        }
    }
    let before: Vec<u64> = {
        let mut v = Vec::new();
        for n in &nodes {
            v.push(n.status().await.unwrap().gossip.accepted_entries);
        }
        v
    };
    // A burst: the writes are committed together, and leave in a few messages.
    let t0 = Instant::now();
    let writes =
        (0..WRITES).map(|k| nodes[origin].put(format!("k{k:04}"), format!("from {origin}")));
    for w in futures::future::join_all(writes).await {
        w.unwrap();
    }
    tracing::info!(took = ?t0.elapsed(), "writes done");
    let converged = eventually(Duration::from_secs(60), || async {
        nodes
            .iter()
            .all(|n| (0..WRITES).all(|k| n.get(format!("k{k:04}").as_bytes()).is_some()))
    })
    .await;
    let took = t0.elapsed();
    let neighbours = connected(&nodes[origin]).await;
    let strangers: Vec<usize> = (0..NODES)
        .filter(|&i| i != origin && !neighbours.contains(&nodes[i].peer_id()))
        .collect();
    assert!(
        converged,
        "{WRITES} writes of node {origin} on every node within 60 s, with no periodic \
         catch-up (neighbours of the origin: {})",
        neighbours.len()
    );
    assert!(
        strangers.len() >= NODES - 1 - MAX_PEERS,
        "node {origin} has at most {MAX_PEERS} neighbours: {} nodes are not",
        strangers.len()
    );
    let origin_status = nodes[origin].status().await.unwrap();
    assert!(
        origin_status.gossip.published_entries >= WRITES as u64,
        "the origin published its writes: {:?}",
        origin_status.gossip
    );
    for &i in &strangers {
        let s = nodes[i].status().await.unwrap();
        let by_gossip = s.gossip.accepted_entries - before[i];
        assert!(
            by_gossip >= WRITES as u64,
            "node {i}, not a neighbour of node {origin}, applied {by_gossip} of its {WRITES} \
             writes from the gossip ({:?})",
            s.gossip
        );
        assert_eq!(s.gossip.rejected, 0, "no honest message is rejected");
    }
    let digests: Vec<u64> = nodes.iter().map(|n| n.cache().digest()).collect();
    assert!(
        digests.windows(2).all(|w| w[0] == w[1]),
        "converged nodes have equal digests: {digests:?}"
    );
    let mut most = 0;
    for n in &nodes {
        most = most.max(connected(n).await.len());
    }
    assert!(most <= MAX_PEERS, "a node had {most} connected peers");
    tracing::info!(
        ?took,
        origin,
        strangers = strangers.len(),
        "gossip carried the writes past the bound"
    );
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[test]
fn a_node_joins_the_gossip_past_its_bound() {
    assert!(!dice_net::gossip::should_join(4, 4));
    assert!(dice_net::gossip::should_join(5, 4));
}
