//! Protocol names: `/dice/<cluster>/sync/<version>`.

use dice_core::SYNC_PROTOCOL_VERSION;

/// Longest cluster name accepted.
pub const MAX_CLUSTER_NAME_LEN: usize = 64;

/// A cluster name that cannot go in a protocol name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cluster name {0:?}: use 1 to 64 characters among a-z, A-Z, 0-9, '-', '_' and '.'")]
pub struct InvalidClusterName(pub String);

/// The sync protocol name of a cluster.
///
/// ```
/// assert_eq!(dice_net::protocol::sync_protocol("default").unwrap(), "/dice/default/sync/7");
/// assert!(dice_net::protocol::sync_protocol("a/b").is_err());
/// ```
pub fn sync_protocol(cluster: &str) -> Result<String, InvalidClusterName> {
    let valid = !cluster.is_empty()
        && cluster.len() <= MAX_CLUSTER_NAME_LEN
        && cluster
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Err(InvalidClusterName(cluster.to_owned()));
    }
    Ok(format!("/dice/{cluster}/sync/{SYNC_PROTOCOL_VERSION}"))
}
