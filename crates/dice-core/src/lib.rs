//! dice-core: the dice cache as an embeddable library.
//!
//! A replicated, eventually consistent key-value cache: every node holds the whole map as a
//! last-writer-wins map CRDT, persisted in SQLite. This crate is everything but the network.
//!
//! # A tour of the modules
//!
//! * [`hlc`]: the hybrid logical clock ([`Hlc`], [`HlcClock`]) that versions every write.
//! * [`entry`]: node ids, versions `(hlc, origin)`, the elements of a key ([`Elem`]: its
//!   string, counter contributions and resets), entries, and the size [`Limits`].
//! * [`counter`]: conflict-free counters: what their elements hold, how a key's counter reads.
//! * [`version_vector`]: [`VersionVector`], per origin the seq held contiguously.
//! * [`replica`]: [`Replica`], the in-memory map with its indexes, merge, TTL and GC. No I/O.
//! * [`sync`]: the sync protocol as plain code: [`SyncMessage`] and its wire form, the
//!   catch-up [`SyncSession`], live pushes, full resync when behind a GC floor.
//! * [`replication`]: the per-peer replication policy as a sans-IO state machine
//!   ([`Replicator`]): acknowledged seqs, the push in flight, pacing, retry, catch-up
//!   scheduling; the network layer and the simulation tests both drive it.
//! * [`evict`] and [`memory`]: the memory limit (`maxmemory`), its eviction policies, and
//!   what `used_memory` counts.
//! * [`antientropy`]: the safety net under sync: per-bucket digests compared between
//!   replicas with equal version vectors, and the repair of the buckets that differ.
//! * [`skew`]: estimates of peers' clock offsets from the send times sync messages carry.
//! * [`store`]: SQLite through sqlx: the data directory, its lock, migrations, group commits.
//! * [`cache`]: [`Cache`], the persistent cache a program embeds: reads from memory, writes
//!   acknowledged after their group commit, change subscriptions, sync entry points. Its
//!   writer task (`cache/writer.rs`) is the one owner of the store: group commits,
//!   snapshots, refusing writes while the disk fails.
//!
//! # Embedding
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> dice_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let cache = dice_core::Cache::open(dir.path()).await?;
//! let mut changes = cache.subscribe();
//! cache.put("elixir", "awesome sauce").await?;
//! assert_eq!(changes.recv().await.unwrap().key.as_ref(), b"elixir");
//! assert_eq!(cache.scan_prefix(b"eli").len(), 1);
//! # Ok(()) }
//! ```

#[macro_use]
mod setters;

pub mod antientropy;
pub mod cache;
pub mod counter;
pub mod entry;
mod error;
pub mod evict;
pub mod hlc;
pub mod memory;
mod record;
pub mod replica;
pub mod replication;
pub mod set;
pub mod skew;
pub mod store;
pub mod sync;
pub mod version_vector;

pub use antientropy::{AeMessage, AeSession, AeStats, AeStep};
pub use cache::{
    Cache, CacheOptions, CacheStats, CommitObserver, CommitTicket, Event, Transaction,
};
pub use entry::{Elem, Entry, Limits, NodeId, ParseNodeIdError, Version};
pub use error::{Error, Result};
pub use evict::{MemoryLimit, Policy};
pub use hlc::{Clock, Hlc, HlcClock, ManualClock, SystemClock, now_ms};
pub use replica::{
    Change, ChangeSource, GcReport, Increment, KeyType, Member, Replica, ReplicaStats,
};
pub use replication::{
    Failure, Outgoing, PeerReplication, Purpose, ReplicaEndpoint, ReplicationConfig, Replicator,
    ReplyOutcome, SyncEndpoint,
};
pub use store::Durability;
pub use sync::{
    Ack, CatchUpPage, CatchUpRequest, Cursor, Push, PushRange, Refusal, SYNC_PROTOCOL_VERSION,
    SessionStats, SessionStep, SyncLimits, SyncMessage, SyncSession, WireError,
};
pub use version_vector::VersionVector;
