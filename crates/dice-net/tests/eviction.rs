//! Eviction across a cluster on loopback: three nodes with a memory limit under a write flood
//! of ten times it, cut by a partition in the middle, end with equal digests, the same keys
//! and bounded memory; the followers of a flood on one node leave the eviction to it; a node
//! offline while the others evicted rejoins without bringing the evicted keys back.
#![allow(clippy::unwrap_used)]

mod common;
use bytes::Bytes;
use common::{addr_of, eventually, loopback};
use dice_core::{MemoryLimit, Policy};
use dice_net::{Multiaddr, Node, NodeBuilder};
use std::time::Duration;

const LIMIT: u64 = 4 << 20;

/// The tests run one after the other: each floods three nodes on 2 worker threads, and
/// together on a loaded machine their nodes fell far behind their own writes.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start(dir: &std::path::Path, peers: &[Multiaddr]) -> Node {
    let mut b = NodeBuilder::new(dir)
        .listen(loopback())
        .mdns(false)
        .catchup_interval(Duration::from_millis(500));
    {
        let c = &mut b.config_mut().cache;
        c.memory_limit = MemoryLimit::default()
            .with_max_bytes(LIMIT)
            .with_policy(Policy::AllKeysLru)
            .with_samples(5);
        c.gc_interval = Duration::from_millis(500);
        c.gc_grace = Duration::from_secs(1);
    }
    for p in peers {
        b = b.peer(p.clone());
    }
    b.start().await.unwrap()
}

/// Three nodes, B and C given A's address.
async fn start_three(dirs: &[tempfile::TempDir]) -> [Node; 3] {
    let a = start(dirs[0].path(), &[]).await;
    let a_addr = addr_of(&a).await;
    let b = start(dirs[1].path(), std::slice::from_ref(&a_addr)).await;
    let c = start(dirs[2].path(), std::slice::from_ref(&a_addr)).await;
    [a, b, c]
}

/// Waits (bounded) until each node is connected to both others.
async fn wait_connected(all: &[Node; 3]) {
    assert!(
        eventually(Duration::from_secs(20), || async {
            let mut ok = true;
            for n in all {
                ok &= n
                    .status()
                    .await
                    .unwrap()
                    .peers
                    .iter()
                    .filter(|p| p.connected)
                    .count()
                    == 2;
            }
            ok
        })
        .await,
        "the three nodes never connected"
    );
}

/// Waits (bounded) until every node's used memory is back under the limit; returns how many
/// keys each evicted.
async fn within_limit(all: &[Node; 3]) -> Vec<u64> {
    assert!(
        eventually(Duration::from_secs(30), || async {
            all.iter().all(|n| used(n) <= LIMIT)
        })
        .await,
        "used memory {:?} past {LIMIT}",
        all.iter().map(used).collect::<Vec<_>>()
    );
    all.iter()
        .map(|n| n.cache().stats().replica.evicted_keys)
        .collect()
}

fn key(node: usize, i: usize) -> Bytes {
    Bytes::from(format!("n{node}:{i:06}"))
}

/// The same live keys and values, and equal digests.
fn converged(nodes: &[Node]) -> bool {
    let digests: Vec<u64> = nodes.iter().map(|n| n.cache().digest()).collect();
    let lens: Vec<usize> = nodes.iter().map(|n| n.cache().len()).collect();
    digests.windows(2).all(|w| w[0] == w[1]) && lens.windows(2).all(|w| w[0] == w[1])
}

fn live_keys(node: &Node) -> Vec<(Bytes, Bytes)> {
    node.cache().scan_prefix(b"")
}

/// Writes `n` keys of 1 KiB on `node`, pipelined; a write refused for memory is retried
/// once the node has collected (it happens while dead entries wait for stability).
async fn flood(node: &Node, id: usize, range: std::ops::Range<usize>) -> usize {
    let value = Bytes::from(vec![b'x'; 1000]);
    let mut refused = 0;
    let mut last = None;
    for i in range {
        match node
            .cache()
            .write_unacked(key(id, i), Some(value.clone()), None)
            .await
        {
            Ok((_, g)) => last = Some(g),
            Err(dice_core::Error::OutOfMemory) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    if let Some(g) = last {
        node.cache().wait_committed(g).await.unwrap();
    }
    refused
}

fn used(node: &Node) -> u64 {
    node.cache().memory_usage().total() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_under_a_flood_and_a_partition_converge_within_the_limit() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [a, b, c] = start_three(&dirs).await;
    let all = [a.clone(), b.clone(), c.clone()];
    wait_connected(&all).await;
    // 40 MB of writes in all: ten times the limit of one node, a third from each node.
    let per_phase = 4_500;
    let mut max_used = 0;
    let mut refused = 0;
    for (n, node) in all.iter().enumerate() {
        refused += flood(node, n, 0..per_phase).await;
        max_used = max_used.max(all.iter().map(used).max().unwrap());
    }
    // A is cut off from B and C; both sides go on writing and evicting.
    for other in [&b, &c] {
        a.block(other.peer_id()).await.unwrap();
        other.block(a.peer_id()).await.unwrap();
    }
    for (n, node) in all.iter().enumerate() {
        refused += flood(node, n, per_phase..2 * per_phase).await;
        max_used = max_used.max(all.iter().map(used).max().unwrap());
    }
    for other in [&b, &c] {
        a.unblock(other.peer_id()).await.unwrap();
        other.unblock(a.peer_id()).await.unwrap();
    }
    for (n, node) in all.iter().enumerate() {
        refused += flood(node, n, 2 * per_phase..3 * per_phase).await;
        max_used = max_used.max(all.iter().map(used).max().unwrap());
    }
    // Writes stop: every node ends with the same keys and values, within the limit.
    assert!(
        eventually(Duration::from_secs(60), || async { converged(&all) }).await,
        "no convergence: digests {:?}, keys {:?}",
        all.iter().map(|n| n.cache().digest()).collect::<Vec<_>>(),
        all.iter().map(|n| n.cache().len()).collect::<Vec<_>>(),
    );
    assert!(
        eventually(Duration::from_secs(60), || async {
            let keys = live_keys(&a);
            converged(&all) && keys == live_keys(&b) && keys == live_keys(&c)
        })
        .await,
        "the nodes hold different keys"
    );
    let keys = live_keys(&a);
    eprintln!("flood: {} keys left", keys.len());
    // About 3,400 keys fit in the limit; eviction leaves live keys at least half of it on
    // each node, and the cluster ends with the union of the evictions (seen: 850 to 1,950 left
    // while followers evicted for the writer, 3,150 to 3,178 since they leave it to the
    // writer; 0 when followers evicted every key that arrived).
    assert!(
        keys.len() >= 300,
        "{} keys left: the flood emptied the cache",
        keys.len()
    );
    // Once the evictions' tombstones are collected, memory is back under the limit.
    let evicted = within_limit(&all).await;
    eprintln!(
        "flood: {} keys left of {}, evicted per node {evicted:?}, most used seen {max_used} \
         (limit {LIMIT}), writes refused {refused}",
        keys.len(),
        9 * per_phase
    );
    assert!(evicted.iter().all(|&e| e > 0));
    // Seen between phases: pending pages from peers, the undo records of changes not durable
    // yet (an evicted key's record stays there until its eviction is committed: 2.03 to 2.09
    // times the limit once they were counted) and, during the partition, tombstones that
    // cannot be collected yet (live keys make room down to half the limit, then writes are
    // refused). Bounded, not exact: BENCHMARKS.md measures RSS against the limit.
    assert!(max_used <= LIMIT * 3, "most used seen {max_used}");
    for n in all {
        n.shutdown().await.unwrap();
    }
}

/// A flood on one node of three: the followers leave the eviction to the writer (its
/// evictions come with its writes), so they evict next to nothing themselves, hold no pile of
/// tombstones, and all end with the same keys within the limit. At 256 MB on real nodes the
/// followers evicted a quarter of the keys or more, and one held 1.9 million tombstones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_followers_of_a_flood_leave_the_eviction_to_its_writer() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [a, b, c] = start_three(&dirs).await;
    let all = [a.clone(), b.clone(), c.clone()];
    wait_connected(&all).await;
    // Five times the limit, on node A alone.
    let refused = flood(&a, 0, 0..20_000).await;
    assert!(
        eventually(Duration::from_secs(60), || async { converged(&all) }).await,
        "no convergence: keys {:?}",
        all.iter().map(|n| n.cache().len()).collect::<Vec<_>>(),
    );
    let evicted = within_limit(&all).await;
    eprintln!(
        "one writer: {} keys left, evicted per node {evicted:?}, writes refused {refused}",
        a.cache().len()
    );
    assert!(evicted[0] > 10_000, "the writer evicted {}", evicted[0]);
    for (n, &e) in evicted.iter().enumerate().skip(1) {
        assert!(
            e * 50 <= evicted[0],
            "follower {n} evicted {e} keys itself, the writer {}",
            evicted[0]
        );
    }
    for n in all {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_offline_while_the_others_evicted_brings_nothing_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [a, b, c] = start_three(&dirs).await;
    // 1 MB that every node holds: with its pending commits and pushes counted as well, it fits
    // in the limit, however slowly the writer commits (2 MB did not, on a loaded machine).
    const HELD: usize = 1_000;
    flood(&a, 0, 0..HELD).await;
    let all = [a.clone(), b.clone(), c.clone()];
    assert!(
        eventually(Duration::from_secs(90), || async {
            // (A key or two may go if client buffers count against the limit at a peak.)
            converged(&all) && c.cache().len() >= HELD - 10
        })
        .await,
        "no initial convergence: keys {:?}, evicted {:?}",
        all.iter().map(|n| n.cache().len()).collect::<Vec<_>>(),
        all.iter()
            .map(|n| n.cache().stats().replica.evicted_keys)
            .collect::<Vec<_>>()
    );
    // C goes offline; A and B write 20 MB, evicting (nearly) every key C holds.
    let c_had: std::collections::HashSet<usize> =
        (0..HELD).filter(|&i| c.get(&key(0, i)).is_some()).collect();
    c.shutdown().await.unwrap();
    flood(&a, 1, 0..10_000).await;
    flood(&b, 2, 0..10_000).await;
    let ab = [a.clone(), b.clone()];
    assert!(eventually(Duration::from_secs(90), || async { converged(&ab) }).await);
    // The keys C held that the others evicted: C must not bring them back.
    let gone: Vec<usize> = (0..HELD)
        .filter(|&i| c_had.contains(&i) && a.get(&key(0, i)).is_none())
        .collect();
    assert!(
        gone.len() > HELD * 3 / 4,
        "only {} of C's keys evicted",
        gone.len()
    );
    // C comes back with its old copies: the evictions reach it, nothing returns.
    let c = start(dirs[2].path(), &[addr_of(&a).await]).await;
    let all = [a.clone(), b.clone(), c.clone()];
    // (C evicts on its own too, as it loads what it missed: wait for the union.)
    assert!(
        eventually(Duration::from_secs(60), || async {
            converged(&all) && live_keys(&a) == live_keys(&c)
        })
        .await,
        "no convergence after C returned: keys {:?}",
        all.iter().map(|n| n.cache().len()).collect::<Vec<_>>()
    );
    for &i in &gone {
        for n in &all {
            assert_eq!(n.get(&key(0, i)), None, "evicted key {i} came back");
        }
    }
    for n in all {
        n.shutdown().await.unwrap();
    }
}
