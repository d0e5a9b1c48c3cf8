//! One connection as the rest of the server sees it: its [`ClientEntry`] in the client
//! registry (what `CLIENT LIST` shows and `CLIENT KILL` reaches) and the [`Inbox`] through
//! which other connections queue messages for it (tracking invalidations).
//!
//! It depends on nothing of the server's: `state` keeps the registry, and `pubsub` and
//! `tracking` hold entries, all pointing here, so none of them points back at another.

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

/// Bytes counted for a queued message besides its keys.
const PUSH_OVERHEAD: usize = 64;

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

/// One message for a connection.
#[derive(Debug)]
pub(crate) enum Push {
    /// `invalidate` with these keys, or with a null (every key: after a flush).
    Invalidate {
        keys: Option<Arc<Vec<Bytes>>>,
        /// The null as the tracking client's protocol spells it (Redis sends the tracking
        /// client's null even to a redirect target).
        null_resp3: bool,
        /// Sent to this connection on behalf of another (`REDIRECT`).
        redirected: bool,
    },
    /// `tracking-redir-broken`: the connection invalidations went to is gone.
    RedirBroken(u64),
}

impl Push {
    fn cost(&self) -> usize {
        match self {
            Push::Invalidate { keys: Some(k), .. } => {
                k.iter().map(|k| k.len() + 16).sum::<usize>() + PUSH_OVERHEAD
            }
            _ => PUSH_OVERHEAD,
        }
    }
}

/// What [`Inbox::offer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    /// The message is queued.
    Queued,
    /// The connection is gone, or already being disconnected: nothing queued.
    Gone,
    /// The message would take the queue past its limit: nothing queued, and the connection
    /// must be disconnected (`first`: this call is the one that found it).
    Overflowed {
        /// Whether this call is the first to find the queue past its limit.
        first: bool,
    },
}

/// The sending side of a connection's queue of pushes, in its [`ClientEntry`].
#[derive(Debug)]
pub(crate) struct Inbox {
    tx: mpsc::UnboundedSender<Push>,
    /// Bytes queued and not yet taken by the connection.
    pending: AtomicUsize,
    /// Set once it passed its limit: it is being disconnected.
    overflowed: AtomicBool,
}

impl Inbox {
    /// A queue, and its receiving end for the connection.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Push>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Inbox {
                tx,
                pending: AtomicUsize::new(0),
                overflowed: AtomicBool::new(false),
            },
            rx,
        )
    }

    /// The connection took `push` off the queue.
    pub fn taken(&self, push: &Push) {
        self.pending.fetch_sub(push.cost(), Ordering::Relaxed);
    }

    /// Queues `push` unless that takes the bytes queued past `limit`: then the connection
    /// must be disconnected (`first` for the one call that found it so).
    pub fn offer(&self, push: Push, limit: usize) -> Offered {
        if self.overflowed.load(Ordering::Relaxed) {
            return Offered::Gone;
        }
        let cost = push.cost();
        let before = self.pending.fetch_add(cost, Ordering::Relaxed);
        if before + cost > limit {
            self.pending.fetch_sub(cost, Ordering::Relaxed);
            let first = !self.overflowed.swap(true, Ordering::Relaxed);
            return Offered::Overflowed { first };
        }
        if self.tx.send(push).is_err() {
            self.pending.fetch_sub(cost, Ordering::Relaxed);
            return Offered::Gone;
        }
        Offered::Queued
    }

    /// Whether it passed its limit (and is being disconnected).
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }
}
