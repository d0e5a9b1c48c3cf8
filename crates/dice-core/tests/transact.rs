//! `Cache::transact`: several writes under one hold of the lock, one group commit.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use dice_core::{Cache, ChangeSource};

#[tokio::test]
async fn writes_of_a_transaction_share_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    let mut events = cache.subscribe();
    let before = cache.stats().commits;
    let (n, generation) = cache
        .transact(|tx| {
            for i in 0..10 {
                tx.write(format!("k{i}").into(), Some(Bytes::from("v")), None)
                    .unwrap();
            }
            // Reads see the transaction's own writes.
            assert_eq!(tx.get(b"k3"), Some(&b"v"[..]));
            tx.replica().live_len(tx.now_ms())
        })
        .await
        .unwrap();
    assert_eq!(n, 10);
    cache.wait_committed(generation.unwrap()).await.unwrap();
    assert_eq!(cache.stats().commits - before, 1, "one group commit");
    assert_eq!(cache.stats().pending_keys, 0);
    for _ in 0..10 {
        assert_eq!(events.recv().await.unwrap().source, ChangeSource::Local);
    }

    // No write: no generation, nothing to commit.
    let (found, generation) = cache
        .transact(|tx| tx.get(b"k1").map(<[u8]>::to_vec))
        .await
        .unwrap();
    assert_eq!(found.as_deref(), Some(&b"v"[..]));
    assert!(generation.is_none());

    // A write refused by the limits fails alone; the others of the transaction stand.
    let (result, generation) = cache
        .transact(|tx| {
            tx.write("ok".into(), Some(Bytes::from("1")), None)?;
            tx.write(Bytes::new(), Some(Bytes::from("1")), None)
        })
        .await
        .unwrap();
    assert!(result.is_err());
    cache.wait_committed(generation.unwrap()).await.unwrap();
    assert_eq!(cache.get(b"ok").as_deref(), Some(&b"1"[..]));
    cache.close().await.unwrap();
}
