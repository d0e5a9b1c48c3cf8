//! Stored rows carry checksums: a byte changed inside a log row or a snapshot chunk is a clear
//! error on open that names the row and says what to do, and rows written by older versions
//! (blob format 1, before checksums; format 2, before elements; formats 3 to 5, before hash
//! fields, sets and field counters) still load.
#![allow(clippy::unwrap_used)]

use dice_core::{Cache, CacheOptions, Elem, Entry, Error, Increment, Version, VersionVector};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use std::path::Path;

async fn sqlite(dir: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(dir.join(dice_core::store::DB_FILE))
        .connect()
        .await
        .unwrap()
}

fn held(cache: &Cache) -> Vec<Entry> {
    let mut all: Vec<Entry> = cache.with_replica(|r| r.entries().collect());
    all.sort_by(|a, b| (&a.key, a.elem).cmp(&(&b.key, b.elem)));
    all
}

/// A data dir with a few log rows and no snapshot.
async fn dir_with_log_rows() -> (tempfile::TempDir, Vec<Entry>) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    for i in 0..5 {
        cache
            .put(format!("key-{i}"), format!("value-{i}-xxxxxxxx"))
            .await
            .unwrap();
    }
    let entries = held(&cache);
    cache.close().await.unwrap();
    (dir, entries)
}

/// A data dir whose state is in a finished snapshot (and maybe a few log rows after it).
async fn dir_with_snapshot() -> (tempfile::TempDir, i64) {
    let dir = tempfile::tempdir().unwrap();
    let options = CacheOptions::default().with_snapshot_min_log_entries(16);
    let cache = Cache::open_with(dir.path(), options).await.unwrap();
    let mut i = 0;
    while cache.stats().snapshots == 0 {
        cache
            .put(format!("key-{}", i % 40), format!("value-{i}"))
            .await
            .unwrap();
        i += 1;
        assert!(i < 100_000, "no snapshot after {i} writes");
    }
    cache.close().await.unwrap();
    let mut conn = sqlite(dir.path()).await;
    let gen_: i64 = sqlx::query_scalar("SELECT value FROM meta WHERE name = 'snapshot_gen'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    (dir, gen_)
}

/// Flips the bits of the byte at `at` (counted from the blob's end when negative) in the blob
/// of one row.
async fn flip(dir: &Path, table: &str, column: &str, id: i64, at: isize) {
    let mut conn = sqlite(dir).await;
    let mut blob: Vec<u8> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {column} FROM {table} WHERE id = ?1"
    )))
    .bind(id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let at = if at < 0 {
        blob.len() - at.unsigned_abs()
    } else {
        at as usize
    };
    blob[at] ^= 0xff;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET {column} = ?1 WHERE id = ?2"
    )))
    .bind(blob)
    .bind(id)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
}

fn assert_corrupt(err: &Error, names: &str) {
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(names), "{msg}");
    assert!(msg.contains("checksum does not match"), "{msg}");
    assert!(msg.contains("resyncs the data from its peers"), "{msg}");
    assert!(msg.contains(dice_core::store::DB_FILE), "{msg}");
}

#[tokio::test]
async fn a_flipped_byte_in_a_log_row_is_named_on_open() {
    // A byte inside a value (near the end of the row), one in the checksum itself, and one in
    // the row's header: each is caught, and names its row.
    for at in [-30isize, 3, 9] {
        let (dir, _) = dir_with_log_rows().await;
        let mut conn = sqlite(dir.path()).await;
        let id: i64 = sqlx::query_scalar("SELECT id FROM log ORDER BY id LIMIT 1 OFFSET 2")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        flip(dir.path(), "log", "batch", id, at).await;
        let err = Cache::open(dir.path()).await.unwrap_err();
        assert_corrupt(&err, &format!("table log, row id {id}:"));
        // Refusing it changed nothing: the same error again.
        let again = Cache::open(dir.path()).await.unwrap_err();
        assert_eq!(again.to_string(), err.to_string());
    }
}

#[tokio::test]
async fn a_flipped_byte_in_the_newest_log_row_is_named_on_open() {
    // The newest row is read first (to size the map): its check must name it too.
    let (dir, _) = dir_with_log_rows().await;
    let mut conn = sqlite(dir.path()).await;
    let id: i64 = sqlx::query_scalar("SELECT max(id) FROM log")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    flip(dir.path(), "log", "batch", id, -5).await;
    let err = Cache::open(dir.path()).await.unwrap_err();
    assert_corrupt(&err, &format!("table log, row id {id}:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_snapshot_chunk_is_named_on_open() {
    let (dir, gen_) = dir_with_snapshot().await;
    let mut conn = sqlite(dir.path()).await;
    let id: i64 = sqlx::query_scalar("SELECT min(id) FROM snapshot WHERE gen = ?1")
        .bind(gen_)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    flip(dir.path(), "snapshot", "chunk", id, -3).await;
    let err = Cache::open(dir.path()).await.unwrap_err();
    assert_corrupt(
        &err,
        &format!("table snapshot, generation {gen_}, chunk row id {id}:"),
    );
}

/// A log row of format 3, as stored.
#[derive(Deserialize)]
struct Row3 {
    hlc: u64,
    entries: u64,
    vv: VersionVector,
    floors: VersionVector,
    removed: Vec<(ByteBuf, Elem)>,
    set: Vec<Entry>,
}

/// A log row of formats 1 and 2: keys only.
#[derive(Serialize)]
struct Row2 {
    hlc: u64,
    entries: u64,
    vv: VersionVector,
    floors: VersionVector,
    removed: Vec<ByteBuf>,
    set: Vec<Entry2>,
}

/// An entry of formats 1 and 2: a key's string.
#[derive(Serialize)]
struct Entry2 {
    key: ByteBuf,
    value: Option<ByteBuf>,
    version: Version,
    seq: u64,
    expires_at_ms: Option<u64>,
}

fn entry2(e: Entry) -> Entry2 {
    assert_eq!(e.elem, Elem::Key, "only strings exist in the old formats");
    Entry2 {
        key: ByteBuf::from(e.key.to_vec()),
        value: e.value.map(|v| ByteBuf::from(v.to_vec())),
        version: e.version,
        seq: e.seq,
        expires_at_ms: e.expires_at_ms,
    }
}

/// A blob of format 3 rewritten in `format` (1: no checksum; 2: checksummed), entries in the
/// layout of those formats.
fn old_blob(table: &str, blob: &[u8], format: u8) -> Vec<u8> {
    assert_eq!(blob[0], 6, "{table}: not in format 6");
    let body = &blob[9..];
    let old_body = if table == "log" {
        let row: Row3 = postcard::from_bytes(body).unwrap();
        postcard::to_allocvec(&Row2 {
            hlc: row.hlc,
            entries: row.entries,
            vv: row.vv,
            floors: row.floors,
            removed: row
                .removed
                .into_iter()
                .map(|(k, e)| {
                    assert_eq!(e, Elem::Key);
                    k
                })
                .collect(),
            set: row.set.into_iter().map(entry2).collect(),
        })
        .unwrap()
    } else {
        let chunk: Vec<Entry> = postcard::from_bytes(body).unwrap();
        postcard::to_allocvec(&chunk.into_iter().map(entry2).collect::<Vec<_>>()).unwrap()
    };
    let mut out = vec![format];
    if format == 2 {
        out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&old_body).to_le_bytes());
    }
    out.extend_from_slice(&old_body);
    out
}

/// Rewrites every stored blob in the format before checksums: format byte 1, then the body.
async fn downgrade_blobs(dir: &Path) -> usize {
    downgrade_blobs_to(dir, 1).await
}

/// Rewrites every stored blob in an older `format`, and the schema version to 2, as a data
/// dir of an older dice holds them.
async fn downgrade_blobs_to(dir: &Path, format: u8) -> usize {
    let mut conn = sqlite(dir).await;
    let mut n = 0;
    for (table, column) in [("log", "batch"), ("snapshot", "chunk")] {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, {column} FROM {table}"
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for (id, blob) in rows {
            let old = old_blob(table, &blob, format);
            let _ = id;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET {column} = ?1 WHERE id = ?2"
            )))
            .bind(old)
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
            n += 1;
        }
    }
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version > 2")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM meta WHERE name = 'blob_format'")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}

/// A data dir written by the previous dice (blob format 2, schema 2) opens as it was, takes
/// counters, and reads back the same after a restart, old and new rows together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_the_previous_format_upgrades_on_open() {
    let (dir, entries) = dir_with_log_rows().await;
    assert!(downgrade_blobs_to(dir.path(), 2).await >= 5);
    let (snap, _) = dir_with_snapshot().await;
    let before_snap = {
        let cache = Cache::open(snap.path()).await.unwrap();
        let e = held(&cache);
        cache.close().await.unwrap();
        e
    };
    assert!(downgrade_blobs_to(snap.path(), 2).await >= 1);
    let cache = Cache::open(snap.path()).await.unwrap();
    assert_eq!(held(&cache), before_snap);
    cache.close().await.unwrap();

    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(held(&cache), entries);
    cache.put("n", "41").await.unwrap();
    assert_eq!(
        cache.incr("n", Increment::Int(1)).await.unwrap().as_ref(),
        b"42"
    );
    assert_eq!(
        cache.incr("c", Increment::Int(-3)).await.unwrap().as_ref(),
        b"-3"
    );
    let digest = cache.digest();
    let entries = held(&cache);
    cache.close().await.unwrap();
    let mut conn = sqlite(dir.path()).await;
    let formats: Vec<Vec<u8>> = sqlx::query_scalar("SELECT substr(batch, 1, 1) FROM log")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let schema: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert_eq!(schema, dice_core::store::SCHEMA_VERSION);
    assert!(formats.contains(&vec![2u8]) && formats.contains(&vec![6u8]));
    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(held(&cache), entries);
    assert_eq!(cache.digest(), digest);
    assert_eq!(cache.get(b"n").as_deref(), Some(&b"42"[..]));
    assert_eq!(cache.get(b"c").as_deref(), Some(&b"-3"[..]));
    cache.close().await.unwrap();
}

/// Rewrites every stored blob as dice of format 3 wrote it (the same body, as no hash field
/// or set element is stored yet) and the schema version to 3.
async fn downgrade_to_format_3(dir: &Path) -> usize {
    downgrade_to_format(dir, 3).await
}

/// Rewrites every stored blob as dice of blob format and schema `format` (3 to 5) wrote it:
/// the same body, as nothing that format lacks is stored yet.
async fn downgrade_to_format(dir: &Path, format: u8) -> usize {
    let mut conn = sqlite(dir).await;
    let mut n = 0;
    for (table, column) in [("log", "batch"), ("snapshot", "chunk")] {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, {column} FROM {table}"
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for (id, mut blob) in rows {
            assert!(blob[0] >= format, "{table}: format {}", blob[0]);
            if blob[0] > format {
                blob[0] = format;
            }
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET {column} = ?1 WHERE id = ?2"
            )))
            .bind(blob)
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
            n += 1;
        }
    }
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version > ?1")
        .bind(i64::from(format))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE meta SET value = ?1 WHERE name = 'blob_format'")
        .bind(i64::from(format))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}

/// A data dir written by the previous dice (blob format 3, schema 3: strings and counters)
/// opens as it was, takes hashes, and reads back the same after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_format_3_upgrades_on_open_and_takes_hashes() {
    let (dir, entries) = dir_with_log_rows().await;
    {
        let cache = Cache::open(dir.path()).await.unwrap();
        cache.incr("c", Increment::Int(5)).await.unwrap();
        cache.close().await.unwrap();
    }
    let entries = {
        let cache = Cache::open(dir.path()).await.unwrap();
        let all = held(&cache);
        assert!(all.len() > entries.len());
        cache.close().await.unwrap();
        all
    };
    assert!(downgrade_to_format_3(dir.path()).await >= 5);
    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(held(&cache), entries);
    let (written, generation) = cache
        .transact(|tx| {
            tx.modify(|r, now| {
                r.hset(
                    "h".into(),
                    &[("f".into(), "v".into()), ("g".into(), "w".into())],
                    false,
                    now,
                )
            })
        })
        .await
        .unwrap();
    assert_eq!(written.unwrap(), 2);
    cache.wait_committed(generation.unwrap()).await.unwrap();
    let digest = cache.digest();
    let entries = held(&cache);
    cache.close().await.unwrap();
    let mut conn = sqlite(dir.path()).await;
    let formats: Vec<Vec<u8>> = sqlx::query_scalar("SELECT substr(batch, 1, 1) FROM log")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let schema: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert_eq!(schema, 6);
    assert!(formats.contains(&vec![3u8]) && formats.contains(&vec![6u8]));
    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(held(&cache), entries);
    assert_eq!(cache.digest(), digest);
    assert_eq!(cache.get(b"c").as_deref(), Some(&b"5"[..]));
    cache.with_replica(|r| {
        let now = dice_core::now_ms();
        assert_eq!(r.hget(b"h", b"f", now).unwrap(), Some(&b"v"[..]));
        assert_eq!(r.hlen(b"h", now).unwrap(), 2);
    });
    cache.close().await.unwrap();
}

/// A data dir written by the previous dice (blob format 4, schema 4: strings, counters and
/// hashes) opens as it was, takes sets, and reads back the same after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_format_4_upgrades_on_open_and_takes_sets() {
    let (dir, _) = dir_with_log_rows().await;
    {
        let cache = Cache::open(dir.path()).await.unwrap();
        let (_, generation) = cache
            .transact(|tx| {
                tx.modify(|r, now| r.hset("h".into(), &[("f".into(), "v".into())], false, now))
            })
            .await
            .unwrap();
        cache.wait_committed(generation.unwrap()).await.unwrap();
        cache.close().await.unwrap();
    }
    let entries = {
        let cache = Cache::open(dir.path()).await.unwrap();
        let all = held(&cache);
        cache.close().await.unwrap();
        all
    };
    assert!(downgrade_to_format(dir.path(), 4).await >= 5);
    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(held(&cache), entries);
    let (added, generation) = cache
        .transact(|tx| {
            tx.modify(|r, now| r.sadd("s".into(), &["a".into(), "b".into(), "c".into()], now))
        })
        .await
        .unwrap();
    assert_eq!(added.unwrap(), 3);
    cache.wait_committed(generation.unwrap()).await.unwrap();
    let (removed, generation) = cache
        .transact(|tx| tx.modify(|r, now| r.srem("s".into(), &["b".into()], now)))
        .await
        .unwrap();
    assert_eq!(removed.unwrap(), 1);
    cache.wait_committed(generation.unwrap()).await.unwrap();
    let digest = cache.digest();
    let entries = held(&cache);
    cache.close().await.unwrap();
    let mut conn = sqlite(dir.path()).await;
    let formats: Vec<Vec<u8>> = sqlx::query_scalar("SELECT substr(batch, 1, 1) FROM log")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let schema: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert_eq!(schema, 6);
    assert!(formats.contains(&vec![4u8]) && formats.contains(&vec![6u8]));
    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(held(&cache), entries);
    assert_eq!(cache.digest(), digest);
    cache.with_replica(|r| {
        let now = dice_core::now_ms();
        assert_eq!(r.hget(b"h", b"f", now).unwrap(), Some(&b"v"[..]));
        let mut members = r.smembers(b"s", now).unwrap();
        members.sort();
        assert_eq!(members, vec![&b"a"[..], &b"c"[..]]);
        assert_eq!(r.key_type(b"s", now).unwrap().name(), "set");
    });
    cache.close().await.unwrap();
}

#[tokio::test]
async fn rows_of_the_format_before_checksums_still_load() {
    let (dir, entries) = dir_with_log_rows().await;
    assert!(downgrade_blobs(dir.path()).await >= 5);
    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(held(&cache), entries);
    // New rows get the checksum; old and new rows load together.
    cache.put("after", "upgrade").await.unwrap();
    let entries = held(&cache);
    cache.close().await.unwrap();
    let mut conn = sqlite(dir.path()).await;
    let formats: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT id, substr(batch, 1, 1) FROM log")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let newest = formats.iter().max_by_key(|(id, _)| *id).unwrap();
    assert_eq!(newest.1, vec![6u8], "{formats:?}");
    assert!(formats.iter().any(|(_, f)| f == &vec![1u8]), "{formats:?}");
    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(held(&cache), entries);
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_chunks_of_the_format_before_checksums_still_load() {
    let (dir, _) = dir_with_snapshot().await;
    let cache = Cache::open(dir.path()).await.unwrap();
    let entries = held(&cache);
    cache.close().await.unwrap();
    assert!(downgrade_blobs(dir.path()).await >= 1);
    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(held(&cache), entries);
    cache.close().await.unwrap();
}

/// A field's tombstone keeps the timestamp it observed across restarts (in the expiry slot
/// every blob format stores), so an update concurrent with the `HDEL` still wins after one;
/// a tombstone written before sync protocol 6 (none carried) still merges by its version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_tombstone_keeps_what_it_observed_across_restarts() {
    use dice_core::entry::{FieldId, encode_field};
    use dice_core::{Hlc, NodeId};
    let dir = tempfile::tempdir().unwrap();
    let field = Elem::Field(FieldId::of(b"f"));
    let legacy = Elem::Field(FieldId::of(b"g"));
    let peer = NodeId::new(0x77).unwrap();
    let remote =
        |name: &str, value: Option<&str>, hlc: u64, seq: u64, observed: Option<u64>| Entry {
            key: "h".into(),
            elem: Elem::Field(FieldId::of(name.as_bytes())),
            value: value.map(|v| encode_field(name.as_bytes(), v.as_bytes())),
            version: Version {
                hlc: Hlc::from_u64(hlc),
                origin: peer,
            },
            seq,
            expires_at_ms: observed,
        };
    let (observed, deleted_at) = {
        let cache = Cache::open(dir.path()).await.unwrap();
        let (_, generation) = cache
            .transact(|tx| {
                tx.modify(|r, now| r.hset("h".into(), &[("f".into(), "v".into())], false, now))
            })
            .await
            .unwrap();
        cache.wait_committed(generation.unwrap()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let (_, generation) = cache
            .transact(|tx| tx.modify(|r, now| r.hdel("h".into(), &["f".into()], now)))
            .await
            .unwrap();
        cache.wait_committed(generation.unwrap()).await.unwrap();
        let tomb = cache.with_replica(|r| r.element(b"h", field)).unwrap();
        assert!(tomb.value.is_none());
        let observed = tomb.expires_at_ms.unwrap();
        assert!(observed < tomb.version.hlc.as_u64());
        // A legacy tombstone of field g, then an older value of g from the same peer, late:
        // the tombstone wins by its version.
        let (_, generation) = cache
            .transact(|tx| {
                tx.modify(|r, now| {
                    r.apply(remote("g", None, observed - 1, 2, None), now)?;
                    r.apply(remote("g", Some("x"), observed - 2, 1, None), now)
                })
            })
            .await
            .unwrap();
        cache.wait_committed(generation.unwrap()).await.unwrap();
        cache.close().await.unwrap();
        (observed, tomb.version.hlc.as_u64())
    };
    let cache = Cache::open(dir.path()).await.unwrap();
    let tomb = cache.with_replica(|r| r.element(b"h", field)).unwrap();
    assert_eq!(tomb.expires_at_ms, Some(observed));
    let g = cache.with_replica(|r| r.element(b"h", legacy)).unwrap();
    assert!(g.value.is_none() && g.expires_at_ms.is_none());
    // An update of f made apart, after the value the HDEL saw, before the HDEL itself: wins.
    let between = observed + (deleted_at - observed) / 2;
    assert!(observed < between && between < deleted_at);
    let (won, generation) = cache
        .transact(|tx| tx.modify(|r, now| r.apply(remote("f", Some("new"), between, 3, None), now)))
        .await
        .unwrap();
    assert!(won.unwrap());
    cache.wait_committed(generation.unwrap()).await.unwrap();
    let now = dice_core::now_ms();
    cache.with_replica(|r| {
        assert_eq!(r.hget(b"h", b"f", now).unwrap(), Some(&b"new"[..]));
        assert_eq!(r.hget(b"h", b"g", now).unwrap(), None);
    });
    let entries = held(&cache);
    cache.close().await.unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(held(&cache), entries);
    cache.with_replica(|r| {
        assert_eq!(r.hget(b"h", b"f", now).unwrap(), Some(&b"new"[..]));
    });
    cache.close().await.unwrap();
}

/// A data dir written by the previous dice (blob format 5, schema 5: strings, counters, hashes
/// and sets) opens as it was, takes fields as counters, and reads back the same after a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_format_5_upgrades_on_open_and_takes_field_counters() {
    let (dir, _) = dir_with_log_rows().await;
    {
        let cache = Cache::open(dir.path()).await.unwrap();
        let (_, generation) = cache
            .transact(|tx| {
                tx.modify(|r, now| {
                    r.hset("h".into(), &[("f".into(), "v".into())], false, now)?;
                    r.sadd("s".into(), &["a".into()], now)
                })
            })
            .await
            .unwrap();
        cache.wait_committed(generation.unwrap()).await.unwrap();
        cache.close().await.unwrap();
    }
    let entries = {
        let cache = Cache::open(dir.path()).await.unwrap();
        let all = held(&cache);
        cache.close().await.unwrap();
        all
    };
    assert!(downgrade_to_format(dir.path(), 5).await >= 5);
    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(held(&cache), entries);
    for by in [5, -2] {
        let (_, generation) = cache
            .transact(|tx| {
                tx.modify(|r, now| r.hincr("h".into(), "n".into(), Increment::Int(by), now))
            })
            .await
            .unwrap();
        cache.wait_committed(generation.unwrap()).await.unwrap();
    }
    assert!(
        held(&cache)
            .iter()
            .any(|e| matches!(e.elem, Elem::FieldCount(..))),
        "HINCRBY wrote a field counter element"
    );
    let digest = cache.digest();
    let entries = held(&cache);
    cache.close().await.unwrap();
    let mut conn = sqlite(dir.path()).await;
    let formats: Vec<Vec<u8>> = sqlx::query_scalar("SELECT substr(batch, 1, 1) FROM log")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let schema: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert_eq!(schema, 6);
    assert!(formats.contains(&vec![5u8]) && formats.contains(&vec![6u8]));
    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(held(&cache), entries);
    assert_eq!(cache.digest(), digest);
    cache.with_replica(|r| {
        let now = dice_core::now_ms();
        assert_eq!(r.hget(b"h", b"f", now).unwrap(), Some(&b"v"[..]));
        assert_eq!(r.hget(b"h", b"n", now).unwrap(), Some(&b"3"[..]));
        assert_eq!(r.hlen(b"h", now).unwrap(), 2);
    });
    cache.close().await.unwrap();
}
