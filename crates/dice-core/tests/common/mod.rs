//! What several replica-level tests share.
#![allow(dead_code, clippy::unwrap_used)]

use dice_core::{Replica, SessionStep, SyncLimits, SyncMessage, SyncSession};

/// A full catch-up of `asker` from `server`, every page, at time `now`.
pub fn catch_up(asker: &mut Replica, server: &mut Replica, now: u64) {
    let limits = SyncLimits::default();
    let (mut s, mut msg) = SyncSession::start(asker, &limits);
    loop {
        let SyncMessage::Request(req) = msg else {
            unreachable!()
        };
        let reply = server.serve_noting(&req, &limits, now);
        match s.handle(asker, reply, now).unwrap() {
            SessionStep::Send(next) => msg = next,
            SessionStep::Done(_) => return,
        }
    }
}
