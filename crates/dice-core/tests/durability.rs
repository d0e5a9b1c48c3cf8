//! What an acknowledgement and an error mean: a write leaves its node only once durable there,
//! a failed commit is undone (an error reply means the write happened nowhere), writes are
//! refused while the store cannot commit and resume by themselves, and a database deleted
//! under a running cache is noticed.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use dice_core::{Cache, CacheOptions, Error, Limits, NodeId, Replica, SyncLimits, SyncMessage};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The entries of `cache`'s own origin that a peer knowing nothing would receive in a
/// catch-up page.
fn served_own_seqs(cache: &Cache) -> Vec<u64> {
    let peer = Replica::new(NodeId::new(999).unwrap(), Limits::default());
    let (_, msg) = dice_core::SyncSession::start(&peer, &SyncLimits::default());
    let SyncMessage::Request(req) = msg else {
        panic!("a session starts with a request")
    };
    let me = cache.node_id();
    let page = cache
        .handle_sync(SyncMessage::Request(req))
        .unwrap()
        .unwrap();
    let SyncMessage::Page(page) = page else {
        panic!("expected a page, got {page:?}")
    };
    assert!(page.covered.get(me) <= cache.shareable_seq());
    page.entries
        .iter()
        .filter(|e| e.version.origin == me)
        .map(|e| e.seq)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_leave_the_node_only_once_durable() {
    let dir = tempfile::tempdir().unwrap();
    let options = CacheOptions::default().with_commit_delay(Duration::from_millis(300));
    let cache = Cache::open_with(dir.path(), options).await.unwrap();
    cache.put("a", "1").await.unwrap();
    assert_eq!(cache.shareable_seq(), 1);

    // In memory, readable here, not durable: neither pushed nor served.
    let (_, generation) = cache
        .write_unacked(b("b"), Some(b("2")), None)
        .await
        .unwrap();
    assert_eq!(cache.get(b"b").as_deref(), Some(&b"2"[..]));
    assert_eq!(cache.local_seq(), 2);
    assert_eq!(cache.shareable_seq(), 1);
    assert!(
        cache.push_after(1).is_none(),
        "pushed a write not yet durable"
    );
    assert_eq!(served_own_seqs(&cache), vec![1]);

    cache.wait_committed(generation).await.unwrap();
    assert_eq!(cache.shareable_seq(), 2);
    let (SyncMessage::Push(push), through) = cache.push_after(1).unwrap() else {
        panic!("expected a push")
    };
    assert_eq!(through, 2);
    assert_eq!(push.entries.len(), 1);
    assert_eq!(push.entries[0].key, b("b"));
    assert_eq!(served_own_seqs(&cache), vec![1, 2]);
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_write_replaced_by_one_not_yet_durable_is_held_back_too() {
    // Had seq 1 left without the key's newer value, a crash now would leave a peer claiming
    // seq 1 and holding neither value of the key.
    let dir = tempfile::tempdir().unwrap();
    let options = CacheOptions::default().with_commit_delay(Duration::from_millis(300));
    let cache = Cache::open_with(dir.path(), options).await.unwrap();
    cache.put("k", "old").await.unwrap();
    let (_, generation) = cache
        .write_unacked(b("k"), Some(b("new")), None)
        .await
        .unwrap();
    assert_eq!(cache.shareable_seq(), 0);
    assert!(cache.push_after(0).is_none());
    assert_eq!(served_own_seqs(&cache), Vec::<u64>::new());
    cache.wait_committed(generation).await.unwrap();
    assert_eq!(cache.shareable_seq(), 2);
    assert_eq!(served_own_seqs(&cache), vec![2]);
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_is_undone_and_writes_are_refused_until_the_store_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let options = CacheOptions::default();
    let fault = options.fail_commits.clone();
    let cache = Cache::open_with(dir.path(), options).await.unwrap();
    cache.put("k", "v1").await.unwrap();
    cache.put("gone", "x").await.unwrap();
    let digest_before = cache.digest();
    let mut events = cache.subscribe();

    fault.store(true, Ordering::SeqCst);
    let err = cache.put("k", "refused").await.unwrap_err();
    assert!(matches!(err, Error::CommitFailed(_)), "{err}");
    // Undone: the old value is back, the new key never existed, the seq is free again.
    assert_eq!(cache.get(b"k").as_deref(), Some(&b"v1"[..]));
    assert_eq!(cache.local_seq(), 2);
    assert_eq!(cache.digest(), digest_before);
    let ev = events.recv().await.unwrap();
    assert_eq!(ev.source, dice_core::ChangeSource::Local);
    let ev = events.recv().await.unwrap();
    assert_eq!(ev.source, dice_core::ChangeSource::RolledBack);
    assert_eq!(ev.value.as_deref(), Some(&b"v1"[..]));

    // Refused at once from now on, reads go on, and the stats say why.
    let err = cache.put("new", "refused").await.unwrap_err();
    assert!(matches!(err, Error::WritesRefused(_)), "{err}");
    let err = cache.delete("gone").await.unwrap_err();
    assert!(matches!(err, Error::WritesRefused(_)), "{err}");
    assert_eq!(cache.get(b"new"), None);
    assert_eq!(cache.get(b"gone").as_deref(), Some(&b"x"[..]));
    let why = cache.stats().writes_refused.unwrap();
    assert!(why.contains("disk is full"), "{why}");
    assert_eq!(cache.stats().commit_failures, 1);

    // The disk recovers: writes resume by themselves.
    fault.store(false, Ordering::SeqCst);
    eventually("writes resume", || cache.writes_refused().is_none()).await;
    cache.put("k", "v2").await.unwrap();
    assert_eq!(cache.local_seq(), 3);
    cache.close().await.unwrap();

    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(cache.get(b"k").as_deref(), Some(&b"v2"[..]));
    assert_eq!(cache.get(b"new"), None);
    assert_eq!(cache.get(b"gone").as_deref(), Some(&b"x"[..]));
    assert_eq!(cache.local_seq(), 3);
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_undoes_remote_entries_and_the_version_vector() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Cache::open(da.path()).await.unwrap();
    let options = CacheOptions::default();
    let fault = options.fail_commits.clone();
    let b_cache = Cache::open_with(db.path(), options).await.unwrap();
    a.put("from-a", "1").await.unwrap();
    let vv_before = b_cache.stats().vv;

    fault.store(true, Ordering::SeqCst);
    let (SyncMessage::Push(push), _) = a.push_after(0).unwrap() else {
        panic!("expected a push")
    };
    // Applied in memory, then undone when its commit fails (at once: no assertion can
    // observe the in-between reliably).
    b_cache
        .handle_sync(SyncMessage::Push(push.clone()))
        .unwrap();
    eventually("the failed commit is noticed", || {
        b_cache.writes_refused().is_some()
    })
    .await;
    // Undone: B neither holds the entry nor claims A's seq, so it will take it again.
    assert_eq!(b_cache.get(b"from-a"), None);
    assert_eq!(
        b_cache.stats().vv.get(a.node_id()),
        vv_before.get(a.node_id())
    );
    let err = b_cache
        .handle_sync(SyncMessage::Push(push.clone()))
        .unwrap_err();
    assert!(matches!(err, Error::WritesRefused(_)), "{err}");

    fault.store(false, Ordering::SeqCst);
    eventually("writes resume", || b_cache.writes_refused().is_none()).await;
    b_cache.handle_sync(SyncMessage::Push(push)).unwrap();
    b_cache.flush().await.unwrap();
    assert_eq!(b_cache.get(b"from-a").as_deref(), Some(&b"1"[..]));
    assert_eq!(b_cache.stats().vv.get(a.node_id()), 1);
    a.close().await.unwrap();
    b_cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_deleted_under_a_running_cache_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    cache.put("k", "v").await.unwrap();
    for name in ["dice.sqlite3", "dice.sqlite3-wal", "dice.sqlite3-shm"] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    // Noticed while idle, within seconds.
    eventually("the deletion is noticed", || {
        cache.writes_refused().is_some()
    })
    .await;
    let why = cache.writes_refused().unwrap();
    assert!(why.contains("deleted"), "{why}");
    let err = cache.put("k2", "v2").await.unwrap_err();
    assert!(matches!(err, Error::WritesRefused(_)), "{err}");
    assert!(err.to_string().contains("dice.sqlite3"), "{err}");
    assert_eq!(cache.get(b"k").as_deref(), Some(&b"v"[..]));
    drop(cache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_into_a_deleted_database_is_refused_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    cache.put("k", "v").await.unwrap();
    std::fs::remove_file(dir.path().join("dice.sqlite3")).unwrap();
    // Checked before every commit, not only when idle: the very next write fails.
    let err = cache.put("k2", "v2").await.unwrap_err();
    assert!(
        matches!(err, Error::CommitFailed(_) | Error::WritesRefused(_)),
        "{err}"
    );
    assert_eq!(cache.get(b"k2"), None);
    drop(cache);
}

#[tokio::test]
async fn the_data_dir_and_database_are_owner_only() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let cache = Cache::open(&dir).await.unwrap();
    cache.put("k", "v").await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for name in ["dice.sqlite3", "dice.sqlite3-wal", "LOCK"] {
        let path = dir.join(name);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{name}");
        }
    }
    assert!(dir.join("dice.sqlite3").exists());
    cache.close().await.unwrap();

    // A data dir and database of an older dice, readable by all, are made owner-only.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        dir.join("dice.sqlite3"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let cache = Cache::open(&dir).await.unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("dice.sqlite3")), 0o600);
    cache.close().await.unwrap();
}
