//! mDNS discovery whose query schedule follows the cluster's size.
//!
//! libp2p's mDNS behaviour queries the LAN every `query_interval` once it has found someone,
//! and every node answers every query to the multicast group, so every node receives every
//! answer: N nodes querying every T seconds make each node receive and parse about N²/T
//! packets a second (64 nodes at 30 s: about 134). The behaviour cannot change its interval
//! once built, nor be told not to answer a peer it is already connected to, so `Mdns`
//! wraps it and builds it again, with a longer interval, when the number of members this
//! node knows moves to another tier ([`query_interval`]): the packets each node receives stay
//! about constant as the cluster grows.
//!
//! A newcomer is not slowed down: a fresh behaviour probes at once (0.5 s, 1 s, 2 s ... until
//! the first answer), and every member, whatever its own interval, answers it. The steady
//! queries only refresh what members already know from their connections, identify and
//! Kademlia; a member that lost its connections redials the peers it knows
//! (`known_peers`), with or without mDNS.
//!
//! libp2p-mdns does not stop a dropped behaviour's per-interface tasks: each ends when it
//! next has a peer to report (the next answer it hears on the LAN), so for a moment after a
//! rebuild both listen; what the old one hears is dropped.

use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NewListenAddr, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{PeerId, mdns};
use std::task::{Context, Poll};
use std::time::Duration;

/// The query interval of a cluster of up to [`SMALL_CLUSTER`] members.
pub const BASE_QUERY_INTERVAL: Duration = Duration::from_secs(30);

/// Members up to which mDNS queries every [`BASE_QUERY_INTERVAL`]: each node receives at
/// most about 16²/30 ≈ 8.5 answers a second.
pub const SMALL_CLUSTER: usize = 16;

/// The longest query interval.
pub const MAX_QUERY_INTERVAL: Duration = Duration::from_secs(3600);

/// How often a node that knows `members` other members queries mDNS: 30 s up to 16 members,
/// then four times longer each time the cluster doubles (120 s up to 32, 480 s up to 64,
/// ...), at most an hour. N²/T, the answers each node receives a second, stays below about
/// 8.5 up to 16 × 2^k members (and below 64 × 63 / 480 = 8.4 at 64).
pub fn query_interval(members: usize) -> Duration {
    let mut interval = BASE_QUERY_INTERVAL;
    let mut bound = SMALL_CLUSTER;
    while members > bound && interval < MAX_QUERY_INTERVAL {
        interval = (interval * 4).min(MAX_QUERY_INTERVAL);
        bound = bound.saturating_mul(2);
    }
    interval
}

/// The libp2p mDNS behaviour, built again with a new query interval as the cluster grows (see
/// the module docs). Off (no mDNS at all) when built with `enabled: false`.
pub(crate) struct Mdns {
    inner: Option<mdns::tokio::Behaviour>,
    local_peer_id: PeerId,
    interval: Duration,
    /// Our listen addresses, told again to a behaviour built anew.
    listen_addrs: Vec<(libp2p::core::transport::ListenerId, Multiaddr)>,
}

/// The behaviour's config for a query interval: records announced with a time-to-live of
/// three intervals, so that they do not expire between two queries.
fn config(interval: Duration) -> mdns::Config {
    mdns::Config {
        ttl: (interval * 3).max(Duration::from_secs(90)),
        query_interval: interval,
        enable_ipv6: false,
    }
}

impl Mdns {
    /// mDNS for `local_peer_id`, querying every [`BASE_QUERY_INTERVAL`] at first, or none.
    pub(crate) fn new(enabled: bool, local_peer_id: PeerId) -> std::io::Result<Self> {
        let interval = crate::profile::interval("mdns", BASE_QUERY_INTERVAL);
        let inner = if enabled {
            Some(mdns::tokio::Behaviour::new(
                config(interval),
                local_peer_id,
            )?)
        } else {
            None
        };
        Ok(Mdns {
            inner,
            local_peer_id,
            interval,
            listen_addrs: Vec::new(),
        })
    }

    /// Tells it how many other members this node knows: past a tier's bound, the behaviour is
    /// built again with that tier's interval (see [`query_interval`]).
    pub(crate) fn set_members(&mut self, members: usize) {
        if self.inner.is_none() || crate::profile::off("mdns") {
            return;
        }
        let interval = query_interval(members);
        if interval == self.interval {
            return;
        }
        match mdns::tokio::Behaviour::new(config(interval), self.local_peer_id) {
            Ok(mut fresh) => {
                for (listener_id, addr) in &self.listen_addrs {
                    fresh.on_swarm_event(FromSwarm::NewListenAddr(NewListenAddr {
                        listener_id: *listener_id,
                        addr,
                    }));
                }
                tracing::info!(
                    members,
                    interval_secs = interval.as_secs(),
                    "mDNS now queries less often (cluster grew)"
                );
                self.inner = Some(fresh);
                self.interval = interval;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot rebuild mDNS; it keeps its interval");
            }
        }
    }
}

impl NetworkBehaviour for Mdns {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = mdns::Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        match &mut self.inner {
            Some(inner) => inner.handle_pending_outbound_connection(
                connection_id,
                maybe_peer,
                addresses,
                effective_role,
            ),
            None => Ok(vec![]),
        }
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

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        ev: THandlerOutEvent<Self>,
    ) {
        match ev {}
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::NewListenAddr(e) if !self.listen_addrs.iter().any(|(_, a)| a == e.addr) => {
                self.listen_addrs.push((e.listener_id, e.addr.clone()));
            }
            FromSwarm::ExpiredListenAddr(e) => {
                self.listen_addrs.retain(|(_, a)| a != e.addr);
            }
            FromSwarm::ListenerClosed(e) => {
                self.listen_addrs.retain(|(id, _)| *id != e.listener_id);
            }
            _ => {}
        }
        if let Some(inner) = &mut self.inner {
            inner.on_swarm_event(event);
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match &mut self.inner {
            Some(inner) => inner.poll(cx).map(|e| e.map_in(|never| match never {})),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_grows_with_the_square_of_the_cluster() {
        assert_eq!(query_interval(0), Duration::from_secs(30));
        assert_eq!(query_interval(16), Duration::from_secs(30));
        assert_eq!(query_interval(17), Duration::from_secs(120));
        assert_eq!(query_interval(32), Duration::from_secs(120));
        assert_eq!(query_interval(63), Duration::from_secs(480));
        assert_eq!(query_interval(64), Duration::from_secs(480));
        assert_eq!(query_interval(65), Duration::from_secs(1920));
        assert_eq!(query_interval(100_000), MAX_QUERY_INTERVAL);
        // Answers each node receives a second, N²/T, stay bounded at each tier's top.
        for n in [16usize, 32, 64, 128] {
            let per_sec = (n * n) as f64 / query_interval(n).as_secs_f64();
            assert!(per_sec < 9.0, "{n} members: {per_sec} answers/s");
        }
    }
}
