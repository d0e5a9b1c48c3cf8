//! Peers this node has met, saved in the data directory and redialed after a restart.

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File of known peers inside the data directory.
pub const KNOWN_PEERS_FILE: &str = "peers.json";
/// At most this many peers and addresses per peer are remembered.
const MAX_PEERS: usize = 256;
const MAX_ADDRS: usize = 8;

#[derive(Serialize, Deserialize, Default)]
struct File {
    peers: BTreeMap<String, Vec<String>>,
}

/// The peers of our cluster we have talked to, with their listen addresses.
#[derive(Debug, Default)]
pub struct KnownPeers {
    path: PathBuf,
    peers: BTreeMap<PeerId, Vec<Multiaddr>>,
    dirty: bool,
}

impl KnownPeers {
    /// Loads the file in `dir`; a missing or unreadable file gives an empty list (logged).
    pub fn load(dir: &Path) -> KnownPeers {
        let path = dir.join(KNOWN_PEERS_FILE);
        let mut known = KnownPeers {
            path: path.clone(),
            ..KnownPeers::default()
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return known,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read known peers");
                return known;
            }
        };
        match serde_json::from_str::<File>(&text) {
            Ok(file) => {
                for (peer, addrs) in file.peers.into_iter().take(MAX_PEERS) {
                    let Ok(peer) = peer.parse::<PeerId>() else {
                        continue;
                    };
                    let addrs: Vec<Multiaddr> = addrs
                        .iter()
                        .filter_map(|a| a.parse().ok())
                        .take(MAX_ADDRS)
                        .collect();
                    if !addrs.is_empty() {
                        known.peers.insert(peer, addrs);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring a malformed known peers file");
            }
        }
        known
    }

    /// Remembers `peer` at `addrs`.
    pub fn insert(&mut self, peer: PeerId, addrs: impl IntoIterator<Item = Multiaddr>) {
        let mut addrs: Vec<Multiaddr> = addrs.into_iter().take(MAX_ADDRS).collect();
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() || self.peers.get(&peer) == Some(&addrs) {
            return;
        }
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            return;
        }
        self.peers.insert(peer, addrs);
        self.dirty = true;
    }

    /// Forgets `peer`.
    pub fn remove(&mut self, peer: &PeerId) {
        if self.peers.remove(peer).is_some() {
            self.dirty = true;
        }
    }

    /// The known peers and their addresses.
    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &Vec<Multiaddr>)> {
        self.peers.iter()
    }

    /// The addresses of `peer`.
    pub fn addrs(&self, peer: &PeerId) -> Option<&Vec<Multiaddr>> {
        self.peers.get(peer)
    }

    /// Writes the file if anything changed (atomically: temp file, then rename).
    pub fn save(&mut self) {
        if !self.dirty {
            return;
        }
        let file = File {
            peers: self
                .peers
                .iter()
                .map(|(p, a)| (p.to_string(), a.iter().map(|a| a.to_string()).collect()))
                .collect(),
        };
        let tmp = self.path.with_extension("json.tmp");
        let result = serde_json::to_vec_pretty(&file)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        match result {
            Ok(()) => self.dirty = false,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot save known peers")
            }
        }
    }
}
