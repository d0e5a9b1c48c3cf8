//! Counters: the merge laws (commutative, associative, idempotent) over the elements that
//! nodes write for increments and resets, the sum checked against the `crdts` crate's
//! `PNCounter` as an oracle, Redis's errors, and what a reset observes.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use dice_core::{Elem, Entry, Error, Increment, Limits, NodeId, Replica};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;
const NODES: usize = 3;

fn node(i: usize) -> NodeId {
    NodeId::new(i as u64 + 1).unwrap()
}

/// The oracle: a PN-counter built from the `crdts` crate's version vectors (a `VClock` per
/// sign is a G-counter: each origin's own running total, merged by maximum), each origin's
/// state merged into the others' in turn.
fn oracle_sum(incrs: &[(usize, i64)]) -> i128 {
    use crdts::{CmRDT, CvRDT, Dot, VClock};
    let mut p: Vec<VClock<usize>> = vec![VClock::new(); NODES];
    let mut n: Vec<VClock<usize>> = vec![VClock::new(); NODES];
    for &(origin, by) in incrs {
        let (side, amount) = if by >= 0 {
            (&mut p[origin], by.unsigned_abs())
        } else {
            (&mut n[origin], by.unsigned_abs())
        };
        let total = side.get(&origin) + amount;
        side.apply(Dot::new(origin, total));
    }
    let (mut pm, mut nm) = (VClock::new(), VClock::new());
    for i in 0..NODES {
        pm.merge(p[i].clone());
        nm.merge(n[i].clone());
    }
    let sum = |v: &VClock<usize>| v.iter().map(|d| i128::from(d.counter)).sum::<i128>();
    sum(&pm) - sum(&nm)
}

/// One step of a history on three nodes: an increment, a reset (`SET` of a number, or `DEL`),
/// or a node taking everything another holds (so later resets observe it).
#[derive(Clone, Debug)]
enum Step {
    Incr { node: usize, by: i32 },
    IncrFloat { node: usize, by: i8 },
    Reset { node: usize, set: Option<u8> },
    Pull { node: usize, from: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..NODES, any::<i32>()).prop_map(|(node, by)| Step::Incr { node, by }),
        1 => (0..NODES, any::<i8>()).prop_map(|(node, by)| Step::IncrFloat { node, by }),
        2 => (0..NODES, prop::option::of(0..50u8)).prop_map(|(node, set)| Step::Reset { node, set }),
        4 => (0..NODES, 0..NODES).prop_map(|(node, from)| Step::Pull { node, from }),
    ]
}

/// Runs a history; returns every entry written (by every node), and the increments made
/// (origin, amount) when there was no reset and no float increment (else `None`).
fn run(steps: &[Step]) -> (Vec<Entry>, Option<Vec<(usize, i64)>>) {
    let mut nodes: Vec<Replica> = (0..NODES)
        .map(|i| {
            let mut r = Replica::new(node(i), Limits::default());
            r.record_changes(true);
            r
        })
        .collect();
    let mut written = Vec::new();
    let mut incrs = Some(Vec::new());
    let key = Bytes::from_static(b"c");
    for (t, s) in steps.iter().enumerate() {
        let now = T0 + t as u64;
        match *s {
            Step::Incr { node, by } => {
                if nodes[node]
                    .incr(key.clone(), Increment::Int(i64::from(by)), now)
                    .is_ok()
                    && let Some(v) = incrs.as_mut()
                {
                    v.push((node, i64::from(by)));
                }
            }
            Step::IncrFloat { node, by } => {
                let _ = nodes[node].incr(key.clone(), Increment::Float(f64::from(by) / 4.0), now);
                incrs = None;
            }
            Step::Reset { node, set } => {
                let value = set.map(|v| Bytes::from(v.to_string()));
                nodes[node].write(key.clone(), value, None, now).unwrap();
                incrs = None;
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
    (written, incrs)
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

fn state(r: &Replica) -> (Vec<Entry>, Option<Vec<u8>>, u64) {
    let mut v: Vec<Entry> = r.entries().collect();
    v.sort_by(|a, b| (&a.key, a.elem).cmp(&(&b.key, b.elem)));
    assert_eq!(r.digest(), r.digest_by_scan(), "kept digest");
    (v, r.get(b"c", T0).map(<[u8]>::to_vec), r.digest())
}

/// What [`case`] draws.
type Case = (
    Vec<Entry>,
    Option<Vec<(usize, i64)>>,
    Vec<usize>,
    Vec<usize>,
);

/// A history, an order of its entries with duplicates, and a split of them into three groups.
fn case() -> impl Strategy<Value = Case> {
    prop::collection::vec(step(), 1..40).prop_flat_map(|steps| {
        let (entries, incrs) = run(&steps);
        let n = entries.len();
        let order = prop::collection::vec(0..n.max(1), n..=2 * n + 1).prop_map(move |mut dup| {
            dup.extend(0..n);
            dup
        });
        let order = order.prop_shuffle();
        let groups = prop::collection::vec(0..3usize, n);
        (Just(entries), Just(incrs), order, groups)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Counter elements applied in any order, with duplicates, give one state: commutative and
    /// idempotent. Without resets, the value is the sum of every increment, as the `crdts`
    /// crate's `PNCounter` counts it.
    #[test]
    fn counter_merge_is_commutative_and_idempotent((entries, incrs, order, _g) in case()) {
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
        if let Some(incrs) = incrs {
            let want = (!incrs.is_empty()).then(|| oracle_sum(&incrs).to_string().into_bytes());
            prop_assert_eq!(shuffled.get(b"c", T0).map(<[u8]>::to_vec), want);
        }
    }

    /// State-based merge of replicas holding parts of a counter's elements is associative and
    /// commutative, and merging a state with itself changes nothing.
    #[test]
    fn counter_merge_is_associative((entries, _incrs, _order, groups) in case()) {
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

fn k() -> Bytes {
    Bytes::from_static(b"k")
}

#[test]
fn concurrent_increments_all_count_and_a_reset_keeps_what_it_did_not_see() {
    let mut a = Replica::new(node(0), Limits::default());
    let mut b = Replica::new(node(1), Limits::default());
    let (_, ea) = a.incr(k(), Increment::Int(7), T0).unwrap();
    let (_, eb) = b.incr(k(), Increment::Int(3), T0).unwrap();
    a.apply(eb, T0).unwrap();
    b.apply(ea, T0).unwrap();
    assert_eq!(a.get(b"k", T0), Some(&b"10"[..]));
    assert_eq!(b.get(b"k", T0), Some(&b"10"[..]));
    // A deletes what it saw (10) while B adds 5 it did not see: 5 survives, on both.
    let mut from_a: Vec<Entry> = Vec::new();
    a.record_changes(true);
    a.write(k(), None, None, T0 + 1).unwrap();
    from_a.extend(a.take_changes().into_iter().filter_map(|c| c.entry));
    assert_eq!(a.get(b"k", T0 + 1), None);
    let (_, eb) = b.incr(k(), Increment::Int(5), T0 + 1).unwrap();
    a.apply(eb, T0 + 2).unwrap();
    for e in from_a {
        b.apply(e, T0 + 2).unwrap();
    }
    assert_eq!(a.get(b"k", T0 + 2), Some(&b"5"[..]));
    assert_eq!(b.get(b"k", T0 + 2), Some(&b"5"[..]));
    assert_eq!(a.digest(), b.digest());
    // SET over a counter: the value set, plus increments not observed.
    a.write(k(), Some(Bytes::from_static(b"100")), None, T0 + 3)
        .unwrap();
    assert_eq!(a.get(b"k", T0 + 3), Some(&b"100"[..]));
    assert_eq!(
        a.incr(k(), Increment::Int(-1), T0 + 3).unwrap().0.as_ref(),
        b"99"
    );
}

#[test]
fn redis_errors_for_non_integers_and_overflow() {
    let mut a = Replica::new(node(0), Limits::default());
    a.write(k(), Some(Bytes::from_static(b"abc")), None, T0)
        .unwrap();
    assert!(matches!(
        a.incr(k(), Increment::Int(1), T0),
        Err(Error::NotAnInteger)
    ));
    assert!(matches!(
        a.incr(k(), Increment::Float(1.0), T0),
        Err(Error::NotAFloat)
    ));
    a.write(k(), Some(Bytes::from(i64::MAX.to_string())), None, T0)
        .unwrap();
    assert!(matches!(
        a.incr(k(), Increment::Int(1), T0),
        Err(Error::Overflow)
    ));
    assert_eq!(
        a.incr(k(), Increment::Int(-1), T0).unwrap().0,
        Bytes::from((i64::MAX - 1).to_string())
    );
    assert!(matches!(
        a.incr(k(), Increment::Float(f64::INFINITY), T0),
        Err(Error::NanOrInfinity)
    ));
    // A failed increment wrote nothing.
    assert_eq!(a.local_seq(), 3);
    a.write(k(), Some(Bytes::from_static(b"1.5")), None, T0)
        .unwrap();
    assert!(matches!(
        a.incr(k(), Increment::Int(1), T0),
        Err(Error::NotAnInteger)
    ));
    assert_eq!(
        a.incr(k(), Increment::Float(0.25), T0).unwrap().0.as_ref(),
        b"1.75"
    );
}

#[test]
fn an_expired_counter_starts_again_from_nothing() {
    let mut a = Replica::new(node(0), Limits::default());
    a.incr(k(), Increment::Int(5), T0).unwrap();
    // EXPIRE rewrites the key with its value and an expiry.
    a.write(k(), Some(Bytes::from_static(b"5")), Some(T0 + 10), T0)
        .unwrap();
    assert_eq!(a.get(b"k", T0 + 5), Some(&b"5"[..]));
    assert_eq!(a.get(b"k", T0 + 10), None);
    assert!(!a.contains(b"k", T0 + 10));
    assert_eq!(
        a.incr(k(), Increment::Int(2), T0 + 11).unwrap().0.as_ref(),
        b"2"
    );
    assert_eq!(a.live_len(T0 + 11), 1);
    assert_eq!(a.get_with_expiry(b"k", T0 + 11).unwrap().1, None);
}

#[test]
fn a_forged_counter_element_is_refused() {
    let mut a = Replica::new(node(0), Limits::default());
    let mut b = Replica::new(node(1), Limits::default());
    let (_, mut e) = b.incr(k(), Increment::Int(1), T0).unwrap();
    // Written by someone else than its owner.
    e.elem = Elem::Count(node(2));
    assert!(a.apply(e.clone(), T0).is_err());
    e.elem = Elem::Count(node(1));
    e.value = Some(Bytes::from_static(b"garbage"));
    assert!(a.apply(e.clone(), T0).is_err());
    e.value = None;
    assert!(a.apply(e, T0).is_err());
    assert_eq!(a.entry_count(), 0);
}
