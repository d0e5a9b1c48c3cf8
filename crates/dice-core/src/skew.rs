//! Estimates of a peer's wall-clock offset from ours, from the send times that sync messages
//! carry, and when to warn about it. Plain arithmetic over times the caller passes in.
//!
//! Every sync message carries its sender's wall-clock milliseconds at send time
//! ([`crate::SyncMessage::encode_at`]). Two kinds of samples come of it:
//!
//! * **Round trip**: we send a request at `t_send`, the peer's reply says it was sent at
//!   `peer_ms`, it arrives at `t_recv`. Assuming the two legs take about as long,
//!   `offset = peer_ms − (t_send + t_recv) / 2`, wrong by at most half the round trip
//!   ([`OffsetSample::round_trip`], as NTP does).
//! * **One way**: a request from the peer, sent at `peer_ms`, arrives at `t_recv`:
//!   `offset ≈ peer_ms − t_recv`, which is short by the (unknown) transit time
//!   ([`OffsetSample::one_way`]). Used only until a round trip gives a better one.
//!
//! A positive offset means the peer's clock is ahead of ours.

use std::collections::VecDeque;

/// Offsets beyond this (in either direction) are warned about.
pub const SKEW_WARN_MS: u64 = 1_000;

/// Round trips longer than this give no sample: a clock stepped during the exchange, or the
/// reply waited in a queue, and the estimate would be too loose to mean anything.
pub const MAX_SAMPLE_RTT_MS: u64 = 10_000;

/// How many recent samples an estimate chooses from.
const WINDOW: usize = 8;

/// One estimate of a peer's clock offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetSample {
    /// The peer's clock minus ours, in milliseconds.
    pub offset_ms: i64,
    /// How far off the estimate may be, in milliseconds (half the round trip); `None` for a
    /// one-way sample, whose error (the transit time) is unknown.
    pub error_ms: Option<u64>,
}

impl OffsetSample {
    /// A sample from a round trip: request sent at `t_send_ms` and its reply received at
    /// `t_recv_ms` (our clock), the reply sent at `peer_ms` (the peer's). `None` when our
    /// clock went backwards between the two readings or the round trip took longer than
    /// [`MAX_SAMPLE_RTT_MS`].
    ///
    /// ```
    /// use dice_core::skew::OffsetSample;
    /// // Sent at 1000, answered at 6010 by a peer 5 s ahead, back at 1020.
    /// let s = OffsetSample::round_trip(1_000, 6_010, 1_020).unwrap();
    /// assert_eq!((s.offset_ms, s.error_ms), (5_000, Some(10)));
    /// ```
    pub fn round_trip(t_send_ms: u64, peer_ms: u64, t_recv_ms: u64) -> Option<Self> {
        let rtt = t_recv_ms.checked_sub(t_send_ms)?;
        if rtt > MAX_SAMPLE_RTT_MS {
            return None;
        }
        // The midpoint of the exchange, in our clock: t_send + rtt/2 (no overflow).
        let mid = i128::from(t_send_ms) + i128::from(rtt) / 2;
        Some(OffsetSample {
            offset_ms: clamp_i64(i128::from(peer_ms) - mid),
            error_ms: Some(rtt.div_ceil(2)),
        })
    }

    /// A sample from a message the peer sent at `peer_ms` (its clock) that arrived at
    /// `t_recv_ms` (ours).
    ///
    /// ```
    /// use dice_core::skew::OffsetSample;
    /// assert_eq!(OffsetSample::one_way(1_000, 3_000).offset_ms, -2_000);
    /// ```
    pub fn one_way(peer_ms: u64, t_recv_ms: u64) -> Self {
        OffsetSample {
            offset_ms: clamp_i64(i128::from(peer_ms) - i128::from(t_recv_ms)),
            error_ms: None,
        }
    }
}

fn clamp_i64(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// What a new estimate calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkewNotice {
    /// The offset is past [`SKEW_WARN_MS`] for the first time, or moved a lot since the last
    /// warning: warn.
    Skewed,
    /// The offset is back well within [`SKEW_WARN_MS`] after a warning: say so once.
    Recovered,
}

/// The clock offset of one peer: recent samples, the current estimate, and what was last
/// warned about (so that a steady skew is warned about once, not at every message).
#[derive(Clone, Debug, Default)]
pub struct ClockOffset {
    samples: VecDeque<OffsetSample>,
    warned_at: Option<i64>,
}

impl ClockOffset {
    /// The current estimate, in milliseconds (peer minus us): among the recent samples, the
    /// one with the smallest error, round trips before one-way ones; the latest on ties.
    /// `None` before any sample.
    pub fn offset_ms(&self) -> Option<i64> {
        self.best().map(|s| s.offset_ms)
    }

    /// The current estimate with its error bound.
    pub fn best(&self) -> Option<OffsetSample> {
        self.samples
            .iter()
            .rev()
            .min_by_key(|s| s.error_ms.unwrap_or(u64::MAX))
            .copied()
    }

    /// Adds a sample; says whether the new estimate should be logged.
    ///
    /// A warning is due when the estimate first goes past [`SKEW_WARN_MS`], and again only when
    /// it moves from the last warned one by more than [`SKEW_WARN_MS`] or a quarter of it,
    /// whichever is more. Once warned, the estimate must come back under half the threshold to
    /// count as recovered (so that an offset hovering at the threshold is not logged over and
    /// over).
    pub fn add(&mut self, sample: OffsetSample) -> Option<SkewNotice> {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        let offset = self.offset_ms()?;
        let size = offset.unsigned_abs();
        match self.warned_at {
            None if size > SKEW_WARN_MS => {
                self.warned_at = Some(offset);
                Some(SkewNotice::Skewed)
            }
            None => None,
            Some(_) if size < SKEW_WARN_MS / 2 => {
                self.warned_at = None;
                Some(SkewNotice::Recovered)
            }
            Some(last) => {
                let moved = offset.abs_diff(last);
                let a_lot = SKEW_WARN_MS.max(last.unsigned_abs() / 4);
                if moved > a_lot && size > SKEW_WARN_MS {
                    self.warned_at = Some(offset);
                    Some(SkewNotice::Skewed)
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_the_midpoint() {
        // Peer 1 h behind; 40 ms round trip, the reply sent at the peer's midpoint.
        let s = OffsetSample::round_trip(10_000_000, 10_000_020 - 3_600_000, 10_000_040).unwrap();
        assert_eq!(s.offset_ms, -3_600_000);
        assert_eq!(s.error_ms, Some(20));
        // An odd round trip: the error bound rounds up.
        let s = OffsetSample::round_trip(0, 1, 3).unwrap();
        assert_eq!((s.offset_ms, s.error_ms), (0, Some(2)));
    }

    #[test]
    fn round_trip_refuses_a_clock_that_went_back_or_a_long_wait() {
        assert_eq!(OffsetSample::round_trip(1_000, 5_000, 999), None);
        assert_eq!(
            OffsetSample::round_trip(0, 5_000, MAX_SAMPLE_RTT_MS + 1),
            None
        );
        assert!(OffsetSample::round_trip(0, 5_000, MAX_SAMPLE_RTT_MS).is_some());
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let s = OffsetSample::round_trip(u64::MAX - 10, 0, u64::MAX).unwrap();
        assert_eq!(s.offset_ms, i64::MIN);
        assert_eq!(OffsetSample::one_way(u64::MAX, 0).offset_ms, i64::MAX);
        assert_eq!(OffsetSample::one_way(0, u64::MAX).offset_ms, i64::MIN);
    }

    #[test]
    fn the_tightest_recent_sample_wins_and_round_trips_beat_one_way() {
        let mut c = ClockOffset::default();
        assert_eq!(c.offset_ms(), None);
        c.add(OffsetSample::one_way(1_000, 900));
        assert_eq!(c.offset_ms(), Some(100));
        c.add(OffsetSample::round_trip(0, 60, 100).unwrap()); // offset 10, error 50
        c.add(OffsetSample::one_way(1_000, 2_000));
        assert_eq!(c.offset_ms(), Some(10));
        c.add(OffsetSample::round_trip(0, 25, 10).unwrap()); // offset 20, error 5
        assert_eq!(c.offset_ms(), Some(20));
        // Old samples leave the window: after WINDOW looser ones, the tight one is gone.
        for _ in 0..WINDOW {
            c.add(OffsetSample::round_trip(0, 130, 200).unwrap()); // offset 30, error 100
        }
        assert_eq!(c.offset_ms(), Some(30));
    }

    /// A sample that makes the estimate `offset` exactly (zero error).
    fn at(offset: i64) -> OffsetSample {
        OffsetSample {
            offset_ms: offset,
            error_ms: Some(0),
        }
    }

    #[test]
    fn a_skew_is_warned_once_then_on_large_changes_then_on_recovery() {
        let mut c = ClockOffset::default();
        assert_eq!(c.add(at(200)), None);
        assert_eq!(c.add(at(1_000)), None, "the threshold itself is fine");
        assert_eq!(c.add(at(3_600_000)), Some(SkewNotice::Skewed));
        // Steady, or jittering by less than a quarter: quiet.
        for jitter in [3_600_005, 3_599_990, 3_700_000, 3_000_000] {
            assert_eq!(c.add(at(jitter)), None, "{jitter}");
        }
        // Moved by more than a quarter of the warned offset: warned again.
        assert_eq!(c.add(at(2_000_000)), Some(SkewNotice::Skewed));
        // Small skews: moving by more than the threshold is a lot.
        assert_eq!(c.add(at(-1_500)), Some(SkewNotice::Skewed));
        assert_eq!(c.add(at(-2_400)), None);
        assert_eq!(c.add(at(-2_600)), Some(SkewNotice::Skewed));
        // Hovering just under the threshold is not a recovery; well under is, once.
        assert_eq!(c.add(at(-900)), None);
        assert_eq!(c.add(at(-100)), Some(SkewNotice::Recovered));
        assert_eq!(c.add(at(-50)), None);
        // And a new skew is warned about again.
        assert_eq!(c.add(at(-5_000)), Some(SkewNotice::Skewed));
    }
}
