//! The peer table: what the node knows of every peer it met (connections, address, traffic,
//! clock offset), one redial backoff for peers and bootstrap addresses alike, liveness, and
//! the per-peer inbound rate limit. No I/O: the event loop asks it what is due and acts.

use dice_core::NodeId;
use dice_core::skew::ClockOffset;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// First pause before redialing, after a failure or a disconnection.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest pause between two dials of one peer or address.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A connection that lasted this long resets its peer's redial pause.
const LASTED: Duration = Duration::from_secs(10);

/// When to dial next: due at once, or after a pause that doubles with every try, up to
/// [`MAX_BACKOFF`]; a connection resets it.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Option<Instant>,
    delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: None,
            delay: FIRST_BACKOFF,
        }
    }
}

impl Backoff {
    /// Due at once.
    pub(crate) fn due_now(&mut self, now: Instant) {
        self.next = Some(now);
    }

    /// Due after the current pause (a connection just closed).
    pub(crate) fn due_after_pause(&mut self, now: Instant) {
        self.next = Some(now + self.delay);
    }

    /// Not to be dialed (connected, or not worth dialing).
    pub(crate) fn cancel(&mut self) {
        self.next = None;
    }

    /// A connection succeeded: no dial due, the next pause is the first one again.
    pub(crate) fn reset(&mut self) {
        self.next = None;
        self.delay = FIRST_BACKOFF;
    }

    /// Whether a dial is scheduled at all.
    pub(crate) fn is_scheduled(&self) -> bool {
        self.next.is_some()
    }

    /// If a dial is due at `now`, takes it: the next one is due a pause later, and the pause
    /// doubles.
    fn take_due(&mut self, now: Instant) -> bool {
        if self.next.is_none_or(|t| t > now) {
            return false;
        }
        self.next = Some(now + self.delay);
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
        true
    }
}

/// A token bucket bounding one peer's inbound request rate.
#[derive(Debug)]
struct RateLimit {
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(burst: f64) -> Self {
        RateLimit {
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn allow(&mut self, per_sec: f64) -> bool {
        let now = Instant::now();
        let burst = per_sec * 2.0;
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * per_sec).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the node knows of one peer.
#[derive(Debug)]
pub(crate) struct PeerState {
    pub(crate) node_id: Option<NodeId>,
    pub(crate) connections: usize,
    pub(crate) address: Option<Multiaddr>,
    /// Speaks our cluster's protocol (identified or synced with).
    pub(crate) member: bool,
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_received: u64,
    pub(crate) entries_sent: u64,
    pub(crate) entries_received: u64,
    pub(crate) refused: u64,
    /// Estimate of the peer's clock offset from ours.
    pub(crate) clock: ClockOffset,
    rate: RateLimit,
    pub(crate) redial: Backoff,
    /// A dial of ours to the peer is in flight: no other is taken from `redial` until it
    /// ends (taking one would only be refused by the swarm, and double the pause for nothing:
    /// a dial whose packets get no answer lasts the whole transport timeout).
    pub(crate) dialing: bool,
    /// Dials of ours that failed since the peer was last connected.
    pub(crate) dial_failures: u32,
    /// Last time the peer answered a ping or sent us anything.
    last_alive: Instant,
    /// When the current connection opened.
    connected_at: Option<Instant>,
}

impl PeerState {
    fn new(burst: f64) -> Self {
        PeerState {
            node_id: None,
            connections: 0,
            address: None,
            member: false,
            bytes_sent: 0,
            bytes_received: 0,
            entries_sent: 0,
            entries_received: 0,
            refused: 0,
            clock: ClockOffset::default(),
            rate: RateLimit::new(burst),
            redial: Backoff::default(),
            dialing: false,
            dial_failures: 0,
            last_alive: Instant::now(),
            connected_at: None,
        }
    }

    /// The peer answered or sent something.
    pub(crate) fn alive(&mut self) {
        self.last_alive = Instant::now();
    }
}

/// A `--peer` address without a peer id: dialed with backoff until a connection to it opens.
#[derive(Debug)]
struct BootstrapAddr {
    addr: Multiaddr,
    redial: Backoff,
    done: bool,
}

/// Splits a trailing `/p2p/<peer id>` off an address.
pub(crate) fn split_peer_id(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut addr = addr.clone();
    match addr.pop() {
        Some(Protocol::P2p(peer)) => (addr, Some(peer)),
        Some(other) => {
            addr.push(other);
            (addr, None)
        }
        None => (addr, None),
    }
}

/// Dials that are due.
#[derive(Debug, Default)]
pub(crate) struct DueDials {
    /// Known peers to dial.
    pub(crate) peers: Vec<PeerId>,
    /// Bootstrap addresses (no peer id) to dial.
    pub(crate) addrs: Vec<Multiaddr>,
}

/// Every peer met, the bootstrap addresses, the blocked peers.
#[derive(Debug)]
pub(crate) struct PeerTable {
    peers: HashMap<PeerId, PeerState>,
    bootstrap: Vec<BootstrapAddr>,
    blocked: HashSet<PeerId>,
    /// Inbound requests allowed per peer per second.
    per_sec: f64,
    /// A connected peer silent for longer is disconnected.
    silence_limit: Duration,
}

impl PeerTable {
    /// An empty table: `max_requests_per_sec` per peer (burst: twice that); peers silent for
    /// longer than `silence_limit` are reported by [`PeerTable::take_silent`].
    pub(crate) fn new(max_requests_per_sec: u32, silence_limit: Duration) -> Self {
        PeerTable {
            peers: HashMap::new(),
            bootstrap: Vec::new(),
            blocked: HashSet::new(),
            per_sec: f64::from(max_requests_per_sec.max(1)),
            silence_limit,
        }
    }

    /// The state of `peer`, made if new.
    pub(crate) fn peer(&mut self, peer: PeerId) -> &mut PeerState {
        let burst = self.per_sec * 2.0;
        self.peers
            .entry(peer)
            .or_insert_with(|| PeerState::new(burst))
    }

    /// The state of `peer`, if known.
    pub(crate) fn get(&self, peer: &PeerId) -> Option<&PeerState> {
        self.peers.get(peer)
    }

    /// The state of `peer`, if known, to change.
    pub(crate) fn get_mut(&mut self, peer: &PeerId) -> Option<&mut PeerState> {
        self.peers.get_mut(peer)
    }

    /// Every peer known.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&PeerId, &PeerState)> {
        self.peers.iter()
    }

    /// Forgets a peer.
    pub(crate) fn remove(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// Whether `peer` has a connection open.
    pub(crate) fn is_connected(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|s| s.connections > 0)
    }

    /// How many peers have a connection open.
    pub(crate) fn connected_count(&self) -> usize {
        self.peers.values().filter(|s| s.connections > 0).count()
    }

    /// Whether `peer` is blocked.
    pub(crate) fn is_blocked(&self, peer: &PeerId) -> bool {
        self.blocked.contains(peer)
    }

    /// Blocks `peer`: it is not dialed until unblocked.
    pub(crate) fn block(&mut self, peer: PeerId) {
        self.blocked.insert(peer);
    }

    /// Unblocks `peer` and dials it at once.
    pub(crate) fn unblock(&mut self, peer: PeerId) {
        self.blocked.remove(&peer);
        let state = self.peer(peer);
        state.redial.reset();
        state.redial.due_now(Instant::now());
    }

    /// Adds a bootstrap address without a peer id, due at once.
    pub(crate) fn add_bootstrap(&mut self, addr: Multiaddr) {
        let mut redial = Backoff::default();
        redial.due_now(Instant::now());
        self.bootstrap.push(BootstrapAddr {
            addr,
            redial,
            done: false,
        });
    }

    /// Whether an inbound request from `peer` is within its rate.
    pub(crate) fn allow_request(&mut self, peer: PeerId) -> bool {
        let per_sec = self.per_sec;
        self.peer(peer).rate.allow(per_sec)
    }

    /// A connection to `peer` at `remote` opened; it now has `connections`. Bootstrap
    /// addresses it was dialed by are done.
    pub(crate) fn connected(&mut self, peer: PeerId, remote: &Multiaddr, connections: usize) {
        let (bare_remote, _) = split_peer_id(remote);
        for b in &mut self.bootstrap {
            if split_peer_id(&b.addr).0 == bare_remote {
                b.done = true;
            }
        }
        let state = self.peer(peer);
        state.connections = connections;
        state.address = Some(bare_remote);
        // The pause is reset only once the connection has lasted (see `closed`): a peer at
        // its `--max-peers` closes new connections at once, and must not be redialed at the
        // first pause forever.
        state.redial.cancel();
        state.dial_failures = 0;
        state.connected_at.get_or_insert_with(Instant::now);
        state.alive();
    }

    /// A connection to `peer` closed; `connections` remain. A member not blocked is redialed
    /// after a pause once none remain: the first pause if the connection had lasted
    /// [`LASTED`], else the next, longer one.
    pub(crate) fn closed(&mut self, peer: PeerId, connections: usize) {
        let blocked = self.blocked.contains(&peer);
        let state = self.peer(peer);
        state.connections = connections;
        if connections > 0 {
            return;
        }
        if state
            .connected_at
            .take()
            .is_some_and(|t| t.elapsed() >= LASTED)
        {
            state.redial.reset();
        }
        if state.member && !blocked {
            state.redial.due_after_pause(Instant::now());
        }
    }

    /// A connection to `peer` was closed at once because this node was at its bound: a
    /// member we hold no connection to is dialed after a pause (when this node has room).
    pub(crate) fn closed_at_bound(&mut self, peer: &PeerId) {
        let blocked = self.blocked.contains(peer);
        if let Some(state) = self.peers.get_mut(peer)
            && state.connections == 0
            && state.member
            && !blocked
            && !state.redial.is_scheduled()
        {
            state.redial.due_after_pause(Instant::now());
        }
    }

    /// Connected peers silent for longer than the limit (a cut link never closes TCP by
    /// itself); they count as heard from now, so that each is reported once per limit.
    /// Sets how long a connected peer may stay silent (the ping period of its connection
    /// plus the ping timeout and a margin; see `crate::liveness`).
    pub(crate) fn set_silence_limit(&mut self, limit: Duration) {
        self.silence_limit = limit;
    }

    pub(crate) fn take_silent(&mut self) -> Vec<PeerId> {
        let now = Instant::now();
        let limit = self.silence_limit;
        let mut silent = Vec::new();
        for (p, s) in &mut self.peers {
            if s.connections > 0 && now.duration_since(s.last_alive) > limit {
                s.last_alive = now;
                silent.push(*p);
            }
        }
        silent
    }

    /// The dials due at `now`, each rescheduled with its backoff: at most `limit` known
    /// peers (the others stay due, for when the node has room for them), every bootstrap
    /// address due.
    pub(crate) fn take_due_dials(&mut self, now: Instant, limit: usize) -> DueDials {
        let mut due = DueDials::default();
        for (p, s) in &mut self.peers {
            if due.peers.len() >= limit {
                break;
            }
            if s.connections == 0
                && !s.dialing
                && !self.blocked.contains(p)
                && s.redial.take_due(now)
            {
                due.peers.push(*p);
            }
        }
        for b in self.bootstrap.iter_mut().filter(|b| !b.done) {
            if b.redial.take_due(now) {
                due.addrs.push(b.addr.clone());
            }
        }
        due
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_a_connection_resets_it() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert!(!b.take_due(t0), "nothing scheduled");
        b.due_now(t0);
        assert!(b.take_due(t0));
        assert!(!b.take_due(t0), "the next try waits a pause");
        let mut at = t0;
        let mut pauses = Vec::new();
        for _ in 0..10 {
            let next = b.next.unwrap();
            pauses.push(next - at);
            at = next;
            assert!(b.take_due(at));
        }
        assert_eq!(pauses[0], FIRST_BACKOFF);
        assert_eq!(pauses[1], FIRST_BACKOFF * 2);
        assert_eq!(*pauses.last().unwrap(), MAX_BACKOFF);
        b.reset();
        assert!(!b.is_scheduled());
        b.due_after_pause(at);
        assert_eq!(b.next, Some(at + FIRST_BACKOFF));
    }

    #[test]
    fn blocked_and_connected_peers_are_not_dialed() {
        let mut t = PeerTable::new(10, Duration::from_secs(4));
        let (a, b) = (PeerId::random(), PeerId::random());
        let now = Instant::now();
        t.peer(a).redial.due_now(now);
        t.peer(b).redial.due_now(now);
        t.block(b);
        assert_eq!(t.take_due_dials(now, 8).peers, vec![a]);
        t.connected(a, &"/ip4/127.0.0.1/tcp/1".parse().unwrap(), 1);
        assert!(t.take_due_dials(now + MAX_BACKOFF, 8).peers.is_empty());
        t.unblock(b);
        assert_eq!(t.take_due_dials(Instant::now(), 8).peers, vec![b]);
    }

    #[test]
    fn dials_past_the_limit_stay_due_for_later() {
        let mut t = PeerTable::new(10, Duration::from_secs(4));
        let now = Instant::now();
        let peers: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        for p in &peers {
            t.peer(*p).redial.due_now(now);
        }
        let first = t.take_due_dials(now, 2).peers;
        assert_eq!(first.len(), 2);
        let rest = t.take_due_dials(now, 8).peers;
        assert_eq!(rest.len(), 3, "the peers not taken are still due");
        assert!(first.iter().all(|p| !rest.contains(p)));
        assert!(t.take_due_dials(now, 0).peers.is_empty());
        t.connected(peers[0], &"/ip4/127.0.0.1/tcp/1".parse().unwrap(), 1);
        t.connected(peers[1], &"/ip4/127.0.0.1/tcp/2".parse().unwrap(), 2);
        assert_eq!(t.connected_count(), 2, "peers, not connections");
        t.closed(peers[1], 0);
        assert_eq!(t.connected_count(), 1);
    }

    #[test]
    fn a_peer_is_not_redialed_while_a_dial_is_in_flight_nor_its_pause_doubled() {
        let mut t = PeerTable::new(10, Duration::from_secs(4));
        let now = Instant::now();
        let a = PeerId::random();
        t.peer(a).redial.due_now(now);
        assert_eq!(t.take_due_dials(now, 8).peers, vec![a]);
        t.peer(a).dialing = true;
        // The whole transport timeout passes with the dial in flight: no dial taken.
        let failed_at = now + Duration::from_secs(10);
        assert!(t.take_due_dials(failed_at, 8).peers.is_empty());
        // It fails: the next dial is due at once, and after it the pause is still the
        // second one, not one doubled by every refused try.
        t.peer(a).dialing = false;
        assert_eq!(t.take_due_dials(failed_at, 8).peers, vec![a]);
        assert!(
            t.take_due_dials(failed_at + FIRST_BACKOFF * 2 - Duration::from_millis(1), 8)
                .peers
                .is_empty()
        );
        assert_eq!(
            t.take_due_dials(failed_at + FIRST_BACKOFF * 2, 8).peers,
            vec![a]
        );
    }

    #[test]
    fn a_bootstrap_address_is_dialed_until_a_connection_comes_from_it() {
        let mut t = PeerTable::new(10, Duration::from_secs(4));
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/7380".parse().unwrap();
        t.add_bootstrap(addr.clone());
        assert_eq!(
            t.take_due_dials(Instant::now(), 8).addrs,
            vec![addr.clone()]
        );
        let later = Instant::now() + MAX_BACKOFF;
        assert_eq!(t.take_due_dials(later, 8).addrs, vec![addr.clone()]);
        let mut remote = addr.clone();
        remote.push(Protocol::P2p(PeerId::random()));
        t.connected(PeerId::random(), &remote, 1);
        assert!(t.take_due_dials(later + MAX_BACKOFF, 8).addrs.is_empty());
    }

    #[test]
    fn the_request_rate_is_bounded_per_peer() {
        let mut t = PeerTable::new(10, Duration::from_secs(4));
        let (a, b) = (PeerId::random(), PeerId::random());
        let allowed = (0..100).filter(|_| t.allow_request(a)).count();
        assert!(
            (20..=21).contains(&allowed),
            "burst of twice the rate: {allowed}"
        );
        assert!(t.allow_request(b), "another peer has its own bucket");
    }
}
