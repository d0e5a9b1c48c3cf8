//! Keys kept in the data directory: the node's libp2p identity, and the cluster's pre-shared
//! key (libp2p private network) read from a file.

use crate::NetError;
use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;
use std::io::Write;
use std::path::Path;

/// File of the node's libp2p keypair inside the data directory.
pub const IDENTITY_FILE: &str = "node.key";

/// Loads the node's keypair from `dir`, creating (and saving, mode 0600) one if absent, so a
/// node keeps its peer id across restarts.
pub fn load_or_create_identity(dir: &Path) -> Result<Keypair, NetError> {
    let path = dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| NetError::Identity {
            path: path.clone(),
            reason: format!("not a libp2p keypair: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| NetError::Identity {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let tmp = path.with_extension("tmp");
            let write = || -> std::io::Result<()> {
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)
            };
            write().map_err(|e| NetError::Identity {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            Ok(key)
        }
        Err(e) => Err(NetError::Identity {
            path,
            reason: e.to_string(),
        }),
    }
}

/// A new random cluster key, in the libp2p `swarm.key` text format.
///
/// ```
/// let text = dice_net::keys::generate_cluster_key();
/// assert!(dice_net::keys::parse_cluster_key(&text).is_ok());
/// ```
pub fn generate_cluster_key() -> String {
    PreSharedKey::new(rand::random::<[u8; 32]>()).to_string()
}

/// Parses a cluster key in the `swarm.key` text format.
pub fn parse_cluster_key(text: &str) -> Result<PreSharedKey, NetError> {
    text.trim()
        .parse::<PreSharedKey>()
        .map_err(|e| NetError::ClusterKey(e.to_string()))
}

/// Reads a cluster key file. A file that others may read is refused: anyone who can read
/// the key can join the cluster.
pub fn read_cluster_key(path: &Path) -> Result<PreSharedKey, NetError> {
    check_private_file(path).map_err(NetError::ClusterKey)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| NetError::ClusterKey(format!("reading {}: {e}", path.display())))?;
    parse_cluster_key(&text)
}

/// Fails, with the command that fixes it, if `path` is readable or writable by group or
/// others.
pub fn check_private_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is accessible by other users (mode {mode:o}); a secret must be readable by its \
             owner only: run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// Writes a new cluster key to `path` (mode 0600), refusing to overwrite a file.
pub fn write_new_cluster_key(path: &Path) -> Result<(), NetError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| NetError::ClusterKey(format!("creating {}: {e}", path.display())))?;
    writeln!(f, "{}", generate_cluster_key())
        .and_then(|()| f.sync_all())
        .map_err(|e| NetError::ClusterKey(format!("writing {}: {e}", path.display())))
}
