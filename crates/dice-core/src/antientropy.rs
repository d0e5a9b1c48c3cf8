//! Anti-entropy: a safety net under the sync protocol, as plain code (no I/O).
//!
//! Pushes and catch-up move writes by their dots: they trust that a replica holds what its
//! version vector says. A row damaged behind the protocol's back, or a bug in the delta
//! protocol, would leave two replicas with equal version vectors and different data for ever.
//! Anti-entropy finds and repairs that, with bytes in proportion to the difference:
//!
//! 1. The initiator sends its version vector and the top level of a two-level digest tree:
//!    [`GROUPS`] group digests, each the sum of [`BUCKETS_PER_GROUP`] bucket digests. A key's
//!    bucket is the top bits of a fixed hash of the key ([`key_hash`]), the same on every node.
//!    A bucket's digest is what [`Replica::digest`] covers of its keys (entries holding a value,
//!    expired or not; tombstones left out), kept up to date by the replica as entries change.
//! 2. The responder compares only if the version vectors are equal and neither side holds an
//!    entry past its vector (otherwise normal catch-up is still at work): equal groups end
//!    the exchange ([`AeMessage::InSync`]); otherwise it answers with the bucket digests of
//!    the differing groups.
//! 3. The initiator lists, for each differing bucket, every entry it holds there, tombstones
//!    included (`key hash, version, entry hash`: a few dozen bytes each, whatever the key).
//! 4. The responder compares with its own list of those buckets and answers with the entries
//!    it holds newer or the initiator lacks, and the key hashes it wants (the initiator holds
//!    them newer, or the responder lacks them).
//! 5. The initiator applies those and sends the wanted entries, which the responder applies.
//!
//! Received entries go through the normal LWW merge, with one exception to the stale-copy
//! rule, argued at `Replica::apply_repair`: with equal version vectors, a live entry for a
//! key the receiver holds nothing for is one it lost, not one it collected. Without that
//! exception a key lost on one side would never come back: its version vector covers it, and
//! `apply` ignores such an entry as a stale copy. Dead entries are still ignored then: the
//! receiver may have collected them (garbage collection runs at different times on different
//! nodes, so transient differences of dead entries are normal and are not counted).
//!
//! Tombstones are left out of bucket digests, as out of the digest: a tombstone and no entry
//! read the same, and which of the two a node holds depends on when its GC ran, so including
//! them would make converged nodes differ. They are in the bucket lists, so that a tombstone
//! newer than a value the other side holds is sent.
//!
//! Same version, different contents (a value damaged in place) cannot be settled by LWW: it
//! is logged and counted as a conflict, and left alone.

use crate::entry::{Elem, Entry, NodeId, Version};
use crate::record::Record;
use crate::replica::{Replica, record_hash};
use crate::sync::{SyncLimits, SyncMessage};
use crate::version_vector::VersionVector;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// log2 of [`BUCKETS`].
const BUCKET_BITS: u32 = 10;
/// Buckets the keys are spread over.
pub const BUCKETS: usize = 1 << BUCKET_BITS;
/// Buckets per group: the second level of the digest tree.
pub const BUCKETS_PER_GROUP: usize = 32;
/// Groups: the top level of the digest tree, sent in full by every exchange.
pub const GROUPS: usize = BUCKETS / BUCKETS_PER_GROUP;
/// Most differing buckets listed in one exchange; the rest wait for the next.
pub const MAX_BUCKETS_PER_EXCHANGE: usize = 64;
/// Most list items (and wanted key hashes) in one message.
pub const MAX_LIST_ITEMS: usize = 65_536;
/// Seed of [`key_hash`]: part of the protocol, the same on every node.
const KEY_SEED: u64 = 0x6469_6365_2d61_6531;

/// The hash of a key that places it in a bucket and names it in bucket lists.
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, KEY_SEED)
}

/// The hash that names an element of a key in bucket lists: for the key's own element (a
/// string) its [`key_hash`]; for a counter's elements, the key's bucket bits (all elements of
/// a key share its bucket, whose digest covers its counter as a whole) and a hash of the key
/// and the element below them.
pub fn item_hash(key: &[u8], elem: Elem) -> u64 {
    let h = key_hash(key);
    let word = |w: &[u8]| u64::from_le_bytes(w.try_into().unwrap_or_default());
    let (tag, id, seq, origin) = match elem {
        Elem::Key => return h,
        Elem::Count(o) => (1u8, o.as_u64(), 0, None),
        Elem::Reset(o, s) => (2u8, o.as_u64(), s, None),
        Elem::Field(f) => {
            let (a, b) = f.0.split_at(8);
            (3u8, word(a), word(b), None)
        }
        Elem::Member(f, o) => {
            let (a, b) = f.0.split_at(8);
            (4u8, word(a), word(b), Some(o.as_u64()))
        }
        Elem::SetRemove(o, s) => (5u8, o.as_u64(), s, None),
        Elem::FieldCount(f, o) => {
            let (a, b) = f.0.split_at(8);
            (6u8, word(a), word(b), Some(o.as_u64()))
        }
        Elem::FieldReset(f, o) => {
            let (a, b) = f.0.split_at(8);
            (7u8, word(a), word(b), Some(o.as_u64()))
        }
    };
    let mut x = xxhash_rust::xxh3::Xxh3::with_seed(KEY_SEED);
    x.update(key);
    x.update(&[tag]);
    x.update(&id.to_le_bytes());
    x.update(&seq.to_le_bytes());
    if let Some(o) = origin {
        x.update(&o.to_le_bytes());
    }
    let low_mask = (1u64 << (64 - BUCKET_BITS)) - 1;
    (h & !low_mask) | (x.digest() & low_mask)
}

/// The bucket of a key hash: its top bits.
pub fn bucket_of(key_hash: u64) -> usize {
    (key_hash >> (64 - BUCKET_BITS)) as usize
}

/// The bucket of a key.
pub fn bucket_of_key(key: &[u8]) -> usize {
    bucket_of(key_hash(key))
}

/// The top level of the tree: per group, the wrapping sum of its bucket digests.
pub fn group_digests(buckets: &[u64]) -> Vec<u64> {
    buckets
        .chunks(BUCKETS_PER_GROUP)
        .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
        .collect()
}

/// One entry of a bucket list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListItem {
    /// [`item_hash`] of its key and element.
    pub key_hash: u64,
    /// Its version.
    pub version: Version,
    /// A hash of its whole contents (key, value, version, expiry).
    pub entry_hash: u64,
}

/// What one side holds in one bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketList {
    /// The bucket.
    pub bucket: u16,
    /// Every entry held in it, tombstones included.
    pub items: Vec<ListItem>,
}

/// The bucket digests of one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDigests {
    /// The group.
    pub group: u16,
    /// Its [`BUCKETS_PER_GROUP`] bucket digests, in bucket order.
    pub buckets: Vec<u64>,
}

/// The messages of an anti-entropy exchange (inside [`SyncMessage::AntiEntropy`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AeMessage {
    /// Initiator → responder: its version vector and group digests.
    Summary {
        /// The initiator.
        from: NodeId,
        /// Its version vector.
        vv: VersionVector,
        /// Its [`GROUPS`] group digests.
        groups: Vec<u64>,
    },
    /// Responder → initiator: the version vectors differ (or one side holds entries past
    /// its own); normal sync is at work, nothing is compared.
    NotComparable,
    /// Responder → initiator: every group digest is equal.
    InSync,
    /// Responder → initiator: its bucket digests of the groups that differ.
    Buckets {
        /// One per differing group.
        groups: Vec<GroupDigests>,
    },
    /// Initiator → responder: what it holds in the buckets that differ.
    Lists {
        /// The initiator.
        from: NodeId,
        /// Its version vector.
        vv: VersionVector,
        /// One per bucket.
        lists: Vec<BucketList>,
    },
    /// Responder → initiator: the entries the initiator lacks or holds older, and the key
    /// hashes of the entries the responder wants.
    Repair {
        /// The responder's version vector.
        vv: VersionVector,
        /// Entries for the initiator.
        entries: Vec<Entry>,
        /// Key hashes whose entries the initiator should send.
        want: Vec<u64>,
        /// Keys found with the same version and different contents.
        conflicts: u32,
    },
    /// Initiator → responder: the entries wanted.
    Entries {
        /// The initiator.
        from: NodeId,
        /// Its version vector.
        vv: VersionVector,
        /// The entries.
        entries: Vec<Entry>,
    },
    /// Responder → initiator: the end, and how many entries won there.
    Done {
        /// Entries installed by the responder.
        applied: u32,
    },
}

impl AeMessage {
    /// Entries the message carries.
    pub fn entry_count(&self) -> usize {
        match self {
            AeMessage::Repair { entries, .. } | AeMessage::Entries { entries, .. } => entries.len(),
            _ => 0,
        }
    }

    /// Checks the bounds and shape of a decoded message (the entry count is checked with
    /// every other message's).
    pub fn validate(&self) -> std::result::Result<(), String> {
        match self {
            AeMessage::Summary { groups, .. } if groups.len() != GROUPS => {
                Err(format!("{} group digests, expected {GROUPS}", groups.len()))
            }
            AeMessage::Buckets { groups } => {
                if groups.len() > GROUPS {
                    return Err(format!("{} groups, at most {GROUPS}", groups.len()));
                }
                let mut seen = HashSet::new();
                for g in groups {
                    if usize::from(g.group) >= GROUPS || !seen.insert(g.group) {
                        return Err(format!("group {} out of range or repeated", g.group));
                    }
                    if g.buckets.len() != BUCKETS_PER_GROUP {
                        return Err(format!(
                            "{} bucket digests in group {}, expected {BUCKETS_PER_GROUP}",
                            g.buckets.len(),
                            g.group
                        ));
                    }
                }
                Ok(())
            }
            AeMessage::Lists { lists, .. } => {
                if lists.len() > MAX_BUCKETS_PER_EXCHANGE {
                    return Err(format!(
                        "{} bucket lists, at most {MAX_BUCKETS_PER_EXCHANGE}",
                        lists.len()
                    ));
                }
                let items: usize = lists.iter().map(|l| l.items.len()).sum();
                if items > MAX_LIST_ITEMS {
                    return Err(format!("{items} list items, at most {MAX_LIST_ITEMS}"));
                }
                let mut seen = HashSet::new();
                for l in lists {
                    if usize::from(l.bucket) >= BUCKETS || !seen.insert(l.bucket) {
                        return Err(format!("bucket {} out of range or repeated", l.bucket));
                    }
                    if l.items
                        .iter()
                        .any(|i| bucket_of(i.key_hash) != usize::from(l.bucket))
                    {
                        return Err(format!("an item listed in the wrong bucket {}", l.bucket));
                    }
                }
                Ok(())
            }
            AeMessage::Repair { want, .. } if want.len() > MAX_LIST_ITEMS => Err(format!(
                "{} wanted keys, at most {MAX_LIST_ITEMS}",
                want.len()
            )),
            _ => Ok(()),
        }
    }
}

/// Whether `vv` (a peer's) and the replica's describe the same writes, and the replica holds
/// nothing past its vector: only then do different digests mean a fault.
pub fn comparable(replica: &Replica, vv: &VersionVector) -> bool {
    replica.vv().dominates(vv) && vv.dominates(replica.vv()) && !replica.holds_beyond_vv()
}

/// What one exchange did, seen from the initiator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AeStats {
    /// The digests were compared (the version vectors were equal).
    pub compared: bool,
    /// Buckets found different (and listed).
    pub differing_buckets: usize,
    /// List items sent.
    pub items_sent: usize,
    /// Entries received from the responder.
    pub entries_received: usize,
    /// Of those, entries installed here.
    pub applied_here: usize,
    /// Entries sent to the responder.
    pub entries_sent: usize,
    /// Of those, entries the responder installed.
    pub applied_there: usize,
    /// Keys with the same version and different contents.
    pub conflicts: usize,
}

impl AeStats {
    /// Whether either side installed anything: the exchange repaired a divergence.
    pub fn repaired(&self) -> bool {
        self.applied_here + self.applied_there > 0
    }
}

/// What to do after handling a reply.
#[derive(Debug)]
pub enum AeStep {
    /// Send this message to the responder and feed its answer back.
    Send(SyncMessage),
    /// The exchange is over.
    Done(AeStats),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    Summary,
    Lists,
    Entries,
}

/// The initiating side of one anti-entropy exchange with one peer.
#[derive(Debug)]
pub struct AeSession {
    sent: Sent,
    /// The buckets listed, for checking what the responder wants.
    listed: BTreeSet<usize>,
    stats: AeStats,
}

impl AeSession {
    /// Starts an exchange; `None` while the replica holds entries past its version vector
    /// (a catch-up is pending, there is nothing to compare).
    pub fn start(replica: &Replica) -> Option<(AeSession, SyncMessage)> {
        if replica.holds_beyond_vv() {
            return None;
        }
        let msg = AeMessage::Summary {
            from: replica.id(),
            vv: replica.vv().clone(),
            groups: group_digests(replica.bucket_digests()),
        };
        let session = AeSession {
            sent: Sent::Summary,
            listed: BTreeSet::new(),
            stats: AeStats::default(),
        };
        Some((session, SyncMessage::AntiEntropy(msg)))
    }

    /// Handles the responder's answer.
    pub fn handle(
        &mut self,
        replica: &mut Replica,
        msg: SyncMessage,
        limits: &SyncLimits,
        now_ms: u64,
    ) -> Result<AeStep> {
        let SyncMessage::AntiEntropy(msg) = msg else {
            return Err(Error::Protocol(
                "expected an anti-entropy answer".to_string(),
            ));
        };
        match (self.sent, msg) {
            (Sent::Summary | Sent::Lists, AeMessage::NotComparable) => Ok(AeStep::Done(self.stats)),
            (Sent::Summary, AeMessage::InSync) => {
                self.stats.compared = true;
                replica.stats_mut().ae_compared += 1;
                Ok(AeStep::Done(self.stats))
            }
            (Sent::Summary, AeMessage::Buckets { groups }) => {
                self.stats.compared = true;
                replica.stats_mut().ae_compared += 1;
                if replica.holds_beyond_vv() {
                    return Ok(AeStep::Done(self.stats));
                }
                let ours = replica.bucket_digests();
                let differing: Vec<usize> = groups
                    .iter()
                    .flat_map(|g| {
                        let first = usize::from(g.group) * BUCKETS_PER_GROUP;
                        g.buckets
                            .iter()
                            .enumerate()
                            .filter(move |&(i, d)| ours.get(first + i) != Some(d))
                            .map(move |(i, _)| first + i)
                    })
                    .take(MAX_BUCKETS_PER_EXCHANGE)
                    .collect();
                let lists = list_buckets(replica, &differing);
                if lists.is_empty() {
                    return Ok(AeStep::Done(self.stats));
                }
                self.stats.differing_buckets = lists.len();
                self.stats.items_sent = lists.iter().map(|l| l.items.len()).sum();
                self.listed = lists.iter().map(|l| usize::from(l.bucket)).collect();
                self.sent = Sent::Lists;
                Ok(AeStep::Send(SyncMessage::AntiEntropy(AeMessage::Lists {
                    from: replica.id(),
                    vv: replica.vv().clone(),
                    lists,
                })))
            }
            (
                Sent::Lists,
                AeMessage::Repair {
                    vv,
                    entries,
                    want,
                    conflicts,
                },
            ) => {
                self.stats.conflicts = conflicts as usize;
                replica.stats_mut().repair_conflicts += u64::from(conflicts);
                self.stats.entries_received = entries.len();
                self.stats.applied_here = apply_entries(replica, entries, &vv, now_ms)?;
                let want: HashSet<u64> = want
                    .into_iter()
                    .filter(|h| self.listed.contains(&bucket_of(*h)))
                    .collect();
                if want.is_empty() {
                    return Ok(AeStep::Done(self.stats));
                }
                let entries = wanted_entries(replica, &want, limits);
                if entries.is_empty() {
                    return Ok(AeStep::Done(self.stats));
                }
                self.stats.entries_sent = entries.len();
                self.sent = Sent::Entries;
                Ok(AeStep::Send(SyncMessage::AntiEntropy(AeMessage::Entries {
                    from: replica.id(),
                    vv: replica.vv().clone(),
                    entries,
                })))
            }
            (Sent::Entries, AeMessage::Done { applied }) => {
                self.stats.applied_there = applied as usize;
                Ok(AeStep::Done(self.stats))
            }
            (sent, msg) => Err(Error::Protocol(format!(
                "unexpected anti-entropy answer {} after {sent:?}",
                msg_name(&msg)
            ))),
        }
    }
}

fn msg_name(msg: &AeMessage) -> &'static str {
    match msg {
        AeMessage::Summary { .. } => "Summary",
        AeMessage::NotComparable => "NotComparable",
        AeMessage::InSync => "InSync",
        AeMessage::Buckets { .. } => "Buckets",
        AeMessage::Lists { .. } => "Lists",
        AeMessage::Repair { .. } => "Repair",
        AeMessage::Entries { .. } => "Entries",
        AeMessage::Done { .. } => "Done",
    }
}

/// Answers an exchange's request (the responding side). A reply arriving here, outside of
/// an exchange, is a protocol error.
pub fn serve(
    replica: &mut Replica,
    msg: AeMessage,
    limits: &SyncLimits,
    now_ms: u64,
) -> Result<SyncMessage> {
    let reply = match msg {
        AeMessage::Summary { vv, groups, .. } => {
            if !comparable(replica, &vv) {
                AeMessage::NotComparable
            } else {
                let ours = replica.bucket_digests();
                let differing: Vec<GroupDigests> = group_digests(ours)
                    .iter()
                    .zip(&groups)
                    .enumerate()
                    .filter(|(_, (a, b))| a != b)
                    .map(|(g, _)| GroupDigests {
                        group: g as u16,
                        buckets: ours[g * BUCKETS_PER_GROUP..(g + 1) * BUCKETS_PER_GROUP].to_vec(),
                    })
                    .collect();
                if differing.is_empty() {
                    AeMessage::InSync
                } else {
                    AeMessage::Buckets { groups: differing }
                }
            }
        }
        AeMessage::Lists { from, vv, lists } => {
            if !comparable(replica, &vv) {
                AeMessage::NotComparable
            } else {
                compare_lists(replica, from, &lists, limits)
            }
        }
        AeMessage::Entries { from, vv, entries } => {
            let applied = apply_entries(replica, entries, &vv, now_ms)?;
            if applied > 0 {
                tracing::warn!(
                    peer = %from,
                    repaired_entries = applied,
                    "anti-entropy repaired entries the sync protocol had missed"
                );
            }
            AeMessage::Done {
                applied: applied.min(u32::MAX as usize) as u32,
            }
        }
        other => {
            return Err(Error::Protocol(format!(
                "anti-entropy answer {} outside of an exchange",
                msg_name(&other)
            )));
        }
    };
    Ok(SyncMessage::AntiEntropy(reply))
}

/// Applies entries received in an exchange; counts and returns those installed.
fn apply_entries(
    replica: &mut Replica,
    entries: Vec<Entry>,
    sender_vv: &VersionVector,
    now_ms: u64,
) -> Result<usize> {
    let vv_equal = comparable(replica, sender_vv);
    let mut applied = 0;
    for e in entries {
        if replica.apply_repair(e, now_ms, vv_equal)? {
            applied += 1;
        }
    }
    if applied > 0 {
        let stats = replica.stats_mut();
        stats.repairs += 1;
        stats.repaired_entries += applied as u64;
    }
    Ok(applied)
}

fn item_of(r: &Record, key_hash: u64) -> ListItem {
    ListItem {
        key_hash,
        version: r.version(),
        entry_hash: record_hash(r),
    }
}

/// Every record held in `buckets`, by bucket (one walk over the map).
fn records_in<'a>(
    replica: &'a Replica,
    buckets: &[usize],
) -> BTreeMap<usize, Vec<(u64, &'a Record)>> {
    let wanted: HashSet<usize> = buckets.iter().copied().collect();
    let mut out: BTreeMap<usize, Vec<(u64, &Record)>> =
        buckets.iter().map(|&b| (b, Vec::new())).collect();
    if wanted.is_empty() {
        return out;
    }
    for r in replica.records() {
        // The elements of a counter that counts nothing are garbage some nodes may have
        // collected already: left out, as tombstones are from digests (a receiver could not
        // tell a lost one from a collected one, and would bring back what was deleted).
        if r.elem().is_counter() && !replica.counter_counts(r.key()) {
            continue;
        }
        // So are a set's adds that a removal observed, and removals that observe no add
        // held any more.
        if r.elem().is_set() && !replica.set_element_listed(r) {
            continue;
        }
        // And the counter elements of a hash field whose counter counts nothing.
        if r.elem().is_field_counter() && !replica.field_counter_listed(r) {
            continue;
        }
        let h = item_hash(r.key(), r.elem());
        let b = bucket_of(h);
        if wanted.contains(&b)
            && let Some(v) = out.get_mut(&b)
        {
            v.push((h, r));
        }
    }
    out
}

/// Lists of our entries in `buckets`, while they fit in [`MAX_LIST_ITEMS`] items.
fn list_buckets(replica: &Replica, buckets: &[usize]) -> Vec<BucketList> {
    let mut lists = Vec::new();
    let mut total = 0;
    for (b, records) in records_in(replica, buckets) {
        if total + records.len() > MAX_LIST_ITEMS {
            tracing::warn!(
                bucket = b,
                entries = records.len(),
                "an anti-entropy bucket list is over the limit; left for a later exchange"
            );
            continue;
        }
        total += records.len();
        let mut items: Vec<ListItem> = records.iter().map(|(h, r)| item_of(r, *h)).collect();
        items.sort_unstable_by_key(|i| i.key_hash);
        lists.push(BucketList {
            bucket: b as u16,
            items,
        });
    }
    lists
}

/// Whether our record may leave this replica (our own writes only once durable).
fn shareable(replica: &Replica, r: &Record) -> bool {
    r.origin() != replica.id() || r.seq() <= replica.shareable_seq()
}

/// Takes entries while within a page's bounds.
fn take_page<'a>(records: impl Iterator<Item = &'a Record>, limits: &SyncLimits) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for r in records {
        if out.len() >= limits.page_max_entries
            || (bytes >= limits.page_max_bytes && !out.is_empty())
        {
            break;
        }
        let e = r.to_entry();
        bytes += e.wire_size();
        out.push(e);
    }
    out
}

/// The responder's comparison of the initiator's lists with its own.
fn compare_lists(
    replica: &mut Replica,
    from: NodeId,
    lists: &[BucketList],
    limits: &SyncLimits,
) -> AeMessage {
    let buckets: Vec<usize> = lists.iter().map(|l| usize::from(l.bucket)).collect();
    let held = records_in(replica, &buckets);
    // Key hash → item; `None` when two keys share it (then that hash is left alone).
    let mut mine: HashMap<u64, Option<(ListItem, &Record)>> = HashMap::new();
    for (h, r) in held.values().flatten() {
        mine.entry(*h)
            .and_modify(|slot| *slot = None)
            .or_insert(Some((item_of(r, *h), *r)));
    }
    let mut theirs: HashMap<u64, Option<&ListItem>> = HashMap::new();
    for i in lists.iter().flat_map(|l| &l.items) {
        theirs
            .entry(i.key_hash)
            .and_modify(|slot| *slot = None)
            .or_insert(Some(i));
    }
    let mut send: Vec<(u64, &Record)> = Vec::new();
    let mut want: Vec<u64> = Vec::new();
    let mut conflicts = 0u32;
    for (h, m) in &mine {
        let Some((mi, r)) = m else { continue };
        match theirs.get(h) {
            None => send.push((*h, r)),
            Some(None) => {}
            Some(Some(ti)) => {
                if matches!(r.elem(), Elem::Field(_)) && mi.version != ti.version {
                    // A field's tombstone may lose to an older value (it removes only the
                    // write it observed, see `entry::field_wins`): which copy wins is not
                    // told by the versions alone. Each side takes the other's and keeps the
                    // winner.
                    send.push((*h, r));
                    want.push(*h);
                } else if mi.version > ti.version {
                    send.push((*h, r));
                } else if mi.version < ti.version {
                    want.push(*h);
                } else if mi.entry_hash != ti.entry_hash {
                    conflicts += 1;
                }
            }
        }
    }
    for (h, t) in &theirs {
        if t.is_some() && !mine.contains_key(h) {
            want.push(*h);
        }
    }
    send.retain(|(_, r)| shareable(replica, r));
    send.sort_unstable_by_key(|(h, _)| *h);
    want.sort_unstable();
    want.truncate(MAX_LIST_ITEMS);
    let entries = take_page(send.iter().map(|(_, r)| *r), limits);
    let vv = replica.vv().clone();
    drop(held);
    if conflicts > 0 {
        tracing::warn!(
            peer = %from,
            conflicts,
            "anti-entropy found keys holding the same version with different contents; \
             last-writer-wins cannot tell which is right, they are left as they are"
        );
        replica.stats_mut().repair_conflicts += u64::from(conflicts);
    }
    AeMessage::Repair {
        vv,
        entries,
        want,
        conflicts,
    }
}

/// Our entries whose key hashes are in `want` (and that may leave us), within a page.
fn wanted_entries(replica: &Replica, want: &HashSet<u64>, limits: &SyncLimits) -> Vec<Entry> {
    let buckets: BTreeSet<usize> = want.iter().map(|h| bucket_of(*h)).collect();
    let buckets: Vec<usize> = buckets.into_iter().collect();
    let held = records_in(replica, &buckets);
    let mut found: Vec<(u64, &Record)> = held
        .values()
        .flatten()
        .filter(|(h, r)| want.contains(h) && shareable(replica, r))
        .map(|(h, r)| (*h, *r))
        .collect();
    found.sort_unstable_by_key(|(h, _)| *h);
    take_page(found.iter().map(|(_, r)| *r), limits)
}
