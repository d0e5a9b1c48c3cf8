//! How the replica holds an entry in memory: one allocation per entry, a fixed header followed
//! by the key, the element's node id (elements other than [`Elem::Key`] only) and the value. Compared with a map of `Bytes` keys to registers, this drops the
//! per-entry register padding, the `Bytes` handles and their shared headers, and a separate
//! allocation for the key and for the value (see BENCHMARKS.md, memory per key).

use crate::entry::{Elem, Entry, FieldId, NodeId, Version};
use crate::hlc::Hlc;
use bytes::Bytes;

// Header layout, little-endian: hlc, origin, seq, expires_at (NO_EXPIRY: none), key length,
// flags.
const HLC: usize = 0;
const ORIGIN: usize = 8;
const SEQ: usize = 16;
const EXPIRES: usize = 24;
const KEY_LEN: usize = 32;
const FLAGS: usize = 36;
const HEADER: usize = 40;

/// Flag: the entry holds a value (it is not a tombstone).
const HAS_VALUE: u32 = 1;
/// Flags: which element (bits 1-3): 0 the key, 1 a counter contribution, 2 a counter reset.
const ELEM_SHIFT: u32 = 1;
const ELEM_MASK: u32 = 7 << ELEM_SHIFT;
const ELEM_COUNT: u32 = 1;
const ELEM_RESET: u32 = 2;
/// Element kind 3: a hash field (its 16-byte id after the key).
const ELEM_FIELD: u32 = 3;
/// Element kind 4: a set member's add (its 16-byte id, then the origin's node id).
const ELEM_MEMBER: u32 = 4;
/// Element kind 5: a set removal (node id and seq, as a reset).
const ELEM_SET_REMOVE: u32 = 5;
/// Element kind 6: a hash field's counter contribution (field id, then the origin).
const ELEM_FIELD_COUNT: u32 = 6;
/// Element kind 7: a hash field's counter reset (field id, then the node).
const ELEM_FIELD_RESET: u32 = 7;
/// Stored expiry meaning "none" (valid expiries fit an `i64`).
const NO_EXPIRY: u64 = u64::MAX;

/// One entry, packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record(Box<[u8]>);

/// Bytes after the key naming the element: a node id, and a seq for a reset.
fn elem_len(kind: u32) -> usize {
    match kind {
        0 => 0,
        ELEM_COUNT => 8,
        ELEM_MEMBER | ELEM_FIELD_COUNT | ELEM_FIELD_RESET => 24,
        _ => 16,
        // ELEM_RESET (node id and seq) and ELEM_FIELD (16-byte id) alike.
    }
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

impl Record {
    /// Packs `e`. Keys are at most a few KiB (the limits), so their length fits a `u32`.
    pub fn new(e: &Entry) -> Record {
        Record::from_parts(
            &e.key,
            e.elem,
            e.value.as_deref(),
            e.version,
            e.seq,
            e.expires_at_ms,
        )
    }

    /// Packs an entry given by its parts.
    pub fn from_parts(
        key: &[u8],
        elem: Elem,
        value: Option<&[u8]>,
        version: Version,
        seq: u64,
        expires_at_ms: Option<u64>,
    ) -> Record {
        let bytes = value.unwrap_or_default();
        let (kind, id, elem_seq, field, member_origin) = match elem {
            Elem::Key => (0, None, None, None, None),
            Elem::Count(o) => (ELEM_COUNT, Some(o), None, None, None),
            Elem::Reset(o, s) => (ELEM_RESET, Some(o), Some(s), None, None),
            Elem::Field(f) => (ELEM_FIELD, None, None, Some(f), None),
            Elem::Member(f, o) => (ELEM_MEMBER, None, None, Some(f), Some(o)),
            Elem::SetRemove(o, s) => (ELEM_SET_REMOVE, Some(o), Some(s), None, None),
            Elem::FieldCount(f, o) => (ELEM_FIELD_COUNT, None, None, Some(f), Some(o)),
            Elem::FieldReset(f, o) => (ELEM_FIELD_RESET, None, None, Some(f), Some(o)),
        };
        let mut b = Vec::with_capacity(HEADER + key.len() + elem_len(kind) + bytes.len());
        b.extend_from_slice(&version.hlc.as_u64().to_le_bytes());
        b.extend_from_slice(&version.origin.as_u64().to_le_bytes());
        b.extend_from_slice(&seq.to_le_bytes());
        b.extend_from_slice(&expires_at_ms.unwrap_or(NO_EXPIRY).to_le_bytes());
        b.extend_from_slice(&(key.len() as u32).to_le_bytes());
        let flags = if value.is_some() { HAS_VALUE } else { 0 } | (kind << ELEM_SHIFT);
        b.extend_from_slice(&flags.to_le_bytes());
        b.extend_from_slice(key);
        if let Some(id) = id {
            b.extend_from_slice(&id.as_u64().to_le_bytes());
        }
        if let Some(s) = elem_seq {
            b.extend_from_slice(&s.to_le_bytes());
        }
        if let Some(f) = field {
            b.extend_from_slice(&f.0);
        }
        if let Some(o) = member_origin {
            b.extend_from_slice(&o.as_u64().to_le_bytes());
        }
        b.extend_from_slice(bytes);
        Record(b.into_boxed_slice())
    }

    pub fn key(&self) -> &[u8] {
        let len = read_u32(&self.0, KEY_LEN) as usize;
        &self.0[HEADER..HEADER + len]
    }

    fn elem_kind(&self) -> u32 {
        (read_u32(&self.0, FLAGS) & ELEM_MASK) >> ELEM_SHIFT
    }

    /// Which element of its key the record holds.
    pub fn elem(&self) -> Elem {
        let kind = self.elem_kind();
        if kind == 0 {
            return Elem::Key;
        }
        let at = HEADER + read_u32(&self.0, KEY_LEN) as usize;
        if kind == ELEM_FIELD {
            let mut f = [0u8; 16];
            f.copy_from_slice(&self.0[at..at + 16]);
            return Elem::Field(FieldId(f));
        }
        if matches!(kind, ELEM_MEMBER | ELEM_FIELD_COUNT | ELEM_FIELD_RESET) {
            let mut f = [0u8; 16];
            f.copy_from_slice(&self.0[at..at + 16]);
            let o = NodeId::new(read_u64(&self.0, at + 16)).unwrap_or_default();
            return match kind {
                ELEM_MEMBER => Elem::Member(FieldId(f), o),
                ELEM_FIELD_COUNT => Elem::FieldCount(FieldId(f), o),
                _ => Elem::FieldReset(FieldId(f), o),
            };
        }
        let id = NodeId::new(read_u64(&self.0, at)).unwrap_or_default();
        match kind {
            ELEM_COUNT => Elem::Count(id),
            ELEM_SET_REMOVE => Elem::SetRemove(id, read_u64(&self.0, at + 8)),
            _ => Elem::Reset(id, read_u64(&self.0, at + 8)),
        }
    }

    /// Whether the record is the key's own element (a string value or tombstone).
    pub fn is_key(&self) -> bool {
        self.elem_kind() == 0
    }

    /// The value; `None` for a tombstone.
    pub fn value(&self) -> Option<&[u8]> {
        if read_u32(&self.0, FLAGS) & HAS_VALUE == 0 {
            return None;
        }
        let at = HEADER + read_u32(&self.0, KEY_LEN) as usize + elem_len(self.elem_kind());
        Some(&self.0[at..])
    }

    pub fn is_tombstone(&self) -> bool {
        read_u32(&self.0, FLAGS) & HAS_VALUE == 0
    }

    pub fn version(&self) -> Version {
        Version {
            hlc: Hlc::from_u64(read_u64(&self.0, HLC)),
            origin: self.origin(),
        }
    }

    pub fn origin(&self) -> NodeId {
        NodeId::new(read_u64(&self.0, ORIGIN)).unwrap_or_default()
    }

    pub fn seq(&self) -> u64 {
        read_u64(&self.0, SEQ)
    }

    pub fn expires_at_ms(&self) -> Option<u64> {
        let t = read_u64(&self.0, EXPIRES);
        (t != NO_EXPIRY).then_some(t)
    }

    /// Bytes allocated for this record (not counting the allocator's own overhead).
    pub fn heap_len(&self) -> usize {
        self.0.len()
    }

    /// The entry, with its key and value copied out.
    pub fn to_entry(&self) -> Entry {
        Entry {
            key: Bytes::copy_from_slice(self.key()),
            elem: self.elem(),
            value: self.value().map(Bytes::copy_from_slice),
            version: self.version(),
            seq: self.seq(),
            expires_at_ms: self.expires_at_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_unpacks_every_field() {
        let origin = NodeId::new(0x7fff_ffff_ffff_fff0).unwrap_or_default();
        let cases = [
            Entry {
                key: Bytes::from_static(b"k"),
                elem: Elem::Count(origin),
                value: Some(Bytes::from_static(b"value")),
                version: Version {
                    hlc: Hlc::from_u64(123_456),
                    origin,
                },
                seq: 42,
                expires_at_ms: Some(i64::MAX as u64),
            },
            Entry {
                key: Bytes::from(vec![7u8; 4096]),
                elem: Elem::Key,
                value: Some(Bytes::new()),
                version: Version {
                    hlc: Hlc::from_u64(1),
                    origin,
                },
                seq: u64::MAX >> 1,
                expires_at_ms: Some(0),
            },
            Entry {
                key: Bytes::from_static(b"h"),
                elem: Elem::Field(FieldId::of(b"f")),
                value: Some(crate::entry::encode_field(b"f", b"v")),
                version: Version {
                    hlc: Hlc::from_u64(5),
                    origin,
                },
                seq: 3,
                expires_at_ms: Some(10),
            },
            Entry {
                key: Bytes::from_static(b"s"),
                elem: Elem::Member(FieldId::of(b"m"), origin),
                value: Some(Bytes::from_static(b"m")),
                version: Version {
                    hlc: Hlc::from_u64(6),
                    origin,
                },
                seq: 4,
                expires_at_ms: Some(11),
            },
            Entry {
                key: Bytes::from_static(b"h"),
                elem: Elem::FieldCount(FieldId::of(b"n"), origin),
                value: Some(crate::entry::encode_field(b"n", &[2u8; 32])),
                version: Version {
                    hlc: Hlc::from_u64(7),
                    origin,
                },
                seq: 5,
                expires_at_ms: None,
            },
            Entry {
                key: Bytes::from_static(b"h"),
                elem: Elem::FieldReset(FieldId::of(b"n"), origin),
                value: Some(Bytes::from(vec![3u8; 40])),
                version: Version {
                    hlc: Hlc::from_u64(8),
                    origin,
                },
                seq: 6,
                expires_at_ms: None,
            },
            Entry {
                key: Bytes::from_static(b"s"),
                elem: Elem::SetRemove(origin, 8),
                value: Some(Bytes::from(vec![1u8; 32])),
                version: Version {
                    hlc: Hlc::from_u64(7),
                    origin,
                },
                seq: 8,
                expires_at_ms: None,
            },
            Entry {
                key: Bytes::from_static(b"tomb"),
                elem: Elem::Reset(origin, 77),
                value: None,
                version: Version {
                    hlc: Hlc::from_u64(9),
                    origin,
                },
                seq: 1,
                expires_at_ms: None,
            },
        ];
        for e in cases {
            let r = Record::new(&e);
            assert_eq!(r.to_entry(), e);
            assert_eq!(r.key(), e.key.as_ref());
            assert_eq!(r.value(), e.value.as_deref());
            assert_eq!(r.is_tombstone(), e.value.is_none());
            assert_eq!(r.elem(), e.elem);
            assert_eq!(
                r.heap_len(),
                HEADER
                    + e.key.len()
                    + match e.elem {
                        Elem::Key => 0,
                        Elem::Count(_) => 8,
                        Elem::Reset(..) | Elem::Field(_) | Elem::SetRemove(..) => 16,
                        Elem::Member(..) | Elem::FieldCount(..) | Elem::FieldReset(..) => 24,
                    }
                    + e.value.map_or(0, |v| v.len())
            );
        }
    }
}
