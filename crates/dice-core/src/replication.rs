//! Per-peer replication policy as a sans-IO state machine: what each peer acknowledged, the
//! push in flight, pacing and retry of pushes, and when to catch up with whom.
//!
//! The network layer (`dice-net`'s event loop) and the simulation tests drive the same
//! [`Replicator`]: they tell it what happened (a peer connected, a reply came, a request
//! failed, time passed) and send what it returns. It never touches a socket or a clock: `now`
//! is a [`Duration`] since any fixed start the driver picks.
//!
//! Replication, per connected member:
//!
//! * **Push**: our own writes after what the peer acknowledged, up to the shareable seq (only
//!   durable writes leave a node), one push in flight at a time, pushes at least
//!   `min_push_interval` apart so that fast writes go out in batches. The peer answers with an
//!   [`crate::sync::Ack`]; a push that fails (lost, timed out, refused over the peer's rate)
//!   is sent again, from the last acknowledged seq, after `push_retry_delay`. A push refused
//!   because we are behind the peer's floors starts a catch-up (a full resync).
//! * **Catch-up**: one session when a peer connects (if no session is running: several peers
//!   answering at once would send the same entries several times), and one every
//!   `catchup_interval` with the next member in turn.
//! * **Anti-entropy**: every `antientropy_interval`, one exchange of bucket digests
//!   ([`crate::antientropy`]) with the next member in turn that has neither a catch-up nor an
//!   exchange running: the safety net under pushes and catch-up.

use crate::antientropy::{AeSession, AeStats, AeStep};
use crate::replica::Replica;
use crate::sync::{SessionStats, SessionStep, SyncMessage, SyncSession};
use crate::{Cache, Result};
use std::collections::BTreeMap;
use std::time::Duration;

/// How a [`Replicator`] paces its work. Every field has a documented default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicationConfig {
    /// Least time between two pushes to one peer (default 250 µs).
    pub min_push_interval: Duration,
    /// Pause before pushing again to a peer that did not take a push (default 100 ms).
    pub push_retry_delay: Duration,
    /// How often to catch up with one member (default 5 s).
    pub catchup_interval: Duration,
    /// How often to compare digests with one member (default 30 s).
    pub antientropy_interval: Duration,
    /// While [`SyncEndpoint::acknowledgement_probe`] offers a probe (tombstones wait for
    /// members' acknowledgements under a memory limit), how often to send it to every
    /// member with no push in flight (default 500 ms).
    pub probe_interval: Duration,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            min_push_interval: Duration::from_micros(250),
            push_retry_delay: Duration::from_millis(100),
            catchup_interval: Duration::from_secs(5),
            antientropy_interval: Duration::from_secs(30),
            probe_interval: Duration::from_millis(500),
        }
    }
}

impl ReplicationConfig {
    /// The defaults with another catch-up interval.
    pub fn with_catchup_interval(mut self, every: Duration) -> Self {
        self.catchup_interval = every;
        self
    }

    /// The same with another anti-entropy interval.
    pub fn with_antientropy_interval(mut self, every: Duration) -> Self {
        self.antientropy_interval = every;
        self
    }
}

/// What a replica must offer a [`Replicator`]: implemented by [`Cache`] (which persists
/// what it applies) and by a bare [`Replica`] (for simulations).
pub trait SyncEndpoint {
    /// The highest seq of our own writes that may leave this node.
    fn shareable_seq(&self) -> u64;
    /// A push of our writes after `after_seq`, and the last seq it covers.
    fn push_after(&self, after_seq: u64) -> Option<(SyncMessage, u64)>;
    /// Starts a catch-up session.
    fn start_sync(&self) -> (SyncSession, SyncMessage);
    /// Feeds a catch-up answer to a session.
    fn continue_sync(&mut self, session: &mut SyncSession, msg: SyncMessage)
    -> Result<SessionStep>;
    /// Handles a message that is not part of one of our sessions (a request, a push, an ack,
    /// a refusal, an anti-entropy request); returns the reply to send, if any.
    fn handle_sync(&mut self, msg: SyncMessage) -> Result<Option<SyncMessage>>;
    /// A push carrying no write, sent only for the acknowledgement it brings back, when this
    /// replica needs its members' acknowledgements sooner than its writes bring them (see
    /// [`Cache::acknowledgement_probe`]); `None` (the default) when it does not.
    fn acknowledgement_probe(&self) -> Option<SyncMessage> {
        None
    }
    /// Starts an anti-entropy exchange; `None` while we hold writes past our version vector.
    fn start_antientropy(&self) -> Option<(AeSession, SyncMessage)>;
    /// Feeds an anti-entropy answer to an exchange.
    fn continue_antientropy(&mut self, session: &mut AeSession, msg: SyncMessage)
    -> Result<AeStep>;
}

impl SyncEndpoint for Cache {
    fn shareable_seq(&self) -> u64 {
        Cache::shareable_seq(self)
    }
    fn push_after(&self, after_seq: u64) -> Option<(SyncMessage, u64)> {
        Cache::push_after(self, after_seq)
    }
    fn start_sync(&self) -> (SyncSession, SyncMessage) {
        Cache::start_sync(self)
    }
    fn continue_sync(
        &mut self,
        session: &mut SyncSession,
        msg: SyncMessage,
    ) -> Result<SessionStep> {
        Cache::continue_sync(self, session, msg)
    }
    fn handle_sync(&mut self, msg: SyncMessage) -> Result<Option<SyncMessage>> {
        Cache::handle_sync(self, msg)
    }
    fn acknowledgement_probe(&self) -> Option<SyncMessage> {
        Cache::acknowledgement_probe(self)
    }
    fn start_antientropy(&self) -> Option<(AeSession, SyncMessage)> {
        Cache::start_antientropy(self)
    }
    fn continue_antientropy(
        &mut self,
        session: &mut AeSession,
        msg: SyncMessage,
    ) -> Result<AeStep> {
        Cache::continue_antientropy(self, session, msg)
    }
}

/// A bare replica as an endpoint, with the clock of the simulation it lives in.
#[derive(Debug)]
pub struct ReplicaEndpoint<'a> {
    /// The replica.
    pub replica: &'a mut Replica,
    /// Page size of catch-up and pushes.
    pub limits: crate::SyncLimits,
    /// Wall-clock milliseconds to apply entries at.
    pub now_ms: u64,
}

impl SyncEndpoint for ReplicaEndpoint<'_> {
    fn shareable_seq(&self) -> u64 {
        self.replica.shareable_seq()
    }
    fn push_after(&self, after_seq: u64) -> Option<(SyncMessage, u64)> {
        self.replica
            .push_after(after_seq, self.limits.page_max_entries)
    }
    fn start_sync(&self) -> (SyncSession, SyncMessage) {
        SyncSession::start(self.replica, &self.limits)
    }
    fn continue_sync(
        &mut self,
        session: &mut SyncSession,
        msg: SyncMessage,
    ) -> Result<SessionStep> {
        session.handle(self.replica, msg, self.now_ms)
    }
    fn handle_sync(&mut self, msg: SyncMessage) -> Result<Option<SyncMessage>> {
        match msg {
            SyncMessage::Request(req) => Ok(Some(self.replica.serve_noting(
                &req,
                &self.limits,
                self.now_ms,
            ))),
            SyncMessage::Push(push) => self.replica.receive_push(push, self.now_ms),
            SyncMessage::Ack(ack) => {
                self.replica
                    .note_member(ack.from, Some(&ack.vv), self.now_ms);
                self.replica
                    .note_pressure(ack.from, ack.pressed, self.now_ms);
                Ok(None)
            }
            SyncMessage::Refused(crate::sync::Refusal::YouAreBehind { .. }) => {
                self.replica.mark_resync_needed();
                Ok(None)
            }
            SyncMessage::Refused(crate::sync::Refusal::IAmBehind) => Ok(None),
            SyncMessage::Page(_) => Err(crate::Error::Protocol(
                "a catch-up page outside of a session".into(),
            )),
            SyncMessage::AntiEntropy(m) => {
                crate::antientropy::serve(self.replica, m, &self.limits, self.now_ms).map(Some)
            }
        }
    }
    fn start_antientropy(&self) -> Option<(AeSession, SyncMessage)> {
        AeSession::start(self.replica)
    }
    fn continue_antientropy(
        &mut self,
        session: &mut AeSession,
        msg: SyncMessage,
    ) -> Result<AeStep> {
        session.handle(self.replica, msg, &self.limits, self.now_ms)
    }
}

/// What a request sent to a peer was for; the driver gives it back with the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A push covering our writes up to this seq.
    Push {
        /// The last seq the push covers.
        last_seq: u64,
    },
    /// A step of our catch-up session with the peer.
    CatchUp {
        /// Which session, and which of its requests: a reply to an abandoned session or to
        /// an earlier request of this one (the connection closed meanwhile, a late or
        /// repeated message) is ignored.
        session: u64,
        /// The request's number within the session.
        step: u64,
    },
    /// A step of our anti-entropy exchange with the peer.
    AntiEntropy {
        /// Which exchange, as `CatchUp::session`.
        session: u64,
        /// The request's number within the exchange.
        step: u64,
    },
}

/// A request to send.
#[derive(Debug)]
pub struct Outgoing<K> {
    /// The peer.
    pub to: K,
    /// The message.
    pub msg: SyncMessage,
    /// What it is for (give it back with the reply).
    pub purpose: Purpose,
}

/// Why a request got no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Lost, timed out, refused over the peer's rate limit, connection closed.
    NotDelivered,
    /// The reply could not be decoded or broke the protocol.
    Malformed,
}

/// What happened with a reply, for the driver's counters and logs.
#[derive(Debug, Default)]
pub struct ReplyOutcome<K> {
    /// Requests to send now.
    pub send: Vec<Outgoing<K>>,
    /// A catch-up session that ended, with its figures.
    pub session_done: Option<SessionStats>,
    /// An anti-entropy exchange that ended, with its figures.
    pub antientropy_done: Option<AeStats>,
    /// The reply broke the protocol (count it against the peer).
    pub protocol_error: Option<String>,
}

/// Replication state of one peer.
#[derive(Debug, Default)]
pub struct PeerReplication {
    /// Connected now.
    pub connected: bool,
    /// Speaks our cluster's protocol (the driver decides, e.g. after identify).
    pub member: bool,
    /// Our own seq the peer is known to hold.
    pub acked_seq: u64,
    /// The peer's own latest seq, as far as we know.
    pub their_seq: u64,
    push_in_flight: bool,
    push_not_before: Duration,
    session: Option<(u64, u64, SyncSession)>,
    antientropy: Option<(u64, u64, AeSession)>,
}

impl PeerReplication {
    /// Whether a catch-up session with this peer is running.
    pub fn in_session(&self) -> bool {
        self.session.is_some()
    }

    /// Whether an anti-entropy exchange with this peer is running.
    pub fn in_antientropy(&self) -> bool {
        self.antientropy.is_some()
    }
}

/// The replication state machine of one node: every peer's [`PeerReplication`], pushes and
/// catch-up scheduling. `K` names peers (a libp2p `PeerId`, a simulation's index).
#[derive(Debug)]
pub struct Replicator<K> {
    config: ReplicationConfig,
    peers: BTreeMap<K, PeerReplication>,
    next_catch_up: Duration,
    /// Round-robin position of the periodic catch-up.
    turn: usize,
    next_antientropy: Duration,
    /// Round-robin position of the periodic anti-entropy exchange.
    antientropy_turn: usize,
    /// Id of the next session started.
    next_session: u64,
    /// When acknowledgement probes may go out next.
    next_probe: Duration,
}

impl<K: Ord + Clone> Replicator<K> {
    /// A replicator with no peers; the first periodic catch-up is due one interval after `now`.
    pub fn new(config: ReplicationConfig, now: Duration) -> Self {
        Replicator {
            config,
            peers: BTreeMap::new(),
            next_catch_up: now + config.catchup_interval,
            turn: 0,
            next_antientropy: now + config.antientropy_interval,
            antientropy_turn: 0,
            next_session: 1,
            next_probe: now,
        }
    }

    /// The state of a peer.
    pub fn peer(&self, k: &K) -> Option<&PeerReplication> {
        self.peers.get(k)
    }

    /// Every peer known.
    pub fn peers(&self) -> impl Iterator<Item = (&K, &PeerReplication)> {
        self.peers.iter()
    }

    /// Forgets a peer (e.g. a stranger that disconnected).
    pub fn forget(&mut self, k: &K) {
        self.peers.remove(k);
    }

    /// Marks a peer as a member of our cluster (or not).
    pub fn set_member(&mut self, k: &K, member: bool) {
        self.peers.entry(k.clone()).or_default().member = member;
    }

    fn connected_members(&self) -> impl Iterator<Item = &K> + '_ {
        self.peers
            .iter()
            .filter(|(_, p)| p.connected && p.member)
            .map(|(k, _)| k)
    }

    /// A connection to `k` opened. Writes durable before now reach it through its catch-up
    /// with us; we catch up with it unless a session is already running with someone.
    pub fn connected(&mut self, k: K, end: &impl SyncEndpoint) -> Vec<Outgoing<K>> {
        let any_session = self.peers.values().any(|p| p.session.is_some());
        let shareable = end.shareable_seq();
        let p = self.peers.entry(k.clone()).or_default();
        p.connected = true;
        p.acked_seq = p.acked_seq.max(shareable);
        if any_session {
            return Vec::new();
        }
        self.start_catch_up(k, end).into_iter().collect()
    }

    /// The last connection to `k` closed: its push and session are dropped.
    pub fn disconnected(&mut self, k: &K) {
        if let Some(p) = self.peers.get_mut(k) {
            p.connected = false;
            p.push_in_flight = false;
            p.session = None;
            p.antientropy = None;
        }
    }

    /// Stops any session or exchange with `k` (a partition made by the driver, a blocked
    /// peer).
    pub fn abandon_session(&mut self, k: &K) {
        if let Some(p) = self.peers.get_mut(k) {
            p.session = None;
            p.antientropy = None;
        }
    }

    /// Starts an anti-entropy exchange with `k` unless one (or a catch-up) is running, or we
    /// hold writes past our version vector (a catch-up is due first).
    pub fn start_antientropy(&mut self, k: K, end: &impl SyncEndpoint) -> Option<Outgoing<K>> {
        let id = self.next_session;
        let p = self.peers.entry(k.clone()).or_default();
        if p.antientropy.is_some() || p.session.is_some() {
            return None;
        }
        let (session, msg) = end.start_antientropy()?;
        p.antientropy = Some((id, 0, session));
        self.next_session += 1;
        Some(Outgoing {
            to: k,
            msg,
            purpose: Purpose::AntiEntropy {
                session: id,
                step: 0,
            },
        })
    }

    /// Starts a catch-up with `k` unless one is running.
    pub fn start_catch_up(&mut self, k: K, end: &impl SyncEndpoint) -> Option<Outgoing<K>> {
        let id = self.next_session;
        let p = self.peers.entry(k.clone()).or_default();
        if p.session.is_some() {
            return None;
        }
        let (session, msg) = end.start_sync();
        p.session = Some((id, 0, session));
        self.next_session += 1;
        Some(Outgoing {
            to: k,
            msg,
            purpose: Purpose::CatchUp {
                session: id,
                step: 0,
            },
        })
    }

    /// Starts a catch-up with every connected member.
    pub fn catch_up_all(&mut self, end: &impl SyncEndpoint) -> Vec<Outgoing<K>> {
        let members: Vec<K> = self.connected_members().cloned().collect();
        members
            .into_iter()
            .filter_map(|k| self.start_catch_up(k, end))
            .collect()
    }

    /// The probe to every connected member with no push in flight: a push of nothing new
    /// (covering up to what the member acknowledged), answered by an ack with its version
    /// vector. One in flight per member, as for pushes.
    fn probe_members(&mut self, probe: SyncMessage) -> Vec<Outgoing<K>> {
        let mut out = Vec::new();
        for (k, p) in &mut self.peers {
            if !p.connected || !p.member || p.push_in_flight {
                continue;
            }
            p.push_in_flight = true;
            out.push(Outgoing {
                to: k.clone(),
                msg: probe.clone(),
                purpose: Purpose::Push {
                    last_seq: p.acked_seq,
                },
            });
        }
        out
    }

    /// Whatever is due at `now`: pushes to members behind our shareable seq, and the periodic
    /// catch-up. Returns the requests and when to call again at the latest (`None`: when
    /// something happens).
    pub fn poll(
        &mut self,
        end: &impl SyncEndpoint,
        now: Duration,
    ) -> (Vec<Outgoing<K>>, Option<Duration>) {
        let mut out = Vec::new();
        let shareable = end.shareable_seq();
        let mut wake: Option<Duration> = None;
        let mut due = Vec::new();
        for (k, p) in &self.peers {
            if !p.connected || !p.member || p.push_in_flight || p.acked_seq >= shareable {
                continue;
            }
            if p.push_not_before > now {
                wake = Some(wake.map_or(p.push_not_before, |w| w.min(p.push_not_before)));
                continue;
            }
            due.push((k.clone(), p.acked_seq));
        }
        for (k, acked) in due {
            let Some((msg, last_seq)) = end.push_after(acked) else {
                continue;
            };
            if let Some(p) = self.peers.get_mut(&k) {
                p.push_in_flight = true;
                p.push_not_before = now + self.config.min_push_interval;
            }
            out.push(Outgoing {
                to: k,
                msg,
                purpose: Purpose::Push { last_seq },
            });
        }
        // Asked for (and built) only when due; after a probe, come back when the next is.
        if now >= self.next_probe
            && let Some(probe) = end.acknowledgement_probe()
        {
            self.next_probe = now + self.config.probe_interval;
            out.extend(self.probe_members(probe));
        }
        if self.next_probe > now {
            wake = Some(wake.map_or(self.next_probe, |w| w.min(self.next_probe)));
        }
        if now >= self.next_catch_up {
            self.next_catch_up = now + self.config.catchup_interval;
            let idle: Vec<K> = self
                .peers
                .iter()
                .filter(|(_, p)| p.connected && p.member && p.session.is_none())
                .map(|(k, _)| k.clone())
                .collect();
            if !idle.is_empty() {
                self.turn = self.turn.wrapping_add(1);
                let k = idle[self.turn % idle.len()].clone();
                out.extend(self.start_catch_up(k, end));
            }
        }
        if now >= self.next_antientropy {
            self.next_antientropy = now + self.config.antientropy_interval;
            let idle: Vec<K> = self
                .peers
                .iter()
                .filter(|(_, p)| {
                    p.connected && p.member && p.session.is_none() && p.antientropy.is_none()
                })
                .map(|(k, _)| k.clone())
                .collect();
            if !idle.is_empty() {
                self.antientropy_turn = self.antientropy_turn.wrapping_add(1);
                let k = idle[self.antientropy_turn % idle.len()].clone();
                out.extend(self.start_antientropy(k, end));
            }
        }
        let next = self.next_catch_up.min(self.next_antientropy);
        let wake = Some(wake.map_or(next, |w| w.min(next)));
        (out, wake)
    }

    /// A message from `k` that is not a reply to us (a request, a push, an ack): notes what it
    /// tells about the peer, and returns the reply to send back, if any.
    pub fn on_request(
        &mut self,
        k: &K,
        our_id: crate::NodeId,
        msg: SyncMessage,
        end: &mut impl SyncEndpoint,
    ) -> Result<Option<SyncMessage>> {
        let p = self.peers.entry(k.clone()).or_default();
        p.member = true;
        match &msg {
            SyncMessage::Request(req) => {
                // What the asker holds of ours: no need to push it again.
                p.acked_seq = p.acked_seq.max(req.vv.get(our_id));
                p.their_seq = p.their_seq.max(req.vv.get(req.from));
            }
            SyncMessage::Push(push) => {
                p.their_seq = p.their_seq.max(push.sender_vv.get(push.from));
            }
            _ => {}
        }
        end.handle_sync(msg)
    }

    /// The reply to a request we sent to `k` for `purpose`, or why none came.
    pub fn on_reply(
        &mut self,
        k: &K,
        purpose: Purpose,
        reply: std::result::Result<SyncMessage, Failure>,
        end: &mut impl SyncEndpoint,
        now: Duration,
    ) -> ReplyOutcome<K> {
        let mut outcome = ReplyOutcome {
            send: Vec::new(),
            session_done: None,
            antientropy_done: None,
            protocol_error: None,
        };
        let retry = self.config.push_retry_delay;
        let Some(p) = self.peers.get_mut(k) else {
            return outcome;
        };
        match (purpose, reply) {
            (Purpose::Push { last_seq }, Ok(msg @ SyncMessage::Ack(_))) => {
                p.push_in_flight = false;
                p.acked_seq = p.acked_seq.max(last_seq);
                if let Err(e) = end.handle_sync(msg) {
                    outcome.protocol_error = Some(e.to_string());
                }
            }
            (Purpose::Push { .. }, Ok(msg @ SyncMessage::Refused(_))) => {
                // We are behind the peer's floors: resync from it.
                p.push_in_flight = false;
                p.push_not_before = now + retry;
                if let Err(e) = end.handle_sync(msg) {
                    outcome.protocol_error = Some(e.to_string());
                }
                outcome.send.extend(self.start_catch_up(k.clone(), end));
            }
            (Purpose::Push { .. }, Ok(_)) => {
                p.push_in_flight = false;
                p.push_not_before = now + retry;
                outcome.protocol_error = Some("expected an ack or a refusal to a push".into());
            }
            (Purpose::Push { .. }, Err(_)) => {
                // Not delivered: the same writes go again after a pause, from the last
                // acknowledged seq.
                p.push_in_flight = false;
                p.push_not_before = now + retry;
            }
            (Purpose::CatchUp { session: id, step }, Ok(msg)) => {
                let Some((_, _, mut session)) = p
                    .session
                    .take_if(|(current, at, _)| *current == id && *at == step)
                else {
                    return outcome;
                };
                if let SyncMessage::Page(page) = &msg {
                    p.their_seq = p.their_seq.max(page.covered.get(page.from));
                }
                match end.continue_sync(&mut session, msg) {
                    Ok(SessionStep::Send(next)) => {
                        if let Some(p) = self.peers.get_mut(k) {
                            p.session = Some((id, step + 1, session));
                        }
                        outcome.send.push(Outgoing {
                            to: k.clone(),
                            msg: next,
                            purpose: Purpose::CatchUp {
                                session: id,
                                step: step + 1,
                            },
                        });
                    }
                    Ok(SessionStep::Done(stats)) => outcome.session_done = Some(stats),
                    Err(crate::Error::WritesRefused(_)) => {}
                    Err(e) => outcome.protocol_error = Some(e.to_string()),
                }
            }
            (Purpose::CatchUp { session: id, step }, Err(failure)) => {
                if p.session
                    .as_ref()
                    .is_none_or(|(current, at, _)| *current != id || *at != step)
                {
                    return outcome;
                }
                p.session = None;
                if failure == Failure::Malformed {
                    outcome.protocol_error = Some("malformed catch-up reply".into());
                }
            }
            (Purpose::AntiEntropy { session: id, step }, Ok(msg)) => {
                let Some((_, _, mut session)) = p
                    .antientropy
                    .take_if(|(current, at, _)| *current == id && *at == step)
                else {
                    return outcome;
                };
                match end.continue_antientropy(&mut session, msg) {
                    Ok(AeStep::Send(next)) => {
                        if let Some(p) = self.peers.get_mut(k) {
                            p.antientropy = Some((id, step + 1, session));
                        }
                        outcome.send.push(Outgoing {
                            to: k.clone(),
                            msg: next,
                            purpose: Purpose::AntiEntropy {
                                session: id,
                                step: step + 1,
                            },
                        });
                    }
                    Ok(AeStep::Done(stats)) => outcome.antientropy_done = Some(stats),
                    Err(crate::Error::WritesRefused(_)) => {}
                    Err(e) => outcome.protocol_error = Some(e.to_string()),
                }
            }
            (Purpose::AntiEntropy { session: id, step }, Err(failure)) => {
                if p.antientropy
                    .as_ref()
                    .is_none_or(|(current, at, _)| *current != id || *at != step)
                {
                    return outcome;
                }
                p.antientropy = None;
                if failure == Failure::Malformed {
                    outcome.protocol_error = Some("malformed anti-entropy reply".into());
                }
            }
        }
        outcome
    }
}
