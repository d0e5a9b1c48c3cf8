//! Hash fields as counters (`HINCRBY`, `HINCRBYFLOAT`): the index of a field's counter
//! elements, the value they read as, the resets that `HSET`, `HDEL` and `DEL` write, digest and
//! garbage collection.
//!
//! A counter field is the counter of [`crate::counter`] under one field: each origin's
//! increments are its own element [`Elem::FieldCount`] (the field's name and a
//! [`Contribution`]), and each node's resets of the field one element [`Elem::FieldReset`]
//! (a [`ResetRecord`] of what it observed, including what earlier resets it held observed).
//! The field reads as its value element ([`Elem::Field`], read as a number, or 0) plus what
//! the contributions count for; increments no reset observed survive an `HSET` or `HDEL` of
//! the field, and a `DEL` of the hash, made concurrently elsewhere.

use super::{ChangeSource, Replica, Slot, as_number};
use crate::counter::{Contribution, CounterView, ResetRecord, render};
use crate::entry::{Elem, FieldId, Version, decode_field, is_dead};
use crate::record::Record;
use crate::version_vector::VersionVector;
use crate::{Error, Result};
use bytes::Bytes;

/// The counter elements of one field of a hash.
#[derive(Debug, Default)]
pub(super) struct FieldCounter {
    /// The elements held ([`Elem::FieldCount`] and [`Elem::FieldReset`]).
    elems: Vec<Elem>,
    /// While some contribution counts: what the field reads as (its value and the sum).
    rendered: Option<Box<[u8]>>,
    /// While some contribution counts: the greatest version of its elements.
    version: Option<Version>,
    /// What the contributions that count add to the digest.
    digest: u64,
}

impl Replica {
    /// Notes a counter element of field `id` of `key` now in the map (after it joined).
    pub(super) fn add_field_counter_elem(&mut self, key: &[u8], elem: Elem, version: Version) {
        let Some(id) = elem.field_id() else {
            return;
        };
        if !self.hashes.contains_key(key) {
            self.hashes
                .insert(Bytes::copy_from_slice(key), super::HashState::default());
        }
        let Some(h) = self.hashes.get_mut(key) else {
            return;
        };
        h.last = h.last.max(version);
        let fc = h.counters.entry(id).or_insert_with(|| {
            self.hash_counter_fields += 1;
            FieldCounter::default()
        });
        if !fc.elems.contains(&elem) {
            fc.elems.push(elem);
        }
    }

    /// Notes a counter element of `key` gone from the map.
    pub(super) fn drop_field_counter_elem(&mut self, key: &[u8], elem: Elem) {
        let Some(id) = elem.field_id() else {
            return;
        };
        if let Some(fc) = self
            .hashes
            .get_mut(key)
            .and_then(|h| h.counters.get_mut(&id))
        {
            fc.elems.retain(|e| *e != elem);
        }
    }

    /// Whether field `id` of `key` has counter elements.
    pub(super) fn has_field_counter(&self, key: &[u8], id: FieldId) -> bool {
        self.hashes
            .get(key)
            .is_some_and(|h| h.counters.contains_key(&id))
    }

    /// The counter elements of field `id` of `key`, gathered.
    pub(crate) fn field_counter_view(&self, key: &[u8], id: FieldId) -> CounterView {
        let mut view = CounterView::default();
        let Some(fc) = self.hashes.get(key).and_then(|h| h.counters.get(&id)) else {
            return view;
        };
        for e in &fc.elems {
            let Some(r) = self.slot(key, *e) else {
                continue;
            };
            let Some(v) = r.value() else {
                continue;
            };
            match e {
                Elem::FieldCount(_, o) => {
                    if let Some(c) = decode_field(v).and_then(|(_, c)| Contribution::decode(c).ok())
                    {
                        view.contributions.push((*o, r.seq(), c));
                    }
                }
                Elem::FieldReset(..) => {
                    if let Ok(rr) = ResetRecord::decode(v) {
                        view.add_reset(&rr);
                    }
                }
                _ => {}
            }
        }
        view
    }

    /// Recomputes what field `id` of `key` reads as from its counter elements, and what they
    /// add to the digest, after one of them (or the field's value) changed.
    pub(super) fn refresh_field_counter(&mut self, key: &[u8], id: FieldId) {
        let Some(fc) = self.hashes.get(key).and_then(|h| h.counters.get(&id)) else {
            return;
        };
        let (old_digest, old_version) = (fc.digest, fc.version);
        let (digest, rendered, version) = if fc.elems.is_empty() {
            (0, None, None)
        } else {
            let view = self.field_counter_view(key, id);
            match view.sum() {
                Some(sum) => {
                    let base = self
                        .slot(key, Elem::Field(id))
                        .and_then(Record::value)
                        .and_then(decode_field)
                        .and_then(|(_, v)| as_number(v));
                    let version = fc
                        .elems
                        .iter()
                        .filter_map(|e| self.slot(key, *e).map(Record::version))
                        .max();
                    (
                        self.field_counter_digest(key, id, &view),
                        Some(render(base, sum).into_boxed_slice()),
                        version,
                    )
                }
                None => (0, None, None),
            }
        };
        self.valued_hash = self
            .valued_hash
            .wrapping_sub(old_digest)
            .wrapping_add(digest);
        let b = crate::antientropy::bucket_of_key(key);
        self.buckets[b] = self.buckets[b]
            .wrapping_sub(old_digest)
            .wrapping_add(digest);
        let Some(h) = self.hashes.get_mut(key) else {
            return;
        };
        if let Some(v) = old_version {
            h.counting.remove(&(v, id));
        }
        if let Some(v) = version {
            h.counting.insert((v, id));
        }
        let empty = match h.counters.get_mut(&id) {
            Some(fc) if fc.elems.is_empty() => true,
            Some(fc) => {
                fc.digest = digest;
                fc.rendered = rendered;
                fc.version = version;
                false
            }
            None => false,
        };
        if empty {
            h.counters.remove(&id);
            self.hash_counter_fields -= 1;
        }
        if h.is_empty() {
            self.hashes.remove(key);
        }
    }

    /// What the counter of a field adds to the digest: per contribution that counts, a hash
    /// of its entry and of the observation it counts from (as for a counter key).
    fn field_counter_digest(&self, key: &[u8], id: FieldId, view: &CounterView) -> u64 {
        self.counting_digest(key, view, |origin| Elem::FieldCount(id, origin))
    }

    /// What field `id` of `key` reads as while its counter counts: its name and value, and
    /// the greatest version of its elements. `None` when no contribution counts.
    pub(super) fn counter_field(&self, key: &[u8], id: FieldId) -> Option<(&[u8], &[u8], Version)> {
        let fc = self.hashes.get(key)?.counters.get(&id)?;
        let value = fc.rendered.as_deref()?;
        let name = fc.elems.iter().find_map(|e| match e {
            Elem::FieldCount(..) => self
                .slot(key, *e)
                .and_then(Record::value)
                .and_then(decode_field)
                .map(|(n, _)| n),
            _ => None,
        })?;
        Some((name, value, fc.version?))
    }

    /// What field `id` of `key` reads as at `now_ms` (for subscribers), whatever the key's
    /// type.
    pub(crate) fn field_read(&self, key: &[u8], id: FieldId, now_ms: u64) -> Option<Bytes> {
        let name = self.field_name_held(key, id)?;
        self.field_value(key, name, now_ms)
            .map(Bytes::copy_from_slice)
    }

    /// Writes this node's reset of field `id` of `key`'s counter, if some contribution of it
    /// counts: it observes everything held of it.
    pub(super) fn reset_field_counter(
        &mut self,
        key: &Bytes,
        id: FieldId,
        now_ms: u64,
    ) -> Result<()> {
        if !self.has_field_counter(key, id) {
            return Ok(());
        }
        let view = self.field_counter_view(key, id);
        if view.sum().is_none() {
            return Ok(());
        }
        let reset = view.reset_all().encode();
        if reset.len() > self.limits.max_value_len {
            return Err(Error::ValueTooLarge {
                len: reset.len(),
                max: self.limits.max_value_len,
            });
        }
        self.write_elem(
            key.clone(),
            Elem::FieldReset(id, self.id),
            Some(Bytes::from(reset)),
            None,
            now_ms,
        )?;
        Ok(())
    }

    /// `HINCRBY`/`HINCRBYFLOAT` as a counter: writes this node's contribution to field `name`
    /// of `key` (one element), `delta` more. The caller checked the value and the type.
    pub(super) fn incr_field_counter(
        &mut self,
        key: &Bytes,
        name: &[u8],
        delta: crate::counter::Amount,
        now_ms: u64,
    ) -> Result<()> {
        let id = FieldId::of(name);
        // An expired value hides the field's counter: the increment starts from nothing, as
        // on a new field (reset what it held, remove the expired value).
        let base_expired = self
            .slot(key, Elem::Field(id))
            .is_some_and(|r| r.value().is_some() && is_dead(false, r.expires_at_ms(), now_ms));
        if base_expired {
            self.reset_field_counter(key, id, now_ms)?;
            self.remove_field_observed(key, id, now_ms)?;
        }
        let view = self.field_counter_view(key, id);
        let seq = self.vv.get(self.id) + 1;
        let contribution = match view.of(self.id) {
            Some(c) if !view.starts_new_run(self.id) => Contribution {
                run: c.run,
                total: crate::counter::Amount {
                    int: c.total.int.wrapping_add(delta.int),
                    float: c.total.float + delta.float,
                },
            },
            _ => Contribution {
                run: seq,
                total: delta,
            },
        };
        let value = crate::entry::encode_field(name, &contribution.encode());
        self.limits.check(key, Some(&value))?;
        self.write_elem(
            key.clone(),
            Elem::FieldCount(id, self.id),
            Some(value),
            None,
            now_ms,
        )?;
        Ok(())
    }

    /// Checks a peer's counter element of a hash field: written by its owner, no expiry, a
    /// contribution naming its field, a reset that decodes.
    pub(super) fn validate_field_counter(
        e: &crate::entry::Entry,
    ) -> std::result::Result<(), &'static str> {
        if e.elem.owner() != Some(e.version.origin) {
            return Err("a hash field counter element written by another node than its owner");
        }
        if e.expires_at_ms.is_some() {
            return Err("a hash field counter element with an expiry");
        }
        let Some(v) = &e.value else {
            return Err("a hash field counter element without a value");
        };
        let valid = match e.elem {
            Elem::FieldCount(id, _) => decode_field(v).is_some_and(|(name, c)| {
                FieldId::of(name) == id && Contribution::decode(c).is_ok()
            }),
            Elem::FieldReset(..) => ResetRecord::decode(v).is_ok(),
            _ => false,
        };
        if valid {
            Ok(())
        } else {
            Err("a hash field counter element that does not decode or does not name its field")
        }
    }

    /// Whether anti-entropy lists this counter element of a field: only while the field's
    /// counter counts (a dead one is garbage some nodes may have collected).
    pub(crate) fn field_counter_listed(&self, r: &Record) -> bool {
        r.elem()
            .field_id()
            .and_then(|id| self.hashes.get(r.key())?.counters.get(&id))
            .is_some_and(|fc| fc.rendered.is_some())
    }

    /// What `key`'s field counters add to the digest, computed from the records (for tests of
    /// the kept digest).
    pub(super) fn field_counters_digest_by_scan(&self, key: &[u8]) -> u64 {
        let Some(h) = self.hashes.get(key) else {
            return 0;
        };
        h.counters
            .keys()
            .map(|id| {
                let view = self.field_counter_view(key, *id);
                if view.sum().is_some() {
                    self.field_counter_digest(key, *id, &view)
                } else {
                    0
                }
            })
            .fold(0u64, u64::wrapping_add)
    }

    /// Keys holding field counters.
    pub(super) fn keys_with_field_counters(&self) -> Vec<Bytes> {
        self.hashes
            .iter()
            .filter(|(_, h)| !h.counters.is_empty())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Drops every counter element of `key`'s fields outright (eviction on a node that shares
    /// nothing).
    pub(super) fn drop_field_counters(&mut self, key: &Bytes) {
        let elems: Vec<Elem> = self
            .hashes
            .get(key)
            .map(|h| {
                h.counters
                    .values()
                    .flat_map(|fc| fc.elems.clone())
                    .collect()
            })
            .unwrap_or_default();
        for e in elems {
            self.remove(key, e, ChangeSource::Local);
        }
    }

    /// Collects the counters of fields that read as nothing of their own (no contribution
    /// counts, or the field's value expired), once every element of theirs is stable and
    /// older than the grace: all of them at once, with the expired value. A late copy of any
    /// is then stale, and the next increment of any node starts a new run.
    pub(super) fn gc_field_counters(&mut self, horizon: u64, shareable: u64) -> usize {
        if self.hash_counter_fields == 0 {
            return 0;
        }
        let live: Vec<&VersionVector> = self
            .members
            .iter()
            .filter(|(_, m)| !m.left_out)
            .map(|(_, m)| &m.usable)
            .collect();
        let vv = &self.vv;
        let me = self.id;
        let ripe = |r: &Record| {
            let (o, s) = (r.origin(), r.seq());
            r.version().hlc.physical_ms() <= horizon
                && live.iter().all(|a| a.get(o) >= s)
                && s <= vv.get(o)
                && (o != me || s <= shareable)
        };
        let mut doomed: Vec<(Bytes, Vec<Slot>)> = Vec::new();
        for (key, h) in &self.hashes {
            for (id, fc) in &h.counters {
                let base = self.slot(key, Elem::Field(*id));
                let expired_base = base.filter(|r| {
                    r.value().is_some() && r.expires_at_ms().is_some_and(|at| at <= horizon)
                });
                if fc.rendered.is_some() && expired_base.is_none() {
                    continue;
                }
                let mut slots: Vec<Slot> = Vec::new();
                let mut ok = true;
                for e in &fc.elems {
                    let Some(r) = self.slot(key, *e) else {
                        continue;
                    };
                    if !ripe(r) {
                        ok = false;
                        break;
                    }
                    slots.push((*e, r.origin(), r.seq()));
                }
                if let Some(r) = expired_base {
                    if !ripe(r) {
                        ok = false;
                    }
                    slots.push((Elem::Field(*id), r.origin(), r.seq()));
                }
                if ok && !slots.is_empty() {
                    doomed.push((key.clone(), slots));
                }
            }
        }
        drop(live);
        self.drop_collected(doomed)
    }
}
