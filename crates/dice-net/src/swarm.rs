//! Behaviour and swarm setup: the transport (TCP, optional pre-shared key, noise, yamux), the
//! protocols a node speaks (sync, Kademlia, identify, ping, mDNS, gossipsub, the LAN gate), and
//! the names it identifies itself and its cluster by.

use crate::NetError;
use crate::codec::FrameCodec;
use crate::lan_only::LanOnly;
use crate::node::NodeConfig;
use dice_core::NodeId;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::upgrade::Version;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::PnetConfig;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    Multiaddr, StreamProtocol, Swarm, Transport, allow_block_list, identify, kad, noise, tcp, yamux,
};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Every protocol of a node.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) lan_only: LanOnly,
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) sync: request_response::Behaviour<FrameCodec>,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: crate::liveness::Liveness,
    pub(crate) mdns: crate::discovery::Mdns,
    pub(crate) gossipsub: libp2p::gossipsub::Behaviour,
}

/// Fails with a clear error if a TCP listen address's port is taken. libp2p listens with
/// SO_REUSEPORT (to dial from its listening port), so a second node on a taken port would
/// otherwise start and share it silently. A plain bind, without that option, finds out.
pub(crate) fn check_port_free(addr: &Multiaddr) -> Result<(), NetError> {
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
            source: if e.kind() == std::io::ErrorKind::AddrInUse {
                Box::new(PortInUse { port, source: e })
            } else {
                Box::new(e)
            },
        }),
    }
}

/// A listen port another process holds.
#[derive(Debug, thiserror::Error)]
#[error(
    "port {port} is already in use (another dice node on this host?); pick another with --listen"
)]
pub(crate) struct PortInUse {
    port: u16,
    #[source]
    source: std::io::Error,
}

/// The identify protocol version of a cluster: peers announcing another are not members.
pub(crate) fn cluster_version(cluster: &str) -> String {
    format!("/dice/{cluster}/1")
}

/// The identify agent string: dice's version and the node id.
pub(crate) fn agent_version(node_id: NodeId) -> String {
    format!("dice/{} node/{node_id}", env!("CARGO_PKG_VERSION"))
}

/// The node id in a peer's agent string.
pub(crate) fn node_id_from_agent(agent: &str) -> Option<NodeId> {
    agent
        .split_whitespace()
        .find_map(|part| part.strip_prefix("node/"))
        .and_then(|id| id.parse().ok())
}

/// Builds the swarm of a node (listening is left to the caller).
pub(crate) fn build_swarm(
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
    let ping_base = crate::profile::interval("ping", config.ping_interval);
    let ping_timeout = config.ping_timeout;
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
        .map_err(|e| NetError::Transport {
            part: "transport",
            source: Box::new(e),
        })?
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let kad_protocol = StreamProtocol::try_from_owned(format!("/dice/{cluster}/kad/1"))?;
            let mut kad_cfg = kad::Config::new(kad_protocol);
            // Bootstraps run on the event loop's own schedule (`KAD_BOOTSTRAP_*`), which
            // depends on how connected the node is.
            kad_cfg.set_periodic_bootstrap_interval(None);
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad_cfg,
            );
            kad.set_mode(Some(kad::Mode::Server));
            // Queries less often as the cluster grows (`crate::discovery`).
            let mdns = crate::discovery::Mdns::new(mdns_on, peer_id)?;
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
                        .with_interval(crate::profile::interval(
                            "identify",
                            Duration::from_secs(60),
                        )),
                ),
                ping: crate::liveness::Liveness::new(ping_base, ping_timeout),
                mdns,
                gossipsub: crate::pubsub::behaviour(key, &cluster, max_message, max_frame)?,
            })
        })
        .map_err(|e| NetError::Transport {
            part: "swarm's protocols",
            source: Box::new(e),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(24 * 3600)))
        .build();
    Ok(swarm)
}
