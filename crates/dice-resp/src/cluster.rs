//! What the `INFO cluster` section says about the dice cluster, from whoever knows it.
//!
//! dice-resp does not know the network: the program that runs a dice-net node plugs it in
//! through [`ClusterInfo`]. The section always starts with `cluster_enabled:0` (dice is not a
//! Redis Cluster: every node holds every key, so cluster-aware clients must not try to
//! redirect), then the provider's lines; with no provider, the cache's digest. The same
//! provider tells `WAIT` how many peers acknowledged a write.

/// A source of `INFO cluster` lines, such as a dice-net node.
///
/// ```
/// use dice_resp::ClusterInfo;
/// struct Peers;
/// impl ClusterInfo for Peers {
///     fn cluster_lines(&self) -> Vec<String> {
///         vec![
///             "dice_peers:1".into(),
///             "dice_peer0:id=12D3KooW...,addr=/ip4/127.0.0.1/tcp/4001,lag=0".into(),
///             "dice_digest:00000000deadbeef".into(),
///         ]
///     }
/// }
/// // Closures work too.
/// let info = || vec!["dice_peers:0".to_string()];
/// assert_eq!(info.cluster_lines(), ["dice_peers:0"]);
/// ```
pub trait ClusterInfo: Send + Sync {
    /// The section's lines after `cluster_enabled:0`, each `field:value` with no line ending
    /// (any CR or LF is replaced by a space): the peers with their id, address and lag, and
    /// the digest, for instance.
    fn cluster_lines(&self) -> Vec<String>;

    /// How many peers acknowledged holding this node's own writes up to `seq` (the
    /// [`dice_core::Entry::seq`] of a local write): Redis's `WAIT` answers it, polling until
    /// enough have or its timeout passes. The default, for a provider that knows no peers,
    /// is 0.
    fn acked_by(&self, seq: u64) -> usize {
        let _ = seq;
        0
    }
}

impl<F> ClusterInfo for F
where
    F: Fn() -> Vec<String> + Send + Sync,
{
    fn cluster_lines(&self) -> Vec<String> {
        self()
    }
}
