//! The sync protocol as plain code: messages, their wire form, and the catch-up session.
//!
//! Two mechanisms keep replicas converged (see `DESIGN.md`, section Sync):
//!
//! * **Live push**: a node sends its new local writes to its peers in batches
//!   ([`Replica::push_after`], [`Replica::receive_push`]). A receiver advances its version
//!   vector only over contiguous sequence numbers: one by one, or over a whole [`PushRange`]
//!   that starts where it stands.
//! * **Catch-up**: a [`SyncSession`] sends the asker's version vector; the server answers with
//!   the entries the asker misses, in bounded pages ([`Replica::serve`]). If the asker is behind
//!   the server's GC floors, the session turns into a full resync.
//!
//! Nothing here opens a socket: a test can wire replicas together in a loop and lose, repeat
//! or reorder messages at will.

use crate::entry::{Elem, Entry, NodeId};
use crate::replica::Replica;
use crate::version_vector::VersionVector;
use crate::{Error, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

mod serve;

/// Version of the sync wire format. A message of another version is refused with
/// [`WireError::UnsupportedVersion`].
///
/// Version 2 added the sender's wall-clock time to every message, from which peers estimate
/// each other's clock offsets (see [`crate::skew`]), the sender's node id in requests, pages
/// and pushes, and an explicit acknowledgement of pushes ([`Ack`]), on which garbage
/// collection waits.
///
/// Version 3 made the unit of replication an element of a key ([`Entry::elem`]): a key's
/// string, or a counter's contribution or reset, each with its own version and dot.
///
/// Version 4 added hash fields ([`crate::Elem::Field`]): a node of version 3 could not
/// decode them, so it is refused as a peer of another version.
///
/// Version 5 added set elements ([`crate::Elem::Member`], [`crate::Elem::SetRemove`]): a node
/// of version 4 could not decode them either.
///
/// Version 6 changed how a hash field's tombstone merges: it carries the timestamp of the
/// write it observed and removes only that write (see [`crate::entry::field_wins`]); and it
/// added hash fields' counter elements ([`crate::Elem::FieldCount`],
/// [`crate::Elem::FieldReset`]). A node of version 5 would let such a tombstone win over a
/// concurrent update and diverge, and cannot decode the new elements, so it is refused.
///
/// Version 7 added memory pressure to pushes and acknowledgements ([`Push::pressed`],
/// [`Ack::pressed`]): a node over its memory limit that cannot evict more asks the writers
/// to wait. A node of version 6 could not decode them.
pub const SYNC_PROTOCOL_VERSION: u16 = 7;

/// Bytes before a message's postcard body: the protocol version (2, big-endian) and the
/// sender's wall-clock milliseconds at send time (8, big-endian).
const HEADER_LEN: usize = 10;

/// Bounds on sync messages and pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncLimits {
    /// Largest encoded message accepted (default 8 MiB).
    pub max_message_bytes: usize,
    /// Most entries in one catch-up page or push (default 4096).
    pub page_max_entries: usize,
    /// A page stops growing once it holds this many bytes (default 1 MiB); a page always
    /// holds at least one entry, so this must leave room for the largest entry.
    pub page_max_bytes: usize,
}

crate::__option_setters!(SyncLimits {
    with_max_message_bytes => max_message_bytes: usize,
    with_page_max_entries => page_max_entries: usize,
    with_page_max_bytes => page_max_bytes: usize,
});

impl Default for SyncLimits {
    fn default() -> Self {
        SyncLimits {
            max_message_bytes: 8 * 1024 * 1024,
            page_max_entries: 4096,
            page_max_bytes: 1024 * 1024,
        }
    }
}

/// Where a paged catch-up resumes: after `seq` of `origin` (origins are visited in id order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The origin being paged through.
    pub origin: NodeId,
    /// The last seq of that origin already sent.
    pub seq: u64,
    /// Whether the server held every seq of that origin up to `seq` when it walked them (so
    /// the asker now holds them all). If not, what it acquired since was never sent in this
    /// session, and the rest of the walk claims nothing for that origin.
    pub gapless: bool,
}

/// "Send me what I miss": the asker's version vector and floors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUpRequest {
    /// The asker's node id.
    pub from: NodeId,
    /// What the asker holds (its own writes: those that may leave it, see
    /// [`Replica::shareable_seq`]). Also an acknowledgement: see [`Ack`].
    pub vv: VersionVector,
    /// The asker's GC floors: a server behind them must not serve (it could resurrect).
    pub floors: VersionVector,
    /// Where to resume, for pages after the first.
    pub resume: Option<Cursor>,
    /// A full resync: send everything, whatever `vv` says.
    pub full: bool,
    /// Most entries wanted in this page.
    pub max_entries: u32,
}

/// One page of a catch-up answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUpPage {
    /// The server's node id.
    pub from: NodeId,
    /// Entries the asker may miss.
    pub entries: Vec<Entry>,
    /// Per origin, the seq up to which the asker now holds everything (or something newer).
    pub covered: VersionVector,
    /// The server's GC floors.
    pub floors: VersionVector,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// A batch of a node's new local writes, pushed to a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    /// The sender's node id.
    pub from: NodeId,
    /// The sender's version vector: a receiver refuses a sender behind its floors. Also an
    /// acknowledgement: see [`Ack`].
    pub sender_vv: VersionVector,
    /// The writes.
    pub entries: Vec<Entry>,
    /// What the push covers, when it carries every write of one origin in a range.
    pub range: Option<PushRange>,
    /// The sender is under memory pressure: see [`Ack::pressed`].
    pub pressed: bool,
}

/// "Every write of `origin` with seq in `(after, through]` is in this push, or superseded by
/// a newer write of the same key." A receiver that holds `origin` up to `after` may then raise
/// its version vector to `through`, even though superseded seqs never arrive one by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRange {
    /// The origin whose writes the push carries (the sender).
    pub origin: NodeId,
    /// The seq the sender believes the receiver already holds.
    pub after: u64,
    /// The last seq covered.
    pub through: u64,
}

/// "I hold every write of each origin up to `vv`, or something newer for the same key": the
/// answer to a push it took. Requests and pushes carry the same claim about their sender.
/// Dead entries are collected only once every member has acknowledged them this way (see
/// [`Replica::gc`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The acknowledging node.
    pub from: NodeId,
    /// What it holds.
    pub vv: VersionVector,
    /// It is over its memory limit, past the room it leaves a peer's writes, and cannot
    /// evict more (what it holds beyond half the limit are tombstones not stable yet): its
    /// members' local writes wait for it (see [`crate::Cache`]'s backpressure). Without it,
    /// a node applying a busy writer's pages grew past its limit until the flood ended.
    pub pressed: bool,
}

/// Why a peer would not serve or accept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// You are behind my GC floors: do a full resync (a delta could resurrect deleted data).
    YouAreBehind {
        /// The refusing side's floors.
        floors: VersionVector,
    },
    /// I am behind your GC floors: I will resync before serving you.
    IAmBehind,
}

/// Every message of the sync protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMessage {
    /// Catch-up request.
    Request(CatchUpRequest),
    /// Catch-up answer page.
    Page(CatchUpPage),
    /// Live push of local writes.
    Push(Push),
    /// A push taken, and what the taker holds now.
    Ack(Ack),
    /// A refusal to serve or accept.
    Refused(Refusal),
    /// Anti-entropy: digest comparison and repair (see [`crate::antientropy`]). Added to
    /// version 2 before any release of it: appended last, it leaves every other message's
    /// encoding as it was.
    AntiEntropy(crate::antientropy::AeMessage),
}

/// A sync message that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The message is larger than the limit.
    #[error("sync message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message is shorter than its header.
    #[error("sync message truncated: {len} bytes")]
    Truncated {
        /// Its size.
        len: usize,
    },
    /// The message is of a protocol version this node does not speak.
    #[error(
        "sync protocol version {found} is not supported (this node speaks version {supported})"
    )]
    UnsupportedVersion {
        /// The version found.
        found: u16,
        /// The version spoken here.
        supported: u16,
    },
    /// The body does not decode.
    #[error("malformed sync message: {0}")]
    Malformed(#[from] postcard::Error),
    /// The body decodes but breaks a bound.
    #[error("invalid sync message: {0}")]
    Invalid(String),
}

impl SyncMessage {
    /// Encodes the message with no send time (0, from which a receiver learns nothing): see
    /// [`SyncMessage::encode_at`].
    ///
    /// ```
    /// use dice_core::{SyncLimits, SyncMessage, Refusal};
    /// let msg = SyncMessage::Refused(Refusal::IAmBehind);
    /// let bytes = msg.encode(&SyncLimits::default()).unwrap();
    /// assert_eq!(SyncMessage::decode(&bytes, &SyncLimits::default()).unwrap(), msg);
    /// assert!(SyncMessage::decode(&bytes[..1], &SyncLimits::default()).is_err());
    /// ```
    pub fn encode(&self, limits: &SyncLimits) -> std::result::Result<Vec<u8>, WireError> {
        self.encode_at(limits, 0)
    }

    /// Encodes the message: a 2-byte big-endian protocol version, the sender's wall-clock
    /// milliseconds `sent_at_ms` (8 bytes, big-endian; 0 when unknown), then the postcard
    /// body.
    ///
    /// ```
    /// use dice_core::{SyncLimits, SyncMessage, Refusal};
    /// let msg = SyncMessage::Refused(Refusal::IAmBehind);
    /// let bytes = msg.encode_at(&SyncLimits::default(), 1_700_000_000_000).unwrap();
    /// let (back, sent) = SyncMessage::decode_timed(&bytes, &SyncLimits::default()).unwrap();
    /// assert_eq!((back, sent), (msg, Some(1_700_000_000_000)));
    /// ```
    pub fn encode_at(
        &self,
        limits: &SyncLimits,
        sent_at_ms: u64,
    ) -> std::result::Result<Vec<u8>, WireError> {
        let mut header = Vec::with_capacity(HEADER_LEN + 64);
        header.extend_from_slice(&SYNC_PROTOCOL_VERSION.to_be_bytes());
        header.extend_from_slice(&sent_at_ms.min(i64::MAX as u64).to_be_bytes());
        let out = postcard::to_extend(self, header)?;
        if out.len() > limits.max_message_bytes {
            return Err(WireError::TooLarge {
                len: out.len(),
                max: limits.max_message_bytes,
            });
        }
        Ok(out)
    }

    /// Decodes and bounds-checks a message, dropping its send time. Never panics, whatever
    /// the bytes.
    pub fn decode(bytes: &[u8], limits: &SyncLimits) -> std::result::Result<Self, WireError> {
        Self::decode_timed(bytes, limits).map(|(msg, _)| msg)
    }

    /// Decodes and bounds-checks a message, with the sender's wall-clock milliseconds at send
    /// time (`None` when it sent none). Never panics, whatever the bytes.
    pub fn decode_timed(
        bytes: &[u8],
        limits: &SyncLimits,
    ) -> std::result::Result<(Self, Option<u64>), WireError> {
        if bytes.len() > limits.max_message_bytes {
            return Err(WireError::TooLarge {
                len: bytes.len(),
                max: limits.max_message_bytes,
            });
        }
        // The version first: a peer of another version is told so, whatever follows.
        let (Some(&hi), Some(&lo)) = (bytes.first(), bytes.get(1)) else {
            return Err(WireError::Truncated { len: bytes.len() });
        };
        let version = u16::from_be_bytes([hi, lo]);
        if version != SYNC_PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion {
                found: version,
                supported: SYNC_PROTOCOL_VERSION,
            });
        }
        let Some((sent, body)) = bytes[2..].split_first_chunk::<8>() else {
            return Err(WireError::Truncated { len: bytes.len() });
        };
        let sent_at_ms = u64::from_be_bytes(*sent);
        if sent_at_ms > i64::MAX as u64 {
            return Err(WireError::Invalid(format!(
                "send time {sent_at_ms} out of range"
            )));
        }
        let (msg, rest): (SyncMessage, &[u8]) = postcard::take_from_bytes(body)?;
        if !rest.is_empty() {
            return Err(WireError::Invalid(format!(
                "{} trailing bytes after the message",
                rest.len()
            )));
        }
        let count = match &msg {
            SyncMessage::Page(p) => p.entries.len(),
            SyncMessage::Push(p) => p.entries.len(),
            SyncMessage::AntiEntropy(m) => {
                m.validate().map_err(WireError::Invalid)?;
                m.entry_count()
            }
            _ => 0,
        };
        if count > limits.page_max_entries {
            return Err(WireError::Invalid(format!(
                "{count} entries in one message, the limit is {}",
                limits.page_max_entries
            )));
        }
        Ok((msg, (sent_at_ms > 0).then_some(sent_at_ms)))
    }
}

/// What a session did, once done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Pages received.
    pub pages: u64,
    /// Entries received.
    pub entries_received: u64,
    /// Entries that won and were installed.
    pub entries_applied: u64,
    /// Whether the session was (or became) a full resync.
    pub full: bool,
    /// Entries dropped at the end of a full resync.
    pub dropped: u64,
    /// The peer was behind our floors and will resync from us; nothing was exchanged.
    pub peer_behind: bool,
}

/// What to do after handling a message.
#[derive(Debug)]
pub enum SessionStep {
    /// Send this message to the peer and feed its answer back.
    Send(SyncMessage),
    /// The session is over.
    Done(SessionStats),
}

/// The asking side of one catch-up exchange with one peer.
///
/// ```
/// use dice_core::{Limits, NodeId, Replica, SessionStep, SyncLimits, SyncSession};
/// let limits = SyncLimits::default();
/// let mut a = Replica::new(NodeId::new(1).unwrap(), Limits::default());
/// let mut b = Replica::new(NodeId::new(2).unwrap(), Limits::default());
/// b.write("k".into(), Some("v".into()), None, 1_000).unwrap();
/// let (mut session, mut msg) = SyncSession::start(&a, &limits);
/// let stats = loop {
///     let SyncMessage::Request(req) = msg else { unreachable!() };
///     match session.handle(&mut a, b.serve(&req, &limits), 1_000).unwrap() {
///         SessionStep::Send(next) => msg = next,
///         SessionStep::Done(stats) => break stats,
///     }
/// };
/// # use dice_core::SyncMessage;
/// assert_eq!(stats.entries_applied, 1);
/// assert_eq!(a.get(b"k", 1_000).unwrap().as_ref(), b"v");
/// ```
#[derive(Debug)]
pub struct SyncSession {
    full: bool,
    max_entries: u32,
    received: HashSet<(Bytes, Elem)>,
    covered: VersionVector,
    stats: SessionStats,
}

impl SyncSession {
    /// Starts a session: a full resync if the replica was told it is behind, a delta
    /// catch-up otherwise. Returns the first message to send.
    pub fn start(replica: &Replica, limits: &SyncLimits) -> (Self, SyncMessage) {
        let mut s = SyncSession {
            full: replica.resync_needed(),
            max_entries: limits.page_max_entries.min(u32::MAX as usize) as u32,
            received: HashSet::new(),
            covered: VersionVector::default(),
            stats: SessionStats::default(),
        };
        s.stats.full = s.full;
        let first = s.request(replica, None);
        (s, first)
    }

    /// Whether this session is a full resync.
    pub fn is_full(&self) -> bool {
        self.full
    }

    fn request(&self, replica: &Replica, resume: Option<Cursor>) -> SyncMessage {
        SyncMessage::Request(CatchUpRequest {
            from: replica.id(),
            vv: replica.announced_vv(),
            floors: replica.floors().clone(),
            resume,
            full: self.full,
            max_entries: self.max_entries,
        })
    }

    /// Handles the peer's answer: applies a page and asks for the next, switches to a full
    /// resync when refused as behind, or ends.
    pub fn handle(
        &mut self,
        replica: &mut Replica,
        msg: SyncMessage,
        now_ms: u64,
    ) -> Result<SessionStep> {
        match msg {
            SyncMessage::Page(page) => {
                self.stats.pages += 1;
                replica.note_member(page.from, None, now_ms);
                for e in page.entries {
                    self.stats.entries_received += 1;
                    if self.full {
                        // When each side is behind the other's floors, the full resync is served
                        // by a peer behind *our* floors: it may send a write we saw, overwrote
                        // and then collected. An entry our version vector covers, for a key we
                        // hold nothing for, is such a write (or one superseded by a newer write
                        // still on its way): applying it would resurrect deleted data.
                        replica.validate_remote(&e)?;
                        if e.seq <= replica.vv().get(e.version.origin)
                            && replica.element(&e.key, e.elem).is_none()
                        {
                            continue;
                        }
                        self.received.insert((e.key.clone(), e.elem));
                    }
                    if replica.apply(e, now_ms)? {
                        self.stats.entries_applied += 1;
                    }
                }
                // A full resync raises the version vector only once complete, in
                // `finish_full_resync`, together with dropping what the peer no longer holds.
                // Raised page by page, an interrupted full resync would claim to cover deletes
                // it never applied, and the stale entries it still holds would then pass the
                // floor checks of other peers (a push of them would be accepted).
                if !self.full {
                    replica.raise_vv(&page.covered);
                }
                self.covered.merge(&page.covered);
                match page.next {
                    Some(cursor) => Ok(SessionStep::Send(self.request(replica, Some(cursor)))),
                    None => {
                        if self.full {
                            let dropped = replica.finish_full_resync(
                                &self.received,
                                &self.covered,
                                &page.floors,
                            );
                            self.stats.dropped = dropped as u64;
                            tracing::info!(
                                entries = self.stats.entries_received,
                                dropped,
                                "full resync done"
                            );
                        }
                        // What the pages covered is what the server holds: its acknowledgement.
                        replica.note_member(page.from, Some(&self.covered), now_ms);
                        Ok(SessionStep::Done(self.stats))
                    }
                }
            }
            SyncMessage::Refused(Refusal::YouAreBehind { .. }) => {
                if self.full {
                    return Err(Error::Protocol(
                        "peer refused a full resync as behind its floors".into(),
                    ));
                }
                tracing::info!("behind a peer's GC floors: switching to a full resync");
                replica.mark_resync_needed();
                self.full = true;
                self.stats.full = true;
                self.received.clear();
                self.covered = VersionVector::default();
                Ok(SessionStep::Send(self.request(replica, None)))
            }
            SyncMessage::Refused(Refusal::IAmBehind) => {
                self.stats.peer_behind = true;
                Ok(SessionStep::Done(self.stats))
            }
            SyncMessage::Request(_)
            | SyncMessage::Push(_)
            | SyncMessage::Ack(_)
            | SyncMessage::AntiEntropy(_) => Err(Error::Protocol(
                "expected a catch-up page or a refusal".into(),
            )),
        }
    }
}
