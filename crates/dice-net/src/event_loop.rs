//! The event loop: the one task that owns the swarm. It translates swarm events and commands
//! from the [`crate::Node`] handle into calls on the peer table ([`crate::peers`]), the
//! replicator (`dice_core::Replicator`, the replication policy) and the cache, and sends what
//! they return.

use crate::gossip::{WriteGossip, should_join};
use crate::known_peers::KnownPeers;
use crate::lan_only::AtBound;
use crate::node::{Command, NodeConfig, NodeStatus, PeerStatus, dial_target};
use crate::peers::{PeerState, PeerTable, split_peer_id};
use crate::protocol::sync_protocol;
use crate::pubsub::PubSubLoop;
use crate::swarm::{Behaviour, BehaviourEvent, cluster_version, node_id_from_agent};
use dice_core::{
    Cache, Failure, Outgoing, Purpose, ReplicationConfig, Replicator, ReplyOutcome, SyncMessage,
    skew::{OffsetSample, SKEW_WARN_MS, SkewNotice},
};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, identify, kad, mdns, ping};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Dials in flight at most: see [`EventLoop::redial`].
const MAX_DIALS_IN_FLIGHT: usize = 4;

/// How often a node with fewer connected peers than its dial target runs a Kademlia
/// bootstrap (a lookup of its own id and refreshes of its buckets): it is looking for members.
const KAD_BOOTSTRAP_SEEKING: Duration = Duration::from_secs(30);

/// How often a node at its dial target does. A bootstrap is about a hundred requests among
/// 64 nodes; every 30 s on every node it was half of an idle node's CPU at 64 nodes
/// (`docs/SCALE.md`), for a routing table that a connected node does not use to find peers.
const KAD_BOOTSTRAP_SETTLED: Duration = Duration::from_secs(600);

/// A request in flight: what it is for, and our wall clock when it left (for the round-trip
/// clock offset).
#[derive(Debug)]
struct Pending {
    purpose: Purpose,
    sent_ms: u64,
}

#[derive(Debug, Default)]
struct Counters {
    full_resyncs: u64,
    refused_messages: u64,
    foreign_peers: u64,
    refused_connections: u64,
    over_max_peers: u64,
    catchups: u64,
    /// Connections established that we dialed (including those closed at the bound).
    opened_outbound: u64,
    /// Connections established that a peer dialed (including those closed at the bound).
    opened_inbound: u64,
}

pub(crate) struct EventLoop {
    cache: Cache,
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    /// Changes when local writes become durable, and so may be pushed.
    shareable: watch::Receiver<u64>,
    cluster_version: String,
    config: NodeConfig,
    peers: PeerTable,
    pending: HashMap<OutboundRequestId, Pending>,
    /// Per-peer replication policy (dice-core's sans-IO state machine).
    replication: Replicator<PeerId>,
    /// The origin of the replicator's clock.
    epoch: Instant,
    known: KnownPeers,
    listen_addrs: Vec<Multiaddr>,
    /// Something happened that may make replication work due.
    poll_wanted: bool,
    /// When the replicator wants to be polled at the latest.
    wake_at: Option<Instant>,
    /// Inbound connections refused as not local (counted by [`LanOnly`]).
    denied_not_local: Arc<AtomicU64>,
    counters: Counters,
    pubsub: PubSubLoop,
    /// Per peer, the highest seq of our own writes it acknowledged holding: from the version
    /// vector it sends with its requests and pushes and with its ack of our pushes, never
    /// assumed (unlike the replicator's `acked_seq`, which a new connection raises to what
    /// the catch-up will bring). Read by [`Node::acked_by`] (Redis's `WAIT`).
    acked: watch::Sender<HashMap<PeerId, u64>>,
    /// Connections being closed because they opened past `--max-peers` (each closes soon
    /// after it opened, so this stays small).
    over_max: HashMap<ConnectionId, PeerId>,
    /// Writes spread by gossip past `--max-peers`.
    gossip: WriteGossip,
    /// When Kademlia last bootstrapped (see [`KAD_BOOTSTRAP_SEEKING`]).
    last_bootstrap: Instant,
    /// Kademlia bootstraps switched off for profiling (`crate::profile`).
    kad_off: bool,
}

impl EventLoop {
    /// The loop of a node whose swarm is listening; [`EventLoop::run`] it in a task.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cache: Cache,
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        config: NodeConfig,
        listen_addrs: Vec<Multiaddr>,
        denied_not_local: Arc<AtomicU64>,
        pubsub: PubSubLoop,
        acked: watch::Sender<HashMap<PeerId, u64>>,
    ) -> Self {
        let replication = ReplicationConfig::default()
            .with_catchup_interval(config.catchup_interval.max(Duration::from_millis(50)))
            .with_antientropy_interval(config.antientropy_interval.max(Duration::from_millis(50)));
        // A ping period plus its timeout (and a margin): a ping stuck in stream negotiation
        // only fails after the much longer negotiation timeout.
        // The silence limit follows the longest ping period (`crate::liveness`), set on
        // each tick.
        let silence = crate::profile::interval("ping", config.ping_interval)
            + config.ping_timeout
            + Duration::from_secs(1);
        let config_cluster = config.cluster.clone();
        let mut event_loop = EventLoop {
            shareable: cache.watch_shareable(),
            known: KnownPeers::load(&config.data_dir),
            cache,
            swarm,
            commands,
            cluster_version: cluster_version(&config.cluster),
            peers: PeerTable::new(config.max_requests_per_sec, silence),
            config,
            pending: HashMap::new(),
            replication: Replicator::new(replication, Duration::ZERO),
            epoch: Instant::now(),
            listen_addrs,
            poll_wanted: false,
            wake_at: None,
            denied_not_local,
            counters: Counters::default(),
            pubsub,
            acked,
            over_max: HashMap::new(),
            gossip: WriteGossip::new(&config_cluster),
            last_bootstrap: Instant::now(),
            kad_off: crate::profile::interval("kad", Duration::ZERO) > Duration::ZERO,
        };
        event_loop.dial_initial();
        event_loop
    }

    /// Connections to `peer` closed at the bound (`--max-peers`) and not closed yet.
    fn refused_open(&self, peer: &PeerId) -> usize {
        self.over_max.values().filter(|p| *p == peer).count()
    }

    /// Marks `peer` as a member of our cluster or not, here and in the replicator.
    fn set_member(&mut self, peer: PeerId, member: bool) {
        self.peer(peer).member = member;
        self.replication.set_member(&peer, member);
        self.poll_wanted = true;
    }

    fn peer(&mut self, peer: PeerId) -> &mut PeerState {
        self.peers.peer(peer)
    }

    fn dial_initial(&mut self) {
        let now = Instant::now();
        for addr in self.config.bootstrap.clone() {
            let (bare, peer) = split_peer_id(&addr);
            match peer {
                Some(peer) => {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, bare.clone());
                    self.known.insert(peer, [bare]);
                    self.peer(peer).redial.due_now(now);
                }
                None => self.peers.add_bootstrap(addr),
            }
        }
        let known: Vec<(PeerId, Vec<Multiaddr>)> =
            self.known.iter().map(|(p, a)| (*p, a.clone())).collect();
        for (peer, addrs) in known {
            for a in &addrs {
                self.swarm.behaviour_mut().kad.add_address(&peer, a.clone());
            }
            self.peer(peer).redial.due_now(now);
        }
    }

    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(if crate::profile::off("tick") {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(100)
        });
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut save = tokio::time::interval(Duration::from_secs(2));
        self.poll_wanted = true;
        loop {
            if self.poll_wanted {
                self.poll_wanted = false;
                self.poll_replication();
            }
            let wake_at = self.wake_at;
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                changed = self.shareable.changed() => match changed {
                    Ok(()) => self.poll_wanted = true,
                    Err(_) => break,
                },
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        self.known.save();
                        let _ = done.send(());
                        break;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                data = self.pubsub.next_outgoing() => {
                    self.pubsub.publish(&mut self.swarm.behaviour_mut().gossipsub, data);
                }
                _ = tick.tick() => self.redial(),
                _ = save.tick() => self.known.save(),
                _ = tokio::time::sleep_until(wake_at.unwrap_or_else(Instant::now).into()),
                    if wake_at.is_some() => self.poll_wanted = true,
            }
        }
        tracing::info!("network stopped");
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Status(tx) => {
                let _ = tx.send(self.status());
            }
            Command::Block(peer, tx) => {
                self.peers.block(peer);
                self.swarm.behaviour_mut().blocked.block_peer(peer);
                self.replication.abandon_session(&peer);
                let _ = tx.send(());
            }
            Command::Unblock(peer, tx) => {
                self.peers.unblock(peer);
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                let _ = tx.send(());
            }
            Command::SyncNow(tx) => {
                let out = self.replication.catch_up_all(&self.cache);
                self.send_all(out);
                let _ = tx.send(());
            }
            Command::Shutdown(_) => {}
        }
    }

    fn status(&self) -> NodeStatus {
        let cache = self.cache.stats();
        let local_seq = cache.vv.get(cache.node_id);
        let mut peers: Vec<PeerStatus> = self
            .peers
            .iter()
            .filter(|(_, s)| s.member)
            .map(|(p, s)| {
                let (acked, theirs) = self
                    .replication
                    .peer(p)
                    .map_or((0, 0), |r| (r.acked_seq, r.their_seq));
                (p, s, acked, theirs)
            })
            .map(|(p, s, acked, theirs)| PeerStatus {
                peer_id: *p,
                node_id: s.node_id,
                address: s.address.clone(),
                connected: s.connections > 0,
                unacked: local_seq.saturating_sub(acked),
                missing: s
                    .node_id
                    .map_or(0, |id| theirs.saturating_sub(cache.vv.get(id))),
                bytes_sent: s.bytes_sent,
                bytes_received: s.bytes_received,
                entries_sent: s.entries_sent,
                entries_received: s.entries_received,
                refused: s.refused,
                clock_offset_ms: s.clock.offset_ms(),
            })
            .collect();
        peers.sort_by_key(|p| p.peer_id);
        let gate = self.swarm.behaviour().lan_only.gate();
        NodeStatus {
            peer_id: *self.swarm.local_peer_id(),
            listen_addrs: self.listen_addrs.clone(),
            cluster: self.config.cluster.clone(),
            cache,
            peers,
            full_resyncs: self.counters.full_resyncs,
            refused_messages: self.counters.refused_messages,
            foreign_peers: self.counters.foreign_peers,
            refused_connections: self.counters.refused_connections,
            closed_over_max_peers: self.counters.over_max_peers
                + gate.refused_inbound.load(Ordering::Relaxed),
            dials_refused_at_bound: gate.refused_outbound.load(Ordering::Relaxed),
            connections_opened_outbound: self.counters.opened_outbound,
            connections_opened_inbound: self.counters.opened_inbound,
            gossip: self.gossip.stats(),
            refused_not_local: self.denied_not_local.load(Ordering::Relaxed),
            catchups: self.counters.catchups,
        }
    }

    fn dial_peer(&mut self, peer: PeerId) {
        if self.peers.is_blocked(&peer) || peer == *self.swarm.local_peer_id() {
            return;
        }
        let addrs = self.known.addrs(&peer).cloned().unwrap_or_default();
        let opts = DialOpts::peer_id(peer).addresses(addrs).build();
        match self.swarm.dial(opts) {
            Ok(()) => self.peer(peer).dialing = true,
            Err(e) => tracing::debug!(%peer, error = %e, "dial not started"),
        }
    }

    /// Disconnects connected peers that answered nothing for too long (see
    /// [`PeerTable::take_silent`]), then dials what is due.
    fn redial(&mut self) {
        self.maybe_join_gossip();
        let known = self.known.iter().count();
        self.swarm.behaviour_mut().mdns.set_members(known);
        let longest = self
            .swarm
            .behaviour_mut()
            .ping
            .set_expected_connections(known.min(self.config.max_peers));
        self.peers
            .set_silence_limit(longest + self.config.ping_timeout + Duration::from_secs(1));
        self.maybe_bootstrap();
        for peer in self.peers.take_silent() {
            tracing::info!(%peer, "peer stopped answering; disconnecting");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        // Dial only while under the dial target (`--max-peers`), a few at a time: nodes that
        // start together would otherwise all dial all of each other before any connection
        // counts, and fill every node up to its bound.
        let pending = self
            .swarm
            .network_info()
            .connection_counters()
            .num_pending_outgoing() as usize;
        let room = dial_target(self.config.max_peers)
            .saturating_sub(self.peers.connected_count() + pending)
            .min(MAX_DIALS_IN_FLIGHT.saturating_sub(pending));
        let due = self.peers.take_due_dials(Instant::now(), room);
        for peer in due.peers {
            self.dial_peer(peer);
        }
        for addr in due.addrs {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "bootstrap dial not started");
            }
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Runs a Kademlia bootstrap when due: every [`KAD_BOOTSTRAP_SEEKING`] while the node has
    /// fewer connected peers than its dial target, every [`KAD_BOOTSTRAP_SETTLED`] after.
    fn maybe_bootstrap(&mut self) {
        if self.kad_off {
            return;
        }
        let settled = self.peers.connected_count() >= dial_target(self.config.max_peers);
        let every = if settled {
            KAD_BOOTSTRAP_SETTLED
        } else {
            KAD_BOOTSTRAP_SEEKING
        };
        if self.last_bootstrap.elapsed() < every {
            return;
        }
        self.last_bootstrap = Instant::now();
        if let Err(e) = self.swarm.behaviour_mut().kad.bootstrap() {
            tracing::debug!(error = %e, "no Kademlia bootstrap: no peer known yet");
        }
    }

    /// Runs the replicator: pushes due, the periodic catch-up; remembers when to run it next.
    fn poll_replication(&mut self) {
        let now = self.now();
        let (out, wake) = self.replication.poll(&self.cache, now);
        self.wake_at = wake.map(|w| self.epoch + w);
        self.send_all(out);
        let limits = self.config.cache.sync_limits;
        if let Some(at) = self.gossip.publish_due(
            &mut self.swarm.behaviour_mut().gossipsub,
            &self.cache,
            &limits,
        ) {
            self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
        }
    }

    /// Tells the connection gate how full this node is: at its bound it refuses inbound
    /// connections before their handshake and dials no peer it is not connected to
    /// (Kademlia would).
    fn set_gate(&mut self) {
        let connected = self.peers.connected_count();
        self.swarm
            .behaviour()
            .lan_only
            .gate()
            .set(connected, self.config.max_peers);
    }

    /// Joins the writes' gossip once this node knows more members than it may connect to.
    fn maybe_join_gossip(&mut self) {
        if self.gossip.joined() {
            return;
        }
        let known = self.known.iter().count();
        if should_join(known, self.config.max_peers) {
            let why = format!(
                "{known} members known, more than --max-peers {}",
                self.config.max_peers
            );
            self.gossip
                .join(&mut self.swarm.behaviour_mut().gossipsub, &self.cache, &why);
        }
    }

    fn send_all(&mut self, out: Vec<Outgoing<PeerId>>) {
        for o in out {
            if self.peers.is_blocked(&o.to) {
                self.replication.abandon_session(&o.to);
                continue;
            }
            self.send(o);
        }
    }

    /// Encodes and sends a request, stamped with our wall clock, recording what it was for.
    fn send(&mut self, o: Outgoing<PeerId>) {
        let limits = self.config.cache.sync_limits;
        let now = self.cache.now_ms();
        let peer = o.to;
        let bytes = match o.msg.encode_at(&limits, now) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(%peer, error = %e, "cannot encode a sync message");
                let outcome = self.replication.on_reply(
                    &peer,
                    o.purpose,
                    Err(Failure::NotDelivered),
                    &mut self.cache,
                    self.epoch.elapsed(),
                );
                self.after_reply(peer, outcome);
                return;
            }
        };
        let entries = message_entries(&o.msg);
        let len = bytes.len() as u64;
        let id = self.swarm.behaviour_mut().sync.send_request(&peer, bytes);
        let state = self.peer(peer);
        state.bytes_sent += len;
        state.entries_sent += entries;
        self.pending.insert(
            id,
            Pending {
                purpose: o.purpose,
                sent_ms: now,
            },
        );
    }

    /// Sends what a reply made due, counts what it tells.
    fn after_reply(&mut self, peer: PeerId, outcome: ReplyOutcome<PeerId>) {
        if let Some(why) = outcome.protocol_error {
            self.refuse(peer, &why);
        }
        if let Some(stats) = outcome.session_done {
            self.counters.catchups += 1;
            if stats.full {
                self.counters.full_resyncs += 1;
                tracing::info!(%peer, entries = stats.entries_received, dropped = stats.dropped, "full resync done");
            } else if stats.entries_applied > 0 {
                tracing::debug!(%peer, applied = stats.entries_applied, "catch-up done");
            }
        }
        if let Some(stats) = outcome.antientropy_done {
            if stats.repaired() || stats.conflicts > 0 {
                tracing::warn!(
                    %peer,
                    differing_buckets = stats.differing_buckets,
                    repaired_here = stats.applied_here,
                    repaired_there = stats.applied_there,
                    entries_received = stats.entries_received,
                    entries_sent = stats.entries_sent,
                    conflicts = stats.conflicts,
                    "anti-entropy repaired a divergence the sync protocol had missed"
                );
            } else {
                tracing::debug!(%peer, compared = stats.compared, "anti-entropy exchange done");
            }
        }
        self.send_all(outcome.send);
        self.poll_wanted = true;
    }

    /// A reply to our request sent at `sent_ms`, stamped `peer_ms` by the peer (if it was).
    fn note_round_trip(&mut self, peer: PeerId, sent_ms: u64, peer_ms: Option<u64>) {
        if let Some(sample) = peer_ms
            .and_then(|peer_ms| OffsetSample::round_trip(sent_ms, peer_ms, self.cache.now_ms()))
        {
            self.note_clock(peer, sample);
        }
    }

    /// Adds a clock-offset sample for `peer`, logging when the estimate crosses the warning
    /// threshold or moves a lot past it (not at every message).
    fn note_clock(&mut self, peer: PeerId, sample: OffsetSample) {
        let state = self.peer(peer);
        let notice = state.clock.add(sample);
        let (node, best) = (state.node_id, state.clock.best());
        let Some(best) = best else {
            return;
        };
        let node = node.map_or_else(|| "-".to_string(), |n| n.to_string());
        let error_ms = best
            .error_ms
            .map_or_else(|| "unknown".to_string(), |e| e.to_string());
        match notice {
            Some(SkewNotice::Skewed) => tracing::warn!(
                %peer,
                node,
                clock_offset_ms = best.offset_ms,
                error_ms,
                "peer's clock differs from ours by more than {} ms (positive: it is ahead); \
                 TTLs expire by each node's own clock, so this node and the peer expire keys \
                 at different moments; while a node is ahead its writes win conflicts. Sync \
                 the clocks (NTP)",
                SKEW_WARN_MS
            ),
            Some(SkewNotice::Recovered) => tracing::info!(
                %peer,
                node,
                clock_offset_ms = best.offset_ms,
                "peer's clock is back in step with ours"
            ),
            None => {}
        }
    }

    fn refuse(&mut self, peer: PeerId, why: &str) {
        self.counters.refused_messages += 1;
        self.peer(peer).refused += 1;
        tracing::warn!(%peer, why, "refused a sync message");
    }

    fn on_request(&mut self, peer: PeerId, request: Vec<u8>, channel: ResponseChannel<Vec<u8>>) {
        self.peer(peer).bytes_received += request.len() as u64;
        if !self.peers.allow_request(peer) {
            self.refuse(peer, "request rate over the limit");
            return; // dropping the channel tells the peer no
        }
        let limits = self.config.cache.sync_limits;
        let msg = match SyncMessage::decode_timed(&request, &limits) {
            Ok((m, sent)) => {
                if let Some(sent) = sent {
                    self.note_clock(peer, OffsetSample::one_way(sent, self.cache.now_ms()));
                }
                m
            }
            Err(e) => {
                self.refuse(peer, &e.to_string());
                return;
            }
        };
        self.set_member(peer, true);
        self.peer(peer).entries_received += message_entries(&msg);
        let local_id = self.cache.node_id();
        match &msg {
            SyncMessage::Request(req) => self.note_acked(peer, req.vv.get(local_id)),
            SyncMessage::Push(push) => self.note_acked(peer, push.sender_vv.get(local_id)),
            _ => {}
        }
        let reply = match self
            .replication
            .on_request(&peer, local_id, msg, &mut self.cache)
        {
            Ok(reply) => reply,
            Err(dice_core::Error::WritesRefused(why)) => {
                // Our store cannot commit: the peer sends it again later (no reply is a no).
                tracing::debug!(%peer, %why, "not taking a peer's writes while ours are refused");
                return;
            }
            Err(e) => {
                self.refuse(peer, &e.to_string());
                return;
            }
        };
        let bytes = match &reply {
            None => Vec::new(),
            Some(r) => match r.encode_at(&limits, self.cache.now_ms()) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(%peer, error = %e, "cannot encode a reply");
                    return;
                }
            },
        };
        let entries = reply.as_ref().map_or(0, message_entries);
        let state = self.peer(peer);
        state.bytes_sent += bytes.len() as u64;
        state.entries_sent += entries;
        if self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, bytes)
            .is_err()
        {
            tracing::debug!(%peer, "peer went away before our reply");
        }
    }

    /// `peer` holds our own writes up to `seq` (its version vector says so).
    fn note_acked(&mut self, peer: PeerId, seq: u64) {
        self.acked.send_if_modified(|acked| {
            let known = acked.entry(peer).or_default();
            let raised = seq > *known;
            *known = (*known).max(seq);
            raised
        });
    }

    fn on_response(&mut self, peer: PeerId, id: OutboundRequestId, response: Vec<u8>) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        self.peer(peer).bytes_received += response.len() as u64;
        self.set_member(peer, true);
        let limits = self.config.cache.sync_limits;
        let reply = match SyncMessage::decode_timed(&response, &limits) {
            Ok((msg, sent)) => {
                self.note_round_trip(peer, pending.sent_ms, sent);
                self.peer(peer).entries_received += message_entries(&msg);
                if let SyncMessage::Ack(ack) = &msg {
                    self.note_acked(peer, ack.vv.get(self.cache.node_id()));
                }
                Ok(msg)
            }
            Err(e) => {
                self.refuse(peer, &e.to_string());
                Err(Failure::Malformed)
            }
        };
        let now = self.now();
        let outcome =
            self.replication
                .on_reply(&peer, pending.purpose, reply, &mut self.cache, now);
        self.after_reply(peer, outcome);
    }

    fn on_outbound_failure(
        &mut self,
        peer: PeerId,
        id: OutboundRequestId,
        error: request_response::OutboundFailure,
    ) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        // Not delivered (refused over the peer's rate, timed out, connection lost): the
        // replicator sends the same writes again after a pause; a session is dropped.
        let now = self.now();
        let outcome = self.replication.on_reply(
            &peer,
            pending.purpose,
            Err(Failure::NotDelivered),
            &mut self.cache,
            now,
        );
        self.after_reply(peer, outcome);
        if matches!(
            error,
            request_response::OutboundFailure::UnsupportedProtocols
        ) {
            let ours = sync_protocol(&self.config.cluster).unwrap_or_default();
            self.mark_foreign(
                peer,
                &format!(
                    "does not speak our sync protocol {ours}: another cluster, or a dice of \
                     another sync protocol version (this one speaks version {})",
                    dice_core::SYNC_PROTOCOL_VERSION
                ),
            );
        } else {
            tracing::debug!(%peer, %error, "sync request failed");
        }
    }

    fn mark_foreign(&mut self, peer: PeerId, why: &str) {
        self.counters.foreign_peers += 1;
        tracing::info!(%peer, why, "not a member of our cluster; disconnecting");
        self.set_member(peer, false);
        self.peer(peer).redial.cancel();
        self.known.remove(&peer);
        self.swarm.behaviour_mut().kad.remove_peer(&peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address);
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let remote = endpoint.get_remote_address().clone();
                if endpoint.is_dialer() {
                    if let Some(state) = self.peers.get_mut(&peer_id) {
                        state.dialing = false;
                    }
                    self.counters.opened_outbound += 1;
                } else {
                    self.counters.opened_inbound += 1;
                }
                // Connections of ours to this peer, not counting those closed at the bound.
                let before = (num_established.get() as usize - 1)
                    .saturating_sub(self.refused_open(&peer_id));
                if before == 0 && self.peers.connected_count() >= self.config.max_peers {
                    // At the bound: the peer (or Kademlia, for a query) goes elsewhere.
                    self.counters.over_max_peers += 1;
                    tracing::debug!(
                        peer = %peer_id,
                        address = %remote,
                        max_peers = self.config.max_peers,
                        "connection closed: at --max-peers"
                    );
                    self.over_max.insert(connection_id, peer_id);
                    self.swarm.close_connection(connection_id);
                    return;
                }
                self.peers.connected(peer_id, &remote, before + 1);
                self.set_gate();
                if before == 0 {
                    tracing::info!(peer = %peer_id, address = %remote, "connected");
                    // Writes durable before now reach the peer through its catch-up with us,
                    // later ones by push; we catch up with it unless already catching up.
                    let out = self.replication.connected(peer_id, &self.cache);
                    self.send_all(out);
                    self.poll_wanted = true;
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                if self.over_max.remove(&connection_id).is_some() {
                    // Never counted: only a member we hold no connection to is dialed later,
                    // when this node has room.
                    self.peers.closed_at_bound(&peer_id);
                    return;
                }
                let num_established =
                    (num_established as usize).saturating_sub(self.refused_open(&peer_id));
                let known = self.known.addrs(&peer_id).is_some();
                self.peers.closed(peer_id, num_established);
                self.set_gate();
                let member = self.peers.get(&peer_id).is_some_and(|s| s.member);
                if num_established == 0 && !member && !known {
                    // A stranger (or a peer of another cluster): forget it, so that peers
                    // that connect and leave cannot grow this map without bound.
                    self.peers.remove(&peer_id);
                    self.replication.forget(&peer_id);
                    return;
                }
                if num_established == 0 {
                    tracing::info!(peer = %peer_id, cause = ?cause.map(|c| c.to_string()), "disconnected");
                    self.replication.disconnected(&peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                let known = peer_id.is_some_and(|p| self.known.addrs(&p).is_some());
                let Some(state) = peer_id.and_then(|p| self.peers.get_mut(&p)) else {
                    tracing::debug!(peer = ?peer_id, %error, "dial failed");
                    return;
                };
                state.dialing = false;
                state.dial_failures += 1;
                // A member, or a peer found by mDNS or met before, that cannot be reached is
                // worth a line (the 1st, 2nd, 4th, 8th... failure in a row: a peer gone for
                // good does not fill the log).
                let failures = state.dial_failures;
                if (state.member || known) && failures.is_power_of_two() {
                    tracing::info!(peer = ?peer_id, failures, %error, "cannot reach a member");
                } else {
                    tracing::debug!(peer = ?peer_id, failures, %error, "dial failed");
                }
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                // With a cluster key, a stranger fails here (pnet or noise handshake); without
                // one, a host beyond the local networks (logged, rate-limited, by `LanOnly`).
                // One refused at the bound, before its handshake, is counted by the gate.
                if let libp2p::swarm::ListenError::Denied { cause } = &error
                    && cause.downcast_ref::<AtBound>().is_some()
                {
                    return;
                }
                self.counters.refused_connections += 1;
                if matches!(error, libp2p::swarm::ListenError::Denied { .. }) {
                    tracing::debug!(from = %send_back_addr, %error, "incoming connection refused");
                } else {
                    tracing::info!(from = %send_back_addr, %error, "incoming connection refused");
                }
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Sync(request_response::Event::Message { peer, message, .. }) => {
                self.peer(peer).alive();
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => self.on_request(peer, request, channel),
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => self.on_response(peer, request_id, response),
                }
            }
            BehaviourEvent::Sync(request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            }) => self.on_outbound_failure(peer, request_id, error),
            BehaviourEvent::Sync(request_response::Event::InboundFailure {
                peer, error, ..
            }) => {
                let refused = matches!(error, request_response::InboundFailure::Io(_));
                if refused {
                    self.refuse(peer, &error.to_string());
                } else {
                    tracing::debug!(%peer, %error, "inbound sync failure");
                }
            }
            BehaviourEvent::Sync(request_response::Event::ResponseSent { .. }) => {}
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocol_version != self.cluster_version {
                    self.mark_foreign(peer_id, "identifies as another cluster");
                    return;
                }
                let node_id = node_id_from_agent(&info.agent_version);
                let addrs: Vec<Multiaddr> = info
                    .listen_addrs
                    .iter()
                    .filter(|a| {
                        !a.iter()
                            .any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_unspecified()))
                    })
                    .cloned()
                    .collect();
                for a in &addrs {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, a.clone());
                }
                self.known.insert(peer_id, addrs);
                // Save now: a node killed right after meeting a peer must still find it again.
                self.known.save();
                self.set_member(peer_id, true);
                let state = self.peer(peer_id);
                state.node_id = node_id.or(state.node_id);
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (peer, addr) in found {
                    by_peer.entry(peer).or_default().push(addr);
                }
                for (peer, addrs) in by_peer {
                    if self.peers.is_blocked(&peer) || peer == *self.swarm.local_peer_id() {
                        continue;
                    }
                    // Remember the addresses and dial through the redial schedule: a first
                    // dial that fails (two nodes dialing each other at once, a slow start) is
                    // retried with backoff, as mDNS does not announce the same peer again.
                    self.known
                        .insert(peer, addrs.iter().map(|a| split_peer_id(a).0));
                    let state = self.peer(peer);
                    if state.connections == 0 && !state.redial.is_scheduled() {
                        state.redial.due_now(Instant::now());
                    }
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, addresses, ..
            }) if !self.peers.is_connected(&peer)
                && !self.peers.is_blocked(&peer)
                && peer != *self.swarm.local_peer_id() =>
            {
                self.known.insert(peer, addresses.iter().cloned());
                self.set_member(peer, true);
                self.peer(peer).redial.due_now(Instant::now());
            }
            BehaviourEvent::Gossipsub(event) => self.on_gossipsub_event(event),
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(_),
                ..
            }) => {
                self.peer(peer).alive();
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Err(error),
                ..
            }) if !matches!(error, ping::Failure::Unsupported) => {
                tracing::info!(%peer, %error, "ping failed; disconnecting");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            _ => {}
        }
    }
}

impl EventLoop {
    fn on_gossipsub_event(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let gs = &mut self.swarm.behaviour_mut().gossipsub;
                if message.topic == self.gossip.topic() {
                    let limits = self.config.cache.sync_limits;
                    let peers = &self.peers;
                    let received = self.gossip.on_message(
                        gs,
                        &self.cache,
                        &limits,
                        &message_id,
                        &propagation_source,
                        message,
                        |p| peers.get(p).and_then(|s| s.node_id),
                    );
                    if let Some((author, seq)) = received.author_holds_ours {
                        self.note_acked(author, seq);
                    }
                } else if self.pubsub.is_topic(&message.topic) {
                    self.pubsub
                        .on_message(gs, &message_id, &propagation_source, message);
                } else {
                    gs.report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        gossipsub::MessageAcceptance::Ignore,
                    );
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic } if topic == self.gossip.topic() => {
                // A neighbour found the cluster larger than its bound: the cluster is past
                // it, and writes spread by gossip only among members in the topic.
                let why = format!("neighbour {peer_id} joined");
                self.gossip
                    .join(&mut self.swarm.behaviour_mut().gossipsub, &self.cache, &why);
            }
            _ => {}
        }
    }
}

fn message_entries(msg: &SyncMessage) -> u64 {
    match msg {
        SyncMessage::Page(p) => p.entries.len() as u64,
        SyncMessage::Push(p) => p.entries.len() as u64,
        SyncMessage::AntiEntropy(m) => m.entry_count() as u64,
        _ => 0,
    }
}
