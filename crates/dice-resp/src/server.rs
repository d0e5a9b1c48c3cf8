//! The TCP side: the accept loop with its connection limit and graceful shutdown, and the
//! connection that buffers, answers every complete request it holds, and flushes once.

use crate::cluster::ClusterInfo;
use crate::cmd::{self, Batch, Ctx, Session};
use crate::frame::{FrameLimits, Parse, Protocol, RequestParser, write_error};
use crate::pubsub::{Delivery, Hub, PubSubBus, PubSubHandle};
use crate::tracking::{Inbox, Push, Tracking};
use bytes::{Buf, BytesMut};
use dice_core::Cache;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

/// How the RESP port behaves. Every field has a documented default.
#[derive(Clone)]
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
    /// 1 GiB). Each client's first [`INPUT_ALLOWANCE`] bytes are not counted, so small
    /// requests are always served; a client whose buffer would take the total past the budget
    /// gets `-ERR Protocol error: ... budget ...` and is disconnected (logged).
    pub max_input_buffer_total: usize,
    /// Close a client that sent nothing for this long (Redis's `timeout`; default zero:
    /// never).
    pub timeout: Duration,
    /// Disconnect a client whose pending replies (at most [`OUTPUT_FLUSH_AT`] plus one
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
}

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

/// What every connection of one server shares.
pub(crate) struct ServerState {
    pub cache: Cache,
    pub config: RespConfig,
    pub cluster: Option<Arc<dyn ClusterInfo>>,
    pub started: Instant,
    /// `INFO`'s `run_id` (40 hex digits, as in Redis): a 128-bit hash, new at every start.
    pub run_id: u128,
    pub port: u16,
    frame_limits: FrameLimits,
    clients: Arc<Semaphore>,
    max_permits: usize,
    next_client_id: AtomicU64,
    /// Bytes of partial requests charged against [`RespConfig::max_input_buffer_total`].
    input_buffered: AtomicUsize,
    pub stats: Stats,
    auth_log: Mutex<AuthLog>,
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

/// What other connections may see of, and do to, one connection (`CLIENT LIST`, `CLIENT
/// KILL`).
#[derive(Debug)]
pub(crate) struct ClientEntry {
    pub id: u64,
    pub peer: SocketAddr,
    pub local: Option<SocketAddr>,
    pub fd: i64,
    pub connected: Instant,
    /// Milliseconds after `connected` of the last command.
    pub last_active_ms: AtomicU64,
    pub name: Mutex<Option<Vec<u8>>>,
    pub lib: Mutex<(Vec<u8>, Vec<u8>)>,
    /// The last command's name (lowercase, from the command table).
    pub last_cmd: Mutex<&'static str>,
    pub resp: AtomicU64,
    /// Commands queued in `MULTI`, or -1 outside a transaction (as `CLIENT LIST` shows it).
    pub multi: std::sync::atomic::AtomicI64,
    /// Channels and patterns subscribed to (`sub=`, `psub=`).
    pub sub: AtomicU64,
    pub psub: AtomicU64,
    pub killed: tokio::sync::Notify,
    /// Invalidation messages for this connection (its own, or redirected to it).
    pub inbox: Inbox,
    /// Client tracking flags (`t`, `R`, `B` in `CLIENT LIST`), see [`crate::tracking`].
    pub tracking: std::sync::atomic::AtomicU8,
    /// Where its invalidations go (`redir=`): -1 without tracking, 0 to itself.
    pub redirect: std::sync::atomic::AtomicI64,
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
struct AuthLog {
    last: Option<Instant>,
    unlogged: u64,
}

/// At most one failed-`AUTH` warning per this period, with the count since the last one.
const AUTH_LOG_EVERY: Duration = Duration::from_secs(1);

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

/// A RESP server over a bound listener, not running yet.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use dice_resp::{RespConfig, RespServer};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// let dir = tempfile::tempdir()?;
/// let cache = dice_core::Cache::open(dir.path()).await?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let server = RespServer::new(listener, cache, RespConfig::default()).spawn()?;
///
/// let mut client = tokio::net::TcpStream::connect(server.local_addr()).await?;
/// client.write_all(b"SET greeting hello\r\nGET greeting\r\n").await?;
/// let mut reply = vec![0; 16];
/// client.read_exact(&mut reply).await?;
/// assert_eq!(reply, b"+OK\r\n$5\r\nhello\r\n");
/// server.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct RespServer {
    listener: TcpListener,
    cache: Cache,
    config: RespConfig,
    cluster: Option<Arc<dyn ClusterInfo>>,
    shutdown_requests: watch::Sender<bool>,
    pubsub: Arc<Hub>,
}

impl fmt::Debug for RespServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RespServer")
            .field("listener", &self.listener)
            .field("cache", &self.cache)
            .field("config", &self.config)
            .field("cluster", &self.cluster.is_some())
            .finish()
    }
}

impl RespServer {
    /// A server for `cache` on `listener`.
    pub fn new(listener: TcpListener, cache: Cache, config: RespConfig) -> Self {
        let pubsub = Arc::new(Hub::new(config.pubsub_output_limit));
        RespServer {
            listener,
            cache,
            config,
            cluster: None,
            shutdown_requests: watch::Sender::new(false),
            pubsub,
        }
    }

    /// Turns true when a client sends `SHUTDOWN`. The server does not stop by itself: the
    /// process that owns it decides (`dice node` stops gracefully, as on SIGTERM). While
    /// nobody holds a receiver, `SHUTDOWN` answers an error. [`RespHandle`] holds one (see
    /// [`RespHandle::shutdown_requested`]).
    pub fn shutdown_requests(&self) -> watch::Receiver<bool> {
        self.shutdown_requests.subscribe()
    }

    /// Fills the `INFO cluster` section from `info` (a dice-net node, say).
    pub fn with_cluster_info(mut self, info: Arc<dyn ClusterInfo>) -> Self {
        self.cluster = Some(info);
        self
    }

    /// Carries `PUBLISH`ed messages to the other nodes of the cluster (a dice-net node,
    /// say). Without one, pub/sub works within this node.
    pub fn with_pubsub_bus(self, bus: Arc<dyn PubSubBus>) -> Self {
        self.pubsub.set_bus(bus);
        self
    }

    /// A handle to hand this server's subscribers the messages published on other nodes.
    pub fn pubsub(&self) -> PubSubHandle {
        PubSubHandle {
            hub: self.pubsub.clone(),
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets each connection finish
    /// the batch it is answering (its writes committed, its replies sent; for up to
    /// [`RespConfig::shutdown_timeout`]), closes them, and returns once they are all gone.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let port = self.listener.local_addr()?.port();
        let max_permits = self.config.max_clients.min(Semaphore::MAX_PERMITS);
        let timeout_ms = AtomicU64::new(self.config.timeout.as_millis() as u64);
        let (keyspace_subscribe, subscriptions) = tokio::sync::mpsc::unbounded_channel();
        let (tracking, tracking_subscriptions) = Tracking::new(crate::tracking::Bounds {
            max_keys: self.config.tracking_table_max_keys,
            max_bytes: self.config.tracking_table_max_bytes,
            max_prefixes_per_client: self.config.max_tracking_prefixes_per_client,
            max_prefixes_total: self.config.max_tracking_prefixes_total,
            output_limit: self.config.pubsub_output_limit,
        });
        let state = Arc::new(ServerState {
            frame_limits: self.config.frame_limits(&self.cache),
            cache: self.cache,
            config: self.config,
            cluster: self.cluster,
            started: Instant::now(),
            run_id: run_id(),
            port,
            clients: Arc::new(Semaphore::new(max_permits)),
            max_permits,
            next_client_id: AtomicU64::new(1),
            input_buffered: AtomicUsize::new(0),
            stats: Stats::default(),
            auth_log: Mutex::new(AuthLog::default()),
            timeout_ms,
            registry: Mutex::new(BTreeMap::new()),
            shutdown_requests: self.shutdown_requests,
            pubsub: self.pubsub,
            keyspace_events: watch::Sender::new(0),
            keyspace_subscribe,
            tracking: Arc::new(tracking),
            pause: watch::Sender::new(Pause::default()),
        });
        let notifier = tokio::spawn(crate::pubsub::notify::run(
            state.pubsub.clone(),
            state.keyspace_events.subscribe(),
            subscriptions,
        ));
        let _notifier = AbortOnDrop(notifier);
        let _tracker = AbortOnDrop(tokio::spawn(crate::tracking::run(
            state.tracking.clone(),
            state.cache.clone(),
            tracking_subscriptions,
        )));
        let listener = self.listener;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        let refusing = Arc::new(Semaphore::new(MAX_LINGERING_REFUSALS));
        tracing::info!(port, "RESP server listening");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(done) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(e) = done
                        && e.is_panic()
                    {
                        tracing::error!(error = %e, "a RESP connection panicked");
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        state.stats.connections_received.fetch_add(1, Ordering::Relaxed);
                        let Ok(permit) = state.clients.clone().try_acquire_owned() else {
                            state.stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%peer, "refusing a client: max number of clients reached");
                            // Never blocks the accept loop; lingers (to make sure the client
                            // reads why) only for a bounded number of refused clients at once.
                            let _ = stream.try_write(b"-ERR max number of clients reached\r\n");
                            if let Ok(permit) = refusing.clone().try_acquire_owned() {
                                connections.spawn(async move {
                                    let mut stream = stream;
                                    linger_close(&mut stream).await;
                                    drop(permit);
                                });
                            }
                            continue;
                        };
                        connections.spawn(run_connection(
                            state.clone(),
                            stream,
                            peer,
                            stop_rx.clone(),
                            permit,
                        ));
                    }
                    Err(e) => {
                        // Out of file descriptors, say: keep serving the clients we have.
                        tracing::warn!(error = %e, "accepting a RESP client failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        tracing::info!(connections = connections.len(), "RESP server shutting down");
        let finished = tokio::time::timeout(state.config.shutdown_timeout, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                connections = connections.len(),
                "dropping RESP connections that did not finish in time"
            );
            connections.shutdown().await;
        }
        Ok(())
    }

    /// Runs the server in a task; the handle stops it. Dropping the handle stops it too.
    pub fn spawn(self) -> io::Result<RespHandle> {
        let addr = self.local_addr()?;
        let requests = self.shutdown_requests();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.run(async move {
            let _ = stopped.await;
        }));
        Ok(RespHandle {
            addr,
            stop,
            task,
            requests,
        })
    }
}

/// A running server (see [`RespServer::spawn`]).
#[derive(Debug)]
pub struct RespHandle {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
    requests: watch::Receiver<bool>,
}

impl RespHandle {
    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Completes once a client sent `SHUTDOWN` (authenticated, if a password is set). The
    /// server goes on serving: stop it (and the node) with [`RespHandle::shutdown`].
    pub async fn shutdown_requested(&self) {
        let mut rx = self.requests.clone();
        if rx.wait_for(|asked| *asked).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Stops the server gracefully (see [`RespServer::run`]) and waits until it is done.
    pub async fn shutdown(self) -> io::Result<()> {
        let RespHandle { stop, task, .. } = self;
        drop(stop);
        task.await.map_err(io::Error::other)?
    }
}

/// Serves `cache` on `listener` until the task is dropped: the short form of
/// [`RespServer::new`] then [`RespServer::run`].
pub async fn serve(listener: TcpListener, cache: Cache, config: RespConfig) -> io::Result<()> {
    RespServer::new(listener, cache, config)
        .run(std::future::pending())
        .await
}

/// Output past this size is sent (and the socket awaited) before anything more is
/// answered: a long pipeline, or one reply of many elements (`MGET`, `KEYS`, `SCAN`), never
/// piles up in memory. A connection holds at most this plus one element (a value, at most
/// the cache's value limit) of replies.
pub const OUTPUT_FLUSH_AT: usize = 64 * 1024;
/// Bytes read at a time (at least).
const READ_CHUNK: usize = 16 * 1024;
/// Bytes of input buffer each client holds without charging the global budget
/// ([`RespConfig::max_input_buffer_total`]).
pub const INPUT_ALLOWANCE: usize = 64 * 1024;

/// The write side of a connection: the socket and what is pending for it.
pub(crate) struct Wire {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Set once a write failed or stalled: the connection is closing, stop answering.
    pub broken: bool,
    /// Notified to close the connection (`CLIENT KILL`, a subscriber past its limit): a
    /// write in progress is abandoned.
    pub entry: Arc<ClientEntry>,
}

/// Sends `out`: first waits until the batch's writes are committed (their replies turn
/// into the commit's error if it failed), then writes to the socket, giving up after
/// [`RespConfig::output_stall_timeout`]. Sets `wire.broken` and returns false if the
/// client is gone or stalled.
pub(crate) async fn send(
    state: &ServerState,
    out: &mut Vec<u8>,
    batch: &mut Batch,
    wire: &mut Wire,
) -> bool {
    // Acknowledge the batch's writes only once they are committed: one wait for all.
    if batch.max_generation > 0 {
        if let Err(e) = state.cache.wait_committed(batch.max_generation).await {
            tracing::warn!(error = %e, "a group commit failed; failing the batch's writes");
            *out = replace_ranges(out, &batch.write_replies, &format!("ERR {e}"));
        }
        batch.max_generation = 0;
        batch.write_replies.clear();
    }
    if out.is_empty() || wire.broken {
        out.clear();
        return !wire.broken;
    }
    let stall = state.config.output_stall_timeout;
    state
        .stats
        .net_output_bytes
        .fetch_add(out.len() as u64, Ordering::Relaxed);
    let write = async {
        if stall.is_zero() {
            wire.stream.write_all(out).await.map_err(|_| false)
        } else {
            match tokio::time::timeout(stall, wire.stream.write_all(out)).await {
                Ok(r) => r.map_err(|_| false),
                Err(_) => Err(true),
            }
        }
    };
    let written = tokio::select! {
        r = write => r,
        () = wire.entry.killed.notified() => Err(false),
    };
    out.clear();
    if out.capacity() > 4 * OUTPUT_FLUSH_AT {
        *out = Vec::with_capacity(READ_CHUNK);
    }
    match written {
        Ok(()) => true,
        Err(stalled) => {
            if stalled {
                state.stats.output_stalls.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    peer = %wire.peer,
                    timeout = ?stall,
                    "disconnecting a client that does not read its replies"
                );
            }
            wire.broken = true;
            false
        }
    }
}

/// The bytes a connection charges against the global input budget, given back when it
/// closes.
struct InputCharge<'a> {
    state: &'a ServerState,
    charged: usize,
    /// The cache's client memory (`used_memory`): the connection's base buffers and its
    /// charge.
    gauge: Arc<AtomicUsize>,
}

/// What a connection holds at least, counted in `used_memory`: its read buffer and its reply
/// buffer.
const CLIENT_BASE_BYTES: usize = 2 * READ_CHUNK;

impl InputCharge<'_> {
    /// Charges a buffer of `capacity` bytes. False if that takes the total past the budget
    /// (the charge is then left as it was).
    fn set(&mut self, capacity: usize) -> bool {
        let want = capacity.saturating_sub(INPUT_ALLOWANCE);
        let total = &self.state.input_buffered;
        if want > self.charged {
            let more = want - self.charged;
            let before = total.fetch_add(more, Ordering::Relaxed);
            if before + more > self.state.config.max_input_buffer_total {
                total.fetch_sub(more, Ordering::Relaxed);
                return false;
            }
            self.gauge.fetch_add(more, Ordering::Relaxed);
        } else {
            total.fetch_sub(self.charged - want, Ordering::Relaxed);
            self.gauge.fetch_sub(self.charged - want, Ordering::Relaxed);
        }
        self.charged = want;
        true
    }
}

impl Drop for InputCharge<'_> {
    fn drop(&mut self) {
        self.state
            .input_buffered
            .fetch_sub(self.charged, Ordering::Relaxed);
        self.gauge
            .fetch_sub(self.charged + CLIENT_BASE_BYTES, Ordering::Relaxed);
    }
}

/// How a connection ends.
enum Close {
    /// Keep serving.
    No,
    /// Close after the replies (QUIT).
    Clean,
    /// Close after the replies, reading what the client still sends so that it gets the
    /// last reply (a protocol error, a refusal).
    Linger,
}

async fn run_connection(
    state: Arc<ServerState>,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let id = state.next_client_id.fetch_add(1, Ordering::Relaxed);
    #[cfg(unix)]
    let fd = i64::from(std::os::fd::AsRawFd::as_raw_fd(&stream));
    #[cfg(not(unix))]
    let fd = -1;
    let (inbox, pushes) = Inbox::new();
    let entry = Arc::new(ClientEntry {
        id,
        peer,
        local: stream.local_addr().ok(),
        fd,
        connected: Instant::now(),
        last_active_ms: AtomicU64::new(0),
        name: Mutex::new(None),
        lib: Mutex::new((Vec::new(), Vec::new())),
        last_cmd: Mutex::new("NULL"),
        resp: AtomicU64::new(2),
        multi: std::sync::atomic::AtomicI64::new(-1),
        sub: AtomicU64::new(0),
        psub: AtomicU64::new(0),
        killed: tokio::sync::Notify::new(),
        inbox,
        tracking: std::sync::atomic::AtomicU8::new(0),
        redirect: std::sync::atomic::AtomicI64::new(-1),
    });
    if let Ok(mut r) = state.registry.lock() {
        r.insert(id, entry.clone());
    }
    let _registered = Registered { state: &state, id };
    let mut session = Session {
        entry: entry.clone(),
        id,
        name: None,
        authenticated: state.config.requirepass.is_none(),
        quit: false,
        linger: false,
        auth_failures: 0,
        peer,
        proto: Protocol::Resp2,
        multi: None,
        watched: Default::default(),
        pubsub: None,
        last_write_seq: 0,
        tracking: Default::default(),
        pushes,
    };
    tracing::debug!(%peer, id = session.id, "RESP client connected");
    let mut parser = RequestParser::new(state.frame_limits);
    parser.set_unauthenticated(!session.authenticated);
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let gauge = state.cache.client_memory();
    gauge.fetch_add(CLIENT_BASE_BYTES, Ordering::Relaxed);
    let mut charge = InputCharge {
        state: &state,
        charged: 0,
        gauge,
    };
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut batch = Batch::default();
    let mut wire = Wire {
        stream,
        peer,
        broken: false,
        entry: entry.clone(),
    };
    loop {
        // Answer every complete request in the buffer.
        let mut pos = 0;
        let mut close = Close::No;
        let mut more_buffered = false;
        loop {
            match parser.parse(&input[pos..]) {
                Ok(Parse::Incomplete) => break,
                Ok(Parse::Request { request, consumed }) => {
                    pos += consumed;
                    if !request.is_empty() {
                        let mut ctx =
                            Ctx::new(&state, &mut session, &mut out, &mut batch, &mut wire);
                        cmd::execute(&mut ctx, request).await;
                    }
                    parser.set_unauthenticated(!session.authenticated);
                    if wire.broken {
                        break;
                    }
                    if session.quit {
                        close = if session.linger {
                            Close::Linger
                        } else {
                            Close::Clean
                        };
                        break;
                    }
                    if out.len() >= OUTPUT_FLUSH_AT {
                        more_buffered = true;
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "RESP protocol error; closing");
                    write_error(&mut out, &format!("ERR {e}"));
                    close = Close::Linger;
                    break;
                }
            }
        }
        input.advance(pos);
        if !send(&state, &mut out, &mut batch, &mut wire).await {
            break;
        }
        match close {
            Close::No => {}
            Close::Clean => {
                let _ = wire.stream.shutdown().await;
                break;
            }
            Close::Linger => {
                linger_close(&mut wire.stream).await;
                break;
            }
        }
        if more_buffered {
            continue;
        }

        if input.is_empty() && input.capacity() > INPUT_ALLOWANCE {
            input = BytesMut::with_capacity(READ_CHUNK);
        }
        input.reserve(parser.needed().saturating_sub(input.len()).max(READ_CHUNK));
        if !charge.set(input.capacity()) {
            state
                .stats
                .input_budget_refusals
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                %peer,
                buffered = input.len(),
                budget = state.config.max_input_buffer_total,
                "disconnecting a client: the input buffers of all clients would pass their budget"
            );
            write_error(
                &mut out,
                &format!(
                    "ERR client input buffers would pass the server's budget of {} bytes \
                     (max_input_buffer_total) with this client's {} bytes of partial \
                     request; closing the connection",
                    state.config.max_input_buffer_total,
                    input.len()
                ),
            );
            // Give the buffer and its charge back now, not after the linger: other clients
            // must not be refused for what this closing one held.
            drop(std::mem::take(&mut input));
            charge.set(0);
            if send(&state, &mut out, &mut batch, &mut wire).await {
                linger_close(&mut wire.stream).await;
            }
            break;
        }
        // Subscribed clients are not idle (as in Redis): they wait for messages.
        let idle_timeout = if session.pubsub.as_ref().is_some_and(|s| s.count() > 0) {
            Duration::ZERO
        } else {
            Duration::from_millis(state.timeout_ms.load(Ordering::Relaxed))
        };
        let idle = async {
            if idle_timeout.is_zero() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(idle_timeout).await;
        };
        let mut delivery = None;
        let mut push = None;
        let timed_out = tokio::select! {
            read = wire.stream.read_buf(&mut input) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    state.stats.net_input_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    false
                }
            },
            Some(first) = next_delivery(&mut session.pubsub) => {
                delivery = Some(first);
                false
            }
            Some(first) = session.pushes.recv() => {
                push = Some(first);
                false
            }
            () = idle => true,
            () = entry.killed.notified() => {
                tracing::debug!(%peer, id, "closing a client (CLIENT KILL)");
                break;
            }
            _ = stop.wait_for(|stopping| *stopping) => break,
        };
        if let Some(first) = delivery.take() {
            if !deliver(&state, &mut session, first, &mut out, &mut batch, &mut wire).await {
                break;
            }
            continue;
        }
        if let Some(first) = push.take() {
            if !deliver_pushes(&state, &mut session, first, &mut out, &mut batch, &mut wire).await {
                break;
            }
            continue;
        }
        if timed_out {
            state.stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, id = session.id, "closing an idle client (timeout)");
            let _ = wire.stream.shutdown().await;
            break;
        }
    }
    tracing::debug!(%peer, id = session.id, "RESP client gone");
}

/// The next pub/sub message for a connection; never, while it has no subscription queue.
pub(crate) async fn next_delivery(
    subs: &mut Option<Box<crate::pubsub::ClientSubs>>,
) -> Option<Delivery> {
    match subs {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Writes `first` and whatever else is queued (up to [`OUTPUT_FLUSH_AT`] at a time) to the
/// client. False once the connection must close (gone, stalled, or past its pub/sub limit).
pub(crate) async fn deliver(
    state: &ServerState,
    session: &mut Session,
    first: Delivery,
    out: &mut Vec<u8>,
    batch: &mut Batch,
    wire: &mut Wire,
) -> bool {
    let mut next = Some(first);
    while let Some(d) = next {
        cmd::pubsub::write_delivery(out, &d, session.proto);
        if out.len() >= OUTPUT_FLUSH_AT && !send(state, out, batch, wire).await {
            return false;
        }
        next = session.pubsub.as_mut().and_then(|s| s.try_next());
    }
    if session.pubsub.as_ref().is_some_and(|s| s.overflowed()) {
        return false;
    }
    send(state, out, batch, wire).await
}

/// Writes `first` and whatever other invalidation is queued (up to [`OUTPUT_FLUSH_AT`] at a
/// time) to the client. False once the connection must close.
pub(crate) async fn deliver_pushes(
    state: &ServerState,
    session: &mut Session,
    first: Push,
    out: &mut Vec<u8>,
    batch: &mut Batch,
    wire: &mut Wire,
) -> bool {
    let mut next = Some(first);
    while let Some(p) = next {
        session.entry.inbox.taken(&p);
        let subscribed = session.pubsub.as_ref().is_some_and(|s| s.count() > 0);
        crate::tracking::write_push(out, &p, session.proto, subscribed);
        if out.len() >= OUTPUT_FLUSH_AT && !send(state, out, batch, wire).await {
            return false;
        }
        next = session.pushes.try_recv().ok();
    }
    if session.entry.inbox.overflowed() {
        return false;
    }
    send(state, out, batch, wire).await
}

/// A fresh run id: a hash of the time, the process id and an address in this process.
fn run_id() -> u128 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let local = 0u8;
    let seed = format!("{now}:{}:{:p}", std::process::id(), &local);
    xxhash_rust::xxh3::xxh3_128(seed.as_bytes())
}

/// Aborts a task when dropped (the keyspace notifier, when the server stops).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes a connection from the registry when it ends, however it ends.
struct Registered<'a> {
    state: &'a ServerState,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.state.tracking.disable(self.id);
        if let Ok(mut r) = self.state.registry.lock() {
            r.remove(&self.id);
        }
    }
}

/// How long a closing connection keeps reading what the client still sends.
const LINGER: Duration = Duration::from_millis(250);
/// How much it reads at most.
const LINGER_MAX_BYTES: usize = 1024 * 1024;
/// Refused clients (past `max_clients`) lingering at once; past it they are just dropped.
const MAX_LINGERING_REFUSALS: usize = 64;

/// Closes a connection without losing the last reply: sends our end of stream, then reads
/// and drops what the client still sends, for a bounded time and amount. Closing a socket
/// with unread input resets the connection, and a reset can make the client's kernel drop
/// the reply (an error saying why) before the client reads it.
async fn linger_close(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 8192];
    let mut drained = 0;
    let _ = tokio::time::timeout(LINGER, async {
        while drained < LINGER_MAX_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// `out` with each of `ranges` (ascending, disjoint) replaced by the error `text`.
fn replace_ranges(out: &[u8], ranges: &[Range<usize>], text: &str) -> Vec<u8> {
    let mut fixed = Vec::with_capacity(out.len());
    let mut at = 0;
    for r in ranges {
        fixed.extend_from_slice(&out[at..r.start]);
        write_error(&mut fixed, text);
        at = r.end;
    }
    fixed.extend_from_slice(&out[at..]);
    fixed
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

    #[test]
    fn replace_ranges() {
        let out = b"+OK\r\n:1\r\n+OK\r\n";
        let fixed = super::replace_ranges(out, &[0..5, 9..14], "ERR commit failed");
        assert_eq!(
            fixed,
            b"-ERR commit failed\r\n:1\r\n-ERR commit failed\r\n".to_vec()
        );
    }
}
