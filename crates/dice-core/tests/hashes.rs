//! Hashes: the merge laws (commutative, associative, idempotent) over field elements written
//! on several nodes, the type rule for a key written as a string and a hash at once, what
//! `HDEL` and `DEL` remove (only what they observed: a concurrent update wins), expiry,
//! garbage collection, and that a write of one field of a large hash sends one field.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use dice_core::sync::SyncLimits;
use dice_core::{Entry, Error, Increment, KeyType, Limits, NodeId, Replica};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;
const NODES: usize = 3;

fn node(i: usize) -> NodeId {
    NodeId::new(i as u64 + 1).unwrap()
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn hset(r: &mut Replica, key: &str, pairs: &[(&str, &str)], now: u64) -> Result<usize, Error> {
    let pairs: Vec<(Bytes, Bytes)> = pairs.iter().map(|(f, v)| (b(f), b(v))).collect();
    r.hset(b(key), &pairs, false, now)
}

fn fields(r: &Replica, key: &str, now: u64) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = r
        .hash_fields(key.as_bytes(), now)
        .unwrap()
        .into_iter()
        .map(|(f, v)| {
            (
                String::from_utf8_lossy(f).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

fn sync_all(nodes: &mut [Replica], now: u64) {
    for i in 0..nodes.len() {
        for j in 0..nodes.len() {
            if i != j {
                let held: Vec<Entry> = nodes[j].entries().collect();
                for e in held {
                    nodes[i].apply(e, now).unwrap();
                }
            }
        }
    }
}

#[test]
fn hash_commands_on_one_node() {
    let mut r = Replica::new(node(0), Limits::default());
    assert_eq!(hset(&mut r, "h", &[("a", "1"), ("b", "2")], T0).unwrap(), 2);
    assert_eq!(hset(&mut r, "h", &[("a", "3"), ("c", "4")], T0).unwrap(), 1);
    // The same field twice in one HSET counts once, the last value wins (as in Redis).
    assert_eq!(hset(&mut r, "h", &[("d", "x"), ("d", "y")], T0).unwrap(), 1);
    assert_eq!(r.hget(b"h", b"a", T0).unwrap(), Some(&b"3"[..]));
    assert_eq!(r.hget(b"h", b"d", T0).unwrap(), Some(&b"y"[..]));
    assert_eq!(r.hget(b"h", b"zz", T0).unwrap(), None);
    assert_eq!(r.hlen(b"h", T0).unwrap(), 4);
    assert_eq!(r.key_type(b"h", T0), Some(KeyType::Hash));
    assert!(r.contains(b"h", T0));
    assert_eq!(r.live_len(T0), 1);
    assert_eq!(r.live_keys(T0).collect::<Vec<_>>(), vec![&b"h"[..]]);
    // HSETNX keeps a present field.
    assert_eq!(r.hset(b("h"), &[(b("a"), b("9"))], true, T0).unwrap(), 0);
    assert_eq!(r.hget(b"h", b"a", T0).unwrap(), Some(&b"3"[..]));
    assert_eq!(r.hdel(b("h"), &[b("a"), b("a"), b("nope")], T0).unwrap(), 1);
    assert_eq!(r.hlen(b"h", T0).unwrap(), 3);
    assert_eq!(
        r.hincr(b("h"), b("n"), Increment::Int(5), T0).unwrap(),
        b("5")
    );
    assert_eq!(
        r.hincr(b("h"), b("n"), Increment::Int(-7), T0).unwrap(),
        b("-2")
    );
    assert_eq!(
        r.hincr(b("h"), b("f"), Increment::Float(0.5), T0).unwrap(),
        b("0.5")
    );
    assert!(matches!(
        r.hincr(b("h"), b("d"), Increment::Int(1), T0),
        Err(Error::HashNotAnInteger)
    ));
    assert!(matches!(
        r.hincr(b("h"), b("d"), Increment::Float(1.0), T0),
        Err(Error::HashNotAFloat)
    ));
    hset(&mut r, "h", &[("big", &i64::MAX.to_string())], T0).unwrap();
    assert!(matches!(
        r.hincr(b("h"), b("big"), Increment::Int(1), T0),
        Err(Error::Overflow)
    ));
    // Strings and hashes: WRONGTYPE both ways.
    r.write(b("s"), Some(b("v")), None, T0).unwrap();
    assert!(matches!(
        hset(&mut r, "s", &[("a", "1")], T0),
        Err(Error::WrongType)
    ));
    assert!(matches!(r.hget(b"s", b"a", T0), Err(Error::WrongType)));
    assert!(matches!(
        r.hdel(b("s"), &[b("a")], T0),
        Err(Error::WrongType)
    ));
    assert_eq!(r.get(b"h", T0), None, "a hash does not read as a string");
    assert_eq!(r.digest(), r.digest_by_scan());
    assert_eq!(r.bucket_digests(), &r.bucket_digests_by_scan()[..]);
    // DEL removes every field it observed; the key is gone.
    assert!(r.remove_observed(b("h"), T0).unwrap());
    assert!(!r.contains(b"h", T0));
    assert_eq!(r.hlen(b"h", T0).unwrap(), 0);
    assert_eq!(r.live_len(T0), 1);
    assert!(!r.remove_observed(b("h"), T0).unwrap());
    // SET over a hash replaces it.
    hset(&mut r, "h2", &[("a", "1")], T0).unwrap();
    r.write(b("h2"), Some(b("str")), None, T0).unwrap();
    assert_eq!(r.key_type(b"h2", T0), Some(KeyType::String));
    assert_eq!(r.get(b"h2", T0), Some(&b"str"[..]));
    assert!(matches!(r.hget(b"h2", b"a", T0), Err(Error::WrongType)));
    assert_eq!(r.digest(), r.digest_by_scan());
}

#[test]
fn limits_and_bad_fields_are_refused_whole() {
    let limits = Limits::default()
        .with_max_key_len(16)
        .with_max_value_len(32);
    let mut r = Replica::new(node(0), limits);
    let long = "x".repeat(40);
    let err = hset(&mut r, "h", &[("ok", "1"), ("f", &long)], T0).unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { .. }), "{err}");
    assert_eq!(
        r.hlen(b"h", T0).unwrap(),
        0,
        "nothing of a refused HSET is written"
    );
    assert_eq!(r.entry_count(), 0);
    // A peer's field must name itself: a value whose name hashes to another id is refused.
    let mut a = Replica::new(node(0), Limits::default());
    a.record_changes(true);
    hset(&mut a, "h", &[("f", "v")], T0).unwrap();
    let mut e = a.take_changes().pop().unwrap().entry.unwrap();
    e.value = Some(dice_core::entry::encode_field(b"other", b"v"));
    let mut c = Replica::new(node(1), Limits::default());
    assert!(matches!(c.apply(e, T0), Err(Error::InvalidEntry { .. })));
}

#[test]
fn fields_written_apart_all_survive_and_the_later_write_of_a_field_wins() {
    let mut nodes: Vec<Replica> = (0..2)
        .map(|i| Replica::new(node(i), Limits::default()))
        .collect();
    hset(&mut nodes[0], "h", &[("a", "from-0"), ("same", "0")], T0).unwrap();
    hset(&mut nodes[1], "h", &[("b", "from-1")], T0 + 1).unwrap();
    hset(&mut nodes[1], "h", &[("same", "1")], T0 + 2).unwrap();
    sync_all(&mut nodes, T0 + 3);
    let want = vec![
        ("a".to_owned(), "from-0".to_owned()),
        ("b".to_owned(), "from-1".to_owned()),
        ("same".to_owned(), "1".to_owned()),
    ];
    for n in &nodes {
        assert_eq!(fields(n, "h", T0 + 3), want);
    }
    assert_eq!(nodes[0].digest(), nodes[1].digest());
    // HDEL on one node, HSET of another field on the other: both apply.
    nodes[0].hdel(b("h"), &[b("a")], T0 + 4).unwrap();
    hset(&mut nodes[1], "h", &[("c", "new")], T0 + 4).unwrap();
    sync_all(&mut nodes, T0 + 5);
    for n in &nodes {
        assert_eq!(
            fields(n, "h", T0 + 5),
            vec![
                ("b".to_owned(), "from-1".to_owned()),
                ("c".to_owned(), "new".to_owned()),
                ("same".to_owned(), "1".to_owned()),
            ]
        );
    }
    // DEL removes what it observed; a field written concurrently elsewhere survives.
    nodes[0].remove_observed(b("h"), T0 + 6).unwrap();
    hset(&mut nodes[1], "h", &[("d", "unseen")], T0 + 6).unwrap();
    sync_all(&mut nodes, T0 + 7);
    for n in &nodes {
        assert_eq!(
            fields(n, "h", T0 + 7),
            vec![("d".to_owned(), "unseen".to_owned())]
        );
    }
    assert_eq!(nodes[0].digest(), nodes[1].digest());
}

#[test]
fn an_update_concurrent_with_hdel_or_del_wins_on_every_node() {
    // The update's clock behind, then ahead, of the removal's: it wins either way.
    for (t_del, t_set) in [(T0 + 20, T0 + 10), (T0 + 10, T0 + 20)] {
        let mut nodes: Vec<Replica> = (0..3)
            .map(|i| Replica::new(node(i), Limits::default()))
            .collect();
        hset(&mut nodes[0], "h", &[("f", "old"), ("g", "old")], T0).unwrap();
        sync_all(&mut nodes, T0 + 1);
        // Apart: node 0 deletes f and the whole hash; node 1 updates both fields.
        assert_eq!(nodes[0].hdel(b("h"), &[b("f")], t_del).unwrap(), 1);
        assert!(nodes[0].remove_observed(b("h"), t_del + 1).unwrap());
        assert!(!nodes[0].contains(b"h", t_del + 1));
        hset(&mut nodes[1], "h", &[("f", "new"), ("g", "new")], t_set).unwrap();
        sync_all(&mut nodes, T0 + 30);
        let want = vec![
            ("f".to_owned(), "new".to_owned()),
            ("g".to_owned(), "new".to_owned()),
        ];
        for n in &nodes {
            assert_eq!(
                fields(n, "h", T0 + 30),
                want,
                "removal at {t_del}, update at {t_set}"
            );
            assert_eq!(n.digest(), n.digest_by_scan());
        }
        assert_eq!(nodes[0].digest(), nodes[1].digest());
        assert_eq!(nodes[1].digest(), nodes[2].digest());
        // A removal that observed the update removes it everywhere.
        assert_eq!(nodes[2].hdel(b("h"), &[b("f")], T0 + 31).unwrap(), 1);
        sync_all(&mut nodes, T0 + 32);
        for n in &nodes {
            assert_eq!(
                fields(n, "h", T0 + 32),
                vec![("g".to_owned(), "new".to_owned())]
            );
        }
    }
}

#[test]
fn increments_of_a_field_made_apart_all_count() {
    let mut nodes: Vec<Replica> = (0..3)
        .map(|i| Replica::new(node(i), Limits::default()))
        .collect();
    let incr = |r: &mut Replica, by: i64, now: u64| {
        r.hincr(b("h"), b("n"), Increment::Int(by), now).unwrap()
    };
    assert_eq!(incr(&mut nodes[0], 5, T0), b("5"));
    sync_all(&mut nodes, T0 + 1);
    // Apart: every node increments the same field.
    assert_eq!(incr(&mut nodes[0], 1, T0 + 2), b("6"));
    assert_eq!(incr(&mut nodes[1], 10, T0 + 2), b("15"));
    assert_eq!(incr(&mut nodes[2], -3, T0 + 3), b("2"));
    sync_all(&mut nodes, T0 + 4);
    for n in &nodes {
        assert_eq!(n.hget(b"h", b"n", T0 + 4).unwrap(), Some(&b"13"[..]));
        assert_eq!(n.hlen(b"h", T0 + 4).unwrap(), 1);
        assert_eq!(n.key_type(b"h", T0 + 4), Some(KeyType::Hash));
        assert_eq!(n.digest(), n.digest_by_scan());
        assert_eq!(n.bucket_digests(), &n.bucket_digests_by_scan()[..]);
    }
    assert_eq!(nodes[0].digest(), nodes[1].digest());
    assert_eq!(nodes[0].digest(), nodes[2].digest());
    // HSET on one node resets what it observed; an increment made meanwhile elsewhere stays.
    hset(&mut nodes[0], "h", &[("n", "100")], T0 + 5).unwrap();
    incr(&mut nodes[1], 7, T0 + 5);
    sync_all(&mut nodes, T0 + 6);
    for n in &nodes {
        assert_eq!(n.hget(b"h", b"n", T0 + 6).unwrap(), Some(&b"107"[..]));
    }
    // HDEL likewise: the field reads as the increments it did not observe.
    assert_eq!(nodes[2].hdel(b("h"), &[b("n")], T0 + 7).unwrap(), 1);
    assert_eq!(nodes[2].hget(b"h", b"n", T0 + 7).unwrap(), None);
    incr(&mut nodes[0], 2, T0 + 7);
    incr(&mut nodes[0], 2, T0 + 8);
    sync_all(&mut nodes, T0 + 9);
    for n in &nodes {
        assert_eq!(n.hget(b"h", b"n", T0 + 9).unwrap(), Some(&b"4"[..]));
    }
    // DEL of the hash likewise, and an HDEL that observed everything removes the field.
    assert!(nodes[1].remove_observed(b("h"), T0 + 10).unwrap());
    incr(&mut nodes[2], 1, T0 + 10);
    sync_all(&mut nodes, T0 + 11);
    for n in &nodes {
        assert_eq!(n.hget(b"h", b"n", T0 + 11).unwrap(), Some(&b"1"[..]));
    }
    nodes[0].hdel(b("h"), &[b("n")], T0 + 12).unwrap();
    sync_all(&mut nodes, T0 + 13);
    for n in &nodes {
        assert!(!n.contains(b"h", T0 + 13));
        assert_eq!(n.digest(), n.digest_by_scan());
    }
    assert_eq!(nodes[0].digest(), nodes[2].digest());
    // Float increments count as well, and an integer increment of a float is refused.
    let f = nodes[0]
        .hincr(b("h"), b("x"), Increment::Float(0.5), T0 + 14)
        .unwrap();
    assert_eq!(f, b("0.5"));
    nodes[1]
        .hincr(b("h"), b("x"), Increment::Float(1.25), T0 + 14)
        .unwrap();
    sync_all(&mut nodes, T0 + 15);
    for n in &nodes {
        assert_eq!(n.hget(b"h", b"x", T0 + 15).unwrap(), Some(&b"1.75"[..]));
    }
    assert!(matches!(
        nodes[0].hincr(b("h"), b("x"), Increment::Int(1), T0 + 16),
        Err(Error::HashNotAnInteger)
    ));
    // The value a field counts from is its value (an HSET), and overflow is refused on it.
    hset(
        &mut nodes[0],
        "h",
        &[("big", &(i64::MAX - 1).to_string())],
        T0 + 17,
    )
    .unwrap();
    assert_eq!(
        nodes[0]
            .hincr(b("h"), b("big"), Increment::Int(1), T0 + 17)
            .unwrap(),
        Bytes::from(i64::MAX.to_string())
    );
    assert!(matches!(
        nodes[0].hincr(b("h"), b("big"), Increment::Int(1), T0 + 18),
        Err(Error::Overflow)
    ));
}

#[test]
fn eviction_of_a_hash_resets_what_it_observed_of_its_counter_fields() {
    let mut nodes: Vec<Replica> = (0..2)
        .map(|i| Replica::new(node(i), Limits::default()))
        .collect();
    nodes[0]
        .hincr(b("h"), b("n"), Increment::Int(3), T0)
        .unwrap();
    nodes[1]
        .hincr(b("h"), b("n"), Increment::Int(4), T0)
        .unwrap();
    sync_all(&mut nodes, T0 + 1);
    assert!(nodes[0].evict(b("h"), T0 + 2).unwrap());
    assert!(!nodes[0].contains(b"h", T0 + 2));
    // An increment the eviction did not observe survives it everywhere.
    nodes[1]
        .hincr(b("h"), b("n"), Increment::Int(5), T0 + 2)
        .unwrap();
    sync_all(&mut nodes, T0 + 3);
    for n in &nodes {
        assert_eq!(n.hget(b"h", b"n", T0 + 3).unwrap(), Some(&b"5"[..]));
        assert_eq!(n.digest(), n.digest_by_scan());
    }
    assert_eq!(nodes[0].digest(), nodes[1].digest());
}

#[test]
fn field_counters_are_collected_once_deleted() {
    let mut r = Replica::new(node(0), Limits::default());
    r.set_member_horizon_ms(0);
    r.hincr(b("h"), b("n"), Increment::Int(1), T0).unwrap();
    r.hincr(b("h"), b("m"), Increment::Int(1), T0).unwrap();
    hset(&mut r, "h", &[("m", "5")], T0).unwrap();
    r.hincr(b("h"), b("m"), Increment::Int(1), T0).unwrap();
    hset(&mut r, "keep", &[("x", "1")], T0).unwrap();
    r.hincr(b("keep"), b("y"), Increment::Int(2), T0).unwrap();
    // used_memory counts each counter field's index entry as a typed key.
    assert_eq!(r.memory().typed_keys, 3);
    assert!(r.remove_observed(b("h"), T0).unwrap());
    assert!(!r.contains(b"h", T0));
    // Alone, a replica waits one member horizon (0 here) before it collects.
    r.gc(T0 + 1_000, 100);
    r.gc(T0 + 1_001, 100);
    assert_eq!(
        r.memory().typed_keys,
        1,
        "only keep's counter field is left"
    );
    let left: Vec<_> = r.entries().filter(|e| e.key.as_ref() != b"keep").collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        fields(&r, "keep", T0 + 2_000),
        vec![("x".into(), "1".into()), ("y".into(), "2".into())]
    );
    assert_eq!(r.digest(), r.digest_by_scan());
    assert_eq!(r.bucket_digests(), &r.bucket_digests_by_scan()[..]);
    // The next increment starts from nothing.
    r.hincr(b("h"), b("n"), Increment::Int(4), T0 + 2_001)
        .unwrap();
    assert_eq!(r.hget(b"h", b"n", T0 + 2_001).unwrap(), Some(&b"4"[..]));
}

#[test]
fn on_a_hash_with_an_expiry_an_increment_writes_the_value() {
    let mut r = Replica::new(node(0), Limits::default());
    hset(&mut r, "h", &[("a", "1")], T0).unwrap();
    r.hincr(b("h"), b("n"), Increment::Int(2), T0).unwrap();
    assert!(r.expire_hash(b("h"), Some(T0 + 5_000), T0 + 1).unwrap());
    assert_eq!(r.hget(b"h", b"n", T0 + 1).unwrap(), Some(&b"2"[..]));
    assert_eq!(
        r.hincr(b("h"), b("n"), Increment::Int(3), T0 + 2).unwrap(),
        b("5")
    );
    assert_eq!(r.key_expiry(b"h", T0 + 2), Some(Some(T0 + 5_000)));
    assert_eq!(r.hget(b"h", b"n", T0 + 4_999).unwrap(), Some(&b"5"[..]));
    assert!(!r.contains(b"h", T0 + 5_000));
    assert_eq!(r.digest(), r.digest_by_scan());
}

#[test]
fn a_removal_removes_what_its_observed_write_had_replaced() {
    // Node 1 writes f before node 0 does, unseen; node 0's later write replaces it (LWW),
    // and node 0's HDEL of what it saw removes both: node 1's older write had already lost.
    let mut nodes: Vec<Replica> = (0..2)
        .map(|i| Replica::new(node(i), Limits::default()))
        .collect();
    hset(&mut nodes[1], "h", &[("f", "older")], T0).unwrap();
    hset(&mut nodes[0], "h", &[("f", "newer")], T0 + 5).unwrap();
    nodes[0].hdel(b("h"), &[b("f")], T0 + 6).unwrap();
    sync_all(&mut nodes, T0 + 7);
    for n in &nodes {
        assert_eq!(fields(n, "h", T0 + 7), Vec::<(String, String)>::new());
        assert!(!n.contains(b"h", T0 + 7));
    }
}

#[test]
fn a_field_removal_claiming_a_later_write_is_refused() {
    let mut a = Replica::new(node(0), Limits::default());
    hset(&mut a, "h", &[("f", "v")], T0).unwrap();
    a.record_changes(true);
    a.hdel(b("h"), &[b("f")], T0 + 1).unwrap();
    let mut tomb = a.take_changes().pop().unwrap().entry.unwrap();
    assert!(tomb.value.is_none());
    let observed = tomb.expires_at_ms.unwrap();
    assert!(observed < tomb.version.hlc.as_u64());
    let mut b_ = Replica::new(node(1), Limits::default());
    assert!(b_.apply(tomb.clone(), T0 + 1).unwrap());
    // Observing a write at or after itself would remove writes made after it: refused.
    tomb.expires_at_ms = Some(tomb.version.hlc.as_u64());
    let mut c = Replica::new(node(2), Limits::default());
    let err = c.apply(tomb, T0 + 1).unwrap_err();
    assert!(matches!(err, Error::InvalidEntry { .. }), "{err}");
    assert_eq!(c.entry_count(), 0);
}

#[test]
fn a_string_and_a_hash_written_at_once_end_the_same_everywhere() {
    for hash_later in [false, true] {
        let mut nodes: Vec<Replica> = (0..2)
            .map(|i| Replica::new(node(i), Limits::default()))
            .collect();
        let (ts, th) = if hash_later {
            (T0, T0 + 5)
        } else {
            (T0 + 5, T0)
        };
        nodes[0].write(b("k"), Some(b("s")), None, ts).unwrap();
        hset(&mut nodes[1], "k", &[("f", "v")], th).unwrap();
        sync_all(&mut nodes, T0 + 10);
        for n in &nodes {
            let now = T0 + 10;
            if hash_later {
                assert_eq!(n.key_type(b"k", now), Some(KeyType::Hash));
                assert_eq!(n.get(b"k", now), None);
                assert_eq!(n.hget(b"k", b"f", now).unwrap(), Some(&b"v"[..]));
            } else {
                assert_eq!(n.key_type(b"k", now), Some(KeyType::String));
                assert_eq!(n.get(b"k", now), Some(&b"s"[..]));
                assert!(matches!(n.hget(b"k", b"f", now), Err(Error::WrongType)));
            }
            assert_eq!(n.live_len(now), 1);
            assert_eq!(n.live_keys(now).count(), 1);
        }
        assert_eq!(nodes[0].digest(), nodes[1].digest());
        // A DEL on either node then removes both.
        nodes[0].remove_observed(b("k"), T0 + 11).unwrap();
        sync_all(&mut nodes, T0 + 12);
        for n in &nodes {
            assert!(!n.contains(b"k", T0 + 12));
        }
    }
}

#[test]
fn expiry_covers_the_whole_hash_and_new_fields_take_it() {
    let mut r = Replica::new(node(0), Limits::default());
    hset(&mut r, "h", &[("a", "1"), ("b", "2")], T0).unwrap();
    assert_eq!(r.key_expiry(b"h", T0), Some(None));
    assert!(r.expire_hash(b("h"), Some(T0 + 100), T0).unwrap());
    assert_eq!(r.key_expiry(b"h", T0), Some(Some(T0 + 100)));
    hset(&mut r, "h", &[("c", "3")], T0 + 1).unwrap();
    assert_eq!(r.key_expiry(b"h", T0 + 1), Some(Some(T0 + 100)));
    assert_eq!(r.hlen(b"h", T0 + 99).unwrap(), 3);
    assert_eq!(r.hlen(b"h", T0 + 100).unwrap(), 0);
    assert!(!r.contains(b"h", T0 + 100));
    assert_eq!(r.live_len(T0 + 100), 0);
    assert_eq!(r.key_expiry(b"h", T0 + 100), None);
    // An expired hash is a new one for HSET: no expiry.
    hset(&mut r, "h", &[("z", "1")], T0 + 200).unwrap();
    assert_eq!(r.key_expiry(b"h", T0 + 200), Some(None));
    assert_eq!(fields(&r, "h", T0 + 200), vec![("z".into(), "1".into())]);
    // PERSIST.
    r.expire_hash(b("h"), Some(T0 + 1000), T0 + 200).unwrap();
    r.expire_hash(b("h"), None, T0 + 201).unwrap();
    assert_eq!(r.key_expiry(b"h", T0 + 2000), Some(None));
    assert_eq!(r.digest(), r.digest_by_scan());
}

#[test]
fn garbage_collection_drops_deleted_and_expired_fields() {
    let mut r = Replica::new(node(0), Limits::default());
    r.set_member_horizon_ms(0);
    hset(&mut r, "h", &[("a", "1"), ("b", "2"), ("c", "3")], T0).unwrap();
    r.hdel(b("h"), &[b("a")], T0).unwrap();
    r.expire_hash(b("h"), Some(T0 + 10), T0).unwrap();
    hset(&mut r, "keep", &[("x", "1")], T0).unwrap();
    assert_eq!(r.entry_count(), 4);
    // Alone, a replica waits one member horizon (0 here) before it collects.
    let first = r.gc(T0 + 1_000, 100);
    let second = r.gc(T0 + 1_001, 100);
    assert_eq!(
        first.dropped + second.dropped,
        3,
        "a deleted field and two expired ones"
    );
    assert_eq!(r.entry_count(), 1, "only the live field is left");
    assert_eq!(
        fields(&r, "keep", T0 + 2_000),
        vec![("x".into(), "1".into())]
    );
    assert!(!r.contains(b"h", T0 + 2_000));
    assert_eq!(r.digest(), r.digest_by_scan());
    assert_eq!(r.bucket_digests(), &r.bucket_digests_by_scan()[..]);
}

#[test]
fn one_field_written_on_a_hash_of_100000_fields_sends_one_field() {
    let mut a = Replica::new(node(0), Limits::default());
    let mut pairs = Vec::new();
    for i in 0..100_000 {
        pairs.push((
            Bytes::from(format!("field-{i}")),
            Bytes::from(format!("value-{i}")),
        ));
    }
    a.hset(b("big"), &pairs, false, T0).unwrap();
    let before = a.local_seq();
    // The other node holds everything so far.
    let mut c = Replica::new(node(1), Limits::default());
    for e in a.entries() {
        c.apply(e, T0).unwrap();
    }
    hset(&mut a, "big", &[("field-77", "changed")], T0 + 1).unwrap();
    let (push, _) = a.push_after(before, 4096).unwrap();
    let bytes = push.encode(&SyncLimits::default()).unwrap();
    let dice_core::SyncMessage::Push(p) = &push else {
        panic!("not a push: {push:?}");
    };
    assert_eq!(p.entries.len(), 1, "one field travels");
    println!(
        "one HSET on a hash of 100000 fields: {} entry, {} bytes on the wire",
        p.entries.len(),
        bytes.len()
    );
    assert!(bytes.len() < 300, "{} bytes", bytes.len());
    c.receive_push(p.clone(), T0 + 1).unwrap();
    assert_eq!(
        c.hget(b"big", b"field-77", T0 + 1).unwrap(),
        Some(&b"changed"[..])
    );
    assert_eq!(c.hlen(b"big", T0 + 1).unwrap(), 100_000);
    assert_eq!(a.digest(), c.digest());
}

// --- merge laws ---

#[derive(Clone, Debug)]
enum Step {
    Hset { node: usize, field: u8, value: u8 },
    Hdel { node: usize, field: u8 },
    Hincr { node: usize, field: u8, by: i8 },
    Del { node: usize },
    Set { node: usize, value: u8 },
    Expire { node: usize, secs: Option<u8> },
    Pull { node: usize, from: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..NODES, 0..6u8, any::<u8>()).prop_map(|(node, field, value)| Step::Hset { node, field, value }),
        3 => (0..NODES, 0..6u8).prop_map(|(node, field)| Step::Hdel { node, field }),
        5 => (0..NODES, 0..6u8, any::<i8>()).prop_map(|(node, field, by)| Step::Hincr { node, field, by }),
        1 => (0..NODES).prop_map(|node| Step::Del { node }),
        1 => (0..NODES, any::<u8>()).prop_map(|(node, value)| Step::Set { node, value }),
        1 => (0..NODES, prop::option::of(0..20u8)).prop_map(|(node, secs)| Step::Expire { node, secs }),
        4 => (0..NODES, 0..NODES).prop_map(|(node, from)| Step::Pull { node, from }),
    ]
}

fn run(steps: &[Step]) -> Vec<Entry> {
    run_nodes(steps).1
}

/// The nodes after `steps`, and every entry they wrote.
fn run_nodes(steps: &[Step]) -> (Vec<Replica>, Vec<Entry>) {
    let mut nodes: Vec<Replica> = (0..NODES)
        .map(|i| {
            let mut r = Replica::new(node(i), Limits::default());
            r.record_changes(true);
            r
        })
        .collect();
    let mut written = Vec::new();
    let key = b("h");
    for (t, s) in steps.iter().enumerate() {
        let now = T0 + t as u64 * 1000;
        match *s {
            Step::Hset { node, field, value } => {
                let _ = nodes[node].hset(
                    key.clone(),
                    &[(Bytes::from(vec![field]), Bytes::from(vec![value]))],
                    false,
                    now,
                );
            }
            Step::Hdel { node, field } => {
                let _ = nodes[node].hdel(key.clone(), &[Bytes::from(vec![field])], now);
            }
            Step::Hincr { node, field, by } => {
                let _ = nodes[node].hincr(
                    key.clone(),
                    Bytes::from(vec![field]),
                    Increment::Int(i64::from(by)),
                    now,
                );
            }
            Step::Del { node } => {
                nodes[node].remove_observed(key.clone(), now).unwrap();
            }
            Step::Set { node, value } => {
                nodes[node]
                    .write(key.clone(), Some(Bytes::from(vec![value])), None, now)
                    .unwrap();
            }
            Step::Expire { node, secs } => {
                let at = secs.map(|s| now + u64::from(s) * 1000);
                nodes[node].expire_hash(key.clone(), at, now).unwrap();
            }
            Step::Pull { node, from } => {
                let held: Vec<Entry> = nodes[from].entries().collect();
                for e in held {
                    nodes[node].apply(e, now).unwrap();
                }
            }
        }
        for n in nodes.iter_mut() {
            written.extend(
                n.take_changes()
                    .into_iter()
                    .filter(|c| c.source == dice_core::ChangeSource::Local)
                    .filter_map(|c| c.entry),
            );
        }
    }
    (nodes, written)
}

fn replica_of<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Replica {
    let mut r = Replica::new(NodeId::new(100).unwrap(), Limits::default());
    for e in entries {
        r.apply(e.clone(), T0).unwrap();
    }
    r
}

fn merged(a: &Replica, b: &Replica) -> Replica {
    let mut r = Replica::new(NodeId::new(100).unwrap(), Limits::default());
    for e in a.entries().chain(b.entries()) {
        r.apply(e, T0).unwrap();
    }
    r
}

/// What a replica reads as, at a few times (before and after expiries), and its digest.
type Seen = (
    Vec<Entry>,
    Vec<(Option<KeyType>, Vec<(String, String)>, Option<Vec<u8>>)>,
    u64,
);

fn state(r: &Replica) -> Seen {
    let mut v: Vec<Entry> = r.entries().collect();
    v.sort_by(|a, b| (&a.key, a.elem).cmp(&(&b.key, b.elem)));
    assert_eq!(r.digest(), r.digest_by_scan(), "kept digest");
    assert_eq!(r.bucket_digests(), &r.bucket_digests_by_scan()[..]);
    let reads = [T0, T0 + 30_000, T0 + 100_000, T0 + 1_000_000]
        .iter()
        .map(|&now| {
            let f = match r.key_type(b"h", now) {
                Some(KeyType::Hash) => fields(r, "h", now),
                _ => Vec::new(),
            };
            (
                r.key_type(b"h", now),
                f,
                r.get(b"h", now).map(<[u8]>::to_vec),
            )
        })
        .collect();
    (v, reads, r.digest())
}

type Case = (Vec<Entry>, Vec<usize>, Vec<usize>);

fn case() -> impl Strategy<Value = Case> {
    prop::collection::vec(step(), 1..40).prop_flat_map(|steps| {
        let entries = run(&steps);
        let n = entries.len();
        let order = prop::collection::vec(0..n.max(1), n..=2 * n + 1).prop_map(move |mut dup| {
            dup.extend(0..n);
            dup
        });
        let order = order.prop_shuffle();
        let groups = prop::collection::vec(0..3usize, n);
        (Just(entries), order, groups)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Field elements (and the strings, deletes and expiries mixed in) applied in any order,
    /// with duplicates, give one state and one reading: commutative and idempotent.
    #[test]
    fn hash_merge_is_commutative_and_idempotent((entries, order, _g) in case()) {
        prop_assume!(!entries.is_empty());
        let reference = replica_of(&entries);
        let mut shuffled = Replica::new(NodeId::new(100).unwrap(), Limits::default());
        for &i in &order {
            shuffled.apply(entries[i].clone(), T0).unwrap();
        }
        prop_assert_eq!(state(&reference), state(&shuffled));
        for e in &entries {
            shuffled.apply(e.clone(), T0).unwrap();
        }
        prop_assert_eq!(state(&reference), state(&shuffled));
    }

    /// Whatever happened before, once the nodes have synced, an `HSET` on one node and an
    /// `HDEL` (or `DEL`) of the same field on another, made apart with any clocks, end with
    /// the update on every node.
    #[test]
    fn an_update_concurrent_with_a_removal_always_wins(
        steps in prop::collection::vec(step(), 0..30),
        field in 0..6u8,
        value in any::<u8>(),
        del_whole in any::<bool>(),
        (setter, deleter) in (0..NODES, 0..NODES).prop_filter("two nodes", |(a, b)| a != b),
        (t_set, t_del) in (0..50u64, 0..50u64),
    ) {
        let (mut nodes, _) = run_nodes(&steps);
        let end = T0 + steps.len() as u64 * 1000;
        sync_all(&mut nodes, end);
        let key = b("h");
        let name = Bytes::from(vec![field]);
        let is_string = nodes[setter].key_type(b"h", end) == Some(KeyType::String);
        prop_assume!(!is_string);
        nodes[setter]
            .hset(key.clone(), &[(name.clone(), Bytes::from(vec![value]))], false, end + t_set)
            .unwrap();
        if del_whole {
            nodes[deleter].remove_observed(key.clone(), end + t_del).unwrap();
        } else {
            let _ = nodes[deleter].hdel(key.clone(), std::slice::from_ref(&name), end + t_del);
        }
        sync_all(&mut nodes, end + 100);
        for n in &nodes {
            prop_assert_eq!(n.hget(b"h", &name, end + 100).unwrap(), Some(&[value][..]));
            prop_assert_eq!(state(n), state(&nodes[0]));
        }
    }

    /// State-based merge of replicas holding parts of the elements is associative and
    /// commutative, and merging a state with itself changes nothing.
    #[test]
    fn hash_merge_is_associative((entries, _order, groups) in case()) {
        let group = |g: usize| {
            replica_of(entries.iter().zip(&groups).filter(|(_, gi)| **gi == g).map(|(e, _)| e))
        };
        let (x, y, z) = (group(0), group(1), group(2));
        let all = replica_of(&entries);
        let left = merged(&merged(&x, &y), &z);
        let right = merged(&x, &merged(&y, &z));
        prop_assert_eq!(state(&left), state(&right));
        prop_assert_eq!(state(&left), state(&all));
        prop_assert_eq!(state(&merged(&x, &y)), state(&merged(&y, &x)));
        prop_assert_eq!(state(&merged(&left, &left)), state(&left));
    }
}
