//! Real swarms on 127.0.0.1 with explicit peers, in temp dirs.
#![allow(clippy::unwrap_used)]

mod common;
use common::{addr_of, eventually, loopback};
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
        .listen(loopback())
        .mdns(false)
        .catchup_interval(Duration::from_millis(500));
    for p in peers {
        b = b.peer(p.clone());
    }
    b.start().await.unwrap()
}

/// Three nodes on loopback, B and C bootstrapped from A.
async fn three_nodes() -> (Vec<tempfile::TempDir>, Node, Node, Node) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(dirs[0].path(), &[]).await;
    let a_addr = addr_of(&a).await;
    let b = start(dirs[1].path(), std::slice::from_ref(&a_addr)).await;
    let c = start(dirs[2].path(), std::slice::from_ref(&a_addr)).await;
    (dirs, a, b, c)
}

fn same_digest(nodes: &[Node]) -> bool {
    let d: Vec<u64> = nodes.iter().map(|n| n.cache().digest()).collect();
    d.windows(2).all(|w| w[0] == w[1])
}

async fn connected_peers(node: &Node) -> usize {
    let status = node.status().await.unwrap();
    status.peers.iter().filter(|p| p.connected).count()
}

async fn shutdown_all(nodes: impl IntoIterator<Item = Node>) {
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge() {
    init_tracing();
    let (_dirs, a, b, c) = three_nodes().await;
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

fn total_bytes_received(s: &dice_net::NodeStatus) -> u64 {
    s.peers.iter().map(|p| p.bytes_received).sum()
}

/// The seed story: put on A, read on B; A stops; writes go on on B and C; A restarts from its
/// data dir and catches up by itself, receiving little more than what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_catches_up_with_only_what_it_missed() {
    init_tracing();
    let (dirs, a, b, c) = three_nodes().await;

    a.put("elixir", "awesome sauce").await.unwrap();
    let value = [b'x'; 100];
    // Not waited for one by one: the flush below waits for them all.
    for k in 0..10_000u32 {
        let _ticket = a
            .cache()
            .write_unacked(
                format!("key{k:05}").into(),
                Some(value.to_vec().into()),
                None,
            )
            .await
            .unwrap();
    }
    a.cache().flush().await.unwrap();
    let all = [a.clone(), b.clone(), c.clone()];
    let converged = |nodes: Vec<Node>, keys: usize| async move {
        same_digest(&nodes) && nodes[0].cache().len() == keys
    };
    assert!(
        eventually(Duration::from_secs(30), || converged(all.to_vec(), 10_001)).await,
        "initial convergence"
    );
    assert_eq!(b.get(b"elixir").unwrap().as_ref(), b"awesome sauce");

    let a_peer = a.peer_id();
    a.shutdown().await.unwrap();

    // 1% of the keys change while A is down, on both B and C, plus a new key.
    for k in 0..50u32 {
        b.put(format!("key{k:05}"), "changed-on-b").await.unwrap();
        c.put(format!("key{:05}", 5000 + k), "changed-on-c")
            .await
            .unwrap();
    }
    b.put("written-while-a-was-down", "yes").await.unwrap();
    assert_eq!(c.get(b"elixir").unwrap().as_ref(), b"awesome sauce");

    // A restarts from its data dir with no --peer: it redials the peers it knew.
    let a = NodeBuilder::new(dirs[0].path())
        .listen(loopback())
        .mdns(false)
        .catchup_interval(Duration::from_millis(500))
        .start()
        .await
        .unwrap();
    assert_eq!(a.peer_id(), a_peer, "identity is kept in the data dir");
    let all = [a.clone(), b.clone(), c.clone()];
    assert!(
        eventually(Duration::from_secs(30), || converged(all.to_vec(), 10_002)).await,
        "restarted node never caught up"
    );
    assert_eq!(a.get(b"written-while-a-was-down").unwrap().as_ref(), b"yes");
    assert_eq!(a.get(b"key00007").unwrap().as_ref(), b"changed-on-b");
    assert_eq!(a.get(b"key05007").unwrap().as_ref(), b"changed-on-c");

    let status = a.status().await.unwrap();
    let received = total_bytes_received(&status);
    let full_state: u64 = 10_002 * (100 + 8);
    let missed: u64 = 101 * (100 + 8);
    eprintln!(
        "restart catch-up: received {received} bytes; missed entries ~{missed} bytes; full state ~{full_state} bytes"
    );
    assert!(
        received < full_state / 10,
        "A received {received} bytes, not far below the full state ({full_state})"
    );
    shutdown_all(all).await;
}

/// Conflicting writes on both sides of a partition converge to the greatest version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_heals_to_greatest_version() {
    init_tracing();
    let (_dirs, a, b, c) = three_nodes().await;
    let all = [a.clone(), b.clone(), c.clone()];
    assert!(
        eventually(Duration::from_secs(20), || {
            let all = all.clone();
            async move {
                let mut ok = true;
                for n in &all {
                    ok &= connected_peers(n).await == 2;
                }
                ok
            }
        })
        .await,
        "full mesh never formed"
    );

    // Cut A off from B and C.
    for other in [&b, &c] {
        a.block(other.peer_id()).await.unwrap();
        other.block(a.peer_id()).await.unwrap();
    }
    let mut written: std::collections::HashMap<String, (dice_core::Version, String)> =
        std::collections::HashMap::new();
    let mut note = |e: dice_core::Entry| {
        let k = String::from_utf8(e.key.to_vec()).unwrap();
        let v = e
            .value
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
            .unwrap_or_default();
        let slot = written.entry(k).or_insert((e.version, v.clone()));
        if e.version > slot.0 {
            *slot = (e.version, v);
        }
    };
    for round in 0..20 {
        for k in 0..50 {
            let key = format!("conflict{k}");
            note(a.put(key.clone(), format!("a{round}")).await.unwrap());
            let side = if k % 2 == 0 { &b } else { &c };
            note(side.put(key, format!("bc{round}")).await.unwrap());
        }
    }
    // While cut off, A does not see the other side's writes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.get(b"conflict0").unwrap().starts_with(b"a"));

    for other in [&b, &c] {
        a.unblock(other.peer_id()).await.unwrap();
        other.unblock(a.peer_id()).await.unwrap();
    }
    let healed = Instant::now();
    assert!(
        eventually(Duration::from_secs(30), || {
            let all = all.clone();
            async move { same_digest(&all) }
        })
        .await,
        "never converged after healing"
    );
    eprintln!("converged {:?} after healing", healed.elapsed());
    for n in &all {
        for (k, (_, v)) in &written {
            assert_eq!(
                n.get(k.as_bytes()).unwrap().as_ref(),
                v.as_bytes(),
                "key {k}"
            );
        }
    }
    shutdown_all(all).await;
}

/// Nodes of another cluster (name or key) never exchange data with ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_clusters_never_get_data() {
    init_tracing();
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let key = dice_net::keys::parse_cluster_key(&dice_net::keys::generate_cluster_key()).unwrap();
    let other_key =
        dice_net::keys::parse_cluster_key(&dice_net::keys::generate_cluster_key()).unwrap();
    let builder = |dir: &std::path::Path| {
        NodeBuilder::new(dir)
            .listen(loopback())
            .mdns(false)
            .catchup_interval(Duration::from_millis(300))
    };
    let a = builder(dirs[0].path())
        .cluster_key(key)
        .start()
        .await
        .unwrap();
    let a_addr = addr_of(&a).await;
    let b = builder(dirs[1].path())
        .cluster_key(key)
        .peer(a_addr.clone())
        .start()
        .await
        .unwrap();
    let stranger_key = builder(dirs[2].path())
        .cluster_key(other_key)
        .peer(a_addr.clone())
        .start()
        .await
        .unwrap();
    let stranger_name = builder(dirs[3].path())
        .cluster("elsewhere")
        .cluster_key(key)
        .peer(a_addr.clone())
        .start()
        .await
        .unwrap();

    a.put("secret", "ours").await.unwrap();
    stranger_key.put("theirs-by-key", "x").await.unwrap();
    stranger_name.put("theirs-by-name", "x").await.unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            let b = b.clone();
            async move { b.get(b"secret").is_some() }
        })
        .await,
        "members of the cluster did not sync"
    );
    // Give the strangers time to try (they redial with backoff).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stranger_key.get(b"secret"), None);
    assert_eq!(stranger_name.get(b"secret"), None);
    assert_eq!(a.get(b"theirs-by-key"), None);
    assert_eq!(a.get(b"theirs-by-name"), None);
    assert_eq!(b.get(b"theirs-by-name"), None);
    let sk = stranger_key.status().await.unwrap();
    assert!(sk.peers.iter().all(|p| !p.connected), "{:?}", sk.peers);
    assert!(
        eventually(Duration::from_secs(15), || {
            let a = a.clone();
            async move { a.status().await.unwrap().refused_connections > 0 }
        })
        .await,
        "A did not count the refused stranger"
    );
    let sa = a.status().await.unwrap();
    assert!(
        sa.peers
            .iter()
            .all(|p| p.peer_id != stranger_name.peer_id() || !p.connected),
        "A kept a connection to another cluster's node"
    );
    for n in [a, b, stranger_key, stranger_name] {
        n.shutdown().await.unwrap();
    }
}

/// A peer sending garbage, truncated or oversized messages on the sync protocol is refused and
/// counted; the node keeps syncing with everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_sync_protocol_is_refused_and_counted() {
    use futures::StreamExt;
    use libp2p::request_response::{self, ProtocolSupport};
    use libp2p::swarm::SwarmEvent;
    use libp2p::{StreamProtocol, noise, tcp, yamux};

    init_tracing();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(dirs[0].path(), &[]).await;
    let a_addr = addr_of(&a).await;
    let b = start(dirs[1].path(), std::slice::from_ref(&a_addr)).await;

    // A raw libp2p client speaking the sync protocol name with a permissive codec.
    let mut rogue = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                dice_net::codec::FrameCodec::new(64 * 1024 * 1024),
                [(
                    StreamProtocol::try_from_owned(
                        dice_net::protocol::sync_protocol("default").unwrap(),
                    )
                    .unwrap(),
                    ProtocolSupport::Full,
                )],
                request_response::Config::default(),
            )
        })
        .unwrap()
        .build();
    rogue.dial(a_addr.clone()).unwrap();
    let payloads: Vec<Vec<u8>> = vec![
        vec![],     // empty
        vec![0x00], // truncated header
        {
            // right version and send time, garbage body
            let mut m = dice_core::SYNC_PROTOCOL_VERSION.to_be_bytes().to_vec();
            m.extend([0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff]);
            m
        },
        vec![0x00, 0x01, 0x00, 0x00], // version 1, the format before send times
        vec![0x7f, 0x7f, 1, 2, 3],    // unknown protocol version
        {
            // a valid request with its tail cut off
            let msg = a.cache().start_sync().1;
            let bytes = msg.encode(&dice_core::SyncLimits::default()).unwrap();
            bytes[..bytes.len() / 2].to_vec()
        },
        vec![0x00; 9 * 1024 * 1024], // above the 8 MiB frame bound
    ];
    let mut sent = false;
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered < payloads.len() && Instant::now() < deadline {
        let ev = tokio::time::timeout(Duration::from_millis(200), rogue.select_next_some()).await;
        match ev {
            Ok(SwarmEvent::ConnectionEstablished { peer_id, .. }) if !sent => {
                for p in &payloads {
                    rogue.behaviour_mut().send_request(&peer_id, p.clone());
                }
                sent = true;
            }
            // A asks the rogue for a catch-up: answer with garbage too.
            Ok(SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            })) => {
                let _ = rogue
                    .behaviour_mut()
                    .send_response(channel, vec![0x00, 0x01, 0xde, 0xad]);
            }
            Ok(SwarmEvent::Behaviour(request_response::Event::Message { .. }))
            | Ok(SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. })) => {
                answered += 1
            }
            _ => {}
        }
    }
    assert!(sent, "the rogue client never connected");
    let sa = a.status().await.unwrap();
    assert!(
        sa.refused_messages >= payloads.len() as u64 - 1,
        "only {} of {} bad messages were refused",
        sa.refused_messages,
        payloads.len()
    );
    // A still serves its real peer.
    a.put("after-garbage", "still syncing").await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            let b = b.clone();
            async move { b.get(b"after-garbage").is_some() }
        })
        .await,
        "A stopped syncing after garbage"
    );
    for n in [a, b] {
        n.shutdown().await.unwrap();
    }
}

/// A node away longer than the member horizon, while others deleted keys and collected the
/// tombstones without it, does a full resync by itself and no deleted key comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_behind_gc_floor_resyncs_fully() {
    init_tracing();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let opts = dice_core::CacheOptions::default()
        .with_gc_grace(Duration::from_millis(200))
        .with_gc_interval(Duration::from_millis(50))
        .with_member_horizon(Duration::from_millis(500));
    let builder = |dir: &std::path::Path| {
        NodeBuilder::new(dir)
            .listen(loopback())
            .mdns(false)
            .catchup_interval(Duration::from_millis(300))
            .cache_options(opts.clone())
    };
    let a = builder(dirs[0].path()).start().await.unwrap();
    let a_addr = addr_of(&a).await;
    let b = builder(dirs[1].path()).peer(a_addr).start().await.unwrap();
    for k in 0..100 {
        a.put(format!("k{k}"), "v").await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(10), || {
            let b = b.clone();
            async move { b.cache().len() == 100 }
        })
        .await
    );
    let b_peer = b.peer_id();
    b.shutdown().await.unwrap();
    for k in 0..50 {
        a.delete(format!("k{k}")).await.unwrap();
    }
    // Let A collect the tombstones (its floor rises past what B has seen).
    assert!(
        eventually(Duration::from_secs(10), || {
            let a = a.clone();
            async move { a.cache().stats().entries == 50 }
        })
        .await,
        "A never collected its tombstones"
    );
    let b = builder(dirs[1].path()).start().await.unwrap();
    assert_eq!(b.peer_id(), b_peer);
    assert!(
        eventually(Duration::from_secs(15), || {
            let (a, b) = (a.clone(), b.clone());
            async move { b.cache().len() == 50 && a.cache().digest() == b.cache().digest() }
        })
        .await,
        "B did not converge: {} keys",
        b.cache().len()
    );
    assert_eq!(b.get(b"k3"), None, "a deleted key came back");
    assert!(b.status().await.unwrap().full_resyncs >= 1);
    assert_eq!(a.cache().len(), 50, "B's stale keys resurrected on A");
    for n in [a, b] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_refused_over_the_rate_limit_is_sent_again() {
    init_tracing();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    // No periodic catch-up: only pushes (and the one catch-up on connect) can deliver.
    let a = NodeBuilder::new(dirs[0].path())
        .listen(loopback())
        .mdns(false)
        .catchup_interval(Duration::from_secs(3600))
        .start()
        .await
        .unwrap();
    let a_addr = addr_of(&a).await;
    let mut b = NodeBuilder::new(dirs[1].path())
        .listen(loopback())
        .mdns(false)
        .catchup_interval(Duration::from_secs(3600))
        .peer(a_addr);
    // B takes at most 4 requests per second from A (burst 8).
    b.config_mut().max_requests_per_sec = 4;
    let b = b.start().await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            connected_peers(&a).await == 1
        })
        .await,
        "A and B never connected"
    );
    // Sequential writes: each goes out as its own push, far over B's rate.
    for i in 0..40 {
        a.put(format!("k{i}"), format!("v{i}")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let refused = eventually(Duration::from_secs(5), || async {
        b.status().await.unwrap().refused_messages > 0
    })
    .await;
    assert!(refused, "B never refused a push: the test proved nothing");
    // Refused pushes are retried; everything arrives long before any periodic catch-up.
    let t0 = Instant::now();
    assert!(
        eventually(Duration::from_secs(20), || async {
            b.cache().get(b"k39").is_some() && same_digest(&[a.clone(), b.clone()])
        })
        .await,
        "B never got A's writes after refusing pushes"
    );
    eprintln!("converged {:?} after the refusals were seen", t0.elapsed());
    shutdown_all([a, b]).await;
}

/// `Node::acked_by` (Redis's `WAIT`): a write counts a peer once the peer's own version
/// vector says it holds it, and a peer cut off acknowledges nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_by_counts_peers_whose_vector_covers_a_write() {
    init_tracing();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(dirs[0].path(), &[]).await;
    let b = start(dirs[1].path(), &[addr_of(&a).await]).await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            connected_peers(&a).await == 1
        })
        .await
    );
    let entry = a.put("k", "v1").await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.acked_by(entry.seq) == 1
        })
        .await,
        "B never acknowledged A's write"
    );
    // Acknowledged means B has it.
    assert_eq!(b.get(b"k").as_deref(), Some(&b"v1"[..]));
    let mut watch = a.watch_acked();
    assert!(watch.borrow_and_update().values().any(|&s| s >= entry.seq));

    // B cut off: a new write stays unacknowledged.
    a.block(b.peer_id()).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            connected_peers(&a).await == 0
        })
        .await
    );
    let later = a.put("k", "v2").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.acked_by(later.seq), 0);
    assert_eq!(
        a.acked_by(entry.seq),
        1,
        "what B acknowledged stays counted"
    );
    // Back: B catches up and acknowledges it.
    a.unblock(b.peer_id()).await.unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            a.acked_by(later.seq) == 1
        })
        .await,
        "B never acknowledged the write made while it was cut off"
    );
    assert_eq!(b.get(b"k").as_deref(), Some(&b"v2"[..]));
    shutdown_all([a, b]).await;
}
