//! Observed-remove sets (add wins): what the elements of a set hold.
//!
//! A set is spread over elements of its key (see [`crate::entry::Elem`]), each written by one
//! node only, so that the plain rule of the map (the greater version wins) merges them:
//!
//! * `Member(id, origin)`: `origin`'s latest add of the member whose [`FieldId`] is `id`; its
//!   value is the member itself. Every `SADD` of the member on `origin` writes it again, with a
//!   new dot `(origin, seq)`.
//! * `SetRemove(node, seq)`, a [`RemoveRecord`]: the adds a removal on `node` observed, as
//!   `(id, origin, seq)`. Written once, named by its own dot.
//!
//! An add counts unless a removal observed its seq or a later one of the same origin and
//! member; a member is present while one of its adds counts (and has not expired). So a
//! removal takes away exactly the adds it saw, and an `SADD` made concurrently with it, on any
//! node, survives it everywhere, whatever the order of arrival.

use crate::entry::{FieldId, NodeId};
use crate::{Error, Result};

/// Encoded size of one observation in a [`RemoveRecord`].
pub const OBSERVED_LEN: usize = 32;

/// One add as a removal observed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObservedAdd {
    /// The member's id.
    pub id: FieldId,
    /// The node that added it.
    pub origin: NodeId,
    /// The seq of that node's add observed.
    pub seq: u64,
}

/// What element `SetRemove(node, seq)` holds: the adds observed, sorted by `(id, origin)`,
/// unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoveRecord(pub Vec<ObservedAdd>);

impl RemoveRecord {
    /// The element's value bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.0.len() * OBSERVED_LEN);
        for o in &self.0 {
            b.extend_from_slice(&o.id.0);
            b.extend_from_slice(&o.origin.as_u64().to_le_bytes());
            b.extend_from_slice(&o.seq.to_le_bytes());
        }
        b
    }

    /// Decodes element value bytes (from a peer or the disk: checked).
    pub fn decode(b: &[u8]) -> Result<Self> {
        Ok(RemoveRecord(observations(b)?.collect()))
    }
}

/// The observations of an encoded [`RemoveRecord`], checked (size, origins, order), without
/// collecting them.
pub fn observations(b: &[u8]) -> Result<impl Iterator<Item = ObservedAdd> + '_> {
    if b.is_empty() || !b.len().is_multiple_of(OBSERVED_LEN) {
        return Err(invalid("set removal of the wrong size"));
    }
    let mut last: Option<(FieldId, NodeId)> = None;
    for c in b.chunks_exact(OBSERVED_LEN) {
        let o = read(c).ok_or_else(|| invalid("set removal names an invalid origin"))?;
        if o.seq == 0 {
            return Err(invalid("set removal observes seq 0"));
        }
        if last.is_some_and(|l| l >= (o.id, o.origin)) {
            return Err(invalid("set removal not sorted"));
        }
        last = Some((o.id, o.origin));
    }
    Ok(b.chunks_exact(OBSERVED_LEN).filter_map(read))
}

fn read(c: &[u8]) -> Option<ObservedAdd> {
    let mut id = [0u8; 16];
    id.copy_from_slice(&c[0..16]);
    let origin = NodeId::new(u64::from_le_bytes(c[16..24].try_into().ok()?))?;
    let seq = u64::from_le_bytes(c[24..32].try_into().ok()?);
    Some(ObservedAdd {
        id: FieldId(id),
        origin,
        seq,
    })
}

fn invalid(reason: &'static str) -> Error {
    Error::InvalidEntry {
        reason,
        key_prefix: Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn removals_round_trip_and_garbage_is_refused() {
        let a = NodeId::new(1).unwrap();
        let b = NodeId::new(2).unwrap();
        let mut r = RemoveRecord(vec![
            ObservedAdd {
                id: FieldId::of(b"x"),
                origin: a,
                seq: 3,
            },
            ObservedAdd {
                id: FieldId::of(b"x"),
                origin: b,
                seq: 9,
            },
            ObservedAdd {
                id: FieldId::of(b"y"),
                origin: a,
                seq: 4,
            },
        ]);
        r.0.sort();
        assert_eq!(RemoveRecord::decode(&r.encode()).unwrap(), r);
        let mut unsorted = r.clone();
        unsorted.0.reverse();
        assert!(RemoveRecord::decode(&unsorted.encode()).is_err());
        assert!(RemoveRecord::decode(&[0; 31]).is_err());
        assert!(RemoveRecord::decode(&[]).is_err());
        let mut bad_origin = r.encode();
        bad_origin[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(RemoveRecord::decode(&bad_origin).is_err());
    }
}
