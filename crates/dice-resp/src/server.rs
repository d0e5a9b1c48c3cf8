//! The TCP side: the accept loop with its connection limit and graceful shutdown, and the
//! connection that buffers, answers every complete request it holds, and flushes once.

use crate::cluster::ClusterInfo;
use crate::cmd::{self, Batch, Ctx, Session};
use crate::frame::{FrameLimits, Parse, RequestParser, write_error};
use bytes::{Buf, BytesMut};
use dice_core::Cache;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// How long a shutdown waits for connections to finish the batch they are answering
    /// (a client that does not read its replies can hold one up) before it drops them
    /// (default 10 s).
    pub shutdown_timeout: Duration,
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
            shutdown_timeout: Duration::from_secs(10),
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
            .field("shutdown_timeout", &self.shutdown_timeout)
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
    pub port: u16,
    frame_limits: FrameLimits,
    clients: Arc<Semaphore>,
    max_permits: usize,
    next_client_id: AtomicU64,
}

impl ServerState {
    /// Clients connected now.
    pub fn connected_clients(&self) -> usize {
        self.max_permits - self.clients.available_permits()
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
        RespServer {
            listener,
            cache,
            config,
            cluster: None,
        }
    }

    /// Fills the `INFO cluster` section from `info` (a dice-net node, say).
    pub fn with_cluster_info(mut self, info: Arc<dyn ClusterInfo>) -> Self {
        self.cluster = Some(info);
        self
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
        let state = Arc::new(ServerState {
            frame_limits: self.config.frame_limits(&self.cache),
            cache: self.cache,
            config: self.config,
            cluster: self.cluster,
            started: Instant::now(),
            port,
            clients: Arc::new(Semaphore::new(max_permits)),
            max_permits,
            next_client_id: AtomicU64::new(1),
        });
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
                        let Ok(permit) = state.clients.clone().try_acquire_owned() else {
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
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.run(async move {
            let _ = stopped.await;
        }));
        Ok(RespHandle { addr, stop, task })
    }
}

/// A running server (see [`RespServer::spawn`]).
#[derive(Debug)]
pub struct RespHandle {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl RespHandle {
    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
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

/// Output past this size is sent before more requests are answered, so a long pipeline of
/// large replies does not pile up in memory.
const FLUSH_AT: usize = 256 * 1024;
/// Bytes read at a time (at least).
const READ_CHUNK: usize = 16 * 1024;

async fn run_connection(
    state: Arc<ServerState>,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let mut session = Session {
        id: state.next_client_id.fetch_add(1, Ordering::Relaxed),
        name: None,
        authenticated: state.config.requirepass.is_none(),
        quit: false,
    };
    tracing::debug!(%peer, id = session.id, "RESP client connected");
    let mut parser = RequestParser::new(state.frame_limits);
    parser.set_unauthenticated(!session.authenticated);
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut batch = Batch::default();
    loop {
        // Answer every complete request in the buffer.
        let mut pos = 0;
        let mut close = false;
        let mut protocol_error = false;
        let mut more_buffered = false;
        loop {
            match parser.parse(&input[pos..]) {
                Ok(Parse::Incomplete) => break,
                Ok(Parse::Request { request, consumed }) => {
                    pos += consumed;
                    if !request.is_empty() {
                        let mut ctx = Ctx::new(&state, &mut session, &mut out, &mut batch);
                        cmd::execute(&mut ctx, request).await;
                    }
                    parser.set_unauthenticated(!session.authenticated);
                    if session.quit {
                        close = true;
                        break;
                    }
                    if out.len() >= FLUSH_AT {
                        more_buffered = true;
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "RESP protocol error; closing");
                    write_error(&mut out, &format!("ERR {e}"));
                    close = true;
                    protocol_error = true;
                    break;
                }
            }
        }
        input.advance(pos);

        // Acknowledge the batch's writes only once they are committed: one wait for all.
        if batch.max_generation > 0 {
            if let Err(e) = state.cache.wait_committed(batch.max_generation).await {
                tracing::warn!(error = %e, "a group commit failed; failing the batch's writes");
                out = replace_ranges(&out, &batch.write_replies, &format!("ERR {e}"));
            }
            batch.max_generation = 0;
            batch.write_replies.clear();
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
            if out.capacity() > 4 * FLUSH_AT {
                out = Vec::with_capacity(READ_CHUNK);
            }
        }
        if close {
            if protocol_error {
                linger_close(&mut stream).await;
            } else {
                let _ = stream.shutdown().await;
            }
            break;
        }
        if more_buffered {
            continue;
        }

        if input.is_empty() && input.capacity() > 64 * READ_CHUNK {
            input = BytesMut::with_capacity(READ_CHUNK);
        }
        input.reserve(parser.needed().saturating_sub(input.len()).max(READ_CHUNK));
        tokio::select! {
            read = stream.read_buf(&mut input) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            _ = stop.wait_for(|stopping| *stopping) => break,
        }
    }
    tracing::debug!(%peer, id = session.id, "RESP client gone");
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
