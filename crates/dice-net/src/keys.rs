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
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|source| NetError::Identity {
            path: path.clone(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|source| NetError::Identity {
                    path: path.clone(),
                    source,
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
            write().map_err(|source| NetError::File {
                action: "write the node identity",
                path: path.clone(),
                source,
            })?;
            Ok(key)
        }
        Err(source) => Err(NetError::File {
            action: "read the node identity",
            path,
            source,
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
        .map_err(NetError::ClusterKey)
}

/// Reads a cluster key file. A file that others may read is refused: anyone who can read
/// the key can join the cluster.
pub fn read_cluster_key(path: &Path) -> Result<PreSharedKey, NetError> {
    private_file_mode(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| NetError::File {
        action: "read the cluster key",
        path: path.to_path_buf(),
        source,
    })?;
    parse_cluster_key(&text)
}

/// Fails, with the command that fixes it, if `path` is readable or writable by group or
/// others.
pub fn check_private_file(path: &Path) -> Result<(), String> {
    private_file_mode(path).map_err(|e| match e {
        NetError::File { source, .. } => format!("reading {}: {source}", path.display()),
        other => other.to_string(),
    })
}

/// [`check_private_file`] as a [`NetError`].
fn private_file_mode(path: &Path) -> Result<(), NetError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| NetError::File {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(NetError::NotPrivate {
            path: path.to_path_buf(),
            mode,
        });
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
        .map_err(|source| NetError::File {
            action: "create the cluster key",
            path: path.to_path_buf(),
            source,
        })?;
    writeln!(f, "{}", generate_cluster_key())
        .and_then(|()| f.sync_all())
        .map_err(|source| NetError::File {
            action: "write the cluster key",
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Each error says what failed, and keeps why as its source.
    #[test]
    fn errors_keep_their_causes_as_sources() {
        use std::error::Error;
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.key");
        let e = read_cluster_key(&missing).unwrap_err();
        assert!(e.to_string().starts_with("cannot read "), "{e}");
        assert!(e.source().unwrap().is::<std::io::Error>());

        let key = dir.path().join("cluster.key");
        std::fs::write(&key, "not a key\n").unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let e = read_cluster_key(&key).unwrap_err();
        assert!(matches!(e, NetError::ClusterKey(_)), "{e}");
        assert!(e.source().is_some());

        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let e = read_cluster_key(&key).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");

        std::fs::write(dir.path().join(IDENTITY_FILE), b"garbage").unwrap();
        let e = load_or_create_identity(dir.path()).unwrap_err();
        assert!(matches!(e, NetError::Identity { .. }), "{e}");
        assert!(e.source().is_some());
    }
}
