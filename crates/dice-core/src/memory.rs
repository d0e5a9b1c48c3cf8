//! Memory accounting: what `used_memory` counts, and how.
//!
//! Every part is kept as a count or a byte total that changes with the structure it describes,
//! so reading the total costs a few additions (it is read before every write while a limit is
//! set). The per-item figures are measured, not guessed: see the memory benchmark
//! (`crates/dice-core/benches/memory.rs`) and BENCHMARKS.md. What is left out (the SQLite
//! page cache, the network's buffers, the allocator's own fragmentation) is part of the
//! process's base size, which `INFO memory` shows as RSS next to it.

/// Allocator rounding and header per packed record (jemalloc size classes round a record up
/// by 12 % on average; 16 bytes is the figure for the 60 to 200-byte records of small keys).
pub const RECORD_OVERHEAD: usize = 16;
/// A slot of the map's hash table: a boxed slice's fat pointer and a control byte.
pub const MAP_SLOT: usize = 17;
/// An entry of the dot index (`u64 → u64` in a B-tree, nodes two-thirds full on average).
pub const DOT_INDEX_ENTRY: usize = 32;
/// An entry of the TTL or tombstone index (`(u64, NodeId, u64)` in a B-tree set).
pub const TIME_INDEX_ENTRY: usize = 40;
/// A key holding elements besides its string (a counter): its map entry, the copy of its
/// key's handle, the set of its elements and its rendered value.
pub const TYPED_KEY: usize = 160;
/// A member in a set's index besides its records: its entry in the set's map of members,
/// its add as held and as counted, and its slot in the set's order by version (measured
/// with `bench/types.sh`: RSS per member of 1,000 sets of 1,000 members, less what the
/// records cost).
pub const SET_MEMBER: usize = 300;
/// A pending change waiting for its group commit: the dirty set's slot and the entry's two
/// handles, besides the key and value bytes.
pub const PENDING_CHANGE: usize = 120;

/// An undo record of a change not durable yet (its slot in the undo table: key handle,
/// element, record handle, control byte, at a load of 7/8), besides the key and record bytes.
pub const UNDO_ENTRY: usize = 80;

/// What a replica holds, counted for [`Usage`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaMemory {
    /// Packed records (entries and tombstones).
    pub records: usize,
    /// Their bytes (header, key, element, value).
    pub record_bytes: usize,
    /// Of the records, the tombstones (of keys, fields and set members).
    pub dead_records: usize,
    /// Their bytes.
    pub dead_record_bytes: usize,
    /// Slots of the map's hash table (its capacity).
    pub map_slots: usize,
    /// Entries of the TTL index.
    pub expiring: usize,
    /// Entries of the tombstone index.
    pub tombstones: usize,
    /// Keys holding counter (or other typed) elements.
    pub typed_keys: usize,
    /// Members in the sets' indexes ([`SET_MEMBER`] each).
    pub set_members: usize,
    /// Bytes of the eviction access table.
    pub access_table: usize,
}

impl ReplicaMemory {
    /// Accounted bytes.
    pub fn bytes(&self) -> usize {
        self.record_bytes
            + self.records * (RECORD_OVERHEAD + DOT_INDEX_ENTRY)
            + self.map_slots * MAP_SLOT
            + (self.expiring + self.tombstones) * TIME_INDEX_ENTRY
            + self.typed_keys * TYPED_KEY
            + self.set_members * SET_MEMBER
            + self.access_table
    }

    /// Of [`ReplicaMemory::bytes`], what tombstones hold: their records, their entries in the
    /// dot index and the tombstone index, their share of the map's slots. Eviction cannot
    /// free it (see [`crate::evict::LIVE_FLOOR_DIVISOR`]); collecting stable tombstones does.
    pub fn dead_bytes(&self) -> usize {
        let slots = (self.map_slots as u128 * self.dead_records as u128
            / self.records.max(1) as u128) as usize;
        self.dead_record_bytes
            + self.dead_records * (RECORD_OVERHEAD + DOT_INDEX_ENTRY)
            + self.tombstones * TIME_INDEX_ENTRY
            + slots * MAP_SLOT
    }
}

/// `used_memory` and its parts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// The map, its indexes, tombstones and the access table ([`ReplicaMemory::bytes`]).
    pub dataset: usize,
    /// Changes waiting for a group commit, the group being committed, and what each changed
    /// key held durably (kept to undo a failed commit).
    pub pending: usize,
    /// What the embedding program reported (client buffers of the RESP server).
    pub clients: usize,
    /// What the embedding program's allocator holds beyond the parts above and beyond what it
    /// held when the node started (see [`crate::Cache::untracked_memory`]): sync messages
    /// being built and applied, the store's statements, a snapshot's chunk, libraries'
    /// buffers. 0 unless the program reports it.
    pub other: usize,
}

impl Usage {
    /// The total: `used_memory`.
    pub fn total(&self) -> usize {
        self.dataset + self.pending + self.clients + self.other
    }

    /// The parts dice counts itself, without [`Usage::other`].
    pub fn counted(&self) -> usize {
        self.dataset + self.pending + self.clients
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_counts() {
        let m = ReplicaMemory {
            records: 2,
            record_bytes: 100,
            dead_records: 1,
            dead_record_bytes: 30,
            map_slots: 4,
            expiring: 1,
            tombstones: 1,
            typed_keys: 1,
            set_members: 3,
            access_table: 8,
        };
        assert_eq!(
            m.bytes(),
            100 + 2 * (RECORD_OVERHEAD + DOT_INDEX_ENTRY)
                + 4 * MAP_SLOT
                + 2 * TIME_INDEX_ENTRY
                + TYPED_KEY
                + 3 * SET_MEMBER
                + 8
        );
        assert_eq!(
            m.dead_bytes(),
            30 + RECORD_OVERHEAD + DOT_INDEX_ENTRY + TIME_INDEX_ENTRY + 2 * MAP_SLOT
        );
        let u = Usage {
            dataset: 1,
            pending: 2,
            clients: 3,
            other: 4,
        };
        assert_eq!(u.total(), 10);
        assert_eq!(u.counted(), 6);
    }
}
