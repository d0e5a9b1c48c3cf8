//! Transactions: `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`.
//!
//! Between `MULTI` and `EXEC` commands are checked (name, arity, authentication) and queued,
//! each answered `+QUEUED`; an error while queuing makes `EXEC` answer `-EXECABORT`. `EXEC`
//! runs the queue in one [`dice_core::Cache::transact`]: under one hold of the cache's write
//! lock, so no other client's command and no peer's change interleaves, and with every write
//! in one group commit (one wait for all). A queue with no write runs under the read lock.
//!
//! `WATCH` remembers the version of each key's entry (versions are unique, so a different
//! version means a write happened, here or on a peer, whatever it wrote) and whether the key
//! was live; `EXEC` aborts with a null reply if any watched key's version changed or a live
//! one expired since. A dead entry dropped by garbage collection counts as a change too
//! (rare, never missed: a spurious abort, never a missed write).

use super::{Ctx, Db, Spec, run_on_db};
use crate::frame::{Request, write_array_len, write_null_aggregate, write_simple};
use bytes::Bytes;
use dice_core::{Replica, Version};
use std::collections::HashMap;
use std::ops::Range;

/// Bytes a queued command or watched key costs besides its arguments.
const OVERHEAD: usize = 64;

/// The commands queued since `MULTI`.
#[derive(Debug, Default)]
pub(crate) struct Multi {
    queued: Vec<Queued>,
    /// Bytes queued, counted against [`crate::RespConfig::max_request_len`].
    bytes: usize,
    /// An error while queuing: `EXEC` must abort.
    failed: bool,
}

/// One queued command, owning its arguments.
#[derive(Debug)]
struct Queued {
    spec: &'static Spec,
    data: Vec<u8>,
    spans: Vec<Range<usize>>,
}

impl Multi {
    /// Commands queued.
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// Whether a queued command writes.
    pub fn writes(&self) -> bool {
        self.queued.iter().any(|q| q.spec.writes())
    }
}

impl Queued {
    fn request(&self) -> Request<'_> {
        Request::new(&self.data, &self.spans)
    }
}

/// The keys under `WATCH`: the version each held and whether it was live.
#[derive(Debug, Default)]
pub(crate) struct Watched {
    keys: HashMap<Bytes, (Option<Version>, bool)>,
    bytes: usize,
}

impl Watched {
    /// Whether a watched key was written (here or by a peer) or expired since `WATCH`.
    fn changed(&self, replica: &Replica, now: u64) -> bool {
        // The greatest version among the key's elements: any write to it, a counter's
        // increment included, changes it.
        self.keys.iter().any(|(key, &(version, live))| {
            replica.key_version(key) != version || (live && !replica.contains(key, now))
        })
    }
}

/// Marks the transaction being queued, if any, as failed (an error while queuing).
pub(crate) fn flag(ctx: &mut Ctx<'_>) {
    if let Some(m) = ctx.session.multi.as_mut() {
        m.failed = true;
    }
}

/// `MULTI`.
pub(crate) fn multi(ctx: &mut Ctx<'_>) {
    if ctx.session.multi.is_some() {
        ctx.error("ERR MULTI calls can not be nested");
        return;
    }
    ctx.session.multi = Some(Multi::default());
    write_simple(ctx.out, "OK");
}

/// Queues a command of a transaction (already checked), answering `+QUEUED`.
pub(crate) fn queue(ctx: &mut Ctx<'_>, spec: &'static Spec, req: Request<'_>) {
    let max = ctx.server.config.max_request_len;
    let size = req
        .args()
        .map(|a| a.len() + 16)
        .sum::<usize>()
        .saturating_add(OVERHEAD);
    let Some(m) = ctx.session.multi.as_mut() else {
        return;
    };
    if m.bytes.saturating_add(size) > max {
        m.failed = true;
        let text = format!(
            "ERR the commands queued in this transaction would pass {max} bytes \
             (max_request_len)"
        );
        ctx.error(&text);
        return;
    }
    let mut data = Vec::with_capacity(size);
    let mut spans = Vec::with_capacity(req.len());
    for a in req.args() {
        let start = data.len();
        data.extend_from_slice(a);
        spans.push(start..data.len());
    }
    m.bytes += size;
    m.queued.push(Queued { spec, data, spans });
    write_simple(ctx.out, "QUEUED");
    super::note_multi(ctx);
}

/// `DISCARD`: drops the queue and the watched keys.
pub(crate) fn discard(ctx: &mut Ctx<'_>) {
    if ctx.session.multi.take().is_none() {
        ctx.error("ERR DISCARD without MULTI");
        return;
    }
    ctx.session.watched = Watched::default();
    write_simple(ctx.out, "OK");
}

/// `WATCH key [key ...]`.
pub(crate) fn watch(ctx: &mut Ctx<'_>, req: Request<'_>) {
    if ctx.session.multi.is_some() {
        ctx.error("ERR WATCH inside MULTI is not allowed");
        return;
    }
    let max = ctx.server.config.max_request_len;
    let watched = &mut ctx.session.watched;
    let new: usize = req
        .args()
        .skip(1)
        .filter(|k| !watched.keys.contains_key(*k))
        .map(|k| k.len() + OVERHEAD)
        .sum();
    if watched.bytes.saturating_add(new) > max {
        let text = format!(
            "ERR the keys watched by this connection would pass {max} bytes (max_request_len)"
        );
        ctx.error(&text);
        return;
    }
    let now = ctx.server.cache.now_ms();
    ctx.server.cache.with_replica(|r| {
        for key in req.args().skip(1) {
            if watched.keys.contains_key(key) {
                // Redis keeps what the first WATCH saw.
                continue;
            }
            let state = (r.key_version(key), r.contains(key, now));
            watched.keys.insert(Bytes::copy_from_slice(key), state);
            watched.bytes += key.len() + OVERHEAD;
        }
    });
    write_simple(ctx.out, "OK");
}

/// `UNWATCH`.
pub(crate) fn unwatch(ctx: &mut Ctx<'_>) {
    ctx.session.watched = Watched::default();
    write_simple(ctx.out, "OK");
}

/// `EXEC`: runs the queue atomically, or answers null if a watched key changed.
pub(crate) async fn exec(ctx: &mut Ctx<'_>) {
    let Some(multi) = ctx.session.multi.take() else {
        ctx.error("ERR EXEC without MULTI");
        return;
    };
    let watched = std::mem::take(&mut ctx.session.watched);
    if multi.failed {
        ctx.error("EXECABORT Transaction discarded because of previous errors.");
        return;
    }
    let server = ctx.server;
    let start = ctx.out.len();
    ctx.limit = start.saturating_add(server.config.max_exec_reply);
    let writes = multi.queued.iter().any(|q| q.spec.writes());
    super::on_cache(ctx, writes, |ctx, db| {
        run_queue(ctx, db, &multi, &watched);
    })
    .await;
    ctx.limit = usize::MAX;
    ctx.reply_start = start;
}

/// Runs the queued commands against `db`; false (and a null reply) if a watched key
/// changed.
fn run_queue(ctx: &mut Ctx<'_>, db: &mut dyn Db, multi: &Multi, watched: &Watched) -> bool {
    if watched.changed(db.replica(), db.now()) {
        write_null_aggregate(ctx.out, ctx.proto());
        return false;
    }
    write_array_len(ctx.out, multi.queued.len());
    for q in &multi.queued {
        ctx.reply_start = ctx.out.len();
        run_on_db(ctx, db, q.spec.kind, q.request());
        super::remember_reads(ctx, db, q.spec, q.request());
        // A read passes the bound by at most one value; a write checks before it writes.
        if !q.spec.writes() && ctx.out.len() > ctx.limit {
            ctx.too_big();
        }
    }
    true
}
