//! Conflict-free counters: what the elements of a counter hold, and how a key's counter value
//! is read from them.
//!
//! A counter is spread over elements of its key (see [`crate::entry::Elem`]), each written by
//! one node only, so that the plain rule of the map (the greater version wins) merges them:
//!
//! * [`Contribution`], element `Count(origin)`: the running total of `origin`'s own increments
//!   in its current *run* (a run starts at the seq of the write that started it).
//! * [`ResetRecord`], element `Reset(node, seq)`, named by the dot of the write that made it:
//!   what `node` observed of every origin's contribution when it reset the counter (`SET`,
//!   `DEL`, `EXPIRE` rewrite the key). Written once; collected once another reset that
//!   observed at least as much is stable, or with its dead counter. A hash field's counter
//!   has a contribution per origin under the field (`FieldCount`) and each node's latest reset
//!   of it (`FieldReset(field, node)`, which includes all the node held, so it replaces the
//!   node's older one).
//!
//! An origin's contribution counts for what the resets did not observe of it:
//! nothing if a reset observed its seq (or a later one), the difference if a reset observed an
//! earlier state of the same run, all of it otherwise. Increments a reset did not see survive;
//! those it saw are gone everywhere, whatever the order of arrival.

use crate::entry::NodeId;
use crate::{Error, Result};

/// Encoded size of a [`Contribution`].
pub const CONTRIBUTION_LEN: usize = 32;
/// Encoded size of one observation in a [`ResetRecord`].
const OBSERVED_LEN: usize = 40;

/// A sum of increments: integer increments exactly (an `i128`, which no realistic number of
/// `i64` increments overflows), float increments (`INCRBYFLOAT`) apart.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Amount {
    /// Sum of integer increments.
    pub int: i128,
    /// Sum of float increments.
    pub float: f64,
}

impl Amount {
    fn minus(self, other: Amount) -> Amount {
        Amount {
            int: self.int.wrapping_sub(other.int),
            float: self.float - other.float,
        }
    }

    fn plus(self, other: Amount) -> Amount {
        Amount {
            int: self.int.wrapping_add(other.int),
            float: self.float + other.float,
        }
    }
}

/// What element `Count(origin)` holds: `origin`'s increments in its current run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Contribution {
    /// The seq of the write that started this run.
    pub run: u64,
    /// The increments of the run so far.
    pub total: Amount,
}

impl Contribution {
    /// The element's value bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(CONTRIBUTION_LEN);
        b.extend_from_slice(&self.run.to_le_bytes());
        b.extend_from_slice(&self.total.int.to_le_bytes());
        b.extend_from_slice(&self.total.float.to_le_bytes());
        b
    }

    /// Decodes element value bytes (from a peer or the disk: checked).
    pub fn decode(b: &[u8]) -> Result<Self> {
        if b.len() != CONTRIBUTION_LEN {
            return Err(invalid("counter contribution of the wrong size"));
        }
        let run = u64::from_le_bytes(b[0..8].try_into().unwrap_or_default());
        let int = i128::from_le_bytes(b[8..24].try_into().unwrap_or_default());
        let float = f64::from_le_bytes(b[24..32].try_into().unwrap_or_default());
        if !float.is_finite() {
            return Err(invalid("counter contribution not finite"));
        }
        Ok(Contribution {
            run,
            total: Amount { int, float },
        })
    }
}

/// One origin's contribution as a reset observed it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observed {
    /// The origin.
    pub origin: NodeId,
    /// The seq of the contribution observed.
    pub seq: u64,
    /// Its run's total then.
    pub total: Amount,
}

/// What element `Reset(node, seq)` holds: per origin (sorted, unique), the newest contribution
/// the node had observed when it reset the counter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResetRecord(pub Vec<Observed>);

impl ResetRecord {
    /// The element's value bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.0.len() * OBSERVED_LEN);
        for o in &self.0 {
            b.extend_from_slice(&o.origin.as_u64().to_le_bytes());
            b.extend_from_slice(&o.seq.to_le_bytes());
            b.extend_from_slice(&o.total.int.to_le_bytes());
            b.extend_from_slice(&o.total.float.to_le_bytes());
        }
        b
    }

    /// Decodes element value bytes (from a peer or the disk: checked).
    pub fn decode(b: &[u8]) -> Result<Self> {
        if !b.len().is_multiple_of(OBSERVED_LEN) {
            return Err(invalid("counter reset of the wrong size"));
        }
        let mut out = Vec::with_capacity(b.len() / OBSERVED_LEN);
        for c in b.chunks_exact(OBSERVED_LEN) {
            let origin = NodeId::new(u64::from_le_bytes(c[0..8].try_into().unwrap_or_default()))
                .ok_or_else(|| invalid("counter reset names an invalid origin"))?;
            let seq = u64::from_le_bytes(c[8..16].try_into().unwrap_or_default());
            let int = i128::from_le_bytes(c[16..32].try_into().unwrap_or_default());
            let float = f64::from_le_bytes(c[32..40].try_into().unwrap_or_default());
            if !float.is_finite() {
                return Err(invalid("counter reset not finite"));
            }
            if out.last().is_some_and(|l: &Observed| l.origin >= origin) {
                return Err(invalid("counter reset origins not sorted"));
            }
            out.push(Observed {
                origin,
                seq,
                total: Amount { int, float },
            });
        }
        Ok(ResetRecord(out))
    }
}

fn invalid(reason: &'static str) -> Error {
    Error::InvalidEntry {
        reason,
        key_prefix: Vec::new(),
    }
}

/// The counter elements of one key, gathered to read its value.
#[derive(Debug, Default)]
pub(crate) struct CounterView {
    /// Per origin: its contribution's seq and content.
    pub contributions: Vec<(NodeId, u64, Contribution)>,
    /// Per origin, the newest observation among all resets.
    pub observed: std::collections::BTreeMap<NodeId, Observed>,
}

impl CounterView {
    pub fn add_reset(&mut self, r: &ResetRecord) {
        for o in &r.0 {
            let slot = self.observed.entry(o.origin).or_insert(*o);
            if o.seq > slot.seq {
                *slot = *o;
            }
        }
    }

    /// What the contribution of `origin` at `seq` counts for: `None` if a reset observed it.
    fn effective(&self, origin: NodeId, seq: u64, c: &Contribution) -> Option<Amount> {
        match self.observed.get(&origin) {
            Some(o) if o.seq >= seq => None,
            Some(o) if o.seq >= c.run => Some(c.total.minus(o.total)),
            _ => Some(c.total),
        }
    }

    /// The sum of what every contribution counts for, in origin order (float sums are then the
    /// same on every node), or `None` when none counts (the counter reads as absent).
    pub fn sum(&self) -> Option<Amount> {
        let mut contributions: Vec<&(NodeId, u64, Contribution)> =
            self.contributions.iter().collect();
        contributions.sort_by_key(|c| c.0);
        let mut out: Option<Amount> = None;
        for (origin, seq, c) in contributions {
            if let Some(a) = self.effective(*origin, *seq, c) {
                out = Some(out.unwrap_or_default().plus(a));
            }
        }
        out
    }

    /// The contributions that count, each with the observation of its run it counts from
    /// (if a reset observed part of it): everything the counter's value depends on besides
    /// its string. Resets that observed only older runs are not among it: they are garbage
    /// some nodes may already have collected.
    pub fn counting(&self) -> Vec<(NodeId, u64, Contribution, Option<Observed>)> {
        let mut out: Vec<_> = self
            .contributions
            .iter()
            .filter(|(o, s, c)| self.effective(*o, *s, c).is_some())
            .map(|(o, s, c)| {
                let obs = self.observed.get(o).filter(|ob| ob.seq >= c.run).copied();
                (*o, *s, *c, obs)
            })
            .collect();
        out.sort_by_key(|c| c.0);
        out
    }

    /// Whether `origin`'s contribution has been observed whole by a reset (or there is none):
    /// its next increment starts a new run.
    pub fn starts_new_run(&self, origin: NodeId) -> bool {
        match self.contributions.iter().find(|c| c.0 == origin) {
            None => true,
            Some((o, seq, c)) => self.effective(*o, *seq, c).is_none(),
        }
    }

    /// The contribution of `origin`, if held.
    pub fn of(&self, origin: NodeId) -> Option<Contribution> {
        self.contributions
            .iter()
            .find(|c| c.0 == origin)
            .map(|c| c.2)
    }

    /// A reset that observes everything this view holds (every contribution and every reset's
    /// observations).
    pub fn reset_all(&self) -> ResetRecord {
        let mut observed = self.observed.clone();
        for (origin, seq, c) in &self.contributions {
            let o = Observed {
                origin: *origin,
                seq: *seq,
                total: c.total,
            };
            let slot = observed.entry(*origin).or_insert(o);
            if *seq > slot.seq {
                *slot = o;
            }
        }
        ResetRecord(observed.into_values().collect())
    }
}

/// A string value as a number, the way Redis reads one for `INCR` (`int`) or `INCRBYFLOAT`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    /// An integer in `i64`'s range, written without sign noise (`"12"`, `"-3"`).
    Int(i64),
    /// Any other finite number Redis's float parser takes.
    Float(f64),
}

/// Parses an integer the way Redis's `string2ll` does: optional `-`, digits, no leading zeros
/// or `+` or spaces, within `i64`.
pub fn parse_int(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    if neg && digits == b"0" {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Parses a float the way Redis takes one for `INCRBYFLOAT`: a finite decimal number, no
/// spaces.
pub fn parse_float(s: &[u8]) -> Option<f64> {
    let t = std::str::from_utf8(s).ok()?;
    if t.is_empty() || t.trim() != t {
        return None;
    }
    let lower = t.to_ascii_lowercase();
    if lower.contains("inf") || lower.contains("nan") {
        return None;
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// The string a counter reads as: an integer when no float increment counts, else the float
/// in its shortest round-trip decimal form, never in exponent notation.
pub fn render(base: Option<Number>, sum: Amount) -> Vec<u8> {
    let (base_int, base_float) = match base {
        Some(Number::Int(i)) => (i as i128, None),
        Some(Number::Float(f)) => (0, Some(f)),
        None => (0, None),
    };
    let int = base_int.wrapping_add(sum.int);
    if base_float.is_none() && sum.float == 0.0 {
        return int.to_string().into_bytes();
    }
    let f = int as f64 + base_float.unwrap_or(0.0) + sum.float;
    format_float(f).into_bytes()
}

/// A finite float in plain decimal notation, shortest form that reads back the same.
pub fn format_float(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
    }
    let s = format!("{f}");
    // Rust prints integral floats without a fraction ("10"), like Redis.
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_like_redis() {
        assert_eq!(parse_int(b"12"), Some(12));
        assert_eq!(parse_int(b"-12"), Some(-12));
        assert_eq!(parse_int(b"0"), Some(0));
        for bad in [
            &b""[..],
            b"-0",
            b"012",
            b"+1",
            b" 1",
            b"1 ",
            b"1.0",
            b"abc",
            b"-",
        ] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"9223372036854775808"), None);
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
    }

    #[test]
    fn floats_render_plainly() {
        assert_eq!(render(Some(Number::Int(10)), Amount::default()), b"10");
        let half = Amount { int: 0, float: 0.5 };
        assert_eq!(render(Some(Number::Int(10)), half), b"10.5");
        assert_eq!(render(None, Amount { int: 3, float: 0.0 }), b"3");
        assert_eq!(format_float(1e20), "100000000000000000000");
        assert_eq!(format_float(5.0e-7), "0.0000005");
    }

    #[test]
    fn values_round_trip_and_garbage_is_refused() {
        let c = Contribution {
            run: 7,
            total: Amount {
                int: -5,
                float: 1.25,
            },
        };
        assert_eq!(Contribution::decode(&c.encode()).unwrap(), c);
        assert!(Contribution::decode(&[0; 31]).is_err());
        let mut nan = c.encode();
        nan[24..32].copy_from_slice(&f64::NAN.to_le_bytes());
        assert!(Contribution::decode(&nan).is_err());
        let r = ResetRecord(vec![
            Observed {
                origin: NodeId::new(1).unwrap(),
                seq: 3,
                total: Amount { int: 2, float: 0.0 },
            },
            Observed {
                origin: NodeId::new(2).unwrap(),
                seq: 9,
                total: Amount { int: 1, float: 0.0 },
            },
        ]);
        assert_eq!(ResetRecord::decode(&r.encode()).unwrap(), r);
        let mut unsorted = r.clone();
        unsorted.0.reverse();
        assert!(ResetRecord::decode(&unsorted.encode()).is_err());
        assert!(ResetRecord::decode(&[0; 39]).is_err());
    }
}
