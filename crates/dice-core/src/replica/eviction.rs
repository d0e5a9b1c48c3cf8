//! What a replica offers the memory limit: its memory figures, the access table, samples of
//! keys to evict, and the eviction itself, a removal of a key as this replica observed it.

use super::{ChangeSource, Elem, NodeId, Replica, Result, expiry_bound};
use crate::evict::{Access, Candidate};
use crate::memory::ReplicaMemory;
use bytes::Bytes;

impl Replica {
    /// What this replica holds, counted for `used_memory`.
    pub fn memory(&self) -> ReplicaMemory {
        ReplicaMemory {
            records: self.map.len(),
            record_bytes: self.record_bytes,
            dead_records: self.dead_records,
            dead_record_bytes: self.dead_record_bytes,
            map_slots: self.map.capacity(),
            expiring: self.expiring.len(),
            tombstones: self.tombstones.len(),
            typed_keys: self.typed.len() + self.hash_counter_fields,
            set_members: self.set_members,
            access_table: self.access.heap_bytes(),
        }
    }

    /// Sets the table eviction ranks keys by (recency or frequency of access).
    pub fn set_access(&mut self, access: Access) {
        self.access = access;
    }

    /// The table eviction ranks keys by.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// The access frequency eviction ranks `key` by, under an LFU policy (Redis's
    /// `OBJECT FREQ`): the logarithmic counter of its slot, decayed to `now_ms`. `None` under
    /// any other policy.
    pub fn access_frequency(&self, key: &[u8], now_ms: u64) -> Option<u8> {
        self.access.frequency(self.hash(key, Elem::Key), now_ms)
    }

    /// Notes an access to `key` (a read or a write) in the access table, if there is one.
    pub(super) fn touch(&self, key: &[u8], now_ms: u64) {
        if self.access.heap_bytes() > 0 {
            self.access.touch(self.hash(key, Elem::Key), now_ms);
        }
    }

    /// Notes that `entry`'s key was written, locally or by a peer, if it holds a value (see
    /// [`Access::touch_written`]); a removal is no access.
    pub(super) fn touch_written(&self, entry: &crate::Entry, now_ms: u64) {
        if entry.value.is_some() && self.access.heap_bytes() > 0 {
            self.access
                .touch_written(self.hash(&entry.key, Elem::Key), now_ms);
        }
    }

    /// Up to `n` live keys offered for eviction: a random sample of every key's string
    /// (`volatile`: of those with an expiry), or with `nearest_expiry` the keys nearest to
    /// their expiry, nearest first. A sample picks an origin (weighted by the entries it has)
    /// and a seq in its range, and takes the next entry in dot order: not exactly uniform
    /// (an entry after a gap is likelier), as Redis's sampling of its hash table is not.
    pub(crate) fn eviction_candidates(
        &self,
        n: usize,
        volatile: bool,
        nearest_expiry: bool,
        now_ms: u64,
    ) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = Vec::with_capacity(n);
        // Any element of a live key makes it a candidate: a hash is found through its fields,
        // a counter through its contributions, a string through its own element.
        let live = |origin, seq| {
            self.record_of_dot(origin, seq).filter(|r| {
                !super::is_dead(r.is_tombstone(), r.expires_at_ms(), now_ms)
                    && self.contains(r.key(), now_ms)
            })
        };
        let push = |out: &mut Vec<Candidate>, r: &crate::record::Record| {
            if out.iter().all(|c| c.key.as_ref() != r.key()) {
                out.push(Candidate {
                    key: Bytes::copy_from_slice(r.key()),
                    hash: self.hash(r.key(), Elem::Key),
                });
            }
        };
        let alive = self.expiring.range(expiry_bound(now_ms)..);
        if nearest_expiry {
            for &(_, origin, seq) in alive {
                if out.len() == n {
                    break;
                }
                if let Some(r) = live(origin, seq) {
                    push(&mut out, r);
                }
            }
            return out;
        }
        for _ in 0..n.saturating_mul(16) {
            if out.len() == n {
                break;
            }
            let found = if volatile {
                let (Some(first), Some(last)) = (
                    self.expiring.range(expiry_bound(now_ms)..).next(),
                    self.expiring.last(),
                ) else {
                    break;
                };
                let t = first.0 + rand::random::<u64>() % (last.0 - first.0 + 1);
                self.expiring
                    .range((t, crate::NodeId::default(), 0)..)
                    .next()
                    .and_then(|&(_, o, s)| live(o, s))
            } else {
                let total = self.map.len();
                if total == 0 {
                    break;
                }
                let mut pick = rand::random::<u64>() as usize % total;
                let mut chosen = None;
                for (&origin, seqs) in &self.by_dot {
                    if pick < seqs.len() {
                        chosen = Some((origin, seqs));
                        break;
                    }
                    pick -= seqs.len();
                }
                chosen.and_then(|(origin, seqs)| {
                    let (&lo, _) = seqs.first_key_value()?;
                    let (&hi, _) = seqs.last_key_value()?;
                    let s = lo + rand::random::<u64>() % (hi - lo + 1);
                    let (&seq, _) = seqs.range(s..).next()?;
                    live(origin, seq)
                })
            };
            if let Some(r) = found {
                push(&mut out, r);
            }
        }
        if out.is_empty() {
            // Samples can all land on tombstones (a cluster keeps those of its evictions
            // until they are stable): walk the map for a live key rather than give up.
            let live_key = |r: &&crate::record::Record| {
                !super::is_dead(r.is_tombstone(), r.expires_at_ms(), now_ms)
                    && (!volatile || r.expires_at_ms().is_some())
                    && self.contains(r.key(), now_ms)
            };
            if let Some(r) = self.map.iter().find(live_key) {
                push(&mut out, r);
            }
        }
        out
    }

    /// Whether no other node can hold a copy of anything here: no member was ever heard of
    /// and every write held is our own.
    fn shares_nothing(&self) -> bool {
        self.members.is_empty() && self.vv.iter().all(|(o, _)| o == self.id)
    }

    /// Evicts `key`: removes it **as this replica observed it**, through the removal of each
    /// kind of element it holds, and counts it. Returns whether it read as present.
    ///
    /// - Its string: a tombstone, a write like `DEL` that replicates with its own dot. A
    ///   write of the key that this replica had not seen and that is newer survives it, as
    ///   it survives a `DEL`; an older copy arriving later loses to it (or is ignored as
    ///   stale once the tombstone is collected), so the key never comes back.
    /// - Its counter: a reset that observed every contribution held here
    ///   ([`crate::counter::ResetRecord`]): increments it did not observe still count.
    ///
    /// A kind of element added later extends [`Replica::write`]'s removal of what it
    /// observes, and eviction follows. On a replica that shares nothing (no member ever
    /// heard of, only its own writes), a string key is dropped without a tombstone: no other
    /// copy exists to come back.
    pub fn evict(&mut self, key: Bytes, now_ms: u64) -> Result<bool> {
        if !self.contains(&key, now_ms) {
            return Ok(false);
        }
        let first_change = self.changes.as_ref().map_or(0, Vec::len);
        if self.shares_nothing() && !self.has_elements(&key) {
            // Nobody else can hold a copy: drop the key's string and fields outright.
            let fields: Vec<crate::entry::FieldId> = self
                .hashes
                .get(&key)
                .map(|h| h.valued.iter().map(|(_, id)| *id).collect())
                .unwrap_or_default();
            for id in fields {
                self.remove(&key, Elem::Field(id), ChangeSource::Local);
            }
            self.drop_set_elements(&key);
            self.drop_field_counters(&key);
            self.remove(&key, Elem::Key, ChangeSource::Local);
        } else {
            self.write(key.clone(), None, None, now_ms)?;
            // The adds of a set the removal just observed are dead: free them now.
            self.drop_dead_adds(&key);
        }
        // Recorded as local writes; subscribers see them as evictions (Redis's `evicted`).
        if let Some(changes) = self.changes.as_mut() {
            for c in changes.iter_mut().skip(first_change) {
                c.source = ChangeSource::Evicted;
            }
        }
        self.stats.evicted_keys += 1;
        Ok(true)
    }
}

impl Replica {
    /// Drops, at once and with no grace, the tombstones that became stable since the last
    /// call: per origin, the dots past those the last call looked at, up to the seq that
    /// every member acknowledged and that this replica holds contiguously (for its own
    /// writes, up to what may leave it). Stable means what [`Replica::gc`] says, and is
    /// safe for the same reason: a write a collected tombstone superseded can only arrive
    /// as a stale copy the version vector covers. The grace is left out because stability
    /// alone keeps the key from coming back; it only made tombstones live longer.
    ///
    /// Each dot is looked at once (a dot never changes what it names), so the cost follows
    /// the writes, not the size of the map: the cache calls this on every acknowledgement and
    /// catch-up page while a memory limit is set, so that the tombstones of evictions leave
    /// as soon as every member has them. Returns how many were dropped.
    pub fn collect_stable_tombstones(&mut self, now_ms: u64) -> usize {
        self.collect_stable_tombstones_at_most(now_ms, usize::MAX)
    }

    /// [`Replica::collect_stable_tombstones`], dropping at most `max`: the dots past the last
    /// one it looked at wait for the next call. Each drop is a change waiting for its commit
    /// (a slot in the dirty set and an undo record, a few hundred bytes): after a flood a
    /// follower can hold hundreds of thousands of stable tombstones, and dropping them all in
    /// one go took 300 MB for a moment.
    pub fn collect_stable_tombstones_at_most(&mut self, now_ms: u64, max: usize) -> usize {
        if self.tombstones.is_empty() || !self.gc_may_run(now_ms) || max == 0 {
            return 0;
        }
        let shareable = self.shareable_seq();
        let mut doomed: Vec<(Bytes, Elem, NodeId, u64)> = Vec::new();
        for (&origin, seqs) in &self.by_dot {
            let mut stable = self.vv.get(origin);
            if origin == self.id {
                stable = stable.min(shareable);
            }
            for m in self.members.values().filter(|m| !m.left_out) {
                stable = stable.min(m.usable.get(origin));
            }
            let from = self.swept.get(&origin).copied().unwrap_or(0);
            if stable <= from {
                continue;
            }
            let mut looked = stable;
            for (&seq, &hash) in seqs.range(from + 1..=stable) {
                if doomed.len() >= max {
                    looked = seq - 1;
                    break;
                }
                if let Some(r) = self.record_at(hash, origin, seq)
                    && r.is_tombstone()
                    && self
                        .tombstones
                        .contains(&(r.version().hlc.physical_ms(), origin, seq))
                {
                    doomed.push((Bytes::copy_from_slice(r.key()), r.elem(), origin, seq));
                }
            }
            self.swept.insert(origin, looked);
            if doomed.len() >= max {
                break;
            }
        }
        for (key, elem, origin, seq) in &doomed {
            self.remove(key, *elem, ChangeSource::Dropped);
            self.floors.raise(*origin, *seq);
        }
        self.stats.gc_dropped += doomed.len() as u64;
        doomed.len()
    }

    /// How many of our own writes the member furthest behind has not acknowledged yet,
    /// among the members heard from since `heard_since_ms` (a member cut off or gone does not
    /// hold writes back). Under a memory limit every write of ours a member lacks is a
    /// tombstone the others must keep (see [`crate::Cache`]'s backpressure).
    pub fn unacknowledged_by_slowest(&self, heard_since_ms: u64) -> u64 {
        let ours = self.vv.get(self.id);
        self.members
            .values()
            .filter(|m| !m.left_out && m.heard_ms >= heard_since_ms)
            .map(|m| ours.saturating_sub(m.acked.get(self.id)))
            .max()
            .unwrap_or(0)
    }

    /// Changes recorded and not taken yet (they wait for the cache's dirty set).
    pub(crate) fn pending_change_count(&self) -> usize {
        self.changes.as_ref().map_or(0, Vec::len)
    }
}
