//! The sync wire header: protocol version, then the sender's wall-clock time.
#![allow(clippy::unwrap_used)]

use dice_core::{Refusal, SYNC_PROTOCOL_VERSION, SyncLimits, SyncMessage, WireError};

fn msg() -> SyncMessage {
    SyncMessage::Refused(Refusal::IAmBehind)
}

#[test]
fn the_send_time_round_trips_and_zero_means_none() {
    let limits = SyncLimits::default();
    let bytes = msg().encode_at(&limits, 1_700_000_123_456).unwrap();
    assert_eq!(&bytes[..2], &SYNC_PROTOCOL_VERSION.to_be_bytes());
    assert_eq!(&bytes[2..10], &1_700_000_123_456u64.to_be_bytes());
    let (back, sent) = SyncMessage::decode_timed(&bytes, &limits).unwrap();
    assert_eq!(back, msg());
    assert_eq!(sent, Some(1_700_000_123_456));
    let bytes = msg().encode(&limits).unwrap();
    assert_eq!(SyncMessage::decode_timed(&bytes, &limits).unwrap().1, None);
}

#[test]
fn a_message_of_the_previous_version_is_refused_saying_so() {
    assert_eq!(SYNC_PROTOCOL_VERSION, 5);
    // Version 4: the header of today; a node of version 4 cannot decode set elements.
    let mut v4 = 4u16.to_be_bytes().to_vec();
    v4.extend(5u64.to_be_bytes());
    v4.extend(postcard::to_allocvec(&msg()).unwrap());
    let err = SyncMessage::decode(&v4, &SyncLimits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::UnsupportedVersion {
                found: 4,
                supported: 5
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "sync protocol version 4 is not supported (this node speaks version 5)"
    );
    // Version 3: the header of today; a node of version 3 cannot decode hash fields.
    let mut v3 = 3u16.to_be_bytes().to_vec();
    v3.extend(5u64.to_be_bytes());
    v3.extend(postcard::to_allocvec(&msg()).unwrap());
    let err = SyncMessage::decode(&v3, &SyncLimits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::UnsupportedVersion {
                found: 3,
                supported: 5
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "sync protocol version 3 is not supported (this node speaks version 5)"
    );
    // Version 2: the header of today, entries without elements.
    let mut v2 = 2u16.to_be_bytes().to_vec();
    v2.extend(5u64.to_be_bytes());
    v2.extend(postcard::to_allocvec(&msg()).unwrap());
    let err = SyncMessage::decode(&v2, &SyncLimits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::UnsupportedVersion {
                found: 2,
                supported: 5
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "sync protocol version 2 is not supported (this node speaks version 5)"
    );
    // Version 1: the postcard body right after the version, no send time.
    let mut v1 = 1u16.to_be_bytes().to_vec();
    v1.extend(postcard::to_allocvec(&msg()).unwrap());
    let err = SyncMessage::decode(&v1, &SyncLimits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::UnsupportedVersion {
                found: 1,
                supported: 5
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "sync protocol version 1 is not supported (this node speaks version 5)"
    );
    // Even when the rest is too short for a version-2 header.
    let err = SyncMessage::decode(&[0, 1, 3], &SyncLimits::default()).unwrap_err();
    assert!(matches!(
        err,
        WireError::UnsupportedVersion { found: 1, .. }
    ));
}

#[test]
fn a_header_cut_short_or_a_time_out_of_range_is_refused() {
    let limits = SyncLimits::default();
    let bytes = msg().encode_at(&limits, 5).unwrap();
    for len in 0..10 {
        let err = SyncMessage::decode(&bytes[..len], &limits).unwrap_err();
        assert!(matches!(err, WireError::Truncated { .. }), "{len}: {err:?}");
    }
    let mut far = bytes.clone();
    far[2] = 0x80; // above i64::MAX
    let err = SyncMessage::decode(&far, &limits).unwrap_err();
    assert!(matches!(err, WireError::Invalid(_)), "{err:?}");
    // Encoding clamps instead.
    let clamped = msg().encode_at(&limits, u64::MAX).unwrap();
    assert_eq!(
        SyncMessage::decode_timed(&clamped, &limits).unwrap().1,
        Some(i64::MAX as u64)
    );
}
