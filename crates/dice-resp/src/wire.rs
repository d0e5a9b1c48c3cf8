//! The write side of a connection: what is pending for the socket, the wait for the group
//! commit of a batch's writes before their replies go out, and bounded, stall-aware sends.

use crate::frame::write_error;
use crate::registry::ClientEntry;
use crate::state::ServerState;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Output past this size is sent (and the socket awaited) before anything more is
/// answered: a long pipeline, or one reply of many elements (`MGET`, `KEYS`, `SCAN`), never
/// piles up in memory. A connection holds at most this plus one element (a value, at most
/// the cache's value limit) of replies.
pub const OUTPUT_FLUSH_AT: usize = 64 * 1024;
/// Bytes read at a time (at least).
pub(crate) const READ_CHUNK: usize = 16 * 1024;
/// Bytes of input buffer each client holds without charging the global budget
/// ([`RespConfig::max_input_buffer_total`](crate::RespConfig::max_input_buffer_total)).
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

/// The writes made while answering one batch of requests.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// The greatest commit ticket of a write in the batch (`None`: no write).
    pub ticket: Option<dice_core::CommitTicket>,
    /// The byte ranges of the output holding replies to commands that wrote: if the commit
    /// fails they are replaced by the error.
    pub write_replies: Vec<Range<usize>>,
}

/// Sends `out`: first waits until the batch's writes are committed (their replies turn
/// into the commit's error if it failed), then writes to the socket, giving up after
/// [`RespConfig::output_stall_timeout`](crate::RespConfig::output_stall_timeout). Sets `wire.broken` and returns false if the
/// client is gone or stalled.
pub(crate) async fn send(
    state: &ServerState,
    out: &mut Vec<u8>,
    batch: &mut Batch,
    wire: &mut Wire,
) -> bool {
    // Acknowledge the batch's writes only once they are committed: one wait for all.
    if let Some(ticket) = batch.ticket.take() {
        if let Err(e) = state.cache.wait_committed(ticket).await {
            tracing::warn!(error = %e, "a group commit failed; failing the batch's writes");
            *out = replace_ranges(out, &batch.write_replies, &format!("ERR {e}"));
        }
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

/// `out` with each of `ranges` (ascending, disjoint) replaced by the error `text`.
pub(crate) fn replace_ranges(out: &[u8], ranges: &[Range<usize>], text: &str) -> Vec<u8> {
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
