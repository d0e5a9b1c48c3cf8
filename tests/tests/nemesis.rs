//! Nemesis: five hosts (network namespaces on one bridge, `dice_tests::netns`), clients
//! writing, overwriting, deleting and expiring keys of a small key space on every host, and a
//! seeded random schedule of faults: kill -9 and restart, partitions (a host cut off), one-way
//! partitions (a host's packets to the others dropped, theirs still arriving), flapping links,
//! clock skew (a node restarted under libfaketime, `+1h`, `-30m`...), and a full disk (the
//! host's data dir is a small tmpfs, filled to the last byte, then freed).
//!
//! Every request is recorded with its reply (ok, error, or none: the connection broke or timed
//! out) and its start and end times. After the last fault is undone, every node must reach the
//! same digest within 10 s, and a checker goes over the history against the final data
//! (identical on every node):
//!
//! - a value written by a request that got an error reply is visible nowhere;
//! - the final state of every key (a value, or absent) is explained by a write that was not
//!   superseded by an acknowledged write certainly ordered after it. `a` is certainly before
//!   `b` in version order when `b` started after `a` ended on the same host (a node's HLC
//!   never goes backwards, across restarts too), or, on different hosts, when `b` started
//!   more than `MARGIN` after `a` ended, before any node ever ran with a clock ahead (one
//!   kernel clock: a version never exceeds the wall clock until then, and a write's version
//!   is at least the wall clock of its node), and `b`'s node was not running behind.
//!   With LWW by version, the final entry of a key is the greatest version written, so this
//!   never fails on correct behaviour; it fails on a lost write (an acknowledged write
//!   superseded by an older one, or absent) and on a resurrected delete (a value back after
//!   a `DEL` certainly ordered after it);
//! - every restart of a node is probed: a key written on it just before the kill and again
//!   just after the restart holds the second write (its clock did not go backwards);
//! - on a full disk, large writes to one key until one is refused (`MISCONF`): the key ends
//!   up holding the last acknowledged one, never the refused one; and after the disk is
//!   freed, writes on that node succeed again within `DISK_RESUME`.
//!
//! Environment: `DICE_NEMESIS_SECS=N` seconds of faults (default 80: about 90 s in all),
//! `DICE_NEMESIS_SEED=N` replays a schedule (the seed is printed, and repeated on failure;
//! process timing still varies). Needs root, iproute2 and libfaketime (`faketime` package),
//! gated like the LAN tests by `lan_tests_enabled` (CI sets `DICE_LAN_TESTS=require`).
#![allow(clippy::unwrap_used)]

use dice_tests::netns::{Lan, connect_api, enter_netns, faketime_env};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Hosts on the LAN.
const HOSTS: usize = 5;
/// Client threads; client `c` talks to host `c % HOSTS`.
const CLIENTS: usize = 5;
/// Keys every client writes, overwrites, deletes and expires.
const SHARED_KEYS: u64 = 12;
/// The TTL of expiring writes (`SET k v PX`, `PEXPIRE`).
const TTL_MS: u64 = 2000;
/// Two requests on different hosts are ordered by real time only this far apart.
const MARGIN_US: u64 = 10_000;
/// All nodes must show one digest within this long after the last heal.
const CONVERGE: Duration = Duration::from_secs(10);
/// Writes on a node must succeed again within this long after its disk is freed.
const DISK_RESUME: Duration = Duration::from_secs(10);
/// Size of each host's tmpfs data dir.
const TMPFS_SIZE: &str = "128m";
/// Size of the large writes made to a full disk, and how many at most per fault.
const BIG_LEN: usize = 900 * 1024;
const BIG_WRITES: usize = 24;
/// A client gives up on a reply after this long (the request counts as unanswered).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Clock offsets a node is restarted with (libfaketime syntax).
const SKEWS: [&str; 4] = ["+1h", "-30m", "+5m", "-2m"];

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")),
    )
}

/// splitmix64: a small seeded generator, so that a seed replays a schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi` milliseconds.
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// What a request asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// `SET key value` (`PX TTL_MS` if `ttl`).
    Set { value: String, ttl: bool },
    /// `DEL key`.
    Del,
    /// `PEXPIRE key TTL_MS`.
    Expire,
}

/// What came back.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// `+OK` (as 1) or an integer reply.
    Ok(i64),
    /// An error reply: the request must have happened nowhere.
    Err(String),
    /// No reply: the connection broke or timed out. It may or may not have happened.
    NoReply,
}

/// One request of the history; times in microseconds since the start of the test.
#[derive(Clone, Debug)]
struct Op {
    client: usize,
    host: usize,
    key: String,
    kind: Kind,
    start: u64,
    end: u64,
    outcome: Outcome,
}

impl Op {
    fn acked(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }

    /// Whether it certainly wrote an entry (a new version) when acknowledged: a SET, a DEL
    /// that found the key, an EXPIRE that set an expiry.
    fn certain_write(&self) -> bool {
        match (&self.kind, &self.outcome) {
            (Kind::Set { .. }, Outcome::Ok(_)) => true,
            (Kind::Del | Kind::Expire, Outcome::Ok(n)) => *n >= 1,
            _ => false,
        }
    }

    /// Whether it may have written an entry that reads as absent in the end.
    fn may_explain_absence(&self) -> bool {
        match (&self.kind, &self.outcome) {
            (_, Outcome::Err(_)) => false,
            (Kind::Set { ttl, .. }, _) => *ttl,
            (Kind::Del, _) => true,
            (Kind::Expire, o) => *o != Outcome::Ok(0),
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match &self.kind {
            Kind::Set { value, ttl: false } => format!("SET {} {value}", self.key),
            Kind::Set { value, ttl: true } => format!("SET {} {value} PX {TTL_MS}", self.key),
            Kind::Del => format!("DEL {}", self.key),
            Kind::Expire => format!("PEXPIRE {} {TTL_MS}", self.key),
        };
        let end = if self.end == u64::MAX {
            "?".to_string()
        } else {
            format!("{:.3}s", self.end as f64 / 1e6)
        };
        write!(
            f,
            "[{what} by client {} on host {}, {:.3}s..{end} -> {:?}]",
            self.client,
            self.host,
            self.start as f64 / 1e6,
            self.outcome
        )
    }
}

/// When nodes ran with skewed clocks: `(host, from, to, ahead)` in microseconds since the
/// start (`to` is `u64::MAX` while it still runs).
#[derive(Default)]
struct Skews(Mutex<Vec<(usize, u64, u64, bool)>>);

/// Sets its flag when dropped (so clients stop even if the nemesis panics).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn micros(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// Sends `cmd`, classifying the reply.
fn send(conn: &mut redis::Connection, cmd: &redis::Cmd) -> Outcome {
    match cmd.query::<redis::Value>(conn) {
        Ok(redis::Value::Okay) => Outcome::Ok(1),
        Ok(redis::Value::Int(n)) => Outcome::Ok(n),
        Ok(redis::Value::SimpleString(s)) if s == "OK" => Outcome::Ok(1),
        Ok(v) => panic!("unexpected reply {v:?}"),
        // An error reply from the server has a code (MISCONF, ERR...); anything else is the
        // connection failing: the request may or may not have been applied.
        Err(e) if e.code().is_some() => Outcome::Err(e.to_string()),
        Err(_) => Outcome::NoReply,
    }
}

/// Client `c`: writes to its host's API (from inside that host's namespace) until `stop`,
/// reconnecting whenever the node is down; every request sent is recorded.
fn client(c: usize, host: usize, ns: &str, seed: u64, t0: Instant, stop: &AtomicBool) -> Vec<Op> {
    enter_netns(ns);
    let mut rng = Rng(seed ^ (c as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut ops = Vec::new();
    let (mut seq, mut unique) = (0u64, 0u64);
    let mut conn: Option<redis::Connection> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(cn) = conn.as_mut() else {
            match connect_api() {
                Ok(cn) => {
                    cn.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
                    conn = Some(cn);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
            continue;
        };
        seq += 1;
        let value = format!("c{c}:{seq}");
        let (key, kind) = if rng.below(100) < 30 {
            unique += 1;
            (format!("u:c{c}:{unique}"), Kind::Set { value, ttl: false })
        } else {
            let key = format!("s:{}", rng.below(SHARED_KEYS));
            let kind = match rng.below(100) {
                0..45 => Kind::Set { value, ttl: false },
                45..60 => Kind::Set { value, ttl: true },
                60..85 => Kind::Del,
                _ => Kind::Expire,
            };
            (key, kind)
        };
        let mut cmd = match &kind {
            Kind::Set { value, .. } => redis::cmd("SET").arg(&key).arg(value).clone(),
            Kind::Del => redis::cmd("DEL").arg(&key).clone(),
            Kind::Expire => redis::cmd("PEXPIRE").arg(&key).arg(TTL_MS).clone(),
        };
        if matches!(kind, Kind::Set { ttl: true, .. }) {
            cmd.arg("PX").arg(TTL_MS);
        }
        let start = micros(t0);
        let outcome = send(cn, &cmd);
        let end = if outcome == Outcome::NoReply {
            conn = None; // its state is unknown: a new connection
            u64::MAX // it may take effect any time later
        } else {
            micros(t0)
        };
        ops.push(Op {
            client: c,
            host,
            key,
            kind,
            start,
            end,
            outcome,
        });
        std::thread::sleep(Duration::from_micros(500 + rng.below(2500)));
    }
    ops
}

/// The fault kinds of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Fault {
    Kill,
    Partition,
    OneWay,
    Flap,
    Skew,
    FullDisk,
}

const FAULTS: [Fault; 6] = [
    Fault::Kill,
    Fault::Partition,
    Fault::OneWay,
    Fault::Flap,
    Fault::Skew,
    Fault::FullDisk,
];

/// The large writes made to one key of a host while its disk was full, by the test alone,
/// one after the other; values are `<tag>:FFF...`.
#[derive(Default)]
struct BigProbe {
    key: String,
    acked: usize,
    /// The tag of the last acknowledged one: the key must hold it, or one of `maybe`.
    last_acked: Option<String>,
    /// Tags of writes with no reply after it.
    maybe: Vec<String>,
    /// Tags of writes answered with an error: never visible.
    refused: Vec<String>,
}

/// The nemesis: the LAN, and what it saw.
struct Nemesis {
    lan: Lan,
    t0: Instant,
    skews: Skews,
    /// Restart probes: `(key, host, what)`; the key must end up holding `after`.
    probes: Vec<(String, usize, String)>,
    restarts: u64,
    /// Problems seen while injecting faults (e.g. writes that did not resume).
    problems: Vec<String>,
    /// Per host, the large writes made while its disk was full.
    big_probes: BTreeMap<usize, BigProbe>,
    /// Per full-disk fault: how the node answered a write while full, and how long writes
    /// took to resume after the disk was freed.
    disk_notes: Vec<String>,
    log: Vec<String>,
}

impl Nemesis {
    fn note(&mut self, what: String) {
        let line = format!("{:7.3}s {what}", self.t0.elapsed().as_secs_f64());
        println!("nemesis: {line}");
        self.log.push(line);
    }

    /// `SET key value` on host `i` from the test, retried (bounded) until acknowledged; the
    /// number of failed attempts and the last error, or the last error if it never was.
    fn probe_set(
        &self,
        i: usize,
        key: &str,
        value: &str,
        timeout: Duration,
    ) -> Result<(u32, String), String> {
        let (mut last, mut failed) = (String::new(), 0);
        let ok = dice_tests::wait_for(timeout, || {
            let r = dice_tests::netns::in_netns(self.lan.host(i).ns(), || {
                let mut conn = connect_api().map_err(|e| e.to_string())?;
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .query::<()>(&mut conn)
                    .map_err(|e| e.to_string())
            });
            match r {
                Ok(()) => Some(()),
                Err(e) => {
                    last = e;
                    failed += 1;
                    std::thread::sleep(Duration::from_millis(100));
                    None
                }
            }
        });
        match ok {
            Some(()) => Ok((failed, last)),
            None => Err(last),
        }
    }

    /// Kills host `i`'s node and starts it again with `env` (a clock skew, or none), probing
    /// that its clock did not go backwards.
    fn restart(&mut self, i: usize, env: &[(&str, String)], down: Duration, what: &str) {
        self.restarts += 1;
        let key = format!("clock:h{i}:{}", self.restarts);
        let before = self.probe_set(i, &key, "before", Duration::from_secs(5));
        self.lan.kill(i);
        let killed = micros(self.t0);
        if let Some(s) = self
            .skews
            .0
            .lock()
            .unwrap()
            .iter_mut()
            .find(|s| s.0 == i && s.2 == u64::MAX)
        {
            s.2 = killed;
        }
        std::thread::sleep(down);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let skew = env.iter().find(|(k, _)| *k == "FAKETIME").map(|(_, v)| *v);
        if let Some(offset) = skew {
            self.skews.0.lock().unwrap().push((
                i,
                micros(self.t0),
                u64::MAX,
                !offset.starts_with('-'),
            ));
        }
        let took = self.lan.start_env(i, &[], &env);
        if let Some(offset) = skew {
            // The node's clock really is off: its log's timestamps show it.
            let log = self.lan.log(i);
            let line = log.lines().rev().find(|l| l.contains("node running"));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let seen = line.and_then(log_time).map(|t| t - now);
            if seen.is_none_or(|s| (s - offset_secs(offset)).abs() >= 30) {
                self.problems.push(format!(
                    "host {i} started with FAKETIME={offset} logs a clock off by {seen:?} s: \
                     is libfaketime working? ({line:?})"
                ));
            }
        }
        let after = self.probe_set(i, &key, "after", Duration::from_secs(10));
        self.note(format!(
            "{what}: host {i} killed, down {down:.1?}, restarted{} in {took:.2?}",
            skew.map(|s| format!(" with its clock at {s}"))
                .unwrap_or_default()
        ));
        match (before, after) {
            (Ok(_), Ok(_)) => self.probes.push((key, i, what.to_string())),
            (b, a) => self.problems.push(format!(
                "restart probe {key} on host {i} ({what}) not acknowledged: before {b:?}, \
                 after {a:?}"
            )),
        }
    }

    /// Applies one fault to host `i`, holds it `hold`, and undoes it; `before_undo` runs just
    /// before the undo (the last fault stops the clients there).
    fn run(&mut self, f: Fault, i: usize, hold: Duration, rng: &mut Rng, before_undo: &dyn Fn()) {
        let n = self.lan.len();
        match f {
            Fault::Kill => {
                before_undo();
                self.restart(i, &[], hold.min(Duration::from_secs(3)), "kill -9");
            }
            Fault::Partition => {
                self.lan.cut(i);
                self.note(format!("partition: host {i} cut off for {hold:.1?}"));
                std::thread::sleep(hold);
                before_undo();
                self.lan.heal(i);
            }
            Fault::OneWay => {
                // To every other host, or to a random half of them.
                let mut to: Vec<usize> = (0..n).filter(|&j| j != i).collect();
                if rng.below(2) == 0 {
                    to.retain(|_| rng.below(2) == 0);
                    if to.is_empty() {
                        to.push((i + 1) % n);
                    }
                }
                self.lan.block_outbound(i, &to);
                self.note(format!(
                    "one-way partition: packets from host {i} to hosts {to:?} dropped for \
                     {hold:.1?}"
                ));
                std::thread::sleep(hold);
                before_undo();
                self.lan.unblock_outbound(i);
            }
            Fault::Flap => {
                let times = 3 + rng.below(5);
                let mut spans = Vec::new();
                for _ in 0..times {
                    let (down, up) = (rng.ms(100, 900), rng.ms(100, 900));
                    self.lan.cut(i);
                    std::thread::sleep(down);
                    self.lan.heal(i);
                    std::thread::sleep(up);
                    spans.push(format!("{}/{}", down.as_millis(), up.as_millis()));
                }
                self.note(format!(
                    "flapping link: host {i} cut and healed {times} times (down/up ms: {})",
                    spans.join(" ")
                ));
                before_undo();
            }
            Fault::Skew => {
                let offset = SKEWS[rng.below(SKEWS.len() as u64) as usize];
                let env = faketime_env(offset);
                self.restart(i, &env, rng.ms(100, 1000), "clock skew");
                std::thread::sleep(hold);
                before_undo();
                self.restart(i, &[], rng.ms(100, 1000), "clock restored");
            }
            Fault::FullDisk => {
                let filled = self.lan.fill_disk(i);
                // How the node answers writes while its disk is full. Its files may hold free
                // room (the log reuses pages it freed), so large writes, to one key per host,
                // until one is refused or `BIG_WRITES` were acknowledged.
                let key = format!("disk:h{i}:{}", self.log.len());
                let probe = self.big_probes.entry(i).or_insert_with(|| BigProbe {
                    key: format!("disk:h{i}:big"),
                    ..BigProbe::default()
                });
                let n0 = probe.acked + probe.maybe.len() + probe.refused.len();
                let (pkey, ns) = (probe.key.clone(), self.lan.host(i).ns().to_string());
                let outcomes = dice_tests::netns::in_netns(&ns, || {
                    let mut outcomes = Vec::new();
                    let Ok(mut conn) = connect_api() else {
                        return outcomes;
                    };
                    conn.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
                    for n in n0..n0 + BIG_WRITES {
                        let tag = format!("h{i}-big-{n}");
                        let value = format!("{tag}:{}", "F".repeat(BIG_LEN));
                        let o = send(&mut conn, redis::cmd("SET").arg(&pkey).arg(value));
                        let stop = o != Outcome::Ok(1);
                        outcomes.push((tag, o));
                        if stop {
                            break;
                        }
                    }
                    outcomes
                });
                let probe = self.big_probes.get_mut(&i).unwrap();
                let (mut acked, mut refused, mut unanswered) = (0, None, 0);
                for (tag, o) in outcomes {
                    match o {
                        Outcome::Ok(_) => {
                            acked += 1;
                            probe.acked += 1;
                            probe.last_acked = Some(tag);
                            probe.maybe.clear();
                        }
                        Outcome::NoReply => {
                            unanswered += 1;
                            probe.maybe.push(tag);
                        }
                        Outcome::Err(e) => {
                            probe.refused.push(tag);
                            refused = Some(e.chars().take(100).collect::<String>());
                        }
                    }
                }
                let while_full = format!(
                    "{acked} writes of {} KiB acknowledged{}, then {}",
                    BIG_LEN / 1024,
                    if unanswered > 0 {
                        format!(", {unanswered} unanswered")
                    } else {
                        String::new()
                    },
                    refused.map_or_else(|| "none refused".to_string(), |e| format!("refused: {e}"))
                );
                self.note(format!(
                    "full disk: host {i}'s data dir filled ({} KiB of filler) for {hold:.1?}; \
                     while full: {while_full}",
                    filled / 1024
                ));
                std::thread::sleep(hold);
                before_undo();
                self.lan.free_disk(i);
                let t = Instant::now();
                let resumed = self.probe_set(i, &format!("{key}:freed"), "freed", DISK_RESUME);
                let note = match &resumed {
                    Ok((0, _)) => format!("a write {:.2?} after freeing succeeded", t.elapsed()),
                    Ok((n, e)) => format!(
                        "writes resumed {:.2?} after freeing, {n} refused before ({})",
                        t.elapsed(),
                        e.chars().take(60).collect::<String>()
                    ),
                    Err(e) => {
                        self.problems.push(format!(
                            "host {i}: writes did not resume within {DISK_RESUME:?} after its \
                             disk was freed; last error: {e}"
                        ));
                        format!("writes did NOT resume within {DISK_RESUME:?}: {e}")
                    }
                };
                self.note(format!("full disk: host {i} freed; {note}"));
                self.disk_notes
                    .push(format!("host {i}: while full {while_full:?}; {note}"));
            }
        }
    }
}

/// Seconds since the Unix epoch of a log line's leading RFC 3339 UTC timestamp
/// (`2026-11-30T09:31:17.515229Z ...`).
fn log_time(line: &str) -> Option<i64> {
    let t = line.get(..19)?;
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// A libfaketime offset (`+1h`, `-30m`, `+90s`) in seconds.
fn offset_secs(offset: &str) -> i64 {
    let (sign, rest) = offset.split_at(1);
    let (n, unit) = rest.split_at(rest.len() - 1);
    let n: i64 = n.parse().unwrap();
    let unit = match unit {
        "h" => 3600,
        "m" => 60,
        "s" => 1,
        u => panic!("unknown unit {u} in {offset}"),
    };
    if sign == "-" { -n * unit } else { n * unit }
}

/// `INFO cluster` fields of a node, over `conn`.
fn info(conn: &mut redis::Connection) -> Option<HashMap<String, String>> {
    let text: String = redis::cmd("INFO").arg("cluster").query(conn).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect(),
    )
}

/// Every key and value of a node (`KEYS *`, then `MGET`); keys that vanish in between are
/// left out.
fn dump(conn: &mut redis::Connection) -> BTreeMap<String, String> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).unwrap();
    let mut out = BTreeMap::new();
    for chunk in keys.chunks(500) {
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query(conn).unwrap();
        for (k, v) in chunk.iter().zip(values) {
            if let Some(v) = v {
                out.insert(k.clone(), v);
            }
        }
    }
    out
}

/// The checker's findings on one node's final data.
#[derive(Default)]
struct Findings {
    /// Acknowledged writes lost: the key is absent, or holds a value superseded by an
    /// acknowledged write certainly ordered after it.
    lost: Vec<String>,
    /// Deleted keys back: the key holds a value written before a DEL certainly ordered after.
    resurrected: Vec<String>,
    /// Values written by requests that got an error reply.
    errored_visible: Vec<String>,
    /// Keys or values no request wrote.
    foreign: Vec<String>,
    /// Restart probes holding the write made before the restart: the clock went backwards.
    clock_backwards: Vec<String>,
}

impl Findings {
    fn total(&self) -> usize {
        self.lost.len()
            + self.resurrected.len()
            + self.errored_visible.len()
            + self.foreign.len()
            + self.clock_backwards.len()
    }
}

/// Ordering facts of one key's history, for "is `c` certainly before an acknowledged write".
struct KeyOrder<'a> {
    ops: Vec<&'a Op>,
    /// Microseconds since the start at which a node first ran with its clock ahead.
    ahead_from: u64,
    /// Whether an op ran on a node whose clock was behind.
    behind: &'a dyn Fn(&Op) -> bool,
}

impl KeyOrder<'_> {
    /// An acknowledged op that certainly has a greater version than `c` (which ended at
    /// `c.end`): a certain write (or, if `observations`, any acknowledged op) on the same
    /// host that started after `c` ended; or a certain write on any host that started more
    /// than `MARGIN_US` after `c` ended, all this before any clock ran ahead, on a host whose
    /// clock was not behind. `None` if there is none.
    ///
    /// An observation (a `DEL` or `PEXPIRE` that found no key) on `c`'s host after `c` means
    /// an entry greater than `c` was there, or `c` had expired; so it counts only against a
    /// `SET` without a TTL (a TTL'd write may expire early on a host whose clock runs ahead
    /// and still be visible at the end).
    fn dominator(&self, c: &Op, observations: bool) -> Option<&Op> {
        if c.end == u64::MAX || !c.acked() {
            return None;
        }
        let observations = observations && matches!(c.kind, Kind::Set { ttl: false, .. });
        self.ops.iter().copied().find(|b| {
            let counts = b.certain_write() || (observations && b.acked());
            counts
                && ((b.host == c.host && b.start > c.end)
                    || (b.certain_write()
                        && c.end < self.ahead_from
                        && b.start > c.end + MARGIN_US
                        && !(self.behind)(b)))
        })
    }
}

/// Checks a node's final data against the history.
fn check(
    data: &BTreeMap<String, String>,
    history: &BTreeMap<String, Vec<&Op>>,
    by_value: &HashMap<&str, &Op>,
    skews: &[(usize, u64, u64, bool)],
    probes: &[(String, usize, String)],
    big_probes: &BTreeMap<usize, BigProbe>,
) -> Findings {
    let mut f = Findings::default();
    let ahead_from = skews
        .iter()
        .filter(|s| s.3)
        .map(|s| s.1)
        .min()
        .unwrap_or(u64::MAX);
    let behind = |b: &Op| {
        skews
            .iter()
            .any(|s| !s.3 && s.0 == b.host && s.1 < b.end && b.start < s.2)
    };
    for (key, ops) in history {
        let order = KeyOrder {
            ops: ops.clone(),
            ahead_from,
            behind: &behind,
        };
        match data.get(key) {
            Some(value) => {
                let Some(w) = by_value.get(value.as_str()).filter(|w| w.key == *key) else {
                    f.foreign.push(format!(
                        "{key} holds {value:?}, which no request wrote to it"
                    ));
                    continue;
                };
                if let Outcome::Err(e) = &w.outcome {
                    f.errored_visible
                        .push(format!("{key} holds {value:?} of {w}, answered {e:?}"));
                    continue;
                }
                // The final entry is the SET of this value or an EXPIRE that rewrote it.
                let candidates = std::iter::once(*w).chain(
                    ops.iter()
                        .copied()
                        .filter(|o| o.kind == Kind::Expire && o.may_explain_absence()),
                );
                let mut witnesses = Vec::new();
                let unexplained = candidates
                    .map(|c| order.dominator(c, true).map(|b| witnesses.push((c, b))))
                    .all(|d| d.is_some());
                if unexplained {
                    let (c, b) = witnesses[0];
                    let line = format!(
                        "{key} holds {value:?} of {c}, but {b} is certainly later{}",
                        if witnesses.len() > 1 {
                            format!(" (and {} EXPIREs, all superseded)", witnesses.len() - 1)
                        } else {
                            String::new()
                        }
                    );
                    if b.kind == Kind::Del {
                        f.resurrected.push(line);
                    } else {
                        f.lost.push(line);
                    }
                }
            }
            None => {
                // Absent: explained by the initial state (no acknowledged write at all) or
                // by a write that may read as absent, not superseded.
                let first_write = ops.iter().find(|o| o.certain_write());
                let explained = first_write.is_none()
                    || ops
                        .iter()
                        .filter(|o| o.may_explain_absence())
                        .any(|c| order.dominator(c, false).is_none());
                if !explained {
                    let last_acked_set = ops
                        .iter()
                        .filter(|o| matches!(o.kind, Kind::Set { .. }) && o.acked())
                        .max_by_key(|o| o.end)
                        .unwrap_or(first_write.unwrap());
                    f.lost.push(format!(
                        "{key} is absent, but {last_acked_set} was acknowledged, and every \
                         DEL or expiring write of the key (if any) is certainly earlier than an \
                         acknowledged write ({} requests on the key)",
                        ops.len()
                    ));
                }
            }
        }
    }
    for (key, i, what) in probes {
        if data.get(key).map(String::as_str) != Some("after") {
            f.clock_backwards.push(format!(
                "{key} holds {:?}, not \"after\": host {i}'s clock went backwards across a \
                 restart ({what})",
                data.get(key)
            ));
        }
    }
    for p in big_probes.values() {
        let tag = data
            .get(&p.key)
            .map(|v| v.split(':').next().unwrap_or("").to_string());
        let ok = tag == p.last_acked || tag.as_ref().is_some_and(|t| p.maybe.contains(t));
        if !ok {
            let line = format!(
                "{} holds the write {tag:?}, but the last one acknowledged on a full disk was \
                 {:?} (no reply: {:?}, refused: {:?})",
                p.key, p.last_acked, p.maybe, p.refused
            );
            if tag.as_ref().is_some_and(|t| p.refused.contains(t)) {
                f.errored_visible.push(line);
            } else {
                f.lost.push(line);
            }
        }
    }
    for (key, value) in data {
        let known =
            history.contains_key(key) || key.starts_with("clock:") || key.starts_with("disk:");
        if !known {
            f.foreign
                .push(format!("{key} = {value:?}: no request wrote this key"));
        }
    }
    f
}

fn examples(v: &[String], n: usize) -> String {
    v.iter()
        .take(n)
        .map(|s| format!("\n    {s}"))
        .collect::<String>()
}

#[test]
fn nemesis_faults_lose_no_acknowledged_write_and_the_nodes_converge() {
    let test = "nemesis_faults_lose_no_acknowledged_write_and_the_nodes_converge";
    if !dice_tests::netns::lan_tests_enabled(test) {
        return;
    }
    let seed = env_u64("DICE_NEMESIS_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        t.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    let secs = Duration::from_secs(env_u64("DICE_NEMESIS_SECS").unwrap_or(80));
    println!(
        "nemesis: seed {seed} (DICE_NEMESIS_SEED={seed} replays the schedule), {secs:?} of \
         faults, {HOSTS} hosts, {CLIENTS} clients"
    );
    faketime_env("+0"); // libfaketime is there, or fail now rather than mid-schedule
    let t_test = Instant::now();
    let mut rng = Rng(seed);

    let mut lan = Lan::new(HOSTS);
    for i in 0..HOSTS {
        lan.mount_tmpfs(i, TMPFS_SIZE);
    }
    for i in 0..HOSTS {
        lan.start(i, &[]);
    }
    let all: Vec<usize> = (0..HOSTS).collect();
    let mesh = lan.wait_mesh(&all, Duration::from_secs(30));
    assert!(mesh.is_some(), "the {HOSTS} hosts never all connected");
    println!(
        "nemesis: {HOSTS} nodes up and meshed in {:.2?}",
        t_test.elapsed()
    );

    let t0 = Instant::now();
    let mut nem = Nemesis {
        lan,
        t0,
        skews: Skews::default(),
        probes: Vec::new(),
        restarts: 0,
        problems: Vec::new(),
        disk_notes: Vec::new(),
        big_probes: BTreeMap::new(),
        log: Vec::new(),
    };
    let stop = AtomicBool::new(false);
    let namespaces: Vec<String> = (0..HOSTS)
        .map(|i| nem.lan.host(i).ns().to_string())
        .collect();
    let mut faults: BTreeMap<Fault, u64> = BTreeMap::new();
    let mut last_heal = Instant::now();
    let history: Vec<Op> = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (stop, ns) = (&stop, namespaces[c % HOSTS].as_str());
                s.spawn(move || client(c, c % HOSTS, ns, seed, t0, stop))
            })
            .collect();
        let handles = std::cell::RefCell::new(Some(handles));
        let collected = std::cell::RefCell::new(Vec::new());
        // Stops the clients and collects their histories (before the last fault's undo).
        let stop_clients = || {
            stop.store(true, Ordering::Relaxed);
            if let Some(hs) = handles.borrow_mut().take() {
                for h in hs {
                    collected.borrow_mut().extend(h.join().unwrap());
                }
            }
        };
        std::thread::sleep(Duration::from_secs(1));
        // Every kind once first, in a seeded order (so that even a short run has them all),
        // then kinds at random.
        let mut first: Vec<Fault> = FAULTS.to_vec();
        for k in (1..first.len()).rev() {
            first.swap(k, rng.below(k as u64 + 1) as usize);
        }
        let mut first = first.into_iter();
        loop {
            let f = first
                .next()
                .unwrap_or_else(|| FAULTS[rng.below(FAULTS.len() as u64) as usize]);
            let i = rng.below(HOSTS as u64) as usize;
            let hold = rng.ms(1000, 5000);
            *faults.entry(f).or_default() += 1;
            let last = t0.elapsed() + hold >= secs;
            let noop = || {};
            nem.run(
                f,
                i,
                hold,
                &mut rng,
                if last { &stop_clients } else { &noop },
            );
            last_heal = Instant::now();
            if last {
                break;
            }
            std::thread::sleep(rng.ms(200, 1500));
        }
        stop_clients();
        collected.into_inner()
    });
    let write_secs = t0.elapsed();
    let mut history = history;
    history.sort_by_key(|o| o.start); // in time order: a request's successors come soon
    nem.note("last fault undone: every node up, every link healed, every disk freed".into());

    // Convergence: one digest and key count everywhere, polled over INFO.
    let mut conns: Vec<redis::Connection> = (0..HOSTS).map(|i| nem.lan.connect(i)).collect();
    let mut states = Vec::new();
    let converged = dice_tests::wait_for(CONVERGE + Duration::from_secs(20), || {
        states = conns
            .iter_mut()
            .map(|c| {
                info(c)
                    .map(|i| {
                        (
                            i.get("dice_digest").cloned().unwrap_or_default(),
                            i.get("dice_keys").cloned().unwrap_or_default(),
                        )
                    })
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>();
        let first = states[0].clone();
        (!first.0.is_empty() && states.iter().all(|s| *s == first)).then(|| last_heal.elapsed())
    });
    match converged {
        Some(t) => println!("nemesis: converged {t:.2?} after the last heal"),
        None => println!("nemesis: NOT converged 30 s after the last heal: {states:?}"),
    }
    // Let every expiring write expire (their TTLs count from before the last heal), then read
    // everything on every node.
    let last_op = history.iter().map(|o| o.start).max().unwrap_or(0);
    let expired_by = Duration::from_micros(last_op) + Duration::from_millis(TTL_MS + 500);
    if let Some(wait) = expired_by.checked_sub(t0.elapsed()) {
        std::thread::sleep(wait);
    }
    // A write from a node whose clock ran ahead may expire during a read of all nodes:
    // read again (a few times) until the reads agree.
    let mut dumps: Vec<BTreeMap<String, String>> = Vec::new();
    let mut digests: Vec<String> = Vec::new();
    for _ in 0..3 {
        dumps = conns.iter_mut().map(dump).collect();
        digests = conns
            .iter_mut()
            .map(|c| {
                info(c)
                    .and_then(|i| i.get("dice_digest").cloned())
                    .unwrap_or_default()
            })
            .collect();
        if dumps.iter().all(|d| *d == dumps[0]) && digests.iter().all(|d| *d == digests[0]) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut diverged: Vec<String> = Vec::new();
    let mut keys: Vec<&String> = dumps.iter().flat_map(BTreeMap::keys).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let vals: Vec<Option<&String>> = dumps.iter().map(|d| d.get(k)).collect();
        if vals.iter().any(|v| *v != vals[0]) {
            diverged.push(format!("{k}: {vals:?}"));
        }
    }
    if digests.iter().any(|d| *d != digests[0]) {
        diverged.push(format!("digests differ: {digests:?}"));
    }

    // The checker.
    let mut by_key: BTreeMap<String, Vec<&Op>> = BTreeMap::new();
    let mut by_value: HashMap<&str, &Op> = HashMap::new();
    for op in &history {
        by_key.entry(op.key.clone()).or_default().push(op);
        if let Kind::Set { value, .. } = &op.kind {
            by_value.insert(value.as_str(), op);
        }
    }
    let skews = nem.skews.0.lock().unwrap().clone();
    let findings: Vec<Findings> = dumps
        .iter()
        .map(|d| check(d, &by_key, &by_value, &skews, &nem.probes, &nem.big_probes))
        .collect();

    // The summary.
    let count = |p: &dyn Fn(&Op) -> bool| history.iter().filter(|o| p(o)).count();
    let misconf = count(&|o| matches!(&o.outcome, Outcome::Err(e) if e.contains("MISCONF")));
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "nemesis summary (seed {seed}, {write_secs:.1?} of writes, test {:.1?}):",
        t_test.elapsed()
    );
    let _ = writeln!(
        summary,
        "  faults: {faults:?}, node restarts {}",
        nem.restarts
    );
    let _ = writeln!(
        summary,
        "  requests {}: ok {}, error {} ({misconf} MISCONF), no reply {}; SET {} (PX {}), DEL \
         {}, PEXPIRE {}; unique keys {}, shared keys {}",
        history.len(),
        count(&Op::acked),
        count(&|o| matches!(o.outcome, Outcome::Err(_))),
        count(&|o| o.outcome == Outcome::NoReply),
        count(&|o| matches!(o.kind, Kind::Set { .. })),
        count(&|o| matches!(o.kind, Kind::Set { ttl: true, .. })),
        count(&|o| o.kind == Kind::Del),
        count(&|o| o.kind == Kind::Expire),
        by_key.keys().filter(|k| k.starts_with("u:")).count(),
        by_key.keys().filter(|k| k.starts_with("s:")).count(),
    );
    if let Some(e) = history.iter().find_map(|o| match &o.outcome {
        Outcome::Err(e) => Some(e),
        _ => None,
    }) {
        let _ = writeln!(summary, "  first error reply: {e}");
    }
    for d in &nem.disk_notes {
        let _ = writeln!(summary, "  full disk: {d}");
    }
    let sizes: Vec<String> = (0..HOSTS)
        .map(|i| {
            let bytes: u64 = std::fs::read_dir(nem.lan.host(i).dir())
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| e.metadata().ok())
                        .map(|m| m.len())
                        .sum()
                })
                .unwrap_or(0);
            format!("{} KiB", bytes / 1024)
        })
        .collect();
    let _ = writeln!(summary, "  data dirs (tmpfs {TMPFS_SIZE} each): {sizes:?}");
    let sum = |f: &dyn Fn(&Findings) -> usize| findings.iter().map(f).max().unwrap_or(0);
    let _ = writeln!(
        summary,
        "  lost = {}, resurrected = {}, errored visible = {}, foreign = {}, clock backwards = \
         {} ({} restart probes), diverged = {}",
        sum(&|f| f.lost.len()),
        sum(&|f| f.resurrected.len()),
        sum(&|f| f.errored_visible.len()),
        sum(&|f| f.foreign.len()),
        sum(&|f| f.clock_backwards.len()),
        nem.probes.len(),
        diverged.len(),
    );
    let _ = writeln!(
        summary,
        "  time to converge after the last heal: {}; {} keys on every node",
        converged.map_or_else(|| "NOT CONVERGED".to_string(), |t| format!("{t:.2?}")),
        dumps[0].len()
    );
    for (i, f) in findings.iter().enumerate() {
        if f.total() > 0 {
            let _ = write!(
                summary,
                "  host {i}:\n   lost:{}\n   resurrected:{}\n   errored visible:{}\n   \
                 foreign:{}\n   clock backwards:{}\n",
                examples(&f.lost, 8),
                examples(&f.resurrected, 8),
                examples(&f.errored_visible, 8),
                examples(&f.foreign, 8),
                examples(&f.clock_backwards, 8),
            );
        }
    }
    if !diverged.is_empty() {
        let _ = writeln!(summary, "  diverged:{}", examples(&diverged, 10));
    }
    for p in &nem.problems {
        let _ = writeln!(summary, "  problem: {p}");
    }
    // Anti-entropy repairs since each node's last start: divergences the sync protocol left.
    let repairs: Vec<String> = conns
        .iter_mut()
        .map(|c| {
            info(c).map_or_else(
                || "?".to_string(),
                |i| {
                    let f = |k: &str| i.get(k).cloned().unwrap_or_else(|| "?".into());
                    format!(
                        "{} ({} entries, {} conflicts)",
                        f("dice_repairs"),
                        f("dice_repaired_entries"),
                        f("dice_repair_conflicts")
                    )
                },
            )
        })
        .collect();
    let _ = writeln!(
        summary,
        "  anti-entropy repairs per node since its last start: {repairs:?}"
    );
    println!("{summary}");
    let failed = findings.iter().any(|f| f.total() > 0)
        || !diverged.is_empty()
        || converged.is_none_or(|t| t > CONVERGE)
        || !nem.problems.is_empty();
    if failed {
        println!("nemesis schedule:\n  {}", nem.log.join("\n  "));
        for i in 0..HOSTS {
            let log = nem.lan.log(i);
            let warn: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .collect();
            println!(
                "---- host {i}: last warnings ----\n{}",
                warn[warn.len().saturating_sub(10)..].join("\n")
            );
        }
    }
    // Each check on its own, so that a failure names the one that failed.
    let replay = format!(
        "replay: DICE_NEMESIS_SEED={seed} DICE_NEMESIS_SECS={}",
        secs.as_secs()
    );
    assert!(
        converged.is_some_and(|t| t <= CONVERGE),
        "CHECK convergence FAILED: the nodes did not converge within {CONVERGE:?} after the \
         last heal ({converged:?}); {replay}"
    );
    assert!(
        diverged.is_empty(),
        "CHECK divergence FAILED: {} keys differ between nodes; {replay}",
        diverged.len()
    );
    for (what, n) in [
        ("lost", sum(&|f| f.lost.len())),
        ("resurrected", sum(&|f| f.resurrected.len())),
        ("errored-visible", sum(&|f| f.errored_visible.len())),
        ("foreign", sum(&|f| f.foreign.len())),
        ("clock-backwards", sum(&|f| f.clock_backwards.len())),
    ] {
        assert_eq!(n, 0, "CHECK {what} FAILED: {n} keys (see above); {replay}");
    }
    assert!(
        nem.problems.is_empty(),
        "CHECK fault-recovery FAILED: {:?}; {replay}",
        nem.problems
    );
    assert!(count(&Op::acked) > 0, "no request was ever acknowledged");
}

/// The checker on made-up histories: it flags a lost write, a resurrected delete, an errored
/// write that is visible and a clock that went backwards, and accepts what LWW allows
/// (concurrent writes either way; any order once a clock ran ahead). No LAN needed.
#[test]
fn the_checker_flags_lost_and_resurrected_writes_and_accepts_lww() {
    let op = |host: usize, key: &str, kind: Kind, (start, end): (u64, u64), outcome: Outcome| Op {
        client: host,
        host,
        key: key.to_string(),
        kind,
        start,
        end,
        outcome,
    };
    let set = |v: &str| Kind::Set {
        value: v.to_string(),
        ttl: false,
    };
    let history = vec![
        // u:1 written once, acknowledged.
        op(0, "u:1", set("v1"), (0, 1_000), Outcome::Ok(1)),
        // s:del: set on host 0, deleted on host 0 later.
        op(0, "s:del", set("d1"), (0, 1_000), Outcome::Ok(1)),
        op(0, "s:del", Kind::Del, (5_000, 6_000), Outcome::Ok(1)),
        // s:x: set on host 0, then long after on host 1.
        op(0, "s:x", set("x1"), (0, 1_000), Outcome::Ok(1)),
        op(1, "s:x", set("x2"), (100_000, 101_000), Outcome::Ok(1)),
        // s:c: concurrent sets on two hosts.
        op(0, "s:c", set("c1"), (0, 50_000), Outcome::Ok(1)),
        op(1, "s:c", set("c2"), (10_000, 20_000), Outcome::Ok(1)),
        // s:e: an errored set.
        op(
            2,
            "s:e",
            set("e1"),
            (0, 1_000),
            Outcome::Err("MISCONF full".into()),
        ),
        // s:n: a set with no reply, then a DEL on another host.
        op(3, "s:n", set("n1"), (0, u64::MAX), Outcome::NoReply),
        op(4, "s:n", Kind::Del, (900_000, 901_000), Outcome::Ok(0)),
    ];
    let mut by_key: BTreeMap<String, Vec<&Op>> = BTreeMap::new();
    let mut by_value: HashMap<&str, &Op> = HashMap::new();
    for o in &history {
        by_key.entry(o.key.clone()).or_default().push(o);
        if let Kind::Set { value, .. } = &o.kind {
            by_value.insert(value.as_str(), o);
        }
    }
    let probes = vec![("clock:h0:1".to_string(), 0, "kill -9".to_string())];
    let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    // Correct: the greatest writes won.
    let good = data(&[
        ("u:1", "v1"),
        ("s:x", "x2"),
        ("s:c", "c1"),
        ("clock:h0:1", "after"),
    ]);
    let f = check(&good, &by_key, &by_value, &[], &probes, &BTreeMap::new());
    assert_eq!(f.total(), 0, "{:?} {:?}", f.lost, f.foreign);
    // Concurrent writes: the other one may win too; a write with no reply may exist.
    let good = data(&[
        ("u:1", "v1"),
        ("s:x", "x2"),
        ("s:c", "c2"),
        ("s:n", "n1"),
        ("clock:h0:1", "after"),
    ]);
    assert_eq!(
        check(&good, &by_key, &by_value, &[], &probes, &BTreeMap::new()).total(),
        0
    );
    // Every bug at once.
    let bad = data(&[
        ("s:del", "d1"),
        ("s:x", "x1"),
        ("s:e", "e1"),
        ("s:zzz", "?"),
        ("clock:h0:1", "before"),
    ]);
    let f = check(&bad, &by_key, &by_value, &[], &probes, &BTreeMap::new());
    assert_eq!(f.lost.len(), 3, "u:1, s:c absent, s:x older: {:?}", f.lost);
    assert_eq!(f.resurrected.len(), 1, "s:del back: {:?}", f.resurrected);
    assert_eq!(f.errored_visible.len(), 1, "{:?}", f.errored_visible);
    assert_eq!(f.foreign.len(), 1, "{:?}", f.foreign);
    assert_eq!(f.clock_backwards.len(), 1, "{:?}", f.clock_backwards);
    // Once a node ran with its clock ahead, real time orders only writes of one host: x1 may
    // win over x2 (host 0's clock was ahead), but d1 still may not come back.
    let skews = [(0, 500, 2_000_000, true)];
    let f = check(&bad, &by_key, &by_value, &skews, &probes, &BTreeMap::new());
    assert_eq!(f.lost.len(), 2, "only u:1 and s:c absent: {:?}", f.lost);
    assert_eq!(f.resurrected.len(), 1, "s:del back: {:?}", f.resurrected);
}
