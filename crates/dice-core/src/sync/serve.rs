//! The replica's side of the sync protocol: building pushes of its own writes, applying a
//! peer's push, and answering catch-up requests with pages. These are methods of
//! [`Replica`], defined here so that the protocol's messages are known to this module only:
//! `sync` depends on `replica`, never the reverse.

use super::{Ack, CatchUpPage, CatchUpRequest, Cursor, Push, Refusal, SyncLimits, SyncMessage};
use crate::Result;
use crate::entry::Entry;
use crate::replica::Replica;
use crate::version_vector::VersionVector;

impl Replica {
    /// Builds a live-push message carrying `entries`, with no range claim.
    pub fn make_push(&self, entries: Vec<Entry>) -> SyncMessage {
        SyncMessage::Push(Push {
            from: self.id(),
            sender_vv: self.announced_vv(),
            entries,
            range: None,
            pressed: self.pressed(),
        })
    }

    /// A push of our local writes after `after_seq` (at most `max_entries` entries), claiming
    /// the range it covers, and the last seq covered; `None` when there is nothing new.
    ///
    /// Writes superseded since are not sent, yet the range lets a receiver that holds our
    /// writes up to `after_seq` advance past them. A write of ours that a peer's write
    /// replaced is claimed only when the receiver is sure to hold that peer's write or a newer
    /// one: every member acknowledged it, or the push relays the key's current element along
    /// with our writes (see `replica/claim.rs`).
    pub fn push_after(&self, after_seq: u64, max_entries: usize) -> Option<(SyncMessage, u64)> {
        let plan = self.plan_push(after_seq, max_entries)?;
        let push = Push {
            from: self.id(),
            sender_vv: self.announced_vv(),
            entries: plan.entries,
            range: plan.range,
            pressed: self.pressed(),
        };
        Some((SyncMessage::Push(push), plan.through))
    }

    /// Applies a live push. A sender behind our GC floors could resurrect deleted data, so its
    /// push is refused with a reply telling it to resync.
    pub fn receive_push(&mut self, push: Push, now_ms: u64) -> Result<Option<SyncMessage>> {
        self.note_member(push.from, Some(&push.sender_vv), now_ms);
        self.note_pressure(push.from, push.pressed, now_ms);
        if !push.sender_vv.dominates(self.floors()) {
            self.count_refused_behind();
            return Ok(Some(SyncMessage::Refused(Refusal::YouAreBehind {
                floors: self.floors().clone(),
            })));
        }
        let mut entries = push.entries;
        entries.sort_by_key(|e| (e.version.origin, e.seq));
        for e in entries {
            let (origin, seq) = (e.version.origin, e.seq);
            self.apply(e, now_ms)?;
            self.advance_vv(origin, seq);
        }
        if let Some(r) = push.range
            && r.origin != self.id()
            && r.through >= r.after
            && self.vv().get(r.origin) >= r.after
        {
            self.raise_vv_to(r.origin, r.through);
        }
        self.note_usable(push.from, &push.sender_vv);
        Ok(Some(SyncMessage::Ack(Ack {
            from: self.id(),
            vv: self.announced_vv(),
            pressed: self.pressed(),
        })))
    }

    /// Answers a catch-up request (see [`Replica::serve`]), noting what the asker holds.
    pub fn serve_noting(
        &mut self,
        req: &CatchUpRequest,
        limits: &SyncLimits,
        now_ms: u64,
    ) -> SyncMessage {
        self.note_member(req.from, Some(&req.vv), now_ms);
        self.serve(req, limits)
    }

    /// Answers a catch-up request with one page (or a refusal). Pure apart from marking this
    /// replica for a resync when the asker shows that we are behind its floors.
    pub fn serve(&self, req: &CatchUpRequest, limits: &SyncLimits) -> SyncMessage {
        let server_behind = !self.vv().dominates(&req.floors);
        let asker_behind = !req.vv.dominates(self.floors());
        if server_behind && !(req.full && asker_behind) {
            self.mark_resync_needed();
            return SyncMessage::Refused(Refusal::IAmBehind);
        }
        if asker_behind && !req.full {
            return SyncMessage::Refused(Refusal::YouAreBehind {
                floors: self.floors().clone(),
            });
        }
        let max_entries = (req.max_entries as usize).clamp(1, limits.page_max_entries);
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let mut covered = VersionVector::default();
        let mut next = None;
        let start_origin = req.resume.map(|c| c.origin).unwrap_or_default();
        // Our own writes leave only once durable (see `shareable_seq`).
        let shareable = self.shareable_seq();
        'origins: for (origin, held) in self.vv().iter() {
            if origin < start_origin {
                continue;
            }
            let last = if origin == self.id() {
                shareable
            } else {
                u64::MAX
            };
            let held = held.min(last);
            let mut from = if req.full { 0 } else { req.vv.get(origin) };
            // Resuming inside this origin: a claim past the cursor needs everything up to
            // it to have been walked gaplessly (what we acquired since was never sent).
            let mut gapless = true;
            if let Some(c) = req.resume
                && c.origin == origin
            {
                from = from.max(c.seq);
                gapless = c.gapless;
            }
            let held = if gapless { held } else { 0 };
            {
                for (seq, record) in self.dots_from(origin, from.saturating_add(1)) {
                    if seq > last {
                        break;
                    }
                    if entries.len() >= max_entries
                        || (bytes >= limits.page_max_bytes && !entries.is_empty())
                    {
                        // Stop before `seq`: everything of `origin` up to the last one sent is
                        // covered (or superseded by entries of other origins).
                        let last = seq - 1;
                        covered.raise(origin, held.min(last));
                        next = Some(Cursor {
                            origin,
                            seq: last,
                            gapless: gapless && held >= last,
                        });
                        break 'origins;
                    }
                    if let Some(r) = record {
                        let e = r.to_entry();
                        bytes += e.wire_size();
                        entries.push(e);
                    }
                }
            }
            covered.raise(origin, held);
        }
        SyncMessage::Page(CatchUpPage {
            from: self.id(),
            entries,
            covered,
            floors: self.floors().clone(),
            next,
        })
    }
}
