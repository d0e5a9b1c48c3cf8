//! A dice node: a [`Cache`] plus a libp2p swarm that finds peers and keeps them converged.
//!
//! One task (the event loop) owns the `Swarm`; the [`Node`] handle talks to it over a bounded
//! channel. Reads and writes go straight to the cache; the event loop learns of local writes
//! through the cache's change subscription and pushes them to peers in batches.

use crate::NetError;
use crate::event_loop::EventLoop;
use crate::keys::load_or_create_identity;
use crate::protocol::sync_protocol;
use crate::pubsub::{PubSub, PubSubLoop};
use crate::swarm::{build_swarm, check_port_free};
use bytes::Bytes;
use dice_core::{Cache, CacheOptions, CacheStats, Entry, NodeId};
use futures::StreamExt;
use libp2p::pnet::PreSharedKey;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Default bound on a node's connections (`--max-peers`).
///
/// A full mesh is the fastest way for a write to reach everyone (its origin pushes it to each
/// member directly), and up to about 32 nodes it is cheap: 0.78 % of a core idle per node at
/// 32 nodes (`BENCHMARKS.md`, "Scale"). Per-connection work (liveness, identify, gossipsub
/// heartbeats, one push per write) grows with connections, so past that a node keeps at most
/// this many and reaches the rest of the cluster through its neighbours (catch-up serves
/// every origin's writes, so it is transitive). A node dials peers only while it has fewer
/// than three quarters of this bound ([`dial_target`]); the last quarter is left for peers
/// that dial it, so a newcomer always finds nodes that take it. Clusters of up to 25 nodes
/// stay a full mesh with the default.
pub const DEFAULT_MAX_PEERS: usize = 32;

/// How many connections a node with a bound of `max_peers` dials up to: three quarters of
/// the bound (at least 1). See [`DEFAULT_MAX_PEERS`].
pub fn dial_target(max_peers: usize) -> usize {
    (max_peers - max_peers / 4).max(1)
}

/// Default libp2p listen address.
pub const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/7380";

/// [`DEFAULT_LISTEN`] as a [`Multiaddr`].
fn default_listen() -> Multiaddr {
    Multiaddr::empty()
        .with(libp2p::multiaddr::Protocol::Ip4(
            std::net::Ipv4Addr::UNSPECIFIED,
        ))
        .with(libp2p::multiaddr::Protocol::Tcp(7380))
}

/// Everything a node is started with. Build it with [`NodeBuilder`].
#[derive(Clone, Debug)]
#[non_exhaustive]
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
    /// Ping period (default 5 s); a peer that misses one ping timeout is disconnected, and
    /// one silent for a period plus the timeout plus 1 s (9 s by default) too. Pings are
    /// per connection, so in a full mesh their cost grows with the cluster: at 1 s they
    /// were most of a node's idle CPU (`BENCHMARKS.md`, "Scale").
    pub ping_interval: Duration,
    /// How long a ping may take (default 3 s).
    pub ping_timeout: Duration,
    /// Inbound sync requests allowed per peer per second (burst: twice that). Default 5000; a
    /// dice sender paces its pushes to at most one per peer per 250 µs, under it.
    pub max_requests_per_sec: u32,
    /// How often to run an anti-entropy exchange with the next connected member (default
    /// 30 s): see `dice_core::antientropy`.
    pub antientropy_interval: Duration,
    /// Most connected peers (default [`DEFAULT_MAX_PEERS`], at least 1): a connection past
    /// it is closed as soon as it opens, and the node dials only while it has fewer than
    /// [`dial_target`] of it.
    pub max_peers: usize,
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
                ping_interval: Duration::from_secs(5),
                ping_timeout: Duration::from_secs(3),
                max_requests_per_sec: 5000,
                antientropy_interval: Duration::from_secs(30),
                max_peers: DEFAULT_MAX_PEERS,
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

    /// Sets the most peers connected at once (0 counts as 1; see [`NodeConfig::max_peers`]).
    pub fn max_peers(mut self, n: usize) -> Self {
        self.config.max_peers = n.max(1);
        self
    }

    /// Gives direct access to the whole configuration.
    pub fn config_mut(&mut self) -> &mut NodeConfig {
        &mut self.config
    }

    /// Opens the cache, starts the swarm and its event loop, and waits until it listens.
    pub async fn start(mut self) -> Result<Node, NetError> {
        if !self.explicit_listen {
            self.config.listen = vec![default_listen()];
        }
        Node::start(self.config).await
    }
}

/// What a node knows about one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
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
    /// Connections refused (before their handshake) or closed as soon as they opened
    /// because this node already had its `--max-peers` connected peers.
    pub closed_over_max_peers: u64,
    /// Dials to peers not connected (Kademlia's queries) refused before they started,
    /// because this node had its `--max-peers` connected peers.
    pub dials_refused_at_bound: u64,
    /// Incoming connections refused because they came from outside the local networks (no
    /// cluster key is set).
    pub refused_not_local: u64,
    /// Catch-up sessions completed.
    pub catchups: u64,
    /// Connections established that this node dialed, since start (including those closed
    /// at once at either side's `--max-peers`).
    pub connections_opened_outbound: u64,
    /// Connections established that a peer dialed, since start (including those closed at
    /// once at this node's `--max-peers`).
    pub connections_opened_inbound: u64,
    /// The writes' gossip past `--max-peers` (see [`crate::gossip`]).
    pub gossip: crate::gossip::GossipStats,
}

/// What the [`Node`] handle asks of the event loop.
pub(crate) enum Command {
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

impl Node {
    async fn start(config: NodeConfig) -> Result<Node, NetError> {
        let protocol =
            StreamProtocol::try_from_owned(sync_protocol(&config.cluster)?).map_err(|e| {
                NetError::Transport {
                    part: "sync protocol name",
                    source: Box::new(e),
                }
            })?;
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
                    source: Box::new(e),
                })?;
        }
        // Wait until every listener is bound, so the caller can read the actual ports.
        let mut listen_addrs = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while listen_addrs.len() < config.listen.len() {
            let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
                .await
                .map_err(|_| NetError::ListenTimeout)?;
            match event {
                SwarmEvent::NewListenAddr { address, .. } => listen_addrs.push(address),
                SwarmEvent::ListenerError { error, .. } => {
                    return Err(NetError::Transport {
                        part: "listener",
                        source: Box::new(error),
                    });
                }
                SwarmEvent::ListenerClosed {
                    addresses, reason, ..
                } => {
                    return Err(NetError::Listen {
                        addr: addresses.first().cloned().unwrap_or_else(Multiaddr::empty),
                        source: match reason {
                            Err(e) => Box::new(e),
                            Ok(()) => "the listener closed".into(),
                        },
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
        let event_loop = EventLoop::new(
            cache.clone(),
            swarm,
            rx,
            config,
            listen_addrs,
            denied_not_local,
            pubsub_loop,
            acked_tx,
        );
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_listen_address_is_the_documented_one() {
        assert_eq!(super::default_listen().to_string(), super::DEFAULT_LISTEN);
    }
}
