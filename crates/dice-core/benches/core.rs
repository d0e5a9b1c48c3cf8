//! Criterion benchmarks of dice-core: reads, acknowledged writes (alone and concurrent),
//! applying remote batches, and opening a large data directory.
//!
//!     cargo bench -p dice-core --bench core
//!     DICE_BENCH_OPEN_N=200000 cargo bench -p dice-core --bench core -- open_1m
//!
//! Keys are 16 bytes, values 100 bytes. Under `cargo test --benches` (criterion's test mode)
//! every benchmark runs once on small data sets, so that stays quick.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;
use bytes::Bytes;
use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use dice_core::{
    Cache, Entry, Limits, NodeId, Push, Replica, SessionStep, SyncLimits, SyncMessage, SyncSession,
    now_ms,
};
use std::cell::OnceCell;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::runtime::Runtime;

/// Keys held by the cache of the `get` benchmark.
const GET_KEYS: u64 = 100_000;
/// Concurrent writers of `put_acked_concurrent`.
const WRITERS: u64 = 64;
/// Puts per measured batch of `put_acked_concurrent` (160 per writer).
const CONCURRENT_BATCH: u64 = 10_240;
/// Entries per remote batch of `apply_remote_10k`.
const REMOTE_BATCH: u64 = 10_000;
/// Distinct keys the `put_acked` benchmarks cycle through (keeps the table a steady size).
const PUT_KEY_SPACE: u64 = 100_000;
/// Default entry count of `open_1m` (override with `DICE_BENCH_OPEN_N`).
const OPEN_N_DEFAULT: u64 = 1_000_000;

/// Whether criterion runs in test mode (`cargo test --benches`): one pass on small data.
fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test")
}

use common::{key, value};

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Writes keys `0..n` without waiting for each commit, then waits for all of them.
async fn fill(cache: &Cache, n: u64) {
    for i in 0..n {
        let _ticket = cache
            .write_unacked(key(i), Some(value(i)), None)
            .await
            .unwrap();
    }
    cache.flush().await.unwrap();
}

async fn open_filled(dir: &Path, n: u64) -> Cache {
    let cache = Cache::open(dir).await.unwrap();
    fill(&cache, n).await;
    cache
}

fn bench_get(c: &mut Criterion) {
    // Filling the cache takes a few seconds: skip it when the filter selects none of these.
    if !may_select("get/present_key_100k get/hot_key get/now_ms get/replica_get_100k") {
        return;
    }
    let n = if test_mode() { 1_000 } else { GET_KEYS };
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let cache = rt.block_on(open_filled(dir.path(), n));
    let keys: Vec<Bytes> = (0..n).map(key).collect();
    let mut group = c.benchmark_group("get");
    group.throughput(Throughput::Elements(1));
    group.bench_function("present_key_100k", |b| {
        // Walk the keys with a large odd stride so consecutive reads hit unrelated buckets.
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 7_919) % keys.len();
            black_box(cache.get(black_box(&keys[i])))
        })
    });
    // The same key every time: no cache misses, the floor of `Cache::get`.
    group.bench_function("hot_key", |b| {
        let k = &keys[keys.len() / 2];
        b.iter(|| black_box(cache.get(black_box(k))))
    });
    // Breakdown of `present_key_100k`: the clock read every `Cache::get` does, and the map lookup
    // alone (a bare Replica, no lock, no clock).
    group.bench_function("now_ms", |b| b.iter(|| black_box(now_ms())));
    let mut replica = Replica::new(NodeId::new(1).unwrap(), Limits::default());
    let now = now_ms();
    for i in 0..n {
        replica.write(key(i), Some(value(i)), None, now).unwrap();
    }
    group.bench_function("replica_get_100k", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 7_919) % keys.len();
            black_box(replica.get(black_box(&keys[i]), now).map(<[u8]>::len))
        })
    });
    group.finish();
    rt.block_on(cache.close()).unwrap();
}

fn bench_put_acked(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let cache = rt.block_on(Cache::open(dir.path())).unwrap();
    let mut next = 0u64;
    let mut group = c.benchmark_group("put_acked");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sequential", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let i = next;
                    next += 1;
                    cache.put(key(i % PUT_KEY_SPACE), value(i)).await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    if next > 0 {
        eprintln!(
            "put_acked: {next} puts in {} group commits (warm-up included)",
            cache.stats().commits
        );
    }
    rt.block_on(cache.close()).unwrap();
}

fn bench_put_acked_concurrent(c: &mut Criterion) {
    let batch = if test_mode() {
        WRITERS * 4
    } else {
        CONCURRENT_BATCH
    };
    let per_writer = batch / WRITERS;
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let cache = rt.block_on(Cache::open(dir.path())).unwrap();
    let mut round = 0u64;
    let mut group = c.benchmark_group("put_acked_concurrent");
    group.throughput(Throughput::Elements(batch));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function(format!("{WRITERS}_writers_{batch}_puts"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let base = round * batch;
                    round += 1;
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..WRITERS)
                        .map(|w| {
                            let cache = cache.clone();
                            tokio::spawn(async move {
                                for j in 0..per_writer {
                                    let i = base + w * per_writer + j;
                                    cache.put(key(i % PUT_KEY_SPACE), value(i)).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                    total += start.elapsed();
                }
                total
            })
        })
    });
    group.finish();
    if round > 0 {
        eprintln!(
            "put_acked_concurrent: {} puts in {} group commits (warm-up included)",
            round * batch,
            cache.stats().commits
        );
    }
    rt.block_on(cache.close()).unwrap();
}

/// A sender replica that rewrites keys `0..n` with newer versions on every call.
struct Sender {
    replica: Replica,
    n: u64,
    round: u64,
}

impl Sender {
    fn new(id: u64, n: u64) -> Self {
        Sender {
            replica: Replica::new(NodeId::new(id).unwrap(), Limits::default()),
            n,
            round: 0,
        }
    }

    /// Writes a fresh version of every key; returns the entries written, oldest first.
    fn rewrite(&mut self) -> Vec<Entry> {
        self.round += 1;
        let now = now_ms();
        (0..self.n)
            .map(|i| {
                self.replica
                    .write(key(i), Some(value(i + self.round)), None, now)
                    .unwrap()
            })
            .collect()
    }

    /// A Push of a fresh version of every key.
    fn push(&mut self) -> Push {
        let entries = self.rewrite();
        match self.replica.make_push(entries) {
            SyncMessage::Push(p) => p,
            _ => unreachable!(),
        }
    }
}

/// Drives a catch-up session of `receiver` against `sender` to its end.
fn catch_up(receiver: &mut Replica, sender: &Replica, limits: &SyncLimits) -> u64 {
    let (mut session, mut msg) = SyncSession::start(receiver, limits);
    loop {
        let SyncMessage::Request(req) = msg else {
            panic!("expected a request")
        };
        match session
            .handle(receiver, sender.serve(&req, limits), now_ms())
            .unwrap()
        {
            SessionStep::Send(next) => msg = next,
            SessionStep::Done(stats) => return stats.entries_applied,
        }
    }
}

fn bench_apply_remote(c: &mut Criterion) {
    let n = if test_mode() { 100 } else { REMOTE_BATCH };
    let limits = SyncLimits::default();
    let mut group = c.benchmark_group("apply_remote_10k");
    group.throughput(Throughput::Elements(n));

    // One Push of all entries into a replica that holds older versions of the same keys.
    group.bench_function("replica_push_overwrite", |b| {
        let mut sender = Sender::new(1, n);
        let mut receiver = Replica::new(NodeId::new(2).unwrap(), Limits::default());
        receiver.receive_push(sender.push(), now_ms()).unwrap();
        b.iter_batched(
            || sender.push(),
            |push| receiver.receive_push(push, now_ms()).unwrap(),
            BatchSize::PerIteration,
        )
    });

    // One Push of all entries into an empty replica (every entry is a new key).
    group.bench_function("replica_push_new_keys", |b| {
        let mut sender = Sender::new(1, n);
        b.iter_batched(
            || {
                let push = sender.push();
                (
                    Replica::new(NodeId::new(2).unwrap(), Limits::default()),
                    push,
                )
            },
            |(mut receiver, push)| {
                receiver.receive_push(push, now_ms()).unwrap();
                receiver // dropped outside the measurement
            },
            BatchSize::PerIteration,
        )
    });

    // A whole catch-up session of an empty replica against one holding the entries: the
    // sender serves pages (4096 entries at most), the receiver applies them.
    group.bench_function("replica_catchup_session", |b| {
        let mut sender = Sender::new(1, n);
        sender.rewrite();
        b.iter_batched(
            || Replica::new(NodeId::new(2).unwrap(), Limits::default()),
            |mut receiver| {
                let applied = catch_up(&mut receiver, &sender.replica, &limits);
                assert_eq!(applied, n);
                receiver
            },
            BatchSize::PerIteration,
        )
    });

    // A Cache receiving the entries as Pushes of at most a page each (what the network
    // layer accepts), via `handle_sync`, then `flush()`: includes the SQLite commit.
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let cache = rt.block_on(Cache::open(dir.path())).unwrap();
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(20));
    // Senders live outside the closures: criterion calls a closure more than once, and a
    // fresh sender would reuse the seqs the cache already holds.
    let mut push_sender = Sender::new(3, n);
    group.bench_function("cache_push_and_flush", |b| {
        let sender = &mut push_sender;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let entries = sender.rewrite();
                let pushes: Vec<SyncMessage> = entries
                    .chunks(limits.page_max_entries)
                    .map(|c| sender.replica.make_push(c.to_vec()))
                    .collect();
                let start = Instant::now();
                rt.block_on(async {
                    for p in pushes {
                        assert!(cache.handle_sync(p).unwrap().is_none());
                    }
                    cache.flush().await.unwrap();
                });
                total += start.elapsed();
            }
            total
        })
    });

    // A Cache catching up from a peer holding newer versions of every key: the session
    // pages through them (sender's `serve` included), then `flush()`.
    let mut catchup_sender = Sender::new(4, n);
    group.bench_function("cache_catchup_and_flush", |b| {
        let sender = &mut catchup_sender;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                sender.rewrite();
                let start = Instant::now();
                rt.block_on(async {
                    let (mut session, mut msg) = cache.start_sync();
                    let applied = loop {
                        let SyncMessage::Request(req) = msg else {
                            panic!("expected a request")
                        };
                        let reply = sender.replica.serve(&req, &limits);
                        match cache.continue_sync(&mut session, reply).unwrap() {
                            SessionStep::Send(next) => msg = next,
                            SessionStep::Done(stats) => break stats.entries_applied,
                        }
                    };
                    assert_eq!(applied, n);
                    cache.flush().await.unwrap();
                });
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
    rt.block_on(cache.close()).unwrap();
}

/// The data directory of `open_1m`, built once, on first use.
fn open_fixture<'a>(fixture: &'a OnceCell<TempDir>, rt: &Runtime, n: u64) -> &'a TempDir {
    fixture.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        rt.block_on(async {
            let cache = open_filled(dir.path(), n).await;
            cache.close().await.unwrap();
        });
        let db = std::fs::metadata(dir.path().join(dice_core::store::DB_FILE))
            .map(|m| m.len())
            .unwrap_or(0);
        eprintln!(
            "open_1m: built a data dir of {n} entries in {:.1?} ({:.1} MiB database file)",
            start.elapsed(),
            db as f64 / (1024.0 * 1024.0)
        );
        dir
    })
}

/// Opens the cache in `dir`, checks it holds `n` keys, closes it.
fn open_close(rt: &Runtime, dir: &Path, n: u64) {
    rt.block_on(async {
        let cache = Cache::open(dir).await.unwrap();
        assert_eq!(cache.len() as u64, n);
        cache.close().await.unwrap();
    });
}

/// Whether criterion's filter (the command line's positional arguments, a regex) may select
/// benchmark `id`. A guess on the safe side: unknown option values count as filters.
fn may_select(id: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty()
        || filters
            .iter()
            .any(|f| id.contains(f.as_str()) || f.chars().any(|c| ".*+?[(|^$\\".contains(c)))
}

fn bench_open(c: &mut Criterion) {
    let n: u64 = if test_mode() {
        1_000
    } else {
        std::env::var("DICE_BENCH_OPEN_N")
            .ok()
            .map(|v| v.replace('_', "").parse().unwrap())
            .unwrap_or(OPEN_N_DEFAULT)
    };
    let rt = runtime();
    // Dropped (and the directory deleted) when this function returns.
    let fixture = OnceCell::new();
    // Size the measurement to 10 samples of one open each, from one untimed open (which also
    // brings the database file into the page cache). The fixture is built here only if the
    // command line's filter may select this benchmark; otherwise lazily, if it does.
    let estimate = (!test_mode() && may_select("open_1m/open_close")).then(|| {
        let dir = open_fixture(&fixture, &rt, n);
        let start = Instant::now();
        open_close(&rt, dir.path(), n);
        let probe = start.elapsed();
        eprintln!("open_1m: one untimed open + close took {probe:.2?}");
        probe
    });
    let mut group = c.benchmark_group("open_1m");
    group.throughput(Throughput::Elements(n));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(100));
    // Without a probe: about 6 µs per entry were measured on a 2-core VM.
    let per_open = estimate.unwrap_or(Duration::from_secs_f64(n as f64 * 6e-6));
    group.measurement_time((per_open * 10).max(Duration::from_secs(1)));
    group.bench_function(format!("open_close_{n}"), |b| {
        let dir = open_fixture(&fixture, &rt, n);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                open_close(&rt, dir.path(), n);
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_get,
    bench_put_acked,
    bench_put_acked_concurrent,
    bench_apply_remote,
    bench_open
);
criterion_main!(benches);
