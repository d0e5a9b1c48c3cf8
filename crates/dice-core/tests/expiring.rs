//! The replica's view of expiries, for those who must hear when a key stops reading as
//! present (RESP client tracking): `expires_at`, `expiring_between`, `next_expiry_after`.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use dice_core::{Limits, NodeId, Replica};

fn write(r: &mut Replica, key: &str, value: Option<&str>, expires: Option<u64>) {
    r.write(
        Bytes::copy_from_slice(key.as_bytes()),
        value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        expires,
        1_000,
    )
    .unwrap();
}

fn window(r: &Replica, after: u64, until: u64) -> Vec<(u64, String)> {
    r.expiring_between(after, until)
        .map(|(at, k)| (at, String::from_utf8_lossy(k).into_owned()))
        .collect()
}

#[test]
fn expiring_keys_are_listed_by_window() {
    let mut r = Replica::new(NodeId::new(1).unwrap(), Limits::default());
    write(&mut r, "a", Some("1"), Some(5_000));
    write(&mut r, "b", Some("2"), Some(3_000));
    write(&mut r, "c", Some("3"), None);
    write(&mut r, "d", Some("4"), Some(5_000));

    assert_eq!(r.expires_at(b"a"), Some(5_000));
    assert_eq!(r.expires_at(b"c"), None);
    assert_eq!(r.expires_at(b"nope"), None);

    assert_eq!(window(&r, 0, 2_999), []);
    assert_eq!(window(&r, 0, 3_000), [(3_000, "b".to_string())]);
    // The lower bound is excluded, the upper one included.
    assert_eq!(window(&r, 3_000, 4_999), []);
    let mut both = window(&r, 3_000, 5_000);
    both.sort();
    assert_eq!(both, [(5_000, "a".into()), (5_000, "d".into())]);
    assert_eq!(window(&r, 5_000, 5_000), []);
    assert_eq!(window(&r, 6_000, 1_000), []);

    assert_eq!(r.next_expiry_after(0), Some(3_000));
    assert_eq!(r.next_expiry_after(3_000), Some(5_000));
    assert_eq!(r.next_expiry_after(5_000), None);

    // A new write replaces the expiry; a delete removes it.
    write(&mut r, "b", Some("2"), Some(9_000));
    write(&mut r, "a", None, None);
    assert_eq!(window(&r, 0, 5_000), [(5_000, "d".to_string())]);
    assert_eq!(r.next_expiry_after(5_000), Some(9_000));
    assert_eq!(r.expires_at(b"a"), None);
}
