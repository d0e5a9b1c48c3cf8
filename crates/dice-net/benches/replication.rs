//! Replication figures of real nodes on 127.0.0.1: put-to-visible latency on a peer (idle and
//! under a background write load), time to converge, and the bytes a restarted node receives.
//!
//! Run: `cargo bench -p dice-net --bench replication` (env `DICE_BENCH_SAMPLES`, default 2000;
//! `DICE_BENCH_KEYS`, default 100000). Prints figures; asserts nothing about time.
#![allow(clippy::unwrap_used, missing_docs)]

use dice_net::{Multiaddr, Node, NodeBuilder};
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn start(dir: &std::path::Path, peers: &[Multiaddr]) -> Node {
    let mut b = NodeBuilder::new(dir)
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .mdns(false)
        .catchup_interval(Duration::from_secs(2));
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

async fn wait_converged(nodes: &[Node], timeout: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        let d: Vec<u64> = nodes.iter().map(|n| n.cache().digest()).collect();
        if d.windows(2).all(|w| w[0] == w[1]) {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Put on `from`, wait until `to` reports the key through its change subscription.
async fn latency_samples(from: &Node, to: &Node, samples: usize, tag: &str) -> Vec<Duration> {
    let mut events = to.cache().subscribe();
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let key = format!("lat-{tag}-{i}");
        let t0 = Instant::now();
        from.put(key.clone(), "x").await.unwrap();
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
    out
}

fn report(name: &str, s: &[Duration]) {
    println!(
        "{name}: n={} p50={:.3} ms p99={:.3} ms p999={:.3} ms max={:.3} ms",
        s.len(),
        percentile(s, 0.50).as_secs_f64() * 1e3,
        percentile(s, 0.99).as_secs_f64() * 1e3,
        percentile(s, 0.999).as_secs_f64() * 1e3,
        s.last().unwrap().as_secs_f64() * 1e3,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; nothing to list.
    }
    let samples = env_usize("DICE_BENCH_SAMPLES", 2000);
    let keys = env_usize("DICE_BENCH_KEYS", 100_000);
    println!(
        "# cargo bench -p dice-net --bench replication  (DICE_BENCH_SAMPLES={samples} DICE_BENCH_KEYS={keys})"
    );
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(dirs[0].path(), &[]).await;
    let a_addr = addr_of(&a).await;
    let b = start(dirs[1].path(), std::slice::from_ref(&a_addr)).await;
    let c = start(dirs[2].path(), std::slice::from_ref(&a_addr)).await;
    let all = [a.clone(), b.clone(), c.clone()];
    while !{
        let mut ok = true;
        for n in &all {
            ok &= n
                .status()
                .await
                .unwrap()
                .peers
                .iter()
                .filter(|p| p.connected)
                .count()
                == 2;
        }
        ok
    } {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 1. Replication latency, idle.
    let idle = latency_samples(&a, &b, samples, "idle").await;
    report("replication latency A->B, idle, 3 nodes", &idle);

    // 2. Under a background write load on C (64 concurrent writers).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut load = Vec::new();
    for w in 0..64 {
        let (c, stop, written) = (c.clone(), stop.clone(), written.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.put(format!("load-{w}-{}", i % 1000), vec![b'l'; 100])
                    .await
                    .unwrap();
                written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    let t0 = Instant::now();
    let loaded = latency_samples(&a, &b, samples, "load").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let rate =
        written.load(std::sync::atomic::Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
    report(
        &format!("replication latency A->B, under load ({rate:.0} acked puts/s on C)"),
        &loaded,
    );

    // 3. Convergence of a burst of writes.
    let value = vec![b'v'; 100];
    let t0 = Instant::now();
    for k in 0..keys {
        a.cache()
            .write_unacked(
                format!("key{k:08}").into(),
                Some(value.clone().into()),
                None,
            )
            .await
            .unwrap();
    }
    a.cache().flush().await.unwrap();
    let written_in = t0.elapsed();
    let conv = wait_converged(&all, Duration::from_secs(300))
        .await
        .unwrap();
    println!(
        "burst of {keys} writes on A: written+committed in {:.3} s, all 3 converged {:.3} s after the first write",
        written_in.as_secs_f64(),
        (written_in + conv).as_secs_f64()
    );

    // 4. Restart catch-up: C stops, 1% of the keys change, C restarts.
    let total_keys = c.cache().len();
    let full_bytes: u64 = c
        .cache()
        .with_replica(|r| r.entries().map(|e| e.wire_size() as u64).sum());
    c.clone().shutdown().await.unwrap();
    let missed = keys / 100;
    for k in 0..missed {
        b.put(format!("key{:08}", k * 100), vec![b'u'; 100])
            .await
            .unwrap();
    }
    let t0 = Instant::now();
    let c = start(dirs[2].path(), &[]).await;
    let all = [a.clone(), b.clone(), c.clone()];
    wait_converged(&all, Duration::from_secs(120))
        .await
        .unwrap();
    let since_restart = t0.elapsed();
    let received: u64 = c
        .status()
        .await
        .unwrap()
        .peers
        .iter()
        .map(|p| p.bytes_received)
        .sum();
    let missed_bytes = missed as u64 * (100 + 12 + 40);
    println!(
        "restart catch-up: {missed} of {total_keys} keys missed; converged {:.3} s after restart (incl. open); received {received} bytes = {:.2}x the missed entries (~{missed_bytes} B), {:.4}x a full copy (~{full_bytes} B)",
        since_restart.as_secs_f64(),
        received as f64 / missed_bytes as f64,
        received as f64 / full_bytes as f64,
    );
    for n in all {
        n.shutdown().await.unwrap();
    }
}
