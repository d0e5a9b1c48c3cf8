//! Client-side caching: `CLIENT TRACKING`, as Redis does it, across the cluster.
//!
//! A client that turns tracking on is told when a key it may hold in a near cache changes:
//!
//! * **Default mode**: the server remembers the keys the client read (read-only commands
//!   with keys), in one table for all clients, and invalidates a key once, at its first
//!   change after the read; the client reads it again to be told again. The table is bounded
//!   ([`crate::RespConfig::tracking_table_max_keys`] keys and
//!   [`crate::RespConfig::tracking_table_max_bytes`] bytes): past a bound the oldest keys are
//!   dropped, with an invalidation to their clients, as Redis evicts past
//!   `tracking-table-max-keys`.
//! * **`BCAST`**: the client names prefixes (none: every key) and hears about every change
//!   of a key under them, read or not.
//! * **`OPTIN`/`OPTOUT`**: only the reads after `CLIENT CACHING yes` (or all but those after
//!   `CLIENT CACHING no`) are remembered. **`NOLOOP`**: not told about its own writes.
//!
//! **What counts as a change** is every change the node's cache applies: its clients' writes,
//! the writes replicated from peers, rollbacks of writes whose commit failed, keys reaching
//! their expiry (on this node's clock), and a full resync (which may drop keys: every
//! tracking client is told to drop everything). So a client connected to any node hears
//! about a write made on any other, once it has reached its node. `FLUSHALL` and a lost
//! event (the cache's event queue overran) send the null invalidation: drop everything.
//!
//! **Where it goes**: a RESP3 connection gets `>2 invalidate [keys]` pushes; with
//! `REDIRECT id` they go to connection `id` instead, as pushes if it speaks RESP3, else (a
//! RESP2 connection in subscribed mode) as messages on `__redis__:invalidate`. A redirect
//! target that went away makes the next invalidation a `tracking-redir-broken` push.
//!
//! **Ordering**: a read's keys are remembered under the cache's read lock the read held, so
//! a change after the read always finds them; a change made just before the read may
//! invalidate it too (a spurious invalidation: the client reads again). Invalidations reach a
//! connection after the replies of the batch it is answering, so the reply to a read always
//! comes before the invalidation of what it returned.

use crate::frame::{Protocol, write_array_len, write_bulk, write_integer};
use crate::registry::{ClientEntry, Offered, Push};
use bytes::Bytes;
use dice_core::{Cache, ChangeSource, Event, Replica};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// The channel RESP2 connections hear invalidations on (when another connection redirects
/// its invalidations to them).
pub(crate) const INVALIDATE_CHANNEL: &[u8] = b"__redis__:invalidate";

/// Bytes counted for a table entry besides its key.
const OVERHEAD: usize = 64;
/// Bytes counted per client id in the table.
const ID_COST: usize = 8;
/// Events handled per batch (one invalidation message per client per batch).
const BATCH: usize = 1024;
/// The expiry walk runs at most this often...
const WALK_MIN_GAP: Duration = Duration::from_millis(10);
/// ... and at least this often while a client tracks (a full resync is noticed by it).
const WALK_MAX_GAP: Duration = Duration::from_secs(1);

/// A tracking client's mode, as `CLIENT TRACKING ON` set it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mode {
    pub bcast: bool,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
    /// The connection invalidations go to (0: this one).
    pub redirect: u64,
}

/// What a connection knows of its own tracking, so that reads check it without a lock.
#[derive(Debug, Default)]
pub(crate) struct SessionTracking {
    /// `None`: tracking is off.
    pub mode: Option<Mode>,
    /// The prefixes of `BCAST` mode.
    pub prefixes: Vec<Bytes>,
    /// `CLIENT CACHING yes|no` was given for the next command (or transaction).
    pub caching: bool,
}

impl SessionTracking {
    /// Whether the keys of a read made now are to be remembered.
    pub fn remembers_reads(&self) -> bool {
        match &self.mode {
            None => false,
            // OPTIN: only after `CACHING yes`; OPTOUT: except after `CACHING no`.
            Some(m) if m.bcast => false,
            Some(m) if m.optin => self.caching,
            Some(m) if m.optout => !self.caching,
            Some(_) => true,
        }
    }
}

/// Appends `push` as the receiving connection frames it: a RESP3 push, a pub/sub message on
/// `__redis__:invalidate` for a subscribed RESP2 connection that is a redirect target, or
/// nothing (a RESP2 connection has nowhere to put it), as Redis does.
pub(crate) fn write_push(out: &mut Vec<u8>, push: &Push, proto: Protocol, subscribed: bool) {
    match push {
        Push::Invalidate {
            keys,
            null_resp3,
            redirected,
        } => {
            if proto == Protocol::Resp3 {
                out.extend_from_slice(b">2\r\n");
                write_bulk(out, b"invalidate");
            } else if *redirected && subscribed {
                write_array_len(out, 3);
                write_bulk(out, b"message");
                write_bulk(out, INVALIDATE_CHANNEL);
            } else {
                return;
            }
            match keys {
                Some(keys) => {
                    write_array_len(out, keys.len());
                    for k in keys.iter() {
                        write_bulk(out, k);
                    }
                }
                None if *null_resp3 => out.extend_from_slice(b"_\r\n"),
                None => out.extend_from_slice(b"$-1\r\n"),
            }
        }
        Push::RedirBroken(id) => {
            if proto == Protocol::Resp3 {
                out.extend_from_slice(b">2\r\n");
                write_bulk(out, b"tracking-redir-broken");
                write_integer(out, i64::try_from(*id).unwrap_or(i64::MAX));
            }
        }
    }
}

/// Queues `push` for `entry`'s connection, or disconnects it if that takes it past `limit`
/// bytes. False if the connection is gone (or being disconnected).
fn offer(entry: &ClientEntry, push: Push, limit: usize, stats: &TrackingStats) -> bool {
    match entry.inbox.offer(push, limit) {
        Offered::Queued => {
            stats.messages.fetch_add(1, Ordering::Relaxed);
            true
        }
        Offered::Gone => false,
        Offered::Overflowed { first } => {
            if first {
                stats.output_disconnects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    peer = %entry.peer,
                    id = entry.id,
                    limit,
                    "disconnecting a client that does not read its invalidation messages \
                     (pubsub_output_limit)"
                );
                entry.killed.notify_one();
            }
            false
        }
    }
}

/// Flags shown by `CLIENT LIST` (`t`, `R`, `B`), in [`ClientEntry::tracking`].
pub(crate) const FLAG_ON: u8 = 1;
pub(crate) const FLAG_BROKEN_REDIRECT: u8 = 2;
pub(crate) const FLAG_BCAST: u8 = 4;

/// Counters shown by `INFO stats`.
#[derive(Debug, Default)]
pub(crate) struct TrackingStats {
    /// Invalidation messages queued for connections.
    pub messages: AtomicU64,
    /// Keys dropped from the table to keep it within its bounds (with an invalidation).
    pub evictions: AtomicU64,
    /// Null invalidations sent because changes may have been missed (the cache's event
    /// queue overran, or a full resync).
    pub resets: AtomicU64,
    /// Connections disconnected for not reading their invalidations.
    pub output_disconnects: AtomicU64,
}

impl TrackingStats {
    /// `CONFIG RESETSTAT`.
    pub fn reset(&self) {
        for c in [
            &self.messages,
            &self.evictions,
            &self.resets,
            &self.output_disconnects,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// The bounds of the tracking state.
#[derive(Clone, Debug)]
pub(crate) struct Bounds {
    /// Keys in the table (0: no bound on the count, as Redis's `tracking-table-max-keys 0`).
    pub max_keys: usize,
    /// Bytes of the table (keys, ids and overhead).
    pub max_bytes: usize,
    /// Prefixes one `BCAST` client may name.
    pub max_prefixes_per_client: usize,
    /// Prefixes of all clients together.
    pub max_prefixes_total: usize,
    /// Bytes of pushes queued for one connection.
    pub output_limit: usize,
}

/// One tracking client.
#[derive(Debug)]
struct Client {
    entry: Arc<ClientEntry>,
    mode: Mode,
    redirect: Option<Weak<ClientEntry>>,
    prefixes: Vec<Bytes>,
}

/// A key of the default-mode table: the clients that may hold it.
#[derive(Debug)]
struct Tracked {
    ids: Vec<u64>,
    /// Its place in the eviction order.
    seq: u64,
}

#[derive(Debug, Default)]
struct Inner {
    clients: HashMap<u64, Client>,
    /// Default mode: key → the clients that read it since its last change.
    table: HashMap<Bytes, Tracked>,
    /// Keys in the order they entered the table (stale entries skipped), for eviction.
    order: VecDeque<(u64, Bytes)>,
    next_seq: u64,
    /// Client ids in the table, all keys together (Redis's `tracking_total_items`).
    items: usize,
    /// Bytes the table takes, as counted against its bound.
    bytes: usize,
    /// `BCAST`: prefix → clients.
    prefixes: HashMap<Bytes, Vec<u64>>,
    /// The lengths of the prefixes, with how many of each (a key is matched by looking up
    /// its own prefixes of these lengths).
    prefix_lens: BTreeMap<usize, usize>,
    /// For `NOLOOP`: key → the connection that made the latest local write to it, and how
    /// many local changes of it are still to be handled.
    writers: HashMap<Bytes, (u64, u32)>,
    /// Expiries up to this time (ms, this node's clock) have been handled.
    checked_until: u64,
    /// The replica's full resyncs, as last seen.
    resyncs: u64,
}

/// Keys to invalidate, per client, gathered while handling a batch of changes.
type Pending = HashMap<u64, Vec<Bytes>>;

/// The tracking state of one server.
pub(crate) struct Tracking {
    inner: Mutex<Inner>,
    /// Clients with tracking on: zero means nothing to do.
    on: AtomicUsize,
    /// Clients in `NOLOOP` mode: while any, local writes record who made them.
    noloop: AtomicUsize,
    /// `CONFIG SET tracking-table-max-keys` changes it.
    pub max_keys: AtomicUsize,
    bounds: Bounds,
    /// Hands the tracking task a subscription to the cache's changes.
    subscribe: mpsc::UnboundedSender<broadcast::Receiver<Event>>,
    pub stats: TrackingStats,
}

impl std::fmt::Debug for Tracking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracking")
            .field("on", &self.on)
            .field("bounds", &self.bounds)
            .finish_non_exhaustive()
    }
}

/// Why `CLIENT TRACKING ON` was refused (the reply's text).
pub(crate) type Refusal = String;

impl Tracking {
    /// The state, and the receiving end of the subscriptions for [`run`].
    pub fn new(bounds: Bounds) -> (Self, mpsc::UnboundedReceiver<broadcast::Receiver<Event>>) {
        let (subscribe, subscriptions) = mpsc::unbounded_channel();
        (
            Tracking {
                inner: Mutex::new(Inner::default()),
                on: AtomicUsize::new(0),
                noloop: AtomicUsize::new(0),
                max_keys: AtomicUsize::new(bounds.max_keys),
                bounds,
                subscribe,
                stats: TrackingStats::default(),
            },
            subscriptions,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding it leaves maps that are still consistent enough to serve.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Clients with tracking on.
    pub fn clients(&self) -> usize {
        self.on.load(Ordering::Relaxed)
    }

    /// Whether local writes must record who made them (some client is in `NOLOOP` mode).
    pub fn records_writers(&self) -> bool {
        self.noloop.load(Ordering::Relaxed) > 0
    }

    /// `tracking_total_keys`, `tracking_total_items`, `tracking_total_prefixes`.
    pub fn totals(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        (inner.table.len(), inner.items, inner.prefixes.len())
    }

    /// `CLIENT TRACKING ON`: turns tracking on for `entry` (or changes its options), adding
    /// `prefixes` in `BCAST` mode (the options are checked by the caller, against Redis's
    /// rules; the bounds here). Must not be called under the cache's lock.
    pub fn enable(
        &self,
        cache: &Cache,
        entry: &Arc<ClientEntry>,
        mode: Mode,
        redirect: Option<Weak<ClientEntry>>,
        prefixes: &[Bytes],
    ) -> Result<(), Refusal> {
        // Read before taking our lock: the cache's lock is always taken first.
        let (now, resyncs) = (
            cache.now_ms(),
            cache.with_replica(|r| r.stats().full_resyncs),
        );
        let mut inner = self.lock();
        let current = inner.clients.get(&entry.id);
        let was_on = current.is_some();
        let was_noloop = current.is_some_and(|c| c.mode.noloop);
        let mut all: Vec<Bytes> = current.map(|c| c.prefixes.clone()).unwrap_or_default();
        let mut added: Vec<Bytes> = Vec::new();
        if mode.bcast {
            let wanted: Vec<Bytes> = if prefixes.is_empty() {
                vec![Bytes::new()]
            } else {
                prefixes.to_vec()
            };
            for p in wanted {
                if !all.contains(&p) && !added.contains(&p) {
                    added.push(p);
                }
            }
            if all.len() + added.len() > self.bounds.max_prefixes_per_client {
                return Err(format!(
                    "ERR this client would pass {} tracking prefixes \
                     (max_tracking_prefixes_per_client)",
                    self.bounds.max_prefixes_per_client
                ));
            }
            let new_total = added
                .iter()
                .filter(|p| !inner.prefixes.contains_key(*p))
                .count();
            if inner.prefixes.len() + new_total > self.bounds.max_prefixes_total {
                return Err(format!(
                    "ERR the server's clients would pass {} tracking prefixes together \
                     (max_tracking_prefixes_total)",
                    self.bounds.max_prefixes_total
                ));
            }
        }
        if inner.clients.is_empty() {
            // The first tracking client: subscribe now, before any read is remembered, so
            // that every change after this point is seen.
            let _ = self.subscribe.send(cache.subscribe());
            inner.checked_until = now;
            inner.resyncs = resyncs;
        }
        let inner = &mut *inner;
        for p in &added {
            let ids = inner.prefixes.entry(p.clone()).or_default();
            if ids.is_empty() {
                *inner.prefix_lens.entry(p.len()).or_default() += 1;
            }
            ids.push(entry.id);
        }
        all.extend(added);
        let mut flags = FLAG_ON;
        if mode.bcast {
            flags |= FLAG_BCAST;
        }
        entry.tracking.store(flags, Ordering::Relaxed);
        entry.redirect.store(
            i64::try_from(mode.redirect).unwrap_or(-1),
            Ordering::Relaxed,
        );
        if !was_on {
            self.on.fetch_add(1, Ordering::Relaxed);
        }
        match (was_noloop, mode.noloop) {
            (false, true) => {
                self.noloop.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.noloop.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        inner.clients.insert(
            entry.id,
            Client {
                entry: entry.clone(),
                mode,
                redirect,
                prefixes: all,
            },
        );
        Ok(())
    }

    /// `CLIENT TRACKING OFF`, `RESET`, or the connection closed. Its keys stay in the table
    /// until they change (as in Redis): nothing is sent for them any more.
    pub fn disable(&self, id: u64) {
        let mut inner = self.lock();
        let Some(client) = inner.clients.remove(&id) else {
            return;
        };
        client.entry.tracking.store(0, Ordering::Relaxed);
        client.entry.redirect.store(-1, Ordering::Relaxed);
        for p in &client.prefixes {
            if let Some(ids) = inner.prefixes.get_mut(p) {
                ids.retain(|&i| i != id);
                if ids.is_empty() {
                    inner.prefixes.remove(p);
                    if let Some(n) = inner.prefix_lens.get_mut(&p.len()) {
                        *n -= 1;
                        if *n == 0 {
                            inner.prefix_lens.remove(&p.len());
                        }
                    }
                }
            }
        }
        self.on.fetch_sub(1, Ordering::Relaxed);
        if client.mode.noloop {
            self.noloop.fetch_sub(1, Ordering::Relaxed);
        }
        if inner.clients.is_empty() {
            // Nobody left to tell: forget everything (the task drops its subscription).
            let Inner {
                table,
                order,
                writers,
                ..
            } = &mut *inner;
            table.clear();
            order.clear();
            writers.clear();
            inner.items = 0;
            inner.bytes = 0;
        }
    }

    /// Remembers that client `id` read `keys` (default mode). Called under the cache's lock
    /// that the read held, at time `now` (ms) the read used, so that any later change finds
    /// them. A key that reached its expiry after the read but that the expiry walk already
    /// passed is invalidated at once.
    pub fn remember<'k>(
        &self,
        id: u64,
        keys: impl Iterator<Item = &'k [u8]>,
        replica: &Replica,
        now: u64,
    ) {
        let mut inner = self.lock();
        if !inner.clients.contains_key(&id) {
            return;
        }
        let mut pending = Pending::new();
        for key in keys {
            let expired_since = replica
                .expires_at(key)
                .is_some_and(|e| e > now && e <= inner.checked_until);
            if expired_since {
                pending
                    .entry(id)
                    .or_default()
                    .push(Bytes::copy_from_slice(key));
                continue;
            }
            let inner = &mut *inner;
            match inner.table.get_mut(key) {
                Some(t) => {
                    if !t.ids.contains(&id) {
                        t.ids.push(id);
                        inner.items += 1;
                        inner.bytes += ID_COST;
                    }
                }
                None => {
                    let key = Bytes::copy_from_slice(key);
                    let seq = inner.next_seq;
                    inner.next_seq += 1;
                    inner.bytes += key.len() + OVERHEAD + ID_COST;
                    inner.items += 1;
                    inner.order.push_back((seq, key.clone()));
                    inner.table.insert(key, Tracked { ids: vec![id], seq });
                }
            }
        }
        self.enforce_bounds(&mut inner, &mut pending);
        self.send_pending(&inner, pending);
    }

    /// Evicts the oldest keys while the table is past a bound, invalidating them.
    fn enforce_bounds(&self, inner: &mut Inner, pending: &mut Pending) {
        let max_keys = self.max_keys.load(Ordering::Relaxed);
        let over = |i: &Inner| {
            (max_keys > 0 && i.table.len() > max_keys) || i.bytes > self.bounds.max_bytes
        };
        while over(inner) {
            let Some((seq, key)) = inner.order.pop_front() else {
                break;
            };
            if inner.table.get(&key).is_some_and(|t| t.seq == seq) {
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
                invalidate_default(inner, &key, None, pending);
            }
        }
        // Stale entries (keys invalidated since) would pile up in the order: compact it.
        if inner.order.len() > 2 * inner.table.len() + 1024 {
            let Inner { order, table, .. } = inner;
            order.retain(|(seq, key)| table.get(key).is_some_and(|t| t.seq == *seq));
        }
    }

    /// Records, under the cache's write lock that made them, the local writes of connection
    /// `writer` (for `NOLOOP`).
    pub fn note_local_writes(&self, writer: u64, keys: &[Bytes]) {
        let mut inner = self.lock();
        if inner.writers.len() > 1_000_000 {
            // Bounded: forgetting only costs NOLOOP clients an invalidation of their own write.
            inner.writers.clear();
        }
        for k in keys {
            let w = inner.writers.entry(k.clone()).or_insert((writer, 0));
            w.0 = writer;
            w.1 = w.1.saturating_add(1);
        }
    }

    /// `FLUSHALL`: every tracking client is told to drop everything (a null invalidation),
    /// and the table is emptied.
    pub fn flush_all(&self) {
        let mut inner = self.lock();
        self.flush_locked(&mut inner);
    }

    fn flush_locked(&self, inner: &mut Inner) {
        if inner.clients.is_empty() {
            return;
        }
        inner.table.clear();
        inner.order.clear();
        inner.items = 0;
        inner.bytes = 0;
        inner.writers.clear();
        for c in inner.clients.values() {
            self.send(c, None);
        }
    }

    /// Handles a batch of the cache's changes.
    fn changed(&self, events: &[Event]) -> Option<u64> {
        let mut inner = self.lock();
        if inner.clients.is_empty() {
            return None;
        }
        let mut pending = Pending::new();
        let mut earliest: Option<u64> = None;
        for ev in events {
            let writer = match ev.source {
                ChangeSource::Local => match inner.writers.get_mut(&ev.key) {
                    Some(w) => {
                        let who = w.0;
                        w.1 = w.1.saturating_sub(1);
                        if w.1 == 0 {
                            inner.writers.remove(&ev.key);
                        }
                        Some(who)
                    }
                    None => None,
                },
                ChangeSource::Remote | ChangeSource::RolledBack | ChangeSource::Evicted => None,
                ChangeSource::Dropped => continue,
            };
            if ev.value.is_some()
                && let Some(e) = ev.expires_at_ms
            {
                earliest = Some(earliest.map_or(e, |x| x.min(e)));
            }
            invalidate_default(&mut inner, &ev.key, writer, &mut pending);
            invalidate_bcast(&inner, &ev.key, writer, &mut pending);
        }
        self.send_pending(&inner, pending);
        earliest
    }

    /// Changes were missed (the event queue overran): every client drops everything.
    fn lost_changes(&self) {
        self.stats.resets.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        tracing::debug!("client tracking missed changes: invalidating every client's cache");
        self.flush_locked(&mut inner);
    }

    /// The expiry walk: invalidates the keys that reached their expiry since the last walk,
    /// and everything after a full resync. Returns the next expiry (ms), if any.
    fn walk(&self, cache: &Cache) -> Option<u64> {
        let after = self.lock().checked_until;
        let (now, expired, resyncs, next) = cache.with_replica(|r| {
            let now = cache.now_ms();
            let expired: Vec<Bytes> = r
                .expiring_between(after, now)
                .map(|(_, k)| Bytes::copy_from_slice(k))
                .collect();
            (
                now,
                expired,
                r.stats().full_resyncs,
                r.next_expiry_after(now),
            )
        });
        let mut inner = self.lock();
        if inner.clients.is_empty() {
            return None;
        }
        // A clock that went back walks its window again later (invalidating twice is
        // harmless; missing one is not).
        inner.checked_until = now;
        if resyncs != inner.resyncs {
            inner.resyncs = resyncs;
            self.stats.resets.fetch_add(1, Ordering::Relaxed);
            self.flush_locked(&mut inner);
            return next;
        }
        let mut pending = Pending::new();
        for key in &expired {
            invalidate_default(&mut inner, key, None, &mut pending);
            invalidate_bcast(&inner, key, None, &mut pending);
        }
        self.send_pending(&inner, pending);
        next
    }

    fn send_pending(&self, inner: &Inner, pending: Pending) {
        for (id, mut keys) in pending {
            let Some(c) = inner.clients.get(&id) else {
                continue;
            };
            if keys.len() > 1 {
                keys.sort_unstable();
                keys.dedup();
            }
            self.send(c, Some(Arc::new(keys)));
        }
    }

    /// Sends an invalidation (`None`: of everything) to where client `c`'s go.
    fn send(&self, c: &Client, keys: Option<Arc<Vec<Bytes>>>) {
        let limit = self.bounds.output_limit;
        let null_resp3 = c.entry.resp.load(Ordering::Relaxed) == 3;
        let Some(redirect) = &c.redirect else {
            if !null_resp3 {
                // A RESP2 connection without a redirect has nowhere to hear it.
                return;
            }
            let push = Push::Invalidate {
                keys,
                null_resp3,
                redirected: false,
            };
            offer(&c.entry, push, limit, &self.stats);
            return;
        };
        let push = Push::Invalidate {
            keys,
            null_resp3,
            redirected: true,
        };
        let sent = redirect
            .upgrade()
            .is_some_and(|target| offer(&target, push, limit, &self.stats));
        if !sent {
            c.entry
                .tracking
                .fetch_or(FLAG_BROKEN_REDIRECT, Ordering::Relaxed);
            if null_resp3 {
                offer(
                    &c.entry,
                    Push::RedirBroken(c.mode.redirect),
                    limit,
                    &self.stats,
                );
            }
        }
    }
}

/// Default mode: takes `key` out of the table and queues it for each of its clients (but a
/// `NOLOOP` client that is `writer`).
fn invalidate_default(inner: &mut Inner, key: &[u8], writer: Option<u64>, pending: &mut Pending) {
    let Some((key, tracked)) = inner.table.remove_entry(key) else {
        return;
    };
    inner.items -= tracked.ids.len();
    inner.bytes = inner
        .bytes
        .saturating_sub(key.len() + OVERHEAD + ID_COST * tracked.ids.len());
    for id in tracked.ids {
        let Some(c) = inner.clients.get(&id) else {
            continue;
        };
        if c.mode.bcast || (c.mode.noloop && writer == Some(id)) {
            continue;
        }
        pending.entry(id).or_default().push(key.clone());
    }
}

/// `BCAST`: queues `key` for every client with a prefix of it (but a `NOLOOP` client that is
/// `writer`).
fn invalidate_bcast(inner: &Inner, key: &[u8], writer: Option<u64>, pending: &mut Pending) {
    let mut shared: Option<Bytes> = None;
    for &len in inner.prefix_lens.range(..=key.len()).map(|(l, _)| l) {
        let Some(ids) = inner.prefixes.get(&key[..len]) else {
            continue;
        };
        for &id in ids {
            let noloop = inner.clients.get(&id).is_some_and(|c| c.mode.noloop);
            if noloop && writer == Some(id) {
                continue;
            }
            let k = shared
                .get_or_insert_with(|| Bytes::copy_from_slice(key))
                .clone();
            pending.entry(id).or_default().push(k);
        }
    }
}

/// Whether two prefixes would both match some key (one starts the other).
pub(crate) fn overlap(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// Turns the cache's changes into invalidations, from each subscription `enable` hands it
/// (taken when the first client turns tracking on; dropped when the last turns it off, so
/// that writes cost nothing more otherwise), and walks the expiries. Ends when the server
/// goes.
pub(crate) async fn run(
    tracking: Arc<Tracking>,
    cache: Cache,
    mut subscriptions: mpsc::UnboundedReceiver<broadcast::Receiver<Event>>,
) {
    let mut changes: Option<broadcast::Receiver<Event>> = None;
    let mut next_walk: Option<tokio::time::Instant> = None;
    let mut last_walk = tokio::time::Instant::now();
    loop {
        if tracking.clients() == 0 {
            changes = None;
            next_walk = None;
        }
        let next = async {
            match changes.as_mut() {
                Some(c) => c.recv().await,
                None => std::future::pending().await,
            }
        };
        let walk_at = next_walk;
        let walk = async {
            match walk_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            sub = subscriptions.recv() => match sub {
                Some(s) => {
                    changes = Some(s);
                    next_walk = Some(tokio::time::Instant::now());
                }
                None => return,
            },
            ev = next => {
                let mut batch = Vec::new();
                let mut lost = false;
                match ev {
                    Ok(ev) => batch.push(ev),
                    Err(broadcast::error::RecvError::Lagged(_)) => lost = true,
                    Err(broadcast::error::RecvError::Closed) => changes = None,
                }
                if let Some(c) = changes.as_mut() {
                    while batch.len() < BATCH {
                        match c.try_recv() {
                            Ok(ev) => batch.push(ev),
                            Err(broadcast::error::TryRecvError::Lagged(_)) => lost = true,
                            Err(_) => break,
                        }
                    }
                }
                if let Some(expiry) = tracking.changed(&batch) {
                    let at = instant_of(expiry);
                    if next_walk.is_none_or(|w| at < w) {
                        next_walk = Some(at.max(last_walk + WALK_MIN_GAP));
                    }
                }
                if lost {
                    tracking.lost_changes();
                }
            }
            () = walk => {
                last_walk = tokio::time::Instant::now();
                let next = tracking.walk(&cache);
                let latest = last_walk + WALK_MAX_GAP;
                let at = next.map_or(latest, |e| instant_of(e).min(latest));
                next_walk = Some(at.max(last_walk + WALK_MIN_GAP));
            }
        }
    }
}

/// The instant at which this node's clock reads `ms` (now if that is past); the walk wakes
/// then.
fn instant_of(ms: u64) -> tokio::time::Instant {
    let now = dice_core::now_ms();
    // One millisecond late: the walk covers expiries up to its own reading of the clock.
    tokio::time::Instant::now() + Duration::from_millis(ms.saturating_sub(now) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_overlap_when_one_starts_the_other() {
        assert!(overlap(b"fo", b"foo"));
        assert!(overlap(b"foo", b"fo"));
        assert!(overlap(b"", b"x"));
        assert!(overlap(b"a", b"a"));
        assert!(!overlap(b"ab", b"ac"));
    }

    #[test]
    fn pushes_as_each_protocol_frames_them() {
        let keys = Some(Arc::new(vec![Bytes::from_static(b"k")]));
        let push = Push::Invalidate {
            keys: keys.clone(),
            null_resp3: true,
            redirected: false,
        };
        let mut out = Vec::new();
        write_push(&mut out, &push, Protocol::Resp3, false);
        assert_eq!(out, b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n");
        out.clear();
        write_push(&mut out, &push, Protocol::Resp2, true);
        assert!(out.is_empty(), "not redirected: nothing in RESP2");
        let push = Push::Invalidate {
            keys: None,
            null_resp3: false,
            redirected: true,
        };
        write_push(&mut out, &push, Protocol::Resp2, true);
        assert_eq!(
            out,
            b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$-1\r\n"
        );
        out.clear();
        write_push(&mut out, &push, Protocol::Resp2, false);
        assert!(
            out.is_empty(),
            "a RESP2 target not subscribed hears nothing"
        );
        write_push(&mut out, &Push::RedirBroken(7), Protocol::Resp3, false);
        assert_eq!(out, b">2\r\n$21\r\ntracking-redir-broken\r\n:7\r\n");
    }
}
