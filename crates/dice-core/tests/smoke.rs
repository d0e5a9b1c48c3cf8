//! Quick end-to-end checks of the persistent cache.
#![allow(clippy::unwrap_used)]

use dice_core::{Cache, CacheOptions, Error, ManualClock};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn put_get_reopen_keeps_state_and_clock() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    let id = cache.node_id();
    for i in 0..1000u32 {
        cache.put(format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    cache.delete("k5").await.unwrap();
    let last = cache.put("last", "x").await.unwrap();
    let digest = cache.digest();
    let seq = cache.local_seq();
    cache.close().await.unwrap();

    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(cache.node_id(), id);
    assert_eq!(cache.digest(), digest);
    assert_eq!(cache.len(), 1000);
    assert_eq!(cache.get(b"k5"), None);
    assert_eq!(cache.get(b"k7").unwrap().as_ref(), b"v7");
    assert_eq!(cache.local_seq(), seq);
    let next = cache.put("after", "y").await.unwrap();
    assert_eq!(next.seq, seq + 1);
    assert!(next.version > last.version);
}

#[tokio::test]
async fn second_open_of_a_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _cache = Cache::open(dir.path()).await.unwrap();
    let err = Cache::open(dir.path()).await.unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use by another dice process"));
}

#[tokio::test]
async fn ttl_expires() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let options = CacheOptions::default().with_clock(clock.clone());
    let cache = Cache::open_with(dir.path(), options).await.unwrap();
    cache
        .put_with_ttl("t", "v", Duration::from_millis(50))
        .await
        .unwrap();
    clock.advance(Duration::from_millis(49));
    assert!(cache.get(b"t").is_some(), "alive until its expiry");
    assert_eq!(cache.len(), 1);
    clock.advance(Duration::from_millis(1));
    assert!(cache.get(b"t").is_none(), "gone at its expiry");
    assert_eq!(cache.len(), 0);
}
