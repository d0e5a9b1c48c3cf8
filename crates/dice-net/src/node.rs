//! A dice node: a [`Cache`] plus a libp2p swarm that finds peers and keeps them converged.
//!
//! One task (the event loop) owns the `Swarm`; the [`Node`] handle talks to it over a bounded
//! channel. Reads and writes go straight to the cache; the event loop learns of local writes
//! through the cache's change subscription and pushes them to peers in batches.

use crate::NetError;
use crate::codec::FrameCodec;
use crate::keys::load_or_create_identity;
use crate::known_peers::KnownPeers;
use crate::lan_only::LanOnly;
use crate::protocol::sync_protocol;
use crate::pubsub::{PubSub, PubSubLoop};
use bytes::Bytes;
use dice_core::{
    Cache, CacheOptions, CacheStats, Entry, Failure, NodeId, Outgoing, Purpose, ReplicationConfig,
    Replicator, ReplyOutcome, SyncMessage, now_ms,
    skew::{ClockOffset, OffsetSample, SKEW_WARN_MS, SkewNotice},
};
use futures::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::upgrade::Version;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, Transport, allow_block_list, identify, kad, mdns,
    noise, ping, tcp, yamux,
};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Default libp2p listen address.
pub const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/7380";

/// Everything a node is started with. Build it with [`NodeBuilder`].
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Data directory (cache database, node identity, known peers).
    pub data_dir: PathBuf,
    /// libp2p listen addresses (default `/ip4/0.0.0.0/tcp/7380`).
    pub listen: Vec<Multiaddr>,
    /// Bootstrap peers, with or without a `/p2p/<peer id>` suffix.
    pub bootstrap: Vec<Multiaddr>,
    /// Cluster name: only nodes of the same cluster exchange data (default `default`).
    pub cluster: String,
    /// Pre-shared cluster key: nodes without it cannot even connect.
    pub cluster_key: Option<PreSharedKey>,
    /// Discover peers on the LAN with mDNS (default on).
    pub mdns: bool,
    /// Options of the cache.
    pub cache: CacheOptions,
    /// How often to run a catch-up with a random peer (default 5 s).
    pub catchup_interval: Duration,
    /// Ping period (default 1 s); a peer that misses one ping timeout is disconnected.
    pub ping_interval: Duration,
    /// How long a ping may take (default 2 s).
    pub ping_timeout: Duration,
    /// Inbound sync requests allowed per peer per second (burst: twice that). Default 5000; a
    /// dice sender paces its pushes to at most one per peer per 250 µs, under it.
    pub max_requests_per_sec: u32,
    /// How often to run an anti-entropy exchange with the next connected member (default
    /// 30 s): see `dice_core::antientropy`.
    pub antientropy_interval: Duration,
}

/// Builds and starts a [`Node`].
///
/// ```no_run
/// # async fn run() -> Result<(), dice_net::NetError> {
/// let node = dice_net::NodeBuilder::new("./data")
///     .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
///     .peer("/ip4/127.0.0.1/tcp/7380".parse().unwrap())
///     .mdns(false)
///     .start()
///     .await?;
/// node.put("elixir", "awesome sauce").await?;
/// println!("{:?}", node.status().await?);
/// node.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct NodeBuilder {
    config: NodeConfig,
    explicit_listen: bool,
}

impl NodeBuilder {
    /// A node on data directory `dir`, with defaults for everything else.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        NodeBuilder {
            config: NodeConfig {
                data_dir: dir.into(),
                listen: Vec::new(),
                bootstrap: Vec::new(),
                cluster: "default".into(),
                cluster_key: None,
                mdns: true,
                cache: CacheOptions::default(),
                catchup_interval: Duration::from_secs(5),
                ping_interval: Duration::from_secs(1),
                ping_timeout: Duration::from_secs(2),
                max_requests_per_sec: 5000,
                antientropy_interval: Duration::from_secs(30),
            },
            explicit_listen: false,
        }
    }

    /// Adds a listen address (the default one is dropped once any is given).
    pub fn listen(mut self, addr: Multiaddr) -> Self {
        self.explicit_listen = true;
        self.config.listen.push(addr);
        self
    }

    /// Adds a bootstrap peer.
    pub fn peer(mut self, addr: Multiaddr) -> Self {
        self.config.bootstrap.push(addr);
        self
    }

    /// Sets the cluster name.
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.config.cluster = name.into();
        self
    }

    /// Sets the pre-shared cluster key.
    pub fn cluster_key(mut self, key: PreSharedKey) -> Self {
        self.config.cluster_key = Some(key);
        self
    }

    /// Turns mDNS discovery on or off.
    pub fn mdns(mut self, on: bool) -> Self {
        self.config.mdns = on;
        self
    }

    /// Sets the cache options.
    pub fn cache_options(mut self, options: CacheOptions) -> Self {
        self.config.cache = options;
        self
    }

    /// Sets the periodic catch-up interval.
    pub fn catchup_interval(mut self, every: Duration) -> Self {
        self.config.catchup_interval = every;
        self
    }

    /// Sets the anti-entropy interval.
    pub fn antientropy_interval(mut self, every: Duration) -> Self {
        self.config.antientropy_interval = every;
        self
    }

    /// Gives direct access to the whole configuration.
    pub fn config_mut(&mut self) -> &mut NodeConfig {
        &mut self.config
    }

    /// Opens the cache, starts the swarm and its event loop, and waits until it listens.
    pub async fn start(mut self) -> Result<Node, NetError> {
        if !self.explicit_listen {
            self.config.listen = vec![DEFAULT_LISTEN.parse().map_err(|_| {
                NetError::Transport("the default listen address does not parse".into())
            })?];
        }
        Node::start(self.config).await
    }
}

/// What a node knows about one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's libp2p id.
    pub peer_id: PeerId,
    /// The peer's dice node id (origin of its writes), once identified.
    pub node_id: Option<NodeId>,
    /// The address of the current connection, if connected.
    pub address: Option<Multiaddr>,
    /// Whether a connection is open.
    pub connected: bool,
    /// Our local writes the peer has not acknowledged yet.
    pub unacked: u64,
    /// The peer's writes (as far as we know of them) that we do not hold yet.
    pub missing: u64,
    /// Sync bytes sent to the peer.
    pub bytes_sent: u64,
    /// Sync bytes received from the peer.
    pub bytes_received: u64,
    /// Entries sent to the peer (pushes and catch-up pages).
    pub entries_sent: u64,
    /// Entries received from the peer.
    pub entries_received: u64,
    /// Messages from the peer refused (malformed, oversized, over the rate).
    pub refused: u64,
    /// The peer's wall clock minus ours, in milliseconds, estimated from the send times sync
    /// messages carry (`None` before any). Past ±1 s it is logged: TTLs expire by each
    /// node's own clock, so skewed nodes expire a key at different moments.
    pub clock_offset_ms: Option<i64>,
}

/// A node's state: its cache, its peers and its counters.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    /// libp2p peer id.
    pub peer_id: PeerId,
    /// Addresses the swarm listens on.
    pub listen_addrs: Vec<Multiaddr>,
    /// The cluster name.
    pub cluster: String,
    /// The cache's state.
    pub cache: CacheStats,
    /// Every peer met since start.
    pub peers: Vec<PeerStatus>,
    /// Full resyncs this node did.
    pub full_resyncs: u64,
    /// Inbound messages refused, all peers together.
    pub refused_messages: u64,
    /// Connections dropped because the peer is of another cluster.
    pub foreign_peers: u64,
    /// Incoming connections that failed their handshake (e.g. no or another cluster key), or
    /// were refused as not local.
    pub refused_connections: u64,
    /// Incoming connections refused because they came from outside the local networks (no
    /// cluster key is set).
    pub refused_not_local: u64,
    /// Catch-up sessions completed.
    pub catchups: u64,
}

enum Command {
    Status(oneshot::Sender<NodeStatus>),
    Block(PeerId, oneshot::Sender<()>),
    Unblock(PeerId, oneshot::Sender<()>),
    SyncNow(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// A running node. Cheap to clone; [`Node::shutdown`] stops it.
#[derive(Clone)]
pub struct Node {
    cache: Cache,
    peer_id: PeerId,
    /// Per peer, the highest seq of our own writes it acknowledged holding.
    acked: watch::Receiver<HashMap<PeerId, u64>>,
    commands: mpsc::Sender<Command>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
    pubsub: PubSub,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.peer_id)
            .field("cache", &self.cache)
            .finish()
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    lan_only: LanOnly,
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    sync: request_response::Behaviour<FrameCodec>,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    gossipsub: libp2p::gossipsub::Behaviour,
}

impl Node {
    async fn start(config: NodeConfig) -> Result<Node, NetError> {
        let protocol = StreamProtocol::try_from_owned(sync_protocol(&config.cluster)?)
            .map_err(|e| NetError::Transport(e.to_string()))?;
        let cache = Cache::open_with(&config.data_dir, config.cache.clone()).await?;
        let keypair = load_or_create_identity(&config.data_dir)?;
        let peer_id = keypair.public().to_peer_id();
        let denied_not_local = Arc::new(AtomicU64::new(0));
        let max_message = crate::pubsub::max_message_for(&config.cache.limits);
        let (pubsub, pubsub_loop) = PubSubLoop::new(&config.cluster, max_message);
        let mut swarm = build_swarm(
            &config,
            &denied_not_local,
            keypair,
            protocol.clone(),
            cache.node_id(),
        )?;
        pubsub_loop.subscribe(&mut swarm.behaviour_mut().gossipsub);
        if config.cluster_key.is_none() {
            tracing::warn!(
                "no cluster key: any host on the local networks that reaches the peer port \
                 can join this cluster and read and write every key (hosts beyond them are \
                 refused). To keep strangers out, run `dice keygen FILE` once and start every \
                 node with --cluster-key FILE"
            );
        }
        for addr in &config.listen {
            check_port_free(addr)?;
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
        }
        // Wait until every listener is bound, so the caller can read the actual ports.
        let mut listen_addrs = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while listen_addrs.len() < config.listen.len() {
            let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
                .await
                .map_err(|_| NetError::Transport("timed out binding listen addresses".into()))?;
            match event {
                SwarmEvent::NewListenAddr { address, .. } => listen_addrs.push(address),
                SwarmEvent::ListenerError { error, .. } => {
                    return Err(NetError::Transport(format!("listener error: {error}")));
                }
                SwarmEvent::ListenerClosed {
                    addresses, reason, ..
                } => {
                    return Err(NetError::Listen {
                        addr: addresses.first().cloned().unwrap_or_else(Multiaddr::empty),
                        reason: format!("{reason:?}"),
                    });
                }
                _ => {}
            }
        }
        tracing::info!(
            %peer_id,
            node_id = %cache.node_id(),
            cluster = %config.cluster,
            listen = ?listen_addrs,
            "node started"
        );
        let (tx, rx) = mpsc::channel(64);
        let (acked_tx, acked_rx) = watch::channel(HashMap::new());
        let known = KnownPeers::load(&config.data_dir);
        let replication = ReplicationConfig::default()
            .with_catchup_interval(config.catchup_interval.max(Duration::from_millis(50)))
            .with_antientropy_interval(config.antientropy_interval.max(Duration::from_millis(50)));
        let mut event_loop = EventLoop {
            shareable: cache.watch_shareable(),
            cache: cache.clone(),
            swarm,
            commands: rx,
            cluster_version: cluster_version(&config.cluster),
            config,
            peers: HashMap::new(),
            pending: HashMap::new(),
            replication: Replicator::new(replication, Duration::ZERO),
            epoch: Instant::now(),
            known,
            bootstrap: Vec::new(),
            blocked: HashSet::new(),
            listen_addrs,
            poll_wanted: false,
            wake_at: None,
            denied_not_local,
            counters: Counters::default(),
            pubsub: pubsub_loop,
            acked: acked_tx,
        };
        event_loop.dial_initial();
        let task = tokio::spawn(event_loop.run());
        Ok(Node {
            cache,
            peer_id,
            acked: acked_rx,
            commands: tx,
            task: Arc::new(Mutex::new(Some(task))),
            pubsub,
        })
    }

    /// Cluster-wide pub/sub: publish to the other nodes, receive what they publish.
    pub fn pubsub(&self) -> &PubSub {
        &self.pubsub
    }

    /// The node's cache (reads and writes go straight to it).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The node's libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Stores a value; returns once committed locally (peers get it by push right after).
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<Entry, NetError> {
        Ok(self.cache.put(key, value).await?)
    }

    /// How many peers acknowledged holding this node's own writes up to `seq` (an
    /// [`Entry::seq`] of a local write): they received them and applied them in memory (each
    /// makes them durable at its next group commit). Counts every peer met since start,
    /// connected or not. Cheap: no round trip to the event loop. Redis's `WAIT` runs on it.
    pub fn acked_by(&self, seq: u64) -> usize {
        self.acked.borrow().values().filter(|&&s| s >= seq).count()
    }

    /// Per peer, the highest seq of this node's own writes it acknowledged holding (see
    /// [`Node::acked_by`]); changes whenever a peer acknowledges more.
    pub fn watch_acked(&self) -> watch::Receiver<HashMap<PeerId, u64>> {
        self.acked.clone()
    }

    /// Reads a value from the local replica.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.cache.get(key)
    }

    /// Deletes a key cluster-wide; returns whether it was present here.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<bool, NetError> {
        Ok(self.cache.delete(key).await?)
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Peers, counters and cache state.
    pub async fn status(&self) -> Result<NodeStatus, NetError> {
        self.call(Command::Status).await
    }

    /// Disconnects `peer` and refuses it until [`Node::unblock`] (used to make partitions).
    pub async fn block(&self, peer: PeerId) -> Result<(), NetError> {
        self.call(|tx| Command::Block(peer, tx)).await
    }

    /// Allows `peer` again and redials it.
    pub async fn unblock(&self, peer: PeerId) -> Result<(), NetError> {
        self.call(|tx| Command::Unblock(peer, tx)).await
    }

    /// Starts a catch-up with every connected peer now.
    pub async fn sync_now(&self) -> Result<(), NetError> {
        self.call(Command::SyncNow).await
    }

    /// Stops the swarm (closing connections) and closes the cache, committing pending writes.
    pub async fn shutdown(self) -> Result<(), NetError> {
        let _ = self.call(Command::Shutdown).await;
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        self.cache.close().await?;
        Ok(())
    }
}

/// Fails with a clear error if a TCP listen address's port is taken. libp2p listens with
/// SO_REUSEPORT (to dial from its listening port), so a second node on a taken port would
/// otherwise start and share it silently. A plain bind, without that option, finds out.
fn check_port_free(addr: &Multiaddr) -> Result<(), NetError> {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(v4) => ip = Some(std::net::IpAddr::V4(v4)),
            Protocol::Ip6(v6) => ip = Some(std::net::IpAddr::V6(v6)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    let (Some(ip), Some(port)) = (ip, port) else {
        return Ok(());
    };
    if port == 0 {
        return Ok(());
    }
    match std::net::TcpListener::bind((ip, port)) {
        Ok(_) => Ok(()),
        Err(e) => Err(NetError::Listen {
            addr: addr.clone(),
            reason: if e.kind() == std::io::ErrorKind::AddrInUse {
                format!(
                    "port {port} is already in use (another dice node on this host?); pick \
                     another with --listen"
                )
            } else {
                e.to_string()
            },
        }),
    }
}

fn cluster_version(cluster: &str) -> String {
    format!("/dice/{cluster}/1")
}

fn agent_version(node_id: NodeId) -> String {
    format!("dice/{} node/{node_id}", env!("CARGO_PKG_VERSION"))
}

fn node_id_from_agent(agent: &str) -> Option<NodeId> {
    agent
        .split_whitespace()
        .find_map(|part| part.strip_prefix("node/"))
        .and_then(|id| id.parse().ok())
}

fn build_swarm(
    config: &NodeConfig,
    denied_not_local: &Arc<AtomicU64>,
    keypair: libp2p::identity::Keypair,
    protocol: StreamProtocol,
    node_id: NodeId,
) -> Result<Swarm<Behaviour>, NetError> {
    let psk = config.cluster_key;
    let denied_not_local = denied_not_local.clone();
    let max_frame = config.cache.sync_limits.max_message_bytes;
    let max_message = crate::pubsub::max_message_for(&config.cache.limits);
    let cluster = config.cluster.clone();
    let mdns_on = config.mdns;
    let ping_cfg = ping::Config::new()
        .with_interval(config.ping_interval)
        .with_timeout(config.ping_timeout);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|key| {
            let noise_config = noise::Config::new(key)?;
            let base = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
            let maybe_private = match psk {
                Some(psk) => either::Either::Left(
                    base.and_then(move |socket, _| PnetConfig::new(psk).handshake(socket)),
                ),
                None => either::Either::Right(base),
            };
            Ok(maybe_private
                .upgrade(Version::V1Lazy)
                .authenticate(noise_config)
                .multiplex(yamux::Config::default())
                .timeout(Duration::from_secs(10))
                .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer))))
        })
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let kad_protocol = StreamProtocol::try_from_owned(format!("/dice/{cluster}/kad/1"))?;
            let mut kad_cfg = kad::Config::new(kad_protocol);
            kad_cfg.set_periodic_bootstrap_interval(Some(Duration::from_secs(30)));
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad_cfg,
            );
            kad.set_mode(Some(kad::Mode::Server));
            let mdns = if mdns_on {
                let cfg = mdns::Config {
                    ttl: Duration::from_secs(30),
                    query_interval: Duration::from_millis(500),
                    enable_ipv6: false,
                };
                Some(mdns::tokio::Behaviour::new(cfg, peer_id)?)
            } else {
                None
            };
            Ok(Behaviour {
                lan_only: LanOnly::new(psk.is_none(), denied_not_local),
                blocked: allow_block_list::Behaviour::default(),
                sync: request_response::Behaviour::with_codec(
                    FrameCodec::new(max_frame),
                    [(protocol, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(15))
                        .with_max_concurrent_streams(64),
                ),
                kad,
                identify: identify::Behaviour::new(
                    identify::Config::new(cluster_version(&cluster), key.public())
                        .with_agent_version(agent_version(node_id))
                        .with_interval(Duration::from_secs(60)),
                ),
                ping: ping::Behaviour::new(ping_cfg),
                mdns: Toggle::from(mdns),
                gossipsub: crate::pubsub::behaviour(key, &cluster, max_message)?,
            })
        })
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(24 * 3600)))
        .build();
    Ok(swarm)
}

/// A token bucket bounding one peer's inbound request rate.
#[derive(Debug)]
struct RateLimit {
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(burst: f64) -> Self {
        RateLimit {
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn allow(&mut self, per_sec: f64) -> bool {
        let now = Instant::now();
        let burst = per_sec * 2.0;
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * per_sec).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct PeerState {
    node_id: Option<NodeId>,
    connections: usize,
    address: Option<Multiaddr>,
    /// Speaks our cluster's protocol (identified or synced with).
    member: bool,
    bytes_sent: u64,
    bytes_received: u64,
    entries_sent: u64,
    entries_received: u64,
    refused: u64,
    /// Estimate of the peer's clock offset from ours.
    clock: ClockOffset,
    rate: RateLimit,
    redial_at: Option<Instant>,
    backoff: Duration,
    /// Last time the peer answered a ping or sent us anything.
    last_alive: Instant,
}

impl PeerState {
    fn new(burst: f64) -> Self {
        PeerState {
            node_id: None,
            connections: 0,
            address: None,
            member: false,
            bytes_sent: 0,
            bytes_received: 0,
            entries_sent: 0,
            entries_received: 0,
            refused: 0,
            clock: ClockOffset::default(),
            rate: RateLimit::new(burst),
            redial_at: None,
            backoff: Duration::from_millis(250),
            last_alive: Instant::now(),
        }
    }
}

/// A request in flight: what it is for, and our wall clock when it left (for the round-trip
/// clock offset).
#[derive(Debug)]
struct Pending {
    purpose: Purpose,
    sent_ms: u64,
}

#[derive(Debug)]
struct BootstrapAddr {
    addr: Multiaddr,
    next_try: Instant,
    backoff: Duration,
    done: bool,
}

#[derive(Debug, Default)]
struct Counters {
    full_resyncs: u64,
    refused_messages: u64,
    foreign_peers: u64,
    refused_connections: u64,
    catchups: u64,
}

struct EventLoop {
    cache: Cache,
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    /// Changes when local writes become durable, and so may be pushed.
    shareable: watch::Receiver<u64>,
    cluster_version: String,
    config: NodeConfig,
    peers: HashMap<PeerId, PeerState>,
    pending: HashMap<OutboundRequestId, Pending>,
    /// Per-peer replication policy (dice-core's sans-IO state machine).
    replication: Replicator<PeerId>,
    /// The origin of the replicator's clock.
    epoch: Instant,
    known: KnownPeers,
    bootstrap: Vec<BootstrapAddr>,
    blocked: HashSet<PeerId>,
    listen_addrs: Vec<Multiaddr>,
    /// Something happened that may make replication work due.
    poll_wanted: bool,
    /// When the replicator wants to be polled at the latest.
    wake_at: Option<Instant>,
    /// Inbound connections refused as not local (counted by [`LanOnly`]).
    denied_not_local: Arc<AtomicU64>,
    counters: Counters,
    pubsub: PubSubLoop,
    /// Per peer, the highest seq of our own writes it acknowledged holding: from the version
    /// vector it sends with its requests and pushes and with its ack of our pushes, never
    /// assumed (unlike the replicator's `acked_seq`, which a new connection raises to what
    /// the catch-up will bring). Read by [`Node::acked_by`] (Redis's `WAIT`).
    acked: watch::Sender<HashMap<PeerId, u64>>,
}

fn split_peer_id(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut addr = addr.clone();
    match addr.pop() {
        Some(Protocol::P2p(peer)) => (addr, Some(peer)),
        Some(other) => {
            addr.push(other);
            (addr, None)
        }
        None => (addr, None),
    }
}

impl EventLoop {
    fn burst(&self) -> f64 {
        f64::from(self.config.max_requests_per_sec.max(1)) * 2.0
    }

    /// Marks `peer` as a member of our cluster or not, here and in the replicator.
    fn set_member(&mut self, peer: PeerId, member: bool) {
        self.peer(peer).member = member;
        self.replication.set_member(&peer, member);
        self.poll_wanted = true;
    }

    fn peer(&mut self, peer: PeerId) -> &mut PeerState {
        let burst = self.burst();
        self.peers
            .entry(peer)
            .or_insert_with(|| PeerState::new(burst))
    }

    fn dial_initial(&mut self) {
        let now = Instant::now();
        for addr in self.config.bootstrap.clone() {
            let (bare, peer) = split_peer_id(&addr);
            match peer {
                Some(peer) => {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, bare.clone());
                    self.known.insert(peer, [bare]);
                    self.peer(peer).redial_at = Some(now);
                }
                None => self.bootstrap.push(BootstrapAddr {
                    addr,
                    next_try: now,
                    backoff: Duration::from_millis(250),
                    done: false,
                }),
            }
        }
        let known: Vec<(PeerId, Vec<Multiaddr>)> =
            self.known.iter().map(|(p, a)| (*p, a.clone())).collect();
        for (peer, addrs) in known {
            for a in &addrs {
                self.swarm.behaviour_mut().kad.add_address(&peer, a.clone());
            }
            self.peer(peer).redial_at = Some(now);
        }
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut save = tokio::time::interval(Duration::from_secs(2));
        self.poll_wanted = true;
        loop {
            if self.poll_wanted {
                self.poll_wanted = false;
                self.poll_replication();
            }
            let wake_at = self.wake_at;
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                changed = self.shareable.changed() => match changed {
                    Ok(()) => self.poll_wanted = true,
                    Err(_) => break,
                },
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        self.known.save();
                        let _ = done.send(());
                        break;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                data = self.pubsub.next_outgoing() => {
                    self.pubsub.publish(&mut self.swarm.behaviour_mut().gossipsub, data);
                }
                _ = tick.tick() => self.redial(),
                _ = save.tick() => self.known.save(),
                _ = tokio::time::sleep_until(wake_at.unwrap_or_else(Instant::now).into()),
                    if wake_at.is_some() => self.poll_wanted = true,
            }
        }
        tracing::info!("network stopped");
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Status(tx) => {
                let _ = tx.send(self.status());
            }
            Command::Block(peer, tx) => {
                self.blocked.insert(peer);
                self.swarm.behaviour_mut().blocked.block_peer(peer);
                self.replication.abandon_session(&peer);
                let _ = tx.send(());
            }
            Command::Unblock(peer, tx) => {
                self.blocked.remove(&peer);
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                let state = self.peer(peer);
                state.redial_at = Some(Instant::now());
                state.backoff = Duration::from_millis(250);
                let _ = tx.send(());
            }
            Command::SyncNow(tx) => {
                let out = self.replication.catch_up_all(&self.cache);
                self.send_all(out);
                let _ = tx.send(());
            }
            Command::Shutdown(_) => {}
        }
    }

    fn status(&self) -> NodeStatus {
        let cache = self.cache.stats();
        let local_seq = cache.vv.get(cache.node_id);
        let mut peers: Vec<PeerStatus> = self
            .peers
            .iter()
            .filter(|(_, s)| s.member)
            .map(|(p, s)| {
                let (acked, theirs) = self
                    .replication
                    .peer(p)
                    .map_or((0, 0), |r| (r.acked_seq, r.their_seq));
                (p, s, acked, theirs)
            })
            .map(|(p, s, acked, theirs)| PeerStatus {
                peer_id: *p,
                node_id: s.node_id,
                address: s.address.clone(),
                connected: s.connections > 0,
                unacked: local_seq.saturating_sub(acked),
                missing: s
                    .node_id
                    .map_or(0, |id| theirs.saturating_sub(cache.vv.get(id))),
                bytes_sent: s.bytes_sent,
                bytes_received: s.bytes_received,
                entries_sent: s.entries_sent,
                entries_received: s.entries_received,
                refused: s.refused,
                clock_offset_ms: s.clock.offset_ms(),
            })
            .collect();
        peers.sort_by_key(|p| p.peer_id);
        NodeStatus {
            peer_id: *self.swarm.local_peer_id(),
            listen_addrs: self.listen_addrs.clone(),
            cluster: self.config.cluster.clone(),
            cache,
            peers,
            full_resyncs: self.counters.full_resyncs,
            refused_messages: self.counters.refused_messages,
            foreign_peers: self.counters.foreign_peers,
            refused_connections: self.counters.refused_connections,
            refused_not_local: self.denied_not_local.load(Ordering::Relaxed),
            catchups: self.counters.catchups,
        }
    }

    fn dial_peer(&mut self, peer: PeerId) {
        if self.blocked.contains(&peer) || peer == *self.swarm.local_peer_id() {
            return;
        }
        let addrs = self.known.addrs(&peer).cloned().unwrap_or_default();
        let opts = DialOpts::peer_id(peer).addresses(addrs).build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, error = %e, "dial not started");
        }
    }

    /// Disconnects peers that answered nothing for longer than a ping period plus its timeout
    /// (and a margin): a cut link never closes TCP by itself, and a ping stuck in stream
    /// negotiation only fails after the much longer negotiation timeout.
    fn drop_silent_peers(&mut self) {
        let limit = self.config.ping_interval + self.config.ping_timeout + Duration::from_secs(1);
        let now = Instant::now();
        let silent: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| s.connections > 0 && now.duration_since(s.last_alive) > limit)
            .map(|(p, _)| *p)
            .collect();
        for peer in silent {
            tracing::info!(%peer, silent_for = ?limit, "peer stopped answering; disconnecting");
            self.peer(peer).last_alive = now;
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn redial(&mut self) {
        self.drop_silent_peers();
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .peers
            .iter_mut()
            .filter(|(_, s)| s.connections == 0 && s.redial_at.is_some_and(|t| t <= now))
            .map(|(p, s)| {
                s.redial_at = Some(now + s.backoff);
                s.backoff = (s.backoff * 2).min(Duration::from_secs(30));
                *p
            })
            .collect();
        for peer in due {
            self.dial_peer(peer);
        }
        let mut anonymous = Vec::new();
        for b in self
            .bootstrap
            .iter_mut()
            .filter(|b| !b.done && b.next_try <= now)
        {
            b.next_try = now + b.backoff;
            b.backoff = (b.backoff * 2).min(Duration::from_secs(30));
            anonymous.push(b.addr.clone());
        }
        for addr in anonymous {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "bootstrap dial not started");
            }
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Runs the replicator: pushes due, the periodic catch-up; remembers when to run it next.
    fn poll_replication(&mut self) {
        let now = self.now();
        let (out, wake) = self.replication.poll(&self.cache, now);
        self.wake_at = wake.map(|w| self.epoch + w);
        self.send_all(out);
    }

    fn send_all(&mut self, out: Vec<Outgoing<PeerId>>) {
        for o in out {
            if self.blocked.contains(&o.to) {
                self.replication.abandon_session(&o.to);
                continue;
            }
            self.send(o);
        }
    }

    /// Encodes and sends a request, stamped with our wall clock, recording what it was for.
    fn send(&mut self, o: Outgoing<PeerId>) {
        let limits = self.config.cache.sync_limits;
        let now = now_ms();
        let peer = o.to;
        let bytes = match o.msg.encode_at(&limits, now) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(%peer, error = %e, "cannot encode a sync message");
                let outcome = self.replication.on_reply(
                    &peer,
                    o.purpose,
                    Err(Failure::NotDelivered),
                    &mut self.cache,
                    self.epoch.elapsed(),
                );
                self.after_reply(peer, outcome);
                return;
            }
        };
        let entries = message_entries(&o.msg);
        let len = bytes.len() as u64;
        let id = self.swarm.behaviour_mut().sync.send_request(&peer, bytes);
        let state = self.peer(peer);
        state.bytes_sent += len;
        state.entries_sent += entries;
        self.pending.insert(
            id,
            Pending {
                purpose: o.purpose,
                sent_ms: now,
            },
        );
    }

    /// Sends what a reply made due, counts what it tells.
    fn after_reply(&mut self, peer: PeerId, outcome: ReplyOutcome<PeerId>) {
        if let Some(why) = outcome.protocol_error {
            self.refuse(peer, &why);
        }
        if let Some(stats) = outcome.session_done {
            self.counters.catchups += 1;
            if stats.full {
                self.counters.full_resyncs += 1;
                tracing::info!(%peer, entries = stats.entries_received, dropped = stats.dropped, "full resync done");
            } else if stats.entries_applied > 0 {
                tracing::debug!(%peer, applied = stats.entries_applied, "catch-up done");
            }
        }
        if let Some(stats) = outcome.antientropy_done {
            if stats.repaired() || stats.conflicts > 0 {
                tracing::warn!(
                    %peer,
                    differing_buckets = stats.differing_buckets,
                    repaired_here = stats.applied_here,
                    repaired_there = stats.applied_there,
                    entries_received = stats.entries_received,
                    entries_sent = stats.entries_sent,
                    conflicts = stats.conflicts,
                    "anti-entropy repaired a divergence the sync protocol had missed"
                );
            } else {
                tracing::debug!(%peer, compared = stats.compared, "anti-entropy exchange done");
            }
        }
        self.send_all(outcome.send);
        self.poll_wanted = true;
    }

    /// A reply to our request sent at `sent_ms`, stamped `peer_ms` by the peer (if it was).
    fn note_round_trip(&mut self, peer: PeerId, sent_ms: u64, peer_ms: Option<u64>) {
        if let Some(sample) =
            peer_ms.and_then(|peer_ms| OffsetSample::round_trip(sent_ms, peer_ms, now_ms()))
        {
            self.note_clock(peer, sample);
        }
    }

    /// Adds a clock-offset sample for `peer`, logging when the estimate crosses the warning
    /// threshold or moves a lot past it (not at every message).
    fn note_clock(&mut self, peer: PeerId, sample: OffsetSample) {
        let state = self.peer(peer);
        let notice = state.clock.add(sample);
        let (node, best) = (state.node_id, state.clock.best());
        let Some(best) = best else {
            return;
        };
        let node = node.map_or_else(|| "-".to_string(), |n| n.to_string());
        let error_ms = best
            .error_ms
            .map_or_else(|| "unknown".to_string(), |e| e.to_string());
        match notice {
            Some(SkewNotice::Skewed) => tracing::warn!(
                %peer,
                node,
                clock_offset_ms = best.offset_ms,
                error_ms,
                "peer's clock differs from ours by more than {} ms (positive: it is ahead); \
                 TTLs expire by each node's own clock, so this node and the peer expire keys \
                 at different moments; while a node is ahead its writes win conflicts. Sync \
                 the clocks (NTP)",
                SKEW_WARN_MS
            ),
            Some(SkewNotice::Recovered) => tracing::info!(
                %peer,
                node,
                clock_offset_ms = best.offset_ms,
                "peer's clock is back in step with ours"
            ),
            None => {}
        }
    }

    fn refuse(&mut self, peer: PeerId, why: &str) {
        self.counters.refused_messages += 1;
        self.peer(peer).refused += 1;
        tracing::warn!(%peer, why, "refused a sync message");
    }

    fn on_request(&mut self, peer: PeerId, request: Vec<u8>, channel: ResponseChannel<Vec<u8>>) {
        let per_sec = f64::from(self.config.max_requests_per_sec.max(1));
        let len = request.len() as u64;
        {
            let state = self.peer(peer);
            state.bytes_received += len;
            if !state.rate.allow(per_sec) {
                self.refuse(peer, "request rate over the limit");
                return; // dropping the channel tells the peer no
            }
        }
        let limits = self.config.cache.sync_limits;
        let msg = match SyncMessage::decode_timed(&request, &limits) {
            Ok((m, sent)) => {
                if let Some(sent) = sent {
                    self.note_clock(peer, OffsetSample::one_way(sent, now_ms()));
                }
                m
            }
            Err(e) => {
                self.refuse(peer, &e.to_string());
                return;
            }
        };
        self.set_member(peer, true);
        self.peer(peer).entries_received += message_entries(&msg);
        let local_id = self.cache.node_id();
        match &msg {
            SyncMessage::Request(req) => self.note_acked(peer, req.vv.get(local_id)),
            SyncMessage::Push(push) => self.note_acked(peer, push.sender_vv.get(local_id)),
            _ => {}
        }
        let reply = match self
            .replication
            .on_request(&peer, local_id, msg, &mut self.cache)
        {
            Ok(reply) => reply,
            Err(dice_core::Error::WritesRefused(why)) => {
                // Our store cannot commit: the peer sends it again later (no reply is a no).
                tracing::debug!(%peer, %why, "not taking a peer's writes while ours are refused");
                return;
            }
            Err(e) => {
                self.refuse(peer, &e.to_string());
                return;
            }
        };
        let bytes = match &reply {
            None => Vec::new(),
            Some(r) => match r.encode_at(&limits, now_ms()) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(%peer, error = %e, "cannot encode a reply");
                    return;
                }
            },
        };
        let entries = reply.as_ref().map_or(0, message_entries);
        let state = self.peer(peer);
        state.bytes_sent += bytes.len() as u64;
        state.entries_sent += entries;
        if self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, bytes)
            .is_err()
        {
            tracing::debug!(%peer, "peer went away before our reply");
        }
    }

    /// `peer` holds our own writes up to `seq` (its version vector says so).
    fn note_acked(&mut self, peer: PeerId, seq: u64) {
        self.acked.send_if_modified(|acked| {
            let known = acked.entry(peer).or_default();
            let raised = seq > *known;
            *known = (*known).max(seq);
            raised
        });
    }

    fn on_response(&mut self, peer: PeerId, id: OutboundRequestId, response: Vec<u8>) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        self.peer(peer).bytes_received += response.len() as u64;
        self.set_member(peer, true);
        let limits = self.config.cache.sync_limits;
        let reply = match SyncMessage::decode_timed(&response, &limits) {
            Ok((msg, sent)) => {
                self.note_round_trip(peer, pending.sent_ms, sent);
                self.peer(peer).entries_received += message_entries(&msg);
                if let SyncMessage::Ack(ack) = &msg {
                    self.note_acked(peer, ack.vv.get(self.cache.node_id()));
                }
                Ok(msg)
            }
            Err(e) => {
                self.refuse(peer, &e.to_string());
                Err(Failure::Malformed)
            }
        };
        let now = self.now();
        let outcome =
            self.replication
                .on_reply(&peer, pending.purpose, reply, &mut self.cache, now);
        self.after_reply(peer, outcome);
    }

    fn on_outbound_failure(
        &mut self,
        peer: PeerId,
        id: OutboundRequestId,
        error: request_response::OutboundFailure,
    ) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        // Not delivered (refused over the peer's rate, timed out, connection lost): the
        // replicator sends the same writes again after a pause; a session is dropped.
        let now = self.now();
        let outcome = self.replication.on_reply(
            &peer,
            pending.purpose,
            Err(Failure::NotDelivered),
            &mut self.cache,
            now,
        );
        self.after_reply(peer, outcome);
        if matches!(
            error,
            request_response::OutboundFailure::UnsupportedProtocols
        ) {
            let ours = sync_protocol(&self.config.cluster).unwrap_or_default();
            self.mark_foreign(
                peer,
                &format!(
                    "does not speak our sync protocol {ours}: another cluster, or a dice of \
                     another sync protocol version (this one speaks version {})",
                    dice_core::SYNC_PROTOCOL_VERSION
                ),
            );
        } else {
            tracing::debug!(%peer, %error, "sync request failed");
        }
    }

    fn mark_foreign(&mut self, peer: PeerId, why: &str) {
        self.counters.foreign_peers += 1;
        tracing::info!(%peer, why, "not a member of our cluster; disconnecting");
        self.set_member(peer, false);
        self.peer(peer).redial_at = None;
        self.known.remove(&peer);
        self.swarm.behaviour_mut().kad.remove_peer(&peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address);
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                let remote = endpoint.get_remote_address().clone();
                let (bare_remote, _) = split_peer_id(&remote);
                for b in &mut self.bootstrap {
                    if split_peer_id(&b.addr).0 == bare_remote {
                        b.done = true;
                    }
                }
                let state = self.peer(peer_id);
                state.connections = num_established.get() as usize;
                state.address = Some(bare_remote);
                state.redial_at = None;
                state.backoff = Duration::from_millis(250);
                state.last_alive = Instant::now();
                if num_established.get() == 1 {
                    tracing::info!(peer = %peer_id, address = %remote, "connected");
                    // Writes durable before now reach the peer through its catch-up with us,
                    // later ones by push; we catch up with it unless already catching up.
                    let out = self.replication.connected(peer_id, &self.cache);
                    self.send_all(out);
                    self.poll_wanted = true;
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                let blocked = self.blocked.contains(&peer_id);
                let known = self.known.addrs(&peer_id).is_some();
                let state = self.peer(peer_id);
                state.connections = num_established as usize;
                if num_established == 0 && !state.member && !known {
                    // A stranger (or a peer of another cluster): forget it, so that peers
                    // that connect and leave cannot grow this map without bound.
                    self.peers.remove(&peer_id);
                    self.replication.forget(&peer_id);
                    return;
                }
                if num_established == 0 {
                    if state.member && !blocked {
                        state.redial_at = Some(Instant::now() + state.backoff);
                    }
                    tracing::info!(peer = %peer_id, cause = ?cause.map(|c| c.to_string()), "disconnected");
                    self.replication.disconnected(&peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, %error, "dial failed");
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                // With a cluster key, a stranger fails here (pnet or noise handshake); without
                // one, a host beyond the local networks (logged, rate-limited, by `LanOnly`).
                self.counters.refused_connections += 1;
                if matches!(error, libp2p::swarm::ListenError::Denied { .. }) {
                    tracing::debug!(from = %send_back_addr, %error, "incoming connection refused");
                } else {
                    tracing::info!(from = %send_back_addr, %error, "incoming connection refused");
                }
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Sync(request_response::Event::Message { peer, message, .. }) => {
                self.peer(peer).last_alive = Instant::now();
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => self.on_request(peer, request, channel),
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => self.on_response(peer, request_id, response),
                }
            }
            BehaviourEvent::Sync(request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            }) => self.on_outbound_failure(peer, request_id, error),
            BehaviourEvent::Sync(request_response::Event::InboundFailure {
                peer, error, ..
            }) => {
                let refused = matches!(error, request_response::InboundFailure::Io(_));
                if refused {
                    self.refuse(peer, &error.to_string());
                } else {
                    tracing::debug!(%peer, %error, "inbound sync failure");
                }
            }
            BehaviourEvent::Sync(request_response::Event::ResponseSent { .. }) => {}
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocol_version != self.cluster_version {
                    self.mark_foreign(peer_id, "identifies as another cluster");
                    return;
                }
                let node_id = node_id_from_agent(&info.agent_version);
                let addrs: Vec<Multiaddr> = info
                    .listen_addrs
                    .iter()
                    .filter(|a| {
                        !a.iter()
                            .any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_unspecified()))
                    })
                    .cloned()
                    .collect();
                for a in &addrs {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, a.clone());
                }
                self.known.insert(peer_id, addrs);
                // Save now: a node killed right after meeting a peer must still find it again.
                self.known.save();
                self.set_member(peer_id, true);
                let state = self.peer(peer_id);
                state.node_id = node_id.or(state.node_id);
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (peer, addr) in found {
                    by_peer.entry(peer).or_default().push(addr);
                }
                for (peer, addrs) in by_peer {
                    if self.blocked.contains(&peer) || peer == *self.swarm.local_peer_id() {
                        continue;
                    }
                    // Remember the addresses and dial through the redial schedule: a first
                    // dial that fails (two nodes dialing each other at once, a slow start) is
                    // retried with backoff, as mDNS does not announce the same peer again.
                    self.known
                        .insert(peer, addrs.iter().map(|a| split_peer_id(a).0));
                    let state = self.peer(peer);
                    if state.connections == 0 && state.redial_at.is_none() {
                        state.redial_at = Some(Instant::now());
                    }
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, addresses, ..
            }) => {
                let connected = self.peers.get(&peer).is_some_and(|s| s.connections > 0);
                if !connected
                    && !self.blocked.contains(&peer)
                    && peer != *self.swarm.local_peer_id()
                {
                    self.known.insert(peer, addresses.iter().cloned());
                    self.set_member(peer, true);
                    self.peer(peer).redial_at = Some(Instant::now());
                }
            }
            BehaviourEvent::Gossipsub(event) => self.pubsub.on_event(event),
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(_),
                ..
            }) => {
                self.peer(peer).last_alive = Instant::now();
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Err(error),
                ..
            }) if !matches!(error, ping::Failure::Unsupported) => {
                tracing::info!(%peer, %error, "ping failed; disconnecting");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            _ => {}
        }
    }
}

fn message_entries(msg: &SyncMessage) -> u64 {
    match msg {
        SyncMessage::Page(p) => p.entries.len() as u64,
        SyncMessage::Push(p) => p.entries.len() as u64,
        SyncMessage::AntiEntropy(m) => m.entry_count() as u64,
        _ => 0,
    }
}
