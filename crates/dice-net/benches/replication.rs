//! Replication figures of real nodes on 127.0.0.1 (issue 6, parts 2 and 3).
//!
//! Part 2, replication latency: on a 3-node cluster, a put on A until B sees it (B's change
//! subscription), p50/p99/p999 over `DICE_BENCH_SAMPLES` samples, idle and under a background
//! write load on C (64 concurrent writers).
//!
//! Part 3, catch-up: a fresh 3-node cluster, `DICE_BENCH_KEYS` keys (100-byte values) written
//! through A (time until all 3 converge). Then for each d in `DICE_BENCH_MISSED`: C stops
//! (clean shutdown, data dir kept), d distinct random keys of the N get new 100-byte values on
//! A and B, C restarts from its dir (it finds A and B again through its saved known peers),
//! and the bench prints the time until all 3 hold the same digest, the sync bytes C received,
//! the encoded size of the d missed entries and of a full copy of the state.
//!
//! Run: `cargo bench -p dice-net --bench replication`. Env: `DICE_BENCH_SAMPLES` (default
//! 2000), `DICE_BENCH_KEYS` (default 100000), `DICE_BENCH_MISSED` (default
//! `1000,10000,100000`, each capped at the key count). Prints figures; asserts nothing about
//! time. Without `--bench` (as `cargo test --benches` runs it) it does a quick pass at tiny
//! sizes.
#![allow(clippy::unwrap_used, missing_docs)]

use dice_core::{Entry, Push, SyncLimits, SyncMessage, VersionVector};
use dice_net::{Multiaddr, Node, NodeBuilder};
use rand::SeedableRng;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Value size of every write of part 3 (and of the background load of part 2).
const VALUE_BYTES: usize = 100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    let raw = std::env::var(name).unwrap_or_else(|_| default.to_owned());
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{name}: not a number: {s:?}"))
        })
        .collect()
}

async fn start(dir: &std::path::Path, peers: &[Multiaddr]) -> Node {
    // Node defaults otherwise (catch-up every 5 s, as `dice node` runs).
    let mut b = NodeBuilder::new(dir)
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .mdns(false);
    for p in peers {
        b = b.peer(p.clone());
    }
    b.start().await.unwrap()
}

async fn addr_of(node: &Node) -> Multiaddr {
    let mut a = node.status().await.unwrap().listen_addrs[0].clone();
    a.push(libp2p::multiaddr::Protocol::P2p(node.peer_id()));
    a
}

/// Starts A, then B and C with A as their bootstrap peer; waits until each sees the other two.
async fn start_cluster(dirs: &[tempfile::TempDir]) -> [Node; 3] {
    let a = start(dirs[0].path(), &[]).await;
    let a_addr = addr_of(&a).await;
    let b = start(dirs[1].path(), std::slice::from_ref(&a_addr)).await;
    let c = start(dirs[2].path(), std::slice::from_ref(&a_addr)).await;
    let all = [a, b, c];
    let t0 = Instant::now();
    loop {
        let mut ok = true;
        for n in &all {
            let connected = n
                .status()
                .await
                .unwrap()
                .peers
                .iter()
                .filter(|p| p.connected)
                .count();
            ok &= connected == 2;
        }
        if ok {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the 3 nodes did not connect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    all
}

fn vv(node: &Node) -> VersionVector {
    node.cache().with_replica(|r| r.vv().clone())
}

/// Waits until every node holds the same digest; returns when that was, measured from `since`.
///
/// The cheap test first: equal version vectors (polled every ms); then the digests confirm,
/// and the time returned is when the version vectors were read. So a `Cache::digest` that costs
/// O(N) (it hashed every live key under the replica's read lock before dice-core kept it up to
/// date; the bench prints what one costs) does not slow down the catch-up being timed, with
/// the nodes and this loop on two worker threads. The digests are also compared every 2 s
/// whatever the version vectors say, in case those never match.
async fn wait_converged(nodes: &[Node], since: Instant, timeout: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let mut next_digest_check = t0 + Duration::from_secs(2);
    while t0.elapsed() < timeout {
        let at = since.elapsed();
        let vvs: Vec<VersionVector> = nodes.iter().map(vv).collect();
        let vv_equal = vvs.windows(2).all(|w| w[0] == w[1]);
        if vv_equal || Instant::now() >= next_digest_check {
            let d: Vec<u64> = nodes.iter().map(|n| n.cache().digest()).collect();
            if d.windows(2).all(|w| w[0] == w[1]) {
                return Some(at);
            }
            next_digest_check = Instant::now() + Duration::from_secs(2);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Put on `from`, wait until `to` reports the key through its change subscription. Returns
/// the sorted put-to-visible times and, sorted apart, the times of the local put alone (it
/// returns once committed on `from`; the push to peers starts as soon as the write is in
/// memory, so the two overlap).
async fn latency_samples(
    from: &Node,
    to: &Node,
    samples: usize,
    tag: &str,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut events = to.cache().subscribe();
    let mut out = Vec::with_capacity(samples);
    let mut puts = Vec::with_capacity(samples);
    for i in 0..samples {
        let key = format!("lat-{tag}-{i}");
        let t0 = Instant::now();
        from.put(key.clone(), "x").await.unwrap();
        puts.push(t0.elapsed());
        loop {
            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                Ok(Ok(ev)) if ev.key.as_ref() == key.as_bytes() => break,
                Ok(Ok(_)) => {}
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                    if to.get(key.as_bytes()).is_some() {
                        break;
                    }
                }
                Ok(Err(e)) => panic!("subscription closed: {e}"),
                Err(_) => panic!("key {key} never reached the peer"),
            }
        }
        out.push(t0.elapsed());
    }
    out.sort();
    puts.sort();
    (out, puts)
}

fn latency_row(name: &str, (s, puts): &(Vec<Duration>, Vec<Duration>), target: &str) {
    println!(
        "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} / {:.3} / {:.3} | {target} |",
        s.len(),
        ms(percentile(s, 0.50)),
        ms(percentile(s, 0.99)),
        ms(percentile(s, 0.999)),
        ms(*s.last().unwrap()),
        ms(percentile(puts, 0.50)),
        ms(percentile(puts, 0.99)),
        ms(*puts.last().unwrap()),
    );
}

/// Bytes of `entries` as the sync protocol encodes them (postcard, inside a Push or a Page):
/// each entry encoded alone in a one-entry Push, minus the size of an empty Push. So this is
/// key (length varint + bytes) + value (option tag + length varint + bytes) + version (HLC
/// u64 varint + origin node id u64 varint) + seq (u64 varint) + expiry (option tag), and
/// nothing of the message framing.
fn encoded_bytes(entries: impl IntoIterator<Item = Entry>) -> (u64, usize) {
    let limits = SyncLimits::default();
    let push = |entries: Vec<Entry>| {
        SyncMessage::Push(Push {
            from: dice_core::NodeId::default(),
            sender_vv: VersionVector::default(),
            entries,
            range: None,
            pressed: false,
        })
        .encode(&limits)
        .unwrap()
        .len()
    };
    let empty = push(Vec::new());
    let (mut bytes, mut count) = (0u64, 0usize);
    for e in entries {
        bytes += (push(vec![e]) - empty) as u64;
        count += 1;
    }
    (bytes, count)
}

fn key_of(k: usize) -> String {
    format!("key{k:08}")
}

fn sum_received(status: &dice_net::NodeStatus) -> (u64, u64) {
    status.peers.iter().fold((0, 0), |(b, e), p| {
        (b + p.bytes_received, e + p.entries_received)
    })
}

async fn part2_latency(samples: usize) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [a, b, c] = start_cluster(&dirs).await;

    println!();
    println!(
        "### replication latency (3 nodes on loopback; put on A until B's subscription sees it)"
    );
    println!();
    println!(
        "| load | samples | p50 ms | p99 ms | p999 ms | max ms | local put alone (committed on A) p50 / p99 / max ms | target |"
    );
    println!("|---|---|---|---|---|---|---|---|");

    // Idle.
    let idle = latency_samples(&a, &b, samples, "idle").await;
    let p99 = percentile(&idle.0, 0.99);
    let verdict = if p99 < Duration::from_millis(5) {
        "met"
    } else {
        "NOT met"
    };
    latency_row("idle", &idle, &format!("p99 < 5 ms: {verdict}"));

    // Under a background write load on C (64 concurrent writers, acked puts of 100 bytes).
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for w in 0..64 {
        let (c, stop, written) = (c.clone(), stop.clone(), written.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                c.put(format!("load-{w}-{}", i % 1000), vec![b'l'; VALUE_BYTES])
                    .await
                    .unwrap();
                written.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    let t0 = Instant::now();
    let loaded = latency_samples(&a, &b, samples, "load").await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let rate = written.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
    latency_row(
        &format!("background writes on C: 64 writers, {rate:.0} acked puts/s"),
        &loaded,
        "",
    );
    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }
}

async fn part3_catchup(keys: usize, missed: &[usize]) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [a, b, mut c] = start_cluster(&dirs).await;

    // Fill N keys through A, unacked writes (backpressured by the cache), then one flush.
    let value = bytes::Bytes::from(vec![b'v'; VALUE_BYTES]);
    let t0 = Instant::now();
    for k in 0..keys {
        let _ticket = a
            .cache()
            .write_unacked(key_of(k).into(), Some(value.clone()), None)
            .await
            .unwrap();
    }
    a.cache().flush().await.unwrap();
    let written_in = t0.elapsed();
    let fill_total = wait_converged(
        &[a.clone(), b.clone(), c.clone()],
        t0,
        Duration::from_secs(900),
    )
    .await
    .expect("the fill did not converge in 900 s");
    let conv = fill_total.saturating_sub(written_in);

    let (full_bytes, full_entries) = a
        .cache()
        .with_replica(|r| encoded_bytes(r.entries().collect::<Vec<_>>()));
    let full_wire_size: u64 = a
        .cache()
        .with_replica(|r| r.entries().map(|e| e.wire_size() as u64).sum());
    let t_digest = Instant::now();
    std::hint::black_box(a.cache().digest());
    let digest_cost = t_digest.elapsed();

    println!();
    println!(
        "### catch-up after a restart (3 nodes on loopback, N = {keys} keys, {VALUE_BYTES}-byte values)"
    );
    println!();
    println!(
        "- fill: {keys} writes through A (`write_unacked`, then `flush`): written+committed on A in {:.3} s ({:.0} writes/s); all 3 converged (same digest) {:.3} s after the first write ({:.3} s after A's flush returned)",
        written_in.as_secs_f64(),
        keys as f64 / written_in.as_secs_f64(),
        fill_total.as_secs_f64(),
        conv.as_secs_f64(),
    );
    println!(
        "- full copy of the state: {full_entries} entries, {full_bytes} B encoded ({:.1} B/entry; `Entry::wire_size` estimate {full_wire_size} B)",
        full_bytes as f64 / full_entries.max(1) as f64
    );
    println!(
        "- convergence = equal version vectors (polled every 1 ms), then equal `Cache::digest` on all 3 (one digest of these {keys} keys takes {:.1} ms here)",
        ms(digest_cost)
    );
    println!(
        "- entry size = the entry's postcard encoding as sync Pushes and Pages carry it: key (len varint + 11 B) + value (tag + len varint + {VALUE_BYTES} B) + version (HLC u64 varint + origin id u64 varint) + seq (varint) + expiry (1 B); measured by encoding each entry in a one-entry Push minus an empty Push, so no message framing is counted"
    );
    println!(
        "- each round: C shut down cleanly (data dir kept); d distinct keys chosen at random among the N get a new {VALUE_BYTES}-byte value, alternately on A and B (`write_unacked`, `flush`), until A and B converge; C restarted from its dir with no bootstrap address (it redials A and B from its saved known peers, on a new port); timed from the restart call until all 3 hold the same digest"
    );
    println!(
        "- bytes received = C's sync counters (`PeerStatus::bytes_received` summed over its peers: encoded sync requests and responses, without libp2p noise/yamux framing), read right after convergence"
    );
    println!();
    println!(
        "| missed d | restart → converged | of which open (start() returned) | open → converged | bytes received by C | entries received | missed entries (encoded) | received / missed | full copy | received / full copy | C catch-ups / full resyncs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");

    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let mut shown = Vec::new();
    let mut notes = Vec::new();
    for (round, &d) in missed.iter().enumerate() {
        let d = d.min(keys);
        if shown.contains(&d) {
            continue;
        }
        shown.push(d);
        // Moves the last handle of C: its replica is freed here, not inside the timed restart.
        c.shutdown().await.unwrap();

        let chosen = rand::seq::index::sample(&mut rng, keys, d).into_vec();
        let value = bytes::Bytes::from(vec![b'a' + (round % 26) as u8; VALUE_BYTES]);
        for (i, &k) in chosen.iter().enumerate() {
            let on = if i % 2 == 0 { &a } else { &b };
            let _ticket = on
                .cache()
                .write_unacked(key_of(k).into(), Some(value.clone()), None)
                .await
                .unwrap();
        }
        a.cache().flush().await.unwrap();
        b.cache().flush().await.unwrap();
        wait_converged(
            &[a.clone(), b.clone()],
            Instant::now(),
            Duration::from_secs(300),
        )
        .await
        .expect("A and B did not converge");
        let (missed_bytes, missed_entries) = a.cache().with_replica(|r| {
            encoded_bytes(
                chosen
                    .iter()
                    .map(|&k| r.entry(key_of(k).as_bytes()).unwrap())
                    .collect::<Vec<_>>(),
            )
        });
        assert_eq!(missed_entries, d);

        let t0 = Instant::now();
        c = start(dirs[2].path(), &[]).await;
        let opened = t0.elapsed();
        let all = [a.clone(), b.clone(), c.clone()];
        let Some(total) = wait_converged(&all, t0, Duration::from_secs(600)).await else {
            println!("| {d} | did not converge in 600 s | | | | | | | | | |");
            continue;
        };
        let status = c.status().await.unwrap();
        let (received, entries_received) = sum_received(&status);
        let ratio = received as f64 / missed_bytes as f64;
        println!(
            "| {d} | {:.3} s | {:.3} s | {:.3} s | {received} B | {entries_received} | {missed_bytes} B ({:.1} B/entry) | {ratio:.2}x | {full_bytes} B | {:.4}x | {} / {} |",
            total.as_secs_f64(),
            opened.as_secs_f64(),
            (total - opened).as_secs_f64(),
            missed_bytes as f64 / d.max(1) as f64,
            received as f64 / full_bytes as f64,
            status.catchups,
            status.full_resyncs,
        );
        if d == 10_000 {
            let time_ok = total < Duration::from_secs(1);
            let bytes_ok = ratio <= 1.2;
            notes.push(format!(
                "- target (10k missed of 1M): restart → converged < 1 s: {} ({:.3} s; {:.3} s after the open); bytes ≤ 1.2x the missed entries: {} ({ratio:.2}x){}",
                if time_ok { "met" } else { "NOT met" },
                total.as_secs_f64(),
                (total - opened).as_secs_f64(),
                if bytes_ok { "met" } else { "NOT met" },
                if keys == 1_000_000 {
                    String::new()
                } else {
                    format!(" — this run has N = {keys}, the target is for N = 1,000,000")
                },
            ));
        }
    }
    println!();
    if notes.is_empty() {
        println!(
            "- targets: catch-up of 10k missed out of 1M < 1 s, bytes ≤ 1.2x the missed entries (no d = 10000 round in this run)"
        );
    }
    for n in notes {
        println!("{n}");
    }
    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; nothing to list.
    }
    if std::env::var_os("RUST_LOG").is_some() {
        // Node logs on stderr, e.g. RUST_LOG=dice_net=debug to see connections and catch-ups.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`) run tiny sizes.
    let bench = args.iter().any(|a| a == "--bench");
    let (d_samples, d_keys, d_missed) = if bench {
        (2000, 100_000, "1000,10000,100000")
    } else {
        (50, 2000, "100,1000")
    };
    let samples = env_usize("DICE_BENCH_SAMPLES", d_samples).max(1);
    let keys = env_usize("DICE_BENCH_KEYS", d_keys).max(1);
    let missed = env_list("DICE_BENCH_MISSED", d_missed);
    let missed_str = missed
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    println!("## dice replication: latency and restart catch-up (dice-net bench `replication`)");
    println!();
    println!(
        "- command: `DICE_BENCH_SAMPLES={samples} DICE_BENCH_KEYS={keys} DICE_BENCH_MISSED={missed_str} cargo bench -p dice-net --bench replication`{}",
        if bench {
            ""
        } else {
            " (run here without --bench: test-mode defaults)"
        }
    );
    println!(
        "- nodes: `NodeBuilder` defaults (mDNS off, listen /ip4/127.0.0.1/tcp/0, catch-up every 5 s), each with its own temp data dir; one tokio runtime, 2 worker threads, for all 3 nodes and the load"
    );

    part2_latency(samples).await;
    part3_catchup(keys, &missed).await;
}
