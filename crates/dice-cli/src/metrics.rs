//! `dice node --metrics HOST:PORT`: Prometheus metrics over HTTP (`GET /metrics`, in the
//! OpenMetrics text format of the `prometheus-client` crate).
//!
//! Two kinds of figures:
//! * measured as they happen: commands by name (count, errors, latency histogram, from
//!   dice-resp's [`CommandObserver`]) and group commits (latency histogram and entries, from
//!   dice-core's [`CommitObserver`]);
//! * read at each scrape from the node's status: keys, memory, commits, each peer's lag,
//!   traffic and clock offset, catch-ups, full resyncs, anti-entropy repairs, refused
//!   connections and messages.

use anyhow::{Context, Result};
use bytes::Bytes;
use dice_core::CommitObserver;
use dice_net::{Node, NodeStatus};
use dice_resp::CommandObserver;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Scrapes served at once; a connection past it is closed at once.
const MAX_SCRAPERS: usize = 16;
/// A scraper must send its request headers within this long.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

type CommandLabels = [(&'static str, &'static str); 1];

/// Latency buckets from 10 µs to about 20 s.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 4.0, 11))
}

/// What commands and commits record as they happen.
#[derive(Debug)]
pub struct Live {
    commands: Family<CommandLabels, Counter>,
    command_errors: Family<CommandLabels, Counter>,
    command_seconds: Family<CommandLabels, Histogram, fn() -> Histogram>,
    commit_seconds: Histogram,
    committed_entries: Counter,
}

impl Live {
    fn new() -> Self {
        Live {
            commands: Family::default(),
            command_errors: Family::default(),
            command_seconds: Family::new_with_constructor(latency_buckets),
            commit_seconds: latency_buckets(),
            committed_entries: Counter::default(),
        }
    }
}

impl CommandObserver for Live {
    fn command(&self, command: &'static str, elapsed: Duration, failed: bool) {
        let labels = [("command", command)];
        self.commands.get_or_create(&labels).inc();
        if failed {
            self.command_errors.get_or_create(&labels).inc();
        }
        self.command_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

impl CommitObserver for Live {
    fn committed(&self, elapsed: Duration, entries: usize) {
        self.commit_seconds.observe(elapsed.as_secs_f64());
        self.committed_entries.inc_by(entries as u64);
    }
}

/// The node's status as of the scrape being served.
#[derive(Debug, Default)]
struct StatusCollector {
    status: Mutex<Option<NodeStatus>>,
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for StatusCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(guard) = self.status.lock() else {
            return Ok(());
        };
        let Some(s) = guard.as_ref() else {
            return Ok(());
        };
        let c = &s.cache;
        let r = &c.replica;
        gauge(&mut e, "dice_keys", "Live keys.", c.keys as f64)?;
        gauge(
            &mut e,
            "dice_entries",
            "Entries held, tombstones and expired values included.",
            c.entries as f64,
        )?;
        gauge(
            &mut e,
            "dice_pending_keys",
            "Keys written and waiting for their group commit.",
            c.pending_keys as f64,
        )?;
        gauge(
            &mut e,
            "dice_writes_refused",
            "1 while the store cannot commit and writes are refused.",
            if c.writes_refused.is_some() { 1.0 } else { 0.0 },
        )?;
        if let Some(rss) = rss_bytes() {
            gauge(
                &mut e,
                "dice_resident_memory_bytes",
                "Resident set size of the process.",
                rss as f64,
            )?;
        }
        counter(&mut e, "dice_commits", "Group commits.", c.commits)?;
        counter(
            &mut e,
            "dice_commit_failures",
            "Group commits that failed (and were rolled back).",
            c.commit_failures,
        )?;
        counter(&mut e, "dice_snapshots", "Snapshots written.", c.snapshots)?;
        counter(
            &mut e,
            "dice_remote_applied",
            "Entries from peers that won the merge.",
            r.remote_applied,
        )?;
        counter(
            &mut e,
            "dice_gc_dropped",
            "Dead entries collected.",
            r.gc_dropped,
        )?;
        counter(
            &mut e,
            "dice_catchups",
            "Catch-up sessions finished.",
            s.catchups,
        )?;
        counter(
            &mut e,
            "dice_full_resyncs",
            "Catch-ups that were full resyncs.",
            s.full_resyncs,
        )?;
        counter(
            &mut e,
            "dice_repairs",
            "Anti-entropy exchanges that repaired a divergence here (0 in normal operation).",
            r.repairs,
        )?;
        counter(
            &mut e,
            "dice_repaired_entries",
            "Entries installed by anti-entropy (0 in normal operation).",
            r.repaired_entries,
        )?;
        counter(
            &mut e,
            "dice_repair_conflicts",
            "Keys found with the same version and different contents.",
            r.repair_conflicts,
        )?;
        counter(
            &mut e,
            "dice_refused_messages",
            "Sync messages refused (malformed, over the rate, protocol errors).",
            s.refused_messages,
        )?;
        counter(
            &mut e,
            "dice_refused_connections",
            "Incoming peer connections refused (handshake failed: no or another cluster key).",
            s.refused_connections,
        )?;
        counter(
            &mut e,
            "dice_closed_over_max_peers",
            "Peer connections refused before their handshake, or closed as they opened: this node had its --max-peers connected.",
            s.closed_over_max_peers,
        )?;
        counter(
            &mut e,
            "dice_dials_refused_at_bound",
            "Dials to peers not connected (Kademlia's) refused: this node had its --max-peers connected.",
            s.dials_refused_at_bound,
        )?;
        counter(
            &mut e,
            "dice_refused_not_local",
            "Incoming peer connections refused as not local (no cluster key).",
            s.refused_not_local,
        )?;
        counter(
            &mut e,
            "dice_foreign_peers",
            "Peers found to be of another cluster or protocol.",
            s.foreign_peers,
        )?;
        counter(
            &mut e,
            "dice_connections_opened_outbound",
            "Peer connections established that this node dialed (including those closed at once at a --max-peers).",
            s.connections_opened_outbound,
        )?;
        counter(
            &mut e,
            "dice_connections_opened_inbound",
            "Peer connections established that a peer dialed (including those closed at once at our --max-peers).",
            s.connections_opened_inbound,
        )?;
        gauge(
            &mut e,
            "dice_gossip_joined",
            "1 once this node spreads writes by gossip (past --max-peers).",
            f64::from(u8::from(s.gossip.joined)),
        )?;
        counter(
            &mut e,
            "dice_gossip_published",
            "Messages of this node's own writes published by gossip.",
            s.gossip.published,
        )?;
        counter(
            &mut e,
            "dice_gossip_published_entries",
            "Writes in the messages this node published by gossip.",
            s.gossip.published_entries,
        )?;
        counter(
            &mut e,
            "dice_gossip_publish_failed",
            "Pages of this node's writes not published by gossip (push and catch-up carry them).",
            s.gossip.publish_failed,
        )?;
        counter(
            &mut e,
            "dice_gossip_accepted",
            "Gossiped messages of other nodes' writes applied here and passed on.",
            s.gossip.accepted,
        )?;
        counter(
            &mut e,
            "dice_gossip_accepted_entries",
            "Writes in the gossiped messages applied here.",
            s.gossip.accepted_entries,
        )?;
        counter(
            &mut e,
            "dice_gossip_rejected",
            "Gossiped messages rejected as malformed or forged.",
            s.gossip.rejected,
        )?;
        counter(
            &mut e,
            "dice_gossip_ignored",
            "Gossiped messages not taken (writes refused here, author behind our floors).",
            s.gossip.ignored,
        )?;
        gauge(
            &mut e,
            "dice_peers_connected",
            "Members connected now.",
            s.peers.iter().filter(|p| p.connected).count() as f64,
        )?;
        self.peers(&mut e, s)
    }
}

impl StatusCollector {
    /// One family per figure, one series per peer.
    fn peers(&self, e: &mut DescriptorEncoder, s: &NodeStatus) -> Result<(), std::fmt::Error> {
        type Get = fn(&dice_net::PeerStatus) -> f64;
        let gauges: [(&str, &str, Get); 4] = [
            (
                "dice_peer_connected",
                "1 while the peer is connected.",
                |p| f64::from(u8::from(p.connected)),
            ),
            (
                "dice_peer_unacked_writes",
                "Our writes the peer has not acknowledged: its replication lag.",
                |p| p.unacked as f64,
            ),
            (
                "dice_peer_missing_writes",
                "The peer's own writes we know of and do not hold yet.",
                |p| p.missing as f64,
            ),
            (
                "dice_peer_clock_offset_seconds",
                "Estimated offset of the peer's clock from ours.",
                |p| p.clock_offset_ms.map_or(0.0, |ms| ms as f64 / 1000.0),
            ),
        ];
        for (name, help, get) in gauges {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for p in &s.peers {
                let labels = peer_labels(p);
                ConstGauge::new(get(p)).encode(m.encode_family(&labels)?)?;
            }
        }
        type Count = fn(&dice_net::PeerStatus) -> u64;
        let counters: [(&str, &str, Count); 5] = [
            (
                "dice_peer_sent_bytes",
                "Sync bytes sent to the peer.",
                |p| p.bytes_sent,
            ),
            (
                "dice_peer_received_bytes",
                "Sync bytes received from the peer.",
                |p| p.bytes_received,
            ),
            ("dice_peer_sent_entries", "Entries sent to the peer.", |p| {
                p.entries_sent
            }),
            (
                "dice_peer_received_entries",
                "Entries received from the peer.",
                |p| p.entries_received,
            ),
            (
                "dice_peer_refused_messages",
                "Messages of the peer refused.",
                |p| p.refused,
            ),
        ];
        for (name, help, get) in counters {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for p in &s.peers {
                let labels = peer_labels(p);
                ConstCounter::new(get(p)).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

fn peer_labels(p: &dice_net::PeerStatus) -> [(&'static str, String); 2] {
    [
        ("peer", p.peer_id.to_string()),
        ("node", p.node_id.map(|n| n.to_string()).unwrap_or_default()),
    ]
}

/// The process's resident set size (Linux: `/proc/self/statm`, assuming 4 KiB pages).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The registry of a node and what fills it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    live: Arc<Live>,
    status: Arc<StatusCollector>,
}

impl Metrics {
    /// A registry with every dice metric registered.
    pub fn new() -> Self {
        let live = Arc::new(Live::new());
        let status = Arc::new(StatusCollector::default());
        // The registry ends every help text with a period itself.
        let mut registry = Registry::default();
        registry.register(
            "dice_commands",
            "Commands run, by name",
            live.commands.clone(),
        );
        registry.register(
            "dice_command_errors",
            "Commands that answered an error, by name",
            live.command_errors.clone(),
        );
        registry.register(
            "dice_command_duration_seconds",
            "Time to run a command, by name (not counting the wait for its group commit)",
            live.command_seconds.clone(),
        );
        registry.register(
            "dice_commit_duration_seconds",
            "Time to make one group of writes durable",
            live.commit_seconds.clone(),
        );
        registry.register(
            "dice_committed_entries",
            "Writes and removals made durable by group commits",
            live.committed_entries.clone(),
        );
        registry.register_collector(Box::new(status.clone()));
        Metrics {
            registry,
            live,
            status,
        }
    }

    /// The command observer to give the RESP server.
    pub fn command_observer(&self) -> Arc<dyn CommandObserver> {
        self.live.clone()
    }

    /// The commit observer to give the cache.
    pub fn commit_observer(&self) -> Arc<dyn CommitObserver> {
        self.live.clone()
    }

    /// The text of a scrape, with `status` as the node's state.
    pub fn render(&self, status: NodeStatus) -> Result<String, std::fmt::Error> {
        if let Ok(mut s) = self.status.status.lock() {
            *s = Some(status);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Binds `addr` (a taken port fails here, before the node starts).
pub async fn bind(addr: &SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))
}

/// Serves `GET /metrics` on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, node: Node) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPERS));
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%from, "too many metrics scrapers at once; closing one");
            continue;
        };
        let (metrics, node) = (metrics.clone(), node.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (metrics, node) = (metrics.clone(), node.clone());
                async move { Ok::<_, std::convert::Infallible>(respond(&metrics, &node, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%from, error = %e, "metrics connection");
            }
            drop(permit);
        });
    }
}

async fn respond(
    metrics: &Metrics,
    node: &Node,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let reply = |code: StatusCode, ctype: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: metrics are at /metrics\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    let status = match node.status().await {
        Ok(s) => s,
        Err(e) => {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("the node is stopping: {e}\n"),
            );
        }
    };
    match metrics.render(status) {
        Ok(text) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            text,
        ),
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "cannot encode the metrics\n".into(),
        ),
    }
}
