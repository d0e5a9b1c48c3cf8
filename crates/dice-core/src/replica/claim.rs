//! What a push of our own writes may claim (see [`crate::sync::PushRange`]) when peers'
//! writes replaced some of ours.
//!
//! A push claims "every write of ours in `(after, through]` is in this push, or superseded by
//! a newer write of the same key". A receiver that holds our writes up to `after` then raises
//! its version vector to `through`. A write of ours that a *peer's* write replaced here is in
//! no push of ours any more, and the receiver may hold neither it nor the write that replaced
//! it: claiming it would make the receiver's vector say it holds something it does not.
//!
//! So each such write is remembered (its seq, the slot hash of its key, and the dot of the
//! write that replaced it) and the claim walks past it only when the receiver is sure to hold
//! the replacing write or something newer: every member acknowledged that dot already, or the
//! push carries the key's current element (relayed: a peer's write, sent along with ours).
//! Without either (the key's elements are gone, or the current one is a write of ours that
//! may not leave yet) the claim stops before it, as it always did.
//!
//! The memory is bounded ([`MAX_LOST_OWN`]); what it forgets, and what a restart forgets,
//! raises `local_lost_to_remote`, below which nothing is claimed at all.

use super::Replica;
use crate::entry::{Entry, NodeId};
use crate::record::Record;
use crate::sync::PushRange;
use std::collections::BTreeMap;

/// Most of our replaced writes remembered for push claims (about 50 bytes each). Past it the
/// oldest is forgotten, and pushes claim nothing that starts before it.
pub(crate) const MAX_LOST_OWN: usize = 1 << 16;

/// One of our writes that a peer's write replaced here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LostOwn {
    /// Slot hash of its key and element.
    hash: u64,
    /// The dot of the write that replaced it.
    by: (NodeId, u64),
}

/// A push's contents and claim, as [`Replica::push_after`] sends them.
#[derive(Debug)]
pub(crate) struct PushPlan {
    /// Our writes, then the peers' writes relayed to cover replaced ones of ours.
    pub entries: Vec<Entry>,
    /// The range claimed, if any.
    pub range: Option<PushRange>,
    /// The last seq of ours the push covers (where the next push starts).
    pub through: u64,
}

impl Replica {
    /// Our write `seq` (in the slot `hash`) was replaced here by a peer's write `by`.
    pub(crate) fn note_lost_own(&mut self, seq: u64, hash: u64, by: (NodeId, u64)) {
        self.lost_own.insert(seq, LostOwn { hash, by });
        if self.lost_own.len() > MAX_LOST_OWN
            && let Some((forgotten, _)) = self.lost_own.pop_first()
        {
            self.local_lost_to_remote = self.local_lost_to_remote.max(forgotten);
        }
        // Every connected peer's pushes start at or past what all members acknowledged of
        // ours: what lies below is never walked again. Pruned now and then, not on every
        // replace (the minimum costs a pass over the members).
        if self.lost_own.len().is_multiple_of(1024) {
            let floor = self.acked_by_all(self.id);
            if floor > 0 {
                let keep = self.lost_own.split_off(&(floor + 1));
                let dropped = std::mem::replace(&mut self.lost_own, keep);
                if let Some((&last, _)) = dropped.last_key_value() {
                    self.local_lost_to_remote = self.local_lost_to_remote.max(last);
                }
            }
        }
    }

    /// Forgets every replaced write remembered (a restart keeps none of them).
    pub(crate) fn forget_lost_own(&mut self) {
        self.lost_own.clear();
    }

    /// How many replaced writes of ours are remembered (for tests and figures).
    pub fn lost_own_len(&self) -> usize {
        self.lost_own.len()
    }

    /// The seq of `origin` that every member acknowledged holding (0 with no member).
    fn acked_by_all(&self, origin: NodeId) -> u64 {
        let mut min: Option<u64> = None;
        for m in self.members.values() {
            let s = m.acked.get(origin);
            min = Some(min.map_or(s, |x| x.min(s)));
        }
        min.unwrap_or(0)
    }

    /// The push of our writes after `after_seq`, at most `max_entries` entries in all.
    pub(crate) fn plan_push(&self, after_seq: u64, max_entries: usize) -> Option<PushPlan> {
        let local = self.shareable_seq();
        if local <= after_seq {
            return None;
        }
        let max_entries = max_entries.max(1);
        // GC dropped a write of ours in the range, or we forgot which were replaced: a
        // receiver holding an older value would keep it. No claim at all.
        let mut claimable =
            self.local_lost_to_remote <= after_seq && self.floors.get(self.id) <= after_seq;
        let own = self.by_dot.get(&self.id);
        let mut own_iter = own
            .into_iter()
            .flat_map(|m| m.range(after_seq + 1..=local))
            .peekable();
        let mut lost_iter = self.lost_own.range(after_seq + 1..=local).peekable();
        let mut entries: Vec<Entry> = Vec::new();
        let mut relayed: Vec<Entry> = Vec::new();
        let mut acked_cache: BTreeMap<NodeId, u64> = BTreeMap::new();
        let mut claim = after_seq;
        let mut through = local;
        loop {
            let next_own = own_iter.peek().map(|&(&s, _)| s);
            let next_lost = lost_iter.peek().map(|&(&s, _)| s);
            let (seq, is_own) = match (next_own, next_lost) {
                (None, None) => break,
                (Some(o), Some(l)) if l < o => (l, false),
                (Some(o), _) => (o, true),
                (None, Some(l)) => (l, false),
            };
            if is_own {
                let (_, &hash) = own_iter.next().expect("peeked");
                if entries.len() + relayed.len() >= max_entries {
                    through = seq - 1;
                    break;
                }
                if let Some(r) = self.record_at(hash, self.id, seq) {
                    entries.push(r.to_entry());
                }
                if claimable {
                    claim = seq;
                }
                continue;
            }
            let (_, lost) = lost_iter.next().expect("peeked");
            if !claimable {
                continue;
            }
            match self.cover_lost(lost, local, &mut acked_cache) {
                Some(more) => {
                    if entries.len() + relayed.len() + more.len() > max_entries {
                        through = seq - 1;
                        break;
                    }
                    relayed.extend(more);
                    claim = seq;
                }
                None => claimable = false,
            }
        }
        if claimable {
            claim = through;
        }
        let range = (claim > after_seq).then_some(PushRange {
            origin: self.id,
            after: after_seq,
            through: claim,
        });
        entries.extend(relayed);
        Some(PushPlan {
            entries,
            range,
            through,
        })
    }

    /// What a push must carry so that a receiver holds the write that replaced `lost` or a
    /// newer one: nothing when every member acknowledged that write, else the key's current
    /// elements that not every member acknowledged. `None` when no push can cover it.
    fn cover_lost(
        &self,
        lost: &LostOwn,
        shareable: u64,
        acked: &mut BTreeMap<NodeId, u64>,
    ) -> Option<Vec<Entry>> {
        let mut acked_by_all = |origin: NodeId| {
            *acked
                .entry(origin)
                .or_insert_with(|| self.acked_by_all(origin))
        };
        let (by_origin, by_seq) = lost.by;
        if by_origin != self.id && by_seq <= acked_by_all(by_origin) {
            return Some(Vec::new());
        }
        let current: Vec<&Record> = self
            .map
            .iter_hash(lost.hash)
            .filter(|r| self.hash(r.key(), r.elem()) == lost.hash)
            .collect();
        if current.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        for r in current {
            if r.origin() == self.id {
                // Ours: sent by this push if the walk reaches it, by a later one otherwise
                // (and then the claim must wait); never before it may leave.
                if r.seq() > shareable {
                    return None;
                }
                out.push(r.to_entry());
            } else if r.seq() > acked_by_all(r.origin()) {
                out.push(r.to_entry());
            }
        }
        Some(out)
    }
}
