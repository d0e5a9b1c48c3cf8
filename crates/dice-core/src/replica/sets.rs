//! Sets in the replica: their index ([`SetState`]), reads, writes, digest and garbage
//! collection. A set is `Member(id, origin)` adds and `SetRemove(node, seq)` removals (see
//! [`crate::set`]); a member is present while one of its adds is observed by no removal.

use super::{ChangeSource, Replica, Slot, record_hash};
use crate::entry::{Elem, FieldId, NodeId, Version, is_dead};
use crate::record::Record;
use crate::set::{OBSERVED_LEN, ObservedAdd, RemoveRecord, observations};
use crate::version_vector::VersionVector;
use crate::{Error, Result};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// A key holding set elements.
#[derive(Debug, Default)]
pub(super) struct SetState {
    /// Per member id: its adds held and what removals observed of them.
    members: BTreeMap<FieldId, MemberState>,
    /// The adds that count (no removal observed them), expired or not.
    counting: BTreeSet<(Version, FieldId, NodeId)>,
    /// Those with an expiry: (expiry, id, origin).
    expiring: BTreeSet<(u64, FieldId, NodeId)>,
    /// Members with at least one add that counts.
    present: usize,
    /// Adds held that a removal observed (garbage, until stable).
    dead_adds: usize,
    /// The removals held, by dot.
    removals: BTreeSet<(NodeId, u64)>,
    /// The greatest version of a set element installed (for `WATCH`).
    last: Version,
}

/// One add held: its origin, seq, version, expiry and digest hash.
#[derive(Clone, Copy, Debug)]
struct Add {
    origin: NodeId,
    seq: u64,
    version: Version,
    expires_at_ms: Option<u64>,
    hash: u64,
}

#[derive(Debug, Default)]
struct MemberState {
    /// The adds held, one per origin.
    adds: Vec<Add>,
    /// Per origin, the seqs removals observed (one per removal: a multiset).
    observed: Vec<(NodeId, u64)>,
    /// The adds that counted when last computed (as they were then).
    counted: Vec<Add>,
    /// How many adds did not count then.
    dead: usize,
}

impl MemberState {
    fn observed_max(&self, origin: NodeId) -> Option<u64> {
        self.observed
            .iter()
            .filter(|(o, _)| *o == origin)
            .map(|(_, s)| *s)
            .max()
    }

    fn counts(&self, a: &Add) -> bool {
        self.observed_max(a.origin).is_none_or(|s| s < a.seq)
    }

    /// Whether some add that counts has not expired at `now_ms`.
    fn live(&self, now_ms: u64) -> bool {
        self.counted
            .iter()
            .any(|a| !is_dead(false, a.expires_at_ms, now_ms))
    }
}

impl SetState {
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.removals.is_empty()
    }
}

/// How many observations fit one removal element under a value limit.
fn per_removal(max_value_len: usize) -> usize {
    (max_value_len / OBSERVED_LEN).max(1)
}

impl Replica {
    // --- the index ---

    /// Indexes a set element (called by `index`, before the record joins the map).
    pub(super) fn index_set(&mut self, r: &Record) {
        let key = r.key();
        if !self.sets.contains_key(key) {
            self.sets
                .insert(Bytes::copy_from_slice(key), SetState::default());
        }
        let Some(state) = self.sets.get_mut(key) else {
            return;
        };
        state.last = state.last.max(r.version());
        match r.elem() {
            Elem::Member(id, origin) => {
                let add = Add {
                    origin,
                    seq: r.seq(),
                    version: r.version(),
                    expires_at_ms: r.expires_at_ms(),
                    hash: record_hash(r),
                };
                let m = state.members.entry(id).or_insert_with(|| {
                    self.set_members += 1;
                    MemberState::default()
                });
                m.adds.retain(|a| a.origin != origin);
                // Most members have one add: a first push would reserve room for four.
                m.adds.reserve_exact(1);
                m.adds.push(add);
                self.refresh_members(key, &[id]);
            }
            Elem::SetRemove(node, seq) => {
                state.removals.insert((node, seq));
                let mut ids = Vec::new();
                if let Some(obs) = r.value().and_then(|v| observations(v).ok()) {
                    for o in obs {
                        let m = state.members.entry(o.id).or_insert_with(|| {
                            self.set_members += 1;
                            MemberState::default()
                        });
                        let observed = &mut m.observed;
                        observed.reserve_exact(1);
                        observed.push((o.origin, o.seq));
                        ids.push(o.id);
                    }
                }
                self.refresh_members(key, &ids);
            }
            _ => {}
        }
    }

    /// Unindexes a set element (called by `unindex`, once the record left the map).
    pub(super) fn unindex_set(&mut self, r: &Record) {
        let key = r.key();
        let Some(state) = self.sets.get_mut(key) else {
            return;
        };
        match r.elem() {
            Elem::Member(id, origin) => {
                if let Some(m) = state.members.get_mut(&id) {
                    m.adds.retain(|a| a.origin != origin || a.seq != r.seq());
                }
                self.refresh_members(key, &[id]);
            }
            Elem::SetRemove(node, seq) => {
                state.removals.remove(&(node, seq));
                let mut ids = Vec::new();
                if let Some(obs) = r.value().and_then(|v| observations(v).ok()) {
                    for o in obs {
                        if let Some(m) = state.members.get_mut(&o.id)
                            && let Some(i) = m
                                .observed
                                .iter()
                                .position(|&(on, s)| on == o.origin && s == o.seq)
                        {
                            m.observed.swap_remove(i);
                        }
                        ids.push(o.id);
                    }
                }
                self.refresh_members(key, &ids);
            }
            _ => {}
        }
        if self.sets.get(key).is_some_and(SetState::is_empty) {
            self.sets.remove(key);
        }
    }

    /// Recomputes which adds of the members `ids` of `key` count, and what they add to the
    /// digest.
    fn refresh_members(&mut self, key: &[u8], ids: &[FieldId]) {
        let Some(state) = self.sets.get_mut(key) else {
            return;
        };
        let mut delta = 0u64;
        for id in ids {
            let Some(m) = state.members.get_mut(id) else {
                continue;
            };
            if !m.counted.is_empty() {
                state.present -= 1;
            }
            for a in m.counted.drain(..) {
                state.counting.remove(&(a.version, *id, a.origin));
                if let Some(t) = a.expires_at_ms {
                    state.expiring.remove(&(t, *id, a.origin));
                }
                delta = delta.wrapping_sub(a.hash);
            }
            state.dead_adds -= m.dead;
            // Sized exactly: a collected `filter` would reserve room for four adds.
            let mut counted: Vec<Add> =
                Vec::with_capacity(m.adds.iter().filter(|a| m.counts(a)).count());
            counted.extend(m.adds.iter().filter(|a| m.counts(a)).copied());
            m.dead = m.adds.len() - counted.len();
            state.dead_adds += m.dead;
            for a in &counted {
                state.counting.insert((a.version, *id, a.origin));
                if let Some(t) = a.expires_at_ms {
                    state.expiring.insert((t, *id, a.origin));
                }
                delta = delta.wrapping_add(a.hash);
            }
            if !counted.is_empty() {
                state.present += 1;
            }
            m.counted = counted;
            if m.adds.is_empty() && m.observed.is_empty() {
                state.members.remove(id);
                self.set_members -= 1;
            }
        }
        self.valued_hash = self.valued_hash.wrapping_add(delta);
        let b = crate::antientropy::bucket_of_key(key);
        self.buckets[b] = self.buckets[b].wrapping_add(delta);
    }
}

/// Sets: reads.
impl Replica {
    /// `key`'s set, if some member reads as present: the version of its newest live add and
    /// the number of members present.
    pub(super) fn set_live(&self, key: &[u8], now_ms: u64) -> Option<(Version, usize)> {
        let s = self.sets.get(key)?;
        if s.present == 0 {
            return None;
        }
        let expired = s
            .expiring
            .range(
                ..(
                    now_ms.saturating_add(1),
                    FieldId::default(),
                    NodeId::default(),
                ),
            )
            .next()
            .is_some();
        let n = if expired {
            s.members.values().filter(|m| m.live(now_ms)).count()
        } else {
            s.present
        };
        if n == 0 {
            return None;
        }
        let newest = s.counting.iter().rev().find(|(_, id, o)| {
            s.members.get(id).is_some_and(|m| {
                m.counted
                    .iter()
                    .any(|a| a.origin == *o && !is_dead(false, a.expires_at_ms, now_ms))
            })
        })?;
        Some((newest.0, n))
    }

    /// `key`'s set if the key is a set: some member reads as present and its newest add is
    /// newer than any live string, counter or hash of the key.
    pub(super) fn set_visible(&self, key: &[u8], now_ms: u64) -> Option<(Version, usize)> {
        let (v, n) = self.set_live(key, now_ms)?;
        let newer_other = self.string_version(key, now_ms).is_some_and(|s| s > v)
            || (!self.hashes.is_empty() && self.hash_live(key, now_ms).is_some_and(|(h, _)| h > v));
        (!newer_other).then_some((v, n))
    }

    /// The version of `key`'s live set, whatever the key's type.
    pub(super) fn set_version(&self, key: &[u8], now_ms: u64) -> Option<Version> {
        if self.sets.is_empty() {
            return None;
        }
        self.set_live(key, now_ms).map(|(v, _)| v)
    }

    /// The greatest version of a set element of `key` installed (for `WATCH`).
    pub(super) fn set_last(&self, key: &[u8]) -> Option<Version> {
        self.sets.get(key).map(|s| s.last)
    }

    /// The expiry of `key`'s set (that of its newest live add), if the key is a set.
    pub(super) fn set_expiry(&self, key: &[u8], now_ms: u64) -> Option<Option<u64>> {
        let (v, _) = self.set_visible(key, now_ms)?;
        let s = self.sets.get(key)?;
        let &(_, id, o) = s
            .counting
            .range((v, FieldId::default(), NodeId::default())..)
            .next()?;
        let m = s.members.get(&id)?;
        Some(m.counted.iter().find(|a| a.origin == o)?.expires_at_ms)
    }

    /// Err([`Error::WrongType`]) if `key` is a string, counter or hash.
    fn not_a_set_kind(&self, key: &[u8], now_ms: u64) -> Result<()> {
        if self
            .key_type(key, now_ms)
            .is_some_and(|t| t != super::KeyType::Set)
        {
            return Err(Error::WrongType);
        }
        Ok(())
    }

    /// The member itself of member `id` of `key`, if it reads as present at `now_ms`.
    fn member_name(&self, key: &[u8], id: FieldId, now_ms: u64) -> Option<&[u8]> {
        let m = self.sets.get(key)?.members.get(&id)?;
        let a = m
            .counted
            .iter()
            .find(|a| !is_dead(false, a.expires_at_ms, now_ms))?;
        self.slot(key, Elem::Member(id, a.origin))?.value()
    }

    /// `SISMEMBER`: whether `member` is in `key`'s set. [`Error::WrongType`] if the key is
    /// of another type.
    pub fn sismember(&self, key: &[u8], member: &[u8], now_ms: u64) -> Result<bool> {
        self.not_a_set_kind(key, now_ms)?;
        if self.sets.is_empty() || self.set_visible(key, now_ms).is_none() {
            return Ok(false);
        }
        Ok(self.member_name(key, FieldId::of(member), now_ms) == Some(member))
    }

    /// `SCARD`: the number of members of `key`'s set (0 if absent).
    pub fn scard(&self, key: &[u8], now_ms: u64) -> Result<usize> {
        self.not_a_set_kind(key, now_ms)?;
        if self.sets.is_empty() {
            return Ok(0);
        }
        Ok(self.set_visible(key, now_ms).map_or(0, |(_, n)| n))
    }

    /// `SMEMBERS`: the members of `key`'s set, in the order of their ids, borrowed from the
    /// map. [`Error::WrongType`] if the key is of another type.
    pub fn smembers(&self, key: &[u8], now_ms: u64) -> Result<Vec<&[u8]>> {
        Ok(self.set_members_after(key, None, usize::MAX, now_ms)?.0)
    }

    /// Up to `max` members of `key`'s set whose ids come after `after` (`None`: from the
    /// first), in the order of their ids, and the id to go on from (`None`: the walk is
    /// done). `SSCAN` pages through a set with it.
    pub fn set_members_after(
        &self,
        key: &[u8],
        after: Option<FieldId>,
        max: usize,
        now_ms: u64,
    ) -> Result<(Vec<&[u8]>, Option<FieldId>)> {
        self.not_a_set_kind(key, now_ms)?;
        let Some(s) = self.sets.get(key) else {
            return Ok((Vec::new(), None));
        };
        if self.set_visible(key, now_ms).is_none() {
            return Ok((Vec::new(), None));
        }
        let range = match after {
            Some(a) => s
                .members
                .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => s.members.range(..),
        };
        let mut out = Vec::new();
        let mut last = after;
        for (id, m) in range {
            if out.len() == max {
                return Ok((out, Some(last.unwrap_or_default())));
            }
            last = Some(*id);
            if !m.live(now_ms) {
                continue;
            }
            if let Some(name) = self.member_name(key, *id, now_ms) {
                out.push(name);
            }
        }
        Ok((out, None))
    }

    /// A member of `key`'s set at random, present at `now_ms`: `None` if the set is empty.
    /// Picks a random id and takes the next member present (not exactly uniform).
    pub fn set_random_member(&self, key: &[u8], now_ms: u64) -> Option<&[u8]> {
        let s = self.sets.get(key)?;
        self.set_visible(key, now_ms)?;
        let start = FieldId(rand::random());
        s.members
            .range(start..)
            .chain(s.members.range(..start))
            .filter(|(_, m)| m.live(now_ms))
            .find_map(|(id, _)| self.member_name(key, *id, now_ms))
    }
}

/// Sets: writes.
impl Replica {
    /// The expiry new adds of `key`'s set take: the set's, if it is live.
    fn set_new_expiry(&self, key: &[u8], now_ms: u64) -> Option<u64> {
        if self.sets.is_empty() {
            return None;
        }
        self.set_expiry(key, now_ms).flatten()
    }

    /// `SADD`: adds each member to `key`'s set. Every member named gets a new add of this
    /// node (one element each), present already or not, so that it survives a removal made
    /// concurrently elsewhere (add wins). New adds take the set's expiry. Returns how many
    /// members were not present. Checked before anything is written: [`Error::WrongType`],
    /// the key and value limits (a member counts as a value), [`Error::FieldCollision`].
    pub fn sadd(&mut self, key: Bytes, members: &[Bytes], now_ms: u64) -> Result<usize> {
        self.limits.check(&key, None)?;
        self.not_a_set_kind(&key, now_ms)?;
        let expiry = self.set_new_expiry(&key, now_ms);
        let mut plan: Vec<(FieldId, &Bytes)> = Vec::with_capacity(members.len());
        let mut planned = std::collections::HashSet::with_capacity(members.len());
        let mut new = 0;
        let visible = self.set_visible(&key, now_ms).is_some();
        for m in members {
            self.limits.check(&key, Some(m))?;
            let id = FieldId::of(m);
            if !planned.insert(id) {
                continue;
            }
            // Any add held names the member: another name with the same id is refused.
            if let Some(ms) = self.sets.get(&key).and_then(|s| s.members.get(&id))
                && let Some(a) = ms.adds.first()
                && self
                    .slot(&key, Elem::Member(id, a.origin))
                    .and_then(Record::value)
                    .is_some_and(|v| v != m.as_ref())
            {
                return Err(Error::FieldCollision);
            }
            let present = visible && self.member_name(&key, id, now_ms).is_some();
            if !present {
                new += 1;
            }
            plan.push((id, m));
        }
        let me = self.id;
        for (id, m) in plan {
            self.write_elem(
                key.clone(),
                Elem::Member(id, me),
                Some(m.clone()),
                expiry,
                now_ms,
            )?;
        }
        Ok(new)
    }

    /// `SREM`: removes the named members of `key`'s set that are present here, as observed:
    /// one removal (a few for huge ones) lists the adds it saw; an add it did not see, made
    /// concurrently on another node, survives. Returns how many members were removed.
    pub fn srem(&mut self, key: Bytes, members: &[Bytes], now_ms: u64) -> Result<usize> {
        self.limits.check(&key, None)?;
        self.not_a_set_kind(&key, now_ms)?;
        if self.sets.is_empty() || self.set_visible(&key, now_ms).is_none() {
            return Ok(0);
        }
        let mut ids: Vec<FieldId> = Vec::new();
        for m in members {
            let id = FieldId::of(m);
            if !ids.contains(&id) && self.member_name(&key, id, now_ms) == Some(m.as_ref()) {
                ids.push(id);
            }
        }
        let n = ids.len();
        self.remove_members(&key, &ids, now_ms)?;
        Ok(n)
    }

    /// Writes the removals of every add of members `ids` of `key` that counts here.
    fn remove_members(&mut self, key: &Bytes, ids: &[FieldId], now_ms: u64) -> Result<()> {
        let mut obs: Vec<ObservedAdd> = Vec::new();
        if let Some(s) = self.sets.get(key) {
            for id in ids {
                if let Some(m) = s.members.get(id) {
                    obs.extend(m.counted.iter().map(|a| ObservedAdd {
                        id: *id,
                        origin: a.origin,
                        seq: a.seq,
                    }));
                }
            }
        }
        self.write_removals(key, obs, now_ms)
    }

    /// Writes `obs` as removals of `key`'s set, each within the value limit.
    fn write_removals(
        &mut self,
        key: &Bytes,
        mut obs: Vec<ObservedAdd>,
        now_ms: u64,
    ) -> Result<()> {
        obs.sort_unstable();
        obs.dedup_by(|a, b| a.id == b.id && a.origin == b.origin);
        for chunk in obs.chunks(per_removal(self.limits.max_value_len)) {
            let value = RemoveRecord(chunk.to_vec()).encode();
            let seq = self.vv.get(self.id) + 1;
            self.write_elem(
                key.clone(),
                Elem::SetRemove(self.id, seq),
                Some(Bytes::from(value)),
                None,
                now_ms,
            )?;
        }
        Ok(())
    }

    /// Removes every add of `key`'s set that counts here (a write that replaces the key, a
    /// `DEL`, an eviction).
    pub(super) fn remove_set_observed(&mut self, key: &Bytes, now_ms: u64) -> Result<()> {
        let ids: Vec<FieldId> = self
            .sets
            .get(key)
            .map(|s| {
                s.members
                    .iter()
                    .filter(|(_, m)| !m.counted.is_empty())
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default();
        self.remove_members(key, &ids, now_ms)
    }

    /// `SPOP`: removes up to `count` members of `key`'s set at random and returns them.
    pub fn spop(&mut self, key: Bytes, count: usize, now_ms: u64) -> Result<Vec<Bytes>> {
        self.limits.check(&key, None)?;
        self.not_a_set_kind(&key, now_ms)?;
        let mut picked: Vec<Bytes> = Vec::new();
        if self.sets.is_empty() || self.set_visible(&key, now_ms).is_none() || count == 0 {
            return Ok(picked);
        }
        let all = self.smembers(&key, now_ms)?;
        if count >= all.len() {
            picked = all.into_iter().map(Bytes::copy_from_slice).collect();
        } else {
            let mut idx: Vec<usize> = (0..all.len()).collect();
            for i in 0..count {
                let j = i + rand::random::<u64>() as usize % (idx.len() - i);
                idx.swap(i, j);
            }
            picked = idx[..count]
                .iter()
                .map(|&i| Bytes::copy_from_slice(all[i]))
                .collect();
        }
        let ids: Vec<FieldId> = picked.iter().map(|m| FieldId::of(m)).collect();
        self.remove_members(&key, &ids, now_ms)?;
        Ok(picked)
    }

    /// `SMOVE`: moves `member` from `src`'s set to `dst`'s, as a removal from `src` and an
    /// add to `dst`. Returns whether `member` was in `src`. [`Error::WrongType`] if either
    /// key is of another type.
    pub fn smove(&mut self, src: Bytes, dst: Bytes, member: Bytes, now_ms: u64) -> Result<bool> {
        self.limits.check(&dst, Some(&member))?;
        self.not_a_set_kind(&src, now_ms)?;
        self.not_a_set_kind(&dst, now_ms)?;
        if !self.sismember(&src, &member, now_ms)? {
            return Ok(false);
        }
        if src == dst {
            return Ok(true);
        }
        self.srem(src, std::slice::from_ref(&member), now_ms)?;
        self.sadd(dst, std::slice::from_ref(&member), now_ms)?;
        Ok(true)
    }

    /// Sets the expiry of `key`'s set (`None`: none): removes every add that counts here and
    /// adds every member present again, as this node, with the new expiry. Returns whether
    /// the key is a set here. Adds made concurrently elsewhere keep their own expiry.
    pub fn expire_set(
        &mut self,
        key: Bytes,
        expires_at_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<bool> {
        if self.sets.is_empty() || self.set_visible(&key, now_ms).is_none() {
            return Ok(false);
        }
        let members: Vec<Bytes> = self
            .smembers(&key, now_ms)?
            .into_iter()
            .map(Bytes::copy_from_slice)
            .collect();
        self.remove_set_observed(&key, now_ms)?;
        let me = self.id;
        for m in members {
            self.write_elem(
                key.clone(),
                Elem::Member(FieldId::of(&m), me),
                Some(m),
                expires_at_ms,
                now_ms,
            )?;
        }
        Ok(true)
    }
}

/// Sets: digest, anti-entropy and garbage collection.
impl Replica {
    /// What `key`'s set adds to the digest, computed from the records (for tests of the kept
    /// digest): the hash of every add no removal observed.
    pub(super) fn set_digest_by_scan(&self, key: &[u8]) -> u64 {
        let mut observed: BTreeMap<(FieldId, NodeId), u64> = BTreeMap::new();
        for r in self.map.iter().filter(|r| r.key() == key) {
            if let Elem::SetRemove(..) = r.elem()
                && let Some(obs) = r.value().and_then(|v| observations(v).ok())
            {
                for o in obs {
                    let e = observed.entry((o.id, o.origin)).or_default();
                    *e = (*e).max(o.seq);
                }
            }
        }
        self.map
            .iter()
            .filter(|r| r.key() == key)
            .filter(|r| match r.elem() {
                Elem::Member(id, o) => observed.get(&(id, o)).is_none_or(|&s| s < r.seq()),
                _ => false,
            })
            .map(record_hash)
            .fold(0u64, u64::wrapping_add)
    }

    /// Whether anti-entropy lists this set element: an add that counts, or a removal that
    /// still observes an add held. Adds a removal observed, and removals that observe nothing
    /// held any more, are garbage some nodes may have collected already.
    pub(crate) fn set_element_listed(&self, r: &Record) -> bool {
        match r.elem() {
            Elem::Member(id, o) => self
                .sets
                .get(r.key())
                .and_then(|s| s.members.get(&id))
                .is_some_and(|m| m.counted.iter().any(|a| a.origin == o)),
            Elem::SetRemove(..) => self.removal_effective(r.key(), r.value()),
            _ => true,
        }
    }

    /// Whether a removal (its value) observes an add of `key` held here.
    pub(crate) fn removal_effective(&self, key: &[u8], value: Option<&[u8]>) -> bool {
        let Some(s) = self.sets.get(key) else {
            return false;
        };
        let Some(obs) = value.and_then(|v| observations(v).ok()) else {
            return false;
        };
        obs.into_iter().any(|o| {
            s.members.get(&o.id).is_some_and(|m| {
                m.adds
                    .iter()
                    .any(|a| a.origin == o.origin && a.seq <= o.seq)
            })
        })
    }

    /// Collects the garbage of sets, once stable and older than the grace (`horizon`): adds
    /// a removal observed, expired adds, and removals that observe no add held any more. A
    /// late copy of any of them is then stale (our version vector covers it), and no add a
    /// collected removal observed can be held again. A set removed whole disappears.
    pub(super) fn gc_sets(&mut self, horizon: u64, shareable: u64) -> usize {
        if self.sets.is_empty() {
            return 0;
        }
        let live: Vec<&VersionVector> = self
            .members
            .iter()
            .filter(|(_, m)| !m.left_out)
            .map(|(_, m)| &m.acked)
            .collect();
        let vv = &self.vv;
        let me = self.id;
        let ripe = |o: NodeId, s: u64, v: Version| {
            v.hlc.physical_ms() <= horizon
                && live.iter().all(|a| a.get(o) >= s)
                && s <= vv.get(o)
                && (o != me || s <= shareable)
        };
        let mut doomed: Vec<(Bytes, Vec<Slot>)> = Vec::new();
        for (key, s) in &self.sets {
            let expired = s
                .expiring
                .range(
                    ..(
                        horizon.saturating_add(1),
                        FieldId::default(),
                        NodeId::default(),
                    ),
                )
                .next()
                .is_some();
            if s.dead_adds == 0 && s.removals.is_empty() && !expired {
                continue;
            }
            let mut slots: Vec<Slot> = Vec::new();
            let mut adds_dropped: std::collections::HashSet<(FieldId, NodeId)> =
                std::collections::HashSet::new();
            for (id, m) in &s.members {
                for a in &m.adds {
                    let counts = m.counted.iter().any(|c| c.origin == a.origin);
                    let gone = !counts || a.expires_at_ms.is_some_and(|t| t <= horizon);
                    if gone && ripe(a.origin, a.seq, a.version) {
                        slots.push((Elem::Member(*id, a.origin), a.origin, a.seq));
                        adds_dropped.insert((*id, a.origin));
                    }
                }
            }
            // A removal goes once every add it observed is gone or superseded here (after
            // the adds above), and covered by our version vector.
            for &(node, seq) in &s.removals {
                let Some(r) = self.slot(key, Elem::SetRemove(node, seq)) else {
                    continue;
                };
                if !ripe(node, seq, r.version()) {
                    continue;
                }
                let Some(obs) = r.value().and_then(|v| observations(v).ok()) else {
                    continue;
                };
                let mut spent = true;
                for o in obs {
                    let held = s.members.get(&o.id).and_then(|m| {
                        m.adds
                            .iter()
                            .find(|a| a.origin == o.origin && a.seq <= o.seq)
                    });
                    let dropping = held.is_some() && adds_dropped.contains(&(o.id, o.origin));
                    if (held.is_some() && !dropping) || o.seq > vv.get(o.origin) {
                        spent = false;
                        break;
                    }
                }
                if spent {
                    slots.push((Elem::SetRemove(node, seq), node, seq));
                }
            }
            if !slots.is_empty() {
                doomed.push((key.clone(), slots));
            }
        }
        drop(live);
        self.drop_collected(doomed)
    }

    /// Drops every element of `key`'s set outright (a node that shares nothing evicting it:
    /// no other copy exists).
    pub(super) fn drop_set_elements(&mut self, key: &Bytes) {
        let Some(s) = self.sets.get(key) else {
            return;
        };
        let mut elems: Vec<Elem> = s
            .members
            .iter()
            .flat_map(|(id, m)| m.adds.iter().map(|a| Elem::Member(*id, a.origin)))
            .collect();
        elems.extend(s.removals.iter().map(|&(n, seq)| Elem::SetRemove(n, seq)));
        for e in elems {
            self.remove(key, e, ChangeSource::Local);
        }
    }

    /// Drops the adds of `key`'s set that a removal held here observed, before they are
    /// stable (an eviction frees their memory at once). Safe: the removal stays until no add
    /// it observed is held (see [`Replica::gc_sets`]), so a copy of a dropped add arriving
    /// later is dead here anyway, and once the removal goes it is stale (our version vector
    /// covers it).
    pub(super) fn drop_dead_adds(&mut self, key: &Bytes) {
        let Some(s) = self.sets.get(key) else {
            return;
        };
        let dead: Vec<Elem> = s
            .members
            .iter()
            .flat_map(|(id, m)| {
                m.adds
                    .iter()
                    .filter(|a| !m.counted.iter().any(|c| c.origin == a.origin))
                    .map(|a| Elem::Member(*id, a.origin))
            })
            .collect();
        for e in dead {
            self.remove(key, e, ChangeSource::Local);
        }
    }

    /// Keys holding set elements.
    pub(super) fn set_keys(&self) -> impl Iterator<Item = &Bytes> + '_ {
        self.sets.keys()
    }
}
