//! Pub/sub across the cluster: Redis `PUBLISH` messages carried to every node over libp2p
//! gossipsub, on one topic per cluster, `/dice/<cluster>/pubsub/1`.
//!
//! Delivery is fire-and-forget, like Redis pub/sub: at most once, best effort, no order
//! across publishers, nothing kept for a node that is down or cut off. A message is dropped
//! (and counted) when it is larger than [`PubSub::max_message`], when a queue is over its
//! byte budget ([`QUEUE_BUDGET`] each way between the application and the event loop,
//! [`PEER_QUEUE`] messages per peer inside gossipsub), or when gossipsub has no peer to
//! send it to.
//!
//! [`PubSub`] is the handle (from [`crate::Node::pubsub`]): [`PubSub::publish`] queues a
//! message for the other nodes (never blocks), [`PubSub::take_incoming`] gives the stream of
//! messages the other nodes published. The node's event loop owns the gossipsub behaviour
//! and a `PubSubLoop`, which moves messages between the two.

use bytes::Bytes;
use libp2p::gossipsub;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Bytes of messages waiting in each direction (to the network, to the application) past
/// which new messages are dropped.
pub const QUEUE_BUDGET: usize = 32 * 1024 * 1024;

/// Messages gossipsub may queue for one peer (its default is 5000: with messages of up to
/// ~1 MiB, a slow peer could hold gigabytes). Past it, messages to that peer are dropped.
pub const PEER_QUEUE: usize = 128;

/// Bytes a message takes on the wire besides its channel and payload (our header, and room
/// for gossipsub's envelope: source, sequence number, topic, signature and key).
const ENVELOPE: usize = 1024;

/// Format of our message body: a version byte, the channel's length (u32, big-endian), the
/// channel, the payload.
const FORMAT: u8 = 1;

/// The gossipsub topic of a cluster.
pub fn topic_name(cluster: &str) -> String {
    format!("/dice/{cluster}/pubsub/1")
}

/// The largest message (channel plus payload) carried for a cache with these limits: what
/// the RESP port accepts as a channel (a key) and a payload (a value).
pub fn max_message_for(limits: &dice_core::Limits) -> usize {
    limits.max_key_len.saturating_add(limits.max_value_len) + 8 * 1024
}

/// A message published on another node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubSubMessage {
    /// The channel it was published to.
    pub channel: Bytes,
    /// The message.
    pub payload: Bytes,
}

/// Encodes a message body.
pub fn encode(channel: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + channel.len() + payload.len());
    out.push(FORMAT);
    out.extend_from_slice(&(channel.len() as u32).to_be_bytes());
    out.extend_from_slice(channel);
    out.extend_from_slice(payload);
    out
}

/// Decodes a message body; `None` if malformed (never panics).
pub fn decode(data: &[u8]) -> Option<PubSubMessage> {
    let (&format, rest) = data.split_first()?;
    if format != FORMAT || rest.len() < 4 {
        return None;
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
    if len > rest.len() {
        return None;
    }
    let (channel, payload) = rest.split_at(len);
    Some(PubSubMessage {
        channel: Bytes::copy_from_slice(channel),
        payload: Bytes::copy_from_slice(payload),
    })
}

/// Counters of the cluster-wide pub/sub.
#[derive(Debug, Default)]
pub struct PubSubCounters {
    /// Messages handed to gossipsub.
    pub sent: AtomicU64,
    /// Messages received from other nodes and queued for the application.
    pub received: AtomicU64,
    /// Messages not sent: too large, queue over budget, no peer, gossipsub refused.
    pub send_dropped: AtomicU64,
    /// Messages received but dropped: malformed, or the application's queue over budget.
    pub receive_dropped: AtomicU64,
}

/// A byte budget shared by a queue's two ends.
#[derive(Debug, Default)]
struct Budget(AtomicUsize);

impl Budget {
    fn take(&self, n: usize) -> bool {
        let before = self.0.fetch_add(n, Ordering::Relaxed);
        if before + n > QUEUE_BUDGET {
            self.0.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }
    fn give(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }
}

/// The application's side of cluster-wide pub/sub (see the module docs).
#[derive(Clone, Debug)]
pub struct PubSub {
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    out_budget: Arc<Budget>,
    incoming: Arc<Mutex<Option<Incoming>>>,
    max_message: usize,
    counters: Arc<PubSubCounters>,
}

impl PubSub {
    /// Queues a message for the other nodes. Never blocks; false if it was dropped (larger
    /// than [`PubSub::max_message`], or the queue is over its budget).
    pub fn publish(&self, channel: &[u8], payload: &[u8]) -> bool {
        if channel.len() + payload.len() > self.max_message {
            self.counters.send_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                bytes = channel.len() + payload.len(),
                max = self.max_message,
                "pub/sub message too large for the cluster; delivered on this node only"
            );
            return false;
        }
        let data = encode(channel, payload);
        if !self.out_budget.take(data.len()) {
            self.counters.send_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let len = data.len();
        if self.outgoing.send(data).is_err() {
            self.out_budget.give(len);
            return false;
        }
        true
    }

    /// The messages other nodes publish, once: later calls get `None`.
    pub fn take_incoming(&self) -> Option<Incoming> {
        self.incoming.lock().ok().and_then(|mut i| i.take())
    }

    /// The largest channel plus payload carried to other nodes.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Counters.
    pub fn counters(&self) -> &PubSubCounters {
        &self.counters
    }
}

/// The messages other nodes publish (see [`PubSub::take_incoming`]).
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::UnboundedReceiver<PubSubMessage>,
    budget: Arc<Budget>,
}

impl Incoming {
    /// The next message; `None` once the node stopped.
    pub async fn recv(&mut self) -> Option<PubSubMessage> {
        let m = self.rx.recv().await?;
        self.budget
            .give(m.channel.len() + m.payload.len() + ENVELOPE);
        Some(m)
    }
}

/// The event loop's side: owns the queues' other ends.
pub(crate) struct PubSubLoop {
    topic: gossipsub::IdentTopic,
    outgoing: mpsc::UnboundedReceiver<Vec<u8>>,
    out_budget: Arc<Budget>,
    incoming: mpsc::UnboundedSender<PubSubMessage>,
    in_budget: Arc<Budget>,
    counters: Arc<PubSubCounters>,
}

/// The gossipsub behaviour of a node of `cluster`: signed messages, strict validation, every
/// message validated by the node before gossipsub forwards it (`validate_messages`). Two
/// topics: pub/sub, at most `max_message` bytes of channel and payload per message, and the
/// writes' gossip ([`crate::gossip`]), at most `max_writes_message` bytes (the sync
/// protocol's `max_message_bytes`).
pub(crate) fn behaviour(
    key: &libp2p::identity::Keypair,
    cluster: &str,
    max_message: usize,
    max_writes_message: usize,
) -> Result<gossipsub::Behaviour, String> {
    let pubsub_max = max_message + ENVELOPE;
    let writes_max = max_writes_message + ENVELOPE;
    let config = gossipsub::ConfigBuilder::default()
        .protocol_id_prefix(format!("/dice/{cluster}/meshsub"))
        // One frame carries one message (and control messages): the larger of the topics'.
        .max_transmit_size(pubsub_max.max(writes_max))
        .max_transmit_size_for_topic(
            pubsub_max,
            gossipsub::IdentTopic::new(topic_name(cluster)).hash(),
        )
        .max_transmit_size_for_topic(
            writes_max,
            gossipsub::IdentTopic::new(crate::gossip::topic_name(cluster)).hash(),
        )
        .heartbeat_interval(crate::profile::interval(
            "heartbeat",
            Duration::from_secs(1),
        ))
        // A publisher sends to its mesh (about 6 peers), not to every subscribed peer: the
        // writes' origin already pushes each write to every connected member, so flooding
        // its gossip to them too only made duplicates (2 copies per neighbour per write).
        .flood_publish(false)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .connection_handler_queue_len(PEER_QUEUE)
        .build()
        .map_err(|e| e.to_string())?;
    gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)
        .map_err(str::to_string)
}

impl PubSubLoop {
    /// The handle and the loop's side, for a node of `cluster`.
    pub(crate) fn new(cluster: &str, max_message: usize) -> (PubSub, PubSubLoop) {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let out_budget = Arc::new(Budget::default());
        let in_budget = Arc::new(Budget::default());
        let counters = Arc::new(PubSubCounters::default());
        let handle = PubSub {
            outgoing: out_tx,
            out_budget: out_budget.clone(),
            incoming: Arc::new(Mutex::new(Some(Incoming {
                rx: in_rx,
                budget: in_budget.clone(),
            }))),
            max_message,
            counters: counters.clone(),
        };
        let lp = PubSubLoop {
            topic: gossipsub::IdentTopic::new(topic_name(cluster)),
            outgoing: out_rx,
            out_budget,
            incoming: in_tx,
            in_budget,
            counters,
        };
        (handle, lp)
    }

    /// Joins the cluster's topic.
    pub(crate) fn subscribe(&self, gs: &mut gossipsub::Behaviour) {
        if let Err(e) = gs.subscribe(&self.topic) {
            tracing::warn!(error = %e, "cannot join the pub/sub topic; PUBLISH stays local");
        }
    }

    /// The next message to send; pending forever once every handle is gone.
    pub(crate) async fn next_outgoing(&mut self) -> Vec<u8> {
        match self.outgoing.recv().await {
            Some(data) => {
                self.out_budget.give(data.len());
                data
            }
            None => std::future::pending().await,
        }
    }

    /// Hands a message to gossipsub.
    pub(crate) fn publish(&mut self, gs: &mut gossipsub::Behaviour, data: Vec<u8>) {
        match gs.publish(self.topic.clone(), data) {
            Ok(_) => {
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters.send_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "pub/sub message not sent to other nodes");
            }
        }
    }

    /// Whether `topic` is the pub/sub topic.
    pub(crate) fn is_topic(&self, topic: &gossipsub::TopicHash) -> bool {
        *topic == self.topic.hash()
    }

    /// Takes a message of the pub/sub topic: a well-formed one goes to the application and
    /// is forwarded; a malformed one is rejected (not forwarded, and gossipsub lowers its
    /// sender's score).
    pub(crate) fn on_message(
        &mut self,
        gs: &mut gossipsub::Behaviour,
        message_id: &gossipsub::MessageId,
        propagation_source: &libp2p::PeerId,
        message: gossipsub::Message,
    ) {
        let acceptance = self.deliver(&message);
        gs.report_message_validation_result(message_id, propagation_source, acceptance);
    }

    fn deliver(&mut self, message: &gossipsub::Message) -> gossipsub::MessageAcceptance {
        let Some(m) = decode(&message.data) else {
            self.counters
                .receive_dropped
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(source = ?message.source, "malformed pub/sub message dropped");
            return gossipsub::MessageAcceptance::Reject;
        };
        let cost = m.channel.len() + m.payload.len() + ENVELOPE;
        if !self.in_budget.take(cost) {
            self.counters
                .receive_dropped
                .fetch_add(1, Ordering::Relaxed);
            // Dropped here for lack of room, still good for the others.
            return gossipsub::MessageAcceptance::Accept;
        }
        if self.incoming.send(m).is_err() {
            self.in_budget.give(cost);
            self.counters
                .receive_dropped
                .fetch_add(1, Ordering::Relaxed);
            return gossipsub::MessageAcceptance::Accept;
        }
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        gossipsub::MessageAcceptance::Accept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_garbage_is_refused() {
        let m = decode(&encode(b"news", b"hello")).expect("decodes");
        assert_eq!(&m.channel[..], b"news");
        assert_eq!(&m.payload[..], b"hello");
        let empty = decode(&encode(b"", b"")).expect("decodes");
        assert!(empty.channel.is_empty() && empty.payload.is_empty());
        assert!(decode(b"").is_none());
        assert!(decode(&[FORMAT, 0, 0]).is_none());
        assert!(decode(&[2, 0, 0, 0, 0]).is_none(), "another format");
        assert!(
            decode(&[FORMAT, 0, 0, 0, 9, b'a']).is_none(),
            "channel longer than the body"
        );
        assert!(decode(&[FORMAT, 0xff, 0xff, 0xff, 0xff]).is_none());
    }

    #[test]
    fn publish_drops_what_is_too_large() {
        let (handle, mut lp) = PubSubLoop::new("c", 16);
        assert!(handle.publish(b"ch", b"small"));
        assert!(!handle.publish(b"ch", &[0; 32]));
        assert_eq!(handle.counters().send_dropped.load(Ordering::Relaxed), 1);
        let data = lp.outgoing.try_recv().expect("queued");
        assert_eq!(decode(&data).expect("decodes").payload, &b"small"[..]);
        assert_eq!(topic_name("c"), "/dice/c/pubsub/1");
    }
}
