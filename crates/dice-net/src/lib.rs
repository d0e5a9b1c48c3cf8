//! dice-net: dice nodes over libp2p.
//!
//! A [`Node`] is a [`dice_core::Cache`] plus a libp2p swarm: TCP + Noise + Yamux (optionally
//! inside a pre-shared-key private network), mDNS to find peers on the LAN, Kademlia to find
//! them through bootstrap peers, identify and ping to know who is there and who stopped
//! answering, and the dice sync protocol to push new writes and catch up on missed ones.
//!
//! # A tour of the modules
//!
//! * [`node`]: [`NodeBuilder`], [`Node`] (the cloneable handle) and its status types.
//! * `event_loop`: the task that owns the swarm and only translates: swarm events and
//!   commands in, calls on the peer table, the replicator (dice-core) and the cache, and
//!   messages out.
//! * `peers`: the peer table: connections, traffic, one redial backoff for peers and
//!   bootstrap addresses, liveness, the per-peer request rate limit. No I/O.
//! * `swarm`: behaviour and swarm setup: transport, protocols, identify names.
//! * [`codec`]: the request-response codec: one bounded, length-prefixed frame per message.
//! * [`frame`]: the length-prefixed framing itself: one bounded frame read or written.
//! * [`protocol`]: protocol names carrying the cluster name and version.
//! * [`keys`]: the persistent node identity and the cluster's pre-shared key.
//! * [`known_peers`]: peers remembered in the data directory and redialed after a restart.
//! * [`discovery`]: mDNS, queried less often as the cluster grows.
//! * [`liveness`]: pings, less often per connection as a node holds more connections.
//! * [`pubsub`]: Redis pub/sub messages carried to every node over gossipsub.
//! * [`gossip`]: writes spread by gossipsub past `--max-peers` (an epidemic broadcast).
//!
//! Merge rules are not here: the network only moves bytes; dice-core decides.

pub mod codec;
pub mod discovery;
mod event_loop;
pub mod frame;
pub mod gossip;
pub mod keys;
pub mod known_peers;
pub mod lan_only;
pub mod liveness;
pub mod node;
mod peers;
mod profile;
pub mod protocol;
pub mod pubsub;
mod swarm;

pub use libp2p::pnet::PreSharedKey;
pub use libp2p::{Multiaddr, PeerId};
pub use node::{
    DEFAULT_MAX_PEERS, Node, NodeBuilder, NodeConfig, NodeStatus, PeerStatus, dial_target,
};

use std::path::PathBuf;

/// A cause of a [`NetError`] from a library, kept as the error's source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the network layer. Each keeps its cause as its [`std::error::Error::source`]
/// (the message says what failed; the source says why), so that a report prints each once.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The cache failed.
    #[error(transparent)]
    Core(#[from] dice_core::Error),
    /// The cluster name cannot be used.
    #[error(transparent)]
    ClusterName(#[from] protocol::InvalidClusterName),
    /// A file of the node (its identity, a cluster key) could not be read or written.
    #[error("cannot {action} {path}", path = .path.display())]
    File {
        /// What was being done: "read the cluster key", "write the node identity", ...
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A secret file (a cluster key) that other users may read or write.
    #[error(
        "{path} is accessible by other users (mode {mode:o}); a secret must be readable by \
         its owner only: run `chmod 600 {path}`",
        path = .path.display()
    )]
    NotPrivate {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The cluster key is not a libp2p pre-shared key (`dice keygen` makes one).
    #[error("not a cluster key (a libp2p pre-shared key, as `dice keygen` writes)")]
    ClusterKey(#[source] libp2p::pnet::KeyParseError),
    /// The node identity file is not a libp2p keypair.
    #[error("node identity {path} is not a libp2p keypair", path = .path.display())]
    Identity {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: libp2p::identity::DecodingError,
    },
    /// A part of the transport could not be built.
    #[error("cannot build the {part}")]
    Transport {
        /// Which part: "transport", "swarm behaviours", "sync protocol name".
        part: &'static str,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The listeners did not report their addresses in time.
    #[error("timed out binding the listen addresses")]
    ListenTimeout,
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}
