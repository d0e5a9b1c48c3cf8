//! Pub/sub: `SUBSCRIBE`, `PSUBSCRIBE`, `UNSUBSCRIBE`, `PUNSUBSCRIBE`, `PUBLISH`, `PUBSUB`.
//!
//! Every server has one hub: the channels and patterns each connection listens to. A
//! `PUBLISH` hands the message to every matching subscriber of this node at once (it never
//! waits for the network), then to the [`PubSubBus`], if one is plugged in, which carries it
//! to the other nodes of the cluster; messages that arrive from them come in through a
//! [`PubSubHandle`] and reach this node's subscribers only.
//!
//! Delivery is fire-and-forget, as in Redis: at most once, best effort, in publishing order
//! for one publisher on one node and in no particular order across publishers, and lost when
//! the network drops it (a partition, a full queue). `PUBLISH` answers the number of
//! subscribers *of this node* that received the message, as Redis Cluster does.
//!
//! Each subscriber has a queue of messages not yet written to its socket, bounded in bytes
//! ([`crate::RespConfig::pubsub_output_limit`]): a subscriber that does not read is
//! disconnected once it passes it, as Redis disconnects one past its pubsub
//! `client-output-buffer-limit`.

use crate::server::ClientEntry;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Where published messages go besides this node's subscribers: the other nodes of the
/// cluster (a dice-net node, say).
///
/// ```
/// use dice_resp::PubSubBus;
/// struct Log;
/// impl PubSubBus for Log {
///     fn publish(&self, channel: &[u8], message: &[u8]) {
///         println!("{} <- {} bytes", String::from_utf8_lossy(channel), message.len());
///     }
/// }
/// ```
pub trait PubSubBus: Send + Sync {
    /// Sends a message published on this node to the other nodes. Best effort, and must not
    /// block: `PUBLISH` calls it while it runs (a full queue should drop the message).
    fn publish(&self, channel: &[u8], message: &[u8]);
}

/// Bytes counted for a queued message besides its channel, pattern and payload.
const MESSAGE_OVERHEAD: usize = 64;

/// One message on its way to a subscriber.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// The pattern it matched (`pmessage`), or none (`message`).
    pub pattern: Option<Bytes>,
    pub channel: Bytes,
    pub payload: Bytes,
}

impl Delivery {
    fn cost(&self) -> usize {
        self.pattern.as_ref().map_or(0, Bytes::len)
            + self.channel.len()
            + self.payload.len()
            + MESSAGE_OVERHEAD
    }
}

/// What publishers see of a subscribed connection.
#[derive(Debug)]
pub(crate) struct Subscriber {
    tx: mpsc::UnboundedSender<Delivery>,
    /// Bytes queued and not yet taken by the connection.
    pending: AtomicUsize,
    /// Set once it passed its limit: it is being disconnected, and receives nothing more.
    overflowed: AtomicBool,
    entry: Arc<ClientEntry>,
}

#[derive(Default)]
struct Inner {
    channels: HashMap<Bytes, HashMap<u64, Arc<Subscriber>>>,
    patterns: HashMap<Bytes, HashMap<u64, Arc<Subscriber>>>,
    /// Subscriptions of all clients together (channels and patterns).
    total: usize,
}

/// The channels and patterns of every connection of one server.
pub(crate) struct Hub {
    inner: Mutex<Inner>,
    bus: std::sync::OnceLock<Arc<dyn PubSubBus>>,
    /// Bytes a subscriber may have queued.
    output_limit: usize,
    /// Subscribers disconnected for passing `output_limit`.
    pub output_disconnects: AtomicU64,
    /// Messages received from other nodes.
    pub remote_received: AtomicU64,
}

impl Hub {
    pub fn new(output_limit: usize) -> Self {
        Hub {
            inner: Mutex::new(Inner::default()),
            bus: std::sync::OnceLock::new(),
            output_limit,
            output_disconnects: AtomicU64::new(0),
            remote_received: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding it leaves maps that are still consistent enough to serve.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Plugs in the bus to the other nodes (once; later calls are ignored).
    pub fn set_bus(&self, bus: Arc<dyn PubSubBus>) {
        let _ = self.bus.set(bus);
    }

    /// Hands a message to this node's subscribers; the number that received it (a client
    /// counts once per matching channel or pattern, as in Redis).
    pub fn deliver_local(&self, channel: &[u8], payload: &[u8]) -> usize {
        let inner = self.lock();
        let mut received = 0;
        let mut channel_bytes: Option<Bytes> = None;
        let mut payload_bytes: Option<Bytes> = None;
        let shared = |b: &mut Option<Bytes>, src: &[u8]| {
            b.get_or_insert_with(|| Bytes::copy_from_slice(src)).clone()
        };
        if let Some(subs) = inner.channels.get(channel) {
            for s in subs.values() {
                let d = Delivery {
                    pattern: None,
                    channel: shared(&mut channel_bytes, channel),
                    payload: shared(&mut payload_bytes, payload),
                };
                received += usize::from(self.offer(s, d));
            }
        }
        for (pattern, subs) in &inner.patterns {
            if !crate::glob::glob_match(pattern, channel) {
                continue;
            }
            for s in subs.values() {
                let d = Delivery {
                    pattern: Some(pattern.clone()),
                    channel: shared(&mut channel_bytes, channel),
                    payload: shared(&mut payload_bytes, payload),
                };
                received += usize::from(self.offer(s, d));
            }
        }
        received
    }

    /// `PUBLISH`: to this node's subscribers, then to the other nodes.
    pub fn publish(&self, channel: &[u8], payload: &[u8]) -> usize {
        let received = self.deliver_local(channel, payload);
        if let Some(bus) = self.bus.get() {
            bus.publish(channel, payload);
        }
        received
    }

    /// Queues `d` for `s`, or disconnects `s` if that takes it past its limit. Whether it
    /// was queued.
    fn offer(&self, s: &Subscriber, d: Delivery) -> bool {
        if s.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        let cost = d.cost();
        let before = s.pending.fetch_add(cost, Ordering::Relaxed);
        if before + cost > self.output_limit {
            s.pending.fetch_sub(cost, Ordering::Relaxed);
            if !s.overflowed.swap(true, Ordering::Relaxed) {
                self.output_disconnects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    peer = %s.entry.peer,
                    id = s.entry.id,
                    limit = self.output_limit,
                    "disconnecting a subscriber that does not read its messages \
                     (pubsub_output_limit)"
                );
                s.entry.killed.notify_one();
            }
            return false;
        }
        if s.tx.send(d).is_err() {
            s.pending.fetch_sub(cost, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Channels with at least one subscriber here matching `pattern` (all with none).
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let inner = self.lock();
        inner
            .channels
            .keys()
            .filter(|c| pattern.is_none_or(|p| crate::glob::glob_match(p, c)))
            .cloned()
            .collect()
    }

    /// Subscribers here of `channel` (patterns not counted, as in Redis).
    pub fn numsub(&self, channel: &[u8]) -> usize {
        self.lock().channels.get(channel).map_or(0, HashMap::len)
    }

    /// Distinct patterns subscribed to here.
    pub fn numpat(&self) -> usize {
        self.lock().patterns.len()
    }

    /// Subscriptions of all clients together.
    pub fn total(&self) -> usize {
        self.lock().total
    }
}

/// A handle on a server's pub/sub hub, to deliver the messages that other nodes published
/// (see [`crate::RespServer::pubsub`]).
#[derive(Clone)]
pub struct PubSubHandle {
    pub(crate) hub: Arc<Hub>,
}

impl std::fmt::Debug for PubSubHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSubHandle").finish_non_exhaustive()
    }
}

impl PubSubHandle {
    /// Hands a message published on another node to this node's subscribers (never back to
    /// the bus); the number that received it.
    pub fn deliver(&self, channel: &[u8], message: &[u8]) -> usize {
        self.hub.remote_received.fetch_add(1, Ordering::Relaxed);
        self.hub.deliver_local(channel, message)
    }
}

/// One connection's subscriptions and its queue of messages.
pub(crate) struct ClientSubs {
    hub: Arc<Hub>,
    id: u64,
    sub: Arc<Subscriber>,
    rx: mpsc::UnboundedReceiver<Delivery>,
    pub channels: HashSet<Bytes>,
    pub patterns: HashSet<Bytes>,
}

impl std::fmt::Debug for ClientSubs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSubs")
            .field("channels", &self.channels.len())
            .field("patterns", &self.patterns.len())
            .finish()
    }
}

/// Why a subscription was refused.
pub(crate) enum Refused {
    PerClient,
    Total,
}

impl ClientSubs {
    pub fn new(hub: Arc<Hub>, entry: Arc<ClientEntry>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        ClientSubs {
            hub,
            id: entry.id,
            sub: Arc::new(Subscriber {
                tx,
                pending: AtomicUsize::new(0),
                overflowed: AtomicBool::new(false),
                entry,
            }),
            rx,
            channels: HashSet::new(),
            patterns: HashSet::new(),
        }
    }

    /// Channels plus patterns: the count Redis's replies carry.
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// Checks that `new` more subscriptions fit in the per-client and global bounds.
    pub fn room_for(&self, new: usize, per_client: usize, total: usize) -> Result<(), Refused> {
        if self.count() + new > per_client {
            return Err(Refused::PerClient);
        }
        if self.hub.total() + new > total {
            return Err(Refused::Total);
        }
        Ok(())
    }

    /// Subscribes to `name` (a pattern if `pattern`); false if already subscribed.
    pub fn add(&mut self, name: &[u8], pattern: bool) -> bool {
        let set = if pattern {
            &mut self.patterns
        } else {
            &mut self.channels
        };
        if set.contains(name) {
            return false;
        }
        let name = Bytes::copy_from_slice(name);
        set.insert(name.clone());
        let mut inner = self.hub.lock();
        let map = if pattern {
            &mut inner.patterns
        } else {
            &mut inner.channels
        };
        map.entry(name)
            .or_default()
            .insert(self.id, self.sub.clone());
        inner.total += 1;
        true
    }

    /// Unsubscribes from `name`; false if not subscribed.
    pub fn remove(&mut self, name: &[u8], pattern: bool) -> bool {
        let set = if pattern {
            &mut self.patterns
        } else {
            &mut self.channels
        };
        if !set.remove(name) {
            return false;
        }
        let mut inner = self.hub.lock();
        let map = if pattern {
            &mut inner.patterns
        } else {
            &mut inner.channels
        };
        if let Some(subs) = map.get_mut(name) {
            subs.remove(&self.id);
            if subs.is_empty() {
                map.remove(name);
            }
        }
        inner.total -= 1;
        true
    }

    /// The next message for this connection; the bytes it held are given back.
    pub async fn next(&mut self) -> Option<Delivery> {
        let d = self.rx.recv().await?;
        self.sub.pending.fetch_sub(d.cost(), Ordering::Relaxed);
        Some(d)
    }

    /// The next message if one is queued.
    pub fn try_next(&mut self) -> Option<Delivery> {
        let d = self.rx.try_recv().ok()?;
        self.sub.pending.fetch_sub(d.cost(), Ordering::Relaxed);
        Some(d)
    }

    /// Whether it passed its limit (and is being disconnected).
    pub fn overflowed(&self) -> bool {
        self.sub.overflowed.load(Ordering::Relaxed)
    }
}

impl Drop for ClientSubs {
    fn drop(&mut self) {
        let channels: Vec<Bytes> = self.channels.iter().cloned().collect();
        for c in channels {
            self.remove(&c, false);
        }
        let patterns: Vec<Bytes> = self.patterns.iter().cloned().collect();
        for p in patterns {
            self.remove(&p, true);
        }
    }
}
