//! Epidemic broadcast of writes past `--max-peers`, over libp2p gossipsub (already in the
//! swarm for pub/sub), on a second topic per cluster, `/dice/<cluster>/writes/1`.
//!
//! Below the bound every member is one hop from a write's origin, which pushes the write to
//! each of them directly (the replicator's pushes). Past it, the members not connected to the
//! origin would only get the write by catch-up, one neighbour per round, hop by hop. A node
//! that knows more members than it may connect to (`--max-peers`), or that sees a neighbour
//! join the topic, joins it too and stays in it; from then on:
//!
//! * **The origin publishes its own durable writes** as the sync protocol's push message
//!   ([`SyncMessage::Push`], the same bytes as a direct push), up to its shareable seq: a
//!   write enters the gossip only once durable at its origin (invariant 1). It keeps pushing
//!   directly to its connected members as well (the fast first hop, and their acks).
//! * **Receivers validate before gossipsub forwards** (`validate_messages`): the message
//!   must decode within the sync protocol's limits, be a push of its author's writes (the
//!   author it names must match the signed source, when we know that peer's node id; other
//!   origins' writes only alongside the author's range claim, as the current element of a key
//!   where a peer's write replaced one of the author's, which the claim needs a receiver to
//!   hold), and apply through [`Cache::handle_sync`], the path of a direct push.
//!   Then it is accepted (forwarded); a malformed or lying message is rejected (gossipsub
//!   lowers its sender's score and does not forward it); one we cannot take now (our store
//!   refuses writes, the author is behind our GC floors) is ignored.
//! * **Applying is idempotent**: a write received by push and by gossip is applied once (the
//!   greater version wins; an equal one changes nothing). A receiver's version vector moves
//!   over contiguous seqs only, so a lost or reordered message leaves a gap that catch-up
//!   fills: catch-up stays the safety net.
//!
//! Gossipsub keeps a mesh of about 6 peers per topic among the node's connections and
//! forwards each new message once to each of them: a node sends about 6 copies of a write
//! whatever the cluster's size, and a write reaches every member in O(log N) hops.

use dice_core::{Cache, NodeId, SyncLimits, SyncMessage};
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::{PeerId, gossipsub::IdentTopic};
use std::time::{Duration, Instant};

/// Least time between two publications of a node's writes: writes committed meanwhile go
/// out together, one signed message for many writes.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(20);

/// Pages published at most in one go (the event loop comes back for the rest).
const PAGES_PER_ROUND: usize = 8;

/// The gossipsub topic of a cluster's writes.
pub fn topic_name(cluster: &str) -> String {
    format!("/dice/{cluster}/writes/1")
}

/// Whether a node that knows `known_members` other members and may connect to `max_peers`
/// joins the writes topic: when some members cannot all be its neighbours, so that writes
/// would otherwise reach it, or leave it, only by catch-up hops.
pub fn should_join(known_members: usize, max_peers: usize) -> bool {
    known_members > max_peers
}

/// Counters of the writes' gossip (in [`crate::NodeStatus::gossip`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GossipStats {
    /// Whether this node joined the writes topic.
    pub joined: bool,
    /// Messages of our own writes handed to gossipsub.
    pub published: u64,
    /// Entries in them.
    pub published_entries: u64,
    /// Pages of our writes not published (no subscribed peer, queues full, too large):
    /// their writes reach the others by push and catch-up.
    pub publish_failed: u64,
    /// Messages of other nodes' writes received, applied and passed on.
    pub accepted: u64,
    /// Entries in them.
    pub accepted_entries: u64,
    /// Messages rejected as malformed or lying (not forwarded; gossipsub lowers the
    /// sender's score).
    pub rejected: u64,
    /// Messages not taken now (our store refuses writes, the author is behind our floors).
    pub ignored: u64,
}

/// The event loop's side of the writes' gossip.
pub(crate) struct WriteGossip {
    topic: IdentTopic,
    joined: bool,
    /// The last seq of our own writes published (or given up on).
    published: u64,
    last_publish: Option<Instant>,
    stats: GossipStats,
}

/// What a received message told, for the event loop.
pub(crate) struct Received {
    /// The author's acknowledgement of our own writes: the seq of ours its version vector
    /// holds (it signed the message, so it is its own claim).
    pub(crate) author_holds_ours: Option<(PeerId, u64)>,
}

impl WriteGossip {
    pub(crate) fn new(cluster: &str) -> Self {
        WriteGossip {
            topic: IdentTopic::new(topic_name(cluster)),
            joined: false,
            published: 0,
            last_publish: None,
            stats: GossipStats::default(),
        }
    }

    /// The topic's hash.
    pub(crate) fn topic(&self) -> gossipsub::TopicHash {
        self.topic.hash()
    }

    pub(crate) fn joined(&self) -> bool {
        self.joined
    }

    /// The counters.
    pub(crate) fn stats(&self) -> GossipStats {
        self.stats.clone()
    }

    /// Joins the topic (once). Our writes durable before now reach the others by push and
    /// catch-up; later ones are published too.
    pub(crate) fn join(&mut self, gs: &mut gossipsub::Behaviour, cache: &Cache, why: &str) {
        if self.joined {
            return;
        }
        match gs.subscribe(&self.topic) {
            Ok(_) => {
                self.joined = true;
                self.published = cache.shareable_seq();
                self.stats.joined = true;
                tracing::info!(why, "writes now also spread by gossip");
            }
            Err(e) => tracing::warn!(error = %e, "cannot join the writes' gossip topic"),
        }
    }

    /// Publishes our writes that became durable since the last publication. Returns when to
    /// come back at the latest (more to publish, or the pause between two publications).
    pub(crate) fn publish_due(
        &mut self,
        gs: &mut gossipsub::Behaviour,
        cache: &Cache,
        limits: &SyncLimits,
    ) -> Option<Instant> {
        if !self.joined || cache.shareable_seq() <= self.published {
            return None;
        }
        let now = Instant::now();
        if let Some(last) = self.last_publish
            && now < last + PUBLISH_INTERVAL
        {
            return Some(last + PUBLISH_INTERVAL);
        }
        self.last_publish = Some(now);
        for _ in 0..PAGES_PER_ROUND {
            let (msg, through) = cache.push_after(self.published)?;
            let entries = match &msg {
                SyncMessage::Push(p) => p.entries.len() as u64,
                _ => 0,
            };
            // Given up or sent, the next page starts after this one: a page not sent leaves
            // a gap the receivers' catch-up fills.
            self.published = through;
            let sent = msg
                .encode_at(limits, cache.now_ms())
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    gs.publish(self.topic.clone(), bytes)
                        .map_err(|e| e.to_string())
                });
            match sent {
                Ok(_) => {
                    self.stats.published += 1;
                    self.stats.published_entries += entries;
                }
                Err(e) => {
                    self.stats.publish_failed += 1;
                    tracing::debug!(error = %e, through, "writes not gossiped; push and catch-up carry them");
                }
            }
        }
        Some(now)
    }

    /// Validates and applies a message of the writes' topic, and tells gossipsub whether to
    /// forward it. `node_of` gives the node id of a peer, when known.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_message(
        &mut self,
        gs: &mut gossipsub::Behaviour,
        cache: &Cache,
        limits: &SyncLimits,
        message_id: &gossipsub::MessageId,
        propagation_source: &PeerId,
        message: gossipsub::Message,
        node_of: impl Fn(&PeerId) -> Option<NodeId>,
    ) -> Received {
        let mut received = Received {
            author_holds_ours: None,
        };
        let verdict = match check(&message, cache.node_id(), limits, node_of) {
            Err(why) => {
                tracing::warn!(source = ?message.source, via = %propagation_source, why, "refused a gossiped write message");
                MessageAcceptance::Reject
            }
            Ok(None) => MessageAcceptance::Ignore,
            Ok(Some(push)) => {
                let entries = push.entries.len() as u64;
                let ours = push.sender_vv.get(cache.node_id());
                match cache.handle_sync(SyncMessage::Push(push)) {
                    Ok(Some(SyncMessage::Ack(_))) => {
                        self.stats.accepted += 1;
                        self.stats.accepted_entries += entries;
                        received.author_holds_ours = message.source.map(|p| (p, ours));
                        MessageAcceptance::Accept
                    }
                    Ok(_) | Err(dice_core::Error::WritesRefused(_)) => MessageAcceptance::Ignore,
                    Err(e) => {
                        tracing::warn!(source = ?message.source, error = %e, "refused a gossiped write message");
                        MessageAcceptance::Reject
                    }
                }
            }
        };
        match verdict {
            MessageAcceptance::Reject => self.stats.rejected += 1,
            MessageAcceptance::Ignore => self.stats.ignored += 1,
            MessageAcceptance::Accept => {}
        }
        gs.report_message_validation_result(message_id, propagation_source, verdict);
        received
    }
}

/// Checks a gossiped message before it is applied: `Ok(Some(push))` to apply, `Ok(None)` to
/// ignore (our own writes coming back), `Err` to reject.
fn check(
    message: &gossipsub::Message,
    us: NodeId,
    limits: &SyncLimits,
    node_of: impl Fn(&PeerId) -> Option<NodeId>,
) -> Result<Option<dice_core::sync::Push>, String> {
    let msg = SyncMessage::decode(&message.data, limits).map_err(|e| e.to_string())?;
    let SyncMessage::Push(push) = msg else {
        return Err("not a push".into());
    };
    // Another origin's writes ride along only to cover the range the push claims (the key's
    // current element where a peer's write replaced one of the author's: see
    // `Replica::push_after`); without a claim, a push carries its author's writes alone.
    if push.range.is_none()
        && let Some(e) = push.entries.iter().find(|e| e.version.origin != push.from)
    {
        return Err(format!(
            "carries a write of {} in a push of {} that claims no range: only an origin \
             publishes, its own writes and what covers its claim",
            e.version.origin, push.from
        ));
    }
    if push.range.is_some_and(|r| r.origin != push.from) {
        return Err("claims a range of another origin".into());
    }
    if let Some(source) = &message.source
        && let Some(id) = node_of(source)
        && id != push.from
    {
        return Err(format!("signed by node {id}, names node {}", push.from));
    }
    if push.from == us {
        return Ok(None);
    }
    Ok(Some(push))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use dice_core::sync::{Ack, Push, PushRange};
    use dice_core::{Elem, Entry, Hlc, Version, VersionVector};

    #[test]
    fn the_topic_and_the_threshold() {
        assert_eq!(topic_name("c"), "/dice/c/writes/1");
        assert!(!should_join(31, 32), "a full mesh of 32 pushes directly");
        assert!(!should_join(32, 32));
        assert!(should_join(33, 32), "one member more than the bound");
    }

    fn id(n: u64) -> NodeId {
        NodeId::new(n).unwrap()
    }

    fn entry(origin: NodeId, seq: u64) -> Entry {
        Entry {
            key: bytes::Bytes::from(format!("k{seq}")),
            elem: Elem::Key,
            value: Some(bytes::Bytes::from_static(b"v")),
            version: Version {
                hlc: Hlc::ZERO,
                origin,
            },
            seq,
            expires_at_ms: None,
        }
    }

    fn push(from: NodeId, entries: Vec<Entry>, range: Option<PushRange>) -> SyncMessage {
        SyncMessage::Push(Push {
            from,
            sender_vv: VersionVector::default(),
            entries,
            range,
            pressed: false,
        })
    }

    fn message(source: PeerId, msg: &SyncMessage) -> gossipsub::Message {
        gossipsub::Message {
            source: Some(source),
            data: msg.encode_at(&SyncLimits::default(), 1).unwrap(),
            sequence_number: Some(1),
            topic: IdentTopic::new(topic_name("c")).hash(),
        }
    }

    #[test]
    fn only_an_origins_own_writes_and_their_cover_signed_by_it_are_taken() {
        let limits = SyncLimits::default();
        let (us, a, b) = (id(1), id(2), id(3));
        let peer_a = PeerId::random();
        let node_of = |p: &PeerId| (*p == peer_a).then_some(a);
        let check = |m: &gossipsub::Message| check(m, us, &limits, node_of);

        let good = push(a, vec![entry(a, 1), entry(a, 2)], None);
        assert!(check(&message(peer_a, &good)).unwrap().is_some());
        let unknown_signer = message(PeerId::random(), &good);
        assert!(
            check(&unknown_signer).unwrap().is_some(),
            "a member we never met is taken (its id cannot be checked)"
        );

        let relayed = push(a, vec![entry(a, 1), entry(b, 1)], None);
        assert!(
            check(&message(peer_a, &relayed)).is_err(),
            "another origin's write, with no claim it covers"
        );
        let own_range = PushRange {
            origin: a,
            after: 0,
            through: 9,
        };
        let covering = push(a, vec![entry(a, 1), entry(b, 1)], Some(own_range));
        assert!(
            check(&message(peer_a, &covering)).unwrap().is_some(),
            "another origin's write relayed to cover the author's claim"
        );
        let range = PushRange {
            origin: b,
            after: 0,
            through: 9,
        };
        let other_range = push(a, vec![entry(a, 1)], Some(range));
        assert!(check(&message(peer_a, &other_range)).is_err());
        let forged = push(b, vec![entry(b, 1)], None);
        assert!(
            check(&message(peer_a, &forged)).is_err(),
            "signed by a, names b"
        );
        let ack = SyncMessage::Ack(Ack {
            from: a,
            vv: VersionVector::default(),
            pressed: false,
        });
        assert!(check(&message(peer_a, &ack)).is_err(), "not a push");
        let mut garbage = message(peer_a, &good);
        garbage.data.truncate(garbage.data.len() / 2);
        assert!(check(&garbage).is_err());
        garbage.data = vec![0xff; 64];
        assert!(check(&garbage).is_err());

        let ours = push(us, vec![entry(us, 1)], None);
        let peer_us = PeerId::random();
        assert!(
            check(&message(peer_us, &ours)).unwrap().is_none(),
            "our own writes coming back are ignored"
        );
    }
}
