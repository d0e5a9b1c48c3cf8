//! What the connections of one server share: the cache, the configuration, the client
//! registry, the counters of `INFO stats`, pub/sub and tracking tables, `CLIENT PAUSE`.

use crate::cluster::ClusterInfo;
use crate::config::RespConfig;
use crate::frame::FrameLimits;
use crate::pubsub::Hub;
use crate::registry::ClientEntry;
use crate::tracking::Tracking;
use dice_core::Cache;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};

/// What every connection of one server shares.
pub(crate) struct ServerState {
    pub cache: Cache,
    pub config: RespConfig,
    pub cluster: Option<Arc<dyn ClusterInfo>>,
    pub started: Instant,
    /// `INFO`'s `run_id` (40 hex digits, as in Redis): a 128-bit hash, new at every start.
    pub run_id: u128,
    pub port: u16,
    pub(crate) frame_limits: FrameLimits,
    pub(crate) clients: Arc<Semaphore>,
    pub(crate) max_permits: usize,
    pub(crate) next_client_id: AtomicU64,
    /// Bytes of partial requests charged against [`RespConfig::max_input_buffer_total`].
    pub(crate) input_buffered: AtomicUsize,
    pub stats: Stats,
    pub(crate) auth_log: Mutex<AuthLog>,
    /// Redis's `timeout` in milliseconds, changed at run time by `CONFIG SET timeout`.
    pub timeout_ms: AtomicU64,
    /// Every connected client, by id (`CLIENT LIST`, `CLIENT KILL`).
    pub registry: Mutex<BTreeMap<u64, Arc<ClientEntry>>>,
    /// Set by `SHUTDOWN`: the process that owns the server should stop the node.
    pub shutdown_requests: watch::Sender<bool>,
    /// Who listens to which channel.
    pub pubsub: Arc<Hub>,
    /// `notify-keyspace-events`, as flags (`CONFIG SET` changes it).
    pub keyspace_events: watch::Sender<u32>,
    /// Hands the keyspace notifier a subscription to the cache's changes.
    pub keyspace_subscribe:
        tokio::sync::mpsc::UnboundedSender<tokio::sync::broadcast::Receiver<dice_core::Event>>,
    /// Client-side caching: who may hold which key.
    pub tracking: Arc<Tracking>,
    /// `CLIENT PAUSE`: until when, and which commands.
    pub pause: watch::Sender<Pause>,
}

/// A `CLIENT PAUSE` in force (or none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pause {
    /// Until when commands wait (`None`: no pause).
    pub until: Option<tokio::time::Instant>,
    /// Every command waits (`ALL`), or only those that write (`WRITE`).
    pub all: bool,
}

/// Counters shown by `INFO stats`.
#[derive(Default)]
pub(crate) struct Stats {
    pub connections_received: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub auth_failures: AtomicU64,
    pub auth_disconnects: AtomicU64,
    pub idle_timeouts: AtomicU64,
    pub input_budget_refusals: AtomicU64,
    pub output_stalls: AtomicU64,
    pub commands_processed: AtomicU64,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
}

impl Stats {
    /// `CONFIG RESETSTAT`: every counter back to zero.
    pub fn reset(&self) {
        for c in [
            &self.connections_received,
            &self.rejected_connections,
            &self.auth_failures,
            &self.auth_disconnects,
            &self.idle_timeouts,
            &self.input_budget_refusals,
            &self.output_stalls,
            &self.commands_processed,
            &self.net_input_bytes,
            &self.net_output_bytes,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// Rate limit of the failed-`AUTH` warning: at most one per [`AUTH_LOG_EVERY`].
#[derive(Default)]
pub(crate) struct AuthLog {
    last: Option<Instant>,
    unlogged: u64,
}

/// At most one failed-`AUTH` warning per this period, with the count since the last one.
pub(crate) const AUTH_LOG_EVERY: Duration = Duration::from_secs(1);

impl AuthLog {
    /// Records a failure at `now`; `Some(failures since the last warning, this one
    /// included)` when a warning is due.
    fn record(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < AUTH_LOG_EVERY)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

impl ServerState {
    /// Clients connected now.
    pub fn connected_clients(&self) -> usize {
        self.max_permits - self.clients.available_permits()
    }

    /// Bytes of partial requests held now, past each client's allowance.
    pub fn input_buffered(&self) -> usize {
        self.input_buffered.load(Ordering::Relaxed)
    }

    /// Counts a failed `AUTH` (or `HELLO ... AUTH`) from `peer`, and logs it unless a warning
    /// went out less than [`AUTH_LOG_EVERY`] ago (the next one carries the count).
    pub fn auth_failed(&self, peer: SocketAddr) {
        let total = self.stats.auth_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut log) = self.auth_log.lock() else {
            return;
        };
        if let Some(count) = log.record(Instant::now()) {
            tracing::warn!(
                %peer,
                failures_since_last_warning = count,
                total,
                "failed AUTH: wrong password or user"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{AuthLog, Duration, Instant};

    #[test]
    fn auth_warnings_are_rate_limited() {
        let mut log = AuthLog::default();
        let t0 = Instant::now();
        assert_eq!(log.record(t0), Some(1), "the first failure is logged");
        for i in 1..=5 {
            assert_eq!(log.record(t0 + Duration::from_millis(i * 100)), None);
        }
        assert_eq!(
            log.record(t0 + Duration::from_millis(1000)),
            Some(6),
            "the next warning carries the failures it stood for"
        );
        assert_eq!(log.record(t0 + Duration::from_millis(1500)), None);
        assert_eq!(log.record(t0 + Duration::from_millis(2100)), Some(2));
    }
}
