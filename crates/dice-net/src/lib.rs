//! dice-net: how dice nodes talk.
//!
//! This crate will own the libp2p swarm (TCP + Noise + Yamux, mDNS, Kademlia, identify,
//! ping and the sync protocol). What is here today is the part the swarm will stand on:
//!
//! * [`protocol`]: protocol names that carry the cluster name and the protocol version, so two
//!   clusters on one LAN never exchange data.
//! * [`frame`]: the length-prefixed framing of sync messages on a stream, with a size bound
//!   checked before any buffering.

pub mod frame;
pub mod protocol;
