//! Crash test: a child process makes acknowledged writes until it is killed with SIGKILL at a
//! random moment; the parent then reopens the data directory and checks that every write the
//! child reported as acknowledged survived (or was overwritten by a later write of the same
//! key). Repeated on the same directory, each child continuing where the last one stopped.
//! A second test kills children while they create a fresh data directory.
//!
//! The children are this same test binary, re-executed with `DICE_CRASH_CHILD_DIR` (or
//! `DICE_CRASH_CREATE_DIR`) set. Each child is killed only through its own `Child` handle.
#![allow(clippy::unwrap_used)]

use dice_core::{Cache, CacheOptions};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CHILD_DIR: &str = "DICE_CRASH_CHILD_DIR";
const CHILD_START: &str = "DICE_CRASH_CHILD_START";
const TEST_NAME: &str = "acknowledged_writes_survive_sigkill";
/// Keys `k0` .. `k499`; write number `n` goes to key `k{n % KEYS}`.
const KEYS: u64 = 500;
/// Concurrent writers in the child, so that group commits hold several writes.
const WRITERS: u64 = 8;
/// Kill/reopen cycles.
const CYCLES: usize = 6;
/// A child that is never killed (its parent died) stops by itself after this long.
const CHILD_MAX_RUN: Duration = Duration::from_secs(60);

#[test]
fn acknowledged_writes_survive_sigkill() {
    match std::env::var_os(CHILD_DIR) {
        Some(dir) => {
            let start: u64 = std::env::var(CHILD_START).unwrap().parse().unwrap();
            child(Path::new(&dir), start);
        }
        None => parent(),
    }
}

/// The child: writes `v{n}` to `k{n % 500}` for n = start, start + 1, ... with 8 concurrent
/// writers, and prints `ack {n}` once each write is acknowledged.
///
/// Writer `w` owns the keys `k{j}` with `j % 8 == w` and writes them in increasing `n`, so the
/// later write of a key always carries both the greater version and the greater `n`: the
/// parent can check "value >= highest acknowledged n" per key.
fn child(dir: &Path, start: u64) {
    assert_eq!(start % KEYS, 0, "start must be a multiple of {KEYS}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // End the harness's "test ... " line, so that every line we print stands alone.
    println!();
    rt.block_on(async {
        // A tiny snapshot threshold: the writer is in the middle of a snapshot (or switching
        // to one) at many of the kills.
        let options = CacheOptions::default().with_snapshot_min_log_entries(64);
        let cache = Cache::open_with(dir, options).await.unwrap();
        let deadline = Instant::now() + CHILD_MAX_RUN;
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let cache = cache.clone();
            writers.push(tokio::spawn(async move {
                let keys: Vec<u64> = (0..KEYS).filter(|j| j % WRITERS == w).collect();
                for round in 0u64.. {
                    for &j in &keys {
                        let n = start + round * KEYS + j;
                        if let Err(e) = cache.put(format!("k{j}"), format!("v{n}")).await {
                            eprintln!("child: put of n={n} failed: {e}");
                            std::process::exit(3);
                        }
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ack {n}").unwrap();
                        out.flush().unwrap();
                    }
                    if Instant::now() > deadline {
                        return;
                    }
                }
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
    });
    eprintln!("child: never killed, stopping after {CHILD_MAX_RUN:?}");
    std::process::exit(4);
}

/// Owns a spawned child and kills it (SIGKILL, by its handle) if a panic unwinds past it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// Reads the child's stdout, sending every complete `ack {n}` line's `n`.
fn read_acks(child: &mut Child) -> (std::thread::JoinHandle<()>, mpsc::Receiver<u64>) {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match lines.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            // A line cut short by the kill is no acknowledgement.
            let Some(complete) = line.strip_suffix('\n') else {
                return;
            };
            if let Some(n) = complete.strip_prefix("ack ") {
                tx.send(n.parse::<u64>().unwrap()).ok();
            }
        }
    });
    (reader, rx)
}

fn parent() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Per key index, the highest acknowledged n.
    let mut acked: HashMap<u64, u64> = HashMap::new();
    let mut total_acks = 0u64;
    let mut start = 0u64;
    let mut node_id = None;

    for cycle in 0..CYCLES {
        let mut child = KillOnDrop(
            Command::new(&exe)
                .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
                .env(CHILD_DIR, dir.path())
                .env(CHILD_START, start.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        let (reader, rx) = read_acks(&mut child.0);
        let mut acks = Vec::new();
        if cycle % 2 == 1 {
            // Half the cycles count the delay from the first acknowledgement, so the kill
            // lands in the middle of the writes; the others count it from the spawn, so the
            // kill may also land while the child opens the database.
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(n) => acks.push(n),
                Err(e) => panic!("cycle {cycle}: no acknowledgement from the child: {e}"),
            }
        }
        let delay = Duration::from_millis(rand::random_range(50..=400));
        std::thread::sleep(delay);
        let status = child.0.try_wait().unwrap();
        assert!(
            status.is_none(),
            "cycle {cycle}: the child exited by itself: {status:?}"
        );
        child.0.kill().unwrap(); // SIGKILL on Unix
        child.0.wait().unwrap();
        reader.join().unwrap();
        acks.extend(rx.try_iter());

        for &n in &acks {
            assert!(n >= start, "cycle {cycle}: ack {n} below the start {start}");
            let best = acked.entry(n % KEYS).or_insert(0);
            *best = (*best).max(n);
        }
        total_acks += acks.len() as u64;
        eprintln!(
            "cycle {cycle}: killed after {delay:?}, {} acknowledged writes ({total_acks} in all)",
            acks.len()
        );

        let max_n = rt.block_on(verify(dir.path(), &acked, total_acks, &mut node_id));
        let highest = max_n.max(acks.iter().copied().max().unwrap_or(0));
        // The next child continues after everything written so far, on a key boundary.
        start = start.max((highest / KEYS + 1) * KEYS);
    }
    assert!(
        total_acks > 0,
        "the children acknowledged no write: the test proved nothing"
    );
    assert!(
        !acked.is_empty(),
        "no key was acknowledged: the test proved nothing"
    );
}

/// Reopens the data directory and checks every acknowledged write; returns the highest n held.
async fn verify(
    dir: &Path,
    acked: &HashMap<u64, u64>,
    total_acks: u64,
    node_id: &mut Option<dice_core::NodeId>,
) -> u64 {
    let cache = Cache::open(dir).await.unwrap();
    if let Some(id) = *node_id {
        assert_eq!(cache.node_id(), id, "the node id changed across a crash");
    }
    // Every acknowledged write took its own seq, and the version vector is saved with it.
    assert!(
        cache.local_seq() >= total_acks,
        "local seq {} below the {total_acks} acknowledged writes",
        cache.local_seq()
    );
    // The log is folded into snapshots (the child's threshold is tiny): what an open replays
    // stays far below everything ever written.
    let log = cache.stats().log_entries;
    assert!(
        total_acks < 5_000 || log < total_acks / 2,
        "{log} log entries replayed after {total_acks} acknowledged writes"
    );
    let mut max_n = 0;
    for j in 0..KEYS {
        let value = cache.get(format!("k{j}").as_bytes());
        let held = value.map(|v| {
            let s = std::str::from_utf8(&v).unwrap();
            let n: u64 = s.strip_prefix('v').unwrap().parse().unwrap();
            assert_eq!(n % KEYS, j, "k{j} holds {s}, a value of another key");
            n
        });
        if let Some(n) = held {
            max_n = max_n.max(n);
        }
        if let Some(&a) = acked.get(&j) {
            match held {
                None => panic!("k{j}: acknowledged write v{a} lost (key absent)"),
                Some(n) => assert!(n >= a, "k{j}: acknowledged write v{a} lost, holds v{n}"),
            }
        }
    }
    assert!(
        cache.len() as u64 <= KEYS + 1,
        "only the k* keys and \"parent\""
    );
    // The data directory works normally after the crash.
    let next = cache.put("parent", format!("{total_acks}")).await.unwrap();
    assert_eq!(next.seq, cache.local_seq());
    *node_id = Some(cache.node_id());
    cache.close().await.unwrap();
    max_n
}

const CREATE_DIR: &str = "DICE_CRASH_CREATE_DIR";
const CREATE_TEST_NAME: &str = "killed_while_creating_a_data_dir_it_still_opens";

/// A child killed at a random moment while it creates a fresh data directory (creating the
/// database, migrating the schema, stamping it as dice's) leaves a directory that opens.
#[test]
fn killed_while_creating_a_data_dir_it_still_opens() {
    if let Some(dir) = std::env::var_os(CREATE_DIR) {
        create_child(Path::new(&dir));
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // How long an open of a fresh directory takes, measured by the first child.
    let mut window: Option<Duration> = None;
    let mut refused = Vec::new();
    for i in 0..40 {
        let dir = root.path().join(format!("d{i}"));
        let mut child = KillOnDrop(
            Command::new(&exe)
                .args(["--exact", CREATE_TEST_NAME, "--nocapture"])
                .env(CREATE_DIR, &dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        let stdout = child.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                tx.send((line, Instant::now())).ok();
            }
        });
        let wait_for = |what: &str| loop {
            let (line, at) = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("waiting for {what:?} from the child: {e}"));
            if line == what {
                break at;
            }
        };
        let opening = wait_for("opening");
        let mut acked = false;
        match window {
            None => {
                let opened = wait_for("opened");
                window = Some((opened - opening).max(Duration::from_millis(1)));
                wait_for("ack");
                acked = true;
            }
            Some(w) => {
                let delay = w.mul_f64(rand::random_range(0.0..1.2));
                std::thread::sleep(delay.saturating_sub(opening.elapsed()));
            }
        }
        child.0.kill().unwrap(); // SIGKILL on Unix
        child.0.wait().unwrap();
        reader.join().unwrap();
        acked |= rx.try_iter().any(|(line, _)| line == "ack");
        rt.block_on(async {
            match Cache::open(&dir).await {
                Ok(cache) => {
                    if acked {
                        assert_eq!(cache.get(b"k").as_deref(), Some(&b"v"[..]));
                    }
                    cache.put("k2", "v2").await.unwrap();
                    cache.close().await.unwrap();
                }
                Err(e) => refused.push(format!("{i}: {e}")),
            }
        });
    }
    assert!(
        refused.is_empty(),
        "data dirs that no longer open after a crash during creation:\n{}",
        refused.join("\n")
    );
}

fn create_child(dir: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!();
    rt.block_on(async {
        println!("opening");
        let cache = Cache::open(dir).await.unwrap();
        println!("opened");
        cache.put("k", "v").await.unwrap();
        println!("ack");
        tokio::time::sleep(CHILD_MAX_RUN).await;
    });
    std::process::exit(4);
}
