//! Hybrid logical clock: physical milliseconds and a logical counter packed in a `u64`.
//!
//! The upper 48 bits hold milliseconds since the Unix epoch, the lower 16 bits a counter that
//! orders events inside one millisecond. Packing keeps a version small (8 bytes) and makes
//! comparison a single integer compare. The top bit is never set (physical time is clamped to
//! 47 bits, good until the year 6429), so a timestamp also fits SQLite's signed `INTEGER`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Number of bits of the logical counter.
const LOGICAL_BITS: u32 = 16;
/// Largest physical millisecond value that keeps the packed value below `i64::MAX`.
const MAX_PHYSICAL_MS: u64 = (1 << (63 - LOGICAL_BITS)) - 1;

/// A hybrid logical clock timestamp.
///
/// ```
/// use dice_core::Hlc;
/// let a = Hlc::new(1_700_000_000_000, 0);
/// let b = Hlc::new(1_700_000_000_000, 1);
/// assert!(a < b);
/// assert_eq!(b.physical_ms(), 1_700_000_000_000);
/// assert_eq!(b.logical(), 1);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hlc(u64);

impl Hlc {
    /// The zero timestamp, older than any real one.
    pub const ZERO: Hlc = Hlc(0);

    /// Builds a timestamp from milliseconds since the epoch and a logical counter.
    pub fn new(physical_ms: u64, logical: u16) -> Self {
        Hlc((physical_ms.min(MAX_PHYSICAL_MS) << LOGICAL_BITS) | u64::from(logical))
    }

    /// Rebuilds a timestamp from its packed form (as stored or sent on the wire).
    pub fn from_u64(raw: u64) -> Self {
        Hlc(raw & (i64::MAX as u64))
    }

    /// The packed form.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Milliseconds since the Unix epoch.
    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter within the millisecond.
    pub fn logical(self) -> u16 {
        (self.0 & ((1 << LOGICAL_BITS) - 1)) as u16
    }

    /// The smallest timestamp greater than this one (saturating).
    fn successor(self) -> Self {
        Hlc((self.0 + 1).min(i64::MAX as u64))
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hlc({}.{})", self.physical_ms(), self.logical())
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical_ms(), self.logical())
    }
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where a cache reads the time: milliseconds since the Unix epoch. It drives the physical
/// part of the hybrid logical clock, expiry and garbage collection.
///
/// [`SystemClock`] (the default of [`crate::CacheOptions::clock`]) reads the system clock;
/// [`ManualClock`] is moved by hand, for tests of expiry that must not sleep.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock (see [`now_ms`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }
}

/// A clock that only moves when told to: tests of expiry run without sleeping.
///
/// ```
/// use dice_core::{Cache, CacheOptions, ManualClock};
/// use std::sync::Arc;
/// use std::time::Duration;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = Arc::new(ManualClock::new(1_700_000_000_000));
/// let options = CacheOptions::default().with_clock(clock.clone());
/// let dir = tempfile::tempdir()?;
/// let cache = Cache::open_with(dir.path(), options).await?;
/// cache.put_with_ttl("session", "abc", Duration::from_secs(30)).await?;
/// clock.advance(Duration::from_millis(29_999));
/// assert!(cache.get(b"session").is_some());
/// clock.advance(Duration::from_millis(1));
/// assert!(cache.get(b"session").is_none());
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: std::sync::atomic::AtomicU64,
}

impl ManualClock {
    /// A clock that reads `ms` until moved.
    pub fn new(ms: u64) -> Self {
        ManualClock {
            ms: std::sync::atomic::AtomicU64::new(ms),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        self.ms.fetch_add(
            u64::try_from(by.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// Sets the clock to `ms` (backwards too: a clock stepped back by an operator).
    pub fn set(&self, ms: u64) {
        self.ms.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A node's hybrid logical clock.
///
/// `tick` gives a timestamp for a local event, strictly greater than every timestamp this clock
/// has produced or observed. `observe` ratchets the clock forward on receiving a remote
/// timestamp; a timestamp far in the future is *accepted* (rejecting it would break
/// convergence) and counted as a skew event.
///
/// ```
/// use dice_core::{Hlc, HlcClock};
/// let mut clock = HlcClock::new(Hlc::ZERO, 60_000);
/// let t1 = clock.tick(1_000);
/// let remote = Hlc::new(5_000, 7);
/// clock.observe(remote, 1_000);
/// let t2 = clock.tick(1_001);
/// assert!(t1 < remote && remote < t2);
/// ```
#[derive(Debug, Clone)]
pub struct HlcClock {
    last: Hlc,
    max_skew_ms: u64,
    skew_events: u64,
}

impl HlcClock {
    /// A clock that never goes below `last` and counts remote timestamps more than
    /// `max_skew_ms` ahead of local time.
    pub fn new(last: Hlc, max_skew_ms: u64) -> Self {
        HlcClock {
            last,
            max_skew_ms,
            skew_events: 0,
        }
    }

    /// A timestamp for a local event at physical time `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        let next = Hlc::new(now_ms, 0).max(self.last.successor());
        self.last = next;
        next
    }

    /// Ratchets the clock past a remote timestamp. Returns `true` if the remote timestamp was
    /// further ahead of `now_ms` than the allowed skew (it is accepted all the same).
    pub fn observe(&mut self, remote: Hlc, now_ms: u64) -> bool {
        let skewed = remote.physical_ms() > now_ms.saturating_add(self.max_skew_ms);
        if skewed {
            self.skew_events += 1;
        }
        self.last = self.last.max(remote);
        skewed
    }

    /// The greatest timestamp produced or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// How many remote timestamps were ahead of local time by more than the allowed skew.
    pub fn skew_events(&self) -> u64 {
        self.skew_events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_is_strictly_monotonic_even_when_time_goes_back() {
        let mut c = HlcClock::new(Hlc::ZERO, 1000);
        let a = c.tick(10_000);
        let b = c.tick(9_000);
        let d = c.tick(10_000);
        assert!(a < b && b < d);
        assert_eq!(b.physical_ms(), 10_000);
    }

    #[test]
    fn observe_far_future_is_accepted_and_counted() {
        let mut c = HlcClock::new(Hlc::ZERO, 1000);
        let future = Hlc::new(1_000_000, 3);
        assert!(c.observe(future, 1_000));
        assert_eq!(c.skew_events(), 1);
        assert!(c.tick(1_000) > future);
        assert!(!c.observe(Hlc::new(1_500, 0), 1_000));
        assert_eq!(c.skew_events(), 1);
    }

    #[test]
    fn packed_value_fits_i64() {
        let h = Hlc::new(u64::MAX, u16::MAX);
        assert!(h.as_u64() <= i64::MAX as u64);
        assert_eq!(Hlc::from_u64(h.as_u64()), h);
        let mut c = HlcClock::new(h, 0);
        assert!(c.tick(0) >= h);
    }
}
