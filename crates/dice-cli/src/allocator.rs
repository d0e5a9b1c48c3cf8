//! jemalloc, the node's allocator: its figures for `INFO memory` and the untracked-memory
//! gauge, and the return of its free pages to the kernel while a node with a memory limit
//! holds too many of them.
//!
//! jemalloc keeps the pages of freed memory ("dirty" pages) for about ten seconds before it
//! gives them back, so that the next allocations reuse them without a page fault. Under a
//! write flood that evicts as fast as it writes, those pages are most of what a node holds
//! beyond its `used_memory`: the resident size went to twice the bound of issue 14 while
//! `used_memory` stayed within the limit. Returning them on every free
//! (`dirty_decay_ms:0`) costs a third of the writes; returning them in one batch when they
//! pass a share of the limit costs little, and only under a limit.

use tikv_jemalloc_ctl::{Access, AsName, arenas, epoch, stats};

/// jemalloc's figures (refreshed on each read: `epoch` advances them).
pub(crate) fn stats() -> Option<dice_resp::AllocatorStats> {
    epoch::advance().ok()?;
    Some(dice_resp::AllocatorStats {
        allocated: stats::allocated::read().ok()?,
        active: stats::active::read().ok()?,
        resident: stats::resident::read().ok()?,
    })
}

/// Bytes of free pages jemalloc holds now (resident, neither in use nor its own metadata).
pub(crate) fn free_pages() -> Option<usize> {
    epoch::advance().ok()?;
    let resident = stats::resident::read().ok()?;
    let active = stats::active::read().ok()?;
    let metadata = stats::metadata::read().ok()?;
    Some(resident.saturating_sub(active + metadata))
}

/// Gives jemalloc's free pages back to the kernel now, in every arena, and leaves its decay
/// as it was: each arena's `dirty_decay_ms` is set to 0, which purges what that arena holds
/// at once, then set back. Returns whether every arena did so.
pub(crate) fn return_free_pages() -> bool {
    let Ok(arenas) = arenas::narenas::read() else {
        return false;
    };
    let mut all = true;
    for i in 0..arenas {
        let key = format!("arena.{i}.dirty_decay_ms\0");
        let key = key.as_str().name();
        let Ok(was) = Access::<isize>::read(key) else {
            // Not initialised yet (jemalloc makes its arenas as threads first allocate).
            continue;
        };
        all &= key.write(0isize).is_ok() && key.write(was).is_ok();
    }
    all
}

/// Whether a node whose limit is `max_bytes` (0: none) should return its free pages now:
/// they pass a sixteenth of the limit (at least 1 MiB).
pub(crate) fn should_return(max_bytes: u64, free: usize) -> bool {
    max_bytes > 0 && free as u64 > (max_bytes / RETURN_SHARE).max(MIN_RETURN)
}

/// Free pages are returned past `maxmemory / RETURN_SHARE`: at a 32 MB limit, 2 MB of the
/// 6.4 MB the bound (1.2 × maxmemory plus the base) leaves beyond `used_memory`.
const RETURN_SHARE: u64 = 16;
/// ... and never for less than this.
const MIN_RETURN: u64 = 1 << 20;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Each initialised arena's `dirty_decay_ms`.
    fn decays() -> BTreeMap<u32, isize> {
        (0..arenas::narenas::read().unwrap())
            .filter_map(|i| {
                let key = format!("arena.{i}.dirty_decay_ms\0");
                Some((i, Access::<isize>::read(key.as_str().name()).ok()?))
            })
            .collect()
    }

    /// The free pages a burst of allocations leaves behind are returned at once, and the
    /// decay of every arena is what it was.
    #[test]
    fn free_pages_are_returned_and_the_decay_is_kept() {
        let before = decays();
        assert!(!before.is_empty(), "jemalloc is this test's allocator");
        // 64 MiB in small pieces, then freed: their pages stay with jemalloc as free pages.
        let pieces: Vec<Vec<u8>> = (0..16_384).map(|i| vec![i as u8; 4096]).collect();
        drop(pieces);
        let held = free_pages().unwrap();
        assert!(
            held > 32 << 20,
            "64 MiB freed left {held} bytes of free pages"
        );
        assert!(return_free_pages());
        let left = free_pages().unwrap();
        assert!(
            left < held / 4,
            "{left} bytes of free pages left after returning {held}"
        );
        let after = decays();
        for (i, was) in &before {
            assert_eq!(after.get(i), Some(was), "arena {i}'s decay as it was");
        }
    }

    #[test]
    fn pages_are_returned_only_under_a_limit_past_a_sixteenth_of_it() {
        assert!(!should_return(0, 1 << 30), "no limit: jemalloc decides");
        assert!(!should_return(32 << 20, 2 << 20));
        assert!(should_return(32 << 20, (2 << 20) + 1));
        assert!(
            !should_return(4 << 20, 1 << 20),
            "never for less than 1 MiB"
        );
        assert!(should_return(4 << 20, (1 << 20) + 1));
    }
}
