//! Resident memory per entry: not a timing. Loads N entries (16-byte keys, 100-byte values)
//! and reports the growth of the process's resident set (VmRSS) per entry, next to
//! `Replica::approx_heap_bytes()`.
//!
//!     cargo bench -p dice-core --bench memory
//!     DICE_BENCH_MEM_N=200000 cargo bench -p dice-core --bench memory
//!
//! Each measurement runs in a fresh child process (this binary run again), so memory freed
//! by one (which the allocator may keep) does not flatter the next:
//!
//! * `replica`: `Replica::write` of N entries into an empty replica (no SQLite).
//! * `cache_write`: `Cache::open` of an empty dir, N `write_unacked`, `flush()`.
//! * `cache_open`: `Cache::open` of the dir `cache_write` left (what a restart costs).
//!
//! Under `cargo test --benches` it runs with N = 10 000.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

// The allocator of the `dice` binary, so the figures are the ones a node shows.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use dice_core::{Cache, Limits, NodeId, Replica, now_ms};
use std::path::Path;
use std::process::Command;

const N_DEFAULT: u64 = 1_000_000;
const MODES: [&str; 3] = ["replica", "cache_write", "cache_open"];

use common::{key, value};

/// A field of /proc/self/status, in bytes (the file gives kB).
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn rss() -> u64 {
    status_bytes("VmRSS:")
}

fn report(mode: &str, n: u64, before: u64, after: u64, approx: usize) {
    let peak = status_bytes("VmHWM:");
    let grown = after.saturating_sub(before);
    println!(
        "{mode:<12} n={n:<9} rss_before={:>8.1} MiB  rss_after={:>8.1} MiB  peak={:>8.1} MiB  \
         rss/entry={:>6.1} B  peak_growth/entry={:>6.1} B  approx_heap_bytes/entry={:>6.1} B",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        grown as f64 / n as f64,
        peak.saturating_sub(before) as f64 / n as f64,
        approx as f64 / n as f64,
    );
}

fn child(mode: &str, n: u64, dir: &Path) {
    match mode {
        "replica" => {
            let before = rss();
            let mut r = Replica::new(NodeId::new(1).unwrap(), Limits::default());
            let now = now_ms();
            for i in 0..n {
                r.write(key(i), Some(value(i)), None, now).unwrap();
            }
            let after = rss();
            assert_eq!(r.entry_count() as u64, n);
            report(mode, n, before, after, r.approx_heap_bytes());
        }
        "cache_write" | "cache_open" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let before = rss();
                let cache = Cache::open(dir).await.unwrap();
                if mode == "cache_write" {
                    for i in 0..n {
                        let _ticket = cache
                            .write_unacked(key(i), Some(value(i)), None)
                            .await
                            .unwrap();
                    }
                    cache.flush().await.unwrap();
                }
                let after = rss();
                assert_eq!(cache.len() as u64, n);
                let approx = cache.with_replica(Replica::approx_heap_bytes);
                report(mode, n, before, after, approx);
                cache.close().await.unwrap();
            });
        }
        other => panic!("unknown mode {other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let test_mode = !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test");
    let n: u64 = match std::env::var("DICE_BENCH_MEM_N") {
        Ok(v) => v.replace('_', "").parse().unwrap(),
        Err(_) if test_mode => 10_000,
        Err(_) => N_DEFAULT,
    };
    if let Ok(mode) = std::env::var("DICE_MEM_CHILD") {
        let dir = std::env::var("DICE_MEM_DIR").unwrap();
        child(&mode, n, Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    println!(
        "memory per entry: {n} entries, 16-byte keys, 100-byte values (116 bytes of data); \
         each line from a fresh process"
    );
    for mode in MODES {
        let status = Command::new(std::env::current_exe().unwrap())
            .env("DICE_MEM_CHILD", mode)
            .env("DICE_MEM_DIR", dir.path())
            .env("DICE_BENCH_MEM_N", n.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "{mode}: {status}");
    }
}
