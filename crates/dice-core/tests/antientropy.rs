//! Anti-entropy: bucket digests kept equal to a scan, divergences made behind the protocol's
//! back repaired with bytes in proportion to the difference, equal replicas exchanging only
//! the top level, and hostile messages refused.
#![allow(clippy::unwrap_used)]

mod common;
use bytes::Bytes;
use common::catch_up;
use dice_core::antientropy::{
    self, AeMessage, AeSession, AeStats, AeStep, BUCKETS, BucketList, GROUPS, GroupDigests,
    ListItem, MAX_BUCKETS_PER_EXCHANGE,
};
use dice_core::{
    Entry, Hlc, Limits, NodeId, Replica, SyncLimits, SyncMessage, Version, VersionVector, WireError,
};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;

fn id(i: u64) -> NodeId {
    NodeId::new(i).unwrap()
}

/// One message of an exchange as it went over the wire.
#[derive(Debug)]
struct Sent {
    name: &'static str,
    bytes: usize,
    entries: usize,
    buckets: usize,
    items: usize,
}

fn describe(msg: &SyncMessage, bytes: usize) -> Sent {
    let SyncMessage::AntiEntropy(m) = msg else {
        panic!("not an anti-entropy message: {msg:?}")
    };
    let (name, entries, buckets, items) = match m {
        AeMessage::Summary { .. } => ("Summary", 0, 0, 0),
        AeMessage::NotComparable => ("NotComparable", 0, 0, 0),
        AeMessage::InSync => ("InSync", 0, 0, 0),
        AeMessage::Buckets { groups } => ("Buckets", 0, groups.len() * 32, 0),
        AeMessage::Lists { lists, .. } => (
            "Lists",
            0,
            lists.len(),
            lists.iter().map(|l| l.items.len()).sum(),
        ),
        AeMessage::Repair { entries, want, .. } => ("Repair", entries.len(), 0, want.len()),
        AeMessage::Entries { entries, .. } => ("Entries", entries.len(), 0, 0),
        AeMessage::Done { .. } => ("Done", 0, 0, 0),
    };
    Sent {
        name,
        bytes,
        entries,
        buckets,
        items,
    }
}

/// Runs a whole exchange started by `a` with `b`, every message through the wire.
fn exchange(a: &mut Replica, b: &mut Replica, now: u64) -> (AeStats, Vec<Sent>) {
    let limits = SyncLimits::default();
    let wire = |m: &SyncMessage, log: &mut Vec<Sent>| {
        let bytes = m.encode(&limits).unwrap();
        log.push(describe(m, bytes.len()));
        SyncMessage::decode(&bytes, &limits).unwrap()
    };
    let mut log = Vec::new();
    let (mut session, mut msg) = AeSession::start(a).expect("nothing past the vv");
    loop {
        let SyncMessage::AntiEntropy(req) = wire(&msg, &mut log) else {
            unreachable!()
        };
        let reply = antientropy::serve(b, req, &limits, now).unwrap();
        let reply = wire(&reply, &mut log);
        match session.handle(a, reply, &limits, now).unwrap() {
            AeStep::Send(next) => msg = next,
            AeStep::Done(stats) => return (stats, log),
        }
    }
}

fn kname(i: usize) -> Bytes {
    Bytes::from(format!("key{i:05}"))
}

/// `a` with `n` keys written, `b` caught up from it: equal vectors, equal data.
fn pair(n: usize) -> (Replica, Replica) {
    let mut a = Replica::new(id(1), Limits::default());
    let mut b = Replica::new(id(2), Limits::default());
    for i in 0..n {
        a.write(kname(i), Some(Bytes::from(vec![b'v'; 100])), None, T0)
            .unwrap();
    }
    catch_up(&mut b, &mut a, T0);
    assert_eq!(a.digest(), b.digest());
    (a, b)
}

fn assert_buckets_kept(r: &Replica) {
    let scan = r.bucket_digests_by_scan();
    assert_eq!(r.bucket_digests(), scan.as_slice(), "kept bucket digests");
    let sum = scan.iter().fold(0u64, |a, &b| a.wrapping_add(b));
    assert_eq!(sum, r.digest(), "buckets add up to the digest");
    assert_eq!(r.digest(), r.digest_by_scan(), "kept digest");
}

fn total_bytes(log: &[Sent]) -> usize {
    log.iter().map(|s| s.bytes).sum()
}

#[test]
fn equal_replicas_exchange_only_the_top_level() {
    let (mut a, mut b) = pair(10_000);
    let (stats, log) = exchange(&mut a, &mut b, T0);
    let names: Vec<&str> = log.iter().map(|s| s.name).collect();
    assert_eq!(names, ["Summary", "InSync"]);
    assert!(stats.compared && !stats.repaired());
    // A version vector, 32 group digests, and a two-byte answer.
    assert!(total_bytes(&log) < 400, "{log:?}");
    eprintln!("equal replicas of 10000 keys: {} bytes", total_bytes(&log));
    assert_eq!(a.stats().ae_compared, 1);
    assert_eq!((a.stats().repairs, b.stats().repairs), (0, 0));
}

/// The three divergences a lost or damaged row makes, one key among 10 000 each time: the
/// responder holds an older version, the responder lost the key, the initiator lost it.
#[test]
fn one_divergent_key_among_10000_is_repaired_with_a_handful_of_bytes() {
    for case in ["responder older", "responder lost it", "initiator lost it"] {
        let (mut a, mut b) = pair(10_000);
        let k = kname(4242);
        let good = a.entry(&k).unwrap();
        let digest = a.digest();
        match case {
            "responder older" => {
                let older = Entry {
                    value: Some(Bytes::from_static(b"damaged")),
                    version: Version {
                        hlc: Hlc::from_u64(good.version.hlc.as_u64() - 1),
                        ..good.version
                    },
                    ..good.clone()
                };
                b.set_behind_protocol(&k, Some(&older));
            }
            "responder lost it" => b.set_behind_protocol(&k, None),
            _ => a.set_behind_protocol(&k, None),
        }
        assert_ne!(a.digest(), b.digest(), "{case}: diverged");
        assert_eq!(a.vv(), b.vv(), "{case}: behind the protocol's back");
        // A catch-up sees nothing to do: the version vectors are equal.
        catch_up(&mut b, &mut a, T0);
        assert_ne!(a.digest(), b.digest(), "{case}: catch-up does not repair");

        let (stats, log) = exchange(&mut a, &mut b, T0);
        assert_eq!(a.digest(), digest, "{case}");
        assert_eq!(b.digest(), digest, "{case}");
        assert_eq!(b.entry(&k), Some(good.clone()), "{case}");
        assert_eq!(a.entry(&k), Some(good), "{case}");
        assert!(stats.repaired(), "{case}: {stats:?}");
        assert_eq!(stats.applied_here + stats.applied_there, 1, "{case}");
        let repaired = a.stats().repaired_entries + b.stats().repaired_entries;
        assert_eq!(repaired, 1, "{case}");
        assert_eq!(a.stats().repairs + b.stats().repairs, 1, "{case}");
        // Bytes in proportion to the difference: one group of bucket digests, one bucket
        // listed (about ten keys of 10 000), one or two entries.
        let lists: Vec<&Sent> = log.iter().filter(|s| s.name == "Lists").collect();
        assert_eq!(lists.len(), 1, "{case}: {log:?}");
        assert_eq!(lists[0].buckets, 1, "{case}: {log:?}");
        assert!(lists[0].items <= 40, "{case}: {log:?}");
        let entries: usize = log.iter().map(|s| s.entries).sum();
        assert!((1..=2).contains(&entries), "{case}: {log:?}");
        assert!(total_bytes(&log) < 3_000, "{case}: {log:?}");
        eprintln!(
            "{case}: 1 differing key of 10000: {} bytes in {} messages: {log:?}",
            total_bytes(&log),
            log.len()
        );
        // Repaired: the next exchange finds nothing.
        let (again, log) = exchange(&mut a, &mut b, T0);
        assert!(!again.repaired() && log.len() == 2, "{case}: {log:?}");
        assert_buckets_kept(&a);
        assert_buckets_kept(&b);
    }
}

/// Many differing keys are repaired too, in as many exchanges as the per-exchange bucket
/// bound needs.
#[test]
fn many_divergent_keys_are_repaired_over_a_few_exchanges() {
    let (mut a, mut b) = pair(2_000);
    for i in (0..2_000).step_by(7) {
        b.set_behind_protocol(&kname(i), None);
    }
    let mut exchanges = 0;
    while a.digest() != b.digest() {
        let (stats, _) = exchange(&mut a, &mut b, T0);
        assert!(stats.repaired());
        assert!(stats.differing_buckets <= MAX_BUCKETS_PER_EXCHANGE);
        exchanges += 1;
        assert!(exchanges < 20, "not repaired after {exchanges} exchanges");
    }
    assert_eq!(b.stats().repaired_entries, 2_000_u64.div_ceil(7));
    assert_eq!(a.stats().ae_compared, exchanges);
}

#[test]
fn different_version_vectors_are_not_compared() {
    let (mut a, mut b) = pair(100);
    b.set_behind_protocol(&kname(3), None);
    a.write(kname(200), Some(Bytes::from_static(b"new")), None, T0)
        .unwrap();
    let (stats, log) = exchange(&mut a, &mut b, T0);
    let names: Vec<&str> = log.iter().map(|s| s.name).collect();
    assert_eq!(names, ["Summary", "NotComparable"]);
    assert!(!stats.compared && !stats.repaired());
    assert_eq!(b.entry(&kname(3)), None);
    assert_eq!(a.stats().ae_compared, 0);
}

#[test]
fn a_replica_holding_writes_past_its_vector_starts_no_exchange() {
    let (mut a, mut b) = pair(10);
    let e1 = a.write(kname(50), Some("x".into()), None, T0).unwrap();
    let e2 = a.write(kname(51), Some("y".into()), None, T0).unwrap();
    b.apply(e2, T0).unwrap(); // seq 12 without seq 11: a gap
    assert!(AeSession::start(&b).is_none());
    // And as responder it does not compare either.
    let (_, log) = exchange(&mut a, &mut b, T0);
    assert_eq!(log[1].name, "NotComparable");
    drop(e1);
    catch_up(&mut b, &mut a, T0); // fills the gap
    assert!(AeSession::start(&b).is_some());
}

#[test]
fn same_version_different_contents_is_a_counted_conflict_left_alone() {
    let (mut a, mut b) = pair(100);
    let k = kname(7);
    let mut bad = b.entry(&k).unwrap();
    bad.value = Some(Bytes::from_static(b"bit rot"));
    b.set_behind_protocol(&k, Some(&bad));
    let (stats, _) = exchange(&mut a, &mut b, T0);
    assert_eq!(stats.conflicts, 1);
    assert!(!stats.repaired());
    assert_eq!(b.entry(&k), Some(bad));
    assert_eq!(
        (a.stats().repair_conflicts, b.stats().repair_conflicts),
        (1, 1)
    );
}

/// An expired entry collected on one side and not yet on the other makes the digests differ
/// (they cover expired values until GC drops them): the exchange sends it, the side that
/// collected it ignores it, and nothing is counted as a repair, in either direction.
#[test]
fn a_dead_entry_collected_on_one_side_only_is_not_a_repair() {
    let grace = 1_000;
    for initiator_collected in [false, true] {
        let mut a = Replica::new(id(1), Limits::default());
        let mut b = Replica::new(id(2), Limits::default());
        a.write("ttl".into(), Some("v".into()), Some(T0 + 10), T0)
            .unwrap();
        a.write("keep".into(), Some("v".into()), None, T0).unwrap();
        catch_up(&mut b, &mut a, T0);
        catch_up(&mut a, &mut b, T0);
        let later = T0 + 10 * grace;
        let collector = if initiator_collected { &mut a } else { &mut b };
        assert_eq!(collector.gc(later, grace).dropped, 1);
        assert_ne!(a.digest(), b.digest());
        let (stats, log) = exchange(&mut a, &mut b, later);
        assert!(stats.compared, "{log:?}");
        assert!(!stats.repaired(), "{log:?}");
        assert_eq!(a.stats().repaired_entries + b.stats().repaired_entries, 0);
        let collector = if initiator_collected { &a } else { &b };
        assert_eq!(collector.entry(b"ttl"), None, "not brought back");
        assert!(collector.stats().stale_ignored > 0);
    }
}

/// Tombstones are not in the bucket digests (as not in the digest), but they are in the
/// lists: a tombstone newer than a value the other side holds repairs it.
#[test]
fn a_newer_tombstone_repairs_an_older_value() {
    let (mut a, mut b) = pair(50);
    let k = kname(9);
    let old = a.entry(&k).unwrap();
    let del = a.write(k.clone(), None, None, T0).unwrap();
    b.apply(del.clone(), T0).unwrap();
    catch_up(&mut b, &mut a, T0);
    assert_eq!(a.vv(), b.vv());
    b.set_behind_protocol(&k, Some(&old)); // B's tombstone reverted to the value
    assert!(b.get(&k, T0).is_some());
    let (stats, _) = exchange(&mut b, &mut a, T0);
    assert!(stats.repaired());
    assert_eq!(b.entry(&k), Some(del));
    assert_eq!(b.get(&k, T0), None);
    assert_eq!(a.digest(), b.digest());
}

// ------------------------------------------------------------------------------------------
// Bucket digests follow every change
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Write {
        node: bool,
        key: u8,
        val: Option<u8>,
        ttl: Option<u16>,
    },
    Apply {
        from_a: bool,
        key: u8,
    },
    Advance(u16),
    Gc {
        node: bool,
    },
    Sync,
    Damage {
        node: bool,
        key: u8,
        drop: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), 0..40u8, prop::option::weighted(0.8, any::<u8>()), prop::option::of(1..500u16))
            .prop_map(|(node, key, val, ttl)| Op::Write { node, key, val, ttl }),
        2 => (any::<bool>(), 0..40u8).prop_map(|(from_a, key)| Op::Apply { from_a, key }),
        2 => (1..400u16).prop_map(Op::Advance),
        2 => any::<bool>().prop_map(|node| Op::Gc { node }),
        1 => Just(Op::Sync),
        1 => (any::<bool>(), 0..40u8, any::<bool>()).prop_map(|(node, key, drop)| Op::Damage { node, key, drop }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Through writes, deletes, TTLs, applies, catch-ups, GC and damage, each replica's kept
    /// bucket digests equal a from-scratch computation and add up to its digest; and an
    /// exchange between replicas with equal vectors leaves them with equal digests.
    #[test]
    fn bucket_digests_equal_a_scan(ops in prop::collection::vec(op(), 1..120)) {
        let mut r = [Replica::new(id(1), Limits::default()), Replica::new(id(2), Limits::default())];
        for x in &mut r {
            x.set_member_horizon_ms(100_000);
        }
        let mut now = T0;
        for op in &ops {
            match *op {
                Op::Write { node, key, val, ttl } => {
                    let v = val.map(|b| Bytes::from(vec![b; 3]));
                    r[usize::from(node)].write(kname(key.into()), v, ttl.map(|t| now + u64::from(t)), now).unwrap();
                }
                Op::Apply { from_a, key } => {
                    let (src, dst) = if from_a { (0, 1) } else { (1, 0) };
                    if let Some(e) = r[src].entry(&kname(key.into())) {
                        r[dst].apply(e, now).unwrap();
                    }
                }
                Op::Advance(ms) => now += u64::from(ms),
                Op::Gc { node } => {
                    r[usize::from(node)].gc(now, 200);
                }
                Op::Sync => {
                    let [x, y] = &mut r;
                    catch_up(x, y, now);
                    catch_up(y, x, now);
                }
                Op::Damage { node, key, drop } => {
                    let x = &mut r[usize::from(node)];
                    let k = kname(key.into());
                    match (drop, x.entry(&k)) {
                        (true, _) => x.set_behind_protocol(&k, None),
                        (false, Some(mut e)) => {
                            e.value = Some(Bytes::from_static(b"damaged"));
                            e.version.hlc = Hlc::from_u64(e.version.hlc.as_u64().saturating_sub(1).max(1));
                            x.set_behind_protocol(&k, Some(&e));
                        }
                        (false, None) => {}
                    }
                }
            }
            for x in &r {
                assert_buckets_kept(x);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Hostile messages
// ------------------------------------------------------------------------------------------

fn decode_ae(m: AeMessage) -> Result<SyncMessage, WireError> {
    let limits = SyncLimits::default();
    let bytes = SyncMessage::AntiEntropy(m).encode(&limits).unwrap();
    SyncMessage::decode(&bytes, &limits)
}

#[test]
fn malformed_anti_entropy_messages_are_refused_at_decode() {
    let item = |key_hash: u64| ListItem {
        key_hash,
        version: Version::default(),
        entry_hash: 0,
    };
    let bad = [
        AeMessage::Summary {
            from: id(1),
            vv: VersionVector::default(),
            groups: vec![0; GROUPS + 1],
        },
        AeMessage::Buckets {
            groups: vec![GroupDigests {
                group: GROUPS as u16,
                buckets: vec![0; 32],
            }],
        },
        AeMessage::Buckets {
            groups: vec![GroupDigests {
                group: 0,
                buckets: vec![0; 31],
            }],
        },
        AeMessage::Lists {
            from: id(1),
            vv: VersionVector::default(),
            lists: vec![BucketList {
                bucket: BUCKETS as u16,
                items: vec![],
            }],
        },
        AeMessage::Lists {
            from: id(1),
            vv: VersionVector::default(),
            lists: (0..=MAX_BUCKETS_PER_EXCHANGE as u16)
                .map(|bucket| BucketList {
                    bucket,
                    items: vec![],
                })
                .collect(),
        },
        // An item whose key hash belongs to another bucket.
        AeMessage::Lists {
            from: id(1),
            vv: VersionVector::default(),
            lists: vec![BucketList {
                bucket: 0,
                items: vec![item(u64::MAX)],
            }],
        },
        AeMessage::Repair {
            vv: VersionVector::default(),
            entries: vec![],
            want: vec![0; antientropy::MAX_LIST_ITEMS + 1],
            conflicts: 0,
        },
    ];
    for m in bad {
        let what = format!("{m:?}").chars().take(60).collect::<String>();
        assert!(
            matches!(decode_ae(m), Err(WireError::Invalid(_))),
            "accepted {what}"
        );
    }
    // A well-formed one passes.
    assert!(
        decode_ae(AeMessage::Lists {
            from: id(1),
            vv: VersionVector::default(),
            lists: vec![BucketList {
                bucket: 0,
                items: vec![item(1)],
            }],
        })
        .is_ok()
    );
}

#[test]
fn an_answer_outside_of_an_exchange_is_an_error() {
    let mut r = Replica::new(id(1), Limits::default());
    let limits = SyncLimits::default();
    for m in [
        AeMessage::InSync,
        AeMessage::NotComparable,
        AeMessage::Done { applied: 3 },
    ] {
        assert!(antientropy::serve(&mut r, m, &limits, T0).is_err());
    }
}

/// A counter's bucket digest covers what counts: a contribution lost behind the protocol's
/// back is found and repaired, the counter reading the same on both sides after.
#[test]
fn a_lost_counter_contribution_is_repaired() {
    use dice_core::{Elem, Increment};
    let (mut a, mut b) = pair(50);
    a.incr("hits".into(), Increment::Int(5), T0).unwrap();
    b.incr("hits".into(), Increment::Int(2), T0).unwrap();
    catch_up(&mut b, &mut a, T0);
    catch_up(&mut a, &mut b, T0);
    assert_eq!(a.get(b"hits", T0), Some(&b"7"[..]));
    assert_eq!(a.digest(), b.digest());
    assert_buckets_kept(&a);
    // b loses a's contribution behind the protocol's back.
    let gone = b.element(b"hits", Elem::Count(id(1))).unwrap();
    remove_element(&mut b, &gone);
    assert_eq!(b.get(b"hits", T0), Some(&b"2"[..]));
    assert_buckets_kept(&b);
    assert_ne!(a.digest(), b.digest());
    let (stats, log) = exchange(&mut b, &mut a, T0);
    assert!(stats.repaired(), "{log:?}");
    assert_eq!(b.get(b"hits", T0), Some(&b"7"[..]));
    assert_eq!(a.digest(), b.digest());
    assert_buckets_kept(&b);
    // Few entries travel: the counter's element, not the map.
    assert!(log.iter().map(|s| s.entries).sum::<usize>() <= 2, "{log:?}");
}

/// Removes one element behind the protocol's back: the replica rebuilt without it, its
/// version vector and floors unchanged.
fn remove_element(r: &mut Replica, e: &Entry) {
    let keep: Vec<Entry> = r.entries().filter(|x| x != e).collect();
    let vv = r.vv().clone();
    let floors = r.floors().clone();
    *r = Replica::restore(r.id(), Limits::default(), r.last_hlc(), vv, floors, keep);
}

/// A dead counter collected on one side only is no difference to repair: its elements are
/// not listed, and nothing comes back.
#[test]
fn a_dead_counter_collected_on_one_side_only_is_not_brought_back() {
    use dice_core::Increment;
    let grace = 1_000;
    let mut a = Replica::new(id(1), Limits::default());
    let mut b = Replica::new(id(2), Limits::default());
    a.incr("c".into(), Increment::Int(3), T0).unwrap();
    a.write("keep".into(), Some("v".into()), None, T0).unwrap();
    catch_up(&mut b, &mut a, T0);
    b.write("c".into(), None, None, T0).unwrap();
    catch_up(&mut a, &mut b, T0);
    catch_up(&mut b, &mut a, T0);
    assert_eq!(a.get(b"c", T0), None);
    let later = T0 + 10 * grace;
    assert!(a.gc(later, grace).dropped >= 2);
    assert!(a.elements_of(b"c").is_empty());
    assert!(!b.elements_of(b"c").is_empty());
    assert_eq!(
        a.digest(),
        b.digest(),
        "a dead counter is not in the digest"
    );
    assert_buckets_kept(&a);
    assert_buckets_kept(&b);
    let (stats, log) = exchange(&mut a, &mut b, later);
    assert!(!stats.repaired(), "{log:?}");
    let (stats, log) = exchange(&mut b, &mut a, later);
    assert!(!stats.repaired(), "{log:?}");
    assert!(a.elements_of(b"c").is_empty(), "not brought back");
    assert_eq!(a.get(b"c", later), None);
    assert_eq!(b.get(b"c", later), None);
}
