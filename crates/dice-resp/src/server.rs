//! The TCP side: the accept loop with its connection limit and graceful shutdown. Each
//! connection runs in its own task (the crate's private `client` module); what they share is
//! the private `state` module.

use crate::client::{MAX_LINGERING_REFUSALS, linger_close, run_connection};
use crate::cluster::ClusterInfo;
pub use crate::config::{AllocatorStats, CommandObserver, RespConfig};
use crate::pubsub::{Hub, PubSubBus, PubSubHandle};
use crate::state::{AuthLog, Pause, ServerState, Stats};
use crate::tracking::Tracking;
pub use crate::wire::{INPUT_ALLOWANCE, OUTPUT_FLUSH_AT};
use dice_core::Cache;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

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
