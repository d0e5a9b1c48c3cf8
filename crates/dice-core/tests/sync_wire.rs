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
    assert_eq!(SYNC_PROTOCOL_VERSION, 7);
    // Versions 2 to 6: the header of today. A node of version 6 cannot decode a push's or an
    // acknowledgement's memory pressure, of version 5 merges a hash field's
    // tombstone by its version alone (it would diverge), of version 4 cannot decode set
    // elements, of version 3 hash fields, of version 2 elements at all.
    for old in [6u16, 5, 4, 3, 2] {
        let mut bytes = old.to_be_bytes().to_vec();
        bytes.extend(5u64.to_be_bytes());
        bytes.extend(postcard::to_allocvec(&msg()).unwrap());
        let err = SyncMessage::decode(&bytes, &SyncLimits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                WireError::UnsupportedVersion {
                    found,
                    supported: 7
                } if found == old
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("sync protocol version {old} is not supported (this node speaks version 7)")
        );
    }
    // Version 1: the postcard body right after the version, no send time.
    let mut v1 = 1u16.to_be_bytes().to_vec();
    v1.extend(postcard::to_allocvec(&msg()).unwrap());
    let err = SyncMessage::decode(&v1, &SyncLimits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::UnsupportedVersion {
                found: 1,
                supported: 7
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "sync protocol version 1 is not supported (this node speaks version 7)"
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
