//! Fixture data shared by the dice-core benches.

use bytes::Bytes;

/// A 16-byte key.
pub fn key(i: u64) -> Bytes {
    Bytes::from(format!("k{i:015}").into_bytes())
}

/// A distinct 100-byte value (its own allocation, as a value read from disk would be).
pub fn value(i: u64) -> Bytes {
    let mut v = vec![b'v'; 100];
    v[..8].copy_from_slice(&i.to_le_bytes());
    Bytes::from(v)
}
