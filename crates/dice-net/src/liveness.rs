//! Liveness pings whose period follows the number of connections a node expects to hold.
//!
//! libp2p's ping sends one ping each way on every connection every period: a node with c
//! connections handles about 4c/T ping messages a second, and at 64 nodes (31 connections,
//! 5 s) pings were a third of an idle node's CPU (measured with `DICE_NET_PROFILE_OFF=ping`,
//! `docs/SCALE.md`). The behaviour's period is fixed per connection when the connection
//! opens, so `Liveness` keeps one ping behaviour per period and gives each new connection
//! the period of the node's current tier ([`ping_interval`]): the base period (5 s) up to 8
//! expected connections, then the base times ⌈c/8⌉, so that pings per second stay about
//! constant (≈ 2 × 8 / 5 = 3.2 sent a second) however many connections the node holds.
//!
//! The cost is detection time: a silent peer (a host gone, a cut cable; a process that dies
//! closes its connections at once) is noticed after its connection's period plus the ping
//! timeout, up to 40 s + 3 s with 64 connections, instead of 5 s + 3 s. Members still
//! converge meanwhile: a push that is not delivered is sent again, and catch-up moves what
//! was missed.

use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{PeerId, ping};
use std::task::{Context, Poll};
use std::time::Duration;

/// Connections per step of the period: up to this many, the base period.
pub const CONNECTIONS_PER_STEP: usize = 8;

/// At most this many times the base period.
pub const MAX_STEPS: u32 = 8;

/// The ping period of a node expecting `connections` connections, for a base period `base`:
/// `base` up to [`CONNECTIONS_PER_STEP`] connections, then `base` × ⌈connections / 8⌉ (at
/// most [`MAX_STEPS`] times `base`).
pub fn ping_interval(base: Duration, connections: usize) -> Duration {
    let steps = connections
        .div_ceil(CONNECTIONS_PER_STEP)
        .clamp(1, MAX_STEPS as usize);
    base * steps as u32
}

/// libp2p ping with a period per connection chosen when it opens (see the module docs).
pub(crate) struct Liveness {
    base: Duration,
    timeout: Duration,
    /// One behaviour per number of steps (index 0: the base period), made when first used.
    tiers: Vec<Option<ping::Behaviour>>,
    /// The tier new connections get.
    current: usize,
    /// The longest period any connection may have.
    longest: Duration,
}

impl Liveness {
    /// Pings every `base` (a tier's multiple of it), failing after `timeout`.
    pub(crate) fn new(base: Duration, timeout: Duration) -> Self {
        let mut tiers: Vec<Option<ping::Behaviour>> = (0..MAX_STEPS).map(|_| None).collect();
        tiers[0] = Some(ping::Behaviour::new(
            ping::Config::new()
                .with_interval(base)
                .with_timeout(timeout),
        ));
        Liveness {
            base,
            timeout,
            tiers,
            current: 0,
            longest: base,
        }
    }

    /// Sets the number of connections the node expects to hold (its known members, at most
    /// its bound): connections opened from now on get that tier's period. Returns the
    /// longest period a connection may have, for the silence check.
    pub(crate) fn set_expected_connections(&mut self, connections: usize) -> Duration {
        let interval = ping_interval(self.base, connections);
        let tier = (connections
            .div_ceil(CONNECTIONS_PER_STEP)
            .clamp(1, MAX_STEPS as usize))
            - 1;
        if tier != self.current {
            tracing::debug!(
                connections,
                interval_secs = interval.as_secs(),
                "new connections get a new ping period"
            );
            self.current = tier;
        }
        if self.tiers[tier].is_none() {
            self.tiers[tier] = Some(ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(interval)
                    .with_timeout(self.timeout),
            ));
        }
        self.longest = self.longest.max(interval);
        self.longest
    }

    fn current(&mut self) -> &mut ping::Behaviour {
        let base = self.base;
        let timeout = self.timeout;
        self.tiers[self.current].get_or_insert_with(|| {
            ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(base)
                    .with_timeout(timeout),
            )
        })
    }
}

impl NetworkBehaviour for Liveness {
    type ConnectionHandler = <ping::Behaviour as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = ping::Event;

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.current().handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.current().handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        // Every tier only queues the event for the swarm, whichever made the handler.
        self.current()
            .on_connection_handler_event(peer, connection, event);
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        for tier in self.tiers.iter_mut().flatten() {
            if let Poll::Ready(e) = tier.poll(cx) {
                return Poll::Ready(e);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_grows_with_connections_so_pings_per_second_stay_bounded() {
        let base = Duration::from_secs(5);
        assert_eq!(ping_interval(base, 0), base);
        assert_eq!(ping_interval(base, 8), base);
        assert_eq!(ping_interval(base, 9), base * 2);
        assert_eq!(ping_interval(base, 31), base * 4);
        assert_eq!(ping_interval(base, 32), base * 4);
        assert_eq!(ping_interval(base, 64), base * 8);
        assert_eq!(ping_interval(base, 10_000), base * MAX_STEPS);
        for c in 1..=64usize {
            let per_sec = 2.0 * c as f64 / ping_interval(base, c).as_secs_f64();
            assert!(per_sec <= 3.2 + 1e-9, "{c} connections: {per_sec} pings/s");
        }
    }

    #[test]
    fn new_connections_get_the_current_tier_and_the_longest_period_is_kept() {
        let base = Duration::from_secs(5);
        let mut l = Liveness::new(base, Duration::from_secs(3));
        assert_eq!(l.set_expected_connections(3), base);
        assert_eq!(l.set_expected_connections(31), base * 4);
        assert_eq!(l.current, 3);
        // Fewer connections later: new ones ping faster again, the silence check still
        // allows for the slowest connection that may remain.
        assert_eq!(l.set_expected_connections(2), base * 4);
        assert_eq!(l.current, 0);
    }
}
