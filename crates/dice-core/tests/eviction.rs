//! The memory limit: each policy evicts what it should and keeps memory bounded, `noeviction`
//! refuses writes that add data while reads and deletes go on, and evictions replicate so
//! that replicas converge and no evicted key comes back from an older copy.
#![allow(clippy::unwrap_used)]

mod common;
use bytes::Bytes;
use common::catch_up;
use dice_core::evict::{MemoryLimit, Policy};
use dice_core::{Cache, CacheOptions, Error, Increment, Limits, NodeId, Replica};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const T0: u64 = 1_700_000_000_000;

fn kname(i: usize) -> Bytes {
    Bytes::from(format!("key:{i:06}"))
}

fn value(n: usize) -> Bytes {
    Bytes::from(vec![b'v'; n])
}

async fn cache_with(policy: Policy, max_bytes: u64) -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let options = CacheOptions::default().with_memory_limit(
        MemoryLimit::default()
            .with_max_bytes(max_bytes)
            .with_policy(policy)
            .with_samples(10),
    );
    let cache = Cache::open_with(dir.path(), options).await.unwrap();
    (dir, cache)
}

/// Writes `n` keys of 1 KiB (with a TTL from `ttl_from` on), in pipelined groups.
async fn fill(cache: &Cache, range: std::ops::Range<usize>, ttl_from: Option<usize>) {
    let mut last = None;
    for i in range {
        let ttl = ttl_from
            .filter(|&t| i >= t)
            .map(|_| dice_core::now_ms() + 3_600_000);
        let (_, g) = cache
            .write_unacked(kname(i), Some(value(1000)), ttl)
            .await
            .unwrap();
        last = Some(g);
    }
    if let Some(g) = last {
        cache.wait_committed(g).await.unwrap();
    }
}

const MAX: u64 = 2 << 20;

#[tokio::test]
async fn noeviction_refuses_writes_but_reads_and_deletes_go_on() {
    let (_d, cache) = cache_with(Policy::NoEviction, MAX).await;
    let mut refused_at = None;
    for i in 0..10_000 {
        match cache.put(kname(i), value(1000)).await {
            Ok(_) => {}
            Err(Error::OutOfMemory) => {
                refused_at = Some(i);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let n = refused_at.expect("a 2 MiB limit refuses writes before 10 MB");
    assert!(n > 500, "only {n} keys of 1 KiB fit in 2 MiB");
    assert!(cache.memory_usage().total() as u64 > MAX - 4096);
    // Reads go on, the refused write happened nowhere, deletes go on and make room.
    assert_eq!(cache.get(&kname(0)).unwrap(), value(1000));
    assert_eq!(cache.get(&kname(n)), None);
    assert!(matches!(
        cache.incr("c", Increment::Int(1)).await,
        Err(Error::OutOfMemory)
    ));
    for i in 0..100 {
        assert!(cache.delete(kname(i)).await.unwrap());
    }
    // Tombstones of a node alone cost what they cost: the deletes freed the values.
    cache.put(kname(n), value(1000)).await.unwrap();
    assert_eq!(cache.stats().replica.evicted_keys, 0);
    cache.close().await.unwrap();
}

async fn assert_bounded(cache: &Cache) {
    let used = cache.memory_usage().total() as u64;
    assert!(used <= MAX + MAX / 10, "used {used} past {MAX}");
}

/// Sampled LRU is an approximation (as Redis's is): the keys in use survive a flood of ten
/// times the limit nearly all, where a random choice would keep one in ten.
#[tokio::test]
async fn allkeys_lru_keeps_the_keys_in_use() {
    let (_d, cache) = cache_with(Policy::AllKeysLru, MAX).await;
    fill(&cache, 0..100, None).await;
    // Ten times the limit of other keys, while the first hundred are read all along.
    for round in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        for i in 0..100 {
            cache.get(&kname(i));
        }
        fill(&cache, 100 + round * 200..100 + (round + 1) * 200, None).await;
    }
    let hot = (0..100).filter(|&i| cache.get(&kname(i)).is_some()).count();
    assert!(hot >= 90, "only {hot} of the 100 hot keys left");
    assert_bounded(&cache).await;
    let stats = cache.stats();
    assert!(stats.replica.evicted_keys > 15_000, "{:?}", stats.replica);
    assert!(stats.keys < 2_100);
    cache.close().await.unwrap();
}

#[tokio::test]
async fn allkeys_lfu_keeps_the_keys_used_often() {
    let (_d, cache) = cache_with(Policy::AllKeysLfu, MAX).await;
    fill(&cache, 0..100, None).await;
    for _ in 0..50 {
        for i in 0..100 {
            cache.get(&kname(i));
        }
    }
    fill(&cache, 100..20_000, None).await;
    // A random choice would keep about one in ten.
    let hot = (0..100).filter(|&i| cache.get(&kname(i)).is_some()).count();
    assert!(hot >= 75, "only {hot} of the 100 hot keys left");
    assert_bounded(&cache).await;
    cache.close().await.unwrap();
}

#[tokio::test]
async fn allkeys_random_evicts_any_key_and_stays_bounded() {
    let (_d, cache) = cache_with(Policy::AllKeysRandom, MAX).await;
    fill(&cache, 0..20_000, None).await;
    assert_bounded(&cache).await;
    let early = (0..1000)
        .filter(|&i| cache.get(&kname(i)).is_some())
        .count();
    let late = (19_000..20_000)
        .filter(|&i| cache.get(&kname(i)).is_some())
        .count();
    assert!(early < 500 && late > early, "early {early}, late {late}");
    cache.close().await.unwrap();
}

/// The `volatile-*` policies evict only keys with an expiry; when none is left, writes are
/// refused as under `noeviction`.
#[tokio::test]
async fn volatile_policies_evict_only_keys_with_an_expiry() {
    for policy in [
        Policy::VolatileLru,
        Policy::VolatileLfu,
        Policy::VolatileRandom,
        Policy::VolatileTtl,
    ] {
        let (_d, cache) = cache_with(policy, MAX).await;
        fill(&cache, 0..500, None).await; // persistent: never evicted
        fill(&cache, 500..5_000, Some(500)).await;
        assert_bounded(&cache).await;
        for i in 0..500 {
            assert!(
                cache.get(&kname(i)).is_some(),
                "{policy}: persistent key {i} evicted"
            );
        }
        assert!(cache.stats().replica.evicted_keys > 2_000, "{policy}");
        // Only persistent keys: nothing to evict, writes refused.
        let mut refused = false;
        for i in 5_000..8_000 {
            match cache.put(kname(i), value(1000)).await {
                Ok(_) => {}
                Err(Error::OutOfMemory) => {
                    refused = true;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        // Keys with a TTL may remain a while; at the end none is left and writes fail.
        assert!(refused, "{policy}: writes never refused");
        for i in 0..500 {
            assert!(
                cache.get(&kname(i)).is_some(),
                "{policy}: persistent key {i} evicted"
            );
        }
        cache.close().await.unwrap();
    }
}

#[tokio::test]
async fn volatile_ttl_evicts_the_nearest_expiry_first() {
    let (_d, cache) = cache_with(Policy::VolatileTtl, MAX).await;
    let now = dice_core::now_ms();
    // Key i expires at now + 1 h + i s: the lowest go first.
    for i in 0..5_000 {
        let _ticket = cache
            .write_unacked(
                kname(i),
                Some(value(1000)),
                Some(now + 3_600_000 + i as u64 * 1000),
            )
            .await
            .unwrap();
    }
    cache.flush().await.unwrap();
    let kept: Vec<usize> = (0..5_000)
        .filter(|&i| cache.get(&kname(i)).is_some())
        .collect();
    assert!(!kept.is_empty());
    let first = kept[0];
    assert!(first > 2_000, "first kept key {first}");
    assert_eq!(kept.len(), 5_000 - first, "evicted out of expiry order");
    cache.close().await.unwrap();
}

#[tokio::test]
async fn limits_change_at_run_time() {
    let (_d, cache) = cache_with(Policy::NoEviction, 0).await;
    fill(&cache, 0..5_000, None).await;
    assert!(cache.memory_usage().total() as u64 > 4 * MAX / 2);
    cache.set_memory_limit(
        MemoryLimit::default()
            .with_max_bytes(MAX)
            .with_policy(Policy::AllKeysLru)
            .with_samples(5),
    );
    // Each write evicts a bounded batch; a few writes bring it under.
    fill(&cache, 5_000..5_200, None).await;
    assert_bounded(&cache).await;
    assert_eq!(cache.memory_limit().policy, Policy::AllKeysLru);
    cache.close().await.unwrap();
}

// --- replicas: evictions replicate and never break convergence ---

fn id(i: u64) -> NodeId {
    NodeId::new(i).unwrap()
}

fn sync_all(nodes: &mut [Replica], now: u64) {
    for _ in 0..2 {
        for i in 0..nodes.len() {
            for j in 0..nodes.len() {
                if i != j {
                    let (a, b) = if i < j {
                        let (l, r) = nodes.split_at_mut(j);
                        (&mut l[i], &mut r[0])
                    } else {
                        let (l, r) = nodes.split_at_mut(i);
                        (&mut r[0], &mut l[j])
                    };
                    catch_up(a, b, now);
                }
            }
        }
    }
}

fn three() -> Vec<Replica> {
    (1..=3)
        .map(|i| Replica::new(id(i), Limits::default()))
        .collect()
}

#[test]
fn an_evicted_key_never_comes_back_from_a_lagging_copy() {
    let mut n = three();
    for i in 0..10 {
        n[0].write(kname(i), Some(value(10)), None, T0).unwrap();
    }
    sync_all(&mut n, T0 + 1);
    // C goes away holding every key. A evicts k0..k4, B evicts k5 and k6: evictions from
    // different nodes all count (the union).
    for i in 0..5 {
        assert!(n[0].evict(kname(i), T0 + 10).unwrap());
    }
    for i in 5..7 {
        assert!(n[1].evict(kname(i), T0 + 10).unwrap());
    }
    let (ab, c) = n.split_at_mut(2);
    {
        let (a, b) = ab.split_at_mut(1);
        catch_up(&mut a[0], &mut b[0], T0 + 20);
        catch_up(&mut b[0], &mut a[0], T0 + 20);
    }
    // Garbage collection cannot collect the evictions: C has not acknowledged them.
    for r in ab.iter_mut() {
        assert_eq!(r.gc(T0 + 100_000, 0).dropped, 0);
    }
    // C comes back and pushes its old copies first, then catches up: nothing returns.
    for r in ab.iter_mut() {
        catch_up(r, &mut c[0], T0 + 100_001);
    }
    sync_all(&mut n, T0 + 100_002);
    for r in &n {
        for i in 0..7 {
            assert_eq!(
                r.get(&kname(i), T0 + 100_002),
                None,
                "{:?} holds k{i}",
                r.id()
            );
        }
        for i in 7..10 {
            assert!(r.get(&kname(i), T0 + 100_002).is_some());
        }
        assert_eq!(r.digest(), n[0].digest());
        assert_eq!(
            r.stats().evicted_keys,
            if r.id() == id(1) {
                5
            } else if r.id() == id(2) {
                2
            } else {
                0
            }
        );
    }
    // Now stable everywhere: collected, and a stale copy is ignored.
    for r in n.iter_mut() {
        let report = r.gc(T0 + 200_000, 0);
        assert_eq!(
            r.entry(&kname(0)),
            None,
            "{:?}: tombstone kept, {report:?} {:?}",
            r.id(),
            r.members()
        );
    }
    sync_all(&mut n, T0 + 200_001);
    assert!(n.iter().all(|r| r.get(&kname(0), T0 + 200_001).is_none()));
}

/// Tombstones of evictions go as soon as they are stable, with no grace and no GC tick, and
/// not before: while a member has not acknowledged them they stay, and once collected a
/// lagging copy of the key is stale and ignored.
#[test]
fn stable_eviction_tombstones_are_collected_at_once_and_not_before() {
    let mut n = three();
    for i in 0..10 {
        n[0].write(kname(i), Some(value(10)), None, T0).unwrap();
    }
    sync_all(&mut n, T0 + 1);
    // C leaves holding every key; A evicts five of them and B hears of it.
    let lagging = n[2].entry(&kname(0)).unwrap();
    for i in 0..5 {
        assert!(n[0].evict(kname(i), T0 + 10).unwrap());
    }
    let tombstones = n[0].memory().tombstones;
    assert_eq!(tombstones, 5);
    {
        let (a, b) = n.split_at_mut(1);
        catch_up(&mut b[0], &mut a[0], T0 + 11);
        catch_up(&mut a[0], &mut b[0], T0 + 11);
    }
    for r in &mut n[..2] {
        assert_eq!(
            r.collect_stable_tombstones(T0 + 12),
            0,
            "C has not seen them"
        );
        assert_eq!(r.memory().tombstones, 5);
    }
    // C comes back and catches up from A; A hears C's acknowledgement in its next request.
    {
        let (a, c) = n.split_at_mut(2);
        catch_up(&mut c[0], &mut a[0], T0 + 13);
        assert_eq!(
            a[0].collect_stable_tombstones(T0 + 13),
            0,
            "not acknowledged yet"
        );
        catch_up(&mut c[0], &mut a[0], T0 + 13);
    }
    // A holds acknowledgements from B and C: its tombstones go at once (13 ms after the
    // evictions, far inside any grace).
    assert_eq!(n[0].collect_stable_tombstones(T0 + 13), 5);
    assert_eq!(n[0].memory().tombstones, 0);
    assert_eq!(n[0].collect_stable_tombstones(T0 + 14), 0, "each dot once");
    // C's old copy pushed again to A is covered by A's version vector: ignored.
    assert!(!n[0].apply(lagging, T0 + 15).unwrap());
    assert_eq!(n[0].get(&kname(0), T0 + 15), None);
    sync_all(&mut n, T0 + 16);
    for r in &mut n {
        r.collect_stable_tombstones(T0 + 17);
        for i in 0..5 {
            assert_eq!(r.get(&kname(i), T0 + 17), None, "{:?} holds k{i}", r.id());
        }
        assert_eq!(r.memory().tombstones, 0, "{:?}", r.id());
    }
    assert!(n.iter().all(|r| r.digest() == n[0].digest()));
}

/// A collection drops at most the number it is given, and the next one goes on from there:
/// after a flood a follower holds hundreds of thousands of stable tombstones, and each one
/// dropped waits in memory for its commit, so one unbounded pass took 300 MB for a moment.
/// Bounded passes drop each tombstone once, all of them in the end, with no change waiting
/// beyond the bound.
#[test]
fn stable_tombstones_are_collected_in_bounded_passes() {
    const KEYS: usize = 1_000;
    const BATCH: usize = 64;
    let mut n = three();
    for i in 0..KEYS {
        n[0].write(kname(i), Some(value(10)), None, T0).unwrap();
    }
    sync_all(&mut n, T0 + 1);
    for i in 0..KEYS {
        assert!(n[0].evict(kname(i), T0 + 10).unwrap());
    }
    sync_all(&mut n, T0 + 11);
    let a = &mut n[0];
    assert_eq!(a.memory().tombstones, KEYS);
    a.record_changes(true);
    let mut passes = 0;
    let mut dropped = 0;
    loop {
        let d = a.collect_stable_tombstones_at_most(T0 + 12, BATCH);
        assert!(d <= BATCH, "a pass dropped {d}, over its bound {BATCH}");
        assert_eq!(a.take_changes().len(), d, "one change per drop");
        if d == 0 {
            break;
        }
        dropped += d;
        passes += 1;
    }
    assert_eq!(dropped, KEYS, "every stable tombstone collected once");
    assert_eq!(passes, KEYS.div_ceil(BATCH));
    assert_eq!(a.memory().tombstones, 0);

    // The GC pass is bounded the same way and says when it stopped at its bound.
    let b = &mut n[1];
    assert_eq!(b.memory().tombstones, KEYS);
    b.record_changes(true);
    let mut dropped = 0;
    loop {
        let report = b.gc_at_most(T0 + 200_000, 0, BATCH);
        assert!(report.dropped <= BATCH, "{report:?}");
        assert_eq!(b.take_changes().len(), report.dropped);
        dropped += report.dropped;
        if !report.more {
            break;
        }
    }
    assert_eq!(dropped, KEYS);
    assert_eq!(b.memory().tombstones, 0);
    for i in 0..KEYS {
        assert_eq!(b.get(&kname(i), T0 + 200_001), None);
    }
}

#[test]
fn a_newer_write_concurrent_with_an_eviction_survives() {
    let mut n = three();
    n[0].write(kname(1), Some(value(10)), None, T0).unwrap();
    sync_all(&mut n, T0 + 1);
    // A evicts; B, cut off, writes the key later.
    n[0].evict(kname(1), T0 + 10).unwrap();
    n[1].write(kname(1), Some(Bytes::from_static(b"newer")), None, T0 + 20)
        .unwrap();
    sync_all(&mut n, T0 + 30);
    for r in &n {
        assert_eq!(r.get(&kname(1), T0 + 30).unwrap(), b"newer".as_slice());
        assert_eq!(r.digest(), n[0].digest());
    }
}

#[test]
fn evicting_a_counter_keeps_the_increments_it_did_not_observe() {
    let mut n = three();
    let now = T0;
    n[0].incr(kname(1), Increment::Int(5), now).unwrap();
    sync_all(&mut n, now + 1);
    // A evicts while B, unseen, increments.
    n[0].evict(kname(1), now + 10).unwrap();
    assert_eq!(n[0].get(&kname(1), now + 10), None);
    n[1].incr(kname(1), Increment::Int(3), now + 11).unwrap();
    sync_all(&mut n, now + 20);
    for r in &n {
        assert_eq!(r.get(&kname(1), now + 20).unwrap(), b"3".as_slice());
        assert_eq!(r.digest(), n[0].digest());
    }
}

#[test]
fn a_node_alone_drops_evicted_keys_without_a_tombstone() {
    let mut r = Replica::new(id(1), Limits::default());
    r.write(kname(1), Some(value(100)), None, T0).unwrap();
    let before = r.memory().bytes();
    assert!(r.evict(kname(1), T0 + 1).unwrap());
    assert_eq!(r.entry(&kname(1)), None);
    assert!(r.memory().bytes() < before);
    // With a member, an eviction leaves a tombstone that replicates.
    r.write(kname(2), Some(value(100)), None, T0).unwrap();
    r.note_member(id(2), None, T0);
    assert!(r.evict(kname(2), T0 + 2).unwrap());
    assert!(r.entry(&kname(2)).unwrap().value.is_none());
    assert!(!r.evict(kname(2), T0 + 3).unwrap(), "evicted twice");
}

/// Hashes are evicted like strings (a hash is found through its fields), and memory stays
/// bounded under a flood of hash fields.
#[tokio::test]
async fn hashes_are_evicted_and_memory_stays_bounded() {
    let (_d, cache) = cache_with(Policy::AllKeysLru, MAX).await;
    for i in 0..2_000 {
        let key = Bytes::from(format!("h{i:05}"));
        let pairs: Vec<(Bytes, Bytes)> = (0..10)
            .map(|f| (Bytes::from(format!("f{f}")), value(100)))
            .collect();
        cache
            .transact(|tx| tx.modify(|r, now| r.hset(key.clone(), &pairs, false, now)))
            .await
            .unwrap()
            .0
            .unwrap();
    }
    cache.flush().await.unwrap();
    assert_bounded(&cache).await;
    let stats = cache.with_replica(|r| r.stats().evicted_keys);
    assert!(stats > 0, "nothing evicted");
    let kept = (0..2_000)
        .filter(|i| {
            cache.with_replica(|r| r.contains(format!("h{i:05}").as_bytes(), cache.now_ms()))
        })
        .count();
    assert!(kept > 0 && kept < 2_000, "kept {kept} of 2000 hashes");
    cache.close().await.unwrap();
}

/// Under `noeviction`, a write that adds hash fields is refused with `OutOfMemory`; `HDEL`
/// goes on.
#[tokio::test]
async fn noeviction_refuses_new_hash_fields() {
    let (_d, cache) = cache_with(Policy::NoEviction, MAX).await;
    let mut refused = None;
    for i in 0..2_000 {
        let key = Bytes::from(format!("h{i:05}"));
        let pairs = vec![(Bytes::from_static(b"f"), value(1000))];
        let (res, _) = cache
            .transact(|tx| {
                tx.room()?;
                tx.modify(|r, now| r.hset(key.clone(), &pairs, false, now))
            })
            .await
            .unwrap();
        if let Err(e) = res {
            refused = Some((i, e));
            break;
        }
    }
    let (i, e) = refused.expect("writes past the limit are refused");
    assert!(matches!(e, dice_core::Error::OutOfMemory), "{e}");
    let key = Bytes::from(format!("h{:05}", i - 1));
    let (removed, _) = cache
        .transact(|tx| tx.modify(|r, now| r.hdel(key.clone(), &[Bytes::from_static(b"f")], now)))
        .await
        .unwrap();
    assert_eq!(removed.unwrap(), 1);
    cache.close().await.unwrap();
}

/// Sets are evicted like hashes (a set is found through its members, and removed as this
/// node observed it), and memory stays bounded under a flood of set members.
#[tokio::test]
async fn sets_are_evicted_and_memory_stays_bounded() {
    let (_d, cache) = cache_with(Policy::AllKeysLru, MAX).await;
    for i in 0..2_000 {
        let key = Bytes::from(format!("s{i:05}"));
        let members: Vec<Bytes> = (0..10)
            .map(|m| Bytes::from(format!("member-{m}-{}", "x".repeat(100))))
            .collect();
        cache
            .transact(|tx| tx.modify(|r, now| r.sadd(key.clone(), &members, now)))
            .await
            .unwrap()
            .0
            .unwrap();
    }
    cache.flush().await.unwrap();
    assert_bounded(&cache).await;
    let stats = cache.with_replica(|r| r.stats().evicted_keys);
    assert!(stats > 0, "nothing evicted");
    let kept = (0..2_000)
        .filter(|i| {
            cache.with_replica(|r| r.contains(format!("s{i:05}").as_bytes(), cache.now_ms()))
        })
        .count();
    assert!(kept > 0 && kept < 2_000, "kept {kept} of 2000 sets");
    // A set that was evicted reads as absent whole, one that was kept whole.
    cache.with_replica(|r| {
        for i in 0..2_000 {
            let n = r
                .scard(format!("s{i:05}").as_bytes(), cache.now_ms())
                .unwrap();
            assert!(n == 0 || n == 10, "s{i:05} holds {n} members");
        }
    });
    cache.close().await.unwrap();
}

/// Under `noeviction`, `SADD` is refused with `OutOfMemory`; `SREM` goes on.
#[tokio::test]
async fn noeviction_refuses_new_set_members() {
    let (_d, cache) = cache_with(Policy::NoEviction, MAX).await;
    let mut refused = None;
    for i in 0..2_000 {
        let key = Bytes::from(format!("s{i:05}"));
        let members = vec![Bytes::from(format!("m{}", "x".repeat(1000)))];
        let (res, _) = cache
            .transact(|tx| {
                tx.room()?;
                tx.modify(|r, now| r.sadd(key.clone(), &members, now))
            })
            .await
            .unwrap();
        if let Err(e) = res {
            refused = Some((i, e));
            break;
        }
    }
    let (i, e) = refused.expect("writes past the limit are refused");
    assert!(matches!(e, dice_core::Error::OutOfMemory), "{e}");
    let key = Bytes::from(format!("s{:05}", i - 1));
    let member = Bytes::from(format!("m{}", "x".repeat(1000)));
    let (removed, _) = cache
        .transact(|tx| tx.modify(|r, now| r.srem(key.clone(), std::slice::from_ref(&member), now)))
        .await
        .unwrap();
    assert_eq!(removed.unwrap(), 1);
    cache.close().await.unwrap();
}

/// An eviction of a set removes the adds its node observed: a member added concurrently on
/// another node survives it everywhere, and the evicted members never come back.
#[test]
fn evicting_a_set_keeps_the_adds_it_did_not_observe() {
    let mut n = three();
    n[0].sadd(
        kname(1),
        &[Bytes::from_static(b"a"), Bytes::from_static(b"b")],
        T0,
    )
    .unwrap();
    sync_all(&mut n, T0 + 1);
    assert!(n[0].evict(kname(1), T0 + 10).unwrap());
    assert!(!n[0].contains(&kname(1), T0 + 10));
    n[1].sadd(kname(1), &[Bytes::from_static(b"c")], T0 + 11)
        .unwrap();
    sync_all(&mut n, T0 + 20);
    for r in &n {
        assert_eq!(
            r.smembers(&kname(1), T0 + 20).unwrap(),
            vec![b"c".as_slice()]
        );
        assert_eq!(r.digest(), n[0].digest());
    }
    // A node alone drops a set through removals like any other node (its removals are
    // collected with the adds once stable).
    let mut alone = Replica::new(id(9), Limits::default());
    alone
        .sadd(kname(2), &[Bytes::from_static(b"x")], T0)
        .unwrap();
    assert!(alone.evict(kname(2), T0 + 1).unwrap());
    assert!(!alone.contains(&kname(2), T0 + 1));
    assert!(!alone.evict(kname(2), T0 + 2).unwrap(), "evicted twice");
}

/// Sends every write of `from` that `to` lacks as one push, and `to`'s acknowledgement back.
fn push_between(from: &Cache, to: &Cache) {
    let (push, _) = from.push_after(0).expect("writes to push");
    match to.handle_sync(push).unwrap() {
        Some(ack @ dice_core::SyncMessage::Ack(_)) => {
            from.handle_sync(ack).unwrap();
        }
        other => panic!("push not taken: {other:?}"),
    }
}

/// A follower that holds a peer's tombstones, once they are stable, collects them on its next
/// GC tick when it runs under a memory limit, without waiting out the grace: when a flood
/// ends nothing evicts any more, and the tombstones of the writer's evictions would otherwise
/// keep it over its limit for the grace's length. Without a limit the grace still holds.
#[tokio::test]
async fn a_follower_under_a_limit_collects_stable_tombstones_on_its_gc_tick() {
    for limited in [true, false] {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut options = CacheOptions::default()
            .with_gc_grace(Duration::from_secs(3600))
            .with_gc_interval(Duration::from_secs(3600));
        if limited {
            options = options.with_memory_limit(
                MemoryLimit::default()
                    .with_max_bytes(64 << 20)
                    .with_policy(Policy::AllKeysRandom),
            );
        }
        let writer = Cache::open_with(dirs.0.path(), options.clone())
            .await
            .unwrap();
        let follower = Cache::open_with(dirs.1.path(), options).await.unwrap();
        for i in 0..100 {
            writer.put(kname(i), value(10)).await.unwrap();
        }
        for i in 0..60 {
            assert!(writer.delete(kname(i)).await.unwrap());
        }
        // Two rounds: the second carries the writer's vector once it holds the follower's
        // acknowledgement of every write, so the tombstones are stable on both sides.
        push_between(&writer, &follower);
        push_between(&writer, &follower);
        assert_eq!(follower.len(), 40);
        assert_eq!(follower.with_replica(|r| r.memory().tombstones), 60);
        let dropped = follower.gc_now().dropped;
        if limited {
            assert_eq!(dropped, 60, "stable tombstones go at once under a limit");
            assert_eq!(follower.with_replica(|r| r.memory().tombstones), 0);
            // The writer's copies of the deleted keys are stale now: nothing comes back.
            push_between(&writer, &follower);
            assert_eq!(follower.len(), 40);
            assert_eq!(follower.digest(), writer.digest());
        } else {
            assert_eq!(dropped, 0, "without a limit, the grace holds");
            assert_eq!(follower.with_replica(|r| r.memory().tombstones), 60);
        }
        writer.close().await.unwrap();
        follower.close().await.unwrap();
    }
}

/// Sends every write of `from` after its seq `after` to `to`, page by page, with `to`'s
/// acknowledgements back; returns the last seq sent.
fn push_all(from: &Cache, to: &Cache, mut after: u64) -> u64 {
    while let Some((push, last)) = from.push_after(after) {
        if let Some(ack @ dice_core::SyncMessage::Ack(_)) = to.handle_sync(push).unwrap() {
            from.handle_sync(ack).unwrap();
        }
        after = last;
    }
    after
}

/// Writes keys `range` on `cache` with values of `n` bytes, pipelined; `None`: deletes them.
async fn write_range(cache: &Cache, range: std::ops::Range<usize>, n: Option<usize>) {
    let mut last = None;
    for i in range {
        let (_, g) = cache
            .write_unacked(kname(i), n.map(value), None)
            .await
            .unwrap();
        last = Some(g);
    }
    if let Some(g) = last {
        cache.wait_committed(g).await.unwrap();
    }
}

/// A follower under a limit ranks the keys that arrive from a peer as just written: it evicts
/// the older ones first, not each as it arrives (it did: an arrived key had never been
/// accessed here, so it looked like the coldest key, and its eviction, replicated, took it
/// from the writer too, until a flood left no key on any node).
#[tokio::test]
async fn a_follower_evicts_older_keys_before_those_that_just_arrived() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let writer = Cache::open(dirs.0.path()).await.unwrap();
    let limited = CacheOptions::default().with_memory_limit(
        MemoryLimit::default()
            .with_max_bytes(MAX)
            .with_policy(Policy::AllKeysLru)
            .with_samples(10),
    );
    let follower = Cache::open_with(dirs.1.path(), limited).await.unwrap();
    write_range(&writer, 0..1_000, Some(1000)).await;
    let sent = push_all(&writer, &follower, 0);
    assert_eq!(follower.len(), 1_000, "1 MB fits in 2 MB");
    // LRU time is kept in 10 ms units: let the first keys be older.
    tokio::time::sleep(Duration::from_millis(50)).await;
    write_range(&writer, 1_000..2_500, Some(1000)).await;
    push_all(&writer, &follower, sent);
    let held: Vec<usize> = follower
        .scan_prefix(b"key:")
        .iter()
        .map(|(k, _)| std::str::from_utf8(&k[4..]).unwrap().parse().unwrap())
        .collect();
    let new = held.iter().filter(|&&i| i >= 1_000).count();
    let old = held.len() - new;
    assert!(held.len() < 2_500, "the follower evicted nothing");
    // The share of the 1,500 keys that arrived last it kept is at least twice the share of
    // the 1,000 older ones (a peer's writes may take it an eighth over its limit, which
    // keeps some older keys for a while).
    assert!(
        new >= 3 * old,
        "{new} of the 1,500 keys that arrived last kept, {old} of the 1,000 older ones"
    );
    // (How many fit depends on what a push holds pending while it is applied.)
    assert!(
        new >= 800,
        "only {new} of the 1,500 keys that arrived last kept"
    );
    writer.close().await.unwrap();
    follower.close().await.unwrap();
}

/// A follower under the same limit as the writer of a flood leaves the eviction to the writer:
/// the writer's evictions come with its writes, so what the follower holds beyond the
/// writer's `used_memory` for a moment (the page it applies until it is committed, the
/// writer's tombstones until they are stable) is no reason to evict keys itself. It did, for
/// its pending changes: at 256 MB followers evicted a quarter of the keys or more, each
/// eviction a tombstone waiting for the busy writer's acknowledgement, and one held 1.9
/// million of them over its limit. A peer's writes may take it an eighth over the limit;
/// once they stop, its GC tick brings it back under the limit, and the two end equal.
#[tokio::test]
async fn a_follower_leaves_the_eviction_to_the_writer() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let limited = CacheOptions::default().with_memory_limit(
        MemoryLimit::default()
            .with_max_bytes(MAX)
            .with_policy(Policy::AllKeysLru),
    );
    let writer = Cache::open_with(dirs.0.path(), limited.clone())
        .await
        .unwrap();
    let follower = Cache::open_with(dirs.1.path(), limited).await.unwrap();
    // 2.5 times the limit, in rounds that stay under what makes the writer wait for its
    // follower (an eighth of the limit behind, evictions included).
    let (rounds, per_round) = (52, 100);
    let (mut sent, mut worst) = (0, 0);
    for round in 0..rounds {
        write_range(
            &writer,
            round * per_round..(round + 1) * per_round,
            Some(1000),
        )
        .await;
        sent = push_all(&writer, &follower, sent);
        worst = worst.max(follower.memory_usage().dataset as u64);
    }
    let evicted = |c: &Cache| c.stats().replica.evicted_keys;
    let (by_writer, by_follower) = (evicted(&writer), evicted(&follower));
    assert!(
        by_writer > 2_000,
        "the writer evicted only {by_writer} keys"
    );
    assert!(
        by_follower * 50 <= by_writer,
        "the follower evicted {by_follower} keys itself, the writer {by_writer}"
    );
    // What the follower holds is at most an eighth over its limit. (Its changes waiting for
    // their commit come on top; how many depends on how far its commits lag, which on a
    // loaded machine took the total past a quarter over once.)
    assert!(
        worst <= MAX + MAX / 8,
        "the follower held {worst} bytes of data, limit {MAX}"
    );
    // Once the writes stop the follower settles under its limit by itself.
    let t0 = std::time::Instant::now();
    while follower.memory_usage().total() as u64 > MAX && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        follower.memory_usage().total() as u64 <= MAX,
        "the follower stays over its limit: {:?}",
        follower.memory_usage()
    );
    // Its own evictions, if any, reach the writer; then both hold the same keys.
    push_all(&follower, &writer, 0);
    push_all(&writer, &follower, sent);
    assert_eq!(follower.digest(), writer.digest());
    writer.close().await.unwrap();
    follower.close().await.unwrap();
}

/// Eviction never takes the live keys below half of the limit to make room for tombstones
/// that cannot be collected yet (a member has not acknowledged them): it would free little,
/// and every eviction, replicated, empties the cluster. Past the floor local writes that add
/// data are refused; once the tombstones are stable and collected, writes go on.
#[tokio::test]
async fn tombstones_that_cannot_be_collected_yet_leave_half_the_limit_to_live_keys() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let writer = Cache::open(dirs[0].path()).await.unwrap();
    let limited = CacheOptions::default().with_memory_limit(
        MemoryLimit::default()
            .with_max_bytes(MAX)
            .with_policy(Policy::AllKeysLru)
            .with_samples(10),
    );
    let follower = Cache::open_with(dirs[1].path(), limited).await.unwrap();
    // A third member, then silent: nothing it has not acknowledged is stable.
    let third = Cache::open(dirs[2].path()).await.unwrap();
    third.put("third", "x").await.unwrap();
    push_all(&third, &follower, 0);
    push_all(&third, &writer, 0);
    // 20,000 tombstones (about 3 MB here, more than the 2 MB limit), then 1.5 MB of keys.
    write_range(&writer, 0..20_000, Some(10)).await;
    write_range(&writer, 0..20_000, None).await;
    let sent = push_all(&writer, &follower, 0);
    let dead = follower.with_replica(|r| r.memory().dead_bytes());
    assert!(dead as u64 > MAX, "{dead} bytes of tombstones");
    write_range(&writer, 20_000..21_500, Some(1000)).await;
    let sent = push_all(&writer, &follower, sent);
    let kept = follower.len();
    assert!(
        kept >= 700,
        "{kept} keys kept of 1,500 (and 1 MB is half the limit)"
    );
    assert!(kept < 1_500, "nothing evicted");
    assert!(matches!(
        follower.put("local", value(1000)).await,
        Err(Error::OutOfMemory)
    ));
    // The third member comes back and acknowledges everything: the tombstones are stable,
    // collected, and writes go on.
    push_all(&writer, &third, 0);
    push_all(&follower, &third, 0);
    push_all(&third, &follower, 0);
    push_all(&third, &writer, 0);
    push_all(&writer, &follower, sent);
    push_all(&follower, &writer, 0);
    follower.gc_now();
    let dead = follower.with_replica(|r| r.memory().dead_bytes());
    assert!((dead as u64) < MAX / 4, "{dead} bytes of tombstones left");
    follower.put("local", value(1000)).await.unwrap();
    for c in [writer, follower, third] {
        c.close().await.unwrap();
    }
}

/// What waits for a group commit counts in `used_memory` (the undo records of evicted keys
/// too) and is all given back once committed: nothing drifts.
#[tokio::test]
async fn pending_memory_is_counted_while_it_waits_and_given_back_once_committed() {
    let (_d, cache) = cache_with(Policy::AllKeysLru, MAX).await;
    for round in 0..10 {
        write_range(&cache, round * 2_000..(round + 1) * 2_000, Some(1000)).await;
    }
    cache.flush().await.unwrap();
    assert_eq!(cache.memory_usage().pending, 0);
    assert!(cache.stats().replica.evicted_keys > 10_000);
    assert_bounded(&cache).await;
    cache.close().await.unwrap();
}

/// Under a memory limit a node holding tombstones asks its members for their
/// acknowledgements (a push of no write, every `probe_interval`), since tombstones go only
/// once every member acknowledged them and a member that does not write tells nothing on its
/// own. Without a limit, or with no tombstone, nothing is sent.
#[tokio::test]
async fn tombstones_under_a_limit_ask_members_for_their_acknowledgements() {
    use dice_core::{Purpose, ReplicationConfig, Replicator, SyncMessage};
    let (_dir, mut cache) = cache_with(Policy::AllKeysLru, MAX).await;
    cache.put(kname(1), value(10)).await.unwrap();
    let config = ReplicationConfig::default();
    let mut rep: Replicator<u32> = Replicator::new(config, Duration::ZERO);
    rep.connected(7, &cache);
    rep.set_member(&7, true);
    // Whatever the connection started (a catch-up) is not a probe; nothing to probe for yet.
    assert!(cache.acknowledgement_probe().is_none(), "no tombstone");
    let probes = |out: &[dice_core::Outgoing<u32>]| {
        out.iter()
            .filter(|o| matches!(&o.msg, SyncMessage::Push(p) if p.entries.is_empty()))
            .count()
    };
    let (out, _) = rep.poll(&cache, Duration::from_millis(1));
    assert_eq!(probes(&out), 0);

    assert!(cache.delete(kname(1)).await.unwrap());
    cache.flush().await.unwrap();
    // The delete itself goes out first, as a push; the member acknowledges it (holding
    // nothing else, so the tombstone is not stable: another member could still lack it).
    let (out, _) = rep.poll(&cache, Duration::from_millis(2));
    assert_eq!(
        probes(&out),
        0,
        "the delete's own push brings an ack already"
    );
    let push = out
        .iter()
        .find(|o| matches!(o.purpose, Purpose::Push { .. }))
        .unwrap();
    let ack = SyncMessage::Ack(dice_core::sync::Ack {
        from: id(7),
        vv: dice_core::VersionVector::default(),
        pressed: false,
    });
    rep.on_reply(
        &7,
        push.purpose,
        Ok(ack),
        &mut cache,
        Duration::from_millis(3),
    );
    let later = config.probe_interval + Duration::from_millis(10);
    let (out, wake) = rep.poll(&cache, later);
    assert_eq!(probes(&out), 1, "a tombstone waits: the member is asked");
    let probe = out
        .iter()
        .find(|o| matches!(o.purpose, Purpose::Push { .. }))
        .unwrap();
    assert_eq!(probe.to, 7);
    assert!(wake.is_some(), "the next probe is scheduled");
    // One in flight per member, and not again before the interval.
    let (out, _) = rep.poll(&cache, later + config.probe_interval * 2);
    assert_eq!(probes(&out), 0, "one probe in flight per member");

    // Without a limit the tombstone waits for the GC tick as before: no probe.
    cache.set_memory_limit(MemoryLimit::default());
    assert!(cache.acknowledgement_probe().is_none());
}

/// What the embedding program reports of its allocator beyond dice's own parts
/// (`Cache::untracked_memory`) counts in `used_memory`: whole without a limit, at most a
/// quarter of the limit under one, and eviction makes room for it like for data.
#[tokio::test]
async fn untracked_memory_counts_in_used_memory_up_to_a_quarter_of_the_limit() {
    let (_dir, cache) = cache_with(Policy::AllKeysLru, MAX).await;
    fill(&cache, 0..1_500, None).await;
    let before = cache.memory_usage();
    assert!(before.total() as u64 <= MAX, "{before:?}");
    assert!(
        before.dataset as u64 > MAX / 2,
        "filled to the limit: {before:?}"
    );
    assert_eq!(before.other, 0);

    let gauge = cache.untracked_memory();
    gauge.store(100_000, Ordering::Relaxed);
    let usage = cache.memory_usage();
    assert_eq!(usage.other, 100_000);
    assert_eq!(usage.total(), usage.counted() + 100_000);

    // Far more than a quarter of the limit: a quarter counts.
    gauge.store(10 * MAX as usize, Ordering::Relaxed);
    assert_eq!(cache.memory_usage().other, (MAX / 4) as usize);
    // The next writes evict to make room for it: data keeps three quarters of the limit.
    fill(&cache, 1_500..1_600, None).await;
    let after = cache.memory_usage();
    assert!(after.total() as u64 <= MAX, "{after:?}");
    assert!(
        after.dataset as u64 <= MAX - MAX / 4 && after.dataset < before.dataset,
        "data made room for the untracked bytes: before {before:?}, after {after:?}"
    );

    // Without a limit it counts whole.
    cache.set_memory_limit(MemoryLimit::default());
    assert_eq!(cache.memory_usage().other, 10 * MAX as usize);
}

/// Under a memory limit, local writes wait for a member that lacks more of this node's writes
/// than an eighth of the limit holds (each is an eviction the others must keep as a tombstone
/// until that member has it), and go on once it acknowledges them. A member not heard from
/// for 2 s (cut off) holds nothing back.
#[tokio::test]
async fn under_a_limit_writes_wait_for_a_member_far_behind() {
    use dice_core::sync::Ack;
    use dice_core::{ManualClock, SyncMessage, VersionVector};
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let options = CacheOptions::default()
        .with_clock(clock.clone())
        .with_memory_limit(
            MemoryLimit::default()
                .with_max_bytes(MAX)
                .with_policy(Policy::AllKeysLru),
        );
    let cache = Cache::open_with(dir.path(), options).await.unwrap();
    // 600 KB of writes while no member is known: nothing to wait for.
    fill(&cache, 0..600, None).await;
    // A member that holds none of them says so.
    let ack = |vv: VersionVector| {
        SyncMessage::Ack(Ack {
            from: id(7),
            vv,
            pressed: false,
        })
    };
    cache.handle_sync(ack(VersionVector::default())).unwrap();
    let writer = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.put(kname(1_000), value(1000)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!writer.is_finished(), "the write waits for the member");
    // The member catches up: the write goes on at once.
    let ours = cache.with_replica(|r| r.vv().clone());
    cache.handle_sync(ack(ours)).unwrap();
    tokio::time::timeout(Duration::from_millis(500), writer)
        .await
        .expect("the write went on once the member acknowledged")
        .unwrap()
        .unwrap();

    // Not heard from for longer than 2 s (cut off), the member holds nothing back, however
    // far behind it falls.
    clock.advance(Duration::from_secs(3));
    tokio::time::timeout(Duration::from_secs(5), fill(&cache, 1_200..1_800, None))
        .await
        .expect("a member gone quiet holds nothing back");
}

/// A member that says it is under memory pressure holds local writes back, as a member far
/// behind does: each waits (up to 1 s) until the member says it no longer is, or falls silent.
#[tokio::test]
async fn under_a_limit_writes_wait_for_a_member_under_pressure() {
    use dice_core::sync::Ack;
    use dice_core::{ManualClock, SyncMessage};
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let options = CacheOptions::default()
        .with_clock(clock.clone())
        .with_memory_limit(
            MemoryLimit::default()
                .with_max_bytes(MAX)
                .with_policy(Policy::AllKeysLru),
        );
    let cache = Cache::open_with(dir.path(), options).await.unwrap();
    fill(&cache, 0..10, None).await;
    // The member holds every write (not behind), but is pressed.
    let ack = |pressed: bool| {
        SyncMessage::Ack(Ack {
            from: id(7),
            vv: cache.with_replica(|r| r.vv().clone()),
            pressed,
        })
    };
    cache.handle_sync(ack(true)).unwrap();
    let writer = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.put(kname(1_000), value(1000)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!writer.is_finished(), "the write waits for the member");
    cache.handle_sync(ack(false)).unwrap();
    tokio::time::timeout(Duration::from_millis(500), writer)
        .await
        .expect("the write went on once the member was no longer pressed")
        .unwrap()
        .unwrap();
    // Silent for longer than 2 s, a pressed member holds nothing back.
    cache.handle_sync(ack(true)).unwrap();
    clock.advance(Duration::from_secs(3));
    tokio::time::timeout(
        Duration::from_millis(500),
        cache.put(kname(1_001), value(10)),
    )
    .await
    .expect("a member gone quiet holds nothing back")
    .unwrap();
    // Without a limit, nothing waits for anyone.
    cache.handle_sync(ack(true)).unwrap();
    cache.set_memory_limit(MemoryLimit::default());
    tokio::time::timeout(
        Duration::from_millis(500),
        cache.put(kname(1_002), value(10)),
    )
    .await
    .expect("no limit, no wait")
    .unwrap();
}

/// A follower that must evict for a writer (its limit is smaller) and whose evictions cannot
/// be collected yet (the writer has not taken them) stops evicting at its live floor; every
/// page of the writer's it applies then stays. It says so in its acknowledgements, and the
/// writer's writes wait, until the follower's tombstones are collected and its probe says the
/// pressure is over. Without it, the follower held whatever the writer wrote.
#[tokio::test]
async fn a_follower_at_its_live_floor_holds_the_writer_back_until_it_recovers() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let with_limit = |max| {
        CacheOptions::default().with_memory_limit(
            MemoryLimit::default()
                .with_max_bytes(max)
                .with_policy(Policy::AllKeysLru),
        )
    };
    let writer = Cache::open_with(dirs.0.path(), with_limit(4 * MAX))
        .await
        .unwrap();
    let follower = Cache::open_with(dirs.1.path(), with_limit(MAX))
        .await
        .unwrap();
    let (mut sent, mut round, mut worst) = (0, 0, 0);
    let pressed = |c: &Cache| c.with_replica(|r| r.members_pressed(0));
    // Rounds of 100 KB; the follower's evictions never reach the writer.
    while pressed(&writer) == 0 {
        assert!(
            round < 80,
            "8 MB written and the follower never said it was pressed"
        );
        write_range(&writer, round * 100..(round + 1) * 100, Some(1000)).await;
        sent = push_all(&writer, &follower, sent);
        worst = worst.max(follower.memory_usage().total() as u64);
        round += 1;
    }
    assert!(follower.with_replica(|r| r.pressed()));
    assert!(follower.stats().replica.evicted_keys > 0);
    // It said so as soon as it was past its limit and its slack, at its live floor: a page
    // (here 100 KB and its pending changes) over that at most.
    assert!(
        worst <= MAX + MAX / 8 + MAX / 4,
        "the follower held {worst} bytes, limit {MAX}"
    );
    let held = {
        let writer = writer.clone();
        tokio::spawn(async move { writer.put(kname(100_000), value(1000)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !held.is_finished(),
        "the writer's write waits for its follower"
    );
    // The writer takes the follower's evictions; once the follower holds its acknowledgement
    // they are stable and go, and its probe tells the writer it is no longer pressed.
    push_all(&follower, &writer, 0);
    push_all(&writer, &follower, sent);
    let t0 = std::time::Instant::now();
    while follower.with_replica(|r| r.pressed()) && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !follower.with_replica(|r| r.pressed()),
        "the follower is still pressed: {:?}",
        follower.memory_usage()
    );
    let probe = follower
        .acknowledgement_probe()
        .expect("a probe after pressure");
    writer.handle_sync(probe).unwrap();
    assert_eq!(pressed(&writer), 0);
    tokio::time::timeout(Duration::from_millis(500), held)
        .await
        .expect("the write went on once the follower was no longer pressed")
        .unwrap()
        .unwrap();
    writer.close().await.unwrap();
    follower.close().await.unwrap();
}

/// Under a memory limit a push carries about a 16th of the limit (by the average record):
/// it is copied while built, encoded and sent, once per peer, beyond what `used_memory`
/// counts. Without a limit a push takes the protocol's page of entries.
#[tokio::test]
async fn under_a_limit_a_push_carries_a_sixteenth_of_it() {
    use dice_core::SyncMessage;
    let entries = |cache: &Cache| match cache.push_after(0) {
        Some((SyncMessage::Push(p), _)) => p.entries.len(),
        other => panic!("expected a push, got {other:?}"),
    };
    let (_dir, limited) = cache_with(Policy::AllKeysLru, 8 << 20).await;
    fill(&limited, 0..2_000, None).await;
    let n = entries(&limited);
    // 8 MB / 16 = 512 KB of records of a little over 1 KB each.
    assert!((300..=512).contains(&n), "{n} entries in a push under 8 MB");

    let (_dir2, unlimited) = cache_with(Policy::NoEviction, 0).await;
    fill(&unlimited, 0..2_000, None).await;
    assert_eq!(entries(&unlimited), 2_000);
}
