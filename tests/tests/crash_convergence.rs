//! Crash convergence: node A is killed with SIGKILL again and again while clients pipeline
//! writes into it, and restarted on its data dir each time; its peer B stays up. Once the
//! writes stop, A and B must converge to the same data, holding every write A acknowledged.
//!
//! This is invariant 1 of the design ("no `(origin, seq)` ever names two different writes;
//! a write leaves its node only once it is durable there") seen from outside: if A pushes
//! writes to B before they are committed, a crash loses them on A but not on B, and the
//! restarted A gives their sequence numbers to new writes. B's version vector then claims
//! those new writes, catch-up never sends them, and the two nodes diverge for good, with
//! acknowledged writes missing on B. A test-only fault point on A
//! (`DICE_FAULT_COMMIT_DELAY_MS`) holds every group commit back, so that writes sit in
//! memory, not yet durable, for long enough that the kills land in that window.
//!
//! The schedule is random from a seed, printed at the start. Environment:
//! - `DICE_CRASH_SEED=N` replays a run's kill schedule and writes (the timing of the
//!   processes still varies);
//! - `DICE_CRASH_CYCLES=N` kill/restart cycles (default 8);
//! - `DICE_CRASH_SECS=N` keeps killing for at least this many seconds (default 0);
//! - `DICE_CRASH_WRITERS=N` writer connections (default 2);
//! - `DICE_CRASH_COMMIT_DELAY_MS=N` A's commit delay (default 30; 0 turns it off);
//! - `DICE_CRASH_CONVERGE_SECS=N` how long to wait for convergence (default 30).
#![allow(clippy::unwrap_used)]

use dice_tests::{NodeProcess, api_addr, dial_addr, node_command, wait_for};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Size of every value written: large enough that a group of writes is a sizeable commit.
const VALUE_LEN: usize = 2048;
/// Percentage of writes that overwrite an earlier key of the same writer.
const OVERWRITE_PERCENT: u64 = 20;
/// Commands per pipelined batch: between these two.
const BATCH: (u64, u64) = (100, 200);
/// Time between a restart of A and the next kill: between these two, in milliseconds.
const KILL_AFTER_MS: (u64, u64) = (500, 2500);
/// How long the writers go on after A's last restart, before they stop.
const LAST_RUN: Duration = Duration::from_millis(1500);
/// Convergence is given up early when neither node changes for this long: three rounds of
/// the periodic catch-up (every 5 s) found nothing to fix.
const STABLE_GIVE_UP: Duration = Duration::from_secs(15);

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

    /// Uniform in `lo..=hi`.
    fn between(&mut self, (lo, hi): (u64, u64)) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The value of writer `w`'s write number `seq`: `w<w>:<seq>:` then filler that depends on
/// `seq`, `VALUE_LEN` bytes in all.
fn value_of(w: usize, seq: u64) -> Vec<u8> {
    let mut v = format!("w{w}:{seq}:").into_bytes();
    let fill = b'a' + (seq % 26) as u8;
    v.resize(VALUE_LEN, fill);
    v
}

/// The writer and write number of a value, if it is exactly one this test wrote.
fn parse_value(v: &[u8]) -> Option<(usize, u64)> {
    let text = std::str::from_utf8(v.get(..40.min(v.len()))?).ok()?;
    let mut parts = text.strip_prefix('w')?.splitn(3, ':');
    let w: usize = parts.next()?.parse().ok()?;
    let seq: u64 = parts.next()?.parse().ok()?;
    (value_of(w, seq) == v).then_some((w, seq))
}

/// What became of a write, as its client saw it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    /// `+OK`.
    Acked,
    /// Sent (or about to be) when the connection broke: it may or may not exist.
    InFlight,
    /// An error reply: it must exist nowhere.
    Refused,
}

/// One writer's history: per key, its writes in order.
#[derive(Default)]
struct WriterLog {
    keys: HashMap<String, Vec<(u64, Fate)>>,
    acked: u64,
    in_flight: u64,
    refused: u64,
    broken: u64,
    first_error: Option<String>,
}

/// The API address of the running A, or `None` while it is down.
struct Target(Mutex<Option<SocketAddr>>);

impl Target {
    fn get(&self) -> Option<SocketAddr> {
        *self.0.lock().unwrap()
    }
    fn set(&self, a: Option<SocketAddr>) {
        *self.0.lock().unwrap() = a;
    }
}

/// Sets its flag when dropped (so writers stop even if the killer panics).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn encode_set(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    write!(
        buf,
        "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
        key.len(),
        value.len()
    )
    .unwrap();
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// Reads one simple reply: `Ok(Ok(()))` for `+OK`, `Ok(Err(text))` for an error reply,
/// `Err` when the connection broke.
fn read_reply(r: &mut impl BufRead) -> std::io::Result<Result<(), String>> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 || !line.ends_with(b"\r\n") {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
    match text.as_bytes().first() {
        Some(b'+') if text == "+OK" => Ok(Ok(())),
        Some(b'-') => Ok(Err(text)),
        _ => panic!("unexpected reply to SET: {text:?}"),
    }
}

/// Writer `w`: pipelines batches of `SET`s into A until `stop`, reconnecting whenever A is
/// killed, and records the fate of every write.
fn writer(w: usize, seed: u64, target: &Target, stop: &AtomicBool, acks: &AtomicU64) -> WriterLog {
    let mut rng = Rng(seed ^ (w as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut log = WriterLog::default();
    let (mut seq, mut fresh) = (0u64, 0u64);
    let mut buf = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(addr) = target.get() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        while !stop.load(Ordering::Relaxed) {
            let n = rng.between(BATCH);
            let batch: Vec<(String, u64)> = (0..n)
                .map(|_| {
                    seq += 1;
                    let k = if fresh > 0 && rng.below(100) < OVERWRITE_PERCENT {
                        rng.below(fresh)
                    } else {
                        fresh += 1;
                        fresh - 1
                    };
                    (format!("w{w}:{k}"), seq)
                })
                .collect();
            buf.clear();
            for (k, s) in &batch {
                encode_set(&mut buf, k, &value_of(w, *s));
            }
            let mut fates = Vec::with_capacity(batch.len());
            if stream.write_all(&buf).is_ok() {
                for _ in &batch {
                    match read_reply(&mut reader) {
                        Ok(Ok(())) => fates.push(Fate::Acked),
                        Ok(Err(e)) => {
                            log.first_error.get_or_insert(e);
                            fates.push(Fate::Refused);
                        }
                        Err(_) => break,
                    }
                }
            }
            let broke = fates.len() < batch.len();
            fates.resize(batch.len(), Fate::InFlight);
            for ((k, s), f) in batch.into_iter().zip(fates) {
                match f {
                    Fate::Acked => log.acked += 1,
                    Fate::InFlight => log.in_flight += 1,
                    Fate::Refused => log.refused += 1,
                }
                log.keys.entry(k).or_default().push((s, f));
            }
            acks.store(log.acked, Ordering::Relaxed);
            if broke {
                log.broken += 1;
                break;
            }
        }
    }
    log
}

/// `INFO cluster` of the node at `addr`, as fields.
fn info(addr: SocketAddr) -> redis::RedisResult<HashMap<String, String>> {
    let mut conn = connect(addr)?;
    let text: String = redis::cmd("INFO").arg("cluster").query(&mut conn)?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

fn connect(addr: SocketAddr) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    Ok(conn)
}

/// `(keys, digest)` of a node, and whether it is connected to a peer.
fn summary(addr: SocketAddr) -> Option<(String, String, bool)> {
    let i = info(addr).ok()?;
    let connected = i
        .iter()
        .any(|(k, v)| k.starts_with("dice_peer") && v.contains("connected=1"));
    Some((
        i.get("dice_keys")?.clone(),
        i.get("dice_digest")?.clone(),
        connected,
    ))
}

/// What a node holds for a key: the write (writer, number) of its value, or the raw value
/// if it is none of ours.
type Held = Result<(usize, u64), String>;

/// Every key and value of the node at `addr` (`KEYS *`, then `MGET` 500 at a time).
fn dump(addr: SocketAddr) -> BTreeMap<String, Held> {
    let mut conn = connect(addr).unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    let mut out = BTreeMap::new();
    for chunk in keys.chunks(500) {
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(chunk).query(&mut conn).unwrap();
        for (k, v) in chunk.iter().zip(values) {
            // A key listed by KEYS and gone by MGET: it expired or was deleted, none of ours.
            let Some(v) = v else { continue };
            let held = parse_value(&v).ok_or_else(|| {
                format!(
                    "{} bytes {:?}...",
                    v.len(),
                    String::from_utf8_lossy(&v[..v.len().min(24)])
                )
            });
            out.insert(k.clone(), held);
        }
    }
    out
}

/// The problems of one node's data against the writers' histories.
#[derive(Default)]
struct Audit {
    /// Keys whose last acknowledged write is absent (no value at all).
    missing: Vec<String>,
    /// Keys holding a write older than their last acknowledged one.
    stale: Vec<String>,
    /// Keys holding a write that got an error reply.
    refused_present: Vec<String>,
    /// Keys or values this test never wrote.
    foreign: Vec<String>,
    /// Keys holding a write whose client never saw its reply.
    in_flight_present: usize,
}

impl Audit {
    fn lost(&self) -> usize {
        self.missing.len() + self.stale.len()
    }
}

fn audit(data: &BTreeMap<String, Held>, logs: &[WriterLog]) -> Audit {
    let mut a = Audit::default();
    for (w, log) in logs.iter().enumerate() {
        for (key, writes) in &log.keys {
            let last_ack = writes.iter().rposition(|(_, f)| *f == Fate::Acked);
            match data.get(key) {
                None if last_ack.is_some() => a.missing.push(format!(
                    "{key}: acked w{w}:{}, absent",
                    writes[last_ack.unwrap_or(0)].0
                )),
                None => {}
                Some(Err(raw)) => a.foreign.push(format!("{key}: {raw}")),
                Some(Ok((hw, hs))) => {
                    let pos = writes.iter().position(|(s, _)| *s == *hs);
                    match pos {
                        _ if *hw != w => a.foreign.push(format!("{key}: w{hw}:{hs}")),
                        None => a
                            .foreign
                            .push(format!("{key}: w{hw}:{hs} never written to it")),
                        Some(p) if writes[p].1 == Fate::Refused => {
                            a.refused_present.push(format!("{key}: w{w}:{hs}"));
                        }
                        Some(p) if last_ack.is_some_and(|l| p < l) => a.stale.push(format!(
                            "{key}: acked w{w}:{}, holds w{w}:{hs}",
                            writes[last_ack.unwrap_or(0)].0
                        )),
                        Some(p) => {
                            if writes[p].1 == Fate::InFlight {
                                a.in_flight_present += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    for key in data.keys() {
        let ours = key
            .strip_prefix('w')
            .and_then(|k| k.split_once(':'))
            .and_then(|(w, _)| w.parse::<usize>().ok())
            .is_some_and(|w| logs.get(w).is_some_and(|l| l.keys.contains_key(key)));
        if !ours {
            a.foreign.push(format!("{key}: never written"));
        }
    }
    a
}

fn examples(v: &[String]) -> String {
    let mut shown: Vec<&String> = v.iter().take(5).collect();
    shown.sort();
    format!("{shown:?}")
}

fn start_a(dir: &Path, listen: &str, b_addr: &str, delay_ms: u64) -> (NodeProcess, SocketAddr) {
    let mut cmd = node_command(dir, listen, &["--peer", b_addr]);
    cmd.env("DICE_FAULT_COMMIT_DELAY_MS", delay_ms.to_string());
    let a = NodeProcess::spawn(cmd);
    let log = a.wait_log("node running", Duration::from_secs(30));
    (a, api_addr(&log))
}

/// The distinct warnings and errors of a node's log (fields and timestamps left out), each
/// with its count and its last occurrence; at most `n` of them.
fn warnings(log: &str, n: usize) -> String {
    let mut seen: BTreeMap<String, (usize, &str)> = BTreeMap::new();
    for line in log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
    {
        let what: Vec<&str> = line
            .split_whitespace()
            .skip(1)
            .filter(|w| !w.contains('='))
            .collect();
        let e = seen.entry(what.join(" ")).or_insert((0, line));
        e.0 += 1;
        e.1 = line;
    }
    seen.values()
        .take(n)
        .map(|(count, last)| format!("  {count}x, last: {last}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn acknowledged_writes_survive_repeated_sigkills_and_the_nodes_converge() {
    let seed = env_u64("DICE_CRASH_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        t.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    let cycles = env_u64("DICE_CRASH_CYCLES").unwrap_or(8);
    let min_secs = Duration::from_secs(env_u64("DICE_CRASH_SECS").unwrap_or(0));
    let writers = env_u64("DICE_CRASH_WRITERS").unwrap_or(2).max(1) as usize;
    let delay_ms = env_u64("DICE_CRASH_COMMIT_DELAY_MS").unwrap_or(30);
    let converge = Duration::from_secs(env_u64("DICE_CRASH_CONVERGE_SECS").unwrap_or(30));
    let t_start = Instant::now();
    println!(
        "crash convergence: seed {seed} (DICE_CRASH_SEED={seed} replays), {cycles} cycles, \
         at least {min_secs:?}, {writers} writers, commit delay on A {delay_ms} ms"
    );
    let mut rng = Rng(seed);

    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let b = NodeProcess::start(b_dir.path(), &[]);
    let b_log = b.wait_log("node running", Duration::from_secs(30));
    let (b_dial, b_api) = (dial_addr(&b_log), api_addr(&b_log));

    // A's first start picks a free port; its restarts keep it, so B can redial it too.
    let (first, mut a_api) = start_a(a_dir.path(), "/ip4/127.0.0.1/tcp/0", &b_dial, delay_ms);
    let a_dial = dial_addr(&first.log());
    let listen = a_dial.split("/p2p/").next().unwrap().to_string();
    let mut a = Some(first);
    let both_connected = wait_for(Duration::from_secs(30), || {
        let (sa, sb) = (summary(a_api)?, summary(b_api)?);
        (sa.2 && sb.2).then_some(())
    });
    assert!(both_connected.is_some(), "A and B never connected");
    println!("A and B connected after {:.2?}", t_start.elapsed());

    let target = Target(Mutex::new(Some(a_api)));
    let stop = AtomicBool::new(false);
    let acks: Vec<AtomicU64> = (0..writers).map(|_| AtomicU64::new(0)).collect();
    let total_acks = || acks.iter().map(|a| a.load(Ordering::Relaxed)).sum::<u64>();
    let mut old_logs = String::new();
    let t0 = Instant::now();
    let mut done = 0u64;
    let logs: Vec<WriterLog> = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (target, stop, acks) = (&target, &stop, &acks[w]);
                s.spawn(move || writer(w, seed, target, stop, acks))
            })
            .collect();
        while done < cycles || t0.elapsed() < min_secs {
            let wait = Duration::from_millis(rng.between(KILL_AFTER_MS));
            std::thread::sleep(wait);
            let before = total_acks();
            target.set(None);
            let node = a.take().unwrap();
            old_logs.push_str(&node.log());
            node.kill(); // SIGKILL to its own pid, and reaped: the port is free again
            done += 1;
            let restart = Instant::now();
            let (node, api) = start_a(a_dir.path(), &listen, &b_dial, delay_ms);
            a = Some(node);
            a_api = api;
            target.set(Some(api));
            println!(
                "cycle {done}: killed A after {wait:?} ({before} writes acknowledged so far), \
                 restarted in {:.2?}",
                restart.elapsed()
            );
        }
        std::thread::sleep(LAST_RUN);
        stop.store(true, Ordering::Relaxed);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let write_secs = t0.elapsed();
    let a = a.unwrap();
    let acked: u64 = logs.iter().map(|l| l.acked).sum();
    let in_flight: u64 = logs.iter().map(|l| l.in_flight).sum();
    let refused: u64 = logs.iter().map(|l| l.refused).sum();
    let broken: u64 = logs.iter().map(|l| l.broken).sum();
    println!(
        "writes stopped after {write_secs:.2?}: {acked} acknowledged, {in_flight} in flight at \
         a kill, {refused} refused, {broken} broken connections"
    );
    if let Some(e) = logs.iter().find_map(|l| l.first_error.as_ref()) {
        println!("first error reply: {e}");
    }
    assert!(acked > 0, "no write was ever acknowledged");

    // Quiet: wait until both nodes show the same key count and digest. Give up early if
    // neither changes for a long while (a divergence that sync does not see is permanent).
    let t_quiet = Instant::now();
    let mut last: Option<((String, String), (String, String))> = None;
    let mut stable_since = Instant::now();
    let converged = loop {
        let (sa, sb) = (summary(a_api), summary(b_api));
        if let (Some(sa), Some(sb)) = (&sa, &sb) {
            if sa.0 == sb.0 && sa.1 == sb.1 {
                break true;
            }
            let now = ((sa.0.clone(), sa.1.clone()), (sb.0.clone(), sb.1.clone()));
            if last.as_ref() != Some(&now) {
                last = Some(now);
                stable_since = Instant::now();
            }
        }
        if t_quiet.elapsed() >= converge || stable_since.elapsed() >= STABLE_GIVE_UP {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let quiet = t_quiet.elapsed();

    let (data_a, data_b) = (dump(a_api), dump(b_api));
    let (audit_a, audit_b) = (audit(&data_a, &logs), audit(&data_b, &logs));
    let only_a: Vec<String> = data_a
        .keys()
        .filter(|k| !data_b.contains_key(*k))
        .cloned()
        .collect();
    let only_b: Vec<String> = data_b
        .keys()
        .filter(|k| !data_a.contains_key(*k))
        .cloned()
        .collect();
    let differ: Vec<String> = data_a
        .iter()
        .filter_map(|(k, va)| {
            let vb = data_b.get(k)?;
            (va != vb).then(|| format!("{k}: A {va:?}, B {vb:?}"))
        })
        .collect();
    let (ia, ib) = (
        info(a_api).unwrap_or_default(),
        info(b_api).unwrap_or_default(),
    );
    let digest = |i: &HashMap<String, String>| i.get("dice_digest").cloned().unwrap_or_default();
    let (digest_a, digest_b) = (digest(&ia), digest(&ib));

    let ok = converged
        && audit_a.lost() == 0
        && audit_b.lost() == 0
        && audit_a.refused_present.is_empty()
        && audit_b.refused_present.is_empty()
        && audit_a.foreign.is_empty()
        && audit_b.foreign.is_empty()
        && only_a.is_empty()
        && only_b.is_empty()
        && differ.is_empty()
        && digest_a == digest_b;
    let mut report = format!(
        "seed {seed}: {done} kill cycles in {write_secs:.2?}, {acked} writes acknowledged, \
         {in_flight} in flight at a kill ({} present on A, {} on B), {refused} refused\n\
         {} after {quiet:.2?}: A {} keys digest {digest_a}, B {} keys digest {digest_b}\n\
         acknowledged writes lost on A: {} ({} absent, {} stale) {} {}\n\
         acknowledged writes lost on B: {} ({} absent, {} stale) {} {}\n\
         keys only on A: {} {}\n\
         keys only on B: {} {}\n\
         keys with different values: {} {}\n\
         refused writes present: A {} B {}; values never written: A {} {} B {} {}",
        audit_a.in_flight_present,
        audit_b.in_flight_present,
        if converged {
            "converged"
        } else {
            "NOT converged"
        },
        data_a.len(),
        data_b.len(),
        audit_a.lost(),
        audit_a.missing.len(),
        audit_a.stale.len(),
        examples(&audit_a.missing),
        examples(&audit_a.stale),
        audit_b.lost(),
        audit_b.missing.len(),
        audit_b.stale.len(),
        examples(&audit_b.missing),
        examples(&audit_b.stale),
        only_a.len(),
        examples(&only_a),
        only_b.len(),
        examples(&only_b),
        differ.len(),
        examples(&differ),
        audit_a.refused_present.len(),
        audit_b.refused_present.len(),
        audit_a.foreign.len(),
        examples(&audit_a.foreign),
        audit_b.foreign.len(),
        examples(&audit_b.foreign),
    );
    if !ok {
        let peers = |i: &HashMap<String, String>| {
            let mut p: Vec<String> = i
                .iter()
                .filter(|(k, _)| k.starts_with("dice_peer") && *k != "dice_peers")
                .map(|(k, v)| format!("  {k}:{v}"))
                .collect();
            p.sort();
            p.join("\n")
        };
        report.push_str(&format!(
            "\nA's peers:\n{}\nB's peers:\n{}\nA's last warnings:\n{}\nB's last warnings:\n{}",
            peers(&ia),
            peers(&ib),
            warnings(&format!("{old_logs}{}", a.log()), 15),
            warnings(&b.log(), 15),
        ));
    }
    println!("{report}\n(test ran {:.2?})", t_start.elapsed());
    assert!(
        ok,
        "A and B diverged or lost acknowledged writes (seed {seed})"
    );
    println!(
        "cycles {done}, writes acknowledged {acked}, writes in flight {in_flight}, lost = 0; \
         converged in {quiet:.2?} on {} keys",
        data_a.len()
    );
}
