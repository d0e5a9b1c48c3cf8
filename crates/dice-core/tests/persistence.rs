//! Integration tests of dice-core persistence through the public `Cache` API: reopening,
//! clear errors on foreign or newer files, limits, TTL and GC, subscriptions, and sync between
//! two persistent caches.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use dice_core::{
    Cache, CacheOptions, ChangeSource, Entry, Error, Event, Limits, NodeId, SessionStep,
    SyncLimits, SyncMessage, Version, VersionVector, now_ms,
};
use futures_util::future::join_all;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Every entry held (dead ones included), sorted by key.
fn snapshot(cache: &Cache) -> Vec<Entry> {
    let mut all: Vec<Entry> = cache.with_replica(|r| r.entries().collect());
    all.sort_by(|a, b| a.key.cmp(&b.key));
    all
}

/// The non-zero components of a version vector (an origin listed at 0 means the same as an
/// origin not listed).
fn nonzero(vv: &VersionVector) -> Vec<(NodeId, u64)> {
    vv.iter().filter(|(_, s)| *s > 0).collect()
}

fn max_version(entries: &[Entry]) -> Version {
    entries.iter().map(|e| e.version).max().unwrap()
}

/// Opens `dir`, retrying for a bounded time while a dropped cache still holds the lock.
async fn open_when_unlocked(dir: &Path) -> Cache {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match Cache::open(dir).await {
            Ok(cache) => return cache,
            Err(Error::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("reopening {}: {e}", dir.display()),
        }
    }
}

async fn sqlite(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap()
}

/// Polls `cond` every 10 ms for up to 10 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key/{i:05}"))
}

/// Writes a few thousand keys in several phases (puts, overwrites, deletes, TTL puts, expired
/// TTL puts, large values, tombstones of keys never written), concurrently so that group
/// commits hold many writes. Returns the expected live value of every key.
async fn write_workload(cache: &Cache, n: usize) -> HashMap<Bytes, Option<Bytes>> {
    let mut model: HashMap<Bytes, Option<Bytes>> = HashMap::new();
    let large = |i: usize| Bytes::from(vec![(i % 251) as u8; 48 * 1024 + i]);

    // Phase 1: plain puts, every 97th a large value.
    let mut phase = Vec::new();
    for i in 0..n {
        let v = if i % 97 == 0 {
            large(i)
        } else {
            Bytes::from(format!("value {i} gen 0"))
        };
        model.insert(key(i), Some(v.clone()));
        phase.push(cache.put(key(i), v));
    }
    for r in join_all(phase).await {
        r.unwrap();
    }

    // Phase 2: overwrites.
    let mut phase = Vec::new();
    for i in (0..n).filter(|i| i % 3 == 0) {
        let v = Bytes::from(format!("value {i} gen 1"));
        model.insert(key(i), Some(v.clone()));
        phase.push(cache.put(key(i), v));
    }
    for r in join_all(phase).await {
        r.unwrap();
    }

    // Phase 3: deletes, and tombstones for keys never written.
    let mut phase = Vec::new();
    for i in (0..n).filter(|i| i % 7 == 0) {
        model.insert(key(i), None);
        phase.push(cache.delete(key(i)));
    }
    for i in 0..50 {
        let k = Bytes::from(format!("never/{i}"));
        model.insert(k.clone(), None);
        phase.push(cache.delete(k));
    }
    for r in join_all(phase).await {
        r.unwrap();
    }

    // Phase 4: long TTLs (some on deleted keys, which brings them back).
    let mut phase = Vec::new();
    for i in (0..n).filter(|i| i % 11 == 0) {
        let v = Bytes::from(format!("ttl {i}"));
        model.insert(key(i), Some(v.clone()));
        phase.push(cache.put_with_ttl(key(i), v, Duration::from_secs(3600)));
    }
    for r in join_all(phase).await {
        r.unwrap();
    }

    // Phase 5: TTLs that are already over (expired entries are dead but still held).
    let past = now_ms() - 1;
    let mut phase = Vec::new();
    for i in (0..n).filter(|i| i % 13 == 5) {
        model.insert(key(i), None);
        phase.push(cache.put_expiring_at(key(i), Bytes::from(format!("gone {i}")), Some(past)));
    }
    for r in join_all(phase).await {
        r.unwrap();
    }

    // Phase 6: sequential overwrites of one key, and a large value overwritten by a small one.
    for g in 0..20 {
        let v = Bytes::from(format!("hot {g}"));
        model.insert(Bytes::from_static(b"hot"), Some(v.clone()));
        cache.put("hot", v).await.unwrap();
    }
    cache.put(key(97), "small again").await.unwrap();
    model.insert(key(97), Some(Bytes::from_static(b"small again")));
    model
}

fn check_model(cache: &Cache, model: &HashMap<Bytes, Option<Bytes>>) {
    for (k, v) in model {
        assert_eq!(&cache.get(k), v, "key {k:?}");
    }
    let live = model.values().filter(|v| v.is_some()).count();
    assert_eq!(cache.len(), live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_after_close_restores_everything_and_the_clock_continues() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    let id = cache.node_id();
    let model = write_workload(&cache, 3000).await;
    check_model(&cache, &model);

    let before = snapshot(&cache);
    let stats = cache.stats();
    let (digest, len, seq) = (cache.digest(), cache.len(), cache.local_seq());
    let last_version = max_version(&before);
    assert_eq!(stats.vv.get(id), seq);
    assert!(seq > 3000, "every write takes a seq: {seq}");
    assert!(
        stats.commits < seq,
        "group commits should hold several writes ({} commits for {seq} writes)",
        stats.commits
    );
    cache.close().await.unwrap();

    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(cache.node_id(), id);
    assert_eq!(cache.stats().node_id, id);
    assert_eq!(cache.digest(), digest);
    assert_eq!(cache.len(), len);
    assert_eq!(cache.stats().vv, stats.vv);
    assert_eq!(nonzero(&cache.stats().floors), nonzero(&stats.floors));
    assert_eq!(cache.stats().entries, stats.entries);
    assert_eq!(cache.local_seq(), seq);
    // Every entry, dead or alive, comes back with its value, version, seq and expiry.
    let after = snapshot(&cache);
    assert_eq!(after.len(), before.len());
    for (a, b) in after.iter().zip(&before) {
        assert_eq!(a, b);
    }
    check_model(&cache, &model);
    let (_, expiry) = cache.get_with_expiry(&key(11)).unwrap();
    assert!(expiry.unwrap() > now_ms() + 3_000_000);

    // The clock and the sequence continue.
    let next = cache.put("after reopen", "x").await.unwrap();
    assert_eq!(next.seq, seq + 1);
    assert_eq!(next.version.origin, id);
    assert!(next.version > last_version);
    let del = cache.delete("hot").await.unwrap();
    assert!(del);
    assert_eq!(cache.entry(b"hot").unwrap().seq, seq + 2);
    assert!(cache.entry(b"hot").unwrap().version > next.version);
    cache.close().await.unwrap();

    // And once more: the writes made after the first reopen are there too.
    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(cache.local_seq(), seq + 2);
    assert_eq!(cache.get(b"after reopen").as_deref(), Some(&b"x"[..]));
    assert_eq!(cache.get(b"hot"), None);
    assert_eq!(cache.len(), len);
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_after_drop_without_close_keeps_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    let id = cache.node_id();
    let model = write_workload(&cache, 2000).await;
    let digest = cache.digest();
    let vv = cache.stats().vv;
    let seq = cache.local_seq();
    let before = snapshot(&cache);
    drop(cache);

    let cache = open_when_unlocked(dir.path()).await;
    assert_eq!(cache.node_id(), id);
    check_model(&cache, &model);
    assert_eq!(cache.digest(), digest);
    assert_eq!(cache.stats().vv, vv);
    assert_eq!(snapshot(&cache), before);
    let next = cache.put("next", "1").await.unwrap();
    assert_eq!(next.seq, seq + 1);
    assert!(next.version > max_version(&before));

    // Writes still waiting for their group commit when the cache is dropped are flushed by
    // the writer on its way out (the documented behaviour of dropping a cache).
    let mut pending = Vec::new();
    for i in 0..200 {
        let (e, _generation) = cache
            .write_unacked(
                Bytes::from(format!("unacked/{i}")),
                Some(Bytes::from(format!("u{i}"))),
                None,
            )
            .await
            .unwrap();
        pending.push(e);
    }
    drop(cache);
    let cache = open_when_unlocked(dir.path()).await;
    for e in &pending {
        assert_eq!(cache.entry(&e.key).as_ref(), Some(e));
    }
    assert_eq!(cache.local_seq(), seq + 1 + 200);
    cache.close().await.unwrap();
}

#[tokio::test]
async fn garbage_file_is_not_a_dice_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dice.sqlite3");
    let garbage: Vec<u8> = b"this is certainly not an SQLite database\n"
        .iter()
        .copied()
        .cycle()
        .take(8192)
        .collect();
    std::fs::write(&db, &garbage).unwrap();
    let err = Cache::open(dir.path()).await.unwrap_err();
    assert!(matches!(err, Error::NotADiceDatabase { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("not a dice database"), "{msg}");
    assert!(msg.contains("dice.sqlite3"), "{msg}");
    // The file is left alone, and the lock is released.
    assert_eq!(std::fs::read(&db).unwrap(), garbage);
    let again = Cache::open(dir.path()).await.unwrap_err();
    assert!(matches!(again, Error::NotADiceDatabase { .. }), "{again:?}");
}

#[tokio::test]
async fn sqlite_header_followed_by_garbage_is_not_a_dice_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dice.sqlite3");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend((0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(&db, &bytes).unwrap();
    let err = Cache::open(dir.path()).await.unwrap_err();
    assert!(matches!(err, Error::NotADiceDatabase { .. }), "{err:?}");
    assert!(err.to_string().contains("not a dice database"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), bytes);
}

#[tokio::test]
async fn sqlite_database_of_another_application_is_refused_and_left_intact() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dice.sqlite3");
    let mut conn = sqlite(&db).await;
    sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO users (name) VALUES ('ada'), ('grace')")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let err = Cache::open(dir.path()).await.unwrap_err();
    assert!(matches!(err, Error::NotADiceDatabase { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("not a dice database"), "{msg}");
    assert!(msg.contains("another application"), "{msg}");

    // Nothing was migrated into the foreign file.
    let mut conn = sqlite(&db).await;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(tables, vec!["users".to_string()]);
    let app_id: i64 = sqlx::query_scalar("PRAGMA application_id")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(app_id, 0);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_database_with_a_foreign_application_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dice.sqlite3");
    let mut conn = sqlite(&db).await;
    sqlx::query("PRAGMA application_id = 1234567")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let err = Cache::open(dir.path()).await.unwrap_err();
    assert!(matches!(err, Error::NotADiceDatabase { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("application_id"), "{msg}");
    assert!(msg.contains(&format!("{:#x}", 1234567)), "{msg}");
}

#[tokio::test]
async fn database_of_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    cache.put("k", "v").await.unwrap();
    cache.close().await.unwrap();

    let mut conn = sqlite(&dir.path().join("dice.sqlite3")).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99, 'from the future', TRUE, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let err = Cache::open(dir.path()).await.unwrap_err();
    match &err {
        Error::SchemaTooNew {
            found, supported, ..
        } => {
            assert_eq!(*found, 99);
            assert_eq!(*supported, dice_core::store::SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("99"), "{msg}");
    assert!(msg.contains("newer"), "{msg}");
    assert!(msg.contains("dice.sqlite3"), "{msg}");

    // The refusal does not damage the file: removing the future row makes it open again.
    let mut conn = sqlite(&dir.path().join("dice.sqlite3")).await;
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 99")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(cache.get(b"k").as_deref(), Some(&b"v"[..]));
    cache.close().await.unwrap();
}

#[tokio::test]
async fn second_open_is_locked_and_the_lock_is_released_by_close() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    cache.put("k", "v").await.unwrap();
    let err = Cache::open(dir.path()).await.unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("in use"), "{msg}");
    assert!(
        msg.contains(&dir.path().display().to_string()),
        "the message names the directory: {msg}"
    );
    // The refused open did not disturb the open cache.
    cache.put("k2", "v2").await.unwrap();
    assert_eq!(cache.len(), 2);
    cache.close().await.unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(cache.len(), 2);
    cache.close().await.unwrap();
}

#[tokio::test]
async fn data_dir_that_is_a_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"hello").unwrap();
    let err = Cache::open(&file).await.unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");

    // A data dir below a regular file.
    let err = Cache::open(file.join("sub")).await.unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");

    // A database path that is a directory.
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("dice.sqlite3")).unwrap();
    let err = Cache::open(&data).await.unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("dice.sqlite3"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"hello");
}

#[tokio::test]
async fn limits_refuse_bad_writes_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    let defaults = Limits::default();
    assert_eq!(cache.options().limits, defaults);
    cache.put("present", "1").await.unwrap();
    let (len, digest, seq) = (cache.len(), cache.digest(), cache.local_seq());
    let entries = cache.stats().entries;

    let err = cache.put("", "v").await.unwrap_err();
    assert!(matches!(err, Error::EmptyKey), "{err:?}");
    assert!(err.to_string().contains("empty"), "{err}");
    let err = cache.delete("").await.unwrap_err();
    assert!(matches!(err, Error::EmptyKey), "{err:?}");

    let long_key = vec![b'k'; defaults.max_key_len + 1];
    let err = cache.put(long_key.clone(), "v").await.unwrap_err();
    match err {
        Error::KeyTooLarge { len, max } => {
            assert_eq!((len, max), (defaults.max_key_len + 1, defaults.max_key_len));
        }
        ref other => panic!("expected KeyTooLarge, got {other:?}"),
    }
    assert!(err.to_string().contains(&defaults.max_key_len.to_string()));
    let err = cache
        .put_with_ttl(long_key.clone(), "v", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::KeyTooLarge { .. }), "{err:?}");
    let err = cache.delete(long_key.clone()).await.unwrap_err();
    assert!(matches!(err, Error::KeyTooLarge { .. }), "{err:?}");

    let big = vec![0u8; defaults.max_value_len + 1];
    let err = cache.put("big", big).await.unwrap_err();
    match err {
        Error::ValueTooLarge { len, max } => {
            assert_eq!(
                (len, max),
                (defaults.max_value_len + 1, defaults.max_value_len)
            );
        }
        ref other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    assert!(err.to_string().contains("value"), "{err}");

    // Nothing was written: no entry, no seq, same state.
    assert_eq!(cache.len(), len);
    assert_eq!(cache.digest(), digest);
    assert_eq!(cache.local_seq(), seq);
    assert_eq!(cache.stats().entries, entries);
    assert_eq!(cache.entry(&long_key), None);
    assert_eq!(cache.entry(b"big"), None);

    // At the limits exactly is fine.
    let max_key = vec![b'm'; defaults.max_key_len];
    cache.put(max_key.clone(), "v").await.unwrap();
    cache
        .put("max value", vec![7u8; defaults.max_value_len])
        .await
        .unwrap();
    cache.close().await.unwrap();

    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(cache.len(), len + 2);
    assert_eq!(cache.local_seq(), seq + 2);
    assert_eq!(cache.entry(&long_key), None);
    assert_eq!(cache.entry(b"big"), None);
    assert_eq!(
        cache.get(b"max value").unwrap().len(),
        defaults.max_value_len
    );
    assert!(cache.get(&max_key).is_some());
    cache.close().await.unwrap();
}

#[tokio::test]
async fn custom_limits_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default().with_max_key_len(8).with_max_value_len(16);
    let cache = Cache::open_with(dir.path(), CacheOptions::default().with_limits(limits))
        .await
        .unwrap();
    assert_eq!(cache.options().limits, limits);
    cache.put("12345678", "0123456789abcdef").await.unwrap();
    let digest = cache.digest();
    let err = cache.put("123456789", "v").await.unwrap_err();
    assert!(
        matches!(err, Error::KeyTooLarge { len: 9, max: 8 }),
        "{err:?}"
    );
    assert!(err.to_string().contains('8'), "{err}");
    let err = cache.put("k", "0123456789abcdefX").await.unwrap_err();
    assert!(
        matches!(err, Error::ValueTooLarge { len: 17, max: 16 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("16"), "{err}");
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.local_seq(), 1);
    assert_eq!(cache.digest(), digest);

    // Remote entries are held to the same limits: a peer with default limits cannot push a
    // value this cache refuses.
    let peer_dir = tempfile::tempdir().unwrap();
    let peer = Cache::open(peer_dir.path()).await.unwrap();
    peer.put("k", "a value longer than sixteen bytes")
        .await
        .unwrap();
    let (push, _) = peer.push_after(0).unwrap();
    let err = cache.handle_sync(push).unwrap_err();
    assert!(
        matches!(err, Error::ValueTooLarge { len: 33, max: 16 }),
        "{err:?}"
    );
    assert_eq!(cache.get(b"k"), None);
    assert_eq!(cache.digest(), digest);
    peer.close().await.unwrap();
    cache.close().await.unwrap();

    // Limits are options, not stored: the same data opened with the defaults accepts more.
    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(cache.len(), 1);
    cache.put("123456789", "v").await.unwrap();
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expiry_and_gc_of_dead_entries_persist() {
    let dir = tempfile::tempdir().unwrap();
    let options = CacheOptions::default()
        .with_gc_grace(Duration::from_millis(50))
        // A lone cache waits one member horizon before it collects (see `Replica::gc`).
        .with_member_horizon(Duration::from_millis(1))
        .with_gc_interval(Duration::from_millis(20));
    let cache = Cache::open_with(dir.path(), options.clone()).await.unwrap();
    let id = cache.node_id();
    let mut max_dead_seq = 0;
    for i in 0..20 {
        cache
            .put(format!("keep/{i}"), format!("v{i}"))
            .await
            .unwrap();
    }
    for i in 0..10 {
        cache.put(format!("del/{i}"), "x").await.unwrap();
        cache.delete(format!("del/{i}")).await.unwrap();
        max_dead_seq = cache.local_seq();
    }
    let expires_at = now_ms() + 300;
    for i in 0..10 {
        let e = cache
            .put_expiring_at(format!("ttl/{i}"), format!("t{i}"), Some(expires_at))
            .await
            .unwrap();
        max_dead_seq = max_dead_seq.max(e.seq);
        // Only check presence when the expiry is comfortably ahead (no timing assertion).
        if now_ms() + 50 < expires_at {
            assert_eq!(
                cache.get_with_expiry(format!("ttl/{i}").as_bytes()),
                Some((Bytes::from(format!("t{i}")), Some(expires_at)))
            );
        }
    }
    // A key that stays alive with a long TTL is not collected.
    cache
        .put_with_ttl("long ttl", "l", Duration::from_secs(3600))
        .await
        .unwrap();

    eventually("the TTL to pass", || now_ms() > expires_at).await;
    for i in 0..10 {
        assert_eq!(cache.get(format!("ttl/{i}").as_bytes()), None);
        assert_eq!(cache.get(format!("del/{i}").as_bytes()), None);
    }
    assert_eq!(cache.len(), 21);
    assert!(cache.scan_prefix(b"ttl/").is_empty());

    // GC drops the 10 tombstones and the 10 expired entries, and raises the floor.
    eventually("gc to drop dead entries", || cache.stats().entries == 21).await;
    let stats = cache.stats();
    assert_eq!(stats.replica.gc_dropped, 20);
    assert_eq!(stats.floors.get(id), max_dead_seq);
    assert_eq!(stats.keys, 21);
    for i in 0..10 {
        assert_eq!(cache.entry(format!("ttl/{i}").as_bytes()), None);
        assert_eq!(cache.entry(format!("del/{i}").as_bytes()), None);
    }
    let digest = cache.digest();
    let seq = cache.local_seq();
    cache.close().await.unwrap();

    // After reopening (with GC effectively off), they are still gone and the floor is kept.
    let cache = Cache::open(dir.path()).await.unwrap();
    let reopened = cache.stats();
    assert_eq!(reopened.entries, 21);
    assert_eq!(reopened.keys, 21);
    assert_eq!(reopened.floors.get(id), max_dead_seq);
    assert_eq!(nonzero(&reopened.floors), nonzero(&stats.floors));
    assert_eq!(reopened.vv.get(id), seq);
    assert_eq!(cache.digest(), digest);
    for i in 0..10 {
        assert_eq!(cache.entry(format!("ttl/{i}").as_bytes()), None);
        assert_eq!(cache.entry(format!("del/{i}").as_bytes()), None);
    }
    assert_eq!(cache.get(b"keep/3").as_deref(), Some(&b"v3"[..]));
    assert!(cache.get(b"long ttl").is_some());
    cache.close().await.unwrap();
}

/// What a test compares of an [`Event`] (which is `#[non_exhaustive]`: built only by the cache).
#[derive(Debug, PartialEq)]
struct Ev {
    key: Bytes,
    value: Option<Bytes>,
    expires_at_ms: Option<u64>,
    source: ChangeSource,
    hash_field: bool,
    set_member: bool,
}

async fn next_event(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Ev {
    let e = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event")
        .unwrap();
    Ev {
        key: e.key,
        value: e.value,
        expires_at_ms: e.expires_at_ms,
        source: e.source,
        hash_field: e.hash_field,
        set_member: e.set_member,
    }
}

#[tokio::test]
async fn subscribers_see_local_and_remote_changes() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let a = Cache::open(dir_a.path()).await.unwrap();
    let b = Cache::open(dir_b.path()).await.unwrap();
    assert_ne!(a.node_id(), b.node_id());
    let mut rx = a.subscribe();

    a.put("a", "1").await.unwrap();
    a.delete("a").await.unwrap();
    let e = a
        .put_with_ttl("t", "x", Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        Ev {
            key: Bytes::from_static(b"a"),
            value: Some(Bytes::from_static(b"1")),
            expires_at_ms: None,
            source: ChangeSource::Local,
            hash_field: false,
            set_member: false,
        }
    );
    assert_eq!(
        next_event(&mut rx).await,
        Ev {
            key: Bytes::from_static(b"a"),
            value: None,
            expires_at_ms: None,
            source: ChangeSource::Local,
            hash_field: false,
            set_member: false,
        }
    );
    assert_eq!(
        next_event(&mut rx).await,
        Ev {
            key: Bytes::from_static(b"t"),
            value: Some(Bytes::from_static(b"x")),
            expires_at_ms: e.expires_at_ms,
            source: ChangeSource::Local,
            hash_field: false,
            set_member: false,
        }
    );
    assert!(e.expires_at_ms.is_some());

    // Failed writes produce no event.
    assert!(a.put("", "v").await.is_err());

    b.put("b1", "x").await.unwrap();
    b.put("b2", "y").await.unwrap();
    b.delete("b1").await.unwrap();
    let (push, last) = b.push_after(0).unwrap();
    assert_eq!(last, 3);
    assert!(matches!(push, SyncMessage::Push(_)));
    assert!(matches!(
        a.handle_sync(push.clone()).unwrap(),
        Some(SyncMessage::Ack(_))
    ));
    let mut remote = vec![next_event(&mut rx).await, next_event(&mut rx).await];
    remote.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(
        remote,
        vec![
            Ev {
                key: Bytes::from_static(b"b1"),
                value: None,
                expires_at_ms: None,
                source: ChangeSource::Remote,
                hash_field: false,
                set_member: false,
            },
            Ev {
                key: Bytes::from_static(b"b2"),
                value: Some(Bytes::from_static(b"y")),
                expires_at_ms: None,
                source: ChangeSource::Remote,
                hash_field: false,
                set_member: false,
            },
        ]
    );
    // A duplicate push changes nothing and tells nobody.
    assert!(matches!(
        a.handle_sync(push).unwrap(),
        Some(SyncMessage::Ack(_))
    ));
    assert!(b.push_after(last).is_none());
    a.put("done", "1").await.unwrap();
    assert_eq!(next_event(&mut rx).await.key.as_ref(), b"done");
    assert!(rx.try_recv().is_err(), "no further events");

    // A second subscriber sees only what happens after it subscribed.
    let mut rx2 = a.subscribe();
    a.delete("t").await.unwrap();
    let ev = next_event(&mut rx2).await;
    assert_eq!(
        (ev.key.as_ref(), ev.value, ev.source),
        (&b"t"[..], None, ChangeSource::Local)
    );
    assert_eq!(next_event(&mut rx).await.key.as_ref(), b"t");

    // Remote entries were persisted with their versions.
    let b2 = b.entry(b"b2").unwrap();
    a.close().await.unwrap();
    let a = Cache::open(dir_a.path()).await.unwrap();
    assert_eq!(a.entry(b"b2"), Some(b2));
    assert!(a.entry(b"b1").unwrap().value.is_none());
    assert_eq!(a.get(b"b2").as_deref(), Some(&b"y"[..]));
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// Runs one catch-up session of `asker` against `server` to the end.
fn sync_once(asker: &Cache, server: &Cache) -> dice_core::SessionStats {
    let (mut session, mut msg) = asker.start_sync();
    for _ in 0..10_000 {
        let reply = server.handle_sync(msg).unwrap().expect("a reply");
        match asker.continue_sync(&mut session, reply).unwrap() {
            SessionStep::Send(next) => msg = next,
            SessionStep::Done(stats) => return stats,
        }
    }
    panic!("the sync session did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_caches_sync_in_pages_and_the_result_persists() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let a = Cache::open_with(
        dir_a.path(),
        CacheOptions::default().with_sync_limits(SyncLimits::default().with_page_max_entries(100)),
    )
    .await
    .unwrap();
    let b = Cache::open(dir_b.path()).await.unwrap();
    let a_id = a.node_id();
    let b_id = b.node_id();

    let writes: Vec<_> = (0..1000)
        .map(|i| a.put(format!("k{i:04}"), format!("v{i}")))
        .collect();
    for r in join_all(writes).await {
        r.unwrap();
    }
    for i in (0..1000).step_by(10) {
        a.delete(format!("k{i:04}")).await.unwrap();
    }
    a.put_with_ttl("with ttl", "t", Duration::from_secs(3600))
        .await
        .unwrap();
    // B has a write of its own, which A does not get from B's catch-up.
    b.put("b's own", "b").await.unwrap();
    let a_seq = a.local_seq();
    assert_eq!(a_seq, 1101);

    let stats = sync_once(&b, &a);
    assert!(stats.pages >= 10, "pages of at most 100 entries: {stats:?}");
    assert_eq!(stats.entries_received, 1001);
    assert_eq!(stats.entries_applied, 1001);
    assert!(!stats.full);
    assert_eq!(b.len(), 900 + 1 + 1);
    assert_eq!(b.stats().vv.get(a_id), a_seq);
    assert_eq!(b.stats().vv.get(b_id), 1);
    assert_eq!(b.get(b"k0001").as_deref(), Some(&b"v1"[..]));
    assert_eq!(b.get(b"k0010"), None);
    assert_eq!(b.entry(b"k0010"), a.entry(b"k0010"));
    // Same data as A, apart from B's own key.
    b.delete("b's own").await.unwrap();
    let b_seq = b.local_seq();
    assert_eq!(b.digest(), a.digest());
    let digest = b.digest();
    let vv = b.stats().vv;
    let entries = snapshot(&b);
    b.close().await.unwrap();

    let b = Cache::open(dir_b.path()).await.unwrap();
    assert_eq!(b.node_id(), b_id);
    assert_eq!(b.digest(), digest);
    assert_eq!(b.stats().vv, vv);
    assert_eq!(b.local_seq(), b_seq);
    assert_eq!(snapshot(&b), entries);

    // The persisted version vector means a second catch-up transfers nothing...
    let again = sync_once(&b, &a);
    assert_eq!(again.entries_received, 0, "{again:?}");
    assert_eq!(again.pages, 1);
    // ...and after more writes on A, only those.
    for i in 0..5 {
        a.put(format!("new{i}"), "n").await.unwrap();
    }
    a.delete("k0001").await.unwrap();
    let third = sync_once(&b, &a);
    assert_eq!(third.entries_received, 6, "{third:?}");
    assert_eq!(b.digest(), a.digest());
    assert_eq!(b.stats().vv.get(a_id), a.local_seq());
    let digest = b.digest();
    b.close().await.unwrap();
    let b = Cache::open(dir_b.path()).await.unwrap();
    assert_eq!(b.digest(), digest);
    assert_eq!(b.stats().vv.get(a_id), a.local_seq());
    b.close().await.unwrap();
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_durability_and_a_tiny_pending_bound_still_persist_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let options = CacheOptions::default()
        .with_durability(dice_core::Durability::Fsync)
        .with_max_pending_keys(4);
    let cache = Cache::open_with(dir.path(), options.clone()).await.unwrap();
    // Far more concurrent writers than the pending bound: they wait for room, none fails.
    let writes: Vec<_> = (0..500)
        .map(|i| cache.put(format!("p{i}"), format!("{i}")))
        .collect();
    let mut seqs: Vec<u64> = join_all(writes)
        .await
        .into_iter()
        .map(|r| r.unwrap().seq)
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=500).collect::<Vec<u64>>());
    assert_eq!(cache.stats().pending_keys, 0);
    let digest = cache.digest();
    drop(cache);

    let cache = open_when_unlocked(dir.path()).await;
    assert_eq!(cache.len(), 500);
    assert_eq!(cache.digest(), digest);
    assert_eq!(cache.get(b"p499").as_deref(), Some(&b"499"[..]));
    cache.close().await.unwrap();
}

/// Counts rows of `table` in the database of `dir` (the cache must be closed).
async fn count_rows(dir: &Path, table: &str) -> i64 {
    let mut conn = sqlite(&dir.join(dice_core::store::DB_FILE)).await;
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_fold_the_log_and_reopen_gives_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let options = CacheOptions::default()
        .with_snapshot_min_log_entries(64)
        .with_gc_grace(Duration::from_millis(50))
        // A lone cache waits one member horizon before it collects (see `Replica::gc`).
        .with_member_horizon(Duration::from_millis(1))
        .with_gc_interval(Duration::from_millis(20));
    let cache = Cache::open_with(dir.path(), options.clone()).await.unwrap();
    let model = write_workload(&cache, 3000).await;
    // Let GC drop the tombstones and expired entries: drops are logged too.
    eventually("GC of dead entries", || {
        cache.stats().replica.gc_dropped > 0
    })
    .await;
    cache.flush().await.unwrap();
    let writes = cache.local_seq();
    // Keep writing until the writer has switched snapshots a few times after the GC.
    let snapshots_before = cache.stats().snapshots;
    let mut i = 0;
    while cache.stats().snapshots < snapshots_before + 2 {
        cache
            .put(format!("more/{}", i % 100), format!("{i}"))
            .await
            .unwrap();
        i += 1;
        assert!(i < 100_000, "no snapshot after {i} more writes");
    }
    let stats = cache.stats();
    assert!(stats.snapshots >= 2, "{stats:?}");
    assert!(
        stats.log_entries < writes,
        "the log holds {} entries after {writes} writes",
        stats.log_entries
    );
    let before = snapshot(&cache);
    let (digest, vv, floors) = (cache.digest(), stats.vv.clone(), stats.floors.clone());
    let live = cache.len();
    eventually("the cleanup", || !cache.stats().cleanup_pending).await;
    cache.close().await.unwrap();
    // One snapshot generation is left, and the log holds only what came after it.
    let gens = count_rows(dir.path(), "(SELECT DISTINCT gen FROM snapshot)").await;
    assert_eq!(gens, 1);
    let log_rows = count_rows(dir.path(), "log").await;
    assert!(log_rows < stats.commits as i64, "{log_rows} log rows");

    let cache = Cache::open_with(dir.path(), options).await.unwrap();
    assert_eq!(cache.digest(), digest);
    assert_eq!(cache.len(), live);
    assert_eq!(cache.stats().vv, vv);
    assert_eq!(nonzero(&cache.stats().floors), nonzero(&floors));
    assert_eq!(snapshot(&cache), before);
    for (k, v) in &model {
        if v.is_none() {
            assert_eq!(cache.get(k), None, "deleted key {k:?} is back");
        }
    }
    let next = cache.put("after", "x").await.unwrap();
    assert_eq!(next.seq, cache.stats().vv.get(cache.node_id()));
    cache.close().await.unwrap();
}

#[tokio::test]
async fn a_version_1_data_dir_is_upgraded_and_keeps_its_entries() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(dice_core::store::DB_FILE);
    let node: i64 = 0x1234;
    {
        // A database as dice 0.1 (schema 1) left it.
        let mut conn = sqlite(&db).await;
        sqlx::query("PRAGMA application_id = 1145652037")
            .execute(&mut conn)
            .await
            .unwrap();
        let v1 = sqlx::migrate::Migrator::with_migrations(vec![sqlx::migrate::Migration::new(
            1,
            "init".into(),
            sqlx::migrate::MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(include_str!("../migrations/0001_init.sql")),
            false,
        )]);
        v1.run(&mut conn).await.unwrap();
        sqlx::query("INSERT INTO meta (name, value) VALUES ('node_id', ?1), ('hlc', ?2)")
            .bind(node)
            .bind(5_000_000_i64 << 16)
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO origins (origin, seq, floor) VALUES (?1, 2, 0)")
            .bind(node)
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO entries (key, value, hlc, origin, seq, expires_at) VALUES \
             (x'6b31', x'7631', ?1, ?2, 1, NULL), (x'6b32', NULL, ?3, ?2, 2, NULL)",
        )
        .bind(4_000_000_i64 << 16)
        .bind(node)
        .bind(4_000_001_i64 << 16)
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    let options = CacheOptions::default().with_snapshot_min_log_entries(1);
    let cache = Cache::open_with(dir.path(), options.clone()).await.unwrap();
    assert_eq!(cache.node_id().as_u64(), node as u64);
    assert_eq!(cache.get(b"k1").as_deref(), Some(&b"v1"[..]));
    assert_eq!(cache.get(b"k2"), None);
    assert_eq!(cache.entry(b"k2").unwrap().seq, 2);
    assert_eq!(cache.local_seq(), 2);
    // A write makes the log big enough for a snapshot, which empties the old table.
    let e = cache.put("k3", "v3").await.unwrap();
    assert_eq!(e.seq, 3);
    eventually("a snapshot", || cache.stats().snapshots > 0).await;
    // The old table is ignored from then on, and emptied a little at a time.
    eventually("the cleanup", || !cache.stats().cleanup_pending).await;
    cache.close().await.unwrap();
    assert_eq!(count_rows(dir.path(), "entries").await, 0);

    let cache = Cache::open_with(dir.path(), options).await.unwrap();
    assert_eq!(cache.get(b"k1").as_deref(), Some(&b"v1"[..]));
    assert_eq!(cache.get(b"k3").as_deref(), Some(&b"v3"[..]));
    assert_eq!(cache.entry(b"k2").unwrap().seq, 2);
    assert_eq!(cache.local_seq(), 3);
    cache.close().await.unwrap();
}

#[tokio::test]
async fn a_damaged_log_row_is_a_clear_error_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    cache.put("k", "v").await.unwrap();
    cache.close().await.unwrap();
    let db = dir.path().join(dice_core::store::DB_FILE);
    let mut conn = sqlite(&db).await;
    sqlx::query("UPDATE log SET batch = x'01ffffffffffffff'")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let err = Cache::open(dir.path()).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("table log, row id"), "{err}");
    // Refusing it changed nothing: the same error again.
    let again = Cache::open(dir.path()).await.unwrap_err();
    assert!(matches!(again, Error::Corrupt { .. }), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_snapshots_of_large_values_are_split_into_bounded_rows() {
    let dir = tempfile::tempdir().unwrap();
    let options = CacheOptions::default().with_snapshot_min_log_entries(16);
    let cache = Cache::open_with(dir.path(), options.clone()).await.unwrap();
    let big = |i: usize| Bytes::from(vec![(i % 251) as u8; 1024 * 1024 - i]);
    // 40 values of ~1 MiB written at once: one group of ~40 MiB.
    let mut pending = Vec::new();
    for i in 0..40 {
        let (_, generation) = cache
            .write_unacked(Bytes::from(format!("big/{i}")), Some(big(i)), None)
            .await
            .unwrap();
        pending.push(generation);
    }
    cache.flush().await.unwrap();
    assert!(
        cache.stats().commits < 40,
        "the writes should share group commits"
    );
    eventually("a snapshot", || cache.stats().snapshots > 0).await;
    eventually("the cleanup", || !cache.stats().cleanup_pending).await;
    cache.close().await.unwrap();
    // No row holds much more than 8 MiB.
    let mut conn = sqlite(&dir.path().join(dice_core::store::DB_FILE)).await;
    let largest: i64 = sqlx::query_scalar(
        "SELECT max(n) FROM (SELECT length(batch) AS n FROM log \
         UNION ALL SELECT length(chunk) AS n FROM snapshot)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    assert!(largest < 10 << 20, "a row of {largest} bytes");
    assert!(largest > 1 << 20, "no large row at all: {largest} bytes");

    let cache = Cache::open_with(dir.path(), options).await.unwrap();
    for i in 0..40 {
        let v = cache.get(format!("big/{i}").as_bytes()).unwrap();
        assert_eq!(v, big(i), "big/{i}");
    }
    cache.close().await.unwrap();
}
