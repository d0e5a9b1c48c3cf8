//! One client's connection: reads and buffers requests, runs every complete one, sends the
//! replies once per batch, delivers pub/sub messages and invalidations in between, and
//! closes without losing the last reply.

use crate::cmd::pubsub::{deliver, next_delivery};
use crate::cmd::tracking::deliver_pushes;
use crate::cmd::{self, Ctx, Session};
use crate::frame::{Parse, Protocol, RequestParser, write_error};
use crate::registry::ClientEntry;
use crate::registry::Inbox;
use crate::state::ServerState;
use crate::wire::{Batch, INPUT_ALLOWANCE, OUTPUT_FLUSH_AT, READ_CHUNK, Wire, send};
use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};

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

pub(crate) async fn run_connection(
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
pub(crate) const MAX_LINGERING_REFUSALS: usize = 64;

/// Closes a connection without losing the last reply: sends our end of stream, then reads
/// and drops what the client still sends, for a bounded time and amount. Closing a socket
/// with unread input resets the connection, and a reset can make the client's kernel drop
/// the reply (an error saying why) before the client reads it.
pub(crate) async fn linger_close(stream: &mut TcpStream) {
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
