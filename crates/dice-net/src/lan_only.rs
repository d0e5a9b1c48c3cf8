//! The gate every connection passes before any handshake.
//!
//! * The safe default of a node without a cluster key: inbound connections only from
//!   loopback, private and link-local addresses. Any host that reaches the peer port could
//!   otherwise join the cluster and, through it, read and overwrite every key.
//! * `--max-peers` ([`ConnectionGate`]): a node at its bound refuses inbound connections as
//!   the TCP connection arrives, and dials no peer it is not connected to (Kademlia's
//!   queries would), instead of completing a Noise handshake on both sides only to close the
//!   connection at once.

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

/// Whether `ip` is on this host or a local network: loopback, RFC 1918 private, shared
/// address space (RFC 6598, carrier-grade NAT), link-local, IPv6 unique-local.
pub fn is_local_network(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_local_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_local_v4(v4),
            None => {
                let first = v6.segments()[0];
                v6.is_loopback()
                    || (first & 0xfe00) == 0xfc00 // fc00::/7 unique local
                    || (first & 0xffc0) == 0xfe80 // fe80::/10 link local
                    || v6 == Ipv6Addr::UNSPECIFIED
            }
        },
    }
}

fn is_local_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (64..128).contains(&b))
}

/// The IP address a multiaddr starts with, if any.
pub fn multiaddr_ip(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// How full a node is, set by its event loop and read by [`LanOnly`] before any handshake.
#[derive(Debug, Default)]
pub struct ConnectionGate {
    /// The node has its `--max-peers` connected peers.
    at_bound: AtomicBool,

    /// Inbound connections refused at the bound, before their handshake.
    pub refused_inbound: AtomicU64,
    /// Dials to peers not connected refused at the bound (Kademlia's).
    pub refused_outbound: AtomicU64,
}

impl ConnectionGate {
    /// Sets the gate from the node's connected peers and its bound.
    pub fn set(&self, connected: usize, max_peers: usize) {
        self.at_bound
            .store(connected >= max_peers, Ordering::Relaxed);
    }

    fn at_bound(&self) -> bool {
        self.at_bound.load(Ordering::Relaxed)
    }
}

/// Denies inbound connections from outside the local networks (when enabled), and counts
/// them; applies the node's [`ConnectionGate`].
pub struct LanOnly {
    enabled: bool,
    denied: Arc<AtomicU64>,
    gate: ConnectionGate,
    /// Established connections per peer (a dial to a connected peer is never refused).
    connected: HashMap<PeerId, usize>,
}

impl LanOnly {
    /// A filter; `enabled` false lets everything through.
    pub fn new(enabled: bool, denied: Arc<AtomicU64>) -> Self {
        LanOnly {
            enabled,
            denied,
            gate: ConnectionGate::default(),
            connected: HashMap::new(),
        }
    }

    /// The gate it applies (all open until [`ConnectionGate::set`]).
    pub fn gate(&self) -> &ConnectionGate {
        &self.gate
    }
}

/// Why a connection was refused before its handshake: the node has its `--max-peers`.
#[derive(Debug)]
pub struct AtBound;

impl std::fmt::Display for AtBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "this node has its --max-peers connected peers")
    }
}

impl std::error::Error for AtBound {}

/// The reason a connection was denied.
#[derive(Debug)]
pub struct NotLocal(pub Multiaddr);

impl std::fmt::Display for NotLocal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is not on a local network, and without a cluster key only local peers are \
             accepted",
            self.0
        )
    }
}

impl std::error::Error for NotLocal {}

impl NetworkBehaviour for LanOnly {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        _: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        if !self.enabled || multiaddr_ip(remote).is_none_or(is_local_network) {
            if self.gate.at_bound() {
                self.gate.refused_inbound.fetch_add(1, Ordering::Relaxed);
                return Err(ConnectionDenied::new(AtBound));
            }
            return Ok(());
        }
        let n = self.denied.fetch_add(1, Ordering::Relaxed) + 1;
        // One line for the first few, then one per thousand: a scan must not flood the log.
        if n <= 10 || n.is_multiple_of(1000) {
            tracing::warn!(from = %remote, denied = n, "refused a peer from outside the local networks (set --cluster-key to accept it)");
        }
        Err(ConnectionDenied::new(NotLocal(remote.clone())))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        maybe_peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        // At the bound, a dial to a peer not connected (Kademlia's queries: the node's own
        // dials stop at its dial target) would end in a connection closed at once: a
        // handshake on both sides for nothing. Below the bound they go on: a node with room
        // that Kademlia dials is how a newcomer refused by full members finds neighbours
        // (closing them at the dial target instead left the last nodes of a 64-node start
        // below their target for minutes). Bootstraps are rare once a node has its dial
        // target (`event_loop`), so these dials are too.
        if self.gate.at_bound()
            && let Some(peer) = maybe_peer
            && !self.connected.contains_key(&peer)
        {
            self.gate.refused_outbound.fetch_add(1, Ordering::Relaxed);
            return Err(ConnectionDenied::new(AtBound));
        }
        Ok(Vec::new())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(c) => {
                *self.connected.entry(c.peer_id).or_default() += 1;
            }
            FromSwarm::ConnectionClosed(c) => {
                if let Some(n) = self.connected.get_mut(&c.peer_id) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.connected.remove(&c.peer_id);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn local_networks() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.10.10",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:192.168.0.1",
        ] {
            assert!(is_local_network(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "192.169.0.1",
            "100.128.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_local_network(ip.parse().unwrap()), "{ip}");
        }
    }
}
