//! The memory limit: eviction policies, the access table they read, and the choice of the
//! keys to evict.
//!
//! An eviction is a removal of the key **as this node observed it**, replicated like any write
//! (see [`crate::Replica::evict`]): every element kind says how it is removed (a key's string
//! by a tombstone, a counter by a reset that observed every contribution), so converged nodes
//! hold the same keys whoever evicted what, and an evicted key never comes back from an older
//! copy. Every node evicts on its own: the cluster ends with the union of the evictions. See
//! "Eviction and the memory limit" in docs/ARCHITECTURE.md.
//!
//! Which key goes is decided here, from a sample of keys, as Redis does: `allkeys-lru` and
//! `volatile-lru` evict the least recently used of the sample, `allkeys-lfu` and
//! `volatile-lfu` the least frequently used, `allkeys-random` and `volatile-random` any,
//! `volatile-ttl` the key nearest to its expiry (exactly: the replica keeps a TTL index).
//! Recency and frequency live in a fixed table of atomics indexed by a hash of the key
//! ([`Access`]): reads update it under the cache's read lock, nothing per key is allocated,
//! and keys that share a slot share their history (an approximation, as Redis's is).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

/// What happens when used memory passes `maxmemory` (Redis's `maxmemory-policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    /// Writes that add data are refused with Redis's `OOM` error; reads and deletes go on.
    #[default]
    NoEviction,
    /// Evict the least recently used of a sample of all keys.
    AllKeysLru,
    /// Evict the least recently used of a sample of the keys with an expiry.
    VolatileLru,
    /// Evict the least frequently used of a sample of all keys.
    AllKeysLfu,
    /// Evict the least frequently used of a sample of the keys with an expiry.
    VolatileLfu,
    /// Evict a random key.
    AllKeysRandom,
    /// Evict a random key with an expiry.
    VolatileRandom,
    /// Evict the key with an expiry nearest to it.
    VolatileTtl,
}

impl Policy {
    /// Every policy, in Redis's order of documentation.
    pub const ALL: [Policy; 8] = [
        Policy::NoEviction,
        Policy::AllKeysLru,
        Policy::VolatileLru,
        Policy::AllKeysLfu,
        Policy::VolatileLfu,
        Policy::AllKeysRandom,
        Policy::VolatileRandom,
        Policy::VolatileTtl,
    ];

    /// Redis's name of the policy.
    pub fn name(self) -> &'static str {
        match self {
            Policy::NoEviction => "noeviction",
            Policy::AllKeysLru => "allkeys-lru",
            Policy::VolatileLru => "volatile-lru",
            Policy::AllKeysLfu => "allkeys-lfu",
            Policy::VolatileLfu => "volatile-lfu",
            Policy::AllKeysRandom => "allkeys-random",
            Policy::VolatileRandom => "volatile-random",
            Policy::VolatileTtl => "volatile-ttl",
        }
    }

    /// Whether only keys with an expiry may be evicted.
    pub fn volatile_only(self) -> bool {
        matches!(
            self,
            Policy::VolatileLru
                | Policy::VolatileLfu
                | Policy::VolatileRandom
                | Policy::VolatileTtl
        )
    }

    fn ranks(self) -> Rank {
        match self {
            Policy::AllKeysLru | Policy::VolatileLru => Rank::Lru,
            Policy::AllKeysLfu | Policy::VolatileLfu => Rank::Lfu,
            _ => Rank::None,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string that names no policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown maxmemory policy {0:?} (expected noeviction, allkeys-lru, volatile-lru, \
     allkeys-lfu, volatile-lfu, allkeys-random, volatile-random or volatile-ttl)"
)]
pub struct ParsePolicyError(String);

impl FromStr for Policy {
    type Err = ParsePolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParsePolicyError(s.to_owned()))
    }
}

/// Parses a memory size as Redis's configuration does: a number of bytes, or a number
/// followed by `k`, `kb`, `m`, `mb`, `g` or `gb` (case-insensitive; `k` is 1000, `kb` 1024).
///
/// ```
/// use dice_core::evict::parse_memory;
/// assert_eq!(parse_memory("512mb"), Some(512 << 20));
/// assert_eq!(parse_memory("1G"), Some(1_000_000_000));
/// assert_eq!(parse_memory("0"), Some(0));
/// assert_eq!(parse_memory("12x"), None);
/// ```
pub fn parse_memory(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let unit: u64 = match &s[digits..] {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1 << 10,
        "m" => 1_000_000,
        "mb" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// The memory limit of a cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryLimit {
    /// Most bytes of accounted memory (see [`crate::memory`]); 0: no limit.
    pub max_bytes: u64,
    /// What happens past it.
    pub policy: Policy,
    /// Keys sampled per eviction (Redis's `maxmemory-samples`, default 5, at most 64).
    pub samples: usize,
}

crate::__option_setters!(MemoryLimit {
    with_max_bytes => max_bytes: u64,
    with_policy => policy: Policy,
    with_samples => samples: usize,
});

impl Default for MemoryLimit {
    fn default() -> Self {
        MemoryLimit {
            max_bytes: 0,
            policy: Policy::NoEviction,
            samples: DEFAULT_SAMPLES,
        }
    }
}

/// Default of [`MemoryLimit::samples`].
pub const DEFAULT_SAMPLES: usize = 5;
/// Largest [`MemoryLimit::samples`].
pub const MAX_SAMPLES: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rank {
    Lru,
    Lfu,
    None,
}

/// Recency or frequency per slot of a fixed table, indexed by a hash of the key.
///
/// Keys that share a slot share its history: a cold key may look as recent or as frequent
/// as a hot one in its slot (it is then evicted later than it should), never the other way
/// round. LRU: the slot holds the time of the last access in units of 10 ms since the table was made (24 bits,
/// wrapping after 46 hours: ages are computed wrapping). LFU: as Redis, a logarithmic counter
/// (8 bits, incremented with probability `1 / ((c - 5) * 10 + 1)`) and the minute it was
/// last decayed (16 bits); the counter loses one per minute without access.
#[derive(Debug, Default)]
pub struct Access {
    slots: Box<[AtomicU32]>,
    rank: Option<bool>,
    epoch_ms: u64,
}

/// Bytes of `maxmemory` per slot of the access table (4 bytes per 128: 3 %).
const BYTES_PER_SLOT: u64 = 128;

impl Access {
    /// A table for `limit`: none without a limit or for a policy that ranks nothing.
    pub fn for_limit(limit: &MemoryLimit, now_ms: u64) -> Access {
        let rank = limit.policy.ranks();
        if limit.max_bytes == 0 || rank == Rank::None {
            return Access::default();
        }
        let slots = (limit.max_bytes / BYTES_PER_SLOT).clamp(1 << 12, 1 << 22);
        let slots = (slots as usize).next_power_of_two();
        Access {
            slots: (0..slots).map(|_| AtomicU32::new(0)).collect(),
            rank: Some(rank == Rank::Lfu),
            epoch_ms: now_ms,
        }
    }

    /// Bytes the table holds.
    pub fn heap_bytes(&self) -> usize {
        self.slots.len() * 4
    }

    /// Whether this table tracks the same thing as one made for `limit` would.
    pub(crate) fn fits(&self, limit: &MemoryLimit) -> bool {
        let want = match limit.policy.ranks() {
            _ if limit.max_bytes == 0 => None,
            Rank::None => None,
            r => Some(r == Rank::Lfu),
        };
        want == self.rank
            && (want.is_none()
                || self.slots.len()
                    == ((limit.max_bytes / BYTES_PER_SLOT).clamp(1 << 12, 1 << 22) as usize)
                        .next_power_of_two())
    }

    fn slot(&self, hash: u64) -> Option<&AtomicU32> {
        if self.slots.is_empty() {
            return None;
        }
        self.slots.get((hash as usize) & (self.slots.len() - 1))
    }

    /// Notes an access to the key whose hash is `hash`.
    pub(crate) fn touch(&self, hash: u64, now_ms: u64) {
        let Some(slot) = self.slot(hash) else {
            return;
        };
        match self.rank {
            Some(false) => {
                slot.store(self.lru_clock(now_ms), Ordering::Relaxed);
            }
            Some(true) => {
                let cur = slot.load(Ordering::Relaxed);
                let minute = self.minute(now_ms);
                let mut counter = decayed(cur, minute);
                if counter < 255 {
                    let base = f64::from(counter.saturating_sub(LFU_INIT));
                    let p = 1.0 / (base * LFU_LOG_FACTOR + 1.0);
                    if counter < LFU_INIT || rand::random::<f64>() < p {
                        counter += 1;
                    }
                }
                slot.store((minute << 8) | u32::from(counter), Ordering::Relaxed);
            }
            None => {}
        }
    }

    /// Notes that the key whose hash is `hash` was written (here or, arriving, by a peer): as
    /// Redis treats a key it creates, it ranks as just used under LRU and starts at
    /// [`LFU_INIT`] under LFU, not at the bottom. A peer's write not noted so would look
    /// like the coldest key of a follower, which evicted each as it arrived.
    pub(crate) fn touch_written(&self, hash: u64, now_ms: u64) {
        let Some(slot) = self.slot(hash) else {
            return;
        };
        match self.rank {
            Some(false) => slot.store(self.lru_clock(now_ms), Ordering::Relaxed),
            Some(true) => {
                let minute = self.minute(now_ms);
                let counter = decayed(slot.load(Ordering::Relaxed), minute).max(LFU_INIT);
                slot.store((minute << 8) | u32::from(counter), Ordering::Relaxed);
            }
            None => {}
        }
    }

    /// The eviction score of the key whose hash is `hash`: lower goes first.
    pub(crate) fn score(&self, hash: u64, now_ms: u64) -> u64 {
        let Some(slot) = self.slot(hash) else {
            return 0;
        };
        let v = slot.load(Ordering::Relaxed);
        match self.rank {
            // Older last access first: the score is the time of last access, as an age
            // subtracted from the largest age.
            Some(false) => {
                let age = self.lru_clock(now_ms).wrapping_sub(v) & CLOCK_MASK;
                u64::from(CLOCK_MASK - age) + 1
            }
            Some(true) => u64::from(decayed(v, self.minute(now_ms))),
            None => 0,
        }
    }

    /// The LFU counter of the key whose hash is `hash`, decayed to `now_ms` (what Redis's
    /// `OBJECT FREQ` answers); `None` unless the table ranks by frequency.
    pub(crate) fn frequency(&self, hash: u64, now_ms: u64) -> Option<u8> {
        if self.rank != Some(true) {
            return None;
        }
        let v = self.slot(hash)?.load(Ordering::Relaxed);
        Some(decayed(v, self.minute(now_ms)))
    }

    fn lru_clock(&self, now_ms: u64) -> u32 {
        ((now_ms.saturating_sub(self.epoch_ms) / 10) as u32) & CLOCK_MASK
    }

    fn minute(&self, now_ms: u64) -> u32 {
        ((now_ms.saturating_sub(self.epoch_ms) / 60_000) as u32) & 0xffff
    }
}

/// The LRU clock bits of a slot (24 bits of 10 ms).
const CLOCK_MASK: u32 = 0x00ff_ffff;

/// New keys start at this LFU count (as Redis's `LFU_INIT_VAL`), so that they are not the
/// first evicted.
const LFU_INIT: u8 = 5;
/// Redis's default `lfu-log-factor`.
const LFU_LOG_FACTOR: f64 = 10.0;

/// The LFU counter of a slot, decayed by one per minute since it was last touched.
fn decayed(v: u32, minute: u32) -> u8 {
    let (last, counter) = ((v >> 8) & 0xffff, (v & 0xff) as u8);
    let elapsed = minute.wrapping_sub(last) & 0xffff;
    counter.saturating_sub(elapsed.min(255) as u8)
}

/// A key a sample offered for eviction.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub key: bytes::Bytes,
    pub hash: u64,
}

/// Picks the key to evict among `candidates` under `policy`: the lowest score (oldest
/// access, lowest frequency), the first for the others (random samples, or the nearest
/// expiry, which the sampler offers first).
pub(crate) fn choose(
    policy: Policy,
    access: &Access,
    candidates: Vec<Candidate>,
    now_ms: u64,
) -> Option<Candidate> {
    match policy.ranks() {
        Rank::None => candidates.into_iter().next(),
        _ => candidates
            .into_iter()
            .min_by_key(|c| access.score(c.hash, now_ms)),
    }
}

/// Most keys evicted to make room for one write or one batch from a peer (a page of up to
/// 1 MiB): enough to free that much in keys of a few bytes. Redis bounds the time instead.
pub const MAX_EVICTIONS_PER_CALL: usize = 65_536;

/// Eviction never takes what the replica holds, less its tombstones, below this share of the
/// limit (one half).
///
/// An eviction turns a live key into a tombstone, which stays until every member has seen it.
/// While tombstones cannot be collected yet (a partition; a follower of a flood, a round trip
/// behind), evicting live keys for them frees little and, since every eviction is replicated,
/// empties the whole cluster: a follower over its limit with nothing but tombstones used to
/// evict each key as it arrived, and its evictions took the key from every node. Past the
/// floor, local writes that add data are refused with `OOM` and a peer's writes are held
/// over the limit until the tombstones are collected.
pub const LIVE_FLOOR_DIVISOR: usize = 2;

/// Evicts keys of `replica` under `limit` until what it holds, with `other` bytes used
/// elsewhere and the changes it recorded, fits, or [`MAX_EVICTIONS_PER_CALL`] keys went.
/// The undo records of changes not durable yet count in `used_memory` but not here: an
/// eviction moves the key's record into them until it is durable, so evicting for them only
/// evicts more (writes wait for the group commit instead, see `Cache::wait_for_room`).
/// Returns whether a write may go on: memory fits, or eviction is making progress (what is
/// still over goes at the next write). False under `noeviction` while over, when there
/// is nothing left to evict, and when what is left is the live floor
/// ([`LIVE_FLOOR_DIVISOR`]).
pub(crate) fn make_room(
    replica: &mut crate::Replica,
    limit: &MemoryLimit,
    other: usize,
    slack: usize,
    now_ms: u64,
) -> bool {
    if limit.max_bytes == 0 {
        return true;
    }
    let max = usize::try_from(limit.max_bytes).unwrap_or(usize::MAX);
    let used = |r: &crate::Replica| {
        r.memory().bytes() + other + r.pending_change_count() * crate::memory::PENDING_CHANGE
    };
    for n in 0..MAX_EVICTIONS_PER_CALL {
        if used(replica) <= max.saturating_add(slack) {
            return true;
        }
        let progress = n > 0;
        if limit.policy == Policy::NoEviction {
            return false;
        }
        let held = replica.memory();
        if held.bytes().saturating_sub(held.dead_bytes()) <= max / LIVE_FLOOR_DIVISOR {
            return progress;
        }
        let candidates = replica.eviction_candidates(
            limit.samples.clamp(1, MAX_SAMPLES),
            limit.policy.volatile_only(),
            limit.policy == Policy::VolatileTtl,
            now_ms,
        );
        let Some(victim) = choose(limit.policy, replica.access(), candidates, now_ms) else {
            return progress;
        };
        if replica.evict(victim.key, now_ms).is_err() {
            return progress;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_print_as_redis_names_them() {
        for p in Policy::ALL {
            assert_eq!(p.name().parse::<Policy>(), Ok(p));
            assert_eq!(p.name().to_uppercase().parse::<Policy>(), Ok(p));
        }
        assert!("lru".parse::<Policy>().is_err());
        assert!(Policy::VolatileTtl.volatile_only());
        assert!(!Policy::AllKeysLru.volatile_only());
    }

    #[test]
    fn memory_sizes_parse_with_redis_units() {
        assert_eq!(parse_memory("100"), Some(100));
        assert_eq!(parse_memory("1kb"), Some(1024));
        assert_eq!(parse_memory("1k"), Some(1000));
        assert_eq!(parse_memory("3GB"), Some(3 << 30));
        assert_eq!(parse_memory(""), None);
        assert_eq!(parse_memory("-1"), None);
        assert_eq!(parse_memory("99999999999999999999gb"), None);
    }

    #[test]
    fn lru_ranks_the_oldest_access_first() {
        let limit = MemoryLimit {
            max_bytes: 1 << 20,
            policy: Policy::AllKeysLru,
            samples: 5,
        };
        let a = Access::for_limit(&limit, 1_000);
        a.touch(1, 2_000);
        a.touch(2, 5_000);
        assert!(a.score(1, 6_000) < a.score(2, 6_000));
        a.touch(1, 7_000);
        assert!(a.score(1, 8_000) > a.score(2, 8_000));
        // Another key in slot 1: key 1 looks as recent as it.
        let other = 1 | (7u64 << 56);
        a.touch(other, 9_000);
        assert_eq!(a.score(1, 9_000), a.score(other, 9_000));
        assert!(a.score(1, 9_000) > a.score(2, 9_000));
    }

    #[test]
    fn lfu_ranks_the_least_used_first_and_decays() {
        let limit = MemoryLimit {
            max_bytes: 1 << 20,
            policy: Policy::AllKeysLfu,
            samples: 5,
        };
        let a = Access::for_limit(&limit, 0);
        for _ in 0..100 {
            a.touch(1, 1_000);
        }
        a.touch(2, 1_000);
        assert!(a.score(2, 1_000) < a.score(1, 1_000));
        let before = a.score(1, 1_000);
        assert!(
            a.score(1, 1_000 + 3 * 60_000) < before,
            "a minute idle decays"
        );
        assert!(a.frequency(2, 1_000).is_some());
        assert!(a.frequency(2, 1_000) < a.frequency(1, 1_000));
        assert!(Access::for_limit(&limit, 0).fits(&limit));
        let lru = MemoryLimit {
            policy: Policy::AllKeysLru,
            ..limit
        };
        assert_eq!(Access::for_limit(&lru, 0).frequency(1, 1_000), None);
        assert!(!Access::default().fits(&limit));
    }
}
