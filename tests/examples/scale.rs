//! The scale benchmark behind `bench/scale.sh`: for each N given, N hosts in network
//! namespaces on one bridge (mDNS only, no `--peer`), one `dice node` each with `--metrics`,
//! and the figures of issue "Scale", read from the nodes' Prometheus metrics and `/proc`:
//!
//! * time from the last node's start to membership: every node connected to all others, or,
//!   in a cluster larger than `--max-peers` (`DICE_SCALE_MAX_PEERS`, default 32), to at
//!   least its dial target (three quarters of the bound, as `dice_net::dial_target`);
//! * idle CPU per node (mean and max over the nodes, % of one core) over `DICE_SCALE_IDLE_SECS`
//!   (default 10 s) after the mesh settled;
//! * a burst of `DICE_SCALE_BURST` (default 5000) pipelined `SET`s on one host: time until
//!   every node holds them, and sync bytes and entries sent per write, per node (from the
//!   `dice_peer_sent_*` counters);
//! * the same number of writes spread over every host at once: time until every node holds
//!   them all;
//! * resident memory per node at the end (mean and max).
//!
//! Needs root (network namespaces) and runs only on this machine's bridge: no traffic leaves
//! it. Every namespace and node it starts is removed when it ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dice_tests::netns::{Lan, connect_api, in_netns, set_pipelined};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const METRICS: &str = "127.0.0.1:9379";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One scrape of host `i`'s metrics (from inside its namespace).
fn scrape(lan: &Lan, i: usize) -> String {
    in_netns(lan.host(i).ns(), || {
        let Ok(mut s) = TcpStream::connect(METRICS) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: dice\r\nConnection: close\r\n\r\n"
        );
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
}

/// The sum of every sample of metric `name` (any labels).
fn sum(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CPU seconds (user + system) process `pid` used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Bytes and packets process `pid` sent so far on every interface of its network namespace
/// but loopback: every message of the node (sync, gossip, pings, mDNS, handshakes).
fn net_tx(pid: u32) -> (f64, f64) {
    net_dev(pid, 8)
}

/// Bytes and packets process `pid` received so far (as [`net_tx`]).
fn net_rx(pid: u32) -> (f64, f64) {
    net_dev(pid, 0)
}

/// Bytes and packets of `/proc/PID/net/dev` from column `first` on (0: received, 8: sent),
/// summed over every interface but loopback.
fn net_dev(pid: u32, first: usize) -> (f64, f64) {
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    let mut out = (0.0, 0.0);
    for line in dev.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<f64> = rest
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit.
        out.0 += f.get(first).copied().unwrap_or(0.0);
        out.1 += f.get(first + 1).copied().unwrap_or(0.0);
    }
    out
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn mean_max(v: &[f64]) -> (f64, f64) {
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    (mean, v.iter().copied().fold(0.0, f64::max))
}

/// Polls until every host reports `keys` live keys; how long it took.
fn wait_keys(lan: &Lan, keys: f64, timeout: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if (0..lan.len()).all(|i| sum(&scrape(lan, i), "dice_keys") >= keys) {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn run(n: usize, idle_secs: u64, burst: usize, max_peers: usize) {
    let mut lan = Lan::new(n);
    let max = max_peers.to_string();
    for i in 0..n {
        lan.start(i, &["--metrics", METRICS, "--max-peers", &max]);
    }
    // What every node reaches: all others, or its dial target (`dice_net::dial_target`).
    let members = (n - 1).min((max_peers - max_peers / 4).max(1));
    let started = Instant::now();
    let mut mesh = None;
    while started.elapsed() < Duration::from_secs(300) {
        if (0..n).all(|i| sum(&scrape(&lan, i), "dice_peers_connected") >= members as f64) {
            mesh = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the catch-ups of joining finish before measuring idle.
    std::thread::sleep(Duration::from_secs(3));
    let pids: Vec<u32> = (0..n).map(|i| lan.pid(i).expect("node running")).collect();
    // What costs CPU at idle: connections opened (each a Noise handshake on both sides),
    // those closed at once at the bound, packets sent.
    let churn = |lan: &Lan| -> f64 {
        (0..lan.len())
            .map(|i| {
                let s = scrape(lan, i);
                sum(&s, "dice_connections_opened_outbound_total")
                    + sum(&s, "dice_connections_opened_inbound_total")
            })
            .sum()
    };
    let closed = |lan: &Lan| -> f64 {
        (0..lan.len())
            .map(|i| sum(&scrape(lan, i), "dice_closed_over_max_peers_total"))
            .sum()
    };
    let (churn0, closed0) = (churn(&lan), closed(&lan));
    let tx0: Vec<(f64, f64)> = pids.iter().map(|&p| net_tx(p)).collect();
    let rx0: Vec<(f64, f64)> = pids.iter().map(|&p| net_rx(p)).collect();
    let load_idle_start = loadavg();
    let before: Vec<f64> = pids.iter().map(|&p| cpu_secs(p)).collect();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let idle: Vec<f64> = pids
        .iter()
        .zip(&before)
        .map(|(&p, b)| (cpu_secs(p) - b) / idle_secs as f64 * 100.0)
        .collect();
    let load_idle_end = loadavg();
    let tx1: Vec<(f64, f64)> = pids.iter().map(|&p| net_tx(p)).collect();
    let rx1: Vec<(f64, f64)> = pids.iter().map(|&p| net_rx(p)).collect();
    let (churn1, closed1) = (churn(&lan), closed(&lan));
    let (idle_mean, idle_max) = mean_max(&idle);
    let idle_pkts: Vec<f64> = tx0
        .iter()
        .zip(&tx1)
        .map(|(a, b)| (b.1 - a.1) / idle_secs as f64)
        .collect();
    let idle_bytes: Vec<f64> = tx0
        .iter()
        .zip(&tx1)
        .map(|(a, b)| (b.0 - a.0) / idle_secs as f64)
        .collect();
    let idle_rx_pkts: Vec<f64> = rx0
        .iter()
        .zip(&rx1)
        .map(|(a, b)| (b.1 - a.1) / idle_secs as f64)
        .collect();
    eprintln!(
        "{n} nodes idle: load average {load_idle_start} at the start, {load_idle_end} at the end; \
         per node and second: {:.1} packets and {:.0} bytes sent, {:.1} packets received, \
         {:.2} connections opened (either side), {:.2} closed at the bound",
        mean_max(&idle_pkts).0,
        mean_max(&idle_bytes).0,
        mean_max(&idle_rx_pkts).0,
        (churn1 - churn0) / idle_secs as f64 / n as f64,
        (closed1 - closed0) / idle_secs as f64 / n as f64,
    );

    let hold = env_u64("DICE_SCALE_HOLD_SECS", 0);
    if hold > 0 {
        eprintln!("{n} nodes: holding {hold} s; node pids: {pids:?}");
        std::thread::sleep(Duration::from_secs(hold));
    }
    if burst == 0 {
        println!(
            "| {n} | - | {} | {idle_mean:.2} (max {idle_max:.2}) | {load_idle_end} | - | - | - | - | - | - | - |",
            mesh.map_or("timeout".to_string(), |d| format!("{:.1}", d.as_secs_f64())),
        );
        return;
    }

    // A burst on one host.
    let sent = |lan: &Lan| -> Vec<(f64, f64)> {
        (0..lan.len())
            .map(|i| {
                let s = scrape(lan, i);
                (
                    sum(&s, "dice_peer_sent_bytes_total"),
                    sum(&s, "dice_peer_sent_entries_total"),
                )
            })
            .collect()
    };
    let sent0 = sent(&lan);
    let gossip = |lan: &Lan| -> (f64, f64, f64) {
        (0..lan.len())
            .map(|i| {
                let s = scrape(lan, i);
                (
                    sum(&s, "dice_gossip_joined"),
                    sum(&s, "dice_gossip_published_total"),
                    sum(&s, "dice_gossip_accepted_entries_total"),
                )
            })
            .fold((0.0, 0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
    };
    let gossip0 = gossip(&lan);
    let net0: Vec<(f64, f64)> = pids.iter().map(|&p| net_tx(p)).collect();
    let cpu0: f64 = pids.iter().map(|&p| cpu_secs(p)).sum();
    let pairs: Vec<(String, String)> = (0..burst)
        .map(|k| (format!("one:{k:06}"), "x".repeat(100)))
        .collect();
    let t0 = Instant::now();
    in_netns(lan.host(0).ns(), || {
        let mut c = connect_api().expect("API of host 0");
        set_pipelined(&mut c, &pairs, 500).expect("burst on host 0");
    });
    let one = wait_keys(&lan, burst as f64, Duration::from_secs(600)).map(|_| t0.elapsed());
    let cpu1: f64 = pids.iter().map(|&p| cpu_secs(p)).sum();
    let sent1 = sent(&lan);
    let net1: Vec<(f64, f64)> = pids.iter().map(|&p| net_tx(p)).collect();
    let gossip1 = gossip(&lan);
    let net_per_write: Vec<(f64, f64)> = net0
        .iter()
        .zip(&net1)
        .map(|(a, b)| ((b.0 - a.0) / burst as f64, (b.1 - a.1) / burst as f64))
        .collect();
    let (net_bytes_mean, net_bytes_max) =
        mean_max(&net_per_write.iter().map(|p| p.0).collect::<Vec<_>>());
    let (net_pkts_mean, net_pkts_max) =
        mean_max(&net_per_write.iter().map(|p| p.1).collect::<Vec<_>>());
    eprintln!(
        "{n} nodes, burst on one host: {:.0} of {n} nodes in the writes' gossip, {:.0} messages \
         published, {:.0} writes applied from gossip on all nodes ({:.2} per write per node); \
         all traffic per write per node: {net_bytes_mean:.0} bytes (max {net_bytes_max:.0}), \
         {net_pkts_mean:.3} packets (max {net_pkts_max:.2}); CPU of all nodes until \
         converged: {:.1} s ({:.1} ms per node, {:.1} us per write per node; load average {})",
        gossip1.0,
        gossip1.1 - gossip0.1,
        gossip1.2 - gossip0.2,
        (gossip1.2 - gossip0.2) / burst as f64 / n as f64,
        cpu1 - cpu0,
        (cpu1 - cpu0) / n as f64 * 1000.0,
        (cpu1 - cpu0) / n as f64 / burst as f64 * 1e6,
        loadavg(),
    );
    let per_write: Vec<(f64, f64)> = sent0
        .iter()
        .zip(&sent1)
        .map(|(a, b)| ((b.0 - a.0) / burst as f64, (b.1 - a.1) / burst as f64))
        .collect();
    let (bytes_mean, bytes_max) = mean_max(&per_write.iter().map(|p| p.0).collect::<Vec<_>>());
    let (entries_mean, entries_max) = mean_max(&per_write.iter().map(|p| p.1).collect::<Vec<_>>());

    // The same number of writes, spread over every host at once.
    let per_host = burst.div_ceil(n);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for i in 0..n {
            let ns = lan.host(i).ns().to_string();
            s.spawn(move || {
                let pairs: Vec<(String, String)> = (0..per_host)
                    .map(|k| (format!("all:{i:03}:{k:06}"), "x".repeat(100)))
                    .collect();
                in_netns(&ns, || {
                    let mut c = connect_api().expect("API");
                    set_pipelined(&mut c, &pairs, 500).expect("burst");
                });
            });
        }
    });
    let all = wait_keys(
        &lan,
        (burst + per_host * n) as f64,
        Duration::from_secs(600),
    )
    .map(|_| t0.elapsed());
    let rss: Vec<f64> = pids.iter().map(|&p| rss_mib(p)).collect();
    let (rss_mean, rss_max) = mean_max(&rss);
    let degree: Vec<f64> = (0..n)
        .map(|i| sum(&scrape(&lan, i), "dice_peers_connected"))
        .collect();
    let (degree_mean, degree_max) = mean_max(&degree);
    let secs = |d: Option<Duration>| {
        d.map_or("timeout".to_string(), |d| format!("{:.1}", d.as_secs_f64()))
    };
    println!(
        "| {n} | {degree_mean:.1} (max {degree_max:.0}) | {} | {idle_mean:.2} (max {idle_max:.2}) | {load_idle_end} | {bytes_mean:.0} (max {bytes_max:.0}) | \
         {entries_mean:.2} (max {entries_max:.2}) | {net_bytes_mean:.0} (max {net_bytes_max:.0}) | {net_pkts_mean:.2} (max {net_pkts_max:.2}) | {} | {} | {rss_mean:.0} (max {rss_max:.0}) |",
        secs(mesh),
        secs(one),
        secs(all),
    );
}

fn main() {
    let ns: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: scale N [N ...]"))
        .collect();
    let ns = if ns.is_empty() { vec![4] } else { ns };
    let idle_secs = env_u64("DICE_SCALE_IDLE_SECS", 10);
    let burst = env_u64("DICE_SCALE_BURST", 5000) as usize;
    if let Ok(off) = std::env::var("DICE_NET_PROFILE_OFF") {
        println!("nodes run with DICE_NET_PROFILE_OFF={off} (periodic work switched off)");
    }
    let max_peers = env_u64("DICE_SCALE_MAX_PEERS", 32).max(1) as usize;
    println!(
        "scale: {} cores, idle window {idle_secs} s, burst {burst} writes of 100 bytes, \
         --max-peers {max_peers}, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "| nodes | connected peers per node | membership (s) | idle CPU per node (% of a core) | load average (1, 5, 15 min) at the idle window's end | sync bytes sent per write per node (direct pushes and catch-up) | entries sent per write per node (same) | all bytes sent per write per node (with gossip) | packets sent per write per node | {burst} writes on one host, on all nodes (s) | {burst} writes spread over all hosts, on all nodes (s) | RSS per node (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in ns {
        run(n, idle_secs, burst, max_peers);
        println!(
            "load average after {n} nodes: {}",
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
    }
}
