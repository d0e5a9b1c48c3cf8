//! Clock offsets between peers, and peers of another sync protocol version: real swarms on
//! 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod common;
use common::{addr_of, loopback};
use dice_net::{Multiaddr, Node, NodeBuilder};
use std::time::{Duration, Instant};

async fn start(dir: &std::path::Path, peers: &[Multiaddr]) -> Node {
    let mut b = NodeBuilder::new(dir)
        .listen(loopback())
        .mdns(false)
        .catchup_interval(Duration::from_millis(200));
    for p in peers {
        b = b.peer(p.clone());
    }
    b.start().await.unwrap()
}

/// Polls `f` every 50 ms until it gives `Some`, for up to `timeout`.
async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    timeout: Duration,
    mut f: impl FnMut() -> F,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Two nodes on one machine share its clock: each reports an offset for the other, and it is
/// small (the estimate is within half a round trip, a few ms on loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_offset_between_two_local_nodes_is_reported_and_small() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(dirs[0].path(), &[]).await;
    let b = start(dirs[1].path(), &[addr_of(&a).await]).await;
    a.put("k", "v").await.unwrap();
    for (me, other) in [(&a, &b), (&b, &a)] {
        let offset = wait_for(Duration::from_secs(20), || async {
            let s = me.status().await.unwrap();
            s.peers
                .iter()
                .find(|p| p.peer_id == other.peer_id())
                .and_then(|p| p.clock_offset_ms)
        })
        .await
        .expect("no clock offset reported for the peer");
        println!("clock offset seen by {}: {offset} ms", me.peer_id());
        assert!(
            offset.abs() < 1000,
            "offset {offset} ms between two local nodes"
        );
    }
    for n in [a, b] {
        n.shutdown().await.unwrap();
    }
}

/// A peer that speaks the previous sync protocol (`/dice/<cluster>/sync/6`, before memory
/// pressure) is not taken for a member: our catch-up request to it fails to negotiate, and it
/// is counted as foreign and disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_the_previous_sync_version_is_refused() {
    use futures::StreamExt;
    use libp2p::request_response::{self, ProtocolSupport};
    use libp2p::{StreamProtocol, noise, tcp, yamux};

    assert_eq!(
        dice_net::protocol::sync_protocol("default").unwrap(),
        format!("/dice/default/sync/{}", dice_core::SYNC_PROTOCOL_VERSION)
    );
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), &[]).await;
    let mut old = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                dice_net::codec::FrameCodec::new(1024 * 1024),
                [(
                    StreamProtocol::try_from_owned(format!(
                        "/dice/default/sync/{}",
                        dice_core::SYNC_PROTOCOL_VERSION - 1
                    ))
                    .unwrap(),
                    ProtocolSupport::Full,
                )],
                request_response::Config::default(),
            )
        })
        .unwrap()
        .build();
    old.dial(addr_of(&a).await).unwrap();
    let old_id = *old.local_peer_id();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut refused = false;
    while Instant::now() < deadline && !refused {
        let _ = tokio::time::timeout(Duration::from_millis(100), old.select_next_some()).await;
        let s = a.status().await.unwrap();
        refused = s.foreign_peers >= 1 && s.peers.iter().all(|p| p.peer_id != old_id);
    }
    assert!(refused, "{:?}", a.status().await.unwrap());
    a.shutdown().await.unwrap();
}
