//! How a RESP server behaves: [`RespConfig`], with a documented default for every field,
//! and the [`CommandObserver`] hook for metrics.

use crate::frame::FrameLimits;
use dice_core::Cache;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How the RESP port behaves. Every field has a documented default.
#[derive(Clone)]
#[non_exhaustive]
pub struct RespConfig {
    /// The password of the `default` user (Redis's `requirepass`). When set, a client must
    /// `AUTH` (or `HELLO 2 AUTH default <password>`) before anything but `AUTH`, `HELLO` and
    /// `QUIT`. Default: none.
    pub requirepass: Option<String>,
    /// Most clients connected at once (default 10 000). Past it a new client gets
    /// `-ERR max number of clients reached` and is disconnected.
    pub max_clients: usize,
    /// Largest bulk string in a request (default: the cache's largest key or value, plus
    /// 4 KiB).
    pub max_bulk_len: Option<usize>,
    /// Most arguments in one request (default 1024 * 1024).
    pub max_args: usize,
    /// Longest inline command (default 64 KiB).
    pub max_inline_len: usize,
    /// Most bytes buffered for one request before it completes (default 128 MiB).
    pub max_request_len: usize,
    /// Most bytes that the partial requests of all clients together may hold (default
    /// 1 GiB). Each client's first [`INPUT_ALLOWANCE`](crate::server::INPUT_ALLOWANCE) bytes are not counted, so small
    /// requests are always served; a client whose buffer would take the total past the budget
    /// gets `-ERR Protocol error: ... budget ...` and is disconnected (logged).
    pub max_input_buffer_total: usize,
    /// Close a client that sent nothing for this long (Redis's `timeout`; default zero:
    /// never).
    pub timeout: Duration,
    /// Disconnect a client whose pending replies (at most [`OUTPUT_FLUSH_AT`](crate::server::OUTPUT_FLUSH_AT) plus one
    /// element, since a connection stops answering until the socket takes them) make no
    /// way onto the socket for this long: a client that does not read (default 60 s; zero:
    /// never). Logged.
    pub output_stall_timeout: Duration,
    /// How long a shutdown waits for connections to finish the batch they are answering
    /// (a client that does not read its replies can hold one up) before it drops them
    /// (default 10 s).
    pub shutdown_timeout: Duration,
    /// Most bytes of replies one `EXEC` may produce (default 64 MiB). An `EXEC` holds the
    /// cache's lock while it runs, so its replies cannot be streamed: a queued command whose
    /// reply would pass this answers an error instead (and does not write), and the others
    /// still run, as Redis runs a transaction past a command's error. The queued commands
    /// themselves are bounded by `max_request_len` together.
    pub max_exec_reply: usize,
    /// Most channels plus patterns one connection may subscribe to (default 10 000). Past
    /// it, `SUBSCRIBE`/`PSUBSCRIBE` answer an error and subscribe to none of their names.
    pub max_subscriptions_per_client: usize,
    /// Most subscriptions of all connections together (default 1 000 000).
    pub max_subscriptions_total: usize,
    /// Longest channel name or pattern, in `SUBSCRIBE`, `PSUBSCRIBE` and `PUBLISH` (default
    /// 4 KiB, like keys).
    pub max_channel_len: usize,
    /// Most bytes of messages queued for one subscriber and not yet written to its socket
    /// (default 32 MiB, Redis's pubsub `client-output-buffer-limit`; each message counts its
    /// channel, pattern and payload plus 64 bytes). A subscriber past it is disconnected
    /// (logged, `dice_pubsub_output_disconnects` in `INFO stats`).
    pub pubsub_output_limit: usize,
    /// Most keys the client-tracking table remembers for all clients together (Redis's
    /// `tracking-table-max-keys`, default 1 000 000; 0: no bound on the count, the bytes
    /// bound still holds). Past it the oldest keys are dropped and their clients told, as if
    /// the keys had changed. `CONFIG SET tracking-table-max-keys` changes it at run time.
    pub tracking_table_max_keys: usize,
    /// Most bytes the client-tracking table takes (keys, client ids and 64 bytes per key;
    /// default 256 MiB): the same eviction past it.
    pub tracking_table_max_bytes: usize,
    /// Most prefixes one client names in `CLIENT TRACKING ON BCAST PREFIX ...` (default
    /// 1 000).
    pub max_tracking_prefixes_per_client: usize,
    /// Most distinct tracking prefixes of all clients together (default 100 000).
    pub max_tracking_prefixes_total: usize,
    /// Told of every command run, with its duration (for metrics; default none).
    pub command_observer: Option<Arc<dyn CommandObserver>>,
    /// Reads the allocator's own figures for `INFO memory` (`allocator_allocated`,
    /// `allocator_active`, `allocator_resident` and their ratios, as Redis shows jemalloc's);
    /// the program that chose the allocator knows how (default none: the lines are left out).
    pub allocator_stats: Option<fn() -> Option<AllocatorStats>>,
}

/// The allocator's figures, in bytes (jemalloc's `stats.allocated`, `stats.active`,
/// `stats.resident`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Bytes the program holds in allocations.
    pub allocated: usize,
    /// Bytes of the pages those allocations are on (allocated plus what is free within them).
    pub active: usize,
    /// Bytes the allocator holds resident: active pages, its metadata, and freed pages not
    /// returned to the system yet.
    pub resident: usize,
}

dice_core::__option_setters!(RespConfig {
    with_requirepass => requirepass: Option<String>,
    with_max_clients => max_clients: usize,
    with_max_bulk_len => max_bulk_len: Option<usize>,
    with_max_args => max_args: usize,
    with_max_inline_len => max_inline_len: usize,
    with_max_request_len => max_request_len: usize,
    with_max_input_buffer_total => max_input_buffer_total: usize,
    with_timeout => timeout: Duration,
    with_output_stall_timeout => output_stall_timeout: Duration,
    with_shutdown_timeout => shutdown_timeout: Duration,
    with_max_exec_reply => max_exec_reply: usize,
    with_max_subscriptions_per_client => max_subscriptions_per_client: usize,
    with_max_subscriptions_total => max_subscriptions_total: usize,
    with_max_channel_len => max_channel_len: usize,
    with_pubsub_output_limit => pubsub_output_limit: usize,
    with_tracking_table_max_keys => tracking_table_max_keys: usize,
    with_tracking_table_max_bytes => tracking_table_max_bytes: usize,
    with_max_tracking_prefixes_per_client => max_tracking_prefixes_per_client: usize,
    with_max_tracking_prefixes_total => max_tracking_prefixes_total: usize,
    with_command_observer => command_observer: Option<Arc<dyn CommandObserver>>,
    with_allocator_stats => allocator_stats: Option<fn() -> Option<AllocatorStats>>,
});

/// Observes the commands a server runs (see [`RespConfig::command_observer`]).
pub trait CommandObserver: Send + Sync {
    /// `command` (a lower-case name, `"unknown"` for one the server does not know) ran in
    /// `elapsed` (not counting the wait for its group commit) and answered an error if
    /// `failed`. Called on the connection's task: keep it short.
    fn command(&self, command: &'static str, elapsed: Duration, failed: bool);
}

impl Default for RespConfig {
    fn default() -> Self {
        let limits = FrameLimits::default();
        RespConfig {
            requirepass: None,
            max_clients: 10_000,
            max_bulk_len: None,
            max_args: limits.max_args,
            max_inline_len: limits.max_inline_len,
            max_request_len: limits.max_request_len,
            max_input_buffer_total: 1024 * 1024 * 1024,
            timeout: Duration::ZERO,
            output_stall_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(10),
            max_exec_reply: 64 * 1024 * 1024,
            max_subscriptions_per_client: 10_000,
            max_subscriptions_total: 1_000_000,
            max_channel_len: 4096,
            pubsub_output_limit: 32 * 1024 * 1024,
            tracking_table_max_keys: 1_000_000,
            tracking_table_max_bytes: 256 * 1024 * 1024,
            max_tracking_prefixes_per_client: 1_000,
            max_tracking_prefixes_total: 100_000,
            command_observer: None,
            allocator_stats: None,
        }
    }
}

impl fmt::Debug for RespConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RespConfig")
            .field(
                "requirepass",
                &self.requirepass.as_ref().map(|_| "<redacted>"),
            )
            .field("max_clients", &self.max_clients)
            .field("max_bulk_len", &self.max_bulk_len)
            .field("max_args", &self.max_args)
            .field("max_inline_len", &self.max_inline_len)
            .field("max_request_len", &self.max_request_len)
            .field("max_input_buffer_total", &self.max_input_buffer_total)
            .field("timeout", &self.timeout)
            .field("output_stall_timeout", &self.output_stall_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("max_exec_reply", &self.max_exec_reply)
            .field(
                "max_subscriptions_per_client",
                &self.max_subscriptions_per_client,
            )
            .field("max_subscriptions_total", &self.max_subscriptions_total)
            .field("max_channel_len", &self.max_channel_len)
            .field("pubsub_output_limit", &self.pubsub_output_limit)
            .field("tracking_table_max_keys", &self.tracking_table_max_keys)
            .field("tracking_table_max_bytes", &self.tracking_table_max_bytes)
            .field(
                "max_tracking_prefixes_per_client",
                &self.max_tracking_prefixes_per_client,
            )
            .field(
                "max_tracking_prefixes_total",
                &self.max_tracking_prefixes_total,
            )
            .finish()
    }
}

impl RespConfig {
    /// The frame limits for a cache: the configured ones, the bulk bound derived from the
    /// cache's limits unless set.
    pub fn frame_limits(&self, cache: &Cache) -> FrameLimits {
        let derived = FrameLimits::for_cache(&cache.options().limits);
        FrameLimits {
            max_bulk_len: self.max_bulk_len.unwrap_or(derived.max_bulk_len),
            max_args: self.max_args,
            max_inline_len: self.max_inline_len,
            max_request_len: self.max_request_len,
        }
    }
}
