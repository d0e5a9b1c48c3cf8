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

use crate::registry::ClientEntry;
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

    /// `CONFIG RESETSTAT`: the counters back to zero.
    pub fn reset_stats(&self) {
        self.output_disconnects.store(0, Ordering::Relaxed);
        self.remote_received.store(0, Ordering::Relaxed);
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

    /// Channels with at least one subscriber here.
    pub fn channel_count(&self) -> usize {
        self.lock().channels.len()
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

    /// Subscribes to every name of `names` not subscribed yet (patterns if `pattern`), or
    /// to none if that would pass `per_client` subscriptions for this connection or `total`
    /// for all (checked and taken under the hub's lock, so concurrent clients cannot pass
    /// it together).
    pub fn add_all(
        &mut self,
        names: &[&[u8]],
        pattern: bool,
        per_client: usize,
        total: usize,
    ) -> Result<(), Refused> {
        let set = if pattern {
            &mut self.patterns
        } else {
            &mut self.channels
        };
        let new: HashSet<&[u8]> = names
            .iter()
            .copied()
            .filter(|n| !set.contains(*n))
            .collect();
        if self.channels.len() + self.patterns.len() + new.len() > per_client {
            return Err(Refused::PerClient);
        }
        let mut inner = self.hub.lock();
        if inner.total + new.len() > total {
            return Err(Refused::Total);
        }
        let set = if pattern {
            &mut self.patterns
        } else {
            &mut self.channels
        };
        let map = if pattern {
            &mut inner.patterns
        } else {
            &mut inner.channels
        };
        for name in &new {
            let name = Bytes::copy_from_slice(name);
            set.insert(name.clone());
            map.entry(name)
                .or_default()
                .insert(self.id, self.sub.clone());
        }
        inner.total += new.len();
        Ok(())
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

/// Keyspace notifications (`notify-keyspace-events`): the flags, as Redis spells them, and
/// the task that turns the cache's changes into messages on `__keyspace@0__:<key>` and
/// `__keyevent@0__:<event>`.
///
/// Each node fires for the changes it applies: its own writes and those replicated from
/// peers (they are not sent over the bus; every node fires its own). dice records a key's
/// new state, not the command that wrote it, so the events are: `set` (class `$`) for a
/// value written, followed by `expire` (class `g`) when it carries an expiry, and `del`
/// (class `g`) for a delete, `evicted` (class `e`) for a key this node evicted to stay
/// under its memory limit (an eviction by another node reaches this one as a removal, and
/// fires `del`, as a Redis replica fires `del` for its master's evictions). Keys passing
/// their expiry fire nothing (`x`): dice removes nothing at that moment.
pub(crate) mod notify {
    use super::Hub;
    use dice_core::{ChangeSource, Event};
    use std::sync::Arc;
    use tokio::sync::{broadcast, mpsc, watch};

    pub const KEYSPACE: u32 = 1 << 0;
    pub const KEYEVENT: u32 = 1 << 1;
    /// The classes, in the order Redis prints them; `A` is all of them.
    const CLASSES: &[(u8, u32)] = &[
        (b'g', 1 << 2),
        (b'$', 1 << 3),
        (b'l', 1 << 4),
        (b's', 1 << 5),
        (b'h', 1 << 6),
        (b'z', 1 << 7),
        (b'x', 1 << 8),
        (b'e', 1 << 9),
        (b't', 1 << 10),
        (b'd', 1 << 11),
    ];
    const KEY_MISS: u32 = 1 << 12;
    const NEW: u32 = 1 << 13;
    const GENERIC: u32 = 1 << 2;
    const STRING: u32 = 1 << 3;
    const HASH: u32 = 1 << 6;
    const SET: u32 = 1 << 5;
    const EVICTED: u32 = 1 << 9;

    fn all() -> u32 {
        CLASSES.iter().fold(0, |a, (_, f)| a | f)
    }

    /// The flags of a `notify-keyspace-events` value; `None` if it has an unknown letter.
    pub fn parse(text: &[u8]) -> Option<u32> {
        let mut flags = 0;
        for &c in text {
            flags |= match c {
                b'A' => all(),
                b'K' => KEYSPACE,
                b'E' => KEYEVENT,
                b'm' => KEY_MISS,
                b'n' => NEW,
                c => CLASSES.iter().find(|(l, _)| *l == c)?.1,
            };
        }
        Some(flags)
    }

    /// The flags as `CONFIG GET` shows them (Redis's order: classes or `A`, `K`, `E`, `m`,
    /// `n`).
    pub fn to_string(flags: u32) -> String {
        let mut s = String::new();
        if flags & all() == all() {
            s.push('A');
        } else {
            for (l, f) in CLASSES {
                if flags & f != 0 {
                    s.push(char::from(*l));
                }
            }
        }
        for (c, f) in [
            ('K', KEYSPACE),
            ('E', KEYEVENT),
            ('m', KEY_MISS),
            ('n', NEW),
        ] {
            if flags & f != 0 {
                s.push(c);
            }
        }
        s
    }

    fn fire(hub: &Hub, flags: u32, class: u32, event: &str, key: &[u8]) {
        if flags & class == 0 {
            return;
        }
        if flags & KEYSPACE != 0 {
            let mut channel = b"__keyspace@0__:".to_vec();
            channel.extend_from_slice(key);
            hub.deliver_local(&channel, event.as_bytes());
        }
        if flags & KEYEVENT != 0 {
            let channel = format!("__keyevent@0__:{event}");
            hub.deliver_local(channel.as_bytes(), key);
        }
    }

    /// Whether `flags` make any event fire.
    pub fn active(flags: u32) -> bool {
        flags & (KEYSPACE | KEYEVENT) != 0 && flags & !(KEYSPACE | KEYEVENT) != 0
    }

    /// Fires the events of the cache's changes, from each subscription `CONFIG SET` hands
    /// it (taken at once when events turn on, so that no write after the `CONFIG SET` is
    /// missed; dropped when they turn off, so that writes cost nothing more otherwise).
    /// Ends when the server goes.
    pub async fn run(
        hub: Arc<Hub>,
        flags: watch::Receiver<u32>,
        mut subscriptions: mpsc::UnboundedReceiver<broadcast::Receiver<Event>>,
    ) {
        let mut changes: Option<broadcast::Receiver<Event>> = None;
        // The key of the last `evicted` fired: evicting a hash or a set changes each of its
        // elements, one after another, and Redis fires one `evicted` per key.
        let mut last_evicted: Option<bytes::Bytes> = None;
        loop {
            let next = async {
                match changes.as_mut() {
                    Some(c) => c.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                sub = subscriptions.recv() => match sub {
                    Some(s) => changes = Some(s),
                    None => return,
                },
                ev = next => match ev {
                    Ok(ev) => {
                        let f = *flags.borrow();
                        if !active(f) {
                            changes = None;
                            continue;
                        }
                        if ev.source == ChangeSource::Evicted {
                            if last_evicted.as_ref() != Some(&ev.key) {
                                fire(&hub, f, EVICTED, "evicted", &ev.key);
                                last_evicted = Some(ev.key);
                            }
                            continue;
                        }
                        last_evicted = None;
                        if !matches!(ev.source, ChangeSource::Local | ChangeSource::Remote) {
                            continue;
                        }
                        match ev.value {
                            Some(_) if ev.set_member => fire(&hub, f, SET, "sadd", &ev.key),
                            None if ev.set_member => fire(&hub, f, SET, "srem", &ev.key),
                            Some(_) if ev.hash_field => fire(&hub, f, HASH, "hset", &ev.key),
                            None if ev.hash_field => fire(&hub, f, HASH, "hdel", &ev.key),
                            Some(_) => {
                                fire(&hub, f, STRING, "set", &ev.key);
                                if ev.expires_at_ms.is_some() {
                                    fire(&hub, f, GENERIC, "expire", &ev.key);
                                }
                            }
                            None => fire(&hub, f, GENERIC, "del", &ev.key),
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "keyspace notifications lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => changes = None,
                },
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn flags_parse_and_print_as_in_redis() {
            assert_eq!(parse(b""), Some(0));
            assert_eq!(parse(b"KEA").map(to_string).as_deref(), Some("AKE"));
            assert_eq!(parse(b"E$g").map(to_string).as_deref(), Some("g$E"));
            assert_eq!(parse(b"Kx").map(to_string).as_deref(), Some("xK"));
            assert_eq!(parse(b"KQ"), None);
            assert_eq!(to_string(0), "");
        }
    }
}
