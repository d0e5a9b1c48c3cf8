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
//! * [`frame`]: the length-prefixed framing itself, sans-IO.
//! * [`protocol`]: protocol names carrying the cluster name and version.
//! * [`keys`]: the persistent node identity and the cluster's pre-shared key.
//! * [`known_peers`]: peers remembered in the data directory and redialed after a restart.
//! * [`pubsub`]: Redis pub/sub messages carried to every node over gossipsub.
//!
//! Merge rules are not here: the network only moves bytes; dice-core decides.

pub mod codec;
mod event_loop;
pub mod frame;
pub mod keys;
pub mod known_peers;
pub mod lan_only;
pub mod node;
mod peers;
pub mod protocol;
pub mod pubsub;
mod swarm;

pub use libp2p::pnet::PreSharedKey;
pub use libp2p::{Multiaddr, PeerId};
pub use node::{Node, NodeBuilder, NodeConfig, NodeStatus, PeerStatus};

use std::path::PathBuf;

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The cache failed.
    #[error(transparent)]
    Core(#[from] dice_core::Error),
    /// The cluster name cannot be used.
    #[error(transparent)]
    ClusterName(#[from] protocol::InvalidClusterName),
    /// The cluster key file is missing or malformed.
    #[error("cluster key: {0}")]
    ClusterKey(String),
    /// The node identity file is unusable.
    #[error("node identity {path}: {reason}", path = .path.display())]
    Identity {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The transport could not be built.
    #[error("transport: {0}")]
    Transport(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}
