//! Switches for measuring what a node's background work costs, part by part: the scale
//! benchmark (`bench/scale.sh`, `DICE_SCALE_OFF`) starts nodes with `DICE_NET_PROFILE_OFF`
//! set to a comma-separated list of parts whose periodic work is pushed out to once an hour:
//!
//! * `mdns`: mDNS queries after the first answer (nodes still answer others' queries);
//! * `ping`: liveness pings (and the silence check that depends on them);
//! * `identify`: identify's periodic pushes;
//! * `kad`: Kademlia's periodic bootstrap (random walks);
//! * `heartbeat`: gossipsub's heartbeat (mesh upkeep and lazy gossip);
//! * `tick`: the event loop's 100 ms tick (redials, silence checks), every second instead.
//!
//! Not for production: a node without pings does not notice a silent peer for an hour.
//! Unknown names are ignored (and logged).

use std::time::Duration;

/// How long "off" is.
pub(crate) const OFF: Duration = Duration::from_secs(3600);

/// Whether `part` is switched off by `DICE_NET_PROFILE_OFF`.
pub(crate) fn off(part: &str) -> bool {
    std::env::var("DICE_NET_PROFILE_OFF")
        .map(|v| v.split(',').any(|p| p.trim() == part))
        .unwrap_or(false)
}

/// `normal`, or [`OFF`] if `part` is switched off.
pub(crate) fn interval(part: &str, normal: Duration) -> Duration {
    if off(part) {
        tracing::warn!(
            part,
            "profiling: periodic work switched off (DICE_NET_PROFILE_OFF)"
        );
        OFF
    } else {
        normal
    }
}
