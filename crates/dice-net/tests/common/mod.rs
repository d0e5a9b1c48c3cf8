//! What the loopback cluster tests share: a loopback listen address, a node's dialable
//! address, and a bounded wait for a condition.
#![allow(dead_code, clippy::unwrap_used)]

use dice_net::{Multiaddr, Node};
use std::time::{Duration, Instant};

/// Listen on loopback only, on a free port.
pub fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

/// `node`'s first listen address with its peer id: what another node dials.
pub async fn addr_of(node: &Node) -> Multiaddr {
    let s = node.status().await.unwrap();
    let mut a = s.listen_addrs[0].clone();
    a.push(libp2p::multiaddr::Protocol::P2p(node.peer_id()));
    a
}

/// Polls `f` until it holds or `timeout` passes; whether it held.
pub async fn eventually<F: std::future::Future<Output = bool>>(
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
