//! Sets: the merge laws (commutative, associative, idempotent) over set elements written on
//! several nodes, add-wins checked against the `crdts` crate's `Orswot` as an oracle, the
//! type rule, what `SREM`, `SPOP`, `SMOVE` and `DEL` remove, expiry, garbage collection, the
//! validation of a peer's set elements, and that one `SADD` on a large set sends one element.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use crdts::{CmRDT, CvRDT, Orswot};
use dice_core::entry::FieldId;
use dice_core::sync::SyncLimits;
use dice_core::{Elem, Entry, Error, Increment, KeyType, Limits, NodeId, Replica, Version};
use proptest::prelude::*;

mod common;

const T0: u64 = 1_700_000_000_000;
const NODES: usize = 3;

fn node(i: usize) -> NodeId {
    NodeId::new(i as u64 + 1).unwrap()
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn bs(v: &[&str]) -> Vec<Bytes> {
    v.iter().map(|s| b(s)).collect()
}

fn members(r: &Replica, key: &str, now: u64) -> Vec<String> {
    let mut v: Vec<String> = r
        .smembers(key.as_bytes(), now)
        .unwrap()
        .into_iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
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

fn cluster() -> Vec<Replica> {
    (0..NODES)
        .map(|i| Replica::new(node(i), Limits::default()))
        .collect()
}

#[test]
fn set_commands_on_one_node() {
    let mut r = Replica::new(node(0), Limits::default());
    assert_eq!(r.sadd(b("s"), &bs(&["a", "b", "c"]), T0).unwrap(), 3);
    // Present members count 0, a member named twice once (as in Redis).
    assert_eq!(r.sadd(b("s"), &bs(&["a", "d", "d"]), T0).unwrap(), 1);
    assert_eq!(members(&r, "s", T0), ["a", "b", "c", "d"]);
    assert!(r.sismember(b"s", b"a", T0).unwrap());
    assert!(!r.sismember(b"s", b"zz", T0).unwrap());
    assert!(!r.sismember(b"nokey", b"a", T0).unwrap());
    assert_eq!(r.scard(b"s", T0).unwrap(), 4);
    assert_eq!(r.scard(b"nokey", T0).unwrap(), 0);
    assert_eq!(r.key_type(b"s", T0), Some(KeyType::Set));
    assert_eq!(KeyType::Set.name(), "set");
    assert!(r.contains(b"s", T0));
    assert_eq!(r.live_len(T0), 1);
    assert_eq!(r.live_keys(T0).collect::<Vec<_>>(), vec![&b"s"[..]]);
    assert_eq!(r.srem(b("s"), &bs(&["a", "a", "nope"]), T0).unwrap(), 1);
    assert_eq!(members(&r, "s", T0), ["b", "c", "d"]);
    // SPOP takes members away and returns them.
    let popped = r.spop(b("s"), 2, T0).unwrap();
    assert_eq!(popped.len(), 2);
    assert_eq!(r.scard(b"s", T0).unwrap(), 1);
    for p in &popped {
        assert!(!r.sismember(b"s", p, T0).unwrap());
    }
    // SMOVE: out of one set into another.
    let last = members(&r, "s", T0).pop().unwrap();
    assert!(!r.smove(b("s"), b("t"), b("nope"), T0).unwrap());
    assert!(r.smove(b("s"), b("t"), b(&last), T0).unwrap());
    assert!(!r.contains(b"s", T0), "the emptied set is gone");
    assert_eq!(members(&r, "t", T0), std::slice::from_ref(&last));
    assert!(r.smove(b("t"), b("t"), b(&last), T0).unwrap());
    assert_eq!(members(&r, "t", T0), [last]);
    // SSCAN-style pages cover every member once.
    r.sadd(
        b("big"),
        &(0..100).map(|i| b(&format!("m{i}"))).collect::<Vec<_>>(),
        T0,
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = r.set_members_after(b"big", cursor, 7, T0).unwrap();
        assert!(page.len() <= 7);
        seen.extend(page.into_iter().map(<[u8]>::to_vec));
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 100);
    assert!(r.set_random_member(b"big", T0).is_some());
    assert!(r.set_random_member(b"nokey", T0).is_none());
    // DEL of a set.
    assert!(r.remove_observed(b("big"), T0).unwrap());
    assert!(!r.contains(b"big", T0));
    assert_eq!(r.digest(), r.digest_by_scan());
    assert_eq!(r.bucket_digests(), &r.bucket_digests_by_scan()[..]);
}

#[test]
fn wrongtype_both_ways() {
    let mut r = Replica::new(node(0), Limits::default());
    r.write(b("str"), Some(b("v")), None, T0).unwrap();
    r.hset(b("h"), &[(b("f"), b("v"))], false, T0).unwrap();
    r.sadd(b("s"), &bs(&["a"]), T0).unwrap();
    for k in ["str", "h"] {
        assert!(matches!(
            r.sadd(b(k), &bs(&["x"]), T0),
            Err(Error::WrongType)
        ));
        assert!(matches!(
            r.srem(b(k), &bs(&["x"]), T0),
            Err(Error::WrongType)
        ));
        assert!(matches!(
            r.smembers(k.as_bytes(), T0),
            Err(Error::WrongType)
        ));
        assert!(matches!(r.scard(k.as_bytes(), T0), Err(Error::WrongType)));
        assert!(matches!(
            r.sismember(k.as_bytes(), b"x", T0),
            Err(Error::WrongType)
        ));
        assert!(matches!(r.spop(b(k), 1, T0), Err(Error::WrongType)));
        assert!(matches!(
            r.smove(b("s"), b(k), b("a"), T0),
            Err(Error::WrongType)
        ));
        assert!(matches!(
            r.smove(b(k), b("s"), b("a"), T0),
            Err(Error::WrongType)
        ));
    }
    assert!(matches!(
        r.hset(b("s"), &[(b("f"), b("v"))], false, T0),
        Err(Error::WrongType)
    ));
    assert!(matches!(r.hget(b"s", b"f", T0), Err(Error::WrongType)));
    assert!(matches!(r.hlen(b"s", T0), Err(Error::WrongType)));
    assert_eq!(r.get(b"s", T0), None);
    // Nothing was written by the refused commands.
    assert_eq!(members(&r, "s", T0), ["a"]);
    // A SET replaces a set (it removes every add it observed).
    r.write(b("s"), Some(b("now a string")), None, T0).unwrap();
    assert_eq!(r.key_type(b"s", T0), Some(KeyType::String));
    assert_eq!(r.sadd(b("s2"), &bs(&["x"]), T0).unwrap(), 1);
    assert_eq!(r.incr(b("fresh"), Increment::Int(1), T0).unwrap().0, b("1"));
}

#[test]
fn a_concurrent_add_wins_over_a_remove() {
    let mut n = cluster();
    n[0].sadd(b("s"), &bs(&["x", "y"]), T0).unwrap();
    sync_all(&mut n, T0);
    // Node 1 removes x and y as it saw them; node 0 adds x again at the same time, and node
    // 2 adds z.
    assert_eq!(n[1].srem(b("s"), &bs(&["x", "y"]), T0 + 1).unwrap(), 2);
    n[0].sadd(b("s"), &bs(&["x"]), T0 + 1).unwrap();
    n[2].sadd(b("s"), &bs(&["z"]), T0 + 1).unwrap();
    assert_eq!(members(&n[1], "s", T0 + 1), Vec::<String>::new());
    sync_all(&mut n, T0 + 2);
    for r in &n {
        assert_eq!(members(r, "s", T0 + 2), ["x", "z"], "node {}", r.id());
        assert_eq!(r.digest(), n[0].digest());
        assert_eq!(r.digest(), r.digest_by_scan());
    }
    // A DEL of the set removes what its node observed; an add it did not see survives.
    n[1].remove_observed(b("s"), T0 + 3).unwrap();
    n[2].sadd(b("s"), &bs(&["w"]), T0 + 3).unwrap();
    sync_all(&mut n, T0 + 4);
    for r in &n {
        assert_eq!(members(r, "s", T0 + 4), ["w"]);
    }
}

#[test]
fn a_string_and_a_set_written_at_once_end_the_same_everywhere() {
    let mut n = cluster();
    n[0].write(b("k"), Some(b("v")), None, T0).unwrap();
    n[1].sadd(b("k"), &bs(&["m"]), T0 + 5).unwrap();
    n[2].hset(b("k"), &[(b("f"), b("v"))], false, T0 + 2)
        .unwrap();
    sync_all(&mut n, T0 + 10);
    for r in &n {
        assert_eq!(r.key_type(b"k", T0 + 10), Some(KeyType::Set));
        assert_eq!(r.get(b"k", T0 + 10), None);
        assert!(matches!(r.hget(b"k", b"f", T0 + 10), Err(Error::WrongType)));
        assert_eq!(members(r, "k", T0 + 10), ["m"]);
        assert_eq!(r.live_len(T0 + 10), 1);
    }
    // A later SET replaces everything its node observed.
    n[0].write(b("k"), Some(b("w")), None, T0 + 20).unwrap();
    sync_all(&mut n, T0 + 21);
    for r in &n {
        assert_eq!(r.key_type(b"k", T0 + 21), Some(KeyType::String));
        assert_eq!(r.get(b"k", T0 + 21), Some(&b"w"[..]));
    }
}

#[test]
fn expiry_covers_the_whole_set_and_new_members_take_it() {
    let mut r = Replica::new(node(0), Limits::default());
    r.sadd(b("s"), &bs(&["a", "b"]), T0).unwrap();
    assert_eq!(r.key_expiry(b"s", T0), Some(None));
    assert!(r.expire_set(b("s"), Some(T0 + 100), T0).unwrap());
    assert!(!r.expire_set(b("nokey"), Some(T0 + 100), T0).unwrap());
    assert_eq!(r.key_expiry(b"s", T0), Some(Some(T0 + 100)));
    r.sadd(b("s"), &bs(&["c"]), T0 + 1).unwrap();
    assert_eq!(members(&r, "s", T0 + 50), ["a", "b", "c"]);
    assert_eq!(r.key_expiry(b"s", T0 + 50), Some(Some(T0 + 100)));
    assert!(!r.contains(b"s", T0 + 100));
    assert_eq!(r.scard(b"s", T0 + 100).unwrap(), 0);
    assert_eq!(r.live_len(T0 + 100), 0);
    // PERSIST.
    r.expire_set(b("s"), None, T0 + 60).unwrap();
    assert_eq!(r.key_expiry(b"s", T0 + 2000), Some(None));
    assert_eq!(members(&r, "s", T0 + 2000), ["a", "b", "c"]);
    assert_eq!(r.digest(), r.digest_by_scan());
}

#[test]
fn garbage_collection_drops_a_removed_set_whole() {
    let mut r = Replica::new(node(0), Limits::default());
    r.set_member_horizon_ms(0);
    r.sadd(b("s"), &bs(&["a", "b", "c"]), T0).unwrap();
    r.srem(b("s"), &bs(&["a"]), T0).unwrap();
    r.sadd(b("s"), &bs(&["b"]), T0).unwrap();
    r.sadd(b("gone"), &bs(&["x", "y"]), T0).unwrap();
    r.remove_observed(b("gone"), T0).unwrap();
    r.sadd(b("exp"), &bs(&["x"]), T0).unwrap();
    r.expire_set(b("exp"), Some(T0 + 10), T0).unwrap();
    // Tracked: a, b, c, x of "gone" and y, x of "exp" (the same name in another set).
    assert_eq!(r.memory().set_members, 6);
    let before = r.entry_count();
    r.gc(T0 + 1_000, 100);
    r.gc(T0 + 1_001, 100);
    // Left: the adds of b (the newer) and c, nothing else (the key tombstone of DEL goes
    // with the ordinary GC).
    let left: Vec<Entry> = r.entries().collect();
    assert!(
        left.iter().all(|e| e.key.as_ref() == b"s"),
        "{before} -> {left:?}"
    );
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(members(&r, "s", T0 + 2_000), ["b", "c"]);
    assert!(!r.contains(b"gone", T0 + 2_000));
    assert!(!r.contains(b"exp", T0 + 2_000));
    // `used_memory` counts the members the sets' indexes still track: b and c.
    assert_eq!(r.memory().set_members, 2);
    assert_eq!(r.digest(), r.digest_by_scan());
    assert_eq!(r.bucket_digests(), &r.bucket_digests_by_scan()[..]);
}

/// Every node catches up from every other (the version vectors advance, as in a cluster).
fn catch_up_all(nodes: &mut [Replica], now: u64) {
    for _ in 0..2 {
        for i in 0..nodes.len() {
            for j in 0..nodes.len() {
                if i != j {
                    let (a, b) = if i < j {
                        let (x, y) = nodes.split_at_mut(j);
                        (&mut x[i], &mut y[0])
                    } else {
                        let (x, y) = nodes.split_at_mut(i);
                        (&mut y[0], &mut x[j])
                    };
                    common::catch_up(a, b, now);
                }
            }
        }
    }
}

#[test]
fn garbage_waits_for_every_member_and_nothing_comes_back() {
    let mut n = cluster();
    for r in n.iter_mut() {
        r.set_member_horizon_ms(u64::MAX / 2);
    }
    n[0].sadd(b("s"), &bs(&["a"]), T0).unwrap();
    catch_up_all(&mut n, T0);
    n[1].srem(b("s"), &bs(&["a"]), T0).unwrap();
    let stale: Vec<Entry> = n[0].entries().collect();
    {
        let (x, y) = n.split_at_mut(1);
        common::catch_up(&mut x[0], &mut y[0], T0);
    }
    // Node 2 has not acknowledged the removal: node 0 keeps it (the add it removed is
    // stable, every node holds it: that goes).
    n[0].gc(T0 + 100_000, 100);
    let left: Vec<Entry> = n[0].entries().collect();
    assert_eq!(left.len(), 1);
    assert!(matches!(left[0].elem, Elem::SetRemove(..)));
    assert!(!n[0].contains(b"s", T0 + 100_000));
    catch_up_all(&mut n, T0);
    // Now every node acknowledged everything: the set goes whole.
    for r in n.iter_mut() {
        r.gc(T0 + 100_000, 100);
        let left: Vec<Entry> = r.entries().collect();
        assert_eq!(
            left.len(),
            0,
            "the removed set is collected whole: {left:?}"
        );
    }
    // A late copy of the collected add is stale: it does not come back.
    for e in stale {
        assert!(!n[2].apply(e, T0 + 100_001).unwrap());
    }
    assert!(!n[2].contains(b"s", T0 + 100_001));
    // A new add is a new write: it counts.
    n[0].sadd(b("s"), &bs(&["a"]), T0 + 100_002).unwrap();
    catch_up_all(&mut n, T0 + 100_003);
    for r in &n {
        assert_eq!(members(r, "s", T0 + 100_003), ["a"]);
    }
}

#[test]
fn limits_and_a_peers_bad_set_elements_are_refused() {
    let limits = Limits::default()
        .with_max_key_len(16)
        .with_max_value_len(64);
    let mut r = Replica::new(node(0), limits);
    assert!(matches!(
        r.sadd(b("s"), &[b("ok"), Bytes::from(vec![b'x'; 65])], T0),
        Err(Error::ValueTooLarge { .. })
    ));
    assert!(!r.contains(b"s", T0), "nothing was written");
    // A removal larger than the value limit is split into removals that fit.
    let many: Vec<Bytes> = (0..10).map(|i| b(&format!("m{i}"))).collect();
    r.sadd(b("s"), &many, T0).unwrap();
    let before = r.local_seq();
    r.remove_observed(b("s"), T0).unwrap();
    let removals = r
        .entries()
        .filter(|e| matches!(e.elem, Elem::SetRemove(..)))
        .count();
    assert_eq!(
        removals, 5,
        "10 observations of 32 bytes, 2 per 64-byte removal"
    );
    assert!(r.local_seq() > before);
    assert!(!r.contains(b"s", T0));

    let mut peer = Replica::new(node(1), Limits::default());
    let version = Version {
        hlc: dice_core::Hlc::from_u64(T0 << 16),
        origin: node(2),
    };
    let good = Entry {
        key: b("s"),
        elem: Elem::Member(FieldId::of(b"m"), node(2)),
        value: Some(b("m")),
        version,
        seq: 1,
        expires_at_ms: None,
    };
    peer.validate_remote(&good).unwrap();
    let bad = [
        // Not naming itself.
        Entry {
            value: Some(b("other")),
            ..good.clone()
        },
        // Written by another node than its owner.
        Entry {
            elem: Elem::Member(FieldId::of(b"m"), node(0)),
            ..good.clone()
        },
        // No value.
        Entry {
            value: None,
            ..good.clone()
        },
        // A removal that does not decode, or not named by its own dot, or with an expiry.
        Entry {
            elem: Elem::SetRemove(node(2), 1),
            value: Some(Bytes::from(vec![0u8; 31])),
            ..good.clone()
        },
        Entry {
            elem: Elem::SetRemove(node(2), 7),
            value: Some(Bytes::from(vec![1u8; 32])),
            ..good.clone()
        },
        Entry {
            elem: Elem::SetRemove(node(2), 1),
            value: Some(Bytes::from(vec![1u8; 32])),
            expires_at_ms: Some(T0),
            ..good.clone()
        },
    ];
    for e in bad {
        assert!(
            matches!(peer.validate_remote(&e), Err(Error::InvalidEntry { .. })),
            "{e:?}"
        );
        assert!(peer.apply(e, T0).is_err());
    }
    assert_eq!(peer.entry_count(), 0);
}

#[test]
fn one_sadd_on_a_set_of_100000_members_sends_one_element() {
    let mut a = Replica::new(node(0), Limits::default());
    let all: Vec<Bytes> = (0..100_000)
        .map(|i| Bytes::from(format!("member-{i}")))
        .collect();
    a.sadd(b("big"), &all, T0).unwrap();
    let mut c = Replica::new(node(1), Limits::default());
    for e in a.entries() {
        c.apply(e, T0).unwrap();
    }
    for (what, op) in [("SADD", true), ("SREM", false)] {
        let before = a.local_seq();
        if op {
            a.sadd(b("big"), &bs(&["new-member"]), T0 + 1).unwrap();
        } else {
            a.srem(b("big"), &bs(&["member-77"]), T0 + 1).unwrap();
        }
        let (push, _) = a.push_after(before, 4096).unwrap();
        let bytes = push.encode(&SyncLimits::default()).unwrap();
        let dice_core::SyncMessage::Push(p) = &push else {
            panic!("not a push: {push:?}");
        };
        assert_eq!(p.entries.len(), 1, "{what}: one element travels");
        println!(
            "one {what} on a set of 100000 members: {} entry, {} bytes on the wire",
            p.entries.len(),
            bytes.len()
        );
        assert!(bytes.len() < 300, "{what}: {} bytes", bytes.len());
        c.receive_push(p.clone(), T0 + 1).unwrap();
    }
    assert_eq!(c.scard(b"big", T0 + 1).unwrap(), 100_000);
    assert!(c.sismember(b"big", b"new-member", T0 + 1).unwrap());
    assert!(!c.sismember(b"big", b"member-77", T0 + 1).unwrap());
    assert_eq!(a.digest(), c.digest());
}

// --- merge laws ---

#[derive(Clone, Debug)]
enum Step {
    Sadd { node: usize, member: u8 },
    Srem { node: usize, member: u8 },
    Spop { node: usize },
    Del { node: usize },
    Set { node: usize, value: u8 },
    Expire { node: usize, secs: Option<u8> },
    Pull { node: usize, from: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..NODES, 0..6u8).prop_map(|(node, member)| Step::Sadd { node, member }),
        4 => (0..NODES, 0..6u8).prop_map(|(node, member)| Step::Srem { node, member }),
        1 => (0..NODES).prop_map(|node| Step::Spop { node }),
        1 => (0..NODES).prop_map(|node| Step::Del { node }),
        1 => (0..NODES, any::<u8>()).prop_map(|(node, value)| Step::Set { node, value }),
        1 => (0..NODES, prop::option::of(0..20u8)).prop_map(|(node, secs)| Step::Expire { node, secs }),
        4 => (0..NODES, 0..NODES).prop_map(|(node, from)| Step::Pull { node, from }),
    ]
}

fn run(steps: &[Step]) -> Vec<Entry> {
    let mut nodes: Vec<Replica> = (0..NODES)
        .map(|i| {
            let mut r = Replica::new(node(i), Limits::default());
            r.record_changes(true);
            r
        })
        .collect();
    let mut written = Vec::new();
    let key = b("s");
    for (t, s) in steps.iter().enumerate() {
        let now = T0 + t as u64 * 1000;
        match *s {
            Step::Sadd { node, member } => {
                let _ = nodes[node].sadd(key.clone(), &[Bytes::from(vec![member])], now);
            }
            Step::Srem { node, member } => {
                let _ = nodes[node].srem(key.clone(), &[Bytes::from(vec![member])], now);
            }
            Step::Spop { node } => {
                let _ = nodes[node].spop(key.clone(), 1, now);
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
                nodes[node].expire_set(key.clone(), at, now).unwrap();
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
    written
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
    Vec<(Option<KeyType>, Vec<String>, Option<Vec<u8>>)>,
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
            let m = match r.key_type(b"s", now) {
                Some(KeyType::Set) => members(r, "s", now),
                _ => Vec::new(),
            };
            (
                r.key_type(b"s", now),
                m,
                r.get(b"s", now).map(<[u8]>::to_vec),
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

// --- the oracle: crdts' Orswot, one per node, driven by the same operations ---

#[derive(Clone, Debug)]
enum OrStep {
    Sadd { node: usize, member: u8 },
    Srem { node: usize, member: u8 },
    Del { node: usize },
    Pull { node: usize, from: usize },
}

fn or_step() -> impl Strategy<Value = OrStep> {
    prop_oneof![
        6 => (0..NODES, 0..5u8).prop_map(|(node, member)| OrStep::Sadd { node, member }),
        4 => (0..NODES, 0..5u8).prop_map(|(node, member)| OrStep::Srem { node, member }),
        1 => (0..NODES).prop_map(|node| OrStep::Del { node }),
        5 => (0..NODES, 0..NODES).prop_map(|(node, from)| OrStep::Pull { node, from }),
    ]
}

fn sorted(set: impl IntoIterator<Item = u8>) -> Vec<u8> {
    let mut v: Vec<u8> = set.into_iter().collect();
    v.sort_unstable();
    v
}

fn dice_members(r: &Replica, now: u64) -> Vec<u8> {
    sorted(r.smembers(b"s", now).unwrap().into_iter().map(|m| m[0]))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Set elements (and the strings, deletes and expiries mixed in) applied in any order,
    /// with duplicates, give one state and one reading: commutative and idempotent.
    #[test]
    fn set_merge_is_commutative_and_idempotent((entries, order, _g) in case()) {
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

    /// State-based merge of replicas holding parts of the elements is associative and
    /// commutative, and merging a state with itself changes nothing.
    #[test]
    fn set_merge_is_associative((entries, _order, groups) in case()) {
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

    /// Add wins, exactly as an observed-remove set: after any schedule of adds, removes,
    /// deletes and partial syncs, every node reads what the `Orswot` of the same node holds,
    /// and once everything is merged, all read the merged `Orswot`.
    #[test]
    fn sets_read_as_the_orswot_oracle(steps in prop::collection::vec(or_step(), 1..60)) {
        let mut nodes = cluster();
        let mut oracle: Vec<Orswot<u8, u64>> = (0..NODES).map(|_| Orswot::new()).collect();
        for (t, s) in steps.iter().enumerate() {
            let now = T0 + t as u64;
            match *s {
                OrStep::Sadd { node, member } => {
                    nodes[node].sadd(b("s"), &[Bytes::from(vec![member])], now).unwrap();
                    let ctx = oracle[node].read_ctx().derive_add_ctx(node as u64);
                    let op = oracle[node].add(member, ctx);
                    oracle[node].apply(op);
                }
                OrStep::Srem { node, member } => {
                    nodes[node].srem(b("s"), &[Bytes::from(vec![member])], now).unwrap();
                    let ctx = oracle[node].contains(&member).derive_rm_ctx();
                    let op = oracle[node].rm(member, ctx);
                    oracle[node].apply(op);
                }
                OrStep::Del { node } => {
                    nodes[node].remove_observed(b("s"), now).unwrap();
                    let read = oracle[node].read();
                    let all: Vec<u8> = read.val.iter().copied().collect();
                    let op = oracle[node].rm_all(all, read.derive_rm_ctx());
                    oracle[node].apply(op);
                }
                OrStep::Pull { node, from } => {
                    let held: Vec<Entry> = nodes[from].entries().collect();
                    for e in held {
                        nodes[node].apply(e, now).unwrap();
                    }
                    let other = oracle[from].clone();
                    oracle[node].merge(other);
                }
            }
            for i in 0..NODES {
                prop_assert_eq!(
                    dice_members(&nodes[i], now),
                    sorted(oracle[i].read().val),
                    "node {} after {:?}", i, s
                );
            }
        }
        let now = T0 + steps.len() as u64 + 1;
        sync_all(&mut nodes, now);
        let mut all = Orswot::new();
        for o in &oracle {
            all.merge(o.clone());
        }
        let expected = sorted(all.read().val);
        for r in &nodes {
            prop_assert_eq!(dice_members(r, now), expected.clone());
            prop_assert_eq!(r.digest(), nodes[0].digest());
        }
    }
}
