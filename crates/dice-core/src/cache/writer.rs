//! The writer task: the one owner of the [`Store`]. It takes the dirty set in groups, commits
//! each group in one SQLite transaction, acknowledges the writes that waited for it (raising
//! the durable and shareable seqs), folds the log into snapshots between groups, and refuses
//! writes while the store fails, retrying it.
//!
//! The rest of the cache talks to it through [`Shared`]: the dirty set under the state lock,
//! the `Notify` that wakes it, and the `watch`es it publishes on.

use super::{Refusing, Shared, State, record};
use crate::replica::Replica;
use crate::store::{CommitBatch, MAX_BLOB_BYTES, SnapshotRun, Store};
use crate::{Error, Result};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Takes the dirty set and builds the commit for it, under the lock so that entries and the
/// version vector are one consistent snapshot.
fn take_batch(st: &mut State) -> (CommitBatch, u64) {
    let dirty = std::mem::take(&mut st.dirty);
    st.dirty_bytes = 0;
    let mut batch = CommitBatch {
        vv: st.replica.vv().clone(),
        floors: st.replica.floors().clone(),
        hlc: st.replica.last_hlc(),
        entry_count: st.replica.entry_count() as u64,
        ..CommitBatch::default()
    };
    for (slot, entry) in dirty {
        match entry {
            Some(e) => batch.upserts.push(e),
            None => batch.removals.push(slot),
        }
    }
    let generation = st.generation;
    st.generation += 1;
    (batch, generation)
}

/// Entries per snapshot chunk: one chunk is written between two group commits.
const SNAPSHOT_CHUNK_ENTRIES: usize = 4096;

/// How often the writer checks, when idle, that the database file is still the one it opened
/// (it also checks before every commit), and retries a store that failed.
const STORE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

pub(super) async fn writer_loop(shared: Arc<Shared>, mut store: Store) {
    let mut snapshot: Option<SnapshotRun> = None;
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut next_check = tokio::time::Instant::now() + STORE_CHECK_INTERVAL;
    loop {
        // Let the tasks that are ready to run (connections holding more writes) run first, so
        // that this group takes them all: larger groups for the same commit cost.
        tokio::task::yield_now().await;
        if shared.state.read().refused.is_some() {
            if shared.closing.load(Ordering::SeqCst) {
                break;
            }
            try_recover(&shared, &mut store).await;
            snapshot = None;
            tokio::select! {
                _ = tokio::time::sleep(STORE_CHECK_INTERVAL) => {}
                _ = shared.wake_writer.notified() => {}
            }
            continue;
        }
        let taken = {
            let mut st = shared.state.write();
            (!st.dirty.is_empty()).then(|| {
                shared
                    .committing_bytes
                    .store(st.dirty_bytes, Ordering::Relaxed);
                take_batch(&mut st)
            })
        };
        let committed = taken.is_some();
        if committed && !shared.options.commit_delay.is_zero() {
            tokio::time::sleep(shared.options.commit_delay).await;
        }
        if let Some((batch, generation)) = taken {
            let ok = commit_group(&shared, &mut store, batch, generation).await;
            shared.committing_bytes.store(0, Ordering::Relaxed);
            if !ok {
                continue;
            }
        }
        if shared.closing.load(Ordering::SeqCst) {
            if committed {
                continue;
            }
            break;
        }
        if tokio::time::Instant::now() >= next_check {
            next_check = tokio::time::Instant::now() + STORE_CHECK_INTERVAL;
            if let Some(why) = store.file_replaced() {
                fail(&shared, &store, None, why, true);
                continue;
            }
        }
        // One step of background work between two commits, so a snapshot makes progress
        // under any load and never holds a commit back for more than a chunk.
        if retry_at.is_none_or(|t| tokio::time::Instant::now() >= t) {
            match background_step(&shared, &mut store, &mut snapshot).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot work failed; will retry in 5 s");
                    retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                }
            }
        }
        if !committed {
            tokio::select! {
                _ = shared.wake_writer.notified() => {}
                _ = tokio::time::sleep_until(next_check) => {}
            }
        }
    }
    if let Err(e) = store.close().await {
        tracing::warn!(error = %e, "closing the database");
    }
}

/// One step of the store's work between commits: deleting a batch of the rows a snapshot
/// replaced, or writing the next chunk of a snapshot (starting or finishing it). `false` when
/// there is nothing to do. A snapshot that fails is dropped and started again later.
async fn background_step(
    shared: &Shared,
    store: &mut Store,
    snapshot: &mut Option<SnapshotRun>,
) -> Result<bool> {
    if snapshot.is_none() {
        if store.cleanup_pending() {
            let done = store.cleanup_step().await;
            shared
                .cleanup_pending
                .store(store.cleanup_pending(), Ordering::Relaxed);
            return done.map(|()| true);
        }
        if !needs_snapshot(shared, store) {
            return Ok(false);
        }
        *snapshot = Some(store.begin_snapshot().await?);
    }
    let Some(run) = snapshot.as_mut() else {
        return Ok(false);
    };
    match snapshot_step(shared, store, run).await {
        Ok(false) => return Ok(true),
        Ok(true) => {}
        Err(e) => {
            *snapshot = None;
            return Err(e);
        }
    }
    let Some(run) = snapshot.take() else {
        return Ok(false);
    };
    let written = run.written;
    store.finish_snapshot(run).await?;
    shared.snapshots.fetch_add(1, Ordering::Relaxed);
    shared.cleanup_pending.store(true, Ordering::Relaxed);
    shared
        .log_entries
        .store(store.log_entries(), Ordering::Relaxed);
    tracing::debug!(entries = written, "snapshot written");
    Ok(true)
}

fn needs_snapshot(shared: &Shared, store: &Store) -> bool {
    let log = store.log_entries();
    log >= shared.options.snapshot_min_log_entries
        && log >= shared.state.read().replica.entry_count() as u64
}

/// Writes the next chunk of `run`; `true` once the walk over the map is done.
async fn snapshot_step(shared: &Shared, store: &mut Store, run: &mut SnapshotRun) -> Result<bool> {
    let (chunk, next) = {
        let st = shared.state.read();
        // A chunk is copied twice while it is written (its entries, then its blob), beyond
        // what `used_memory` counts: under a limit, at most a 16th of it each.
        let bytes = super::in_flight_bytes(st.limit.max_bytes, MAX_BLOB_BYTES);
        st.replica
            .entries_after_dot(run.cursor, SNAPSHOT_CHUNK_ENTRIES, bytes)
    };
    if !chunk.is_empty() {
        store.write_snapshot_chunk(run, &chunk).await?;
    }
    run.cursor = next;
    Ok(next.is_none())
}

/// Commits one group; `false` if it failed (then everything not durable was rolled back and
/// writes are refused until the store commits again).
async fn commit_group(
    shared: &Shared,
    store: &mut Store,
    batch: CommitBatch,
    generation: u64,
) -> bool {
    // Checked before every commit, not only when idle: no write is acknowledged into a
    // database file that is gone.
    if let Some(why) = store.file_replaced() {
        fail(shared, store, Some(generation), why, true);
        return false;
    }
    let started = std::time::Instant::now();
    let result = if shared.options.fail_commits.load(Ordering::Relaxed) {
        Err(Error::CommitFailed(
            "database or disk is full (injected fault)".into(),
        ))
    } else {
        store.commit(&batch).await
    };
    if let Err(e) = result {
        let why = format!("the last group commit failed ({e}); retrying every second");
        fail(shared, store, Some(generation), why, false);
        return false;
    }
    shared.commits.fetch_add(1, Ordering::Relaxed);
    if let Some(observer) = &shared.options.commit_observer {
        observer.committed(
            started.elapsed(),
            batch.upserts.len() + batch.removals.len(),
        );
    }
    shared
        .log_entries
        .store(store.log_entries(), Ordering::Relaxed);
    {
        let mut guard = shared.state.write();
        let st = &mut *guard;
        // What this group wrote is now the state a failure would go back to.
        for e in &batch.upserts {
            let slot = (e.key.clone(), e.elem);
            let again = st.dirty.contains_key(&slot);
            st.replica.settle_undo(&slot, Some(e), again);
        }
        for slot in &batch.removals {
            let again = st.dirty.contains_key(slot);
            st.replica.settle_undo(slot, None, again);
        }
        st.replica.set_durable(batch.vv.get(shared.node_id));
        publish_shareable(shared, &st.replica);
    }
    shared.progress.send_modify(|p| p.done = generation);
    true
}

fn publish_shareable(shared: &Shared, replica: &Replica) {
    let seq = replica.shareable_seq();
    shared.shareable.send_if_modified(|s| {
        let changed = *s != seq;
        *s = seq;
        changed
    });
}

/// The store cannot commit: undoes everything not durable (so that an error reply means the
/// write happened nowhere, and nothing undurable ever leaves this node), fails the group
/// `failed` (if a commit failed) and the one being collected, and refuses writes from now on.
fn fail(shared: &Shared, store: &Store, failed: Option<u64>, why: String, fatal: bool) {
    let why: Arc<str> = why.into();
    if failed.is_some() {
        shared.commit_failures.fetch_add(1, Ordering::Relaxed);
    }
    let (undone, collecting) = {
        let mut st = shared.state.write();
        let collecting = (!st.dirty.is_empty()).then_some(st.generation);
        let undone = st
            .replica
            .rollback(store.committed_vv(), store.committed_floors());
        record(shared, &mut st);
        st.dirty.clear();
        st.dirty_bytes = 0;
        st.generation += 1;
        st.refused = Some(Refusing {
            why: why.clone(),
            fatal,
        });
        publish_shareable(shared, &st.replica);
        (undone, collecting)
    };
    tracing::error!(
        why = %why,
        rolled_back_keys = undone,
        "the store cannot commit: writes not yet durable were undone and writes are refused{}",
        if fatal { " until the node is restarted" } else { " until a commit succeeds again" }
    );
    shared.progress.send_modify(|p| {
        for g in failed.into_iter().chain(collecting) {
            p.done = p.done.max(g);
            p.failed.push((g, why.clone()));
        }
        let excess = p.failed.len().saturating_sub(256);
        p.failed.drain(..excess);
    });
}

/// While writes are refused: checks whether the store commits again (an empty group), and
/// lifts the refusal if it does. A deleted or replaced database never recovers this way.
async fn try_recover(shared: &Shared, store: &mut Store) {
    let fatal = shared
        .state
        .read()
        .refused
        .as_ref()
        .is_some_and(|r| r.fatal);
    if fatal {
        return;
    }
    if let Some(why) = store.file_replaced() {
        fail(shared, store, None, why, true);
        return;
    }
    if shared.options.fail_commits.load(Ordering::Relaxed) {
        return;
    }
    let probe = {
        let st = shared.state.read();
        CommitBatch {
            vv: store.committed_vv().clone(),
            floors: store.committed_floors().clone(),
            hlc: st.replica.last_hlc(),
            entry_count: st.replica.entry_count() as u64,
            ..CommitBatch::default()
        }
    };
    match store.commit(&probe).await {
        Ok(()) => {
            shared.state.write().refused = None;
            tracing::info!("the store commits again: writes resume");
        }
        Err(e) => tracing::debug!(error = %e, "the store still cannot commit"),
    }
}
