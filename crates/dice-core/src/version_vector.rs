//! Version vectors: per origin, the highest sequence number a replica holds contiguously.

use crate::entry::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `vv[origin] = s` means "I hold every write of `origin` with seq ≤ s, or something newer for
/// the same key". Also used for GC floors ("I dropped dead entries of `origin` up to seq s").
///
/// ```
/// use dice_core::{NodeId, VersionVector};
/// let a = NodeId::new(1).unwrap();
/// let b = NodeId::new(2).unwrap();
/// let mut x = VersionVector::default();
/// x.raise(a, 5);
/// let mut y = VersionVector::default();
/// y.raise(b, 3);
/// y.raise(a, 2);
/// x.merge(&y);
/// assert_eq!((x.get(a), x.get(b)), (5, 3));
/// assert!(x.dominates(&y) && !y.dominates(&x));
/// ```
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<NodeId, u64>);

impl VersionVector {
    /// The sequence number held for `origin` (0 when none).
    pub fn get(&self, origin: NodeId) -> u64 {
        self.0.get(&origin).copied().unwrap_or(0)
    }

    /// Raises `origin` to at least `seq`. Returns whether it changed.
    pub fn raise(&mut self, origin: NodeId, seq: u64) -> bool {
        let slot = self.0.entry(origin).or_insert(0);
        if seq > *slot {
            *slot = seq;
            true
        } else {
            false
        }
    }

    /// Sets `origin` to exactly `seq`.
    pub fn set(&mut self, origin: NodeId, seq: u64) {
        self.0.insert(origin, seq);
    }

    /// Makes sure `origin` is listed (at 0 if it was not).
    pub fn touch(&mut self, origin: NodeId) {
        self.0.entry(origin).or_insert(0);
    }

    /// Pointwise maximum.
    pub fn merge(&mut self, other: &VersionVector) {
        for (&o, &s) in &other.0 {
            self.raise(o, s);
        }
    }

    /// Whether every component of `other` is ≤ the same component here.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(&o, &s)| self.get(o) >= s)
    }

    /// The origins, in id order, with their sequence numbers.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.0.iter().map(|(&o, &s)| (o, s))
    }

    /// Number of origins listed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no origin is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(NodeId, u64)> for VersionVector {
    fn from_iter<T: IntoIterator<Item = (NodeId, u64)>>(iter: T) -> Self {
        let mut vv = VersionVector::default();
        for (o, s) in iter {
            vv.raise(o, s);
        }
        vv
    }
}
