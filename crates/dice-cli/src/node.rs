//! `dice node`: a dice-net node with its Redis-protocol API port.

use anyhow::{Context, Result};
use dice_net::{Node, NodeBuilder};
use dice_resp::{RespConfig, RespServer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The file, inside a data directory, where a running node writes its API address.
pub const API_ADDR_FILE: &str = "api.addr";

/// Examples under `dice node --help`.
pub const NODE_HELP: &str = "\
Examples:
  dice node                                          defaults: peers on 0.0.0.0:7380, API on 127.0.0.1:7379, mDNS
  dice --data /tmp/dice-demo/a node --listen /ip4/127.0.0.1/tcp/7380 --api 127.0.0.1:7379 --no-mdns
  dice --data /tmp/dice-demo/b node --listen /ip4/127.0.0.1/tcp/7381 --api 127.0.0.1:7389 \\
      --no-mdns --peer /ip4/127.0.0.1/tcp/7380        a second node joining the first
  dice node --cluster-key cluster.key --requirepass-file api.pass

Creates the data directory (0700) if needed. Ctrl-C or SIGTERM stops the node cleanly.
Every flag also reads DICE_<FLAG> (DICE_LISTEN, DICE_API, DICE_PEER, ...); RUST_LOG tunes
the logs.";

/// Flags of `dice node`.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// libp2p listen address (repeatable) [default: /ip4/0.0.0.0/tcp/7380].
    #[arg(
        long,
        value_name = "MULTIADDR",
        env = "DICE_LISTEN",
        value_delimiter = ','
    )]
    listen: Vec<dice_net::Multiaddr>,
    /// Address of the Redis-protocol API (port 0 picks a free one).
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "DICE_API",
        default_value = "127.0.0.1:7379"
    )]
    api: String,
    /// Bootstrap peer, with or without /p2p/<peer id> (repeatable).
    #[arg(
        long,
        value_name = "MULTIADDR",
        env = "DICE_PEER",
        value_delimiter = ','
    )]
    peer: Vec<dice_net::Multiaddr>,
    /// Cluster name: nodes of other clusters never exchange data.
    #[arg(
        long,
        value_name = "NAME",
        env = "DICE_CLUSTER",
        default_value = "default"
    )]
    cluster: String,
    /// File holding the pre-shared cluster key (see `dice keygen`).
    #[arg(long, value_name = "FILE", env = "DICE_CLUSTER_KEY")]
    cluster_key: Option<PathBuf>,
    /// Do not discover peers with mDNS.
    #[arg(long, env = "DICE_NO_MDNS")]
    no_mdns: bool,
    /// Most peers connected at once. The node dials while it has fewer than three quarters
    /// of this, leaves the rest for peers that dial it, and reaches the rest of a larger
    /// cluster through its neighbours (docs/SCALE.md).
    #[arg(long, value_name = "N", env = "DICE_MAX_PEERS", default_value_t = dice_net::DEFAULT_MAX_PEERS as u16, value_parser = clap::value_parser!(u16).range(1..=4096))]
    max_peers: u16,
    /// Require this password on the API (AUTH).
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "DICE_REQUIREPASS",
        hide_env_values = true
    )]
    requirepass: Option<String>,
    /// Read the API password from FILE (one line; a trailing newline is dropped). The file
    /// must not be readable by group or others (chmod 600). Keeps the password out of the
    /// command line and the environment, which other local users may see.
    #[arg(
        long,
        value_name = "FILE",
        env = "DICE_REQUIREPASS_FILE",
        conflicts_with = "requirepass"
    )]
    requirepass_file: Option<PathBuf>,
    /// Close API clients idle for this many seconds (0: never, as in Redis).
    #[arg(long, value_name = "SECS", env = "DICE_TIMEOUT", default_value_t = 0)]
    timeout: u64,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (off by default). They tell
    /// about the cluster (peer ids, traffic, key counts): bind a private address.
    #[arg(long, value_name = "HOST:PORT", env = "DICE_METRICS")]
    metrics: Option<std::net::SocketAddr>,
    /// Worker threads serving clients and peers (default: one per CPU). On a machine shared
    /// with busy clients, fewer can be faster (BENCHMARKS.md).
    #[arg(long, value_name = "N", env = "DICE_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Memory limit for the data, indexes, pending commits and client buffers, as Redis's
    /// `maxmemory`: bytes, or with a unit (`512mb`, `2gb`; 0: none). Changes at run time
    /// with `CONFIG SET maxmemory`.
    #[arg(long, value_name = "BYTES", env = "DICE_MAXMEMORY", value_parser = parse_maxmemory, default_value = "0")]
    maxmemory: u64,
    /// What happens past `--maxmemory`: noeviction (writes refused with OOM), allkeys-lru,
    /// volatile-lru, allkeys-lfu, volatile-lfu, allkeys-random, volatile-random or
    /// volatile-ttl. Evictions replicate: every node ends without the keys any node evicted.
    #[arg(
        long,
        value_name = "POLICY",
        env = "DICE_MAXMEMORY_POLICY",
        default_value = "noeviction"
    )]
    maxmemory_policy: dice_core::Policy,
}

fn parse_maxmemory(s: &str) -> std::result::Result<u64, String> {
    dice_core::evict::parse_memory(s)
        .ok_or_else(|| format!("not a memory size: {s:?} (bytes, or a number with kb, mb or gb)"))
}

/// The `INFO cluster` lines of a node: a snapshot of its peers refreshed in the background,
/// with the key count and digest read live from the cache.
struct ClusterLines {
    node: Node,
    peers: Arc<Mutex<Vec<String>>>,
    /// When `INFO` last read the lines (ms since `PEER_LINES_EPOCH`): the refresher keeps
    /// them fresh (every 250 ms) only while someone reads them.
    asked_ms: Arc<std::sync::atomic::AtomicU64>,
}

/// The origin of [`ClusterLines::asked_ms`].
static PEER_LINES_EPOCH: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

fn peer_lines_now_ms() -> u64 {
    PEER_LINES_EPOCH.elapsed().as_millis() as u64
}

/// How long after the last `INFO` the peer lines stay refreshed every 250 ms; past it, every
/// [`PEER_LINES_IDLE_REFRESH`]. Building them formats every peer (its id in base58, its
/// address): at 64 nodes, four times a second, that was a visible part of an idle node's CPU.
const PEER_LINES_HOT: Duration = Duration::from_secs(60);

/// How often the peer lines are refreshed while nobody reads them.
const PEER_LINES_IDLE_REFRESH: Duration = Duration::from_secs(5);

impl dice_resp::ClusterInfo for ClusterLines {
    fn cluster_lines(&self) -> Vec<String> {
        self.asked_ms
            .store(peer_lines_now_ms(), std::sync::atomic::Ordering::Relaxed);
        let cache = self.node.cache();
        let mut lines = vec![
            format!("dice_node_id:{}", cache.node_id()),
            format!("dice_peer_id:{}", self.node.peer_id()),
            format!("dice_keys:{}", cache.len()),
            format!("dice_digest:{:016x}", cache.digest()),
        ];
        let ps = self.node.pubsub().counters();
        let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        lines.extend([
            format!("dice_pubsub_sent:{}", n(&ps.sent)),
            format!("dice_pubsub_received:{}", n(&ps.received)),
            format!("dice_pubsub_send_dropped:{}", n(&ps.send_dropped)),
            format!("dice_pubsub_receive_dropped:{}", n(&ps.receive_dropped)),
        ]);
        if let Ok(peers) = self.peers.lock() {
            lines.extend(peers.iter().cloned());
        }
        lines
    }

    fn acked_by(&self, seq: u64) -> usize {
        self.node.acked_by(seq)
    }
}

/// Carries `PUBLISH` to the other nodes over the node's gossipsub.
struct Bus(dice_net::pubsub::PubSub);

impl dice_resp::PubSubBus for Bus {
    fn publish(&self, channel: &[u8], message: &[u8]) {
        self.0.publish(channel, message);
    }
}

fn peer_lines(status: &dice_net::NodeStatus) -> Vec<String> {
    let mut lines = vec![
        format!("dice_cluster:{}", status.cluster),
        format!("dice_full_resyncs:{}", status.full_resyncs),
        format!("dice_refused_messages:{}", status.refused_messages),
        format!("dice_refused_connections:{}", status.refused_connections),
        // Anti-entropy: exchanges that repaired something here, and what they installed;
        // both stay 0 unless the sync protocol missed a divergence.
        format!("dice_repairs:{}", status.cache.replica.repairs),
        format!(
            "dice_repaired_entries:{}",
            status.cache.replica.repaired_entries
        ),
        format!(
            "dice_repair_conflicts:{}",
            status.cache.replica.repair_conflicts
        ),
        format!("dice_peers:{}", status.peers.len()),
    ];
    for (i, p) in status.peers.iter().enumerate() {
        lines.push(format!(
            "dice_peer{i}:id={},node={},addr={},connected={},unacked={},missing={},bytes_sent={},bytes_received={},clock_offset_ms={}",
            p.peer_id,
            p.node_id.map_or_else(|| "-".to_string(), |n| n.to_string()),
            p.address.as_ref().map_or_else(|| "-".to_string(), |a| a.to_string()),
            u8::from(p.connected),
            p.unacked,
            p.missing,
            p.bytes_sent,
            p.bytes_received,
            p.clock_offset_ms
                .map_or_else(|| "-".to_string(), |o| o.to_string()),
        ));
    }
    lines
}

/// Writes `addr` to `DIR/api.addr` (atomically), so `dice --data DIR ...` finds the node.
fn write_api_addr(dir: &Path, addr: std::net::SocketAddr) -> Result<()> {
    let path = dir.join(API_ADDR_FILE);
    let tmp = dir.join("api.addr.tmp");
    std::fs::write(&tmp, format!("{addr}\n"))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

/// The password in `path`: its content without one trailing newline. Refused if the file
/// is empty or readable by group or others.
pub fn read_password_file(path: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("reading the password file {}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "the password file {} is readable or writable by group or others (mode {:o}); \
             run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the password file {}", path.display()))?;
    let password = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if password.is_empty() {
        anyhow::bail!("the password file {} is empty", path.display());
    }
    Ok(password.to_string())
}

/// Test-only fault point: `DICE_FAULT_COMMIT_DELAY_MS` delays every group commit, so that a
/// test can kill a node while writes sit in memory, not yet durable.
fn fault_commit_delay_ms() -> Option<u64> {
    std::env::var("DICE_FAULT_COMMIT_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&ms| ms > 0)
}

/// Runs a node until SIGINT or SIGTERM, then shuts it down cleanly.
pub async fn run(dir: &Path, args: NodeArgs) -> Result<()> {
    let mut builder = NodeBuilder::new(dir)
        .cluster(args.cluster)
        .mdns(!args.no_mdns)
        .max_peers(usize::from(args.max_peers));
    if let Some(ms) = fault_commit_delay_ms() {
        tracing::warn!(
            ms,
            "fault injection: every group commit is delayed (DICE_FAULT_COMMIT_DELAY_MS)"
        );
        builder.config_mut().cache.commit_delay = Duration::from_millis(ms);
    }
    builder.config_mut().cache.memory_limit = dice_core::MemoryLimit::default()
        .with_max_bytes(args.maxmemory)
        .with_policy(args.maxmemory_policy);
    for addr in args.listen {
        builder = builder.listen(addr);
    }
    for addr in args.peer {
        builder = builder.peer(addr);
    }
    if let Some(path) = &args.cluster_key {
        builder = builder.cluster_key(dice_net::keys::read_cluster_key(path)?);
    }
    // Bind the API first: a taken port fails before the node joins the cluster.
    let listener = tokio::net::TcpListener::bind(&args.api)
        .await
        .with_context(|| format!("cannot listen for the API on {}", args.api))?;
    let metrics = match &args.metrics {
        Some(addr) => {
            let metrics = Arc::new(crate::metrics::Metrics::new());
            builder.config_mut().cache.commit_observer = Some(metrics.commit_observer());
            Some((crate::metrics::bind(addr).await?, metrics))
        }
        None => None,
    };
    let node = builder
        .start()
        .await
        .with_context(|| format!("starting a node on {}", dir.display()))?;

    let untracked = spawn_untracked_gauge(node.cache());
    let page_return = spawn_page_return(node.cache());
    let peers = Arc::new(Mutex::new(Vec::new()));
    let asked_ms = Arc::new(std::sync::atomic::AtomicU64::new(peer_lines_now_ms()));
    let refresher = {
        let (node, peers, asked_ms) = (node.clone(), peers.clone(), asked_ms.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut last = None::<std::time::Instant>;
            loop {
                tick.tick().await;
                let asked = asked_ms.load(std::sync::atomic::Ordering::Relaxed);
                let hot =
                    peer_lines_now_ms().saturating_sub(asked) < PEER_LINES_HOT.as_millis() as u64;
                if !hot && last.is_some_and(|t| t.elapsed() < PEER_LINES_IDLE_REFRESH) {
                    continue;
                }
                last = Some(std::time::Instant::now());
                let Ok(status) = node.status().await else {
                    return;
                };
                if let Ok(mut p) = peers.lock() {
                    *p = peer_lines(&status);
                }
            }
        })
    };
    let requirepass = match &args.requirepass_file {
        Some(path) => Some(read_password_file(path)?),
        None => args.requirepass,
    };
    let config = RespConfig::default()
        .with_requirepass(requirepass)
        .with_timeout(Duration::from_secs(args.timeout))
        .with_command_observer(metrics.as_ref().map(|(_, m)| m.command_observer()))
        .with_allocator_stats(Some(crate::allocator::stats));
    let metrics_task = metrics.map(|(listener, metrics)| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving metrics at /metrics");
        }
        tokio::spawn(crate::metrics::serve(listener, metrics, node.clone()))
    });
    let server = RespServer::new(listener, node.cache().clone(), config)
        .with_cluster_info(Arc::new(ClusterLines {
            node: node.clone(),
            peers,
            asked_ms,
        }))
        .with_pubsub_bus(Arc::new(Bus(node.pubsub().clone())));
    // Messages published on other nodes, to this node's subscribers.
    let from_peers = node.pubsub().take_incoming().map(|mut incoming| {
        let hub = server.pubsub();
        tokio::spawn(async move {
            while let Some(m) = incoming.recv().await {
                hub.deliver(&m.channel, &m.payload);
            }
        })
    });
    let api = server.spawn().context("starting the API")?;
    let api_addr = api.local_addr();
    write_api_addr(dir, api_addr)?;

    let status = node.status().await?;
    tracing::info!(
        peer_id = %node.peer_id(),
        node_id = %status.cache.node_id,
        keys = status.cache.keys,
        dir = %dir.display(),
        api = %api_addr,
        listen = ?status.listen_addrs,
        "node running; Ctrl-C to stop"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
        () = api.shutdown_requested() => tracing::info!("SHUTDOWN asked by an API client"),
    }
    tracing::info!(
        "shutting down: closing the API, committing pending writes, closing connections"
    );
    let _ = std::fs::remove_file(dir.join(API_ADDR_FILE));
    refresher.abort();
    untracked.abort();
    page_return.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    if let Some(t) = from_peers {
        t.abort();
    }
    if let Err(e) = api.shutdown().await {
        tracing::warn!(error = %e, "closing the API");
    }
    node.shutdown().await?;
    Ok(())
}

/// How often the untracked-memory gauge is refreshed from jemalloc.
const UNTRACKED_GAUGE_INTERVAL: Duration = Duration::from_millis(100);

/// Keeps [`dice_core::Cache::untracked_memory`] at what jemalloc holds beyond what the cache
/// counts, less that difference as it was when the node had started (libp2p, tokio, the
/// store: the base every node has, which the memory limit does not cover). Sync messages
/// being built and applied, a snapshot's chunk, the store's statements then count in
/// `used_memory`, as the allocator's figure does in Redis's.
fn spawn_untracked_gauge(cache: &dice_core::Cache) -> tokio::task::JoinHandle<()> {
    let cache = cache.clone();
    let gauge = cache.untracked_memory();
    let gap = {
        let cache = cache.clone();
        move || {
            let allocated = crate::allocator::stats()?.allocated;
            Some(allocated.saturating_sub(cache.memory_usage().counted()))
        }
    };
    let base = gap();
    tokio::spawn(async move {
        let Some(base) = base else {
            return; // not jemalloc's figures: nothing to add
        };
        let mut tick = tokio::time::interval(UNTRACKED_GAUGE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Some(now) = gap() {
                gauge.store(
                    now.saturating_sub(base),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        }
    })
}

/// How often a node under a memory limit looks at jemalloc's free pages: a write flood frees
/// pages at tens of MB a second, which a tenth of a second lets pile up past the bound.
const PAGE_RETURN_INTERVAL: Duration = Duration::from_millis(10);

/// Under a memory limit, gives jemalloc's free pages back to the kernel whenever they pass a
/// share of the limit (see [`crate::allocator`]).
fn spawn_page_return(cache: &dice_core::Cache) -> tokio::task::JoinHandle<()> {
    let cache = cache.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PAGE_RETURN_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let limit = cache.memory_limit().max_bytes;
            if limit == 0 {
                continue;
            }
            if let Some(free) = crate::allocator::free_pages()
                && crate::allocator::should_return(limit, free)
            {
                let returned = crate::allocator::return_free_pages();
                tracing::trace!(free, returned, "returned the allocator's free pages");
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::read_password_file;
    use std::os::unix::fs::PermissionsExt;

    fn file(dir: &std::path::Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn password_files() {
        let dir = tempfile::tempdir().unwrap();
        let ok = file(dir.path(), "ok", "s3cret\n", 0o600);
        assert_eq!(read_password_file(&ok).unwrap(), "s3cret");
        let crlf = file(dir.path(), "crlf", "s3cret\r\n", 0o400);
        assert_eq!(read_password_file(&crlf).unwrap(), "s3cret");
        let bare = file(dir.path(), "bare", "with space", 0o600);
        assert_eq!(read_password_file(&bare).unwrap(), "with space");
        let open = file(dir.path(), "open", "s3cret\n", 0o644);
        let e = read_password_file(&open).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        let group = file(dir.path(), "group", "s3cret\n", 0o640);
        assert!(read_password_file(&group).is_err());
        let empty = file(dir.path(), "empty", "\n", 0o600);
        let e = read_password_file(&empty).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        let e = read_password_file(&dir.path().join("absent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("absent"), "{e}");
    }
}
