//! What a push may claim when peers' writes replaced some of the pusher's writes.
//!
//! A receiver's `vv[origin] = s` means "I hold every write of `origin` with seq <= s, or
//! something newer for the same key". A push claims a range of the pusher's seqs; a seq whose
//! entry a peer's write replaced on the pusher is not in the push. These tests check that the
//! claim never makes a receiver's vector say more than it holds, and that under writes on one
//! node and evictions or deletes on the others the followers' vectors keep up by pushes alone
//! (no catch-up at all), which is what lets their tombstones become stable and be collected.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use dice_core::{Entry, Limits, NodeId, Push, PushRange, Replica, SyncMessage};
use std::collections::HashMap;

fn id(i: u64) -> NodeId {
    NodeId::new(i).unwrap()
}

fn push_of(msg: SyncMessage) -> Push {
    match msg {
        SyncMessage::Push(p) => p,
        other => panic!("not a push: {other:?}"),
    }
}

/// Delivers a push and feeds the receiver's ack back to the sender.
fn deliver(from: &mut Replica, to: &mut Replica, push: Push, now: u64) {
    match to.receive_push(push, now).unwrap() {
        Some(SyncMessage::Ack(ack)) => from.note_member(ack.from, Some(&ack.vv), now),
        other => panic!("push not taken: {other:?}"),
    }
}

/// Every write ever made, by dot, with its key and version.
#[derive(Default)]
struct History {
    writes: HashMap<(NodeId, u64), Entry>,
}

impl History {
    fn note(&mut self, e: &Entry) {
        self.writes.insert((e.version.origin, e.seq), e.clone());
    }

    /// The version vector's claim holds: every write it covers is held, or something newer
    /// for its key.
    fn check(&self, r: &Replica, who: &str) {
        for ((origin, seq), w) in &self.writes {
            if *seq > r.vv().get(*origin) {
                continue;
            }
            let held = r.element(&w.key, w.elem).map(|e| e.version);
            assert!(
                held.is_some_and(|v| v >= w.version),
                "{who}: vv[{origin}] = {} covers seq {seq} (key {:?}) but holds {held:?}",
                r.vv().get(*origin),
                w.key,
            );
        }
    }
}

/// The counterexample: a claim over a seq that a peer's write replaced, with nothing else,
/// leaves the receiver claiming a write it holds neither it nor anything newer of.
#[test]
fn a_claim_past_a_replaced_write_carries_what_replaced_it() {
    let now = 1_000;
    let mut w = Replica::new(id(1), Limits::default());
    let mut p = Replica::new(id(2), Limits::default());
    let mut r = Replica::new(id(3), Limits::default());
    let mut h = History::default();
    // r is known to w (it asked for something once) and holds nothing.
    w.note_member(r.id(), Some(&r.vv().clone()), now);

    let k1 = w.write("k".into(), Some("w".into()), None, now).unwrap();
    h.note(&k1);
    let (w_first, _) = w.push_after(0, 100).unwrap();
    deliver(&mut w, &mut p, push_of(w_first.clone()), now);
    // p overwrites k, and its write reaches w, replacing w's seq 1 there.
    let k2 = p
        .write("k".into(), Some("p".into()), None, now + 5)
        .unwrap();
    h.note(&k2);
    let (msg, _) = p.push_after(0, 100).unwrap();
    deliver(&mut p, &mut w, push_of(msg), now + 5);
    let j = w
        .write("j".into(), Some("w".into()), None, now + 6)
        .unwrap();
    h.note(&j);
    assert_eq!(w.lost_own_len(), 1, "w remembers its replaced write");

    // The naive claim: (0, 2] with only j in it.
    let naive = Push {
        from: w.id(),
        sender_vv: w.announced_vv(),
        entries: vec![j.clone()],
        range: Some(PushRange {
            origin: w.id(),
            after: 0,
            through: 2,
        }),
        pressed: false,
    };
    let mut r_naive = Replica::new(id(3), Limits::default());
    r_naive.receive_push(naive, now + 6).unwrap();
    assert_eq!(r_naive.vv().get(w.id()), 2);
    assert!(
        r_naive.entry(b"k").is_none(),
        "the naive claim covers w's seq 1 and holds no k at all"
    );
    // A third node that holds w's k (and not p's) has nothing to send it: its catch-up
    // serves seqs past the vector only.
    let mut q = Replica::new(id(4), Limits::default());
    deliver(&mut w, &mut q, push_of(w_first.clone()), now);
    let (msg, _) = w.push_after(1, 100).unwrap();
    deliver(&mut w, &mut q, push_of(msg), now + 6);
    assert_eq!(q.vv().get(w.id()), 2);
    assert_eq!(q.get(b"k", now + 6).unwrap(), b"w");
    let served = q.serve(
        &dice_core::CatchUpRequest {
            from: r_naive.id(),
            vv: r_naive.announced_vv(),
            floors: r_naive.floors().clone(),
            resume: None,
            full: false,
            max_entries: 100,
        },
        &dice_core::SyncLimits::default(),
    );
    let SyncMessage::Page(page) = served else {
        panic!("not a page")
    };
    assert!(page.entries.is_empty(), "the broken claim hides k from r");

    // The push w builds: the claim goes through 2, and p's write travels with it.
    let (msg, through) = w.push_after(0, 100).unwrap();
    assert_eq!(through, 2);
    let push = push_of(msg);
    assert_eq!(push.range.map(|r| r.through), Some(2));
    assert!(
        push.entries.iter().any(|e| e.version == k2.version),
        "the replacing write is relayed"
    );
    deliver(&mut w, &mut r, push, now + 6);
    assert_eq!(r.vv().get(w.id()), 2);
    assert_eq!(r.get(b"k", now + 6).unwrap(), b"p");
    h.check(&r, "r");

    // Once every member acknowledged p's write (r just did, p wrote it, q does now), w no
    // longer relays it.
    let (msg, _) = p.push_after(0, 100).unwrap();
    deliver(&mut p, &mut q, push_of(msg), now + 7);
    w.note_member(q.id(), Some(&q.announced_vv()), now + 7);
    w.write("m".into(), Some("w".into()), None, now + 7)
        .unwrap();
    let (msg, _) = w.push_after(0, 100).unwrap();
    let push = push_of(msg);
    assert_eq!(push.range.map(|r| r.through), Some(3));
    assert!(
        push.entries.iter().all(|e| e.version.origin == w.id()),
        "p's write is acknowledged by every member: not relayed"
    );
}

/// A replaced write whose key holds nothing any more (its element was collected) cannot be
/// covered: the claim stops before it, as it always did.
#[test]
fn a_claim_past_a_replaced_write_waits_for_the_write_that_covers_it() {
    let now = 1_000;
    let mut w = Replica::new(id(1), Limits::default());
    let mut p = Replica::new(id(2), Limits::default());
    let r = Replica::new(id(3), Limits::default());
    w.note_member(r.id(), Some(&r.vv().clone()), now);
    w.write("a".into(), Some("1".into()), None, now).unwrap();
    w.write("k".into(), Some("1".into()), None, now).unwrap();
    let (msg, _) = w.push_after(0, 100).unwrap();
    deliver(&mut w, &mut p, push_of(msg), now);
    // p's write replaces w's seq 2 on w, then w's own write replaces p's: the key's current
    // element is w's seq 4, which may leave (no store: every write is durable).
    p.write("k".into(), Some("2".into()), None, now + 5)
        .unwrap();
    let (msg, _) = p.push_after(0, 100).unwrap();
    deliver(&mut p, &mut w, push_of(msg), now + 5);
    w.write("b".into(), Some("3".into()), None, now + 6)
        .unwrap();
    w.write("k".into(), Some("4".into()), None, now + 6)
        .unwrap();
    // A push of one entry: seq 1 only, the claim cannot include seq 2 (it needs seq 4).
    let (msg, through) = w.push_after(0, 1).unwrap();
    let push = push_of(msg);
    assert_eq!(through, 1);
    assert_eq!(push.range.map(|r| r.through), Some(1));
    // A full-size push: w's seq 4 covers seq 2.
    let (msg, through) = w.push_after(0, 100).unwrap();
    let push = push_of(msg);
    assert_eq!(through, 4);
    assert_eq!(push.range.map(|r| r.through), Some(4));
    let mut r = r;
    r.receive_push(push, now + 6).unwrap();
    assert_eq!(r.vv().get(w.id()), 4);
    assert_eq!(r.get(b"k", now + 6).unwrap(), b"4");
}

fn kname(i: usize) -> Bytes {
    Bytes::from(format!("key:{i:08}"))
}

/// One node writes, the others evict or delete its keys as they go; pushes only, never a
/// catch-up. The followers' vectors keep up with the writer after every round, the claim
/// never says more than a node holds, and the nodes end identical.
#[test]
fn followers_keep_up_by_pushes_while_they_evict_and_delete_the_writers_keys() {
    let mut n: Vec<Replica> = (1..=3)
        .map(|i| Replica::new(id(i), Limits::default()))
        .collect();
    let mut h = History::default();
    // Each node knows the others (as after a first exchange).
    for i in 0..3 {
        for j in 0..3 {
            if i != j {
                let vv = n[j].vv().clone();
                let jid = n[j].id();
                n[i].note_member(jid, Some(&vv), 0);
            }
        }
    }
    // pushed[i][j]: the seq of i's writes up to which j acknowledged a push.
    let mut pushed = [[0u64; 3]; 3];
    let mut written = 0usize;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut now = 1_000u64;
    let mut max_lost = 0;
    for round in 0..60 {
        now += 10;
        for _ in 0..100 {
            let e = n[0]
                .write(kname(written), Some(Bytes::from_static(b"v")), None, now)
                .unwrap();
            h.note(&e);
            written += 1;
        }
        // The race of a flood: node 1 gets the writes first and evicts some of them, and its
        // evictions reach the writer before the writer's pushes of them reach node 2; then node
        // 2 deletes some, and its deletes reach the writer before its next push to node 1.
        push_all(&mut n, &mut pushed, 0, 1, now);
        remove_some(&mut n[1], written, &mut next, &mut h, now, true);
        push_all(&mut n, &mut pushed, 1, 0, now);
        push_all(&mut n, &mut pushed, 0, 2, now);
        remove_some(&mut n[2], written, &mut next, &mut h, now, false);
        push_all(&mut n, &mut pushed, 2, 0, now);
        max_lost = max_lost.max(n[0].lost_own_len());
        push_all(&mut n, &mut pushed, 0, 1, now);
        for (f, r) in n.iter().enumerate() {
            h.check(r, &format!("node {f}, round {round}"));
        }
        // Then every pair, in an order that varies.
        let mut pairs: Vec<(usize, usize)> = (0..3)
            .flat_map(|i| (0..3).filter(move |&j| j != i).map(move |j| (i, j)))
            .collect();
        let shift = (next() as usize) % pairs.len();
        pairs.rotate_left(shift);
        for (i, j) in pairs {
            push_all(&mut n, &mut pushed, i, j, now);
        }
        let writer = n[0].id();
        let head = n[0].vv().get(writer);
        for f in 1..3 {
            assert_eq!(
                n[f].vv().get(writer),
                head,
                "round {round}: follower {f} lags the writer (lost: {})",
                n[0].lost_own_len()
            );
        }
    }
    assert!(
        max_lost > 0,
        "the followers' removals replaced none of the writer's writes"
    );
    for (f, r) in n.iter().enumerate() {
        h.check(r, &format!("node {f}, end"));
    }
    assert_eq!(n[0].digest(), n[1].digest());
    assert_eq!(n[0].digest(), n[2].digest());
    // With the followers' vectors up to date, the tombstones are stable: collected.
    let mut collected = 0;
    for r in n.iter_mut() {
        collected += r.collect_stable_tombstones(now + 1);
    }
    assert!(collected > 0, "stable tombstones are collected");
}

/// Pushes from node `i` to node `j` everything due, page by page (64 entries each).
fn push_all(n: &mut [Replica], pushed: &mut [[u64; 3]; 3], i: usize, j: usize, now: u64) {
    while let Some((msg, through)) = n[i].push_after(pushed[i][j], 64) {
        let (a, b) = pair(n, i, j);
        deliver(a, b, push_of(msg), now);
        pushed[i][j] = through;
    }
}

/// Removes up to 15 of the writer's newest 100 keys that `r` holds: by eviction or by delete.
fn remove_some(
    r: &mut Replica,
    written: usize,
    next: &mut impl FnMut() -> u64,
    h: &mut History,
    now: u64,
    evict: bool,
) {
    for _ in 0..15 {
        let k = kname(written - 1 - (next() as usize) % 100);
        if r.get(&k, now).is_none() {
            continue;
        }
        if evict {
            assert!(r.evict(k.clone(), now).unwrap());
        } else {
            r.write(k.clone(), None, None, now).unwrap();
        }
        h.note(&r.entry(&k).expect("a tombstone"));
    }
}

fn pair(n: &mut [Replica], i: usize, j: usize) -> (&mut Replica, &mut Replica) {
    if i < j {
        let (l, r) = n.split_at_mut(j);
        (&mut l[i], &mut r[0])
    } else {
        let (l, r) = n.split_at_mut(i);
        (&mut r[0], &mut l[j])
    }
}

/// A member that writes all the time is always a write ahead of us in its newest
/// acknowledgement; the acknowledgement its push carried, with the writes it pushed, still
/// proves what it holds, so its tombstones are collected while it goes on writing.
#[test]
fn a_member_writing_all_the_time_has_its_tombstones_collected() {
    let mut a = Replica::new(id(1), Limits::default());
    let mut b = Replica::new(id(2), Limits::default());
    a.note_member(b.id(), Some(&b.vv().clone()), 0);
    b.note_member(a.id(), Some(&a.vv().clone()), 0);
    let (mut a_pushed, mut b_pushed) = (0, 0);
    let mut now = 1_000;
    let mut collected = 0;
    for round in 0..20 {
        now += 10;
        // a writes; b deletes what a wrote the round before, and pushes its deletes.
        for i in 0..10 {
            a.write(kname(round * 10 + i), Some("v".into()), None, now)
                .unwrap();
        }
        while let Some((msg, through)) = a.push_after(a_pushed, 64) {
            deliver(&mut a, &mut b, push_of(msg), now);
            a_pushed = through;
        }
        if round > 0 {
            for i in 0..10 {
                b.write(kname((round - 1) * 10 + i), None, None, now)
                    .unwrap();
            }
        }
        while let Some((msg, through)) = b.push_after(b_pushed, 64) {
            deliver(&mut b, &mut a, push_of(msg), now);
            b_pushed = through;
        }
        // b writes once more before a's next push, which it acknowledges with that write
        // named: a never holds all of b's writes as of b's newest acknowledgement.
        b.write(format!("b:{round}").into(), Some("v".into()), None, now)
            .unwrap();
        a.write(format!("a:{round}").into(), Some("v".into()), None, now)
            .unwrap();
        while let Some((msg, through)) = a.push_after(a_pushed, 64) {
            deliver(&mut a, &mut b, push_of(msg), now);
            a_pushed = through;
        }
        assert!(a.members()[&b.id()].acked.get(b.id()) > a.vv().get(b.id()));
        collected += a.collect_stable_tombstones(now);
    }
    assert!(
        collected >= 100,
        "a collected {collected} of b's tombstones while b kept writing"
    );
}
