//! Node ids, versions, elements and entries: what one key holds.

use crate::hlc::Hlc;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A node's stable identity as the origin of writes: 63 random bits, chosen when a data
/// directory is created and stored in it.
///
/// ```
/// use dice_core::NodeId;
/// let id = NodeId::new(42).unwrap();
/// assert_eq!(id.to_string(), "000000000000002a");
/// assert_eq!("000000000000002a".parse::<NodeId>().unwrap(), id);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(u64);

impl NodeId {
    /// A node id from its integer form; `None` if the top bit is set (ids must fit an `i64`).
    pub fn new(raw: u64) -> Option<Self> {
        (raw <= i64::MAX as u64).then_some(NodeId(raw))
    }

    /// A fresh random id.
    pub fn random() -> Self {
        NodeId(rand::random::<u64>() >> 1)
    }

    /// The integer form.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({:016x})", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A string that is not a node id (16 hex digits, top bit clear).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a node id: {0:?} (expected up to 16 hex digits, below 8000000000000000)")]
pub struct ParseNodeIdError(String);

impl std::str::FromStr for NodeId {
    type Err = ParseNodeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16)
            .ok()
            .and_then(NodeId::new)
            .ok_or_else(|| ParseNodeIdError(s.to_owned()))
    }
}

/// The version of a write: its HLC timestamp, ties broken by the writing node's id.
///
/// Versions are totally ordered and unique (a node never issues one timestamp twice), so the
/// greatest version of a key is the same on every replica whatever the order of arrival.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug, Serialize, Deserialize,
)]
pub struct Version {
    /// When the write happened.
    pub hlc: Hlc,
    /// Which node wrote it.
    pub origin: NodeId,
}

/// Which element of a key an entry holds. A string key is one element, [`Elem::Key`]; a
/// counter adds elements written each by one node, merged by the same rule as everything else
/// (the greater version wins). Each element has its own version and dot, and replicates alone:
/// an increment sends one element, not the key.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub enum Elem {
    /// The key itself: its string value (or a tombstone) and its expiry.
    #[default]
    Key,
    /// A counter contribution: the increments of this origin (only it writes this element),
    /// see [`crate::counter::Contribution`].
    Count(NodeId),
    /// A counter reset (`SET`, `DEL` or another rewrite of a counter key), named by the dot
    /// of the write that made it: what that write observed of each contribution, see
    /// [`crate::counter::ResetRecord`]. Written once; collected once another reset that
    /// observed at least as much is stable, or with its dead counter.
    Reset(NodeId, u64),
    /// A hash field, named by the id of its name ([`FieldId`]); its value holds the name and
    /// the field's value ([`encode_field`]), a tombstone a deleted field. Any node writes it.
    /// Between two values the greater version wins, field by field; a tombstone (`HDEL`,
    /// `DEL` of the hash, eviction) removes only the write it observed, whose timestamp it
    /// carries in place of an expiry, so an update made concurrently on another node wins
    /// over it (see [`field_wins`]).
    Field(FieldId),
    /// A set member as one origin added it, named by the id of the member ([`FieldId`]) and
    /// that origin: only it writes this element, each `SADD` of the member giving it a new
    /// dot. Its value is the member itself; it has the set's expiry. The member is present
    /// while some origin's add is observed by no [`Elem::SetRemove`] (see [`crate::set`]).
    Member(FieldId, NodeId),
    /// A set removal (`SREM`, `SPOP`, `DEL` of a set, ...), named by the dot of the write that
    /// made it: the adds it observed ([`crate::set::RemoveRecord`]). Written once; collected
    /// once no add it observed is held any more.
    SetRemove(NodeId, u64),
    /// A hash field's counter contribution (`HINCRBY`, `HINCRBYFLOAT`): the increments of this
    /// origin to the field whose id it names (only that origin writes it). Its value is the
    /// field's name and a [`crate::counter::Contribution`] ([`encode_field`]); no expiry.
    FieldCount(FieldId, NodeId),
    /// What this node observed of a hash field's counter contributions when it last reset the
    /// field (`HSET`, `HDEL`, `DEL` of the hash...): a [`crate::counter::ResetRecord`], each
    /// newer one including everything the node held, so it replaces the older one.
    FieldReset(FieldId, NodeId),
}

impl Elem {
    /// The node that alone may write this element, if one does.
    pub fn owner(&self) -> Option<NodeId> {
        match self {
            Elem::Key | Elem::Field(_) => None,
            Elem::Count(o) | Elem::Reset(o, _) => Some(*o),
            Elem::Member(_, o) | Elem::SetRemove(o, _) => Some(*o),
            Elem::FieldCount(_, o) | Elem::FieldReset(_, o) => Some(*o),
        }
    }

    /// Whether this is a hash field's counter element ([`Elem::FieldCount`] or
    /// [`Elem::FieldReset`]).
    pub fn is_field_counter(&self) -> bool {
        matches!(self, Elem::FieldCount(..) | Elem::FieldReset(..))
    }

    /// The hash field this element belongs to, if it is one of a hash's.
    pub fn field_id(&self) -> Option<FieldId> {
        match self {
            Elem::Field(id) | Elem::FieldCount(id, _) | Elem::FieldReset(id, _) => Some(*id),
            _ => None,
        }
    }

    /// Whether this is a set's element ([`Elem::Member`] or [`Elem::SetRemove`]).
    pub fn is_set(&self) -> bool {
        matches!(self, Elem::Member(..) | Elem::SetRemove(..))
    }

    /// Whether this is a counter's element ([`Elem::Count`] or [`Elem::Reset`]).
    pub fn is_counter(&self) -> bool {
        matches!(self, Elem::Count(_) | Elem::Reset(..))
    }
}

/// The id of a hash field: the first 16 bytes of the SHA-256 of its name. Fixed-size, so
/// that [`Elem`] stays `Copy` and a field is found by its name in one hash lookup; a
/// cryptographic hash, so that no client can make two names share an id (and a field that
/// would is refused, see [`crate::Error::FieldCollision`]).
///
/// ```
/// use dice_core::entry::FieldId;
/// assert_eq!(FieldId::of(b"name"), FieldId::of(b"name"));
/// assert_ne!(FieldId::of(b"name"), FieldId::of(b"other"));
/// ```
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct FieldId(pub [u8; 16]);

impl FieldId {
    /// The id of the field named `name`.
    pub fn of(name: &[u8]) -> FieldId {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(name);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        FieldId(id)
    }

    /// The id's first 8 bytes as a number: the order in which `HSCAN` and `SSCAN` walk a
    /// hash's fields or a set's members, and their cursors. Fixed for a name.
    pub fn scan_order(&self) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(w)
    }
}

/// A hash field's stored value: the name's length (4 bytes, little-endian), the name, then
/// the field's value.
pub fn encode_field(name: &[u8], value: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(4 + name.len() + value.len());
    b.extend_from_slice(&(name.len() as u32).to_le_bytes());
    b.extend_from_slice(name);
    b.extend_from_slice(value);
    Bytes::from(b)
}

/// A stored field value as `(name, value)`; `None` if it does not decode.
pub fn decode_field(stored: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = stored.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Whether a write of a hash field ([`Elem::Field`]) wins over the one held, given as
/// `(version, is_tombstone, expires_at_ms)` each. Each write has a rank and the greater wins,
/// so the merge is a max-register: commutative, associative and idempotent.
///
/// * A value ranks by its version, as any LWW register.
/// * A tombstone ranks just above the value it observed: it carries that value's HLC timestamp
///   in its `expires_at_ms` (a tombstone never expires), and beats every value written at or
///   before that timestamp, but no value written after it, however old the tombstone's own
///   version. So an `HDEL` removes what it saw (and anything that value had replaced), and an
///   `HSET` made concurrently on another node after that value survives it: Redis
///   Active-Active's "update wins". A tombstone carrying nothing (written before protocol 6)
///   observed its own timestamp: the plain LWW rule.
/// * Two tombstones that observed the same timestamp: the greater version.
///
/// ```
/// use dice_core::entry::{NodeId, Version, field_wins};
/// use dice_core::Hlc;
/// let v = |t: u64, o: u64| Version { hlc: Hlc::from_u64(t), origin: NodeId::new(o).unwrap() };
/// // HDEL on node 1 at 30 observed the value written at 10; node 2 wrote at 20.
/// let hdel = (v(30, 1), true, Some(10));
/// let hset = (v(20, 2), false, None);
/// assert!(field_wins(hset, hdel));
/// assert!(!field_wins(hdel, hset));
/// // The value it observed (and an older one) it removes.
/// assert!(field_wins(hdel, (v(10, 2), false, None)));
/// assert!(field_wins(hdel, (v(5, 2), false, None)));
/// ```
pub fn field_wins(new: (Version, bool, Option<u64>), held: (Version, bool, Option<u64>)) -> bool {
    field_rank(new) > field_rank(held)
}

/// The rank of a hash field's write (see [`field_wins`]): (timestamp it stands at, 1 for a
/// tombstone, its version).
fn field_rank((version, tombstone, expires): (Version, bool, Option<u64>)) -> (u64, u8, Version) {
    if tombstone {
        let observed = expires.unwrap_or(version.hlc.as_u64());
        (observed, 1, version)
    } else {
        (version.hlc.as_u64(), 0, version)
    }
}

/// An entry: a key and the write that currently holds it. This is what replicas exchange and
/// what SQLite stores.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// The key.
    #[serde(with = "serde_bytes_compat")]
    pub key: Bytes,
    /// Which element of the key.
    pub elem: Elem,
    /// The value; `None` for a tombstone.
    #[serde(with = "serde_opt_bytes_compat")]
    pub value: Option<Bytes>,
    /// The write's version.
    pub version: Version,
    /// The write's sequence number at its origin.
    pub seq: u64,
    /// Absolute expiry in milliseconds since the Unix epoch.
    pub expires_at_ms: Option<u64>,
}

impl Entry {
    /// Whether this entry reads as absent at `now_ms`: a tombstone, or expired.
    pub fn is_dead(&self, now_ms: u64) -> bool {
        is_dead(self.value.is_none(), self.expires_at_ms, now_ms)
    }

    /// Approximate size on the wire and in a page budget.
    pub fn wire_size(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Bytes::len) + 50
    }
}

pub(crate) fn is_dead(tombstone: bool, expires_at_ms: Option<u64>, now_ms: u64) -> bool {
    tombstone || expires_at_ms.is_some_and(|t| t <= now_ms)
}

/// Size limits on what a client or a peer may store.
///
/// Defaults: keys up to 4 KiB, values up to 1 MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest key, in bytes (keys must also be non-empty).
    pub max_key_len: usize,
    /// Largest value, in bytes.
    pub max_value_len: usize,
}

crate::__option_setters!(Limits {
    with_max_key_len => max_key_len: usize,
    with_max_value_len => max_value_len: usize,
});

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_len: 4 * 1024,
            max_value_len: 1024 * 1024,
        }
    }
}

impl Limits {
    /// Checks a key and value against the limits.
    pub fn check(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), crate::Error> {
        if key.is_empty() {
            return Err(crate::Error::EmptyKey);
        }
        if key.len() > self.max_key_len {
            return Err(crate::Error::KeyTooLarge {
                len: key.len(),
                max: self.max_key_len,
            });
        }
        if let Some(v) = value
            && v.len() > self.max_value_len
        {
            return Err(crate::Error::ValueTooLarge {
                len: v.len(),
                max: self.max_value_len,
            });
        }
        Ok(())
    }
}

mod serde_bytes_compat {
    use bytes::Bytes;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::serialize(b.as_ref(), s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let v: serde_bytes::ByteBuf = serde_bytes::deserialize(d)?;
        Ok(Bytes::from(v.into_vec()))
    }
}

mod serde_opt_bytes_compat {
    use bytes::Bytes;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::serialize(&b.as_ref().map(|b| b.as_ref()), s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
        let v: Option<serde_bytes::ByteBuf> = serde_bytes::deserialize(d)?;
        Ok(v.map(|v| Bytes::from(v.into_vec())))
    }
}
