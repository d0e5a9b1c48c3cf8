//! The replica: the LWW-map, its version vector, GC floors and the indexes that make sync and
//! garbage collection cost what they touch. Plain in-memory code, no I/O: [`crate::Cache`]
//! wraps it with persistence, and tests drive several of them through [`crate::SyncSession`].

use crate::counter::{
    Amount, Contribution, CounterView, Number, ResetRecord, parse_float, parse_int, render,
};
use crate::entry::{
    Elem, Entry, FieldId, Limits, NodeId, Version, decode_field, encode_field, is_dead,
};
use crate::hlc::{Hlc, HlcClock};
use crate::record::Record;
use crate::version_vector::VersionVector;
use crate::{Error, Result};
use bytes::Bytes;
use hashbrown::HashTable;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};

// Eviction and memory accounting: what the replica offers `crate::evict` (its own file, as
// a child module that reads the replica's indexes).
mod eviction;
// Hash fields as counters: their index, value, resets, digest and garbage collection.
mod hash_counters;
// Sets: their index, reads, writes and garbage collection.
mod sets;
// What a push of our writes may claim when peers' writes replaced some of them.
mod claim;

/// Where a change to the map came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeSource {
    /// A write made on this replica.
    Local,
    /// An entry received from a peer.
    Remote,
    /// A dead entry dropped by garbage collection or by a full resync.
    Dropped,
    /// A removal made on this replica by eviction (a local write: see
    /// [`Replica::evict`]). Peers apply it as they apply any removal ([`ChangeSource::Remote`]).
    Evicted,
    /// A change undone because the group commit that carried it failed: the key is back to
    /// what it held durably.
    RolledBack,
}

/// A change to one key of the map, as recorded for persistence and subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The key that changed.
    pub key: Bytes,
    /// Which of its elements.
    pub elem: Elem,
    /// The entry now held, or `None` if the key's entry was dropped.
    pub entry: Option<Entry>,
    /// Why it changed.
    pub source: ChangeSource,
}

/// Counters a replica keeps about what it has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaStats {
    /// Remote entries that won and were installed.
    pub remote_applied: u64,
    /// Remote entries that lost to what was held (or were duplicates).
    pub remote_ignored: u64,
    /// Dead entries dropped by GC.
    pub gc_dropped: u64,
    /// Entries dropped by full resyncs.
    pub resync_dropped: u64,
    /// Full resyncs completed.
    pub full_resyncs: u64,
    /// Messages refused because a peer was behind our floors.
    pub refused_behind: u64,
    /// Remote entries ignored as stale: covered by our version vector, for a key we hold
    /// nothing for (we held it or something newer, and collected it).
    pub stale_ignored: u64,
    /// Garbage collections that dropped nothing because a member's own writes, as of its
    /// last acknowledgement, had not all reached us yet.
    pub gc_waiting: u64,
    // --- anti-entropy (see `crate::antientropy`) ---
    /// Anti-entropy exchanges started here that compared digests (the version vectors were
    /// equal and gap-free on both sides).
    pub ae_compared: u64,
    /// Anti-entropy exchanges in which this replica installed at least one repaired entry.
    pub repairs: u64,
    /// Entries this replica installed through anti-entropy: each a divergence that the sync
    /// protocol had missed. Zero in normal operation.
    pub repaired_entries: u64,
    /// Keys found holding the same version with different contents: anti-entropy cannot
    /// tell which copy is right, so it leaves them (logged).
    pub repair_conflicts: u64,
    /// Keys this replica evicted to stay under its memory limit (see [`crate::evict`]).
    pub evicted_keys: u64,
}

/// What a replica knows of another member of its cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    /// What it last acknowledged holding (see [`crate::sync::Ack`]).
    pub acked: VersionVector,
    /// The newest of its acknowledgements as of which this replica held every write of the
    /// member's own: what garbage collection goes by (see [`Replica::gc`]). It trails
    /// `acked` while writes of the member are on their way.
    pub usable: VersionVector,
    /// When we last heard from it (milliseconds since the Unix epoch, local clock), or first
    /// learned of it.
    pub heard_ms: u64,
    /// Silent for longer than the member horizon: left out of garbage collection, it will
    /// resync fully when it returns.
    pub left_out: bool,
    /// When its latest push or acknowledgement said it was under memory pressure (see
    /// [`crate::sync::Ack::pressed`]); 0 once one said it no longer is.
    pub pressed_ms: u64,
}

/// Most members a replica keeps track of (ids come from peers: bounded).
pub const MAX_MEMBERS: usize = 4096;

/// Default of [`Replica::set_member_horizon_ms`]: one hour.
pub const DEFAULT_MEMBER_HORIZON_MS: u64 = 3_600_000;

/// What one garbage collection pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// Dead entries dropped.
    pub dropped: usize,
    /// The pass stopped at its bound ([`Replica::gc_at_most`]): more may be collectable now.
    pub more: bool,
}

/// An in-memory LWW-map replica.
///
/// ```
/// use dice_core::{Limits, NodeId, Replica};
/// let mut a = Replica::new(NodeId::new(1).unwrap(), Limits::default());
/// a.write(b"k".as_slice().into(), Some(b"v1".as_slice().into()), None, 1_000).unwrap();
/// let e = a.write(b"k".as_slice().into(), Some(b"v2".as_slice().into()), None, 1_000).unwrap();
/// let mut b = Replica::new(NodeId::new(2).unwrap(), Limits::default());
/// b.apply(e, 1_000).unwrap();
/// assert_eq!(b.get(b"k", 1_000).unwrap().as_ref(), b"v2");
/// assert_eq!(a.digest(), b.digest());
/// ```
#[derive(Debug)]
pub struct Replica {
    id: NodeId,
    clock: HlcClock,
    limits: Limits,
    /// The map: one packed record per element of a key, found by the hash of its key and
    /// element (of its key alone for [`Elem::Key`]).
    map: HashTable<Record>,
    /// The keys holding counter elements, with those elements.
    typed: HashMap<Bytes, Typed>,
    /// The keys holding hash fields with a value (expired or not), with those fields.
    hashes: HashMap<Bytes, HashState>,
    /// Hash fields holding a value with an expiry: (expiry, dot), for garbage collection.
    expiring_fields: BTreeSet<(u64, NodeId, u64)>,
    /// Hash fields with counter elements, all keys together (for `used_memory`).
    hash_counter_fields: usize,
    /// The keys holding set elements, with their members and removals.
    sets: HashMap<Bytes, sets::SetState>,
    /// Members tracked by the sets' indexes, all keys together (for `used_memory`).
    set_members: usize,
    hasher: foldhash::fast::RandomState,
    vv: VersionVector,
    floors: VersionVector,
    /// origin → seq → hash of the key, for the entries currently held (the record is the one
    /// with that hash and that dot).
    by_dot: BTreeMap<NodeId, BTreeMap<u64, u64>>,
    /// Live entries with a TTL: (expiry, dot).
    expiring: BTreeSet<(u64, NodeId, u64)>,
    /// Tombstones: (physical time of their version, dot).
    tombstones: BTreeSet<(u64, NodeId, u64)>,
    /// Entries holding a value (expired or not).
    valued: usize,
    /// Wrapping sum of the hashes of the entries holding a value, expired or not: the digest.
    valued_hash: u64,
    /// The digest split by key bucket (`antientropy::bucket_of`): per bucket, the wrapping
    /// sum of the hashes of its entries holding a value. They add up to `valued_hash`.
    buckets: Box<[u64]>,
    resync_needed: AtomicBool,
    changes: Option<Vec<Change>>,
    stats: ReplicaStats,
    /// The highest seq of our own writes that a remote write replaced: a push range may only
    /// claim seqs above it (below, a missing seq may have lost to a write the receiver lacks).
    local_lost_to_remote: u64,
    /// Our own writes above `local_lost_to_remote` that a remote write replaced, by seq: what
    /// a push needs to claim past them (see `replica/claim.rs`).
    lost_own: BTreeMap<u64, claim::LostOwn>,
    /// Our own writes up to this seq are durable (`None`: every write is, as for a replica
    /// with no store). A write leaves this replica, by push or catch-up, only once durable:
    /// after a crash, the seqs of writes that were not are given to new writes.
    durable_local: Option<u64>,
    /// Our own durable writes whose entries a local write not durable yet replaced: seq of
    /// the replaced write → seq of the replacing one. Nothing at or past the lowest of them
    /// leaves the replica, since the durable state of that key would be missing from it.
    shadowed: BTreeMap<u64, u64>,
    /// When kept (see [`Replica::keep_undo`]): for every key changed since the durable state,
    /// what it held durably (`None`: nothing), so that a failed commit can be undone.
    undo: Option<HashMap<(Bytes, Elem), Option<Record>>>,
    /// What `undo` holds, counted as pending memory ([`crate::memory::UNDO_ENTRY`] each, and
    /// the keys and records it keeps).
    undo_bytes: usize,
    /// The other members of the cluster: every origin we hold writes of and every node that
    /// talked to us, with what each acknowledged holding.
    members: BTreeMap<NodeId, Member>,
    member_horizon_ms: u64,
    /// When garbage collection first ran knowing no member at all.
    alone_since_ms: Option<u64>,
    /// Bytes of the records held (see [`crate::memory`]).
    record_bytes: usize,
    /// Of those, the tombstones': how many, and their bytes.
    dead_records: usize,
    dead_record_bytes: usize,
    /// Recency or frequency of access, for eviction (empty without a memory limit).
    access: crate::evict::Access,
    /// Per origin, the seq up to which [`Replica::collect_stable_tombstones`] has looked.
    swept: BTreeMap<NodeId, u64>,
    /// This node is under memory pressure (set by the cache; see [`crate::sync::Ack::pressed`]):
    /// its pushes and acknowledgements say so.
    pressed: bool,
}

/// Remote timestamps further ahead than this are counted as clock skew (and accepted).
pub const DEFAULT_MAX_SKEW_MS: u64 = 60_000;

impl Replica {
    /// An empty replica for node `id`.
    pub fn new(id: NodeId, limits: Limits) -> Self {
        Replica {
            id,
            clock: HlcClock::new(Hlc::ZERO, DEFAULT_MAX_SKEW_MS),
            limits,
            map: HashTable::new(),
            typed: HashMap::new(),
            hashes: HashMap::new(),
            expiring_fields: BTreeSet::new(),
            hash_counter_fields: 0,
            sets: HashMap::new(),
            set_members: 0,
            hasher: foldhash::fast::RandomState::default(),
            vv: VersionVector::default(),
            floors: VersionVector::default(),
            by_dot: BTreeMap::new(),
            expiring: BTreeSet::new(),
            tombstones: BTreeSet::new(),
            valued: 0,
            valued_hash: 0,
            buckets: vec![0; crate::antientropy::BUCKETS].into_boxed_slice(),
            resync_needed: AtomicBool::new(false),
            changes: None,
            stats: ReplicaStats::default(),
            local_lost_to_remote: 0,
            lost_own: BTreeMap::new(),
            durable_local: None,
            shadowed: BTreeMap::new(),
            undo: None,
            undo_bytes: 0,
            members: BTreeMap::new(),
            member_horizon_ms: DEFAULT_MEMBER_HORIZON_MS,
            alone_since_ms: None,
            record_bytes: 0,
            dead_records: 0,
            dead_record_bytes: 0,
            access: crate::evict::Access::default(),
            swept: BTreeMap::new(),
            pressed: false,
        }
    }

    /// Rebuilds a replica from persisted state. Entries are trusted (they were validated when
    /// they were first written or received).
    pub fn restore(
        id: NodeId,
        limits: Limits,
        last_hlc: Hlc,
        vv: VersionVector,
        floors: VersionVector,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Self {
        let mut r = Replica::new(id, limits);
        let entries = entries.into_iter();
        r.reserve(entries.size_hint().0);
        for e in entries {
            r.load_set(e);
        }
        r.finish_load(last_hlc, &vv, &floors);
        r
    }

    /// Makes room for `additional` more entries.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let hasher = &self.hasher;
        self.map
            .reserve(additional, |rec| slot_hash(hasher, rec.key(), rec.elem()));
    }

    /// Loading persisted state: sets `key` to `e`, whatever it held.
    pub(crate) fn load_set(&mut self, e: Entry) {
        self.note_loaded(e.version.hlc);
        self.install(e, ChangeSource::Remote);
    }

    /// Loading persisted state: the clock never restarts below a loaded timestamp.
    fn note_loaded(&mut self, hlc: Hlc) {
        if hlc > self.clock.last() {
            self.clock = HlcClock::new(hlc, DEFAULT_MAX_SKEW_MS);
        }
    }

    /// Loading persisted state: sets the key of an entry given by its parts, whatever it held.
    pub(crate) fn load_parts(
        &mut self,
        key: &[u8],
        elem: Elem,
        value: Option<&[u8]>,
        version: Version,
        seq: u64,
        expires_at_ms: Option<u64>,
    ) {
        self.note_loaded(version.hlc);
        let record = Record::from_parts(key, elem, value, version, seq, expires_at_ms);
        self.install_record(record, ChangeSource::Remote);
    }

    /// Loading persisted state: drops `key`.
    pub(crate) fn load_remove(&mut self, key: &[u8], elem: Elem) {
        self.remove(key, elem, ChangeSource::Dropped);
    }

    /// Ends loading persisted state: the clock (at least `last_hlc` and every loaded
    /// timestamp), the version vector and the floors.
    pub(crate) fn finish_load(
        &mut self,
        last_hlc: Hlc,
        vv: &VersionVector,
        floors: &VersionVector,
    ) {
        self.clock = HlcClock::new(self.clock.last().max(last_hlc), DEFAULT_MAX_SKEW_MS);
        for (o, s) in vv.iter() {
            self.vv.set(o, s);
        }
        for (o, s) in floors.iter() {
            self.floors.set(o, s);
        }
        // An entry of ours beyond the saved vector (a write stored but not yet counted, e.g. by
        // a snapshot taken between commits): the next write must not reuse its seq.
        if let Some(&own_max) = self
            .by_dot
            .get(&self.id)
            .and_then(|seqs| seqs.keys().next_back())
        {
            self.vv.raise(self.id, own_max);
        }
        // Which of our writes lost to remote ones before the restart is not kept: claim no
        // push range that starts before it.
        self.local_lost_to_remote = self.vv.get(self.id);
        self.forget_lost_own();
        self.stats = ReplicaStats::default();
    }

    /// Sets how far ahead a remote timestamp may be before it is counted as skew.
    pub fn set_max_skew_ms(&mut self, max_skew_ms: u64) {
        self.clock = HlcClock::new(self.clock.last(), max_skew_ms);
    }

    /// Starts (or stops) recording changes for [`Replica::take_changes`].
    pub fn record_changes(&mut self, on: bool) {
        self.changes = on.then(Vec::new);
    }

    /// The changes recorded since the last call.
    pub fn take_changes(&mut self) -> Vec<Change> {
        self.changes
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// This replica's node id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The size limits enforced on writes and on remote entries.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The version vector.
    pub fn vv(&self) -> &VersionVector {
        &self.vv
    }

    /// The GC floors: per origin, the highest seq of a dead entry dropped here.
    pub fn floors(&self) -> &VersionVector {
        &self.floors
    }

    /// The greatest timestamp this replica's clock has produced or observed.
    pub fn last_hlc(&self) -> Hlc {
        self.clock.last()
    }

    /// Counters.
    pub fn stats(&self) -> ReplicaStats {
        self.stats
    }

    /// Remote timestamps seen further ahead of local time than the allowed skew.
    pub fn skew_events(&self) -> u64 {
        self.clock.skew_events()
    }

    /// The sequence number of this replica's latest local write.
    pub fn local_seq(&self) -> u64 {
        self.vv.get(self.id)
    }

    fn hash(&self, key: &[u8], elem: Elem) -> u64 {
        slot_hash(&self.hasher, key, elem)
    }

    /// The record of `key`'s own element.
    fn record(&self, key: &[u8]) -> Option<&Record> {
        self.slot(key, Elem::Key)
    }

    /// The record of one element of `key`.
    fn slot(&self, key: &[u8], elem: Elem) -> Option<&Record> {
        self.map.find(self.hash(key, elem), |r| {
            r.key() == key
                && (if elem == Elem::Key {
                    r.is_key()
                } else {
                    r.elem() == elem
                })
        })
    }

    /// The record holding dot `(origin, seq)`, whose key hashes to `hash`.
    fn record_at(&self, hash: u64, origin: NodeId, seq: u64) -> Option<&Record> {
        self.map
            .find(hash, |r| r.seq() == seq && r.origin() == origin)
    }

    /// The record holding dot `(origin, seq)`.
    fn record_of_dot(&self, origin: NodeId, seq: u64) -> Option<&Record> {
        let hash = *self.by_dot.get(&origin)?.get(&seq)?;
        self.record_at(hash, origin, seq)
    }

    /// The live value of `key` at `now_ms`: its string, or what its counter reads as.
    pub fn get(&self, key: &[u8], now_ms: u64) -> Option<&[u8]> {
        self.touch(key, now_ms);
        self.get_with_expiry_ref(key, now_ms).map(|(v, _)| v)
    }

    fn get_with_expiry_ref(&self, key: &[u8], now_ms: u64) -> Option<(&[u8], Option<u64>)> {
        if !self.hashes.is_empty() && self.hash_visible(key, now_ms).is_some() {
            // A hash newer than the string: the key is a hash.
            return None;
        }
        if !self.sets.is_empty() && self.set_visible(key, now_ms).is_some() {
            // A set newer than the string: the key is a set.
            return None;
        }
        let header = self.record(key);
        if let Some(r) = header
            && r.value().is_some()
            && is_dead(false, r.expires_at_ms(), now_ms)
        {
            // Expired: the whole key is gone, its counter included.
            return None;
        }
        let string = header.and_then(|r| r.value().map(|v| (v, r.expires_at_ms())));
        if !self.typed.is_empty()
            && let Some(rendered) = self.typed.get(key).and_then(|t| t.rendered.as_deref())
        {
            return Some((rendered, string.and_then(|(_, t)| t)));
        }
        string
    }

    /// The live value of `key` and its expiry.
    pub fn get_with_expiry(&self, key: &[u8], now_ms: u64) -> Option<(Bytes, Option<u64>)> {
        self.touch(key, now_ms);
        self.get_with_expiry_ref(key, now_ms)
            .map(|(v, t)| (Bytes::copy_from_slice(v), t))
    }

    /// Whether `key` reads as present at `now_ms`.
    pub fn contains(&self, key: &[u8], now_ms: u64) -> bool {
        if !self.hashes.is_empty() && self.hash_live(key, now_ms).is_some() {
            return true;
        }
        if !self.sets.is_empty() && self.set_live(key, now_ms).is_some() {
            return true;
        }
        if let Some(r) = self.record(key)
            && r.value().is_some()
        {
            return !is_dead(false, r.expires_at_ms(), now_ms);
        }
        self.typed.get(key).is_some_and(|t| t.effective)
    }

    /// The entry held for `key`'s own element ([`Elem::Key`]), dead or alive.
    pub fn entry(&self, key: &[u8]) -> Option<Entry> {
        self.record(key).map(Record::to_entry)
    }

    /// The entry held for one element of `key`, dead or alive.
    pub fn element(&self, key: &[u8], elem: Elem) -> Option<Entry> {
        self.slot(key, elem).map(Record::to_entry)
    }

    /// Whether `key` holds elements besides [`Elem::Key`] (a counter, dead or alive).
    pub fn has_elements(&self, key: &[u8]) -> bool {
        !self.typed.is_empty() && self.typed.contains_key(key)
    }

    /// The elements `key` holds besides [`Elem::Key`].
    pub fn elements_of(&self, key: &[u8]) -> Vec<Elem> {
        self.typed
            .get(key)
            .map(|t| t.elems.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The greatest version among the elements `key` holds: it changes with any write to the
    /// key, here or from a peer (Redis's `WATCH` compares it).
    pub fn key_version(&self, key: &[u8]) -> Option<Version> {
        let mut v = self.record(key).map(Record::version);
        if let Some(h) = self.hashes.get(key) {
            v = v.max(Some(h.last));
        }
        v = v.max(self.set_last(key));
        if let Some(t) = self.typed.get(key) {
            for e in &t.elems {
                if let Some(r) = self.slot(key, *e) {
                    v = v.max(Some(r.version()));
                }
            }
        }
        v
    }

    /// The counter elements of `key`, gathered.
    pub(crate) fn counter_view(&self, key: &[u8]) -> CounterView {
        let mut view = CounterView::default();
        let Some(t) = self.typed.get(key) else {
            return view;
        };
        for e in &t.elems {
            let Some(v) = self
                .slot(key, *e)
                .and_then(|r| r.value().map(|v| (r.seq(), v)))
            else {
                continue;
            };
            match e {
                Elem::Count(o) => {
                    if let Ok(c) = Contribution::decode(v.1) {
                        view.contributions.push((*o, v.0, c));
                    }
                }
                Elem::Reset(..) => {
                    if let Ok(rr) = ResetRecord::decode(v.1) {
                        view.add_reset(&rr);
                    }
                }
                _ => {}
            }
        }
        view
    }

    /// Every entry held, dead or alive, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.map.iter().map(Record::to_entry)
    }

    /// The keys that read as present at `now_ms`, in no particular order, borrowed from the
    /// map (no key or value is copied).
    pub fn live_keys(&self, now_ms: u64) -> impl Iterator<Item = &[u8]> + '_ {
        let strings = self
            .map
            .iter()
            .filter(|r| r.is_key())
            .filter(move |r| !is_dead(r.is_tombstone(), r.expires_at_ms(), now_ms))
            .map(Record::key);
        // Counters with no string under them.
        let counters = self
            .typed
            .iter()
            .filter(|(_, t)| t.effective)
            .filter(|(k, _)| self.record(k).is_none_or(Record::is_tombstone))
            .map(|(k, _)| k.as_ref());
        // Hashes with no live string under them.
        let hashes = self
            .hashes
            .keys()
            .filter(move |k| {
                self.hash_live(k, now_ms).is_some() && self.string_version(k, now_ms).is_none()
            })
            .map(|k| k.as_ref());
        // Sets with no live string or hash under them.
        let sets = self
            .sets
            .keys()
            .filter(move |k| {
                self.set_live(k, now_ms).is_some()
                    && self.string_version(k, now_ms).is_none()
                    && self.hash_live(k, now_ms).is_none()
            })
            .map(|k| k.as_ref());
        strings.chain(counters).chain(hashes).chain(sets)
    }

    /// Up to `max` entries (and about `max_bytes`) in dot order (origin, then seq) from
    /// `cursor` on (`None`: from the start), and the cursor to go on from, `None` once the
    /// walk is done. Between calls the map may change: an entry
    /// rewritten meanwhile may be seen twice or not at all (its new version is newer than the
    /// walk's start, which is how the store's snapshots account for it).
    pub fn entries_after_dot(
        &self,
        cursor: Option<(NodeId, u64)>,
        max: usize,
        max_bytes: usize,
    ) -> (Vec<Entry>, Option<(NodeId, u64)>) {
        let mut bytes = 0usize;
        let mut out = Vec::with_capacity(max.min(self.map.len()));
        let origins = match cursor {
            Some((o, _)) => self.by_dot.range(o..),
            None => self.by_dot.range(..),
        };
        for (&origin, seqs) in origins {
            let seqs = match cursor {
                Some((o, s)) if o == origin => seqs.range(s..),
                _ => seqs.range(..),
            };
            for (&seq, &hash) in seqs {
                if out.len() == max || (bytes >= max_bytes && !out.is_empty()) {
                    return (out, Some((origin, seq)));
                }
                if let Some(e) = self.record_at(hash, origin, seq).map(Record::to_entry) {
                    bytes += e.wire_size();
                    out.push(e);
                }
            }
        }
        (out, None)
    }

    /// Number of entries held, dead ones included.
    pub fn entry_count(&self) -> usize {
        self.map.len()
    }

    /// Number of keys that read as present at `now_ms`.
    pub fn live_len(&self, now_ms: u64) -> usize {
        let expired = self.expiring.range(..expiry_bound(now_ms)).count();
        let counters = self
            .typed
            .iter()
            .filter(|(k, t)| t.effective && self.record(k).is_none_or(Record::is_tombstone))
            .count();
        let hashes = self
            .hashes
            .keys()
            .filter(|k| {
                self.hash_live(k, now_ms).is_some() && self.string_version(k, now_ms).is_none()
            })
            .count();
        let sets = self
            .sets
            .keys()
            .filter(|k| {
                self.set_live(k, now_ms).is_some()
                    && self.string_version(k, now_ms).is_none()
                    && self.hash_live(k, now_ms).is_none()
            })
            .count();
        self.valued - expired + counters + hashes + sets
    }

    /// Number of keys that read as present at `now_ms` and carry a TTL.
    pub fn live_with_ttl(&self, now_ms: u64) -> usize {
        self.expiring.len() - self.expiring.range(..expiry_bound(now_ms)).count()
    }

    /// The expiry of the entry held for `key`, dead or alive (`None`: no entry, or one
    /// without an expiry). Copies nothing.
    pub fn expires_at(&self, key: &[u8]) -> Option<u64> {
        self.record(key)?.expires_at_ms()
    }

    /// The keys holding a value whose expiry is in `(after_ms, until_ms]`, in expiry order,
    /// with their expiry, borrowed from the map: the keys that stop reading as present in
    /// that window (for whoever must hear about it, such as a client-side cache).
    pub fn expiring_between(
        &self,
        after_ms: u64,
        until_ms: u64,
    ) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        let range = (after_ms < until_ms)
            .then(|| {
                self.expiring
                    .range(expiry_bound(after_ms)..expiry_bound(until_ms))
            })
            .into_iter()
            .flatten();
        range.filter_map(move |&(at, origin, seq)| {
            self.record_of_dot(origin, seq).map(|r| (at, r.key()))
        })
    }

    /// The earliest expiry later than `after_ms` of a key holding a value.
    pub fn next_expiry_after(&self, after_ms: u64) -> Option<u64> {
        self.expiring
            .range(expiry_bound(after_ms)..)
            .next()
            .map(|&(at, _, _)| at)
    }

    /// Live keys starting with `prefix`, with their values, sorted by key.
    pub fn scan_prefix(&self, prefix: &[u8], now_ms: u64) -> Vec<(Bytes, Bytes)> {
        let mut out: Vec<(Bytes, Bytes)> = self
            .live_keys(now_ms)
            .filter(|k| k.starts_with(prefix))
            .filter_map(|k| {
                self.get(k, now_ms)
                    .map(|v| (Bytes::copy_from_slice(k), Bytes::copy_from_slice(v)))
            })
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The digest of the state held: a pure function of the entries this replica holds, so
    /// that two replicas holding the same entries have equal digests whatever their clocks.
    ///
    /// It is the wrapping sum, over every held entry that carries a value (expired or not),
    /// of an xxh3-64 hash of that entry's key, element, value, version (`hlc` and `origin`)
    /// and expiry (absent or `expires_at_ms`). Tombstones are not covered: a tombstone and no
    /// entry at all read the same, and either may be held after a delete depending on GC
    /// timing. For the same reason the elements of a dead counter (every contribution observed
    /// by a reset) are not covered: they read as nothing and are collected on their own
    /// schedule. The sequence number is not covered either (it names the write, the version
    /// orders it).
    ///
    /// An expired entry is covered until garbage collection drops it (long after it expired,
    /// see the GC grace), not until it expires: where it expires depends on the local clock,
    /// which would make converged nodes with skewed clocks disagree. So two converged nodes
    /// can differ while one has collected an expired entry and the other not yet.
    ///
    /// Kept up to date as entries change (in `index`/`unindex`): reading it costs nothing.
    pub fn digest(&self) -> u64 {
        self.valued_hash
    }

    /// The digest computed from every entry, for tests of the kept one.
    #[doc(hidden)]
    pub fn digest_by_scan(&self) -> u64 {
        self.map
            .iter()
            .filter(|r| {
                !r.is_tombstone()
                    && !r.elem().is_counter()
                    && !r.elem().is_set()
                    && !r.elem().is_field_counter()
            })
            .map(record_hash)
            .chain(self.set_keys().map(|k| self.set_digest_by_scan(k)))
            .chain(
                self.keys_with_field_counters()
                    .iter()
                    .map(|k| self.field_counters_digest_by_scan(k)),
            )
            .chain(
                self.map
                    .iter()
                    .filter(|r| r.elem().is_counter())
                    .map(|r| r.key())
                    .collect::<BTreeSet<&[u8]>>()
                    .into_iter()
                    .map(|k| self.counter_digest(k)),
            )
            .fold(0u64, u64::wrapping_add)
    }

    /// What the counter of `key` adds to the digest: per contribution that counts, a hash of
    /// its entry and of the observation it counts from. Nothing when the counter is dead, and
    /// nothing of resets that only observed older runs: some nodes may have collected those
    /// and others not yet.
    fn counter_digest(&self, key: &[u8]) -> u64 {
        self.counting_digest(key, &self.counter_view(key), Elem::Count)
    }

    /// The digest of a counter's contributions that count (`elem` names the element of each
    /// origin's: `Elem::Count` for a counter key, a field's counter element for a hash field):
    /// a hash of each one's entry and of the observation it counts from.
    pub(crate) fn counting_digest(
        &self,
        key: &[u8],
        view: &CounterView,
        elem: impl Fn(NodeId) -> Elem,
    ) -> u64 {
        let mut sum = 0u64;
        for (origin, _, _, obs) in view.counting() {
            let Some(r) = self.slot(key, elem(origin)) else {
                continue;
            };
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(&record_hash(r).to_le_bytes());
            match obs {
                Some(o) => {
                    h.update(&[1]);
                    h.update(&o.seq.to_le_bytes());
                    h.update(&o.total.int.to_le_bytes());
                    h.update(&o.total.float.to_le_bytes());
                }
                None => h.update(&[0]),
            }
            sum = sum.wrapping_add(h.digest());
        }
        sum
    }

    // --- anti-entropy bookkeeping (see `crate::antientropy`) ---

    /// The digest split into [`crate::antientropy::BUCKETS`] buckets by a hash of the key:
    /// per bucket, what [`Replica::digest`] covers of its keys (tombstones left out). Kept up
    /// to date with the digest, in `index`/`unindex`.
    pub fn bucket_digests(&self) -> &[u64] {
        &self.buckets
    }

    /// The bucket digests computed from every entry, for tests of the kept ones.
    #[doc(hidden)]
    pub fn bucket_digests_by_scan(&self) -> Vec<u64> {
        let mut out = vec![0u64; crate::antientropy::BUCKETS];
        for r in self.map.iter().filter(|r| {
            !r.is_tombstone()
                && !r.elem().is_counter()
                && !r.elem().is_set()
                && !r.elem().is_field_counter()
        }) {
            let b = crate::antientropy::bucket_of_key(r.key());
            out[b] = out[b].wrapping_add(record_hash(r));
        }
        let typed: BTreeSet<&[u8]> = self
            .map
            .iter()
            .filter(|r| r.elem().is_counter())
            .map(|r| r.key())
            .collect();
        for k in typed {
            let b = crate::antientropy::bucket_of_key(k);
            out[b] = out[b].wrapping_add(self.counter_digest(k));
        }
        for k in self.set_keys() {
            let b = crate::antientropy::bucket_of_key(k);
            out[b] = out[b].wrapping_add(self.set_digest_by_scan(k));
        }
        for k in self.keys_with_field_counters() {
            let b = crate::antientropy::bucket_of_key(&k);
            out[b] = out[b].wrapping_add(self.field_counters_digest_by_scan(&k));
        }
        out
    }

    /// Whether `key`'s counter counts (some contribution not observed by a reset).
    pub(crate) fn counter_counts(&self, key: &[u8]) -> bool {
        self.typed.get(key).is_some_and(|t| t.effective)
    }

    /// Every record held, in no order (anti-entropy walks them to list a few buckets).
    pub(crate) fn records(&self) -> impl Iterator<Item = &Record> + '_ {
        self.map.iter()
    }

    /// Whether some entry held is past the version vector (received ahead of a gap): then
    /// the vector does not describe the state, and digests are not compared.
    pub(crate) fn holds_beyond_vv(&self) -> bool {
        self.by_dot.iter().any(|(o, seqs)| {
            seqs.keys()
                .next_back()
                .is_some_and(|&s| s > self.vv.get(*o))
        })
    }

    /// The counters, for anti-entropy to update.
    pub(crate) fn stats_mut(&mut self) -> &mut ReplicaStats {
        &mut self.stats
    }

    /// Merges an entry received by anti-entropy. As [`Replica::apply`], except for one case:
    /// when `vv_equal` (the sender's version vector equals ours and neither holds entries
    /// past it), a **live** entry for a key we hold nothing for is installed although our
    /// vector covers it. `apply` would ignore it as a stale copy of a collected write, but
    /// with equal vectors it cannot be one: had we collected it or a newer (dead) write of
    /// the key, that dead write was stable, so the sender acknowledged it and holds it or
    /// something newer, not this entry. We lost it behind the protocol's back. A dead entry
    /// is still ignored (we may well have collected it; either way it reads as absent).
    ///
    /// A counter element is not dead in that sense, yet a counter collected here may still
    /// be held (dead) by the sender: the sender sends counter elements only of counters that
    /// count there (see `antientropy`), and those we cannot have collected (a counter is
    /// collected when dead, and with equal vectors both sides hold the resets that made it
    /// so).
    pub(crate) fn apply_repair(
        &mut self,
        entry: Entry,
        now_ms: u64,
        vv_equal: bool,
    ) -> Result<bool> {
        self.validate_remote(&entry)?;
        let absent_but_covered = self.slot(&entry.key, entry.elem).is_none()
            && entry.seq <= self.vv.get(entry.version.origin);
        if !(vv_equal && absent_but_covered && !entry.is_dead(now_ms)) {
            return self.apply(entry, now_ms);
        }
        // A set removal that observes no add held here is garbage we collected: nothing to
        // repair.
        if matches!(entry.elem, Elem::SetRemove(..))
            && !self.removal_effective(&entry.key, entry.value.as_deref())
        {
            return self.apply(entry, now_ms);
        }
        self.clock.observe(entry.version.hlc, now_ms);
        self.touch_written(&entry, now_ms);
        self.install(entry, ChangeSource::Remote);
        self.stats.remote_applied += 1;
        Ok(true)
    }

    /// Sets what `key` holds (`None`: nothing) behind the protocol's back: no change is
    /// recorded (so nothing is persisted or sent), the version vector is left alone. Only to
    /// make divergences that anti-entropy must find, in tests.
    #[doc(hidden)]
    pub fn set_behind_protocol(&mut self, key: &[u8], entry: Option<&Entry>) {
        let elem = entry.map_or(Elem::Key, |e| e.elem);
        let hash = self.hash(key, elem);
        self.take_record(hash, key, elem);
        if let Some(e) = entry.filter(|e| e.key.as_ref() == key) {
            self.put_record(Record::new(e));
        }
    }

    /// A local write: `value` `None` deletes. Returns the entry written.
    pub fn write(
        &mut self,
        key: Bytes,
        value: Option<Bytes>,
        expires_at_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<Entry> {
        self.limits.check(&key, value.as_deref())?;
        if value.is_some() {
            self.touch(&key, now_ms);
        }
        // A string written over a counter replaces it: reset what we observed of it (what we
        // did not observe, concurrent increments, still counts on top of the new value).
        if self.typed.contains_key(&key) {
            let view = self.counter_view(&key);
            if view.sum().is_some() {
                self.write_reset(&key, &view, now_ms)?;
            }
        }
        // And so does it replace a hash: every field observed here is removed.
        if !self.hashes.is_empty() && self.hashes.contains_key(&key) {
            self.tombstone_fields(&key, now_ms)?;
        }
        // And a set: every add that counts here is removed.
        if !self.sets.is_empty() && self.sets.contains_key(&key) {
            self.remove_set_observed(&key, now_ms)?;
        }
        self.write_elem(key, Elem::Key, value, expires_at_ms, now_ms)
    }

    /// A local write of one element, with the next seq and a fresh version.
    fn write_elem(
        &mut self,
        key: Bytes,
        elem: Elem,
        value: Option<Bytes>,
        expires_at_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<Entry> {
        let hlc = self.clock.tick(now_ms);
        let seq = self.vv.get(self.id) + 1;
        self.vv.set(self.id, seq);
        let entry = Entry {
            key,
            elem,
            value,
            version: Version {
                hlc,
                origin: self.id,
            },
            seq,
            expires_at_ms: expires_at_ms.map(|t| t.min(i64::MAX as u64)),
        };
        self.touch_written(&entry, now_ms);
        self.install(entry.clone(), ChangeSource::Local);
        Ok(entry)
    }

    /// Writes our reset of `key`'s counter: it observes everything `view` holds.
    fn write_reset(&mut self, key: &Bytes, view: &CounterView, now_ms: u64) -> Result<Entry> {
        let reset = view.reset_all().encode();
        if reset.len() > self.limits.max_value_len {
            return Err(Error::ValueTooLarge {
                len: reset.len(),
                max: self.limits.max_value_len,
            });
        }
        let seq = self.vv.get(self.id) + 1;
        self.write_elem(
            key.clone(),
            Elem::Reset(self.id, seq),
            Some(Bytes::from(reset)),
            None,
            now_ms,
        )
    }

    /// `INCRBY` and `INCRBYFLOAT`: adds `by` to `key`'s counter (a key holding nothing counts
    /// from 0, a string from its number). Only this node's contribution is written (one
    /// element), so increments made at once on several nodes all count. Returns the value
    /// the key reads as afterwards, and the entry written.
    ///
    /// Errors as Redis's: [`Error::NotAnInteger`] (the value is not an integer, for an
    /// integer increment), [`Error::NotAFloat`], [`Error::Overflow`] (the result leaves
    /// `i64`), [`Error::NanOrInfinity`].
    pub fn incr(&mut self, key: Bytes, by: Increment, now_ms: u64) -> Result<(Bytes, Entry)> {
        self.limits.check(&key, None)?;
        let header = self.record(&key);
        let expired = header
            .is_some_and(|r| r.value().is_some() && is_dead(false, r.expires_at_ms(), now_ms));
        let current = self.get(&key, now_ms).map(<[u8]>::to_vec);
        let delta = match by {
            Increment::Int(d) => {
                let cur = match &current {
                    Some(v) => parse_int(v).ok_or(Error::NotAnInteger)?,
                    None => 0,
                };
                cur.checked_add(d).ok_or(Error::Overflow)?;
                Amount {
                    int: i128::from(d),
                    float: 0.0,
                }
            }
            Increment::Float(f) => {
                let cur = match &current {
                    Some(v) => parse_float(v).ok_or(Error::NotAFloat)?,
                    None => 0.0,
                };
                if !f.is_finite() || !(cur + f).is_finite() {
                    return Err(Error::NanOrInfinity);
                }
                Amount { int: 0, float: f }
            }
        };
        let mut view = self.counter_view(&key);
        if expired {
            // The key expired: it starts again from nothing, here as on every node that sees
            // this write. Reset what it held, and replace the expired string.
            if !view.contributions.is_empty() {
                self.write_reset(&key, &view, now_ms)?;
                view = self.counter_view(&key);
            }
            self.write_elem(key.clone(), Elem::Key, None, None, now_ms)?;
        }
        let seq = self.vv.get(self.id) + 1;
        let contribution = match view.of(self.id) {
            Some(c) if !view.starts_new_run(self.id) => Contribution {
                run: c.run,
                total: Amount {
                    int: c.total.int.wrapping_add(delta.int),
                    float: c.total.float + delta.float,
                },
            },
            _ => Contribution {
                run: seq,
                total: delta,
            },
        };
        let entry = self.write_elem(
            key.clone(),
            Elem::Count(self.id),
            Some(Bytes::from(contribution.encode())),
            None,
            now_ms,
        )?;
        let now = self.get(&key, now_ms).map(Bytes::copy_from_slice);
        Ok((now.unwrap_or_default(), entry))
    }

    /// Checks a remote entry against the limits and the invariants of ids and timestamps.
    pub fn validate_remote(&self, e: &Entry) -> Result<()> {
        self.limits.check(&e.key, e.value.as_deref())?;
        let bad = |reason: &'static str| {
            Err(Error::InvalidEntry {
                reason,
                key_prefix: e.key.iter().take(32).copied().collect(),
            })
        };
        if e.seq == 0 {
            return bad("sequence number 0");
        }
        if e.version.hlc.as_u64() > i64::MAX as u64 {
            return bad("timestamp out of range");
        }
        if NodeId::new(e.version.origin.as_u64()).is_none() {
            return bad("origin id out of range");
        }
        if e.expires_at_ms.is_some_and(|t| t > i64::MAX as u64) {
            return bad("expiry out of range");
        }
        if let Elem::Field(id) = e.elem
            && let Some(v) = &e.value
            && decode_field(v).is_none_or(|(name, _)| FieldId::of(name) != id)
        {
            return bad("a hash field whose value does not name it");
        }
        // A field's tombstone carries the timestamp of the write it observed, which came
        // before it: a later one would remove writes made after it.
        if let Elem::Field(_) = e.elem
            && e.value.is_none()
            && e.expires_at_ms.is_some_and(|t| t >= e.version.hlc.as_u64())
        {
            return bad("a hash field removal that observed a write after itself");
        }
        if e.elem.is_field_counter() {
            return match Self::validate_field_counter(e) {
                Ok(()) => Ok(()),
                Err(reason) => bad(reason),
            };
        }
        if e.elem.is_set() {
            if e.elem.owner() != Some(e.version.origin) {
                return bad("a set element written by another node than its owner");
            }
            let Some(v) = &e.value else {
                return bad("a set element without a value");
            };
            let valid = match e.elem {
                Elem::Member(id, _) => FieldId::of(v) == id,
                Elem::SetRemove(_, seq) => {
                    seq == e.seq && e.expires_at_ms.is_none() && crate::set::observations(v).is_ok()
                }
                _ => false,
            };
            if !valid {
                return bad("a set element that does not decode or does not name itself");
            }
            return Ok(());
        }
        if let Some(owner) = e.elem.owner() {
            if owner != e.version.origin {
                return bad("a counter element written by another node than its owner");
            }
            if e.expires_at_ms.is_some() {
                return bad("a counter element with an expiry");
            }
            let Some(v) = &e.value else {
                return bad("a counter element without a value");
            };
            let valid = match e.elem {
                Elem::Count(_) => Contribution::decode(v).is_ok(),
                Elem::Reset(_, seq) => seq == e.seq && ResetRecord::decode(v).is_ok(),
                _ => true,
            };
            if !valid {
                return bad("a counter element that does not decode");
            }
        }
        Ok(())
    }

    /// Merges a remote entry. Returns whether it won (and is now held).
    pub fn apply(&mut self, entry: Entry, now_ms: u64) -> Result<bool> {
        self.validate_remote(&entry)?;
        if self.clock.observe(entry.version.hlc, now_ms) {
            tracing::warn!(
                origin = %entry.version.origin,
                remote_ms = entry.version.hlc.physical_ms(),
                now_ms,
                "remote timestamp far ahead of local clock; accepted"
            );
        }
        if entry.version.origin == self.id && entry.seq > self.vv.get(self.id) {
            // Our own write we do not remember (a copied data dir?): never reuse its seq.
            tracing::warn!(
                seq = entry.seq,
                "received a write of our own origin from the future"
            );
            self.vv.set(self.id, entry.seq);
        }
        let current = self.slot(&entry.key, entry.elem);
        if current.is_none() && entry.seq <= self.vv.get(entry.version.origin) {
            // We held this write or a newer one of its key, and collected it (a delete or an
            // expiry, stable everywhere): this copy is stale, from a message that took long
            // or from a replica that has not caught up. Installing it would resurrect it.
            self.stats.stale_ignored += 1;
            self.stats.remote_ignored += 1;
            return Ok(false);
        }
        let wins = current.is_none_or(|cur| match entry.elem {
            // A field's tombstone removes only the write it observed.
            Elem::Field(_) => crate::entry::field_wins(
                (entry.version, entry.value.is_none(), entry.expires_at_ms),
                (cur.version(), cur.is_tombstone(), cur.expires_at_ms()),
            ),
            _ => cur.version() < entry.version,
        });
        if wins {
            let mut entry = entry;
            if matches!(entry.elem, Elem::FieldReset(..)) {
                merge_older_reset(self.slot(&entry.key, entry.elem), &mut entry);
            }
            // Arrived: as recent as a local write, not the coldest key here.
            self.touch_written(&entry, now_ms);
            self.install(entry, ChangeSource::Remote);
            self.stats.remote_applied += 1;
        } else {
            self.stats.remote_ignored += 1;
        }
        Ok(wins)
    }

    /// Replaces what `entry.key` holds by `entry`, keeping the indexes in step.
    fn install(&mut self, entry: Entry, source: ChangeSource) {
        let old = self.install_record(Record::new(&entry), source);
        if source == ChangeSource::Local
            && let (Some(old), Some(durable)) = (&old, self.durable_local)
            && old.origin() == self.id
            && old.seq() <= durable
        {
            self.shadowed.insert(old.seq(), entry.seq);
        }
        self.note_undo(&entry.key, entry.elem, old);
        if let Some(changes) = self.changes.as_mut() {
            changes.push(Change {
                key: entry.key.clone(),
                elem: entry.elem,
                entry: Some(entry),
                source,
            });
        }
    }

    /// Replaces what the record's key holds by it, keeping the indexes in step (no change is
    /// recorded). Returns what the key held.
    fn install_record(&mut self, record: Record, source: ChangeSource) -> Option<Record> {
        let by = (record.origin(), record.seq());
        let old = self.put_record(record);
        if source == ChangeSource::Remote
            && let Some(old) = &old
            && old.origin() == self.id
        {
            let hash = self.hash(old.key(), old.elem());
            self.note_lost_own(old.seq(), hash, by);
        }
        old
    }

    /// Sets the record's key to it, indexes in step; returns what the key held. No bookkeeping
    /// beyond the indexes.
    fn put_record(&mut self, record: Record) -> Option<Record> {
        let elem = record.elem();
        let hash = self.hash(record.key(), elem);
        let old = self.take_record_only(hash, record.key(), elem);
        self.index(hash, &record);
        let key = (elem.is_counter()
            || (elem == Elem::Key
                && !self.typed.is_empty()
                && self.typed.contains_key(record.key())))
        .then(|| Bytes::copy_from_slice(record.key()));
        let field = elem
            .field_id()
            .filter(|id| elem.is_field_counter() || self.has_field_counter(record.key(), *id));
        let counter_key =
            field.map(|id| (Bytes::copy_from_slice(record.key()), id, record.version()));
        let hasher = &self.hasher;
        self.map
            .insert_unique(hash, record, |r| slot_hash(hasher, r.key(), r.elem()));
        if let Some((key, id, version)) = counter_key {
            if elem.is_field_counter() {
                self.add_field_counter_elem(&key, elem, version);
            }
            self.refresh_field_counter(&key, id);
        }
        if let Some(key) = key {
            if elem.is_counter() {
                self.typed
                    .entry(key.clone())
                    .or_default()
                    .elems
                    .insert(elem);
            }
            self.refresh_typed(&key);
        }
        old
    }

    /// Takes the record of `key`'s element `elem` (whose hash is `hash`) out of the map and
    /// the indexes.
    fn take_record(&mut self, hash: u64, key: &[u8], elem: Elem) -> Option<Record> {
        let old = self.take_record_only(hash, key, elem)?;
        self.refresh_typed(key);
        if let Some(id) = elem.field_id()
            && self.has_field_counter(key, id)
        {
            self.refresh_field_counter(key, id);
        }
        Some(old)
    }

    /// [`Replica::take_record`] without refreshing the key's counter state.
    fn take_record_only(&mut self, hash: u64, key: &[u8], elem: Elem) -> Option<Record> {
        let found = self
            .map
            .find_entry(hash, |r| r.key() == key && r.elem() == elem)
            .ok()?;
        let (old, _) = found.remove();
        self.unindex(&old);
        if elem.is_counter()
            && let Some(t) = self.typed.get_mut(key)
        {
            t.elems.remove(&elem);
        }
        if elem.is_field_counter() {
            self.drop_field_counter_elem(key, elem);
        }
        Some(old)
    }

    /// Recomputes what `key`'s counter elements add to the digest, and whether its counter
    /// counts, after one of them changed.
    fn refresh_typed(&mut self, key: &[u8]) {
        if self.typed.is_empty() {
            return;
        }
        let Some(t) = self.typed.get(key) else {
            return;
        };
        let old = t.digest;
        let (digest, rendered) = if t.elems.is_empty() {
            (0, None)
        } else {
            match self.counter_view(key).sum() {
                Some(sum) => {
                    let digest = self.counter_digest(key);
                    // A counter counts from the string it was set to, or from 0 when that is
                    // not a number (a SET of a non-number concurrent with an INCR).
                    let base = self.record(key).and_then(Record::value).and_then(as_number);
                    (digest, Some(render(base, sum).into_boxed_slice()))
                }
                None => (0, None),
            }
        };
        self.valued_hash = self.valued_hash.wrapping_sub(old).wrapping_add(digest);
        let b = crate::antientropy::bucket_of_key(key);
        self.buckets[b] = self.buckets[b].wrapping_sub(old).wrapping_add(digest);
        if let Some(t) = self.typed.get_mut(key) {
            if t.elems.is_empty() {
                self.typed.remove(key);
            } else {
                t.digest = digest;
                t.effective = rendered.is_some();
                t.rendered = rendered;
            }
        }
    }

    /// Drops what `key`'s element `elem` holds (no tombstone is left). Returns whether it
    /// held anything.
    fn remove(&mut self, key: &[u8], elem: Elem, source: ChangeSource) -> bool {
        let Some(old) = self.take_record(self.hash(key, elem), key, elem) else {
            return false;
        };
        let key = Bytes::copy_from_slice(old.key());
        if let Some(changes) = self.changes.as_mut() {
            changes.push(Change {
                key: key.clone(),
                elem,
                entry: None,
                source,
            });
        }
        self.note_undo(&key, elem, Some(old));
        true
    }

    /// Keeps what `key`'s element held durably, `before`, unless it changed already since the
    /// durable state (what it held then is kept).
    fn note_undo(&mut self, key: &Bytes, elem: Elem, before: Option<Record>) {
        let Some(undo) = self.undo.as_mut() else {
            return;
        };
        if let std::collections::hash_map::Entry::Vacant(v) = undo.entry((key.clone(), elem)) {
            self.undo_bytes += undo_cost(key, before.as_ref());
            v.insert(before);
        }
    }

    /// Bytes of the undo records kept for changes not durable yet (see [`Replica::keep_undo`]).
    pub(crate) fn undo_bytes(&self) -> usize {
        self.undo_bytes
    }

    /// Starts keeping what each changed key held durably, for [`Replica::rollback`]. A store
    /// reports durable states with [`Replica::set_durable`] and [`Replica::settle_undo`].
    pub(crate) fn keep_undo(&mut self) {
        self.undo = Some(HashMap::new());
    }

    /// Our own writes up to `seq` are durable: they may leave this replica.
    pub(crate) fn set_durable(&mut self, seq: u64) {
        self.durable_local = Some(seq);
        self.shadowed.retain(|_, by| *by > seq);
    }

    /// `key` is durably in the state `now` (`None`: absent): forget its undo record, or, when
    /// it changed again since (`changed_since`), make `now` the state to go back to.
    pub(crate) fn settle_undo(
        &mut self,
        slot: &(Bytes, Elem),
        now: Option<&Entry>,
        changed_since: bool,
    ) {
        let Some(undo) = self.undo.as_mut() else {
            return;
        };
        let before = if changed_since {
            let record = now.map(Record::new);
            self.undo_bytes += undo_cost(&slot.0, record.as_ref());
            undo.insert(slot.clone(), record)
        } else {
            undo.remove(slot)
        };
        if let Some(before) = before {
            self.undo_bytes -= undo_cost(&slot.0, before.as_ref());
        }
        // A flood leaves a table sized for its peak (a follower's held 48 MB of empty slots
        // long after): give the room back once it is mostly empty.
        if undo.capacity() > 4096 && undo.len() < undo.capacity() / 8 {
            undo.shrink_to(undo.len() * 2);
        }
    }

    /// Undoes every change since the durable state: each changed key gets back what it held
    /// durably, and the version vector and floors are those of that state. Our own seqs past
    /// the durable ones are given again to new writes, which is safe because none of those
    /// writes left this replica. Records a [`ChangeSource::RolledBack`] change per key.
    pub(crate) fn rollback(&mut self, vv: &VersionVector, floors: &VersionVector) -> usize {
        let Some(undo) = self.undo.as_mut() else {
            return 0;
        };
        let undo = std::mem::take(undo);
        self.undo_bytes = 0;
        self.vv = vv.clone();
        self.floors = floors.clone();
        self.shadowed.clear();
        let n = undo.len();
        for ((key, elem), before) in undo {
            let hash = self.hash(&key, elem);
            self.take_record(hash, &key, elem);
            let entry = before.map(|r| {
                let e = r.to_entry();
                self.put_record(r);
                e
            });
            if let Some(changes) = self.changes.as_mut() {
                changes.push(Change {
                    key,
                    elem,
                    entry,
                    source: ChangeSource::RolledBack,
                });
            }
        }
        // `index` lists every origin held in the vector; keep it so for the restored entries.
        let origins: Vec<NodeId> = self.by_dot.keys().copied().collect();
        for o in origins {
            self.vv.touch(o);
        }
        n
    }

    /// The highest seq of our own writes that may leave this replica: every write up to it is
    /// durable, and so is the state of each key those writes touched.
    pub fn shareable_seq(&self) -> u64 {
        let local = self.vv.get(self.id);
        let Some(durable) = self.durable_local else {
            return local;
        };
        let mut seq = durable.min(local);
        if let Some((&first, _)) = self.shadowed.first_key_value() {
            seq = seq.min(first - 1);
        }
        seq
    }

    fn index(&mut self, hash: u64, r: &Record) {
        let (origin, seq) = (r.origin(), r.seq());
        self.record_bytes += r.heap_len();
        if r.is_tombstone() {
            self.dead_records += 1;
            self.dead_record_bytes += r.heap_len();
        }
        self.vv.touch(origin);
        self.by_dot.entry(origin).or_default().insert(seq, hash);
        if r.elem().is_set() {
            self.index_set(r);
            return;
        }
        if let Elem::Field(id) = r.elem() {
            self.index_field(r, id);
            return;
        }
        if !r.is_key() {
            // Counter elements count in the digest through their key (`refresh_typed`) and
            // are collected with their key's counter (`gc_counters`).
            return;
        }
        if r.is_tombstone() {
            self.tombstones
                .insert((r.version().hlc.physical_ms(), origin, seq));
        } else {
            self.valued += 1;
            let h = record_hash(r);
            self.valued_hash = self.valued_hash.wrapping_add(h);
            let b = crate::antientropy::bucket_of_key(r.key());
            self.buckets[b] = self.buckets[b].wrapping_add(h);
            if let Some(t) = r.expires_at_ms() {
                self.expiring.insert((t, origin, seq));
            }
        }
    }

    fn unindex(&mut self, r: &Record) {
        let (origin, seq) = (r.origin(), r.seq());
        self.record_bytes -= r.heap_len();
        if r.is_tombstone() {
            self.dead_records -= 1;
            self.dead_record_bytes -= r.heap_len();
        }
        if let Some(seqs) = self.by_dot.get_mut(&origin) {
            seqs.remove(&seq);
            if seqs.is_empty() {
                self.by_dot.remove(&origin);
            }
        }
        if r.elem().is_set() {
            self.unindex_set(r);
            return;
        }
        if let Elem::Field(id) = r.elem() {
            self.unindex_field(r, id);
            return;
        }
        if !r.is_key() {
            return;
        }
        if r.is_tombstone() {
            self.tombstones
                .remove(&(r.version().hlc.physical_ms(), origin, seq));
        } else {
            self.valued -= 1;
            let h = record_hash(r);
            self.valued_hash = self.valued_hash.wrapping_sub(h);
            let b = crate::antientropy::bucket_of_key(r.key());
            self.buckets[b] = self.buckets[b].wrapping_sub(h);
            if let Some(t) = r.expires_at_ms() {
                self.expiring.remove(&(t, origin, seq));
            }
        }
    }

    /// Indexes a hash field: a tombstone as any tombstone; a value in the digest (as a
    /// string is), its expiry in the field TTL index, and in its key's [`HashState`].
    fn index_field(&mut self, r: &Record, id: FieldId) {
        let (origin, seq) = (r.origin(), r.seq());
        let key = r.key();
        match self.hashes.get_mut(key) {
            Some(h) => h.last = h.last.max(r.version()),
            None => {
                let h = HashState {
                    last: r.version(),
                    ..HashState::default()
                };
                self.hashes.insert(Bytes::copy_from_slice(key), h);
            }
        }
        if r.is_tombstone() {
            self.tombstones
                .insert((r.version().hlc.physical_ms(), origin, seq));
            if let Some(state) = self.hashes.get_mut(key) {
                state.dead += 1;
            }
            return;
        }
        let h = record_hash(r);
        self.valued_hash = self.valued_hash.wrapping_add(h);
        let b = crate::antientropy::bucket_of_key(key);
        self.buckets[b] = self.buckets[b].wrapping_add(h);
        if let Some(t) = r.expires_at_ms() {
            self.expiring_fields.insert((t, origin, seq));
        }
        if let Some(state) = self.hashes.get_mut(key) {
            state.valued.insert((r.version(), id));
            if let Some(t) = r.expires_at_ms() {
                state.expiring.insert((t, id));
            }
        }
    }

    fn unindex_field(&mut self, r: &Record, id: FieldId) {
        let (origin, seq) = (r.origin(), r.seq());
        let key = r.key();
        if r.is_tombstone() {
            self.tombstones
                .remove(&(r.version().hlc.physical_ms(), origin, seq));
            if let Some(state) = self.hashes.get_mut(key) {
                state.dead = state.dead.saturating_sub(1);
            }
        } else {
            let h = record_hash(r);
            self.valued_hash = self.valued_hash.wrapping_sub(h);
            let b = crate::antientropy::bucket_of_key(key);
            self.buckets[b] = self.buckets[b].wrapping_sub(h);
            if let Some(t) = r.expires_at_ms() {
                self.expiring_fields.remove(&(t, origin, seq));
            }
            if let Some(state) = self.hashes.get_mut(key) {
                state.valued.remove(&(r.version(), id));
                if let Some(t) = r.expires_at_ms() {
                    state.expiring.remove(&(t, id));
                }
            }
        }
        // A hash whose every field is gone (or a tombstone) is forgotten once it holds no
        // field element at all: tombstones keep it, for `key_version`.
        if self.hashes.get(key).is_some_and(HashState::is_empty) {
            self.hashes.remove(key);
        }
    }

    /// Sets how long a member may stay silent before it is left out of garbage collection
    /// (it then resyncs fully when it returns).
    pub fn set_member_horizon_ms(&mut self, ms: u64) {
        self.member_horizon_ms = ms;
    }

    /// The other members known, with what each acknowledged.
    pub fn members(&self) -> &BTreeMap<NodeId, Member> {
        &self.members
    }

    /// Notes that `from` talked to us at `now_ms`, and, with `acked`, what it holds.
    pub fn note_member(&mut self, from: NodeId, acked: Option<&VersionVector>, now_ms: u64) {
        // Ids come from peers: bounded, and valid (nonzero, fitting an i64).
        if from == self.id || from == NodeId::default() || NodeId::new(from.as_u64()).is_none() {
            return;
        }
        if !self.members.contains_key(&from) && self.members.len() >= MAX_MEMBERS {
            tracing::warn!(member = %from, max = MAX_MEMBERS, "too many members; ignoring a new one");
            return;
        }
        let m = self.members.entry(from).or_default();
        m.heard_ms = m.heard_ms.max(now_ms);
        if m.left_out {
            m.left_out = false;
            tracing::info!(member = %from, "a member left out of garbage collection is back");
        }
        if let Some(vv) = acked {
            // Acknowledgements only grow, whatever order messages arrive in.
            m.acked.merge(vv);
        }
    }

    /// Notes whether a member said, in a push or an acknowledgement, that it is under memory
    /// pressure (see [`crate::sync::Ack::pressed`]).
    pub fn note_pressure(&mut self, from: NodeId, pressed: bool, now_ms: u64) {
        if let Some(m) = self.members.get_mut(&from) {
            m.pressed_ms = if pressed { now_ms.max(1) } else { 0 };
        }
    }

    /// How many members heard from since `heard_since_ms` said, then, that they are under
    /// memory pressure (a member cut off or gone holds nothing back).
    pub fn members_pressed(&self, heard_since_ms: u64) -> usize {
        self.members
            .values()
            .filter(|m| !m.left_out && m.pressed_ms > 0 && m.pressed_ms >= heard_since_ms)
            .count()
    }

    /// Whether this node says it is under memory pressure in its pushes and acknowledgements.
    pub fn pressed(&self) -> bool {
        self.pressed
    }

    /// Sets what this node's pushes and acknowledgements say of its memory pressure (the cache
    /// does, after it made room).
    pub fn set_pressed(&mut self, pressed: bool) {
        self.pressed = pressed;
    }

    /// A member's acknowledgement that came with its writes (a push's sender vector), once
    /// they are applied: if we now hold every write of the member's own up to it, it becomes
    /// usable for garbage collection (see [`Member::usable`]). Judged per message: a member
    /// that writes all the time is always ahead of us in its newest acknowledgement, but not
    /// in the one its push carried with the writes it pushed.
    pub(crate) fn note_usable(&mut self, from: NodeId, acked: &VersionVector) {
        if self.vv.get(from) >= acked.get(from)
            && let Some(m) = self.members.get_mut(&from)
        {
            m.usable.merge(acked);
        }
    }

    /// Our version vector as we tell it to peers: for our own writes, those durable here (a
    /// claim peers may rely on after we crash).
    pub fn announced_vv(&self) -> VersionVector {
        let mut vv = self.vv.clone();
        if let Some(durable) = self.durable_local {
            vv.set(self.id, durable.min(self.vv.get(self.id)));
        }
        vv
    }

    /// The checks every garbage collection makes first: every origin held is a member,
    /// members silent past the horizon are left out, a node alone waits one horizon, and we
    /// hold every member's own writes as of its acknowledgement. False: collect nothing now.
    fn gc_may_run(&mut self, now_ms: u64) -> bool {
        // Every origin we or any member hold writes of is a member, heard of now if not
        // before: a node we never met may hold writes older than a delete.
        let mut origins: BTreeSet<NodeId> = self.vv.iter().map(|(o, _)| o).collect();
        for m in self.members.values() {
            origins.extend(m.acked.iter().map(|(o, _)| o));
        }
        for o in origins {
            if o != self.id && (self.members.contains_key(&o) || self.members.len() < MAX_MEMBERS) {
                self.members.entry(o).or_insert_with(|| Member {
                    heard_ms: now_ms,
                    ..Member::default()
                });
            }
        }
        for (id, m) in self.members.iter_mut() {
            let silent = now_ms.saturating_sub(m.heard_ms) > self.member_horizon_ms;
            if silent && !m.left_out {
                tracing::warn!(member = %id, horizon_ms = self.member_horizon_ms, "a member silent for longer than the horizon is left out of garbage collection; it will resync fully when it returns");
            }
            m.left_out = silent;
        }
        // Knowing no member at all is not knowing there is none: a node that has not met
        // its cluster yet may hold writes older than our deletes. Alone, wait one horizon.
        if self.members.is_empty() {
            let since = *self.alone_since_ms.get_or_insert(now_ms);
            if now_ms.saturating_sub(since) <= self.member_horizon_ms {
                self.stats.gc_waiting += 1;
                return false;
            }
        }
        for (id, m) in self.members.iter_mut() {
            if self.vv.get(*id) >= m.acked.get(*id) && m.usable != m.acked {
                m.usable = m.acked.clone();
            }
        }
        if self
            .members
            .iter()
            .any(|(id, m)| !m.left_out && self.vv.get(*id) < m.usable.get(*id))
        {
            self.stats.gc_waiting += 1;
            return false;
        }
        true
    }

    /// Drops dead entries (tombstones and expired values) dead for longer than `grace_ms`
    /// once they are stable, raising the floor of their origins.
    ///
    /// A dead entry is stable when every member (heard from within the member horizon) has
    /// acknowledged holding it or something newer for its key, and this replica holds every
    /// member's own writes as of those acknowledgements. Each member is judged by its newest
    /// acknowledgement that this replica covers so ([`Member::usable`]): while a member
    /// writes fast, its latest acknowledgement always names a few writes still on their way,
    /// and an older one is as good a proof (acknowledgements only grow). Then no write it superseded can
    /// still arrive except as a stale copy our version vector covers, which
    /// [`Replica::apply`] ignores; a write made after a member saw it is newer and rightly
    /// wins. A member silent for longer than the horizon is left out; when it returns, it is
    /// behind our floors and resyncs fully. Entries beyond a gap in the version vector are
    /// kept until the gap is filled, so a floor never passes what this replica holds
    /// contiguously.
    pub fn gc(&mut self, now_ms: u64, grace_ms: u64) -> GcReport {
        self.gc_at_most(now_ms, grace_ms, usize::MAX)
    }

    /// [`Replica::gc`], looking at no more than `max` dead entries of the tombstone and
    /// expiry indexes (oldest first); [`GcReport::more`] says when it stopped there. Each
    /// drop waits for its commit as a change (a few hundred bytes), so a bounded pass bounds
    /// the memory one pass takes. Counters and sets are collected whole, as in `gc`.
    pub fn gc_at_most(&mut self, now_ms: u64, grace_ms: u64, max: usize) -> GcReport {
        let mut report = GcReport::default();
        if !self.gc_may_run(now_ms) {
            return report;
        }
        let live: Vec<(NodeId, &VersionVector)> = self
            .members
            .iter()
            .filter(|(_, m)| !m.left_out)
            .map(|(id, m)| (*id, &m.usable))
            .collect();
        let stable = |origin: NodeId, seq: u64| live.iter().all(|(_, a)| a.get(origin) >= seq);
        let horizon = now_ms.saturating_sub(grace_ms);
        let bound = (horizon, NodeId::default(), 0);
        let doomed: Vec<(NodeId, u64)> = self
            .tombstones
            .range(..bound)
            .chain(self.expiring.range(..bound))
            .chain(self.expiring_fields.range(..bound))
            .map(|&(_, origin, seq)| (origin, seq))
            .filter(|&(origin, seq)| stable(origin, seq))
            .take(max)
            .collect();
        report.more = doomed.len() >= max;
        drop(live);
        let shareable = self.shareable_seq();
        for (origin, seq) in doomed {
            if seq > self.vv.get(origin) || (origin == self.id && seq > shareable) {
                continue;
            }
            let Some((key, elem)) = self
                .record_of_dot(origin, seq)
                .map(|r| (Bytes::copy_from_slice(r.key()), r.elem()))
            else {
                continue;
            };
            // An expired string over a counter goes with the counter (`gc_counters`): alone,
            // the increments it hid would read again.
            if elem == Elem::Key
                && self.typed.contains_key(&key)
                && self.record(&key).is_some_and(|r| !r.is_tombstone())
            {
                continue;
            }
            // So does an expired field value over a field's counter (`gc_field_counters`).
            if let Elem::Field(id) = elem
                && self.has_field_counter(&key, id)
                && self.slot(&key, elem).is_some_and(|r| !r.is_tombstone())
            {
                continue;
            }
            self.remove(&key, elem, ChangeSource::Dropped);
            self.floors.raise(origin, seq);
            report.dropped += 1;
        }
        report.dropped += self.gc_counters(horizon, shareable);
        report.dropped += self.gc_sets(horizon, shareable);
        report.dropped += self.gc_field_counters(horizon, shareable);
        self.stats.gc_dropped += report.dropped as u64;
        report
    }

    /// Drops the counters that read as nothing (every contribution observed by a reset, or
    /// the key expired), once every element of theirs is stable and older than the grace:
    /// all their elements at once (and the expired string over one). Then a late copy of any
    /// of them is stale (our version vector covers it), and the next increment of any node
    /// starts a new run (it holds no contribution, or one a reset observed whole), so nothing
    /// collected counts again.
    fn gc_counters(&mut self, horizon: u64, shareable: u64) -> usize {
        if self.typed.is_empty() {
            return 0;
        }
        let live: Vec<&VersionVector> = self
            .members
            .iter()
            .filter(|(_, m)| !m.left_out)
            .map(|(_, m)| &m.usable)
            .collect();
        let stable = |origin: NodeId, seq: u64| live.iter().all(|a| a.get(origin) >= seq);
        let ripe = |r: &Record| {
            let (o, s) = (r.origin(), r.seq());
            r.version().hlc.physical_ms() <= horizon
                && stable(o, s)
                && s <= self.vv.get(o)
                && (o != self.id || s <= shareable)
        };
        let mut doomed: Vec<(Bytes, Vec<Slot>)> = Vec::new();
        for (key, t) in &self.typed {
            let header = self.record(key);
            let expired_header = header.filter(|r| {
                r.value().is_some() && r.expires_at_ms().is_some_and(|at| at <= horizon)
            });
            if t.effective && expired_header.is_none() {
                // A counter that counts keeps its elements, but a reset another stable reset
                // observed at least as much as can go: every node holds the other (or
                // collected the whole counter).
                let resets: Vec<(&Record, ResetRecord)> = t
                    .elems
                    .iter()
                    .filter(|e| matches!(e, Elem::Reset(..)))
                    .filter_map(|e| self.slot(key, *e))
                    .filter(|r| ripe(r))
                    .filter_map(|r| Some((r, ResetRecord::decode(r.value()?).ok()?)))
                    .collect();
                let dominated: Vec<(Elem, NodeId, u64)> = resets
                    .iter()
                    .filter(|(r1, o1)| {
                        resets.iter().any(|(r2, o2)| {
                            r2.seq() != r1.seq() || r2.origin() != r1.origin()
                        } && covers(o2, o1)
                            && (!covers(o1, o2) || (r2.origin(), r2.seq()) > (r1.origin(), r1.seq())))
                    })
                    .map(|(r, _)| (r.elem(), r.origin(), r.seq()))
                    .collect();
                if !dominated.is_empty() {
                    doomed.push((key.clone(), dominated));
                }
                continue;
            }
            let mut slots: Vec<(Elem, NodeId, u64)> = Vec::new();
            let mut ok = true;
            for e in &t.elems {
                let Some(r) = self.slot(key, *e) else {
                    continue;
                };
                if !ripe(r) {
                    ok = false;
                    break;
                }
                slots.push((*e, r.origin(), r.seq()));
            }
            if let Some(r) = expired_header {
                let (o, s) = (r.origin(), r.seq());
                if !stable(o, s) || s > self.vv.get(o) || (o == self.id && s > shareable) {
                    ok = false;
                }
                slots.push((Elem::Key, o, s));
            }
            if ok && !slots.is_empty() {
                doomed.push((key.clone(), slots));
            }
        }
        self.drop_collected(doomed)
    }

    /// Drops the collected elements of each key, raising the floors of their dots; returns
    /// how many went.
    pub(crate) fn drop_collected(&mut self, doomed: Vec<(Bytes, Vec<Slot>)>) -> usize {
        let mut dropped = 0;
        for (key, slots) in doomed {
            for (elem, origin, seq) in slots {
                if self.remove(&key, elem, ChangeSource::Dropped) {
                    self.floors.raise(origin, seq);
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// Whether the next catch-up session must be a full resync (a peer told us we are behind
    /// its GC floors).
    pub fn resync_needed(&self) -> bool {
        self.resync_needed.load(Ordering::Relaxed)
    }

    /// Records that the next catch-up session must be a full resync.
    pub fn mark_resync_needed(&self) {
        self.resync_needed.store(true, Ordering::Relaxed);
    }

    pub(crate) fn clear_resync_needed(&self) {
        self.resync_needed.store(false, Ordering::Relaxed);
    }

    /// Local writes with seq greater than `after_seq`, oldest first, at most `max_entries`
    /// of them: what to push to a peer that has seen our writes up to `after_seq`.
    pub fn local_entries_after(&self, after_seq: u64, max_entries: usize) -> Vec<Entry> {
        let Some(seqs) = self.by_dot.get(&self.id) else {
            return Vec::new();
        };
        let last = self.shareable_seq();
        if last <= after_seq {
            return Vec::new();
        }
        seqs.range(after_seq.saturating_add(1)..=last)
            .take(max_entries)
            .filter_map(|(&seq, &hash)| self.record_at(hash, self.id, seq))
            .map(Record::to_entry)
            .collect()
    }

    /// This node's writes held under `origin`, from seq `from` on, in seq order: each seq with
    /// its record (`None` for a dot whose record is gone). For the sync module's pages.
    pub(crate) fn dots_from(
        &self,
        origin: NodeId,
        from: u64,
    ) -> impl Iterator<Item = (u64, Option<&Record>)> + '_ {
        self.by_dot
            .get(&origin)
            .into_iter()
            .flat_map(move |seqs| seqs.range(from..))
            .map(move |(&seq, &hash)| (seq, self.record_at(hash, origin, seq)))
    }

    /// Counts a peer refused for being behind our GC floors.
    pub(crate) fn count_refused_behind(&mut self) {
        self.stats.refused_behind += 1;
    }

    /// Advances the version vector for `origin` to `seq` if `seq` is the next one: a receiver
    /// moves only over contiguous seqs.
    pub(crate) fn advance_vv(&mut self, origin: NodeId, seq: u64) {
        if seq == self.vv.get(origin) + 1 {
            self.vv.set(origin, seq);
        }
    }

    /// Raises the version vector for `origin` to `through` (a push range that starts where
    /// this replica stands).
    pub(crate) fn raise_vv_to(&mut self, origin: NodeId, through: u64) {
        self.vv.raise(origin, through);
    }

    /// Ends a full resync: drops the entries the peer's pages covered but did not contain
    /// (the peer deleted and collected them, or holds something newer), and adopts its floors.
    pub(crate) fn finish_full_resync(
        &mut self,
        received: &HashSet<(Bytes, Elem)>,
        covered: &VersionVector,
        floors: &VersionVector,
    ) -> usize {
        let doomed: Vec<(Bytes, Elem)> = self
            .map
            .iter()
            .map(|r| (Bytes::copy_from_slice(r.key()), r.elem(), r))
            .filter(|(k, e, r)| {
                !received.contains(&(k.clone(), *e)) && r.seq() <= covered.get(r.origin())
            })
            .map(|(k, e, _)| (k, e))
            .collect();
        for (k, e) in &doomed {
            self.remove(k, *e, ChangeSource::Dropped);
        }
        self.floors.merge(floors);
        self.vv.merge(covered);
        self.stats.resync_dropped += doomed.len() as u64;
        self.stats.full_resyncs += 1;
        self.clear_resync_needed();
        doomed.len()
    }

    /// Raises the version vector with what a catch-up page covered.
    pub(crate) fn raise_vv(&mut self, covered: &VersionVector) {
        self.vv.merge(covered);
    }

    /// Approximate heap bytes held by the map and its dot index (records, table slots, index
    /// nodes), for memory figures; it leaves out allocator overhead and the TTL and tombstone
    /// indexes.
    pub fn approx_heap_bytes(&self) -> usize {
        let slots = self.map.capacity() * (std::mem::size_of::<Record>() + 1);
        let records: usize = self.map.iter().map(Record::heap_len).sum();
        let dots = self.map.len() * (std::mem::size_of::<(u64, u64)>() + 8);
        slots + records + dots
    }
}

/// Hashes, and what every type shares: the key's type, its expiry, removing it.
impl Replica {
    /// The version of `key`'s live string or counter: its string's version (and its
    /// counter elements' when the counter counts); `None` if neither reads as present.
    fn string_version(&self, key: &[u8], now_ms: u64) -> Option<Version> {
        let counter = |v: Option<Version>| {
            let t = self.typed.get(key).filter(|t| t.effective)?;
            t.elems
                .iter()
                .filter_map(|e| self.slot(key, *e).map(Record::version))
                .max()
                .max(v)
        };
        match self.record(key) {
            Some(r) if r.value().is_some() => {
                if is_dead(false, r.expires_at_ms(), now_ms) {
                    None
                } else {
                    counter(Some(r.version())).or(Some(r.version()))
                }
            }
            _ => counter(None),
        }
    }

    /// `key`'s hash, if some field of it reads as present: the version of its newest live
    /// field and the number of live fields.
    fn hash_live(&self, key: &[u8], now_ms: u64) -> Option<(Version, usize)> {
        let h = self.hashes.get(key)?;
        let expired = h
            .expiring
            .range(..(now_ms.saturating_add(1), FieldId::default()))
            .count();
        let mut live = h.valued.len() - expired;
        let mut newest = if live > 0 {
            h.valued
                .iter()
                .rev()
                .find(|(_, id)| {
                    self.slot(key, Elem::Field(*id))
                        .is_some_and(|r| !is_dead(false, r.expires_at_ms(), now_ms))
                })
                .map(|(v, _)| *v)
        } else {
            None
        };
        // Fields whose counter counts: counted once (with their value if it is live), hidden
        // by their value once it expired.
        for &(v, id) in &h.counting {
            match self.slot(key, Elem::Field(id)) {
                Some(r) if r.value().is_some() => {
                    if is_dead(false, r.expires_at_ms(), now_ms) {
                        continue;
                    }
                }
                _ => live += 1,
            }
            newest = newest.max(Some(v));
        }
        if live == 0 {
            return None;
        }
        Some((newest?, live))
    }

    /// `key`'s hash if the key is a hash: some field reads as present and is newer than any
    /// live string or counter of the key (the key's type is the kind of its newest live
    /// element).
    fn hash_visible(&self, key: &[u8], now_ms: u64) -> Option<(Version, usize)> {
        let (v, n) = self.hash_live(key, now_ms)?;
        (self.string_version(key, now_ms).is_none_or(|s| s < v)
            && self.set_version(key, now_ms).is_none_or(|s| s < v))
        .then_some((v, n))
    }

    /// The type of `key` at `now_ms`, `None` if it reads as absent. A key that holds both a
    /// live string and a live hash (written at once on two nodes) is of the kind of its
    /// newest element, the same on every node.
    pub fn key_type(&self, key: &[u8], now_ms: u64) -> Option<KeyType> {
        if !self.hashes.is_empty() && self.hash_visible(key, now_ms).is_some() {
            return Some(KeyType::Hash);
        }
        if !self.sets.is_empty() && self.set_visible(key, now_ms).is_some() {
            return Some(KeyType::Set);
        }
        self.get_with_expiry_ref(key, now_ms)
            .map(|_| KeyType::String)
    }

    /// `key`'s expiry if it reads as present, whatever its type: `Some(None)` for a key with
    /// none. A hash's expiry is that of its newest live field (`EXPIRE` gives every field
    /// the same one, and fields written later take it).
    pub fn key_expiry(&self, key: &[u8], now_ms: u64) -> Option<Option<u64>> {
        if !self.hashes.is_empty()
            && let Some((v, _)) = self.hash_visible(key, now_ms)
        {
            let h = self.hashes.get(key)?;
            let id = match h.valued.range((v, FieldId::default())..).next() {
                Some(&(found, id)) if found == v => id,
                // The newest field is a counter: its value's expiry, if it has one.
                _ => h.counting.range((v, FieldId::default())..).next()?.1,
            };
            return Some(
                self.slot(key, Elem::Field(id))
                    .filter(|r| r.value().is_some())
                    .and_then(Record::expires_at_ms),
            );
        }
        if !self.sets.is_empty()
            && let Some(t) = self.set_expiry(key, now_ms)
        {
            return Some(t);
        }
        self.get_with_expiry_ref(key, now_ms).map(|(_, t)| t)
    }

    /// Err([`Error::WrongType`]) if `key` holds a live string or counter, or is a set.
    fn not_a_string(&self, key: &[u8], now_ms: u64) -> Result<()> {
        if self.get_with_expiry_ref(key, now_ms).is_some()
            || (!self.sets.is_empty() && self.set_visible(key, now_ms).is_some())
        {
            return Err(Error::WrongType);
        }
        Ok(())
    }

    /// What field `name` of `key`'s hash reads as, whatever the key's type: its counter's
    /// value while some increment counts, else its value; nothing once its value expired.
    fn field_value(&self, key: &[u8], name: &[u8], now_ms: u64) -> Option<&[u8]> {
        let id = FieldId::of(name);
        let base = self
            .slot(key, Elem::Field(id))
            .filter(|r| r.value().is_some());
        if base.is_some_and(|r| is_dead(false, r.expires_at_ms(), now_ms)) {
            return None;
        }
        if let Some((n, v, _)) = self.counter_field(key, id) {
            return (n == name).then_some(v);
        }
        let (n, v) = base?.value().and_then(decode_field)?;
        (n == name).then_some(v)
    }

    /// The name held for field `id` of `key` (by its value or its counter), if any.
    fn field_name_held(&self, key: &[u8], id: FieldId) -> Option<&[u8]> {
        if let Some((n, _, _)) = self.counter_field(key, id) {
            return Some(n);
        }
        let r = self.slot(key, Elem::Field(id))?;
        decode_field(r.value()?).map(|(n, _)| n)
    }

    /// `HGET`: the value of field `name` of `key`'s hash. [`Error::WrongType`] if the key is a
    /// string or counter.
    pub fn hget(&self, key: &[u8], name: &[u8], now_ms: u64) -> Result<Option<&[u8]>> {
        self.not_a_string(key, now_ms)?;
        if self.hashes.is_empty() {
            return Ok(None);
        }
        Ok(self.field_value(key, name, now_ms))
    }

    /// `HLEN`: the number of fields of `key`'s hash (0 if absent). [`Error::WrongType`] if the
    /// key is a string or counter.
    pub fn hlen(&self, key: &[u8], now_ms: u64) -> Result<usize> {
        self.not_a_string(key, now_ms)?;
        Ok(self.hash_visible(key, now_ms).map_or(0, |(_, n)| n))
    }

    /// `HGETALL`: the fields of `key`'s hash as `(name, value)`, oldest write first, borrowed
    /// from the map. [`Error::WrongType`] if the key is a string or counter.
    pub fn hash_fields(&self, key: &[u8], now_ms: u64) -> Result<Vec<(&[u8], &[u8])>> {
        self.not_a_string(key, now_ms)?;
        let Some(h) = self.hashes.get(key) else {
            return Ok(Vec::new());
        };
        if self.hash_visible(key, now_ms).is_none() {
            return Ok(Vec::new());
        }
        let mut out: Vec<(&[u8], &[u8])> = h
            .valued
            .iter()
            .filter_map(|(_, id)| {
                let r = self.slot(key, Elem::Field(*id))?;
                if is_dead(false, r.expires_at_ms(), now_ms) {
                    return None;
                }
                if let Some((n, v, _)) = self.counter_field(key, *id) {
                    return Some((n, v));
                }
                r.value().and_then(decode_field)
            })
            .collect();
        // Counter fields with no value of their own (those with one are above, or hidden).
        for (_, id) in &h.counting {
            if self
                .slot(key, Elem::Field(*id))
                .is_some_and(|r| r.value().is_some())
            {
                continue;
            }
            if let Some((n, v, _)) = self.counter_field(key, *id) {
                out.push((n, v));
            }
        }
        Ok(out)
    }

    /// The expiry new fields of `key`'s hash take: the hash's, if it is live.
    fn hash_expiry(&self, key: &[u8], now_ms: u64) -> Option<u64> {
        if self.hashes.is_empty() {
            return None;
        }
        self.key_expiry(key, now_ms).flatten()
    }

    /// `HSET` (and `HSETNX` with `nx`: only fields absent here): sets each `(name, value)`
    /// of `key`'s hash, one element per field, so that a field travels alone. New fields take
    /// the hash's expiry. Returns how many fields were new. Checked before anything is
    /// written: [`Error::WrongType`] on a string or counter, the key and value limits (a
    /// field's name and value together count as the value, with 4 bytes more), and
    /// [`Error::FieldCollision`].
    pub fn hset(
        &mut self,
        key: Bytes,
        pairs: &[(Bytes, Bytes)],
        nx: bool,
        now_ms: u64,
    ) -> Result<usize> {
        self.limits.check(&key, None)?;
        self.not_a_string(&key, now_ms)?;
        let expiry = self.hash_expiry(&key, now_ms);
        let mut plan: Vec<(FieldId, Bytes)> = Vec::with_capacity(pairs.len());
        let mut new = HashSet::new();
        for (name, value) in pairs {
            let stored = encode_field(name, value);
            self.limits.check(&key, Some(&stored))?;
            let id = FieldId::of(name);
            if self
                .field_name_held(&key, id)
                .is_some_and(|n| n != name.as_ref())
            {
                return Err(Error::FieldCollision);
            }
            let present = self.field_value(&key, name, now_ms).is_some();
            if present && nx {
                continue;
            }
            if !present {
                new.insert(id);
            }
            plan.push((id, stored));
        }
        for (id, stored) in plan {
            // A write of a counter field resets the increments it observes.
            self.reset_field_counter(&key, id, now_ms)?;
            self.write_elem(key.clone(), Elem::Field(id), Some(stored), expiry, now_ms)?;
        }
        Ok(new.len())
    }

    /// `HDEL`: deletes the named fields of `key`'s hash that are present here (a tombstone
    /// each: it removes the write it observed, and any older one, but not a write made
    /// concurrently on another node after it, see [`crate::entry::field_wins`]). Returns how
    /// many.
    pub fn hdel(&mut self, key: Bytes, names: &[Bytes], now_ms: u64) -> Result<usize> {
        self.limits.check(&key, None)?;
        self.not_a_string(&key, now_ms)?;
        let mut ids = Vec::new();
        for name in names {
            let id = FieldId::of(name);
            if self.field_value(&key, name, now_ms).is_some() && !ids.contains(&id) {
                ids.push(id);
            }
        }
        for id in &ids {
            self.reset_field_counter(&key, *id, now_ms)?;
            self.remove_field_observed(&key, *id, now_ms)?;
        }
        Ok(ids.len())
    }

    /// `HINCRBY` and `HINCRBYFLOAT`: adds `by` to field `name` of `key`'s hash (absent: 0).
    /// The field is a counter (see `replica/hash_counters.rs`): only this node's
    /// contribution to it is written (one element), so increments made at once on several
    /// nodes all count, and an `HSET`, `HDEL` or `DEL` resets only the increments it
    /// observed. On a hash with an expiry, the increment is a write of the field's new value
    /// instead (with the expiry; last writer wins), so that no increment outlives the hash.
    /// Returns the new value. Errors as Redis's, checked on the value read here:
    /// [`Error::HashNotAnInteger`], [`Error::HashNotAFloat`], [`Error::Overflow`],
    /// [`Error::NanOrInfinity`].
    pub fn hincr(&mut self, key: Bytes, name: Bytes, by: Increment, now_ms: u64) -> Result<Bytes> {
        self.limits.check(&key, None)?;
        let current = self.hget(&key, &name, now_ms)?.map(<[u8]>::to_vec);
        let id = FieldId::of(&name);
        if self
            .field_name_held(&key, id)
            .is_some_and(|n| n != name.as_ref())
        {
            return Err(Error::FieldCollision);
        }
        let (next, delta) = match by {
            Increment::Int(d) => {
                let cur = match &current {
                    Some(v) => parse_int(v).ok_or(Error::HashNotAnInteger)?,
                    None => 0,
                };
                let next = cur.checked_add(d).ok_or(Error::Overflow)?.to_string();
                (
                    next,
                    Amount {
                        int: i128::from(d),
                        float: 0.0,
                    },
                )
            }
            Increment::Float(f) => {
                let cur = match &current {
                    Some(v) => parse_float(v).ok_or(Error::HashNotAFloat)?,
                    None => 0.0,
                };
                let sum = cur + f;
                if !f.is_finite() || !sum.is_finite() {
                    return Err(Error::NanOrInfinity);
                }
                (
                    crate::counter::format_float(sum),
                    Amount { int: 0, float: f },
                )
            }
        };
        let next = Bytes::from(next);
        if self.hash_expiry(&key, now_ms).is_some() {
            self.hset(key, &[(name, next.clone())], false, now_ms)?;
            return Ok(next);
        }
        self.incr_field_counter(&key, &name, delta, now_ms)?;
        Ok(self
            .hget(&key, &name, now_ms)?
            .map(Bytes::copy_from_slice)
            .unwrap_or(next))
    }

    /// Sets the expiry of `key`'s hash (`None`: none): every live field is written again
    /// with it. Returns whether the key is a hash here. Only for hashes: a string's expiry is
    /// a write of its value ([`Replica::write`]).
    pub fn expire_hash(
        &mut self,
        key: Bytes,
        expires_at_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<bool> {
        if self.hash_visible(&key, now_ms).is_none() {
            return Ok(false);
        }
        // Every field present, as it reads (a counter field becomes a value: the increments
        // observed are reset, those made concurrently elsewhere keep counting on top).
        let fields: Vec<(FieldId, Bytes)> = self
            .hash_fields(&key, now_ms)?
            .into_iter()
            .map(|(n, v)| (FieldId::of(n), crate::entry::encode_field(n, v)))
            .collect();
        for (id, stored) in fields {
            self.reset_field_counter(&key, id, now_ms)?;
            self.write_elem(
                key.clone(),
                Elem::Field(id),
                Some(stored),
                expires_at_ms,
                now_ms,
            )?;
        }
        Ok(true)
    }

    /// Removes everything of `key` this replica holds, of every type, as observed here: a
    /// reset of its counter, a tombstone on each field of its hash that holds a value, and a
    /// tombstone on its string. What a peer writes concurrently and this replica has not seen
    /// is not removed (fields, increments). `DEL` and `UNLINK` use it, and so does anything
    /// that must drop a key (eviction). Returns whether the key read as present.
    pub fn remove_observed(&mut self, key: Bytes, now_ms: u64) -> Result<bool> {
        let existed = self.contains(&key, now_ms);
        self.write(key, None, None, now_ms)?;
        Ok(existed)
    }

    /// Tombstones every field of `key` that holds a value (a write that replaces the key), each
    /// removing only the write observed.
    fn tombstone_fields(&mut self, key: &Bytes, now_ms: u64) -> Result<()> {
        let ids: BTreeSet<FieldId> = self
            .hashes
            .get(key)
            .map(|h| {
                h.valued
                    .iter()
                    .map(|(_, id)| *id)
                    .chain(h.counters.keys().copied())
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            self.reset_field_counter(key, id, now_ms)?;
            self.remove_field_observed(key, id, now_ms)?;
        }
        Ok(())
    }

    /// Writes the tombstone of field `id` of `key` that removes the write held here: it
    /// carries that write's timestamp (see [`crate::entry::field_wins`]).
    fn remove_field_observed(&mut self, key: &Bytes, id: FieldId, now_ms: u64) -> Result<()> {
        let observed = self
            .slot(key, Elem::Field(id))
            .filter(|r| !r.is_tombstone())
            .map(|r| r.version().hlc.as_u64());
        if observed.is_none() {
            return Ok(());
        }
        self.write_elem(key.clone(), Elem::Field(id), None, observed, now_ms)?;
        Ok(())
    }
}

/// A field's reset is one element per node (`Elem::FieldReset(field, node)`): a node's newer
/// reset of a field replaces its older one. What the older one observed stays observed (a
/// node cannot un-observe an increment), but the newer may no longer say so: the node may
/// have collected the contributions it had reset, with their reset, while a member was left
/// out of garbage collection, and that member, holding them still, would count them again
/// once the newer reset replaced the older (two nodes then read the field differently). So
/// the older reset's observations are kept in the newer one, per origin the furthest seq. The
/// merged record is not in the digest (only the contributions that count are, with the
/// observation they count from), and it differs from the writer's only where the writer no
/// longer holds what it observed.
fn merge_older_reset(older: Option<&Record>, entry: &mut Entry) {
    let (Some(old), Some(new)) = (
        older
            .and_then(Record::value)
            .and_then(|v| ResetRecord::decode(v).ok()),
        entry
            .value
            .as_deref()
            .and_then(|v| ResetRecord::decode(v).ok()),
    ) else {
        return;
    };
    let mut view = CounterView::default();
    view.add_reset(&old);
    view.add_reset(&new);
    let merged = view.reset_all();
    if merged != new {
        entry.value = Some(Bytes::from(merged.encode()));
    }
}

/// The exclusive upper bound of the TTL index for "expired at `now_ms`".
fn expiry_bound(now_ms: u64) -> (u64, NodeId, u64) {
    (now_ms.saturating_add(1), NodeId::default(), 0)
}

/// The hash of one entry for the digest: its key, value, version and expiry. Each field is
/// length-prefixed or tagged, so that no two different entries feed xxh3 the same bytes.
fn entry_hash(
    key: &[u8],
    elem: Elem,
    value: Option<&[u8]>,
    v: Version,
    expires_at_ms: Option<u64>,
) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key);
    // The key's own element hashes as before elements existed; the others are tagged.
    match elem {
        Elem::Key => {}
        Elem::Count(o) => {
            h.update(&[0xc1]);
            h.update(&o.as_u64().to_le_bytes());
        }
        Elem::Reset(o, s) => {
            h.update(&[0xc2]);
            h.update(&o.as_u64().to_le_bytes());
            h.update(&s.to_le_bytes());
        }
        Elem::Field(f) => {
            h.update(&[0xf1]);
            h.update(&f.0);
        }
        Elem::Member(f, o) => {
            h.update(&[0x51]);
            h.update(&f.0);
            h.update(&o.as_u64().to_le_bytes());
        }
        Elem::SetRemove(o, s) => {
            h.update(&[0x52]);
            h.update(&o.as_u64().to_le_bytes());
            h.update(&s.to_le_bytes());
        }
        Elem::FieldCount(f, o) => {
            h.update(&[0xf2]);
            h.update(&f.0);
            h.update(&o.as_u64().to_le_bytes());
        }
        Elem::FieldReset(f, o) => {
            h.update(&[0xf3]);
            h.update(&f.0);
            h.update(&o.as_u64().to_le_bytes());
        }
    }
    match value {
        Some(value) => {
            h.update(&[1]);
            h.update(&(value.len() as u64).to_le_bytes());
            h.update(value);
        }
        None => h.update(&[0]),
    }
    h.update(&v.hlc.as_u64().to_le_bytes());
    h.update(&v.origin.as_u64().to_le_bytes());
    match expires_at_ms {
        Some(t) => {
            h.update(&[1]);
            h.update(&t.to_le_bytes());
        }
        None => h.update(&[0]),
    }
    h.digest()
}

/// What one undo record costs: its slot in the table, its key, the record it keeps.
fn undo_cost(key: &[u8], before: Option<&Record>) -> usize {
    crate::memory::UNDO_ENTRY
        + key.len()
        + before.map_or(0, |r| r.heap_len() + crate::memory::RECORD_OVERHEAD)
}

pub(crate) fn record_hash(r: &Record) -> u64 {
    entry_hash(r.key(), r.elem(), r.value(), r.version(), r.expires_at_ms())
}

/// Where an element of a key sits in the map: the hash of the key alone for the key's own
/// element (a string), of the key and the element otherwise.
fn slot_hash(hasher: &foldhash::fast::RandomState, key: &[u8], elem: Elem) -> u64 {
    match elem {
        Elem::Key => hasher.hash_one(key),
        other => hasher.hash_one((key, other)),
    }
}

/// An element of a key about to be collected, and its dot.
type Slot = (Elem, NodeId, u64);

/// Whether reset `a` observed at least as much of every origin as reset `b`.
fn covers(a: &ResetRecord, b: &ResetRecord) -> bool {
    b.0.iter().all(|ob| {
        a.0.iter()
            .any(|oa| oa.origin == ob.origin && oa.seq >= ob.seq)
    })
}

/// A string as the number a counter counts from: an integer, else a float, else none.
fn as_number(v: &[u8]) -> Option<Number> {
    parse_int(v)
        .map(Number::Int)
        .or_else(|| parse_float(v).map(Number::Float))
}

/// The amount `INCRBY` or `INCRBYFLOAT` adds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Increment {
    /// `INCRBY` (and `INCR`, `DECR`, `DECRBY`).
    Int(i64),
    /// `INCRBYFLOAT`.
    Float(f64),
}

/// A key holding hash fields.
#[derive(Debug, Default)]
struct HashState {
    /// The fields holding a value (expired or not), by version.
    valued: BTreeSet<(Version, FieldId)>,
    /// Those with an expiry, by expiry.
    expiring: BTreeSet<(u64, FieldId)>,
    /// The greatest version of a field element installed (for `WATCH`).
    last: Version,
    /// Field tombstones held.
    dead: usize,
    /// Fields with counter elements (`HINCRBY`), see `hash_counters`.
    counters: BTreeMap<FieldId, hash_counters::FieldCounter>,
    /// Those whose counter counts, by the greatest version of their elements.
    counting: BTreeSet<(Version, FieldId)>,
}

impl HashState {
    /// Whether the key holds no field element at all.
    fn is_empty(&self) -> bool {
        self.valued.is_empty() && self.dead == 0 && self.counters.is_empty()
    }
}

/// The type of a key, as Redis's `TYPE` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// A string (or a counter).
    String,
    /// A hash.
    Hash,
    /// A set.
    Set,
}

impl KeyType {
    /// The name `TYPE` answers.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::String => "string",
            KeyType::Hash => "hash",
            KeyType::Set => "set",
        }
    }
}

/// A key holding counter elements: which, what they add to the digest, and whether the
/// counter counts (some contribution is not observed by a reset).
#[derive(Debug, Default)]
struct Typed {
    elems: BTreeSet<Elem>,
    digest: u64,
    effective: bool,
    /// What the key reads as while its counter counts (kept, so reads borrow it).
    rendered: Option<Box<[u8]>>,
}
