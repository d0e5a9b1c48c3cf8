//! What the replica digest covers: values and expiries as well as keys and versions, every
//! entry holding a value whether or not it has expired at the local clock, and nothing that
//! depends on when or in which order entries arrived.
//!
//! Time is never read from the system clock: every call takes an explicit `now_ms`.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use dice_core::{Entry, Hlc, Limits, NodeId, Push, Replica, Version, VersionVector};
use proptest::prelude::*;

/// Start of every case, in milliseconds since the epoch.
const T0: u64 = 1_700_000_000_000;
const HOUR: u64 = 3_600_000;

fn node(i: u64) -> NodeId {
    NodeId::new(i).unwrap()
}

fn entry(
    key: &str,
    value: Option<&[u8]>,
    hlc_ms: u64,
    origin: u64,
    seq: u64,
    ttl: Option<u64>,
) -> Entry {
    Entry {
        key: Bytes::copy_from_slice(key.as_bytes()),
        elem: dice_core::Elem::Key,
        value: value.map(Bytes::copy_from_slice),
        version: Version {
            hlc: Hlc::new(hlc_ms, 0),
            origin: node(origin),
        },
        seq,
        expires_at_ms: ttl.map(|t| T0 + t),
    }
}

fn replica_with(entries: &[Entry], now_ms: u64) -> Replica {
    let mut r = Replica::new(node(50), Limits::default());
    for e in entries {
        r.apply(e.clone(), now_ms).unwrap();
    }
    r
}

/// (origin, key, value or tombstone, expiry offset from T0, time offset from T0)
type Raw = (u64, u8, Option<Vec<u8>>, Option<u64>, u64);

/// Entries with unique versions: per origin, seqs 1, 2, 3… and increasing timestamps.
fn entries_from(raw: &[Raw]) -> Vec<Entry> {
    let mut seq = [0u64; 4];
    let mut last = [0u64; 4];
    raw.iter()
        .map(|(o, k, v, ttl, dt)| {
            let o = *o as usize;
            let t = (T0 + dt).max(last[o] + 1);
            last[o] = t;
            seq[o] += 1;
            entry(
                &format!("k{k}"),
                v.as_deref(),
                t,
                o as u64 + 1,
                seq[o],
                *ttl,
            )
        })
        .collect()
}

fn raws() -> impl Strategy<Value = Vec<Raw>> {
    prop::collection::vec(
        (
            0..4u64,
            0..10u8,
            prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..6)),
            prop::option::weighted(0.4, 0..2 * HOUR),
            0..1_000u64,
        ),
        1..50,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Two replicas given the same entries in different orders, one with its clock an hour
    /// behind and the other an hour ahead, have the same digest; it is the one a scan computes,
    /// and it stays so as their clocks move on (past every expiry).
    #[test]
    fn same_entries_same_digest_whatever_the_clocks(
        raw in raws(),
        order in any::<u64>(),
    ) {
        let entries = entries_from(&raw);
        let mut shuffled = entries.clone();
        // A deterministic permutation of the entries from the drawn seed.
        let mut s = order | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let behind = replica_with(&entries, T0 - HOUR);
        let ahead = replica_with(&shuffled, T0 + HOUR);
        prop_assert_eq!(behind.digest(), ahead.digest());
        prop_assert_eq!(behind.digest(), behind.digest_by_scan());
        prop_assert_eq!(ahead.digest(), ahead.digest_by_scan());
        // The live key counts differ between the clocks when some entry expires in between;
        // the digest must not.
        let before = behind.digest();
        for now in [T0 - HOUR, T0, T0 + HOUR, T0 + 3 * HOUR] {
            prop_assert_eq!(behind.digest(), before, "digest moved at now {}", now);
            prop_assert!(behind.live_len(now) <= behind.entry_count());
        }
    }

    /// The kept digest equals the scanned one through writes, overwrites, deletes, remote
    /// applies and garbage collection.
    #[test]
    fn kept_digest_is_the_scanned_one(raw in raws(), gc_at in 0..3 * HOUR) {
        let mut r = Replica::new(node(9), Limits::default());
        for (i, e) in entries_from(&raw).into_iter().enumerate() {
            if i % 3 == 0 {
                r.write(e.key.clone(), e.value.clone(), e.expires_at_ms, T0 + i as u64).unwrap();
            } else {
                r.apply(e, T0).unwrap();
            }
            prop_assert_eq!(r.digest(), r.digest_by_scan());
        }
        r.gc(T0 + gc_at, 0);
        prop_assert_eq!(r.digest(), r.digest_by_scan());
    }
}

/// Same key, same version, same seq; a different value (a corrupted copy) or a different
/// expiry gives a different digest.
#[test]
fn value_and_expiry_are_covered() {
    let base = entry("k", Some(b"value-01"), T0, 1, 1, None);
    let d = |e: &Entry| replica_with(std::slice::from_ref(e), T0).digest();
    let mut flipped = base.clone();
    flipped.value = Some(Bytes::from_static(b"value-02"));
    assert_ne!(
        d(&base),
        d(&flipped),
        "a changed value must change the digest"
    );
    let mut longer = base.clone();
    longer.value = Some(Bytes::from_static(b"value-01\0"));
    assert_ne!(
        d(&base),
        d(&longer),
        "a longer value must change the digest"
    );
    let mut ttl = base.clone();
    ttl.expires_at_ms = Some(T0 + 1_000);
    assert_ne!(d(&base), d(&ttl), "an added expiry must change the digest");
    let mut ttl2 = ttl.clone();
    ttl2.expires_at_ms = Some(T0 + 1_001);
    assert_ne!(d(&ttl), d(&ttl2), "a changed expiry must change the digest");
    // Moving bytes between the key and the value is a different entry too.
    let a = entry("ab", Some(b"c"), T0, 1, 1, None);
    let b = entry("a", Some(b"bc"), T0, 1, 1, None);
    assert_ne!(d(&a), d(&b));
}

/// An expired entry stays in the digest until GC drops it, and leaves it then; a tombstone is
/// not in it at all.
#[test]
fn expired_entries_count_until_collected() {
    let live = entry("a", Some(b"1"), T0, 1, 1, None);
    let expiring = entry("b", Some(b"2"), T0, 1, 2, Some(10));
    let both = replica_with(&[live.clone(), expiring.clone()], T0);
    let only_live = replica_with(std::slice::from_ref(&live), T0);
    assert_ne!(both.digest(), only_live.digest());
    // Expired at the local clock, still held: still covered. (Received as a push, so that the
    // version vector covers the entries and GC may drop them.)
    let mut late = Replica::new(node(50), Limits::default());
    // The sender holds what it pushes: its acknowledgement makes the expired entry stable.
    let mut sender_vv = VersionVector::default();
    sender_vv.set(node(1), 2);
    let push = Push {
        from: node(1),
        sender_vv,
        entries: vec![live.clone(), expiring],
        range: None,
        pressed: false,
    };
    assert!(matches!(
        late.receive_push(push, T0 + HOUR).unwrap(),
        Some(dice_core::SyncMessage::Ack(_))
    ));
    assert_eq!(late.live_len(T0 + HOUR), 1);
    assert_eq!(late.digest(), both.digest());
    // Collected: gone from the digest.
    let mut collected = late;
    assert_eq!(collected.gc(T0 + HOUR, 1_000).dropped, 1);
    assert_eq!(collected.digest(), only_live.digest());
    assert_eq!(collected.digest(), collected.digest_by_scan());
    // A tombstone adds nothing.
    let tomb = entry("c", None, T0, 1, 3, None);
    let with_tomb = replica_with(&[live, tomb], T0);
    assert_eq!(with_tomb.digest(), only_live.digest());
}
